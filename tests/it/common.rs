//! Test harness: starts the real server on ephemeral ports with certificates generated at test
//! time, and calls it the way the API server does — HTTPS trusting only the generated CA, over
//! HTTP/1.1 or HTTP/2, with captured AdmissionReview bodies.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use palisade::cli::{Cli, Command};
use palisade::server::Server;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");

/// A path inside the repository.
pub fn repo_path(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Runs every gator Suite under `rel` (as `palisade verify` does) and fails on any failed case.
pub fn passing_suites(
    rel: &str,
    options: &palisade::policy::EngineOptions,
) -> Vec<palisade::suite::CaseResult> {
    let results = palisade::suite::run_path(&repo_path(rel), options).unwrap();
    let failures: Vec<String> = results
        .iter()
        .filter(|r| matches!(r.outcome, palisade::suite::Outcome::Fail(_)))
        .map(|r| r.to_string())
        .collect();
    assert!(failures.is_empty(), "{rel}: {failures:#?}");
    results
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(FIXTURES).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A captured review from tests/data/admission, edited.
pub fn edited_review(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut v: serde_json::Value =
        serde_json::from_slice(&fixture(&format!("admission/{name}"))).unwrap();
    edit(&mut v);
    serde_json::to_vec(&v).unwrap()
}

/// Moves a review and its object to namespace `ns`.
pub fn in_namespace(review: &mut serde_json::Value, ns: &str) {
    review["request"]["namespace"] = ns.into();
    review["request"]["object"]["metadata"]["namespace"] = ns.into();
}

pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A server running in this process; stops (and drains) when `stop` is called or on drop.
pub struct TestServer {
    pub https: SocketAddr,
    pub health: SocketAddr,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<bool>>,
}

impl TestServer {
    /// Starts `palisade serve` with a fresh dev CA in a temporary directory, plus `extra` flags.
    pub async fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, extra).await
    }

    pub async fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Self {
        install_crypto();
        let cert = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");
        let mut args = vec![
            "palisade".to_owned(),
            "serve".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--health-listen".into(),
            "127.0.0.1:0".into(),
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
            "--cert-poll-interval".into(),
            "200ms".into(),
        ];
        if !extra.contains(&"--policies") {
            // An empty bundle unless the test brings one.
            let policies = dir.path().join("policies");
            std::fs::create_dir_all(&policies).unwrap();
            args.extend(["--policies".into(), policies.display().to_string()]);
        }
        if !extra.contains(&"--kubeconfig") {
            // Whatever cluster the machine is configured for, tests without one use files only.
            args.push("--no-cluster".into());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let Command::Serve(serve) = Cli::try_parse_from(&args).unwrap().command else {
            unreachable!()
        };
        let server: Server = serve.load().await.unwrap();
        let https = server.https_addr().unwrap();
        let health = server.health_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
        Self {
            https,
            health,
            dir,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn ca(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("ca.crt")).unwrap()
    }

    pub fn client(&self) -> Client {
        Client::new(self.https, &[&self.ca()])
    }

    /// Begins the shutdown (as SIGTERM does) without waiting for it: with `--shutdown-delay`,
    /// the server is unready and still serving for the delay.
    pub fn begin_stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Stops accepting and drains; returns whether every connection finished in time.
    pub async fn stop(mut self) -> bool {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.take().unwrap().await.unwrap()
    }

    pub async fn metrics(&self) -> String {
        http_get(self.health, "/metrics").await.1
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Reads one value from the OpenMetrics text, e.g. `palisade_tls_reloads_total`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The sum of every series of a metric family (any labels), `None` when it has none.
pub fn metric_total(text: &str, family: &str) -> Option<f64> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(family)?;
            let value = if rest.starts_with('{') {
                rest.rsplit_once("} ")?.1
            } else {
                rest.strip_prefix(' ')?
            };
            value.parse::<f64>().ok()
        })
        .reduce(|a, b| a + b)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Http1,
    Http2,
}

impl Proto {
    pub fn alpn(self) -> &'static [u8] {
        match self {
            Proto::Http1 => b"http/1.1",
            Proto::Http2 => b"h2",
        }
    }
}

