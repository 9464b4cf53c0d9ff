//! Gatekeeper's external data for validation: `Provider` documents, the `external_data` Rego
//! builtin, and its HTTPS client.
//!
//! - A Provider is `externaldata.gatekeeper.sh` `Provider` with `spec.url` (https only, as
//!   Gatekeeper requires since 3.11), `spec.timeout` (seconds) and `spec.caBundle` (base64 PEM),
//!   which alone verifies the provider's certificate. Palisade presents its own serving
//!   certificate as the client certificate, as Gatekeeper does.
//! - `external_data({"provider": name, "keys": [...]})` sends one `ProviderRequest` with every key
//!   not in the cache (deduplicated) and returns Gatekeeper's shape: `responses` (`[key, value]`),
//!   `errors` (`[key, error]`), `status_code` and `system_error`. A provider that fails or runs past
//!   its own timeout is an answer the template sees (`system_error`), as in Gatekeeper, where the
//!   template decides. A call cut by the time left for the review is not: the evaluation stops
//!   as out of time, and the review is answered as the API server would treat Gatekeeper's
//!   missing answer (the webhook's `failurePolicy`).
//! - Within one evaluation the same call is answered once (OPA memoizes Gatekeeper's builtin).
//! - Responses of idempotent providers are cached per (provider URL, key) for
//!   `--external-data-cache-ttl` ([`CACHE_TTL`] by default), at most [`CACHE_ENTRIES`] keys.
//!
//! Templates are evaluated synchronously, on the blocking pool: the request runs on a runtime of
//! its own (one thread, made on first use), and the evaluation thread waits for it on a channel,
//! bounded by the timeout. No tokio runtime is entered from the evaluation thread, so one never
//! nests. A review evaluated inline on an I/O thread moves to the blocking pool before a template
//! that calls `external_data` runs (see [`Inline`]).

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::manifest::Document;

/// The group of `Provider`.
pub const GROUP: &str = "externaldata.gatekeeper.sh";
/// The builtin's name in Rego.
pub const BUILTIN: &str = "external_data";
/// A Provider without `spec.timeout` waits this long.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a cached answer serves by default (`--external-data-cache-ttl`): Gatekeeper's
/// default.
pub const CACHE_TTL: Duration = Duration::from_secs(180);
/// Most (provider, key) answers kept.
pub const CACHE_ENTRIES: usize = 10_000;
/// Largest ProviderResponse read.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One `Provider` of the bundle, with its client.
pub struct Provider {
    pub name: String,
    pub url: hyper::Uri,
    pub timeout: Duration,
    pub describe: String,
    /// What identifies the endpoint in the cache: a changed URL does not serve old answers.
    endpoint: String,
    client: HttpsClient,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The bundle's Providers by name.
#[derive(Debug, Clone, Default)]
pub struct Providers(Arc<BTreeMap<String, Arc<Provider>>>);

impl Providers {
    pub fn new(list: Vec<Provider>) -> Self {
        Self(Arc::new(
            list.into_iter()
                .map(|p| (p.name.clone(), Arc::new(p)))
                .collect(),
        ))
    }

