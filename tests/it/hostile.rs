//! Hostile and malformed reviews: each is answered with a clear error or a decision, within
//! bounds, and the next client is served as before.

use serde_json::{Value, json};

use crate::common::{Proto, TestServer, fixture};

fn review() -> Value {
    serde_json::from_slice(&fixture("admission/validate-create-pod.json")).unwrap()
}

async fn status_and_json(server: &TestServer, proto: Proto, body: Vec<u8>) -> (u16, Value) {
    let rsp = server
        .client()
        .post(proto, "/validate", body)
        .await
        .unwrap();
    (rsp.status, rsp.json())
}

/// 400 with a Status whose message contains `needle`.
async fn rejected(server: &TestServer, body: Vec<u8>, needle: &str) {
    for proto in [Proto::Http1, Proto::Http2] {
        let (status, json) = status_and_json(server, proto, body.clone()).await;
        assert_eq!(status, 400, "{proto:?}: {json}");
        assert_eq!(json["kind"], "Status");
        let message = json["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{proto:?}: {message:?} lacks {needle:?}"
        );
    }
}

#[tokio::test]
async fn an_object_that_is_not_a_mapping_is_refused_not_read_as_empty() {
    // Read as objects, a string or a list would have "no field set" and pass every check.
    let server = TestServer::start(&[]).await;
    for (field, value, found) in [
        ("object", json!("a string"), "a string"),
        ("object", json!([1, 2]), "a list"),
        ("object", json!(42), "a number"),
        ("object", Value::Null, "null"),
        ("oldObject", json!("a string"), "a string"),
    ] {
        let mut r = review();
        r["request"][field] = value;
        rejected(
            &server,
            serde_json::to_vec(&r).unwrap(),
            &format!("request.{field} is {found}, expected the object under review"),
        )
        .await;
    }
    // On DELETE the old object stands in for a missing object, and must be there.
    let mut delete: Value =
        serde_json::from_slice(&fixture("admission/validate-delete-pod.json")).unwrap();
    delete["request"]["oldObject"] = Value::Null;
    delete["request"]["object"] = Value::Null;
    rejected(
        &server,
        serde_json::to_vec(&delete).unwrap(),
        "request.object is null",
    )
    .await;
}

#[tokio::test]
async fn malformed_json_gets_400_naming_the_problem_and_its_position() {
    let server = TestServer::start(&[]).await;
    let text = serde_json::to_string(&review()).unwrap();
    // Nesting past serde_json's limit of 128.
    let deep = text.replacen(
        "\"spec\":{",
        &format!("\"spec\":{{\"n\":{}{},", "[".repeat(500), "]".repeat(500)),
        1,
    );
    assert_ne!(deep, text);
    rejected(
        &server,
        deep.into_bytes(),
        "recursion limit exceeded at line 1",
    )
    .await;
    // A number beyond f64.
    let huge = text.replacen("\"spec\":{", "\"spec\":{\"n\":1e400,", 1);
    rejected(&server, huge.into_bytes(), "number out of range at line 1").await;
    // Invalid UTF-8 inside a string.
    let mut bytes = text.clone().into_bytes();
    let at = text.find("\"uid\":\"").unwrap() + 7;
    bytes[at] = 0xff;
    rejected(&server, bytes, "body is not valid JSON").await;
}

#[tokio::test]
async fn big_numbers_long_lists_and_duplicate_keys_are_decided() {
    let server = TestServer::start(&[]).await;
    let mut r = review();
    // Beyond i64 (read as a float), a list of 200,000 numbers, and a key given twice (the
    // last one counts, as in Go's encoding/json, which the API server uses).
    r["request"]["object"]["metadata"]["annotations"] =
        json!({"big": 123456789012345678901234567890_f64});
    r["request"]["object"]["spec"]["n"] = json!((0..200_000).collect::<Vec<u32>>());
    let text = serde_json::to_string(&r).unwrap().replacen(
        "\"request\":{",
        "\"request\":{\"dryRun\":true,",
        1,
    );
    for proto in [Proto::Http1, Proto::Http2] {
        let (status, json) = status_and_json(&server, proto, text.clone().into_bytes()).await;
        assert_eq!(status, 200, "{proto:?}: {json}");
        assert_eq!(json["kind"], "AdmissionReview", "{json}");
    }
}

#[tokio::test]
async fn an_update_at_the_api_servers_size_limit_is_decided() {
    // etcd stores objects up to 1.5 MiB; an UPDATE carries the object and the old object.
    let server = TestServer::start(&[]).await;
    let mut r: Value =
        serde_json::from_slice(&fixture("admission/validate-update-pod.json")).unwrap();
    let filler = "x".repeat(1_500_000);
    r["request"]["object"]["metadata"]["annotations"] = json!({"filler": filler});
    r["request"]["oldObject"]["metadata"]["annotations"] = json!({"filler": filler});
    let body = serde_json::to_vec(&r).unwrap();
    assert!(body.len() > 3_000_000);
    for proto in [Proto::Http1, Proto::Http2] {
        let (status, json) = status_and_json(&server, proto, body.clone()).await;
        assert_eq!(status, 200, "{proto:?}: {json}");
        assert!(json["response"]["allowed"].is_boolean(), "{json}");
    }
    // And the server still answers a plain review.
    let rsp = server
        .client()
        .review(
            Proto::Http2,
            "/validate",
            &fixture("admission/validate-create-pod.json"),
        )
        .await;
    assert!(rsp["allowed"].is_boolean(), "{rsp}");
}

/// regorus panics formatting a number next to f64::MAX (a policy's `object.get` on it does),
/// found by the review_variant fuzz target (fuzz/regressions/review_variant/). The panic is
/// caught: the constraint fails closed, saying so, and the server goes on.
#[tokio::test]
async fn a_policy_engine_panic_fails_the_constraint_closed_and_the_server_goes_on() {
    let policies = concat!(env!("CARGO_MANIFEST_DIR"), "/policies");
    let server = TestServer::start(&["--policies", policies]).await;
    let mut r: Value =
        serde_json::from_slice(&fixture("admission/validate-update-namespace.json")).unwrap();
    r["request"]["object"]["metadata"] = json!(f64::MAX);
    for proto in [Proto::Http1, Proto::Http2] {
        let (status, json) = status_and_json(&server, proto, serde_json::to_vec(&r).unwrap()).await;
        assert_eq!(status, 200, "{json}");
        let rsp = &json["response"];
        assert_eq!(rsp["allowed"], false, "{rsp}");
        let message = rsp["status"]["message"].as_str().unwrap();
        assert!(
            message.contains("policy evaluation failed: the policy engine panicked"),
            "{message}"
        );
    }
    let (status, json) = status_and_json(
        &server,
        Proto::Http2,
        fixture("admission/validate-update-namespace.json"),
    )
    .await;
    // The captured update is judged on its labels, as before.
    assert_eq!(status, 200);
    let message = json["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("[namespace-zero-trust-labels] namespace \"payments\" lacks label"),
        "{json}"
    );
    // Two constraints read a Namespace's metadata (namespace-zero-trust-labels and
    // mutual-tls-namespaces): each panics once per protocol.
    let metrics = server.metrics().await;
    assert_eq!(
        crate::common::metric(
            &metrics,
            "palisade_evaluation_failures_total{kind=\"panic\"}"
        ),
        Some(4.0),
        "{metrics}"
    );
}
