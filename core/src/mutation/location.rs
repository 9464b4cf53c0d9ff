//! Mutator locations as Gatekeeper writes them:
//! `spec.containers[name: *].securityContext.capabilities.drop`, `metadata.labels."app/x"`.
//!
//! A location is a list of segments: object fields (bare or double-quoted), and list selectors
//! `[key: value]` that pick the elements of a list whose `key` equals `value` (`*` for every
//! element; a quoted `"*"` is the literal string). List selectors never create elements.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Selector {
    /// `*`: every element.
    Any,
    Value(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Field(String),
    /// Selects elements of the list at the current position by the value of `key`.
    List {
        key: String,
        value: Selector,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Location {
    pub segments: Vec<Segment>,
}

/// Where and why a location does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("position {position}: {reason}")]
pub(crate) struct ParseError {
    /// 0-based character offset.
    pub position: usize,
    pub reason: String,
}

/// A name as the parser reads it back: bare when it can be, else double-quoted with only `"` and
/// `\` escaped (the parser's only escapes; Rust's `{:?}` would also write `\t` or `\u{..}`,
/// which do not parse).
fn quote_if_needed(s: &str) -> String {
    if !s.is_empty() && s.chars().all(is_bare) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.segments.iter().enumerate() {
            match seg {
                Segment::Field(name) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(&quote_if_needed(name))?;
                }
                Segment::List { key, value } => {
                    let value = match value {
                        Selector::Any => "*".to_owned(),
                        Selector::Value(v) if v == "*" => "\"*\"".to_owned(),
                        Selector::Value(v) => quote_if_needed(v),
                    };
                    write!(f, "[{}: {value}]", quote_if_needed(key))?;
                }
            }
        }
        Ok(())
    }
}

fn is_bare(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '-' | '_' | '/' | '$' | '@')
}

struct Parser<'a> {
    chars: Vec<char>,
    pos: usize,
    _src: &'a str,
}

impl Parser<'_> {
    fn err<T>(&self, reason: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            position: self.pos,
            reason: reason.into(),
        })
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// A bare word or a double-quoted string; `what` names it in errors.
    fn word(&mut self, what: &str) -> Result<(String, bool), ParseError> {
        match self.peek() {
            Some('"') => {
                self.pos += 1;
                let mut out = String::new();
                loop {
                    match self.peek() {
                        None => return self.err(format!("unterminated quoted {what}; add the closing \"")),
                        Some('"') => {
                            self.pos += 1;
                            return Ok((out, true));
                        }
                        Some('\\') => {
                            self.pos += 1;
                            match self.peek() {
                                Some(c @ ('"' | '\\')) => out.push(c),
                                _ => return self.err("only \\\" and \\\\ may be escaped in a quoted name"),
                            }
                            self.pos += 1;
                        }
                        Some(c) => {
                            out.push(c);
                            self.pos += 1;
                        }
                    }
                }
            }
            Some(c) if is_bare(c) => {
                let start = self.pos;
                while self.peek().is_some_and(is_bare) {
                    self.pos += 1;
                }
                Ok((self.chars[start..self.pos].iter().collect(), false))
            }
            Some('*') => self.err(format!(
                "a wildcard is only allowed as a list selector value ([name: *]); quote it (\"*\") for a literal {what}"
            )),
            Some(c) => self.err(format!("unexpected {c:?}; expected a {what} (quote names with special characters)")),
            None => self.err(format!("expected a {what}, found the end of the location")),
        }
    }

    fn list(&mut self) -> Result<Segment, ParseError> {
        self.pos += 1; // '['
        self.skip_ws();
        let (key, _) = self.word("list key")?;
        if key.is_empty() {
            return self.err("empty list key");
        }
        self.skip_ws();
        if self.peek() != Some(':') {
            return self.err("expected ':' between the list key and its value, as in [name: app]");
        }
        self.pos += 1;
        self.skip_ws();
        let value = if self.peek() == Some('*') {
            self.pos += 1;
            Selector::Any
        } else {
            Selector::Value(self.word("list value")?.0)
        };
        self.skip_ws();
        if self.peek() != Some(']') {
            return self.err("expected ']' to close the list selector");
        }
        self.pos += 1;
        Ok(Segment::List { key, value })
    }
}

