//! Pictures of reachability: a small graph model (pods, namespaces, addresses, DNS, and the ports
//! between them) and two renderers, Graphviz DOT ([`Graph::to_dot`]) and Mermaid
//! ([`Graph::to_mermaid`]).
//!
//! The model knows nothing of NetworkPolicies: [`from_explanations`] builds it from what
//! `netpol explain` found, and any other command (a diff of two sets of policies, a check of a
//! communication matrix) can build its own and mark edges [`EdgeStyle::Added`],
//! [`EdgeStyle::Removed`] or [`EdgeStyle::Forbidden`].
//!
//! Both renderers sort what they draw, so the same graph prints the same text whatever order it
//! was built in, and both merge parallel edges (same ends, same style) into one edge whose label
//! lists every port once. They work with maps, never by comparing every edge with every other,
//! so a graph of a few thousand edges renders at once.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use super::explain::{Allow, Explanation, PeerView};
use super::flows::{End, PortSet};

/// What a picture shows: nodes, grouped by namespace, and the edges between them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Graph {
    /// The nodes; a node id given twice is drawn once, as first given.
    pub nodes: Vec<Node>,
    /// The edges; one whose end is no node's id gets a node of its own, labelled with the id.
    pub edges: Vec<Edge>,
}

/// One thing traffic comes from or goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// How edges name the node; any text (the renderers draw it under an id of their own).
    pub id: String,
    /// What the picture writes in the node.
    pub label: String,
    /// The namespace the node is drawn in (a box around its nodes); `None`: outside any.
    pub group: Option<String>,
    /// What the node stands for, which sets its shape.
    pub kind: NodeKind,
}

/// What a node stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeKind {
    /// A pod, or a set of pods.
    Pods,
    /// Pods of another namespace, or of the namespaces a selector selects.
    Namespace,
    /// Addresses (an ipBlock), or every peer there is.
    Internet,
    /// The cluster's DNS.
    Dns,
}

/// Traffic one node may send to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// The sending node's id.
    pub from: String,
    /// The receiving node's id.
    pub to: String,
    /// The ports, parts separated by `, `: `TCP 5432-5433, UDP 53`. Parallel edges join their
    /// parts, each once.
    pub label: String,
    /// How the edge is drawn.
    pub style: EdgeStyle,
}

/// How an edge is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EdgeStyle {
    /// Allowed, and nothing more to say: grey.
    Allowed,
    /// Newly allowed (a diff): green.
    Added,
    /// No longer allowed (a diff): red, dashed.
    Removed,
    /// Allowed although it must not be (a check): red, bold, labelled `forbidden`.
    Forbidden,
}

impl EdgeStyle {
    const ALL: [EdgeStyle; 4] = [
        EdgeStyle::Allowed,
        EdgeStyle::Added,
        EdgeStyle::Removed,
        EdgeStyle::Forbidden,
    ];

    fn name(self) -> &'static str {
        match self {
            EdgeStyle::Allowed => "allowed",
            EdgeStyle::Added => "added",
            EdgeStyle::Removed => "removed",
            EdgeStyle::Forbidden => "forbidden",
        }
    }

    /// The label as drawn: a forbidden edge says so in words, not only in colour.
    fn label(self, ports: &str) -> String {
        match (self, ports.is_empty()) {
            (EdgeStyle::Forbidden, true) => "forbidden".to_owned(),
            (EdgeStyle::Forbidden, false) => format!("forbidden: {ports}"),
            _ => ports.to_owned(),
        }
    }

    fn dot_attributes(self) -> &'static str {
        match self {
            EdgeStyle::Allowed => r#"color="gray30", fontcolor="gray20""#,
            EdgeStyle::Added => r#"color="forestgreen", fontcolor="forestgreen""#,
            EdgeStyle::Removed => r#"color="red3", fontcolor="red3", style=dashed"#,
            EdgeStyle::Forbidden => r#"color="red3", fontcolor="red3", style=bold, penwidth=2"#,
        }
    }

    /// Mermaid's arrow around a label: `(before, after)`, and the arrow without one.
    fn mermaid_arrow(self) -> (&'static str, &'static str, &'static str) {
        match self {
            EdgeStyle::Allowed | EdgeStyle::Added => ("--", "-->", "-->"),
            EdgeStyle::Removed => ("-.", ".->", "-.->"),
            EdgeStyle::Forbidden => ("==", "==>", "==>"),
        }
    }

    fn mermaid_style(self) -> Option<&'static str> {
        match self {
            EdgeStyle::Allowed => None,
            EdgeStyle::Added => Some("stroke:#228b22,color:#228b22"),
            EdgeStyle::Removed => Some("stroke:#cd0000,color:#cd0000"),
            EdgeStyle::Forbidden => Some("stroke:#cd0000,stroke-width:3px,color:#cd0000"),
        }
    }
}

