//! Palisade against the stand-in API server, and what a cluster test sets up: namespaces, the
//! Gatekeeper CRDs and the webhook configurations of `manifests/base/`, and a kubelet that
//! projects Palisade's serving Secret into its certificate directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::apiserver::{ApiServer, SECRETS};
use crate::fixtures::repo_path;
use crate::harness::{TestServer, eventually, install_crypto};
use crate::https::http_get;
use crate::volume::project_files;

/// A kube client for the stand-in, from the kubeconfig it writes (CA, server name, token).
pub async fn kube_client(api: &ApiServer, token: &str) -> kube::Client {
    install_crypto();
    let kubeconfig = kube::config::Kubeconfig::read_from(api.kubeconfig(token)).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

const LEASE_FLAGS: [&str; 6] = [
    "--lease-duration",
    "2s",
    "--lease-renew-deadline",
    "1500ms",
    "--lease-retry-period",
    "200ms",
];

/// `palisade serve` with the default bundle, connected to `api` with `token` as its identity.
pub async fn palisade(api: &ApiServer, token: &str, extra: &[&str]) -> TestServer {
    let server = start_palisade(api, token, extra).await;
    let ready = eventually(Duration::from_secs(10), || async {
        http_get(server.health, "/readyz").await.0 == 200
    })
    .await;
    assert!(
        ready,
        "palisade did not become ready: {:?}",
        http_get(server.health, "/readyz").await
    );
    server
}

/// Starts Palisade on the stand-in without waiting for it to be ready.
pub async fn start_palisade(api: &ApiServer, token: &str, extra: &[&str]) -> TestServer {
    start_palisade_in(api, token, tempfile::tempdir().unwrap(), extra).await
}

/// Palisade connected to the stand-in as the replica `token`, its certificates in `dir`.
pub async fn start_palisade_in(
    api: &ApiServer,
    token: &str,
    dir: tempfile::TempDir,
    extra: &[&str],
) -> TestServer {
    start_palisade_with(api, token, dir, &repo_path("policies"), extra).await
}

/// As [`start_palisade_in`], with the bundle at `policies`.
pub async fn start_palisade_with(
    api: &ApiServer,
    token: &str,
    dir: tempfile::TempDir,
    policies: &Path,
    extra: &[&str],
) -> TestServer {
    // Palisade runs in its own namespace, which holds its Lease.
    let _ = api.create(namespace("palisade-system", json!({})));
    let kubeconfig = api.kubeconfig(token).display().to_string();
    let policies = policies.display().to_string();
    let mut args = vec![
        "--kubeconfig",
        kubeconfig.as_str(),
        "--policies",
        policies.as_str(),
        "--pod-name",
        token,
        "--own-namespace",
        "palisade-system",
    ];
    args.extend_from_slice(&LEASE_FLAGS);
    args.extend_from_slice(extra);
    TestServer::start_in(dir, &args).await
}

pub fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

/// The Gatekeeper CRDs of `manifests/base/gatekeeper-crds.yaml`, applied as `kubectl apply` would.
pub fn install_gatekeeper_crds(api: &ApiServer) {
    let path = repo_path("manifests/base/gatekeeper-crds.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    for doc in palisade_core::manifest::parse_str(&text, Path::new("gatekeeper-crds.yaml")).unwrap()
    {
        api.apply("kubectl", doc.value, false).unwrap();
    }
}

/// Applies the webhook configurations of manifests/base/webhooks.yaml, as kubectl would.
pub fn apply_webhook_configurations(api: &ApiServer) {
    let path = repo_path("manifests/base/webhooks.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    for doc in palisade_core::manifest::parse_str(&text, &path).unwrap() {
        api.create(doc.value).unwrap();
    }
}

/// Standard base64, decoded; panics with the text otherwise.
pub fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_else(|e| panic!("not base64 ({e}): {s}"))
}

/// A Secret's `data[key]`, decoded.
pub fn secret_file(secret: &Value, key: &str) -> Vec<u8> {
    b64(secret["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no data[{key}] in {secret}")))
}

/// Copies the serving Secret into `dir` whenever it changes, as the kubelet does for a mounted
/// Secret (much faster than a kubelet, which the rotation overlap allows for).
pub fn fake_kubelet(api: Arc<ApiServer>, dir: PathBuf) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen = String::new();
        let mut version = 0;
        loop {
            if let Ok(secret) = api.get(&SECRETS, "palisade-system", "palisade-tls") {
                let rv = secret["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                if rv != seen {
                    version += 1;
                    let files: Vec<(&str, Vec<u8>)> = ["tls.crt", "tls.key", "ca.crt"]
                        .into_iter()
                        .map(|k| (k, secret_file(&secret, k)))
                        .collect();
                    let refs: Vec<(&str, &[u8])> =
                        files.iter().map(|(k, v)| (*k, v.as_slice())).collect();
                    project_files(&dir, &format!("v{version}"), &refs);
                    seen = rv;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}
