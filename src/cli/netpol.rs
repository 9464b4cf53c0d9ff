//! `palisade netpol explain`: what a namespace's NetworkPolicies allow in and out of each set of
//! pods, after Kubernetes' semantics (see [`crate::netpol`]).

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::OutputFormat;
use super::test::read_inputs;
use crate::netpol;

#[derive(Debug, Subcommand)]
pub enum NetpolCommand {
    /// Print, for each namespace, which peers may reach each set of pods (in) and which each set
    /// may reach (out), on which ports, and the policy that allows it.
    Explain(ExplainArgs),
}

impl NetpolCommand {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            NetpolCommand::Explain(args) => args.run(),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ExplainArgs {
    /// NetworkPolicies, and the Namespaces their namespaceSelectors may select: a file, a
    /// directory, or - for standard input (repeatable). Other kinds are ignored.
    #[arg(short = 'f', long = "filename", required = true)]
    pub inputs: Vec<String>,
    /// The namespaces to explain (repeatable); default: every namespace that has a policy.
    #[arg(short = 'n', long = "namespace")]
    pub namespaces: Vec<String>,
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

impl ExplainArgs {
    fn run(self) -> anyhow::Result<ExitCode> {
        let docs = read_inputs(&self.inputs).map_err(anyhow::Error::msg)?;
        let (policies, namespaces) = netpol::read(&docs).map_err(anyhow::Error::msg)?;
        let mut wanted = self.namespaces.clone();
        if wanted.is_empty() {
            wanted = policies.iter().map(|p| p.namespace.clone()).collect();
            wanted.sort();
            wanted.dedup();
        }
        if wanted.is_empty() {
            anyhow::bail!(
                "no NetworkPolicy (networking.k8s.io/v1) in {}: give the files that hold them with -f",
                self.inputs.join(", ")
            );
        }
        let explained: Vec<netpol::Explanation> = wanted
            .iter()
            .map(|ns| netpol::explain(ns, &policies, &namespaces))
            .collect();
        match self.output {
            OutputFormat::Text => print!("{}", netpol::text(&explained)),
            OutputFormat::Json => println!(
                "{}",
                serde_json::to_string_pretty(&netpol::json(&explained))?
            ),
        }
        Ok(ExitCode::SUCCESS)
    }
}
