//! The checking client: like the API server's, HTTP/2 multiplexed over a few connections or
//! HTTP/1.1 with a pool of keep-alive connections, reconnecting whenever a connection is gone,
//! and telling a review the server provably did not process from one it failed.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use palisade_testkit::https::{self, Proto, Sender};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::load::CONCURRENCY;

/// HTTP/2: requests in flight on one connection, at most. hyper parks a request beyond the
/// server's SETTINGS_MAX_CONCURRENT_STREAMS in its connection task until a stream frees, and
/// when a GOAWAY arrives meanwhile it drops it ("dispatch task is gone: runtime dropped the
/// dispatch task"), neither answered nor handed back, so that nothing tells whether the server
/// saw it. Go's transport, the API server's, opens another connection instead; this client
/// waits here. 100 is what hyper assumes until the server's SETTINGS arrive; Palisade allows 250.
const STREAMS_PER_CONNECTION: usize = 100;

struct Conn {
    sender: Sender,
    born: Instant,
    /// HTTP/2: the streams it may still open (see [`STREAMS_PER_CONNECTION`]).
    streams: Arc<Semaphore>,
}

/// Why a review failed, or was sent again.
#[derive(Debug)]
pub struct SendError {
    /// The server provably did not process it.
    pub unprocessed: bool,
    pub what: String,
}

/// A client like the API server's: HTTP/2 multiplexed over a few connections, or HTTP/1.1 with a
/// pool of keep-alive connections, reconnecting whenever a connection is gone.
pub struct Client {
    https: https::Client,
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
    pub certificates: Mutex<HashSet<Vec<u8>>>,
    pub handshakes: AtomicU64,
}

impl Client {
    pub fn new(addr: SocketAddr, ca: &[u8], proto: Proto, max_age: Option<Duration>) -> Self {
        Self {
            https: https::Client::new(addr, &[ca]),
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
            .connect(self.proto)
            .await
            .map_err(|e| unprocessed(format!("connect: {e}")))?;
        self.handshakes.fetch_add(1, Ordering::Relaxed);
        if let Some(leaf) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
            self.certificates.lock().unwrap().insert(leaf.to_vec());
        }
        let sender = Sender::handshake(tls, self.proto)
            .await
            .map_err(|e| unprocessed(format!("{} handshake: {e}", self.proto.name())))?;
        Ok(Conn {
            sender,
            born: Instant::now(),
            streams: Arc::new(Semaphore::new(STREAMS_PER_CONNECTION)),
        })
    }

    /// The HTTP/2 connection of slot `i`, a new one when it is gone or too old, and its streams.
    async fn h2_slot(
        &self,
        i: usize,
    ) -> Result<(http2::SendRequest<Full<Bytes>>, Arc<Semaphore>), SendError> {
        let mut conn = self.slots[i].lock().await;
        let usable = match conn.as_ref() {
            Some(
                c @ Conn {
                    sender: Sender::Http2(send),
                    ..
                },
            ) => !send.is_closed() && self.fresh(c),
            _ => false,
        };
        if !usable {
            *conn = Some(self.connect().await?);
        }
        match conn.as_ref() {
            Some(Conn {
                sender: Sender::Http2(send),
                streams,
                ..
            }) => Ok((send.clone(), streams.clone())),
            _ => unreachable!("the slot holds an HTTP/2 connection"),
        }
    }

    /// An HTTP/2 connection with a stream free, the slots tried round-robin, and that stream,
    /// held until the answer is read. When every connection is at its limit, the review waits
    /// here, unsent, for a stream of the first one.
    async fn h2(
        &self,
    ) -> Result<(http2::SendRequest<Full<Bytes>>, OwnedSemaphorePermit), SendError> {
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        loop {
            let mut full = None;
            for k in 0..self.slots.len() {
                let (send, streams) = self.h2_slot((first + k) % self.slots.len()).await?;
                match streams.clone().try_acquire_owned() {
                    Ok(stream) => return Ok((send, stream)),
                    Err(_) => {
                        full.get_or_insert((send, streams));
                    }
                }
            }
            let (send, streams) = full.expect("there are slots");
            let stream = streams.acquire_owned().await.expect("never closed");
            if !send.is_closed() {
                return Ok((send, stream));
            }
            // That connection went away meanwhile: look again.
        }
    }

    /// An idle HTTP/1.1 connection, or a new one.
    async fn h1(&self) -> Result<Conn, SendError> {
        loop {
            let Some(mut conn) = self.idle.lock().unwrap().pop() else {
                return self.connect().await;
            };
            let fresh = self.fresh(&conn);
            let Sender::Http1(send) = &mut conn.sender else {
                continue;
            };
            if fresh && !send.is_closed() && send.ready().await.is_ok() {
                return Ok(conn);
            }
        }
    }

    /// One attempt: the status and body, or why not.
    pub async fn send(&self, path: &str, body: Bytes) -> Result<(u16, Bytes), SendError> {
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
            Proto::Http2 => None,
        };
        let (response, conn, _stream) = match self.proto {
            Proto::Http2 => {
                let (mut send, stream) = self.h2().await?;
                if let Err(e) = send.ready().await {
                    return Err(SendError {
                        unprocessed: true,
                        what: format!("connection gone before the request: {e}"),
                    });
                }
                (send.try_send_request(request).await, None, Some(stream))
            }
            Proto::Http1 => {
                let mut conn = self.h1().await?;
                let Sender::Http1(send) = &mut conn.sender else {
                    unreachable!("the pool holds HTTP/1.1 connections")
                };
                (send.try_send_request(request).await, Some(conn), None)
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
