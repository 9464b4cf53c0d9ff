//! The inventory that evaluations read: the objects of the cluster feed, with the objects of the
//! `--inventory` files laid over them. Each change swaps in a new immutable snapshot; a review
//! never waits for one. Waiters (a review held back for the default-deny generator) are woken at
//! every swap.
//!
//! Both layers keep of each object what the bundle's templates read ([`Keep`], set by the
//! bundle store at each bundle). After a change of keep, the objects held stay as they were
//! pruned until the cluster feed has re-listed every kind ([`InventoryStore::settle`]); until
//! then a template that reads more than they hold fails closed (`Template::evaluate`).

use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::watch;

use super::hotswap::HotSwap;
use crate::inventory::{Change, Inventory, Keep};

struct Layers {
    /// What the cluster feed has seen.
    live: Inventory,
    /// The objects of the `--inventory` files, pruned, laid over `live` (they win on the same
    /// identity). Their JSON is not kept: a new keep reads the files again.
    files: Inventory,
}

pub struct InventoryStore {
    served: HotSwap<Inventory>,
    layers: Mutex<Layers>,
    version: watch::Sender<u64>,
}

impl InventoryStore {
    /// Whole objects, for tests and tools.
    pub fn new(files: Vec<Value>) -> Self {
        Self::with_keep(Arc::default(), files)
    }

    /// Keeps of each object what `keep` says.
    pub fn with_keep(keep: Arc<Keep>, files: Vec<Value>) -> Self {
        let files = Inventory::pruned(keep.clone()).apply(files.into_iter().map(Change::Upsert));
        Self {
            served: HotSwap::new(files.clone(), None),
            layers: Mutex::new(Layers {
                live: Inventory::pruned(keep),
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
    pub fn set_files(&self, files: Vec<Value>) {
        let mut layers = self.layers.lock().unwrap_or_else(|p| p.into_inner());
        layers.files = Inventory::pruned(layers.live.keep().clone())
            .apply(files.into_iter().map(Change::Upsert));
        self.publish(&layers);
    }

    /// Keeps of each object arriving from now on what `keep` says (the bundle's templates
    /// changed). With `files` (the inventory files read again) the file objects are pruned
    /// anew; without, they stay as they were until the files are set again.
    pub fn set_keep(&self, keep: Arc<Keep>, files: Option<Vec<Value>>) {
        let mut layers = self.layers.lock().unwrap_or_else(|p| p.into_inner());
        if **layers.live.keep() == *keep && files.is_none() {
            return;
        }
        layers.live = layers.live.with_keep(keep.clone());
        if let Some(files) = files {
            layers.files = Inventory::pruned(keep).apply(files.into_iter().map(Change::Upsert));
        }
        self.publish(&layers);
    }

    /// What the file objects were pruned to.
    pub fn files_keep(&self) -> Arc<Keep> {
        let layers = self.layers.lock().unwrap_or_else(|p| p.into_inner());
        layers.files.keep().clone()
    }

    /// What objects arriving now keep.
    pub fn keep(&self) -> Arc<Keep> {
        let layers = self.layers.lock().unwrap_or_else(|p| p.into_inner());
        layers.live.keep().clone()
    }

    /// Every cluster object has arrived again since the keep became `keep`: what they were
    /// pruned to before no longer matters.
    pub fn settle(&self, keep: &Keep) {
        let mut layers = self.layers.lock().unwrap_or_else(|p| p.into_inner());
        if **layers.live.keep() != *keep {
            return;
        }
        layers.live = layers.live.settled();
        self.publish(&layers);
    }

    /// Applies a batch of changes from the cluster. The cost is that of the changed objects'
    /// paths (plus the file objects, laid again), not of the inventory's size.
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
            layers.live.overlay(&layers.files)
        };
        self.served.set(served);
        self.version.send_modify(|v| *v += 1);
    }
}
