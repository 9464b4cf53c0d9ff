//! `palisade test`: evaluates objects from files against the bundle, as policy authors do in CI.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::inventory::Inventory;
use crate::policy::source::{self, Document};
use crate::policy::{Action, BundleError, EngineOptions, PolicySet, Violation};
use crate::suite::review_of;

/// The violations of one object.
#[derive(Debug, Clone)]
pub struct Report {
    pub document: Document,
    pub violations: Vec<Violation>,
}

impl Report {
    fn title(&self) -> String {
        let v = &self.document.value;
        let obj = match &v["request"] {
            r if v["kind"] == "AdmissionReview" && r["object"].is_object() => &r["object"],
            r if v["kind"] == "AdmissionReview" => &r["oldObject"],
            _ => v,
        };
        let kind = obj["kind"].as_str().unwrap_or("(no kind)");
        let name = obj["metadata"]["name"].as_str().unwrap_or("(no name)");
        match obj["metadata"]["namespace"].as_str() {
            Some(ns) => format!("{kind} {ns}/{name}"),
            None => format!("{kind} {name}"),
        }
    }
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
            docs.extend(source::parse_str(&text, Path::new("<stdin>")).map_err(|e| e.to_string())?);
        } else {
            docs.extend(source::read_path(Path::new(input)).map_err(|e| e.to_string())?);
        }
    }
    Ok(docs)
}

/// Evaluates every object. The inventory holds `inventory` plus the objects themselves, so that
/// a namespace and its NetworkPolicies can be tested together with a pod.
pub fn check(
    set: &PolicySet,
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
    let set = set.with_inventory(Arc::new(Inventory::from_objects(all)))?;
    Ok(objects
        .into_iter()
        .map(|document| {
            let violations = set.evaluate(&review_of(&document));
            Report {
                document,
                violations,
            }
        })
        .collect())
}

pub fn load_bundle(path: &Path, options: &EngineOptions) -> Result<PolicySet, BundleError> {
    PolicySet::load(path, options, Arc::new(Inventory::default()))
}

/// Whether any report holds a violation that would deny.
pub fn any_denied(reports: &[Report]) -> bool {
    reports
        .iter()
        .any(|r| r.violations.iter().any(|v| v.action == Action::Deny))
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
                    "violations": r.violations.iter().map(|v| json!({
                        "constraint": v.constraint,
                        "constraintKind": v.constraint_kind,
                        "enforcementAction": v.action.as_str(),
                        "message": v.message,
                        "details": v.details,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}
