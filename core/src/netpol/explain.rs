//! `palisade netpol explain`: what each pod (when the input holds Pods) or each set of pods (when
//! it does not) may receive and send, from the same model admission judges with.
//!
//! Without Pods, the sets are exact: a set is the pods selected by exactly the same policies
//! (found over every label combination the selectors tell apart, [`super::space`]), so no pod is
//! in two sets and the pods no policy selects are a set of their own.
//!
//! [`explain`] gives one [`Explanation`] per namespace the [`Filter`] keeps, [`write_text`]
//! prints them; the explanations serialise as the JSON output.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::eval::{RuleRef, World};
use super::model::{
    Direction, Labels, NAME_LABEL, Namespaces, Peer, Pod, Policy, PortEntry, PortMatch, Rule,
    selector_text, selects,
};
use super::space::{self, BUDGET, Budget, Space};
use crate::matcher::{LabelSelector, Operator, Requirement};

/// What to explain.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only these namespaces (every namespace with a policy or a pod when empty).
    pub namespaces: Vec<String>,
    /// Only this pod, `namespace/name` (needs Pods in the input).
    pub pod: Option<String>,
    /// Only the set a pod with these labels falls into.
    pub labels: Option<Labels>,
}

/// What one namespace's pods may receive and send: one entry per pod, or per set of pods the
/// policies tell apart.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// The namespace explained.
    pub namespace: String,
    /// The NetworkPolicies of the namespace.
    pub policies: Vec<String>,
    /// `pods` when the input holds Pods of the namespace, else `sets`.
    pub mode: &'static str,
    /// One per pod (`pods`, in the input's order) or per set (`sets`: those selected by the most
    /// policies first, the pods no policy selects last).
    pub entries: Vec<Entry>,
    /// Why the namespace could not be explained (it is then listed with no entries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The filter (`--pod`, `--labels`) left some of the namespace's pods or sets out.
    #[serde(skip)]
    pub partial: bool,
    /// Each policy's name and podSelector as text (empty: every pod), to tell which sets a
    /// peer's podSelector selects ([`super::graph`]).
    #[serde(skip)]
    pub pod_selectors: Vec<(String, String)>,
}

/// What one pod, or one set of pods, may receive and send.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// A pod's name, or the set's description (`pods tier=backend`).
    pub subject: String,
    /// The pod's labels, or labels one pod of the set could carry.
    pub labels: Labels,
    /// The policies that select these pods.
    pub selected_by: Vec<String>,
    /// For a set: the selectors of other policies these pods do not match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub excluding: Vec<String>,
    /// What may reach these pods.
    pub ingress: View,
    /// What these pods may reach.
    pub egress: View,
}

/// One direction of an entry.
#[derive(Debug, Clone, Serialize)]
pub struct View {
    /// False: no policy isolates these pods in this direction, so everything is allowed.
    pub isolated: bool,
    /// The policies that isolate these pods in this direction.
    pub isolated_by: Vec<String>,
    /// What the rules of the isolating policies allow (nothing more is allowed).
    pub allow: Vec<Allow>,
}

/// What one rule of an isolating policy allows.
#[derive(Debug, Clone, Serialize)]
pub struct Allow {
    /// The policy's name.
    pub policy: String,
    /// The rule's place in the policy: `ingress[0]`.
    pub rule: String,
    /// Every peer, the internet included (the rule has no from/to).
    pub every_peer: bool,
    /// Its peers (empty when it allows every peer).
    pub peers: Arc<Vec<PeerView>>,
    /// Its ports.
    pub ports: Ports,
}

/// One peer of a rule, resolved against the input.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum PeerView {
    /// Pods, by namespace and labels.
    Pods {
        /// The namespaces they are in.
        namespaces: NamespacesView,
        /// The podSelector as text; empty: every pod.
        pods: String,
        /// The pods of the input it matches, `namespace/name` (with Pods in the input).
        #[serde(skip_serializing_if = "Option::is_none")]
        matched: Option<Arc<Vec<String>>>,
    },
    /// An ipBlock.
    Cidr {
        /// `ipBlock.cidr`, as written.
        cidr: String,
        /// `ipBlock.except`, as written.
        except: Vec<String>,
        /// What it reaches, as the smallest CIDR list (mapped IPv6 as IPv4).
        addresses: Vec<String>,
    },
}

