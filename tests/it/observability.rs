//! The operations dashboard and the alert rules that manifests/overlays/prometheus ships read only
//! series Palisade exports: every metric name in their PromQL is looked up among the samples of a
//! `/metrics` scrape of a replica that leads, has reviewed, denied, broken glass, failed closed,
//! audited, and lost its API server, so that each series they read exists. Also the dashboard's
//! shape, and the alerts' runbooks as sections of docs/operations.md.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use palisade_testkit::apiserver::ApiServer;
use palisade_testkit::cluster::{namespace, palisade};

use crate::common::rollout::{BREAK_GLASS, glass, pod_review};
use crate::common::*;

const DASHBOARD: &str = "manifests/overlays/prometheus/dashboard.json";
const ALERTS: &str = "manifests/overlays/prometheus/alerts.yaml";

fn dashboard() -> Value {
    serde_json::from_slice(&std::fs::read(repo_path(DASHBOARD)).unwrap())
        .unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// The alert rules of alerts.yaml.
fn alert_rules() -> Vec<Value> {
    let text = std::fs::read_to_string(repo_path(ALERTS)).unwrap();
    let documents = palisade::manifest::parse_str(&text, Path::new(ALERTS)).unwrap();
    assert_eq!(documents.len(), 1, "{ALERTS}: one PrometheusRule");
    let rule = &documents[0].value;
    assert_eq!(rule["kind"], "PrometheusRule");
    rule["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .collect()
}

/// Every PromQL expression of the dashboard and the alerts, each with where it is.
fn queries() -> Vec<(String, String)> {
    fn walk(value: &Value, panel: &str, out: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) => {
                let panel = map
                    .get("title")
                    .and_then(Value::as_str)
                    .unwrap_or(panel)
                    .to_owned();
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("expr", Value::String(expr)) => {
                            let target = map.get("refId").and_then(Value::as_str).unwrap_or("?");
                            out.push((format!("{DASHBOARD}: \"{panel}\" {target}"), expr.clone()));
                        }
                        ("templating", _) => {}
                        _ => walk(v, &panel, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, panel, out)),
            _ => {}
        }
    }
    let dashboard = dashboard();
    let mut out = Vec::new();
    walk(&dashboard, "", &mut out);
    // A variable's query: label_values(<selector>, <label>) reads the series of its selector.
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str())
            .unwrap();
        let inner = query
            .trim()
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| panic!("a variable's query that is not label_values: {query}"));
        let (selector, _label) = inner
            .rsplit_once(',')
            .unwrap_or_else(|| panic!("label_values without a series: {query}"));
        out.push((
            format!("{DASHBOARD}: variable {}", variable["name"]),
            selector.to_owned(),
        ));
    }
    for rule in alert_rules() {
        out.push((
            format!("{ALERTS}: {}", rule["alert"].as_str().unwrap()),
            rule["expr"].as_str().unwrap().to_owned(),
        ));
    }
    out
}

/// Index just past the string literal that starts at `i`.
fn string_end(chars: &[char], mut i: usize) -> usize {
    let quote = chars[i];
    i += 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    panic!(
        "unterminated string in {}",
        chars.iter().collect::<String>()
    )
}

/// Index just past the bracket that closes the one at `i`, over string literals.
fn bracket_end(chars: &[char], mut i: usize, open: char, close: char) -> usize {
    let mut depth = 0;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = string_end(chars, i);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    panic!("unbalanced {open} in {}", chars.iter().collect::<String>())
}

