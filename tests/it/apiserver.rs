//! A STAND-IN FOR THE KUBERNETES API SERVER, for tests only. It is not a Kubernetes API server.
//!
//! No API server can be installed on the build machines, so the cluster-facing code is tested with
//! the real `kube` client against this in-process imitation. It speaks HTTPS (its own CA, a bearer
//! token, as a kubeconfig names them) and implements only what Palisade depends on, for
//! Namespaces, NetworkPolicies, Ingresses, Leases, Pods, the workload kinds (apps, batch),
//! Secrets, the webhook configurations and PolicyReports, with the real API's semantics where the code relies on
//! them. `cluster::standin_matches_the_real_api_server` replays the answers a real kube-apiserver
//! v1.25 gave (`tests/data/apiserver/`) against it.
//!
//! - one cluster-wide `resourceVersion` counter; objects carry uid, resourceVersion,
//!   creationTimestamp, generation (NetworkPolicy), managedFields;
//! - list with `limit` and `continue` (items without kind/apiVersion, as the real one sends them).
//!   Unlike the real one, a later page is read from the current state, not from a snapshot at the
//!   list's resourceVersion; the watch from that resourceVersion replays what changed since, so a
//!   client that lists then watches still converges;
//! - watch from a `resourceVersion` (ADDED, MODIFIED, DELETED, BOOKMARK), replayed from a bounded
//!   history; a resourceVersion older than the history gets HTTP 200 and one `ERROR` event with a
//!   410 `Expired` Status, as the real one does;
//! - get, create (409 AlreadyExists), update with optimistic concurrency (409 Conflict on a stale
//!   resourceVersion), delete, and server-side apply (`application/apply-patch+yaml`, field
//!   managers, conflicts with `FieldManagerConflict` causes, `force`). Field ownership is tracked
//!   per leaf field, lists are atomic, as for the fields of these kinds;
//! - deleting a Namespace marks it Terminating (MODIFIED with deletionTimestamp), then deletes what
//!   it holds and itself at once (a namespace controller that never waits);
//! - it can be stopped (the port refuses connections, every connection is cut) and restarted on
//!   the same port with its state, its watches can be dropped, its history compacted (every older
//!   resourceVersion then gets 410), and a token's requests can be failed (HTTP 500).
//!
//! - discovery: `/api`, `/apis`, `/apis/<group>` and `/apis/<group>/<version>`, one version per
//!   group; the PolicyReport kinds (`wgpolicyk8s.io`) exist only once a test installs their CRD,
//!   as in a cluster, and are 404 before;
//! - `key=value` label selectors on lists (the audit finds its old reports with one).
//! - CustomResourceDefinitions: storing one serves its kinds in every served version (one set of
//!   objects, read and written in any of them, stored in the storage version); deleting it
//!   deletes its objects. A kind with a status subresource ignores `status` on its main
//!   resource and takes server-side apply on `/status`, where fields are owned per manager and
//!   lists the CRD's schema declares `x-kubernetes-list-type: map` merge per element, as the
//!   real server does. Unlike the real one, CRDs are Established at once and objects are not
//!   validated against their schema.
//!
//! - Secrets (a `kubernetes.io/tls` one needs tls.crt and tls.key; `type` is immutable) and
//!   Validating/MutatingWebhookConfigurations (get, update with optimistic concurrency);
//! - authorisation: every request is held to the RBAC rules manifests/base/rbac.yaml binds to
//!   Palisade's ServiceAccount (as the real authorizer reads them: groups, resources and
//!   `*/status` forms, verbs, resourceNames; discovery always allowed), with the real 403
//!   wording, so every cluster test shows that the shipped RBAC allows what Palisade does. A
//!   test that plays an administrator lifts it with `enforce_rbac(false)`.
//!
//! Not implemented, because Palisade does not use them: other label selectors, label selectors on
//! watches, and field selectors (refused with 400, so that a test would notice), strategic-merge
//! and JSON patches (415), generateName, admission, authentication (any bearer token is
//! Palisade's ServiceAccount), PUT on `/status`, kinds other than Namespaces, NetworkPolicies,
//! Ingresses, Leases, Pods, the workload kinds, Secrets, the webhook configurations, the PolicyReports, CRDs
//! and the kinds CRDs define.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;

/// A kind the stand-in serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    /// Whether `metadata.generation` is kept (it moves when `spec` changes).
    generation: bool,
    /// The version objects are stored in; every served version reads and writes the same ones.
    storage: &'static str,
    /// Whether `status` is a subresource: written only through `/status`.
    status: bool,
}

pub const NAMESPACES: Resource = Resource {
    group: "",
    version: "v1",
    plural: "namespaces",
    kind: "Namespace",
    namespaced: false,
    generation: false,
    storage: "v1",
    status: false,
};
pub const NETWORK_POLICIES: Resource = Resource {
    group: "networking.k8s.io",
    version: "v1",
    plural: "networkpolicies",
    kind: "NetworkPolicy",
    namespaced: true,
    generation: true,
    storage: "v1",
    status: false,
};
/// Served as the real one serves it (status a subresource, generation kept); Palisade reads it
/// only when a Config or SyncSet syncs it.
pub const INGRESSES: Resource = Resource {
    group: "networking.k8s.io",
    version: "v1",
    plural: "ingresses",
    kind: "Ingress",
    namespaced: true,
    generation: true,
    storage: "v1",
    status: true,
};
pub const LEASES: Resource = Resource {
    group: "coordination.k8s.io",
    version: "v1",
    plural: "leases",
    kind: "Lease",
    namespaced: true,
    generation: false,
    storage: "v1",
    status: false,
};
pub const PODS: Resource = Resource {
    group: "",
    version: "v1",
    plural: "pods",
    kind: "Pod",
    namespaced: true,
    generation: false,
    storage: "v1",
    status: false,
};
/// Served only once [`ApiServer::install_crd`] installed the group, as a CRD would be.
pub const POLICY_REPORTS: Resource = Resource {
    group: "wgpolicyk8s.io",
    version: "v1alpha2",
    plural: "policyreports",
    kind: "PolicyReport",
    namespaced: true,
    generation: true,
    storage: "v1alpha2",
    status: false,
};
pub const CLUSTER_POLICY_REPORTS: Resource = Resource {
    group: "wgpolicyk8s.io",
    version: "v1alpha2",
    plural: "clusterpolicyreports",
    kind: "ClusterPolicyReport",
    namespaced: false,
    generation: true,
    storage: "v1alpha2",
    status: false,
};
pub const CRDS: Resource = Resource {
    group: "apiextensions.k8s.io",
    version: "v1",
    plural: "customresourcedefinitions",
    kind: "CustomResourceDefinition",
    namespaced: false,
    generation: true,
    storage: "v1",
    status: false,
};
pub const SECRETS: Resource = Resource {
    group: "",
    version: "v1",
    plural: "secrets",
    kind: "Secret",
    namespaced: true,
    generation: false,
    storage: "v1",
    status: false,
};
pub const VALIDATING_WEBHOOKS: Resource = Resource {
    group: "admissionregistration.k8s.io",
    version: "v1",
    plural: "validatingwebhookconfigurations",
    kind: "ValidatingWebhookConfiguration",
    namespaced: false,
    generation: false,
    storage: "v1",
    status: false,
};
pub const MUTATING_WEBHOOKS: Resource = Resource {
    group: "admissionregistration.k8s.io",
    version: "v1",
    plural: "mutatingwebhookconfigurations",
    kind: "MutatingWebhookConfiguration",
    namespaced: false,
    generation: false,
    storage: "v1",
    status: false,
};
/// The workload kinds the audit lists. Unlike the real server, nothing here makes their
/// pods: a test creates the objects it needs.
const fn workload(group: &'static str, plural: &'static str, kind: &'static str) -> Resource {
    Resource {
        group,
        version: "v1",
        plural,
        kind,
        namespaced: true,
        generation: true,
        storage: "v1",
        status: false,
    }
}
pub const DEPLOYMENTS: Resource = workload("apps", "deployments", "Deployment");
pub const STATEFULSETS: Resource = workload("apps", "statefulsets", "StatefulSet");
pub const DAEMONSETS: Resource = workload("apps", "daemonsets", "DaemonSet");
pub const REPLICASETS: Resource = workload("apps", "replicasets", "ReplicaSet");
pub const JOBS: Resource = workload("batch", "jobs", "Job");
pub const CRONJOBS: Resource = workload("batch", "cronjobs", "CronJob");
pub const REPLICATION_CONTROLLERS: Resource =
    workload("", "replicationcontrollers", "ReplicationController");