/// An HTTPS client that trusts only the given CAs, like the API server with its caBundle.
#[derive(Clone)]
pub struct Client {
    pub addr: SocketAddr,
    roots: Arc<rustls::RootCertStore>,
    identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    pub server_name: String,
}

pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
    pub version: hyper::Version,
    pub headers: hyper::HeaderMap,
}

impl HttpResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&self.body));
        })
    }
}

impl Client {
    pub fn new(addr: SocketAddr, cas: &[&[u8]]) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for ca in cas {
            for cert in CertificateDer::pem_slice_iter(ca) {
                roots.add(cert.unwrap()).unwrap();
            }
        }
        Self {
            addr,
            roots: Arc::new(roots),
            identity: None,
            server_name: "localhost".into(),
        }
    }

    pub fn with_identity(mut self, cert_pem: &str, key_pem: &str) -> Self {
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        self.identity = Some((chain, Arc::new(key)));
        self
    }

    pub fn with_server_name(mut self, name: &str) -> Self {
        self.server_name = name.to_owned();
        self
    }

    /// Opens a TLS connection offering only `proto` by ALPN.
    pub async fn connect(&self, proto: Proto) -> std::io::Result<TlsStream<TcpStream>> {
        let builder = rustls::ClientConfig::builder().with_root_certificates(self.roots.clone());
        let mut config = match &self.identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![proto.alpn().to_vec()];
        let tcp = TcpStream::connect(self.addr).await?;
        // As Go's net package does for the API server: without it, the client's second small
        // handshake write waits for a delayed ACK (up to 200 ms on Linux).
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(self.server_name.clone()).unwrap();
        TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
    }

    /// One POST on a new connection.
    pub async fn post(
        &self,
        proto: Proto,
        path: &str,
        body: Vec<u8>,
    ) -> std::io::Result<HttpResponse> {
        let stream = self.connect(proto).await?;
        let negotiated = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        assert_eq!(negotiated.as_deref(), Some(proto.alpn()), "ALPN");
        let req = hyper::Request::post(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .header("accept", "application/json, */*")
            .header("user-agent", "kube-apiserver-admission")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let io = TokioIo::new(stream);
        let rsp = match proto {
            Proto::Http1 => {
                let (mut send, conn) = hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(io_err)?;
                tokio::spawn(conn);
                send.send_request(req).await.map_err(io_err)?
            }
            Proto::Http2 => {
                let (mut send, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                        .await
                        .map_err(io_err)?;
                tokio::spawn(conn);
                send.send_request(req).await.map_err(io_err)?
            }
        };
        let status = rsp.status().as_u16();
        let version = rsp.version();
        let headers = rsp.headers().clone();
        let body = rsp
            .into_body()
            .collect()
            .await
            .map_err(io_err)?
            .to_bytes()
            .to_vec();
        Ok(HttpResponse {
            status,
            body,
            version,
            headers,
        })
    }

    /// POSTs a captured AdmissionReview and checks the answer is a well-formed review for it.
    pub async fn review(&self, proto: Proto, path: &str, body: &[u8]) -> serde_json::Value {
        let sent: serde_json::Value = serde_json::from_slice(body).unwrap();
        let rsp = self.post(proto, path, body.to_vec()).await.unwrap();
        assert_eq!(rsp.status, 200, "{}", String::from_utf8_lossy(&rsp.body));
        let got = rsp.json();
        assert_eq!(got["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(got["kind"], "AdmissionReview");
        assert_eq!(
            got["response"]["uid"], sent["request"]["uid"],
            "uid must be echoed"
        );
        got["response"].clone()
    }
}

fn io_err(e: impl std::error::Error + Send + Sync + 'static) -> std::io::Error {
    std::io::Error::other(e)
}

/// A plain-HTTP GET on the health port: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    parse_http1(&raw)
}

/// Opens an HTTP/1.1 review whose body is only partly sent: a request in flight.
pub async fn start_slow_review(client: &Client, body: &[u8], sent: usize) -> TlsStream<TcpStream> {
    let mut slow = client.connect(Proto::Http1).await.unwrap();
    let head = format!(
        "POST /validate HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&body[..sent]).await.unwrap();
    slow.flush().await.unwrap();
    slow
}

pub async fn finish_slow_review(mut slow: TlsStream<TcpStream>, rest: &[u8]) -> (u16, String) {
    slow.write_all(rest).await.unwrap();
    slow.flush().await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    parse_http1(&raw)
}

/// Status and body of a raw HTTP/1.1 response (`Content-Length` or chunked).
pub fn parse_http1(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || tail.len() < n {
                break;
            }
            out.push_str(&tail[..n]);
            rest = tail[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        body.to_owned()
    };
    (status, body)
}

/// Polls `check` until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every captured review, with the endpoint it was sent to.
pub fn admission_fixtures() -> Vec<(PathBuf, &'static str)> {
    let dir = Path::new(FIXTURES).join("admission");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let endpoint = if name.starts_with("mutate") {
                "/mutate"
            } else {
                "/validate"
            };
            (p, endpoint)
        })
        .collect();
    out.sort();
    out
}

/// Every violation the one decision path finds for `review` (no exempt namespaces, as gator).
pub fn validate(
    bundle: &palisade::bundle::Bundle,
    inventory: &palisade::inventory::Inventory,
    review: &palisade::admission::Review,
) -> Vec<palisade::policy::Violation> {
    palisade::decide::Decider::without_exemptions()
        .decide(
            bundle,
            inventory,
            palisade::admission::Endpoint::Validate,
            review,
            time::OffsetDateTime::now_utc(),
            None,
        )
        .unwrap()
        .violations
}

/// Lays out `dir` as the kubelet does for a Secret or ConfigMap volume: the files in a
/// `..<version>` directory, `..data` swapped to it atomically (a symlink beside it renamed over
/// it), and each name a symlink through `..data`.
pub fn project_files(dir: &Path, version: &str, files: &[(&str, &[u8])]) {
    let data = dir.join(format!("..{version}"));
    std::fs::create_dir(&data).unwrap();
    for (name, bytes) in files {
        std::fs::write(data.join(name), bytes).unwrap();
    }
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for (name, _) in files {
        let link = dir.join(name);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), link).unwrap();
        }
    }
}

