//! Workload expansion, as Gatekeeper's `expansion.gatekeeper.sh` ExpansionTemplates do it: a
//! Deployment (the parent) is judged by the pods it would make (the resultants), so a pod
//! constraint cannot be escaped by writing the pod as a template.
//!
//! A template names the parent kinds (`spec.applyTo`, exact groups, versions and kinds), the
//! field that holds the resultant's blueprint (`spec.templateSource`, e.g. `spec.template`), the
//! resultant's kind (`spec.generatedGVK`) and, optionally, the enforcement action of the
//! violations found on resultants (`spec.enforcementAction`). A resultant is:
//!
//! - the blueprint, with `apiVersion`/`kind` from `generatedGVK`, the parent's namespace, the name
//!   `<parent name>-<kind>` in lower case, and an owner reference to the parent;
//! - mutated by the bundle's mutators whose `match.source` is not `Original`;
//! - expanded in turn (a CronJob makes a Job, which makes a Pod), to a depth of 30 as in
//!   Gatekeeper.
//!
//! Resultants are judged by the constraints whose `match.source` is not `Original`; their
//! violations count on the parent, prefixed `[Implied by <template>]`, under the template's
//! `enforcementAction` when it sets one.
//!
//! [`Expansions`] are a bundle's templates ([`ExpansionTemplate`]), checked together; [`judge`]
//! gives the violations of an object's resultants.

use std::collections::HashMap;
use std::fmt;
use std::time::Instant;

use serde_json::{Map, Value};

use crate::admission::{Review, Source};
use crate::bundle::{BundleError, Problem};
use crate::inventory::Inventory;
use crate::manifest::Document;
use crate::matcher::KindSelector;
use crate::mutation::Mutators;
use crate::object::split_api_version;
use crate::policy::{Action, FailureKind, OutOfTime, Point, Policies, Violation};

/// The API group of ExpansionTemplates.
pub const EXPANSION_GROUP: &str = "expansion.gatekeeper.sh";
/// The kind of an ExpansionTemplate.
pub const KIND: &str = "ExpansionTemplate";

/// Gatekeeper's bound on nested expansion. Load refuses cycles, so a chain this long means a
/// bundle of 30 chained templates; the bound stays as a second guard.
const MAX_DEPTH: usize = 30;

/// Gatekeeper refuses longer ExpansionTemplate names.
const MAX_NAME: usize = 63;

/// A group, version and kind, matched exactly (Gatekeeper reads `*` literally here).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gvk {
    /// The API group; empty for the core group.
    pub group: String,
    /// The API version (`v1`).
    pub version: String,
    /// The kind (`Deployment`).
    pub kind: String,
}

impl Gvk {
    fn is(&self, group: &str, version: &str, kind: &str) -> bool {
        self.kind == kind && self.group == group && self.version == version
    }

    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

impl fmt::Display for Gvk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.api_version(), self.kind)
    }
}

/// One ExpansionTemplate.
#[derive(Debug, Clone)]
pub struct ExpansionTemplate {
    /// `metadata.name`.
    pub name: String,
    /// "ExpansionTemplate name at file (document N)".
    pub describe: String,
    /// Every parent kind, one per group × version × kind of `spec.applyTo`.
    pub parents: Vec<Gvk>,
    /// `spec.templateSource`, split at the dots.
    source: Vec<String>,
    /// `spec.generatedGVK`: the kind of the resultants.
    pub generated: Gvk,
    /// Overrides the constraints' actions on this template's resultants.
    pub action: Option<Action>,
}

/// One resultant object and the template that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Resultant {
    /// The resultant, mutated.
    pub object: Value,
    /// The name of the ExpansionTemplate that made it.
    pub template: String,
    /// The template's `spec.enforcementAction`, if it sets one.
    pub action: Option<Action>,
}

/// Why an object could not be expanded; the review fails closed on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ExpansionTemplate {template}: {message}")]
pub struct ExpandError {
    /// The name of the ExpansionTemplate.
    pub template: String,
    /// What went wrong.
    pub message: String,
}

/// The ExpansionTemplates of a bundle, checked together (no cycles), indexed by parent kind.
#[derive(Debug, Clone, Default)]
pub struct Expansions {
    /// Sorted by name: resultants and their messages come in a stable order.
    templates: Vec<ExpansionTemplate>,
    /// Parent kind → templates that expand it; keyed by kind alone so that a lookup allocates
    /// nothing.
    by_kind: HashMap<String, Vec<usize>>,
}

