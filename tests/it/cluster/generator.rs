//! Default-deny generation: opted-in namespaces get their default-deny and allow-dns and keep
//! them, what users wrote is left alone, and a namespace applied with its Deployment is
//! admitted on the first try (the review waits for the generator).

use std::path::Path;
use std::time::Duration;

use palisade_testkit::apiserver::{ApiServer, NETWORK_POLICIES};
use palisade_testkit::cluster::{namespace, palisade};
use serde_json::{Value, json};

use super::{LACKS, default_deny, policies_in, zero_trust_labels};
use crate::common::*;

#[tokio::test]
async fn opted_in_namespaces_get_their_default_deny_and_keep_it() {
    let api = ApiServer::start().await;
    // A namespace that already holds a user's default-deny-all: never touched.
    api.create(namespace("legacy", zero_trust_labels()))
        .unwrap();
    api.create_as(
        "kubectl-client-side-apply",
        default_deny("legacy", "default-deny-all"),
    )
    .unwrap();
    let server = palisade(&api, "replica-a", &[]).await;

    api.create(namespace("orders", zero_trust_labels()))
        .unwrap();
    api.create(namespace("plain", json!({"security-level": "low"})))
        .unwrap();
    api.create(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "allow-web", "namespace": "orders"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
                 "ingress": [{"ports": [{"protocol": "TCP", "port": 8080}]}]}}),
    )
    .unwrap();
    let web_version =
        api.get(&NETWORK_POLICIES, "orders", "allow-web").unwrap()["metadata"]["resourceVersion"]
            .clone();
    let want = vec![
        "allow-dns".to_owned(),
        "allow-web".into(),
        "default-deny-all".into(),
    ];
    assert!(
        eventually(Duration::from_secs(5), || async {
            policies_in(&api, "orders").await == want
        })
        .await,
        "orders holds {:?}",
        policies_in(&api, "orders").await
    );
    let generated = api
        .get(&NETWORK_POLICIES, "orders", "default-deny-all")
        .unwrap();
    assert_eq!(
        generated["spec"],
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
    );
    assert_eq!(
        generated["metadata"]["managedFields"][0]["manager"],
        "palisade"
    );
    assert_eq!(
        generated["metadata"]["managedFields"][0]["operation"],
        "Apply"
    );
    let dns = api.get(&NETWORK_POLICIES, "orders", "allow-dns").unwrap();
    assert_eq!(
        dns["spec"]["egress"][0]["ports"],
        json!([{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}])
    );

    // Deleted: back.
    api.delete(&NETWORK_POLICIES, "orders", "allow-dns")
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            api.get(&NETWORK_POLICIES, "orders", "allow-dns").is_ok()
        })
        .await
    );
    // Edited into an allow-all: restored.
    let mut edited = api
        .get(&NETWORK_POLICIES, "orders", "default-deny-all")
        .unwrap();
    edited["spec"]["policyTypes"] = json!(["Ingress"]);
    edited["spec"]["ingress"] = json!([{}]);
    api.update("kubectl-edit", edited).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            api.get(&NETWORK_POLICIES, "orders", "default-deny-all")
                .unwrap()["spec"]
                == json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
        })
        .await,
        "{}",
        api.get(&NETWORK_POLICIES, "orders", "default-deny-all")
            .unwrap()
    );
    // The user's own policy is as it was written; the unlabelled namespace is untouched; the
    // user's pre-existing default-deny-all is theirs alone...
    let web = api.get(&NETWORK_POLICIES, "orders", "allow-web").unwrap();
    assert_eq!(
        web["metadata"]["managedFields"].as_array().unwrap().len(),
        1
    );
    assert_eq!(web["metadata"]["resourceVersion"], web_version);
    assert!(policies_in(&api, "plain").await.is_empty());
    let legacy = api
        .get(&NETWORK_POLICIES, "legacy", "default-deny-all")
        .unwrap();
    let managers: Vec<&str> = legacy["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["manager"].as_str().unwrap())
        .collect();
    assert_eq!(
        managers,
        ["kubectl-client-side-apply"],
        "Palisade touched a policy it did not create"
    );
    // ...but the namespace still gets the allow-dns it lacks.
    assert!(
        eventually(Duration::from_secs(5), || async {
            policies_in(&api, "legacy").await == ["allow-dns", "default-deny-all"]
        })
        .await
    );
    // The generated policies pass Palisade's own NetworkPolicy rules.
    let bundle = palisade::bundle::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
        &Default::default(),
    )
    .unwrap();
    let reports = palisade::cli::test::check(
        &bundle,
        palisade::zero_trust::generated_policies("orders")
            .into_iter()
            .map(|value| palisade::manifest::Document {
                origin: palisade::manifest::Origin {
                    file: "generated".into(),
                    document: 1,
                    item: None,
                },
                value,
            })
            .collect(),
        vec![namespace("orders", zero_trust_labels())],
    )
    .unwrap();
    for report in reports {
        assert!(report.violations.is_empty(), "{:?}", report.violations);
    }
    let metrics = server.metrics().await;
    assert!(
        metric(
            &metrics,
            "palisade_default_deny_applied_total{reason=\"restored\"}"
        )
        .unwrap()
            >= 1.0,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "palisade_leader"), Some(1.0));
}

