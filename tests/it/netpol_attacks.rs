//! NetworkPolicies as a hostile tenant writes them (issue 27): every way to spread a permissive
//! policy over rules, policies, peers and spellings, judged by the default bundle through the one
//! decision path with the namespace's other policies in the inventory, as the webhook judges
//! them. Each attack is shown admitted in pieces where a piece alone is harmless, and denied once
//! the pieces add up; the guides' and the generated policies stay admitted.

use palisade::admission::{Review, decode};
use palisade::bundle::Bundle;
use palisade::inventory::Inventory;
use palisade::manifest::files;
use palisade::policy::{Action, EngineOptions};
use serde_json::{Value, json};

use crate::common::{fixture, repo_path, validate};

fn bundle() -> &'static Bundle {
    static BUNDLE: std::sync::OnceLock<Bundle> = std::sync::OnceLock::new();
    BUNDLE.get_or_init(|| {
        palisade::bundle::load(&repo_path("policies"), &EngineOptions::default()).unwrap()
    })
}

/// The labelled namespaces, the guides' default-deny and allow-dns in `payments`, and `others`.
fn inventory(others: &[Value]) -> Inventory {
    let mut objects: Vec<Value> = Vec::new();
    for f in [
        "tests/data/mutation/namespaces.yaml",
        "tests/data/guides/default-deny.yaml",
        "tests/data/guides/allow-dns.yaml",
    ] {
        objects.extend(
            files::read_path(&repo_path(f))
                .unwrap()
                .into_iter()
                .map(|d| d.value),
        );
    }
    objects.extend(others.iter().cloned());
    Inventory::from_objects(objects)
}

fn policy(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "payments"},
        "spec": spec,
    })
}

fn ingress_from_blocks(name: &str, cidrs: &[&str]) -> Value {
    let peers: Vec<Value> = cidrs
        .iter()
        .map(|c| json!({"ipBlock": {"cidr": c}}))
        .collect();
    policy(
        name,
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"], "ingress": [{"from": peers, "ports": [{"port": 443}]}]}),
    )
}

/// A captured review of `operation`, carrying `object` (and `old`).
fn review(operation: &str, object: &Value, old: Option<&Value>) -> Review {
    let name = match operation {
        "CREATE" => "admission/validate-create-networkpolicy.json",
        "UPDATE" => "admission/validate-update-networkpolicy.json",
        _ => "admission/validate-delete-networkpolicy.json",
    };
    let mut v: Value = serde_json::from_slice(&fixture(name)).unwrap();
    let r = &mut v["request"];
    r["name"] = object["metadata"]["name"].clone();
    r["namespace"] = "payments".into();
    if operation == "DELETE" {
        r["oldObject"] = object.clone();
        r["object"] = Value::Null;
    } else {
        r["object"] = object.clone();
        r["oldObject"] = old.cloned().unwrap_or(Value::Null);
    }
    decode(&serde_json::to_vec(&v).unwrap()).unwrap()
}

/// The denial messages of the default bundle for `object` created next to `others`.
fn denied_with(
    operation: &str,
    object: &Value,
    old: Option<&Value>,
    others: &[Value],
) -> Vec<String> {
    validate(
        bundle(),
        &inventory(others),
        &review(operation, object, old),
    )
    .into_iter()
    .filter(|v| v.action == Action::Deny)
    .map(|v| v.message)
    .collect()
}

fn denied(object: &Value, others: &[Value]) -> Vec<String> {
    denied_with("CREATE", object, None, others)
}

#[track_caller]
fn assert_denied(messages: &[String], parts: &[&str]) {
    assert!(
        messages.iter().any(|m| parts.iter().all(|p| m.contains(p))),
        "no denial contains all of {parts:?}: {messages:#?}"
    );
}

#[track_caller]
fn assert_admitted(messages: &[String]) {
    assert!(messages.is_empty(), "{messages:#?}");
}

