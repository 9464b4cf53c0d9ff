//! Communication matrices (`PalisadeCommunicationMatrix`, issue 31): the guides' designs
//! (`tests/data/guides/<design>/`) satisfy their matrices (`tests/data/guides/matrices/`), every
//! single-rule widening of their policies is refused through the one decision path with the
//! flow named, and the other ways in (another policy, a Pod, a workload, a Namespace's labels,
//! a DELETE) are judged too.

use std::path::Path;

use palisade::admission::{Review, decode};
use palisade::bundle::Bundle;
use palisade::inventory::Inventory;
use palisade::manifest::{Document, files};
use palisade::netpol::World;
use palisade::netpol::flows::Net;
use palisade::netpol::judge::Universe;
use palisade::netpol::matrix::{self, Audit, Matrix};
use palisade::policy::{Action, EngineOptions};
use serde_json::{Value, json};

use crate::common::{fixture, guides, repo_path, validate};

/// A design of the guides: its policies (files or directories of them), the cluster they run
/// in, and its matrix.
pub struct Design {
    pub guide: &'static [&'static str],
    pub cluster: &'static str,
    pub matrix: &'static str,
}

pub const SERVICE_MATRIX: Design = Design {
    guide: &["tests/data/guides/service-matrix"],
    cluster: "tests/data/netpol/service-matrix-cluster.yaml",
    matrix: "service-matrix",
};

fn matrix_path(name: &str) -> String {
    format!("tests/data/guides/matrices/{name}.yaml")
}

/// The matrix constraint of `tests/data/guides/matrices/<name>.yaml`.
pub fn matrix(name: &str) -> Matrix {
    let docs = files::read_path(&repo_path(&matrix_path(name))).unwrap();
    let doc = &docs[0];
    Matrix::parse(doc.name(), &doc.value["spec"]["parameters"]).unwrap()
}

/// The default bundle with the matrix constraint added.
pub fn bundle(name: &str) -> Bundle {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo_path("policies"), &dir.path().join("policies"));
    std::fs::copy(
        repo_path(&matrix_path(name)),
        dir.path().join("policies/matrix.yaml"),
    )
    .unwrap();
    palisade::bundle::load(&dir.path().join("policies"), &EngineOptions::default()).unwrap()
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

impl Design {
    /// The guide's documents, path by path.
    fn guide_docs(&self) -> Vec<Document> {
        self.guide.iter().flat_map(|p| guides::guide(p)).collect()
    }

    fn cluster_docs(&self) -> Vec<Document> {
        files::read_path(&repo_path(self.cluster)).unwrap()
    }

    pub fn world(&self) -> World {
        let mut docs = self.guide_docs();
        docs.extend(self.cluster_docs());
        World::read(&docs).unwrap()
    }

    /// The guide's policies and the cluster, as the inventory holds them.
    pub fn objects(&self) -> Vec<Value> {
        self.guide_docs()
            .into_iter()
            .chain(self.cluster_docs())
            .map(|d| d.value)
            .collect()
    }

    pub fn policies(&self) -> Vec<Value> {
        self.guide_docs()
            .into_iter()
            .map(|d| d.value)
            .filter(|v| v["kind"] == "NetworkPolicy")
            .collect()
    }

    pub fn audit(&self) -> Audit {
        let world = self.world();
        let net = Net::of_world(&world, &Universe::default());
        matrix::audit(&matrix(self.matrix), &net, None)
    }
}

/// A captured review of `operation` on `object` (with `old`), edited to the object.
pub fn review(operation: &str, object: &Value, old: Option<&Value>) -> Review {
    let kind = object["kind"].as_str().unwrap().to_ascii_lowercase();
    let name = format!(
        "admission/validate-{}-{kind}.json",
        operation.to_ascii_lowercase()
    );
    let mut v: Value = serde_json::from_slice(&fixture(&name)).unwrap();
    let r = &mut v["request"];
    r["name"] = object["metadata"]["name"].clone();
    r["namespace"] = object["metadata"]["namespace"].clone();
    if operation == "DELETE" {
        r["oldObject"] = object.clone();
        r["object"] = Value::Null;
    } else {
        r["object"] = object.clone();
        r["oldObject"] = old.cloned().unwrap_or(Value::Null);
    }
    decode(&serde_json::to_vec(&v).unwrap()).unwrap()
}