/// The metric names a PromQL expression reads, as written (`_bucket`, `_sum`, `_count` and
/// `_total` included): the identifiers that are not a function (followed by `(`), an aggregation
/// operator, a keyword, or a label name (inside `{...}`, or in the parentheses of by, without,
/// on, ignoring, group_left, group_right). String literals, numbers, durations, `[...]` ranges
/// and Grafana's `$variables` are skipped.
fn metric_names(expr: &str) -> Vec<String> {
    const KEYWORDS: [&str; 22] = [
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "atan2",
        "inf",
        "nan",
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
        "limitk",
        "limit_ratio",
    ];
    const GROUPING: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    assert!(
        !expr.contains("__name__"),
        "name the series, not __name__: {expr}"
    );
    let chars: Vec<char> = expr.chars().collect();
    let word_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '"' | '\'' | '`' => i = string_end(&chars, i),
            '{' => i = bracket_end(&chars, i, '{', '}'),
            '[' => i = bracket_end(&chars, i, '[', ']'),
            '$' => {
                i += 1;
                while i < chars.len() && word_char(chars[i]) {
                    i += 1;
                }
            }
            _ if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            _ if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len() && word_char(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let called = chars.get(next) == Some(&'(');
                let lower = word.to_ascii_lowercase();
                if GROUPING.contains(&lower.as_str()) {
                    if called {
                        i = bracket_end(&chars, next, '(', ')');
                    }
                } else if !called && !KEYWORDS.contains(&lower.as_str()) {
                    names.push(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// The names of the samples in an OpenMetrics or Prometheus text exposition.
fn sample_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

/// Each metric name a query reads that no sample of the scrape has, with where it is read; and
/// each query that reads none (a query the parser misread).
fn missing(queries: &[(String, String)], samples: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    for (place, expr) in queries {
        let names = metric_names(expr);
        if names.is_empty() {
            out.push(format!("{place}: reads no series: {expr}"));
        }
        for name in names {
            if !samples.contains(&name) {
                out.push(format!("{name} ({place})"));
            }
        }
    }
    out
}

#[test]
fn the_promql_parser_finds_the_series_and_nothing_else() {
    let expr = r#"histogram_quantile(0.99, sum by (le, endpoint) (rate(a_bucket{x="y", z=~"$v", q="}"}[$__rate_interval])))
        / on (pod) group_left (node) b offset 5m and c > bool 1e3
        or max without (le) (d:recorded) - time() < 7 * 24 * 3600 # e
        unless sum(increase(f_total[1h:5m])) by (kind)"#;
    assert_eq!(
        metric_names(expr),
        ["a_bucket", "b", "c", "d:recorded", "f_total"]
    );
    // A name the scrape lacks is named, with where it is read; so is a query with no series.
    let samples = sample_names(
        "# TYPE h histogram\nh_bucket{le=\"1.0\"} 0\nh_sum 0\nh_count 0\nc_total 1\n# EOF\n",
    );
    assert_eq!(
        samples,
        BTreeSet::from(["h_bucket", "h_sum", "h_count", "c_total"].map(str::to_owned))
    );
    let queries = [
        ("one".to_owned(), "rate(h_bucket[5m]) + h_count".to_owned()),
        ("two".to_owned(), "rate(h[5m]) / c".to_owned()),
        ("three".to_owned(), "vector(1)".to_owned()),
    ];
    assert_eq!(
        missing(&queries, &samples),
        ["h (two)", "c (two)", "three: reads no series: vector(1)"]
    );
}

/// A privileged Pod, as the audit finds it in what runs.
fn privileged_pod(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
        "spec": {"containers": [{"name": "c", "image": "registry.example.com/c:1",
            "securityContext": {"privileged": true}}]}})
}

/// The series the dashboard and the alerts must read, for what each is for.
const REQUIRED: [(&str, &[&str]); 2] = [
    (
        DASHBOARD,
        &[
            "palisade_admission_reviews_total",
            "palisade_admission_review_duration_seconds_bucket",
            "palisade_violations_total",
            "palisade_break_glass_total",
            "palisade_default_deny_coverage_ratio",
            "palisade_inventory_stale_seconds",
            "palisade_tls_certificate_expiry_timestamp_seconds",
            "palisade_leader",
        ],
    ),
    (
        ALERTS,
        &[
            "palisade_tls_certificate_expiry_timestamp_seconds",
            "palisade_inventory_stale_seconds",
            "palisade_policy_last_reload_ok",
            "palisade_config_last_reload_ok",
            "palisade_tls_reload_failures_total",
            "palisade_leader",
            "palisade_default_deny_coverage_ratio",
        ],
    ),
];

#[tokio::test]
async fn every_series_the_dashboard_and_the_alerts_read_is_in_metrics() {
    // Parsed first: a broken file fails before a server starts.
    let queries = queries();
    for (file, required) in REQUIRED {
        let read: BTreeSet<String> = queries
            .iter()
            .filter(|(place, _)| place.starts_with(file))
            .flat_map(|(_, expr)| metric_names(expr))
            .collect();
        for name in required {
            assert!(read.contains(*name), "{file} does not read {name}");
        }
    }

    // A replica that leads, on a cluster with an opted-in namespace and a privileged Pod for
    // its audit to find; break-glass allowed to alice, an audit every second.
    let api = ApiServer::start().await;
    api.create(namespace(
        "shop",
        json!({"network-policy": "zero-trust", "security-level": "medium",
               "pod-security.kubernetes.io/enforce": "restricted"}),
    ))
    .unwrap();
    api.create(privileged_pod("shop", "debug")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, format!("{BREAK_GLASS}audit:\n  interval: 1s\n")).unwrap();
    let config = config.display().to_string();
    let server = palisade(
        &api,
        "observer",
        &["--config", &config, "--generate-default-deny=false"],
    )
    .await;
    let client = server.client();
    let leads = eventually(Duration::from_secs(10), || async {
        metric(&server.metrics().await, "palisade_leader") == Some(1.0)
    })
    .await;
    assert!(leads, "{}", server.metrics().await);

    // Reviews on both endpoints; a denial; break-glass used and refused.
    let denied = pod_review("shop", "admin", &[], json!({}));
    let rsp = send(&client, "/validate", &denied).await;
    assert_eq!(rsp["allowed"], false, "{rsp}");
    send(&client, "/mutate", &denied).await;
    let annotations = glass("INC-1: the dashboard's test", Duration::from_secs(3600));
    let used = pod_review(
        "shop",
        "alice",
        &["system:authenticated"],
        annotations.clone(),
    );
    let rsp = send(&client, "/validate", &used).await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
    let refused = pod_review("shop", "mallory", &["system:authenticated"], annotations);
    let rsp = send(&client, "/validate", &refused).await;
    assert_eq!(rsp["allowed"], false, "{rsp}");
    // A constraint that fails closed (the engine panics on this metadata, as in hostile.rs).
    let mut hostile: Value =
        serde_json::from_slice(&fixture("admission/validate-update-namespace.json")).unwrap();
    hostile["request"]["object"]["metadata"] = json!(f64::MAX);
    let rsp = send(&client, "/validate", &hostile).await;
    assert_eq!(rsp["allowed"], false, "{rsp}");
    // The leader's audit has run and found the privileged Pod.
    let audited = eventually(Duration::from_secs(10), || async {
        metric(
            &server.metrics().await,
            "palisade_audit_runs_total{result=\"ok\"}",
        )
        .is_some_and(|n| n >= 1.0)
    })
    .await;
    assert!(audited, "{}", server.metrics().await);
    // The API server goes away: the inventory's watches fail.
    api.stop();
    let failing = eventually(Duration::from_secs(10), || async {
        metric_total(
            &server.metrics().await,
            "palisade_inventory_watch_errors_total",
        )
        .is_some()
    })
    .await;
    let scrape = server.metrics().await;
    assert!(failing, "{scrape}");

    let samples = sample_names(&scrape);
    let missing = missing(&queries, &samples);
    assert!(
        missing.is_empty(),
        "the dashboard or the alerts read series that /metrics lacks:\n  {}\n\n/metrics:\n{scrape}",
        missing.join("\n  ")
    );
}

#[test]
fn the_dashboard_is_laid_out_and_every_query_uses_the_chosen_data_source() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "palisade-operations");
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(variables, ["datasource", "namespace", "pod"]);
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut cells = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "{title}: id");
        let pos = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| pos[k].as_u64().unwrap());
        assert!(x + w <= 24 && w > 0 && h > 0, "{title}: {pos}");
        for cell in (x..x + w).flat_map(|cx| (y..y + h).map(move |cy| (cx, cy))) {
            assert!(
                cells.insert(cell),
                "{title} overlaps another panel at {cell:?}"
            );
        }
        if panel["type"] == "row" {
            continue;
        }
        assert!(
            panel["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{title}: a description says what it shows"
        );
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}");
        let mut refs = BTreeSet::new();
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
            assert!(refs.insert(target["refId"].as_str().unwrap()), "{title}");
            let expr = target["expr"].as_str().unwrap();
            assert!(
                expr.contains("namespace=\"$namespace\""),
                "{title}: every query keeps to the chosen namespace: {expr}"
            );
        }
    }
}

/// A Markdown heading's anchor, as GitHub makes it.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Each alert's runbook_url is a section of docs/operations.md. The page is written with the
/// docs; until it exists there is nothing to point at, and this says so.
#[test]
fn every_alert_s_runbook_is_a_section_of_docs_operations() {
    let page = repo_path("docs/operations.md");
    let Ok(text) = std::fs::read_to_string(&page) else {
        eprintln!(
            "{} does not exist yet: runbook anchors not checked",
            page.display()
        );
        return;
    };
    let anchors: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect();
    for rule in alert_rules() {
        let url = rule["annotations"]["runbook_url"].as_str().unwrap();
        let section = url
            .strip_prefix("docs/operations.md#")
            .unwrap_or_else(|| panic!("{url}: not a section of docs/operations.md"));
        assert!(
            anchors.contains(section),
            "{}: docs/operations.md has no heading for #{section}",
            rule["alert"]
        );
    }
}
