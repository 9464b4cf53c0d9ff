//! `palisade serve`: wires certificates, the sources of state, the decider and both listeners
//! together.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use super::args::{CertArgs, ClusterArgs, EvalArgs, LogArgs};
use crate::cluster::cert_manager::CertManagerConfig;
use crate::cluster::leader::{self, ClusterWiring, LeaderOptions, Served};
use crate::cluster::lease::LeaseConfig;
use crate::cluster::{self as kube_cluster};
use crate::decide::Decider;
use crate::policy::Action;
use crate::server::{App, Limits, Server, ServerOptions, health_router};
use crate::state::bundle_store::BundleStore;
use crate::state::config_store::{ConfigStore, Overrides};
use crate::state::readiness::Readiness;
use crate::state::watch::parent_dir;
use crate::telemetry::logging;
use crate::telemetry::metrics::Metrics;
use crate::tls::certificates::{self, CertSpec};
use crate::tls::store::{TlsPaths, TlsStore};
use crate::zero_trust::{LabelSelector, Scope};

/// Service and namespace named in development certificates.
const DEV_SERVICE: &str = "palisade";
const DEV_NAMESPACE: &str = "palisade-system";

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address of the HTTPS admission endpoints (/validate, /mutate).
    #[arg(long, env = "PALISADE_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Address of the plain-HTTP endpoints /healthz, /readyz and /metrics.
    #[arg(long, env = "PALISADE_HEALTH_LISTEN", default_value = "0.0.0.0:8080")]
    pub health_listen: SocketAddr,
    /// Address of a second plain-HTTP endpoint that serves /healthz and /readyz only, for the
    /// kubelet's probes: a NetworkPolicy may then leave it open to every source (probes come
    /// from the node, which some CNIs subject to policy) while /metrics stays reachable only from
    /// monitoring.
    #[arg(long, env = "PALISADE_PROBE_LISTEN")]
    pub probe_listen: Option<SocketAddr>,
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
    /// Configuration file (YAML): enforcement modes, break-glass, the audit. Watched and
    /// reloaded like the bundle; without it, every constraint is enforced as written and nobody
    /// may use break-glass.
    #[arg(long, env = "PALISADE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Caps every constraint's enforcementAction (deny, warn, dryrun); overrides the file's
    /// `enforcement`.
    #[arg(long, env = "PALISADE_ENFORCEMENT", value_parser = parse_action)]
    pub enforcement: Option<Action>,
    /// How often the leader audits what runs in the cluster; overrides the file's
    /// `audit.interval`.
    #[arg(long, env = "PALISADE_AUDIT_INTERVAL", value_parser = humantime::parse_duration)]
    pub audit_interval: Option<Duration>,
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
    /// Ceiling on the memory Palisade allocates: past it, every policy evaluation stops and its
    /// constraint reports a violation (fail closed), so that a runaway policy costs reviews a
    /// denial rather than the process an out-of-memory kill. A Kubernetes quantity (640Mi),
    /// `auto` for 90% of the container's memory limit (cgroup `memory.max`; none without one),
    /// or `none`.
    #[arg(long, env = "PALISADE_MEMORY_LIMIT", default_value = "auto", value_parser = parse_memory_limit)]
    pub memory_limit: MemoryLimit,
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
    /// A connection that has received nothing for this long is closed: a client that connects
    /// and goes quiet (before or between requests) does not hold it for ever. HTTP/2 clients
    /// answer the server's keep-alive pings (every 30 s) and stay. At least the header timeout
    /// plus the request timeout, so that no review is cut short.
    #[arg(long, env = "PALISADE_IDLE_TIMEOUT", default_value = "90s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// Reviews evaluated at once; further ones wait, within the request timeout.
    #[arg(long, env = "PALISADE_MAX_CONCURRENT", default_value_t = 512)]
    pub max_concurrent: usize,
    /// Evaluation time a review may use on an I/O thread; a review that needs more is finished
    /// on the blocking pool, so that slow policies never stall other connections.
    #[arg(long, env = "PALISADE_EVAL_INLINE_BUDGET", default_value = "2ms", value_parser = humantime::parse_duration)]
    pub eval_inline_budget: Duration,
    /// Threads that evaluate reviews past their inline budget (0: one per core).
    #[arg(long, env = "PALISADE_EVAL_THREADS", default_value_t = 0)]
    pub eval_threads: usize,
    /// After SIGTERM, keep serving (unready) this long so that endpoints stop routing to us.
    #[arg(long, env = "PALISADE_SHUTDOWN_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
    pub shutdown_delay: Duration,
    /// Longest time to finish in-flight reviews after shutdown starts.
    #[arg(long, env = "PALISADE_DRAIN_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub certs: CertArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

