//! `palisade manifests --mutating-admission-policies`: the MutatingAdmissionPolicies of the
//! mutators in tests/data/mutation-map/ validate against Kubernetes 1.36's schemas
//! (admissionregistration.k8s.io/v1) with `kubernetes-validate --strict`, the mutators that do
//! not map are named in comments, and the output without the flag does not change.
//! What the policies do is compared with Palisade's mutators in core (mutation::map's tests).

use std::process::Command;

use serde_json::Value;

use crate::common::repo_path;

const BIN: &str = env!("CARGO_BIN_EXE_palisade");

fn manifests(extra: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["manifests", "--policies"])
        .arg(repo_path("tests/data/mutation-map"))
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// kubernetes-validate's report on `text` against Kubernetes 1.36.0, and whether it passed.
fn validate(text: &str) -> (bool, String) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "-k", "1.36.0"])
        .arg(file.path())
        .output()
        .expect("kubernetes-validate is not installed: .ci/run installs it");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && !report.contains("ERROR"), report)
}

fn policies_part(text: &str) -> &str {
    let at = text
        .find("# MutatingAdmissionPolicies")
        .expect("the policies' note");
    &text[at..]
}

#[test]
fn mutating_admission_policies_validate_against_kubernetes_1_36() {
    let text = manifests(&["--mutating-admission-policies"]);
    let part = policies_part(&text);
    let objects: Vec<Value> = palisade::manifest::parse_str(part, std::path::Path::new("maps"))
        .unwrap()
        .into_iter()
        .map(|d| d.value)
        .collect();
    let names: Vec<String> = objects
        .iter()
        .map(|o| {
            format!(
                "{} {}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    let mut expected = Vec::new();
    for name in [
        "palisade-assign-deployment-init-readonly",
        "palisade-assign-run-as-non-root",
        "palisade-assign-seccomp-default",
        "palisade-assignmetadata-mesh-injection",
        "palisade-assignmetadata-owner-annotation",
    ] {
        expected.push(format!("MutatingAdmissionPolicy {name}"));
        expected.push(format!("MutatingAdmissionPolicyBinding {name}"));
    }
    assert_eq!(names, expected);
    for o in &objects {
        assert_eq!(o["apiVersion"], "admissionregistration.k8s.io/v1");
        assert_eq!(
            o["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "palisade"
        );
    }
    let (ok, report) = validate(part);
    assert!(ok, "{report}");
    assert_eq!(
        report.matches(" passed for resource ").count(),
        objects.len(),
        "every object checked against 1.36:\n{report}"
    );
    // The check can fail: a field the v1 schema does not have is refused.
    let (ok, report) = validate(&part.replacen("reinvocationPolicy", "reinvocationPolicyy", 1));
    assert!(!ok, "a misspelt field passed:\n{report}");
}

#[test]
fn mutators_that_do_not_map_are_named_with_their_reason() {
    let text = manifests(&["--mutating-admission-policies"]);
    let comments: Vec<&str> = policies_part(&text)
        .lines()
        .filter(|l| l.contains("stays on the webhook"))
        .collect();
    assert_eq!(comments.len(), 3, "{comments:#?}");
    for (who, why) in [
        ("# ModifySet drop-all stays on the webhook: ", "as a set"),
        (
            "# Assign node-pool stays on the webhook: ",
            "spec.nodeSelector.pool",
        ),
        (
            "# Assign tcp-ports stays on the webhook: ",
            "ports[containerPort: 80]",
        ),
    ] {
        assert!(
            comments
                .iter()
                .any(|c| c.starts_with(who) && c.contains(why)),
            "{who}…{why} in {comments:#?}"
        );
    }
}

#[test]
fn without_the_flag_the_output_is_unchanged_and_the_policies_come_last() {
    let plain = manifests(&[]);
    assert!(!plain.contains("MutatingAdmissionPolicy"), "{plain}");
    let with = manifests(&["--mutating-admission-policies"]);
    assert!(
        with.starts_with(&plain),
        "the webhook configurations are printed as before, then the policies"
    );
    assert!(with.len() > plain.len());
}
