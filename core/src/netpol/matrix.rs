//! Communication matrices: the flows a team declares, judged against the flows the cluster's
//! NetworkPolicies make effective ([`super::flows`]).
//!
//! A matrix is the parameters of a `PalisadeCommunicationMatrix` constraint
//! (`policies/zero-trust/communication-matrix/`). Namespaces opt in by label
//! (`namespaceSelector`); for their pods, in the directions the matrix governs, every effective
//! flow must be allowed by one of its flows, and every flow marked `required` must be effective.
//! A flow's `scope` says which end it speaks for: the destination's ingress, the source's
//! egress, or both.
//!
//! [`Matrix::parse`] reads the parameters (errors name the field); [`facts`] judges one
//! review (a NetworkPolicy, a Pod or a workload, a Namespace) by what it adds, for
//! `input.palisade.matrix`; [`audit`] judges the whole cluster.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;
use serde_json::{Value, json};

use super::flows::{End, Flow, Flows, Focus, Net, Opening, PortSet, Refine, Role, SideView, Site};
use super::ip::IpSet;
use super::judge::Universe;
use super::model::{Direction, Labels, Namespace, Policy, PortEntry, PortMatch, Protocol, selects};
use super::space::{Budget, Stop};
use crate::admission::{Operation, Review};
use crate::inventory::Inventory;
use crate::matcher::{LabelSelector, Requirement};
use crate::policy::OutOfTime;

/// The constraint kind whose parameters are a matrix.
pub const KIND: &str = "PalisadeCommunicationMatrix";

/// Where `input.palisade.matrix` is read.
pub const FACTS: &str = "input.palisade.matrix";

/// How many findings one review reports in full (the rest are counted).
const SHOWN: usize = 20;

/// A communication matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// The constraint's name.
    pub name: String,
    /// Which namespaces opt in.
    pub opt_in: LabelSelector,
    /// The directions it governs for opted-in pods.
    pub directions: Vec<Direction>,
    /// The flows it allows (or requires).
    pub flows: Vec<Entry>,
}

/// One flow of a matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// `name`, unique in the matrix.
    pub name: String,
    /// `from`.
    pub from: EndSpec,
    /// `to`.
    pub to: EndSpec,
    /// `ports` (absent: every port).
    pub ports: PortSet,
    /// Speaks for the destination's ingress.
    pub ingress: bool,
    /// Speaks for the source's egress.
    pub egress: bool,
    /// Must be effective.
    pub required: bool,
}

/// One end of a matrix flow.
#[derive(Debug, Clone, PartialEq)]
pub enum EndSpec {
    /// Pods of some namespaces.
    Pods {
        /// Which namespaces.
        namespaces: Namespaces,
        /// `podSelector` (absent: every pod).
        pods: LabelSelector,
    },
    /// Addresses outside the cluster.
    Addresses {
        /// What it covers.
        set: IpSet,
        /// As written: `internet`, `0.0.0.0/0 except 10.0.0.0/8`.
        text: String,
    },
}

/// The namespaces of a pod end.
#[derive(Debug, Clone, PartialEq)]
pub enum Namespaces {
    /// Neither `namespaces` nor `namespaceSelector`: the namespace of the other end.
    Same,
    /// `namespaces`: by name.
    Names(Vec<String>),
    /// `namespaceSelector`.
    Selector(LabelSelector),
}

fn unknown(v: &Value, allowed: &[&str], at: &str) -> Result<(), String> {
    if let Some(map) = v.as_object() {
        for k in map.keys() {
            if !allowed.contains(&k.as_str()) {
                return Err(format!(
                    "{at}.{k}: unknown field; write one of {}",
                    allowed.join(", ")
                ));
            }
        }
    }
    Ok(())
}

fn strings(v: &Value, at: &str) -> Result<Vec<String>, String> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(list) => list
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{at}[{i}]: must be a string"))
            })
            .collect(),
        _ => Err(format!("{at}: must be a list of strings")),
    }
}

impl EndSpec {
    fn parse(v: &Value, at: &str) -> Result<Self, String> {
        if !v.is_object() {
            return Err(format!(
                "{at}: required, a mapping: namespaces or namespaceSelector with podSelector, or ipBlock, or internet: true"
            ));
        }
        unknown(
            v,
            &[
                "namespaces",
                "namespaceSelector",
                "podSelector",
                "ipBlock",
                "internet",
            ],
            at,
        )?;
        let pods_given = ["namespaces", "namespaceSelector", "podSelector"]
            .iter()
            .any(|k| !v[k].is_null());
        let kinds = usize::from(pods_given)
            + usize::from(!v["ipBlock"].is_null())
            + usize::from(!v["internet"].is_null());
        if kinds > 1 {
            return Err(format!(
                "{at}: give pods (namespaces, namespaceSelector, podSelector), ipBlock or internet, not several: write two flows"
            ));
        }
        if !v["internet"].is_null() {
            if v["internet"] != Value::Bool(true) {
                return Err(format!("{at}.internet: write `internet: true`"));
            }
            return Ok(EndSpec::Addresses {
                set: IpSet::public().clone(),
                text: "the internet".to_owned(),
            });
        }
        if !v["ipBlock"].is_null() {
            let b = &v["ipBlock"];
            unknown(b, &["cidr", "except"], &format!("{at}.ipBlock"))?;
            let cidr = b["cidr"]
                .as_str()
                .ok_or_else(|| format!("{at}.ipBlock.cidr: required, a CIDR such as 0.0.0.0/0"))?;
            let except = strings(&b["except"], &format!("{at}.ipBlock.except"))?;
            let set = IpSet::block(cidr, &except).map_err(|e| format!("{at}.ipBlock: {e}"))?;
            let text = if except.is_empty() {
                cidr.to_owned()
            } else {
                format!("{cidr} except {}", except.join(", "))
            };
            return Ok(EndSpec::Addresses { set, text });
        }
        let namespaces = match (&v["namespaces"], &v["namespaceSelector"]) {
            (Value::Null, Value::Null) => Namespaces::Same,
            (n, Value::Null) => {
                let names = strings(n, &format!("{at}.namespaces"))?;
                if names.is_empty() {
                    return Err(format!(
                        "{at}.namespaces: empty; name namespaces, or use namespaceSelector: {{}} for every namespace"
                    ));
                }
                Namespaces::Names(names)
            }
            (Value::Null, s) => {
                Namespaces::Selector(LabelSelector::parse(s, &format!("{at}.namespaceSelector"))?)
            }
            _ => {
                return Err(format!(
                    "{at}: give namespaces or namespaceSelector, not both"
                ));
            }
        };
        let pods = match &v["podSelector"] {
            Value::Null => LabelSelector::default(),
            s => LabelSelector::parse(s, &format!("{at}.podSelector"))?,
        };
        Ok(EndSpec::Pods { namespaces, pods })
    }

