//! Validation: Gatekeeper ConstraintTemplates and Constraints, evaluated with regorus.
//!
//! A [`Template`] is compiled from a ConstraintTemplate ([`template`]); [`parse_constraint`]
//! reads a [`Constraint`]. [`Policies`] holds both, indexed by kind, and
//! [`Policies::evaluate`] judges a review into [`Violation`]s, each under its constraint's
//! [`Action`] at the enforcement [`Point`]. Calls to external data providers are [`external`].

pub mod cel;
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
pub mod vap;

use std::collections::{BTreeSet, HashMap};
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
    /// Refuse the object (in the audit: report it).
    #[default]
    Deny,
    /// Admit the object with a warning.
    Warn,
    /// Admit the object silently; the violation is only recorded (the dryrun audit annotation, the
    /// audit's reports).
    Dryrun,
}

impl Action {
    /// `deny`, `warn` or `dryrun`, as `enforcementAction` spells it.
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
        if cap.strength() < self.strength() {
            cap
        } else {
            self
        }
    }

    fn strength(self) -> u8 {
        match self {
            Action::Deny => 2,
            Action::Warn => 1,
            Action::Dryrun => 0,
        }
    }

    /// Reads `deny`, `warn` or `dryrun`, exactly so spelt.
    pub fn parse(s: &str) -> Option<Self> {
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

/// Where a constraint is enforced: Gatekeeper's enforcement points, which a constraint with
/// `enforcementAction: scoped` gives an action each. Palisade's webhook is the validation
/// point, its audit the audit point, and `palisade verify`/`test` are gator's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Point {
    /// `validation.gatekeeper.sh`: the admission webhook.
    #[default]
    Validation,
    /// `audit.gatekeeper.sh`: the audit of what exists.
    Audit,
    /// `gator.gatekeeper.sh`: `palisade test` and `verify`, as `gator` is.
    Gator,
}

impl Point {
    /// Gatekeeper's name of the point.
    pub fn name(self) -> &'static str {
        match self {
            Point::Validation => "validation.gatekeeper.sh",
            Point::Audit => "audit.gatekeeper.sh",
            Point::Gator => "gator.gatekeeper.sh",
        }
    }
}

/// The API server's enforcement point (`vap.k8s.io`): its action is that of the
/// ValidatingAdmissionPolicy bindings Palisade generates ([`vap`]), and applies nowhere else.
pub const VAP_POINT: &str = "vap.k8s.io";

/// The enforcement points a scoped action may name: Gatekeeper's four and `*` (all of them).
const ENFORCEMENT_POINTS: [&str; 5] = [
    "validation.gatekeeper.sh",
    "audit.gatekeeper.sh",
    "gator.gatekeeper.sh",
    "vap.k8s.io",
    "*",
];

/// What a constraint does with a violation, at each enforcement point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    /// `enforcementAction: deny | warn | dryrun`: the same everywhere.
    Everywhere(Action),
    /// `enforcementAction: scoped`: the action at the validation, audit and gator points, or
    /// `None` where no `scopedEnforcementActions` entry names the point (the constraint is not
    /// evaluated there, as in Gatekeeper), then at `vap.k8s.io` ([`Enforcement::at_api_server`]).
    /// Where several entries name one point, the strongest action applies: a denial already
    /// carries the message a warning would.
    Scoped([Option<Action>; 4]),
}

impl Enforcement {
    /// The action at `point`; `None` when the constraint is not enforced there.
    pub fn at(self, point: Point) -> Option<Action> {
        match self {
            Enforcement::Everywhere(action) => Some(action),
            Enforcement::Scoped(actions) => actions[point as usize],
        }
    }

    /// The action of a generated ValidatingAdmissionPolicy's binding (the enforcement point
    /// `vap.k8s.io`, or `*`); `None` when a scoped constraint names no action there.
    pub fn at_api_server(self) -> Option<Action> {
        match self {
            Enforcement::Everywhere(action) => Some(action),
            Enforcement::Scoped(actions) => actions[3],
        }
    }

