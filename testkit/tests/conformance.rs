//! The stand-in checked against a real API server: the requests a real kube-apiserver v1.25
//! answered (`tests/data/apiserver/`) replayed in order against the stand-in, through the real
//! `kube` client, comparing status codes and the shapes of the answers.

use std::time::Duration;

use http_body_util::BodyExt;
use palisade_testkit::apiserver::{ApiServer, LEASES, NAMESPACES, NETWORK_POLICIES};
use palisade_testkit::cluster::kube_client;
use palisade_testkit::fixtures::repo_path;
use serde_json::{Value, json};

struct Capture {
    method: String,
    path: String,
    content_type: Option<String>,
    body: String,
    status: u16,
    answer: String,
}

fn capture(name: &str) -> Capture {
    let dir = repo_path("tests/data/apiserver");
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
