//! The six-constraint case (`tests/data/bench/library-six`): Palisade's own templates of six
//! gatekeeper-library kinds, whose verdicts the benchmarks rely on, pinned on both engines.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::common::{palisade_cli, passing_suites, repo_path};

const ALL_SIX: [&str; 6] = [
    "all-must-have-owner",
    "psp-allow-privilege-escalation-container",
    "psp-capabilities-restricted",
    "psp-pods-allowed-user-ranges",
    "psp-privileged-container",
    "psp-seccomp",
];

fn review(name: &str) -> Value {
    let path = repo_path(&format!("tests/data/bench/library-six/{name}"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The constraints that deny `review`, with the five dual templates on `engine`.
fn denied_by(review: &Value, engine: &str) -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("review.json");
    std::fs::write(&file, review.to_string()).unwrap();
    let (code, out, err) = palisade_cli(&[
        "test",
        "--prefer-engine",
        engine,
        "-f",
        "tests/data/bench/library-six/templates",
        "-f",
        "tests/data/bench/library-six/constraints",
        "-f",
        file.to_str().unwrap(),
        "-o",
        "json",
    ]);
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {err}"));
    let names: BTreeSet<String> = report[0]["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["constraint"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(code, i32::from(!names.is_empty()), "{err}");
    names
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

#[test]
fn the_six_pass_their_suite_with_either_engine_preferred() {
    use palisade::policy::EngineOptions;
    use palisade::policy::template::Engine;
    for prefer in [Engine::Cel, Engine::Rego] {
        let options = EngineOptions {
            prefer,
            ..EngineOptions::default()
        };
        let results = passing_suites("tests/data/bench/library-six", &options);
        assert_eq!(results.len(), 12, "{prefer:?}");
    }
}

#[test]
fn the_six_admit_the_benchmarks_pod_on_both_engines() {
    for engine in ["cel", "rego"] {
        assert_eq!(
            denied_by(&review("admitted-pod.json"), engine),
            set(&[]),
            "{engine}"
        );
    }
}

#[test]
fn each_of_the_six_denies_the_denied_pod_on_both_engines() {
    for engine in ["cel", "rego"] {
        assert_eq!(
            denied_by(&review("denied-pod.json"), engine),
            set(&ALL_SIX),
            "{engine}"
        );
    }
}

#[test]
fn the_four_immutable_field_checks_skip_updates_as_the_library_does() {
    let mut update = review("denied-pod.json");
    update["request"]["operation"] = "UPDATE".into();
    update["request"]["oldObject"] = update["request"]["object"].clone();
    for engine in ["cel", "rego"] {
        assert_eq!(
            denied_by(&update, engine),
            set(&["all-must-have-owner", "psp-seccomp"]),
            "{engine}"
        );
    }
}

#[test]
fn exempt_images_are_not_checked() {
    let mut exempt = review("denied-pod.json");
    exempt["request"]["object"]["spec"]["containers"][0]["image"] = "safeimages.com/web:1".into();
    for engine in ["cel", "rego"] {
        assert_eq!(
            denied_by(&exempt, engine),
            set(&[
                "all-must-have-owner",
                "psp-capabilities-restricted",
                "psp-pods-allowed-user-ranges",
                "psp-seccomp"
            ]),
            "{engine}"
        );
    }
}
