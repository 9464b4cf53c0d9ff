//! What NetworkPolicies allow, after Kubernetes' semantics, for `palisade netpol explain`: for a
//! namespace, which sets of pods may receive what (ingress) and send what (egress), from which
//! peers on which ports. It reads rules as `lib.networkpolicy` (the hygiene template's library)
//! does: no `from`/`to` is every peer, no `ports` is every port, a namespaceSelector is resolved
//! against the Namespaces given (their `kubernetes.io/metadata.name` label included).
//!
//! Kubernetes' rules: a pod is isolated in a direction only when some policy that selects it
//! covers that direction (`policyTypes`, which defaults to Ingress, plus Egress when egress rules
//! exist); then what it may do is the union of the rules of every such policy. A pod no policy
//! isolates is allowed everything in that direction.
//!
//! The sets of pods are those the policies' `podSelector`s describe, and their intersections
//! (pods that carry the labels of two selectors at once); each row says which policies apply to
//! every pod of its set.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::manifest::Document;
use crate::matcher::{LabelSelector, Operator, Requirement};

const NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// Most sets of pods one namespace is explained with (intersections grow quickly).
const MAX_SETS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    fn text(self) -> &'static str {
        match self {
            Direction::Ingress => "in",
            Direction::Egress => "out",
        }
    }
}

/// One peer of a rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Peer {
    /// Pods chosen by namespace and pod selectors. `namespaces: None` is the policy's own
    /// namespace; `pods: None` is every pod of those namespaces.
    Pods {
        namespaces: Option<LabelSelector>,
        pods: Option<LabelSelector>,
    },
    Block {
        cidr: String,
        except: Vec<String>,
    },
}

/// One ingress or egress rule. No peers: every peer. No ports: every port.
#[derive(Debug, Clone)]
pub struct Rule {
    pub peers: Vec<Peer>,
    pub ports: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub namespace: String,
    pub selector: LabelSelector,
    /// `Some` when the policy isolates the pods it selects in that direction.
    pub ingress: Option<Vec<Rule>>,
    pub egress: Option<Vec<Rule>>,
}

