//! The ValidatingWebhookConfiguration and MutatingWebhookConfiguration that send the API
//! server's requests to Palisade, derived from the policy bundle so that the webhooks send
//! exactly the kinds and operations its constraints and mutators can act on, and nothing else.
//!
//! - Validation: every kind a constraint matches (`spec.match.kinds`), with the operations of
//!   its template (`spec.targets[0].operations`, Gatekeeper's field; CREATE and UPDATE when
//!   absent).
//! - Mutation: every kind a mutator matches (`spec.match.kinds`, else `spec.applyTo`), on CREATE
//!   and UPDATE, except Pods on CREATE only: a Pod's spec cannot change after creation, so a
//!   mutation of a running Pod's update would make the API server refuse that update.
//!
//! - Validation also: every kind an ExpansionTemplate expands (directly or through a chain)
//!   into a kind that a constraint judges in resultants, with that constraint's operations.
//!
//! - Both: every kind and subresource that carries a pod spec ([`crate::podpaths`]), whatever
//!   the bundle holds (a Pod's UPDATE too, for break-glass grants only: the mutators do not run
//!   on it), since break-glass is judged and its grants stamped there, and a pod path that no
//!   webhook sees is a way around every pod policy.
//!
//! Kinds become resources through the table of the built-in kinds, else Kubernetes' own guess
//! (lower case, plural), which is what CRDs use unless they name their plural otherwise
//! ([`resource_of`]).
//!
//! [`configurations`] makes both configurations for the [`WebhookOptions`];
//! [`validating_rules`] and [`mutating_rules`] are their [`Rule`]s, and [`match_conditions`]
//! their `matchConditions` (with [`WebhookOptions::match_conditions`]).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::bundle::Bundle;
use crate::matcher::KindSelector;
use crate::podpaths::POD_PATHS;
use crate::policy::Constraint;

pub mod match_conditions;

/// The namespaces a webhook never sees, besides Palisade's own.
pub const EXCLUDED_NAMESPACES: [&str; 1] = ["kube-system"];

/// Where the webhooks point and what they are called.
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    /// `metadata.name` of both configurations.
    pub name: String,
    /// The Service in front of Palisade.
    pub service: String,
    /// Palisade's own namespace: the Service's, and one the webhooks never see.
    pub namespace: String,
    /// How long the API server waits for an answer.
    pub timeout_seconds: u32,
    /// Base64 PEM CA that signed the serving certificate; absent when a certificate manager
    /// (`serve --manage-certs`, cert-manager) fills it in.
    pub ca_bundle: Option<String>,
    /// Constraints (kind, name) that only generated ValidatingAdmissionPolicies judge
    /// ([`crate::policy::vap::Generated::api_server_only`]): the validating webhook is not sent
    /// what only they need.
    pub api_server_only: BTreeSet<(String, String)>,
    /// Give each webhook the `matchConditions` of [`match_conditions`] (Kubernetes 1.30+), so
    /// that the API server does not call for what Palisade cannot act on.
    pub match_conditions: bool,
}

impl WebhookOptions {
    /// Options for `service` in `namespace`: both configurations named after the Service, a 5
    /// second timeout, and no CA bundle.
    pub fn new(service: &str, namespace: &str) -> Self {
        Self {
            name: service.to_owned(),
            service: service.to_owned(),
            namespace: namespace.to_owned(),
            timeout_seconds: 5,
            ca_bundle: None,
            api_server_only: BTreeSet::new(),
            match_conditions: false,
        }
    }
}

/// One webhook rule: an API group, its resources and the operations sent.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rule {
    /// The API group (`""` for the core group).
    pub api_group: String,
    /// The operations sent (`CREATE`, `UPDATE`, …).
    pub operations: Vec<String>,
    /// The resources, a subresource after a `/` (`pods/ephemeralcontainers`).
    pub resources: Vec<String>,
}

