//! What an audit publishes: `wgpolicyk8s.io/v1alpha2` PolicyReports (one per namespace) and a
//! ClusterPolicyReport (cluster-scoped objects and the default-deny coverage), the reports that
//! Kyverno, Kubewarden and their dashboards read; and, for `palisade audit`, a table, JSON and
//! JUnit.
//!
//! A result is `fail` for a deny or dryrun violation, `warn` for a warn violation and `error`
//! for a constraint that could not be evaluated; its `properties.enforcementAction` is the
//! constraint's own action. Only what fails is listed; `summary.pass` counts the audited objects
//! without a violation. A report lists at most `max_results` results (deny first); the summary
//! still counts every one, and the annotation `palisade.dev/results-omitted` says how many were
//! left out.
//!
//! [`policy_reports`] makes the reports, [`constraint_statuses`] the audit's part of each
//! constraint's `status`; [`text`], [`json()`] and [`junit`] are `palisade audit`'s formats.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use super::{Coverage, Finding};
use crate::object::ObjectRef;
use crate::policy::{Action, Violation};

/// The apiVersion of the reports: the Policy Working Group's PolicyReport API.
pub const API_VERSION: &str = "wgpolicyk8s.io/v1alpha2";
/// The name of every report Palisade writes.
pub const REPORT_NAME: &str = "palisade-audit";
/// The label on every report Palisade writes, by which the audit finds its stale reports.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "palisade");
/// On a report that lists fewer results than it counts: how many were left out.
pub const OMITTED_ANNOTATION: &str = "palisade.dev/results-omitted";
/// On the ClusterPolicyReport: the share of opted-in namespaces that hold a default-deny.
pub const COVERAGE_ANNOTATION: &str = "palisade.dev/default-deny-coverage";
/// The policy name of coverage results in the ClusterPolicyReport.
pub const COVERAGE_POLICY: &str = "default-deny-coverage";

/// The result of one violation.
fn result_of(v: &Violation) -> &'static str {
    if v.failure.is_some() {
        "error"
    } else if v.action == Action::Warn {
        "warn"
    } else {
        "fail"
    }
}

fn severity(v: &Violation) -> &'static str {
    match v.action {
        Action::Deny => "high",
        Action::Warn => "medium",
        Action::Dryrun => "low",
    }
}

fn reference(object: &ObjectRef, uid: Option<&str>) -> Value {
    let mut r =
        json!({"apiVersion": object.api_version(), "kind": object.kind, "name": object.name});
    if !object.namespace.is_empty() {
        r["namespace"] = json!(object.namespace);
    }
    if let Some(uid) = uid {
        r["uid"] = json!(uid);
    }
    r
}

/// A report's result in the making: a violation is kept as found, a few hundred bytes, and
/// written as JSON only when the report is.
#[derive(Debug)]
enum Row {
    Json(Value),
    /// The violation (without its details), the object and its uid.
    Violation(Box<(Violation, ObjectRef, Option<String>)>),
}

impl Row {
    fn result(&self) -> &'static str {
        match self {
            Row::Json(r) => match r["result"].as_str() {
                Some("warn") => "warn",
                Some("error") => "error",
                _ => "fail",
            },
            Row::Violation(row) => match result_of(&row.0) {
                "warn" => "warn",
                "error" => "error",
                _ => "fail",
            },
        }
    }

    fn into_json(self, now: i64) -> Value {
        match self {
            Row::Json(r) => r,
            Row::Violation(row) => {
                let (v, object, uid) = *row;
                json!({
                "source": "palisade",
                "policy": v.constraint,
                "rule": v.constraint_kind,
                "category": "Palisade",
                "severity": severity(&v),
                "result": result_of(&v),
                "scored": true,
                "message": v.message,
                "timestamp": {"seconds": now, "nanos": 0},
                "resources": [reference(&object, uid.as_deref())],
                "properties": {"enforcementAction": v.action.as_str(), "constraintKind": v.constraint_kind},
                })
            }
        }
    }
}

