//! The ValidatingAdmissionPolicy sync (issue 32): while `validatingAdmissionPolicies.sync` is
//! on, the leader keeps in the cluster what [`generate`] makes of the served bundle under the
//! served configuration, as the default-deny generator keeps its NetworkPolicies:
//! - every generated ValidatingAdmissionPolicy and binding is written by server-side apply under
//!   the field manager `palisade`, labelled `app.kubernetes.io/managed-by: palisade`;
//! - one edited or deleted by someone else is restored (a watch on both kinds brings the sync
//!   back at once, and it runs again every [`RESYNC`] regardless);
//! - one Palisade wrote before and no longer generates is deleted. Only those it manages: the
//!   label AND the `palisade` field manager in managedFields. A labelled object someone else
//!   wrote (`kubectl apply` of a copy), or one of a generated name that Palisade did not write,
//!   is never changed nor deleted; the latter is reported, and its constraint stays with the
//!   webhook (see the hand-off below);
//! - it runs again when the bundle or the configuration changes.
//!
//! Off (the default), it makes no call on these kinds at all, so it needs no RBAC then
//! (manifests/overlays/validating-admission-policies grants it). Turned off, it leaves what it
//! wrote in place: deleting a policy whose constraint the webhook is no longer sent would leave
//! that constraint judged by nobody. An operator removes them deliberately (docs/operations.md).
//!
//! A failed call (a server before 1.30 has no admissionregistration.k8s.io/v1 kinds: 404) is
//! logged with the object and the reason, counted in `palisade_vap_sync_failures_total`, and
//! retried with backoff; it never ends the task.
//!
//! The hand-off to the webhook fails safe: [`Handoff`] holds the constraints whose objects the
//! last sync confirmed in place, and only those may leave the webhook.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, Preconditions,
};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

use crate::bundle::Bundle;
use crate::config::Config;
use crate::decide::Decider;
use crate::policy::vap::{Generated, generate};
use crate::state::hotswap::HotSwap;
use crate::state::readiness::Readiness;
use crate::telemetry::metrics::{Metrics, ReasonLabels, VapFailureLabels};
use crate::zero_trust::FIELD_MANAGER;

/// The label every generated object carries, `palisade` its value.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The group and version of both kinds (Kubernetes 1.30 and later).
pub const API_VERSION: &str = "admissionregistration.k8s.io/v1";
/// How often the sync runs without any change seen.
pub const RESYNC: Duration = Duration::from_secs(60);
/// How often the served bundle and configuration are compared with those last synced.
const POLL: Duration = Duration::from_millis(250);
/// The first retry after a failure; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// One of the two kinds the sync writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Policy,
    Binding,
}

impl Kind {
    /// Bindings first: deleting them before their policy never leaves one dangling.
    const ALL: [Kind; 2] = [Kind::Binding, Kind::Policy];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Policy => "ValidatingAdmissionPolicy",
            Kind::Binding => "ValidatingAdmissionPolicyBinding",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Kind::Policy => "validatingadmissionpolicies",
            Kind::Binding => "validatingadmissionpolicybindings",
        }
    }

    /// The kind of `object`, when it is one of the two in admissionregistration.k8s.io/v1.
    pub fn of(object: &Value) -> Option<Kind> {
        if object["apiVersion"] != API_VERSION {
            return None;
        }
        match object["kind"].as_str()? {
            "ValidatingAdmissionPolicy" => Some(Kind::Policy),
            "ValidatingAdmissionPolicyBinding" => Some(Kind::Binding),
            _ => None,
        }
    }

    fn resource(self) -> ApiResource {
        let gvk = GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", self.name());
        ApiResource::from_gvk_with_plural(&gvk, self.plural())
    }

    fn api(self, client: &kube::Client) -> Api<DynamicObject> {
        Api::all_with(client.clone(), &self.resource())
    }
}

/// A call that failed, or an object the sync would not touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `Kind/name`, or the kind alone for a list.
    pub object: String,
    /// read, apply, update, list or delete.
    pub operation: &'static str,
    /// As counted: not_served, forbidden, conflict, not_managed, invalid, unavailable.
    pub reason: &'static str,
    /// What the API server (or the sync) said.
    pub message: String,
}

/// What one sync did; objects are named `Kind/name`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub created: Vec<String>,
    pub restored: Vec<String>,
    pub unchanged: Vec<String>,
    pub deleted: Vec<String>,
    pub failures: Vec<Failure>,
}

