//! Wakes a reloader when something in a set of directories may have changed.
//!
//! Directories are watched, not files: Kubernetes updates a mounted Secret or ConfigMap by
//! swapping the `..data` symlink inside the directory, which a watch on the file itself misses.
//! A periodic tick backs up the file-system events, which some volume types never deliver, so
//! the reloader must compare contents and treat a wake-up as "maybe changed".

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior, interval_at};

/// Events that arrive within this window are handled as one change (an editor's save, or a
/// Secret update, is several events).
const SETTLE: Duration = Duration::from_millis(150);

pub(crate) struct DirWatcher {
    events: mpsc::UnboundedReceiver<()>,
    tick: tokio::time::Interval,
    // Dropping the watcher stops its events; keep it alive as long as we are.
    _watcher: Option<RecommendedWatcher>,
}

impl DirWatcher {
    /// Watches `dirs` (recursively if asked) and ticks every `poll` regardless of events.
    pub(crate) fn new(dirs: &[PathBuf], recursive: bool, poll: Duration) -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        let mode = if recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if res.is_ok() {
                // The receiver is gone only during shutdown.
                let _ = tx.send(());
            }
        })
        .and_then(|mut w| {
            for dir in dirs {
                w.watch(dir, mode)?;
            }
            Ok(w)
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(error) => {
                tracing::warn!(%error, dirs = ?dirs, poll = ?poll,
                    "cannot watch directories for changes; falling back to polling only");
                None
            }
        };
        let poll = poll.max(Duration::from_millis(100));
        let mut tick = interval_at(Instant::now() + poll, poll);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            events,
            tick,
            _watcher: watcher,
        }
    }

    /// Resolves when the directories may have changed.
    pub(crate) async fn changed(&mut self) {
        tokio::select! {
            Some(()) = self.events.recv() => {
                tokio::time::sleep(SETTLE).await;
                while self.events.try_recv().is_ok() {}
            }
            _ = self.tick.tick() => {}
        }
    }
}

/// The directory that holds `file`, for watching (`.` for a bare file name).
pub(crate) fn parent_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
