//! Property tests: the NetworkPolicy model against a slow reference written here, straight from
//! the Kubernetes documentation and the `networking.k8s.io/v1` API, on the raw JSON:
//! - `query` on random worlds (labelled namespaces, pods with IPs and named container ports,
//!   valid policies) and random connections (pod to pod, pod to address, address to pod) must
//!   answer what the reference answers;
//! - `explain` without Pods must put each pod in exactly one set, the one selected by exactly
//!   the policies that select the pod, and each set's example labels must be selected by
//!   exactly its policies;
//! - the generator must keep producing the corner cases (policyTypes defaulting, named ports,
//!   endPort, except, every selector operator), so that the properties cannot silently stop
//!   covering them.
//!
//! The e2e tests (`netpol_e2e.rs`) pin the model to Kubernetes' own expectations on one fixed
//! cluster; these explore the combinations those cases do not reach. Worlds come from fixed
//! seeds, so a failure is reproducible, and it is printed shrunk to a smallest world that still
//! disagrees.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use palisade::manifest::Document;
use palisade::netpol::explain::{self, Filter};
use palisade::netpol::{self, Endpoint, Protocol, World};
use serde_json::{Map, Value, json};

use crate::common::Rng;

const NAMESPACES: [&str; 3] = ["a", "b", "c"];
const PORTS: [u16; 6] = [53, 80, 443, 8080, 8081, 9000];
const NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Label keys and the values selectors name. Pods carry `cache`, which no selector names, and
/// no `role`, which selectors name: both sides of "a value nobody mentions".
const POD_SELECTOR_VOCABULARY: [(&str, &[&str]); 3] = [
    ("app", &["web", "db", "api"]),
    ("tier", &["front", "back"]),
    ("role", &["admin"]),
];
const NAMESPACE_SELECTOR_VOCABULARY: [(&str, &[&str]); 3] = [
    ("team", &["x", "y", "z"]),
    ("env", &["x", "y"]),
    (NAME_LABEL, &["a", "b", "c", "d"]),
];

/// The objects of one world, as the API server would hold them.
#[derive(Clone)]
struct Cluster {
    namespaces: Vec<Value>,
    pods: Vec<Value>,
    policies: Vec<Value>,
}

impl Cluster {
    fn docs(&self, with_pods: bool) -> Vec<Document> {
        let pods = if with_pods { &self.pods[..] } else { &[] };
        self.namespaces
            .iter()
            .chain(pods)
            .chain(&self.policies)
            .map(|v| Document::from_cluster(v.clone()))
            .collect()
    }

    fn world(&self, with_pods: bool) -> Result<World, String> {
        World::read(&self.docs(with_pods))
    }

    /// Every object, one per line: a reproducer to paste.
    fn text(&self) -> String {
        self.namespaces
            .iter()
            .chain(&self.pods)
            .chain(&self.policies)
            .map(|v| format!("  {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn cluster_gen(rng: &mut Rng) -> Cluster {
    let namespaces = NAMESPACES
        .iter()
        .map(|ns| {
            let mut labels = Map::new();
            for key in ["team", "env"] {
                if rng.chance(2, 3) {
                    labels.insert(key.into(), json!(rng.choose(&["x", "y", "z"])));
                }
            }
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}})
        })
        .collect();
    let mut ips: Vec<u8> = (1..=254).collect();
    let pods = (0..3 + rng.below(6))
        .map(|i| {
            let ip = ips.swap_remove(rng.below(ips.len()));
            pod_gen(rng, i, ip)
        })
        .collect();
    let policies = (0..1 + rng.below(5)).map(|i| policy_gen(rng, i)).collect();
    Cluster {
        namespaces,
        pods,
        policies,
    }
}

/// Mostly `a` and `b`, so that pods meet the policies of their namespace often; `c` often has
/// none.
fn namespace_gen(rng: &mut Rng) -> &'static str {
    rng.choose(&["a", "a", "b", "b", "c"])
}

