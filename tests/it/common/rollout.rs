//! A server rolled out with a configuration file the test rewrites, and the reviews of the
//! break-glass tests: a privileged Pod, a Deployment with break-glass on its template, and the
//! pod its ReplicaSet controller makes.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::{TestServer, fixture, in_namespace};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The default bundle, the mutation tests' namespaces (payments has a default-deny, shop has
/// none) and a configuration file that the test can rewrite.
pub async fn start(config: &str, extra: &[&str]) -> (TestServer, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config_dir = dir.path().join("config");
    std::fs::create_dir(&config_dir).unwrap();
    let config_path = config_dir.join("config.yaml");
    std::fs::write(&config_path, config).unwrap();
    let inventory = format!(
        "{ROOT}/tests/data/mutation/namespaces.yaml,{ROOT}/tests/data/guides/default-deny.yaml"
    );
    let policies = format!("{ROOT}/policies");
    let config_arg = config_path.display().to_string();
    let mut args = vec![
        "--policies",
        &policies,
        "--inventory",
        &inventory,
        "--config",
        &config_arg,
        "--policy-poll-interval",
        "200ms",
    ];
    args.extend_from_slice(extra);
    (TestServer::start_in(dir, &args).await, config_path)
}

/// The captured Pod review (no securityContext, no limits: the default bundle denies it) in
/// `namespace`, sent by `user`.
pub fn pod_review(namespace: &str, user: &str, groups: &[&str], annotations: Value) -> Value {
    let mut review: Value =
        serde_json::from_slice(&fixture("admission/validate-create-pod.json")).unwrap();
    in_namespace(&mut review, namespace);
    review["request"]["userInfo"] = json!({"username": user, "groups": groups});
    review["request"]["object"]["metadata"]["annotations"] = annotations;
    review["request"]["object"]["spec"]["containers"][0]["securityContext"] =
        json!({"privileged": true});
    review
}

pub fn expiry(ahead: Duration) -> String {
    let at = time::OffsetDateTime::now_utc() + ahead;
    at.replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

pub fn glass(reason: &str, ahead: Duration) -> Value {
    json!({"palisade.dev/break-glass": reason, "palisade.dev/break-glass-expires": expiry(ahead)})
}

pub const BREAK_GLASS: &str =
    "breakGlass:\n  users: [alice]\n  groups: [sre-oncall]\n  maxTTL: 4h\n";

/// alice's privileged Deployment with break-glass on its pod template, as the API server sends it.
pub fn glass_deployment(user: &str, annotations: Value) -> Value {
    let mut review: Value =
        serde_json::from_slice(&fixture("admission/validate-create-deployment.json")).unwrap();
    in_namespace(&mut review, "shop");
    review["request"]["userInfo"] = json!({"username": user, "groups": []});
    let template = &mut review["request"]["object"]["spec"]["template"];
    template["metadata"]["annotations"] = annotations;
    template["spec"]["containers"][0]["securityContext"] = json!({"privileged": true});
    review
}

/// A pod the ReplicaSet controller makes of `deployment`'s template, as Kubernetes makes it.
pub fn controller_pod(deployment: &Value) -> Value {
    let template = &deployment["request"]["object"]["spec"]["template"];
    let mut review = pod_review(
        "shop",
        "system:serviceaccount:kube-system:replicaset-controller",
        &["system:serviceaccounts"],
        json!({}),
    );
    let pod = &mut review["request"]["object"];
    pod["metadata"] = template["metadata"].clone();
    pod["metadata"]["name"] = json!("web-5d8f9c-x2l4q");
    pod["metadata"]["namespace"] = json!("shop");
    pod["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d8f9c", "uid": "3f1c", "controller": true, "blockOwnerDeletion": true}]);
    pod["metadata"]["labels"]["pod-template-hash"] = json!("5d8f9c");
    pod["spec"] = template["spec"].clone();
    // What the API server adds on its way: the service account token, scheduling defaults.
    pod["spec"]["serviceAccountName"] = json!("default");
    pod["spec"]["enableServiceLinks"] = json!(true);
    pod["spec"]["volumes"] = json!([{"name": "kube-api-access-7xq2m", "projected": {"sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}]);
    pod["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "kube-api-access-7xq2m", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}]);
    pod["spec"]["tolerations"] = json!([{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]);
    review
}
