//! Load generator: sends one captured AdmissionReview to a running Palisade over HTTPS, the way
//! the API server does, and reports throughput and latency percentiles.
//!
//! Closed loop (as fast as `--concurrency` in-flight reviews allow):
//!   cargo bench --bench load -- --addr 127.0.0.1:8443 --duration 10s
//! Open loop at a fixed rate (latency measured from the scheduled send time, so a stalled server
//! cannot hide its queueing):
//!   cargo bench --bench load -- --addr 127.0.0.1:8443 --rate 2500 --duration 10s

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use palisade_testkit::bench::{cpu_seconds, memory_kib, percentile};
use palisade_testkit::https::{Client, Proto, Sender};
use tokio::sync::Mutex;

#[derive(Debug, Parser)]
#[command(about = "HTTPS load generator for Palisade's admission endpoints")]
struct Args {
    /// Server address; without it, print how to run and exit (so `cargo bench` alone is harmless).
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// CA that signed the server certificate.
    #[arg(long, default_value = "certs/ca.crt")]
    ca: PathBuf,
    /// AdmissionReview body to send.
    #[arg(long, default_value = "tests/data/admission/validate-create-pod.json")]
    body: PathBuf,
    #[arg(long, default_value = "/validate?timeout=5s")]
    path: String,
    /// h2 or http1.
    #[arg(long, default_value = "h2")]
    proto: String,
    /// TLS connections (HTTP/2 multiplexes reviews over them).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Reviews in flight at once in closed-loop mode.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Reviews per second (open loop); 0 runs closed loop.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Not measured: lets connections and caches settle.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// The server's process id: its CPU time over the measured window and its peak RSS are
    /// reported beside the latencies (from /proc; Linux only).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone)]
enum Conn {
    H2(http2::SendRequest<Full<Bytes>>),
    H1(Arc<Mutex<http1::SendRequest<Full<Bytes>>>>),
}

async fn connect(args: &Args, addr: SocketAddr) -> anyhow::Result<Conn> {
    let ca = std::fs::read(&args.ca)?;
    let proto = if args.proto == "h2" {
        Proto::Http2
    } else {
        Proto::Http1
    };
    Ok(match Client::try_new(addr, &[&ca])?.open(proto).await? {
        Sender::Http2(send) => Conn::H2(send),
        Sender::Http1(send) => Conn::H1(Arc::new(Mutex::new(send))),
    })
}

struct Shared {
    body: Bytes,
    path: String,
    measure_from: Instant,
    end: Instant,
    errors: AtomicU64,
    latencies: std::sync::Mutex<Vec<u32>>,
}

/// One review; records its latency (µs, from `scheduled`) if it falls in the measured window.
async fn one(conn: &Conn, shared: &Shared, scheduled: Instant) {
    let req = hyper::Request::post(&shared.path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(shared.body.clone()));
    let Ok(req) = req else { return };
    let rsp = match conn {
        Conn::H2(send) => send.clone().send_request(req).await,
        Conn::H1(send) => send.lock().await.send_request(req).await,
    };
    let ok = match rsp {
        Ok(rsp) if rsp.status() == 200 => rsp.into_body().collect().await.is_ok(),
        _ => false,
    };
    if scheduled < shared.measure_from {
        return;
    }
    if !ok {
        shared.errors.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let us = scheduled.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
    if let Ok(mut l) = shared.latencies.lock() {
        l.push(us);
    }
}

/// Waits until `at` with microsecond precision: tokio's timer has millisecond granularity, which
/// would make every send up to 1 ms late and count that lateness as server latency.
async fn pace_until(at: Instant) {
    loop {
        let now = Instant::now();
        if now >= at {
            return;
        }
        let left = at - now;
        if left > Duration::from_millis(2) {
            tokio::time::sleep(left - Duration::from_millis(1)).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let Some(addr) = args.addr else {
        println!(
            "load: give --addr of a running `palisade serve` (see BENCHMARKS.md); nothing to do"
        );
        return Ok(());
    };
    let connections = if args.proto == "h2" {
        args.connections
    } else {
        args.connections.max(args.concurrency)
    };
    let mut conns = Vec::new();
    for _ in 0..connections {
        conns.push(connect(&args, addr).await?);
    }
    let start = Instant::now();
    let shared = Arc::new(Shared {
        body: Bytes::from(std::fs::read(&args.body)?),
        path: args.path.clone(),
        measure_from: start + args.warmup,
        end: start + args.warmup + args.duration,
        errors: AtomicU64::new(0),
        latencies: std::sync::Mutex::new(Vec::new()),
    });

    let cpu_at_start = args.server_pid.map(|pid| {
        let at = shared.measure_from;
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            cpu_seconds(pid)
        })
    });

    if args.rate == 0 {
        let mut workers = Vec::new();
        for i in 0..args.concurrency {
            let conn = conns[i % conns.len()].clone();
            let shared = shared.clone();
            workers.push(tokio::spawn(async move {
                while Instant::now() < shared.end {
                    one(&conn, &shared, Instant::now()).await;
                }
            }));
        }
        for w in workers {
            w.await?;
        }
    } else {
        let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
        let mut tasks = tokio::task::JoinSet::new();
        let mut n: u64 = 0;
        loop {
            let scheduled = start + interval.mul_f64(n as f64);
            if scheduled >= shared.end {
                break;
            }
            pace_until(scheduled).await;
            let conn = conns[(n as usize) % conns.len()].clone();
            let shared = shared.clone();
            tasks.spawn(async move { one(&conn, &shared, scheduled).await });
            n += 1;
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
    }

    let server = match (args.server_pid, cpu_at_start) {
        (Some(pid), Some(start)) => {
            let before = start.await?;
            let after = cpu_seconds(pid);
            let kib = |field: &str| memory_kib(&pid.to_string(), field).unwrap_or(0);
            let reviews = shared.latencies.lock().map(|l| l.len()).unwrap_or(0).max(1);
            match (before, after) {
                (Some(b), Some(a)) => format!(
                    " server_cpu={:.2}s server_cpu_per_review={:.1}us server_rss={}MiB server_peak_rss={}MiB",
                    a - b,
                    (a - b) * 1e6 / reviews as f64,
                    kib("VmRSS:") / 1024,
                    kib("VmHWM:") / 1024,
                ),
                _ => format!(" server_pid={pid}: not readable"),
            }
        }
        _ => String::new(),
    };
    let mut lat = shared
        .latencies
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    lat.sort_unstable();
    let pct = |p: f64| f64::from(percentile(&lat, p)) / 1000.0;
    let secs = args.duration.as_secs_f64();
    println!(
        "mode={} proto={} connections={} reviews={} errors={} throughput={:.0}/s p50={:.3}ms p90={:.3}ms p99={:.3}ms p99.9={:.3}ms max={:.3}ms{}",
        if args.rate == 0 {
            format!("closed(concurrency={})", args.concurrency)
        } else {
            format!("open(rate={}/s)", args.rate)
        },
        args.proto,
        connections,
        lat.len(),
        shared.errors.load(Ordering::Relaxed),
        lat.len() as f64 / secs,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        lat.last().map_or(0.0, |&m| f64::from(m) / 1000.0),
        server,
    );
    Ok(())
}
