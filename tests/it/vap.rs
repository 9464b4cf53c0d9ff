//! Generated ValidatingAdmissionPolicies (`policy::vap`, `palisade manifests --config`): they
//! validate against Kubernetes' schemas, every expression compiles in Palisade's CEL, they judge
//! every case as the webhook does (selectors, match conditions, messages, UPDATE and DELETE) on
//! the CEL suite's template and objects, a required-labels template of the kind the
//! gatekeeper-library writes in CEL (tests/data/cel/owner-labels), and templates of this file, and no configuration leaves a constraint judged
//! by nobody.
//!
//! No API server runs here: the API server's side is `policy::cel::AdmissionPolicy`, which
//! evaluates a policy's own spec, plus the binding's selectors and rules evaluated below as
//! Kubernetes defines them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use palisade::admission::{Endpoint, Review};
use palisade::bundle::Bundle;
use palisade::config::Config;
use palisade::decide::Decider;
use palisade::inventory::Inventory;
use palisade::matcher::LabelSelector;
use palisade::policy::EngineOptions;
use palisade::policy::cel::{AdmissionPolicy, PolicyVerdict};
use palisade::policy::vap::{self, Generated};
use serde_json::{Value, json};

use crate::common::{palisade_cli, repo_path};

/// A CEL template that judges UPDATE and DELETE too: objects labelled `protected` may be
/// created, not changed or deleted.
const PROTECTED_TEMPLATE: &str = r#"
apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: k8scelprotected
spec:
  crd:
    spec:
      names:
        kind: K8sCelProtected
  targets:
    - target: admission.k8s.gatekeeper.sh
      operations: ["CREATE", "UPDATE", "DELETE"]
      code:
        - engine: K8sNativeValidation
          source:
            validations:
              - expression: |
                  request.operation == "CREATE" || !has(variables.anyObject.metadata.labels) ||
                  !("protected" in variables.anyObject.metadata.labels)
                messageExpression: |
                  "protected by " + variables.params.owner + ": no " + request.operation + " of " + variables.anyObject.metadata.name
"#;

/// Constraints of the CEL suite's template (tests/data/gatekeeper/cel) and of the one above,
/// with every matcher a binding or a match condition must carry.
const CONSTRAINTS: &str = r#"
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sCelAllowedRepos
metadata: {name: in-pay}
spec:
  match:
    kinds: [{apiGroups: [""], kinds: [Pod]}]
    namespaces: ["pay*"]
  parameters: {repos: ["registry.example.com/", "ghcr.io/example/"], forbidLatest: true}
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sCelAllowedRepos
metadata: {name: not-legacy}
spec:
  match:
    excludedNamespaces: ["legacy", "*-tmp"]
  parameters: {repos: ["registry.example.com/"]}
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sCelAllowedRepos
metadata: {name: web-tier}
spec:
  match:
    kinds: [{apiGroups: [""], kinds: [Pod]}]
    labelSelector: {matchLabels: {tier: web}}
  parameters: {repos: ["ghcr.io/example/"]}
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sCelAllowedRepos
metadata: {name: web-names}
spec:
  match:
    kinds: [{apiGroups: [""], kinds: [Pod]}]
    name: "web-*"
  parameters: {repos: ["registry.example.com/"], forbidLatest: true}
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sCelAllowedRepos
metadata: {name: prod-namespaces}
spec:
  match:
    kinds: [{apiGroups: [""], kinds: [Pod]}]
    namespaceSelector:
      matchExpressions: [{key: env, operator: In, values: [prod]}]
  parameters: {repos: ["ghcr.io/example/"]}
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sCelAllowedRepos
metadata: {name: warn-namespaced}
spec:
  enforcementAction: warn
  match:
    scope: Namespaced
    kinds: [{apiGroups: ["*"], kinds: ["*"]}]
  parameters: {repos: ["registry.example.com/"]}
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sCelAllowedRepos
metadata: {name: scoped-to-vap}
spec:
  enforcementAction: scoped
  scopedEnforcementActions:
    - action: deny
      enforcementPoints: [{name: validation.gatekeeper.sh}, {name: vap.k8s.io}]
  match:
    kinds: [{apiGroups: [""], kinds: [Pod]}]
    namespaces: ["*-tmp", "default"]
  parameters: {repos: ["registry.example.com/"]}
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sCelProtected
metadata: {name: protected-objects}
spec:
  match:
    kinds: [{apiGroups: [""], kinds: [Pod, ConfigMap]}]
  parameters: {owner: sre}
---
apiVersion: config.gatekeeper.sh/v1alpha1
kind: Config
metadata: {name: config, namespace: gatekeeper-system}
spec:
  match:
    - excludedNamespaces: ["scratch-*"]
      processes: ["webhook"]
"#;

