//! The differential test against real OPA (issue 16): every ConstraintTemplate of the bundle and
//! of the tests, evaluated on a corpus of inputs by OPA v1.20 (the oracle, in a Python process:
//! `tests/differential/oracle.py`) and by Palisade's engine, on the VM and on the interpreter.
//! The violation sets must be equal, messages byte for byte.
//!
//! The corpus of a template: the objects and inventories of the gator suites that test it, the
//! captured reviews of `tests/data/admission`, and structure-aware variations of them (fields
//! removed, emptied or given another type, lists grown, unicode strings, numbers at the edges,
//! labels and annotations added). The input is Gatekeeper's: `input.review`,
//! `input.parameters` (of each constraint the suites pair with the template), `data.inventory`.
//!
//! A divergence is shrunk to a minimal input and written, with the template and every engine's
//! answer, to `target/differential/`. Known divergences are listed with a reason each in
//! `tests/differential/allowed.yaml`; any other fails the test, and Palisade's own bundle may
//! show none at all.
//!
//! OPA parses only Rego v1, so v0 templates are converted for it ([`to_v1`]), the way `opa fmt
//! --v0-v1` would for these constructs; Palisade runs them as written.
//!
//! - `DIFFERENTIAL_INPUTS`: inputs per template (default 1,500, about 40 s in a debug build;
//!   docs/gatekeeper.md records a longer run).
//! - `DIFFERENTIAL_SEED`: the seed of the variations (default 16).
//! - `DIFFERENTIAL_DIRS`: more directories of templates (and suites), `:`-separated.
//!
//! `tests/differential/run` runs these tests alone, with those settings.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade::inventory::Inventory;
use palisade::policy::template::Engine;
use palisade::policy::template::{TemplateSource, parse as parse_template};
use palisade::policy::{EngineOptions, Template};
use palisade::suite::{find_suites, parse_suite, review_of_file};
use serde_json::{Value, json};

use crate::common::oracle::{Answer, Oracle, api_server_json, pointers, remove, setting, to_v1};
use crate::common::{Rng, repo_path};

// ---------------------------------------------------------------------------------------------
// Settings

fn inputs_per_template() -> usize {
    setting("DIFFERENTIAL_INPUTS", 1500) as usize
}

fn seed() -> u64 {
    setting("DIFFERENTIAL_SEED", 16)
}

// ---------------------------------------------------------------------------------------------
// The templates and their corpora

/// One template and what it is run on.
pub(crate) struct Subject {
    pub(crate) name: String,
    pub(crate) file: PathBuf,
    pub(crate) source: TemplateSource,
    /// The `spec.parameters` of each constraint that suites pair with it (`{}` without one).
    pub(crate) parameters: Vec<Value>,
    /// The constraints themselves, one for each of `parameters` (a CEL template reads the whole
    /// constraint as `params`); a bare one of the template's kind without a suite.
    pub(crate) constraints: Vec<Value>,
    /// Reviews (`input.review` before the namespace is added) and the inventory each goes with.
    pub(crate) bases: Vec<(String, Value, usize)>,
    pub(crate) inventories: Vec<Vec<Value>>,
}

