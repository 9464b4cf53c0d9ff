//! K8sNativeValidation: ConstraintTemplates written in CEL, run with Gatekeeper's semantics.
//!
//! A template's `code[]` entry with `engine: K8sNativeValidation` holds a [`Source`]:
//! `variables`, `matchCondition(s)`, `validations` and `failurePolicy`, as a
//! ValidatingAdmissionPolicy has them. [`Program::compile`] checks and compiles it once, and
//! [`Program::evaluate`] judges one review for one constraint, as Gatekeeper's `k8scel` driver
//! does:
//! - the variables are `object` (null on DELETE), `oldObject` (null on CREATE), `request` (the
//!   AdmissionRequest), `params` (the whole constraint), `namespaceObject` (the object's
//!   Namespace, null for cluster-scoped objects) and `variables`;
//! - `variables.anyObject` (`oldObject` on DELETE, `object` otherwise) and `variables.params`
//!   (the constraint's `spec.parameters`, null without them) come first, then the template's
//!   own variables in order, each able to read the ones before it;
//! - when a match condition is false the constraint does not apply; when one fails (and none is
//!   false) the failure policy decides;
//! - each validation that is false is a violation, with the value of its `messageExpression`,
//!   else its `message`, else `failed expression: <expression>`; one that fails is an error
//!   under `failurePolicy: Fail` (the default) and is passed over under `Ignore`.
//!
//! The engine is cel-rust's interpreter with its strings, lists, math and encoders extensions
//! and the Kubernetes libraries (`cel/k8s`). Evaluation is bounded as Rego's is: by the time left
//! to the review, and by a cost: every element a comprehension (`all`, `exists`, `map`,
//! `filter`, …) walks is charged, at most [`COST_LIMIT`] per constraint and review. Either limit
//! stops the evaluation and the constraint fails closed.

pub(crate) mod k8s;
mod macros;
mod shared;

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use cel::common::ast::{ComprehensionExpr, EntryExpr, Expr, IdedExpr};
use cel::common::types::DYN_TYPE;
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Env, ExecutionError, Value as CelValue};
use serde_json::Value;

use super::template::EvalError;
use shared::{LazyList, LazyMap, SharedList, SharedMap};

/// The engine name in a template's `code[]`.
pub const ENGINE: &str = "K8sNativeValidation";

/// Names Gatekeeper keeps for its own variables and match conditions.
pub const RESERVED_PREFIX: &str = "gatekeeper_internal_";

/// The most comprehension elements one constraint may walk for one review, as Kubernetes'
/// per-call cost limit (1,000,000) bounds an expression's cost.
pub const COST_LIMIT: u64 = 1_000_000;

/// `variables.anyObject`: Gatekeeper's, so that a template written for it reads the same.
pub const ANY_OBJECT: &str = r#"has(request.operation) && request.operation == "DELETE" && object == null ? oldObject : object"#;

/// `variables.params`: the constraint's `spec.parameters`, as Gatekeeper binds it.
pub const PARAMS: &str =
    "!has(params.spec) ? null : !has(params.spec.parameters) ? null: params.spec.parameters";

/// A named expression: a variable or a match condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// Its name.
    pub name: String,
    /// Its CEL.
    pub expression: String,
}

/// One `validations[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validation {
    /// What must hold: a violation when false.
    pub expression: String,
    /// The violation's message.
    pub message: Option<String>,
    /// CEL that makes the violation's message; `message` is the fallback.
    pub message_expression: Option<String>,
}

/// What an expression that fails to evaluate means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// The constraint fails closed: the error is a violation (Gatekeeper's default).
    #[default]
    Fail,
    /// The failing expression is passed over.
    Ignore,
}

impl FailurePolicy {
    /// As a ValidatingAdmissionPolicy spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::Fail => "Fail",
            FailurePolicy::Ignore => "Ignore",
        }
    }
}

/// A template's K8sNativeValidation code, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// `variables`, in order.
    pub variables: Vec<Named>,
    /// `matchCondition` (Gatekeeper's spelling) or `matchConditions`.
    pub match_conditions: Vec<Named>,
    /// `validations`.
    pub validations: Vec<Validation>,
    /// `failurePolicy`, `Fail` when absent.
    pub failure_policy: FailurePolicy,
    /// `generateVAP`: whether Gatekeeper would generate a ValidatingAdmissionPolicy for it
    /// (unset: its `--default-create-vap-for-templates`).
    pub generate_vap: Option<bool>,
    /// Where it is written, e.g. `spec.targets[0].code[0].source`, for messages.
    pub at: String,
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn string_field(v: &Value, at: &str, required: bool) -> Result<Option<String>, String> {
    match v {
        Value::Null if !required => Ok(None),
        Value::Null => Err(format!("{at}: required")),
        Value::String(s) if required && s.trim().is_empty() => {
            Err(format!("{at}: is empty; write a CEL expression"))
        }
        Value::String(s) => Ok(Some(s.clone())),
        other => Err(format!("{at}: must be a string, not {other}")),
    }
}

fn entries<'a>(v: &'a Value, at: &str) -> Result<&'a [Value], String> {
    match v {
        Value::Null => Ok(&[]),
        Value::Array(a) => Ok(a),
        _ => Err(format!("{at}: must be a list")),
    }
}

fn known_keys(v: &Value, at: &str, known: &[&str]) -> Result<(), String> {
    let Some(map) = v.as_object() else {
        return Err(format!("{at}: must be a mapping"));
    };
    if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!(
            "{at}.{unknown}: unknown field; expected one of {}",
            known.join(", ")
        ));
    }
    Ok(())
}

/// Reads `named` entries (variables or match conditions); names must be unique identifiers
/// that Gatekeeper does not keep for itself.
fn named(list: &[Value], at: &str, what: &str, reserved: &[&str]) -> Result<Vec<Named>, String> {
    let mut out: Vec<Named> = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let at = format!("{at}[{i}]");
        known_keys(item, &at, &["name", "expression"])?;
        let name = string_field(&item["name"], &format!("{at}.name"), true)?.unwrap_or_default();
        let expression = string_field(&item["expression"], &format!("{at}.expression"), true)?
            .unwrap_or_default();
        if name.starts_with(RESERVED_PREFIX) {
            return Err(format!(
                "{at}.name: {name:?} starts with {RESERVED_PREFIX:?}, which Gatekeeper keeps for its own {what}s; rename it"
            ));
        }
        if reserved.contains(&name.as_str()) {
            return Err(format!(
                "{at}.name: {name:?} is Gatekeeper's own variable (variables.{name}); rename it"
            ));
        }
        if what == "variable" && !is_identifier(&name) {
            return Err(format!(
                "{at}.name: {name:?} is not a CEL identifier (letters, digits and _, not starting with a digit)"
            ));
        }
        if out.iter().any(|n| n.name == name) {
            return Err(format!("{at}.name: a second {what} named {name:?}"));
        }
        out.push(Named { name, expression });
    }
    Ok(out)
}