impl Rule {
    /// As a webhook's `rules[]` entry, or a ValidatingAdmissionPolicy's `resourceRules[]` one.
    pub fn to_json(&self) -> Value {
        json!({
            "apiGroups": [self.api_group],
            "apiVersions": ["*"],
            "operations": self.operations,
            "resources": self.resources,
            "scope": "*",
        })
    }
}

const ALL_OPERATIONS: [&str; 4] = ["CREATE", "UPDATE", "DELETE", "CONNECT"];

/// Accumulates (group, resource) → operations, then groups them into rules.
#[derive(Default)]
struct Rules {
    /// group → resource → operations; resource `*` stands for every resource of the group.
    by_group: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

impl Rules {
    fn add(&mut self, selectors: &[KindSelector], operations: &[String]) {
        let ops: BTreeSet<String> = if operations.iter().any(|o| o == "*") {
            ALL_OPERATIONS.iter().map(|o| (*o).to_owned()).collect()
        } else {
            operations.iter().cloned().collect()
        };
        let any = |list: &[String]| list.is_empty() || list.iter().any(|x| x == "*");
        if selectors.is_empty() {
            self.insert("*", "*", &ops);
        }
        for selector in selectors {
            let groups: Vec<&str> = if any(&selector.api_groups) {
                vec!["*"]
            } else {
                selector.api_groups.iter().map(String::as_str).collect()
            };
            for group in groups {
                if any(&selector.kinds) {
                    self.insert(group, "*", &ops);
                } else {
                    for kind in &selector.kinds {
                        self.insert(group, &resource_of(group, kind), &ops);
                    }
                }
            }
        }
    }

    fn insert_ops(&mut self, group: &str, resource: &str, ops: &[&str]) {
        let ops: BTreeSet<String> = ops.iter().map(|o| (*o).to_owned()).collect();
        self.insert(group, resource, &ops);
    }

    fn insert(&mut self, group: &str, resource: &str, ops: &BTreeSet<String>) {
        self.by_group
            .entry(group.to_owned())
            .or_default()
            .entry(resource.to_owned())
            .or_default()
            .extend(ops.iter().cloned());
    }

