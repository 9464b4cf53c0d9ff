//! Source-level handling of Rego before regorus sees it: rewrites for the v0 constructs regorus
//! parses differently from OPA, and static checks that must fail at load time.
//!
//! Everything works on a *masked* copy of the source, in which the contents of strings and
//! comments are blanked out, so that brackets and keywords inside them are never mistaken for code.
//! The rewrites never add or remove a line, so regorus' line numbers stay those of the template.

/// Builtins that reach the network. Gatekeeper refuses them in templates; so does Palisade.
pub(crate) const NETWORK_BUILTINS: [&str; 2] = ["http.send", "net.lookup_ip_addr"];

/// The source with string contents and comments replaced by spaces. Quotes stay, so a string is
/// still visibly a value. Byte offsets are unchanged.
pub(crate) fn mask(src: &str) -> Vec<u8> {
    let bytes = src.as_bytes();
    let mut out = bytes.to_vec();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    out[i] = b' ';
                    i += 1;
                }
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    if bytes[i] == b'\\' && i + 1 < bytes.len() {
                        out[i] = b' ';
                        i += 1;
                    }
                    out[i] = b' ';
                    i += 1;
                }
                i += 1;
            }
            b'`' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'`' {
                    if bytes[i] != b'\n' {
                        out[i] = b' ';
                    }
                    i += 1;
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    out
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn line_of(src: &[u8], pos: usize) -> usize {
    src[..pos.min(src.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Finds calls of `name(` in code (not strings or comments), returning byte offsets.
fn find_calls(masked: &[u8], name: &str) -> Vec<usize> {
    let needle = name.as_bytes();
    let mut hits = Vec::new();
    let mut from = 0;
    while let Some(off) = find(&masked[from..], needle) {
        let at = from + off;
        from = at + needle.len();
        let before_ok = at == 0 || !(is_ident(masked[at - 1]) || masked[at - 1] == b'.');
        let mut after = at + needle.len();
        while after < masked.len() && masked[after] == b' ' {
            after += 1;
        }
        if before_ok && masked.get(after) == Some(&b'(') {
            hits.push(at);
        }
    }
    hits
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A builtin a template may not call, and the line it is called on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ForbiddenCall {
    pub builtin: &'static str,
    pub line: usize,
}

pub(crate) fn forbidden_calls(src: &str) -> Vec<ForbiddenCall> {
    let masked = mask(src);
    let mut out = Vec::new();
    for builtin in NETWORK_BUILTINS {
        for at in find_calls(&masked, builtin) {
            out.push(ForbiddenCall {
                builtin,
                line: line_of(&masked, at),
            });
        }
    }
    out.sort_by_key(|c| c.line);
    out
}

/// A `sprintf` whose literal format needs more arguments than its literal list holds. OPA would
/// print `%!v(MISSING)`; regorus makes the call undefined, which silently drops the violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SprintfMismatch {
    pub line: usize,
    pub verbs: usize,
    pub args: usize,
}

pub(crate) fn sprintf_mismatches(src: &str) -> Vec<SprintfMismatch> {
    let bytes = src.as_bytes();
    let masked = mask(src);
    let mut out = Vec::new();
    for at in find_calls(&masked, "sprintf") {
        let mut i = at + "sprintf".len();
        while masked.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
            i += 1;
        }
        i += 1; // '('
        while masked.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
            i += 1;
        }
        if bytes.get(i) != Some(&b'"') {
            continue; // not a literal format
        }
        let start = i + 1;
        let mut end = start;
        while end < bytes.len() && bytes[end] != b'"' {
            end += if bytes[end] == b'\\' { 2 } else { 1 };
        }
        let verbs = count_verbs(&src[start..end.min(bytes.len())]);
        let mut j = end + 1;
        while masked.get(j).is_some_and(|b| b.is_ascii_whitespace()) {
            j += 1;
        }
        if masked.get(j) != Some(&b',') {
            continue;
        }
        j += 1;
        while masked.get(j).is_some_and(|b| b.is_ascii_whitespace()) {
            j += 1;
        }
        if masked.get(j) != Some(&b'[') {
            continue; // arguments are not a literal list
        }
        let Some(args) = count_list_items(&masked, j) else {
            continue;
        };
        if verbs > args {
            out.push(SprintfMismatch {
                line: line_of(&masked, at),
                verbs,
                args,
            });
        }
    }
    out
}

/// Go format verbs that consume an argument (`%%` does not).
fn count_verbs(format: &str) -> usize {
    let b = format.as_bytes();
    let mut n = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            i += 1;
            if b.get(i) == Some(&b'%') {
                i += 1;
                continue;
            }
            // flags, width, precision, then the verb letter
            while i < b.len() && (b"+-# 0.*".contains(&b[i]) || b[i].is_ascii_digit()) {
                i += 1;
            }
            if i < b.len() && b[i].is_ascii_alphabetic() {
                n += 1;
            }
        }
        i += 1;
    }
    n
}