impl Source {
    /// Reads a `code[].source` of engine K8sNativeValidation written at `at`; every error
    /// names the field.
    pub fn parse(v: &Value, at: &str) -> Result<Self, String> {
        known_keys(
            v,
            at,
            &[
                "validations",
                "variables",
                "matchCondition",
                "matchConditions",
                "failurePolicy",
                "generateVAP",
            ],
        )?;
        let variables = named(
            entries(&v["variables"], &format!("{at}.variables"))?,
            &format!("{at}.variables"),
            "variable",
            &["params", "anyObject"],
        )?;
        let (key, conditions) = match (&v["matchCondition"], &v["matchConditions"]) {
            (Value::Null, c) => ("matchConditions", c),
            (c, Value::Null) => ("matchCondition", c),
            _ => {
                return Err(format!(
                    "{at}: has both matchCondition and matchConditions; keep one (Gatekeeper reads matchCondition)"
                ));
            }
        };
        let match_conditions = named(
            entries(conditions, &format!("{at}.{key}"))?,
            &format!("{at}.{key}"),
            "match condition",
            &[],
        )?;
        let list = entries(&v["validations"], &format!("{at}.validations"))?;
        if list.is_empty() {
            return Err(format!(
                "{at}.validations: required; list at least one {{expression, message}}"
            ));
        }
        let mut validations = Vec::new();
        for (i, item) in list.iter().enumerate() {
            let at = format!("{at}.validations[{i}]");
            known_keys(item, &at, &["expression", "message", "messageExpression"])?;
            validations.push(Validation {
                expression: string_field(&item["expression"], &format!("{at}.expression"), true)?
                    .unwrap_or_default(),
                message: string_field(&item["message"], &format!("{at}.message"), false)?,
                message_expression: string_field(
                    &item["messageExpression"],
                    &format!("{at}.messageExpression"),
                    false,
                )?
                .filter(|m| !m.trim().is_empty()),
            });
        }
        let failure_policy = match &v["failurePolicy"] {
            Value::Null => FailurePolicy::Fail,
            Value::String(s) if s == "Fail" => FailurePolicy::Fail,
            Value::String(s) if s == "Ignore" => FailurePolicy::Ignore,
            other => {
                return Err(format!("{at}.failurePolicy: {other} is not Fail or Ignore"));
            }
        };
        let generate_vap = match &v["generateVAP"] {
            Value::Null => None,
            Value::Bool(b) => Some(*b),
            other => return Err(format!("{at}.generateVAP: {other} is not true or false")),
        };
        Ok(Source {
            variables,
            match_conditions,
            validations,
            failure_policy,
            generate_vap,
            at: at.to_owned(),
        })
    }
}

/// The name the charging function is declared under: `@` keeps CEL source from calling it.
const CHARGE: &str = "@palisade_charge";

/// What adds functions, types or macros to an environment.
type Extension = fn(&mut Env) -> Result<(), cel::DeclarationError>;

/// The environment every template compiles and runs in.
static ENV: LazyLock<Result<Arc<Env>, String>> = LazyLock::new(|| {
    let mut env = Env::stdlib();
    let extensions: [Extension; 6] = [
        macros::extension,
        cel::extensions::strings,
        cel::extensions::lists,
        cel::extensions::math,
        cel::extensions::encoders,
        k8s::extension,
    ];
    for extension in extensions {
        env.add_extension(extension)
            .map_err(|e| format!("the CEL environment: {e}"))?;
    }
    env.add_overload(CHARGE, "palisade_charge_dyn", vec![DYN_TYPE], charge)
        .map_err(|e| format!("the CEL environment: {e}"))?;
    cel::add_overload!(env, fn matches_cached: (cel::common::types::CelString, cel::common::types::CelString) -> Result<cel::common::types::CelBool>,
        name = MATCHES, id = "palisade_matches_string_string")
    .map_err(|e| format!("the CEL environment: {e}"))?;
    // Kubernetes (cel-go) keeps the last entry of a map literal that repeats a key.
    env.set_error_on_duplicate_map_keys(false);
    Ok(Arc::new(env))
});

fn env() -> Result<&'static Arc<Env>, String> {
    ENV.as_ref().map_err(Clone::clone)
}

/// What one evaluation may still spend, on this thread.
#[derive(Clone, Copy)]
struct Meter {
    deadline: Instant,
    limit: Duration,
    cost: u64,
    left: u64,
    stopped: Option<Stop>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Time,
    Cost,
}

thread_local! {
    static METER: Cell<Option<Meter>> = const { Cell::new(None) };
}

/// Charges the elements of a comprehension's range before it is walked, and stops the
/// evaluation once the time or the cost is spent. The stop is kept beside the evaluation: an
/// error inside `||` or `&&` could otherwise be absorbed.
fn charge<'b, 'v>(mut args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let Some(range) = args.pop() else {
        return Err(ExecutionError::function_error(CHARGE, "no range"));
    };
    let size = range
        .as_sizer()
        .map(|s| u64::try_from(*s.size().inner()).unwrap_or(0))
        .unwrap_or(0);
    let stop = METER.with(|m| {
        let mut meter = m.get()?;
        if meter.stopped.is_none() {
            if meter.left < size {
                meter.stopped = Some(Stop::Cost);
            } else if Instant::now() >= meter.deadline {
                meter.stopped = Some(Stop::Time);
            } else {
                meter.left -= size;
            }
            m.set(Some(meter));
        }
        meter.stopped
    });
    match stop {
        Some(Stop::Cost) => Err(ExecutionError::function_error(
            "cost",
            "exceeded the cost limit",
        )),
        Some(Stop::Time) => Err(ExecutionError::function_error(
            "time",
            "exceeded the time limit",
        )),
        None => Ok(range),
    }
}

/// Sets this thread's meter for the life of the guard.
struct Metering;

impl Metering {
    fn start(limit: Duration, cost: u64) -> Self {
        METER.with(|m| {
            m.set(Some(Meter {
                deadline: Instant::now() + limit,
                limit,
                cost,
                left: cost,
                stopped: None,
            }))
        });
        Metering
    }

    /// The limit the evaluation ran into, if it did.
    fn stopped(&self) -> Option<EvalError> {
        let meter = METER.with(Cell::get)?;
        match meter.stopped? {
            Stop::Time => Some(EvalError::Timeout(meter.limit)),
            Stop::Cost => Some(EvalError::Engine(format!(
                "K8sNativeValidation: exceeded the cost limit of {} comprehension elements for one review",
                meter.cost
            ))),
        }
    }
}

impl Drop for Metering {
    fn drop(&mut self) {
        METER.with(|m| m.set(None));
    }
}

/// One compiled expression: its AST with each comprehension's range charged.
#[derive(Debug)]
struct Compiled {
    /// Where it is written, e.g. `….validations[1].expression`.
    field: String,
    /// Its text, for messages.
    text: String,
    /// The name of the variable or match condition.
    name: String,
    /// `variables.<name>`: what a variable is bound as.
    bound: String,
    expr: IdedExpr,
}