pub(crate) fn read_docs(path: &Path) -> Vec<palisade::manifest::Document> {
    palisade::manifest::files::read_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every template under `roots` (and those their suites name elsewhere), with its corpus.
pub(crate) fn subjects(roots: &[PathBuf]) -> Vec<Subject> {
    let mut by_file: BTreeMap<PathBuf, Subject> = BTreeMap::new();
    let add_template = |file: &Path, by_file: &mut BTreeMap<PathBuf, Subject>| {
        let file = file.canonicalize().unwrap_or_else(|_| file.to_path_buf());
        if by_file.contains_key(&file) {
            return;
        }
        for doc in read_docs(&file) {
            if doc.kind() != "ConstraintTemplate" {
                continue;
            }
            let Ok(source) = parse_template(&doc) else {
                continue;
            };
            by_file.insert(
                file.clone(),
                Subject {
                    name: source.name.clone(),
                    file: file.clone(),
                    source,
                    parameters: Vec::new(),
                    constraints: Vec::new(),
                    bases: Vec::new(),
                    inventories: vec![Vec::new()],
                },
            );
        }
    };
    for root in roots {
        for suite in find_suites(root).unwrap_or_default() {
            let Ok(suite) = parse_suite(&suite) else {
                continue;
            };
            for test in suite.tests.iter().filter(|t| !t.invalid) {
                add_template(&test.template, &mut by_file);
                let key = test
                    .template
                    .canonicalize()
                    .unwrap_or_else(|_| test.template.clone());
                let Some(subject) = by_file.get_mut(&key) else {
                    continue;
                };
                let constraint = read_docs(&test.constraint)
                    .first()
                    .map(|d| d.value.clone())
                    .unwrap_or_else(|| json!({}));
                let parameters = Some(constraint["spec"]["parameters"].clone())
                    .filter(|p| !p.is_null())
                    .unwrap_or_else(|| json!({}));
                if !subject.parameters.contains(&parameters) {
                    subject.parameters.push(parameters);
                    subject.constraints.push(constraint);
                }
                for case in &test.cases {
                    let Ok(review) = review_of_file(&case.object) else {
                        continue;
                    };
                    let objects: Vec<Value> = case
                        .inventory
                        .iter()
                        .flat_map(|p| read_docs(p))
                        .map(|d| d.value)
                        .collect();
                    let inventory = match subject.inventories.iter().position(|i| *i == objects) {
                        Some(at) => at,
                        None => {
                            subject.inventories.push(objects);
                            subject.inventories.len() - 1
                        }
                    };
                    subject.bases.push((
                        format!("{} / {}", test.name, case.name),
                        review.json().clone(),
                        inventory,
                    ));
                }
            }
        }
        // Templates without a suite too.
        let files = palisade::manifest::files::manifest_files(root).unwrap_or_default();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            if text.contains("kind: ConstraintTemplate") {
                add_template(&file, &mut by_file);
            }
        }
    }
    // The captured reviews, with the largest inventory of the template's suites.
    let captured: Vec<(String, Value)> = std::fs::read_dir(repo_path("tests/data/admission"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let review = review_of_file(&p).unwrap();
            (
                format!("captured {}", p.file_name().unwrap().to_string_lossy()),
                review.json().clone(),
            )
        })
        .collect();
    let mut out: Vec<Subject> = by_file.into_values().collect();
    for subject in &mut out {
        if subject.parameters.is_empty() {
            subject.parameters.push(json!({}));
            subject.constraints.push(json!({
                "apiVersion": "constraints.gatekeeper.sh/v1beta1",
                "kind": subject.source.kind,
                "metadata": {"name": "differential"},
            }));
        }
        let largest = (0..subject.inventories.len())
            .max_by_key(|&i| subject.inventories[i].len())
            .unwrap_or(0);
        for (label, review) in &captured {
            subject.bases.push((label.clone(), review.clone(), largest));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Variations

const STRINGS: &[&str] = &[
    "",
    " ",
    "ünïcødé",
    "日本語のラベル",
    "🙂",
    "a\u{200b}b",
    "e\u{301}",
    "\u{202e}gnp.exe",
    "*",
    "-",
    "0",
    "true",
    "null",
    "latest",
    "nginx",
    "nginx:latest",
    "docker.io/library/nginx:1.25",
    "gcr.io/project/image@sha256:0000000000000000000000000000000000000000000000000000000000000000",
    "registry.example.com:5000/a/b:tag",
    "0.0.0.0/0",
    "10.0.0.0/8",
    "::/0",
    "kube-system",
    "default",
    "payments",
    "%v %d %s",
    "a\nb",
    "\"quoted\"",
    "\\",
    "Privileged",
    "RuntimeDefault",
    "TCP",
    "UDP",
    "Ingress",
    "Egress",
];

const NUMBERS: &[f64] = &[
    0.0,
    -1.0,
    1.0,
    0.5,
    -0.5,
    1e-7,
    0.00001,
    0.000015,
    0.0001,
    65535.0,
    65536.0,
    2147483647.0,
    2147483648.0,
    -2147483649.0,
    9007199254740992.0,
    9007199254740993.0,
    9.223372036854776e18,
    1e20,
    1e21,
    1.5e300,
    -0.0,
];

const LABEL_KEYS: &[&str] = &[
    "app",
    "kubernetes.io/metadata.name",
    "kubernetes.io/metadata.name ",
    "Kubernetes.io/metadata.name",
    "security-level",
    "security-level\u{200b}",
    "palisade.dev/break-glass",
    "palisade.dev/break-glass-reason",
    "istio-injection",
    "a/b/c",
    "",
];

fn random_value(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth > 1 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => json!(rng.below(2) == 0),
        2 => json!(*rng.pick(NUMBERS)),
        3 | 4 => json!(*rng.pick(STRINGS)),
        5 => Value::Array(
            (0..rng.below(3))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.below(3))
                .map(|_| {
                    (
                        rng.pick(LABEL_KEYS).to_string(),
                        random_value(rng, depth + 1),
                    )
                })
                .collect(),
        ),
    }
}

/// One to three structure-aware edits of the review's object (or, now and then, of the rest of
/// the review).
pub(crate) fn vary(review: &Value, rng: &mut Rng) -> Value {
    let mut review = review.clone();
    for _ in 0..1 + rng.below(3) {
        let base = if rng.below(6) == 0 || !review["object"].is_object() {
            String::new()
        } else {
            "/object".to_owned()
        };
        let mut all = Vec::new();
        if let Some(v) = review.pointer(&base) {
            pointers(v, base.clone(), &mut all);
        }
        // The review itself stays a mapping (Palisade refuses any other at decode).
        all.retain(|p| !p.is_empty());
        if all.is_empty() {
            continue;
        }
        let at = rng.pick(&all).clone();
        let Some(target) = review.pointer_mut(&at) else {
            continue;
        };
        match rng.below(8) {
            0 if !at.is_empty() && at != "/object" => remove(&mut review, &at),
            0 | 1 => {
                *target = match target {
                    Value::String(_) => json!(""),
                    Value::Array(_) => json!([]),
                    Value::Object(_) => json!({}),
                    Value::Number(_) => json!(0),
                    Value::Bool(_) => json!(false),
                    Value::Null => json!({}),
                }
            }
            2 => {
                // Another type.
                let mut other = random_value(rng, 0);
                while std::mem::discriminant(&other) == std::mem::discriminant(target) {
                    other = random_value(rng, 0);
                }
                *target = other;
            }
            3 => match target {
                Value::Array(a) if !a.is_empty() => {
                    for _ in 0..1 + rng.below(4) {
                        let copy = a[rng.below(a.len())].clone();
                        a.push(copy);
                    }
                }
                other => *other = json!([other.clone(), random_value(rng, 1)]),
            },
            4 => match target {
                Value::String(s) => {
                    let extra = rng.pick(STRINGS);
                    if rng.below(2) == 0 {
                        *s = extra.to_string();
                    } else {
                        s.push_str(extra);
                    }
                }
                other => *other = json!(*rng.pick(STRINGS)),
            },
            5 => *target = json!(*rng.pick(NUMBERS)),
            6 => {
                let which = if rng.below(2) == 0 {
                    "labels"
                } else {
                    "annotations"
                };
                let object = if review["object"].is_object() {
                    &mut review["object"]
                } else {
                    &mut review
                };
                if !object["metadata"].is_object() {
                    object["metadata"] = json!({});
                }
                if !object["metadata"][which].is_object() {
                    object["metadata"][which] = json!({});
                }
                object["metadata"][which][*rng.pick(LABEL_KEYS)] = json!(*rng.pick(STRINGS));
            }
            _ => *target = random_value(rng, 0),
        }
    }
    review
}

// ---------------------------------------------------------------------------------------------
// Running

/// An engine on Palisade's side.
enum Evaluator {
    Palisade(Template),
    /// regorus as it is, without any of Palisade's rewrites: the harness' own test only.
    Raw(Box<regorus::Engine>, String),
}

impl Evaluator {
    fn answer(&self, input: &Value, inventory: &Inventory) -> Answer {
        // From the text the API server would send, as the server parses a review.
        let sent: Value = serde_json::from_str(&api_server_json(input)).unwrap();
        let input_value = palisade::object::to_regorus(&sent);
        let result = match self {
            Evaluator::Palisade(template) => template
                .evaluate(input_value, inventory, Duration::from_secs(5))
                .map_err(|e| e.to_string()),
            Evaluator::Raw(engine, rule) => {
                let mut engine = (**engine).clone();
                engine.set_input(input_value);
                engine.eval_rule(rule.clone()).map_err(|e| e.to_string())
            }
        };
        match result {
            Ok(regorus::Value::Undefined) => Answer::Violations(BTreeSet::new()),
            Ok(value) => Answer::of(serde_json::to_value(&value).unwrap_or(Value::Null)),
            Err(e) => Answer::Error(e),
        }
    }
}

/// A known divergence (`tests/differential/allowed.yaml`).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Allowed {
    /// `metadata.name` of the template, or `*`.
    template: String,
    /// Which of Palisade's engines may differ from OPA here: vm, interpreter.
    engines: Vec<String>,
    /// Text that OPA's answer contains, when the entry is that narrow.
    #[serde(default)]
    opa: Option<String>,
    /// Text that the differing engine's answer contains.
    #[serde(default)]
    palisade: Option<String>,
    reason: String,
}