fn pod_gen(rng: &mut Rng, i: usize, ip: u8) -> Value {
    let mut labels = Map::new();
    if rng.chance(3, 4) {
        labels.insert("app".into(), json!(rng.choose(&["web", "db", "cache"])));
    }
    if rng.chance(1, 2) {
        labels.insert("tier".into(), json!(rng.choose(&["front", "back"])));
    }
    // Names are unique in a pod; the same name means different ports on different pods.
    let mut ports = Vec::new();
    for (name, choices) in [
        ("http", &[(8080, "TCP"), (80, "TCP"), (8080, "")][..]),
        ("dns", &[(53, "UDP"), (53, "TCP")]),
        ("metrics", &[(9000, "TCP"), (9000, "SCTP")]),
    ] {
        if rng.chance(1, 2) {
            let (port, proto) = rng.choose(choices);
            let mut p = json!({"name": name, "containerPort": port});
            if !proto.is_empty() {
                p["protocol"] = json!(proto);
            }
            ports.push(p);
        }
    }
    if rng.chance(1, 4) {
        ports.push(json!({"containerPort": 443}));
    }
    // Sometimes two containers share the ports: they are all the pod's.
    let containers = if ports.len() > 1 && rng.chance(1, 3) {
        let second = ports.split_off(1);
        json!([{"name": "c", "ports": ports}, {"name": "d", "ports": second}])
    } else {
        json!([{"name": "c", "ports": ports}])
    };
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("p{i}"), "namespace": namespace_gen(rng), "labels": labels},
        "spec": {"containers": containers},
    });
    // A pending pod has no IP yet.
    if rng.chance(9, 10) {
        pod["status"] = json!({"podIP": format!("10.0.0.{ip}")});
    }
    pod
}

fn selector_gen(rng: &mut Rng, vocabulary: &[(&str, &[&str])]) -> Value {
    let mut sel = Map::new();
    if rng.chance(1, 4) {
        return Value::Object(sel);
    }
    let mut labels = Map::new();
    for _ in 0..rng.below(3) {
        let (key, values) = rng.choose(vocabulary);
        labels.insert(key.into(), json!(rng.choose(values)));
    }
    if !labels.is_empty() || rng.chance(1, 8) {
        sel.insert("matchLabels".into(), Value::Object(labels));
    }
    let exprs: Vec<Value> = (0..rng.below(3))
        .map(|_| {
            let (key, values) = rng.choose(vocabulary);
            let op = rng.choose(&["In", "NotIn", "Exists", "DoesNotExist"]);
            if matches!(op, "In" | "NotIn") {
                let mut vs: Vec<&str> = (0..1 + rng.below(2)).map(|_| rng.choose(values)).collect();
                vs.dedup();
                json!({"key": key, "operator": op, "values": vs})
            } else {
                json!({"key": key, "operator": op})
            }
        })
        .collect();
    if !exprs.is_empty() || rng.chance(1, 8) {
        sel.insert("matchExpressions".into(), json!(exprs));
    }
    Value::Object(sel)
}

fn policy_gen(rng: &mut Rng, i: usize) -> Value {
    let mut spec = Map::new();
    spec.insert(
        "podSelector".into(),
        selector_gen(rng, &POD_SELECTOR_VOCABULARY),
    );
    let types: Option<&[&str]> = rng.choose(&[
        None,
        None,
        Some(&[][..]),
        Some(&["Ingress"][..]),
        Some(&["Egress"][..]),
        Some(&["Ingress", "Egress"][..]),
        Some(&["Egress", "Ingress"][..]),
    ]);
    if let Some(types) = types {
        spec.insert("policyTypes".into(), json!(types));
    }
    for (field, peers) in [("ingress", "from"), ("egress", "to")] {
        match rng.below(20) {
            0..8 => {}
            8..11 => {
                spec.insert(field.into(), json!([]));
            }
            _ => {
                let rules: Vec<Value> = (0..1 + rng.below(3))
                    .map(|_| rule_gen(rng, peers))
                    .collect();
                spec.insert(field.into(), json!(rules));
            }
        }
    }
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": format!("np{i}"), "namespace": namespace_gen(rng)},
        "spec": spec,
    })
}

fn rule_gen(rng: &mut Rng, peers_field: &str) -> Value {
    let mut rule = Map::new();
    match rng.below(10) {
        0..3 => {}
        3 => {
            rule.insert(peers_field.into(), json!([]));
        }
        _ => {
            let peers: Vec<Value> = (0..1 + rng.below(3)).map(|_| peer_gen(rng)).collect();
            rule.insert(peers_field.into(), json!(peers));
        }
    }
    match rng.below(10) {
        0..4 => {}
        4 => {
            rule.insert("ports".into(), json!([]));
        }
        _ => {
            let ports: Vec<Value> = (0..1 + rng.below(3)).map(|_| port_gen(rng)).collect();
            rule.insert("ports".into(), json!(ports));
        }
    }
    Value::Object(rule)
}

fn peer_gen(rng: &mut Rng) -> Value {
    match rng.below(8) {
        0..2 => json!({"podSelector": selector_gen(rng, &POD_SELECTOR_VOCABULARY)}),
        2..4 => json!({"namespaceSelector": selector_gen(rng, &NAMESPACE_SELECTOR_VOCABULARY)}),
        4..6 => json!({
            "namespaceSelector": selector_gen(rng, &NAMESPACE_SELECTOR_VOCABULARY),
            "podSelector": selector_gen(rng, &POD_SELECTOR_VOCABULARY),
        }),
        _ => json!({"ipBlock": block_gen(rng)}),
    }
}

