//! The rewrites of a template's source that make regorus evaluate it as OPA does
//! (docs/regorus-divergences.md). Each keeps the line count.
//! - `sprintf` formats regorus would fail on: [`fill_missing_sprintf_args`], [`sprintf_as_opa`];
//! - v0 syntax regorus parses otherwise: [`rewrite_v0`];
//! - terms that may be undefined, checked where OPA checks them: [`guard_negated_terms`],
//!   [`guard_membership_values`], [`keep_unused_assignments`], [`bind_partial_heads`],
//!   [`guard_comprehension_terms`];
//! - the unification of a fresh variable, written as the assignment it means:
//!   [`assign_fresh_unifications`].

use super::masking::{closing, find, find_calls, is_ident, line_of, mask, split_args};
use super::{is_literal, opens_head_value, rule_heads};

/// A `sprintf` whose literal format needs more arguments than its literal list holds. OPA would
/// print `%!v(MISSING)`; regorus makes the call undefined, which silently drops the violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SprintfMismatch {
    pub line: usize,
    pub verbs: usize,
    pub args: usize,
}

/// A `sprintf` call with a literal format and a literal argument list.
struct SprintfCall {
    line: usize,
    /// Byte range of the format's contents, between the quotes.
    format: (usize, usize),
    verbs: usize,
    /// Items of a literal argument list; `None` when the arguments are not a literal list.
    args: Option<usize>,
}

fn sprintf_calls(src: &str) -> Vec<SprintfCall> {
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
        let args = if masked.get(j) == Some(&b'[') {
            count_list_items(&masked, j)
        } else {
            None // arguments are not a literal list
        };
        out.push(SprintfCall {
            line: line_of(&masked, at),
            format: (start, end.min(bytes.len())),
            verbs,
            args,
        });
    }
    out
}

/// Go format verbs that consume an argument (`%%` does not).
fn count_verbs(format: &str) -> usize {
    verbs(format).len()
}

/// The verbs of a Go format that consume an argument: the byte range of each (from `%` to the
/// verb letter) and its letter.
fn verbs(format: &str) -> Vec<(usize, usize, char)> {
    let b = format.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let start = i;
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
                out.push((start, i + 1, b[i] as char));
            }
        }
        i += 1;
    }
    out
}

/// Makes a `sprintf` whose literal format has more verbs than its literal list has arguments
/// print what OPA (Go's fmt) prints for each missing one, `%!v(MISSING)`, instead of failing:
/// regorus makes such a call an error, which drops the violation that carries the message. The
/// verbs past the last argument are replaced in the format by their literal OPA text (escaped
/// as `%%!v(MISSING)`). Returns the rewritten source and what was rewritten, for a load warning.
pub(crate) fn fill_missing_sprintf_args(src: &str) -> (String, Vec<SprintfMismatch>) {
    let found = sprintf_calls(src);
    let mismatched: Vec<&SprintfCall> = found
        .iter()
        .filter(|c| c.args.is_some_and(|args| c.verbs > args))
        .collect();
    if mismatched.is_empty() {
        return (src.to_owned(), Vec::new());
    }
    let mut out = src.to_owned();
    for call in mismatched.iter().rev() {
        let format = &src[call.format.0..call.format.1];
        let mut fixed = String::with_capacity(format.len() + 16);
        let mut from = 0;
        for (n, (start, end, verb)) in verbs(format).into_iter().enumerate() {
            if n < call.args.unwrap_or(usize::MAX) {
                continue;
            }
            fixed.push_str(&format[from..start]);
            fixed.push_str(&format!("%%!{verb}(MISSING)"));
            from = end;
        }
        fixed.push_str(&format[from..]);
        out.replace_range(call.format.0..call.format.1, &fixed);
    }
    let report = mismatched
        .into_iter()
        .map(|c| SprintfMismatch {
            line: c.line,
            verbs: c.verbs,
            args: c.args.unwrap_or_default(),
        })
        .collect();
    (out, report)
}