fn string_list(value: &Value, field: &str) -> Result<Vec<String>, String> {
    let list = crate::matcher::string_list(value, field)?;
    if list.is_empty() {
        return Err(format!(
            "{field}: required, a non-empty list (write \"\" for the core group)"
        ));
    }
    if list.iter().any(|s| s == "*") {
        return Err(format!(
            "{field}: \"*\" is not a wildcard here; Gatekeeper matches ExpansionTemplate kinds exactly, so it would expand nothing. List the groups, versions and kinds"
        ));
    }
    Ok(list)
}

impl ExpansionTemplate {
    /// Reads one ExpansionTemplate document; errors name the field and the fix.
    pub fn parse(doc: &Document) -> Result<Self, String> {
        match doc.api_version() {
            "expansion.gatekeeper.sh/v1alpha1" | "expansion.gatekeeper.sh/v1beta1" => {}
            other => {
                return Err(format!(
                    "apiVersion {other:?} is not expansion.gatekeeper.sh/v1alpha1 or v1beta1"
                ));
            }
        }
        let name = doc.name();
        if name.is_empty() {
            return Err("metadata.name: required".into());
        }
        if name.len() > MAX_NAME {
            return Err(format!(
                "metadata.name: at most {MAX_NAME} characters, as Gatekeeper requires"
            ));
        }
        let spec = &doc.value["spec"];
        let apply_to = match &spec["applyTo"] {
            Value::Array(list) if !list.is_empty() => list,
            _ => {
                return Err("spec.applyTo: required, the parent kinds, e.g. [{groups: [apps], kinds: [Deployment], versions: [v1]}]".into());
            }
        };
        let mut parents = Vec::new();
        for (i, entry) in apply_to.iter().enumerate() {
            let at = format!("spec.applyTo[{i}]");
            if !entry.is_object() {
                return Err(format!(
                    "{at}: must be a mapping with groups, kinds and versions"
                ));
            }
            let groups = string_list(&entry["groups"], &format!("{at}.groups"))?;
            let versions = string_list(&entry["versions"], &format!("{at}.versions"))?;
            let kinds = string_list(&entry["kinds"], &format!("{at}.kinds"))?;
            for group in &groups {
                for version in &versions {
                    for kind in &kinds {
                        let gvk = Gvk {
                            group: group.clone(),
                            version: version.clone(),
                            kind: kind.clone(),
                        };
                        if !parents.contains(&gvk) {
                            parents.push(gvk);
                        }
                    }
                }
            }
        }
        let source_text = match &spec["templateSource"] {
            Value::String(s) if !s.is_empty() => s.as_str(),
            _ => {
                return Err("spec.templateSource: required, the parent's field that holds the resultant, e.g. spec.template".into());
            }
        };
        let source: Vec<String> = source_text.split('.').map(str::to_owned).collect();
        if source.iter().any(String::is_empty) {
            return Err(format!(
                "spec.templateSource {source_text:?}: a dotted path of field names, e.g. spec.template"
            ));
        }
        let generated = &spec["generatedGVK"];
        let field = |key: &str| -> Result<String, String> {
            match &generated[key] {
                Value::Null => Ok(String::new()),
                Value::String(s) => Ok(s.clone()),
                _ => Err(format!("spec.generatedGVK.{key}: must be a string")),
            }
        };
        let generated = Gvk {
            group: field("group")?,
            version: field("version")?,
            kind: field("kind")?,
        };
        if generated.kind.is_empty() || generated.version.is_empty() {
            return Err("spec.generatedGVK: kind and version are required (group is \"\" for the core group), e.g. {group: \"\", version: v1, kind: Pod}".into());
        }
        if parents.contains(&generated) {
            return Err(format!(
                "spec.generatedGVK: {generated} is also in spec.applyTo; a template may not expand its own resultants"
            ));
        }
        let action = match &spec["enforcementAction"] {
            Value::Null => None,
            Value::String(s) if s.is_empty() => None,
            Value::String(s) => Some(Action::parse(s).ok_or_else(|| {
                format!(
                    "spec.enforcementAction: {s:?} is not one of deny, warn, dryrun (or absent, to keep each constraint's own)"
                )
            })?),
            other => {
                return Err(format!(
                    "spec.enforcementAction: {other} is not one of deny, warn, dryrun"
                ));
            }
        };
        Ok(Self {
            name: name.to_owned(),
            describe: doc.describe(),
            parents,
            source,
            generated,
            action,
        })
    }

