//! The TLS configuration of the webhook port, reloaded from disk without a restart.
//!
//! The whole `ServerConfig` is swapped atomically: each new connection takes the current one, and
//! connections already open keep the one they started with, so a rotation never fails a request in
//! flight. Material that does not load (a half-written pair, a key that does not match) is
//! rejected and the previous configuration keeps serving.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

use crate::state::hotswap::{HotSwap, Reload};
use crate::state::readiness::Readiness;
use crate::state::watch::{DirWatcher, parent_dir};
use crate::telemetry::metrics::Metrics;
use crate::tls::certificates::CertInfo;

/// ALPN protocols, preferred first. The API server speaks both.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found; expected a \"BEGIN CERTIFICATE\" block")]
    NoCertificate { path: PathBuf },
    #[error("{path}: {reason}")]
    BadPem { path: PathBuf, reason: String },
    #[error("{path}: no PEM private key found; expected a PKCS#8, PKCS#1 or SEC1 key")]
    NoKey { path: PathBuf },
    #[error("{cert} and {key} do not form a usable pair: {source}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("{path}: cannot use as client CA: {reason}")]
    ClientCa { path: PathBuf, reason: String },
}

/// Where the serving material lives.
#[derive(Debug, Clone)]
pub struct TlsPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

impl TlsPaths {
    /// The directories to watch for changes.
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .map(|p| parent_dir(p))
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }
}

/// The bytes a configuration is built from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Material {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl Material {
    fn read(paths: &TlsPaths) -> Result<Self, TlsError> {
        Ok(Self {
            cert: read(&paths.cert)?,
            key: read(&paths.key)?,
            client_ca: paths.client_ca.as_deref().map(read).transpose()?,
        })
    }

    /// Tells a real change from a spurious wake-up.
    fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build(paths: &TlsPaths, material: &Material) -> Result<ServerConfig, TlsError> {
    let bad_pem = |path: &Path, e: rustls::pki_types::pem::Error| TlsError::BadPem {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let chain = CertificateDer::pem_slice_iter(&material.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_pem(&paths.cert, e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: paths.cert.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&material.key).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: paths.key.clone(),
        },
        e => bad_pem(&paths.key, e),
    })?;

    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|source| TlsError::Pair {
            cert: paths.cert.clone(),
            key: paths.key.clone(),
            source,
        })?;
    let builder = match (&paths.client_ca, &material.client_ca) {
        (Some(ca_path), Some(ca_pem)) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca_pem) {
                let cert = cert.map_err(|e| bad_pem(ca_path, e))?;
                roots.add(cert).map_err(|e| TlsError::ClientCa {
                    path: ca_path.clone(),
                    reason: e.to_string(),
                })?;
            }
            if roots.is_empty() {
                return Err(TlsError::NoCertificate {
                    path: ca_path.clone(),
                });
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider())
                .build()
                .map_err(|e| TlsError::ClientCa {
                    path: ca_path.clone(),
                    reason: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Pair {
            cert: paths.cert.clone(),
            key: paths.key.clone(),
            source,
        })?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

pub struct TlsStore {
    paths: TlsPaths,
    config: HotSwap<ServerConfig>,
    metrics: Arc<Metrics>,
    /// Told when the first certificate loads, for a store that started without one.
    readiness: Option<Arc<Readiness>>,
    /// The serving certificate in use, and when its coming expiry was last logged.
    leaf: std::sync::Mutex<(Option<CertInfo>, Option<std::time::Instant>)>,
    /// Break-glass grant keys, derived from the serving key: rotated with it.
    grant_keys: Arc<crate::breakglass::GrantKeys>,
}

/// How often an expiring certificate is logged again.
const EXPIRY_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// How long before its expiry a certificate living `lifetime` is warned about: 30 days, or a
/// third of its lifetime when that is shorter (a day-long certificate is not always "expiring").
fn warn_before(lifetime: time::Duration) -> time::Duration {
    let third: time::Duration = lifetime / 3;
    third.min(time::Duration::days(30))
}

/// A resolver with no certificate: handshakes fail until the first certificate is loaded.
#[derive(Debug)]
struct NoCertificate;

impl rustls::server::ResolvesServerCert for NoCertificate {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        None
    }
}

