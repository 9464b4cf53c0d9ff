//! Every way a pod spec enters the cluster, in one table.
//!
//! A tenant who wants a pod the policies would refuse looks for a kind that carries a pod spec
//! and that nobody reviews: a ReplicationController whose controller makes the pods, a
//! PodTemplate another controller reads, an ephemeral container added through the
//! `pods/ephemeralcontainers` subresource. So the kinds and subresources that carry a pod spec
//! are listed here once, and everything that must agree on them is derived from this table:
//!
//! - the webhook rules that `palisade manifests` emits (both webhooks, [`crate::webhooks`]);
//! - where break-glass finds a pod template and which owners it trusts to copy one
//!   ([`crate::breakglass`]);
//! - the kinds the shipped pod policies judge, which a test compares with this table.
//!
//! The table is [`POD_PATHS`], one [`PodPath`] per way in; [`of_kind`] looks a kind up.

use serde_json::Value;

/// One way a pod spec enters the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodPath {
    /// API group of the kind (`""` for the core group).
    pub group: &'static str,
    /// API version of the kind (`v1`).
    pub version: &'static str,
    /// The kind (`Pod`, `Deployment`).
    pub kind: &'static str,
    /// The resource the webhook rules name, with its subresource after a `/`.
    pub resource: &'static str,
    /// The operations that can put a pod spec into the cluster through this resource: what both
    /// webhooks are sent, at least.
    pub validate: &'static [&'static str],
    /// What the mutating webhook is sent. A Pod's update is sent only to stamp break-glass
    /// grants: its spec cannot change after creation except through the ephemeral containers
    /// subresource, so the mutators do not run on it.
    pub mutate: &'static [&'static str],
    /// Where the pod template (`metadata` and `spec` of the pods to be) is in the object; empty
    /// for a Pod, which is its own template.
    pub template: &'static [&'static str],
    /// Whether this kind's controller creates pods, or workloads of another kind in this table,
    /// by copying the template: an object it owns may carry the template's break-glass grant.
    pub owner: bool,
}

const CREATE_UPDATE: &[&str] = &["CREATE", "UPDATE"];
const TEMPLATE: &[&str] = &["spec", "template"];

/// The kinds and subresources that carry a pod spec into the cluster.
pub const POD_PATHS: [PodPath; 10] = [
    PodPath {
        group: "",
        version: "v1",
        kind: "Pod",
        resource: "pods",
        validate: CREATE_UPDATE,
        mutate: CREATE_UPDATE,
        template: &[],
        owner: false,
    },
    // `kubectl debug` adds containers to a running pod here; the API server sends the whole
    // Pod, with kind Pod, as the object.
    PodPath {
        group: "",
        version: "v1",
        kind: "Pod",
        resource: "pods/ephemeralcontainers",
        validate: &["UPDATE"],
        mutate: &["UPDATE"],
        template: &[],
        owner: false,
    },
    PodPath {
        group: "",
        version: "v1",
        kind: "ReplicationController",
        resource: "replicationcontrollers",
        validate: CREATE_UPDATE,
        mutate: CREATE_UPDATE,
        template: TEMPLATE,
        owner: true,
    },
    PodPath {
        group: "",
        version: "v1",
        kind: "PodTemplate",
        resource: "podtemplates",
        validate: CREATE_UPDATE,
        mutate: CREATE_UPDATE,
        template: &["template"],
        owner: false,
    },
    PodPath {
        group: "apps",
        version: "v1",
        kind: "ReplicaSet",
        resource: "replicasets",
        validate: CREATE_UPDATE,
        mutate: CREATE_UPDATE,
        template: TEMPLATE,
        owner: true,
    },
    PodPath {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        resource: "deployments",
        validate: CREATE_UPDATE,
        mutate: CREATE_UPDATE,
        template: TEMPLATE,
        owner: true,
    },
    PodPath {
        group: "apps",
        version: "v1",
        kind: "StatefulSet",
        resource: "statefulsets",
        validate: CREATE_UPDATE,
        mutate: CREATE_UPDATE,
        template: TEMPLATE,
        owner: true,
    },
    PodPath {
        group: "apps",
        version: "v1",
        kind: "DaemonSet",
        resource: "daemonsets",
        validate: CREATE_UPDATE,
        mutate: CREATE_UPDATE,
        template: TEMPLATE,
        owner: true,
    },
    PodPath {
        group: "batch",
        version: "v1",
        kind: "Job",
        resource: "jobs",
        validate: CREATE_UPDATE,
        mutate: CREATE_UPDATE,
        template: TEMPLATE,
        owner: true,
    },
    PodPath {
        group: "batch",
        version: "v1",
        kind: "CronJob",
        resource: "cronjobs",
        validate: CREATE_UPDATE,
        mutate: CREATE_UPDATE,
        template: &["spec", "jobTemplate", "spec", "template"],
        owner: true,
    },
];

