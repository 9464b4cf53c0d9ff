//! Evaluation failures fail closed: an error, or a template that runs past the time limit,
//! becomes a violation of its constraint that says what happened.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use palisade::admission::Review;
use palisade::inventory::Inventory;
use palisade::policy::source::parse_str;
use palisade::policy::{Action, EngineOptions, PolicySet};
use serde_json::json;

const BUNDLE: &str = r#"
apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata: {name: k8shazards}
spec:
  crd: {spec: {names: {kind: K8sHazards}}}
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package k8shazards

        # Cubic in spec.n: quick for the warm-up's empty input, endless for n = 2000.
        violation[{"msg": "never"}] {
          n := input.review.object.spec.n
          numbers.range(1, n)[i]
          numbers.range(1, n)[j]
          numbers.range(1, n)[k]
          i + j + k < 0
        }

        violation[{"msg": "unknown function reached"}] {
          input.review.object.spec.callUnknown
          no.such.function(1)
        }
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sHazards
metadata: {name: hazards}
spec:
  enforcementAction: warn
"#;

fn set(timeout: Duration) -> PolicySet {
    let docs = parse_str(BUNDLE, Path::new("hazards.yaml")).unwrap();
    PolicySet::from_documents(
        docs,
        &EngineOptions {
            eval_timeout: timeout,
        },
        Arc::new(Inventory::default()),
    )
    .unwrap()
}

fn object(spec: serde_json::Value) -> Review {
    Review::from_object(json!({"apiVersion": "example.com/v1", "kind": "Thing",
        "metadata": {"name": "t", "namespace": "ns"}, "spec": spec}))
}

#[test]
fn a_template_past_the_time_limit_is_a_violation() {
    let set = set(Duration::from_millis(50));
    let started = std::time::Instant::now();
    let violations = set.evaluate(&object(json!({"n": 2000})));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the time limit did not stop evaluation"
    );
    assert_eq!(violations.len(), 1, "{violations:?}");
    let v = &violations[0];
    assert_eq!(v.constraint, "hazards");
    assert_eq!(
        v.action,
        Action::Warn,
        "the constraint's own action applies"
    );
    assert!(
        v.message
            .starts_with("policy evaluation failed: execution exceeded time limit"),
        "{}",
        v.message
    );
    assert!(set.evaluate(&object(json!({"n": 3}))).is_empty());
}

#[test]
fn an_evaluation_error_is_a_violation() {
    let set = set(Duration::from_secs(1));
    let violations = set.evaluate(&object(json!({"callUnknown": true})));
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(
        violations[0]
            .message
            .starts_with("policy evaluation failed:"),
        "{}",
        violations[0].message
    );
    assert!(
        violations[0].message.contains("no.such.function"),
        "{}",
        violations[0].message
    );
}

#[test]
fn a_bad_mutator_is_a_load_error_naming_file_document_and_field() {
    let yaml = "apiVersion: mutations.gatekeeper.sh/v1\nkind: AssignMetadata\nmetadata: {name: ok}\nspec:\n  location: metadata.labels.a\n  parameters: {assign: {value: b}}\n---\napiVersion: mutations.gatekeeper.sh/v1\nkind: Assign\nmetadata: {name: broken}\nspec:\n  applyTo: [{groups: [\"\"], kinds: [Pod], versions: [v1]}]\n  location: \"spec.containers[name: *.image\"\n  parameters: {assign: {value: x}}\n";
    let docs = parse_str(yaml, Path::new("policies/mutators.yaml")).unwrap();
    let err = PolicySet::from_documents(
        docs,
        &EngineOptions::default(),
        Arc::new(Inventory::default()),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("Assign \"broken\" at policies/mutators.yaml (document 2): spec.location \"spec.containers[name: *.image\": position 23: expected ']'"),
        "{err}"
    );
}
