//! Command-line interface: one module per command. Every `serve` flag can also be set from a
//! `PALISADE_*` variable.

pub mod audit;
pub mod bench;
pub mod certs;
pub mod expand;
pub mod manifests;
pub mod netpol;
pub mod serve;
pub mod test;
pub mod verify;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// Measure how long the bundle takes to decide objects (like gator bench): reviews per
    /// second and latency percentiles on 1..K threads, and each matching constraint's cost.
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

/// The exit code of a command that checks something (test, verify, netpol; audit does the same
/// itself): its own, 0 or 1 (something denied, failed or not allowed), or 2 with the error on
/// stderr when it could not run, so that a script tells a finding from a broken run.
fn or_cannot_run(result: anyhow::Result<ExitCode>) -> ExitCode {
    result.unwrap_or_else(|error| {
        eprintln!("error: {error:#}");
        ExitCode::from(2)
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EvalEngine {
    /// regorus' compiled VM, falling back to the interpreter for a template it cannot compile.
    Vm,
    /// regorus' interpreter for every template.
    Interpreter,
}

/// How templates are evaluated (shared by serve, verify and test, so that they agree).
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// Longest time one template may evaluate one review; past it the constraint reports a
    /// violation (fail closed).
    #[arg(long, env = "PALISADE_EVAL_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub eval_timeout: Duration,
    /// What runs the templates.
    #[arg(long, env = "PALISADE_ENGINE", value_enum, default_value = "vm")]
    pub engine: EvalEngine,
    /// Most memory one template may allocate evaluating one review on the VM (a Kubernetes
    /// quantity: 128Mi, 1Gi; 0 for no limit); past it the constraint reports a violation (fail
    /// closed). Interpreted templates are bounded by `serve --memory-limit` only.
    #[arg(long, env = "PALISADE_EVAL_MEMORY_LIMIT", default_value = "128Mi", value_parser = parse_quantity)]
    pub eval_memory_limit: u64,
    /// How long an answer of an idempotent external data provider is reused (Gatekeeper's
    /// `--external-data-provider-response-cache-ttl`); 0 turns the cache off.
    #[arg(long, env = "PALISADE_EXTERNAL_DATA_CACHE_TTL", default_value = "3m", value_parser = humantime::parse_duration)]
    pub external_data_cache_ttl: Duration,
}

/// A byte count written as Kubernetes writes memory: `134217728`, `128Mi`, `1Gi`, `500M`.
pub fn parse_quantity(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    let unit: u64 = match suffix {
        "" => 1,
        "k" | "K" => 1000,
        "M" => 1000_u64.pow(2),
        "G" => 1000_u64.pow(3),
        "T" => 1000_u64.pow(4),
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?}; write bytes, or a quantity such as 128Mi or 1Gi"
            ));
        }
    };
    let n: u64 = digits.parse().map_err(|_| {
        format!("{text:?} is not a byte count; write bytes, or a quantity such as 128Mi or 1Gi")
    })?;
    n.checked_mul(unit)
        .ok_or_else(|| format!("{text:?} is too large"))
}

impl EvalArgs {
    pub(crate) fn options(&self) -> crate::policy::EngineOptions {
        crate::policy::EngineOptions {
            eval_timeout: self.eval_timeout,
            vm: self.engine == EvalEngine::Vm,
            eval_memory: std::num::NonZeroU64::new(self.eval_memory_limit),
            external: Default::default(),
            external_cache_ttl: self.external_data_cache_ttl,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `palisade=debug`.
    #[arg(long, env = "PALISADE_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log output format.
    #[arg(long, env = "PALISADE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}