/// The namespaces of a pod peer.
#[derive(Debug, Clone, Serialize)]
pub struct NamespacesView {
    /// The policy's own namespace (no namespaceSelector).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub own: Option<String>,
    /// The namespaceSelector as text (`{}`: every namespace).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The namespaceSelector matches every namespace.
    pub every: bool,
    /// The namespaceSelector only names namespaces (`kubernetes.io/metadata.name In [...]`):
    /// `known` is then exactly the namespaces it selects.
    pub by_name: bool,
    /// The namespaces of the input (and the own one) that it matches.
    pub known: Vec<String>,
}

/// The ports a rule allows, merged per protocol.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Ports {
    /// Every port of every protocol.
    pub all: bool,
    /// Per protocol, `[first, last]` ranges (a single port is `[p, p]`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ranges: BTreeMap<&'static str, Vec<[u16; 2]>>,
    /// Named ports, resolved where the pod is known.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub named: Vec<NamedPort>,
}

/// A named port of a rule.
#[derive(Debug, Clone, Serialize)]
pub struct NamedPort {
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: &'static str,
    /// The port's name.
    pub name: String,
    /// The number on the pod it resolves against (ingress: the pod itself), when known;
    /// `null` when that pod has no such port (the entry then matches nothing there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<Option<u16>>,
}

/// Explains every namespace the filter keeps.
pub fn explain(world: &World, filter: &Filter) -> Vec<Explanation> {
    let mut names: Vec<String> = if filter.namespaces.is_empty() {
        world
            .policies
            .iter()
            .map(|p| p.namespace.clone())
            .chain(world.pods.iter().map(|p| p.namespace.clone()))
            .collect()
    } else {
        filter.namespaces.clone()
    };
    if let Some(pod) = &filter.pod
        && let Some((ns, _)) = pod.split_once('/')
    {
        names.retain(|n| n == ns);
        if names.is_empty() && filter.namespaces.is_empty() {
            names.push(ns.to_owned());
        }
    }
    names.sort();
    names.dedup();
    let mut cache = Resolved::default();
    names
        .iter()
        .map(|ns| explain_namespace(world, ns, filter, &mut cache))
        .collect()
}

/// Each rule's peers, resolved against the input once, and every namespace the input names.
#[derive(Default)]
struct Resolved {
    peers: BTreeMap<(usize, Direction, usize), Arc<Vec<PeerView>>>,
    namespaces: Option<Vec<String>>,
}

