//! The same constraint gives the same verdict on both engines (issue 32): every template that
//! ships both Rego and K8sNativeValidation (CEL) code is compiled twice, preferring each, and
//! the two are run through `Policies::evaluate` (the seam the webhook, `verify` and the audit
//! call) with the same constraint, on the differential test's corpus: the objects and
//! inventories of the suites that test the template, the captured reviews of
//! `tests/data/admission`, and the same structure-aware variations of them.
//!
//! - The verdicts (whether the constraint is violated) must be equal on every input. A
//!   difference is shrunk to a minimal review and written, with both answers, to
//!   `target/cel-differential/`, and fails the test.
//! - Also equal: whether the evaluation fails (closed: a violation carrying the error), and the
//!   messages, unless `tests/differential/cel-messages.yaml` lists the template with the reason
//!   its authors worded its two codes differently.
//! - An input the API server would not send to a validating webhook (a field given another type
//!   than the suite's object had: a list for a map, a fraction for an integer, null for a
//!   string; a Pod without containers) is compared and its differences counted and written, but
//!   they do not fail the test: Rego makes such a value undefined and iterates nothing where
//!   CEL fails, compares across types or reads a field it may assume, by design of each
//!   language and of the templates' authors.
//!
//! `DIFFERENTIAL_INPUTS` (inputs per template, default 1,500), `DIFFERENTIAL_SEED` (16) and
//! `DIFFERENTIAL_DIRS` (more template directories, `:`-separated) set a run, as they do the
//! differential test against OPA.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use palisade::admission::Review;
use palisade::inventory::Inventory;
use palisade::manifest::Document;
use palisade::policy::template::{Engine, TemplateSource};
use palisade::policy::{EngineOptions, Point, Policies, Template, parse_constraint};
use serde_json::{Value, json};

use crate::common::oracle::{pointers, remove, setting};
use crate::common::{Rng, repo_path};
use crate::differential::{Subject, subjects, vary};

/// What one engine made of one input.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    /// The violations' messages, sorted.
    messages: Vec<String>,
    /// The evaluation failed (fail closed): the error.
    failed: Option<String>,
}

impl Outcome {
    fn violates(&self) -> bool {
        self.failed.is_some() || !self.messages.is_empty()
    }

    fn json(&self) -> Value {
        match &self.failed {
            Some(e) => json!({"violates": true, "failed": e}),
            None => json!({"violates": self.violates(), "messages": self.messages}),
        }
    }
}

/// A template compiled for each engine, with one of its constraints.
struct Pair {
    cel: Policies,
    rego: Policies,
}

fn compile(source: &TemplateSource, prefer: Engine) -> Result<Arc<Template>, String> {
    let t = Template::compile(
        source.clone(),
        &EngineOptions {
            prefer,
            ..EngineOptions::default()
        },
    )?;
    if t.engine() != prefer {
        return Err(format!("compiled for {:?}, not {prefer:?}", t.engine()));
    }
    Ok(Arc::new(t))
}

impl Pair {
    /// `constraint` as written, but for its enforcement action: its `match` says which reviews
    /// it judges, as it would in a cluster.
    fn new(
        cel: &Arc<Template>,
        rego: &Arc<Template>,
        constraint: &Value,
    ) -> Result<Self, Vec<String>> {
        let mut constraint = constraint.clone();
        if let Some(spec) = constraint.get_mut("spec").and_then(|s| s.as_object_mut()) {
            spec.remove("enforcementAction");
            spec.remove("scopedEnforcementActions");
        }
        if constraint["metadata"]["name"]
            .as_str()
            .is_none_or(str::is_empty)
        {
            constraint["metadata"]["name"] = json!("differential");
        }
        let doc = Document::from_cluster(constraint);
        let c = parse_constraint(&doc, cel.schema.as_ref())?;
        let policies = |t: &Arc<Template>| {
            Policies::new(
                HashMap::from([(c.kind.clone(), t.clone())]),
                vec![c.clone()],
            )
        };
        Ok(Pair {
            cel: policies(cel),
            rego: policies(rego),
        })
    }
}