    /// `pods app=api in payments`, `the internet`.
    pub fn text(&self) -> String {
        match self {
            EndSpec::Addresses { text, .. } => text.clone(),
            EndSpec::Pods { namespaces, pods } => {
                let who = super::model::selector_text(pods, "every pod");
                let who = if who == "every pod" {
                    who
                } else {
                    format!("pods {who}")
                };
                match namespaces {
                    Namespaces::Same => format!("{who} of the same namespace"),
                    Namespaces::Names(n) => format!("{who} in {}", n.join(", ")),
                    Namespaces::Selector(s) => format!(
                        "{who} in namespaces {}",
                        super::model::selector_text(s, "(every namespace)")
                    ),
                }
            }
        }
    }

    /// Whether `end` (whose flow's other end is `other`) is one of these.
    fn covers(&self, end: &End, other: &End) -> bool {
        match (self, end) {
            (EndSpec::Addresses { set, .. }, End::Addresses(a)) => set.contains(a),
            (EndSpec::Pods { namespaces, pods }, End::Pods { site, labels, .. }) => {
                self.namespace_may_be(namespaces, site, other.site()) && selects(pods, labels)
            }
            _ => false,
        }
    }

    /// Whether pods with `labels` may be of this end (addresses: any pods, for the other end).
    fn pods_may_be(&self, labels: &Labels) -> bool {
        match self {
            EndSpec::Pods { pods, .. } => selects(pods, labels),
            EndSpec::Addresses { .. } => true,
        }
    }

    fn namespace_may_be(&self, namespaces: &Namespaces, site: &Site, other: Option<&Site>) -> bool {
        match namespaces {
            Namespaces::Same => other.is_some_and(|o| o.name == site.name && !site.is_new()),
            Namespaces::Names(n) => !site.is_new() && n.contains(&site.name),
            Namespaces::Selector(s) => selects(s, &site.labels),
        }
    }
}

fn parse_ports(v: &Value, at: &str) -> Result<PortSet, String> {
    let list = match v {
        Value::Null => return Ok(PortSet::all()),
        Value::Array(list) if list.is_empty() => {
            return Err(format!(
                "{at}: empty; leave it out for every port, or list the ports"
            ));
        }
        Value::Array(list) => list,
        _ => {
            return Err(format!(
                "{at}: must be a list of {{protocol, port, endPort}}"
            ));
        }
    };
    let mut entries = Vec::new();
    for (i, p) in list.iter().enumerate() {
        let at = format!("{at}[{i}]");
        unknown(p, &["protocol", "port", "endPort"], &at)?;
        let protocol = match &p["protocol"] {
            Value::Null => Protocol::Tcp,
            v => v.as_str().and_then(Protocol::parse).ok_or_else(|| {
                format!("{at}.protocol: {v} is not TCP, UDP or SCTP (upper case)")
            })?,
        };
        let port = match (&p["port"], &p["endPort"]) {
            (Value::Null, Value::Null) => PortMatch::All,
            (Value::String(name), Value::Null) => PortMatch::Named(name.clone()),
            (n, end) => {
                let first = n
                    .as_u64()
                    .filter(|n| (1..=65535).contains(n))
                    .ok_or_else(|| format!("{at}.port: {n} is not a port number (1-65535)"))?
                    as u16;
                let last = match end {
                    Value::Null => first,
                    e => e
                        .as_u64()
                        .filter(|e| (u64::from(first)..=65535).contains(e))
                        .ok_or_else(|| {
                            format!("{at}.endPort: {e} is not a port from {first} to 65535")
                        })? as u16,
                };
                PortMatch::Range(first, last)
            }
        };
        entries.push(PortEntry { protocol, port });
    }
    Ok(PortSet::of(Some(&entries)))
}

