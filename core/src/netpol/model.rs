//! NetworkPolicies, Namespaces and Pods as the model reads them, after the API server's
//! validation and defaulting. Each Kubernetes rule is stated where it is applied.
//!
//! [`Policy::parse`] reads a NetworkPolicy into its [`Rule`]s of [`Peer`]s and [`PortEntry`]s,
//! within the size [`limits`]; [`Namespace`] and [`Pod`] are what the rules are matched
//! against, and [`selects`] is how a label selector chooses them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde_json::Value;

use super::ip::IpSet;
use crate::matcher::{LabelSelector, Operator, Requirement};

/// The label the API server sets on every Namespace, to its name; tenants cannot change it.
pub const NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The most a NetworkPolicy may hold, counted before anything is evaluated. Far above what
/// real policies need (the largest published allow-lists have a few hundred ranges). Past any of
/// them a policy is refused with the limit's name. A namespace may hold any number of policies:
/// what bounds a judgement over them is the step budget and the deadline (`space::Budget`).
pub mod limits {
    /// Ingress plus egress rules.
    pub const RULES: usize = 128;
    /// Peers of one rule.
    pub const PEERS_PER_RULE: usize = 256;
    /// Port entries of one rule.
    pub const PORTS_PER_RULE: usize = 128;
    /// `except` entries of one ipBlock.
    pub const EXCEPTS_PER_BLOCK: usize = 256;
    /// Requirements (matchLabels entries plus matchExpressions) of one selector.
    pub const REQUIREMENTS_PER_SELECTOR: usize = 32;
    /// Values of one matchExpressions entry.
    pub const VALUES_PER_REQUIREMENT: usize = 64;
    /// Everything above together: rules, peers, ports, excepts, requirements and values.
    pub const ENTRIES: usize = 4096;
}

/// Which traffic of a selected pod a policy governs: what comes in, or what goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Connections to the pod (`ingress`, peers in `from`).
    Ingress,
    /// Connections from the pod (`egress`, peers in `to`).
    Egress,
}

impl Direction {
    /// Both directions, ingress first.
    pub const BOTH: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    /// `ingress` or `egress`: the field of the policy spec that lists this direction's rules.
    pub fn field(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    /// The field of a rule that lists its peers.
    pub fn peer_field(self) -> &'static str {
        match self {
            Direction::Ingress => "from",
            Direction::Egress => "to",
        }
    }
}

/// The protocol of a port, as the NetworkPolicy API allows (TCP when a port names none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// `TCP`.
    Tcp,
    /// `UDP`.
    Udp,
    /// `SCTP`.
    Sctp,
}

impl Protocol {
    /// Every protocol.
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

    /// The API's spelling: `TCP`, `UDP`, `SCTP`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }

    /// The API's spelling, exactly (the API server refuses `tcp`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// `80`, `80/TCP`, `53/udp`: a port with an optional protocol (TCP by default).
    pub fn parse_port(s: &str) -> Result<(u16, Protocol), String> {
        let (port, proto) = s.split_once('/').unwrap_or((s, "TCP"));
        let proto = Protocol::parse(&proto.to_ascii_uppercase())
            .ok_or_else(|| format!("{s:?}: the protocol must be TCP, UDP or SCTP"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{s:?}: the port must be a number from 1 to 65535"))?;
        Ok((port, proto))
    }
}

/// What one port entry lets through, within its protocol.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortMatch {
    /// No `port`: every port of the protocol.
    All,
    /// `port`, or `port` to `endPort`.
    Range(u16, u16),
    /// A named port: the number of the destination pod's container port of that name.
    Named(String),
}

/// One `ports` entry of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortEntry {
    /// `protocol` (TCP when absent).
    pub protocol: Protocol,
    /// `port` and `endPort`.
    pub port: PortMatch,
}

impl fmt::Display for PortEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.protocol.name();
        match &self.port {
            PortMatch::All => write!(f, "every {p} port"),
            PortMatch::Range(a, b) if a == b => write!(f, "{p} {a}"),
            PortMatch::Range(a, b) => write!(f, "{p} {a}-{b}"),
            PortMatch::Named(n) => write!(f, "{p} {n}"),
        }
    }
}