#[test]
fn the_internet_in_four_rules_is_the_internet() {
    let rules: Vec<Value> = ["0.0.0.0/2", "64.0.0.0/2", "128.0.0.0/2", "192.0.0.0/2"]
        .iter()
        .map(|c| json!({"from": [{"ipBlock": {"cidr": c}}], "ports": [{"port": 443}]}))
        .collect();
    let p = policy(
        "quarters",
        json!({"podSelector": {}, "policyTypes": ["Ingress"], "ingress": rules}),
    );
    let d = denied(&p, &[]);
    assert_denied(
        &d,
        &[
            "all of the public IPv4 internet",
            "\"quarters\" ingress[0]",
            "\"quarters\" ingress[3]",
            "publicIngressNamespaces",
        ],
    );
    // One quarter alone is no path from the internet.
    assert_admitted(&denied(
        &ingress_from_blocks("quarter", &["0.0.0.0/2"]),
        &[],
    ));
}

#[test]
fn two_halves_with_token_excepts_in_two_policies_add_up() {
    let a = policy(
        "half-a",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/1", "except": ["32.0.0.0/3"]}}], "ports": [{"port": 443}]}]}),
    );
    let b = policy(
        "half-b",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [{"ipBlock": {"cidr": "128.0.0.0/1", "except": ["203.0.113.7/32"]}}], "ports": [{"port": 443}]}]}),
    );
    assert_admitted(&denied(&a, &[]));
    assert_admitted(&denied(&b, &[]));
    let d = denied(&b, std::slice::from_ref(&a));
    assert_denied(
        &d,
        &[
            "pods app=web may be reached from",
            "of the public IPv4 internet",
            "\"half-a\" ingress[0]",
            "\"half-b\" ingress[0]",
        ],
    );
}

#[test]
fn a_block_just_under_the_threshold_next_to_another_adds_up() {
    let a = ingress_from_blocks("first", &["0.0.0.0/2"]);
    let b = ingress_from_blocks("second", &["64.0.0.0/2"]);
    assert_admitted(&denied(&b, &[]));
    assert_denied(
        &denied(&b, &[a]),
        &[
            "of the public IPv4 internet",
            "\"first\" ingress[0]",
            "\"second\" ingress[0]",
        ],
    );
}

#[test]
fn all_routable_ipv6_is_the_ipv6_internet() {
    assert_denied(
        &denied(&ingress_from_blocks("v6", &["2000::/3"]), &[]),
        &["all of the public IPv6 internet"],
    );
    let a = ingress_from_blocks("v6-a", &["2000::/5", "2800::/7"]);
    let b = ingress_from_blocks("v6-b", &["3000::/5", "3800::/7"]);
    assert_admitted(&denied(&a, &[]));
    assert_admitted(&denied(&b, &[]));
    assert_denied(
        &denied(&b, &[a]),
        &["62% of the public IPv6 internet", "\"v6-a\" ingress[0]"],
    );
    // Outside 2000::/3 is not the internet.
    assert_admitted(&denied(&ingress_from_blocks("ula", &["fc00::/7"]), &[]));
}

#[test]
fn ipv4_mapped_ipv6_is_judged_as_ipv4() {
    for spelling in ["::ffff:0:0/96", "::ffff:0.0.0.0/96", "64:ff9b::/96"] {
        assert_denied(
            &denied(&ingress_from_blocks("mapped", &[spelling]), &[]),
            &["all of the public IPv4 internet"],
        );
    }
    for spelling in [
        "::ffff:169.254.169.254/128",
        "::ffff:a9fe:a9fe/128",
        "::ffff:169.254.0.0/112",
        "64:ff9b::a9fe:a9fe/128",
    ] {
        let p = policy(
            "metadata",
            json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": spelling}}], "ports": [{"port": 80}]}]}),
        );
        assert_denied(
            &denied(&p, &[]),
            &["\"metadata\" egress[0] reaches the cloud metadata address 169.254.169.254/32"],
        );
    }
    // The same range, excepted in mapped form, is excepted.
    let p = policy(
        "mapped-except",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "::ffff:0:0/96", "except": ["::ffff:169.254.169.254/128"]}}], "ports": [{"port": 443}]}]}),
    );
    assert!(
        !denied(&p, &[]).iter().any(|m| m.contains("metadata")),
        "{:?}",
        denied(&p, &[])
    );
}

