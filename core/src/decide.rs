//! The one decision path. The webhook, `palisade test`, `palisade verify` and the audit all call
//! [`Decider::decide`], so exemptions, enforcement actions, messages and the fail-closed rules
//! cannot drift between them. Where they differ on purpose (gator has no exempt namespaces),
//! that is a setting of the [`Decider`], not a second path.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use crate::admission::{Endpoint, Operation, Response, Review};
use crate::breakglass::{self, Verdict};
use crate::bundle::{Bundle, Process};
use crate::config::Config;
use crate::inventory::Inventory;
use crate::policy::{Action, OutOfTime, Point, Violation};

/// Audit annotation of a review's dryrun violations. The API server prefixes it with the
/// webhook's name: `validate.palisade.dev/dryrun-violations`.
pub const DRYRUN_ANNOTATION: &str = "dryrun-violations";
/// Largest value of the dryrun audit annotation, in bytes; violations past it are counted.
const DRYRUN_ANNOTATION_BYTES: usize = 4096;

/// How reviews are decided, apart from the bundle and the inventory of the moment: the exempt
/// namespaces and the configuration file (enforcement modes, break-glass).
#[derive(Debug, Clone, Default)]
pub struct Decider {
    /// Matched against the namespace name the API server sets (a Namespace's own name), never
    /// against a label a tenant could write.
    exempt_namespaces: Vec<String>,
    /// Where break-glass never applies.
    own_namespace: String,
    config: Arc<Config>,
    /// What break-glass grants are made and checked with.
    grant_keys: Arc<breakglass::GrantKeys>,
    /// The enforcement point whose actions apply (scoped constraints): the webhook by default.
    point: Point,
    /// Mutate an object before expanding it into resultants (gator does; the webhook is sent
    /// objects the mutating webhook has already changed).
    mutate_before_expansion: bool,
    /// What the leader's sync has confirmed the API server judges (shared by every decider the
    /// configuration file's reloads make).
    handed_off: Arc<HandedOff>,
}

/// The constraints (kind, name) whose generated ValidatingAdmissionPolicy and bindings the
/// leader's sync last confirmed in place. With `validatingAdmissionPolicies.sync` on, the webhook
/// stops judging a constraint placed on the API server alone only once it is here: until then
/// both judge it, never neither. On a replica that does not lead it stays empty.
#[derive(Debug, Default)]
pub struct HandedOff(arc_swap::ArcSwap<BTreeSet<(String, String)>>);

impl HandedOff {
    /// Replaces what is confirmed.
    pub fn set(&self, confirmed: BTreeSet<(String, String)>) {
        self.0.store(Arc::new(confirmed));
    }

    /// What is confirmed.
    pub fn get(&self) -> Arc<BTreeSet<(String, String)>> {
        self.0.load_full()
    }
}

/// A decision and what it was made from.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The answer to send.
    pub response: Response,
    /// Every violation found, of every action, after the namespace's enforcement cap (dryrun
    /// ones are not shown to the user).
    pub violations: Vec<Violation>,
    /// The namespace is exempt: nothing was evaluated.
    pub exempt: bool,
    /// What the break-glass annotations did.
    pub break_glass: Verdict,
}

impl Decider {
    /// Exempts the namespaces named (exact names).
    pub fn new(exempt_namespaces: Vec<String>) -> Self {
        let mut exempt_namespaces = exempt_namespaces;
        exempt_namespaces.retain(|n| !n.is_empty());
        Self {
            exempt_namespaces,
            ..Self::default()
        }
    }

    /// Palisade's own namespace, where break-glass never applies (it is also exempt).
    pub fn with_own_namespace(mut self, namespace: &str) -> Self {
        namespace.clone_into(&mut self.own_namespace);
        self
    }

    /// Break-glass grants are made and checked with `keys` (the serving key's, in `serve`).
    pub fn with_grant_keys(mut self, keys: Arc<breakglass::GrantKeys>) -> Self {
        self.grant_keys = keys;
        self
    }

    /// Where the leader's sync says what the API server has been confirmed to judge.
    pub fn with_handed_off(mut self, handed_off: Arc<HandedOff>) -> Self {
        self.handed_off = handed_off;
        self
    }

    /// What the leader's sync has confirmed the API server judges.
    pub fn handed_off(&self) -> Arc<HandedOff> {
        self.handed_off.clone()
    }

    /// The same decider under another configuration file.
    pub fn with_config(&self, config: Arc<Config>) -> Self {
        Self {
            config,
            ..self.clone()
        }
    }

    /// The same decider without the enforcement caps of the rollout: the audit reports what each
    /// constraint says, so that a dryrun rollout shows what enforcing would deny.
    pub fn uncapped(&self) -> Self {
        let mut config = (*self.config).clone();
        config.enforcement = Action::Deny;
        config.namespaces.clear();
        self.with_config(Arc::new(config))
    }

    /// The configuration file it decides under.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The same decider at another enforcement point: the audit's, or gator's for the CLI.
    pub fn at_point(&self, point: Point) -> Self {
        Self {
            point,
            ..self.clone()
        }
    }

