//! `palisade test`: evaluates objects from files against the bundle, as policy authors do in CI,
//! through the same decision path as the webhook (without exempt namespaces, as gator).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};

use super::args::{EvalArgs, ObjectArgs, Output, OutputFormat};
use crate::admission::{Endpoint, Response};
use crate::bundle::Bundle;
use crate::decide::Decider;
use crate::inventory::Inventory;
use crate::manifest::Document;
use crate::policy::Violation;
use crate::suite::review_of;

#[derive(Debug, Clone, Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub objects: ObjectArgs,
    #[command(flatten)]
    pub output: Output,
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
        match self.output.format {
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