fn allowed_list() -> Vec<Allowed> {
    let path = repo_path("tests/differential/allowed.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A divergence, shrunk.
struct Divergence {
    template: String,
    file: PathBuf,
    base: String,
    input: Value,
    answers: Vec<(String, Answer)>,
}

impl Divergence {
    fn differing(&self) -> Vec<&str> {
        let opa = &self.answers[0].1;
        self.answers[1..]
            .iter()
            .filter(|(_, a)| !a.same(opa))
            .map(|(n, _)| n.as_str())
            .collect()
    }

    fn allowed_by<'a>(&self, list: &'a [Allowed]) -> Option<&'a Allowed> {
        let opa = self.answers[0].1.json().to_string();
        list.iter().find(|entry| {
            (entry.template == "*" || entry.template == self.template)
                && entry.opa.as_ref().is_none_or(|t| opa.contains(t.as_str()))
                && self.answers[1..]
                    .iter()
                    .filter(|(_, a)| !a.same(&self.answers[0].1))
                    .all(|(engine, answer)| {
                        entry.engines.iter().any(|e| e == engine)
                            && entry
                                .palisade
                                .as_ref()
                                .is_none_or(|t| answer.json().to_string().contains(t.as_str()))
                    })
        })
    }

    fn report(&self) -> Value {
        json!({
            "template": self.template,
            "file": self.file.display().to_string(),
            "from": self.base,
            "input": self.input,
            "answers": self.answers.iter().map(|(n, a)| (n.clone(), a.json())).collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// What one run found.
#[derive(Default)]
struct Findings {
    compared: usize,
    inputs: usize,
    /// Inputs where OPA's answer is not known (a builtin error under the bindings' strict mode).
    unknown: usize,
    divergences: Vec<Divergence>,
    /// Templates not compared, and why.
    skipped: Vec<String>,
    /// Templates with only CEL code: not compared with OPA.
    cel_only: Vec<String>,
}

/// The input of one evaluation, as Palisade builds it: the review with its namespace's object
/// from the inventory when the review does not carry one, and the constraint's parameters.
fn input_of(review: &Value, parameters: &Value, inventory: &Inventory) -> Value {
    let mut review = review.clone();
    let ns = review["namespace"]
        .as_str()
        .or_else(|| review["object"]["metadata"]["namespace"].as_str())
        .unwrap_or_default()
        .to_owned();
    if review.get("namespaceObject").is_none()
        && let Some(object) = inventory.namespace(&ns)
        && let Some(map) = review.as_object_mut()
    {
        map.insert("namespaceObject".into(), object.clone());
    }
    let mut input = json!({"review": review, "parameters": parameters});
    // A NetworkPolicy review carries the model's facts, as Palisade adds them (and as OPA then
    // reads them): the template's judgement of them is what is compared.
    if review["kind"]["kind"] == "NetworkPolicy"
        && let Ok(r) = palisade::admission::Review::from_request_json(review.clone())
    {
        let analysis = palisade::netpol::judge::analyse(&r, inventory, &universe(), None).unwrap();
        input["palisade"] = json!({"reachability": analysis.facts(parameters)});
    }
    input
}

/// What the default bundle requires of every namespace (its namespace-label constraint).
fn universe() -> palisade::netpol::Universe {
    let mut u = palisade::netpol::Universe::default();
    for d in read_docs(&repo_path(
        "policies/zero-trust/namespace-labels/constraint.yaml",
    )) {
        u.require_from(d.kind(), &d.value["spec"]["parameters"]);
    }
    u
}

/// The OPA modules of a template: each module converted to v1 unless it is v1 already.
fn opa_modules(source: &TemplateSource) -> Vec<(String, String)> {
    let convert = |src: &str| {
        if source.rego_v1 {
            src.to_owned()
        } else {
            to_v1(src)
        }
    };
    std::iter::once((format!("{}.rego", source.name), convert(&source.rego)))
        .chain(
            source
                .libs
                .iter()
                .enumerate()
                .map(|(i, l)| (format!("{}.libs[{i}].rego", source.name), convert(l))),
        )
        .collect()
}

fn package_of(src: &str) -> String {
    src.lines()
        .find_map(|l| l.trim().strip_prefix("package "))
        .map(|p| p.trim().to_owned())
        .unwrap_or_default()
}

/// Runs one template on its corpus through OPA and `evaluators`.
fn run_subject(
    oracle: &mut Oracle,
    subject: &Subject,
    evaluators: &[(String, Evaluator)],
    inputs: usize,
    rng: &mut Rng,
    findings: &mut Findings,
) {
    let modules = opa_modules(&subject.source);
    let path = format!("{}.violation", package_of(&subject.source.rego));
    findings.compared += 1;
    for (group, objects) in subject.inventories.iter().enumerate() {
        let bases: Vec<&(String, Value, usize)> =
            subject.bases.iter().filter(|b| b.2 == group).collect();
        if bases.is_empty() {
            continue;
        }
        let inventory = Inventory::from_objects(objects.clone());
        let data = serde_json::to_value(inventory.data()).unwrap();
        if let Err(e) = oracle.load(&modules, &data) {
            findings.divergences.push(Divergence {
                template: subject.name.clone(),
                file: subject.file.clone(),
                base: "loading the template".into(),
                input: json!({"modules": modules.iter().map(|(n, s)| (n.clone(), Value::String(s.clone()))).collect::<serde_json::Map<_, _>>()}),
                answers: vec![("opa".into(), Answer::Error(e))],
            });
            return;
        }
        // This group's share of the template's inputs, at least each base once.
        let share = (inputs * bases.len() / subject.bases.len().max(1)).max(bases.len());
        let mut labels = Vec::with_capacity(share);
        let mut batch = Vec::with_capacity(share);
        for n in 0..share {
            let (label, review, _) = bases[n % bases.len()];
            let parameters = &subject.parameters[(n / bases.len()) % subject.parameters.len()];
            let review = if n < bases.len() {
                review.clone()
            } else {
                vary(review, rng)
            };
            labels.push(label.clone());
            batch.push(input_of(&review, parameters, &inventory));
        }
        let opa = oracle.eval(&path, &batch);
        findings.inputs += batch.len();
        for ((label, input), opa) in labels.iter().zip(&batch).zip(opa) {
            if matches!(opa, Answer::Unknown(_)) {
                findings.unknown += 1;
                continue;
            }
            let answers: Vec<(String, Answer)> = std::iter::once(("opa".to_owned(), opa))
                .chain(
                    evaluators
                        .iter()
                        .map(|(name, e)| (name.clone(), e.answer(input, &inventory))),
                )
                .collect();
            if answers[1..].iter().all(|(_, a)| a.same(&answers[0].1)) {
                continue;
            }
            let differing: Vec<String> = answers[1..]
                .iter()
                .filter(|(_, a)| !a.same(&answers[0].1))
                .map(|(n, _)| n.clone())
                .collect();
            // One reproducer per template and set of differing engines is enough.
            if findings.divergences.iter().any(|d| {
                d.template == subject.name
                    && d.differing()
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                        == differing
            }) {
                continue;
            }
            let (input, answers) = shrink(
                oracle,
                &path,
                evaluators,
                &inventory,
                input.clone(),
                &differing,
            );
            findings.divergences.push(Divergence {
                template: subject.name.clone(),
                file: subject.file.clone(),
                base: label.clone(),
                input,
                answers,
            });
        }
    }
}

/// The answers of every engine to one input.
fn answers_to(
    oracle: &mut Oracle,
    path: &str,
    evaluators: &[(String, Evaluator)],
    inventory: &Inventory,
    input: &Value,
) -> Vec<(String, Answer)> {
    let opa = oracle.eval(path, std::slice::from_ref(input)).remove(0);
    std::iter::once(("opa".to_owned(), opa))
        .chain(
            evaluators
                .iter()
                .map(|(name, e)| (name.clone(), e.answer(input, inventory))),
        )
        .collect()
}

/// Removes whatever can be removed from the input's review (members, elements) while the same
/// engines still disagree with OPA: a minimal reproducer.
fn shrink(
    oracle: &mut Oracle,
    path: &str,
    evaluators: &[(String, Evaluator)],
    inventory: &Inventory,
    mut input: Value,
    differing: &[String],
) -> (Value, Vec<(String, Answer)>) {
    let still = |answers: &[(String, Answer)]| {
        let now: Vec<&String> = answers[1..]
            .iter()
            .filter(|(_, a)| !a.same(&answers[0].1))
            .map(|(n, _)| n)
            .collect();
        now.len() == differing.len() && now.iter().zip(differing).all(|(a, b)| *a == b)
    };
    let mut answers = answers_to(oracle, path, evaluators, inventory, &input);
    let mut budget = 3000usize;
    let mut progress = true;
    while progress && budget > 0 {
        progress = false;
        let mut all = Vec::new();
        pointers(&input["review"], "/review".into(), &mut all);
        // Largest subtrees first (parents come after their children in `pointers`).
        all.reverse();
        for at in all {
            if at == "/review" || budget == 0 {
                continue;
            }
            budget -= 1;
            let mut smaller = input.clone();
            remove(&mut smaller, &at);
            if smaller == input {
                continue;
            }
            let tried = answers_to(oracle, path, evaluators, inventory, &smaller);
            if still(&tried) {
                input = smaller;
                answers = tried;
                progress = true;
                break;
            }
        }
    }
    (input, answers)
}

/// Palisade's two engines for a template, or why it does not load. A template that also has
/// K8sNativeValidation code is compiled for its Rego: that is what OPA is compared with
/// (`cel_vs_rego.rs` compares its two codes).
fn palisade_engines(source: &TemplateSource) -> Result<Vec<(String, Evaluator)>, String> {
    let compile = |vm| {
        Template::compile(
            source.clone(),
            &EngineOptions {
                vm,
                prefer: Engine::Rego,
                ..EngineOptions::default()
            },
        )
    };
    let vm = compile(true)?;
    let interpreter = compile(false)?;
    if vm.engine() != Engine::Rego || interpreter.engine() != Engine::Rego {
        return Err("compiled for its CEL, not its Rego".into());
    }
    // A template Palisade moves off the VM (docs/regorus-divergences.md) is compared once.
    let mut engines = vec![("interpreter".to_owned(), Evaluator::Palisade(interpreter))];
    if vm.on_vm() {
        engines.insert(0, ("vm".to_owned(), Evaluator::Palisade(vm)));
    }
    Ok(engines)
}

/// Runs every subject; writes the reproducers of what diverges to `target/differential/`.
fn run_all(subjects: &[Subject], label: &str) -> Findings {
    let mut oracle = Oracle::start();
    let mut rng = Rng(seed());
    let mut findings = Findings::default();
    let inputs = inputs_per_template();
    for subject in subjects {
        // OPA has nothing to run of a template with only K8sNativeValidation code.
        if subject.source.rego.is_empty() {
            findings.cel_only.push(subject.name.clone());
            continue;
        }
        match palisade_engines(&subject.source) {
            Ok(engines) => run_subject(
                &mut oracle,
                subject,
                &engines,
                inputs,
                &mut rng,
                &mut findings,
            ),
            Err(e) => findings.skipped.push(format!(
                "{} ({}): Palisade refuses it: {e}",
                subject.name,
                subject.file.display()
            )),
        }
    }
    let dir = repo_path("target/differential");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, d) in findings.divergences.iter().enumerate() {
        let file = dir.join(format!("{label}-{}-{i}.json", d.template));
        std::fs::write(&file, serde_json::to_string_pretty(&d.report()).unwrap()).unwrap();
    }
    println!(
        "{label}: {} templates, {} inputs ({} not compared: a builtin error under OPA's strict mode), {} divergences (seed {}, {inputs} inputs per template); skipped: {:?}; CEL only, not compared: {:?}",
        findings.compared,
        findings.inputs,
        findings.unknown,
        findings.divergences.len(),
        seed(),
        findings.skipped,
        findings.cel_only
    );
    findings
}

/// The divergences no entry of `allowed` explains; the explained ones are printed with their
/// reason.
fn unexplained<'a>(findings: &'a Findings, allowed: &[Allowed]) -> Vec<&'a Divergence> {
    let mut left = Vec::new();
    for d in &findings.divergences {
        match d.allowed_by(allowed) {
            Some(entry) => println!(
                "allowed divergence in {} ({:?}): {}",
                d.template,
                d.differing(),
                entry.reason
            ),
            None => left.push(d),
        }
    }
    left
}

fn describe(divergences: &[&Divergence]) -> String {
    divergences
        .iter()
        .map(|d| serde_json::to_string_pretty(&d.report()).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

fn under(file: &Path, dir: &str) -> bool {
    let dir = repo_path(dir).canonicalize().unwrap();
    file.starts_with(dir)
}

// ---------------------------------------------------------------------------------------------
// The tests

#[test]
fn the_bundle_agrees_with_opa_on_every_input() {
    // The zero-trust suites pair the bundle's templates with their constraints and objects.
    let subjects: Vec<Subject> =
        subjects(&[repo_path("policies"), repo_path("tests/data/zero-trust")])
            .into_iter()
            .filter(|s| under(&s.file, "policies"))
            .collect();
    assert!(subjects.len() >= 6, "the bundle's templates were not found");
    let findings = run_all(&subjects, "bundle");
    assert!(findings.skipped.is_empty(), "{:?}", findings.skipped);
    // No allow-list here: the bundle must agree with OPA on every input.
    let left: Vec<&Divergence> = findings.divergences.iter().collect();
    assert!(
        left.is_empty(),
        "Palisade's bundle diverges from OPA (reproducers in target/differential/):\n{}",
        describe(&left)
    );
}

#[test]
fn test_templates_diverge_from_opa_only_as_allowed() {
    let mut roots = vec![repo_path("tests/data")];
    if let Ok(extra) = std::env::var("DIFFERENTIAL_DIRS") {
        roots.extend(
            extra
                .split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
        );
    }
    let subjects: Vec<Subject> = subjects(&roots)
        .into_iter()
        .filter(|s| !under(&s.file, "policies"))
        .collect();
    assert!(subjects.len() >= 10, "the tests' templates were not found");
    let findings = run_all(&subjects, "templates");
    // CEL-only templates are left out by name, and a template with both codes ran its Rego.
    assert!(
        findings.cel_only.iter().any(|n| n == "k8scelallowedrepos"),
        "the CEL-only test template was not set aside: {:?}",
        findings.cel_only
    );
    assert!(
        !findings
            .skipped
            .iter()
            .any(|s| s.contains("compiled for its CEL")),
        "{:?}",
        findings.skipped
    );
    let allowed = allowed_list();
    let left = unexplained(&findings, &allowed);
    assert!(
        left.is_empty(),
        "divergences from OPA that tests/differential/allowed.yaml does not explain (reproducers in target/differential/):\n{}",
        describe(&left)
    );
}

/// The harness itself: regorus without Palisade's workaround for a short `sprintf` (divergence
/// 1 of docs/regorus-divergences.md) must be caught, with a minimal reproducer, and Palisade's
/// engine on the same template must not be.
#[test]
fn the_harness_catches_a_known_regorus_divergence() {
    let template = r#"
apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata: {name: shortsprintf}
spec:
  crd: {spec: {names: {kind: ShortSprintf}}}
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package shortsprintf
        violation[{"msg": msg}] {
          image := input.review.object.spec.containers[_].image
          endswith(image, ":latest")
          msg := sprintf("container %v uses %v", [image])
        }
"#;
    let doc = palisade::manifest::parse_str(template, Path::new("shortsprintf.yaml"))
        .unwrap()
        .remove(0);
    let source = parse_template(&doc).unwrap();
    let mut raw = regorus::Engine::new();
    raw.set_rego_v0(true);
    raw.set_strict_builtin_errors(false);
    raw.add_policy("shortsprintf.rego".into(), source.rego.clone())
        .unwrap();
    let pod = json!({
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "operation": "CREATE", "namespace": "shop", "name": "web",
        "object": {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
                   "spec": {"containers": [{"name": "a", "image": "nginx:1.25"},
                                           {"name": "b", "image": "nginx:latest", "ports": [{"containerPort": 80}]}]}}
    });
    let subject = Subject {
        name: source.name.clone(),
        file: PathBuf::from("shortsprintf.yaml"),
        source: source.clone(),
        parameters: vec![json!({})],
        constraints: vec![json!({})],
        bases: vec![("a pod with a :latest image".into(), pod, 0)],
        inventories: vec![Vec::new()],
    };
    let mut oracle = Oracle::start();

    // Unworked-around regorus: OPA reports `%!v(MISSING)`, regorus loses the violation.
    let raw_engines = vec![(
        "regorus".to_owned(),
        Evaluator::Raw(Box::new(raw), "data.shortsprintf.violation".into()),
    )];
    let mut findings = Findings::default();
    run_subject(
        &mut oracle,
        &subject,
        &raw_engines,
        20,
        &mut Rng(1),
        &mut findings,
    );
    assert_eq!(
        findings.divergences.len(),
        1,
        "exactly one kind of divergence"
    );
    let d = &findings.divergences[0];
    assert_eq!(d.differing(), ["regorus"]);
    let opa = d.answers[0].1.json().to_string();
    assert!(opa.contains("%!v(MISSING)"), "OPA's answer: {opa}");
    assert_eq!(d.answers[1].1.json(), json!([]), "regorus loses it");
    // Shrunk: the other container, the labels, the ports and the rest of the review are gone.
    let review = &d.input["review"];
    assert_eq!(
        review,
        &json!({"object": {"spec": {"containers": [{"image": "nginx:latest"}]}}}),
        "a minimal reproducer"
    );
    // Not in the allow-list: a divergence like it fails the test.
    assert!(d.allowed_by(&allowed_list()).is_none());

    // Palisade's engines, with the workaround: no divergence on the same corpus.
    let mut findings = Findings::default();
    let engines = palisade_engines(&source).unwrap();
    run_subject(
        &mut oracle,
        &subject,
        &engines,
        20,
        &mut Rng(1),
        &mut findings,
    );
    assert!(
        findings.divergences.is_empty(),
        "{}",
        describe(&findings.divergences.iter().collect::<Vec<_>>())
    );
}

#[test]
fn v0_rules_convert_to_v1_line_for_line() {
    let v0 = r#"package t
import future.keywords.in
violation[{"msg": msg, "details": {}}] {
  re_match("^a", input.x)   # re_match( in a comment stays
  msg := "p[x] { not a rule }"
}
deny["fact"]
f(x) = {"a": x} { x > 1 } else = {} { true }
g(x) { x } { not x }
obj[k] = v { k := "a"; v := 1 }
ok { true } else { false }
default allowed = false
"#;
    let v1 = to_v1(v0);
    assert_eq!(
        v1,
        r#"package t
import future.keywords.in
violation contains {"msg": msg, "details": {}} if {
  regex.match("^a", input.x)   # re_match( in a comment stays
  msg := "p[x] { not a rule }"
}
deny contains "fact"
f(x) = {"a": x} if { x > 1 } else = {} if { true }
g(x) if { x } { not x }
obj[k] = v if { k := "a"; v := 1 }
ok if { true } else = true if { false }
default allowed = false
"#
    );
    assert_eq!(v0.lines().count(), v1.lines().count());
    // And OPA reads it.
    let mut oracle = Oracle::start();
    oracle
        .load(&[("t.rego".into(), v1)], &json!({}))
        .expect("OPA parses the converted module");
}
