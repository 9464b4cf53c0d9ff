//! The HTTPS admission server and the plain-HTTP health and metrics server.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::admission::{self, Endpoint, Review};
use crate::bundle::Bundle;
use crate::decide::{Decider, Decision};
use crate::policy::Action;
use crate::runtime::metrics::{Metrics, ReviewResult};
use crate::runtime::tls::TlsStore;
use crate::sources::hotswap::HotSwap;
use crate::sources::inventory::InventoryStore;

/// Request limits of the admission endpoints.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    /// A connection that has received nothing for this long is closed.
    pub idle_timeout: Duration,
    pub max_concurrent: usize,
    /// Evaluation time a review may take on an I/O thread; a review that needs more moves to
    /// the blocking pool, so that slow policies never stall other connections.
    pub inline_budget: Duration,
    /// Threads of the blocking pool that evaluates slow reviews.
    pub eval_threads: usize,
}

/// Whether the webhook should receive traffic: everything it needs is loaded and it is not
/// shutting down.
#[derive(Debug, Default)]
pub struct Readiness {
    certificates: AtomicBool,
    policies: AtomicBool,
    draining: AtomicBool,
    /// The cluster feed has not listed every synced kind yet.
    inventory_pending: AtomicBool,
    /// The policies applied to the cluster (templates, each template's constraints, mutators,
    /// Config) have not all been listed yet.
    cluster_policies_pending: AtomicBool,
}

impl Readiness {
    pub fn set_certificates_loaded(&self) {
        self.certificates.store(true, Ordering::Release);
    }
    pub fn certificates_loaded(&self) -> bool {
        self.certificates.load(Ordering::Acquire)
    }
    pub fn set_policies_loaded(&self) {
        self.policies.store(true, Ordering::Release);
    }
    /// Whether every synced kind of the cluster feed has been listed (files-only: always).
    pub fn set_inventory_synced(&self, synced: bool) {
        self.inventory_pending.store(!synced, Ordering::Release);
    }
    /// Whether the cluster feed has listed every synced kind (files-only: always).
    pub fn inventory_synced(&self) -> bool {
        !self.inventory_pending.load(Ordering::Acquire)
    }
    /// Whether the policy feed has listed the cluster's policies once (files-only: always).
    /// Set once at start-up: a template added later does not take a ready replica out.
    pub fn set_cluster_policies_listed(&self, listed: bool) {
        self.cluster_policies_pending
            .store(!listed, Ordering::Release);
    }
    /// Whether the cluster's policies have been listed (files-only: always).
    pub fn cluster_policies_listed(&self) -> bool {
        !self.cluster_policies_pending.load(Ordering::Acquire)
    }
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
    /// Shutdown has begun (SIGTERM): unready, still serving for the shutdown delay.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
    /// `Ok` when ready, otherwise what is missing.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.draining.load(Ordering::Acquire) {
            Err("shutting down")
        } else if !self.certificates.load(Ordering::Acquire) {
            Err("certificates not loaded")
        } else if !self.policies.load(Ordering::Acquire) {
            Err("policies not loaded")
        } else if self.inventory_pending.load(Ordering::Acquire) {
            Err("the cluster inventory is not listed yet")
        } else if self.cluster_policies_pending.load(Ordering::Acquire) {
            Err("the policies applied to the cluster are not listed yet")
        } else {
            Ok(())
        }
    }
}

/// What the admission handlers share.
pub struct App {
    /// With the configuration file, swapped whole when it changes.
    decider: Arc<HotSwap<Decider>>,
    bundle: Arc<HotSwap<Bundle>>,
    inventory: Arc<InventoryStore>,
    metrics: Arc<Metrics>,
    limits: Limits,
    readiness: Arc<Readiness>,
    permits: Semaphore,
    eval_pool: Arc<Semaphore>,
    /// NetworkPolicy reviews, which the model judges over the whole namespace: their own
    /// threads, half the pool's, so that one tenant's large policies never hold up the rest.
    model_pool: Arc<Semaphore>,
    gate: Option<GenerationGate>,
}

