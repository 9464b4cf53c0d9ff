//! `palisade netpol explain` and `query`: the guides' examples against tables checked by hand,
//! and the Kubernetes rules that `explain` used to get wrong (issue 27), each stated.

use std::io::Write;
use std::process::{Command, Stdio};

use palisade::manifest;
use palisade::netpol::World;
use palisade::netpol::explain::{self, Explanation, Filter};

use crate::common::repo_path;

const BIN: &str = env!("CARGO_BIN_EXE_palisade");

fn cli(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .arg("netpol")
        .args(args)
        .current_dir(repo_path(""))
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn expected(name: &str) -> String {
    std::fs::read_to_string(repo_path(&format!("tests/data/netpol/{name}"))).unwrap()
}

fn explain_yaml(yaml: &str) -> Vec<Explanation> {
    let docs = manifest::parse_str(yaml, std::path::Path::new("test.yaml")).unwrap();
    let world = World::read(&docs).unwrap();
    explain::explain(&world, &Filter::default())
}

#[test]
fn the_three_tier_example_is_explained_tier_by_tier() {
    let (code, out, err) = cli(&[
        "explain",
        "-f",
        "tests/data/guides/default-deny.yaml",
        "-f",
        "tests/data/guides/allow-dns.yaml",
        "-f",
        "tests/data/guides/three-tier",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, expected("three-tier.txt"));
    // Read back: each tier is reachable from the one before it only, DNS for every set.
    let ingress: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with("in "))
        .collect();
    assert_eq!(ingress.len(), 4, "{out}");
    assert!(
        ingress
            .iter()
            .any(|l| l.contains("pods tier=frontend in payments") && l.contains("TCP 8080"))
    );
    assert!(
        ingress
            .iter()
            .any(|l| l.contains("pods tier=backend in payments") && l.contains("TCP 5432"))
    );
    assert!(
        ingress
            .iter()
            .any(|l| l.contains("every pod in namespace ingress-nginx") && l.contains("TCP 3000"))
    );
    let dns = out
        .lines()
        .filter(|l| {
            l.contains("out") && l.contains("pods k8s-app=kube-dns in namespace kube-system")
        })
        .count();
    assert_eq!(dns, 4, "DNS egress for every set of pods: {out}");
}

#[test]
fn the_database_isolation_example_lets_only_the_api_reach_postgres() {
    let (code, out, err) = cli(&["explain", "-f", "tests/data/guides/database-isolation"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, expected("database-isolation.txt"));
    let (code, json, err) = cli(&[
        "explain",
        "-f",
        "tests/data/guides/database-isolation",
        "-o",
        "json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let ns = &json["namespaces"][0];
    assert_eq!(ns["namespace"], "orders");
    assert_eq!(ns["mode"], "sets");
    let postgres: Vec<&serde_json::Value> = ns["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["labels"]["app"] == "postgres")
        .collect();
    assert_eq!(postgres.len(), 1);
    let allow = postgres[0]["ingress"]["allow"].as_array().unwrap();
    assert_eq!(allow.len(), 1, "{allow:?}");
    assert_eq!(allow[0]["peers"][0]["kind"], "pods");
    assert_eq!(allow[0]["peers"][0]["pods"], "app=api");
    assert_eq!(allow[0]["peers"][0]["namespaces"]["own"], "orders");
    assert_eq!(
        allow[0]["ports"]["ranges"]["TCP"],
        serde_json::json!([[5432, 5432]])
    );
}

const NS: &str =
    "apiVersion: v1\nkind: Namespace\nmetadata: {name: NAME, labels: {team: TEAM}}\n---\n";

fn namespace(name: &str, team: &str) -> String {
    NS.replace("NAME", name).replace("TEAM", team)
}

// A NotIn (or DoesNotExist) namespaceSelector matches the namespaces without those values, not
// every namespace.
#[test]
fn a_notin_namespace_selector_is_not_every_namespace() {
    let yaml = format!(
        "{}{}apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p, namespace: a}}\nspec:\n  podSelector: {{}}\n  ingress:\n  - from: [{{namespaceSelector: {{matchExpressions: [{{key: team, operator: NotIn, values: [red]}}]}}}}]\n",
        namespace("a", "red"),
        namespace("b", "blue")
    );
    let e = explain_yaml(&yaml);
    let peer = &e[0].entries[0].ingress.allow[0].peers[0];
    let text = peer.text();
    assert_eq!(text, "every pod in namespaces team notin (red) (known: b)");
    let json = serde_json::to_value(peer).unwrap();
    assert_eq!(json["namespaces"]["every"], false);
    assert_eq!(json["namespaces"]["known"], serde_json::json!(["b"]));
}

// SetDefaults_NetworkPolicy: `policyTypes: []` is defaulted to [Ingress]; no policyTypes with
// `egress: []` does not isolate egress (egress stays open).
#[test]
fn policy_types_are_defaulted_as_the_api_server_does() {
    let e = explain_yaml(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: a}\nspec:\n  podSelector: {}\n  policyTypes: []\n",
    );
    let entry = &e[0].entries[0];
    assert!(entry.ingress.isolated && entry.ingress.allow.is_empty());
    assert!(!entry.egress.isolated);
    let e = explain_yaml(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: a}\nspec:\n  podSelector: {}\n  egress: []\n",
    );
    let entry = &e[0].entries[0];
    assert!(entry.ingress.isolated);
    assert!(
        !entry.egress.isolated,
        "egress: [] without policyTypes leaves egress open"
    );
}

// Each pod is in exactly one set: sets are the pods selected by exactly the same policies.
#[test]
fn each_pod_is_in_one_set_only() {
    let mut yaml = String::new();
    for (name, sel) in [
        ("web", "{matchLabels: {app: web}}"),
        ("backend", "{matchLabels: {tier: backend}}"),
        ("all", "{}"),
    ] {
        yaml.push_str(&format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: a}}\nspec:\n  podSelector: {sel}\n  ingress: [{{ports: [{{port: 80}}]}}]\n"
        ));
    }
    let e = explain_yaml(&yaml);
    let entries = &e[0].entries;
    // app=web x tier=backend: both, either, neither.
    assert_eq!(entries.len(), 4, "{entries:#?}");
    let mut sets: Vec<Vec<String>> = entries.iter().map(|x| x.selected_by.clone()).collect();
    sets.sort();
    sets.dedup();
    assert_eq!(sets.len(), 4, "no two rows for the same pods");
    let other = entries.iter().find(|x| x.selected_by == ["all"]).unwrap();
    assert_eq!(other.subject, "other pods");
    assert_eq!(other.excluding, ["app=web", "tier=backend"]);
}