/// One report in the making.
#[derive(Debug, Default)]
struct Draft {
    /// (rank, result): deny results first when the list is cut.
    results: Vec<(u8, Row)>,
    /// Results added, listed or not.
    total: usize,
    pass: u64,
    counts: BTreeMap<&'static str, u64>,
}

impl Draft {
    /// Adds a result; only the `max_results` that [`Draft::finish`] lists are kept, so a report
    /// of many objects holds no more than it shows (the counts count them all).
    fn add(&mut self, rank: u8, result: Row, max_results: usize) {
        *self.counts.entry(result.result()).or_default() += 1;
        self.total += 1;
        self.results.push((rank, result));
        if self.results.len() >= 2 * max_results.max(1) {
            // As `finish` cuts: by rank, in the order added within one (a stable sort).
            self.results.sort_by_key(|(rank, _)| *rank);
            self.results.truncate(max_results);
        }
    }

    fn finish(
        mut self,
        kind: &str,
        namespace: Option<&str>,
        max_results: usize,
        now: i64,
    ) -> Value {
        self.results.sort_by_key(|(rank, _)| *rank);
        let total = self.total;
        self.results.truncate(max_results);
        let omitted = total - self.results.len();
        let mut metadata = json!({"name": REPORT_NAME, "labels": {MANAGED_BY.0: MANAGED_BY.1}});
        if let Some(ns) = namespace {
            metadata["namespace"] = json!(ns);
        }
        if omitted > 0 {
            metadata["annotations"] = json!({OMITTED_ANNOTATION: format!(
                "{omitted} of {total} results are not listed (audit.maxResultsPerReport: {max_results}); the summary counts all"
            )});
        }
        let count = |k: &str| self.counts.get(k).copied().unwrap_or(0);
        json!({
            "apiVersion": API_VERSION,
            "kind": kind,
            "metadata": metadata,
            "summary": {"pass": self.pass, "fail": count("fail"), "warn": count("warn"), "error": count("error"), "skip": 0},
            "results": self.results.into_iter().map(|(_, r)| r.into_json(now)).collect::<Vec<_>>(),
        })
    }
}

/// The PolicyReports (one per namespace with audited objects) and the ClusterPolicyReport, at
/// `now` (Unix seconds).
pub fn policy_reports(
    findings: &[Finding],
    coverage: Option<&Coverage>,
    max_results: usize,
    now: i64,
) -> Vec<Value> {
    let mut tally = Tally::new(max_results, 0, now);
    findings.iter().for_each(|f| tally.add(f));
    tally.take_policy_reports(coverage)
}

/// The audit's findings folded as they come, a page at a time, into what the audit writes: the
/// PolicyReports (only the results each will list are kept; the counts count all), the
/// constraints' statuses (only the violations each will list) and the violations per
/// constraint and action. What it holds grows with the namespaces and constraints, and with the
/// listed results, not with the objects audited. [`policy_reports`] and
/// [`constraint_statuses`] are its results for findings held at once.
#[derive(Debug, Default)]
pub struct Tally {
    max_results: usize,
    status_limit: usize,
    now: i64,
    namespaced: BTreeMap<String, Draft>,
    cluster: Draft,
    /// Per (constraint kind, name): the violations found, and those the status may list.
    statuses: BTreeMap<(String, String), StatusDraft>,
    /// Per (constraint, action): the violations found.
    counts: BTreeMap<(String, &'static str), u64>,
}

/// A listed violation's place in a status: deny first, then by object and message.
type StatusKey = (bool, ObjectRef, String);

#[derive(Debug, Default)]
struct StatusDraft {
    total: usize,
    /// The violations the status may list, with their place in its order.
    listed: Vec<(StatusKey, Value)>,
}

impl Tally {
    /// Reports of at most `max_results` results, statuses of at most `status_limit`
    /// violations, at `now` (Unix seconds).
    pub fn new(max_results: usize, status_limit: usize, now: i64) -> Self {
        Self {
            max_results,
            status_limit,
            now,
            ..Self::default()
        }
    }

