//! The bundle being served, and its reload: a changed bundle (or inventory) is compiled off the
//! request path and swapped in atomically; a broken one is reported and the last good bundle keeps
//! serving.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::{BundleError, EngineOptions, PolicySet, source};
use crate::inventory::Inventory;
use crate::metrics::Metrics;
use crate::watch::DirWatcher;

/// What a reload attempt did.
#[derive(Debug)]
pub enum Reload {
    /// Nothing changed on disk since the last attempt.
    Unchanged,
    Reloaded,
    Rejected(BundleError),
}

pub struct PolicyStore {
    path: PathBuf,
    options: EngineOptions,
    /// Manifests read into the inventory; watched and reloaded with the bundle.
    inventory_paths: Vec<PathBuf>,
    current: ArcSwap<PolicySet>,
    /// Fingerprints of the bundle last served and last rejected.
    seen: Mutex<(u64, Option<u64>)>,
    metrics: Arc<Metrics>,
}

impl PolicyStore {
    /// Loads the bundle and the inventory at start-up; a broken one is an error.
    pub fn load(
        path: &Path,
        options: EngineOptions,
        inventory_paths: Vec<PathBuf>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, BundleError> {
        let fingerprint = fingerprint(path, &inventory_paths);
        let set = build(path, &options, &inventory_paths)?;
        metrics.policy_loaded(set.constraints().len());
        Ok(Self {
            path: path.to_path_buf(),
            options,
            inventory_paths,
            current: ArcSwap::from_pointee(set),
            seen: Mutex::new((fingerprint, None)),
            metrics,
        })
    }

    /// The bundle to evaluate with now.
    pub fn current(&self) -> Arc<PolicySet> {
        self.current.load_full()
    }

    /// Re-reads the bundle and the inventory if their files changed.
    pub fn reload(&self) -> Reload {
        let fp = fingerprint(&self.path, &self.inventory_paths);
        {
            let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.0 == fp || seen.1 == Some(fp) {
                return Reload::Unchanged;
            }
        }
        match build(&self.path, &self.options, &self.inventory_paths) {
            Ok(set) => {
                let constraints = set.constraints().len();
                self.current.store(Arc::new(set));
                *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = (fp, None);
                self.metrics.policy_reloaded(constraints);
                tracing::info!(path = %self.path.display(), constraints, "policy bundle reloaded");
                Reload::Reloaded
            }
            Err(error) => {
                self.seen.lock().unwrap_or_else(|p| p.into_inner()).1 = Some(fp);
                self.metrics.policy_reload_failed();
                tracing::error!(path = %self.path.display(), %error,
                    "policy bundle rejected; the last good bundle keeps serving");
                Reload::Rejected(error)
            }
        }
    }

    /// Reloads whenever the bundle directory changes, until the task is dropped.
    pub async fn watch(self: Arc<Self>, poll: Duration) {
        let dirs: Vec<PathBuf> = std::iter::once(&self.path)
            .chain(&self.inventory_paths)
            .map(|p| {
                if p.is_dir() {
                    p.clone()
                } else {
                    crate::watch::parent_dir(p)
                }
            })
            .collect();
        let mut watcher = DirWatcher::new(&dirs, true, poll);
        loop {
            watcher.changed().await;
            let store = self.clone();
            // Compiling templates is CPU work: keep it off the request path.
            if let Err(error) = tokio::task::spawn_blocking(move || store.reload()).await {
                tracing::error!(%error, "policy reload task failed");
            }
        }
    }
}

/// The bundle at `path` against the objects in `inventory_paths`.
fn build(
    path: &Path,
    options: &EngineOptions,
    inventory_paths: &[PathBuf],
) -> Result<PolicySet, BundleError> {
    let mut objects = Vec::new();
    for p in inventory_paths {
        objects.extend(source::read_path(p)?.into_iter().map(|d| d.value));
    }
    PolicySet::load(path, options, Arc::new(Inventory::from_objects(objects)))
}

/// A hash of every manifest's path and contents, bundle and inventory (unreadable files hash as
/// such, so that the reload reports them).
fn fingerprint(path: &Path, inventory_paths: &[PathBuf]) -> u64 {
    let mut h = DefaultHasher::new();
    for root in std::iter::once(path).chain(inventory_paths.iter().map(PathBuf::as_path)) {
        let files = if root.is_dir() {
            source::manifest_files(root).unwrap_or_default()
        } else {
            vec![root.to_path_buf()]
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
