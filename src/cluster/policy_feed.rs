//! Policies applied with kubectl: watches ConstraintTemplates, the Constraints of every kind
//! they define, Gatekeeper's mutators, `Config`, external data Providers, ExpansionTemplates and
//! SyncSets, merges them into the served bundle (see
//! [`crate::bundle::cluster`]), creates each template's constraint CRD by server-side apply and
//! removes it with the template, and writes this replica's `status.byPod` entry on each, as
//! Gatekeeper does.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::inventory_feed::{RetryBackoff, typed};
use crate::bundle::overlay::{CONFIG_GROUP, ClusterPolicies, SYNCSET_GROUP, Tracked};
use crate::bundle::{CONSTRAINTS_GROUP, MUTATIONS_GROUP, TEMPLATES_GROUP};
use crate::state::bundle_store::BundleStore;
use crate::state::readiness::Readiness;

/// The field manager of the constraint CRDs.
pub const CRD_MANAGER: &str = "palisade";
/// The version the constraint CRDs store; v1alpha1 and v1 are served too, as by Gatekeeper.
pub const CONSTRAINT_VERSION: &str = "v1beta1";
/// What each replica reports it does for an object (Gatekeeper's `operations`).
const OPERATIONS: [&str; 3] = ["audit", "status", "webhook"];
/// Longest time a change waits for others to join its batch.
const BATCH_WINDOW: Duration = Duration::from_millis(50);

/// A kind the feed watches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Watched {
    group: &'static str,
    version: &'static str,
    kind: String,
    plural: String,
}

impl Watched {
    fn resource(&self) -> ApiResource {
        let gvk = GroupVersionKind::gvk(self.group, self.version, &self.kind);
        ApiResource::from_gvk_with_plural(&gvk, &self.plural)
    }

    fn constraint(kind: &str) -> Self {
        Self {
            group: CONSTRAINTS_GROUP,
            version: CONSTRAINT_VERSION,
            kind: kind.to_owned(),
            plural: kind.to_lowercase(),
        }
    }
}

fn fixed_kinds() -> Vec<Watched> {
    let w = |group, version, kind: &str, plural: &str| Watched {
        group,
        version,
        kind: kind.into(),
        plural: plural.into(),
    };
    vec![
        w(
            TEMPLATES_GROUP,
            "v1",
            "ConstraintTemplate",
            "constrainttemplates",
        ),
        w(MUTATIONS_GROUP, "v1", "Assign", "assign"),
        w(MUTATIONS_GROUP, "v1", "AssignMetadata", "assignmetadata"),
        w(MUTATIONS_GROUP, "v1", "ModifySet", "modifyset"),
        w(CONFIG_GROUP, "v1alpha1", "Config", "configs"),
        w(
            crate::policy::external::GROUP,
            "v1beta1",
            "Provider",
            "providers",
        ),
        // Gatekeeper stores ExpansionTemplates as v1alpha1 and serves both versions alike.
        w(
            crate::expansion::EXPANSION_GROUP,
            "v1beta1",
            crate::expansion::KIND,
            "expansiontemplate",
        ),
        w(SYNCSET_GROUP, "v1alpha1", "SyncSet", "syncsets"),
    ]
}

enum Update {
    Apply(Value),
    Delete(Watched, String),
    Listed(Watched, Vec<Value>),
}

/// Keeps the cluster's policies in the served bundle until dropped.
pub struct PolicyFeed {
    pub client: kube::Client,
    pub sources: Arc<BundleStore>,
    /// This replica's name, its `byPod[].id`.
    pub identity: String,
    /// Where Gatekeeper's `Config` is read (named `config`).
    pub own_namespace: String,
    /// Not ready until every watched kind, and the constraints of every template listed then,
    /// has been listed once: a replica must not admit before it knows the cluster's policies.
    pub readiness: Arc<Readiness>,
}

impl PolicyFeed {
    fn status_manager(&self) -> String {
        format!("palisade-status-{}", self.identity)
    }

