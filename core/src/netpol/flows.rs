//! Effective flows across namespaces: which pods (or addresses) may reach which, on which ports,
//! with both ends' policies applied.
//!
//! A flow is effective when the source's egress allows it and the destination's ingress allows
//! it (an address outside the cluster has no policies of ours). As in the rest of the model, no
//! pods are needed: the pods of a namespace are every label set the selectors that matter for
//! one pair of namespaces tell apart ([`super::space`]), so "pods app=api in payments" stands
//! for every pod with those labels, now or later. Namespaces are those the [`Net`] knows, with
//! their labels, and the namespaces a tenant can still create: a new name and only the labels
//! the bundle requires of every namespace ([`Universe`]), as the admission floor reads them.
//!
//! Flows are computed for several [`Net`]s at once over one refinement of the pods
//! (for example the cluster before and after a change, or two trees of manifests), so that the
//! same pod set can be compared between them; a [`Refine`] adds the selectors and ranges of a
//! third party (a communication matrix) to that refinement, and says which ends it governs, so
//! that pairs nobody governs are skipped.
//!
//! Not modelled, as elsewhere: an ipBlock that covers the cluster's own pod network (Palisade
//! does not know it), and named ports, which stay names (a pod set has no container ports).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use super::eval::{RuleRef, World};
use super::ip::{Family, IpSet};
use super::judge::Universe;
use super::model::{
    Direction, Labels, NAME_LABEL, Namespace, Namespaces, Peer, Policy, PortEntry, PortMatch,
    Protocol, Rule, requirement_holds, selector_text, selects,
};
use super::space::{Budget, FRESH, Space, Stop};
use crate::inventory::Inventory;
use crate::matcher::{LabelSelector, Requirement};

/// Every port of a protocol, as ranges.
const ALL_PORTS: (u16, u16) = (1, 65535);

/// A set of ports: per protocol, ranges; and named ports, which stand for the destination
/// pod's container port of that name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortSet {
    /// Per protocol (TCP, UDP, SCTP), sorted disjoint ranges.
    ranges: [Vec<(u16, u16)>; 3],
    /// Named ports, by protocol.
    named: BTreeSet<(Protocol, String)>,
}

fn index(p: Protocol) -> usize {
    match p {
        Protocol::Tcp => 0,
        Protocol::Udp => 1,
        Protocol::Sctp => 2,
    }
}

fn normalise(mut v: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    v.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn intersect(a: &[(u16, u16)], b: &[(u16, u16)]) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let lo = a[i].0.max(b[j].0);
        let hi = a[i].1.min(b[j].1);
        if lo <= hi {
            out.push((lo, hi));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

fn minus(a: &[(u16, u16)], b: &[(u16, u16)]) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    for &(mut lo, hi) in a {
        let mut done = false;
        for &(x, y) in b {
            if y < lo || x > hi {
                continue;
            }
            if x > lo {
                out.push((lo, x - 1));
            }
            if y >= hi {
                done = true;
                break;
            }
            lo = y + 1;
        }
        if !done {
            out.push((lo, hi));
        }
    }
    out
}

impl PortSet {
    /// No port.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Every port of every protocol.
    pub fn all() -> Self {
        Self {
            ranges: [vec![ALL_PORTS], vec![ALL_PORTS], vec![ALL_PORTS]],
            named: BTreeSet::new(),
        }
    }

    /// What a rule's `ports` lets through (`None`: every port).
    pub fn of(entries: Option<&[PortEntry]>) -> Self {
        let Some(entries) = entries else {
            return Self::all();
        };
        let mut set = Self::empty();
        for e in entries {
            match &e.port {
                PortMatch::All => set.ranges[index(e.protocol)].push(ALL_PORTS),
                PortMatch::Range(a, b) => set.ranges[index(e.protocol)].push((*a, *b)),
                PortMatch::Named(n) => {
                    set.named.insert((e.protocol, n.clone()));
                }
            }
        }
        for r in &mut set.ranges {
            *r = normalise(std::mem::take(r));
        }
        set
    }

    /// Whether no port is in the set.
    pub fn is_empty(&self) -> bool {
        self.ranges.iter().all(Vec::is_empty) && self.named.is_empty()
    }

    /// Every port of either.
    pub fn union(&self, other: &Self) -> Self {
        let mut out = self.clone();
        for (i, r) in out.ranges.iter_mut().enumerate() {
            r.extend_from_slice(&other.ranges[i]);
            *r = normalise(std::mem::take(r));
        }
        out.named.extend(other.named.iter().cloned());
        out
    }

    fn has_protocol(&self, p: Protocol) -> bool {
        !self.ranges[index(p)].is_empty() || self.named.iter().any(|(q, _)| *q == p)
    }

    /// The ports both let through. A named port meets any port of its protocol on the other
    /// side and stays a name: its number is the pod's, which a pod set does not have, so it is
    /// kept rather than guessed away.
    pub fn intersect(&self, other: &Self) -> Self {
        let mut out = Self::empty();
        for i in 0..3 {
            out.ranges[i] = intersect(&self.ranges[i], &other.ranges[i]);
        }
        for (a, b) in [(self, other), (other, self)] {
            for (p, n) in &a.named {
                if b.has_protocol(*p) {
                    out.named.insert((*p, n.clone()));
                }
            }
        }
        out
    }

    /// These ports without `other`'s. A named port goes only with the same name, or with every
    /// port of its protocol.
    pub fn minus(&self, other: &Self) -> Self {
        let mut out = Self::empty();
        for i in 0..3 {
            out.ranges[i] = minus(&self.ranges[i], &other.ranges[i]);
        }
        for (p, n) in &self.named {
            let every = other.ranges[index(*p)] == [ALL_PORTS];
            if !every && !other.named.contains(&(*p, n.clone())) {
                out.named.insert((*p, n.clone()));
            }
        }
        out
    }

    /// Whether every port of `other` is in this set.
    pub fn contains(&self, other: &Self) -> bool {
        other.minus(self).is_empty()
    }

    /// Whether it holds `port` of `protocol`.
    pub fn has(&self, port: u16, protocol: Protocol) -> bool {
        self.ranges[index(protocol)]
            .iter()
            .any(|&(a, b)| (a..=b).contains(&port))
    }

    /// How many numbered ports it holds, all protocols counted.
    pub fn count(&self) -> u32 {
        self.ranges
            .iter()
            .flatten()
            .map(|&(a, b)| u32::from(b) - u32::from(a) + 1)
            .sum::<u32>()
            + self.named.len() as u32
    }

    /// Each range on its own, as a picture labels an edge: `TCP 5432-5433`, `UDP 53`,
    /// `every TCP port`, `every port`.
    pub fn parts(&self) -> Vec<String> {
        if *self == Self::all() {
            return vec!["every port".to_owned()];
        }
        let mut out = Vec::new();
        for p in Protocol::ALL {
            let r = &self.ranges[index(p)];
            if r.as_slice() == [ALL_PORTS] {
                out.push(format!("every {} port", p.name()));
            } else {
                out.extend(r.iter().map(|&(a, b)| {
                    if a == b {
                        format!("{} {a}", p.name())
                    } else {
                        format!("{} {a}-{b}", p.name())
                    }
                }));
            }
            out.extend(
                self.named
                    .iter()
                    .filter(|(q, _)| *q == p)
                    .map(|(_, n)| format!("{} {n:?}", p.name())),
            );
        }
        out
    }

    /// The ranges of a protocol.
    pub fn ranges(&self, protocol: Protocol) -> &[(u16, u16)] {
        &self.ranges[index(protocol)]
    }
}

impl fmt::Display for PortSet {
    /// `TCP 5432-5433, UDP 53`, `every TCP port`, `every port`, `no port`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::all() {
            return f.write_str("every port");
        }
        let mut parts = Vec::new();
        for p in Protocol::ALL {
            let r = &self.ranges[index(p)];
            if r.as_slice() == [ALL_PORTS] {
                parts.push(format!("every {} port", p.name()));
                continue;
            }
            let list: Vec<String> = r
                .iter()
                .map(|&(a, b)| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}-{b}")
                    }
                })
                .collect();
            let mut names: Vec<&str> = self
                .named
                .iter()
                .filter(|(q, _)| *q == p)
                .map(|(_, n)| n.as_str())
                .collect();
            names.sort_unstable();
            let all: Vec<String> = list
                .into_iter()
                .chain(names.into_iter().map(|n| format!("{n:?}")))
                .collect();
            if !all.is_empty() {
                parts.push(format!("{} {}", p.name(), all.join(", ")));
            }
        }
        if parts.is_empty() {
            f.write_str("no port")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

impl Serialize for PortSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// A namespace as a flow sees it: one the net knows, or one a tenant can still create.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Site {
    /// Its name; a value no label can hold for one that does not exist yet.
    pub name: String,
    /// Its labels, `kubernetes.io/metadata.name` included.
    pub labels: Arc<Labels>,
}