/// Holds back a denied review (or a failed mutation) in a namespace the feed has not seen yet,
/// or in an opted-in namespace whose default-deny the generator has not written yet, and decides
/// it again at each inventory change, until it is allowed or the wait is over. This removes the
/// first-apply race (a Namespace and its Deployment in one `kubectl apply`) without ever
/// admitting a workload whose namespace lacks its default-deny.
pub struct GenerationGate {
    /// Which namespaces get a generated default-deny; `None` when generation is off, so that
    /// only a namespace the feed has not seen yet is waited for. (Exempt namespaces never get
    /// here: their reviews are allowed.)
    pub scope: Option<crate::zero_trust::Scope>,
    pub wait: Duration,
    /// Namespaces are synced, so a namespace missing from the inventory is one not seen yet.
    pub namespaces_synced: bool,
}

impl GenerationGate {
    fn awaits(&self, review: &Review, inventory: &crate::inventory::Inventory) -> bool {
        let object = review.object_ref();
        if object.is_namespace() || object.namespace.is_empty() {
            return false;
        }
        let ns = object.namespace.as_str();
        let Some(namespace) = inventory.namespace(ns) else {
            return self.namespaces_synced;
        };
        let Some(scope) = &self.scope else {
            return false;
        };
        scope.awaits_generation(namespace, inventory)
    }
}

impl App {
    pub fn new(
        decider: Arc<HotSwap<Decider>>,
        bundle: Arc<HotSwap<Bundle>>,
        inventory: Arc<InventoryStore>,
        metrics: Arc<Metrics>,
        limits: Limits,
        readiness: Arc<Readiness>,
        gate: Option<GenerationGate>,
    ) -> Arc<Self> {
        let permits = Semaphore::new(limits.max_concurrent.max(1));
        let eval_pool = Arc::new(Semaphore::new(limits.eval_threads.max(1)));
        let model_pool = Arc::new(Semaphore::new((limits.eval_threads / 2).max(1)));
        Arc::new(Self {
            decider,
            bundle,
            inventory,
            metrics,
            limits,
            readiness,
            permits,
            eval_pool,
            model_pool,
            gate,
        })
    }

    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// Decides, and holds a denial back for the generator where the gate says so. `None` when
    /// the deadline passes first.
    async fn decide(
        &self,
        endpoint: Endpoint,
        review: Review,
        deadline: Instant,
    ) -> Option<(Decision, Review)> {
        let (decision, review) = self.decide_once(endpoint, review, deadline).await?;
        let Some(gate) = &self.gate else {
            return Some((decision, review));
        };
        if decision.response.allowed || !gate.awaits(&review, &self.inventory.load()) {
            return Some((decision, review));
        }
        let mut changes = self.inventory.subscribe();
        changes.mark_changed();
        // Leave time to answer before the API server gives up.
        let margin = Duration::from_millis(250);
        let until =
            (Instant::now() + gate.wait).min(deadline.checked_sub(margin).unwrap_or(deadline));
        tracing::debug!(uid = review.uid(), namespace = %review.object_ref().namespace, "waiting for the generated default-deny");
        let mut last = (decision, review);
        loop {
            let changed =
                tokio::time::timeout_at(tokio::time::Instant::from_std(until), changes.changed())
                    .await;
            if !matches!(changed, Ok(Ok(()))) {
                break;
            }
            last = self.decide_once(endpoint, last.1, deadline).await?;
            // Once allowed, the review still waits (within the same bound) for the rest of what
            // the generator writes, the DNS allowance, so that the workload starts with DNS.
            if !gate.awaits(&last.1, &self.inventory.load()) {
                break;
            }
        }
        self.metrics.generation_wait(last.0.response.allowed);
        Some(last)
    }

