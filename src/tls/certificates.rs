//! Webhook certificates: a CA and a serving pair for the webhook Service, made with rcgen.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use time::{Duration, OffsetDateTime};

pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const TLS_CERT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error(
        "{0} already exists; pass --force to replace the CA (then update every caBundle that trusts it)"
    )]
    CaExists(PathBuf),
    #[error("cannot generate certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid subject alternative name {0:?}: {1}; use a DNS name or an IP address")]
    San(String, String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What to put in the certificates.
#[derive(Debug, Clone)]
pub struct CertSpec {
    pub service: String,
    pub namespace: String,
    pub extra_sans: Vec<String>,
    pub ca_days: u32,
    pub cert_days: u32,
}

impl CertSpec {
    pub fn new(service: &str, namespace: &str) -> Self {
        Self {
            service: service.to_owned(),
            namespace: namespace.to_owned(),
            extra_sans: Vec::new(),
            ca_days: 3650,
            cert_days: 365,
        }
    }

    /// The names the API server may use to reach the Service, plus loopback for local runs.
    pub fn sans(&self) -> Vec<String> {
        let (svc, ns) = (&self.service, &self.namespace);
        let mut sans = vec![
            svc.clone(),
            format!("{svc}.{ns}"),
            format!("{svc}.{ns}.svc"),
            format!("{svc}.{ns}.svc.cluster.local"),
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ];
        sans.extend(self.extra_sans.iter().cloned());
        sans
    }
}

/// PEM material of a CA and the serving pair it signed.
#[derive(Debug, Clone)]
pub struct Certificates {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Certificates {
    /// The CA as the base64 `caBundle` of a webhook configuration.
    pub fn ca_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.ca_cert_pem.as_bytes())
    }
}

/// Generates an ECDSA P-256 CA and a serving certificate signed by it.
pub fn generate(spec: &CertSpec) -> Result<Certificates, CertError> {
    let days = |d: u32| std::time::Duration::from_secs(u64::from(d) * 86_400);
    let ca = generate_ca(spec, days(spec.ca_days))?;
    let serving = issue(spec, &ca, days(spec.cert_days))?;
    Ok(Certificates {
        ca_cert_pem: ca.cert_pem,
        ca_key_pem: ca.key_pem,
        cert_pem: serving.cert_pem,
        key_pem: serving.key_pem,
    })
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Backdated a little so that a node whose clock lags does not reject a fresh certificate.
const BACKDATE: Duration = Duration::minutes(5);

fn validity(v: std::time::Duration) -> Duration {
    Duration::seconds(i64::try_from(v.as_secs()).unwrap_or(i64::MAX / 2))
}

/// A new ECDSA P-256 CA, valid for `valid_for`. Each one has its creation time and a key
/// fingerprint in its name, so that logs and `openssl x509` tell an old CA from its successor.
pub fn generate_ca(spec: &CertSpec, valid_for: std::time::Duration) -> Result<Pair, CertError> {
    let now = OffsetDateTime::now_utc();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    // The creation time and a fingerprint of the key tell CAs made in the same second apart.
    let fingerprint = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.public_key_raw().hash(&mut h);
        h.finish() & 0xffff_ffff
    };
    let mut params = CertificateParams::default();
    params.distinguished_name = name(&format!(
        "palisade-ca {}.{} {} {fingerprint:08x}",
        spec.service,
        spec.namespace,
        now.unix_timestamp()
    ));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - BACKDATE;
    params.not_after = now + validity(valid_for);
    let key_pem = key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(params, key)?;
    Ok(Pair {
        cert_pem: ca.pem(),
        key_pem,
    })
}

/// A serving certificate for the Service's names, signed by `ca`, valid for `valid_for`.
pub fn issue(
    spec: &CertSpec,
    ca: &Pair,
    valid_for: std::time::Duration,
) -> Result<Pair, CertError> {
    let now = OffsetDateTime::now_utc();
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name(&format!("{}.{}.svc", spec.service, spec.namespace));
    params.subject_alt_names = spec
        .sans()
        .into_iter()
        .map(|san| to_san(&san))
        .collect::<Result<_, _>>()?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - BACKDATE;
    params.not_after = now + validity(valid_for);
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Pair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// What Palisade needs to know of a certificate: when it is valid, and who signed it.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub der: Vec<u8>,
    pub subject: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub is_ca: bool,
}

