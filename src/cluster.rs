//! What talks to the Kubernetes API: the connection, the inventory feed, leader election and the
//! default-deny generator. Nothing here sits on the request path: the feed swaps inventory
//! snapshots, and the leader's work only writes to the cluster.

pub mod audit;
pub mod certs;
pub mod generate;
pub mod inventory;
pub mod lease;
pub mod policies;

pub use palisade_core::zero_trust::LabelSelector;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{ArgAction, Args};

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

/// The replica's namespace: `POD_NAMESPACE` (the downward API), else `--own-namespace`.
pub fn pod_namespace(own_namespace: &str) -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| own_namespace.to_owned())
}

/// Where the cluster configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Kubeconfig(PathBuf),
    InCluster,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Kubeconfig(path) => write!(f, "kubeconfig {}", path.display()),
            Source::InCluster => f.write_str("in-cluster service account"),
        }
    }
}

/// A client and where its configuration came from.
pub struct Connection {
    pub client: kube::Client,
    pub source: Source,
    pub server: String,
}

/// Connects as kubectl would: `--kubeconfig`, else the in-cluster service account, else
/// `KUBECONFIG` / `~/.kube/config`. `Ok(None)` when nothing is configured. A configuration that
/// exists but is broken is an error that names it.
pub async fn connect(args: &ClusterArgs) -> anyhow::Result<Option<Connection>> {
    if args.no_cluster {
        return Ok(None);
    }
    if let Some(path) = &args.kubeconfig {
        return from_kubeconfig(path).await.map(Some);
    }
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        let config = kube::Config::incluster().context(
            "running in a pod (KUBERNETES_SERVICE_HOST is set) but the service account cannot be read; mount its token or pass --kubeconfig",
        )?;
        return client(config, Source::InCluster).map(Some);
    }
    if let Some(paths) = std::env::var_os("KUBECONFIG") {
        // The first file of the list that exists, as kubectl merges from the first.
        if let Some(path) = std::env::split_paths(&paths).find(|p| p.exists()) {
            return from_kubeconfig(&path).await.map(Some);
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        let path = Path::new(&home).join(".kube/config");
        if path.exists() {
            return from_kubeconfig(&path).await.map(Some);
        }
    }
    Ok(None)
}

async fn from_kubeconfig(path: &Path) -> anyhow::Result<Connection> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("cannot read the kubeconfig {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .with_context(|| {
            format!(
                "the kubeconfig {} cannot be used (check its current-context, cluster and user)",
                path.display()
            )
        })?;
    client(config, Source::Kubeconfig(path.to_path_buf()))
}

fn client(config: kube::Config, source: Source) -> anyhow::Result<Connection> {
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config)
        .with_context(|| format!("cannot make a client for {server} from the {source}"))?;
    Ok(Connection {
        client,
        source,
        server,
    })
}
