//! The live inventory: one kube-runtime watcher per synced kind (list, then watch from the list's
//! resourceVersion; relist on 410 Gone; backoff on errors), feeding one applier that batches
//! bursts into a single snapshot swap.
//!
//! The kinds are those of the bundle's Gatekeeper `Config` (`spec.sync.syncOnly`), else
//! Namespaces and NetworkPolicies. When the bundle's Config changes, the watchers follow it.
//!
//! Objects are pruned to what the bundle's templates read ([`Keep`]). When a new bundle reads
//! more, the watchers start again, so that every object is listed again whole and pruned anew;
//! once every kind is re-listed the store is settled, and until then templates that read more
//! than the objects hold fail closed.

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
use crate::inventory::{Change, Keep};
use crate::object::ObjectRef;
use crate::state::hotswap::HotSwap;
use crate::state::inventory_store::InventoryStore;
use crate::state::readiness::Readiness;
use crate::telemetry::metrics::{ClusterMetrics, KindLabels, Metrics};

/// Longest time a change waits for others to join its batch.
const BATCH_WINDOW: Duration = Duration::from_millis(20);
/// Most changes in one batch.
const BATCH_MAX: usize = 20_000;

/// The kinds to watch for `bundle`.
///
/// Namespaces and NetworkPolicies are always synced, whatever a `Config` or `SyncSet` lists:
/// the webhook needs each object's Namespace (`namespaceSelector`, `input.review.namespaceObject`,
/// which Gatekeeper reads from a cache of its own), and the NetworkPolicy model, the default-deny
/// checks and the generator read the namespace's NetworkPolicies. Policies then see more in
/// data.inventory, never less.
pub fn synced_kinds(bundle: &Bundle) -> Vec<SyncKind> {
    let mut kinds = vec![SyncKind::namespace(), SyncKind::network_policy()];
    for kind in bundle.sync_only().unwrap_or_default() {
        if !kinds.contains(kind) {
            kinds.push(kind.clone());
        }
    }
    kinds
}

/// What one watcher reports to the applier.
enum Report {
    /// From now on these kinds are synced, pruned to this keep, by watchers of this
    /// generation; the objects of any other kind leave the inventory.
    Sync(Vec<SyncKind>, Arc<Keep>, u64),
    Changes(SyncKind, Vec<Change>),
    /// The kind's first complete list (or a relist) is in, from a watcher of this generation:
    /// these objects, and no others.
    Listed(SyncKind, HashSet<ObjectRef>, u64),
    /// The API server answers for the kind again.
    Reachable(SyncKind),
    Failed(SyncKind, String),
}

/// Retries a failed list or watch after 200 ms, doubling to at most 5 s, so that a watch is back
/// within seconds of the API server; reset after each success.
#[derive(Default)]
pub(crate) struct RetryBackoff {
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
    let applier = tokio::spawn(apply_batches(rx, store, readiness, metrics));
    let _applier = AbortOnDrop(applier);
    let wanted = |bundle: &Bundle| (synced_kinds(bundle), Arc::new(bundle.inventory_keep()));
    let (mut kinds, mut keep) = wanted(&bundle.load());
    for generation in 0.. {
        if tx
            .send(Report::Sync(kinds.clone(), keep.clone(), generation))
            .is_err()
        {
            return;
        }
        tracing::info!(kinds = %list(&kinds), "watching the cluster for data.inventory");
        let mut watchers = JoinSet::new();
        for kind in &kinds {
            watchers.spawn(watch_kind(
                client.clone(),
                kind.clone(),
                tx.clone(),
                generation,
            ));
        }
        // Follow the bundle: a new Config changes what is watched, and new templates what is
        // kept of each object (everything is listed again, to be pruned anew).
        let (next, next_keep) = loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (now, now_keep) = wanted(&bundle.load());
            if now != kinds || now_keep != keep {
                break (now, now_keep);
            }
        };
        watchers.abort_all();
        if next != kinds {
            tracing::info!(from = %list(&kinds), to = %list(&next), "the synced kinds changed");
        }
        if next_keep != keep {
            tracing::info!(
                "the bundle's templates read other fields of data.inventory; listing every synced kind again"
            );
        }
        (kinds, keep) = (next, next_keep);
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
    /// The watchers' generation, and the keep they list for.
    generation: u64,
    keep: Option<Arc<Keep>>,
    /// A keep to give the store before the next batch.
    new_keep: Option<Arc<Keep>>,
    /// Every kind was listed again for this keep: settle the store after the batch.
    settle: Option<Arc<Keep>>,
}

