//! Palisade in its own process: a `palisade serve` child pinned to core 0 when the machine has
//! two, ready once its /readyz says so, read through its log and its metrics, and stopped with
//! SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use palisade_testkit::bench::{cpu_seconds, free_port};
use palisade_testkit::harness::metric_total;
use palisade_testkit::https::parse_http1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A `palisade serve` child, killed however the run ends.
pub struct Replica {
    child: Child,
    pub https: SocketAddr,
    pub health: SocketAddr,
    log: PathBuf,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two cores: every Palisade on core 0, this process (load, proxy, stand-in) on core 1. Decided
/// once, before this process pins itself: asked afterwards, it sees one core, and answering "no"
/// then left every Palisade on core 1 with the load (issue 33).
pub fn pinned() -> bool {
    static PINNED: OnceLock<bool> = OnceLock::new();
    *PINNED.get_or_init(|| {
        std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
            && Command::new("taskset")
                .arg("-V")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    })
}

/// Busy CPU seconds of the core every Palisade runs on, so far, from /proc/stat (`None` when
/// they are not pinned or it cannot be read).
pub fn server_core_cpu() -> Option<f64> {
    if !pinned() {
        return None;
    }
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<f64> = stat
        .lines()
        .find_map(|l| l.strip_prefix("cpu0 "))?
        .split_whitespace()
        .map(|t| t.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is within user).
    let busy = ticks.iter().take(8).sum::<f64>() - ticks.get(3)? - ticks.get(4)?;
    Some(busy / 100.0)
}

impl Replica {
    pub async fn start(work: &Path, name: &str, args: &[String]) -> Self {
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

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Log lines with this message.
    pub fn logged(&self, message: &str) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains(&format!("\"message\":\"{message}")))
            .count()
    }

    /// A metric summed over all its labels (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = get(self.health, "/metrics")
            .await
            .map(|(_, b)| b)
            .unwrap_or_default();
        metric_total(&text, name).unwrap_or(0.0)
    }

    /// User plus system CPU seconds of the process so far (0 when it cannot be read).
    pub fn cpu(&self) -> f64 {
        cpu_seconds(self.child.id()).unwrap_or(0.0)
    }

    pub fn terminate(&self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    }

    /// Waits for the process to exit after SIGTERM: its status, or `None` after `within`.
    pub async fn exited(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
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
pub async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.ok()?;
        Some(parse_http1(&raw))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}
