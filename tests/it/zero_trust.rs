//! The zero-trust bundle in policies/: its Suites, the zero-trust guides' NetworkPolicies, and the
//! whole flow over HTTPS as the API server drives it.

use std::path::PathBuf;

use crate::common::*;
use base64::Engine as _;
use palisade::bundle::Bundle;
use palisade::cli::test as objects;
use palisade::cli::verify::{self as suite, Expect};
use palisade::policy::{Action, EngineOptions};
use palisade::sources::{bundle::load_bundle, files as source};
use serde_json::{Value, json};

#[test]
fn every_zero_trust_suite_passes() {
    let results = passing_suites("tests/data/zero-trust", &EngineOptions::default());
    assert_eq!(results.len(), 85);
}

#[test]
fn every_policy_has_three_allowed_and_three_disallowed_cases() {
    let suites = suite::find_suites(&repo_path("tests/data/zero-trust")).unwrap();
    let mut templates = std::collections::BTreeSet::new();
    for file in suites {
        for test in suite::parse_suite(&file).unwrap().tests {
            let allowed = test
                .cases
                .iter()
                .filter(|c| c.assertions.iter().all(|a| a.violations == Expect::No))
                .count();
            let disallowed = test.cases.len() - allowed;
            assert!(
                allowed >= 3 && disallowed >= 3,
                "{}: {allowed} allowed, {disallowed} disallowed",
                test.name
            );
            templates.insert(test.template.canonicalize().unwrap());
        }
    }
    let bundle: Vec<PathBuf> = std::fs::read_dir(repo_path("policies/zero-trust"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .join("template.yaml")
                .canonicalize()
                .unwrap()
        })
        .collect();
    for t in &bundle {
        assert!(templates.contains(t), "{} has no Suite", t.display());
    }
}

fn default_bundle() -> Bundle {
    load_bundle(&repo_path("policies"), &EngineOptions::default()).unwrap()
}

fn check(files: &[&str]) -> Vec<objects::Report> {
    let mut docs = Vec::new();
    for f in files {
        docs.extend(source::read_path(&repo_path(&format!("tests/data/guides/{f}"))).unwrap());
    }
    objects::check(&default_bundle(), docs, Vec::new()).unwrap()
}

/// The default bundle is on the request path of every review: every template must run on
/// regorus' VM (about four times the interpreter's speed), so that no compatibility workaround
/// quietly moves one to the interpreter. The one exception is named: NetworkPolicy hygiene calls
/// Palisade's `palisade.ip_coverage` builtin, which regorus' VM cannot call, and only
/// NetworkPolicy reviews (rare next to Pods) pay for it.
#[test]
fn every_default_template_runs_on_the_vm() {
    let bundle = default_bundle();
    let off: Vec<&str> = bundle
        .policies()
        .templates()
        .filter(|t| !t.on_vm())
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(off, ["palisadenetworkpolicyhygiene"], "on the interpreter");
    assert!(bundle.policies().templates().count() >= 6);
}

#[test]
fn the_guides_network_policies_are_admitted_as_written() {
    let reports = check(&[
        "default-deny.yaml",
        "allow-dns.yaml",
        "three-tier",
        "external-api.yaml",
        "database-isolation",
    ]);
    assert_eq!(reports.len(), 12);
    for r in &reports {
        let denied: Vec<_> = r
            .violations
            .iter()
            .filter(|v| v.action == Action::Deny)
            .collect();
        assert!(denied.is_empty(), "{}: {denied:?}", r.document.origin);
    }
    // The external API policy reaches private ranges through 0.0.0.0/0: a warning, not a denial.
    let external = reports
        .iter()
        .find(|r| r.document.name() == "allow-external-api")
        .unwrap();
    assert!(
        external.violations.iter().all(|v| v.action == Action::Warn),
        "{:?}",
        external.violations
    );
    assert_eq!(external.violations.len(), 3);
}

