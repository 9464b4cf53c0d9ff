//! `palisade bench`: the binary, as a policy author runs it.

use std::process::Command;

use serde_json::Value;

use crate::common::repo_path;

const BIN: &str = env!("CARGO_BIN_EXE_palisade");

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("bench")
        .args(args)
        .current_dir(repo_path(""))
        .output()
        .unwrap()
}

#[test]
fn bench_reports_runs_percentiles_and_each_matching_constraint() {
    let out = bench(&[
        "-f",
        "tests/data/admission/validate-create-pod.json",
        "--inventory",
        "tests/data/mutation/namespaces.yaml,tests/data/guides/default-deny.yaml",
        "-n",
        "20",
        "--warmup",
        "2",
        "--threads",
        "1,2",
        "-o",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for (run, threads) in runs.iter().zip([1, 2]) {
        assert_eq!(run["threads"], threads);
        let l = &run["latency"];
        assert_eq!(l["count"], 20 * threads, "every measured decision counted");
        let at = |k: &str| l[k].as_f64().unwrap();
        assert!(at("p50Micros") > 0.0);
        assert!(at("p50Micros") <= at("p99Micros") && at("p99Micros") <= at("p999Micros"));
        assert!(at("p999Micros") <= at("maxMicros"));
        assert!(run["reviewsPerSecond"].as_f64().unwrap() > 0.0);
    }
    // The captured Pod is in a high-security namespace: the three Pod constraints match, and
    // nothing else does.
    let mut names: Vec<&str> = report["constraints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "mutual-tls-in-high-security",
            "pod-security-restricted",
            "workloads-need-default-deny"
        ]
    );
    for c in report["constraints"].as_array().unwrap() {
        assert_eq!(c["latency"]["count"], 20);
        // The bundle's templates are written so that the VM reads them as OPA does.
        assert_eq!(c["engine"], "vm", "{c}");
    }
}

#[test]
fn bench_refuses_nothing_to_measure_and_zero_threads() {
    let dir = tempfile::tempdir().unwrap();
    let out = bench(&["-f", &dir.path().display().to_string()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no object in") && err.contains("-f"), "{err}");
    let out = bench(&[
        "-f",
        "tests/data/admission/validate-create-pod.json",
        "--threads",
        "0",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--threads"));
}