#[derive(Debug)]
struct CompiledValidation {
    check: Compiled,
    message: Option<String>,
    message_expression: Option<Compiled>,
}

/// A compiled K8sNativeValidation source.
#[derive(Debug)]
pub struct Program {
    /// "ConstraintTemplate name", for messages.
    template: String,
    variables: Vec<Compiled>,
    conditions: Vec<Compiled>,
    validations: Vec<CompiledValidation>,
    failure_policy: FailurePolicy,
    uses_namespace_object: bool,
    source: Source,
    /// The most comprehension elements one evaluation may walk ([`COST_LIMIT`] unless set).
    cost_limit: u64,
    /// An expression reads `variables` other than as `variables.<name>`.
    reads_variables_whole: bool,
    /// Per variable after Gatekeeper's own: whether it reads nothing but the constraint and
    /// such variables before it, so that its value is the same at every review
    /// ([`CelParams`] keeps it once computed).
    constant: Vec<bool>,
    /// Per variable after Gatekeeper's own: whether it reads `variables` whole.
    reads_whole: Vec<bool>,
    /// Tells this program's constants from another's, in a [`CelParams`].
    id: u64,
}

/// What the expressions may name besides comprehension variables.
const ROOTS: [&str; 6] = [
    "object",
    "oldObject",
    "request",
    "params",
    "namespaceObject",
    "variables",
];

/// Type names that read as identifiers.
const NAMES: [&str; 12] = [
    "int",
    "uint",
    "double",
    "bool",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
    "dyn",
    "google",
];

/// The namespaces of functions called as `namespace.function(…)`: cel-rust's extensions' and
/// the Kubernetes libraries'.
const NAMESPACES: [&str; 11] = [
    "optional", "strings", "math", "base64", "lists", "cel", "sets", "format", "ip", "cidr",
    "semver",
];

impl Program {
    /// Checks and compiles `source` for `template` ("ConstraintTemplate name", which evaluation
    /// errors name): every error names the field, the expression and the position in it.
    pub fn compile(template: &str, source: &Source) -> Result<Self, String> {
        let env = env()?;
        let mut declared: Vec<&str> = vec!["anyObject", "params"];
        let mut uses_namespace_object = false;
        let mut compile = |field: String, name: &str, text: &str, declared: &[&str]| {
            let compiled = compile_one(env, &field, name, text, declared)?;
            uses_namespace_object |= mentions(&compiled.expr, "namespaceObject");
            Ok::<_, String>(compiled)
        };
        let mut variables = vec![
            compile(
                "variables.anyObject (Gatekeeper's)".into(),
                "anyObject",
                ANY_OBJECT,
                &[],
            )?,
            compile(
                "variables.params (Gatekeeper's)".into(),
                "params",
                PARAMS,
                &[],
            )?,
        ];
        for (i, v) in source.variables.iter().enumerate() {
            variables.push(compile(
                format!("{}.variables[{i}].expression", source.at),
                &v.name,
                &v.expression,
                &declared,
            )?);
            declared.push(&v.name);
        }
        let key = "matchConditions";
        let conditions = source
            .match_conditions
            .iter()
            .enumerate()
            .map(|(i, c)| {
                compile(
                    format!("{}.{key}[{i}].expression", source.at),
                    &c.name,
                    &c.expression,
                    &declared,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut validations = Vec::new();
        for (i, v) in source.validations.iter().enumerate() {
            let at = format!("{}.validations[{i}]", source.at);
            validations.push(CompiledValidation {
                check: compile(format!("{at}.expression"), "", &v.expression, &declared)?,
                message: v.message.clone(),
                message_expression: v
                    .message_expression
                    .as_deref()
                    .map(|m| compile(format!("{at}.messageExpression"), "", m, &declared))
                    .transpose()?,
            });
        }
        let reads_variables_whole =
            any_reads_variables_whole(&variables, &conditions, &validations);
        let mut constants = std::collections::HashSet::new();
        let constant = variables[BUILTIN_VARIABLES..]
            .iter()
            .map(|v| {
                let constant = reads_only_constants(&v.expr, &constants);
                if constant {
                    constants.insert(v.name.clone());
                }
                constant
            })
            .collect();
        static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let reads_whole = variables[BUILTIN_VARIABLES..]
            .iter()
            .map(|v| self::reads_variables_whole(&v.expr))
            .collect();
        Ok(Program {
            constant,
            reads_whole,
            id: IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            template: template.to_owned(),
            variables,
            conditions,
            validations,
            failure_policy: source.failure_policy,
            uses_namespace_object,
            reads_variables_whole,
            source: source.clone(),
            cost_limit: COST_LIMIT,
        })
    }

    /// The same program with another cost limit: the most comprehension elements one
    /// evaluation may walk.
    pub fn with_cost_limit(mut self, elements: u64) -> Self {
        self.cost_limit = elements;
        self
    }

    /// The source it was compiled from.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Whether an expression reads `namespaceObject`.
    pub fn uses_namespace_object(&self) -> bool {
        self.uses_namespace_object
    }

    /// Judges `request` for the constraint `params` (see [`CelParams`]), for at most `limit`:
    /// the messages of the violations.
    pub fn evaluate(
        &self,
        request: &Request<'_>,
        params: &CelParams,
        limit: Duration,
    ) -> Result<Vec<String>, EvalError> {
        let env = env().map_err(EvalError::Engine)?;
        let metering = Metering::start(limit, self.cost_limit);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.run(env, request, params)
        }))
        .unwrap_or(Err(EvalError::Panic));
        // A limit reached anywhere stops the constraint, whatever became of the error.
        if let Some(stopped) = metering.stopped() {
            return Err(stopped);
        }
        result
    }

    fn run(
        &self,
        env: &Arc<Env>,
        request: &Request<'_>,
        params: &CelParams,
    ) -> Result<Vec<String>, EvalError> {
        // The review and the constraint are lent to the evaluation, never copied; Gatekeeper's
        // two variables (anyObject, params) are read from them directly.
        let roots = Roots {
            request,
            params,
            builtins: true,
        };
        let mut ctx = Context::with_env(env.clone());
        ctx.set_variable_resolver(&roots);
        let failed = self.bind_variables(&mut ctx, &roots, params);
        if self.reads_variables_whole {
            bind_variables_map(&mut ctx, &roots, &self.variables);
        }
        let error = |c: &Compiled, e: String| {
            let mut message = format!(
                "{}: {}: {:?} failed: {e}",
                self.template,
                c.field,
                one_line(&c.text)
            );
            for (name, e) in &failed {
                if mentions_variable(&c.expr, name) {
                    message.push_str(&format!("; variables.{name} failed: {e}"));
                }
            }
            message
        };
        let mut condition_error = None;
        for c in &self.conditions {
            match truth(c, &ctx, "a match condition") {
                Ok(true) => {}
                Ok(false) => return Ok(Vec::new()),
                Err(e) => {
                    condition_error.get_or_insert_with(|| error(c, e));
                }
            }
        }
        if let Some(e) = condition_error {
            return match self.failure_policy {
                FailurePolicy::Fail => Err(EvalError::Engine(e)),
                FailurePolicy::Ignore => Ok(Vec::new()),
            };
        }
        let mut messages = Vec::new();
        for v in &self.validations {
            match truth(&v.check, &ctx, "a validation") {
                Ok(true) => continue,
                Ok(false) => messages.push(message(v, &ctx)),
                Err(e) => match self.failure_policy {
                    FailurePolicy::Fail => return Err(EvalError::Engine(error(&v.check, e))),
                    FailurePolicy::Ignore => continue,
                },
            }
        }
        Ok(messages)
    }
}

