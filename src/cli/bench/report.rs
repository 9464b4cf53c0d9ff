//! gator bench's output form: its latency statistics, its durations as Go writes them (`1.5ms`)
//! in JSON and YAML, and its table.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::BenchResult;

/// Latency statistics (gator's `latencies`, with Palisade's p99.9).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latencies {
    #[serde(with = "go")]
    pub min: Duration,
    #[serde(with = "go")]
    pub max: Duration,
    #[serde(with = "go")]
    pub mean: Duration,
    #[serde(with = "go")]
    pub p50: Duration,
    #[serde(with = "go")]
    pub p95: Duration,
    #[serde(with = "go")]
    pub p99: Duration,
    #[serde(with = "go", default)]
    pub p999: Duration,
}

impl Latencies {
    /// Summarises `samples` (sorted here); `None` when empty. Percentiles interpolate linearly
    /// between the two nearest ranks, as gator's do.
    pub fn of(mut samples: Vec<Duration>) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |p: f64| {
            let rank = p * (samples.len() - 1) as f64;
            let lower = rank.floor() as usize;
            match samples.get(lower + 1) {
                Some(&upper) => {
                    let w = rank - lower as f64;
                    let ns =
                        samples[lower].as_nanos() as f64 * (1.0 - w) + upper.as_nanos() as f64 * w;
                    Duration::from_nanos(ns.round() as u64)
                }
                None => samples[samples.len() - 1],
            }
        };
        let total: Duration = samples.iter().sum();
        Some(Self {
            min: samples[0],
            max: samples[samples.len() - 1],
            mean: Duration::from_nanos((total.as_nanos() / samples.len() as u128) as u64),
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            p999: at(0.999),
        })
    }
}

/// A duration as Go's `time.Duration.String` writes it: `0s`, `850ns`, `12.5µs`, `1.25ms`,
/// `2.5s`, `1m30s`.
pub fn go_duration(d: Duration) -> String {
    fn fraction(value: u128, unit: u128, digits: usize, suffix: &str) -> String {
        let (whole, rest) = (value / unit, value % unit);
        if rest == 0 {
            format!("{whole}{suffix}")
        } else {
            let rest = format!("{rest:0digits$}");
            format!("{whole}.{}{suffix}", rest.trim_end_matches('0'))
        }
    }
    let ns = d.as_nanos();
    match ns {
        0 => "0s".to_owned(),
        1..=999 => format!("{ns}ns"),
        1_000..=999_999 => fraction(ns, 1_000, 3, "µs"),
        1_000_000..=999_999_999 => fraction(ns, 1_000_000, 6, "ms"),
        _ => {
            let secs = ns / 1_000_000_000;
            let (h, m) = (secs / 3600, secs % 3600 / 60);
            let mut out = String::new();
            if h > 0 {
                let _ = write!(out, "{h}h");
            }
            if h > 0 || m > 0 {
                let _ = write!(out, "{m}m");
            }
            out + &fraction(ns % 60_000_000_000, 1_000_000_000, 9, "s")
        }
    }
}

/// Reads what [`go_duration`] writes (and Go's other forms: `us`, several units).
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration such as 1.5ms");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0.0_f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        let value: f64 = rest[..number_end].parse().map_err(|_| bad())?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += value * nanos;
        rest = &rest[unit_end..];
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

/// serde for a duration written as Go writes it.
pub(super) mod go {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(in crate::cli::bench) fn serialize<S: Serializer>(
        d: &Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::go_duration(*d))
    }

    pub(in crate::cli::bench) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_go_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// A duration as gator's table prints it: `850ns`, `12.35µs`, `1.25ms`, `2.500s`.
pub(super) fn short(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.2}µs", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2}ms", ns as f64 / 1e6)
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

