//! `palisade bench`: the binary, as a policy author runs it, in gator bench's form.

use std::process::Command;
use std::time::Duration;

use palisade::cli::bench::parse_go_duration;
use serde_json::Value;

use crate::common::repo_path;

const BIN: &str = env!("CARGO_BIN_EXE_palisade");
const SIX: &[&str] = &[
    "-f",
    "tests/data/bench/library-six/templates",
    "-f",
    "tests/data/bench/library-six/constraints",
];

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("bench")
        .args(args)
        .current_dir(repo_path(""))
        .output()
        .unwrap()
}

fn json_results(args: &[&str]) -> Vec<Value> {
    let out = bench(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn duration(v: &Value) -> Duration {
    parse_go_duration(
        v.as_str()
            .unwrap_or_else(|| panic!("{v} is not a duration")),
    )
    .unwrap()
}

#[test]
fn bench_reports_gators_fields_with_consistent_figures() {
    let results = json_results(&[
        "-f",
        "tests/data/admission/validate-create-pod.json",
        "--inventory",
        "tests/data/mutation/namespaces.yaml,tests/data/guides/default-deny.yaml",
        "-n",
        "200",
        "--warmup",
        "2",
        "--concurrency",
        "1,2",
        "-o",
        "json",
    ]);
    assert_eq!(results.len(), 2, "one result per concurrency");
    for (r, workers) in results.iter().zip([1_u32, 2]) {
        assert_eq!(r["engine"], "cel", "gator's default engine");
        assert_eq!(r["concurrency"], workers);
        assert_eq!(r["iterations"], 200);
        assert_eq!(r["objectCount"], 1);
        // As in gator, the cycles' reviews are shared among the workers, not repeated by each.
        assert_eq!(r["totalReviews"], 200);
        assert!(r["templateCount"].as_u64().unwrap() > 0);
        assert!(r["constraintCount"].as_u64().unwrap() > 0);
        let by = &r["templatesByEngine"];
        assert_eq!(
            by["cel"].as_u64().unwrap()
                + by["vm"].as_u64().unwrap()
                + by["interpreter"].as_u64().unwrap(),
            r["templateCount"].as_u64().unwrap()
        );
        let l = &r["latencies"];
        let at = |k: &str| duration(&l[k]);
        assert!(at("min") > Duration::ZERO);
        assert!(at("min") <= at("p50") && at("p50") <= at("p95") && at("p95") <= at("p99"));
        assert!(at("p99") <= at("p999") && at("p999") <= at("max"));
        assert!(at("min") <= at("mean") && at("mean") <= at("max"));
        // Throughput is the reviews over the measured wall time...
        let rps = r["reviewsPerSecond"].as_f64().unwrap();
        let total = duration(&r["totalDuration"]).as_secs_f64();
        assert!(
            (rps * total / 200.0 - 1.0).abs() < 0.01,
            "{rps}/s over {total}s"
        );
        // ...which no worker can beat: at most `workers` reviews per mean latency; and with
        // one worker the wall time is the reviews back to back.
        let mean = at("mean").as_secs_f64();
        assert!(
            rps <= f64::from(workers) / mean * 1.05,
            "{rps}/s, mean {mean}s"
        );
        if workers == 1 {
            assert!(rps >= 0.25 / mean, "{rps}/s, mean {mean}s");
        }
        assert!(duration(&r["setupDuration"]) >= duration(&r["setupBreakdown"]["dataLoading"]));
        // The captured Pod is denied: every review finds the same violations.
        let violations = r["violationCount"].as_u64().unwrap();
        assert!(violations > 0 && violations % 200 == 0, "{violations}");
    }
    // The captured Pod is in a high-security namespace: the three Pod constraints match, and
    // nothing else does.
    let mut names: Vec<&str> = results[0]["constraints"]
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
    for c in results[0]["constraints"].as_array().unwrap() {
        assert!(duration(&c["latencies"]["mean"]) > Duration::ZERO);
        // The bundle's templates are written so that the VM reads them as OPA does.
        assert_eq!(c["engine"], "vm", "{c}");
    }
}

#[test]
fn bench_engine_all_runs_each_engine_on_the_templates_that_have_it() {
    let mut args = SIX.to_vec();
    args.extend([
        "-f",
        "tests/data/bench/library-six/admitted-pod.json",
        "-n",
        "20",
        "--warmup",
        "1",
        "--engine",
        "all",
        "-o",
        "json",
    ]);
    let results = json_results(&args);
    let engines: Vec<&str> = results
        .iter()
        .map(|r| r["engine"].as_str().unwrap())
        .collect();
    assert_eq!(engines, ["rego", "cel"]);
    for r in &results {
        assert_eq!(r["templateCount"], 6);
        assert_eq!(r["constraintCount"], 6);
        assert_eq!(r["violationCount"], 0, "the six admit this Pod");
        let costs = r["constraints"].as_array().unwrap();
        assert_eq!(costs.len(), 6, "every constraint matches the Pod");
        for c in costs {
            let engine = c["engine"].as_str().unwrap();
            // K8sPSPAllowedUsers has only Rego, as in the library; the five others have both.
            let expect_cel = r["engine"] == "cel" && c["kind"] != "K8sPSPAllowedUsers";
            assert_eq!(engine == "cel", expect_cel, "{c}");
        }
    }
    assert_eq!(results[0]["templatesByEngine"]["cel"], 0);
    assert_eq!(results[1]["templatesByEngine"]["cel"], 5);
}

#[test]
fn bench_table_has_gators_sections_and_the_engine_comparison() {
    let mut args = SIX.to_vec();
    args.extend([
        "-f",
        "tests/data/bench/library-six/denied-pod.json",
        "-n",
        "10",
        "--warmup",
        "0",
        "-e",
        "all",
        "--threads",
        "2",
    ]);
    let out = bench(&args);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for expected in [
        "=== Benchmark Results: REGO Engine ===",
        "=== Benchmark Results: CEL Engine ===",
        "Configuration:",
        "  Concurrency:  ",
        "  Total Reviews:  ",
        "Timing:",
        "  Throughput:  ",
        "reviews/sec",
        "Latency (per review):",
        "  P95:  ",
        "Results:",
        "Per-Constraint Cost",
        "=== Engine Comparison ===",
        "Performance: ",
    ] {
        assert!(text.contains(expected), "{expected:?} missing:\n{text}");
    }
    // Each of the six denies the denied Pod: at least six violations a review, 10 reviews.
    let found: Vec<u64> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Violations Found:"))
        .map(|n| n.trim().parse().unwrap())
        .collect();
    assert_eq!(found.len(), 2, "{text}");
    assert!(found.iter().all(|&n| n >= 60 && n % 10 == 0), "{found:?}");
}

#[test]
fn bench_compares_with_a_saved_baseline_and_fails_on_a_regression() {
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("baseline.yaml");
    let mut args = SIX.to_vec();
    args.extend([
        "-f",
        "tests/data/bench/library-six/admitted-pod.json",
        "-n",
        "20",
        "--warmup",
        "1",
        "-o",
        "json",
    ]);
    let mut save = args.clone();
    save.extend(["--save", saved.to_str().unwrap()]);
    let out = bench(&save);
    assert!(out.status.success());
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut written: Value =
        yaml_serde::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    // YAML may write a float with a digit more than JSON does: equal but for the last bit.
    let rps = |v: &Value| v[0]["reviewsPerSecond"].as_f64().unwrap();
    assert!((rps(&written) / rps(&printed) - 1.0).abs() < 1e-12);
    written[0]["reviewsPerSecond"] = printed[0]["reviewsPerSecond"].clone();
    assert_eq!(written, printed, "the file holds what -o json prints");

    // Against itself, ignoring any change under an hour (a loaded machine can stall a run):
    // no regression, exit 0.
    let mut same = args.clone();
    same.extend([
        "--compare",
        saved.to_str().unwrap(),
        "--min-threshold",
        "1h",
    ]);
    let out = bench(&same);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("=== Baseline Comparison: CEL Engine ==="),
        "{err}"
    );
    assert!(err.contains("No significant regressions"), "{err}");
    serde_json::from_slice::<Value>(&out.stdout).expect("stdout stays one JSON document");

    // A baseline a thousand times faster: every figure regressed, exit 1.
    let mut fast = printed.clone();
    fast[0]["reviewsPerSecond"] =
        (printed[0]["reviewsPerSecond"].as_f64().unwrap() * 1000.0).into();
    for k in ["min", "max", "mean", "p50", "p95", "p99", "p999"] {
        fast[0]["latencies"][k] = "1ns".into();
    }
    let faster = dir.path().join("fast.json");
    std::fs::write(&faster, serde_json::to_string(&fast).unwrap()).unwrap();
    let mut slower = args[..args.len() - 2].to_vec();
    slower.extend(["--compare", faster.to_str().unwrap()]);
    let out = bench(&slower);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("✗ Regressions detected in: P50 Latency, P95 Latency, P99 Latency, Mean Latency, Throughput"),
        "{text}"
    );
    // ...unless the increase is under --min-threshold.
    slower.extend(["--min-threshold", "10s"]);
    assert!(bench(&slower).status.success());
}

#[test]
fn bench_refuses_nothing_to_measure_zero_workers_and_a_missing_baseline() {
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
    assert!(String::from_utf8_lossy(&out.stderr).contains("--concurrency"));
    let out = bench(&[
        "-f",
        "tests/data/admission/validate-create-pod.json",
        "--compare",
        "no-such-baseline.json",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-baseline.json"));
}