/// An address the queries also use: most in the pods' 10.0.0.0/24, some outside it.
fn address_gen(rng: &mut Rng) -> Ipv4Addr {
    match rng.below(10) {
        0..7 => Ipv4Addr::new(10, 0, 0, rng.below(256) as u8),
        7 => Ipv4Addr::new(10, 0, 1, rng.below(256) as u8),
        8 => Ipv4Addr::new(192, 168, 1, rng.below(256) as u8),
        _ => Ipv4Addr::new(8, 8, 8, 8),
    }
}

/// `addr/prefix`, written canonically (host bits zero), as the API server wants it.
fn cidr_text(addr: u32, prefix: u32) -> String {
    format!("{}/{prefix}", Ipv4Addr::from(addr & mask(prefix)))
}

fn block_gen(rng: &mut Rng) -> Value {
    let prefix = rng.choose(&[0, 8, 16, 23, 24, 24, 25, 26, 28, 30, 32]);
    let base = u32::from(address_gen(rng)) & mask(prefix);
    let mut block = json!({"cidr": cidr_text(base, prefix)});
    if prefix < 32 && rng.chance(1, 2) {
        // Each except a strict subset of the cidr (the API server refuses anything else),
        // around an address the queries use when it falls inside.
        let except: Vec<String> = (0..1 + rng.below(2))
            .map(|_| {
                let inner = rng.choose(&[1, 2, 4, 6, 8, 32]).min(32 - prefix);
                let want = u32::from(address_gen(rng));
                let at = if want & mask(prefix) == base {
                    want
                } else {
                    base | (rng.next() as u32 & !mask(prefix))
                };
                cidr_text(at, (prefix + inner).min(32))
            })
            .collect();
        block["except"] = json!(except);
    }
    block
}

fn port_gen(rng: &mut Rng) -> Value {
    let mut entry = Map::new();
    if let Some(p) = rng.choose(&[None, None, Some("TCP"), Some("UDP"), Some("SCTP")]) {
        entry.insert("protocol".into(), json!(p));
    }
    match rng.below(20) {
        0..4 => {}
        4..11 => {
            entry.insert("port".into(), json!(rng.choose(&PORTS)));
        }
        11..13 => {
            let start = rng.choose(&[50u16, 53, 80, 443, 8000, 8080]);
            let end = start.saturating_add(rng.choose(&[0, 1, 27, 400, 1000]));
            entry.insert("port".into(), json!(start));
            entry.insert("endPort".into(), json!(end));
        }
        _ => {
            entry.insert(
                "port".into(),
                json!(rng.choose(&["http", "dns", "metrics", "grpc"])),
            );
        }
    }
    Value::Object(entry)
}

fn mask(prefix: u32) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    }
}

/// The reference: Kubernetes' NetworkPolicy semantics read directly off the objects, slowly.
mod reference {
    use std::cell::Cell;
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    use serde_json::Value;

    use super::{Cluster, NAME_LABEL, mask};

    pub type Labels = BTreeMap<String, String>;

    /// One end of a connection: a pod, or an address outside the cluster.
    #[derive(Clone, Copy)]
    pub enum End<'a> {
        Pod(&'a Value),
        Ip(Ipv4Addr),
    }

    pub fn labels(obj: &Value) -> Labels {
        obj["metadata"]["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect()
    }

    pub fn namespace_of(obj: &Value) -> &str {
        obj["metadata"]["namespace"].as_str().unwrap()
    }

    pub fn id(pod: &Value) -> String {
        format!(
            "{}/{}",
            namespace_of(pod),
            pod["metadata"]["name"].as_str().unwrap()
        )
    }

    /// A label selector: every matchLabels pair and every expression must hold; NotIn and
    /// DoesNotExist hold when the label is absent. `{}` selects everything.
    pub fn selects(selector: &Value, labels: &Labels) -> bool {
        let pairs = selector["matchLabels"].as_object().into_iter().flatten();
        let exprs = selector["matchExpressions"]
            .as_array()
            .into_iter()
            .flatten();
        pairs
            .into_iter()
            .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
            && exprs.into_iter().all(|e| {
                let value = labels.get(e["key"].as_str().unwrap());
                let listed = || {
                    e["values"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|v| Some(v.as_str().unwrap()) == value.map(String::as_str))
                };
                match e["operator"].as_str().unwrap() {
                    "In" => value.is_some() && listed(),
                    "NotIn" => value.is_none() || !listed(),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    op => panic!("operator {op}"),
                }
            })
    }

    /// The policy types after the API server's defaulting: a missing or empty list is Ingress,
    /// plus Egress when `spec.egress` holds at least one rule.
    pub fn isolates(policy: &Value, direction: &str) -> bool {
        let spec = &policy["spec"];
        match spec["policyTypes"].as_array() {
            Some(types) if !types.is_empty() => types
                .iter()
                .any(|t| t.as_str().unwrap().eq_ignore_ascii_case(direction)),
            _ => direction == "ingress" || spec["egress"].as_array().is_some_and(|e| !e.is_empty()),
        }
    }

    fn ip_of(end: End) -> Option<Ipv4Addr> {
        match end {
            End::Ip(ip) => Some(ip),
            End::Pod(p) => p["status"]["podIP"].as_str().map(|s| s.parse().unwrap()),
        }
    }

    fn in_cidr(cidr: &str, ip: Ipv4Addr) -> bool {
        let (addr, prefix) = cidr.split_once('/').unwrap();
        let addr: Ipv4Addr = addr.parse().unwrap();
        let m = mask(prefix.parse().unwrap());
        u32::from(ip) & m == u32::from(addr) & m
    }

    pub struct Reference<'a> {
        pub cluster: &'a Cluster,
        /// How often a named port, and an ipBlock, decided a match: proof they are exercised.
        pub named_matches: Cell<usize>,
        pub block_matches: Cell<usize>,
    }