impl Site {
    /// Whether it is a namespace that does not exist yet.
    pub fn is_new(&self) -> bool {
        self.name == FRESH
    }

    /// `payments`, or `a new namespace (labelled team=x)`.
    pub fn text(&self) -> String {
        if !self.is_new() {
            return self.name.clone();
        }
        let labels: Vec<String> = self
            .labels
            .iter()
            .filter(|(k, v)| k.as_str() != NAME_LABEL && v.as_str() != FRESH)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if labels.is_empty() {
            "a new namespace".to_owned()
        } else {
            format!("a new namespace labelled {}", labels.join(","))
        }
    }
}

/// One end of a flow.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum End {
    /// Every pod of a namespace with these labels (a label set standing for its class: labels
    /// with the value `\u{1}other` are "any value the selectors do not name").
    Pods {
        /// The namespace.
        site: Site,
        /// One label set of the class.
        labels: Labels,
        /// The selectors that tell the class apart and that its pods do not match.
        other_than: Vec<String>,
        /// The pods of the input in the set, by name (none when the input holds no Pods).
        members: Vec<String>,
    },
    /// Addresses outside the cluster.
    Addresses(IpSet),
}

impl End {
    /// `pods app=api in payments`, `every pod in a new namespace`, `10.0.0.0/8`.
    pub fn text(&self) -> String {
        match self {
            End::Pods {
                site,
                labels,
                other_than,
                members,
            } => {
                let parts: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| {
                        if v == FRESH {
                            k.clone()
                        } else {
                            format!("{k}={v}")
                        }
                    })
                    .collect();
                let who = if parts.is_empty() {
                    format!("pods in {}", site.text())
                } else {
                    format!("pods {} in {}", parts.join(","), site.text())
                };
                let set = if other_than.is_empty() {
                    if parts.is_empty() {
                        format!("every pod in {}", site.text())
                    } else {
                        who
                    }
                } else {
                    format!("{who} other than {}", other_than.join(" or "))
                };
                match members.len() {
                    0 => set,
                    1..=5 => format!("{set} ({})", members.join(", ")),
                    n => format!("{set} ({}, ... {n} pods)", members[..4].join(", ")),
                }
            }
            End::Addresses(set) => addresses_text(set),
        }
    }

    /// The namespace, for pods.
    pub fn site(&self) -> Option<&Site> {
        match self {
            End::Pods { site, .. } => Some(site),
            End::Addresses(_) => None,
        }
    }
}

/// `10.0.0.0/8`, `0.0.0.0/0 except 10.0.0.0/8, 172.16.0.0/12`, `every address`: per family,
/// the shorter of the ranges and the whole family less its complement.
pub fn addresses_text(set: &IpSet) -> String {
    if *set == IpSet::everything() {
        return "every address".to_owned();
    }
    let list = |cidrs: &[String]| -> String {
        if cidrs.len() > 6 {
            format!(
                "{} and {} more ranges",
                cidrs[..5].join(", "),
                cidrs.len() - 5
            )
        } else {
            cidrs.join(", ")
        }
    };
    let mut parts = Vec::new();
    for (family, all) in [(Family::V4, "0.0.0.0/0"), (Family::V6, "::/0")] {
        let whole = IpSet::range(family, 0, IpSet::max_of(family));
        let part = set.intersect(&whole);
        if part.is_empty() {
            continue;
        }
        let rest = whole.minus(&part);
        let (inside, outside) = (part.cidrs(), rest.cidrs());
        parts.push(if outside.is_empty() {
            all.to_owned()
        } else if outside.len() < inside.len() {
            format!("{all} except {}", list(&outside))
        } else {
            list(&inside)
        });
    }
    if parts.is_empty() {
        "no address".to_owned()
    } else {
        parts.join("; ")
    }
}

/// What one side's policies say about a flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Opening {
    /// An address outside the cluster: no policy applies.
    Outside,
    /// No policy isolates the pods in this direction: everything is allowed.
    Open,
    /// These rules allow it (on the ports of the side).
    Rules {
        /// The rules.
        rules: Vec<Arc<str>>,
    },
    /// These policies isolate the pods and no rule of theirs allows it.
    Denied {
        /// The isolating policies.
        policies: Vec<Arc<str>>,
    },
}

