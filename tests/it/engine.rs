//! Evaluation failures fail closed: an error, or a template that runs past the time limit,
//! becomes a violation of its constraint that says what happened.

use std::path::Path;
use std::time::Duration;

use palisade::admission::Review;
use palisade::bundle::Bundle;
use palisade::inventory::Inventory;
use palisade::manifest::parse_str;
use palisade::policy::{Action, EngineOptions, FailureKind, Violation};

use crate::common::templates::{BUNDLE, HOG};
use crate::common::validate;

fn evaluate(bundle: &Bundle, review: &Review) -> Vec<Violation> {
    validate(bundle, &Inventory::default(), review)
}
use serde_json::json;

/// The hazards bundle with the VM on and off: both must fail closed the same way.
fn sets(timeout: Duration) -> Vec<Bundle> {
    [true, false]
        .map(|vm| {
            let docs = parse_str(BUNDLE, Path::new("hazards.yaml")).unwrap();
            let options = EngineOptions {
                eval_timeout: timeout,
                vm,
                ..EngineOptions::default()
            };
            let set = Bundle::from_documents(docs, &options).unwrap();
            for t in set.policies().templates() {
                let expected = vm && t.kind == "K8sHazards";
                assert_eq!(t.on_vm(), expected, "{}", t.kind);
            }
            set
        })
        .into()
}

fn object(spec: serde_json::Value) -> Review {
    Review::from_object(json!({"apiVersion": "example.com/v1", "kind": "Thing",
        "metadata": {"name": "t", "namespace": "ns"}, "spec": spec}))
}

#[test]
fn a_template_past_the_time_limit_is_a_violation() {
    for set in sets(Duration::from_millis(50)) {
        let started = std::time::Instant::now();
        let violations = evaluate(&set, &object(json!({"n": 2000})));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the time limit did not stop evaluation"
        );
        assert_eq!(violations.len(), 1, "{violations:?}");
        let v = &violations[0];
        assert_eq!(v.constraint, "hazards");
        assert_eq!(v.failure, Some(FailureKind::Timeout));
        assert_eq!(
            v.action,
            Action::Warn,
            "the constraint's own action applies"
        );
        assert!(
            v.message.starts_with("policy evaluation failed: ")
                && v.message.to_lowercase().contains("exceeded time limit"),
            "{}",
            v.message
        );
        assert!(evaluate(&set, &object(json!({"n": 3}))).is_empty());
    }
}

#[test]
fn an_evaluation_error_is_a_violation() {
    for set in sets(Duration::from_secs(1)) {
        let violations = evaluate(&set, &object(json!({"conflict": true})));
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].constraint, "conflict");
        assert_eq!(
            violations[0].message,
            "policy evaluation failed: k8sconflict.rego:5: eval_conflict_error: complete rules must not produce multiple outputs"
        );
        assert_eq!(
            violations[0].failure,
            Some(FailureKind::Engine),
            "{}",
            violations[0].message
        );
    }
}

#[test]
fn a_bad_mutator_is_a_load_error_naming_file_document_and_field() {
    let yaml = "apiVersion: mutations.gatekeeper.sh/v1\nkind: AssignMetadata\nmetadata: {name: ok}\nspec:\n  location: metadata.labels.a\n  parameters: {assign: {value: b}}\n---\napiVersion: mutations.gatekeeper.sh/v1\nkind: Assign\nmetadata: {name: broken}\nspec:\n  applyTo: [{groups: [\"\"], kinds: [Pod], versions: [v1]}]\n  location: \"spec.containers[name: *.image\"\n  parameters: {assign: {value: x}}\n";
    let docs = parse_str(yaml, Path::new("policies/mutators.yaml")).unwrap();
    let err = Bundle::from_documents(docs, &EngineOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Assign \"broken\" at policies/mutators.yaml (document 2): spec.location \"spec.containers[name: *.image\": position 23: expected ']'"),
        "{err}"
    );
}