/// A PodTemplate has no spec of its own (its `template` is the data), so no generation.
pub const POD_TEMPLATES: Resource = Resource {
    generation: false,
    ..workload("", "podtemplates", "PodTemplate")
};
const RESOURCES: [Resource; 19] = [
    CRDS,
    NAMESPACES,
    NETWORK_POLICIES,
    INGRESSES,
    LEASES,
    PODS,
    SECRETS,
    VALIDATING_WEBHOOKS,
    MUTATING_WEBHOOKS,
    DEPLOYMENTS,
    STATEFULSETS,
    DAEMONSETS,
    REPLICASETS,
    JOBS,
    CRONJOBS,
    REPLICATION_CONTROLLERS,
    POD_TEMPLATES,
    POLICY_REPORTS,
    CLUSTER_POLICY_REPORTS,
];
/// Groups that come from CRDs, absent until installed.
const CRD_GROUPS: [&str; 1] = ["wgpolicyk8s.io"];

impl Resource {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `networkpolicies.networking.k8s.io`, as error messages name it.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    fn of(object: &Value, served: &[Resource]) -> Option<Resource> {
        let api_version = object["apiVersion"].as_str()?;
        let kind = object["kind"].as_str()?;
        served
            .iter()
            .copied()
            .find(|r| r.api_version() == api_version && r.kind == kind)
    }

    /// The same kind in the version it is stored in: the key of its objects.
    fn stored(&self) -> Resource {
        Resource {
            version: self.storage,
            ..*self
        }
    }

    /// Whether both name the same objects (any versions).
    fn same_kind(&self, other: &Resource) -> bool {
        self.group == other.group && self.plural == other.plural
    }
}

/// `object` as `r`'s version serves it.
fn in_version(r: &Resource, mut object: Value) -> Value {
    let kind = object["kind"].as_str().unwrap_or("");
    if kind != r.kind && kind != format!("{}List", r.kind) {
        return object; // a Status, or another kind
    }
    if object.get("apiVersion").is_some() {
        object["apiVersion"] = json!(r.api_version());
    }
    if let Some(items) = object.get_mut("items").and_then(Value::as_array_mut) {
        for item in items.iter_mut() {
            if item.get("apiVersion").is_some() {
                item["apiVersion"] = json!(r.api_version());
            }
        }
    }
    object
}

/// A string that lives as long as the test process: the names of CRD-defined kinds.
fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

/// The kinds (one per served version) that a CustomResourceDefinition defines, with its
/// status schema per storage resource.
fn crd_resources(crd: &Value) -> Vec<(Resource, Value)> {
    let spec = &crd["spec"];
    let (Some(group), Some(kind), Some(plural)) = (
        spec["group"].as_str(),
        spec["names"]["kind"].as_str(),
        spec["names"]["plural"].as_str(),
    ) else {
        return Vec::new();
    };
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    let Some(storage) = versions
        .iter()
        .find(|v| v["storage"] == true)
        .and_then(|v| v["name"].as_str())
    else {
        return Vec::new();
    };
    let storage = leak(storage);
    versions
        .iter()
        .filter(|v| v["served"] == true)
        .filter_map(|v| {
            let r = Resource {
                group: leak(group),
                version: leak(v["name"].as_str()?),
                plural: leak(plural),
                kind: leak(kind),
                namespaced: spec["scope"] == "Namespaced",
                generation: true,
                storage,
                status: v["subresources"].get("status").is_some(),
            };
            Some((r, v["schema"]["openAPIV3Schema"].clone()))
        })
        .collect()
}

/// An API error: a `Status` object and its HTTP code.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub body: Value,
}

impl ApiError {
    fn new(code: u16, reason: &str, message: String, details: Value) -> Self {
        let mut body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": details,
            "code": code,
        });
        if body["details"].is_null() {
            body.as_object_mut().unwrap().remove("details");
        }
        Self { code, body }
    }

    fn details(r: &Resource, name: &str) -> Value {
        let mut d = json!({"name": name});
        if !r.group.is_empty() {
            d["group"] = json!(r.group);
        }
        d["kind"] = json!(r.plural);
        d
    }

    fn not_found(r: &Resource, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", r.qualified()),
            Self::details(r, name),
        )
    }

    fn already_exists(r: &Resource, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", r.qualified()),
            Self::details(r, name),
        )
    }

    fn conflict(r: &Resource, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                r.qualified()
            ),
            Self::details(r, name),
        )
    }

    fn bad_request(message: String) -> Self {
        Self::new(400, "BadRequest", message, Value::Null)
    }
}

/// Which fields a manager owns, as leaf paths.
#[derive(Debug, Clone, PartialEq)]
struct Managed {
    manager: String,
    operation: &'static str,
    /// Written through `/status`.
    subresource: bool,
    time: String,
    fields: BTreeSet<Vec<String>>,
}

#[derive(Debug, Clone)]
struct Stored {
    /// The object without managedFields.
    object: Value,
    managed: Vec<Managed>,
}

impl Stored {
    fn render(&self, r: &Resource) -> Value {
        let mut object = self.object.clone();
        let entries: Vec<Value> = self
            .managed
            .iter()
            .map(|m| {
                let mut entry = json!({
                    "manager": m.manager,
                    "operation": m.operation,
                    "apiVersion": r.api_version(),
                    "time": m.time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": fields_v1(&m.fields),
                });
                if m.subresource {
                    entry["subresource"] = json!("status");
                }
                entry
            })
            .collect();
        if !entries.is_empty() {
            object["metadata"]["managedFields"] = Value::Array(entries);
        }
        object
    }
}

type Key = (Resource, String, String);

#[derive(Debug, Clone)]
struct Event {
    rv: u64,
    resource: Resource,
    namespace: String,
    kind: &'static str,
    object: Value,
}

struct Store {
    rv: u64,
    objects: BTreeMap<Key, Stored>,
    /// Events after `compacted`, oldest first.
    history: VecDeque<Event>,
    history_limit: usize,
    /// Watches from a resourceVersion at or below this get 410 Expired.
    compacted: u64,
    failing_tokens: HashSet<String>,
    /// `(group, plural)` of kinds every client is forbidden, as by missing RBAC.
    forbidden: HashSet<(String, String)>,
    /// The rules every client is held to: those of Palisade's ServiceAccount in
    /// manifests/base/rbac.yaml, unless a test lifts them.
    rbac: Option<Rbac>,
    /// CRD groups installed so far (see [`CRD_GROUPS`]).
    installed: HashSet<&'static str>,
    /// Kinds defined by the CustomResourceDefinitions stored, with their schemas.
    defined: Vec<(Resource, Value)>,
}

impl Store {
    /// The kinds served now: the built-in ones, those of installed CRD groups and those that
    /// stored CustomResourceDefinitions define.
    fn served(&self) -> Vec<Resource> {
        RESOURCES
            .into_iter()
            .filter(|r| !CRD_GROUPS.contains(&r.group) || self.installed.contains(r.group))
            .chain(self.defined.iter().map(|(r, _)| *r))
            .collect()
    }

    /// The schema of `r`'s stored objects, when a CRD defines it.
    fn schema(&self, r: &Resource) -> Option<&Value> {
        self.defined
            .iter()
            .find(|(d, _)| d.same_kind(r) && d.version == d.storage)
            .map(|(_, s)| s)
    }
}

struct Shared {
    store: Mutex<Store>,
    events: broadcast::Sender<Event>,
    /// Bumped to end every open watch.
    watch_epoch: watch::Sender<u64>,
    bookmark_interval: Mutex<Duration>,
    requests: Mutex<Vec<String>>,
}

/// The stand-in. Dropping it stops it.
pub struct ApiServer {
    shared: Arc<Shared>,
    pub addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    ca_pem: String,
    running: Mutex<Option<JoinSet<()>>>,
    dir: tempfile::TempDir,
}

