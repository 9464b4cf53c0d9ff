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
//! and the Kubernetes libraries ([`k8s`]). Evaluation is bounded as Rego's is: by the time left
//! to the review, and by a cost: every element a comprehension (`all`, `exists`, `map`,
//! `filter`, …) walks is charged, at most [`COST_LIMIT`] per constraint and review. Either limit
//! stops the evaluation and the constraint fails closed.

pub(crate) mod k8s;

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use cel::common::ast::{ComprehensionExpr, EntryExpr, Expr, IdedExpr};
use cel::common::types::DYN_TYPE;
use cel::common::value::CowVal;
use cel::objects::{Key, Map};
use cel::{Context, Env, ExecutionError, Value as CelValue};
use serde_json::Value;

use super::template::EvalError;

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

/// What adds a library of functions to an environment.
type Extension = fn(&mut Env) -> Result<(), cel::DeclarationError>;

/// The environment every template compiles and runs in.
static ENV: LazyLock<Result<Arc<Env>, String>> = LazyLock::new(|| {
    let mut env = Env::stdlib();
    let extensions: [Extension; 5] = [
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
            format!("exceeded the cost limit of {COST_LIMIT} comprehension elements"),
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
    fn start(limit: Duration) -> Self {
        METER.with(|m| {
            m.set(Some(Meter {
                deadline: Instant::now() + limit,
                limit,
                left: COST_LIMIT,
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
                "K8sNativeValidation: exceeded the cost limit of {COST_LIMIT} comprehension elements for one review"
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

/// Type names and namespaces that read as identifiers.
const NAMES: [&str; 13] = [
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
    "optional",
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
        Ok(Program {
            template: template.to_owned(),
            variables,
            conditions,
            validations,
            failure_policy: source.failure_policy,
            uses_namespace_object,
            source: source.clone(),
        })
    }

    /// The source it was compiled from.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Whether an expression reads `namespaceObject`.
    pub fn uses_namespace_object(&self) -> bool {
        self.uses_namespace_object
    }

    /// Judges `request` for the constraint `params` (the whole constraint, see
    /// [`constraint_value`]), for at most `limit`: the messages of the violations.
    pub fn evaluate(
        &self,
        request: &Request,
        params: &CelValue,
        limit: Duration,
    ) -> Result<Vec<String>, EvalError> {
        let env = env().map_err(EvalError::Engine)?;
        let metering = Metering::start(limit);
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
        request: &Request,
        params: &CelValue,
    ) -> Result<Vec<String>, EvalError> {
        let mut ctx = Context::with_env(env.clone());
        ctx.add_variable_from_value("object", request.object.clone());
        ctx.add_variable_from_value("oldObject", request.old_object.clone());
        ctx.add_variable_from_value("request", request.request.clone());
        ctx.add_variable_from_value("namespaceObject", request.namespace.clone());
        ctx.add_variable_from_value("params", params.clone());
        // Variables are evaluated in order, each seeing those before it. One that fails is left
        // out, and its error is told when an expression that reads it fails.
        let mut values: HashMap<Key, CelValue> = HashMap::new();
        let mut failed: Vec<(String, String)> = Vec::new();
        for v in &self.variables {
            ctx.add_variable_from_value(
                "variables",
                CelValue::Map(Map {
                    map: Arc::new(values.clone()),
                }),
            );
            match cel::Value::resolve(&v.expr, &ctx) {
                Ok(value) => {
                    values.insert(Key::String(Arc::new(v.name.clone())), value);
                }
                Err(e) => failed.push((v.name.clone(), e.to_string())),
            }
        }
        ctx.add_variable_from_value(
            "variables",
            CelValue::Map(Map {
                map: Arc::new(values),
            }),
        );
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
            match cel::Value::resolve(&c.expr, &ctx) {
                Ok(CelValue::Bool(true)) => {}
                Ok(CelValue::Bool(false)) => return Ok(Vec::new()),
                Ok(other) => {
                    condition_error.get_or_insert_with(|| {
                        error(
                            c,
                            format!("a match condition must be a bool, not {}", kind(&other)),
                        )
                    });
                }
                Err(e) => {
                    condition_error.get_or_insert_with(|| error(c, e.to_string()));
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
            let failure = match cel::Value::resolve(&v.check.expr, &ctx) {
                Ok(CelValue::Bool(true)) => continue,
                Ok(CelValue::Bool(false)) => None,
                Ok(other) => Some(error(
                    &v.check,
                    format!("a validation must be a bool, not {}", kind(&other)),
                )),
                Err(e) => Some(error(&v.check, e.to_string())),
            };
            if let Some(e) = failure {
                match self.failure_policy {
                    FailurePolicy::Fail => return Err(EvalError::Engine(e)),
                    FailurePolicy::Ignore => continue,
                }
            }
            messages.push(self.message(v, &ctx));
        }
        Ok(messages)
    }

    /// A failed validation's message, as Kubernetes makes it: the `messageExpression`'s value
    /// when it is a non-empty string of one line, else the `message`, else the expression.
    fn message(&self, v: &CompiledValidation, ctx: &Context) -> String {
        if let Some(m) = &v.message_expression
            && let Ok(CelValue::String(s)) = cel::Value::resolve(&m.expr, ctx)
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
}

fn kind(v: &CelValue) -> String {
    v.type_of().to_string()
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
                    if !matches!(&target.expr, Expr::Ident(_)) {
                        self.walk(target);
                    } else if let Expr::Ident(name) = &target.expr
                        && (ROOTS.contains(&name.as_str()) || self.scopes.iter().any(|s| s == name))
                    {
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

/// Wraps each comprehension's range in [`CHARGE`].
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

/// The review as CEL reads it, converted once and shared by the constraints that judge it.
#[derive(Debug, Clone)]
pub struct Request {
    object: CelValue,
    old_object: CelValue,
    request: CelValue,
    namespace: CelValue,
}

impl Request {
    /// From an AdmissionRequest's JSON (`object` is the old object on DELETE in Palisade's
    /// reviews, as Gatekeeper's Rego sees it: CEL sees it null, as a ValidatingAdmissionPolicy
    /// does) and the object's Namespace, when known.
    pub fn new(review: &Value, namespace: Option<&Value>) -> Self {
        let deleting = review["operation"] == "DELETE";
        let object = if deleting {
            CelValue::Null
        } else {
            to_cel(&review["object"])
        };
        let mut request = HashMap::new();
        if let Some(map) = review.as_object() {
            for (k, v) in map {
                if !matches!(k.as_str(), "object" | "oldObject" | "namespaceObject") {
                    request.insert(Key::String(Arc::new(k.clone())), to_cel(v));
                }
            }
        }
        Request {
            object,
            old_object: to_cel(&review["oldObject"]),
            request: CelValue::Map(Map {
                map: Arc::new(request),
            }),
            namespace: namespace.map(to_cel).unwrap_or(CelValue::Null),
        }
    }
}

/// The constraint as `params`: the whole object, as Gatekeeper binds it.
pub fn constraint_value(constraint: &Value) -> CelValue {
    to_cel(constraint)
}

/// A constraint's `params`, converted once when it loads.
#[derive(Clone)]
pub struct CelParams(CelValue);

impl CelParams {
    /// `constraint` (the whole object) as CEL reads it.
    pub fn new(constraint: &Value) -> Self {
        Self(constraint_value(constraint))
    }

    /// The value.
    pub fn value(&self) -> &CelValue {
        &self.0
    }
}

impl std::fmt::Debug for CelParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CelParams")
    }
}

/// JSON as CEL reads Kubernetes objects: integers are `int` (those past int64 `double`, as
/// Kubernetes decodes them), other numbers `double`.
pub fn to_cel(v: &Value) -> CelValue {
    match v {
        Value::Null => CelValue::Null,
        Value::Bool(b) => CelValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => CelValue::Int(i),
            None => CelValue::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => CelValue::String(Arc::new(s.clone())),
        Value::Array(a) => CelValue::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(o) => CelValue::Map(Map {
            map: Arc::new(
                o.iter()
                    .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                    .collect(),
            ),
        }),
    }
}

#[cfg(test)]
mod tests;
