//! Gatekeeper policy bundles: ConstraintTemplates and Constraints, evaluated with regorus.

pub mod matcher;
pub mod rego_source;
pub mod schema;
pub mod source;
pub mod store;
pub mod template;

use std::collections::HashMap;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use crate::admission::Review;
use crate::inventory::Inventory;
use crate::mutation::{Mutator, Mutators};
use matcher::Match;
use source::Document;
pub use template::{EngineOptions, Evaluator, Template};

pub const CONSTRAINTS_GROUP: &str = "constraints.gatekeeper.sh";
pub const TEMPLATES_GROUP: &str = "templates.gatekeeper.sh";
pub const MUTATIONS_GROUP: &str = "mutations.gatekeeper.sh";

/// What a constraint does with a violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Deny,
    Warn,
    Dryrun,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Deny => "deny",
            Action::Warn => "warn",
            Action::Dryrun => "dryrun",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "deny" => Some(Action::Deny),
            "warn" => Some(Action::Warn),
            "dryrun" => Some(Action::Dryrun),
            _ => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem in a bundle, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// "Kind name at file (document N)".
    pub at: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// Everything wrong with a bundle, so that one run shows every problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct BundleError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{n} problem{} in the policy bundle",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl BundleError {
    fn one(at: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            problems: vec![Problem {
                at: at.into(),
                message: message.into(),
            }],
        }
    }
}

impl From<source::SourceError> for BundleError {
    fn from(e: source::SourceError) -> Self {
        let (at, message) = match &e {
            source::SourceError::Shape { origin, message } => (origin.to_string(), message.clone()),
            other => {
                let text = other.to_string();
                return Self::one("bundle", text);
            }
        };
        Self::one(at, message)
    }
}

/// A constraint: a template kind applied to matching objects with parameters.
#[derive(Debug, Clone)]
pub struct Constraint {
    pub name: String,
    pub kind: String,
    pub action: Action,
    pub matcher: Match,
    pub parameters: Value,
    /// `parameters` as a regorus value, converted once at load.
    parameters_value: regorus::Value,
    pub describe: String,
}

/// Reads a constraint document; `schema` is its template's parameter schema.
pub fn parse_constraint(doc: &Document, schema: Option<&Value>) -> Result<Constraint, Vec<String>> {
    let v = &doc.value;
    let name = doc.name();
    if name.is_empty() {
        return Err(vec!["metadata.name: required".into()]);
    }
    let action = match v["spec"]["enforcementAction"].as_str() {
        None => Action::Deny,
        Some(s) => Action::parse(s).ok_or_else(|| {
            vec![format!(
                "spec.enforcementAction: {s:?} is not one of deny, warn, dryrun"
            )]
        })?,
    };
    let matcher = Match::parse(&v["spec"]["match"], "spec.match").map_err(|e| vec![e])?;
    let parameters = match &v["spec"]["parameters"] {
        Value::Null => Value::Object(Default::default()),
        p => p.clone(),
    };
    if let Some(schema) = schema {
        let errors = schema::validate(&parameters, schema);
        if !errors.is_empty() {
            return Err(errors.into_iter().map(|e| format!("spec.{e}")).collect());
        }
    }
    Ok(Constraint {
        name: name.to_owned(),
        kind: doc.kind().to_owned(),
        action,
        matcher,
        parameters_value: regorus::Value::from(parameters.clone()),
        parameters,
        describe: doc.describe(),
    })
}

/// One violation of one constraint.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub constraint: String,
    pub constraint_kind: String,
    pub action: Action,
    pub message: String,
    pub details: Value,
}

/// A loaded bundle: compiled templates and their constraints, ready to evaluate reviews.
#[derive(Clone, Default)]
pub struct PolicySet {
    /// Template per constraint kind, with its evaluator (inventory already added).
    templates: HashMap<String, (Arc<Template>, Evaluator)>,
    constraints: Vec<Constraint>,
    /// Constraint indexes by object kind, and those that apply to any kind.
    by_kind: HashMap<String, Vec<usize>>,
    any_kind: Vec<usize>,
    inventory: Arc<Inventory>,
    mutators: Arc<Mutators>,
    /// Documents of other kinds (configuration) for the parts that use them.
    pub others: Vec<Document>,
}