impl NodeKind {
    const ALL: [NodeKind; 4] = [
        NodeKind::Pods,
        NodeKind::Namespace,
        NodeKind::Internet,
        NodeKind::Dns,
    ];

    fn dot_attributes(self) -> &'static str {
        match self {
            NodeKind::Pods => r#"shape=box, style=rounded"#,
            NodeKind::Namespace => r#"shape=folder"#,
            NodeKind::Internet => r#"shape=ellipse, style=dashed"#,
            NodeKind::Dns => r#"shape=hexagon"#,
        }
    }

    /// Mermaid's brackets around a label.
    fn mermaid_shape(self) -> (&'static str, &'static str) {
        match self {
            NodeKind::Pods => ("[", "]"),
            NodeKind::Namespace => ("[[", "]]"),
            NodeKind::Internet => ("([", "])"),
            NodeKind::Dns => ("{{", "}}"),
        }
    }

    fn mermaid_class(self) -> (&'static str, &'static str) {
        match self {
            NodeKind::Pods => ("pods", "fill:#eef4fb,stroke:#3b6ea5"),
            NodeKind::Namespace => ("namespaces", "fill:#f4f4f4,stroke:#777777"),
            NodeKind::Internet => ("internet", "fill:#fff8e6,stroke:#b07d1a"),
            NodeKind::Dns => ("dns", "fill:#eef8ee,stroke:#3d8b3d"),
        }
    }
}

/// A node as drawn: its label, group and kind.
type Drawn<'a> = (&'a str, Option<&'a str>, NodeKind);

/// A graph ready to draw: nodes sorted and numbered, edges merged and sorted.
struct Prepared<'a> {
    /// In drawing order; a node's place is its number (`n0`, `n1`…).
    nodes: Vec<Drawn<'a>>,
    /// Runs of `nodes` with the same group, top level first: `(group, first, end)`.
    groups: Vec<(Option<&'a str>, usize, usize)>,
    /// `(from, to, style, label)` by node number.
    edges: Vec<(usize, usize, EdgeStyle, String)>,
}

impl Graph {
    /// Adds each of `breaches` as a [`EdgeStyle::Forbidden`] edge between the ends it names
    /// (the ids [`from_flows`] gives them).
    pub fn forbid(&mut self, breaches: &[super::matrix::Breach]) {
        for b in breaches {
            self.edges.push(Edge {
                from: b.from.clone(),
                to: b.to.clone(),
                label: b.ports.parts().join(", "),
                style: EdgeStyle::Forbidden,
            });
        }
    }

    fn prepare(&self) -> Prepared<'_> {
        // First given wins; an edge's unknown end becomes a node of its own.
        let mut known: HashMap<&str, Drawn<'_>> = HashMap::new();
        for n in &self.nodes {
            known
                .entry(n.id.as_str())
                .or_insert((n.label.as_str(), n.group.as_deref(), n.kind));
        }
        for e in &self.edges {
            for end in [e.from.as_str(), e.to.as_str()] {
                known.entry(end).or_insert((end, None, NodeKind::Pods));
            }
        }
        let mut order: Vec<(&str, Drawn<'_>)> = known.into_iter().collect();
        order.sort_by(
            |(id_a, (label_a, group_a, kind_a)), (id_b, (label_b, group_b, kind_b))| {
                group_a
                    .cmp(group_b)
                    .then_with(|| natural_cmp(label_a, label_b))
                    .then_with(|| kind_a.cmp(kind_b))
                    .then_with(|| id_a.cmp(id_b))
            },
        );
        let number: HashMap<&str, usize> = order
            .iter()
            .enumerate()
            .map(|(n, (id, _))| (*id, n))
            .collect();
        let nodes: Vec<Drawn<'_>> = order.into_iter().map(|(_, node)| node).collect();
        let mut groups: Vec<(Option<&str>, usize, usize)> = Vec::new();
        for (n, (_, group, _)) in nodes.iter().enumerate() {
            match groups.last_mut() {
                Some(last) if last.0 == *group => last.2 = n + 1,
                _ => groups.push((*group, n, n + 1)),
            }
        }
        let mut merged: BTreeMap<(usize, usize, EdgeStyle), Vec<&str>> = BTreeMap::new();
        for e in &self.edges {
            let (Some(&from), Some(&to)) = (number.get(e.from.as_str()), number.get(e.to.as_str()))
            else {
                continue; // Every end was made a node above.
            };
            merged
                .entry((from, to, e.style))
                .or_default()
                .extend(e.label.split(", ").map(str::trim).filter(|p| !p.is_empty()));
        }
        let edges = merged
            .into_iter()
            .map(|((from, to, style), mut parts)| {
                parts.sort_by(|a, b| natural_cmp(a, b).then_with(|| a.cmp(b)));
                parts.dedup();
                (from, to, style, parts.join(", "))
            })
            .collect();
        Prepared {
            nodes,
            groups,
            edges,
        }
    }

