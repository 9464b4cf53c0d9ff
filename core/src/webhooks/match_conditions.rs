//! The webhooks' `matchConditions` (admissionregistration.k8s.io/v1, GA in Kubernetes 1.30):
//! CEL the API server evaluates before it calls Palisade, so that it does not call for a
//! request whose answer cannot depend on Palisade. The API server calls only when every
//! condition is true, so each condition below is "Palisade may have something to say", and a
//! request is skipped when one of them is false. Each is derived from the bundle, never from
//! a list of kinds written here, and each is an over-approximation of what
//! [`crate::decide::Decider::decide`] acts on:
//!
//! - [`NOT_EXCLUDED`]: the namespace (a Namespace's own name) is not one the bundle's `Config`
//!   takes out of that webhook (`spec.match[].excludedNamespaces` for the process `webhook` or
//!   `mutation-webhook`): the Decider allows those before anything else, break-glass included.
//! - [`MAY_ACT`]: some constraint (validating) or mutator (mutating) may match the request by
//!   its kind (`request.kind`, what Palisade reads), `scope`, `namespaces` and
//!   `excludedNamespaces`, or a workload an ExpansionTemplate expands into what a constraint
//!   judges; or the object carries a break-glass annotation (on itself or on its pod
//!   template), which the Decider judges on every kind and operation it is sent. The mutating
//!   one also leaves out what `/mutate` never changes: DELETE and CONNECT, and a Pod's own
//!   UPDATE (its spec cannot change; that call is made only to stamp break-glass grants).
//!
//! What these conditions do not read: label and namespace selectors and `name` (a constraint
//! or mutator with them counts as matching), the enforcement action (a `warn` or `dryrun`
//! constraint needs the call as much as a `deny` one: for the warning, or for its audit
//! annotation and log line), and the template's `operations`, which Palisade does not filter
//! on either. No condition about status: the rules never name a `status` subresource, so the
//! API server does not send those requests at all, and an UPDATE of the main resource that
//! changes only the status is still judged whole, as a violating object is denied on any
//! update.
//!
//! Every expression is total on what the API server sends (no field read without `has`, no
//! object read on DELETE), since an error in a condition follows the webhook's
//! `failurePolicy: Fail` and would refuse the request.

use serde_json::{Value, json};

use crate::breakglass::{EXPIRES, REASON};
use crate::bundle::{Bundle, Process};
use crate::matcher::{Glob, KindSelector, Match, Scope};
use crate::podpaths::POD_PATHS;
use crate::policy::cel::string_literal;
use crate::policy::vap::{IS_NAMESPACE, bind, effective_namespace, request_or_metadata};

/// Name of the condition that leaves out the namespaces the bundle's `Config` excludes.
pub const NOT_EXCLUDED: &str = "palisade.dev/namespace-not-excluded";
/// Name of the condition that leaves out what no constraint or mutator may act on.
pub const MAY_ACT: &str = "palisade.dev/policy-may-apply-or-break-glass";

/// One `matchConditions[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchCondition {
    /// A qualified name, unique in its webhook.
    pub name: String,
    /// CEL over `object`, `oldObject` and `request`.
    pub expression: String,
}

impl MatchCondition {
    /// As a webhook's `matchConditions[]` entry.
    pub fn to_json(&self) -> Value {
        json!({"name": self.name, "expression": self.expression})
    }
}

/// The validating webhook's conditions for `bundle`; empty when every request the rules send
/// may be judged.
pub fn validating(bundle: &Bundle) -> Vec<MatchCondition> {
    let mut out = Vec::new();
    out.extend(not_excluded(bundle.excluded_namespaces(Process::Webhook)));
    let mut alternatives = Vec::new();
    // Whether every alternative reads the kind alone (then a kind the rules send only because
    // it is a pod path is the only thing the condition can leave out).
    let mut kinds_only = true;
    for constraint in bundle.policies().constraints() {
        let m = &constraint.matcher;
        kinds_only &= reads_kind_only(m);
        alternatives.push(may_match(m));
        let parents = bundle.expansions().parents_of(|gvk| {
            m.may_match_kind(&gvk.group, &gvk.kind, crate::admission::Source::Generated)
        });
        if !parents.is_empty() {
            alternatives.push(kinds(&parents));
        }
    }
    let every_pod_path_judged = POD_PATHS.iter().all(|p| {
        bundle.policies().constraints().iter().any(|c| {
            reads_kind_only(&c.matcher)
                && c.matcher
                    .may_match_kind(p.group, p.kind, crate::admission::Source::Original)
        })
    });
    let widened = super::validating_rules(bundle)
        .iter()
        .any(|r| r.api_group == "*");
    if kinds_only && every_pod_path_judged && !widened {
        return out;
    }
    out.extend(may_act(alternatives));
    out
}

