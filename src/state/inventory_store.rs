//! The inventory that evaluations read: the objects of the cluster feed, with the objects of the
//! `--inventory` files laid over them. Each change swaps in a new immutable snapshot; a review
//! never waits for one. Waiters (a review held back for the default-deny generator) are woken at
//! every swap.

use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::watch;

use super::hotswap::HotSwap;
use crate::inventory::{Change, Inventory};

struct Layers {
    /// What the cluster feed has seen.
    live: Inventory,
    /// The objects of the `--inventory` files, applied over `live` (they win on the same
    /// identity).
    files: Arc<Vec<Value>>,
}

pub struct InventoryStore {
    served: HotSwap<Inventory>,
    layers: Mutex<Layers>,
    version: watch::Sender<u64>,
}

impl InventoryStore {
    pub fn new(files: Arc<Vec<Value>>) -> Self {
        let served = Inventory::from_objects(files.iter().cloned());
        Self {
            served: HotSwap::new(served, None),
            layers: Mutex::new(Layers {
                live: Inventory::default(),
                files,
            }),
            version: watch::channel(0).0,
        }
    }

    /// The snapshot to evaluate against now.
    pub fn load(&self) -> Arc<Inventory> {
        self.served.load()
    }

    /// Changes whenever a new snapshot is served.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Replaces the file objects.
    pub fn set_files(&self, files: Arc<Vec<Value>>) {
        let mut layers = self.layers.lock().unwrap_or_else(|p| p.into_inner());
        layers.files = files;
        self.publish(&layers);
    }

    /// Applies a batch of changes from the cluster. The cost is that of the changed objects'
    /// paths (plus the file objects, re-laid), not of the inventory's size.
    pub fn apply_live(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let mut layers = self.layers.lock().unwrap_or_else(|p| p.into_inner());
        layers.live = layers.live.apply(changes);
        self.publish(&layers);
    }

    fn publish(&self, layers: &Layers) {
        let served = if layers.files.is_empty() {
            layers.live.clone()
        } else {
            layers
                .live
                .apply(layers.files.iter().cloned().map(Change::Upsert))
        };
        self.served.set(served);
        self.version.send_modify(|v| *v += 1);
    }
}
