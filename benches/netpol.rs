//! The NetworkPolicy model at scale (issue 27), two measurements:
//!
//! - `review`: a NetworkPolicy review decided by the default bundle through the one decision
//!   path, in a namespace that already holds `--policies` policies (default 100), on one thread:
//!   p50, p99 and max of an admitted policy, a denied one (public ingress spread over two
//!   policies), an update, and a policy at the size limits;
//! - `explain`: `palisade netpol explain` over `--namespaces` namespaces (default 200) with 10
//!   pods and 10 policies each, from the YAML text to the output (text and JSON), its time and
//!   the process's peak resident memory.
//!
//! `cargo bench --bench netpol -- [review|explain] [--policies N] [--namespaces N] [-n N]`; pin
//! it with `taskset -c 0` for one core. BENCHMARKS.md records the figures.

use std::path::Path;
use std::time::{Duration, Instant};

use palisade::admission::{Endpoint, Review, decode};
use palisade::decide::Decider;
use palisade::inventory::Inventory;
use palisade::netpol::World;
use palisade::netpol::explain::{self, Filter};
use palisade::policy::EngineOptions;
use palisade_testkit::bench::{memory_mib, percentile};
use serde_json::{Value, json};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--test" || a == "--quick");
    let which: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| *a == "review" || *a == "explain")
        .collect();
    let all = which.is_empty();
    if all || which.contains(&"review") {
        let n = arg(&args, "-n", if quick { 20 } else { 2000 });
        review(arg(&args, "--policies", 100), n);
    }
    if all || which.contains(&"explain") {
        explain_scale(arg(&args, "--namespaces", if quick { 20 } else { 200 }));
    }
}

fn policy(ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

fn namespace(name: &str, i: usize) -> Value {
    let level = ["high", "medium", "low"][i % 3];
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {
        "team": format!("team-{}", i % 20), "security-level": level,
        "network-policy": "zero-trust", "pod-security.kubernetes.io/enforce": "restricted"}}})
}

/// The policies of one namespace as teams write them: a default-deny, DNS, and per app an
/// ingress from its callers (pods of the namespace, a namespace by name, a partner range) on
/// named and numbered ports, and an egress to its database and to an external API.
fn policies(ns: &str, count: usize, namespaces: usize) -> Vec<Value> {
    let mut out = palisade::zero_trust::generated_policies(ns);
    for k in 0..count.saturating_sub(2) {
        let app = format!("app-{}", k % 50);
        let tier = ["frontend", "backend", "db"][k % 3];
        let spec = match k % 4 {
            0 => json!({"podSelector": {"matchLabels": {"app": app}}, "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"tier": "frontend"}}}],
                    "ports": [{"port": "http"}, {"port": 8443}]}]}),
            1 => {
                json!({"podSelector": {"matchLabels": {"app": app, "tier": tier}}, "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": format!("ns-{:03}", (k * 7) % namespaces.max(1))}}}],
                    "ports": [{"port": 9090}]}]})
            }
            2 => {
                json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": [app, "shared"]}]},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"podSelector": {"matchLabels": {"tier": "db"}}}], "ports": [{"port": 5432}]},
                    {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]}}],
                     "ports": [{"port": 443}]}]})
            }
            _ => json!({"podSelector": {"matchLabels": {"tier": tier}}, "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"ipBlock": {"cidr": format!("198.51.100.{}/32", k % 256)}},
                    {"namespaceSelector": {"matchLabels": {"team": format!("team-{}", k % 20)}}, "podSelector": {"matchLabels": {"app": "gateway"}}}],
                    "ports": [{"port": 8000, "endPort": 8010}]}]}),
        };
        out.push(policy(ns, &format!("{app}-{k}"), spec));
    }
    out
}

fn review_of(operation: &str, object: &Value, old: Option<&Value>) -> Review {
    let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "bench", "operation": operation, "namespace": "payments",
        "name": object["metadata"]["name"], "userInfo": {"username": "bench"},
        "kind": {"group": "networking.k8s.io", "version": "v1", "kind": "NetworkPolicy"},
        "resource": {"group": "networking.k8s.io", "version": "v1", "resource": "networkpolicies"},
        "object": object, "oldObject": old}});
    decode(&serde_json::to_vec(&body).unwrap()).unwrap()
}

fn percentiles(mut times: Vec<Duration>) -> String {
    times.sort_unstable();
    format!(
        "p50 {:>7.1} µs  p99 {:>7.1} µs  max {:>7.1} µs",
        percentile(&times, 0.5).as_secs_f64() * 1e6,
        percentile(&times, 0.99).as_secs_f64() * 1e6,
        times[times.len() - 1].as_secs_f64() * 1e6
    )
}