/// The mutating webhook's conditions for `bundle`.
pub fn mutating(bundle: &Bundle) -> Vec<MatchCondition> {
    let mut out = Vec::new();
    out.extend(not_excluded(bundle.excluded_namespaces(Process::Mutation)));
    let mutators: Vec<String> = bundle
        .mutators()
        .list()
        .iter()
        .map(|m| {
            let mut matcher = m.matcher().clone();
            matcher.kinds = m.kinds();
            may_match(&matcher)
        })
        .collect();
    if mutators.is_empty() {
        out.extend(may_act(Vec::new()));
        return out;
    }
    // `/mutate` allows DELETE and CONNECT as they are, and a Pod's own UPDATE too.
    let changes = format!(
        r#"request.operation in ["CREATE", "UPDATE"] && !({IS_POD} && request.operation == "UPDATE" && {NO_SUBRESOURCE})"#,
    );
    out.extend(may_act(vec![format!("({changes}) && ({})", or(&mutators))]));
    out
}

const IS_POD: &str = r#"(request.kind.group == "" && request.kind.kind == "Pod")"#;
const NO_SUBRESOURCE: &str = r#"(!has(request.subResource) || request.subResource == "")"#;

/// `alternatives` or a break-glass annotation; `None` when an alternative is always true.
fn may_act(alternatives: Vec<String>) -> Option<MatchCondition> {
    if alternatives.iter().any(|a| a == "true") {
        return None;
    }
    let mut all = alternatives;
    all.push(break_glass_annotated());
    Some(MatchCondition {
        name: MAY_ACT.to_owned(),
        expression: or(&all),
    })
}

/// The disjunction of `parts`, each once.
fn or(parts: &[String]) -> String {
    let mut unique: Vec<String> = Vec::new();
    for p in parts {
        if !unique.contains(p) {
            unique.push(p.clone());
        }
    }
    match unique.as_slice() {
        [] => "false".to_owned(),
        [one] => one.clone(),
        _ => unique
            .iter()
            .map(|p| format!("({p})"))
            .collect::<Vec<_>>()
            .join(" || "),
    }
}

fn and(parts: &[String]) -> String {
    let parts: Vec<&String> = parts.iter().filter(|p| p.as_str() != "true").collect();
    match parts.as_slice() {
        [] => "true".to_owned(),
        [one] => (*one).clone(),
        _ => parts
            .iter()
            .map(|p| format!("({p})"))
            .collect::<Vec<_>>()
            .join(" && "),
    }
}

