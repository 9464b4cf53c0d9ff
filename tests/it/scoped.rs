//! `enforcementAction: scoped` (Gatekeeper 3.17+): one constraint, an action per enforcement
//! point. The webhook is `validation.gatekeeper.sh`, the audit `audit.gatekeeper.sh`, and
//! `palisade test`/`verify` are `gator.gatekeeper.sh`; `*` is all of them.

use std::path::Path;
use std::process::Command;

use crate::common::*;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_palisade");

const CONSTRAINTS: &str = r#"
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sAllowedRepos
metadata: {name: repos-warn-then-deny-in-audit}
spec:
  enforcementAction: scoped
  scopedEnforcementActions:
    - action: warn
      enforcementPoints: [{name: validation.gatekeeper.sh}]
    - action: deny
      enforcementPoints: [{name: audit.gatekeeper.sh}]
  match:
    kinds: [{apiGroups: [""], kinds: [Pod]}]
  parameters:
    repos: ["registry.example.com/"]
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sRequiredLabels
metadata: {name: team-in-audit-only}
spec:
  enforcementAction: scoped
  scopedEnforcementActions:
    - action: deny
      enforcementPoints: [{name: audit.gatekeeper.sh}]
  match:
    kinds: [{apiGroups: [""], kinds: [Pod]}]
  parameters:
    labels: [{key: team}]
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sRequiredLabels
metadata: {name: owner-everywhere}
spec:
  enforcementAction: scoped
  scopedEnforcementActions:
    - action: dryrun
      enforcementPoints: [{name: "*"}]
    - action: deny
      enforcementPoints: [{name: validation.gatekeeper.sh}]
  match:
    kinds: [{apiGroups: [""], kinds: [Pod]}]
  parameters:
    labels: [{key: owner}]
"#;

fn bundle(dir: &Path) -> std::path::PathBuf {
    let policies = dir.join("bundle");
    std::fs::create_dir_all(&policies).unwrap();
    for t in ["required-labels", "allowed-repos"] {
        std::fs::copy(
            repo_path(&format!("tests/data/gatekeeper/{t}/template.yaml")),
            policies.join(format!("{t}.yaml")),
        )
        .unwrap();
    }
    std::fs::write(policies.join("constraints.yaml"), CONSTRAINTS).unwrap();
    policies
}

fn pod(labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "web", "namespace": "payments", "labels": labels},
           "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}})
}

#[tokio::test]
async fn the_webhook_takes_the_validation_points_action_and_skips_what_it_does_not_name() {
    let dir = tempfile::tempdir().unwrap();
    let policies = bundle(dir.path()).display().to_string();
    let server = TestServer::start_in(dir, &["--policies", &policies]).await;
    let client = server.client();
    for proto in [Proto::Http1, Proto::Http2] {
        // No owner: denied at the webhook (deny beats the `*` dryrun there); the repo is only a
        // warning; the audit-only constraint is not evaluated.
        let body = edited_review("validate-create-pod.json", |r| {
            r["request"]["object"] = pod(json!({"app": "web"}));
        });
        let rsp = client.review(proto, "/validate", &body).await;
        assert_eq!(rsp["allowed"], false, "{rsp}");
        let message = rsp["status"]["message"].as_str().unwrap();
        assert!(
            message.contains("[owner-everywhere] you must provide labels"),
            "{message}"
        );
        assert!(
            !message.contains("team"),
            "audit-only at the webhook: {message}"
        );
        assert!(!message.contains("repos-warn"), "{message}");
        let warnings = rsp["warnings"].to_string();
        assert!(
            warnings.contains("[repos-warn-then-deny-in-audit]"),
            "{rsp}"
        );
        assert!(!warnings.contains("team"), "{rsp}");

        // With an owner: admitted with the warning.
        let body = edited_review("validate-create-pod.json", |r| {
            r["request"]["object"] = pod(json!({"owner": "alice"}));
        });
        let rsp = client.review(proto, "/validate", &body).await;
        assert_eq!(rsp["allowed"], true, "{rsp}");
        assert!(
            rsp["warnings"].to_string().contains("invalid image repo"),
            "{rsp}"
        );
    }
}