impl CertInfo {
    /// Time left until it expires (negative once expired).
    pub fn remaining(&self, now: OffsetDateTime) -> Duration {
        self.not_after - now
    }

    /// Whether less than a third of its lifetime is left: the point where it is renewed (as
    /// cert-manager does by default).
    pub fn due_for_renewal(&self, now: OffsetDateTime) -> bool {
        let lifetime = self.not_after - (self.not_before + BACKDATE);
        self.remaining(now) < lifetime / 3
    }

    /// Whether `ca` signed this certificate (its signature verifies with the CA's key).
    pub fn signed_by(&self, ca: &CertInfo) -> bool {
        let (Ok((_, cert)), Ok((_, ca))) = (
            x509_parser::parse_x509_certificate(&self.der),
            x509_parser::parse_x509_certificate(&ca.der),
        ) else {
            return false;
        };
        cert.verify_signature(Some(ca.public_key())).is_ok()
    }
}

/// Every certificate of a PEM text, in order; an error names what is wrong.
pub fn parse_pem(pem: &str) -> Result<Vec<CertInfo>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut out = Vec::new();
    for der in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let der = der.map_err(|e| format!("not PEM: {e}"))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let validity = cert.validity();
        out.push(CertInfo {
            der: der.to_vec(),
            subject: cert.subject().to_string(),
            not_before: validity.not_before.to_datetime(),
            not_after: validity.not_after.to_datetime(),
            is_ca: cert.is_ca(),
        });
    }
    if out.is_empty() {
        return Err("no PEM certificate (\"BEGIN CERTIFICATE\")".into());
    }
    Ok(out)
}

/// Whether a private key (PEM) belongs to a certificate.
pub fn key_matches(cert: &CertInfo, key_pem: &str) -> bool {
    let Ok(key) = KeyPair::from_pem(key_pem) else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&cert.der) else {
        return false;
    };
    cert.public_key().subject_public_key.data.as_ref() == key.public_key_raw()
}

/// The certificates of a PEM text as one PEM text, in order.
pub fn pem_of(certs: &[&CertInfo]) -> String {
    certs
        .iter()
        .map(|c| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&c.der);
            let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
            for line in b64.as_bytes().chunks(64) {
                pem.push_str(&String::from_utf8_lossy(line));
                pem.push('\n');
            }
            pem.push_str("-----END CERTIFICATE-----\n");
            pem
        })
        .collect()
}

/// Generates a CA and serving pair into `dir` as ca.crt, ca.key, tls.crt and tls.key.
/// Refuses to replace an existing CA unless `force` is set.
pub fn generate_into(dir: &Path, spec: &CertSpec, force: bool) -> Result<Certificates, CertError> {
    let ca_path = dir.join(CA_CERT);
    if !force && (ca_path.exists() || dir.join(CA_KEY).exists()) {
        return Err(CertError::CaExists(ca_path));
    }
    let certs = generate(spec)?;
    write_pair(
        &dir.join(CA_CERT),
        &certs.ca_cert_pem,
        &dir.join(CA_KEY),
        &certs.ca_key_pem,
    )?;
    write_pair(
        &dir.join(TLS_CERT),
        &certs.cert_pem,
        &dir.join(TLS_KEY),
        &certs.key_pem,
    )?;
    Ok(certs)
}

/// Writes a certificate and its key; the key first, so a watcher never sees a new certificate
/// beside an old key for longer than necessary, and the key readable by its owner only.
pub fn write_pair(
    cert_path: &Path,
    cert_pem: &str,
    key_path: &Path,
    key_pem: &str,
) -> Result<(), CertError> {
    if let Some(parent) = cert_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|source| CertError::Write {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    write_file(key_path, key_pem, true)?;
    write_file(cert_path, cert_pem, false)
}

fn write_file(path: &Path, contents: &str, secret: bool) -> Result<(), CertError> {
    let err = |source| CertError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path).map_err(err)?;
    file.write_all(contents.as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "Palisade");
    dn
}