impl ServeArgs {
    /// Starts the runtime, loads everything, binds both ports, and serves until SIGTERM or
    /// SIGINT.
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        logging::init(&self.log.log_level, self.log.log_format)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        runtime.block_on(async {
            let server = self.load().await?;
            server.run(shutdown_signal()).await;
            anyhow::Ok(())
        })?;
        Ok(ExitCode::SUCCESS)
    }

    /// Loads certificates and policies and binds the listeners; fails on any bad input.
    pub async fn load(self) -> anyhow::Result<Server> {
        let Self {
            listen,
            health_listen,
            probe_listen,
            tls_cert,
            tls_key,
            client_ca,
            no_dev_certs,
            cert_poll_interval,
            policies,
            inventory,
            policy_poll_interval,
            eval,
            config,
            enforcement,
            audit_interval,
            exempt_namespaces,
            own_namespace,
            memory_limit,
            max_body_bytes,
            header_timeout,
            request_timeout,
            idle_timeout,
            max_concurrent,
            eval_inline_budget,
            eval_threads,
            shutdown_delay,
            drain_timeout,
            cluster,
            certs: cert_args,
            log: _,
        } = self;

        if idle_timeout < header_timeout + request_timeout {
            anyhow::bail!(
                "--idle-timeout {} is shorter than --header-timeout plus --request-timeout ({}): a review could be cut short; raise it",
                humantime::format_duration(idle_timeout),
                humantime::format_duration(header_timeout + request_timeout)
            );
        }
        let cert_manager = cert_args.manage_certs.then(|| CertManagerConfig {
            namespace: kube_cluster::pod_namespace(&own_namespace),
            ca_secret: cert_args.ca_secret.clone(),
            tls_secret: cert_args.tls_secret.clone(),
            webhook_configuration: cert_args.webhook_configuration.clone(),
            spec: CertSpec::new(&cert_args.service, &own_namespace),
            ca_validity: cert_args.ca_validity,
            cert_validity: cert_args.cert_validity,
            overlap: cert_args.cert_rotation_overlap,
            interval: cert_args.cert_check_interval,
        });
        if let Some(config) = &cert_manager {
            config.validate().map_err(anyhow::Error::msg)?;
        }
        if !no_dev_certs && cert_manager.is_none() {
            ensure_dev_certs(&tls_cert, &tls_key)?;
        }
        let ceiling = memory_limit.resolve();
        crate::policy::set_memory_ceiling(ceiling);
        match ceiling {
            Some(bytes) => tracing::info!(
                memory_limit_mib = bytes >> 20,
                eval_memory_limit_mib = eval.eval_memory_limit >> 20,
                "policy evaluations stop past these memory limits"
            ),
            None => tracing::info!(
                eval_memory_limit_mib = eval.eval_memory_limit >> 20,
                "no process memory ceiling (--memory-limit: none, or auto without a cgroup memory limit)"
            ),
        }
        let metrics = Arc::new(Metrics::new());
        let paths = TlsPaths {
            cert: tls_cert,
            key: tls_key,
            client_ca,
        };
        let readiness = Arc::new(Readiness::default());
        let tls = if cert_manager.is_some() {
            // The leader (maybe this replica) writes them; until then, wait unready.
            TlsStore::load_or_wait(paths, metrics.clone(), readiness.clone())
        } else {
            TlsStore::load(paths, metrics.clone()).inspect(|_| readiness.set_certificates_loaded())
        }
        .context("cannot load the serving certificate (see --tls-cert, --tls-key, --client-ca)")?;

        let inventory_paths_len = inventory.len();
        let sources = Arc::new(BundleStore::load(
            &policies,
            eval.options(),
            inventory,
            metrics.clone(),
        )?);
        let bundle = sources.bundle();
        tracing::info!(
            path = %policies.display(),
            constraints = bundle.load().policies().constraints().len(),
            inventory = sources.inventory().load().len(),
            "policy bundle loaded"
        );
        readiness.set_policies_loaded();
        let mut exempt = exempt_namespaces;
        exempt.push(own_namespace.clone());
        let config = Arc::new(
            ConfigStore::load(
                config,
                Overrides {
                    enforcement,
                    audit_interval,
                },
                Decider::new(exempt.clone())
                    .with_own_namespace(&own_namespace)
                    .with_grant_keys(tls.grant_keys()),
                metrics.clone(),
            )
            .context("cannot load the configuration (see --config)")?,
        );
        let decider = config.decider();
        {
            let served = decider.load();
            let c = served.config();
            tracing::info!(enforcement = %c.enforcement, namespace_rules = c.namespaces.len(),
                break_glass_users = c.break_glass.users.len(), break_glass_groups = c.break_glass.groups.len(),
                "configuration loaded");
        }
        let selector: LabelSelector = cluster
            .default_deny_selector
            .parse()
            .map_err(|e| anyhow::anyhow!("--default-deny-selector: {e}"))?;
        let connection = if cluster.no_cluster {
            None
        } else {
            kube_cluster::connect(cluster.kubeconfig.as_deref()).await?
        };
        match &connection {
            Some(c) => tracing::info!(mode = "cluster", source = %c.source, server = %c.server,
                generate_default_deny = cluster.generate_default_deny,
                "connected to the cluster: the inventory comes from watches (and --inventory files)"),
            None => tracing::info!(
                mode = "files",
                inventory = inventory_paths_len,
                "no cluster configured: the inventory comes from --inventory files only"
            ),
        }

        let limits = Limits {
            max_body_bytes,
            header_timeout,
            request_timeout,
            idle_timeout,
            max_concurrent,
            inline_budget: eval_inline_budget,
            eval_threads: if eval_threads == 0 {
                std::thread::available_parallelism().map_or(1, usize::from)
            } else {
                eval_threads
            },
        };
        let scope = Scope { selector, exempt };
        if cert_manager.is_some() && connection.is_none() {
            bail!(
                "--manage-certs keeps the certificates in the cluster, and no cluster is configured: run in a cluster (or give --kubeconfig), or drop --manage-certs"
            );
        }
        let wiring = match connection {
            Some(connection) => leader::wire(
                connection.client,
                LeaderOptions {
                    generate_default_deny: cluster.generate_default_deny,
                    generation_wait: cluster.generation_wait,
                    lease: LeaseConfig {
                        name: cluster.lease_name.clone(),
                        namespace: kube_cluster::pod_namespace(&own_namespace),
                        identity: kube_cluster::lease::identity(cluster.pod_name.as_deref()),
                        duration: cluster.lease_duration,
                        renew_deadline: cluster.lease_renew_deadline,
                        retry_period: cluster.lease_retry_period,
                    },
                },
                cert_manager,
                scope,
                Served {
                    sources: &sources,
                    decider: decider.clone(),
                    readiness: readiness.clone(),
                    metrics: metrics.clone(),
                },
            )?,
            None => ClusterWiring::default(),
        };
        let probes = match probe_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (--probe-listen)"))?,
            ),
            None => None,
        };
        let app = App::new(
            decider,
            bundle,
            sources.inventory(),
            metrics,
            limits,
            readiness,
            wiring.gate,
        );
        let options = ServerOptions {
            listen,
            health_listen,
            shutdown_delay,
            drain_timeout,
            cert_poll_interval,
        };
        let probe_app = app.clone();
        let server = Server::bind(options, app, Arc::new(tls))
            .await
            .with_context(|| format!("cannot listen on {listen} and {health_listen}"))?;
        let mut server = server
            .with_task(sources.watch(policy_poll_interval))
            .with_task(config.watch(policy_poll_interval));
        if let Some(listener) = probes {
            server = server.with_task(serve_probes(listener, probe_app));
        }
        for task in wiring.tasks {
            server = server.with_task(task);
        }
        for hook in wiring.stop_hooks {
            server = server.with_stop_hook(hook);
        }
        Ok(server)
    }
}