impl Outcome {
    /// Whether every generated object is in place, as generated.
    pub fn in_sync(&self) -> bool {
        self.failures.is_empty()
    }

    /// The generated objects confirmed in place: created, restored or unchanged.
    pub fn in_place(&self) -> BTreeSet<String> {
        self.created
            .iter()
            .chain(&self.restored)
            .chain(&self.unchanged)
            .cloned()
            .collect()
    }

    fn fail(&mut self, object: String, operation: &'static str, error: &kube::Error) {
        self.failures.push(Failure {
            object,
            operation,
            reason: reason_of(error),
            message: error.to_string(),
        });
    }
}

/// Why a call failed, as counted.
fn reason_of(error: &kube::Error) -> &'static str {
    match error {
        kube::Error::Api(status) => match status.code {
            // A 404 on a list, an apply or a replace: the kind is not served.
            404 => "not_served",
            401 | 403 => "forbidden",
            409 => "conflict",
            400 | 415 | 422 => "invalid",
            _ => "unavailable",
        },
        kube::Error::SerdeError(_) => "invalid",
        _ => "unavailable",
    }
}

fn named(kind: Kind, name: &str) -> String {
    format!("{}/{name}", kind.name())
}

/// Whether `palisade` wrote it: its field manager is in managedFields.
fn written_by_palisade(object: &DynamicObject) -> bool {
    object
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .any(|m| m.manager.as_deref() == Some(FIELD_MANAGER))
}

/// Whether Palisade manages it: labelled as its own AND written by it. Only these are ever
/// deleted.
fn managed_by_palisade(object: &DynamicObject) -> bool {
    object
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY))
        .is_some_and(|v| v == FIELD_MANAGER)
        && written_by_palisade(object)
}

/// Whether everything `want` says is in `have` (the API server adds defaults, which are not
/// drift). A null in `want` also matches an absent field.
fn contains(have: &Value, want: &Value) -> bool {
    match (want, have) {
        (Value::Null, _) => have.is_null(),
        (Value::Object(want), Value::Object(have)) => want
            .iter()
            .all(|(k, w)| contains(have.get(k).unwrap_or(&Value::Null), w)),
        (Value::Array(want), Value::Array(have)) => {
            want.len() == have.len() && want.iter().zip(have).all(|(w, h)| contains(h, w))
        }
        _ => want == have,
    }
}

/// Whether the object in the cluster still says what Palisade applies: its spec, labels and
/// annotations hold everything desired, and no other manager owns a field of its spec that
/// Palisade does not (one added, say a binding's matchResources narrowing it, which apply alone
/// does not take back; a field both set to the same value is shared, as in the real server).
fn matches_desired(current: &DynamicObject, desired: &Value) -> bool {
    let Ok(value) = serde_json::to_value(current) else {
        return false;
    };
    let mut ours = BTreeSet::new();
    let mut theirs = BTreeSet::new();
    for entry in current.metadata.managed_fields.iter().flatten() {
        if entry.subresource.is_some() {
            continue;
        }
        let Some(spec) = entry.fields_v1.as_ref().and_then(|f| f.0.get("f:spec")) else {
            continue;
        };
        let into = if entry.manager.as_deref() == Some(FIELD_MANAGER) {
            &mut ours
        } else {
            &mut theirs
        };
        owned_leaves(spec, &mut Vec::new(), into);
    }
    theirs.is_subset(&ours)
        && contains(&value["spec"], &desired["spec"])
        && contains(&value["metadata"]["labels"], &desired["metadata"]["labels"])
        && contains(
            &value["metadata"]["annotations"],
            &desired["metadata"]["annotations"],
        )
}

/// The fields a managedFields `fieldsV1` set holds, as paths of its keys.
fn owned_leaves(set: &Value, path: &mut Vec<String>, out: &mut BTreeSet<Vec<String>>) {
    let Some(map) = set.as_object() else {
        return;
    };
    let children: Vec<_> = map.iter().filter(|(k, _)| k.as_str() != ".").collect();
    if children.is_empty() {
        out.insert(path.clone());
        return;
    }
    for (key, child) in children {
        path.push(key.clone());
        owned_leaves(child, path, out);
        path.pop();
    }
}

