//! Gatekeeper mutators (mutations.gatekeeper.sh): Assign, AssignMetadata and ModifySet.
//!
//! Mutators apply in a fixed order (kind, then name) and repeat until the object stops changing.
//! Missing parent fields are created; list selectors never create list elements. The result is
//! an RFC 6902 patch from the request's object to the mutated one.
//!
//! [`Mutator::parse`] reads one mutator document; [`Mutators`] are a bundle's, in order, and
//! [`Mutators::mutate`] applies them to a review. `AssignImage` is not supported: a bundle that
//! holds one is refused.

pub(crate) mod location;
pub mod map;
pub(crate) mod patch;

use serde_json::{Map, Value};

use crate::admission::Review;
use crate::manifest::Document;
use crate::matcher::{KindSelector, Match, string_list};
use crate::object::json_type;
use location::{Location, Segment, Selector};

/// Passes over all mutators before giving up on an object that keeps changing.
pub const MAX_ITERATIONS: usize = 8;

/// The kinds of mutator Palisade reads. Mutators apply in this order, then by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Sets a value (`spec.parameters.assign.value`) at a location outside `metadata`.
    Assign,
    /// Adds a label or annotation that is not set yet; never changes one that is.
    AssignMetadata,
    /// Adds values to a list (`merge`) or removes them from it (`prune`), as a set.
    ModifySet,
}

impl Kind {
    /// The kind as Gatekeeper spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Assign => "Assign",
            Kind::AssignMetadata => "AssignMetadata",
            Kind::ModifySet => "ModifySet",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ApplyTo {
    groups: Vec<String>,
    kinds: Vec<String>,
    versions: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    MustExist,
    MustNotExist,
}

#[derive(Debug, Clone, PartialEq)]
struct PathTest {
    sub_path: Location,
    condition: Condition,
}

#[derive(Debug, Clone, PartialEq)]
enum Operation {
    Assign(Value),
    /// Add-only: an existing label or annotation is never changed.
    AssignIfAbsent(Value),
    Merge(Vec<Value>),
    Prune(Vec<Value>),
}

/// One mutator, parsed: where it applies (`applyTo`, `match`) and what it does at its location.
#[derive(Debug, Clone)]
pub struct Mutator {
    /// Which kind of mutator it is.
    pub kind: Kind,
    /// `metadata.name`.
    pub name: String,
    /// "Kind name at file (document N)", for messages.
    pub describe: String,
    apply_to: Vec<ApplyTo>,
    matcher: Match,
    location: Location,
    path_tests: Vec<PathTest>,
    operation: Operation,
}

impl Mutator {
    /// `spec.match`.
    pub fn matcher(&self) -> &Match {
        &self.matcher
    }

    /// The kinds the mutator can change: its `match.kinds`, else its `applyTo`; an empty list
    /// means any kind.
    pub fn kinds(&self) -> Vec<KindSelector> {
        if !self.matcher.kinds.is_empty() {
            return self.matcher.kinds.clone();
        }
        self.apply_to
            .iter()
            .map(|a| KindSelector {
                api_groups: a.groups.clone(),
                kinds: a.kinds.clone(),
            })
            .collect()
    }

