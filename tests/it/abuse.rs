//! Tenants trying to slip past the webhook, over HTTPS with the bundled policies: names made to
//! look like exempt namespaces, a label imitating `kubernetes.io/metadata.name`, identities made
//! to look like the break-glass allow-list, and dry-run requests. (Look-alike and nested
//! break-glass annotation keys are in rollout.rs.)

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::rollout::{BREAK_GLASS, glass, pod_review, start};
use crate::common::*;

fn denied_by_pod_security(rsp: &Value) -> bool {
    rsp["allowed"] == false
        && rsp["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("[pod-security-restricted]"))
}

#[tokio::test]
async fn only_the_exact_namespace_name_is_exempt() {
    let (server, _) = start("", &[]).await;
    let client = server.client();
    // A privileged pod: exempt in kube-system, denied anywhere else.
    let rsp = send(
        &client,
        "/validate",
        &pod_review("kube-system", "bob", &[], json!({})),
    )
    .await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
    for namespace in [
        "kube-system-x",
        "x-kube-system",
        "Kube-System",
        "kube\u{2010}system",
        "kube-system ",
        " kube-system",
        "kube-system\u{200b}",
        "kube-systen",
        "palisade-system-2",
    ] {
        let rsp = send(
            &client,
            "/validate",
            &pod_review(namespace, "bob", &[], json!({})),
        )
        .await;
        assert!(denied_by_pod_security(&rsp), "{namespace:?}: {rsp}");
    }
    // The namespace is the one the API server puts on the request, not the object's own field.
    let mut review = pod_review("shop", "bob", &[], json!({}));
    review["request"]["object"]["metadata"]["namespace"] = json!("kube-system");
    let rsp = send(&client, "/validate", &review).await;
    assert!(denied_by_pod_security(&rsp), "{rsp}");
}

#[tokio::test]
async fn a_label_imitating_an_exempt_namespaces_name_exempts_nothing() {
    let (server, _) = start("", &[]).await;
    let client = server.client();
    let mut review: Value =
        serde_json::from_slice(&fixture("admission/validate-create-namespace.json")).unwrap();
    review["request"]["name"] = json!("evil");
    review["request"]["namespace"] = json!("evil");
    review["request"]["object"]["metadata"]["name"] = json!("evil");
    review["request"]["object"]["metadata"]["labels"] =
        json!({"kubernetes.io/metadata.name": "kube-system"});
    for path in ["/validate", "/mutate"] {
        let rsp = send(&client, path, &review).await;
        if path == "/validate" {
            assert_eq!(rsp["allowed"], false, "{rsp}");
            let message = rsp["status"]["message"].as_str().unwrap();
            assert!(
                message.contains("namespace \"evil\" lacks label network-policy"),
                "{message}"
            );
        } else {
            assert_eq!(rsp["allowed"], true, "{rsp}");
        }
    }
    // The real kube-system, as the API server labels it, is exempt.
    review["request"]["name"] = json!("kube-system");
    review["request"]["namespace"] = json!("kube-system");
    review["request"]["object"]["metadata"]["name"] = json!("kube-system");
    let rsp = send(&client, "/validate", &review).await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
}

#[tokio::test]
async fn break_glass_trusts_only_the_exact_identity_the_api_server_names() {
    let (server, _) = start(BREAK_GLASS, &[]).await;
    let client = server.client();
    let annotations = glass("INC-77", Duration::from_secs(600));
    let look_alikes: [(&str, &[&str], Value); 9] = [
        ("Alice", &[], json!({})),
        ("alice ", &[], json!({})),
        ("alice\u{200b}", &[], json!({})),
        ("system:serviceaccount:shop:alice", &[], json!({})),
        ("mallory", &["sre-oncall "], json!({})),
        ("mallory", &["SRE-oncall"], json!({})),
        (
            "mallory",
            &["system:authenticated", "sre-oncall-2"],
            json!({}),
        ),
        // Claims in `extra` authorise nothing, whatever they say.
        (
            "mallory",
            &[],
            json!({"username": ["alice"], "groups": ["sre-oncall"],
                   "impersonator.kubernetes.io/original-user": ["alice"]}),
        ),
        ("", &["system:unauthenticated"], json!({})),
    ];
    for (user, groups, extra) in look_alikes {
        let mut review = pod_review("shop", user, groups, annotations.clone());
        review["request"]["userInfo"]["extra"] = extra.clone();
        let rsp = send(&client, "/validate", &review).await;
        assert_eq!(rsp["allowed"], false, "{user:?} {groups:?} {extra}: {rsp}");
        let message = rsp["status"]["message"].as_str().unwrap();
        assert!(
            message.contains("may not add or change"),
            "{user:?}: {message}"
        );
    }
    let metrics = server.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "palisade_break_glass_refused_total{reason=\"not-allowed\"}"
        ),
        Some(9.0)
    );
    assert_eq!(metric_total(&metrics, "palisade_break_glass_total"), None);

    // The identity the API server names, user or group, is honoured, including an impersonated
    // one (the API server has authorised the impersonation and does not say who asked).
    for (user, groups) in [("alice", &[][..]), ("mallory", &["sre-oncall"][..])] {
        let review = pod_review("shop", user, groups, annotations.clone());
        let rsp = send(&client, "/validate", &review).await;
        assert_eq!(rsp["allowed"], true, "{user}: {rsp}");
        assert_eq!(rsp["auditAnnotations"]["break-glass-user"], user);
    }
}

