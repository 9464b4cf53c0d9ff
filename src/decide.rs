//! The one decision path. The webhook, `palisade test`, `palisade verify` and the audit all call
//! [`Decider::decide`], so exemptions, enforcement actions, messages and the fail-closed rules
//! cannot drift between them. Where they differ on purpose (gator has no exempt namespaces),
//! that is a setting of the [`Decider`], not a second path.

use std::time::Instant;

use serde_json::Value;

use crate::admission::{Endpoint, Operation, Response, Review};
use crate::bundle::Bundle;
use crate::inventory::Inventory;
use crate::policy::{Action, OutOfTime, Violation};

/// How reviews are decided, apart from the bundle and the inventory of the moment.
#[derive(Debug, Clone, Default)]
pub struct Decider {
    /// Matched against the namespace name the API server sets (a Namespace's own name), never
    /// against a label a tenant could write.
    exempt_namespaces: Vec<String>,
}

/// A decision and what it was made from.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub response: Response,
    /// Every violation found, of every action (dryrun ones are not in the response).
    pub violations: Vec<Violation>,
    /// The namespace is exempt: nothing was evaluated.
    pub exempt: bool,
}

impl Decider {
    /// Exempts the namespaces named (exact names).
    pub fn new(exempt_namespaces: Vec<String>) -> Self {
        let mut exempt_namespaces = exempt_namespaces;
        exempt_namespaces.retain(|n| !n.is_empty());
        Self { exempt_namespaces }
    }

    /// No namespace is exempt, as in gator.
    pub fn without_exemptions() -> Self {
        Self::default()
    }

    pub fn is_exempt(&self, review: &Review) -> bool {
        let ns = review.object_ref().effective_namespace();
        !ns.is_empty() && self.exempt_namespaces.iter().any(|e| e == ns)
    }

    /// Decides one review with `bundle` against `inventory`. With a `deadline`, templates stop
    /// when it passes and the result is [`OutOfTime`]; without, each template has its
    /// `--eval-timeout`.
    pub fn decide(
        &self,
        bundle: &Bundle,
        inventory: &Inventory,
        endpoint: Endpoint,
        review: &Review,
        deadline: Option<Instant>,
    ) -> Result<Decision, OutOfTime> {
        if self.is_exempt(review) {
            return Ok(Decision {
                response: Response::allow(),
                violations: Vec::new(),
                exempt: true,
            });
        }
        let namespace = namespace_object(review, inventory);
        let (response, violations) = match endpoint {
            Endpoint::Mutate => (mutate(bundle, review, namespace), Vec::new()),
            Endpoint::Validate => {
                let violations = bundle
                    .policies()
                    .evaluate(review, namespace, inventory, deadline)?;
                (response_from(&violations), violations)
            }
        };
        Ok(Decision {
            response,
            violations,
            exempt: false,
        })
    }
}

/// The Namespace of the object: the review's `namespaceObject`, else the inventory's.
fn namespace_object<'a>(review: &'a Review, inventory: &'a Inventory) -> Option<&'a Value> {
    if let Some(given) = review.namespace_object() {
        return Some(given);
    }
    let ns = &review.object_ref().namespace;
    if ns.is_empty() {
        return None;
    }
    inventory.namespace(ns)
}

/// DELETE and CONNECT are never mutated; dry-run requests are mutated like real ones. A mutation
/// that cannot be computed denies the request (fail closed) rather than admitting an object
/// without its security settings.
fn mutate(bundle: &Bundle, review: &Review, namespace: Option<&Value>) -> Response {
    if matches!(
        review.operation(),
        Some(Operation::Delete | Operation::Connect)
    ) {
        return Response::allow();
    }
    match bundle.mutators().mutate(review, namespace) {
        Ok(mutated) => {
            let mut response = Response::allow();
            response.patch = mutated.map(|object| json_patch::diff(review.object(), &object));
            response
        }
        Err(error) => {
            let mut response =
                Response::deny(format!("palisade could not mutate this object: {error}"));
            response.code = 500;
            response
        }
    }
}

/// Deny violations deny (403, one `[constraint] message` line each), warn violations become
/// warnings, dryrun violations are not shown to the user.
pub fn response_from(violations: &[Violation]) -> Response {
    let line = |v: &Violation| format!("[{}] {}", v.constraint, v.message);
    let denials: Vec<String> = violations
        .iter()
        .filter(|v| v.action == Action::Deny)
        .map(line)
        .collect();
    let mut response = if denials.is_empty() {
        Response::allow()
    } else {
        Response::deny(denials.join("\n"))
    };
    response.warnings = violations
        .iter()
        .filter(|v| v.action == Action::Warn)
        .map(line)
        .collect();
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(name: &str, action: Action, msg: &str) -> Violation {
        Violation {
            constraint: name.into(),
            constraint_kind: "K".into(),
            action,
            message: msg.into(),
            details: serde_json::Value::Null,
            failure: None,
        }
    }

    #[test]
    fn deny_warn_and_dryrun() {
        let d = response_from(&[
            v("a", Action::Deny, "one"),
            v("b", Action::Warn, "two"),
            v("c", Action::Dryrun, "three"),
            v("d", Action::Deny, "four"),
        ]);
        assert!(!d.allowed);
        assert_eq!(d.code, 403);
        assert_eq!(d.message, "[a] one\n[d] four");
        assert_eq!(d.warnings, ["[b] two"]);
    }

    #[test]
    fn only_warnings_and_dryruns_allow() {
        let d = response_from(&[v("b", Action::Warn, "two"), v("c", Action::Dryrun, "x")]);
        assert!(d.allowed);
        assert_eq!(d.warnings, ["[b] two"]);
        assert!(
            response_from(&[v("c", Action::Dryrun, "x")])
                .warnings
                .is_empty()
        );
    }

    #[test]
    fn exemption_is_by_the_namespace_name_and_a_parameter_of_the_one_path() {
        let pod = |ns: &str| {
            Review::from_object(serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": ns}}))
        };
        let webhook = Decider::new(vec!["kube-system".into(), String::new()]);
        assert!(webhook.is_exempt(&pod("kube-system")));
        assert!(!webhook.is_exempt(&pod("kube-system-2")));
        assert!(!webhook.is_exempt(&pod("")));
        assert!(!Decider::without_exemptions().is_exempt(&pod("kube-system")));
    }
}