    /// Folds one finding in.
    pub fn add(&mut self, f: &Finding) {
        let max_results = self.max_results;
        let namespace = f.report.as_deref().unwrap_or(f.object.namespace.as_str());
        let draft = if namespace.is_empty() {
            &mut self.cluster
        } else {
            // Looked up before it is owned: a namespace's name is copied once, not per finding.
            if !self.namespaced.contains_key(namespace) {
                self.namespaced
                    .insert(namespace.to_owned(), Draft::default());
            }
            match self.namespaced.get_mut(namespace) {
                Some(draft) => draft,
                None => return,
            }
        };
        if f.violations.is_empty() {
            draft.pass += 1;
        }
        for v in &f.violations {
            // Coverage (rank 0) first, then deny, warn and dryrun.
            let rank = match v.action {
                Action::Deny => 1,
                Action::Warn => 2,
                Action::Dryrun => 3,
            };
            draft.add(
                rank,
                Row::Violation(Box::new((
                    Violation {
                        details: Value::Null,
                        ..v.clone()
                    },
                    f.object.clone(),
                    f.uid.clone(),
                ))),
                max_results,
            );
        }
        for v in &f.violations {
            *self
                .counts
                .entry((v.constraint.clone(), v.action.as_str()))
                .or_default() += 1;
            let status = self
                .statuses
                .entry((v.constraint_kind.clone(), v.constraint.clone()))
                .or_default();
            status.total += 1;
            let mut entry = json!({
                "enforcementAction": v.action.as_str(),
                "group": f.object.group,
                "version": f.object.version,
                "kind": f.object.kind,
                "name": f.object.name,
                "message": v.message,
            });
            if !f.object.namespace.is_empty() {
                entry["namespace"] = json!(f.object.namespace);
            }
            status.listed.push((
                (
                    v.action != Action::Deny,
                    f.object.clone(),
                    v.message.clone(),
                ),
                entry,
            ));
            if status.listed.len() >= 2 * self.status_limit.max(1) {
                // As the status cuts: in its order, ties in the order found (a stable sort).
                status.listed.sort_by(|a, b| a.0.cmp(&b.0));
                status.listed.truncate(self.status_limit);
            }
        }
    }

    /// The violations found, per (constraint, action).
    pub fn violations(&self) -> impl Iterator<Item = (&str, &'static str, u64)> {
        self.counts
            .iter()
            .map(|((constraint, action), n)| (constraint.as_str(), *action, *n))
    }

    /// The PolicyReports (one per namespace with audited objects) and the ClusterPolicyReport,
    /// with the default-deny `coverage` when given. Their results are moved out of the tally,
    /// not copied: the statuses and counts stay.
    pub fn take_policy_reports(&mut self, coverage: Option<&Coverage>) -> Vec<Value> {
        self.drain_policy_reports(coverage).collect()
    }

    /// [`Tally::take_policy_reports`] one report at a time, each written as JSON only when it
    /// is reached, so that a caller that publishes them one by one holds one at a time: the
    /// namespaces' reports in their names' order, then the ClusterPolicyReport.
    pub fn drain_policy_reports(
        &mut self,
        coverage: Option<&Coverage>,
    ) -> impl Iterator<Item = Value> + use<> {
        let (now, max_results) = (self.now, self.max_results);
        let mut cluster = std::mem::take(&mut self.cluster);
        let mut cluster_metadata = None;
        if let Some(c) = coverage {
            for ns in &c.lacking {
                cluster.add(
                    0,
                    Row::Json(json!({
                        "source": "palisade",
                        "policy": COVERAGE_POLICY,
                        "rule": "DefaultDenyNetworkPolicy",
                        "category": "Zero trust",
                        "severity": "high",
                        "result": "fail",
                        "scored": true,
                        "message": format!("namespace {ns:?} is opted in to zero trust but holds no default-deny NetworkPolicy for ingress and egress: apply one with podSelector {{}} and policyTypes [Ingress, Egress]"),
                        "timestamp": {"seconds": now, "nanos": 0},
                        "resources": [{"apiVersion": "v1", "kind": "Namespace", "name": ns}],
                    })),
                    max_results,
                );
            }
            cluster.pass += (c.opted_in.len() - c.lacking.len()) as u64;
            cluster_metadata = Some(format!(
                "{:.3} ({} of {} opted-in namespaces hold a default-deny)",
                c.ratio(),
                c.opted_in.len() - c.lacking.len(),
                c.opted_in.len()
            ));
        }
        let namespaced = std::mem::take(&mut self.namespaced)
            .into_iter()
            .map(move |(ns, draft)| draft.finish("PolicyReport", Some(&ns), max_results, now));
        let cluster = std::iter::once_with(move || {
            let mut cluster = cluster.finish("ClusterPolicyReport", None, max_results, now);
            if let Some(text) = cluster_metadata {
                cluster["metadata"]["annotations"][COVERAGE_ANNOTATION] = json!(text);
            }
            cluster
        });
        namespaced.chain(cluster)
    }

