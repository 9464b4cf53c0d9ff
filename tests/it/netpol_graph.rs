//! `palisade netpol explain -o dot` and `-o mermaid`: the guides' three-tier example drawn, read
//! back from both outputs edge by edge (what the policies allow is there, nothing else is), and
//! the picture in docs/networkpolicies.md kept equal to what the command prints.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};

use palisade::manifest;
use palisade::netpol::World;
use palisade::netpol::explain::{self, Filter};
use palisade::netpol::graph::{self, Graph, NodeKind};

use crate::common::repo_path;

const BIN: &str = env!("CARGO_BIN_EXE_palisade");

const THREE_TIER: [&str; 6] = [
    "-f",
    "tests/data/guides/default-deny.yaml",
    "-f",
    "tests/data/guides/allow-dns.yaml",
    "-f",
    "tests/data/guides/three-tier",
];

fn palisade(args: &[&str], stdin: &str) -> (Option<i32>, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(repo_path(""))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn explain(format: &str, more: &[&str], stdin: &str) -> String {
    let mut args = vec!["netpol", "explain", "-o", format];
    args.extend(more);
    let (code, out, err) = palisade(&args, stdin);
    assert_eq!(code, Some(0), "{err}");
    out
}

/// A picture read back: each node as `namespace: label` (or `label` outside any namespace), and
/// each edge as `(from, to, ports)`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Picture {
    nodes: BTreeSet<String>,
    edges: BTreeSet<(String, String, String)>,
}

impl Picture {
    fn has(&self, from: &str, to: &str, ports: &str) -> bool {
        self.edges
            .contains(&(from.to_owned(), to.to_owned(), ports.to_owned()))
    }

    fn any_edge(&self, from: &str, to: &str) -> bool {
        self.edges.iter().any(|(f, t, _)| f == from && t == to)
    }
}

/// The first `"…"` of `text` after `start`, unescaped as DOT (`\"`, `\\`) reads it, and the rest.
fn dot_string(text: &str) -> (String, &str) {
    let open = text.find('"').expect("a quoted string");
    let mut s = String::new();
    let mut chars = text[open + 1..].char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (s, &text[open + 1 + i + 1..]),
            '\\' => s.push(chars.next().expect("an escaped character").1),
            c => s.push(c),
        }
    }
    panic!("an unclosed string: {text}");
}

fn read_dot(dot: &str) -> Picture {
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut group: Option<String> = None;
    let mut picture = Picture::default();
    let mut edges = Vec::new();
    for line in dot.lines().map(str::trim) {
        if line.starts_with("subgraph cluster_legend") {
            group = Some("legend".into());
        } else if line.starts_with("subgraph cluster_") {
            group = Some(String::new());
        } else if line == "}" {
            group = None;
        } else if let Some(rest) = line.strip_prefix("label=") {
            if let Some(g) = group.as_mut() {
                *g = dot_string(rest).0;
            }
        } else if let Some((id, rest)) = line.split_once(" [label=") {
            let (label, _) = dot_string(rest);
            if let Some((from, to)) = id.split_once(" -> ") {
                edges.push((from.to_owned(), to.to_owned(), label));
            } else {
                let name = match &group {
                    Some(g) => format!("{g}: {label}"),
                    None => label,
                };
                picture.nodes.insert(name.clone());
                names.insert(id.to_owned(), name);
            }
        }
    }
    for (from, to, label) in edges {
        if from.starts_with("legend") {
            continue;
        }
        picture
            .edges
            .insert((names[&from].clone(), names[&to].clone(), label));
    }
    picture
}