    /// No namespace is exempt, and scoped constraints take gator's actions: the CLI's decider.
    pub fn without_exemptions() -> Self {
        Self::default().at_point(Point::Gator)
    }

    /// Objects are mutated (by the mutators for `Original` objects) before they are expanded,
    /// as the API server's mutating webhook would have done before validation: for objects
    /// read from files, as `gator test` and `gator expand` do.
    pub fn mutating_before_expansion(mut self) -> Self {
        self.mutate_before_expansion = true;
        self
    }

    /// Whether the object's namespace (a Namespace's own name, for a Namespace) is one of the
    /// exempt namespaces. Cluster-scoped objects never are.
    pub fn is_exempt(&self, review: &Review) -> bool {
        let ns = review.object_ref().effective_namespace();
        !ns.is_empty() && self.exempt_namespaces.iter().any(|e| e == ns)
    }

    /// Whether the bundle's Gatekeeper `Config` (`spec.match`) takes the object's namespace out
    /// of what this decision is: the validating webhook, the mutating webhook or the audit.
    /// gator ignores a Config's match, and so do `palisade test` and `verify`.
    fn excluded_by_config(&self, bundle: &Bundle, endpoint: Endpoint, review: &Review) -> bool {
        let process = match (endpoint, self.point) {
            (_, Point::Gator) => return false,
            (Endpoint::Mutate, _) => Process::Mutation,
            (Endpoint::Validate, Point::Audit) => Process::Audit,
            (Endpoint::Validate, Point::Validation) => Process::Webhook,
        };
        bundle.excludes(process, review.object_ref().effective_namespace())
    }

    /// Decides one review with `bundle` against `inventory`, at the time `now` (what a
    /// break-glass request's expiry and a grant's stamp are measured against). With a
    /// `deadline`, templates stop when it passes and the result is [`OutOfTime`]; without, each
    /// template has its `--eval-timeout`.
    pub fn decide(
        &self,
        bundle: &Bundle,
        inventory: &Inventory,
        endpoint: Endpoint,
        review: &Review,
        now: time::OffsetDateTime,
        deadline: Option<Instant>,
    ) -> Result<Decision, OutOfTime> {
        if self.is_exempt(review) || self.excluded_by_config(bundle, endpoint, review) {
            return Ok(Decision {
                response: Response::allow(),
                violations: Vec::new(),
                exempt: true,
                break_glass: Verdict::Absent,
            });
        }
        let mode = self.config.mode(review.object_ref().effective_namespace());
        let glass = breakglass::judge(
            &self.config.break_glass,
            &self.own_namespace,
            &self.grant_keys,
            review,
            now,
        );
        let namespace = namespace_object(review, inventory);
        let (response, violations) = match endpoint {
            Endpoint::Mutate => {
                let response = match &glass {
                    // An emergency pod runs as written, with the grant that seals what its
                    // approver approved: stamped where mutation is turned off too, since it
                    // changes nothing the object does, and the pods a controller makes of it
                    // are honoured only with it.
                    Verdict::Honoured(used) => {
                        let mut response = Response::allow();
                        response
                            .audit_annotations
                            .insert("break-glass-user".into(), used.user.clone());
                        if let Some((at, grant)) = &used.stamp {
                            response.patch = Some(stamp_patch(review.object(), at, grant));
                        }
                        response
                    }
                    // Mutation is safe, so it follows the modes only where it is turned off.
                    _ if !mode.mutation => Response::allow(),
                    _ => mutate(bundle, review, namespace),
                };
                (response, Vec::new())
            }
            Endpoint::Validate => {
                if let Verdict::Refused(_, why) = &glass {
                    return Ok(Decision {
                        response: Response::deny(why.clone()),
                        violations: Vec::new(),
                        exempt: false,
                        break_glass: glass,
                    });
                }
                // What the API server judges alone (generated ValidatingAdmissionPolicies) is
                // not judged again here; the audit and the CLI still judge it. When the leader
                // keeps the policies in the cluster, only once it has confirmed them there.
                let skip = match self.point {
                    Point::Validation => {
                        let alone = crate::policy::vap::api_server_only(bundle, &self.config);
                        if self.config.validating_admission_policies.sync && !alone.is_empty() {
                            let confirmed = self.handed_off.get();
                            alone.intersection(&confirmed).cloned().collect()
                        } else {
                            alone
                        }
                    }
                    Point::Audit | Point::Gator => BTreeSet::new(),
                };
                let mut violations = bundle
                    .policies()
                    .evaluate_except(self.point, review, namespace, inventory, deadline, &skip)?;
                if !bundle.expansions().is_empty() {
                    violations.extend(crate::expansion::judge(
                        bundle.expansions(),
                        bundle.policies(),
                        bundle.mutators(),
                        self.point,
                        review,
                        namespace,
                        inventory,
                        deadline,
                        self.mutate_before_expansion,
                    )?);
                }
                for v in &mut violations {
                    v.action = v.action.capped(mode.enforcement);
                }
                let mut response = response_from(&violations);
                annotate_dryruns(&mut response, &violations);
                apply_break_glass(&mut response, &violations, &glass);
                (response, violations)
            }
        };
        Ok(Decision {
            response,
            violations,
            exempt: false,
            break_glass: glass,
        })
    }
}

