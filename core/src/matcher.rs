//! `spec.match` of constraints (and mutators): which objects a rule applies to.
//!
//! Every given matcher must hold; an absent one matches everything. A Namespace is matched
//! against the namespace matchers by its own name and labels. A matcher that cannot be decided
//! (a namespaceSelector without the namespace's labels) is an error, never a silent skip.
//!
//! [`Match`] is a parsed `spec.match`, built of [`KindSelector`]s, name [`Glob`]s and
//! [`LabelSelector`]s; [`Match::matches`] judges a review.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::admission::{Review, Source};
use crate::object::labels_of;

/// A name pattern: exact, `prefix*`, `*suffix`, `*infix*` or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(String);

impl Glob {
    /// The pattern as written; a `*` counts only at either end.
    pub fn new(pattern: &str) -> Self {
        Self(pattern.to_owned())
    }

    /// The pattern as written.
    pub fn pattern(&self) -> &str {
        &self.0
    }

    /// Whether `s` fits the pattern.
    pub fn matches(&self, s: &str) -> bool {
        let p = self.0.as_str();
        match (p.strip_prefix('*'), p.strip_suffix('*')) {
            _ if p == "*" => true,
            (Some(rest), _) if rest.ends_with('*') => s.contains(&rest[..rest.len() - 1]),
            (Some(suffix), _) => s.ends_with(suffix),
            (None, Some(prefix)) => s.starts_with(prefix),
            (None, None) => s == p,
        }
    }
}

/// The operator of a label selector requirement, as Kubernetes defines it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    /// The label is set to one of the values.
    In,
    /// The label is not set, or set to none of the values.
    NotIn,
    /// The label is set, to any value.
    Exists,
    /// The label is not set.
    DoesNotExist,
}

/// One requirement of a label selector: a `matchExpressions` entry, or a `matchLabels` entry read
/// as `In` with its one value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// How the label's value is judged.
    pub operator: Operator,
    /// The values of `In` and `NotIn` (at least one); empty for `Exists` and `DoesNotExist`.
    pub values: Vec<String>,
}

/// A Kubernetes label selector: `matchLabels` and `matchExpressions`, ANDed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// Every requirement; none matches everything.
    pub requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses a label selector; `field` is its path for messages. Unknown fields, non-string
    /// values, `In`/`NotIn` without values and `Exists`/`DoesNotExist` with values are errors.
    pub fn parse(value: &Value, field: &str) -> Result<Self, String> {
        let obj = value.as_object().ok_or_else(|| {
            format!("{field}: must be a mapping with matchLabels and/or matchExpressions")
        })?;
        let mut requirements = Vec::new();
        for key in obj.keys() {
            if key != "matchLabels" && key != "matchExpressions" {
                return Err(format!(
                    "{field}.{key}: unknown field; a label selector has matchLabels and matchExpressions"
                ));
            }
        }
        if let Some(labels) = obj.get("matchLabels").filter(|v| !v.is_null()) {
            let labels = labels.as_object().ok_or_else(|| {
                format!("{field}.matchLabels: must be a mapping of label to value")
            })?;
            for (key, v) in labels {
                let v = v.as_str().ok_or_else(|| {
                    format!("{field}.matchLabels.{key}: label values are strings; quote it")
                })?;
                requirements.push(Requirement {
                    key: key.clone(),
                    operator: Operator::In,
                    values: vec![v.to_owned()],
                });
            }
        }
        if let Some(exprs) = obj.get("matchExpressions").filter(|v| !v.is_null()) {
            let exprs = exprs
                .as_array()
                .ok_or_else(|| format!("{field}.matchExpressions: must be a list"))?;
            for (i, e) in exprs.iter().enumerate() {
                let at = format!("{field}.matchExpressions[{i}]");
                let key = e["key"]
                    .as_str()
                    .filter(|k| !k.is_empty())
                    .ok_or_else(|| format!("{at}.key: required"))?;
                let operator = match e["operator"].as_str() {
                    Some("In") => Operator::In,
                    Some("NotIn") => Operator::NotIn,
                    Some("Exists") => Operator::Exists,
                    Some("DoesNotExist") => Operator::DoesNotExist,
                    other => {
                        return Err(format!(
                            "{at}.operator: {other:?} is not one of In, NotIn, Exists, DoesNotExist"
                        ));
                    }
                };
                let values: Vec<String> = match &e["values"] {
                    Value::Null => Vec::new(),
                    Value::Array(vs) => vs
                        .iter()
                        .map(|v| {
                            v.as_str()
                                .map(str::to_owned)
                                .ok_or_else(|| format!("{at}.values: label values are strings"))
                        })
                        .collect::<Result<_, _>>()?,
                    _ => return Err(format!("{at}.values: must be a list of strings")),
                };
                match operator {
                    Operator::In | Operator::NotIn if values.is_empty() => {
                        return Err(format!(
                            "{at}.values: {:?} needs at least one value",
                            e["operator"]
                        ));
                    }
                    Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                        return Err(format!(
                            "{at}.values: must be empty for {:?}",
                            e["operator"]
                        ));
                    }
                    _ => {}
                }
                requirements.push(Requirement {
                    key: key.to_owned(),
                    operator,
                    values,
                });
            }
        }
        Ok(Self { requirements })
    }

    /// Whether `labels` meet every requirement.
    pub fn matches(&self, labels: &BTreeMap<&str, &str>) -> bool {
        self.requirements.iter().all(|r| {
            let value = labels.get(r.key.as_str());
            match r.operator {
                Operator::In => value.is_some_and(|v| r.values.iter().any(|x| x == v)),
                Operator::NotIn => value.is_none_or(|v| !r.values.iter().any(|x| x == v)),
                Operator::Exists => value.is_some(),
                Operator::DoesNotExist => value.is_none(),
            }
        })
    }
}

