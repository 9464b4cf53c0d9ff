//! Palisade against a cluster: the stand-in API server (`apiserver.rs`) checked against a real
//! one, then the live inventory, default-deny generation, leader election and outages, all
//! through the real `kube` client.

use std::path::Path;
use std::time::Duration;

use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::apiserver::{
    ApiServer, CLUSTER_POLICY_REPORTS, CRDS, LEASES, NAMESPACES, NETWORK_POLICIES, PODS,
    POLICY_REPORTS,
};
use crate::common::*;
use crate::zero_trust::create_pod;

/// A kube client for the stand-in, from the kubeconfig it writes (CA, server name, token).
pub async fn kube_client(api: &ApiServer, token: &str) -> kube::Client {
    crate::common::install_crypto();
    let kubeconfig = kube::config::Kubeconfig::read_from(api.kubeconfig(token)).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

struct Capture {
    method: String,
    path: String,
    content_type: Option<String>,
    body: String,
    status: u16,
    answer: String,
}

fn capture(name: &str) -> Capture {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/apiserver");
    let read = |suffix: &str| {
        let mut found = None;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            if file.starts_with(&format!("{name}-")) && file.ends_with(suffix) {
                found = Some(std::fs::read_to_string(path).unwrap());
            }
        }
        found.unwrap_or_default()
    };
    let request = read(".request.txt");
    let (head, body) = request.split_once("\n\n").unwrap_or((&request, ""));
    let mut lines = head.lines();
    let (method, path) = lines.next().unwrap().split_once(' ').unwrap();
    let content_type = lines
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .map(str::to_owned);
    let headers = read(".headers.txt");
    let status = headers.split_whitespace().nth(1).unwrap().parse().unwrap();
    let answer = if name >= "20" {
        read(".jsonl")
    } else {
        read(".json")
    };
    Capture {
        method: method.to_owned(),
        path: path.to_owned(),
        content_type,
        body: body.trim().to_owned(),
        status,
        answer,
    }
}

async fn send(
    client: &kube::Client,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: String,
) -> (u16, String) {
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("user-agent", "curl/8.5.0");
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    let response = client
        .send(request.body(body.into_bytes().into()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// What must agree between a real answer and the stand-in's: everything but the values that
/// differ from one server to another (uids, resourceVersions, times, continue tokens, and which
/// other objects the real cluster held).
fn shape(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                let v = match k.as_str() {
                    "uid" | "resourceVersion" | "creationTimestamp" | "time" | "continue"
                    | "deletionTimestamp" | "remainingItemCount" => json!("*"),
                    "items" => json!(v.as_array().map(|items| items.first().map(shape))),
                    _ => shape(v),
                };
                out.insert(k.clone(), v);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(shape).collect()),
        Value::String(s) if s.starts_with("too old resource version") => {
            json!("too old resource version")
        }
        other => other.clone(),
    }
}

/// Replays the real API server's captured requests, in order, against the stand-in, and compares
/// the status codes and the shapes of the answers.
#[tokio::test]
async fn standin_matches_the_real_api_server() {
    let api = ApiServer::start().await;
    // The captured requests are an administrator's, not Palisade's.
    api.enforce_rbac(false);
    let client = kube_client(&api, "admin").await;
    // The captured list of two namespaces continues: the cluster held more.
    for ns in ["gatekeeper-system", "hi-2bdc5d", "ns-a", "ns-b"] {
        api.create_as(
            "kubectl-create",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .unwrap();
    }
    // So did the list of every NetworkPolicy.
    for (ns, name) in [("ns-a", "a1"), ("ns-a", "a2"), ("ns-b", "b1")] {
        api.create_as(
            "kubectl-create",
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                   "metadata": {"name": name, "namespace": ns}, "spec": {"podSelector": {}}}),
        )
        .unwrap();
    }
    let mut continue_token = String::new();
    let mut first_lease_rv = String::new();
    for n in 1..=19 {
        let name = format!("{n:02}");
        let c = capture(&name);
        let mut path = c.path.clone();
        let mut body = c.body.clone();
        if name == "05" {
            path = format!("/api/v1/namespaces?limit=2&continue={continue_token}");
        }
        // Updates carry the resourceVersion the client last read: ours, not the real one's.
        if c.method == "PUT" {
            let mut object: Value = serde_json::from_str(&body).unwrap();
            let current = if name == "06" || name == "07" {
                api.get(&NAMESPACES, "", "cap-demo").unwrap()
            } else {
                api.get(&LEASES, "cap-demo", "palisade-leader").unwrap()
            };
            object["metadata"]["resourceVersion"] = match name.as_str() {
                "07" => json!("1"),
                "17" => json!(first_lease_rv),
                _ => current["metadata"]["resourceVersion"].clone(),
            };
            object["metadata"]["uid"] = current["metadata"]["uid"].clone();
            body = object.to_string();
        }
        let (status, answer) =
            send(&client, &c.method, &path, c.content_type.as_deref(), body).await;
        assert_eq!(
            status, c.status,
            "capture {name}: {} {path}: {answer}",
            c.method
        );
        let ours: Value = serde_json::from_str(&answer).unwrap();
        let real: Value = serde_json::from_str(&c.answer).unwrap();
        assert_eq!(
            shape(&ours),
            shape(&real),
            "capture {name}: {} {path}",
            c.method
        );
        if name == "04" {
            continue_token = ours["metadata"]["continue"].as_str().unwrap().to_owned();
            assert_eq!(
                ours["metadata"]["remainingItemCount"],
                json!(7),
                "9 namespaces, 2 listed"
            );
        }
        if name == "15" {
            first_lease_rv = ours["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .to_owned();
        }
        if name == "09" {
            let before = api
                .get(&NETWORK_POLICIES, "cap-demo", "default-deny-all")
                .unwrap();
            assert_eq!(
                ours["metadata"]["resourceVersion"],
                before["metadata"]["resourceVersion"]
            );
        }
    }

    // 20: a watch sees a namespace added, labelled and deleted (Terminating first), and bookmarks.
    api.set_bookmark_interval(Duration::from_millis(100));
    let from = api.get(&NAMESPACES, "", "cap-demo").unwrap()["metadata"]["resourceVersion"].clone();
    let watch_path = format!(
        "/api/v1/namespaces?watch=1&resourceVersion={}&allowWatchBookmarks=true&timeoutSeconds=1",
        from.as_str().unwrap()
    );
    api.create_as(
        "curl",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "cap-watch"}}),
    )
    .unwrap();
    let mut labelled = api.get(&NAMESPACES, "", "cap-watch").unwrap();
    labelled["metadata"]["labels"]["network-policy"] = json!("zero-trust");
    api.update("curl", labelled).unwrap();
    let (status, stream) = send(&client, "GET", &watch_path, None, String::new()).await;
    assert_eq!(status, 200);
    let ours: Vec<Value> = stream
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let real: Vec<Value> = capture("20")
        .answer
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(shape(&ours[0]), shape(&real[0]), "20: ADDED");
    assert_eq!(shape(&ours[1]), shape(&real[1]), "20: MODIFIED");
    let bookmark = ours
        .iter()
        .find(|e| e["type"] == "BOOKMARK")
        .expect("a bookmark");
    assert_eq!(shape(bookmark), shape(real.last().unwrap()), "20: BOOKMARK");

    // 21: an expired resourceVersion is HTTP 200 and one ERROR event with a 410 Status.
    api.compact();
    let c = capture("21");
    let (status, stream) = send(&client, "GET", &c.path, None, String::new()).await;
    assert_eq!(status, c.status);
    let ours: Value = serde_json::from_str(stream.trim()).unwrap();
    let real: Value = serde_json::from_str(c.answer.trim()).unwrap();
    assert_eq!(shape(&ours), shape(&real), "21: 410 Expired");

    // 22: NetworkPolicy ADDED and DELETED carry kind and apiVersion.
    let from =
        api.get(&NAMESPACES, "", "cap-watch").unwrap()["metadata"]["resourceVersion"].clone();
    api.apply(
        "palisade",
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": "default-deny-all", "namespace": "cap-demo"},
               "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}),
        false,
    )
    .unwrap();
    api.delete(&NETWORK_POLICIES, "cap-demo", "default-deny-all")
        .unwrap();
    let path = format!(
        "/apis/networking.k8s.io/v1/networkpolicies?watch=1&resourceVersion={}&allowWatchBookmarks=true&timeoutSeconds=1",
        from.as_str().unwrap()
    );
    let (_, stream) = send(&client, "GET", &path, None, String::new()).await;
    let ours: Vec<Value> = stream
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let real: Vec<Value> = capture("22")
        .answer
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for i in 0..3 {
        assert_eq!(shape(&ours[i]), shape(&real[i]), "22: event {i}");
    }
}