    /// Reads a mutator document; errors name the field.
    pub fn parse(doc: &Document) -> Result<Self, String> {
        let kind = match doc.kind() {
            "Assign" => Kind::Assign,
            "AssignMetadata" => Kind::AssignMetadata,
            "ModifySet" => Kind::ModifySet,
            other => {
                return Err(format!(
                    "kind {other} is not a supported mutator; use Assign, AssignMetadata or ModifySet"
                ));
            }
        };
        match doc.api_version() {
            "mutations.gatekeeper.sh/v1"
            | "mutations.gatekeeper.sh/v1beta1"
            | "mutations.gatekeeper.sh/v1alpha1" => {}
            other => {
                return Err(format!(
                    "apiVersion {other:?} is not mutations.gatekeeper.sh/v1, v1beta1 or v1alpha1"
                ));
            }
        }
        let name = doc.name();
        if name.is_empty() {
            return Err("metadata.name: required".into());
        }
        let spec = &doc.value["spec"];
        let location_src = spec["location"].as_str().ok_or(
            "spec.location: required, e.g. spec.containers[name: *].securityContext.runAsNonRoot",
        )?;
        let location = Location::parse(location_src)
            .map_err(|e| format!("spec.location {location_src:?}: {e}"))?;
        let matcher = Match::parse(&spec["match"], "spec.match")?;

        let mut apply_to = Vec::new();
        for (i, a) in spec["applyTo"].as_array().into_iter().flatten().enumerate() {
            let at = format!("spec.applyTo[{i}]");
            apply_to.push(ApplyTo {
                groups: string_list(&a["groups"], &format!("{at}.groups"))?,
                kinds: string_list(&a["kinds"], &format!("{at}.kinds"))?,
                versions: string_list(&a["versions"], &format!("{at}.versions"))?,
            });
        }
        let params = &spec["parameters"];
        let mut path_tests = Vec::new();
        for (i, t) in params["pathTests"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let at = format!("spec.parameters.pathTests[{i}]");
            let sub = t["subPath"]
                .as_str()
                .ok_or_else(|| format!("{at}.subPath: required"))?;
            let sub_path =
                Location::parse(sub).map_err(|e| format!("{at}.subPath {sub:?}: {e}"))?;
            if !location.starts_with(&sub_path) {
                return Err(format!(
                    "{at}.subPath {sub:?} must be a prefix of spec.location {location_src:?}"
                ));
            }
            let condition = match t["condition"].as_str() {
                Some("MustExist") => Condition::MustExist,
                Some("MustNotExist") => Condition::MustNotExist,
                _ => {
                    return Err(format!(
                        "{at}.condition: {} is not MustExist or MustNotExist",
                        t["condition"]
                    ));
                }
            };
            path_tests.push(PathTest {
                sub_path,
                condition,
            });
        }

        let operation = match kind {
            Kind::Assign => {
                if apply_to.is_empty() {
                    return Err("spec.applyTo: required for Assign, e.g. [{groups: [\"\"], kinds: [Pod], versions: [v1]}]".into());
                }
                if location.root() == Some("metadata") {
                    return Err("spec.location: Assign may not change metadata; use AssignMetadata for labels and annotations".into());
                }
                let assign = &params["assign"];
                if assign.get("fromMetadata").is_some() || assign.get("externalData").is_some() {
                    return Err("spec.parameters.assign: only value is supported (not fromMetadata or externalData)".into());
                }
                let value = assign
                    .get("value")
                    .cloned()
                    .ok_or("spec.parameters.assign.value: required")?;
                if let Some(Segment::List { key, value: sel }) = location.segments.last() {
                    let Selector::Value(want) = sel else {
                        return Err("spec.location: cannot assign a whole list element through a [key: *] glob".into());
                    };
                    if value.get(key).and_then(Value::as_str) != Some(want.as_str()) {
                        return Err(format!(
                            "spec.parameters.assign.value: must be an object whose {key} is {want:?}, as the location selects"
                        ));
                    }
                }
                Operation::Assign(value)
            }
            Kind::AssignMetadata => {
                let ok = location.segments.len() == 3
                    && matches!(&location.segments[0], Segment::Field(f) if f == "metadata")
                    && matches!(&location.segments[1], Segment::Field(f) if f == "labels" || f == "annotations")
                    && matches!(&location.segments[2], Segment::Field(_));
                if !ok {
                    return Err(format!(
                        "spec.location {location_src:?}: AssignMetadata sets metadata.labels.<key> or metadata.annotations.<key>"
                    ));
                }
                let value = params["assign"]["value"]
                    .as_str()
                    .ok_or("spec.parameters.assign.value: required, a string")?;
                Operation::AssignIfAbsent(Value::String(value.to_owned()))
            }
            Kind::ModifySet => {
                if apply_to.is_empty() {
                    return Err("spec.applyTo: required for ModifySet".into());
                }
                if location.ends_in_list_selector() {
                    return Err("spec.location: ModifySet's location is the list itself, not a list selector".into());
                }
                let values = params["values"]["fromList"].as_array().cloned().ok_or(
                    "spec.parameters.values.fromList: required, the values to merge or prune",
                )?;
                match params["operation"].as_str() {
                    None | Some("merge") => Operation::Merge(values),
                    Some("prune") => Operation::Prune(values),
                    Some(other) => {
                        return Err(format!(
                            "spec.parameters.operation: {other:?} is not merge or prune"
                        ));
                    }
                }
            }
        };
        Ok(Self {
            kind,
            name: name.to_owned(),
            describe: doc.describe(),
            apply_to,
            matcher,
            location,
            path_tests,
            operation,
        })
    }

