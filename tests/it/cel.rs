//! K8sNativeValidation (CEL) templates through the webhook, over HTTPS on HTTP/1.1 and HTTP/2,
//! with the API server's captured reviews: the namespaceObject from the inventory, and the cost
//! limit failing a constraint closed.

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn cel_templates_judge_reviews_over_https_and_fail_closed() {
    let server = serve_files(
        &[
            "tests/data/cel/webhook/namespace-owner.yaml",
            "tests/data/cel/webhook/env-pairs.yaml",
        ],
        "tests/data/gatekeeper/namespace-object/inventory/namespaces.yaml",
    )
    .await;
    let client = server.client();
    for proto in [Proto::Http1, Proto::Http2] {
        pod_in_namespaces(
            &client,
            proto,
            &[
                ("shop", true, ""),
                ("scratch", false, "namespace <scratch> has no owner label"),
                ("nowhere", false, "the Namespace \"nowhere\" is not known"),
            ],
        )
        .await;
        // 120 environment variables: 120³ elements, past the cost limit.
        let body = edited_review("validate-create-pod.json", |r| {
            in_namespace(r, "shop");
            let env: Vec<_> = (0..120)
                .map(|i| json!({"name": format!("V{i}"), "value": "x"}))
                .collect();
            r["request"]["object"]["spec"]["containers"][0]["env"] = json!(env);
        });
        let rsp = client.review(proto, "/validate", &body).await;
        assert_eq!(rsp["allowed"], false, "{rsp}");
        let message = rsp["status"]["message"].as_str().unwrap();
        // Whichever limit comes first (a debug build reaches the time limit before the cost
        // limit), the constraint fails closed.
        assert!(
            message.contains("unique-env-names")
                && (message.contains("cost limit") || message.contains("time limit")),
            "{message}"
        );
    }
}
