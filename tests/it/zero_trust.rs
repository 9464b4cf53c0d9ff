//! The zero-trust bundle in policies/: its Suites, the zero-trust guides' NetworkPolicies, and the
//! whole flow over HTTPS as the API server drives it.

use std::path::PathBuf;

use crate::common::*;
use palisade::bundle::Bundle;
use palisade::cli::test as objects;
use palisade::manifest::files as source;
use palisade::policy::{Action, EngineOptions};
use palisade::suite::{self, Expect};
use serde_json::{Value, json};

#[test]
fn every_zero_trust_suite_passes() {
    let results = passing_suites("tests/data/zero-trust", &EngineOptions::default());
    assert_eq!(results.len(), 148);
}

#[test]
fn every_policy_has_three_allowed_and_three_disallowed_cases() {
    let suites = suite::find_suites(&repo_path("tests/data/zero-trust")).unwrap();
    let mut templates = std::collections::BTreeSet::new();
    for file in suites {
        for test in suite::parse_suite(&file).unwrap().tests {
            let allowed = test
                .cases
                .iter()
                .filter(|c| c.assertions.iter().all(|a| a.violations == Expect::No))
                .count();
            let disallowed = test.cases.len() - allowed;
            assert!(
                allowed >= 3 && disallowed >= 3,
                "{}: {allowed} allowed, {disallowed} disallowed",
                test.name
            );
            templates.insert(test.template.canonicalize().unwrap());
        }
    }
    let bundle: Vec<PathBuf> = std::fs::read_dir(repo_path("policies/zero-trust"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .join("template.yaml")
                .canonicalize()
                .unwrap()
        })
        .collect();
    for t in &bundle {
        assert!(templates.contains(t), "{} has no Suite", t.display());
    }
}

fn default_bundle() -> Bundle {
    palisade::bundle::load(&repo_path("policies"), &EngineOptions::default()).unwrap()
}

fn check(files: &[&str]) -> Vec<objects::Report> {
    let mut docs = Vec::new();
    for f in files {
        docs.extend(source::read_path(&repo_path(&format!("tests/data/guides/{f}"))).unwrap());
    }
    objects::check(&default_bundle(), docs, Vec::new()).unwrap()
}

/// The default bundle is on the request path of every review: every template must run on
/// regorus' VM (about four times the interpreter's speed), so that no compatibility workaround
/// quietly moves one to the interpreter. NetworkPolicy hygiene reads the model's facts from its
/// input, so it runs there too.
#[test]
fn every_default_template_runs_on_the_vm() {
    let bundle = default_bundle();
    let off: Vec<&str> = bundle
        .policies()
        .templates()
        .filter(|t| !t.on_vm())
        .map(|t| t.name.as_str())
        .collect();
    assert!(off.is_empty(), "on the interpreter: {off:?}");
    assert!(bundle.policies().templates().count() >= 6);
}

#[test]
fn the_guides_network_policies_are_admitted_as_written() {
    let reports = check(&[
        "default-deny.yaml",
        "allow-dns.yaml",
        "three-tier",
        "external-api.yaml",
        "database-isolation",
    ]);
    assert_eq!(reports.len(), 12);
    for r in &reports {
        let denied: Vec<_> = r
            .violations
            .iter()
            .filter(|v| v.action == Action::Deny)
            .collect();
        assert!(denied.is_empty(), "{}: {denied:?}", r.document.origin);
    }
    // The external API policy reaches private ranges through 0.0.0.0/0: a warning, not a denial.
    let external = reports
        .iter()
        .find(|r| r.document.name() == "allow-external-api")
        .unwrap();
    assert!(
        external.violations.iter().all(|v| v.action == Action::Warn),
        "{:?}",
        external.violations
    );
    assert_eq!(external.violations.len(), 3);
}

