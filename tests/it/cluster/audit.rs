//! The leader's background audit of what runs: metrics without the PolicyReport CRD, reports
//! with it, pods listed in pages, each run replacing the last.

use std::time::Duration;

use palisade_testkit::apiserver::{
    ApiServer, CLUSTER_POLICY_REPORTS, NAMESPACES, PODS, POLICY_REPORTS,
};
use palisade_testkit::cluster::{namespace, palisade};
use serde_json::json;

use super::{audit_pod, zero_trust_labels};
use crate::common::*;

/// The leader audits what runs: pods and NetworkPolicies listed from the API a page at a time
/// (the live inventory holds NetworkPolicies pruned to what templates read), Namespaces from the
/// live inventory (held whole); without the PolicyReport CRD it keeps
/// its metrics, with it it publishes one report per namespace and a cluster report with the
/// default-deny coverage, and each run replaces the last.
#[tokio::test]
async fn the_leader_audits_what_runs_into_policy_reports() {
    let api = ApiServer::start().await;
    api.create(namespace("shop", zero_trust_labels())).unwrap();
    api.create(namespace("legacy", zero_trust_labels()))
        .unwrap();
    api.create(namespace("bare", json!({}))).unwrap();
    api.create(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "default-deny-all", "namespace": "shop"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}),
    )
    .unwrap();
    api.create(audit_pod("shop", "debug", true)).unwrap();
    for i in 0..3 {
        api.create(audit_pod("shop", &format!("web-{i}"), false))
            .unwrap();
    }
    api.create(audit_pod("legacy", "old", false)).unwrap();
    api.create(audit_pod("kube-system", "exempt", true))
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "audit:\n  interval: 1s\n  pageSize: 2\n  maxResultsPerReport: 2\n",
    )
    .unwrap();
    let config = config.display().to_string();
    let server = palisade(
        &api,
        "audit-leader",
        &["--generate-default-deny", "false", "--config", &config],
    )
    .await;

    // Without the CRD: metrics only.
    let audited = eventually(Duration::from_secs(10), || async {
        metric(
            &server.metrics().await,
            "palisade_audit_runs_total{result=\"ok\"}",
        )
        .is_some_and(|n| n >= 1.0)
    })
    .await;
    let metrics = server.metrics().await;
    assert!(audited, "{metrics}");
    assert_eq!(
        metric(&metrics, "palisade_default_deny_coverage_ratio"),
        Some(0.5),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "palisade_namespaces_without_default_deny"),
        Some(1.0)
    );
    // Counted before exemptions: 6 pods, 8 namespaces, 1 NetworkPolicy.
    assert_eq!(
        metric(&metrics, "palisade_audit_objects"),
        Some(15.0),
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "palisade_audit_violations{constraint=\"pod-security-restricted\",action=\"deny\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    assert!(api.names(&NAMESPACES).contains(&"shop".to_owned()));
    let pages = api
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET /api/v1/pods?") && r.contains("continue="))
        .count();
    assert!(
        pages >= 2,
        "pods were listed in pages of 2: {:?}",
        api.requests()
    );
    assert!(
        api.requests().iter().any(|r| r
            .starts_with("GET /apis/networking.k8s.io/v1/networkpolicies?")
            && r.contains("limit=2")),
        "NetworkPolicies were listed by the audit in pages of 2: {:?}",
        api.requests()
    );

    // With the CRD: the reports.
    api.install_crd("wgpolicyk8s.io");
    let published = eventually(Duration::from_secs(10), || async {
        api.get(&CLUSTER_POLICY_REPORTS, "", "palisade-audit")
            .is_ok()
            && api.get(&POLICY_REPORTS, "legacy", "palisade-audit").is_ok()
    })
    .await;
    assert!(published, "reports: {:?}", api.names(&POLICY_REPORTS));
    let shop = api.get(&POLICY_REPORTS, "shop", "palisade-audit").unwrap();
    assert_eq!(
        shop["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "palisade"
    );
    assert_eq!(
        shop["metadata"]["managedFields"][0]["manager"],
        "palisade-audit"
    );
    assert_eq!(
        shop["summary"]["pass"], 4,
        "three clean pods and the NetworkPolicy: {shop}"
    );
    assert_eq!(shop["summary"]["fail"], 3, "{shop}");
    let results = shop["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "bounded by maxResultsPerReport");
    assert!(
        shop["metadata"]["annotations"]["palisade.dev/results-omitted"]
            .as_str()
            .unwrap()
            .starts_with("1 of 3")
    );
    assert!(
        results
            .iter()
            .all(|r| r["resources"][0]["name"] == "debug" && r["result"] == "fail"),
        "{shop}"
    );
    let cluster = api
        .get(&CLUSTER_POLICY_REPORTS, "", "palisade-audit")
        .unwrap();
    let policies: Vec<(&str, &str)> = cluster["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["policy"].as_str().unwrap(),
                r["resources"][0]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        policies.contains(&("default-deny-coverage", "legacy")),
        "{policies:?}"
    );
    assert!(
        policies.contains(&("namespace-zero-trust-labels", "bare")),
        "{policies:?}"
    );
    assert!(!policies.iter().any(|(_, n)| *n == "shop"), "{policies:?}");
    assert!(
        api.get(&POLICY_REPORTS, "kube-system", "palisade-audit")
            .is_err(),
        "exempt namespaces are not audited"
    );

    // A second run replaces the reports: the privileged pod goes, the legacy pod goes.
    api.delete(&PODS, "shop", "debug").unwrap();
    api.delete(&PODS, "legacy", "old").unwrap();
    let replaced = eventually(Duration::from_secs(10), || async {
        api.get(&POLICY_REPORTS, "shop", "palisade-audit")
            .is_ok_and(|r| r["summary"]["fail"] == 0)
            && api
                .get(&POLICY_REPORTS, "legacy", "palisade-audit")
                .is_err()
    })
    .await;
    assert!(
        replaced,
        "{:?}",
        api.get(&POLICY_REPORTS, "shop", "palisade-audit")
    );
    let report_pages = api
        .requests()
        .iter()
        .filter(|r| {
            r.starts_with("GET /apis/wgpolicyk8s.io/v1alpha2/policyreports?")
                && r.contains("limit=2")
        })
        .count();
    assert!(
        report_pages >= 1,
        "the audit's own reports are listed in pages (of 2 here) too: {:?}",
        api.requests()
    );
    let shop = api.get(&POLICY_REPORTS, "shop", "palisade-audit").unwrap();
    assert_eq!(shop["results"], json!([]));
    assert_eq!(
        api.names(&POLICY_REPORTS),
        ["shop/palisade-audit"],
        "one report per namespace, never duplicated"
    );
}