impl Matrix {
    /// Reads a constraint's `spec.parameters`; `name` is the constraint's. Every error names
    /// the field under `spec.parameters` and what to write.
    pub fn parse(name: &str, parameters: &Value) -> Result<Self, String> {
        let at = "spec.parameters";
        if !parameters.is_object() {
            return Err(format!(
                "{at}: required: namespaceSelector (which namespaces opt in) and flows"
            ));
        }
        unknown(
            parameters,
            &["namespaceSelector", "directions", "flows"],
            at,
        )?;
        let opt_in = match &parameters["namespaceSelector"] {
            Value::Null => {
                return Err(format!(
                    "{at}.namespaceSelector: required: the label selector of the namespaces that opt in"
                ));
            }
            s => LabelSelector::parse(s, &format!("{at}.namespaceSelector"))?,
        };
        let directions = match &parameters["directions"] {
            Value::Null => Direction::BOTH.to_vec(),
            v => {
                let mut out = Vec::new();
                for (i, d) in strings(v, &format!("{at}.directions"))?.iter().enumerate() {
                    out.push(match d.as_str() {
                        "Ingress" => Direction::Ingress,
                        "Egress" => Direction::Egress,
                        other => {
                            return Err(format!(
                                "{at}.directions[{i}]: {other:?} is not Ingress or Egress"
                            ));
                        }
                    });
                }
                if out.is_empty() {
                    return Err(format!(
                        "{at}.directions: empty; leave it out to govern both directions"
                    ));
                }
                out
            }
        };
        let list = match &parameters["flows"] {
            Value::Array(l) => l,
            Value::Null => {
                return Err(format!(
                    "{at}.flows: required (an empty list forbids every flow of opted-in pods)"
                ));
            }
            _ => return Err(format!("{at}.flows: must be a list of flows")),
        };
        let mut flows: Vec<Entry> = Vec::new();
        for (i, f) in list.iter().enumerate() {
            let at = format!("{at}.flows[{i}]");
            unknown(
                f,
                &["name", "from", "to", "ports", "scope", "required"],
                &at,
            )?;
            let name = f["name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| format!("{at}.name: required, a name messages can use"))?;
            if flows.iter().any(|e| e.name == name) {
                return Err(format!(
                    "{at}.name: {name:?} is used twice; names are unique"
                ));
            }
            let from = EndSpec::parse(&f["from"], &format!("{at}.from"))?;
            let to = EndSpec::parse(&f["to"], &format!("{at}.to"))?;
            if matches!(from, EndSpec::Addresses { .. }) && matches!(to, EndSpec::Addresses { .. })
            {
                return Err(format!(
                    "{at}: from and to are both addresses; one end must be pods"
                ));
            }
            for (end, field, other) in [(&from, "from", &to), (&to, "to", &from)] {
                if let (
                    EndSpec::Pods {
                        namespaces: Namespaces::Same,
                        ..
                    },
                    EndSpec::Addresses { .. },
                ) = (end, other)
                {
                    return Err(format!(
                        "{at}.{field}: pods without namespaces or namespaceSelector are in the other end's namespace, and the other end is addresses: name the namespaces (namespaces: [...] or namespaceSelector)"
                    ));
                }
            }
            let (ingress, egress) = match f["scope"].as_str() {
                None if f["scope"].is_null() => (true, true),
                Some("Both") => (true, true),
                Some("Ingress") => (true, false),
                Some("Egress") => (false, true),
                _ => {
                    return Err(format!(
                        "{at}.scope: {} is not Ingress (the destination's), Egress (the source's) or Both",
                        f["scope"]
                    ));
                }
            };
            let required = match &f["required"] {
                Value::Null => false,
                Value::Bool(b) => *b,
                v => return Err(format!("{at}.required: {v} is not true or false")),
            };
            flows.push(Entry {
                name: name.to_owned(),
                from,
                to,
                ports: parse_ports(&f["ports"], &format!("{at}.ports"))?,
                ingress,
                egress,
                required,
            });
        }
        Ok(Matrix {
            name: name.to_owned(),
            opt_in,
            directions,
            flows,
        })
    }

    /// Whether the namespace opts in.
    pub fn opted_in(&self, site: &Site) -> bool {
        selects(&self.opt_in, &site.labels)
    }

    fn governs_direction(&self, role: Role) -> bool {
        self.directions.contains(&match role {
            Role::Source => Direction::Egress,
            Role::Destination => Direction::Ingress,
        })
    }

    /// The ports the matrix allows a flow from `from` to `to` as the ingress (or egress) of its
    /// end.
    fn allowed(&self, from: &End, to: &End, role: Role) -> PortSet {
        let mut out = PortSet::empty();
        for e in &self.flows {
            let speaks = match role {
                Role::Destination => e.ingress,
                Role::Source => e.egress,
            };
            if speaks && e.from.covers(from, to) && e.to.covers(to, from) {
                out = out.union(&e.ports);
            }
        }
        out
    }

    /// The flows of the matrix nearest to `flow`: same ends (other ports), or the same end
    /// that governs.
    fn near(&self, from: &End, to: &End, role: Role) -> Vec<String> {
        let both: Vec<String> = self
            .flows
            .iter()
            .filter(|e| e.from.covers(from, to) && e.to.covers(to, from))
            .map(|e| format!("{:?} allows {}", e.name, e.ports))
            .collect();
        if !both.is_empty() {
            return both;
        }
        self.flows
            .iter()
            .filter(|e| match role {
                Role::Destination => e.to.covers(to, from),
                Role::Source => e.from.covers(from, to),
            })
            .take(3)
            .map(|e| format!("{:?} ({} -> {})", e.name, e.from.text(), e.to.text()))
            .collect()
    }

    /// What of `flow` (in net `k`) the matrix forbids, per governed end: each end is judged by
    /// its own policies (the destination's ingress, the source's egress), whatever the other
    /// end allows, so that no opted-in namespace relies on another's policies to hold a flow
    /// back.
    pub fn judge(&self, flow: &Flow, k: usize) -> Vec<Breach> {
        let mut out = Vec::new();
        // The ends as net `k` has them: a Namespace change judges the new labels.
        let (from, to) = flow.ends_at(k);
        for (role, end, view) in [
            (Role::Destination, &to, &flow.ingress[k]),
            (Role::Source, &from, &flow.egress[k]),
        ] {
            let Some(site) = end.site() else { continue };
            if view.ports.is_empty() || !self.governs(role, site) {
                continue;
            }
            let rest = view.ports.minus(&self.allowed(&from, &to, role));
            if rest.is_empty() {
                continue;
            }
            let direction = match role {
                Role::Destination => "ingress",
                Role::Source => "egress",
            };
            let opened_by = match &view.opening {
                // Only the rules that open the forbidden ports.
                Opening::Rules { .. } => view.rules_opening(&rest),
                Opening::Open => vec![format!(
                    "no NetworkPolicy of {} isolates its {direction}",
                    site.text()
                )],
                Opening::Outside | Opening::Denied { .. } => Vec::new(),
            };
            out.push(Breach {
                matrix: self.name.clone(),
                side: format!("the {direction} of {}", site.text()),
                direction,
                from: from.text(),
                to: to.text(),
                ports: rest,
                opened_by,
                near: self.near(&from, &to, role),
                namespace: site.name.clone(),
                effective: !flow.ports(k).is_empty(),
            });
        }
        out
    }
}

impl Refine for Matrix {
    fn pod_items(&self, role: Role, site: &Site, other: Option<&Site>) -> Vec<Vec<Requirement>> {
        let mut out = Vec::new();
        for e in &self.flows {
            let (spec, far) = match role {
                Role::Source => (&e.from, &e.to),
                Role::Destination => (&e.to, &e.from),
            };
            // Only entries whose other end may be the flow's other end split these pods.
            let far_fits = match (far, other) {
                (EndSpec::Addresses { .. }, None) => true,
                (EndSpec::Pods { namespaces, .. }, Some(o)) => {
                    far.namespace_may_be(namespaces, o, Some(site))
                }
                _ => false,
            };
            if let EndSpec::Pods { namespaces, pods } = spec
                && far_fits
                && spec.namespace_may_be(namespaces, site, other)
            {
                out.push(pods.requirements.clone());
            }
        }
        out
    }

