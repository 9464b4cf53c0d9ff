//! Source-level handling of Rego before regorus sees it: rewrites for the v0 constructs regorus
//! parses differently from OPA, and static checks that must fail at load time.
//!
//! Everything works on a *masked* copy of the source, in which the contents of strings and
//! comments are blanked out, so that brackets and keywords inside them are never mistaken for code.
//! The rewrites never add or remove a line, so regorus' line numbers stay those of the template.
//!
//! - [`masking`]: the masked copy, and the scanners that read it (words, lines, calls, brackets);
//! - [`rewrites`]: what is rewritten so that regorus evaluates a template as OPA does;
//! - [`checks`]: what refuses a template at load time, and what sends it to regorus'
//!   interpreter rather than its VM.
//!
//! Here are the helpers both use to read top-level statements and literal values.

mod checks;
mod masking;
mod reads;
mod rewrites;

pub(crate) use checks::{
    MAX_NESTING, Module, calls, conflicting_functions, forbidden_calls, multi_valued_rules,
    nested_comprehensions, object_comprehensions, partial_object_rules, recursion, too_deep,
    vm_undefined_rules,
};
pub use masking::{closing, mask};
pub(crate) use reads::inventory_reads;
pub(crate) use rewrites::{
    assign_fresh_unifications, bind_partial_heads, fill_missing_sprintf_args,
    guard_comprehension_terms, guard_membership_values, guard_negated_terms,
    keep_unused_assignments, rewrite_v0, sprintf_as_opa,
};

use masking::is_ident;

/// Whether the `{` at `open` starts a value in a rule head rather than a body: it follows `=`,
/// `:=` or the keyword `contains`.
fn opens_head_value(masked: &[u8], open: usize) -> bool {
    let Some(last) = masked[..open]
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
    else {
        return false;
    };
    if masked[last] == b'=' {
        return true;
    }
    let word_start = masked[..=last]
        .iter()
        .rposition(|&b| !is_ident(b))
        .map_or(0, |p| p + 1);
    &masked[word_start..=last] == b"contains"
}

fn is_literal(v: &str) -> bool {
    matches!(v, "true" | "false" | "null")
        || v.parse::<f64>().is_ok()
        || (v.len() >= 2
            && v.starts_with('"')
            && v.ends_with('"')
            && !v[1..v.len() - 1].contains('"'))
}

/// Byte ranges of the heads of the top-level statements: from the statement's start to its
/// first body `{`, or to the end of its line when it has no body.
fn rule_heads(masked: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start: Option<usize> = None;
    for (i, &b) in masked.iter().enumerate() {
        if depth == 0 {
            if let Some(s) = start {
                if b == b'\n' {
                    out.push((s, i));
                    start = None;
                    continue;
                }
                if b == b'{' && !opens_head_value(masked, i) {
                    out.push((s, i));
                    start = None;
                    depth += 1;
                    continue;
                }
            } else if !b.is_ascii_whitespace() && b != b'{' {
                start = Some(i);
            }
        }
        match b {
            b'{' | b'[' | b'(' => depth += 1,
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, masked.len()));
    }
    out
}