    /// The resultant made of `parent` (of this template's parent kinds), in `namespace`.
    fn resultant(&self, parent: &Value, namespace: &str) -> Result<Value, ExpandError> {
        let fail = |message: String| ExpandError {
            template: self.name.clone(),
            message,
        };
        let parent_name = parent["metadata"]["name"].as_str().unwrap_or_default();
        let mut blueprint = parent;
        for key in &self.source {
            blueprint = blueprint.get(key).ok_or_else(|| {
                fail(format!(
                    "the parent {parent_name:?} has no {} to expand",
                    self.source.join(".")
                ))
            })?;
        }
        let Value::Object(fields) = blueprint else {
            return Err(fail(format!(
                "{} of the parent {parent_name:?} is {}, not an object to expand",
                self.source.join("."),
                crate::object::json_type(blueprint)
            )));
        };
        let mut object = fields.clone();
        object.insert(
            "apiVersion".into(),
            Value::from(self.generated.api_version()),
        );
        object.insert("kind".into(), Value::from(self.generated.kind.as_str()));
        let metadata = object
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if !metadata.is_object() {
            *metadata = Value::Object(Map::new());
        }
        let Value::Object(metadata) = metadata else {
            return Err(fail("metadata is not an object".into()));
        };
        if namespace.is_empty() {
            metadata.remove("namespace");
        } else {
            metadata.insert("namespace".into(), Value::from(namespace));
        }
        metadata.insert(
            "name".into(),
            Value::from(format!("{parent_name}-{}", self.generated.kind).to_lowercase()),
        );
        // The parent as owner, as Gatekeeper adds it (with the empty uid it writes).
        let owner = [
            ("apiVersion", &parent["apiVersion"]),
            ("kind", &parent["kind"]),
            ("name", &parent["metadata"]["name"]),
        ];
        if owner
            .iter()
            .all(|(_, v)| v.as_str().is_some_and(|s| !s.is_empty()))
        {
            let refs = metadata
                .entry("ownerReferences")
                .or_insert_with(|| Value::Array(Vec::new()));
            if !refs.is_array() {
                *refs = Value::Array(Vec::new());
            }
            if let Value::Array(refs) = refs
                && !refs.iter().any(|r| owner.iter().all(|(k, v)| &r[*k] == *v))
            {
                let mut entry: Map<String, Value> = owner
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).clone()))
                    .collect();
                entry.insert("uid".into(), Value::from(""));
                refs.push(Value::Object(entry));
            }
        }
        Ok(Value::Object(object))
    }
}

