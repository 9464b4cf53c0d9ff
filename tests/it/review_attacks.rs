//! A hostile review of break-glass grants and the pod paths (issue 28), over HTTPS as the API
//! server sends them: a tenant who may update what an allow-listed person approved, but is not
//! on the allow-list, and objects no API server would send.

use std::time::Duration;

use crate::common::rollout::{
    BREAK_GLASS, controller_pod, glass, glass_deployment, pod_review, start,
};
use crate::common::{decoded_patch, mutated, send};
use serde_json::{Value, json};

/// `review` as an UPDATE by `user` (not on the allow-list) of the object it holds, changed by
/// `change`.
fn update_by(review: &Value, user: &str, change: impl FnOnce(&mut Value)) -> Value {
    let mut update = review.clone();
    update["request"]["operation"] = json!("UPDATE");
    update["request"]["userInfo"] = json!({"username": user, "groups": ["system:authenticated"]});
    update["request"]["oldObject"] = review["request"]["object"].clone();
    change(&mut update["request"]["object"]);
    update
}

/// A change to an object, named for the failure message.
type Change = (&'static str, fn(&mut Value));

fn message(rsp: &Value) -> &str {
    rsp["status"]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_tenant_cannot_run_her_code_in_an_approved_privileged_deployment() {
    let (server, _) = start(BREAK_GLASS, &[]).await;
    let client = server.client();
    let approved = mutated(
        &client,
        &glass_deployment("alice", glass("INC-21", Duration::from_secs(600))),
    )
    .await;
    assert_eq!(send(&client, "/validate", &approved).await["allowed"], true);

    // Her ConfigMap under the token volume's name over /bin, her claim over /usr/local/bin, the
    // control plane by name, out of the mesh by label: each keeps annotations and grant.
    let changes: [Change; 4] = [
        ("projected ConfigMap over /bin", |o| {
            let spec = &mut o["spec"]["template"]["spec"];
            spec["volumes"] = json!([{"name": "kube-api-access-pwn",
                "projected": {"sources": [{"configMap": {"name": "evil", "items": [{"key": "sh", "path": "sh", "mode": 493}]}}]}}]);
            spec["containers"][0]["volumeMounts"] =
                json!([{"name": "kube-api-access-pwn", "mountPath": "/bin"}]);
        }),
        ("claim over /usr/local/bin", |o| {
            let spec = &mut o["spec"]["template"]["spec"];
            spec["volumes"] =
                json!([{"name": "data", "persistentVolumeClaim": {"claimName": "mine"}}]);
            spec["containers"][0]["volumeMounts"] =
                json!([{"name": "data", "mountPath": "/usr/local/bin"}]);
        }),
        ("nodeName", |o| {
            o["spec"]["template"]["spec"]["nodeName"] = json!("control-plane-1");
        }),
        ("mesh opt-out label", |o| {
            o["spec"]["template"]["metadata"]["labels"]["sidecar.istio.io/inject"] = json!("false");
        }),
    ];
    for (what, change) in changes {
        let update = mutated(&client, &update_by(&approved, "mallory", change)).await;
        let rsp = send(&client, "/validate", &update).await;
        assert_eq!(rsp["allowed"], false, "{what}: {rsp}");
        assert!(
            message(&rsp).starts_with("mallory may not change what was approved under break-glass"),
            "{what}: {rsp}"
        );
        // The pods its controller would make of it are not honoured either (with the token
        // volume the API server adds beside hers). A pod's nodeName is the scheduler's, left
        // out of a pod's grant: the template, where a tenant could write it, holds it back.
        if what == "nodeName" {
            continue;
        }
        let mut pod = controller_pod(&update);
        let template = &update["request"]["object"]["spec"]["template"]["spec"];
        let spec = &mut pod["request"]["object"]["spec"];
        for (list, at) in [
            ("volumes", "/volumes"),
            ("volumeMounts", "/containers/0/volumeMounts"),
        ] {
            if let Some(hers) = template.pointer(at).and_then(Value::as_array) {
                let ours = spec.pointer_mut(at).unwrap().as_array_mut().unwrap();
                ours.extend(hers.iter().cloned());
                assert!(ours.len() > 1, "{list}");
            }
        }
        let rsp = send(&client, "/validate", &pod).await;
        assert_eq!(rsp["allowed"], false, "{what}: {rsp}");
        assert!(
            message(&rsp).contains("break-glass grant does not match"),
            "{what}: {rsp}"
        );
    }
}

#[tokio::test]
async fn a_break_glassed_pod_keeps_its_image_and_labels_against_anyone_else() {
    let (server, _) = start(BREAK_GLASS, &[]).await;
    let client = server.client();
    let created = mutated(
        &client,
        &pod_review(
            "shop",
            "alice",
            &[],
            glass("INC-22", Duration::from_secs(600)),
        ),
    )
    .await;
    assert_eq!(send(&client, "/validate", &created).await["allowed"], true);
    let changes: [Change; 2] = [
        ("image", |o| {
            o["spec"]["containers"][0]["image"] = json!("registry.example.com/miner:latest");
        }),
        ("label", |o| {
            o["metadata"]["labels"]["app"] = json!("payments");
        }),
    ];
    for (what, change) in changes {
        let rsp = send(
            &client,
            "/validate",
            &update_by(&created, "mallory", change),
        )
        .await;
        assert_eq!(rsp["allowed"], false, "{what}: {rsp}");
        assert!(
            message(&rsp).starts_with("mallory may not change what was approved"),
            "{what}: {rsp}"
        );
    }
    // Unchanged, it is still what alice approved.
    let same = update_by(&created, "mallory", |_| {});
    let rsp = send(&client, "/validate", &same).await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
}

/// No API server sends these; the webhook must answer each (no panic, no dropped connection)
/// and never honour break-glass for someone not on the list.
#[tokio::test]
async fn malformed_pod_templates_are_answered_and_never_honoured() {
    let (server, _) = start(BREAK_GLASS, &[]).await;
    let client = server.client();
    let glass = glass("INC-23", Duration::from_secs(600));
    let templates = [
        Value::Null,
        json!([]),
        json!("template"),
        json!(7),
        json!({"metadata": []}),
        json!({"metadata": {"annotations": []}}),
        json!({"metadata": {"annotations": {"palisade.dev/break-glass": 5}}}),
        json!({"metadata": {"annotations": glass.clone()}, "spec": "x"}),
        json!({"metadata": {"annotations": glass.clone()}, "spec": {"containers": "x", "volumes": {"a": 1}}}),
        json!({"metadata": {"annotations": glass.clone(), "labels": []}, "spec": {"affinity": [], "tolerations": [1, null]}}),
    ];
    for template in templates {
        for user in ["alice", "mallory"] {
            let mut review = glass_deployment(user, json!({}));
            review["request"]["object"]["spec"]["template"] = template.clone();
            for path in ["/mutate", "/validate"] {
                let rsp = send(&client, path, &review).await;
                assert!(
                    rsp["allowed"].is_boolean(),
                    "{path} {user} {template}: {rsp}"
                );
                if user == "mallory" && path == "/validate" {
                    assert!(
                        rsp["warnings"]
                            .as_array()
                            .is_none_or(|w| w.iter().all(|w| !w
                                .as_str()
                                .unwrap_or_default()
                                .starts_with("break-glass by"))),
                        "{template}: {rsp}"
                    );
                }
            }
        }
    }
    // Still serving.
    let ok = glass_deployment("alice", json!({}));
    assert!(send(&client, "/validate", &ok).await["allowed"].is_boolean());
}

/// The mutating webhook is not sent a Pod's UPDATE, so an allow-listed person's change of a
/// break-glassed pod gets no new grant: the pod keeps the grant of what was approved before,
/// and anyone may change it back to that.
#[tokio::test]
async fn an_approved_change_of_a_pod_cannot_be_rolled_back_by_anyone_else() {
    let (server, _) = start(BREAK_GLASS, &[]).await;
    let client = server.client();
    let created = mutated(
        &client,
        &pod_review(
            "shop",
            "alice",
            &[],
            glass("INC-24", Duration::from_secs(600)),
        ),
    )
    .await;
    assert_eq!(send(&client, "/validate", &created).await["allowed"], true);
    // alice replaces the image; /mutate stamps a new grant (and nothing else: the mutators do
    // not run on a Pod's update).
    let mut fixed = update_by(&created, "alice", |o| {
        o["spec"]["containers"][0]["image"] = json!("registry.example.com/debug:patched");
    });
    fixed["request"]["userInfo"] = json!({"username": "alice", "groups": []});
    let rsp = send(&client, "/mutate", &fixed).await;
    let patch = decoded_patch(&rsp);
    assert_eq!(patch.len(), 1, "{patch:?}");
    assert_eq!(
        patch[0]["path"],
        "/metadata/annotations/palisade.dev~1break-glass-grant"
    );
    let fixed = mutated(&client, &fixed).await;
    assert_eq!(send(&client, "/validate", &fixed).await["allowed"], true);
    // mallory puts the old image back, keeping annotations and the old grant.
    let back = update_by(&fixed, "mallory", |o| {
        o["spec"]["containers"][0]["image"] =
            created["request"]["object"]["spec"]["containers"][0]["image"].clone();
    });
    let rsp = send(&client, "/validate", &back).await;
    assert_eq!(rsp["allowed"], false, "{rsp}");
}