// ---- Palisade against the stand-in ----

const LEASE_FLAGS: [&str; 6] = [
    "--lease-duration",
    "2s",
    "--lease-renew-deadline",
    "1500ms",
    "--lease-retry-period",
    "200ms",
];

/// `palisade serve` with the default bundle, connected to `api` with `token` as its identity.
pub(crate) async fn palisade(api: &ApiServer, token: &str, extra: &[&str]) -> TestServer {
    let server = start_palisade(api, token, extra).await;
    let ready = eventually(Duration::from_secs(10), || async {
        http_get(server.health, "/readyz").await.0 == 200
    })
    .await;
    assert!(
        ready,
        "palisade did not become ready: {:?}",
        http_get(server.health, "/readyz").await
    );
    server
}

/// Starts Palisade on the stand-in without waiting for it to be ready.
async fn start_palisade(api: &ApiServer, token: &str, extra: &[&str]) -> TestServer {
    start_palisade_in(api, token, tempfile::tempdir().unwrap(), extra).await
}

/// Palisade connected to the stand-in as the replica `token`, its certificates in `dir`.
pub(crate) async fn start_palisade_in(
    api: &ApiServer,
    token: &str,
    dir: tempfile::TempDir,
    extra: &[&str],
) -> TestServer {
    // Palisade runs in its own namespace, which holds its Lease.
    let _ = api.create(namespace("palisade-system", json!({})));
    let kubeconfig = api.kubeconfig(token).display().to_string();
    let policies = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("policies")
        .display()
        .to_string();
    let mut args = vec![
        "--kubeconfig",
        kubeconfig.as_str(),
        "--policies",
        policies.as_str(),
        "--pod-name",
        token,
        "--own-namespace",
        "palisade-system",
    ];
    args.extend_from_slice(&LEASE_FLAGS);
    args.extend_from_slice(extra);
    TestServer::start_in(dir, &args).await
}

pub(crate) fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

fn zero_trust_labels() -> Value {
    json!({"network-policy": "zero-trust", "security-level": "medium",
           "pod-security.kubernetes.io/enforce": "restricted"})
}

fn default_deny(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}})
}

const LACKS: &str = "lacks a default-deny NetworkPolicy";

async fn pod_denied_for_default_deny(server: &TestServer, ns: &str) -> bool {
    let rsp = create_pod(&server.client(), ns).await;
    let message = rsp["status"]["message"].as_str().unwrap_or("").to_owned();
    if rsp["allowed"] == true {
        return false;
    }
    assert!(
        message.contains(LACKS),
        "denied for another reason: {message}"
    );
    true
}

async fn policies_in(api: &ApiServer, ns: &str) -> Vec<String> {
    let mut names: Vec<String> = api
        .names(&NETWORK_POLICIES)
        .into_iter()
        .filter_map(|n| n.strip_prefix(&format!("{ns}/")).map(str::to_owned))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn the_inventory_follows_the_cluster() {
    let api = ApiServer::start().await;
    api.create(namespace("shop", json!({"security-level": "medium"})))
        .unwrap();
    api.create(default_deny("shop", "deny-everything")).unwrap();
    let server = palisade(&api, "replica-a", &["--generate-default-deny=false"]).await;

    // Listed at start: the namespace and its default-deny decide the review.
    assert!(!pod_denied_for_default_deny(&server, "shop").await);
    // A namespace created later appears, without a default-deny.
    api.create(namespace("late", json!({"security-level": "medium"})))
        .unwrap();
    assert!(
        eventually(Duration::from_secs(1), || pod_denied_for_default_deny(
            &server, "late"
        ))
        .await
    );
    // Deleting the default-deny flips the decision within a second.
    api.delete(&NETWORK_POLICIES, "shop", "deny-everything")
        .unwrap();
    assert!(
        eventually(Duration::from_secs(1), || pod_denied_for_default_deny(
            &server, "shop"
        ))
        .await,
        "the deletion was not seen within a second"
    );
    let metrics = server.metrics().await;
    assert_eq!(metric(&metrics, "palisade_inventory_synced"), Some(1.0));
    assert_eq!(
        metric(&metrics, "palisade_inventory_stale_seconds"),
        Some(0.0)
    );
    // With generation off, no NetworkPolicy was written.
    assert!(policies_in(&api, "late").await.is_empty());
    // The kube watcher listed in pages and watched from the list's resourceVersion.
    let requests = api.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /api/v1/namespaces?") && r.contains("limit=500")),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.contains("watch=true") && r.contains("resourceVersion=")),
        "{requests:?}"
    );
}

