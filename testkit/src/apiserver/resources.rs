//! The kinds the stand-in serves: the built-in ones, those of CRD groups a test installs, and
//! those that stored CustomResourceDefinitions define; and an object as a version serves it.

use serde_json::{Map, Value, json};

/// A kind the stand-in serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    /// Whether `metadata.generation` is kept (it moves when `spec` changes).
    pub(super) generation: bool,
    /// The version objects are stored in; every served version reads and writes the same ones.
    pub(super) storage: &'static str,
    /// Whether `status` is a subresource: written only through `/status`.
    pub(super) status: bool,
}

pub const NAMESPACES: Resource = Resource {
    group: "",
    version: "v1",
    plural: "namespaces",
    kind: "Namespace",
    namespaced: false,
    generation: false,
    storage: "v1",
    status: false,
};
pub const NETWORK_POLICIES: Resource = Resource {
    group: "networking.k8s.io",
    version: "v1",
    plural: "networkpolicies",
    kind: "NetworkPolicy",
    namespaced: true,
    generation: true,
    storage: "v1",
    status: false,
};
/// Served as the real one serves it (status a subresource, generation kept); Palisade reads it
/// only when a Config or SyncSet syncs it.
pub const INGRESSES: Resource = Resource {
    group: "networking.k8s.io",
    version: "v1",
    plural: "ingresses",
    kind: "Ingress",
    namespaced: true,
    generation: true,
    storage: "v1",
    status: true,
};
pub const LEASES: Resource = Resource {
    group: "coordination.k8s.io",
    version: "v1",
    plural: "leases",
    kind: "Lease",
    namespaced: true,
    generation: false,
    storage: "v1",
    status: false,
};
pub const PODS: Resource = Resource {
    group: "",
    version: "v1",
    plural: "pods",
    kind: "Pod",
    namespaced: true,
    generation: false,
    storage: "v1",
    status: false,
};
/// Served only once [`ApiServer::install_crd`] installed the group, as a CRD would be.
pub const POLICY_REPORTS: Resource = Resource {
    group: "wgpolicyk8s.io",
    version: "v1alpha2",
    plural: "policyreports",
    kind: "PolicyReport",
    namespaced: true,
    generation: true,
    storage: "v1alpha2",
    status: false,
};
pub const CLUSTER_POLICY_REPORTS: Resource = Resource {
    group: "wgpolicyk8s.io",
    version: "v1alpha2",
    plural: "clusterpolicyreports",
    kind: "ClusterPolicyReport",
    namespaced: false,
    generation: true,
    storage: "v1alpha2",
    status: false,
};
pub const CRDS: Resource = Resource {
    group: "apiextensions.k8s.io",
    version: "v1",
    plural: "customresourcedefinitions",
    kind: "CustomResourceDefinition",
    namespaced: false,
    generation: true,
    storage: "v1",
    status: false,
};
pub const SECRETS: Resource = Resource {
    group: "",
    version: "v1",
    plural: "secrets",
    kind: "Secret",
    namespaced: true,
    generation: false,
    storage: "v1",
    status: false,
};
pub const VALIDATING_WEBHOOKS: Resource = Resource {
    group: "admissionregistration.k8s.io",
    version: "v1",
    plural: "validatingwebhookconfigurations",
    kind: "ValidatingWebhookConfiguration",
    namespaced: false,
    generation: false,
    storage: "v1",
    status: false,
};
pub const MUTATING_WEBHOOKS: Resource = Resource {
    group: "admissionregistration.k8s.io",
    version: "v1",
    plural: "mutatingwebhookconfigurations",
    kind: "MutatingWebhookConfiguration",
    namespaced: false,
    generation: false,
    storage: "v1",
    status: false,
};
/// admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy, as a 1.30+ server serves it
/// (cluster-scoped, generation kept, `status` a subresource: the type checking the real server
/// writes, which the stand-in never does). A test plays a server before 1.30, which has no v1
/// kind (1.25: none at all; 1.26-1.29: v1alpha1/v1beta1 only), with
/// [`super::ApiServer::serve_validating_admission_policies`]: both kinds then get the real
/// server's 404 for a resource it does not serve.
pub const VALIDATING_ADMISSION_POLICIES: Resource = Resource {
    group: "admissionregistration.k8s.io",
    version: "v1",
    plural: "validatingadmissionpolicies",
    kind: "ValidatingAdmissionPolicy",
    namespaced: false,
    generation: true,
    storage: "v1",
    status: true,
};
/// admissionregistration.k8s.io/v1 ValidatingAdmissionPolicyBinding (no status).
pub const VALIDATING_ADMISSION_POLICY_BINDINGS: Resource = Resource {
    group: "admissionregistration.k8s.io",
    version: "v1",
    plural: "validatingadmissionpolicybindings",
    kind: "ValidatingAdmissionPolicyBinding",
    namespaced: false,
    generation: true,
    storage: "v1",
    status: false,
};
/// The two kinds of a 1.30+ server that one before 1.30 lacks.
pub(super) const ADMISSION_POLICY_KINDS: [Resource; 2] = [
    VALIDATING_ADMISSION_POLICIES,
    VALIDATING_ADMISSION_POLICY_BINDINGS,
];
/// The workload kinds the audit lists. Unlike the real server, nothing here makes their
/// pods: a test creates the objects it needs.
const fn workload(group: &'static str, plural: &'static str, kind: &'static str) -> Resource {
    Resource {
        group,
        version: "v1",
        plural,
        kind,
        namespaced: true,
        generation: true,
        storage: "v1",
        status: false,
    }
}
pub const DEPLOYMENTS: Resource = workload("apps", "deployments", "Deployment");
pub const STATEFULSETS: Resource = workload("apps", "statefulsets", "StatefulSet");
pub const DAEMONSETS: Resource = workload("apps", "daemonsets", "DaemonSet");
pub const REPLICASETS: Resource = workload("apps", "replicasets", "ReplicaSet");
pub const JOBS: Resource = workload("batch", "jobs", "Job");
pub const CRONJOBS: Resource = workload("batch", "cronjobs", "CronJob");
pub const REPLICATION_CONTROLLERS: Resource =
    workload("", "replicationcontrollers", "ReplicationController");
