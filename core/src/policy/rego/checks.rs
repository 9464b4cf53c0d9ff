//! Static checks of a template's source. Some refuse it at load time: a builtin that reaches
//! the network, brackets nested deeper than regorus' parser can afford, a rule that reaches
//! itself. Others send it to regorus' interpreter rather than its VM, where the VM would read a
//! rule as undefined and OPA has a value or an error. [`calls`] tells which extensions it needs.

use super::masking::{closing, find, find_calls, is_ident, line_of, mask, split_args};
use super::{is_literal, rule_heads};

/// Builtins that reach the network. Gatekeeper refuses them in templates; so does Palisade.
pub(crate) const NETWORK_BUILTINS: [&str; 2] = ["http.send", "net.lookup_ip_addr"];

/// Whether `src` calls `name` in code.
pub(crate) fn calls(src: &str, name: &str) -> bool {
    !find_calls(&mask(src), name).is_empty()
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

/// Complete rules that have more than one definition whose values may differ (`x = 1 { … }`
/// and `x = 2 { … }`). When two of them hold at once, OPA and regorus' interpreter fail the
/// evaluation ("complete rules must not produce multiple outputs"); regorus' VM (0.14) reads the
/// rule as undefined instead, which would let a violation pass. Templates with such rules are
/// run on the interpreter.
///
/// Functions with several value definitions (`f(x) := 1 if …`, `f(x) := 2 if …`) have the same
/// divergence on the VM, but they are how templates write case analysis (the default bundle's
/// pod-security and default-deny templates among them), nearly always with exclusive bodies, and
/// moving every such template to the interpreter would cost about four times the evaluation
/// time. They stay on the VM; docs/regorus-divergences.md records the difference.
pub(crate) fn multi_valued_rules(src: &str) -> Vec<String> {
    let masked = mask(src);
    let mut values: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (s, e) in rule_heads(&masked) {
        let head = std::str::from_utf8(&masked[s..e]).unwrap_or("").trim_end();
        if ["default ", "package ", "import ", "else"]
            .iter()
            .any(|k| head.starts_with(k))
        {
            continue;
        }
        let name_end = head
            .bytes()
            .position(|c| !(is_ident(c) || c == b'.'))
            .unwrap_or(head.len());
        let key = head[..name_end].to_owned();
        let at = name_end + (head.len() - name_end - head[name_end..].trim_start().len());
        let rest = head[at..].trim_start();
        if rest.starts_with('(') || rest.starts_with('[') || rest.starts_with("contains") {
            // A function (see the note above) or a partial rule, whose many values are its point.
            continue;
        }
        // The value as written (strings unmasked), so that `= "a"` and `= "b"` differ.
        let value = src[s + at..s + head.len()]
            .trim()
            .trim_start_matches(":=")
            .trim_start_matches('=')
            .trim()
            .trim_end_matches(" if")
            .trim();
        let value = if value.is_empty() { "true" } else { value };
        values.entry(key).or_default().push(value.to_owned());
    }
    values
        .into_iter()
        .filter(|(_, vs)| vs.len() > 1 && !(vs.iter().all(|v| v == &vs[0]) && is_literal(&vs[0])))
        .map(|(k, _)| k)
        .collect()
}

/// The lines of comprehensions written inside another comprehension (`{x | y := [t | …]; …}`).
/// regorus' VM loses every result of the outer comprehension when the inner one's body fails
/// (docs/regorus-divergences.md, section 5): a set of violations would come out empty, and the
/// object would be let in. Templates with one run on the interpreter. A comprehension reached
/// through a function call is not affected, and is not reported.
pub(crate) fn nested_comprehensions(src: &str) -> Vec<usize> {
    let masked = mask(src);
    // Per open bracket: whether it is a comprehension (a `|` at its own depth) and whether a
    // comprehension is inside it.
    let mut open: Vec<(usize, bool, bool)> = Vec::new();
    let mut lines = Vec::new();
    for (i, &b) in masked.iter().enumerate() {
        match b {
            b'[' | b'{' | b'(' => open.push((i, false, false)),
            b'|' => {
                if let Some(top) = open.last_mut()
                    && masked[top.0] != b'('
                {
                    top.1 = true;
                }
            }
            b']' | b'}' | b')' => {
                let Some((at, is_comprehension, holds_one)) = open.pop() else {
                    continue;
                };
                if is_comprehension && holds_one {
                    lines.push(line_of(&masked, at));
                }
                if let Some(parent) = open.last_mut() {
                    parent.2 |= is_comprehension || holds_one;
                }
            }
            _ => {}
        }
    }
    lines.sort_unstable();
    lines.dedup();
    lines
}

/// The lines of object comprehensions (`{k: v | …}`). regorus' VM (0.14) keeps one value where
/// two elements give one key different values; OPA fails the evaluation ("object keys must be
/// unique"), which denies (docs/regorus-divergences.md, section 18). Templates with one run on
/// the interpreter, which fails as OPA does.
pub(crate) fn object_comprehensions(src: &str) -> Vec<usize> {
    let masked = mask(src);
    let mut open: Vec<(usize, Option<usize>, Option<usize>)> = Vec::new();
    let mut lines = Vec::new();
    for (i, &b) in masked.iter().enumerate() {
        match b {
            b'[' | b'{' | b'(' => open.push((i, None, None)),
            b':' if masked.get(i + 1) != Some(&b'=') => {
                if let Some(top) = open.last_mut()
                    && top.2.is_none()
                {
                    top.2 = Some(i);
                }
            }
            b'|' => {
                if let Some(top) = open.last_mut()
                    && top.1.is_none()
                {
                    top.1 = Some(i);
                }
            }
            b']' | b'}' | b')' => {
                if let Some((at, Some(bar), Some(colon))) = open.pop()
                    && masked[at] == b'{'
                    && colon < bar
                {
                    lines.push(line_of(&masked, at));
                }
            }
            _ => {}
        }
    }
    lines.sort_unstable();
    lines.dedup();
    lines
}

/// Whether a masked body iterates: `some`, `every` or a `[_]` wildcard.
fn iterates(body: &[u8]) -> bool {
    find(body, b"[_]").is_some()
        || [b"some".as_slice(), b"every".as_slice()].iter().any(|w| {
            let mut from = 0;
            while let Some(off) = find(&body[from..], w) {
                let at = from + off;
                from = at + 1;
                let before = at == 0 || !(is_ident(body[at - 1]) || body[at - 1] == b'.');
                let after = body
                    .get(at + w.len())
                    .is_some_and(|c| c.is_ascii_whitespace());
                if before && after {
                    return true;
                }
            }
            false
        })
}

/// Whether a masked body assigns or unifies: `:=`, or an `=` that is not part of `==`, `!=`,
/// `<=` or `>=`.
fn assigns(body: &[u8]) -> bool {
    body.iter().enumerate().any(|(i, &c)| {
        c == b'='
            && !matches!(body.get(i + 1), Some(b'='))
            && (i == 0 || !matches!(body[i - 1], b'=' | b'!' | b'<' | b'>'))
    })
}

/// Rules and functions that the VM may read as undefined where OPA has a value or an error,
/// by name (docs/regorus-divergences.md, section 22):
/// - an `else` chain whose branch before the last iterates (`some x in c`, `c[_]`) or assigns
///   (`x := e`, `x = e`): when the collection or `e` is undefined, regorus' VM (0.14) makes the
///   whole rule undefined instead of taking the `else` (`m := o.message } else := d` gives
///   nothing when `o` has no message);
/// - a complete rule (not a function or partial rule) whose value is not a literal and whose
///   body iterates: it may produce two values, a conflict OPA reports as an error and the VM
///   reads as undefined (section 3).
///
/// Either can lose a violation; templates with one run on the interpreter.
pub(crate) fn vm_undefined_rules(src: &str) -> Vec<String> {
    let masked = mask(src);
    let heads = rule_heads(&masked);
    let mut out: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    // (name, body iterates) of the definition before this `else`, when it is one.
    for (n, &(hs, he)) in heads.iter().enumerate() {
        let head = std::str::from_utf8(&masked[hs..he])
            .unwrap_or("")
            .trim_end();
        let end = heads.get(n + 1).map_or(masked.len(), |h| h.0);
        let body: &[u8] = match closing(&masked[..end], he) {
            Some(c) if masked.get(he) == Some(&b'{') => &masked[he + 1..c],
            _ => &[],
        };
        let next_is_else = heads
            .get(n + 1)
            .is_some_and(|&(s, _)| masked[s..].starts_with(b"else"));
        if head.starts_with("else") {
            if next_is_else
                && (iterates(body) || assigns(body))
                && let Some(name) = &current
                && !out.contains(name)
            {
                out.push(name.clone());
            }
            continue;
        }
        if ["package ", "import ", "default "]
            .iter()
            .any(|k| head.starts_with(k))
        {
            current = None;
            continue;
        }
        let name_end = head
            .bytes()
            .position(|c| !(is_ident(c) || c == b'.'))
            .unwrap_or(head.len());
        let name = head[..name_end].to_owned();
        current = Some(name.clone());
        if name.is_empty() || out.contains(&name) {
            continue;
        }
        if next_is_else && (iterates(body) || assigns(body)) {
            out.push(name);
            continue;
        }
        let rest = head[name_end..].trim_start();
        if rest.starts_with('(') || rest.starts_with('[') || rest.starts_with("contains") {
            continue;
        }
        let value = rest
            .trim_start_matches(":=")
            .trim_start_matches('=')
            .trim()
            .trim_end_matches(" if")
            .trim_end_matches("if")
            .trim();
        let value_src = src[hs..hs + head.len()]
            .split_once(['=', ':'])
            .map_or("", |(_, v)| v)
            .trim_start_matches('=')
            .trim()
            .trim_end_matches(" if")
            .trim();
        if !value.is_empty() && !is_literal(value_src) && iterates(body) {
            out.push(name);
        }
    }
    out
}

/// The partial object rules (`name[k] = v { … }`, `name[k] := v if …`), by name. regorus' VM
/// (0.14) keeps one value where two bodies give one key different values (OPA fails the
/// evaluation: "object keys must be unique") and counts a key that is undefined
/// (docs/regorus-divergences.md, sections 15 and 18); either can lose a violation. Templates
/// with one run on the interpreter, which answers as OPA there (after
/// [`bind_partial_heads`](super::bind_partial_heads)).
pub(crate) fn partial_object_rules(src: &str) -> Vec<String> {
    let masked = mask(src);
    let mut out = Vec::new();
    for (s, e) in rule_heads(&masked) {
        let head = &masked[s..e];
        let name_end = head
            .iter()
            .position(|&c| !(is_ident(c) || c == b'.'))
            .unwrap_or(head.len());
        if name_end == 0 || head.get(name_end) != Some(&b'[') {
            continue;
        }
        let name = String::from_utf8_lossy(&head[..name_end]).into_owned();
        if matches!(name.as_str(), "default" | "package" | "import") {
            continue;
        }
        let Some(close) = closing(head, name_end) else {
            continue;
        };
        let rest = String::from_utf8_lossy(&head[close + 1..]);
        let rest = rest.trim_start();
        if (rest.starts_with(":=") || (rest.starts_with('=') && !rest.starts_with("==")))
            && !out.contains(&name)
        {
            out.push(name);
        }
    }
    out
}

/// Functions with several value definitions that may hold for one input with different
/// values, by name. OPA fails such an evaluation ("functions must not produce multiple outputs
/// for same inputs"); regorus' VM (0.14) reads the call as undefined, which can lose a
/// violation (docs/regorus-divergences.md, section 3). Templates with one run on the
/// interpreter. Two definitions cannot both hold, and are not reported, when their values are
/// the same literal, their literal arguments differ, or one's body has a literal that
/// contradicts one of the other's: `e` and `not e`, `e == a` and `e == b` for different
/// literals, or two comparisons of `e` with numbers that no number meets both of
/// (`count(x) > 0` and `count(x) == 0`). That is how templates write case analysis, and such
/// templates stay on the VM.
pub(crate) fn conflicting_functions(src: &str) -> Vec<String> {
    let masked = mask(src);
    let heads = rule_heads(&masked);
    // Per function: its definitions as (arguments, value, body literals).
    let mut defs: std::collections::BTreeMap<String, Vec<Definition>> = Default::default();
    for (n, &(hs, he)) in heads.iter().enumerate() {
        let head = &masked[hs..he];
        let name_end = head
            .iter()
            .position(|&c| !(is_ident(c) || c == b'.'))
            .unwrap_or(head.len());
        if name_end == 0 || head.get(name_end) != Some(&b'(') {
            continue;
        }
        let Some(close) = closing(head, name_end) else {
            continue;
        };
        let name = String::from_utf8_lossy(&head[..name_end]).into_owned();
        let args: Vec<String> = split_args(&head[name_end + 1..close])
            .into_iter()
            .map(|(a, b)| {
                src[hs + name_end + 1 + a..hs + name_end + 1 + b]
                    .trim()
                    .to_owned()
            })
            .collect();
        // The value: after `=`/`:=`, up to `if`; `true` without one.
        let rest = &src[hs + close + 1..hs + head.len()];
        let rest_masked = std::str::from_utf8(&head[close + 1..]).unwrap_or("");
        let (value, cond) = match rest_masked.find(" if ") {
            Some(p) => (&rest[..p], Some(&rest[p + 4..])),
            None if rest_masked.trim_end().ends_with(" if") => {
                (&rest[..rest.trim_end().len() - 3], None)
            }
            None => (rest, None),
        };
        let value = value
            .trim()
            .trim_start_matches(":=")
            .trim_start_matches('=')
            .trim();
        let value = if value.is_empty() { "true" } else { value };
        // The body: a braced block, or the expression after `if` on the head's line.
        let mut lits = Vec::new();
        if masked.get(he) == Some(&b'{') {
            let end = heads.get(n + 1).map_or(masked.len(), |h| h.0);
            if let Some(c) = closing(&masked[..end], he) {
                lits = literals(&src[he + 1..c], &masked[he + 1..c]);
            }
        } else if let Some(cond) = cond {
            lits.push(cond.trim().to_owned());
        }
        defs.entry(name)
            .or_default()
            .push((args, value.to_owned(), lits));
    }
    let exclusive = |a: &Definition, b: &Definition| {
        (a.1 == b.1 && is_literal(&a.1))
            || a.0
                .iter()
                .zip(&b.0)
                .any(|(x, y)| is_literal(x) && is_literal(y) && x != y)
            || a.2.iter().any(|x| b.2.iter().any(|y| contradict(x, y)))
    };
    defs.into_iter()
        .filter(|(_, ds)| {
            ds.iter()
                .enumerate()
                .any(|(i, a)| ds[i + 1..].iter().any(|b| !exclusive(a, b)))
        })
        .map(|(name, _)| name)
        .collect()
}

/// One definition of a function: its arguments, its value and its body's literals, as written.
type Definition = (Vec<String>, String, Vec<String>);

/// The literals of a body (split at `;` and line breaks outside brackets), trimmed.
fn literals(src: &str, masked: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut from = 0;
    for (i, &b) in masked.iter().enumerate() {
        match b {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            b';' | b'\n' if depth == 0 => {
                let t = src[from..i].trim();
                if !t.is_empty() {
                    out.push(t.to_owned());
                }
                from = i + 1;
            }
            _ => {}
        }
    }
    let t = src[from..].trim();
    if !t.is_empty() {
        out.push(t.to_owned());
    }
    out
}

/// Whether two body literals cannot both hold.
fn contradict(a: &str, b: &str) -> bool {
    fn neg(x: &str) -> Option<&str> {
        x.strip_prefix("not ").map(str::trim)
    }
    if neg(a) == Some(b) || neg(b) == Some(a) {
        return true;
    }
    let (Some((la, oa, ra)), Some((lb, ob, rb))) = (comparison(a), comparison(b)) else {
        return false;
    };
    if la != lb {
        return false;
    }
    if let (Ok(x), Ok(y)) = (ra.parse::<f64>(), rb.parse::<f64>()) {
        // No number meets both: test the two constants and the points around them.
        let holds = |op: &str, v: f64, c: f64| match op {
            "==" => v == c,
            "!=" => v != c,
            ">" => v > c,
            ">=" => v >= c,
            "<" => v < c,
            "<=" => v <= c,
            _ => true,
        };
        let points = [x, y, x - 0.5, x + 0.5, y - 0.5, y + 0.5, (x + y) / 2.0];
        return !points.iter().any(|&v| holds(oa, v, x) && holds(ob, v, y));
    }
    // Two different literal strings (or booleans, null) that one term equals, or one literal it
    // equals and does not.
    (oa == "==" && ob == "==" && ra != rb && is_literal(ra) && is_literal(rb))
        || (((oa, ob) == ("==", "!=") || (oa, ob) == ("!=", "==")) && ra == rb)
}

/// `e op c` for a comparison with a literal on the right. A unification `e = c` is an equality
/// when `e` is a reference without brackets (`params.rule = "MustRunAs"`): such a reference binds
/// no variable, so it holds exactly when `e == c` does.
fn comparison(t: &str) -> Option<(&str, &'static str, &str)> {
    let masked = mask(t);
    for op in ["==", "!=", ">=", "<=", ">", "<"] {
        if let Some(at) = find(&masked, op.as_bytes()) {
            let (l, r) = (t[..at].trim(), t[at + op.len()..].trim());
            if is_literal(r) && !l.is_empty() {
                return Some((l, op, r));
            }
            return None;
        }
    }
    let at = masked.iter().position(|&c| c == b'=')?;
    if at > 0 && masked[at - 1] == b':' {
        return None;
    }
    let (l, r) = (t[..at].trim(), t[at + 1..].trim());
    let plain_ref = l.contains('.')
        && l.bytes().all(|c| is_ident(c) || c == b'.')
        && !l.starts_with('.')
        && !l.ends_with('.');
    (plain_ref && is_literal(r)).then_some((l, "==", r))
}

/// Deepest nesting of `[` and `{` that a template may use. regorus' parser takes time
/// exponential in it (docs/regorus-divergences.md, section 9): about 0.1 s at 12 levels, 2 s at
/// 16, years at 40; templates in the wild nest 5 to 8 deep.
pub(crate) const MAX_NESTING: usize = 12;

/// The first place where `[` and `{` nest deeper than [`MAX_NESTING`], as (depth, line); an
/// unclosed bracket counts as open to the end, as the parser sees it.
pub(crate) fn too_deep(src: &str) -> Option<(usize, usize)> {
    let masked = mask(src);
    let mut depth = 0usize;
    for (i, &b) in masked.iter().enumerate() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some((depth, line_of(&masked, i)));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// One module for [`recursion`]: its file name for messages, its package (`data.k8sx`) and its
/// source after the rewrites.
pub(crate) struct Module<'a> {
    pub file: &'a str,
    pub package: &'a str,
    pub src: &'a str,
}

/// The first rule or function that reaches itself, as OPA reports it at compile time
/// (`rego_recursion_error: rule data.p.f is recursive: data.p.f -> data.p.g -> data.p.f`).
/// OPA refuses such modules; regorus evaluates them until the stack overflows, which aborts the
/// whole process, so they must never load.
///
/// The references are read from the source: an identifier naming a rule of the same package
/// (unless the rule declares a local of that name with `:=`, `some`, `every` or as a function
/// parameter), a `data.<package>.<rule>` path, or `<import>.<rule>` through an import. Fields
/// (`input.f`, `x.f`) are not references.
pub(crate) fn recursion(modules: &[Module<'_>]) -> Option<String> {
    use std::collections::{BTreeMap, BTreeSet};
    // Per rule (`data.pkg.name`): where it is defined, and the rules its definitions reference.
    let mut rules: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    /// One definition's text after the rule name, to read its references from.
    struct Body {
        rule: String,
        package: String,
        text: Vec<u8>,
        imports: BTreeMap<String, String>,
    }
    let mut bodies: Vec<Body> = Vec::new();
    for m in modules {
        let masked = mask(m.src);
        let mut imports = BTreeMap::new();
        let mut current: Option<String> = None;
        let heads = rule_heads(&masked);
        for (n, &(start, head_end)) in heads.iter().enumerate() {
            let end = heads.get(n + 1).map_or(masked.len(), |h| h.0);
            let head = std::str::from_utf8(&masked[start..head_end]).unwrap_or("");
            if head.starts_with("package ") {
                continue;
            }
            if let Some(rest) = head.strip_prefix("import ") {
                let mut words = rest.split_whitespace();
                let path = words.next().unwrap_or("");
                if let Some(target) = path.strip_prefix("data.") {
                    let alias = match (words.next(), words.next()) {
                        (Some("as"), Some(a)) => a.to_owned(),
                        _ => path.rsplit('.').next().unwrap_or("").to_owned(),
                    };
                    imports.insert(alias, format!("data.{target}"));
                }
                continue;
            }
            let name_at = head.strip_prefix("default ").map_or(0, |_| 8);
            let name: String = if head.starts_with("else") {
                match &current {
                    Some(c) => c.clone(),
                    None => continue,
                }
            } else {
                let rest = &head[name_at..];
                let len = rest
                    .bytes()
                    .position(|c| !(is_ident(c) || c == b'.'))
                    .unwrap_or(rest.len());
                let name = &rest[..len];
                if name.is_empty() {
                    continue;
                }
                format!("{}.{}", m.package, name.split('.').next().unwrap_or(name))
            };
            current = Some(name.clone());
            let line = line_of(&masked, start);
            rules
                .entry(name.clone())
                .or_insert_with(|| (format!("{}:{line}", m.file), BTreeSet::new()));
            let skip = if head.starts_with("else") {
                4
            } else {
                name_at + name.rsplit('.').next().map_or(0, str::len)
            };
            bodies.push(Body {
                rule: name,
                package: m.package.to_owned(),
                text: masked[start + skip..end].to_vec(),
                imports: imports.clone(),
            });
        }
    }
    let known: BTreeSet<String> = rules.keys().cloned().collect();
    for b in &bodies {
        let refs = references(&b.text, &b.package, &b.imports, &known);
        if let Some((_, r)) = rules.get_mut(&b.rule) {
            r.extend(refs);
        }
    }
    // Depth-first search for a cycle, in a stable order.
    fn visit(
        at: &str,
        rules: &BTreeMap<String, (String, BTreeSet<String>)>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == at) {
            let mut cycle = path[i..].to_vec();
            cycle.push(at.to_owned());
            return Some(cycle);
        }
        if done.contains(at) {
            return None;
        }
        path.push(at.to_owned());
        for next in rules.get(at).map(|r| &r.1).into_iter().flatten() {
            if let Some(cycle) = visit(next, rules, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(at.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for name in rules.keys() {
        if let Some(cycle) = visit(name, &rules, &mut Vec::new(), &mut done) {
            let at = rules.get(&cycle[0]).map(|r| r.0.as_str()).unwrap_or("");
            return Some(format!(
                "{at}: rego_recursion_error: rule {} is recursive: {}; Rego rules and functions may not call themselves, directly or through others",
                cycle[0],
                cycle.join(" -> ")
            ));
        }
    }
    None
}

/// The rules (of `known`) that a masked rule body references.
fn references(
    body: &[u8],
    package: &str,
    imports: &std::collections::BTreeMap<String, String>,
    known: &std::collections::BTreeSet<String>,
) -> Vec<String> {
    // Identifiers with their offsets, and whether a `.` comes right before them.
    let mut tokens: Vec<(usize, &str, bool)> = Vec::new();
    let mut i = 0;
    while i < body.len() {
        if is_ident(body[i]) && !(i > 0 && is_ident(body[i - 1])) {
            let start = i;
            while i < body.len() && is_ident(body[i]) {
                i += 1;
            }
            let dotted = start > 0 && body[start - 1] == b'.';
            if !body[start].is_ascii_digit() {
                tokens.push((
                    start,
                    std::str::from_utf8(&body[start..i]).unwrap_or(""),
                    dotted,
                ));
            }
        } else {
            i += 1;
        }
    }
    // Locals: function parameters, `x :=`, `some x, y`, `every k, v`.
    let mut locals = std::collections::BTreeSet::new();
    if let Some(open) = body.iter().position(|b| !b.is_ascii_whitespace())
        && body[open] == b'('
        && let Some(close) = closing(body, open)
    {
        for &(at, t, _) in &tokens {
            if at > open && at < close {
                locals.insert(t);
            }
        }
    }
    for (n, &(at, t, dotted)) in tokens.iter().enumerate() {
        let end = at + t.len();
        if !dotted && (body[end..].starts_with(b" :=") || body[end..].starts_with(b":=")) {
            locals.insert(t);
        }
        if matches!(t, "some" | "every") && !dotted {
            // The names declared, up to `in` or the end of the statement.
            let stop = body[end..]
                .iter()
                .position(|b| *b == b'\n' || *b == b';')
                .map_or(body.len(), |p| end + p);
            for &(_, v, _) in tokens[n + 1..]
                .iter()
                .take_while(|(a, v, _)| *a < stop && *v != "in")
            {
                locals.insert(v);
            }
        }
    }
    let mut out = Vec::new();
    for (n, &(at, t, dotted)) in tokens.iter().enumerate() {
        if dotted {
            continue;
        }
        // A path through `data.` or an import: the longest known rule it names.
        let base = if t == "data" {
            Some("data".to_owned())
        } else {
            imports.get(t).cloned()
        };
        if let Some(mut path) = base {
            let mut end = at + t.len();
            for &(a, seg, d) in &tokens[n + 1..] {
                if !d || a != end + 1 {
                    break;
                }
                path.push('.');
                path.push_str(seg);
                end = a + seg.len();
                if known.contains(&path) {
                    out.push(path.clone());
                    break;
                }
            }
            continue;
        }
        if locals.contains(t) {
            continue;
        }
        let full = format!("{package}.{t}");
        if known.contains(&full) {
            out.push(full);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn functions_are_moved_only_when_their_definitions_may_conflict() {
        let exclusive = "package t\ntypes(p) := p.t if p.t\ntypes(p) := [\"I\", \"E\"] if {\n  not p.t\n  count(p.e) > 0\n}\ntypes(p) := [\"I\"] if {\n  not p.t\n  count(p.e) == 0\n}\nverb(d) := \"a\" if d == \"in\"\nverb(d) := \"b\" if d == \"out\"\nk(\"x\") := 1\nk(\"y\") := 2\nok(x) { x > 1 }\nok(x) { x < 0 }\n";
        assert!(
            conflicting_functions(exclusive).is_empty(),
            "{:?}",
            conflicting_functions(exclusive)
        );
        let conflict = "package t\nf(x) = \"a\" { startswith(x, \"n\") }\nf(x) = \"b\" { endswith(x, \"x\") }\ng(x) := 1 if x > 1\ng(x) := 2 if x > 2\n";
        assert_eq!(conflicting_functions(conflict), ["f", "g"]);
        // A literal a term equals and does not; a reference unified with two literals.
        let exclusive = "package t\nv(f, c) = m {\n  f == \"runAsUser\"\n  m := c.a\n}\nv(f, c) = m {\n  f != \"runAsUser\"\n  m := c.b\n}\nu(p, c) = m {\n  p.rule = \"MustRunAs\"\n  m := c.a\n}\nu(p, c) = m {\n  p.rule = \"MustRunAsNonRoot\"\n  m := c.b\n}\n";
        assert!(
            conflicting_functions(exclusive).is_empty(),
            "{:?}",
            conflicting_functions(exclusive)
        );
        // Unification that may bind (a bare name, a bracket with a variable) proves nothing, nor
        // do `!=` and `==` of different literals.
        let conflict = "package t\na(p) = m {\n  x = \"a\"\n  m := p.a\n}\na(p) = m {\n  x = \"b\"\n  m := p.b\n}\nb(p) = m {\n  p[i] = \"a\"\n  m := i\n}\nb(p) = m {\n  p[i] = \"b\"\n  m := i\n}\nc(p) = m {\n  p.r == \"a\"\n  m := 1\n}\nc(p) = m {\n  p.r != \"b\"\n  m := 2\n}\nd(p) = m {\n  p.r := \"a\"\n  m := 1\n}\nd(p) = m {\n  p.r := \"b\"\n  m := 2\n}\n";
        assert_eq!(conflicting_functions(conflict), ["a", "b", "c", "d"]);
    }

    #[test]
    fn partial_object_rules_are_found() {
        let src = "package t\nobj[k] = v { k := 1; v := 2 }\nset[k] { k := 1 }\nm[k] := 1 if k := 2\nv[{\"msg\": m}] { m := 1 }\n";
        assert_eq!(partial_object_rules(src), ["obj", "m"]);
    }

    #[test]
    fn else_chains_after_an_assignment_or_an_iteration_are_found() {
        let src = "package t\nf(o, d) = m {\n  m := o.message\n} else = d\nr = m {\n  m = input.x\n} else = 1\nc = 1 {\n  input.x == 1\n} else = 2 {\n  input.y != 1\n} else = 3\ni = 1 {\n  input.x[_] >= 1\n} else = 2\nlast = 1 {\n  input.x <= 1\n} else = m {\n  m := 2\n}\n";
        assert_eq!(vm_undefined_rules(src), ["f", "r", "i"]);
    }

    #[test]
    fn rules_with_several_values_are_found() {
        let src = "package t\nx = 1 { input.a }\nx = 2 { input.b }\nsame = true { input.a }\nsame = true { input.b }\nf(a) = y { y := a }\nf(a) = y { y := 2 }\ng(a) { a }\ng(a) { not a }\nh(a) = \"p\" { a }\nh(a) = \"q\" { a }\nv[m] { m := 1 }\nv[m] { m := 2 }\ndefault z = 0\nz = 1 { input.a }\nobj = {\"a\": 1} { input.a }\nobj = {\"a\": 1} { input.b }\nk := 1 { input.a } else := 2 { true }\n";
        assert_eq!(multi_valued_rules(src), ["obj", "x"]);
    }

    #[test]
    fn comprehensions_inside_comprehensions_are_found() {
        let src = "package t\n\
            a := {x | y := [t | false; t := 1]; some x in [1, 2]}\n\
            b := [x | some x in input.a[_]; count({t | t := x}) > 0]\n\
            c := {x | some x in [1, 2]}\n\
            d contains x if { y := [t | false]; some x in input.a }\n\
            e := {k: v | some k, v in input.o; v != {\"|\": [1]}}\n\
            f := {x | x := g(input)}\n\
            # h := {x | y := [t | false]}\n\
            i := [x | x := {\"k\": [t | t := 1]}]\n";
        assert_eq!(nested_comprehensions(src), [2, 3, 9]);
    }

    fn recursion_in(modules: &[(&str, &str)]) -> Option<String> {
        let mods: Vec<(String, String, &str)> = modules
            .iter()
            .enumerate()
            .map(|(i, (pkg, src))| (format!("m{i}.rego"), format!("data.{pkg}"), *src))
            .collect();
        let list: Vec<Module<'_>> = mods
            .iter()
            .map(|(file, package, src)| Module { file, package, src })
            .collect();
        recursion(&list)
    }

    #[test]
    fn recursion_through_rules_functions_libs_and_imports_is_found() {
        let direct = recursion_in(&[("p", "package p\n\nf(x) = y { y := f(x) }\n")]).unwrap();
        assert_eq!(
            direct,
            "m0.rego:3: rego_recursion_error: rule data.p.f is recursive: data.p.f -> data.p.f; Rego rules and functions may not call themselves, directly or through others"
        );
        let mutual = recursion_in(&[("p", "package p\n\na { b }\n\nb { c }\nc { a }\n")]).unwrap();
        assert!(
            mutual.contains("data.p.a -> data.p.b -> data.p.c -> data.p.a"),
            "{mutual}"
        );
        // Through a lib by its data path, and back through an import alias.
        let libs = recursion_in(&[
            (
                "p",
                "package p\n\nimport data.lib.h as helpers\n\nv { helpers.g }\nf { v }\n",
            ),
            ("lib.h", "package lib.h\n\ng { data.p.f }\n"),
        ])
        .unwrap();
        assert!(
            libs.contains("data.lib.h.g -> data.p.f -> data.p.v -> data.lib.h.g"),
            "{libs}"
        );
        // In an else branch.
        let els = recursion_in(&[(
            "p",
            "package p\n\nf(x) = 1 { x > 1 } else = y { y := f(x) }\n",
        )]);
        assert!(els.is_some());
    }

    #[test]
    fn locals_fields_and_strings_are_not_references() {
        for src in [
            // A parameter, a := local, and some/every names shadow the rule of the same name.
            "package p\n\nf(f) = y { y := f }\n",
            "package p\n\nx { x := 1; x > 0 }\n",
            "package p\n\nimport future.keywords.in\n\nc { some c in input.cs }\n",
            "package p\n\nimport future.keywords.every\n\nk { every k, v in input.m { v > k } }\n",
            // Fields and strings.
            "package p\n\nname { input.review.name }\n",
            "package p\n\nmsg { m := sprintf(\"msg %v\", [msg2]) }\nmsg2 := 1\n",
            // Calling another rule that does not come back.
            "package p\n\nf(x) = g(x)\ng(x) = x\n",
            "package p\n\nviolation[{\"msg\": msg}] { msg := \"violation\" }\n",
        ] {
            assert_eq!(recursion_in(&[("p", src)]), None, "{src}");
        }
        // The Gatekeeper library idiom: helpers in a lib, called from the template.
        assert_eq!(
            recursion_in(&[
                (
                    "p",
                    "package p\n\nviolation[{\"msg\": m}] { data.lib.h.has(input.x); m := \"x\" }\n"
                ),
                ("lib.h", "package lib.h\n\nhas(x) { x != null }\n"),
            ]),
            None
        );
    }

    #[test]
    fn nesting_past_the_limit_is_found_with_its_line() {
        let ok = format!("package p\nx := {}1{}\n", "[".repeat(11), "]".repeat(11));
        assert_eq!(too_deep(&ok), None);
        let deep = format!("package p\n\nx := {}1{}\n", "[{".repeat(7), "}]".repeat(7));
        assert_eq!(too_deep(&deep), Some((13, 3)));
        // Unclosed, as a fuzzer wrote it; brackets in strings and comments do not count.
        assert_eq!(
            too_deep(&format!("package p\nx := f({}\n", "[".repeat(13))),
            Some((13, 2))
        );
        let quoted = format!(
            "package p\n# {}\nx := \"{}\"\n",
            "[".repeat(20),
            "{".repeat(20)
        );
        assert_eq!(too_deep(&quoted), None);
    }
}
