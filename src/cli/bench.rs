//! `palisade bench`, in the spirit of `gator bench`: how long the bundle takes to decide given
//! objects, through the webhook's decision path (everything but TLS, HTTP and JSON decoding),
//! on one or more threads, and what each matching constraint costs alone.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use super::args::ObjectArgs;
use super::args::{EvalArgs, Output, OutputFormat};
use crate::admission::{Endpoint, Review};
use crate::bundle::Bundle;
use crate::decide::{Decider, namespace_object};
use crate::inventory::Inventory;
use crate::suite::review_of;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchEndpoint {
    Validate,
    Mutate,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub objects: ObjectArgs,
    /// Measured decisions of each object, per thread.
    #[arg(short = 'n', long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub iterations: u32,
    /// Decisions of each object before measuring, per thread.
    #[arg(long, default_value_t = 100)]
    pub warmup: u32,
    /// Thread counts to run with, each a separate run (comma-separated), e.g. 1,2.
    #[arg(long, value_delimiter = ',', default_value = "1", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: Vec<u32>,
    /// Which webhook decides.
    #[arg(long, value_enum, default_value = "validate")]
    pub endpoint: BenchEndpoint,
    #[command(flatten)]
    pub output: Output,
    #[command(flatten)]
    pub eval: EvalArgs,
}

/// Latencies of a run, summarised.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub mean: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
}

impl Summary {
    /// Summarises `samples` (sorted here); `None` when empty.
    pub fn of(mut samples: Vec<Duration>) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let rank = ((samples.len() as f64) * q).ceil() as usize;
            samples[rank.clamp(1, samples.len()) - 1]
        };
        let total: Duration = samples.iter().sum();
        Some(Self {
            count: samples.len(),
            mean: total / samples.len() as u32,
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
            max: samples[samples.len() - 1],
        })
    }

    fn json(&self) -> Value {
        let us = |d: Duration| (d.as_secs_f64() * 1e7).round() / 10.0;
        json!({"count": self.count, "meanMicros": us(self.mean), "p50Micros": us(self.p50),
               "p99Micros": us(self.p99), "p999Micros": us(self.p999), "maxMicros": us(self.max)})
    }
}

/// One run with a number of threads.
#[derive(Debug, Clone)]
pub struct Run {
    pub threads: u32,
    pub reviews_per_second: f64,
    pub latency: Summary,
}

/// One constraint alone.
#[derive(Debug, Clone)]
pub struct ConstraintCost {
    pub name: String,
    pub kind: String,
    /// What runs its template: `vm` (regorus' VM), `interpreter` (regorus' interpreter, which is
    /// slower: Palisade moves a template there where the VM would answer differently from OPA)
    /// or `cel` (its K8sNativeValidation code).
    pub engine: &'static str,
    pub latency: Summary,
}

struct Subject {
    title: String,
    review: Review,
}

