//! What the inventory keeps of each object: the fields the bundle's templates read in
//! `data.inventory`, and nothing else, so that its memory follows what policies need rather than
//! what the cluster's objects carry.
//!
//! A template's [`Reads`] come from an analysis of its Rego (`policy::rego::reads`): each place
//! it looks into `data.inventory`, as a path of [`Step`]s from `data.inventory`, and whether the
//! value there is used whole (compared, passed to a builtin, returned) or only looked into. A
//! [`Keep`] is the union over a bundle's templates, by kind. Pruning keeps, for each path, every
//! key on the way and the whole value where it is used whole; so every read a template makes
//! sees the same value in a pruned object as in the whole one. Where the analysis cannot tell
//! what is read (a dynamic key above the object, `walk`, `data` as a whole…), it says
//! "everything", and objects are kept whole: the safe direction is always to keep more.
//!
//! Palisade's own rules never read the pruned objects: Namespaces are also held whole (for
//! `namespaceObject`, namespaceSelectors, the zero-trust scope) and NetworkPolicies are read
//! into the model before pruning ([`super::Inventory`]).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// One step down from `data.inventory`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// An object key written in the template.
    Key(String),
    /// An array index written in the template.
    Index(u64),
    /// Any key or index: a variable, or anything not known when the template loads.
    Any,
}

/// One place a template reads in `data.inventory`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Read {
    /// From `data.inventory`: e.g. `namespace`, any, `networking.k8s.io/v1`, `NetworkPolicy`,
    /// any, `spec`.
    pub path: Vec<Step>,
    /// The value there is used as a whole; otherwise only keys below it are looked up.
    pub whole: bool,
}

/// Everything one template reads of `data.inventory`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reads {
    reads: BTreeSet<Read>,
    everything: bool,
}

impl Reads {
    /// Reads all of it, in a way the analysis cannot narrow.
    pub fn everything() -> Self {
        Self {
            reads: BTreeSet::new(),
            everything: true,
        }
    }

    /// Whether it reads nothing of the inventory.
    pub fn is_empty(&self) -> bool {
        !self.everything && self.reads.is_empty()
    }

    /// Whether the analysis gave up narrowing: every object is read whole.
    pub fn reads_everything(&self) -> bool {
        self.everything
    }

    /// The places read.
    pub fn reads(&self) -> impl Iterator<Item = &Read> {
        self.reads.iter()
    }

    pub(crate) fn add(&mut self, path: Vec<Step>, whole: bool) {
        if self.everything {
            return;
        }
        if whole {
            // A whole read makes a look-into at the same place redundant.
            self.reads.remove(&Read {
                path: path.clone(),
                whole: false,
            });
        } else if self.reads.contains(&Read {
            path: path.clone(),
            whole: true,
        }) {
            return;
        }
        self.reads.insert(Read { path, whole });
    }
}

/// What one read means for the objects.
enum Target<'a> {
    /// Nothing can be there (`data.inventory.other`).
    Nothing,
    /// Objects at unknown depths: keep everything whole.
    Everything,
    /// Objects of these kinds (`None`: any), these fields.
    Kind {
        api_version: Option<&'a str>,
        kind: Option<&'a str>,
        fields: &'a [Step],
        whole: bool,
    },
}

fn by_kind(rest: &[Step], whole: bool) -> Target<'_> {
    fn name(s: &Step) -> Option<&str> {
        match s {
            Step::Key(k) => Some(k.as_str()),
            _ => None,
        }
    }
    match rest {
        [] => Target::Kind {
            api_version: None,
            kind: None,
            fields: &[],
            whole,
        },
        [gv] => Target::Kind {
            api_version: name(gv),
            kind: None,
            fields: &[],
            whole,
        },
        [gv, kind] | [gv, kind, _] => Target::Kind {
            api_version: name(gv),
            kind: name(kind),
            fields: &[],
            whole,
        },
        [gv, kind, _, fields @ ..] => Target::Kind {
            api_version: name(gv),
            kind: name(kind),
            fields,
            whole,
        },
    }
}

fn target(read: &Read) -> Target<'_> {
    match read.path.as_slice() {
        [] => {
            if read.whole {
                Target::Everything
            } else {
                Target::Nothing
            }
        }
        [Step::Key(root), rest @ ..] if root == "cluster" => by_kind(rest, read.whole),
        [Step::Key(root)] if root == "namespace" => by_kind(&[], read.whole),
        [Step::Key(root), _, rest @ ..] if root == "namespace" => by_kind(rest, read.whole),
        // `data.inventory[x]`: cluster-scoped and namespaced objects at once, at different depths.
        [Step::Any, ..] => Target::Everything,
        _ => Target::Nothing,
    }
}

/// The fields kept below one place of an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Node {
    whole: bool,
    children: BTreeMap<Step, Node>,
}

