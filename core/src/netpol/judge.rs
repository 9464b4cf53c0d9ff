//! What a NetworkPolicy change adds to its namespace's reachability: the facts admission judges.
//!
//! The namespace after the change is its policies from the inventory with the reviewed one in
//! place (added, replaced, or gone on DELETE). No pods are needed: the pods a policy selects are
//! every label set its podSelector admits, split by which other policies select them too
//! ([`super::space`]). Because policies only add to what an isolated pod may do, the worst pods
//! are those selected by as many policies as can select one pod together; every measure below
//! is taken over those, for the pods the reviewed policy selects, and only where one of the
//! reviewed policy's rules takes part, so a change is judged by what it adds, and a policy that
//! was admitted is not blamed for one that comes later.
//!
//! Measures, per direction:
//! - the share of the public IPv4 and IPv6 internet that may reach the pods (ingress), counted
//!   over every rule of every policy selecting them;
//! - the most ports one peer (an address, or a pod in some namespace) is open on, per protocol,
//!   as the union of every rule that matches that peer; a named port counts as one port;
//! - whether every namespace a tenant can create is reached: a namespaceSelector that matches a
//!   namespace with a fresh name, no labels but the ones the bundle requires of every namespace
//!   (`Universe`), for each allowed value of those; pod labels are the tenant's to write, so any
//!   podSelector that some pod can meet counts;
//! - which of the constraint's metadata addresses, and private ranges, the reviewed policy's
//!   egress reaches (every spelling: IPv4-mapped and NAT64 IPv6 blocks are IPv4);
//! - on DELETE or UPDATE, pods the old policy isolated that nothing isolates any more.
//!
//! Not judged: an ipBlock that covers the cluster's own pod network (Palisade does not know it).
//!
//! [`analyse`] makes the [`Analysis`] of a reviewed NetworkPolicy against the inventory;
//! [`Analysis::facts`] gives a constraint the facts it reads at `input.palisade.reachability`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::ip::{Family, IpSet};
use super::model::{
    Direction, Labels, NAME_LABEL, Namespaces, Peer, Policy, PortEntry, PortMatch, Protocol, Rule,
    selector_text,
};
use super::space::{self, BUDGET, Bits, Budget, Domain, FRESH, Space, Stop};
use crate::admission::{Operation, Review};
use crate::inventory::Inventory;
use crate::matcher::{LabelSelector, Requirement};
use crate::policy::OutOfTime;
use std::time::Instant;

/// What every namespace carries, because the bundle requires it: label key to its allowed
/// values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Universe {
    /// Each required label key, and the values it may take.
    pub required: BTreeMap<String, Allowed>,
}

/// The values a required label may have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// Any value.
    Any,
    /// Only these (none at all when two constraints contradict each other).
    Values(Vec<String>),
}

