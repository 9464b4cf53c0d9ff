//! ConstraintTemplates: parsed from the bundle, compiled once, and evaluated with the inventory
//! of the moment handed in beside the input (never compiled into the template).
//!
//! [`parse`] reads a document into a [`TemplateSource`]; a [`Template`] is it compiled under
//! the [`EngineOptions`], and its evaluation fails with an [`EvalError`].

use std::cell::RefCell;
use std::num::{NonZeroU32, NonZeroU64};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use regorus::Engine as RegoEngine;
use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::vm::VmError;
use regorus::rvm::{Program, RegoVM};
use regorus::utils::limits::ExecutionTimerConfig;
use serde_json::Value;

use super::{external, rego};
use crate::inventory::Inventory;
use crate::inventory::keep::Reads;
use crate::manifest::Document;
use crate::matcher::string_list;

/// The only target Palisade evaluates.
pub const TARGET: &str = "admission.k8s.gatekeeper.sh";

/// How templates are compiled.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Longest time one template may evaluate one review.
    pub eval_timeout: Duration,
    /// Run templates on regorus' compiled VM (RVM) where it compiles them; the interpreter
    /// otherwise, or for all templates when false.
    pub vm: bool,
    /// Most memory one template may allocate while evaluating one review, on the VM (the
    /// interpreter is bounded by the process-wide ceiling only, [`set_memory_ceiling`]).
    pub eval_memory: Option<NonZeroU64>,
    /// The bundle's external data Providers, for templates that call `external_data`.
    pub external: super::external::Providers,
    /// How long a provider's idempotent answer is reused; zero turns the cache off.
    pub external_cache_ttl: Duration,
    /// Which code runs a template that has both Rego and K8sNativeValidation (CEL) code.
    pub prefer: Engine,
}

/// A template's code engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// `K8sNativeValidation`: CEL, which Gatekeeper's webhook runs where a template has it
    /// (the default since Gatekeeper 3.16 enabled its CEL driver).
    #[default]
    Cel,
    /// `Rego`.
    Rego,
}

impl Engine {
    /// As a template's `code[].engine` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Cel => super::cel::ENGINE,
            Engine::Rego => "Rego",
        }
    }
}

/// The default `eval_memory`: far above what a template allocates on a large review with a
/// 30,000-object inventory (regorus shares the values it reads instead of copying them).
pub const DEFAULT_EVAL_MEMORY: u64 = 128 * 1024 * 1024;

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            eval_timeout: Duration::from_secs(1),
            vm: true,
            eval_memory: NonZeroU64::new(DEFAULT_EVAL_MEMORY),
            external: Default::default(),
            external_cache_ttl: super::external::CACHE_TTL,
            prefer: Engine::default(),
        }
    }
}

/// Sets the process-wide ceiling on allocated memory past which every evaluation stops and
/// fails closed, so that one runaway policy costs its reviews a denial instead of the whole
/// process an out-of-memory kill. `None` lifts it.
pub fn set_memory_ceiling(bytes: Option<u64>) {
    regorus::set_global_memory_limit(bytes);
}

fn timer(limit: Duration) -> ExecutionTimerConfig {
    ExecutionTimerConfig {
        limit,
        check_interval: NonZeroU32::new(64).unwrap_or(NonZeroU32::MIN),
    }
}

/// Why one template could not evaluate one review.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// The evaluation ran past this limit.
    #[error("exceeded time limit of {0:?}")]
    Timeout(Duration),
    /// What was allocated past which limit, for the message.
    #[error("{0}")]
    Memory(String),
    /// regorus reported an error (in OPA's wording where it differs).
    #[error("{0}")]
    Engine(String),
    /// regorus panicked; the panic was caught.
    #[error("the policy engine panicked")]
    Panic,
}

thread_local! {
    /// The inventory of the evaluation running on this thread, for templates on the interpreter
    /// (see [`INVENTORY_MODULE`]).
    static INVENTORY: RefCell<regorus::Value> = const { RefCell::new(regorus::Value::Undefined) };
}

/// Where a template reads the NetworkPolicy model's facts.
pub const REACHABILITY: &str = "input.palisade.reachability";

/// The error of a template evaluated against an inventory that does not hold what it reads.
pub const INVENTORY_PRUNED: &str = "the inventory does not hold yet the fields this template reads in data.inventory (it is being re-read for a new bundle); failing closed until it does";

const INVENTORY_EXTENSION: &str = "__palisade_inventory";

/// Makes `data.inventory` of an interpreter template read the current evaluation's inventory.
/// regorus' interpreter re-analyses every rule when its data changes, which would make each
/// inventory change cost a preparation per template; rules whose value comes from an extension
/// are evaluated per evaluation instead, and cost a lookup.
const INVENTORY_MODULE: &str = "package inventory\n\ncluster := __palisade_inventory(\"cluster\")\n\nnamespace := __palisade_inventory(\"namespace\")\n";

fn inventory_extension(args: Vec<regorus::Value>) -> anyhow::Result<regorus::Value> {
    let part = args
        .first()
        .and_then(|a| a.as_string().ok())
        .map(|s| s.to_string())
        .unwrap_or_default();
    Ok(INVENTORY.with(|i| i.borrow()["inventory"][part.as_str()].clone()))
}

/// Sets this thread's inventory for the life of the guard.
struct InventoryScope;

impl InventoryScope {
    fn enter(inventory: &Inventory) -> Self {
        INVENTORY.with(|i| *i.borrow_mut() = inventory.data().clone());
        Self
    }
}

impl Drop for InventoryScope {
    fn drop(&mut self) {
        INVENTORY.with(|i| *i.borrow_mut() = regorus::Value::Undefined);
    }
}

/// What runs a template's violation rule.
#[derive(Clone)]
enum Evaluator {
    /// A prepared interpreter engine, cloned per evaluation.
    Interpreter(Box<RegoEngine>),
    /// A compiled RVM program, run on a VM from the thread's pool.
    Vm(Arc<Program>),
    /// K8sNativeValidation: evaluated by [`Template::cel`]'s program, not with a Rego input.
    Cel(Arc<super::cel::Program>),
}

fn engine_error(e: impl std::fmt::Display) -> EvalError {
    EvalError::Engine(opa_wording(e.to_string().trim()))
}

/// regorus' text for an evaluation conflict, in OPA's words (`<file>:<line>:
/// eval_conflict_error: …`), so that a message reads as it does under Gatekeeper.
fn opa_wording(message: &str) -> String {
    let what = if message.contains("rule conflicts with rule") {
        "complete rules must not produce multiple outputs"
    } else if message.contains("functions must not produce multiple outputs") {
        "functions must not produce multiple outputs for same inputs"
    } else {
        return message.to_owned();
    };
    // OPA names the first definition, which regorus gives as `conflicts with rule at
    // file:line:column`; otherwise regorus' own `--> file:line:column`.
    let at = message
        .split("conflicts with rule at ")
        .nth(1)
        .or_else(|| message.split("--> ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|loc| {
            loc.rsplit_once(':')
                .map(|(file_line, _)| file_line.to_owned())
        });
    match at {
        Some(at) => format!("{at}: eval_conflict_error: {what}"),
        None => format!("eval_conflict_error: {what}"),
    }
}

