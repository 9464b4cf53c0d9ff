//! Communication matrices at the scale issue 31 sets (BENCHMARKS.md, "Communication matrices"):
//!
//! - `review`: a NetworkPolicy review, through the one decision path with the default bundle
//!   and a matrix, in a cluster of `--namespaces` namespaces (default 500) of 10 NetworkPolicies
//!   each, against a 200-flow matrix every namespace opts in to: p50, p99 and max of an admitted
//!   UPDATE, an admitted CREATE and a denied widening;
//! - `audit`: the whole cluster judged against the matrix (`audit::matrices`): time and the
//!   process's peak resident memory;
//! - `diff`: `netpol diff` of two such trees (ten policies changed), from the YAML files to the
//!   result;
//! - `graph`: `netpol explain -o dot` and `-o mermaid` of one namespace of 500 NetworkPolicies.
//!
//! `cargo bench --bench matrix -- [review|audit|diff|graph] [--namespaces N] [-n N]`; `--quick`
//! (or `--test`, as `cargo test --benches` passes) runs it small.

use std::path::Path;
use std::time::{Duration, Instant};

use palisade::admission::{Endpoint, Review, decode};
use palisade::decide::Decider;
use palisade::inventory::Inventory;
use palisade::netpol::World;
use palisade::netpol::explain::{self, Filter};
use palisade::netpol::flows::Net;
use palisade::netpol::graph;
use palisade::netpol::judge::Universe;
use palisade::netpol::matrix::Matrix;
use palisade::policy::EngineOptions;
use palisade_testkit::bench::{memory_mib, percentile};
use serde_json::{Value, json};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const APPS: usize = 8;

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
        .filter(|a| ["review", "audit", "diff", "graph"].contains(a))
        .collect();
    let all = which.is_empty();
    let namespaces = arg(&args, "--namespaces", if quick { 20 } else { 500 });
    let n = arg(&args, "-n", if quick { 10 } else { 300 });
    if all || which.contains(&"review") {
        review(namespaces, n);
    }
    if all || which.contains(&"audit") {
        audit(namespaces);
    }
    if all || which.contains(&"diff") {
        diff(namespaces);
    }
    if all || which.contains(&"graph") {
        graph(if quick { 50 } else { 500 });
    }
}

fn ns(i: usize, count: usize) -> String {
    format!("ns-{:03}", i % count)
}

fn policy(ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

/// One namespace as the guides build it: a default-deny, DNS, and a chain of eight apps, each
/// taking its predecessor on one port and reaching its successor on the next; the first app
/// also takes the last app of the previous namespace, and the last reaches the next namespace's
/// first.
fn namespace_objects(i: usize, count: usize) -> Vec<Value> {
    let name = ns(i, count);
    let mut out = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name,
        "labels": {"kubernetes.io/metadata.name": name, "palisade.io/matrix": "bench",
            "team": format!("team-{}", i % 20)}}}),
    ];
    out.extend(palisade::zero_trust::generated_policies(&name));
    for k in 0..APPS {
        let prev = format!("app-{}", (k + APPS - 1) % APPS);
        let next = format!("app-{}", (k + 1) % APPS);
        let mut ingress = vec![
            json!({"from": [{"podSelector": {"matchLabels": {"app": prev}}}],
            "ports": [{"port": 8000 + k}]}),
        ];
        let mut egress = vec![
            json!({"to": [{"podSelector": {"matchLabels": {"app": next}}}],
            "ports": [{"port": 8000 + (k + 1) % APPS}]}),
        ];
        if k == 0 {
            ingress.push(json!({"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns(i + count - 1, count)}},
                "podSelector": {"matchLabels": {"app": format!("app-{}", APPS - 1)}}}], "ports": [{"port": 9000}]}));
        }
        if k == APPS - 1 {
            egress.push(json!({"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns(i + 1, count)}},
                "podSelector": {"matchLabels": {"app": "app-0"}}}], "ports": [{"port": 9000}]}));
        }
        out.push(policy(
            &name,
            &format!("app-{k}"),
            json!({"podSelector": {"matchLabels": {"app": format!("app-{k}")}},
                "policyTypes": ["Ingress", "Egress"], "ingress": ingress, "egress": egress}),
        ));
    }
    out
}

fn cluster(count: usize) -> Vec<Value> {
    let mut out = vec![json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "kube-system", "labels": {"kubernetes.io/metadata.name": "kube-system"}}})];
    for i in 0..count {
        out.extend(namespace_objects(i, count));
    }
    out
}

