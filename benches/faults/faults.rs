//! The faults, each run under load: none (the control), the serving certificate rotated, the
//! bundle swapped to a broken one and back, the stand-in API server's watches dropped, its
//! history compacted and itself restarted, and SIGTERM in a rolling restart of two replicas.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use palisade::tls::certificates::{CertSpec, Pair};
use palisade_testkit::apiserver::{ApiServer, NAMESPACES, NETWORK_POLICIES};
use palisade_testkit::fixtures::repo_path;
use palisade_testkit::https::Proto;
use palisade_testkit::volume::project_version;
use serde_json::{Value, json};

use crate::client::Client;
use crate::load::{Tally, open_loop};
use crate::proxy::Proxy;
use crate::replica::Replica;
use crate::workload::{expected_cases, file_inventory};

// ---------------------------------------------------------------------------------------------
// What the faults change: the serving certificate and the bundle, as volumes

fn serving_files(spec: &CertSpec, ca: &Pair) -> Vec<(String, Vec<u8>)> {
    let pair =
        palisade::tls::certificates::issue(spec, ca, Duration::from_secs(24 * 3600)).unwrap();
    vec![
        ("tls.crt".into(), pair.cert_pem.into_bytes()),
        ("tls.key".into(), pair.key_pem.into_bytes()),
    ]
}