impl Evaluator {
    /// Evaluates `rule` on `input` with `data` (the inventory, when the template reads it),
    /// stopping after `limit`.
    fn eval(
        &self,
        rule: &str,
        input: regorus::Value,
        inventory: Option<&Inventory>,
        limit: Duration,
        memory: Option<NonZeroU64>,
    ) -> Result<regorus::Value, EvalError> {
        match self {
            Evaluator::Interpreter(prepared) => {
                let mut engine = RegoEngine::clone(prepared);
                engine.set_execution_timer_config(timer(limit));
                engine.set_input(input);
                let _scope = inventory.map(InventoryScope::enter);
                engine.eval_rule(rule.to_owned()).map_err(|e| {
                    match e.downcast_ref::<regorus::LimitError>() {
                        Some(regorus::LimitError::MemoryLimitExceeded { usage, limit }) => {
                            ceiling_error(*usage, *limit)
                        }
                        Some(regorus::LimitError::TimeLimitExceeded { .. }) => {
                            EvalError::Timeout(limit)
                        }
                        // A compiled regex past regorus' size limit: the policy's error.
                        Some(other) => engine_error(other),
                        // Inside a function call regorus re-raises the limit error as text.
                        None => {
                            let text = e.to_string();
                            if text.contains("execution exceeded time limit") {
                                EvalError::Timeout(limit)
                            } else if text.contains("exceeded memory limit") {
                                EvalError::Memory(format!(
                                    "stopped at Palisade's memory ceiling (--memory-limit): {text}"
                                ))
                            } else {
                                engine_error(e)
                            }
                        }
                    }
                })
            }
            Evaluator::Cel(_) => Err(EvalError::Engine(
                "a K8sNativeValidation template has no Rego to evaluate".into(),
            )),
            Evaluator::Vm(program) => {
                let mut vm = take_vm(program);
                vm.set_execution_timer_config(Some(timer(limit)));
                vm.set_memory_budget_config(
                    memory.map(|limit| regorus::MemoryBudgetConfig { limit }),
                );
                if let Some(inventory) = inventory {
                    vm.set_data(inventory.data().clone())
                        .map_err(engine_error)?;
                }
                vm.set_input(input);
                let result = vm.execute_entry_point_by_name(rule).map_err(|e| match e {
                    VmError::TimeLimitExceeded { .. } => EvalError::Timeout(limit),
                    VmError::MemoryBudgetExceeded { usage, budget, .. } => {
                        EvalError::Memory(format!(
                            "allocated {} of the {} one evaluation may (--eval-memory-limit)",
                            mib(usage),
                            mib(budget)
                        ))
                    }
                    VmError::MemoryLimitExceeded { usage, limit, .. } => {
                        ceiling_error(usage, limit)
                    }
                    e => engine_error(e),
                });
                give_back_vm(program, vm);
                result
            }
        }
    }
}

/// The process went past `--memory-limit` while this evaluation ran.
fn ceiling_error(usage: u64, limit: u64) -> EvalError {
    EvalError::Memory(format!(
        "stopped at Palisade's memory ceiling: {} allocated, {} allowed (--memory-limit)",
        mib(usage),
        mib(limit)
    ))
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// VMs kept per thread for reuse, one per program: creating and loading a VM costs about as
/// much as a small template's whole run. Each run starts from a state regorus resets
/// (registers, rule cache, evaluated values), and a VM is handed out to one run at a time: it
/// leaves the pool for the run and comes back only if the run returned, so a panic drops it.
/// The pool holds the program it was loaded with, so a reloaded bundle's programs never meet an
/// old VM; it is bounded: when full, the VMs of replaced programs leave first, then all.
const VM_POOL_SIZE: usize = 128;

thread_local! {
    static VM_POOL: std::cell::RefCell<Vec<(Arc<Program>, RegoVM)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

fn take_vm(program: &Arc<Program>) -> RegoVM {
    let pooled = VM_POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let at = pool.iter().position(|(p, _)| Arc::ptr_eq(p, program))?;
        Some(pool.swap_remove(at).1)
    });
    pooled.unwrap_or_else(|| {
        let mut vm = RegoVM::new();
        vm.load_program(program.clone());
        // The VM caps instructions at 25,000 by default, which a large object can reach in a
        // legitimate template; the time limit is the bound instead.
        vm.set_max_instructions(usize::MAX);
        vm
    })
}

fn give_back_vm(program: &Arc<Program>, mut vm: RegoVM) {
    // What the run was given is not kept alive by the pool: the review, and the inventory
    // that a later update replaces.
    vm.set_input(regorus::Value::Null);
    if vm.set_data(regorus::Value::Null).is_err() {
        return;
    }
    VM_POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() >= VM_POOL_SIZE {
            // First drop the VMs of programs nobody else holds (a bundle since replaced).
            pool.retain(|(p, _)| Arc::strong_count(p) > 1);
            if pool.len() >= VM_POOL_SIZE {
                pool.clear();
            }
        }
        pool.push((program.clone(), vm));
    });
}

/// A template as written, before compilation.
#[derive(Debug, Clone)]
pub struct TemplateSource {
    /// `metadata.name`: the lower case of `kind`.
    pub name: String,
    /// `spec.crd.spec.names.kind`: the kind of its constraints.
    pub kind: String,
    /// `spec.crd.spec.validation.openAPIV3Schema`: the schema of its constraints' parameters.
    pub schema: Option<Value>,
    /// The Rego of the target: the first `code[]` entry with engine Rego, else `rego`; empty
    /// when the template has only CEL.
    pub rego: String,
    /// The first `code[]` entry with engine K8sNativeValidation.
    pub cel: Option<super::cel::Source>,
    /// The target's `libs`: further Rego modules the code may import.
    pub libs: Vec<String>,
    /// The Rego is v1 (`code[].source.version: v1`); v0 otherwise.
    pub rego_v1: bool,
    /// `spec.targets[0].operations`: what the webhook sends to this template's constraints.
    pub operations: Vec<String>,
    /// "ConstraintTemplate name at file (document N)", for messages.
    pub describe: String,
}

/// The operations a template applies to when its target does not say: Gatekeeper's default.
pub const DEFAULT_OPERATIONS: [&str; 2] = ["CREATE", "UPDATE"];

/// `spec.targets[0].operations`: admission operations (or `*`), Gatekeeper's default when absent.
fn target_operations(target: &Value) -> Result<Vec<String>, String> {
    const FIELD: &str = "spec.targets[0].operations";
    let listed = string_list(&target["operations"], FIELD)?;
    if target.get("operations").is_none() {
        return Ok(DEFAULT_OPERATIONS.map(str::to_owned).to_vec());
    }
    if listed.is_empty() {
        return Err(format!(
            "{FIELD}: is empty; list CREATE, UPDATE, DELETE or CONNECT (or leave it out for CREATE and UPDATE)"
        ));
    }
    for op in &listed {
        if !matches!(
            op.as_str(),
            "CREATE" | "UPDATE" | "DELETE" | "CONNECT" | "*"
        ) {
            return Err(format!(
                "{FIELD}: {op:?} is not an admission operation; use CREATE, UPDATE, DELETE, CONNECT or *"
            ));
        }
    }
    Ok(listed)
}