fn explain_namespace(
    world: &World,
    ns: &str,
    filter: &Filter,
    cache: &mut Resolved,
) -> Explanation {
    let own: Vec<(usize, &Policy)> = world
        .policies
        .iter()
        .enumerate()
        .filter(|(_, p)| p.namespace == ns)
        .collect();
    let pods: Vec<&Pod> = world.pods.iter().filter(|p| p.namespace == ns).collect();
    let mut out = Explanation {
        namespace: ns.to_owned(),
        policies: own.iter().map(|(_, p)| p.name.clone()).collect(),
        mode: if pods.is_empty() { "sets" } else { "pods" },
        entries: Vec::new(),
        error: None,
        partial: filter.pod.is_some() || filter.labels.is_some(),
        pod_selectors: own
            .iter()
            .map(|(_, p)| (p.name.clone(), selector_text(&p.pod_selector, "")))
            .collect(),
    };
    if !pods.is_empty() {
        for pod in pods {
            if filter.pod.as_ref().is_some_and(|f| *f != pod.id()) {
                continue;
            }
            if filter
                .labels
                .as_ref()
                .is_some_and(|l| !l.iter().all(|(k, v)| pod.labels.get(k) == Some(v)))
            {
                continue;
            }
            let selected: Vec<(usize, &Policy)> = own
                .iter()
                .filter(|(_, p)| selects(&p.pod_selector, &pod.labels))
                .copied()
                .collect();
            out.entries.push(entry(
                world,
                pod.name.clone(),
                pod.labels.clone(),
                &selected,
                Vec::new(),
                Some(pod),
                cache,
            ));
        }
        return out;
    }
    if filter.pod.is_some() {
        out.error = Some(format!(
            "the input holds no Pod of namespace {ns}: give the Pods with -f to explain one, or use --labels"
        ));
        return out;
    }
    let items: Vec<Vec<Requirement>> = own
        .iter()
        .map(|(_, p)| p.pod_selector.requirements.clone())
        .collect();
    let mut budget = Budget::new(None);
    let combos = match Space::new(&items, &[], &BTreeMap::new(), &mut budget)
        .and_then(|space| space.combinations(&mut budget))
    {
        Ok(c) => c,
        Err(_) => {
            out.error = Some(format!(
                "its {} policies select pods by more label combinations than Palisade explains ({BUDGET} steps); give Pods with -f to explain each pod, or --labels to explain one set",
                own.len()
            ));
            return out;
        }
    };
    for (bits, labels) in &combos {
        let selected: Vec<(usize, &Policy)> = bits.iter().map(|i| own[i]).collect();
        if let Some(want) = &filter.labels {
            let all: Vec<&LabelSelector> = own.iter().map(|(_, p)| &p.pod_selector).collect();
            let chosen: Vec<bool> = all.iter().map(|s| selects(s, want)).collect();
            if chosen.iter().enumerate().any(|(i, c)| *c != bits.has(i)) {
                continue;
            }
        }
        let mut reqs = Vec::new();
        for (_, p) in &selected {
            reqs.extend(p.pod_selector.requirements.iter().cloned());
        }
        let text = selector_text(&LabelSelector { requirements: reqs }, "");
        // Other policies whose pods these could otherwise be taken for.
        let excluding: Vec<String> = own
            .iter()
            .enumerate()
            .filter(|(i, _)| !bits.has(*i))
            .filter(|(i, _)| combos.iter().any(|(b, _)| bits.is_subset(b) && b.has(*i)))
            .map(|(_, (_, p))| selector_text(&p.pod_selector, "every pod"))
            .collect::<std::collections::BTreeSet<String>>()
            .into_iter()
            .collect();
        let subject = match (text.is_empty(), excluding.is_empty()) {
            (true, true) => "every pod".to_owned(),
            (true, false) => "other pods".to_owned(),
            (false, _) => format!("pods {text}"),
        };
        // A label a selector only requires to exist gets a value no selector names.
        let labels: Labels = labels
            .iter()
            .map(|(k, v)| {
                if v != space::FRESH {
                    return (k.clone(), v.clone());
                }
                let named: Vec<&String> = items
                    .iter()
                    .flatten()
                    .filter(|r| &r.key == k)
                    .flat_map(|r| &r.values)
                    .collect();
                let fresh = (1..)
                    .map(|n| {
                        if n == 1 {
                            "other".to_owned()
                        } else {
                            format!("other-{n}")
                        }
                    })
                    .find(|c| !named.contains(&c))
                    .unwrap_or_default();
                (k.clone(), fresh)
            })
            .collect();
        out.entries.push(entry(
            world, subject, labels, &selected, excluding, None, cache,
        ));
    }
    // The most specific sets first, the catch-all last.
    out.entries.sort_by_key(|e| {
        (
            e.selected_by.is_empty(),
            std::cmp::Reverse(e.selected_by.len()),
            e.subject.clone(),
        )
    });
    out
}