#[test]
fn broken_variants_are_rejected_with_what_to_fix() {
    for (file, message) in [
        (
            "broken-no-ports.yaml",
            "NetworkPolicy \"backend-from-frontend\": pods tier=backend may be reached by pods tier=frontend in namespace payments on every TCP/UDP/SCTP port, through \"backend-from-frontend\" ingress[0]: list the ports the pods need under ports",
        ),
        (
            "broken-no-metadata-except.yaml",
            "NetworkPolicy \"allow-external-api\" egress[0] reaches the cloud metadata address 169.254.169.254/32: except it under ipBlock.except",
        ),
        (
            "broken-namespace-selector-all.yaml",
            "NetworkPolicy \"allow-from-everywhere\": pods tier=frontend may be reached by pods of every namespace (every port), through \"allow-from-everywhere\" ingress[0]: together these selectors match any namespace a tenant can create; name the namespaces with kubernetes.io/metadata.name",
        ),
    ] {
        let reports = check(&[file]);
        let denied: Vec<&str> = reports[0]
            .violations
            .iter()
            .filter(|v| v.action == Action::Deny)
            .map(|v| v.message.as_str())
            .collect();
        assert!(
            denied.iter().any(|d| d.starts_with(message)),
            "{file}: {denied:#?}"
        );
    }
}

async fn server() -> TestServer {
    let p = |rel: &str| repo_path(rel).display().to_string();
    let inventory = format!(
        "{},{}",
        p("tests/data/mutation/namespaces.yaml"),
        p("tests/data/guides/default-deny.yaml")
    );
    TestServer::start(&["--policies", &p("policies"), "--inventory", &inventory]).await
}

#[tokio::test]
async fn namespaces_need_the_zero_trust_labels() {
    let server = server().await;
    let client = server.client();
    let rsp = client
        .review(
            Proto::Http2,
            "/validate",
            &edited_review("validate-create-namespace.json", |_| {}),
        )
        .await;
    assert_eq!(rsp["allowed"], false);
    let message = rsp["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("[namespace-zero-trust-labels] namespace \"payments\" lacks label network-policy: add network-policy: <zero-trust>"),
        "{message}"
    );
    let labelled = edited_review("validate-create-namespace.json", |v| {
        v["request"]["object"]["metadata"]["labels"] = json!({
            "kubernetes.io/metadata.name": "payments", "network-policy": "zero-trust",
            "security-level": "high", "pod-security.kubernetes.io/enforce": "restricted"});
    });
    let rsp = client.review(Proto::Http1, "/validate", &labelled).await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
}

#[tokio::test]
async fn a_plain_pod_is_admitted_only_where_a_default_deny_exists() {
    let server = server().await;
    let client = server.client();
    let rsp = create_pod(&client, "payments").await;
    assert_eq!(rsp["allowed"], true, "{rsp}");

    let rsp = create_pod(&client, "shop").await;
    assert_eq!(rsp["allowed"], false);
    assert_eq!(
        rsp["status"]["message"],
        "[workloads-need-default-deny] namespace \"shop\" lacks a default-deny NetworkPolicy: apply one with podSelector {} and policyTypes [Ingress, Egress]"
    );
}

#[tokio::test]
async fn the_inventory_is_reloaded_like_the_bundle() {
    let inventory = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo_path("tests/data/mutation/namespaces.yaml"),
        inventory.path().join("namespaces.yaml"),
    )
    .unwrap();
    let policies = repo_path("policies").display().to_string();
    let dir = inventory.path().display().to_string();
    let server = TestServer::start(&["--policies", &policies, "--inventory", &dir]).await;
    let client = server.client();
    assert_eq!(create_pod(&client, "payments").await["allowed"], false);

    // The default-deny appears, as a ConfigMap update would bring it.
    std::fs::copy(
        repo_path("tests/data/guides/default-deny.yaml"),
        inventory.path().join("default-deny.yaml"),
    )
    .unwrap();
    assert!(
        eventually(std::time::Duration::from_secs(10), || async {
            metric(&server.metrics().await, "palisade_policy_reloads_total") == Some(1.0)
        })
        .await,
        "the inventory change was not picked up"
    );
    let rsp = create_pod(&client, "payments").await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
}