/// A Rego template and its constraint, placed on the API server in some tests.
fn rego_docs() -> String {
    let template = std::fs::read_to_string(repo_path(
        "tests/data/gatekeeper/allowed-repos/template.yaml",
    ))
    .unwrap();
    format!(
        "{template}\n---\napiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sAllowedRepos\nmetadata: {{name: rego-repos}}\nspec:\n  match:\n    kinds: [{{apiGroups: [\"\"], kinds: [Pod]}}]\n  parameters: {{repos: [\"registry.example.com/\"]}}\n"
    )
}

/// The test bundle's files: the CEL suite's template and constraint, the template above, the
/// constraints above and a Rego template with its constraint.
fn policy_files() -> Vec<(String, String)> {
    let read = |p: &str| std::fs::read_to_string(repo_path(p)).unwrap();
    vec![
        (
            "cel-template.yaml".into(),
            read("tests/data/gatekeeper/cel/template.yaml"),
        ),
        (
            "cel-constraint.yaml".into(),
            read("tests/data/gatekeeper/cel/constraint.yaml"),
        ),
        ("protected.yaml".into(), PROTECTED_TEMPLATE.into()),
        ("constraints.yaml".into(), CONSTRAINTS.into()),
        ("rego.yaml".into(), rego_docs()),
        (
            "owner-labels-template.yaml".into(),
            read("tests/data/cel/owner-labels/template.yaml"),
        ),
        (
            "owner-labels-constraint.yaml".into(),
            read("tests/data/cel/owner-labels/constraint.yaml"),
        ),
    ]
}

fn bundle_of(files: &[(String, String)]) -> Bundle {
    let mut docs = Vec::new();
    for (name, text) in files {
        docs.extend(palisade::manifest::parse_str(text, Path::new(name)).unwrap());
    }
    Bundle::from_documents(docs, &EngineOptions::default()).unwrap()
}

fn bundle() -> Bundle {
    bundle_of(&policy_files())
}

fn config(yaml: &str) -> Config {
    Config::parse(yaml, "config.yaml").unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

/// Every CEL constraint of the test bundle on the API server.
const ALL_ON_API_SERVER: &str = "validatingAdmissionPolicies:\n  placement: apiServer\n";

const NAMESPACES: [(&str, &[(&str, &str)]); 7] = [
    ("payments", &[("env", "prod")]),
    ("legacy", &[]),
    ("team-tmp", &[("env", "prod")]),
    ("default", &[]),
    ("scratch-1", &[("env", "prod")]),
    ("kube-system", &[]),
    ("shop", &[("env", "dev")]),
];

fn namespace(name: &str) -> Value {
    let labels = NAMESPACES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, l)| *l)
        .unwrap_or(&[]);
    let mut map = serde_json::Map::new();
    map.insert("kubernetes.io/metadata.name".into(), json!(name));
    for (k, v) in labels {
        map.insert((*k).into(), json!(v));
    }
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": map}})
}

fn inventory() -> Inventory {
    Inventory::from_objects(NAMESPACES.iter().map(|(n, _)| namespace(n)))
}

/// An AdmissionRequest as the API server sends it: `object` null on DELETE.
fn request(operation: &str, object: Option<&Value>, old: Option<&Value>) -> Value {
    let any = object.or(old).unwrap();
    let (group, version) = match any["apiVersion"].as_str().unwrap().split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", any["apiVersion"].as_str().unwrap()),
    };
    let kind = any["kind"].as_str().unwrap();
    let resource = palisade::webhooks::resource_of(group, kind);
    let is_namespace = group.is_empty() && kind == "Namespace";
    json!({
        "uid": "0d7b4f1c-vap",
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource},
        "requestKind": {"group": group, "version": version, "kind": kind},
        "name": any["metadata"]["name"],
        "namespace": if is_namespace { any["metadata"]["name"].clone() } else { any["metadata"]["namespace"].clone() },
        "operation": operation,
        "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
        "object": object.cloned().unwrap_or(Value::Null),
        "oldObject": old.cloned().unwrap_or(Value::Null),
        "dryRun": false,
        "options": null,
    })
}