#[test]
fn the_dns_peer_exempts_only_dns_to_the_dns_pods() {
    let dns = json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}});
    let p = policy(
        "dns-and-more",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [dns.clone(), {"namespaceSelector": {}}]}]}),
    );
    let d = denied(&p, &[]);
    assert_denied(
        &d,
        &[
            "every pod may reach pods of every namespace",
            "\"dns-and-more\" egress[0]",
        ],
    );
    assert_denied(&d, &["on every TCP/UDP/SCTP port"]);
    // Every port to the DNS pods is more than DNS.
    let p = policy(
        "dns-any-port",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [dns.clone()]}]}),
    );
    assert_denied(
        &denied(&p, &[]),
        &["may reach pods k8s-app=kube-dns in namespace kube-system on every"],
    );
    // DNS on its ports, next to the generated allow-dns, is fine.
    let p = policy(
        "dns",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [dns], "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]}),
    );
    assert_admitted(&denied(&p, &[]));
}

fn ports_from(name: &str, from: Value, ranges: &[(u32, u32)]) -> Value {
    let ports: Vec<Value> = ranges
        .iter()
        .map(|(a, b)| {
            if a == b {
                json!({"port": a})
            } else {
                json!({"port": a, "endPort": b})
            }
        })
        .collect();
    policy(
        name,
        json!({"podSelector": {"matchLabels": {"app": "api"}}, "policyTypes": ["Ingress"], "ingress": [{"from": [from], "ports": ports}]}),
    )
}

#[test]
fn adjacent_port_ranges_are_counted_together() {
    let frontend = json!({"podSelector": {"matchLabels": {"tier": "frontend"}}});
    let all: Vec<(u32, u32)> = (0..64)
        .map(|i| (i * 1024 + 1, ((i + 1) * 1024).min(65535)))
        .collect();
    assert_denied(
        &denied(&ports_from("chunks", frontend.clone(), &all), &[]),
        &["on every TCP port", "\"chunks\" ingress[0]"],
    );
    // 1,000 + 1,000 ports to the same peer in two policies: 2,000, over the 1,024 allowed.
    let a = ports_from("first", frontend.clone(), &[(1, 1000)]);
    let b = ports_from("second", frontend, &[(1001, 2000)]);
    assert_admitted(&denied(&a, &[]));
    assert_denied(
        &denied(&b, &[a]),
        &[
            "on 2000 TCP ports (TCP 1-2000)",
            "more than the 1024 allowed",
            "\"first\" ingress[0]",
            "\"second\" ingress[0]",
        ],
    );
}

#[test]
fn ports_spread_over_peers_that_one_pod_matches_add_up() {
    // Pods labelled app=x, or tier=y, or both: a pod with both labels gets both rules.
    let a = ports_from(
        "by-app",
        json!({"podSelector": {"matchLabels": {"app": "x"}}}),
        &[(1, 1000)],
    );
    let b = ports_from(
        "by-tier",
        json!({"podSelector": {"matchLabels": {"tier": "y"}}}),
        &[(1001, 2000)],
    );
    assert_admitted(&denied(&a, &[]));
    assert_denied(
        &denied(&b, std::slice::from_ref(&a)),
        &["on 2000 TCP ports", "app=x", "tier=y"],
    );
    // Labels no pod can carry together do not add up.
    let c = ports_from(
        "by-app-z",
        json!({"podSelector": {"matchLabels": {"app": "z"}}}),
        &[(1001, 2000)],
    );
    assert_admitted(&denied(&c, &[a]));
}

