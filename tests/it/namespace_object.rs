//! `input.review.namespaceObject` (Gatekeeper 3.22+) over HTTPS: the webhook gives a template the
//! Namespace of the object from its inventory, and fails closed when it does not know it.

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn the_webhook_gives_templates_the_namespace_object_or_fails_closed() {
    let server = serve_files(
        &[
            "tests/data/gatekeeper/namespace-object/template.yaml",
            "tests/data/gatekeeper/namespace-object/constraint.yaml",
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
        // A Namespace under review has no namespaceObject (it is cluster-scoped), and this
        // constraint does not match it: admitted, not "not known".
        let body = edited_review("validate-create-namespace.json", |r| {
            r["request"]["object"]["metadata"]["labels"] = json!({"team": "x"});
        });
        let rsp = client.review(proto, "/validate", &body).await;
        assert_eq!(rsp["allowed"], true, "{rsp}");
    }
}