/// `object` with Palisade's label, or why it cannot carry one.
fn labelled(object: &Value) -> Result<Value, String> {
    let mut object = object.clone();
    let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return Err("no metadata".into());
    };
    let labels = metadata.entry("labels").or_insert_with(|| json!({}));
    if labels.is_null() {
        *labels = json!({});
    }
    let Some(labels) = labels.as_object_mut() else {
        return Err("metadata.labels is not a map".into());
    };
    labels.insert(MANAGED_BY.into(), json!(FIELD_MANAGER));
    Ok(object)
}

/// Makes the cluster hold `desired` (generated ValidatingAdmissionPolicies and bindings) and
/// no other object Palisade manages of these kinds. Never fails as a whole: each failed call
/// is in the outcome, and the rest goes on.
pub async fn reconcile(client: &kube::Client, desired: &[Value]) -> Outcome {
    let mut outcome = Outcome::default();
    let mut wanted: HashSet<(Kind, String)> = HashSet::new();
    for object in desired {
        let kind = Kind::of(object);
        let name = object["metadata"]["name"]
            .as_str()
            .filter(|n| !n.is_empty());
        let (Some(kind), Some(name)) = (kind, name) else {
            outcome.failures.push(Failure {
                object: format!(
                    "{}/{}",
                    object["kind"].as_str().unwrap_or("?"),
                    object["metadata"]["name"].as_str().unwrap_or("?")
                ),
                operation: "apply",
                reason: "invalid",
                message: format!(
                    "not a named {API_VERSION} ValidatingAdmissionPolicy or ValidatingAdmissionPolicyBinding"
                ),
            });
            continue;
        };
        wanted.insert((kind, name.to_owned()));
        sync_one(client, kind, name, object, &mut outcome).await;
    }
    for kind in Kind::ALL {
        let api = kind.api(client);
        let params = ListParams::default().labels(&format!("{MANAGED_BY}={FIELD_MANAGER}"));
        let list = match api.list(&params).await {
            Ok(list) => list,
            Err(e) => {
                outcome.fail(kind.name().to_owned(), "list", &e);
                continue;
            }
        };
        for item in list.items {
            let Some(name) = item.metadata.name.clone() else {
                continue;
            };
            if wanted.contains(&(kind, name.clone())) || !managed_by_palisade(&item) {
                continue;
            }
            // Only the object just judged Palisade's: a precondition on its uid and
            // resourceVersion, so one changed since (taken over, say) is not deleted.
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: item.metadata.uid.clone(),
                    resource_version: item.metadata.resource_version.clone(),
                }),
                ..DeleteParams::default()
            };
            match api.delete(&name, &params).await {
                Ok(_) => outcome.deleted.push(named(kind, &name)),
                // Gone already.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => outcome.fail(named(kind, &name), "delete", &e),
            }
        }
    }
    outcome
}

/// Brings one generated object into place.
async fn sync_one(
    client: &kube::Client,
    kind: Kind,
    name: &str,
    object: &Value,
    outcome: &mut Outcome,
) {
    let id = named(kind, name);
    let desired = match labelled(object) {
        Ok(d) => d,
        Err(why) => {
            outcome.failures.push(Failure {
                object: id,
                operation: "apply",
                reason: "invalid",
                message: why,
            });
            return;
        }
    };
    let api = kind.api(client);
    let existing = match api.get_opt(name).await {
        Ok(e) => e,
        Err(e) => return outcome.fail(id, "read", &e),
    };
    let created = match &existing {
        None => true,
        Some(current) if !written_by_palisade(current) => {
            outcome.failures.push(Failure {
                object: id,
                operation: "apply",
                reason: "not_managed",
                message:
                    "an object of this name exists and was not written by Palisade; left alone"
                        .into(),
            });
            return;
        }
        Some(current) if matches_desired(current, &desired) => {
            outcome.unchanged.push(id);
            return;
        }
        Some(_) => false,
    };
    // Forced only over an object Palisade wrote: a new one someone creates meanwhile makes a
    // conflict (retried, then left alone as not Palisade's), not a take-over.
    let params = if created {
        PatchParams::apply(FIELD_MANAGER)
    } else {
        PatchParams::apply(FIELD_MANAGER).force()
    };
    let applied = match api.patch(name, &params, &Patch::Apply(&desired)).await {
        Ok(a) => a,
        Err(e) => return outcome.fail(id, "apply", &e),
    };
    if !matches_desired(&applied, &desired) {
        // Apply takes back the fields Palisade owns, but a field someone else added stays
        // theirs: replace the spec, guarded by the resourceVersion just read (a conflict is
        // retried with the next sync).
        let mut restored = serde_json::to_value(&applied).unwrap_or(Value::Null);
        restored["spec"] = desired["spec"].clone();
        restored["metadata"]["labels"][MANAGED_BY] = json!(FIELD_MANAGER);
        if let Some(meta) = restored["metadata"].as_object_mut() {
            meta.remove("managedFields");
        }
        let restored: DynamicObject = match serde_json::from_value(restored) {
            Ok(r) => r,
            Err(e) => return outcome.fail(id, "update", &kube::Error::SerdeError(e)),
        };
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..Default::default()
        };
        if let Err(e) = api.replace(name, &params, &restored).await {
            return outcome.fail(id, "update", &e);
        }
    }
    if created {
        outcome.created.push(id);
    } else {
        outcome.restored.push(id);
    }
}