#[test]
fn policies_that_select_the_same_pods_add_up_whatever_their_selectors() {
    // One policy selects app=web, the other tier=edge: a pod with both labels gets both halves.
    let a = policy(
        "by-app",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/2"}}], "ports": [{"port": 443}]}]}),
    );
    let b = policy(
        "by-tier",
        json!({"podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["edge"]}]}, "ingress": [{"from": [{"ipBlock": {"cidr": "64.0.0.0/2"}}], "ports": [{"port": 443}]}]}),
    );
    assert_denied(
        &denied(&b, std::slice::from_ref(&a)),
        &["pods app=web,tier=edge", "of the public IPv4 internet"],
    );
    // A selector no pod of the other can meet: no pod gets both.
    let c = policy(
        "not-web",
        json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}, "ingress": [{"from": [{"ipBlock": {"cidr": "64.0.0.0/2"}}], "ports": [{"port": 443}]}]}),
    );
    assert_admitted(&denied(&c, &[a]));
}

fn from_namespaces(name: &str, selector: Value) -> Value {
    policy(
        name,
        json!({"podSelector": {"matchLabels": {"app": "api"}}, "policyTypes": ["Ingress"], "ingress": [{"from": [{"namespaceSelector": selector}], "ports": [{"port": 8080}]}]}),
    )
}

#[test]
fn a_label_every_namespace_must_carry_selects_every_namespace() {
    for selector in [
        json!({"matchLabels": {"network-policy": "zero-trust"}}),
        json!({"matchExpressions": [{"key": "security-level", "operator": "In", "values": ["high", "medium", "low"]}]}),
        json!({"matchExpressions": [{"key": "pod-security.kubernetes.io/enforce", "operator": "Exists"}]}),
        json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}]}),
        json!({"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}),
        json!({}),
    ] {
        assert_denied(
            &denied(&from_namespaces("wide", selector.clone()), &[]),
            &[
                "pods app=api may be reached by pods of every namespace (TCP 8080)",
                "\"wide\" ingress[0]",
                "kubernetes.io/metadata.name",
            ],
        );
    }
    // Split over two policies: high in one, medium and low in the other.
    let a = from_namespaces("high", json!({"matchLabels": {"security-level": "high"}}));
    let b = from_namespaces(
        "rest",
        json!({"matchExpressions": [{"key": "security-level", "operator": "In", "values": ["medium", "low"]}]}),
    );
    assert_admitted(&denied(&a, &[]));
    assert_admitted(&denied(&b, &[]));
    assert_denied(
        &denied(&b, &[a]),
        &[
            "pods of every namespace",
            "\"high\" ingress[0]",
            "\"rest\" ingress[0]",
        ],
    );
    // Or in two peers of one rule.
    let p = policy(
        "two-peers",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [
        {"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In", "values": ["a"]}]}},
        {"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]}}
    ], "ports": [{"port": 8080}]}]}),
    );
    assert_denied(
        &denied(&p, &[]),
        &["every pod may reach pods of every namespace"],
    );
    // Naming namespaces is fine, by name or by a label tenants do not all carry.
    assert_admitted(&denied(
        &from_namespaces(
            "named",
            json!({"matchLabels": {"kubernetes.io/metadata.name": "shop"}}),
        ),
        &[],
    ));
    assert_admitted(&denied(
        &from_namespaces("team", json!({"matchLabels": {"team": "payments"}})),
        &[],
    ));
}