impl fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicySet")
            .field("templates", &self.templates.len())
            .field("constraints", &self.constraints.len())
            .field("mutators", &self.mutators.len())
            .finish_non_exhaustive()
    }
}

impl PolicySet {
    /// Loads every document under `dir` (or in a file).
    pub fn load(
        path: &Path,
        options: &EngineOptions,
        inventory: Arc<Inventory>,
    ) -> Result<Self, BundleError> {
        if !path.exists() {
            return Err(BundleError::one(
                path.display().to_string(),
                "no such file or directory; point --policies at a directory of Gatekeeper templates and constraints",
            ));
        }
        let docs = source::read_path(path)?;
        Self::from_documents(docs, options, inventory)
    }

    /// Builds a bundle from documents; collects every problem before failing.
    pub fn from_documents(
        docs: Vec<Document>,
        options: &EngineOptions,
        inventory: Arc<Inventory>,
    ) -> Result<Self, BundleError> {
        let mut problems = Vec::new();
        let mut templates: HashMap<String, Arc<Template>> = HashMap::new();
        let mut constraint_docs = Vec::new();
        let mut others = Vec::new();
        let mut mutators: Vec<Mutator> = Vec::new();
        // Kinds whose template failed: their constraints are not reported a second time.
        let mut failed_kinds = Vec::new();
        for doc in docs {
            match doc.group() {
                TEMPLATES_GROUP if doc.kind() == "ConstraintTemplate" => {
                    match template::parse(&doc).and_then(|src| Template::compile(src, options)) {
                        Ok(t) => {
                            if let Some(prev) = templates.get(&t.kind) {
                                problems.push(Problem {
                                    at: doc.describe(),
                                    message: format!(
                                        "kind {} is already defined by {}",
                                        t.kind, prev.describe
                                    ),
                                });
                            } else {
                                templates.insert(t.kind.clone(), Arc::new(t));
                            }
                        }
                        Err(message) => {
                            if let Some(kind) =
                                doc.value["spec"]["crd"]["spec"]["names"]["kind"].as_str()
                            {
                                failed_kinds.push(kind.to_owned());
                            }
                            problems.push(Problem {
                                at: doc.describe(),
                                message,
                            })
                        }
                    }
                }
                CONSTRAINTS_GROUP => constraint_docs.push(doc),
                MUTATIONS_GROUP => match Mutator::parse(&doc) {
                    Ok(m) => {
                        if let Some(prev) = mutators
                            .iter()
                            .find(|p: &&Mutator| p.kind == m.kind && p.name == m.name)
                        {
                            problems.push(Problem {
                                at: m.describe.clone(),
                                message: format!("duplicates {}", prev.describe),
                            });
                        } else {
                            mutators.push(m);
                        }
                    }
                    Err(message) => problems.push(Problem {
                        at: doc.describe(),
                        message,
                    }),
                },
                _ => others.push(doc),
            }
        }
        let mut constraints: Vec<Constraint> = Vec::new();
        for doc in constraint_docs {
            let Some(template) = templates.get(doc.kind()) else {
                if failed_kinds.iter().any(|k| k == doc.kind()) {
                    continue;
                }
                let known: Vec<&str> = templates.keys().map(String::as_str).collect();
                problems.push(Problem {
                    at: doc.describe(),
                    message: format!(
                        "no ConstraintTemplate defines kind {}{}",
                        doc.kind(),
                        if known.is_empty() {
                            String::new()
                        } else {
                            format!(" (defined: {})", known.join(", "))
                        }
                    ),
                });
                continue;
            };
            match parse_constraint(&doc, template.schema.as_ref()) {
                Ok(c) => {
                    if let Some(prev) = constraints
                        .iter()
                        .find(|p| p.kind == c.kind && p.name == c.name)
                    {
                        problems.push(Problem {
                            at: c.describe.clone(),
                            message: format!("duplicates {}", prev.describe),
                        });
                    } else {
                        constraints.push(c);
                    }
                }
                Err(errors) => problems.extend(errors.into_iter().map(|message| Problem {
                    at: doc.describe(),
                    message,
                })),
            }
        }
        if !problems.is_empty() {
            return Err(BundleError { problems });
        }
        Self::assemble(
            templates,
            constraints,
            Arc::new(Mutators::new(mutators)),
            others,
            inventory,
        )
        .map_err(|message| BundleError::one("inventory", message))
    }

