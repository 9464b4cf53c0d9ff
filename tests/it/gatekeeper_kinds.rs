//! Every kind of Gatekeeper's API groups, put in a bundle: it works (its effect is visible), or it
//! is refused at load with a message naming it, or (where ignoring it cannot admit anything) a
//! load warning says what Palisade does instead. Nothing is accepted and silently ignored. The
//! kinds are Gatekeeper's (its `apis/` directory, v3.21), restated here.

use std::path::Path;

use palisade::bundle::{Bundle, Process, SyncKind};
use palisade::manifest::parse_str;
use palisade::policy::EngineOptions;

const TEMPLATE: &str = r#"
apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata: {name: k8sdenyall}
spec:
  crd: {spec: {names: {kind: K8sDenyAll}}}
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package k8sdenyall
        violation[{"msg": "denied"}] { true }
"#;

enum Outcome {
    /// Loaded, and `effect` sees what it does in the bundle.
    Works(fn(&Bundle) -> bool),
    /// Refused: the load error contains the text.
    Refused(&'static str),
    /// Loaded with a warning containing the text.
    Warned(&'static str),
}

/// A Provider with a real CA certificate in its caBundle.
fn provider_doc(url: &str) -> &'static str {
    use base64::Engine as _;
    let ca = rcgen::generate_simple_self_signed(vec!["checker.example.com".to_owned()]).unwrap();
    let bundle = base64::engine::general_purpose::STANDARD.encode(ca.cert.pem());
    Box::leak(
        format!(
            "\napiVersion: externaldata.gatekeeper.sh/v1beta1\nkind: Provider\nmetadata: {{name: checker}}\nspec:\n  url: {url}\n  timeout: 2\n  caBundle: {bundle}\n"
        )
        .into_boxed_str(),
    )
}

fn load(extra: &str) -> Result<Bundle, String> {
    let text = format!("{TEMPLATE}---{extra}");
    let docs = parse_str(&text, Path::new("bundle.yaml")).map_err(|e| e.to_string())?;
    Bundle::from_documents(docs, &EngineOptions::default()).map_err(|e| e.to_string())
}

#[test]
fn every_gatekeeper_kind_works_or_is_refused_or_warned_about() {
    use Outcome::*;
    let cases: Vec<(&str, &str, Outcome)> = vec![
        (
            "constraints.gatekeeper.sh/K8sDenyAll",
            "\napiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sDenyAll\nmetadata: {name: all}\n",
            Works(|b| b.policies().constraints().len() == 1),
        ),
        (
            "templates.gatekeeper.sh/ConstraintTemplate (a second one)",
            "\napiVersion: templates.gatekeeper.sh/v1beta1\nkind: ConstraintTemplate\nmetadata: {name: k8sother}\nspec:\n  crd: {spec: {names: {kind: K8sOther}}}\n  targets: [{target: admission.k8s.gatekeeper.sh, rego: \"package k8sother\\nviolation[{\\\"msg\\\": \\\"x\\\"}] { false }\"}]\n",
            Works(|b| b.policies().templates().count() == 2),
        ),
        (
            "templates.gatekeeper.sh/Template (no such kind)",
            "\napiVersion: templates.gatekeeper.sh/v1\nkind: Template\nmetadata: {name: x}\n",
            Refused("templates.gatekeeper.sh has no kind Template"),
        ),
        (
            "mutations.gatekeeper.sh/Assign",
            "\napiVersion: mutations.gatekeeper.sh/v1\nkind: Assign\nmetadata: {name: a}\nspec:\n  applyTo: [{groups: [\"\"], kinds: [Pod], versions: [v1]}]\n  location: spec.priority\n  parameters: {assign: {value: 1}}\n",
            Works(|b| b.mutators().len() == 1),
        ),
        (
            "mutations.gatekeeper.sh/AssignMetadata",
            "\napiVersion: mutations.gatekeeper.sh/v1\nkind: AssignMetadata\nmetadata: {name: m}\nspec:\n  location: metadata.labels.owner\n  parameters: {assign: {value: platform}}\n",
            Works(|b| b.mutators().len() == 1),
        ),
        (
            "mutations.gatekeeper.sh/ModifySet",
            "\napiVersion: mutations.gatekeeper.sh/v1\nkind: ModifySet\nmetadata: {name: s}\nspec:\n  applyTo: [{groups: [\"\"], kinds: [Pod], versions: [v1]}]\n  location: spec.containers[name:*].args\n  parameters: {operation: merge, values: {fromList: [--safe]}}\n",
            Works(|b| b.mutators().len() == 1),
        ),
        (
            "mutations.gatekeeper.sh/AssignImage",
            "\napiVersion: mutations.gatekeeper.sh/v1alpha1\nkind: AssignImage\nmetadata: {name: i}\nspec:\n  applyTo: [{groups: [\"\"], kinds: [Pod], versions: [v1]}]\n  location: spec.containers[name:*].image\n  parameters: {assignDomain: registry.example.com}\n",
            Refused("kind AssignImage is not a supported mutator"),
        ),
        (
            "config.gatekeeper.sh/Config (sync)",
            "\napiVersion: config.gatekeeper.sh/v1alpha1\nkind: Config\nmetadata: {name: config, namespace: gatekeeper-system}\nspec:\n  sync:\n    syncOnly: [{group: \"\", version: v1, kind: Namespace}]\n",
            Works(|b| b.sync_only() == Some(&[SyncKind::namespace()][..])),
        ),
        (
            "config.gatekeeper.sh/Config (match)",
            "\napiVersion: config.gatekeeper.sh/v1alpha1\nkind: Config\nmetadata: {name: config, namespace: gatekeeper-system}\nspec:\n  match: [{excludedNamespaces: [legacy], processes: [webhook]}]\n",
            Works(|b| {
                b.excludes(Process::Webhook, "legacy") && !b.excludes(Process::Audit, "legacy")
            }),
        ),
        (
            "config.gatekeeper.sh/Config (match with a wildcard)",
            "\napiVersion: config.gatekeeper.sh/v1alpha1\nkind: Config\nmetadata: {name: config, namespace: gatekeeper-system}\nspec:\n  match: [{excludedNamespaces: [kube-*], processes: [\"*\"]}]\n",
            Warned("whoever may create a namespace so named escapes"),
        ),
        (
            "config.gatekeeper.sh/Config (match for sync)",
            "\napiVersion: config.gatekeeper.sh/v1alpha1\nkind: Config\nmetadata: {name: config, namespace: gatekeeper-system}\nspec:\n  match: [{excludedNamespaces: [legacy], processes: [sync]}]\n",
            Warned("the sync process is not applied"),
        ),
        (
            "config.gatekeeper.sh/Config (match for an unknown process)",
            "\napiVersion: config.gatekeeper.sh/v1alpha1\nkind: Config\nmetadata: {name: config, namespace: gatekeeper-system}\nspec:\n  match: [{excludedNamespaces: [legacy], processes: [validation]}]\n",
            Refused("spec.match[0].processes: \"validation\" is not one of"),
        ),
        (
            "config.gatekeeper.sh/Config (validation traces)",
            "\napiVersion: config.gatekeeper.sh/v1alpha1\nkind: Config\nmetadata: {name: config}\nspec:\n  validation: {traces: [{user: alice, kind: {group: \"\", version: v1, kind: Pod}}]}\n",
            Warned("spec.validation (traces) is not read"),
        ),
        (
            "syncset.gatekeeper.sh/SyncSet",
            "\napiVersion: syncset.gatekeeper.sh/v1alpha1\nkind: SyncSet\nmetadata: {name: ingresses}\nspec:\n  gvks: [{group: networking.k8s.io, version: v1, kind: Ingress}]\n",
            Works(|b| {
                b.sync_only() == Some(&[SyncKind::new("networking.k8s.io", "v1", "Ingress")][..])
            }),
        ),
        (
            "expansion.gatekeeper.sh/ExpansionTemplate",
            "\napiVersion: expansion.gatekeeper.sh/v1beta1\nkind: ExpansionTemplate\nmetadata: {name: workloads}\nspec:\n  applyTo: [{groups: [apps], kinds: [Deployment], versions: [v1]}]\n  templateSource: spec.template\n  generatedGVK: {group: \"\", version: v1, kind: Pod}\n",
            Works(|b| b.expansions().expands("apps", "v1", "Deployment")),
        ),
        (
            "expansion.gatekeeper.sh/ExpansionTemplate (scoped)",
            "\napiVersion: expansion.gatekeeper.sh/v1beta1\nkind: ExpansionTemplate\nmetadata: {name: workloads}\nspec:\n  applyTo: [{groups: [apps], kinds: [Deployment], versions: [v1]}]\n  templateSource: spec.template\n  generatedGVK: {group: \"\", version: v1, kind: Pod}\n  enforcementAction: scoped\n",
            Refused("enforcementAction"),
        ),
        (
            "externaldata.gatekeeper.sh/Provider",
            provider_doc("https://checker.example.com/validate"),
            Works(|b| !b.providers().is_empty()),
        ),
        (
            "externaldata.gatekeeper.sh/Provider (http)",
            provider_doc("http://checker.example.com/validate"),
            Refused("https"),
        ),
        (
            "connection.gatekeeper.sh/Connection",
            "\napiVersion: connection.gatekeeper.sh/v1alpha1\nkind: Connection\nmetadata: {name: audit}\nspec: {driver: disk, config: {path: /tmp/violations}}\n",
            Warned("a Connection exports Gatekeeper's violations"),
        ),
        (
            "gvkmanifest.gatekeeper.sh/GVKManifest",
            "\napiVersion: gvkmanifest.gatekeeper.sh/v1alpha1\nkind: GVKManifest\nmetadata: {name: m}\nspec: {groups: []}\n",
            Refused("GVKManifest (gator's schema manifest"),
        ),
        (
            "status.gatekeeper.sh/ConstraintPodStatus",
            "\napiVersion: status.gatekeeper.sh/v1beta1\nkind: ConstraintPodStatus\nmetadata: {name: s}\n",
            Refused("status.gatekeeper.sh has no kinds a bundle may hold"),
        ),
        (
            "status.gatekeeper.sh/MutatorPodStatus",
            "\napiVersion: status.gatekeeper.sh/v1beta1\nkind: MutatorPodStatus\nmetadata: {name: s}\n",
            Refused("status.gatekeeper.sh has no kinds a bundle may hold"),
        ),
    ];
    for (name, doc, outcome) in cases {
        let loaded = load(doc);
        match (outcome, loaded) {
            (Works(effect), Ok(bundle)) => {
                assert!(effect(&bundle), "{name}: loaded, but without its effect");
                assert!(
                    bundle.warnings().is_empty(),
                    "{name}: {:?}",
                    bundle.warnings()
                );
            }
            (Refused(says), Err(error)) => {
                assert!(error.contains(says), "{name}: {error}")
            }
            (Warned(says), Ok(bundle)) => {
                let warnings: Vec<String> =
                    bundle.warnings().iter().map(|w| w.to_string()).collect();
                assert!(
                    warnings.iter().any(|w| w.contains(says)),
                    "{name}: {warnings:?}"
                );
            }
            (Works(_), Err(e)) | (Warned(_), Err(e)) => panic!("{name}: refused: {e}"),
            (Refused(says), Ok(_)) => panic!("{name}: loaded, expected a refusal ({says})"),
        }
    }
}

/// A Config's `spec.match` over HTTPS: each process skips only what it names, a Namespace is
/// matched by its own name, and look-alike names are not excluded.
#[tokio::test]
async fn a_configs_match_takes_namespaces_out_of_the_processes_it_names() {
    use crate::common::*;
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("bundle");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::copy(
        repo_path("tests/data/gatekeeper/required-labels/template.yaml"),
        policies.join("template.yaml"),
    )
    .unwrap();
    std::fs::write(
        policies.join("policies.yaml"),
        r#"
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sRequiredLabels
metadata: {name: owner}
spec:
  match:
    kinds: [{apiGroups: [""], kinds: [Pod, Namespace]}]
  parameters:
    labels: [{key: owner}]
---
apiVersion: mutations.gatekeeper.sh/v1
kind: AssignMetadata
metadata: {name: stamp}
spec:
  location: metadata.labels.stamped
  parameters: {assign: {value: "yes"}}
---
apiVersion: config.gatekeeper.sh/v1alpha1
kind: Config
metadata: {name: config, namespace: gatekeeper-system}
spec:
  match:
    - excludedNamespaces: [legacy]
      processes: [webhook]
    - excludedNamespaces: [batch-*]
      processes: [mutation-webhook]
"#,
    )
    .unwrap();
    let policies = policies.display().to_string();
    let server = TestServer::start_in(dir, &["--policies", &policies]).await;
    let client = server.client();
    let review = |ns: &str, kind: &str| {
        let object = if kind == "Namespace" {
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        } else {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": ns},
                   "spec": {"containers": [{"name": "c", "image": "registry.example.com/c:1"}]}})
        };
        edited_review("validate-create-pod.json", |r| {
            r["request"]["namespace"] = if kind == "Namespace" {
                json!("")
            } else {
                json!(ns)
            };
            r["request"]["kind"]["kind"] = json!(kind);
            r["request"]["resource"]["resource"] = json!(if kind == "Namespace" {
                "namespaces"
            } else {
                "pods"
            });
            r["request"]["name"] = object["metadata"]["name"].clone();
            r["request"]["object"] = object;
        })
    };
    for proto in [Proto::Http1, Proto::Http2] {
        let allowed = |rsp: &serde_json::Value| rsp["allowed"].as_bool().unwrap();
        // The validating webhook skips `legacy`, its Pods and the Namespace itself, nothing else.
        for (ns, kind, admitted) in [
            ("legacy", "Pod", true),
            ("legacy", "Namespace", true),
            ("legacy2", "Pod", false),
            ("Legacy", "Namespace", false),
            ("payments", "Pod", false),
            ("batch-1", "Pod", false),
        ] {
            let rsp = client.review(proto, "/validate", &review(ns, kind)).await;
            assert_eq!(allowed(&rsp), admitted, "{ns} {kind}: {rsp}");
        }
        // The mutating webhook skips `batch-*` only.
        for (ns, stamped) in [
            ("batch-1", false),
            ("batch", true),
            ("legacy", true),
            ("payments", true),
        ] {
            let rsp = client.review(proto, "/mutate", &review(ns, "Pod")).await;
            let patch = decoded_patch(&rsp);
            assert_eq!(
                patch.iter().any(|p| p.to_string().contains("stamped")),
                stamped,
                "{ns}: {patch:?}"
            );
        }
    }
}
