//! Workload expansion (ExpansionTemplates) over HTTPS, as the API server calls /validate: a
//! workload is judged by the pods it would create, with Gatekeeper's `[Implied by <template>]`
//! prefix and the template's enforcementAction; plus the gator-style suite, the webhook rules
//! derived from expansion, and `palisade expand`.

use std::path::Path;
use std::process::Command;

use crate::common::*;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_palisade");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

const CONSTRAINT: &str = r#"
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sNonRootContainers
metadata: {name: pods-run-as-non-root}
spec:
  match:
    kinds: [{apiGroups: [""], kinds: [Pod]}]
    excludedNamespaces: ["kube-*"]
"#;

/// Deployments (no override), StatefulSets (warn), DaemonSets (dryrun), CronJobs through Jobs,
/// and a custom kind, into Pods.
const EXPANSIONS: &str = r#"
apiVersion: expansion.gatekeeper.sh/v1beta1
kind: ExpansionTemplate
metadata: {name: workloads-to-pods}
spec:
  applyTo:
    - {groups: [apps], kinds: [Deployment, ReplicaSet], versions: [v1]}
    - {groups: [""], kinds: [ReplicationController], versions: [v1]}
    - {groups: [batch], kinds: [Job], versions: [v1]}
  templateSource: spec.template
  generatedGVK: {group: "", version: v1, kind: Pod}
---
apiVersion: expansion.gatekeeper.sh/v1beta1
kind: ExpansionTemplate
metadata: {name: statefulsets-warn}
spec:
  applyTo: [{groups: [apps], kinds: [StatefulSet], versions: [v1]}]
  templateSource: spec.template
  generatedGVK: {group: "", version: v1, kind: Pod}
  enforcementAction: warn
---
apiVersion: expansion.gatekeeper.sh/v1alpha1
kind: ExpansionTemplate
metadata: {name: daemonsets-dryrun}
spec:
  applyTo: [{groups: [apps], kinds: [DaemonSet], versions: [v1]}]
  templateSource: spec.template
  generatedGVK: {group: "", version: v1, kind: Pod}
  enforcementAction: dryrun
---
apiVersion: expansion.gatekeeper.sh/v1beta1
kind: ExpansionTemplate
metadata: {name: cronjobs-to-jobs}
spec:
  applyTo: [{groups: [batch], kinds: [CronJob], versions: [v1]}]
  templateSource: spec.jobTemplate
  generatedGVK: {group: batch, version: v1, kind: Job}
---
apiVersion: expansion.gatekeeper.sh/v1beta1
kind: ExpansionTemplate
metadata: {name: rollouts-to-pods}
spec:
  applyTo: [{groups: [rollouts.example.com], kinds: [Rollout], versions: [v1]}]
  templateSource: spec.podTemplate
  generatedGVK: {group: "", version: v1, kind: Pod}
"#;

/// A mutator that models what a Generated pod gets (a sidecar webhook's defaults, say), one
/// that changes real objects only, and their effect on resultants.
const MUTATORS: &str = r#"
apiVersion: mutations.gatekeeper.sh/v1
kind: Assign
metadata: {name: generated-pods-non-root}
spec:
  applyTo: [{groups: [""], kinds: [Pod], versions: [v1]}]
  match:
    source: Generated
    namespaces: [mutated-resultants]
  location: spec.securityContext.runAsNonRoot
  parameters: {assign: {value: true}}
---
apiVersion: mutations.gatekeeper.sh/v1
kind: Assign
metadata: {name: original-pods-non-root}
spec:
  applyTo: [{groups: [""], kinds: [Pod], versions: [v1]}]
  match:
    source: Original
    namespaces: [mutated-originals]
  location: spec.securityContext.runAsNonRoot
  parameters: {assign: {value: true}}
"#;

fn bundle_dir(dir: &Path, extra: &[(&str, &str)]) -> String {
    let policies = dir.join("bundle");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::copy(
        Path::new(ROOT).join("tests/data/expansion/template.yaml"),
        policies.join("template.yaml"),
    )
    .unwrap();
    std::fs::write(policies.join("constraint.yaml"), CONSTRAINT).unwrap();
    std::fs::write(policies.join("expansions.yaml"), EXPANSIONS).unwrap();
    for (name, text) in extra {
        std::fs::write(policies.join(name), text).unwrap();
    }
    policies.display().to_string()
}