impl ApiServer {
    /// Starts on a free loopback port, holding the namespaces every cluster has.
    pub async fn start() -> Arc<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut spec = palisade::tls::certificates::CertSpec::new("kubernetes", "default");
        spec.extra_sans = vec!["kubernetes.default.svc".into()];
        let certs = palisade::tls::certificates::generate(&spec).unwrap();
        let chain = vec![CertificateDer::from_pem_slice(certs.cert_pem.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(certs.key_pem.as_bytes()).unwrap();
        let mut tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let (events, _) = broadcast::channel(65_536);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store {
                rv: 100,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                history_limit: 100_000,
                compacted: 100,
                failing_tokens: HashSet::new(),
                forbidden: HashSet::new(),
                rbac: Some(Rbac::from_manifests()),
                installed: HashSet::new(),
                defined: Vec::new(),
            }),
            events,
            watch_epoch: watch::channel(0).0,
            bookmark_interval: Mutex::new(Duration::from_secs(1)),
            requests: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Arc::new(Self {
            shared,
            addr,
            tls: Arc::new(tls),
            ca_pem: certs.ca_cert_pem,
            running: Mutex::new(None),
            dir: tempfile::tempdir().unwrap(),
        });
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            server
                .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
                .unwrap();
        }
        server.serve(listener);
        server
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let mut tasks = JoinSet::new();
        let shared = self.shared.clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls.clone());
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let shared = shared.clone();
                connections.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(shared, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        *self.running.lock().unwrap() = Some(tasks);
    }

    /// Stops listening and cuts every connection; the state is kept.
    pub fn stop(&self) {
        if let Some(mut tasks) = self.running.lock().unwrap().take() {
            tasks.abort_all();
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&self) {
        self.stop();
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot listen on {} again: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    /// Ends every open watch; clients must watch again from their last resourceVersion.
    pub fn drop_watches(&self) {
        self.shared.watch_epoch.send_modify(|e| *e += 1);
    }

    /// Forgets the history: a watch from any resourceVersion before now gets 410 Expired.
    pub fn compact(&self) {
        let mut store = self.shared.store.lock().unwrap();
        store.compacted = store.rv;
        store.history.clear();
    }

    /// Makes every request with this bearer token fail with HTTP 500 (or stop failing).
    pub fn fail_token(&self, token: &str, fail: bool) {
        let mut store = self.shared.store.lock().unwrap();
        if fail {
            store.failing_tokens.insert(token.to_owned());
        } else {
            store.failing_tokens.remove(token);
        }
    }

    /// Makes every request on `group`/`plural` fail with 403 Forbidden, as a missing RBAC rule
    /// does (or stop failing).
    pub fn forbid(&self, group: &str, plural: &str, forbid: bool) {
        let key = (group.to_owned(), plural.to_owned());
        let mut store = self.shared.store.lock().unwrap();
        if forbid {
            store.forbidden.insert(key);
        } else {
            store.forbidden.remove(&key);
        }
    }

    /// What the RBAC rules grant that no request to this server has used.
    pub fn rbac_unused(&self) -> Vec<String> {
        let store = self.shared.store.lock().unwrap();
        store.rbac.as_ref().map(Rbac::unused).unwrap_or_default()
    }

    /// Adds a cluster-wide rule to Palisade's, as an operator adds one to the ClusterRole (for
    /// a kind a Config or SyncSet syncs, say). `enforce_rbac` forgets it.
    pub fn grant(&self, group: &str, resource: &str, verbs: &[&str]) {
        let mut store = self.shared.store.lock().unwrap();
        if let Some(rbac) = store.rbac.as_mut() {
            rbac.rules.push(RbacRule {
                namespace: String::new(),
                groups: vec![group.to_owned()],
                resources: vec![resource.to_owned()],
                names: Vec::new(),
                verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
            });
        }
    }

    /// Lifts (or restores) the RBAC rules of manifests/base/rbac.yaml for every client, for a
    /// test that plays another client than Palisade.
    pub fn enforce_rbac(&self, enforce: bool) {
        self.shared.store.lock().unwrap().rbac = enforce.then(Rbac::from_manifests);
    }

    /// Installs the CRDs of `group` (one of [`CRD_GROUPS`]): its kinds are served from now on.
    pub fn install_crd(&self, group: &'static str) {
        assert!(
            CRD_GROUPS.contains(&group),
            "the stand-in has no CRD group {group}"
        );
        self.shared.store.lock().unwrap().installed.insert(group);
    }

    pub fn set_bookmark_interval(&self, every: Duration) {
        *self.shared.bookmark_interval.lock().unwrap() = every;
    }

    /// `METHOD path?query` of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Writes a kubeconfig for this server with `token`, and returns its path.
    pub fn kubeconfig(&self, token: &str) -> PathBuf {
        let path = self.dir.path().join(format!("kubeconfig-{token}"));
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: https://{}\n    certificate-authority-data: {ca}\n    tls-server-name: kubernetes.default.svc\nusers:\n- name: {token}\n  user:\n    token: {token}\ncontexts:\n- name: standin\n  context:\n    cluster: standin\n    user: {token}\ncurrent-context: standin\n",
                self.addr
            ),
        )
        .unwrap();
        path
    }

    // ---- the API, callable directly (also while stopped) ----

    pub fn get(&self, r: &Resource, namespace: &str, name: &str) -> Result<Value, ApiError> {
        let store = self.shared.store.lock().unwrap();
        store
            .objects
            .get(&(r.stored(), namespace.to_owned(), name.to_owned()))
            .map(|s| in_version(r, s.render(r)))
            .ok_or_else(|| ApiError::not_found(r, name))
    }

    /// Names (`namespace/name`, or `name`) of the objects of a kind.
    pub fn names(&self, r: &Resource) -> Vec<String> {
        let store = self.shared.store.lock().unwrap();
        store
            .objects
            .keys()
            .filter(|k| k.0 == r.stored())
            .map(|(_, ns, n)| {
                if ns.is_empty() {
                    n.clone()
                } else {
                    format!("{ns}/{n}")
                }
            })
            .collect()
    }

    pub fn create(&self, object: Value) -> Result<Value, ApiError> {
        self.create_as("test", object)
    }

    pub fn create_as(&self, manager: &str, object: Value) -> Result<Value, ApiError> {
        let r = self.resource_of(&object)?;
        let (ns, name) = identity(&r, &object)?;
        self.mutate(|store| store.create(&r, &ns, &name, manager, object))
    }

    /// A PUT: optimistic concurrency on `metadata.resourceVersion` when it is set.
    pub fn update(&self, manager: &str, object: Value) -> Result<Value, ApiError> {
        let r = self.resource_of(&object)?;
        let (ns, name) = identity(&r, &object)?;
        self.mutate(|store| store.update(&r, &ns, &name, manager, object))
    }

    /// Server-side apply of `config` by `manager`.
    pub fn apply(&self, manager: &str, config: Value, force: bool) -> Result<Value, ApiError> {
        let r = self.resource_of(&config)?;
        let (ns, name) = identity(&r, &config)?;
        self.mutate(|store| store.apply(&r, &ns, &name, manager, config, force))
    }

    pub fn delete(&self, r: &Resource, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.mutate(|store| store.delete(&r.stored(), namespace, name))
    }

    /// The stored kind of an object, if it is served.
    fn resource_of(&self, object: &Value) -> Result<Resource, ApiError> {
        let served = self.shared.store.lock().unwrap().served();
        Resource::of(object, &served)
            .map(|r| r.stored())
            .ok_or_else(|| ApiError::bad_request("unknown apiVersion/kind".into()))
    }

    /// The kind a CustomResourceDefinition stored here defines, in `version`.
    pub fn defined(&self, group: &str, plural: &str, version: &str) -> Option<Resource> {
        let store = self.shared.store.lock().unwrap();
        store
            .defined
            .iter()
            .map(|(r, _)| *r)
            .find(|r| r.group == group && r.plural == plural && r.version == version)
    }

    fn mutate(
        &self,
        f: impl FnOnce(&mut Store) -> Result<(Value, Vec<Event>), ApiError>,
    ) -> Result<Value, ApiError> {
        mutate(&self.shared, f)
    }
}