    /// Decides on an I/O thread while the review fits its inline budget, then on the blocking
    /// pool until `deadline`; hands the review back with the decision. `None` when the deadline
    /// passes first.
    async fn decide_once(
        &self,
        endpoint: Endpoint,
        review: Review,
        deadline: Instant,
    ) -> Option<(Decision, Review)> {
        let decider = self.decider.load();
        let bundle = self.bundle.load();
        let inventory = self.inventory.load();
        // One time for the review, wherever it is decided.
        let now = time::OffsetDateTime::now_utc();
        // A NetworkPolicy is judged with every policy of its namespace: never on an I/O thread,
        // never on the pool other reviews use.
        let pool = if endpoint == Endpoint::Validate
            && crate::netpol::judge::is_network_policy(&review)
        {
            &self.model_pool
        } else {
            let inline_deadline = (Instant::now() + self.limits.inline_budget).min(deadline);
            // An external data call the cache cannot answer waits on the pool, not here.
            let _inline = crate::policy::external::Inline::enter();
            if let Ok(decision) = decider.decide(
                &bundle,
                &inventory,
                endpoint,
                &review,
                now,
                Some(inline_deadline),
            ) {
                return Some((decision, review));
            }
            // Over budget: the same decision, with the same snapshots, where it cannot stall
            // I/O.
            tracing::debug!(uid = review.uid(), budget = ?self.limits.inline_budget, "review moved to the blocking pool");
            &self.eval_pool
        };
        // Waiting for a pool thread counts against the request timeout. The permit goes with the
        // work: a request that times out does not free it while its thread still runs.
        let slot = pool.clone().acquire_owned().await.ok()?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            decider
                .decide(&bundle, &inventory, endpoint, &review, now, Some(deadline))
                .ok()
                .map(|decision| (decision, review))
        })
        .await
        .ok()
        .flatten()
    }

    /// Counts and logs what a decision found.
    fn record(&self, endpoint: Endpoint, review: &Review, decision: &Decision) {
        let (review_uid, object) = (review.uid(), review.object_ref());
        if endpoint == Endpoint::Validate {
            self.record_break_glass(review, decision);
        }
        for v in &decision.violations {
            self.metrics.violation(&v.constraint, v.action);
            if let Some(kind) = v.failure {
                self.metrics.evaluation_failed(kind);
            }
            if v.action == Action::Dryrun {
                tracing::info!(
                    uid = review_uid,
                    kind = %object.kind,
                    namespace = %object.namespace,
                    name = %object.name,
                    constraint = %v.constraint,
                    // Not `message`: in JSON logs that would replace the line's own message.
                    violation = %v.message,
                    "dryrun violation (not enforced)"
                );
            }
        }
        if !decision.response.allowed && decision.response.code == 500 {
            tracing::warn!(uid = review_uid, %object, error = %decision.response.message, "mutation failed; denying");
        }
    }

    /// Every use of break-glass leaves a warn-level log line and a metric; so does a refused
    /// attempt to set the annotations. A dry-run request (`kubectl --dry-run=server`) is
    /// answered as the real one would be and logged with `dry_run=true`, but admits nothing,
    /// so it is not counted as a use.
    fn record_break_glass(&self, review: &Review, decision: &Decision) {
        use crate::breakglass::Verdict;
        use crate::runtime::metrics::{BreakGlassLabels, BreakGlassRefusedLabels};
        let object = review.object_ref();
        let metrics = self.metrics.rollout();
        match &decision.break_glass {
            Verdict::Honoured(used) => {
                let bypassed = crate::decide::bypassed_constraints(&decision.violations);
                tracing::warn!(
                    uid = review.uid(),
                    user = %used.user,
                    approver = %used.approver,
                    groups = ?review.user().groups,
                    operation = review.operation().map(|o| o.as_str()).unwrap_or_default(),
                    kind = %object.kind,
                    namespace = %object.namespace,
                    name = %object.name,
                    reason = %used.reason,
                    expires = %used.expires,
                    owner = used.owner.as_deref().unwrap_or_default(),
                    constraints = ?bypassed,
                    dry_run = review.dry_run(),
                    "break-glass used: admitted despite deny violations"
                );
                if review.dry_run() {
                    return;
                }
                let count = |constraint: String| {
                    metrics
                        .break_glass
                        .get_or_create(&BreakGlassLabels { constraint })
                        .inc();
                };
                if bypassed.is_empty() {
                    count(String::new());
                }
                for constraint in bypassed {
                    count(constraint);
                }
            }
            Verdict::Refused(refusal, why) => {
                metrics
                    .break_glass_refused
                    .get_or_create(&BreakGlassRefusedLabels {
                        reason: refusal.as_str().to_owned(),
                    })
                    .inc();
                tracing::warn!(uid = review.uid(), user = %review.user().username, %object,
                    refusal = refusal.as_str(), %why, "break-glass annotations refused");
            }
            Verdict::Ignored(why) => {
                tracing::info!(uid = review.uid(), user = %review.user().username, %object, %why,
                    "break-glass annotations ignored");
            }
            Verdict::Absent => {}
        }
    }
}