    impl<'a> Reference<'a> {
        pub fn new(cluster: &'a Cluster) -> Self {
            Self {
                cluster,
                named_matches: Cell::new(0),
                block_matches: Cell::new(0),
            }
        }

        /// A namespace's labels, with the name label the API server always sets.
        fn namespace_labels(&self, name: &str) -> Labels {
            let mut out = self
                .cluster
                .namespaces
                .iter()
                .find(|n| n["metadata"]["name"] == name)
                .map(labels)
                .unwrap_or_default();
            out.insert(NAME_LABEL.into(), name.into());
            out
        }

        /// May `from` open a connection to `to` on `port`/`protocol`?
        pub fn allowed(&self, from: End, to: End, port: u16, protocol: &str) -> bool {
            if let (End::Pod(a), End::Pod(b)) = (from, to)
                && id(a) == id(b)
            {
                return true; // a pod can always reach itself
            }
            let dest = match to {
                End::Pod(p) => Some(p),
                End::Ip(_) => None,
            };
            let egress = match from {
                End::Ip(_) => true,
                End::Pod(p) => self.direction_allows(p, "egress", to, port, protocol, dest),
            };
            let ingress = match to {
                End::Ip(_) => true,
                End::Pod(p) => self.direction_allows(p, "ingress", from, port, protocol, dest),
            };
            egress && ingress
        }

        /// A pod no policy of its namespace isolates in `direction` is open; otherwise some
        /// rule of some isolating policy must allow the peer (the union of the rules).
        fn direction_allows(
            &self,
            pod: &Value,
            direction: &str,
            peer: End,
            port: u16,
            protocol: &str,
            dest: Option<&Value>,
        ) -> bool {
            let isolating: Vec<&Value> = self
                .cluster
                .policies
                .iter()
                .filter(|p| namespace_of(p) == namespace_of(pod))
                .filter(|p| isolates(p, direction))
                .filter(|p| selects(&p["spec"]["podSelector"], &labels(pod)))
                .collect();
            if isolating.is_empty() {
                return true;
            }
            let peers_field = if direction == "ingress" { "from" } else { "to" };
            isolating.iter().any(|policy| {
                policy["spec"][direction]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|rule| {
                        let peers_ok = match rule[peers_field].as_array() {
                            None => true,
                            Some(peers) if peers.is_empty() => true,
                            Some(peers) => peers
                                .iter()
                                .any(|p| self.peer_matches(namespace_of(policy), p, peer)),
                        };
                        peers_ok && self.ports_allow(&rule["ports"], port, protocol, dest)
                    })
            })
        }

        fn peer_matches(&self, policy_namespace: &str, peer: &Value, end: End) -> bool {
            if let Some(block) = peer.get("ipBlock") {
                let Some(ip) = ip_of(end) else { return false };
                let hit = in_cidr(block["cidr"].as_str().unwrap(), ip)
                    && !block["except"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|e| in_cidr(e.as_str().unwrap(), ip));
                if hit {
                    self.block_matches.set(self.block_matches.get() + 1);
                }
                return hit;
            }
            let End::Pod(pod) = end else { return false };
            let namespace_ok = match peer.get("namespaceSelector") {
                None => namespace_of(pod) == policy_namespace,
                Some(s) => selects(s, &self.namespace_labels(namespace_of(pod))),
            };
            let pod_ok = match peer.get("podSelector") {
                None => true, // with a namespaceSelector: every pod of those namespaces
                Some(s) => selects(s, &labels(pod)),
            };
            namespace_ok && pod_ok
        }

