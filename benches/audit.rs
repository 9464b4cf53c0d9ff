//! The background audit's cost on 10,000 objects, and what it does to reviews meanwhile:
//! `cargo bench --bench audit`.
//!
//! Builds the default bundle and an inventory of 100 opted-in namespaces (half with a
//! default-deny) holding 10,000 pods, then:
//! 1. times `audit::evaluate` over the pods on one thread (objects per second);
//! 2. decides the captured Pod review in a loop on another thread, quiet and then while the audit
//!    runs, and prints p50/p99 of both (in-process: the decision path, without HTTP).

use std::path::Path;
use std::time::{Duration, Instant};

use palisade::admission::{Endpoint, decode};
use palisade::audit::{self, Presented};
use palisade::decide::Decider;
use palisade::inventory::Inventory;
use palisade_testkit::bench::percentile;
use serde_json::{Value, json};

const NAMESPACES: usize = 100;
const PODS: usize = 10_000;

fn objects(pods: usize) -> (Vec<Value>, Vec<Value>) {
    let mut inventory = Vec::new();
    for n in 0..NAMESPACES {
        let ns = format!("team-{n}");
        inventory.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns,
            "labels": {"kubernetes.io/metadata.name": ns, "network-policy": "zero-trust", "security-level": "medium",
                "pod-security.kubernetes.io/enforce": "restricted"}}}));
        if n % 2 == 0 {
            inventory.push(
                json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "default-deny-all", "namespace": ns},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}),
            );
        }
    }
    let pods = (0..pods)
        .map(|i| {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("p-{i}"),
                "namespace": format!("team-{}", i % NAMESPACES), "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx:1.27",
                    "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
                    "securityContext": if i % 3 == 0 { json!({"privileged": true}) } else { json!({
                        "runAsNonRoot": true, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
                        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}) }}]}})
        })
        .collect();
    (inventory, pods)
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration, usize) {
    samples.sort();
    (
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples.len(),
    )
}

/// `--pods N` audits N pods instead of 10,000 (CI's smoke run); `cargo bench` passes `--bench`.
fn pods_wanted() -> usize {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--pods") {
        None => PODS,
        Some(i) => match args.get(i + 1).and_then(|n| n.parse().ok()) {
            Some(n) if n > 0 => n,
            _ => {
                eprintln!("--pods takes a positive number");
                std::process::exit(2);
            }
        },
    }
}

fn main() {
    let wanted = pods_wanted();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bundle = palisade::bundle::load(&root.join("policies"), &Default::default()).unwrap();
    let (inventory_objects, pods) = objects(wanted);
    let inventory = Inventory::from_objects(
        inventory_objects
            .iter()
            .cloned()
            .chain(pods.iter().cloned()),
    );
    let decider = Decider::new(vec!["kube-system".into()]);
    let body = std::fs::read(root.join("tests/data/admission/validate-create-pod.json")).unwrap();

    let start = Instant::now();
    let findings = audit::evaluate(
        &decider,
        &bundle,
        &inventory,
        pods.clone(),
        Presented::AsTheyAre,
        time::OffsetDateTime::now_utc(),
    );
    let took = start.elapsed();
    let violations: usize = findings.iter().map(|f| f.violations.len()).sum();
    // Every third pod is privileged: a run that finds none of them measures nothing.
    assert_eq!(findings.len(), wanted, "every pod audited");
    assert!(violations >= wanted / 3, "the privileged pods were found");
    println!(
        "audit: {} objects in {:.2} s = {:.0} objects/s ({violations} violations)",
        findings.len(),
        took.as_secs_f64(),
        findings.len() as f64 / took.as_secs_f64()
    );

    let reviews = |during: Duration| {
        let review = decode(&body).unwrap();
        let mut samples = Vec::new();
        let until = Instant::now() + during;
        while Instant::now() < until {
            let t = Instant::now();
            let d = decider
                .decide(
                    &bundle,
                    &inventory,
                    Endpoint::Validate,
                    &review,
                    time::OffsetDateTime::now_utc(),
                    None,
                )
                .unwrap();
            std::hint::black_box(d);
            samples.push(t.elapsed());
            std::thread::sleep(Duration::from_micros(200));
        }
        percentiles(samples)
    };
    let (p50, p99, n) = reviews(took);
    println!("reviews, quiet:        p50 {p50:?}  p99 {p99:?}  ({n} reviews)");
    let (p50, p99, n) = std::thread::scope(|s| {
        let audit = s.spawn(|| {
            audit::evaluate(
                &decider,
                &bundle,
                &inventory,
                pods.clone(),
                Presented::AsTheyAre,
                time::OffsetDateTime::now_utc(),
            )
            .len()
        });
        let r = reviews(took);
        audit.join().unwrap();
        r
    });
    println!("reviews, during audit: p50 {p50:?}  p99 {p99:?}  ({n} reviews)");
}
