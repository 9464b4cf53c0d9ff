//! Zero trust, as Palisade builds it: the NetworkPolicies every opted-in namespace holds
//! (`default-deny-all` and `allow-dns`), which namespaces are opted in ([`Scope`], by an
//! equality [`LabelSelector`] on the Namespace's labels, minus the exempt ones), and whether a
//! namespace still waits for its generated policies.
//!
//! The generator that writes the policies into a cluster is the shell's (`cluster::generate`);
//! the audit, `palisade audit` and the webhook's generation gate read the same definitions here.
//!
//! [`generated_policies`] are the policies of one namespace; [`Scope::awaits_generation`] is
//! the generation gate's question.

use serde_json::{Value, json};

use crate::inventory::Inventory;

/// The field manager of every object Palisade writes.
pub const FIELD_MANAGER: &str = "palisade";
/// The generated policy that isolates every pod of the namespace in both directions.
pub const DEFAULT_DENY: &str = "default-deny-all";
/// The generated policy that lets every pod of the namespace reach kube-dns in kube-system on port
/// 53 (UDP and TCP).
pub const ALLOW_DNS: &str = "allow-dns";

/// The NetworkPolicies every opted-in namespace holds.
pub fn generated_policies(namespace: &str) -> Vec<Value> {
    let policy = |name: &str, spec: Value| {
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": "palisade"},
            },
            "spec": spec,
        })
    };
    vec![
        policy(
            DEFAULT_DENY,
            json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        ),
        policy(
            ALLOW_DNS,
            json!({
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [{
                    "to": [{
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                    }],
                    "ports": [
                        {"protocol": "UDP", "port": 53},
                        {"protocol": "TCP", "port": 53},
                    ],
                }],
            }),
        ),
    ]
}

/// Which namespaces get the policies.
#[derive(Debug, Clone)]
pub struct Scope {
    /// The Namespace labels that opt a namespace in (`--default-deny-selector`).
    pub selector: LabelSelector,
    /// Exempt by name (kube-system, Palisade's own namespace, --exempt-namespace).
    pub exempt: Vec<String>,
}

impl Scope {
    /// Whether the namespace `object` (JSON) is opted in.
    pub fn includes(&self, namespace: &Value) -> bool {
        let name = namespace["metadata"]["name"].as_str().unwrap_or("");
        !name.is_empty()
            && !self.exempt.iter().any(|e| e == name)
            && namespace["metadata"]["deletionTimestamp"].is_null()
            && self.selector.matches(namespace)
    }
}

impl Scope {
    /// Whether a review in `namespace` (the Namespace object) must wait for the generated
    /// policies: the namespace is opted in and `inventory` lacks either of them.
    pub fn awaits_generation(&self, namespace: &Value, inventory: &Inventory) -> bool {
        let name = namespace["metadata"]["name"].as_str().unwrap_or("");
        let generated = |policy: &str| {
            let id = crate::object::ObjectRef {
                group: "networking.k8s.io".into(),
                version: "v1".into(),
                kind: "NetworkPolicy".into(),
                namespace: name.to_owned(),
                name: policy.to_owned(),
            };
            inventory.contains(&id)
        };
        self.includes(namespace) && !(generated(DEFAULT_DENY) && generated(ALLOW_DNS))
    }
}

/// An equality label selector: every `key=value` must match, every bare `key` must exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelector(Vec<(String, Option<String>)>);

impl std::str::FromStr for LabelSelector {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (key, value) = match term.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim().trim_start_matches('=').to_owned())),
                None => (term, None),
            };
            if key.is_empty() || key.contains(['!', ' ']) {
                return Err(format!(
                    "`{term}` is not a supported label selector term: use key=value or key"
                ));
            }
            terms.push((key.to_owned(), value));
        }
        if terms.is_empty() {
            return Err("the label selector is empty: use key=value".into());
        }
        Ok(Self(terms))
    }
}

impl LabelSelector {
    /// Whether `object`'s labels satisfy every term.
    pub fn matches(&self, object: &serde_json::Value) -> bool {
        let labels = &object["metadata"]["labels"];
        self.0.iter().all(|(k, v)| match (labels.get(k), v) {
            (Some(actual), Some(want)) => actual.as_str() == Some(want.as_str()),
            (Some(_), None) => true,
            (None, _) => false,
        })
    }
}

impl std::fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let terms: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k}={v}"),
                None => k.clone(),
            })
            .collect();
        f.write_str(&terms.join(","))
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_opted_in_namespace_awaits_both_generated_policies_and_no_other_does() {
        let scope = Scope {
            selector: "network-policy=zero-trust".parse().unwrap(),
            exempt: vec!["palisade-system".into()],
        };
        let ns = |name: &str, labels: Value| {
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": name, "labels": labels}})
        };
        let opted = ns("shop", json!({"network-policy": "zero-trust"}));
        let generated = |names: &[&str]| {
            Inventory::from_objects(names.iter().flat_map(|n| {
                generated_policies("shop")
                    .into_iter()
                    .filter(move |p| p["metadata"]["name"] == *n)
            }))
        };
        assert!(scope.awaits_generation(&opted, &generated(&[])));
        assert!(scope.awaits_generation(&opted, &generated(&[DEFAULT_DENY])));
        assert!(scope.awaits_generation(&opted, &generated(&[ALLOW_DNS])));
        assert!(!scope.awaits_generation(&opted, &generated(&[DEFAULT_DENY, ALLOW_DNS])));
        // Another namespace's policies do not count.
        let elsewhere = Inventory::from_objects(generated_policies("other"));
        assert!(scope.awaits_generation(&opted, &elsewhere));
        // Not opted in, exempt, or being deleted: nothing to wait for.
        let open = ns("shop", json!({"network-policy": "open"}));
        assert!(!scope.awaits_generation(&open, &generated(&[])));
        let exempt = ns("palisade-system", json!({"network-policy": "zero-trust"}));
        assert!(!scope.awaits_generation(&exempt, &generated(&[])));
        let mut deleting = opted.clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2026-12-05T00:00:00Z");
        assert!(!scope.awaits_generation(&deleting, &generated(&[])));
    }

    #[test]
    fn label_selectors_match_every_term() {
        let sel: LabelSelector = "network-policy=zero-trust, team".parse().unwrap();
        let ns = |labels: serde_json::Value| json!({"metadata": {"labels": labels}});
        assert!(sel.matches(&ns(json!({"network-policy": "zero-trust", "team": "a"}))));
        assert!(!sel.matches(&ns(json!({"network-policy": "zero-trust"}))));
        assert!(!sel.matches(&ns(json!({"network-policy": "open", "team": "a"}))));
        assert!(!sel.matches(&json!({"metadata": {}})));
        assert!("a!=b".parse::<LabelSelector>().is_err());
        assert!("".parse::<LabelSelector>().is_err());
        assert_eq!(sel.to_string(), "network-policy=zero-trust,team");
    }
}
