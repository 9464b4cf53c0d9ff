//! What the shape of the core guarantees: the inventory is data handed to evaluations (a change
//! recompiles nothing), every suite runs the same on both engines, one decision path for the CLI
//! and the webhook, and evaluation that the request timeout bounds.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade::cli::test as objects;
use palisade::manifest::files;
use palisade::policy::EngineOptions;
use palisade::state::bundle_store::BundleStore;
use palisade::suite::{self, Outcome};
use palisade::telemetry::metrics::Metrics;
use serde_json::json;

use crate::common::*;

#[test]
fn every_suite_passes_on_the_interpreter_too() {
    // The interpreter reads data.inventory through a different mechanism than the VM; the
    // suites with inventory cases prove both read the same snapshot.
    let interpreter = EngineOptions {
        vm: false,
        ..EngineOptions::default()
    };
    for dir in ["tests/data/gatekeeper", "tests/data/zero-trust"] {
        let results = suite::run_path(&repo_path(dir), &interpreter).unwrap();
        let failures: Vec<String> = results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Fail(_)))
            .map(|r| r.to_string())
            .collect();
        assert!(failures.is_empty(), "{dir}: {failures:#?}");
        assert!(results.len() > 20, "{dir}: {}", results.len());
    }
}

/// The default bundle and the default-deny required by it, served from files.
fn file_sources(dir: &Path, vm: bool) -> (BundleStore, PathBuf) {
    let inventory = dir.join("inventory.yaml");
    std::fs::copy(repo_path("tests/data/mutation/namespaces.yaml"), &inventory).unwrap();
    let options = EngineOptions {
        vm,
        ..EngineOptions::default()
    };
    let sources = BundleStore::load(
        &repo_path("policies"),
        options,
        vec![inventory.clone()],
        Arc::new(Metrics::new()),
    )
    .unwrap();
    (sources, inventory)
}

#[test]
fn an_inventory_change_recompiles_nothing_and_changes_the_decision() {
    for vm in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let (sources, inventory_file) = file_sources(dir.path(), vm);
        let bundle = sources.bundle().load();
        let templates: Vec<_> = bundle.policies().templates().cloned().collect();
        let review =
            palisade::admission::decode(&fixture("admission/validate-create-pod.json")).unwrap();
        let before = validate(&bundle, &sources.inventory().load(), &review);
        assert!(
            before
                .iter()
                .any(|v| v.message.contains("lacks a default-deny")),
            "{before:?}"
        );

        // A default-deny appears in the inventory.
        let mut text = std::fs::read_to_string(&inventory_file).unwrap();
        text.push_str("\n---\n");
        text.push_str(
            &std::fs::read_to_string(repo_path("tests/data/guides/default-deny.yaml")).unwrap(),
        );
        std::fs::write(&inventory_file, text).unwrap();
        assert!(sources.reload(), "the changed inventory was not loaded");

        let after_bundle = sources.bundle().load();
        assert!(
            Arc::ptr_eq(&bundle, &after_bundle),
            "the bundle was rebuilt for an inventory change"
        );
        for (old, new) in templates.iter().zip(after_bundle.policies().templates()) {
            assert!(
                Arc::ptr_eq(old, new),
                "template {} was recompiled",
                old.name
            );
        }
        let after = validate(&after_bundle, &sources.inventory().load(), &review);
        assert!(
            !after
                .iter()
                .any(|v| v.message.contains("lacks a default-deny")),
            "vm={vm}: {after:?}"
        );
        assert!(!sources.reload(), "nothing changed on disk");
    }
}

