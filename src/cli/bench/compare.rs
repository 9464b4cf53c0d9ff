//! gator bench's `--save` and `--compare`: results written to a file, and a later run compared
//! with them, metric by metric, against a threshold.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use super::BenchResult;
use super::report::{columns, short};

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// Writes `results` as `-o json` (or `-o yaml` for a .yaml or .yml file) prints them.
pub(super) fn save(results: &[BenchResult], path: &Path) -> anyhow::Result<()> {
    let text = if is_yaml(path) {
        yaml_serde::to_string(results)?
    } else {
        serde_json::to_string_pretty(results)? + "\n"
    };
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Reads a baseline that `save` wrote.
pub(super) fn load(path: &Path) -> anyhow::Result<Vec<BenchResult>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the baseline {}", path.display()))?;
    let parsed = if is_yaml(path) {
        yaml_serde::from_str(&text).map_err(anyhow::Error::from)
    } else {
        serde_json::from_str(&text).map_err(anyhow::Error::from)
    };
    parsed.with_context(|| {
        format!(
            "{} is not a baseline: write one with palisade bench --save",
            path.display()
        )
    })
}

#[derive(Debug, Clone)]
pub(super) struct Metric {
    pub(super) name: &'static str,
    pub(super) baseline: f64,
    pub(super) current: f64,
    /// Percent change from the baseline.
    pub(super) delta: f64,
    pub(super) passed: bool,
}

#[derive(Debug, Clone)]
pub(super) struct Comparison {
    pub(super) engine: String,
    pub(super) concurrency: u32,
    pub(super) metrics: Vec<Metric>,
    pub(super) passed: bool,
}

fn delta(baseline: f64, current: f64) -> f64 {
    if baseline == 0.0 {
        if current == 0.0 { 0.0 } else { 100.0 }
    } else {
        (current - baseline) / baseline * 100.0
    }
}

/// Each current run against the baseline's run of the same engine and concurrency. A latency
/// regresses when it grows by more than `threshold` percent and, with `min_threshold`, by at
/// least that much; the throughput when it falls by more than `threshold` percent and by more
/// than what `min_threshold` of the mean latency is worth (gator's rules).
pub(super) fn compare(
    baseline: &[BenchResult],
    current: &[BenchResult],
    threshold: f64,
    min_threshold: Duration,
) -> Vec<Comparison> {
    let mut out = Vec::new();
    for cur in current {
        let Some(base) = baseline
            .iter()
            .find(|b| b.engine == cur.engine && b.concurrency == cur.concurrency)
        else {
            continue;
        };
        let mut metrics = Vec::new();
        let (b, c) = (&base.latencies, &cur.latencies);
        for (name, before, after) in [
            ("P50 Latency", b.p50, c.p50),
            ("P95 Latency", b.p95, c.p95),
            ("P99 Latency", b.p99, c.p99),
            ("Mean Latency", b.mean, c.mean),
        ] {
            let (before_ns, after_ns) = (before.as_nanos() as f64, after.as_nanos() as f64);
            let d = delta(before_ns, after_ns);
            let small =
                !min_threshold.is_zero() && after_ns - before_ns < min_threshold.as_nanos() as f64;
            metrics.push(Metric {
                name,
                baseline: before_ns,
                current: after_ns,
                delta: d,
                passed: d <= threshold || small,
            });
        }
        let d = delta(base.reviews_per_second, cur.reviews_per_second);
        let mut passed = -d <= threshold;
        if !passed && !min_threshold.is_zero() && !b.mean.is_zero() {
            let tolerated =
                base.reviews_per_second * (min_threshold.as_secs_f64() / b.mean.as_secs_f64());
            passed = base.reviews_per_second - cur.reviews_per_second < tolerated;
        }
        metrics.push(Metric {
            name: "Throughput",
            baseline: base.reviews_per_second,
            current: cur.reviews_per_second,
            delta: d,
            passed,
        });
        out.push(Comparison {
            engine: cur.engine.clone(),
            concurrency: cur.concurrency,
            passed: metrics.iter().all(|m| m.passed),
            metrics,
        });
    }
    out
}

/// gator's comparison table.
pub(super) fn format(comparisons: &[Comparison], threshold: f64) -> String {
    let mut out = String::new();
    for (i, comp) in comparisons.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let workers = if comp.concurrency > 1 {
            format!(", concurrency {}", comp.concurrency)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "=== Baseline Comparison: {} Engine{workers} ===\n\n",
            comp.engine.to_uppercase()
        ));
        let mut rows = vec![
            ["Metric", "Baseline", "Current", "Delta", "Status"]
                .map(str::to_owned)
                .to_vec(),
            ["------", "--------", "-------", "-----", "------"]
                .map(str::to_owned)
                .to_vec(),
        ];
        for m in &comp.metrics {
            let value = |v: f64| {
                if m.name.contains("Latency") {
                    short(Duration::from_nanos(v as u64))
                } else {
                    format!("{v:.2}/sec")
                }
            };
            rows.push(vec![
                m.name.to_owned(),
                value(m.baseline),
                value(m.current),
                format!("{:+.1}%", m.delta),
                if m.passed { "✓" } else { "✗ REGRESSION" }.to_owned(),
            ]);
        }
        out.push_str(&columns(&rows));
        if comp.passed {
            out.push_str(&format!(
                "\n✓ No significant regressions (threshold: {threshold:.1}%)\n"
            ));
        } else {
            let failed: Vec<&str> = comp
                .metrics
                .iter()
                .filter(|m| !m.passed)
                .map(|m| m.name)
                .collect();
            out.push_str(&format!(
                "\n✗ Regressions detected in: {} (threshold: {threshold:.1}%)\n",
                failed.join(", ")
            ));
        }
    }
    out
}