impl Expansions {
    /// The ExpansionTemplates among `docs` (other documents are left alone), checked as a whole:
    /// every problem is reported, and templates that expand each other in a cycle are refused.
    pub fn from_documents(docs: &[Document]) -> Result<Self, BundleError> {
        let mut problems = Vec::new();
        let mut templates: Vec<ExpansionTemplate> = Vec::new();
        for doc in docs
            .iter()
            .filter(|d| d.group() == EXPANSION_GROUP && d.kind() == KIND)
        {
            match ExpansionTemplate::parse(doc) {
                Ok(t) => match templates.iter().find(|p| p.name == t.name) {
                    Some(prev) => problems.push(Problem {
                        at: t.describe.clone(),
                        message: format!("duplicates {}", prev.describe),
                    }),
                    None => templates.push(t),
                },
                Err(message) => problems.push(Problem {
                    at: doc.describe(),
                    message,
                }),
            }
        }
        templates.sort_by(|a, b| a.name.cmp(&b.name));
        problems.extend(cycles(&templates));
        if !problems.is_empty() {
            return Err(BundleError { problems });
        }
        let mut by_kind: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, t) in templates.iter().enumerate() {
            for p in &t.parents {
                let list = by_kind.entry(p.kind.clone()).or_default();
                if !list.contains(&i) {
                    list.push(i);
                }
            }
        }
        Ok(Self { templates, by_kind })
    }

    /// Whether the bundle has no ExpansionTemplate.
    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }

    /// The templates, by name.
    pub fn templates(&self) -> &[ExpansionTemplate] {
        &self.templates
    }

    /// Notes for the bundle's warnings: two templates that make the same kind of the same
    /// parent kind (Gatekeeper runs both, so each violation is reported twice).
    pub fn warnings(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        for (i, a) in self.templates.iter().enumerate() {
            for b in &self.templates[i + 1..] {
                if a.generated != b.generated {
                    continue;
                }
                if let Some(parent) = a.parents.iter().find(|p| b.parents.contains(p)) {
                    out.push(Problem {
                        at: b.describe.clone(),
                        message: format!(
                            "expands {parent} into {} as {} does; both run, so each violation on the resultant is reported twice",
                            b.generated, a.describe
                        ),
                    });
                }
            }
        }
        out
    }

    /// The templates that expand objects of this kind.
    fn for_kind<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
        kind: &'a str,
    ) -> impl Iterator<Item = &'a ExpansionTemplate> + 'a {
        self.by_kind
            .get(kind)
            .into_iter()
            .flatten()
            .filter_map(|&i| self.templates.get(i))
            .filter(move |t| t.parents.iter().any(|p| p.is(group, version, kind)))
    }

    /// Whether objects of this kind are expanded at all.
    pub fn expands(&self, group: &str, version: &str, kind: &str) -> bool {
        self.for_kind(group, version, kind).next().is_some()
    }

    /// The resultants of `object` (of kind `group`/`version`/`kind`, in `namespace`), and
    /// theirs, in Gatekeeper's order (a resultant's own resultants before it). Each one is
    /// mutated by `mutators` as a `Generated` object; `namespace_object` is the Namespace for
    /// their namespaceSelectors.
    pub fn expand(
        &self,
        object: &Value,
        (group, version, kind): (&str, &str, &str),
        namespace: &str,
        mutators: &Mutators,
        namespace_object: Option<&Value>,
    ) -> Result<Vec<Resultant>, ExpandError> {
        let mut out = Vec::new();
        self.expand_into(
            object,
            (group, version, kind),
            namespace,
            mutators,
            namespace_object,
            0,
            &mut out,
        )?;
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn expand_into(
        &self,
        object: &Value,
        (group, version, kind): (&str, &str, &str),
        namespace: &str,
        mutators: &Mutators,
        namespace_object: Option<&Value>,
        depth: usize,
        out: &mut Vec<Resultant>,
    ) -> Result<(), ExpandError> {
        let mut made = Vec::new();
        for template in self.for_kind(group, version, kind) {
            if depth >= MAX_DEPTH {
                return Err(ExpandError {
                    template: template.name.clone(),
                    message: format!("expansion nested deeper than {MAX_DEPTH} levels"),
                });
            }
            let mut resultant = template.resultant(object, namespace)?;
            let review = Review::resultant(resultant.clone(), None);
            if let Some(mutated) =
                mutators
                    .mutate(&review, namespace_object)
                    .map_err(|e| ExpandError {
                        template: template.name.clone(),
                        message: format!("cannot mutate the resultant: {e}"),
                    })?
            {
                resultant = mutated;
            }
            made.push(Resultant {
                object: resultant,
                template: template.name.clone(),
                action: template.action,
            });
        }
        for r in &made {
            let api_version = r.object["apiVersion"].as_str().unwrap_or_default();
            let (g, v) = split_api_version(api_version);
            let k = r.object["kind"].as_str().unwrap_or_default();
            self.expand_into(
                &r.object,
                (g, v, k),
                namespace,
                mutators,
                namespace_object,
                depth + 1,
                out,
            )?;
        }
        out.extend(made);
        Ok(())
    }

    /// The parent kinds whose expansion (directly or through other templates) makes an object
    /// for which `wanted` holds: the kinds the webhook must be sent for a rule on `wanted`.
    pub fn parents_of(&self, wanted: impl Fn(&Gvk) -> bool) -> Vec<KindSelector> {
        let mut reach: Vec<bool> = self
            .templates
            .iter()
            .map(|t| wanted(&t.generated))
            .collect();
        // Load refuses cycles, so this settles within one pass per template.
        loop {
            let mut grew = false;
            for (i, t) in self.templates.iter().enumerate() {
                if reach[i] {
                    continue;
                }
                let feeds = self
                    .templates
                    .iter()
                    .zip(&reach)
                    .any(|(u, &r)| r && u.parents.contains(&t.generated));
                if feeds {
                    reach[i] = true;
                    grew = true;
                }
            }
            if !grew {
                break;
            }
        }
        self.templates
            .iter()
            .zip(reach)
            .filter(|(_, r)| *r)
            .flat_map(|(t, _)| &t.parents)
            .map(|p| KindSelector {
                api_groups: vec![p.group.clone()],
                kinds: vec![p.kind.clone()],
            })
            .collect()
    }
}