/// One `match.kinds` entry: the object's group is one of `apiGroups` and its kind one of `kinds`.
/// An empty list or a `*` entry matches anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindSelector {
    /// `apiGroups`; `""` is the core group.
    pub api_groups: Vec<String>,
    /// `kinds`.
    pub kinds: Vec<String>,
}

impl KindSelector {
    pub(crate) fn matches(&self, group: &str, kind: &str) -> bool {
        let any = |list: &[String], item: &str| {
            list.is_empty() || list.iter().any(|x| x == "*" || x == item)
        };
        any(&self.kinds, kind) && any(&self.api_groups, group)
    }
}

/// `match.scope`: cluster-scoped objects, namespaced objects, or both. A Namespace is
/// cluster-scoped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// `*` or absent: both.
    #[default]
    All,
    /// Only cluster-scoped objects (Namespaces included).
    Cluster,
    /// Only objects in a namespace.
    Namespaced,
}

/// `match.source`: whether a rule applies to objects under review (`Original`), to the resultants
/// of workload expansion (`Generated`), or to both (`All`, the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourceMatch {
    /// Both (`All`, or absent).
    #[default]
    All,
    /// Only objects under review.
    Original,
    /// Only resultants of expansion.
    Generated,
}

impl SourceMatch {
    fn matches(self, source: Source) -> bool {
        match self {
            SourceMatch::All => true,
            SourceMatch::Original => source == Source::Original,
            SourceMatch::Generated => source == Source::Generated,
        }
    }
}

/// A parsed `spec.match`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Match {
    /// `kinds`: the object's group and kind fit one of these entries (none: any kind).
    pub kinds: Vec<KindSelector>,
    /// `scope`: cluster-scoped objects, namespaced ones, or both.
    pub scope: Scope,
    /// `namespaces`: the object's namespace fits one of these (none: any namespace). Cluster-scoped
    /// objects other than Namespaces are not held to it.
    pub namespaces: Vec<Glob>,
    /// `excludedNamespaces`: the object's namespace fits none of these. Cluster-scoped objects
    /// other than Namespaces are not held to it.
    pub excluded_namespaces: Vec<Glob>,
    /// `labelSelector`, over the object's labels; on UPDATE the old object's labels match too.
    pub label_selector: Option<LabelSelector>,
    /// `namespaceSelector`, over the labels of the object's Namespace (or of a Namespace itself).
    /// Cluster-scoped objects other than Namespaces are not held to it.
    pub namespace_selector: Option<LabelSelector>,
    /// `name`: the object's name fits this pattern.
    pub name: Option<Glob>,
    /// `source`: objects under review, resultants of expansion, or both.
    pub source: SourceMatch,
}