#[test]
fn a_template_the_vm_cannot_compile_runs_on_the_interpreter_and_still_fails_closed() {
    // The call is reached only with spec.callUnknown: the interpreter loads the template, the VM
    // cannot compile it.
    let yaml = BUNDLE.replace(
        r#"i + j + k < 0
        }"#,
        r#"i + j + k < 0
        }

        violation[{"msg": "unreachable"}] { input.review.object.spec.callUnknown; no.such.function(1) }"#,
    );
    let docs = parse_str(&yaml, Path::new("hazards.yaml")).unwrap();
    let set = Bundle::from_documents(docs, &EngineOptions::default()).unwrap();
    assert!(set.policies().templates().all(|t| !t.on_vm()));
    let violations = evaluate(&set, &object(json!({"callUnknown": true})));
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(
        violations[0].message.contains("no.such.function"),
        "{}",
        violations[0].message
    );
    assert!(evaluate(&set, &object(json!({"n": 2}))).is_empty());
}

#[test]
fn a_template_allocating_past_the_memory_limit_is_a_violation() {
    let docs = parse_str(HOG, Path::new("hog.yaml")).unwrap();
    let options = EngineOptions {
        eval_timeout: Duration::from_secs(30),
        eval_memory: std::num::NonZeroU64::new(32 << 20),
        ..EngineOptions::default()
    };
    let set = Bundle::from_documents(docs, &options).unwrap();
    assert!(set.policies().templates().all(|t| t.on_vm()));
    let violations = evaluate(&set, &object(json!({"n": 100_000})));
    assert_eq!(violations.len(), 1, "{violations:?}");
    let v = &violations[0];
    assert_eq!(v.failure, Some(FailureKind::Memory), "{}", v.message);
    assert_eq!(v.action, Action::Deny);
    assert!(
        v.message
            .starts_with("policy evaluation failed: allocated ")
            && v.message
                .ends_with("of the 32.0 MiB one evaluation may (--eval-memory-limit)"),
        "{}",
        v.message
    );
    // The next review on the same thread (and pooled VM) is judged normally.
    assert!(evaluate(&set, &object(json!({"n": 3}))).is_empty());
}

#[test]
fn a_template_that_recurses_is_refused_when_the_bundle_loads() {
    for (name, rego) in [
        (
            "function",
            "package k8srec\n\nf(x) = y { y := f(x) }\n\nviolation[{\"msg\": m}] { m := f(input.review.object.metadata.name) }\n",
        ),
        (
            "rules",
            "package k8srec\n\na { b }\n\nb { a }\n\nviolation[{\"msg\": \"x\"}] { a }\n",
        ),
    ] {
        let yaml = format!(
            "apiVersion: templates.gatekeeper.sh/v1\nkind: ConstraintTemplate\nmetadata: {{name: k8srec}}\nspec:\n  crd: {{spec: {{names: {{kind: K8sRec}}}}}}\n  targets:\n    - target: admission.k8s.gatekeeper.sh\n      rego: |\n{}",
            rego.lines()
                .map(|l| format!("        {l}\n"))
                .collect::<String>()
        );
        let docs = parse_str(&yaml, Path::new("rec.yaml")).unwrap();
        for vm in [true, false] {
            let options = EngineOptions {
                vm,
                ..EngineOptions::default()
            };
            let err = Bundle::from_documents(docs.clone(), &options)
                .expect_err(&format!("a recursive {name} loaded (vm: {vm})"));
            let text = err.to_string();
            assert!(
                text.contains("ConstraintTemplate \"k8srec\"")
                    && text.to_lowercase().contains("recursi"),
                "{name}: {text}"
            );
        }
    }
}

/// Patterns that make a backtracking matcher take exponential time on a near-miss, and one whose
/// compiled form is enormous. The template reads the pattern, the glob and the name from the
/// object, as a policy reading a constraint's parameters or a tenant's labels would.
const PATTERNS: &str = r#"
apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata: {name: k8spatterns}
spec:
  crd: {spec: {names: {kind: K8sPatterns}}}
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package k8spatterns

        violation[{"msg": "regex"}] {
          p := input.review.object.spec.regex
          regex.match(p, input.review.object.spec.name)
        }

        violation[{"msg": "glob"}] {
          g := input.review.object.spec.glob
          glob.match(g, [], input.review.object.spec.name)
        }
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sPatterns
metadata: {name: patterns}
"#;