#[test]
fn the_audit_and_gator_take_their_own_points_actions() {
    let dir = tempfile::tempdir().unwrap();
    let policies = bundle(dir.path());
    let object = dir.path().join("pod.yaml");
    std::fs::write(
        &object,
        serde_json::to_string(&pod(json!({"app": "web"}))).unwrap(),
    )
    .unwrap();

    let audit = Command::new(BIN)
        .args(["audit", "-o", "json", "--policies"])
        .arg(&policies)
        .arg("-f")
        .arg(&object)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&audit.stdout);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}{}", String::from_utf8_lossy(&audit.stderr)));
    let mut found: Vec<(String, String)> = Vec::new();
    collect_actions(&report, &mut found);
    found.sort();
    assert_eq!(
        found,
        [
            ("owner-everywhere".to_owned(), "dryrun".to_owned()),
            (
                "repos-warn-then-deny-in-audit".to_owned(),
                "deny".to_owned()
            ),
            ("team-in-audit-only".to_owned(), "deny".to_owned()),
        ],
        "{stdout}"
    );

    // gator's point: only `*` names it, with dryrun.
    let test = Command::new(BIN)
        .args(["test", "--policies"])
        .arg(&policies)
        .arg("-f")
        .arg(&object)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&test.stdout);
    assert_eq!(test.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("K8sRequiredLabels/owner-everywhere [dryrun]"),
        "{stdout}"
    );
    assert!(!stdout.contains("team-in-audit-only"), "{stdout}");
    assert!(!stdout.contains("repos-warn"), "{stdout}");
}

/// Every (constraint, enforcementAction) pair in the audit's JSON, wherever it sits.
fn collect_actions(v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            if let (Some(c), Some(a)) = (
                map.get("constraint").and_then(Value::as_str),
                map.get("enforcementAction").and_then(Value::as_str),
            ) {
                out.push((c.to_owned(), a.to_owned()));
            }
            map.values().for_each(|v| collect_actions(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_actions(v, out)),
        _ => {}
    }
}

#[test]
fn a_wrong_scoped_constraint_is_refused_with_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let policies = bundle(dir.path());
    for (spec, says) in [
        (
            "enforcementAction: scoped",
            "spec.scopedEnforcementActions: required with enforcementAction: scoped",
        ),
        (
            "enforcementAction: scoped\n  scopedEnforcementActions: [{action: block, enforcementPoints: [{name: \"*\"}]}]",
            "spec.scopedEnforcementActions[0].action: \"block\" is not one of deny, warn, dryrun",
        ),
        (
            "enforcementAction: scoped\n  scopedEnforcementActions: [{action: deny, enforcementPoints: [{name: validation.gatekeeper.io}]}]",
            "spec.scopedEnforcementActions[0].enforcementPoints[0].name: \"validation.gatekeeper.io\" is not an enforcement point",
        ),
        (
            "enforcementAction: scoped\n  scopedEnforcementActions: [{action: deny}]",
            "spec.scopedEnforcementActions[0].enforcementPoints: required",
        ),
        (
            "enforcementAction: warn\n  scopedEnforcementActions: [{action: deny, enforcementPoints: [{name: \"*\"}]}]",
            "only read with enforcementAction: scoped",
        ),
        (
            "enforcementAction: Deny",
            "\"Deny\" is not one of deny, warn, dryrun, scoped",
        ),
    ] {
        let constraint = format!(
            "apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sRequiredLabels\nmetadata: {{name: bad}}\nspec:\n  {spec}\n  parameters:\n    labels: [{{key: owner}}]\n"
        );
        std::fs::write(policies.join("constraints.yaml"), constraint).unwrap();
        let out = Command::new(BIN)
            .args(["test", "--policies"])
            .arg(&policies)
            .arg("-f")
            .arg(repo_path(
                "tests/data/gatekeeper/allowed-repos/samples/trusted.yaml",
            ))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{spec}");
        assert!(stderr.contains(says), "{spec}: {stderr}");
        assert!(
            stderr.contains("K8sRequiredLabels \"bad\""),
            "names the constraint: {stderr}"
        );
    }
}