/// Which namespaces a pod peer is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespaces {
    /// No namespaceSelector: the policy's own namespace.
    Own,
    /// A namespaceSelector (`{}` is every namespace).
    Selected(LabelSelector),
}

/// One `from`/`to` entry of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// Pods chosen by namespace and pod labels; an absent podSelector is every pod.
    Pods {
        /// The namespaces the pods are in.
        namespaces: Namespaces,
        /// `podSelector`, over the pods of those namespaces.
        pods: LabelSelector,
    },
    /// Addresses: `cidr` without `except`, as written, and what it reaches.
    Block {
        /// `ipBlock.cidr`.
        cidr: String,
        /// `ipBlock.except`.
        except: Vec<String>,
        /// The addresses in `cidr` and in none of `except`.
        reach: IpSet,
    },
}

/// One rule of a policy: it allows a connection when one of its peers and one of its ports match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Which list of the policy it is in.
    pub direction: Direction,
    /// Its place in that list.
    pub index: usize,
    /// `None`: no `from`/`to`, or an empty list: every peer, the internet included.
    pub peers: Option<Vec<Peer>>,
    /// `None`: no `ports`, or an empty list: every port of every protocol.
    pub ports: Option<Vec<PortEntry>>,
    /// Every address its ipBlocks reach (everything when it has no peers), worked out once.
    pub reach: IpSet,
    /// Each pod peer as requirements on one label space: `ns:<key>` for the namespace's labels
    /// (its own namespace by name when it has no namespaceSelector), `pod:<key>` for the pod's.
    pub pod_peers: Vec<Vec<Requirement>>,
}

impl Rule {
    /// `ingress[0]`.
    pub fn place(&self) -> String {
        format!("{}[{}]", self.direction.field(), self.index)
    }

    fn reach_of(peers: Option<&[Peer]>) -> IpSet {
        match peers {
            None => IpSet::everything(),
            Some(peers) => {
                let blocks: Vec<&IpSet> = peers
                    .iter()
                    .filter_map(|p| match p {
                        Peer::Block { reach, .. } => Some(reach),
                        Peer::Pods { .. } => None,
                    })
                    .collect();
                IpSet::union_all(&blocks)
            }
        }
    }
}

/// A NetworkPolicy, read: the pods it selects and, for each direction it isolates, the rules that
/// allow traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace` (or the default the reader was given): the policy selects only pods
    /// of this namespace.
    pub namespace: String,
    /// `spec.podSelector`: which pods of its namespace it applies to; empty selects every one.
    pub pod_selector: LabelSelector,
    /// `Some` when the policy isolates the pods it selects in that direction (its
    /// `policyTypes`, after defaulting), with the rules that allow traffic.
    pub ingress: Option<Vec<Rule>>,
    /// As `ingress`, for egress.
    pub egress: Option<Vec<Rule>>,
}

