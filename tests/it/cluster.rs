//! Palisade against a cluster: the testkit's stand-in API server, through the real `kube`
//! client, by topic: the live inventory and outages (`inventory`), default-deny generation
//! (`generator`), leader election (`leader`), the background audit (`audit`), the policies
//! applied to the cluster (`policies`), the shipped RBAC (`rbac`) and the generated
//! ValidatingAdmissionPolicies the leader keeps in sync (`vap_sync`). The stand-in's own check
//! against a real API server is the testkit's (`testkit/tests/conformance.rs`).
//!
//! What several of them use is here.

mod audit;
mod generator;
mod inventory;
mod leader;
mod matrix;
mod policies;
mod rbac;
mod vap_sync;

use palisade_testkit::apiserver::{ApiServer, NETWORK_POLICIES};
use serde_json::{Value, json};

use crate::common::*;

fn zero_trust_labels() -> Value {
    json!({"network-policy": "zero-trust", "security-level": "medium",
           "pod-security.kubernetes.io/enforce": "restricted"})
}

fn default_deny(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}})
}

const LACKS: &str = "lacks a default-deny NetworkPolicy";

async fn pod_denied_for_default_deny(server: &TestServer, ns: &str) -> bool {
    let rsp = create_pod(&server.client(), ns).await;
    let message = rsp["status"]["message"].as_str().unwrap_or("").to_owned();
    if rsp["allowed"] == true {
        return false;
    }
    assert!(
        message.contains(LACKS),
        "denied for another reason: {message}"
    );
    true
}

async fn policies_in(api: &ApiServer, ns: &str) -> Vec<String> {
    let mut names: Vec<String> = api
        .names(&NETWORK_POLICIES)
        .into_iter()
        .filter_map(|n| n.strip_prefix(&format!("{ns}/")).map(str::to_owned))
        .collect();
    names.sort();
    names
}

fn audit_pod(ns: &str, name: &str, privileged: bool) -> Value {
    let security = if privileged {
        json!({"privileged": true})
    } else {
        json!({"runAsNonRoot": true, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}})
    };
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
        "spec": {"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "registry.example.com/c:1",
                "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}}, "securityContext": security}]}})
}

/// The constraint `no-banned` of [`banned_label_template`]'s kind: Pods may not carry `banned`.
fn no_banned_constraint() -> Value {
    json!({"apiVersion": "constraints.gatekeeper.sh/v1beta1", "kind": "K8sBannedLabel",
           "metadata": {"name": "no-banned"},
           "spec": {"match": {"kinds": [{"apiGroups": [""], "kinds": ["Pod"]}]},
                    "parameters": {"label": "banned"}}})
}

fn banned_label_template(name: &str, kind: &str, rego_extra: &str) -> Value {
    json!({
        "apiVersion": "templates.gatekeeper.sh/v1beta1",
        "kind": "ConstraintTemplate",
        "metadata": {"name": name},
        "spec": {
            "crd": {"spec": {"names": {"kind": kind}, "validation": {"openAPIV3Schema": {
                "type": "object", "properties": {"label": {"type": "string"}}}}}},
            "targets": [{"target": "admission.k8s.gatekeeper.sh", "rego": format!(
                "package {name}\n\nviolation[{{\"msg\": msg}}] {{\n  input.review.object.metadata.labels[input.parameters.label]\n  msg := sprintf(\"label %v is banned\", [input.parameters.label])\n}}\n{rego_extra}")}],
        },
    })
}