    /// The graph in Graphviz's DOT language (`dot -Tsvg` draws it): one `cluster_<n>` per
    /// namespace, shapes by kind (box: pods; folder: other namespaces; dashed ellipse: addresses;
    /// hexagon: DNS), edges grey, or green (added), red dashed (removed), red bold (forbidden),
    /// with a legend when any edge is not plainly allowed.
    pub fn to_dot(&self) -> String {
        let p = self.prepare();
        let mut out = String::new();
        out.push_str("digraph netpol {\n");
        out.push_str("  rankdir=LR;\n");
        out.push_str("  fontname=\"Helvetica\";\n");
        out.push_str("  node [fontname=\"Helvetica\", fontsize=10];\n");
        out.push_str("  edge [fontname=\"Helvetica\", fontsize=9];\n");
        let mut cluster = 0;
        for (group, first, end) in &p.groups {
            let indent = match group {
                None => "  ",
                Some(name) => {
                    let _ = writeln!(out, "  subgraph cluster_{cluster} {{");
                    let _ = writeln!(out, "    label={};", dot_quote(name));
                    cluster += 1;
                    "    "
                }
            };
            for (n, (label, _, kind)) in p.nodes.iter().enumerate().take(*end).skip(*first) {
                let _ = writeln!(
                    out,
                    "{indent}n{n} [label={}, {}];",
                    dot_quote(label),
                    kind.dot_attributes()
                );
            }
            if group.is_some() {
                out.push_str("  }\n");
            }
        }
        for (from, to, style, label) in &p.edges {
            let _ = writeln!(
                out,
                "  n{from} -> n{to} [label={}, {}];",
                dot_quote(&style.label(label)),
                style.dot_attributes()
            );
        }
        let used: Vec<EdgeStyle> = EdgeStyle::ALL
            .into_iter()
            .filter(|s| p.edges.iter().any(|e| e.2 == *s))
            .collect();
        if used.iter().any(|s| *s != EdgeStyle::Allowed) {
            out.push_str("  subgraph cluster_legend {\n");
            out.push_str("    label=\"legend\";\n");
            out.push_str("    style=dashed;\n");
            out.push_str("    node [shape=point, width=0.05, label=\"\"];\n");
            for (n, style) in used.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "    legend{n}a -> legend{n}b [label={}, {}];",
                    dot_quote(style.name()),
                    style.dot_attributes()
                );
            }
            out.push_str("  }\n");
        }
        out.push_str("}\n");
        out
    }

    /// The graph as a Mermaid flowchart (GitHub draws a ```` ```mermaid ```` block): one
    /// `subgraph` per namespace, shapes and a `classDef` by kind, edges `-- "TCP 80" -->`, added
    /// ones green, removed ones red and dotted (`-.->`), forbidden ones red and thick (`==>`) and
    /// labelled `forbidden`.
    pub fn to_mermaid(&self) -> String {
        let p = self.prepare();
        let mut out = String::new();
        out.push_str("flowchart LR\n");
        let mut subgraph = 0;
        for (group, first, end) in &p.groups {
            let indent = match group {
                None => "    ",
                Some(name) => {
                    let _ = writeln!(out, "    subgraph g{subgraph} [{}]", mermaid_quote(name));
                    subgraph += 1;
                    "        "
                }
            };
            for (n, (label, _, kind)) in p.nodes.iter().enumerate().take(*end).skip(*first) {
                let (open, close) = kind.mermaid_shape();
                let _ = writeln!(out, "{indent}n{n}{open}{}{close}", mermaid_quote(label));
            }
            if group.is_some() {
                out.push_str("    end\n");
            }
        }
        for (from, to, style, label) in &p.edges {
            let (before, after, bare) = style.mermaid_arrow();
            let label = style.label(label);
            if label.is_empty() {
                let _ = writeln!(out, "    n{from} {bare} n{to}");
            } else {
                let _ = writeln!(
                    out,
                    "    n{from} {before} {} {after} n{to}",
                    mermaid_quote(&label)
                );
            }
        }
        for style in EdgeStyle::ALL {
            let Some(css) = style.mermaid_style() else {
                continue;
            };
            let links: Vec<String> = p
                .edges
                .iter()
                .enumerate()
                .filter(|(_, e)| e.2 == style)
                .map(|(i, _)| i.to_string())
                .collect();
            if !links.is_empty() {
                let _ = writeln!(out, "    linkStyle {} {css}", links.join(","));
            }
        }
        for kind in NodeKind::ALL {
            let members: Vec<String> = p
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.2 == kind)
                .map(|(i, _)| format!("n{i}"))
                .collect();
            if members.is_empty() {
                continue;
            }
            let (class, css) = kind.mermaid_class();
            let _ = writeln!(out, "    classDef {class} {css}");
            let _ = writeln!(out, "    class {} {class}", members.join(","));
        }
        out
    }
}

