//! The round-robin proxy of the SIGTERM fault: new connections go to ready replicas only, as
//! endpoints follow readiness.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::replica::{Replica, get};

/// A TCP proxy in front of replicas: each new connection goes to the next ready backend (its
/// /readyz polled every 100 ms, as endpoints follow readiness), the next one if that refuses.
pub struct Proxy {
    pub addr: SocketAddr,
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
    pub async fn start() -> Arc<Self> {
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

    pub fn add(&self, name: &str, replica: &Replica) {
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

    pub fn open(&self, name: &str) -> u64 {
        let backends = self.backends.lock().unwrap();
        backends
            .iter()
            .find(|b| b.name == name)
            .map_or(0, |b| b.open)
    }

    pub fn connections(&self) -> String {
        self.backends
            .lock()
            .unwrap()
            .iter()
            .map(|b| format!("{} {}", b.name, b.connections))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