/// A PodTemplate has no spec of its own (its `template` is the data), so no generation.
pub const POD_TEMPLATES: Resource = Resource {
    generation: false,
    ..workload("", "podtemplates", "PodTemplate")
};
pub(super) const RESOURCES: [Resource; 21] = [
    CRDS,
    NAMESPACES,
    NETWORK_POLICIES,
    INGRESSES,
    LEASES,
    PODS,
    SECRETS,
    VALIDATING_WEBHOOKS,
    MUTATING_WEBHOOKS,
    VALIDATING_ADMISSION_POLICIES,
    VALIDATING_ADMISSION_POLICY_BINDINGS,
    DEPLOYMENTS,
    STATEFULSETS,
    DAEMONSETS,
    REPLICASETS,
    JOBS,
    CRONJOBS,
    REPLICATION_CONTROLLERS,
    POD_TEMPLATES,
    POLICY_REPORTS,
    CLUSTER_POLICY_REPORTS,
];
/// Groups that come from CRDs, absent until installed.
pub(super) const CRD_GROUPS: [&str; 1] = ["wgpolicyk8s.io"];

impl Resource {
    pub(super) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `networkpolicies.networking.k8s.io`, as error messages name it.
    pub(super) fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub(super) fn of(object: &Value, served: &[Resource]) -> Option<Resource> {
        let api_version = object["apiVersion"].as_str()?;
        let kind = object["kind"].as_str()?;
        served
            .iter()
            .copied()
            .find(|r| r.api_version() == api_version && r.kind == kind)
    }

    /// The same kind in the version it is stored in: the key of its objects.
    pub(super) fn stored(&self) -> Resource {
        Resource {
            version: self.storage,
            ..*self
        }
    }

    /// Whether both name the same objects (any versions).
    pub(super) fn same_kind(&self, other: &Resource) -> bool {
        self.group == other.group && self.plural == other.plural
    }
}

/// `object` as `r`'s version serves it.
pub(super) fn in_version(r: &Resource, mut object: Value) -> Value {
    let kind = object["kind"].as_str().unwrap_or("");
    if kind != r.kind && kind != format!("{}List", r.kind) {
        return object; // a Status, or another kind
    }
    if object.get("apiVersion").is_some() {
        object["apiVersion"] = json!(r.api_version());
    }
    if let Some(items) = object.get_mut("items").and_then(Value::as_array_mut) {
        for item in items.iter_mut() {
            if item.get("apiVersion").is_some() {
                item["apiVersion"] = json!(r.api_version());
            }
        }
    }
    object
}

/// A string that lives as long as the test process: the names of CRD-defined kinds.
fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

/// The kinds (one per served version) that a CustomResourceDefinition defines, with its
/// status schema per storage resource.
pub(super) fn crd_resources(crd: &Value) -> Vec<(Resource, Value)> {
    let spec = &crd["spec"];
    let (Some(group), Some(kind), Some(plural)) = (
        spec["group"].as_str(),
        spec["names"]["kind"].as_str(),
        spec["names"]["plural"].as_str(),
    ) else {
        return Vec::new();
    };
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    let Some(storage) = versions
        .iter()
        .find(|v| v["storage"] == true)
        .and_then(|v| v["name"].as_str())
    else {
        return Vec::new();
    };
    let storage = leak(storage);
    versions
        .iter()
        .filter(|v| v["served"] == true)
        .filter_map(|v| {
            let r = Resource {
                group: leak(group),
                version: leak(v["name"].as_str()?),
                plural: leak(plural),
                kind: leak(kind),
                namespaced: spec["scope"] == "Namespaced",
                generation: true,
                storage,
                status: v["subresources"].get("status").is_some(),
            };
            Some((r, v["schema"]["openAPIV3Schema"].clone()))
        })
        .collect()
}

/// The key order of the real server: kind, apiVersion, metadata, spec, status.
pub(super) fn reorder(r: &Resource, object: Value) -> Value {
    let Value::Object(mut map) = object else {
        return object;
    };
    let mut out = Map::new();
    out.insert("kind".into(), json!(r.kind));
    out.insert("apiVersion".into(), json!(r.api_version()));
    map.remove("kind");
    map.remove("apiVersion");
    for k in ["metadata", "spec"] {
        if let Some(v) = map.remove(k) {
            out.insert(k.into(), v);
        }
    }
    let status = map.remove("status");
    out.extend(map);
    if let Some(s) = status {
        out.insert("status".into(), s);
    }
    Value::Object(out)
}
