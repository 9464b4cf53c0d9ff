//! `palisade bench`, with `gator bench`'s options and output form (Gatekeeper v3.21), so that
//! the figures can be set beside Gatekeeper's: how long the bundle takes to decide given objects,
//! through the webhook's decision path (everything but TLS, HTTP and JSON decoding), on one or
//! more workers, and what each matching constraint costs alone.

mod compare;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use super::args::{EvalArgs, EvalEngine, ObjectArgs, PreferEngine, parse_quantity};
use crate::admission::{Endpoint, Review};
use crate::bundle::Bundle;
use crate::decide::{Decider, namespace_object};
use crate::inventory::Inventory;
use crate::manifest::Document;
use crate::suite::review_of;

pub use report::{Latencies, go_duration, parse_go_duration};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchEndpoint {
    Validate,
    Mutate,
}

/// gator's `--engine`: which code runs a template that has both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchEngine {
    /// K8sNativeValidation where a template has it (Gatekeeper's default).
    Cel,
    /// Rego where a template has it.
    Rego,
    /// Both, one after the other, with a comparison.
    All,
}

/// gator's `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchOutput {
    /// gator's table (`text` is accepted too).
    #[value(alias = "text")]
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub objects: ObjectArgs,
    /// Measured review cycles: each cycle decides every object once (gator's --iterations).
    #[arg(short = 'n', long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub iterations: u32,
    /// Review cycles before measuring, on one worker (gator's --warmup).
    #[arg(long, default_value_t = 10)]
    pub warmup: u32,
    /// Workers deciding the cycles' reviews at once (gator's --concurrency); several values
    /// (comma-separated, e.g. 1,2) are separate runs.
    #[arg(short = 'c', long, visible_alias = "threads", value_delimiter = ',', default_value = "1", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: Vec<u32>,
    /// Which code runs a template that has both (gator's --engine; `all`: a run with each). A
    /// template with one engine's code runs on that one whichever is chosen.
    #[arg(
        short = 'e',
        long,
        visible_alias = "prefer-engine",
        env = "PALISADE_PREFER_ENGINE",
        value_enum,
        default_value = "cel"
    )]
    pub engine: BenchEngine,
    /// Which webhook decides.
    #[arg(long, value_enum, default_value = "validate")]
    pub endpoint: BenchEndpoint,
    /// How the results are printed.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: BenchOutput,
    /// Write the results to this file for a later --compare (.yaml or .yml: YAML; else JSON).
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Compare with a baseline written by --save; exits 1 when a figure regressed.
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// Regression threshold for --compare, in percent.
    #[arg(long, default_value_t = 10.0)]
    pub threshold: f64,
    /// Smallest latency increase --compare counts as a regression (e.g. 1ms), so that fast
    /// policies do not fail on tiny absolute changes.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub min_threshold: Duration,
    /// What runs Rego: regorus' VM (with the interpreter for the templates it would answer
    /// differently from OPA) or the interpreter for all (`--engine` of the other commands).
    #[arg(long, env = "PALISADE_ENGINE", value_enum, default_value = "vm")]
    pub rego_engine: EvalEngine,
    /// Longest time one template may evaluate one review, as for `serve`.
    #[arg(long, env = "PALISADE_EVAL_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub eval_timeout: Duration,
    /// Most memory one template may allocate evaluating one review on the VM, as for `serve`.
    #[arg(long, env = "PALISADE_EVAL_MEMORY_LIMIT", default_value = "128Mi", value_parser = parse_quantity)]
    pub eval_memory_limit: u64,
    /// How long an answer of an idempotent external data provider is reused, as for `serve`.
    #[arg(long, env = "PALISADE_EXTERNAL_DATA_CACHE_TTL", default_value = "3m", value_parser = humantime::parse_duration)]
    pub external_data_cache_ttl: Duration,
}

/// One run: an engine preference and a concurrency (gator's `Results`, with Palisade's
/// additions after `referentialDataSupported`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BenchResult {
    pub engine: String,
    pub template_count: usize,
    pub constraint_count: usize,
    pub object_count: usize,
    pub iterations: u32,
    pub concurrency: u32,
    pub total_reviews: usize,
    #[serde(with = "report::go")]
    pub setup_duration: Duration,
    pub setup_breakdown: SetupBreakdown,
    #[serde(with = "report::go")]
    pub total_duration: Duration,
    pub latencies: Latencies,
    pub violation_count: usize,
    pub reviews_per_second: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_templates: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_constraints: Vec<String>,
    pub referential_data_supported: bool,
    /// Palisade: which webhook decided.
    pub endpoint: String,
    /// Palisade: what ran the templates (`cel`, `vm`, `interpreter`).
    pub templates_by_engine: EngineCounts,
    /// Palisade: each matching constraint alone, one worker, the costliest first.
    #[serde(default)]
    pub constraints: Vec<ConstraintCost>,
}

