//! The external data transport: the HTTPS client that carries `ProviderRequest`s to Gatekeeper
//! Providers for `palisade_core::policy::external`; it counts into
//! [`crate::telemetry::metrics::external`].
//!
//! - TLS 1.3 only (as Gatekeeper requires of providers), trusting only the Provider's
//!   `spec.caBundle`, and presenting Palisade's serving certificate as the client certificate
//!   ([`set_client_certificate`], replaced when the certificate rotates).
//! - Requests run on a runtime of their own (one thread, made on first use); the evaluation
//!   thread waits for the answer on a channel, bounded by the time it was given, so that no
//!   runtime is ever entered from an evaluation thread.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::policy::external::{self, MAX_RESPONSE_BYTES, Observed, Posted, Transport};

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Installs the HTTPS transport for this process (idempotent). Every entry point that loads a
/// bundle calls it first.
pub fn install() {
    static HTTPS: OnceLock<()> = OnceLock::new();
    HTTPS.get_or_init(|| external::install(Arc::new(Https)));
}

/// The HTTPS transport.
struct Https;

impl Transport for Https {
    fn client(&self, url: &str, ca_pem: &[u8]) -> Result<Arc<dyn external::Client>, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| {
            format!("spec.url: {url:?} is not a URL ({e}): use https://host[:port]/path")
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| format!("spec.caBundle: not PEM certificates: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("spec.caBundle: a certificate does not parse: {e}"))?;
        }
        if roots.is_empty() {
            return Err(
                "spec.caBundle: holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
            );
        }
        Ok(Arc::new(ProviderClient {
            uri,
            client: client(roots).map_err(|e| format!("spec.caBundle: {e}"))?,
        }))
    }

    fn observe(&self, provider: &str, event: Observed) {
        let labels = crate::telemetry::metrics::ProviderLabels {
            provider: provider.to_owned(),
        };
        match event {
            Observed::CacheHits(n) => {
                crate::telemetry::metrics::external()
                    .cache_hits
                    .get_or_create(&labels)
                    .inc_by(n);
            }
            Observed::CacheMisses(n) => {
                crate::telemetry::metrics::external()
                    .cache_misses
                    .get_or_create(&labels)
                    .inc_by(n);
            }
            Observed::Request { result, seconds } => {
                crate::telemetry::metrics::external()
                    .duration
                    .get_or_create(&labels)
                    .observe(seconds);
                crate::telemetry::metrics::external()
                    .requests
                    .get_or_create(&crate::telemetry::metrics::RequestLabels {
                        provider: labels.provider,
                        result,
                    })
                    .inc();
            }
        }
    }
}

fn client(roots: rustls::RootCertStore) -> Result<HttpsClient, String> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    // Gatekeeper requires TLS 1.3 of providers.
    .with_protocol_versions(&[&rustls::version::TLS13])
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_client_cert_resolver(Arc::new(ServingCertificate));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .build();
    Ok(Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(8)
        .build(connector))
}

static CLIENT_CERTIFICATE: Mutex<Option<Arc<rustls::sign::CertifiedKey>>> = Mutex::new(None);

/// Sets the certificate Palisade presents to providers: its serving certificate, replaced when
/// that rotates.
pub fn set_client_certificate(cert_pem: &[u8], key_pem: &[u8]) {
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem).ok();
    let chain: Vec<_> = CertificateDer::pem_slice_iter(cert_pem)
        .filter_map(Result::ok)
        .collect();
    let certified = key.and_then(|key| {
        let signing = rustls::crypto::ring::default_provider()
            .key_provider
            .load_private_key(key)
            .ok()?;
        Some(Arc::new(rustls::sign::CertifiedKey::new(chain, signing)))
    });
    *CLIENT_CERTIFICATE.lock().unwrap_or_else(|p| p.into_inner()) = certified;
}

/// Presents the serving certificate when a provider asks for one.
#[derive(Debug)]
struct ServingCertificate;

impl rustls::client::ResolvesClientCert for ServingCertificate {
    fn resolve(
        &self,
        _: &[&[u8]],
        _: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        CLIENT_CERTIFICATE
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// One provider's client.
struct ProviderClient {
    uri: hyper::Uri,
    client: HttpsClient,
}

impl external::Client for ProviderClient {
    fn post(&self, body: String, budget: Duration) -> Posted {
        let rt = match runtime() {
            Ok(rt) => rt,
            Err(e) => return Posted::Failed(e),
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let uri = self.uri.clone();
        let client = self.client.clone();
        rt.spawn(async move {
            let request = async {
                let req = hyper::Request::post(uri)
                    .header(hyper::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .map_err(|e| format!("failed to create external data request: {e}"))?;
                let rsp = client
                    .request(req)
                    .await
                    .map_err(|e| format!("failed to send external data request: {}", chain(&e)))?;
                let status = rsp.status().as_u16();
                let bytes = Limited::new(rsp.into_body(), MAX_RESPONSE_BYTES)
                    .collect()
                    .await
                    .map_err(|e| format!("failed to read external data response: {e}"))?
                    .to_bytes();
                Ok::<_, String>((status, bytes))
            };
            let _ = tx.send(tokio::time::timeout(budget, request).await);
        });
        // The task stops itself at `budget`; the margin covers its scheduling.
        match rx.recv_timeout(budget + Duration::from_millis(100)) {
            Ok(Ok(Ok((status, bytes)))) => Posted::Answer {
                status,
                body: bytes.to_vec(),
            },
            Ok(Ok(Err(error))) => Posted::Failed(error),
            Ok(Err(_)) | Err(_) => Posted::TimedOut,
        }
    }
}

/// The runtime the requests run on, made on first use: never the caller's, so that a
/// synchronous evaluation thread never enters (or blocks) a runtime it is part of.
fn runtime() -> Result<&'static tokio::runtime::Runtime, String> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("palisade-external-data")
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the external data client: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The error and its causes, as one line (hyper's own text is only "client error (Connect)").
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn provider(ca_pem: &str) -> Result<external::Provider, String> {
        provider_at("https://p.ns:8090/validate", ca_pem)
    }

    fn provider_at(url: &str, ca_pem: &str) -> Result<external::Provider, String> {
        install();
        let yaml = format!(
            "apiVersion: externaldata.gatekeeper.sh/v1beta1\nkind: Provider\nmetadata: {{name: p}}\nspec: {{url: '{url}', caBundle: {}}}\n",
            base64::engine::general_purpose::STANDARD.encode(ca_pem)
        );
        let docs = crate::manifest::parse_str(&yaml, std::path::Path::new("p.yaml")).unwrap();
        external::parse(&docs[0])
    }

    #[test]
    fn a_real_ca_makes_a_client_and_a_sequence_that_is_no_certificate_does_not() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        assert!(provider(&cert.pem()).is_ok());
        // A DER SEQUENCE (what the core checks) that is not a certificate: the transport
        // refuses it at load, by field.
        let der = base64::engine::general_purpose::STANDARD.encode([0x30, 0x03, 0x02, 0x01, 0x01]);
        let err = provider(&format!(
            "-----BEGIN CERTIFICATE-----\n{der}\n-----END CERTIFICATE-----\n"
        ))
        .unwrap_err();
        assert!(
            err.starts_with("spec.caBundle: a certificate does not parse"),
            "{err}"
        );
    }
}