impl BenchArgs {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        let (bundle, docs, mut objects) = self.objects.load(&self.eval)?;
        if docs.is_empty() {
            bail!(
                "no object in {}: give the objects to decide with -f",
                self.objects.inputs.join(", ")
            );
        }
        objects.extend(
            docs.iter()
                .filter(|d| d.kind() != "AdmissionReview")
                .map(|d| d.value.clone()),
        );
        let inventory = Inventory::from_objects(objects);
        let subjects = docs
            .iter()
            .map(|d| {
                Ok(Subject {
                    title: d.describe(),
                    review: review_of(d).map_err(|e| anyhow::anyhow!("{}: {e}", d.origin))?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let endpoint = match self.endpoint {
            BenchEndpoint::Validate => Endpoint::Validate,
            BenchEndpoint::Mutate => Endpoint::Mutate,
        };
        let runs: Vec<Run> = self
            .threads
            .iter()
            .map(|&t| self.measure(&bundle, &inventory, endpoint, &subjects, t))
            .collect::<anyhow::Result<_>>()?;
        let costs = if endpoint == Endpoint::Validate {
            self.constraint_costs(&bundle, &inventory, &subjects)
        } else {
            Vec::new()
        };
        match self.output.format {
            OutputFormat::Text => print!("{}", self.text(&subjects, &runs, &costs)),
            OutputFormat::Json => println!(
                "{}",
                serde_json::to_string_pretty(&self.json(&subjects, &runs, &costs))?
            ),
        }
        Ok(ExitCode::SUCCESS)
    }

    /// Every thread decides every object `warmup` times, then `iterations` times measured.
    fn measure(
        &self,
        bundle: &Bundle,
        inventory: &Inventory,
        endpoint: Endpoint,
        subjects: &[Subject],
        threads: u32,
    ) -> anyhow::Result<Run> {
        // What the webhook does: its enforcement point, no exempt namespaces.
        let decider = Decider::without_exemptions().at_point(crate::policy::Point::Validation);
        let decide = |s: &Subject| {
            decider
                .decide(
                    bundle,
                    inventory,
                    endpoint,
                    &s.review,
                    time::OffsetDateTime::now_utc(),
                    None,
                )
                .map_err(|_| anyhow::anyhow!("{}: ran out of time", s.title))
        };
        let started = Instant::now();
        let per_thread: Vec<anyhow::Result<Vec<Duration>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        for _ in 0..self.warmup {
                            for s in subjects {
                                decide(s)?;
                            }
                        }
                        let mut samples =
                            Vec::with_capacity(self.iterations as usize * subjects.len());
                        for _ in 0..self.iterations {
                            for s in subjects {
                                let t = Instant::now();
                                let decision = decide(s)?;
                                samples.push(t.elapsed());
                                std::hint::black_box(decision);
                            }
                        }
                        Ok(samples)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a bench thread panicked")))
                })
                .collect()
        });
        let wall = started.elapsed();
        let mut samples = Vec::new();
        for result in per_thread {
            samples.extend(result?);
        }
        // The warm-up is inside the wall time: take it out in proportion.
        let measured_share = f64::from(self.iterations) / f64::from(self.iterations + self.warmup);
        let count = samples.len();
        let latency = Summary::of(samples).context("nothing was measured")?;
        Ok(Run {
            threads,
            reviews_per_second: count as f64 / (wall.as_secs_f64() * measured_share),
            latency,
        })
    }

    /// Each constraint that matches at least one object, alone, on one thread: its template's
    /// evaluation including the review's conversion to regorus (which the bundle pays once per
    /// review, not once per constraint).
    fn constraint_costs(
        &self,
        bundle: &Bundle,
        inventory: &Inventory,
        subjects: &[Subject],
    ) -> Vec<ConstraintCost> {
        let policies = bundle.policies();
        let mut out = Vec::new();
        for (i, constraint) in policies.constraints().iter().enumerate() {
            let Some(alone) = policies.only(i) else {
                continue;
            };
            let matching: Vec<&Subject> = subjects
                .iter()
                .filter(|s| {
                    let ns = namespace_object(&s.review, inventory);
                    constraint.matcher.matches(&s.review, ns).unwrap_or(true)
                })
                .collect();
            if matching.is_empty() {
                continue;
            }
            let evaluate = |s: &Subject| {
                let ns = namespace_object(&s.review, inventory);
                std::hint::black_box(
                    alone
                        .evaluate(
                            crate::policy::Point::Validation,
                            &s.review,
                            ns,
                            inventory,
                            None,
                        )
                        .ok(),
                );
            };
            for _ in 0..self.warmup {
                matching.iter().for_each(|s| evaluate(s));
            }
            let mut samples = Vec::with_capacity(self.iterations as usize * matching.len());
            for _ in 0..self.iterations {
                for s in &matching {
                    let t = Instant::now();
                    evaluate(s);
                    samples.push(t.elapsed());
                }
            }
            if let Some(latency) = Summary::of(samples) {
                out.push(ConstraintCost {
                    name: constraint.name.clone(),
                    kind: constraint.kind.clone(),
                    engine: if alone.templates().any(|t| t.cel().is_some()) {
                        "cel"
                    } else if alone.templates().all(|t| t.on_vm()) {
                        "vm"
                    } else {
                        "interpreter"
                    },
                    latency,
                });
            }
        }
        out.sort_by_key(|c| std::cmp::Reverse(c.latency.mean));
        out
    }

    fn text(&self, subjects: &[Subject], runs: &[Run], costs: &[ConstraintCost]) -> String {
        let us = |d: Duration| format!("{:.1} µs", d.as_secs_f64() * 1e6);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} object(s), {} measured decisions each per thread after {} warm-up, {} engine, /{}",
            subjects.len(),
            self.iterations,
            self.warmup,
            if self.eval.options().vm {
                "vm"
            } else {
                "interpreter"
            },
            match self.endpoint {
                BenchEndpoint::Validate => "validate",
                BenchEndpoint::Mutate => "mutate",
            }
        );
        let _ = writeln!(
            out,
            "\n{:>7}  {:>12}  {:>10}  {:>10}  {:>10}  {:>10}",
            "threads", "reviews/s", "mean", "p50", "p99", "p99.9"
        );
        for r in runs {
            let l = &r.latency;
            let _ = writeln!(
                out,
                "{:>7}  {:>12.0}  {:>10}  {:>10}  {:>10}  {:>10}",
                r.threads,
                r.reviews_per_second,
                us(l.mean),
                us(l.p50),
                us(l.p99),
                us(l.p999)
            );
        }
        if !costs.is_empty() {
            let _ = writeln!(
                out,
                "\neach matching constraint alone, one thread (each includes converting the review, which the bundle does once per review):"
            );
            let label = |c: &ConstraintCost| match c.engine {
                "vm" => format!("{} ({})", c.name, c.kind),
                engine => format!("{} ({}, {engine})", c.name, c.kind),
            };
            let width = costs
                .iter()
                .map(|c| label(c).chars().count())
                .max()
                .unwrap_or(0);
            let _ = writeln!(
                out,
                "{:<width$}  {:>10}  {:>10}  {:>10}",
                "constraint", "mean", "p50", "p99"
            );
            for c in costs {
                let _ = writeln!(
                    out,
                    "{:<width$}  {:>10}  {:>10}  {:>10}",
                    label(c),
                    us(c.latency.mean),
                    us(c.latency.p50),
                    us(c.latency.p99)
                );
            }
        }
        out
    }

    fn json(&self, subjects: &[Subject], runs: &[Run], costs: &[ConstraintCost]) -> Value {
        json!({
            "objects": subjects.iter().map(|s| s.title.clone()).collect::<Vec<_>>(),
            "iterations": self.iterations,
            "warmup": self.warmup,
            "engine": if self.eval.options().vm { "vm" } else { "interpreter" },
            "runs": runs.iter().map(|r| json!({
                "threads": r.threads,
                "reviewsPerSecond": r.reviews_per_second.round(),
                "latency": r.latency.json(),
            })).collect::<Vec<_>>(),
            "constraints": costs.iter().map(|c| json!({
                "name": c.name, "kind": c.kind,
                "engine": c.engine,
                "latency": c.latency.json(),
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<Duration> = (1..=1000).map(Duration::from_micros).collect();
        let s = Summary::of(samples).unwrap();
        assert_eq!(s.count, 1000);
        assert_eq!(s.p50, Duration::from_micros(500));
        assert_eq!(s.p99, Duration::from_micros(990));
        assert_eq!(s.p999, Duration::from_micros(999));
        assert_eq!(s.max, Duration::from_micros(1000));
        assert_eq!(s.mean, Duration::from_nanos(500_500));
        let one = Summary::of(vec![Duration::from_micros(7)]).unwrap();
        assert_eq!((one.p50, one.p99, one.p999), (one.max, one.max, one.max));
        assert!(Summary::of(Vec::new()).is_none());
    }
}