impl Node {
    fn insert(&mut self, path: &[Step], whole: bool) {
        if self.whole {
            return;
        }
        match path.split_first() {
            None => {
                if whole {
                    self.whole = true;
                    self.children.clear();
                }
            }
            Some((step, rest)) => self
                .children
                .entry(step.clone())
                .or_default()
                .insert(rest, whole),
        }
    }

    /// Whether a read of `path` sees here what it would see in the whole object.
    fn covers(&self, path: &[Step], whole: bool) -> bool {
        if self.whole {
            return true;
        }
        let Some((step, rest)) = path.split_first() else {
            return !whole;
        };
        let child = |s: &Step| self.children.get(s).is_some_and(|n| n.covers(rest, whole));
        match step {
            Step::Any => child(&Step::Any),
            step => child(step) || child(&Step::Any),
        }
    }
}

/// The fields kept of the objects of some kinds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Rule {
    fields: Node,
}

/// What the inventory keeps of each object, for one bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keep {
    everything: bool,
    /// By apiVersion and kind; `None` is any.
    rules: BTreeMap<(Option<String>, Option<String>), Rule>,
}

impl Default for Keep {
    /// Keeps every object whole.
    fn default() -> Self {
        Self::everything()
    }
}

impl Keep {
    /// Keeps every object whole: the inventory of the CLI, the tests and the suites.
    pub fn everything() -> Self {
        Self {
            everything: true,
            rules: BTreeMap::new(),
        }
    }

    /// Keeps what any of `reads` reads (the templates of a bundle).
    pub fn of<'a>(reads: impl IntoIterator<Item = &'a Reads>) -> Self {
        let mut keep = Self {
            everything: false,
            rules: BTreeMap::new(),
        };
        for r in reads {
            if r.everything {
                return Self::everything();
            }
            for read in &r.reads {
                match target(read) {
                    Target::Nothing => {}
                    Target::Everything => return Self::everything(),
                    Target::Kind {
                        api_version,
                        kind,
                        fields,
                        whole,
                    } => keep
                        .rules
                        .entry((api_version.map(str::to_owned), kind.map(str::to_owned)))
                        .or_default()
                        .fields
                        .insert(fields, whole),
                }
            }
        }
        keep
    }

    /// Whether objects are kept whole.
    pub fn keeps_everything(&self) -> bool {
        self.everything
    }

    /// Whether every read of `reads` sees in objects kept this way what it would see in whole
    /// ones. Conservative: `false` when in doubt.
    pub fn covers(&self, reads: &Reads) -> bool {
        if self.everything {
            return true;
        }
        if reads.everything {
            return false;
        }
        reads.reads.iter().all(|read| match target(read) {
            Target::Nothing => true,
            Target::Everything => false,
            Target::Kind {
                api_version,
                kind,
                fields,
                whole,
            } => self.rules.iter().any(|((gv, k), rule)| {
                // The rule must apply to at least every kind the read may reach.
                let broad = |rule: &Option<String>, read: Option<&str>| match rule {
                    None => true,
                    Some(r) => read == Some(r.as_str()),
                };
                broad(gv, api_version) && broad(k, kind) && rule.fields.covers(fields, whole)
            }),
        })
    }

    /// What is kept of `object` (of `api_version` and `kind`); `None` when no template reads
    /// objects of its kind at all.
    pub fn prune<'a>(
        &self,
        api_version: &str,
        kind: &str,
        object: &'a Value,
    ) -> Option<Cow<'a, Value>> {
        if self.everything {
            return Some(Cow::Borrowed(object));
        }
        let nodes: Vec<&Node> = self
            .rules
            .iter()
            .filter(|((gv, k), _)| {
                gv.as_deref().is_none_or(|gv| gv == api_version)
                    && k.as_deref().is_none_or(|k| k == kind)
            })
            .map(|(_, rule)| &rule.fields)
            .collect();
        if nodes.is_empty() {
            return None;
        }
        if nodes.iter().any(|n| n.whole) {
            return Some(Cow::Borrowed(object));
        }
        let mut kept = prune(object, &nodes);
        identity(object, &mut kept);
        Some(Cow::Owned(kept))
    }
}

/// Only what names `object`: apiVersion, kind, metadata.name and metadata.namespace.
pub fn identity_of(object: &Value) -> Value {
    let mut kept = Value::Object(Default::default());
    identity(object, &mut kept);
    kept
}

/// `value` with only what `nodes` keep: every key they name (or all, under [`Step::Any`]), the
/// whole value where one of them is whole. Arrays keep their length; an element nothing reads is
/// `null`.
fn prune(value: &Value, nodes: &[&Node]) -> Value {
    if nodes.iter().any(|n| n.whole) {
        return value.clone();
    }
    let below = |step: Step| -> Vec<&Node> {
        nodes
            .iter()
            .flat_map(|n| [n.children.get(&step), n.children.get(&Step::Any)])
            .flatten()
            .collect()
    };
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter_map(|(k, v)| {
                    let nodes = below(Step::Key(k.clone()));
                    (!nodes.is_empty()).then(|| (k.clone(), prune(v, &nodes)))
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let nodes = below(Step::Index(i as u64));
                    if nodes.is_empty() {
                        Value::Null
                    } else {
                        prune(v, &nodes)
                    }
                })
                .collect(),
        ),
        scalar => scalar.clone(),
    }
}