#[test]
fn an_additive_policy_next_to_the_default_deny_is_judged_with_it() {
    // The inventory holds the default-deny and allow-dns; the new policy combines the above.
    let p = policy(
        "sneaky",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"ipBlock": {"cidr": "::ffff:0:0/97"}}, {"ipBlock": {"cidr": "::ffff:128.0.0.0/97"}}], "ports": [{"port": 1, "endPort": 1024}, {"port": 1025, "endPort": 2048}]}],
        "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"network-policy": "zero-trust"}}}]}]}),
    );
    let d = denied(&p, &[]);
    assert_denied(&d, &["all of the public IPv4 internet"]);
    assert_denied(&d, &["on 2048 TCP ports"]);
    assert_denied(&d, &["every pod may reach pods of every namespace"]);
}

#[test]
fn an_update_is_judged_as_it_replaces_the_old_version() {
    let old = ingress_from_blocks("edge", &["0.0.0.0/2"]);
    // Keeps every byte of the approved rule and adds one.
    let mut new = old.clone();
    new["spec"]["ingress"]
        .as_array_mut()
        .unwrap()
        .push(json!({"from": [{"ipBlock": {"cidr": "64.0.0.0/2"}}], "ports": [{"port": 443}]}));
    assert_denied(
        &denied_with("UPDATE", &new, Some(&old), std::slice::from_ref(&old)),
        &["of the public IPv4 internet", "\"edge\" ingress[1]"],
    );
    // Moving the range: the old version does not count any more.
    let moved = ingress_from_blocks("edge", &["128.0.0.0/2"]);
    assert_admitted(&denied_with(
        "UPDATE",
        &moved,
        Some(&old),
        std::slice::from_ref(&old),
    ));
    // A change that leaves pods without isolation in a direction.
    let isolating = policy(
        "only",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"], "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "api"}}}], "ports": [{"port": 5432}]}]}),
    );
    let mut narrowed = isolating.clone();
    narrowed["spec"]["policyTypes"] = json!(["Egress"]);
    narrowed["spec"]["egress"] = json!([{"to": [{"podSelector": {"matchLabels": {"app": "api"}}}], "ports": [{"port": 8080}]}]);
    let inv_without_default_deny = Inventory::from_objects(vec![isolating.clone()]);
    let d: Vec<String> = validate(
        bundle(),
        &inv_without_default_deny,
        &review("UPDATE", &narrowed, Some(&isolating)),
    )
    .into_iter()
    .filter(|v| v.action == Action::Deny)
    .map(|v| v.message)
    .collect();
    assert_denied(&d, &["no policy isolates pods app=db for ingress"]);
    // With the default-deny in place, the same change leaves nothing open.
    assert_admitted(&denied_with(
        "UPDATE",
        &narrowed,
        Some(&isolating),
        std::slice::from_ref(&isolating),
    ));
}

#[test]
fn deleting_a_policy_next_to_the_default_deny_is_admitted() {
    let p = ingress_from_blocks("edge", &["0.0.0.0/2"]);
    assert_admitted(&denied_with("DELETE", &p, None, std::slice::from_ref(&p)));
}

#[test]
fn the_guides_and_the_generated_policies_stay_admitted_together() {
    let mut all: Vec<Value> = Vec::new();
    for f in ["three-tier", "external-api.yaml"] {
        all.extend(
            files::read_path(&repo_path(&format!("tests/data/guides/{f}")))
                .unwrap()
                .into_iter()
                .map(|d| d.value),
        );
    }
    all.extend(palisade::zero_trust::generated_policies("payments"));
    for p in &all {
        let others: Vec<Value> = all
            .iter()
            .filter(|o| o["metadata"]["name"] != p["metadata"]["name"])
            .cloned()
            .collect();
        assert_admitted(&denied(p, &others));
        // As an update of itself, too.
        assert_admitted(&denied_with("UPDATE", p, Some(p), &others));
    }
}

#[test]
fn a_policy_past_the_limits_is_refused_naming_the_limit() {
    let peers: Vec<Value> = (0..300)
        .map(|i| json!({"ipBlock": {"cidr": format!("10.1.{}.{}/32", i / 250, i % 250)}}))
        .collect();
    let p = policy(
        "huge",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": peers, "ports": [{"port": 443}]}]}),
    );
    assert_denied(
        &denied(&p, &[]),
        &["spec.egress[0].to: 300 peers, more than the 256 Palisade judges in one NetworkPolicy"],
    );
}

