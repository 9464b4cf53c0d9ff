//! The default bundle's mutators: golden tests on fixture Pods, and /mutate then /validate over
//! HTTPS as the API server calls them.

use std::path::Path;

use crate::common::*;
use base64::Engine as _;
use palisade::admission::{Endpoint, Review};
use palisade::bundle::Bundle;
use palisade::decide::Decider;
use palisade::inventory::Inventory;
use palisade::manifest::files as source;
use palisade::policy::EngineOptions;
use serde_json::{Value, json};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(rel: &str) -> Value {
    let docs = source::read_file(&Path::new(ROOT).join(rel)).unwrap();
    assert_eq!(docs.len(), 1, "{rel}");
    docs[0].value.clone()
}

/// The default bundle, and the namespaces the mutators' namespaceSelectors look up.
fn default_bundle() -> (Bundle, Inventory) {
    let inventory =
        source::read_file(&Path::new(ROOT).join("tests/data/mutation/namespaces.yaml")).unwrap();
    let bundle =
        palisade::bundle::load(&Path::new(ROOT).join("policies"), &EngineOptions::default())
            .unwrap();
    (
        bundle,
        Inventory::from_objects(inventory.into_iter().map(|d| d.value)),
    )
}

/// The patch the one decision path answers with, through /mutate.
fn patch_of(set: &(Bundle, Inventory), review: &Review) -> Option<json_patch::Patch> {
    let decision = Decider::without_exemptions()
        .decide(
            &set.0,
            &set.1,
            Endpoint::Mutate,
            review,
            time::OffsetDateTime::now_utc(),
            None,
        )
        .unwrap();
    assert!(decision.response.allowed, "{:?}", decision.response);
    decision.response.patch.filter(|p| !p.0.is_empty())
}

/// A CREATE review of `pod`, as the API server sends it.
fn create(pod: &Value) -> Review {
    Review::from_request_json(json!({
        "uid": "00000000-0000-4000-8000-000000000000",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "name": pod["metadata"]["name"],
        "namespace": pod["metadata"]["namespace"],
        "operation": "CREATE",
        "userInfo": {"username": "dev"},
        "object": pod,
        "dryRun": false,
    }))
    .unwrap()
}

fn mutate(set: &(Bundle, Inventory), pod: &Value) -> Option<Value> {
    let patch = patch_of(set, &create(pod))?;
    let mut out = pod.clone();
    json_patch::patch(&mut out, &patch).unwrap();
    Some(out)
}

#[test]
fn golden_pods() {
    let set = default_bundle();
    for name in [
        "bare",
        "partial",
        "init-ephemeral",
        "high-security",
        "high-security-opt-out",
    ] {
        let pod = read(&format!("tests/data/mutation/{name}.yaml"));
        let expected = read(&format!("tests/data/mutation/{name}.expected.yaml"));
        let mutated = mutate(&set, &pod).unwrap_or_else(|| panic!("{name}: no patch"));
        assert_eq!(
            mutated,
            expected,
            "{name}: got\n{}",
            serde_json::to_string_pretty(&mutated).unwrap()
        );
        // Idempotent: the mutated pod needs nothing more (reinvocationPolicy: IfNeeded is safe).
        assert_eq!(
            mutate(&set, &mutated),
            None,
            "{name}: mutating again changed it"
        );
    }
}

#[test]
fn explicit_values_are_never_overwritten() {
    let set = default_bundle();
    let pod = read("tests/data/mutation/explicit.yaml");
    assert_eq!(mutate(&set, &pod), None);
}

#[test]
fn other_kinds_are_not_mutated() {
    let set = default_bundle();
    let deployment: Value =
        serde_json::from_slice(&fixture("admission/validate-create-deployment.json")).unwrap();
    let review = Review::from_request_json(deployment["request"].clone()).unwrap();
    assert_eq!(patch_of(&set, &review), None);
}