/// The condition that the effective namespace fits none of `patterns`.
fn not_excluded(patterns: &[String]) -> Option<MatchCondition> {
    if patterns.is_empty() {
        return None;
    }
    let fits: Vec<String> = patterns.iter().map(|p| glob(p, "ns")).collect();
    Some(MatchCondition {
        name: NOT_EXCLUDED.to_owned(),
        expression: bind(
            "ns",
            &effective_namespace(),
            &format!(r#"ns == "" || !({})"#, or(&fits)),
        ),
    })
}

/// Whether a matcher is decided by the kind alone here (its other matchers are selectors and
/// names, which count as matching).
fn reads_kind_only(m: &Match) -> bool {
    m.scope == Scope::All && m.namespaces.is_empty() && m.excluded_namespaces.is_empty()
}

/// Whether `m` may match the request: its kinds, scope, namespaces and excluded namespaces as
/// [`Match::matches`] reads them; the rest counts as matching.
fn may_match(m: &Match) -> String {
    let namespaced = format!(
        r#"({IS_NAMESPACE} || {} != "")"#,
        request_or_metadata("namespace")
    );
    let scope = match m.scope {
        Scope::All => "true".to_owned(),
        Scope::Cluster => format!("!{namespaced} || {IS_NAMESPACE}"),
        Scope::Namespaced => format!("{namespaced} && !{IS_NAMESPACE}"),
    };
    let globs = |list: &[Glob]| -> String {
        or(&list
            .iter()
            .map(|g| glob(g.pattern(), "ns"))
            .collect::<Vec<_>>())
    };
    let mut by_namespace = Vec::new();
    if !m.namespaces.is_empty() {
        by_namespace.push(globs(&m.namespaces));
    }
    if !m.excluded_namespaces.is_empty() {
        by_namespace.push(format!("!({})", globs(&m.excluded_namespaces)));
    }
    let namespaces = if by_namespace.is_empty() {
        "true".to_owned()
    } else {
        format!(
            "!{namespaced} || {}",
            bind("ns", &effective_namespace(), &and(&by_namespace))
        )
    };
    and(&[kinds(&m.kinds), scope, namespaces])
}

/// Whether `request.kind` fits one of `selectors` (none: any kind), as
/// [`KindSelector::matches`] says: an empty list or a `*` entry matches anything.
fn kinds(selectors: &[KindSelector]) -> String {
    if selectors.is_empty() {
        return "true".to_owned();
    }
    let list = |items: &[String], field: &str| -> String {
        if items.is_empty() || items.iter().any(|i| i == "*") {
            return "true".to_owned();
        }
        let literals: Vec<String> = items.iter().map(|i| string_literal(i)).collect();
        format!("request.kind.{field} in [{}]", literals.join(", "))
    };
    or(&selectors
        .iter()
        .map(|s| and(&[list(&s.api_groups, "group"), list(&s.kinds, "kind")]))
        .collect::<Vec<_>>())
}

/// Whether `s` (a CEL string variable) fits the constant pattern, as [`Glob::matches`] reads
/// it (and the `Config`'s wildcards, which agree): `*`, `*infix*`, `*suffix`, `prefix*` or
/// exact.
fn glob(pattern: &str, s: &str) -> String {
    if pattern == "*" {
        return "true".to_owned();
    }
    if let Some(rest) = pattern.strip_prefix('*') {
        if let Some(infix) = rest.strip_suffix('*') {
            return format!("{s}.contains({})", string_literal(infix));
        }
        return format!("{s}.endsWith({})", string_literal(rest));
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return format!("{s}.startsWith({})", string_literal(prefix));
    }
    format!("{s} == {}", string_literal(pattern))
}

/// Whether the object under review carries a break-glass annotation where
/// [`crate::breakglass::judge`] reads them: its own metadata, and the pod template of a kind
/// that has one. On CREATE and UPDATE only: it judges nothing else. The last alternative of
/// every [`MAY_ACT`] condition.
pub fn break_glass_annotated() -> String {
    let keys = format!("[{}, {}]", string_literal(REASON), string_literal(EXPIRES));
    let annotated = |path: &[&str]| -> String {
        let mut at = "object".to_owned();
        let mut tests = Vec::new();
        for segment in path.iter().chain(&["metadata", "annotations"]) {
            tests.push(format!("has({at}.{segment})"));
            at = format!("{at}.{segment}");
        }
        tests.push(format!("{keys}.exists(k, k in {at})"));
        tests.join(" && ")
    };
    let mut places = vec![annotated(&[])];
    for path in POD_PATHS.iter().filter(|p| !p.template.is_empty()) {
        places.push(format!(
            "request.kind.group == {} && request.kind.kind == {} && {}",
            string_literal(path.group),
            string_literal(path.kind),
            annotated(path.template)
        ));
    }
    format!(
        r#"request.operation in ["CREATE", "UPDATE"] && object != null && ({})"#,
        or(&places)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_read_as_the_matcher_reads_them() {
        assert_eq!(glob("*", "ns"), "true");
        assert_eq!(glob("kube-*", "ns"), r#"ns.startsWith("kube-")"#);
        assert_eq!(glob("*-tmp", "ns"), r#"ns.endsWith("-tmp")"#);
        assert_eq!(glob("*tmp*", "ns"), r#"ns.contains("tmp")"#);
        assert_eq!(glob("**", "ns"), r#"ns.contains("")"#);
        assert_eq!(glob(r#"a"b"#, "ns"), r#"ns == "a\"b""#);
    }

    #[test]
    fn kinds_read_empty_and_star_as_any() {
        let s = |g: &[&str], k: &[&str]| KindSelector {
            api_groups: g.iter().map(|x| (*x).to_owned()).collect(),
            kinds: k.iter().map(|x| (*x).to_owned()).collect(),
        };
        assert_eq!(kinds(&[]), "true");
        assert_eq!(kinds(&[s(&["*"], &[])]), "true");
        assert_eq!(
            kinds(&[s(&[""], &["Pod"])]),
            r#"(request.kind.group in [""]) && (request.kind.kind in ["Pod"])"#
        );
        assert_eq!(
            kinds(&[s(&[], &["Pod"])]),
            r#"request.kind.kind in ["Pod"]"#
        );
    }
}