impl Opening {
    /// `not isolated`, `payments/allow-x ingress[0]`, ...
    pub fn text(&self) -> String {
        match self {
            Opening::Outside => "outside the cluster".to_owned(),
            Opening::Open => "no NetworkPolicy isolates them".to_owned(),
            Opening::Rules { rules } => rules.join(", "),
            Opening::Denied { policies } => {
                format!("isolated by {} and no rule allows it", policies.join(", "))
            }
        }
    }
}

/// What one side allows: the ports, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideView {
    /// The ports this side lets through.
    pub ports: PortSet,
    /// Why.
    pub opening: Opening,
    /// With [`Opening::Rules`], each rule's own ports, in the same order.
    pub rule_ports: Vec<PortSet>,
}

impl SideView {
    /// The rules that open any of `ports`.
    pub fn rules_opening(&self, ports: &PortSet) -> Vec<String> {
        match &self.opening {
            Opening::Rules { rules } => rules
                .iter()
                .zip(&self.rule_ports)
                .filter(|(_, p)| !p.intersect(ports).is_empty())
                .map(|(r, _)| r.to_string())
                .collect(),
            _ => Vec::new(),
        }
    }

    fn empty() -> Self {
        SideView {
            ports: PortSet::empty(),
            opening: Opening::Denied {
                policies: Vec::new(),
            },
            rule_ports: Vec::new(),
        }
    }
}

/// A flow between two ends, in each net compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// The source.
    pub from: End,
    /// The destination.
    pub to: End,
    /// Per net, the source's egress.
    pub egress: Vec<SideView>,
    /// Per net, the destination's ingress.
    pub ingress: Vec<SideView>,
    /// Per net, the labels of the source's and the destination's namespaces (`None` for
    /// addresses): a change may relabel a namespace.
    pub labels_at: Vec<[Option<Arc<Labels>>; 2]>,
}

impl Flow {
    /// The two ends as they are in net `k`: their namespaces with that net's labels.
    pub fn ends_at(&self, k: usize) -> (End, End) {
        let at = |end: &End, labels: Option<&Arc<Labels>>| -> End {
            let mut end = end.clone();
            if let (End::Pods { site, .. }, Some(l)) = (&mut end, labels) {
                site.labels = Arc::clone(l);
            }
            end
        };
        match self.labels_at.get(k) {
            Some([from, to]) => (at(&self.from, from.as_ref()), at(&self.to, to.as_ref())),
            None => (self.from.clone(), self.to.clone()),
        }
    }

    /// The ports the flow may use in net `k`: both sides' ports.
    pub fn ports(&self, k: usize) -> PortSet {
        self.egress[k].ports.intersect(&self.ingress[k].ports)
    }

    /// The rules (or "not isolated") that open it in net `k`, both sides.
    pub fn openers(&self, k: usize) -> Vec<String> {
        let mut out = Vec::new();
        for (side, v) in [("egress", &self.egress[k]), ("ingress", &self.ingress[k])] {
            match &v.opening {
                Opening::Rules { rules } => out.extend(rules.iter().map(|r| r.to_string())),
                Opening::Open => {
                    let end = if side == "egress" {
                        &self.from
                    } else {
                        &self.to
                    };
                    if let Some(site) = end.site() {
                        out.push(format!(
                            "no NetworkPolicy of {} isolates {side}",
                            site.text()
                        ));
                    }
                }
                Opening::Outside | Opening::Denied { .. } => {}
            }
        }
        out
    }
}

/// The end of a flow a namespace is, for [`Refine`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The source: its egress.
    Source,
    /// The destination: its ingress.
    Destination,
}

/// What a third party (a matrix, a second tree) adds to the refinement, and which flows it
/// cares about.
pub trait Refine {
    /// Pod selectors that must split the pods of `site` when they are the `role` end of a flow
    /// whose other end is in `other` (`None`: addresses).
    fn pod_items(&self, role: Role, site: &Site, other: Option<&Site>) -> Vec<Vec<Requirement>>;
    /// Namespace selectors that must split the namespaces a tenant can create.
    fn namespace_items(&self) -> Vec<Vec<Requirement>>;
    /// Address ranges that must split addresses.
    fn address_sets(&self) -> Vec<IpSet>;
    /// Whether `site`'s policies in the `role` end's direction are judged on their own: what
    /// they allow is kept even when the other end refuses it. Pairs nobody governs are skipped,
    /// unless [`Refine::every_flow`].
    fn governs(&self, role: Role, site: &Site) -> bool;
    /// Whether every effective flow is wanted, governed or not (pictures, diffs).
    fn every_flow(&self) -> bool {
        false
    }
    /// Whether pods with `labels` in `site`, as the `role` end, are asked about at all.
    fn wants(&self, _role: Role, _site: &Site, _labels: &Labels) -> bool {
        true
    }
}

/// Refines nothing and governs nothing: every effective flow.
#[derive(Debug, Clone, Copy, Default)]
pub struct Everything;

impl Refine for Everything {
    fn pod_items(&self, _: Role, _: &Site, _: Option<&Site>) -> Vec<Vec<Requirement>> {
        Vec::new()
    }
    fn namespace_items(&self) -> Vec<Vec<Requirement>> {
        Vec::new()
    }
    fn address_sets(&self) -> Vec<IpSet> {
        Vec::new()
    }
    fn governs(&self, _: Role, _: &Site) -> bool {
        false
    }
    fn every_flow(&self) -> bool {
        true
    }
}

/// The cluster (or a tree of manifests) as flows see it: namespaces with their labels, and the
/// policies of each.
#[derive(Debug, Clone, Default)]
pub struct Net<'a> {
    namespaces: BTreeMap<String, Arc<Labels>>,
    /// Per namespace, what `policies` holds, worked out when first asked: names and each rule's
    /// ports.
    held: std::cell::RefCell<BTreeMap<String, std::rc::Rc<Vec<Held>>>>,
    /// The input's Pods, per namespace: name and labels.
    pods: BTreeMap<String, Vec<(String, Labels)>>,
    policies: BTreeMap<String, Vec<&'a Policy>>,
    /// Namespaces this net says do not exist ([`Net::remove_namespace`]).
    absent: BTreeSet<String>,
    broken: BTreeMap<String, String>,
    required: Universe,
}

impl<'a> Net<'a> {
    /// The namespaces and policies of `world`.
    pub fn of_world(world: &'a World, universe: &Universe) -> Self {
        let mut net = Net {
            required: universe.clone(),
            ..Net::default()
        };
        for (name, ns) in &world.namespaces {
            net.namespaces
                .insert(name.clone(), Arc::new(ns.labels.clone()));
        }
        for p in &world.policies {
            net.add_policy(p);
        }
        for pod in &world.pods {
            net.ensure(&pod.namespace);
            net.pods
                .entry(pod.namespace.clone())
                .or_default()
                .push((pod.name.clone(), pod.labels.clone()));
        }
        net
    }

