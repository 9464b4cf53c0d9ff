//! The Pod Security Standards, judged on Kubernetes' own fixtures (tests/data/pod-security-admission,
//! the v1.32 fixtures of the pod-security-admission module) and on attacker variants they lack. Each
//! object goes through /mutate, the patch is applied as the API server applies it, then /validate,
//! over HTTPS, in the opted-in namespace `payments` (which has a default-deny).
//!
//! Two bundles serve:
//! - the shipped one (`policies/`), which also requires cpu and memory limits, stricter than PSS;
//! - the shipped templates and mutators with the test constraint of
//!   tests/data/pod-security-admission-constraint in place of the shipped pod-security constraint:
//!   the shipped parameters minus `requiredLimits`, the one rule beyond PSS that a fixture can break
//!   (the fixtures set no limits). Every `restricted/pass` fixture must be admitted by it.
//!
//! The one Windows fixture (`restricted/pass/base_windows`) is admitted, but /mutate gives it the
//! Linux-only seccomp, allowPrivilegeEscalation, readOnlyRootFilesystem and capabilities fields,
//! which the API server refuses for `spec.os.name: windows`: Gatekeeper's mutators cannot test
//! another field of the object (see docs/policies.md, "The Pod Security Standards").

use std::path::Path;

use crate::common::*;
use serde_json::{Value, json};

const FIXTURES: &str = "tests/data/pod-security-admission";
const CONSTRAINT: &str = "[pod-security-restricted] ";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The shipped bundle, or (`pss_only`) the shipped bundle with the test constraint. The returned
/// directory holds the copied bundle and must outlive the server.
async fn server(pss_only: bool) -> (TestServer, tempfile::TempDir) {
    let bundle = tempfile::tempdir().unwrap();
    let policies = if pss_only {
        copy_dir(&repo_path("policies"), bundle.path());
        std::fs::copy(
            repo_path("tests/data/pod-security-admission-constraint/constraint.yaml"),
            bundle
                .path()
                .join("zero-trust/pod-security/constraint.yaml"),
        )
        .unwrap();
        bundle.path().display().to_string()
    } else {
        repo_path("policies").display().to_string()
    };
    let inventory = format!(
        "{},{}",
        repo_path("tests/data/mutation/namespaces.yaml").display(),
        repo_path("tests/data/guides/default-deny.yaml").display()
    );
    let server = TestServer::start(&["--policies", &policies, "--inventory", &inventory]).await;
    (server, bundle)
}

/// (group, version, resource) of each kind that carries a pod spec, from the pod paths' table.
fn kind_of(kind: &str) -> (&'static str, &'static str, &'static str) {
    palisade::podpaths::POD_PATHS
        .iter()
        .find(|p| p.kind == kind && !p.resource.contains('/'))
        .map(|p| (p.group, p.version, p.resource))
        .unwrap_or_else(|| panic!("{kind} carries no pod spec"))
}

/// A captured AdmissionReview around `object`, in namespace payments.
fn review(object: Value, operation: &str) -> Value {
    let mut review: Value =
        serde_json::from_slice(&fixture("admission/mutate-create-pod.json")).unwrap();
    let kind = object["kind"].as_str().unwrap().to_string();
    let (group, version, resource) = kind_of(&kind);
    let request = &mut review["request"];
    for field in ["kind", "requestKind"] {
        request[field] = json!({"group": group, "version": version, "kind": kind});
    }
    for field in ["resource", "requestResource"] {
        request[field] = json!({"group": group, "version": version, "resource": resource});
    }
    request["name"] = object["metadata"]["name"].clone();
    request["operation"] = json!(operation);
    if operation == "UPDATE" {
        request["oldObject"] = object.clone();
    }
    request["object"] = object;
    in_namespace(&mut review, "payments");
    review
}

struct Outcome {
    /// The object as /validate saw it: mutated when /mutate answered with a patch.
    object: Value,
    mutated: bool,
    allowed: bool,
    /// The pod-security constraint's denial lines, without the constraint's name.
    denials: Vec<String>,
    message: String,
}

