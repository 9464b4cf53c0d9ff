//! The background audit, run by the leader: every object of the kinds the constraints match,
//! listed from the API a page at a time, each page evaluated before the next is fetched, through
//! the one decision path (as Gatekeeper's audit: no operation, no userInfo); then PolicyReports
//! and the default-deny coverage, replaced at each run. Namespaces come from the live inventory,
//! which holds them whole; its other objects are pruned to what templates read, so the audit
//! does not judge them from there.
//!
//! The evaluation runs on one blocking thread, so an audit takes at most one core for a short
//! burst; reviews keep their own threads and snapshots and never wait for it.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Instant;

use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use serde_json::Value;

use crate::audit::{self, Presented, report};
use crate::bundle::{Bundle, SyncKind};
use crate::cluster::inventory_feed::typed;
use crate::decide::Decider;
use crate::state::hotswap::HotSwap;
use crate::state::inventory_store::InventoryStore;
use crate::telemetry::metrics::{AuditViolationLabels, MatrixLabels, Metrics, ResultLabels};
use crate::zero_trust::Scope;

/// The field manager of the reports.
pub const FIELD_MANAGER: &str = "palisade-audit";

/// What the audit reads.
#[derive(Clone)]
pub struct Auditor {
    pub client: kube::Client,
    pub decider: Arc<HotSwap<Decider>>,
    pub bundle: Arc<HotSwap<Bundle>>,
    pub inventory: Arc<InventoryStore>,
    /// Kinds the inventory feed watched from the start. Namespaces are read from the inventory
    /// when they are among these and still synced by the bundle of the run (their watch has run
    /// since the start); otherwise they are listed from the API, like every other kind, so a
    /// watch that has not listed yet (or was stopped) never hides objects from the audit.
    pub synced: Vec<SyncKind>,
    pub scope: Scope,
    pub metrics: Arc<Metrics>,
    /// The audit waits for the feed's first complete list (before it, namespaces would be
    /// missing and every namespaced object would fail closed) and for the cluster's policies
    /// (before them, its reports would miss their constraints).
    pub readiness: Arc<crate::state::readiness::Readiness>,
}

/// A kind listed a page at a time (`limit` and `continue`).
struct Pages {
    api: Option<(Api<DynamicObject>, ApiResource)>,
    /// The next page's request; `None` after the last.
    params: Option<ListParams>,
}

impl Pages {
    async fn next(&mut self) -> anyhow::Result<Option<Vec<Value>>> {
        let (Some((api, resource)), Some(params)) = (&self.api, self.params.take()) else {
            return Ok(None);
        };
        let page = api.list(&params).await?;
        self.params = page
            .metadata
            .continue_
            .filter(|c| !c.is_empty())
            .map(|token| params.continue_token(&token));
        Ok(Some(
            page.items.into_iter().map(|o| typed(o, resource)).collect(),
        ))
    }
}

/// What one run evaluates against.
struct Run<'a> {
    decider: &'a Arc<Decider>,
    bundle: &'a Arc<Bundle>,
    inventory: &'a Arc<crate::inventory::Inventory>,
    synced_now: &'a [SyncKind],
    page_size: u32,
}

/// What one run found, for tests and logs.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub objects: usize,
    pub violations: usize,
    /// Reports written; 0 when the PolicyReport CRDs are not installed.
    pub reports: usize,
}

/// Said once each, not at every run.
#[derive(Default)]
struct Said {
    crd_missing: bool,
    unserved: HashSet<(String, String)>,
    wildcard: bool,
}

/// The (group, kind) pairs the constraints name; whether any constraint matches every kind.
pub fn audited_kinds(bundle: &Bundle) -> (BTreeSet<(String, String)>, bool) {
    let mut kinds = BTreeSet::new();
    let mut wildcard = false;
    for constraint in bundle.policies().constraints() {
        let selectors = &constraint.matcher.kinds;
        if selectors.is_empty() {
            wildcard = true;
        }
        for s in selectors {
            if s.kinds.is_empty() || s.api_groups.is_empty() {
                wildcard = true;
                continue;
            }
            for kind in &s.kinds {
                for group in &s.api_groups {
                    if kind == "*" || group == "*" {
                        wildcard = true;
                    } else {
                        kinds.insert((group.clone(), kind.clone()));
                    }
                }
            }
        }
        // Workloads expanded into what the constraint judges, as Gatekeeper's audit expands them.
        let parents = bundle.expansions().parents_of(|gvk| {
            constraint.matcher.may_match_kind(
                &gvk.group,
                &gvk.kind,
                crate::admission::Source::Generated,
            )
        });
        for p in parents {
            for (group, kind) in p.api_groups.iter().zip(&p.kinds) {
                kinds.insert((group.clone(), kind.clone()));
            }
        }
    }
    (kinds, wildcard)
}