/// Reads a ConstraintTemplate document; every error names the field.
pub fn parse(doc: &Document) -> Result<TemplateSource, String> {
    let v = &doc.value;
    match doc.api_version() {
        "templates.gatekeeper.sh/v1" | "templates.gatekeeper.sh/v1beta1" => {}
        other => {
            return Err(format!(
                "apiVersion {other:?} is not supported; use templates.gatekeeper.sh/v1 or v1beta1"
            ));
        }
    }
    let name = doc.name();
    if name.is_empty() {
        return Err("metadata.name: required".into());
    }
    let kind = v["spec"]["crd"]["spec"]["names"]["kind"]
        .as_str()
        .filter(|k| !k.is_empty())
        .ok_or("spec.crd.spec.names.kind: required; it names the constraint kind this template defines")?;
    if kind.to_lowercase() != name {
        return Err(format!(
            "metadata.name {name:?} must be the lowercase of spec.crd.spec.names.kind ({:?})",
            kind.to_lowercase()
        ));
    }
    let schema = match &v["spec"]["crd"]["spec"]["validation"]["openAPIV3Schema"] {
        Value::Null => None,
        s if s.is_object() => Some(s.clone()),
        _ => return Err("spec.crd.spec.validation.openAPIV3Schema: must be a mapping".into()),
    };
    let targets = v["spec"]["targets"]
        .as_array()
        .filter(|t| !t.is_empty())
        .ok_or("spec.targets: required; add one target admission.k8s.gatekeeper.sh with rego")?;
    if targets.len() != 1 {
        return Err(format!(
            "spec.targets: has {} targets; a template has exactly one, {TARGET}",
            targets.len()
        ));
    }
    let target = &targets[0];
    // Unknown keys are errors: a misplaced `libs` would otherwise be dropped without a word.
    known_keys(
        target,
        "spec.targets[0]",
        &["target", "rego", "libs", "code", "operations"],
    )?;
    if target["target"] != TARGET {
        return Err(format!(
            "spec.targets[0].target: {} is not supported; Palisade evaluates {TARGET}",
            target["target"]
        ));
    }
    let (rego, cel) = target_code(target)?;
    let (rego, libs, rego_v1) = rego.unwrap_or_default();
    let operations = target_operations(target)?;
    Ok(TemplateSource {
        name: name.to_owned(),
        kind: kind.to_owned(),
        schema,
        rego,
        cel,
        libs,
        rego_v1,
        operations,
        describe: doc.describe(),
    })
}

fn known_keys(v: &Value, at: &str, known: &[&str]) -> Result<(), String> {
    if let Some(unknown) = v
        .as_object()
        .and_then(|m| m.keys().find(|k| !known.contains(&k.as_str())))
    {
        return Err(format!(
            "{at}.{unknown}: unknown field; expected one of {}",
            known.join(", ")
        ));
    }
    Ok(())
}

/// A target's Rego (its code, libs, and whether it is v1).
type RegoCode = (String, Vec<String>, bool);

/// The code of a target: the Rego of `code[]` with engine Rego, else of `rego` and `libs`; and
/// the first `code[]` with engine K8sNativeValidation. At least one of the two.
fn target_code(target: &Value) -> Result<(Option<RegoCode>, Option<super::cel::Source>), String> {
    let libs_of = |v: &Value, field: &str| {
        string_list(v, field).map_err(|_| format!("{field}: must be a list of Rego strings"))
    };
    let mut other_engines = Vec::new();
    let mut rego = None;
    let mut cel = None;
    if let Some(code) = target["code"].as_array() {
        for (i, c) in code.iter().enumerate() {
            known_keys(
                c,
                &format!("spec.targets[0].code[{i}]"),
                &["engine", "source"],
            )?;
            let at = format!("spec.targets[0].code[{i}].source");
            let engine = c["engine"].as_str().unwrap_or_default();
            if engine == super::cel::ENGINE {
                if cel.is_none() {
                    cel = Some(super::cel::Source::parse(&c["source"], &at)?);
                }
                continue;
            }
            if engine != "Rego" {
                other_engines.push(format!("{engine:?}"));
                continue;
            }
            if rego.is_some() {
                continue;
            }
            known_keys(&c["source"], &at, &["rego", "libs", "version"])?;
            let code = c["source"]["rego"]
                .as_str()
                .ok_or_else(|| format!("{at}.rego: required for engine Rego"))?;
            let libs = libs_of(&c["source"]["libs"], &format!("{at}.libs"))?;
            let v1 = match c["source"]["version"].as_str() {
                None | Some("v0") => false,
                Some("v1") => true,
                Some(other) => {
                    return Err(format!("{at}.version: {other:?} is not v0 or v1"));
                }
            };
            rego = Some((code.to_owned(), libs, v1));
        }
    }
    if rego.is_none()
        && let Some(code) = target["rego"].as_str()
    {
        let libs = libs_of(&target["libs"], "spec.targets[0].libs")?;
        rego = Some((code.to_owned(), libs, false));
    }
    if rego.is_none() && cel.is_none() {
        if !other_engines.is_empty() {
            return Err(format!(
                "has no code Palisade runs, only engine {}: add code[] with engine Rego or K8sNativeValidation",
                other_engines.join(", ")
            ));
        }
        return Err(
            "spec.targets[0]: no rego and no code[] with engine Rego or K8sNativeValidation".into(),
        );
    }
    Ok((rego, cel))
}

/// A compiled template: a prepared engine that is cloned for each evaluation.
#[derive(Clone)]
pub struct Template {
    /// `metadata.name`.
    pub name: String,
    /// The kind of its constraints.
    pub kind: String,
    /// The schema of its constraints' parameters.
    pub schema: Option<Value>,
    /// "ConstraintTemplate name at file (document N)", for messages.
    pub describe: String,
    /// The admission operations its constraints are sent (`spec.targets[0].operations`).
    pub operations: Vec<String>,
    /// `data.<package>.violation`.
    pub rule: String,
    evaluator: Evaluator,
    /// Longest evaluation of one review.
    timeout: Duration,
    /// Most memory one evaluation may allocate (on the VM).
    memory: Option<NonZeroU64>,
    uses_inventory: bool,
    /// What it reads of `data.inventory` (the inventory keeps those fields).
    inventory_reads: Arc<Reads>,
    /// Calls `external_data`: evaluated with the time its providers may take.
    uses_external_data: bool,
    /// Reads `input.palisade.reachability`, the NetworkPolicy model's facts.
    uses_reachability: bool,
    /// Reads `input.palisade.matrix`, a communication matrix's facts.
    uses_matrix: bool,
    /// Reads `input.review.namespaceObject`.
    uses_namespace_object: bool,
    /// What loads but differs from what the author may expect, e.g. a sprintf short of
    /// arguments.
    pub warnings: Vec<String>,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("rule", &self.rule)
            .field("vm", &self.on_vm())
            .finish_non_exhaustive()
    }
}