#[tokio::test]
async fn opted_in_namespaces_get_their_default_deny_and_keep_it() {
    let api = ApiServer::start().await;
    // A namespace that already holds a user's default-deny-all: never touched.
    api.create(namespace("legacy", zero_trust_labels()))
        .unwrap();
    api.create_as(
        "kubectl-client-side-apply",
        default_deny("legacy", "default-deny-all"),
    )
    .unwrap();
    let server = palisade(&api, "replica-a", &[]).await;

    api.create(namespace("orders", zero_trust_labels()))
        .unwrap();
    api.create(namespace("plain", json!({"security-level": "low"})))
        .unwrap();
    api.create(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "allow-web", "namespace": "orders"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
                 "ingress": [{"ports": [{"protocol": "TCP", "port": 8080}]}]}}),
    )
    .unwrap();
    let web_version =
        api.get(&NETWORK_POLICIES, "orders", "allow-web").unwrap()["metadata"]["resourceVersion"]
            .clone();
    let want = vec![
        "allow-dns".to_owned(),
        "allow-web".into(),
        "default-deny-all".into(),
    ];
    assert!(
        eventually(Duration::from_secs(5), || async {
            policies_in(&api, "orders").await == want
        })
        .await,
        "orders holds {:?}",
        policies_in(&api, "orders").await
    );
    let generated = api
        .get(&NETWORK_POLICIES, "orders", "default-deny-all")
        .unwrap();
    assert_eq!(
        generated["spec"],
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
    );
    assert_eq!(
        generated["metadata"]["managedFields"][0]["manager"],
        "palisade"
    );
    assert_eq!(
        generated["metadata"]["managedFields"][0]["operation"],
        "Apply"
    );
    let dns = api.get(&NETWORK_POLICIES, "orders", "allow-dns").unwrap();
    assert_eq!(
        dns["spec"]["egress"][0]["ports"],
        json!([{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}])
    );

    // Deleted: back.
    api.delete(&NETWORK_POLICIES, "orders", "allow-dns")
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            api.get(&NETWORK_POLICIES, "orders", "allow-dns").is_ok()
        })
        .await
    );
    // Edited into an allow-all: restored.
    let mut edited = api
        .get(&NETWORK_POLICIES, "orders", "default-deny-all")
        .unwrap();
    edited["spec"]["policyTypes"] = json!(["Ingress"]);
    edited["spec"]["ingress"] = json!([{}]);
    api.update("kubectl-edit", edited).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            api.get(&NETWORK_POLICIES, "orders", "default-deny-all")
                .unwrap()["spec"]
                == json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
        })
        .await,
        "{}",
        api.get(&NETWORK_POLICIES, "orders", "default-deny-all")
            .unwrap()
    );
    // The user's own policy is as it was written; the unlabelled namespace is untouched; the
    // user's pre-existing default-deny-all is theirs alone...
    let web = api.get(&NETWORK_POLICIES, "orders", "allow-web").unwrap();
    assert_eq!(
        web["metadata"]["managedFields"].as_array().unwrap().len(),
        1
    );
    assert_eq!(web["metadata"]["resourceVersion"], web_version);
    assert!(policies_in(&api, "plain").await.is_empty());
    let legacy = api
        .get(&NETWORK_POLICIES, "legacy", "default-deny-all")
        .unwrap();
    let managers: Vec<&str> = legacy["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["manager"].as_str().unwrap())
        .collect();
    assert_eq!(
        managers,
        ["kubectl-client-side-apply"],
        "Palisade touched a policy it did not create"
    );
    // ...but the namespace still gets the allow-dns it lacks.
    assert!(
        eventually(Duration::from_secs(5), || async {
            policies_in(&api, "legacy").await == ["allow-dns", "default-deny-all"]
        })
        .await
    );
    // The generated policies pass Palisade's own NetworkPolicy rules.
    let bundle = palisade::bundle::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
        &Default::default(),
    )
    .unwrap();
    let reports = palisade::cli::test::check(
        &bundle,
        palisade::zero_trust::generated_policies("orders")
            .into_iter()
            .map(|value| palisade::manifest::Document {
                origin: palisade::manifest::Origin {
                    file: "generated".into(),
                    document: 1,
                    item: None,
                },
                value,
            })
            .collect(),
        vec![namespace("orders", zero_trust_labels())],
    )
    .unwrap();
    for report in reports {
        assert!(report.violations.is_empty(), "{:?}", report.violations);
    }
    let metrics = server.metrics().await;
    assert!(
        metric(
            &metrics,
            "palisade_default_deny_applied_total{reason=\"restored\"}"
        )
        .unwrap()
            >= 1.0,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "palisade_leader"), Some(1.0));
}

