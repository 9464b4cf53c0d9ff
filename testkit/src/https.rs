//! The HTTPS client that calls Palisade the way the API server does (trusting only the given
//! CAs, over HTTP/1.1 or HTTP/2 by ALPN, with captured AdmissionReview bodies), the connection
//! it sends on, which the benchmarks' load generators use too, and raw HTTP/1.1 helpers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Http1,
    Http2,
}

impl Proto {
    pub fn alpn(self) -> &'static [u8] {
        match self {
            Proto::Http1 => b"http/1.1",
            Proto::Http2 => b"h2",
        }
    }

    /// `h2` or `http1`, as the benchmarks' `--proto` names them.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "h2" => Some(Proto::Http2),
            "http1" => Some(Proto::Http1),
            _ => None,
        }
    }

    /// The name [`Proto::parse`] reads.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Http2 => "h2",
            Proto::Http1 => "http1",
        }
    }
}

/// An HTTPS client that trusts only the given CAs, like the API server with its caBundle.
#[derive(Clone)]
pub struct Client {
    pub addr: SocketAddr,
    roots: Arc<rustls::RootCertStore>,
    identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    pub server_name: String,
}

pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
    pub version: hyper::Version,
    pub headers: hyper::HeaderMap,
}

impl HttpResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&self.body));
        })
    }
}

/// The sending half of one HTTP/1.1 or HTTP/2 connection over TLS, its connection driven by a
/// task of its own.
pub enum Sender {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    /// The HTTP handshake of `proto` over an open TLS connection.
    pub async fn handshake(tls: TlsStream<TcpStream>, proto: Proto) -> hyper::Result<Self> {
        let io = TokioIo::new(tls);
        Ok(match proto {
            Proto::Http1 => {
                let (send, conn) = http1::handshake(io).await?;
                tokio::spawn(conn);
                Sender::Http1(send)
            }
            Proto::Http2 => {
                let (send, conn) = http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(conn);
                Sender::Http2(send)
            }
        })
    }

    pub async fn send_request(
        &mut self,
        request: hyper::Request<Full<Bytes>>,
    ) -> hyper::Result<hyper::Response<hyper::body::Incoming>> {
        match self {
            Sender::Http1(send) => send.send_request(request).await,
            Sender::Http2(send) => send.send_request(request).await,
        }
    }
}

impl Client {
    /// Trusting the certificates of `cas` (PEM); panics on a bad one.
    pub fn new(addr: SocketAddr, cas: &[&[u8]]) -> Self {
        Self::try_new(addr, cas).unwrap()
    }

    /// Trusting the certificates of `cas` (PEM), or why not.
    pub fn try_new(addr: SocketAddr, cas: &[&[u8]]) -> std::io::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in cas {
            for cert in CertificateDer::pem_slice_iter(ca) {
                roots
                    .add(cert.map_err(io_err)?)
                    .map_err(std::io::Error::other)?;
            }
        }
        Ok(Self {
            addr,
            roots: Arc::new(roots),
            identity: None,
            server_name: "localhost".into(),
        })
    }

    pub fn with_identity(mut self, cert_pem: &str, key_pem: &str) -> Self {
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        self.identity = Some((chain, Arc::new(key)));
        self
    }

    pub fn with_server_name(mut self, name: &str) -> Self {
        self.server_name = name.to_owned();
        self
    }

    /// Opens a TLS connection offering only `proto` by ALPN.
    pub async fn connect(&self, proto: Proto) -> std::io::Result<TlsStream<TcpStream>> {
        let builder = rustls::ClientConfig::builder().with_root_certificates(self.roots.clone());
        let mut config = match &self.identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![proto.alpn().to_vec()];
        let tcp = TcpStream::connect(self.addr).await?;
        // As Go's net package does for the API server: without it, the client's second small
        // handshake write waits for a delayed ACK (up to 200 ms on Linux).
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(self.server_name.clone()).unwrap();
        TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
    }

    /// A new connection speaking `proto`, ready to send.
    pub async fn open(&self, proto: Proto) -> std::io::Result<Sender> {
        let stream = self.connect(proto).await?;
        Sender::handshake(stream, proto).await.map_err(io_err)
    }

    /// One POST on a new connection.
    pub async fn post(
        &self,
        proto: Proto,
        path: &str,
        body: Vec<u8>,
    ) -> std::io::Result<HttpResponse> {
        let stream = self.connect(proto).await?;
        let negotiated = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        assert_eq!(negotiated.as_deref(), Some(proto.alpn()), "ALPN");
        let req = hyper::Request::post(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .header("accept", "application/json, */*")
            .header("user-agent", "kube-apiserver-admission")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let mut sender = Sender::handshake(stream, proto).await.map_err(io_err)?;
        let rsp = sender.send_request(req).await.map_err(io_err)?;
        let status = rsp.status().as_u16();
        let version = rsp.version();
        let headers = rsp.headers().clone();
        let body = rsp
            .into_body()
            .collect()
            .await
            .map_err(io_err)?
            .to_bytes()
            .to_vec();
        Ok(HttpResponse {
            status,
            body,
            version,
            headers,
        })
    }

    /// POSTs a captured AdmissionReview and checks the answer is a well-formed review for it.
    pub async fn review(&self, proto: Proto, path: &str, body: &[u8]) -> serde_json::Value {
        let sent: serde_json::Value = serde_json::from_slice(body).unwrap();
        let rsp = self.post(proto, path, body.to_vec()).await.unwrap();
        assert_eq!(rsp.status, 200, "{}", String::from_utf8_lossy(&rsp.body));
        let got = rsp.json();
        assert_eq!(got["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(got["kind"], "AdmissionReview");
        assert_eq!(
            got["response"]["uid"], sent["request"]["uid"],
            "uid must be echoed"
        );
        got["response"].clone()
    }
}

fn io_err(e: impl std::error::Error + Send + Sync + 'static) -> std::io::Error {
    std::io::Error::other(e)
}

/// A plain-HTTP GET on the health port: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    parse_http1(&raw)
}

/// Opens an HTTP/1.1 review whose body is only partly sent: a request in flight.
pub async fn start_slow_review(client: &Client, body: &[u8], sent: usize) -> TlsStream<TcpStream> {
    let mut slow = client.connect(Proto::Http1).await.unwrap();
    let head = format!(
        "POST /validate HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&body[..sent]).await.unwrap();
    slow.flush().await.unwrap();
    slow
}

pub async fn finish_slow_review(mut slow: TlsStream<TcpStream>, rest: &[u8]) -> (u16, String) {
    slow.write_all(rest).await.unwrap();
    slow.flush().await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    parse_http1(&raw)
}

/// Status and body of a raw HTTP/1.1 response (`Content-Length` or chunked).
pub fn parse_http1(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || tail.len() < n {
                break;
            }
            out.push_str(&tail[..n]);
            rest = tail[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        body.to_owned()
    };
    (status, body)
}