impl Template {
    /// Checks and compiles; the error names the rule and line where regorus gives them.
    pub fn compile(src: TemplateSource, options: &EngineOptions) -> Result<Self, String> {
        if src.cel.is_some() && (src.rego.is_empty() || options.prefer == Engine::Cel) {
            return Self::compile_cel(src, options);
        }
        let mut engine = RegoEngine::new();
        engine.set_rego_v0(!src.rego_v1);
        // OPA's behaviour: a builtin error makes the expression undefined, not the query fail.
        engine.set_strict_builtin_errors(false);
        engine.set_execution_timer_config(timer(options.eval_timeout));
        let modules = std::iter::once(("rego", &src.rego))
            .chain(src.libs.iter().map(|l| ("lib", l)))
            .enumerate();
        let mut package = String::new();
        let mut warnings = Vec::new();
        let mut multi_valued = Vec::new();
        let mut nested = Vec::new();
        let mut registered = Vec::new();
        let mut uses_external_data = false;
        let mut loaded: Vec<(String, String, String)> = Vec::new();
        for (i, (what, code)) in modules {
            let file = if i == 0 {
                format!("{}.rego", src.name)
            } else {
                format!("{}.libs[{}].rego", src.name, i - 1)
            };
            if let Some((depth, line)) = rego::too_deep(code) {
                return Err(format!(
                    "{file}:{line}: brackets nest {depth} deep; at most {} are accepted, since regorus parses deeper nesting in exponential time: move the inner part into a helper rule or function",
                    rego::MAX_NESTING
                ));
            }
            if let Some(call) = rego::forbidden_calls(code).first() {
                return Err(format!(
                    "{file}:{}: calls {}, which reaches the network; templates may not",
                    call.line, call.builtin
                ));
            }
            let (code, short) = rego::fill_missing_sprintf_args(code);
            for m in short {
                warnings.push(format!(
                    "{file}:{}: sprintf format has {} verbs but {} arguments; the missing ones print as %!v(MISSING), as in OPA",
                    m.line, m.verbs, m.args
                ));
            }
            let code = rego::sprintf_as_opa(&code);
            let code = if src.rego_v1 {
                code
            } else {
                rego::rewrite_v0(&code)
            };
            let code = rego::guard_negated_terms(&code);
            let code = rego::assign_fresh_unifications(&code);
            let code = rego::guard_membership_values(&code);
            let code = rego::keep_unused_assignments(&code);
            let code = rego::bind_partial_heads(&code);
            let code = rego::guard_comprehension_terms(&code);
            multi_valued.extend(rego::multi_valued_rules(&code));
            multi_valued.extend(
                rego::conflicting_functions(&code)
                    .into_iter()
                    .map(|f| format!("{f} (a function whose definitions may conflict)")),
            );
            multi_valued.extend(
                rego::vm_undefined_rules(&code)
                    .into_iter()
                    .map(|r| format!("{r} (an else after an iteration, or a value from one)")),
            );
            multi_valued.extend(
                rego::object_comprehensions(&code)
                    .into_iter()
                    .map(|line| format!("{file}:{line} (an object comprehension)")),
            );
            multi_valued.extend(
                rego::partial_object_rules(&code)
                    .into_iter()
                    .map(|r| format!("{r} (a partial object rule)")),
            );
            nested.extend(
                rego::nested_comprehensions(&code)
                    .into_iter()
                    .map(|line| format!("{file}:{line}")),
            );
            if rego::calls(&code, external::BUILTIN) {
                check_providers(&file, &code, &options.external)?;
                if !uses_external_data {
                    engine
                        .add_extension(
                            external::BUILTIN.to_owned(),
                            1,
                            Box::new(external::builtin(
                                options.external.clone(),
                                options.external_cache_ttl,
                            )),
                        )
                        .map_err(|e| e.to_string())?;
                    uses_external_data = true;
                }
            }
            for (name, nargs, extension) in net_builtins() {
                if rego::calls(&code, name) && !registered.contains(&name) {
                    engine
                        .add_extension(name.to_owned(), nargs, extension)
                        .map_err(|e| e.to_string())?;
                    registered.push(name);
                }
            }
            let pkg = engine
                .add_policy(file.clone(), code.clone())
                .map_err(|e| format!("{}", e).trim().to_owned())?;
            loaded.push((file.clone(), pkg.clone(), code));
            if what == "rego" {
                package = pkg;
            } else if !pkg.starts_with("data.lib.") && pkg != "data.lib" {
                return Err(format!(
                    "{file}: lib package is {}; libs must be under package lib (e.g. package lib.helpers)",
                    pkg.trim_start_matches("data.")
                ));
            }
        }
        let modules: Vec<rego::Module<'_>> = loaded
            .iter()
            .map(|(file, package, src)| rego::Module { file, package, src })
            .collect();
        if let Some(recursion) = rego::recursion(&modules) {
            return Err(recursion);
        }
        let rule = format!("{package}.violation");
        let inventory_reads = Arc::new(rego::inventory_reads(engine.get_modules()));
        let uses_inventory = std::iter::once(&src.rego)
            .chain(&src.libs)
            .any(|code| code.contains("data.inventory"));
        let uses_reachability = std::iter::once(&src.rego)
            .chain(&src.libs)
            .any(|code| code.contains(REACHABILITY));
        let uses_matrix = std::iter::once(&src.rego)
            .chain(&src.libs)
            .any(|code| code.contains(crate::netpol::matrix::FACTS));
        let uses_namespace_object = std::iter::once(&src.rego)
            .chain(&src.libs)
            .any(|code| code.contains("namespaceObject"));
        // Loading never calls a provider.
        let _offline = external::Offline::enter();
        warm_up(&mut engine, &rule)?;
        // regorus' VM cannot call an extension: such templates run on the interpreter.
        if options.vm && !registered.is_empty() {
            // Expected, not a problem: the interpreter calls them.
            tracing::debug!(template = %src.name, builtins = %registered.join(", "),
                "template runs on the interpreter: it calls builtins Palisade adds to regorus, which regorus' VM cannot call");
        }
        let program = if options.vm
            && multi_valued.is_empty()
            && nested.is_empty()
            && !uses_external_data
            && registered.is_empty()
        {
            compile_vm(&engine, &rule, &src.name, uses_inventory)
        } else {
            if !multi_valued.is_empty() {
                // Constructs regorus' VM reads as undefined or as one value where OPA and the
                // interpreter fail the evaluation or have another value: conflicting rules
                // and functions, partial objects, object comprehensions, an else after an
                // iteration (rego::multi_valued_rules, conflicting_functions,
                // partial_object_rules, object_comprehensions, vm_undefined_rules).
                tracing::info!(template = %src.name, constructs = %multi_valued.join(", "),
                        "template runs on the interpreter, where these read as in OPA");
            }
            if !nested.is_empty() {
                // regorus' VM loses an outer comprehension's results when an inner one's body
                // fails (see rego::nested_comprehensions).
                tracing::debug!(template = %src.name, at = %nested.join(", "),
                    "template runs on the interpreter: a comprehension inside a comprehension");
            }
            None
        };
        let evaluator = match program {
            Some(program) => Evaluator::Vm(program),
            None => {
                if uses_inventory {
                    engine
                        .add_extension(
                            INVENTORY_EXTENSION.to_owned(),
                            1,
                            Box::new(inventory_extension),
                        )
                        .map_err(|e| e.to_string())?;
                    engine
                        .add_policy(
                            "palisade-inventory.rego".to_owned(),
                            INVENTORY_MODULE.to_owned(),
                        )
                        .map_err(|e| e.to_string())?;
                    // Prepare again with the module, so that clones skip that work.
                    warm_up(&mut engine, &rule)?;
                }
                Evaluator::Interpreter(Box::new(engine))
            }
        };
        Ok(Self {
            name: src.name,
            kind: src.kind,
            schema: src.schema,
            describe: src.describe,
            operations: src.operations,
            rule,
            evaluator,
            // Waiting for providers is not the template's own time.
            timeout: if uses_external_data {
                options.eval_timeout + options.external.longest_timeout()
            } else {
                options.eval_timeout
            },
            memory: options.eval_memory,
            uses_inventory,
            inventory_reads,
            uses_external_data,
            uses_reachability,
            uses_matrix,
            uses_namespace_object,
            warnings,
        })
    }

