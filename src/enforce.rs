//! The decider behind the webhook: exemptions, the policy bundle, and the decision from its
//! violations, with Gatekeeper's enforcement actions.

use std::sync::Arc;

use crate::admission::{Decider, Decision, Endpoint, Review};
use crate::metrics::Metrics;
use crate::policy::store::PolicyStore;
use crate::policy::{Action, Violation};

pub struct Enforcer {
    policies: Arc<PolicyStore>,
    /// Matched against the namespace name the API server sets (a Namespace's own name), never
    /// against a label a tenant could write.
    exempt_namespaces: Vec<String>,
    metrics: Arc<Metrics>,
}

impl Enforcer {
    pub fn new(
        policies: Arc<PolicyStore>,
        exempt_namespaces: Vec<String>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            policies,
            exempt_namespaces,
            metrics,
        }
    }

    pub fn is_exempt(&self, review: &Review) -> bool {
        let ns = review.effective_namespace();
        !ns.is_empty() && self.exempt_namespaces.iter().any(|e| e == ns)
    }
}

impl Enforcer {
    /// DELETE and CONNECT are never mutated; dry-run requests are mutated like real ones. A
    /// mutation that cannot be computed denies the request (fail closed) rather than admitting
    /// an object without its security settings.
    fn mutate(&self, review: &Review) -> Decision {
        if matches!(review.operation(), Some("DELETE" | "CONNECT")) {
            return Decision::allow();
        }
        match self.policies.current().mutate(review) {
            Ok(patch) => {
                let mut decision = Decision::allow();
                decision.patch = patch;
                decision
            }
            Err(error) => {
                tracing::warn!(uid = review.uid(), kind = review.kind(), namespace = review.namespace(),
                    name = review.name(), %error, "mutation failed; denying");
                let mut decision =
                    Decision::deny(format!("palisade could not mutate this object: {error}"));
                decision.code = 500;
                decision
            }
        }
    }
}

impl Decider for Enforcer {
    fn decide(&self, endpoint: Endpoint, review: &Review) -> Decision {
        if self.is_exempt(review) {
            return Decision::allow();
        }
        if endpoint == Endpoint::Mutate {
            return self.mutate(review);
        }
        let violations = self.policies.current().evaluate(review);
        for v in &violations {
            self.metrics.violation(&v.constraint, v.action);
            if v.action == Action::Dryrun {
                tracing::info!(
                    uid = review.uid(),
                    kind = review.kind(),
                    namespace = review.namespace(),
                    name = review.name(),
                    constraint = %v.constraint,
                    message = %v.message,
                    "dryrun violation (not enforced)"
                );
            }
        }
        decision_from(&violations)
    }
}

/// Deny violations deny (403, one `[constraint] message` line each), warn violations become
/// warnings, dryrun violations are not shown to the user.
pub fn decision_from(violations: &[Violation]) -> Decision {
    let line = |v: &Violation| format!("[{}] {}", v.constraint, v.message);
    let denials: Vec<String> = violations
        .iter()
        .filter(|v| v.action == Action::Deny)
        .map(line)
        .collect();
    let mut decision = if denials.is_empty() {
        Decision::allow()
    } else {
        Decision::deny(denials.join("\n"))
    };
    decision.warnings = violations
        .iter()
        .filter(|v| v.action == Action::Warn)
        .map(line)
        .collect();
    decision
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
        }
    }

    #[test]
    fn deny_warn_and_dryrun() {
        let d = decision_from(&[
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
        let d = decision_from(&[v("b", Action::Warn, "two"), v("c", Action::Dryrun, "x")]);
        assert!(d.allowed);
        assert_eq!(d.warnings, ["[b] two"]);
        assert!(
            decision_from(&[v("c", Action::Dryrun, "x")])
                .warnings
                .is_empty()
        );
    }
}