/// The repository's bundle flattened into ConfigMap keys (`zero-trust/pod-security/template.yaml`
/// becomes `zero-trust_pod-security_template.yaml`), `version` in a comment so that each good
/// version is new input that the server rebuilds, and with a template that does not compile
/// when `broken`.
fn bundle_files(version: u64, broken: bool) -> Vec<(String, Vec<u8>)> {
    let root = repo_path("policies");
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml")
                && !path.ends_with("kustomization.yaml")
            {
                let key = path
                    .strip_prefix(&root)
                    .unwrap()
                    .display()
                    .to_string()
                    .replace('/', "_");
                files.push((key, std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    if let Some((_, first)) = files.first_mut() {
        first.extend_from_slice(format!("\n# bundle version {version}\n").as_bytes());
    }
    if broken {
        files.push((
            "broken-template.yaml".into(),
            BROKEN_TEMPLATE.as_bytes().to_vec(),
        ));
    }
    files
}

/// A template whose Rego does not parse: the whole bundle it is in must be refused.
const BROKEN_TEMPLATE: &str = r#"apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: faultsbroken
spec:
  crd:
    spec:
      names:
        kind: FaultsBroken
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package faultsbroken
        violation[{"msg": msg}] {
          msg := "unterminated
        }
"#;

// ---------------------------------------------------------------------------------------------
// The faults

pub struct Run {
    work: tempfile::TempDir,
    ca: Pair,
    spec: CertSpec,
}

impl Run {
    pub fn new() -> Self {
        let work = tempfile::tempdir().unwrap();
        let spec = CertSpec::new("palisade", "palisade-system");
        let ca = palisade::tls::certificates::generate_ca(&spec, Duration::from_secs(24 * 3600))
            .unwrap();
        let certs = work.path().join("certs");
        std::fs::create_dir(&certs).unwrap();
        project_version(&certs, 0, &serving_files(&spec, &ca));
        Self { work, ca, spec }
    }

    pub fn path(&self) -> &Path {
        self.work.path()
    }

    pub fn file_args(&self) -> Vec<String> {
        vec![
            "--no-cluster".into(),
            "--policies".into(),
            repo_path("policies").display().to_string(),
            "--inventory".into(),
            format!(
                "{},{}",
                repo_path("tests/data/mutation/namespaces.yaml").display(),
                repo_path("tests/data/guides/default-deny.yaml").display()
            ),
        ]
    }

    pub fn client(&self, addr: SocketAddr, proto: Proto, max_age: Option<Duration>) -> Arc<Client> {
        Arc::new(Client::new(
            addr,
            self.ca.cert_pem.as_bytes(),
            proto,
            max_age,
        ))
    }
}

/// Load goes on this long after the last fault, so that its effects are measured too.
const SETTLE: Duration = Duration::from_millis(500);

/// What a fault run found beside the tally: proof that the fault happened, and problems.
pub struct Outcome {
    pub evidence: String,
    pub problems: Vec<String>,
}

pub async fn fault_none(proto: Proto, rate: u64, duration: Duration) -> (Arc<Tally>, Outcome) {
    let run = Run::new();
    let cases = Arc::new(expected_cases(&repo_path("policies"), file_inventory()));
    let replica = Replica::start(run.path(), "palisade", &run.file_args()).await;
    let client = run.client(replica.https, proto, None);
    let cpu = replica.cpu();
    let tally = open_loop(client.clone(), cases, rate, duration, Arc::default()).await;
    let busy = (replica.cpu() - cpu) / duration.as_secs_f64();
    (
        tally,
        Outcome {
            evidence: format!(
                "no fault: the control; the server's core {:.0}% busy; {} connections opened",
                busy * 100.0,
                client.handshakes.load(Ordering::Relaxed)
            ),
            problems: Vec::new(),
        },
    )
}

pub async fn fault_cert(proto: Proto, rate: u64, duration: Duration) -> (Arc<Tally>, Outcome) {
    let run = Run::new();
    let cases = Arc::new(expected_cases(&repo_path("policies"), file_inventory()));
    let replica = Replica::start(run.path(), "palisade", &run.file_args()).await;
    // New connections all the time, so that handshakes meet each certificate.
    let client = run.client(replica.https, proto, Some(Duration::from_millis(250)));
    let certs = run.path().join("certs");
    let rotations = duration.as_secs();
    let rotate = async {
        let start = Instant::now();
        for i in 1..=rotations {
            tokio::time::sleep_until((start + Duration::from_secs(i)).into()).await;
            let files = serving_files(&run.spec, &run.ca);
            project_version(&certs, i, &files);
        }
    };
    let load = open_loop(
        client.clone(),
        cases,
        rate,
        duration + SETTLE,
        Arc::default(),
    );
    let cpu = replica.cpu();
    let (tally, ()) = tokio::join!(load, rotate);
    let busy = (replica.cpu() - cpu) / duration.as_secs_f64();
    let reloads = replica.metric("palisade_tls_reloads_total").await;
    let rejected = replica.metric("palisade_tls_reload_failures_total").await;
    let seen = client.certificates.lock().unwrap().len();
    let mut problems = Vec::new();
    if seen < 2 || reloads < 1.0 {
        problems.push(format!(
            "the rotation was not exercised: {seen} certificates seen, {reloads} reloads"
        ));
    }
    let outcome = Outcome {
        evidence: format!(
            "{rotations} rotations; the server reloaded {reloads} times and refused {rejected}; the client made {} handshakes and met {seen} distinct certificates; the server's core {:.0}% busy",
            client.handshakes.load(Ordering::Relaxed),
            busy * 100.0
        ),
        problems,
    };
    (tally, outcome)
}

pub async fn fault_bundle(proto: Proto, rate: u64, duration: Duration) -> (Arc<Tally>, Outcome) {
    let run = Run::new();
    let bundle = run.path().join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    project_version(&bundle, 0, &bundle_files(0, false));
    // The expected answers come from the good bundle as projected, read the way serve reads it.
    let cases = Arc::new(expected_cases(&bundle, file_inventory()));
    let mut args = run.file_args();
    args[2] = bundle.display().to_string();
    let replica = Replica::start(run.path(), "palisade", &args).await;
    let client = run.client(replica.https, proto, None);
    let swaps = duration.as_secs();
    let swap = async {
        let start = Instant::now();
        for i in 1..=swaps {
            tokio::time::sleep_until((start + Duration::from_secs(i)).into()).await;
            project_version(&bundle, i, &bundle_files(i, i % 2 == 1));
            // The next swap once the server has read this version (loaded or refused it): a
            // server on a busy core takes seconds to build a bundle, and would otherwise meet
            // only some versions, perhaps no good one (CI, issue 33).
            let read = Instant::now();
            while read.elapsed() < Duration::from_secs(30)
                && replica.metric("palisade_policy_reloads_total").await
                    + replica
                        .metric("palisade_policy_reload_failures_total")
                        .await
                    < i as f64
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    // The load goes on until the last swap has been read, however long that takes.
    let swapped = std::sync::atomic::AtomicBool::new(false);
    let swap = async {
        swap.await;
        swapped.store(true, Ordering::Relaxed);
    };
    let load = async {
        let tally = open_loop(
            client.clone(),
            cases.clone(),
            rate,
            duration + SETTLE,
            Arc::default(),
        )
        .await;
        while !swapped.load(Ordering::Relaxed) {
            open_loop(client.clone(), cases.clone(), rate, SETTLE, tally.clone()).await;
        }
        tally
    };
    let (tally, ()) = tokio::join!(load, swap);
    let reloads = replica.metric("palisade_policy_reloads_total").await;
    let rejected = replica
        .metric("palisade_policy_reload_failures_total")
        .await;
    let mut problems = Vec::new();
    // Two swaps in one reload's time may be read as one: at least one of each must happen.
    if rejected < 1.0 || reloads < 1.0 {
        problems.push(format!(
            "{} broken and {} good versions, but {rejected} refused and {reloads} reloaded",
            swaps.div_ceil(2),
            swaps / 2
        ));
    }
    (
        tally,
        Outcome {
            evidence: format!(
                "{swaps} swaps, alternately to a broken bundle and to a new good one; the server reloaded {reloads} times and refused {rejected}"
            ),
            problems,
        },
    )
}

pub async fn fault_api(proto: Proto, rate: u64, duration: Duration) -> (Arc<Tally>, Outcome) {
    let run = Run::new();
    let api = ApiServer::start().await;
    let mut objects = file_inventory();
    objects.push(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "palisade-system"}}),
    );
    for object in &objects {
        api.create(object.clone()).unwrap();
    }
    // The expected answers from the objects as the stand-in stores them (uid, resourceVersion).
    let stored: Vec<Value> = objects
        .iter()
        .map(|o| {
            let r = if o["kind"] == "Namespace" {
                &NAMESPACES
            } else {
                &NETWORK_POLICIES
            };
            api.get(
                r,
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap(),
            )
            .unwrap()
        })
        .collect();
    let cases = Arc::new(expected_cases(&repo_path("policies"), stored));
    let kubeconfig = api.kubeconfig("faults");
    let args: Vec<String> = [
        "--kubeconfig",
        &kubeconfig.display().to_string(),
        "--policies",
        &repo_path("policies").display().to_string(),
        "--generate-default-deny=false",
        "--own-namespace",
        "palisade-system",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let replica = Replica::start(run.path(), "palisade", &args).await;
    let client = run.client(replica.https, proto, None);
    let seconds = duration.as_secs();
    let (mut drops, mut compactions, mut restarts) = (0, 0, 0);
    let faults = async {
        let start = Instant::now();
        for i in 1..=seconds {
            tokio::time::sleep_until((start + Duration::from_secs(i)).into()).await;
            match i % 5 {
                // Down for a second: connections refused, every watch cut.
                3 => {
                    api.stop();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    api.restart().await;
                    restarts += 1;
                }
                4 => {}
                // Every resourceVersion the watchers hold becomes 410 Gone: they must relist.
                1 => {
                    api.compact();
                    api.drop_watches();
                    compactions += 1;
                }
                _ => {
                    api.drop_watches();
                    drops += 1;
                }
            }
        }
    };
    let load = open_loop(
        client.clone(),
        cases.clone(),
        rate,
        duration + SETTLE,
        Arc::default(),
    );
    let (tally, ()) = tokio::join!(load, faults);
    let errors = replica
        .metric("palisade_inventory_watch_errors_total")
        .await;
    let recovered = replica.logged("inventory watch recovered");
    // After the faults, a change must still reach decisions: the watches are live again.
    api.delete(&NETWORK_POLICIES, "payments", "default-deny-all")
        .unwrap();
    let probe = cases
        .iter()
        .find(|c| c.name == "admitted pod in payments")
        .unwrap();
    let written = Instant::now();
    let mut seen = None;
    while written.elapsed() < Duration::from_secs(30) {
        if let Ok((200, body)) = client.send("/validate", probe.body.clone()).await {
            let review: Value = serde_json::from_slice(&body).unwrap_or_default();
            if review["response"]["allowed"] == false {
                seen = Some(written.elapsed());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut problems = Vec::new();
    if seen.is_none() {
        problems.push("a change after the faults never reached decisions within 30 s".to_owned());
    }
    if restarts == 0 {
        problems.push("the stand-in was never restarted (run for at least 5 s)".to_owned());
    }
    let _ = replica.metric("palisade_inventory_objects").await;
    (
        tally,
        Outcome {
            evidence: format!(
                "{drops} watch drops, {compactions} compactions (410 on resume), {restarts} restarts (1 s down); the server counted {errors} watch errors and logged {recovered} recoveries; a deletion after the faults decided reviews after {}",
                seen.map_or("never".into(), |d| format!("{} ms", d.as_millis()))
            ),
            problems,
        },
    )
}

pub async fn fault_sigterm(proto: Proto, rate: u64, duration: Duration) -> (Arc<Tally>, Outcome) {
    let run = Run::new();
    let cases = Arc::new(expected_cases(&repo_path("policies"), file_inventory()));
    // As the Deployment runs it: unready and still serving for 5 s after SIGTERM, then a drain.
    let mut args = run.file_args();
    args.extend([
        "--shutdown-delay".into(),
        "5s".into(),
        "--drain-timeout".into(),
        "20s".into(),
    ]);
    let proxy = Proxy::start().await;
    let mut a = Replica::start(run.path(), "a", &args).await;
    let mut b = Replica::start(run.path(), "b", &args).await;
    proxy.add("a", &a);
    proxy.add("b", &b);
    let client = run.client(proxy.addr, proto, None);
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let tally = Arc::new(Tally::default());
    let at_sigterm = |name: &str| {
        format!(
            "{} reviews in flight and {} connections open to {name}",
            tally.in_flight.load(Ordering::Relaxed),
            proxy.open(name)
        )
    };
    // However low the rate, the drain must meet connections that carry reviews.
    let met_traffic = |problems: &mut Vec<String>, name: &str| {
        if proxy.open(name) == 0 {
            problems.push(format!("no connection was open to {name} at SIGTERM"));
        }
    };
    let roll = async {
        let third = duration / 3;
        tokio::time::sleep(third).await;
        // a leaves; once it has exited, c takes its place; then b leaves.
        met_traffic(&mut problems, "a");
        a.terminate();
        notes.push(format!("SIGTERM to a with {}", at_sigterm("a")));
        let a_exit = a.exited(Duration::from_secs(40)).await;
        let c = Replica::start(run.path(), "c", &args).await;
        proxy.add("c", &c);
        tokio::time::sleep(third.saturating_sub(Duration::from_secs(6))).await;
        met_traffic(&mut problems, "b");
        b.terminate();
        notes.push(format!("SIGTERM to b with {}", at_sigterm("b")));
        let b_exit = b.exited(Duration::from_secs(40)).await;
        for (name, replica, exit) in [("a", &a, a_exit), ("b", &b, b_exit)] {
            match exit {
                Some(status) if status.success() => notes.push(format!(
                    "{name} exited 0 {} after SIGTERM",
                    if replica.logged("all connections drained") == 1 {
                        "drained"
                    } else {
                        "NOT drained"
                    }
                )),
                other => problems.push(format!("{name} after SIGTERM: {other:?}")),
            }
            if replica.logged("all connections drained") != 1 {
                problems.push(format!(
                    "{name} did not log a complete drain: {}",
                    replica.log_text()
                ));
            }
        }
        c
    };
    // Long enough for both replicas to leave (5 s delay each) with load all along.
    let total = duration.max(Duration::from_secs(15));
    let (tally, c) = tokio::join!(open_loop(client, cases, rate, total, tally.clone()), roll);
    drop(c);
    (
        tally,
        Outcome {
            evidence: format!(
                "{}; connections through the proxy: {}",
                notes.join(", "),
                proxy.connections()
            ),
            problems,
        },
    )
}