/// gator's setup phases that Palisade has: templates are compiled and constraints checked in
/// one step (gator's clientCreation and constraintLoading are inside templateCompilation).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetupBreakdown {
    #[serde(with = "report::go")]
    pub template_compilation: Duration,
    #[serde(with = "report::go")]
    pub data_loading: Duration,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineCounts {
    pub cel: usize,
    pub vm: usize,
    pub interpreter: usize,
}

/// One constraint alone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConstraintCost {
    pub name: String,
    pub kind: String,
    /// What runs its template: `vm` (regorus' VM), `interpreter` (regorus' interpreter, which is
    /// slower: Palisade moves a template there where the VM would answer differently from OPA)
    /// or `cel` (K8sNativeValidation).
    pub engine: String,
    pub latencies: Latencies,
}

struct Subject {
    title: String,
    review: Review,
}

/// What one engine preference loaded.
struct Loaded {
    bundle: Bundle,
    inventory: Inventory,
    subjects: Vec<Subject>,
    setup: SetupBreakdown,
}

impl BenchArgs {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        // Fail before the long part when the baseline cannot be read.
        let baseline = self.compare.as_deref().map(compare::load).transpose()?;
        let engines: &[PreferEngine] = match self.engine {
            BenchEngine::Cel => &[PreferEngine::Cel],
            BenchEngine::Rego => &[PreferEngine::Rego],
            BenchEngine::All => &[PreferEngine::Rego, PreferEngine::Cel],
        };
        let mut results = Vec::new();
        for &engine in engines {
            let loaded = self.load(engine)?;
            let costs = if self.endpoint == BenchEndpoint::Validate {
                self.constraint_costs(&loaded)
            } else {
                Vec::new()
            };
            for &workers in &self.concurrency {
                results.push(self.measure(engine, &loaded, workers, &costs)?);
            }
        }
        let text = match self.output {
            BenchOutput::Table => report::table(&results),
            BenchOutput::Json => serde_json::to_string_pretty(&results)? + "\n",
            BenchOutput::Yaml => yaml_serde::to_string(&results)?,
        };
        print!("{text}");
        if let Some(path) = &self.save {
            compare::save(&results, path)?;
            eprintln!("\nResults saved to: {}", path.display());
        }
        let Some(baseline) = baseline else {
            return Ok(ExitCode::SUCCESS);
        };
        let comparisons = compare::compare(&baseline, &results, self.threshold, self.min_threshold);
        if comparisons.is_empty() {
            eprintln!("\nWarning: no run of the baseline has this engine and concurrency");
            return Ok(ExitCode::SUCCESS);
        }
        let text = compare::format(&comparisons, self.threshold);
        // A table goes to standard output, as gator prints it; after JSON or YAML it goes to
        // standard error, so that standard output stays one document.
        if self.output == BenchOutput::Table {
            print!("\n{text}");
        } else {
            eprint!("\n{text}");
        }
        Ok(if comparisons.iter().all(|c| c.passed) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }

    fn eval_args(&self, prefer: PreferEngine) -> EvalArgs {
        EvalArgs {
            eval_timeout: self.eval_timeout,
            engine: self.rego_engine,
            eval_memory_limit: self.eval_memory_limit,
            external_data_cache_ttl: self.external_data_cache_ttl,
            prefer_engine: prefer,
        }
    }

