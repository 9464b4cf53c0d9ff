//! `input.review.namespaceObject` (Gatekeeper 3.22+) over HTTPS: the webhook gives a template the
//! Namespace of the object from its inventory, and fails closed when it does not know it.

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn the_webhook_gives_templates_the_namespace_object_or_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("bundle");
    std::fs::create_dir_all(&policies).unwrap();
    for file in ["template.yaml", "constraint.yaml"] {
        std::fs::copy(
            repo_path(&format!("tests/data/gatekeeper/namespace-object/{file}")),
            policies.join(file),
        )
        .unwrap();
    }
    let policies = policies.display().to_string();
    let inventory = repo_path("tests/data/gatekeeper/namespace-object/inventory/namespaces.yaml")
        .display()
        .to_string();
    let server =
        TestServer::start_in(dir, &["--policies", &policies, "--inventory", &inventory]).await;
    let client = server.client();
    for proto in [Proto::Http1, Proto::Http2] {
        for (ns, allowed, says) in [
            ("shop", true, ""),
            ("scratch", false, "namespace <scratch> has no owner label"),
            ("nowhere", false, "the Namespace \"nowhere\" is not known"),
        ] {
            let body = edited_review("validate-create-pod.json", |r| in_namespace(r, ns));
            let rsp = client.review(proto, "/validate", &body).await;
            assert_eq!(rsp["allowed"], allowed, "{ns}: {rsp}");
            if !allowed {
                let message = rsp["status"]["message"].as_str().unwrap();
                assert!(message.contains(says), "{ns}: {message}");
            }
        }
        // A Namespace under review has no namespaceObject (it is cluster-scoped), and this
        // constraint does not match it: admitted, not "not known".
        let body = edited_review("validate-create-namespace.json", |r| {
            r["request"]["object"]["metadata"]["labels"] = json!({"team": "x"});
        });
        let rsp = client.review(proto, "/validate", &body).await;
        assert_eq!(rsp["allowed"], true, "{rsp}");
    }
}