#[derive(Default)]
struct KindState {
    known: HashSet<ObjectRef>,
    listed: bool,
    /// Listed by a watcher of the current generation.
    relisted: bool,
    /// Since when its watch has been failing.
    failing_since: Option<Instant>,
}

impl FeedState {
    /// Syncs `kinds` from now on; returns the deletions of every object of the kinds dropped.
    fn expect(&mut self, kinds: &[SyncKind]) -> Vec<Change> {
        let mut gone = Vec::new();
        self.kinds.retain(|kind, state| {
            let keep = kinds.contains(kind);
            if !keep {
                gone.extend(state.known.drain().map(Change::Delete));
            }
            keep
        });
        for k in kinds {
            self.kinds.entry(k.clone()).or_default();
        }
        gone
    }

    fn all_listed(&self) -> bool {
        self.kinds.values().all(|k| k.listed)
    }

    /// Seconds since the longest-failing watch failed; 0 when every watch works.
    fn stale_seconds(&self) -> f64 {
        self.kinds
            .values()
            .filter_map(|k| k.failing_since)
            .min()
            .map_or(0.0, |since| since.elapsed().as_secs_f64())
    }
}

/// Watches one kind until aborted. Objects come back with apiVersion and kind filled in: list
/// items carry neither.
async fn watch_kind(
    client: kube::Client,
    kind: SyncKind,
    tx: mpsc::UnboundedSender<Report>,
    generation: u64,
) {
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
                if let Some(listing) = listing.as_mut() {
                    listing.insert(ObjectRef::of(&value));
                }
                Report::Changes(kind.clone(), vec![Change::Upsert(value)])
            }
            Ok(watcher::Event::InitDone) => {
                Report::Listed(kind.clone(), listing.take().unwrap_or_default(), generation)
            }
            Ok(watcher::Event::Apply(object)) => {
                Report::Changes(kind.clone(), vec![Change::Upsert(typed(object, &resource))])
            }
            Ok(watcher::Event::Delete(object)) => Report::Changes(
                kind.clone(),
                vec![Change::Delete(ObjectRef::of(&typed(object, &resource)))],
            ),
            Err(error) => Report::Failed(kind.clone(), error.to_string()),
        };
        if tx.send(report).is_err() {
            return;
        }
    }
}

/// The object as JSON, with the apiVersion and kind of its resource.
pub(crate) fn typed(object: DynamicObject, resource: &ApiResource) -> Value {
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
) {
    let cluster = metrics.cluster();
    let mut state = FeedState::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let first = tokio::select! {
            report = rx.recv() => match report {
                Some(r) => r,
                None => return,
            },
            _ = tick.tick() => {
                cluster.inventory_stale_seconds.set(state.stale_seconds());
                continue;
            }
        };
        let mut changes = Vec::new();
        let mut reports = vec![first];
        let until = tokio::time::Instant::now() + BATCH_WINDOW;
        loop {
            for report in reports.drain(..) {
                state.handle(report, &mut changes, &readiness, cluster);
            }
            if changes.len() >= BATCH_MAX {
                break;
            }
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(r)) => reports.push(r),
                Ok(None) | Err(_) => break,
            }
        }
        let (new_keep, settle) = (state.new_keep.take(), state.settle.take());
        if !changes.is_empty() || new_keep.is_some() || settle.is_some() {
            let store = store.clone();
            // A large batch is CPU work: off the I/O threads.
            let applied = tokio::task::spawn_blocking(move || {
                if let Some(keep) = new_keep {
                    store.set_keep(keep, None);
                }
                store.apply_live(changes);
                if let Some(keep) = settle {
                    store.settle(&keep);
                }
                store.load().len()
            })
            .await;
            if let Ok(objects) = applied {
                cluster.inventory_batches.inc();
                cluster.inventory_objects.set(objects as i64);
            }
        }
        cluster.inventory_stale_seconds.set(state.stale_seconds());
    }
}