        /// No ports (or none listed) is every port; a named port is the destination pod's
        /// container port of that name and protocol.
        fn ports_allow(
            &self,
            ports: &Value,
            port: u16,
            protocol: &str,
            dest: Option<&Value>,
        ) -> bool {
            let Some(entries) = ports.as_array().filter(|e| !e.is_empty()) else {
                return true;
            };
            entries.iter().any(|e| {
                if e["protocol"].as_str().unwrap_or("TCP") != protocol {
                    return false;
                }
                match &e["port"] {
                    Value::Null => true,
                    Value::String(name) => {
                        let hit = dest.is_some_and(|d| {
                            d["spec"]["containers"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                                .any(|cp| {
                                    cp["name"].as_str() == Some(name)
                                        && cp["protocol"].as_str().unwrap_or("TCP") == protocol
                                        && cp["containerPort"].as_u64() == Some(port.into())
                                })
                        });
                        if hit {
                            self.named_matches.set(self.named_matches.get() + 1);
                        }
                        hit
                    }
                    n => {
                        let start = n.as_u64().unwrap();
                        let end = e["endPort"].as_u64().unwrap_or(start);
                        (start..=end).contains(&u64::from(port))
                    }
                }
            })
        }
    }
}

use reference::{End, Reference};

/// One end of a query, by pod id (`ns/name`) or address, so that it survives shrinking.
#[derive(Debug, Clone)]
enum At {
    Pod(String),
    Ip(Ipv4Addr),
}

#[derive(Debug, Clone)]
struct Query {
    from: At,
    to: At,
    port: u16,
    protocol: Protocol,
}

impl Query {
    fn text(&self) -> String {
        let at = |a: &At| match a {
            At::Pod(id) => id.clone(),
            At::Ip(ip) => ip.to_string(),
        };
        format!(
            "{} -> {} on {}/{}",
            at(&self.from),
            at(&self.to),
            self.port,
            self.protocol.name()
        )
    }
}

fn query_gen(rng: &mut Rng, cluster: &Cluster) -> Query {
    let pod = |rng: &mut Rng| &cluster.pods[rng.below(cluster.pods.len())];
    let (from, to) = match rng.below(10) {
        0..6 => {
            let from = pod(rng);
            // Sometimes the pod itself: loopback.
            let to = if rng.chance(1, 10) { from } else { pod(rng) };
            (Some(from), Some(to))
        }
        6..8 => (Some(pod(rng)), None),
        _ => (None, Some(pod(rng))),
    };
    let mut port = rng.choose(&PORTS);
    let mut protocol = rng.choose(&[Protocol::Tcp, Protocol::Tcp, Protocol::Udp, Protocol::Sctp]);
    // Often a port the destination pod names, so that named ports decide something.
    let named: Vec<&Value> = to
        .into_iter()
        .flat_map(|p| p["spec"]["containers"].as_array().unwrap())
        .flat_map(|c| c["ports"].as_array().unwrap())
        .filter(|p| p.get("name").is_some())
        .collect();
    if !named.is_empty() && rng.chance(1, 2) {
        let p = rng.choose(&named);
        port = p["containerPort"].as_u64().unwrap() as u16;
        protocol = Protocol::parse(p["protocol"].as_str().unwrap_or("TCP")).unwrap();
    }
    let at = |p: Option<&Value>, rng: &mut Rng| match p {
        Some(p) => At::Pod(reference::id(p)),
        None => At::Ip(address_gen(rng)),
    };
    Query {
        from: at(from, rng),
        to: at(to, rng),
        port,
        protocol,
    }
}

/// The model's answer and the reference's to one query.
struct Outcome {
    model: netpol::Answer,
    expected: bool,
    /// Named ports and ipBlocks that matched in the reference.
    named: usize,
    blocks: usize,
}

impl Outcome {
    fn agrees(&self) -> bool {
        self.model.allowed() == self.expected
    }
}

/// Asks both, `world` being `cluster` as the model reads it; `None` when the query's pods are
/// gone (while shrinking).
fn both(cluster: &Cluster, world: &World, q: &Query) -> Option<Outcome> {
    let model_end = |a: &At| -> Option<Endpoint> {
        Some(match a {
            At::Pod(id) => Endpoint::Pod(world.pod(id)?),
            At::Ip(ip) => Endpoint::Address(IpAddr::V4(*ip)),
        })
    };
    let reference_end = |a: &At| -> Option<End> {
        Some(match a {
            At::Pod(id) => End::Pod(cluster.pods.iter().find(|p| reference::id(p) == *id)?),
            At::Ip(ip) => End::Ip(*ip),
        })
    };
    let model = netpol::query(
        world,
        model_end(&q.from)?,
        model_end(&q.to)?,
        q.port,
        q.protocol,
    );
    let r = Reference::new(cluster);
    let expected = r.allowed(
        reference_end(&q.from)?,
        reference_end(&q.to)?,
        q.port,
        q.protocol.name(),
    );
    Some(Outcome {
        model,
        expected,
        named: r.named_matches.get(),
        blocks: r.block_matches.get(),
    })
}