impl TlsStore {
    /// Loads the initial configuration; any problem is fatal to start-up.
    pub fn load(paths: TlsPaths, metrics: Arc<Metrics>) -> Result<Self, TlsError> {
        let material = Material::read(&paths)?;
        let config = build(&paths, &material)?;
        let store = Self {
            paths,
            config: HotSwap::new(config, Some(material.fingerprint())),
            metrics,
            readiness: None,
            leaf: std::sync::Mutex::new((None, None)),
            grant_keys: Arc::default(),
        };
        store.note_leaf(&material);
        Ok(store)
    }

    /// Loads the certificate if it is there; if its files do not exist yet (a certificate
    /// manager is about to write them), starts without one: TLS handshakes fail and
    /// `readiness` stays false until the files appear and load. Material that exists but does
    /// not load is still fatal.
    pub fn load_or_wait(
        paths: TlsPaths,
        metrics: Arc<Metrics>,
        readiness: Arc<Readiness>,
    ) -> Result<Self, TlsError> {
        match Self::load(paths.clone(), metrics.clone()) {
            Ok(store) => {
                readiness.set_certificates_loaded();
                Ok(store)
            }
            Err(TlsError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(cert = %paths.cert.display(), key = %paths.key.display(),
                    "no serving certificate yet: waiting for it to be written (not ready until then)");
                let config = ServerConfig::builder_with_provider(provider())
                    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                    .map_err(|source| TlsError::Pair {
                        cert: paths.cert.clone(),
                        key: paths.key.clone(),
                        source,
                    })?
                    .with_no_client_auth()
                    .with_cert_resolver(Arc::new(NoCertificate));
                Ok(Self {
                    paths,
                    config: HotSwap::new(config, None),
                    metrics,
                    readiness: Some(readiness),
                    leaf: std::sync::Mutex::new((None, None)),
                    grant_keys: Arc::default(),
                })
            }
            Err(error) => Err(error),
        }
    }

    /// The keys break-glass grants are made and checked with: derived from the serving key
    /// loaded last, and the one before it.
    pub fn grant_keys(&self) -> Arc<crate::breakglass::GrantKeys> {
        self.grant_keys.clone()
    }

    /// Records freshly loaded material: the grant key derived from its private key, the leaf
    /// certificate's expiry metric and log.
    fn note_leaf(&self, material: &Material) {
        self.grant_keys.install(&material.key);
        // Presented to external data providers, as Gatekeeper presents its own.
        crate::state::external::set_client_certificate(&material.cert, &material.key);
        let leaf = String::from_utf8(material.cert.clone())
            .ok()
            .and_then(|pem| crate::tls::certificates::parse_pem(&pem).ok())
            .and_then(|certs| certs.into_iter().next());
        if let Some(leaf) = &leaf {
            self.metrics.tls_expires_at(leaf.not_after.unix_timestamp());
        }
        let mut guard = self.leaf.lock().unwrap_or_else(|p| p.into_inner());
        *guard = (leaf, None);
        drop(guard);
        self.check_expiry();
    }

    /// Logs a warning from 30 days before the serving certificate expires (from a third of its
    /// lifetime before, for one that lives less than 90 days), again every hour until it is
    /// replaced. A managed certificate is renewed with a third of its life left, so the warning
    /// means a renewal is late.
    pub fn check_expiry(&self) {
        let now = time::OffsetDateTime::now_utc();
        let mut guard = self.leaf.lock().unwrap_or_else(|p| p.into_inner());
        let (Some(leaf), last) = &mut *guard else {
            return;
        };
        let lifetime = leaf.not_after - leaf.not_before;
        let left = leaf.remaining(now);
        if left >= warn_before(lifetime) || last.is_some_and(|t| t.elapsed() < EXPIRY_LOG_EVERY) {
            return;
        }
        *last = Some(std::time::Instant::now());
        let expires = leaf
            .not_after
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        if left.is_negative() {
            tracing::error!(cert = %self.paths.cert.display(), %expires,
                "the serving certificate has EXPIRED: the API server refuses it, so every review fails (failurePolicy decides); replace it now");
        } else {
            tracing::warn!(cert = %self.paths.cert.display(), %expires, seconds_left = left.whole_seconds(),
                "the serving certificate expires soon and has not been renewed");
        }
    }

