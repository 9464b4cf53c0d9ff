//! Gatekeeper's external data for validation: `Provider` documents, the `external_data` Rego
//! builtin, its cache, and the [`Transport`] through which the shell's HTTPS client reaches the
//! providers (installed once per process with [`install`]; without one, every call fails as a
//! provider that cannot be reached does).
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
//! Templates are evaluated synchronously, on the blocking pool: the transport's
//! [`Client::post`] blocks the evaluation thread, bounded by the time it is given (the shell's
//! client runs the request on a runtime of its own, so that no runtime is entered from the
//! evaluation thread and one never nests). A review evaluated inline on an I/O thread moves to the blocking pool before a template
//! that calls `external_data` runs (see [`Inline`]).

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
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
/// Largest ProviderResponse a transport reads.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// One `Provider` of the bundle, with its client.
pub struct Provider {
    /// `metadata.name`: what templates call it by.
    pub name: String,
    /// `spec.url`, an https URL.
    pub url: String,
    /// The URL's host.
    pub host: String,
    /// `spec.timeout` ([`DEFAULT_TIMEOUT`] when absent): how long a call waits for it.
    pub timeout: Duration,
    /// "Provider name at file (document N)", for messages.
    pub describe: String,
    /// What identifies the endpoint in the cache: a changed URL does not serve old answers.
    endpoint: String,
    client: Arc<dyn Client>,
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
    /// The Providers of `list`, by name.
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

    /// The Provider called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Provider>> {
        self.0.get(name)
    }

    /// Whether there is no Provider.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The Providers' names, sorted.
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
    let (scheme, host) = split_url(url_text).ok_or_else(|| {
        format!("spec.url: {url_text:?} is not a URL: use https://host[:port]/path")
    })?;
    match scheme {
        "https" => {}
        "http" => {
            return Err(format!(
                "spec.url: {url_text:?} uses http; Gatekeeper (3.11+) and Palisade require https: serve the provider over TLS and put its CA in spec.caBundle"
            ));
        }
        _ => {
            return Err(format!("spec.url: {url_text:?} must be an https:// URL"));
        }
    }
    if host.is_empty() {
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
    let certificates = pem_certificates(&pem)?;
    if certificates == 0 {
        return Err("spec.caBundle: holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    let client = match TRANSPORT.get() {
        Some(transport) => transport.client(url_text, &pem)?,
        None => Arc::new(Unreachable),
    };
    Ok(Provider {
        name: name.to_owned(),
        endpoint: url_text.to_owned(),
        url: url_text.to_owned(),
        host: host.to_owned(),
        timeout,
        describe: doc.describe(),
        client,
    })
}

/// The scheme and host of `url` (`scheme://[user@]host[:port][/...]`), or `None` when it has no
/// scheme.
fn split_url(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split_once(']').map_or(v6, |(h, _)| h)
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    Some((scheme, host))
}

/// How many certificates `pem` holds; an error names the block that is not a certificate. A
/// block's body must be base64 of DER (an ASN.1 SEQUENCE whose length is the block's); the
/// transport checks the rest when it builds its client.
fn pem_certificates(pem: &[u8]) -> Result<usize, String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let text = std::str::from_utf8(pem)
        .map_err(|_| "spec.caBundle: not PEM certificates: the PEM is not text".to_owned())?;
    let mut count = 0;
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let after = &rest[start + BEGIN.len()..];
        let end = after.find(END).ok_or_else(|| {
            format!(
                "spec.caBundle: not PEM certificates: certificate {} has no {END}",
                count + 1
            )
        })?;
        let body: String = after[..end]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(&body)
            .map_err(|e| format!("spec.caBundle: not PEM certificates: {e}"))?;
        if !is_der_sequence(&der) {
            return Err(format!(
                "spec.caBundle: a certificate does not parse: certificate {} is not DER",
                count + 1
            ));
        }
        count += 1;
        rest = &after[end + END.len()..];
    }
    Ok(count)
}