impl Universe {
    /// Adds what a constraint that applies to every namespace requires of them. Understood:
    /// `PalisadeNamespaceLabels` (`labels[].key`, `allowedValues`) and the gatekeeper-library's
    /// `K8sRequiredLabels` (`labels[].key`; its `allowedRegex` is read as any value).
    pub fn require_from(&mut self, kind: &str, parameters: &Value) {
        if kind != "PalisadeNamespaceLabels" && kind != "K8sRequiredLabels" {
            return;
        }
        for l in parameters["labels"].as_array().into_iter().flatten() {
            let Some(key) = l["key"].as_str() else {
                continue;
            };
            let values: Vec<String> = l["allowedValues"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            let allowed = if kind == "PalisadeNamespaceLabels" && !values.is_empty() {
                Allowed::Values(values)
            } else {
                Allowed::Any
            };
            // Two constraints on one key: a namespace meets both.
            let entry = self.required.entry(key.to_owned()).or_insert(Allowed::Any);
            *entry = match (&*entry, allowed) {
                (Allowed::Any, a) => a,
                (a, Allowed::Any) => a.clone(),
                (Allowed::Values(a), Allowed::Values(b)) => {
                    Allowed::Values(a.iter().filter(|v| b.contains(v)).cloned().collect())
                }
            };
        }
    }

    /// The namespaces a tenant can make, as a label space over the namespace selectors
    /// `items`: a fresh name, each required label with an allowed value (any value a selector
    /// names, or a fresh one, when any is allowed), and no other label.
    pub(crate) fn new_namespaces(&self, items: &[Vec<Requirement>]) -> BTreeMap<String, Domain> {
        let mut domain: BTreeMap<String, Domain> = BTreeMap::new();
        for r in items.iter().flatten() {
            domain
                .entry(r.key.clone())
                .or_insert(Domain::Only(vec![None]));
        }
        for (key, allowed) in &self.required {
            let values: Vec<Option<String>> = match allowed {
                Allowed::Values(allowed) => allowed.iter().cloned().map(Some).collect(),
                Allowed::Any => {
                    let mut named: Vec<Option<String>> = items
                        .iter()
                        .flatten()
                        .filter(|r| &r.key == key)
                        .flat_map(|r| r.values.iter().cloned().map(Some))
                        .collect();
                    named.push(Some(FRESH.to_owned()));
                    named.sort();
                    named.dedup();
                    named
                }
            };
            domain.insert(key.clone(), Domain::Only(values));
        }
        domain.insert(
            NAME_LABEL.to_owned(),
            Domain::Only(vec![Some(FRESH.to_owned())]),
        );
        domain
    }

    /// As [`Universe::require_from`], for a constraint of the bundle: only one that applies to
    /// every Namespace (all but some excluded by name) says what every namespace carries.
    pub fn require_from_constraint(&mut self, constraint: &crate::policy::Constraint) {
        let m = &constraint.matcher;
        let every_namespace = m.namespaces.is_empty()
            && m.label_selector.is_none()
            && m.namespace_selector.is_none()
            && m.name.is_none()
            && (m.kinds.is_empty()
                || m.kinds.iter().any(|k| {
                    (k.api_groups.is_empty()
                        || k.api_groups.iter().any(|g| g.is_empty() || g == "*"))
                        && k.kinds.iter().any(|k| k == "Namespace" || k == "*")
                }));
        if every_namespace {
            self.require_from(&constraint.kind, &constraint.parameters);
        }
    }
}

/// Whether `review` is of a NetworkPolicy (networking.k8s.io).
pub fn is_network_policy(review: &Review) -> bool {
    let id = review.object_ref();
    id.group == "networking.k8s.io" && id.kind == "NetworkPolicy"
}

/// Judges the NetworkPolicy change under review against its namespace in `inventory`.
/// A review without an operation (the CLI, the audit) is judged as a CREATE.
pub fn analyse(
    review: &Review,
    inventory: &Inventory,
    universe: &Universe,
    deadline: Option<Instant>,
) -> Result<Analysis, OutOfTime> {
    let namespace = review.object_ref().namespace.clone();
    let read = |v: &Value| Policy::parse(v, &namespace).map(Arc::new);
    // The version that goes away only matters for what it isolated: read that much of it even
    // when the rest is past the model's limits.
    let read_old =
        |v: &Value| read(v).or_else(|_| Policy::parse_isolation(v, &namespace).map(Arc::new));
    // A namespace being deleted deletes its policies through admission, and its pods with
    // them: what the last policies isolated goes away anyway, and refusing would leave the
    // namespace stuck in Terminating.
    let terminating = inventory.namespace(&namespace).is_some_and(|ns| {
        !ns["metadata"]["deletionTimestamp"].is_null() || ns["status"]["phase"] == "Terminating"
    });
    let change = match review.operation() {
        Some(Operation::Delete) if terminating => return Ok(Analysis::default()),
        Some(Operation::Delete) => read_old(review.object()).map(|old| Change {
            namespace: namespace.clone(),
            new: None,
            old: Some(old),
        }),
        Some(Operation::Update) => read(review.object()).and_then(|new| {
            let old = match review.old_object() {
                Value::Null => None,
                v => Some(read_old(v)?),
            };
            Ok(Change {
                namespace: namespace.clone(),
                new: Some(new),
                old,
            })
        }),
        _ => read(review.object()).map(|new| Change {
            namespace: namespace.clone(),
            new: Some(new),
            old: None,
        }),
    };
    let change = match change {
        Ok(c) => c,
        Err(e) => {
            return Ok(Analysis {
                error: Some(format!("it cannot be judged: {e}")),
                policy: review.object_ref().name.clone(),
                ..Analysis::default()
            });
        }
    };
    let others: Vec<(String, Arc<Result<Policy, String>>)> = inventory
        .network_policies(&namespace)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    Analysis::new(&change, &others, universe, deadline)
}

/// The change under review.
#[derive(Debug, Clone)]
pub struct Change {
    /// The namespace of the NetworkPolicy changed.
    pub namespace: String,
    /// The policy after the change (`None` on DELETE).
    pub new: Option<Arc<Policy>>,
    /// The policy before it (UPDATE and DELETE).
    pub old: Option<Arc<Policy>>,
}

/// The parameter-free findings of one change, computed once per review.
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    error: Option<String>,
    policy: String,
    public: Vec<PublicFinding>,
    ports: Vec<PortFinding>,
    every_namespace: Vec<NamespaceFinding>,
    unisolated: Vec<Unisolated>,
    /// The reviewed policy's egress rules: what each reaches, and the reach of each ipBlock.
    egress: Vec<EgressRule>,
}

/// A reviewed egress rule: where it is, what it reaches, and what each of its ipBlocks reaches.
#[derive(Debug, Clone)]
struct EgressRule {
    place: String,
    reach: IpSet,
    blocks: Vec<(String, IpSet)>,
}

/// The peer open on the most ports: how many, whether every port, the rules open to it (by
/// index) and the peer.
type Worst = (u32, bool, Vec<usize>, String);