    pub async fn run(self) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut watchers: HashMap<Watched, AbortHandle> = HashMap::new();
        for kind in fixed_kinds() {
            let namespace = (kind.group == CONFIG_GROUP).then(|| self.own_namespace.clone());
            let handle = tokio::spawn(watch(
                self.client.clone(),
                kind.clone(),
                namespace,
                tx.clone(),
            ));
            watchers.insert(kind, handle.abort_handle());
        }
        // What this replica last applied: CRD specs by kind, statuses by object.
        let mut crds: HashMap<String, Value> = HashMap::new();
        let mut written: HashMap<String, Value> = HashMap::new();
        // Kinds listed at least once (a kind whose CRD is missing counts: none of it exists).
        let mut listed: HashSet<Watched> = HashSet::new();
        let mut ready = false;
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
            while let Ok(Some(u)) = tokio::time::timeout_at(deadline, rx.recv()).await {
                batch.push(u);
            }
            for update in &batch {
                if let Update::Listed(w, _) = update {
                    listed.insert(w.clone());
                }
            }
            let sources = self.sources.clone();
            let applied = tokio::task::spawn_blocking(move || {
                sources.update_cluster(|state, options| {
                    for update in batch {
                        match update {
                            Update::Apply(v) => state.upsert(v, options),
                            Update::Delete(w, name) => {
                                state.remove(w.group, &w.kind, &name, options)
                            }
                            Update::Listed(w, items) => {
                                state.replace_all(w.group, &w.kind, items, options)
                            }
                        }
                    }
                });
                sources.cluster_policies()
            })
            .await;
            let Ok(state) = applied else { continue };
            self.sync_crds(&state, &mut crds, &mut watchers, &tx).await;
            // Checked after sync_crds, which starts the watches of new templates' constraints.
            if !ready && watchers.keys().all(|w| listed.contains(w)) {
                ready = true;
                self.readiness.set_cluster_policies_listed(true);
                tracing::info!(
                    templates = state.templates().count(),
                    constraints = state.constraints().count(),
                    "the policies applied to the cluster are listed"
                );
            }
            self.write_statuses(&state, &crds, &mut written).await;
        }
        for (_, handle) in watchers {
            handle.abort();
        }
    }

    /// One CRD per compiled template's kind; the CRDs of templates gone are deleted, with the
    /// watch of their constraints.
    async fn sync_crds(
        &self,
        state: &ClusterPolicies,
        crds: &mut HashMap<String, Value>,
        watchers: &mut HashMap<Watched, AbortHandle>,
        tx: &mpsc::UnboundedSender<Update>,
    ) {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &crd_resource());
        let mut wanted: HashMap<String, Value> = HashMap::new();
        for t in state.templates() {
            if let Some(good) = &t.good {
                wanted.insert(
                    good.kind.clone(),
                    constraint_crd(&good.kind, good.schema.as_ref(), &t.doc.value),
                );
            }
        }
        for (kind, crd) in &wanted {
            if crds.get(kind) == Some(crd) {
                continue;
            }
            let name = crd["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let params = PatchParams::apply(CRD_MANAGER).force();
            match api.patch(&name, &params, &Patch::Apply(crd)).await {
                Ok(_) => {
                    tracing::info!(crd = %name, "constraint CRD applied");
                    crds.insert(kind.clone(), crd.clone());
                }
                Err(error) => {
                    tracing::error!(crd = %name, %error, "cannot apply the constraint CRD; retried with the next change")
                }
            }
            let watched = Watched::constraint(kind);
            let client = self.client.clone();
            watchers.entry(watched.clone()).or_insert_with(|| {
                tokio::spawn(watch(client, watched, None, tx.clone())).abort_handle()
            });
        }
        let gone: Vec<String> = crds
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for kind in gone {
            let name = format!("{}.{CONSTRAINTS_GROUP}", kind.to_lowercase());
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::info!(crd = %name, "template deleted: its constraint CRD is deleted")
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(error) => {
                    tracing::error!(crd = %name, %error, "cannot delete the constraint CRD; retried with the next change");
                    continue;
                }
            }
            crds.remove(&kind);
            if let Some(handle) = watchers.remove(&Watched::constraint(&kind)) {
                handle.abort();
            }
            let sources = self.sources.clone();
            let _ = tokio::task::spawn_blocking(move || {
                sources.update_cluster(|s, _| s.remove_kind(&kind))
            })
            .await;
        }
    }

    /// This replica's `status.byPod` entry on every template and constraint, where it changed.
    async fn write_statuses(
        &self,
        state: &ClusterPolicies,
        crds: &HashMap<String, Value>,
        written: &mut HashMap<String, Value>,
    ) {
        let manager = self.status_manager();
        for t in state.templates() {
            let created =
                ClusterPolicies::template_kind(&t.doc).is_some_and(|k| crds.contains_key(k));
            let mut entry = self.by_pod(t, "templateUID");
            entry["errors"] = errors_json(&t.errors, "ingest_error");
            let status = json!({"created": created, "byPod": [entry]});
            let api: Api<DynamicObject> =
                Api::all_with(self.client.clone(), &fixed_kinds()[0].resource());
            self.apply_status(&api, &manager, &t.doc.value, status, written)
                .await;
        }
        for c in state.constraints() {
            let mut entry = self.by_pod(c, "constraintUID");
            entry["enforced"] = json!(c.good.is_some());
            if !c.errors.is_empty() {
                entry["errors"] = errors_json(&c.errors, "parameter_error");
            }
            let api: Api<DynamicObject> =
                Api::all_with(self.client.clone(), &constraint_resource(c.doc.kind()));
            self.apply_status(
                &api,
                &manager,
                &c.doc.value,
                json!({"byPod": [entry]}),
                written,
            )
            .await;
        }
    }

    fn by_pod<T>(&self, t: &Tracked<T>, uid_field: &str) -> Value {
        let mut entry = json!({
            "id": self.identity,
            "observedGeneration": t.generation(),
            "operations": OPERATIONS,
        });
        entry[uid_field] = json!(t.uid());
        entry
    }

    async fn apply_status(
        &self,
        api: &Api<DynamicObject>,
        manager: &str,
        object: &Value,
        status: Value,
        written: &mut HashMap<String, Value>,
    ) {
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let key = format!("{}/{}", object["kind"].as_str().unwrap_or_default(), name);
        if written.get(&key) == Some(&status) {
            return;
        }
        // Said once per change: what the status is about to report.
        let errors: Vec<&str> = status["byPod"][0]["errors"]
            .as_array()
            .map(|e| e.iter().filter_map(|e| e["message"].as_str()).collect())
            .unwrap_or_default();
        if !errors.is_empty() {
            tracing::warn!(object = %key, errors = %errors.join("; "), "policy from the cluster not served as written; the last good form serves, if any");
        }
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        match apply_status(api, manager, api_version, kind, name, &status).await {
            Ok(()) => {
                written.insert(key, status);
            }
            Err(error) => {
                tracing::warn!(object = %key, %error, "cannot write status; retried with the next change")
            }
        }
    }
}

