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

/// ValidatingAdmissionPolicies and bindings: served in admissionregistration.k8s.io/v1 as by
/// Kubernetes 1.30 and later, and absent as before (the v1.25 server the captures come from
/// served only the two webhook configurations in that group version). No capture holds a
/// discovery document or these kinds: the answers checked here are the real server's forms
/// that the captures do show (a Status per error, a 404 NotFound naming
/// `<plural>.<group> "<name>"`), and for a resource not served, the real server's fixed
/// "the server could not find the requested resource".
#[tokio::test]
async fn admission_policies_are_served_as_from_1_30_and_absent_before() {
    let api = ApiServer::start().await;
    api.enforce_rbac(false);
    let client = kube_client(&api, "admin").await;
    let group = "/apis/admissionregistration.k8s.io/v1";
    let resources = |doc: &str| -> Vec<(String, bool)> {
        let doc: Value = serde_json::from_str(doc).unwrap();
        doc["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["name"].as_str().unwrap().to_owned(),
                    r["namespaced"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    let (status, doc) = send(&client, "GET", group, None, String::new()).await;
    assert_eq!(status, 200);
    let served = resources(&doc);
    for plural in [
        "validatingadmissionpolicies",
        "validatingadmissionpolicybindings",
    ] {
        assert!(served.contains(&(plural.to_owned(), false)), "{served:?}");
    }
    let policy = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "p", "labels": {"app.kubernetes.io/managed-by": "palisade"}},
        "spec": {"validations": [{"expression": "true"}]}});
    let path = format!("{group}/validatingadmissionpolicies");
    let (status, applied) = send(
        &client,
        "PATCH",
        &format!("{path}/p?fieldManager=palisade"),
        Some("application/apply-patch+yaml"),
        policy.to_string(),
    )
    .await;
    assert_eq!(status, 201, "{applied}");
    let applied: Value = serde_json::from_str(&applied).unwrap();
    assert_eq!(
        applied["metadata"]["managedFields"][0]["manager"],
        "palisade"
    );
    assert_eq!(
        applied["metadata"]["managedFields"][0]["operation"],
        "Apply"
    );
    assert_eq!(applied["metadata"]["generation"], 1);
    let list = |selector: &'static str| {
        let client = client.clone();
        let path = format!("{path}?labelSelector={selector}");
        async move {
            let (status, body) = send(&client, "GET", &path, None, String::new()).await;
            assert_eq!(status, 200, "{body}");
            let body: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["kind"], "ValidatingAdmissionPolicyList");
            body["items"].as_array().unwrap().len()
        }
    };
    assert_eq!(list("app.kubernetes.io%2Fmanaged-by%3Dpalisade").await, 1);
    assert_eq!(list("app.kubernetes.io%2Fmanaged-by%3Dsomeone").await, 0);
    // A delete whose precondition names another object (or version) is refused.
    let (status, refused) = send(
        &client,
        "DELETE",
        &format!("{path}/p"),
        Some("application/json"),
        json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": "another"}})
            .to_string(),
    )
    .await;
    assert_eq!(status, 409, "{refused}");
    let refused: Value = serde_json::from_str(&refused).unwrap();
    assert_eq!(refused["reason"], "Conflict");
    let (status, _) = send(
        &client,
        "DELETE",
        &format!("{path}/p"),
        Some("application/json"),
        json!({"preconditions": {"uid": applied["metadata"]["uid"],
            "resourceVersion": applied["metadata"]["resourceVersion"]}})
        .to_string(),
    )
    .await;
    assert_eq!(status, 200);
    let (status, gone) = send(&client, "GET", &format!("{path}/p"), None, String::new()).await;
    assert_eq!(status, 404);
    let gone: Value = serde_json::from_str(&gone).unwrap();
    assert_eq!(gone["reason"], "NotFound");
    assert_eq!(
        gone["message"],
        "validatingadmissionpolicies.admissionregistration.k8s.io \"p\" not found"
    );

    // Before 1.30: the group version serves the webhook configurations only, and every call on
    // the policies is the 404 of a resource not served, whatever the verb.
    api.serve_validating_admission_policies(false);
    let (status, doc) = send(&client, "GET", group, None, String::new()).await;
    assert_eq!(status, 200);
    let names: Vec<String> = resources(&doc).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "validatingwebhookconfigurations",
            "mutatingwebhookconfigurations"
        ]
    );
    for (method, path, content_type, body) in [
        ("GET", path.clone(), None, String::new()),
        ("GET", format!("{path}/p"), None, String::new()),
        (
            "PATCH",
            format!("{path}/p?fieldManager=palisade&force=true"),
            Some("application/apply-patch+yaml"),
            policy.to_string(),
        ),
        ("DELETE", format!("{path}/p"), None, String::new()),
        (
            "GET",
            format!("{group}/validatingadmissionpolicybindings?watch=1"),
            None,
            String::new(),
        ),
    ] {
        let (status, answer) = send(&client, method, &path, content_type, body).await;
        assert_eq!(status, 404, "{method} {path}: {answer}");
        let answer: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(
            answer,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "the server could not find the requested resource", "reason": "NotFound",
                "details": {}, "code": 404}),
            "{method} {path}"
        );
    }
}