async fn start(extra: &[(&str, &str)]) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let policies = bundle_dir(dir.path(), extra);
    TestServer::start_in(dir, &["--policies", &policies]).await
}

/// The captured CREATE of Deployment `api` in `payments`, its pod template's container running
/// as root (no securityContext), as `kind` of `group/version`.
fn workload(group: &str, version: &str, kind: &str, edit: impl FnOnce(&mut Value)) -> Value {
    let mut v: Value =
        serde_json::from_slice(&fixture("admission/validate-create-deployment.json")).unwrap();
    let request = &mut v["request"];
    request["kind"] = json!({"group": group, "version": version, "kind": kind});
    request["object"]["kind"] = json!(kind);
    request["object"]["apiVersion"] = json!(if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    });
    edit(&mut v["request"]["object"]);
    v
}

fn deployment(edit: impl FnOnce(&mut Value)) -> Value {
    workload("apps", "v1", "Deployment", edit)
}

fn body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

const API_ROOT: &str =
    "Pod api-pod: container api must run as non-root (securityContext.runAsNonRoot: true)";

#[tokio::test]
async fn a_deployment_whose_pods_break_a_pod_constraint_is_denied_with_the_prefix() {
    let server = start(&[]).await;
    let client = server.client();
    for proto in [Proto::Http1, Proto::Http2] {
        let rsp = client
            .review(proto, "/validate", &body(&deployment(|_| {})))
            .await;
        assert_eq!(rsp["allowed"], false, "{rsp}");
        assert_eq!(rsp["status"]["code"], 403);
        assert_eq!(
            rsp["status"]["message"],
            format!("[pods-run-as-non-root] [Implied by workloads-to-pods] {API_ROOT}")
        );
    }
    // The same pod template admitted once it runs as non-root, by the container or the pod.
    for fix in [
        json!({"containers": [{"name": "api", "image": "i", "securityContext": {"runAsNonRoot": true}}]}),
        json!({"securityContext": {"runAsNonRoot": true}, "containers": [{"name": "api", "image": "i"}]}),
    ] {
        let ok = deployment(|o| o["spec"]["template"]["spec"] = fix.clone());
        let rsp = client.review(Proto::Http2, "/validate", &body(&ok)).await;
        assert_eq!(rsp["allowed"], true, "{fix}: {rsp}");
        assert!(rsp.get("warnings").is_none(), "{rsp}");
    }
    // The pods land in the Deployment's namespace, whatever the template says: naming an
    // excluded namespace (or another name) in it changes nothing.
    let elsewhere = deployment(|o| {
        o["spec"]["template"]["metadata"]["namespace"] = json!("kube-system");
        o["spec"]["template"]["metadata"]["name"] = json!("kube-proxy");
    });
    let rsp = client
        .review(Proto::Http2, "/validate", &body(&elsewhere))
        .await;
    assert_eq!(rsp["allowed"], false, "{rsp}");
    assert_eq!(
        rsp["status"]["message"],
        format!("[pods-run-as-non-root] [Implied by workloads-to-pods] {API_ROOT}")
    );
    // A second container hidden behind a compliant one, and a container that opts out of the
    // pod's setting: each is found.
    let hidden = deployment(|o| {
        o["spec"]["template"]["spec"] = json!({"securityContext": {"runAsNonRoot": true}, "containers": [
            {"name": "api", "image": "i"},
            {"name": "sidecar", "image": "s", "securityContext": {"runAsNonRoot": false}}]});
    });
    let rsp = client
        .review(Proto::Http1, "/validate", &body(&hidden))
        .await;
    assert_eq!(rsp["allowed"], false, "{rsp}");
    assert!(
        rsp["status"]["message"]
            .as_str()
            .unwrap()
            .ends_with("Pod api-pod: container sidecar must run as non-root (securityContext.runAsNonRoot: true)"),
        "{rsp}"
    );
}