    fn namespace_items(&self) -> Vec<Vec<Requirement>> {
        let mut out = vec![self.opt_in.requirements.clone()];
        for e in &self.flows {
            for spec in [&e.from, &e.to] {
                if let EndSpec::Pods {
                    namespaces: Namespaces::Selector(s),
                    ..
                } = spec
                {
                    out.push(s.requirements.clone());
                }
            }
        }
        out
    }

    fn address_sets(&self) -> Vec<IpSet> {
        self.flows
            .iter()
            .flat_map(|e| [&e.from, &e.to])
            .filter_map(|s| match s {
                EndSpec::Addresses { set, .. } => Some(set.clone()),
                EndSpec::Pods { .. } => None,
            })
            .collect()
    }

    fn governs(&self, role: Role, site: &Site) -> bool {
        self.governs_direction(role) && self.opted_in(site)
    }
}

/// A matrix that governs only the ends in one namespace: what a change of that namespace's
/// policies (or of a pod there) can add is at those ends alone, since every other end is
/// judged on its own policies, which did not change.
struct Here<'m> {
    matrix: &'m Matrix,
    namespace: &'m str,
}

impl Refine for Here<'_> {
    fn pod_items(&self, role: Role, site: &Site, other: Option<&Site>) -> Vec<Vec<Requirement>> {
        self.matrix.pod_items(role, site, other)
    }
    fn namespace_items(&self) -> Vec<Vec<Requirement>> {
        self.matrix.namespace_items()
    }
    fn address_sets(&self) -> Vec<IpSet> {
        self.matrix.address_sets()
    }
    fn governs(&self, role: Role, site: &Site) -> bool {
        site.name == self.namespace && self.matrix.governs(role, site)
    }
}

/// Several matrices as one refinement that keeps every effective flow, and what each governed
/// end allows on its own: for pictures and diffs judged against matrices.
pub struct Matrices<'m>(pub &'m [Matrix]);

impl Refine for Matrices<'_> {
    fn pod_items(&self, role: Role, site: &Site, other: Option<&Site>) -> Vec<Vec<Requirement>> {
        self.0
            .iter()
            .flat_map(|m| m.pod_items(role, site, other))
            .collect()
    }
    fn namespace_items(&self) -> Vec<Vec<Requirement>> {
        self.0.iter().flat_map(|m| m.namespace_items()).collect()
    }
    fn address_sets(&self) -> Vec<IpSet> {
        self.0.iter().flat_map(|m| m.address_sets()).collect()
    }
    fn governs(&self, role: Role, site: &Site) -> bool {
        self.0.iter().any(|m| m.governs(role, site))
    }
    fn every_flow(&self) -> bool {
        true
    }
}

/// A flow the matrix forbids, at one governed end.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Breach {
    /// The matrix (constraint) name.
    pub matrix: String,
    /// The governed end whose policies allow it: `the ingress of payments`.
    pub side: String,
    /// `ingress` or `egress`.
    pub direction: &'static str,
    /// The source.
    pub from: String,
    /// The destination.
    pub to: String,
    /// The forbidden ports.
    pub ports: PortSet,
    /// The rules of that end that open it (or "no NetworkPolicy ... isolates").
    pub opened_by: Vec<String>,
    /// The matrix's nearest flows.
    pub near: Vec<String>,
    /// The governed end's namespace.
    pub namespace: String,
    /// Whether the other end allows it too (the flow is effective), not only this end.
    pub effective: bool,
}