/// A DOT string: quoted, with `"` and `\` escaped (so no `\N`-style escape survives), line
/// breaks as `\n` and other control characters as spaces.
fn dot_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A Mermaid label: quoted, with `"` as `#quot;` and the characters Mermaid would read as
/// markup (`#` entities, `<>` HTML, `&`, `` ` `` Markdown strings) as numbered entities; line
/// breaks as `<br/>`, other control characters as spaces.
fn mermaid_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '#' => out.push_str("#35;"),
            '&' => out.push_str("#38;"),
            '<' => out.push_str("#60;"),
            '>' => out.push_str("#62;"),
            '`' => out.push_str("#96;"),
            '\n' => out.push_str("<br/>"),
            '\r' => {}
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Text with its numbers compared as numbers: `TCP 80` before `TCP 443` before `TCP 8080`.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a, b);
    loop {
        let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        match (a.chars().next(), b.chars().next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let (na, ra) = a.split_at(digits(a));
                let (nb, rb) = b.split_at(digits(b));
                let (na, nb) = (na.trim_start_matches('0'), nb.trim_start_matches('0'));
                let by_value = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if by_value != Ordering::Equal {
                    return by_value;
                }
                (a, b) = (ra, rb);
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(&y);
                }
                (a, b) = (&a[x.len_utf8()..], &b[y.len_utf8()..]);
            }
        }
    }
}

/// What [`from_explanations`] calls the node for every peer there is.
const ANYWHERE: &str = "anywhere";
/// The namespace of the cluster's DNS.
const DNS_NAMESPACE: &str = "kube-system";

/// A picture of flows between ends ([`End`]s of [`super::flows`]): each pod set is a node in its
/// namespace's box (the DNS pods of `kube-system` a node of their own kind), each address range
/// a node outside any box, and each flow an edge labelled with its ports, in its style.
pub fn from_flows(flows: &[(&End, &End, &PortSet, EdgeStyle)]) -> Graph {
    // Address ranges a pod set reaches (or is reached from) on the same ports, in the same
    // style, are one node: the model splits them where rules differ, a picture need not.
    let mut merged: Vec<(End, End, PortSet, EdgeStyle)> = Vec::new();
    let mut at: HashMap<(bool, End, PortSet, EdgeStyle), usize> = HashMap::new();
    for (from, to, ports, style) in flows {
        let key = match (from, to) {
            (End::Addresses(_), pods @ End::Pods { .. }) => Some((true, (*pods).clone())),
            (pods @ End::Pods { .. }, End::Addresses(_)) => Some((false, (*pods).clone())),
            _ => None,
        };
        match key {
            Some((inbound, pods)) => {
                let set = match if inbound { from } else { to } {
                    End::Addresses(s) => s.clone(),
                    End::Pods { .. } => continue,
                };
                let k = (inbound, pods.clone(), (*ports).clone(), *style);
                match at.get(&k) {
                    Some(&i) => {
                        let end = if inbound {
                            &mut merged[i].0
                        } else {
                            &mut merged[i].1
                        };
                        if let End::Addresses(s) = end {
                            *s = s.union(&set);
                        }
                    }
                    None => {
                        at.insert(k, merged.len());
                        let addresses = End::Addresses(set);
                        merged.push(if inbound {
                            (addresses, pods, (*ports).clone(), *style)
                        } else {
                            (pods, addresses, (*ports).clone(), *style)
                        });
                    }
                }
            }
            None => merged.push(((*from).clone(), (*to).clone(), (*ports).clone(), *style)),
        }
    }
    let mut graph = Graph::default();
    let mut seen = std::collections::HashSet::new();
    let mut node = |end: &End, graph: &mut Graph| -> String {
        let id = end.text();
        if seen.insert(id.clone()) {
            let (group, kind, label) = match end {
                End::Pods { site, labels, .. } => {
                    let dns = site.name == "kube-system"
                        && labels.get("k8s-app").map(String::as_str) == Some("kube-dns");
                    let label = id
                        .strip_suffix(&format!(" in {}", site.text()))
                        .map(str::to_owned)
                        .unwrap_or_else(|| id.replacen(&format!(" in {} ", site.text()), " ", 1));
                    (
                        Some(site.text()),
                        if dns { NodeKind::Dns } else { NodeKind::Pods },
                        label,
                    )
                }
                End::Addresses(_) => (None, NodeKind::Internet, id.clone()),
            };
            graph.nodes.push(Node {
                id: id.clone(),
                label,
                group,
                kind,
            });
        }
        id
    };
    for (from, to, ports, style) in &merged {
        let from = node(from, &mut graph);
        let to = node(to, &mut graph);
        graph.edges.push(Edge {
            from,
            to,
            label: ports.parts().join(", "),
            style: *style,
        });
    }
    graph
}