fn outcome(policies: &Policies, review: &Review, inventory: &Inventory) -> Outcome {
    let ns = review.object_ref().namespace.clone();
    let namespace = inventory.namespace(&ns);
    let violations = policies
        .evaluate(Point::Validation, review, namespace, inventory, None)
        .expect("no deadline");
    let failed = violations
        .iter()
        .find(|v| v.failure.is_some())
        .map(|v| v.message.clone());
    let mut messages: Vec<String> = violations.into_iter().map(|v| v.message).collect();
    messages.sort();
    Outcome { messages, failed }
}

/// The review as the webhook would decode it (on DELETE the API server sends the object as
/// `oldObject` only); `None` when Palisade refuses it at decode, for both engines alike.
fn decode(review: &Value) -> Option<Review> {
    let mut review = review.clone();
    if review["operation"] == "DELETE" && review["object"].is_object() {
        review["oldObject"] = review["object"].take();
    }
    Review::from_test_request_json(review).ok()
}

/// Whether every field of `varied` that `base` has too keeps its JSON type (and is not null
/// where it was set): what the API server would let through for a built-in kind.
fn well_typed(base: &Value, varied: &Value) -> bool {
    match (base, varied) {
        (Value::Object(b), Value::Object(v)) => v
            .iter()
            .all(|(k, x)| b.get(k).is_none_or(|y| well_typed(y, x))),
        (Value::Array(b), Value::Array(v)) => match b.first() {
            None => true,
            Some(first) => v
                .iter()
                .enumerate()
                .all(|(i, x)| well_typed(b.get(i).unwrap_or(first), x)),
        },
        (Value::Null, _) => true,
        // An integer field given a fraction is another type to the API server.
        (Value::Number(b), Value::Number(v)) => b.is_f64() == v.is_f64(),
        (b, v) => std::mem::discriminant(b) == std::mem::discriminant(v),
    }
}

/// Whether the API server could send `varied` to a validating webhook, as far as these
/// templates can tell: its fields keep their types ([`well_typed`]), every object keeps its
/// `metadata`, and a Pod keeps a non-empty `spec.containers` and a name for each of its
/// containers, which the API server's validation requires before any validating webhook is
/// called. The library's CEL reads those unguarded (`container.name`,
/// `has(variables.anyObject.metadata.annotations)`), its Rego finds them undefined.
fn admissible(base: &Value, varied: &Value) -> bool {
    let named = |list: &Value| {
        list.as_array().is_none_or(|l| {
            l.iter()
                .all(|c| c["name"].as_str().is_some_and(|n| !n.is_empty()))
        })
    };
    well_typed(base, varied)
        && ["object", "oldObject"].iter().all(|field| {
            let (b, v) = (&base[field], &varied[field]);
            if !b.is_object() || v.is_null() {
                return true;
            }
            if !v["metadata"].is_object() {
                return false;
            }
            b["kind"] != "Pod"
                || (v["spec"]["containers"]
                    .as_array()
                    .is_some_and(|c| !c.is_empty())
                    && ["containers", "initContainers", "ephemeralContainers"]
                        .iter()
                        .all(|l| named(&v["spec"][l])))
        })
}

/// Which way two outcomes differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Difference {
    /// One violates, the other does not, and neither failed.
    Verdict,
    /// One failed (closed), the other did not.
    Failure,
    /// Both violate, with other messages.
    Message,
}

fn difference(cel: &Outcome, rego: &Outcome) -> Option<Difference> {
    match (&cel.failed, &rego.failed) {
        // Two failures are the same answer, whatever their errors say.
        (Some(_), Some(_)) => None,
        (Some(_), None) | (None, Some(_)) => Some(Difference::Failure),
        (None, None) if cel.violates() != rego.violates() => Some(Difference::Verdict),
        (None, None) => (cel != rego).then_some(Difference::Message),
    }
}

/// One difference, shrunk.
struct Found {
    template: String,
    file: PathBuf,
    base: String,
    kind: Difference,
    admissible: bool,
    review: Value,
    cel: Outcome,
    rego: Outcome,
}

impl Found {
    fn report(&self) -> Value {
        json!({
            "template": self.template,
            "file": self.file.display().to_string(),
            "from": self.base,
            "difference": format!("{:?}", self.kind),
            "admissible": self.admissible,
            "review": self.review,
            "cel": self.cel.json(),
            "rego": self.rego.json(),
        })
    }
}