/// Items of the list literal opening at `open`, or None for a comprehension.
fn count_list_items(masked: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut items = 0;
    let mut saw_value = false;
    for &b in &masked[open..] {
        match b {
            b'[' | b'(' | b'{' => {
                if depth == 1 {
                    saw_value = true;
                }
                depth += 1;
            }
            b']' | b')' | b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(items + usize::from(saw_value));
                }
            }
            b',' if depth == 1 => {
                items += 1;
                saw_value = false;
            }
            b'|' if depth == 1 => return None,
            b if depth == 1 && !b.is_ascii_whitespace() => saw_value = true,
            _ => {}
        }
    }
    None
}

/// Rewrites v0 Rego so that regorus reads it as OPA does:
/// 1. a rule with several bodies, `head { a } { b }`, becomes `head { a } head { b }`;
/// 2. a body line that starts with `(` after a complete expression gets a `;` on the line before,
///    where regorus would otherwise read the parenthesis as a call of the previous line.
pub(crate) fn rewrite_v0(src: &str) -> String {
    let masked = mask(src);
    // (offset, text) insertions, applied back to front.
    let mut inserts: Vec<(usize, String)> = Vec::new();
    // Open delimiters; `true` for a `{` that opens a rule body.
    let mut stack: Vec<(u8, bool)> = Vec::new();
    let mut stmt_start: Option<usize> = None;
    let mut head: Option<(usize, usize)> = None;
    let mut after_body = false;
    let mut i = 0;
    while i < masked.len() {
        let b = masked[i];
        if stack.is_empty() {
            if b.is_ascii_whitespace() {
                if b == b'\n' && !after_body {
                    // A statement without a body (`package`, `import`, `x := 1`) ends here.
                    stmt_start = None;
                    head = None;
                }
                i += 1;
                continue;
            }
            if after_body {
                after_body = false;
                if b == b'{' {
                    if let Some((hs, he)) = head {
                        inserts.push((i, format!("{} ", src[hs..he].trim_end())));
                    }
                } else if !masked[i..].starts_with(b"else") {
                    stmt_start = None;
                    head = None;
                }
            }
            if stmt_start.is_none() {
                stmt_start = Some(i);
            }
        }
        match b {
            b'{' => {
                let body = stack.is_empty();
                if body && head.is_none() {
                    head = stmt_start.map(|s| (s, i));
                }
                stack.push((b, body));
            }
            b'[' | b'(' => stack.push((b, false)),
            b'}' | b']' | b')' => {
                if let Some((_, body)) = stack.pop()
                    && body
                    && stack.is_empty()
                {
                    after_body = true;
                }
            }
            b'\n' => {
                if stack.last().is_some_and(|&(_, body)| body)
                    && let Some(at) = paren_line_needs_separator(&masked, i)
                {
                    inserts.push((at, ";".into()));
                }
            }
            _ => {}
        }
        i += 1;
    }
    if inserts.is_empty() {
        return src.to_owned();
    }
    let mut out = src.to_owned();
    inserts.sort_by_key(|(at, _)| *at);
    for (at, text) in inserts.into_iter().rev() {
        out.insert_str(at, &text);
    }
    out
}

