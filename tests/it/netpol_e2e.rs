//! Kubernetes' own NetworkPolicy e2e tests (`test/e2e/network/netpol/network_policy.go`),
//! restated as data in `tests/data/netpol/e2e/`: for every test, step and probe, the model must
//! answer the expected 9x9 reachability matrix, three ways:
//! - the model's `query` (what admission's facts and `palisade netpol query` rest on);
//! - `explain` per pod (`-o json` data): each cell read back from the JSON alone;
//! - `explain` per set of pods, without Pods: each pod's set, found by its labels;
//!
//! and `palisade netpol query` (the CLI, exit codes included) on one row of every probe.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Command;

use palisade::netpol::explain::{self, Entry, Filter, PeerView, View};
use palisade::netpol::model::{Labels, Pod};
use palisade::netpol::{self, Endpoint, Protocol, World};
use serde_json::{Value, json};

use crate::common::repo_path;

const BIN: &str = env!("CARGO_BIN_EXE_palisade");
const ORDER: [&str; 9] = [
    "x/a", "x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c",
];

fn yaml(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

struct Step {
    file: String,
    index: usize,
    objects: Vec<Value>,
    probes: Vec<(u16, Protocol, Vec<Vec<bool>>)>,
}

/// The cluster of `cluster.yaml` with a step's labels, as Kubernetes objects, and its policies.
fn steps() -> Vec<Step> {
    let dir = repo_path("tests/data/netpol/e2e");
    let cluster = yaml(&dir.join("cluster.yaml"));
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("cluster.yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 48,
        "every test of network_policy.go: {}",
        files.len()
    );
    let mut out = Vec::new();
    for file in files {
        let case = yaml(&file);
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for (index, step) in case["steps"].as_array().unwrap().iter().enumerate() {
            let mut objects = Vec::new();
            for ns in cluster["namespaces"].as_array().unwrap() {
                let n = ns["name"].as_str().unwrap();
                let labels = step["namespaceLabels"]
                    .get(n)
                    .unwrap_or(&ns["labels"])
                    .clone();
                objects.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n, "labels": labels}}));
            }
            for pod in cluster["pods"].as_array().unwrap() {
                let id = format!(
                    "{}/{}",
                    pod["namespace"].as_str().unwrap(),
                    pod["name"].as_str().unwrap()
                );
                let labels = step["podLabels"].get(&id).unwrap_or(&pod["labels"]).clone();
                let ports: Vec<Value> = pod["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| json!({"name": p["name"], "containerPort": p["port"], "protocol": p["protocol"]}))
                    .collect();
                objects.push(json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": pod["name"], "namespace": pod["namespace"], "labels": labels},
                    "spec": {"containers": [{"name": "c", "image": "agnhost", "ports": ports}]},
                    "status": {"podIP": pod["ip"]},
                }));
            }
            objects.extend(step["policies"].as_array().cloned().unwrap_or_default());
            let probes = step["probes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    let matrix: Vec<Vec<bool>> = p["allowed"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|row| row.as_str().unwrap().chars().map(|c| c == 'X').collect())
                        .collect();
                    assert_eq!(matrix.len(), 9, "{name}");
                    assert!(matrix.iter().all(|r| r.len() == 9), "{name}");
                    (
                        p["port"].as_u64().unwrap() as u16,
                        Protocol::parse(p["protocol"].as_str().unwrap()).unwrap(),
                        matrix,
                    )
                })
                .collect();
            out.push(Step {
                file: name.clone(),
                index,
                objects,
                probes,
            });
        }
    }
    out
}

fn world_of(objects: &[Value]) -> World {
    let docs: Vec<palisade::manifest::Document> = objects
        .iter()
        .map(|v| palisade::manifest::Document::from_cluster(v.clone()))
        .collect();
    World::read(&docs).unwrap()
}

