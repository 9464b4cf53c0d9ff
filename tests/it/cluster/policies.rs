//! ConstraintTemplates and Constraints applied to the cluster with kubectl: enforced by every
//! replica, their constraint CRDs and statuses, a broken template's error, and readiness only
//! once the cluster's policies are known.

use std::time::Duration;

use palisade_testkit::apiserver::{ApiServer, CRDS, PODS};
use palisade_testkit::cluster::{install_gatekeeper_crds, namespace, palisade, start_palisade};
use serde_json::{Value, json};

use super::{audit_pod, banned_label_template, no_banned_constraint};
use crate::common::*;

async fn review_labelled_pod(server: &TestServer) -> Value {
    let body = edited_review("validate-create-pod.json", |r| {
        r["request"]["object"]["metadata"]["labels"]["banned"] = json!("yes");
    });
    server
        .client()
        .review(Proto::Http2, "/validate", &body)
        .await
}

/// The field managers of an object's `/status`.
fn status_managers(object: &Value) -> Vec<&str> {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["subresource"] == "status")
        .filter_map(|m| m["manager"].as_str())
        .collect()
}

/// Whether the server denies the labelled Pod by the cluster's `no-banned` constraint.
async fn denies_banned(server: &TestServer) -> bool {
    let answer = review_labelled_pod(server).await;
    answer["allowed"] == false
        && answer["status"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("[no-banned] label banned is banned")
}

fn by_pod_ids(object: &Value) -> Vec<String> {
    let mut ids: Vec<String> = object["status"]["byPod"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|e| e["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// Against the API stand-in: ConstraintTemplates and Constraints applied to the cluster are
/// enforced, their constraint CRD follows the template, a broken template reports its error
/// in its status without disturbing the others, and each replica writes its own status entry.
#[tokio::test]
async fn policies_applied_with_kubectl_are_enforced_and_reported() {
    let api = ApiServer::start().await;
    install_gatekeeper_crds(&api);
    let templates = api
        .defined("templates.gatekeeper.sh", "constrainttemplates", "v1")
        .expect("the ConstraintTemplate CRD serves v1");
    let crds = CRDS;
    // The reviewed Pod's namespace exists: a denial in a namespace not seen yet would be held
    // back by the generation gate until the request's deadline.
    api.create(namespace("payments", json!({}))).unwrap();
    // What already runs: one Pod with the label the constraint will ban, one without.
    let mut running = audit_pod("payments", "labelled", false);
    running["metadata"]["labels"] = json!({"banned": "yes"});
    api.create(running).unwrap();
    api.create(audit_pod("payments", "plain", false)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "audit:\n  interval: 1s\n").unwrap();
    let config = config.display().to_string();
    let flags = ["--generate-default-deny", "false", "--config", &config];
    let a = palisade(&api, "replica-a", &flags).await;
    let b = palisade(&api, "replica-b", &flags).await;

    // A template (applied as v1beta1) gets its constraint CRD, with its parameter schema.
    api.apply(
        "kubectl",
        banned_label_template("k8sbannedlabel", "K8sBannedLabel", ""),
        false,
    )
    .unwrap();
    let crd_name = "k8sbannedlabel.constraints.gatekeeper.sh";
    assert!(
        eventually(Duration::from_secs(10), || async {
            api.get(&crds, "", crd_name).is_ok()
        })
        .await,
        "no constraint CRD"
    );
    let crd = api.get(&crds, "", crd_name).unwrap();
    assert_eq!(crd["spec"]["names"]["kind"], "K8sBannedLabel");
    assert_eq!(crd["spec"]["scope"], "Cluster");
    let stored: Vec<&Value> = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["storage"] == true)
        .collect();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["name"], "v1beta1");
    assert_eq!(
        stored[0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["parameters"],
        json!({"type": "object", "properties": {"label": {"type": "string"}}})
    );
    assert_eq!(
        crd["metadata"]["ownerReferences"][0]["name"],
        "k8sbannedlabel"
    );
    // `kubectl get k8sbannedlabel` shows the action and the audit's count, as with Gatekeeper.
    let columns: Vec<(&str, &str)> = stored[0]["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["jsonPath"].as_str().unwrap()))
        .collect();
    assert_eq!(
        columns,
        [
            ("enforcement-action", ".spec.enforcementAction"),
            ("total-violations", ".status.totalViolations")
        ]
    );

    // Each replica reports on the template: created, no errors, the generation it saw.
    let reported = eventually(Duration::from_secs(10), || async {
        let t = api.get(&templates, "", "k8sbannedlabel").unwrap();
        t["status"]["created"] == true && by_pod_ids(&t) == ["replica-a", "replica-b"]
    })
    .await;
    let t = api.get(&templates, "", "k8sbannedlabel").unwrap();
    assert!(reported, "{:#}", t["status"]);
    for entry in t["status"]["byPod"].as_array().unwrap() {
        assert_eq!(entry["observedGeneration"], 1);
        assert_eq!(entry["errors"], json!([]));
        assert_eq!(entry["templateUID"], t["metadata"]["uid"]);
    }
    let managers = status_managers(&t);
    assert_eq!(
        managers.len(),
        2,
        "one status manager per replica: {managers:?}"
    );

    // A constraint is enforced by every replica within a second.
    let constraints = api
        .defined("constraints.gatekeeper.sh", "k8sbannedlabel", "v1beta1")
        .expect("the constraint CRD serves v1beta1");
    let before = review_labelled_pod(&a).await;
    assert!(
        !before["status"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("[no-banned]")
    );
    let applied_at = std::time::Instant::now();
    api.apply("kubectl", no_banned_constraint(), false).unwrap();
    for server in [&a, &b] {
        let enforced = eventually(Duration::from_secs(5), || async {
            review_labelled_pod(server).await["status"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("[no-banned] label banned is banned")
        })
        .await;
        assert!(
            enforced,
            "not enforced: {}",
            review_labelled_pod(server).await
        );
    }
    assert!(
        applied_at.elapsed() < Duration::from_secs(1),
        "took {:?}",
        applied_at.elapsed()
    );
    let status = eventually(Duration::from_secs(10), || async {
        let c = api.get(&constraints, "", "no-banned").unwrap();
        by_pod_ids(&c) == ["replica-a", "replica-b"]
            && c["status"]["byPod"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["enforced"] == true)
    })
    .await;
    assert!(
        status,
        "{:#}",
        api.get(&constraints, "", "no-banned").unwrap()["status"]
    );

    // The leader's audit writes what runs against it into the constraint's status, beside the
    // replicas' entries, as Gatekeeper's audit does.
    let audited = eventually(Duration::from_secs(10), || async {
        api.get(&constraints, "", "no-banned").unwrap()["status"]["totalViolations"] == 1
    })
    .await;
    let c = api.get(&constraints, "", "no-banned").unwrap();
    assert!(audited, "{:#}", c["status"]);
    assert_eq!(
        c["status"]["violations"],
        json!([{"enforcementAction": "deny", "group": "", "version": "v1", "kind": "Pod",
                "namespace": "payments", "name": "labelled", "message": "label banned is banned"}])
    );
    let stamp = c["status"]["auditTimestamp"].as_str().unwrap_or_default();
    assert!(
        time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
            .is_ok_and(|t| t.nanosecond() == 0),
        "auditTimestamp is RFC 3339 in whole seconds: {stamp:?}"
    );
    assert_eq!(by_pod_ids(&c), ["replica-a", "replica-b"], "byPod kept");
    let managers = status_managers(&c);
    assert!(managers.contains(&"palisade-audit"), "{managers:?}");
    // The next run sees the Pod fixed.
    api.delete(&PODS, "payments", "labelled").unwrap();
    let cleared = eventually(Duration::from_secs(10), || async {
        let c = api.get(&constraints, "", "no-banned").unwrap();
        c["status"]["totalViolations"] == 0 && c["status"]["violations"] == json!([])
    })
    .await;
    assert!(
        cleared,
        "{:#}",
        api.get(&constraints, "", "no-banned").unwrap()["status"]
    );

    // A broken template reports its error and disturbs nothing.
    api.apply(
        "kubectl",
        banned_label_template("k8sbroken", "K8sBroken", "broken := {\n"),
        false,
    )
    .unwrap();
    let errored = eventually(Duration::from_secs(10), || async {
        let t = api.get(&templates, "", "k8sbroken").unwrap();
        by_pod_ids(&t) == ["replica-a", "replica-b"]
            && t["status"]["byPod"].as_array().unwrap().iter().all(|e| {
                e["errors"][0]["code"] == "ingest_error"
                    && e["errors"][0]["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains("k8sbroken.rego")
                    && e["errors"][0]["location"]
                        .as_str()
                        .is_some_and(|l| l.starts_with("k8sbroken.rego:"))
            })
    })
    .await;
    assert!(
        errored,
        "{:#}",
        api.get(&templates, "", "k8sbroken").unwrap()["status"]
    );
    assert!(
        api.get(&crds, "", "k8sbroken.constraints.gatekeeper.sh")
            .is_err()
    );
    assert!(
        review_labelled_pod(&a).await["status"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("[no-banned]")
    );

    // Deleting the template removes its CRD, its constraints and the enforcement.
    api.delete(&templates, "", "k8sbannedlabel").unwrap();
    let gone = eventually(Duration::from_secs(10), || async {
        api.get(&crds, "", crd_name).is_err()
            && !review_labelled_pod(&a).await["status"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("[no-banned]")
    })
    .await;
    assert!(gone, "the CRD or the enforcement outlived the template");
    a.stop().await;
    b.stop().await;
}

/// Against the API stand-in: a replica is not ready until it has listed the policies applied
/// to the cluster, the constraints of every template included, so that its first admitted
/// review already enforces them; a kind it may not read keeps it unready, saying why.
#[tokio::test]
async fn a_replica_is_ready_only_once_it_knows_the_cluster_policies() {
    let api = ApiServer::start().await;
    install_gatekeeper_crds(&api);
    api.create(namespace("payments", json!({}))).unwrap();
    api.apply(
        "kubectl",
        banned_label_template("k8sbannedlabel", "K8sBannedLabel", ""),
        false,
    )
    .unwrap();
    // A first replica creates the constraint CRD; the constraint is applied with kubectl.
    let a = palisade(&api, "replica-a", &["--generate-default-deny", "false"]).await;
    let defined = eventually(Duration::from_secs(10), || async {
        api.defined("constraints.gatekeeper.sh", "k8sbannedlabel", "v1beta1")
            .is_some()
    })
    .await;
    assert!(defined, "no constraint CRD");
    api.apply("kubectl", no_banned_constraint(), false).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || denies_banned(&a)).await,
        "the first replica does not enforce the constraint"
    );

    // A second replica that may not read this kind of constraint stays unready, and says why.
    assert!(a.stop().await);
    let path = "/apis/constraints.gatekeeper.sh/v1beta1/k8sbannedlabel";
    let asked = || api.requests().iter().filter(|r| r.contains(path)).count();
    let before = asked();
    api.forbid("constraints.gatekeeper.sh", "k8sbannedlabel", true);
    let b = start_palisade(&api, "replica-b", &["--generate-default-deny", "false"]).await;
    let why = "not ready: the policies applied to the cluster are not listed yet";
    let waiting = eventually(Duration::from_secs(10), || async {
        http_get(b.health, "/readyz").await == (503, format!("{why}\n"))
    })
    .await;
    assert!(waiting, "{:?}", http_get(b.health, "/readyz").await);
    // Its watch keeps retrying; it stays unready meanwhile.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(http_get(b.health, "/readyz").await.0, 503);
    }
    let retried = asked() - before;
    assert!(
        retried >= 2,
        "the forbidden list is not retried: {retried} requests"
    );

    // Allowed again: ready, and the very first review it answers enforces the constraint.
    api.forbid("constraints.gatekeeper.sh", "k8sbannedlabel", false);
    let ready = eventually(Duration::from_secs(10), || async {
        http_get(b.health, "/readyz").await.0 == 200
    })
    .await;
    assert!(ready, "{:?}", http_get(b.health, "/readyz").await);
    assert!(
        denies_banned(&b).await,
        "ready before it enforces the cluster's constraint"
    );
}