impl Location {
    pub(crate) fn parse(src: &str) -> Result<Self, ParseError> {
        let mut p = Parser {
            chars: src.chars().collect(),
            pos: 0,
            _src: src,
        };
        if src.trim().is_empty() {
            return p.err("location is empty");
        }
        let mut segments = Vec::new();
        loop {
            let (name, quoted) = p.word("field name")?;
            if name.is_empty() && !quoted {
                return p.err("empty field name");
            }
            segments.push(Segment::Field(name));
            while p.peek() == Some('[') {
                segments.push(p.list()?);
            }
            match p.peek() {
                None => break,
                Some('.') => {
                    p.pos += 1;
                    if p.peek().is_none() {
                        return p.err("location ends with '.'; a field name must follow");
                    }
                }
                Some(c) => {
                    return p.err(format!(
                        "unexpected {c:?} after a field; expected '.' or '['"
                    ));
                }
            }
        }
        Ok(Self { segments })
    }

    /// Whether `prefix` is this location or a leading part of it.
    pub(crate) fn starts_with(&self, prefix: &Location) -> bool {
        self.segments.len() >= prefix.segments.len()
            && self.segments[..prefix.segments.len()] == prefix.segments[..]
    }

    /// The first field, e.g. `spec` or `metadata`.
    pub(crate) fn root(&self) -> Option<&str> {
        match self.segments.first() {
            Some(Segment::Field(f)) => Some(f),
            _ => None,
        }
    }

    pub(crate) fn ends_in_list_selector(&self) -> bool {
        matches!(self.segments.last(), Some(Segment::List { .. }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(s: &str) -> Segment {
        Segment::Field(s.into())
    }

    #[test]
    fn dotted_fields() {
        let l = Location::parse("spec.securityContext.runAsNonRoot").unwrap();
        assert_eq!(
            l.segments,
            [
                field("spec"),
                field("securityContext"),
                field("runAsNonRoot")
            ]
        );
        assert_eq!(l.to_string(), "spec.securityContext.runAsNonRoot");
    }

    #[test]
    fn list_selector_with_glob_and_with_a_value() {
        let l = Location::parse("spec.containers[name: *].securityContext").unwrap();
        assert_eq!(
            l.segments[2],
            Segment::List {
                key: "name".into(),
                value: Selector::Any
            }
        );
        let l = Location::parse("spec.containers[name:app].image").unwrap();
        assert_eq!(
            l.segments[2],
            Segment::List {
                key: "name".into(),
                value: Selector::Value("app".into())
            }
        );
        assert_eq!(l.to_string(), "spec.containers[name: app].image");
    }

    #[test]
    fn quoted_keys_and_a_quoted_star_literal() {
        let l = Location::parse(r#"metadata.labels."sidecar.istio.io/inject""#).unwrap();
        assert_eq!(l.segments[2], field("sidecar.istio.io/inject"));
        let l = Location::parse(r#"spec.containers[name: "*"].image"#).unwrap();
        assert_eq!(
            l.segments[2],
            Segment::List {
                key: "name".into(),
                value: Selector::Value("*".into())
            }
        );
        let l = Location::parse(r#"spec."weird \"key\"".x"#).unwrap();
        assert_eq!(l.segments[1], field("weird \"key\""));
        let l = Location::parse(r#"spec.volumes[name: "my vol"].hostPath"#).unwrap();
        assert_eq!(l.to_string(), r#"spec.volumes[name: "my vol"].hostPath"#);
    }

    #[test]
    fn nested_list_selectors() {
        let l = Location::parse(
            "spec.template.spec.containers[name: *].ports[containerPort: 80].protocol",
        )
        .unwrap();
        assert_eq!(l.segments.len(), 8);
        assert!(l.starts_with(&Location::parse("spec.template.spec.containers[name: *]").unwrap()));
        assert!(
            !l.starts_with(&Location::parse("spec.template.spec.containers[name: app]").unwrap())
        );
    }

    #[test]
    fn errors_say_where_and_why() {
        for (src, position, needle) in [
            ("", 0, "empty"),
            ("spec.", 5, "ends with '.'"),
            ("spec..x", 5, "expected a field name"),
            (
                "spec.*.x",
                5,
                "wildcard is only allowed as a list selector value",
            ),
            ("spec.containers[name *]", 21, "expected ':'"),
            ("spec.containers[name: *", 23, "expected ']'"),
            ("spec.containers[: x]", 16, "list key"),
            ("spec.\"open", 10, "unterminated quoted field name"),
            ("spec.a b", 6, "unexpected ' '"),
            ("spec.containers[name: a]x", 24, "expected '.' or '['"),
            (r#"spec."a\n""#, 8, "may be escaped"),
        ] {
            let err = Location::parse(src).unwrap_err();
            assert_eq!(err.position, position, "{src:?}: {err}");
            assert!(err.reason.contains(needle), "{src:?}: {err}");
        }
    }
}