impl Policy {
    /// Reads a NetworkPolicy; an error names the field and what to fix.
    pub fn parse(v: &Value) -> Result<Self, String> {
        let name = v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let namespace = v["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        let spec = &v["spec"];
        let selector = match &spec["podSelector"] {
            Value::Null => LabelSelector::default(),
            s => LabelSelector::parse(s, "spec.podSelector")?,
        };
        let types: Vec<&str> = match &spec["policyTypes"] {
            Value::Null => {
                let mut t = vec!["Ingress"];
                if spec["egress"].is_array() {
                    t.push("Egress");
                }
                t
            }
            Value::Array(a) => a
                .iter()
                .map(|t| match t.as_str() {
                    Some(s @ ("Ingress" | "Egress")) => Ok(s),
                    _ => Err(format!("spec.policyTypes: {t} is not Ingress or Egress")),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err("spec.policyTypes: must be a list of Ingress and Egress".into()),
        };
        let rules = |field: &str, peer_field: &str| -> Result<Vec<Rule>, String> {
            let Some(list) = spec[field].as_array() else {
                return Ok(Vec::new());
            };
            list.iter()
                .enumerate()
                .map(|(i, r)| parse_rule(r, &format!("spec.{field}[{i}]"), peer_field))
                .collect()
        };
        let ingress = types
            .contains(&"Ingress")
            .then(|| rules("ingress", "from"))
            .transpose()?;
        let egress = types
            .contains(&"Egress")
            .then(|| rules("egress", "to"))
            .transpose()?;
        Ok(Self {
            name,
            namespace,
            selector,
            ingress,
            egress,
        })
    }

    fn rules(&self, direction: Direction) -> Option<&Vec<Rule>> {
        match direction {
            Direction::Ingress => self.ingress.as_ref(),
            Direction::Egress => self.egress.as_ref(),
        }
    }
}

fn parse_rule(r: &Value, at: &str, peer_field: &str) -> Result<Rule, String> {
    let mut peers = Vec::new();
    for (i, p) in r[peer_field].as_array().into_iter().flatten().enumerate() {
        let at = format!("{at}.{peer_field}[{i}]");
        if let Some(block) = p.get("ipBlock") {
            let cidr = block["cidr"]
                .as_str()
                .ok_or_else(|| format!("{at}.ipBlock.cidr: required, e.g. 203.0.113.0/24"))?;
            let except = block["except"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e.as_str().map(str::to_owned))
                .collect();
            peers.push(Peer::Block {
                cidr: cidr.to_owned(),
                except,
            });
            continue;
        }
        let selector = |field: &str| -> Result<Option<LabelSelector>, String> {
            match p.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(s) => LabelSelector::parse(s, &format!("{at}.{field}")).map(Some),
            }
        };
        let namespaces = selector("namespaceSelector")?;
        let pods = selector("podSelector")?;
        if namespaces.is_none() && pods.is_none() {
            return Err(format!(
                "{at}: a peer needs a podSelector, a namespaceSelector or an ipBlock"
            ));
        }
        peers.push(Peer::Pods { namespaces, pods });
    }
    let mut ports = Vec::new();
    for p in r["ports"].as_array().into_iter().flatten() {
        let protocol = p["protocol"].as_str().unwrap_or("TCP");
        ports.push(match (&p["port"], &p["endPort"]) {
            (Value::Null, _) => format!("every {protocol} port"),
            (port, Value::Null) => format!("{protocol} {}", plain(port)),
            (port, end) => format!("{protocol} {}-{}", plain(port), plain(end)),
        });
    }
    Ok(Rule { peers, ports })
}

fn plain(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

/// A Namespace of the input, with the name label the API server sets.
#[derive(Debug, Clone)]
pub struct Namespace {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

impl Namespace {
    pub fn of(v: &Value) -> Self {
        let name = v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut labels: BTreeMap<String, String> = v["metadata"]["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect();
        labels.insert(NAME_LABEL.into(), name.clone());
        Self { name, labels }
    }

    fn matches(&self, selector: &LabelSelector) -> bool {
        let labels = self
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        selector.matches(&labels)
    }
}

/// One line of the explanation: what a set of pods may receive or send, and which policy says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub pods: String,
    pub direction: &'static str,
    pub peers: String,
    pub ports: String,
    pub policy: String,
}

/// The explanation of one namespace.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub namespace: String,
    pub policies: usize,
    pub rows: Vec<Row>,
}

/// Reads the NetworkPolicies and Namespaces among `docs`; other kinds are ignored.
pub fn read(docs: &[Document]) -> Result<(Vec<Policy>, Vec<Namespace>), String> {
    let mut policies = Vec::new();
    let mut namespaces = Vec::new();
    for d in docs {
        match (d.value["apiVersion"].as_str(), d.kind()) {
            (Some("networking.k8s.io/v1"), "NetworkPolicy") => policies.push(
                Policy::parse(&d.value)
                    .map_err(|e| format!("{} (NetworkPolicy {:?}): {e}", d.origin, d.name()))?,
            ),
            (Some("v1"), "Namespace") => namespaces.push(Namespace::of(&d.value)),
            _ => {}
        }
    }
    Ok((policies, namespaces))
}

/// Explains `namespace` from every policy given (only its own apply to its pods).
pub fn explain(namespace: &str, policies: &[Policy], namespaces: &[Namespace]) -> Explanation {
    let own: Vec<&Policy> = policies
        .iter()
        .filter(|p| p.namespace == namespace)
        .collect();
    let mut rows = Vec::new();
    for set in pod_sets(&own) {
        let applying: Vec<&&Policy> = own
            .iter()
            .filter(|p| implies(&set, &normal(&p.selector)))
            .collect();
        let pods = selector_text(&set, "every pod");
        for direction in [Direction::Ingress, Direction::Egress] {
            let isolating: Vec<(&str, &Vec<Rule>)> = applying
                .iter()
                .filter_map(|p| Some((p.name.as_str(), p.rules(direction)?)))
                .collect();
            let row = |peers: String, ports: String, policy: String| Row {
                pods: pods.clone(),
                direction: direction.text(),
                peers,
                ports,
                policy,
            };
            if isolating.is_empty() {
                rows.push(row(
                    everyone(direction).into(),
                    "every port".into(),
                    "(no policy isolates these pods)".into(),
                ));
                continue;
            }
            let mut allowed = false;
            for (name, rules) in &isolating {
                for rule in rules.iter() {
                    allowed = true;
                    let ports = if rule.ports.is_empty() {
                        "every port".to_owned()
                    } else {
                        rule.ports.join(", ")
                    };
                    if rule.peers.is_empty() {
                        rows.push(row(everyone(direction).into(), ports, (*name).into()));
                        continue;
                    }
                    for peer in &rule.peers {
                        rows.push(row(
                            peer_text(peer, namespace, namespaces),
                            ports.clone(),
                            (*name).into(),
                        ));
                    }
                }
            }
            if !allowed {
                let names: Vec<&str> = isolating.iter().map(|(n, _)| *n).collect();
                rows.push(row("nothing".into(), "-".into(), names.join(", ")));
            }
        }
    }
    Explanation {
        namespace: namespace.to_owned(),
        policies: own.len(),
        rows,
    }
}

fn everyone(direction: Direction) -> &'static str {
    match direction {
        Direction::Ingress => "every source",
        Direction::Egress => "every destination",
    }
}

/// The policies' pod selectors, every pod, and the intersections of selectors that can hold
/// a pod at once; the most general first.
fn pod_sets(policies: &[&Policy]) -> Vec<LabelSelector> {
    let mut sets: Vec<LabelSelector> = vec![LabelSelector::default()];
    let add = |sets: &mut Vec<LabelSelector>, s: LabelSelector| {
        if !sets.iter().any(|x| same(x, &s)) && sets.len() < MAX_SETS {
            sets.push(s);
        }
    };
    for p in policies {
        add(&mut sets, normal(&p.selector));
    }
    let mut i = 0;
    while i < sets.len() {
        for j in 0..i {
            if let Some(both) = intersect(&sets[i], &sets[j]) {
                add(&mut sets, both);
            }
        }
        i += 1;
    }
    sets.sort_by_key(|s| (s.requirements.len(), selector_text(s, "")));
    sets
}

/// Requirements sorted and without repeats, so that equal selectors compare equal.
fn normal(s: &LabelSelector) -> LabelSelector {
    let mut requirements: Vec<Requirement> = Vec::new();
    for r in &s.requirements {
        let mut r = r.clone();
        r.values.sort();
        r.values.dedup();
        if !requirements.contains(&r) {
            requirements.push(r);
        }
    }
    requirements.sort_by(|a, b| {
        (&a.key, key_of(&a.operator), &a.values).cmp(&(&b.key, key_of(&b.operator), &b.values))
    });
    LabelSelector { requirements }
}

fn key_of(o: &Operator) -> u8 {
    match o {
        Operator::In => 0,
        Operator::NotIn => 1,
        Operator::Exists => 2,
        Operator::DoesNotExist => 3,
    }
}

fn same(a: &LabelSelector, b: &LabelSelector) -> bool {
    normal(a) == normal(b)
}

/// Every pod `set` selects is also selected by `by` (each of `by`'s requirements is one of
/// `set`'s, or follows from one: `k In [v]` gives `k Exists` and `k NotIn` other values).
fn implies(set: &LabelSelector, by: &LabelSelector) -> bool {
    by.requirements.iter().all(|r| {
        set.requirements.iter().any(|s| {
            s == r
                || (s.key == r.key
                    && s.operator == Operator::In
                    && match r.operator {
                        Operator::In => s.values.iter().all(|v| r.values.contains(v)),
                        Operator::NotIn => s.values.iter().all(|v| !r.values.contains(v)),
                        Operator::Exists => true,
                        Operator::DoesNotExist => false,
                    })
        })
    })
}

/// The pods both select, unless no pod can carry both (two different values of one label, a
/// label both required and excluded), or one already includes the other.
fn intersect(a: &LabelSelector, b: &LabelSelector) -> Option<LabelSelector> {
    if implies(a, b) || implies(b, a) {
        return None;
    }
    let both = normal(&LabelSelector {
        requirements: a
            .requirements
            .iter()
            .chain(&b.requirements)
            .cloned()
            .collect(),
    });
    let mut labels: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in &both.requirements {
        if r.operator == Operator::In {
            let values: BTreeSet<&str> = r.values.iter().map(String::as_str).collect();
            let entry = labels
                .entry(r.key.as_str())
                .or_insert_with(|| values.clone());
            *entry = entry.intersection(&values).copied().collect();
            if entry.is_empty() {
                return None;
            }
        }
    }
    let contradicted = both.requirements.iter().any(|r| match r.operator {
        Operator::DoesNotExist => labels.contains_key(r.key.as_str()),
        Operator::NotIn => labels
            .get(r.key.as_str())
            .is_some_and(|vs| vs.iter().all(|v| r.values.iter().any(|x| x == v))),
        _ => false,
    });
    (!contradicted).then_some(both)
}

/// `tier=frontend`, `app in (a, b)`, `!debug`; `empty` when the selector is empty.
fn selector_text(s: &LabelSelector, empty: &str) -> String {
    if s.requirements.is_empty() {
        return empty.to_owned();
    }
    let parts: Vec<String> = normal(s)
        .requirements
        .iter()
        .map(|r| match r.operator {
            Operator::In if r.values.len() == 1 => format!("{}={}", r.key, r.values[0]),
            Operator::In => format!("{} in ({})", r.key, r.values.join(", ")),
            Operator::NotIn => format!("{} notin ({})", r.key, r.values.join(", ")),
            Operator::Exists => r.key.clone(),
            Operator::DoesNotExist => format!("!{}", r.key),
        })
        .collect();
    parts.join(",")
}

/// A selector that every namespace meets, or all but those it names (as lib.networkpolicy).
fn every_namespace(s: &LabelSelector) -> bool {
    s.requirements.iter().all(|r| match r.operator {
        Operator::NotIn | Operator::DoesNotExist => true,
        Operator::Exists => r.key == NAME_LABEL,
        Operator::In => false,
    })
}

fn peer_text(peer: &Peer, own: &str, namespaces: &[Namespace]) -> String {
    match peer {
        Peer::Block { cidr, except } if except.is_empty() => cidr.clone(),
        Peer::Block { cidr, except } => format!("{cidr} except {}", except.join(", ")),
        Peer::Pods {
            namespaces: ns,
            pods,
        } => {
            let pods = match pods {
                Some(p) if !p.requirements.is_empty() => format!("pods {}", selector_text(p, "")),
                _ => "every pod".to_owned(),
            };
            let place = match ns {
                None => format!("in {own}"),
                Some(s) if every_namespace(s) => "in every namespace".to_owned(),
                Some(s) => namespaces_text(s, namespaces),
            };
            format!("{pods} {place}")
        }
    }
}

/// The namespaces a selector names: by name when it selects by `kubernetes.io/metadata.name`,
/// otherwise by its labels with those of the input that match.
fn namespaces_text(s: &LabelSelector, namespaces: &[Namespace]) -> String {
    if let [r] = s.requirements.as_slice()
        && r.key == NAME_LABEL
        && r.operator == Operator::In
    {
        let noun = if r.values.len() == 1 {
            "namespace"
        } else {
            "namespaces"
        };
        return format!("in {noun} {}", r.values.join(", "));
    }
    let matched: Vec<&str> = namespaces
        .iter()
        .filter(|n| n.matches(s))
        .map(|n| n.name.as_str())
        .collect();
    let which = if matched.is_empty() {
        "none in the input".to_owned()
    } else {
        matched.join(", ")
    };
    format!("in namespaces {} ({which})", selector_text(s, ""))
}

/// The explanations as an aligned table per namespace.
pub fn text(explanations: &[Explanation]) -> String {
    let mut out = String::new();
    for (i, e) in explanations.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let noun = if e.policies == 1 {
            "NetworkPolicy"
        } else {
            "NetworkPolicies"
        };
        let _ = writeln!(out, "namespace {} ({} {noun})", e.namespace, e.policies);
        let header = Row {
            pods: "PODS".into(),
            direction: "DIR",
            peers: "PEERS".into(),
            ports: "PORTS".into(),
            policy: "POLICY".into(),
        };
        let rows: Vec<&Row> = std::iter::once(&header).chain(&e.rows).collect();
        let width = |f: fn(&Row) -> usize| rows.iter().map(|r| f(r)).max().unwrap_or(0);
        let (w_pods, w_dir, w_peers, w_ports) = (
            width(|r| r.pods.chars().count()),
            width(|r| r.direction.len()),
            width(|r| r.peers.chars().count()),
            width(|r| r.ports.chars().count()),
        );
        for r in rows {
            let line = format!(
                "{:w_pods$}  {:w_dir$}  {:w_peers$}  {:w_ports$}  {}",
                r.pods, r.direction, r.peers, r.ports, r.policy
            );
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
    out
}

pub fn json(explanations: &[Explanation]) -> Value {
    Value::Array(
        explanations
            .iter()
            .map(|e| {
                json!({
                    "namespace": e.namespace,
                    "policies": e.policies,
                    "rows": e.rows.iter().map(|r| json!({
                        "pods": r.pods, "direction": r.direction, "peers": r.peers,
                        "ports": r.ports, "policy": r.policy,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}