fn errors_json(errors: &[String], code: &str) -> Value {
    Value::Array(
        errors
            .iter()
            .map(|e| {
                let code = if e.starts_with(crate::bundle::overlay::CONFLICT) {
                    "conflict"
                } else {
                    code
                };
                let mut entry = json!({"code": code, "message": e});
                if let Some(at) = location(e) {
                    entry["location"] = json!(at);
                }
                entry
            })
            .collect(),
    )
}

/// Where in the Rego an error is, `<file>.rego:<line>[:<col>]`, when the message says so
/// (regorus' `--> file:line:col` or OPA's leading `file:line:`).
fn location(message: &str) -> Option<&str> {
    let at = match message.find("--> ") {
        Some(i) => &message[i + 4..],
        None => message,
    };
    let end = at.find(|c: char| c.is_whitespace()).unwrap_or(at.len());
    let candidate = at[..end].trim_end_matches(':');
    let (file, position) = candidate.split_once(".rego:")?;
    let numbers_only = !position.is_empty()
        && position
            .split(':')
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    (!file.is_empty() && numbers_only).then_some(candidate)
}

/// Applies `status` to the `/status` of `kind`/`name` as `manager` (forced: each manager owns
/// only the fields it writes, so replicas and the audit never take each other's).
pub async fn apply_status(
    api: &Api<DynamicObject>,
    manager: &str,
    api_version: &str,
    kind: &str,
    name: &str,
    status: &Value,
) -> kube::Result<()> {
    let body = json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name},
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&body),
    )
    .await
    .map(|_| ())
}

/// The served resource of the constraints of `kind` (in the stored version).
pub fn constraint_resource(kind: &str) -> ApiResource {
    Watched::constraint(kind).resource()
}

fn crd_resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition");
    ApiResource::from_gvk_with_plural(&gvk, "customresourcedefinitions")
}