/// The review cases: the CEL suite's objects and a captured review, moved through namespaces,
/// labels and names, each created, updated (from another labelling) and deleted; Namespaces
/// and ConfigMaps too.
fn cases() -> Vec<(String, Value)> {
    let read = |p: &str| -> Value {
        let text = std::fs::read_to_string(repo_path(p)).unwrap();
        yaml_serde::from_str(&text).unwrap()
    };
    let pods = [
        read("tests/data/gatekeeper/allowed-repos/samples/trusted.yaml"),
        read("tests/data/gatekeeper/allowed-repos/samples/two-untrusted.yaml"),
        read("tests/data/gatekeeper/cel/samples/latest.yaml"),
        read("tests/data/gatekeeper/cel/samples/system.yaml"),
        read("tests/data/admission/validate-create-pod.json")["request"]["object"].clone(),
    ];
    let mut objects = Vec::new();
    for pod in &pods {
        for (ns, _) in NAMESPACES {
            for tier in [None, Some("web")] {
                for name in [None, Some("web-1")] {
                    let mut p = pod.clone();
                    p["metadata"]["namespace"] = json!(ns);
                    if let Some(name) = name {
                        p["metadata"]["name"] = json!(name);
                    }
                    if let Some(tier) = tier {
                        p["metadata"]["labels"]["tier"] = json!(tier);
                    }
                    objects.push(p);
                }
            }
        }
    }
    for sample in ["owned", "unowned", "bad-owner"] {
        objects.push(read(&format!(
            "tests/data/cel/owner-labels/samples/{sample}.yaml"
        )));
    }
    for (ns, _) in NAMESPACES {
        objects.push(namespace(ns));
        for protected in [false, true] {
            let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": ns}, "data": {"a": "b"}});
            if protected {
                cm["metadata"]["labels"] = json!({"protected": "yes"});
            }
            objects.push(cm);
        }
    }
    let mut cases = Vec::new();
    for o in &objects {
        let what = format!(
            "{} {}/{} labels {}",
            o["kind"].as_str().unwrap(),
            o["metadata"]["namespace"].as_str().unwrap_or(""),
            o["metadata"]["name"].as_str().unwrap(),
            o["metadata"]["labels"]
        );
        let mut relabelled = o.clone();
        match relabelled["metadata"]["labels"].as_object_mut() {
            Some(labels) if !labels.is_empty() => {
                labels.clear();
            }
            _ => relabelled["metadata"]["labels"] = json!({"tier": "web", "protected": "yes"}),
        }
        cases.push((format!("CREATE {what}"), request("CREATE", Some(o), None)));
        cases.push((
            format!("UPDATE {what} (from other labels)"),
            request("UPDATE", Some(o), Some(&relabelled)),
        ));
        cases.push((format!("DELETE {what}"), request("DELETE", None, Some(o))));
    }
    cases
}

fn labels(object: &Value) -> BTreeMap<&str, &str> {
    object["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
                .collect()
        })
        .unwrap_or_default()
}

fn selector_matches(selector: &Value, labels: &BTreeMap<&str, &str>) -> bool {
    LabelSelector::parse(selector, "selector")
        .unwrap()
        .matches(labels)
}

/// Whether `rules` (resourceRules) name the request's group, resource and operation, as the
/// API server reads them.
fn rules_match(rules: &Value, request: &Value) -> bool {
    let has = |list: &Value, item: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .any(|x| x == "*" || x == item)
    };
    rules.as_array().unwrap().iter().any(|r| {
        has(
            &r["apiGroups"],
            request["resource"]["group"].as_str().unwrap(),
        ) && has(
            &r["resources"],
            request["resource"]["resource"].as_str().unwrap(),
        ) && has(&r["operations"], request["operation"].as_str().unwrap())
    })
}

/// What the API server makes of `request` for one binding: `None` when it does not apply,
/// else the messages and whether an expression failed.
fn api_server_verdict(
    policy: &Value,
    compiled: &AdmissionPolicy,
    binding: &Value,
    params: &Value,
    request: &Value,
) -> Option<(Vec<String>, bool)> {
    let any = if request["object"].is_null() {
        &request["oldObject"]
    } else {
        &request["object"]
    };
    let is_namespace = request["kind"]["kind"] == "Namespace" && request["kind"]["group"] == "";
    let ns_name = request["namespace"].as_str().unwrap_or("");
    let namespace_object = (!is_namespace && !ns_name.is_empty()).then(|| namespace(ns_name));
    // A namespaceSelector reads a Namespace's own labels, or those of the object's namespace;
    // it does not hold cluster-scoped objects.
    let namespace_labels = if is_namespace {
        Some(labels(any))
    } else {
        namespace_object.as_ref().map(labels)
    };
    let spec_match = [
        &policy["spec"]["matchConstraints"],
        &binding["spec"]["matchResources"],
    ];
    for m in spec_match {
        if !rules_match(&m["resourceRules"], request) {
            return None;
        }
        if let (Some(selector), Some(labels)) = (m.get("namespaceSelector"), &namespace_labels)
            && !selector_matches(selector, labels)
        {
            return None;
        }
        if let Some(selector) = m.get("objectSelector") {
            let fits = [&request["object"], &request["oldObject"]]
                .iter()
                .any(|o| o.is_object() && selector_matches(selector, &labels(o)));
            if !fits {
                return None;
            }
        }
    }
    let verdict = compiled
        .evaluate(
            request,
            params,
            namespace_object.as_ref(),
            Duration::from_secs(2),
        )
        .unwrap();
    match verdict {
        PolicyVerdict::NotMatched => None,
        PolicyVerdict::Judged { messages, errors } => Some((messages, !errors.is_empty())),
    }
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} generated"))
}