impl Breach {
    /// As JSON, with its message.
    pub fn json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        v["message"] = Value::String(self.message());
        v
    }

    /// The message: the flow, the rules that open it, and what the matrix says.
    pub fn message(&self) -> String {
        let near = if self.near.is_empty() {
            String::new()
        } else {
            format!("; its nearest flows: {}", self.near.join("; "))
        };
        format!(
            "{} lets {} reach {} on {} ({}): communication matrix {:?} has no flow for it{near}",
            self.side,
            self.from,
            self.to,
            self.ports,
            if self.opened_by.is_empty() {
                "opened by nothing named".to_owned()
            } else {
                format!("opened by {}", self.opened_by.join(", "))
            },
            self.matrix,
        )
    }
}

/// A required flow the policies block.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Blocked {
    /// The matrix (constraint) name.
    pub matrix: String,
    /// The matrix flow's name.
    pub flow: String,
    /// The source pods (or addresses).
    pub from: String,
    /// The destination.
    pub to: String,
    /// The ports the policies block.
    pub ports: PortSet,
    /// Why: which side denies, and by which policies.
    pub blocked_by: Vec<String>,
    /// The policies (`namespace/name`) that isolate the blocked ends.
    #[serde(skip)]
    pub policies: Vec<String>,
    /// The known namespaces of its ends.
    #[serde(skip)]
    pub namespaces: Vec<String>,
}

impl Blocked {
    /// As JSON, with its message.
    pub fn json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        v["message"] = Value::String(self.message());
        v
    }

    /// The message.
    pub fn message(&self) -> String {
        format!(
            "required flow {:?} of matrix {:?} is blocked: {} cannot reach {} on {}: {}",
            self.flow,
            self.matrix,
            self.from,
            self.to,
            self.ports,
            self.blocked_by.join("; ")
        )
    }
}

fn blocked_text(side: &str, end: &End, view: &SideView) -> Option<String> {
    match &view.opening {
        Opening::Denied { policies } => Some(format!(
            "the {side} of {} is isolated by {} and no rule allows it",
            end.text(),
            policies.join(", ")
        )),
        Opening::Rules { rules } => Some(format!(
            "the {side} of {} allows only {} ({})",
            end.text(),
            view.ports,
            rules.join(", ")
        )),
        Opening::Open | Opening::Outside => None,
    }
}

/// The required flows of the matrix that touch `namespace` (all, when `None`) and that the
/// last of `nets` blocks: per (flow, source set, destination set). With two nets, only what
/// the last blocks and the first did not (what a change blocks); the nets share one refinement
/// of the pods, so a set is the same pods in both.
fn required(
    matrix: &Matrix,
    nets: &[&Net],
    namespace: Option<&str>,
    budget: &mut Budget,
) -> Result<Vec<Blocked>, Stop> {
    let mut out = Vec::new();
    let last = nets.len() - 1;
    let sites = |spec: &EndSpec, other: Option<&str>| -> Vec<String> {
        let mut names: Vec<String> = match spec {
            EndSpec::Addresses { .. } => Vec::new(),
            EndSpec::Pods { namespaces, .. } => match namespaces {
                Namespaces::Same => match other {
                    Some(o) => vec![o.to_owned()],
                    None => nets
                        .iter()
                        .flat_map(|n| n.namespaces().map(|s| s.name))
                        .collect(),
                },
                Namespaces::Names(n) => n.clone(),
                Namespaces::Selector(s) => nets
                    .iter()
                    .flat_map(|n| n.namespaces())
                    .filter(|site| selects(s, &site.labels))
                    .map(|s| s.name)
                    .collect(),
            },
        };
        names.sort();
        names.dedup();
        names
    };
    for e in matrix.flows.iter().filter(|e| e.required) {
        // Only the entry's own selectors split the pods: every pod it names must get through.
        let only = OnlyEntry(e);
        let flows = Flows::new(nets, &only).keeping_empty();
        let touches = |s: &str| namespace.is_none_or(|n| n == s);
        let mut found = Vec::new();
        match (&e.from, &e.to) {
            (EndSpec::Pods { .. }, EndSpec::Pods { .. }) => {
                for s in sites(&e.from, None) {
                    for d in sites(&e.to, Some(&s)) {
                        if touches(&s) || touches(&d) {
                            found.extend(flows.between(&s, &d, budget)?);
                        }
                    }
                }
            }
            (EndSpec::Pods { .. }, EndSpec::Addresses { .. }) => {
                for s in sites(&e.from, None).into_iter().filter(|s| touches(s)) {
                    found.extend(flows.outside(&s, Direction::Egress, budget)?);
                }
            }
            (EndSpec::Addresses { .. }, EndSpec::Pods { .. }) => {
                for d in sites(&e.to, None).into_iter().filter(|s| touches(s)) {
                    found.extend(flows.outside(&d, Direction::Ingress, budget)?);
                }
            }
            _ => {}
        }
        for f in found {
            let (from, to) = f.ends_at(last);
            if !(e.from.covers(&from, &to) && e.to.covers(&to, &from)) {
                continue;
            }
            // The matrix requires flows of opted-in namespaces only.
            if ![&from, &to]
                .iter()
                .any(|end| end.site().is_some_and(|s| matrix.opted_in(s)))
            {
                continue;
            }
            let mut missing = e.ports.minus(&f.ports(last));
            if last > 0 {
                missing = missing.minus(&e.ports.minus(&f.ports(0)));
            }
            if missing.is_empty() {
                continue;
            }
            let mut why = Vec::new();
            let mut policies = Vec::new();
            for (side, end, view) in [
                ("egress", &f.from, &f.egress[last]),
                ("ingress", &f.to, &f.ingress[last]),
            ] {
                if view.ports.contains(&missing) {
                    continue;
                }
                why.extend(blocked_text(side, end, view));
                match &view.opening {
                    Opening::Denied { policies: p } => {
                        policies.extend(p.iter().map(|x| x.to_string()))
                    }
                    Opening::Rules { rules } => policies.extend(
                        rules
                            .iter()
                            .filter_map(|r| r.split_once(' ').map(|(p, _)| p.to_owned())),
                    ),
                    Opening::Open | Opening::Outside => {}
                }
            }
            policies.sort();
            policies.dedup();
            out.push(Blocked {
                matrix: matrix.name.clone(),
                flow: e.name.clone(),
                from: f.from.text(),
                to: f.to.text(),
                ports: missing,
                blocked_by: why,
                policies,
                namespaces: [&f.from, &f.to]
                    .iter()
                    .filter_map(|e| e.site())
                    .map(|s| s.name.clone())
                    .collect(),
            });
        }
    }
    out.sort_by(|a, b| (&a.flow, &a.from, &a.to).cmp(&(&b.flow, &b.from, &b.to)));
    out.dedup();
    Ok(out)
}