/// Gatekeeper's own variables, compiled first in every [`Program`] and read from the review
/// and the constraint directly ([`Roots`]) rather than evaluated.
const BUILTIN_VARIABLES: usize = 2;

/// Evaluates `variables` in order, each bound as `variables.<name>` (cel-rust resolves the
/// qualified name before `variables` itself, and lends the value), so that each sees those
/// before it. One that fails is left out (reading it is then `No such key`); its error is
/// returned for messages.
fn bind_variables(ctx: &mut Context<'_, '_>, variables: &[Compiled]) -> Vec<(String, String)> {
    let empty: Box<dyn Val> = Box::new(cel::common::types::CelMap::from(HashMap::new()));
    ctx.add_variable_as_val("variables", empty);
    let mut failed = Vec::new();
    for v in variables {
        let value = cel::Value::resolve_val(&v.expr, ctx).map(CowVal::into_owned);
        match value {
            Ok(value) => ctx.add_variable_as_val(v.bound.clone(), value),
            Err(e) => failed.push((v.name.clone(), e.to_string())),
        }
    }
    failed
}

impl Program {
    /// Binds the template's variables in order, each as `variables.<name>` (cel-rust resolves
    /// the qualified name before `variables` itself, and lends the value), so that each sees
    /// those before it. One that fails is left out (reading it is then `No such key`); its
    /// error is returned for messages. The constant ones (see `constant`) are evaluated at the
    /// constraint's first review and kept in `params`.
    fn bind_variables<'r>(
        &self,
        ctx: &mut Context<'_, 'r>,
        roots: &'r Roots<'r>,
        params: &CelParams,
    ) -> Vec<(String, String)> {
        let empty: Box<dyn Val> = Box::new(cel::common::types::CelMap::from(HashMap::new()));
        ctx.add_variable_as_val("variables", empty);
        let kept = params.0.constants.get().filter(|(id, _)| *id == self.id);
        let mut failed = Vec::new();
        for (i, v) in self.variables[BUILTIN_VARIABLES..].iter().enumerate() {
            // A variable that reads `variables` whole (`has(variables.x)`) sees those before it,
            // as it would in Kubernetes, where `variables` holds every declared one.
            if self.reads_whole[i] {
                bind_variables_map(ctx, roots, &self.variables);
            }
            let value = match kept.and_then(|(_, k)| k[i].as_ref()) {
                Some(Ok(value)) => Ok(value.clone_as_boxed()),
                Some(Err(e)) => Err(e.clone()),
                None => cel::Value::resolve_val(&v.expr, ctx)
                    .map(CowVal::into_owned)
                    .map_err(|e| e.to_string()),
            };
            match value {
                Ok(value) => ctx.add_variable_as_val(v.bound.clone(), value),
                Err(e) => failed.push((v.name.clone(), e)),
            }
        }
        if kept.is_none() && self.constant.contains(&true) {
            self.keep_constants(ctx, params, &failed);
        }
        failed
    }

    /// Keeps the constant variables' values (or errors) in `params`, unless the evaluation was
    /// stopped (a time or cost limit is this review's, not the constraint's).
    fn keep_constants(
        &self,
        ctx: &Context<'_, '_>,
        params: &CelParams,
        failed: &[(String, String)],
    ) {
        if METER.with(|m| m.get().is_some_and(|m| m.stopped.is_some())) {
            return;
        }
        let mut kept = Vec::with_capacity(self.constant.len());
        for (v, &constant) in self.variables[BUILTIN_VARIABLES..]
            .iter()
            .zip(&self.constant)
        {
            if !constant {
                kept.push(None);
                continue;
            }
            let value = match failed.iter().find(|(name, _)| *name == v.name) {
                Some((_, e)) => Err(e.clone()),
                None => {
                    let Some(value) = ctx.get_variable(&v.bound) else {
                        return;
                    };
                    // Owned by the constraint: through cel::Value, which owns what it holds.
                    let Ok(value) = CelValue::try_from(value.as_ref()) else {
                        return;
                    };
                    match owned(value) {
                        Some(value) => Ok(value),
                        None => return,
                    }
                }
            };
            kept.push(Some(value));
        }
        let _ = params.0.constants.set((self.id, Arc::new(kept)));
    }
}

/// `value` as a `Val` that owns what it holds, a top-level map or list shared by its copies.
fn owned(value: CelValue) -> Option<Box<dyn Val>> {
    use cel::common::value::{Builtin, BuiltinRef};
    let boxed = Box::<dyn Val>::try_from(value).ok()?;
    if !matches!(boxed.as_builtin(), BuiltinRef::Map(_) | BuiltinRef::List(_)) {
        return Some(boxed);
    }
    match boxed.into_builtin()? {
        Builtin::Map(m) => Some(Box::new(SharedMap::new(m))),
        Builtin::List(l) => Some(Box::new(SharedList::new(l))),
        _ => None,
    }
}

/// Whether `e` reads nothing but the constraint (`params`, `variables.params`), the variables
/// named in `constants`, and its own comprehensions' variables: then its value depends on the
/// constraint alone. Conservative: a comprehension variable named like a root, or `variables`
/// read other than as `variables.<name>`, makes it not constant.
fn reads_only_constants(e: &IdedExpr, constants: &std::collections::HashSet<String>) -> bool {
    let mut bound = std::collections::HashSet::new();
    visit(e, &mut |x| {
        if let Expr::Comprehension(c) = &x.expr {
            bound.insert(c.iter_var.clone());
            bound.insert(c.accu_var.clone());
            if let Some(v) = &c.iter_var2 {
                bound.insert(v.clone());
            }
        }
    });
    only_constants(e, constants, &bound)
}

