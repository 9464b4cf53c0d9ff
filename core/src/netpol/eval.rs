//! Concrete questions: may this endpoint reach that one on this port, and which policies say so.
//!
//! [`World`] is what the input holds; [`query`] answers one question about two [`Endpoint`]s
//! with an [`Answer`], whose [`Side`]s name the rules that allow or the policies that deny.
//!
//! Kubernetes' rules, as applied here:
//! - A connection needs both sides: egress from the source (when it is a pod) and ingress to
//!   the destination (when it is a pod).
//! - A pod is isolated in a direction when some policy of its own namespace selects it and
//!   covers that direction (`policyTypes`); a pod no such policy selects is allowed everything
//!   in that direction.
//! - An isolated pod is allowed what any rule of any policy selecting it allows (the union):
//!   policies only ever add.
//! - A rule allows a peer on a port when one of its peers matches and one of its ports matches;
//!   no peers is every peer, no ports every port.
//! - A pod peer with no namespaceSelector is in the policy's own namespace; a namespaceSelector
//!   is matched against the Namespace's labels (its `kubernetes.io/metadata.name` included).
//! - An ipBlock matches an address in its CIDR and in none of its excepts; pods match by their IPs
//!   (the e2e tests rely on it).
//! - A named port matches the destination pod's container port of that name and protocol; an
//!   address outside the cluster has no named ports.
//! - A pod can always reach itself.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::model::{
    Direction, Labels, Namespace, Namespaces, Peer, Pod, Policy, PortEntry, PortMatch, Protocol,
    Rule, selects,
};
use crate::manifest::Document;

/// What the model knows: Namespaces, Pods and NetworkPolicies.
#[derive(Debug, Clone, Default)]
pub struct World {
    /// Namespaces by name. One not held here has only its name label.
    pub namespaces: BTreeMap<String, Namespace>,
    /// The Pods.
    pub pods: Vec<Pod>,
    /// The NetworkPolicies, of every namespace.
    pub policies: Vec<Policy>,
}

impl World {
    /// Reads the NetworkPolicies, Namespaces and Pods among `docs` (other kinds are ignored).
    /// An error names the file, the object and the field.
    pub fn read(docs: &[Document]) -> Result<World, String> {
        let mut world = World::default();
        for d in docs {
            let at = || format!("{} ({} {:?})", d.origin, d.kind(), d.name());
            match (d.value["apiVersion"].as_str(), d.kind()) {
                (Some("networking.k8s.io/v1"), "NetworkPolicy") => world.policies.push(
                    Policy::parse(&d.value, "default").map_err(|e| format!("{}: {e}", at()))?,
                ),
                (Some("v1"), "Namespace") => {
                    let ns = Namespace::of(&d.value).map_err(|e| format!("{}: {e}", at()))?;
                    world.namespaces.insert(ns.name.clone(), ns);
                }
                (Some("v1"), "Pod") => world
                    .pods
                    .push(Pod::of(&d.value, "default").map_err(|e| format!("{}: {e}", at()))?),
                _ => {}
            }
        }
        Ok(world)
    }

    /// A namespace's labels: those of its Namespace object, or only its name label when the
    /// input does not hold it.
    pub fn namespace_labels(&self, name: &str) -> std::borrow::Cow<'_, Labels> {
        match self.namespaces.get(name) {
            Some(ns) => std::borrow::Cow::Borrowed(&ns.labels),
            None => std::borrow::Cow::Owned(Namespace::new(name, Labels::new()).labels),
        }
    }

    /// The pod whose `namespace/name` is `id`.
    pub fn pod(&self, id: &str) -> Option<&Pod> {
        self.pods.iter().find(|p| p.id() == id)
    }

    /// The policies of `namespace` that select `pod_labels` and isolate `direction`.
    pub fn isolating<'a>(
        &'a self,
        namespace: &'a str,
        pod_labels: &'a Labels,
        direction: Direction,
    ) -> impl Iterator<Item = &'a Policy> + 'a {
        self.policies.iter().filter(move |p| {
            p.namespace == namespace
                && p.isolates(direction)
                && selects(&p.pod_selector, pod_labels)
        })
    }
}

/// One end of a connection.
#[derive(Debug, Clone, Copy)]
pub enum Endpoint<'a> {
    /// A pod the input holds.
    Pod(&'a Pod),
    /// An address outside the cluster (or of a pod the input does not hold).
    Address(IpAddr),
}

impl Endpoint<'_> {
    /// `namespace/name` of a pod, or the address.
    pub fn text(&self) -> String {
        match self {
            Endpoint::Pod(p) => p.id(),
            Endpoint::Address(a) => a.to_string(),
        }
    }
}

/// A rule of a policy, by name and place: `payments/allow-dns egress[0]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleRef {
    /// The policy's name.
    pub policy: String,
    /// The policy's namespace.
    pub namespace: String,
    /// The rule's place in it: `egress[0]`.
    pub rule: String,
}

impl std::fmt::Display for RuleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} {}", self.namespace, self.policy, self.rule)
    }
}

