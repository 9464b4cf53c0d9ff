//! A communication matrix in a cluster: the leader's audit publishes what the matrix forbids
//! into the namespace's PolicyReport and its metrics, and every replica's webhook denies a
//! NetworkPolicy that widens a governed end, judged against the live inventory.

use std::time::Duration;

use palisade_testkit::apiserver::{ApiServer, POLICY_REPORTS};
use palisade_testkit::cluster::start_palisade_with;
use serde_json::{Value, json};

use crate::common::*;
use crate::matrix::{SERVICE_MATRIX, bundle_dir};

#[tokio::test]
async fn the_leader_audits_a_matrix_and_the_webhook_enforces_it_against_the_live_inventory() {
    let api = ApiServer::start().await;
    // The service-matrix guide's cluster and policies, and a policy admitted before the matrix.
    let mut objects: Vec<Value> = SERVICE_MATRIX
        .objects()
        .into_iter()
        .filter(|o| o["kind"] != "Pod")
        .collect();
    // Namespaces first, as the API server needs.
    objects.sort_by_key(|o| o["kind"] != "Namespace");
    for mut object in objects {
        if object["kind"] == "Namespace" {
            // The bundle's own namespace constraint wants these; the matrix does not care.
            let labels = object["metadata"]["labels"].as_object_mut().unwrap();
            labels.insert("network-policy".into(), json!("zero-trust"));
            labels.insert("security-level".into(), json!("medium"));
            labels.insert(
                "pod-security.kubernetes.io/enforce".into(),
                json!("restricted"),
            );
        }
        // The stand-in starts with kube-system, as a cluster does.
        if object["metadata"]["name"] != "kube-system" {
            api.create(object).unwrap();
        }
    }
    api.create(json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "legacy-open", "namespace": "shop"},
        "spec": {"podSelector": {"matchLabels": {"app": "legacy"}}, "policyTypes": ["Egress"], "egress": [{}]}}))
        .unwrap();

    let policies = bundle_dir(SERVICE_MATRIX.matrix);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "audit:\n  interval: 1s\n").unwrap();
    let config = config.display().to_string();
    let server = start_palisade_with(
        &api,
        "matrix-leader",
        tempfile::tempdir().unwrap(),
        policies.path(),
        &["--generate-default-deny", "false", "--config", &config],
    )
    .await;
    let ready = eventually(Duration::from_secs(10), || async {
        http_get(server.health, "/readyz").await.0 == 200
    })
    .await;
    assert!(ready);

    // The audit: the legacy policy's flows, counted per matrix.
    let audited = eventually(Duration::from_secs(10), || async {
        metric(
            &server.metrics().await,
            "palisade_matrix_forbidden_flows{constraint=\"checkout\"}",
        )
        .is_some_and(|n| n >= 1.0)
    })
    .await;
    let metrics = server.metrics().await;
    assert!(audited, "{metrics}");
    let coverage = metric(
        &metrics,
        "palisade_matrix_coverage_ratio{constraint=\"checkout\"}",
    );
    assert!(coverage.is_some_and(|c| c > 0.0 && c < 1.0), "{metrics}");
    assert_eq!(
        metric(
            &metrics,
            "palisade_matrix_blocked_flows{constraint=\"checkout\"}"
        ),
        Some(0.0),
        "{metrics}"
    );

    // With the PolicyReport CRD: shop's report holds the finding, on the legacy policy.
    api.install_crd("wgpolicyk8s.io");
    let reported = eventually(Duration::from_secs(10), || async {
        api.get(&POLICY_REPORTS, "shop", "palisade-audit")
            .is_ok_and(|r| {
                r["results"].as_array().is_some_and(|results| {
                    results.iter().any(|x| {
                        x["policy"] == "checkout"
                            && x["resources"][0]["name"] == "legacy-open"
                            && x["message"].as_str().is_some_and(|m| {
                                m.contains("the egress of shop lets pods app=legacy")
                            })
                    })
                })
            })
    })
    .await;
    assert!(
        reported,
        "{:#}",
        api.get(&POLICY_REPORTS, "shop", "palisade-audit")
            .unwrap_or(Value::Null)
    );

    // The webhook: one port more to postgres is denied, naming the flow.
    let mut review: Value =
        serde_json::from_slice(&fixture("admission/validate-create-networkpolicy.json")).unwrap();
    let policy = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "postgres-5434", "namespace": "shop"},
        "spec": {"podSelector": {"matchLabels": {"app": "checkout"}}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "data"}},
                "podSelector": {"matchLabels": {"app": "postgres"}}}], "ports": [{"port": 5434}]}]}});
    review["request"]["name"] = json!("postgres-5434");
    review["request"]["namespace"] = json!("shop");
    review["request"]["object"] = policy;
    let rsp = send(&server.client(), "/validate", &review).await;
    let message = rsp["status"]["message"].as_str().unwrap_or_default();
    assert_eq!(rsp["allowed"], false, "{rsp:#}");
    assert!(
        message.contains("[checkout]")
            && message.contains("pods app=postgres in data")
            && message.contains("TCP 5434")
            && message.contains("shop/postgres-5434 egress[0]"),
        "{message}"
    );
}
