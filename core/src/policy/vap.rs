//! ValidatingAdmissionPolicies generated from K8sNativeValidation constraints, so that the API
//! server judges what it can alone (no inventory, no break-glass, no external data), and the
//! webhook keeps the rest.
//!
//! The configuration file's `validatingAdmissionPolicies` places each constraint
//! ([`Placement`]): on the webhook (the default), on the API server, or on both. [`generate`]
//! turns the bundle and the configuration into the objects, as Gatekeeper's generator does
//! (`pkg/drivers/k8scel/transform`), with these differences:
//! - names start with `palisade-`: one policy per template, `palisade-<template name>`, and one
//!   binding per constraint, `palisade-<kind in lower case>-<constraint name>` (cut to 253
//!   characters with a hash, as Gatekeeper cuts its own);
//! - `paramRef.parameterNotFoundAction` is `Deny`, where Gatekeeper writes `Allow`: a binding
//!   whose constraint is missing (deleted, or not applied yet) refuses what it matches instead
//!   of letting it in unjudged;
//! - the match conditions that stand for `spec.match` are Palisade's matcher written in CEL (a
//!   Namespace is matched by its own name, globs are exact rather than regular expressions,
//!   `scope` is honoured), under Gatekeeper's reserved prefix `gatekeeper_internal_`, which a
//!   template's own conditions may not use, so that the names never collide;
//! - a constraint is generated only where the API server alone gives the webhook's verdict
//!   ([`ineligible`] says why not); one placed on the API server that is not stays on the webhook,
//!   with the reason in [`Generated::kept_on_webhook`].
//!
//! [`api_server_only`] is the same judgement without the objects: the webhook skips those
//! constraints at admission, and `palisade manifests` leaves what only they need out of the
//! webhook's rules. Both come from one function, so a constraint the webhook skips is always one
//! that is generated.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::admission::Source;
use crate::bundle::{Bundle, Process};
use crate::config::Config;
use crate::matcher::SourceMatch;
use crate::policy::template::Template;
use crate::policy::{Action, Constraint, Enforcement, Point, cel};

/// Where a constraint is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Placement {
    /// Palisade's webhook only (the default).
    #[default]
    Webhook,
    /// A generated ValidatingAdmissionPolicy only: the webhook is no longer sent it.
    ApiServer,
    /// Both.
    Both,
}

/// The configuration file's `validatingAdmissionPolicies`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyConfig {
    /// Where constraints are judged, unless a rule below says otherwise.
    pub placement: Placement,
    /// Per-constraint placements; the first match wins.
    pub constraints: Vec<PlacementRule>,
    /// Whether the leader keeps the generated objects in the cluster in sync with the bundle.
    pub sync: bool,
}

/// One `validatingAdmissionPolicies.constraints` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PlacementRule {
    /// The constraint's kind; any kind when absent.
    #[serde(default)]
    pub kind: Option<String>,
    /// The constraint's name.
    pub name: String,
    /// Where it is judged.
    pub placement: Placement,
}

impl PlacementRule {
    fn matches(&self, kind: &str, name: &str) -> bool {
        self.name == name && self.kind.as_deref().is_none_or(|k| k == kind)
    }
}

impl PolicyConfig {
    /// Where the constraint `kind`/`name` is judged: the first rule that names it, else
    /// `placement`.
    pub fn placement_of(&self, kind: &str, name: &str) -> Placement {
        self.constraints
            .iter()
            .find(|r| r.matches(kind, name))
            .map_or(self.placement, |r| r.placement)
    }

    /// Whether anything may be placed on the API server at all (the webhook's fast path).
    fn places_anything_on_api_server(&self) -> bool {
        self.placement != Placement::Webhook
            || self
                .constraints
                .iter()
                .any(|r| r.placement != Placement::Webhook)
    }