/// For a newline at `nl` inside a body: if the next line starts with `(` and this line ends a
/// complete expression, the offset just after that expression.
fn paren_line_needs_separator(masked: &[u8], nl: usize) -> Option<usize> {
    let next = masked[nl + 1..]
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map(|p| nl + 1 + p)?;
    if masked[next] != b'(' {
        return None;
    }
    let last = masked[..nl]
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())?;
    let end = masked[last];
    let ends_expression = is_ident(end) || matches!(end, b')' | b']' | b'}' | b'"' | b'`');
    if !ends_expression {
        return None;
    }
    if is_ident(end) {
        let word_start = masked[..=last]
            .iter()
            .rposition(|&b| !is_ident(b))
            .map_or(0, |p| p + 1);
        let word = &masked[word_start..=last];
        const KEYWORDS: [&[u8]; 9] = [
            b"not",
            b"some",
            b"with",
            b"as",
            b"in",
            b"every",
            b"if",
            b"contains",
            b"else",
        ];
        if KEYWORDS.contains(&word) {
            return None;
        }
    }
    Some(last + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_blanks_strings_and_comments_but_keeps_offsets() {
        let src = "x := \"a{b\" # c}\ny := `r]aw`";
        let masked = String::from_utf8(mask(src)).unwrap();
        assert_eq!(masked.len(), src.len());
        assert!(!masked.contains('{') && !masked.contains('}') && !masked.contains(']'));
        assert!(masked.starts_with("x := \"   \""));
    }

    #[test]
    fn finds_network_builtins_in_code_only() {
        let src = "package t\n# http.send(x) in a comment\nv[m] {\n  m := \"http.send(\"\n  r := http.send({\"url\": \"u\"})\n  net.lookup_ip_addr(\"h\")\n}\nmyhttp.send(1)\n";
        let calls = forbidden_calls(src);
        assert_eq!(
            calls,
            [
                ForbiddenCall {
                    builtin: "http.send",
                    line: 5
                },
                ForbiddenCall {
                    builtin: "net.lookup_ip_addr",
                    line: 6
                },
            ]
        );
    }

    #[test]
    fn sprintf_with_too_few_literal_arguments_is_found() {
        let src = "a := sprintf(\"%v and %v\", [x])\nb := sprintf(\"%v %% %d\", [x, y])\nc := sprintf(\"%.2f %s\", [f(1, 2), \"s,t\"])\nd := sprintf(\"%v\", args)\ne := sprintf(\"%v %v\", [])";
        let found = sprintf_mismatches(src);
        assert_eq!(
            found,
            [
                SprintfMismatch {
                    line: 1,
                    verbs: 2,
                    args: 1
                },
                SprintfMismatch {
                    line: 5,
                    verbs: 2,
                    args: 0
                },
            ]
        );
    }

    #[test]
    fn splits_a_rule_with_several_bodies() {
        let src =
            "package t\nviolation[{\"msg\": m}] { input.a; m := \"a\" } { input.b; m := \"b\" }\n";
        let out = rewrite_v0(src);
        assert_eq!(
            out,
            "package t\nviolation[{\"msg\": m}] { input.a; m := \"a\" } violation[{\"msg\": m}] { input.b; m := \"b\" }\n"
        );
        assert_eq!(out.lines().count(), src.lines().count());
    }

    #[test]
    fn splits_bodies_on_separate_lines_and_leaves_else_chains_alone() {
        let src = "package t\nf(x) = 1 { x > 1 }\n{ x < -1 }\ng(x) = 1 { x } else = 2 { true }\n";
        let out = rewrite_v0(src);
        assert_eq!(
            out,
            "package t\nf(x) = 1 { x > 1 }\nf(x) = 1 { x < -1 }\ng(x) = 1 { x } else = 2 { true }\n"
        );
    }

    #[test]
    fn separates_a_line_starting_with_a_parenthesis() {
        let src = "package t\nv[m] {\n  x := input.a\n  (x + 1) > 0\n  y := [1,\n    (2)]\n  m := \"p\"\n}\n";
        let out = rewrite_v0(src);
        assert!(out.contains("x := input.a;\n  (x + 1) > 0"), "{out}");
        assert!(out.contains("y := [1,\n    (2)]"), "{out}");
        assert_eq!(out.lines().count(), src.lines().count());
    }

    #[test]
    fn leaves_ordinary_v0_untouched() {
        let src = "package t\nimport future.keywords.in\nviolation[{\"msg\": msg, \"details\": {}}] {\n  c := input.review.object.spec.containers[_]\n  not c.securityContext\n  msg := sprintf(\"%v\", [c.name])\n}\n";
        assert_eq!(rewrite_v0(src), src);
    }
}
