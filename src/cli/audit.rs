//! `palisade audit`: audits manifests (for example `kubectl kustomize` output) before they reach
//! a cluster. Every object is evaluated as if created, with the objects of the same input as the
//! inventory, so that a namespace and its NetworkPolicies in one repository are checked together.
//!
//! Exit codes: 0 when nothing would be denied, 1 when a deny violation exists, 2 on bad input or
//! a bad bundle.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde_json::Value;

use super::EvalArgs;
use super::args::read_inputs;
use crate::audit::{self, Presented, report};
use crate::decide::Decider;
use crate::inventory::Inventory;
use crate::manifest::files;
use crate::policy::Action;
use crate::zero_trust::LabelSelector;
use crate::zero_trust::Scope;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuditFormat {
    /// A table by namespace, object and constraint.
    Text,
    Json,
    /// JUnit XML for CI systems.
    Junit,
    /// The wgpolicyk8s.io/v1alpha2 PolicyReports the background audit publishes, as a YAML List.
    Policyreport,
}

#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    /// Manifests to audit: files, directories, or - for standard input (repeatable).
    #[arg(short = 'f', long = "filename", required = true)]
    pub inputs: Vec<String>,
    /// The policy bundle.
    #[arg(long, env = "PALISADE_POLICIES", default_value = "policies")]
    pub policies: PathBuf,
    /// More objects for data.inventory (the audited objects are always in it).
    #[arg(long, value_delimiter = ',')]
    pub inventory: Vec<PathBuf>,
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: AuditFormat,
    /// Namespaces left out, as the webhook exempts them (comma-separated).
    #[arg(
        long = "exempt-namespace",
        value_delimiter = ',',
        default_value = "kube-system"
    )]
    pub exempt_namespaces: Vec<String>,
    /// Namespaces that must hold a default-deny NetworkPolicy (the coverage check).
    #[arg(long, default_value = "network-policy=zero-trust")]
    pub default_deny_selector: String,
    /// Largest number of results in one PolicyReport (--output policyreport).
    #[arg(long, default_value_t = 1000)]
    pub max_results_per_report: usize,
    #[command(flatten)]
    pub eval: EvalArgs,
}

impl AuditArgs {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        match self.audit() {
            Ok((out, denied)) => {
                print!("{out}");
                Ok(ExitCode::from(u8::from(denied)))
            }
            Err(error) => {
                eprintln!("error: {error}");
                Ok(ExitCode::from(2))
            }
        }
    }

    /// The rendered output, and whether a deny violation exists.
    pub fn audit(&self) -> Result<(String, bool), String> {
        let bundle = crate::bundle::load(&self.policies, &self.eval.options()).map_err(|e| {
            format!(
                "cannot load the policy bundle at {}: {e}",
                self.policies.display()
            )
        })?;
        let selector: LabelSelector = self
            .default_deny_selector
            .parse()
            .map_err(|e| format!("--default-deny-selector: {e}"))?;
        let docs = read_inputs(&self.inputs)?;
        let objects: Vec<Value> = docs
            .into_iter()
            .map(|d| d.value)
            .filter(|v| v["kind"] != "AdmissionReview")
            .collect();
        let mut all = files::read_objects(&self.inventory).map_err(|e| e.to_string())?;
        all.extend(objects.iter().cloned());
        let namespaces: Vec<&Value> = all
            .iter()
            .filter(|o| o["kind"] == "Namespace" && o["apiVersion"] == "v1")
            .collect();
        let policies: Vec<&Value> = all
            .iter()
            .filter(|o| o["kind"] == "NetworkPolicy" && o["apiVersion"] == "networking.k8s.io/v1")
            .collect();
        let scope = Scope {
            selector,
            exempt: self.exempt_namespaces.clone(),
        };
        let coverage =
            audit::coverage(namespaces.iter().copied(), policies.iter().copied(), &scope);
        let inventory = Inventory::from_objects(all.iter().cloned());
        let decider = Decider::new(self.exempt_namespaces.clone());
        let mut findings = audit::evaluate(
            &decider,
            &bundle,
            &inventory,
            objects,
            Presented::AsCreated,
            time::OffsetDateTime::now_utc(),
        );
        // Communication matrices judge the input as a whole.
        let (matrix_findings, _) = audit::matrices(&bundle, &inventory);
        findings.extend(matrix_findings);
        // Coverage is reported, not enforced here: in a cluster the generator writes the
        // default-deny of an opted-in namespace.
        let denied = findings
            .iter()
            .flat_map(|f| &f.violations)
            .any(|v| v.action == Action::Deny);
        let out = match self.output {
            AuditFormat::Text => report::text(&findings, Some(&coverage)),
            AuditFormat::Json => format!(
                "{}\n",
                serde_json::to_string_pretty(&report::json(&findings, Some(&coverage)))
                    .map_err(|e| e.to_string())?
            ),
            AuditFormat::Junit => report::junit(&findings, Some(&coverage)),
            AuditFormat::Policyreport => {
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                let items = report::policy_reports(
                    &findings,
                    Some(&coverage),
                    self.max_results_per_report,
                    now,
                );
                let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
                yaml_serde::to_string(&list).map_err(|e| e.to_string())?
            }
        };
        Ok((out, denied))
    }
}