/// The matrix: DNS, the chain, the hop to the next namespace, and 190 flows of other apps (to
/// databases of a `data` namespace), as a platform team's table holds them: 200 flows.
fn matrix_constraint() -> Value {
    let bench = json!({"matchLabels": {"palisade.io/matrix": "bench"}});
    let mut flows = vec![json!({"name": "dns", "from": {"namespaceSelector": bench},
        "to": {"namespaces": ["kube-system"], "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}},
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}], "scope": "Egress", "required": true})];
    for k in 0..APPS {
        let next = (k + 1) % APPS;
        flows.push(json!({"name": format!("app-{k}-to-app-{next}"),
            "from": {"podSelector": {"matchLabels": {"app": format!("app-{k}")}}},
            "to": {"podSelector": {"matchLabels": {"app": format!("app-{next}")}}},
            "ports": [{"port": 8000 + next}], "required": true}));
    }
    flows.push(json!({"name": "next-namespace",
        "from": {"namespaceSelector": bench, "podSelector": {"matchLabels": {"app": format!("app-{}", APPS - 1)}}},
        "to": {"namespaceSelector": bench, "podSelector": {"matchLabels": {"app": "app-0"}}},
        "ports": [{"port": 9000}]}));
    for j in flows.len()..200 {
        flows.push(json!({"name": format!("service-{j}-to-db"),
            "from": {"namespaceSelector": bench, "podSelector": {"matchLabels": {"app": format!("service-{j}")}}},
            "to": {"namespaces": ["data"], "podSelector": {"matchLabels": {"db": format!("db-{}", j % 40)}}},
            "ports": [{"port": 5432}], "scope": "Egress"}));
    }
    json!({"apiVersion": "constraints.gatekeeper.sh/v1beta1", "kind": "PalisadeCommunicationMatrix",
        "metadata": {"name": "bench"},
        "spec": {"enforcementAction": "deny",
            "match": {"kinds": [{"apiGroups": ["networking.k8s.io"], "kinds": ["NetworkPolicy"]},
                {"apiGroups": [""], "kinds": ["Pod"]}]},
            "parameters": {"namespaceSelector": bench, "flows": flows}}})
}

fn bundle_with_matrix() -> palisade::bundle::Bundle {
    let dir = std::env::temp_dir().join(format!("palisade-matrix-bench-{}", std::process::id()));
    copy_dir(&Path::new(ROOT).join("policies"), &dir);
    std::fs::write(
        dir.join("matrix.yaml"),
        serde_json::to_string(&matrix_constraint()).unwrap(),
    )
    .unwrap();
    let bundle = palisade::bundle::load(&dir, &EngineOptions::default()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    bundle
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn review_of(operation: &str, object: &Value, old: Option<&Value>) -> Review {
    let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "bench", "operation": operation, "namespace": object["metadata"]["namespace"],
        "name": object["metadata"]["name"], "userInfo": {"username": "bench"},
        "kind": {"group": "networking.k8s.io", "version": "v1", "kind": "NetworkPolicy"},
        "resource": {"group": "networking.k8s.io", "version": "v1", "resource": "networkpolicies"},
        "object": object, "oldObject": old}});
    decode(&serde_json::to_vec(&body).unwrap()).unwrap()
}

/// A Pod of app-3 in `ns`, as the default bundle admits it (restricted, with limits).
fn pod_review(ns: &str) -> Review {
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "app-3-0", "namespace": ns, "labels": {"app": "app-3"}},
        "spec": {"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "app", "image": "registry.example/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": true},
            "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}, "requests": {"cpu": "100m", "memory": "64Mi"}}}]}});
    let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "bench", "operation": "CREATE", "namespace": ns, "name": "app-3-0",
        "userInfo": {"username": "bench"},
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "object": pod, "oldObject": null}});
    decode(&serde_json::to_vec(&body).unwrap()).unwrap()
}

fn percentiles(mut times: Vec<Duration>) -> String {
    times.sort_unstable();
    format!(
        "p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3
    )
}