impl Policy {
    /// The rules of `direction`; `None` when the policy does not isolate it.
    pub fn rules(&self, direction: Direction) -> Option<&[Rule]> {
        match direction {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }

    /// Whether the policy isolates the pods it selects in `direction`.
    pub fn isolates(&self, direction: Direction) -> bool {
        self.rules(direction).is_some()
    }

    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Reads a `networking.k8s.io/v1` NetworkPolicy. `default_namespace` is used when the object
    /// names none (a file applied with `kubectl -n`). The size limits are checked first; every
    /// error names the field and what to fix.
    pub fn parse(v: &Value, default_namespace: &str) -> Result<Self, String> {
        check_size(v)?;
        let (name, namespace) = identity(v, default_namespace)?;
        let spec = &v["spec"];
        if !spec.is_object() {
            return Err("spec: required (a NetworkPolicy needs spec.podSelector)".into());
        }
        let pod_selector = selector(&spec["podSelector"], "spec.podSelector")?;
        // SetDefaults_NetworkPolicy: an empty or missing policyTypes is [Ingress], plus Egress
        // when the policy has at least one egress rule. `egress: []` does not isolate egress.
        let mut ingress_type = false;
        let mut egress_type = false;
        match &spec["policyTypes"] {
            Value::Null => {}
            Value::Array(types) => {
                for (i, t) in types.iter().enumerate() {
                    match t.as_str() {
                        Some("Ingress") => ingress_type = true,
                        Some("Egress") => egress_type = true,
                        _ => {
                            return Err(format!(
                                "spec.policyTypes[{i}]: {t} is not Ingress or Egress"
                            ));
                        }
                    }
                }
            }
            other => {
                return Err(format!(
                    "spec.policyTypes: {other} is not a list; write [Ingress], [Egress] or [Ingress, Egress]"
                ));
            }
        }
        if !ingress_type && !egress_type {
            ingress_type = true;
            egress_type = spec["egress"].as_array().is_some_and(|e| !e.is_empty());
        }
        let rules = |direction: Direction| -> Result<Vec<Rule>, String> {
            let field = direction.field();
            match &spec[field] {
                Value::Null => Ok(Vec::new()),
                Value::Array(list) => list
                    .iter()
                    .enumerate()
                    .map(|(i, r)| parse_rule(r, direction, i, &namespace))
                    .collect(),
                _ => Err(format!("spec.{field}: must be a list of rules")),
            }
        };
        // Rules of a direction the policy does not isolate are not enforced; they are still read,
        // so that a broken one is reported.
        let ingress = rules(Direction::Ingress)?;
        let egress = rules(Direction::Egress)?;
        Ok(Self {
            name,
            namespace,
            pod_selector,
            ingress: ingress_type.then_some(ingress),
            egress: egress_type.then_some(egress),
        })
    }
}

impl Policy {
    /// Only what a policy isolates: its podSelector and policyTypes (after defaulting), without
    /// its rules. For a policy the model cannot read in full (past a limit) that goes away: what
    /// its removal opens can still be judged.
    pub fn parse_isolation(v: &Value, default_namespace: &str) -> Result<Self, String> {
        let mut stripped = v.clone();
        if let Some(spec) = stripped["spec"].as_object_mut() {
            for d in Direction::BOTH {
                if let Some(rules) = spec.get_mut(d.field()).and_then(Value::as_array_mut) {
                    // Keep whether there are egress rules (policyTypes defaulting reads it).
                    let n = rules.len().min(1);
                    *rules = vec![Value::Object(Default::default()); n];
                }
            }
        }
        let mut p = Policy::parse(&stripped, default_namespace)?;
        for d in Direction::BOTH {
            if let Some(rules) = match d {
                Direction::Ingress => p.ingress.as_mut(),
                Direction::Egress => p.egress.as_mut(),
            } {
                rules.clear();
            }
        }
        Ok(p)
    }
}

/// An object's name (required) and namespace (`default_namespace` when it names none).
fn identity(v: &Value, default_namespace: &str) -> Result<(String, String), String> {
    let name = v["metadata"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or("metadata.name: required")?;
    let namespace = v["metadata"]["namespace"]
        .as_str()
        .filter(|n| !n.is_empty())
        .unwrap_or(default_namespace);
    Ok((name.to_owned(), namespace.to_owned()))
}

/// A selector; `null` or absent is the empty selector (everything).
fn selector(v: &Value, at: &str) -> Result<LabelSelector, String> {
    match v {
        Value::Null => Ok(LabelSelector::default()),
        s => LabelSelector::parse(s, at),
    }
}

fn parse_rule(
    r: &Value,
    direction: Direction,
    index: usize,
    namespace: &str,
) -> Result<Rule, String> {
    let at = format!("spec.{}[{index}]", direction.field());
    if !r.is_object() && !r.is_null() {
        return Err(format!("{at}: must be a mapping (a rule)"));
    }
    let peer_field = direction.peer_field();
    let peers = match &r[peer_field] {
        Value::Null => None,
        Value::Array(list) if list.is_empty() => None,
        Value::Array(list) => Some(
            list.iter()
                .enumerate()
                .map(|(i, p)| parse_peer(p, &format!("{at}.{peer_field}[{i}]")))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        _ => return Err(format!("{at}.{peer_field}: must be a list of peers")),
    };
    let ports = match &r["ports"] {
        Value::Null => None,
        Value::Array(list) if list.is_empty() => None,
        Value::Array(list) => Some(
            list.iter()
                .enumerate()
                .map(|(i, p)| parse_port(p, &format!("{at}.ports[{i}]")))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        _ => return Err(format!("{at}.ports: must be a list of ports")),
    };
    let pod_peers = peers
        .iter()
        .flatten()
        .filter_map(|p| match p {
            Peer::Pods { namespaces, pods } => {
                let mut reqs = prefixed("pod:", &pods.requirements);
                match namespaces {
                    Namespaces::Own => reqs.push(Requirement {
                        key: format!("ns:{NAME_LABEL}"),
                        operator: Operator::In,
                        values: vec![namespace.to_owned()],
                    }),
                    Namespaces::Selected(s) => reqs.extend(prefixed("ns:", &s.requirements)),
                }
                Some(reqs)
            }
            Peer::Block { .. } => None,
        })
        .collect();
    Ok(Rule {
        direction,
        index,
        reach: Rule::reach_of(peers.as_deref()),
        pod_peers,
        peers,
        ports,
    })
}

fn prefixed(prefix: &str, reqs: &[Requirement]) -> Vec<Requirement> {
    reqs.iter()
        .map(|r| Requirement {
            key: format!("{prefix}{}", r.key),
            ..r.clone()
        })
        .collect()
}

fn parse_peer(p: &Value, at: &str) -> Result<Peer, String> {
    let obj = p.as_object().ok_or_else(|| {
        format!("{at}: must be a mapping with podSelector, namespaceSelector or ipBlock")
    })?;
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "podSelector" | "namespaceSelector" | "ipBlock"
        ) {
            return Err(format!(
                "{at}.{key}: unknown field; a peer has podSelector, namespaceSelector or ipBlock"
            ));
        }
    }
    let present = |k: &str| obj.get(k).is_some_and(|v| !v.is_null());
    if present("ipBlock") {
        if present("podSelector") || present("namespaceSelector") {
            return Err(format!(
                "{at}: an ipBlock cannot be combined with a podSelector or namespaceSelector; make them two peers"
            ));
        }
        let block = &obj["ipBlock"];
        let cidr = block["cidr"]
            .as_str()
            .ok_or_else(|| format!("{at}.ipBlock.cidr: required, e.g. 203.0.113.0/24"))?;
        let except: Vec<String> = match &block["except"] {
            Value::Null => Vec::new(),
            Value::Array(list) => list
                .iter()
                .map(|e| {
                    e.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| format!("{at}.ipBlock.except: must be a list of CIDRs"))
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(format!("{at}.ipBlock.except: must be a list of CIDRs")),
        };
        let reach = IpSet::block(cidr, &except).map_err(|e| format!("{at}.ipBlock: {e}"))?;
        return Ok(Peer::Block {
            cidr: cidr.to_owned(),
            except,
            reach,
        });
    }
    if !present("podSelector") && !present("namespaceSelector") {
        return Err(format!(
            "{at}: a peer needs a podSelector, a namespaceSelector or an ipBlock"
        ));
    }
    let namespaces = if present("namespaceSelector") {
        Namespaces::Selected(selector(
            &obj["namespaceSelector"],
            &format!("{at}.namespaceSelector"),
        )?)
    } else {
        Namespaces::Own
    };
    let pods = selector(
        obj.get("podSelector").unwrap_or(&Value::Null),
        &format!("{at}.podSelector"),
    )?;
    Ok(Peer::Pods { namespaces, pods })
}

fn parse_port(p: &Value, at: &str) -> Result<PortEntry, String> {
    if !p.is_object() {
        return Err(format!("{at}: must be a mapping with protocol and port"));
    }
    let protocol = match &p["protocol"] {
        Value::Null => Protocol::Tcp,
        v => v.as_str().and_then(Protocol::parse).ok_or_else(|| {
            format!("{at}.protocol: {v} is not TCP, UDP or SCTP (exactly so spelt)")
        })?,
    };
    let number = |v: &Value, field: &str| -> Result<u16, String> {
        v.as_u64()
            .filter(|n| (1..=65535).contains(n))
            .map(|n| n as u16)
            .ok_or_else(|| format!("{at}.{field}: {v} is not a port number from 1 to 65535"))
    };
    let end = &p["endPort"];
    let port = match &p["port"] {
        Value::Null => {
            if !end.is_null() {
                return Err(format!("{at}.endPort: needs a port to start from"));
            }
            PortMatch::All
        }
        Value::String(name) => {
            if !end.is_null() {
                return Err(format!(
                    "{at}.endPort: a range needs a numeric port, not the named port {name:?}"
                ));
            }
            if !valid_port_name(name) {
                return Err(format!(
                    "{at}.port: {name:?} is not a port name (IANA_SVC_NAME: up to 15 lowercase letters, digits and '-', with a letter); write a number or the container port's name"
                ));
            }
            PortMatch::Named(name.clone())
        }
        v => {
            let start = number(v, "port")?;
            let stop = if end.is_null() {
                start
            } else {
                number(end, "endPort")?
            };
            if stop < start {
                return Err(format!(
                    "{at}.endPort: {stop} is below port {start}; endPort must be at least port"
                ));
            }
            PortMatch::Range(start, stop)
        }
    };
    Ok(PortEntry { protocol, port })
}

/// Kubernetes' IANA_SVC_NAME: 1-15 characters of a-z, 0-9 and '-', at least one letter, no
/// '-' at either end nor two in a row.
fn valid_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

/// Counts what a NetworkPolicy holds, without reading it further, against [`limits`].
fn check_size(v: &Value) -> Result<(), String> {
    let mut count = Count::default();
    let spec = &v["spec"];
    count.selector(&spec["podSelector"], "spec.podSelector")?;
    let rules: usize = Direction::BOTH
        .iter()
        .map(|d| spec[d.field()].as_array().map_or(0, Vec::len))
        .sum();
    count.add("rules", rules, limits::RULES, "spec")?;
    for d in Direction::BOTH {
        for (i, r) in spec[d.field()].as_array().into_iter().flatten().enumerate() {
            let at = format!("spec.{}[{i}]", d.field());
            let peers = r[d.peer_field()].as_array();
            let peers_at = format!("{at}.{}", d.peer_field());
            count.add(
                "peers",
                peers.map_or(0, Vec::len),
                limits::PEERS_PER_RULE,
                &peers_at,
            )?;
            let ports = r["ports"].as_array().map_or(0, Vec::len);
            count.add(
                "ports",
                ports,
                limits::PORTS_PER_RULE,
                &format!("{at}.ports"),
            )?;
            for (j, p) in peers.into_iter().flatten().enumerate() {
                let at = format!("{peers_at}[{j}]");
                let excepts = p["ipBlock"]["except"].as_array().map_or(0, Vec::len);
                count.add(
                    "excepts",
                    excepts,
                    limits::EXCEPTS_PER_BLOCK,
                    &format!("{at}.ipBlock.except"),
                )?;
                count.selector(&p["podSelector"], &format!("{at}.podSelector"))?;
                count.selector(&p["namespaceSelector"], &format!("{at}.namespaceSelector"))?;
            }
        }
    }
    if count.entries > limits::ENTRIES {
        return Err(format!(
            "spec: {} entries (rules, peers, ports, excepts, selector requirements and values), more than the {} Palisade judges in one NetworkPolicy; split it into several policies",
            count.entries,
            limits::ENTRIES
        ));
    }
    Ok(())
}

#[derive(Default)]
struct Count {
    entries: usize,
}

impl Count {
    fn add(&mut self, what: &str, n: usize, limit: usize, at: &str) -> Result<(), String> {
        self.entries = self.entries.saturating_add(n);
        if n > limit {
            return Err(format!(
                "{at}: {n} {what}, more than the {limit} Palisade judges in one NetworkPolicy; split it into several policies"
            ));
        }
        Ok(())
    }

    fn selector(&mut self, s: &Value, at: &str) -> Result<(), String> {
        if s.is_null() {
            return Ok(());
        }
        let labels = s["matchLabels"].as_object().map_or(0, |m| m.len());
        let exprs = s["matchExpressions"].as_array();
        let requirements = labels + exprs.map_or(0, Vec::len);
        self.add(
            "requirements",
            requirements,
            limits::REQUIREMENTS_PER_SELECTOR,
            at,
        )?;
        for e in exprs.into_iter().flatten() {
            let values = e["values"].as_array().map_or(0, Vec::len);
            self.add("values", values, limits::VALUES_PER_REQUIREMENT, at)?;
        }
        Ok(())
    }
}

/// Labels, by key.
pub type Labels = BTreeMap<String, String>;

/// Whether `selector` selects an object with `labels`, as Kubernetes' label selectors do:
/// every requirement holds; `NotIn` and `DoesNotExist` hold when the label is absent.
pub fn selects(selector: &LabelSelector, labels: &Labels) -> bool {
    selector
        .requirements
        .iter()
        .all(|r| requirement_holds(r, labels.get(&r.key).map(String::as_str)))
}

/// Whether one requirement holds for a label's value (`None`: the label is not set), as Kubernetes
/// judges it.
pub fn requirement_holds(r: &Requirement, value: Option<&str>) -> bool {
    match r.operator {
        Operator::In => value.is_some_and(|v| r.values.iter().any(|x| x == v)),
        Operator::NotIn => value.is_none_or(|v| !r.values.iter().any(|x| x == v)),
        Operator::Exists => value.is_some(),
        Operator::DoesNotExist => value.is_none(),
    }
}

/// `tier=frontend,app in (a, b),!debug`; `empty` for the empty selector.
pub fn selector_text(s: &LabelSelector, empty: &str) -> String {
    if s.requirements.is_empty() {
        return empty.to_owned();
    }
    let mut parts: Vec<String> = s
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
    parts.sort();
    parts.dedup();
    parts.join(",")
}

/// A Namespace: its name and labels, `kubernetes.io/metadata.name` included (the API server
/// sets it to the name, whatever the object says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`, with `kubernetes.io/metadata.name` set to the name.
    pub labels: Labels,
}

impl Namespace {
    /// The Namespace `name` with `labels`, and its name label set as the API server sets it.
    pub fn new(name: &str, labels: Labels) -> Self {
        let mut labels = labels;
        labels.insert(NAME_LABEL.into(), name.to_owned());
        Self {
            name: name.to_owned(),
            labels,
        }
    }

    /// Reads a Namespace object: its name (required) and labels.
    pub fn of(v: &Value) -> Result<Self, String> {
        let name = v["metadata"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or("metadata.name: required")?;
        Ok(Self::new(name, labels_of(v, "metadata.labels")?))
    }
}

fn labels_of(v: &Value, at: &str) -> Result<Labels, String> {
    match &v["metadata"]["labels"] {
        Value::Null => Ok(Labels::new()),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|s| (k.clone(), s.to_owned()))
                    .ok_or_else(|| format!("{at}.{k}: label values are strings; quote it"))
            })
            .collect(),
        _ => Err(format!("{at}: must be a mapping of label to value")),
    }
}