/// Which constraints may leave the webhook: those the API server judges alone whose generated
/// objects the leader's last sync confirmed in place. Until then the webhook keeps judging
/// them (both judge, which is safe); never the other way round.
#[derive(Debug)]
pub struct Handoff {
    confirmed: watch::Sender<BTreeSet<(String, String)>>,
    /// Where the webhook's deciders read it.
    decider: Arc<crate::decide::HandedOff>,
}

impl Default for Handoff {
    fn default() -> Self {
        Self::to(Default::default())
    }
}

impl Handoff {
    /// A hand-off that the deciders sharing `decider` read (see [`crate::decide::Decider::handed_off`]).
    pub fn to(decider: Arc<crate::decide::HandedOff>) -> Self {
        Self {
            confirmed: watch::channel(BTreeSet::new()).0,
            decider,
        }
    }

    /// The constraints (kind, name) confirmed judged by the API server.
    pub fn confirmed(&self) -> BTreeSet<(String, String)> {
        self.confirmed.borrow().clone()
    }

    /// Changes of [`Handoff::confirmed`].
    pub fn subscribe(&self) -> watch::Receiver<BTreeSet<(String, String)>> {
        self.confirmed.subscribe()
    }

    /// Confirms nothing (the sync stopped, or this replica no longer leads).
    pub fn clear(&self) {
        self.set(BTreeSet::new());
    }

    fn set(&self, confirmed: BTreeSet<(String, String)>) {
        self.decider.set(confirmed.clone());
        self.confirmed.send_if_modified(|c| {
            let changed = *c != confirmed;
            *c = confirmed;
            changed
        });
    }
}

/// The constraints of `generated.api_server_only` that may leave the webhook after a sync that
/// ended with `outcome`: all of them when every generated object is in place, none otherwise
/// (generate does not say which objects a constraint needs, so a partial sync hands off
/// nothing).
pub fn confirmed(generated: &Generated, outcome: &Outcome) -> BTreeSet<(String, String)> {
    let every = generated.objects.iter().all(|o| {
        let (Some(kind), Some(name)) = (Kind::of(o), o["metadata"]["name"].as_str()) else {
            return false;
        };
        outcome.in_place().contains(&named(kind, name))
    });
    if every && outcome.in_sync() {
        generated.api_server_only.iter().cloned().collect()
    } else {
        BTreeSet::new()
    }
}

/// The leader's sync task.
#[derive(Clone)]
pub struct VapSync {
    pub client: kube::Client,
    pub bundle: Arc<HotSwap<Bundle>>,
    /// The served configuration is the decider's.
    pub decider: Arc<HotSwap<Decider>>,
    pub metrics: Arc<Metrics>,
    pub handoff: Arc<Handoff>,
    /// The sync waits until the policies applied to the cluster are listed: a bundle without
    /// them would have it delete their objects, and re-create them a moment later.
    pub readiness: Arc<Readiness>,
}

impl VapSync {
    /// Runs until dropped (the leader drops it when it stops leading).
    pub async fn run(self) {
        let notify = Arc::new(Notify::new());
        let (on_tx, on_rx) = watch::channel(false);
        let watches = watch_objects(self.client.clone(), on_rx, notify.clone());
        let sync = self.sync_loop(on_tx, notify);
        tokio::select! {
            _ = watches => {}
            _ = sync => {}
        }
    }