/// The admission endpoints. The API server appends `?timeout=…` to the path; routing ignores it.
pub fn admission_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .route("/mutate", post(mutate))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            close_when_draining,
        ))
        .with_state(app)
}

/// Once shutdown has begun, every HTTP/1.1 answer says `Connection: close`, so that a client
/// retires each keep-alive connection after its answer instead of sending its next review on a
/// connection the drain is about to close (a request written as the server closes an idle
/// connection is lost, and the API server does not resend a POST). HTTP/2 clients get a GOAWAY
/// instead, which tells them which streams were not processed.
async fn close_when_draining(
    State(app): State<Arc<App>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let http1 = request.version() < axum::http::Version::HTTP_2;
    let mut response = next.run(request).await;
    if http1 && app.readiness.is_draining() {
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    response
}

/// /healthz, /readyz and /metrics.
pub fn health_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(app)
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    match app.readiness.check() {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        app.metrics.encode(),
    )
        .into_response()
}

async fn validate(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    review(app, Endpoint::Validate, &headers, body).await
}

async fn mutate(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    review(app, Endpoint::Mutate, &headers, body).await
}

/// A request we cannot answer with an AdmissionReview. The body is a `Status` like the API
/// server's own errors, naming what is wrong.
struct HttpError {
    status: StatusCode,
    message: String,
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "code": self.status.as_u16(),
            "reason": self.status.canonical_reason().unwrap_or("Error"),
            "message": self.message,
        });
        (self.status, axum::Json(body)).into_response()
    }
}