    fn assemble(
        templates: HashMap<String, Arc<Template>>,
        mut constraints: Vec<Constraint>,
        mutators: Arc<Mutators>,
        others: Vec<Document>,
        inventory: Arc<Inventory>,
    ) -> Result<Self, String> {
        // A stable order: messages and metrics do not depend on file layout.
        constraints.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
        let mut by_kind: HashMap<String, Vec<usize>> = HashMap::new();
        let mut any_kind = Vec::new();
        for (i, c) in constraints.iter().enumerate() {
            match c.matcher.indexed_kinds() {
                Some(kinds) => {
                    for k in kinds {
                        let list = by_kind.entry(k.to_owned()).or_default();
                        if !list.contains(&i) {
                            list.push(i);
                        }
                    }
                }
                None => any_kind.push(i),
            }
        }
        let templates = templates
            .into_iter()
            .map(|(kind, t)| {
                let evaluator = t.evaluator_for(&inventory)?;
                Ok((kind, (t, evaluator)))
            })
            .collect::<Result<_, String>>()?;
        Ok(Self {
            templates,
            constraints,
            by_kind,
            any_kind,
            inventory,
            mutators,
            others,
        })
    }

    /// The same templates and constraints against another inventory.
    pub fn with_inventory(&self, inventory: Arc<Inventory>) -> Result<Self, String> {
        let templates = self
            .templates
            .iter()
            .map(|(k, (t, _))| (k.clone(), t.clone()))
            .collect();
        Self::assemble(
            templates,
            self.constraints.clone(),
            self.mutators.clone(),
            self.others.clone(),
            inventory,
        )
    }

    pub fn constraints(&self) -> &[Constraint] {
        &self.constraints
    }

    pub fn templates(&self) -> impl Iterator<Item = &Template> {
        self.templates.values().map(|(t, _)| t.as_ref())
    }

    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    pub fn mutators(&self) -> &Mutators {
        &self.mutators
    }

    /// The patch the mutators make to the review's object, if any.
    pub fn mutate(&self, review: &Review) -> Result<Option<json_patch::Patch>, String> {
        if self.mutators.is_empty() {
            return Ok(None);
        }
        let namespace = self.namespace_object(review);
        Ok(self
            .mutators
            .mutate(review, namespace)?
            .map(|mutated| crate::mutation::patch(review.object(), &mutated)))
    }

    /// Evaluates every matching constraint. Errors in matching or evaluation become violations
    /// carrying the error (fail closed), under the constraint's own action.
    pub fn evaluate(&self, review: &Review) -> Vec<Violation> {
        let indexes = self.by_kind.get(review.kind());
        if indexes.is_none() && self.any_kind.is_empty() {
            return Vec::new();
        }
        let mut candidates: Vec<usize> = indexes
            .into_iter()
            .flatten()
            .chain(&self.any_kind)
            .copied()
            .collect();
        candidates.sort_unstable();

        let namespace = self.namespace_object(review);
        let mut input_review: Option<regorus::Value> = None;
        let mut violations = Vec::new();
        for i in candidates {
            let c = &self.constraints[i];
            let fail = |message: String| Violation {
                constraint: c.name.clone(),
                constraint_kind: c.kind.clone(),
                action: c.action,
                message,
                details: Value::Null,
            };
            match c.matcher.matches(review, namespace) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    violations.push(fail(format!(
                        "cannot decide whether this constraint applies: {e}"
                    )));
                    continue;
                }
            }
            let Some((template, evaluator)) = self.templates.get(&c.kind) else {
                violations.push(fail(format!("template for kind {} is not loaded", c.kind)));
                continue;
            };
            let review_value = input_review
                .get_or_insert_with(|| review_value(review, namespace))
                .clone();
            match run(evaluator, &template.rule, review_value, &c.parameters_value) {
                Ok(found) => {
                    violations.extend(found.into_iter().map(|(message, details)| Violation {
                        constraint: c.name.clone(),
                        constraint_kind: c.kind.clone(),
                        action: c.action,
                        message,
                        details,
                    }))
                }
                Err(e) => violations.push(fail(format!("policy evaluation failed: {e}"))),
            }
        }
        violations
    }

    /// The Namespace of the object: the review's `namespaceObject`, else the inventory's.
    fn namespace_object<'a>(&'a self, review: &'a Review) -> Option<&'a Value> {
        let given = &review.json()["namespaceObject"];
        if given.is_object() {
            return Some(given);
        }
        let ns = review.namespace();
        if ns.is_empty() {
            return None;
        }
        self.inventory.namespace(ns)
    }
}

