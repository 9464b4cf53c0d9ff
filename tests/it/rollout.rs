//! Rolling out over HTTPS, as the API server drives it: enforcement modes from the configuration
//! file (cluster-wide and per namespace), its reload, and break-glass.

use std::path::PathBuf;
use std::time::Duration;

use crate::common::rollout::{
    BREAK_GLASS, controller_pod, expiry, glass, glass_deployment, pod_review, start,
};
use crate::common::*;
use serde_json::{Value, json};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Rewrites the configuration and waits until a review shows it is served.
async fn reconfigure(
    client: &Client,
    config_path: &PathBuf,
    config: &str,
    served: impl Fn(&Value) -> bool,
) {
    std::fs::write(config_path, config).unwrap();
    let review = pod_review("payments", "admin", &[], json!({}));
    let mut last = Value::Null;
    for _ in 0..100 {
        last = send(client, "/validate", &review).await;
        if served(&last) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("configuration not served within 10 s:\n{config}\nlast answer: {last}");
}

fn dryruns(rsp: &Value) -> Vec<Value> {
    serde_json::from_str(
        rsp["auditAnnotations"]["dryrun-violations"]
            .as_str()
            .unwrap_or_else(|| panic!("no dryrun-violations audit annotation: {rsp}")),
    )
    .unwrap()
}

#[tokio::test]
async fn deny_warn_and_dryrun_cap_every_constraint() {
    let (server, config) = start("enforcement: deny\n", &[]).await;
    let client = server.client();
    let review = pod_review("payments", "admin", &[], json!({}));

    let denied = send(&client, "/validate", &review).await;
    assert_eq!(denied["allowed"], false);
    let message = denied["status"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("[pod-security-restricted]"), "{message}");
    assert!(denied.get("auditAnnotations").is_none(), "{denied}");

    reconfigure(&client, &config, "enforcement: warn\n", |r| {
        r["allowed"] == true
    })
    .await;
    let warned = send(&client, "/validate", &review).await;
    assert_eq!(warned["allowed"], true);
    let warnings: Vec<&str> = warned["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert_eq!(
        warnings.join("\n"),
        message,
        "every denial becomes a warning"
    );

    reconfigure(&client, &config, "enforcement: dryrun\n", |r| {
        r.get("warnings").is_none()
    })
    .await;
    let quiet = send(&client, "/validate", &review).await;
    assert_eq!(quiet["allowed"], true);
    assert!(quiet.get("warnings").is_none(), "{quiet}");
    assert!(quiet.get("status").is_none(), "{quiet}");
    let recorded = dryruns(&quiet);
    assert_eq!(recorded.len(), message.lines().count(), "{recorded:?}");
    assert!(
        recorded.iter().any(|v| v["constraint"]
            .as_str()
            .unwrap()
            .ends_with("/pod-security-restricted")),
        "{recorded:?}"
    );
    let metrics = server.metrics().await;
    assert!(
        metric(
            &metrics,
            "palisade_violations_total{constraint=\"pod-security-restricted\",action=\"dryrun\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    // Mutation is not affected by the modes.
    let mutated = send(&client, "/mutate", &review).await;
    assert_eq!(mutated["patchType"], "JSONPatch", "{mutated}");
}

#[tokio::test]
async fn namespaces_roll_out_one_by_one_and_mutation_can_be_off() {
    let config = "enforcement: dryrun\nnamespaces:\n  - names: [\"pay*\"]\n    enforcement: deny\n  - names: [shop]\n    mutation: false\n";
    let (server, _) = start(config, &[]).await;
    let client = server.client();
    let payments = send(
        &client,
        "/validate",
        &pod_review("payments", "admin", &[], json!({})),
    )
    .await;
    assert_eq!(payments["allowed"], false, "{payments}");
    let shop = send(
        &client,
        "/validate",
        &pod_review("shop", "admin", &[], json!({})),
    )
    .await;
    assert_eq!(shop["allowed"], true, "{shop}");
    assert!(!dryruns(&shop).is_empty());
    // The namespace is the one the API server names, not one the object claims.
    let mut lying = pod_review("shop", "admin", &[], json!({}));
    lying["request"]["object"]["metadata"]["labels"]["namespace"] = json!("payments");
    assert_eq!(send(&client, "/validate", &lying).await["allowed"], true);

    assert!(
        send(
            &client,
            "/mutate",
            &pod_review("shop", "admin", &[], json!({}))
        )
        .await
        .get("patch")
        .is_none()
    );
    assert!(
        send(
            &client,
            "/mutate",
            &pod_review("payments", "admin", &[], json!({}))
        )
        .await
        .get("patch")
        .is_some()
    );

    // The reverse: enforce everywhere but where listed.
    let (server, _) = start(
        "namespaces:\n  - names: [shop]\n    enforcement: warn\n",
        &[],
    )
    .await;
    let client = server.client();
    let shop = send(
        &client,
        "/validate",
        &pod_review("shop", "admin", &[], json!({})),
    )
    .await;
    assert_eq!(shop["allowed"], true);
    assert!(
        shop["warnings"].as_array().is_some_and(|w| !w.is_empty()),
        "{shop}"
    );
    let payments = send(
        &client,
        "/validate",
        &pod_review("payments", "admin", &[], json!({})),
    )
    .await;
    assert_eq!(payments["allowed"], false);
}

#[tokio::test]
async fn a_broken_configuration_is_reported_and_the_last_good_one_keeps_serving() {
    let (server, config) = start("enforcement: dryrun\n", &[]).await;
    let client = server.client();
    let review = pod_review("payments", "admin", &[], json!({}));
    assert_eq!(send(&client, "/validate", &review).await["allowed"], true);
    std::fs::write(&config, "enforcement: off\n").unwrap();
    let rejected = eventually(Duration::from_secs(10), || async {
        metric(
            &server.metrics().await,
            "palisade_config_reload_failures_total",
        ) == Some(1.0)
    })
    .await;
    assert!(rejected, "{}", server.metrics().await);
    assert_eq!(
        metric(&server.metrics().await, "palisade_config_last_reload_ok"),
        Some(0.0)
    );
    assert_eq!(
        send(&client, "/validate", &review).await["allowed"],
        true,
        "still dryrun"
    );
    // The flag wins over the file.
    let (server, _) = start("enforcement: dryrun\n", &["--enforcement", "deny"]).await;
    assert_eq!(
        send(&server.client(), "/validate", &review).await["allowed"],
        false
    );
}

#[tokio::test]
async fn an_authorised_break_glass_admits_a_privileged_pod_as_written() {
    let (server, _) = start(BREAK_GLASS, &[]).await;
    let client = server.client();
    let annotations = glass("INC-1234: debug DNS", Duration::from_secs(3600));
    let review = pod_review(
        "payments",
        "alice",
        &["system:authenticated"],
        annotations.clone(),
    );
    let rsp = send(&client, "/validate", &review).await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
    let warning = rsp["warnings"][0].as_str().unwrap();
    assert!(
        warning.starts_with("break-glass by alice: admitted despite ")
            && warning.contains("PalisadePodSecurity/pod-security-restricted")
            && warning.contains("reason: INC-1234: debug DNS"),
        "{warning}"
    );
    let notes = &rsp["auditAnnotations"];
    assert_eq!(notes["break-glass-user"], "alice");
    assert_eq!(notes["break-glass-reason"], "INC-1234: debug DNS");
    assert_eq!(
        notes["break-glass-expires"],
        annotations["palisade.dev/break-glass-expires"]
    );
    assert!(
        notes["break-glass-constraints"]
            .as_str()
            .unwrap()
            .contains("PalisadePodSecurity/pod-security-restricted"),
        "{notes}"
    );
    // Not mutated: the emergency pod runs as written; /mutate only stamps the grant.
    let mutated = send(&client, "/mutate", &review).await;
    assert_eq!(mutated["allowed"], true);
    let patch = decoded_patch(&mutated);
    assert_eq!(patch.len(), 1, "{patch:?}");
    assert_eq!(patch[0]["op"], "add");
    assert_eq!(
        patch[0]["path"],
        "/metadata/annotations/palisade.dev~1break-glass-grant"
    );
    assert!(patch[0]["value"].as_str().unwrap().starts_with("v1."));
    // A member of an allowed group may too.
    let by_group = pod_review("payments", "bob", &["sre-oncall"], annotations.clone());
    assert_eq!(send(&client, "/validate", &by_group).await["allowed"], true);
    // Counted by constraint; who used it is in the log, never in a metric label.
    let metrics = server.metrics().await;
    assert!(
        metric(
            &metrics,
            "palisade_break_glass_total{constraint=\"PalisadePodSecurity/pod-security-restricted\"}"
        ) == Some(2.0),
        "{metrics}"
    );
    assert!(
        !metrics.contains("alice") && !metrics.contains("bob"),
        "{metrics}"
    );

    // The same pod from anyone else is denied, and says who may.
    let mallory = pod_review(
        "payments",
        "mallory",
        &["system:authenticated"],
        annotations,
    );
    let rsp = send(&client, "/validate", &mallory).await;
    assert_eq!(rsp["allowed"], false);
    let message = rsp["status"]["message"].as_str().unwrap();
    assert!(
        message
            .starts_with("mallory may not add or change the palisade.dev/break-glass annotations")
            && message.contains("breakGlass.users"),
        "{message}"
    );
    assert_eq!(
        metric(
            &server.metrics().await,
            "palisade_break_glass_refused_total{reason=\"not-allowed\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn nobody_may_use_break_glass_until_an_operator_names_someone() {
    let (server, _) = start("", &[]).await;
    let review = pod_review(
        "payments",
        "admin",
        &["system:masters"],
        glass("INC-1", Duration::from_secs(600)),
    );
    let rsp = send(&server.client(), "/validate", &review).await;
    assert_eq!(rsp["allowed"], false);
    assert!(
        rsp["status"]["message"]
            .as_str()
            .unwrap()
            .contains("may not add"),
        "{rsp}"
    );
}

#[tokio::test]
async fn unauthorised_users_cannot_plant_the_annotation_on_objects_or_templates() {
    let (server, _) = start(BREAK_GLASS, &[]).await;
    let client = server.client();
    let annotations = glass("INC-9", Duration::from_secs(600));
    // UPDATE of an existing pod, adding the annotations.
    let mut update = pod_review("shop", "mallory", &[], annotations.clone());
    update["request"]["operation"] = json!("UPDATE");
    let mut old = update["request"]["object"].clone();
    old["metadata"]["annotations"] = json!({});
    update["request"]["oldObject"] = old;
    let rsp = send(&client, "/validate", &update).await;
    assert_eq!(rsp["allowed"], false);
    assert!(
        rsp["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("mallory may not add")
    );

    // A Deployment's pod template.
    let mut deployment: Value =
        serde_json::from_slice(&fixture("admission/validate-create-deployment.json")).unwrap();
    deployment["request"]["userInfo"] = json!({"username": "mallory", "groups": []});
    deployment["request"]["object"]["spec"]["template"]["metadata"]["annotations"] =
        annotations.clone();
    let rsp = send(&client, "/validate", &deployment).await;
    assert_eq!(rsp["allowed"], false);
    assert!(
        rsp["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("mallory may not add"),
        "{rsp}"
    );
    // The same Deployment from alice is admitted.
    deployment["request"]["userInfo"] = json!({"username": "alice", "groups": []});
    let rsp = send(&client, "/validate", &deployment).await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
}

#[tokio::test]
async fn a_break_glass_deployments_pods_are_honoured_only_as_approved() {
    let (server, _) = start(BREAK_GLASS, &[]).await;
    let client = server.client();
    let annotations = glass("INC-9", Duration::from_secs(600));
    // alice applies it: /mutate seals her approval into the template, /validate admits it.
    let deployment = mutated(&client, &glass_deployment("alice", annotations)).await;
    let grant = &deployment["request"]["object"]["spec"]["template"]["metadata"]["annotations"]["palisade.dev/break-glass-grant"];
    assert!(grant.as_str().unwrap().starts_with("v1."), "{deployment}");
    assert_eq!(
        send(&client, "/validate", &deployment).await["allowed"],
        true
    );

    // Its pods, from the ReplicaSet controller, are honoured under alice's approval.
    let owned = controller_pod(&deployment);
    let rsp = send(&client, "/validate", &owned).await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
    assert_eq!(
        rsp["auditAnnotations"]["break-glass-owner"],
        "ReplicaSet/web-5d8f9c"
    );
    assert!(
        rsp["warnings"][0]
            .as_str()
            .unwrap()
            .starts_with("break-glass by alice for ReplicaSet/web-5d8f9c"),
        "{rsp}"
    );

    // A pod that is not the approved one (changed in the ReplicaSet, by hand or by a mutating
    // webhook) is judged normally, and the answer says why.
    let mut other = owned.clone();
    other["request"]["object"]["spec"]["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "root", "hostPath": {"path": "/"}}));
    let rsp = send(&client, "/validate", &other).await;
    assert_eq!(rsp["allowed"], false);
    let message = rsp["status"]["message"].as_str().unwrap();
    assert!(message.contains("[pod-security-restricted]"), "{message}");
    assert!(
        message.contains("trusted controller, but its break-glass grant does not match"),
        "{message}"
    );

    // Annotations copied without a grant (a template written before grants, or by a
    // controller no allow-listed person approved) are not honoured either.
    let mut ungranted = owned.clone();
    ungranted["request"]["object"]["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("palisade.dev/break-glass-grant");
    let rsp = send(&client, "/validate", &ungranted).await;
    assert_eq!(rsp["allowed"], false);
    assert!(
        rsp["status"]["message"]
            .as_str()
            .unwrap()
            .contains("carries no break-glass grant"),
        "{rsp}"
    );

    // Anyone who may update the Deployment but is not on the list: scaling keeps the approval,
    // a new image with the annotations byte for byte is refused, and counted.
    let mut update = deployment.clone();
    update["request"]["operation"] = json!("UPDATE");
    update["request"]["userInfo"] =
        json!({"username": "mallory", "groups": ["system:authenticated"]});
    update["request"]["oldObject"] = deployment["request"]["object"].clone();
    update["request"]["object"]["spec"]["replicas"] = json!(3);
    let rsp = send(&client, "/validate", &update).await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
    update["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!("registry.example.com/miner:latest");
    let mutated_update = mutated(&client, &update).await;
    let rsp = send(&client, "/validate", &mutated_update).await;
    assert_eq!(rsp["allowed"], false, "{rsp}");
    let message = rsp["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("mallory may not change what was approved under break-glass"),
        "{message}"
    );
    assert_eq!(
        metric(
            &server.metrics().await,
            "palisade_break_glass_refused_total{reason=\"changes-approved\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn expired_distant_reasonless_and_look_alike_annotations_do_not_bypass() {
    let (server, _) = start(BREAK_GLASS, &[]).await;
    let client = server.client();
    let expires = expiry(Duration::from_secs(600));
    let past = (time::OffsetDateTime::now_utc() - time::Duration::minutes(5))
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let cases = [
        (
            json!({"palisade.dev/break-glass": "x", "palisade.dev/break-glass-expires": past}),
            Some("expired at"),
        ),
        (
            glass("x", Duration::from_secs(5 * 3600)),
            Some("further ahead than breakGlass.maxTTL (4h)"),
        ),
        (
            json!({"Palisade.dev/Break-Glass": "x", "palisade.dev/break-glass-expires": expires}),
            Some("without"),
        ),
        (
            json!({"palisade.dev/break\u{2011}glass": "x", "palisade.dev/break-glass-expires": expires}),
            Some("without"),
        ),
        (
            json!({"palisade.dev/break-glass": "x", "palisade.dev/break-glass-expires": "in 10 minutes"}),
            Some("not an RFC 3339 time"),
        ),
    ];
    for (annotations, why) in cases {
        let rsp = send(
            &client,
            "/validate",
            &pod_review("payments", "alice", &[], annotations.clone()),
        )
        .await;
        assert_eq!(rsp["allowed"], false, "{annotations}: {rsp}");
        let message = rsp["status"]["message"].as_str().unwrap();
        assert!(message.contains("[pod-security-restricted]"), "{message}");
        if let Some(why) = why {
            assert!(message.contains(why), "{annotations}: {message}");
        }
    }
    // A reason nobody can read is refused outright, for anyone, and counted.
    for reason in ["", " \t", "\u{200B}", "\u{200B}\u{2060}\u{FEFF}\u{200D}"] {
        let rsp = send(
            &client,
            "/validate",
            &pod_review(
                "payments",
                "alice",
                &[],
                glass(reason, Duration::from_secs(600)),
            ),
        )
        .await;
        assert_eq!(rsp["allowed"], false, "{reason:?}: {rsp}");
        let message = rsp["status"]["message"].as_str().unwrap();
        assert!(
            message.contains("gives no reason anyone can read"),
            "{reason:?}: {message}"
        );
    }
    assert_eq!(
        metric(
            &server.metrics().await,
            "palisade_break_glass_refused_total{reason=\"no-reason\"}"
        ),
        Some(4.0)
    );
    // The key on a nested object is not the object's annotation.
    let mut nested = pod_review("payments", "alice", &[], json!({}));
    nested["request"]["object"]["spec"]["containers"][0]["env"] =
        json!([{"name": "palisade.dev/break-glass", "value": "x"}]);
    nested["request"]["object"]["metadata"]["labels"]["palisade.dev/break-glass"] = json!("x");
    let rsp = send(&client, "/validate", &nested).await;
    assert_eq!(rsp["allowed"], false);
    assert!(
        !rsp["status"]["message"]
            .as_str()
            .unwrap()
            .contains("break-glass"),
        "{rsp}"
    );
    assert_eq!(
        metric_total(&server.metrics().await, "palisade_break_glass_total"),
        None
    );
}

#[tokio::test]
async fn policies_and_webhook_configurations_cannot_be_bypassed() {
    // A constraint on webhook configurations, so that there is something to bypass.
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::copy(
        format!("{ROOT}/policies/zero-trust/namespace-labels/template.yaml"),
        policies.join("template.yaml"),
    )
    .unwrap();
    std::fs::write(
        policies.join("constraint.yaml"),
        "apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: PalisadeNamespaceLabels\nmetadata:\n  name: webhooks-need-an-owner\nspec:\n  match:\n    kinds:\n      - apiGroups: [admissionregistration.k8s.io]\n        kinds: [ValidatingWebhookConfiguration]\n  parameters:\n    labels:\n      - key: owner\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("config.yaml"), BREAK_GLASS).unwrap();
    let p = policies.display().to_string();
    let c = dir.path().join("config.yaml").display().to_string();
    let server = TestServer::start(&["--policies", &p, "--config", &c]).await;
    let mut review: Value =
        serde_json::from_slice(&fixture("admission/validate-create-namespace.json")).unwrap();
    let request = &mut review["request"];
    request["kind"] = json!({"group": "admissionregistration.k8s.io", "version": "v1", "kind": "ValidatingWebhookConfiguration"});
    request["resource"] = json!({"group": "admissionregistration.k8s.io", "version": "v1", "resource": "validatingwebhookconfigurations"});
    request["name"] = json!("palisade");
    request["userInfo"] = json!({"username": "alice", "groups": []});
    request["object"] = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "palisade", "annotations": glass("disable it", Duration::from_secs(600))}, "webhooks": []});
    let rsp = send(&server.client(), "/validate", &review).await;
    assert_eq!(rsp["allowed"], false, "{rsp}");
    let message = rsp["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("webhook and admission configurations cannot be admitted by break-glass"),
        "{message}"
    );
}

/// The ConfigMap that manifests/ ships is a configuration Palisade accepts, and it enforces.
#[test]
fn the_shipped_configuration_parses_and_enforces() {
    let read = |file: &str| {
        let text = std::fs::read_to_string(format!("{ROOT}/manifests/base/{file}")).unwrap();
        palisade::manifest::parse_str(&text, std::path::Path::new(file)).unwrap()
    };
    let docs = read("config.yaml");
    let config_map = docs
        .iter()
        .find(|d| {
            d.value["kind"] == "ConfigMap" && d.value["metadata"]["name"] == "palisade-config"
        })
        .expect("manifests/base/config.yaml has no palisade-config ConfigMap");
    let config = palisade::config::Config::parse(
        config_map.value["data"]["config.yaml"].as_str().unwrap(),
        "palisade-config",
    )
    .unwrap();
    assert_eq!(config.enforcement, palisade::policy::Action::Deny);
    assert!(config.break_glass.users.is_empty() && config.break_glass.groups.is_empty());
    let docs = read("deployment.yaml");
    let deployment = docs
        .iter()
        .find(|d| d.value["kind"] == "Deployment")
        .unwrap();
    let args = deployment.value["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("--config=/config/config.yaml"), "{args}");
}