/// Runs one change under the lock, records its events and sends them to the watches.
fn mutate(
    shared: &Shared,
    f: impl FnOnce(&mut Store) -> Result<(Value, Vec<Event>), ApiError>,
) -> Result<Value, ApiError> {
    let mut store = shared.store.lock().unwrap();
    let (answer, events) = f(&mut store)?;
    if events.iter().any(|e| e.resource == CRDS) {
        store.refresh_defined();
    }
    for event in events {
        store.history.push_back(event.clone());
        if store.history.len() > store.history_limit
            && let Some(old) = store.history.pop_front()
        {
            store.compacted = old.rv;
        }
        let _ = shared.events.send(event);
    }
    Ok(answer)
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn identity(r: &Resource, object: &Value) -> Result<(String, String), ApiError> {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    if name.is_empty() {
        return Err(ApiError::new(
            422,
            "Invalid",
            format!(
                "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                r.kind
            ),
            Value::Null,
        ));
    }
    let ns = if r.namespaced {
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
    } else {
        ""
    };
    Ok((ns.to_owned(), name.to_owned()))
}

/// One RBAC PolicyRule; `namespace` is the Role's, empty for a ClusterRole's.
#[derive(Debug, Clone)]
struct RbacRule {
    namespace: String,
    groups: Vec<String>,
    resources: Vec<String>,
    names: Vec<String>,
    verbs: Vec<String>,
}

/// The rules bound to Palisade's ServiceAccount, evaluated as the real authorizer does:
/// allowed when any rule matches (group, resource or `*` / `<x>/status` forms, verb, and for
/// named rules the object's name; a create has no name, so a named rule never allows it).
/// Discovery is allowed to everyone, as by the default system:discovery role.
#[derive(Debug, Clone)]
pub struct Rbac {
    rules: Vec<RbacRule>,
    /// (rule, resource as the rule lists it, verb) that allowed a request.
    used: BTreeSet<(usize, String, String)>,
}

impl Rbac {
    fn from_manifests() -> Self {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base/rbac.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let docs = palisade::manifest::parse_str(&text, &path).unwrap();
        let bound = |kind: &str, name: &str| {
            docs.iter().any(|d| {
                let b = &d.value;
                b["kind"] == format!("{kind}Binding")
                    && b["roleRef"]["kind"] == kind
                    && b["roleRef"]["name"] == name
                    && b["subjects"].as_array().unwrap().iter().any(|s| {
                        s["kind"] == "ServiceAccount"
                            && s["name"] == "palisade"
                            && s["namespace"] == "palisade-system"
                    })
            })
        };
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect()
        };
        let mut rules = Vec::new();
        for doc in &docs {
            let role = &doc.value;
            let kind = role["kind"].as_str().unwrap_or("");
            if !matches!(kind, "ClusterRole" | "Role")
                || !bound(kind, role["metadata"]["name"].as_str().unwrap())
            {
                continue;
            }
            let namespace = if kind == "Role" {
                role["metadata"]["namespace"].as_str().unwrap().to_owned()
            } else {
                String::new()
            };
            for rule in role["rules"].as_array().unwrap() {
                rules.push(RbacRule {
                    namespace: namespace.clone(),
                    groups: strings(&rule["apiGroups"]),
                    resources: strings(&rule["resources"]),
                    names: strings(&rule["resourceNames"]),
                    verbs: strings(&rule["verbs"]),
                });
            }
        }
        assert!(
            !rules.is_empty(),
            "no rules bound to palisade in {}",
            path.display()
        );
        Self {
            rules,
            used: BTreeSet::new(),
        }
    }

    /// Every (rule, resource, verb) the rules grant that no request has used, as
    /// `verb group/resource [names] (in namespace)`.
    fn unused(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            for resource in &rule.resources {
                for verb in &rule.verbs {
                    if !self.used.contains(&(i, resource.clone(), verb.clone())) {
                        let scope = if rule.namespace.is_empty() {
                            String::new()
                        } else {
                            format!(" in {}", rule.namespace)
                        };
                        out.push(format!(
                            "{verb} {}/{resource} {:?}{scope}",
                            rule.groups.join(","),
                            rule.names
                        ));
                    }
                }
            }
        }
        out
    }

    fn allows(
        &mut self,
        verb: &str,
        group: &str,
        resource: &str,
        namespace: &str,
        name: Option<&str>,
    ) -> bool {
        let any = |list: &[String], item: &str| list.iter().any(|x| x == "*" || x == item);
        let resource_matches = |r: &String| {
            r == "*"
                || r == resource
                || r.strip_prefix("*/")
                    .is_some_and(|sub| resource.split_once('/').is_some_and(|(_, s)| s == sub))
        };
        let mut allowed = false;
        for (i, rule) in self.rules.iter().enumerate() {
            if (rule.namespace.is_empty() || rule.namespace == namespace)
                && any(&rule.groups, group)
                && any(&rule.verbs, verb)
                && (rule.names.is_empty()
                    || name.is_some_and(|n| rule.names.iter().any(|x| x == n)))
            {
                for r in rule.resources.iter().filter(|r| resource_matches(r)) {
                    self.used.insert((i, r.clone(), verb.to_owned()));
                    allowed = true;
                }
            }
        }
        allowed
    }
}

/// The real server's checks of a Secret that Palisade's writes meet: a `kubernetes.io/tls`
/// Secret holds `tls.crt` and `tls.key`, and `type` cannot change.
fn validate_secret(
    r: &Resource,
    name: &str,
    object: &Value,
    current: Option<&Value>,
) -> Result<(), ApiError> {
    if *r != SECRETS {
        return Ok(());
    }
    let invalid = |detail: String| {
        ApiError::new(
            422,
            "Invalid",
            format!("Secret \"{name}\" is invalid: {detail}"),
            ApiError::details(r, name),
        )
    };
    let kind = object["type"].as_str().unwrap_or("Opaque");
    if let Some(current) = current {
        let was = current["type"].as_str().unwrap_or("Opaque");
        if was != kind {
            return Err(invalid(format!(
                "type: Invalid value: \"{kind}\": field is immutable"
            )));
        }
    }
    if kind == "kubernetes.io/tls" {
        for key in ["tls.crt", "tls.key"] {
            if object["data"].get(key).is_none() {
                return Err(invalid(format!("data[{key}]: Required value")));
            }
        }
    }
    Ok(())
}

fn now() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn uid() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("5a4d1e00-0000-4000-8000-{n:012x}")
}

/// Paths of the fields a manager sets in `object`: every leaf under spec, data, and the labels
/// and annotations. Maps are descended into, lists are atomic, an empty map is a leaf.
fn leaf_paths(object: &Value) -> BTreeSet<Vec<String>> {
    fn walk(value: &Value, path: &mut Vec<String>, out: &mut BTreeSet<Vec<String>>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    path.push(k.clone());
                    walk(v, path, out);
                    path.pop();
                }
            }
            _ => {
                out.insert(path.clone());
            }
        }
    }
    let mut out = BTreeSet::new();
    let Some(map) = object.as_object() else {
        return out;
    };
    for (k, v) in map {
        match k.as_str() {
            "apiVersion" | "kind" | "status" => {}
            "metadata" => {
                for field in ["labels", "annotations"] {
                    if let Some(m) = v.get(field) {
                        walk(m, &mut vec![k.clone(), field.to_owned()], &mut out);
                    }
                }
            }
            _ => walk(v, &mut vec![k.clone()], &mut out),
        }
    }
    out
}

/// The keys of a list-map element segment, `k:{"id":"a"}`.
fn segment_keys(seg: &str) -> Option<Map<String, Value>> {
    serde_json::from_str(seg.strip_prefix("k:")?).ok()
}

fn matches_keys(element: &Value, keys: &Map<String, Value>) -> bool {
    keys.iter().all(|(k, v)| element.get(k) == Some(v))
}

fn child<'a>(v: &'a Value, seg: &str) -> Option<&'a Value> {
    match segment_keys(seg) {
        Some(keys) => v.as_array()?.iter().find(|e| matches_keys(e, &keys)),
        None => v.get(seg),
    }
}

fn child_mut<'a>(v: &'a mut Value, seg: &str) -> Option<&'a mut Value> {
    match segment_keys(seg) {
        Some(keys) => v
            .as_array_mut()?
            .iter_mut()
            .find(|e| matches_keys(e, &keys)),
        None => v.get_mut(seg),
    }
}

fn value_at<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(object, |v, k| child(v, k))
}

fn set_at(object: &mut Value, path: &[String], value: Value) {
    let mut node = object;
    for k in &path[..path.len() - 1] {
        if let Some(keys) = segment_keys(k) {
            if !node.is_array() {
                *node = json!([]);
            }
            let list = node.as_array_mut().unwrap();
            let at = match list.iter().position(|e| matches_keys(e, &keys)) {
                Some(i) => i,
                None => {
                    list.push(Value::Object(keys));
                    list.len() - 1
                }
            };
            node = &mut list[at];
        } else {
            let is_container = node.get(k).is_some_and(|v| v.is_object() || v.is_array());
            if !is_container {
                node[k] = json!({});
            }
            node = &mut node[k];
        }
    }
    node[&path[path.len() - 1]] = value;
}

/// Removes the field at `path`, and the maps (and list-map elements) it leaves empty, but
/// never the top level.
fn remove_at(object: &mut Value, path: &[String]) {
    if path.is_empty() {
        return;
    }
    let (last, parent_path) = (&path[path.len() - 1], &path[..path.len() - 1]);
    let Some(parent) = value_at_mut(object, parent_path) else {
        return;
    };
    match (parent, segment_keys(last)) {
        (Value::Array(list), Some(keys)) => list.retain(|e| !matches_keys(e, &keys)),
        (Value::Object(map), _) => {
            map.remove(last);
        }
        _ => return,
    }
    if path.len() > 2 {
        let parent = value_at(object, parent_path);
        let empty = match (parent, parent_path.last().and_then(|s| segment_keys(s))) {
            (Some(Value::Object(m)), Some(keys)) => m.keys().all(|k| keys.contains_key(k)),
            (Some(Value::Object(m)), None) => m.is_empty(),
            _ => false,
        };
        if empty {
            remove_at(object, parent_path);
        }
    }
}