/// A JSON list of strings (absent is empty); `field` names it in the error.
pub(crate) fn string_list(value: &Value, field: &str) -> Result<Vec<String>, String> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{field}: must be a list of strings"))
            })
            .collect(),
        _ => Err(format!("{field}: must be a list of strings")),
    }
}

impl Match {
    /// Parses `spec.match`; `field` is its path for messages.
    pub fn parse(value: &Value, field: &str) -> Result<Self, String> {
        let Some(obj) = value.as_object() else {
            return if value.is_null() {
                Ok(Self::default())
            } else {
                Err(format!("{field}: must be a mapping"))
            };
        };
        const KNOWN: [&str; 8] = [
            "kinds",
            "scope",
            "namespaces",
            "excludedNamespaces",
            "labelSelector",
            "namespaceSelector",
            "name",
            "source",
        ];
        if let Some(unknown) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(format!(
                "{field}.{unknown}: unknown matcher; use one of {}",
                KNOWN.join(", ")
            ));
        }
        let mut kinds = Vec::new();
        match &value["kinds"] {
            Value::Null => {}
            Value::Array(entries) => {
                for (i, entry) in entries.iter().enumerate() {
                    let at = format!("{field}.kinds[{i}]");
                    if !entry.is_object() {
                        return Err(format!("{at}: must be a mapping with apiGroups and kinds"));
                    }
                    kinds.push(KindSelector {
                        api_groups: string_list(&entry["apiGroups"], &format!("{at}.apiGroups"))?,
                        kinds: string_list(&entry["kinds"], &format!("{at}.kinds"))?,
                    });
                }
            }
            _ => return Err(format!("{field}.kinds: must be a list")),
        }
        let scope = match value["scope"].as_str() {
            None | Some("*") => Scope::All,
            Some("Cluster") => Scope::Cluster,
            Some("Namespaced") => Scope::Namespaced,
            Some(other) => {
                return Err(format!(
                    "{field}.scope: {other:?} is not one of \"*\", \"Cluster\", \"Namespaced\""
                ));
            }
        };
        let globs = |key: &str| -> Result<Vec<Glob>, String> {
            Ok(string_list(&value[key], &format!("{field}.{key}"))?
                .iter()
                .map(|s| Glob::new(s))
                .collect())
        };
        let selector = |key: &str| -> Result<Option<LabelSelector>, String> {
            match &value[key] {
                Value::Null => Ok(None),
                v => LabelSelector::parse(v, &format!("{field}.{key}")).map(Some),
            }
        };
        let name = match &value["name"] {
            Value::Null => None,
            Value::String(s) if s.is_empty() => None,
            Value::String(s) => Some(Glob::new(s)),
            _ => return Err(format!("{field}.name: must be a string")),
        };
        // Gatekeeper's values, case and all: a misspelt one is an error there too.
        let source = match &value["source"] {
            Value::Null => SourceMatch::All,
            Value::String(s) if s.is_empty() || s == "All" => SourceMatch::All,
            Value::String(s) if s == "Original" => SourceMatch::Original,
            Value::String(s) if s == "Generated" => SourceMatch::Generated,
            other => {
                return Err(format!(
                    "{field}.source: {other} is not one of \"All\", \"Original\", \"Generated\""
                ));
            }
        };
        Ok(Self {
            source,
            kinds,
            scope,
            namespaces: globs("namespaces")?,
            excluded_namespaces: globs("excludedNamespaces")?,
            label_selector: selector("labelSelector")?,
            namespace_selector: selector("namespaceSelector")?,
            name,
        })
    }

    /// The kinds this match can apply to, for indexing; `None` when it applies to any kind.
    pub fn indexed_kinds(&self) -> Option<Vec<&str>> {
        if self.kinds.is_empty()
            || self
                .kinds
                .iter()
                .any(|k| k.kinds.is_empty() || k.kinds.iter().any(|x| x == "*"))
        {
            return None;
        }
        Some(
            self.kinds
                .iter()
                .flat_map(|k| k.kinds.iter().map(String::as_str))
                .collect(),
        )
    }

    /// Whether objects of `group`/`kind` from `source` can be in scope (what the webhook rules
    /// need: the other matchers depend on the object).
    pub fn may_match_kind(&self, group: &str, kind: &str, source: Source) -> bool {
        self.source.matches(source)
            && (self.kinds.is_empty() || self.kinds.iter().any(|k| k.matches(group, kind)))
    }

    /// Whether the review's object is in scope. `namespace` is the object's Namespace, when known.
    pub fn matches(&self, review: &Review, namespace: Option<&Value>) -> Result<bool, String> {
        if !self.source.matches(review.source()) {
            return Ok(false);
        }
        let object = review.object_ref();
        let (group, kind) = (object.group.as_str(), object.kind.as_str());
        if !self.kinds.is_empty() && !self.kinds.iter().any(|k| k.matches(group, kind)) {
            return Ok(false);
        }
        let is_namespace = object.is_namespace();
        let ns = object.namespace.as_str();
        let has_namespace = !ns.is_empty();
        // A Namespace is cluster-scoped; anything else with a namespace is namespaced.
        let cluster_scoped = is_namespace || !has_namespace;
        match self.scope {
            Scope::Cluster if !cluster_scoped => return Ok(false),
            Scope::Namespaced if cluster_scoped => return Ok(false),
            _ => {}
        }
        // Cluster-scoped objects other than Namespaces cannot be excluded by namespace matchers.
        let ns_name = object.effective_namespace();
        let namespaced = is_namespace || has_namespace;
        if namespaced {
            if !self.namespaces.is_empty() && !self.namespaces.iter().any(|g| g.matches(ns_name)) {
                return Ok(false);
            }
            if self.excluded_namespaces.iter().any(|g| g.matches(ns_name)) {
                return Ok(false);
            }
        }
        if let Some(selector) = &self.label_selector {
            // On UPDATE the old object counts too: removing a label must not escape a rule.
            let new = selector.matches(&labels_of(review.object()));
            let old = review.old_object().is_object()
                && selector.matches(&labels_of(review.old_object()));
            if !new && !old {
                return Ok(false);
            }
        }
        if let Some(selector) = &self.namespace_selector
            && namespaced
        {
            let labels = if is_namespace {
                labels_of(review.object())
            } else {
                match namespace {
                    Some(ns_obj) => labels_of(ns_obj),
                    None => {
                        return Err(format!(
                            "namespaceSelector needs the labels of Namespace {ns:?}, which is not known; add it to the inventory"
                        ));
                    }
                }
            };
            if !selector.matches(&labels) {
                return Ok(false);
            }
        }
        if let Some(name) = &self.name
            && !name.matches(&object.name)
        {
            return Ok(false);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ns: &str, labels: Value) -> Review {
        Review::from_object(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": ns, "labels": labels}}))
    }

    fn namespace(name: &str, labels: Value) -> Review {
        Review::from_object(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels}}))
    }

    fn cluster_role() -> Review {
        Review::from_object(json!({"apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole", "metadata": {"name": "admin"}}))
    }

    fn m(v: Value) -> Match {
        Match::parse(&v, "spec.match").unwrap()
    }

    #[test]
    fn globs() {
        assert!(Glob::new("kube-*").matches("kube-system"));
        assert!(!Glob::new("kube-*").matches("my-kube"));
        assert!(Glob::new("*-system").matches("gatekeeper-system"));
        assert!(!Glob::new("*-system").matches("system-x"));
        assert!(Glob::new("*dev*").matches("team-dev-1"));
        assert!(Glob::new("*").matches("anything"));
        assert!(Glob::new("exact").matches("exact"));
        assert!(!Glob::new("exact").matches("exactly"));
    }

    #[test]
    fn absent_match_matches_everything() {
        let all = m(json!({}));
        for r in [
            pod("a", json!({})),
            namespace("a", json!({})),
            cluster_role(),
        ] {
            assert_eq!(all.matches(&r, None), Ok(true));
        }
    }

    #[test]
    fn kinds_with_groups_and_wildcards() {
        let core_pods = m(json!({"kinds": [{"apiGroups": [""], "kinds": ["Pod"]}]}));
        assert_eq!(core_pods.matches(&pod("a", json!({})), None), Ok(true));
        assert_eq!(core_pods.matches(&cluster_role(), None), Ok(false));
        let any_group = m(json!({"kinds": [{"apiGroups": ["*"], "kinds": ["ClusterRole"]}]}));
        assert_eq!(any_group.matches(&cluster_role(), None), Ok(true));
        let wrong_group = m(json!({"kinds": [{"apiGroups": ["apps"], "kinds": ["Pod"]}]}));
        assert_eq!(wrong_group.matches(&pod("a", json!({})), None), Ok(false));
        let any_kind = m(json!({"kinds": [{"apiGroups": [""], "kinds": ["*"]}]}));
        assert_eq!(any_kind.matches(&namespace("a", json!({})), None), Ok(true));
        assert_eq!(any_kind.indexed_kinds(), None);
        assert_eq!(core_pods.indexed_kinds(), Some(vec!["Pod"]));
    }

    #[test]
    fn scope() {
        let cluster = m(json!({"scope": "Cluster"}));
        let namespaced = m(json!({"scope": "Namespaced"}));
        assert_eq!(cluster.matches(&cluster_role(), None), Ok(true));
        assert_eq!(cluster.matches(&namespace("a", json!({})), None), Ok(true));
        assert_eq!(cluster.matches(&pod("a", json!({})), None), Ok(false));
        assert_eq!(namespaced.matches(&pod("a", json!({})), None), Ok(true));
        assert_eq!(
            namespaced.matches(&namespace("a", json!({})), None),
            Ok(false)
        );
        assert!(Match::parse(&json!({"scope": "cluster"}), "spec.match").is_err());
    }

    #[test]
    fn namespaces_and_exclusions_use_a_namespace_own_name() {
        let only = m(json!({"namespaces": ["team-*"]}));
        assert_eq!(only.matches(&pod("team-a", json!({})), None), Ok(true));
        assert_eq!(only.matches(&pod("other", json!({})), None), Ok(false));
        assert_eq!(
            only.matches(&namespace("team-b", json!({})), None),
            Ok(true)
        );
        assert_eq!(
            only.matches(&cluster_role(), None),
            Ok(true),
            "cluster-scoped objects are not filtered"
        );
        let excluded = m(json!({"excludedNamespaces": ["kube-*", "*-system"]}));
        assert_eq!(
            excluded.matches(&pod("kube-public", json!({})), None),
            Ok(false)
        );
        assert_eq!(
            excluded.matches(&namespace("palisade-system", json!({})), None),
            Ok(false)
        );
        assert_eq!(
            excluded.matches(&pod("payments", json!({})), None),
            Ok(true)
        );
    }

    #[test]
    fn label_selector_operators() {
        let sel = m(json!({"labelSelector": {"matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["front", "back"]},
                {"key": "legacy", "operator": "DoesNotExist"},
                {"key": "env", "operator": "NotIn", "values": ["dev"]},
                {"key": "team", "operator": "Exists"}]}}));
        let ok = json!({"app": "web", "tier": "front", "env": "prod", "team": "x"});
        assert_eq!(sel.matches(&pod("a", ok.clone()), None), Ok(true));
        for (k, v) in [
            ("app", json!("api")),
            ("tier", json!("db")),
            ("env", json!("dev")),
        ] {
            let mut labels = ok.clone();
            labels[k] = v;
            assert_eq!(sel.matches(&pod("a", labels), None), Ok(false), "{k}");
        }
        let mut legacy = ok.clone();
        legacy["legacy"] = json!("1");
        assert_eq!(sel.matches(&pod("a", legacy), None), Ok(false));
        let mut no_team = ok.clone();
        no_team.as_object_mut().unwrap().remove("team");
        assert_eq!(sel.matches(&pod("a", no_team), None), Ok(false));
        let mut no_env = ok;
        no_env.as_object_mut().unwrap().remove("env");
        assert_eq!(
            sel.matches(&pod("a", no_env), None),
            Ok(true),
            "NotIn holds for an absent key"
        );
    }

    #[test]
    fn label_selector_on_update_counts_the_old_object() {
        let sel = m(json!({"labelSelector": {"matchLabels": {"protected": "true"}}}));
        let mut review = pod("a", json!({}));
        review.set_old_object(json!({"metadata": {"labels": {"protected": "true"}}}));
        assert_eq!(sel.matches(&review, None), Ok(true));
    }

    #[test]
    fn namespace_selector_uses_the_namespace_or_the_object_itself() {
        let sel = m(json!({"namespaceSelector": {"matchLabels": {"security-level": "high"}}}));
        let high = json!({"metadata": {"name": "a", "labels": {"security-level": "high"}}});
        let low = json!({"metadata": {"name": "a", "labels": {"security-level": "low"}}});
        assert_eq!(sel.matches(&pod("a", json!({})), Some(&high)), Ok(true));
        assert_eq!(sel.matches(&pod("a", json!({})), Some(&low)), Ok(false));
        assert_eq!(
            sel.matches(&namespace("a", json!({"security-level": "high"})), None),
            Ok(true)
        );
        assert_eq!(sel.matches(&cluster_role(), None), Ok(true));
        let err = sel.matches(&pod("a", json!({})), None).unwrap_err();
        assert!(err.contains("Namespace \"a\""), "{err}");
    }

    #[test]
    fn name_globs() {
        let sel = m(json!({"name": "web-*"}));
        assert_eq!(sel.matches(&pod("a", json!({})), None), Ok(true));
        let other = m(json!({"name": "api"}));
        assert_eq!(other.matches(&pod("a", json!({})), None), Ok(false));
    }

    #[test]
    fn source_tells_originals_from_resultants() {
        let object =
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "a"}});
        let original = Review::from_object(object.clone());
        let resultant = Review::resultant(object, None);
        for (source, on_original, on_resultant) in [
            (json!(null), true, true),
            (json!(""), true, true),
            (json!("All"), true, true),
            (json!("Original"), true, false),
            (json!("Generated"), false, true),
        ] {
            let sel =
                m(json!({"source": source, "kinds": [{"apiGroups": [""], "kinds": ["Pod"]}]}));
            assert_eq!(sel.matches(&original, None), Ok(on_original), "{source}");
            assert_eq!(sel.matches(&resultant, None), Ok(on_resultant), "{source}");
            assert_eq!(
                sel.may_match_kind("", "Pod", Source::Generated),
                on_resultant
            );
            assert!(!sel.may_match_kind("apps", "Pod", Source::Original));
        }
        for bad in [json!("generated"), json!("Both"), json!(["All"])] {
            let err = Match::parse(&json!({"source": bad}), "spec.match").unwrap_err();
            assert!(err.starts_with("spec.match.source: "), "{err}");
            assert!(err.contains("\"Original\""), "{err}");
        }
    }

    #[test]
    fn bad_matchers_name_the_field() {
        for (v, needle) in [
            (json!({"kinds": "Pod"}), "spec.match.kinds: must be a list"),
            (
                json!({"namespace": ["a"]}),
                "spec.match.namespace: unknown matcher",
            ),
            (
                json!({"labelSelector": {"matchExpressions": [{"key": "a", "operator": "Is"}]}}),
                "spec.match.labelSelector.matchExpressions[0].operator",
            ),
            (
                json!({"labelSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}),
                "needs at least one value",
            ),
            (
                json!({"namespaceSelector": {"matchLabels": {"a": true}}}),
                "spec.match.namespaceSelector.matchLabels.a",
            ),
        ] {
            let err = Match::parse(&v, "spec.match").unwrap_err();
            assert!(err.contains(needle), "{err} should contain {needle}");
        }
    }
}