    /// What serde cannot say, as `(field, message)`: rules with an empty or wildcard name or
    /// kind, and rules that repeat an earlier one (the first match wins, so the second would
    /// never apply).
    pub(crate) fn check(&self) -> Result<(), (String, String)> {
        let at = "validatingAdmissionPolicies.constraints";
        for (i, rule) in self.constraints.iter().enumerate() {
            if rule.name.trim().is_empty() || rule.name.contains('*') {
                return Err((
                    format!("{at}[{i}].name"),
                    format!(
                        "{:?} is not a constraint name: name one constraint exactly (metadata.name); to place every constraint, set validatingAdmissionPolicies.placement",
                        rule.name
                    ),
                ));
            }
            if let Some(kind) = &rule.kind
                && (kind.trim().is_empty() || kind.contains('*'))
            {
                return Err((
                    format!("{at}[{i}].kind"),
                    format!(
                        "{kind:?} is not a constraint kind: give the kind exactly (K8sRequiredLabels), or leave kind out for any kind"
                    ),
                ));
            }
            if let Some(j) = self.constraints[..i]
                .iter()
                .position(|r| r.name == rule.name && (r.kind.is_none() || r.kind == rule.kind))
            {
                return Err((
                    format!("{at}[{i}]"),
                    format!(
                        "names the same constraint as {at}[{j}], which wins (the first match does): remove one"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// What [`generate`] made of a bundle under a configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Generated {
    /// ValidatingAdmissionPolicies and their bindings, in a stable order: each policy, then its
    /// bindings.
    pub objects: Vec<Value>,
    /// The constraints (kind, name) the API server judges alone: the webhook is not sent them.
    pub api_server_only: Vec<(String, String)>,
    /// Constraints placed on the API server that stay on the webhook: (kind, name, why).
    pub kept_on_webhook: Vec<(String, String, String)>,
    /// `validatingAdmissionPolicies.constraints` entries that name no constraint of the bundle:
    /// a warning, not an error (the bundle and the configuration change apart, and such a rule
    /// moves nothing), one line each.
    pub warnings: Vec<String>,
}

/// What the generated objects need to know of the installation.
#[derive(Debug, Clone)]
pub struct Options {
    /// Palisade's namespace, left out of every policy as the webhook configurations leave it
    /// out (with kube-system).
    pub namespace: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            namespace: "palisade-system".into(),
        }
    }
}

/// `app.kubernetes.io/managed-by: palisade`, on every generated object: how the leader's sync
/// finds its own.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "palisade");

/// The API version of the constraints the bindings read as their parameters.
pub const PARAM_API_VERSION: &str = "constraints.gatekeeper.sh/v1beta1";

/// The name of the policy generated for a template.
pub fn policy_name(template: &str) -> String {
    format!("palisade-{template}")
}

/// The name of the binding generated for a constraint: `palisade-<kind>-<name>`, cut to a DNS
/// subdomain's 253 characters with 8 hex digits of its SHA-256, as Gatekeeper cuts its own.
pub fn binding_name(kind: &str, name: &str) -> String {
    const MAX: usize = 253;
    let full = format!("palisade-{}-{name}", kind.to_lowercase());
    if full.len() <= MAX {
        return full;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, full.as_bytes());
    let hash: String = digest.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut end = MAX - hash.len() - 1;
    while !full.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}-{hash}", full[..end].trim_end_matches(['-', '.']))
}

/// Why the API server could not judge `constraint` as Palisade's webhook does, in one line;
/// `None` when it can. `template` is its template, when loaded.
pub fn ineligible(
    bundle: &Bundle,
    config: &Config,
    constraint: &Constraint,
    template: Option<&Template>,
) -> Option<String> {
    let Some(template) = template else {
        return Some(format!(
            "its template (kind {}) is not loaded",
            constraint.kind
        ));
    };
    let Some(program) = template.cel() else {
        return Some(
            "its template runs on Rego here: only K8sNativeValidation (CEL) code runs in the API server (a template with both engines runs its CEL unless --prefer-engine rego)"
                .into(),
        );
    };
    if program.source().generate_vap == Some(false) {
        return Some("its template sets generateVAP: false".into());
    }
    if let Some(i) = program.source().validations.iter().position(|v| {
        v.message
            .as_deref()
            .is_some_and(|m| m.trim().contains(['\n', '\r']))
    }) {
        return Some(format!(
            "its template's validations[{i}].message spans lines, which a ValidatingAdmissionPolicy refuses"
        ));
    }
    let Some(action) = constraint.enforcement.at_api_server() else {
        return Some(format!(
            "its scopedEnforcementActions name no action for {}",
            super::VAP_POINT
        ));
    };
    if let (Enforcement::Scoped(_), Some(webhook)) = (
        constraint.enforcement,
        constraint.enforcement.at(Point::Validation),
    ) && webhook != action
    {
        return Some(format!(
            "its action at {} ({action}) is not its action at the webhook ({webhook}), so the API server alone would change the verdict",
            super::VAP_POINT
        ));
    }
    let glass = &config.break_glass;
    if !glass.users.is_empty() || !glass.groups.is_empty() {
        return Some(
            "break-glass is configured (breakGlass.users or groups), and only the webhook can lift a denial for it"
                .into(),
        );
    }
    if action.capped(config.enforcement) != action {
        return Some(format!(
            "the configuration's enforcement: {} lowers its action ({action}), which a binding cannot do",
            config.enforcement
        ));
    }
    if let Some((i, rule)) = config.namespaces.iter().enumerate().find(|(_, r)| {
        r.enforcement
            .is_some_and(|cap| action.capped(cap) != action)
    }) {
        return Some(format!(
            "namespaces[{i}] ({}) lowers its action ({action}) to {}, and a binding cannot cap its action per namespace",
            rule.names.join(", "),
            rule.enforcement.unwrap_or_default()
        ));
    }
    if constraint.matcher.source == SourceMatch::Generated {
        return Some(
            "it judges only the resultants of workload expansion (match.source: Generated), which the API server never sees"
                .into(),
        );
    }
    let parents = bundle.expansions().parents_of(|gvk| {
        constraint
            .matcher
            .may_match_kind(&gvk.group, &gvk.kind, Source::Generated)
    });
    if !parents.is_empty() {
        let kinds: Vec<String> = parents.iter().flat_map(|p| p.kinds.clone()).collect();
        return Some(format!(
            "an ExpansionTemplate expands {} into what it judges, and the API server cannot judge the resultants (set match.source: Original to judge only what is sent)",
            kinds.join(", ")
        ));
    }
    None
}

/// One constraint's fate under a configuration.
enum Fate<'a> {
    /// The webhook alone, as placed.
    Webhook,
    /// Generated; `alone` when the webhook no longer judges it.
    Generated {
        template: &'a Arc<Template>,
        action: Action,
        alone: bool,
    },
    /// Placed on the API server, kept on the webhook for this reason.
    Kept(String),
}

fn fates<'a>(bundle: &'a Bundle, config: &Config) -> Vec<(&'a Constraint, Fate<'a>)> {
    let vap = &config.validating_admission_policies;
    let policies = bundle.policies();
    let templates: HashMap<&str, &Arc<Template>> =
        policies.templates().map(|t| (t.kind.as_str(), t)).collect();
    policies
        .constraints()
        .iter()
        .map(|c| {
            let placement = vap.placement_of(&c.kind, &c.name);
            if placement == Placement::Webhook {
                return (c, Fate::Webhook);
            }
            let template = templates.get(c.kind.as_str()).copied();
            let fate = match ineligible(bundle, config, c, template.map(|t| &**t)) {
                Some(why) => Fate::Kept(why),
                None => match (template, c.enforcement.at_api_server()) {
                    (Some(template), Some(action)) => Fate::Generated {
                        template,
                        action,
                        alone: placement == Placement::ApiServer,
                    },
                    // `ineligible` has said why already; this keeps the types honest.
                    _ => Fate::Kept("not eligible".into()),
                },
            };
            (c, fate)
        })
        .collect()
}

/// A template and its generated constraints, with their actions.
type PerTemplate<'a> = (&'a Arc<Template>, Vec<(&'a Constraint, Action)>);

/// The constraints (kind, name) that the API server judges alone under `config`: those the
/// webhook skips at admission, and whose kinds the webhook is not sent for them. Cheap when
/// nothing is placed on the API server, which is the default.
pub fn api_server_only(bundle: &Bundle, config: &Config) -> BTreeSet<(String, String)> {
    if !config
        .validating_admission_policies
        .places_anything_on_api_server()
    {
        return BTreeSet::new();
    }
    fates(bundle, config)
        .into_iter()
        .filter(|(_, f)| matches!(f, Fate::Generated { alone: true, .. }))
        .map(|(c, _)| (c.kind.clone(), c.name.clone()))
        .collect()
}

/// The ValidatingAdmissionPolicies and bindings for `bundle` under `config` (its
/// `validatingAdmissionPolicies`, `breakGlass` and `namespaces`), for a Palisade installed in
/// `palisade-system` ([`generate_with`] names another namespace).
pub fn generate(bundle: &Bundle, config: &Config) -> Generated {
    generate_with(bundle, config, &Options::default())
}

/// [`generate`] for the installation `options` describes.
pub fn generate_with(bundle: &Bundle, config: &Config, options: &Options) -> Generated {
    let mut out = Generated::default();
    let vap = &config.validating_admission_policies;
    let constraints = bundle.policies().constraints();
    for (i, rule) in vap.constraints.iter().enumerate() {
        if !constraints.iter().any(|c| rule.matches(&c.kind, &c.name)) {
            out.warnings.push(format!(
                "validatingAdmissionPolicies.constraints[{i}]: no constraint {}{} in the bundle; the rule moves nothing (check the spelling)",
                rule.kind.as_deref().map(|k| format!("{k} ")).unwrap_or_default(),
                rule.name
            ));
        }
    }
    // Template name → (template, its generated constraints with their actions).
    let mut by_template: BTreeMap<&str, PerTemplate<'_>> = BTreeMap::new();
    for (c, fate) in fates(bundle, config) {
        match fate {
            Fate::Webhook => {}
            Fate::Kept(why) => out
                .kept_on_webhook
                .push((c.kind.clone(), c.name.clone(), why)),
            Fate::Generated {
                template,
                action,
                alone,
            } => {
                if alone {
                    out.api_server_only.push((c.kind.clone(), c.name.clone()));
                }
                by_template
                    .entry(template.name.as_str())
                    .or_insert_with(|| (template, Vec::new()))
                    .1
                    .push((c, action));
            }
        }
    }
    let excluded = bundle.excluded_namespaces(Process::Webhook);
    for (template, constraints) in by_template.into_values() {
        let rules: Vec<Vec<Value>> = constraints
            .iter()
            .map(|(c, _)| {
                crate::webhooks::constraint_rules(bundle, c)
                    .iter()
                    .map(crate::webhooks::Rule::to_json)
                    .collect()
            })
            .collect();
        let mut union: Vec<Value> = Vec::new();
        for rule in rules.iter().flatten() {
            if !union.contains(rule) {
                union.push(rule.clone());
            }
        }
        out.objects
            .push(policy(template, union, excluded, &options.namespace));
        let mut bindings: Vec<Value> = constraints
            .iter()
            .zip(rules)
            .map(|((c, action), rules)| binding(template, c, *action, rules))
            .collect();
        bindings.sort_by(|a, b| {
            a["metadata"]["name"]
                .as_str()
                .cmp(&b["metadata"]["name"].as_str())
        });
        out.objects.extend(bindings);
    }
    out
}

fn labels() -> Value {
    json!({ MANAGED_BY.0: MANAGED_BY.1 })
}

/// A string of the request (`name`, `namespace`), else of the object's metadata (the old
/// object's on DELETE, as Gatekeeper's `anyObject`), else "", as Palisade reads a review.
pub(crate) fn request_or_metadata(field: &str) -> String {
    let object = cel::ANY_OBJECT;
    format!(
        r#"(has(request.{field}) && request.{field} != "" ? string(request.{field}) : [({object})].map(o, o != null && has(o.metadata) && has(o.metadata.{field}) ? string(o.metadata.{field}) : "")[0])"#
    )
}

/// Whether the object is a Namespace (matched by its own name and labels).
pub(crate) const IS_NAMESPACE: &str =
    r#"(request.kind.group == "" && request.kind.kind == "Namespace")"#;

/// The namespace that namespace matchers read: a Namespace's own name.
pub(crate) fn effective_namespace() -> String {
    format!(
        "({IS_NAMESPACE} ? {} : {})",
        request_or_metadata("name"),
        request_or_metadata("namespace")
    )
}

/// Whether `s` fits the glob `g` (both CEL strings) as [`crate::matcher::Glob`] says:
/// `*`, `*infix*`, `*suffix`, `prefix*` or exact; without regular expressions, so that a `.`
/// in a name means a dot.
fn glob(g: &str, s: &str) -> String {
    format!(
        r#"({g} == "*" || ((size({g}) >= 2 && {g}.startsWith("*") && {g}.endsWith("*")) ? {s}.contains({g}.substring(1, size({g}) - 1)) : ({g}.startsWith("*") ? {s}.endsWith({g}.substring(1)) : ({g}.endsWith("*") ? {s}.startsWith({g}.substring(0, size({g}) - 1)) : {s} == {g}))))"#
    )
}

/// True when the constraint does not set `spec.match.<field>`, else `body`.
fn unless_unset(field: &str, body: &str) -> String {
    format!(
        "!has(params.spec) || !has(params.spec.match) || !has(params.spec.match.{field}) || params.spec.match.{field} == null || ({body})"
    )
}

/// `body` with the variable `v` bound to the value of `value`, which CEL (without `cel.bind`)
/// spells as a comprehension over a list of one.
pub(crate) fn bind(v: &str, value: &str, body: &str) -> String {
    format!("[{value}].all({v}, {body})")
}

/// The match conditions that stand for the parts of `spec.match` a binding cannot express,
/// then the bundle Config's namespaces excluded from the webhook.
fn internal_conditions(excluded: &[String]) -> Vec<Value> {
    let namespaced = format!(
        r#"({IS_NAMESPACE} || {} != "")"#,
        request_or_metadata("namespace")
    );
    let any = |list: &str| format!("!has({list}) || {list} == null || size({list}) == 0");
    let kinds = unless_unset(
        "kinds",
        &format!(
            "size(params.spec.match.kinds) == 0 || params.spec.match.kinds.exists(k, ({} || \"*\" in k.kinds || request.kind.kind in k.kinds) && ({} || \"*\" in k.apiGroups || request.kind.group in k.apiGroups))",
            any("k.kinds"),
            any("k.apiGroups")
        ),
    );
    let scope = unless_unset(
        "scope",
        &bind(
            "namespaced",
            &namespaced,
            &format!(
                r#"params.spec.match.scope == "Cluster" ? !namespaced || {IS_NAMESPACE} : (params.spec.match.scope == "Namespaced" ? namespaced && !{IS_NAMESPACE} : true)"#
            ),
        ),
    );
    // Namespace matchers hold namespaced objects and Namespaces, by the effective namespace.
    let by_namespace = |field: &str, body: &str| {
        unless_unset(
            field,
            &bind(
                "namespaced",
                &namespaced,
                &format!(
                    "!namespaced || {}",
                    bind("ns", &effective_namespace(), body)
                ),
            ),
        )
    };
    let namespaces = by_namespace(
        "namespaces",
        &format!(
            "size(params.spec.match.namespaces) == 0 || params.spec.match.namespaces.exists(g, {})",
            glob("g", "ns")
        ),
    );
    let excluded_namespaces = by_namespace(
        "excludedNamespaces",
        &format!(
            "!params.spec.match.excludedNamespaces.exists(g, {})",
            glob("g", "ns")
        ),
    );
    let name = unless_unset(
        "name",
        &bind(
            "g",
            "params.spec.match.name",
            &format!(
                r#"g == "" || {}"#,
                bind("n", &request_or_metadata("name"), &glob("g", "n"))
            ),
        ),
    );
    let p = cel::RESERVED_PREFIX;
    let mut conditions = vec![
        json!({"name": format!("{p}match_kinds"), "expression": kinds}),
        json!({"name": format!("{p}match_scope"), "expression": scope}),
        json!({"name": format!("{p}match_namespaces"), "expression": namespaces}),
        json!({"name": format!("{p}match_excluded_namespaces"), "expression": excluded_namespaces}),
        json!({"name": format!("{p}match_name"), "expression": name}),
    ];
    if !excluded.is_empty() {
        let list: Vec<String> = excluded.iter().map(|p| cel::string_literal(p)).collect();
        conditions.push(json!({
            "name": format!("{p}match_global_excluded_namespaces"),
            "expression": bind(
                "ns",
                &effective_namespace(),
                &format!(
                    r#"ns == "" || ![{}].exists(g, {})"#,
                    list.join(", "),
                    glob("g", "ns")
                ),
            ),
        }));
    }
    conditions
}

fn policy(template: &Template, rules: Vec<Value>, excluded: &[String], namespace: &str) -> Value {
    let Some(program) = template.cel() else {
        return Value::Null;
    };
    let source = program.source();
    let mut conditions: Vec<Value> = source
        .match_conditions
        .iter()
        .map(|c| json!({"name": c.name, "expression": c.expression}))
        .collect();
    conditions.extend(internal_conditions(excluded));
    let mut variables = vec![
        json!({"name": "anyObject", "expression": cel::ANY_OBJECT}),
        json!({"name": "params", "expression": cel::PARAMS}),
    ];
    variables.extend(
        source
            .variables
            .iter()
            .map(|v| json!({"name": v.name, "expression": v.expression})),
    );
    let validations: Vec<Value> = source
        .validations
        .iter()
        .map(|v| {
            let mut out = json!({"expression": v.expression});
            if let Some(m) = v
                .message
                .as_deref()
                .map(str::trim)
                .filter(|m| !m.is_empty())
            {
                out["message"] = json!(m);
            }
            if let Some(m) = &v.message_expression {
                out["messageExpression"] = json!(m);
            }
            out
        })
        .collect();
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": policy_name(&template.name), "labels": labels()},
        "spec": {
            "failurePolicy": source.failure_policy.as_str(),
            "paramKind": {"apiVersion": PARAM_API_VERSION, "kind": template.kind},
            "matchConstraints": {
                "matchPolicy": "Equivalent",
                "namespaceSelector": crate::webhooks::namespace_selector(namespace),
                "resourceRules": rules,
            },
            "matchConditions": conditions,
            "variables": variables,
            "validations": validations,
        },
    })
}

