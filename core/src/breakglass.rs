//! Break-glass: the way out of an emergency without turning Palisade off, and without a way in
//! for anyone else.
//!
//! An object annotated with `palisade.dev/break-glass: <reason>` and
//! `palisade.dev/break-glass-expires: <RFC 3339 time>` is admitted despite deny violations, and
//! not mutated, only when an allow-listed person (empty by default) approved exactly what it
//! holds, the reason has a visible character, the expiry is in the future and within
//! `breakGlass.maxTTL`, and the object is not one that Palisade's own safety depends on.
//!
//! - A requester who is not on the allow-list may neither add nor change the annotations, on an
//!   object or on a workload's pod template. The exception are the controllers that copy a
//!   workload's template into the objects they create (the ReplicaSet controller makes pods
//!   from a ReplicaSet).
//! - An allow-listed person's request is the approval: /mutate seals it into a grant
//!   ([`grant`]) over the pod spec (or, for other kinds, the object), the approver, the reason
//!   and the expiry. Anyone else's request, a controller's included, is honoured only while
//!   that grant still verifies against what the request holds. An update by anyone else that
//!   keeps the annotations but changes what was approved is refused.
//! - Objects Palisade's safety depends on are refused break-glass, judged from the old object
//!   as well as the new one, so dropping the label that marks a generated policy in the same
//!   request does not help.
//!
//! Keys are compared exactly: a key in another case, with a look-alike character, or anywhere but
//! the object's (or its pod template's) `metadata.annotations` is not a break-glass annotation.
//!
//! [`judge`] gives the [`Verdict`] of one review; the allow-list and the longest expiry are
//! [`crate::config::BreakGlass`].

pub mod grant;

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::admission::{Operation, Review};
use crate::config::BreakGlass;
use crate::podpaths::{self, PodPath};
pub use grant::{GRANT, GrantKeys};

/// The annotation that asks for break-glass; its value is the reason, shown to the user and
/// audited.
pub const REASON: &str = "palisade.dev/break-glass";
/// The annotation that bounds a break-glass request: an RFC 3339 time, in the future and within
/// `breakGlass.maxTTL`.
pub const EXPIRES: &str = "palisade.dev/break-glass-expires";

/// What break-glass means for one review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No break-glass annotation (or a bare object, which has no requester).
    Absent,
    /// Honoured: deny violations are bypassed and the object is not mutated.
    Honoured(Use),
    /// Present but not honoured; the object is judged normally. Why, for the user.
    Ignored(String),
    /// The request is denied: what kind of refusal (for the metric) and why.
    Refused(Refusal, String),
}

/// Why a request with break-glass annotations is denied outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// A requester not on the allow-list added or changed the annotations.
    NotAllowed,
    /// A requester not on the allow-list changed what an allow-listed person approved and kept
    /// the annotations.
    ChangesApproved,
    /// The reason has no visible character.
    NoReason,
    /// The object is one Palisade's own safety depends on.
    Protected,
}

impl Refusal {
    /// The metric's label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotAllowed => "not-allowed",
            Refusal::ChangesApproved => "changes-approved",
            Refusal::NoReason => "no-reason",
            Refusal::Protected => "protected",
        }
    }
}

/// One honoured use, for the warning, the audit annotations, the log line and the metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Use {
    /// Who sent the request.
    pub user: String,
    /// The allow-listed person who approved it: the requester, or the one the grant names.
    pub approver: String,
    /// The reason given, trimmed of white space.
    pub reason: String,
    /// The expiry, as the annotation wrote it.
    pub expires: String,
    /// For a controller creating a workload's object: the owner, `ReplicaSet/web-5d8f`.
    pub owner: Option<String>,
    /// The grant /mutate stamps, when the requester is the approver: where (a JSON pointer to
    /// the annotations holding the reason) and its value.
    pub stamp: Option<(String, String)>,
}

/// The annotations at one place of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pair<'a> {
    reason: Option<&'a str>,
    expires: Option<&'a str>,
    grant: Option<&'a str>,
}

impl<'a> Pair<'a> {
    fn at(metadata: Option<&'a Value>) -> Self {
        let annotations = metadata.map(|m| &m["annotations"]);
        let get = |key| annotations.and_then(|a| a[key].as_str());
        Self {
            reason: get(REASON),
            expires: get(EXPIRES),
            grant: get(GRANT),
        }
    }

    fn is_empty(&self) -> bool {
        self.reason.is_none() && self.expires.is_none()
    }

    /// Whether these annotations are `other`'s as far as a requester off the allow-list may
    /// leave them: the same reason and expiry, and no grant added or changed (one removed is
    /// fine). A grant verifies itself, but one copied from another object of the same incident
    /// would carry that object's approval here.
    fn same_annotations(&self, other: &Self) -> bool {
        self.reason == other.reason
            && self.expires == other.expires
            && (self.grant.is_none() || self.grant == other.grant)
    }
}

fn pod_path(review: &Review) -> Option<&'static PodPath> {
    let object = review.object_ref();
    podpaths::of_kind(&object.group, &object.kind)
}

/// The pairs of `object`: its own metadata, then its pod template's (none for a Pod, whose own
/// metadata is its template's).
fn pairs<'v>(object: &'v Value, path: Option<&PodPath>) -> [Pair<'v>; 2] {
    let template_metadata = path
        .filter(|p| !p.template.is_empty())
        .and_then(|p| p.template_of(object))
        .map(|t| &t["metadata"]);
    [
        Pair::at(object.get("metadata")),
        Pair::at(template_metadata),
    ]
}

/// What an approval of `object` covers.
fn content(object: &Value, path: Option<&PodPath>) -> Value {
    grant::approved_content(object, path.and_then(|p| p.template_of(object)))
}

/// The workload that controls the object, as `Kind/name`, if any.
fn workload_owner(object: &Value) -> Option<String> {
    object["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|o| {
            o["controller"] == true
                && podpaths::is_owner(
                    o["apiVersion"].as_str().unwrap_or_default(),
                    o["kind"].as_str().unwrap_or_default(),
                )
        })
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or_default(),
                o["name"].as_str().unwrap_or_default()
            )
        })
}