// More than 64 sets are all listed (the old explanation dropped them past 64).
#[test]
fn every_set_is_listed_however_many() {
    let mut yaml = String::new();
    for i in 0..7 {
        yaml.push_str(&format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p{i}, namespace: a}}\nspec:\n  podSelector: {{matchExpressions: [{{key: k{i}, operator: Exists}}]}}\n  ingress: [{{ports: [{{port: {}}}]}}]\n",
            1000 + i
        ));
    }
    let e = explain_yaml(&yaml);
    assert_eq!(
        e[0].entries.len(),
        128,
        "2^7 ways to carry or not carry each label"
    );
    let all = e[0]
        .entries
        .iter()
        .find(|x| x.selected_by.len() == 7)
        .unwrap();
    assert_eq!(all.ingress.allow.len(), 7);
}

#[test]
fn a_closed_pipe_ends_explain_quietly() {
    let mut yaml = String::new();
    for n in 0..400 {
        yaml.push_str(&format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p{n}, namespace: ns{n}}}\nspec:\n  podSelector: {{}}\n  ingress: [{{ports: [{{port: 80}}]}}]\n"
        ));
    }
    let mut child = Command::new(BIN)
        .args(["netpol", "explain", "-f", "-", "-o", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    // Read one line, then close the pipe, as `| head -1` does.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

#[test]
fn many_namespaces_are_summarised_one_line_each_with_filters_for_detail() {
    let mut yaml = String::new();
    for n in 0..30 {
        yaml.push_str(&format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p, namespace: ns{n:02}}}\nspec:\n  podSelector: {{}}\n  ingress: [{{ports: [{{port: 80}}]}}]\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(&file, yaml).unwrap();
    let f = file.to_str().unwrap();
    let (code, out, err) = cli(&["explain", "-f", f]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.lines().count(), 31, "{out}");
    assert!(out.starts_with("30 namespaces: one line each"), "{out}");
    assert!(
        out.contains("ns07: 1 NetworkPolicies, 1 pod sets; not isolated: 0 in, 1 out"),
        "{out}"
    );
    let (code, out, _) = cli(&["explain", "-f", f, "-n", "ns07"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("namespace ns07 (1 NetworkPolicy)"), "{out}");
    assert!(out.contains("every source  TCP 80  p ingress[0]"), "{out}");
}

#[test]
fn a_malformed_policy_names_its_file_object_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policies.yaml");
    std::fs::write(
        &file,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: bad, namespace: shop}\nspec:\n  podSelector: {}\n  ingress:\n  - from: [{ipBlock: {except: [10.0.0.0/8]}}]\n",
    )
    .unwrap();
    // Exit 2 on bad input, as `netpol query`, `test`, `verify` and `audit`.
    let (code, _, err) = cli(&["explain", "-f", file.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("policies.yaml"), "{err}");
    assert!(err.contains("NetworkPolicy \"bad\""), "{err}");
    assert!(
        err.contains("spec.ingress[0].from[0].ipBlock.cidr: required"),
        "{err}"
    );
    let (code, _, err) = cli(&["explain", "-f", "tests/data/admission"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no NetworkPolicy"), "{err}");
    let (code, _, err) = cli(&["explain", "-f", "tests/data/netpol/missing.yaml"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("missing.yaml"), "{err}");
    let (code, _, err) = cli(&[
        "explain",
        "-f",
        "tests/data/guides/default-deny.yaml",
        "--pod",
        "web",
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("NAMESPACE/NAME"), "{err}");
}

#[test]
fn query_exits_2_on_bad_input_and_answers_for_addresses() {
    let files = [
        "-f",
        "tests/data/guides/default-deny.yaml",
        "-f",
        "tests/data/guides/external-api.yaml",
    ];
    let run = |from: &str, to: &str, port: &str| {
        let mut args = vec!["query"];
        args.extend(files);
        args.extend(["--from", from, "--to", to, "--port", port]);
        cli(&args)
    };
    let (code, _, err) = run("payments/web", "8.8.8.8", "443");
    assert_eq!(code, Some(2), "a pod not in the input");
    assert!(err.contains("no Pod web in namespace payments"), "{err}");
    let (code, _, err) = run("8.8.8.8", "1.1.1.1", "http");
    assert_eq!(code, Some(2));
    assert!(err.contains("--port"), "{err}");
    let (code, _, err) = run("nonsense", "1.1.1.1", "80");
    assert_eq!(code, Some(2));
    assert!(err.contains("NAMESPACE/POD"), "{err}");
    // Between two addresses outside the cluster no policy applies.
    let (code, out, _) = run("8.8.8.8", "1.1.1.1", "80/UDP");
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn query_names_the_policies_that_decide() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("all.yaml");
    let pods = "---\napiVersion: v1\nkind: Pod\nmetadata: {name: api, namespace: payments, labels: {tier: backend}}\nstatus: {podIP: 10.1.0.5}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: payments, labels: {tier: frontend}}\nstatus: {podIP: 10.1.0.6}\n";
    let mut text = String::new();
    for f in ["default-deny.yaml", "external-api.yaml"] {
        text.push_str("---\n");
        text.push_str(
            &std::fs::read_to_string(repo_path(&format!("tests/data/guides/{f}"))).unwrap(),
        );
    }
    text.push_str(pods);
    std::fs::write(&file, text).unwrap();
    let f = file.to_str().unwrap();
    let query = |from: &str, to: &str, port: &str| {
        cli(&["query", "-f", f, "--from", from, "--to", to, "--port", port])
    };
    let (code, out, err) = query("payments/api", "8.8.8.8", "443");
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("allowed by payments/allow-external-api egress[0]"),
        "{out}"
    );
    let (code, out, _) = query("payments/api", "169.254.169.254", "443");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("isolated by default-deny-all, allow-external-api"),
        "{out}"
    );
    // A range is allowed only when every address of it is.
    let (code, out, _) = query("payments/api", "169.254.0.0/16", "443");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("169.254.169.254/32: denied"), "{out}");
    let (code, out, _) = query("payments/web", "payments/api", "8080");
    assert_eq!(code, Some(1), "{out}");
}