fn read_mermaid(mermaid: &str) -> Picture {
    let unescape = |s: &str| s.replace("#quot;", "\"");
    let quoted = |s: &str| -> String {
        let a = s.find('"').unwrap();
        let b = s.rfind('"').unwrap();
        unescape(&s[a + 1..b])
    };
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut group: Option<String> = None;
    let mut picture = Picture::default();
    let mut edges = Vec::new();
    for line in mermaid.lines().map(str::trim) {
        if line.starts_with("subgraph ") {
            group = Some(quoted(line));
        } else if line == "end" {
            group = None;
        } else if let Some((from, rest)) = line.split_once(" -- ") {
            let (label, to) = rest.rsplit_once(" --> ").unwrap();
            edges.push((from.to_owned(), to.to_owned(), quoted(label)));
        } else if line.starts_with('n') && line.contains('"') {
            let id: String = line
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect();
            let label = quoted(line);
            let name = match &group {
                Some(g) => format!("{g}: {label}"),
                None => label,
            };
            picture.nodes.insert(name.clone());
            names.insert(id, name);
        }
    }
    for (from, to, label) in edges {
        picture
            .edges
            .insert((names[&from].clone(), names[&to].clone(), label));
    }
    picture
}

const FRONTEND: &str = "payments: pods tier=frontend";
const BACKEND: &str = "payments: pods tier=backend";
const DATABASE: &str = "payments: pods tier=database";
const OTHER: &str = "payments: other pods";
const DNS: &str = "kube-system: DNS: pods k8s-app=kube-dns";
const INGRESS: &str = "ingress-nginx: every pod";

fn three_tier_edges() -> BTreeSet<(String, String, String)> {
    let mut want = vec![
        (INGRESS, FRONTEND, "TCP 3000"),
        (FRONTEND, BACKEND, "TCP 8080"),
        (BACKEND, DATABASE, "TCP 5432"),
    ];
    for tier in [FRONTEND, BACKEND, DATABASE, OTHER] {
        want.push((tier, DNS, "TCP 53, UDP 53"));
    }
    want.into_iter()
        .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
        .collect()
}

#[test]
fn explain_dot_draws_each_tier_reaching_the_next_and_dns_only() {
    let dot = explain("dot", &THREE_TIER, "");
    let picture = read_dot(&dot);
    assert_eq!(
        picture.nodes,
        [FRONTEND, BACKEND, DATABASE, OTHER, DNS, INGRESS]
            .into_iter()
            .map(str::to_owned)
            .collect::<BTreeSet<_>>(),
        "{dot}"
    );
    assert!(picture.has(FRONTEND, BACKEND, "TCP 8080"), "{dot}");
    assert!(picture.has(BACKEND, DATABASE, "TCP 5432"), "{dot}");
    assert!(picture.has(DATABASE, DNS, "TCP 53, UDP 53"), "{dot}");
    // What no policy allows is not drawn: the frontend never reaches the database, nothing
    // reaches back up a tier, and the catch-all set receives nothing.
    assert!(!picture.any_edge(FRONTEND, DATABASE), "{dot}");
    assert!(!picture.any_edge(DATABASE, BACKEND), "{dot}");
    assert!(!picture.edges.iter().any(|(_, to, _)| to == OTHER), "{dot}");
    // Exactly these edges: both policies of a connection (egress and ingress) make one edge.
    assert_eq!(picture.edges, three_tier_edges(), "{dot}");
    // Shapes say what a node is; three namespaces, three clusters; all edges plainly allowed.
    assert!(dot.contains("[label=\"DNS: pods k8s-app=kube-dns\", shape=hexagon]"));
    assert!(dot.contains("[label=\"every pod\", shape=folder]"));
    assert!(dot.contains("[label=\"pods tier=frontend\", shape=box, style=rounded]"));
    assert_eq!(dot.matches("subgraph cluster_").count(), 3, "{dot}");
    assert!(!dot.contains("legend"), "{dot}");
}