fn only_constants(
    e: &IdedExpr,
    constants: &std::collections::HashSet<String>,
    bound: &std::collections::HashSet<String>,
) -> bool {
    let walk = |x: &IdedExpr| only_constants(x, constants, bound);
    match &e.expr {
        Expr::Select(s)
            if !s.test && matches!(&s.operand.expr, Expr::Ident(n) if n == "variables") =>
        {
            s.field == "params" || constants.contains(&s.field)
        }
        Expr::Ident(n) => {
            n == "params" || (bound.contains(n) && n != "variables" && !ROOTS.contains(&n.as_str()))
        }
        Expr::Select(s) => walk(&s.operand),
        Expr::Comprehension(c) => [
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ]
        .into_iter()
        .all(walk),
        Expr::Call(call) => call.target.as_deref().is_none_or(walk) && call.args.iter().all(walk),
        Expr::List(l) => l.elements.iter().all(walk),
        Expr::Map(m) => m.entries.iter().all(|entry| match &entry.expr {
            EntryExpr::MapEntry(m) => walk(&m.key) && walk(&m.value),
            EntryExpr::StructField(f) => walk(&f.value),
        }),
        Expr::Struct(st) => st.entries.iter().all(|entry| match &entry.expr {
            EntryExpr::StructField(f) => walk(&f.value),
            EntryExpr::MapEntry(m) => walk(&m.key) && walk(&m.value),
        }),
        Expr::Literal(_) => true,
        Expr::Unspecified => false,
    }
}

/// Binds `variables` as one map too, for an expression that reads it other than as
/// `variables.<name>` (`has(variables.x)`, `variables[k]`): a copy of every value, so only
/// such programs pay for it.
fn bind_variables_map<'r>(ctx: &mut Context<'_, 'r>, roots: &'r Roots<'r>, variables: &[Compiled]) {
    let mut map: HashMap<cel::common::types::CelMapKey<'r>, Box<dyn Val + 'r>> = HashMap::new();
    for v in variables {
        let value = match v.name.as_str() {
            "anyObject" | "params" => roots.resolve(&v.bound).map(|c| c.into_owned()),
            _ => ctx.get_variable(&v.bound).map(|c| c.into_owned()),
        };
        if let Some(value) = value {
            map.insert(v.name.clone().into(), value);
        }
    }
    let map: Box<dyn Val + 'r> = Box::new(cel::common::types::CelMap::from(map));
    ctx.add_variable_as_val("variables", map);
}

/// Whether `c` is true: `Err` with what it was when it is not a bool, or the error.
fn truth(c: &Compiled, ctx: &Context<'_, '_>, what: &str) -> Result<bool, String> {
    let value = cel::Value::resolve_val(&c.expr, ctx).map_err(|e| e.to_string())?;
    match value.downcast_ref::<cel::common::types::CelBool>() {
        Some(b) => Ok(*b.inner()),
        None => Err(format!(
            "{what} must be a bool, not {}",
            value.get_type().name()
        )),
    }
}

/// A false validation's message, as Kubernetes makes it: the `messageExpression`'s value when
/// it is a non-empty string of one line, else the `message`, else the expression.
fn message(v: &CompiledValidation, ctx: &Context<'_, '_>) -> String {
    if let Some(m) = &v.message_expression
        && let Ok(value) = cel::Value::resolve_val(&m.expr, ctx)
        && let Ok(CelValue::String(s)) = CelValue::try_from(value.as_ref())
        && !s.trim().is_empty()
        && !s.contains(['\n', '\r'])
    {
        return s.trim().to_owned();
    }
    match &v.message {
        Some(m) if !m.trim().is_empty() => m.trim().to_owned(),
        _ => format!("failed expression: {}", v.check.text.trim()),
    }
}

/// What every expression reads besides `variables`: the review and the constraint, lent.
struct Roots<'r> {
    request: &'r Request<'r>,
    /// The constraint.
    params: &'r CelParams,
    /// Whether `variables.anyObject` and `variables.params` are read from the review and the
    /// constraint ([`Program`]), or evaluated from a policy's own variables ([`AdmissionPolicy`]).
    builtins: bool,
}

impl VariableResolver for Roots<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let value: &dyn Val = match variable {
            "object" => &*self.request.object,
            "oldObject" => &*self.request.old_object,
            "request" => &*self.request.request,
            "namespaceObject" => &*self.request.namespace,
            "params" => &*self.params.0.whole,
            // `has(request.operation) && request.operation == "DELETE" && object == null ?
            // oldObject : object`, and object is null on DELETE.
            "variables.anyObject" if self.builtins => {
                if self.request.deleting {
                    &*self.request.old_object
                } else {
                    &*self.request.object
                }
            }
            // `!has(params.spec) ? null : !has(params.spec.parameters) ? null :
            // params.spec.parameters`.
            "variables.params" if self.builtins => &*self.params.0.parameters,
            _ => return None,
        };
        Some(CowVal::Borrowed(value))
    }
}

fn one_line(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > 120 {
        format!("{}…", line.chars().take(120).collect::<String>())
    } else {
        line
    }
}

/// Parses and checks one expression, then charges its comprehensions.
fn compile_one(
    env: &Env,
    field: &str,
    name: &str,
    text: &str,
    declared: &[&str],
) -> Result<Compiled, String> {
    let program = env.compile(text).map_err(|errors| {
        let reasons = errors
            .errors
            .iter()
            .map(|e| format!("line {}, column {}: {}", e.pos.0, e.pos.1 + 1, e.msg))
            .collect::<Vec<_>>()
            .join("; ");
        format!("{field}: {:?} does not compile: {reasons}", one_line(text))
    })?;
    let mut check = Check {
        declared,
        scopes: Vec::new(),
        problem: None,
    };
    check.walk(program.expression());
    if let Some((id, problem)) = check.problem {
        // Offsets are counted in characters from the start of the expression.
        let at = match program.source_info().offset_for(id) {
            Some((start, _)) => {
                let before: Vec<char> = text.chars().take(start as usize).collect();
                let line = before.iter().filter(|c| **c == '\n').count() + 1;
                let column = before.iter().rev().take_while(|c| **c != '\n').count() + 1;
                format!("line {line}, column {column}: ")
            }
            None => String::new(),
        };
        return Err(format!(
            "{field}: {:?} does not compile: {at}{problem}",
            one_line(text)
        ));
    }
    let mut expr = program.expression().clone();
    let mut next_id = u64::MAX / 2;
    charge_comprehensions(&mut expr, &mut next_id);
    Ok(Compiled {
        field: field.to_owned(),
        text: text.to_owned(),
        name: name.to_owned(),
        bound: format!("variables.{name}"),
        expr,
    })
}

/// Finds names an expression reads that nothing declares: a misspelt variable would otherwise
/// fail only on the reviews that reach it.
struct Check<'a> {
    declared: &'a [&'a str],
    scopes: Vec<String>,
    problem: Option<(u64, String)>,
}