fn to_san(san: &str) -> Result<SanType, CertError> {
    if let Ok(ip) = san.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    // rcgen takes any IA5 string; a name no client could ever match is an error here instead.
    rustls::pki_types::DnsName::try_from(san)
        .map_err(|e| CertError::San(san.to_owned(), e.to_string()))?;
    san.to_owned()
        .try_into()
        .map(SanType::DnsName)
        .map_err(|e: rcgen::Error| CertError::San(san.to_owned(), e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sans_cover_every_service_name_and_loopback() {
        let spec = CertSpec::new("palisade", "palisade-system");
        assert_eq!(
            spec.sans(),
            [
                "palisade",
                "palisade.palisade-system",
                "palisade.palisade-system.svc",
                "palisade.palisade-system.svc.cluster.local",
                "localhost",
                "127.0.0.1"
            ]
        );
    }

    #[test]
    fn refuses_to_replace_an_existing_ca_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let spec = CertSpec::new("palisade", "palisade-system");
        let first = generate_into(dir.path(), &spec, false).unwrap();
        let err = generate_into(dir.path(), &spec, false).unwrap_err();
        assert!(matches!(err, CertError::CaExists(_)), "{err}");
        let on_disk = fs::read_to_string(dir.path().join(CA_CERT)).unwrap();
        assert_eq!(on_disk, first.ca_cert_pem, "the CA must be untouched");
        let replaced = generate_into(dir.path(), &spec, true).unwrap();
        assert_ne!(replaced.ca_cert_pem, first.ca_cert_pem);
    }

    #[cfg(unix)]
    #[test]
    fn private_keys_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        generate_into(dir.path(), &CertSpec::new("a", "b"), false).unwrap();
        for key in [CA_KEY, TLS_KEY] {
            let mode = fs::metadata(dir.path().join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{key} is readable by others: {mode:o}");
        }
    }

    #[test]
    fn rejects_an_invalid_san() {
        let mut spec = CertSpec::new("palisade", "palisade-system");
        spec.extra_sans.push("bad name with spaces\u{0}".into());
        assert!(matches!(generate(&spec), Err(CertError::San(..))));
    }

    #[test]
    fn ca_bundle_is_base64_of_the_ca_pem() {
        let bundle = generate(&CertSpec::new("a", "b")).unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(bundle.ca_bundle())
            .unwrap();
        assert_eq!(decoded, bundle.ca_cert_pem.as_bytes());
        assert!(
            bundle
                .ca_cert_pem
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
    }

    #[test]
    fn issued_certificates_verify_against_their_ca_only_and_match_their_key() {
        let spec = CertSpec::new("palisade", "palisade-system");
        let ca = generate_ca(&spec, std::time::Duration::from_secs(3600)).unwrap();
        let other = generate_ca(&spec, std::time::Duration::from_secs(3600)).unwrap();
        let leaf = issue(&spec, &ca, std::time::Duration::from_secs(600)).unwrap();
        let parse = |pem: &str| parse_pem(pem).unwrap().remove(0);
        let (ca_info, other_info, leaf_info) = (
            parse(&ca.cert_pem),
            parse(&other.cert_pem),
            parse(&leaf.cert_pem),
        );
        assert!(ca_info.is_ca && !leaf_info.is_ca);
        assert!(leaf_info.signed_by(&ca_info));
        assert!(!leaf_info.signed_by(&other_info), "same name, other key");
        assert_ne!(
            ca_info.subject, other_info.subject,
            "each CA names itself apart"
        );
        assert!(key_matches(&leaf_info, &leaf.key_pem));
        assert!(!key_matches(&leaf_info, &ca.key_pem));
        let lifetime = leaf_info.not_after - leaf_info.not_before;
        assert_eq!(lifetime.whole_seconds(), 600 + BACKDATE.whole_seconds());
        // Two in one PEM come back in order, byte for byte.
        let both = pem_of(&[&ca_info, &other_info]);
        let back = parse_pem(&both).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].der, ca_info.der);
        assert_eq!(back[1].der, other_info.der);
        assert!(parse_pem("garbage").is_err());
    }

    #[test]
    fn renewal_is_due_with_a_third_of_the_lifetime_left() {
        let spec = CertSpec::new("a", "b");
        let ca = generate_ca(&spec, std::time::Duration::from_secs(3000)).unwrap();
        let info = parse_pem(&ca.cert_pem).unwrap().remove(0);
        let issued = info.not_before + BACKDATE;
        assert!(!info.due_for_renewal(issued + Duration::seconds(1990)));
        assert!(info.due_for_renewal(issued + Duration::seconds(2010)));
        assert!(
            info.remaining(issued + Duration::seconds(3001))
                .is_negative()
        );
    }
}