/// SplitMix64: small, seeded, the same on every machine (the property and differential tests'
/// source of variety).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// True `n` times in `d`.
    pub fn chance(&mut self, n: usize, d: usize) -> bool {
        self.below(d) < n
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A copy of one of `items`.
    pub fn choose<T: Copy>(&mut self, items: &[T]) -> T {
        *self.pick(items)
    }
}

/// The JSON patch of a /mutate answer, decoded; empty when the answer has none.
pub fn decoded_patch(rsp: &serde_json::Value) -> Vec<serde_json::Value> {
    use base64::Engine as _;
    let Some(patch) = rsp["patch"].as_str() else {
        return Vec::new();
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// `review` after /mutate, its patch applied as the API server applies it, and whether there
/// was a patch.
pub async fn mutate(client: &Client, review: &serde_json::Value) -> (serde_json::Value, bool) {
    let rsp = client
        .review(
            Proto::Http2,
            "/mutate",
            &serde_json::to_vec(review).unwrap(),
        )
        .await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
    let ops = decoded_patch(&rsp);
    let mut review = review.clone();
    let patched = rsp.get("patch").is_some();
    if patched {
        let patch: json_patch::Patch =
            serde_json::from_value(serde_json::Value::Array(ops)).unwrap();
        json_patch::patch(&mut review["request"]["object"], &patch).unwrap();
    }
    (review, patched)
}

/// `review` after /mutate, as the API server sends it on to /validate.
pub async fn mutated(client: &Client, review: &serde_json::Value) -> serde_json::Value {
    mutate(client, review).await.0
}

/// Runs `palisade <args>` from the repository's root: exit code, stdout, stderr.
pub fn palisade_cli(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_palisade"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}
