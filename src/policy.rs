//! Validation: Gatekeeper ConstraintTemplates and Constraints, evaluated with regorus.

pub mod external;
pub(crate) mod net;
pub(crate) mod rego;

/// In masked Rego, the offset of the bracket that closes the one at `open`.
#[doc(hidden)]
pub use rego::closing as closing_rego_bracket;
/// Rego source with the contents of strings and comments blanked (for tools that read Rego, such
/// as the differential test's v0 to v1 conversion).
#[doc(hidden)]
pub use rego::mask as mask_rego_source;
pub(crate) mod schema;
pub mod template;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use crate::admission::Review;
use crate::inventory::Inventory;
use crate::manifest::Document;
use crate::matcher::Match;
use crate::object::to_regorus;
pub use template::{
    DEFAULT_EVAL_MEMORY, EngineOptions, EvalError, Template, in_policy_engine, set_memory_ceiling,
};

/// What a constraint does with a violation. Also the cluster-wide and per-namespace enforcement
/// of the configuration file, which caps every constraint's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
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

    /// The weaker of the two: `deny` capped at `warn` warns, and anything capped at `dryrun`
    /// is only recorded.
    pub fn capped(self, cap: Action) -> Action {
        let strength = |a: Action| match a {
            Action::Deny => 2,
            Action::Warn => 1,
            Action::Dryrun => 0,
        };
        if strength(cap) < strength(self) {
            cap
        } else {
            self
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
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

/// Why a constraint reports a violation that its template did not find: the rule could not be
/// applied, so it fails closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The template ran past `--eval-timeout`.
    Timeout,
    /// regorus reported an error.
    Engine,
    /// regorus panicked.
    Panic,
    /// Whether the constraint applies could not be decided (a namespace that is not known).
    Match,
    /// The template allocated past `--eval-memory-limit`, or the process reached
    /// `--memory-limit`.
    Memory,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::Engine => "engine",
            FailureKind::Panic => "panic",
            FailureKind::Match => "match",
            FailureKind::Memory => "memory",
        }
    }
}

impl From<&EvalError> for FailureKind {
    fn from(e: &EvalError) -> Self {
        match e {
            EvalError::Timeout(_) => FailureKind::Timeout,
            EvalError::Engine(_) => FailureKind::Engine,
            EvalError::Panic => FailureKind::Panic,
            EvalError::Memory(_) => FailureKind::Memory,
        }
    }
}

/// One violation of one constraint.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub constraint: String,
    pub constraint_kind: String,
    pub action: Action,
    pub message: String,
    pub details: Value,
    /// Set when the violation stands for a failure to evaluate (fail closed).
    pub failure: Option<FailureKind>,
}

/// The deadline of an evaluation ran out before every constraint was evaluated. The caller
/// decides what that means: move to the blocking pool, or answer that time is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the evaluation deadline passed before every constraint was evaluated")]
pub struct OutOfTime;

/// Compiled templates and their constraints, ready to evaluate reviews.
#[derive(Clone, Default)]
pub struct Policies {
    /// Template per constraint kind.
    templates: HashMap<String, Arc<Template>>,
    constraints: Vec<Constraint>,
    /// Constraint indexes by object kind, and those that apply to any kind.
    by_kind: HashMap<String, Vec<usize>>,
    any_kind: Vec<usize>,
    /// What the bundle requires of every namespace, for the NetworkPolicy model.
    universe: Arc<crate::netpol::Universe>,
}

impl fmt::Debug for Policies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policies")
            .field("templates", &self.templates.len())
            .field("constraints", &self.constraints.len())
            .finish_non_exhaustive()
    }
}

