//! Command-line interface. Every `serve` flag can also be set from a `PALISADE_*` variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    Certs(CertsCommand),
    /// Run gator Suites (test.gatekeeper.sh/v1alpha1): a suite file or a directory of them.
    Verify(VerifyArgs),
    /// Evaluate objects against the policy bundle; exits 1 when any would be denied.
    Test(TestArgs),
}

#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// A Suite file, or a directory searched recursively for Suites.
    pub path: PathBuf,
    #[command(flatten)]
    pub eval: EvalArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct TestArgs {
    /// Objects to evaluate: a file, a directory, or - for standard input (repeatable). YAML or
    /// JSON, several documents, Lists and AdmissionReviews.
    #[arg(short = 'f', long = "filename", required = true)]
    pub inputs: Vec<String>,
    /// The policy bundle.
    #[arg(long, env = "PALISADE_POLICIES", default_value = "policies")]
    pub policies: PathBuf,
    /// More objects for data.inventory: files or directories, repeatable or comma-separated (the
    /// objects under test are always included).
    #[arg(long, value_delimiter = ',')]
    pub inventory: Vec<PathBuf>,
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: OutputFormat,
    #[command(flatten)]
    pub eval: EvalArgs,
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
}

impl EvalArgs {
    pub fn options(&self) -> crate::policy::EngineOptions {
        crate::policy::EngineOptions {
            eval_timeout: self.eval_timeout,
            vm: self.engine == EvalEngine::Vm,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Write a CA and a serving certificate for the webhook Service, and print the caBundle.
    Generate(GenerateArgs),
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

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address of the HTTPS admission endpoints (/validate, /mutate).
    #[arg(long, env = "PALISADE_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Address of the plain-HTTP endpoints /healthz, /readyz and /metrics.
    #[arg(long, env = "PALISADE_HEALTH_LISTEN", default_value = "0.0.0.0:8080")]
    pub health_listen: SocketAddr,
    /// PEM certificate chain served to the API server.
    #[arg(long, env = "PALISADE_TLS_CERT", default_value = "certs/tls.crt")]
    pub tls_cert: PathBuf,
    /// PEM private key of the serving certificate.
    #[arg(long, env = "PALISADE_TLS_KEY", default_value = "certs/tls.key")]
    pub tls_key: PathBuf,
    /// Require clients to present a certificate issued by this PEM CA bundle.
    #[arg(long, env = "PALISADE_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// Do not generate a development CA and serving pair when the certificate files are missing.
    #[arg(long, env = "PALISADE_NO_DEV_CERTS")]
    pub no_dev_certs: bool,
    /// How often the certificate directory is re-read even without a file-system event.
    #[arg(long, env = "PALISADE_CERT_POLL_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub cert_poll_interval: Duration,
    /// Directory (or file) of ConstraintTemplates, Constraints and mutators, watched for changes.
    #[arg(long, env = "PALISADE_POLICIES", default_value = "policies")]
    pub policies: PathBuf,
    /// Objects that policies see as data.inventory and that namespaceSelectors look up: files or
    /// directories of manifests (repeatable, or comma-separated), until the live cluster feed
    /// replaces them.
    #[arg(long, env = "PALISADE_INVENTORY", value_delimiter = ',')]
    pub inventory: Vec<PathBuf>,
    /// How often the policy directory is re-read even without a file-system event.
    #[arg(long, env = "PALISADE_POLICY_POLL_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub policy_poll_interval: Duration,
    #[command(flatten)]
    pub eval: EvalArgs,
    /// Namespaces exempt from all evaluation, matched by name (comma-separated).
    #[arg(
        long = "exempt-namespace",
        env = "PALISADE_EXEMPT_NAMESPACES",
        value_delimiter = ',',
        default_value = "kube-system"
    )]
    pub exempt_namespaces: Vec<String>,
    /// Palisade's own namespace, always exempt so that it can never lock itself out.
    #[arg(long, env = "PALISADE_NAMESPACE", default_value = "palisade-system")]
    pub own_namespace: String,
    /// Largest accepted request body, in bytes; larger bodies get HTTP 413.
    #[arg(long, env = "PALISADE_MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Time a client has to complete the TLS handshake and send its request headers.
    #[arg(long, env = "PALISADE_HEADER_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// Time to read a request body and decide; past it the answer is HTTP 504, so that the
    /// webhook's failurePolicy applies. Keep it below the webhook's timeoutSeconds.
    #[arg(long, env = "PALISADE_REQUEST_TIMEOUT", default_value = "4s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Reviews evaluated at once; further ones wait, within the request timeout.
    #[arg(long, env = "PALISADE_MAX_CONCURRENT", default_value_t = 512)]
    pub max_concurrent: usize,
    /// After SIGTERM, keep serving (unready) this long so that endpoints stop routing to us.
    #[arg(long, env = "PALISADE_SHUTDOWN_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
    pub shutdown_delay: Duration,
    /// Longest time to finish in-flight reviews after shutdown starts.
    #[arg(long, env = "PALISADE_DRAIN_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// Name of the webhook's Service.
    #[arg(long, default_value = "palisade")]
    pub service: String,
    /// Namespace of the webhook's Service.
    #[arg(long, default_value = "palisade-system")]
    pub namespace: String,
    /// Directory to write ca.crt, ca.key, tls.crt and tls.key into.
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
    /// Validity of the CA, in days.
    #[arg(long, default_value_t = 3650)]
    pub ca_days: u32,
    /// Validity of the serving certificate, in days.
    #[arg(long, default_value_t = 365)]
    pub cert_days: u32,
    /// Additional DNS names or IP addresses for the serving certificate.
    #[arg(long = "extra-san")]
    pub extra_sans: Vec<String>,
    /// Replace an existing CA (every webhook configuration's caBundle must then be updated).
    #[arg(long)]
    pub force: bool,
}