#[tokio::test]
async fn every_workload_kind_that_carries_the_pod_is_judged() {
    let server = start(&[]).await;
    let client = server.client();
    for (group, kind, resultant) in [
        ("apps", "ReplicaSet", "api-pod"),
        ("", "ReplicationController", "api-pod"),
        ("batch", "Job", "api-pod"),
    ] {
        let review = workload(group, "v1", kind, |_| {});
        let rsp = client
            .review(Proto::Http2, "/validate", &body(&review))
            .await;
        assert_eq!(rsp["allowed"], false, "{kind}: {rsp}");
        assert_eq!(
            rsp["status"]["message"],
            format!(
                "[pods-run-as-non-root] [Implied by workloads-to-pods] Pod {resultant}: container api must run as non-root (securityContext.runAsNonRoot: true)"
            ),
            "{kind}"
        );
    }
    // A custom workload kind, its pod under another field.
    let rollout = workload("rollouts.example.com", "v1", "Rollout", |o| {
        let template = o["spec"]["template"].take();
        o["spec"]["podTemplate"] = template;
    });
    let rsp = client
        .review(Proto::Http1, "/validate", &body(&rollout))
        .await;
    assert_eq!(rsp["allowed"], false, "{rsp}");
    assert_eq!(
        rsp["status"]["message"],
        format!("[pods-run-as-non-root] [Implied by rollouts-to-pods] {API_ROOT}")
    );
    // The kind as the request names it decides: a version no template lists is not expanded.
    let other_version = workload("apps", "v1beta2", "Deployment", |_| {});
    let rsp = client
        .review(Proto::Http1, "/validate", &body(&other_version))
        .await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
}

#[tokio::test]
async fn an_update_that_changes_only_the_pod_template_is_judged() {
    let server = start(&[]).await;
    let client = server.client();
    let safe = json!({"securityContext": {"runAsNonRoot": true}, "containers": [{"name": "api", "image": "i"}]});
    let root = json!({"securityContext": {"runAsNonRoot": false}, "containers": [{"name": "api", "image": "i"}]});
    let update = |old: &Value, new: &Value| {
        let mut review = deployment(|o| o["spec"]["template"]["spec"] = new.clone());
        let mut old_object = review["request"]["object"].clone();
        old_object["spec"]["template"]["spec"] = old.clone();
        review["request"]["operation"] = json!("UPDATE");
        review["request"]["oldObject"] = old_object;
        review
    };
    let rsp = client
        .review(Proto::Http2, "/validate", &body(&update(&safe, &root)))
        .await;
    assert_eq!(rsp["allowed"], false, "{rsp}");
    assert_eq!(
        rsp["status"]["message"],
        format!("[pods-run-as-non-root] [Implied by workloads-to-pods] {API_ROOT}")
    );
    // The new template is what the pods get: fixing it is admitted, whatever the old one was.
    let rsp = client
        .review(Proto::Http2, "/validate", &body(&update(&root, &safe)))
        .await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
}

#[tokio::test]
async fn the_expansion_template_action_overrides_the_constraint() {
    let server = start(&[]).await;
    let client = server.client();
    // warn: admitted, the violation a warning.
    let sts = workload("apps", "v1", "StatefulSet", |_| {});
    let rsp = client.review(Proto::Http2, "/validate", &body(&sts)).await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
    assert_eq!(
        rsp["warnings"],
        json!([format!(
            "[pods-run-as-non-root] [Implied by statefulsets-warn] {API_ROOT}"
        )])
    );
    // dryrun: admitted and silent, recorded in the audit annotation.
    let ds = workload("apps", "v1", "DaemonSet", |_| {});
    let rsp = client.review(Proto::Http1, "/validate", &body(&ds)).await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
    assert!(rsp.get("warnings").is_none(), "{rsp}");
    let recorded = rsp["auditAnnotations"]["dryrun-violations"]
        .as_str()
        .unwrap();
    let recorded: Value = serde_json::from_str(recorded).unwrap();
    assert_eq!(
        recorded,
        json!([{"constraint": "K8sNonRootContainers/pods-run-as-non-root",
            "message": format!("[Implied by daemonsets-dryrun] {API_ROOT}")}])
    );
    // The override is the template's, not the constraint's: a bare Pod is still denied.
    let pod: Value =
        serde_json::from_slice(&fixture("admission/validate-create-pod.json")).unwrap();
    assert!(pod["request"]["object"]["spec"]["containers"][0]["securityContext"].is_null());
    let rsp = client.review(Proto::Http1, "/validate", &body(&pod)).await;
    assert_eq!(rsp["allowed"], false, "{rsp}");
    assert!(
        !rsp["status"]["message"]
            .as_str()
            .unwrap()
            .contains("Implied by"),
        "{rsp}"
    );
}

