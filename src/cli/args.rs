//! The arguments several commands share: how templates are evaluated, how output and logs are
//! written, which objects and bundle a command reads, and how `serve` reaches the cluster and
//! keeps its certificates.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{ArgAction, Args, ValueEnum};
use serde_json::Value;

use crate::bundle::Bundle;
use crate::manifest::files;
use crate::manifest::{self, Document};
pub use crate::telemetry::logging::LogFormat;

/// `-o`/`--output` of the commands that print text or JSON.
#[derive(Debug, Clone, Args)]
pub struct Output {
    /// How the result is printed.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub format: OutputFormat,
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
    /// Which code runs a template that has both: its K8sNativeValidation (CEL), as Gatekeeper's
    /// webhook does, or its Rego. A template with one engine runs on that one.
    #[arg(
        long,
        env = "PALISADE_PREFER_ENGINE",
        value_enum,
        default_value = "cel"
    )]
    pub prefer_engine: PreferEngine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PreferEngine {
    /// K8sNativeValidation (Gatekeeper's default since it enabled its CEL driver).
    Cel,
    /// Rego.
    Rego,
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
            prefer: match self.prefer_engine {
                PreferEngine::Cel => crate::policy::template::Engine::Cel,
                PreferEngine::Rego => crate::policy::template::Engine::Rego,
            },
        }
    }
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

/// Whether a document is part of a Gatekeeper policy bundle (a template, a constraint, a mutator,
/// an expansion template, a provider, a Config or SyncSet) rather than an object to test.
pub(crate) fn is_gatekeeper_policy(doc: &Document) -> bool {
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

/// How `serve` reaches the cluster, if at all.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Kubeconfig to connect with. Without it: the in-cluster service account, else
    /// KUBECONFIG or ~/.kube/config, else no cluster (the inventory comes from --inventory).
    #[arg(long, env = "PALISADE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Never connect to a cluster, even when one is configured.
    #[arg(long, env = "PALISADE_NO_CLUSTER")]
    pub no_cluster: bool,
    /// Give every opted-in namespace the NetworkPolicies default-deny-all and allow-dns.
    #[arg(long, env = "PALISADE_GENERATE_DEFAULT_DENY", default_value_t = true, action = ArgAction::Set)]
    pub generate_default_deny: bool,
    /// Label selector of the namespaces that get the generated NetworkPolicies
    /// (`key=value` or `key`, comma-separated, all must hold).
    #[arg(
        long,
        env = "PALISADE_DEFAULT_DENY_SELECTOR",
        default_value = "network-policy=zero-trust"
    )]
    pub default_deny_selector: String,
    /// Longest time a review in an opted-in namespace whose default-deny is not generated yet
    /// waits for it before it is decided as it stands (the first-apply race).
    #[arg(long, env = "PALISADE_GENERATION_WAIT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub generation_wait: Duration,
    /// This replica's identity in the Lease (the downward API sets POD_NAME); else the host name.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// Name of the Lease that elects the replica running the background work.
    #[arg(long, env = "PALISADE_LEASE_NAME", default_value = "palisade-leader")]
    pub lease_name: String,
    /// How long a leader holds the Lease without renewing it before another replica takes over.
    #[arg(long, env = "PALISADE_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,
    /// A leader that could not renew for this long stops its background work (less than
    /// --lease-duration, so that it stops before another replica may start).
    #[arg(long, env = "PALISADE_LEASE_RENEW_DEADLINE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub lease_renew_deadline: Duration,
    /// How often the Lease is renewed, or tried for.
    #[arg(long, env = "PALISADE_LEASE_RETRY_PERIOD", default_value = "2s", value_parser = humantime::parse_duration)]
    pub lease_retry_period: Duration,
}

/// `serve --manage-certs`: the leader keeps the CA, the serving certificate and the caBundles.
#[derive(Debug, Clone, Args)]
pub struct CertArgs {
    /// Create the CA and serving certificate Secrets when missing, keep both webhook
    /// configurations' caBundle, renew before expiry, and rotate the CA without failing a review
    /// (leader only). Every replica waits for --tls-cert/--tls-key to appear instead of
    /// generating development certificates.
    #[arg(long, env = "PALISADE_MANAGE_CERTS")]
    pub manage_certs: bool,
    /// The Secret holding the CA (never mounted by the pods).
    #[arg(long, env = "PALISADE_CA_SECRET", default_value = "palisade-ca")]
    pub ca_secret: String,
    /// The kubernetes.io/tls Secret holding the serving certificate, which the pods mount.
    #[arg(long, env = "PALISADE_TLS_SECRET", default_value = "palisade-tls")]
    pub tls_secret: String,
    /// The name of the ValidatingWebhookConfiguration and MutatingWebhookConfiguration.
    #[arg(
        long,
        env = "PALISADE_WEBHOOK_CONFIGURATION",
        default_value = "palisade"
    )]
    pub webhook_configuration: String,
    /// The Service the API server calls (named in the serving certificate).
    #[arg(long, env = "PALISADE_SERVICE", default_value = "palisade")]
    pub service: String,
    /// Validity of a new CA; it is rotated with a third of it left.
    #[arg(long, env = "PALISADE_CA_VALIDITY", default_value = "10y", value_parser = humantime::parse_duration)]
    pub ca_validity: Duration,
    /// Validity of a serving certificate; it is renewed with a third of it left.
    #[arg(long, env = "PALISADE_CERT_VALIDITY", default_value = "1y", value_parser = humantime::parse_duration)]
    pub cert_validity: Duration,
    /// How long a new CA is in the caBundle before it signs, and how long the previous one
    /// stays after: time for the API servers to reload the webhook configurations and for the
    /// kubelets to update every replica's mounted Secret.
    #[arg(long, env = "PALISADE_CERT_ROTATION_OVERLAP", default_value = "10m", value_parser = humantime::parse_duration)]
    pub cert_rotation_overlap: Duration,
    /// How often the leader checks the certificates.
    #[arg(long, env = "PALISADE_CERT_CHECK_INTERVAL", default_value = "1m", value_parser = humantime::parse_duration)]
    pub cert_check_interval: Duration,
}