/// The pod security template checks a container (and the pod's own fields) in one pass first and
/// explains only the containers that fail it. This pins that shortcut: a hardened container passes, and each
/// single change to it is caught exactly when it breaks a rule, on Pods and Deployments, in
/// every container list, on the VM and the interpreter.
#[test]
fn pod_security_catches_each_single_change_to_a_hardened_container() {
    let hardened = json!({"name": "app", "image": "nginx",
        "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
        "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}}});
    // (what changes, a JSON merge patch of the container (null removes), the pod's own
    // securityContext, whether a rule is broken on a Pod, on a workload template)
    let changes: Vec<(&str, Value, Value, bool, bool)> = vec![
        ("nothing", json!({}), Value::Null, false, false),
        (
            "privileged",
            json!({"securityContext": {"privileged": true}}),
            Value::Null,
            true,
            true,
        ),
        (
            "no allowPrivilegeEscalation",
            json!({"securityContext": {"allowPrivilegeEscalation": null}}),
            Value::Null,
            true,
            false,
        ),
        (
            "allowPrivilegeEscalation",
            json!({"securityContext": {"allowPrivilegeEscalation": true}}),
            Value::Null,
            true,
            true,
        ),
        (
            "no runAsNonRoot",
            json!({"securityContext": {"runAsNonRoot": null}}),
            Value::Null,
            true,
            false,
        ),
        (
            "runAsNonRoot false",
            json!({"securityContext": {"runAsNonRoot": false}}),
            Value::Null,
            true,
            true,
        ),
        (
            "UID 0",
            json!({"securityContext": {"runAsUser": 0}}),
            Value::Null,
            true,
            true,
        ),
        (
            "UID 1000",
            json!({"securityContext": {"runAsUser": 1000}}),
            Value::Null,
            false,
            false,
        ),
        ("pod UID 0", json!({}), json!({"runAsUser": 0}), true, true),
        (
            "runAsNonRoot from the pod",
            json!({"securityContext": {"runAsNonRoot": null}}),
            json!({"runAsNonRoot": true}),
            false,
            false,
        ),
        (
            "runAsNonRoot false from the pod",
            json!({"securityContext": {"runAsNonRoot": null}}),
            json!({"runAsNonRoot": false}),
            true,
            true,
        ),
        (
            "drops less than ALL",
            json!({"securityContext": {"capabilities": {"drop": ["NET_RAW"]}}}),
            Value::Null,
            true,
            false,
        ),
        (
            "adds SYS_ADMIN",
            json!({"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}),
            Value::Null,
            true,
            true,
        ),
        (
            "adds NET_BIND_SERVICE",
            json!({"securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"]}}}),
            Value::Null,
            false,
            false,
        ),
        (
            "seccomp Unconfined",
            json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}}),
            Value::Null,
            true,
            true,
        ),
        (
            "seccomp Localhost",
            json!({"securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "p"}}}),
            Value::Null,
            false,
            false,
        ),
        (
            "seccomp without type",
            json!({"securityContext": {"seccompProfile": {"type": null}}}),
            Value::Null,
            true,
            false,
        ),
        (
            "seccomp from the pod",
            json!({"securityContext": {"seccompProfile": null}}),
            json!({"seccompProfile": {"type": "RuntimeDefault"}}),
            false,
            false,
        ),
        (
            "Unconfined from the pod",
            json!({"securityContext": {"seccompProfile": null}}),
            json!({"seccompProfile": {"type": "Unconfined"}}),
            true,
            true,
        ),
        (
            "no cpu limit",
            json!({"resources": {"limits": {"cpu": null}}}),
            Value::Null,
            true,
            true,
        ),
        (
            "hostPort 80",
            json!({"ports": [{"containerPort": 80, "hostPort": 80}]}),
            Value::Null,
            true,
            true,
        ),
        (
            "hostPort 0",
            json!({"ports": [{"containerPort": 80, "hostPort": 0}]}),
            Value::Null,
            false,
            false,
        ),
        (
            "no securityContext",
            json!({"securityContext": null}),
            Value::Null,
            true,
            false,
        ),
        (
            "procMount Unmasked",
            json!({"securityContext": {"procMount": "Unmasked"}}),
            Value::Null,
            true,
            true,
        ),
        (
            "procMount Default",
            json!({"securityContext": {"procMount": "Default"}}),
            Value::Null,
            false,
            false,
        ),
        (
            "SELinux type spc_t",
            json!({"securityContext": {"seLinuxOptions": {"type": "spc_t"}}}),
            Value::Null,
            true,
            true,
        ),
        (
            "SELinux user",
            json!({"securityContext": {"seLinuxOptions": {"user": "system_u"}}}),
            Value::Null,
            true,
            true,
        ),
        (
            "SELinux level and container_t",
            json!({"securityContext": {"seLinuxOptions": {"type": "container_t", "level": "s0:c1"}}}),
            Value::Null,
            false,
            false,
        ),
        (
            "AppArmor Unconfined",
            json!({"securityContext": {"appArmorProfile": {"type": "Unconfined"}}}),
            Value::Null,
            true,
            true,
        ),
        (
            "AppArmor Localhost",
            json!({"securityContext": {"appArmorProfile": {"type": "Localhost", "localhostProfile": "p"}}}),
            Value::Null,
            false,
            false,
        ),
        (
            "hostProcess",
            json!({"securityContext": {"windowsOptions": {"hostProcess": true}}}),
            Value::Null,
            true,
            true,
        ),
        (
            "probe on a host",
            json!({"livenessProbe": {"httpGet": {"host": "10.0.0.1", "port": 80}}}),
            Value::Null,
            true,
            true,
        ),
        (
            "probe without a host",
            json!({"livenessProbe": {"httpGet": {"path": "/", "port": 80}}}),
            Value::Null,
            false,
            false,
        ),
        (
            "pod SELinux role",
            json!({}),
            json!({"seLinuxOptions": {"role": "system_r"}}),
            true,
            true,
        ),
        (
            "pod unsafe sysctl",
            json!({}),
            json!({"sysctls": [{"name": "kernel.msgmax", "value": "65536"}]}),
            true,
            true,
        ),
        (
            "pod safe sysctl",
            json!({}),
            json!({"sysctls": [{"name": "kernel.shm_rmid_forced", "value": "1"}]}),
            false,
            false,
        ),
        (
            "pod AppArmor Unconfined",
            json!({}),
            json!({"appArmorProfile": {"type": "Unconfined"}}),
            true,
            true,
        ),
    ];
    let bundle_for = |vm: bool| {
        palisade::bundle::load(
            &repo_path("policies"),
            &EngineOptions {
                vm,
                ..EngineOptions::default()
            },
        )
        .unwrap()
    };
    for vm in [true, false] {
        let bundle = bundle_for(vm);
        for (what, patch, pod_sc, on_pod, on_template) in &changes {
            for list in ["containers", "initContainers", "ephemeralContainers"] {
                for kind in ["Pod", "Deployment"] {
                    let mut c = hardened.clone();
                    json_patch::merge(&mut c, patch);
                    let mut pod = json!({"containers": [hardened.clone()]});
                    if !pod_sc.is_null() {
                        pod["securityContext"] = pod_sc.clone();
                    }
                    c["name"] = json!("changed");
                    if list == "ephemeralContainers" {
                        // Ephemeral containers have no resources.
                        c.as_object_mut().unwrap().remove("resources");
                    }
                    match pod[list].as_array_mut() {
                        Some(l) => l.push(c.clone()),
                        None => pod[list] = json!([c.clone()]),
                    }
                    let object = if kind == "Pod" {
                        json!({"apiVersion": "v1", "kind": "Pod",
                               "metadata": {"name": "p", "namespace": "payments"}, "spec": pod})
                    } else {
                        json!({"apiVersion": "apps/v1", "kind": "Deployment",
                               "metadata": {"name": "p", "namespace": "payments"},
                               "spec": {"template": {"spec": pod}}})
                    };
                    let doc = palisade::manifest::Document {
                        origin: palisade::manifest::Origin {
                            file: PathBuf::from(what),
                            document: 1,
                            item: None,
                        },
                        value: object,
                    };
                    let reports = objects::check(&bundle, vec![doc], Vec::new()).unwrap();
                    let found: Vec<&String> = reports[0]
                        .violations
                        .iter()
                        .filter(|v| v.constraint == "pod-security-restricted")
                        .map(|v| &v.message)
                        .collect();
                    let expected = if kind == "Pod" { *on_pod } else { *on_template }
                        // Ephemeral containers cannot have resources, so none are required.
                        && !(list == "ephemeralContainers" && *what == "no cpu limit");
                    assert_eq!(
                        !found.is_empty(),
                        expected,
                        "{what} in {list} of a {kind} (vm: {vm}): {found:?}"
                    );
                    // A change to the pod's own securityContext concerns every container.
                    let pod_level = !pod["securityContext"].is_null();
                    assert!(
                        pod_level || found.iter().all(|m| m.contains("\"changed\"")),
                        "only the changed container is reported: {found:?}"
                    );
                }
            }
        }
    }
}