#[tokio::test]
async fn a_cronjob_is_judged_by_the_pods_of_its_jobs() {
    let server = start(&[]).await;
    let client = server.client();
    let cron = |container: Value| {
        workload("batch", "v1", "CronJob", |o| {
            let mut template = o["spec"]["template"].take();
            template["spec"]["containers"] = json!([container]);
            o["metadata"]["name"] = json!("nightly");
            o["spec"] =
                json!({"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": template}}});
        })
    };
    let rsp = client
        .review(
            Proto::Http2,
            "/validate",
            &body(&cron(json!({"name": "report", "image": "r"}))),
        )
        .await;
    assert_eq!(rsp["allowed"], false, "{rsp}");
    assert_eq!(
        rsp["status"]["message"],
        "[pods-run-as-non-root] [Implied by workloads-to-pods] Pod nightly-job-pod: container report must run as non-root (securityContext.runAsNonRoot: true)"
    );
    let ok =
        cron(json!({"name": "report", "image": "r", "securityContext": {"runAsNonRoot": true}}));
    let rsp = client.review(Proto::Http2, "/validate", &body(&ok)).await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
}

#[tokio::test]
async fn a_workload_that_cannot_be_expanded_is_denied() {
    let server = start(&[]).await;
    let client = server.client();
    // A custom kind whose template is missing, or not an object: it cannot be judged, so it is
    // not admitted.
    for (edit, why) in [
        (
            json!(null),
            "the parent \"api\" has no spec.podTemplate to expand",
        ),
        (
            json!(["pod"]),
            "spec.podTemplate of the parent \"api\" is a list, not an object to expand",
        ),
    ] {
        let rollout = workload("rollouts.example.com", "v1", "Rollout", |o| {
            o["spec"].as_object_mut().unwrap().remove("template");
            if !edit.is_null() {
                o["spec"]["podTemplate"] = edit.clone();
            }
        });
        let rsp = client
            .review(Proto::Http1, "/validate", &body(&rollout))
            .await;
        assert_eq!(rsp["allowed"], false, "{rsp}");
        assert_eq!(
            rsp["status"]["message"],
            format!("[rollouts-to-pods] cannot expand this Rollout: {why}")
        );
    }
}

#[tokio::test]
async fn generated_mutators_shape_resultants_and_never_real_objects() {
    let server = start(&[("mutators.yaml", MUTATORS)]).await;
    let client = server.client();
    let in_ns = |ns: &str| {
        let mut review = deployment(|_| {});
        in_namespace(&mut review, ns);
        review
    };
    // A Generated mutator makes the resultant compliant: admitted.
    let rsp = client
        .review(
            Proto::Http2,
            "/validate",
            &body(&in_ns("mutated-resultants")),
        )
        .await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
    // An Original mutator does not touch resultants: denied.
    let rsp = client
        .review(
            Proto::Http2,
            "/validate",
            &body(&in_ns("mutated-originals")),
        )
        .await;
    assert_eq!(rsp["allowed"], false, "{rsp}");
    // At /mutate, a real Pod gets the Original mutator's change only.
    let mut pod: Value =
        serde_json::from_slice(&fixture("admission/mutate-create-pod.json")).unwrap();
    for (ns, patched) in [("mutated-resultants", false), ("mutated-originals", true)] {
        in_namespace(&mut pod, ns);
        pod["request"]["object"]["spec"]["securityContext"] = json!({});
        let (after, was_patched) = mutate(&client, &pod).await;
        assert_eq!(was_patched, patched, "{ns}");
        assert_eq!(
            after["request"]["object"]["spec"]["securityContext"]["runAsNonRoot"].as_bool(),
            patched.then_some(true),
            "{ns}"
        );
    }
}