impl RuleRef {
    /// The reference to `rule` of `policy`.
    pub fn of(policy: &Policy, rule: &Rule) -> Self {
        Self {
            policy: policy.name.clone(),
            namespace: policy.namespace.clone(),
            rule: rule.place(),
        }
    }
}

/// What one side of a connection says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Side {
    /// The endpoint is an address outside the cluster: no policy of ours applies to it.
    Outside,
    /// No policy isolates the pod in this direction.
    Open,
    /// These rules allow it.
    Allowed(Vec<RuleRef>),
    /// These policies isolate the pod and none of their rules allows it.
    Denied(Vec<String>),
}

impl Side {
    /// Whether this side lets the connection through: every side but [`Side::Denied`].
    pub fn allows(&self) -> bool {
        !matches!(self, Side::Denied(_))
    }
}

/// Whether a connection is allowed, and what each side said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The source pod to itself.
    pub loopback: bool,
    /// What the source's egress policies say.
    pub egress: Side,
    /// What the destination's ingress policies say.
    pub ingress: Side,
}

impl Answer {
    /// Whether the connection is allowed: to itself, or by both sides.
    pub fn allowed(&self) -> bool {
        self.loopback || (self.egress.allows() && self.ingress.allows())
    }
}

/// May `from` reach `to` on `port`/`protocol`?
pub fn query(world: &World, from: Endpoint, to: Endpoint, port: u16, protocol: Protocol) -> Answer {
    let loopback = matches!((from, to), (Endpoint::Pod(a), Endpoint::Pod(b)) if a.id() == b.id());
    let dest_pod = match to {
        Endpoint::Pod(p) => Some(p),
        Endpoint::Address(_) => None,
    };
    let egress = match from {
        Endpoint::Address(_) => Side::Outside,
        Endpoint::Pod(src) => side(world, src, Direction::Egress, &to, port, protocol, dest_pod),
    };
    let ingress = match to {
        Endpoint::Address(_) => Side::Outside,
        Endpoint::Pod(dst) => side(
            world,
            dst,
            Direction::Ingress,
            &from,
            port,
            protocol,
            dest_pod,
        ),
    };
    Answer {
        loopback,
        egress,
        ingress,
    }
}

fn side(
    world: &World,
    pod: &Pod,
    direction: Direction,
    peer: &Endpoint,
    port: u16,
    protocol: Protocol,
    dest_pod: Option<&Pod>,
) -> Side {
    let mut isolating = Vec::new();
    let mut allowing = Vec::new();
    for policy in world.isolating(&pod.namespace, &pod.labels, direction) {
        isolating.push(policy.name.clone());
        for rule in policy.rules(direction).unwrap_or_default() {
            if rule_allows(world, policy, rule, peer, port, protocol, dest_pod) {
                allowing.push(RuleRef::of(policy, rule));
            }
        }
    }
    if isolating.is_empty() {
        Side::Open
    } else if allowing.is_empty() {
        Side::Denied(isolating)
    } else {
        Side::Allowed(allowing)
    }
}

pub(crate) fn rule_allows(
    world: &World,
    policy: &Policy,
    rule: &Rule,
    peer: &Endpoint,
    port: u16,
    protocol: Protocol,
    dest_pod: Option<&Pod>,
) -> bool {
    let peer_ok = match &rule.peers {
        None => true,
        Some(peers) => peers
            .iter()
            .any(|p| peer_matches(world, &policy.namespace, p, peer)),
    };
    peer_ok && ports_allow(rule.ports.as_deref(), port, protocol, dest_pod)
}

pub(crate) fn peer_matches(world: &World, own: &str, peer: &Peer, endpoint: &Endpoint) -> bool {
    match (peer, endpoint) {
        (Peer::Pods { namespaces, pods }, Endpoint::Pod(p)) => {
            let ns_ok = match namespaces {
                Namespaces::Own => p.namespace == own,
                Namespaces::Selected(s) => selects(s, &world.namespace_labels(&p.namespace)),
            };
            ns_ok && selects(pods, &p.labels)
        }
        (Peer::Pods { .. }, Endpoint::Address(_)) => false,
        (Peer::Block { reach, .. }, Endpoint::Pod(p)) => {
            p.ips.iter().any(|ip| reach.contains_addr(*ip))
        }
        (Peer::Block { reach, .. }, Endpoint::Address(a)) => reach.contains_addr(*a),
    }
}

pub(crate) fn ports_allow(
    ports: Option<&[PortEntry]>,
    port: u16,
    protocol: Protocol,
    dest_pod: Option<&Pod>,
) -> bool {
    let Some(ports) = ports else { return true };
    ports.iter().any(|e| {
        e.protocol == protocol
            && match &e.port {
                PortMatch::All => true,
                PortMatch::Range(a, b) => (*a..=*b).contains(&port),
                PortMatch::Named(name) => {
                    dest_pod.and_then(|d| d.named_port(name, protocol)) == Some(port)
                }
            }
    })
}
