//! Every way a pod spec enters the cluster is reviewed, and none of them launders break-glass:
//! the paths a hostile tenant tried (issue 28), over HTTPS as the API server sends them.

use std::time::Duration;

use crate::common::rollout::{BREAK_GLASS, controller_pod, glass, glass_deployment, start};
use crate::common::*;
use serde_json::{Value, json};

/// A running pod in `payments` (security-level high, with a default-deny): created through
/// /mutate as the API server does, so it carries what the mutators set.
async fn running_pod(client: &Client) -> Value {
    let mut review: Value =
        serde_json::from_slice(&fixture("admission/mutate-create-pod.json")).unwrap();
    in_namespace(&mut review, "payments");
    review["request"]["object"]["spec"]["containers"][0]["resources"] =
        json!({"limits": {"cpu": "250m", "memory": "64Mi"}});
    let created = mutated(client, &review).await;
    let rsp = send(client, "/validate", &created).await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
    created["request"]["object"].clone()
}

/// `kubectl debug`: an UPDATE of `pods/ephemeralcontainers` adding `container` to `pod`.
fn debug_review(pod: &Value, user: &str, container: Value) -> Value {
    let mut review: Value =
        serde_json::from_slice(&fixture("admission/validate-update-pod.json")).unwrap();
    let request = &mut review["request"];
    request["namespace"] = pod["metadata"]["namespace"].clone();
    request["name"] = pod["metadata"]["name"].clone();
    request["subResource"] = json!("ephemeralcontainers");
    request["requestSubResource"] = json!("ephemeralcontainers");
    request["userInfo"] = json!({"username": user, "groups": ["system:authenticated"]});
    request["oldObject"] = pod.clone();
    let mut object = pod.clone();
    object["spec"]["ephemeralContainers"] = json!([container]);
    request["object"] = object;
    review
}

fn debugger(security_context: Option<Value>) -> Value {
    let mut c = json!({"name": "debugger-7xk2p", "image": "busybox:1.36", "stdin": true, "tty": true,
        "targetContainerName": "web", "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"});
    if let Some(sc) = security_context {
        c["securityContext"] = sc;
    }
    c
}

#[tokio::test]
async fn ephemeral_containers_are_mutated_and_judged() {
    let (server, _) = start("", &[]).await;
    let client = server.client();
    let pod = running_pod(&client).await;

    // `kubectl debug --profile=general`: no securityContext. /mutate hardens the ephemeral
    // container and touches nothing the subresource cannot change.
    let review = debug_review(&pod, "dev", debugger(None));
    let rsp = send(&client, "/mutate", &review).await;
    let patch = decoded_patch(&rsp);
    assert!(!patch.is_empty(), "{rsp}");
    for op in &patch {
        assert!(
            op["path"]
                .as_str()
                .unwrap()
                .starts_with("/spec/ephemeralContainers/"),
            "{op}"
        );
    }
    let hardened = mutated(&client, &review).await;
    let sc = &hardened["request"]["object"]["spec"]["ephemeralContainers"][0]["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{sc}");
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{sc}");
    let rsp = send(&client, "/validate", &hardened).await;
    assert_eq!(rsp["allowed"], true, "{rsp}");

    // `kubectl debug --profile=sysadmin`: privileged. Refused, whatever /mutate adds.
    for sc in [
        json!({"privileged": true}),
        json!({"capabilities": {"add": ["SYS_ADMIN"]}}),
        json!({"allowPrivilegeEscalation": true}),
        json!({"runAsUser": 0}),
    ] {
        let review = debug_review(&pod, "dev", debugger(Some(sc.clone())));
        let rsp = send(&client, "/validate", &mutated(&client, &review).await).await;
        assert_eq!(rsp["allowed"], false, "{sc}: {rsp}");
        let message = rsp["status"]["message"].as_str().unwrap();
        assert!(
            message.contains("ephemeralContainer \"debugger-7xk2p\""),
            "{sc}: {message}"
        );
    }
}