#[test]
fn an_unreadable_policy_in_the_inventory_fails_the_namespace_closed() {
    let broken = policy(
        "broken",
        json!({"podSelector": {}, "ingress": [{"ports": [{"protocol": "tcp", "port": 80}]}]}),
    );
    let p = ingress_from_blocks("fine", &["203.0.113.0/24"]);
    assert_denied(
        &denied(&p, &[broken]),
        &[
            "NetworkPolicy payments/broken in the inventory cannot be read",
            "spec.ingress[0].ports[0].protocol",
        ],
    );
}

// Found in review (issue 27): each of these was admitted, or ran for seconds.

#[test]
fn an_ipv4_block_with_an_except_written_as_ipv6_is_refused() {
    // The API server accepts it (its check unmaps), but a CNI that does not unmap excepts
    // nothing: the metadata address stays reachable.
    let p = policy(
        "mapped-except",
        json!({"podSelector": {}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["::ffff:169.254.169.254/128"]}}], "ports": [{"port": 443}]}]}),
    );
    assert_denied(
        &denied(&p, &[]),
        &[
            "cannot be judged",
            "is not written in the same family as the cidr",
        ],
    );
    let p = ingress_from_blocks("mapped-half", &[]);
    let mut p = p;
    p["spec"]["ingress"][0]["from"] =
        json!([{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["::ffff:0.0.0.0/97"]}}]);
    assert_denied(&denied(&p, &[]), &["is not written in the same family"]);
}

#[test]
fn the_ipv4_compatible_spelling_of_the_metadata_address_is_the_metadata_address() {
    let p = policy(
        "compat",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "::a9fe:a9fe/128"}}], "ports": [{"port": 80}]}]}),
    );
    assert_denied(
        &denied(&p, &[]),
        &["reaches the cloud metadata address 169.254.169.254/32"],
    );
}

#[test]
fn removing_a_policy_past_the_limits_is_still_judged_for_what_it_isolated() {
    // 129 rules: the API server accepts it, the model reads only what it isolates.
    let rules: Vec<Value> = (0..129).map(|_| json!({"from": [{"podSelector": {"matchLabels": {"app": "api"}}}], "ports": [{"port": 5432}]})).collect();
    let big = policy(
        "db-only",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"], "ingress": rules}),
    );
    let mut narrowed = big.clone();
    narrowed["spec"]["podSelector"] = json!({"matchLabels": {"app": "nothing"}});
    narrowed["spec"]["ingress"] = json!([]);
    let alone = Inventory::from_objects(vec![big.clone()]);
    let d: Vec<String> = validate(bundle(), &alone, &review("UPDATE", &narrowed, Some(&big)))
        .into_iter()
        .filter(|v| v.action == Action::Deny)
        .map(|v| v.message)
        .collect();
    assert_denied(&d, &["no policy isolates pods app=db for ingress"]);
}

#[test]
fn only_a_constraint_on_every_namespace_says_what_every_namespace_carries() {
    // Constraints scoped to some namespaces narrow nothing: the default constraint still says
    // every namespace is high, medium or low.
    let mut docs: Vec<palisade::manifest::Document> =
        files::read_path(&repo_path("policies")).unwrap();
    for (name, glob, value) in [("dev", "dev-*", "low"), ("prod", "prod-*", "high")] {
        docs.push(palisade::manifest::Document::from_cluster(json!({
            "apiVersion": "constraints.gatekeeper.sh/v1beta1", "kind": "PalisadeNamespaceLabels",
            "metadata": {"name": format!("{name}-levels")},
            "spec": {"match": {"kinds": [{"apiGroups": [""], "kinds": ["Namespace"]}], "namespaces": [glob]},
                "parameters": {"labels": [{"key": "security-level", "allowedValues": [value]}]}}})));
    }
    let scoped = Bundle::from_documents(docs, &EngineOptions::default()).unwrap();
    let p = from_namespaces(
        "levels",
        json!({"matchExpressions": [{"key": "security-level", "operator": "In", "values": ["high", "medium", "low"]}]}),
    );
    let d: Vec<String> = validate(&scoped, &inventory(&[]), &review("CREATE", &p, None))
        .into_iter()
        .filter(|v| v.action == Action::Deny)
        .map(|v| v.message)
        .collect();
    assert_denied(&d, &["pods of every namespace"]);
}