#[tracing::instrument(name = "review", skip_all, fields(endpoint = endpoint.as_str()))]
async fn review(app: Arc<App>, endpoint: Endpoint, headers: &HeaderMap, body: Body) -> Response {
    let start = Instant::now();
    // Dropped however this future ends, including when the client goes away mid-review.
    let _in_flight = app.metrics.in_flight();
    let deadline = start + app.limits.request_timeout;
    let result = tokio::time::timeout_at(
        tokio::time::Instant::from_std(deadline),
        answer(&app, endpoint, headers, body, deadline),
    )
    .await
    .unwrap_or(Err(Failure::Timeout));
    let (outcome, response) = match result {
        Ok((outcome, body)) => (
            outcome,
            (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response(),
        ),
        Err(Failure::Invalid(error)) => {
            tracing::info!(status = error.status.as_u16(), error = %error.message, "rejected request");
            (ReviewResult::Invalid, error.into_response())
        }
        Err(Failure::TooLarge(error, unread)) => {
            tracing::info!(status = error.status.as_u16(), error = %error.message, "rejected request");
            (ReviewResult::Invalid, answered_before_read(error, unread))
        }
        Err(Failure::Timeout) => {
            tracing::warn!(timeout = ?app.limits.request_timeout, "review timed out; the webhook failurePolicy applies");
            let error = HttpError {
                status: StatusCode::GATEWAY_TIMEOUT,
                message: format!(
                    "review not answered within {:?}",
                    app.limits.request_timeout
                ),
            };
            (ReviewResult::Timeout, error.into_response())
        }
    };
    app.metrics
        .review(endpoint, outcome, start.elapsed().as_secs_f64());
    response
}

/// Why a review gets no AdmissionReview answer.
enum Failure {
    Invalid(HttpError),
    /// The body is over the limit; the rest of it, unread, goes with the answer.
    TooLarge(HttpError, Body),
    Timeout,
}

async fn answer(
    app: &App,
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: Body,
    deadline: Instant,
) -> Result<(ReviewResult, Vec<u8>), Failure> {
    let bytes = read_body(headers, body, app.limits.max_body_bytes).await?;
    // The concurrency slot is taken once the body is complete: a slow uploader holds a
    // connection, not a slot that evaluations wait for. Waiting for a permit counts against
    // the request timeout, so overload surfaces as 504. The semaphore is never closed, so
    // acquiring only ever waits.
    let Ok(_permit) = app.permits.acquire().await else {
        return Err(Failure::Timeout);
    };
    let review = admission::decode(&bytes).map_err(|e| {
        Failure::Invalid(HttpError {
            status: StatusCode::BAD_REQUEST,
            message: e.to_string(),
        })
    })?;
    let decision_start = Instant::now();
    let (decision, review) = app
        .decide(endpoint, review, deadline)
        .await
        .ok_or(Failure::Timeout)?;
    app.record(endpoint, &review, &decision);
    let (uid, object) = (review.uid(), review.object_ref());
    let outcome = if !decision.response.allowed {
        ReviewResult::Denied
    } else if decision.response.is_patched() {
        ReviewResult::Patched
    } else {
        ReviewResult::Allowed
    };
    tracing::debug!(
        uid = %uid,
        kind = %object.kind,
        namespace = %object.namespace,
        name = %object.name,
        operation = review.operation().map(|o| o.as_str()).unwrap_or_default(),
        dry_run = review.dry_run(),
        decision = outcome.as_str(),
        latency_us = decision_start.elapsed().as_micros() as u64,
        "review"
    );
    Ok((outcome, decision.response.encode(uid)))
}

/// The whole body, up to `limit` bytes. Past the limit (by its Content-Length, before reading
/// anything, or while reading) the answer is 413 with the unread rest of the body.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, Failure> {
    use http_body_util::BodyExt as _;
    let too_large = |body: Body| {
        Failure::TooLarge(
            HttpError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: format!(
                    "request body exceeds {limit} bytes; raise --max-body-bytes if such objects are expected"
                ),
            },
            body,
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(body));
    }
    let mut body = body;
    let mut collected = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            Failure::Invalid(HttpError {
                status: StatusCode::BAD_REQUEST,
                message: format!("cannot read request body: {e}"),
            })
        })?;
        if let Ok(data) = frame.into_data() {
            if collected.len() + data.len() > limit {
                return Err(too_large(body));
            }
            collected.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(collected))
}

/// An error answered before the request body was read to its end. The unread body is kept
/// until the answer has been sent, then read and discarded for a bounded while
/// ([`DRAIN_BYTES`], [`DRAIN_TIME`]), so that a client still uploading sees its request end
/// normally and reads the answer (curl, for one, reports a reset stream as an error). Past
/// the bound, HTTP/2 ends the request stream with RST_STREAM NO_ERROR after the complete
/// response: "stop sending, here is the answer" (RFC 9113, section 8.1). Dropped before the
/// answer is sent, the stream would be cancelled first and the client would see no status at
/// all. HTTP/1.1 closes the connection after the answer.
fn answered_before_read(error: HttpError, unread: Body) -> Response {
    let (parts, body) = error.into_response().into_parts();
    Response::from_parts(
        parts,
        Body::new(HoldUntilSent {
            answer: body,
            unread: Some(unread),
        }),
    )
}

/// How much of an oversized body is read and discarded after the answer, at most.
const DRAIN_BYTES: usize = 64 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// A response body that owns the request's unread body until it is dropped itself, which
/// the server does once the response is sent.
struct HoldUntilSent {
    answer: Body,
    unread: Option<Body>,
}