    /// The constraints' statuses, as [`constraint_statuses`] makes them.
    pub fn constraint_statuses<'a>(
        &self,
        constraints: impl IntoIterator<Item = (&'a str, &'a str)>,
        timestamp: &str,
    ) -> Vec<(String, String, Value)> {
        constraints
            .into_iter()
            .map(|(kind, name)| {
                let found = self.statuses.get(&(kind.to_owned(), name.to_owned()));
                let total = found.map_or(0, |s| s.total);
                let mut listed: Vec<&(StatusKey, Value)> =
                    found.map(|s| s.listed.iter().collect()).unwrap_or_default();
                listed.sort_by(|a, b| a.0.cmp(&b.0));
                let listed: Vec<Value> = listed
                    .into_iter()
                    .take(self.status_limit)
                    .map(|(_, entry)| entry.clone())
                    .collect();
                let status = json!({
                    "auditTimestamp": timestamp,
                    "totalViolations": total,
                    "violations": listed,
                });
                (kind.to_owned(), name.to_owned(), status)
            })
            .collect()
    }
}

fn title(object: &ObjectRef) -> String {
    let kind = if object.group.is_empty() {
        object.kind.clone()
    } else {
        format!("{}.{}", object.kind, object.group)
    };
    format!("{kind}/{}", object.name)
}

/// A table by namespace, object and constraint, and a closing count.
pub fn text(findings: &[Finding], coverage: Option<&Coverage>) -> String {
    let mut rows: Vec<[String; 5]> = Vec::new();
    for f in findings {
        for v in &f.violations {
            let ns = if f.object.namespace.is_empty() {
                "(cluster)".to_owned()
            } else {
                f.object.namespace.clone()
            };
            rows.push([
                ns,
                title(&f.object),
                v.constraint.clone(),
                v.action.as_str().to_owned(),
                v.message.clone(),
            ]);
        }
    }
    if let Some(c) = coverage {
        for ns in &c.lacking {
            rows.push([
                "(cluster)".into(),
                format!("Namespace/{ns}"),
                COVERAGE_POLICY.into(),
                "report".into(),
                "opted in to zero trust but holds no default-deny NetworkPolicy".into(),
            ]);
        }
    }
    rows.sort();
    let header = ["NAMESPACE", "OBJECT", "CONSTRAINT", "ACTION", "MESSAGE"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()).take(4) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    if !rows.is_empty() {
        let line = |out: &mut String, cells: [&str; 5]| {
            for (i, cell) in cells.iter().enumerate().take(4) {
                let _ = write!(out, "{cell:<w$}  ", w = widths[i]);
            }
            let _ = writeln!(out, "{}", cells[4]);
        };
        line(&mut out, header);
        for row in &rows {
            line(&mut out, [&row[0], &row[1], &row[2], &row[3], &row[4]]);
        }
    }
    let count = |a: &str| rows.iter().filter(|r| r[3] == a).count();
    let violations = count("deny") + count("warn") + count("dryrun");
    let _ = writeln!(
        out,
        "{} object{} audited, {} violation{} ({} deny, {} warn, {} dryrun)",
        findings.len(),
        if findings.len() == 1 { "" } else { "s" },
        violations,
        if violations == 1 { "" } else { "s" },
        count("deny"),
        count("warn"),
        count("dryrun"),
    );
    if let Some(c) = coverage {
        let _ = writeln!(
            out,
            "default-deny coverage: {} of {} opted-in namespaces",
            c.opted_in.len() - c.lacking.len(),
            c.opted_in.len()
        );
    }
    out
}

