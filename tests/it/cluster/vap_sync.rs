//! The leader's ValidatingAdmissionPolicy sync (issue 32), against the testkit's stand-in API
//! server (not a real one: it serves admissionregistration.k8s.io/v1 ValidatingAdmissionPolicies
//! and bindings as a 1.30+ server does, or not, as before 1.30), through the real `kube` client:
//! - `reconcile`, the sync's seam, with objects written here, so that what it creates, restores,
//!   deletes and leaves alone does not depend on what `generate` makes;
//! - the leader, with sync on and off, comparing the cluster with whatever `generate` returns for
//!   the bundle and configuration it serves;
//! - a server without the API: logged, counted, retried, and the server keeps serving.
//!
//! The RBAC of manifests/overlays/validating-admission-policies is enforced where sync is on,
//! and only the base's where it is off.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use palisade::cluster::vap_sync::{Kind, MANAGED_BY, reconcile};
use palisade_testkit::apiserver::{
    ApiServer, Resource, VALIDATING_ADMISSION_POLICIES, VALIDATING_ADMISSION_POLICY_BINDINGS,
};
use palisade_testkit::cluster::{install_gatekeeper_crds, kube_client, start_palisade_with};
use serde_json::{Value, json};

use crate::common::*;

const OVERLAY_RBAC: &str = "manifests/overlays/validating-admission-policies/rbac.yaml";

fn policy(name: &str, action: &str) -> Value {
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": {MANAGED_BY: "palisade"}},
        "spec": {"failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"], "resources": ["pods"]}]},
            "validations": [{"expression": format!("!has(object.metadata.labels) || !('{action}' in object.metadata.labels)"),
                "message": format!("label {action} is banned")}]}})
}

fn binding(name: &str) -> Value {
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": {MANAGED_BY: "palisade"}},
        "spec": {"policyName": name, "validationActions": ["Deny"]}})
}

fn managers(object: &Value) -> BTreeSet<String> {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["manager"].as_str().map(str::to_owned))
        .collect()
}

/// The names of the objects of `r` that Palisade manages: its label and its field manager.
fn managed(api: &ApiServer, r: &Resource) -> BTreeSet<String> {
    api.names(r)
        .into_iter()
        .filter(|name| {
            let object = api.get(r, "", name).unwrap();
            object["metadata"]["labels"][MANAGED_BY] == "palisade"
                && managers(&object).contains("palisade")
        })
        .collect()
}

fn resource(kind: Kind) -> Resource {
    match kind {
        Kind::Policy => VALIDATING_ADMISSION_POLICIES,
        Kind::Binding => VALIDATING_ADMISSION_POLICY_BINDINGS,
    }
}

/// The object of `generated`'s kind and name in the stand-in, if any.
fn in_cluster(api: &ApiServer, generated: &Value) -> Option<Value> {
    let kind = Kind::of(generated)?;
    let name = generated["metadata"]["name"].as_str()?;
    api.get(&resource(kind), "", name).ok()
}

/// Whether everything `want` says is in `have` (the stand-in adds metadata).
fn holds(have: &Value, want: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w
            .iter()
            .all(|(k, v)| h.get(k).is_some_and(|hv| holds(hv, v))),
        _ => want == have,
    }
}