/// /mutate, the patch applied as the API server does, then /validate on the result.
async fn mutate_then_validate(client: &Client, review: Value) -> Value {
    send(client, "/validate", &mutated(client, &review).await).await
}

/// A pod in `namespace` that passes every other rule, with `edit` applied to its metadata.
fn hardened_pod(namespace: &str, edit: impl FnOnce(&mut Value)) -> Value {
    let mut review = plain_pod(namespace);
    edit(&mut review["request"]["object"]["metadata"]);
    review
}

fn message(rsp: &Value) -> &str {
    rsp["status"]["message"].as_str().unwrap_or("")
}

/// Istio injects only on y, yes, true and on, in any case (it lower-cases, and trims nothing).
/// Every other value of the label or the annotation opts out; the add-only mutator keeps it,
/// and validation refuses it, naming the fix.
#[tokio::test]
async fn every_spelling_of_an_istio_opt_out_is_refused_after_mutation() {
    let server = server().await;
    let client = server.client();
    for value in [
        "False", "NO", "Off", "0", "n", "disabled", " true", "", "false",
    ] {
        for place in ["labels", "annotations"] {
            let review = hardened_pod("payments", |meta| {
                meta[place] = json!({"sidecar.istio.io/inject": value});
            });
            let rsp = mutate_then_validate(&client, review).await;
            assert_eq!(rsp["allowed"], false, "{place} {value:?}: {rsp}");
            let expected = format!(
                "[mutual-tls-in-high-security] Pod \"web\" turns mutual TLS off with {} sidecar.istio.io/inject: \"{value}\"; namespaces with security-level: high require it: remove sidecar.istio.io/inject or set it to \"true\"",
                place.trim_end_matches('s')
            );
            assert_eq!(message(&rsp), expected, "{place} {value:?}");
        }
    }
    for value in ["true", "YES", "On", "y"] {
        for place in ["labels", "annotations"] {
            let review = hardened_pod("payments", |meta| {
                meta[place] = json!({"sidecar.istio.io/inject": value});
            });
            let rsp = mutate_then_validate(&client, review).await;
            assert_eq!(rsp["allowed"], true, "{place} {value:?}: {rsp}");
        }
    }
}

