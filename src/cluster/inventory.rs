//! The live inventory: one kube-runtime watcher per synced kind (list, then watch from the list's
//! resourceVersion; relist on 410 Gone; backoff on errors), feeding one applier that batches
//! bursts into a single snapshot swap.
//!
//! The kinds are those of the bundle's Gatekeeper `Config` (`spec.sync.syncOnly`), else
//! Namespaces and NetworkPolicies. When the bundle's Config changes, the watchers follow it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::bundle::{Bundle, SyncKind};
use crate::inventory::Change;
use crate::object::ObjectRef;
use crate::runtime::metrics::{ClusterMetrics, KindLabels, Metrics};
use crate::runtime::server::Readiness;
use crate::sources::hotswap::HotSwap;
use crate::sources::inventory::InventoryStore;

/// Longest time a change waits for others to join its batch.
const BATCH_WINDOW: Duration = Duration::from_millis(20);
/// Most changes in one batch.
const BATCH_MAX: usize = 20_000;

/// The kinds to watch for `bundle`.
pub fn synced_kinds(bundle: &Bundle) -> Vec<SyncKind> {
    match bundle.sync_only() {
        Some(kinds) => kinds.to_vec(),
        None => vec![
            SyncKind {
                group: String::new(),
                version: "v1".into(),
                kind: "Namespace".into(),
            },
            SyncKind {
                group: "networking.k8s.io".into(),
                version: "v1".into(),
                kind: "NetworkPolicy".into(),
            },
        ],
    }
}

/// What one watcher reports to the applier.
enum Report {
    Changes(Vec<Change>),
    /// The kind's first complete list (or a relist) is in.
    Listed(SyncKind),
    /// The API server answers for the kind again.
    Reachable(SyncKind),
    Failed(SyncKind, String),
}

/// Retries a failed list or watch after 200 ms, doubling to at most 5 s, so that a watch is back
/// within seconds of the API server; reset after each success.
#[derive(Default)]
struct RetryBackoff {
    next: Option<Duration>,
}

impl Iterator for RetryBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next.unwrap_or(Duration::from_millis(200));
        self.next = Some((delay * 2).min(Duration::from_secs(5)));
        Some(delay)
    }
}

impl kube::runtime::utils::Backoff for RetryBackoff {
    fn reset(&mut self) {
        self.next = None;
    }
}

/// Runs the feed until dropped: watches the kinds of the current bundle into `store`, and
/// restarts the watchers when the bundle's kinds change.
pub async fn run(
    client: kube::Client,
    bundle: Arc<HotSwap<Bundle>>,
    store: Arc<InventoryStore>,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let state = Arc::new(std::sync::Mutex::new(FeedState::default()));
    let applier = tokio::spawn(apply_batches(
        rx,
        store.clone(),
        readiness.clone(),
        metrics.clone(),
        state.clone(),
    ));
    let _applier = AbortOnDrop(applier);
    let mut kinds = synced_kinds(&bundle.load());
    loop {
        {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            s.expect(&kinds);
        }
        readiness.set_inventory_synced(false);
        metrics.cluster().inventory_synced.set(0);
        tracing::info!(kinds = %list(&kinds), "watching the cluster for data.inventory");
        let mut watchers = JoinSet::new();
        for kind in &kinds {
            watchers.spawn(watch_kind(client.clone(), kind.clone(), tx.clone()));
        }
        // Follow the bundle: a new Config changes what is watched.
        let next = loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let now = synced_kinds(&bundle.load());
            if now != kinds {
                break now;
            }
        };
        watchers.abort_all();
        let dropped: Vec<&SyncKind> = kinds.iter().filter(|k| !next.contains(k)).collect();
        if !dropped.is_empty() {
            let _ = tx.send(Report::Changes(
                state
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .forget(&dropped),
            ));
        }
        tracing::info!(from = %list(&kinds), to = %list(&next), "the synced kinds changed");
        kinds = next;
    }
}