/// Refines by one matrix entry only, and governs its ends: for required flows.
struct OnlyEntry<'e>(&'e Entry);

impl Refine for OnlyEntry<'_> {
    fn pod_items(&self, role: Role, site: &Site, other: Option<&Site>) -> Vec<Vec<Requirement>> {
        let spec = match role {
            Role::Source => &self.0.from,
            Role::Destination => &self.0.to,
        };
        match spec {
            EndSpec::Pods { namespaces, pods }
                if spec.namespace_may_be(namespaces, site, other) =>
            {
                vec![pods.requirements.clone()]
            }
            _ => Vec::new(),
        }
    }
    fn namespace_items(&self) -> Vec<Vec<Requirement>> {
        Vec::new()
    }
    fn address_sets(&self) -> Vec<IpSet> {
        [&self.0.from, &self.0.to]
            .iter()
            .filter_map(|s| match s {
                EndSpec::Addresses { set, .. } => Some(set.clone()),
                EndSpec::Pods { .. } => None,
            })
            .collect()
    }
    fn wants(&self, role: Role, _site: &Site, labels: &Labels) -> bool {
        match role {
            Role::Source => &self.0.from,
            Role::Destination => &self.0.to,
        }
        .pods_may_be(labels)
    }
    fn governs(&self, role: Role, site: &Site) -> bool {
        let spec = match role {
            Role::Source => &self.0.from,
            Role::Destination => &self.0.to,
        };
        match spec {
            EndSpec::Pods { namespaces, .. } => match namespaces {
                Namespaces::Same => !site.is_new(),
                Namespaces::Names(n) => n.contains(&site.name),
                Namespaces::Selector(s) => !site.is_new() && selects(s, &site.labels),
            },
            EndSpec::Addresses { .. } => false,
        }
    }
}

/// What a matrix finds in a whole cluster: per opted-in namespace, the forbidden and the
/// blocked required flows, and how many pod sets conform.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Audit {
    /// Forbidden flows.
    pub forbidden: Vec<Breach>,
    /// Required flows the policies block.
    pub blocked: Vec<Blocked>,
    /// Namespaces that could not be judged, and why.
    pub errors: BTreeMap<String, String>,
    /// Opted-in pod sets (per namespace and direction governed) judged.
    pub sets: usize,
    /// Of those, the ones with no forbidden flow.
    pub conforming: usize,
}

impl Audit {
    /// The share of opted-in pod sets with no forbidden flow (1 when none is opted in).
    pub fn coverage(&self) -> f64 {
        if self.sets == 0 {
            1.0
        } else {
            self.conforming as f64 / self.sets as f64
        }
    }
}

/// Judges every opted-in namespace of `net` against `matrix`.
pub fn audit(matrix: &Matrix, net: &Net, deadline: Option<Instant>) -> Audit {
    let mut out = Audit::default();
    let nets = [net];
    let flows = Flows::new(&nets, matrix);
    let sites: Vec<Site> = net.namespaces().filter(|s| matrix.opted_in(s)).collect();
    for site in &sites {
        let mut budget = Budget::new(deadline);
        let focus = Focus {
            namespace: site.name.clone(),
            labels: None,
            directions: matrix.directions.clone(),
        };
        let found = match flows.of(&focus, &mut budget) {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                out.errors.insert(site.name.clone(), e);
                continue;
            }
            Err(stop) => {
                out.errors.insert(site.name.clone(), stopped(stop));
                continue;
            }
        };
        // Sets of this namespace, and whether each conforms.
        let mut sets: BTreeMap<(String, Labels), bool> = BTreeMap::new();
        for f in &found {
            let breaches = matrix.judge(f, 0);
            for (role, end) in [(Role::Destination, &f.to), (Role::Source, &f.from)] {
                if let End::Pods {
                    site: s, labels, ..
                } = end
                    && s.name == site.name
                    && matrix.governs(role, s)
                {
                    let direction = match role {
                        Role::Destination => "ingress",
                        Role::Source => "egress",
                    };
                    let ok = sets
                        .entry((direction.to_owned(), labels.clone()))
                        .or_insert(true);
                    *ok &= !breaches
                        .iter()
                        .any(|b| b.direction == direction && b.namespace == site.name);
                }
            }
            for b in breaches {
                if b.namespace == site.name && !out.forbidden.contains(&b) {
                    out.forbidden.push(b);
                }
            }
        }
        out.sets += sets.len();
        out.conforming += sets.values().filter(|ok| **ok).count();
        match required(matrix, &nets, Some(&site.name), &mut Budget::new(deadline)) {
            Ok(b) => {
                for b in b {
                    if !out.blocked.contains(&b) {
                        out.blocked.push(b);
                    }
                }
            }
            Err(stop) => {
                out.errors.insert(site.name.clone(), stopped(stop));
            }
        }
    }
    out
}