/// The review as policies see it: with `namespaceObject` when the namespace is known. Converted
/// straight from the borrowed JSON, once per review.
fn review_value(review: &Review, namespace: Option<&Value>) -> regorus::Value {
    let mut value = to_regorus(review.json());
    if let Some(ns) = namespace
        && review.json().get("namespaceObject").is_none()
        && let Ok(map) = value.as_object_mut()
    {
        map.insert(regorus::Value::from("namespaceObject"), to_regorus(ns));
    }
    value
}

/// JSON to a regorus value, node by node: a quarter faster than going through serde (which
/// interns every key), and this runs once per review on the request path.
pub fn to_regorus(v: &Value) -> regorus::Value {
    match v {
        Value::Null => regorus::Value::Null,
        Value::Bool(b) => regorus::Value::from(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => regorus::Value::from(i),
            (None, Some(u)) => regorus::Value::from(u),
            _ => regorus::Value::from(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => regorus::Value::from(s.as_str()),
        Value::Array(items) => {
            regorus::Value::from(items.iter().map(to_regorus).collect::<Vec<_>>())
        }
        Value::Object(map) => regorus::Value::from(
            map.iter()
                .map(|(k, v)| (regorus::Value::from(k.as_str()), to_regorus(v)))
                .collect::<std::collections::BTreeMap<_, _>>(),
        ),
    }
}

/// Evaluates one template's violation set; keeps entries with a `msg`, as Gatekeeper does.
fn run(
    evaluator: &Evaluator,
    rule: &str,
    review: regorus::Value,
    parameters: &regorus::Value,
) -> Result<Vec<(String, Value)>, String> {
    let mut input = std::collections::BTreeMap::new();
    input.insert(regorus::Value::from("review"), review);
    input.insert(regorus::Value::from("parameters"), parameters.clone());
    let input = regorus::Value::from(input);
    // A panic inside the engine must not take the request (or the server) down: fail closed.
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| evaluator.eval(rule, input)))
        .map_err(|_| "the policy engine panicked".to_owned())??;
    let mut out = Vec::new();
    let items: Vec<regorus::Value> = match &result {
        regorus::Value::Set(s) => s.iter().cloned().collect(),
        regorus::Value::Array(a) => a.iter().cloned().collect(),
        regorus::Value::Undefined => Vec::new(),
        other => {
            return Err(format!(
                "{rule} is not a set of violations: {}",
                other.to_json_str().unwrap_or_default()
            ));
        }
    };
    for item in items {
        let json = serde_json::to_value(&item).unwrap_or(Value::Null);
        let message = match &json["msg"] {
            Value::Null => continue,
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let details = json.get("details").cloned().unwrap_or(Value::Null);
        if !out.iter().any(|(m, d)| *m == message && *d == details) {
            out.push((message, details));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize as _;

    #[test]
    fn direct_conversion_equals_regorus_own() {
        let body = include_str!("../tests/fixtures/admission/validate-update-pod.json");
        let json: Value = serde_json::from_str(body).unwrap();
        let extra =
            serde_json::json!({"n": [1, -2, 3.5, 18446744073709551615u64, null, true, {"": "x"}]});
        for v in [&json, &extra] {
            assert_eq!(to_regorus(v), regorus::Value::deserialize(v).unwrap());
        }
    }
}