/// Every annotation that keeps a port, an address range or an interface out of the sidecar or
/// the Linkerd proxy is refused where mutual TLS is required, and only there.
#[tokio::test]
async fn traffic_exclusions_are_refused_where_mutual_tls_is_required() {
    let server = server().await;
    let client = server.client();
    for (key, value) in [
        ("traffic.sidecar.istio.io/excludeInboundPorts", "*"),
        (
            "traffic.sidecar.istio.io/excludeOutboundIPRanges",
            "0.0.0.0/0",
        ),
        ("traffic.sidecar.istio.io/excludeOutboundPorts", "5432"),
        ("traffic.sidecar.istio.io/excludeInterfaces", "eth1"),
        ("traffic.sidecar.istio.io/includeInboundPorts", ""),
        (
            "traffic.sidecar.istio.io/includeOutboundIPRanges",
            "10.0.0.0/8",
        ),
        ("sidecar.istio.io/interceptionMode", "NONE"),
        ("config.linkerd.io/skip-inbound-ports", "8080"),
        ("config.linkerd.io/skip-outbound-ports", "443"),
        ("config.linkerd.io/skip-subnets", "0.0.0.0/0"),
        (
            "config.linkerd.io/default-inbound-policy",
            "all-unauthenticated",
        ),
        ("linkerd.io/inject", "disabled"),
    ] {
        let opted_out = format!("turns mutual TLS off with annotation {key}: \"{value}\"");
        let review = hardened_pod("payments", |meta| {
            meta["annotations"] = json!({key: value});
        });
        let rsp = mutate_then_validate(&client, review).await;
        assert_eq!(rsp["allowed"], false, "{key}: {rsp}");
        assert!(message(&rsp).contains(&opted_out), "{key}: {rsp}");
        // shop (security-level: medium) does not require mutual TLS.
        let review = hardened_pod("shop", |meta| {
            meta["annotations"] = json!({key: value});
        });
        let rsp = mutate_then_validate(&client, review).await;
        assert!(!message(&rsp).contains("mutual TLS"), "{key}: {rsp}");
    }
    // What keeps every port and address intercepted is admitted.
    let review = hardened_pod("payments", |meta| {
        meta["annotations"] = json!({
            "traffic.sidecar.istio.io/includeInboundPorts": "*",
            "traffic.sidecar.istio.io/includeOutboundIPRanges": "*",
            "sidecar.istio.io/interceptionMode": "REDIRECT",
            "config.linkerd.io/default-inbound-policy": "all-authenticated",
        });
    });
    let rsp = mutate_then_validate(&client, review).await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
}

