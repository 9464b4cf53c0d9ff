//! Prometheus metrics, served as OpenMetrics text on the health port.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::admission::Endpoint;
use crate::policy::{Action, FailureKind};

/// Review latency buckets, 50 µs to 10 s: Palisade answers in microseconds, the API server gives
/// up after at most 30 s.
const LATENCY_BUCKETS: [f64; 18] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 7.5, 10.0,
];

/// How a review ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ReviewResult {
    /// Allowed without a patch.
    Allowed,
    /// Allowed with a JSON patch.
    Patched,
    Denied,
    /// Not an AdmissionReview, or too large: HTTP 4xx.
    Invalid,
    /// No answer within the request timeout: HTTP 504.
    Timeout,
}

impl ReviewResult {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewResult::Allowed => "allowed",
            ReviewResult::Patched => "patched",
            ReviewResult::Denied => "denied",
            ReviewResult::Invalid => "invalid",
            ReviewResult::Timeout => "timeout",
        }
    }
}

impl EncodeLabelValue for ReviewResult {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReviewLabels {
    /// `validate` or `mutate`.
    endpoint: &'static str,
    result: ReviewResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViolationLabels {
    constraint: String,
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertWriteLabels {
    what: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    /// `validate` or `mutate`.
    endpoint: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// A review in flight; see [`Metrics::in_flight`].
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub struct Metrics {
    registry: Registry,
    reviews: Family<ReviewLabels, Counter>,
    latency: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
    tls_reloads: Counter,
    tls_reload_failures: Counter,
    tls_handshake_failures: Counter,
    tls_expiry: Gauge,
    /// Certificates and caBundles the leader's certificate manager wrote, by what.
    cert_writes: Family<CertWriteLabels, Counter>,
    violations: Family<ViolationLabels, Counter>,
    evaluation_failures: Family<FailureLabels, Counter>,
    policy_reloads: Counter,
    policy_reload_failures: Counter,
    policy_last_reload_ok: Gauge,
    policy_constraints: Gauge,
    cluster: ClusterMetrics,
    rollout: RolloutMetrics,
    audit: AuditMetrics,
}

/// What the configuration file's features report: break-glass and the file itself.
#[derive(Default)]
pub struct RolloutMetrics {
    pub break_glass: Family<BreakGlassLabels, Counter>,
    pub break_glass_refused: Family<BreakGlassRefusedLabels, Counter>,
    pub config_reloads: Counter,
    pub config_reload_failures: Counter,
    pub config_last_reload_ok: Gauge,
}

/// No user name: who used break-glass is in the log line of each use, not in a label that
/// every reader of the metrics sees (and that grows a series per person).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BreakGlassLabels {
    pub constraint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BreakGlassRefusedLabels {
    /// `not-allowed`, `changes-approved`, `no-reason` or `protected`.
    pub reason: String,
}

impl RolloutMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "break_glass",
            "Reviews admitted by break-glass, by bypassed constraint (constraint=\"\" when none was bypassed); who, in the log",
            self.break_glass.clone(),
        );
        registry.register(
            "break_glass_refused",
            "Requests with break-glass annotations denied, by why: not-allowed (a requester not on the allow-list added or changed them), changes-approved (kept them on a changed spec), no-reason (no visible character), protected (an object Palisade's safety depends on)",
            self.break_glass_refused.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration files loaded after start-up",
            self.config_reloads.clone(),
        );
        registry.register(
            "config_reload_failures",
            "Changed configuration files that were rejected; the last good configuration kept serving",
            self.config_reload_failures.clone(),
        );
        registry.register(
            "config_last_reload_ok",
            "1 when the configuration file on disk is the one being served, 0 while a rejected change is pending",
            self.config_last_reload_ok.clone(),
        );
    }
}

/// What the background audit reports, as of its last run.
#[derive(Default)]
pub struct AuditMetrics {
    pub violations: Family<AuditViolationLabels, Gauge>,
    pub duration_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub objects: Gauge,
    pub last_run_timestamp_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub runs: Family<ResultLabels, Counter>,
    pub default_deny_coverage_ratio: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub namespaces_without_default_deny: Gauge,
    /// Per communication matrix: the share of opted-in pod sets with no forbidden flow.
    pub matrix_coverage_ratio: Family<MatrixLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub matrix_forbidden_flows: Family<MatrixLabels, Gauge>,
    pub matrix_blocked_flows: Family<MatrixLabels, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MatrixLabels {
    pub constraint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuditViolationLabels {
    pub constraint: String,
    pub action: &'static str,
}

impl AuditMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "audit_violations",
            "Violations the last audit found in what runs, by constraint and enforcement action",
            self.violations.clone(),
        );
        registry.register(
            "audit_duration_seconds",
            "How long the last audit took",
            self.duration_seconds.clone(),
        );
        registry.register(
            "audit_objects",
            "Objects the last audit evaluated",
            self.objects.clone(),
        );
        registry.register(
            "audit_last_run_timestamp_seconds",
            "When the last audit finished (Unix time)",
            self.last_run_timestamp_seconds.clone(),
        );
        registry.register(
            "audit_runs",
            "Audits run, by result (ok, failed)",
            self.runs.clone(),
        );
        registry.register(
            "default_deny_coverage_ratio",
            "Share of the opted-in namespaces that hold a default-deny NetworkPolicy for ingress and egress (1 when none is opted in)",
            self.default_deny_coverage_ratio.clone(),
        );
        registry.register(
            "namespaces_without_default_deny",
            "Opted-in namespaces that hold no default-deny NetworkPolicy",
            self.namespaces_without_default_deny.clone(),
        );
        registry.register(
            "matrix_coverage_ratio",
            "Per communication matrix, the share of opted-in pod sets (per direction governed) whose own policies allow no flow the matrix forbids (1 when none is opted in)",
            self.matrix_coverage_ratio.clone(),
        );
        registry.register(
            "matrix_forbidden_flows",
            "Per communication matrix, the flows the last audit found that the matrix forbids",
            self.matrix_forbidden_flows.clone(),
        );
        registry.register(
            "matrix_blocked_flows",
            "Per communication matrix, the required flows the last audit found blocked",
            self.matrix_blocked_flows.clone(),
        );
    }
}