/// The CRD of a constraint kind, as Gatekeeper makes it: cluster-scoped, in
/// `constraints.gatekeeper.sh`, served as v1beta1 (stored), v1alpha1 and v1, with the template's
/// parameter schema under `spec.parameters`, and owned by the template so that it goes with it.
pub fn constraint_crd(kind: &str, parameters: Option<&Value>, template: &Value) -> Value {
    let plural = kind.to_lowercase();
    let mut parameters = parameters
        .cloned()
        .unwrap_or_else(|| json!({"x-kubernetes-preserve-unknown-fields": true}));
    if parameters.get("type").is_none() {
        parameters["type"] = json!("object");
    }
    let schema = json!({
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "properties": {
                    "enforcementAction": {"type": "string"},
                    "scopedEnforcementActions": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                    "match": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "parameters": parameters,
                },
            },
            "status": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
                "properties": {
                    "byPod": {
                        "type": "array",
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["id"],
                        "items": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}, "x-kubernetes-preserve-unknown-fields": true},
                    },
                    "auditTimestamp": {"type": "string"},
                    "totalViolations": {"type": "integer"},
                    "violations": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "enforcementAction": {"type": "string"},
                                "group": {"type": "string"},
                                "version": {"type": "string"},
                                "kind": {"type": "string"},
                                "namespace": {"type": "string"},
                                "name": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
    });
    let version = |name: &str, storage: bool| {
        json!({
            "name": name, "served": true, "storage": storage,
            "schema": {"openAPIV3Schema": schema},
            "subresources": {"status": {}},
            "additionalPrinterColumns": [
                {"name": "enforcement-action", "type": "string", "jsonPath": ".spec.enforcementAction"},
                {"name": "total-violations", "type": "integer", "jsonPath": ".status.totalViolations"},
            ],
        })
    };
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": format!("{plural}.{CONSTRAINTS_GROUP}"),
            "labels": {"gatekeeper.sh/constraint": "yes", "app.kubernetes.io/managed-by": "palisade"},
            "ownerReferences": [{
                "apiVersion": template["apiVersion"],
                "kind": "ConstraintTemplate",
                "name": template["metadata"]["name"],
                "uid": template["metadata"]["uid"],
            }],
        },
        "spec": {
            "group": CONSTRAINTS_GROUP,
            "names": {
                "kind": kind,
                "listKind": format!("{kind}List"),
                "plural": plural,
                "singular": plural,
                "categories": ["constraint", "constraints"],
            },
            "scope": "Cluster",
            "versions": [version("v1beta1", true), version("v1alpha1", false), version("v1", false)],
        },
    })
}

/// Lists then watches one kind, reporting every change; retries with backoff.
async fn watch(
    client: kube::Client,
    kind: Watched,
    namespace: Option<String>,
    tx: mpsc::UnboundedSender<Update>,
) {
    let resource = kind.resource();
    let api: Api<DynamicObject> = match &namespace {
        Some(ns) => Api::namespaced_with(client, ns, &resource),
        None => Api::all_with(client, &resource),
    };
    let mut stream = watcher(api, watcher::Config::default())
        .backoff(RetryBackoff::default())
        .boxed();
    let mut listing: Vec<Value> = Vec::new();
    let mut failing = false;
    while let Some(event) = stream.next().await {
        let update = match event {
            Ok(watcher::Event::Init) => {
                listing.clear();
                continue;
            }
            Ok(watcher::Event::InitApply(o)) => {
                listing.push(typed(o, &resource));
                continue;
            }
            Ok(watcher::Event::InitDone) => {
                Update::Listed(kind.clone(), std::mem::take(&mut listing))
            }
            Ok(watcher::Event::Apply(o)) => Update::Apply(typed(o, &resource)),
            Ok(watcher::Event::Delete(o)) => {
                Update::Delete(kind.clone(), o.metadata.name.unwrap_or_default())
            }
            Err(watcher::Error::InitialListFailed(kube::Error::Api(e)))
                if e.code == 404 && !failing =>
            {
                // The kind's CRD is not installed: nothing of it exists (said once, retried).
                tracing::warn!(kind = %kind.kind, group = kind.group, "the CRD of this policy kind is not installed; none are read until it is");
                failing = true;
                Update::Listed(kind.clone(), Vec::new())
            }
            Err(error) => {
                if !failing {
                    // A kind whose CRD is not installed is 404 until it is: said once.
                    tracing::warn!(kind = %kind.kind, group = kind.group, %error, "cannot watch policies of this kind; retrying");
                    failing = true;
                }
                continue;
            }
        };
        if !matches!(update, Update::Listed(_, ref items) if items.is_empty()) {
            failing = false;
        }
        if tx.send(update).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_names_its_place_in_the_rego_when_the_message_does() {
        let regorus = "--> k8sbroken.rego:6:1\n  |\n6 | \n  | ^\nerror: expecting expression";
        assert_eq!(location(regorus), Some("k8sbroken.rego:6:1"));
        let opa =
            "k8sx.rego:12: eval_conflict_error: complete rules must not produce multiple outputs";
        assert_eq!(location(opa), Some("k8sx.rego:12"));
        for none in [
            "spec.crd.spec.names.kind: required",
            "see k8sx.rego for details",
            "k8sx.rego:abc: nonsense",
            ".rego:3: no file",
        ] {
            assert_eq!(location(none), None, "{none}");
        }
        let errors = errors_json(
            &[regorus.to_owned(), "spec.targets: required".to_owned()],
            "ingest_error",
        );
        assert_eq!(errors[0]["location"], "k8sbroken.rego:6:1");
        assert_eq!(errors[0]["code"], "ingest_error");
        assert!(errors[1].get("location").is_none());
    }
}