/// Keeps a violation whose message `sprintf` regorus would fail, where OPA (Go's fmt) prints a
/// marker and goes on (docs/regorus-divergences.md, section 16): regorus makes the call an
/// error, non-strict undefined, which drops the violation that carries the message.
/// - `%d` of a value that is not an integer (OPA: `%!d(float64=0.5)`, `%!d(string=a)`): a bare
///   `%d` of a literal format becomes `%v`, which prints an integer exactly as `%d` does and
///   anything else as `%v`, so only the text of OPA's marker differs.
/// - more literal arguments than verbs (OPA: `…%!(EXTRA int=1)`): `%!(EXTRA %v, …)` is appended
///   to the format for the extra ones.
pub(crate) fn sprintf_as_opa(src: &str) -> String {
    let found = sprintf_calls(src);
    let mut out = src.to_owned();
    for call in found.iter().rev() {
        let format = &src[call.format.0..call.format.1];
        let mut fixed = String::with_capacity(format.len() + 8);
        let mut from = 0;
        for (start, end, verb) in verbs(format) {
            if verb == 'd' && end - start == 2 {
                fixed.push_str(&format[from..start]);
                fixed.push_str("%v");
                from = end;
            }
        }
        fixed.push_str(&format[from..]);
        if let Some(args) = call.args
            && args > call.verbs
        {
            let extra = vec!["%v"; args - call.verbs].join(", ");
            fixed.push_str(&format!("%%!(EXTRA {extra})"));
        }
        if fixed != format {
            out.replace_range(call.format.0..call.format.1, &fixed);
        }
    }
    out
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
                // At the top level a `{` opens a body, unless it opens the value of the head:
                // `f(x) = {"a": 1} { … }`, `default x := {…}`, `p contains {…} if { … }`.
                let body = stack.is_empty() && !opens_head_value(&masked, i);
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

/// Makes `not` treat an undefined argument as OPA does. OPA's compiler moves the arguments of a
/// negated call (`not f(input.x)`, `not input.x > 1`, `not startswith(c.image, r)`) and the
/// calls among the operands of a negated comparison out of the negation, so an undefined one
/// makes the whole expression fail (open-policy-agent/opa#1877). regorus evaluates them inside,
/// where `not` of the undefined call is true: a violation OPA does not report. This inserts
/// `_ = <term>;` before the `not` for each such term, which fails the body in the same cases.
/// A negation with `with`, arithmetic or a wildcard is left as it is.
pub(crate) fn guard_negated_terms(src: &str) -> String {
    let masked = mask(src);
    let rules = rule_names(&masked);
    let mut inserts: Vec<(usize, String)> = Vec::new();
    let mut from = 0;
    while let Some(off) = find(&masked[from..], b"not") {
        let at = from + off;
        from = at + 3;
        let before_ok = at == 0 || !(is_ident(masked[at - 1]) || masked[at - 1] == b'.');
        let after_ok = masked.get(at + 3).is_some_and(|b| b.is_ascii_whitespace());
        if !before_ok || !after_ok || !starts_statement(&masked, at) {
            continue;
        }
        let start = at + 3;
        let Some(end) = expression_end(&masked, start) else {
            continue;
        };
        let mut guards = negated_guards(src, &masked, start, end);
        // A bare name needs a check only when it is a rule (which may be undefined): a
        // variable is bound, and checking it would cost an instruction for nothing.
        guards.retain(|g| !bare_name(g) || rules.contains(g.as_str()));
        if !guards.is_empty() {
            let text: String = guards.iter().map(|g| format!("_ = {g}; ")).collect();
            inserts.push((at, text));
        }
    }
    let mut out = src.to_owned();
    for (at, text) in inserts.into_iter().rev() {
        out.insert_str(at, &text);
    }
    out
}

/// Makes `x := a in b` fail the body when `a` or `b` is undefined, as in OPA, where membership
/// is a call whose operands must be defined; regorus makes it `false`
/// (docs/regorus-divergences.md, section 17), which a later `not x` turns into a violation
/// OPA does not report (or an exemption into an admission). `_ = a; _ = b;` is inserted before
/// such an assignment for each operand that is a reference or a call.
pub(crate) fn guard_membership_values(src: &str) -> String {
    let masked = mask(src);
    let rules = rule_names(&masked);
    let mut inserts: Vec<(usize, String)> = Vec::new();
    let mut i = 0;
    while i + 1 < masked.len() {
        if !(masked[i] == b':' && masked[i + 1] == b'=') {
            i += 1;
            continue;
        }
        let rhs = i + 2;
        i += 2;
        // The assigned name, at the start of a statement.
        let Some(name_end) = masked[..rhs - 2]
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map(|p| p + 1)
        else {
            continue;
        };
        let name_start = masked[..name_end]
            .iter()
            .rposition(|&b| !is_ident(b))
            .map_or(0, |p| p + 1);
        if name_start == name_end || !starts_statement(&masked, name_start) {
            continue;
        }
        let Some(end) = expression_end(&masked, rhs) else {
            continue;
        };
        let m = &masked[rhs..end];
        let mut depth = 0i32;
        let mut at = None;
        for (j, &b) in m.iter().enumerate() {
            match b {
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => depth -= 1,
                b'i' if depth == 0
                    && m[j..].starts_with(b"in")
                    && j > 0
                    && m[j - 1].is_ascii_whitespace()
                    && m.get(j + 2).is_some_and(|c| c.is_ascii_whitespace()) =>
                {
                    at = Some(j);
                    break;
                }
                _ => {}
            }
        }
        let Some(at) = at else { continue };
        let mut guards = Vec::new();
        for range in [rhs..rhs + at, rhs + at + 2..end] {
            let t = src[range.clone()].trim();
            let tm = std::str::from_utf8(&masked[range]).unwrap_or("").trim();
            if matches!(classify(tm), Term::Call(_) | Term::Ref)
                && (!bare_name(t) || rules.contains(t))
            {
                guards.push(format!("_ = {t}; "));
            }
        }
        if !guards.is_empty() {
            inserts.push((name_start, guards.concat()));
        }
    }
    let mut out = src.to_owned();
    for (at, text) in inserts.into_iter().rev() {
        out.insert_str(at, &text);
    }
    out
}

/// Whether `t` is a bare name (`exempt`, `x`), not a reference or a call.
fn bare_name(t: &str) -> bool {
    !t.is_empty() && t.bytes().all(is_ident)
}

/// The names of the module's rules and functions.
fn rule_names(masked: &[u8]) -> std::collections::BTreeSet<String> {
    rule_heads(masked)
        .into_iter()
        .filter_map(|(s, e)| {
            let head = std::str::from_utf8(&masked[s..e]).ok()?;
            if ["package ", "import ", "else"]
                .iter()
                .any(|k| head.starts_with(k))
            {
                return None;
            }
            let head = head.strip_prefix("default ").unwrap_or(head).trim_start();
            let end = head
                .bytes()
                .position(|c| !is_ident(c))
                .unwrap_or(head.len());
            (end > 0).then(|| head[..end].to_owned())
        })
        .collect()
}

/// Whether the word at `at` begins a statement of a body: after `{`, `;`, `|` or a line break.
fn starts_statement(masked: &[u8], at: usize) -> bool {
    masked[..at]
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .is_some_and(|p| matches!(masked[p], b'{' | b';' | b'|' | b'\n' | b'\r'))
}

/// The end (exclusive) of the expression that starts at `start`: the first `;`, line break or
/// unbalanced closing bracket outside brackets.
fn expression_end(masked: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0i32;
    for (i, &b) in masked.iter().enumerate().skip(start) {
        match b {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                if depth == 0 {
                    return Some(i);
                }
                depth -= 1;
            }
            b';' | b'\n' | b'|' if depth == 0 => return Some(i),
            _ => {}
        }
    }
    (depth == 0).then_some(masked.len())
}

