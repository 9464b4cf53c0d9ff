//! ExpansionTemplates and SyncSets applied to the cluster (`kubectl apply`), against the API
//! stand-in (`palisade_testkit::apiserver`, not a real API server) with the CRDs of
//! manifests/base/gatekeeper-crds.yaml and the shipped RBAC; reviews go to Palisade over HTTPS
//! as the API server sends them.

use std::time::Duration;

use palisade_testkit::apiserver::{ApiServer, INGRESSES};
use palisade_testkit::cluster::{install_gatekeeper_crds, namespace, palisade};
use serde_json::{Value, json};

use crate::common::*;

/// A template whose constraints deny objects that carry the label `banned`.
fn banned_label_template() -> Value {
    json!({
        "apiVersion": "templates.gatekeeper.sh/v1",
        "kind": "ConstraintTemplate",
        "metadata": {"name": "k8sbannedlabel"},
        "spec": {
            "crd": {"spec": {"names": {"kind": "K8sBannedLabel"}}},
            "targets": [{"target": "admission.k8s.gatekeeper.sh", "rego":
                "package k8sbannedlabel\n\nviolation[{\"msg\": \"label banned is banned\"}] {\n  input.review.object.metadata.labels.banned\n}\n"}],
        },
    })
}

/// Judges Pods only: a Deployment is judged by it only through expansion.
fn pods_only_constraint() -> Value {
    json!({"apiVersion": "constraints.gatekeeper.sh/v1beta1", "kind": "K8sBannedLabel",
           "metadata": {"name": "no-banned"},
           "spec": {"match": {"kinds": [{"apiGroups": [""], "kinds": ["Pod"]}]}}})
}

fn expansion_template(api_version: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": format!("expansion.gatekeeper.sh/{api_version}"),
           "kind": "ExpansionTemplate", "metadata": {"name": name}, "spec": spec})
}

fn workloads_to_pods() -> Value {
    expansion_template(
        "v1alpha1",
        "workloads-to-pods",
        json!({"applyTo": [{"groups": ["apps"], "versions": ["v1"], "kinds": ["Deployment"]}],
               "templateSource": "spec.template",
               "generatedGVK": {"group": "", "version": "v1", "kind": "Pod"}}),
    )
}

/// The captured CREATE of Deployment `api` in `payments`, its pod template labelled `banned`.
fn banned_deployment() -> Vec<u8> {
    edited_review("validate-create-deployment.json", |r| {
        r["request"]["object"]["spec"]["template"]["metadata"]["labels"]["banned"] = json!("yes");
    })
}

const IMPLIED: &str = "[no-banned] [Implied by workloads-to-pods] label banned is banned";

/// The messages of the answer to a review of the labelled Deployment.
async fn deployment_messages(server: &TestServer) -> String {
    let answer = server
        .client()
        .review(Proto::Http2, "/validate", &banned_deployment())
        .await;
    format!(
        "{} {}",
        answer["status"]["message"].as_str().unwrap_or(""),
        answer["warnings"]
    )
}

async fn denied_as_implied(server: &TestServer) -> bool {
    deployment_messages(server).await.contains(IMPLIED)
}