impl FeedState {
    /// Takes one report into the state and the batch of `changes`.
    fn handle(
        &mut self,
        report: Report,
        changes: &mut Vec<Change>,
        readiness: &Readiness,
        metrics: &ClusterMetrics,
    ) {
        match report {
            Report::Sync(kinds, keep, generation) => {
                changes.append(&mut self.expect(&kinds));
                self.generation = generation;
                for k in self.kinds.values_mut() {
                    k.relisted = false;
                }
                self.settle = None;
                self.new_keep = Some(keep.clone());
                self.keep = Some(keep);
                let listed = self.all_listed();
                readiness.set_inventory_synced(listed);
                metrics.inventory_synced.set(i64::from(listed));
            }
            Report::Changes(kind, c) => {
                // A watcher aborted after its kind was dropped may still have sent some.
                let Some(k) = self.kinds.get_mut(&kind) else {
                    return;
                };
                for change in &c {
                    match change {
                        Change::Upsert(object) => k.known.insert(ObjectRef::of(object)),
                        Change::Delete(id) => k.known.remove(id),
                    };
                }
                changes.extend(c);
            }
            Report::Listed(kind, listed, generation) => {
                let Some(k) = self.kinds.get_mut(&kind) else {
                    return;
                };
                k.relisted |= generation == self.generation;
                // What the relist did not return is gone (deleted while nobody watched).
                changes.extend(k.known.difference(&listed).cloned().map(Change::Delete));
                k.known = listed;
                if let Some(since) = k.failing_since.take() {
                    tracing::info!(%kind, after = ?since.elapsed(), "inventory watch recovered; relisted");
                }
                if !k.listed {
                    k.listed = true;
                    tracing::info!(%kind, "inventory kind listed");
                }
                if self.all_listed() {
                    readiness.set_inventory_synced(true);
                    metrics.inventory_synced.set(1);
                }
                if self.kinds.values().all(|k| k.relisted) {
                    self.settle = self.keep.clone();
                }
            }
            Report::Reachable(kind) => {
                if let Some(since) = self
                    .kinds
                    .get_mut(&kind)
                    .and_then(|k| k.failing_since.take())
                {
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
                let Some(k) = self.kinds.get_mut(&kind) else {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Config that lists other kinds still gets Namespaces and NetworkPolicies synced: the
    /// webhook needs them.
    #[test]
    fn namespaces_are_always_synced() {
        let config = "apiVersion: config.gatekeeper.sh/v1alpha1\nkind: Config\nmetadata: {name: config}\nspec:\n  sync:\n    syncOnly: [{group: networking.k8s.io, version: v1, kind: Ingress}]\n";
        let docs = crate::manifest::parse_str(config, std::path::Path::new("c.yaml")).unwrap();
        let bundle = Bundle::from_documents(docs, &Default::default()).unwrap();
        assert_eq!(
            synced_kinds(&bundle),
            [
                SyncKind::namespace(),
                SyncKind::network_policy(),
                SyncKind::new("networking.k8s.io", "v1", "Ingress")
            ]
        );
        assert_eq!(
            synced_kinds(&Bundle::default()),
            [SyncKind::namespace(), SyncKind::network_policy()]
        );
    }
    use serde_json::json;

    fn ns(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    }

    fn deleted(changes: &[Change]) -> Vec<String> {
        let mut names: Vec<String> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Delete(id) => Some(id.name.clone()),
                Change::Upsert(_) => None,
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn relists_and_dropped_kinds_remove_what_is_gone() {
        let (readiness, metrics) = (Readiness::default(), ClusterMetrics::default());
        let mut state = FeedState::default();
        let mut changes = Vec::new();
        let kinds = vec![SyncKind::namespace(), SyncKind::network_policy()];
        state.handle(
            Report::Sync(kinds, Arc::default(), 0),
            &mut changes,
            &readiness,
            &metrics,
        );
        assert!(readiness.check().is_err(), "nothing listed yet");
        let namespaces = SyncKind::namespace();
        let upserts = vec![Change::Upsert(ns("a")), Change::Upsert(ns("b"))];
        state.handle(
            Report::Changes(namespaces.clone(), upserts),
            &mut changes,
            &readiness,
            &metrics,
        );
        let listed: HashSet<ObjectRef> = [ObjectRef::of(&ns("a")), ObjectRef::of(&ns("b"))].into();
        state.handle(
            Report::Listed(namespaces.clone(), listed, 0),
            &mut changes,
            &readiness,
            &metrics,
        );
        let listed = Report::Listed(SyncKind::network_policy(), HashSet::new(), 0);
        state.handle(listed, &mut changes, &readiness, &metrics);
        assert_eq!(metrics.inventory_synced.get(), 1);

        // A relist that no longer returns b: b is deleted.
        changes.clear();
        let relisted: HashSet<ObjectRef> = [ObjectRef::of(&ns("a"))].into();
        state.handle(
            Report::Listed(namespaces.clone(), relisted, 0),
            &mut changes,
            &readiness,
            &metrics,
        );
        assert_eq!(deleted(&changes), ["b"]);

        // Namespaces are no longer synced: a leaves, and a late event of theirs is ignored.
        changes.clear();
        state.handle(
            Report::Sync(vec![SyncKind::network_policy()], Arc::default(), 0),
            &mut changes,
            &readiness,
            &metrics,
        );
        assert_eq!(deleted(&changes), ["a"]);
        changes.clear();
        state.handle(
            Report::Changes(namespaces, vec![Change::Upsert(ns("c"))]),
            &mut changes,
            &readiness,
            &metrics,
        );
        assert!(changes.is_empty());
    }

    /// A new keep (a bundle whose templates read more) settles the store only once every kind
    /// was listed again by the watchers started for it; a list from an older watcher does not.
    #[test]
    fn a_new_keep_settles_once_every_kind_is_listed_again() {
        let (readiness, metrics) = (Readiness::default(), ClusterMetrics::default());
        let mut state = FeedState::default();
        let mut changes = Vec::new();
        let kinds = vec![SyncKind::namespace(), SyncKind::network_policy()];
        let mut handle = |state: &mut FeedState, report| {
            state.handle(report, &mut changes, &readiness, &metrics)
        };
        handle(&mut state, Report::Sync(kinds.clone(), Arc::default(), 0));
        for kind in &kinds {
            handle(&mut state, Report::Listed(kind.clone(), HashSet::new(), 0));
        }
        assert!(state.settle.take().is_some());
        let keep = Arc::new(Keep::of([]));
        handle(&mut state, Report::Sync(kinds.clone(), keep.clone(), 1));
        assert_eq!(state.new_keep.take(), Some(keep.clone()));
        // An aborted watcher of generation 0 finishing its list late.
        handle(
            &mut state,
            Report::Listed(SyncKind::namespace(), HashSet::new(), 0),
        );
        handle(
            &mut state,
            Report::Listed(SyncKind::network_policy(), HashSet::new(), 1),
        );
        assert!(state.settle.is_none(), "namespaces were not listed again");
        handle(
            &mut state,
            Report::Listed(SyncKind::namespace(), HashSet::new(), 1),
        );
        assert_eq!(state.settle.take(), Some(keep));
    }
}