#[tokio::test]
async fn reconcile_creates_what_is_generated_and_deletes_only_stale_objects_it_manages() {
    let api = ApiServer::start().await;
    api.enforce_rbac_with(&[OVERLAY_RBAC]);
    // Written by Palisade before, and no longer generated: deleted.
    api.apply("palisade", policy("retired", "old"), true)
        .unwrap();
    api.apply("palisade", binding("retired"), true).unwrap();
    // Palisade's label, but written by someone else (a copy applied with kubectl): kept.
    api.apply("kubectl", policy("copied", "x"), true).unwrap();
    // Written by Palisade's manager, but not labelled as its own: kept.
    let mut unlabelled = policy("unlabelled", "y");
    unlabelled["metadata"]["labels"] = json!({});
    api.apply("palisade", unlabelled, true).unwrap();
    let client = kube_client(&api, "sync").await;

    let desired = [policy("no-banned", "banned"), binding("no-banned")];
    let outcome = reconcile(&client, &desired).await;
    assert!(outcome.in_sync(), "{outcome:#?}");
    assert_eq!(
        outcome.created,
        [
            "ValidatingAdmissionPolicy/no-banned",
            "ValidatingAdmissionPolicyBinding/no-banned"
        ]
    );
    assert_eq!(
        outcome.deleted,
        [
            "ValidatingAdmissionPolicyBinding/retired",
            "ValidatingAdmissionPolicy/retired"
        ]
    );
    for want in &desired {
        let have = in_cluster(&api, want).expect("created");
        assert!(holds(&have, want), "{have:#}");
        assert!(managers(&have).contains("palisade"), "{have:#}");
    }
    assert_eq!(
        managed(&api, &VALIDATING_ADMISSION_POLICIES),
        BTreeSet::from(["no-banned".to_owned()])
    );
    let names: BTreeSet<String> = api
        .names(&VALIDATING_ADMISSION_POLICIES)
        .into_iter()
        .collect();
    assert!(
        names.contains("copied") && names.contains("unlabelled"),
        "{names:?}"
    );

    // Again: nothing to do, nothing written.
    let rv = in_cluster(&api, &desired[0]).unwrap()["metadata"]["resourceVersion"].clone();
    let again = reconcile(&client, &desired).await;
    assert!(again.created.is_empty() && again.restored.is_empty() && again.deleted.is_empty());
    assert_eq!(again.unchanged.len(), 2, "{again:#?}");
    assert_eq!(
        in_cluster(&api, &desired[0]).unwrap()["metadata"]["resourceVersion"],
        rv
    );
}

#[tokio::test]
async fn reconcile_leaves_an_object_of_a_generated_name_it_did_not_write_alone() {
    let api = ApiServer::start().await;
    api.enforce_rbac_with(&[OVERLAY_RBAC]);
    let theirs = api
        .apply("kubectl", policy("no-banned", "theirs"), true)
        .unwrap();
    let client = kube_client(&api, "sync").await;
    let outcome = reconcile(&client, &[policy("no-banned", "banned")]).await;
    assert!(!outcome.in_sync());
    assert_eq!(outcome.failures.len(), 1, "{outcome:#?}");
    assert_eq!(outcome.failures[0].reason, "not_managed");
    assert_eq!(
        outcome.failures[0].object,
        "ValidatingAdmissionPolicy/no-banned"
    );
    let now = api
        .get(&VALIDATING_ADMISSION_POLICIES, "", "no-banned")
        .unwrap();
    assert_eq!(now, theirs, "an object Palisade did not write was changed");
}

#[tokio::test]
async fn reconcile_restores_edited_and_deleted_objects() {
    let api = ApiServer::start().await;
    api.enforce_rbac_with(&[OVERLAY_RBAC]);
    let client = kube_client(&api, "sync").await;
    let desired = [policy("no-banned", "banned"), binding("no-banned")];
    assert!(reconcile(&client, &desired).await.in_sync());

    // Someone turns the binding to Warn (taking the field over) and narrows it with a field
    // Palisade does not set; someone else deletes the policy.
    let mut edited = binding("no-banned");
    edited["spec"]["validationActions"] = json!(["Warn"]);
    edited["spec"]["matchResources"] =
        json!({"namespaceSelector": {"matchLabels": {"nobody": "here"}}});
    api.apply("kubectl-edit", edited, true).unwrap();
    api.delete(&VALIDATING_ADMISSION_POLICIES, "", "no-banned")
        .unwrap();

    let outcome = reconcile(&client, &desired).await;
    assert!(outcome.in_sync(), "{outcome:#?}");
    assert_eq!(outcome.created, ["ValidatingAdmissionPolicy/no-banned"]);
    assert_eq!(
        outcome.restored,
        ["ValidatingAdmissionPolicyBinding/no-banned"]
    );
    let have = in_cluster(&api, &desired[1]).unwrap();
    assert_eq!(have["spec"], desired[1]["spec"], "{have:#}");
    assert!(in_cluster(&api, &desired[0]).is_some());
    // Removing the label is an edit too, and so is a field added to the policy; meanwhile a
    // pair Palisade wrote before is no longer generated.
    let mut unlabelled = in_cluster(&api, &desired[0]).unwrap();
    unlabelled["metadata"]["labels"] = json!({});
    unlabelled["spec"]["auditAnnotations"] = json!([{"key": "k", "valueExpression": "'v'"}]);
    api.update("kubectl-edit", unlabelled).unwrap();
    api.apply("palisade", policy("retired", "old"), true)
        .unwrap();
    api.apply("palisade", binding("retired"), true).unwrap();
    let outcome = reconcile(&client, &desired).await;
    assert!(outcome.in_sync(), "{outcome:#?}");
    assert_eq!(outcome.restored, ["ValidatingAdmissionPolicy/no-banned"]);
    assert_eq!(
        outcome.unchanged,
        ["ValidatingAdmissionPolicyBinding/no-banned"]
    );
    assert_eq!(outcome.deleted.len(), 2, "{outcome:#?}");
    let have = in_cluster(&api, &desired[0]).unwrap();
    assert_eq!(have["metadata"]["labels"][MANAGED_BY], "palisade");
    assert_eq!(have["spec"], desired[0]["spec"], "{have:#}");
    // Now in place: nothing more to do.
    let again = reconcile(&client, &desired).await;
    assert_eq!(again.unchanged.len(), 2, "{again:#?}");
    // The overlay's rights are all used but watch, which the leader's sync uses.
    let unused: Vec<String> = api
        .rbac_unused()
        .into_iter()
        .filter(|r| r.contains("validatingadmissionpolic") && !r.starts_with("watch "))
        .collect();
    assert!(unused.is_empty(), "{unused:#?}");
}