impl Drop for HoldUntilSent {
    fn drop(&mut self) {
        let (Some(mut unread), Ok(runtime)) =
            (self.unread.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        runtime.spawn(async move {
            use http_body_util::BodyExt as _;
            let drain = async {
                let mut read = 0;
                while let Some(Ok(frame)) = unread.frame().await {
                    read += frame.data_ref().map_or(0, |d| d.len());
                    if read > DRAIN_BYTES {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
        });
    }
}

impl http_body::Body for HoldUntilSent {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        std::pin::Pin::new(&mut self.answer).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.answer.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.answer.size_hint()
    }
}

/// Both listeners, bound and ready to serve.
pub struct Server {
    https: TcpListener,
    health: TcpListener,
    app: Arc<App>,
    tls: Arc<TlsStore>,
    shutdown_delay: Duration,
    drain_timeout: Duration,
    cert_poll_interval: Duration,
    tasks: Vec<BackgroundTask>,
    stop_hooks: Vec<BackgroundTask>,
}

/// Work that runs while the server does (watchers), stopped when it stops.
pub type BackgroundTask = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// How the server is put together; the CLI fills it from flags.
pub struct ServerOptions {
    pub listen: SocketAddr,
    pub health_listen: SocketAddr,
    pub shutdown_delay: Duration,
    pub drain_timeout: Duration,
    pub cert_poll_interval: Duration,
}

impl Server {
    pub async fn bind(
        options: ServerOptions,
        app: Arc<App>,
        tls: Arc<TlsStore>,
    ) -> std::io::Result<Self> {
        let https = TcpListener::bind(options.listen).await?;
        let health = TcpListener::bind(options.health_listen).await?;
        Ok(Self {
            https,
            health,
            app,
            tls,
            shutdown_delay: options.shutdown_delay,
            drain_timeout: options.drain_timeout,
            cert_poll_interval: options.cert_poll_interval,
            tasks: Vec::new(),
            stop_hooks: Vec::new(),
        })
    }

    /// Runs `task` alongside the server until it stops.
    pub fn with_task(mut self, task: impl Future<Output = ()> + Send + 'static) -> Self {
        self.tasks.push(Box::pin(task));
        self
    }

    /// Runs `hook` once the background tasks are stopped (releasing the Lease), for at most 5 s.
    pub fn with_stop_hook(mut self, hook: impl Future<Output = ()> + Send + 'static) -> Self {
        self.stop_hooks.push(Box::pin(hook));
        self
    }

    pub fn https_addr(&self) -> std::io::Result<SocketAddr> {
        self.https.local_addr()
    }

    pub fn health_addr(&self) -> std::io::Result<SocketAddr> {
        self.health.local_addr()
    }

    /// Serves until `shutdown` resolves, then stops accepting and drains in-flight reviews for at
    /// most the drain timeout. Returns whether every connection finished in time.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> bool {
        let Self {
            https,
            health,
            app,
            tls,
            shutdown_delay,
            drain_timeout,
            cert_poll_interval,
            tasks,
            stop_hooks,
        } = self;
        tracing::info!(
            https = %https.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            health = %health.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            "listening"
        );
        let mut background = vec![tokio::spawn(tls.clone().watch(cert_poll_interval))];
        background.extend(tasks.into_iter().map(tokio::spawn));

        let (health_stop_tx, health_stop_rx) = tokio::sync::oneshot::channel::<()>();
        let health_task = tokio::spawn(
            axum::serve(health, health_router(app.clone()))
                .with_graceful_shutdown(async {
                    let _ = health_stop_rx.await;
                })
                .into_future(),
        );

        let graceful = GracefulShutdown::new();
        let connections = Connections::new(&app, tls);
        accept_until(&https, &connections, &graceful, shutdown).await;

        app.readiness.set_draining();
        if !shutdown_delay.is_zero() {
            // Keep serving during the delay: endpoints may still route to us for a while.
            tracing::info!(delay = ?shutdown_delay, "shutdown requested; unready, still serving");
            accept_until(
                &https,
                &connections,
                &graceful,
                tokio::time::sleep(shutdown_delay),
            )
            .await;
        }
        drop(https);
        tracing::info!(timeout = ?drain_timeout, "draining in-flight reviews");
        let drained = tokio::time::timeout(drain_timeout, graceful.shutdown())
            .await
            .is_ok();
        if drained {
            tracing::info!("all connections drained");
        } else {
            tracing::warn!("drain timeout reached; closing remaining connections");
        }
        for task in background {
            task.abort();
            let _ = task.await;
        }
        for hook in stop_hooks {
            let _ = tokio::time::timeout(Duration::from_secs(5), hook).await;
        }
        let _ = health_stop_tx.send(());
        let _ = health_task.await;
        drained
    }
}

/// Everything a new HTTPS connection needs.
struct Connections {
    tls: Arc<TlsStore>,
    builder: auto::Builder<TokioExecutor>,
    service: Router,
    metrics: Arc<Metrics>,
    handshake_timeout: Duration,
    idle_timeout: Duration,
}

/// A connection's stream, noting when it last received bytes, for the idle timeout.
struct Watched<S> {
    inner: S,
    started: Instant,
    /// Milliseconds from `started` to the last read that returned data.
    last_read: Arc<std::sync::atomic::AtomicU64>,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let now = self.started.elapsed().as_millis() as u64;
            self.last_read
                .store(now, std::sync::atomic::Ordering::Relaxed);
        }
        polled
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Resolves once nothing has been received for `limit`.
async fn idle_for(started: Instant, last_read: &std::sync::atomic::AtomicU64, limit: Duration) {
    loop {
        let last = Duration::from_millis(last_read.load(std::sync::atomic::Ordering::Relaxed));
        let quiet = started.elapsed().saturating_sub(last);
        if quiet >= limit {
            return;
        }
        tokio::time::sleep(limit - quiet).await;
    }
}

impl Connections {
    fn new(app: &Arc<App>, tls: Arc<TlsStore>) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(app.limits.header_timeout)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(250)
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(10));
        Self {
            tls,
            builder,
            service: admission_router(app.clone()),
            metrics: app.metrics.clone(),
            handshake_timeout: app.limits.header_timeout,
            idle_timeout: app.limits.idle_timeout,
        }
    }