#[tokio::test]
async fn dry_run_requests_are_judged_as_real_ones() {
    let (server, _) = start(BREAK_GLASS, &[]).await;
    let client = server.client();
    let dry = |mut review: Value| {
        review["request"]["dryRun"] = json!(true);
        review
    };
    // A violating pod: the same denial either way.
    let real = send(
        &client,
        "/validate",
        &pod_review("shop", "bob", &[], json!({})),
    )
    .await;
    let dry_rsp = send(
        &client,
        "/validate",
        &dry(pod_review("shop", "bob", &[], json!({}))),
    )
    .await;
    assert!(denied_by_pod_security(&real), "{real}");
    assert_eq!(dry_rsp["allowed"], false);
    assert_eq!(dry_rsp["status"], real["status"]);
    // The mutation a dry run would get is the real one.
    let mutate = |dry_run: bool| {
        let mut r: Value =
            serde_json::from_slice(&fixture("admission/mutate-create-pod.json")).unwrap();
        r["request"]["dryRun"] = json!(dry_run);
        r
    };
    let real = send(&client, "/mutate", &mutate(false)).await;
    let dry_rsp = send(&client, "/mutate", &mutate(true)).await;
    assert!(real["patch"].is_string(), "{real}");
    assert_eq!(dry_rsp["patch"], real["patch"]);

    // Someone off the allow-list may not try the annotations in a dry run either.
    let annotations = glass("INC-78", Duration::from_secs(600));
    let rsp = send(
        &client,
        "/validate",
        &dry(pod_review("shop", "mallory", &[], annotations.clone())),
    )
    .await;
    assert_eq!(rsp["allowed"], false);
    assert!(
        rsp["status"]["message"]
            .as_str()
            .unwrap()
            .contains("may not add or change")
    );
    // An authorised dry run gets the answer the real request would, and is not counted as a use.
    let rsp = send(
        &client,
        "/validate",
        &dry(pod_review("shop", "alice", &[], annotations)),
    )
    .await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
    assert_eq!(rsp["auditAnnotations"]["break-glass-user"], "alice");
    let metrics = server.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "palisade_break_glass_refused_total{reason=\"not-allowed\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_total(&metrics, "palisade_break_glass_total"),
        None,
        "{metrics}"
    );
}