fn entry(
    world: &World,
    subject: String,
    labels: Labels,
    selected: &[(usize, &Policy)],
    excluding: Vec<String>,
    pod: Option<&Pod>,
    cache: &mut Resolved,
) -> Entry {
    let view = |direction: Direction, cache: &mut Resolved| {
        let mut v = View {
            isolated: false,
            isolated_by: Vec::new(),
            allow: Vec::new(),
        };
        for (index, p) in selected {
            let Some(rules) = p.rules(direction) else {
                continue;
            };
            v.isolated = true;
            v.isolated_by.push(p.name.clone());
            for rule in rules {
                v.allow.push(allow(world, *index, p, rule, pod, cache));
            }
        }
        v
    };
    Entry {
        subject,
        labels,
        selected_by: selected.iter().map(|(_, p)| p.name.clone()).collect(),
        excluding,
        ingress: view(Direction::Ingress, cache),
        egress: view(Direction::Egress, cache),
    }
}

fn allow(
    world: &World,
    index: usize,
    policy: &Policy,
    rule: &Rule,
    pod: Option<&Pod>,
    cache: &mut Resolved,
) -> Allow {
    let r = RuleRef::of(policy, rule);
    let key = (index, rule.direction, rule.index);
    let peers = match cache.peers.get(&key) {
        Some(p) => p.clone(),
        None => {
            let names = cache.namespaces.get_or_insert_with(|| {
                let mut all: Vec<String> = world
                    .namespaces
                    .keys()
                    .chain(world.policies.iter().map(|p| &p.namespace))
                    .chain(world.pods.iter().map(|p| &p.namespace))
                    .cloned()
                    .collect();
                all.sort();
                all.dedup();
                all
            });
            let peers = Arc::new(peer_views(world, policy, rule, names));
            cache.peers.insert(key, peers.clone());
            peers
        }
    };
    // Named ports of an ingress rule resolve against the pod itself.
    let resolve_on = (rule.direction == Direction::Ingress)
        .then_some(pod)
        .flatten();
    Allow {
        policy: r.policy,
        rule: r.rule,
        every_peer: rule.peers.is_none(),
        peers,
        ports: ports_view(rule.ports.as_deref(), resolve_on),
    }
}

fn peer_views(world: &World, policy: &Policy, rule: &Rule, names: &[String]) -> Vec<PeerView> {
    rule.peers
        .iter()
        .flatten()
        .map(|peer| match peer {
            Peer::Block {
                cidr,
                except,
                reach,
            } => PeerView::Cidr {
                cidr: cidr.clone(),
                except: except.clone(),
                addresses: reach.cidrs(),
            },
            Peer::Pods { namespaces, pods } => {
                let matched = (!world.pods.is_empty()).then(|| {
                    Arc::new(
                        world
                            .pods
                            .iter()
                            .filter(|p| {
                                super::eval::peer_matches(
                                    world,
                                    &policy.namespace,
                                    peer,
                                    &super::eval::Endpoint::Pod(p),
                                )
                            })
                            .map(Pod::id)
                            .collect(),
                    )
                });
                PeerView::Pods {
                    namespaces: namespaces_view(world, &policy.namespace, namespaces, names),
                    pods: selector_text(pods, ""),
                    matched,
                }
            }
        })
        .collect()
}

fn namespaces_view(
    world: &World,
    own: &str,
    namespaces: &Namespaces,
    names: &[String],
) -> NamespacesView {
    match namespaces {
        Namespaces::Own => NamespacesView {
            own: Some(own.to_owned()),
            selector: None,
            every: false,
            by_name: false,
            known: vec![own.to_owned()],
        },
        Namespaces::Selected(s) => {
            let mut known: Vec<String> = names
                .iter()
                .filter(|n| selects(s, &world.namespace_labels(n)))
                .cloned()
                .collect();
            let names = s
                .requirements
                .iter()
                .find(|r| r.key == NAME_LABEL && r.operator == Operator::In);
            let by_name = names.is_some();
            if let Some(names) = names {
                // Every namespace it selects has one of these names, whether the input holds it or not.
                known = names
                    .values
                    .iter()
                    .filter(|n| selects(s, &world.namespace_labels(n)))
                    .cloned()
                    .collect();
            }
            known.sort();
            known.dedup();
            NamespacesView {
                own: None,
                selector: Some(selector_text(s, "{}")),
                every: s.requirements.is_empty(),
                by_name,
                known,
            }
        }
    }
}

