//! Whether the webhook should receive traffic, and how long a review waits for the cluster's
//! state to catch up with it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::admission::Review;
use crate::inventory::Inventory;

/// Whether the webhook should receive traffic: everything it needs is loaded and it is not
/// shutting down.
#[derive(Debug, Default)]
pub struct Readiness {
    certificates: AtomicBool,
    policies: AtomicBool,
    draining: AtomicBool,
    /// The cluster feed has not listed every synced kind yet.
    inventory_pending: AtomicBool,
    /// The policies applied to the cluster (templates, each template's constraints, mutators,
    /// Config) have not all been listed yet.
    cluster_policies_pending: AtomicBool,
}

impl Readiness {
    pub fn set_certificates_loaded(&self) {
        self.certificates.store(true, Ordering::Release);
    }
    pub fn certificates_loaded(&self) -> bool {
        self.certificates.load(Ordering::Acquire)
    }
    pub fn set_policies_loaded(&self) {
        self.policies.store(true, Ordering::Release);
    }
    /// Whether every synced kind of the cluster feed has been listed (files-only: always).
    pub fn set_inventory_synced(&self, synced: bool) {
        self.inventory_pending.store(!synced, Ordering::Release);
    }
    /// Whether the cluster feed has listed every synced kind (files-only: always).
    pub fn inventory_synced(&self) -> bool {
        !self.inventory_pending.load(Ordering::Acquire)
    }
    /// Whether the policy feed has listed the cluster's policies once (files-only: always).
    /// Set once at start-up: a template added later does not take a ready replica out.
    pub fn set_cluster_policies_listed(&self, listed: bool) {
        self.cluster_policies_pending
            .store(!listed, Ordering::Release);
    }
    /// Whether the cluster's policies have been listed (files-only: always).
    pub fn cluster_policies_listed(&self) -> bool {
        !self.cluster_policies_pending.load(Ordering::Acquire)
    }
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
    /// Shutdown has begun (SIGTERM): unready, still serving for the shutdown delay.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
    /// `Ok` when ready, otherwise what is missing.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.draining.load(Ordering::Acquire) {
            Err("shutting down")
        } else if !self.certificates.load(Ordering::Acquire) {
            Err("certificates not loaded")
        } else if !self.policies.load(Ordering::Acquire) {
            Err("policies not loaded")
        } else if self.inventory_pending.load(Ordering::Acquire) {
            Err("the cluster inventory is not listed yet")
        } else if self.cluster_policies_pending.load(Ordering::Acquire) {
            Err("the policies applied to the cluster are not listed yet")
        } else {
            Ok(())
        }
    }
}

/// Holds back a denied review (or a failed mutation) in a namespace the feed has not seen yet,
/// or in an opted-in namespace whose default-deny the generator has not written yet, and decides
/// it again at each inventory change, until it is allowed or the wait is over. This removes the
/// first-apply race (a Namespace and its Deployment in one `kubectl apply`) without ever
/// admitting a workload whose namespace lacks its default-deny.
pub struct GenerationGate {
    /// Which namespaces get a generated default-deny; `None` when generation is off, so that
    /// only a namespace the feed has not seen yet is waited for. (Exempt namespaces never get
    /// here: their reviews are allowed.)
    pub scope: Option<crate::zero_trust::Scope>,
    pub wait: Duration,
    /// Namespaces are synced, so a namespace missing from the inventory is one not seen yet.
    pub namespaces_synced: bool,
}

impl GenerationGate {
    pub fn awaits(&self, review: &Review, inventory: &Inventory) -> bool {
        let object = review.object_ref();
        if object.is_namespace() || object.namespace.is_empty() {
            return false;
        }
        let ns = object.namespace.as_str();
        let Some(namespace) = inventory.namespace(ns) else {
            return self.namespaces_synced;
        };
        let Some(scope) = &self.scope else {
            return false;
        };
        scope.awaits_generation(namespace, inventory)
    }
}