fn decode_patch(rsp: &Value) -> json_patch::Patch {
    assert_eq!(rsp["patchType"], "JSONPatch", "{rsp}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(rsp["patch"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The default bundle, with payments (security-level high) and its default-deny in the inventory.
async fn server() -> TestServer {
    let path = |rel: &str| Path::new(ROOT).join(rel).display().to_string();
    let inventory = format!(
        "{},{}",
        path("tests/data/mutation/namespaces.yaml"),
        path("tests/data/guides/default-deny.yaml")
    );
    TestServer::start(&["--policies", &path("policies"), "--inventory", &inventory]).await
}

/// The captured pod with resource limits (which the pod security policy requires and no mutator
/// adds).
fn pod_review_with_limits(name: &str) -> Vec<u8> {
    let mut review: Value = serde_json::from_slice(&fixture(name)).unwrap();
    review["request"]["object"]["spec"]["containers"][0]["resources"] =
        json!({"limits": {"cpu": "500m", "memory": "128Mi"}});
    serde_json::to_vec(&review).unwrap()
}

#[tokio::test]
async fn mutate_then_validate_admits_a_plain_pod() {
    let server = server().await;
    let client = server.client();
    for proto in [Proto::Http1, Proto::Http2] {
        let body = pod_review_with_limits("admission/mutate-create-pod.json");
        let rsp = client.review(proto, "/mutate?timeout=5s", &body).await;
        assert_eq!(rsp["allowed"], true);
        let mut review: Value = serde_json::from_slice(&body).unwrap();
        let mut object = review["request"]["object"].clone();
        json_patch::patch(&mut object, &decode_patch(&rsp)).unwrap();
        assert_eq!(object["metadata"]["labels"]["mtls"], "strict");
        assert_eq!(
            object["metadata"]["labels"]["sidecar.istio.io/inject"],
            "true"
        );
        assert_eq!(object["spec"]["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            object["spec"]["containers"][0]["securityContext"]["capabilities"]["drop"],
            json!(["ALL"])
        );

        // The API server then calls /mutate again if needed (nothing to do) and /validate.
        review["request"]["object"] = object;
        let again = serde_json::to_vec(&review).unwrap();
        let rsp = client.review(proto, "/mutate", &again).await;
        assert!(rsp.get("patch").is_none(), "not idempotent: {rsp}");
        let rsp = client.review(proto, "/validate", &again).await;
        assert_eq!(rsp["allowed"], true, "{rsp}");
    }
    let metrics = server.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"palisade_admission_reviews_total{endpoint="mutate",result="patched"}"#
        ),
        Some(2.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn dry_run_is_mutated_like_a_real_request() {
    let server = server().await;
    let client = server.client();
    let dry = client
        .review(
            Proto::Http2,
            "/mutate",
            &fixture("admission/mutate-create-pod-dryrun.json"),
        )
        .await;
    let real = client
        .review(
            Proto::Http2,
            "/mutate",
            &fixture("admission/mutate-create-pod.json"),
        )
        .await;
    assert_eq!(decode_patch(&dry), decode_patch(&real));
}

#[tokio::test]
async fn delete_and_exempt_namespaces_are_not_mutated() {
    let server = server().await;
    let client = server.client();
    let delete = fixture("admission/validate-delete-pod.json");
    let rsp = client.review(Proto::Http1, "/mutate", &delete).await;
    assert_eq!(rsp["allowed"], true);
    assert!(rsp.get("patch").is_none(), "{rsp}");

    let review = edited_review("mutate-create-pod.json", |v| in_namespace(v, "kube-system"));
    let rsp = client.review(Proto::Http1, "/mutate", &review).await;
    assert!(rsp.get("patch").is_none(), "{rsp}");
}

#[tokio::test]
async fn a_pod_in_an_unknown_namespace_is_refused_rather_than_left_unprotected() {
    let server = server().await;
    let client = server.client();
    let review = edited_review("mutate-create-pod.json", |v| in_namespace(v, "unknown"));
    let rsp = client.review(Proto::Http1, "/mutate", &review).await;
    assert_eq!(rsp["allowed"], false, "{rsp}");
    let message = rsp["status"]["message"].as_str().unwrap();
    assert!(message.contains("Namespace \"unknown\""), "{message}");
}