impl PodPath {
    /// `apiVersion` as an owner reference writes it.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The pod template of `object` (the object itself for a Pod), if it has one.
    pub fn template_of<'v>(&self, object: &'v Value) -> Option<&'v Value> {
        self.template
            .iter()
            .try_fold(object, |v, key| v.get(key))
            .filter(|v| v.is_object())
    }
}

/// The pod path of a kind (a Pod's first: the object is the same for its subresource).
pub fn of_kind(group: &str, kind: &str) -> Option<&'static PodPath> {
    POD_PATHS
        .iter()
        .find(|p| p.group == group && p.kind == kind)
}

/// Whether objects controlled by an owner of this `apiVersion` and `kind` are made by a
/// controller from the owner's template.
pub fn is_owner(api_version: &str, kind: &str) -> bool {
    POD_PATHS
        .iter()
        .any(|p| p.owner && p.kind == kind && p.api_version() == api_version)
}

/// The distinct kinds, as `(group, kind)`.
pub fn kinds() -> Vec<(&'static str, &'static str)> {
    let mut kinds: Vec<_> = POD_PATHS.iter().map(|p| (p.group, p.kind)).collect();
    kinds.dedup();
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_kind_but_the_pods_subresource_appears_once_and_owners_have_templates() {
        let kinds = kinds();
        assert_eq!(kinds.len(), POD_PATHS.len() - 1);
        let mut sorted = kinds.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), kinds.len(), "a kind listed twice apart");
        for path in &POD_PATHS {
            assert!(!path.owner || !path.template.is_empty(), "{}", path.kind);
            assert!(
                path.mutate.iter().all(|op| path.validate.contains(op)),
                "{}: mutated but not validated",
                path.resource
            );
            // The resource is the kind's plural, as the API server names it.
            let plural = path.resource.split('/').next().unwrap();
            assert_eq!(
                crate::webhooks::resource_of(path.group, path.kind),
                plural,
                "{}",
                path.kind
            );
        }
    }

    #[test]
    fn templates_are_found_where_each_kind_keeps_them() {
        let cron =
            json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}}});
        let cron_path = of_kind("batch", "CronJob").unwrap();
        assert!(cron_path.template_of(&cron).unwrap()["spec"].is_object());
        let template = json!({"template": {"metadata": {}, "spec": {}}});
        assert!(
            of_kind("", "PodTemplate")
                .unwrap()
                .template_of(&template)
                .is_some()
        );
        let pod = json!({"metadata": {}, "spec": {}});
        assert_eq!(of_kind("", "Pod").unwrap().template_of(&pod), Some(&pod));
        assert_eq!(cron_path.template_of(&json!({"spec": null})), None);
        assert!(of_kind("apps", "Pod").is_none());
    }

    #[test]
    fn owners_are_matched_by_api_version_and_kind() {
        assert!(is_owner("apps/v1", "ReplicaSet"));
        assert!(is_owner("v1", "ReplicationController"));
        assert!(is_owner("batch/v1", "CronJob"));
        assert!(!is_owner("apps/v1beta2", "ReplicaSet"));
        assert!(!is_owner("v1", "PodTemplate"));
        assert!(!is_owner("v1", "Pod"));
        assert!(!is_owner("example.com/v1", "Deployment"));
    }
}