#[tokio::test]
async fn reconcile_against_a_server_before_1_30_reports_every_object_and_kind() {
    let api = ApiServer::start().await;
    api.serve_validating_admission_policies(false);
    api.enforce_rbac_with(&[OVERLAY_RBAC]);
    let client = kube_client(&api, "sync").await;
    let outcome = reconcile(&client, &[policy("p", "x"), binding("p")]).await;
    let failures: BTreeSet<(String, &str, &str)> = outcome
        .failures
        .iter()
        .map(|f| (f.object.clone(), f.operation, f.reason))
        .collect();
    assert_eq!(
        failures,
        BTreeSet::from([
            (
                "ValidatingAdmissionPolicy/p".to_owned(),
                "apply",
                "not_served"
            ),
            (
                "ValidatingAdmissionPolicyBinding/p".to_owned(),
                "apply",
                "not_served"
            ),
            ("ValidatingAdmissionPolicy".to_owned(), "list", "not_served"),
            (
                "ValidatingAdmissionPolicyBinding".to_owned(),
                "list",
                "not_served"
            ),
        ]),
        "{outcome:#?}"
    );
    // Something that is not one of the two kinds is refused, not sent.
    let outcome = reconcile(&client, &[json!({"kind": "ConfigMap"}), json!(null)]).await;
    assert_eq!(
        outcome
            .failures
            .iter()
            .filter(|f| f.reason == "invalid")
            .count(),
        2,
        "{outcome:#?}"
    );
}

/// The CEL-only template and its constraint (tests/data/gatekeeper/cel) as a bundle.
fn cel_bundle() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in ["template.yaml", "constraint.yaml"] {
        std::fs::copy(
            repo_path("tests/data/gatekeeper/cel").join(file),
            dir.path().join(file),
        )
        .unwrap();
    }
    dir
}

const SYNC_ON: &str = "validatingAdmissionPolicies:\n  sync: true\n  constraints:\n    - kind: K8sCelAllowedRepos\n      name: trusted-registries\n      placement: apiServer\n";

