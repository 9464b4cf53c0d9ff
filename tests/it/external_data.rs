//! External data (Gatekeeper's `Provider` and `external_data`), over HTTPS through the webhook:
//! a test provider serves ProviderRequests over TLS with a certificate from a CA made at test
//! time, and Palisade calls it the way Gatekeeper does while it answers AdmissionReviews.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use palisade::bundle::Bundle;
use palisade::manifest::parse_str;
use palisade::policy::EngineOptions;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};

use crate::common::*;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/external-data");

/// How the test provider answers.
#[derive(Clone, Default)]
struct Behaviour {
    idempotent: bool,
    /// Waited before answering.
    delay: Duration,
}

/// What the provider received: each request's body.
type Seen = Arc<Mutex<Vec<Value>>>;

/// Asks every client for a certificate, takes any (or none), and checks only that the client
/// holds its key: the test reads what was presented.
#[derive(Debug)]
struct AnyClientCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::server::danger::ClientCertVerifier for AnyClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// An HTTPS external data provider. Per key: `…evil…` is "bad", `error_…` is an error, any key
/// containing `system` makes the whole answer a system error, and the rest are "good".
struct TestProvider {
    addr: SocketAddr,
    /// The CA that signed its certificate, PEM.
    ca_pem: String,
    seen: Seen,
    /// The leaf certificate each connection's client presented, if any.
    client_certificates: Arc<Mutex<Vec<Option<Vec<u8>>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn test_ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

impl TestProvider {
    async fn start(behaviour: Behaviour) -> Self {
        install_crypto();
        let ca = test_ca();
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        let chain = vec![CertificateDer::from_pem_slice(cert.pem().as_bytes()).unwrap()];
        let private = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
        let crypto = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(crypto.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(Arc::new(AnyClientCertificate(crypto)))
            .with_single_cert(chain, private)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Seen = Arc::default();
        let client_certificates: Arc<Mutex<Vec<Option<Vec<u8>>>>> = Arc::default();
        let task = {
            let seen = seen.clone();
            let presented = client_certificates.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        return;
                    };
                    let (acceptor, seen, behaviour, presented) = (
                        acceptor.clone(),
                        seen.clone(),
                        behaviour.clone(),
                        presented.clone(),
                    );
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let leaf = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|c| c.to_vec());
                        presented.lock().unwrap().push(leaf);
                        let service = hyper::service::service_fn(
                            move |req: hyper::Request<hyper::body::Incoming>| {
                                let (seen, behaviour) = (seen.clone(), behaviour.clone());
                                async move {
                                    let body = req.into_body().collect().await?.to_bytes();
                                    let request: Value =
                                        serde_json::from_slice(&body).unwrap_or(Value::Null);
                                    seen.lock().unwrap().push(request.clone());
                                    tokio::time::sleep(behaviour.delay).await;
                                    let answer = answer(&request, behaviour.idempotent);
                                    Ok::<_, hyper::Error>(hyper::Response::new(Full::new(
                                        Bytes::from(answer.to_string()),
                                    )))
                                }
                            },
                        );
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    });
                }
            })
        };
        Self {
            addr,
            ca_pem: ca.pem(),
            seen,
            client_certificates,
            task,
        }
    }

    fn requests(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }

    fn url(&self) -> String {
        format!("https://localhost:{}/validate", self.addr.port())
    }
}

fn answer(request: &Value, idempotent: bool) -> Value {
    let keys: Vec<&str> = request["request"]["keys"]
        .as_array()
        .map(|k| k.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut response = json!({"idempotent": idempotent});
    if keys.iter().any(|k| k.contains("system")) {
        response["systemError"] = "registry unreachable".into();
    } else {
        let items: Vec<Value> = keys
            .iter()
            .map(|k| {
                if k.starts_with("error_") {
                    json!({"key": k, "error": "no such image"})
                } else if k.contains("evil") {
                    json!({"key": k, "value": "bad"})
                } else {
                    json!({"key": k, "value": "good"})
                }
            })
            .collect();
        response["items"] = items.into();
    }
    json!({"apiVersion": "externaldata.gatekeeper.sh/v1beta1", "kind": "ProviderResponse", "response": response})
}

fn provider_yaml(url: &str, timeout: u64, ca_pem: &str) -> String {
    format!(
        "apiVersion: externaldata.gatekeeper.sh/v1beta1\nkind: Provider\nmetadata:\n  name: {CHECKER}\nspec:\n  url: {url}\n  timeout: {timeout}\n  caBundle: {}\n",
        base64::engine::general_purpose::STANDARD.encode(ca_pem)
    )
}

/// The provider's name in the test data.
const CHECKER: &str = "image-checker";

/// A policy directory with the Provider, `template` (a file of tests/data/external-data) and the
/// constraint, the provider renamed `name`: the external data metrics are the process's, and the
/// tests that read them run beside others.
fn policies(dir: &Path, name: &str, provider: &str, template: &str) -> String {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("provider.yaml"),
        provider.replace(CHECKER, name),
    )
    .unwrap();
    for file in [template, "constraint.yaml"] {
        let text = std::fs::read_to_string(Path::new(DATA).join(file)).unwrap();
        std::fs::write(policies.join(file), text.replace(CHECKER, name)).unwrap();
    }
    policies.display().to_string()
}