#[test]
fn the_webhook_is_sent_the_workloads_that_expand_into_judged_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let policies = bundle_dir(dir.path(), &[]);
    let bundle = palisade::bundle::load(
        Path::new(&policies),
        &palisade::policy::EngineOptions::default(),
    )
    .unwrap();
    let rules = palisade::webhooks::validating_rules(&bundle);
    let has = |group: &str, resource: &str| {
        rules
            .iter()
            .any(|r| r.api_group == group && r.resources.iter().any(|x| x == resource))
    };
    assert!(has("rollouts.example.com", "rollouts"), "{rules:#?}");
    assert!(
        has("batch", "cronjobs") && has("apps", "statefulsets"),
        "{rules:#?}"
    );
    // The background audit lists the parents too, as Gatekeeper's audit expands what it lists.
    let (audited, _) = palisade::cluster::auditor::audited_kinds(&bundle);
    for kind in ["Rollout", "CronJob", "Deployment"] {
        assert!(
            audited.iter().any(|(_, k)| k == kind),
            "{kind}: {audited:?}"
        );
    }

    // A constraint that judges originals only needs no parent; one on another kind neither.
    std::fs::write(
        Path::new(&policies).join("constraint.yaml"),
        CONSTRAINT.replace("  match:\n", "  match:\n    source: Original\n"),
    )
    .unwrap();
    let bundle = palisade::bundle::load(
        Path::new(&policies),
        &palisade::policy::EngineOptions::default(),
    )
    .unwrap();
    let rules = palisade::webhooks::validating_rules(&bundle);
    assert!(
        !rules.iter().any(|r| r.api_group == "rollouts.example.com"),
        "{rules:#?}"
    );
    let (audited, _) = palisade::cluster::auditor::audited_kinds(&bundle);
    assert!(!audited.iter().any(|(_, k)| k == "Rollout"), "{audited:?}");
}

#[test]
fn the_gator_suite_passes() {
    let results = passing_suites(
        "tests/data/expansion",
        &palisade::policy::EngineOptions::default(),
    );
    assert_eq!(results.len(), 12);
}