/// The JSON patch that puts `grant` into the annotations at `at` (a JSON pointer), unless it is
/// there already.
fn stamp_patch(object: &Value, at: &str, grant: &str) -> json_patch::Patch {
    let mut stamped = object.clone();
    if let Some(annotations) = stamped.pointer_mut(at).and_then(Value::as_object_mut) {
        annotations.insert(breakglass::GRANT.to_owned(), Value::from(grant));
    }
    crate::mutation::patch::diff(object, &stamped)
}

/// Records the dryrun violations in the audit annotation, within its size bound.
fn annotate_dryruns(response: &mut Response, violations: &[Violation]) {
    let dryruns: Vec<&Violation> = violations
        .iter()
        .filter(|v| v.action == Action::Dryrun)
        .collect();
    if dryruns.is_empty() {
        return;
    }
    let mut entries = Vec::new();
    let mut size = 2;
    for v in &dryruns {
        let entry = serde_json::json!({
            "constraint": format!("{}/{}", v.constraint_kind, v.constraint),
            "message": v.message,
        });
        let len = entry.to_string().len() + 1;
        // Leave room for the count of what is left out.
        if size + len > DRYRUN_ANNOTATION_BYTES - 32 {
            break;
        }
        size += len;
        entries.push(entry);
    }
    let omitted = dryruns.len() - entries.len();
    if omitted > 0 {
        entries.push(serde_json::json!({ "omitted": omitted }));
    }
    response
        .audit_annotations
        .insert(DRYRUN_ANNOTATION.into(), Value::Array(entries).to_string());
}

/// An honoured break-glass admits despite the deny violations, with a warning and audit
/// annotations; an ignored one says why in the answer.
fn apply_break_glass(response: &mut Response, violations: &[Violation], glass: &Verdict) {
    match glass {
        Verdict::Honoured(used) => {
            let bypassed = bypassed_constraints(violations);
            response.allowed = true;
            response.code = 200;
            response.message.clear();
            response.warnings.insert(
                0,
                format!(
                    "break-glass by {}{}{}: {} (reason: {}; expires {})",
                    used.approver,
                    used.owner
                        .as_ref()
                        .map(|o| format!(" for {o}"))
                        .unwrap_or_default(),
                    if used.user == used.approver {
                        String::new()
                    } else {
                        format!(", requested by {}", used.user)
                    },
                    if bypassed.is_empty() {
                        "no constraint was bypassed".to_owned()
                    } else {
                        format!("admitted despite {}", bypassed.join(", "))
                    },
                    used.reason,
                    used.expires
                ),
            );
            let notes = &mut response.audit_annotations;
            notes.insert("break-glass-user".into(), used.user.clone());
            notes.insert("break-glass-approver".into(), used.approver.clone());
            notes.insert("break-glass-reason".into(), used.reason.clone());
            notes.insert("break-glass-expires".into(), used.expires.clone());
            notes.insert("break-glass-constraints".into(), bypassed.join(","));
            if let Some(owner) = &used.owner {
                notes.insert("break-glass-owner".into(), owner.clone());
            }
        }
        Verdict::Ignored(why) => {
            let note = format!("{} ignored: {why}", breakglass::REASON);
            if !response.allowed {
                response.message.push_str(&format!("\n({note})"));
            }
            response.warnings.push(note);
        }
        Verdict::Absent | Verdict::Refused(..) => {}
    }
}

/// The deny violations' constraints, once each, as `Kind/name`.
pub fn bypassed_constraints(violations: &[Violation]) -> Vec<String> {
    let mut names: Vec<String> = violations
        .iter()
        .filter(|v| v.action == Action::Deny)
        .map(|v| format!("{}/{}", v.constraint_kind, v.constraint))
        .collect();
    names.dedup();
    names
}

/// The Namespace of the object: the review's `namespaceObject`, else the inventory's.
pub fn namespace_object<'a>(review: &'a Review, inventory: &'a Inventory) -> Option<&'a Value> {
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
    // A running Pod's spec cannot change (the API server would refuse the update the mutators'
    // patch makes); its update is sent here only for break-glass grants. The ephemeral
    // containers subresource is the exception.
    let object = review.object_ref();
    if object.group.is_empty()
        && object.kind == "Pod"
        && review.operation() == Some(Operation::Update)
        && review.sub_resource().is_empty()
    {
        return Response::allow();
    }
    match bundle.mutators().mutate(review, namespace) {
        Ok(mutated) => {
            let mut response = Response::allow();
            response.patch = mutated.map(|object| {
                let mut patch = crate::mutation::patch::diff(review.object(), &object);
                // Through `pods/ephemeralcontainers` only the ephemeral containers may change
                // (the API server drops the rest): the patch says what takes effect.
                if review.sub_resource() == "ephemeralcontainers" {
                    patch.0.retain(|op| {
                        let path = op.path().to_string();
                        path == "/spec/ephemeralContainers"
                            || path.starts_with("/spec/ephemeralContainers/")
                    });
                }
                patch
            });
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