    /// The namespaces and policies the inventory holds. A policy it could not read makes its
    /// namespace unjudgeable: flows that touch it fail with that error.
    pub fn of_inventory(inventory: &'a Inventory, universe: &Universe) -> Self {
        let mut net = Net {
            required: universe.clone(),
            ..Net::default()
        };
        for (name, labels) in inventory.namespace_labels() {
            if let Some(labels) = labels {
                net.namespaces.insert(name.to_owned(), Arc::clone(labels));
            }
        }
        for (namespace, policies) in inventory.all_network_policies() {
            net.add_inventory_policies(namespace, policies);
        }
        net
    }

    fn add_inventory_policies(
        &mut self,
        namespace: &str,
        policies: &'a crate::inventory::NetworkPolicies,
    ) {
        self.ensure(namespace);
        let list = self.policies.entry(namespace.to_owned()).or_default();
        list.extend(policies.values().filter_map(|p| p.as_ref().as_ref().ok()));
        for (name, p) in policies.iter() {
            match p.as_ref() {
                Ok(_) => {}
                Err(e) => {
                    self.broken.insert(
                        namespace.to_owned(),
                        format!(
                            "NetworkPolicy {namespace}/{name} in the inventory cannot be read ({e}): fix or delete it"
                        ),
                    );
                }
            }
        }
    }

    fn ensure(&mut self, namespace: &str) {
        self.namespaces
            .entry(namespace.to_owned())
            .or_insert_with(|| Arc::new(Namespace::new(namespace, Labels::new()).labels));
    }

    /// Adds a policy (to its namespace, which is added when unknown).
    pub fn add_policy(&mut self, p: &'a Policy) {
        self.ensure(&p.namespace);
        self.policies
            .entry(p.namespace.clone())
            .or_default()
            .push(p);
        self.held.get_mut().remove(&p.namespace);
    }

    /// Replaces the policy `namespace/name` with `new` (`None`: removes it).
    pub fn replace_policy(&mut self, namespace: &str, name: &str, new: Option<&'a Policy>) {
        self.ensure(namespace);
        let list = self.policies.entry(namespace.to_owned()).or_default();
        list.retain(|p| p.name != name);
        if let Some(p) = new {
            list.push(p);
        }
        self.held.get_mut().remove(namespace);
        // A replaced policy that could not be read is no longer in the way.
        if self
            .broken
            .get(namespace)
            .is_some_and(|e| e.contains(&format!("{namespace}/{name} ")))
        {
            self.broken.remove(namespace);
        }
    }

    /// Removes a namespace and its policies: it does not exist in this net (a Namespace before
    /// its CREATE), so none of its pods can send or receive.
    pub fn remove_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
        self.policies.remove(name);
        self.held.get_mut().remove(name);
        self.absent.insert(name.to_owned());
    }

    /// Whether `site` is a namespace this net says does not exist.
    fn is_absent(&self, site: &Site) -> bool {
        !site.is_new() && self.absent.contains(&site.name)
    }

    /// Sets a namespace's labels (its name label is kept).
    pub fn set_namespace(&mut self, name: &str, labels: Labels) {
        self.absent.remove(name);
        self.namespaces.insert(
            name.to_owned(),
            Arc::new(Namespace::new(name, labels).labels),
        );
    }

    /// The known namespaces, by name.
    pub fn namespaces(&self) -> impl Iterator<Item = Site> + '_ {
        self.namespaces.iter().map(|(n, l)| Site {
            name: n.clone(),
            labels: l.clone(),
        })
    }

    /// The site of a namespace: its labels, or only its name label when unknown.
    pub fn site(&self, name: &str) -> Site {
        Site {
            name: name.to_owned(),
            labels: self
                .namespaces
                .get(name)
                .cloned()
                .unwrap_or_else(|| Arc::new(Namespace::new(name, Labels::new()).labels)),
        }
    }

    /// Why the namespace cannot be judged, when one of its policies could not be read.
    pub fn broken(&self, namespace: &str) -> Option<&str> {
        self.broken.get(namespace).map(String::as_str)
    }

    fn policies_of(&self, site: &Site) -> &[&'a Policy] {
        if site.is_new() {
            return &[];
        }
        self.policies.get(&site.name).map_or(&[], Vec::as_slice)
    }

    fn held_of(&self, site: &Site) -> std::rc::Rc<Vec<Held>> {
        if let Some(h) = self.held.borrow().get(&site.name) {
            return h.clone();
        }
        let h = std::rc::Rc::new(self.policies_of(site).iter().map(|p| Held::of(p)).collect());
        self.held
            .borrow_mut()
            .insert(site.name.clone(), std::rc::Rc::clone(&h));
        h
    }

    /// What the net's policies of `site` allow pods with `labels` in `direction`, toward `peer`.
    fn side(
        &self,
        site: &Site,
        labels: &Labels,
        direction: Direction,
        peer: Peer2<'_>,
    ) -> SideView {
        side(
            self.policies_of(site),
            &self.held_of(site),
            labels,
            direction,
            peer,
        )
    }
}

/// A policy's names and its rules' ports, worked out once per net.
#[derive(Debug)]
struct Held {
    id: Arc<str>,
    /// Per direction (ingress, egress), each rule's `namespace/name ingress[i]` and ports.
    rules: [Vec<(Arc<str>, PortSet)>; 2],
}

impl Held {
    fn of(p: &Policy) -> Self {
        let rules = |d: Direction| -> Vec<(Arc<str>, PortSet)> {
            p.rules(d)
                .into_iter()
                .flatten()
                .map(|r| {
                    (
                        Arc::from(RuleRef::of(p, r).to_string()),
                        PortSet::of(r.ports.as_deref()),
                    )
                })
                .collect()
        };
        Held {
            id: Arc::from(p.id()),
            rules: [rules(Direction::Ingress), rules(Direction::Egress)],
        }
    }
}

/// Which flows to compute: those with an end in `namespace` (only pods with `labels`, when
/// given), in the given directions of that namespace.
#[derive(Debug, Clone)]
pub struct Focus {
    /// The namespace.
    pub namespace: String,
    /// Only the pods with exactly these labels (a Pod or a workload's template).
    pub labels: Option<Labels>,
    /// Ingress: flows into the namespace; Egress: flows out of it.
    pub directions: Vec<Direction>,
}

