//! The live inventory at scale, against the stand-in API server of the tests (in this process):
//! 10,000 namespaces and 20,000 NetworkPolicies listed at start, then a burst of 1,000 changes
//! while reviews keep flowing. Reports the time to ready, the process RSS, the time until the
//! burst's last change decides reviews, and review latency percentiles, quiet against burst.
//!
//!   cargo bench --bench cluster
//!   cargo bench --bench cluster -- --pods 100000 --separate-only   # the audit's peak
//!
//! `--pods N` adds N pods (not synced: the leader's audit lists them from the API, a page at a
//! time); `--separate-only` runs only the measurement of Palisade in its own process, which
//! waits for the leader's first audit; `PALISADE_BIN` runs another build there (a before/after
//! comparison in one run).

use std::time::{Duration, Instant};

use clap::Parser;
use palisade_testkit::apiserver::{ApiServer, NETWORK_POLICIES};
use palisade_testkit::bench::{free_port, memory_mib, percentile};
use palisade_testkit::fixtures::{fixture, in_namespace};
use palisade_testkit::harness::{TestServer, metric};
use palisade_testkit::https::{Proto, http_get};
use serde_json::{Value, json};

const NAMESPACES: usize = 10_000;
const BURST: usize = 1_000;

fn rss_mib() -> f64 {
    memory_mib("self", "VmRSS:")
}

/// The cluster flags of both Palisades of this bench (in this process, and in its own).
fn cluster_args<'a>(kubeconfig: &'a str, policies: &'a str) -> [&'a str; 7] {
    [
        "--kubeconfig",
        kubeconfig,
        "--policies",
        policies,
        "--generate-default-deny=false",
        "--own-namespace",
        "palisade-system",
    ]
}

fn policy(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": name, "namespace": ns, "labels": {"app": "bench"}},
           "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}})
}

fn pod_review(ns: &str) -> Vec<u8> {
    let mut review: Value =
        serde_json::from_slice(&fixture("admission/validate-create-pod.json")).unwrap();
    in_namespace(&mut review, ns);
    serde_json::to_vec(&review).unwrap()
}

/// Reviews in a loop until `stop`, returning each latency.
async fn reviews(
    server: &TestServer,
    body: Vec<u8>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<Duration> {
    let client = server.client();
    let mut latencies = Vec::new();
    while !*stop.borrow() {
        let start = Instant::now();
        let _ = client.review(Proto::Http2, "/validate", &body).await;
        latencies.push(start.elapsed());
    }
    latencies
}

fn report(label: &str, mut latencies: Vec<Duration>) {
    latencies.sort();
    println!(
        "{label:>6}: {} reviews, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
}

#[derive(Parser)]
struct Args {
    /// Namespaces listed at start, each with two NetworkPolicies (CI's smoke run uses a few).
    #[arg(long, default_value_t = NAMESPACES)]
    namespaces: usize,
    /// Changes written while reviews flow.
    #[arg(long, default_value_t = BURST)]
    burst: usize,
    /// Pods created across the namespaces (a third privileged), audited by the leader.
    #[arg(long, default_value_t = 0)]
    pods: usize,
    /// Only Palisade in its own process: no reviews, no burst.
    #[arg(long)]
    separate_only: bool,
    /// Accepted so that `cargo bench` may pass it.
    #[arg(long)]
    bench: bool,
}

fn pod(i: usize, namespaces: usize) -> Value {
    let security = if i.is_multiple_of(3) {
        json!({"privileged": true})
    } else {
        json!({"runAsNonRoot": true, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}})
    };
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("p-{i}"), "namespace": format!("ns-{:05}", i % namespaces),
            "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "nginx:1.27",
            "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}}, "securityContext": security}]}})
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let (namespaces, burst) = (args.namespaces.max(2), args.burst.max(1));
    let last = format!("ns-{:05}", namespaces - 1);
    let api = ApiServer::start().await;
    for i in 0..namespaces {
        let ns = format!("ns-{i:05}");
        api.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"security-level": "medium"}}})).unwrap();
        api.create(policy(&ns, "default-deny")).unwrap();
        let mut allow = policy(&ns, "allow-web");
        allow["spec"] = json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
                               "ingress": [{"ports": [{"protocol": "TCP", "port": 8080}]}]});
        api.create(allow).unwrap();
    }
    for i in 0..args.pods {
        api.create(pod(i, namespaces)).unwrap();
    }
    let _ = api.create(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "palisade-system"}}),
    );
    let policies = concat!(env!("CARGO_MANIFEST_DIR"), "/policies");
    let kubeconfig = api.kubeconfig("bench").display().to_string();
    if !args.separate_only {
        in_process(&api, &kubeconfig, policies, namespaces, burst, &last).await;
    }
    let objects = 3 * namespaces + args.pods + if args.separate_only { 0 } else { burst };
    separate(&kubeconfig, policies, objects, args.pods > 0).await;
}