/// What the API server sends for `kubectl apply -f` of a file holding a new opted-in Namespace and
/// a Deployment in it: the Namespace's review, the Namespace stored, then the Deployment's review
/// at once, before the generator has run.
async fn first_apply(api: &ApiServer, server: &TestServer, ns: &str) -> Value {
    let client = server.client();
    let mut labels = zero_trust_labels();
    labels["kubernetes.io/metadata.name"] = json!(ns);
    let ns_review = edited_review("validate-create-namespace.json", |v| {
        v["request"]["name"] = json!(ns);
        v["request"]["object"]["metadata"]["name"] = json!(ns);
        v["request"]["object"]["metadata"]["labels"] = labels.clone();
    });
    let rsp = client.review(Proto::Http2, "/validate", &ns_review).await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
    api.create(namespace(ns, zero_trust_labels())).unwrap();
    let deployment = edited_review("validate-create-deployment.json", |v| {
        in_namespace(v, ns);
        let pod = &mut v["request"]["object"]["spec"]["template"]["spec"];
        pod["securityContext"] =
            json!({"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}});
        pod["containers"][0]["securityContext"] = json!({"allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true, "runAsNonRoot": true, "capabilities": {"drop": ["ALL"]}});
        pod["containers"][0]["resources"] = json!({"limits": {"cpu": "250m", "memory": "64Mi"}});
    });
    client.review(Proto::Http2, "/validate", &deployment).await
}

#[tokio::test]
async fn a_namespace_and_its_deployment_applied_together_are_admitted_on_the_first_try() {
    let api = ApiServer::start().await;
    // What is tested is that the review waits for the generator, not how fast the generator is
    // on a loaded machine: a wait well above the default 3 s keeps the whole suite's load out.
    let server = palisade(&api, "replica-a", &["--generation-wait", "8s"]).await;
    let rsp = first_apply(&api, &server, "fresh").await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
    // It was admitted because the default-deny exists now, not on trust.
    assert_eq!(
        policies_in(&api, "fresh").await,
        ["allow-dns", "default-deny-all"]
    );
    // The review came before the generator had run, and waited for it.
    let metrics = server.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "palisade_generation_waits_total{result=\"allowed\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    // A bare Pod in the same apply: its /mutate needs the namespace's labels, and gets them.
    let ns_review = edited_review("validate-create-namespace.json", |v| {
        v["request"]["object"]["metadata"]["name"] = json!("bare");
    });
    let _ = server
        .client()
        .review(Proto::Http2, "/validate", &ns_review)
        .await;
    api.create(namespace("bare", zero_trust_labels())).unwrap();
    let rsp = create_pod(&server.client(), "bare").await;
    assert_eq!(rsp["allowed"], true, "{rsp}");

    // Generation off: the strict check, the same Deployment is refused.
    assert!(server.stop().await);
    let strict = palisade(&api, "replica-b", &["--generate-default-deny=false"]).await;
    let rsp = first_apply(&api, &strict, "strict").await;
    assert_eq!(rsp["allowed"], false);
    assert!(
        rsp["status"]["message"].as_str().unwrap().contains(LACKS),
        "{rsp}"
    );
}

async fn leads(server: &TestServer) -> bool {
    metric(&server.metrics().await, "palisade_leader") == Some(1.0)
}

async fn applied(server: &TestServer) -> f64 {
    let m = server.metrics().await;
    metric(
        &m,
        "palisade_default_deny_applied_total{reason=\"created\"}",
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn one_replica_leads_and_another_takes_over() {
    let api = ApiServer::start().await;
    let a = palisade(&api, "replica-a", &[]).await;
    assert!(eventually(Duration::from_secs(3), || leads(&a)).await);
    let b = palisade(&api, "replica-b", &[]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!leads(&b).await, "two leaders");
    let lease = api
        .get(&LEASES, "palisade-system", "palisade-leader")
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a");

    api.create(namespace("one", zero_trust_labels())).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            policies_in(&api, "one").await.len() == 2
        })
        .await
    );
    assert_eq!(applied(&a).await, 2.0);
    assert_eq!(applied(&b).await, 0.0, "the follower generated");

    // A's renewals fail: it stops within its renew deadline, B takes over within the lease
    // duration (2 s) of A's last renewal.
    api.fail_token("replica-a", true);
    let start = std::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(2), || async { !leads(&a).await }).await,
        "A kept leading"
    );
    assert!(
        eventually(Duration::from_secs(3), || leads(&b)).await,
        "B did not take over"
    );
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    api.create(namespace("two", zero_trust_labels())).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            policies_in(&api, "two").await.len() == 2
        })
        .await
    );
    assert_eq!(applied(&b).await, 2.0);
    let lease = api
        .get(&LEASES, "palisade-system", "palisade-leader")
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "replica-b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);

    // B stops: it releases the Lease, and A (healthy again) takes over at its next try.
    api.fail_token("replica-a", false);
    assert!(b.stop().await);
    let lease = api
        .get(&LEASES, "palisade-system", "palisade-leader")
        .unwrap();
    assert!(lease["spec"]["holderIdentity"].is_null(), "{lease}");
    assert!(
        eventually(Duration::from_secs(1), || leads(&a)).await,
        "A did not take over after the release"
    );
    let m = a.metrics().await;
    assert!(
        metric(&m, "palisade_leader_transitions_total").unwrap() >= 3.0,
        "{m}"
    );
}

#[tokio::test]
async fn an_outage_keeps_the_last_state_and_recovers() {
    let api = ApiServer::start().await;
    api.create(namespace("shop", json!({"security-level": "medium"})))
        .unwrap();
    api.create(default_deny("shop", "deny-everything")).unwrap();
    let server = palisade(&api, "replica-a", &["--generate-default-deny=false"]).await;
    assert!(!pod_denied_for_default_deny(&server, "shop").await);

    api.stop();
    // Reviews keep being answered from the last state.
    assert!(!pod_denied_for_default_deny(&server, "shop").await);
    let stale = eventually(Duration::from_secs(5), || async {
        metric(&server.metrics().await, "palisade_inventory_stale_seconds").unwrap_or(0.0) >= 1.0
    })
    .await;
    assert!(stale, "{}", server.metrics().await);
    assert_eq!(
        http_get(server.health, "/readyz").await.0,
        200,
        "an outage is not unreadiness"
    );
    // A change made while it is down is seen once it is back.
    api.delete(&NETWORK_POLICIES, "shop", "deny-everything")
        .unwrap();
    api.restart().await;
    assert!(
        eventually(Duration::from_secs(8), || pod_denied_for_default_deny(
            &server, "shop"
        ))
        .await,
        "the change made during the outage was not seen"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric(&server.metrics().await, "palisade_inventory_stale_seconds") == Some(0.0)
        })
        .await
    );

    // Down again, and its history compacted: the watch resumes with 410 Gone and relists; what
    // was deleted meanwhile is gone from the inventory too.
    api.create(default_deny("shop", "deny-again")).unwrap();
    assert!(
        eventually(Duration::from_secs(2), || async {
            !pod_denied_for_default_deny(&server, "shop").await
        })
        .await
    );
    api.stop();
    api.delete(&NETWORK_POLICIES, "shop", "deny-again").unwrap();
    api.compact();
    api.restart().await;
    assert!(
        eventually(Duration::from_secs(8), || pod_denied_for_default_deny(
            &server, "shop"
        ))
        .await,
        "the relist after 410 did not drop the deleted policy"
    );
    // Dropped watches resume too.
    api.drop_watches();
    api.create(default_deny("shop", "deny-third")).unwrap();
    assert!(
        eventually(Duration::from_secs(3), || async {
            !pod_denied_for_default_deny(&server, "shop").await
        })
        .await
    );
}