pub(crate) fn ports_view(entries: Option<&[PortEntry]>, resolve_on: Option<&Pod>) -> Ports {
    let Some(entries) = entries else {
        return Ports {
            all: true,
            ..Ports::default()
        };
    };
    let mut ports = Ports::default();
    for e in entries {
        match &e.port {
            PortMatch::All => ports
                .ranges
                .entry(e.protocol.name())
                .or_default()
                .push([1, 65535]),
            PortMatch::Range(a, b) => ports
                .ranges
                .entry(e.protocol.name())
                .or_default()
                .push([*a, *b]),
            PortMatch::Named(n) => ports.named.push(NamedPort {
                protocol: e.protocol.name(),
                name: n.clone(),
                port: resolve_on.map(|p| p.named_port(n, e.protocol)),
            }),
        }
    }
    for list in ports.ranges.values_mut() {
        list.sort_unstable();
        let mut merged: Vec<[u16; 2]> = Vec::new();
        for [a, b] in list.drain(..) {
            match merged.last_mut() {
                Some(last) if u32::from(a) <= u32::from(last[1]) + 1 => last[1] = last[1].max(b),
                _ => merged.push([a, b]),
            }
        }
        *list = merged;
    }
    ports
}

impl Ports {
    /// `every port`, or a list such as `TCP 80, TCP 8000-8080, UDP dns (53)`.
    pub fn text(&self) -> String {
        if self.all {
            return "every port".to_owned();
        }
        let mut parts = Vec::new();
        for (proto, ranges) in &self.ranges {
            for [a, b] in ranges {
                parts.push(match (a, b) {
                    (1, 65535) => format!("every {proto} port"),
                    (a, b) if a == b => format!("{proto} {a}"),
                    (a, b) => format!("{proto} {a}-{b}"),
                });
            }
        }
        for n in &self.named {
            parts.push(match n.port {
                Some(Some(p)) => format!("{} {} ({p})", n.protocol, n.name),
                Some(None) => format!("{} {} (no such port: matches nothing)", n.protocol, n.name),
                None => format!("{} {}", n.protocol, n.name),
            });
        }
        parts.join(", ")
    }
}

impl PeerView {
    /// `pods app=api in namespace orders`, `every pod in namespaces team=a (known: x, y)`,
    /// `0.0.0.0/0 except 169.254.169.254/32`.
    pub fn text(&self) -> String {
        match self {
            PeerView::Cidr { cidr, except, .. } if except.is_empty() => cidr.clone(),
            PeerView::Cidr { cidr, except, .. } => format!("{cidr} except {}", except.join(", ")),
            PeerView::Pods {
                namespaces, pods, ..
            } => {
                let pods = if pods.is_empty() {
                    "every pod".to_owned()
                } else {
                    format!("pods {pods}")
                };
                let place = match (&namespaces.own, &namespaces.selector) {
                    (Some(own), _) => format!("in {own}"),
                    (None, _) if namespaces.every => "in every namespace".to_owned(),
                    (None, Some(s)) if namespaces.by_name => {
                        let noun = if namespaces.known.len() == 1 {
                            "namespace"
                        } else {
                            "namespaces"
                        };
                        format!("in {noun} {}", namespaces.known.join(", "))
                    }
                    (None, Some(s)) => {
                        let known = match namespaces.known.len() {
                            0 => "none known".to_owned(),
                            n if n <= 5 => format!("known: {}", namespaces.known.join(", ")),
                            n => format!(
                                "known: {} and {} more",
                                namespaces.known[..5].join(", "),
                                n - 5
                            ),
                        };
                        format!("in namespaces {s} ({known})")
                    }
                    (None, None) => String::new(),
                };
                format!("{pods} {place}")
            }
        }
    }
}