    /// `spec.enforcementAction` as written: `scoped` for a scoped constraint.
    pub fn as_str(self) -> &'static str {
        match self {
            Enforcement::Everywhere(action) => action.as_str(),
            Enforcement::Scoped(_) => "scoped",
        }
    }

    /// Reads `spec.enforcementAction` and `spec.scopedEnforcementActions` as Gatekeeper
    /// validates them; every problem is reported, with the field.
    fn parse(spec: &Value) -> Result<Self, Vec<String>> {
        let scoped = &spec["scopedEnforcementActions"];
        let action = match &spec["enforcementAction"] {
            Value::Null => "deny",
            Value::String(s) if s.is_empty() => "deny",
            Value::String(s) => s.as_str(),
            other => {
                return Err(vec![format!(
                    "spec.enforcementAction: must be a string (deny, warn, dryrun or scoped), found {}",
                    crate::object::json_type(other)
                )]);
            }
        };
        if action != "scoped" {
            let Some(action) = Action::parse(action) else {
                return Err(vec![format!(
                    "spec.enforcementAction: {action:?} is not one of deny, warn, dryrun, scoped"
                )]);
            };
            if !scoped.is_null() {
                return Err(vec![format!(
                    "spec.scopedEnforcementActions: only read with enforcementAction: scoped, but enforcementAction is {action}; set enforcementAction: scoped, or remove the list"
                )]);
            }
            return Ok(Enforcement::Everywhere(action));
        }
        let Some(entries) = scoped.as_array().filter(|a| !a.is_empty()) else {
            return Err(vec![
                "spec.scopedEnforcementActions: required with enforcementAction: scoped, e.g. [{action: deny, enforcementPoints: [{name: validation.gatekeeper.sh}]}]".into(),
            ]);
        };
        let mut errors = Vec::new();
        let mut actions: [Option<Action>; 4] = [None; 4];
        for (i, entry) in entries.iter().enumerate() {
            let at = format!("spec.scopedEnforcementActions[{i}]");
            let action = match entry["action"].as_str().and_then(Action::parse) {
                Some(a) => Some(a),
                None => {
                    errors.push(format!(
                        "{at}.action: {} is not one of deny, warn, dryrun",
                        entry["action"]
                    ));
                    None
                }
            };
            let points = entry["enforcementPoints"].as_array();
            let Some(points) = points.filter(|p| !p.is_empty()) else {
                errors.push(format!(
                    "{at}.enforcementPoints: required, a list of {{name: <point>}} naming {}",
                    ENFORCEMENT_POINTS.join(", ")
                ));
                continue;
            };
            for (j, point) in points.iter().enumerate() {
                let name = point["name"].as_str().unwrap_or_default();
                if !ENFORCEMENT_POINTS.contains(&name) {
                    errors.push(format!(
                        "{at}.enforcementPoints[{j}].name: {} is not an enforcement point; use one of {}",
                        point["name"],
                        ENFORCEMENT_POINTS.join(", ")
                    ));
                    continue;
                }
                let Some(action) = action else { continue };
                let slots = [Point::Validation, Point::Audit, Point::Gator]
                    .into_iter()
                    .map(|p| (p.name(), p as usize))
                    .chain([(VAP_POINT, 3)]);
                for (point, slot) in slots {
                    if name == "*" || name == point {
                        let slot = &mut actions[slot];
                        *slot = Some(match *slot {
                            Some(prev) if prev.strength() >= action.strength() => prev,
                            _ => action,
                        });
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(Enforcement::Scoped(actions))
        } else {
            Err(errors)
        }
    }
}

/// A constraint: a template kind applied to matching objects with parameters.
#[derive(Debug, Clone)]
pub struct Constraint {
    /// `metadata.name`.
    pub name: String,
    /// The constraint's kind: the `spec.crd.spec.names.kind` of its template.
    pub kind: String,
    /// `spec.enforcementAction` and `spec.scopedEnforcementActions`.
    pub enforcement: Enforcement,
    /// `spec.match`.
    pub matcher: Match,
    /// `spec.parameters` (`{}` when absent), checked against the template's schema; policies read
    /// it as `input.parameters`.
    pub parameters: Value,
    /// `parameters` as a regorus value, converted once at load.
    parameters_value: regorus::Value,
    /// The constraint as written: what a CEL template reads as `params`, and what a generated
    /// ValidatingAdmissionPolicyBinding refers to.
    pub object: Arc<Value>,
    /// `object` as a CEL value, converted once at load.
    cel_params: cel::CelParams,
    /// "Kind name at file (document N)", for messages.
    pub describe: String,
    /// The communication matrix its parameters state, for a `PalisadeCommunicationMatrix`
    /// (read at load, so that a broken one is refused there).
    pub matrix: Option<Arc<crate::netpol::matrix::Matrix>>,
}

/// Reads a constraint document; `schema` is its template's parameter schema.
pub fn parse_constraint(doc: &Document, schema: Option<&Value>) -> Result<Constraint, Vec<String>> {
    let v = &doc.value;
    let name = doc.name();
    if name.is_empty() {
        return Err(vec!["metadata.name: required".into()]);
    }
    let enforcement = Enforcement::parse(&v["spec"])?;
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
    let matrix = if doc.kind() == crate::netpol::matrix::KIND {
        Some(Arc::new(
            crate::netpol::matrix::Matrix::parse(name, &parameters).map_err(|e| vec![e])?,
        ))
    } else {
        None
    };
    Ok(Constraint {
        matrix,
        object: Arc::new(v.clone()),
        cel_params: cel::CelParams::new(v),
        name: name.to_owned(),
        kind: doc.kind().to_owned(),
        enforcement,
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
    /// The failure's name in metrics: `timeout`, `engine`, `panic`, `match` or `memory`.
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
    /// The constraint's name.
    pub constraint: String,
    /// The constraint's kind.
    pub constraint_kind: String,
    /// What is done with it: the constraint's action at the enforcement point (or the
    /// ExpansionTemplate's, for a resultant), capped by the configuration file's enforcement.
    pub action: Action,
    /// The violation's `msg`, or what failed.
    pub message: String,
    /// The violation's `details` (`Null` when it gives none).
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

    /// The constraints, by kind and name.
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

    /// The compiled templates, one per constraint kind.
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
        point: Point,
        review: &Review,
        namespace: Option<&Value>,
        inventory: &Inventory,
        deadline: Option<Instant>,
    ) -> Result<Vec<Violation>, OutOfTime> {
        self.evaluate_except(
            point,
            review,
            namespace,
            inventory,
            deadline,
            &BTreeSet::new(),
        )
    }

    /// [`Policies::evaluate`] without the constraints (kind, name) in `skip`: at the webhook,
    /// those the API server judges alone ([`vap::api_server_only`]).
    pub fn evaluate_except(
        &self,
        point: Point,
        review: &Review,
        namespace: Option<&Value>,
        inventory: &Inventory,
        deadline: Option<Instant>,
        skip: &BTreeSet<(String, String)>,
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
        let mut cel_request: Option<cel::Request> = None;
        let mut reachability: Option<crate::netpol::Analysis> = None;
        let mut violations = Vec::new();
        for (c, action) in candidates
            .into_iter()
            .filter_map(|i| self.constraints.get(i))
            .filter(|c| skip.is_empty() || !skip.iter().any(|(k, n)| *k == c.kind && *n == c.name))
            .filter_map(|c| Some((c, c.enforcement.at(point)?)))
        {
            match c.matcher.matches(review, namespace) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    violations.push(c.failure(
                        action,
                        FailureKind::Match,
                        format!("cannot decide whether this constraint applies: {e}"),
                    ));
                    continue;
                }
            }
            let Some(template) = self.templates.get(&c.kind) else {
                violations.push(c.failure(
                    action,
                    FailureKind::Engine,
                    format!("template for kind {} is not loaded", c.kind),
                ));
                continue;
            };
            // A matrix is audited over the whole inventory at once (`audit::matrices`), not
            // one object at a time.
            if point == Point::Audit && template.uses_matrix() {
                continue;
            }
            // Gatekeeper gives the Namespace of every namespaced object (asking the API server
            // when its cache lacks it) or fails the review; a template that reads it must not
            // see it missing, which would read as "no labels" and could let the object in.
            if namespace.is_none()
                && template.uses_namespace_object()
                && review.namespace_object().is_none()
                && !review.object_ref().namespace.is_empty()
                && !review.object_ref().is_namespace()
            {
                violations.push(c.failure(
                    action,
                    FailureKind::Match,
                    format!(
                        "the Namespace {:?} is not known (yet), and this constraint's template reads input.review.namespaceObject; retry once it is in the inventory",
                        review.object_ref().namespace
                    ),
                ));
                continue;
            }
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
            let evaluated = if let Some(program) = template.cel() {
                let request = cel_request.get_or_insert_with(|| {
                    cel::Request::new(review.json(), namespace.or(review.namespace_object()))
                });
                program
                    .evaluate(request, &c.cel_params, limit)
                    .map(|messages| messages.into_iter().map(|m| (m, Value::Null)).collect())
            } else {
                let review_value = input_review
                    .get_or_insert_with(|| review_value(review, namespace))
                    .clone();
                let mut input = input(review_value, &c.parameters_value);
                if template.uses_reachability() && crate::netpol::judge::is_network_policy(review) {
                    if reachability.is_none() {
                        let analysis = crate::netpol::judge::analyse(
                            review,
                            inventory,
                            &self.universe,
                            deadline,
                        )?;
                        reachability = Some(analysis);
                    }
                    if let Some(analysis) = &reachability {
                        add_reachability(&mut input, analysis.facts(&c.parameters));
                    }
                }
                if template.uses_matrix() {
                    let facts = match &c.matrix {
                        Some(m) => crate::netpol::matrix::facts(
                            m,
                            review,
                            inventory,
                            &self.universe,
                            deadline,
                        )?,
                        None => {
                            match crate::netpol::matrix::Matrix::parse(&c.name, &c.parameters) {
                                Ok(m) => crate::netpol::matrix::facts(
                                    &m,
                                    review,
                                    inventory,
                                    &self.universe,
                                    deadline,
                                )?,
                                Err(e) => Some(serde_json::json!({"error": e})),
                            }
                        }
                    };
                    if let Some(facts) = facts {
                        add_palisade(&mut input, "matrix", facts);
                    }
                }
                template
                    .evaluate(input, inventory, limit)
                    .and_then(|result| found(result).map_err(EvalError::Engine))
            };
            match evaluated {
                Ok(found) => {
                    violations.extend(found.into_iter().map(|(message, details)| Violation {
                        constraint: c.name.clone(),
                        constraint_kind: c.kind.clone(),
                        action,
                        message,
                        details,
                        failure: None,
                    }))
                }
                Err(EvalError::Timeout(_)) if limit < template.timeout() => return Err(OutOfTime),
                Err(e) => violations.push(c.failure(
                    action,
                    (&e).into(),
                    format!("policy evaluation failed: {e}"),
                )),
            }
        }
        Ok(violations)
    }
}

impl Constraint {
    fn failure(&self, action: Action, kind: FailureKind, message: String) -> Violation {
        Violation {
            constraint: self.name.clone(),
            constraint_kind: self.kind.clone(),
            action,
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
    add_palisade(input, "reachability", facts);
}

/// Adds `facts` to `input` as `input.palisade.<key>`.
fn add_palisade(input: &mut regorus::Value, key: &str, facts: Value) {
    let Ok(map) = input.as_object_mut() else {
        return;
    };
    let name = regorus::Value::from("palisade");
    if !map.contains_key(&name) {
        map.insert(
            name.clone(),
            regorus::Value::from(std::collections::BTreeMap::new()),
        );
    }
    if let Some(Ok(p)) = map.get_mut(&name).map(regorus::Value::as_object_mut) {
        p.insert(regorus::Value::from(key), to_regorus(&facts));
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