impl Auditor {
    /// Audits on the configured interval until the task is dropped (when leadership ends).
    pub async fn run(self) {
        let mut said = Said::default();
        loop {
            let settings = self.decider.load().config().audit.clone();
            if !self.readiness.inventory_synced() || !self.readiness.cluster_policies_listed() {
                tracing::debug!(
                    "audit waits for the inventory and the cluster's policies to be listed"
                );
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
            if settings.enabled {
                match self.run_once(&mut said).await {
                    Ok(summary) => {
                        tracing::info!(
                            objects = summary.objects,
                            violations = summary.violations,
                            reports = summary.reports,
                            "audit finished"
                        );
                    }
                    Err(error) => {
                        self.metrics
                            .audit()
                            .runs
                            .get_or_create(&ResultLabels { result: "failed" })
                            .inc();
                        tracing::warn!(%error, "audit failed; it runs again at the next interval");
                    }
                }
            }
            tokio::time::sleep(settings.interval).await;
        }
    }

    async fn run_once(&self, said: &mut Said) -> anyhow::Result<RunSummary> {
        let start = Instant::now();
        let decider = self.decider.load();
        let settings = decider.config().audit.clone();
        let bundle = self.bundle.load();
        let inventory = self.inventory.load();
        let (kinds, wildcard) = audited_kinds(&bundle);
        let synced_now = super::inventory_feed::synced_kinds(&bundle);
        if wildcard && !said.wildcard {
            said.wildcard = true;
            tracing::warn!(
                "a constraint matches every kind: the audit covers the kinds constraints name and the synced kinds only; name the kinds in spec.match.kinds to audit them"
            );
        }
        let mut wanted: BTreeSet<(String, String)> = kinds;
        if wildcard {
            wanted.extend(
                self.synced
                    .iter()
                    .map(|k| (k.group.clone(), k.kind.clone())),
            );
        }
        // A page at a time: each page is listed, evaluated, folded into what the audit writes
        // and dropped before the next is fetched, so the audit holds one page of objects and
        // the results it will list, never a whole kind nor a finding per object.
        let page_size = settings.page_size;
        let now = time::OffsetDateTime::now_utc();
        let mut evaluated = report::Tally::new(
            settings.max_results_per_report,
            settings.constraint_violations_limit,
            now.unix_timestamp(),
        );
        let mut count = 0;
        let mut denies = audit::DefaultDenies::default();
        let mut policies_listed = false;
        let run = Run {
            decider: &decider,
            bundle: &bundle,
            inventory: &inventory,
            synced_now: &synced_now,
            page_size,
        };
        for (group, kind) in &wanted {
            let policies = group == "networking.k8s.io" && kind == "NetworkPolicy";
            policies_listed |= policies;
            count += self
                .audit_kind(&run, group, kind, &mut evaluated, &mut denies, said)
                .await?;
        }
        // Communication matrices judge the inventory as a whole.
        let (matrix_findings, matrices) = {
            let (bundle, inventory) = (bundle.clone(), inventory.clone());
            crate::state::background::in_background("audit", move || {
                audit::matrices(&bundle, &inventory)
            })
            .await
            .map_err(|e| anyhow::anyhow!("audit of the communication matrices failed: {e}"))?
        };
        matrix_findings.iter().for_each(|f| evaluated.add(f));
        if !policies_listed {
            // Only for the coverage: read a page at a time, nothing evaluated.
            let mut pages = self
                .pages("networking.k8s.io", "NetworkPolicy", page_size, said)
                .await?;
            while let Some(page) = pages.next().await? {
                for p in &page {
                    denies.add(p);
                }
            }
        }
        let coverage = denies.coverage(inventory.namespaces().map(|(_, ns)| ns), &self.scope);
        // Written and published one at a time.
        let reports = evaluated.drain_policy_reports(Some(&coverage));
        let published = self.publish(reports, page_size, said).await?;
        let timestamp = now
            .replace_nanosecond(0)
            .unwrap_or(now)
            .format(&time::format_description::well_known::Rfc3339)?;
        let statuses = evaluated.constraint_statuses(
            bundle
                .policies()
                .constraints()
                .iter()
                .filter(|c| bundle.is_from_cluster(&c.kind, &c.name))
                .map(|c| (c.kind.as_str(), c.name.as_str())),
            &timestamp,
        );
        self.write_constraint_statuses(statuses).await;

        let metrics = self.metrics.audit();
        metrics.violations.clear();
        let mut violations = 0;
        for (constraint, action, n) in evaluated.violations() {
            violations += n as usize;
            metrics
                .violations
                .get_or_create(&AuditViolationLabels {
                    constraint: constraint.to_owned(),
                    action,
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        metrics.objects.set(count as i64);
        metrics.duration_seconds.set(start.elapsed().as_secs_f64());
        metrics
            .last_run_timestamp_seconds
            .set(now.unix_timestamp() as f64);
        metrics.default_deny_coverage_ratio.set(coverage.ratio());
        metrics.matrix_coverage_ratio.clear();
        metrics.matrix_forbidden_flows.clear();
        metrics.matrix_blocked_flows.clear();
        for m in &matrices {
            let labels = MatrixLabels {
                constraint: m.constraint.clone(),
            };
            metrics
                .matrix_coverage_ratio
                .get_or_create(&labels)
                .set(m.audit.coverage());
            metrics
                .matrix_forbidden_flows
                .get_or_create(&labels)
                .set(m.audit.forbidden.len() as i64);
            metrics
                .matrix_blocked_flows
                .get_or_create(&labels)
                .set(m.audit.blocked.len() as i64);
        }
        metrics
            .namespaces_without_default_deny
            .set(coverage.lacking.len() as i64);
        metrics
            .runs
            .get_or_create(&ResultLabels { result: "ok" })
            .inc();
        if !coverage.lacking.is_empty() {
            tracing::info!(lacking = ?coverage.lacking, ratio = coverage.ratio(), "opted-in namespaces without a default-deny NetworkPolicy");
        }
        Ok(RunSummary {
            objects: count,
            violations,
            reports: published,
        })
    }

    /// Audits every object of a kind into `evaluated`, feeding the NetworkPolicies to `denies`;
    /// returns how many objects were judged. Namespaces synced since the start come from the
    /// inventory (held whole); every other kind is listed from the API a page at a time.
    async fn audit_kind(
        &self,
        run: &Run<'_>,
        group: &str,
        kind: &str,
        evaluated: &mut report::Tally,
        denies: &mut audit::DefaultDenies,
        said: &mut Said,
    ) -> anyhow::Result<usize> {
        let same = |k: &SyncKind| k.group == group && k.kind == kind;
        let namespaces = group.is_empty() && kind == "Namespace";
        if namespaces && self.synced.iter().any(same) && run.synced_now.iter().any(same) {
            let (decider, bundle, inventory) = (
                run.decider.clone(),
                run.bundle.clone(),
                run.inventory.clone(),
            );
            let count = inventory.namespaces().count();
            // Behind reviews when they need the core.
            let found = crate::state::background::in_background("audit", move || {
                let objects = inventory.namespaces().map(|(_, ns)| ns.clone());
                audit::evaluate(
                    &decider,
                    &bundle,
                    &inventory,
                    objects,
                    Presented::AsTheyAre,
                    time::OffsetDateTime::now_utc(),
                )
            })
            .await
            .map_err(|e| anyhow::anyhow!("audit evaluation failed: {e}"))?;
            found.iter().for_each(|f| evaluated.add(f));
            return Ok(count);
        }
        let policies = group == "networking.k8s.io" && kind == "NetworkPolicy";
        let mut count = 0;
        let mut pages = self.pages(group, kind, run.page_size, said).await?;
        while let Some(page) = pages.next().await? {
            count += page.len();
            if policies {
                for p in &page {
                    denies.add(p);
                }
            }
            let (decider, bundle, inventory) = (
                run.decider.clone(),
                run.bundle.clone(),
                run.inventory.clone(),
            );
            // Behind reviews when they need the core.
            let found = crate::state::background::in_background("audit", move || {
                audit::evaluate(
                    &decider,
                    &bundle,
                    &inventory,
                    page,
                    Presented::AsTheyAre,
                    time::OffsetDateTime::now_utc(),
                )
            })
            .await
            .map_err(|e| anyhow::anyhow!("audit evaluation failed: {e}"))?;
            found.iter().for_each(|f| evaluated.add(f));
        }
        Ok(count)
    }

    /// The objects of a kind, to be listed from the API a page at a time. A kind the API server
    /// does not serve has none (said once).
    async fn pages(
        &self,
        group: &str,
        kind: &str,
        page_size: u32,
        said: &mut Said,
    ) -> anyhow::Result<Pages> {
        let resource = match kube::discovery::group(&self.client, group).await {
            Ok(g) => g.recommended_kind(kind).map(|(r, _)| r),
            Err(kube::Error::Discovery(_)) => None,
            Err(e) => return Err(e.into()),
        };
        if resource.is_none() && said.unserved.insert((group.to_owned(), kind.to_owned())) {
            tracing::warn!(
                group,
                kind,
                "a constraint names a kind the API server does not serve; the audit skips it"
            );
        }
        Ok(Pages {
            api: resource.map(|r| (Api::all_with(self.client.clone(), &r), r)),
            params: Some(ListParams::default().limit(page_size.max(1))),
        })
    }

    /// Writes the audit's results into each cluster constraint's status (server-side apply of
    /// `/status` as [`FIELD_MANAGER`], beside each replica's `byPod` entry). A constraint that
    /// cannot be written is logged and retried at the next run; one deleted meanwhile is skipped.
    async fn write_constraint_statuses(&self, statuses: Vec<(String, String, Value)>) {
        use crate::cluster::policy_feed::{apply_status, constraint_resource};
        let mut failed = Vec::new();
        for (kind, name, status) in statuses {
            let resource = constraint_resource(&kind);
            let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
            let applied = apply_status(
                &api,
                FIELD_MANAGER,
                &resource.api_version,
                &kind,
                &name,
                &status,
            );
            match applied.await {
                Ok(()) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(error) => failed.push(format!("{kind}/{name}: {error}")),
            }
        }
        if !failed.is_empty() {
            tracing::warn!(constraints = %failed.join("; "), "cannot write the audit's results into these constraints' status; retried at the next run");
        }
    }

    /// Applies every report (server-side apply, so each run replaces the last) and deletes
    /// Palisade's reports in namespaces that have none any more. Returns how many were written;
    /// 0 when the CRDs are missing (said once).
    async fn publish(
        &self,
        reports: impl IntoIterator<Item = Value>,
        page_size: u32,
        said: &mut Said,
    ) -> anyhow::Result<usize> {
        let namespaced = report_resource("PolicyReport", "policyreports");
        let cluster = report_resource("ClusterPolicyReport", "clusterpolicyreports");
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let mut written = 0;
        let mut kept = BTreeSet::new();
        for r in reports {
            let name = r["metadata"]["name"]
                .as_str()
                .unwrap_or(report::REPORT_NAME);
            let api: Api<DynamicObject> = match r["metadata"]["namespace"].as_str() {
                Some(ns) => {
                    kept.insert(ns.to_owned());
                    Api::namespaced_with(self.client.clone(), ns, &namespaced)
                }
                None => Api::all_with(self.client.clone(), &cluster),
            };
            match api.patch(name, &params, &Patch::Apply(&r)).await {
                Ok(_) => written += 1,
                Err(kube::Error::Api(e)) if e.code == 404 && written == 0 => {
                    if !said.crd_missing {
                        said.crd_missing = true;
                        tracing::warn!(
                            "the PolicyReport CRDs (wgpolicyk8s.io/v1alpha2) are not installed: apply manifests/base/policyreport-crds.yaml to get reports; the audit keeps its metrics meanwhile"
                        );
                    }
                    return Ok(0);
                }
                Err(e) => return Err(e.into()),
            }
        }
        if said.crd_missing {
            said.crd_missing = false;
            tracing::info!("the PolicyReport CRDs are installed: reports are published");
        }
        // The reports of namespaces that no longer have one, read a page at a time (a cluster
        // has one report per namespace): only their names are kept.
        let all: Api<DynamicObject> = Api::all_with(self.client.clone(), &namespaced);
        let selector = format!("{}={}", report::MANAGED_BY.0, report::MANAGED_BY.1);
        let mut params = ListParams::default()
            .labels(&selector)
            .limit(page_size.max(1));
        let mut stale = Vec::new();
        loop {
            let page = all.list(&params).await?;
            stale.extend(page.items.into_iter().filter_map(|old| {
                let ns = old.metadata.namespace.unwrap_or_default();
                (!kept.contains(&ns)).then(|| (ns, old.metadata.name.unwrap_or_default()))
            }));
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        for (ns, name) in stale {
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &ns, &namespaced);
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(written)
    }
}

fn report_resource(kind: &str, plural: &str) -> ApiResource {
    let gvk = GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", kind);
    ApiResource::from_gvk_with_plural(&gvk, plural)
}