/// What the cluster side reports: the inventory feed, leader election and generation.
#[derive(Default)]
pub struct ClusterMetrics {
    /// Seconds since a watch of the inventory last failed without recovering; 0 when in sync.
    pub inventory_stale_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// 1 once every synced kind has been listed completely.
    pub inventory_synced: Gauge,
    pub inventory_objects: Gauge,
    pub inventory_watch_errors: Family<KindLabels, Counter>,
    pub inventory_batches: Counter,
    /// 1 while this replica holds the Lease.
    pub leader: Gauge,
    pub leader_transitions: Counter,
    pub default_deny_applied: Family<ReasonLabels, Counter>,
    pub generation_waits: Family<ResultLabels, Counter>,
    /// Generated ValidatingAdmissionPolicies and bindings applied, by reason.
    pub vap_sync_applied: Family<ReasonLabels, Counter>,
    /// Those deleted because they are no longer generated.
    pub vap_sync_deleted: Counter,
    /// Calls of the sync that failed, by operation and reason (each retried with backoff).
    pub vap_sync_failures: Family<VapFailureLabels, Counter>,
    /// 1 when the last sync left every generated object in place, 0 otherwise (or off).
    pub vap_sync_in_sync: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VapFailureLabels {
    /// read, apply, update, list, delete, generate.
    pub operation: &'static str,
    /// not_served (the API server has no admissionregistration.k8s.io/v1 kind: before 1.30),
    /// forbidden (RBAC), conflict, not_managed (a same-name object Palisade did not write),
    /// invalid (an object the API server or the sync refused), unavailable (anything else).
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

impl ClusterMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "inventory_stale_seconds",
            "Seconds since a watch of the cluster inventory failed without recovering (0: in sync); the last state keeps serving meanwhile",
            self.inventory_stale_seconds.clone(),
        );
        registry.register(
            "inventory_synced",
            "1 once every synced kind has been listed completely",
            self.inventory_synced.clone(),
        );
        registry.register(
            "inventory_objects",
            "Objects in data.inventory",
            self.inventory_objects.clone(),
        );
        registry.register(
            "inventory_watch_errors",
            "Failed list or watch calls of the inventory feed, by kind",
            self.inventory_watch_errors.clone(),
        );
        registry.register(
            "inventory_batches",
            "Batches of cluster changes applied to the inventory",
            self.inventory_batches.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease and runs the background work",
            self.leader.clone(),
        );
        registry.register(
            "leader_transitions",
            "Times this replica became or stopped being the leader",
            self.leader_transitions.clone(),
        );
        registry.register(
            "default_deny_applied",
            "Generated NetworkPolicies applied, by reason (created, restored)",
            self.default_deny_applied.clone(),
        );
        registry.register(
            "generation_waits",
            "Reviews held back for the default-deny generator, by result (allowed, denied)",
            self.generation_waits.clone(),
        );
        registry.register(
            "vap_sync_applied",
            "Generated ValidatingAdmissionPolicies and bindings applied by the leader, by reason (created, restored)",
            self.vap_sync_applied.clone(),
        );
        registry.register(
            "vap_sync_deleted",
            "ValidatingAdmissionPolicies and bindings Palisade generated before and deleted since",
            self.vap_sync_deleted.clone(),
        );
        registry.register(
            "vap_sync_failures",
            "Failed calls of the ValidatingAdmissionPolicy sync, by operation and reason; each is retried with backoff",
            self.vap_sync_failures.clone(),
        );
        registry.register(
            "vap_sync_in_sync",
            "1 when the leader's last ValidatingAdmissionPolicy sync left every generated object in place; 0 otherwise or when sync is off",
            self.vap_sync_in_sync.clone(),
        );
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

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

/// What the external data client counts; registered by every [`Metrics`].
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

static METRICS: std::sync::LazyLock<ExternalMetrics> =
    std::sync::LazyLock::new(|| ExternalMetrics {
        requests: Family::default(),
        duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
        cache_hits: Family::default(),
        cache_misses: Family::default(),
    });

/// The process's external data metrics (shared by every registry that registers them).
pub fn external() -> &'static ExternalMetrics {
    &METRICS
}