/// Rows of cells, each column as wide as its widest cell and two spaces apart (Go's tabwriter
/// as gator sets it up); a row of one cell is a heading and does not widen its column.
pub(super) fn columns(rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows.iter().filter(|r| r.len() > 1) {
        for (i, cell) in row.iter().enumerate() {
            let w = cell.chars().count();
            match widths.get_mut(i) {
                Some(max) => *max = (*max).max(w),
                None => widths.push(w),
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < row.len() {
                let pad = widths.get(i).copied().unwrap_or(0) + 2;
                let _ = write!(line, "{cell:<pad$}");
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_owned()).collect()
}

/// gator's table: a section per run, then a comparison of the engines when there are two.
pub(super) fn table(results: &[BenchResult]) -> String {
    let mut out = String::new();
    for (i, r) in results.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&run_table(r));
    }
    let engines: Vec<&BenchResult> = results
        .iter()
        .filter(|r| r.concurrency == results[0].concurrency)
        .collect();
    if engines.len() > 1 {
        out.push('\n');
        out.push_str(&engine_comparison(&engines));
    }
    out
}

fn run_table(r: &BenchResult) -> String {
    let l = &r.latencies;
    let mut rows = vec![
        row(&["Configuration:"]),
        row(&["  Templates:", &r.template_count.to_string()]),
        row(&["  Constraints:", &r.constraint_count.to_string()]),
        row(&["  Objects:", &r.object_count.to_string()]),
        row(&["  Iterations:", &r.iterations.to_string()]),
    ];
    if r.concurrency > 1 {
        rows.push(row(&["  Concurrency:", &r.concurrency.to_string()]));
    }
    let by = &r.templates_by_engine;
    rows.extend([
        row(&["  Total Reviews:", &r.total_reviews.to_string()]),
        row(&[
            "  Templates Run On:",
            &format!(
                "cel {}, rego vm {}, rego interpreter {}",
                by.cel, by.vm, by.interpreter
            ),
        ]),
        row(&["  Endpoint:", &format!("/{}", r.endpoint)]),
        vec![],
        row(&["Timing:"]),
        row(&["  Setup Duration:", &short(r.setup_duration)]),
        row(&[
            "    └─ Template Compilation:",
            &short(r.setup_breakdown.template_compilation),
        ]),
        row(&[
            "    └─ Data Loading:",
            &short(r.setup_breakdown.data_loading),
        ]),
        row(&["  Total Duration:", &short(r.total_duration)]),
        row(&[
            "  Throughput:",
            &format!("{:.2} reviews/sec", r.reviews_per_second),
        ]),
        vec![],
        row(&["Latency (per review):"]),
        row(&["  Min:", &short(l.min)]),
        row(&["  Max:", &short(l.max)]),
        row(&["  Mean:", &short(l.mean)]),
        row(&["  P50:", &short(l.p50)]),
        row(&["  P95:", &short(l.p95)]),
        row(&["  P99:", &short(l.p99)]),
        row(&["  P99.9:", &short(l.p999)]),
        vec![],
        row(&["Results:"]),
        row(&["  Violations Found:", &r.violation_count.to_string()]),
    ]);
    let mut out = format!(
        "=== Benchmark Results: {} Engine ===\n\n",
        r.engine.to_uppercase()
    );
    out.push_str(&columns(&rows));
    if !r.constraints.is_empty() {
        out.push_str(
            "\nPer-Constraint Cost (each alone, one worker; each includes converting the review, \
             which the bundle does once per review):\n",
        );
        let mut rows = vec![row(&[
            "  Constraint",
            "Kind",
            "Engine",
            "Mean",
            "P50",
            "P99",
        ])];
        for c in &r.constraints {
            rows.push(vec![
                format!("  {}", c.name),
                c.kind.clone(),
                c.engine.clone(),
                short(c.latencies.mean),
                short(c.latencies.p50),
                short(c.latencies.p99),
            ]);
        }
        out.push_str(&columns(&rows));
    }
    out
}

fn engine_comparison(results: &[&BenchResult]) -> String {
    let mut rows = Vec::new();
    let mut line = |name: &str, cell: &dyn Fn(&BenchResult) -> String| {
        let mut r = vec![name.to_owned()];
        r.extend(results.iter().map(|x| cell(x)));
        rows.push(r);
    };
    line("Metric", &|r| r.engine.to_uppercase());
    line("------", &|_| "------".to_owned());
    line("Templates", &|r| r.template_count.to_string());
    line("Constraints", &|r| r.constraint_count.to_string());
    line("Setup Time", &|r| short(r.setup_duration));
    line("Throughput", &|r| {
        format!("{:.2}/sec", r.reviews_per_second)
    });
    line("Mean Latency", &|r| short(r.latencies.mean));
    line("P95 Latency", &|r| short(r.latencies.p95));
    line("P99 Latency", &|r| short(r.latencies.p99));
    line("Violations", &|r| r.violation_count.to_string());
    let mut out = String::from("=== Engine Comparison ===\n\n");
    out.push_str(&columns(&rows));
    if let [a, b] = results {
        let (fast, slow) = if a.reviews_per_second >= b.reviews_per_second {
            (a, b)
        } else {
            (b, a)
        };
        if slow.reviews_per_second > 0.0 {
            let ratio = fast.reviews_per_second / slow.reviews_per_second;
            if (ratio - 1.0).abs() < f64::EPSILON {
                out.push_str("\nPerformance: Both engines have similar throughput\n");
            } else {
                let _ = writeln!(
                    out,
                    "\nPerformance: {} is {ratio:.2}x faster than {}",
                    fast.engine.to_uppercase(),
                    slow.engine.to_uppercase()
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_between_ranks_as_gator_does() {
        let samples: Vec<Duration> = (1..=1000).map(Duration::from_micros).collect();
        let l = Latencies::of(samples).unwrap();
        assert_eq!(
            (l.min, l.max),
            (Duration::from_micros(1), Duration::from_micros(1000))
        );
        // rank 0.5 × 999 = 499.5: halfway between 500 µs and 501 µs.
        assert_eq!(l.p50, Duration::from_nanos(500_500));
        assert_eq!(l.p99, Duration::from_nanos(990_010));
        assert_eq!(l.mean, Duration::from_nanos(500_500));
        let one = Latencies::of(vec![Duration::from_micros(7)]).unwrap();
        assert_eq!((one.p50, one.p99, one.p999), (one.max, one.max, one.max));
        assert!(Latencies::of(Vec::new()).is_none());
    }

    #[test]
    fn durations_read_back_as_go_writes_them() {
        for (d, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(850), "850ns"),
            (Duration::from_nanos(12_500), "12.5µs"),
            (Duration::from_nanos(1_250_000), "1.25ms"),
            (Duration::from_millis(2500), "2.5s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
        ] {
            assert_eq!(go_duration(d), text);
            assert_eq!(parse_go_duration(text), Ok(d), "{text}");
        }
        assert!(parse_go_duration("12 parsecs").is_err());
    }
}