fn review(count: usize, n: usize) {
    let bundle =
        palisade::bundle::load(&Path::new(ROOT).join("policies"), &EngineOptions::default())
            .unwrap();
    let existing = policies("payments", count, 200);
    let mut objects = vec![namespace("payments", 0)];
    objects.extend(existing.iter().cloned());
    let inventory = Inventory::from_objects(objects);
    let decider = Decider::without_exemptions();
    let admitted = policy(
        "payments",
        "partner-api",
        json!({"podSelector": {"matchLabels": {"app": "app-7"}},
        "policyTypes": ["Ingress"], "ingress": [{"from": [{"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": [{"port": 443}]}]}),
    );
    let denied = policy(
        "payments",
        "other-half",
        json!({"podSelector": {"matchLabels": {"app": "app-7"}},
        "policyTypes": ["Ingress"], "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/1"}}, {"ipBlock": {"cidr": "128.0.0.0/1"}}], "ports": [{"port": 443}]}]}),
    );
    let old = &existing[5];
    let mut updated = old.clone();
    updated["spec"]["ingress"][0]["ports"] = json!([{"port": 8080}]);
    // At the limits: 256 peers of 14 excepts each (3,842 entries).
    let peers: Vec<Value> = (0..256)
        .map(|i| {
            let excepts: Vec<String> = (0..14).map(|e| format!("10.{i}.{e}.0/24")).collect();
            json!({"ipBlock": {"cidr": format!("10.{i}.0.0/16"), "except": excepts}})
        })
        .collect();
    let largest = policy(
        "payments",
        "largest",
        json!({"podSelector": {}, "policyTypes": ["Egress"],
        "egress": [{"to": peers, "ports": [{"port": 443}]}]}),
    );
    println!(
        "netpol review: a namespace of {count} NetworkPolicies, the default bundle, one thread, {n} decisions each"
    );
    for (label, review, expect_denied) in [
        (
            "admitted (partner range on 443)",
            review_of("CREATE", &admitted, None),
            false,
        ),
        (
            "denied (the internet in two halves)",
            review_of("CREATE", &denied, None),
            true,
        ),
        (
            "update (one port changed)",
            review_of("UPDATE", &updated, Some(old)),
            false,
        ),
        (
            "near the size limits (3,842 entries)",
            review_of("CREATE", &largest, None),
            false,
        ),
    ] {
        if std::env::var("NETPOL_CASE").is_ok_and(|c| !label.starts_with(c.as_str())) {
            continue;
        }
        let decide = || {
            decider
                .decide(
                    &bundle,
                    &inventory,
                    Endpoint::Validate,
                    &review,
                    time::OffsetDateTime::now_utc(),
                    None,
                )
                .unwrap()
        };
        let d = decide();
        assert_eq!(
            !d.response.allowed, expect_denied,
            "{label}: {:?}",
            d.violations
        );
        for _ in 0..n / 10 {
            decide();
        }
        let times: Vec<Duration> = (0..n)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(decide());
                t.elapsed()
            })
            .collect();
        println!("  {label:<38} {}", percentiles(times));
    }
}

fn peak_rss_mib() -> f64 {
    memory_mib("self", "VmHWM:")
}

fn explain_scale(namespaces: usize) {
    let mut text = String::new();
    for i in 0..namespaces {
        let ns = format!("ns-{i:03}");
        let mut objects = vec![namespace(&ns, i)];
        for j in 0..10 {
            let tier = ["frontend", "backend", "db"][j % 3];
            objects.push(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("pod-{j}"), "namespace": ns,
                "labels": {"app": format!("app-{}", j % 5), "tier": tier}},
                "spec": {"containers": [{"name": "c", "image": "app", "ports": [{"name": "http", "containerPort": 8080}, {"name": "metrics", "containerPort": 9090}]}]},
                "status": {"podIP": format!("10.{}.{}.{}", i / 256, i % 256, j + 1)}}));
        }
        objects.extend(policies(&ns, 10, namespaces));
        for o in objects {
            text.push_str("---\n");
            text.push_str(&serde_json::to_string(&o).unwrap());
            text.push('\n');
        }
    }
    let dir = std::env::temp_dir().join(format!("palisade-netpol-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cluster.yaml");
    std::fs::write(&file, &text).unwrap();
    println!(
        "netpol explain: {namespaces} namespaces, {} pods, {} policies ({:.1} MiB of YAML)",
        namespaces * 10,
        namespaces * 10,
        text.len() as f64 / 1048576.0
    );
    drop(text);
    let before = peak_rss_mib();
    for json in [false, true] {
        let t = Instant::now();
        let docs = palisade::cli::args::read_inputs(&[file.display().to_string()]).unwrap();
        let world = World::read(&docs).unwrap();
        let explained = explain::explain(&world, &Filter::default());
        let mut out = std::io::BufWriter::new(std::io::sink());
        if json {
            serde_json::to_writer(&mut out, &json!({"namespaces": explained})).unwrap();
        } else {
            explain::write_text(&mut out, &explained, false).unwrap();
        }
        let errors = explained.iter().filter(|e| e.error.is_some()).count();
        assert_eq!(errors, 0);
        println!(
            "  {:<5} {:>7.0} ms  peak RSS {:.0} MiB (before: {before:.0} MiB)",
            if json { "json" } else { "text" },
            t.elapsed().as_secs_f64() * 1e3,
            peak_rss_mib()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