/// The pods a workload creates carry its template's metadata: an opt-out there is refused on
/// the workload; the template needs no mtls label (the pods get it from /mutate).
#[tokio::test]
async fn a_workload_template_that_opts_out_is_refused() {
    let server = server().await;
    let client = server.client();
    let mtls_messages = |rsp: &Value| -> Vec<String> {
        message(rsp)
            .lines()
            .filter(|l| l.starts_with("[mutual-tls-in-high-security]"))
            .map(str::to_owned)
            .collect()
    };
    let clean = edited_review("validate-create-deployment.json", |_| {});
    let rsp = client.review(Proto::Http2, "/validate", &clean).await;
    assert_eq!(mtls_messages(&rsp), Vec::<String>::new(), "{rsp}");
    let opted_out = edited_review("validate-create-deployment.json", |v| {
        v["request"]["object"]["spec"]["template"]["metadata"]["annotations"] =
            json!({"sidecar.istio.io/inject": "Off"});
    });
    let rsp = client.review(Proto::Http2, "/validate", &opted_out).await;
    assert_eq!(rsp["allowed"], false);
    assert_eq!(
        mtls_messages(&rsp),
        vec![
            "[mutual-tls-in-high-security] Deployment \"api\" turns mutual TLS off with annotation sidecar.istio.io/inject: \"Off\"; namespaces with security-level: high require it: remove sidecar.istio.io/inject or set it to \"true\""
        ],
        "{rsp}"
    );
}

fn namespace_update(old_labels: Value, new_labels: Value) -> Vec<u8> {
    edited_review("validate-update-namespace.json", |v| {
        v["request"]["oldObject"]["metadata"]["labels"] = old_labels;
        v["request"]["object"]["metadata"]["labels"] = new_labels;
    })
}

fn zero_trust_namespace(extra: Value) -> Value {
    let mut labels = json!({"kubernetes.io/metadata.name": "payments",
        "network-policy": "zero-trust", "security-level": "high",
        "pod-security.kubernetes.io/enforce": "restricted"});
    labels
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    labels
}