/// The audit's part of a constraint's `status`, as Gatekeeper's audit writes it:
/// `auditTimestamp`, `totalViolations` (every violation) and `violations` (at most `limit`,
/// deny first, then in object order, so that an unchanged cluster gives an unchanged list).
/// One entry per `(kind, name)` in `constraints`, with 0 violations where none was found.
pub fn constraint_statuses<'a>(
    constraints: impl IntoIterator<Item = (&'a str, &'a str)>,
    findings: &[Finding],
    limit: usize,
    timestamp: &str,
) -> Vec<(String, String, Value)> {
    let mut tally = Tally::new(0, limit, 0);
    findings.iter().for_each(|f| tally.add(f));
    tally.constraint_statuses(constraints, timestamp)
}

/// A violation as the JSON outputs of `palisade test` and `palisade audit` show it.
pub fn violation_json(v: &Violation) -> Value {
    json!({
        "constraint": v.constraint,
        "constraintKind": v.constraint_kind,
        "enforcementAction": v.action.as_str(),
        "message": v.message,
        "details": v.details,
    })
}

/// One entry per object with its violations, and the coverage.
pub fn json(findings: &[Finding], coverage: Option<&Coverage>) -> Value {
    json!({
        "objects": findings.iter().map(|f| json!({
            "apiVersion": f.object.api_version(),
            "kind": f.object.kind,
            "namespace": f.object.namespace,
            "name": f.object.name,
            "violations": f.violations.iter().map(violation_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "coverage": coverage.map(|c| json!({
            "optedIn": c.opted_in,
            "lacking": c.lacking,
            "ratio": c.ratio(),
        })),
    })
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: one test suite per namespace, one test case per object; a deny violation is a
/// failure, warn and dryrun ones are written to the case's system-out.
pub fn junit(findings: &[Finding], coverage: Option<&Coverage>) -> String {
    // Per namespace: (object, its deny violations, its other violations as text).
    type Case<'a> = (String, Vec<&'a Violation>, Vec<String>);
    let mut suites: BTreeMap<String, Vec<Case>> = BTreeMap::new();
    for f in findings {
        let ns = if f.object.namespace.is_empty() {
            "(cluster)".to_owned()
        } else {
            f.object.namespace.clone()
        };
        let denied: Vec<&Violation> = f
            .violations
            .iter()
            .filter(|v| v.action == Action::Deny)
            .collect();
        let notes = f
            .violations
            .iter()
            .filter(|v| v.action != Action::Deny)
            .map(|v| format!("[{}] {} ({})", v.constraint, v.message, v.action))
            .collect();
        suites
            .entry(ns)
            .or_default()
            .push((title(&f.object), denied, notes));
    }
    let mut coverage_cases = Vec::new();
    if let Some(c) = coverage {
        for ns in &c.opted_in {
            coverage_cases.push((ns.clone(), c.lacking.contains(ns)));
        }
    }
    let failures: usize = suites
        .values()
        .flatten()
        .filter(|(_, d, _)| !d.is_empty())
        .count();
    let tests = findings.len() + coverage_cases.len();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"palisade audit\" tests=\"{tests}\" failures=\"{failures}\">"
    );
    for (ns, cases) in &suites {
        let failed = cases.iter().filter(|(_, d, _)| !d.is_empty()).count();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failed}\">",
            xml_escape(ns),
            cases.len()
        );
        for (name, denied, notes) in cases {
            let _ = write!(
                out,
                "    <testcase classname=\"{}\" name=\"{}\"",
                xml_escape(ns),
                xml_escape(name)
            );
            if denied.is_empty() && notes.is_empty() {
                out.push_str("/>\n");
                continue;
            }
            out.push_str(">\n");
            // One failure per test case, as JUnit readers expect: every denial in its body.
            if let Some(first) = denied.first() {
                let body: Vec<String> = denied
                    .iter()
                    .map(|v| format!("[{}] {}", v.constraint, v.message))
                    .collect();
                let _ = writeln!(
                    out,
                    "      <failure type=\"{}\" message=\"{}\">{}</failure>",
                    xml_escape(&first.constraint_kind),
                    xml_escape(&format!(
                        "{} deny violation{}: [{}] {}",
                        denied.len(),
                        if denied.len() == 1 { "" } else { "s" },
                        first.constraint,
                        first.message
                    )),
                    xml_escape(&body.join("\n"))
                );
            }
            if !notes.is_empty() {
                let _ = writeln!(
                    out,
                    "      <system-out>{}</system-out>",
                    xml_escape(&notes.join("\n"))
                );
            }
            out.push_str("    </testcase>\n");
        }
        out.push_str("  </testsuite>\n");
    }
    if !coverage_cases.is_empty() {
        // Reported, not failed: in a cluster the generator writes an opted-in namespace's
        // default-deny.
        let _ = writeln!(
            out,
            "  <testsuite name=\"{COVERAGE_POLICY}\" tests=\"{}\" failures=\"0\">",
            coverage_cases.len()
        );
        for (ns, lacks) in &coverage_cases {
            if *lacks {
                let _ = writeln!(
                    out,
                    "    <testcase classname=\"{COVERAGE_POLICY}\" name=\"Namespace/{}\">\n      <system-out>namespace {} is opted in to zero trust but holds no default-deny NetworkPolicy</system-out>\n    </testcase>",
                    xml_escape(ns),
                    xml_escape(ns)
                );
            } else {
                let _ = writeln!(
                    out,
                    "    <testcase classname=\"{COVERAGE_POLICY}\" name=\"Namespace/{}\"/>",
                    xml_escape(ns)
                );
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violation(name: &str, action: Action) -> Violation {
        Violation {
            constraint: name.into(),
            constraint_kind: "K".into(),
            action,
            message: format!("{name} says no"),
            details: Value::Null,
            failure: None,
        }
    }

    fn finding(ns: &str, name: &str, violations: Vec<Violation>) -> Finding {
        Finding {
            report: None,
            object: ObjectRef {
                group: String::new(),
                version: "v1".into(),
                kind: "Pod".into(),
                namespace: ns.into(),
                name: name.into(),
            },
            uid: Some(format!("uid-{name}")),
            violations,
        }
    }

    /// A report keeps only what it lists while it is made, and lists what it would list had
    /// it kept every result: deny first, in the order found, with every result counted.
    #[test]
    fn a_report_of_many_results_lists_the_same_few_it_would_list_from_all() {
        let actions = [Action::Warn, Action::Dryrun, Action::Deny];
        let findings: Vec<Finding> = (0..50)
            .map(|i| finding("a", &format!("p{i}"), vec![violation("c", actions[i % 3])]))
            .collect();
        let reports = policy_reports(&findings, None, 4, 0);
        let listed: Vec<&str> = reports[0]["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["resources"][0]["name"].as_str().unwrap())
            .collect();
        assert_eq!(listed, ["p2", "p5", "p8", "p11"]);
        assert_eq!(reports[0]["summary"]["warn"], 17);
        assert!(
            reports[0]["metadata"]["annotations"][OMITTED_ANNOTATION]
                .as_str()
                .unwrap()
                .starts_with("46 of 50")
        );
    }

    /// The audit folds its findings a page at a time: the statuses it writes list what a sort of
    /// every violation would list (deny first, then by object and message, ties in the order
    /// found), however many it found, and the counts count them all.
    #[test]
    fn a_tally_lists_in_its_statuses_what_all_the_violations_would_list() {
        let actions = [Action::Warn, Action::Deny, Action::Dryrun, Action::Deny];
        let findings: Vec<Finding> = (0..300)
            .map(|i| {
                // Objects out of order, several with the same name and message.
                let name = format!("p{:03}", (i * 37) % 101);
                let mut v = violation("c", actions[i % 4]);
                v.message = format!("m{}", i % 3);
                finding(["a", "b", ""][i % 3], &name, vec![v])
            })
            .collect();
        for limit in [0, 1, 5, 64] {
            let mut tally = Tally::new(4, limit, 0);
            for page in findings.chunks(7) {
                page.iter().for_each(|f| tally.add(f));
            }
            let status = &tally.constraint_statuses([("K", "c")], "t")[0].2;
            let mut all: Vec<(usize, &Finding, &Violation)> = findings
                .iter()
                .enumerate()
                .flat_map(|(i, f)| f.violations.iter().map(move |v| (i, f, v)))
                .collect();
            all.sort_by(|(i, a, va), (j, b, vb)| {
                (va.action != Action::Deny, &a.object, &va.message, i).cmp(&(
                    vb.action != Action::Deny,
                    &b.object,
                    &vb.message,
                    j,
                ))
            });
            let expected: Vec<(String, String, String)> = all
                .iter()
                .take(limit)
                .map(|(_, f, v)| {
                    (
                        f.object.namespace.clone(),
                        f.object.name.clone(),
                        v.message.clone(),
                    )
                })
                .collect();
            let listed: Vec<(String, String, String)> = status["violations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["namespace"].as_str().unwrap_or("").to_owned(),
                        e["name"].as_str().unwrap().to_owned(),
                        e["message"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            assert_eq!(listed, expected, "limit {limit}");
            assert_eq!(status["totalViolations"], 300);
            let counted: u64 = tally.violations().map(|(_, _, n)| n).sum();
            assert_eq!(counted, 300);
            assert_eq!(
                tally
                    .violations()
                    .find(|(c, a, _)| *c == "c" && *a == "deny")
                    .map(|x| x.2),
                Some(150)
            );
            // The reports, folded a page at a time, are those made from every finding at once.
            assert_eq!(
                tally.take_policy_reports(None),
                policy_reports(&findings, None, 4, 0)
            );
        }
    }

    #[test]
    fn constraint_statuses_count_every_violation_and_list_a_capped_stable_few() {
        let mut cluster_scoped = finding("", "node-1", vec![violation("c1", Action::Warn)]);
        cluster_scoped.object.kind = "Node".into();
        let findings = [
            finding("b", "p2", vec![violation("c1", Action::Dryrun)]),
            finding(
                "a",
                "p1",
                vec![violation("c1", Action::Deny), violation("c2", Action::Deny)],
            ),
            cluster_scoped,
            finding("a", "p3", vec![violation("c1", Action::Deny)]),
        ];
        let statuses = constraint_statuses(
            [("K", "c1"), ("K", "c2"), ("K", "quiet"), ("Other", "c1")],
            &findings,
            3,
            "2026-11-22T10:00:00Z",
        );
        let names: Vec<(&str, &str)> = statuses
            .iter()
            .map(|(k, n, _)| (k.as_str(), n.as_str()))
            .collect();
        assert_eq!(
            names,
            [("K", "c1"), ("K", "c2"), ("K", "quiet"), ("Other", "c1")]
        );
        let c1 = &statuses[0].2;
        assert_eq!(c1["totalViolations"], 4, "every violation is counted");
        assert_eq!(c1["auditTimestamp"], "2026-11-22T10:00:00Z");
        let listed: Vec<(&str, &str)> = c1["violations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["name"].as_str().unwrap(),
                    v["enforcementAction"].as_str().unwrap(),
                )
            })
            .collect();
        // Capped at 3: deny first, then by object (cluster-scoped before namespaced).
        assert_eq!(listed, [("p1", "deny"), ("p3", "deny"), ("node-1", "warn")]);
        assert_eq!(
            c1["violations"][0],
            json!({"enforcementAction": "deny", "group": "", "version": "v1", "kind": "Pod",
                   "namespace": "a", "name": "p1", "message": "c1 says no"})
        );
        assert!(
            c1["violations"][2].get("namespace").is_none(),
            "a cluster-scoped object has no namespace: {}",
            c1["violations"][2]
        );
        assert_eq!(statuses[1].2["totalViolations"], 1);
        for quiet in [&statuses[2].2, &statuses[3].2] {
            assert_eq!(quiet["totalViolations"], 0);
            assert_eq!(quiet["violations"], json!([]));
        }
    }

    #[test]
    fn one_report_per_namespace_and_a_cluster_report_with_the_coverage() {
        let findings = [
            finding(
                "a",
                "p1",
                vec![violation("c1", Action::Deny), violation("c2", Action::Warn)],
            ),
            finding("a", "p2", vec![]),
            finding("b", "p3", vec![violation("c3", Action::Dryrun)]),
        ];
        let coverage = Coverage {
            opted_in: ["a".to_owned(), "b".to_owned()].into(),
            lacking: ["b".to_owned()].into(),
        };
        let reports = policy_reports(&findings, Some(&coverage), 100, 1_700_000_000);
        assert_eq!(reports.len(), 3);
        let a = &reports[0];
        assert_eq!(a["kind"], "PolicyReport");
        assert_eq!(a["metadata"]["namespace"], "a");
        assert_eq!(a["metadata"]["name"], REPORT_NAME);
        assert_eq!(
            a["summary"],
            json!({"pass": 1, "fail": 1, "warn": 1, "error": 0, "skip": 0})
        );
        let result = &a["results"][0];
        assert_eq!(result["policy"], "c1");
        assert_eq!(result["result"], "fail");
        assert_eq!(
            result["resources"][0],
            json!({"apiVersion": "v1", "kind": "Pod", "namespace": "a", "name": "p1", "uid": "uid-p1"})
        );
        assert_eq!(result["properties"]["enforcementAction"], "deny");
        assert_eq!(
            reports[1]["results"][0]["properties"]["enforcementAction"],
            "dryrun"
        );
        let cluster = &reports[2];
        assert_eq!(cluster["kind"], "ClusterPolicyReport");
        assert!(cluster["metadata"].get("namespace").is_none());
        assert_eq!(cluster["results"][0]["policy"], COVERAGE_POLICY);
        assert_eq!(cluster["results"][0]["resources"][0]["name"], "b");
        assert_eq!(cluster["summary"]["pass"], 1);
        assert!(
            cluster["metadata"]["annotations"][COVERAGE_ANNOTATION]
                .as_str()
                .unwrap()
                .starts_with("0.500 (1 of 2")
        );
    }

    #[test]
    fn a_report_is_bounded_and_says_what_was_cut() {
        let violations: Vec<Violation> = (0..10)
            .map(|i| {
                violation(
                    &format!("c{i}"),
                    if i < 7 { Action::Warn } else { Action::Deny },
                )
            })
            .collect();
        let reports = policy_reports(&[finding("a", "p", violations)], None, 4, 0);
        let a = &reports[0];
        assert_eq!(a["results"].as_array().unwrap().len(), 4);
        assert_eq!(
            a["results"][0]["properties"]["enforcementAction"], "deny",
            "deny first"
        );
        assert_eq!(a["summary"]["warn"], 7);
        assert_eq!(a["summary"]["fail"], 3);
        assert!(
            a["metadata"]["annotations"][OMITTED_ANNOTATION]
                .as_str()
                .unwrap()
                .starts_with("6 of 10 results")
        );
    }

    #[test]
    fn junit_escapes_and_fails_on_deny_only() {
        let mut v = violation("c<1>", Action::Deny);
        v.message = "needs \"x\" & y".into();
        let xml = junit(
            &[
                finding("a", "p", vec![v, violation("w", Action::Warn)]),
                finding("a", "q", vec![]),
            ],
            None,
        );
        assert!(
            xml.contains("<testsuites name=\"palisade audit\" tests=\"2\" failures=\"1\">"),
            "{xml}"
        );
        assert!(xml.contains("message=\"1 deny violation: [c&lt;1&gt;] needs &quot;x&quot; &amp; y\">[c&lt;1&gt;] needs"), "{xml}");
        assert!(
            xml.contains("<system-out>[w] w says no (warn)</system-out>"),
            "{xml}"
        );
        assert!(
            xml.contains("<testcase classname=\"a\" name=\"Pod/q\"/>"),
            "{xml}"
        );
    }
}