    /// One rule per group and set of operations, resources sorted; a group with `*` (or the
    /// group `*`) covers all of that group's resources with the union of their operations.
    fn into_rules(mut self) -> Vec<Rule> {
        if let Some(everything) = self.by_group.get("*").cloned() {
            // A rule for every group: fold each group's resources into it.
            let mut merged = everything;
            for (group, resources) in &self.by_group {
                if group != "*" {
                    for (resource, ops) in resources {
                        merged
                            .entry(resource.clone())
                            .or_default()
                            .extend(ops.iter().cloned());
                    }
                }
            }
            self.by_group = BTreeMap::from([("*".to_owned(), merged)]);
        }
        let mut rules = Vec::new();
        for (group, mut resources) in self.by_group {
            // `*` names every resource of the group but no subresource: those stay.
            if let Some(all) = resources.get("*").cloned() {
                let (subresources, plain): (BTreeMap<_, _>, BTreeMap<_, _>) =
                    resources.into_iter().partition(|(r, _)| r.contains('/'));
                let ops = plain.values().fold(all, |mut acc, ops| {
                    acc.extend(ops.iter().cloned());
                    acc
                });
                resources = subresources;
                resources.insert("*".to_owned(), ops);
            }
            let mut by_ops: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
            for (resource, ops) in resources {
                by_ops.entry(ordered(&ops)).or_default().push(resource);
            }
            for (operations, resources) in by_ops {
                rules.push(Rule {
                    api_group: group.clone(),
                    operations,
                    resources,
                });
            }
        }
        rules
    }
}

/// Operations in the API's order (CREATE, UPDATE, DELETE, CONNECT).
fn ordered(ops: &BTreeSet<String>) -> Vec<String> {
    ALL_OPERATIONS
        .iter()
        .filter(|o| ops.contains(**o))
        .map(|o| (*o).to_owned())
        .collect()
}

/// The operations a constraint's template is sent (`spec.targets[0].operations`).
fn operations_of(bundle: &Bundle, constraint: &Constraint) -> Vec<String> {
    bundle
        .policies()
        .templates()
        .find(|t| t.kind == constraint.kind)
        .map_or_else(
            || {
                crate::policy::template::DEFAULT_OPERATIONS
                    .map(str::to_owned)
                    .to_vec()
            },
            |t| t.operations.clone(),
        )
}

/// The rules of the validating webhook: what the bundle's constraints match.
pub fn validating_rules(bundle: &Bundle) -> Vec<Rule> {
    validating_rules_except(bundle, &BTreeSet::new())
}

/// The rules of the validating webhook, without the constraints (kind, name) in `skip`: those
/// the API server judges alone.
pub fn validating_rules_except(bundle: &Bundle, skip: &BTreeSet<(String, String)>) -> Vec<Rule> {
    let policies = bundle.policies();
    let mut rules = Rules::default();
    for constraint in policies.constraints() {
        if skip.contains(&(constraint.kind.clone(), constraint.name.clone())) {
            continue;
        }
        let operations = &operations_of(bundle, constraint)[..];
        rules.add(&constraint.matcher.kinds, operations);
        // A workload expanded into what the constraint judges is judged by it too, so it must
        // be sent here (a Deployment, for a Pod constraint).
        let parents = bundle.expansions().parents_of(|gvk| {
            constraint.matcher.may_match_kind(
                &gvk.group,
                &gvk.kind,
                crate::admission::Source::Generated,
            )
        });
        if !parents.is_empty() {
            rules.add(&parents, operations);
        }
    }
    for path in &POD_PATHS {
        rules.insert_ops(path.group, path.resource, path.validate);
    }
    rules.into_rules()
}

/// What one constraint needs the API server to send, by itself: the kinds it matches with its
/// template's operations, and the subresources that carry a pod spec of a kind it matches
/// (`pods/ephemeralcontainers`, for a Pod constraint), which a resource rule `pods` leaves out.
/// Not the workloads an ExpansionTemplate expands into its kinds: [`validating_rules`] adds
/// those.
pub fn constraint_rules(bundle: &Bundle, constraint: &Constraint) -> Vec<Rule> {
    let operations = operations_of(bundle, constraint);
    let mut rules = Rules::default();
    rules.add(&constraint.matcher.kinds, &operations);
    for path in POD_PATHS.iter().filter(|p| p.resource.contains('/')) {
        if constraint.matcher.may_match_kind(
            path.group,
            path.kind,
            crate::admission::Source::Original,
        ) {
            let ops: Vec<&str> = path
                .validate
                .iter()
                .copied()
                .filter(|op| operations.iter().any(|o| o == op || o == "*"))
                .collect();
            if !ops.is_empty() {
                rules.insert_ops(path.group, path.resource, &ops);
            }
        }
    }
    rules.into_rules()
}

/// The rules of the mutating webhook: what the bundle's mutators match.
pub fn mutating_rules(bundle: &Bundle) -> Vec<Rule> {
    let mut rules = Rules::default();
    let create = ["CREATE".to_owned()];
    let create_update = ["CREATE".to_owned(), "UPDATE".to_owned()];
    for mutator in bundle.mutators().list() {
        let kinds = mutator.kinds();
        // Split Pods (CREATE only) from the rest (CREATE and UPDATE).
        for selector in &kinds {
            let core = selector.api_groups.iter().any(|g| g.is_empty());
            let pods: Vec<String> = selector
                .kinds
                .iter()
                .filter(|k| core && *k == "Pod")
                .cloned()
                .collect();
            if !pods.is_empty() {
                let only_pods = KindSelector {
                    api_groups: vec![String::new()],
                    kinds: pods,
                };
                rules.add(std::slice::from_ref(&only_pods), &create);
            }
            let others = KindSelector {
                api_groups: selector.api_groups.clone(),
                kinds: selector
                    .kinds
                    .iter()
                    .filter(|k| !(core && *k == "Pod"))
                    .cloned()
                    .collect(),
            };
            if !others.kinds.is_empty() || selector.kinds.is_empty() {
                rules.add(std::slice::from_ref(&others), &create_update);
            }
        }
        if kinds.is_empty() {
            rules.add(&[], &create_update);
        }
    }
    // Every pod path, mutators or not: break-glass grants are stamped here.
    for path in &POD_PATHS {
        rules.insert_ops(path.group, path.resource, path.mutate);
    }
    rules.into_rules()
}

/// The namespaceSelector of both webhooks: every namespace but kube-system and Palisade's own,
/// by the name label the API server sets and nobody else can change.
pub fn namespace_selector(own_namespace: &str) -> Value {
    let mut excluded: Vec<&str> = EXCLUDED_NAMESPACES.to_vec();
    if !excluded.contains(&own_namespace) {
        excluded.push(own_namespace);
    }
    json!({
        "matchExpressions": [{
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": excluded,
        }]
    })
}

fn webhook(
    options: &WebhookOptions,
    name: &str,
    path: &str,
    rules: &[Rule],
    conditions: &[match_conditions::MatchCondition],
) -> Value {
    let mut client = json!({
        "service": {
            "name": options.service,
            "namespace": options.namespace,
            "path": path,
            "port": 443,
        }
    });
    if let Some(ca) = &options.ca_bundle {
        client["caBundle"] = json!(ca);
    }
    let mut hook = json!({
        "name": name,
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": "Fail",
        "matchPolicy": "Equivalent",
        "timeoutSeconds": options.timeout_seconds,
        "clientConfig": client,
        "namespaceSelector": namespace_selector(&options.namespace),
        "rules": rules.iter().map(Rule::to_json).collect::<Vec<_>>(),
    });
    if options.match_conditions && !conditions.is_empty() {
        hook["matchConditions"] = conditions
            .iter()
            .map(match_conditions::MatchCondition::to_json)
            .collect();
    }
    hook
}

/// The two configurations, validating first. A configuration whose bundle has nothing to send
/// (no constraints, or no mutators) is left out: a webhook with no rules is refused by the API.
pub fn configurations(bundle: &Bundle, options: &WebhookOptions) -> Vec<Value> {
    let mut out = Vec::new();
    let labels =
        json!({"app.kubernetes.io/name": "palisade", "app.kubernetes.io/part-of": "palisade"});
    let validating = validating_rules_except(bundle, &options.api_server_only);
    if !validating.is_empty() {
        out.push(json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": options.name, "labels": labels},
            "webhooks": [webhook(
                options,
                "validate.palisade.dev",
                "/validate",
                &validating,
                &match_conditions::validating(bundle),
            )],
        }));
    }
    let mutating = mutating_rules(bundle);
    if !mutating.is_empty() {
        let mut hook = webhook(
            options,
            "mutate.palisade.dev",
            "/mutate",
            &mutating,
            &match_conditions::mutating(bundle),
        );
        // The mutators are idempotent: a second call after other webhooks changed the object
        // re-applies them rather than letting another webhook undo them.
        hook["reinvocationPolicy"] = json!("IfNeeded");
        out.push(json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": options.name, "labels": labels},
            "webhooks": [hook],
        }));
    }
    out
}