/// /mutate, the patch applied as the API server applies it, then /validate on the result.
async fn admit(client: &Client, review: Value) -> Outcome {
    let (mut review, mutated) = mutate(client, &review).await;
    let rsp = client
        .review(
            Proto::Http2,
            "/validate",
            &serde_json::to_vec(&review).unwrap(),
        )
        .await;
    let message = rsp["status"]["message"].as_str().unwrap_or("").to_string();
    let denials = message
        .lines()
        .filter_map(|l| l.strip_prefix(CONSTRAINT))
        .map(str::to_string)
        .collect();
    Outcome {
        object: review["request"]["object"].take(),
        mutated,
        allowed: rsp["allowed"] == true,
        denials,
        message,
    }
}

/// Every fixture of `level/verdict`, by file name, parsed.
fn fixtures(level: &str, verdict: &str) -> Vec<(String, Value)> {
    let dir = repo_path(&format!("{FIXTURES}/{level}/{verdict}"));
    let mut all: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let pod: Value =
                yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            (name, pod)
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

/// The control a fixture exercises: its file name without the trailing number.
fn control(name: &str) -> &str {
    name.trim_end_matches(|c: char| c.is_ascii_digit())
}

/// What a denial says, in lower case, when it is for `control`.
fn marker(control: &str) -> &'static str {
    match control {
        "allowprivilegeescalation" => "privilege escalation",
        "apparmorprofile" => "apparmor",
        "capabilities_baseline" | "capabilities_restricted" => "capabilit",
        "hostnamespaces" => "pods share no host namespaces",
        "hostpathvolumes" => "hostpath volume",
        "hostports" => "hostport",
        "privileged" => "is privileged",
        "procmount" => "procmount",
        "restrictedvolumes" => "volume",
        "runasnonroot" => "runasnonroot",
        "runasuser" => "runasuser",
        "seccompprofile_baseline" | "seccompprofile_restricted" => "seccomp",
        "selinuxoptions" => "selinuxoptions",
        "sysctls" => "sysctl",
        "windowshostprocess" => "hostprocess",
        other => panic!("no marker for the control {other}: a new control needs one here"),
    }
}

fn all_containers(pod: &Value) -> Vec<&Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .filter_map(|list| pod["spec"][list].as_array())
        .flatten()
        .collect()
}

/// Whether `pod` satisfies `control`, for the controls a missing field of which /mutate sets,
/// judged as the Pod Security Standards' restricted profile judges them (a container's setting,
/// else the pod's; an explicit bad value anywhere fails). None for the other controls: /mutate
/// cannot make those safe, so their fixtures must be denied.
fn satisfies(control: &str, pod: &Value) -> Option<bool> {
    let containers = all_containers(pod);
    let pod_sc = &pod["spec"]["securityContext"];
    let valid_seccomp = |t: &Value| t == "RuntimeDefault" || t == "Localhost";
    Some(match control {
        "allowprivilegeescalation" => containers
            .iter()
            .all(|c| c["securityContext"]["allowPrivilegeEscalation"] == false),
        "capabilities_restricted" => containers.iter().all(|c| {
            let caps = &c["securityContext"]["capabilities"];
            let drops_all = caps["drop"]
                .as_array()
                .is_some_and(|d| d.iter().any(|x| x == "ALL"));
            let adds = caps["add"].as_array().cloned().unwrap_or_default();
            drops_all && adds.iter().all(|x| x == "NET_BIND_SERVICE")
        }),
        "runasnonroot" => {
            pod_sc["runAsNonRoot"] != false
                && containers
                    .iter()
                    .all(|c| match &c["securityContext"]["runAsNonRoot"] {
                        Value::Bool(own) => *own,
                        _ => pod_sc["runAsNonRoot"] == true,
                    })
        }
        "seccompprofile_restricted" => {
            let pod_profile = &pod_sc["seccompProfile"];
            (pod_profile.is_null() || valid_seccomp(&pod_profile["type"]))
                && containers
                    .iter()
                    .all(|c| match &c["securityContext"]["seccompProfile"] {
                        Value::Null => valid_seccomp(&pod_profile["type"]),
                        own => valid_seccomp(&own["type"]),
                    })
        }
        _ => return None,
    })
}

/// How a `fail` fixture ended: denied for its control, or mutated so that its control holds.
#[derive(Debug, PartialEq)]
enum Ending {
    Denied,
    Mutated,
}