/// The terms of the negated expression `src[start..end]` that OPA evaluates outside the `not`.
fn negated_guards(src: &str, masked: &[u8], start: usize, end: usize) -> Vec<String> {
    let m = &masked[start..end];
    let text = &src[start..end];
    // Split at a top-level comparison; give up on arithmetic, sets and `with`.
    let mut depth = 0i32;
    let mut op: Option<(usize, usize)> = None;
    let mut arith = false;
    let mut i = 0;
    while i < m.len() {
        let b = m[i];
        match b {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            _ if depth > 0 => {}
            b'=' | b'!' | b'<' | b'>' | b':' => {
                let len = if m.get(i + 1) == Some(&b'=') { 2 } else { 1 };
                if op.is_some() || (b == b'!' && len == 1) || (b == b':' && len == 1) {
                    return Vec::new();
                }
                op = Some((i, i + len));
                i += len;
                continue;
            }
            // Arithmetic is a call in OPA, moved out with the side it is on.
            b'+' | b'-' | b'*' | b'/' | b'%' | b'&' => arith = true,
            b'w' if m[i..].starts_with(b"with")
                && (i == 0 || !is_ident(m[i - 1]))
                && !m.get(i + 4).is_some_and(|c| is_ident(*c)) =>
            {
                return Vec::new();
            }
            // `a in b` is a call (`internal.member_2`): OPA moves both operands out.
            b'i' if m[i..].starts_with(b"in")
                && i > 0
                && m[i - 1].is_ascii_whitespace()
                && m.get(i + 2).is_some_and(|c| c.is_ascii_whitespace()) =>
            {
                if op.is_some() {
                    return Vec::new();
                }
                op = Some((i, i + 2));
                i += 2;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    let term = |range: std::ops::Range<usize>| {
        let t = text[range.clone()].trim();
        let tm = std::str::from_utf8(&m[range]).unwrap_or("").trim();
        (t.to_owned(), classify(tm))
    };
    let mut guards = Vec::new();
    match op {
        Some((os, oe)) => {
            let unify = matches!(&text[os..oe], "==" | "=");
            let member = &text[os..oe] == "in";
            let arithmetic = |r: std::ops::Range<usize>| {
                m[r].iter()
                    .any(|c| matches!(c, b'+' | b'-' | b'*' | b'/' | b'%' | b'&'))
            };
            for (range, (t, class)) in [(0..os, term(0..os)), (oe..m.len(), term(oe..m.len()))] {
                // An array, set or object literal holding references or calls: OPA moves
                // what is inside out too.
                let composite = {
                    let am = std::str::from_utf8(&m[range.clone()]).unwrap_or("").trim();
                    (am.starts_with('[') || am.starts_with('{'))
                        && !am.contains('|')
                        && may_be_undefined(am)
                };
                if (arith && arithmetic(range)) || (composite && (!unify || member)) {
                    guards.push(t);
                    continue;
                }
                match class {
                    Term::Call(_) => guards.push(t),
                    Term::Ref if !unify || member => guards.push(t),
                    Term::Ref => guards.extend(ref_key_guards(&t)),
                    _ => {}
                }
            }
        }
        None if arith => {}
        None => {
            let (t, class) = term(0..m.len());
            if let Term::Ref = class {
                guards.extend(ref_key_guards(&t));
            }
            if let Term::Call(open) = class {
                // the arguments of the negated call
                let lead = text.len() - text.trim_start().len();
                let args_start = lead + open + 1;
                let close = t.len() - 1 + lead;
                for (a, b) in split_args(&m[args_start..close]) {
                    let range = args_start + a..args_start + b;
                    let (composite, arithmetic) = {
                        let am = std::str::from_utf8(&m[range.clone()]).unwrap_or("").trim();
                        let mut depth = 0i32;
                        let arithmetic = !am.contains('|')
                            && am.bytes().skip(1).any(|c| {
                                match c {
                                    b'(' | b'[' | b'{' => depth += 1,
                                    b')' | b']' | b'}' => depth -= 1,
                                    _ => {}
                                }
                                depth == 0 && matches!(c, b'+' | b'-' | b'*' | b'/' | b'%')
                            });
                        (
                            (am.starts_with('[') || am.starts_with('{'))
                                && !am.contains('|')
                                && may_be_undefined(am),
                            arithmetic,
                        )
                    };
                    let (arg, class) = term(range);
                    if matches!(class, Term::Call(_) | Term::Ref) || composite || arithmetic {
                        guards.push(arg);
                    }
                }
            }
        }
    }
    guards
}

/// Whether a masked composite literal holds something that may be undefined: a reference, a
/// call, or a name (a rule, which may be undefined: `not "a" in [r0]`; a variable is bound, and
/// its check costs nothing).
fn may_be_undefined(masked: &str) -> bool {
    let b = masked.as_bytes();
    b.iter().any(|c| matches!(c, b'.' | b'('))
        || b.iter().enumerate().any(|(i, &c)| {
            (c.is_ascii_alphabetic() || c == b'_') && (i == 0 || !is_ident(b[i - 1])) && {
                let end = b[i..]
                    .iter()
                    .position(|&c| !is_ident(c))
                    .map_or(b.len(), |e| i + e);
                !matches!(&masked[i..end], "true" | "false" | "null" | "_")
            }
        })
}

/// The keys of a reference that are references or calls themselves (`input.ns` in
/// `data.inventory.namespace[input.ns]["v1"]`): OPA evaluates them outside a negation, so an
/// undefined one fails the body where regorus makes `not` of the reference true
/// (docs/regorus-divergences.md, section 17).
fn ref_key_guards(t: &str) -> Vec<String> {
    let masked = mask(t);
    let mut out = Vec::new();
    let mut i = 0;
    while i < masked.len() {
        if masked[i] == b'[' {
            let Some(close) = closing(&masked, i) else {
                break;
            };
            let key = t[i + 1..close].trim();
            let key_masked = std::str::from_utf8(&masked[i + 1..close])
                .unwrap_or("")
                .trim();
            // A reference, a call, or a name (a rule, which may be undefined; a variable,
            // which is bound and checked for nothing).
            let name = !key_masked.is_empty()
                && key_masked != "_"
                && key_masked.bytes().all(is_ident)
                && key_masked
                    .bytes()
                    .next()
                    .is_some_and(|c| !c.is_ascii_digit())
                && !matches!(key_masked, "true" | "false" | "null");
            if name || matches!(classify(key_masked), Term::Call(_) | Term::Ref) {
                out.push(key.to_owned());
            }
            i = close + 1;
        } else {
            i += 1;
        }
    }
    out
}

enum Term {
    /// `name(args)`, with the offset of its `(`.
    Call(usize),
    /// `a.b`, `a[k]`: a reference into a value.
    Ref,
    Other,
}

/// What a masked, trimmed term is.
fn classify(t: &str) -> Term {
    let b = t.as_bytes();
    if b.is_empty() || !(b[0].is_ascii_alphabetic() || b[0] == b'_') {
        return Term::Other;
    }
    // A wildcard or comprehension inside would change meaning when moved.
    if t.contains('|')
        || b.iter().enumerate().any(|(i, &c)| {
            c == b'_'
                && (i == 0 || !is_ident(b[i - 1]))
                && !b.get(i + 1).is_some_and(|n| is_ident(*n))
        })
    {
        return Term::Other;
    }
    let name_end = b
        .iter()
        .position(|&c| !(is_ident(c) || c == b'.'))
        .unwrap_or(b.len());
    if b.get(name_end) == Some(&b'(') && closing(b, name_end) == Some(b.len() - 1) {
        return Term::Call(name_end);
    }
    // A reference: a name, then `.field` and `[key]` selections only.
    let mut i = name_end;
    while i < b.len() {
        match b[i] {
            b'[' => match closing(b, i) {
                Some(c) => i = c + 1,
                None => return Term::Other,
            },
            _ => return Term::Other,
        }
    }
    let word = &t[..name_end];
    // A bare name too: a rule, which may be undefined (a variable is bound, and checking it
    // changes nothing).
    if !matches!(word, "true" | "false" | "null") {
        Term::Ref
    } else {
        Term::Other
    }
}

/// Whether the word `name` occurs in `text` other than at `skip`: not as a field (after `.`)
/// nor inside a longer identifier.
fn word_elsewhere(text: &[u8], name: &[u8], skip: usize) -> bool {
    let mut from = 0;
    while let Some(off) = find(&text[from..], name) {
        let at = from + off;
        from = at + 1;
        let before_ok = at == 0 || !(is_ident(text[at - 1]) || text[at - 1] == b'.');
        let after_ok = !text.get(at + name.len()).is_some_and(|b| is_ident(*b));
        if before_ok && after_ok && at != skip {
            return true;
        }
    }
    false
}

/// The bodies of the top-level statements: (start, end) from the `{` after the head to the
/// start of the next statement.
fn bodies(masked: &[u8]) -> Vec<(usize, usize, usize)> {
    let heads = rule_heads(masked);
    heads
        .iter()
        .enumerate()
        .filter(|(_, (_, he))| masked.get(*he) == Some(&b'{'))
        .map(|(n, &(hs, he))| (hs, he, heads.get(n + 1).map_or(masked.len(), |h| h.0)))
        .collect()
}

/// A word that may start a statement in a rule's body, as the body rewrites scan for them.
/// `start..end` is the whole definition (head included) in the masked source; the other
/// offsets are relative to `start`: the word is `word_start..name_end`, and `j` is the first
/// byte after it and the blanks that follow.
#[derive(Clone, Copy)]
struct BodyWord {
    start: usize,
    end: usize,
    word_start: usize,
    name_end: usize,
    j: usize,
}

/// Every identifier in the bodies of `masked`'s rules that is not part of a longer name or a
/// field (after `.`), in order.
fn body_words(masked: &[u8]) -> Vec<BodyWord> {
    let mut words = Vec::new();
    for (start, body, end) in bodies(masked) {
        let region = &masked[start..end];
        let mut i = body - start + 1;
        while i < region.len() {
            if !is_ident(region[i]) || is_ident(region[i - 1]) || region[i - 1] == b'.' {
                i += 1;
                continue;
            }
            let word_start = i;
            while i < region.len() && is_ident(region[i]) {
                i += 1;
            }
            let mut j = i;
            while region.get(j).is_some_and(|b| *b == b' ' || *b == b'\t') {
                j += 1;
            }
            words.push(BodyWord {
                start,
                end,
                word_start,
                name_end: i,
                j,
            });
        }
    }
    words
}

/// Makes an assignment whose variable nothing reads fail the body when its value is undefined,
/// as in OPA. regorus' VM (0.14) drops such an assignment (`x := input.missing`, where `x` is
/// never used), so an absent field no longer fails the body
/// (docs/regorus-divergences.md, section 16): `exempt { x := <absent>; true }` holds and
/// `not exempt` lets the object in. `x := E` becomes `_ = E`, which OPA reads alike (E is
/// evaluated, iterated where it iterates, and fails the body when undefined) and the VM keeps.
/// A variable is unused when its name appears nowhere else in the rule's definition.
pub(crate) fn keep_unused_assignments(src: &str) -> String {
    let masked = mask(src);
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    for word in body_words(&masked) {
        // The whole definition, head included (`violation[{"msg": msg}] { msg := … }`).
        let BodyWord {
            start,
            word_start,
            j,
            ..
        } = word;
        let region = &masked[start..word.end];
        let name = &region[word_start..word.name_end];
        if !(region[j..].starts_with(b":=")
            && !region[word_start].is_ascii_digit()
            && name != b"_"
            && starts_statement(&masked, start + word_start))
        {
            continue;
        }
        if !word_elsewhere(region, name, word_start) {
            edits.push((start + word_start, start + j + 2, "_ =".into()));
        } else if only_negated_uses(region, name, word_start)
            && let Some(stmt_end) = expression_end(&masked, start + j + 2)
        {
            // Read only inside negations, where an undefined value makes `not` true on the
            // VM: check it right after the assignment.
            let name = String::from_utf8_lossy(name);
            edits.push((stmt_end, stmt_end, format!("; _ = {name}")));
        }
    }
    edits.sort_by_key(|e| e.0);
    let mut out = src.to_owned();
    for (from, to, text) in edits.into_iter().rev() {
        out.replace_range(from..to, &text);
    }
    out
}

/// Writes the unification of a fresh variable, `x = E` (where `x` appears nowhere before it in
/// the rule's definition and names no rule), as the assignment `x := E` it means. regorus (both
/// engines) mishandles such a variable as the key of a negated reference: after
/// `v2 = input.review.operation`, `not input.review.object.metadata.labels[v2]` is false on an
/// empty object, where OPA holds it true (docs/regorus-divergences.md, section 23).
pub(crate) fn assign_fresh_unifications(src: &str) -> String {
    let masked = mask(src);
    let rules = rule_names(&masked);
    let mut edits: Vec<usize> = Vec::new();
    for word in body_words(&masked) {
        let BodyWord {
            start,
            end,
            word_start,
            j,
            ..
        } = word;
        let region = &masked[start..end];
        let name = &region[word_start..word.name_end];
        let is_unification = region.get(j) == Some(&b'=')
            && region.get(j + 1) != Some(&b'=')
            && j > 0
            && !matches!(region[j - 1], b':' | b'!' | b'<' | b'>' | b'=');
        if !is_unification
            || region[word_start].is_ascii_digit()
            || name == b"_"
            || rules.contains(std::str::from_utf8(name).unwrap_or(""))
            || !starts_statement(&masked, start + word_start)
        {
            continue;
        }
        // Fresh: not in the head nor earlier in the body, nor in its own value.
        let stmt_end = expression_end(&masked, start + j + 1).map_or(end, |e| e) - start;
        let earlier = word_elsewhere(&region[..word_start], name, usize::MAX);
        let value = &region[j + 1..stmt_end.max(j + 1)];
        let in_value = word_elsewhere(value, name, usize::MAX);
        // `:=` needs its value's variables bound before it; `=` lets OPA and regorus order
        // the body for them (`s = concat(":", [k, v]); v = obj[k]`). Only a value whose
        // variables all appear earlier is rewritten.
        let value_bound = value_variables(value, &rules)
            .iter()
            .all(|v| word_elsewhere(&region[..word_start], v, usize::MAX));
        if !earlier && !in_value && value_bound {
            edits.push(start + j);
        }
    }
    let mut out = src.to_owned();
    for at in edits.into_iter().rev() {
        out.replace_range(at..at + 1, ":=");
    }
    out
}

/// The names in a masked expression that may be variables: not a field (after `.`), not a call
/// (before `(`), not a builtin's namespace (`object` of `object.get`), a keyword, `input`,
/// `data` or a rule.
fn value_variables<'a>(
    value: &'a [u8],
    rules: &std::collections::BTreeSet<String>,
) -> Vec<&'a [u8]> {
    const NOT_VARIABLES: [&str; 16] = [
        "input", "data", "true", "false", "null", "not", "some", "in", "every", "with", "as", "if",
        "contains", "else", "default", "_",
    ];
    const BUILTIN_NAMESPACES: [&str; 24] = [
        "object",
        "array",
        "strings",
        "regex",
        "net",
        "time",
        "json",
        "yaml",
        "crypto",
        "units",
        "io",
        "glob",
        "semver",
        "base64",
        "base64url",
        "urlquery",
        "uuid",
        "graph",
        "rego",
        "opa",
        "http",
        "hex",
        "numbers",
        "bits",
    ];
    let mut out = Vec::new();
    let mut i = 0;
    while i < value.len() {
        if !is_ident(value[i]) || (i > 0 && (is_ident(value[i - 1]) || value[i - 1] == b'.')) {
            i += 1;
            continue;
        }
        let from = i;
        while i < value.len() && is_ident(value[i]) {
            i += 1;
        }
        let word = &value[from..i];
        let next = value[i..].iter().find(|b| !b.is_ascii_whitespace());
        let text = std::str::from_utf8(word).unwrap_or("");
        if word[0].is_ascii_digit()
            || next == Some(&b'(')
            || (next == Some(&b'.') && BUILTIN_NAMESPACES.contains(&text))
            || NOT_VARIABLES.contains(&text)
            || rules.contains(text)
        {
            continue;
        }
        out.push(word);
    }
    out
}

/// Whether every occurrence of `name` in `region` other than at `skip` is inside a statement
/// that begins with `not`.
fn only_negated_uses(region: &[u8], name: &[u8], skip: usize) -> bool {
    let mut from = 0;
    let mut any = false;
    while let Some(off) = find(&region[from..], name) {
        let at = from + off;
        from = at + 1;
        let before_ok = at == 0 || !(is_ident(region[at - 1]) || region[at - 1] == b'.');
        let after_ok = !region.get(at + name.len()).is_some_and(|b| is_ident(*b));
        if !before_ok || !after_ok || at == skip {
            continue;
        }
        any = true;
        let stmt = region[..at]
            .iter()
            .rposition(|b| matches!(b, b';' | b'\n' | b'{' | b'|'))
            .map_or(0, |p| p + 1);
        let text = std::str::from_utf8(&region[stmt..at])
            .unwrap_or("")
            .trim_start();
        if !text.starts_with("not ") {
            return false;
        }
    }
    any
}

/// Binds the key (and value) of a partial rule in its body when it is more than a variable or
/// a literal: `names[c.name] { some c in cs }` becomes `names[__palisade_k] { some c in cs;
/// __palisade_k := c.name }`. OPA skips a body whose head term is undefined; regorus'
/// interpreter fails the evaluation when such a body comes first and keeps the rule empty when
/// it comes later, and the VM counts an undefined key of a partial object
/// (docs/regorus-divergences.md, sections 14 and 15). A term bound in the body is undefined
/// there, which fails that body alone on both engines, as OPA does. Heads of the form
/// `name[k] {`, `name[k] = v {`, `name[k] := v {` and `name contains k {` (with or without
/// `if`) are rewritten; the line count is kept.
pub(crate) fn bind_partial_heads(src: &str) -> String {
    let masked = mask(src);
    let heads = rule_heads(&masked);
    // (offset, removed, inserted), applied back to front.
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    for (n, &(hs, he)) in heads.iter().enumerate() {
        if masked.get(he) != Some(&b'{') {
            continue;
        }
        let head = &masked[hs..he];
        let name_end = head
            .iter()
            .position(|&c| !(is_ident(c) || c == b'.'))
            .unwrap_or(head.len());
        if name_end == 0 || head.starts_with(b"default") || head.starts_with(b"else") {
            continue;
        }
        // The key's range in the head, and the value's.
        let mut terms: Vec<(usize, usize, &str)> = Vec::new();
        let after_name = &head[name_end..];
        let rest_at = if after_name.first() == Some(&b'[') {
            let Some(close) = closing(head, name_end) else {
                continue;
            };
            if head[close] != b']' {
                continue;
            }
            terms.push((name_end + 1, close, "__palisade_k"));
            close + 1
        } else {
            let t = after_name.iter().position(|b| !b.is_ascii_whitespace());
            let Some(t) = t else { continue };
            if !after_name[t..].starts_with(b"contains ") {
                continue;
            }
            let key_start = name_end + t + "contains ".len();
            let key_end = head
                .windows(4)
                .rposition(|w| w == b" if ")
                .filter(|p| *p >= key_start)
                .unwrap_or(head.len());
            terms.push((key_start, key_end, "__palisade_k"));
            head.len()
        };
        // `= v` or `:= v`, up to `if` or the end of the head.
        let rest = &head[rest_at..];
        let rest_trim = rest.iter().position(|b| !b.is_ascii_whitespace());
        if let Some(t) = rest_trim {
            let op = if rest[t..].starts_with(b":=") {
                2
            } else if rest[t..].starts_with(b"=") && !rest[t..].starts_with(b"==") {
                1
            } else {
                0
            };
            if op > 0 {
                let v_start = rest_at + t + op;
                let v_end = head
                    .windows(4)
                    .rposition(|w| w == b" if ")
                    .filter(|p| *p >= v_start)
                    .unwrap_or(head.len());
                terms.push((v_start, v_end, "__palisade_v"));
            } else if !(rest[t..].starts_with(b"if") && rest[t..].len() <= 3) {
                continue;
            }
        }
        // Only terms that may be undefined: references and calls.
        let terms: Vec<(usize, usize, &str)> = terms
            .into_iter()
            .filter(|&(a, b, _)| {
                let t = &head[a..b];
                t.iter().any(|c| matches!(c, b'.' | b'(' | b'['))
                    && !t.contains(&b'|')
                    && !t.iter().all(|c| c.is_ascii_whitespace())
            })
            .collect();
        if terms.is_empty() {
            continue;
        }
        // The body's last literal.
        let body_end = heads.get(n + 1).map_or(masked.len(), |h| h.0);
        let Some(close) = closing(&masked[..body_end], he) else {
            continue;
        };
        let Some(last) = masked[he + 1..close]
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map(|p| he + 1 + p)
        else {
            continue;
        };
        let sep = if masked[last] == b';' { " " } else { "; " };
        let binds: Vec<String> = terms
            .iter()
            .map(|&(a, b, var)| format!("{var} = {}", src[hs + a..hs + b].trim()))
            .collect();
        edits.push((last + 1, 0, format!("{sep}{}", binds.join("; "))));
        for &(a, b, var) in terms.iter().rev() {
            let text = &src[hs + a..hs + b];
            let lead = text.len() - text.trim_start().len();
            let trail = text.len() - text.trim_end().len();
            let space = if lead > 0 { " " } else { "" };
            let tail = if trail > 0 { " " } else { "" };
            edits.push((hs + a, b - a, format!("{space}{var}{tail}")));
        }
    }
    edits.sort_by_key(|e| std::cmp::Reverse(e.0));
    let mut out = src.to_owned();
    for (at, removed, inserted) in edits {
        out.replace_range(at..at + removed, &inserted);
    }
    out
}

/// Makes an array or object comprehension skip an element whose term is undefined, as OPA does:
/// regorus' VM (0.14) adds it (`count([c.name | some c in cs])` counts a container without a
/// name; docs/regorus-divergences.md, section 19), which a policy that counts or compares can
/// turn into an admission. `[t | body]` becomes `[t | body; _ = t]` and `{k: v | body}`
/// becomes `{k: v | body; _ = k; _ = v}` where the term is a reference, a call or a variable;
/// the check fails the body for that element in every engine, and is a no-op otherwise. Set
/// comprehensions are read right and left alone.
pub(crate) fn guard_comprehension_terms(src: &str) -> String {
    let masked = mask(src);
    let mut inserts: Vec<(usize, String)> = Vec::new();
    // Open brackets: (offset, offset of the `|` at its own depth).
    let mut open: Vec<(usize, Option<usize>)> = Vec::new();
    for (i, &b) in masked.iter().enumerate() {
        match b {
            b'[' | b'{' | b'(' => open.push((i, None)),
            b'|' => {
                if let Some(top) = open.last_mut()
                    && masked[top.0] != b'('
                    && top.1.is_none()
                {
                    top.1 = Some(i);
                }
            }
            b']' | b'}' | b')' => {
                let Some((at, Some(bar))) = open.pop() else {
                    continue;
                };
                let head_masked = &masked[at + 1..bar];
                let terms: Vec<(usize, usize)> = if masked[at] == b'[' {
                    vec![(at + 1, bar)]
                } else {
                    // `{k: v | …}`: split at the top-level `:`; none is a set comprehension.
                    let mut depth = 0i32;
                    let colon = head_masked.iter().position(|&c| {
                        match c {
                            b'(' | b'[' | b'{' => depth += 1,
                            b')' | b']' | b'}' => depth -= 1,
                            _ => {}
                        }
                        c == b':' && depth == 0
                    });
                    match colon {
                        Some(c) => vec![(at + 1, at + 1 + c), (at + 2 + c, bar)],
                        None => continue,
                    }
                };
                let guards: Vec<String> = terms
                    .into_iter()
                    .filter(|&(a, b)| {
                        let t = std::str::from_utf8(&masked[a..b]).unwrap_or("").trim();
                        !t.is_empty()
                            && !t.contains('|')
                            && !is_literal(t)
                            && (t
                                .bytes()
                                .next()
                                .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
                                || t.bytes().any(|c| matches!(c, b'.' | b'(' | b'[')))
                    })
                    .map(|(a, b)| {
                        // A bare variable is compared with itself: `_ = x` can make regorus'
                        // scheduler read `x` as unsafe where the body binds it by unification
                        // in another order (`[s | s = concat(":", [k, v]); v = o[k]]`).
                        let t = src[a..b].trim();
                        if bare_name(t) {
                            format!("{t} == {t}")
                        } else {
                            format!("_ = {t}")
                        }
                    })
                    .collect();
                if guards.is_empty() {
                    continue;
                }
                let Some(last) = masked[bar + 1..i]
                    .iter()
                    .rposition(|c| !c.is_ascii_whitespace())
                    .map(|p| bar + 1 + p)
                else {
                    continue;
                };
                let sep = if masked[last] == b';' { " " } else { "; " };
                inserts.push((last + 1, format!("{sep}{}", guards.join("; "))));
            }
            _ => {}
        }
    }
    inserts.sort_by_key(|e| std::cmp::Reverse(e.0));
    let mut out = src.to_owned();
    for (at, text) in inserts {
        out.insert_str(at, &text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::rego::checks::object_comprehensions;

    #[test]
    fn sprintf_with_too_few_literal_arguments_is_found() {
        let src = "a := sprintf(\"%v and %v\", [x])\nb := sprintf(\"%v %% %d\", [x, y])\nc := sprintf(\"%.2f %s\", [f(1, 2), \"s,t\"])\nd := sprintf(\"%v\", args)\ne := sprintf(\"%v %v\", [])";
        let (_, found) = fill_missing_sprintf_args(src);
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
    fn a_bare_percent_d_and_extra_arguments_keep_the_violation() {
        let src = "a := sprintf(\"%d of %5d\", [x, y])\nb := sprintf(\"n\", [x, y])\nc := sprintf(f, [x])";
        assert_eq!(
            sprintf_as_opa(src),
            "a := sprintf(\"%v of %5d\", [x, y])\nb := sprintf(\"n%%!(EXTRA %v, %v)\", [x, y])\nc := sprintf(f, [x])"
        );
    }

    #[test]
    fn an_assignment_nothing_reads_is_written_as_a_check() {
        let src = "package t\nexempt { x := input.a[\"k\"]; true }\nv[{\"msg\": m}] { m := input.b; y := 1; y > 0 }\nf(a) { z := a.b }\nx := 1\ns := [1 | q := input.c]\n";
        let negated = "package t\nok { v := count(input.a); not is_string(v) }\n";
        assert_eq!(
            keep_unused_assignments(negated),
            "package t\nok { v := count(input.a); _ = v; not is_string(v) }\n"
        );
        assert_eq!(
            keep_unused_assignments(src),
            "package t\nexempt { _ = input.a[\"k\"]; true }\nv[{\"msg\": m}] { m := input.b; y := 1; y > 0 }\nf(a) { _ = a.b }\nx := 1\ns := [1 | q := input.c]\n"
        );
    }

    #[test]
    fn partial_heads_that_may_be_undefined_are_bound_in_the_body() {
        let src = "package t\nnames[c.name] { some c in cs }\nobj[c.name] = c.image {\n  some c in cs # last\n}\nv[{\"msg\": m}] { m := 1 }\np contains [c, f(c)] if { c := 1; }\nq[x] { x := 1 }\n";
        let out = bind_partial_heads(src);
        assert_eq!(
            out,
            "package t\nnames[__palisade_k] { some c in cs; __palisade_k = c.name }\nobj[__palisade_k] = __palisade_v {\n  some c in cs; __palisade_k = c.name; __palisade_v = c.image # last\n}\nv[{\"msg\": m}] { m := 1 }\np contains __palisade_k if { c := 1; __palisade_k = [c, f(c)] }\nq[x] { x := 1 }\n"
        );
        assert_eq!(out.lines().count(), src.lines().count());
    }

    #[test]
    fn array_and_object_comprehension_terms_are_checked() {
        let src = "a := [c.name | some c in cs]\nb := {k: v | some k, v in o}\nc := {c.name | some c in cs}\nd := [1 | true]\n";
        assert_eq!(
            guard_comprehension_terms(src),
            "a := [c.name | some c in cs; _ = c.name]\nb := {k: v | some k, v in o; k == k; v == v}\nc := {c.name | some c in cs}\nd := [1 | true]\n"
        );
        assert_eq!(object_comprehensions(src), [2]);
    }

    /// `_ = x` after a body that binds `x` by unification out of order makes regorus read `x`
    /// as unsafe; a bare variable is compared with itself instead.
    #[test]
    fn a_bare_variable_term_is_compared_with_itself() {
        let src = "s := [x | x = concat(\":\", [k, v]); v = o[k]]\n";
        assert_eq!(
            guard_comprehension_terms(src),
            "s := [x | x = concat(\":\", [k, v]); v = o[k]; x == x]\n"
        );
    }

    /// `:=` needs its value's variables bound before it; a value bound later stays `=`.
    #[test]
    fn a_unification_whose_value_is_bound_later_stays_a_unification() {
        let src = "package t\nf(o) { s = concat(\":\", [k, v]); v = o[k]; t = object.get(o, k, 1); u = o.x }\n";
        assert_eq!(
            assign_fresh_unifications(src),
            "package t\nf(o) { s = concat(\":\", [k, v]); v = o[k]; t := object.get(o, k, 1); u := o.x }\n"
        );
    }

    /// A rule inside an array literal may be undefined, which makes the literal undefined in
    /// OPA, outside the `not` (seed 101 of the generated programs).
    #[test]
    fn a_composite_operand_holding_a_rule_name_is_checked() {
        let src = "package t\nr0 = 1 { input.x }\nv { not \"a\" in [r0] }\nw { not \"a\" in [1, true, null] }\n";
        let out = guard_negated_terms(src);
        assert!(out.contains("_ = [r0]; not \"a\" in [r0]"), "{out}");
        assert!(!out.contains("_ = [1, true, null]"), "literals only: {out}");
    }

    #[test]
    fn a_negated_rule_name_is_checked_and_a_variable_is_not() {
        let src = "package t\nr := 1 { input.x }\nv { x := 2; not r != x }\n";
        assert_eq!(
            guard_negated_terms(src),
            "package t\nr := 1 { input.x }\nv { x := 2; _ = r; not r != x }\n"
        );
    }

    #[test]
    fn a_fresh_unification_is_written_as_an_assignment() {
        let src =
            "package t\nr := 1\nv[x] { y = input.a; z := 1; z = input.b; r = 2; x = 3; w == 1 }\n";
        assert_eq!(
            assign_fresh_unifications(src),
            "package t\nr := 1\nv[x] { y := input.a; z := 1; z = input.b; r = 2; x = 3; w == 1 }\n"
        );
    }

    #[test]
    fn a_membership_value_checks_its_operands() {
        let src = "p { m := input.a in input.b; not m }\nq { m := [x | some x in input.c] }\n";
        assert_eq!(
            guard_membership_values(src),
            "p { _ = input.a; _ = input.b; m := input.a in input.b; not m }\nq { m := [x | some x in input.c] }\n"
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

    #[test]
    fn an_object_literal_in_a_head_is_not_a_second_body() {
        let src = "package t\nget(c) = {\"p\": p, \"l\": \"x\"} {\n  not has(c)\n  p := \"none\"\n}\nset(c) = {\n  \"p\": p\n} {\n  p := 1\n}\ns = {1, 2} { true }\ndefault d := {\"a\": 1}\nd := {\"a\": 2} { input.x }\nf(x) = 1 { x > 1 }\n{ x < -1 }\n";
        let out = rewrite_v0(src);
        // Only the genuine second body of f gets a head.
        assert_eq!(out, src.replace("\n{ x < -1 }", "\nf(x) = 1 { x < -1 }"));
    }

    #[test]
    fn an_object_literal_head_with_a_second_body_keeps_its_literal() {
        let src = "package t\nf(x) = {\"a\": 1} { x > 1 } { x < -1 }\n";
        assert_eq!(
            rewrite_v0(src),
            "package t\nf(x) = {\"a\": 1} { x > 1 } f(x) = {\"a\": 1} { x < -1 }\n"
        );
    }

    #[test]
    fn missing_sprintf_arguments_print_as_opa_does() {
        let src = "m := sprintf(\"%v and %-5d, 100%%\", [x])\nn := sprintf(\"%s\", [])\nok := sprintf(\"%v\", [x])\n";
        let (out, found) = fill_missing_sprintf_args(src);
        assert_eq!(
            out,
            "m := sprintf(\"%v and %%!d(MISSING), 100%%\", [x])\nn := sprintf(\"%%!s(MISSING)\", [])\nok := sprintf(\"%v\", [x])\n"
        );
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].line, 1);
        assert_eq!(found[1].line, 2);
    }

    #[test]
    fn undefined_arguments_of_a_negated_call_are_checked_outside_it() {
        let cases = [
            ("not f(c.image)", "_ = c.image; not f(c.image)"),
            (
                "not startswith(input.a.b, \"x\")",
                "_ = input.a.b; not startswith(input.a.b, \"x\")",
            ),
            (
                "not lib.ok(x.y, g(z))",
                "_ = x.y; _ = g(z); not lib.ok(x.y, g(z))",
            ),
            ("not input.a > 1", "_ = input.a; not input.a > 1"),
            (
                "not count(c.args) < 4",
                "_ = count(c.args); not count(c.args) < 4",
            ),
            (
                "not lower(input.a) == \"x\"",
                "_ = lower(input.a); not lower(input.a) == \"x\"",
            ),
            // a variable is bound: no check (a rule's name gets one, see below)
            ("not f(x, \"a\", 1)", "not f(x, \"a\", 1)"),
            // arithmetic is a call in OPA, moved out with its side
            (
                "not input.a + 1 > 2",
                "_ = input.a + 1; not input.a + 1 > 2",
            ),
            // membership is a call: both operands
            (
                "not input.a in input.b",
                "_ = input.a; _ = input.b; not input.a in input.b",
            ),
            // keys of a negated reference
            (
                "not data.inv[input.ns][\"v1\"]",
                "_ = input.ns; not data.inv[input.ns][\"v1\"]",
            ),
            // left alone: unification of a reference, a bare reference, literals, wildcards,
            // `with`
            ("not input.a == \"x\"", "not input.a == \"x\""),
            ("not input.a", "not input.a"),
            ("not f(input.cs[_].image)", "not f(input.cs[_].image)"),
            (
                "not f(input.a) with input as {}",
                "not f(input.a) with input as {}",
            ),
        ];
        for (body, want) in cases {
            let src = format!("package t\nv[m] {{\n  {body}\n  m := 1\n}}\n");
            let out = guard_negated_terms(&src);
            assert_eq!(
                out,
                format!("package t\nv[m] {{\n  {want}\n  m := 1\n}}\n"),
                "{body}"
            );
        }
        // after `;`, `{` and `|`, in strings and comments not at all, and never in names
        let src = "package t\nv[m] { x := 1; not f(x.y) }\ns := [c | c := input.cs[_]; not f(c.i)]\n# not f(a.b)\nm := \"not f(a.b)\"\nknot(a.b)\n";
        let out = guard_negated_terms(src);
        assert_eq!(
            out,
            "package t\nv[m] { x := 1; _ = x.y; not f(x.y) }\ns := [c | c := input.cs[_]; _ = c.i; not f(c.i)]\n# not f(a.b)\nm := \"not f(a.b)\"\nknot(a.b)\n"
        );
        assert_eq!(out.lines().count(), src.lines().count());
    }
}
