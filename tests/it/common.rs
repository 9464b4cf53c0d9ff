//! What the integration tests share beyond the testkit: the testkit's harness, client and
//! fixtures under one name (`use crate::common::*`), the one decision path called directly, a
//! seeded source of variety, /mutate as the API server applies it, raw HTTP/2 uploads and the
//! binary; and, in modules of their own, helpers that several test files use: `rollout` (a
//! server with a configuration file, break-glass reviews), `oracle` (real OPA, for the
//! differential tests) and `templates` (templates that fail or hog).

pub mod guides;
pub mod oracle;
pub mod rollout;
pub mod templates;

pub use palisade_testkit::fixtures::{
    admission_fixtures, edited_review, fixture, in_namespace, repo_path,
};
pub use palisade_testkit::harness::{TestServer, eventually, install_crypto, metric, metric_total};
pub use palisade_testkit::https::{
    Client, HttpResponse, Proto, finish_slow_review, http_get, parse_http1, start_slow_review,
};
pub use palisade_testkit::volume::project_files;

/// Runs every gator Suite under `rel` (as `palisade verify` does) and fails on any failed case.
pub fn passing_suites(
    rel: &str,
    options: &palisade::policy::EngineOptions,
) -> Vec<palisade::suite::CaseResult> {
    let results = palisade::suite::run_path(&repo_path(rel), options).unwrap();
    let failures: Vec<String> = results
        .iter()
        .filter(|r| matches!(r.outcome, palisade::suite::Outcome::Fail(_)))
        .map(|r| r.to_string())
        .collect();
    assert!(failures.is_empty(), "{rel}: {failures:#?}");
    results
}

/// Every violation the one decision path finds for `review` (no exempt namespaces, as gator).
pub fn validate(
    bundle: &palisade::bundle::Bundle,
    inventory: &palisade::inventory::Inventory,
    review: &palisade::admission::Review,
) -> Vec<palisade::policy::Violation> {
    palisade::decide::Decider::without_exemptions()
        .decide(
            bundle,
            inventory,
            palisade::admission::Endpoint::Validate,
            review,
            time::OffsetDateTime::now_utc(),
            None,
        )
        .unwrap()
        .violations
}

/// SplitMix64: small, seeded, the same on every machine (the property and differential tests'
/// source of variety).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// True `n` times in `d`.
    pub fn chance(&mut self, n: usize, d: usize) -> bool {
        self.below(d) < n
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A copy of one of `items`.
    pub fn choose<T: Copy>(&mut self, items: &[T]) -> T {
        *self.pick(items)
    }
}

/// The JSON patch of a /mutate answer, decoded; empty when the answer has none.
pub fn decoded_patch(rsp: &serde_json::Value) -> Vec<serde_json::Value> {
    use base64::Engine as _;
    let Some(patch) = rsp["patch"].as_str() else {
        return Vec::new();
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// `review` after /mutate, its patch applied as the API server applies it, and whether there
/// was a patch.
pub async fn mutate(client: &Client, review: &serde_json::Value) -> (serde_json::Value, bool) {
    let rsp = client
        .review(
            Proto::Http2,
            "/mutate",
            &serde_json::to_vec(review).unwrap(),
        )
        .await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
    let ops = decoded_patch(&rsp);
    let mut review = review.clone();
    let patched = rsp.get("patch").is_some();
    if patched {
        let patch: json_patch::Patch =
            serde_json::from_value(serde_json::Value::Array(ops)).unwrap();
        json_patch::patch(&mut review["request"]["object"], &patch).unwrap();
    }
    (review, patched)
}

/// `review` after /mutate, as the API server sends it on to /validate.
pub async fn mutated(client: &Client, review: &serde_json::Value) -> serde_json::Value {
    mutate(client, review).await.0
}

/// Sends `review` to `path` over HTTP/2 and checks the answer is a review for it.
pub async fn send(client: &Client, path: &str, review: &serde_json::Value) -> serde_json::Value {
    client
        .review(Proto::Http2, path, &serde_json::to_vec(review).unwrap())
        .await
}

/// The captured Pod's /mutate review in `namespace`, with the limits the default bundle asks for.
pub fn plain_pod(namespace: &str) -> serde_json::Value {
    let mut review: serde_json::Value =
        serde_json::from_slice(&fixture("admission/mutate-create-pod.json")).unwrap();
    in_namespace(&mut review, namespace);
    review["request"]["object"]["spec"]["containers"][0]["resources"] =
        serde_json::json!({"limits": {"cpu": "250m", "memory": "64Mi"}});
    review
}

/// /mutate, the patch applied as the API server does, then /validate on the result.
pub async fn create_pod(client: &Client, namespace: &str) -> serde_json::Value {
    let (review, patched) = mutate(client, &plain_pod(namespace)).await;
    assert!(patched, "a plain pod is always mutated");
    send(client, "/validate", &review).await
}

/// A `/validate` request over a raw HTTP/2 stream whose body the test sends piece by piece.
pub async fn open_upload(
    server: &TestServer,
) -> (h2::client::ResponseFuture, h2::SendStream<bytes::Bytes>) {
    let tls = server.client().connect(Proto::Http2).await.unwrap();
    let (h2, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(connection);
    let mut h2 = h2.ready().await.unwrap();
    let request = http::Request::post("https://localhost/validate")
        .header("content-type", "application/json")
        .body(())
        .unwrap();
    h2.send_request(request, false).unwrap()
}

/// Sends one chunk once the server has made room for it (HTTP/2 flow control).
pub async fn send_chunk(
    upload: &mut h2::SendStream<bytes::Bytes>,
    chunk: &bytes::Bytes,
    end: bool,
) {
    upload.reserve_capacity(chunk.len());
    let capacity = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        std::future::poll_fn(|cx| upload.poll_capacity(cx)),
    )
    .await
    .expect("the server makes room for the upload");
    assert!(
        matches!(capacity, Some(Ok(n)) if n > 0),
        "the server stopped reading: {capacity:?}"
    );
    upload.send_data(chunk.clone(), end).unwrap();
}

/// Runs `palisade <args>` from the repository's root: exit code, stdout, stderr.
pub fn palisade_cli(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_palisade"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A server whose bundle is the repository files `files` (copied into a directory of their own)
/// and whose inventory is the repository file `inventory`.
pub async fn serve_files(files: &[&str], inventory: &str) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("bundle");
    std::fs::create_dir_all(&policies).unwrap();
    for file in files {
        let name = std::path::Path::new(file).file_name().unwrap();
        std::fs::copy(repo_path(file), policies.join(name)).unwrap();
    }
    let policies = policies.display().to_string();
    let inventory = repo_path(inventory).display().to_string();
    TestServer::start_in(dir, &["--policies", &policies, "--inventory", &inventory]).await
}

/// Sends the captured Pod CREATE, moved to each namespace, to /validate over `proto`, and checks
/// that it is allowed, or denied with a message containing the text given.
pub async fn pod_in_namespaces(client: &Client, proto: Proto, cases: &[(&str, bool, &str)]) {
    for (ns, allowed, says) in cases {
        let body = edited_review("validate-create-pod.json", |r| in_namespace(r, ns));
        let rsp = client.review(proto, "/validate", &body).await;
        assert_eq!(rsp["allowed"], *allowed, "{ns}: {rsp}");
        if !allowed {
            let message = rsp["status"]["message"].as_str().unwrap();
            assert!(message.contains(says), "{ns}: {message}");
        }
    }
}
