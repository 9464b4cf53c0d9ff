//! Both listeners (HTTPS for admission, plain HTTP for health and metrics), the connections
//! they accept, and the drain on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::telemetry::metrics::Metrics;
use crate::tls::store::TlsStore;

use super::app::App;
use super::http;
use crate::state::background::BackgroundTask;

/// Both listeners, bound and ready to serve.
pub struct Server {
    https: TcpListener,
    health: TcpListener,
    app: Arc<App>,
    tls: Arc<TlsStore>,
    shutdown_delay: Duration,
    drain_timeout: Duration,
    cert_poll_interval: Duration,
    tasks: Vec<BackgroundTask>,
    stop_hooks: Vec<BackgroundTask>,
}

/// How the server is put together; the CLI fills it from flags.
pub struct ServerOptions {
    pub listen: SocketAddr,
    pub health_listen: SocketAddr,
    pub shutdown_delay: Duration,
    pub drain_timeout: Duration,
    pub cert_poll_interval: Duration,
}

impl Server {
    pub async fn bind(
        options: ServerOptions,
        app: Arc<App>,
        tls: Arc<TlsStore>,
    ) -> std::io::Result<Self> {
        let https = TcpListener::bind(options.listen).await?;
        let health = TcpListener::bind(options.health_listen).await?;
        Ok(Self {
            https,
            health,
            app,
            tls,
            shutdown_delay: options.shutdown_delay,
            drain_timeout: options.drain_timeout,
            cert_poll_interval: options.cert_poll_interval,
            tasks: Vec::new(),
            stop_hooks: Vec::new(),
        })
    }

    /// Runs `task` alongside the server until it stops.
    pub fn with_task(mut self, task: impl Future<Output = ()> + Send + 'static) -> Self {
        self.tasks.push(Box::pin(task));
        self
    }

    /// Runs `hook` once the background tasks are stopped (releasing the Lease), for at most 5 s.
    pub fn with_stop_hook(mut self, hook: impl Future<Output = ()> + Send + 'static) -> Self {
        self.stop_hooks.push(Box::pin(hook));
        self
    }

    pub fn https_addr(&self) -> std::io::Result<SocketAddr> {
        self.https.local_addr()
    }

    pub fn health_addr(&self) -> std::io::Result<SocketAddr> {
        self.health.local_addr()
    }

    /// Serves until `shutdown` resolves, then stops accepting and drains in-flight reviews for at
    /// most the drain timeout. Returns whether every connection finished in time.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> bool {
        let Self {
            https,
            health,
            app,
            tls,
            shutdown_delay,
            drain_timeout,
            cert_poll_interval,
            tasks,
            stop_hooks,
        } = self;
        tracing::info!(
            https = %https.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            health = %health.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            "listening"
        );
        let mut background = vec![tokio::spawn(tls.clone().watch(cert_poll_interval))];
        background.extend(tasks.into_iter().map(tokio::spawn));

        let (health_stop_tx, health_stop_rx) = tokio::sync::oneshot::channel::<()>();
        let health_task = tokio::spawn(
            axum::serve(health, http::health_router(app.clone()))
                .with_graceful_shutdown(async {
                    let _ = health_stop_rx.await;
                })
                .into_future(),
        );

        let graceful = GracefulShutdown::new();
        let connections = Connections::new(&app, tls);
        accept_until(&https, &connections, &graceful, shutdown).await;

        app.readiness.set_draining();
        if !shutdown_delay.is_zero() {
            // Keep serving during the delay: endpoints may still route to us for a while.
            tracing::info!(delay = ?shutdown_delay, "shutdown requested; unready, still serving");
            accept_until(
                &https,
                &connections,
                &graceful,
                tokio::time::sleep(shutdown_delay),
            )
            .await;
        }
        drop(https);
        tracing::info!(timeout = ?drain_timeout, "draining in-flight reviews");
        let drained = tokio::time::timeout(drain_timeout, graceful.shutdown())
            .await
            .is_ok();
        if drained {
            tracing::info!("all connections drained");
        } else {
            tracing::warn!("drain timeout reached; closing remaining connections");
        }
        for task in background {
            task.abort();
            let _ = task.await;
        }
        for hook in stop_hooks {
            let _ = tokio::time::timeout(Duration::from_secs(5), hook).await;
        }
        let _ = health_stop_tx.send(());
        let _ = health_task.await;
        drained
    }
}

/// Everything a new HTTPS connection needs.
struct Connections {
    tls: Arc<TlsStore>,
    builder: auto::Builder<TokioExecutor>,
    service: Router,
    metrics: Arc<Metrics>,
    handshake_timeout: Duration,
    idle_timeout: Duration,
}

/// A connection's stream, noting when it last received bytes, for the idle timeout.
struct Watched<S> {
    inner: S,
    started: Instant,
    /// Milliseconds from `started` to the last read that returned data.
    last_read: Arc<std::sync::atomic::AtomicU64>,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let now = self.started.elapsed().as_millis() as u64;
            self.last_read
                .store(now, std::sync::atomic::Ordering::Relaxed);
        }
        polled
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Resolves once nothing has been received for `limit`.
async fn idle_for(started: Instant, last_read: &std::sync::atomic::AtomicU64, limit: Duration) {
    loop {
        let last = Duration::from_millis(last_read.load(std::sync::atomic::Ordering::Relaxed));
        let quiet = started.elapsed().saturating_sub(last);
        if quiet >= limit {
            return;
        }
        tokio::time::sleep(limit - quiet).await;
    }
}

impl Connections {
    fn new(app: &Arc<App>, tls: Arc<TlsStore>) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(app.limits.header_timeout)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(250)
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(10));
        Self {
            tls,
            builder,
            service: http::router(app.clone()),
            metrics: app.metrics.clone(),
            handshake_timeout: app.limits.header_timeout,
            idle_timeout: app.limits.idle_timeout,
        }
    }

    /// Handshakes and serves one connection on its own task, tracked for the drain.
    fn spawn(&self, tcp: tokio::net::TcpStream, peer: SocketAddr, graceful: &GracefulShutdown) {
        let _ = tcp.set_nodelay(true);
        // The configuration current now: a rotation only affects connections opened after it.
        let acceptor = self.tls.acceptor();
        let builder = self.builder.clone();
        let service = TowerToHyperService::new(self.service.clone());
        let watcher = graceful.watcher();
        let metrics = self.metrics.clone();
        let handshake_timeout = self.handshake_timeout;
        let idle_timeout = self.idle_timeout;
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    metrics.tls_handshake_failed();
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    metrics.tls_handshake_failed();
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let started = Instant::now();
            let last_read = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let stream = Watched {
                inner: stream,
                started,
                last_read: last_read.clone(),
            };
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            // Nothing received for the idle timeout, which outlasts any request's own limits:
            // no review is in flight, and the connection is dropped.
            tokio::select! {
                served = watcher.watch(conn) => if let Err(error) = served {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                },
                () = idle_for(started, &last_read, idle_timeout) => {
                    tracing::debug!(%peer, ?idle_timeout, "closing an idle connection");
                }
            }
        });
    }
}

async fn accept_until(
    listener: &TcpListener,
    connections: &Connections,
    graceful: &GracefulShutdown,
    stop: impl Future<Output = ()>,
) {
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => connections.spawn(tcp, peer, graceful),
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut stop => return,
        }
    }
}