fn judge_fail_fixture(name: &str, fixture: &Value, outcome: &Outcome) -> Ending {
    let control = control(name);
    let marker = marker(control);
    // The fixture's name is its control's: only what follows the subject may name the control.
    let subject = format!("Pod \"{}\"", fixture["metadata"]["name"].as_str().unwrap());
    if !outcome.allowed
        && outcome.denials.iter().any(|d| {
            d.strip_prefix(&subject)
                .is_some_and(|what| what.to_lowercase().contains(marker))
        })
    {
        return Ending::Denied;
    }
    // Not denied for its control: only a missing field that /mutate set may explain it.
    match satisfies(control, fixture) {
        Some(before) => {
            assert!(!before, "{name}: the fixture satisfies {control} as sent");
            assert!(outcome.mutated, "{name}: neither denied nor mutated");
            assert_eq!(
                satisfies(control, &outcome.object),
                Some(true),
                "{name}: mutated, but {control} still fails: {}",
                outcome.object
            );
            Ending::Mutated
        }
        None => panic!(
            "{name}: not denied for {control}, which /mutate cannot make safe: allowed {}, {}",
            outcome.allowed, outcome.message
        ),
    }
}

/// Every `fail` fixture, baseline and restricted, ends denied for the control its name states, or
/// mutated so that the control holds, with the shipped bundle and with the PSS-only constraint.
#[tokio::test]
async fn every_fail_fixture_is_denied_or_made_safe() {
    let baseline = fixtures("baseline", "fail");
    let restricted = fixtures("restricted", "fail");
    assert_eq!(baseline.len(), 29);
    assert_eq!(restricted.len(), 69);
    for pss_only in [false, true] {
        let (server, _bundle) = server(pss_only).await;
        let client = server.client();
        let (mut denied, mut mutated) = (0, 0);
        for (name, pod) in baseline.iter().chain(&restricted) {
            let outcome = admit(&client, review(pod.clone(), "CREATE")).await;
            match judge_fail_fixture(name, pod, &outcome) {
                Ending::Denied => denied += 1,
                Ending::Mutated => {
                    mutated += 1;
                    // Made safe, the pod must be admitted where nothing beyond PSS applies.
                    if pss_only {
                        assert!(outcome.allowed, "{name}: {}", outcome.message);
                    }
                }
            }
        }
        assert_eq!(denied + mutated, 98);
        // Some fixtures lack only a field that /mutate sets, and the rest break a control
        // /mutate cannot fix: both endings must occur.
        assert!(
            denied > 0 && mutated > 0,
            "denied {denied}, mutated {mutated}"
        );
        eprintln!("pss_only {pss_only}: {denied} denied, {mutated} made safe by /mutate");
    }
}

/// Every `restricted/pass` fixture is admitted with the shipped templates and mutators and the
/// PSS-only constraint; the shipped constraint refuses each only for its missing limits.
#[tokio::test]
async fn every_restricted_pass_fixture_is_admitted() {
    let pass = fixtures("restricted", "pass");
    assert_eq!(pass.len(), 19);
    let (pss, _pss_bundle) = server(true).await;
    let (shipped, _shipped_bundle) = server(false).await;
    for (name, pod) in &pass {
        let outcome = admit(&pss.client(), review(pod.clone(), "CREATE")).await;
        assert!(outcome.allowed, "{name}: {}", outcome.message);
        let outcome = admit(&shipped.client(), review(pod.clone(), "CREATE")).await;
        assert!(!outcome.allowed, "{name}: has no limits");
        assert!(
            !outcome.denials.is_empty()
                && outcome
                    .denials
                    .iter()
                    .all(|d| d.contains(" limit: set resources.limits.")),
            "{name}: {}",
            outcome.message
        );
    }
}

/// A `baseline/pass` fixture breaks no baseline control: the PSS-only constraint admits it, or
/// refuses it only for a control restricted adds (capabilities beyond NET_BIND_SERVICE, volume
/// types, root).
#[tokio::test]
async fn baseline_pass_fixtures_break_only_restricted_controls() {
    let pass = fixtures("baseline", "pass");
    assert_eq!(pass.len(), 11);
    let (server, _bundle) = server(true).await;
    let client = server.client();
    // The messages of the controls restricted adds to baseline, and nothing else.
    let restricted_only = [
        "; only NET_BIND_SERVICE may be added",
        "does not drop all capabilities",
        ": the Pod Security Standards allow only configMap",
        "does not set runAsNonRoot",
        "may run as root",
        "sets securityContext.runAsNonRoot: false",
        "runs as UID 0",
        "sets securityContext.runAsUser: 0",
        "allows privilege escalation",
        "does not set allowPrivilegeEscalation",
        "has no seccomp profile",
    ];
    let mut admitted = 0;
    for (name, pod) in &pass {
        let outcome = admit(&client, review(pod.clone(), "CREATE")).await;
        if outcome.allowed {
            admitted += 1;
            continue;
        }
        for d in &outcome.denials {
            assert!(
                restricted_only.iter().any(|r| d.contains(r)),
                "{name}: a baseline control refused: {d}"
            );
        }
    }
    assert!(admitted > 0);
}