impl Check<'_> {
    fn report(&mut self, id: u64, problem: String) {
        self.problem.get_or_insert((id, problem));
    }

    fn walk(&mut self, e: &IdedExpr) {
        if self.problem.is_some() {
            return;
        }
        match &e.expr {
            Expr::Ident(name) => {
                if !(ROOTS.contains(&name.as_str())
                    || NAMES.contains(&name.as_str())
                    || self.scopes.iter().any(|s| s == name))
                {
                    let hint = if name == "authorizer" {
                        " (Gatekeeper's K8sNativeValidation gives no authorizer)".to_owned()
                    } else {
                        format!("; expressions read {}", ROOTS.join(", "))
                    };
                    self.report(e.id, format!("undeclared reference to {name:?}{hint}"));
                }
            }
            Expr::Select(select) => {
                if let Expr::Ident(root) = &select.operand.expr
                    && root == "variables"
                    && !self.scopes.iter().any(|s| s == "variables")
                {
                    if !self.declared.contains(&select.field.as_str()) {
                        let known = if self.declared.is_empty() {
                            "none is declared before it".to_owned()
                        } else {
                            format!("declared before it: {}", self.declared.join(", "))
                        };
                        self.report(
                            e.id,
                            format!("variables.{} is not declared ({known})", select.field),
                        );
                    }
                    return;
                }
                self.walk(&select.operand);
            }
            Expr::Call(call) => {
                if let Some(target) = &call.target {
                    // `sets.contains(…)`, `optional.of(…)`: a namespace, not a variable.
                    let namespace = matches!(&target.expr, Expr::Ident(name)
                        if NAMESPACES.contains(&name.as_str())
                            && !self.scopes.iter().any(|s| s == name));
                    if !namespace {
                        self.walk(target);
                    }
                }
                for a in &call.args {
                    self.walk(a);
                }
            }
            Expr::Comprehension(c) => self.comprehension(c),
            Expr::List(list) => list.elements.iter().for_each(|x| self.walk(x)),
            Expr::Map(map) => {
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(m) = &entry.expr {
                        self.walk(&m.key);
                        self.walk(&m.value);
                    }
                }
            }
            Expr::Struct(s) => {
                for entry in &s.entries {
                    if let EntryExpr::StructField(f) = &entry.expr {
                        self.walk(&f.value);
                    }
                }
            }
            Expr::Literal(_) | Expr::Unspecified => {}
        }
    }

    fn comprehension(&mut self, c: &ComprehensionExpr) {
        self.walk(&c.iter_range);
        self.walk(&c.accu_init);
        let depth = self.scopes.len();
        self.scopes.push(c.accu_var.clone());
        self.scopes.push(c.iter_var.clone());
        if let Some(v) = &c.iter_var2 {
            self.scopes.push(v.clone());
        }
        self.walk(&c.loop_cond);
        self.walk(&c.loop_step);
        self.walk(&c.result);
        self.scopes.truncate(depth);
    }
}

/// `matches` with its pattern compiled once per thread ([`k8s::regex::cached`]) rather than at
/// every call, as cel-rust's does; compiled expressions call it in place of `matches`
/// ([`charge_comprehensions`]). It answers as cel-rust's, errors included.
const MATCHES: &str = "@palisade_matches";

fn matches_cached(
    this: &cel::common::types::CelString<'_>,
    re: &cel::common::types::CelString<'_>,
) -> Result<cel::common::types::CelBool, ExecutionError> {
    match k8s::regex::cached(re.inner()) {
        Ok(compiled) => Ok(compiled.is_match(this.inner()).into()),
        Err(err) => Err(ExecutionError::FunctionError {
            function: "matches".to_owned(),
            message: format!("'{}' not a valid regex:\n{err}", re.inner()),
        }),
    }
}

