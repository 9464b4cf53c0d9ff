//! What a change of NetworkPolicies (or Namespaces) does to reachability: the flows two trees of
//! manifests allow differently, per pod set (naming the input's pods in each set), and the
//! flows the change adds that a communication matrix forbids.
//!
//! Both trees are read over one refinement of the pods ([`super::flows`]), so a pod set means
//! the same pods in both: a set is split wherever either tree's selectors (or a matrix's) tell
//! pods apart.

use std::collections::BTreeSet;
use std::time::Instant;

use serde::Serialize;

use super::flows::{End, Flows, Net, PortSet};
use super::matrix::{self, Breach, Matrix};

/// One pair of ends whose flow changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// The source.
    #[serde(serialize_with = "end_text")]
    pub from: End,
    /// The destination.
    #[serde(serialize_with = "end_text")]
    pub to: End,
    /// Ports the head tree allows and the base does not.
    pub added: PortSet,
    /// Ports the base allows and the head does not.
    pub removed: PortSet,
    /// In the head tree, the rules that open the flow (both ends).
    pub opened_by: Vec<String>,
    /// In the base tree, the rules that opened it.
    pub was_opened_by: Vec<String>,
}

fn end_text<S: serde::Serializer>(end: &End, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&end.text())
}

/// What changed between two trees.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Diff {
    /// The flows that changed, sorted.
    pub changes: Vec<Change>,
    /// Flows the change adds that a matrix forbids, at each governed end.
    pub breaches: Vec<Breach>,
    /// Required flows of a matrix that the change blocks.
    pub blocked: Vec<matrix::Blocked>,
    /// Namespaces that could not be compared, and why.
    pub errors: Vec<String>,
}

/// Compares `base` with `head` in the namespaces `only` (every namespace of either when empty),
/// judging what the change adds against `matrices`. Past `deadline`, or past the model's step
/// budget, a namespace is reported in [`Diff::errors`] and left out.
pub fn diff(
    base: &Net,
    head: &Net,
    matrices: &[Matrix],
    only: &[String],
    deadline: Option<Instant>,
) -> Diff {
    let nets = [base, head];
    let refine = matrix::Matrices(matrices);
    let flows = Flows::new(&nets, &refine).uniform();
    let mut names: BTreeSet<String> = base.namespaces().map(|s| s.name).collect();
    names.extend(head.namespaces().map(|s| s.name));
    if !only.is_empty() {
        names.retain(|n| only.contains(n));
    }
    let mut out = Diff::default();
    let (found, errors) = flows.across(names.iter().map(String::as_str), deadline);
    out.errors = errors;
    for m in matrices {
        for b in matrix::added(m, &found) {
            if !out.breaches.contains(&b) {
                out.breaches.push(b);
            }
        }
    }
    for f in found {
        let (before, after) = (f.ports(0), f.ports(1));
        let added = after.minus(&before);
        let removed = before.minus(&after);
        if added.is_empty() && removed.is_empty() {
            continue;
        }
        out.changes.push(Change {
            opened_by: f.openers(1),
            was_opened_by: f.openers(0),
            from: f.from,
            to: f.to,
            added,
            removed,
        });
    }
    for m in matrices {
        match matrix::newly_blocked_anywhere(m, nets, deadline) {
            Ok(b) => out.blocked.extend(b),
            Err(_) => out.errors.push(format!(
                "matrix {:?}: its required flows are too intricate to check within {} steps",
                m.name,
                super::space::BUDGET
            )),
        }
    }
    out.changes.sort_by_key(|c| (c.from.text(), c.to.text()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netpol::judge::Universe;
    use crate::netpol::{Policy, World};
    use serde_json::json;

    fn policy(name: &str, spec: serde_json::Value) -> Policy {
        Policy::parse(
            &json!({"metadata": {"name": name, "namespace": "a"}, "spec": spec}),
            "a",
        )
        .unwrap()
    }

    #[test]
    fn a_wider_port_is_an_added_flow_and_a_narrower_one_a_removed_flow() {
        let deny = policy(
            "deny",
            json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        );
        let rule = |port: u16, end: u16| {
            policy(
                "web",
                json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"], "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": port, "endPort": end}]}]}),
            )
        };
        let base = World {
            policies: vec![deny.clone(), rule(80, 81)],
            ..World::default()
        };
        let head = World {
            policies: vec![deny, rule(81, 82)],
            ..World::default()
        };
        let universe = Universe::default();
        let (b, h) = (
            Net::of_world(&base, &universe),
            Net::of_world(&head, &universe),
        );
        let d = diff(&b, &h, &[], &[], None);
        assert_eq!(d.changes.len(), 1, "{d:#?}");
        let c = &d.changes[0];
        assert_eq!(c.from.text(), "10.0.0.0/8");
        assert!(
            c.to.text().starts_with("pods app=web in a"),
            "{}",
            c.to.text()
        );
        assert_eq!(c.added.to_string(), "TCP 82");
        assert_eq!(c.removed.to_string(), "TCP 80");
        assert_eq!(c.opened_by, ["a/web ingress[0]"]);
        // The same tree: no change.
        assert!(diff(&b, &b, &[], &[], None).changes.is_empty());
    }
}
