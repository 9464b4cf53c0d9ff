//! Faults under load (issue 15). Palisade runs as its own process (two for the SIGTERM fault),
//! and a load generator in this process sends captured AdmissionReviews at a steady rate — a
//! share of the server's capacity, measured first, half unless `--share` says otherwise — while
//! one fault is injected again and again. Every answer is
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
//!   so the server rebuilds it); a swap waits until the server has read the version before it.
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
//!
//! Its parts: `workload` (the reviews and their expected answers), `client` (the checking
//! client), `load` (the open loop and the capacity), `replica` (Palisade in its own process),
//! `proxy` (the round-robin proxy of the SIGTERM fault) and `faults` (each fault, and what it
//! changes).

mod client;
mod faults;
mod load;
mod proxy;
mod replica;
mod workload;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser;
use palisade_testkit::bench::percentile;
use palisade_testkit::fixtures::repo_path;
use palisade_testkit::harness::install_crypto;
use palisade_testkit::https::Proto;

use faults::{Run, fault_api, fault_bundle, fault_cert, fault_none, fault_sigterm};
use load::{CONCURRENCY, capacity};
use replica::{Replica, pinned, server_core_cpu};
use workload::{describe, expected_cases, file_inventory};

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
    /// Reviews per second; 0 measures the capacity first and runs at --share of it.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// With --rate 0, the share of the measured capacity the faults run at. CI runs at 0.1, so
    /// that other work on a shared machine cannot overload the server into timeouts.
    #[arg(long, default_value_t = 0.5)]
    share: f64,
    /// Accepted so that `cargo bench` may pass it.
    #[arg(long, hide = true)]
    bench: bool,
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
    install_crypto();
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
    assert!(
        args.share > 0.0 && args.share <= 1.0,
        "--share {}: give more than 0 and at most 1",
        args.share
    );
    let duration = Duration::from_secs(args.seconds.max(5));
    let mut failures = 0;
    for &proto in &protos {
        let rate = if args.rate > 0 {
            args.rate
        } else {
            let run = Run::new();
            let cases = Arc::new(expected_cases(&repo_path("policies"), file_inventory()));
            let replica = Replica::start(run.path(), "capacity", &run.file_args()).await;
            println!("workload: {}", describe(&cases));
            let client = run.client(replica.https, proto, None);
            let _ = capacity(client.clone(), cases.clone(), Duration::from_secs(1)).await;
            let (cpu, core, measured) = (replica.cpu(), server_core_cpu(), Duration::from_secs(3));
            let max = capacity(client, cases, measured).await;
            let seconds = measured.as_secs_f64();
            let busy = (replica.cpu() - cpu) / seconds;
            // What other processes took of the server's core meanwhile (a shared machine).
            let others = match (core, server_core_cpu()) {
                (Some(before), Some(after)) => ((after - before) / seconds - busy).clamp(0.0, 0.95),
                _ => 0.0,
            };
            // The checking client may saturate its own core first: the server's capacity is
            // what it answered over the share of its core it used, and of the core only what
            // other processes left it. (Counting what they took as idle made a busy machine's
            // runs overload the server, issue 33.)
            let server = max / busy.clamp(0.05, 1.0) * (1.0 - others);
            let rate = (server * args.share).min(max * 0.9).max(1.0) as u64;
            println!(
                "capacity {} {max:.0}/s answered and checked with {CONCURRENCY} in flight, the server's core {:.0}% busy with it and {:.0}% with other processes: the server's capacity {server:.0}/s; faults run at {rate}/s ({} of it)",
                proto.name(),
                busy * 100.0,
                others * 100.0,
                args.share
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
            let ms = |p: f64| f64::from(percentile(&latencies, p)) / 1000.0;
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
                ms(0.5),
                ms(0.99),
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
