//! `palisade netpol explain`: the guides' examples against tables checked by hand, and the
//! Kubernetes semantics the tables rest on.

use std::process::Command;

use palisade::manifest;
use palisade::netpol;

use crate::common::repo_path;

const BIN: &str = env!("CARGO_BIN_EXE_palisade");

fn explain_cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(["netpol", "explain"])
        .args(args)
        .current_dir(repo_path(""))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn expected(name: &str) -> String {
    std::fs::read_to_string(repo_path(&format!("tests/data/netpol/{name}"))).unwrap()
}

#[test]
fn the_three_tier_example_is_explained_tier_by_tier() {
    let (ok, out, err) = explain_cli(&[
        "-f",
        "tests/data/guides/default-deny.yaml",
        "-f",
        "tests/data/guides/allow-dns.yaml",
        "-f",
        "tests/data/guides/three-tier",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out, expected("three-tier.txt"));
    // What the table says, read back: each tier is reachable from the one before it only.
    let ingress: Vec<&str> = out.lines().filter(|l| l.contains("  in  ")).collect();
    assert_eq!(ingress.len(), 4, "{out}");
    assert!(ingress[0].starts_with("every pod") && ingress[0].contains("nothing"));
    assert!(
        ingress[1].contains("pods tier=frontend in payments") && ingress[1].contains("TCP 8080")
    );
    assert!(
        ingress[2].contains("pods tier=backend in payments") && ingress[2].contains("TCP 5432")
    );
    assert!(
        ingress[3].contains("every pod in namespace ingress-nginx")
            && ingress[3].contains("TCP 3000")
    );
    let dns = out
        .lines()
        .filter(|l| l.contains(" out ") && l.contains("k8s-app=kube-dns in namespace kube-system"))
        .count();
    assert_eq!(dns, 4, "DNS egress for every set of pods: {out}");
}

#[test]
fn the_database_isolation_example_lets_only_the_api_reach_postgres() {
    let (ok, out, err) = explain_cli(&["-f", "tests/data/guides/database-isolation", "-o", "text"]);
    assert!(ok, "{err}");
    assert_eq!(out, expected("database-isolation.txt"));
    let (ok, json, err) =
        explain_cli(&["-f", "tests/data/guides/database-isolation", "-o", "json"]);
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let into_postgres: Vec<&serde_json::Value> = json[0]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["pods"] == "app=postgres" && r["direction"] == "in")
        .collect();
    assert_eq!(into_postgres.len(), 1);
    assert_eq!(into_postgres[0]["peers"], "pods app=api in orders");
    assert_eq!(into_postgres[0]["ports"], "TCP 5432");
}

fn explain(yaml: &str, namespace: &str) -> Vec<netpol::Row> {
    let docs = manifest::parse_str(yaml, std::path::Path::new("test.yaml")).unwrap();
    let (policies, namespaces) = netpol::read(&docs).unwrap();
    netpol::explain(namespace, &policies, &namespaces).rows
}

fn rows_of<'a>(rows: &'a [netpol::Row], pods: &str, direction: &str) -> Vec<(&'a str, &'a str)> {
    rows.iter()
        .filter(|r| r.pods == pods && r.direction == direction)
        .map(|r| (r.peers.as_str(), r.ports.as_str()))
        .collect()
}

#[test]
fn a_direction_no_policy_isolates_allows_everything() {
    // Ingress only (policyTypes defaults to Ingress when there are no egress rules).
    let rows = explain(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: shop}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - ports: [{port: 443}]\n",
        "shop",
    );
    assert_eq!(
        rows_of(&rows, "app=web", "in"),
        [("every source", "TCP 443")]
    );
    assert_eq!(
        rows_of(&rows, "app=web", "out"),
        [("every destination", "every port")]
    );
    assert_eq!(
        rows_of(&rows, "every pod", "in"),
        [("every source", "every port")]
    );
    let why: Vec<&str> = rows
        .iter()
        .filter(|r| r.pods == "every pod")
        .map(|r| r.policy.as_str())
        .collect();
    assert_eq!(why, ["(no policy isolates these pods)"; 2]);
}

#[test]
fn pods_in_two_sets_get_the_union_of_both() {
    let rows = explain(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api, namespace: shop}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Ingress]
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 8080}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: metrics, namespace: shop}
spec:
  podSelector: {matchExpressions: [{key: tier, operator: In, values: [backend]}]}
  policyTypes: [Ingress]
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: monitoring}}}]
    ports: [{port: 9090}, {protocol: UDP, port: 7000, endPort: 7010}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: Exists}]}}]}]
---
apiVersion: v1
kind: Namespace
metadata: {name: prometheus, labels: {team: monitoring}}
---
apiVersion: v1
kind: Namespace
metadata: {name: grafana, labels: {team: monitoring}}
"#,
        "shop",
    );
    assert_eq!(
        rows_of(&rows, "app=api", "in"),
        [("pods app=web in shop", "TCP 8080")]
    );
    let metrics = [(
        "every pod in namespaces team=monitoring (prometheus, grafana)",
        "TCP 9090, UDP 7000-7010",
    )];
    assert_eq!(rows_of(&rows, "tier=backend", "in"), metrics);
    // A pod labelled app=api and tier=backend is selected by both policies: it gets both rules.
    assert_eq!(
        rows_of(&rows, "app=api,tier=backend", "in"),
        [("pods app=web in shop", "TCP 8080"), metrics[0]]
    );
    // app=api and app=web cannot hold together: no such set.
    assert!(!rows.iter().any(|r| r.pods.contains("app=api,app=web")));
    // A selector every namespace meets reads as every namespace.
    assert_eq!(
        rows_of(&rows, "app=web", "in"),
        [("every pod in every namespace", "every port")]
    );
}

#[test]
fn a_malformed_policy_names_its_file_object_and_field() {
    let docs = manifest::parse_str(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: bad, namespace: shop}\nspec:\n  podSelector: {}\n  ingress:\n  - from: [{ipBlock: {except: [10.0.0.0/8]}}]\n",
        std::path::Path::new("policies.yaml"),
    )
    .unwrap();
    let err = netpol::read(&docs).unwrap_err();
    assert!(err.contains("policies.yaml"), "{err}");
    assert!(err.contains("NetworkPolicy \"bad\""), "{err}");
    assert!(
        err.contains("spec.ingress[0].from[0].ipBlock.cidr: required"),
        "{err}"
    );
    let (ok, _, err) = explain_cli(&["-f", "tests/data/admission"]);
    assert!(!ok);
    assert!(err.contains("no NetworkPolicy"), "{err}");
}
