//! TLS behaviour of the webhook port: client-certificate authentication, and certificate rotation
//! the way the kubelet updates a mounted Secret (an atomic swap of the `..data` symlink).

use std::path::Path;
use std::time::Duration;

use crate::common::*;
use palisade::tls::certificates::{self, CertSpec, Certificates};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

/// A CA for API-server client certificates, and one client identity it issued.
struct ClientPki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn client_pki(common_name: &str) -> ClientPki {
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "client-ca");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    ClientPki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

#[tokio::test]
async fn client_ca_admits_only_callers_with_a_certificate_from_it() {
    install_crypto();
    let apiserver = client_pki("kube-apiserver");
    let stranger = client_pki("kube-apiserver");
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("client-ca.crt");
    std::fs::write(&ca_path, &apiserver.ca_pem).unwrap();
    let server = TestServer::start_in(dir, &["--client-ca", ca_path.to_str().unwrap()]).await;
    let body = fixture("admission/validate-create-pod.json");

    for proto in [Proto::Http1, Proto::Http2] {
        let anonymous = server.client().post(proto, "/validate", body.clone()).await;
        assert!(
            anonymous.is_err(),
            "{proto:?}: answered a caller without a certificate"
        );

        let foreign = server
            .client()
            .with_identity(&stranger.cert_pem, &stranger.key_pem)
            .post(proto, "/validate", body.clone())
            .await;
        assert!(
            foreign.is_err(),
            "{proto:?}: answered a certificate from another CA"
        );

        let rsp = server
            .client()
            .with_identity(&apiserver.cert_pem, &apiserver.key_pem)
            .review(proto, "/validate", &body)
            .await;
        assert_eq!(rsp["allowed"], true);
    }
}

/// Lays out `dir` as the kubelet does for a Secret volume.
fn project_secret(dir: &Path, version: &str, bundle: &Certificates) {
    project_files(
        dir,
        version,
        &[
            ("tls.crt", bundle.cert_pem.as_bytes()),
            ("tls.key", bundle.key_pem.as_bytes()),
        ],
    );
}

fn bundle_with_san(san: &str) -> Certificates {
    let mut spec = CertSpec::new("palisade", "palisade-system");
    spec.extra_sans.push(san.to_owned());
    certificates::generate(&spec).unwrap()
}

async fn serves_name(client: &Client, name: &str) -> bool {
    client
        .clone()
        .with_server_name(name)
        .connect(Proto::Http1)
        .await
        .is_ok()
}

#[tokio::test]
async fn rotation_through_a_data_symlink_swap_serves_the_new_certificate() {
    install_crypto();
    let first = bundle_with_san("first.palisade.test");
    let rotated = bundle_with_san("rotated.palisade.test");
    let broken = bundle_with_san("broken.palisade.test");
    let fixed = bundle_with_san("fixed.palisade.test");
    let dir = tempfile::tempdir().unwrap();
    project_secret(dir.path(), "2026_11_22_01", &first);
    let server = TestServer::start_in(dir, &[]).await;
    let cas = [&first, &rotated, &broken, &fixed].map(|b| b.ca_cert_pem.as_bytes());
    let client = Client::new(server.https, &cas);
    let body = fixture("admission/validate-update-pod.json");

    assert!(serves_name(&client, "first.palisade.test").await);
    assert!(!serves_name(&client, "rotated.palisade.test").await);

    // A review in flight on a connection made before the swap.
    let in_flight = start_slow_review(&client, &body, 200).await;

    project_secret(server.dir.path(), "2026_11_22_02", &rotated);
    assert!(
        eventually(Duration::from_secs(10), || serves_name(
            &client,
            "rotated.palisade.test"
        ))
        .await,
        "the rotated certificate was never served"
    );
    assert!(!serves_name(&client, "first.palisade.test").await);

    let (status, text) = finish_slow_review(in_flight, &body[200..]).await;
    assert_eq!(
        status, 200,
        "the review in flight during the swap failed: {text}"
    );
    assert!(text.contains("\"allowed\":true"), "{text}");
    assert_eq!(
        metric(&server.metrics().await, "palisade_tls_reloads_total"),
        Some(1.0)
    );

    // A half-written rotation: the broken bundle's certificate beside the rotated key.
    let half = Certificates {
        key_pem: rotated.key_pem.clone(),
        ..broken.clone()
    };
    project_secret(server.dir.path(), "2026_11_22_03", &half);
    assert!(
        eventually(Duration::from_secs(10), || async {
            metric(
                &server.metrics().await,
                "palisade_tls_reload_failures_total",
            ) == Some(1.0)
        })
        .await,
        "the mismatched pair was not reported"
    );
    assert!(
        serves_name(&client, "rotated.palisade.test").await,
        "the last good certificate must keep serving"
    );
    assert!(!serves_name(&client, "broken.palisade.test").await);
    client.review(Proto::Http2, "/validate", &body).await;

    project_secret(server.dir.path(), "2026_11_22_04", &fixed);
    assert!(
        eventually(Duration::from_secs(10), || serves_name(
            &client,
            "fixed.palisade.test"
        ))
        .await,
        "a good certificate after a bad one was never served"
    );
    let metrics = server.metrics().await;
    assert_eq!(
        metric(&metrics, "palisade_tls_reloads_total"),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "palisade_tls_reload_failures_total"),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn tls_1_1_and_below_are_refused_and_1_2_is_accepted() {
    install_crypto();
    let server = TestServer::start(&[]).await;
    let ca = server.ca();
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(server.https).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );

    // A TLS 1.1 ClientHello (rustls cannot speak it, so send the record by hand) gets an alert.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(server.https).await.unwrap();
    tcp.write_all(&tls11_client_hello()).await.unwrap();
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    // Either an alert record (content type 21) or a closed connection, never a ServerHello (22).
    assert!(
        n == 0 || buf[0] == 21,
        "unexpected answer to TLS 1.1: {:?}",
        &buf[..n]
    );
}

/// A minimal TLS 1.1 ClientHello offering TLS_RSA_WITH_AES_128_CBC_SHA.
fn tls11_client_hello() -> Vec<u8> {
    let mut hello = vec![0x03, 0x02]; // client_version TLS 1.1
    hello.extend([0u8; 32]); // random
    hello.push(0); // session id
    hello.extend([0x00, 0x02, 0x00, 0x2f]); // cipher suites
    hello.extend([0x01, 0x00]); // compression: null
    let mut handshake = vec![0x01];
    handshake.extend(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x02];
    record.extend((handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}
