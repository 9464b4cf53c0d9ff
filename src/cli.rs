//! Command-line interface: one module per command. Every `serve` flag can also be set from a
//! `PALISADE_*` variable.

pub mod args;
pub mod audit;
pub mod bench;
pub mod certs;
pub mod expand;
pub mod manifests;
pub mod netpol;
pub mod netpol_diff;
pub mod serve;
pub mod test;
pub mod verify;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

pub use serve::ServeArgs;

#[derive(Debug, Parser)]
#[command(
    name = "palisade",
    version,
    about = "Zero-trust Kubernetes admission webhook"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the admission webhook over HTTPS, with health and metrics on a plain-HTTP port.
    Serve(Box<ServeArgs>),
    /// Manage webhook certificates.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Run gator Suites (test.gatekeeper.sh/v1alpha1): a suite file or a directory of them;
    /// exits 1 when a case fails, 2 when they cannot run (an unreadable or malformed suite).
    Verify(verify::VerifyArgs),
    /// Evaluate objects against the policy bundle; exits 1 when any would be denied, 2 when they
    /// cannot be evaluated (a broken bundle, an unreadable file, no constraints).
    Test(test::TestArgs),
    /// Audit manifests as if created, with the default-deny coverage: a table, JSON, JUnit or
    /// PolicyReports; exits 1 when a deny violation exists, 2 on bad input.
    Audit(audit::AuditArgs),
    /// Print the resultants that ExpansionTemplates make of workloads (like gator expand): the
    /// objects, templates and mutators are read from -f; exits 1 on bad input.
    Expand(expand::ExpandArgs),
    /// Measure how long the bundle takes to decide objects, with gator bench's options and
    /// output: reviews per second, latency percentiles, and each matching constraint's cost.
    Bench(bench::BenchArgs),
    /// Print the webhook configurations for the policy bundle (the kinds and operations its
    /// constraints and mutators act on), with the caBundle when --ca is given.
    Manifests(manifests::ManifestsArgs),
    /// Explain NetworkPolicies: what each set of pods may receive and send; exits 2 on bad input.
    #[command(subcommand)]
    Netpol(netpol::NetpolCommand),
}

impl Cli {
    /// Runs the command.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        // Every command may load a bundle with Providers: they get the HTTPS client.
        crate::state::external::install();
        match self.command {
            Command::Serve(args) => args.run(),
            Command::Certs(command) => command.run(),
            Command::Verify(args) => Ok(or_cannot_run(args.run())),
            Command::Test(args) => Ok(or_cannot_run(args.run())),
            Command::Audit(args) => args.run(),
            Command::Netpol(command) => Ok(or_cannot_run(command.run())),
            Command::Manifests(args) => args.run(),
            Command::Bench(args) => args.run(),
            Command::Expand(args) => args.run(),
        }
    }
}

pub use args::{EvalArgs, EvalEngine, LogArgs, LogFormat, OutputFormat, parse_quantity};

/// The exit code of a command that checks something (test, verify, netpol; audit does the same
/// itself): its own, 0 or 1 (something denied, failed or not allowed), or 2 with the error on
/// stderr when it could not run, so that a script tells a finding from a broken run.
fn or_cannot_run(result: anyhow::Result<ExitCode>) -> ExitCode {
    result.unwrap_or_else(|error| {
        eprintln!("error: {error:#}");
        ExitCode::from(2)
    })
}
