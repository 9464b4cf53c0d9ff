//! The HTTPS admission server and the plain-HTTP health and metrics server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::admission::{Endpoint, Review};
use crate::bundle::Bundle;
use crate::decide::{Decider, Decision};
use crate::policy::Action;
use crate::state::hotswap::HotSwap;
use crate::state::inventory_store::InventoryStore;
use crate::state::readiness::{GenerationGate, Readiness};
use crate::telemetry::metrics::Metrics;

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

/// What the admission handlers share.
pub struct App {
    /// With the configuration file, swapped whole when it changes.
    pub(super) decider: Arc<HotSwap<Decider>>,
    pub(super) bundle: Arc<HotSwap<Bundle>>,
    pub(super) inventory: Arc<InventoryStore>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) limits: Limits,
    pub(super) readiness: Arc<Readiness>,
    pub(super) permits: Semaphore,
    pub(super) eval_pool: Arc<Semaphore>,
    /// NetworkPolicy reviews, which the model judges over the whole namespace: their own
    /// threads, half the pool's, so that one tenant's large policies never hold up the rest.
    pub(super) model_pool: Arc<Semaphore>,
    pub(super) gate: Option<GenerationGate>,
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
    pub(super) async fn decide(
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
    pub(super) fn record(&self, endpoint: Endpoint, review: &Review, decision: &Decision) {
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
        use crate::telemetry::metrics::{BreakGlassLabels, BreakGlassRefusedLabels};
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
