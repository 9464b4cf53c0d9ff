//! Palisade's server in this process: `palisade serve` on ephemeral ports with certificates
//! generated at test time (a fresh dev CA in a temporary directory), stopped on demand or on
//! drop; and what reads it (metrics, polling until a condition holds).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use palisade::cli::{Cli, Command};
use palisade::server::Server;
use tokio::task::JoinHandle;

use crate::https::{Client, http_get};

pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A server running in this process; stops (and drains) when `stop` is called or on drop.
pub struct TestServer {
    pub https: SocketAddr,
    pub health: SocketAddr,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<bool>>,
}

impl TestServer {
    /// Starts `palisade serve` with a fresh dev CA in a temporary directory, plus `extra` flags.
    pub async fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, extra).await
    }

    pub async fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Self {
        install_crypto();
        let cert = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");
        let mut args = vec![
            "palisade".to_owned(),
            "serve".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--health-listen".into(),
            "127.0.0.1:0".into(),
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
            "--cert-poll-interval".into(),
            "200ms".into(),
        ];
        if !extra.contains(&"--policies") {
            // An empty bundle unless the test brings one.
            let policies = dir.path().join("policies");
            std::fs::create_dir_all(&policies).unwrap();
            args.extend(["--policies".into(), policies.display().to_string()]);
        }
        if !extra.contains(&"--kubeconfig") {
            // Whatever cluster the machine is configured for, tests without one use files only.
            args.push("--no-cluster".into());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let Command::Serve(serve) = Cli::try_parse_from(&args).unwrap().command else {
            unreachable!()
        };
        let server: Server = serve.load().await.unwrap();
        let https = server.https_addr().unwrap();
        let health = server.health_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
        Self {
            https,
            health,
            dir,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn ca(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("ca.crt")).unwrap()
    }

    pub fn client(&self) -> Client {
        Client::new(self.https, &[&self.ca()])
    }

    /// Begins the shutdown (as SIGTERM does) without waiting for it: with `--shutdown-delay`,
    /// the server is unready and still serving for the delay.
    pub fn begin_stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Stops accepting and drains; returns whether every connection finished in time.
    pub async fn stop(mut self) -> bool {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.take().unwrap().await.unwrap()
    }

    pub async fn metrics(&self) -> String {
        http_get(self.health, "/metrics").await.1
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Reads one value from the OpenMetrics text, e.g. `palisade_tls_reloads_total`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The sum of every series of a metric family (any labels), `None` when it has none.
pub fn metric_total(text: &str, family: &str) -> Option<f64> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(family)?;
            let value = if rest.starts_with('{') {
                rest.rsplit_once("} ")?.1
            } else {
                rest.strip_prefix(' ')?
            };
            value.parse::<f64>().ok()
        })
        .reduce(|a, b| a + b)
}

/// Polls `check` until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