#[test]
fn policies_without_a_namespace_are_judged_together_offline() {
    // `palisade test` on a kustomize base: no metadata.namespace.
    let mut a = ingress_from_blocks("q0", &["0.0.0.0/2"]);
    let mut b = ingress_from_blocks("q1", &["64.0.0.0/2"]);
    for p in [&mut a, &mut b] {
        p["metadata"].as_object_mut().unwrap().remove("namespace");
    }
    let docs = vec![
        palisade::manifest::Document::from_cluster(a),
        palisade::manifest::Document::from_cluster(b),
    ];
    let reports = palisade::cli::test::check(bundle(), docs, Vec::new()).unwrap();
    let denied = reports
        .iter()
        .flat_map(|r| &r.violations)
        .filter(|v| v.action == Action::Deny && v.message.contains("of the public IPv4 internet"))
        .count();
    assert!(denied >= 1, "{reports:?}");
}

#[test]
fn namespaces_that_combine_too_many_ways_fail_closed() {
    // Sixteen policies, each selecting pods by a label of its own: 65,536 sets of pods.
    let others: Vec<Value> = (0..16)
        .map(|i| policy(&format!("k{i}"), json!({"podSelector": {"matchExpressions": [{"key": format!("k{i}"), "operator": "Exists"}]}, "policyTypes": ["Ingress"]})))
        .collect();
    let p = ports_from(
        "any",
        json!({"podSelector": {"matchLabels": {"app": "x"}}}),
        &[(80, 80)],
    );
    let mut p = p;
    p["spec"]["podSelector"] = json!({});
    assert_denied(&denied(&p, &others), &["too intricate to judge"]);
    // Forty policies each excluding 64 values of one key: judged, not refused.
    let wide: Vec<Value> = (0..40)
        .map(|i| {
            let values: Vec<String> = (0..64).map(|v| format!("v{i}-{v}")).collect();
            policy(&format!("w{i}"), json!({"podSelector": {"matchExpressions": [{"key": "k", "operator": "NotIn", "values": values}]}, "policyTypes": ["Ingress"]}))
        })
        .collect();
    assert_admitted(&denied(&p, &wide));
}

#[test]
fn a_namespace_being_deleted_may_delete_its_policies() {
    // Without a default-deny, deleting the only policy that isolates app=db opens it, unless the
    // namespace itself is going away (its deletion deletes every policy through admission).
    let only = policy(
        "only",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"]}),
    );
    let live = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "payments"}, "status": {"phase": "Active"}});
    let mut ending = live.clone();
    ending["metadata"]["deletionTimestamp"] = json!("2026-12-04T10:00:00Z");
    ending["status"]["phase"] = json!("Terminating");
    let decide = |ns: &Value| -> Vec<String> {
        let inv = Inventory::from_objects(vec![ns.clone(), only.clone()]);
        validate(bundle(), &inv, &review("DELETE", &only, None))
            .into_iter()
            .filter(|v| v.action == Action::Deny)
            .map(|v| v.message)
            .collect()
    };
    assert_denied(
        &decide(&live),
        &["no policy isolates pods app=db for ingress"],
    );
    assert_admitted(&decide(&ending));
}