#[tokio::test]
async fn expansion_templates_applied_to_the_cluster_judge_workloads_by_their_pods() {
    let api = ApiServer::start().await;
    install_gatekeeper_crds(&api);
    api.create(namespace("payments", json!({}))).unwrap();
    api.apply("kubectl", banned_label_template(), false)
        .unwrap();
    let server = palisade(&api, "replica-a", &["--generate-default-deny", "false"]).await;
    let served = eventually(Duration::from_secs(10), || async {
        api.apply("kubectl", pods_only_constraint(), false).is_ok()
    })
    .await;
    assert!(served, "no constraint CRD for the cluster's template");
    // The constraint serves (a labelled Pod is denied), but judges no Deployment yet.
    let pod = edited_review("validate-create-pod.json", |r| {
        r["request"]["object"]["metadata"]["labels"]["banned"] = json!("yes");
    });
    let pod_denied = eventually(Duration::from_secs(10), || async {
        let answer = server
            .client()
            .review(Proto::Http2, "/validate", &pod)
            .await;
        answer["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("[no-banned] label banned is banned"))
    })
    .await;
    assert!(pod_denied, "the cluster's constraint does not serve");
    let before = deployment_messages(&server).await;
    assert!(!before.contains("no-banned"), "{before}");

    // Applied in the storage version (v1alpha1); Palisade reads it as v1beta1.
    api.apply("kubectl", workloads_to_pods(), false).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || denied_as_implied(&server)).await,
        "the cluster's ExpansionTemplate is not applied: {}",
        deployment_messages(&server).await
    );
    let answer = server
        .client()
        .review(Proto::Http2, "/validate", &banned_deployment())
        .await;
    assert_eq!(answer["allowed"], false);

    // Bad ones beside it: one that closes a cycle with it (Pods made into Deployments), one
    // that fails to parse. Each is refused alone; the good template and the cluster's
    // constraint keep serving, and the cyclic one never expands a Pod.
    api.apply(
        "kubectl",
        expansion_template(
            "v1beta1",
            "pods-to-deployments",
            json!({"applyTo": [{"groups": [""], "versions": ["v1"], "kinds": ["Pod"]}],
                   "templateSource": "spec",
                   "generatedGVK": {"group": "apps", "version": "v1", "kind": "Deployment"}}),
        ),
        false,
    )
    .unwrap();
    api.apply(
        "kubectl",
        expansion_template(
            "v1beta1",
            "everything",
            json!({"applyTo": [{"groups": ["*"], "versions": ["*"], "kinds": ["*"]}],
                   "templateSource": "spec.template",
                   "generatedGVK": {"group": "", "version": "v1", "kind": "Pod"}}),
        ),
        false,
    )
    .unwrap();
    // Its last good form serves while an edit is broken.
    let mut broken = workloads_to_pods();
    broken["spec"]["generatedGVK"] = json!({"group": ""});
    api.apply("kubectl", broken, true).unwrap();
    // Given time to take the three in: a change that arrives after still shows.
    let marker = expansion_template(
        "v1beta1",
        "marker-statefulsets",
        json!({"applyTo": [{"groups": ["apps"], "versions": ["v1"], "kinds": ["StatefulSet"]}],
               "templateSource": "spec.template",
               "generatedGVK": {"group": "", "version": "v1", "kind": "Pod"}}),
    );
    api.apply("kubectl", marker, false).unwrap();
    let statefulset = edited_review("validate-create-deployment.json", |r| {
        r["request"]["kind"]["kind"] = json!("StatefulSet");
        r["request"]["object"]["kind"] = json!("StatefulSet");
        r["request"]["object"]["spec"]["template"]["metadata"]["labels"]["banned"] = json!("yes");
    });
    let marker_in = eventually(Duration::from_secs(10), || async {
        let answer = server
            .client()
            .review(Proto::Http2, "/validate", &statefulset)
            .await;
        answer["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("[Implied by marker-statefulsets]"))
    })
    .await;
    assert!(
        marker_in,
        "a good ExpansionTemplate is not taken in beside bad ones"
    );
    assert!(
        denied_as_implied(&server).await,
        "the good ExpansionTemplate stopped serving beside bad ones: {}",
        deployment_messages(&server).await
    );
    let pod_answer = server
        .client()
        .review(Proto::Http2, "/validate", &pod)
        .await;
    let pod_messages = pod_answer["status"]["message"].as_str().unwrap_or("");
    assert!(
        pod_messages.contains("[no-banned] label banned is banned")
            && !pod_messages.contains("Implied by"),
        "{pod_messages}"
    );

    // Deleted: the Deployment is judged by what it is again.
    let templates = api
        .defined("expansion.gatekeeper.sh", "expansiontemplate", "v1beta1")
        .expect("the ExpansionTemplate CRD serves v1beta1");
    api.delete(&templates, "", "workloads-to-pods").unwrap();
    let restored = eventually(Duration::from_secs(10), || async {
        !deployment_messages(&server).await.contains("no-banned")
    })
    .await;
    assert!(restored, "{}", deployment_messages(&server).await);
    assert_eq!(
        deployment_messages(&server).await,
        before,
        "deleting the template does not restore the Deployment's answer"
    );
}

