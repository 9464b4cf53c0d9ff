//! `palisade test`: evaluates objects from files against the bundle, as policy authors do in CI,
//! through the same decision path as the webhook (without exempt namespaces, as gator).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};

use super::{EvalArgs, OutputFormat};
use crate::admission::{Endpoint, Response};
use crate::bundle::Bundle;
use crate::decide::Decider;
use crate::inventory::Inventory;
use crate::manifest::files;
use crate::manifest::{self, Document};
use crate::policy::Violation;
use crate::suite::review_of;

/// What `test` and `bench` decide: objects, the bundle, and the inventory.
#[derive(Debug, Clone, Args)]
pub struct ObjectArgs {
    /// Objects to evaluate: a file, a directory, or - for standard input (repeatable). YAML or
    /// JSON, several documents, Lists and AdmissionReviews (bare objects are reviewed as CREATE).
    /// As with gator, ConstraintTemplates, Constraints and the other Gatekeeper kinds may be
    /// given here too: they are then the policy bundle (with `--policies` only when it is set).
    #[arg(short = 'f', long = "filename", required = true)]
    pub inputs: Vec<String>,
    /// The policy bundle [default: policies, unless `-f` gives the policies].
    #[arg(long, env = "PALISADE_POLICIES")]
    pub policies: Option<PathBuf>,
    /// More objects for data.inventory: files or directories, repeatable or comma-separated (the
    /// objects under test are always included).
    #[arg(long, value_delimiter = ',')]
    pub inventory: Vec<PathBuf>,
}

impl ObjectArgs {
    /// The bundle (with `eval`'s engine options), the documents, and the inventory objects
    /// (without the documents).
    ///
    /// gator's form, `-f templates/ -f constraints/ -f objects/`, works too: the Gatekeeper
    /// documents among the inputs are the bundle (joined by `--policies` when it is set), the
    /// rest are the objects. Policies without objects to test are an error.
    pub fn load(&self, eval: &EvalArgs) -> anyhow::Result<(Bundle, Vec<Document>, Vec<Value>)> {
        let (policies, docs): (Vec<Document>, Vec<Document>) = read_inputs(&self.inputs)
            .map_err(anyhow::Error::msg)?
            .into_iter()
            .partition(is_gatekeeper_policy);
        let policies_given = !policies.is_empty();
        let bundle = if policies.is_empty() {
            let path = self
                .policies
                .clone()
                .unwrap_or_else(|| PathBuf::from("policies"));
            crate::bundle::load(&path, &eval.options())
                .with_context(|| format!("cannot load the policy bundle at {}", path.display()))?
        } else {
            let mut all = match &self.policies {
                Some(path) => files::read_path(path).with_context(|| {
                    format!("cannot read the policy bundle at {}", path.display())
                })?,
                None => Vec::new(),
            };
            all.extend(policies);
            let bundle = Bundle::from_documents(all, &eval.options())
                .context("cannot load the policies given with -f")?;
            for warning in bundle.warnings() {
                tracing::warn!(%warning, "policy bundle");
            }
            bundle
        };
        if docs.is_empty() {
            anyhow::bail!(
                "no object in {}: -f gave {} but nothing to decide; add the objects (a file, a directory or -) with another -f",
                self.inputs.join(", "),
                if policies_given {
                    "only policies"
                } else {
                    "no documents"
                }
            );
        }
        let inventory = files::read_objects(&self.inventory)?;
        Ok((bundle, docs, inventory))
    }
}

#[derive(Debug, Clone, Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub objects: ObjectArgs,
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: OutputFormat,
    #[command(flatten)]
    pub eval: EvalArgs,
}