/// Writes the explanations as text: per namespace, each pod or set with what it may receive
/// (`in`) and send (`out`). With more than `detail_limit` namespaces and no filter, one summary
/// line per namespace instead, saying how to see the rules.
pub fn write_text(
    out: &mut dyn std::io::Write,
    explanations: &[Explanation],
    summary: bool,
) -> std::io::Result<()> {
    if summary {
        writeln!(
            out,
            "{} namespaces: one line each (give -n NAMESPACE, --pod NAMESPACE/POD or --labels to see the rules)",
            explanations.len()
        )?;
        for e in explanations {
            let open = |f: fn(&Entry) -> &View| e.entries.iter().filter(|x| !f(x).isolated).count();
            let rules = |f: fn(&Entry) -> &View| {
                e.entries
                    .iter()
                    .map(|x| f(x).allow.len())
                    .max()
                    .unwrap_or(0)
            };
            let noun = if e.mode == "pods" { "pods" } else { "pod sets" };
            match &e.error {
                Some(err) => writeln!(
                    out,
                    "{}: {} NetworkPolicies; not explained: {err}",
                    e.namespace,
                    e.policies.len()
                )?,
                None => writeln!(
                    out,
                    "{}: {} NetworkPolicies, {} {noun}; not isolated: {} in, {} out; most rules: {} in, {} out",
                    e.namespace,
                    e.policies.len(),
                    e.entries.len(),
                    open(|x| &x.ingress),
                    open(|x| &x.egress),
                    rules(|x| &x.ingress),
                    rules(|x| &x.egress),
                )?,
            }
        }
        return Ok(());
    }
    for (i, e) in explanations.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        let noun = if e.policies.len() == 1 {
            "NetworkPolicy"
        } else {
            "NetworkPolicies"
        };
        writeln!(
            out,
            "namespace {} ({} {noun})",
            e.namespace,
            e.policies.len()
        )?;
        if let Some(err) = &e.error {
            writeln!(out, "  not explained: {err}")?;
            continue;
        }
        let mut rows: Vec<[String; 4]> = Vec::new();
        let mut heads: Vec<(usize, String)> = Vec::new();
        for entry in &e.entries {
            let by = if entry.selected_by.is_empty() {
                "no policy selects these pods".to_owned()
            } else {
                entry.selected_by.join(", ")
            };
            let head = if entry.excluding.is_empty() {
                format!("{} [{by}]", entry.subject)
            } else {
                format!(
                    "{} [{by}] (not {})",
                    entry.subject,
                    entry.excluding.join("; ")
                )
            };
            heads.push((rows.len(), head));
            for (dir, view) in [("in", &entry.ingress), ("out", &entry.egress)] {
                if !view.isolated {
                    rows.push([
                        dir.into(),
                        "everything (no policy isolates these pods)".into(),
                        String::new(),
                        String::new(),
                    ]);
                    continue;
                }
                if view.allow.is_empty() {
                    rows.push([
                        dir.into(),
                        format!("nothing (isolated by {})", view.isolated_by.join(", ")),
                        String::new(),
                        String::new(),
                    ]);
                    continue;
                }
                for a in &view.allow {
                    let place = format!("{} {}", a.policy, a.rule);
                    let ports = a.ports.text();
                    if a.every_peer {
                        let who = if dir == "in" {
                            "every source"
                        } else {
                            "every destination"
                        };
                        rows.push([dir.into(), who.into(), ports, place]);
                        continue;
                    }
                    for p in a.peers.iter() {
                        rows.push([dir.into(), p.text(), ports.clone(), place.clone()]);
                    }
                }
            }
        }
        let width = |c: usize| {
            rows.iter()
                .filter(|r| !r[3].is_empty())
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        };
        let (w1, w2) = (width(1), width(2));
        let mut next_head = heads.iter().peekable();
        for (n, r) in rows.iter().enumerate() {
            while let Some((at, head)) = next_head.peek() {
                if *at != n {
                    break;
                }
                writeln!(out, "  {head}")?;
                next_head.next();
            }
            let line = if r[3].is_empty() {
                format!("    {:3}  {}", r[0], r[1])
            } else {
                format!("    {:3}  {:w1$}  {:w2$}  {}", r[0], r[1], r[2], r[3])
            };
            writeln!(out, "{}", line.trim_end())?;
        }
    }
    Ok(())
}