    async fn sync_loop(&self, on_tx: watch::Sender<bool>, notify: Arc<Notify>) {
        let mut backoff: Option<Duration> = None;
        let mut was_on: Option<bool> = None;
        loop {
            let bundle = self.bundle.load();
            let decider = self.decider.load();
            let config: &Config = decider.config();
            let on = config.validating_admission_policies.sync;
            on_tx.send_replace(on);
            if was_on != Some(on) {
                if on {
                    tracing::info!("ValidatingAdmissionPolicy sync on");
                } else {
                    tracing::info!(
                        "ValidatingAdmissionPolicy sync off: the ValidatingAdmissionPolicies in the cluster are left as they are"
                    );
                }
                was_on = Some(on);
            }
            let listed = self.readiness.cluster_policies_listed();
            let wait = if on && !listed {
                // Not a failure: the policy feed is still listing.
                POLL
            } else if on {
                let generated = generate(&bundle, config);
                let outcome = reconcile(&self.client, &generated.objects).await;
                self.report(&outcome, generated.objects.len());
                self.handoff.set(confirmed(&generated, &outcome));
                if outcome.in_sync() {
                    backoff = None;
                    RESYNC
                } else {
                    let next = backoff.map_or(FIRST_BACKOFF, |b| (b * 2).min(MAX_BACKOFF));
                    backoff = Some(next);
                    tracing::info!(retry_in = ?next, "ValidatingAdmissionPolicy sync incomplete; retrying");
                    next
                }
            } else {
                self.metrics.cluster().vap_sync_in_sync.set(0);
                self.handoff.clear();
                backoff = None;
                // Only a change of the configuration or bundle wakes it.
                Duration::MAX
            };
            let deadline = tokio::time::Instant::now().checked_add(wait);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {
                        if !Arc::ptr_eq(&bundle, &self.bundle.load())
                            || !Arc::ptr_eq(&decider, &self.decider.load())
                            || deadline.is_some_and(|d| tokio::time::Instant::now() >= d)
                        {
                            break;
                        }
                    }
                    _ = notify.notified(), if on => break,
                }
            }
        }
    }

    fn report(&self, outcome: &Outcome, generated: usize) {
        let metrics = self.metrics.cluster();
        for (objects, reason) in [
            (&outcome.created, "created"),
            (&outcome.restored, "restored"),
        ] {
            for object in objects {
                metrics
                    .vap_sync_applied
                    .get_or_create(&ReasonLabels { reason })
                    .inc();
                tracing::info!(
                    object,
                    reason,
                    "generated ValidatingAdmissionPolicy object applied"
                );
            }
        }
        for object in &outcome.deleted {
            metrics.vap_sync_deleted.inc();
            tracing::info!(
                object,
                "ValidatingAdmissionPolicy object no longer generated; deleted"
            );
        }
        for f in &outcome.failures {
            metrics
                .vap_sync_failures
                .get_or_create(&VapFailureLabels {
                    operation: f.operation,
                    reason: f.reason,
                })
                .inc();
            let hint = match f.reason {
                "not_served" => {
                    " (the API server does not serve admissionregistration.k8s.io/v1 ValidatingAdmissionPolicies: Kubernetes before 1.30)"
                }
                "forbidden" => " (RBAC: apply manifests/overlays/validating-admission-policies)",
                _ => "",
            };
            tracing::warn!(
                object = %f.object,
                operation = f.operation,
                reason = f.reason,
                error = %f.message,
                "ValidatingAdmissionPolicy sync failed{hint}"
            );
        }
        metrics.vap_sync_in_sync.set(i64::from(outcome.in_sync()));
        tracing::debug!(
            generated,
            unchanged = outcome.unchanged.len(),
            "ValidatingAdmissionPolicy sync done"
        );
    }
}