/// A hardened pod (as restricted admits it) with `edit` applied to its spec and metadata.
fn pod_with(edit: impl FnOnce(&mut Value)) -> Value {
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "variant", "annotations": {}},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "initContainers": [{"name": "init", "image": "registry.k8s.io/pause",
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
            "containers": [{"name": "app", "image": "registry.k8s.io/pause",
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}});
    edit(&mut pod);
    pod
}

/// The pod spec and metadata wrapped in each kind that carries one.
fn in_workload(kind: &str, pod: &Value) -> Value {
    let template = json!({"metadata": pod["metadata"]["annotations"].as_object().map_or(json!({}), |a| json!({"annotations": a})), "spec": pod["spec"]});
    let meta = json!({"name": "variant"});
    match kind {
        "Pod" => pod.clone(),
        "PodTemplate" => {
            json!({"apiVersion": "v1", "kind": kind, "metadata": meta, "template": template})
        }
        "CronJob" => json!({"apiVersion": "batch/v1", "kind": kind, "metadata": meta,
            "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": template}}}}),
        _ => {
            let (group, version, _) = kind_of(kind);
            let api = if group.is_empty() {
                version.to_string()
            } else {
                format!("{group}/{version}")
            };
            json!({"apiVersion": api, "kind": kind, "metadata": meta, "spec": {"template": template}})
        }
    }
}

const KINDS: [&str; 9] = [
    "Pod",
    "ReplicationController",
    "PodTemplate",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
];