#[derive(Debug, Clone, Serialize)]
struct PublicFinding {
    family: &'static str,
    share: f64,
    /// The share as a person reads it: `100%`, `75%`, `0.4%`.
    percent: String,
    pods: String,
    /// Some rule has no `from`: every source.
    every: bool,
    rules: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
struct PortFinding {
    direction: &'static str,
    /// One protocol, or several that are each open on every port to the same peer.
    protocol: String,
    count: u32,
    all: bool,
    ports: String,
    pods: String,
    peer: String,
    rules: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
struct NamespaceFinding {
    direction: &'static str,
    pods: String,
    ports: String,
    rules: Vec<String>,
    /// Only rules without from/to reach every namespace (they reach every source, the internet
    /// included, which a grant of public ingress allows).
    unlisted: bool,
}

#[derive(Debug, Clone, Serialize)]
struct Unisolated {
    direction: &'static str,
    pods: String,
}

fn complex(what: &str) -> String {
    format!(
        "the namespace's NetworkPolicies are too intricate to judge {what} within {BUDGET} steps (too many distinct label combinations or address ranges): select pods and namespaces by fewer distinct labels, or merge ranges"
    )
}

impl Analysis {
    /// Judges `change` against `others`: the namespace's other policies, as the inventory holds
    /// them (an `Err` is one that could not be read: the change is then not judged, and the
    /// error says which).
    ///
    /// Past `deadline` it gives up with [`OutOfTime`]; past its step budget it reports that it
    /// could not judge (the template then fails closed).
    pub fn new(
        change: &Change,
        others: &[(String, Arc<Result<Policy, String>>)],
        universe: &Universe,
        deadline: Option<Instant>,
    ) -> Result<Self, OutOfTime> {
        let reviewed = change.new.as_ref().or(change.old.as_ref());
        let mut out = Analysis {
            policy: reviewed.map(|p| p.name.clone()).unwrap_or_default(),
            ..Self::default()
        };
        let mut after: Vec<&Policy> = Vec::with_capacity(others.len() + 1);
        for (name, p) in others {
            if Some(name.as_str()) == reviewed.map(|r| r.name.as_str()) {
                continue;
            }
            match p.as_ref() {
                Ok(p) => after.push(p),
                Err(e) => {
                    out.error = Some(format!(
                        "NetworkPolicy {}/{name} in the inventory cannot be read ({e}), so this namespace's reachability cannot be judged: fix or delete that policy",
                        change.namespace
                    ));
                    return Ok(out);
                }
            }
        }
        let mut budget = Budget::new(deadline);
        let stopped = |what: String, stop: Stop, out: &mut Analysis| match stop {
            Stop::OutOfTime => Err(OutOfTime),
            Stop::TooComplex => {
                out.error = Some(complex(&what));
                Ok(())
            }
        };
        if let Some(new) = &change.new {
            after.push(new);
            if let Err(stop) = out.judge_new(new, &after, universe, &mut budget) {
                stopped(format!("what {:?} adds", new.name), stop, &mut out)?;
                return Ok(out);
            }
        }
        if let Some(old) = &change.old
            && let Err(stop) = out.judge_unisolation(old, &after, &mut budget)
        {
            stopped(
                format!("what changing {:?} opens", old.name),
                stop,
                &mut out,
            )?;
        }
        Ok(out)
    }

    fn judge_new(
        &mut self,
        new: &Policy,
        after: &[&Policy],
        universe: &Universe,
        budget: &mut Budget,
    ) -> Result<(), Stop> {
        let reviewed = after.len() - 1;
        for rule in new.egress.iter().flatten() {
            let blocks = rule
                .peers
                .iter()
                .flatten()
                .filter_map(|p| match p {
                    Peer::Block {
                        cidr,
                        except,
                        reach,
                    } => Some((block_text(cidr, except), reach.clone())),
                    Peer::Pods { .. } => None,
                })
                .chain(
                    rule.peers
                        .is_none()
                        .then(|| ("every destination".to_owned(), IpSet::everything())),
                )
                .collect();
            self.egress.push(EgressRule {
                place: rule.place(),
                reach: rule.reach.clone(),
                blocks,
            });
        }
        let classes = maximal_classes(after, &new.pod_selector, reviewed, budget)?;
        for direction in Direction::BOTH {
            if new.rules(direction).is_none_or(<[Rule]>::is_empty) {
                continue;
            }
            // Only policies with rules in this direction tell classes apart here.
            let mut projected: Vec<Vec<usize>> = classes
                .iter()
                .map(|(class, _)| {
                    class
                        .iter()
                        .filter(|&i| after[i].rules(direction).is_some_and(|r| !r.is_empty()))
                        .collect()
                })
                .collect();
            projected.sort();
            projected.dedup();
            let projected: Vec<&Vec<usize>> = projected
                .iter()
                .filter(|c| {
                    !projected
                        .iter()
                        .any(|o| o.len() > c.len() && c.iter().all(|i| o.contains(i)))
                })
                .collect();
            for class in projected {
                let rules: Vec<(usize, &Rule)> = class
                    .iter()
                    .copied()
                    .filter_map(|i| Some((i, after[i].rules(direction)?)))
                    .flat_map(|(i, rs)| rs.iter().map(move |r| (i, r)))
                    .collect();
                let pods = class_text(after, class);
                if direction == Direction::Ingress {
                    self.public_ingress(after, reviewed, &rules, &pods);
                }
                self.ports(after, reviewed, direction, &rules, &pods, budget)?;
                self.namespaces(after, reviewed, direction, &rules, &pods, universe, budget)?;
            }
        }
        Ok(())
    }

