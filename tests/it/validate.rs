//! /validate over HTTPS with a Gatekeeper bundle: real decisions on captured API-server reviews.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn copy_template(name: &str, to: &Path) {
    std::fs::copy(
        Path::new(ROOT).join(format!("tests/data/gatekeeper/{name}/template.yaml")),
        to.join(format!("{name}-template.yaml")),
    )
    .unwrap();
}

const CONSTRAINTS: &str = r#"
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sRequiredLabels
metadata: {name: namespaces-have-an-owner}
spec:
  match:
    kinds: [{apiGroups: [""], kinds: [Namespace]}]
  parameters:
    labels: [{key: owner}]
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sAllowedRepos
metadata: {name: trusted-registries}
spec:
  enforcementAction: warn
  match:
    kinds: [{apiGroups: [""], kinds: [Pod]}]
  parameters:
    repos: ["registry.example.com/"]
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sRequiredLabels
metadata: {name: deployments-have-a-team}
spec:
  enforcementAction: dryrun
  match:
    kinds: [{apiGroups: [apps], kinds: [Deployment]}]
  parameters:
    labels: [{key: team}]
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sRequiredLabels
metadata: {name: mtls-in-high-security}
spec:
  match:
    kinds: [{apiGroups: [""], kinds: [Pod]}]
    namespaceSelector:
      matchLabels: {security-level: high}
  parameters:
    labels: [{key: mtls}]
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sProtect
metadata: {name: protected-objects}
spec:
  match:
    kinds: [{apiGroups: [networking.k8s.io], kinds: [NetworkPolicy]}]
"#;

const INVENTORY: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: payments
  labels: {kubernetes.io/metadata.name: payments, security-level: high}
---
apiVersion: v1
kind: Namespace
metadata:
  name: sandbox
  labels: {kubernetes.io/metadata.name: sandbox, security-level: low}
"#;

/// A bundle directory and an inventory file inside `dir`.
fn write_bundle(dir: &Path) -> (PathBuf, PathBuf) {
    let policies = dir.join("bundle");
    std::fs::create_dir_all(&policies).unwrap();
    for t in ["required-labels", "allowed-repos", "protect"] {
        copy_template(t, &policies);
    }
    std::fs::write(policies.join("constraints.yaml"), CONSTRAINTS).unwrap();
    let inventory = dir.join("inventory.yaml");
    std::fs::write(&inventory, INVENTORY).unwrap();
    (policies, inventory)
}