/// Every way to take one thing out of `v` that leaves a valid object: a list element (but not
/// the last value of `In`/`NotIn` nor the last container), a label, or an optional field.
fn removals(v: &Value, key: &str) -> Vec<Value> {
    let mut out = Vec::new();
    match v {
        Value::Array(items) => {
            if !(matches!(key, "values" | "containers") && items.len() == 1) {
                for i in 0..items.len() {
                    let mut less = items.clone();
                    less.remove(i);
                    out.push(Value::Array(less));
                }
            }
            for (i, item) in items.iter().enumerate() {
                for smaller in removals(item, key) {
                    let mut copy = items.clone();
                    copy[i] = smaller;
                    out.push(Value::Array(copy));
                }
            }
        }
        Value::Object(map) => {
            for (k, child) in map {
                let optional = match k.as_str() {
                    "policyTypes" | "ingress" | "egress" | "from" | "to" | "ports" | "protocol"
                    | "except" | "endPort" | "matchLabels" | "matchExpressions" | "labels"
                    | "status" | "namespaceSelector" => true,
                    // A peer's podSelector, when its namespaceSelector stays.
                    "podSelector" => map.contains_key("namespaceSelector"),
                    "port" => !map.contains_key("endPort"),
                    _ => matches!(key, "labels" | "matchLabels"),
                };
                if optional {
                    let mut less = map.clone();
                    less.remove(k);
                    out.push(Value::Object(less));
                }
                for smaller in removals(child, k) {
                    let mut copy = map.clone();
                    copy[k] = smaller;
                    out.push(Value::Object(copy));
                }
            }
        }
        _ => {}
    }
    out
}

/// The world with one object, or one part of an object, taken out. Namespaces stay.
fn smaller_worlds(cluster: &Cluster) -> Vec<Cluster> {
    fn list(c: &mut Cluster, n: usize) -> &mut Vec<Value> {
        match n {
            0 => &mut c.policies,
            1 => &mut c.pods,
            _ => &mut c.namespaces,
        }
    }
    let mut out = Vec::new();
    for n in 0..3 {
        let objects = list(&mut cluster.clone(), n).clone();
        for (i, object) in objects.iter().enumerate() {
            if n < 2 {
                let mut g = cluster.clone();
                list(&mut g, n).remove(i);
                out.push(g);
            }
            for smaller in removals(object, "") {
                let mut g = cluster.clone();
                list(&mut g, n)[i] = smaller;
                out.push(g);
            }
        }
    }
    out
}

/// Takes out whatever keeps `fails` true, until nothing more can go.
fn shrink(mut cluster: Cluster, fails: impl Fn(&Cluster) -> bool) -> Cluster {
    while let Some(g) = smaller_worlds(&cluster).into_iter().find(|g| fails(g)) {
        cluster = g;
    }
    cluster
}

/// What each policy exercises, read off its JSON.
fn features(policy: &Value) -> BTreeSet<&'static str> {
    let mut out = BTreeSet::new();
    let spec = &policy["spec"];
    let types = &spec["policyTypes"];
    if types == &json!([]) {
        out.insert("policyTypes: []");
    }
    if types.is_null() {
        out.insert("no policyTypes");
    }
    if types.as_array().is_none_or(Vec::is_empty) && spec["egress"] == json!([]) {
        out.insert("egress: [] without policyTypes");
    }
    if types.as_array().is_none_or(Vec::is_empty)
        && spec["egress"].as_array().is_some_and(|e| !e.is_empty())
    {
        out.insert("egress rules without policyTypes");
    }
    if types == &json!(["Egress"]) && spec["ingress"].as_array().is_some_and(|e| !e.is_empty()) {
        out.insert("ingress rules of an Egress-only policy");
    }
    fn walk(v: &Value, key: &str, out: &mut BTreeSet<&'static str>) {
        match v {
            Value::Object(map) => {
                if let Some(op) = map.get("operator").and_then(Value::as_str) {
                    out.insert(match op {
                        "In" => "In",
                        "NotIn" => "NotIn",
                        "Exists" => "Exists",
                        _ => "DoesNotExist",
                    });
                }
                if map.get("port").is_some_and(Value::is_string) {
                    out.insert("named port");
                }
                if map.contains_key("endPort") {
                    out.insert("endPort");
                }
                if key == "ports" && !map.contains_key("protocol") {
                    out.insert("port without protocol");
                }
                if map.get("protocol") == Some(&json!("SCTP")) {
                    out.insert("SCTP");
                }
                if key == "ports" && !map.contains_key("port") {
                    out.insert("port entry without port");
                }
                if map.get("except").is_some_and(|e| e != &json!([])) {
                    out.insert("except");
                }
                if map.get("namespaceSelector") == Some(&json!({})) {
                    out.insert("namespaceSelector: {}");
                }
                if map.contains_key("namespaceSelector") && map.contains_key("podSelector") {
                    out.insert("namespaceSelector and podSelector");
                }
                if map.contains_key("namespaceSelector") && !map.contains_key("podSelector") {
                    out.insert("namespaceSelector alone");
                }
                for field in ["from", "to", "ports"] {
                    if map.get(field) == Some(&json!([])) {
                        out.insert("empty from/to/ports");
                    }
                }
                for (k, child) in map {
                    walk(child, k, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, key, out)),
            _ => {}
        }
    }
    walk(spec, "", &mut out);
    out
}