fn value_at_mut<'a>(object: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(object, |v, k| child_mut(v, k))
}

/// Leaf paths of `value` (a `status`), following `schema`: lists declared
/// `x-kubernetes-list-type: map` are descended into per element, keyed by their map keys.
fn status_paths(
    value: &Value,
    schema: &Value,
    path: &mut Vec<String>,
    out: &mut BTreeSet<Vec<String>>,
) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                path.push(k.clone());
                status_paths(v, &schema["properties"][k], path, out);
                path.pop();
            }
        }
        Value::Array(list) if schema["x-kubernetes-list-type"] == "map" => {
            let keys: Vec<&str> = schema["x-kubernetes-list-map-keys"]
                .as_array()
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for element in list {
                let id: Map<String, Value> = keys
                    .iter()
                    .map(|k| ((*k).to_owned(), element[*k].clone()))
                    .collect();
                path.push(format!("k:{}", Value::Object(id)));
                status_paths(element, &schema["items"], path, out);
                path.pop();
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

fn fields_v1(fields: &BTreeSet<Vec<String>>) -> Value {
    let mut root = json!({});
    for path in fields {
        // A map of strings is owned as a whole too: "." beside its keys.
        if path.len() == 3 && path[0] == "metadata" {
            root["f:metadata"][format!("f:{}", path[1])]["."] = json!({});
        }
        let mut node = &mut root;
        for k in path {
            let name = if k.starts_with("k:") {
                k.clone()
            } else {
                format!("f:{k}")
            };
            node = node
                .as_object_mut()
                .unwrap()
                .entry(name)
                .or_insert_with(|| json!({}));
        }
    }
    root
}

impl Store {
    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn event(&self, r: &Resource, ns: &str, kind: &'static str, stored: &Stored) -> Event {
        Event {
            rv: self.rv,
            resource: *r,
            namespace: ns.to_owned(),
            kind,
            object: stored.render(r),
        }
    }

    fn create(
        &mut self,
        r: &Resource,
        ns: &str,
        name: &str,
        manager: &str,
        mut object: Value,
    ) -> Result<(Value, Vec<Event>), ApiError> {
        validate_secret(r, name, &object, None)?;
        if r.namespaced {
            match self
                .objects
                .get(&(NAMESPACES, String::new(), ns.to_owned()))
            {
                None => return Err(ApiError::not_found(&NAMESPACES, ns)),
                Some(n) if !n.object["metadata"]["deletionTimestamp"].is_null() => {
                    return Err(ApiError::new(
                        403,
                        "Forbidden",
                        format!(
                            "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                            r.qualified()
                        ),
                        ApiError::details(r, name),
                    ));
                }
                Some(_) => {}
            }
        }
        let key = (*r, ns.to_owned(), name.to_owned());
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(r, name));
        }
        if *r == NAMESPACES {
            object["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
        }
        // What the server defaults is nobody's field.
        let fields = leaf_paths(&object);
        if *r == NAMESPACES {
            object["spec"] = json!({"finalizers": ["kubernetes"]});
            object["status"] = json!({"phase": "Active"});
        }
        if *r == NETWORK_POLICIES && object.get("status").is_none() {
            object["status"] = json!({});
        }
        if r.status
            && let Some(m) = object.as_object_mut()
        {
            // Written only through /status.
            m.remove("status");
        }
        if *r == CRDS {
            object["status"] = json!({
                "conditions": [{"type": "Established", "status": "True", "reason": "InitialNamesAccepted"}],
                "acceptedNames": object["spec"]["names"].clone(),
                "storedVersions": [object["spec"]["versions"].as_array().and_then(|v| v.iter().find(|v| v["storage"] == true)).map(|v| v["name"].clone()).unwrap_or(Value::Null)],
            });
        }
        let rv = self.next_rv();
        let meta = object["metadata"].as_object_mut().unwrap();
        meta.remove("managedFields");
        meta.remove("resourceVersion");
        meta.remove("uid");
        if r.namespaced {
            meta.insert("namespace".into(), json!(ns));
        }
        meta.insert("uid".into(), json!(uid()));
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        if r.generation {
            meta.insert("generation".into(), json!(1));
        }
        meta.insert("creationTimestamp".into(), json!(now()));
        let object = reorder(r, object);
        let stored = Stored {
            object,
            managed: vec![Managed {
                manager: manager.to_owned(),
                operation: "Update",
                subresource: false,
                time: now(),
                fields,
            }],
        };
        let event = self.event(r, ns, "ADDED", &stored);
        let answer = stored.render(r);
        self.objects.insert(key, stored);
        Ok((answer, vec![event]))
    }

    fn update(
        &mut self,
        r: &Resource,
        ns: &str,
        name: &str,
        manager: &str,
        mut object: Value,
    ) -> Result<(Value, Vec<Event>), ApiError> {
        let key = (*r, ns.to_owned(), name.to_owned());
        let Some(current) = self.objects.get(&key).cloned() else {
            return Err(ApiError::not_found(r, name));
        };
        let sent_rv = object["metadata"]["resourceVersion"].as_str().unwrap_or("");
        if !sent_rv.is_empty() && sent_rv != current.object["metadata"]["resourceVersion"] {
            return Err(ApiError::conflict(r, name));
        }
        validate_secret(r, name, &object, Some(&current.object))?;
        // What the server owns stays the server's.
        for field in [
            "uid",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "namespace",
        ] {
            match current.object["metadata"].get(field) {
                Some(v) => object["metadata"][field] = v.clone(),
                None => {
                    if let Some(m) = object["metadata"].as_object_mut() {
                        m.remove(field);
                    }
                }
            }
        }
        if let Some(m) = object["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
        if *r == NAMESPACES {
            object["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            object["status"] = current.object["status"].clone();
        }
        if r.status || *r == CRDS {
            match current.object.get("status") {
                Some(st) => object["status"] = st.clone(),
                None => {
                    if let Some(m) = object.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        let old_fields = leaf_paths(&current.object);
        let new_fields = leaf_paths(&object);
        let changed: BTreeSet<Vec<String>> = new_fields
            .iter()
            .filter(|p| value_at(&object, p) != value_at(&current.object, p))
            .cloned()
            .collect();
        let removed: BTreeSet<Vec<String>> = old_fields.difference(&new_fields).cloned().collect();
        // The updater takes what it changed; a removed field is nobody's.
        let mut managed = current.managed.clone();
        for m in &mut managed {
            m.fields
                .retain(|p| !changed.contains(p) && !removed.contains(p));
        }
        match managed
            .iter_mut()
            .find(|m| m.manager == manager && m.operation == "Update" && !m.subresource)
        {
            Some(m) => m.fields.extend(changed.iter().cloned()),
            None if !changed.is_empty() => managed.push(Managed {
                manager: manager.to_owned(),
                operation: "Update",
                subresource: false,
                time: now(),
                fields: changed.clone(),
            }),
            None => {}
        }
        managed.retain(|m| !m.fields.is_empty());
        Ok(self.commit(r, ns, name, manager, "Update", current, object, managed))
    }

    /// Stores `object` with `managed` in place of `current`, unless nothing changed: then the
    /// object, its resourceVersion and generation stay as they are.
    #[allow(clippy::too_many_arguments)]
    fn commit(
        &mut self,
        r: &Resource,
        ns: &str,
        name: &str,
        manager: &str,
        operation: &str,
        current: Stored,
        mut object: Value,
        mut managed: Vec<Managed>,
    ) -> (Value, Vec<Event>) {
        let same_fields = managed.len() == current.managed.len()
            && managed.iter().zip(&current.managed).all(|(a, b)| {
                a.manager == b.manager && a.operation == b.operation && a.fields == b.fields
            });
        let mut compare = object.clone();
        compare["metadata"]["resourceVersion"] =
            current.object["metadata"]["resourceVersion"].clone();
        if same_fields && compare == current.object {
            return (current.render(r), Vec::new());
        }
        if let Some(m) = managed
            .iter_mut()
            .find(|m| m.manager == manager && m.operation == operation)
        {
            m.time = now();
        }
        let rv = self.next_rv();
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        if r.generation && object.get("spec") != current.object.get("spec") {
            let g = current.object["metadata"]["generation"]
                .as_i64()
                .unwrap_or(1);
            object["metadata"]["generation"] = json!(g + 1);
        }
        let stored = Stored {
            object: reorder(r, object),
            managed,
        };
        let event = self.event(r, ns, "MODIFIED", &stored);
        let answer = stored.render(r);
        self.objects
            .insert((*r, ns.to_owned(), name.to_owned()), stored);
        (answer, vec![event])
    }

    fn apply(
        &mut self,
        r: &Resource,
        ns: &str,
        name: &str,
        manager: &str,
        config: Value,
        force: bool,
    ) -> Result<(Value, Vec<Event>), ApiError> {
        let key = (*r, ns.to_owned(), name.to_owned());
        let Some(current) = self.objects.get(&key).cloned() else {
            self.create(r, ns, name, manager, config)?;
            // The creating manager applied: its entry says so.
            let stored = self.objects.get_mut(&key).unwrap();
            for m in &mut stored.managed {
                m.operation = "Apply";
            }
            let answer = stored.render(r);
            let event = Event {
                rv: self.rv,
                resource: *r,
                namespace: ns.to_owned(),
                kind: "ADDED",
                object: answer.clone(),
            };
            return Ok((answer, vec![event]));
        };
        let fields = leaf_paths(&config);
        self.apply_fields(r, ns, name, manager, current, &config, fields, force, false)
    }

    /// The part of server-side apply both the object and its `/status` share: `manager` sets
    /// `fields` (leaf paths) to their values in `config`. A field another manager owns with a
    /// different value is a conflict (409 with `FieldManagerConflict` causes) unless forced;
    /// forced, it changes owner. Fields this manager applied before and no longer does, that
    /// nobody else owns, are removed.
    #[allow(clippy::too_many_arguments)]
    fn apply_fields(
        &mut self,
        r: &Resource,
        ns: &str,
        name: &str,
        manager: &str,
        current: Stored,
        config: &Value,
        fields: BTreeSet<Vec<String>>,
        force: bool,
        subresource: bool,
    ) -> Result<(Value, Vec<Event>), ApiError> {
        let mut conflicts: Vec<(Vec<String>, String)> = Vec::new();
        for m in &current.managed {
            if m.manager == manager {
                continue;
            }
            for p in m.fields.intersection(&fields) {
                if value_at(&current.object, p) != value_at(config, p) {
                    conflicts.push((p.clone(), m.manager.clone()));
                }
            }
        }
        if !conflicts.is_empty() && !force {
            let causes: Vec<Value> = conflicts
                .iter()
                .map(|(p, m)| {
                    json!({
                        "reason": "FieldManagerConflict",
                        "message": format!("conflict with \"{m}\""),
                        "field": format!(".{}", p.join(".")),
                    })
                })
                .collect();
            let list: Vec<String> = conflicts
                .iter()
                .map(|(p, m)| format!("conflict with \"{m}\": .{}", p.join(".")))
                .collect();
            let message = if list.len() == 1 {
                format!("Apply failed with 1 conflict: {}", list[0])
            } else {
                format!(
                    "Apply failed with {} conflicts: {}",
                    list.len(),
                    list.join("\n")
                )
            };
            return Err(ApiError::new(
                409,
                "Conflict",
                message,
                json!({ "causes": causes }),
            ));
        }
        let mine = |m: &Managed| {
            m.manager == manager && m.operation == "Apply" && m.subresource == subresource
        };
        // Fields this manager applied before and no longer does, that nobody else owns, go.
        let previously: BTreeSet<Vec<String>> = current
            .managed
            .iter()
            .filter(|m| mine(m))
            .flat_map(|m| m.fields.iter().cloned())
            .collect();
        let others: BTreeSet<Vec<String>> = current
            .managed
            .iter()
            .filter(|m| !mine(m))
            .flat_map(|m| m.fields.iter().cloned())
            .collect();
        let mut object = current.object.clone();
        for p in previously
            .difference(&fields)
            .filter(|p| !others.contains(*p))
        {
            remove_at(&mut object, p);
        }
        for p in &fields {
            if let Some(v) = value_at(config, p) {
                set_at(&mut object, p, v.clone());
            }
        }
        // Ownership is shared where the values agree, and taken over where forced.
        let mut managed = current.managed.clone();
        for m in &mut managed {
            if mine(m) {
                m.fields = fields.clone();
            } else {
                m.fields.retain(|p| !conflicts.iter().any(|(c, _)| c == p));
            }
        }
        if !managed.iter().any(mine) {
            managed.push(Managed {
                manager: manager.to_owned(),
                operation: "Apply",
                subresource,
                time: now(),
                fields: fields.clone(),
            });
        }
        managed.retain(|m| !m.fields.is_empty());
        Ok(self.commit(r, ns, name, manager, "Apply", current, object, managed))
    }

    /// The kinds the stored CustomResourceDefinitions define, after a change to them.
    fn refresh_defined(&mut self) {
        self.defined = self
            .objects
            .iter()
            .filter(|(k, _)| k.0 == CRDS)
            .flat_map(|(_, s)| crd_resources(&s.object))
            .collect();
    }

    /// Server-side apply of `config.status` through the `/status` subresource: only status
    /// fields, owned per manager; lists the CRD's schema declares `x-kubernetes-list-type: map`
    /// are merged per element, so that managers can own one element each.
    fn apply_status(
        &mut self,
        r: &Resource,
        ns: &str,
        name: &str,
        manager: &str,
        config: Value,
        force: bool,
    ) -> Result<(Value, Vec<Event>), ApiError> {
        let key = (*r, ns.to_owned(), name.to_owned());
        let Some(current) = self.objects.get(&key).cloned() else {
            return Err(ApiError::not_found(r, name));
        };
        let schema = self.schema(r).cloned().unwrap_or(Value::Null);
        let mut fields = BTreeSet::new();
        if let Some(status) = config.get("status") {
            status_paths(
                status,
                &schema["properties"]["status"],
                &mut vec!["status".to_owned()],
                &mut fields,
            );
        }
        self.apply_fields(r, ns, name, manager, current, &config, fields, force, true)
    }

    fn delete(
        &mut self,
        r: &Resource,
        ns: &str,
        name: &str,
    ) -> Result<(Value, Vec<Event>), ApiError> {
        let key = (*r, ns.to_owned(), name.to_owned());
        let Some(current) = self.objects.get(&key).cloned() else {
            return Err(ApiError::not_found(r, name));
        };
        let mut events = Vec::new();
        if *r == NAMESPACES {
            // Terminating first, then what it holds, then itself.
            let mut terminating = current.clone();
            let rv = self.next_rv();
            terminating.object["metadata"]["resourceVersion"] = json!(rv.to_string());
            terminating.object["metadata"]["deletionTimestamp"] = json!(now());
            terminating.object["status"]["phase"] = json!("Terminating");
            events.push(self.event(r, ns, "MODIFIED", &terminating));
            let answer = terminating.render(r);
            let contained: Vec<Key> = self
                .objects
                .keys()
                .filter(|k| k.0.namespaced && k.1 == name)
                .cloned()
                .collect();
            for k in contained {
                let (_, mut e) = self.delete(&k.0, &k.1, &k.2)?;
                events.append(&mut e);
            }
            self.objects.remove(&key);
            let rv = self.next_rv();
            terminating.object["metadata"]["resourceVersion"] = json!(rv.to_string());
            events.push(self.event(r, ns, "DELETED", &terminating));
            return Ok((answer, events));
        }
        if *r == CRDS {
            // Its objects go first, then the kind stops being served.
            let kinds: Vec<Resource> = crd_resources(&current.object)
                .into_iter()
                .map(|(d, _)| d.stored())
                .collect();
            let contained: Vec<Key> = self
                .objects
                .keys()
                .filter(|k| kinds.contains(&k.0))
                .cloned()
                .collect();
            for k in contained {
                let (_, mut e) = self.delete(&k.0, &k.1, &k.2)?;
                events.append(&mut e);
            }
        }
        self.objects.remove(&key);
        let rv = self.next_rv();
        let mut gone = current;
        gone.object["metadata"]["resourceVersion"] = json!(rv.to_string());
        events.push(self.event(r, ns, "DELETED", &gone));
        let mut details = ApiError::details(r, name);
        details["uid"] = gone.object["metadata"]["uid"].clone();
        Ok((
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
            events,
        ))
    }
}

/// The key order of the real server: kind, apiVersion, metadata, spec, status.
fn reorder(r: &Resource, object: Value) -> Value {
    let Value::Object(mut map) = object else {
        return object;
    };
    let mut out = Map::new();
    out.insert("kind".into(), json!(r.kind));
    out.insert("apiVersion".into(), json!(r.api_version()));
    map.remove("kind");
    map.remove("apiVersion");
    for k in ["metadata", "spec"] {
        if let Some(v) = map.remove(k) {
            out.insert(k.into(), v);
        }
    }
    let status = map.remove("status");
    out.extend(map);
    if let Some(s) = status {
        out.insert("status".into(), s);
    }
    Value::Object(out)
}

// ---- HTTP ----

fn respond(code: u16, body: &Value) -> Response {
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [("content-type", "application/json")],
        serde_json::to_vec(body).unwrap(),
    )
        .into_response()
}

fn error(e: ApiError) -> Response {
    respond(e.code, &e.body)
}

/// Which resource and object a path names.
struct Target {
    /// The kind in the version the path names.
    resource: Resource,
    /// The namespace of the path (empty for cluster-wide).
    namespace: String,
    name: Option<String>,
    /// The path ends in `/status`.
    status: bool,
}

enum Route {
    /// `/api`: the core versions.
    Core,
    /// `/apis`: every group.
    Groups,
    /// `/apis/<group>`.
    Group(&'static str),
    Discovery(&'static str, &'static str),
    Object(Target),
}

fn route(path: &str, resources: &[Resource]) -> Option<Route> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api"] => return Some(Route::Core),
        ["apis"] => return Some(Route::Groups),
        ["apis", g] => {
            return resources
                .iter()
                .find(|r| r.group == *g)
                .map(|r| Route::Group(r.group));
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let known = resources
        .iter()
        .copied()
        .find(|r| r.group == group && r.version == version)?;
    let find = |plural: &str| {
        resources
            .iter()
            .copied()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    };
    let target = match rest {
        [] => return Some(Route::Discovery(known.group, known.version)),
        [plural] => Target {
            resource: find(plural)?,
            namespace: String::new(),
            name: None,
            status: false,
        },
        ["namespaces", ns, plural] if group.is_empty() || find(plural).is_some() => Target {
            resource: find(plural)?,
            namespace: (*ns).to_owned(),
            name: None,
            status: false,
        },
        ["namespaces", ns, plural, name] => Target {
            resource: find(plural)?,
            namespace: (*ns).to_owned(),
            name: Some((*name).to_owned()),
            status: false,
        },
        ["namespaces", ns, plural, name, "status"] => Target {
            resource: find(plural).filter(|r| r.status)?,
            namespace: (*ns).to_owned(),
            name: Some((*name).to_owned()),
            status: true,
        },
        [plural, name, "status"] if find(plural).is_some_and(|r| r.status) => Target {
            resource: find(plural)?,
            namespace: String::new(),
            name: Some((*name).to_owned()),
            status: true,
        },
        [plural, name] => Target {
            resource: find(plural)?,
            namespace: String::new(),
            name: Some((*name).to_owned()),
            status: false,
        },
        _ => return None,
    };
    Some(Route::Object(target))
}

fn query(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(shared: Arc<Shared>, req: hyper::Request<hyper::body::Incoming>) -> Response {
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(ApiError::bad_request("cannot read the body".into())),
    };
    shared.requests.lock().unwrap().push(format!(
        "{} {}",
        parts.method,
        parts.uri.path_and_query().map_or("", |p| p.as_str())
    ));
    dispatch(&shared, parts.method, parts.uri, parts.headers, body).await
}

async fn dispatch(
    shared: &Arc<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if token.is_empty() {
        return error(ApiError::new(
            401,
            "Unauthorized",
            "Unauthorized".into(),
            Value::Null,
        ));
    }
    if shared.store.lock().unwrap().failing_tokens.contains(token) {
        return error(ApiError::new(
            500,
            "InternalError",
            "Internal error occurred: the stand-in was told to fail this client".into(),
            Value::Null,
        ));
    }
    let q = query(&uri);
    let watching = q.get("watch").is_some_and(|w| w == "1" || w == "true");
    if q.contains_key("fieldSelector") || (watching && q.contains_key("labelSelector")) {
        return error(ApiError::bad_request(
            "the stand-in implements label selectors on lists only, and no field selectors".into(),
        ));
    }
    if let Some(selector) = q.get("labelSelector")
        && selector
            .split(',')
            .any(|t| t.split_once('=').is_none() || t.contains("!="))
    {
        return error(ApiError::bad_request(
            "the stand-in implements only key=value label selectors".into(),
        ));
    }
    let resources = shared.store.lock().unwrap().served();
    let Some(route) = route(uri.path(), &resources) else {
        return respond(
            404,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "the server could not find the requested resource", "reason": "NotFound", "details": {}, "code": 404}),
        );
    };
    let target = match route {
        Route::Discovery(group, version) => {
            return respond(200, &discovery(&resources, group, version));
        }
        Route::Core => {
            return respond(
                200,
                &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]}),
            );
        }
        Route::Groups => {
            let mut groups: Vec<Value> = Vec::new();
            for r in resources.iter().filter(|r| !r.group.is_empty()) {
                if !groups.iter().any(|g| g["name"] == r.group) {
                    groups.push(api_group(r));
                }
            }
            return respond(
                200,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            );
        }
        Route::Group(group) => {
            let r = resources.iter().find(|r| r.group == group).unwrap();
            let mut g = api_group(r);
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            return respond(200, &g);
        }
        Route::Object(t) => t,
    };
    let requested = target.resource;
    let forbidden = (requested.group.to_owned(), requested.plural.to_owned());
    let verb = match (&method, &target.name) {
        (&Method::GET, None) if watching => "watch",
        (&Method::GET, None) => "list",
        (&Method::GET, Some(_)) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, None) => "deletecollection",
        (&Method::DELETE, Some(_)) => "delete",
        _ => "access",
    };
    let resource = if target.status {
        format!("{}/status", requested.plural)
    } else {
        requested.plural.to_owned()
    };
    let denied = {
        let mut store = shared.store.lock().unwrap();
        // A server-side apply that creates its object needs create as well as patch, as on
        // the real server.
        let creates = method == Method::PATCH
            && !target.status
            && target.name.as_ref().is_some_and(|name| {
                !store.objects.contains_key(&(
                    requested.stored(),
                    target.namespace.clone(),
                    name.clone(),
                ))
            });
        let verbs: &[&str] = if creates { &[verb, "create"] } else { &[verb] };
        store.forbidden.contains(&forbidden)
            || store.rbac.as_mut().is_some_and(|rbac| {
                !verbs.iter().all(|verb| {
                    rbac.allows(
                        verb,
                        requested.group,
                        &resource,
                        &target.namespace,
                        target.name.as_deref(),
                    )
                })
            })
    };
    if denied {
        // The real server's wording.
        let scope = if target.namespace.is_empty() {
            "at the cluster scope".to_owned()
        } else {
            format!("in the namespace \"{}\"", target.namespace)
        };
        let what = if requested.group.is_empty() {
            requested.plural.to_owned()
        } else {
            format!("{}.{}", requested.plural, requested.group)
        };
        return error(ApiError::new(
            403,
            "Forbidden",
            format!(
                "{what} is forbidden: User \"system:serviceaccount:palisade-system:palisade\" cannot {verb} resource \"{resource}\" in API group \"{}\" {scope}",
                requested.group
            ),
            json!({"group": requested.group, "kind": requested.plural}),
        ));
    }
    let r = requested.stored();
    let target = Target {
        resource: r,
        ..target
    };
    let respond = |code: u16, body: &Value| respond(code, &in_version(&requested, body.clone()));
    if target.status && method != Method::PATCH && method != Method::GET {
        return error(ApiError::new(
            405,
            "MethodNotAllowed",
            "the stand-in implements only get and server-side apply on /status".into(),
            Value::Null,
        ));
    }
    match (method, &target.name) {
        (Method::GET, None) if q.get("watch").is_some_and(|w| w == "1" || w == "true") => {
            watch_response(shared.clone(), &target, requested, &q)
        }
        (Method::GET, None) => list(shared, &target, requested, &q),
        (Method::GET, Some(name)) => {
            let store = shared.store.lock().unwrap();
            match store
                .objects
                .get(&(r, target.namespace.clone(), name.clone()))
            {
                Some(s) => respond(200, &s.render(&r)),
                None => error(ApiError::not_found(&r, name)),
            }
        }
        (Method::POST, None) => {
            let Ok(mut object) = serde_json::from_slice::<Value>(&body) else {
                return error(ApiError::bad_request("the body is not JSON".into()));
            };
            if r.namespaced {
                object["metadata"]["namespace"] = json!(target.namespace);
            }
            let manager = q
                .get("fieldManager")
                .cloned()
                .unwrap_or_else(|| agent(&headers));
            let Some((ns, name)) = identity(&r, &object).ok() else {
                return error(identity(&r, &object).unwrap_err());
            };
            match mutate(shared, |s| s.create(&r, &ns, &name, &manager, object)) {
                Ok(v) => respond(201, &v),
                Err(e) => error(e),
            }
        }
        (Method::PUT, Some(name)) => {
            let Ok(mut object) = serde_json::from_slice::<Value>(&body) else {
                return error(ApiError::bad_request("the body is not JSON".into()));
            };
            if object["metadata"]["name"].as_str() != Some(name) {
                return error(ApiError::bad_request(
                    "the name of the body does not match the URL".into(),
                ));
            }
            if r.namespaced {
                object["metadata"]["namespace"] = json!(target.namespace);
            }
            let manager = q
                .get("fieldManager")
                .cloned()
                .unwrap_or_else(|| agent(&headers));
            let ns = target.namespace.clone();
            match mutate(shared, |s| s.update(&r, &ns, name, &manager, object)) {
                Ok(v) => respond(200, &v),
                Err(e) => error(e),
            }
        }
        (Method::PATCH, Some(name)) => {
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if content_type != "application/apply-patch+yaml" {
                return error(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!("the stand-in implements only server-side apply, not {content_type}"),
                    Value::Null,
                ));
            }
            let Some(manager) = q.get("fieldManager").cloned() else {
                return error(ApiError::bad_request(
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into(),
                ));
            };
            let config: Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(_) => match yaml_serde::from_slice(&body) {
                    Ok(v) => v,
                    Err(e) => {
                        return error(ApiError::bad_request(format!("error decoding YAML: {e}")));
                    }
                },
            };
            if config["metadata"]["name"].as_str() != Some(name) {
                return error(ApiError::bad_request(
                    "the name of the body does not match the URL".into(),
                ));
            }
            if Resource::of(&config, &resources) != Some(requested) {
                return error(ApiError::bad_request(
                    "apiVersion and kind must match the URL".into(),
                ));
            }
            let force = q.get("force").is_some_and(|f| f == "true");
            if target.status {
                let ns = target.namespace.clone();
                return match mutate(shared, |s| {
                    s.apply_status(&r, &ns, name, &manager, config, force)
                }) {
                    Ok(v) => respond(200, &v),
                    Err(e) => error(e),
                };
            }
            let ns = target.namespace.clone();
            let existed =
                shared
                    .store
                    .lock()
                    .unwrap()
                    .objects
                    .contains_key(&(r, ns.clone(), name.clone()));
            match mutate(shared, |s| s.apply(&r, &ns, name, &manager, config, force)) {
                Ok(v) => respond(if existed { 200 } else { 201 }, &v),
                Err(e) => error(e),
            }
        }
        (Method::DELETE, Some(name)) => {
            let ns = target.namespace.clone();
            match mutate(shared, |s| s.delete(&r, &ns, name)) {
                Ok(v) => respond(200, &v),
                Err(e) => error(e),
            }
        }
        _ => error(ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".into(),
            Value::Null,
        )),
    }
}

