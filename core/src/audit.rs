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
    /// The namespace whose PolicyReport holds it, when not the object's own: a communication
    /// matrix's findings about a Namespace go to that namespace's report.
    pub report: Option<String>,
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
                report: None,
            })
        })
        .collect()
}

/// What one communication matrix found in the whole inventory.
#[derive(Debug, Clone)]
pub struct MatrixAudit {
    /// The constraint's name.
    pub constraint: String,
    /// The forbidden and blocked flows, the namespaces that could not be judged, the coverage.
    pub audit: crate::netpol::matrix::Audit,
}

/// Judges every `PalisadeCommunicationMatrix` of the bundle against the whole inventory
/// (a matrix is about what the policies allow together, so its audit is not one object at a
/// time; [`evaluate`] leaves such constraints out). Each forbidden flow is a violation of the
/// NetworkPolicies whose rules open it (or of the Namespace, when no policy isolates its pods),
/// at the constraint's audit action; each required flow the policies block is a warning on the
/// Namespace of its source; a namespace that cannot be judged is a violation on the Namespace.
pub fn matrices(bundle: &Bundle, inventory: &Inventory) -> (Vec<Finding>, Vec<MatrixAudit>) {
    use crate::netpol::flows::Net;
    use crate::netpol::matrix;
    let policies = bundle.policies();
    let net = Net::of_inventory(inventory, policies.universe());
    let mut by_object: BTreeMap<ObjectRef, Vec<Violation>> = BTreeMap::new();
    let mut audits = Vec::new();
    let namespace_ref = |name: &str| ObjectRef {
        group: String::new(),
        version: "v1".into(),
        kind: "Namespace".into(),
        namespace: String::new(),
        name: name.to_owned(),
    };
    let policy_ref = |ns: &str, name: &str| ObjectRef {
        group: "networking.k8s.io".into(),
        version: "v1".into(),
        kind: "NetworkPolicy".into(),
        namespace: ns.to_owned(),
        name: name.to_owned(),
    };
    for c in policies.constraints() {
        let Some(m) = &c.matrix else { continue };
        let Some(action) = c.enforcement.at(Point::Audit) else {
            continue;
        };
        let found = matrix::audit(m, &net, None);
        let violation = |action, message: String, details: Value| Violation {
            constraint: c.name.clone(),
            constraint_kind: c.kind.clone(),
            action,
            message,
            details,
            failure: None,
        };
        for b in &found.forbidden {
            let mut objects: Vec<ObjectRef> = b
                .opened_by
                .iter()
                .filter_map(|r| {
                    let (policy, _) = r.split_once(' ')?;
                    let (ns, name) = policy.split_once('/')?;
                    Some(policy_ref(ns, name))
                })
                .collect();
            objects.dedup();
            if objects.is_empty() {
                objects.push(namespace_ref(&b.namespace));
            }
            let details = serde_json::to_value(b).unwrap_or(Value::Null);
            for o in objects {
                by_object.entry(o).or_default().push(violation(
                    action,
                    b.message(),
                    details.clone(),
                ));
            }
        }
        let warn = if action == crate::policy::Action::Dryrun {
            action
        } else {
            crate::policy::Action::Warn
        };
        for b in &found.blocked {
            // On the policies that block it, else on the namespace of its source.
            let mut objects: Vec<ObjectRef> = b
                .policies
                .iter()
                .filter_map(|id| {
                    let (ns, name) = id.split_once('/')?;
                    Some(policy_ref(ns, name))
                })
                .collect();
            if objects.is_empty()
                && let Some(ns) = b.namespaces.first()
            {
                objects.push(namespace_ref(ns));
            }
            for o in objects {
                by_object.entry(o).or_default().push(violation(
                    warn,
                    b.message(),
                    serde_json::to_value(b).unwrap_or(Value::Null),
                ));
            }
        }
        for (ns, e) in &found.errors {
            let mut v = violation(
                action,
                format!("the communication matrix cannot judge namespace {ns}: {e}"),
                Value::Null,
            );
            v.failure = Some(crate::policy::FailureKind::Engine);
            by_object.entry(namespace_ref(ns)).or_default().push(v);
        }
        audits.push(MatrixAudit {
            constraint: c.name.clone(),
            audit: found,
        });
    }
    let findings = by_object
        .into_iter()
        .map(|(object, violations)| Finding {
            report: (object.kind == "Namespace").then(|| object.name.clone()),
            object,
            uid: None,
            violations,
        })
        .collect();
    (findings, audits)
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
    let mut denies = DefaultDenies::default();
    for policy in policies {
        denies.add(policy);
    }
    denies.coverage(namespaces, scope)
}

/// Which directions some NetworkPolicy of each namespace denies by default, fed a page of
/// policies at a time (the background audit does not hold every policy at once).
#[derive(Debug, Clone, Default)]
pub struct DefaultDenies {
    by_namespace: BTreeMap<String, (bool, bool)>,
}

impl DefaultDenies {
    /// Takes one NetworkPolicy into account.
    pub fn add(&mut self, policy: &Value) {
        let (ingress, egress) = (denies_all(policy, "Ingress"), denies_all(policy, "Egress"));
        let ns = policy["metadata"]["namespace"].as_str().unwrap_or_default();
        // Only namespaces with a default-deny need an entry: the others lack one either way.
        if ingress || egress {
            let entry = self.by_namespace.entry(ns.to_owned()).or_default();
            entry.0 |= ingress;
            entry.1 |= egress;
        }
    }

    /// The coverage of `namespaces` (Namespace objects) by the policies added.
    pub fn coverage<'a>(
        &self,
        namespaces: impl IntoIterator<Item = &'a Value>,
        scope: &Scope,
    ) -> Coverage {
        let mut coverage = Coverage::default();
        for namespace in namespaces {
            if !scope.includes(namespace) {
                continue;
            }
            let name = namespace["metadata"]["name"].as_str().unwrap_or_default();
            coverage.opted_in.insert(name.to_owned());
            if self.by_namespace.get(name) != Some(&(true, true)) {
                coverage.lacking.insert(name.to_owned());
            }
        }
        coverage
    }
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