/// What the matrix constraint says of the review: its messages, at any action.
pub fn matrix_says(bundle: &Bundle, inventory: &Inventory, review: &Review) -> Vec<String> {
    validate(bundle, inventory, review)
        .into_iter()
        .filter(|v| v.constraint_kind == "PalisadeCommunicationMatrix")
        .inspect(|v| assert_eq!(v.action, Action::Deny))
        .map(|v| v.message)
        .collect()
}

/// Every single-rule widening of `policy`: a description, and the widened policy.
pub fn widenings(policy: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let name = policy["metadata"]["name"].as_str().unwrap().to_owned();
    let mut push = |what: String, edit: &dyn Fn(&mut Value)| {
        let mut p = policy.clone();
        edit(&mut p);
        if p != *policy {
            out.push((format!("{name}: {what}"), p));
        }
    };
    if policy["spec"]["podSelector"] != json!({}) {
        push(
            "podSelector: {} (every pod of the namespace)".into(),
            &|p| p["spec"]["podSelector"] = json!({}),
        );
    }
    for (field, peers) in [("ingress", "from"), ("egress", "to")] {
        let rules = policy["spec"][field]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (i, rule) in rules.iter().enumerate() {
            let at = format!("{field}[{i}]");
            if rule["ports"].is_array() {
                push(format!("{at} without ports"), &|p| {
                    p["spec"][field][i].as_object_mut().unwrap().remove("ports");
                });
                let entries = rule["ports"].as_array().unwrap();
                // Whether the rule already lets `n`/`protocol` through.
                let covers = |n: u64, protocol: &str| {
                    entries.iter().any(|e| {
                        let p = e["protocol"].as_str().unwrap_or("TCP");
                        let first = e["port"].as_u64().unwrap_or(0);
                        let last = e["endPort"].as_u64().unwrap_or(first);
                        p == protocol && (first..=last).contains(&n)
                    })
                };
                for (j, port) in entries.iter().enumerate() {
                    let Some(n) = port["port"].as_u64() else {
                        continue;
                    };
                    let protocol = port["protocol"].as_str().unwrap_or("TCP");
                    let end = port["endPort"].as_u64().unwrap_or(n);
                    if !covers(end + 1, protocol) {
                        push(format!("{at}.ports[{j}] one port wider"), &|p| {
                            p["spec"][field][i]["ports"][j]["endPort"] = json!(end + 1);
                        });
                    }
                    let other = if protocol == "UDP" { "TCP" } else { "UDP" };
                    if covers(n, other) {
                        continue;
                    }
                    push(format!("{at}.ports[{j}] also {other}"), &|p| {
                        let mut extra = port.clone();
                        extra["protocol"] = json!(other);
                        p["spec"][field][i]["ports"]
                            .as_array_mut()
                            .unwrap()
                            .push(extra);
                    });
                }
            }
            if rule[peers].is_array() {
                push(format!("{at} without {peers} (every peer)"), &|p| {
                    p["spec"][field][i].as_object_mut().unwrap().remove(peers);
                });
                for (j, peer) in rule[peers].as_array().unwrap().iter().enumerate() {
                    let pat = format!("{at}.{peers}[{j}]");
                    if peer["podSelector"].is_object() && peer["podSelector"] != json!({}) {
                        push(format!("{pat} every pod"), &|p| {
                            p["spec"][field][i][peers][j]["podSelector"] = json!({});
                        });
                    }
                    if peer["namespaceSelector"].is_object() {
                        push(format!("{pat} every namespace"), &|p| {
                            p["spec"][field][i][peers][j]["namespaceSelector"] = json!({});
                        });
                    } else if peer["podSelector"].is_object() {
                        push(format!("{pat} in every namespace"), &|p| {
                            p["spec"][field][i][peers][j]["namespaceSelector"] = json!({});
                        });
                    }
                    if peer["ipBlock"]["except"].is_array() {
                        push(format!("{pat} without except"), &|p| {
                            p["spec"][field][i][peers][j]["ipBlock"]
                                .as_object_mut()
                                .unwrap()
                                .remove("except");
                        });
                    }
                }
            }
        }
    }
    out
}