/// A high-security namespace may not turn injection off, by any label value but enabled, nor
/// in the same UPDATE that lowers its level (the level it had is what its pods were admitted
/// under; lowering it is a step of its own, which namespace-labels refuses too).
#[tokio::test]
async fn a_namespace_that_requires_mutual_tls_cannot_turn_injection_off() {
    let server = server().await;
    let client = server.client();
    let before = zero_trust_namespace(json!({}));
    for value in ["disabled", "Enabled", "false", ""] {
        let rsp = client
            .review(
                Proto::Http1,
                "/validate",
                &namespace_update(
                    before.clone(),
                    zero_trust_namespace(json!({"istio-injection": value})),
                ),
            )
            .await;
        assert_eq!(rsp["allowed"], false, "{value:?}: {rsp}");
        assert_eq!(
            message(&rsp),
            format!(
                "[mutual-tls-namespaces] namespace \"payments\" turns mutual TLS off with label istio-injection: \"{value}\"; namespaces with security-level: high require it (lower the level first where that is allowed): set istio-injection to enabled, or remove it and let the pods' sidecar.istio.io/inject label inject"
            )
        );
    }
    let rsp = client
        .review(
            Proto::Http1,
            "/validate",
            &namespace_update(
                before.clone(),
                zero_trust_namespace(json!({"istio-injection": "enabled"})),
            ),
        )
        .await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
    // Lowered and disabled at once: refused by both rules.
    let rsp = client
        .review(
            Proto::Http1,
            "/validate",
            &namespace_update(
                before.clone(),
                zero_trust_namespace(
                    json!({"security-level": "low", "istio-injection": "disabled"}),
                ),
            ),
        )
        .await;
    assert_eq!(rsp["allowed"], false, "{rsp}");
    assert!(
        message(&rsp).contains("[mutual-tls-namespaces] namespace \"payments\" turns mutual TLS off with label istio-injection: \"disabled\"")
            && message(&rsp).contains("[namespace-zero-trust-labels]"),
        "{rsp}"
    );
    // A medium namespace may.
    let rsp = client
        .review(
            Proto::Http1,
            "/validate",
            &namespace_update(
                zero_trust_namespace(json!({"security-level": "medium"})),
                zero_trust_namespace(
                    json!({"security-level": "medium", "istio-injection": "disabled"}),
                ),
            ),
        )
        .await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
}

/// Pods in a high-security namespace whose injection is off would run without a sidecar,
/// whatever they carry: refused, naming the namespace's setting.
#[tokio::test]
async fn pods_in_a_namespace_without_injection_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = dir.path().join("objects.yaml");
    std::fs::write(
        &inventory,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: payments\n  labels: {kubernetes.io/metadata.name: payments, security-level: high, istio-injection: disabled}\n  annotations: {linkerd.io/inject: disabled}\n",
    )
    .unwrap();
    let inventory = format!(
        "{},{}",
        inventory.display(),
        repo_path("tests/data/guides/default-deny.yaml").display()
    );
    let policies = repo_path("policies").display().to_string();
    let server = TestServer::start(&["--policies", &policies, "--inventory", &inventory]).await;
    let client = server.client();
    let rsp = mutate_then_validate(&client, hardened_pod("payments", |_| {})).await;
    assert_eq!(rsp["allowed"], false, "{rsp}");
    assert_eq!(
        message(&rsp).lines().collect::<Vec<_>>(),
        [
            "[mutual-tls-in-high-security] Pod \"web\" is in namespace \"payments\", whose annotation linkerd.io/inject: \"disabled\" turns mutual TLS off; namespaces with security-level: high require it: set linkerd.io/inject to enabled, or remove it",
            "[mutual-tls-in-high-security] Pod \"web\" is in namespace \"payments\", whose label istio-injection: \"disabled\" turns mutual TLS off; namespaces with security-level: high require it: set istio-injection to enabled, or remove it and let the pods' sidecar.istio.io/inject label inject",
        ],
        "{rsp}"
    );
}