/// The kinds, `group/Kind`, whose approval an object of this kind may carry: its own first (what
/// an approval of it is sealed as), then those whose controllers make it by copying their
/// template: a ReplicaSet from a Deployment's, a Job from a CronJob's, a pod from any
/// workload's. A tenant who moves a grant moves it only within these: a debug Pod's approval
/// makes no DaemonSet, a Deployment's no DaemonSet either.
fn approved_as(group: &str, kind: &str) -> Vec<String> {
    let own = format!("{group}/{kind}");
    match (group, kind) {
        ("", "Pod") => std::iter::once(own)
            .chain(
                podpaths::POD_PATHS
                    .iter()
                    .filter(|p| p.owner)
                    .map(|p| format!("{}/{}", p.group, p.kind)),
            )
            .collect(),
        ("apps", "ReplicaSet") => vec![own, "apps/Deployment".to_owned()],
        ("batch", "Job") => vec![own, "batch/CronJob".to_owned()],
        _ => vec![own],
    }
}

/// Why an object may never be admitted by break-glass, if it is such an object: judged from
/// the object and from the object it replaces.
fn protected(review: &Review, own_namespace: &str) -> Option<String> {
    let object = review.object_ref();
    let ns = object.effective_namespace();
    if !own_namespace.is_empty() && ns == own_namespace {
        return Some(format!(
            "objects in Palisade's own namespace {own_namespace} cannot be admitted by break-glass"
        ));
    }
    let group = object.group.as_str();
    let either = |test: &dyn Fn(&Value) -> bool| {
        test(review.object()) || (review.old_object().is_object() && test(review.old_object()))
    };
    let what = if group == "admissionregistration.k8s.io" {
        Some("webhook and admission configurations")
    } else if group == "gatekeeper.sh" || group.ends_with(".gatekeeper.sh") {
        Some("policies (templates, constraints, mutators, the Config)")
    } else if group == "apiextensions.k8s.io"
        && either(&|o| {
            o["spec"]["group"]
                .as_str()
                .is_some_and(|g| g.ends_with("gatekeeper.sh"))
        })
    {
        Some("the definitions of policy kinds")
    } else if object.kind == "NetworkPolicy"
        && group == "networking.k8s.io"
        && either(&|o| o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "palisade")
    {
        Some("the NetworkPolicies Palisade generates")
    } else if group == "rbac.authorization.k8s.io" && object.name.starts_with("palisade") {
        Some("Palisade's own permissions")
    } else {
        None
    };
    what.map(|w| {
        format!("{w} cannot be admitted by break-glass: Palisade's own safety depends on them")
    })
}

/// Whether a reason says anything a person can read: at least one character that is not
/// white space, a control character or a default-ignorable code point (zero-width spaces and
/// joiners, bidirectional marks, variation selectors, fillers, tags).
fn is_visible(reason: &str) -> bool {
    reason
        .chars()
        .any(|c| !c.is_whitespace() && !c.is_control() && !is_default_ignorable(c))
}

/// Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt), plus the Braille blank,
/// which renders as nothing.
fn is_default_ignorable(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x034F | 0x061C | 0x115F..=0x1160 | 0x17B4..=0x17B5 | 0x180B..=0x180F
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0x2800 | 0x3164
        | 0xFE00..=0xFE0F | 0xFEFF | 0xFFA0 | 0xFFF0..=0xFFF8 | 0x1BCA0..=0x1BCA3
        | 0x1D173..=0x1D17A | 0xE0000..=0xE0FFF)
}

fn who(user: &str) -> &str {
    if user.is_empty() {
        "this requester"
    } else {
        user
    }
}