    fn applies_to(&self, review: &Review) -> bool {
        if self.kind == Kind::AssignMetadata {
            return true;
        }
        let object = review.object_ref();
        let (group, version, kind) = (
            object.group.as_str(),
            object.version.as_str(),
            object.kind.as_str(),
        );
        let has = |list: &[String], item: &str| list.iter().any(|x| x == item || x == "*");
        self.apply_to
            .iter()
            .any(|a| has(&a.groups, group) && has(&a.kinds, kind) && has(&a.versions, version))
    }

    /// Applies to `object` once; returns whether it changed.
    fn apply(&self, object: &mut Value) -> Result<bool, String> {
        let mut branches = Vec::new();
        expand(
            Some(object),
            &self.location.segments,
            Vec::new(),
            &mut branches,
        );
        let mut changed = false;
        for branch in branches {
            let passes = self.path_tests.iter().all(|t| {
                let exists = lookup(object, &branch[..t.sub_path.segments.len()])
                    .is_some_and(|v| !v.is_null());
                match t.condition {
                    Condition::MustExist => exists,
                    Condition::MustNotExist => !exists,
                }
            });
            if !passes {
                continue;
            }
            let at = |e: String| format!("{} {}: {e}", self.kind.as_str(), self.name);
            changed |= match &self.operation {
                Operation::Assign(v) => set(object, &branch, v, false).map_err(at)?,
                Operation::AssignIfAbsent(v) => set(object, &branch, v, true).map_err(at)?,
                Operation::Merge(values) => merge(object, &branch, values).map_err(at)?,
                Operation::Prune(values) => prune(object, &branch, values),
            };
        }
        Ok(changed)
    }
}

/// One concrete step of a path: an object field or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step<'a> {
    /// Borrowed from the mutator's location: expanding a path allocates no key.
    Key(&'a str),
    Index(usize),
}

/// Concrete paths the location reaches. Fields may be missing (they are created); list
/// selectors only reach elements that exist.
fn expand<'a>(
    node: Option<&Value>,
    segments: &'a [Segment],
    prefix: Vec<Step<'a>>,
    out: &mut Vec<Vec<Step<'a>>>,
) {
    let Some((first, rest)) = segments.split_first() else {
        out.push(prefix);
        return;
    };
    match first {
        Segment::Field(key) => {
            let child = node.and_then(|n| n.get(key));
            let mut next = prefix;
            next.push(Step::Key(key));
            expand(child, rest, next, out);
        }
        Segment::List { key, value } => {
            let Some(Value::Array(items)) = node else {
                return;
            };
            for (i, item) in items.iter().enumerate() {
                let selected = match value {
                    Selector::Any => true,
                    Selector::Value(want) => match &item[key.as_str()] {
                        Value::String(s) => s == want,
                        Value::Number(n) => n.to_string() == *want,
                        Value::Bool(b) => b.to_string() == *want,
                        _ => false,
                    },
                };
                if selected {
                    let mut next = prefix.clone();
                    next.push(Step::Index(i));
                    expand(Some(item), rest, next, out);
                }
            }
        }
    }
}