#[test]
fn explain_mermaid_draws_the_same_edges_as_dot() {
    let mermaid = explain("mermaid", &THREE_TIER, "");
    assert_eq!(mermaid.lines().next(), Some("flowchart LR"));
    let picture = read_mermaid(&mermaid);
    assert_eq!(picture.edges, three_tier_edges(), "{mermaid}");
    assert_eq!(picture, read_dot(&explain("dot", &THREE_TIER, "")));
    assert!(
        mermaid.contains("{{\"DNS: pods k8s-app=kube-dns\"}}"),
        "{mermaid}"
    );
    assert!(mermaid.contains("    class "), "{mermaid}");
    assert!(!mermaid.contains("linkStyle"), "{mermaid}");
    // The same input prints the same picture.
    assert_eq!(mermaid, explain("mermaid", &THREE_TIER, ""));
}

/// The picture under "Pictures" in docs/networkpolicies.md is what the command prints, so the
/// docs cannot drift from the code.
#[test]
fn the_mermaid_picture_in_the_docs_is_what_explain_prints() {
    let doc = std::fs::read_to_string(repo_path("docs/networkpolicies.md")).unwrap();
    let section = doc
        .split("\n### Pictures\n")
        .nth(1)
        .expect("docs/networkpolicies.md has a section ### Pictures");
    let block = section
        .split("```mermaid\n")
        .nth(1)
        .and_then(|rest| rest.split("```\n").next())
        .expect("the Pictures section has a ```mermaid block");
    assert_eq!(block, explain("mermaid", &THREE_TIER, ""));
    let command = "palisade netpol explain -f tests/data/guides/default-deny.yaml -f tests/data/guides/allow-dns.yaml -f tests/data/guides/three-tier -o mermaid";
    assert!(section.contains(command), "the section shows the command");
}

const PODS: &str = "
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: payments, labels: {tier: frontend}}
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: payments, labels: {tier: frontend}}
---
apiVersion: v1
kind: Pod
metadata: {name: api-1, namespace: payments, labels: {tier: backend}}
---
apiVersion: v1
kind: Pod
metadata: {name: pg-0, namespace: payments, labels: {tier: database}}
---
apiVersion: v1
kind: Pod
metadata: {name: tool, namespace: tools}
";

#[test]
fn pods_in_the_input_are_drawn_one_by_one_and_filters_draw_less() {
    let mut args = THREE_TIER.to_vec();
    args.extend(["-f", "-"]);
    let picture = read_dot(&explain("dot", &args, PODS));
    for web in ["payments: web-1", "payments: web-2"] {
        assert!(
            picture.has(web, "payments: api-1", "TCP 8080"),
            "{picture:#?}"
        );
        assert!(picture.has(web, DNS, "TCP 53, UDP 53"), "{picture:#?}");
        assert!(!picture.any_edge(web, "payments: pg-0"), "{picture:#?}");
    }
    assert!(picture.has("payments: api-1", "payments: pg-0", "TCP 5432"));
    // No policy in tools: its pod is open both ways, to and from anywhere.
    assert!(picture.has("anywhere", "tools: tool", "every port (not isolated)"));
    assert!(picture.has("tools: tool", "anywhere", "every port (not isolated)"));

    // DNS pods in the input are drawn as DNS, one by one.
    let with_dns = format!(
        "{PODS}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: coredns-0, namespace: kube-system, labels: {{k8s-app: kube-dns}}}}\n"
    );
    let dot = explain("dot", &args, &with_dns);
    assert!(
        dot.contains("[label=\"coredns-0\", shape=hexagon]"),
        "{dot}"
    );
    let picture = read_dot(&dot);
    assert!(picture.has(
        "payments: web-1",
        "kube-system: coredns-0",
        "TCP 53, UDP 53"
    ));
    assert!(!picture.nodes.contains(DNS), "{dot}");

    // One namespace of a big cluster: -n draws it alone (and the peers it names).
    args.extend(["-n", "payments"]);
    let picture = read_dot(&explain("dot", &args, PODS));
    assert!(!picture.nodes.iter().any(|n| n.starts_with("tools:")));
    assert!(picture.has("payments: web-1", "payments: api-1", "TCP 8080"));

    // One set: its peers are nodes for their selectors, not sets left out of the picture.
    let mut args = THREE_TIER.to_vec();
    args.extend(["-l", "tier=frontend"]);
    let picture = read_dot(&explain("dot", &args, ""));
    assert_eq!(
        picture.edges,
        [
            (INGRESS, FRONTEND, "TCP 3000"),
            (FRONTEND, "payments: pods tier=backend", "TCP 8080"),
            (FRONTEND, DNS, "TCP 53, UDP 53"),
        ]
        .into_iter()
        .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
        .collect::<BTreeSet<_>>()
    );
}