#[test]
fn generated_policies_judge_every_case_as_the_webhook_does() {
    let bundle = bundle();
    let generated = vap::generate(&bundle, &config(ALL_ON_API_SERVER));
    let webhook = Decider::new(vec!["kube-system".into(), "palisade-system".into()])
        .with_own_namespace("palisade-system");
    let inventory = inventory();
    let now = time::OffsetDateTime::now_utc();
    let cases = cases();
    let decisions: Vec<_> = cases
        .iter()
        .map(|(_, request)| {
            let review = Review::from_request_json(request.clone()).unwrap();
            webhook
                .decide(&bundle, &inventory, Endpoint::Validate, &review, now, None)
                .unwrap()
        })
        .collect();
    let mut compared = 0;
    // Per constraint: cases denied by both, cases judged clean by both.
    let mut seen: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for c in bundle.policies().constraints() {
        if c.kind == "K8sAllowedRepos" {
            continue;
        }
        let template = bundle
            .policies()
            .templates()
            .find(|t| t.kind == c.kind)
            .unwrap();
        let policy = find(
            &generated.objects,
            "ValidatingAdmissionPolicy",
            &vap::policy_name(&template.name),
        );
        let compiled = AdmissionPolicy::compile(policy).unwrap();
        let binding = find(
            &generated.objects,
            "ValidatingAdmissionPolicyBinding",
            &vap::binding_name(&c.kind, &c.name),
        );
        let action = binding["spec"]["validationActions"][0].as_str().unwrap();
        let own_rules = Value::Array(
            palisade::webhooks::constraint_rules(&bundle, c)
                .iter()
                .map(palisade::webhooks::Rule::to_json)
                .collect(),
        );
        for ((what, request), decision) in cases.iter().zip(&decisions) {
            let mine: Vec<_> = decision
                .violations
                .iter()
                .filter(|v| v.constraint == c.name && v.constraint_kind == c.kind)
                .collect();
            let mut web: Vec<String> = mine
                .iter()
                .filter(|v| v.failure.is_none())
                .map(|v| v.message.clone())
                .collect();
            web.sort();
            let web_failed = mine.iter().any(|v| v.failure.is_some());
            for v in &mine {
                let expected = match v.action {
                    palisade::policy::Action::Deny => "Deny",
                    palisade::policy::Action::Warn => "Warn",
                    palisade::policy::Action::Dryrun => "Audit",
                };
                assert_eq!(
                    action, expected,
                    "{} {}: the binding's validationActions differ from the webhook's action",
                    c.kind, c.name
                );
            }
            let verdict = api_server_verdict(policy, &compiled, binding, &c.object, request);
            // The webhook judges a constraint on whatever it is sent, also operations that
            // only another constraint's template asked for (as Gatekeeper's webhook does); a
            // generated policy, like Gatekeeper's, only on its template's operations.
            if !rules_match(&own_rules, request) {
                assert!(
                    verdict.is_none(),
                    "{} {} on {what}: the generated policy applies beyond its template's operations and kinds",
                    c.kind,
                    c.name
                );
                continue;
            }
            let (mut api, api_failed) = verdict.unwrap_or_default();
            api.sort();
            assert_eq!(
                (&web, web_failed),
                (&api, api_failed),
                "{} {} on {what}: the webhook (left) and the generated policy {} with binding {} (right) disagree\nrequest: {request}",
                c.kind,
                c.name,
                policy["metadata"]["name"],
                binding["metadata"]["name"]
            );
            let entry = seen.entry(format!("{} {}", c.kind, c.name)).or_default();
            if web.is_empty() {
                entry.1 += 1;
            } else {
                entry.0 += 1;
            }
            compared += 1;
        }
    }
    assert!(compared > 1000, "only {compared} comparisons");
    assert_eq!(seen.len(), 10, "{seen:?}");
    for (constraint, (denied, clean)) in &seen {
        assert!(
            *denied > 0 && *clean > 0,
            "{constraint}: {denied} cases with violations and {clean} without; the cases must show both"
        );
    }
}

#[test]
fn every_generated_expression_compiles_in_palisades_cel() {
    let generated = vap::generate(&bundle(), &config(ALL_ON_API_SERVER));
    let policies: Vec<&Value> = generated
        .objects
        .iter()
        .filter(|o| o["kind"] == "ValidatingAdmissionPolicy")
        .collect();
    assert_eq!(policies.len(), 3, "one policy per CEL template");
    for policy in &policies {
        AdmissionPolicy::compile(policy).unwrap_or_else(|e| panic!("{e}"));
        let spec = &policy["spec"];
        let names: Vec<&str> = spec["variables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names[..2],
            ["anyObject", "params"],
            "Gatekeeper's variables first"
        );
        assert_eq!(
            spec["variables"][0]["expression"],
            palisade::policy::cel::ANY_OBJECT
        );
        assert_eq!(
            spec["variables"][1]["expression"],
            palisade::policy::cel::PARAMS
        );
        let conditions: Vec<&str> = spec["matchConditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        for internal in [
            "match_kinds",
            "match_scope",
            "match_namespaces",
            "match_excluded_namespaces",
            "match_name",
            "match_global_excluded_namespaces",
        ] {
            assert!(
                conditions.contains(&format!("gatekeeper_internal_{internal}").as_str()),
                "{}: no gatekeeper_internal_{internal} in {conditions:?}",
                policy["metadata"]["name"]
            );
        }
        let unique: BTreeSet<&&str> = conditions.iter().collect();
        assert_eq!(unique.len(), conditions.len(), "repeated condition names");
    }
    // The check can fail: an expression that reads an undeclared variable does not compile.
    let mut broken = policies[0].clone();
    broken["spec"]["validations"][0]["expression"] = json!("variables.nope == 1");
    let err = AdmissionPolicy::compile(&broken).unwrap_err();
    assert!(
        err.contains("validations[0].expression") && err.contains("nope"),
        "{err}"
    );
}