#[tokio::test]
async fn palisade_test_and_the_webhook_decide_alike() {
    let inventory = [
        "tests/data/mutation/namespaces.yaml",
        "tests/data/guides/default-deny.yaml",
    ];
    let arg = inventory
        .iter()
        .map(|p| repo_path(p).display().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let policies = repo_path("policies").display().to_string();
    let server = TestServer::start(&["--policies", &policies, "--inventory", &arg]).await;
    let client = server.client();

    let bundle = palisade::bundle::load(&repo_path("policies"), &EngineOptions::default()).unwrap();
    let objects: Vec<_> = inventory
        .iter()
        .flat_map(|p| files::read_path(&repo_path(p)).unwrap())
        .map(|d| d.value)
        .collect();
    let mut compared = 0;
    for (file, endpoint) in admission_fixtures() {
        if endpoint != "/validate" {
            continue;
        }
        let docs = files::read_file(&file).unwrap();
        let report = objects::check(&bundle, docs, objects.clone())
            .unwrap()
            .remove(0);
        let body = std::fs::read(&file).unwrap();
        let rsp = client.review(Proto::Http2, "/validate", &body).await;
        let name = file.display();
        assert_eq!(rsp["allowed"], report.response.allowed, "{name}");
        assert_eq!(
            rsp["status"]["message"].as_str().unwrap_or_default(),
            report.response.message,
            "{name}"
        );
        let warnings: Vec<String> = rsp["warnings"]
            .as_array()
            .map(|w| w.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        assert_eq!(warnings, report.response.warnings, "{name}");
        compared += 1;
    }
    assert!(compared >= 10, "{compared}");
}

fn thing(n: u64) -> Vec<u8> {
    edited_review("validate-create-namespace.json", |v| {
        v["request"]["kind"] = json!({"group": "example.com", "version": "v1", "kind": "Thing"});
        v["request"]["object"] = json!({"apiVersion": "example.com/v1", "kind": "Thing",
            "metadata": {"name": "t"}, "spec": {"n": n}});
    })
}

#[tokio::test]
async fn a_template_slower_than_the_request_timeout_gets_504_while_others_are_answered() {
    let server = slow_server("1500ms").await;
    let client = server.client();

    let slow_client = client.clone();
    let started = Instant::now();
    let slow = tokio::spawn(async move {
        slow_client
            .post(Proto::Http2, "/validate", thing(2000))
            .await
            .unwrap()
    });
    // While the slow review runs, quick ones are answered, over both protocols.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut answered = 0;
    while started.elapsed() < Duration::from_millis(1200) {
        let quick = Instant::now();
        for proto in [Proto::Http1, Proto::Http2] {
            let rsp = client.review(proto, "/validate", &thing(3)).await;
            assert_eq!(rsp["allowed"], true, "{rsp}");
        }
        assert!(
            quick.elapsed() < Duration::from_millis(500),
            "a quick review waited {:?} behind the slow one",
            quick.elapsed()
        );
        answered += 2;
    }
    assert!(answered >= 4, "{answered}");

    let rsp = slow.await.unwrap();
    let took = started.elapsed();
    assert_eq!(rsp.status, 504, "{}", String::from_utf8_lossy(&rsp.body));
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(5),
        "answered after {took:?}, not at the request timeout"
    );
    let metrics = server.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"palisade_admission_reviews_total{endpoint="validate",result="timeout"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
}

async fn slow_server(request_timeout: &str) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("bundle");
    std::fs::create_dir(&policies).unwrap();
    // The engine tests' hazards: seconds on `spec.n: 2000`, at once on anything else.
    std::fs::write(policies.join("slow.yaml"), crate::common::templates::BUNDLE).unwrap();
    let policies = policies.display().to_string();
    TestServer::start_in(
        dir,
        &[
            "--policies",
            &policies,
            "--request-timeout",
            request_timeout,
            "--eval-timeout",
            "30s",
        ],
    )
    .await
}

#[tokio::test]
async fn a_client_that_disconnects_mid_review_leaves_nothing_in_flight() {
    let server = slow_server("3s").await;
    let client = server.client();
    // An HTTP/2 client gives up on a review still being evaluated: hyper drops the handler.
    let gone =
        tokio::spawn(async move { client.post(Proto::Http2, "/validate", thing(2000)).await });
    assert!(
        in_flight_becomes(server.health, 1.0).await,
        "the review is not counted in flight"
    );
    gone.abort();
    assert!(
        in_flight_becomes(server.health, 0.0).await,
        "the abandoned review is still counted in flight"
    );
}

async fn in_flight_becomes(health: std::net::SocketAddr, want: f64) -> bool {
    eventually(Duration::from_secs(2), || async move {
        metric(
            &http_get(health, "/metrics").await.1,
            "palisade_admission_reviews_in_flight",
        ) == Some(want)
    })
    .await
}