/// A template that keeps Ingress hosts unique across the cluster, from data.inventory.
fn unique_host_template() -> Value {
    json!({
        "apiVersion": "templates.gatekeeper.sh/v1",
        "kind": "ConstraintTemplate",
        "metadata": {"name": "k8suniqueingresshost"},
        "spec": {
            "crd": {"spec": {"names": {"kind": "K8sUniqueIngressHost"}}},
            "targets": [{"target": "admission.k8s.gatekeeper.sh", "rego": r#"package k8suniqueingresshost

same(other, review) {
  other.metadata.namespace == review.namespace
  other.metadata.name == review.name
}

violation[{"msg": msg}] {
  host := input.review.object.spec.rules[_].host
  other := data.inventory.namespace[_]["networking.k8s.io/v1"]["Ingress"][_]
  not same(other, input.review)
  other.spec.rules[_].host == host
  msg := sprintf("host %v is already served by ingress %v/%v", [host, other.metadata.namespace, other.metadata.name])
}
"#}],
        },
    })
}

fn ingress(ns: &str, name: &str, host: &str) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"rules": [{"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix",
               "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}})
}

/// The CREATE of `object` (an Ingress) as the API server sends it.
fn ingress_review(object: &Value) -> Vec<u8> {
    let gvk = json!({"group": "networking.k8s.io", "version": "v1", "kind": "Ingress"});
    let gvr = json!({"group": "networking.k8s.io", "version": "v1", "resource": "ingresses"});
    serde_json::to_vec(&json!({
        "kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": "5c1e0c57-8d1e-4c55-9a43-1f0b1f3f2a10",
            "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "name": object["metadata"]["name"], "namespace": object["metadata"]["namespace"],
            "operation": "CREATE",
            "userInfo": {"username": "admin", "groups": ["system:authenticated"]},
            "object": object, "oldObject": null, "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }))
    .unwrap()
}

const TAKEN: &str = "[unique-hosts] host shop.example.com is already served by ingress shop/front";

async fn ingress_denied(server: &TestServer) -> bool {
    let answer = server
        .client()
        .review(
            Proto::Http2,
            "/validate",
            &ingress_review(&ingress("blog", "front", "shop.example.com")),
        )
        .await;
    answer["allowed"] == false
        && answer["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(TAKEN))
}

#[tokio::test]
async fn sync_sets_applied_to_the_cluster_put_their_kinds_in_the_inventory() {
    let api = ApiServer::start().await;
    install_gatekeeper_crds(&api);
    // The operator lets Palisade read the kind it syncs, as docs/cluster.md says.
    api.grant("networking.k8s.io", "ingresses", &["list", "watch"]);
    for ns in ["shop", "blog"] {
        api.create(namespace(ns, json!({}))).unwrap();
    }
    api.create(ingress("shop", "front", "shop.example.com"))
        .unwrap();
    api.apply("kubectl", unique_host_template(), false).unwrap();
    let server = palisade(&api, "replica-a", &["--generate-default-deny", "false"]).await;
    let constraint = json!({"apiVersion": "constraints.gatekeeper.sh/v1beta1",
        "kind": "K8sUniqueIngressHost", "metadata": {"name": "unique-hosts"},
        "spec": {"match": {"kinds": [{"apiGroups": ["networking.k8s.io"], "kinds": ["Ingress"]}]}}});
    assert!(
        eventually(Duration::from_secs(10), || async {
            api.apply("kubectl", constraint.clone(), false).is_ok()
        })
        .await,
        "no constraint CRD for the cluster's template"
    );
    // Ingresses are not synced: the host is free as far as the inventory knows.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!ingress_denied(&server).await);
    // (The audit lists them for the constraint; the inventory does not watch them.)
    let watches_ingresses = || {
        api.requests()
            .iter()
            .any(|r| r.contains("/ingresses") && r.contains("watch=true"))
    };
    assert!(!watches_ingresses(), "{:?}", api.requests());

    // A SyncSet with a bad one beside it (an entry without a kind): the good one syncs.
    api.apply(
        "kubectl",
        json!({"apiVersion": "syncset.gatekeeper.sh/v1alpha1", "kind": "SyncSet",
               "metadata": {"name": "broken"},
               "spec": {"gvks": [{"group": "apps", "version": "v1"}]}}),
        false,
    )
    .unwrap();
    let sync_set = json!({"apiVersion": "syncset.gatekeeper.sh/v1alpha1", "kind": "SyncSet",
        "metadata": {"name": "ingresses"},
        "spec": {"gvks": [{"group": "networking.k8s.io", "version": "v1", "kind": "Ingress"}]}});
    api.apply("kubectl", sync_set, false).unwrap();
    // The inventory follows the bundle's synced kinds every 2 s.
    assert!(
        eventually(Duration::from_secs(15), || ingress_denied(&server)).await,
        "the SyncSet's kind does not reach data.inventory"
    );
    assert!(watches_ingresses());
    // The same host again in another Ingress of the cluster is seen too.
    let answer = server
        .client()
        .review(
            Proto::Http2,
            "/validate",
            &ingress_review(&ingress("blog", "other", "blog.example.com")),
        )
        .await;
    assert_eq!(answer["allowed"], true, "{answer}");

    // Deleted: Ingresses leave the inventory, and the host is free again.
    let sync_sets = api
        .defined("syncset.gatekeeper.sh", "syncsets", "v1alpha1")
        .expect("the SyncSet CRD serves v1alpha1");
    api.delete(&sync_sets, "", "ingresses").unwrap();
    let freed = eventually(Duration::from_secs(15), || async {
        !ingress_denied(&server).await
    })
    .await;
    assert!(freed, "the deleted SyncSet's kind stays in data.inventory");
    assert!(api.get(&INGRESSES, "shop", "front").is_ok());
}