/// What a run found.
#[derive(Default)]
struct Findings {
    templates: Vec<String>,
    inputs: usize,
    /// Inputs Palisade refuses at decode (an `object` that is not a mapping, an operation it does
    /// not know): neither engine sees them.
    undecodable: usize,
    /// How many inputs differed in each way: (template, kind, admissible).
    counts: BTreeMap<(String, Difference, bool), usize>,
    inputs_by_template: BTreeMap<String, usize>,
    /// One shrunk example per template and kind of difference.
    found: Vec<Found>,
    skipped: Vec<String>,
}

/// Removes whatever can be removed from the review while it differs the same way.
fn shrink(
    pair: &Pair,
    inventory: &Inventory,
    mut review: Value,
    kind: Difference,
    keep: impl Fn(&Value) -> bool,
) -> (Value, Outcome, Outcome) {
    let judge = |r: &Value| {
        if !keep(r) {
            return None;
        }
        let d = decode(r)?;
        let cel = outcome(&pair.cel, &d, inventory);
        let rego = outcome(&pair.rego, &d, inventory);
        (difference(&cel, &rego) == Some(kind)).then_some((cel, rego))
    };
    let Some((mut cel, mut rego)) = judge(&review) else {
        unreachable!("the review differed")
    };
    let mut budget = 3000usize;
    let mut progress = true;
    while progress && budget > 0 {
        progress = false;
        let mut all = Vec::new();
        pointers(&review, String::new(), &mut all);
        all.reverse();
        for at in all {
            // What decoding needs stays.
            if at.is_empty() || at == "/object" || at == "/operation" || budget == 0 {
                continue;
            }
            budget -= 1;
            let mut smaller = review.clone();
            remove(&mut smaller, &at);
            if smaller == review {
                continue;
            }
            if let Some((c, r)) = judge(&smaller) {
                (review, cel, rego) = (smaller, c, r);
                progress = true;
                break;
            }
        }
    }
    (review, cel, rego)
}

fn run_subject(subject: &Subject, inputs: usize, rng: &mut Rng, findings: &mut Findings) {
    let (cel, rego) = match (
        compile(&subject.source, Engine::Cel),
        compile(&subject.source, Engine::Rego),
    ) {
        (Ok(c), Ok(r)) => (c, r),
        (c, r) => {
            findings.skipped.push(format!(
                "{}: CEL {:?}, Rego {:?}",
                subject.name,
                c.err(),
                r.err()
            ));
            return;
        }
    };
    let pairs: Vec<Pair> = match subject
        .constraints
        .iter()
        .map(|c| Pair::new(&cel, &rego, c))
        .collect()
    {
        Ok(p) => p,
        Err(e) => {
            findings
                .skipped
                .push(format!("{}: a constraint: {e:?}", subject.name));
            return;
        }
    };
    findings.templates.push(subject.name.clone());
    for (group, objects) in subject.inventories.iter().enumerate() {
        let bases: Vec<&(String, Value, usize)> =
            subject.bases.iter().filter(|b| b.2 == group).collect();
        if bases.is_empty() {
            continue;
        }
        let inventory = Inventory::from_objects(objects.clone());
        let share = (inputs * bases.len() / subject.bases.len().max(1)).max(bases.len());
        for n in 0..share {
            let (label, base, _) = bases[n % bases.len()];
            let pair = &pairs[(n / bases.len()) % pairs.len()];
            let review = if n < bases.len() {
                base.clone()
            } else {
                vary(base, rng)
            };
            let Some(decoded) = decode(&review) else {
                findings.undecodable += 1;
                continue;
            };
            findings.inputs += 1;
            *findings
                .inputs_by_template
                .entry(subject.name.clone())
                .or_default() += 1;
            let c = outcome(&pair.cel, &decoded, &inventory);
            let r = outcome(&pair.rego, &decoded, &inventory);
            let Some(kind) = difference(&c, &r) else {
                continue;
            };
            let typed = admissible(base, &review);
            *findings
                .counts
                .entry((subject.name.clone(), kind, typed))
                .or_default() += 1;
            if findings
                .found
                .iter()
                .any(|f| f.template == subject.name && f.kind == kind && f.admissible == typed)
            {
                continue;
            }
            // Shrunk as far as it stays admissible (or not).
            let (review, cel, rego) = shrink(pair, &inventory, review, kind, |r| {
                admissible(base, r) == typed
            });
            findings.found.push(Found {
                template: subject.name.clone(),
                file: subject.file.clone(),
                base: label.clone(),
                kind,
                admissible: typed,
                review,
                cel,
                rego,
            });
        }
    }
}

