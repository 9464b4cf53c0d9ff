//! What a cluster connection adds to the server: the inventory and policy feeds, leader
//! election, and, while this replica leads, the default-deny generator, the background audit,
//! the certificate manager and the ValidatingAdmissionPolicy sync; and the gate that holds reviews back for the feed and the
//! generator.

use std::sync::Arc;

use super::auditor::Auditor;
use super::cert_manager::{CertManager, CertManagerConfig};
use super::lease::{Elector, LeaseConfig};
use super::vap_sync::{Handoff, VapSync};
use crate::bundle::SyncKind;
use crate::decide::Decider;
use crate::state::background::BackgroundTask;
use crate::state::bundle_store::BundleStore;
use crate::state::hotswap::HotSwap;
use crate::state::readiness::{GenerationGate, Readiness};
use crate::telemetry::metrics::Metrics;
use crate::zero_trust::Scope;

/// What the server already serves, which the cluster side reads and reports into.
pub struct Served<'a> {
    pub sources: &'a Arc<BundleStore>,
    pub decider: Arc<HotSwap<Decider>>,
    pub readiness: Arc<Readiness>,
    pub metrics: Arc<Metrics>,
}

/// What a cluster connection adds to the server.
#[derive(Default)]
pub struct ClusterWiring {
    /// Holds reviews back for the feed and the generator, where they watch what is waited for.
    pub gate: Option<GenerationGate>,
    /// Run while the server runs.
    pub tasks: Vec<BackgroundTask>,
    /// Run once the tasks stop (releasing the Lease).
    pub stop_hooks: Vec<BackgroundTask>,
    /// The constraints the leader's ValidatingAdmissionPolicy sync confirmed judged by the API
    /// server: the only ones that may leave the webhook (empty on other replicas, which then
    /// keep judging everything).
    pub handoff: Arc<Handoff>,
}

/// What the leader runs, and how reviews wait for the generator (`serve`'s cluster flags).
#[derive(Debug, Clone)]
pub struct LeaderOptions {
    /// Give every opted-in namespace the generated NetworkPolicies.
    pub generate_default_deny: bool,
    /// Longest time a review waits for them (the first-apply race).
    pub generation_wait: std::time::Duration,
    /// The Lease that elects the leader.
    pub lease: LeaseConfig,
}

/// The inventory feed, leader election and, while leading, the default-deny generator and the
/// background audit; and the gate that holds reviews back for the feed and the generator.
pub fn wire(
    client: kube::Client,
    options: LeaderOptions,
    cert_manager: Option<CertManagerConfig>,
    scope: Scope,
    served: Served<'_>,
) -> anyhow::Result<ClusterWiring> {
    let Served {
        sources,
        decider,
        readiness,
        metrics,
    } = served;
    let bundle = sources.bundle();
    readiness.set_inventory_synced(false);
    readiness.set_cluster_policies_listed(false);
    let kinds = super::inventory_feed::synced_kinds(&bundle.load());
    let namespaces_synced = kinds.contains(&SyncKind::namespace());
    // Reviews wait for the feed and the generator only where what they wait for is watched: a
    // namespace not seen yet (Namespaces synced), a default-deny not generated yet (generation
    // on and NetworkPolicies synced).
    let generated = options.generate_default_deny && kinds.contains(&SyncKind::network_policy());
    let gate = (generated || namespaces_synced).then(|| GenerationGate {
        scope: generated.then(|| scope.clone()),
        wait: options.generation_wait,
        namespaces_synced,
    });
    let handoff = Arc::new(Handoff::to(decider.load().handed_off()));
    let vap_sync = VapSync {
        client: client.clone(),
        bundle: bundle.clone(),
        decider: decider.clone(),
        metrics: metrics.clone(),
        handoff: handoff.clone(),
        readiness: readiness.clone(),
    };
    let auditor = Auditor {
        client: client.clone(),
        decider,
        bundle: bundle.clone(),
        inventory: sources.inventory(),
        synced: kinds.clone(),
        scope: scope.clone(),
        metrics: metrics.clone(),
        readiness: readiness.clone(),
    };
    let feed = super::inventory_feed::run(
        client.clone(),
        bundle,
        sources.inventory(),
        readiness.clone(),
        metrics.clone(),
    );

    let lease = options.lease;
    lease.validate().map_err(anyhow::Error::msg)?;
    tracing::info!(identity = %lease.identity, lease = %format!("{}/{}", lease.namespace, lease.name), "leader election on a Lease");
    let policies = super::policy_feed::PolicyFeed {
        client: client.clone(),
        sources: sources.clone(),
        identity: lease.identity.clone(),
        own_namespace: lease.namespace.clone(),
        readiness: readiness.clone(),
    };
    let mut elector = Elector::new(client.clone(), lease);
    let releaser = elector.releaser();
    let generate = options.generate_default_deny;
    let leader = async move {
        let (leading, mut led) = tokio::sync::watch::channel(false);
        let background = async {
            loop {
                // Wait to lead, work while leading, stop the moment it ends.
                if led.wait_for(|l| *l).await.is_err() {
                    return;
                }
                let generator = async {
                    if generate {
                        super::generate::run(client.clone(), scope.clone(), metrics.clone()).await;
                    } else {
                        std::future::pending::<()>().await;
                    }
                };
                let certificates = async {
                    match &cert_manager {
                        Some(config) => {
                            CertManager::new(client.clone(), config.clone(), metrics.clone())
                                .run()
                                .await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                // Off by default; when on, it reads the served configuration each time.
                tokio::select! {
                    _ = futures::future::join4(generator, auditor.clone().run(), certificates, vap_sync.clone().run()) => {}
                    _ = led.wait_for(|l| !*l) => {
                        // A replica that does not lead confirms nothing: its webhook judges all.
                        vap_sync.handoff.clear();
                        metrics.cluster().vap_sync_in_sync.set(0);
                        tracing::info!("default-deny generator, audit, certificate manager and ValidatingAdmissionPolicy sync stopped: no longer the leader");
                    }
                }
            }
        };
        tokio::join!(elector.run(leading, metrics.cluster()), background);
    };
    Ok(ClusterWiring {
        gate,
        tasks: vec![Box::pin(feed), Box::pin(policies.run()), Box::pin(leader)],
        stop_hooks: vec![Box::pin(async move { releaser.release().await })],
        handoff,
    })
}