/// The external data client's counts (process-wide: the client serves every bundle), under
/// the names Gatekeeper's readers look for.
fn register_external_data(registry: &mut Registry) {
    let external = external();
    registry.register(
        "external_data_requests",
        "Requests sent to external data providers, by provider and result: ok, error (the template sees system_error), timeout",
        external.requests.clone(),
    );
    registry.register(
        "external_data_request_duration_seconds",
        "Time a request to an external data provider took, by provider",
        external.duration.clone(),
    );
    registry.register(
        "external_data_cache_hits",
        "Keys answered from the external data response cache, by provider",
        external.cache_hits.clone(),
    );
    registry.register(
        "external_data_cache_misses",
        "Keys sent to a provider because the cache did not hold them, by provider",
        external.cache_misses.clone(),
    );
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("palisade");
        let reviews = Family::<ReviewLabels, Counter>::default();
        registry.register(
            "admission_reviews",
            "Admission reviews answered, by endpoint and result",
            reviews.clone(),
        );
        let latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "admission_review_duration_seconds",
            "Time from request received to response, by endpoint",
            latency.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "admission_reviews_in_flight",
            "Reviews being read or evaluated",
            in_flight.clone(),
        );
        let tls_reloads = Counter::default();
        registry.register(
            "tls_reloads",
            "Serving certificates loaded from disk after start-up",
            tls_reloads.clone(),
        );
        let tls_reload_failures = Counter::default();
        registry.register(
            "tls_reload_failures",
            "Changed certificate material that was rejected; the previous certificate kept serving",
            tls_reload_failures.clone(),
        );
        let tls_handshake_failures = Counter::default();
        registry.register(
            "tls_handshake_failures",
            "Connections closed before or during the TLS handshake",
            tls_handshake_failures.clone(),
        );
        let tls_expiry = Gauge::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the serving certificate in use expires (Unix time); alert well before it",
            tls_expiry.clone(),
        );
        let cert_writes = Family::<CertWriteLabels, Counter>::default();
        registry.register(
            "certificate_manager_writes",
            "What the leader's certificate manager (serve --manage-certs) wrote: ca (a new CA), serving (a serving certificate), ca_bundle (the webhook configurations' caBundle)",
            cert_writes.clone(),
        );
        let violations = Family::<ViolationLabels, Counter>::default();
        registry.register(
            "violations",
            "Violations found, by constraint and enforcement action (dryrun ones are only counted and logged)",
            violations.clone(),
        );
        let evaluation_failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "evaluation_failures",
            "Constraints that could not be evaluated and failed closed, by kind: timeout, engine (an error in regorus), panic, match (a namespace that is not known)",
            evaluation_failures.clone(),
        );
        let policy_reloads = Counter::default();
        registry.register(
            "policy_reloads",
            "Policy bundles loaded after start-up",
            policy_reloads.clone(),
        );
        let policy_reload_failures = Counter::default();
        registry.register(
            "policy_reload_failures",
            "Changed policy bundles that were rejected; the last good bundle kept serving",
            policy_reload_failures.clone(),
        );
        let policy_last_reload_ok = Gauge::default();
        registry.register(
            "policy_last_reload_ok",
            "1 when the bundle and inventory on disk are the ones being served, 0 while a rejected change is pending",
            policy_last_reload_ok.clone(),
        );
        let policy_constraints = Gauge::default();
        registry.register(
            "policy_constraints",
            "Constraints in the bundle being served",
            policy_constraints.clone(),
        );
        let cluster = ClusterMetrics::default();
        cluster.register(&mut registry);
        let rollout = RolloutMetrics::default();
        rollout.register(&mut registry);
        let audit = AuditMetrics::default();
        audit.register(&mut registry);
        register_external_data(&mut registry);
        Self {
            cluster,
            rollout,
            audit,
            registry,
            violations,
            evaluation_failures,
            policy_reloads,
            policy_reload_failures,
            policy_last_reload_ok,
            policy_constraints,
            reviews,
            latency,
            in_flight,
            tls_reloads,
            tls_reload_failures,
            tls_handshake_failures,
            tls_expiry,
            cert_writes,
        }
    }

    pub fn review(&self, endpoint: Endpoint, result: ReviewResult, seconds: f64) {
        self.reviews
            .get_or_create(&ReviewLabels {
                endpoint: endpoint.as_str(),
                result,
            })
            .inc();
        self.latency
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.as_str(),
            })
            .observe(seconds);
    }

    /// Counts a review in flight until the guard is dropped, however the review ends: answered,
    /// timed out, or abandoned by a client that went away mid-review.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Reviews in flight now.
    pub fn reviews_in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    pub fn tls_reloaded(&self) {
        self.tls_reloads.inc();
    }

    /// The serving certificate in use expires at this Unix time.
    pub fn tls_expires_at(&self, unix: i64) {
        self.tls_expiry.set(unix);
    }

    /// The certificate manager wrote `what` (`ca`, `serving` or `ca_bundle`).
    pub fn certificate_written(&self, what: &'static str) {
        self.cert_writes
            .get_or_create(&CertWriteLabels { what })
            .inc();
    }

    pub fn tls_reload_failed(&self) {
        self.tls_reload_failures.inc();
    }

    pub fn tls_handshake_failed(&self) {
        self.tls_handshake_failures.inc();
    }

    pub fn violation(&self, constraint: &str, action: Action) {
        self.violations
            .get_or_create(&ViolationLabels {
                constraint: constraint.to_owned(),
                action: action.as_str(),
            })
            .inc();
    }

    /// The bundle loaded at start-up.
    pub fn policy_loaded(&self, constraints: usize) {
        self.policy_constraints.set(constraints as i64);
        self.policy_last_reload_ok.set(1);
    }

    pub fn policy_reloaded(&self, constraints: usize) {
        self.policy_reloads.inc();
        self.policy_constraints.set(constraints as i64);
    }

    pub fn policy_reload_failed(&self) {
        self.policy_reload_failures.inc();
    }

    /// Whether what is on disk is what is served (no rejected change pending).
    pub fn policy_current(&self, current: bool) {
        self.policy_last_reload_ok.set(i64::from(current));
    }

    /// A constraint that could not be evaluated, by why (see [`FailureKind`]).
    pub fn evaluation_failed(&self, kind: FailureKind) {
        self.evaluation_failures
            .get_or_create(&FailureLabels {
                kind: kind.as_str(),
            })
            .inc();
    }

    /// A review held back for the feed or the generator ended allowed or denied.
    pub fn generation_wait(&self, allowed: bool) {
        let result = if allowed { "allowed" } else { "denied" };
        self.cluster
            .generation_waits
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn cluster(&self) -> &ClusterMetrics {
        &self.cluster
    }

    pub fn rollout(&self) -> &RolloutMetrics {
        &self.rollout
    }

    pub fn audit(&self) -> &AuditMetrics {
        &self.audit
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