#[test]
fn regexes_and_globs_that_would_backtrack_are_decided_in_linear_time() {
    // 20 s is far beyond what a linear matcher needs even in a debug build, and far below what a
    // backtracking one would (2^40000 steps): a timeout failure here means backtracking.
    let options = EngineOptions {
        eval_timeout: Duration::from_secs(20),
        ..EngineOptions::default()
    };
    for vm in [true, false] {
        let docs = parse_str(PATTERNS, Path::new("patterns.yaml")).unwrap();
        let set = Bundle::from_documents(
            docs,
            &EngineOptions {
                vm,
                ..options.clone()
            },
        )
        .unwrap();
        let near_miss = format!("{}!", "a".repeat(40_000));
        for (regex, glob) in [
            ("^(a+)+$", "*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b"),
            ("^(a|aa)+$", "a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*[!a!]"),
            ("^(a|a?)+$", "**************************b"),
        ] {
            let violations = evaluate(
                &set,
                &object(json!({"regex": regex, "glob": glob, "name": near_miss})),
            );
            assert!(
                violations.is_empty(),
                "{regex} / {glob} (vm: {vm}): {violations:?}"
            );
        }
        // The same patterns still match what they should.
        let violations = evaluate(
            &set,
            &object(json!({"regex": "^(a+)+$", "glob": "*a*b", "name": "aaab"})),
        );
        let messages: Vec<&str> = violations.iter().map(|v| v.message.as_str()).collect();
        assert_eq!(messages, ["glob"], "vm: {vm}");
        // A pattern whose compiled form is too large is an error of the constraint, not an
        // allocation without bound.
        let violations = evaluate(
            &set,
            &object(json!({"regex": "((((a{100}){100}){100}){100})", "glob": "x", "name": "a"})),
        );
        assert_eq!(violations.len(), 1, "vm: {vm}: {violations:?}");
        assert_eq!(
            violations[0].failure,
            Some(FailureKind::Engine),
            "{}",
            violations[0].message
        );
        assert!(
            violations[0].message.contains("size limit"),
            "{}",
            violations[0].message
        );
    }
}

/// regorus' VM (0.14) skips an `else` after a body whose assignment reads something undefined
/// (`m := o.message } else := d`), making the whole rule or function undefined where OPA takes
/// the `else`: a violation that carries the default is lost and the review admitted. Such
/// templates run on the interpreter, which answers as OPA (whose answers are written here).
#[test]
fn an_else_after_an_assignment_of_nothing_is_taken_as_in_opa() {
    let yaml = r#"
apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata: {name: k8selseafterassignment}
spec:
  crd: {spec: {names: {kind: K8sElseAfterAssignment}}}
  targets:
  - target: admission.k8s.gatekeeper.sh
    rego: |
      package k8selseafterassignment
      pick(o, d) = m {
        m := o.message
      } else = d
      label = m {
        m := input.review.object.metadata.labels.owner
      } else = "no owner"
      violation[{"msg": msg}] {
        msg := pick(input.parameters, "the default message")
      }
      violation[{"msg": label}] {
        true
      }
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sElseAfterAssignment
metadata: {name: e}
spec:
  match: {kinds: [{apiGroups: ["example.com"], kinds: ["Thing"]}]}
  parameters: {other: 1}
"#;
    for vm in [true, false] {
        let docs = parse_str(yaml, Path::new("else.yaml")).unwrap();
        let options = EngineOptions {
            vm,
            ..EngineOptions::default()
        };
        let set = Bundle::from_documents(docs, &options).unwrap();
        assert!(set.policies().templates().all(|t| !t.on_vm()));
        let mut messages: Vec<String> = evaluate(&set, &object(json!({})))
            .into_iter()
            .map(|v| v.message)
            .collect();
        messages.sort();
        assert_eq!(messages, ["no owner", "the default message"], "vm: {vm}");
    }
}