fn lookup<'a>(mut node: &'a Value, path: &[Step<'_>]) -> Option<&'a Value> {
    for step in path {
        node = match step {
            Step::Key(k) => node.get(*k)?,
            Step::Index(i) => node.get(*i)?,
        };
    }
    Some(node)
}

fn describe_path(path: &[Step<'_>]) -> String {
    let mut s = String::new();
    for step in path {
        match step {
            Step::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Step::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// The container at `path`, creating missing (or null) objects along the way.
fn parent_mut<'a>(object: &'a mut Value, path: &[Step<'_>]) -> Result<&'a mut Value, String> {
    let mut node = object;
    for (depth, step) in path.iter().enumerate() {
        node = match step {
            Step::Key(k) => {
                if node.is_null() {
                    *node = Value::Object(Map::new());
                }
                let found = json_type(node);
                let map = node.as_object_mut().ok_or_else(|| {
                    format!(
                        "cannot set a field under {}: it is {found}, not a mapping",
                        describe_path(&path[..depth])
                    )
                })?;
                if !map.contains_key(*k) {
                    map.insert((*k).to_owned(), Value::Null);
                }
                map.get_mut(*k).ok_or("a field just set is missing")?
            }
            Step::Index(i) => node.get_mut(*i).ok_or_else(|| {
                format!(
                    "list element {} disappeared",
                    describe_path(&path[..=depth])
                )
            })?,
        };
    }
    Ok(node)
}

fn set(
    object: &mut Value,
    path: &[Step<'_>],
    value: &Value,
    only_if_absent: bool,
) -> Result<bool, String> {
    let current = lookup(object, path);
    if current == Some(value) || (only_if_absent && current.is_some_and(|v| !v.is_null())) {
        return Ok(false);
    }
    let slot = parent_mut(object, path)?;
    *slot = value.clone();
    Ok(true)
}

fn merge(object: &mut Value, path: &[Step<'_>], values: &[Value]) -> Result<bool, String> {
    let slot = parent_mut(object, path)?;
    if slot.is_null() {
        *slot = Value::Array(Vec::new());
    }
    let found = json_type(slot);
    let list = slot
        .as_array_mut()
        .ok_or_else(|| format!("{} is {found}, not a list", describe_path(path)))?;
    let mut changed = false;
    for v in values {
        if !list.contains(v) {
            list.push(v.clone());
            changed = true;
        }
    }
    Ok(changed)
}

fn prune(object: &mut Value, path: &[Step<'_>], values: &[Value]) -> bool {
    let Some(list) = lookup(object, path).and_then(Value::as_array) else {
        return false;
    };
    if !list.iter().any(|v| values.contains(v)) {
        return false;
    }
    if let Ok(Some(list)) = parent_mut(object, path).map(Value::as_array_mut) {
        list.retain(|v| !values.contains(v));
    }
    true
}

/// The mutators of a bundle, in application order.
#[derive(Debug, Clone, Default)]
pub struct Mutators {
    list: Vec<Mutator>,
}

impl Mutators {
    /// The mutators, put in application order (kind, then name).
    pub fn new(mut list: Vec<Mutator>) -> Self {
        list.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        Self { list }
    }

    /// The number of mutators.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Every mutator, in application order.
    pub fn list(&self) -> &[Mutator] {
        &self.list
    }

    /// Whether there is no mutator.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The mutated object, or `None` when nothing changes. `namespace` is the object's
    /// Namespace for namespaceSelectors.
    ///
    /// As in Gatekeeper, every pass asks each mutator whether it matches the object as the
    /// mutators before it left it: a label that one mutator sets can bring the object into
    /// another's `match.labelSelector` (or take it out), in the same pass when that mutator
    /// comes later, in the next one otherwise.
    pub fn mutate(
        &self,
        review: &Review,
        namespace: Option<&Value>,
    ) -> Result<Option<Value>, String> {
        let candidates: Vec<&Mutator> = self.list.iter().filter(|m| m.applies_to(review)).collect();
        let matches = |m: &Mutator, review: &Review| {
            m.matcher
                .matches(review, namespace)
                .map_err(|e| format!("{} {}: {e}", m.kind.as_str(), m.name))
        };
        // Nothing can change an object that no mutator matches as it is.
        let mut any = false;
        for m in &candidates {
            if matches(m, review)? {
                any = true;
                break;
            }
        }
        if !any {
            return Ok(None);
        }
        let mut working = review.clone();
        let mut still_changing = Vec::new();
        let mut changed = false;
        for _ in 0..MAX_ITERATIONS {
            still_changing.clear();
            for m in &candidates {
                if matches(m, &working)? && m.apply(working.object_mut())? {
                    still_changing.push(format!("{} {}", m.kind.as_str(), m.name));
                }
            }
            if still_changing.is_empty() {
                // A mutator reports a change only when a value differs, and changes that undo
                // each other never converge: no deep comparison with the original is needed.
                // (Were the object equal anyway, its patch would be empty, and none is sent.)
                return Ok(changed.then(|| working.into_object()));
            }
            changed = true;
        }
        Err(format!(
            "mutators do not converge after {MAX_ITERATIONS} passes; still changing the object: {}",
            still_changing.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_str;
    use serde_json::json;
    use std::path::Path;

    fn mutators(yaml: &str) -> Mutators {
        let docs = parse_str(yaml, Path::new("m.yaml")).unwrap();
        Mutators::new(docs.iter().map(|d| Mutator::parse(d).unwrap()).collect())
    }

    fn assign(name: &str, location: &str, value: &str, tests: &str) -> String {
        format!(
            "apiVersion: mutations.gatekeeper.sh/v1\nkind: Assign\nmetadata: {{name: {name}}}\nspec:\n  applyTo: [{{groups: [\"\"], kinds: [Pod], versions: [v1]}}]\n  location: '{location}'\n  parameters:\n    assign: {{value: {value}}}\n{tests}---\n"
        )
    }

    fn must_not_exist(path: &str) -> String {
        format!("    pathTests: [{{subPath: '{path}', condition: MustNotExist}}]\n")
    }

    fn pod(spec: Value) -> Review {
        Review::from_object(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns"}, "spec": spec}))
    }

    fn run(m: &Mutators, review: &Review) -> Option<Value> {
        m.mutate(review, None).unwrap()
    }

    #[test]
    fn creates_missing_parents() {
        let m = mutators(&assign(
            "a",
            "spec.securityContext.seccompProfile.type",
            "RuntimeDefault",
            "",
        ));
        let out = run(&m, &pod(json!({"containers": []}))).unwrap();
        assert_eq!(
            out["spec"]["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
    }

    #[test]
    fn glob_selector_reaches_every_element_and_never_creates_one() {
        let m = mutators(&assign(
            "a",
            "spec.containers[name: *].securityContext.readOnlyRootFilesystem",
            "true",
            "",
        ));
        let out = run(
            &m,
            &pod(json!({"containers": [{"name": "a"}, {"name": "b"}]})),
        )
        .unwrap();
        for c in out["spec"]["containers"].as_array().unwrap() {
            assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        }
        assert_eq!(
            run(&m, &pod(json!({}))),
            None,
            "no containers list: nothing to do"
        );
        assert_eq!(run(&m, &pod(json!({"containers": []}))), None);
    }

    #[test]
    fn value_selector_reaches_only_the_named_element() {
        let m = mutators(&assign(
            "a",
            "spec.containers[name: app].imagePullPolicy",
            "Always",
            "",
        ));
        let out = run(
            &m,
            &pod(json!({"containers": [{"name": "app"}, {"name": "sidecar"}]})),
        )
        .unwrap();
        assert_eq!(out["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert!(
            out["spec"]["containers"][1]
                .get("imagePullPolicy")
                .is_none()
        );
        assert_eq!(
            run(&m, &pod(json!({"containers": [{"name": "other"}]}))),
            None
        );
    }

    #[test]
    fn quoted_star_selects_the_literal_name() {
        let m = mutators(&assign(
            "a",
            r#"spec.containers[name: "*"].tty"#,
            "true",
            "",
        ));
        let out = run(
            &m,
            &pod(json!({"containers": [{"name": "*"}, {"name": "b"}]})),
        )
        .unwrap();
        assert_eq!(out["spec"]["containers"][0]["tty"], true);
        assert!(out["spec"]["containers"][1].get("tty").is_none());
    }

    #[test]
    fn numeric_list_keys_compare_as_text() {
        let m = mutators(&assign(
            "a",
            "spec.containers[name: *].ports[containerPort: 80].protocol",
            "TCP",
            "",
        ));
        let out = run(&m, &pod(json!({"containers": [{"name": "a", "ports": [{"containerPort": 80}, {"containerPort": 443}]}]}))).unwrap();
        assert_eq!(out["spec"]["containers"][0]["ports"][0]["protocol"], "TCP");
        assert!(
            out["spec"]["containers"][0]["ports"][1]
                .get("protocol")
                .is_none()
        );
    }

    #[test]
    fn must_not_exist_keeps_explicit_values_per_element() {
        let loc = "spec.containers[name: *].securityContext.allowPrivilegeEscalation";
        let m = mutators(&assign("a", loc, "false", &must_not_exist(loc)));
        let out = run(
            &m,
            &pod(json!({"containers": [
            {"name": "a", "securityContext": {"allowPrivilegeEscalation": true}},
            {"name": "b"}]})),
        )
        .unwrap();
        assert_eq!(
            out["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"],
            true
        );
        assert_eq!(
            out["spec"]["containers"][1]["securityContext"]["allowPrivilegeEscalation"],
            false
        );
    }

    #[test]
    fn must_exist_only_touches_existing_parents() {
        let yaml = assign(
            "a",
            "spec.securityContext.runAsNonRoot",
            "true",
            "    pathTests: [{subPath: 'spec.securityContext', condition: MustExist}]\n",
        );
        let m = mutators(&yaml);
        assert_eq!(run(&m, &pod(json!({}))), None);
        let out = run(&m, &pod(json!({"securityContext": {}}))).unwrap();
        assert_eq!(out["spec"]["securityContext"]["runAsNonRoot"], true);
    }

    #[test]
    fn assign_metadata_only_adds() {
        let m = mutators(
            "apiVersion: mutations.gatekeeper.sh/v1\nkind: AssignMetadata\nmetadata: {name: mtls}\nspec:\n  location: 'metadata.labels.\"sidecar.istio.io/inject\"'\n  parameters: {assign: {value: \"true\"}}\n",
        );
        let out = run(&m, &pod(json!({}))).unwrap();
        assert_eq!(out["metadata"]["labels"]["sidecar.istio.io/inject"], "true");
        let opted_out = Review::from_object(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"sidecar.istio.io/inject": "false"}}}));
        assert_eq!(
            run(&m, &opted_out),
            None,
            "an existing label is never overridden"
        );
    }

    #[test]
    fn modify_set_merges_and_prunes() {
        let set = |op: &str| {
            format!(
                "apiVersion: mutations.gatekeeper.sh/v1\nkind: ModifySet\nmetadata: {{name: caps}}\nspec:\n  applyTo: [{{groups: [\"\"], kinds: [Pod], versions: [v1]}}]\n  location: 'spec.containers[name: *].securityContext.capabilities.drop'\n  parameters:\n    operation: {op}\n    values: {{fromList: [ALL]}}\n"
            )
        };
        let merge = mutators(&set("merge"));
        let out = run(&merge, &pod(json!({"containers": [{"name": "a"}, {"name": "b", "securityContext": {"capabilities": {"drop": ["NET_RAW"]}}}]}))).unwrap();
        assert_eq!(
            out["spec"]["containers"][0]["securityContext"]["capabilities"]["drop"],
            json!(["ALL"])
        );
        assert_eq!(
            out["spec"]["containers"][1]["securityContext"]["capabilities"]["drop"],
            json!(["NET_RAW", "ALL"])
        );
        let prune = mutators(&set("prune"));
        let out = run(&prune, &pod(json!({"containers": [{"name": "a", "securityContext": {"capabilities": {"drop": ["ALL", "NET_RAW"]}}}]}))).unwrap();
        assert_eq!(
            out["spec"]["containers"][0]["securityContext"]["capabilities"]["drop"],
            json!(["NET_RAW"])
        );
        assert_eq!(
            run(&prune, &pod(json!({"containers": [{"name": "a"}]}))),
            None
        );
    }

    #[test]
    fn apply_to_restricts_group_kind_and_version() {
        let m = mutators(&assign("a", "spec.x", "1", ""));
        let deployment = Review::from_object(
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {}}),
        );
        assert_eq!(run(&m, &deployment), None);
    }

    #[test]
    fn converges_and_is_idempotent() {
        let loc = "spec.securityContext.runAsNonRoot";
        let m = mutators(&assign("a", loc, "true", &must_not_exist(loc)));
        let once = run(&m, &pod(json!({}))).unwrap();
        let again = Review::from_object(once);
        assert_eq!(run(&m, &again), None);
    }

    #[test]
    fn oscillating_mutators_are_an_error() {
        let m = mutators(&(assign("a", "spec.x", "1", "") + &assign("b", "spec.x", "2", "")));
        let err = m.mutate(&pod(json!({})), None).unwrap_err();
        assert!(
            err.contains("do not converge") && err.contains("Assign a") && err.contains("Assign b"),
            "{err}"
        );
    }

    #[test]
    fn a_scalar_in_the_way_is_an_error_naming_the_path() {
        let m = mutators(&assign(
            "a",
            "spec.securityContext.runAsNonRoot",
            "true",
            "",
        ));
        let err = m
            .mutate(&pod(json!({"securityContext": "oops"})), None)
            .unwrap_err();
        assert!(
            err.contains("Assign a") && err.contains("spec.securityContext: it is a string"),
            "{err}"
        );
    }

    #[test]
    fn a_label_set_by_one_mutator_brings_the_object_into_anothers_match() {
        // The Assign sorts before the AssignMetadata (kind order) and matches only pods
        // labelled team=payments, which the AssignMetadata adds: Gatekeeper re-matches every
        // mutator on the object as mutated so far, so the Assign applies in the second pass.
        let yaml = "apiVersion: mutations.gatekeeper.sh/v1\nkind: Assign\nmetadata: {name: payments-seccomp}\nspec:\n  applyTo: [{groups: [\"\"], kinds: [Pod], versions: [v1]}]\n  match:\n    labelSelector: {matchLabels: {team: payments}}\n  location: spec.securityContext.seccompProfile.type\n  parameters: {assign: {value: RuntimeDefault}}\n---\napiVersion: mutations.gatekeeper.sh/v1\nkind: AssignMetadata\nmetadata: {name: team-label}\nspec:\n  location: metadata.labels.team\n  parameters: {assign: {value: payments}}\n";
        let m = mutators(yaml);
        assert_eq!(
            m.list()[0].name,
            "payments-seccomp",
            "the Assign comes first"
        );
        let mutated = run(&m, &pod(json!({"containers": [{"name": "a"}]}))).unwrap();
        assert_eq!(mutated["metadata"]["labels"]["team"], "payments");
        assert_eq!(
            mutated["spec"]["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{mutated}"
        );
        // And a label another mutator removes from the match: a pod already labelled
        // team=other is never relabelled (AssignMetadata only adds), so the Assign stays off.
        let mut labelled = pod(json!({"containers": [{"name": "a"}]}));
        labelled.object_mut()["metadata"]["labels"] = json!({"team": "other"});
        assert!(run(&m, &labelled).is_none());
    }

    #[test]
    fn the_patch_turns_the_original_into_the_mutated_object() {
        let loc = "spec.containers[name: *].securityContext.readOnlyRootFilesystem";
        let m = mutators(&assign("a", loc, "true", &must_not_exist(loc)));
        let review =
            pod(json!({"containers": [{"name": "a"}, {"name": "b", "securityContext": {}}]}));
        let mutated = run(&m, &review).unwrap();
        let p = patch::diff(review.object(), &mutated);
        let mut applied = review.object().clone();
        json_patch::patch(&mut applied, &p).unwrap();
        assert_eq!(applied, mutated);
    }

    #[test]
    fn bad_mutators_name_the_field() {
        let cases = [
            (assign("a", "spec.containers[name: *", "1", ""), "spec.location \"spec.containers[name: *\": position 23"),
            (assign("a", "metadata.labels.x", "1", ""), "use AssignMetadata"),
            (assign("a", "spec.x.y", "1", "    pathTests: [{subPath: 'spec.z', condition: MustExist}]\n"), "must be a prefix"),
            (assign("a", "spec.x", "1", "    pathTests: [{subPath: 'spec.x', condition: Maybe}]\n"), "condition: \"Maybe\""),
            (assign("a", "spec.x", "1", "").replace("  applyTo: [{groups: [\"\"], kinds: [Pod], versions: [v1]}]\n", ""), "spec.applyTo: required"),
            ("apiVersion: mutations.gatekeeper.sh/v1\nkind: AssignMetadata\nmetadata: {name: m}\nspec:\n  location: spec.x\n  parameters: {assign: {value: a}}\n".to_owned(), "AssignMetadata sets metadata.labels"),
            ("apiVersion: mutations.gatekeeper.sh/v1\nkind: ModifySet\nmetadata: {name: m}\nspec:\n  applyTo: [{groups: [\"\"], kinds: [Pod], versions: [v1]}]\n  location: spec.x\n  parameters: {operation: replace, values: {fromList: [a]}}\n".to_owned(), "operation: \"replace\""),
        ];
        for (yaml, needle) in cases {
            let docs = parse_str(&yaml, Path::new("m.yaml")).unwrap();
            let err = Mutator::parse(&docs[0]).unwrap_err();
            assert!(err.contains(needle), "{err} should contain {needle}");
        }
    }
}