#[tokio::test]
async fn a_named_kubeconfig_that_is_broken_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("kubeconfig");
    std::fs::write(&broken, "apiVersion: v1\nkind: Config\nclusters: [\n").unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let args = [
        "palisade",
        "serve",
        "--kubeconfig",
        broken.to_str().unwrap(),
        "--policies",
        dir.path().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--health-listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    use clap::Parser;
    let palisade::cli::Command::Serve(serve) =
        palisade::cli::Cli::try_parse_from(args).unwrap().command
    else {
        unreachable!()
    };
    let error = format!(
        "{:#}",
        serve
            .load()
            .await
            .err()
            .expect("a broken kubeconfig must stop the start")
    );
    assert!(
        error.contains("cannot read the kubeconfig") && error.contains(broken.to_str().unwrap()),
        "{error}"
    );
}

fn audit_pod(ns: &str, name: &str, privileged: bool) -> Value {
    let security = if privileged {
        json!({"privileged": true})
    } else {
        json!({"runAsNonRoot": true, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}})
    };
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
        "spec": {"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "registry.example.com/c:1",
                "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}}, "securityContext": security}]}})
}

/// The leader audits what runs: pods listed from the API in pages (they are not synced),
/// Namespaces and NetworkPolicies from the live inventory; without the PolicyReport CRD it keeps
/// its metrics, with it it publishes one report per namespace and a cluster report with the
/// default-deny coverage, and each run replaces the last.
#[tokio::test]
async fn the_leader_audits_what_runs_into_policy_reports() {
    let api = ApiServer::start().await;
    api.create(namespace("shop", zero_trust_labels())).unwrap();
    api.create(namespace("legacy", zero_trust_labels()))
        .unwrap();
    api.create(namespace("bare", json!({}))).unwrap();
    api.create(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "default-deny-all", "namespace": "shop"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}),
    )
    .unwrap();
    api.create(audit_pod("shop", "debug", true)).unwrap();
    for i in 0..3 {
        api.create(audit_pod("shop", &format!("web-{i}"), false))
            .unwrap();
    }
    api.create(audit_pod("legacy", "old", false)).unwrap();
    api.create(audit_pod("kube-system", "exempt", true))
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "audit:\n  interval: 1s\n  pageSize: 2\n  maxResultsPerReport: 2\n",
    )
    .unwrap();
    let config = config.display().to_string();
    let server = palisade(
        &api,
        "audit-leader",
        &["--generate-default-deny", "false", "--config", &config],
    )
    .await;

    // Without the CRD: metrics only.
    let audited = eventually(Duration::from_secs(10), || async {
        metric(
            &server.metrics().await,
            "palisade_audit_runs_total{result=\"ok\"}",
        )
        .is_some_and(|n| n >= 1.0)
    })
    .await;
    let metrics = server.metrics().await;
    assert!(audited, "{metrics}");
    assert_eq!(
        metric(&metrics, "palisade_default_deny_coverage_ratio"),
        Some(0.5),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "palisade_namespaces_without_default_deny"),
        Some(1.0)
    );
    // Counted before exemptions: 6 pods, 8 namespaces, 1 NetworkPolicy.
    assert_eq!(
        metric(&metrics, "palisade_audit_objects"),
        Some(15.0),
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "palisade_audit_violations{constraint=\"pod-security-restricted\",action=\"deny\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    assert!(api.names(&NAMESPACES).contains(&"shop".to_owned()));
    let pages = api
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET /api/v1/pods?") && r.contains("continue="))
        .count();
    assert!(
        pages >= 2,
        "pods were listed in pages of 2: {:?}",
        api.requests()
    );

    // With the CRD: the reports.
    api.install_crd("wgpolicyk8s.io");
    let published = eventually(Duration::from_secs(10), || async {
        api.get(&CLUSTER_POLICY_REPORTS, "", "palisade-audit")
            .is_ok()
            && api.get(&POLICY_REPORTS, "legacy", "palisade-audit").is_ok()
    })
    .await;
    assert!(published, "reports: {:?}", api.names(&POLICY_REPORTS));
    let shop = api.get(&POLICY_REPORTS, "shop", "palisade-audit").unwrap();
    assert_eq!(
        shop["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "palisade"
    );
    assert_eq!(
        shop["metadata"]["managedFields"][0]["manager"],
        "palisade-audit"
    );
    assert_eq!(
        shop["summary"]["pass"], 4,
        "three clean pods and the NetworkPolicy: {shop}"
    );
    assert_eq!(shop["summary"]["fail"], 3, "{shop}");
    let results = shop["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "bounded by maxResultsPerReport");
    assert!(
        shop["metadata"]["annotations"]["palisade.dev/results-omitted"]
            .as_str()
            .unwrap()
            .starts_with("1 of 3")
    );
    assert!(
        results
            .iter()
            .all(|r| r["resources"][0]["name"] == "debug" && r["result"] == "fail"),
        "{shop}"
    );
    let cluster = api
        .get(&CLUSTER_POLICY_REPORTS, "", "palisade-audit")
        .unwrap();
    let policies: Vec<(&str, &str)> = cluster["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["policy"].as_str().unwrap(),
                r["resources"][0]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        policies.contains(&("default-deny-coverage", "legacy")),
        "{policies:?}"
    );
    assert!(
        policies.contains(&("namespace-zero-trust-labels", "bare")),
        "{policies:?}"
    );
    assert!(!policies.iter().any(|(_, n)| *n == "shop"), "{policies:?}");
    assert!(
        api.get(&POLICY_REPORTS, "kube-system", "palisade-audit")
            .is_err(),
        "exempt namespaces are not audited"
    );

    // A second run replaces the reports: the privileged pod goes, the legacy pod goes.
    api.delete(&PODS, "shop", "debug").unwrap();
    api.delete(&PODS, "legacy", "old").unwrap();
    let replaced = eventually(Duration::from_secs(10), || async {
        api.get(&POLICY_REPORTS, "shop", "palisade-audit")
            .is_ok_and(|r| r["summary"]["fail"] == 0)
            && api
                .get(&POLICY_REPORTS, "legacy", "palisade-audit")
                .is_err()
    })
    .await;
    assert!(
        replaced,
        "{:?}",
        api.get(&POLICY_REPORTS, "shop", "palisade-audit")
    );
    let report_pages = api
        .requests()
        .iter()
        .filter(|r| {
            r.starts_with("GET /apis/wgpolicyk8s.io/v1alpha2/policyreports?")
                && r.contains("limit=2")
        })
        .count();
    assert!(
        report_pages >= 1,
        "the audit's own reports are listed in pages (of 2 here) too: {:?}",
        api.requests()
    );
    let shop = api.get(&POLICY_REPORTS, "shop", "palisade-audit").unwrap();
    assert_eq!(shop["results"], json!([]));
    assert_eq!(
        api.names(&POLICY_REPORTS),
        ["shop/palisade-audit"],
        "one report per namespace, never duplicated"
    );
}

/// The Gatekeeper CRDs of `manifests/base/gatekeeper-crds.yaml`, applied as `kubectl apply` would.
pub(crate) fn install_gatekeeper_crds(api: &ApiServer) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base/gatekeeper-crds.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    for doc in palisade::manifest::parse_str(&text, Path::new("gatekeeper-crds.yaml")).unwrap() {
        api.apply("kubectl", doc.value, false).unwrap();
    }
}

/// The constraint `no-banned` of [`banned_label_template`]'s kind: Pods may not carry `banned`.
fn no_banned_constraint() -> Value {
    json!({"apiVersion": "constraints.gatekeeper.sh/v1beta1", "kind": "K8sBannedLabel",
           "metadata": {"name": "no-banned"},
           "spec": {"match": {"kinds": [{"apiGroups": [""], "kinds": ["Pod"]}]},
                    "parameters": {"label": "banned"}}})
}

fn banned_label_template(name: &str, kind: &str, rego_extra: &str) -> Value {
    json!({
        "apiVersion": "templates.gatekeeper.sh/v1beta1",
        "kind": "ConstraintTemplate",
        "metadata": {"name": name},
        "spec": {
            "crd": {"spec": {"names": {"kind": kind}, "validation": {"openAPIV3Schema": {
                "type": "object", "properties": {"label": {"type": "string"}}}}}},
            "targets": [{"target": "admission.k8s.gatekeeper.sh", "rego": format!(
                "package {name}\n\nviolation[{{\"msg\": msg}}] {{\n  input.review.object.metadata.labels[input.parameters.label]\n  msg := sprintf(\"label %v is banned\", [input.parameters.label])\n}}\n{rego_extra}")}],
        },
    })
}

async fn review_labelled_pod(server: &TestServer) -> Value {
    let body = edited_review("validate-create-pod.json", |r| {
        r["request"]["object"]["metadata"]["labels"]["banned"] = json!("yes");
    });
    server
        .client()
        .review(Proto::Http2, "/validate", &body)
        .await
}

/// The field managers of an object's `/status`.
fn status_managers(object: &Value) -> Vec<&str> {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["subresource"] == "status")
        .filter_map(|m| m["manager"].as_str())
        .collect()
}

