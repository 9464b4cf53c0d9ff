//! The load: reviews sent at a steady rate (open loop, latency from the scheduled time) or as
//! fast as a fixed number in flight allow (the capacity), every answer checked.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::Client;
use crate::workload::Case;

#[derive(Default)]
pub struct Tally {
    pub sent: AtomicU64,
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub wrong: AtomicU64,
    pub retried: AtomicU64,
    /// Reviews sent and not yet answered.
    pub in_flight: AtomicU64,
    pub latencies: Mutex<Vec<u32>>,
    /// A few examples of each kind of failure, wrong answer and retry.
    pub examples: Mutex<BTreeMap<String, (u64, String)>>,
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
                tally.note("failed (no answer)", format!("{}: {}", case.name, e.what));
                break None;
            }
            Err(_) => {
                tally.note(
                    "failed (no answer)",
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
        // Apart from lost reviews: an overloaded server answers 504 past its request timeout.
        tally.note(
            &format!("failed (HTTP {status})"),
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
pub async fn open_loop(
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
pub const CONCURRENCY: usize = 32;

/// As many reviews as [`CONCURRENCY`] in flight allow, for `duration`: the capacity, in reviews
/// per second answered correctly.
pub async fn capacity(client: Arc<Client>, cases: Arc<Vec<Case>>, duration: Duration) -> f64 {
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
