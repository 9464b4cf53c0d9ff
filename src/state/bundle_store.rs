//! The policy bundle and the inventory from files: loaded at start-up, watched, and reloaded off
//! the request path. Each is its own snapshot: a changed inventory file rebuilds the inventory
//! and leaves every compiled template as it is; a changed bundle recompiles the bundle only.
//! Broken input is reported and the last good snapshot keeps serving.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::hotswap::{HotSwap, Reload};
use super::inventory_store::InventoryStore;
use super::watch::{DirWatcher, parent_dir};
use crate::bundle::overlay::ClusterPolicies;
use crate::bundle::{Bundle, BundleError};
use crate::manifest::files::{self, FileError};
use crate::policy::EngineOptions;
use crate::telemetry::metrics::Metrics;
use serde_json::Value;

/// Why a source could not be loaded at start-up.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot load the policy bundle at {path}: {source}")]
    Bundle { path: PathBuf, source: BundleError },
    #[error("cannot load the inventory: {0}")]
    Inventory(FileError),
}

pub struct BundleStore {
    policies: PathBuf,
    options: EngineOptions,
    inventory_paths: Vec<PathBuf>,
    /// The bundle of the policy files alone.
    files: HotSwap<Bundle>,
    /// The policies read from the cluster, once a cluster feed runs.
    cluster: std::sync::Mutex<Option<ClusterPolicies>>,
    /// What serves: the files' bundle, merged with the cluster's policies.
    bundle: Arc<HotSwap<Bundle>>,
    /// The objects of the inventory files, as last read.
    inventory_files: HotSwap<Vec<Value>>,
    inventory: Arc<InventoryStore>,
    metrics: Arc<Metrics>,
}

