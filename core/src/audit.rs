//! Audits of what already exists: every object through the one decision path, as Gatekeeper's
//! audit does, and the zero-trust coverage of the namespaces. The background audit
//! (`cluster::auditor` in the shell) and `palisade audit` both use this, and publish the same
//! reports ([`report`]).
//!
//! [`evaluate`] judges objects into one [`Finding`] each; [`coverage`] says which opted-in
//! namespaces lack a default-deny ([`Coverage`]).

pub mod report;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::admission::{Endpoint, Review};
use crate::bundle::Bundle;
use crate::decide::Decider;
use crate::inventory::Inventory;
use crate::object::ObjectRef;
use crate::policy::{Point, Violation};
use crate::zero_trust::Scope;

/// What the audit found on one object.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The object judged.
    pub object: ObjectRef,
    /// `metadata.uid` of the object, when it has one (objects from the cluster do, manifests do
    /// not).
    pub uid: Option<String>,
    /// What the constraints said of it, at their own actions (the audit does not cap them).
    pub violations: Vec<Violation>,
}

/// How objects are presented to the policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented {
    /// As they are: no operation, no userInfo (Gatekeeper's audit).
    AsTheyAre,
    /// As if being created (the offline audit of manifests).
    AsCreated,
}

/// Evaluates each object with `decider` (without its rollout caps: a report says what each
/// constraint says), at the time `now` (the audit's start). An object in an exempt namespace is
/// left out, as the webhook never sees it.
pub fn evaluate(
    decider: &Decider,
    bundle: &Bundle,
    inventory: &Inventory,
    objects: impl IntoIterator<Item = Value>,
    presented: Presented,
    now: time::OffsetDateTime,
) -> Vec<Finding> {
    let decider = decider.uncapped().at_point(Point::Audit);
    objects
        .into_iter()
        .filter_map(|object| {
            let uid = object["metadata"]["uid"].as_str().map(str::to_owned);
            let review = match presented {
                Presented::AsTheyAre => Review::from_object(object),
                Presented::AsCreated => Review::as_created(object),
            };
            // Without a deadline each template has its own timeout, so this cannot run out of
            // time; a timed-out template is a violation (fail closed).
            let decision = decider
                .decide(bundle, inventory, Endpoint::Validate, &review, now, None)
                .ok()?;
            (!decision.exempt).then(|| Finding {
                object: review.object_ref().clone(),
                uid,
                violations: decision.violations,
            })
        })
        .collect()
}

/// Whether opted-in namespaces hold a default-deny NetworkPolicy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Coverage {
    /// Opted-in namespaces, by name.
    pub opted_in: BTreeSet<String>,
    /// Those without a default-deny for both ingress and egress.
    pub lacking: BTreeSet<String>,
}

impl Coverage {
    /// The share of opted-in namespaces that are covered (1 when none is opted in).
    pub fn ratio(&self) -> f64 {
        if self.opted_in.is_empty() {
            1.0
        } else {
            (self.opted_in.len() - self.lacking.len()) as f64 / self.opted_in.len() as f64
        }
    }
}

/// The coverage of `namespaces` (Namespace objects) by `policies` (NetworkPolicies).
pub fn coverage<'a>(
    namespaces: impl IntoIterator<Item = &'a Value>,
    policies: impl IntoIterator<Item = &'a Value>,
    scope: &Scope,
) -> Coverage {
    let mut denies: BTreeMap<&str, (bool, bool)> = BTreeMap::new();
    for policy in policies {
        let ns = policy["metadata"]["namespace"].as_str().unwrap_or_default();
        let entry = denies.entry(ns).or_default();
        entry.0 |= denies_all(policy, "Ingress");
        entry.1 |= denies_all(policy, "Egress");
    }
    let mut coverage = Coverage::default();
    for namespace in namespaces {
        if !scope.includes(namespace) {
            continue;
        }
        let name = namespace["metadata"]["name"].as_str().unwrap_or_default();
        coverage.opted_in.insert(name.to_owned());
        if denies.get(name) != Some(&(true, true)) {
            coverage.lacking.insert(name.to_owned());
        }
    }
    coverage
}

/// Whether a NetworkPolicy selects every pod and allows nothing in `direction` (`Ingress` or
/// `Egress`). Without policyTypes, Ingress is implied, and Egress only when egress rules exist.
fn denies_all(policy: &Value, direction: &str) -> bool {
    let spec = &policy["spec"];
    let selects_all = match &spec["podSelector"] {
        Value::Null => true,
        Value::Object(s) => s.values().all(|v| match v {
            Value::Object(m) => m.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Null => true,
            _ => false,
        }),
        _ => false,
    };
    let rules = if direction == "Ingress" {
        &spec["ingress"]
    } else {
        &spec["egress"]
    };
    let has_rules = rules.as_array().is_some_and(|r| !r.is_empty());
    let types = spec["policyTypes"].as_array();
    let covers = match types {
        Some(types) => types.iter().any(|t| t == direction),
        None => direction == "Ingress" || !spec["egress"].is_null(),
    };
    selects_all && covers && !has_rules
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ns(name: &str, opted_in: bool) -> Value {
        let labels = if opted_in {
            json!({"network-policy": "zero-trust"})
        } else {
            json!({})
        };
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
    }

    fn policy(ns: &str, spec: Value) -> Value {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": ns}, "spec": spec})
    }

    #[test]
    fn coverage_counts_opted_in_namespaces_with_a_default_deny_both_ways() {
        let scope = Scope {
            selector: "network-policy=zero-trust".parse().unwrap(),
            exempt: vec!["kube-system".into()],
        };
        let namespaces = [
            ns("a", true),
            ns("b", true),
            ns("c", true),
            ns("d", false),
            ns("kube-system", true),
        ];
        let policies = [
            policy(
                "a",
                json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
            ),
            // Split in two policies, one per direction: covered.
            policy("b", json!({"podSelector": {}, "policyTypes": ["Ingress"]})),
            policy(
                "b",
                json!({"podSelector": {"matchLabels": {}}, "policyTypes": ["Egress"]}),
            ),
            // Ingress only, and a policy that allows something: not covered.
            policy("c", json!({"podSelector": {}})),
            policy(
                "c",
                json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": 53}]}]}),
            ),
        ];
        let c = coverage(&namespaces, &policies, &scope);
        assert_eq!(c.opted_in.iter().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(c.lacking.iter().collect::<Vec<_>>(), ["c"]);
        assert!((c.ratio() - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(Coverage::default().ratio(), 1.0);
    }

    #[test]
    fn a_selective_policy_is_not_a_default_deny() {
        let p = policy(
            "a",
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress", "Egress"]}),
        );
        assert!(!denies_all(&p, "Ingress"));
        let p = policy(
            "a",
            json!({"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{}]}),
        );
        assert!(
            !denies_all(&p, "Ingress"),
            "an empty rule allows everything"
        );
    }
}