fn agent(headers: &HeaderMap) -> String {
    headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split('/').next())
        .unwrap_or("unknown")
        .to_owned()
}

/// An APIGroup entry: the stand-in serves one version per group.
fn api_group(r: &Resource) -> Value {
    let version = json!({"groupVersion": r.api_version(), "version": r.version});
    json!({"name": r.group, "versions": [version.clone()], "preferredVersion": version})
}

fn discovery(served: &[Resource], group: &str, version: &str) -> Value {
    let resources: Vec<Value> = served
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .map(|r| {
            json!({
                "name": r.plural,
                "singularName": r.kind.to_lowercase(),
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            })
        })
        .collect();
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

fn list(
    shared: &Shared,
    target: &Target,
    requested: Resource,
    q: &BTreeMap<String, String>,
) -> Response {
    let r = target.resource;
    let store = shared.store.lock().unwrap();
    let (list_rv, start) = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(token.trim_end_matches('='))
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
            match decoded {
                Some(t) => (
                    t["rv"].as_u64().unwrap_or(store.rv),
                    t["start"].as_str().unwrap_or("").to_owned(),
                ),
                None => {
                    return error(ApiError::bad_request("continue key is not valid".into()));
                }
            }
        }
        None => (store.rv, String::new()),
    };
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let matching: Vec<(&Key, &Stored)> = store
        .objects
        .iter()
        .filter(|(k, _)| k.0 == r && (target.namespace.is_empty() || k.1 == target.namespace))
        .filter(|(k, _)| start.is_empty() || sort_key(k) > start)
        .filter(|(_, stored)| {
            q.get("labelSelector").is_none_or(|selector| {
                selector.split(',').all(|term| {
                    let (key, value) = term.split_once('=').unwrap_or((term, ""));
                    let value = value.trim_start_matches('=');
                    stored.object["metadata"]["labels"][key] == value
                })
            })
        })
        .collect();
    let take = limit.unwrap_or(usize::MAX).min(matching.len());
    let items: Vec<Value> = matching[..take]
        .iter()
        .map(|(_, s)| {
            let mut item = s.render(&r);
            let m = item.as_object_mut().unwrap();
            m.remove("kind");
            m.remove("apiVersion");
            item
        })
        .collect();
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if take < matching.len() {
        let last = sort_key(matching[take - 1].0);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(
                &json!({"v": "meta.k8s.io/v1", "rv": list_rv, "start": format!("{last}\u{0}")}),
            )
            .unwrap(),
        );
        metadata["continue"] = json!(token);
        metadata["remainingItemCount"] = json!(matching.len() - take);
    }
    respond(
        200,
        &json!({"kind": format!("{}List", r.kind), "apiVersion": requested.api_version(), "metadata": metadata, "items": items}),
    )
}