fn show(matrix: &[Vec<bool>]) -> String {
    matrix
        .iter()
        .zip(ORDER)
        .map(|(row, from)| {
            format!(
                "{from} {}",
                row.iter()
                    .map(|b| if *b { 'X' } else { '.' })
                    .collect::<String>()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn check(step: &Step, how: &str, answer: impl Fn(&World, usize, usize, u16, Protocol) -> bool) {
    let world = world_of(&step.objects);
    for (port, protocol, expected) in &step.probes {
        let got: Vec<Vec<bool>> = (0..9)
            .map(|f| {
                (0..9)
                    .map(|t| answer(&world, f, t, *port, *protocol))
                    .collect()
            })
            .collect();
        assert_eq!(
            show(&got),
            show(expected),
            "{how}: {} step {} on {port}/{}: got (left) vs the e2e's expectation (right)",
            step.file,
            step.index + 1,
            protocol.name()
        );
    }
}

#[test]
fn the_model_answers_every_e2e_matrix() {
    let steps = steps();
    let probes: usize = steps.iter().map(|s| s.probes.len()).sum();
    assert!(probes >= 60, "{probes}");
    for step in &steps {
        check(step, "query", |world, f, t, port, proto| {
            let a = world.pod(ORDER[f]).unwrap();
            let b = world.pod(ORDER[t]).unwrap();
            netpol::query(world, Endpoint::Pod(a), Endpoint::Pod(b), port, proto).allowed()
        });
    }
}

/// Whether an explanation's view lets `peer` through on `port`, read from its data only;
/// `named_on` is the pod whose container ports name the port. Per pod, pod peers are resolved
/// to the pods they match; per set, they are matched here by the namespaces the view lists and
/// the selector's own text.
fn view_allows(view: &View, peer: &Pod, named_on: &Pod, port: u16, proto: Protocol) -> bool {
    if !view.isolated {
        return true;
    }
    view.allow.iter().any(|a| {
        let peer_ok = a.every_peer
            || a.peers.iter().any(|p| match p {
                PeerView::Pods {
                    matched: Some(m), ..
                } => m.contains(&peer.id()),
                PeerView::Pods {
                    namespaces, pods, ..
                } => {
                    let ns_ok = match &namespaces.own {
                        Some(own) => *own == peer.namespace,
                        None => namespaces.every || namespaces.known.contains(&peer.namespace),
                    };
                    ns_ok && selector_text_selects(pods, &peer.labels)
                }
                PeerView::Cidr { addresses, .. } => addresses.iter().any(|c| {
                    let set = netpol::ip::IpSet::of(netpol::ip::Cidr::parse(c).unwrap());
                    peer.ips.iter().any(|ip: &IpAddr| set.contains_addr(*ip))
                }),
            });
        let ports_ok = a.ports.all
            || a.ports
                .ranges
                .get(proto.name())
                .is_some_and(|r| r.iter().any(|[x, y]| (*x..=*y).contains(&port)))
            || a.ports.named.iter().any(|n| {
                n.protocol == proto.name()
                    && match n.port {
                        Some(resolved) => resolved == Some(port),
                        None => named_on.named_port(&n.name, proto) == Some(port),
                    }
            });
        peer_ok && ports_ok
    })
}

#[test]
fn explain_per_pod_holds_every_e2e_matrix() {
    for step in steps() {
        let world = world_of(&step.objects);
        let explained = explain::explain(&world, &Filter::default());
        // Round trip through the JSON, as a script would read it.
        let json = serde_json::to_value(&explained).unwrap();
        assert!(json.as_array().unwrap().iter().all(|n| n["mode"] == "pods"));
        let entry = |id: &str| -> &Entry {
            let (ns, name) = id.split_once('/').unwrap();
            explained
                .iter()
                .find(|e| e.namespace == ns)
                .and_then(|e| e.entries.iter().find(|x| x.subject == name))
                .unwrap()
        };
        check(&step, "explain per pod", |w, f, t, port, proto| {
            if f == t {
                return true;
            }
            let (a, b) = (w.pod(ORDER[f]).unwrap(), w.pod(ORDER[t]).unwrap());
            view_allows(&entry(ORDER[f]).egress, b, b, port, proto)
                && view_allows(&entry(ORDER[t]).ingress, a, b, port, proto)
        });
    }
}

#[test]
fn explain_per_set_of_pods_holds_every_e2e_matrix() {
    for step in steps() {
        let full = world_of(&step.objects);
        // The same cluster without its Pods: the sets come from the selectors alone. Peers are
        // then matched against the pods by the sets' own data (selectors, namespaces, CIDRs).
        let without_pods = World {
            pods: Vec::new(),
            ..full.clone()
        };
        let entry_of = |pod: &Pod| -> Entry {
            let filter = Filter {
                namespaces: vec![pod.namespace.clone()],
                pod: None,
                labels: Some(pod.labels.clone()),
            };
            let mut e = explain::explain(&without_pods, &filter);
            assert_eq!(e.len(), 1);
            assert_eq!(e[0].mode, "sets");
            let mut entries = std::mem::take(&mut e[0].entries);
            assert!(
                entries.len() <= 1,
                "{}: one set per pod: {entries:?}",
                pod.id()
            );
            entries.pop().unwrap_or_else(|| Entry {
                subject: "no policy".into(),
                labels: Labels::new(),
                selected_by: Vec::new(),
                excluding: Vec::new(),
                ingress: View {
                    isolated: false,
                    isolated_by: Vec::new(),
                    allow: Vec::new(),
                },
                egress: View {
                    isolated: false,
                    isolated_by: Vec::new(),
                    allow: Vec::new(),
                },
            })
        };
        let entries: BTreeMap<String, Entry> =
            full.pods.iter().map(|p| (p.id(), entry_of(p))).collect();
        check(&step, "explain per set", |w, f, t, port, proto| {
            if f == t {
                return true;
            }
            let (a, b) = (w.pod(ORDER[f]).unwrap(), w.pod(ORDER[t]).unwrap());
            view_allows(&entries[ORDER[f]].egress, b, b, port, proto)
                && view_allows(&entries[ORDER[t]].ingress, a, b, port, proto)
        });
    }
}

/// Reads back the selector text `explain` writes (`k=v`, `k in (a, b)`, `k notin (a)`, `k`,
/// `!k`, joined by commas) and applies it.
fn selector_text_selects(text: &str, labels: &Labels) -> bool {
    if text.is_empty() {
        return true;
    }
    // Split on commas outside parentheses.
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts.into_iter().all(|p| {
        let p = p.trim();
        let values = |rest: &str| -> Vec<String> {
            rest.trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .split(',')
                .map(|v| v.trim().to_owned())
                .collect()
        };
        if let Some((k, rest)) = p.split_once(" notin ") {
            labels.get(k).is_none_or(|v| !values(rest).contains(v))
        } else if let Some((k, rest)) = p.split_once(" in ") {
            labels.get(k).is_some_and(|v| values(rest).contains(v))
        } else if let Some((k, v)) = p.split_once('=') {
            labels.get(k).is_some_and(|x| x == v)
        } else if let Some(k) = p.strip_prefix('!') {
            !labels.contains_key(k)
        } else {
            labels.contains_key(p)
        }
    })
}

#[test]
fn netpol_query_answers_the_e2e_cases_with_its_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for (n, step) in steps().iter().enumerate() {
        let file = dir.path().join(format!("step-{n}.yaml"));
        let text: String = step
            .objects
            .iter()
            .map(|o| format!("---\n{}", yaml_serde::to_string(o).unwrap()))
            .collect();
        std::fs::write(&file, text).unwrap();
        for (p, (port, protocol, expected)) in step.probes.iter().enumerate() {
            // One row per probe, a different one each time.
            let f = (n + p) % 9;
            for t in 0..9 {
                let out = Command::new(BIN)
                    .args(["netpol", "query", "-f"])
                    .arg(&file)
                    .args(["--from", ORDER[f], "--to", ORDER[t], "--port"])
                    .arg(format!("{port}/{}", protocol.name()))
                    .output()
                    .unwrap();
                let stdout = String::from_utf8_lossy(&out.stdout);
                let want = if expected[f][t] { 0 } else { 1 };
                assert_eq!(
                    out.status.code(),
                    Some(want),
                    "{} step {}: {} -> {} on {port}/{}: {stdout}{}",
                    step.file,
                    step.index + 1,
                    ORDER[f],
                    ORDER[t],
                    protocol.name(),
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(
                    stdout.starts_with(if want == 0 { "allowed: " } else { "denied: " }),
                    "{stdout}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 500, "{checked}");
}