/// A template whose two codes its authors worded differently
/// (`tests/differential/cel-messages.yaml`).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Worded {
    template: String,
    reason: String,
}

fn worded_differently() -> Vec<Worded> {
    let path = repo_path("tests/differential/cel-messages.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn run(subjects: &[&Subject], label: &str) -> Findings {
    let mut rng = Rng(setting("DIFFERENTIAL_SEED", 16));
    let inputs = setting("DIFFERENTIAL_INPUTS", 1500) as usize;
    let mut findings = Findings::default();
    for subject in subjects {
        run_subject(subject, inputs, &mut rng, &mut findings);
    }
    let dir = repo_path("target/cel-differential");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, f) in findings.found.iter().enumerate() {
        let file = dir.join(format!("{label}-{}-{:?}-{i}.json", f.template, f.kind));
        std::fs::write(&file, serde_json::to_string_pretty(&f.report()).unwrap()).unwrap();
    }
    println!(
        "{label}: {} templates, {} inputs ({} refused at decode, not compared), seed {}, {inputs} per template; skipped: {:?}",
        findings.templates.len(),
        findings.inputs,
        findings.undecodable,
        setting("DIFFERENTIAL_SEED", 16),
        findings.skipped
    );
    for t in &findings.templates {
        let n = findings.inputs_by_template.get(t).copied().unwrap_or(0);
        let of = |k, typed| {
            findings
                .counts
                .get(&(t.clone(), k, typed))
                .copied()
                .unwrap_or(0)
        };
        println!(
            "  {t}: {n} inputs; verdict {} (+{} not admissible), fail-closed {} (+{} not admissible), message {} (+{} not admissible)",
            of(Difference::Verdict, true),
            of(Difference::Verdict, false),
            of(Difference::Failure, true),
            of(Difference::Failure, false),
            of(Difference::Message, true),
            of(Difference::Message, false),
        );
    }
    findings
}

/// What fails the test, on an admissible input: a verdict difference, a failure of one engine
/// only, or a message difference in a template not listed as worded differently. Differences
/// on other inputs are counted and their examples written (see the module's comment).
fn failing<'a>(findings: &'a Findings, worded: &[Worded]) -> Vec<&'a Found> {
    findings
        .found
        .iter()
        .filter(|f| {
            f.admissible
                && (f.kind != Difference::Message
                    || !worded.iter().any(|w| w.template == f.template))
        })
        .collect()
}