impl BundleStore {
    /// Loads both at start-up; broken input is an error.
    pub fn load(
        policies: &Path,
        options: EngineOptions,
        inventory_paths: Vec<PathBuf>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, LoadError> {
        super::external::install();
        let bundle_fp = fingerprint(std::slice::from_ref(&policies.to_path_buf()));
        let bundle =
            crate::bundle::load(policies, &options).map_err(|source| LoadError::Bundle {
                path: policies.to_path_buf(),
                source,
            })?;
        let inventory_fp = fingerprint(&inventory_paths);
        let inventory = files::read_objects(&inventory_paths).map_err(LoadError::Inventory)?;
        metrics.policy_loaded(bundle.policies().constraints().len());
        let inventory_files = HotSwap::new(inventory, Some(inventory_fp));
        // The store keeps the file objects pruned; their JSON is dropped here (a new keep reads
        // the files again).
        let store =
            InventoryStore::with_keep(Arc::new(bundle.inventory_keep()), take(&inventory_files));
        Ok(Self {
            inventory: Arc::new(store),
            inventory_files,
            policies: policies.to_path_buf(),
            options,
            inventory_paths,
            bundle: Arc::new(HotSwap::new(bundle.clone(), None)),
            files: HotSwap::new(bundle, Some(bundle_fp)),
            cluster: std::sync::Mutex::new(None),
            metrics,
        })
    }

    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// Changes the cluster's policies (starting them on first use) and serves the merge.
    /// Compiling is CPU work: call this off the async threads.
    pub fn update_cluster<R>(
        &self,
        f: impl FnOnce(&mut ClusterPolicies, &EngineOptions) -> R,
    ) -> R {
        let mut cluster = self.cluster.lock().unwrap_or_else(|p| p.into_inner());
        let state = cluster.get_or_insert_with(ClusterPolicies::default);
        let files = self.files.load();
        // The cluster's templates may call the files' external data Providers.
        let options = EngineOptions {
            external: files.providers().clone(),
            ..self.options.clone()
        };
        let result = f(state, &options);
        let merged = state.merge(&files);
        self.bundle.set(merged);
        self.follow_keep();
        result
    }

    /// A copy of the cluster's policies as last merged (with each object's errors).
    pub fn cluster_policies(&self) -> ClusterPolicies {
        self.cluster
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default()
    }

    /// Serves the files' bundle, merged with the cluster's policies when there are any.
    fn remerge(&self) {
        let mut cluster = self.cluster.lock().unwrap_or_else(|p| p.into_inner());
        let files = self.files.load();
        match cluster.as_mut() {
            Some(state) => self.bundle.set(state.merge(&files)),
            None => self.bundle.set((*files).clone()),
        }
        self.follow_keep();
    }

    /// The inventory keeps what the served bundle's templates read. Until the objects held
    /// were re-read for it, templates reading more fail closed (see `InventoryStore`).
    fn follow_keep(&self) {
        let keep = Arc::new(self.bundle.load().inventory_keep());
        if *self.inventory.files_keep() == *keep {
            return;
        }
        let files = if self.inventory_paths.is_empty() {
            Some(Vec::new())
        } else {
            match files::read_objects(&self.inventory_paths) {
                Ok(files) => Some(files),
                Err(error) => {
                    // The file objects stay as they were pruned: templates that read more of
                    // them fail closed until the files can be read.
                    tracing::error!(%error, "cannot read the inventory files again for the new bundle");
                    None
                }
            }
        };
        self.inventory.set_keep(keep, files);
    }

    pub fn bundle(&self) -> Arc<HotSwap<Bundle>> {
        self.bundle.clone()
    }

    pub fn inventory(&self) -> Arc<InventoryStore> {
        self.inventory.clone()
    }

    /// Re-reads whatever changed on disk. Returns whether anything new is served.
    pub fn reload(&self) -> bool {
        let started = std::time::Instant::now();
        let bundle = self
            .files
            .reload(fingerprint(std::slice::from_ref(&self.policies)), || {
                crate::bundle::load(&self.policies, &self.options)
            });
        let inventory = self
            .inventory_files
            .reload(fingerprint(&self.inventory_paths), || {
                files::read_objects(&self.inventory_paths)
            });
        let constraints = self.bundle.load().policies().constraints().len();
        let mut changed = false;
        match bundle {
            Reload::Unchanged => {}
            Reload::Reloaded => {
                changed = true;
                self.remerge();
                let constraints = self.bundle.load().policies().constraints().len();
                self.metrics.policy_reloaded(constraints);
                tracing::info!(path = %self.policies.display(), constraints,
                    seconds = started.elapsed().as_secs_f64(), "policy bundle reloaded");
            }
            Reload::Rejected(error) => {
                self.metrics.policy_reload_failed();
                tracing::error!(path = %self.policies.display(), %error,
                    "policy bundle rejected; the last good bundle keeps serving");
            }
        }
        match inventory {
            Reload::Unchanged => {}
            Reload::Reloaded => {
                changed = true;
                self.inventory.set_files(take(&self.inventory_files));
                self.metrics.policy_reloaded(constraints);
                tracing::info!(
                    objects = self.inventory.load().len(),
                    "inventory files reloaded"
                );
            }
            Reload::Rejected(error) => {
                self.metrics.policy_reload_failed();
                tracing::error!(%error, "inventory rejected; the last good inventory keeps serving");
            }
        }
        self.metrics
            .policy_current(self.files.is_current() && self.inventory_files.is_current());
        changed
    }

    /// Reloads whenever a watched directory changes, until the task is dropped.
    pub async fn watch(self: Arc<Self>, poll: Duration) {
        let dirs: Vec<PathBuf> = std::iter::once(&self.policies)
            .chain(&self.inventory_paths)
            .map(|p| if p.is_dir() { p.clone() } else { parent_dir(p) })
            .collect();
        let mut watcher = DirWatcher::new(&dirs, true, poll);
        loop {
            watcher.changed().await;
            let sources = self.clone();
            // Compiling templates is CPU work: keep it off the request path, and behind reviews
            // when they need the core.
            if let Err(error) =
                crate::state::background::in_background("reload", move || sources.reload()).await
            {
                tracing::error!(%error, "policy reload task failed");
            }
        }
    }
}

/// A hash of every manifest's path and contents under `roots` (unreadable files hash as such,
/// so that the reload reports them).
fn fingerprint(roots: &[PathBuf]) -> u64 {
    let mut h = DefaultHasher::new();
    for root in roots {
        let files = if root.is_dir() {
            files::manifest_files(root).unwrap_or_default()
        } else {
            vec![root.clone()]
        };
        for file in files {
            file.hash(&mut h);
            match std::fs::read(&file) {
                Ok(bytes) => bytes.hash(&mut h),
                Err(e) => e.kind().to_string().hash(&mut h),
            }
        }
    }
    h.finish()
}

/// The objects just read, leaving an empty list served: the store keeps them pruned, and
/// the swapper only the fingerprint of what was read.
fn take(files: &HotSwap<Vec<Value>>) -> Vec<Value> {
    let objects = files.load();
    files.set(Vec::new());
    Arc::try_unwrap(objects).unwrap_or_else(|shared| shared.as_ref().clone())
}