/// Palisade in this process: time to ready, reviews quiet and during a burst of changes.
async fn in_process(
    api: &ApiServer,
    kubeconfig: &str,
    policies: &str,
    namespaces: usize,
    burst: usize,
    last: &str,
) {
    let rss_before = rss_mib();
    let start = Instant::now();
    let server = TestServer::start(&cluster_args(kubeconfig, policies)).await;
    while http_get(server.health, "/readyz").await.0 != 200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready = start.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = rss_mib();
    println!(
        "listed {} namespaces and {} NetworkPolicies: ready after {:.2} s; RSS {:.0} MiB before Palisade started (the stand-in's copy), {:.0} MiB after (+{:.0} MiB)",
        namespaces,
        2 * namespaces,
        ready.as_secs_f64(),
        rss_before,
        rss_after,
        rss_after - rss_before
    );

    // Quiet: reviews alone.
    let body = pod_review("ns-00001");
    let (tx, rx) = tokio::sync::watch::channel(false);
    let quiet = {
        let server = &server;
        let runs: Vec<_> = (0..4)
            .map(|_| reviews(server, body.clone(), rx.clone()))
            .collect();
        let stopper = async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            tx.send_replace(true);
        };
        let (results, ()) = tokio::join!(futures::future::join_all(runs), stopper);
        results.concat()
    };
    report("quiet", quiet);

    // Burst: 1,000 changes as fast as the stand-in takes them, the last one deleting the
    // default-deny of a probe namespace; reviews keep flowing meanwhile.
    let (tx, rx) = tokio::sync::watch::channel(false);
    let probe = pod_review(last);
    let probe_client = server.client();
    let burst_latencies = {
        let server = &server;
        let runs: Vec<_> = (0..4)
            .map(|_| reviews(server, body.clone(), rx.clone()))
            .collect();
        let changes = async {
            let start = Instant::now();
            for i in 0..burst - 1 {
                api.create(policy(
                    &format!("ns-{:05}", i % namespaces),
                    &format!("burst-{i}"),
                ))
                .unwrap();
            }
            api.delete(&NETWORK_POLICIES, last, "default-deny").unwrap();
            let written = start.elapsed();
            let mut seen = false;
            while start.elapsed() < Duration::from_secs(30) {
                let rsp = probe_client.review(Proto::Http2, "/validate", &probe).await;
                if rsp["status"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("lacks a default-deny")
                {
                    seen = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // The smoke run in CI relies on this: a burst that never reaches reviews fails.
            assert!(
                seen,
                "the burst's last change never decided a review within 30 s"
            );
            let visible = start.elapsed();
            tokio::time::sleep(Duration::from_secs(1)).await;
            tx.send_replace(true);
            (written, visible)
        };
        let (results, (written, visible)) = tokio::join!(futures::future::join_all(runs), changes);
        println!(
            "burst of {burst} changes written in {:.0} ms; the last one decided reviews {:.0} ms after the first was written",
            written.as_secs_f64() * 1e3,
            visible.as_secs_f64() * 1e3
        );
        results.concat()
    };
    report("burst", burst_latencies);
    let metrics = server.metrics().await;
    println!(
        "inventory objects {:?}, batches {:?}, RSS {:.0} MiB",
        metric(&metrics, "palisade_inventory_objects"),
        metric(&metrics, "palisade_inventory_batches_total"),
        rss_mib()
    );
    server.stop().await;
}

/// The same start in a process of its own: Palisade's memory alone, without the stand-in's
/// objects and allocations beside it in this process. With `audit_all`, it samples until the
/// leader's first audit is done.
async fn separate(kubeconfig: &str, policies: &str, objects: usize, audit_all: bool) {
    let (listen, health) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let bin =
        std::env::var_os("PALISADE_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_palisade").into());
    let child = ChildGuard(
        std::process::Command::new(&bin)
            .args(["serve", "--log-level", "warn", "--listen"])
            .arg(listen.to_string())
            .arg("--health-listen")
            .arg(health.to_string())
            .args(cluster_args(kubeconfig, policies))
            .current_dir(dir.path())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    loop {
        // The health port opens a moment after the process starts.
        let listening = tokio::net::TcpStream::connect(health).await.is_ok();
        if listening && http_get(health, "/readyz").await.0 == 200 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the separate palisade never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready = start.elapsed();
    let pid = child.0.id().to_string();
    let mib = |field: &str| memory_mib(&pid, field);
    // As leader it also runs the first audit, which lists and evaluates the objects again.
    let mut samples = Vec::new();
    for after in [0, 2, 5, 10] {
        tokio::time::sleep_until((start + ready + Duration::from_secs(after)).into()).await;
        samples.push(format!(
            "{:.0} MiB at +{after} s (peak so far {:.0})",
            mib("VmRSS:"),
            mib("VmHWM:")
        ));
    }
    let mut audited = None;
    if audit_all {
        while start.elapsed() < Duration::from_secs(600) {
            let metrics = http_get(health, "/metrics").await.1;
            if metric(&metrics, "palisade_audit_runs_total{result=\"ok\"}")
                .is_some_and(|n| n >= 1.0)
            {
                audited = Some((
                    start.elapsed() - ready,
                    metric(&metrics, "palisade_audit_objects"),
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(audited.is_some(), "the first audit never finished");
    }
    println!(
        "palisade in its own process ({}), {objects} objects in the cluster: ready after {:.2} s; RSS {}; first audit {}; peak {:.0} MiB",
        std::path::Path::new(&bin).display(),
        ready.as_secs_f64(),
        samples.join(", "),
        audited.map_or("not awaited".into(), |(t, n)| format!(
            "done {:.1} s after ready ({} objects)",
            t.as_secs_f64(),
            n.unwrap_or(0.0)
        )),
        mib("VmHWM:")
    );
}

/// Kills the child however the bench ends, so that no server outlives it.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
