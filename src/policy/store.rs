//! The bundle being served, and its reload: a changed bundle is compiled off the request path and
//! swapped in atomically; a broken one is reported and the last good bundle keeps serving.

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
    inventory: Arc<Inventory>,
    current: ArcSwap<PolicySet>,
    /// Fingerprints of the bundle last served and last rejected.
    seen: Mutex<(u64, Option<u64>)>,
    metrics: Arc<Metrics>,
}

impl PolicyStore {
    /// Loads the bundle at start-up; a broken bundle is an error.
    pub fn load(
        path: &Path,
        options: EngineOptions,
        inventory: Arc<Inventory>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, BundleError> {
        let fingerprint = fingerprint(path);
        let set = PolicySet::load(path, &options, inventory.clone())?;
        metrics.policy_loaded(set.constraints().len());
        Ok(Self {
            path: path.to_path_buf(),
            options,
            inventory,
            current: ArcSwap::from_pointee(set),
            seen: Mutex::new((fingerprint, None)),
            metrics,
        })
    }

    /// The bundle to evaluate with now.
    pub fn current(&self) -> Arc<PolicySet> {
        self.current.load_full()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Re-reads the bundle if its files changed.
    pub fn reload(&self) -> Reload {
        let fp = fingerprint(&self.path);
        {
            let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.0 == fp || seen.1 == Some(fp) {
                return Reload::Unchanged;
            }
        }
        match PolicySet::load(&self.path, &self.options, self.inventory.clone()) {
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
        let dir = if self.path.is_dir() {
            self.path.clone()
        } else {
            crate::watch::parent_dir(&self.path)
        };
        let mut watcher = DirWatcher::new(&[dir], true, poll);
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

/// A hash of every manifest's path and contents (unreadable files hash as such, so that the
/// reload reports them).
fn fingerprint(path: &Path) -> u64 {
    let mut h = DefaultHasher::new();
    let files = if path.is_dir() {
        source::manifest_files(path).unwrap_or_default()
    } else {
        vec![path.to_path_buf()]
    };
    for file in files {
        file.hash(&mut h);
        match std::fs::read(&file) {
            Ok(bytes) => bytes.hash(&mut h),
            Err(e) => e.kind().to_string().hash(&mut h),
        }
    }
    h.finish()
}