    fn public_ingress(
        &mut self,
        after: &[&Policy],
        reviewed: usize,
        rules: &[(usize, &Rule)],
        pods: &str,
    ) {
        let public = IpSet::public();
        let adds = rules
            .iter()
            .any(|(i, r)| *i == reviewed && r.reach.intersects(public));
        if !adds {
            return;
        }
        let reach = rules
            .iter()
            .fold(IpSet::empty(), |acc, (_, r)| acc.union(&r.reach));
        let (v4, v6) = reach.public_share();
        let every = rules.iter().any(|(_, r)| r.peers.is_none());
        let names: Vec<String> = rules
            .iter()
            .filter(|(_, r)| r.reach.intersects(public))
            .map(|(i, r)| rule_name(after[*i], r))
            .collect();
        for (family, share) in [(Family::V4, v4), (Family::V6, v6)] {
            if share == 0.0 {
                continue;
            }
            let finding = PublicFinding {
                family: family.name(),
                share,
                percent: percent(share),
                pods: pods.to_owned(),
                every,
                rules: names.clone(),
            };
            keep_worst(
                &mut self.public,
                finding,
                |a, b| a.family == b.family,
                |f| f.share,
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn ports(
        &mut self,
        after: &[&Policy],
        reviewed: usize,
        direction: Direction,
        rules: &[(usize, &Rule)],
        pods: &str,
        budget: &mut Budget,
    ) -> Result<(), Stop> {
        for protocol in Protocol::ALL {
            // No peer of these rules can be open on more ports than all their ports together.
            let known = self
                .ports
                .iter()
                .find(|f| f.direction == direction.field() && f.protocol == protocol.name())
                .map_or((0, false), |f| (f.count, f.all));
            let union = rules.iter().fold(PortSet::default(), |acc, (_, r)| {
                acc.union(&PortSet::of(r.ports.as_deref(), protocol))
            });
            let bound = union.count();
            // A tie only matters when these rules could open every port where the known worst
            // does not.
            if known.0 > 0 && (bound < known.0 || (bound == known.0 && (known.1 || !union.all()))) {
                continue;
            }
            let best = worst_peer(reviewed, rules, protocol, budget)?;
            let Some((count, all, members, peer)) = best else {
                continue;
            };
            let finding = PortFinding {
                direction: direction.field(),
                protocol: protocol.name().to_owned(),
                count,
                all,
                ports: ports_text(rules, &members, protocol),
                pods: pods.to_owned(),
                peer,
                rules: members
                    .iter()
                    .map(|&m| rule_name(after[rules[m].0], rules[m].1))
                    .collect(),
            };
            keep_worst(
                &mut self.ports,
                finding,
                |a, b| a.direction == b.direction && a.protocol == b.protocol,
                |f| (f.count, f.all),
            );
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn namespaces(
        &mut self,
        after: &[&Policy],
        reviewed: usize,
        direction: Direction,
        rules: &[(usize, &Rule)],
        pods: &str,
        universe: &Universe,
        budget: &mut Budget,
    ) -> Result<(), Stop> {
        if self
            .every_namespace
            .iter()
            .any(|f| f.direction == direction.field())
        {
            return Ok(());
        }
        // Items: each rule's peers that can hold pods of other namespaces.
        let mut items: Vec<Vec<Requirement>> = Vec::new();
        let mut owner: Vec<usize> = Vec::new();
        for (n, (_, rule)) in rules.iter().enumerate() {
            match &rule.peers {
                None => {
                    items.push(Vec::new());
                    owner.push(n);
                }
                Some(peers) => {
                    for p in peers {
                        if let Peer::Pods {
                            namespaces: Namespaces::Selected(ns),
                            pods,
                        } = p
                            && space::satisfiable(&pods.requirements)
                        {
                            items.push(ns.requirements.clone());
                            owner.push(n);
                        }
                    }
                }
            }
        }
        if items.is_empty() {
            return Ok(());
        }
        let domain = universe.new_namespaces(&items);
        let space = Space::new(&items, &[], &domain, budget)?;
        let mut every = true;
        let mut open = vec![false; items.len()];
        space.walk(budget, &mut |alive, labels| {
            if labels.is_some() {
                let mut any = false;
                for i in alive.iter() {
                    open[i] = true;
                    any = true;
                }
                every &= any;
            }
            true
        })?;
        let adds = open
            .iter()
            .zip(&owner)
            .any(|(o, &n)| *o && rules[n].0 == reviewed);
        if !every || !adds {
            return Ok(());
        }
        let mut members: Vec<usize> = open
            .iter()
            .zip(&owner)
            .filter(|(o, _)| **o)
            .map(|(_, n)| *n)
            .collect();
        members.dedup();
        let unlisted = members.iter().all(|&m| rules[m].1.peers.is_none());
        self.every_namespace.push(NamespaceFinding {
            unlisted,
            direction: direction.field(),
            pods: pods.to_owned(),
            ports: members
                .iter()
                .map(|&m| rule_ports_text(rules[m].1))
                .collect::<Vec<_>>()
                .join("; "),
            rules: members
                .iter()
                .map(|&m| rule_name(after[rules[m].0], rules[m].1))
                .collect(),
        });
        Ok(())
    }

    /// Pods the old policy isolated in a direction that no policy isolates after the change.
    fn judge_unisolation(
        &mut self,
        old: &Policy,
        after: &[&Policy],
        budget: &mut Budget,
    ) -> Result<(), Stop> {
        for direction in Direction::BOTH {
            if !old.isolates(direction) {
                continue;
            }
            // A policy that selects every pod the old one did (its requirements are among the
            // old one's, an empty selector above all) keeps them isolated.
            if after.iter().any(|p| {
                p.isolates(direction)
                    && p.pod_selector
                        .requirements
                        .iter()
                        .all(|r| old.pod_selector.requirements.contains(r))
            }) {
                continue;
            }
            let items: Vec<Vec<Requirement>> = after
                .iter()
                .filter(|p| p.isolates(direction))
                .map(|p| p.pod_selector.requirements.clone())
                .collect();
            let space = Space::new(
                &items,
                &old.pod_selector.requirements,
                &BTreeMap::new(),
                budget,
            )?;
            let mut open: Option<Labels> = None;
            space.walk(budget, &mut |alive, labels| {
                if open.is_some() {
                    return false;
                }
                if let Some(labels) = labels
                    && alive.iter().next().is_none()
                {
                    open = Some(labels.clone());
                }
                true
            })?;
            if let Some(labels) = open {
                self.unisolated.push(Unisolated {
                    direction: direction.field(),
                    pods: labels_text(&labels, "every pod"),
                });
            }
        }
        Ok(())
    }

    /// The facts a template reads as `input.palisade.reachability`, with the constraint's
    /// `metadataAddresses` and `privateRanges` looked up in the reviewed policy's egress.
    pub fn facts(&self, parameters: &Value) -> Value {
        let mut error = self.error.clone();
        let mut ranges = |field: &str| -> Vec<(String, IpSet)> {
            parameters[field]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| {
                    let text = v.as_str().unwrap_or_default();
                    match super::ip::Cidr::parse(text) {
                        Ok(c) => Some((text.to_owned(), IpSet::of(c))),
                        Err(e) => {
                            error.get_or_insert(format!("parameters.{field}: {e}"));
                            None
                        }
                    }
                })
                .collect()
        };
        let metadata = ranges("metadataAddresses");
        let private = ranges("privateRanges");
        let public = IpSet::public();
        let mut metadata_found = Vec::new();
        let mut private_found = Vec::new();
        for EgressRule {
            place: rule,
            reach,
            blocks,
        } in &self.egress
        {
            for (address, set) in &metadata {
                if reach.intersects(set) {
                    metadata_found.push(serde_json::json!({"rule": rule, "address": address}));
                }
            }
            for (block, reach) in blocks {
                if !reach.intersects(public) {
                    continue;
                }
                for (range, set) in &private {
                    if reach.intersects(set) {
                        private_found.push(
                            serde_json::json!({"rule": rule, "block": block, "range": range}),
                        );
                    }
                }
            }
        }
        // A peer open on every port of several protocols is one finding.
        let mut ports: Vec<PortFinding> = Vec::new();
        for f in &self.ports {
            match ports.iter_mut().find(|p| {
                p.all
                    && f.all
                    && p.direction == f.direction
                    && p.pods == f.pods
                    && p.peer == f.peer
                    && p.rules == f.rules
            }) {
                Some(p) => {
                    p.protocol = format!("{}/{}", p.protocol, f.protocol);
                }
                None => ports.push(f.clone()),
            }
        }
        serde_json::json!({
            "error": error,
            "policy": self.policy,
            "publicIngress": self.public,
            "ports": ports,
            "everyNamespace": self.every_namespace,
            "metadata": metadata_found,
            "privateRanges": private_found,
            "unisolated": self.unisolated,
        })
    }
}

/// Keeps `finding` in `list`, unless the entry about the same thing (`same`) is already at
/// least as bad (`badness`).
fn keep_worst<T, B: PartialOrd>(
    list: &mut Vec<T>,
    finding: T,
    same: impl Fn(&T, &T) -> bool,
    badness: impl Fn(&T) -> B,
) {
    match list.iter_mut().find(|f| same(f, &finding)) {
        Some(f) if badness(f) >= badness(&finding) => {}
        Some(f) => *f = finding,
        None => list.push(finding),
    }
}

/// The sets of policies that select one pod together, among those selecting a pod `selector`
/// selects, keeping only the largest (no other contains them). `reviewed` is always in.
fn maximal_classes(
    after: &[&Policy],
    selector: &LabelSelector,
    reviewed: usize,
    budget: &mut Budget,
) -> Result<Vec<(Bits, Labels)>, Stop> {
    let items: Vec<Vec<Requirement>> = after
        .iter()
        .map(|p| p.pod_selector.requirements.clone())
        .collect();
    let space = Space::new(&items, &selector.requirements, &BTreeMap::new(), budget)?;
    let mut all: Vec<(Bits, Labels)> = space
        .combinations(budget)?
        .into_iter()
        .filter(|(bits, _)| bits.has(reviewed))
        .collect();
    // Largest first: a set is kept unless one kept before holds it.
    all.sort_by_key(|(bits, _)| std::cmp::Reverse(bits.count()));
    let mut keep: Vec<(Bits, Labels)> = Vec::new();
    for (bits, labels) in all {
        budget.spend(keep.len() + 1)?;
        if keep.iter().any(|(k, _)| bits.is_subset(k)) {
            continue;
        }
        keep.push((bits, labels));
    }
    Ok(keep)
}

/// For one protocol, the peer open on the most ports among peers some reviewed rule matches:
/// (count, every port, the rules open to it, the peer).
fn worst_peer(
    reviewed: usize,
    rules: &[(usize, &Rule)],
    protocol: Protocol,
    budget: &mut Budget,
) -> Result<Option<Worst>, Stop> {
    let ports: Vec<PortSet> = rules
        .iter()
        .map(|(_, r)| PortSet::of(r.ports.as_deref(), protocol))
        .collect();
    let is_reviewed: Vec<bool> = rules.iter().map(|(i, _)| *i == reviewed).collect();
    if !is_reviewed
        .iter()
        .zip(&ports)
        .any(|(r, p)| *r && !p.is_empty())
    {
        return Ok(None);
    }
    let mut best: Option<Worst> = None;
    // The peer's text is made only for a new worst.
    let consider = |members: Vec<usize>, peer: &dyn Fn() -> String, best: &mut Option<Worst>| {
        if !members
            .iter()
            .any(|&m| is_reviewed[m] && !ports[m].is_empty())
        {
            return;
        }
        let union = members
            .iter()
            .fold(PortSet::default(), |acc, &m| acc.union(&ports[m]));
        let count = union.count();
        // On a tie, a peer open on every port is the worse one.
        if best
            .as_ref()
            .is_none_or(|b| (count, union.all()) > (b.0, b.1))
        {
            let members = members
                .into_iter()
                .filter(|&m| !ports[m].is_empty())
                .collect();
            *best = Some((count, union.all(), members, peer()));
        }
    };
    // Addresses: one sweep over every range of every rule; between two boundaries the same
    // rules apply.
    for family in [Family::V4, Family::V6] {
        let mut events: Vec<(u128, bool, usize)> = Vec::new();
        for (m, (_, r)) in rules.iter().enumerate() {
            for &(a, b) in r.reach.ranges(family) {
                events.push((a, true, m));
                if b < IpSet::max_of(family) {
                    events.push((b + 1, false, m));
                }
            }
        }
        events.sort_unstable();
        // The rules whose ranges cover the current piece, with how many of their ranges do.
        let mut active: BTreeMap<usize, u32> = BTreeMap::new();
        let mut n = 0;
        while n < events.len() {
            let at = events[n].0;
            while n < events.len() && events[n].0 == at {
                let (_, open, m) = events[n];
                if open {
                    *active.entry(m).or_default() += 1;
                } else if let Some(c) = active.get_mut(&m) {
                    *c -= 1;
                    if *c == 0 {
                        active.remove(&m);
                    }
                }
                n += 1;
            }
            budget.spend(1 + active.len())?;
            let members: Vec<usize> = active.keys().copied().collect();
            if members.is_empty() {
                continue;
            }
            let last = events.get(n).map_or(IpSet::max_of(family), |e| e.0 - 1);
            let peer = || {
                let cidrs = IpSet::range(family, at, last).cidrs();
                if cidrs.len() > 2 {
                    format!(
                        "{}, {} and {} more ranges",
                        cidrs[0],
                        cidrs[1],
                        cidrs.len() - 2
                    )
                } else {
                    cidrs.join(", ")
                }
            };
            consider(members, &peer, &mut best);
        }
    }
    // Pods: namespace labels (`ns:`) and pod labels (`pod:`) in one space.
    let mut items: Vec<&[Requirement]> = Vec::new();
    let mut owner: Vec<usize> = Vec::new();
    for (m, (_, r)) in rules.iter().enumerate() {
        if r.peers.is_none() {
            items.push(&[]);
            owner.push(m);
        }
        for reqs in &r.pod_peers {
            items.push(reqs);
            owner.push(m);
        }
    }
    if !items.is_empty() {
        // Every namespace carries its name label: a peer namespace always has one.
        let name_key = format!("ns:{NAME_LABEL}");
        let mut names: Vec<Option<String>> = items
            .iter()
            .flat_map(|i| i.iter())
            .filter(|r| r.key == name_key)
            .flat_map(|r| r.values.iter().cloned().map(Some))
            .collect();
        names.sort();
        names.dedup();
        names.push(Some(FRESH.to_owned()));
        let domain = BTreeMap::from([(name_key, Domain::Only(names))]);
        let space = Space::new(&items, &[], &domain, budget)?;
        let members_of = |alive: &Bits| -> Vec<usize> {
            let mut members: Vec<usize> = alive.iter().map(|i| owner[i]).collect();
            members.dedup();
            members.sort_unstable();
            members.dedup();
            members
        };
        let mut found: Option<Worst> = best.clone();
        space.walk(budget, &mut |alive, labels| {
            let members = members_of(alive);
            if !members
                .iter()
                .any(|&m| is_reviewed[m] && !ports[m].is_empty())
            {
                return false;
            }
            match labels {
                None => {
                    // The most these pods could be open on, whatever the remaining labels.
                    let union = members
                        .iter()
                        .fold(PortSet::default(), |acc, &m| acc.union(&ports[m]));
                    let bound = union.count();
                    found
                        .as_ref()
                        .is_none_or(|b| bound > b.0 || (bound == b.0 && !b.1 && union.all()))
                }
                Some(labels) => {
                    consider(members, &|| peer_text(labels), &mut found);
                    true
                }
            }
        })?;
        best = found;
    }
    Ok(best)
}

/// The ports of one protocol a rule opens: ranges and named ports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PortSet {
    ranges: Vec<(u16, u16)>,
    named: Vec<String>,
}

impl PortSet {
    fn of(entries: Option<&[PortEntry]>, protocol: Protocol) -> Self {
        let mut set = PortSet::default();
        match entries {
            None => set.ranges.push((1, 65535)),
            Some(entries) => {
                for e in entries.iter().filter(|e| e.protocol == protocol) {
                    match &e.port {
                        PortMatch::All => set.ranges.push((1, 65535)),
                        PortMatch::Range(a, b) => set.ranges.push((*a, *b)),
                        PortMatch::Named(n) => set.named.push(n.clone()),
                    }
                }
            }
        }
        set.normalise();
        set
    }

    fn normalise(&mut self) {
        self.ranges.sort_unstable();
        let mut out: Vec<(u16, u16)> = Vec::new();
        for &(a, b) in &self.ranges {
            match out.last_mut() {
                Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        self.ranges = out;
        self.named.sort();
        self.named.dedup();
    }

    fn union(&self, other: &Self) -> Self {
        let mut set = PortSet {
            ranges: self.ranges.iter().chain(&other.ranges).copied().collect(),
            named: self.named.iter().chain(&other.named).cloned().collect(),
        };
        set.normalise();
        set
    }

    fn is_empty(&self) -> bool {
        self.ranges.is_empty() && self.named.is_empty()
    }

    fn all(&self) -> bool {
        self.ranges == [(1, 65535)]
    }

    /// Ports open: each range's width, plus one per named port, at most 65535.
    fn count(&self) -> u32 {
        let numbers: u32 = self
            .ranges
            .iter()
            .map(|(a, b)| u32::from(*b) - u32::from(*a) + 1)
            .sum();
        (numbers + self.named.len() as u32).min(65535)
    }

    fn text(&self, protocol: Protocol) -> String {
        let p = protocol.name();
        let mut parts: Vec<String> = self
            .ranges
            .iter()
            .map(|(a, b)| {
                if a == b {
                    format!("{p} {a}")
                } else {
                    format!("{p} {a}-{b}")
                }
            })
            .collect();
        parts.extend(self.named.iter().map(|n| format!("{p} {n}")));
        parts.join(", ")
    }
}

fn ports_text(rules: &[(usize, &Rule)], members: &[usize], protocol: Protocol) -> String {
    let union = members.iter().fold(PortSet::default(), |acc, &m| {
        acc.union(&PortSet::of(rules[m].1.ports.as_deref(), protocol))
    });
    if union.all() {
        format!("every {} port", protocol.name())
    } else {
        union.text(protocol)
    }
}

fn rule_ports_text(rule: &Rule) -> String {
    match &rule.ports {
        None => "every port".to_owned(),
        Some(p) => p
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn rule_name(policy: &Policy, rule: &Rule) -> String {
    format!("{:?} {}", policy.name, rule.place())
}

fn block_text(cidr: &str, except: &[String]) -> String {
    if except.is_empty() {
        cidr.to_owned()
    } else {
        format!("{cidr} except {}", except.join(", "))
    }
}

fn percent(share: f64) -> String {
    let p = share * 100.0;
    if share >= 1.0 {
        "100%".to_owned()
    } else if p >= 99.95 {
        "99.9%".to_owned()
    } else if p >= 1.0 {
        format!("{p:.0}%")
    } else {
        format!("{p:.2}%")
    }
}

/// The pods of a class: the labels its policies require together, e.g. `pods app=web`.
fn class_text(after: &[&Policy], class: &[usize]) -> String {
    let mut reqs = Vec::new();
    for &i in class {
        reqs.extend(after[i].pod_selector.requirements.iter().cloned());
    }
    let text = selector_text(&LabelSelector { requirements: reqs }, "");
    if text.is_empty() {
        "every pod".to_owned()
    } else {
        format!("pods {text}")
    }
}

fn labels_text(labels: &Labels, empty: &str) -> String {
    let parts: Vec<String> = labels
        .iter()
        .filter(|&(_, v)| v != FRESH)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if parts.is_empty() {
        empty.to_owned()
    } else {
        format!("pods {}", parts.join(","))
    }
}

/// A pod peer from a label set of the `ns:`/`pod:` space.
fn peer_text(labels: &Labels) -> String {
    let part = |prefix: &str| -> Vec<String> {
        labels
            .iter()
            .filter_map(|(k, v)| {
                let k = k.strip_prefix(prefix)?;
                Some(if v == FRESH {
                    format!("{k}=<any other value>")
                } else {
                    format!("{k}={v}")
                })
            })
            .collect()
    };
    let pods = part("pod:");
    let ns = part("ns:");
    let pods = if pods.is_empty() {
        "any pod".to_owned()
    } else {
        format!("pods {}", pods.join(","))
    };
    let name = labels.get(&format!("ns:{NAME_LABEL}"));
    let place = match name {
        Some(n) if n != FRESH => format!("in namespace {n}"),
        _ => {
            let others: Vec<&String> = ns.iter().filter(|l| !l.starts_with(NAME_LABEL)).collect();
            if others.is_empty() {
                "in any namespace".to_owned()
            } else {
                format!(
                    "in namespaces labelled {}",
                    others
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                )
            }
        }
    };
    format!("{pods} {place}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(name: &str, spec: Value) -> Arc<Policy> {
        Arc::new(
            Policy::parse(
                &json!({"metadata": {"name": name, "namespace": "ns"}, "spec": spec}),
                "ns",
            )
            .unwrap(),
        )
    }

    fn facts(new: &Arc<Policy>, others: &[&Arc<Policy>], universe: &Universe) -> Value {
        let others: Vec<(String, Arc<Result<Policy, String>>)> = others
            .iter()
            .map(|p| (p.name.clone(), Arc::new(Ok((***p).clone()))))
            .collect();
        let change = Change {
            namespace: "ns".into(),
            new: Some(new.clone()),
            old: None,
        };
        Analysis::new(&change, &others, universe, None)
            .unwrap()
            .facts(&json!({}))
    }

    #[test]
    fn the_universe_takes_the_labels_every_namespace_must_carry() {
        let mut u = Universe::default();
        u.require_from(
            "PalisadeNamespaceLabels",
            &json!({"labels": [{"key": "level", "allowedValues": ["high", "low"]}]}),
        );
        u.require_from(
            "K8sRequiredLabels",
            &json!({"labels": [{"key": "owner", "allowedRegex": "^t-"}]}),
        );
        u.require_from("SomethingElse", &json!({"labels": [{"key": "ignored"}]}));
        // Two constraints on one key: a namespace meets both.
        u.require_from(
            "PalisadeNamespaceLabels",
            &json!({"labels": [{"key": "level", "allowedValues": ["low", "mid"]}]}),
        );
        assert_eq!(u.required["level"], Allowed::Values(vec!["low".into()]));
        assert_eq!(u.required["owner"], Allowed::Any);
        // Contradicting constraints leave no value, not any value.
        u.require_from(
            "PalisadeNamespaceLabels",
            &json!({"labels": [{"key": "level", "allowedValues": ["high"]}]}),
        );
        assert_eq!(u.required["level"], Allowed::Values(vec![]));
        assert!(!u.required.contains_key("ignored"));
    }

    // A selector on a label every namespace must carry, with every allowed value, is every
    // namespace; with some of them, it is not.
    #[test]
    fn every_namespace_is_judged_under_the_required_labels() {
        let mut u = Universe::default();
        u.require_from(
            "PalisadeNamespaceLabels",
            &json!({"labels": [{"key": "level", "allowedValues": ["high", "low"]}]}),
        );
        let from = |values: Value| {
            policy(
                "p",
                json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "level", "operator": "In", "values": values}]}}], "ports": [{"port": 80}]}]}),
            )
        };
        let every = |f: &Value| f["everyNamespace"].as_array().unwrap().len();
        assert_eq!(every(&facts(&from(json!(["high", "low"])), &[], &u)), 1);
        assert_eq!(every(&facts(&from(json!(["high"])), &[], &u)), 0);
        assert_eq!(
            every(&facts(&from(json!(["high"])), &[], &Universe::default())),
            0,
            "without the requirement, a namespace may lack the label"
        );
    }