/// Judges the break-glass annotations of one review at time `now`; grants are made and checked
/// with `keys`.
pub fn judge(
    config: &BreakGlass,
    own_namespace: &str,
    keys: &GrantKeys,
    review: &Review,
    now: OffsetDateTime,
) -> Verdict {
    // A bare object (CLI, audit) has no requester. A review always has one; one that names
    // nobody is an unknown requester, never an authorised one.
    let Some(operation) = review.operation() else {
        return Verdict::Absent;
    };
    if !matches!(operation, Operation::Create | Operation::Update) {
        return Verdict::Absent;
    }
    let user = review.user();
    let authorised = config.allows(user);
    let trusted = config.is_trusted_controller(user);
    let path = pod_path(review);
    let new = pairs(review.object(), path);
    let old = pairs(review.old_object(), path);

    // Adding or changing an annotation is the allow-list's alone. Removing one is always fine.
    // Trusted controllers copy templates, whose grants they cannot forge.
    let changed = new
        .iter()
        .zip(&old)
        .any(|(n, o)| !n.is_empty() && (operation == Operation::Create || !n.same_annotations(o)));
    if changed && !authorised && !trusted {
        return Verdict::Refused(
            Refusal::NotAllowed,
            format!(
                "{} may not add or change the {REASON} annotations: only the users and groups named in breakGlass.users and breakGlass.groups of Palisade's configuration may",
                who(&user.username)
            ),
        );
    }

    // The pod template's annotations first, when both carry them: they are the ones the
    // controllers copy into the pods, with their grant.
    let Some(index) = new.iter().rposition(|p| p.reason.is_some()) else {
        return if new.iter().any(|p| p.expires.is_some()) {
            Verdict::Ignored(format!("{EXPIRES} is set without {REASON}"))
        } else {
            Verdict::Absent
        };
    };
    let pair = &new[index];
    if let Some(why) = protected(review, own_namespace) {
        return Verdict::Refused(
            Refusal::Protected,
            format!("{why}; remove the {REASON} annotations"),
        );
    }
    let raw_reason = pair.reason.unwrap_or_default();
    if !is_visible(raw_reason) {
        return Verdict::Refused(
            Refusal::NoReason,
            format!(
                "{REASON} gives no reason anyone can read (only white space or invisible characters): write what the emergency is, such as an incident number"
            ),
        );
    }
    let reason = raw_reason.trim();
    let max = config.max_ttl;
    let Some(expires_text) = pair.expires else {
        return Verdict::Ignored(format!(
            "{EXPIRES} is missing: set an RFC 3339 time at most {} ahead",
            humantime::format_duration(max)
        ));
    };
    let Ok(expires) = OffsetDateTime::parse(expires_text, &Rfc3339) else {
        return Verdict::Ignored(format!(
            "{EXPIRES} {expires_text:?} is not an RFC 3339 time such as 2026-01-02T15:04:05Z"
        ));
    };
    if expires <= now {
        return Verdict::Ignored(format!("it expired at {expires_text}"));
    }
    // A maxTTL beyond the calendar (`10000y`) is no limit, not a panic.
    let limit = time::Duration::try_from(max)
        .ok()
        .and_then(|max| now.checked_add(max));
    if limit.is_some_and(|limit| expires > limit) {
        return Verdict::Ignored(format!(
            "{EXPIRES} {expires_text} is further ahead than breakGlass.maxTTL ({})",
            humantime::format_duration(max)
        ));
    }

    let namespace = review.object_ref().effective_namespace();
    let approved = content(review.object(), path);
    let kinds = approved_as(&review.object_ref().group, &review.object_ref().kind);
    fn sealed<'a>(
        kind: &'a str,
        namespace: &'a str,
        approver: &'a str,
        reason: &'a str,
        expires: &'a str,
        content: &'a Value,
    ) -> grant::Sealed<'a> {
        grant::Sealed {
            kind,
            namespace,
            approver,
            reason,
            expires,
            content,
        }
    }
    let sealed = |kind, approver| {
        sealed(
            kind,
            namespace,
            approver,
            raw_reason,
            expires_text,
            &approved,
        )
    };
    let honoured = |approver: String, stamp: Option<(String, String)>| {
        Verdict::Honoured(Use {
            user: user.username.clone(),
            approver,
            reason: reason.to_owned(),
            expires: expires_text.to_owned(),
            owner: if authorised {
                None
            } else {
                workload_owner(review.object())
            },
            stamp,
        })
    };
    if authorised {
        // The request is the approval; /mutate seals it for whoever comes next.
        let stamp = keys.grant(&sealed(&kinds[0], &user.username)).map(|g| {
            let at = if index == 0 {
                "/metadata/annotations".to_owned()
            } else {
                let mut at: String = path
                    .map(|p| p.template.iter().map(|k| format!("/{k}")).collect())
                    .unwrap_or_default();
                at.push_str("/metadata/annotations");
                at
            };
            (at, g)
        });
        return honoured(user.username.clone(), stamp);
    }
    let checked = match pair.grant {
        None => Err(grant::Invalid::Missing),
        Some(g) => kinds
            .iter()
            .map(|kind| keys.verify(g, &sealed(kind, "")))
            .reduce(|first, next| first.or(next))
            .unwrap_or(Err(grant::Invalid::Missing)),
    };
    match checked {
        Ok(approver) => honoured(approver, None),
        Err(invalid) if trusted => Verdict::Ignored(format!(
            "{} is a trusted controller, but {invalid}",
            user.username
        )),
        Err(invalid) => {
            let old_path = path;
            let had = old.iter().any(|p| p.reason.is_some());
            if operation == Operation::Update
                && had
                && content(review.old_object(), old_path) != approved
            {
                Verdict::Refused(
                    Refusal::ChangesApproved,
                    format!(
                        "{} may not change what was approved under break-glass and keep the {REASON} annotations ({invalid}): remove the annotations to have the change judged by the policies, or ask someone on the break-glass allow-list to apply it",
                        who(&user.username)
                    ),
                )
            } else {
                Verdict::Ignored(format!(
                    "{} is not on the break-glass allow-list (breakGlass.users, breakGlass.groups), and {invalid}",
                    who(&user.username)
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: &str = "2026-11-22T12:00:00Z";

    fn keys() -> std::sync::Arc<GrantKeys> {
        GrantKeys::from_secret(b"test serving key")
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::parse(NOW, &Rfc3339).unwrap()
    }

    fn config() -> BreakGlass {
        BreakGlass {
            users: vec!["alice".into()],
            groups: vec!["sre".into()],
            ..BreakGlass::default()
        }
    }

    fn annotated(reason: &str, expires: &str) -> Value {
        json!({REASON: reason, EXPIRES: expires})
    }

    fn pod(annotations: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "debug", "namespace": "shop", "annotations": annotations},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    }

    fn review(op: &str, object: Value, old: Value, user: &str, groups: &[&str]) -> Review {
        let (group, version) =
            crate::object::split_api_version(object["apiVersion"].as_str().unwrap());
        Review::from_request_json(json!({
            "uid": "u", "operation": op,
            "kind": {"group": group, "version": version, "kind": object["kind"]},
            "namespace": object["metadata"]["namespace"], "name": object["metadata"]["name"],
            "userInfo": {"username": user, "groups": groups},
            "object": object, "oldObject": old,
        }))
        .unwrap()
    }

    fn judge_create(object: Value, user: &str) -> Verdict {
        judge(
            &config(),
            "palisade-system",
            &keys(),
            &review("CREATE", object, Value::Null, user, &[]),
            now(),
        )
    }

    #[test]
    fn an_authorised_user_with_a_reason_and_a_near_expiry_is_honoured() {
        let v = judge_create(
            pod(annotated("INC-42 debugging", "2026-11-22T16:00:00Z")),
            "alice",
        );
        let Verdict::Honoured(used) = v else {
            panic!("{v:?}")
        };
        let (at, grant) = used.stamp.clone().expect("a grant to stamp");
        assert_eq!(
            used,
            Use {
                user: "alice".into(),
                approver: "alice".into(),
                reason: "INC-42 debugging".into(),
                expires: "2026-11-22T16:00:00Z".into(),
                owner: None,
                stamp: Some((at.clone(), grant.clone())),
            }
        );
        assert_eq!(at, "/metadata/annotations");
        assert!(grant.starts_with("v1.YWxpY2U."), "{grant}");
        let by_group = judge(
            &config(),
            "",
            &keys(),
            &review(
                "CREATE",
                pod(annotated("x", "2026-11-22T13:00:00+01:00")),
                Value::Null,
                "bob",
                &["sre"],
            ),
            now(),
        );
        assert!(
            matches!(by_group, Verdict::Ignored(ref w) if w.contains("expired")),
            "{by_group:?}"
        );
        let by_group = judge(
            &config(),
            "",
            &keys(),
            &review(
                "CREATE",
                pod(annotated("x", "2026-11-22T14:00:00+01:00")),
                Value::Null,
                "bob",
                &["sre"],
            ),
            now(),
        );
        assert!(
            matches!(by_group, Verdict::Honoured(_)),
            "offsets are RFC 3339 too: {by_group:?}"
        );
    }

    #[test]
    fn nobody_is_authorised_by_default() {
        let v = judge(
            &BreakGlass::default(),
            "",
            &keys(),
            &review(
                "CREATE",
                pod(annotated("x", "2026-11-22T13:00:00Z")),
                Value::Null,
                "admin",
                &["system:masters"],
            ),
            now(),
        );
        assert!(
            matches!(v, Verdict::Refused(_, ref m) if m.contains("breakGlass.users")),
            "{v:?}"
        );
    }

    #[test]
    fn an_unauthorised_user_may_not_add_or_change_the_annotations() {
        let v = judge_create(pod(annotated("x", "2026-11-22T13:00:00Z")), "mallory");
        assert!(
            matches!(v, Verdict::Refused(_, ref m) if m.starts_with("mallory may not add")),
            "{v:?}"
        );
        // Adding the annotation to an existing object.
        let v = judge(
            &config(),
            "",
            &keys(),
            &review(
                "UPDATE",
                pod(annotated("x", "2026-11-22T13:00:00Z")),
                pod(json!({})),
                "mallory",
                &[],
            ),
            now(),
        );
        assert!(matches!(v, Verdict::Refused(..)), "{v:?}");
        // Changing the expiry of an authorised one.
        let v = judge(
            &config(),
            "",
            &keys(),
            &review(
                "UPDATE",
                pod(annotated("x", "2026-11-22T18:00:00Z")),
                pod(annotated("x", "2026-11-22T13:00:00Z")),
                "mallory",
                &[],
            ),
            now(),
        );
        assert!(matches!(v, Verdict::Refused(..)), "{v:?}");
        // Leaving an authorised annotation as it is: judged normally, not refused.
        let same = pod(annotated("x", "2026-11-22T13:00:00Z"));
        let v = judge(
            &config(),
            "",
            &keys(),
            &review("UPDATE", same.clone(), same, "mallory", &[]),
            now(),
        );
        assert!(
            matches!(v, Verdict::Ignored(ref m) if m.contains("not on the break-glass allow-list")),
            "{v:?}"
        );
        // Removing it is always allowed.
        let v = judge(
            &config(),
            "",
            &keys(),
            &review(
                "UPDATE",
                pod(json!({})),
                pod(annotated("x", "2026-11-22T13:00:00Z")),
                "mallory",
                &[],
            ),
            now(),
        );
        assert_eq!(v, Verdict::Absent);
    }

    fn deployment(template_annotations: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"template": {"metadata": {"annotations": template_annotations},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
    }

    #[test]
    fn annotations_on_the_workload_and_its_template_seal_the_template() {
        // Both carry break-glass: the grant goes where the pods copy it from.
        let mut both = deployment(annotated("INC-7", "2026-11-22T13:00:00Z"));
        both["metadata"]["annotations"] = annotated("INC-7 object", "2026-11-22T13:30:00Z");
        let v = judge_create(both.clone(), "alice");
        assert!(
            matches!(v, Verdict::Honoured(Use { ref stamp, ref reason, .. })
                if reason == "INC-7" && stamp.as_ref().is_some_and(|(at, _)| at == "/spec/template/metadata/annotations")),
            "{v:?}"
        );
        // And a controller's pod of it is honoured.
        let approved = stamped(both, "alice");
        let template = &approved["spec"]["template"];
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": template["metadata"].clone(), "spec": template["spec"].clone()});
        pod["metadata"]["namespace"] = json!("shop");
        assert!(matches!(
            judge_create(
                pod,
                "system:serviceaccount:kube-system:replicaset-controller"
            ),
            Verdict::Honoured(_)
        ));
    }

    #[test]
    fn a_workloads_pod_template_is_judged_with_the_workload() {
        let annotations = annotated("INC-7", "2026-11-22T13:00:00Z");
        assert!(matches!(
            judge_create(deployment(annotations.clone()), "alice"),
            Verdict::Honoured(_)
        ));
        let v = judge(
            &config(),
            "",
            &keys(),
            &review(
                "UPDATE",
                deployment(annotations.clone()),
                deployment(json!({})),
                "mallory",
                &[],
            ),
            now(),
        );
        assert!(matches!(v, Verdict::Refused(..)), "{v:?}");
        let cron = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c", "namespace": "shop"},
            "spec": {"jobTemplate": {"spec": {"template": {"metadata": {"annotations": annotations}}}}}});
        assert!(matches!(
            judge_create(cron, "mallory"),
            Verdict::Refused(..)
        ));
    }

    #[test]
    fn pods_of_a_workload_are_honoured_only_with_the_grant_of_what_was_approved() {
        let controller = "system:serviceaccount:kube-system:replicaset-controller";
        let annotations = annotated("INC-7", "2026-11-22T13:00:00Z");
        // alice applies a Deployment; /mutate stamps the grant into its pod template.
        let approved = stamped(deployment(annotations.clone()), "alice");
        let template = &approved["spec"]["template"];
        assert!(template["metadata"]["annotations"][GRANT].is_string());
        // The ReplicaSet controller makes a pod of the template, as Kubernetes does: the
        // template's metadata and spec, an owner, the service account token volume.
        let mut owned = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": template["metadata"].clone(), "spec": template["spec"].clone()});
        owned["metadata"]["name"] = json!("web-5d8f-x1");
        owned["metadata"]["namespace"] = json!("shop");
        owned["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d8f", "uid": "1", "controller": true}]);
        owned["spec"]["volumes"] = json!([{"name": "kube-api-access-abcde", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}]);
        owned["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "kube-api-access-abcde", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}]);
        let v = judge_create(owned.clone(), controller);
        assert!(
            matches!(v, Verdict::Honoured(Use { ref owner, ref approver, ref stamp, .. })
                if owner.as_deref() == Some("ReplicaSet/web-5d8f") && approver == "alice" && stamp.is_none()),
            "{v:?}"
        );
        // Not from a controller identity: the requester is judged as a person.
        assert!(matches!(
            judge_create(owned.clone(), "mallory"),
            Verdict::Refused(Refusal::NotAllowed, _)
        ));
        // A pod that is not what was approved: the grant does not hold, judged normally.
        for (path, value) in [
            (
                "/spec/containers/0/securityContext",
                json!({"privileged": true}),
            ),
            ("/spec/containers/0/image", json!("evil")),
            ("/spec/hostPID", json!(true)),
            ("/metadata/namespace", json!("prod")),
            (
                "/metadata/annotations/palisade.dev~1break-glass",
                json!("INC-8"),
            ),
        ] {
            let mut other = owned.clone();
            match other.pointer_mut(path) {
                Some(slot) => *slot = value,
                None => other["spec"][path.rsplit('/').next().unwrap()] = value,
            }
            let v = judge_create(other, controller);
            assert!(
                matches!(v, Verdict::Ignored(ref w) if w.contains("does not match")),
                "{path}: {v:?}"
            );
        }
        // No grant at all (annotations written before grants, or copied by hand).
        let mut bare = owned.clone();
        bare["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove(GRANT);
        assert!(
            matches!(judge_create(bare, controller), Verdict::Ignored(ref w) if w.contains("no break-glass grant"))
        );
        // The expiry still holds for the pods.
        let mut late = owned;
        late["metadata"]["annotations"][EXPIRES] = json!("2026-11-22T11:00:00Z");
        assert!(
            matches!(judge_create(late, controller), Verdict::Ignored(ref w) if w.contains("expired"))
        );
    }

    /// The object as /mutate leaves it for `user`: with the grant, when break-glass is honoured.
    fn stamped(mut object: Value, user: &str) -> Value {
        if let Verdict::Honoured(Use {
            stamp: Some((at, grant)),
            ..
        }) = judge_create(object.clone(), user)
        {
            object.pointer_mut(&at).unwrap()[GRANT] = json!(grant);
        }
        object
    }

    fn judge_update(new: Value, old: Value, user: &str) -> Verdict {
        judge(
            &config(),
            "",
            &keys(),
            &review("UPDATE", new, old, user, &[]),
            now(),
        )
    }

    #[test]
    fn an_update_by_anyone_else_keeps_the_approval_only_for_what_was_approved() {
        let annotations = annotated("INC-7", "2026-11-22T13:00:00Z");
        let approved = stamped(deployment(annotations), "alice");
        // Scaling keeps the pod spec: still what alice approved.
        let mut scaled = approved.clone();
        scaled["spec"]["replicas"] = json!(5);
        let v = judge_update(scaled, approved.clone(), "mallory");
        assert!(
            matches!(v, Verdict::Honoured(Use { ref approver, ref user, .. }) if approver == "alice" && user == "mallory"),
            "{v:?}"
        );
        // Another image or securityContext with the annotations byte for byte: refused.
        for (path, value) in [
            (
                "/spec/template/spec/containers/0/image",
                json!("nginx:evil"),
            ),
            (
                "/spec/template/spec/containers/0/securityContext",
                json!({"privileged": true}),
            ),
            (
                "/spec/template/spec/volumes",
                json!([{"name": "root", "hostPath": {"path": "/"}}]),
            ),
        ] {
            let mut changed = approved.clone();
            match changed.pointer_mut(path) {
                Some(slot) => *slot = value,
                None => changed["spec"]["template"]["spec"]["volumes"] = value,
            }
            let v = judge_update(changed.clone(), approved.clone(), "mallory");
            assert!(
                matches!(v, Verdict::Refused(Refusal::ChangesApproved, ref m) if m.starts_with("mallory may not change what was approved")),
                "{path}: {v:?}"
            );
            // A trusted controller's update of the same is not honoured either.
            let v = judge_update(
                changed.clone(),
                approved.clone(),
                "system:serviceaccount:kube-system:deployment-controller",
            );
            assert!(matches!(v, Verdict::Ignored(_)), "{v:?}");
            // alice may change it: her request is a new approval, with a new grant.
            let v = judge_update(changed, approved.clone(), "alice");
            assert!(
                matches!(v, Verdict::Honoured(Use { stamp: Some(_), .. })),
                "{v:?}"
            );
        }
        // An annotation the Pod Security Standards judge is part of what was approved.
        let mut unconfined = approved.clone();
        unconfined["spec"]["template"]["metadata"]["annotations"]["container.apparmor.security.beta.kubernetes.io/c"] =
            json!("unconfined");
        assert!(matches!(
            judge_update(unconfined, approved.clone(), "mallory"),
            Verdict::Refused(Refusal::ChangesApproved, _)
        ));
        // Changing the spec and dropping the annotations: judged normally, no break-glass.
        let mut dropped = approved.clone();
        dropped["spec"]["template"]["metadata"]["annotations"] = json!({});
        dropped["spec"]["template"]["spec"]["containers"][0]["image"] = json!("x");
        assert_eq!(
            judge_update(dropped, approved.clone(), "mallory"),
            Verdict::Absent
        );
        // A grant someone else made elsewhere does not move with the annotations.
        let mut moved = approved.clone();
        moved["metadata"]["namespace"] = json!("prod");
        let mut old = moved.clone();
        old["spec"]["template"]["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove(GRANT);
        let v = judge_update(moved, old, "mallory");
        assert!(
            matches!(v, Verdict::Refused(Refusal::NotAllowed, _)),
            "adding a grant is changing the annotations: {v:?}"
        );
    }

    #[test]
    fn a_reason_must_have_a_visible_character() {
        for reason in [
            "",
            "   ",
            "\u{200B}",
            "\u{200B}\u{200C}\u{200D}\u{2060}\u{FEFF}",
            "\t\n\u{00A0}\u{3000}",
            "\u{E0041}\u{E0042}",
            "\u{2800}",
            "\u{115F}\u{3164}",
            "\u{202E}\u{200F}",
        ] {
            let v = judge_create(pod(annotated(reason, "2026-11-22T13:00:00Z")), "alice");
            assert!(
                matches!(v, Verdict::Refused(Refusal::NoReason, ref m) if m.contains("no reason anyone can read")),
                "{reason:?}: {v:?}"
            );
        }
        for reason in ["x", "\u{200B}INC-1", "é", "事故"] {
            assert!(is_visible(reason), "{reason:?}");
        }
    }

    #[test]
    fn expired_distant_reasonless_and_malformed_annotations_are_ignored() {
        let cases = [
            (annotated("x", "2026-11-22T11:59:59Z"), "expired"),
            (annotated("x", "2026-11-22T12:00:00Z"), "expired"),
            (
                annotated("x", "2026-11-23T12:00:01Z"),
                "further ahead than breakGlass.maxTTL (1day)",
            ),
            (annotated("x", "tomorrow"), "not an RFC 3339 time"),
            (json!({REASON: "x"}), "is missing"),
            (json!({EXPIRES: "2026-11-22T13:00:00Z"}), "without"),
        ];
        for (annotations, why) in cases {
            let v = judge_create(pod(annotations.clone()), "alice");
            assert!(
                matches!(v, Verdict::Ignored(ref w) if w.contains(why)),
                "{annotations}: {v:?}"
            );
        }
        assert!(matches!(
            judge_create(pod(annotated("x", "2026-11-23T12:00:00Z")), "alice"),
            Verdict::Honoured(_)
        ));
    }

    #[test]
    fn look_alike_keys_are_not_break_glass() {
        let expires = "2026-11-22T13:00:00Z";
        for key in [
            "Palisade.dev/break-glass",
            "palisade.dev/break\u{2010}glass",
            "palisade.dev/break-glass ",
            "palisade.dev/breakglass",
        ] {
            let v = judge_create(
                pod(json!({key: "x", "palisade.dev/break-glass-expires ": expires})),
                "alice",
            );
            assert_eq!(v, Verdict::Absent, "{key:?}");
        }
        // The key on a nested object, or in labels, is not the object's annotation.
        let mut nested = pod(json!({}));
        nested["spec"]["containers"][0]["annotations"] = annotated("x", expires);
        nested["metadata"]["labels"] = json!({"palisade.dev/break-glass": "x"});
        assert_eq!(judge_create(nested, "alice"), Verdict::Absent);
        // A Pod has no template: an annotation under spec.template is just data.
        let mut template = pod(json!({}));
        template["spec"]["template"] =
            json!({"metadata": {"annotations": annotated("x", expires)}});
        assert_eq!(judge_create(template, "alice"), Verdict::Absent);
    }

    #[test]
    fn palisades_own_namespace_and_safety_are_never_bypassed() {
        let annotations = annotated("x", "2026-11-22T13:00:00Z");
        let mut own = pod(annotations.clone());
        own["metadata"]["namespace"] = json!("palisade-system");
        assert!(
            matches!(judge_create(own, "alice"), Verdict::Refused(Refusal::Protected, ref w) if w.contains("own namespace palisade-system"))
        );
        let cases = [
            json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "palisade", "annotations": annotations}}),
            json!({"apiVersion": "constraints.gatekeeper.sh/v1beta1", "kind": "K8sRequiredLabels", "metadata": {"name": "x", "annotations": annotations}}),
            json!({"apiVersion": "templates.gatekeeper.sh/v1", "kind": "ConstraintTemplate", "metadata": {"name": "x", "annotations": annotations}}),
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "a.constraints.gatekeeper.sh", "annotations": annotations}, "spec": {"group": "constraints.gatekeeper.sh"}}),
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "default-deny-all", "namespace": "shop", "annotations": annotations, "labels": {"app.kubernetes.io/managed-by": "palisade"}}}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "palisade", "annotations": annotations}}),
        ];
        for object in cases {
            let v = judge_create(object.clone(), "alice");
            assert!(
                matches!(v, Verdict::Refused(Refusal::Protected, ref w) if w.contains("cannot be admitted by break-glass")),
                "{}: {v:?}",
                object["kind"]
            );
        }
        // Judged from the old object too: the same request may not drop the label that marks a
        // generated policy, or move a CRD out of the policy group.
        let generated = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "default-deny-all", "namespace": "shop",
                "labels": {"app.kubernetes.io/managed-by": "palisade"}},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}});
        let mut relabelled = generated.clone();
        relabelled["metadata"]["labels"] = json!({});
        relabelled["metadata"]["annotations"] = annotations.clone();
        relabelled["spec"]["policyTypes"] = json!(["Ingress"]);
        let v = judge_update(relabelled, generated, "alice");
        assert!(
            matches!(v, Verdict::Refused(Refusal::Protected, ref w) if w.contains("NetworkPolicies Palisade generates")),
            "{v:?}"
        );
        let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "k8srequiredlabels.constraints.gatekeeper.sh"}, "spec": {"group": "constraints.gatekeeper.sh"}});
        let mut moved = crd.clone();
        moved["spec"]["group"] = json!("example.com");
        moved["metadata"]["annotations"] = annotations;
        assert!(matches!(
            judge_update(moved, crd, "alice"),
            Verdict::Refused(Refusal::Protected, _)
        ));
    }

    #[test]
    fn bare_objects_and_deletions_have_no_break_glass() {
        let object = pod(annotated("x", "2026-11-22T13:00:00Z"));
        assert_eq!(
            judge(
                &config(),
                "",
                &keys(),
                &Review::from_object(object.clone()),
                now()
            ),
            Verdict::Absent
        );
        let delete = review("DELETE", object.clone(), object.clone(), "mallory", &[]);
        assert_eq!(
            judge(&config(), "", &keys(), &delete, now()),
            Verdict::Absent
        );
        // A review naming no requester is an unknown one, not a bare object.
        let nobody = review("CREATE", object, Value::Null, "", &[]);
        assert!(matches!(
            judge(&config(), "", &keys(), &nobody, now()),
            Verdict::Refused(_, why) if why.starts_with("this requester may not add")
        ));
    }
    // Hostile review (issue 28): a tenant who may update an approved workload, but is not on
    // the allow-list, changes it where the grant's normalisation of controller-made pods looked
    // away, and keeps the annotations and the grant.

    fn approved_privileged(template_spec_extra: Value) -> Value {
        let mut object = deployment(annotated("INC-7", "2026-11-22T13:00:00Z"));
        let spec = &mut object["spec"]["template"]["spec"];
        spec["containers"][0]["securityContext"] = json!({"privileged": true});
        if let Some(extra) = template_spec_extra.as_object() {
            for (k, v) in extra {
                spec[k] = v.clone();
            }
        }
        stamped(object, "alice")
    }

    #[test]
    fn review_attack_what_the_normalisation_left_out_is_sealed_in_a_template() {
        let approved = approved_privileged(json!({}));
        type Change = fn(&mut Value);
        let changes: [(&str, Change); 8] = [
            (
                "her ConfigMap, projected under the token volume's name, over /bin",
                |t| {
                    t["spec"]["volumes"] = json!([{"name": "kube-api-access-pwn",
                    "projected": {"sources": [{"configMap": {"name": "evil", "items": [{"key": "sh", "path": "sh", "mode": 493}]}}]}}]);
                    t["spec"]["containers"][0]["volumeMounts"] =
                        json!([{"name": "kube-api-access-pwn", "mountPath": "/bin"}]);
                },
            ),
            ("the token volume's exact shape, mounted over /bin", |t| {
                t["spec"]["volumes"] = json!([{"name": "kube-api-access-pwn", "projected": {"sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}]);
                t["spec"]["containers"][0]["volumeMounts"] =
                    json!([{"name": "kube-api-access-pwn", "mountPath": "/bin", "readOnly": true}]);
            }),
            ("her PersistentVolumeClaim over /usr/local/bin", |t| {
                t["spec"]["volumes"] =
                    json!([{"name": "data", "persistentVolumeClaim": {"claimName": "mine"}}]);
                t["spec"]["containers"][0]["volumeMounts"] =
                    json!([{"name": "data", "mountPath": "/usr/local/bin"}]);
            }),
            (
                "a control-plane node by name, past the scheduler and its taints",
                |t| {
                    t["spec"]["nodeName"] = json!("control-plane-1");
                },
            ),
            ("out of the mesh by label", |t| {
                t["metadata"]["labels"] = json!({"sidecar.istio.io/inject": "false"});
            }),
            ("into another NetworkPolicy's or Service's selection", |t| {
                t["metadata"]["labels"] = json!({"app": "payments"});
            }),
            ("a toleration of a taint that is no node condition", |t| {
                t["spec"]["tolerations"] = json!([{"key": "node.kubernetes.io/dedicated-control-plane",
                    "operator": "Exists", "effect": "NoSchedule"}]);
            }),
            ("a hostname of another pod", |t| {
                t["spec"]["hostname"] = json!("db-0");
                t["spec"]["subdomain"] = json!("db");
            }),
        ];
        for (what, change) in changes {
            let mut changed = approved.clone();
            change(&mut changed["spec"]["template"]);
            let v = judge_update(changed.clone(), approved.clone(), "mallory");
            assert!(
                matches!(v, Verdict::Refused(Refusal::ChangesApproved, _)),
                "{what}: {v:?}"
            );
            let v = judge_update(
                changed,
                approved.clone(),
                "system:serviceaccount:kube-system:deployment-controller",
            );
            assert!(matches!(v, Verdict::Ignored(_)), "{what}: {v:?}");
        }
    }

    #[test]
    fn review_attack_the_token_goes_not_into_a_pod_that_was_approved_without_it() {
        let approved = approved_privileged(json!({"automountServiceAccountToken": false}));
        let mut changed = approved.clone();
        let spec = &mut changed["spec"]["template"]["spec"];
        spec["volumes"] = json!([{"name": "kube-api-access-x", "projected": {"sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}]);
        spec["containers"][0]["volumeMounts"] = json!([{"name": "kube-api-access-x",
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}]);
        let v = judge_update(changed, approved, "mallory");
        assert!(
            matches!(v, Verdict::Refused(Refusal::ChangesApproved, _)),
            "{v:?}"
        );
    }

    #[test]
    fn review_attack_required_node_affinity_moves_an_approved_workload() {
        let approved = approved_privileged(json!({}));
        let mut changed = approved.clone();
        changed["spec"]["template"]["spec"]["affinity"] = json!({"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{
                "matchExpressions": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]}]}}});
        let v = judge_update(changed, approved.clone(), "mallory");
        assert!(
            matches!(v, Verdict::Refused(Refusal::ChangesApproved, _)),
            "{v:?}"
        );
        // Its pods carry the template's affinity and still verify.
        let controller = "system:serviceaccount:kube-system:replicaset-controller";
        let mut pinned = approved_privileged(json!({"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{
                "matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}]}}}}));
        pinned["kind"] = json!("ReplicaSet");
        let template = &pinned["spec"]["template"];
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": template["metadata"].clone(), "spec": template["spec"].clone()});
        pod["metadata"]["name"] = json!("web-1");
        pod["metadata"]["namespace"] = json!("shop");
        assert!(
            matches!(judge_create(pod.clone(), controller), Verdict::Honoured(_)),
            "{pod}"
        );
        // A DaemonSet's pods are pinned to their node by the controller instead: they verify
        // against the DaemonSet's grant, whatever its template's affinity.
        let ds_controller = "system:serviceaccount:kube-system:daemon-set-controller";
        let mut ds = pinned.clone();
        ds["kind"] = json!("DaemonSet");
        ds["spec"]["template"]["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove(GRANT);
        let ds = stamped(ds, "alice");
        let mut ds_pod = pod.clone();
        ds_pod["metadata"]["annotations"] =
            ds["spec"]["template"]["metadata"]["annotations"].clone();
        ds_pod["spec"]["affinity"] = json!({"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{
                "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-7"]}]}]}}});
        assert!(
            matches!(
                judge_create(ds_pod.clone(), ds_controller),
                Verdict::Honoured(_)
            ),
            "{ds_pod}"
        );
        // The pin is left out of a pod, never out of a ReplicaSet's template.
        let mut other_pin = pod;
        other_pin["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchFields"] =
            json!([{"key": "metadata.name", "operator": "In", "values": ["a", "b"]}]);
        assert!(matches!(
            judge_create(other_pin, controller),
            Verdict::Ignored(_)
        ));
    }

    #[test]
    fn review_attack_a_grant_moves_between_objects_of_one_incident() {
        let approved = approved_privileged(json!({}));
        // Another object alice approved under the same incident and expiry: an ordinary pod
        // spec.
        let mut other = deployment(annotated("INC-7", "2026-11-22T13:00:00Z"));
        other["metadata"]["name"] = json!("harmless");
        let other = stamped(other, "alice");
        // mallory gives it the privileged Deployment's template, grant and all.
        let mut moved = other.clone();
        moved["spec"]["template"] = approved["spec"]["template"].clone();
        let v = judge_update(moved.clone(), other.clone(), "mallory");
        assert!(
            matches!(v, Verdict::Refused(Refusal::NotAllowed, ref m) if m.starts_with("mallory may not add or change")),
            "{v:?}"
        );
        // Without the grant it carries no approval at all.
        let mut ungranted = moved;
        ungranted["spec"]["template"]["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove(GRANT);
        assert!(matches!(
            judge_update(ungranted, other, "mallory"),
            Verdict::Refused(Refusal::ChangesApproved, _)
        ));
    }
    #[test]
    fn review_attack_a_max_ttl_beyond_the_calendar_is_no_panic() {
        for max_ttl in [
            std::time::Duration::from_secs(400_000 * 365 * 86_400),
            std::time::Duration::from_secs(u64::MAX),
        ] {
            let config = BreakGlass {
                max_ttl,
                ..config()
            };
            let object = pod(annotated("INC-1", "9999-12-31T23:59:59Z"));
            let v = judge(
                &config,
                "",
                &keys(),
                &review("CREATE", object, Value::Null, "alice", &[]),
                now(),
            );
            assert!(matches!(v, Verdict::Honoured(_)), "{v:?}");
        }
    }

    #[test]
    fn review_attack_another_kinds_annotations_are_what_was_approved() {
        // alice break-glasses an Ingress; mallory adds the annotation ingress-nginx runs as
        // configuration (the snippet policies forbid) and keeps everything else.
        let ingress = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "web", "namespace": "shop",
                "annotations": annotated("INC-7", "2026-11-22T13:00:00Z")},
            "spec": {"rules": [{"host": "shop.example.com"}]}});
        let approved = stamped(ingress, "alice");
        assert!(approved["metadata"]["annotations"][GRANT].is_string());
        let mut snippet = approved.clone();
        snippet["metadata"]["annotations"]["nginx.ingress.kubernetes.io/server-snippet"] =
            json!("location /x { proxy_pass http://169.254.169.254; }");
        let v = judge_update(snippet, approved.clone(), "mallory");
        assert!(
            matches!(v, Verdict::Refused(Refusal::ChangesApproved, _)),
            "{v:?}"
        );
        // What a client records of its own request is no configuration.
        let mut applied = approved.clone();
        applied["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
            json!("{}");
        let v = judge_update(applied, approved, "mallory");
        assert!(matches!(v, Verdict::Honoured(_)), "{v:?}");
    }
    #[test]
    fn review_attack_a_grant_does_not_change_kind() {
        let annotations = annotated("INC-7", "2026-11-22T13:00:00Z");
        // alice's debug pod, and her DaemonSet, of one incident.
        let mut debug = pod(annotations.clone());
        debug["spec"]["containers"][0]["securityContext"] = json!({"privileged": true});
        let debug = stamped(debug, "alice");
        let mut ds = deployment(annotations.clone());
        ds["kind"] = json!("DaemonSet");
        let ds = stamped(ds, "alice");
        // mallory gives the DaemonSet the debug pod's spec and grant: on every node.
        let mut moved = ds.clone();
        let template = &mut moved["spec"]["template"];
        template["metadata"]["annotations"] = debug["metadata"]["annotations"].clone();
        template["spec"] = debug["spec"].clone();
        let v = judge_update(moved, ds.clone(), "mallory");
        assert!(
            matches!(v, Verdict::Refused(Refusal::NotAllowed, _)),
            "{v:?}"
        );
        // Or a privileged Deployment's template and grant.
        let approved = approved_privileged(json!({}));
        let mut moved = ds.clone();
        moved["spec"]["template"] = approved["spec"]["template"].clone();
        let v = judge_update(moved, ds, "mallory");
        assert!(
            matches!(v, Verdict::Refused(Refusal::NotAllowed, _)),
            "{v:?}"
        );
        // What the controllers copy still verifies: a CronJob's Job, the Job's pods.
        let mut cron = json!({"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "backup", "namespace": "shop"},
            "spec": {"schedule": "@hourly", "jobTemplate": {"spec": {"template":
                approved["spec"]["template"].clone()}}}});
        cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["annotations"] = annotations;
        let cron = stamped(cron, "alice");
        let template = cron["spec"]["jobTemplate"]["spec"]["template"].clone();
        let job = json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "backup-1", "namespace": "shop"},
            "spec": {"template": template.clone()}});
        let v = judge_create(job, "system:serviceaccount:kube-system:cronjob-controller");
        assert!(matches!(v, Verdict::Honoured(_)), "{v:?}");
        let job_pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "backup-1-x", "namespace": "shop",
                "annotations": template["metadata"]["annotations"].clone()},
            "spec": template["spec"].clone()});
        let v = judge_create(job_pod, "system:serviceaccount:kube-system:job-controller");
        assert!(matches!(v, Verdict::Honoured(_)), "{v:?}");
    }
}
