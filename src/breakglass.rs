//! Break-glass: the way out of an emergency without turning Palisade off, and without a way in
//! for anyone else.
//!
//! An object annotated with `palisade.dev/break-glass: <reason>` and
//! `palisade.dev/break-glass-expires: <RFC 3339 time>` is admitted despite deny violations, and
//! not mutated, only when the requester is on the configured allow-list (empty by default), the
//! reason is not empty, the expiry is in the future and within `breakGlass.maxTTL`, and the object
//! is not one that Palisade's own safety depends on. Anything else is judged normally, and the
//! answer says why the annotation was ignored.
//!
//! A requester who is not on the allow-list may neither add nor change the annotations, on an
//! object or on a workload's pod template, so an annotation present on an object always means an
//! authorised person put it there. The one exception are the controllers that copy a workload's
//! template into the objects they create (the ReplicaSet controller makes pods from a
//! ReplicaSet): the pods of an authorised Deployment carry the annotation, and are admitted when
//! a trusted controller creates them and a workload owns them.
//!
//! Keys are compared exactly: a key in another case, with a look-alike character, or anywhere but
//! the object's (or its pod template's) `metadata.annotations` is not a break-glass annotation.

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::admission::{Operation, Review};
use crate::config::BreakGlass;

pub const REASON: &str = "palisade.dev/break-glass";
pub const EXPIRES: &str = "palisade.dev/break-glass-expires";

/// Kinds whose pod template carries annotations into the pods (or workloads) they create, and
/// where that template is.
const TEMPLATES: [(&str, &str, &[&str]); 7] = [
    ("apps", "Deployment", &["spec", "template"]),
    ("apps", "StatefulSet", &["spec", "template"]),
    ("apps", "DaemonSet", &["spec", "template"]),
    ("apps", "ReplicaSet", &["spec", "template"]),
    ("batch", "Job", &["spec", "template"]),
    (
        "batch",
        "CronJob",
        &["spec", "jobTemplate", "spec", "template"],
    ),
    ("", "ReplicationController", &["spec", "template"]),
];

/// Owners whose controllers create objects from a template.
const WORKLOAD_OWNERS: [(&str, &str); 7] = [
    ("apps/v1", "Deployment"),
    ("apps/v1", "ReplicaSet"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "DaemonSet"),
    ("batch/v1", "Job"),
    ("batch/v1", "CronJob"),
    ("v1", "ReplicationController"),
];

/// What break-glass means for one review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No break-glass annotation (or a bare object, which has no requester).
    Absent,
    /// Honoured: deny violations are bypassed and the object is not mutated.
    Honoured(Use),
    /// Present but not honoured; the object is judged normally. Why, for the user.
    Ignored(String),
    /// The requester may not add or change the annotations: the request is denied.
    Refused(String),
}

/// One honoured use, for the warning, the audit annotations, the log line and the metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Use {
    /// Who sent the request.
    pub user: String,
    pub reason: String,
    pub expires: String,
    /// For a controller creating a workload's object: the owner, `ReplicaSet/web-5d8f`.
    pub owner: Option<String>,
}

/// The annotations at one place of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pair<'a> {
    reason: Option<&'a str>,
    expires: Option<&'a str>,
}

impl<'a> Pair<'a> {
    fn at(metadata: Option<&'a Value>) -> Self {
        let annotations = metadata.map(|m| &m["annotations"]);
        let get = |key| annotations.and_then(|a| a[key].as_str());
        Self {
            reason: get(REASON),
            expires: get(EXPIRES),
        }
    }

    fn is_empty(&self) -> bool {
        self.reason.is_none() && self.expires.is_none()
    }
}

fn template_path(review: &Review) -> Option<&'static [&'static str]> {
    let object = review.object_ref();
    TEMPLATES
        .iter()
        .find(|(g, k, _)| *g == object.group && *k == object.kind)
        .map(|(_, _, path)| *path)
}

fn at_path<'v>(value: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .filter(|v| !v.is_null())
}

/// The pairs of `object`: its own metadata, then its pod template's.
fn pairs<'v>(object: &'v Value, template: Option<&[&str]>) -> [Pair<'v>; 2] {
    let template_metadata = template
        .and_then(|path| at_path(object, path))
        .map(|t| &t["metadata"]);
    [
        Pair::at(object.get("metadata")),
        Pair::at(template_metadata),
    ]
}