/// Templates that expand each other in a cycle (Gatekeeper disables them; a bundle refuses
/// them), one problem per cycle.
fn cycles(templates: &[ExpansionTemplate]) -> Vec<Problem> {
    let n = templates.len();
    // i → j when i's resultants are j's parents.
    let edges: Vec<Vec<usize>> = templates
        .iter()
        .map(|a| {
            (0..n)
                .filter(|&j| templates[j].parents.contains(&a.generated))
                .collect()
        })
        .collect();
    let reaches = |from: usize, to: usize| {
        let mut seen = vec![false; n];
        let mut stack = vec![from];
        while let Some(i) = stack.pop() {
            for &j in &edges[i] {
                if j == to {
                    return true;
                }
                if !seen[j] {
                    seen[j] = true;
                    stack.push(j);
                }
            }
        }
        false
    };
    let mut done = vec![false; n];
    let mut problems = Vec::new();
    for i in 0..n {
        if done[i] || !reaches(i, i) {
            continue;
        }
        let members: Vec<usize> = (0..n)
            .filter(|&j| j == i || (reaches(i, j) && reaches(j, i)))
            .collect();
        for &j in &members {
            done[j] = true;
        }
        let names: Vec<String> = members
            .iter()
            .map(|&j| {
                format!(
                    "{} ({} → {})",
                    templates[j].name,
                    kinds(&templates[j].parents),
                    templates[j].generated
                )
            })
            .collect();
        problems.push(Problem {
            at: templates[i].describe.clone(),
            message: format!(
                "ExpansionTemplates expand each other in a cycle: {}; Gatekeeper disables every template in a cycle. Remove the applyTo entry that closes it",
                names.join(", ")
            ),
        });
    }
    problems
}

