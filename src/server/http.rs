//! The HTTP side of the webhook: the admission router (`/validate`, `/mutate`), the health
//! router (`/healthz`, `/readyz`, `/metrics`), and how a request body becomes an answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::admission::{self, Endpoint};
use crate::telemetry::metrics::ReviewResult;

use super::app::App;

/// The admission endpoints. The API server appends `?timeout=…` to the path; routing ignores it.
pub fn router(app: Arc<App>) -> Router {
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

#[cfg(test)]
mod tests {
    //! The routers as the API server and the kubelet meet them, without a socket: every answer
    //! the webhook gives that is not a decision (400, 413, 504, draining) and the health port.
    use std::path::Path;
    use std::time::Duration;

    use axum::http::{Method, Request, StatusCode, Version, header};
    use serde_json::{Value, json};
    use tower::ServiceExt as _;

    use super::*;
    use crate::decide::Decider;
    use crate::server::app::Limits;
    use crate::state::hotswap::HotSwap;
    use crate::state::inventory_store::InventoryStore;
    use crate::state::readiness::Readiness;
    use crate::telemetry::metrics::Metrics;

    const BUNDLE: &str = r#"
apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata: {name: k8sdenylabel}
spec:
  crd: {spec: {names: {kind: K8sDenyLabel}}}
  targets:
  - target: admission.k8s.gatekeeper.sh
    rego: |
      package k8sdenylabel
      violation[{"msg": "labelled deny"}] { input.review.object.metadata.labels.deny == "yes" }
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sDenyLabel
metadata: {name: deny-label}
spec: {match: {kinds: [{apiGroups: [""], kinds: ["Pod"]}]}}
"#;

    fn app(max_body_bytes: usize) -> Arc<App> {
        let docs = crate::manifest::parse_str(BUNDLE, Path::new("bundle.yaml")).unwrap();
        let bundle = crate::bundle::Bundle::from_documents(docs, &Default::default()).unwrap();
        let readiness = Arc::new(Readiness::default());
        App::new(
            Arc::new(HotSwap::new(Decider::new(vec!["kube-system".into()]), None)),
            Arc::new(HotSwap::new(bundle, None)),
            Arc::new(InventoryStore::new(Vec::new())),
            Arc::new(Metrics::new()),
            Limits {
                max_body_bytes,
                header_timeout: Duration::from_secs(5),
                request_timeout: Duration::from_secs(5),
                idle_timeout: Duration::from_secs(60),
                max_concurrent: 4,
                inline_budget: Duration::from_millis(50),
                eval_threads: 1,
            },
            readiness,
            None,
        )
    }

    /// The captured Pod CREATE, with `labels`.
    fn pod_review(labels: Value) -> Vec<u8> {
        let mut review: Value = serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/admission/validate-create-pod.json"
        )))
        .unwrap();
        review["request"]["object"]["metadata"]["labels"] = labels;
        serde_json::to_vec(&review).unwrap()
    }

    fn post(path: &str, body: Vec<u8>) -> Request<Body> {
        Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, body.len())
            .body(Body::from(body))
            .unwrap()
    }

    async fn json_of(response: Response) -> Value {
        use http_body_util::BodyExt as _;
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_review_is_answered_with_its_uid_and_the_bundles_verdict() {
        let app = app(1 << 20);
        let allowed = router(app.clone())
            .oneshot(post(
                "/validate?timeout=10s",
                pod_review(json!({"app": "web"})),
            ))
            .await
            .unwrap();
        assert_eq!(allowed.status(), StatusCode::OK);
        assert_eq!(allowed.headers()[header::CONTENT_TYPE], "application/json");
        let answer = json_of(allowed).await;
        assert_eq!(answer["kind"], "AdmissionReview");
        assert_eq!(
            answer["response"]["uid"],
            "d7a92b16-d0be-465c-943c-d6b9d76ed064"
        );
        assert_eq!(answer["response"]["allowed"], true);

        let denied = router(app)
            .oneshot(post("/validate", pod_review(json!({"deny": "yes"}))))
            .await
            .unwrap();
        let answer = json_of(denied).await;
        assert_eq!(answer["response"]["allowed"], false);
        let message = answer["response"]["status"]["message"].as_str().unwrap();
        assert!(message.contains("labelled deny"), "{message}");
    }

    #[tokio::test]
    async fn what_is_not_an_admission_review_is_a_400_status_naming_the_problem() {
        for body in [&b"{not json"[..], br#"{"kind": "Pod"}"#, b""] {
            let response = router(app(1 << 20))
                .oneshot(post("/mutate", body.to_vec()))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body:?}");
            let status = json_of(response).await;
            assert_eq!(status["kind"], "Status");
            assert_eq!(status["code"], 400);
            assert!(!status["message"].as_str().unwrap().is_empty());
        }
        let unknown = router(app(1 << 20))
            .oneshot(post("/admit", pod_review(json!({}))))
            .await
            .unwrap();
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_a_413_that_says_which_flag_raises_it() {
        let body = pod_review(json!({"app": "web"}));
        let response = router(app(body.len() - 1))
            .oneshot(post("/validate", body))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let status = json_of(response).await;
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .contains("--max-body-bytes"),
            "{status}"
        );
    }

    #[tokio::test]
    async fn draining_closes_http1_connections_after_their_answer_and_not_http2_ones() {
        let app = app(1 << 20);
        app.readiness().set_draining();
        for (version, close) in [(Version::HTTP_11, true), (Version::HTTP_2, false)] {
            let mut request = post("/validate", pod_review(json!({"app": "web"})));
            *request.version_mut() = version;
            let response = router(app.clone()).oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(
                response.headers().get(header::CONNECTION).is_some(),
                close,
                "{version:?}"
            );
        }
    }

    #[tokio::test]
    async fn readyz_says_what_is_missing_and_metrics_count_the_reviews() {
        let app = app(1 << 20);
        let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
        let not_ready = health_router(app.clone())
            .oneshot(get("/readyz"))
            .await
            .unwrap();
        assert_eq!(not_ready.status(), StatusCode::SERVICE_UNAVAILABLE);
        app.readiness().set_certificates_loaded();
        app.readiness().set_policies_loaded();
        let ready = health_router(app.clone())
            .oneshot(get("/readyz"))
            .await
            .unwrap();
        assert_eq!(ready.status(), StatusCode::OK);
        let healthz = health_router(app.clone())
            .oneshot(get("/healthz"))
            .await
            .unwrap();
        assert_eq!(healthz.status(), StatusCode::OK);

        router(app.clone())
            .oneshot(post("/validate", pod_review(json!({"deny": "yes"}))))
            .await
            .unwrap();
        let metrics = health_router(app).oneshot(get("/metrics")).await.unwrap();
        assert!(
            metrics.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        use http_body_util::BodyExt as _;
        let text = metrics.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&text);
        assert!(
            text.contains(
                r#"palisade_admission_reviews_total{endpoint="validate",result="denied"} 1"#
            ),
            "{text}"
        );
    }
}