    /// Compiles the template's K8sNativeValidation code.
    fn compile_cel(src: TemplateSource, options: &EngineOptions) -> Result<Self, String> {
        let Some(source) = &src.cel else {
            return Err("spec.targets[0]: no code[] with engine K8sNativeValidation".into());
        };
        let program =
            super::cel::Program::compile(&format!("ConstraintTemplate {}", src.name), source)?;
        Ok(Self {
            uses_namespace_object: program.uses_namespace_object(),
            evaluator: Evaluator::Cel(Arc::new(program)),
            name: src.name,
            kind: src.kind,
            schema: src.schema,
            describe: src.describe,
            operations: src.operations,
            rule: String::new(),
            timeout: options.eval_timeout,
            memory: options.eval_memory,
            uses_inventory: false,
            inventory_reads: Arc::default(),
            uses_external_data: false,
            uses_reachability: false,
            uses_matrix: false,
            warnings: Vec::new(),
        })
    }

    /// The engine that runs the template.
    pub fn engine(&self) -> Engine {
        match self.evaluator {
            Evaluator::Cel(_) => Engine::Cel,
            _ => Engine::Rego,
        }
    }

    /// The template's CEL program, when it runs on K8sNativeValidation.
    pub fn cel(&self) -> Option<&super::cel::Program> {
        match &self.evaluator {
            Evaluator::Cel(p) => Some(p),
            _ => None,
        }
    }

    /// Whether the template reads `input.palisade.reachability`: a NetworkPolicy review then
    /// carries the model's facts (see [`crate::netpol::judge`]).
    pub fn uses_reachability(&self) -> bool {
        self.uses_reachability
    }

    /// Whether the template reads `input.palisade.matrix`: a review of a NetworkPolicy, a
    /// Namespace, a Pod or a workload then carries what the constraint's communication matrix
    /// says of it (see [`crate::netpol::matrix`]).
    pub fn uses_matrix(&self) -> bool {
        self.uses_matrix
    }

    /// Whether the template reads `input.review.namespaceObject` (the Namespace of the object
    /// under review): a namespaced review whose Namespace is not known then fails closed.
    pub fn uses_namespace_object(&self) -> bool {
        self.uses_namespace_object
    }

    /// What the template reads of `data.inventory`: the inventory keeps those fields of each
    /// object ([`crate::inventory::keep`]).
    pub fn inventory_reads(&self) -> &Reads {
        &self.inventory_reads
    }

    /// Whether the template runs on the VM.
    pub fn on_vm(&self) -> bool {
        matches!(self.evaluator, Evaluator::Vm(_))
    }

    /// The longest one evaluation may run (`--eval-timeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Evaluates the violation rule on `input`, with `inventory` as `data.inventory`, for at most
    /// `limit`. A panic in the engine is an error, not the end of the caller.
    pub fn evaluate(
        &self,
        input: regorus::Value,
        inventory: &Inventory,
        limit: Duration,
    ) -> Result<regorus::Value, EvalError> {
        // Objects pruned for another bundle may lack what this template reads: fail closed
        // until the inventory holds them again (the live inventory re-lists at once).
        if !inventory.holds(&self.inventory_reads) {
            return Err(EvalError::Engine(INVENTORY_PRUNED.into()));
        }
        let inventory = self.uses_inventory.then_some(inventory);
        let _inside = InEngine::enter();
        let calls = self
            .uses_external_data
            .then(|| external::Evaluation::enter(std::time::Instant::now() + limit));
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.evaluator
                .eval(&self.rule, input, inventory, limit, self.memory)
        }))
        .unwrap_or(Err(EvalError::Panic));
        // A provider call cut by the time left is the evaluation's timeout, whatever the
        // template made of the error.
        if calls.is_some_and(|c| c.was_cut()) {
            return Err(EvalError::Timeout(limit));
        }
        result
    }

    /// Whether the template calls `external_data`.
    pub fn uses_external_data(&self) -> bool {
        self.uses_external_data
    }
}