/// The health router's /healthz and /readyz, and nothing else (no /metrics), until the server
/// stops its background tasks. /readyz turns 503 when shutdown begins, as on --health-listen.
async fn serve_probes(listener: tokio::net::TcpListener, app: Arc<App>) {
    let router = health_router(app).layer(axum::middleware::from_fn(probes_only));
    if let Err(error) = axum::serve(listener, router).await {
        tracing::error!(%error, "the probe listener (--probe-listen) stopped");
    }
}

async fn probes_only(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match request.uri().path() {
        "/healthz" | "/readyz" => next.run(request).await,
        _ => axum::response::IntoResponse::into_response(axum::http::StatusCode::NOT_FOUND),
    }
}

fn parse_action(s: &str) -> Result<Action, String> {
    Action::parse(s).ok_or_else(|| format!("{s:?} is not deny, warn or dryrun"))
}

/// On first start without certificates, makes a development CA and serving pair so that
/// `palisade serve` works on a fresh clone.
fn ensure_dev_certs(cert: &Path, key: &Path) -> anyhow::Result<()> {
    match (cert.exists(), key.exists()) {
        (true, true) => return Ok(()),
        (true, false) => bail!(
            "{} exists but its key {} does not: restore the key or remove both",
            cert.display(),
            key.display()
        ),
        (false, true) => bail!(
            "{} exists but its certificate {} does not: restore the certificate or remove both",
            key.display(),
            cert.display()
        ),
        (false, false) => {}
    }
    let dir = parent_dir(cert);
    let ca = dir.join(certificates::CA_CERT);
    if ca.exists() {
        bail!(
            "{} exists but the serving pair {} / {} does not; run `palisade certs generate --out {} --force` to make a new set",
            ca.display(),
            cert.display(),
            key.display(),
            dir.display()
        );
    }
    let bundle = certificates::generate(&CertSpec::new(DEV_SERVICE, DEV_NAMESPACE))
        .context("cannot generate development certificates")?;
    certificates::write_pair(
        &ca,
        &bundle.ca_cert_pem,
        &dir.join(certificates::CA_KEY),
        &bundle.ca_key_pem,
    )?;
    certificates::write_pair(cert, &bundle.cert_pem, key, &bundle.key_pem)?;
    tracing::warn!(
        ca = %ca.display(),
        cert = %cert.display(),
        "no serving certificate found: generated a development CA and serving pair; trust the CA to call the webhook (pass --no-dev-certs in production)"
    );
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT; a second one aborts at once.
async fn shutdown_signal() {
    wait_for_signal().await;
    tracing::info!("shutdown signal received; send another to abort");
    tokio::spawn(async {
        wait_for_signal().await;
        tracing::warn!("second shutdown signal: aborting without draining");
        std::process::exit(1);
    });
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `--memory-limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryLimit {
    /// 90% of the cgroup's memory limit, if there is one.
    Auto,
    None,
    Bytes(u64),
}

fn parse_memory_limit(text: &str) -> Result<MemoryLimit, String> {
    match text.trim() {
        "auto" => Ok(MemoryLimit::Auto),
        "none" | "0" => Ok(MemoryLimit::None),
        other => crate::cli::parse_quantity(other).map(MemoryLimit::Bytes),
    }
}

impl MemoryLimit {
    /// The ceiling in bytes, reading the cgroup for `auto`.
    pub fn resolve(self) -> Option<u64> {
        match self {
            MemoryLimit::Auto => cgroup_memory_limit().map(|max| max / 10 * 9),
            MemoryLimit::None => None,
            MemoryLimit::Bytes(n) => Some(n),
        }
    }
}

/// The memory limit of this process's cgroup (v2 `memory.max`, else v1
/// `memory.limit_in_bytes`), if one is set.
fn cgroup_memory_limit() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let text = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))?;
    // "max" (v2), or v1's page-rounded i64::MAX, mean no limit.
    text.trim().parse::<u64>().ok().filter(|&n| n < 1 << 62)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parse_quantity;

    #[test]
    fn memory_quantities_are_read_as_kubernetes_writes_them() {
        assert_eq!(parse_quantity("134217728"), Ok(128 << 20));
        assert_eq!(parse_quantity("128Mi"), Ok(128 << 20));
        assert_eq!(parse_quantity("1Gi"), Ok(1 << 30));
        assert_eq!(parse_quantity("500M"), Ok(500_000_000));
        assert_eq!(parse_quantity("0"), Ok(0));
        let err = parse_quantity("128MB").unwrap_err();
        assert!(
            err.contains("unknown unit \"MB\"") && err.contains("128Mi"),
            "{err}"
        );
        assert!(
            parse_quantity("Mi")
                .unwrap_err()
                .contains("not a byte count")
        );
        assert!(
            parse_quantity("99999999999Ti")
                .unwrap_err()
                .contains("too large")
        );
        assert_eq!(parse_memory_limit("auto"), Ok(MemoryLimit::Auto));
        assert_eq!(parse_memory_limit("none"), Ok(MemoryLimit::None));
        assert_eq!(
            parse_memory_limit("640Mi"),
            Ok(MemoryLimit::Bytes(640 << 20))
        );
        assert_eq!(MemoryLimit::Bytes(7).resolve(), Some(7));
        assert_eq!(MemoryLimit::None.resolve(), None);
    }
}