#[test]
fn a_suite_expansion_file_holds_expansion_templates_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = Path::new(ROOT).join("tests/data/expansion");
    for f in ["template.yaml", "constraint.yaml", "deployment-root.yaml"] {
        std::fs::copy(data.join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(
        dir.path().join("expansion.yaml"),
        format!("{EXPANSIONS}---\n{CONSTRAINT}"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("suite.yaml"),
        "apiVersion: test.gatekeeper.sh/v1alpha1\nkind: Suite\ntests:\n- name: t\n  template: template.yaml\n  constraint: constraint.yaml\n  expansion: expansion.yaml\n  cases:\n  - {name: c, object: deployment-root.yaml, assertions: [{violations: 1}]}\n",
    )
    .unwrap();
    let results =
        palisade::suite::run_path(dir.path(), &palisade::policy::EngineOptions::default()).unwrap();
    let palisade::suite::Outcome::Fail(why) = &results[0].outcome else {
        panic!("{results:?}")
    };
    assert!(
        why.contains("K8sNonRootContainers \"pods-run-as-non-root\"")
            && why.contains("holds ExpansionTemplates only"),
        "{why}"
    );
}

fn expand(args: &[&str]) -> (i32, String, String) {
    crate::common::palisade_cli(&[&["expand"], args].concat())
}

#[test]
fn palisade_expand_prints_the_resultants_as_gator_does() {
    let dir = tempfile::tempdir().unwrap();
    let mutator = dir.path().join("mutator.yaml");
    std::fs::write(
        &mutator,
        MUTATORS.replace("    namespaces: [mutated-resultants]\n", ""),
    )
    .unwrap();
    let (code, out, err) = expand(&[
        "-f",
        "tests/data/expansion/expansion.yaml",
        "-f",
        "tests/data/expansion/cronjob-root.yaml",
        "-f",
        "tests/data/expansion/deployment-root.yaml",
        "-f",
        "tests/data/expansion/pod-root.yaml",
        "-f",
        mutator.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let docs: Vec<Value> = palisade::manifest::parse_str(&out, Path::new("out"))
        .unwrap()
        .into_iter()
        .map(|d| d.value)
        .collect();
    // Sorted as gator sorts them (name, apiVersion, kind; descending); the bare Pod and the
    // templates make nothing.
    let names: Vec<&str> = docs
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "nightly-report-job",
            "nightly-report-job-pod",
            "checkout-pod"
        ]
    );
    assert_eq!(
        docs[2],
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "checkout-pod", "namespace": "shop", "labels": {"app": "checkout"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout", "uid": ""}]},
            "spec": {"securityContext": {"runAsNonRoot": true}, "containers": [
                {"name": "server", "image": "registry.example.com/checkout:2.4", "securityContext": {"runAsNonRoot": true}},
                {"name": "metrics", "image": "registry.example.com/exporter:0.9"}]}})
    );
    // The Job is mutated as a Job is not (the mutator applies to Pods), and owns its Pod.
    assert_eq!(docs[0]["kind"], "Job");
    assert!(docs[0]["spec"]["template"]["spec"]["securityContext"].is_null());
    assert_eq!(
        docs[1]["metadata"]["ownerReferences"][0]["name"],
        "nightly-report-job"
    );
    assert_eq!(docs[1]["spec"]["securityContext"]["runAsNonRoot"], true);

    let (code, json_out, _) = expand(&[
        "-f",
        "tests/data/expansion/expansion.yaml",
        "-f",
        "tests/data/expansion/deployment-root.yaml",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0);
    let pod: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(pod["metadata"]["name"], "checkout-pod");
    assert!(pod["spec"]["securityContext"].is_null(), "no mutator given");

    let written = dir.path().join("out.yaml");
    let (code, out, _) = expand(&[
        "-f",
        "tests/data/expansion",
        "--outputfile",
        written.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert!(out.starts_with("Writing output to file: "), "{out}");
    let text = std::fs::read_to_string(&written).unwrap();
    assert!(text.contains("name: checkout-pod"), "{text}");
}

#[test]
fn palisade_expand_refuses_bad_input_with_a_message_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: expansion.gatekeeper.sh/v1beta1\nkind: ExpansionTemplate\nmetadata: {name: loops}\nspec:\n  applyTo: [{groups: [''], kinds: [Pod], versions: [v1]}]\n  templateSource: spec\n  generatedGVK: {version: v1, kind: Pod}\n",
    )
    .unwrap();
    let (code, out, err) = expand(&["-f", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains("ExpansionTemplate \"loops\" at ")
            && err.contains("spec.generatedGVK: v1 Pod is also in spec.applyTo"),
        "{err}"
    );
    let empty = dir.path().join("empty.yaml");
    std::fs::write(&empty, "# nothing\n").unwrap();
    let (code, _, err) = expand(&["-f", empty.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("no input data identified"), "{err}");
    // A workload that cannot be expanded names itself and the template.
    let (code, _, err) = expand(&[
        "-f",
        "tests/data/expansion/expansion.yaml",
        "-f",
        "tests/data/admission/validate-create-pod.json",
    ]);
    assert_eq!(code, 0, "an AdmissionReview is no workload: {err}");
    let no_template = dir.path().join("no-template.yaml");
    std::fs::write(
        &no_template,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: empty, namespace: shop}\nspec: {replicas: 1}\n",
    )
    .unwrap();
    let (code, _, err) = expand(&[
        "-f",
        "tests/data/expansion/expansion.yaml",
        "-f",
        no_template.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("Deployment \"empty\" at ")
            && err.contains(
                "ExpansionTemplate workloads-to-pods: the parent \"empty\" has no spec.template"
            ),
        "{err}"
    );
}

#[test]
fn palisade_test_and_audit_judge_the_resultants() {
    let dir = tempfile::tempdir().unwrap();
    let policies = bundle_dir(dir.path(), &[]);
    let run = |command: &str| {
        let out = Command::new(BIN)
            .current_dir(ROOT)
            .args([
                command,
                "--policies",
                &policies,
                "-f",
                "tests/data/expansion/deployment-root.yaml",
            ])
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8(out.stdout).unwrap(),
        )
    };
    let (code, out) = run("test");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("[Implied by workloads-to-pods] Pod checkout-pod: container metrics must run as non-root"),
        "{out}"
    );
    let (code, out) = run("audit");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("[Implied by workloads-to-pods] Pod checkout-pod"),
        "{out}"
    );
}

#[test]
fn palisade_test_expands_the_workload_as_the_mutating_webhook_leaves_it() {
    // A mutator that fixes Deployments' pod templates: `palisade test` (as gator) mutates the
    // object before expanding it, as /mutate would have before /validate.
    let dir = tempfile::tempdir().unwrap();
    let fix = r#"
apiVersion: mutations.gatekeeper.sh/v1
kind: Assign
metadata: {name: deployments-non-root}
spec:
  applyTo: [{groups: [apps], kinds: [Deployment], versions: [v1]}]
  match: {source: Original}
  location: spec.template.spec.securityContext.runAsNonRoot
  parameters: {assign: {value: true}}
"#;
    let policies = bundle_dir(dir.path(), &[("mutator.yaml", fix)]);
    let out = Command::new(BIN)
        .current_dir(ROOT)
        .args([
            "test",
            "--policies",
            &policies,
            "-f",
            "tests/data/expansion/deployment-root.yaml",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.starts_with("Deployment shop/checkout: no violations\n"),
        "{text}"
    );
    assert!(!text.contains("Implied by"), "{text}");
}
