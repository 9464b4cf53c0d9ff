//! Faults under load (issue 15). Palisade runs as its own process (two for the SIGTERM fault),
//! and a load generator in this process sends captured AdmissionReviews at a steady rate — half
//! the server's capacity, measured first — while one fault is injected again and again. Every answer is
//! checked against the one the library's `Decider` gives for the same review with the good
//! bundle and the same inventory: a failed review (no answer, not 200, not a review) and a wrong
//! decision (any other `response`) are counted apart, and the run fails unless both are zero.
//!
//! The faults:
//! - `none`: the same load without a fault, the control: a failure here is the machine's or the
//!   tool's, not a fault's.
//! - `cert`: the serving certificate rotated every second through the `..data` symlink, the way
//!   the kubelet updates a Secret volume (the old version's directory removed after each swap);
//!   the client opens new connections all the time, so that handshakes meet every certificate.
//! - `bundle`: the policy bundle, laid out as a ConfigMap volume, swapped every second to a version
//!   with a template whose Rego does not compile, then to a new good version (a comment differs,
//!   so the server rebuilds it).
//! - `api`: Palisade on the live inventory of the tests' stand-in API server (in this process),
//!   whose watches are dropped every second, whose history is compacted (410 Gone on resume), and
//!   which is stopped for a second and restarted every five; after the load, one change must
//!   still reach decisions.
//! - `sigterm`: two replicas behind a local round-robin TCP proxy that routes new connections to
//!   ready replicas only, as endpoints do; one replica gets SIGTERM, and once it has exited a new
//!   one takes its place and the other gets SIGTERM (a rolling restart). Every review sent
//!   completes.
//!
//! A review the server provably did not process is sent again on a new connection, as the API
//! server's Go client does: the connection could not be opened, hyper hands the request back
//! unsent, or HTTP/2 refused the stream (a GOAWAY below its id, or REFUSED_STREAM). These are
//! counted as `retried`; anything else is a failure.
//!
//!   cargo bench --bench faults                       # every fault, HTTP/2 and HTTP/1.1, 30 s each
//!   cargo bench --bench faults -- --faults sigterm --proto h2 --seconds 10
//!
//! RELIABILITY.md records the runs. Not a test: it needs both cores and half a minute per fault.

#[path = "../tests/it/apiserver.rs"]
#[allow(dead_code)]
mod apiserver;
#[path = "../tests/it/common.rs"]
#[allow(dead_code)]
mod common;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apiserver::{ApiServer, NETWORK_POLICIES};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use palisade::admission::Endpoint;
use palisade::decide::Decider;
use palisade::inventory::Inventory;
use palisade::policy::EngineOptions;
use palisade::tls::certificates::{CertSpec, Pair};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
#[command(about = "Faults under load: every answer checked against the expected decision")]
struct Args {
    /// Faults to inject, each in its own run: none (the same load without a fault, the
    /// control), cert, bundle, api, sigterm.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "none,cert,bundle,api,sigterm"
    )]
    faults: Vec<String>,
    /// Protocols, each a run of every fault: h2 (what the API server uses), http1.
    #[arg(long, value_delimiter = ',', default_value = "h2,http1")]
    proto: Vec<String>,
    /// How long each fault runs under load, in seconds.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Reviews per second; 0 measures the capacity first and runs at half of it.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Accepted so that `cargo bench` may pass it.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    H2,
    Http1,
}