    fn load(&self, prefer: PreferEngine) -> anyhow::Result<Loaded> {
        let started = Instant::now();
        let (bundle, docs, mut objects) = self.objects.load(&self.eval_args(prefer))?;
        let template_compilation = started.elapsed();
        if docs.is_empty() {
            bail!(
                "no object in {}: give the objects to decide with -f",
                self.objects.inputs.join(", ")
            );
        }
        let started = Instant::now();
        objects.extend(
            docs.iter()
                .filter(|d| d.kind() != "AdmissionReview")
                .map(|d| d.value.clone()),
        );
        let inventory = Inventory::from_objects(objects);
        let data_loading = started.elapsed();
        let subjects = docs
            .iter()
            .map(subject)
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Loaded {
            bundle,
            inventory,
            subjects,
            setup: SetupBreakdown {
                template_compilation,
                data_loading,
            },
        })
    }

    fn endpoint(&self) -> Endpoint {
        match self.endpoint {
            BenchEndpoint::Validate => Endpoint::Validate,
            BenchEndpoint::Mutate => Endpoint::Mutate,
        }
    }

    /// gator's loop: `warmup` cycles on one worker, then `iterations` cycles of every object,
    /// their reviews shared out among `workers` workers; each review timed alone, and the
    /// throughput is the reviews over the wall time of the measured cycles.
    fn measure(
        &self,
        engine: PreferEngine,
        loaded: &Loaded,
        workers: u32,
        costs: &[ConstraintCost],
    ) -> anyhow::Result<BenchResult> {
        // What the webhook does: its enforcement point, no exempt namespaces.
        let decider = Decider::without_exemptions().at_point(crate::policy::Point::Validation);
        let endpoint = self.endpoint();
        let decide = |s: &Subject| {
            decider
                .decide(
                    &loaded.bundle,
                    &loaded.inventory,
                    endpoint,
                    &s.review,
                    time::OffsetDateTime::now_utc(),
                    None,
                )
                .map_err(|_| anyhow::anyhow!("{}: ran out of time", s.title))
        };
        let subjects = &loaded.subjects;
        for _ in 0..self.warmup {
            for s in subjects {
                std::hint::black_box(decide(s)?);
            }
        }
        let total = self.iterations as usize * subjects.len();
        let next = AtomicUsize::new(0);
        let started = Instant::now();
        let per_worker: Vec<anyhow::Result<(Vec<Duration>, usize)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    scope.spawn(|| {
                        let mut samples = Vec::with_capacity(total / workers as usize + 1);
                        let mut violations = 0;
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= total {
                                break;
                            }
                            let s = &subjects[i % subjects.len()];
                            let t = Instant::now();
                            let decision = decide(s)?;
                            samples.push(t.elapsed());
                            violations += decision.violations.len();
                            std::hint::black_box(decision);
                        }
                        Ok((samples, violations))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a bench worker panicked")))
                })
                .collect()
        });
        let total_duration = started.elapsed();
        let mut samples = Vec::with_capacity(total);
        let mut violation_count = 0;
        for result in per_worker {
            let (s, v) = result?;
            samples.extend(s);
            violation_count += v;
        }
        let latencies = Latencies::of(samples).context("nothing was measured")?;
        let policies = loaded.bundle.policies();
        let mut templates_by_engine = EngineCounts::default();
        for t in policies.templates() {
            match template_engine(t) {
                "cel" => templates_by_engine.cel += 1,
                "vm" => templates_by_engine.vm += 1,
                _ => templates_by_engine.interpreter += 1,
            }
        }
        Ok(BenchResult {
            engine: match engine {
                PreferEngine::Cel => "cel",
                PreferEngine::Rego => "rego",
            }
            .to_owned(),
            template_count: policies.templates().count(),
            constraint_count: policies.constraints().len(),
            object_count: subjects.len(),
            iterations: self.iterations,
            concurrency: workers,
            total_reviews: total,
            setup_duration: loaded.setup.template_compilation + loaded.setup.data_loading,
            setup_breakdown: loaded.setup.clone(),
            total_duration,
            latencies,
            violation_count,
            reviews_per_second: total as f64 / total_duration.as_secs_f64(),
            skipped_templates: Vec::new(),
            skipped_constraints: Vec::new(),
            referential_data_supported: true,
            endpoint: match self.endpoint {
                BenchEndpoint::Validate => "validate",
                BenchEndpoint::Mutate => "mutate",
            }
            .to_owned(),
            templates_by_engine,
            constraints: costs.to_vec(),
        })
    }

    /// Each constraint that matches at least one object, alone, on one worker, `warmup` then
    /// `iterations` cycles: its template's evaluation including the review's conversion (which
    /// the bundle pays once per review, not once per constraint).
    fn constraint_costs(&self, loaded: &Loaded) -> Vec<ConstraintCost> {
        let policies = loaded.bundle.policies();
        let inventory = &loaded.inventory;
        let mut out = Vec::new();
        for (i, constraint) in policies.constraints().iter().enumerate() {
            let Some(alone) = policies.only(i) else {
                continue;
            };
            let matching: Vec<&Subject> = loaded
                .subjects
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
            if let Some(latencies) = Latencies::of(samples) {
                let engine = alone
                    .templates()
                    .next()
                    .map_or("vm", |t| template_engine(t));
                out.push(ConstraintCost {
                    name: constraint.name.clone(),
                    kind: constraint.kind.clone(),
                    engine: engine.to_owned(),
                    latencies,
                });
            }
        }
        out.sort_by_key(|c| std::cmp::Reverse(c.latencies.mean));
        out
    }
}

fn subject(d: &Document) -> anyhow::Result<Subject> {
    Ok(Subject {
        title: d.describe(),
        review: review_of(d).map_err(|e| anyhow::anyhow!("{}: {e}", d.origin))?,
    })
}

/// What runs a template: `cel`, `vm` or `interpreter`.
fn template_engine(t: &crate::policy::template::Template) -> &'static str {
    if t.engine() == crate::policy::template::Engine::Cel {
        "cel"
    } else if t.on_vm() {
        "vm"
    } else {
        "interpreter"
    }
}