    /// An acceptor for one new connection, with the configuration current now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.load())
    }

    /// Re-reads the material; swaps it in if it changed and loads, keeps the old one otherwise.
    pub fn reload(&self) -> Reload<TlsError> {
        // A read error is a rejection too: the file may be mid-swap.
        let (result, material) = match Material::read(&self.paths) {
            Ok(material) => (
                self.config
                    .reload(material.fingerprint(), || build(&self.paths, &material)),
                Some(material),
            ),
            Err(error) => (Reload::Rejected(error), None),
        };
        match &result {
            Reload::Unchanged => {}
            Reload::Reloaded => {
                self.metrics.tls_reloaded();
                tracing::info!(cert = %self.paths.cert.display(), "serving certificate reloaded");
                // The material just built, not a second read that may already be newer.
                if let Some(material) = &material {
                    self.note_leaf(material);
                }
                if let Some(readiness) = &self.readiness {
                    readiness.set_certificates_loaded();
                }
            }
            Reload::Rejected(TlsError::Read { source, .. })
                if self
                    .readiness
                    .as_ref()
                    .is_some_and(|r| !r.certificates_loaded())
                    && source.kind() == std::io::ErrorKind::NotFound =>
            {
                // Still waiting for the first certificate: not a failure.
                return Reload::Unchanged;
            }
            Reload::Rejected(error) => {
                self.metrics.tls_reload_failed();
                tracing::error!(%error, "certificate reload rejected; the previous certificate keeps serving");
            }
        }
        result
    }

    /// Reloads whenever the certificate directories change, until the task is dropped.
    pub async fn watch(self: Arc<Self>, poll: std::time::Duration) {
        let mut watcher = DirWatcher::new(&self.paths.dirs(), false, poll);
        loop {
            watcher.changed().await;
            let store = self.clone();
            // File reads and key parsing are blocking work.
            if let Err(error) = tokio::task::spawn_blocking(move || {
                store.reload();
                store.check_expiry();
            })
            .await
            {
                tracing::error!(%error, "certificate reload task failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::certificates::{CertSpec, generate_into};

    fn store(dir: &Path) -> TlsStore {
        generate_into(dir, &CertSpec::new("a", "b"), true).unwrap();
        let paths = TlsPaths {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            client_ca: None,
        };
        TlsStore::load(paths, Arc::new(Metrics::new())).unwrap()
    }

    #[test]
    fn unchanged_material_is_not_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        assert!(matches!(store.reload(), Reload::Unchanged));
    }

    #[test]
    fn break_glass_grants_are_keyed_by_the_serving_key_and_survive_one_rotation() {
        use crate::breakglass::grant::Sealed;
        let content = serde_json::json!({"containers": []});
        let sealed = Sealed {
            kind: "/Pod",
            namespace: "shop",
            approver: "alice",
            reason: "INC-1",
            expires: "2026-01-01T00:00:00Z",
            content: &content,
        };
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let stranger = store(elsewhere.path());
        let store = store(dir.path());
        let grant = store.grant_keys().grant(&sealed).unwrap();
        // Another replica mounting the same Secret checks it.
        let paths = TlsPaths {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            client_ca: None,
        };
        let replica = TlsStore::load(paths, Arc::new(Metrics::new())).unwrap();
        assert!(replica.grant_keys().verify(&grant, &sealed).is_ok());
        // Another installation does not.
        assert!(stranger.grant_keys().verify(&grant, &sealed).is_err());
        // A half-written rotation (new certificate, old key) changes no key; the whole one does,
        // and the previous key still checks what it made.
        let other = crate::tls::certificates::generate(&CertSpec::new("c", "d")).unwrap();
        std::fs::write(dir.path().join("tls.crt"), &other.cert_pem).unwrap();
        assert!(matches!(store.reload(), Reload::Rejected(_)));
        assert_eq!(store.grant_keys().grant(&sealed).unwrap(), grant);
        std::fs::write(dir.path().join("tls.key"), &other.key_pem).unwrap();
        assert!(matches!(store.reload(), Reload::Reloaded));
        let newer = store.grant_keys().grant(&sealed).unwrap();
        assert_ne!(newer, grant);
        assert!(store.grant_keys().verify(&grant, &sealed).is_ok());
    }

    #[test]
    fn mismatched_key_is_rejected_once_and_the_old_config_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let before = store.config.load();
        // A new certificate beside the old key: a half-written rotation.
        let other = crate::tls::certificates::generate(&CertSpec::new("c", "d")).unwrap();
        std::fs::write(dir.path().join("tls.crt"), other.cert_pem).unwrap();
        let first = store.reload();
        assert!(
            matches!(first, Reload::Rejected(TlsError::Pair { .. })),
            "{first:?}"
        );
        assert!(Arc::ptr_eq(&before, &store.config.load()));
        assert!(matches!(store.reload(), Reload::Unchanged));
        std::fs::write(dir.path().join("tls.key"), other.key_pem).unwrap();
        assert!(matches!(store.reload(), Reload::Reloaded));
        assert!(!Arc::ptr_eq(&before, &store.config.load()));
    }

    #[test]
    fn garbage_certificate_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        std::fs::write(dir.path().join("tls.crt"), "not a certificate").unwrap();
        match store.reload() {
            Reload::Rejected(e @ TlsError::NoCertificate { .. }) => {
                assert!(e.to_string().contains("tls.crt"), "{e}")
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn missing_key_file_is_an_error_naming_it() {
        let paths = TlsPaths {
            cert: "/nonexistent/tls.crt".into(),
            key: "/nonexistent/tls.key".into(),
            client_ca: None,
        };
        let err = TlsStore::load(paths, Arc::new(Metrics::new()))
            .err()
            .unwrap();
        assert!(err.to_string().contains("/nonexistent/tls.crt"), "{err}");
    }

    #[test]
    fn expiry_is_warned_about_30_days_ahead_or_a_third_of_a_short_life() {
        use time::Duration as D;
        assert_eq!(warn_before(D::days(365)), D::days(30));
        assert_eq!(warn_before(D::days(90)), D::days(30));
        assert_eq!(warn_before(D::days(30)), D::days(10));
        assert_eq!(warn_before(D::hours(24)), D::hours(8));
    }

    #[test]
    fn an_expiring_certificate_is_reported_by_metric_and_warning() {
        let dir = tempfile::tempdir().unwrap();
        let spec = CertSpec::new("a", "b");
        let ca = crate::tls::certificates::generate_ca(&spec, std::time::Duration::from_secs(3600))
            .unwrap();
        let write = |valid: u64| {
            let leaf =
                crate::tls::certificates::issue(&spec, &ca, std::time::Duration::from_secs(valid))
                    .unwrap();
            std::fs::write(dir.path().join("tls.crt"), &leaf.cert_pem).unwrap();
            std::fs::write(dir.path().join("tls.key"), &leaf.key_pem).unwrap();
            crate::tls::certificates::parse_pem(&leaf.cert_pem)
                .unwrap()
                .remove(0)
        };
        let paths = TlsPaths {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            client_ca: None,
        };
        let warned = |store: &TlsStore| store.leaf.lock().unwrap().1.is_some();
        // A year left: no warning; the metric holds its expiry.
        let long = write(365 * 86_400);
        let metrics = Arc::new(Metrics::new());
        let store = TlsStore::load(paths, metrics.clone()).unwrap();
        assert!(!warned(&store));
        let text = metrics.encode();
        assert!(
            text.contains(&format!(
                "palisade_tls_certificate_expiry_timestamp_seconds {}",
                long.not_after.unix_timestamp()
            )),
            "{text}"
        );
        // Swapped for one that ends in a second (backdated 5 minutes, so past two thirds of
        // its life at once): reloaded, and warned about.
        let short = write(1);
        assert!(matches!(store.reload(), Reload::Reloaded));
        assert!(warned(&store));
        assert!(metrics.encode().contains(&format!(
            "palisade_tls_certificate_expiry_timestamp_seconds {}",
            short.not_after.unix_timestamp()
        )));
    }
}