fn stopped(stop: Stop) -> String {
    match stop {
        Stop::TooComplex => format!(
            "the NetworkPolicies are too intricate to judge against the matrix within {} steps: select pods and namespaces by fewer distinct labels",
            super::space::BUDGET
        ),
        Stop::OutOfTime => "the deadline passed before the matrix was judged".to_owned(),
    }
}

/// The facts a matrix constraint reads at `input.palisade.matrix` for `review`: the forbidden
/// flows the change adds, the required flows it blocks, or the error that keeps it from being
/// judged. Reviews of other kinds get no facts (`None`).
pub fn facts(
    matrix: &Matrix,
    review: &Review,
    inventory: &Inventory,
    universe: &Universe,
    deadline: Option<Instant>,
) -> Result<Option<Value>, OutOfTime> {
    let id = review.object_ref();
    let pod_path = crate::podpaths::of_kind(&id.group, &id.kind);
    let network_policy_review = super::judge::is_network_policy(review);
    if (network_policy_review || pod_path.is_some()) && !id.namespace.is_empty() {
        // Whether the namespace opts in is its labels' to say: one the inventory does not hold
        // yet cannot be told apart from one that opts in, so it fails closed.
        let Some(ns) = inventory.namespace(&id.namespace) else {
            return Ok(Some(json!({"error": format!(
                "the Namespace {:?} is not known (yet), so whether it opts in to the matrix cannot be told; retry once it is in the inventory",
                id.namespace
            )})));
        };
        // A pod is judged at its own end only: nothing to do outside opted-in namespaces.
        if pod_path.is_some()
            && let Ok(ns) = Namespace::of(ns)
            && !matrix.opted_in(&Site {
                name: ns.name,
                labels: std::sync::Arc::new(ns.labels),
            })
        {
            return Ok(Some(report(Vec::new(), Vec::new())));
        }
    }
    let before = Net::of_inventory(inventory, universe);
    let mut budget = Budget::new(deadline);
    let result = if network_policy_review {
        network_policy(matrix, review, &before, &mut budget)
    } else if id.is_namespace() {
        namespace(matrix, review, &before, &mut budget)
    } else if let Some(path) = pod_path {
        let labels = |v: &Value| -> Option<Labels> {
            let template = path.template_of(v)?;
            Some(
                template["metadata"]["labels"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                            .collect()
                    })
                    .unwrap_or_default(),
            )
        };
        let new = match review.operation() {
            Some(Operation::Delete) => None,
            _ => labels(review.object()),
        };
        let old = labels(review.old_object());
        match new {
            None => return Ok(None),
            Some(new) => pods(
                matrix,
                &id.namespace,
                &new,
                old.as_ref(),
                &before,
                &mut budget,
            ),
        }
    } else {
        return Ok(None);
    };
    match result {
        Ok(v) => Ok(Some(v)),
        Err(Stop::OutOfTime) => Err(OutOfTime),
        Err(Stop::TooComplex) => Ok(Some(json!({"error": stopped(Stop::TooComplex)}))),
    }
}

fn report(breaches: Vec<Breach>, blocked: Vec<Blocked>) -> Value {
    let more = breaches.len().saturating_sub(SHOWN) + blocked.len().saturating_sub(SHOWN);
    json!({
        "forbidden": breaches.iter().take(SHOWN).map(Breach::json).collect::<Vec<_>>(),
        "blocked": blocked.iter().take(SHOWN).map(Blocked::json).collect::<Vec<_>>(),
        "more": more,
    })
}

/// What the matrix forbids in net 1 that net 0 did not allow: the flows a change adds, at
/// each governed end.
pub fn added(matrix: &Matrix, flows: &[Flow]) -> Vec<Breach> {
    let mut out = Vec::new();
    for f in flows {
        let was = matrix.judge(f, 0);
        let (from0, to0) = f.ends_at(0);
        for mut b in matrix.judge(f, 1) {
            let (role, end0, side0) = if b.direction == "ingress" {
                (Role::Destination, &to0, &f.ingress[0])
            } else {
                (Role::Source, &from0, &f.egress[0])
            };
            let governed_before = end0.site().is_some_and(|s| matrix.governs(role, s));
            if governed_before {
                // What the matrix forbade already is not this change's doing; what it allowed
                // and now forbids (a namespace that lost the label a flow allowed it by) is.
                for w in was.iter().filter(|w| w.direction == b.direction) {
                    b.ports = b.ports.minus(&w.ports);
                }
            } else {
                // An end that starts being governed (a namespace opting in) is not refused for
                // what its policies already allowed: the audit reports that.
                b.ports = b.ports.minus(&side0.ports);
            }
            if !b.ports.is_empty() && !out.contains(&b) {
                out.push(b);
            }
        }
    }
    out
}

/// The required flows of `matrix` blocked in `nets[1]` and not in `nets[0]`, everywhere.
pub fn newly_blocked_anywhere(
    matrix: &Matrix,
    nets: [&Net; 2],
    deadline: Option<Instant>,
) -> Result<Vec<Blocked>, Stop> {
    // One budget per namespace, as the audit spends it.
    let mut names: Vec<String> = nets
        .iter()
        .flat_map(|n| n.namespaces().map(|s| s.name))
        .collect();
    names.sort();
    names.dedup();
    let mut out: Vec<Blocked> = Vec::new();
    for name in names {
        for b in required(matrix, &nets, Some(&name), &mut Budget::new(deadline))? {
            if !out.contains(&b) {
                out.push(b);
            }
        }
    }
    Ok(out)
}