/// Wraps each comprehension's range in [`CHARGE`], and makes `s.matches(re)` and
/// `matches(s, re)` calls of [`MATCHES`].
fn charge_comprehensions(e: &mut IdedExpr, next_id: &mut u64) {
    match &mut e.expr {
        Expr::Comprehension(c) => {
            charge_comprehensions(&mut c.iter_range, next_id);
            charge_comprehensions(&mut c.accu_init, next_id);
            charge_comprehensions(&mut c.loop_cond, next_id);
            charge_comprehensions(&mut c.loop_step, next_id);
            charge_comprehensions(&mut c.result, next_id);
            let range = std::mem::take(&mut c.iter_range);
            *next_id += 1;
            c.iter_range = IdedExpr {
                id: *next_id,
                expr: Expr::Call(cel::common::ast::CallExpr {
                    func_name: CHARGE.to_owned(),
                    target: None,
                    args: vec![range],
                }),
            };
        }
        Expr::Call(call) => {
            if let Some(t) = &mut call.target {
                charge_comprehensions(t, next_id);
            }
            call.args
                .iter_mut()
                .for_each(|a| charge_comprehensions(a, next_id));
            let arity = call.args.len() + usize::from(call.target.is_some());
            if call.func_name == "matches" && arity == 2 {
                if let Some(t) = call.target.take() {
                    call.args.insert(0, *t);
                }
                call.func_name = MATCHES.to_owned();
            }
        }
        Expr::Select(s) => charge_comprehensions(&mut s.operand, next_id),
        Expr::List(l) => l
            .elements
            .iter_mut()
            .for_each(|x| charge_comprehensions(x, next_id)),
        Expr::Map(m) => {
            for entry in &mut m.entries {
                if let EntryExpr::MapEntry(m) = &mut entry.expr {
                    charge_comprehensions(&mut m.key, next_id);
                    charge_comprehensions(&mut m.value, next_id);
                }
            }
        }
        Expr::Struct(s) => {
            for entry in &mut s.entries {
                if let EntryExpr::StructField(f) = &mut entry.expr {
                    charge_comprehensions(&mut f.value, next_id);
                }
            }
        }
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

/// Whether `e` reads the identifier `name` anywhere.
fn mentions(e: &IdedExpr, name: &str) -> bool {
    let mut found = false;
    visit(e, &mut |x| {
        found |= matches!(&x.expr, Expr::Ident(n) if n == name);
    });
    found
}

/// Whether any expression reads `variables` other than as `variables.<name>`.
fn any_reads_variables_whole(
    variables: &[Compiled],
    conditions: &[Compiled],
    validations: &[CompiledValidation],
) -> bool {
    variables
        .iter()
        .chain(conditions)
        .chain(
            validations
                .iter()
                .flat_map(|v| std::iter::once(&v.check).chain(v.message_expression.as_ref())),
        )
        .any(|c| reads_variables_whole(&c.expr))
}

/// Whether `e` reads `variables` other than as `variables.<name>` (`has(variables.x)`,
/// `variables[k]`, `variables` alone).
fn reads_variables_whole(e: &IdedExpr) -> bool {
    match &e.expr {
        Expr::Select(s)
            if !s.test && matches!(&s.operand.expr, Expr::Ident(n) if n == "variables") =>
        {
            false
        }
        Expr::Ident(n) => n == "variables",
        Expr::Select(s) => reads_variables_whole(&s.operand),
        Expr::Comprehension(c) => [
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ]
        .into_iter()
        .any(reads_variables_whole),
        Expr::Call(call) => {
            call.target.as_deref().is_some_and(reads_variables_whole)
                || call.args.iter().any(reads_variables_whole)
        }
        Expr::List(l) => l.elements.iter().any(reads_variables_whole),
        Expr::Map(m) => m.entries.iter().any(|entry| match &entry.expr {
            EntryExpr::MapEntry(m) => {
                reads_variables_whole(&m.key) || reads_variables_whole(&m.value)
            }
            EntryExpr::StructField(f) => reads_variables_whole(&f.value),
        }),
        Expr::Struct(st) => st.entries.iter().any(|entry| match &entry.expr {
            EntryExpr::StructField(f) => reads_variables_whole(&f.value),
            EntryExpr::MapEntry(m) => {
                reads_variables_whole(&m.key) || reads_variables_whole(&m.value)
            }
        }),
        Expr::Literal(_) | Expr::Unspecified => false,
    }
}

/// Whether `e` reads `variables.<name>`.
fn mentions_variable(e: &IdedExpr, name: &str) -> bool {
    let mut found = false;
    visit(e, &mut |x| {
        if let Expr::Select(s) = &x.expr
            && s.field == name
            && matches!(&s.operand.expr, Expr::Ident(n) if n == "variables")
        {
            found = true;
        }
    });
    found
}

fn visit(e: &IdedExpr, f: &mut dyn FnMut(&IdedExpr)) {
    f(e);
    match &e.expr {
        Expr::Comprehension(c) => {
            for x in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                visit(x, f);
            }
        }
        Expr::Call(call) => {
            if let Some(t) = &call.target {
                visit(t, f);
            }
            call.args.iter().for_each(|a| visit(a, f));
        }
        Expr::Select(s) => visit(&s.operand, f),
        Expr::List(l) => l.elements.iter().for_each(|x| visit(x, f)),
        Expr::Map(m) => {
            for entry in &m.entries {
                if let EntryExpr::MapEntry(m) = &entry.expr {
                    visit(&m.key, f);
                    visit(&m.value, f);
                }
            }
        }
        Expr::Struct(s) => {
            for entry in &s.entries {
                if let EntryExpr::StructField(x) = &entry.expr {
                    visit(&x.value, f);
                }
            }
        }
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

/// The review as CEL reads it, converted once and shared by the constraints that judge it. Its
/// strings are borrowed from the review's JSON.
#[derive(Debug)]
pub struct Request<'a> {
    object: Box<dyn Val + 'a>,
    old_object: Box<dyn Val + 'a>,
    request: Box<dyn Val + 'a>,
    namespace: Box<dyn Val + 'a>,
    deleting: bool,
}

impl<'a> Request<'a> {
    /// From an AdmissionRequest's JSON (`object` is the old object on DELETE in Palisade's
    /// reviews, as Gatekeeper's Rego sees it: CEL sees it null, as a ValidatingAdmissionPolicy
    /// does) and the object's Namespace, when known.
    pub fn new(review: &'a Value, namespace: Option<&'a Value>) -> Self {
        let deleting = review["operation"] == "DELETE";
        let null = || -> Box<dyn Val + 'a> { Box::new(cel::common::types::CelNull) };
        let object = if deleting {
            null()
        } else {
            to_val(&review["object"])
        };
        let mut request: HashMap<cel::common::types::CelMapKey<'a>, Box<dyn Val + 'a>> =
            HashMap::new();
        if let Some(map) = review.as_object() {
            for (k, v) in map {
                if !matches!(k.as_str(), "object" | "oldObject" | "namespaceObject") {
                    request.insert(k.as_str().into(), to_val(v));
                }
            }
        }
        Request {
            object,
            old_object: to_val(&review["oldObject"]),
            request: Box::new(cel::common::types::CelMap::from(request)),
            namespace: namespace.map(to_val).unwrap_or_else(null),
            deleting,
        }
    }
}

/// JSON as CEL reads Kubernetes objects, borrowing its strings: integers are `int` (those past
/// int64 `double`, as Kubernetes decodes them), other numbers `double`.
fn to_val<'a>(v: &'a Value) -> Box<dyn Val + 'a> {
    use cel::common::types::{CelBool, CelDouble, CelInt, CelNull, CelString};
    match v {
        Value::Null => Box::new(CelNull),
        Value::Bool(b) => Box::new(CelBool::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Box::new(CelInt::from(i)),
            None => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
        },
        Value::String(s) => Box::new(CelString::from(s.as_str())),
        Value::Array(a) => Box::new(LazyList::new(a)),
        Value::Object(o) => Box::new(LazyMap::new(o)),
    }
}

/// [`to_val`] owning its strings, for what outlives the JSON it came from.
pub(crate) fn to_owned_val(v: &Value) -> Box<dyn Val> {
    use cel::common::types::{CelList, CelMap, CelString};
    match v {
        Value::String(s) => Box::new(CelString::from(s.clone())),
        Value::Array(a) => Box::new(SharedList::new(CelList::from(
            a.iter().map(to_owned_val).collect::<Vec<_>>(),
        ))),
        Value::Object(o) => Box::new(SharedMap::new(CelMap::from(
            o.iter()
                .map(|(k, v)| (k.clone().into(), to_owned_val(v)))
                .collect::<HashMap<_, _>>(),
        ))),
        Value::Null => Box::new(cel::common::types::CelNull),
        Value::Bool(b) => Box::new(cel::common::types::CelBool::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Box::new(cel::common::types::CelInt::from(i)),
            None => Box::new(cel::common::types::CelDouble::from(
                n.as_f64().unwrap_or(f64::NAN),
            )),
        },
    }
}

/// A constraint as CEL reads it, converted once when it loads: the whole object (`params`, as
/// Gatekeeper binds it) and its `spec.parameters` (`variables.params`; null without them).
#[derive(Clone)]
pub struct CelParams(Arc<ParamsVal>);

struct ParamsVal {
    whole: Box<dyn Val>,
    parameters: Box<dyn Val>,
    /// The constant variables' values for this constraint, by the id of the program that
    /// computed them ([`Program::bind_variables`]).
    constants: std::sync::OnceLock<(u64, Arc<Constants>)>,
}

/// Per variable: its value or error when it is constant.
type Constants = Vec<Option<Result<Box<dyn Val>, String>>>;

impl CelParams {
    /// `constraint`, the whole object.
    pub fn new(constraint: &Value) -> Self {
        let parameters = match constraint["spec"].get("parameters") {
            Some(p) => to_owned_val(p),
            None => Box::new(cel::common::types::CelNull),
        };
        Self(Arc::new(ParamsVal {
            whole: to_owned_val(constraint),
            parameters,
            constants: std::sync::OnceLock::new(),
        }))
    }
}

impl std::fmt::Debug for CelParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CelParams")
    }
}