/// Whether a pod peer's namespace part may be `other`, for a policy of namespace `own`.
fn namespace_matches(namespaces: &Namespaces, own: &str, other: &Site) -> bool {
    match namespaces {
        Namespaces::Own => !other.is_new() && other.name == own,
        Namespaces::Selected(s) => selects(s, &other.labels),
    }
}

/// What `policies` allow `labels` (pods of `site`) in `direction` toward the pod `peer`
/// (pods with `peer_labels` in `peer_site`), or toward addresses `piece`.
fn side(
    policies: &[&Policy],
    held: &[Held],
    labels: &Labels,
    direction: Direction,
    peer: Peer2<'_>,
) -> SideView {
    let d = match direction {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    };
    let mut isolating = Vec::new();
    let mut ports = PortSet::empty();
    let mut rules = Vec::new();
    let mut rule_ports = Vec::new();
    for (p, h) in policies.iter().zip(held) {
        let Some(list) = p.rules(direction) else {
            continue;
        };
        if !selects(&p.pod_selector, labels) {
            continue;
        }
        isolating.push(h.id.clone());
        for (r, (name, rule_ports_of)) in list.iter().zip(&h.rules[d]) {
            if rule_reaches(p, r, peer) {
                ports = ports.union(rule_ports_of);
                rules.push(name.clone());
                rule_ports.push(rule_ports_of.clone());
            }
        }
    }
    let opening = if isolating.is_empty() {
        return SideView {
            ports: PortSet::all(),
            opening: Opening::Open,
            rule_ports: Vec::new(),
        };
    } else if rules.is_empty() {
        Opening::Denied {
            policies: isolating,
        }
    } else {
        Opening::Rules { rules }
    };
    SideView {
        ports,
        opening,
        rule_ports,
    }
}

/// The other end of a side's question.
#[derive(Clone, Copy)]
enum Peer2<'p> {
    Pods(&'p Site, &'p Labels),
    Addresses(&'p IpSet),
}

fn rule_reaches(p: &Policy, r: &Rule, peer: Peer2<'_>) -> bool {
    let Some(peers) = &r.peers else {
        return true;
    };
    match peer {
        Peer2::Pods(site, labels) => peers.iter().any(|x| match x {
            Peer::Pods { namespaces, pods } => {
                namespace_matches(namespaces, &p.namespace, site) && selects(pods, labels)
            }
            Peer::Block { .. } => false,
        }),
        Peer2::Addresses(piece) => !piece.is_empty() && r.reach.contains(piece),
    }
}

/// The pod peers of `policies`' rules in `direction` that may be pods of `other`: their pod
/// selectors, which split `other`'s pods.
fn peer_items(policies: &[&Policy], direction: Direction, other: &Site) -> Vec<Vec<Requirement>> {
    let mut out = Vec::new();
    for p in policies {
        for r in p.rules(direction).into_iter().flatten() {
            for peer in r.peers.iter().flatten() {
                if let Peer::Pods { namespaces, pods } = peer
                    && namespace_matches(namespaces, &p.namespace, other)
                {
                    out.push(pods.requirements.clone());
                }
            }
        }
    }
    out
}

/// What one address piece gets, per net, and which of the refinement's ranges hold it.
type Piece = (Vec<SideView>, Vec<bool>);

/// A class of pods: one label set of it, the selectors (of those that split the pods) it does
/// not match, and the pods of `pods` in it.
type Class = (Labels, Vec<String>, Vec<String>);

/// The label sets that tell `items` apart (one per class), or only `fixed` when given.
fn classes(
    items: &[Vec<Requirement>],
    fixed: Option<&Labels>,
    pods: &[(String, Labels)],
    budget: &mut Budget,
) -> Result<Vec<Class>, Stop> {
    let mut items = items.to_vec();
    items.retain(|i| !i.is_empty());
    items.sort();
    items.dedup();
    // The selectors a class fails, but for those its own labels already rule out (a pod
    // app=web is plainly not app=checkout).
    let unmatched = |labels: &Labels| -> Vec<String> {
        let mut out: Vec<String> = items
            .iter()
            .filter(|i| {
                let failing: Vec<&Requirement> = i
                    .iter()
                    .filter(|r| !requirement_holds(r, labels.get(&r.key).map(String::as_str)))
                    .collect();
                !failing.is_empty()
                    && !failing
                        .iter()
                        .all(|r| labels.get(&r.key).is_some_and(|v| v != FRESH))
            })
            .map(|i| {
                selector_text(
                    &LabelSelector {
                        requirements: i.clone(),
                    },
                    "",
                )
            })
            .collect();
        out.sort();
        out.dedup();
        out
    };
    let bits = |labels: &Labels| -> Vec<bool> {
        items
            .iter()
            .map(|i| {
                i.iter()
                    .all(|r| requirement_holds(r, labels.get(&r.key).map(String::as_str)))
            })
            .collect()
    };
    let members = |labels: &Labels| -> Vec<String> {
        let want = bits(labels);
        pods.iter()
            .filter(|(_, l)| bits(l) == want)
            .map(|(n, _)| n.clone())
            .collect()
    };
    if let Some(l) = fixed {
        return Ok(vec![(l.clone(), Vec::new(), Vec::new())]);
    }
    let space = Space::new(&items, &[], &BTreeMap::new(), budget)?;
    Ok(space
        .combinations(budget)?
        .into_iter()
        .map(|(_, l)| {
            let not = unmatched(&l);
            let m = members(&l);
            (l, not, m)
        })
        .collect())
}

/// Computes flows for one focus over several nets at once.
///
/// A pair of pod sets is kept when the flow is effective in some net (both ends allow it), or
/// when an end the [`Refine`] governs allows it on its own: a governed end is judged by its own
/// policies, whatever the other end says.
pub struct Flows<'n, 'a> {
    nets: &'n [&'n Net<'a>],
    refine: &'n dyn Refine,
    keep_empty: bool,
    uniform: bool,
}

impl<'n, 'a> Flows<'n, 'a> {
    /// Flows of `nets`, refined and pruned by `refine`.
    pub fn new(nets: &'n [&'n Net<'a>], refine: &'n dyn Refine) -> Self {
        Self {
            nets,
            refine,
            keep_empty: false,
            uniform: false,
        }
    }

    /// Splits the pods of a namespace the same way whichever namespace is at the other end:
    /// by every podSelector of its policies and every pod peer of its own namespace, so that a
    /// picture or a diff shows each pod in one set. Costs more sets per pair than judging needs.
    pub fn uniform(mut self) -> Self {
        self.uniform = true;
        self
    }