/// Variants the fixtures lack, in every kind that carries a pod spec: each is denied with a
/// message naming its control, and the hardened pod they start from is admitted in every kind.
#[tokio::test]
async fn attacker_variants_are_denied_in_every_kind() {
    let (server, _bundle) = server(true).await;
    let client = server.client();
    type Edit = fn(&mut Value);
    let variants: Vec<(&str, Edit, &str)> = vec![
        (
            "AppArmor annotation in upper case",
            |p| {
                p["metadata"]["annotations"]["CONTAINER.APPARMOR.SECURITY.BETA.KUBERNETES.IO/app"] =
                    json!("unconfined")
            },
            "sets annotation container.apparmor.security.beta.kubernetes.io/app: unconfined",
        ),
        (
            "AppArmor annotation in mixed case",
            |p| {
                p["metadata"]["annotations"]["Container.AppArmor.Security.Beta.Kubernetes.io/init"] =
                    json!("unconfined")
            },
            "apparmor",
        ),
        (
            "AppArmor annotation with another profile",
            |p| {
                p["metadata"]["annotations"]["container.apparmor.security.beta.kubernetes.io/app"] =
                    json!("docker-default")
            },
            "apparmor",
        ),
        (
            "AppArmor profile type empty",
            |p| {
                p["spec"]["containers"][0]["securityContext"]["appArmorProfile"] =
                    json!({"type": ""})
            },
            "container \"app\" sets securityContext.appArmorProfile.type : use runtimedefault or localhost",
        ),
        (
            "AppArmor Unconfined on the pod",
            |p| p["spec"]["securityContext"]["appArmorProfile"] = json!({"type": "Unconfined"}),
            "\"variant\" sets securityContext.appArmorProfile.type Unconfined",
        ),
        (
            "privileged initContainer",
            |p| p["spec"]["initContainers"][0]["securityContext"]["privileged"] = json!(true),
            "initcontainer \"init\" is privileged",
        ),
        (
            "SELinux role on an initContainer",
            |p| {
                p["spec"]["initContainers"][0]["securityContext"]["seLinuxOptions"] =
                    json!({"role": "sysadm_r"})
            },
            "initcontainer \"init\" sets securityContext.selinuxoptions.role sysadm_r",
        ),
        (
            "SELinux type spc_t on the pod",
            |p| p["spec"]["securityContext"]["seLinuxOptions"] = json!({"type": "spc_t"}),
            "selinuxoptions.type spc_t",
        ),
        (
            "procMount empty",
            |p| p["spec"]["containers"][0]["securityContext"]["procMount"] = json!(""),
            "container \"app\" sets securityContext.procmount : remove it or set default",
        ),
        (
            "sysctl written with slashes",
            |p| {
                // The PSS compare the name as written, so the slash form of a safe sysctl is
                // refused too (the kubelet reads kernel/shm_rmid_forced as kernel.shm_rmid_forced).
                p["spec"]["securityContext"]["sysctls"] =
                    json!([{"name": "kernel/shm_rmid_forced", "value": "1"}])
            },
            "sysctl kernel/shm_rmid_forced",
        ),
        (
            "unsafe sysctl with slashes",
            |p| {
                p["spec"]["securityContext"]["sysctls"] =
                    json!([{"name": "net/ipv4/ip_forward", "value": "1"}])
            },
            "sysctl net/ipv4/ip_forward",
        ),
        (
            "hostProcess on an initContainer",
            |p| {
                p["spec"]["initContainers"][0]["securityContext"]["windowsOptions"] =
                    json!({"hostProcess": true})
            },
            "initcontainer \"init\" sets securityContext.windowsoptions.hostprocess",
        ),
        (
            "startup probe on a node address",
            |p| {
                p["spec"]["containers"][0]["startupProbe"] =
                    json!({"httpGet": {"host": "169.254.169.254", "port": 80}})
            },
            "startupprobe.httpget.host 169.254.169.254",
        ),
        (
            "preStop hook on a node address",
            |p| {
                p["spec"]["initContainers"][0]["lifecycle"] =
                    json!({"preStop": {"tcpSocket": {"host": "10.0.0.1", "port": 10250}}})
            },
            "lifecycle.prestop.tcpsocket.host 10.0.0.1",
        ),
        (
            "flexVolume",
            |p| {
                p["spec"]["volumes"] =
                    json!([{"name": "flex", "flexVolume": {"driver": "example/lvm"}}])
            },
            "mounts flexvolume volume \"flex\"",
        ),
        (
            "pod runAsNonRoot false under containers that set true",
            |p| {
                p["spec"]["securityContext"]["runAsNonRoot"] = json!(false);
                for list in ["initContainers", "containers"] {
                    p["spec"][list][0]["securityContext"]["runAsNonRoot"] = json!(true);
                }
            },
            "sets securityContext.runasnonroot: false",
        ),
        (
            "pod seccomp Unconfined under containers that set RuntimeDefault",
            |p| {
                p["spec"]["securityContext"]["seccompProfile"] = json!({"type": "Unconfined"});
                for list in ["initContainers", "containers"] {
                    p["spec"][list][0]["securityContext"]["seccompProfile"] =
                        json!({"type": "RuntimeDefault"});
                }
            },
            "sets securityContext.seccompprofile.type unconfined",
        ),
        (
            "pod runAsUser 0 under containers that set 1000",
            |p| {
                p["spec"]["securityContext"]["runAsUser"] = json!(0);
                for list in ["initContainers", "containers"] {
                    p["spec"][list][0]["securityContext"]["runAsUser"] = json!(1000);
                }
            },
            "sets securityContext.runasuser: 0",
        ),
        (
            "Windows pod with an Unconfined seccomp profile",
            |p| {
                p["spec"]["os"] = json!({"name": "windows"});
                p["spec"]["containers"][0]["securityContext"]["seccompProfile"] =
                    json!({"type": "Unconfined"});
            },
            "seccomp profile unconfined",
        ),
    ];
    for kind in KINDS {
        let hardened = in_workload(kind, &pod_with(|_| {}));
        let outcome = admit(&client, review(hardened, "CREATE")).await;
        assert!(outcome.allowed, "hardened {kind}: {}", outcome.message);
        for (what, edit, expected) in &variants {
            let object = in_workload(kind, &pod_with(edit));
            let outcome = admit(&client, review(object, "CREATE")).await;
            assert!(!outcome.allowed, "{what} in a {kind} was admitted");
            assert!(
                outcome
                    .denials
                    .iter()
                    .any(|d| d.to_lowercase().contains(&expected.to_lowercase())
                        && d.starts_with(&format!("{kind} \"variant\""))),
                "{what} in a {kind}: {}",
                outcome.message
            );
        }
    }
}

