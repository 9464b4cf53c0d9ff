//! `serve --manage-certs` against the API stand-in (`palisade_testkit::apiserver`): the leader creates
//! the CA and serving Secrets, fills in both webhook configurations' caBundle, renews, and rotates
//! the CA while an "API server" keeps calling over HTTPS with whatever caBundle the
//! configuration holds at that moment. A fake kubelet projects the serving Secret into the
//! replica's certificate directory the way a Secret volume is updated (`..data` swap).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use palisade_testkit::apiserver::{ApiServer, MUTATING_WEBHOOKS, SECRETS, VALIDATING_WEBHOOKS};
use palisade_testkit::cluster::{
    apply_webhook_configurations, b64, fake_kubelet, kube_client, secret_file, start_palisade_in,
};

use crate::common::*;

const NS: &str = "palisade-system";
const SERVICE_NAME: &str = "palisade.palisade-system.svc";

/// The caBundle (decoded PEM) of every webhook of both configurations.
fn ca_bundles(api: &ApiServer) -> Vec<Vec<u8>> {
    [&VALIDATING_WEBHOOKS, &MUTATING_WEBHOOKS]
        .into_iter()
        .flat_map(|r| {
            let config = api.get(r, "", "palisade").unwrap();
            config["webhooks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| b64(w["clientConfig"]["caBundle"].as_str().unwrap_or("")))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn cert_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--manage-certs",
        "--cert-check-interval",
        "200ms",
        "--generate-default-deny=false",
    ];
    args.extend_from_slice(extra);
    args
}

/// A review as the API server sends it, trusting only `ca_pem` for Palisade's Service name.
async fn review_trusting(server: &TestServer, ca_pem: &[u8]) -> std::io::Result<HttpResponse> {
    Client::new(server.https, &[ca_pem])
        .with_server_name(SERVICE_NAME)
        .post(
            Proto::Http2,
            "/validate",
            fixture("admission/validate-create-namespace.json"),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_creates_the_certificates_and_fills_in_both_ca_bundles() {
    let api = ApiServer::start().await;
    apply_webhook_configurations(&api);
    for bundle in ca_bundles(&api) {
        assert!(bundle.is_empty(), "the manifests leave caBundle out");
    }
    let dir = tempfile::tempdir().unwrap();
    let kubelet = fake_kubelet(api.clone(), dir.path().to_path_buf());
    let server = start_palisade_in(&api, "palisade-a", dir, &cert_args(&[])).await;
    // Not ready until the certificate is written and projected.
    assert!(
        eventually(Duration::from_secs(10), || async {
            http_get(server.health, "/readyz").await.0 == 200
        })
        .await,
        "never ready: {:?}",
        http_get(server.health, "/readyz").await
    );

    let ca = api.get(&SECRETS, NS, "palisade-ca").unwrap();
    let tls = api.get(&SECRETS, NS, "palisade-tls").unwrap();
    assert_eq!(tls["type"], "kubernetes.io/tls");
    let ca_pem = secret_file(&ca, "ca.crt");
    assert!(!secret_file(&ca, "ca.key").is_empty());
    assert_eq!(
        secret_file(&tls, "ca.crt"),
        ca_pem,
        "the serving Secret carries the bundle"
    );
    assert!(
        ca["metadata"]["annotations"]["palisade.dev/ca-trusted-since"].is_string(),
        "{ca}"
    );
    // Both configurations trust exactly the CA, in every webhook.
    for bundle in ca_bundles(&api) {
        assert_eq!(bundle, ca_pem);
    }
    // The API server's view: only that CA, the Service's DNS name, over HTTP/2.
    let rsp = review_trusting(&server, &ca_pem).await.unwrap();
    assert_eq!(rsp.status, 200);
    // A client trusting another CA is refused: the certificate really comes from this CA.
    let other = palisade::tls::certificates::generate(&palisade::tls::certificates::CertSpec::new(
        "palisade", NS,
    ))
    .unwrap();
    assert!(
        review_trusting(&server, other.ca_cert_pem.as_bytes())
            .await
            .is_err()
    );

    let metrics = server.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "palisade_certificate_manager_writes_total{what=\"serving\"}"
        ),
        Some(1.0)
    );
    let served = palisade::tls::certificates::parse_pem(
        std::str::from_utf8(&secret_file(&tls, "tls.crt")).unwrap(),
    )
    .unwrap()
    .remove(0);
    assert_eq!(
        metric(
            &metrics,
            "palisade_tls_certificate_expiry_timestamp_seconds"
        ),
        Some(served.not_after.unix_timestamp() as f64)
    );

    // A new leader finds everything in place and writes nothing.
    let versions = |api: &ApiServer| {
        [
            api.get(&SECRETS, NS, "palisade-ca").unwrap()["metadata"]["resourceVersion"].clone(),
            api.get(&SECRETS, NS, "palisade-tls").unwrap()["metadata"]["resourceVersion"].clone(),
            api.get(&VALIDATING_WEBHOOKS, "", "palisade").unwrap()["metadata"]["resourceVersion"]
                .clone(),
        ]
    };
    let before = versions(&api);
    let dir = tempfile::tempdir().unwrap();
    for f in ["tls.crt", "tls.key", "ca.crt"] {
        std::fs::copy(server.dir.path().join(f), dir.path().join(f)).unwrap();
    }
    assert!(server.stop().await);
    let again = start_palisade_in(&api, "palisade-b", dir, &cert_args(&[])).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            metric(&again.metrics().await, "palisade_leader").unwrap_or(0.0) == 1.0
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        versions(&api),
        before,
        "a second leader must not rewrite valid certificates"
    );
    kubelet.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_serving_certificate_is_renewed_and_picked_up() {
    let api = ApiServer::start().await;
    apply_webhook_configurations(&api);
    let dir = tempfile::tempdir().unwrap();
    let kubelet = fake_kubelet(api.clone(), dir.path().to_path_buf());
    // Renewed with a third of its life (6 s) left: 4 s after it was issued.
    let server = start_palisade_in(
        &api,
        "palisade-a",
        dir,
        &cert_args(&["--cert-validity", "6s", "--cert-rotation-overlap", "1s"]),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            http_get(server.health, "/readyz").await.0 == 200
        })
        .await
    );
    let first = api.get(&SECRETS, NS, "palisade-tls").unwrap();
    let first_cert = secret_file(&first, "tls.crt");
    let ca_pem = secret_file(&api.get(&SECRETS, NS, "palisade-ca").unwrap(), "ca.crt");
    let renewed = eventually(Duration::from_secs(8), || async {
        secret_file(&api.get(&SECRETS, NS, "palisade-tls").unwrap(), "tls.crt") != first_cert
    })
    .await;
    assert!(renewed, "the serving certificate was not renewed");
    let parse = |pem: &[u8]| {
        palisade::tls::certificates::parse_pem(std::str::from_utf8(pem).unwrap())
            .unwrap()
            .remove(0)
    };
    let old = parse(&first_cert);
    let new = parse(&secret_file(
        &api.get(&SECRETS, NS, "palisade-tls").unwrap(),
        "tls.crt",
    ));
    assert!(new.not_after > old.not_after);
    assert!(
        time::OffsetDateTime::now_utc() < old.not_after,
        "renewed only after the old one expired"
    );
    let ca = parse(&ca_pem);
    assert!(new.signed_by(&ca), "renewal keeps the CA");
    // The replica serves the new one: the expiry metric follows it.
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric(
                &server.metrics().await,
                "palisade_tls_certificate_expiry_timestamp_seconds",
            )
            .is_some_and(|t| t as i64 >= new.not_after.unix_timestamp())
        })
        .await
    );
    assert_eq!(review_trusting(&server, &ca_pem).await.unwrap().status, 200);
    kubelet.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_rotation_fails_no_review() {
    let api = ApiServer::start().await;
    apply_webhook_configurations(&api);
    let dir = tempfile::tempdir().unwrap();
    let kubelet = fake_kubelet(api.clone(), dir.path().to_path_buf());
    // The CA lives 9 s: rotated at 6 s; the serving certificate moves to it 1 s later and the
    // old CA leaves the bundle 1 s after that, before it expires at 9 s.
    let server = Arc::new(
        start_palisade_in(
            &api,
            "palisade-a",
            dir,
            &cert_args(&[
                "--ca-validity",
                "9s",
                "--cert-validity",
                "9s",
                "--cert-rotation-overlap",
                "1s",
            ]),
        )
        .await,
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            http_get(server.health, "/readyz").await.0 == 200
        })
        .await
    );
    let first_ca = secret_file(&api.get(&SECRETS, NS, "palisade-ca").unwrap(), "ca.crt");

    // The "API server": one review after another, each trusting the caBundle of the
    // ValidatingWebhookConfiguration as it is at that moment.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let max_cas = Arc::new(AtomicUsize::new(0));
    let caller = {
        let (api, server, stop) = (api.clone(), server.clone(), stop.clone());
        let (sent, failed, max_cas) = (sent.clone(), failed.clone(), max_cas.clone());
        tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let bundle = ca_bundles(&api).remove(0);
                let cas =
                    palisade::tls::certificates::parse_pem(std::str::from_utf8(&bundle).unwrap())
                        .map_or(0, |c| c.len());
                max_cas.fetch_max(cas, Ordering::Relaxed);
                sent.fetch_add(1, Ordering::Relaxed);
                match review_trusting(&server, &bundle).await {
                    Ok(rsp) if rsp.status == 200 => {}
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        failures.push(format!("{:?}", other.map(|r| r.status)));
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            failures
        })
    };
    // Rotation done: a new CA, alone in the bundle.
    let rotated = eventually(Duration::from_secs(15), || async {
        let ca = secret_file(&api.get(&SECRETS, NS, "palisade-ca").unwrap(), "ca.crt");
        let bundles = ca_bundles(&api);
        ca != first_ca && bundles.iter().all(|b| *b == ca)
    })
    .await;
    // Keep calling a little after the old CA is gone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let failures = caller.await.unwrap();
    assert!(
        rotated,
        "the CA was not rotated and the old one not retired"
    );
    assert!(
        sent.load(Ordering::Relaxed) > 100,
        "too few reviews to show anything: {}",
        sent.load(Ordering::Relaxed)
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "reviews failed during the CA rotation: {failures:?}"
    );
    assert_eq!(
        max_cas.load(Ordering::Relaxed),
        2,
        "the bundle must hold both CAs during the rotation"
    );

    // The replica serves a certificate from the new CA.
    let ca = secret_file(&api.get(&SECRETS, NS, "palisade-ca").unwrap(), "ca.crt");
    assert_eq!(review_trusting(&server, &ca).await.unwrap().status, 200);
    assert!(
        review_trusting(&server, &first_ca).await.is_err(),
        "still served by the old CA"
    );
    kubelet.abort();
}