/// Fails unless every corner case appeared in the worlds the properties were tested on.
fn assert_covered(seen: &BTreeMap<&'static str, usize>) {
    let want = [
        "policyTypes: []",
        "no policyTypes",
        "egress: [] without policyTypes",
        "egress rules without policyTypes",
        "ingress rules of an Egress-only policy",
        "In",
        "NotIn",
        "Exists",
        "DoesNotExist",
        "named port",
        "endPort",
        "SCTP",
        "port without protocol",
        "port entry without port",
        "except",
        "namespaceSelector: {}",
        "namespaceSelector and podSelector",
        "namespaceSelector alone",
        "empty from/to/ports",
    ];
    for w in want {
        assert!(
            seen.get(w).copied().unwrap_or(0) >= 10,
            "the generator stopped producing {w:?}: {seen:?}"
        );
    }
}

fn count_features(cluster: &Cluster, seen: &mut BTreeMap<&'static str, usize>) {
    for p in &cluster.policies {
        for f in features(p) {
            *seen.entry(f).or_default() += 1;
        }
    }
}

const QUERY_WORLDS: u64 = 2000;
const QUERIES_PER_WORLD: usize = 40;

#[test]
fn query_answers_as_the_reference_on_random_worlds() {
    let mut seen = BTreeMap::new();
    let (mut allowed, mut denied, mut named, mut blocks) = (0, 0, 0, 0);
    for seed in 0..QUERY_WORLDS {
        let mut rng = Rng(seed);
        let cluster = cluster_gen(&mut rng);
        count_features(&cluster, &mut seen);
        let world = cluster.world(true).unwrap_or_else(|e| {
            panic!(
                "seed {seed}: a generated object is refused: {e}\n{}",
                cluster.text()
            )
        });
        for _ in 0..QUERIES_PER_WORLD {
            let q = query_gen(&mut rng, &cluster);
            let o = both(&cluster, &world, &q).unwrap();
            if !o.agrees() {
                let disagrees = |c: &Cluster| {
                    let Ok(w) = c.world(true) else { return false };
                    both(c, &w, &q).is_some_and(|o| !o.agrees())
                };
                let small = shrink(cluster.clone(), disagrees);
                let o = both(&small, &small.world(true).unwrap(), &q).unwrap();
                panic!(
                    "seed {seed}: {}: the model says {}, the reference {}\nmodel's answer: {:?}\nworld (shrunk):\n{}",
                    q.text(),
                    if o.model.allowed() {
                        "allowed"
                    } else {
                        "denied"
                    },
                    if o.expected { "allowed" } else { "denied" },
                    o.model,
                    small.text()
                );
            }
            if o.expected {
                allowed += 1;
            } else {
                denied += 1;
            }
            named += o.named;
            blocks += o.blocks;
        }
    }
    let total = allowed + denied;
    // Neither answer may dominate, or the comparison says little.
    assert!(
        allowed > total / 5 && denied > total / 5,
        "allowed {allowed}, denied {denied}"
    );
    assert!(
        named > 100 && blocks > 100,
        "named ports matched {named} times, ipBlocks {blocks}"
    );
    assert_covered(&seen);
}