#[tokio::test]
async fn a_break_glassed_pod_gets_no_debug_container_from_anyone_else() {
    let (server, _) = start(BREAK_GLASS, &[]).await;
    let client = server.client();
    let mut review = crate::common::rollout::pod_review(
        "payments",
        "alice",
        &[],
        glass("INC-5", Duration::from_secs(600)),
    );
    review["request"]["object"]["metadata"]["name"] = json!("web");
    let pod = mutated(&client, &review).await["request"]["object"].clone();
    assert!(pod["metadata"]["annotations"]["palisade.dev/break-glass-grant"].is_string());
    // mallory adds a container, keeping the annotations: refused.
    let rsp = send(
        &client,
        "/validate",
        &debug_review(&pod, "mallory", debugger(None)),
    )
    .await;
    assert_eq!(rsp["allowed"], false, "{rsp}");
    assert!(
        rsp["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("mallory may not change what was approved under break-glass"),
        "{rsp}"
    );
    // alice may: her request is an approval.
    let rsp = send(
        &client,
        "/validate",
        &debug_review(&pod, "alice", debugger(Some(json!({"privileged": true})))),
    )
    .await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
}

/// A ReplicationController review of the same pod template as `deployment`'s.
fn as_replication_controller(deployment: &Value) -> Value {
    let mut review = deployment.clone();
    let request = &mut review["request"];
    request["kind"] = json!({"group": "", "version": "v1", "kind": "ReplicationController"});
    request["requestKind"] = request["kind"].clone();
    request["resource"] =
        json!({"group": "", "version": "v1", "resource": "replicationcontrollers"});
    request["requestResource"] = request["resource"].clone();
    let object = &mut request["object"];
    object["apiVersion"] = json!("v1");
    object["kind"] = json!("ReplicationController");
    let template = object["spec"]["template"].clone();
    object["spec"] = json!({"replicas": 1, "selector": template["metadata"]["labels"].clone(), "template": template});
    review
}

#[tokio::test]
async fn replication_controllers_and_pod_templates_do_not_launder_break_glass() {
    let (server, _) = start(BREAK_GLASS, &[]).await;
    let client = server.client();
    let annotations = glass("INC-11", Duration::from_secs(600));

    // mallory's ReplicationController with the annotations on its template: refused.
    let rc = as_replication_controller(&glass_deployment("mallory", annotations.clone()));
    let rsp = send(&client, "/validate", &rc).await;
    assert_eq!(rsp["allowed"], false, "{rsp}");
    assert!(
        rsp["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("mallory may not add or change the palisade.dev/break-glass annotations"),
        "{rsp}"
    );
    // Without the annotations it is judged like any workload: privileged is refused.
    let mut plain = rc.clone();
    plain["request"]["object"]["spec"]["template"]["metadata"]["annotations"] = json!({});
    let rsp = send(&client, "/validate", &plain).await;
    assert_eq!(rsp["allowed"], false, "{rsp}");
    assert!(
        rsp["status"]["message"]
            .as_str()
            .unwrap()
            .contains("[pod-security-restricted]"),
        "{rsp}"
    );

    // The replication controller's pods carry the annotations only with alice's grant.
    let mut pod = controller_pod(&glass_deployment("mallory", annotations.clone()));
    pod["request"]["userInfo"]["username"] =
        json!("system:serviceaccount:kube-system:replication-controller");
    pod["request"]["object"]["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "v1", "kind": "ReplicationController", "name": "web", "uid": "9d1e", "controller": true}]);
    let rsp = send(&client, "/validate", &pod).await;
    assert_eq!(rsp["allowed"], false, "{rsp}");
    assert!(
        rsp["status"]["message"]
            .as_str()
            .unwrap()
            .contains("trusted controller, but it carries no break-glass grant"),
        "{rsp}"
    );
    // alice's ReplicationController is stamped where its pods copy it from, and its pods are
    // honoured.
    let approved = mutated(
        &client,
        &as_replication_controller(&glass_deployment("alice", annotations.clone())),
    )
    .await;
    assert_eq!(send(&client, "/validate", &approved).await["allowed"], true);
    let mut pod = controller_pod(&approved);
    pod["request"]["userInfo"]["username"] =
        json!("system:serviceaccount:kube-system:replication-controller");
    pod["request"]["object"]["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "v1", "kind": "ReplicationController", "name": "web", "uid": "9d1e", "controller": true}]);
    let rsp = send(&client, "/validate", &pod).await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
    assert_eq!(
        rsp["auditAnnotations"]["break-glass-owner"],
        "ReplicationController/web"
    );

    // A PodTemplate (read by other controllers) is reviewed the same way.
    let mut template = rc.clone();
    let request = &mut template["request"];
    request["kind"] = json!({"group": "", "version": "v1", "kind": "PodTemplate"});
    request["resource"] = json!({"group": "", "version": "v1", "resource": "podtemplates"});
    let object = &mut request["object"];
    object["kind"] = json!("PodTemplate");
    object["template"] = object["spec"]["template"].clone();
    object.as_object_mut().unwrap().remove("spec");
    let rsp = send(&client, "/validate", &template).await;
    assert_eq!(rsp["allowed"], false, "{rsp}");
    assert!(
        rsp["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("mallory may not add"),
        "{rsp}"
    );
}

#[tokio::test]
async fn the_generated_default_deny_cannot_be_break_glassed_by_dropping_its_label() {
    let (server, _) = start(BREAK_GLASS, &[]).await;
    let client = server.client();
    let mut review: Value =
        serde_json::from_slice(&fixture("admission/validate-update-networkpolicy.json")).unwrap();
    let request = &mut review["request"];
    request["userInfo"] = json!({"username": "alice", "groups": []});
    request["oldObject"]["metadata"]["labels"] =
        json!({"app.kubernetes.io/managed-by": "palisade"});
    request["oldObject"]["spec"] = json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]});
    let mut object = request["oldObject"].clone();
    object["metadata"]["labels"] = json!({});
    object["metadata"]["annotations"] = glass("INC-3", Duration::from_secs(600));
    object["spec"] = json!({"podSelector": {}, "policyTypes": ["Ingress"]});
    request["object"] = object;
    let rsp = send(&client, "/validate", &review).await;
    assert_eq!(rsp["allowed"], false, "{rsp}");
    let message = rsp["status"]["message"].as_str().unwrap();
    assert!(
        message
            .contains("the NetworkPolicies Palisade generates cannot be admitted by break-glass"),
        "{message}"
    );
    assert_eq!(
        metric(
            &server.metrics().await,
            "palisade_break_glass_refused_total{reason=\"protected\"}"
        ),
        Some(1.0)
    );
}

/// Where mutation is turned off, an approval is still sealed: the grant changes nothing the
/// object does, and a controller's pods are honoured only with it.
#[tokio::test]
async fn break_glass_is_sealed_where_mutation_is_off() {
    let config = format!("{BREAK_GLASS}namespaces:\n  - names: [shop]\n    mutation: false\n");
    let (server, _) = start(&config, &[]).await;
    let client = server.client();
    let deployment = mutated(
        &client,
        &glass_deployment("alice", glass("INC-12", Duration::from_secs(600))),
    )
    .await;
    let template = &deployment["request"]["object"]["spec"]["template"];
    assert!(
        template["metadata"]["annotations"]["palisade.dev/break-glass-grant"].is_string(),
        "{template}"
    );
    // Nothing else was mutated: a plain pod in shop gets no patch.
    let plain = crate::common::rollout::pod_review("shop", "dev", &[], json!({}));
    let (_, patched) = mutate(&client, &plain).await;
    assert!(!patched);
    let rsp = send(&client, "/validate", &controller_pod(&deployment)).await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
}