thread_local! {
    static IN_ENGINE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks this thread as evaluating a template until dropped.
struct InEngine(bool);

impl InEngine {
    fn enter() -> Self {
        Self(IN_ENGINE.with(|f| f.replace(true)))
    }
}

impl Drop for InEngine {
    fn drop(&mut self) {
        IN_ENGINE.with(|f| f.set(self.0));
    }
}

/// Whether this thread is evaluating a template, where a panic of regorus is caught and fails
/// the constraint closed. A panic hook (the fuzz targets') can tell such a panic from one that
/// is a bug of Palisade's.
pub fn in_policy_engine() -> bool {
    IN_ENGINE.with(std::cell::Cell::get)
}

/// A template that calls `external_data` needs a Provider, and each provider it names as a
/// literal must be one the bundle defines.
fn check_providers(file: &str, code: &str, providers: &external::Providers) -> Result<(), String> {
    let defined = || {
        let names: Vec<&str> = providers.names().collect();
        if names.is_empty() {
            "the bundle defines no Provider".to_owned()
        } else {
            format!("the bundle defines {}", names.join(", "))
        }
    };
    if providers.is_empty() {
        return Err(format!(
            "{file}: calls external_data, but {}: add an externaldata.gatekeeper.sh/v1beta1 Provider (url, timeout, caBundle) to the policy files or the cluster",
            defined()
        ));
    }
    for (name, line) in external::literal_providers(code) {
        if providers.get(&name).is_none() {
            return Err(format!(
                "{file}:{line}: external_data names provider {name:?}, which {}; add a Provider named {name:?}, or fix the name",
                defined()
            ));
        }
    }
    Ok(())
}

type NetBuiltin = (&'static str, u8, Box<dyn regorus::Extension>);

/// The builtins Palisade adds to regorus (see [`super::net`]).
fn net_builtins() -> [NetBuiltin; 3] {
    [
        (
            "net.cidr_intersects",
            2,
            Box::new(super::net::cidr_intersects),
        ),
        ("net.cidr_merge", 1, Box::new(super::net::cidr_merge)),
        ("palisade.ip_coverage", 1, Box::new(super::net::ip_coverage)),
    ]
}

/// The rule compiled for regorus' VM, checked by one run; `None` (the interpreter serves) when
/// regorus cannot compile or run it.
fn compile_vm(
    engine: &RegoEngine,
    rule: &str,
    name: &str,
    uses_inventory: bool,
) -> Option<Arc<Program>> {
    let mut engine = engine.clone();
    let compiled = engine
        .compile_with_entrypoint(&rule.into())
        .map_err(|e| e.to_string())
        .and_then(|policy| {
            Compiler::compile_from_policy(&policy, &[rule]).map_err(|e| e.to_string())
        });
    let program = match compiled {
        Ok(p) => p,
        Err(error) => {
            let error = one_line(&error);
            tracing::info!(template = %name, %error, "template runs on the interpreter: the VM cannot compile it");
            return None;
        }
    };
    let probe = Evaluator::Vm(program.clone());
    let input = regorus::Value::from(serde_json::json!({"review": {}, "parameters": {}}));
    let inventory = Inventory::default();
    match probe.eval(
        rule,
        input,
        uses_inventory.then_some(&inventory),
        Duration::from_secs(1),
        None,
    ) {
        Ok(_) => Some(program),
        Err(error) => {
            let error = one_line(&error.to_string());
            tracing::info!(template = %name, %error, "template runs on the interpreter: the VM cannot run it");
            None
        }
    }
}

/// A regorus error as one log line: `file:line:col: message` from its `--> file:line:col` and
/// `error: message` lines, or its lines joined.
fn one_line(error: &str) -> String {
    let at = error.lines().find_map(|l| l.trim().strip_prefix("--> "));
    let message = error.lines().find_map(|l| l.trim().strip_prefix("error: "));
    match (at, message) {
        (Some(at), Some(message)) => format!("{}: {}", at.trim(), message.trim()),
        _ => error.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// Runs once on an empty review, which prepares the engine (rule analysis, scheduling) so that
/// clones skip that work, and surfaces errors regorus only finds then.
fn warm_up(engine: &mut RegoEngine, rule: &str) -> Result<(), String> {
    engine.set_input(regorus::Value::from(serde_json::json!({
        "review": {}, "parameters": {}
    })));
    let result = engine.eval_rule(rule.to_owned());
    let missing = match &result {
        Ok(v) => *v == regorus::Value::Undefined,
        Err(e) => e.to_string().contains("not a valid rule path"),
    };
    match result {
        _ if missing => Err(format!(
            "{} defines no violation rule; Gatekeeper templates report through violation[{{\"msg\": msg}}]",
            rule.trim_end_matches(".violation")
                .trim_start_matches("data.")
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string().trim().to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_str;
    use std::path::Path;

    fn template(rego: &str) -> String {
        format!(
            "apiVersion: templates.gatekeeper.sh/v1\nkind: ConstraintTemplate\nmetadata:\n  name: k8stest\nspec:\n  crd:\n    spec:\n      names:\n        kind: K8sTest\n  targets:\n  - target: admission.k8s.gatekeeper.sh\n    rego: |\n{}\n",
            rego.lines()
                .map(|l| format!("      {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    }

    fn compile(yaml: &str) -> Result<Template, String> {
        let docs = parse_str(yaml, Path::new("t.yaml")).unwrap();
        Template::compile(parse(&docs[0])?, &EngineOptions::default())
    }

    #[test]
    fn compiles_a_v0_template() {
        let t = compile(&template(
            "package k8stest\nviolation[{\"msg\": \"m\"}] { input.review.object.x }",
        ))
        .unwrap();
        assert_eq!(t.rule, "data.k8stest.violation");
        assert_eq!(t.kind, "K8sTest");
    }

    #[test]
    fn a_rego_error_names_the_rule_file_and_line() {
        let err = compile(&template(
            "package k8stest\nviolation[{\"msg\": m}] {\n  m := \n}",
        ))
        .unwrap_err();
        assert!(err.contains("k8stest.rego:2"), "{err}");
    }

    #[test]
    fn refuses_network_builtins() {
        let err = compile(&template("package k8stest\nviolation[{\"msg\": \"m\"}] {\n  input.x\n  http.send({\"method\": \"get\", \"url\": \"http://x\"})\n}")).unwrap_err();
        assert!(
            err.contains("k8stest.rego:4") && err.contains("http.send"),
            "{err}"
        );
    }

    #[test]
    fn a_template_runs_the_engine_it_has_and_the_preferred_one_when_it_has_both() {
        let head = "apiVersion: templates.gatekeeper.sh/v1\nkind: ConstraintTemplate\nmetadata: {name: k8scel}\nspec:\n  crd: {spec: {names: {kind: K8sCel}}}\n  targets:\n  - target: admission.k8s.gatekeeper.sh\n    code:\n";
        let cel = "    - engine: K8sNativeValidation\n      source: {validations: [{expression: 'true'}]}\n";
        let rego = "    - engine: Rego\n      source: {rego: 'package k8scel\n\n        violation[{\"msg\": \"x\"}] { false }'}\n";
        let other = "    - engine: Wasm\n      source: {}\n";
        let with = |code: &str, prefer: Engine| {
            let docs = parse_str(&format!("{head}{code}"), Path::new("t.yaml")).unwrap();
            parse(&docs[0])
                .and_then(|src| {
                    Template::compile(
                        src,
                        &EngineOptions {
                            prefer,
                            ..EngineOptions::default()
                        },
                    )
                })
                .map(|t| t.engine())
        };
        assert_eq!(with(cel, Engine::Rego), Ok(Engine::Cel));
        assert_eq!(with(&format!("{rego}{cel}"), Engine::Cel), Ok(Engine::Cel));
        assert_eq!(
            with(&format!("{cel}{rego}"), Engine::Rego),
            Ok(Engine::Rego)
        );
        assert_eq!(with(rego, Engine::Cel), Ok(Engine::Rego));
        let err = with(other, Engine::Cel).unwrap_err();
        assert!(
            err.contains("only engine \"Wasm\"") && err.contains("Rego or K8sNativeValidation"),
            "{err}"
        );
    }

    #[test]
    fn a_misplaced_lib_is_an_error_not_ignored() {
        let yaml = "apiVersion: templates.gatekeeper.sh/v1\nkind: ConstraintTemplate\nmetadata: {name: k8stest}\nspec:\n  crd: {spec: {names: {kind: K8sTest}}}\n  targets:\n  - target: admission.k8s.gatekeeper.sh\n    code:\n    - engine: Rego\n      source: {version: v1, rego: 'package k8stest'}\n      libs: ['package lib.x']\n";
        let err = compile(yaml).unwrap_err();
        assert!(
            err.contains("spec.targets[0].code[0].libs: unknown field"),
            "{err}"
        );
    }

    #[test]
    fn name_must_match_kind() {
        let yaml = template("package k8stest\nviolation[{\"msg\": \"m\"}] { true }")
            .replace("name: k8stest", "name: other");
        assert!(compile(&yaml).unwrap_err().contains("lowercase"));
    }

    #[test]
    fn a_template_without_violation_is_refused() {
        let err = compile(&template("package k8stest\ndeny[msg] { msg := \"x\" }")).unwrap_err();
        assert!(err.contains("no violation rule"), "{err}");
    }

    /// Evaluates `violation` with regorus as it comes, none of Palisade's rewrites or builtins.
    fn raw_regorus(rego: &str, input: serde_json::Value, vm: bool) -> Result<String, String> {
        let mut engine = RegoEngine::new();
        engine.set_rego_v0(true);
        engine.set_strict_builtin_errors(false);
        engine
            .add_policy("t.rego".into(), rego.into())
            .map_err(|e| e.to_string())?;
        engine.set_input(regorus::Value::from(input.clone()));
        let rule = "data.t.violation";
        if !vm {
            let v = engine.eval_rule(rule.into()).map_err(|e| e.to_string())?;
            return Ok(v.to_json_str().unwrap_or_default());
        }
        let policy = engine
            .compile_with_entrypoint(&rule.into())
            .map_err(|e| e.to_string())?;
        let program = Compiler::compile_from_policy(&policy, &[rule]).map_err(|e| e.to_string())?;
        let mut machine = RegoVM::new();
        machine.load_program(program);
        machine.set_input(regorus::Value::from(input));
        let v = machine
            .execute_entry_point_by_name(rule)
            .map_err(|e| e.to_string())?;
        Ok(v.to_json_str().unwrap_or_default())
    }

    // Canaries: each asserts a divergence of regorus from OPA that Palisade works around. When
    // one fails after a regorus upgrade, regorus behaves like OPA there: drop the workaround it
    // names, and keep tests/data/gatekeeper/opa-parity passing.

    #[test]
    fn canary_regorus_drops_a_short_sprintf() {
        // workaround: rego::fill_missing_sprintf_args
        let rego = "package t\nviolation[{\"msg\": m}] { m := sprintf(\"%v %v\", [1]) }";
        for vm in [false, true] {
            assert_eq!(
                raw_regorus(rego, serde_json::json!({}), vm)
                    .unwrap()
                    .replace(char::is_whitespace, ""),
                "[]"
            );
        }
    }

    #[test]
    fn canary_regorus_negates_a_call_of_an_undefined_argument() {
        // workaround: rego::guard_negated_terms
        let rego =
            "package t\nf(x) { x == \"a\" }\nviolation[{\"msg\": \"m\"}] { not f(input.missing) }";
        for vm in [false, true] {
            let out = raw_regorus(rego, serde_json::json!({}), vm).unwrap();
            assert!(out.contains("\"m\""), "vm={vm}: {out}");
        }
    }

    #[test]
    fn canary_regorus_vm_reads_a_conflict_as_undefined() {
        // workaround: rego::multi_valued_rules sends such templates to the interpreter
        let rego =
            "package t\nx = 1 { input.a }\nx = 2 { input.b }\nviolation[{\"msg\": \"m\"}] { x }";
        let input = serde_json::json!({"a": true, "b": true});
        assert!(
            raw_regorus(rego, input.clone(), false)
                .unwrap_err()
                .contains("conflicts")
        );
        assert_eq!(
            raw_regorus(rego, input, true)
                .unwrap()
                .replace(char::is_whitespace, ""),
            "[]"
        );
    }

    #[test]
    fn canary_regorus_lacks_the_cidr_builtins() {
        // workaround: policy::net, registered as extensions
        for call in [
            "net.cidr_intersects(\"10.0.0.0/8\", \"10.1.0.0/16\")",
            "net.cidr_merge([\"10.0.0.0/8\"])",
        ] {
            let rego = format!("package t\nviolation[{{\"msg\": \"m\"}}] {{ {call} }}");
            let err = raw_regorus(&rego, serde_json::json!({}), false).unwrap_err();
            assert!(err.contains("could not find function"), "{err}");
        }
    }

    #[test]
    fn canary_regorus_vm_cannot_call_an_extension() {
        // workaround: a template that calls a builtin Palisade adds (net_builtins) skips the VM;
        // its error, were it tried, is one log line
        let mut engine = RegoEngine::new();
        engine.set_rego_v0(true);
        for (name, nargs, extension) in net_builtins() {
            engine
                .add_extension(name.to_owned(), nargs, extension)
                .unwrap();
        }
        let rego = "package t\nviolation[{\"msg\": \"m\"}] {\n  net.cidr_intersects(\"10.0.0.0/8\", \"10.1.0.0/16\")\n}";
        engine.add_policy("t.rego".into(), rego.into()).unwrap();
        let rule = "data.t.violation";
        let policy = engine.compile_with_entrypoint(&rule.into()).unwrap();
        let err = Compiler::compile_from_policy(&policy, &[rule])
            .unwrap_err()
            .to_string();
        assert!(err.contains('\n'), "{err}");
        let line = one_line(&err);
        assert!(
            line.starts_with("t.rego:3:")
                && line.ends_with(": Unknown function: 'net.cidr_intersects'"),
            "{line}"
        );
        let t = compile(&template(
            "package k8stest\nviolation[{\"msg\": \"m\"}] { net.cidr_intersects(input.review.a, \"10.0.0.0/8\") }",
        ))
        .unwrap();
        assert!(!t.on_vm());
    }

    #[test]
    fn canary_regorus_vm_loses_a_comprehension_around_a_failing_one() {
        // workaround: rego::nested_comprehensions sends such templates to the interpreter
        let rego = "package t\ns := {x | y := [t | false; t := 1]; x := [1, 2][_]}\nviolation[{\"msg\": \"m\"}] { count(s) == 2 }";
        let input = serde_json::json!({});
        assert!(
            raw_regorus(rego, input.clone(), false)
                .unwrap()
                .contains("\"m\"")
        );
        assert_eq!(
            raw_regorus(rego, input, true)
                .unwrap()
                .replace(char::is_whitespace, ""),
            "[]"
        );
    }

    #[test]
    fn canary_regorus_vm_ignores_an_unread_assignment_of_undefined() {
        // workaround: rego::keep_unused_assignments
        let rego = "package t\nexempt { x := input.missing; true }\nviolation[{\"msg\": \"m\"}] { not exempt }";
        let out = |vm| {
            raw_regorus(rego, serde_json::json!({}), vm)
                .unwrap()
                .replace(char::is_whitespace, "")
        };
        assert!(out(false).contains("\"m\""));
        assert_eq!(out(true), "[]");
    }

    #[test]
    fn canary_regorus_vm_keeps_an_undefined_comprehension_element() {
        // workaround: rego::guard_comprehension_terms
        let rego =
            "package t\nviolation[{\"msg\": \"m\"}] { count([c.name | c := input.cs[_]]) == 0 }";
        let input = serde_json::json!({"cs": [{}]});
        assert!(
            raw_regorus(rego, input.clone(), false)
                .unwrap()
                .contains("\"m\"")
        );
        assert!(!raw_regorus(rego, input, true).unwrap().contains("\"m\""));
    }

    #[test]
    fn canary_regorus_vm_keeps_one_value_of_a_duplicate_key() {
        // workaround: rego::partial_object_rules and rego::object_comprehensions send such
        // templates to the interpreter
        let rego = "package t\nviolation[{\"msg\": \"m\"}] { o := {c.n: c.v | c := input.cs[_]}; o.a == \"bad\" }";
        let input = serde_json::json!({"cs": [{"n": "a", "v": "bad"}, {"n": "a", "v": "good"}]});
        assert!(raw_regorus(rego, input.clone(), false).is_err());
        assert!(raw_regorus(rego, input, true).is_ok());
    }

    #[test]
    fn canary_regorus_drops_a_sprintf_of_a_fraction_with_percent_d() {
        // workaround: rego::sprintf_as_opa
        let rego = "package t\nviolation[{\"msg\": m}] { m := sprintf(\"%d\", [input.n]) }";
        for vm in [false, true] {
            assert_eq!(
                raw_regorus(rego, serde_json::json!({"n": 0.5}), vm)
                    .unwrap()
                    .replace(char::is_whitespace, ""),
                "[]"
            );
        }
    }

    #[test]
    fn a_comprehension_inside_a_comprehension_keeps_the_template_off_the_vm() {
        let t = compile(&template(
            "package k8stest\nbad := {c | c := input.review.cs[_]; y := [t | false; t := 1]}\nviolation[{\"msg\": m}] { m := bad[_] }",
        ))
        .unwrap();
        assert!(!t.on_vm());
        let input = regorus::Value::from(
            serde_json::json!({"review": {"cs": ["privileged"]}, "parameters": {}}),
        );
        let out = t
            .evaluate(input, &Inventory::default(), Duration::from_secs(1))
            .unwrap();
        assert!(out.to_json_str().unwrap().contains("privileged"), "{out:?}");
    }

    #[test]
    fn a_pooled_vm_carries_nothing_from_one_evaluation_to_the_next() {
        // Rules are cached within a run (`bad` below); the next run on the same thread gets the
        // VM back from the pool and must start clean.
        let t = compile(&template(
            "package k8stest\nbad { input.review.bad }\nviolation[{\"msg\": \"m\"}] { bad }",
        ))
        .unwrap();
        assert!(t.on_vm());
        let run = |bad: bool| {
            let input =
                regorus::Value::from(serde_json::json!({"review": {"bad": bad}, "parameters": {}}));
            let out = t
                .evaluate(input, &Inventory::default(), Duration::from_secs(1))
                .unwrap();
            out.to_json_str().unwrap().contains("\"m\"")
        };
        assert_eq!(
            [run(true), run(false), run(true), run(false)],
            [true, false, true, false]
        );
    }

    #[test]
    fn a_conflict_reads_as_in_opa_and_keeps_the_template_off_the_vm() {
        let t = compile(&template(
            "package k8stest\nx = 1 { input.review.a }\nx = 2 { input.review.b }\nviolation[{\"msg\": \"m\"}] { x }",
        ))
        .unwrap();
        assert!(!t.on_vm());
        let input = regorus::Value::from(
            serde_json::json!({"review": {"a": true, "b": true}, "parameters": {}}),
        );
        let err = t
            .evaluate(input, &Inventory::default(), Duration::from_secs(1))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "k8stest.rego:2: eval_conflict_error: complete rules must not produce multiple outputs"
        );
    }

    #[test]
    fn a_short_sprintf_loads_with_a_warning() {
        let t = compile(&template(
            "package k8stest\nviolation[{\"msg\": m}] { m := sprintf(\"%v %v\", [1]) }",
        ))
        .unwrap();
        assert_eq!(t.warnings.len(), 1);
        assert!(
            t.warnings[0].starts_with("k8stest.rego:2: sprintf format has 2 verbs but 1 arguments"),
            "{:?}",
            t.warnings
        );
    }

    /// The gatekeeper-library's uniqueserviceselector builds a comprehension's term by a
    /// unification whose variables a later statement binds. The rewrites that guard
    /// comprehension terms and fresh unifications must leave it working on both engines.
    #[test]
    fn a_comprehension_bound_out_of_order_still_evaluates_on_both_engines() {
        let yaml = template(
            "package k8stest\nflat(obj) = f {\n  s := [x | x = concat(\":\", [k, v]); v = obj.sel[k]]\n  f := concat(\",\", sort(s))\n}\nviolation[{\"msg\": m}] { m := flat(input.review.object) }",
        );
        let docs = parse_str(&yaml, Path::new("t.yaml")).unwrap();
        for vm in [true, false] {
            let options = EngineOptions {
                vm,
                ..EngineOptions::default()
            };
            let t = Template::compile(parse(&docs[0]).unwrap(), &options).unwrap();
            let input = regorus::Value::from(serde_json::json!(
                {"review": {"object": {"sel": {"b": "2", "a": "1"}}}, "parameters": {}}
            ));
            let out = t
                .evaluate(input, &Inventory::default(), Duration::from_secs(1))
                .unwrap_or_else(|e| panic!("vm={vm}: {e}"));
            assert!(
                out.to_json_str().unwrap().contains("a:1,b:2"),
                "vm={vm}: {out:?}"
            );
        }
    }

    #[test]
    fn a_time_limit_inside_a_function_is_a_timeout_on_the_interpreter() {
        let yaml = template(
            "package k8stest\nslow(n) { numbers.range(1, n)[i]; numbers.range(1, n)[j]; numbers.range(1, n)[k]; i + j + k < 0 }\nviolation[{\"msg\": \"m\"}] { not slow(input.review.n) }",
        );
        let docs = parse_str(&yaml, Path::new("t.yaml")).unwrap();
        let options = EngineOptions {
            vm: false,
            ..EngineOptions::default()
        };
        let t = Template::compile(parse(&docs[0]).unwrap(), &options).unwrap();
        let input =
            regorus::Value::from(serde_json::json!({"review": {"n": 2000}, "parameters": {}}));
        let limit = Duration::from_millis(20);
        assert_eq!(
            t.evaluate(input, &Inventory::default(), limit),
            Err(EvalError::Timeout(limit))
        );
    }
}