fn kinds(parents: &[Gvk]) -> String {
    parents
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The violations of the resultants of `review`'s object, judged by `policies` as Gatekeeper
/// judges them: prefixed `[Implied by <template>]`, under the template's action when it has
/// one. With `mutate_first`, the object is first mutated as the mutating webhook would have done
/// (gator does so; the webhook is sent the object already mutated). An object that cannot be
/// expanded is a deny violation carrying the reason (fail closed).
#[allow(clippy::too_many_arguments)]
pub fn judge(
    expansions: &Expansions,
    policies: &Policies,
    mutators: &Mutators,
    point: Point,
    review: &Review,
    namespace: Option<&Value>,
    inventory: &Inventory,
    deadline: Option<Instant>,
    mutate_first: bool,
) -> Result<Vec<Violation>, OutOfTime> {
    let object_ref = review.object_ref();
    let gvk = (
        object_ref.group.as_str(),
        object_ref.version.as_str(),
        object_ref.kind.as_str(),
    );
    // CONNECT carries no object; a resultant is never expanded again here (its chain is).
    if review.source() == Source::Generated
        || !review.object().is_object()
        || !expansions.expands(gvk.0, gvk.1, gvk.2)
    {
        return Ok(Vec::new());
    }
    let mutated;
    let mut object = review.object();
    if mutate_first {
        match mutators.mutate(review, namespace) {
            Ok(Some(m)) => {
                mutated = m;
                object = &mutated;
            }
            Ok(None) => {}
            Err(e) => {
                return Ok(vec![cannot_expand(
                    "mutators",
                    format!("cannot mutate the object before expanding it: {e}"),
                )]);
            }
        }
    }
    let resultants =
        match expansions.expand(object, gvk, &object_ref.namespace, mutators, namespace) {
            Ok(r) => r,
            Err(e) => {
                return Ok(vec![cannot_expand(
                    &e.template,
                    format!("cannot expand this {}: {}", object_ref.kind, e.message),
                )]);
            }
        };
    let mut violations = Vec::new();
    for r in resultants {
        let resultant = Review::resultant(r.object, review.operation());
        for mut v in policies.evaluate(point, &resultant, namespace, inventory, deadline)? {
            v.message = format!("[Implied by {}] {}", r.template, v.message);
            if let Some(action) = r.action {
                v.action = action;
            }
            violations.push(v);
        }
    }
    Ok(violations)
}

fn cannot_expand(template: &str, message: String) -> Violation {
    Violation {
        constraint: template.to_owned(),
        constraint_kind: KIND.to_owned(),
        action: Action::Deny,
        message,
        details: Value::Null,
        failure: Some(FailureKind::Engine),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_str;
    use crate::mutation::Mutator;
    use serde_json::json;
    use std::path::Path;

    fn docs(yaml: &str) -> Vec<Document> {
        parse_str(yaml, Path::new("e.yaml")).unwrap()
    }

    fn template(name: &str, apply_to: &str, source: &str, generated: &str, extra: &str) -> String {
        format!(
            "apiVersion: expansion.gatekeeper.sh/v1beta1\nkind: ExpansionTemplate\nmetadata: {{name: {name}}}\nspec:\n  applyTo: {apply_to}\n  templateSource: {source}\n  generatedGVK: {generated}\n{extra}---\n"
        )
    }

    const WORKLOADS: &str = "[{groups: [apps], kinds: [Deployment, ReplicaSet], versions: [v1]}, {groups: [batch], kinds: [Job], versions: [v1]}]";
    const POD: &str = "{group: '', version: v1, kind: Pod}";

    fn load(yaml: &str) -> Result<Expansions, String> {
        Expansions::from_documents(&docs(yaml)).map_err(|e| e.to_string())
    }

    fn deployment() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "Web", "namespace": "shop", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "template": {
                "metadata": {"labels": {"app": "web"}, "name": "ignored", "namespace": "elsewhere"},
                "spec": {"containers": [{"name": "app", "image": "shop:1"}]}}}})
    }

    #[test]
    fn a_deployment_expands_into_its_pod_as_gatekeeper_builds_it() {
        let e = load(&template(
            "expand-workloads",
            WORKLOADS,
            "spec.template",
            POD,
            "",
        ))
        .unwrap();
        assert!(e.expands("apps", "v1", "Deployment"));
        assert!(e.expands("batch", "v1", "Job"));
        assert!(
            !e.expands("apps", "v1beta1", "Deployment"),
            "versions are exact"
        );
        assert!(!e.expands("", "v1", "Pod"));
        let out = e
            .expand(
                &deployment(),
                ("apps", "v1", "Deployment"),
                "shop",
                &Mutators::default(),
                None,
            )
            .unwrap();
        assert_eq!(
            out,
            [Resultant {
                object: json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "web-pod", "namespace": "shop", "labels": {"app": "web"},
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "Web", "uid": ""}]},
                    "spec": {"containers": [{"name": "app", "image": "shop:1"}]}}),
                template: "expand-workloads".into(),
                action: None,
            }]
        );
        // The namespace is the request's, whatever the object or its template say.
        let cluster = e
            .expand(
                &deployment(),
                ("apps", "v1", "Deployment"),
                "",
                &Mutators::default(),
                None,
            )
            .unwrap();
        assert!(cluster[0].object["metadata"].get("namespace").is_none());
    }

    #[test]
    fn a_missing_or_wrong_source_is_an_error_naming_template_and_field() {
        let e = load(&template(
            "expand-workloads",
            WORKLOADS,
            "spec.template",
            POD,
            "",
        ))
        .unwrap();
        let mut no_template = deployment();
        no_template["spec"]
            .as_object_mut()
            .unwrap()
            .remove("template");
        let err = e
            .expand(
                &no_template,
                ("apps", "v1", "Deployment"),
                "shop",
                &Mutators::default(),
                None,
            )
            .unwrap_err();
        assert_eq!(err.template, "expand-workloads");
        assert!(err.message.contains("has no spec.template"), "{err}");
        let mut scalar = deployment();
        scalar["spec"]["template"] = json!("pod");
        let err = e
            .expand(
                &scalar,
                ("apps", "v1", "Deployment"),
                "shop",
                &Mutators::default(),
                None,
            )
            .unwrap_err();
        assert!(err.message.contains("is a string, not an object"), "{err}");
    }

    #[test]
    fn chains_expand_depth_first_with_names_from_each_parent() {
        let yaml = template(
            "cronjobs",
            "[{groups: [batch], kinds: [CronJob], versions: [v1]}]",
            "spec.jobTemplate",
            "{group: batch, version: v1, kind: Job}",
            "  enforcementAction: warn\n",
        ) + &template(
            "jobs",
            "[{groups: [batch], kinds: [Job], versions: [v1]}]",
            "spec.template",
            POD,
            "",
        );
        let e = load(&yaml).unwrap();
        let cron = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly", "namespace": "ops"},
            "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}}}});
        let out = e
            .expand(
                &cron,
                ("batch", "v1", "CronJob"),
                "ops",
                &Mutators::default(),
                None,
            )
            .unwrap();
        let names: Vec<(&str, &str, Option<Action>)> = out
            .iter()
            .map(|r| {
                (
                    r.object["metadata"]["name"].as_str().unwrap(),
                    r.template.as_str(),
                    r.action,
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("nightly-job-pod", "jobs", None),
                ("nightly-job", "cronjobs", Some(Action::Warn))
            ]
        );
        assert_eq!(
            out[0].object["metadata"]["ownerReferences"][0]["kind"],
            "Job"
        );
        assert_eq!(out[0].object["spec"]["containers"][0]["name"], "c");
    }

    #[test]
    fn resultants_are_mutated_by_generated_and_all_mutators_only() {
        let e = load(&template(
            "expand-workloads",
            WORKLOADS,
            "spec.template",
            POD,
            "",
        ))
        .unwrap();
        let mutator = |name: &str, source: &str| {
            format!(
                "apiVersion: mutations.gatekeeper.sh/v1\nkind: Assign\nmetadata: {{name: {name}}}\nspec:\n  applyTo: [{{groups: [''], kinds: [Pod], versions: [v1]}}]\n  match: {{source: {source}}}\n  location: 'spec.containers[name: *].securityContext.{name}'\n  parameters: {{assign: {{value: true}}}}\n---\n"
            )
        };
        let yaml = mutator("readOnlyRootFilesystem", "Generated")
            + &mutator("privileged", "Original")
            + &mutator("runAsNonRoot", "All");
        let mutators = Mutators::new(
            docs(&yaml)
                .iter()
                .map(|d| Mutator::parse(d).unwrap())
                .collect(),
        );
        let out = e
            .expand(
                &deployment(),
                ("apps", "v1", "Deployment"),
                "shop",
                &mutators,
                None,
            )
            .unwrap();
        assert_eq!(
            out[0].object["spec"]["containers"][0]["securityContext"],
            json!({"readOnlyRootFilesystem": true, "runAsNonRoot": true})
        );
    }

    #[test]
    fn bad_templates_name_the_document_and_field() {
        for (yaml, needle) in [
            (
                template("a", "[]", "spec.template", POD, ""),
                "spec.applyTo: required",
            ),
            (
                template(
                    "a",
                    "[{groups: [apps], kinds: [Deployment]}]",
                    "spec.template",
                    POD,
                    "",
                ),
                "spec.applyTo[0].versions: required",
            ),
            (
                template(
                    "a",
                    "[{groups: ['*'], kinds: [Deployment], versions: [v1]}]",
                    "spec.template",
                    POD,
                    "",
                ),
                "spec.applyTo[0].groups: \"*\" is not a wildcard",
            ),
            (
                template("a", WORKLOADS, "''", POD, ""),
                "spec.templateSource: required",
            ),
            (
                template("a", WORKLOADS, "spec..template", POD, ""),
                "spec.templateSource \"spec..template\"",
            ),
            (
                template("a", WORKLOADS, "spec.template", "{group: ''}", ""),
                "spec.generatedGVK: kind and version are required",
            ),
            (
                template(
                    "a",
                    WORKLOADS,
                    "spec.template",
                    "{group: apps, version: v1, kind: ReplicaSet}",
                    "",
                ),
                "a template may not expand its own resultants",
            ),
            (
                template(
                    "a",
                    WORKLOADS,
                    "spec.template",
                    POD,
                    "  enforcementAction: block\n",
                ),
                "spec.enforcementAction: \"block\" is not one of deny, warn, dryrun",
            ),
            (
                template(&"x".repeat(64), WORKLOADS, "spec.template", POD, ""),
                "metadata.name: at most 63",
            ),
            (
                template("a", WORKLOADS, "spec.template", POD, "").replace("v1beta1", "v2"),
                "is not expansion.gatekeeper.sh/v1alpha1 or v1beta1",
            ),
        ] {
            let err = load(&yaml).unwrap_err();
            assert!(
                err.contains("ExpansionTemplate \"") && err.contains("at e.yaml (document 1): "),
                "{err}"
            );
            assert!(err.contains(needle), "{err} should contain {needle}");
        }
        let twice = template("a", WORKLOADS, "spec.template", POD, "").repeat(2);
        assert!(
            load(&twice).unwrap_err().contains(
                "(document 2): duplicates ExpansionTemplate \"a\" at e.yaml (document 1)"
            )
        );
    }

    #[test]
    fn templates_in_a_cycle_are_refused_and_the_others_named_apart() {
        let yaml = template(
            "a",
            "[{groups: [x], kinds: [A], versions: [v1]}]",
            "spec.t",
            "{group: x, version: v1, kind: B}",
            "",
        ) + &template(
            "b",
            "[{groups: [x], kinds: [B], versions: [v1]}]",
            "spec.t",
            "{group: x, version: v1, kind: C}",
            "",
        ) + &template(
            "c",
            "[{groups: [x], kinds: [C], versions: [v1]}]",
            "spec.t",
            "{group: x, version: v1, kind: A}",
            "",
        ) + &template(
            "d",
            "[{groups: [x], kinds: [C], versions: [v1]}]",
            "spec.t",
            POD,
            "",
        );
        let err = load(&yaml).unwrap_err();
        assert!(err.starts_with("1 problem in the policy bundle"), "{err}");
        assert!(err.contains("expand each other in a cycle: a (x/v1 A → x/v1 B), b (x/v1 B → x/v1 C), c (x/v1 C → x/v1 A)"), "{err}");
        assert!(!err.contains("d ("), "{err}");
    }

    #[test]
    fn the_parents_of_a_kind_follow_chains() {
        let yaml = template(
            "cronjobs",
            "[{groups: [batch], kinds: [CronJob], versions: [v1]}]",
            "spec.jobTemplate",
            "{group: batch, version: v1, kind: Job}",
            "",
        ) + &template(
            "jobs",
            "[{groups: [batch], kinds: [Job], versions: [v1]}]",
            "spec.template",
            POD,
            "",
        ) + &template(
            "other",
            "[{groups: [x], kinds: [Y], versions: [v1]}]",
            "spec.t",
            "{group: x, version: v1, kind: Z}",
            "",
        );
        let e = load(&yaml).unwrap();
        let parents: Vec<String> = e
            .parents_of(|g| g.kind == "Pod")
            .iter()
            .map(|k| format!("{}/{}", k.api_groups[0], k.kinds[0]))
            .collect();
        assert_eq!(parents, ["batch/CronJob", "batch/Job"]);
        assert!(e.parents_of(|g| g.kind == "Secret").is_empty());
    }

    #[test]
    fn two_templates_for_the_same_parent_and_resultant_both_run_with_a_warning() {
        let yaml = template("one", WORKLOADS, "spec.template", POD, "")
            + &template(
                "two",
                "[{groups: [apps], kinds: [Deployment], versions: [v1]}]",
                "spec.template",
                POD,
                "",
            );
        let e = load(&yaml).unwrap();
        let warnings = e.warnings();
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0]
                .to_string()
                .contains("expands apps/v1 Deployment into v1 Pod as ExpansionTemplate \"one\""),
            "{}",
            warnings[0]
        );
        let out = e
            .expand(
                &deployment(),
                ("apps", "v1", "Deployment"),
                "shop",
                &Mutators::default(),
                None,
            )
            .unwrap();
        assert_eq!(out.len(), 2);
    }
}