fn write_policies(dir: &Path, files: &[(String, String)]) {
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

fn manifests(policies: &Path, config: Option<&str>) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "manifests".to_owned(),
        "--policies".into(),
        policies.display().to_string(),
    ];
    if let Some(text) = config {
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, text).unwrap();
        args.push("--config".into());
        args.push(path.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = palisade_cli(&args);
    assert_eq!(code, 0, "palisade {args:?}: {err}");
    (out, err)
}

#[test]
fn manifests_with_a_config_print_policies_that_validate_against_kubernetes() {
    let dir = tempfile::tempdir().unwrap();
    write_policies(dir.path(), &policy_files());
    let (out, _) = manifests(
        dir.path(),
        Some("validatingAdmissionPolicies:\n  placement: apiServer\n"),
    );
    let objects: Vec<Value> = palisade::manifest::parse_str(&out, Path::new("manifests"))
        .unwrap()
        .into_iter()
        .map(|d| d.value)
        .collect();
    let kinds: Vec<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "ValidatingAdmissionPolicyBinding")
            .count(),
        10,
        "{kinds:?}"
    );
    assert!(
        out.contains(
            "# K8sAllowedRepos rego-repos stays on the webhook: its template runs on Rego"
        ),
        "{out}"
    );
    let rendered = (out.clone(), objects);
    for version in [Some(crate::deploy::KUBERNETES_VERSION), None] {
        let unknown =
            crate::deploy::validate_schemas_at("palisade manifests --config", &rendered, version);
        assert!(unknown.is_empty(), "no schema for {unknown:?}");
    }
}

#[test]
fn manifests_without_placements_print_what_they_print_without_a_config() {
    let plain = manifests(&repo_path("policies"), None).0;
    assert_eq!(plain, manifests(&repo_path("policies"), Some("")).0);
    assert_eq!(
        plain,
        manifests(
            &repo_path("policies"),
            Some("validatingAdmissionPolicies: {placement: webhook, sync: true}\n")
        )
        .0
    );
    assert_eq!(
        plain,
        std::fs::read_to_string(repo_path("manifests/base/webhooks.yaml")).unwrap()
    );
}

#[test]
fn the_webhook_is_not_sent_what_only_the_api_server_judges() {
    // protected-objects alone needs ConfigMaps and DELETEs.
    let dir = tempfile::tempdir().unwrap();
    let mut files: Vec<(String, String)> = policy_files()
        .into_iter()
        .filter(|(name, _)| name != "constraints.yaml")
        .collect();
    let protected = CONSTRAINTS
        .split("\n---\n")
        .find(|d| d.contains("name: protected-objects"))
        .unwrap();
    files.push(("protected-objects.yaml".into(), protected.into()));
    write_policies(dir.path(), &files);
    let sent = |config: &str| {
        let (out, _) = manifests(dir.path(), Some(config));
        let objects = palisade::manifest::parse_str(&out, Path::new("manifests")).unwrap();
        let hook = objects
            .iter()
            .find(|d| d.value["kind"] == "ValidatingWebhookConfiguration")
            .unwrap();
        hook.value["webhooks"][0]["rules"].to_string()
    };
    let on_webhook = sent("validatingAdmissionPolicies: {placement: webhook}\n");
    assert!(
        on_webhook.contains("configmaps") && on_webhook.contains("DELETE"),
        "{on_webhook}"
    );
    let both = sent(
        "validatingAdmissionPolicies:\n  constraints: [{kind: K8sCelProtected, name: protected-objects, placement: both}]\n",
    );
    assert_eq!(both, on_webhook, "placement both keeps the webhook's rules");
    let moved = sent(
        "validatingAdmissionPolicies:\n  constraints: [{kind: K8sCelProtected, name: protected-objects, placement: apiServer}]\n",
    );
    assert!(
        !moved.contains("configmaps") && !moved.contains("DELETE"),
        "{moved}"
    );
}

/// Whether the webhook (the real decision path, under `config`) evaluates constraint `name` on
/// a review that violates every constraint of the test bundle.
fn webhook_judges(bundle: &Bundle, config: &Config, kind: &str, name: &str) -> bool {
    webhook_judges_with(bundle, config, Default::default(), kind, name)
}