/// Whether `der` is one ASN.1 SEQUENCE spanning all of it.
fn is_der_sequence(der: &[u8]) -> bool {
    let [0x30, first, rest @ ..] = der else {
        return false;
    };
    let (len, body) = if first & 0x80 == 0 {
        (usize::from(*first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return false;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |l, b| (l << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    len == body.len() && len > 0
}

// ---------------------------------------------------------------------------------------------
// The transport: how requests leave the process.

/// What carries `ProviderRequest`s to the providers, and counts them: the shell's HTTPS client
/// (`palisade::state::external`). One per process, installed with [`install`] before the bundle
/// is loaded.
pub trait Transport: Send + Sync + 'static {
    /// A client for the provider at `url` that trusts only the CA certificates of `ca_pem`. The
    /// error names the field it is about and the fix (`spec.url: …` or `spec.caBundle: …`).
    fn client(&self, url: &str, ca_pem: &[u8]) -> Result<Arc<dyn Client>, String>;
    /// Counts what happened to one call (the metrics).
    fn observe(&self, provider: &str, event: Observed);
}

/// A client of one provider.
pub trait Client: Send + Sync + 'static {
    /// POSTs `body` (a `ProviderRequest`, JSON) and waits at most `budget` for the whole answer
    /// (at most [`MAX_RESPONSE_BYTES`]). Blocks the calling thread.
    fn post(&self, body: String, budget: Duration) -> Posted;
}

/// What a [`Client::post`] came to.
#[derive(Debug)]
pub enum Posted {
    /// The provider answered with this status and body.
    Answer {
        /// The HTTP status.
        status: u16,
        /// The body (at most [`MAX_RESPONSE_BYTES`]).
        body: Vec<u8>,
    },
    /// No answer within the budget.
    TimedOut,
    /// The request failed; the error and its causes, as one line.
    Failed(String),
}

/// One thing to count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Observed {
    /// Keys answered from the cache.
    CacheHits(u64),
    /// Keys the cache could not answer.
    CacheMisses(u64),
    /// A request, how it ended (`ok`, `error` or `timeout`), and how long it took in seconds.
    Request {
        /// `ok`, `error` or `timeout`.
        result: &'static str,
        /// How long it took.
        seconds: f64,
    },
}

static TRANSPORT: OnceLock<Arc<dyn Transport>> = OnceLock::new();

/// Installs the process's transport; the first one stays (a process has one client).
pub fn install(transport: Arc<dyn Transport>) {
    let _ = TRANSPORT.set(transport);
}

fn observe(provider: &str, event: Observed) {
    if let Some(transport) = TRANSPORT.get() {
        transport.observe(provider, event);
    }
}

/// The client of a process without a transport: every request fails, so a template that calls
/// a provider sees the error (as it would for an unreachable one).
struct Unreachable;

impl Client for Unreachable {
    fn post(&self, _: String, _: Duration) -> Posted {
        Posted::Failed(
            "failed to send external data request: this process has no external data client".into(),
        )
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
    /// Marks this thread until the guard is dropped; the mark it had comes back then.
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
    let hits = request.keys.len() - missing.len();
    if hits > 0 {
        observe(&provider.name, Observed::CacheHits(hits as u64));
    }
    if missing.is_empty() {
        // Gatekeeper leaves status_code 0 when no request was sent.
        return Ok(rego_response(responses, errors, 0, ""));
    }
    observe(&provider.name, Observed::CacheMisses(missing.len() as u64));

    let deadline = DEADLINE.with(Cell::get);
    let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    let (budget, cut_by_deadline) = match left {
        Some(left) if left < provider.timeout => (left, true),
        _ => (provider.timeout, false),
    };
    let started = Instant::now();
    let outcome = fetch(provider, &missing, budget);
    let seconds = started.elapsed().as_secs_f64();
    let result = match &outcome {
        Fetched::Answer { .. } => "ok",
        Fetched::Failed {
            timed_out: true, ..
        } => "timeout",
        Fetched::Failed { .. } => "error",
    };
    observe(&provider.name, Observed::Request { result, seconds });
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

fn fetch(provider: &Provider, keys: &[String], budget: Duration) -> Fetched {
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
    match provider.client.post(body, budget) {
        Posted::Answer { status, body } => {
            match serde_json::from_slice::<ProviderResponse>(&body) {
                Ok(response) => Fetched::Answer { status, response },
                Err(e) => failed(
                    format!("failed to unmarshal external data response (HTTP {status}): {e}"),
                    false,
                ),
            }
        }
        Posted::Failed(error) => failed(error, false),
        Posted::TimedOut => failed(
            format!("failed to send external data request: no answer within {budget:?}"),
            true,
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// The cache.

struct Cached {
    received: Instant,
    answer: Result<Value, String>,
}

/// Answers by (provider URL, key).
static CACHE: LazyLock<Mutex<HashMap<(String, String), Cached>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

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

    /// A PEM block holding a DER SEQUENCE: what the core checks of a CA bundle (the shell's
    /// transport parses the certificate itself; its tests use real ones).
    fn ca_bundle() -> String {
        let der = base64::engine::general_purpose::STANDARD.encode([0x30, 0x03, 0x02, 0x01, 0x01]);
        base64::engine::general_purpose::STANDARD.encode(format!(
            "-----BEGIN CERTIFICATE-----\n{der}\n-----END CERTIFICATE-----\n"
        ))
    }

    #[test]
    fn a_provider_reads_url_timeout_and_ca() {
        let p = provider(&format!(
            "{{url: 'https://p.ns:8090/validate', timeout: 2, caBundle: {}}}",
            ca_bundle()
        ))
        .unwrap();
        assert_eq!(p.timeout, Duration::from_secs(2));
        assert_eq!(p.host, "p.ns");
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
    fn urls_split_into_scheme_and_host() {
        assert_eq!(
            split_url("https://p.ns:8090/validate"),
            Some(("https", "p.ns"))
        );
        assert_eq!(
            split_url("https://u@[::1]:8443/x?y"),
            Some(("https", "::1"))
        );
        assert_eq!(split_url("https://h"), Some(("https", "h")));
        assert_eq!(split_url("https:///x"), Some(("https", "")));
        assert_eq!(split_url("p.ns/validate"), None);
        assert!(is_der_sequence(&[0x30, 0x81, 0x01, 0x00]));
        assert!(!is_der_sequence(&[0x30, 0x02, 0x00]));
        assert!(!is_der_sequence(&[0x31, 0x01, 0x00]));
    }

    #[test]
    fn without_a_transport_a_call_fails_as_an_unreachable_provider() {
        let p = provider(&format!("{{url: 'https://p', caBundle: {}}}", ca_bundle())).unwrap();
        match fetch(&p, &["k".to_owned()], Duration::from_millis(10)) {
            Fetched::Failed {
                status,
                error,
                timed_out,
            } => {
                assert_eq!(status, 500);
                assert!(!timed_out);
                assert!(error.contains("no external data client"), "{error}");
            }
            Fetched::Answer { .. } => panic!("answered without a transport"),
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