impl Policies {
    /// Indexes constraints by the kinds they match; each constraint's template must be given.
    pub fn new(
        templates: HashMap<String, Arc<Template>>,
        mut constraints: Vec<Constraint>,
    ) -> Self {
        // A stable order: messages and metrics do not depend on file layout.
        constraints.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
        let mut by_kind: HashMap<String, Vec<usize>> = HashMap::new();
        let mut any_kind = Vec::new();
        let mut universe = crate::netpol::Universe::default();
        for (i, c) in constraints.iter().enumerate() {
            universe.require_from_constraint(c);
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
        Self {
            templates,
            constraints,
            by_kind,
            any_kind,
            universe: Arc::new(universe),
        }
    }

    /// What the bundle requires of every namespace (its namespace-label constraints).
    pub fn universe(&self) -> &crate::netpol::Universe {
        &self.universe
    }

    pub fn constraints(&self) -> &[Constraint] {
        &self.constraints
    }

    /// The constraint at `index` alone, with its template: to measure or explain one.
    pub fn only(&self, index: usize) -> Option<Policies> {
        let constraint = self.constraints.get(index)?.clone();
        let template = self.templates.get(&constraint.kind)?.clone();
        Some(Policies::new(
            HashMap::from([(constraint.kind.clone(), template)]),
            vec![constraint],
        ))
    }

    pub fn templates(&self) -> impl Iterator<Item = &Arc<Template>> {
        self.templates.values()
    }

    /// Evaluates every matching constraint against `inventory`; `namespace` is the object's
    /// Namespace, when known. Errors in matching or evaluation become violations carrying the
    /// error (fail closed), under the constraint's own action.
    ///
    /// With a `deadline`, each template runs for at most the time left; when it runs out, the
    /// result is [`OutOfTime`] rather than a violation, since the template did not fail: it was
    /// not given its full `--eval-timeout`.
    pub fn evaluate(
        &self,
        review: &Review,
        namespace: Option<&Value>,
        inventory: &Inventory,
        deadline: Option<Instant>,
    ) -> Result<Vec<Violation>, OutOfTime> {
        let indexes = self.by_kind.get(&review.object_ref().kind);
        if indexes.is_none() && self.any_kind.is_empty() {
            return Ok(Vec::new());
        }
        let mut candidates: Vec<usize> = indexes
            .into_iter()
            .flatten()
            .chain(&self.any_kind)
            .copied()
            .collect();
        candidates.sort_unstable();

        let mut input_review: Option<regorus::Value> = None;
        let mut reachability: Option<crate::netpol::Analysis> = None;
        let mut violations = Vec::new();
        for c in candidates
            .into_iter()
            .filter_map(|i| self.constraints.get(i))
        {
            match c.matcher.matches(review, namespace) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    violations.push(c.failure(
                        FailureKind::Match,
                        format!("cannot decide whether this constraint applies: {e}"),
                    ));
                    continue;
                }
            }
            let Some(template) = self.templates.get(&c.kind) else {
                violations.push(c.failure(
                    FailureKind::Engine,
                    format!("template for kind {} is not loaded", c.kind),
                ));
                continue;
            };
            let limit = match deadline {
                None => template.timeout(),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(OutOfTime);
                    }
                    left.min(template.timeout())
                }
            };
            let review_value = input_review
                .get_or_insert_with(|| review_value(review, namespace))
                .clone();
            let mut input = input(review_value, &c.parameters_value);
            if template.uses_reachability() && crate::netpol::judge::is_network_policy(review) {
                if reachability.is_none() {
                    let analysis =
                        crate::netpol::judge::analyse(review, inventory, &self.universe, deadline)?;
                    reachability = Some(analysis);
                }
                if let Some(analysis) = &reachability {
                    add_reachability(&mut input, analysis.facts(&c.parameters));
                }
            }
            match template.evaluate(input, inventory, limit) {
                Ok(result) => match found(result) {
                    Ok(found) => {
                        violations.extend(found.into_iter().map(|(message, details)| Violation {
                            constraint: c.name.clone(),
                            constraint_kind: c.kind.clone(),
                            action: c.action,
                            message,
                            details,
                            failure: None,
                        }))
                    }
                    Err(message) => violations.push(c.failure(
                        FailureKind::Engine,
                        format!("policy evaluation failed: {message}"),
                    )),
                },
                Err(EvalError::Timeout(_)) if limit < template.timeout() => return Err(OutOfTime),
                Err(e) => violations
                    .push(c.failure((&e).into(), format!("policy evaluation failed: {e}"))),
            }
        }
        Ok(violations)
    }
}

impl Constraint {
    fn failure(&self, kind: FailureKind, message: String) -> Violation {
        Violation {
            constraint: self.name.clone(),
            constraint_kind: self.kind.clone(),
            action: self.action,
            message,
            details: Value::Null,
            failure: Some(kind),
        }
    }
}

/// The review as policies see it: with `namespaceObject` when the namespace is known. Converted
/// straight from the borrowed JSON, once per review.
fn review_value(review: &Review, namespace: Option<&Value>) -> regorus::Value {
    let mut value = to_regorus(review.json());
    if let Some(ns) = namespace
        && review.namespace_object().is_none()
        && let Ok(map) = value.as_object_mut()
    {
        map.insert(regorus::Value::from("namespaceObject"), to_regorus(ns));
    }
    value
}

fn input(review: regorus::Value, parameters: &regorus::Value) -> regorus::Value {
    let mut input = std::collections::BTreeMap::new();
    input.insert(regorus::Value::from("review"), review);
    input.insert(regorus::Value::from("parameters"), parameters.clone());
    regorus::Value::from(input)
}

/// Adds the NetworkPolicy model's facts to `input` as `input.palisade.reachability`.
fn add_reachability(input: &mut regorus::Value, facts: Value) {
    let mut palisade = std::collections::BTreeMap::new();
    palisade.insert(regorus::Value::from("reachability"), to_regorus(&facts));
    if let Ok(map) = input.as_object_mut() {
        map.insert(
            regorus::Value::from("palisade"),
            regorus::Value::from(palisade),
        );
    }
}

/// The violations of a template's result: entries with a `msg`, as Gatekeeper keeps them.
fn found(result: regorus::Value) -> Result<Vec<(String, Value)>, String> {
    let items: Vec<regorus::Value> = match &result {
        regorus::Value::Set(s) => s.iter().cloned().collect(),
        regorus::Value::Array(a) => a.iter().cloned().collect(),
        regorus::Value::Undefined => Vec::new(),
        other => {
            return Err(format!(
                "violation is not a set of violations: {}",
                other.to_json_str().unwrap_or_default()
            ));
        }
    };
    let mut out = Vec::new();
    let (msg_key, details_key) = (regorus::Value::from("msg"), regorus::Value::from("details"));
    for item in items {
        // Read in place: only `details` is converted to JSON, and only when it is there.
        let message = match &item[&msg_key] {
            regorus::Value::Undefined | regorus::Value::Null => continue,
            regorus::Value::String(s) => s.to_string(),
            other => serde_json::to_value(other)
                .unwrap_or(Value::Null)
                .to_string(),
        };
        let details = match &item[&details_key] {
            regorus::Value::Undefined => Value::Null,
            d => serde_json::to_value(d).unwrap_or(Value::Null),
        };
        if !out.iter().any(|(m, d)| *m == message && *d == details) {
            out.push((message, details));
        }
    }
    Ok(out)
}