/// Pages are ordered as etcd orders keys: by namespace, then name.
fn sort_key(k: &Key) -> String {
    if k.1.is_empty() {
        k.2.clone()
    } else {
        format!("{}/{}", k.1, k.2)
    }
}

fn watch_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap();
    line.push(b'\n');
    Bytes::from(line)
}

fn watch_response(
    shared: Arc<Shared>,
    target: &Target,
    requested: Resource,
    q: &BTreeMap<String, String>,
) -> Response {
    let r = target.resource;
    let watch_line =
        move |kind: &str, object: &Value| watch_line(kind, &in_version(&requested, object.clone()));
    let ns = target.namespace.clone();
    let bookmarks = q
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true" || b == "1");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1024);
    let matches = move |e: &Event| e.resource == r && (ns.is_empty() || e.namespace == ns);
    let (backlog, mut live, mut last_rv) = {
        let store = shared.store.lock().unwrap();
        let requested = q.get("resourceVersion").cloned().unwrap_or_default();
        let live = shared.events.subscribe();
        if requested.is_empty() || requested == "0" {
            // From "any": the current state as ADDED events, then what follows.
            let backlog: Vec<Bytes> = store
                .objects
                .iter()
                .filter(|(k, _)| {
                    k.0 == r && (target.namespace.is_empty() || k.1 == target.namespace)
                })
                .map(|(_, s)| watch_line("ADDED", &s.render(&r)))
                .collect();
            (backlog, live, store.rv)
        } else {
            let Ok(from) = requested.parse::<u64>() else {
                return error(ApiError::bad_request(format!(
                    "invalid resourceVersion {requested}"
                )));
            };
            if from < store.compacted {
                let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": format!("too old resource version: {from} ({})", store.compacted + 1), "reason": "Expired", "code": 410});
                let line = watch_line("ERROR", &status);
                return (
                    StatusCode::OK,
                    [("content-type", "application/json")],
                    Body::from(line),
                )
                    .into_response();
            }
            let backlog = store
                .history
                .iter()
                .filter(|e| e.rv > from && matches(e))
                .map(|e| watch_line(e.kind, &e.object))
                .collect();
            (backlog, live, store.rv.max(from))
        }
    };
    let interval = *shared.bookmark_interval.lock().unwrap();
    let mut epoch = shared.watch_epoch.subscribe();
    epoch.mark_unchanged();
    tokio::spawn(async move {
        for line in backlog {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let end = tokio::time::sleep(timeout);
        tokio::pin!(end);
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut end => return,
                _ = epoch.changed() => return,
                _ = tick.tick(), if bookmarks => {
                    let mut mark = json!({"kind": r.kind, "apiVersion": r.api_version(), "metadata": {"resourceVersion": last_rv.to_string(), "creationTimestamp": null}, "spec": {}});
                    // The zero value of the kind, as the real server sends it.
                    if r == NETWORK_POLICIES {
                        mark["spec"] = json!({"podSelector": {}});
                    }
                    if r != LEASES {
                        mark["status"] = json!({});
                    }
                    if tx.send(watch_line("BOOKMARK", &mark)).await.is_err() { return; }
                }
                event = live.recv() => match event {
                    Ok(e) => {
                        last_rv = last_rv.max(e.rv);
                        if matches(&e) && tx.send(watch_line(e.kind, &e.object)).await.is_err() {
                            return;
                        }
                    }
                    // Too slow a reader: end the watch; the client resumes from its last version.
                    Err(_) => return,
                },
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}