/// Whether the webhook judges the constraint, with `handed_off` as what the leader's sync has
/// confirmed in the cluster.
fn webhook_judges_with(
    bundle: &Bundle,
    config: &Config,
    handed_off: std::sync::Arc<palisade::decide::HandedOff>,
    kind: &str,
    name: &str,
) -> bool {
    let pod = |ns: &str| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "namespace": ns, "labels": {"tier": "web", "protected": "yes"}}, "spec": {"containers": [{"name": "c", "image": "docker.io/evil:latest"}]}});
    let decider = Decider::new(vec!["kube-system".into()])
        .with_handed_off(handed_off)
        .with_config(std::sync::Arc::new(config.clone()));
    ["payments", "default"]
        .iter()
        .flat_map(|ns| {
            [
                request("CREATE", Some(&pod(ns)), None),
                request("DELETE", None, Some(&pod(ns))),
            ]
        })
        .chain([request(
            "CREATE",
            Some(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "probe"}})),
            None,
        )])
        .any(|r| {
            decider
                .decide(
                    bundle,
                    &inventory(),
                    Endpoint::Validate,
                    &Review::from_request_json(r).unwrap(),
                    time::OffsetDateTime::now_utc(),
                    None,
                )
                .unwrap()
                .violations
                .iter()
                .any(|v| v.constraint_kind == kind && v.constraint == name)
        })
}

fn bound(generated: &Generated, kind: &str, name: &str) -> bool {
    generated.objects.iter().any(|o| {
        o["kind"] == "ValidatingAdmissionPolicyBinding"
            && o["metadata"]["name"] == vap::binding_name(kind, name)
    })
}

/// With the leader keeping the policies in the cluster, the webhook stops judging a constraint
/// only once the leader has confirmed its objects there, and judges it again when the leader
/// takes that back (a failed sync, or leadership lost): both judge, never neither.
#[test]
fn with_sync_on_the_webhook_judges_until_the_leader_confirms_the_policies() {
    let bundle = bundle();
    let text = "validatingAdmissionPolicies:\n  sync: true\n  constraints:\n    - {kind: K8sCelAllowedRepos, name: in-pay, placement: apiServer}\n";
    let config = config(text);
    let key = ("K8sCelAllowedRepos".to_owned(), "in-pay".to_owned());
    let alone = vap::api_server_only(&bundle, &config);
    assert!(alone.contains(&key), "{alone:?}");
    let handed_off = std::sync::Arc::new(palisade::decide::HandedOff::default());
    let judges = || webhook_judges_with(&bundle, &config, handed_off.clone(), &key.0, &key.1);
    assert!(
        judges(),
        "judged by nobody before the leader confirmed anything"
    );
    handed_off.set(alone.clone());
    assert!(!judges(), "still judged by the webhook once confirmed");
    handed_off.set(BTreeSet::new());
    assert!(
        judges(),
        "not judged again once the confirmation is taken back"
    );
    // Without the sync, the placement alone moves it (the operator applies the objects).
    let manual = config_without_sync(text);
    assert!(!webhook_judges_with(
        &bundle,
        &manual,
        Default::default(),
        &key.0,
        &key.1
    ));
}

fn config_without_sync(text: &str) -> Config {
    config(&text.replace("sync: true", "sync: false"))
}

#[test]
fn no_configuration_leaves_a_constraint_judged_by_nobody() {
    let bundle = bundle();
    let placements = ["webhook", "apiServer", "both"];
    let extras = [
        "",
        "breakGlass: {users: [alice@example.com]}\n",
        "namespaces: [{names: [legacy], enforcement: dryrun}]\n",
        "enforcement: warn\n",
        "namespaces: [{names: [legacy], mutation: false}]\n",
    ];
    let mut moved = 0;
    for default in placements {
        for rule in placements {
            for extra in extras {
                let text = format!(
                    "{extra}validatingAdmissionPolicies:\n  placement: {default}\n  constraints:\n    - {{kind: K8sCelAllowedRepos, name: in-pay, placement: {rule}}}\n    - {{name: rego-repos, placement: {rule}}}\n"
                );
                let config = config(&text);
                let generated = vap::generate(&bundle, &config);
                let alone = vap::api_server_only(&bundle, &config);
                assert_eq!(
                    alone,
                    generated.api_server_only.iter().cloned().collect(),
                    "{text}"
                );
                for c in bundle.policies().constraints() {
                    let web = webhook_judges(&bundle, &config, &c.kind, &c.name);
                    let api = bound(&generated, &c.kind, &c.name);
                    assert!(
                        web || api,
                        "{} {} is judged by nobody under\n{text}",
                        c.kind,
                        c.name
                    );
                    let only = alone.contains(&(c.kind.clone(), c.name.clone()));
                    assert_eq!(
                        web, !only,
                        "{} {}: the webhook judges it exactly when it is not the API server's alone, under\n{text}",
                        c.kind, c.name
                    );
                    moved += usize::from(only);
                }
            }
        }
    }
    assert!(
        moved > 0,
        "no configuration moved anything: the test proves nothing"
    );
}