#[tokio::test]
async fn manage_certs_needs_a_cluster_and_sane_timings() {
    install_crypto();
    for (args, expect) in [
        (vec!["--manage-certs"], "no cluster is configured"),
        (
            vec!["--manage-certs", "--cert-validity", "20y"],
            "must not exceed --ca-validity",
        ),
        (
            vec![
                "--manage-certs",
                "--ca-validity",
                "1h",
                "--cert-validity",
                "5m",
                "--cert-rotation-overlap",
                "10m",
            ],
            "under a sixth of --ca-validity",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut all = vec![
            "palisade",
            "serve",
            "--no-cluster",
            "--listen",
            "127.0.0.1:0",
            "--health-listen",
            "127.0.0.1:0",
        ];
        let cert = dir.path().join("tls.crt").display().to_string();
        let key = dir.path().join("tls.key").display().to_string();
        all.extend(["--tls-cert", &cert, "--tls-key", &key]);
        all.extend(args);
        use clap::Parser;
        let palisade::cli::Command::Serve(serve) =
            palisade::cli::Cli::try_parse_from(&all).unwrap().command
        else {
            unreachable!()
        };
        let err = serve.load().await.err().expect("must refuse").to_string();
        assert!(err.contains(expect), "{all:?}: {err}");
        assert!(
            !dir.path().join("tls.crt").exists(),
            "no development certificate may be written with --manage-certs"
        );
    }
}

/// The stand-in holds every client to manifests/base/rbac.yaml, so each cluster test shows that
/// Palisade's calls are allowed there; this shows the rules bite where they should.
#[tokio::test]
async fn the_stand_in_holds_palisade_to_its_rbac() {
    use k8s_openapi::api::core::v1::{Pod, Secret};
    use kube::api::{Api, ListParams, PostParams};
    let api = ApiServer::start().await;
    api.create(
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
    )
    .unwrap();
    let client = kube_client(&api, "palisade-a").await;
    let code = |r: Result<_, kube::Error>| match r {
        Ok(_) => 200,
        Err(kube::Error::Api(e)) => e.code,
        Err(e) => panic!("{e}"),
    };
    let in_own: Api<Secret> = Api::namespaced(client.clone(), NS);
    let elsewhere: Api<Secret> = Api::namespaced(client.clone(), "default");
    // Its two Secrets, by name, in its own namespace only.
    assert_eq!(code(in_own.get("palisade-tls").await.map(|_| ())), 404);
    assert_eq!(code(in_own.get("someone-elses").await.map(|_| ())), 403);
    assert_eq!(
        code(in_own.list(&ListParams::default()).await.map(|_| ())),
        403
    );
    assert_eq!(code(elsewhere.get("palisade-tls").await.map(|_| ())), 403);
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "palisade-tls", "namespace": NS}, "type": "Opaque"}))
    .unwrap();
    assert_eq!(
        code(
            in_own
                .create(&PostParams::default(), &secret)
                .await
                .map(|_| ())
        ),
        200
    );
    assert_eq!(
        code(
            elsewhere
                .create(&PostParams::default(), &secret)
                .await
                .map(|_| ())
        ),
        403
    );
    // The audit lists pods; it never reads one, nor writes any.
    let pods: Api<Pod> = Api::all(client.clone());
    assert_eq!(
        code(pods.list(&ListParams::default()).await.map(|_| ())),
        200
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    assert_eq!(code(pods.get("x").await.map(|_| ())), 403);
    // The webhook configurations: only Palisade's, get and update.
    let resource = kube::api::ApiResource {
        group: "admissionregistration.k8s.io".into(),
        version: "v1".into(),
        api_version: "admissionregistration.k8s.io/v1".into(),
        kind: "ValidatingWebhookConfiguration".into(),
        plural: "validatingwebhookconfigurations".into(),
    };
    let hooks: Api<kube::api::DynamicObject> = Api::all_with(client, &resource);
    assert_eq!(code(hooks.get("palisade").await.map(|_| ())), 404);
    assert_eq!(code(hooks.get("gatekeeper").await.map(|_| ())), 403);
    assert_eq!(
        code(hooks.list(&ListParams::default()).await.map(|_| ())),
        403
    );
}