async fn serve(provider: &str, template: &str, extra: &[&str]) -> TestServer {
    serve_named(CHECKER, provider, template, extra).await
}

async fn serve_named(name: &str, provider: &str, template: &str, extra: &[&str]) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let policies = policies(dir.path(), name, provider, template);
    let mut args = vec!["--policies", policies.as_str()];
    args.extend_from_slice(extra);
    TestServer::start_in(dir, &args).await
}

/// The captured Pod review with these container images.
fn pod(images: &[&str]) -> Vec<u8> {
    let mut review: Value =
        serde_json::from_slice(&fixture("admission/validate-create-pod.json")).unwrap();
    let containers: Vec<Value> = images
        .iter()
        .enumerate()
        .map(|(i, image)| json!({"name": format!("c{i}"), "image": image}))
        .collect();
    review["request"]["object"]["spec"]["containers"] = containers.into();
    serde_json::to_vec(&review).unwrap()
}

async fn validate_pod(server: &TestServer, images: &[&str]) -> Value {
    server
        .client()
        .review(Proto::Http2, "/validate", &pod(images))
        .await
}

fn message(response: &Value) -> String {
    response["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_template_denies_images_the_provider_marks_bad() {
    let provider = TestProvider::start(Behaviour::default()).await;
    let server = serve(
        &provider_yaml(&provider.url(), 2, &provider.ca_pem),
        "template.yaml",
        &[],
    )
    .await;
    let named = serve_named(
        "checker-counted",
        &provider_yaml(&provider.url(), 2, &provider.ca_pem),
        "template.yaml",
        &[],
    )
    .await;

    let denied = validate_pod(
        &server,
        &["registry.example.com/web:1", "evil.example.com/miner:1"],
    )
    .await;
    assert_eq!(denied["allowed"], false, "{denied}");
    assert_eq!(
        message(&denied),
        "[images-checked] image evil.example.com/miner:1 is marked bad by image-checker"
    );
    let allowed = validate_pod(&server, &["registry.example.com/web:2"]).await;
    assert_eq!(allowed["allowed"], true, "{allowed}");

    // A key the provider cannot judge is its error, which this template denies.
    let unjudged = validate_pod(&server, &["error_unknown:1"]).await;
    assert_eq!(unjudged["allowed"], false);
    assert_eq!(
        message(&unjudged),
        "[images-checked] image-checker cannot judge error_unknown:1: no such image"
    );

    // Palisade presented its serving certificate (mutual TLS), as Gatekeeper presents its own.
    let presented = provider.client_certificates.lock().unwrap().clone();
    let leaf = presented[0]
        .clone()
        .expect("no client certificate presented");
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    let sans: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert!(
        sans.iter()
            .any(|n| n.contains("palisade.palisade-system.svc")),
        "{sans:?}"
    );

    // An UPDATE is judged the same way.
    let mut update: Value = serde_json::from_slice(&pod(&["evil.example.com/miner:2"])).unwrap();
    update["request"]["operation"] = "UPDATE".into();
    update["request"]["oldObject"] = update["request"]["object"].clone();
    update["request"]["oldObject"]["spec"]["containers"][0]["image"] =
        "registry.example.com/web:1".into();
    let denied = server
        .client()
        .review(
            Proto::Http1,
            "/validate",
            &serde_json::to_vec(&update).unwrap(),
        )
        .await;
    assert_eq!(
        message(&denied),
        "[images-checked] image evil.example.com/miner:2 is marked bad by image-checker"
    );

    // What was sent is Gatekeeper's ProviderRequest.
    let first = &provider.requests()[0];
    assert_eq!(first["apiVersion"], "externaldata.gatekeeper.sh/v1beta1");
    assert_eq!(first["kind"], "ProviderRequest");
    assert_eq!(
        first["request"]["keys"],
        json!(["registry.example.com/web:1", "evil.example.com/miner:1"])
    );
    for images in [&["counted.example/a:1"][..], &["counted.example/b:1"]] {
        validate_pod(&named, images).await;
    }
    let metrics = named.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "palisade_external_data_requests_total{provider=\"checker-counted\",result=\"ok\"}"
        ),
        Some(2.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn one_request_carries_every_key_of_an_evaluation_once() {
    let provider = TestProvider::start(Behaviour::default()).await;
    let server = serve(
        &provider_yaml(&provider.url(), 2, &provider.ca_pem),
        "template.yaml",
        &[],
    )
    .await;
    // Three rules call external_data, with a repeated image: one request, each key once.
    let images = [
        "a.example/x:1",
        "b.example/evil:1",
        "a.example/x:1",
        "c.example/z:1",
    ];
    let denied = validate_pod(&server, &images).await;
    assert_eq!(denied["allowed"], false);
    let requests = provider.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(
        requests[0]["request"]["keys"],
        json!(["a.example/x:1", "b.example/evil:1", "c.example/z:1"])
    );
}

#[tokio::test]
async fn answers_of_an_idempotent_provider_are_cached_and_others_are_not() {
    // (idempotent answers, --external-data-cache-ttl, whether answers are reused)
    for (idempotent, ttl, cached) in [
        (true, "3m", true),
        (false, "3m", false),
        (true, "0s", false),
    ] {
        let provider = TestProvider::start(Behaviour {
            idempotent,
            ..Behaviour::default()
        })
        .await;
        let name = format!("checker-cached-{idempotent}-{ttl}");
        let server = serve_named(
            &name,
            &provider_yaml(&provider.url(), 2, &provider.ca_pem),
            "template.yaml",
            &["--external-data-cache-ttl", ttl],
        )
        .await;
        let images = ["cache.example/evil:1", "cache.example/ok:1"];
        for _ in 0..3 {
            let denied = validate_pod(&server, &images).await;
            assert_eq!(
                denied["allowed"], false,
                "idempotent={idempotent} ttl={ttl}"
            );
            assert!(message(&denied).contains("cache.example/evil:1 is marked bad"));
        }
        // A new key with cached ones: only the new key is sent.
        let mixed = validate_pod(&server, &["cache.example/ok:1", "cache.example/new:1"]).await;
        assert_eq!(mixed["allowed"], true);
        let requests = provider.requests();
        let metrics = server.metrics().await;
        let hits = metric(
            &metrics,
            &format!("palisade_external_data_cache_hits_total{{provider=\"{name}\"}}"),
        );
        if cached {
            assert_eq!(requests.len(), 2, "{requests:?}");
            assert_eq!(
                requests[1]["request"]["keys"],
                json!(["cache.example/new:1"])
            );
            // Two keys in each of the two repeated reviews, one in the mixed one; more when a
            // review begun on an I/O thread ran past its inline budget and was decided again on
            // the blocking pool (each evaluation reads the cache). The requests above are exact.
            assert!(hits.is_some_and(|h| h >= 5.0), "{metrics}");
        } else {
            assert_eq!(requests.len(), 4, "{requests:?}");
            assert_eq!(hits, None, "{metrics}");
        }
    }
}

#[tokio::test]
async fn a_provider_past_its_timeout_is_a_system_error_the_template_sees() {
    let provider = TestProvider::start(Behaviour {
        delay: Duration::from_secs(3),
        ..Behaviour::default()
    })
    .await;
    let server = serve_named(
        "checker-slow",
        &provider_yaml(&provider.url(), 1, &provider.ca_pem),
        "template.yaml",
        &[],
    )
    .await;
    let started = std::time::Instant::now();
    let denied = validate_pod(&server, &["slow.example/web:1"]).await;
    assert!(started.elapsed() < Duration::from_millis(2500));
    assert_eq!(denied["allowed"], false);
    let text = message(&denied);
    assert!(
        text.starts_with("[images-checked] checker-slow failed: ")
            && text.contains("no answer within 1s"),
        "{text}"
    );
    let metrics = server.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "palisade_external_data_requests_total{provider=\"checker-slow\",result=\"timeout\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_provider_system_error_and_a_provider_that_is_down_are_denied_by_the_template() {
    let provider = TestProvider::start(Behaviour::default()).await;
    let server = serve(
        &provider_yaml(&provider.url(), 2, &provider.ca_pem),
        "template.yaml",
        &[],
    )
    .await;
    let denied = validate_pod(&server, &["system.example/web:1"]).await;
    assert_eq!(
        message(&denied),
        "[images-checked] image-checker failed: registry unreachable"
    );

    // Nothing listens on the provider's port any more.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let down = serve(
        &provider_yaml(
            &format!("https://localhost:{closed}/validate"),
            2,
            &provider.ca_pem,
        ),
        "template.yaml",
        &[],
    )
    .await;
    let denied = validate_pod(&down, &["down.example/web:1"]).await;
    assert_eq!(denied["allowed"], false);
    let text = message(&denied);
    assert!(
        text.starts_with(
            "[images-checked] image-checker failed: failed to send external data request"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn a_provider_whose_certificate_the_ca_bundle_does_not_sign_is_not_trusted() {
    let provider = TestProvider::start(Behaviour::default()).await;
    let other_ca = test_ca().pem();
    let server = serve(
        &provider_yaml(&provider.url(), 2, &other_ca),
        "template.yaml",
        &[],
    )
    .await;
    let denied = validate_pod(&server, &["tls.example/web:1"]).await;
    assert_eq!(denied["allowed"], false);
    let text = message(&denied);
    assert!(
        text.contains("image-checker failed") && text.contains("certificate"),
        "{text}"
    );
    // The request never reached the provider's handler: the handshake failed first.
    assert!(provider.requests().is_empty());
}

#[tokio::test]
async fn a_template_that_ignores_errors_admits_as_gatekeeper_does_but_never_past_the_deadline() {
    // The provider's own timeout (1 s) comes first: the template sees system_error, ignores
    // it, and the Pod is admitted, as under Gatekeeper.
    let slow = TestProvider::start(Behaviour {
        delay: Duration::from_millis(2500),
        ..Behaviour::default()
    })
    .await;
    let server = serve(
        &provider_yaml(&slow.url(), 1, &slow.ca_pem),
        "template-ignores-errors.yaml",
        &[],
    )
    .await;
    let allowed = validate_pod(&server, &["evil.example/web:1"]).await;
    assert_eq!(allowed["allowed"], true);

    // The review's deadline (1 s) comes before the provider's timeout (3 s): there is no
    // answer, so the webhook's failurePolicy decides (HTTP 504), as the API server does when
    // Gatekeeper does not answer in time. The template is never told "no data" and admits.
    let server = serve(
        &provider_yaml(&slow.url(), 3, &slow.ca_pem),
        "template-ignores-errors.yaml",
        &["--request-timeout", "1s"],
    )
    .await;
    let rsp = server
        .client()
        .post(Proto::Http2, "/validate", pod(&["evil.example/web:2"]))
        .await
        .unwrap();
    assert_eq!(rsp.status, 504, "{}", String::from_utf8_lossy(&rsp.body));
}

fn load(docs: &str) -> Result<Bundle, String> {
    let docs = parse_str(docs, Path::new("bundle.yaml")).map_err(|e| e.to_string())?;
    Bundle::from_documents(docs, &EngineOptions::default()).map_err(|e| e.to_string())
}

fn template_and_constraint(template: &str) -> String {
    [template, "constraint.yaml"]
        .iter()
        .map(|f| std::fs::read_to_string(Path::new(DATA).join(f)).unwrap())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

#[test]
fn an_http_provider_or_one_without_a_ca_bundle_is_refused_at_load() {
    let ca = test_ca().pem();
    let bundle = |provider: String| {
        format!(
            "{provider}---\n{}",
            template_and_constraint("template.yaml")
        )
    };
    let err = load(&bundle(provider_yaml(
        "http://checker.ns:8090/validate",
        1,
        &ca,
    )))
    .unwrap_err();
    assert!(
        err.contains("Provider \"image-checker\"")
            && err.contains("spec.url: \"http://checker.ns:8090/validate\" uses http"),
        "{err}"
    );
    let no_ca = "apiVersion: externaldata.gatekeeper.sh/v1beta1\nkind: Provider\nmetadata: {name: image-checker}\nspec: {url: 'https://checker.ns:8090/validate', timeout: 1}\n".to_owned();
    let err = load(&bundle(no_ca)).unwrap_err();
    assert!(
        err.contains("Provider \"image-checker\"") && err.contains("spec.caBundle: required"),
        "{err}"
    );
    // Two Providers of one name: the second is reported against the first.
    let good = provider_yaml("https://checker.ns:8090/validate", 1, &ca);
    let err = load(&bundle(format!("{good}---\n{good}"))).unwrap_err();
    assert!(
        err.contains("(document 2): duplicates Provider \"image-checker\""),
        "{err}"
    );
    // A good Provider loads, and the template with it.
    let bundle = load(&bundle(provider_yaml(
        "https://checker.ns:8090/validate",
        1,
        &ca,
    )))
    .unwrap();
    assert!(bundle.providers().get("image-checker").is_some());
    let template = bundle.policies().templates().next().unwrap();
    assert!(template.uses_external_data() && !template.on_vm());
}

#[test]
fn a_template_calling_a_provider_the_bundle_does_not_define_is_refused_at_load() {
    let ca = test_ca().pem();
    let other = provider_yaml("https://other.ns/validate", 1, &ca)
        .replace("name: image-checker", "name: other");
    let err = load(&format!(
        "{other}---\n{}",
        template_and_constraint("template.yaml")
    ))
    .unwrap_err();
    assert!(
        err.contains("k8sexternalimages.rego:6: external_data names provider \"image-checker\", which the bundle defines other"),
        "{err}"
    );
    let err = load(&template_and_constraint("template.yaml")).unwrap_err();
    assert!(
        err.contains("calls external_data, but the bundle defines no Provider"),
        "{err}"
    );
}

/// The documents of a file of tests/data/external-data, as kubectl would apply them.
fn documents(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(Path::new(DATA).join(file)).unwrap();
    parse_str(&text, Path::new(file))
        .unwrap()
        .into_iter()
        .map(|d| d.value)
        .collect()
}

fn provider_object(yaml: &str) -> Value {
    parse_str(yaml, Path::new("provider.yaml")).unwrap()[0]
        .value
        .clone()
}

/// Whether the server denies a Pod with `image` by the external data constraint.
async fn denies_by_provider(server: &TestServer, image: &str) -> bool {
    let answer = validate_pod(server, &[image]).await;
    message(&answer).contains(&format!(
        "[images-checked] image {image} is marked bad by image-checker"
    ))
}

/// Against the API stand-in: a Provider applied to the cluster serves the templates applied to
/// the cluster; a template that calls it while it is invalid is refused (its status says why),
/// and is compiled and enforced once the Provider is fixed.
#[tokio::test]
async fn providers_applied_to_the_cluster_serve_the_cluster_templates() {
    use palisade_testkit::apiserver::ApiServer;
    use palisade_testkit::cluster::{install_gatekeeper_crds, namespace, palisade};
    let provider = TestProvider::start(Behaviour::default()).await;
    let api = ApiServer::start().await;
    install_gatekeeper_crds(&api);
    let templates = api
        .defined("templates.gatekeeper.sh", "constrainttemplates", "v1")
        .unwrap();
    api.create(namespace("payments", json!({}))).unwrap();
    for doc in documents("template.yaml") {
        api.apply("kubectl", doc, false).unwrap();
    }
    // An http Provider is refused, and the template that calls it with it.
    let http = provider_object(&provider_yaml(
        &provider.url().replace("https://", "http://"),
        2,
        &provider.ca_pem,
    ));
    api.apply("kubectl", http, false).unwrap();
    let server = palisade(&api, "replica-a", &["--generate-default-deny", "false"]).await;
    let refused = eventually(Duration::from_secs(10), || async {
        api.get(&templates, "", "k8sexternalimages").is_ok_and(|t| {
            t["status"]["byPod"][0]["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| {
                    m.contains("calls external_data, but the bundle defines no Provider")
                })
        })
    })
    .await;
    assert!(
        refused,
        "{:?}",
        api.get(&templates, "", "k8sexternalimages")
    );
    assert!(
        api.defined("constraints.gatekeeper.sh", "k8sexternalimages", "v1beta1")
            .is_none()
    );

    // The Provider fixed: the template compiles against it, and its constraint is enforced.
    let https = provider_object(&provider_yaml(&provider.url(), 2, &provider.ca_pem));
    api.apply("kubectl", https, false).unwrap();
    let constraint = documents("constraint.yaml").remove(0);
    assert!(
        eventually(Duration::from_secs(10), || async {
            api.apply("kubectl", constraint.clone(), false).is_ok()
        })
        .await,
        "no constraint CRD for the template once its Provider is valid"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            denies_by_provider(&server, "evil.example/web:2").await
        })
        .await,
        "the cluster's Provider does not serve the cluster's template"
    );
    assert!(!denies_by_provider(&server, "fine.example/web:1").await);
    assert!(!provider.requests().is_empty());
}

#[test]
fn a_malformed_call_fails_closed() {
    let ca = test_ca().pem();
    // The keys are the containers themselves, not strings: an error, so the constraint reports
    // a violation carrying it (Gatekeeper would make the call undefined, and admit).
    let template = template_and_constraint("template-ignores-errors.yaml").replace(
        "\"keys\": images}",
        "\"keys\": input.review.object.spec.containers}",
    );
    let bundle = load(&format!(
        "{}---\n{template}",
        provider_yaml("https://checker.ns:8090/validate", 1, &ca)
    ))
    .unwrap();
    let review: Value = serde_json::from_slice(&pod(&["registry.example.com/web:1"])).unwrap();
    let review = palisade::admission::decode(&serde_json::to_vec(&review).unwrap()).unwrap();
    let violations = validate(&bundle, &palisade::inventory::Inventory::default(), &review);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(
        violations[0].failure,
        Some(palisade::policy::FailureKind::Engine)
    );
    assert!(
        violations[0]
            .message
            .contains("external_data takes {\"provider\""),
        "{}",
        violations[0].message
    );
}

/// On an I/O thread (the server's inline evaluation) a call the cache cannot answer is never
/// made: the decision reports out of time at once, and the server finishes the review on the
/// blocking pool, where the call is made.
#[tokio::test]
async fn an_io_thread_never_waits_for_a_provider() {
    let provider = TestProvider::start(Behaviour {
        delay: Duration::from_secs(2),
        ..Behaviour::default()
    })
    .await;
    let bundle = load(&format!(
        "{}---\n{}",
        provider_yaml(&provider.url(), 3, &provider.ca_pem),
        template_and_constraint("template.yaml")
    ))
    .unwrap();
    let review = palisade::admission::decode(&pod(&["inline.example/web:1"])).unwrap();
    let both = Arc::new((bundle, review));
    let decide = |both: &(Bundle, palisade::admission::Review), deadline| {
        palisade::decide::Decider::without_exemptions().decide(
            &both.0,
            &palisade::inventory::Inventory::default(),
            palisade::admission::Endpoint::Validate,
            &both.1,
            time::OffsetDateTime::now_utc(),
            Some(deadline),
        )
    };
    let started = std::time::Instant::now();
    {
        let _inline = palisade::policy::external::Inline::enter();
        let decided = decide(&both, started + Duration::from_millis(2));
        assert!(
            decided.is_err(),
            "decided inline: {:?}",
            decided.map(|d| d.violations)
        );
    }
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(provider.requests().is_empty());
    // Off the I/O thread the same decision waits for the provider and sees its answer.
    let decision = tokio::task::spawn_blocking(move || {
        decide(&both, std::time::Instant::now() + Duration::from_secs(4))
    })
    .await
    .unwrap()
    .unwrap();
    assert!(decision.violations.is_empty(), "{:?}", decision.violations);
    assert_eq!(provider.requests().len(), 1);
}

/// `palisade test` in gator's form, with the Provider given under `-f` beside the template, the
/// constraint and the objects: the CLI calls the provider as the webhook does.
#[tokio::test]
async fn palisade_test_calls_the_provider_given_with_f() {
    let provider = TestProvider::start(Behaviour::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let name = "image-checker-cli";
    let policies = policies(
        dir.path(),
        name,
        &provider_yaml(&provider.url(), 2, &provider.ca_pem),
        "template.yaml",
    );
    let objects = dir.path().join("pods.yaml");
    std::fs::write(
        &objects,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: good, namespace: shop}\nspec: {containers: [{name: c, image: registry.example.com/app:1}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: bad, namespace: shop}\nspec: {containers: [{name: c, image: registry.example.com/evil:1}]}\n",
    )
    .unwrap();
    let objects = objects.display().to_string();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        palisade_cli(&["test", "-f", &policies, "-f", &objects])
    })
    .await
    .unwrap();
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("Pod shop/good: no violations"), "{stdout}");
    assert!(
        stdout.contains("image registry.example.com/evil:1 is marked bad by image-checker-cli"),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("2 objects, 1 violation (1 deny, 0 warn, 0 dryrun)\n"),
        "{stdout}"
    );
    assert!(!provider.requests().is_empty(), "the provider was asked");
}