/// What names the object, kept whatever the templates read.
fn identity(object: &Value, kept: &mut Value) {
    let Some(kept) = kept.as_object_mut() else {
        return;
    };
    for field in ["apiVersion", "kind"] {
        if let Some(v) = object.get(field) {
            kept.insert(field.into(), v.clone());
        }
    }
    let metadata = kept
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Some(metadata) = metadata.as_object_mut() {
        for field in ["name", "namespace"] {
            if let Some(v) = object["metadata"].get(field) {
                metadata.insert(field.into(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(s: &str) -> Step {
        Step::Key(s.into())
    }

    fn reads(list: &[(&[Step], bool)]) -> Reads {
        let mut r = Reads::default();
        for (path, whole) in list {
            r.add(path.to_vec(), *whole);
        }
        r
    }

    fn policy() -> Value {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "a", "uid": "u", "labels": {"x": "y"}},
            "spec": {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": 80}]}, {"ports": [{"port": 443}]}]}})
    }

    const NP: [&str; 2] = ["networking.k8s.io/v1", "NetworkPolicy"];

    #[test]
    fn keeps_the_paths_read_and_the_identity() {
        let np = [
            key("namespace"),
            Step::Any,
            key(NP[0]),
            key(NP[1]),
            Step::Any,
        ];
        let ports = [
            &np[..],
            &[key("spec"), key("ingress"), Step::Any, key("ports")],
        ]
        .concat();
        let keep = Keep::of([&reads(&[(&ports, true)])]);
        let kept = keep.prune(NP[0], NP[1], &policy()).unwrap().into_owned();
        assert_eq!(
            kept,
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "p", "namespace": "a"},
                "spec": {"ingress": [{"ports": [{"port": 80}]}, {"ports": [{"port": 443}]}]}})
        );
        // Other kinds are not read at all.
        assert_eq!(keep.prune("v1", "Namespace", &json!({})), None);
    }

    #[test]
    fn an_index_keeps_the_array_length() {
        let np = [key("cluster"), key(NP[0]), key(NP[1]), Step::Any];
        let first = [&np[..], &[key("spec"), key("ingress"), Step::Index(1)]].concat();
        let keep = Keep::of([&reads(&[(&first, true)])]);
        let kept = keep.prune(NP[0], NP[1], &policy()).unwrap().into_owned();
        assert_eq!(
            kept["spec"]["ingress"],
            json!([null, {"ports": [{"port": 443}]}])
        );
    }

    #[test]
    fn a_whole_read_of_the_object_or_above_keeps_it_whole() {
        let object = [
            key("namespace"),
            Step::Any,
            Step::Any,
            key(NP[1]),
            Step::Any,
        ];
        let keep = Keep::of([&reads(&[(&object, true)])]);
        assert!(matches!(
            keep.prune(NP[0], NP[1], &policy()),
            Some(Cow::Borrowed(_))
        ));
        let kind = [key("namespace"), Step::Any, key(NP[0])];
        let keep = Keep::of([&reads(&[(&kind, true)])]);
        assert!(matches!(
            keep.prune(NP[0], NP[1], &policy()),
            Some(Cow::Borrowed(_))
        ));
        // A variable first key: cluster and namespace objects at once.
        let keep = Keep::of([&reads(&[(&[Step::Any, key("x")], false)])]);
        assert!(keep.keeps_everything());
        assert!(Keep::of([&Reads::everything()]).keeps_everything());
    }

    #[test]
    fn covers_only_what_it_keeps() {
        let np = [
            key("namespace"),
            Step::Any,
            key(NP[0]),
            key(NP[1]),
            Step::Any,
        ];
        let spec = [&np[..], &[key("spec")]].concat();
        let selector = [&spec[..], &[key("podSelector")]].concat();
        let metadata = [&np[..], &[key("metadata")]].concat();
        let keep = Keep::of([&reads(&[(&spec, true)])]);
        assert!(keep.covers(&reads(&[(&selector, true)])));
        assert!(keep.covers(&reads(&[(&np, false)])));
        assert!(!keep.covers(&reads(&[(&metadata, true)])));
        assert!(!keep.covers(&reads(&[(&np, true)])));
        assert!(!keep.covers(&Reads::everything()));
        // A read of any kind is not covered by a rule for one kind.
        let any_kind = [
            key("namespace"),
            Step::Any,
            Step::Any,
            Step::Any,
            Step::Any,
            key("spec"),
        ];
        assert!(!keep.covers(&reads(&[(&any_kind, true)])));
        assert!(Keep::everything().covers(&Reads::everything()));
        assert!(keep.covers(&Reads::default()));
    }
}