fn graph_of(yaml: &str) -> Graph {
    let docs = manifest::parse_str(yaml, std::path::Path::new("test.yaml")).unwrap();
    let world = World::read(&docs).unwrap();
    graph::from_explanations(&explain::explain(&world, &Filter::default()))
}

fn label_of<'a>(g: &'a Graph, id: &str) -> &'a str {
    &g.nodes.iter().find(|n| n.id == id).unwrap().label
}

#[test]
fn addresses_selectors_and_rules_without_peers_are_one_node_each() {
    let g = graph_of(
        "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress, Egress]
  ingress:
    - ports: [{port: 443}]
    - from: [{podSelector: {matchLabels: {app: web}}}]
  egress:
    - to: [{ipBlock: {cidr: 0.0.0.0/0, except: [169.254.169.254/32]}}]
      ports: [{port: 443}]
    - to: [{ipBlock: {cidr: 0.0.0.0/0, except: [169.254.169.254/32]}}]
      ports: [{port: 80}]
    - to: [{podSelector: {matchLabels: {role: cache}}}]
      ports: [{port: 6379}]
    - to: [{namespaceSelector: {matchLabels: {team: ops}}}]
      ports: [{port: 9100}]
",
    );
    let kinds: BTreeMap<&str, (NodeKind, Option<&str>)> = g
        .nodes
        .iter()
        .map(|n| (n.label.as_str(), (n.kind, n.group.as_deref())))
        .collect();
    assert_eq!(
        kinds,
        BTreeMap::from([
            ("anywhere", (NodeKind::Internet, None)),
            ("pods app=web", (NodeKind::Pods, Some("shop"))),
            ("other pods", (NodeKind::Pods, Some("shop"))),
            (
                "0.0.0.0/0 except 169.254.169.254/32",
                (NodeKind::Internet, None)
            ),
            ("pods role=cache", (NodeKind::Pods, Some("shop"))),
            (
                "every pod in namespaces team=ops (none known)",
                (NodeKind::Namespace, None)
            ),
        ]),
        "{g:#?}"
    );
    let dot = g.to_dot();
    // The two rules to the same block are one edge; the app=web peer is the app=web set itself.
    assert!(dot.contains("[label=\"TCP 80, TCP 443\""), "{dot}");
    let web = g
        .edges
        .iter()
        .filter(|e| e.to == e.from)
        .map(|e| label_of(&g, &e.from))
        .collect::<Vec<_>>();
    assert_eq!(web, ["pods app=web"], "{dot}");
    assert!(
        g.edges
            .iter()
            .any(|e| e.from == "anywhere" && e.label == "TCP 443")
    );
}

#[test]
fn other_commands_refuse_the_pictures() {
    let (code, _, err) = palisade(
        &[
            "netpol",
            "query",
            "-f",
            "tests/data/guides/default-deny.yaml",
            "--from",
            "10.0.0.1",
            "--to",
            "10.0.0.2",
            "--port",
            "80",
            "-o",
            "dot",
        ],
        "",
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("invalid value 'dot'") && err.contains("[possible values: text, json]"),
        "{err}"
    );
    let (code, _, err) = palisade(&["test", "-f", "-", "-o", "mermaid"], "");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("invalid value 'mermaid'"), "{err}");
}