fn describe(found: &[&Found]) -> String {
    found
        .iter()
        .map(|f| serde_json::to_string_pretty(&f.report()).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

fn dual(s: &Subject) -> bool {
    s.source.cel.is_some() && !s.source.rego.is_empty()
}

// ---------------------------------------------------------------------------------------------
// The tests

#[test]
fn dual_templates_give_the_same_verdict_on_cel_and_rego() {
    let mut roots = vec![repo_path("tests/data")];
    if let Ok(extra) = std::env::var("DIFFERENTIAL_DIRS") {
        roots.extend(
            extra
                .split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
        );
    }
    let all = subjects(&roots);
    let duals: Vec<&Subject> = all.iter().filter(|s| dual(s)).collect();
    let names: BTreeSet<&str> = duals.iter().map(|s| s.name.as_str()).collect();
    for ours in [
        "k8sdualrequiredlabels",
        "k8sdualcapabilities",
        "k8sdualhostnamespaces",
        "k8sdualimmutablelabels",
    ] {
        assert!(names.contains(ours), "{ours} not found among {names:?}");
    }
    let findings = run(&duals, "dual");
    assert!(findings.skipped.is_empty(), "{:?}", findings.skipped);
    let worded = worded_differently();
    for w in &worded {
        println!("messages allowed to differ in {}: {}", w.template, w.reason);
    }
    let left = failing(&findings, &worded);
    assert!(
        left.is_empty(),
        "CEL and Rego differ (reproducers in target/cel-differential/):\n{}",
        describe(&left)
    );
}

/// The harness itself: a template whose CEL checks `>= 2` where its Rego checks `> 2` must be
/// caught, shrunk to the one field that shows it (and the metadata every object has), and
/// fail; one whose codes agree must not.
#[test]
fn the_cel_harness_catches_a_verdict_difference() {
    let template = |cel_op: &str| {
        format!(
            r#"
apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata: {{name: maxreplicas}}
spec:
  crd: {{spec: {{names: {{kind: MaxReplicas}}}}}}
  targets:
    - target: admission.k8s.gatekeeper.sh
      code:
        - engine: K8sNativeValidation
          source:
            validations:
              - expression: '!has(variables.anyObject.spec) || !has(variables.anyObject.spec.replicas) || !(variables.anyObject.spec.replicas {cel_op} 2)'
                message: too many replicas
        - engine: Rego
          source:
            rego: |
              package maxreplicas
              violation[{{"msg": "too many replicas"}}] {{
                input.review.object.spec.replicas > 2
              }}
"#
        )
    };
    let deployment = json!({
        "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "operation": "CREATE", "namespace": "shop", "name": "web", "uid": "1",
        "object": {"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
                   "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "a", "image": "nginx"}]}}}}
    });
    let subject = |text: &str| {
        let doc = palisade::manifest::parse_str(text, std::path::Path::new("maxreplicas.yaml"))
            .unwrap()
            .remove(0);
        let source = palisade::policy::template::parse(&doc).unwrap();
        Subject {
            name: source.name.clone(),
            file: PathBuf::from("maxreplicas.yaml"),
            parameters: vec![json!({})],
            constraints: vec![json!({"apiVersion": "constraints.gatekeeper.sh/v1beta1",
                                     "kind": "MaxReplicas", "metadata": {"name": "max"}})],
            source,
            bases: vec![("a deployment of 2".into(), deployment.clone(), 0)],
            inventories: vec![Vec::new()],
        }
    };
    let wrong = subject(&template(">="));
    let mut findings = Findings::default();
    run_subject(&wrong, 1, &mut Rng(1), &mut findings);
    let left = failing(&findings, &[]);
    assert_eq!(left.len(), 1, "{}", describe(&left));
    let f = left[0];
    assert_eq!(f.kind, Difference::Verdict);
    assert!(f.cel.violates() && !f.rego.violates());
    assert_eq!(
        f.review,
        json!({"operation": "CREATE", "object": {"metadata": {}, "spec": {"replicas": 2}}}),
        "a minimal reproducer"
    );

    let right = subject(&template(">"));
    let mut findings = Findings::default();
    run_subject(&right, 300, &mut Rng(1), &mut findings);
    assert_eq!(findings.templates, ["maxreplicas"]);
    assert!(findings.inputs > 200, "{} inputs", findings.inputs);
    let left = failing(&findings, &[]);
    assert!(left.is_empty(), "{}", describe(&left));
}

#[test]
fn admissible_inputs_keep_every_field_type_and_a_pods_containers() {
    let base = json!({"a": {"b": [1, 2], "c": "x", "n": null}});
    assert!(well_typed(
        &base,
        &json!({"a": {"b": [], "c": "", "d": true}})
    ));
    assert!(well_typed(&base, &json!({"a": {"b": [1, 2, 2], "n": "x"}})));
    assert!(!well_typed(&base, &json!({"a": {"b": "x"}})));
    assert!(!well_typed(&base, &json!({"a": {"b": [1, "x"]}})));
    assert!(!well_typed(&base, &json!({"a": {"c": null}})));
    assert!(!well_typed(&base, &json!({"a": {"b": [0.5]}})));
    let pod =
        json!({"object": {"kind": "Pod", "metadata": {}, "spec": {"containers": [{"name": "a"}]}}});
    let with = |spec: Value| json!({"object": {"kind": "Pod", "metadata": {}, "spec": spec}});
    assert!(admissible(
        &pod,
        &with(json!({"containers": [{"name": "b"}]}))
    ));
    assert!(!admissible(
        &pod,
        &with(json!({"containers": [{"image": "b"}]}))
    ));
    assert!(!admissible(&pod, &with(json!({"containers": []}))));
    assert!(!admissible(&pod, &with(json!({}))));
    assert!(!admissible(
        &pod,
        &json!({"object": {"kind": "Pod", "spec": {"containers": [{"name": "a"}]}}})
    ));
}