/// Whether the server denies the labelled Pod by the cluster's `no-banned` constraint.
async fn denies_banned(server: &TestServer) -> bool {
    let answer = review_labelled_pod(server).await;
    answer["allowed"] == false
        && answer["status"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("[no-banned] label banned is banned")
}

fn by_pod_ids(object: &Value) -> Vec<String> {
    let mut ids: Vec<String> = object["status"]["byPod"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|e| e["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// Against the API stand-in: ConstraintTemplates and Constraints applied to the cluster are
/// enforced, their constraint CRD follows the template, a broken template reports its error
/// in its status without disturbing the others, and each replica writes its own status entry.
#[tokio::test]
async fn policies_applied_with_kubectl_are_enforced_and_reported() {
    let api = ApiServer::start().await;
    install_gatekeeper_crds(&api);
    let templates = api
        .defined("templates.gatekeeper.sh", "constrainttemplates", "v1")
        .expect("the ConstraintTemplate CRD serves v1");
    let crds = CRDS;
    // The reviewed Pod's namespace exists: a denial in a namespace not seen yet would be held
    // back by the generation gate until the request's deadline.
    api.create(namespace("payments", json!({}))).unwrap();
    // What already runs: one Pod with the label the constraint will ban, one without.
    let mut running = audit_pod("payments", "labelled", false);
    running["metadata"]["labels"] = json!({"banned": "yes"});
    api.create(running).unwrap();
    api.create(audit_pod("payments", "plain", false)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "audit:\n  interval: 1s\n").unwrap();
    let config = config.display().to_string();
    let flags = ["--generate-default-deny", "false", "--config", &config];
    let a = palisade(&api, "replica-a", &flags).await;
    let b = palisade(&api, "replica-b", &flags).await;

    // A template (applied as v1beta1) gets its constraint CRD, with its parameter schema.
    api.apply(
        "kubectl",
        banned_label_template("k8sbannedlabel", "K8sBannedLabel", ""),
        false,
    )
    .unwrap();
    let crd_name = "k8sbannedlabel.constraints.gatekeeper.sh";
    assert!(
        eventually(Duration::from_secs(10), || async {
            api.get(&crds, "", crd_name).is_ok()
        })
        .await,
        "no constraint CRD"
    );
    let crd = api.get(&crds, "", crd_name).unwrap();
    assert_eq!(crd["spec"]["names"]["kind"], "K8sBannedLabel");
    assert_eq!(crd["spec"]["scope"], "Cluster");
    let stored: Vec<&Value> = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["storage"] == true)
        .collect();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["name"], "v1beta1");
    assert_eq!(
        stored[0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["parameters"],
        json!({"type": "object", "properties": {"label": {"type": "string"}}})
    );
    assert_eq!(
        crd["metadata"]["ownerReferences"][0]["name"],
        "k8sbannedlabel"
    );
    // `kubectl get k8sbannedlabel` shows the action and the audit's count, as with Gatekeeper.
    let columns: Vec<(&str, &str)> = stored[0]["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["jsonPath"].as_str().unwrap()))
        .collect();
    assert_eq!(
        columns,
        [
            ("enforcement-action", ".spec.enforcementAction"),
            ("total-violations", ".status.totalViolations")
        ]
    );

    // Each replica reports on the template: created, no errors, the generation it saw.
    let reported = eventually(Duration::from_secs(10), || async {
        let t = api.get(&templates, "", "k8sbannedlabel").unwrap();
        t["status"]["created"] == true && by_pod_ids(&t) == ["replica-a", "replica-b"]
    })
    .await;
    let t = api.get(&templates, "", "k8sbannedlabel").unwrap();
    assert!(reported, "{:#}", t["status"]);
    for entry in t["status"]["byPod"].as_array().unwrap() {
        assert_eq!(entry["observedGeneration"], 1);
        assert_eq!(entry["errors"], json!([]));
        assert_eq!(entry["templateUID"], t["metadata"]["uid"]);
    }
    let managers = status_managers(&t);
    assert_eq!(
        managers.len(),
        2,
        "one status manager per replica: {managers:?}"
    );

    // A constraint is enforced by every replica within a second.
    let constraints = api
        .defined("constraints.gatekeeper.sh", "k8sbannedlabel", "v1beta1")
        .expect("the constraint CRD serves v1beta1");
    let before = review_labelled_pod(&a).await;
    assert!(
        !before["status"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("[no-banned]")
    );
    let applied_at = std::time::Instant::now();
    api.apply("kubectl", no_banned_constraint(), false).unwrap();
    for server in [&a, &b] {
        let enforced = eventually(Duration::from_secs(5), || async {
            review_labelled_pod(server).await["status"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("[no-banned] label banned is banned")
        })
        .await;
        assert!(
            enforced,
            "not enforced: {}",
            review_labelled_pod(server).await
        );
    }
    assert!(
        applied_at.elapsed() < Duration::from_secs(1),
        "took {:?}",
        applied_at.elapsed()
    );
    let status = eventually(Duration::from_secs(10), || async {
        let c = api.get(&constraints, "", "no-banned").unwrap();
        by_pod_ids(&c) == ["replica-a", "replica-b"]
            && c["status"]["byPod"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["enforced"] == true)
    })
    .await;
    assert!(
        status,
        "{:#}",
        api.get(&constraints, "", "no-banned").unwrap()["status"]
    );

    // The leader's audit writes what runs against it into the constraint's status, beside the
    // replicas' entries, as Gatekeeper's audit does.
    let audited = eventually(Duration::from_secs(10), || async {
        api.get(&constraints, "", "no-banned").unwrap()["status"]["totalViolations"] == 1
    })
    .await;
    let c = api.get(&constraints, "", "no-banned").unwrap();
    assert!(audited, "{:#}", c["status"]);
    assert_eq!(
        c["status"]["violations"],
        json!([{"enforcementAction": "deny", "group": "", "version": "v1", "kind": "Pod",
                "namespace": "payments", "name": "labelled", "message": "label banned is banned"}])
    );
    let stamp = c["status"]["auditTimestamp"].as_str().unwrap_or_default();
    assert!(
        time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
            .is_ok_and(|t| t.nanosecond() == 0),
        "auditTimestamp is RFC 3339 in whole seconds: {stamp:?}"
    );
    assert_eq!(by_pod_ids(&c), ["replica-a", "replica-b"], "byPod kept");
    let managers = status_managers(&c);
    assert!(managers.contains(&"palisade-audit"), "{managers:?}");
    // The next run sees the Pod fixed.
    api.delete(&PODS, "payments", "labelled").unwrap();
    let cleared = eventually(Duration::from_secs(10), || async {
        let c = api.get(&constraints, "", "no-banned").unwrap();
        c["status"]["totalViolations"] == 0 && c["status"]["violations"] == json!([])
    })
    .await;
    assert!(
        cleared,
        "{:#}",
        api.get(&constraints, "", "no-banned").unwrap()["status"]
    );

    // A broken template reports its error and disturbs nothing.
    api.apply(
        "kubectl",
        banned_label_template("k8sbroken", "K8sBroken", "broken := {\n"),
        false,
    )
    .unwrap();
    let errored = eventually(Duration::from_secs(10), || async {
        let t = api.get(&templates, "", "k8sbroken").unwrap();
        by_pod_ids(&t) == ["replica-a", "replica-b"]
            && t["status"]["byPod"].as_array().unwrap().iter().all(|e| {
                e["errors"][0]["code"] == "ingest_error"
                    && e["errors"][0]["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains("k8sbroken.rego")
                    && e["errors"][0]["location"]
                        .as_str()
                        .is_some_and(|l| l.starts_with("k8sbroken.rego:"))
            })
    })
    .await;
    assert!(
        errored,
        "{:#}",
        api.get(&templates, "", "k8sbroken").unwrap()["status"]
    );
    assert!(
        api.get(&crds, "", "k8sbroken.constraints.gatekeeper.sh")
            .is_err()
    );
    assert!(
        review_labelled_pod(&a).await["status"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("[no-banned]")
    );

    // Deleting the template removes its CRD, its constraints and the enforcement.
    api.delete(&templates, "", "k8sbannedlabel").unwrap();
    let gone = eventually(Duration::from_secs(10), || async {
        api.get(&crds, "", crd_name).is_err()
            && !review_labelled_pod(&a).await["status"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("[no-banned]")
    })
    .await;
    assert!(gone, "the CRD or the enforcement outlived the template");
    a.stop().await;
    b.stop().await;
}

/// Against the API stand-in: a replica is not ready until it has listed the policies applied
/// to the cluster, the constraints of every template included, so that its first admitted
/// review already enforces them; a kind it may not read keeps it unready, saying why.
#[tokio::test]
async fn a_replica_is_ready_only_once_it_knows_the_cluster_policies() {
    let api = ApiServer::start().await;
    install_gatekeeper_crds(&api);
    api.create(namespace("payments", json!({}))).unwrap();
    api.apply(
        "kubectl",
        banned_label_template("k8sbannedlabel", "K8sBannedLabel", ""),
        false,
    )
    .unwrap();
    // A first replica creates the constraint CRD; the constraint is applied with kubectl.
    let a = palisade(&api, "replica-a", &["--generate-default-deny", "false"]).await;
    let defined = eventually(Duration::from_secs(10), || async {
        api.defined("constraints.gatekeeper.sh", "k8sbannedlabel", "v1beta1")
            .is_some()
    })
    .await;
    assert!(defined, "no constraint CRD");
    api.apply("kubectl", no_banned_constraint(), false).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || denies_banned(&a)).await,
        "the first replica does not enforce the constraint"
    );

    // A second replica that may not read this kind of constraint stays unready, and says why.
    assert!(a.stop().await);
    let path = "/apis/constraints.gatekeeper.sh/v1beta1/k8sbannedlabel";
    let asked = || api.requests().iter().filter(|r| r.contains(path)).count();
    let before = asked();
    api.forbid("constraints.gatekeeper.sh", "k8sbannedlabel", true);
    let b = start_palisade(&api, "replica-b", &["--generate-default-deny", "false"]).await;
    let why = "not ready: the policies applied to the cluster are not listed yet";
    let waiting = eventually(Duration::from_secs(10), || async {
        http_get(b.health, "/readyz").await == (503, format!("{why}\n"))
    })
    .await;
    assert!(waiting, "{:?}", http_get(b.health, "/readyz").await);
    // Its watch keeps retrying; it stays unready meanwhile.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(http_get(b.health, "/readyz").await.0, 503);
    }
    let retried = asked() - before;
    assert!(
        retried >= 2,
        "the forbidden list is not retried: {retried} requests"
    );

    // Allowed again: ready, and the very first review it answers enforces the constraint.
    api.forbid("constraints.gatekeeper.sh", "k8sbannedlabel", false);
    let ready = eventually(Duration::from_secs(10), || async {
        http_get(b.health, "/readyz").await.0 == 200
    })
    .await;
    assert!(ready, "{:?}", http_get(b.health, "/readyz").await);
    assert!(
        denies_banned(&b).await,
        "ready before it enforces the cluster's constraint"
    );
}

/// Least privilege, the other way round: the stand-in holds every test to
/// manifests/base/rbac.yaml (so Palisade needs no more), and here one replica does everything
/// Palisade does in a cluster until every (rule, resource, verb) the manifests grant has been
/// used (so they grant no more than Palisade needs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_permission_the_shipped_rbac_grants_is_used() {
    let api = ApiServer::start().await;
    install_gatekeeper_crds(&api);
    api.install_crd("wgpolicyk8s.io");
    crate::certmanager::apply_webhook_configurations(&api);
    api.create(namespace("palisade-system", json!({}))).unwrap();
    api.create(namespace("shop", zero_trust_labels())).unwrap();
    api.create(namespace("legacy", json!({}))).unwrap();
    api.create(audit_pod("shop", "debug", true)).unwrap();
    api.create(audit_pod("legacy", "old", true)).unwrap();
    // The certificates' directory, which the fake kubelet fills from the Secret.
    let certs = tempfile::tempdir().unwrap();
    let kubelet = crate::certmanager::fake_kubelet(api.clone(), certs.path().to_path_buf());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "audit:\n  interval: 1s\n").unwrap();
    let config = config.display().to_string();
    let server = start_palisade_in(
        &api,
        "everything",
        certs,
        &[
            "--config",
            &config,
            "--manage-certs",
            "--cert-check-interval",
            "200ms",
        ],
    )
    .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            http_get(server.health, "/readyz").await.0 == 200
        })
        .await
    );
    // Generation, then a rule someone added to a generated policy, which Palisade removes.
    assert!(
        eventually(Duration::from_secs(10), || async {
            policies_in(&api, "shop").await.len() == 2
        })
        .await
    );
    let mut edited = api
        .get(&NETWORK_POLICIES, "shop", "default-deny-all")
        .unwrap();
    edited["spec"]["ingress"] = json!([{}]);
    edited["spec"]["policyTypes"] = json!(["Ingress", "Egress"]);
    api.update("someone", edited).unwrap();
    // A template and its constraint applied with kubectl, then the template deleted.
    api.apply(
        "kubectl",
        banned_label_template("k8sbannedlabel", "K8sBannedLabel", ""),
        false,
    )
    .unwrap();
    let constraint_crd_served = eventually(Duration::from_secs(10), || async {
        api.defined("constraints.gatekeeper.sh", "k8sbannedlabel", "v1beta1")
            .is_some()
    })
    .await;
    assert!(constraint_crd_served);
    api.apply("kubectl", no_banned_constraint(), false).unwrap();
    // The audit reports, then a namespace's last violating pod goes and its report with it.
    assert!(
        eventually(Duration::from_secs(10), || async {
            api.get(&POLICY_REPORTS, "legacy", "palisade-audit").is_ok()
        })
        .await
    );
    api.delete(&PODS, "legacy", "old").unwrap();
    // Once the audit has written the constraint's status, the template goes, and its
    // constraint CRD with it.
    let constraints = api
        .defined("constraints.gatekeeper.sh", "k8sbannedlabel", "v1beta1")
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            api.get(&constraints, "", "no-banned")
                .is_ok_and(|c| c["status"]["totalViolations"].is_number())
        })
        .await
    );
    let templates = api
        .defined("templates.gatekeeper.sh", "constrainttemplates", "v1")
        .unwrap();
    api.delete(&templates, "", "k8sbannedlabel").unwrap();
    let unused = eventually(Duration::from_secs(15), || async {
        api.rbac_unused().is_empty()
    })
    .await;
    assert!(
        unused,
        "manifests/base/rbac.yaml grants what Palisade never used: {:#?}",
        api.rbac_unused()
    );
    drop(server);
    kubelet.abort();
}