/// The picture of what `netpol explain` found: each entry (a pod, or a set of pods) is a node in
/// its namespace; each rule that allows it traffic is an edge from the peer (ingress) or to the
/// peer (egress), labelled with the ports.
///
/// A pod peer is drawn as the pods of the input it matches (per pod); else, when it is in one
/// namespace whose sets are all drawn, as the sets it selects whole (its podSelector is empty, or
/// is the podSelector of the policies that select those sets); else as one node for the selector,
/// in that namespace, or outside any namespace when it names several. Pods in `kube-system`
/// selected by `k8s-app=kube-dns`, or reached there on port 53, are the DNS node (or DNS pods,
/// when the input holds them). An ipBlock is a
/// node of its own; a rule without peers, and a direction no policy isolates (`every port (not
/// isolated)`), go to or come from one `anywhere` node. Each distinct peer is one node.
pub fn from_explanations(explanations: &[Explanation]) -> Graph {
    let mut b = Builder::default();
    let mut by_namespace: BTreeMap<&str, &Explanation> = BTreeMap::new();
    for e in explanations {
        by_namespace.entry(e.namespace.as_str()).or_insert(e);
        let group = Some(e.namespace.clone());
        if let Some(error) = &e.error {
            b.node(
                format!("error/{}", e.namespace),
                format!("not explained: {error}"),
                group.clone(),
                NodeKind::Pods,
            );
        }
        for entry in &e.entries {
            let dns = e.namespace == DNS_NAMESPACE
                && entry.labels.get("k8s-app").map(String::as_str) == Some("kube-dns");
            b.node(
                entry_id(e, &entry.subject),
                entry.subject.clone(),
                group.clone(),
                if dns { NodeKind::Dns } else { NodeKind::Pods },
            );
        }
    }
    for e in explanations {
        for entry in &e.entries {
            let me = entry_id(e, &entry.subject);
            for (view, ingress) in [(&entry.ingress, true), (&entry.egress, false)] {
                if !view.isolated {
                    let anywhere = b.anywhere();
                    b.edge(&me, &anywhere, ingress, "every port (not isolated)");
                    continue;
                }
                for allow in &view.allow {
                    let ports = allow.ports.text();
                    let peers = if allow.every_peer {
                        vec![b.anywhere()]
                    } else {
                        allow
                            .peers
                            .iter()
                            .flat_map(|peer| b.peer(peer, allow, e, &by_namespace))
                            .collect()
                    };
                    for peer in peers {
                        b.edge(&me, &peer, ingress, &ports);
                    }
                }
            }
        }
    }
    b.graph
}

fn entry_id(e: &Explanation, subject: &str) -> String {
    if e.mode == "pods" {
        format!("pod/{}/{subject}", e.namespace)
    } else {
        format!("set/{}/{subject}", e.namespace)
    }
}

#[derive(Default)]
struct Builder {
    graph: Graph,
    ids: HashMap<String, usize>,
    /// Labels taken in each group, to tell a selector's node from a set of the same words.
    labels: HashMap<(Option<String>, String), String>,
}

impl Builder {
    /// Adds a node unless its id is taken; returns the id.
    fn node(&mut self, id: String, label: String, group: Option<String>, kind: NodeKind) -> String {
        if !self.ids.contains_key(&id) {
            self.ids.insert(id.clone(), self.graph.nodes.len());
            self.labels
                .entry((group.clone(), label.clone()))
                .or_insert_with(|| id.clone());
            self.graph.nodes.push(Node {
                id: id.clone(),
                label,
                group,
                kind,
            });
        }
        id
    }

    fn anywhere(&mut self) -> String {
        self.node(
            ANYWHERE.to_owned(),
            ANYWHERE.to_owned(),
            None,
            NodeKind::Internet,
        )
    }

    /// A peer's own node: one per group and label; a label a set already has in that group gets
    /// ` (selector)`.
    fn peer_node(&mut self, label: String, group: Option<String>, kind: NodeKind) -> String {
        let id = format!("peer/{}/{label}", group.as_deref().unwrap_or(""));
        if self.ids.contains_key(&id) {
            return id;
        }
        let label = match self.labels.get(&(group.clone(), label.clone())) {
            Some(other) if *other != id => format!("{label} (selector)"),
            _ => label,
        };
        self.node(id, label, group, kind)
    }

    fn edge(&mut self, entry: &str, peer: &str, ingress: bool, ports: &str) {
        let (from, to) = if ingress {
            (peer, entry)
        } else {
            (entry, peer)
        };
        self.graph.edges.push(Edge {
            from: from.to_owned(),
            to: to.to_owned(),
            label: ports.to_owned(),
            style: EdgeStyle::Allowed,
        });
    }