/// What a change from `nets[0]` to `nets[1]` adds around `namespace`. `policies_only`: only
/// the namespace's NetworkPolicies changed.
fn compare(
    matrix: &Matrix,
    nets: [&Net; 2],
    namespace: &str,
    policies_only: bool,
    budget: &mut Budget,
) -> Result<Value, Stop> {
    // Each governed end is judged on its own policies: a change in a namespace that does not
    // opt in (before or after) changes no governed end's policies, only what is effective.
    let governed = nets.iter().any(|n| matrix.opted_in(&n.site(namespace)));
    let here = Here { matrix, namespace };
    let refine: &dyn Refine = if policies_only { &here } else { matrix };
    let breaches = if governed || !policies_only {
        let flows = Flows::new(&nets, refine);
        let focus = Focus {
            namespace: namespace.to_owned(),
            labels: None,
            directions: Direction::BOTH.to_vec(),
        };
        match flows.of(&focus, budget)? {
            Ok(f) => added(matrix, &f),
            Err(e) => return Ok(json!({"error": e})),
        }
    } else {
        Vec::new()
    };
    // Blocked in net 1 and not in net 0.
    let blocked = required(matrix, &nets, Some(namespace), budget)?;
    Ok(report(breaches, blocked))
}

fn network_policy(
    matrix: &Matrix,
    review: &Review,
    before: &Net,
    budget: &mut Budget,
) -> Result<Value, Stop> {
    let id = review.object_ref();
    let namespace = id.namespace.clone();
    let new = match review.operation() {
        Some(Operation::Delete) => None,
        _ => match Policy::parse(review.object(), &namespace) {
            Ok(p) => Some(p),
            Err(e) => return Ok(json!({"error": format!("it cannot be judged: {e}")})),
        },
    };
    let mut after = before.clone();
    after.replace_policy(&namespace, &id.name, new.as_ref());
    compare(matrix, [before, &after], &namespace, true, budget)
}

fn namespace(
    matrix: &Matrix,
    review: &Review,
    before: &Net,
    budget: &mut Budget,
) -> Result<Value, Stop> {
    if review.operation() == Some(Operation::Delete) {
        return Ok(report(Vec::new(), Vec::new()));
    }
    let ns = match Namespace::of(review.object()) {
        Ok(ns) => ns,
        Err(e) => return Ok(json!({"error": format!("it cannot be judged: {e}")})),
    };
    let mut old = before.clone();
    let was = Namespace::of(review.old_object()).ok();
    match &was {
        Some(o) => old.set_namespace(&o.name, o.labels.clone()),
        // A new namespace: before, it did not exist.
        None => old.remove_namespace(&ns.name),
    }
    let mut after = before.clone();
    after.set_namespace(&ns.name, ns.labels.clone());
    let mut facts = compare(matrix, [&old, &after], &ns.name, false, budget)?;
    // Leaving the matrix is not a tenant's to do by relabelling: it would lift every check.
    let site = |labels: Labels| Site {
        name: ns.name.clone(),
        labels: std::sync::Arc::new(Namespace::new(&ns.name, labels).labels),
    };
    if let Some(o) = was
        && matrix.opted_in(&site(o.labels))
        && !matrix.opted_in(&site(ns.labels))
    {
        facts["opt_out"] = json!(format!(
            "namespace {} would stop opting in to communication matrix {:?} (its namespaceSelector no longer selects it): change the matrix's namespaceSelector to let a namespace go, or use break-glass",
            ns.name, matrix.name
        ));
    }
    Ok(facts)
}

fn pods(
    matrix: &Matrix,
    namespace: &str,
    labels: &Labels,
    old: Option<&Labels>,
    net: &Net,
    budget: &mut Budget,
) -> Result<Value, Stop> {
    let nets = [net];
    let here = Here { matrix, namespace };
    let flows = Flows::new(&nets, &here);
    let mut gained = Vec::new();
    // One direction at a time: the pod is the destination of every ingress flow and the source
    // of every egress flow, and the other end's sets do not depend on the pod's labels.
    for direction in Direction::BOTH {
        let of = |labels: &Labels, budget: &mut Budget| {
            flows.of(
                &Focus {
                    namespace: namespace.to_owned(),
                    labels: Some(labels.clone()),
                    directions: vec![direction],
                },
                budget,
            )
        };
        let now = match of(labels, budget)? {
            Ok(f) => f,
            Err(e) => return Ok(json!({"error": e})),
        };
        let was = match old {
            Some(old) => of(old, budget)?.unwrap_or_default(),
            None => Vec::new(),
        };
        let other = |f: &Flow| match direction {
            Direction::Ingress => f.from.clone(),
            Direction::Egress => f.to.clone(),
        };
        let own = match direction {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        };
        for f in &now {
            // Only the pod's own end: a breach at the other end is that end's (an admitted
            // policy's), and would otherwise refuse every pod it can reach.
            for mut b in matrix
                .judge(f, 0)
                .into_iter()
                .filter(|b| b.direction == own)
            {
                let peer = other(f);
                for w in was.iter().filter(|w| other(w) == peer) {
                    let before = if b.direction == "ingress" {
                        &w.ingress[0].ports
                    } else {
                        &w.egress[0].ports
                    };
                    b.ports = b.ports.minus(before);
                }
                if !b.ports.is_empty() && !gained.contains(&b) {
                    gained.push(b);
                }
            }
        }
    }
    Ok(report(gained, Vec::new()))
}