/// Checks a design: its policies satisfy the matrix, each stays admitted as written, and every
/// single-rule widening is denied with the flow and the widened rule named, but those listed in
/// `harmless`, each of which must change no effective flow.
pub fn check_design(design: &Design, harmless: &[&str]) {
    let found = design.audit();
    let forbidden: Vec<String> = found.forbidden.iter().map(|b| b.message()).collect();
    let blocked: Vec<String> = found.blocked.iter().map(|b| b.message()).collect();
    assert!(forbidden.is_empty(), "{forbidden:#?}");
    assert!(blocked.is_empty(), "{blocked:#?}");
    assert!(found.errors.is_empty(), "{:?}", found.errors);
    assert!(found.sets > 0 && found.conforming == found.sets);

    let bundle = bundle(design.matrix);
    let inventory = Inventory::from_objects(design.objects());
    let mut denied = 0;
    let mut wrong = Vec::new();
    for policy in design.policies() {
        let same = matrix_says(
            &bundle,
            &inventory,
            &review("UPDATE", &policy, Some(&policy)),
        );
        assert!(same.is_empty(), "{same:#?}");
        for (what, wider) in widenings(&policy) {
            let says = matrix_says(
                &bundle,
                &inventory,
                &review("UPDATE", &wider, Some(&policy)),
            );
            let expected_harmless = harmless.contains(&what.as_str());
            let rule = what
                .split(": ")
                .nth(1)
                .unwrap()
                .split(['.', ' '])
                .next()
                .unwrap();
            let names_rule = |m: &String| {
                m.contains(&format!(
                    "{}/{}",
                    policy["metadata"]["namespace"].as_str().unwrap(),
                    policy["metadata"]["name"].as_str().unwrap()
                )) && (rule == "podSelector" || m.contains(rule))
            };
            match (says.is_empty(), expected_harmless) {
                (false, false) if says.iter().any(names_rule) => denied += 1,
                (true, true) => {}
                _ => wrong.push(format!("{what}: {says:#?}")),
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert!(denied > 5, "only {denied} widenings denied");
}

#[test]
fn the_service_matrix_guide_satisfies_its_matrix_and_refuses_every_widening() {
    check_design(&SERVICE_MATRIX, &[]);
}

fn service_matrix() -> (Bundle, Design) {
    (bundle(SERVICE_MATRIX.matrix), SERVICE_MATRIX)
}

pub fn object(kind: &str, namespace: &str, name: &str, labels: Value, spec: Value) -> Value {
    let (api, group_kind) = match kind {
        "NetworkPolicy" => ("networking.k8s.io/v1", kind),
        "Deployment" => ("apps/v1", kind),
        _ => ("v1", kind),
    };
    let mut v = json!({
        "apiVersion": api,
        "kind": group_kind,
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    });
    if !namespace.is_empty() {
        v["metadata"]["namespace"] = json!(namespace);
    }
    v
}

pub fn netpol(name: &str, spec: Value) -> Value {
    object("NetworkPolicy", "shop", name, json!({}), spec)
}

/// A policy admitted while the matrix was in dry run: pods app=legacy of shop may send anywhere.
pub fn legacy_open() -> Value {
    netpol(
        "legacy-open",
        json!({"podSelector": {"matchLabels": {"app": "legacy"}}, "policyTypes": ["Egress"], "egress": [{}]}),
    )
}

pub fn inventory_with(design: &Design, extra: &[Value]) -> Inventory {
    let mut objects = design.objects();
    objects.extend(extra.iter().cloned());
    Inventory::from_objects(objects)
}

#[track_caller]
pub fn assert_says(says: &[String], parts: &[&str]) {
    assert!(
        says.iter().any(|m| parts.iter().all(|p| m.contains(p))),
        "no message contains all of {parts:?}: {says:#?}"
    );
}

#[test]
fn a_new_policy_that_opens_a_flow_outside_the_matrix_is_denied_with_the_flow_named() {
    let (bundle, design) = service_matrix();
    let inventory = inventory_with(&design, &[]);
    // Another port of an allowed peer, in a policy of its own.
    let p = netpol(
        "redis-on-5432",
        json!({"podSelector": {"matchLabels": {"app": "checkout"}}, "policyTypes": ["Egress"], "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "data"}}, "podSelector": {"matchLabels": {"app": "redis"}}}], "ports": [{"port": 5432}]}]}),
    );
    let says = matrix_says(&bundle, &inventory, &review("CREATE", &p, None));
    assert_says(
        &says,
        &[
            "the egress of shop",
            "pods app=checkout in shop",
            "pods app=redis in data",
            "TCP 5432",
            "shop/redis-on-5432 egress[0]",
            "\"checkout\"",
            "\"checkout-to-redis\" allows TCP 6379-6380",
        ],
    );
    // Another app of an allowed namespace.
    let p = netpol(
        "to-mysql",
        json!({"podSelector": {"matchLabels": {"app": "checkout"}}, "policyTypes": ["Egress"], "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "data"}}, "podSelector": {"matchLabels": {"app": "mysql"}}}], "ports": [{"port": 3306}]}]}),
    );
    let says = matrix_says(&bundle, &inventory, &review("CREATE", &p, None));
    assert_says(
        &says,
        &[
            "pods app=mysql in data",
            "TCP 3306",
            "shop/to-mysql egress[0]",
        ],
    );
    // A policy of the guide's own, created again under another name, adds nothing.
    let again = {
        let mut p = design.policies()[1].clone();
        p["metadata"]["name"] = json!("copy");
        p
    };
    assert!(matrix_says(&bundle, &inventory, &review("CREATE", &again, None)).is_empty());
}

#[test]
fn an_ipv4_mapped_block_is_the_ipv4_range_it_carries() {
    let (bundle, design) = service_matrix();
    let inventory = inventory_with(&design, &[]);
    let p = netpol(
        "mapped",
        json!({"podSelector": {"matchLabels": {"app": "checkout"}}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "::ffff:10.0.0.0/104"}}], "ports": [{"port": 443}]}]}),
    );
    let says = matrix_says(&bundle, &inventory, &review("CREATE", &p, None));
    assert_says(&says, &["10.0.0.0/8", "TCP 443", "shop/mapped egress[0]"]);
}

#[test]
fn deleting_the_default_deny_or_a_required_path_is_denied() {
    let (bundle, design) = service_matrix();
    let inventory = inventory_with(&design, &[]);
    let policies = design.policies();
    let by_name = |n: &str| {
        policies
            .iter()
            .find(|p| p["metadata"]["name"] == n)
            .unwrap()
            .clone()
    };
    // Without the default-deny, shop's other pods take anything from anywhere.
    let says = matrix_says(
        &bundle,
        &inventory,
        &review("DELETE", &by_name("default-deny-all"), None),
    );
    assert_says(
        &says,
        &[
            "the ingress of shop",
            "no NetworkPolicy of shop isolates its ingress",
        ],
    );
    // Without allow-dns, the required DNS flow is blocked.
    let says = matrix_says(
        &bundle,
        &inventory,
        &review("DELETE", &by_name("allow-dns"), None),
    );
    assert_says(
        &says,
        &[
            "required flow \"dns\"",
            "pods k8s-app=kube-dns in kube-system",
            "UDP 53",
            "isolated by shop/default-deny-all",
        ],
    );
    // Narrowing the checkout's egress to postgres by one port breaks the required flow.
    let mut narrower = by_name("checkout-egress");
    narrower["spec"]["egress"][0]["ports"][0]["endPort"] = json!(5432);
    let says = matrix_says(
        &bundle,
        &inventory,
        &review("UPDATE", &narrower, Some(&by_name("checkout-egress"))),
    );
    assert_says(
        &says,
        &["required flow \"checkout-to-postgres\"", "TCP 5433"],
    );
}

#[test]
fn a_pod_or_a_workload_that_joins_a_set_with_a_forbidden_flow_is_denied() {
    let (bundle, design) = service_matrix();
    let inventory = inventory_with(&design, &[legacy_open()]);
    let pod = |labels: Value| {
        object(
            "Pod",
            "shop",
            "p",
            labels,
            json!({"containers": [{"name": "c", "image": "x"}]}),
        )
    };
    let says = matrix_says(
        &bundle,
        &inventory,
        &review("CREATE", &pod(json!({"app": "legacy"})), None),
    );
    assert_says(
        &says,
        &[
            "the egress of shop",
            "pods app=legacy in shop",
            "shop/legacy-open egress[0]",
        ],
    );
    // A pod no policy but the guide's selects gains nothing the matrix forbids.
    let web = matrix_says(
        &bundle,
        &inventory,
        &review("CREATE", &pod(json!({"app": "web"})), None),
    );
    assert!(web.is_empty(), "{web:#?}");
    // Relabelling a web pod into the legacy set is a gain; keeping the labels is not.
    let says = matrix_says(
        &bundle,
        &inventory,
        &review(
            "UPDATE",
            &pod(json!({"app": "legacy"})),
            Some(&pod(json!({"app": "web"}))),
        ),
    );
    assert_says(
        &says,
        &["pods app=legacy in shop", "shop/legacy-open egress[0]"],
    );
    assert!(
        matrix_says(
            &bundle,
            &inventory,
            &review(
                "UPDATE",
                &pod(json!({"app": "legacy", "v": "2"})),
                Some(&pod(json!({"app": "legacy"})))
            ),
        )
        .is_empty()
    );
    // A Deployment's template: the controller would make the pods.
    let deployment = object(
        "Deployment",
        "shop",
        "legacy",
        json!({}),
        json!({"selector": {"matchLabels": {"app": "legacy"}}, "template": {"metadata": {"labels": {"app": "legacy"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}),
    );
    let says = matrix_says(&bundle, &inventory, &review("CREATE", &deployment, None));
    assert_says(
        &says,
        &["pods app=legacy in shop", "shop/legacy-open egress[0]"],
    );
}

#[test]
fn a_namespace_relabelled_into_a_peer_selector_is_denied() {
    let (bundle, design) = service_matrix();
    // Admitted while no namespace carried team=friends: checkout takes 8443 from their pods.
    let friends = netpol(
        "from-friends",
        json!({"podSelector": {"matchLabels": {"app": "checkout"}}, "policyTypes": ["Ingress"], "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "friends"}}}], "ports": [{"port": 8443}]}]}),
    );
    let inventory = inventory_with(&design, std::slice::from_ref(&friends));
    let ns = |labels: Value| object("Namespace", "", "data", labels, json!({}));
    let old = ns(json!({"kubernetes.io/metadata.name": "data"}));
    let new = ns(json!({"kubernetes.io/metadata.name": "data", "team": "friends"}));
    let says = matrix_says(&bundle, &inventory, &review("UPDATE", &new, Some(&old)));
    assert_says(
        &says,
        &[
            "the ingress of shop",
            "in data",
            "pods app=checkout in shop",
            "TCP 8443",
            "shop/from-friends ingress[0]",
        ],
    );
    // The same labels on a namespace nobody selects are fine.
    let other = object(
        "Namespace",
        "",
        "messaging",
        json!({"kubernetes.io/metadata.name": "messaging", "tier": "x"}),
        json!({}),
    );
    assert!(matrix_says(&bundle, &inventory, &review("UPDATE", &other, Some(&other))).is_empty());
}

#[test]
fn a_broken_matrix_is_refused_at_load_with_the_field_named() {
    for (params, field) in [
        (
            json!({"flows": []}),
            "spec.parameters.namespaceSelector: required",
        ),
        (
            json!({"namespaceSelector": {}, "flows": [{"name": "a", "from": {"namespaces": ["x"]}, "to": {"internet": true}, "ports": [{"port": 70000}]}]}),
            "spec.parameters.flows[0].ports[0].port",
        ),
        (
            json!({"namespaceSelector": {}, "flows": [{"name": "a", "from": {"namespaces": ["x"], "ipBlock": {"cidr": "10.0.0.0/8"}}, "to": {}}]}),
            "spec.parameters.flows[0].from: give pods",
        ),
        (
            json!({"namespaceSelector": {}, "flows": [{"name": "a", "from": {"podSelector": {}}, "to": {"podSelector": {}}, "scope": "Sideways"}]}),
            "spec.parameters.flows[0].scope",
        ),
        (
            json!({"namespaceSelector": {}, "flows": [{"name": "a", "from": {"podSelector": {}}, "to": {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/8"]}}}]}),
            "spec.parameters.flows[0].to.ipBlock",
        ),
    ] {
        let err = Matrix::parse("m", &params).unwrap_err();
        assert!(err.starts_with(field), "{err}");
    }
}

/// The default bundle with the matrix, as a directory `palisade audit --policies` reads.
pub fn bundle_dir(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo_path("policies"), dir.path());
    std::fs::copy(
        repo_path(&matrix_path(name)),
        dir.path().join("matrix.yaml"),
    )
    .unwrap();
    dir
}

#[test]
fn the_audit_reports_forbidden_and_blocked_flows_per_namespace_with_the_coverage() {
    let design = SERVICE_MATRIX;
    // The guide as written: nothing against the matrix.
    let bundle = bundle(design.matrix);
    let (findings, audits) =
        palisade::audit::matrices(&bundle, &Inventory::from_objects(design.objects()));
    assert!(findings.is_empty(), "{findings:#?}");
    assert_eq!(audits.len(), 1);
    assert_eq!(audits[0].audit.coverage(), 1.0);

    // A legacy policy and no DNS: a forbidden flow on the policy, a blocked one on shop.
    let mut objects: Vec<Value> = design
        .objects()
        .into_iter()
        .filter(|o| o["metadata"]["name"] != "allow-dns")
        .collect();
    objects.push(legacy_open());
    let (findings, audits) =
        palisade::audit::matrices(&bundle, &Inventory::from_objects(objects.clone()));
    let on = |kind: &str, name: &str| {
        findings
            .iter()
            .filter(|f| f.object.kind == kind && f.object.name == name)
            .flat_map(|f| &f.violations)
            .collect::<Vec<_>>()
    };
    let legacy = on("NetworkPolicy", "legacy-open");
    assert!(
        legacy.iter().any(|v| v.action == Action::Deny
            && v.message
                .contains("the egress of shop lets pods app=legacy in shop")),
        "{legacy:#?}"
    );
    // On the policy that isolates shop's egress and lets no DNS through.
    let shop = on("NetworkPolicy", "default-deny-all");
    assert!(
        shop.iter().any(|v| v.action == Action::Warn
            && v.message.contains("required flow \"dns\"")
            && v.message.contains("is blocked")),
        "{shop:#?}"
    );
    let coverage = audits[0].audit.coverage();
    assert!(coverage > 0.0 && coverage < 1.0, "{coverage}");

    // `palisade audit` on the same manifests, as a CI job runs it: exit 1, the flow named,
    // and a PolicyReport for shop.
    let inputs = tempfile::tempdir().unwrap();
    let file = inputs.path().join("all.yaml");
    std::fs::write(
        &file,
        objects
            .iter()
            .map(|o| serde_json::to_string(o).unwrap())
            .collect::<Vec<_>>()
            .join("\n---\n"),
    )
    .unwrap();
    let policies = bundle_dir(design.matrix);
    let args = |format: &'static str| {
        vec![
            "audit".to_owned(),
            "-f".into(),
            file.display().to_string(),
            "--policies".into(),
            policies.path().display().to_string(),
            "-o".into(),
            format.into(),
        ]
    };
    let run = |format| {
        let a = args(format);
        crate::common::palisade_cli(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let (code, out, err) = run("text");
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("app=legacy in shop"), "{out}");
    assert!(out.contains("required flow \"dns\""), "{out}");
    let (_, out, _) = run("policyreport");
    let list: Value = yaml_serde::from_str(&out).unwrap();
    let shop = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["metadata"]["namespace"] == "shop")
        .unwrap_or_else(|| panic!("{out}"));
    let results = shop["results"].as_array().unwrap();
    assert!(
        results
            .iter()
            .any(|r| r["policy"].as_str().unwrap_or("").contains("checkout")
                && r["result"] == "fail"
                && r["message"].as_str().unwrap().contains("app=legacy")),
        "{shop:#}"
    );
    assert!(
        results
            .iter()
            .any(|r| r["result"] == "warn"
                && r["message"].as_str().unwrap().contains("required flow")),
        "{shop:#}"
    );
}

/// The service-matrix guide and its cluster as two trees, `base` as written and `head` edited.
fn trees(edit: impl Fn(&mut Vec<Value>)) -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, objects: &[Value]| {
        let path = dir.path().join(name);
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(
            path.join("all.yaml"),
            objects
                .iter()
                .map(|o| serde_json::to_string(o).unwrap())
                .collect::<Vec<_>>()
                .join("\n---\n"),
        )
        .unwrap();
        path.display().to_string()
    };
    let objects = SERVICE_MATRIX.objects();
    let base = write("base", &objects);
    let mut head = objects;
    edit(&mut head);
    let head = write("head", &head);
    (dir, base, head)
}

fn diff(base: &str, head: &str, format: &str) -> (i32, String, String) {
    let matrix = repo_path(&matrix_path("service-matrix"))
        .display()
        .to_string();
    crate::common::palisade_cli(&[
        "netpol", "diff", "--base", base, "--head", head, "--matrix", &matrix, "-o", format,
    ])
}

fn edit_policy(objects: &mut [Value], name: &str, edit: impl Fn(&mut Value)) {
    let p = objects
        .iter_mut()
        .find(|o| o["kind"] == "NetworkPolicy" && o["metadata"]["name"] == name)
        .unwrap();
    edit(p);
}

#[test]
fn netpol_diff_prints_what_a_change_adds_and_removes_and_fails_on_what_breaks_the_matrix() {
    // A port more to postgres, and no more redis: one flow added, one removed, and both break
    // the matrix (a forbidden port, a required flow blocked).
    let (_dir, base, head) = trees(|objects| {
        edit_policy(objects, "checkout-egress", |p| {
            p["spec"]["egress"][0]["ports"][0]["endPort"] = json!(5434);
            p["spec"]["egress"].as_array_mut().unwrap().remove(1);
        });
    });
    let (code, out, err) = diff(&base, &head, "text");
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("+ pods app=checkout in shop (checkout-0, checkout-1) -> pods app=postgres in data (postgres)  TCP 5434  (shop/checkout-egress egress[0]"),
        "{out}"
    );
    assert!(
        out.contains("- pods app=checkout in shop (checkout-0, checkout-1) -> pods app=redis in data (redis)  TCP 6379-6380"),
        "{out}"
    );
    assert!(
        out.contains("! the egress of shop lets pods app=checkout in shop"),
        "{out}"
    );
    assert!(
        out.contains("! required flow \"checkout-to-redis\""),
        "{out}"
    );
    assert!(
        out.contains("1 flows added, 1 removed; 2 against a communication matrix"),
        "{out}"
    );

    let (_, json_out, _) = diff(&base, &head, "json");
    let v: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(v["changes"].as_array().unwrap().len(), 2, "{v:#}");
    assert_eq!(v["breaches"][0]["ports"], "TCP 5434");
    assert_eq!(v["blocked"][0]["flow"], "checkout-to-redis");

    let (_, dot, _) = diff(&base, &head, "dot");
    assert!(
        dot.contains("forestgreen") || dot.contains("green"),
        "{dot}"
    );
    assert!(dot.contains("forbidden: TCP 5434"), "{dot}");
    assert!(
        dot.contains("style=dashed") && dot.contains("TCP 6379-6380"),
        "{dot}"
    );

    // A change that moves nothing: exit 0, nothing listed.
    let (_dir, base, head) = trees(|objects| {
        edit_policy(objects, "checkout-egress", |p| {
            p["metadata"]["labels"] = json!({"team": "checkout"});
        });
    });
    let (code, out, _) = diff(&base, &head, "text");
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        "0 flows added, 0 removed; 0 against a communication matrix\n"
    );
    // Bad input: exit 2 with the file named.
    let (code, _, err) =
        crate::common::palisade_cli(&["netpol", "diff", "--base", &base, "--head", "/nonexistent"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent"), "{err}");
}

#[test]
fn netpol_explain_with_a_matrix_lists_and_draws_the_forbidden_flows() {
    let (_dir, base, head) = trees(|objects| {
        objects.push(legacy_open());
    });
    let matrix = repo_path(&matrix_path("service-matrix"))
        .display()
        .to_string();
    let (code, out, err) = crate::common::palisade_cli(&[
        "netpol", "explain", "-f", &head, "--matrix", &matrix, "-n", "shop",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(
            "communication matrices\n  forbidden: the egress of shop lets pods app=legacy in shop"
        ),
        "{out}"
    );
    let (_, mermaid, _) = crate::common::palisade_cli(&[
        "netpol", "explain", "-f", &head, "--matrix", &matrix, "-n", "shop", "-o", "mermaid",
    ]);
    assert!(
        mermaid.contains("==> ") && mermaid.contains("forbidden: every port"),
        "{mermaid}"
    );
    // The guide as written: nothing forbidden.
    let (_, out, _) = crate::common::palisade_cli(&[
        "netpol", "explain", "-f", &base, "--matrix", &matrix, "-n", "shop",
    ]);
    assert!(
        out.contains("every flow is allowed, and every required flow gets through"),
        "{out}"
    );
}

#[test]
fn a_pod_outside_opted_in_namespaces_is_not_judged_and_an_unknown_namespace_fails_closed() {
    let (bundle, design) = service_matrix();
    let mut legacy_in_data = legacy_open();
    legacy_in_data["metadata"]["namespace"] = json!("data");
    let inventory = inventory_with(&design, &[legacy_open(), legacy_in_data]);
    let pod = |ns: &str| {
        object(
            "Pod",
            ns,
            "p",
            json!({"app": "legacy"}),
            json!({"containers": [{"name": "c", "image": "x"}]}),
        )
    };
    // data does not opt in: its pods are no matrix's business, whatever its policies allow.
    assert!(matrix_says(&bundle, &inventory, &review("CREATE", &pod("data"), None)).is_empty());
    // shop does: the same pod there is denied.
    assert!(!matrix_says(&bundle, &inventory, &review("CREATE", &pod("shop"), None)).is_empty());
    // A namespace the inventory does not hold yet cannot be told apart from one that opts in.
    let says = matrix_says(&bundle, &inventory, &review("CREATE", &pod("ghost"), None));
    assert_says(&says, &["\"ghost\" is not known (yet)", "retry"]);
    let mut p = legacy_open();
    p["metadata"]["namespace"] = json!("ghost");
    let says = matrix_says(&bundle, &inventory, &review("CREATE", &p, None));
    assert_says(&says, &["\"ghost\" is not known (yet)"]);
}

/// The default bundle with the service matrix at another enforcement action.
fn bundle_at(action: &str) -> Bundle {
    let dir = bundle_dir(SERVICE_MATRIX.matrix);
    let path = dir.path().join("matrix.yaml");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "enforcementAction: deny",
        &format!("enforcementAction: {action}"),
    );
    std::fs::write(&path, text).unwrap();
    palisade::bundle::load(dir.path(), &EngineOptions::default()).unwrap()
}

#[test]
fn a_matrix_rolls_out_like_any_constraint_dryrun_then_warn_then_deny() {
    let design = SERVICE_MATRIX;
    let inventory = inventory_with(&design, &[]);
    let wider = netpol(
        "postgres-5434",
        json!({"podSelector": {"matchLabels": {"app": "checkout"}}, "policyTypes": ["Egress"], "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "data"}}, "podSelector": {"matchLabels": {"app": "postgres"}}}], "ports": [{"port": 5434}]}]}),
    );
    let decide = |bundle: &Bundle| {
        palisade::decide::Decider::without_exemptions()
            .decide(
                bundle,
                &inventory,
                palisade::admission::Endpoint::Validate,
                &review("CREATE", &wider, None),
                time::OffsetDateTime::now_utc(),
                None,
            )
            .unwrap()
    };
    let matrix_warnings = |d: &palisade::decide::Decision| {
        d.response
            .warnings
            .iter()
            .filter(|w| w.starts_with("[checkout]"))
            .count()
    };
    // dryrun: admitted, nothing shown, the violation recorded.
    let d = decide(&bundle_at("dryrun"));
    assert!(
        d.response.allowed && matrix_warnings(&d) == 0,
        "{:?}",
        d.response
    );
    assert!(
        d.violations
            .iter()
            .any(|v| v.constraint == "checkout" && v.action == Action::Dryrun)
    );
    // warn: admitted with the flow in a warning.
    let d = decide(&bundle_at("warn"));
    assert!(d.response.allowed, "{:?}", d.response);
    assert!(
        d.response
            .warnings
            .iter()
            .any(|w| w.starts_with("[checkout]") && w.contains("TCP 5434")),
        "{:?}",
        d.response.warnings
    );
    // deny: refused.
    let d = decide(&bundle_at("deny"));
    assert!(!d.response.allowed);
}