    /// The nodes one peer of a rule stands for.
    fn peer(
        &mut self,
        peer: &PeerView,
        allow: &Allow,
        from: &Explanation,
        by_namespace: &BTreeMap<&str, &Explanation>,
    ) -> Vec<String> {
        let (namespaces, pods, matched) = match peer {
            PeerView::Cidr { .. } => {
                return vec![self.peer_node(peer.text(), None, NodeKind::Internet)];
            }
            PeerView::Pods {
                namespaces,
                pods,
                matched,
            } => (namespaces, pods, matched),
        };
        let dns_port = !allow.ports.all
            && allow
                .ports
                .ranges
                .values()
                .flatten()
                .any(|[a, b]| (*a..=*b).contains(&53));
        let dns = |ns: &str| {
            ns == DNS_NAMESPACE && (pods.split(',').any(|p| p == "k8s-app=kube-dns") || dns_port)
        };
        if let Some(matched) = matched.as_deref().filter(|m| !m.is_empty()) {
            return matched
                .iter()
                .map(|id| {
                    let (ns, name) = id.split_once('/').unwrap_or(("", id));
                    let kind = if dns(ns) {
                        NodeKind::Dns
                    } else {
                        NodeKind::Pods
                    };
                    self.node(
                        format!("pod/{ns}/{name}"),
                        name.to_owned(),
                        Some(ns.to_owned()),
                        kind,
                    )
                })
                .collect();
        }
        let single = namespaces.own.clone().or_else(|| {
            match (namespaces.by_name, namespaces.known.as_slice()) {
                (true, [one]) => Some(one.clone()),
                _ => None,
            }
        });
        let Some(ns) = single else {
            return vec![self.peer_node(peer.text(), None, NodeKind::Namespace)];
        };
        let what = if pods.is_empty() {
            "every pod".to_owned()
        } else {
            format!("pods {pods}")
        };
        if dns(&ns) {
            return vec![self.peer_node(format!("DNS: {what}"), Some(ns), NodeKind::Dns)];
        }
        if let Some(sets) = by_namespace
            .get(ns.as_str())
            .and_then(|e| whole_sets(e, pods))
        {
            return sets;
        }
        let kind = if ns == from.namespace {
            NodeKind::Pods
        } else {
            NodeKind::Namespace
        };
        vec![self.peer_node(what, Some(ns), kind)]
    }
}