/// A container port of a pod, for named ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPort {
    /// `name`.
    pub name: String,
    /// `containerPort`.
    pub port: u16,
    /// `protocol` (TCP when absent).
    pub protocol: Protocol,
}

/// A Pod: where it is, its labels, its IP when known, and its named container ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// `metadata.namespace` (or the default the reader was given).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: Labels,
    /// `status.podIP` and `status.podIPs`, without repeats; empty before the pod has an address.
    pub ips: Vec<IpAddr>,
    /// The named ports of its containers and init containers (unnamed ones cannot be referred to).
    pub ports: Vec<ContainerPort>,
}

impl Pod {
    /// Reads a Pod; `default_namespace` when it names none.
    pub fn of(v: &Value, default_namespace: &str) -> Result<Self, String> {
        let (name, namespace) = identity(v, default_namespace)?;
        let labels = labels_of(v, "metadata.labels")?;
        let mut ips = Vec::new();
        let mut push_ip = |s: &Value, at: &str| -> Result<(), String> {
            if let Some(s) = s.as_str() {
                let ip: IpAddr = s
                    .parse()
                    .map_err(|_| format!("{at}: {s:?} is not an IP address"))?;
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
            Ok(())
        };
        push_ip(&v["status"]["podIP"], "status.podIP")?;
        for (i, p) in v["status"]["podIPs"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            push_ip(&p["ip"], &format!("status.podIPs[{i}].ip"))?;
        }
        let mut ports = Vec::new();
        for field in ["containers", "initContainers"] {
            for (i, c) in v["spec"][field]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                for (j, p) in c["ports"].as_array().into_iter().flatten().enumerate() {
                    let at = format!("spec.{field}[{i}].ports[{j}]");
                    let Some(name) = p["name"].as_str() else {
                        continue;
                    };
                    let port = p["containerPort"]
                        .as_u64()
                        .filter(|n| (1..=65535).contains(n))
                        .ok_or_else(|| format!("{at}.containerPort: not a port number"))?
                        as u16;
                    let protocol = match &p["protocol"] {
                        Value::Null => Protocol::Tcp,
                        v => v
                            .as_str()
                            .and_then(Protocol::parse)
                            .ok_or_else(|| format!("{at}.protocol: {v} is not TCP, UDP or SCTP"))?,
                    };
                    ports.push(ContainerPort {
                        name: name.to_owned(),
                        port,
                        protocol,
                    });
                }
            }
        }
        Ok(Self {
            namespace,
            name,
            labels,
            ips,
            ports,
        })
    }

    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The number of its container port `name` for `protocol`, if it has one.
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.name == name && p.protocol == protocol)
            .map(|p| p.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(spec: Value) -> Result<Policy, String> {
        Policy::parse(
            &json!({"metadata": {"name": "p", "namespace": "x"}, "spec": spec}),
            "default",
        )
    }

    // SetDefaults_NetworkPolicy: no policyTypes means Ingress, plus Egress only when there is
    // at least one egress rule.
    #[test]
    fn policy_types_default_as_the_api_server_does() {
        let p = policy(json!({"podSelector": {}})).unwrap();
        assert!(p.isolates(Direction::Ingress) && !p.isolates(Direction::Egress));
        let p = policy(json!({"podSelector": {}, "egress": []})).unwrap();
        assert!(
            !p.isolates(Direction::Egress),
            "egress: [] without policyTypes leaves egress open"
        );
        let p = policy(json!({"podSelector": {}, "egress": [{}]})).unwrap();
        assert!(p.isolates(Direction::Ingress) && p.isolates(Direction::Egress));
        let p = policy(json!({"podSelector": {}, "policyTypes": []})).unwrap();
        assert!(
            p.isolates(Direction::Ingress) && !p.isolates(Direction::Egress),
            "policyTypes: [] is defaulted like a missing one"
        );
        let p =
            policy(json!({"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}]})).unwrap();
        assert!(
            !p.isolates(Direction::Ingress),
            "ingress rules of a policy that is Egress only are not enforced"
        );
    }

    // An empty or missing from/to is every peer; an empty or missing ports is every port.
    #[test]
    fn empty_lists_mean_everything() {
        let p = policy(json!({"ingress": [{"from": [], "ports": []}, {}]})).unwrap();
        for r in p.ingress.unwrap() {
            assert_eq!(r.peers, None);
            assert_eq!(r.ports, None);
        }
    }

    #[test]
    fn ports_are_read_with_their_protocol_and_range() {
        let p = policy(json!({"ingress": [{"ports": [
            {"port": 80}, {"protocol": "UDP", "port": 53}, {"port": 8000, "endPort": 8080},
            {"protocol": "SCTP"}, {"port": "http"}
        ]}]}))
        .unwrap();
        let ports = p.ingress.unwrap()[0].ports.clone().unwrap();
        let text: Vec<String> = ports.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "TCP 80",
                "UDP 53",
                "TCP 8000-8080",
                "every SCTP port",
                "TCP http"
            ]
        );
    }

    #[test]
    fn what_the_api_server_refuses_is_refused_with_the_field() {
        for (spec, field) in [
            (
                json!({"ingress": [{"ports": [{"protocol": "tcp", "port": 80}]}]}),
                "spec.ingress[0].ports[0].protocol",
            ),
            (
                json!({"ingress": [{"ports": [{"port": 0}]}]}),
                "spec.ingress[0].ports[0].port",
            ),
            (
                json!({"ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}),
                "spec.ingress[0].ports[0].endPort",
            ),
            (
                json!({"ingress": [{"ports": [{"port": "http", "endPort": 80}]}]}),
                "spec.ingress[0].ports[0].endPort",
            ),
            (
                json!({"ingress": [{"ports": [{"port": "80"}]}]}),
                "spec.ingress[0].ports[0].port",
            ),
            (
                json!({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]}),
                "spec.egress[0].to[0]",
            ),
            (
                json!({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/8"]}}]}]}),
                "spec.egress[0].to[0].ipBlock",
            ),
            (json!({"egress": [{"to": [{}]}]}), "spec.egress[0].to[0]"),
            (json!({"policyTypes": ["ingress"]}), "spec.policyTypes[0]"),
        ] {
            let e = policy(spec.clone()).unwrap_err();
            assert!(e.starts_with(field), "{spec}: {e}");
        }
    }

    #[test]
    fn a_policy_past_a_limit_is_refused_before_it_is_read() {
        let peers: Vec<Value> = (0..=limits::PEERS_PER_RULE)
            .map(|i| json!({"ipBlock": {"cidr": format!("10.0.{}.{}/32", i / 256, i % 256)}}))
            .collect();
        let e = policy(json!({"egress": [{"to": peers}]})).unwrap_err();
        assert!(
            e.contains("spec.egress[0].to") && e.contains("257 peers"),
            "{e}"
        );
        let rules: Vec<Value> = (0..=limits::RULES).map(|_| json!({})).collect();
        let e = policy(json!({"ingress": rules})).unwrap_err();
        assert!(e.contains("129 rules"), "{e}");
        let values: Vec<String> = (0..=limits::VALUES_PER_REQUIREMENT)
            .map(|i| format!("v{i}"))
            .collect();
        let e = policy(json!({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In", "values": values}]}})).unwrap_err();
        assert!(
            e.contains("spec.podSelector") && e.contains("65 values"),
            "{e}"
        );
    }

    // Label selectors: NotIn and DoesNotExist hold for an object without the label.
    #[test]
    fn selectors_match_as_kubernetes_does() {
        let sel = |v: Value| LabelSelector::parse(&v, "s").unwrap();
        let labels: Labels = [("app".to_owned(), "web".to_owned())].into();
        assert!(selects(&sel(json!({})), &labels));
        assert!(selects(
            &sel(
                json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]})
            ),
            &labels
        ));
        assert!(selects(
            &sel(json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]})),
            &labels
        ));
        assert!(!selects(
            &sel(
                json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]})
            ),
            &labels
        ));
        assert!(selects(
            &sel(
                json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "app", "operator": "Exists"}]})
            ),
            &labels
        ));
    }

    #[test]
    fn a_namespace_always_carries_its_name_label() {
        let ns = Namespace::of(&json!({"metadata": {"name": "x", "labels": {NAME_LABEL: "y"}}}))
            .unwrap();
        assert_eq!(
            ns.labels[NAME_LABEL], "x",
            "the API server sets it to the name"
        );
    }
}