fn list(kinds: &[SyncKind]) -> String {
    kinds
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Which objects each kind holds in the inventory, and whether it is listed and healthy.
#[derive(Default)]
struct FeedState {
    kinds: HashMap<SyncKind, KindState>,
}

#[derive(Default)]
struct KindState {
    known: HashSet<ObjectRef>,
    listed: bool,
    /// Since when its watch has been failing.
    failing_since: Option<Instant>,
}

impl FeedState {
    fn expect(&mut self, kinds: &[SyncKind]) {
        self.kinds.retain(|k, _| kinds.contains(k));
        for k in kinds {
            self.kinds.entry(k.clone()).or_default();
        }
    }

    /// Deletes for every object of the kinds dropped from the sync list.
    fn forget(&mut self, kinds: &[&SyncKind]) -> Vec<Change> {
        let mut changes = Vec::new();
        for kind in kinds {
            if let Some(state) = self.kinds.remove(*kind) {
                changes.extend(state.known.into_iter().map(Change::Delete));
            }
        }
        changes
    }

    fn all_listed(&self) -> bool {
        self.kinds.values().all(|k| k.listed)
    }

    fn stale_for(&self) -> Option<Duration> {
        self.kinds
            .values()
            .filter_map(|k| k.failing_since)
            .min()
            .map(|since| since.elapsed())
    }
}

/// Watches one kind until aborted. Objects come back with apiVersion and kind filled in: list
/// items carry neither.
async fn watch_kind(client: kube::Client, kind: SyncKind, tx: mpsc::UnboundedSender<Report>) {
    let gvk = GroupVersionKind::gvk(&kind.group, &kind.version, &kind.kind);
    let mut delay = Duration::from_millis(500);
    let resource = loop {
        match kube::discovery::pinned_kind(&client, &gvk).await {
            Ok((resource, _)) => break resource,
            Err(error) => {
                let why = format!(
                    "cannot find {kind} in the API server's discovery ({error}); check the Config's syncOnly entry and that its CRD is installed"
                );
                if tx.send(Report::Failed(kind.clone(), why)).is_err() {
                    return;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    };
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    let mut listing: Option<HashSet<ObjectRef>> = None;
    let mut known: HashSet<ObjectRef> = HashSet::new();
    let mut stream = watcher(api.clone(), watcher::Config::default())
        .backoff(RetryBackoff::default())
        .boxed();
    let mut failing = false;
    let mut probe = tokio::time::interval(Duration::from_secs(1));
    loop {
        let event = tokio::select! {
            event = stream.next() => match event {
                Some(event) => event,
                None => return,
            },
            // A watch that resumes from its resourceVersion says nothing until something
            // changes: ask the API server whether it answers again.
            _ = probe.tick(), if failing => {
                let params = kube::api::ListParams::default().limit(1);
                if api.list(&params).await.is_ok() {
                    failing = false;
                    if tx.send(Report::Reachable(kind.clone())).is_err() {
                        return;
                    }
                }
                continue;
            }
        };
        failing = event.is_err();
        let report = match event {
            Ok(watcher::Event::Init) => {
                listing = Some(HashSet::new());
                continue;
            }
            Ok(watcher::Event::InitApply(object)) => {
                let value = typed(object, &resource);
                let id = ObjectRef::of(&value);
                if let Some(listing) = listing.as_mut() {
                    listing.insert(id.clone());
                }
                known.insert(id);
                Report::Changes(vec![Change::Upsert(value)])
            }
            Ok(watcher::Event::InitDone) => {
                // What the relist did not return is gone (deleted while we were not watching).
                let listed = listing.take().unwrap_or_default();
                let gone: Vec<Change> = known
                    .difference(&listed)
                    .cloned()
                    .map(Change::Delete)
                    .collect();
                known = listed;
                if !gone.is_empty() && tx.send(Report::Changes(gone)).is_err() {
                    return;
                }
                Report::Listed(kind.clone())
            }
            Ok(watcher::Event::Apply(object)) => {
                let value = typed(object, &resource);
                known.insert(ObjectRef::of(&value));
                Report::Changes(vec![Change::Upsert(value)])
            }
            Ok(watcher::Event::Delete(object)) => {
                let value = typed(object, &resource);
                let id = ObjectRef::of(&value);
                known.remove(&id);
                Report::Changes(vec![Change::Delete(id)])
            }
            Err(error) => Report::Failed(kind.clone(), error.to_string()),
        };
        if tx.send(report).is_err() {
            return;
        }
    }
}

/// The object as JSON, with the apiVersion and kind of its resource.
fn typed(object: DynamicObject, resource: &ApiResource) -> Value {
    let mut value = serde_json::to_value(object).unwrap_or(Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.insert(
            "apiVersion".into(),
            Value::from(resource.api_version.clone()),
        );
        map.insert("kind".into(), Value::from(resource.kind.clone()));
    }
    value
}

/// Applies what the watchers report, batching bursts, and keeps readiness and the staleness
/// metric true.
async fn apply_batches(
    mut rx: mpsc::UnboundedReceiver<Report>,
    store: Arc<InventoryStore>,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    state: Arc<std::sync::Mutex<FeedState>>,
) {
    let cluster = metrics.cluster();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let first = tokio::select! {
            report = rx.recv() => match report {
                Some(r) => r,
                None => return,
            },
            _ = tick.tick() => {
                let stale = state.lock().unwrap_or_else(|p| p.into_inner()).stale_for();
                cluster.inventory_stale_seconds.set(stale.map_or(0.0, |d| d.as_secs_f64()));
                continue;
            }
        };
        let mut changes = Vec::new();
        let mut reports = vec![first];
        let until = tokio::time::Instant::now() + BATCH_WINDOW;
        loop {
            for report in reports.drain(..) {
                handle(report, &mut changes, &state, &readiness, cluster);
            }
            if changes.len() >= BATCH_MAX {
                break;
            }
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(r)) => reports.push(r),
                Ok(None) | Err(_) => break,
            }
        }
        if !changes.is_empty() {
            let store = store.clone();
            // A large batch is CPU work: off the I/O threads.
            let applied = tokio::task::spawn_blocking(move || {
                store.apply_live(changes);
                store.load().len()
            })
            .await;
            if let Ok(objects) = applied {
                cluster.inventory_batches.inc();
                cluster.inventory_objects.set(objects as i64);
            }
        }
        let s = state.lock().unwrap_or_else(|p| p.into_inner());
        cluster
            .inventory_stale_seconds
            .set(s.stale_for().map_or(0.0, |d| d.as_secs_f64()));
    }
}

fn handle(
    report: Report,
    changes: &mut Vec<Change>,
    state: &std::sync::Mutex<FeedState>,
    readiness: &Readiness,
    metrics: &ClusterMetrics,
) {
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    match report {
        Report::Changes(mut c) => {
            // Any event means the watch works again.
            changes.append(&mut c);
        }
        Report::Listed(kind) => {
            let Some(k) = s.kinds.get_mut(&kind) else {
                return;
            };
            if let Some(since) = k.failing_since.take() {
                tracing::info!(%kind, after = ?since.elapsed(), "inventory watch recovered; relisted");
            }
            if !k.listed {
                k.listed = true;
                tracing::info!(%kind, "inventory kind listed");
            }
            if s.all_listed() {
                readiness.set_inventory_synced(true);
                metrics.inventory_synced.set(1);
            }
        }
        Report::Reachable(kind) => {
            if let Some(since) = s.kinds.get_mut(&kind).and_then(|k| k.failing_since.take()) {
                tracing::info!(%kind, after = ?since.elapsed(), "inventory watch recovered");
            }
        }
        Report::Failed(kind, error) => {
            metrics
                .inventory_watch_errors
                .get_or_create(&KindLabels {
                    kind: kind.to_string(),
                })
                .inc();
            let Some(k) = s.kinds.get_mut(&kind) else {
                return;
            };
            if k.failing_since.is_none() {
                k.failing_since = Some(Instant::now());
                tracing::warn!(%kind, %error, "inventory watch failed; the last state keeps serving while it retries");
            } else {
                tracing::debug!(%kind, %error, "inventory watch still failing");
            }
        }
    }
}