fn config_file(dir: &Path, text: &str) -> String {
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// What `generate` makes of the bundle in `policies` under the configuration file `config`.
fn generated(policies: &Path, config: &str) -> palisade::policy::vap::Generated {
    let bundle = palisade::bundle::load(policies, &Default::default()).unwrap();
    let config = palisade::state::config_store::read(Path::new(config)).unwrap();
    palisade::policy::vap::generate(&bundle, &config)
}

fn vap_requests(api: &ApiServer) -> Vec<String> {
    api.requests()
        .into_iter()
        .filter(|r| r.contains("validatingadmissionpolic"))
        .collect()
}

async fn leading(server: &TestServer) -> bool {
    eventually(Duration::from_secs(15), || async {
        metric(&server.metrics().await, "palisade_leader") == Some(1.0)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_keeps_what_generate_makes_of_a_cel_constraint_on_the_api_server() {
    let api = ApiServer::start().await;
    api.enforce_rbac_with(&[OVERLAY_RBAC]);
    api.apply("palisade", policy("palisade-retired", "old"), true)
        .unwrap();
    api.apply("kubectl", policy("copied", "x"), true).unwrap();
    let policies = cel_bundle();
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), SYNC_ON);
    let expected = generated(policies.path(), &config);
    let constraint = (
        "K8sCelAllowedRepos".to_owned(),
        "trusted-registries".to_owned(),
    );
    // The CEL constraint placed on the API server is judged there alone, so it has a policy
    // and a binding for the leader to keep.
    assert!(
        expected.api_server_only.contains(&constraint),
        "not judged by the API server alone: {expected:#?}"
    );
    assert!(
        expected
            .objects
            .iter()
            .any(|o| o["kind"] == "ValidatingAdmissionPolicyBinding")
            && expected
                .objects
                .iter()
                .any(|o| o["kind"] == "ValidatingAdmissionPolicy"),
        "a constraint judged by the API server alone has no policy and binding: {expected:#?}"
    );
    let server = start_palisade_with(
        &api,
        "vap-leader",
        tempfile::tempdir().unwrap(),
        policies.path(),
        &["--generate-default-deny", "false", "--config", &config],
    )
    .await;
    assert!(leading(&server).await);

    // Exactly what generate returns is in place and managed by Palisade; the stale object it
    // wrote is gone; the labelled copy someone else wrote stays.
    let want = |kind: Kind| -> BTreeSet<String> {
        expected
            .objects
            .iter()
            .filter(|o| Kind::of(o) == Some(kind))
            .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_owned))
            .collect()
    };
    let synced = eventually(Duration::from_secs(15), || async {
        managed(&api, &VALIDATING_ADMISSION_POLICIES) == want(Kind::Policy)
            && managed(&api, &VALIDATING_ADMISSION_POLICY_BINDINGS) == want(Kind::Binding)
            && metric(&server.metrics().await, "palisade_vap_sync_in_sync") == Some(1.0)
    })
    .await;
    assert!(
        synced,
        "policies {:?} bindings {:?}, generated {expected:#?}\n{}",
        api.names(&VALIDATING_ADMISSION_POLICIES),
        api.names(&VALIDATING_ADMISSION_POLICY_BINDINGS),
        server.metrics().await
    );
    for object in &expected.objects {
        let have = in_cluster(&api, object).expect("applied");
        assert!(holds(&have["spec"], &object["spec"]), "{have:#}");
    }
    assert!(
        api.get(&VALIDATING_ADMISSION_POLICIES, "", "copied")
            .is_ok()
    );
    let metrics = server.metrics().await;
    assert_eq!(
        metric_total(&metrics, "palisade_vap_sync_deleted_total"),
        Some(1.0),
        "{metrics}"
    );

    // Drift while it runs is repaired at once (the watch, not the 60 s resync): a stale object
    // appears, and a generated one, if any, is deleted.
    api.apply("palisade", policy("palisade-stale", "late"), true)
        .unwrap();
    if let Some(first) = expected.objects.first() {
        let kind = Kind::of(first).unwrap();
        let name = first["metadata"]["name"].as_str().unwrap();
        api.delete(&resource(kind), "", name).unwrap();
    }
    let repaired = eventually(Duration::from_secs(10), || async {
        api.get(&VALIDATING_ADMISSION_POLICIES, "", "palisade-stale")
            .is_err()
            && expected
                .objects
                .iter()
                .all(|o| in_cluster(&api, o).is_some())
    })
    .await;
    assert!(repaired, "{:?}", api.names(&VALIDATING_ADMISSION_POLICIES));
    assert!(
        api.requests()
            .iter()
            .any(|r| r.contains("validatingadmissionpolicies?") && r.contains("watch=true")),
        "the sync does not watch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sync_off_the_leader_makes_no_call_on_admission_policies() {
    let api = ApiServer::start().await;
    // Only the base's RBAC, which grants nothing on these kinds: a call would be refused.
    api.apply("palisade", policy("palisade-retired", "old"), true)
        .unwrap();
    let policies = cel_bundle();
    let dir = tempfile::tempdir().unwrap();
    let off = SYNC_ON.replace("sync: true", "sync: false");
    let config = config_file(dir.path(), &off);
    let server = start_palisade_with(
        &api,
        "vap-off",
        tempfile::tempdir().unwrap(),
        policies.path(),
        &["--generate-default-deny", "false", "--config", &config],
    )
    .await;
    assert!(leading(&server).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(vap_requests(&api), Vec::<String>::new());
    assert!(
        api.get(&VALIDATING_ADMISSION_POLICIES, "", "palisade-retired")
            .is_ok()
    );
    assert_eq!(
        metric(&server.metrics().await, "palisade_vap_sync_in_sync"),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turned_off_the_sync_leaves_its_objects_and_stops_calling() {
    let api = ApiServer::start().await;
    api.enforce_rbac_with(&[OVERLAY_RBAC]);
    let policies = cel_bundle();
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), SYNC_ON);
    let server = start_palisade_with(
        &api,
        "vap-turned-off",
        tempfile::tempdir().unwrap(),
        policies.path(),
        &[
            "--generate-default-deny",
            "false",
            "--config",
            &config,
            "--policy-poll-interval",
            "200ms",
        ],
    )
    .await;
    assert!(leading(&server).await);
    assert!(
        eventually(Duration::from_secs(10), || async {
            metric(&server.metrics().await, "palisade_vap_sync_in_sync") == Some(1.0)
        })
        .await
    );
    config_file(dir.path(), &SYNC_ON.replace("sync: true", "sync: false"));
    assert!(
        eventually(Duration::from_secs(10), || async {
            metric(&server.metrics().await, "palisade_vap_sync_in_sync") == Some(0.0)
        })
        .await,
        "the configuration change was not seen"
    );
    // Settle: a call in flight when the change came may end.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = vap_requests(&api).len();
    // Something that sync on would delete at once.
    api.apply("palisade", policy("palisade-stale", "late"), true)
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        api.get(&VALIDATING_ADMISSION_POLICIES, "", "palisade-stale")
            .is_ok()
    );
    assert_eq!(vap_requests(&api)[before..], [] as [String; 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_server_before_1_30_failures_are_counted_retried_and_the_server_keeps_serving() {
    let api = ApiServer::start().await;
    api.serve_validating_admission_policies(false);
    api.enforce_rbac_with(&[OVERLAY_RBAC]);
    let policies = cel_bundle();
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), SYNC_ON);
    let server = start_palisade_with(
        &api,
        "vap-old-server",
        tempfile::tempdir().unwrap(),
        policies.path(),
        &["--generate-default-deny", "false", "--config", &config],
    )
    .await;
    assert!(leading(&server).await);
    const LIST_FAILED: &str =
        "palisade_vap_sync_failures_total{operation=\"list\",reason=\"not_served\"}";
    // Retried with backoff (1 s, then 2 s): at least two rounds.
    let retried = eventually(Duration::from_secs(15), || async {
        metric(&server.metrics().await, LIST_FAILED).is_some_and(|n| n >= 4.0)
    })
    .await;
    assert!(retried, "{}", server.metrics().await);
    assert_eq!(http_get(server.health, "/readyz").await.0, 200);
    assert_eq!(
        metric(&server.metrics().await, "palisade_leader"),
        Some(1.0)
    );
    // The cluster is upgraded: the next retry succeeds.
    api.serve_validating_admission_policies(true);
    assert!(
        eventually(Duration::from_secs(15), || async {
            metric(&server.metrics().await, "palisade_vap_sync_in_sync") == Some(1.0)
        })
        .await
    );
}

/// A bundle without the policies applied to the cluster would have the sync delete their
/// objects and re-create them a moment later: it waits until they are listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_waits_until_the_policies_applied_to_the_cluster_are_listed() {
    let api = ApiServer::start().await;
    api.enforce_rbac_with(&[OVERLAY_RBAC]);
    install_gatekeeper_crds(&api);
    // What the feed cannot list yet (a missing rule, fixed later).
    api.forbid("templates.gatekeeper.sh", "constrainttemplates", true);
    api.apply("palisade", policy("palisade-retired", "old"), true)
        .unwrap();
    let policies = cel_bundle();
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), SYNC_ON);
    let server = start_palisade_with(
        &api,
        "vap-waits",
        tempfile::tempdir().unwrap(),
        policies.path(),
        &["--generate-default-deny", "false", "--config", &config],
    )
    .await;
    assert!(leading(&server).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_ne!(http_get(server.health, "/readyz").await.0, 200);
    assert!(
        api.get(&VALIDATING_ADMISSION_POLICIES, "", "palisade-retired")
            .is_ok(),
        "synced before the cluster's policies were listed"
    );
    api.forbid("templates.gatekeeper.sh", "constrainttemplates", false);
    assert!(
        eventually(Duration::from_secs(15), || async {
            api.get(&VALIDATING_ADMISSION_POLICIES, "", "palisade-retired")
                .is_err()
        })
        .await,
        "no sync once they were listed"
    );
}