impl TestArgs {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        let (bundle, docs, inventory) = self.objects.load(&self.eval)?;
        // A run that tested nothing must not read as "0 violations".
        if bundle.policies().constraints().is_empty() {
            anyhow::bail!(
                "the policy bundle has no constraints, so nothing would be tested: give the Constraints with -f (beside their ConstraintTemplates) or point --policies at a bundle that has them"
            );
        }
        let reports = check(&bundle, docs, inventory).map_err(anyhow::Error::msg)?;
        match self.output {
            OutputFormat::Text => print!("{}", render_text(&reports)),
            OutputFormat::Json => {
                println!("{}", serde_json::to_string_pretty(&render_json(&reports))?)
            }
        }
        Ok(if any_denied(&reports) {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    }
}

/// The decision on one object.
#[derive(Debug, Clone)]
pub struct Report {
    pub document: Document,
    pub violations: Vec<Violation>,
    /// What the webhook would answer.
    pub response: Response,
}

impl Report {
    fn title(&self) -> String {
        let v = &self.document.value;
        let obj = match &v["request"] {
            r if v["kind"] == "AdmissionReview" && r["object"].is_object() => &r["object"],
            r if v["kind"] == "AdmissionReview" => &r["oldObject"],
            _ => v,
        };
        crate::object::ObjectRef::of(obj).to_string()
    }
}

/// Whether a document is part of a Gatekeeper policy bundle (a template, a constraint, a mutator,
/// an expansion template, a provider, a Config or SyncSet) rather than an object to test.
fn is_gatekeeper_policy(doc: &Document) -> bool {
    doc.group().ends_with(".gatekeeper.sh") && doc.group() != "test.gatekeeper.sh"
}

/// Reads objects from files, directories, or `-` for standard input.
pub fn read_inputs(inputs: &[String]) -> Result<Vec<Document>, String> {
    let mut docs = Vec::new();
    for input in inputs {
        if input == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            docs.extend(
                manifest::parse_str(&text, Path::new("<stdin>")).map_err(|e| e.to_string())?,
            );
        } else {
            docs.extend(files::read_path(Path::new(input)).map_err(|e| e.to_string())?);
        }
    }
    Ok(docs)
}

/// Evaluates every object. The inventory holds `inventory` plus the objects themselves, so that
/// a namespace and its NetworkPolicies can be tested together with a pod.
pub fn check(
    bundle: &Bundle,
    objects: Vec<Document>,
    inventory: Vec<Value>,
) -> Result<Vec<Report>, String> {
    let mut all = inventory;
    all.extend(
        objects
            .iter()
            .filter(|d| d.kind() != "AdmissionReview")
            .map(|d| d.value.clone()),
    );
    let inventory = Inventory::from_objects(all);
    // Workloads are mutated before they are expanded, as gator does (and as the API server's
    // mutating webhook would have done).
    let decider = Decider::without_exemptions().mutating_before_expansion();
    objects
        .into_iter()
        .map(|document| {
            let review = review_of(&document).map_err(|e| format!("{}: {e}", document.origin))?;
            let decision = decider
                .decide(
                    bundle,
                    &inventory,
                    Endpoint::Validate,
                    &review,
                    time::OffsetDateTime::now_utc(),
                    None,
                )
                .map_err(|e| e.to_string())?;
            Ok(Report {
                document,
                violations: decision.violations,
                response: decision.response,
            })
        })
        .collect()
}

/// Whether the webhook would deny any of the objects.
pub fn any_denied(reports: &[Report]) -> bool {
    reports.iter().any(|r| !r.response.allowed)
}

/// Grouped by object, then constraint.
pub fn render_text(reports: &[Report]) -> String {
    let mut out = String::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in reports {
        if r.violations.is_empty() {
            let _ = writeln!(out, "{}: no violations", r.title());
            continue;
        }
        let _ = writeln!(out, "{} ({}):", r.title(), r.document.origin);
        let mut by_constraint: BTreeMap<(&str, &str, &str), Vec<&str>> = BTreeMap::new();
        for v in &r.violations {
            *counts.entry(v.action.as_str()).or_default() += 1;
            by_constraint
                .entry((
                    v.constraint_kind.as_str(),
                    v.constraint.as_str(),
                    v.action.as_str(),
                ))
                .or_default()
                .push(&v.message);
        }
        for ((kind, name, action), messages) in by_constraint {
            let _ = writeln!(out, "  {kind}/{name} [{action}]");
            for m in messages {
                let _ = writeln!(out, "    - {m}");
            }
        }
    }
    let total: usize = counts.values().sum();
    let _ = writeln!(
        out,
        "{} object{}, {} violation{} ({} deny, {} warn, {} dryrun)",
        reports.len(),
        if reports.len() == 1 { "" } else { "s" },
        total,
        if total == 1 { "" } else { "s" },
        counts.get("deny").unwrap_or(&0),
        counts.get("warn").unwrap_or(&0),
        counts.get("dryrun").unwrap_or(&0),
    );
    out
}

pub fn render_json(reports: &[Report]) -> Value {
    Value::Array(
        reports
            .iter()
            .map(|r| {
                let v = &r.document.value;
                json!({
                    "source": r.document.origin.to_string(),
                    "apiVersion": v["apiVersion"],
                    "kind": v["kind"],
                    "namespace": v["metadata"]["namespace"],
                    "name": v["metadata"]["name"],
                    "violations": r.violations.iter().map(crate::audit::report::violation_json).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}