#[test]
fn broken_variants_are_rejected_with_what_to_fix() {
    for (file, message) in [
        (
            "broken-no-ports.yaml",
            "NetworkPolicy \"backend-from-frontend\" ingress[0] allows every port: list the ports it needs under ports",
        ),
        (
            "broken-no-metadata-except.yaml",
            "NetworkPolicy \"allow-external-api\" egress[0] allows 0.0.0.0/0 without excepting the cloud metadata address 169.254.169.254/32: add it under ipBlock.except",
        ),
        (
            "broken-namespace-selector-all.yaml",
            "NetworkPolicy \"allow-from-everywhere\" ingress[0] admits every pod of every namespace on every port (its namespaceSelector matches every namespace, or all but a few, like namespaceSelector: {}): name the namespaces with kubernetes.io/metadata.name and the pods with a podSelector",
        ),
    ] {
        let reports = check(&[file]);
        let denied: Vec<&str> = reports[0]
            .violations
            .iter()
            .filter(|v| v.action == Action::Deny)
            .map(|v| v.message.as_str())
            .collect();
        assert!(
            denied.iter().any(|d| d.starts_with(message)),
            "{file}: {denied:#?}"
        );
    }
}

async fn server() -> TestServer {
    let p = |rel: &str| repo_path(rel).display().to_string();
    let inventory = format!(
        "{},{}",
        p("tests/data/mutation/namespaces.yaml"),
        p("tests/data/guides/default-deny.yaml")
    );
    TestServer::start(&["--policies", &p("policies"), "--inventory", &inventory]).await
}

#[tokio::test]
async fn namespaces_need_the_zero_trust_labels() {
    let server = server().await;
    let client = server.client();
    let rsp = client
        .review(
            Proto::Http2,
            "/validate",
            &edited_review("validate-create-namespace.json", |_| {}),
        )
        .await;
    assert_eq!(rsp["allowed"], false);
    let message = rsp["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("[namespace-zero-trust-labels] namespace \"payments\" lacks label network-policy: add network-policy: <zero-trust>"),
        "{message}"
    );
    let labelled = edited_review("validate-create-namespace.json", |v| {
        v["request"]["object"]["metadata"]["labels"] = json!({
            "kubernetes.io/metadata.name": "payments", "network-policy": "zero-trust",
            "security-level": "high", "pod-security.kubernetes.io/enforce": "restricted"});
    });
    let rsp = client.review(Proto::Http1, "/validate", &labelled).await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
}

/// /mutate, the patch applied as the API server does, then /validate on the result.
pub(crate) async fn create_pod(client: &Client, namespace: &str) -> Value {
    let mut review: Value =
        serde_json::from_slice(&fixture("admission/mutate-create-pod.json")).unwrap();
    in_namespace(&mut review, namespace);
    review["request"]["object"]["spec"]["containers"][0]["resources"] =
        json!({"limits": {"cpu": "250m", "memory": "64Mi"}});
    let rsp = client
        .review(
            Proto::Http2,
            "/mutate",
            &serde_json::to_vec(&review).unwrap(),
        )
        .await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(rsp["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    json_patch::patch(&mut review["request"]["object"], &patch).unwrap();
    client
        .review(
            Proto::Http2,
            "/validate",
            &serde_json::to_vec(&review).unwrap(),
        )
        .await
}

#[tokio::test]
async fn a_plain_pod_is_admitted_only_where_a_default_deny_exists() {
    let server = server().await;
    let client = server.client();
    let rsp = create_pod(&client, "payments").await;
    assert_eq!(rsp["allowed"], true, "{rsp}");

    let rsp = create_pod(&client, "shop").await;
    assert_eq!(rsp["allowed"], false);
    assert_eq!(
        rsp["status"]["message"],
        "[workloads-need-default-deny] namespace \"shop\" lacks a default-deny NetworkPolicy: apply one with podSelector {} and policyTypes [Ingress, Egress]"
    );
}

#[tokio::test]
async fn the_inventory_is_reloaded_like_the_bundle() {
    let inventory = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo_path("tests/data/mutation/namespaces.yaml"),
        inventory.path().join("namespaces.yaml"),
    )
    .unwrap();
    let policies = repo_path("policies").display().to_string();
    let dir = inventory.path().display().to_string();
    let server = TestServer::start(&["--policies", &policies, "--inventory", &dir]).await;
    let client = server.client();
    assert_eq!(create_pod(&client, "payments").await["allowed"], false);

    // The default-deny appears, as a ConfigMap update would bring it.
    std::fs::copy(
        repo_path("tests/data/guides/default-deny.yaml"),
        inventory.path().join("default-deny.yaml"),
    )
    .unwrap();
    assert!(
        eventually(std::time::Duration::from_secs(10), || async {
            metric(&server.metrics().await, "palisade_policy_reloads_total") == Some(1.0)
        })
        .await,
        "the inventory change was not picked up"
    );
    let rsp = create_pod(&client, "payments").await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
}
