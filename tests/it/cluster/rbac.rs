//! The shipped RBAC, both ways: the stand-in holds every test to manifests/base/rbac.yaml, and
//! here one replica uses every permission it grants.

use std::time::Duration;

use palisade_testkit::apiserver::{ApiServer, NETWORK_POLICIES, PODS, POLICY_REPORTS};
use palisade_testkit::cluster::{
    apply_webhook_configurations, fake_kubelet, install_gatekeeper_crds, namespace,
    start_palisade_in,
};
use serde_json::json;

use super::{
    audit_pod, banned_label_template, no_banned_constraint, policies_in, zero_trust_labels,
};
use crate::common::*;

/// Least privilege, the other way round: the stand-in holds every test to
/// manifests/base/rbac.yaml (so Palisade needs no more), and here one replica does everything
/// Palisade does in a cluster until every (rule, resource, verb) the manifests grant has been
/// used (so they grant no more than Palisade needs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_permission_the_shipped_rbac_grants_is_used() {
    let api = ApiServer::start().await;
    install_gatekeeper_crds(&api);
    api.install_crd("wgpolicyk8s.io");
    apply_webhook_configurations(&api);
    api.create(namespace("palisade-system", json!({}))).unwrap();
    api.create(namespace("shop", zero_trust_labels())).unwrap();
    api.create(namespace("legacy", json!({}))).unwrap();
    api.create(audit_pod("shop", "debug", true)).unwrap();
    api.create(audit_pod("legacy", "old", true)).unwrap();
    // The certificates' directory, which the fake kubelet fills from the Secret.
    let certs = tempfile::tempdir().unwrap();
    let kubelet = fake_kubelet(api.clone(), certs.path().to_path_buf());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "audit:\n  interval: 1s\n").unwrap();
    let config = config.display().to_string();
    let server = start_palisade_in(
        &api,
        "everything",
        certs,
        &[
            "--config",
            &config,
            "--manage-certs",
            "--cert-check-interval",
            "200ms",
        ],
    )
    .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            http_get(server.health, "/readyz").await.0 == 200
        })
        .await
    );
    // Generation, then a rule someone added to a generated policy, which Palisade removes.
    assert!(
        eventually(Duration::from_secs(10), || async {
            policies_in(&api, "shop").await.len() == 2
        })
        .await
    );
    let mut edited = api
        .get(&NETWORK_POLICIES, "shop", "default-deny-all")
        .unwrap();
    edited["spec"]["ingress"] = json!([{}]);
    edited["spec"]["policyTypes"] = json!(["Ingress", "Egress"]);
    api.update("someone", edited).unwrap();
    // A template and its constraint applied with kubectl, then the template deleted.
    api.apply(
        "kubectl",
        banned_label_template("k8sbannedlabel", "K8sBannedLabel", ""),
        false,
    )
    .unwrap();
    let constraint_crd_served = eventually(Duration::from_secs(10), || async {
        api.defined("constraints.gatekeeper.sh", "k8sbannedlabel", "v1beta1")
            .is_some()
    })
    .await;
    assert!(constraint_crd_served);
    api.apply("kubectl", no_banned_constraint(), false).unwrap();
    // The audit reports, then a namespace's last violating pod goes and its report with it.
    assert!(
        eventually(Duration::from_secs(10), || async {
            api.get(&POLICY_REPORTS, "legacy", "palisade-audit").is_ok()
        })
        .await
    );
    api.delete(&PODS, "legacy", "old").unwrap();
    // Once the audit has written the constraint's status, the template goes, and its
    // constraint CRD with it.
    let constraints = api
        .defined("constraints.gatekeeper.sh", "k8sbannedlabel", "v1beta1")
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            api.get(&constraints, "", "no-banned")
                .is_ok_and(|c| c["status"]["totalViolations"].is_number())
        })
        .await
    );
    let templates = api
        .defined("templates.gatekeeper.sh", "constrainttemplates", "v1")
        .unwrap();
    api.delete(&templates, "", "k8sbannedlabel").unwrap();
    let unused = eventually(Duration::from_secs(15), || async {
        api.rbac_unused().is_empty()
    })
    .await;
    assert!(
        unused,
        "manifests/base/rbac.yaml grants what Palisade never used: {:#?}",
        api.rbac_unused()
    );
    drop(server);
    kubelet.abort();
}