/// The workload that controls the object, as `Kind/name`, if any.
fn workload_owner(object: &Value) -> Option<String> {
    object["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|o| {
            o["controller"] == true
                && WORKLOAD_OWNERS.iter().any(|(api_version, kind)| {
                    o["apiVersion"] == *api_version && o["kind"] == *kind
                })
        })
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or_default(),
                o["name"].as_str().unwrap_or_default()
            )
        })
}

/// Why an object may never be admitted by break-glass, if it is such an object.
fn protected(review: &Review, own_namespace: &str) -> Option<String> {
    let object = review.object_ref();
    let ns = object.effective_namespace();
    if !own_namespace.is_empty() && ns == own_namespace {
        return Some(format!(
            "objects in Palisade's own namespace {own_namespace} cannot be admitted by break-glass"
        ));
    }
    let group = object.group.as_str();
    let what = if group == "admissionregistration.k8s.io" {
        Some("webhook and admission configurations")
    } else if group == "gatekeeper.sh" || group.ends_with(".gatekeeper.sh") {
        Some("policies (templates, constraints, mutators, the Config)")
    } else if group == "apiextensions.k8s.io"
        && review.object()["spec"]["group"]
            .as_str()
            .is_some_and(|g| g.ends_with("gatekeeper.sh"))
    {
        Some("the definitions of policy kinds")
    } else if object.kind == "NetworkPolicy"
        && group == "networking.k8s.io"
        && review.object()["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "palisade"
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

/// Judges the break-glass annotations of one review at time `now`.
pub fn judge(
    config: &BreakGlass,
    own_namespace: &str,
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
    let template = template_path(review);
    let new = pairs(review.object(), template);
    let old = pairs(review.old_object(), template);

    // Adding or changing an annotation is the allow-list's alone. Removing one is always fine.
    // Trusted controllers copy templates that were judged when their workload was admitted.
    let changed = new
        .iter()
        .zip(&old)
        .any(|(n, o)| !n.is_empty() && (operation == Operation::Create || n != o));
    if changed && !authorised && !config.is_trusted_controller(user) {
        return Verdict::Refused(format!(
            "{} may not add or change the {REASON} annotations: only the users and groups named in breakGlass.users and breakGlass.groups of Palisade's configuration may",
            if user.username.is_empty() {
                "this requester"
            } else {
                user.username.as_str()
            }
        ));
    }

    let Some(pair) = new.iter().find(|p| p.reason.is_some()) else {
        return if new.iter().any(|p| p.expires.is_some()) {
            Verdict::Ignored(format!("{EXPIRES} is set without {REASON}"))
        } else {
            Verdict::Absent
        };
    };
    let owner = if authorised {
        None
    } else if config.is_trusted_controller(user) {
        match workload_owner(review.object()) {
            Some(owner) => Some(owner),
            None => {
                return Verdict::Ignored(format!(
                    "{} is a trusted controller, but no workload owns this object",
                    user.username
                ));
            }
        }
    } else {
        return Verdict::Ignored(format!(
            "{} is not on the break-glass allow-list (breakGlass.users, breakGlass.groups)",
            if user.username.is_empty() {
                "the requester"
            } else {
                user.username.as_str()
            }
        ));
    };
    if let Some(why) = protected(review, own_namespace) {
        return Verdict::Ignored(why);
    }
    let reason = pair.reason.unwrap_or_default().trim();
    if reason.is_empty() {
        return Verdict::Ignored(format!("{REASON} gives no reason"));
    }
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
    let limit = now + time::Duration::try_from(max).unwrap_or(time::Duration::MAX);
    if expires > limit {
        return Verdict::Ignored(format!(
            "{EXPIRES} {expires_text} is further ahead than breakGlass.maxTTL ({})",
            humantime::format_duration(max)
        ));
    }
    Verdict::Honoured(Use {
        user: user.username.clone(),
        reason: reason.to_owned(),
        expires: expires_text.to_owned(),
        owner,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: &str = "2026-11-22T12:00:00Z";

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
        assert_eq!(
            v,
            Verdict::Honoured(Use {
                user: "alice".into(),
                reason: "INC-42 debugging".into(),
                expires: "2026-11-22T16:00:00Z".into(),
                owner: None
            })
        );
        let by_group = judge(
            &config(),
            "",
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
            matches!(v, Verdict::Refused(ref m) if m.contains("breakGlass.users")),
            "{v:?}"
        );
    }

    #[test]
    fn an_unauthorised_user_may_not_add_or_change_the_annotations() {
        let v = judge_create(pod(annotated("x", "2026-11-22T13:00:00Z")), "mallory");
        assert!(
            matches!(v, Verdict::Refused(ref m) if m.starts_with("mallory may not add")),
            "{v:?}"
        );
        // Adding the annotation to an existing object.
        let v = judge(
            &config(),
            "",
            &review(
                "UPDATE",
                pod(annotated("x", "2026-11-22T13:00:00Z")),
                pod(json!({})),
                "mallory",
                &[],
            ),
            now(),
        );
        assert!(matches!(v, Verdict::Refused(_)), "{v:?}");
        // Changing the expiry of an authorised one.
        let v = judge(
            &config(),
            "",
            &review(
                "UPDATE",
                pod(annotated("x", "2026-11-22T18:00:00Z")),
                pod(annotated("x", "2026-11-22T13:00:00Z")),
                "mallory",
                &[],
            ),
            now(),
        );
        assert!(matches!(v, Verdict::Refused(_)), "{v:?}");
        // Leaving an authorised annotation as it is: judged normally, not refused.
        let same = pod(annotated("x", "2026-11-22T13:00:00Z"));
        let v = judge(
            &config(),
            "",
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
    fn a_workloads_pod_template_is_judged_with_the_workload() {
        let annotations = annotated("INC-7", "2026-11-22T13:00:00Z");
        assert!(matches!(
            judge_create(deployment(annotations.clone()), "alice"),
            Verdict::Honoured(_)
        ));
        let v = judge(
            &config(),
            "",
            &review(
                "UPDATE",
                deployment(annotations.clone()),
                deployment(json!({})),
                "mallory",
                &[],
            ),
            now(),
        );
        assert!(matches!(v, Verdict::Refused(_)), "{v:?}");
        let cron = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c", "namespace": "shop"},
            "spec": {"jobTemplate": {"spec": {"template": {"metadata": {"annotations": annotations}}}}}});
        assert!(matches!(judge_create(cron, "mallory"), Verdict::Refused(_)));
    }

    #[test]
    fn pods_of_a_workload_are_admitted_when_a_trusted_controller_creates_them() {
        let controller = "system:serviceaccount:kube-system:replicaset-controller";
        let mut owned = pod(annotated("INC-7", "2026-11-22T13:00:00Z"));
        owned["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d8f", "uid": "1", "controller": true}]);
        let v = judge_create(owned.clone(), controller);
        assert!(
            matches!(v, Verdict::Honoured(Use { ref owner, .. }) if owner.as_deref() == Some("ReplicaSet/web-5d8f")),
            "{v:?}"
        );
        // Not from a controller identity: the requester is judged as a person.
        assert!(matches!(
            judge_create(owned.clone(), "mallory"),
            Verdict::Refused(_)
        ));
        // Unowned, or owned by something that is not a workload: judged normally.
        let unowned = pod(annotated("INC-7", "2026-11-22T13:00:00Z"));
        assert!(
            matches!(judge_create(unowned, controller), Verdict::Ignored(ref w) if w.contains("no workload owns"))
        );
        let mut not_controller = owned.clone();
        not_controller["metadata"]["ownerReferences"][0]["controller"] = json!(false);
        assert!(matches!(
            judge_create(not_controller, controller),
            Verdict::Ignored(_)
        ));
        // The expiry still holds for the pods.
        let mut late = owned;
        late["metadata"]["annotations"][EXPIRES] = json!("2026-11-22T11:00:00Z");
        assert!(
            matches!(judge_create(late, controller), Verdict::Ignored(ref w) if w.contains("expired"))
        );
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
            (annotated("   ", "2026-11-22T13:00:00Z"), "gives no reason"),
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
            matches!(judge_create(own, "alice"), Verdict::Ignored(ref w) if w.contains("own namespace palisade-system"))
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
                matches!(v, Verdict::Ignored(ref w) if w.contains("cannot be admitted by break-glass")),
                "{}: {v:?}",
                object["kind"]
            );
        }
    }

    #[test]
    fn bare_objects_and_deletions_have_no_break_glass() {
        let object = pod(annotated("x", "2026-11-22T13:00:00Z"));
        assert_eq!(
            judge(&config(), "", &Review::from_object(object.clone()), now()),
            Verdict::Absent
        );
        let delete = review("DELETE", object.clone(), object.clone(), "mallory", &[]);
        assert_eq!(judge(&config(), "", &delete, now()), Verdict::Absent);
        // A review naming no requester is an unknown one, not a bare object.
        let nobody = review("CREATE", object, Value::Null, "", &[]);
        assert!(matches!(
            judge(&config(), "", &nobody, now()),
            Verdict::Refused(why) if why.starts_with("this requester may not add")
        ));
    }
}