    /// Providers already shared (the files' and the cluster's, merged).
    pub fn from_shared(list: Vec<Arc<Provider>>) -> Self {
        Self(Arc::new(
            list.into_iter().map(|p| (p.name.clone(), p)).collect(),
        ))
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Provider>> {
        self.0.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// The longest timeout of any provider.
    pub fn longest_timeout(&self) -> Duration {
        self.0.values().map(|p| p.timeout).max().unwrap_or_default()
    }
}

/// Reads a `Provider` document; every error names the field and the fix.
pub fn parse(doc: &Document) -> Result<Provider, String> {
    match doc.api_version() {
        "externaldata.gatekeeper.sh/v1beta1" | "externaldata.gatekeeper.sh/v1alpha1" => {}
        other => {
            return Err(format!(
                "apiVersion {other:?} is not supported; use externaldata.gatekeeper.sh/v1beta1"
            ));
        }
    }
    let name = doc.name();
    if name.is_empty() {
        return Err("metadata.name: required; templates call the provider by it".into());
    }
    let spec = &doc.value["spec"];
    if let Some(map) = spec.as_object() {
        for key in map.keys() {
            match key.as_str() {
                "url" | "timeout" | "caBundle" => {}
                "insecureTLSSkipVerify" => {
                    return Err("spec.insecureTLSSkipVerify: not supported; Gatekeeper (3.11+) and Palisade require https with the provider's CA in spec.caBundle".into());
                }
                other => {
                    return Err(format!(
                        "spec.{other}: unknown field; a Provider has url, timeout and caBundle"
                    ));
                }
            }
        }
    } else {
        return Err("spec: required, with url, timeout and caBundle".into());
    }
    let url_text = spec["url"]
        .as_str()
        .filter(|u| !u.is_empty())
        .ok_or("spec.url: required, e.g. https://my-provider.my-namespace:8090/validate")?;
    let url: hyper::Uri = url_text
        .parse()
        .map_err(|e| format!("spec.url: {url_text:?} is not a URL: {e}"))?;
    match url.scheme_str() {
        Some("https") => {}
        Some("http") => {
            return Err(format!(
                "spec.url: {url_text:?} uses http; Gatekeeper (3.11+) and Palisade require https: serve the provider over TLS and put its CA in spec.caBundle"
            ));
        }
        _ => {
            return Err(format!("spec.url: {url_text:?} must be an https:// URL"));
        }
    }
    if url.host().is_none_or(str::is_empty) {
        return Err(format!("spec.url: {url_text:?} has no host"));
    }
    let timeout = match &spec["timeout"] {
        Value::Null => DEFAULT_TIMEOUT,
        t => match t.as_u64() {
            Some(0) | None => {
                return Err(format!(
                    "spec.timeout: {t} is not a number of seconds of at least 1 (the time Palisade waits for the provider; leave it out for {}s)",
                    DEFAULT_TIMEOUT.as_secs()
                ));
            }
            Some(s) => Duration::from_secs(s.min(3600)),
        },
    };
    let ca = spec["caBundle"].as_str().filter(|c| !c.is_empty()).ok_or(
        "spec.caBundle: required for https: the provider's CA certificate in PEM, base64-encoded (cat ca.crt | base64 | tr -d '\\n')",
    )?;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(ca.trim())
        .map_err(|e| format!("spec.caBundle: not base64 ({e}); encode the PEM with cat ca.crt | base64 | tr -d '\\n'"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("spec.caBundle: not PEM certificates: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("spec.caBundle: a certificate does not parse: {e}"))?;
    }
    if roots.is_empty() {
        return Err("spec.caBundle: holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    let client = client(roots).map_err(|e| format!("spec.caBundle: {e}"))?;
    Ok(Provider {
        name: name.to_owned(),
        endpoint: url_text.to_owned(),
        url,
        timeout,
        describe: doc.describe(),
        client,
    })
}

fn client(roots: rustls::RootCertStore) -> Result<HttpsClient, String> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    // Gatekeeper requires TLS 1.3 of providers.
    .with_protocol_versions(&[&rustls::version::TLS13])
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_client_cert_resolver(Arc::new(ServingCertificate));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .build();
    Ok(Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(8)
        .build(connector))
}

static CLIENT_CERTIFICATE: Mutex<Option<Arc<rustls::sign::CertifiedKey>>> = Mutex::new(None);

/// Sets the certificate Palisade presents to providers: its serving certificate, replaced when
/// that rotates.
pub fn set_client_certificate(cert_pem: &[u8], key_pem: &[u8]) {
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem).ok();
    let chain: Vec<_> = CertificateDer::pem_slice_iter(cert_pem)
        .filter_map(Result::ok)
        .collect();
    let certified = key.and_then(|key| {
        let signing = rustls::crypto::ring::default_provider()
            .key_provider
            .load_private_key(key)
            .ok()?;
        Some(Arc::new(rustls::sign::CertifiedKey::new(chain, signing)))
    });
    *CLIENT_CERTIFICATE.lock().unwrap_or_else(|p| p.into_inner()) = certified;
}

/// Presents the serving certificate when a provider asks for one.
#[derive(Debug)]
struct ServingCertificate;

impl rustls::client::ResolvesClientCert for ServingCertificate {
    fn resolve(
        &self,
        _: &[&[u8]],
        _: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        CLIENT_CERTIFICATE
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

// ---------------------------------------------------------------------------------------------
// Where and how long a call may wait.

thread_local! {
    /// When the evaluation running on this thread must end; `None` outside one.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    /// A call on this thread was cut by `DEADLINE`.
    static CUT: Cell<bool> = const { Cell::new(false) };
    /// This thread is an I/O thread that must not wait.
    static INLINE: Cell<bool> = const { Cell::new(false) };
    /// Templates are being loaded: no call leaves the process.
    static OFFLINE: Cell<bool> = const { Cell::new(false) };
    /// The answers of this evaluation, by request: as OPA memoizes Gatekeeper's builtin, the
    /// same call in several rules of one evaluation is one request.
    static MEMO: std::cell::RefCell<Vec<(String, Vec<String>, Value)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The evaluation of one template on this thread, ending at `deadline`.
pub(crate) struct Evaluation;

impl Evaluation {
    pub(crate) fn enter(deadline: Instant) -> Self {
        DEADLINE.with(|d| d.set(Some(deadline)));
        CUT.with(|c| c.set(false));
        MEMO.with(|m| m.borrow_mut().clear());
        Self
    }

    /// Whether a call was cut by the deadline: the evaluation is out of time, whatever the
    /// template made of the error.
    pub(crate) fn was_cut(&self) -> bool {
        CUT.with(Cell::get)
    }
}

impl Drop for Evaluation {
    fn drop(&mut self) {
        DEADLINE.with(|d| d.set(None));
        CUT.with(|c| c.set(false));
        MEMO.with(|m| m.borrow_mut().clear());
    }
}

/// Marks this thread as an I/O thread for the life of the guard: a call that the cache cannot
/// answer is not made here (the evaluation reports out of time, and the server moves the review
/// to the blocking pool, where it is made).
pub struct Inline(bool);

impl Inline {
    pub fn enter() -> Self {
        Self(INLINE.with(|i| i.replace(true)))
    }
}

impl Drop for Inline {
    fn drop(&mut self) {
        INLINE.with(|i| i.set(self.0));
    }
}

/// Whether this thread must not wait for a provider.
pub(crate) fn is_inline() -> bool {
    INLINE.with(Cell::get)
}

/// Templates load (and are warmed up) without calling providers.
pub(crate) struct Offline(bool);

impl Offline {
    pub(crate) fn enter() -> Self {
        Self(OFFLINE.with(|o| o.replace(true)))
    }
}

impl Drop for Offline {
    fn drop(&mut self) {
        OFFLINE.with(|o| o.set(self.0));
    }
}

// ---------------------------------------------------------------------------------------------
// The builtin.

/// The `external_data` builtin over `providers`, for `Engine::add_extension`.
pub(crate) fn builtin(
    providers: Providers,
    ttl: Duration,
) -> impl FnMut(Vec<regorus::Value>) -> anyhow::Result<regorus::Value> + Clone + Send + Sync {
    move |args| {
        let request = parse_request(args.first())?;
        let memo = DEADLINE.with(Cell::get).is_some();
        if memo
            && let Some(answer) = MEMO.with(|m| {
                m.borrow()
                    .iter()
                    .find(|(p, k, _)| *p == request.provider && *k == request.keys)
                    .map(|(_, _, v)| v.clone())
            })
        {
            return Ok(regorus::Value::from(answer));
        }
        let answer = call(&providers, &request, ttl)?;
        if memo {
            MEMO.with(|m| {
                m.borrow_mut()
                    .push((request.provider, request.keys, answer.clone()))
            });
        }
        Ok(regorus::Value::from(answer))
    }
}

struct RegoRequest {
    provider: String,
    keys: Vec<String>,
}

fn parse_request(arg: Option<&regorus::Value>) -> anyhow::Result<RegoRequest> {
    let shape = "external_data takes {\"provider\": <name>, \"keys\": [<string>, ...]}";
    let json = arg
        .map(serde_json::to_value)
        .transpose()?
        .unwrap_or_default();
    let provider = json["provider"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("{shape}: provider is not a string"))?
        .to_owned();
    let list = json["keys"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("{shape}: keys is not a list"))?;
    let mut keys: Vec<String> = Vec::with_capacity(list.len());
    for k in list {
        let k = k
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("{shape}: key {k} is not a string"))?;
        // One request per evaluation carries each key once.
        if !keys.iter().any(|have| have == k) {
            keys.push(k.to_owned());
        }
    }
    Ok(RegoRequest { provider, keys })
}

/// Gatekeeper's Rego response.
fn rego_response(
    responses: Vec<Value>,
    errors: Vec<Value>,
    status: u16,
    system_error: &str,
) -> Value {
    json!({
        "responses": responses,
        "errors": errors,
        "status_code": status,
        "system_error": system_error,
    })
}

fn call(providers: &Providers, request: &RegoRequest, ttl: Duration) -> anyhow::Result<Value> {
    if request.keys.is_empty() || OFFLINE.with(Cell::get) {
        return Ok(rego_response(Vec::new(), Vec::new(), 0, ""));
    }
    let Some(provider) = providers.get(&request.provider) else {
        // Gatekeeper's answer for a provider it does not know (400).
        return Ok(rego_response(
            Vec::new(),
            Vec::new(),
            400,
            &format!(
                "provider {:?} is not defined; the bundle defines {}",
                request.provider,
                providers.names().collect::<Vec<_>>().join(", ")
            ),
        ));
    };
    let mut responses = Vec::new();
    let mut errors = Vec::new();
    let mut missing = Vec::new();
    {
        let now = Instant::now();
        let cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        for key in &request.keys {
            match cache.get(&(provider.endpoint.clone(), key.clone())) {
                Some(hit) if now.duration_since(hit.received) < ttl => match &hit.answer {
                    Ok(value) => responses.push(json!([key, value])),
                    Err(error) => errors.push(json!([key, error])),
                },
                _ => missing.push(key.clone()),
            }
        }
    }
    if !missing.is_empty() && is_inline() {
        // Out of time for this thread: the review moves to the blocking pool, where this call
        // is made (and counted).
        CUT.with(|c| c.set(true));
        anyhow::bail!(
            "external_data: provider {} is not called on an I/O thread",
            provider.name
        );
    }
    let labels = ProviderLabels {
        provider: provider.name.clone(),
    };
    let hits = request.keys.len() - missing.len();
    if hits > 0 {
        METRICS
            .cache_hits
            .get_or_create(&labels)
            .inc_by(hits as u64);
    }
    if missing.is_empty() {
        // Gatekeeper leaves status_code 0 when no request was sent.
        return Ok(rego_response(responses, errors, 0, ""));
    }
    METRICS
        .cache_misses
        .get_or_create(&labels)
        .inc_by(missing.len() as u64);

    let deadline = DEADLINE.with(Cell::get);
    let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    let (budget, cut_by_deadline) = match left {
        Some(left) if left < provider.timeout => (left, true),
        _ => (provider.timeout, false),
    };
    let started = Instant::now();
    let outcome = fetch(provider, &missing, budget);
    METRICS
        .duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    let result = match &outcome {
        Fetched::Answer { .. } => "ok",
        Fetched::Failed {
            timed_out: true, ..
        } => "timeout",
        Fetched::Failed { .. } => "error",
    };
    METRICS
        .requests
        .get_or_create(&RequestLabels {
            provider: provider.name.clone(),
            result,
        })
        .inc();
    match outcome {
        Fetched::Failed {
            timed_out: true, ..
        } if cut_by_deadline => {
            CUT.with(|c| c.set(true));
            anyhow::bail!(
                "external_data: provider {} did not answer in the time left for this review",
                provider.name
            )
        }
        Fetched::Failed { status, error, .. } => {
            tracing::warn!(provider = %provider.name, url = %provider.url, %error, "external data request failed; the template sees system_error");
            Ok(rego_response(responses, errors, status, &error))
        }
        Fetched::Answer { status, response } => {
            let body = response.response;
            let cacheable =
                !ttl.is_zero() && body.idempotent && body.system_error.is_empty() && status == 200;
            if cacheable {
                let now = Instant::now();
                let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() + body.items.len() > CACHE_ENTRIES {
                    cache.retain(|_, e| now.duration_since(e.received) < ttl);
                    if cache.len() + body.items.len() > CACHE_ENTRIES {
                        cache.clear();
                    }
                }
                for item in body.items.iter().take(CACHE_ENTRIES) {
                    let answer = if item.error.is_empty() {
                        Ok(item.value.clone())
                    } else {
                        Err(item.error.clone())
                    };
                    cache.insert(
                        (provider.endpoint.clone(), item.key.clone()),
                        Cached {
                            received: now,
                            answer,
                        },
                    );
                }
            }
            for item in body.items {
                if item.error.is_empty() {
                    responses.push(json!([item.key, item.value]));
                } else {
                    errors.push(json!([item.key, item.error]));
                }
            }
            Ok(rego_response(responses, errors, status, &body.system_error))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The request.

#[derive(Debug, Default, Deserialize)]
struct ProviderResponse {
    #[serde(default)]
    response: ResponseBody,
}

#[derive(Debug, Default, Deserialize)]
struct ResponseBody {
    #[serde(default)]
    idempotent: bool,
    #[serde(default)]
    items: Vec<Item>,
    #[serde(default, rename = "systemError")]
    system_error: String,
}

#[derive(Debug, Deserialize)]
struct Item {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: Value,
    #[serde(default)]
    error: String,
}

enum Fetched {
    Answer {
        status: u16,
        response: ProviderResponse,
    },
    /// As Gatekeeper reports a request that failed: status 500 and the error.
    Failed {
        status: u16,
        error: String,
        timed_out: bool,
    },
}

/// The runtime the requests run on, made on first use: never the caller's, so that a
/// synchronous evaluation thread never enters (or blocks) a runtime it is part of.
fn runtime() -> Result<&'static tokio::runtime::Runtime, String> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("palisade-external-data")
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the external data client: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The error and its causes, as one line (hyper's own text is only "client error (Connect)").
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

fn fetch(provider: &Arc<Provider>, keys: &[String], budget: Duration) -> Fetched {
    let failed = |error: String, timed_out: bool| Fetched::Failed {
        status: 500,
        error,
        timed_out,
    };
    let body = json!({
        "apiVersion": "externaldata.gatekeeper.sh/v1beta1",
        "kind": "ProviderRequest",
        "request": {"keys": keys},
    })
    .to_string();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return failed(e, false),
    };
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let p = provider.clone();
    rt.spawn(async move {
        let request = async {
            let req = hyper::Request::post(p.url.clone())
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| format!("failed to create external data request: {e}"))?;
            let rsp = p
                .client
                .request(req)
                .await
                .map_err(|e| format!("failed to send external data request: {}", chain(&e)))?;
            let status = rsp.status().as_u16();
            let bytes = Limited::new(rsp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| format!("failed to read external data response: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, bytes))
        };
        let _ = tx.send(tokio::time::timeout(budget, request).await);
    });
    let timed_out = || {
        failed(
            format!(
                "failed to send external data request: no answer within {:?}",
                budget
            ),
            true,
        )
    };
    // The task stops itself at `budget`; the margin covers its scheduling.
    match rx.recv_timeout(budget + Duration::from_millis(100)) {
        Ok(Ok(Ok((status, bytes)))) => match serde_json::from_slice::<ProviderResponse>(&bytes) {
            Ok(response) => Fetched::Answer { status, response },
            Err(e) => failed(
                format!("failed to unmarshal external data response (HTTP {status}): {e}"),
                false,
            ),
        },
        Ok(Ok(Err(error))) => failed(error, false),
        Ok(Err(_)) | Err(_) => timed_out(),
    }
}

// ---------------------------------------------------------------------------------------------
// The cache and the metrics.

struct Cached {
    received: Instant,
    answer: Result<Value, String>,
}

/// Answers by (provider URL, key).
static CACHE: LazyLock<Mutex<HashMap<(String, String), Cached>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub provider: String,
    /// ok, error or timeout.
    pub result: &'static str,
}

/// What the external data client counts; registered by [`crate::runtime::metrics::Metrics`].
pub struct ExternalMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<ProviderLabels, Histogram, fn() -> Histogram>,
    pub cache_hits: Family<ProviderLabels, Counter>,
    pub cache_misses: Family<ProviderLabels, Counter>,
}

fn duration_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

static METRICS: LazyLock<ExternalMetrics> = LazyLock::new(|| ExternalMetrics {
    requests: Family::default(),
    duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
    cache_hits: Family::default(),
    cache_misses: Family::default(),
});

/// The process's external data metrics (shared by every registry that registers them).
pub fn metrics() -> &'static ExternalMetrics {
    &METRICS
}

// ---------------------------------------------------------------------------------------------
// Load-time checks.

/// The provider names a template's Rego passes as literals (`"provider": "name"`), with their
/// lines.
pub(crate) fn literal_providers(src: &str) -> Vec<(String, usize)> {
    static RE: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(r#""provider"\s*:\s*"((?:[^"\\]|\\.)*)""#).unwrap_or_else(|_| {
            // The pattern is a constant; this branch is never taken.
            regex::Regex::new("$^").unwrap_or_else(|_| unreachable!())
        })
    });
    RE.captures_iter(src)
        .filter_map(|c| {
            let m = c.get(1)?;
            let line = src[..m.start()].matches('\n').count() + 1;
            Some((m.as_str().to_owned(), line))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_str;
    use std::path::Path;

    fn provider(spec: &str) -> Result<Provider, String> {
        let yaml = format!(
            "apiVersion: externaldata.gatekeeper.sh/v1beta1\nkind: Provider\nmetadata: {{name: p}}\nspec: {spec}\n"
        );
        let docs = parse_str(&yaml, Path::new("p.yaml")).unwrap();
        parse(&docs[0])
    }

    fn ca_bundle() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        base64::engine::general_purpose::STANDARD.encode(cert.pem())
    }

    #[test]
    fn a_provider_reads_url_timeout_and_ca() {
        let p = provider(&format!(
            "{{url: 'https://p.ns:8090/validate', timeout: 2, caBundle: {}}}",
            ca_bundle()
        ))
        .unwrap();
        assert_eq!(p.timeout, Duration::from_secs(2));
        assert_eq!(p.url.host(), Some("p.ns"));
        let p = provider(&format!("{{url: 'https://p', caBundle: {}}}", ca_bundle())).unwrap();
        assert_eq!(p.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn http_a_missing_or_bad_ca_and_a_bad_timeout_are_refused_by_field() {
        let ca = ca_bundle();
        let cases = [
            (
                format!("{{url: 'http://p:80/', caBundle: {ca}}}"),
                "spec.url: \"http://p:80/\" uses http",
            ),
            (format!("{{url: 'ftp://p/', caBundle: {ca}}}"), "https://"),
            (format!("{{caBundle: {ca}}}"), "spec.url: required"),
            ("{url: 'https://p/'}".into(), "spec.caBundle: required"),
            (
                "{url: 'https://p/', caBundle: '%%%'}".into(),
                "spec.caBundle: not base64",
            ),
            (
                format!(
                    "{{url: 'https://p/', caBundle: {}}}",
                    base64::engine::general_purpose::STANDARD.encode("not a pem")
                ),
                "spec.caBundle: holds no PEM certificate",
            ),
            (
                format!(
                    "{{url: 'https://p/', caBundle: {}}}",
                    base64::engine::general_purpose::STANDARD
                        .encode("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                ),
                "spec.caBundle: a certificate does not parse",
            ),
            (
                format!("{{url: 'https://p/', timeout: 0, caBundle: {ca}}}"),
                "spec.timeout: 0",
            ),
            (
                format!("{{url: 'https://p/', timeout: -1, caBundle: {ca}}}"),
                "spec.timeout: -1",
            ),
            (
                "{url: 'http://p/', insecureTLSSkipVerify: true}".into(),
                "spec.insecureTLSSkipVerify: not supported",
            ),
        ];
        for (spec, want) in cases {
            let err = provider(&spec).unwrap_err();
            assert!(err.contains(want), "{spec}: {err}");
        }
    }

    #[test]
    fn keys_are_deduplicated_in_order_and_a_bad_request_is_an_error() {
        let arg = regorus::Value::from(json!({"provider": "p", "keys": ["b", "a", "b"]}));
        let r = parse_request(Some(&arg)).unwrap();
        assert_eq!(r.keys, ["b", "a"]);
        for bad in [
            json!({"provider": 1, "keys": []}),
            json!({"provider": "p", "keys": "a"}),
            json!({"provider": "p", "keys": [1]}),
        ] {
            assert!(parse_request(Some(&regorus::Value::from(bad))).is_err());
        }
    }

    #[test]
    fn an_unknown_provider_at_run_time_is_gatekeepers_400() {
        let r = call(
            &Providers::default(),
            &RegoRequest {
                provider: "nope".into(),
                keys: vec!["a".into()],
            },
            CACHE_TTL,
        )
        .unwrap();
        assert_eq!(r["status_code"], 400);
        assert!(r["system_error"].as_str().unwrap().contains("\"nope\""));
        let empty = call(
            &Providers::default(),
            &RegoRequest {
                provider: "nope".into(),
                keys: vec![],
            },
            CACHE_TTL,
        )
        .unwrap();
        assert_eq!(empty, rego_response(vec![], vec![], 0, ""));
    }

    #[test]
    fn literal_provider_names_are_found_with_their_lines() {
        let src = "package t\nv { r := external_data({\"provider\": \"a\", \"keys\": k}) }\nw { external_data({\n  \"keys\": [], \"provider\" : \"b-c\"}) }\n";
        assert_eq!(
            literal_providers(src),
            [("a".to_owned(), 2), ("b-c".to_owned(), 4)]
        );
    }
}