async fn start(with_inventory: bool) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let (policies, inventory) = write_bundle(dir.path());
    let mut args = vec!["--policies".to_owned(), policies.display().to_string()];
    if with_inventory {
        args.extend(["--inventory".to_owned(), inventory.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    TestServer::start_in(dir, &args).await
}

#[tokio::test]
async fn deny_on_create_and_update_with_gatekeeper_messages() {
    let server = start(true).await;
    let client = server.client();
    for proto in [Proto::Http1, Proto::Http2] {
        for fixture in [
            "validate-create-namespace.json",
            "validate-update-namespace.json",
        ] {
            let rsp = client
                .review(proto, "/validate", &edited_review(fixture, |_| {}))
                .await;
            assert_eq!(rsp["allowed"], false, "{fixture}");
            assert_eq!(rsp["status"]["code"], 403);
            assert_eq!(
                rsp["status"]["message"],
                "[namespaces-have-an-owner] you must provide labels: {\"owner\"}"
            );
        }
    }
    let labelled = edited_review("validate-create-namespace.json", |v| {
        v["request"]["object"]["metadata"]["labels"] = json!({"owner": "alice"});
    });
    let rsp = client.review(Proto::Http2, "/validate", &labelled).await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
}

#[tokio::test]
async fn warn_and_a_namespace_selector_resolved_from_the_inventory() {
    let server = start(true).await;
    let client = server.client();
    // payments is security-level high in the inventory: the pod lacks the mtls label (deny);
    // its image is untrusted (warn).
    let rsp = client
        .review(
            Proto::Http2,
            "/validate",
            &edited_review("validate-create-pod.json", |_| {}),
        )
        .await;
    assert_eq!(rsp["allowed"], false, "{rsp}");
    assert_eq!(
        rsp["status"]["message"],
        "[mtls-in-high-security] you must provide labels: {\"mtls\"}"
    );
    let warnings = rsp["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{rsp}");
    assert!(warnings[0].as_str().unwrap().starts_with(
        "[trusted-registries] container <web> has an invalid image repo <nginx:1.27>"
    ));

    // In a low-security namespace only the warning remains.
    let sandbox = edited_review("validate-create-pod.json", |v| {
        in_namespace(v, "sandbox");
    });
    let rsp = client.review(Proto::Http1, "/validate", &sandbox).await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
    assert_eq!(rsp["warnings"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn a_namespace_selector_without_the_namespace_fails_closed() {
    let server = start(false).await;
    let client = server.client();
    let rsp = client
        .review(
            Proto::Http1,
            "/validate",
            &edited_review("validate-create-pod.json", |_| {}),
        )
        .await;
    assert_eq!(rsp["allowed"], false);
    let message = rsp["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("[mtls-in-high-security] cannot decide whether this constraint applies: namespaceSelector needs the labels of Namespace \"payments\""),
        "{message}"
    );
    // A review that carries its namespaceObject (as gator's do) is decided with it.
    let with_ns = edited_review("validate-create-pod.json", |v| {
        v["request"]["namespaceObject"] = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "payments", "labels": {"security-level": "low"}}});
    });
    let rsp = client.review(Proto::Http1, "/validate", &with_ns).await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
}

#[tokio::test]
async fn dryrun_is_silent_to_the_user_but_counted() {
    let server = start(true).await;
    let client = server.client();
    let rsp = client
        .review(
            Proto::Http2,
            "/validate",
            &edited_review("validate-create-deployment.json", |_| {}),
        )
        .await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
    assert!(rsp.get("warnings").is_none(), "{rsp}");
    assert_eq!(rsp["status"].get("message"), None);
    let metrics = server.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"palisade_violations_total{constraint="deployments-have-a-team",action="dryrun"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn exempt_namespaces_are_allowed_before_any_work() {
    let server = start(true).await;
    let client = server.client();
    for ns in ["kube-system", "palisade-system"] {
        let pod = edited_review("validate-create-pod.json", |v| {
            in_namespace(v, ns);
        });
        let rsp = client.review(Proto::Http1, "/validate", &pod).await;
        assert_eq!(rsp["allowed"], true, "{ns}: {rsp}");
        assert!(rsp.get("warnings").is_none(), "{ns} was evaluated: {rsp}");
        // A Namespace is exempt by its own name.
        let namespace = edited_review("validate-create-namespace.json", |v| {
            v["request"]["name"] = json!(ns);
            v["request"]["object"]["metadata"]["name"] = json!(ns);
        });
        assert_eq!(
            client.review(Proto::Http1, "/validate", &namespace).await["allowed"],
            true
        );
    }
    // Exemption is by exact name, not by prefix, and not by a label a tenant can set.
    let lookalike = edited_review("validate-create-namespace.json", |v| {
        v["request"]["name"] = json!("kube-system-2");
        v["request"]["object"]["metadata"]["name"] = json!("kube-system-2");
        v["request"]["object"]["metadata"]["labels"] =
            json!({"kubernetes.io/metadata.name": "kube-system"});
    });
    assert_eq!(
        client.review(Proto::Http1, "/validate", &lookalike).await["allowed"],
        false
    );
    assert_eq!(
        metric(
            &server.metrics().await,
            r#"palisade_violations_total{constraint="trusted-registries",action="warn"}"#
        ),
        None
    );
}

#[tokio::test]
async fn delete_reviews_are_evaluated_against_the_old_object() {
    let server = start(true).await;
    let client = server.client();
    let rsp = client
        .review(
            Proto::Http2,
            "/validate",
            &edited_review("validate-delete-networkpolicy.json", |_| {}),
        )
        .await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
    let protected = edited_review("validate-delete-networkpolicy.json", |v| {
        v["request"]["oldObject"]["metadata"]["labels"] = json!({"protected": "true"});
    });
    let rsp = client.review(Proto::Http2, "/validate", &protected).await;
    assert_eq!(rsp["allowed"], false);
    assert_eq!(
        rsp["status"]["message"],
        "[protected-objects] NetworkPolicy default-deny-all is protected and cannot be deleted"
    );
}

#[tokio::test]
async fn a_broken_bundle_keeps_the_last_good_one_serving_until_fixed() {
    let server = start(true).await;
    let client = server.client();
    let namespace = edited_review("validate-create-namespace.json", |_| {});
    let denied = |rsp: &Value| rsp["allowed"] == false;
    assert!(denied(
        &client.review(Proto::Http1, "/validate", &namespace).await
    ));

    let bundle = server.dir.path().join("bundle");
    let template = bundle.join("required-labels-template.yaml");
    let good = std::fs::read_to_string(&template).unwrap();
    std::fs::write(
        &template,
        good.replace("count(missing) > 0", "count(missing) >"),
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            metric(
                &server.metrics().await,
                "palisade_policy_reload_failures_total",
            ) == Some(1.0)
        })
        .await,
        "the broken bundle was not reported"
    );
    let metrics = server.metrics().await;
    assert_eq!(
        metric(&metrics, "palisade_policy_last_reload_ok"),
        Some(0.0)
    );
    assert!(
        denied(&client.review(Proto::Http2, "/validate", &namespace).await),
        "old decisions continue"
    );
    assert_eq!(
        http_get(server.health, "/readyz").await.0,
        200,
        "readiness stays up"
    );

    // Fixed, and the namespace constraint turned down to a warning: the new decision applies.
    std::fs::write(&template, &good).unwrap();
    let constraints = bundle.join("constraints.yaml");
    let text = std::fs::read_to_string(&constraints).unwrap();
    std::fs::write(
        &constraints,
        text.replacen(
            "metadata: {name: namespaces-have-an-owner}\nspec:\n",
            "metadata: {name: namespaces-have-an-owner}\nspec:\n  enforcementAction: warn\n",
            1,
        ),
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            metric(&server.metrics().await, "palisade_policy_reloads_total") == Some(1.0)
        })
        .await,
        "the fixed bundle was not loaded"
    );
    let rsp = client.review(Proto::Http1, "/validate", &namespace).await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
    assert_eq!(
        rsp["warnings"][0],
        "[namespaces-have-an-owner] you must provide labels: {\"owner\"}"
    );
    assert_eq!(
        metric(&server.metrics().await, "palisade_policy_last_reload_ok"),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_broken_bundle_stops_start_up_with_a_located_error() {
    install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let (policies, _) = write_bundle(dir.path());
    std::fs::write(
        policies.join("constraints.yaml"),
        CONSTRAINTS.replace("labels: [{key: team}]", "labels: [{name: team}]"),
    )
    .unwrap();
    let args = [
        "palisade",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--health-listen",
        "127.0.0.1:0",
        "--tls-cert",
        &dir.path().join("tls.crt").display().to_string(),
        "--tls-key",
        &dir.path().join("tls.key").display().to_string(),
        "--policies",
        &policies.display().to_string(),
    ]
    .map(str::to_owned);
    use clap::Parser;
    let palisade::cli::Command::Serve(serve) =
        palisade::cli::Cli::try_parse_from(args).unwrap().command
    else {
        unreachable!()
    };
    let err = format!("{:#}", serve.load().await.err().unwrap());
    assert!(err.contains("cannot load the policy bundle"), "{err}");
    assert!(
        err.contains("K8sRequiredLabels \"deployments-have-a-team\" at"),
        "{err}"
    );
    assert!(err.contains("constraints.yaml (document 3)"), "{err}");
    assert!(
        err.contains("spec.parameters.labels[0].key: required"),
        "{err}"
    );
    assert!(
        err.contains("spec.parameters.labels[0].name: not a parameter of this template"),
        "{err}"
    );
}
