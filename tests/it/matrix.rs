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

fn copy_dir(from: &Path, to: &Path) {
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