fn binding(template: &Template, c: &Constraint, action: Action, rules: Vec<Value>) -> Value {
    let validation_action = match action {
        Action::Deny => "Deny",
        Action::Warn => "Warn",
        Action::Dryrun => "Audit",
    };
    let mut resources = json!({"matchPolicy": "Equivalent", "resourceRules": rules});
    let matcher = &c.object["spec"]["match"];
    for (from, to) in [
        ("labelSelector", "objectSelector"),
        ("namespaceSelector", "namespaceSelector"),
    ] {
        if matcher[from].is_object() {
            resources[to] = matcher[from].clone();
        }
    }
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": binding_name(&c.kind, &c.name), "labels": labels()},
        "spec": {
            "policyName": policy_name(&template.name),
            "paramRef": {"name": c.name, "parameterNotFoundAction": "Deny"},
            "validationActions": [validation_action],
            "matchResources": resources,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_binding_names_are_cut_with_a_hash_as_gatekeeper_cuts_them() {
        assert_eq!(
            binding_name("K8sRequiredLabels", "ns-must-have-owner"),
            "palisade-k8srequiredlabels-ns-must-have-owner"
        );
        let long = "a".repeat(300);
        let name = binding_name("K8sRequiredLabels", &long);
        assert_eq!(name.len(), 253, "{name}");
        assert_ne!(name, binding_name("K8sRequiredLabels", &"a".repeat(301)));
        let dashes = format!("{}-{}", "a".repeat(216), "b".repeat(80));
        assert!(!binding_name("K", &dashes).contains("--"));
    }

    #[test]
    fn the_first_rule_that_names_a_constraint_places_it() {
        let config: PolicyConfig = yaml_serde::from_str(
            "placement: both\nconstraints:\n  - {kind: A, name: x, placement: apiServer}\n  - {name: x, placement: webhook}\n",
        )
        .unwrap();
        assert_eq!(config.placement_of("A", "x"), Placement::ApiServer);
        assert_eq!(config.placement_of("B", "x"), Placement::Webhook);
        assert_eq!(config.placement_of("B", "y"), Placement::Both);
    }
}