impl Proto {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "h2" => Some(Self::H2),
            "http1" => Some(Self::Http1),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::H2 => "h2",
            Self::Http1 => "http1",
        }
    }

    fn common(self) -> common::Proto {
        match self {
            Self::H2 => common::Proto::Http2,
            Self::Http1 => common::Proto::Http1,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The workload and its expected answers

/// One review of the workload and the `response` the good bundle gives it.
struct Case {
    name: String,
    path: &'static str,
    body: Bytes,
    expected: Value,
}

/// The captured reviews, in both namespaces of the inventory (payments has its default-deny and
/// requires mutual TLS; shop has neither), with distinct uids.
fn workload_reviews() -> Vec<(String, &'static str, Value)> {
    let mut out = Vec::new();
    let cases: [(&str, &str, &'static str); 6] = [
        ("admitted pod", "bench/admitted-pod.json", "/validate"),
        (
            "captured pod",
            "admission/validate-create-pod.json",
            "/validate",
        ),
        (
            "pod mutation",
            "admission/mutate-create-pod.json",
            "/mutate",
        ),
        (
            "five-container mutation",
            "bench/mutate-pod-5-containers.json",
            "/mutate",
        ),
        (
            "networkpolicy",
            "admission/validate-create-networkpolicy.json",
            "/validate",
        ),
        (
            "namespace",
            "admission/validate-create-namespace.json",
            "/validate",
        ),
    ];
    for (i, (label, file, path)) in cases.into_iter().enumerate() {
        for ns in ["payments", "shop"] {
            let mut review: Value = serde_json::from_slice(&common::fixture(file)).unwrap();
            if review["request"]["kind"]["kind"] != "Namespace" {
                common::in_namespace(&mut review, ns);
            } else if ns == "shop" {
                continue;
            }
            review["request"]["uid"] =
                format!("00000000-0000-4000-8000-{i:06}{:06}", out.len()).into();
            out.push((format!("{label} in {ns}"), path, review));
        }
    }
    out
}

/// Decides each review in this process, as `palisade serve` would with `bundle` and `objects`.
fn expected_cases(bundle_dir: &Path, objects: Vec<Value>) -> Vec<Case> {
    let bundle = palisade::bundle::load(bundle_dir, &EngineOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}", bundle_dir.display()));
    let inventory = Inventory::from_objects(objects);
    let decider = Decider::without_exemptions();
    workload_reviews()
        .into_iter()
        .map(|(name, path, review)| {
            let body = serde_json::to_vec(&review).unwrap();
            let decoded = palisade::admission::decode(&body).unwrap();
            let endpoint = if path == "/mutate" {
                Endpoint::Mutate
            } else {
                Endpoint::Validate
            };
            let decision = decider
                .decide(
                    &bundle,
                    &inventory,
                    endpoint,
                    &decoded,
                    time::OffsetDateTime::now_utc(),
                    None,
                )
                .unwrap_or_else(|_| panic!("{name}: out of time"));
            let encoded: Value =
                serde_json::from_slice(&decision.response.encode(decoded.uid())).unwrap();
            Case {
                name,
                path,
                body: Bytes::from(body),
                expected: encoded["response"].clone(),
            }
        })
        .collect()
}

fn describe(cases: &[Case]) -> String {
    let allowed = cases.iter().filter(|c| c.expected["allowed"] == true);
    let patched = cases
        .iter()
        .filter(|c| c.expected.get("patch").is_some())
        .count();
    let allowed = allowed.count();
    format!(
        "{} reviews: {allowed} allowed ({patched} of them patched), {} denied",
        cases.len(),
        cases.len() - allowed
    )
}

fn file_inventory() -> Vec<Value> {
    palisade::manifest::files::read_objects(&[
        common::repo_path("tests/data/mutation/namespaces.yaml"),
        common::repo_path("tests/data/guides/default-deny.yaml"),
    ])
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// The checking client

enum Sender {
    H2(http2::SendRequest<Full<Bytes>>),
    H1(http1::SendRequest<Full<Bytes>>),
}

struct Conn {
    sender: Sender,
    born: Instant,
}

/// Why a review failed, or was sent again.
#[derive(Debug)]
struct SendError {
    /// The server provably did not process it.
    unprocessed: bool,
    what: String,
}

/// A client like the API server's: HTTP/2 multiplexed over a few connections, or HTTP/1.1 with a
/// pool of keep-alive connections, reconnecting whenever a connection is gone.
struct Client {
    https: common::Client,
    proto: Proto,
    /// HTTP/2: a fixed number of shared connections.
    slots: Vec<tokio::sync::Mutex<Option<Conn>>>,
    /// HTTP/1.1: idle keep-alive connections.
    idle: Mutex<Vec<Conn>>,
    /// HTTP/1.1: reviews in flight, so connections, at most as many as the capacity was
    /// measured with (the API server's client keeps 25 idle per host): without a cap, a
    /// moment's backlog opens connections whose handshakes deepen it.
    h1_slots: tokio::sync::Semaphore,
    next: AtomicUsize,
    /// Connections older than this are replaced (new handshakes for the rotation fault).
    max_age: Option<Duration>,
    certificates: Mutex<HashSet<Vec<u8>>>,
    handshakes: AtomicU64,
}

impl Client {
    fn new(addr: SocketAddr, ca: &[u8], proto: Proto, max_age: Option<Duration>) -> Self {
        Self {
            https: common::Client::new(addr, &[ca]),
            proto,
            slots: (0..4).map(|_| tokio::sync::Mutex::new(None)).collect(),
            idle: Mutex::new(Vec::new()),
            h1_slots: tokio::sync::Semaphore::new(CONCURRENCY),
            next: AtomicUsize::new(0),
            max_age,
            certificates: Mutex::new(HashSet::new()),
            handshakes: AtomicU64::new(0),
        }
    }

    fn fresh(&self, conn: &Conn) -> bool {
        self.max_age.is_none_or(|age| conn.born.elapsed() < age)
    }

    async fn connect(&self) -> Result<Conn, SendError> {
        let unprocessed = |what: String| SendError {
            unprocessed: true,
            what,
        };
        let tls = self
            .https
            .connect(self.proto.common())
            .await
            .map_err(|e| unprocessed(format!("connect: {e}")))?;
        self.handshakes.fetch_add(1, Ordering::Relaxed);
        if let Some(leaf) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
            self.certificates.lock().unwrap().insert(leaf.to_vec());
        }
        let io = TokioIo::new(tls);
        let sender = match self.proto {
            Proto::H2 => {
                let (send, conn) = http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| unprocessed(format!("h2 handshake: {e}")))?;
                tokio::spawn(conn);
                Sender::H2(send)
            }
            Proto::Http1 => {
                let (send, conn) = http1::handshake(io)
                    .await
                    .map_err(|e| unprocessed(format!("http1 handshake: {e}")))?;
                tokio::spawn(conn);
                Sender::H1(send)
            }
        };
        Ok(Conn {
            sender,
            born: Instant::now(),
        })
    }

    /// An HTTP/2 connection of the slot, a new one when it is gone or too old.
    async fn h2(&self) -> Result<http2::SendRequest<Full<Bytes>>, SendError> {
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        let mut conn = slot.lock().await;
        let usable = match conn.as_ref() {
            Some(
                c @ Conn {
                    sender: Sender::H2(send),
                    ..
                },
            ) => !send.is_closed() && self.fresh(c),
            _ => false,
        };
        if !usable {
            *conn = Some(self.connect().await?);
        }
        match conn.as_ref().map(|c| &c.sender) {
            Some(Sender::H2(send)) => Ok(send.clone()),
            _ => unreachable!("the slot holds an HTTP/2 connection"),
        }
    }

    /// An idle HTTP/1.1 connection, or a new one.
    async fn h1(&self) -> Result<Conn, SendError> {
        loop {
            let Some(mut conn) = self.idle.lock().unwrap().pop() else {
                return self.connect().await;
            };
            let fresh = self.fresh(&conn);
            let Sender::H1(send) = &mut conn.sender else {
                continue;
            };
            if fresh && !send.is_closed() && send.ready().await.is_ok() {
                return Ok(conn);
            }
        }
    }

    /// One attempt: the status and body, or why not.
    async fn send(&self, path: &str, body: Bytes) -> Result<(u16, Bytes), SendError> {
        let request = hyper::Request::post(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .header("accept", "application/json, */*")
            .body(Full::new(body))
            .unwrap();
        let refused = |error: &hyper::Error| {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
            while let Some(e) = source {
                if let Some(h2) = e.downcast_ref::<h2::Error>() {
                    return h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                        || (h2.is_go_away() && h2.is_remote());
                }
                source = e.source();
            }
            false
        };
        // Held until the answer is read and the connection is back in the pool.
        let _slot = match self.proto {
            Proto::Http1 => Some(self.h1_slots.acquire().await.expect("never closed")),
            Proto::H2 => None,
        };
        let (response, conn) = match self.proto {
            Proto::H2 => {
                let mut send = self.h2().await?;
                if let Err(e) = send.ready().await {
                    return Err(SendError {
                        unprocessed: true,
                        what: format!("connection gone before the request: {e}"),
                    });
                }
                (send.try_send_request(request).await, None)
            }
            Proto::Http1 => {
                let mut conn = self.h1().await?;
                let Sender::H1(send) = &mut conn.sender else {
                    unreachable!("the pool holds HTTP/1.1 connections")
                };
                (send.try_send_request(request).await, Some(conn))
            }
        };
        let response = response.map_err(|mut e| {
            let unsent = e.take_message().is_some();
            SendError {
                unprocessed: unsent || refused(e.error()),
                what: format!(
                    "{}{}",
                    e.error(),
                    std::error::Error::source(e.error())
                        .map(|s| format!(": {s}"))
                        .unwrap_or_default()
                ),
            }
        })?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| SendError {
                unprocessed: false,
                what: format!("reading the answer: {e}"),
            })?
            .to_bytes();
        if let Some(conn) = conn {
            self.idle.lock().unwrap().push(conn);
        }
        Ok((status, body))
    }
}

// ---------------------------------------------------------------------------------------------
// The load

#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    wrong: AtomicU64,
    retried: AtomicU64,
    /// Reviews sent and not yet answered.
    in_flight: AtomicU64,
    latencies: Mutex<Vec<u32>>,
    /// A few examples of each kind of failure, wrong answer and retry.
    examples: Mutex<BTreeMap<String, (u64, String)>>,
}

impl Tally {
    fn note(&self, kind: &str, example: String) {
        let mut examples = self.examples.lock().unwrap();
        let entry = examples.entry(kind.to_owned()).or_insert((0, example));
        entry.0 += 1;
    }
}

/// Attempts per review before it counts as failed; only unprocessed ones are sent again.
const ATTEMPTS: usize = 5;
/// The API server's longest webhook timeout is 30 s; Palisade's manifests set 10 s.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

async fn review(client: &Client, case: &Case, tally: &Tally, scheduled: Instant) {
    tally.sent.fetch_add(1, Ordering::Relaxed);
    tally.in_flight.fetch_add(1, Ordering::Relaxed);
    let outcome = checked(client, case, tally, scheduled).await;
    tally.in_flight.fetch_sub(1, Ordering::Relaxed);
    match outcome {
        Checked::Right => tally.ok.fetch_add(1, Ordering::Relaxed),
        Checked::Failed => tally.failed.fetch_add(1, Ordering::Relaxed),
        Checked::Wrong => tally.wrong.fetch_add(1, Ordering::Relaxed),
    };
}

enum Checked {
    Right,
    Failed,
    Wrong,
}

/// Sends one review (again while it provably was not processed) and checks the answer.
async fn checked(client: &Client, case: &Case, tally: &Tally, scheduled: Instant) -> Checked {
    let mut attempt = 0;
    let answer = loop {
        attempt += 1;
        match tokio::time::timeout(REVIEW_TIMEOUT, client.send(case.path, case.body.clone())).await
        {
            Ok(Ok(answer)) => break Some(answer),
            Ok(Err(e)) if e.unprocessed && attempt < ATTEMPTS => {
                tally.retried.fetch_add(1, Ordering::Relaxed);
                tally.note("retried (not processed)", e.what);
            }
            Ok(Err(e)) => {
                tally.note("failed", format!("{}: {}", case.name, e.what));
                break None;
            }
            Err(_) => {
                tally.note(
                    "failed",
                    format!("{}: no answer in {REVIEW_TIMEOUT:?}", case.name),
                );
                break None;
            }
        }
    };
    let Some((status, body)) = answer else {
        return Checked::Failed;
    };
    let review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if status != 200 || review["kind"] != "AdmissionReview" {
        tally.note(
            "failed",
            format!(
                "{}: HTTP {status}: {}",
                case.name,
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            ),
        );
        return Checked::Failed;
    }
    if review["response"] != case.expected {
        tally.note(
            "wrong",
            format!(
                "{}: got {} expected {}",
                case.name, review["response"], case.expected
            ),
        );
        return Checked::Wrong;
    }
    let us = scheduled.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
    tally.latencies.lock().unwrap().push(us);
    Checked::Right
}

/// Sends the cases round-robin at `rate` per second for `duration` (open loop: latency counts
/// from the scheduled time), then waits for every review sent.
async fn open_loop(
    client: Arc<Client>,
    cases: Arc<Vec<Case>>,
    rate: u64,
    duration: Duration,
    tally: Arc<Tally>,
) -> Arc<Tally> {
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0u64.. {
        let scheduled = start + interval.mul_f64(n as f64);
        if scheduled >= start + duration {
            break;
        }
        // tokio's timer wakes on the millisecond: the reviews due meanwhile go out together, a
        // little late, and that lateness counts in their latency. No spinning: this process
        // has one core for the load, the proxy and the stand-in.
        if scheduled > Instant::now() {
            tokio::time::sleep_until(scheduled.into()).await;
        }
        let (client, cases, tally) = (client.clone(), cases.clone(), tally.clone());
        tasks.spawn(async move {
            let case = &cases[(n as usize) % cases.len()];
            review(&client, case, &tally, scheduled).await;
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    tally
}

/// Reviews in flight when the capacity is measured.
const CONCURRENCY: usize = 32;

/// As many reviews as [`CONCURRENCY`] in flight allow, for `duration`: the capacity, in reviews
/// per second answered correctly.
async fn capacity(client: Arc<Client>, cases: Arc<Vec<Case>>, duration: Duration) -> f64 {
    let tally = Arc::new(Tally::default());
    let end = Instant::now() + duration;
    let mut workers = Vec::new();
    for w in 0..CONCURRENCY {
        let (client, cases, tally) = (client.clone(), cases.clone(), tally.clone());
        workers.push(tokio::spawn(async move {
            let mut n = w;
            while Instant::now() < end {
                review(&client, &cases[n % cases.len()], &tally, Instant::now()).await;
                n += CONCURRENCY;
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let (failed, wrong) = (
        tally.failed.load(Ordering::Relaxed),
        tally.wrong.load(Ordering::Relaxed),
    );
    assert!(
        failed == 0 && wrong == 0,
        "without any fault, {failed} reviews failed and {wrong} were wrong: {:#?}",
        tally.examples.lock().unwrap()
    );
    tally.ok.load(Ordering::Relaxed) as f64 / duration.as_secs_f64()
}

// ---------------------------------------------------------------------------------------------
// Palisade in its own process

/// A `palisade serve` child, killed however the run ends.
struct Replica {
    child: Child,
    https: SocketAddr,
    health: SocketAddr,
    log: PathBuf,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
}

/// Two cores: every Palisade on core 0, this process (load, proxy, stand-in) on core 1.
fn pinned() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
        && Command::new("taskset")
            .arg("-V")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

impl Replica {
    async fn start(work: &Path, name: &str, args: &[String]) -> Self {
        let (https, health) = (free_port(), free_port());
        let log = work.join(format!("{name}.log"));
        let mut command = if pinned() {
            let mut c = Command::new("taskset");
            c.args(["-c", "0"]).arg(env!("CARGO_BIN_EXE_palisade"));
            c
        } else {
            Command::new(env!("CARGO_BIN_EXE_palisade"))
        };
        command
            .args(["serve", "--log-format", "json", "--log-level", "info"])
            .arg("--listen")
            .arg(https.to_string())
            .arg("--health-listen")
            .arg(health.to_string())
            .arg("--tls-cert")
            .arg(work.join("certs/tls.crt"))
            .arg("--tls-key")
            .arg(work.join("certs/tls.key"))
            .arg("--no-dev-certs")
            .args(args)
            .current_dir(work)
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
            ));
        let mut replica = Self {
            child: command.spawn().unwrap(),
            https,
            health,
            log,
        };
        let start = Instant::now();
        while get(health, "/readyz").await.map(|(s, _)| s) != Some(200) {
            if let Ok(Some(status)) = replica.child.try_wait() {
                panic!("{name} exited ({status}): {}", replica.log_text());
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{name} not ready after 60 s: {}",
                replica.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        replica
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Log lines with this message.
    fn logged(&self, message: &str) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains(&format!("\"message\":\"{message}")))
            .count()
    }

    /// A metric summed over all its labels (0 when absent).
    async fn metric(&self, name: &str) -> f64 {
        let text = get(self.health, "/metrics")
            .await
            .map(|(_, b)| b)
            .unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(name)?;
                let value = match rest.strip_prefix('{') {
                    Some(labelled) => labelled.split_once("} ")?.1,
                    None => rest.strip_prefix(' ')?,
                };
                value.trim().parse::<f64>().ok()
            })
            .sum()
    }

    fn terminate(&self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    }

    /// Waits for the process to exit after SIGTERM: its status, or `None` after `within`.
    async fn exited(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < within {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

/// A plain-HTTP GET that never panics: `None` when nothing answers.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.ok()?;
        Some(common::parse_http1(&raw))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

// ---------------------------------------------------------------------------------------------
// Files laid out as the kubelet lays out a Secret or ConfigMap volume

/// Updates `dir` the way the kubelet's atomic writer updates a Secret or ConfigMap volume: the
/// files written into a new `..v<version>` directory, `..data` swapped to it (a symlink beside it
/// renamed over it), a symlink through `..data` added for each new name and removed for each name
/// gone, and the previous version's directory removed.
fn project(dir: &Path, version: u64, files: &[(String, Vec<u8>)]) {
    let data = dir.join(format!("..v{version}"));
    std::fs::create_dir(&data).unwrap();
    for (name, bytes) in files {
        std::fs::write(data.join(name), bytes).unwrap();
    }
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..v{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for (name, _) in files {
        let link = dir.join(name);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), link).unwrap();
        }
    }
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !files.iter().any(|(n, _)| *n == name) {
            std::fs::remove_file(dir.join(&name)).unwrap();
        }
    }
    if version > 0 {
        let _ = std::fs::remove_dir_all(dir.join(format!("..v{}", version - 1)));
    }
}

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
    let root = common::repo_path("policies");
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
// The round-robin proxy of the SIGTERM fault

/// A TCP proxy in front of replicas: each new connection goes to the next ready backend (its
/// /readyz polled every 100 ms, as endpoints follow readiness), the next one if that refuses.
struct Proxy {
    addr: SocketAddr,
    backends: Mutex<Vec<Backend>>,
    next: AtomicUsize,
}

#[derive(Clone)]
struct Backend {
    name: String,
    https: SocketAddr,
    health: SocketAddr,
    ready: bool,
    connections: u64,
    /// Open now.
    open: u64,
}

impl Proxy {
    async fn start() -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Arc::new(Self {
            addr: listener.local_addr().unwrap(),
            backends: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
        });
        let accepting = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let proxy = accepting.clone();
                tokio::spawn(async move { proxy.forward(client).await });
            }
        });
        let polling = Arc::downgrade(&proxy);
        tokio::spawn(async move {
            while let Some(proxy) = polling.upgrade() {
                let backends: Vec<(usize, SocketAddr)> = proxy
                    .backends
                    .lock()
                    .unwrap()
                    .iter()
                    .enumerate()
                    .map(|(i, b)| (i, b.health))
                    .collect();
                for (i, health) in backends {
                    let ready = get(health, "/readyz").await.is_some_and(|(s, _)| s == 200);
                    if let Some(b) = proxy.backends.lock().unwrap().get_mut(i) {
                        b.ready = ready;
                    }
                }
                drop(proxy);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        proxy
    }

    fn add(&self, name: &str, replica: &Replica) {
        self.backends.lock().unwrap().push(Backend {
            name: name.to_owned(),
            https: replica.https,
            health: replica.health,
            ready: true,
            connections: 0,
            open: 0,
        });
    }

    async fn forward(&self, mut client: TcpStream) {
        let candidates: Vec<(usize, SocketAddr)> = {
            let backends = self.backends.lock().unwrap();
            let ready: Vec<usize> = (0..backends.len()).filter(|&i| backends[i].ready).collect();
            let start = self.next.fetch_add(1, Ordering::Relaxed);
            (0..ready.len())
                .map(|k| ready[(start + k) % ready.len()])
                .map(|i| (i, backends[i].https))
                .collect()
        };
        for (i, addr) in candidates {
            if let Ok(mut backend) = TcpStream::connect(addr).await {
                let _ = backend.set_nodelay(true);
                let _ = client.set_nodelay(true);
                if let Some(b) = self.backends.lock().unwrap().get_mut(i) {
                    b.connections += 1;
                    b.open += 1;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
                if let Some(b) = self.backends.lock().unwrap().get_mut(i) {
                    b.open -= 1;
                }
                return;
            }
        }
    }

    fn open(&self, name: &str) -> u64 {
        let backends = self.backends.lock().unwrap();
        backends
            .iter()
            .find(|b| b.name == name)
            .map_or(0, |b| b.open)
    }

    fn connections(&self) -> String {
        self.backends
            .lock()
            .unwrap()
            .iter()
            .map(|b| format!("{} {}", b.name, b.connections))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

// ---------------------------------------------------------------------------------------------
// The faults

struct Run {
    work: tempfile::TempDir,
    ca: Pair,
    spec: CertSpec,
}

impl Run {
    fn new() -> Self {
        let work = tempfile::tempdir().unwrap();
        let spec = CertSpec::new("palisade", "palisade-system");
        let ca = palisade::tls::certificates::generate_ca(&spec, Duration::from_secs(24 * 3600))
            .unwrap();
        let certs = work.path().join("certs");
        std::fs::create_dir(&certs).unwrap();
        project(&certs, 0, &serving_files(&spec, &ca));
        Self { work, ca, spec }
    }

    fn path(&self) -> &Path {
        self.work.path()
    }

    fn file_args(&self) -> Vec<String> {
        vec![
            "--no-cluster".into(),
            "--policies".into(),
            common::repo_path("policies").display().to_string(),
            "--inventory".into(),
            format!(
                "{},{}",
                common::repo_path("tests/data/mutation/namespaces.yaml").display(),
                common::repo_path("tests/data/guides/default-deny.yaml").display()
            ),
        ]
    }

    fn client(&self, addr: SocketAddr, proto: Proto, max_age: Option<Duration>) -> Arc<Client> {
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
struct Outcome {
    evidence: String,
    problems: Vec<String>,
}

async fn fault_none(proto: Proto, rate: u64, duration: Duration) -> (Arc<Tally>, Outcome) {
    let run = Run::new();
    let cases = Arc::new(expected_cases(
        &common::repo_path("policies"),
        file_inventory(),
    ));
    let replica = Replica::start(run.path(), "palisade", &run.file_args()).await;
    let client = run.client(replica.https, proto, None);
    let cpu = cpu_seconds(replica.child.id());
    let tally = open_loop(client.clone(), cases, rate, duration, Arc::default()).await;
    let busy = (cpu_seconds(replica.child.id()) - cpu) / duration.as_secs_f64();
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

async fn fault_cert(proto: Proto, rate: u64, duration: Duration) -> (Arc<Tally>, Outcome) {
    let run = Run::new();
    let cases = Arc::new(expected_cases(
        &common::repo_path("policies"),
        file_inventory(),
    ));
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
            project(&certs, i, &files);
        }
    };
    let load = open_loop(
        client.clone(),
        cases,
        rate,
        duration + SETTLE,
        Arc::default(),
    );
    let cpu = cpu_seconds(replica.child.id());
    let (tally, ()) = tokio::join!(load, rotate);
    let busy = (cpu_seconds(replica.child.id()) - cpu) / duration.as_secs_f64();
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

async fn fault_bundle(proto: Proto, rate: u64, duration: Duration) -> (Arc<Tally>, Outcome) {
    let run = Run::new();
    let bundle = run.path().join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    project(&bundle, 0, &bundle_files(0, false));
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
            project(&bundle, i, &bundle_files(i, i % 2 == 1));
        }
    };
    let load = open_loop(client, cases, rate, duration + SETTLE, Arc::default());
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

async fn fault_api(proto: Proto, rate: u64, duration: Duration) -> (Arc<Tally>, Outcome) {
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
                &apiserver::NAMESPACES
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
    let cases = Arc::new(expected_cases(&common::repo_path("policies"), stored));
    let kubeconfig = api.kubeconfig("faults");
    let args: Vec<String> = [
        "--kubeconfig",
        &kubeconfig.display().to_string(),
        "--policies",
        &common::repo_path("policies").display().to_string(),
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

async fn fault_sigterm(proto: Proto, rate: u64, duration: Duration) -> (Arc<Tally>, Outcome) {
    let run = Run::new();
    let cases = Arc::new(expected_cases(
        &common::repo_path("policies"),
        file_inventory(),
    ));
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
    let roll = async {
        let third = duration / 3;
        tokio::time::sleep(third).await;
        // a leaves; once it has exited, c takes its place; then b leaves.
        a.terminate();
        notes.push(format!("SIGTERM to a with {}", at_sigterm("a")));
        let a_exit = a.exited(Duration::from_secs(40)).await;
        let c = Replica::start(run.path(), "c", &args).await;
        proxy.add("c", &c);
        tokio::time::sleep(third.saturating_sub(Duration::from_secs(6))).await;
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

// ---------------------------------------------------------------------------------------------

/// User plus system CPU seconds of a process, from /proc/PID/stat (USER_HZ is 100 on Linux).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    f64::from(sorted[i]) / 1000.0
}

fn main() {
    let args = Args::parse();
    // This process (load, proxy, stand-in) on core 1 while every Palisade runs on core 0; set
    // before the runtime starts so that every thread inherits it.
    if pinned() {
        let _ = Command::new("taskset")
            .args(["-p", "-c", "1", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    std::process::exit(runtime.block_on(run(args)));
}

async fn run(args: Args) -> i32 {
    common::install_crypto();
    let protos: Vec<Proto> = args
        .proto
        .iter()
        .map(|p| Proto::parse(p).unwrap_or_else(|| panic!("--proto {p}: give h2 or http1")))
        .collect();
    for fault in &args.faults {
        assert!(
            ["none", "cert", "bundle", "api", "sigterm"].contains(&fault.as_str()),
            "--faults {fault}: give none, cert, bundle, api or sigterm"
        );
    }
    let duration = Duration::from_secs(args.seconds.max(5));
    let mut failures = 0;
    for &proto in &protos {
        let rate = if args.rate > 0 {
            args.rate
        } else {
            let run = Run::new();
            let cases = Arc::new(expected_cases(
                &common::repo_path("policies"),
                file_inventory(),
            ));
            let replica = Replica::start(run.path(), "capacity", &run.file_args()).await;
            println!("workload: {}", describe(&cases));
            let client = run.client(replica.https, proto, None);
            let _ = capacity(client.clone(), cases.clone(), Duration::from_secs(1)).await;
            let (cpu, measured) = (cpu_seconds(replica.child.id()), Duration::from_secs(3));
            let max = capacity(client, cases, measured).await;
            let busy = (cpu_seconds(replica.child.id()) - cpu) / measured.as_secs_f64();
            // The checking client may saturate its own core first: the server's capacity is
            // what it answered over the share of its core it used.
            let server = max / busy.clamp(0.05, 1.0);
            let rate = (server / 2.0).min(max * 0.9) as u64;
            println!(
                "capacity {} {max:.0}/s answered and checked with {CONCURRENCY} in flight, the server's core {:.0}% busy: the server's capacity {server:.0}/s; faults run at {rate}/s",
                proto.name(),
                busy * 100.0
            );
            rate
        };
        for fault in &args.faults {
            let started = Instant::now();
            let (tally, outcome) = match fault.as_str() {
                "none" => fault_none(proto, rate, duration).await,
                "cert" => fault_cert(proto, rate, duration).await,
                "bundle" => fault_bundle(proto, rate, duration).await,
                "api" => fault_api(proto, rate, duration).await,
                _ => fault_sigterm(proto, rate, duration).await,
            };
            let mut latencies = tally.latencies.lock().unwrap().clone();
            latencies.sort_unstable();
            let (sent, failed, wrong) = (
                tally.sent.load(Ordering::Relaxed),
                tally.failed.load(Ordering::Relaxed),
                tally.wrong.load(Ordering::Relaxed),
            );
            println!(
                "fault={fault} proto={} rate={rate}/s seconds={:.0} reviews={sent} failed={failed} wrong={wrong} retried={} p50={:.3}ms p99={:.3}ms max={:.3}ms",
                proto.name(),
                started.elapsed().as_secs_f64(),
                tally.retried.load(Ordering::Relaxed),
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99),
                latencies.last().map_or(0.0, |&m| f64::from(m) / 1000.0),
            );
            println!("  {}", outcome.evidence);
            for (kind, (count, example)) in tally.examples.lock().unwrap().iter() {
                println!("  {kind}: {count}, e.g. {example}");
            }
            for problem in &outcome.problems {
                println!("  PROBLEM: {problem}");
            }
            if failed > 0 || wrong > 0 || !outcome.problems.is_empty() || sent == 0 {
                failures += 1;
            }
        }
    }
    if failures > 0 {
        println!("{failures} fault run(s) failed");
        1
    } else {
        0
    }
}