/// What the API server sends for `kubectl apply -f` of a file holding a new opted-in Namespace and
/// a Deployment in it: the Namespace's review, the Namespace stored, then the Deployment's review
/// at once, before the generator has run.
async fn first_apply(api: &ApiServer, server: &TestServer, ns: &str) -> Value {
    let client = server.client();
    let mut labels = zero_trust_labels();
    labels["kubernetes.io/metadata.name"] = json!(ns);
    let ns_review = edited_review("validate-create-namespace.json", |v| {
        v["request"]["name"] = json!(ns);
        v["request"]["object"]["metadata"]["name"] = json!(ns);
        v["request"]["object"]["metadata"]["labels"] = labels.clone();
    });
    let rsp = client.review(Proto::Http2, "/validate", &ns_review).await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
    api.create(namespace(ns, zero_trust_labels())).unwrap();
    let deployment = edited_review("validate-create-deployment.json", |v| {
        in_namespace(v, ns);
        let pod = &mut v["request"]["object"]["spec"]["template"]["spec"];
        pod["securityContext"] =
            json!({"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}});
        pod["containers"][0]["securityContext"] = json!({"allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true, "runAsNonRoot": true, "capabilities": {"drop": ["ALL"]}});
        pod["containers"][0]["resources"] = json!({"limits": {"cpu": "250m", "memory": "64Mi"}});
    });
    client.review(Proto::Http2, "/validate", &deployment).await
}

#[tokio::test]
async fn a_namespace_and_its_deployment_applied_together_are_admitted_on_the_first_try() {
    let api = ApiServer::start().await;
    // What is tested is that the review waits for the generator, not how fast the generator is
    // on a loaded machine: a wait well above the default 3 s keeps the whole suite's load out.
    let server = palisade(&api, "replica-a", &["--generation-wait", "8s"]).await;
    let rsp = first_apply(&api, &server, "fresh").await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
    // It was admitted because the default-deny exists now, not on trust.
    assert_eq!(
        policies_in(&api, "fresh").await,
        ["allow-dns", "default-deny-all"]
    );
    // The review came before the generator had run, and waited for it.
    let metrics = server.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "palisade_generation_waits_total{result=\"allowed\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    // A bare Pod in the same apply: its /mutate needs the namespace's labels, and gets them.
    let ns_review = edited_review("validate-create-namespace.json", |v| {
        v["request"]["object"]["metadata"]["name"] = json!("bare");
    });
    let _ = server
        .client()
        .review(Proto::Http2, "/validate", &ns_review)
        .await;
    api.create(namespace("bare", zero_trust_labels())).unwrap();
    let rsp = create_pod(&server.client(), "bare").await;
    assert_eq!(rsp["allowed"], true, "{rsp}");

    // Generation off: the strict check, the same Deployment is refused.
    assert!(server.stop().await);
    let strict = palisade(&api, "replica-b", &["--generate-default-deny=false"]).await;
    let rsp = first_apply(&api, &strict, "strict").await;
    assert_eq!(rsp["allowed"], false);
    assert!(
        rsp["status"]["message"].as_str().unwrap().contains(LACKS),
        "{rsp}"
    );
}
