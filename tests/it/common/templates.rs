//! Templates that misbehave at evaluation, shared by the tests of failing closed: runtime
//! errors and a slow rule (`BUNDLE`), and a memory and time hog (`HOG`).

pub const BUNDLE: &str = r#"
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
---
apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata: {name: k8sconflict}
spec:
  crd: {spec: {names: {kind: K8sConflict}}}
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package k8sconflict

        # Two values for one complete rule: an evaluation error in OPA and in regorus'
        # interpreter (regorus' VM reads it as undefined, so the template runs on the interpreter).
        conflict = 1 { input.review.object.spec.conflict }
        conflict = 2 { input.review.object.spec.conflict }

        violation[{"msg": "conflict"}] { conflict }
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sHazards
metadata: {name: hazards}
spec:
  enforcementAction: warn
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sConflict
metadata: {name: conflict}
spec:
  enforcementAction: warn
"#;

/// Builds n² strings: a few kilobytes for the warm-up, gigabytes for n = 100,000.
pub const HOG: &str = r#"
apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata: {name: k8shog}
spec:
  crd: {spec: {names: {kind: K8sHog}}}
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package k8shog

        violation[{"msg": msg}] {
          n := object.get(input.review.object.spec, "n", 3)
          all := [s | i := numbers.range(1, n)[_]; j := numbers.range(1, n)[_]; s := sprintf("%v-%v-%v", [i, j, input.review.object.metadata])]
          count(all) < 0
          msg := "never"
        }
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sHog
metadata: {name: hog}
"#;

/// A template that reads NetworkPolicies' `metadata.labels.reviewer` from `data.inventory`,
/// which the default bundle's pruning drops: the inventory-pruning tests' bundle of a reload.
pub const READS_LABELS: &str = r#"
apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata: {name: reviewedpolicies}
spec:
  crd: {spec: {names: {kind: ReviewedPolicies}}}
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package reviewedpolicies
        violation[{"msg": "bundle B"}] { true }
        violation[{"msg": msg}] {
          policy := data.inventory.namespace[input.review.object.metadata.namespace][_].NetworkPolicy[_]
          msg := sprintf("reviewed by %v", [policy.metadata.labels.reviewer])
        }
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: ReviewedPolicies
metadata: {name: reviewed}
spec:
  match: {kinds: [{apiGroups: [""], kinds: [Pod]}]}
"#;