    // A policy is judged by what it adds: an earlier policy's path is not its finding.
    #[test]
    fn a_finding_needs_the_reviewed_policy_to_take_part() {
        let wide = policy(
            "wide",
            json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443}]}]}),
        );
        let narrow = policy(
            "narrow",
            json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "api"}}}], "ports": [{"port": 8080}]}]}),
        );
        let f = facts(&narrow, &[&wide], &Universe::default());
        assert_eq!(f["publicIngress"], json!([]), "{f}");
        let f = facts(&wide, &[&narrow], &Universe::default());
        assert_eq!(f["publicIngress"][0]["percent"], "100%", "{f}");
    }

    #[test]
    fn a_policy_that_cannot_be_read_in_the_namespace_fails_the_judgement() {
        let new = policy("p", json!({"podSelector": {}}));
        let others = vec![("broken".to_owned(), Arc::new(Err("spec: bad".to_owned())))];
        let change = Change {
            namespace: "ns".into(),
            new: Some(new),
            old: None,
        };
        let f = Analysis::new(&change, &others, &Universe::default(), None)
            .unwrap()
            .facts(&json!({}));
        assert!(f["error"].as_str().unwrap().contains("ns/broken"), "{f}");
    }

    #[test]
    fn a_judgement_past_its_deadline_is_out_of_time() {
        let p = policy(
            "p",
            json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchExpressions": [{"key": "a", "operator": "Exists"}]}}], "ports": [{"port": 80}]}]}),
        );
        let change = Change {
            namespace: "ns".into(),
            new: Some(p),
            old: None,
        };
        let past = Some(Instant::now() - std::time::Duration::from_secs(1));
        // The clock is read every 1,024 steps: a small judgement may finish first, which is fine;
        // a large one must stop.
        let many: Vec<(String, Arc<Result<Policy, String>>)> = (0..40)
            .map(|i| {
                let p = policy(
                    &format!("k{i}"),
                    json!({"podSelector": {"matchExpressions": [{"key": format!("k{i}"), "operator": "Exists"}]}, "ingress": [{"ports": [{"port": 1000 + i}]}]}),
                );
                (p.name.clone(), Arc::new(Ok((*p).clone())))
            })
            .collect();
        assert!(Analysis::new(&change, &many, &Universe::default(), past).is_err());
        // Without a deadline, the same judgement runs into its step budget and says so.
        let f = Analysis::new(&change, &many, &Universe::default(), None)
            .unwrap()
            .facts(&json!({}));
        assert!(
            f["error"].as_str().unwrap().contains("too intricate"),
            "{f}"
        );
    }
}
