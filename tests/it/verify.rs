//! gator Suites under tests/data/gatekeeper, run through the same code as `palisade verify`, and the
//! `palisade verify` / `palisade test` commands themselves.

use std::process::Command;

use crate::common::{palisade_cli, passing_suites, repo_path};
use palisade::bundle::Bundle;
use palisade::manifest::files as source;
use palisade::policy::EngineOptions;
use palisade::suite::{self, Outcome, Summary};

const BIN: &str = env!("CARGO_BIN_EXE_palisade");

#[test]
fn every_suite_under_tests_gatekeeper_passes() {
    let results = passing_suites("tests/data/gatekeeper", &EngineOptions::default());
    let summary = Summary::of(&results);
    assert_eq!(
        summary,
        Summary {
            passed: 69,
            failed: 0,
            skipped: 1
        }
    );
}

/// Templates with both engines' code pass their suite with either one preferred, and run the
/// engine preferred.
#[test]
fn dual_engine_suites_pass_with_either_engine_preferred() {
    use palisade::policy::template::Engine;
    for prefer in [Engine::Cel, Engine::Rego] {
        let options = EngineOptions {
            prefer,
            ..EngineOptions::default()
        };
        let results = passing_suites("tests/data/gatekeeper/cel-dual", &options);
        assert_eq!(results.len(), 14, "{prefer:?}");
        assert!(
            results.iter().all(|r| matches!(r.outcome, Outcome::Pass)),
            "{prefer:?}"
        );
        for file in [
            "requiredlabels",
            "capabilities",
            "hostnamespaces",
            "immutablelabels",
        ] {
            let path = repo_path(&format!("tests/data/gatekeeper/cel-dual/{file}.yaml"));
            let doc = palisade::manifest::files::read_path(&path)
                .unwrap()
                .remove(0);
            let source = palisade::policy::template::parse(&doc).unwrap();
            assert!(source.cel.is_some() && !source.rego.is_empty(), "{file}");
            let t = palisade::policy::Template::compile(source, &options).unwrap();
            assert_eq!(t.engine(), prefer, "{file}");
        }
    }
}

/// The constructs where regorus differs from OPA give OPA's answers on both engines.
#[test]
fn opa_parity_suites_pass_on_the_vm_and_the_interpreter() {
    for vm in [true, false] {
        let options = EngineOptions {
            vm,
            ..EngineOptions::default()
        };
        let results = passing_suites("tests/data/gatekeeper/opa-parity", &options);
        assert!(
            results.iter().all(|r| matches!(r.outcome, Outcome::Pass)),
            "vm={vm}: a case was skipped"
        );
        assert_eq!(results.len(), 17, "vm={vm}");
    }
}

#[test]
fn wrong_expectations_are_reported_case_by_case() {
    let results = suite::run_path(
        &repo_path("tests/data/gatekeeper-failing"),
        &EngineOptions::default(),
    )
    .unwrap();
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Fail(_)))
        .map(|r| r.case.as_str())
        .collect();
    assert_eq!(
        failed,
        [
            "expects-a-violation-that-does-not-happen",
            "expects-the-wrong-count",
            "expects-a-message-that-is-not-there",
            "(invalid)"
        ]
    );
    let count = results
        .iter()
        .find(|r| r.case == "expects-the-wrong-count")
        .unwrap();
    assert_eq!(
        count.outcome,
        Outcome::Fail("assertions[0]: expected exactly 2 violations, got 1 (all violations: [namespaces-have-an-owner] you must provide labels: {\"owner\"})".into())
    );
}