    /// The selectors that split `site`'s pods whatever the pair, when [`Flows::uniform`].
    fn uniform_items(&self, net: &Net, site: &Site) -> Vec<Vec<Requirement>> {
        if !self.uniform {
            return Vec::new();
        }
        let policies = net.policies_of(site);
        let mut out: Vec<Vec<Requirement>> = policies
            .iter()
            .map(|p| p.pod_selector.requirements.clone())
            .collect();
        for d in Direction::BOTH {
            out.extend(peer_items(policies, d, site));
        }
        out
    }

    /// Keeps pairs of pod sets (and address ranges) that nothing allows, too: to tell what is
    /// blocked.
    pub fn keeping_empty(mut self) -> Self {
        self.keep_empty = true;
        self
    }

    /// Every flow with an end in one of `namespaces` (both directions), each once, and for each
    /// namespace that could not be walked (an unreadable policy, past the step budget or
    /// `deadline`) why: for diffs and pictures, which walk many namespaces.
    pub fn across<'s>(
        &self,
        namespaces: impl IntoIterator<Item = &'s str>,
        deadline: Option<std::time::Instant>,
    ) -> (Vec<Flow>, Vec<String>) {
        let mut flows = Vec::new();
        let mut errors = Vec::new();
        let mut seen: BTreeSet<(End, End)> = BTreeSet::new();
        for name in namespaces {
            let focus = Focus {
                namespace: name.to_owned(),
                labels: None,
                directions: Direction::BOTH.to_vec(),
            };
            let found = match self.of(&focus, &mut Budget::new(deadline)) {
                Ok(Ok(found)) => found,
                Ok(Err(e)) => {
                    errors.push(format!("namespace {name}: {e}"));
                    continue;
                }
                Err(Stop::TooComplex) => {
                    errors.push(format!(
                        "namespace {name}: its NetworkPolicies are too intricate to walk within {} steps: select pods and namespaces by fewer distinct labels",
                        super::space::BUDGET
                    ));
                    continue;
                }
                Err(Stop::OutOfTime) => {
                    errors.push(format!("namespace {name}: the deadline passed"));
                    continue;
                }
            };
            flows.extend(
                found
                    .into_iter()
                    .filter(|f| seen.insert((f.from.clone(), f.to.clone()))),
            );
        }
        (flows, errors)
    }

    /// Every pair of pod sets from namespace `src` to namespace `dst`, whatever allowed
    /// ([`Flows::keeping_empty`] keeps those nothing allows).
    pub fn between(&self, src: &str, dst: &str, budget: &mut Budget) -> Result<Vec<Flow>, Stop> {
        let n = self.nets.len();
        let s: Vec<Site> = (0..n).map(|k| self.site(k, src)).collect();
        let d: Vec<Site> = (0..n).map(|k| self.site(k, dst)).collect();
        self.pair(&s, &d, None, None, budget)
    }

    /// The flows between pods of `namespace` and addresses outside the cluster, in `direction`
    /// of the namespace.
    pub fn outside(
        &self,
        namespace: &str,
        direction: Direction,
        budget: &mut Budget,
    ) -> Result<Vec<Flow>, Stop> {
        let here: Vec<Site> = (0..self.nets.len())
            .map(|k| self.site(k, namespace))
            .collect();
        self.addresses(&here, None, direction, budget)
    }

    /// The Pods of a namespace in any of the nets (by name, once).
    fn pods_of(&self, site: &Site) -> Vec<(String, Labels)> {
        let mut out: Vec<(String, Labels)> = Vec::new();
        if site.is_new() {
            return out;
        }
        for net in self.nets {
            for p in net.pods.get(&site.name).into_iter().flatten() {
                if !out.iter().any(|(n, _)| *n == p.0) {
                    out.push(p.clone());
                }
            }
        }
        out
    }

    /// The namespace `name` in net `k`.
    fn site(&self, k: usize, name: &str) -> Site {
        self.nets[k].site(name)
    }

    /// Every effective flow (in some net) with an end in the focus, or an error naming a
    /// namespace whose policies cannot be read.
    pub fn of(
        &self,
        focus: &Focus,
        budget: &mut Budget,
    ) -> Result<Result<Vec<Flow>, String>, Stop> {
        let mut out = Vec::new();
        let n = self.nets.len();
        // The namespaces a flow may cross to: every known one, and the new ones a tenant can
        // create, split by the selectors that tell them apart.
        let mut names: BTreeSet<String> = BTreeSet::new();
        for net in self.nets {
            names.extend(net.namespaces.keys().cloned());
        }
        let fresh = self.fresh_sites(focus, budget)?;
        for net in self.nets {
            if let Some(e) = net.broken(&focus.namespace) {
                return Ok(Err(e.to_owned()));
            }
        }
        let here: Vec<Site> = (0..n).map(|k| self.site(k, &focus.namespace)).collect();
        for direction in &focus.directions {
            let (role, other_role) = match direction {
                Direction::Ingress => (Role::Destination, Role::Source),
                Direction::Egress => (Role::Source, Role::Destination),
            };
            let governs_here = here.iter().any(|s| self.refine.governs(role, s));
            // Pods of other namespaces.
            let mut others: Vec<Vec<Site>> = names
                .iter()
                .map(|name| (0..n).map(|k| self.site(k, name)).collect())
                .collect();
            others.extend(fresh.iter().map(|s| vec![s.clone(); n]));
            for there in others {
                if there[0].name == focus.namespace
                    && focus.labels.is_none()
                    && focus.directions.len() == 2
                    && *direction == Direction::Egress
                {
                    continue; // within the namespace: done with ingress
                }
                if !self.refine.every_flow()
                    && !governs_here
                    && !there.iter().any(|s| self.refine.governs(other_role, s))
                {
                    continue;
                }
                let governs_there = there.iter().any(|s| self.refine.governs(other_role, s));
                if !self.may_meet(&here, &there, *direction, governs_here, governs_there) {
                    continue;
                }
                if let Some(e) = self
                    .nets
                    .iter()
                    .find_map(|net| (!there[0].is_new()).then(|| net.broken(&there[0].name))?)
                {
                    return Ok(Err(e.to_owned()));
                }
                let (src, dst, src_fixed, dst_fixed) = match direction {
                    Direction::Ingress => (&there, &here, None, focus.labels.as_ref()),
                    Direction::Egress => (&here, &there, focus.labels.as_ref(), None),
                };
                out.extend(self.pair(src, dst, src_fixed, dst_fixed, budget)?);
            }
            if governs_here || self.refine.every_flow() {
                out.extend(self.addresses(&here, focus.labels.as_ref(), *direction, budget)?);
            }
        }
        Ok(Ok(out))
    }

    /// Whether pods of `here` and of `there` may meet in `direction` of `here` in some net: a
    /// cheap test before the walk.
    fn may_meet(
        &self,
        here: &[Site],
        there: &[Site],
        direction: Direction,
        governs_here: bool,
        governs_there: bool,
    ) -> bool {
        let back = match direction {
            Direction::Ingress => Direction::Egress,
            Direction::Egress => Direction::Ingress,
        };
        (0..self.nets.len()).any(|k| {
            let reach = |site: &Site, dir: Direction, other: &Site| {
                let policies = self.nets[k].policies_of(site);
                // Pods no policy isolates in `dir` reach everything; a policy selecting every
                // pod with a rule is what keeps the test cheap.
                let everyone_isolated = policies
                    .iter()
                    .any(|p| p.isolates(dir) && p.pod_selector.requirements.is_empty());
                !everyone_isolated
                    || policies.iter().any(|p| {
                        p.rules(dir).into_iter().flatten().any(|r| match &r.peers {
                            None => true,
                            Some(peers) => peers.iter().any(|x| match x {
                                Peer::Pods { namespaces, .. } => {
                                    namespace_matches(namespaces, &p.namespace, other)
                                }
                                Peer::Block { .. } => false,
                            }),
                        })
                    })
            };
            // A governed end is judged on its own policies: what it allows matters even when
            // the other end refuses it.
            let forth = reach(&here[k], direction, &there[k]);
            if forth && governs_here {
                return true;
            }
            if !forth && !governs_there {
                return false;
            }
            reach(&there[k], back, &here[k])
        })
    }

    /// The namespaces a tenant can create, split by the namespace selectors that matter.
    fn fresh_sites(&self, focus: &Focus, budget: &mut Budget) -> Result<Vec<Site>, Stop> {
        let mut items: Vec<Vec<Requirement>> = self.refine.namespace_items();
        for net in self.nets {
            for p in net.policies.get(&focus.namespace).into_iter().flatten() {
                for d in Direction::BOTH {
                    for r in p.rules(d).into_iter().flatten() {
                        for peer in r.peers.iter().flatten() {
                            if let Peer::Pods {
                                namespaces: Namespaces::Selected(s),
                                ..
                            } = peer
                            {
                                items.push(s.requirements.clone());
                            }
                        }
                    }
                }
            }
        }
        let required = &self
            .nets
            .first()
            .map(|n| n.required.clone())
            .unwrap_or_default();
        let domain = required.new_namespaces(&items);
        items.sort();
        items.dedup();
        let space = Space::new(&items, &[], &domain, budget)?;
        Ok(space
            .combinations(budget)?
            .into_iter()
            .map(|(_, labels)| Site {
                name: FRESH.to_owned(),
                labels: Arc::new(labels),
            })
            .collect())
    }

    /// Flows from pods of `src` to pods of `dst` (one site per net).
    fn pair(
        &self,
        src: &[Site],
        dst: &[Site],
        src_fixed: Option<&Labels>,
        dst_fixed: Option<&Labels>,
        budget: &mut Budget,
    ) -> Result<Vec<Flow>, Stop> {
        let n = self.nets.len();
        let mut src_items = Vec::new();
        let mut dst_items = Vec::new();
        for k in 0..n {
            let sp = self.nets[k].policies_of(&src[k]);
            let dp = self.nets[k].policies_of(&dst[k]);
            src_items.extend(
                sp.iter()
                    .filter(|p| p.isolates(Direction::Egress))
                    .map(|p| p.pod_selector.requirements.clone()),
            );
            src_items.extend(peer_items(dp, Direction::Ingress, &src[k]));
            src_items.extend(self.refine.pod_items(Role::Source, &src[k], Some(&dst[k])));
            src_items.extend(self.uniform_items(self.nets[k], &src[k]));
            dst_items.extend(
                dp.iter()
                    .filter(|p| p.isolates(Direction::Ingress))
                    .map(|p| p.pod_selector.requirements.clone()),
            );
            dst_items.extend(peer_items(sp, Direction::Egress, &dst[k]));
            dst_items.extend(
                self.refine
                    .pod_items(Role::Destination, &dst[k], Some(&src[k])),
            );
            dst_items.extend(self.uniform_items(self.nets[k], &dst[k]));
        }
        let from = classes(&src_items, src_fixed, &self.pods_of(&src[0]), budget)?;
        let to = classes(&dst_items, dst_fixed, &self.pods_of(&dst[0]), budget)?;
        // Only the sets the refinement asks about.
        let from: Vec<Class> = from
            .into_iter()
            .filter(|c| self.refine.wants(Role::Source, &src[0], &c.0))
            .collect();
        let to: Vec<Class> = to
            .into_iter()
            .filter(|c| self.refine.wants(Role::Destination, &dst[0], &c.0))
            .collect();
        budget.spend(from.len() * to.len() * n)?;
        let mut out = Vec::new();
        for (a, a_not, a_pods) in &from {
            for (b, b_not, b_pods) in &to {
                let mut egress = Vec::with_capacity(n);
                let mut ingress = Vec::with_capacity(n);
                let mut any = false;
                for k in 0..n {
                    // A namespace a net does not hold has no pods there: nothing flows.
                    let absent = self.nets[k].is_absent(&src[k]) || self.nets[k].is_absent(&dst[k]);
                    let (e, i) = if absent {
                        (SideView::empty(), SideView::empty())
                    } else {
                        (
                            self.nets[k].side(
                                &src[k],
                                a,
                                Direction::Egress,
                                Peer2::Pods(&dst[k], b),
                            ),
                            self.nets[k].side(
                                &dst[k],
                                b,
                                Direction::Ingress,
                                Peer2::Pods(&src[k], a),
                            ),
                        )
                    };
                    any |= !e.ports.intersect(&i.ports).is_empty()
                        || (!e.ports.is_empty() && self.refine.governs(Role::Source, &src[k]))
                        || (!i.ports.is_empty() && self.refine.governs(Role::Destination, &dst[k]));
                    egress.push(e);
                    ingress.push(i);
                }
                if any || self.keep_empty {
                    out.push(Flow {
                        from: End::Pods {
                            site: src[0].clone(),
                            labels: a.clone(),
                            other_than: a_not.clone(),
                            members: a_pods.clone(),
                        },
                        to: End::Pods {
                            site: dst[0].clone(),
                            labels: b.clone(),
                            other_than: b_not.clone(),
                            members: b_pods.clone(),
                        },
                        egress,
                        ingress,
                        labels_at: (0..n)
                            .map(|k| {
                                [
                                    Some(Arc::clone(&src[k].labels)),
                                    Some(Arc::clone(&dst[k].labels)),
                                ]
                            })
                            .collect(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Flows between pods of `here` and addresses outside the cluster, in `direction` of here.
    fn addresses(
        &self,
        here: &[Site],
        fixed: Option<&Labels>,
        direction: Direction,
        budget: &mut Budget,
    ) -> Result<Vec<Flow>, Stop> {
        let n = self.nets.len();
        let role = match direction {
            Direction::Ingress => Role::Destination,
            Direction::Egress => Role::Source,
        };
        let mut items = Vec::new();
        let mut cuts: Vec<(Family, u128)> = vec![(Family::V4, 0), (Family::V6, 0)];
        for (net, site) in self.nets.iter().zip(here) {
            let policies = net.policies_of(site);
            items.extend(
                policies
                    .iter()
                    .filter(|p| p.isolates(direction))
                    .map(|p| p.pod_selector.requirements.clone()),
            );
            items.extend(self.refine.pod_items(role, site, None));
            items.extend(self.uniform_items(net, site));
            for p in policies {
                for r in p.rules(direction).into_iter().flatten() {
                    r.reach.cuts(&mut cuts);
                }
            }
        }
        let sets = self.refine.address_sets();
        for set in &sets {
            set.cuts(&mut cuts);
        }
        cuts.sort_unstable();
        cuts.dedup();
        budget.spend(cuts.len())?;
        let pieces: Vec<IpSet> = cuts
            .iter()
            .enumerate()
            .map(|(i, &(family, first))| {
                let last = match cuts.get(i + 1) {
                    Some(&(f, next)) if f == family => next - 1,
                    _ => IpSet::max_of(family),
                };
                IpSet::range(family, first, last)
            })
            .collect();
        let mut out = Vec::new();
        let keep_empty = self.keep_empty;
        for (labels, not, members) in classes(&items, fixed, &self.pods_of(&here[0]), budget)? {
            budget.spend(pieces.len() * n)?;
            // Consecutive pieces treated alike are one flow.
            // Pieces in different ranges of the refinement stay apart.
            let mut current: Option<(IpSet, Piece)> = None;
            let emit = |set: IpSet, views: Vec<SideView>, out: &mut Vec<Flow>| {
                if !keep_empty && views.iter().all(|v| v.ports.is_empty()) {
                    return;
                }
                let outside = vec![
                    SideView {
                        ports: PortSet::all(),
                        opening: Opening::Outside,
                        rule_ports: Vec::new(),
                    };
                    n
                ];
                let pods = End::Pods {
                    site: here[0].clone(),
                    labels: labels.clone(),
                    other_than: not.clone(),
                    members: members.clone(),
                };
                let labels_at: Vec<[Option<Arc<Labels>>; 2]> = here
                    .iter()
                    .map(|site| match direction {
                        Direction::Ingress => [None, Some(Arc::clone(&site.labels))],
                        Direction::Egress => [Some(Arc::clone(&site.labels)), None],
                    })
                    .collect();
                out.push(match direction {
                    Direction::Ingress => Flow {
                        from: End::Addresses(set),
                        to: pods,
                        egress: outside,
                        ingress: views,
                        labels_at,
                    },
                    Direction::Egress => Flow {
                        from: pods,
                        to: End::Addresses(set),
                        egress: views,
                        ingress: outside,
                        labels_at,
                    },
                });
            };
            for piece in &pieces {
                let views: Vec<SideView> = (0..n)
                    .map(|k| {
                        if self.nets[k].is_absent(&here[k]) {
                            return SideView::empty();
                        }
                        self.nets[k].side(&here[k], &labels, direction, Peer2::Addresses(piece))
                    })
                    .collect();
                let inside: Vec<bool> = sets.iter().map(|s| s.contains(piece)).collect();
                let key = (views, inside);
                current = match current.take() {
                    Some((set, v)) if v == key => Some((set.union(piece), v)),
                    Some((set, v)) => {
                        emit(set, v.0, &mut out);
                        Some((piece.clone(), key))
                    }
                    None => Some((piece.clone(), key)),
                };
            }
            if let Some((set, v)) = current {
                emit(set, v.0, &mut out);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(ns: &str, spec: serde_json::Value) -> Policy {
        Policy::parse(
            &json!({"metadata": {"name": "p", "namespace": ns}, "spec": spec}),
            ns,
        )
        .unwrap()
    }

    #[test]
    fn port_sets_meet_and_subtract() {
        let tcp = |a, b| PortEntry {
            protocol: Protocol::Tcp,
            port: PortMatch::Range(a, b),
        };
        let a = PortSet::of(Some(&[tcp(5432, 5433), tcp(80, 80)]));
        let b = PortSet::of(Some(&[tcp(5433, 6000)]));
        assert_eq!(a.intersect(&b).to_string(), "TCP 5433");
        assert_eq!(a.minus(&b).to_string(), "TCP 80, 5432");
        assert_eq!(PortSet::all().minus(&a).ranges(Protocol::Tcp).len(), 3);
        assert!(PortSet::all().contains(&a));
        assert!(!a.contains(&b));
        let named = PortSet::of(Some(&[PortEntry {
            protocol: Protocol::Tcp,
            port: PortMatch::Named("http".into()),
        }]));
        // A name meets any port of its protocol, and only every port (or the name) covers it.
        assert_eq!(named.intersect(&a).to_string(), "TCP \"http\"");
        assert!(!named.minus(&a).is_empty());
        assert!(named.minus(&PortSet::all()).is_empty());
        assert_eq!(PortSet::all().to_string(), "every port");
    }

    #[test]
    fn a_flow_needs_both_ends() {
        // web may send anywhere; db takes only app=api of its namespace.
        let web = policy(
            "web",
            json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}),
        );
        let db = policy(
            "db",
            json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "api"}}}], "ports": [{"port": 5432}]}]}),
        );
        let world = World {
            namespaces: BTreeMap::new(),
            pods: Vec::new(),
            policies: vec![web, db],
        };
        let net = Net::of_world(&world, &Universe::default());
        let focus = Focus {
            namespace: "db".into(),
            labels: None,
            directions: vec![Direction::Ingress],
        };
        let flows = Flows::new(&[&net], &Everything)
            .of(&focus, &mut Budget::new(None))
            .unwrap()
            .unwrap();
        // Only pods app=api of db itself reach db; web's pods are no app=api of db.
        assert!(
            flows.iter().all(|f| match &f.from {
                End::Pods { site, labels, .. } =>
                    site.name == "db" && labels.get("app").map(String::as_str) == Some("api"),
                End::Addresses(_) => false,
            }),
            "{flows:#?}"
        );
        assert!(!flows.is_empty());
        assert_eq!(flows[0].ports(0).to_string(), "TCP 5432");
    }
}