/// A CA Secret that does not hold together is left as it is (it may be an operator's): nothing
/// is issued from it and the replicas stay unready, saying why; deleting it starts over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_ca_secret_is_left_alone_until_deleted() {
    let api = ApiServer::start().await;
    apply_webhook_configurations(&api);
    api.create(
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
    )
    .unwrap();
    let spec = palisade::tls::certificates::CertSpec::new("palisade", NS);
    let one = palisade::tls::certificates::generate(&spec).unwrap();
    let two = palisade::tls::certificates::generate(&spec).unwrap();
    let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let broken = api
        .create(serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "palisade-ca", "namespace": NS},
            "data": {"ca.crt": enc(&one.ca_cert_pem), "ca.key": enc(&two.ca_key_pem)}}))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubelet = fake_kubelet(api.clone(), dir.path().to_path_buf());
    let server = start_palisade_in(&api, "palisade-a", dir, &cert_args(&[])).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            metric(&server.metrics().await, "palisade_leader").unwrap_or(0.0) == 1.0
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    let kept = api.get(&SECRETS, NS, "palisade-ca").unwrap();
    assert_eq!(
        kept["metadata"]["resourceVersion"],
        broken["metadata"]["resourceVersion"]
    );
    assert!(
        api.get(&SECRETS, NS, "palisade-tls").is_err(),
        "issued from a broken CA"
    );
    assert_eq!(
        http_get(server.health, "/readyz").await,
        (503, "not ready: certificates not loaded\n".to_owned())
    );
    for bundle in ca_bundles(&api) {
        assert!(bundle.is_empty(), "a broken CA must not be published");
    }
    // Deleted: the leader starts over and the replica turns ready.
    api.delete(&SECRETS, NS, "palisade-ca").unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            http_get(server.health, "/readyz").await.0 == 200
        })
        .await
    );
    kubelet.abort();
}