/// The resource (plural) of a kind: the built-in table, else Kubernetes' guess
/// (`UnsafeGuessKindToResource`: lower case; `s` → `ses`, consonant + `y` → `ies`, else `s`).
pub fn resource_of(group: &str, kind: &str) -> String {
    const BUILT_IN: &[(&str, &str, &str)] = &[
        ("", "Endpoints", "endpoints"),
        ("", "ComponentStatus", "componentstatuses"),
        ("networking.k8s.io", "IngressClass", "ingressclasses"),
        ("storage.k8s.io", "StorageClass", "storageclasses"),
        (
            "rbac.authorization.k8s.io",
            "ClusterRoleBinding",
            "clusterrolebindings",
        ),
        ("policy", "PodSecurityPolicy", "podsecuritypolicies"),
        ("scheduling.k8s.io", "PriorityClass", "priorityclasses"),
        ("networking.k8s.io", "NetworkPolicy", "networkpolicies"),
    ];
    if let Some((_, _, resource)) = BUILT_IN
        .iter()
        .find(|(g, k, _)| (*g == group || group == "*") && *k == kind)
    {
        return (*resource).to_owned();
    }
    let lower = kind.to_lowercase();
    if lower.ends_with('s') {
        return format!("{lower}es");
    }
    if let Some(stem) = lower.strip_suffix('y')
        && !stem.ends_with(['a', 'e', 'i', 'o', 'u'])
    {
        return format!("{stem}ies");
    }
    format!("{lower}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_become_the_resources_the_api_server_names() {
        for (group, kind, resource) in [
            ("", "Pod", "pods"),
            ("", "Namespace", "namespaces"),
            ("", "Endpoints", "endpoints"),
            ("networking.k8s.io", "NetworkPolicy", "networkpolicies"),
            ("networking.k8s.io", "Ingress", "ingresses"),
            ("apps", "Deployment", "deployments"),
            ("batch", "CronJob", "cronjobs"),
            ("scheduling.k8s.io", "PriorityClass", "priorityclasses"),
            ("example.com", "Gateway", "gateways"),
            ("example.com", "Policy", "policies"),
            ("example.com", "Key", "keys"),
        ] {
            assert_eq!(resource_of(group, kind), resource, "{group}/{kind}");
        }
    }

    fn selector(groups: &[&str], kinds: &[&str]) -> KindSelector {
        KindSelector {
            api_groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
        }
    }

    fn ops(list: &[&str]) -> Vec<String> {
        list.iter().map(|o| (*o).to_owned()).collect()
    }

    #[test]
    fn rules_group_resources_by_group_and_operations() {
        let mut rules = Rules::default();
        rules.add(
            &[selector(&[""], &["Pod", "Namespace"])],
            &ops(&["CREATE", "UPDATE"]),
        );
        rules.add(
            &[selector(&["networking.k8s.io"], &["NetworkPolicy"])],
            &ops(&["CREATE", "UPDATE", "DELETE"]),
        );
        rules.add(&[selector(&[""], &["Pod"])], &ops(&["UPDATE", "CREATE"]));
        let rules = rules.into_rules();
        assert_eq!(
            rules,
            [
                Rule {
                    api_group: String::new(),
                    operations: ops(&["CREATE", "UPDATE"]),
                    resources: ops(&["namespaces", "pods"]),
                },
                Rule {
                    api_group: "networking.k8s.io".into(),
                    operations: ops(&["CREATE", "UPDATE", "DELETE"]),
                    resources: ops(&["networkpolicies"]),
                },
            ]
        );
    }

    #[test]
    fn a_wildcard_kind_or_group_widens_the_rule_to_match() {
        let mut rules = Rules::default();
        rules.add(&[selector(&["apps"], &["*"])], &ops(&["CREATE"]));
        rules.add(&[selector(&["apps"], &["Deployment"])], &ops(&["DELETE"]));
        let out = rules.into_rules();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].resources, ["*"]);
        assert_eq!(out[0].operations, ["CREATE", "DELETE"]);

        let mut rules = Rules::default();
        rules.add(&[selector(&[], &["Pod"])], &ops(&["*"]));
        rules.add(&[selector(&["apps"], &["Deployment"])], &ops(&["CREATE"]));
        let out = rules.into_rules();
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out.iter().all(|r| r.api_group == "*"));
        let pods = out
            .iter()
            .find(|r| r.resources.contains(&"pods".to_owned()))
            .unwrap();
        assert_eq!(pods.operations, ALL_OPERATIONS);
    }
}