/// Wakes the sync when an object of either kind changes, while sync is on (off, no call is
/// made on these kinds).
async fn watch_objects(client: kube::Client, mut on: watch::Receiver<bool>, notify: Arc<Notify>) {
    loop {
        if on.wait_for(|o| *o).await.is_err() {
            return;
        }
        let streams = Kind::ALL.map(|kind| {
            watcher(kind.api(&client), watcher::Config::default())
                .default_backoff()
                .boxed()
        });
        let mut events = futures::stream::select_all(streams);
        let follow = async {
            while let Some(event) = events.next().await {
                match event {
                    Ok(
                        watcher::Event::Apply(_)
                        | watcher::Event::Delete(_)
                        | watcher::Event::InitDone,
                    ) => notify.notify_one(),
                    Ok(_) => {}
                    // The sync reports failures itself; a watch that fails backs off.
                    Err(error) => {
                        tracing::debug!(%error, "watch of ValidatingAdmissionPolicies failed")
                    }
                }
            }
        };
        tokio::select! {
            _ = follow => {}
            _ = on.wait_for(|o| !*o) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(kind: &str, name: &str) -> Value {
        json!({"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}})
    }

    fn generated() -> Generated {
        Generated {
            objects: vec![
                object("ValidatingAdmissionPolicy", "p"),
                object("ValidatingAdmissionPolicyBinding", "p"),
            ],
            api_server_only: vec![("K8sCelAllowedRepos".into(), "trusted".into())],
            kept_on_webhook: Vec::new(),
            warnings: Vec::new(),
        }
    }

    #[test]
    fn constraints_are_handed_off_only_when_every_object_is_in_place() {
        let all = Outcome {
            created: vec!["ValidatingAdmissionPolicy/p".into()],
            unchanged: vec!["ValidatingAdmissionPolicyBinding/p".into()],
            ..Outcome::default()
        };
        assert_eq!(
            confirmed(&generated(), &all),
            BTreeSet::from([("K8sCelAllowedRepos".to_owned(), "trusted".to_owned())])
        );
        // The binding failed: nothing leaves the webhook.
        let partial = Outcome {
            created: vec!["ValidatingAdmissionPolicy/p".into()],
            failures: vec![Failure {
                object: "ValidatingAdmissionPolicyBinding/p".into(),
                operation: "apply",
                reason: "not_served",
                message: String::new(),
            }],
            ..Outcome::default()
        };
        assert!(confirmed(&generated(), &partial).is_empty());
        // A stale object that could not be deleted is a failure too.
        let stale = Outcome {
            failures: vec![Failure {
                object: "ValidatingAdmissionPolicy/old".into(),
                operation: "delete",
                reason: "forbidden",
                message: String::new(),
            }],
            ..all.clone()
        };
        assert!(confirmed(&generated(), &stale).is_empty());
        // An object generate made that is not one of the two kinds confirms nothing.
        let mut odd = generated();
        odd.objects.push(json!({"kind": "ConfigMap"}));
        assert!(confirmed(&odd, &all).is_empty());

        let handoff = Handoff::default();
        let changes = handoff.subscribe();
        handoff.set(confirmed(&generated(), &all));
        assert!(changes.has_changed().unwrap());
        assert_eq!(handoff.confirmed().len(), 1);
        handoff.clear();
        assert!(handoff.confirmed().is_empty());
    }

    #[test]
    fn defaults_the_server_adds_are_not_drift_but_changed_values_are() {
        let want = json!({"failurePolicy": "Fail", "validations": [{"expression": "true"}]});
        let defaulted = json!({"failurePolicy": "Fail", "matchPolicy": "Equivalent",
            "validations": [{"expression": "true", "reason": "Invalid"}]});
        assert!(contains(&defaulted, &want));
        let changed = json!({"failurePolicy": "Ignore", "validations": [{"expression": "true"}]});
        assert!(!contains(&changed, &want));
        let more = json!({"failurePolicy": "Fail",
            "validations": [{"expression": "true"}, {"expression": "false"}]});
        assert!(!contains(&more, &want), "a validation added is drift");
    }

    #[test]
    fn owned_fields_are_the_leaves_of_fields_v1() {
        let mut out = BTreeSet::new();
        owned_leaves(
            &json!({"f:policyName": {}, "f:matchResources": {".": {}, "f:namespaceSelector": {}}}),
            &mut Vec::new(),
            &mut out,
        );
        let paths: Vec<Vec<String>> = out.into_iter().collect();
        assert_eq!(
            paths,
            [
                vec![
                    "f:matchResources".to_owned(),
                    "f:namespaceSelector".to_owned()
                ],
                vec!["f:policyName".to_owned()],
            ]
        );
    }

    #[test]
    fn a_label_is_added_without_panicking_on_odd_metadata() {
        let with_label = labelled(&json!({"metadata": {"name": "p", "labels": null}})).unwrap();
        assert_eq!(with_label["metadata"]["labels"][MANAGED_BY], "palisade");
        assert!(labelled(&json!({"metadata": {"labels": []}})).is_err());
        assert!(labelled(&json!({"kind": "X"})).is_err());
        assert!(labelled(&json!(null)).is_err());
    }
}