/// Values PSS allows stay allowed: empty strings where upstream reads them as unset, the safe
/// sysctls, the allowed SELinux types and AppArmor profiles, the restricted volume types, a
/// hostProcess of false, probes without a host.
#[tokio::test]
async fn allowed_values_and_empty_strings_are_admitted() {
    let (server, _bundle) = server(true).await;
    let client = server.client();
    let pod = pod_with(|p| {
        p["metadata"]["annotations"] = json!({
            "container.apparmor.security.beta.kubernetes.io/app": "localhost/k8s-app",
            "container.apparmor.security.beta.kubernetes.io/init": ""});
        let sc = &mut p["spec"]["securityContext"];
        sc["seLinuxOptions"] = json!({"type": "", "user": "", "role": "", "level": "s0:c1,c2"});
        sc["appArmorProfile"] = json!({"type": "RuntimeDefault"});
        sc["windowsOptions"] = json!({"hostProcess": false});
        sc["sysctls"] = json!([
            {"name": "kernel.shm_rmid_forced", "value": "1"},
            {"name": "net.ipv4.ip_unprivileged_port_start", "value": "80"},
            {"name": "net.ipv4.tcp_keepalive_probes", "value": "5"},
            {"name": "net.ipv4.tcp_wmem", "value": "4096 65536 16777216"}]);
        let c = &mut p["spec"]["containers"][0];
        c["securityContext"]["seLinuxOptions"] = json!({"type": "container_engine_t"});
        c["securityContext"]["procMount"] = json!("Default");
        c["securityContext"]["appArmorProfile"] =
            json!({"type": "Localhost", "localhostProfile": "k8s-app"});
        c["livenessProbe"] = json!({"httpGet": {"path": "/", "port": 80, "host": ""}});
        c["ports"] = json!([{"containerPort": 80, "hostPort": 0}]);
        p["spec"]["volumes"] = json!([
            {"name": "a", "configMap": {"name": "c"}}, {"name": "b", "csi": {"driver": "d"}},
            {"name": "c", "downwardAPI": {}}, {"name": "d", "emptyDir": {}},
            {"name": "e", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
            {"name": "f", "persistentVolumeClaim": {"claimName": "p"}},
            {"name": "g", "projected": {"sources": []}}, {"name": "h", "secret": {"secretName": "s"}},
            {"name": "i"}]);
    });
    for kind in KINDS {
        let outcome = admit(&client, review(in_workload(kind, &pod), "CREATE")).await;
        assert!(outcome.allowed, "{kind}: {}", outcome.message);
    }
}

/// `kubectl debug` adds an ephemeral container with an UPDATE of pods/ephemeralcontainers, which
/// arrives as the whole Pod: the added container is judged like any other.
#[tokio::test]
async fn an_ephemeral_container_added_by_update_is_judged() {
    let (server, _bundle) = server(true).await;
    let client = server.client();
    for (what, security_context, expected) in [
        (
            "privileged",
            json!({"privileged": true}),
            "ephemeralcontainer \"debugger\" is privileged",
        ),
        (
            "SELinux user",
            json!({"seLinuxOptions": {"user": "unconfined_u"}}),
            "ephemeralcontainer \"debugger\" sets securityContext.selinuxoptions.user unconfined_u",
        ),
        (
            "AppArmor Unconfined",
            json!({"appArmorProfile": {"type": "Unconfined"}}),
            "ephemeralcontainer \"debugger\" sets securityContext.apparmorprofile.type unconfined",
        ),
        (
            "SYS_PTRACE",
            json!({"capabilities": {"add": ["SYS_PTRACE"]}}),
            "ephemeralcontainer \"debugger\" adds capability sys_ptrace",
        ),
    ] {
        let old = pod_with(|_| {});
        let mut pod = old.clone();
        pod["spec"]["ephemeralContainers"] = json!([{"name": "debugger", "image": "busybox",
            "targetContainerName": "app", "securityContext": security_context}]);
        let mut rv = review(pod, "UPDATE");
        rv["request"]["oldObject"] = old;
        rv["request"]["subResource"] = json!("ephemeralcontainers");
        rv["request"]["requestSubResource"] = json!("ephemeralcontainers");
        let outcome = admit(&client, rv).await;
        assert!(!outcome.allowed, "{what}: admitted");
        assert!(
            outcome
                .denials
                .iter()
                .any(|d| d.to_lowercase().contains(&expected.to_lowercase())),
            "{what}: {}",
            outcome.message
        );
    }
}