#[test]
fn what_the_api_server_cannot_judge_alone_stays_on_the_webhook() {
    let bundle = bundle();
    let kept = |extra: &str, kind: &str, name: &str| -> String {
        let config = config(&format!("{extra}{ALL_ON_API_SERVER}"));
        let generated = vap::generate(&bundle, &config);
        assert!(
            !bound(&generated, kind, name),
            "{kind} {name} was generated under {extra:?}"
        );
        assert!(
            webhook_judges(&bundle, &config, kind, name),
            "{kind} {name} is not judged by the webhook under {extra:?}"
        );
        generated
            .kept_on_webhook
            .iter()
            .find(|(k, n, _)| k == kind && n == name)
            .map(|(_, _, why)| why.clone())
            .unwrap_or_else(|| panic!("{kind} {name} is not listed as kept on the webhook"))
    };
    let why = kept("", "K8sAllowedRepos", "rego-repos");
    assert!(why.contains("Rego"), "{why}");
    let why = kept(
        "breakGlass: {groups: [sre-oncall]}\n",
        "K8sCelAllowedRepos",
        "in-pay",
    );
    assert!(why.contains("break-glass"), "{why}");
    let why = kept(
        "namespaces: [{names: [\"team-*\"], enforcement: warn}]\n",
        "K8sCelAllowedRepos",
        "in-pay",
    );
    assert!(why.contains("namespaces[0]"), "{why}");
    let why = kept(
        "enforcement: dryrun\n",
        "K8sCelProtected",
        "protected-objects",
    );
    assert!(why.contains("enforcement: dryrun"), "{why}");
    // A cap that lowers nothing moves nothing back: warn stays warn under a warn cap.
    let config = config(&format!("enforcement: warn\n{ALL_ON_API_SERVER}"));
    assert!(bound(
        &vap::generate(&bundle, &config),
        "K8sCelAllowedRepos",
        "warn-namespaced"
    ));

    // generateVAP: false, a scoped constraint with no action at vap.k8s.io, and one whose
    // action there differs from the webhook's.
    let mut files = policy_files();
    files[0].1 = files[0].1.replace(
        "        - engine: K8sNativeValidation\n          source:\n",
        "        - engine: K8sNativeValidation\n          source:\n            generateVAP: false\n",
    );
    assert!(files[0].1.contains("generateVAP: false"));
    let generated = vap::generate(&bundle_of(&files), &config_all());
    let why = &generated
        .kept_on_webhook
        .iter()
        .find(|(_, n, _)| n == "in-pay")
        .unwrap()
        .2;
    assert!(why.contains("generateVAP"), "{why}");
    let scoped = r#"
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sCelProtected
metadata: {name: webhook-only}
spec:
  enforcementAction: scoped
  scopedEnforcementActions: [{action: deny, enforcementPoints: [{name: validation.gatekeeper.sh}]}]
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sCelProtected
metadata: {name: softer-at-the-api-server}
spec:
  enforcementAction: scoped
  scopedEnforcementActions:
    - {action: deny, enforcementPoints: [{name: validation.gatekeeper.sh}]}
    - {action: warn, enforcementPoints: [{name: vap.k8s.io}]}
"#;
    let mut files = policy_files();
    files.push(("scoped.yaml".into(), scoped.into()));
    let generated = vap::generate(&bundle_of(&files), &config_all());
    let why = |name: &str| {
        generated
            .kept_on_webhook
            .iter()
            .find(|(_, n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} not kept: {generated:?}"))
            .2
            .clone()
    };
    assert!(why("webhook-only").contains("vap.k8s.io"));
    assert!(why("softer-at-the-api-server").contains("(warn)"));
}

fn config_all() -> Config {
    config(ALL_ON_API_SERVER)
}

#[test]
fn placement_typos_are_errors_that_name_the_field() {
    for (text, field, hint) in [
        (
            "validatingAdmissionPolicies: {placement: apiserver}",
            "validatingAdmissionPolicies.placement",
            "unknown variant",
        ),
        (
            "validatingAdmissionPolicies: {placment: apiServer}",
            "validatingAdmissionPolicies",
            "unknown field",
        ),
        (
            "validatingAdmissionPolicies: {constraints: [{name: a, placement: API}]}",
            "validatingAdmissionPolicies.constraints[0].placement",
            "unknown variant",
        ),
        (
            "validatingAdmissionPolicies: {constraints: [{name: a, placment: both}]}",
            "validatingAdmissionPolicies.constraints[0]",
            "unknown field",
        ),
        (
            "validatingAdmissionPolicies: {constraints: [{name: a}]}",
            "validatingAdmissionPolicies.constraints[0]",
            "placement",
        ),
        (
            "validatingAdmissionPolicies: {constraints: [{name: \"team-*\", placement: both}]}",
            "validatingAdmissionPolicies.constraints[0].name",
            "exactly",
        ),
        (
            "validatingAdmissionPolicies: {constraints: [{kind: \"\", name: a, placement: both}]}",
            "validatingAdmissionPolicies.constraints[0].kind",
            "kind",
        ),
        (
            "validatingAdmissionPolicies: {constraints: [{name: a, placement: both}, {kind: K, name: a, placement: webhook}]}",
            "validatingAdmissionPolicies.constraints[1]",
            "constraints[0]",
        ),
        (
            "validatingAdmissionPolicies: {sync: yes-please}",
            "validatingAdmissionPolicies.sync",
            "",
        ),
    ] {
        let err = Config::parse(text, "config.yaml").unwrap_err();
        assert!(
            err.field.starts_with(field) && err.to_string().contains(hint),
            "{text}: {err} (field {:?})",
            err.field
        );
    }
}

#[test]
fn a_rule_naming_no_constraint_is_a_warning_that_moves_nothing() {
    let bundle = bundle();
    let config = config(
        "validatingAdmissionPolicies:\n  constraints: [{kind: K8sCelAllowedRepos, name: in-payy, placement: apiServer}]\n",
    );
    let generated = vap::generate(&bundle, &config);
    assert!(generated.objects.is_empty() && generated.api_server_only.is_empty());
    assert_eq!(generated.warnings.len(), 1, "{:?}", generated.warnings);
    assert!(
        generated.warnings[0].contains("constraints[0]")
            && generated.warnings[0].contains("in-payy"),
        "{:?}",
        generated.warnings
    );
}

#[test]
fn generated_objects_are_labelled_named_and_stable() {
    let bundle = bundle();
    let first = vap::generate(&bundle, &config_all());
    assert_eq!(first, vap::generate(&bundle, &config_all()));
    let mut policy = "";
    for o in &first.objects {
        assert_eq!(
            o["metadata"]["labels"]["app.kubernetes.io/managed-by"], "palisade",
            "{o}"
        );
        match o["kind"].as_str().unwrap() {
            "ValidatingAdmissionPolicy" => {
                policy = o["metadata"]["name"].as_str().unwrap();
                assert_eq!(
                    o["spec"]["paramKind"]["apiVersion"],
                    "constraints.gatekeeper.sh/v1beta1"
                );
            }
            "ValidatingAdmissionPolicyBinding" => {
                assert_eq!(
                    o["spec"]["policyName"], policy,
                    "a binding follows its policy"
                );
                assert_eq!(o["spec"]["paramRef"]["parameterNotFoundAction"], "Deny");
            }
            other => panic!("unexpected {other}"),
        }
    }
    let binding = find(
        &first.objects,
        "ValidatingAdmissionPolicyBinding",
        "palisade-k8scelallowedrepos-web-tier",
    );
    assert_eq!(
        binding["spec"]["matchResources"]["objectSelector"],
        json!({"matchLabels": {"tier": "web"}})
    );
    assert_eq!(binding["spec"]["paramRef"]["name"], "web-tier");
    let warn = find(
        &first.objects,
        "ValidatingAdmissionPolicyBinding",
        "palisade-k8scelallowedrepos-warn-namespaced",
    );
    assert_eq!(warn["spec"]["validationActions"], json!(["Warn"]));
    let policy = find(
        &first.objects,
        "ValidatingAdmissionPolicy",
        "palisade-k8scelprotected",
    );
    assert_eq!(
        policy["spec"]["matchConstraints"]["resourceRules"],
        json!([
            {"apiGroups": [""], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE", "DELETE"], "resources": ["configmaps", "pods"], "scope": "*"},
            {"apiGroups": [""], "apiVersions": ["*"], "operations": ["UPDATE"], "resources": ["pods/ephemeralcontainers"], "scope": "*"},
        ])
    );
}

#[test]
fn the_audit_still_judges_what_the_api_server_judges_alone() {
    let bundle = bundle();
    let config = config_all();
    let alone = vap::api_server_only(&bundle, &config);
    assert!(alone.contains(&("K8sCelAllowedRepos".to_owned(), "in-pay".to_owned())));
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "api", "namespace": "payments"}, "spec": {"containers": [{"name": "c", "image": "docker.io/evil:1"}]}});
    let review = Review::from_object(pod);
    let judged_at = |point| {
        Decider::new(Vec::new())
            .with_config(std::sync::Arc::new(config.clone()))
            .at_point(point)
            .decide(
                &bundle,
                &inventory(),
                Endpoint::Validate,
                &review,
                time::OffsetDateTime::now_utc(),
                None,
            )
            .unwrap()
            .violations
            .iter()
            .any(|v| v.constraint == "in-pay")
    };
    assert!(judged_at(palisade::policy::Point::Audit));
    assert!(judged_at(palisade::policy::Point::Gator));
    assert!(!judged_at(palisade::policy::Point::Validation));
}
