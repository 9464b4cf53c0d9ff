//! `palisade serve`: wires certificates, the decider and both listeners together.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};

use crate::admission::Decider;
use crate::certs::{self, CertSpec};
use crate::cli::ServeArgs;
use crate::enforce::Enforcer;
use crate::metrics::Metrics;
use crate::policy::store::PolicyStore;
use crate::server::{App, Limits, Readiness, Server, ServerOptions};
use crate::tls::{TlsPaths, TlsStore};
use crate::watch::parent_dir;

/// Service and namespace named in development certificates.
const DEV_SERVICE: &str = "palisade";
const DEV_NAMESPACE: &str = "palisade-system";

impl ServeArgs {
    /// Loads everything, binds both ports, and serves until SIGTERM or SIGINT.
    pub async fn run(self) -> anyhow::Result<()> {
        let server = self.bind().await?;
        server.run(shutdown_signal()).await;
        Ok(())
    }

    /// Loads certificates and policies and binds the listeners; fails on any bad input.
    pub async fn bind(self) -> anyhow::Result<Server> {
        let Self {
            listen,
            health_listen,
            tls_cert,
            tls_key,
            client_ca,
            no_dev_certs,
            cert_poll_interval,
            policies,
            inventory,
            policy_poll_interval,
            eval,
            exempt_namespaces,
            own_namespace,
            max_body_bytes,
            header_timeout,
            request_timeout,
            max_concurrent,
            shutdown_delay,
            drain_timeout,
            log: _,
        } = self;

        if !no_dev_certs {
            ensure_dev_certs(&tls_cert, &tls_key)?;
        }
        let metrics = Arc::new(Metrics::new());
        let paths = TlsPaths {
            cert: tls_cert,
            key: tls_key,
            client_ca,
        };
        let tls = TlsStore::load(paths, metrics.clone()).context(
            "cannot load the serving certificate (see --tls-cert, --tls-key, --client-ca)",
        )?;
        let readiness = Arc::new(Readiness::default());
        readiness.set_certificates_loaded();

        let store = PolicyStore::load(&policies, eval.options(), inventory, metrics.clone())
            .with_context(|| {
                format!(
                    "cannot load the policy bundle at {} (or the inventory)",
                    policies.display()
                )
            })?;
        let store = Arc::new(store);
        tracing::info!(
            path = %policies.display(),
            constraints = store.current().constraints().len(),
            "policy bundle loaded"
        );
        readiness.set_policies_loaded();
        let mut exempt = exempt_namespaces;
        exempt.push(own_namespace);
        exempt.retain(|n| !n.is_empty());
        let decider: Arc<dyn Decider> =
            Arc::new(Enforcer::new(store.clone(), exempt, metrics.clone()));

        let limits = Limits {
            max_body_bytes,
            header_timeout,
            request_timeout,
            max_concurrent,
        };
        let app = App::new(decider, metrics, limits, readiness);
        let options = ServerOptions {
            listen,
            health_listen,
            shutdown_delay,
            drain_timeout,
            cert_poll_interval,
        };
        let server = Server::bind(options, app, Arc::new(tls))
            .await
            .with_context(|| format!("cannot listen on {listen} and {health_listen}"))?;
        Ok(server.with_task(store.watch(policy_poll_interval)))
    }
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
    let ca = dir.join(certs::CA_CERT);
    if ca.exists() {
        bail!(
            "{} exists but the serving pair {} / {} does not; run `palisade certs generate --out {} --force` to make a new set",
            ca.display(),
            cert.display(),
            key.display(),
            dir.display()
        );
    }
    let bundle = certs::generate(&CertSpec::new(DEV_SERVICE, DEV_NAMESPACE))
        .context("cannot generate development certificates")?;
    certs::write_pair(
        &ca,
        &bundle.ca_cert_pem,
        &dir.join(certs::CA_KEY),
        &bundle.ca_key_pem,
    )?;
    certs::write_pair(cert, &bundle.cert_pem, key, &bundle.key_pem)?;
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