/// `s` as a CEL string literal, for expressions Palisade writes (generated admission policies).
pub fn string_literal(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests;

// A ValidatingAdmissionPolicy's own spec, compiled and evaluated as the API server would: the
// check that the policies `palisade manifests` generates (policy::vap) compile here and judge
// as the webhook does. Self-contained: it builds on `compile_one`, `Request` and the meter.

/// A ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1) compiled from its own spec:
/// its `variables` as written (`anyObject` and `params` included), its `matchConditions`, its
/// `validations` with their messages, and its `failurePolicy`.
#[derive(Debug)]
pub struct AdmissionPolicy {
    /// `metadata.name`, for messages.
    name: String,
    variables: Vec<Compiled>,
    conditions: Vec<Compiled>,
    validations: Vec<CompiledValidation>,
    failure_policy: FailurePolicy,
    /// An expression reads `variables` other than as `variables.<name>`.
    reads_variables_whole: bool,
}

/// What a ValidatingAdmissionPolicy makes of one request, before its binding's action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyVerdict {
    /// A match condition is false (or one failed under `failurePolicy: Ignore`).
    NotMatched,
    /// Judged: the messages of the validations that are false, in order, and the errors of
    /// those that failed under `failurePolicy: Fail` (each also refuses the request).
    Judged {
        /// One per false validation.
        messages: Vec<String>,
        /// One per failed match condition or validation.
        errors: Vec<String>,
    },
}

impl AdmissionPolicy {
    /// Compiles `policy`, a whole ValidatingAdmissionPolicy object; every error names the
    /// policy, the field and the expression.
    pub fn compile(policy: &Value) -> Result<Self, String> {
        let env = env()?;
        let name = policy["metadata"]["name"]
            .as_str()
            .unwrap_or("(no name)")
            .to_owned();
        let spec = &policy["spec"];
        let at = |field: String| format!("ValidatingAdmissionPolicy {name}: spec.{field}");
        let text = |v: &Value, field: String| -> Result<String, String> {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{}: must be a string", at(field)))
        };
        let list = |key: &str| spec[key].as_array().cloned().unwrap_or_default();
        let mut declared: Vec<String> = Vec::new();
        let mut variables = Vec::new();
        for (i, v) in list("variables").iter().enumerate() {
            let var = text(&v["name"], format!("variables[{i}].name"))?;
            let expression = text(&v["expression"], format!("variables[{i}].expression"))?;
            let names: Vec<&str> = declared.iter().map(String::as_str).collect();
            variables.push(compile_one(
                env,
                &at(format!("variables[{i}].expression")),
                &var,
                &expression,
                &names,
            )?);
            declared.push(var);
        }
        let names: Vec<&str> = declared.iter().map(String::as_str).collect();
        let mut conditions = Vec::new();
        for (i, c) in list("matchConditions").iter().enumerate() {
            let condition = text(&c["name"], format!("matchConditions[{i}].name"))?;
            let expression = text(&c["expression"], format!("matchConditions[{i}].expression"))?;
            conditions.push(compile_one(
                env,
                &at(format!("matchConditions[{i}].expression")),
                &condition,
                &expression,
                &names,
            )?);
        }
        let mut validations = Vec::new();
        for (i, v) in list("validations").iter().enumerate() {
            let expression = text(&v["expression"], format!("validations[{i}].expression"))?;
            let message_expression = match &v["messageExpression"] {
                Value::Null => None,
                m => Some(compile_one(
                    env,
                    &at(format!("validations[{i}].messageExpression")),
                    "",
                    &text(m, format!("validations[{i}].messageExpression"))?,
                    &names,
                )?),
            };
            validations.push(CompiledValidation {
                check: compile_one(
                    env,
                    &at(format!("validations[{i}].expression")),
                    "",
                    &expression,
                    &names,
                )?,
                message: v["message"].as_str().map(str::to_owned),
                message_expression,
            });
        }
        let failure_policy = match spec["failurePolicy"].as_str() {
            None | Some("Fail") => FailurePolicy::Fail,
            Some("Ignore") => FailurePolicy::Ignore,
            Some(other) => {
                return Err(format!(
                    "{}: {other:?} is not Fail or Ignore",
                    at("failurePolicy".into())
                ));
            }
        };
        Ok(Self {
            reads_variables_whole: any_reads_variables_whole(&variables, &conditions, &validations),
            name,
            variables,
            conditions,
            validations,
            failure_policy,
        })
    }

    /// Judges the AdmissionRequest `review` (its JSON; `object` null on DELETE as the API
    /// server sends it, or the old object as Palisade's reviews hold it) with the binding's
    /// parameters `params` (the whole constraint) and the object's Namespace, for at most
    /// `limit`. The binding's own selectors are the caller's.
    pub fn evaluate(
        &self,
        review: &Value,
        params: &Value,
        namespace: Option<&Value>,
        limit: Duration,
    ) -> Result<PolicyVerdict, String> {
        let env = env()?;
        let request = Request::new(review, namespace);
        let params = CelParams::new(params);
        let metering = Metering::start(limit, COST_LIMIT);
        let verdict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.judge(env, &request, &params)
        }))
        .map_err(|_| {
            format!(
                "ValidatingAdmissionPolicy {}: the evaluation panicked",
                self.name
            )
        })?;
        if let Some(stopped) = metering.stopped() {
            return Err(format!(
                "ValidatingAdmissionPolicy {}: {stopped}",
                self.name
            ));
        }
        Ok(verdict)
    }

    fn judge(&self, env: &Arc<Env>, request: &Request<'_>, params: &CelParams) -> PolicyVerdict {
        let roots = Roots {
            request,
            params,
            builtins: false,
        };
        let mut ctx = Context::with_env(env.clone());
        ctx.set_variable_resolver(&roots);
        // The API server evaluates variables lazily; one that fails fails what reads it, which
        // leaving it out of `variables` gives too.
        bind_variables(&mut ctx, &self.variables);
        if self.reads_variables_whole {
            bind_variables_map(&mut ctx, &roots, &self.variables);
        }
        let failed = |c: &Compiled, e: String| format!("{}: {e}", c.field);
        let mut condition_errors = Vec::new();
        for c in &self.conditions {
            match truth(c, &ctx, "a match condition") {
                Ok(true) => {}
                Ok(false) => return PolicyVerdict::NotMatched,
                Err(e) => condition_errors.push(failed(c, e)),
            }
        }
        if !condition_errors.is_empty() {
            return match self.failure_policy {
                FailurePolicy::Fail => PolicyVerdict::Judged {
                    messages: Vec::new(),
                    errors: condition_errors,
                },
                FailurePolicy::Ignore => PolicyVerdict::NotMatched,
            };
        }
        let mut messages = Vec::new();
        let mut errors = Vec::new();
        for v in &self.validations {
            match (truth(&v.check, &ctx, "a validation"), self.failure_policy) {
                (Ok(true), _) => {}
                (Ok(false), _) => messages.push(message(v, &ctx)),
                (Err(e), FailurePolicy::Fail) => errors.push(failed(&v.check, e)),
                (Err(_), FailurePolicy::Ignore) => {}
            }
        }
        PolicyVerdict::Judged { messages, errors }
    }
}