/// The sets of `e` that the podSelector `pods` (as text) selects whole and alone, when that can
/// be told: every set for an empty selector, else the sets selected by the policies with that
/// podSelector. `None` when it cannot (the sets are not all there, or the selector is another).
fn whole_sets(e: &Explanation, pods: &str) -> Option<Vec<String>> {
    if e.mode != "sets" || e.partial || e.error.is_some() {
        return None;
    }
    let sets: Vec<String> = if pods.is_empty() {
        e.entries.iter().map(|x| entry_id(e, &x.subject)).collect()
    } else {
        let policies: Vec<&String> = e
            .pod_selectors
            .iter()
            .filter(|(_, s)| s.as_str() == pods)
            .map(|(name, _)| name)
            .collect();
        e.entries
            .iter()
            .filter(|x| x.selected_by.iter().any(|p| policies.contains(&p)))
            .map(|x| entry_id(e, &x.subject))
            .collect()
    };
    (!sets.is_empty()).then_some(sets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, label: &str, group: Option<&str>, kind: NodeKind) -> Node {
        Node {
            id: id.into(),
            label: label.into(),
            group: group.map(Into::into),
            kind,
        }
    }

    fn edge(from: &str, to: &str, label: &str, style: EdgeStyle) -> Edge {
        Edge {
            from: from.into(),
            to: to.into(),
            label: label.into(),
            style,
        }
    }

    /// The strings of a DOT text: each `"…"` with its escapes, checked to be closed, and the
    /// text outside them.
    fn dot_strings(dot: &str) -> (Vec<String>, String) {
        let mut strings = Vec::new();
        let mut outside = String::new();
        let mut chars = dot.chars();
        while let Some(c) = chars.next() {
            if c != '"' {
                outside.push(c);
                continue;
            }
            let mut s = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('"') => s.push('"'),
                        Some('\\') => s.push('\\'),
                        Some('n') => s.push('\n'),
                        other => panic!("escape \\{other:?} in {dot}"),
                    },
                    Some('\n') => panic!("a raw line break in a string of {dot}"),
                    Some(c) => s.push(c),
                    None => panic!("an unclosed string in {dot}"),
                }
            }
            strings.push(s);
        }
        (strings, outside)
    }

    fn hostile() -> Graph {
        let label = "say \"hi\"\\n <b>bold</b> & #quot; `code`\nnext\rline\\";
        Graph {
            nodes: vec![
                node("a\"b", label, Some("ns \"x\"\n<y>"), NodeKind::Pods),
                node("c", "plain", None, NodeKind::Internet),
            ],
            edges: vec![edge("a\"b", "c", label, EdgeStyle::Allowed)],
        }
    }

    #[test]
    fn dot_escapes_quotes_backslashes_and_line_breaks() {
        let dot = hostile().to_dot();
        let (strings, outside) = dot_strings(&dot);
        // Every label reads back as written, line breaks as DOT's \n, the carriage return gone.
        let want = "say \"hi\"\\n <b>bold</b> & #quot; `code`\nnextline\\";
        assert_eq!(strings.iter().filter(|s| *s == want).count(), 2, "{dot}");
        assert!(strings.iter().any(|s| s == "ns \"x\"\n<y>"), "{dot}");
        // Nothing of the model's ids reaches the DOT text: only n0, n1.
        assert!(!outside.contains("a\"b") && !outside.contains('<'), "{dot}");
        assert!(
            outside.contains("n0 -> n1") || outside.contains("n1 -> n0"),
            "{dot}"
        );
        assert_eq!(dot.lines().next(), Some("digraph netpol {"));
        assert_eq!(dot.lines().last(), Some("}"));
    }

    #[test]
    fn mermaid_escapes_quotes_markup_and_line_breaks() {
        let mermaid = hostile().to_mermaid();
        assert!(
            mermaid.contains(
                "\"say #quot;hi#quot;\\n #60;b#62;bold#60;/b#62; #38; #35;quot; #96;code#96;<br/>nextline\\\""
            ),
            "{mermaid}"
        );
        assert!(
            mermaid.contains("subgraph g0 [\"ns #quot;x#quot;<br/>#60;y#62;\"]"),
            "{mermaid}"
        );
        // Each line's quotes pair up, and no raw markup is left outside the <br/>s.
        for line in mermaid.lines() {
            assert_eq!(line.matches('"').count() % 2, 0, "{line}");
            let mut without = line.replace("<br/>", "");
            for arrow in ["-->", ".->", "==>"] {
                without = without.replace(arrow, "");
            }
            assert!(!without.contains('<') && !without.contains('>'), "{line}");
            assert!(!line.contains('\r') && !line.contains('`'), "{line}");
        }
        assert!(!mermaid.contains("a\"b"), "{mermaid}");
        assert_eq!(mermaid.lines().next(), Some("flowchart LR"));
    }

    #[test]
    fn parallel_edges_merge_into_one_with_every_port_once() {
        let g = Graph {
            nodes: vec![
                node("a", "a", None, NodeKind::Pods),
                node("b", "b", None, NodeKind::Pods),
            ],
            edges: vec![
                edge("a", "b", "UDP 53", EdgeStyle::Allowed),
                edge("a", "b", "TCP 8080, TCP 53", EdgeStyle::Allowed),
                edge("a", "b", "TCP 443", EdgeStyle::Allowed),
                edge("a", "b", "TCP 53", EdgeStyle::Allowed),
                edge("a", "b", "TCP 22", EdgeStyle::Added),
                edge("b", "a", "TCP 1", EdgeStyle::Allowed),
            ],
        };
        let dot = g.to_dot();
        let arrows: Vec<&str> = dot.lines().filter(|l| l.contains("->")).collect();
        assert_eq!(
            arrows,
            [
                "  n0 -> n1 [label=\"TCP 53, TCP 443, TCP 8080, UDP 53\", color=\"gray30\", fontcolor=\"gray20\"];",
                "  n0 -> n1 [label=\"TCP 22\", color=\"forestgreen\", fontcolor=\"forestgreen\"];",
                "  n1 -> n0 [label=\"TCP 1\", color=\"gray30\", fontcolor=\"gray20\"];",
                "    legend0a -> legend0b [label=\"allowed\", color=\"gray30\", fontcolor=\"gray20\"];",
                "    legend1a -> legend1b [label=\"added\", color=\"forestgreen\", fontcolor=\"forestgreen\"];",
            ]
        );
        let mermaid = g.to_mermaid();
        assert!(
            mermaid.contains("    n0 -- \"TCP 53, TCP 443, TCP 8080, UDP 53\" --> n1\n"),
            "{mermaid}"
        );
        assert_eq!(mermaid.matches("-->").count(), 3, "{mermaid}");
        assert!(
            mermaid.contains("    linkStyle 1 stroke:#228b22"),
            "{mermaid}"
        );
    }

    #[test]
    fn each_style_has_its_colour_and_forbidden_says_so() {
        let g = Graph {
            nodes: vec![
                node("a", "a", None, NodeKind::Pods),
                node("b", "b", None, NodeKind::Pods),
            ],
            edges: vec![
                edge("a", "b", "TCP 1", EdgeStyle::Allowed),
                edge("a", "b", "TCP 2", EdgeStyle::Added),
                edge("a", "b", "TCP 3", EdgeStyle::Removed),
                edge("a", "b", "TCP 4", EdgeStyle::Forbidden),
            ],
        };
        let dot = g.to_dot();
        for line in [
            "n0 -> n1 [label=\"TCP 1\", color=\"gray30\"",
            "n0 -> n1 [label=\"TCP 2\", color=\"forestgreen\"",
            "n0 -> n1 [label=\"TCP 3\", color=\"red3\", fontcolor=\"red3\", style=dashed]",
            "n0 -> n1 [label=\"forbidden: TCP 4\", color=\"red3\", fontcolor=\"red3\", style=bold, penwidth=2]",
            "subgraph cluster_legend {",
            "legend3a -> legend3b [label=\"forbidden\"",
        ] {
            assert!(dot.contains(line), "{line} in {dot}");
        }
        let mermaid = g.to_mermaid();
        for line in [
            "    n0 -- \"TCP 1\" --> n1\n",
            "    n0 -- \"TCP 2\" --> n1\n",
            "    n0 -. \"TCP 3\" .-> n1\n",
            "    n0 == \"forbidden: TCP 4\" ==> n1\n",
            "    linkStyle 1 stroke:#228b22,color:#228b22\n",
            "    linkStyle 2 stroke:#cd0000,color:#cd0000\n",
            "    linkStyle 3 stroke:#cd0000,stroke-width:3px,color:#cd0000\n",
        ] {
            assert!(mermaid.contains(line), "{line} in {mermaid}");
        }
        // Plainly allowed edges need no legend.
        let plain = Graph {
            edges: vec![edge("a", "b", "TCP 1", EdgeStyle::Allowed)],
            ..g
        };
        assert!(!plain.to_dot().contains("legend"));
        assert!(!plain.to_mermaid().contains("linkStyle"));
    }

    #[test]
    fn the_same_graph_in_any_order_prints_the_same() {
        let nodes = vec![
            node("web", "pods app=web", Some("shop"), NodeKind::Pods),
            node("db", "pods app=db", Some("shop"), NodeKind::Pods),
            node(
                "dns",
                "DNS: pods k8s-app=kube-dns",
                Some("kube-system"),
                NodeKind::Dns,
            ),
            node("net", "0.0.0.0/0", None, NodeKind::Internet),
            node(
                "mon",
                "every pod in namespaces team=ops",
                None,
                NodeKind::Namespace,
            ),
        ];
        let edges = vec![
            edge("web", "db", "TCP 5432", EdgeStyle::Allowed),
            edge("web", "dns", "UDP 53", EdgeStyle::Allowed),
            edge("web", "dns", "TCP 53", EdgeStyle::Allowed),
            edge("db", "dns", "TCP 53, UDP 53", EdgeStyle::Allowed),
            edge("web", "net", "TCP 443", EdgeStyle::Removed),
            edge("mon", "web", "TCP 9100", EdgeStyle::Added),
        ];
        let g = Graph {
            nodes: nodes.clone(),
            edges: edges.clone(),
        };
        let reversed = Graph {
            nodes: nodes.into_iter().rev().collect(),
            edges: edges.into_iter().rev().collect(),
        };
        assert_eq!(g.to_dot(), reversed.to_dot());
        assert_eq!(g.to_mermaid(), reversed.to_mermaid());
        assert_eq!(g.to_dot(), g.clone().to_dot());
        // Top level first, then one cluster per namespace in name order.
        let dot = g.to_dot();
        let kube = dot.find("label=\"kube-system\"").unwrap();
        let shop = dot.find("label=\"shop\"").unwrap();
        assert!(dot.find("label=\"0.0.0.0/0\"").unwrap() < kube && kube < shop);
        assert!(dot.contains("subgraph cluster_0 {") && dot.contains("subgraph cluster_1 {"));
        // Both DNS edges of web are one.
        assert!(g.to_mermaid().contains("-- \"TCP 53, UDP 53\" -->"));
        assert_eq!(g.to_mermaid().matches("TCP 53, UDP 53").count(), 2);
    }

    #[test]
    fn an_edge_to_an_unknown_node_draws_it_and_a_repeated_id_is_drawn_once() {
        let g = Graph {
            nodes: vec![
                node("a", "first", None, NodeKind::Pods),
                node("a", "second", None, NodeKind::Dns),
            ],
            edges: vec![edge("a", "ghost", "", EdgeStyle::Allowed)],
        };
        let dot = g.to_dot();
        assert!(dot.contains("[label=\"first\", shape=box"), "{dot}");
        assert!(!dot.contains("second"), "{dot}");
        assert!(dot.contains("[label=\"ghost\""), "{dot}");
        assert!(
            g.to_mermaid().contains("    n0 --> n1\n"),
            "{}",
            g.to_mermaid()
        );
    }

    #[test]
    fn numbers_sort_as_numbers() {
        let mut parts = vec![
            "TCP 8080",
            "UDP 53",
            "TCP 443",
            "TCP 80",
            "TCP 53-54",
            "every port",
        ];
        parts.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            parts,
            [
                "TCP 53-54",
                "TCP 80",
                "TCP 443",
                "TCP 8080",
                "UDP 53",
                "every port"
            ]
        );
        assert_eq!(natural_cmp("a007", "a7"), Ordering::Equal);
        assert_eq!(natural_cmp("é2", "é10"), Ordering::Less);
    }
}