#[test]
fn verify_command_prints_a_line_per_case_and_a_summary() {
    let ok = Command::new(BIN)
        .arg("verify")
        .arg(repo_path("tests/data/gatekeeper"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(stdout.lines().count(), 71, "{stdout}");
    assert_eq!(
        stdout.lines().last(),
        Some("69 passed, 0 failed, 1 skipped")
    );

    let bad = Command::new(BIN)
        .arg("verify")
        .arg(repo_path("tests/data/gatekeeper-failing/suite.yaml"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(stdout.lines().last(), Some("1 passed, 4 failed, 0 skipped"));
    assert_eq!(stdout.lines().filter(|l| l.starts_with("FAIL")).count(), 4);
}

#[test]
fn a_malformed_suite_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("suite.yaml");
    std::fs::write(
        &file,
        "apiVersion: test.gatekeeper.sh/v1alpha1\nkind: Suite\ntests:\n- name: t\n  template: t.yaml\n  constraint: c.yaml\n  cases:\n  - name: c\n    object: o.yaml\n    assertions:\n    - violations: maybe\n",
    )
    .unwrap();
    let err = suite::parse_suite(&file).unwrap_err().to_string();
    assert!(err.contains("suite.yaml"), "{err}");
    assert!(
        err.contains(
            "tests[0].cases[0].assertions[0].violations: \"maybe\" is not yes, no or a number"
        ),
        "{err}"
    );

    std::fs::write(&file, "apiVersion: test.gatekeeper.sh/v1alpha1\nkind: Suite\ntests:\n- name: t\n  constraint: c.yaml\n").unwrap();
    let err = suite::parse_suite(&file).unwrap_err().to_string();
    assert!(err.contains("tests[0].template: required"), "{err}");

    // Exit 2: the suite could not run, unlike a failed case (1).
    let out = Command::new(BIN).arg("verify").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tests[0].template: required"));
}

fn load_pair(template: &str, constraint: &str) -> String {
    let mut docs = source::read_file(&repo_path(template)).unwrap();
    docs.extend(source::read_file(&repo_path(constraint)).unwrap());
    Bundle::from_documents(docs, &EngineOptions::default())
        .unwrap_err()
        .to_string()
}

#[test]
fn invalid_bundles_say_which_file_document_rule_and_line() {
    let inv = "tests/data/gatekeeper/invalid";
    let err = load_pair(
        &format!("{inv}/bad-rego.yaml"),
        &format!("{inv}/bad-rego-constraint.yaml"),
    );
    assert!(
        err.contains("ConstraintTemplate \"k8sbadrego\" at"),
        "{err}"
    );
    assert!(err.contains("bad-rego.yaml (document 1)"), "{err}");
    assert!(err.contains("k8sbadrego.rego:3"), "{err}");
    assert!(
        err.starts_with("1 problem in the policy bundle"),
        "only the template is reported: {err}"
    );

    let err = load_pair(
        &format!("{inv}/network.yaml"),
        &format!("{inv}/network-constraint.yaml"),
    );
    assert!(
        err.contains("k8snetwork.rego:4: calls http.send, which reaches the network"),
        "{err}"
    );

    // A sprintf short of arguments loads (as in Gatekeeper), with a warning that names it.
    let parity = "tests/data/gatekeeper/opa-parity";
    let mut docs = source::read_file(&repo_path(&format!("{parity}/short-sprintf.yaml"))).unwrap();
    docs.extend(
        source::read_file(&repo_path(&format!(
            "{parity}/short-sprintf-constraint.yaml"
        )))
        .unwrap(),
    );
    let bundle = Bundle::from_documents(docs, &EngineOptions::default()).unwrap();
    let warnings: Vec<String> = bundle.warnings().iter().map(|w| w.to_string()).collect();
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(
        warnings[0].contains("k8sshortsprintf.rego:7: sprintf format has 2 verbs but 1 arguments; the missing ones print as %!v(MISSING)"),
        "{warnings:#?}"
    );

    let err = load_pair(
        &format!("{inv}/cel-broken.yaml"),
        &format!("{inv}/cel-broken-constraint.yaml"),
    );
    assert!(
        err.contains("cel-broken.yaml")
            && err.contains(
                "spec.targets[0].code[0].source.validations[0].expression: \"has(objct.metadata.labels)\" does not compile: line 1, column 5: undeclared reference to \"objct\""
            ),
        "{err}"
    );

    let rl = "tests/data/gatekeeper/required-labels";
    let err = load_pair(
        &format!("{rl}/template.yaml"),
        &format!("{rl}/wrong-parameters.yaml"),
    );
    assert!(
        err.contains("K8sRequiredLabels \"wrong-parameters\" at"),
        "{err}"
    );
    assert!(err.contains("wrong-parameters.yaml (document 1)"), "{err}");
    assert!(
        err.contains("spec.parameters.labels: expected array, found a string"),
        "{err}"
    );

    let err = load_pair(
        &format!("{rl}/template.yaml"),
        &format!("{rl}/unknown-kind.yaml"),
    );
    assert!(
        err.contains(
            "no ConstraintTemplate defines kind K8sRequiredAnnotations (defined: K8sRequiredLabels)"
        ),
        "{err}"
    );
}

/// A bundle directory with the required-labels and allowed-repos templates and constraints.
fn bundle() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for t in ["required-labels", "allowed-repos"] {
        for f in ["template.yaml", "constraint.yaml"] {
            std::fs::copy(
                repo_path(&format!("tests/data/gatekeeper/{t}/{f}")),
                dir.path().join(format!("{t}-{f}")),
            )
            .unwrap();
        }
    }
    dir
}

#[test]
fn test_command_groups_violations_and_exits_1_on_deny() {
    let bundle = bundle();
    let out = Command::new(BIN)
        .args(["test", "--policies"])
        .arg(bundle.path())
        .arg("-f")
        .arg(repo_path(
            "tests/data/gatekeeper/required-labels/samples/unowned.yaml",
        ))
        .arg("-f")
        .arg(repo_path("tests/data/gatekeeper/allowed-repos/samples"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("Namespace payments ("), "{stdout}");
    assert!(stdout.contains("  K8sRequiredLabels/namespaces-have-an-owner [deny]\n    - you must provide labels: {\"owner\"}"), "{stdout}");
    assert!(
        stdout.contains("Pod payments/api: no violations"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  K8sAllowedRepos/trusted-registries [deny]\n    - container <debug>"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\n    - container <proxy> has an invalid image repo"),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("3 objects, 3 violations (3 deny, 0 warn, 0 dryrun)\n"),
        "{stdout}"
    );

    let json = Command::new(BIN)
        .args(["test", "-o", "json", "--policies"])
        .arg(bundle.path())
        .arg("-f")
        .arg(repo_path(
            "tests/data/gatekeeper/allowed-repos/samples/trusted.yaml",
        ))
        .output()
        .unwrap();
    assert!(json.status.success());
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v[0]["kind"], "Pod");
    assert_eq!(v[0]["violations"], serde_json::json!([]));
}

#[test]
fn test_command_reads_standard_input_and_uses_the_objects_as_inventory() {
    use std::io::Write;
    let bundle = tempfile::tempdir().unwrap();
    for f in ["template.yaml", "constraint.yaml"] {
        std::fs::copy(
            repo_path(&format!("tests/data/gatekeeper/default-deny/{f}")),
            bundle.path().join(f),
        )
        .unwrap();
    }
    let run = |input: &str| {
        let mut child = Command::new(BIN)
            .args(["test", "-f", "-", "-o", "json", "--policies"])
            .arg(bundle.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let pod = std::fs::read_to_string(repo_path(
        "tests/data/gatekeeper/default-deny/samples/pod-in-payments.yaml",
    ))
    .unwrap();
    let policy = std::fs::read_to_string(repo_path(
        "tests/data/gatekeeper/default-deny/inventory/payments-default-deny.yaml",
    ))
    .unwrap();
    let alone = run(&pod);
    assert_eq!(alone.status.code(), Some(1));
    let with_policy = run(&format!("{pod}---\n{policy}"));
    assert!(
        with_policy.status.success(),
        "{}",
        String::from_utf8_lossy(&with_policy.stdout)
    );
}

/// gator's form: templates, constraints and objects together under `-f`. The policies given
/// there are the bundle (the repository's `policies/` is not read), and a run that would test
/// nothing is an error, never "0 violations".
#[test]
fn test_command_takes_templates_and_constraints_under_f_as_gator_does() {
    let dir = repo_path("tests/data/gatekeeper/allowed-repos");
    let run = |args: &[&str]| {
        let mut command = Command::new(BIN);
        command
            .current_dir(repo_path(""))
            .env_remove("PALISADE_POLICIES")
            .arg("test");
        for a in args {
            command.arg("-f").arg(dir.join(a));
        }
        let out = command.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, stdout, stderr) = run(&["template.yaml", "constraint.yaml", "samples"]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stdout.ends_with("2 objects, 2 violations (2 deny, 0 warn, 0 dryrun)\n"),
        "only the constraint given with -f judges, and the policies are not objects: {stdout}"
    );
    assert!(
        stdout.contains("K8sAllowedRepos/trusted-registries [deny]"),
        "{stdout}"
    );

    // Policies and nothing to test: exit 2, the run could not test, unlike a denial (1).
    let (code, stdout, stderr) = run(&["template.yaml", "constraint.yaml"]);
    assert_eq!(code, Some(2), "{stdout}");
    assert!(
        stderr.contains("gave only policies but nothing to decide"),
        "{stderr}"
    );

    // A template without its constraint would test nothing.
    let (code, stdout, stderr) = run(&["template.yaml", "samples"]);
    assert_eq!(code, Some(2), "{stdout}");
    assert!(stderr.contains("no constraints"), "{stderr}");

    // A constraint without its template is the bundle's usual error.
    let (code, _, stderr) = run(&["constraint.yaml", "samples"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("no ConstraintTemplate defines kind K8sAllowedRepos"),
        "{stderr}"
    );
}

/// A script tells a finding from a broken run: `test` and `verify` exit 1 when an object would
/// be denied or a case fails, and 2 when they could not run (a broken bundle, a file that
/// cannot be read), as `audit` and `netpol` do.
#[test]
fn test_and_verify_exit_2_when_they_cannot_run_and_1_on_a_finding() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(broken.join("template.yaml"), "kind: [\n").unwrap();
    let broken = broken.to_str().unwrap();
    let missing = dir.path().join("missing.yaml");
    let missing = missing.to_str().unwrap();
    let samples = "tests/data/gatekeeper/allowed-repos/samples";

    let (code, out, err) = palisade_cli(&["test", "--policies", "policies", "-f", samples]);
    assert_eq!(code, 1, "denied: {out}{err}");
    let (code, out, err) = palisade_cli(&["test", "--policies", broken, "-f", samples]);
    assert_eq!(code, 2, "a broken bundle: {out}{err}");
    assert!(err.contains("cannot load the policy bundle"), "{err}");
    let (code, out, err) = palisade_cli(&["test", "--policies", "policies", "-f", missing]);
    assert_eq!(code, 2, "an unreadable file: {out}{err}");
    assert!(err.contains("missing.yaml"), "{err}");

    let (code, out, err) = palisade_cli(&["verify", "tests/data/gatekeeper-failing/suite.yaml"]);
    assert_eq!(code, 1, "a failed case: {out}{err}");
    let (code, out, err) = palisade_cli(&["verify", missing]);
    assert_eq!(code, 2, "an unreadable suite: {out}{err}");
    assert!(err.contains("missing.yaml"), "{err}");
}