/// What is wrong with `explain`'s pod sets for `cluster` (its Pods are only used as label sets
/// to look up; the World explained has none), if anything.
fn set_failure(cluster: &Cluster) -> Option<String> {
    let world = cluster.world(false).ok()?;
    let all = Filter {
        namespaces: NAMESPACES.map(String::from).to_vec(),
        ..Filter::default()
    };
    let explained = explain::explain(&world, &all);
    if explained.len() != NAMESPACES.len() {
        return Some(format!("{} namespaces explained", explained.len()));
    }
    for e in &explained {
        let ns = &e.namespace;
        if let Some(err) = &e.error {
            return Some(format!("{ns}: not explained: {err}"));
        }
        let own: Vec<&Value> = cluster
            .policies
            .iter()
            .filter(|p| reference::namespace_of(p) == ns)
            .collect();
        let name = |p: &Value| p["metadata"]["name"].as_str().unwrap().to_owned();
        let selecting = |labels: &reference::Labels| -> BTreeSet<String> {
            own.iter()
                .filter(|p| reference::selects(&p["spec"]["podSelector"], labels))
                .map(|p| name(p))
                .collect()
        };
        let mut sets = BTreeSet::new();
        for entry in &e.entries {
            let by: BTreeSet<String> = entry.selected_by.iter().cloned().collect();
            let truth = selecting(&entry.labels);
            if truth != by {
                return Some(format!(
                    "{ns}: the set {:?} says it is selected by {by:?}, but its labels {:?} are selected by {truth:?}",
                    entry.subject, entry.labels
                ));
            }
            if !sets.insert(by.clone()) {
                return Some(format!("{ns}: two sets are selected by {by:?}"));
            }
            for (direction, view) in [("ingress", &entry.ingress), ("egress", &entry.egress)] {
                let want: BTreeSet<String> = own
                    .iter()
                    .filter(|p| by.contains(&name(p)) && reference::isolates(p, direction))
                    .map(|p| name(p))
                    .collect();
                let got: BTreeSet<String> = view.isolated_by.iter().cloned().collect();
                let isolated = !want.is_empty();
                if view.isolated != isolated || got != want {
                    return Some(format!(
                        "{ns}: the set {:?} is isolated for {direction} by {got:?} (isolated: {}), but by {want:?} after policyTypes defaulting",
                        entry.subject, view.isolated
                    ));
                }
            }
        }
        for pod in cluster
            .pods
            .iter()
            .filter(|p| reference::namespace_of(p) == ns)
        {
            let labels = reference::labels(pod);
            let want = selecting(&labels);
            let holding = e
                .entries
                .iter()
                .filter(|x| x.selected_by.iter().cloned().collect::<BTreeSet<_>>() == want)
                .count();
            if holding != 1 {
                return Some(format!(
                    "{ns}: {holding} sets are selected by {want:?}, the policies selecting the pod {labels:?}"
                ));
            }
            // The same set, asked for by the pod's labels (as `explain --labels` does).
            let one = Filter {
                namespaces: vec![ns.clone()],
                pod: None,
                labels: Some(labels.clone()),
            };
            let found = explain::explain(&world, &one);
            let by: Vec<BTreeSet<String>> = found[0]
                .entries
                .iter()
                .map(|x| x.selected_by.iter().cloned().collect())
                .collect();
            if by != [want.clone()] {
                return Some(format!(
                    "{ns}: --labels {labels:?} finds the sets {by:?}, not the one selected by {want:?}"
                ));
            }
        }
    }
    None
}

const SET_WORLDS: u64 = 1000;
/// Label sets looked up per world, on top of its pods.
const EXTRA_PODS: usize = 12;

#[test]
fn explain_puts_each_pod_in_the_one_set_its_policies_select() {
    let mut seen = BTreeMap::new();
    let mut looked_up = 0;
    for seed in 0..SET_WORLDS {
        let mut rng = Rng(1 << 32 | seed);
        let mut cluster = cluster_gen(&mut rng);
        let first = cluster.pods.len();
        cluster
            .pods
            .extend((first..first + EXTRA_PODS).map(|i| pod_gen(&mut rng, i, 1)));
        count_features(&cluster, &mut seen);
        looked_up += cluster.pods.len();
        if let Some(why) = set_failure(&cluster) {
            let small = shrink(cluster, |c| set_failure(c).is_some());
            panic!(
                "seed {seed}: {}\nworld (shrunk; the Pods are label sets looked up, not in the World explained):\n{}",
                set_failure(&small).unwrap_or(why),
                small.text()
            );
        }
    }
    assert!(looked_up > SET_WORLDS as usize * EXTRA_PODS);
    assert_covered(&seen);
}

/// The smallest case the property above found: `explain` dropped the label values no selector
/// names (`space::FRESH`) from a set's example labels, so the set of `app Exists` was shown with
/// `{}`, labels that policy does not select. Any value of `app` is right.
#[test]
fn a_set_selected_by_exists_has_example_labels_it_selects() {
    let cluster = Cluster {
        namespaces: vec![
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "b"}}),
        ],
        pods: Vec::new(),
        policies: vec![json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "np", "namespace": "b"},
            "spec": {"podSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}},
        })],
    };
    let explained = explain::explain(&cluster.world(false).unwrap(), &Filter::default());
    let set = explained[0]
        .entries
        .iter()
        .find(|e| e.selected_by == ["np"])
        .expect("a set selected by np");
    assert!(
        set.labels.contains_key("app"),
        "the set {:?} of np (app Exists) has the example labels {:?}",
        set.subject,
        set.labels
    );
}