    /// Handshakes and serves one connection on its own task, tracked for the drain.
    fn spawn(&self, tcp: tokio::net::TcpStream, peer: SocketAddr, graceful: &GracefulShutdown) {
        let _ = tcp.set_nodelay(true);
        // The configuration current now: a rotation only affects connections opened after it.
        let acceptor = self.tls.acceptor();
        let builder = self.builder.clone();
        let service = TowerToHyperService::new(self.service.clone());
        let watcher = graceful.watcher();
        let metrics = self.metrics.clone();
        let handshake_timeout = self.handshake_timeout;
        let idle_timeout = self.idle_timeout;
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    metrics.tls_handshake_failed();
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    metrics.tls_handshake_failed();
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let started = Instant::now();
            let last_read = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let stream = Watched {
                inner: stream,
                started,
                last_read: last_read.clone(),
            };
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            // Nothing received for the idle timeout, which outlasts any request's own limits:
            // no review is in flight, and the connection is dropped.
            tokio::select! {
                served = watcher.watch(conn) => if let Err(error) = served {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                },
                () = idle_for(started, &last_read, idle_timeout) => {
                    tracing::debug!(%peer, ?idle_timeout, "closing an idle connection");
                }
            }
        });
    }
}

async fn accept_until(
    listener: &TcpListener,
    connections: &Connections,
    graceful: &GracefulShutdown,
    stop: impl Future<Output = ()>,
) {
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => connections.spawn(tcp, peer, graceful),
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut stop => return,
        }
    }
}
