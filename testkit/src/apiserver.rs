//! A STAND-IN FOR THE KUBERNETES API SERVER, for tests only. It is not a Kubernetes API server.
//!
//! No API server can be installed on the build machines, so the cluster-facing code is tested with
//! the real `kube` client against this in-process imitation. It speaks HTTPS (its own CA, a bearer
//! token, as a kubeconfig names them) and implements only what Palisade depends on, for
//! Namespaces, NetworkPolicies, Ingresses, Leases, Pods, the workload kinds (apps, batch),
//! Secrets, the webhook configurations, ValidatingAdmissionPolicies and their bindings, and
//! PolicyReports, with the real API's semantics where the code relies on them. `tests/conformance.rs` (beside it, in this crate) replays the answers a real kube-apiserver
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
//!   resourceVersion), delete (409 when its uid or resourceVersion precondition fails), and
//!   server-side apply (`application/apply-patch+yaml`, field managers, conflicts with
//!   `FieldManagerConflict` causes, `force`). Field ownership is tracked
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
//! - admissionregistration.k8s.io/v1 ValidatingAdmissionPolicies and bindings, cluster-scoped,
//!   as a 1.30+ server serves them (every verb above, apply with field managers, label
//!   selectors on lists); a test plays an older server, which has no v1 kinds, with
//!   `serve_validating_admission_policies(false)`: they leave discovery and every request on
//!   them gets the real 404 for a resource not served. Unlike the real one, the stand-in neither
//!   type-checks their CEL nor evaluates them;
//! - authorisation: every request is held to the RBAC rules manifests/base/rbac.yaml binds to
//!   Palisade's ServiceAccount (as the real authorizer reads them: groups, resources and
//!   `*/status` forms, verbs, resourceNames; discovery always allowed), with the real 403
//!   wording, so every cluster test shows that the shipped RBAC allows what Palisade does. A
//!   test that plays an administrator lifts it with `enforce_rbac(false)`; one that runs an
//!   overlay adds that overlay's rules with `enforce_rbac_with`.
//!
//! Not implemented, because Palisade does not use them: other label selectors, label selectors on
//! watches, and field selectors (refused with 400, so that a test would notice), strategic-merge
//! and JSON patches (415), generateName, admission, authentication (any bearer token is
//! Palisade's ServiceAccount), PUT on `/status`, kinds other than Namespaces, NetworkPolicies,
//! Ingresses, Leases, Pods, the workload kinds, Secrets, the webhook configurations, the
//! ValidatingAdmissionPolicies and bindings, the PolicyReports, CRDs and the kinds CRDs define.//!
//! Its parts: `resources` (the kinds served), `store` (objects, history, create, update,
//! delete), `apply` (server-side apply and field ownership), `rbac` (authorisation) and `http`
//! (routing, then one handler per verb; watches).

mod apply;
mod http;
mod rbac;
mod resources;
mod store;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;

pub use resources::{
    CLUSTER_POLICY_REPORTS, CRDS, CRONJOBS, DAEMONSETS, DEPLOYMENTS, INGRESSES, JOBS, LEASES,
    MUTATING_WEBHOOKS, NAMESPACES, NETWORK_POLICIES, POD_TEMPLATES, PODS, POLICY_REPORTS,
    REPLICASETS, REPLICATION_CONTROLLERS, Resource, SECRETS, STATEFULSETS,
    VALIDATING_ADMISSION_POLICIES, VALIDATING_ADMISSION_POLICY_BINDINGS, VALIDATING_WEBHOOKS,
};
pub use store::ApiError;

use http::handle;
use rbac::{Rbac, RbacRule};
use resources::{CRD_GROUPS, in_version};
use store::{Event, Store, identity};

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
                admission_policies: true,
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

    /// Serves admissionregistration.k8s.io/v1 ValidatingAdmissionPolicies and bindings, as
    /// Kubernetes 1.30 and later do (the default), or not, as before 1.30: discovery then leaves
    /// them out and every request on them gets the real server's 404 for a resource it does
    /// not serve.
    pub fn serve_validating_admission_policies(&self, serve: bool) {
        self.shared.store.lock().unwrap().admission_policies = serve;
    }

    /// Holds every client to the rules of manifests/base/rbac.yaml and of these files of the
    /// repository (an overlay's RBAC), as if applied together; the usage record starts afresh.
    pub fn enforce_rbac_with(&self, files: &[&str]) {
        let mut all = vec!["manifests/base/rbac.yaml"];
        all.extend_from_slice(files);
        self.shared.store.lock().unwrap().rbac = Some(Rbac::from_files(&all));
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
