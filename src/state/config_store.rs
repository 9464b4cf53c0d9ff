//! The configuration file, served as part of the [`Decider`]: loaded at start-up, watched, and
//! swapped in whole when it changes. A broken file is reported (file, field, fix) and the last
//! good configuration keeps serving. Flags override the file where both exist.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::hotswap::{HotSwap, Reload};
use super::watch::{DirWatcher, parent_dir};
use crate::config::{Config, ConfigError};
use crate::decide::Decider;
use crate::policy::Action;
use crate::telemetry::metrics::Metrics;

/// Flags that win over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub enforcement: Option<Action>,
    pub audit_interval: Option<Duration>,
}

impl Overrides {
    fn apply(&self, mut config: Config) -> Config {
        if let Some(e) = self.enforcement {
            config.enforcement = e;
        }
        if let Some(i) = self.audit_interval {
            config.audit.interval = i;
        }
        config
    }
}

pub struct ConfigStore {
    path: Option<PathBuf>,
    overrides: Overrides,
    /// The decider without a configuration: exemptions and Palisade's namespace.
    base: Decider,
    decider: Arc<HotSwap<Decider>>,
    metrics: Arc<Metrics>,
}

impl ConfigStore {
    /// Loads the file (none: the default configuration); a broken file is an error.
    pub fn load(
        path: Option<PathBuf>,
        overrides: Overrides,
        base: Decider,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ConfigError> {
        let (config, fingerprint) = match &path {
            Some(p) => (read(p)?, Some(fingerprint(p))),
            None => (Config::default(), None),
        };
        let decider = base.with_config(Arc::new(overrides.apply(config)));
        metrics.rollout().config_last_reload_ok.set(1);
        Ok(Self {
            path,
            overrides,
            decider: Arc::new(HotSwap::new(decider, fingerprint)),
            base,
            metrics,
        })
    }

    /// The decider to use for each review, configuration included.
    pub fn decider(&self) -> Arc<HotSwap<Decider>> {
        self.decider.clone()
    }

    /// Re-reads the file if it changed. Returns whether a new configuration is served.
    pub fn reload(&self) -> bool {
        let Some(path) = &self.path else {
            return false;
        };
        let outcome = self.decider.reload(fingerprint(path), || {
            read(path).map(|c| self.base.with_config(Arc::new(self.overrides.apply(c))))
        });
        let metrics = self.metrics.rollout();
        let changed = match outcome {
            Reload::Unchanged => false,
            Reload::Reloaded => {
                metrics.config_reloads.inc();
                let config = self.decider.load();
                let config = config.config();
                tracing::info!(path = %path.display(), enforcement = %config.enforcement,
                    namespace_rules = config.namespaces.len(),
                    break_glass_users = config.break_glass.users.len(),
                    break_glass_groups = config.break_glass.groups.len(),
                    "configuration reloaded");
                true
            }
            Reload::Rejected(error) => {
                metrics.config_reload_failures.inc();
                tracing::error!(%error, "configuration rejected; the last good configuration keeps serving");
                false
            }
        };
        metrics
            .config_last_reload_ok
            .set(i64::from(self.decider.is_current()));
        changed
    }

    /// Reloads whenever the file's directory changes, until the task is dropped.
    pub async fn watch(self: Arc<Self>, poll: Duration) {
        let Some(path) = &self.path else {
            return std::future::pending().await;
        };
        let mut watcher = DirWatcher::new(&[parent_dir(path)], false, poll);
        loop {
            watcher.changed().await;
            self.reload();
        }
    }
}

/// The file's contents (a missing file hashes as such, so that the reload reports it).
fn fingerprint(path: &std::path::Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match std::fs::read(path) {
        Ok(bytes) => bytes.hash(&mut h),
        Err(e) => e.kind().to_string().hash(&mut h),
    }
    h.finish()
}
/// Reads and checks a configuration file. The error names the file, the field and the fix.
pub fn read(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.display().to_string(),
        field: String::new(),
        message: format!("cannot read the file: {e}"),
    })?;
    Config::parse(&text, &path.display().to_string())
}