fn review(count: usize, n: usize) {
    let bundle = bundle_with_matrix();
    let objects = cluster(count);
    let policies = objects
        .iter()
        .filter(|o| o["kind"] == "NetworkPolicy")
        .count();
    let inventory = Inventory::from_objects(objects.clone());
    let decider = Decider::without_exemptions();
    let here = ns(count / 2, count);
    let old = objects
        .iter()
        .find(|o| o["metadata"]["namespace"] == here.as_str() && o["metadata"]["name"] == "app-3")
        .unwrap()
        .clone();
    let mut relabelled = old.clone();
    relabelled["metadata"]["labels"] = json!({"owner": "team-3"});
    let mut copy = old.clone();
    copy["metadata"]["name"] = json!("app-3-copy");
    let mut wider = old.clone();
    wider["spec"]["egress"][0]["ports"] = json!([{"port": 8004, "endPort": 8005}]);
    println!(
        "matrix review: {count} namespaces, {policies} NetworkPolicies, a 200-flow matrix, the default bundle, one thread, {n} decisions each"
    );
    for (label, review, expect_denied) in [
        (
            "admitted UPDATE (a label)",
            review_of("UPDATE", &relabelled, Some(&old)),
            false,
        ),
        (
            "admitted CREATE (a copy)",
            review_of("CREATE", &copy, None),
            false,
        ),
        (
            "denied UPDATE (one port more)",
            review_of("UPDATE", &wider, Some(&old)),
            true,
        ),
        ("admitted Pod CREATE (app=app-3)", pod_review(&here), false),
    ] {
        if std::env::var("MATRIX_CASE").is_ok_and(|c| !label.starts_with(c.as_str())) {
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
        if expect_denied {
            assert!(
                d.violations
                    .iter()
                    .any(|v| v.constraint_kind == "PalisadeCommunicationMatrix"),
                "{:?}",
                d.violations
            );
        }
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
        println!("  {label:<32} {}", percentiles(times));
    }
}

fn peak_rss_mib() -> f64 {
    memory_mib("self", "VmHWM:")
}

fn audit(count: usize) {
    let bundle = bundle_with_matrix();
    let inventory = Inventory::from_objects(cluster(count));
    let before = peak_rss_mib();
    let t = Instant::now();
    let (findings, audits) = palisade::audit::matrices(&bundle, &inventory);
    let elapsed = t.elapsed();
    assert!(findings.is_empty(), "{:?}", findings.first());
    assert_eq!(audits[0].audit.coverage(), 1.0);
    println!(
        "matrix audit: {count} namespaces, {} pod sets judged: {:.2} s, peak RSS {:.0} MiB (before: {before:.0} MiB)",
        audits[0].audit.sets,
        elapsed.as_secs_f64(),
        peak_rss_mib()
    );
}

fn write_tree(dir: &Path, objects: &[Value]) {
    std::fs::create_dir_all(dir).unwrap();
    let text: String = objects
        .iter()
        .map(|o| format!("---\n{}\n", serde_json::to_string(o).unwrap()))
        .collect();
    std::fs::write(dir.join("cluster.yaml"), text).unwrap();
}

fn diff(count: usize) {
    let dir = std::env::temp_dir().join(format!("palisade-diff-bench-{}", std::process::id()));
    let base = cluster(count);
    let mut head = base.clone();
    // Ten namespaces' app-3 reach one port more.
    for i in 0..10 {
        let here = ns(i * count / 10, count);
        if let Some(p) = head.iter_mut().find(|o| {
            o["metadata"]["namespace"] == here.as_str() && o["metadata"]["name"] == "app-3"
        }) {
            p["spec"]["egress"][0]["ports"] = json!([{"port": 8004, "endPort": 8005}]);
        }
    }
    write_tree(&dir.join("base"), &base);
    write_tree(&dir.join("head"), &head);
    let matrix = matrix_constraint();
    let m = Matrix::parse("bench", &matrix["spec"]["parameters"]).unwrap();
    let t = Instant::now();
    let read = |p: &Path| {
        World::read(&palisade::cli::args::read_inputs(&[p.display().to_string()]).unwrap()).unwrap()
    };
    let (b, h) = (read(&dir.join("base")), read(&dir.join("head")));
    let universe = Universe::default();
    let d = palisade::netpol::diff::diff(
        &Net::of_world(&b, &universe),
        &Net::of_world(&h, &universe),
        std::slice::from_ref(&m),
        &[],
        None,
    );
    let elapsed = t.elapsed();
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    assert_eq!(d.breaches.len(), 10, "{:#?}", d.breaches);
    println!(
        "matrix diff: two trees of {count} namespaces, 10 policies changed: {} flows changed, {} against the matrix, {:.2} s from the files",
        d.changes.len(),
        d.breaches.len(),
        elapsed.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn graph(policies: usize) {
    let name = "big";
    let mut objects = vec![json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}})];
    objects.extend(palisade::zero_trust::generated_policies(name));
    for k in 0..policies {
        objects.push(policy(
            name,
            &format!("app-{k}"),
            json!({"podSelector": {"matchLabels": {"app": format!("app-{k}")}},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": format!("app-{}", (k + 1) % policies)}}}],
                    "ports": [{"port": 8000 + k % 1000}]}]}),
        ));
    }
    let docs: Vec<palisade::manifest::Document> = objects
        .into_iter()
        .map(palisade::manifest::Document::from_cluster)
        .collect();
    let t = Instant::now();
    let world = World::read(&docs).unwrap();
    let explained = explain::explain(&world, &Filter::default());
    let dot = graph::from_explanations(&explained).to_dot();
    let dot_time = t.elapsed();
    let t = Instant::now();
    let mermaid = graph::from_explanations(&explained).to_mermaid();
    let mermaid_time = t.elapsed();
    assert!(
        explained.iter().all(|e| e.error.is_none()),
        "{:?}",
        explained.iter().find_map(|e| e.error.as_ref())
    );
    assert!(
        dot.contains("->") && mermaid.contains("-->"),
        "{}",
        &dot[..dot.len().min(2000)]
    );
    println!(
        "matrix graph: one namespace of {} NetworkPolicies: explain + dot {:.0} ms ({} KiB), mermaid {:.0} ms",
        policies + 2,
        dot_time.as_secs_f64() * 1e3,
        dot.len() / 1024,
        mermaid_time.as_secs_f64() * 1e3
    );
}
