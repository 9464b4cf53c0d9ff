//! The webhooks' matchConditions (`palisade manifests --match-conditions`,
//! `webhooks::match_conditions`): derived from a bundle, they are evaluated as the API server
//! evaluates them (`policy::cel::AdmissionPolicy`, on `object`, `oldObject` and `request`) on a
//! corpus of reviews (the captured ones, the load scenarios' bodies, and variations of them in
//! operation, kind, namespace, subresource, status, break-glass annotations and requester),
//! and every review they skip is decided by Palisade's own `Decider`, on both endpoints: it
//! must be allowed with no patch, no warning, no audit annotation and no violation (dryrun
//! ones included). Conditions written wrong on purpose are caught by the same check.
//!
//! Bundles: the default one, every loadable bundle of tests/data/gatekeeper, the expansion
//! suite's, and generated ones whose constraints deny everything they match and whose
//! mutators change everything they match, with every matcher the conditions read.
//!
//! No API server runs here: `AdmissionPolicy` is the API server's side, as in tests/it/vap.rs.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use palisade::admission::{Endpoint, Review};
use palisade::breakglass::Verdict;
use palisade::bundle::Bundle;
use palisade::config::Config;
use palisade::decide::Decider;
use palisade::inventory::Inventory;
use palisade::policy::EngineOptions;
use palisade::policy::cel::{AdmissionPolicy, PolicyVerdict};
use palisade::webhooks::match_conditions::{self, MatchCondition};
use serde_json::{Value, json};

use crate::common::{palisade_cli, repo_path};

/// A template whose constraints deny everything they match.
const DENY_ALL: &str = r#"
apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata: {name: k8sdenyall}
spec:
  crd: {spec: {names: {kind: K8sDenyAll}}}
  targets:
    - target: admission.k8s.gatekeeper.sh
      operations: ["*"]
      rego: |
        package k8sdenyall
        violation[{"msg": "matched"}] { true }
"#;

/// Constraints of [`DENY_ALL`], one per matcher the conditions read (and some they do not),
/// each in a generated bundle of its own and all together in one more.
const CONSTRAINTS: &[&str] = &[
    "metadata: {name: pods-in-pay}\nspec:\n  match:\n    kinds: [{apiGroups: [\"\"], kinds: [Pod]}]\n    namespaces: [\"pay*\"]\n",
    "metadata: {name: not-legacy}\nspec:\n  match:\n    kinds: [{apiGroups: [\"\"], kinds: [ConfigMap, Pod]}]\n    excludedNamespaces: [legacy, \"*-tmp\"]\n",
    "metadata: {name: cluster-scoped}\nspec:\n  match:\n    scope: Cluster\n",
    "metadata: {name: namespaced-deployments}\nspec:\n  match:\n    scope: Namespaced\n    kinds: [{apiGroups: [\"*\"], kinds: [Deployment]}]\n",
    "metadata: {name: warn-namespaces}\nspec:\n  enforcementAction: warn\n  match:\n    kinds: [{apiGroups: [\"\"], kinds: [Namespace]}]\n    namespaces: [\"*tmp*\"]\n",
    "metadata: {name: dryrun-cronjobs}\nspec:\n  enforcementAction: dryrun\n  match:\n    kinds: [{apiGroups: [batch], kinds: [CronJob]}]\n",
    "metadata: {name: selected}\nspec:\n  match:\n    kinds: [{apiGroups: [\"\"], kinds: [Secret]}]\n    namespaceSelector: {matchLabels: {security-level: high}}\n    labelSelector: {matchLabels: {tier: web}}\n    name: \"web*\"\n",
];

/// Mutators that change everything they match, and a Config that excludes namespaces.
const MUTATORS: &[&str] = &[
    "apiVersion: mutations.gatekeeper.sh/v1\nkind: AssignMetadata\nmetadata: {name: mark-configmaps}\nspec:\n  match:\n    kinds: [{apiGroups: [\"\"], kinds: [ConfigMap]}]\n    excludedNamespaces: [legacy]\n  location: metadata.annotations.mutated\n  parameters: {assign: {value: \"yes\"}}\n",
    "apiVersion: mutations.gatekeeper.sh/v1\nkind: Assign\nmetadata: {name: deployments-in-pay}\nspec:\n  applyTo: [{groups: [apps], kinds: [Deployment], versions: [v1]}]\n  match:\n    namespaces: [payments]\n  location: spec.minReadySeconds\n  parameters: {assign: {value: 7}}\n",
    "apiVersion: mutations.gatekeeper.sh/v1\nkind: AssignMetadata\nmetadata: {name: mark-everything}\nspec:\n  match:\n    scope: Namespaced\n    namespaces: [\"team-*\"]\n  location: metadata.labels.marked\n  parameters: {assign: {value: \"yes\"}}\n",
];

const CONFIG: &str = "apiVersion: config.gatekeeper.sh/v1alpha1\nkind: Config\nmetadata: {name: config, namespace: gatekeeper-system}\nspec:\n  match:\n    - excludedNamespaces: [\"scratch-*\"]\n      processes: [webhook]\n    - excludedNamespaces: [legacy]\n      processes: [mutation-webhook]\n    - excludedNamespaces: [\"*-tmp\"]\n      processes: [\"*\"]\n";

fn bundle_of(text: &str) -> Bundle {
    let docs = palisade::manifest::parse_str(text, Path::new("generated.yaml")).unwrap();
    Bundle::from_documents(docs, &EngineOptions::default()).unwrap()
}

fn constraint(body: &str) -> String {
    format!("apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sDenyAll\n{body}")
}

/// The bundles the conditions are derived from, each with its name.
fn bundles() -> Vec<(String, Bundle)> {
    let options = EngineOptions::default();
    let mut out = vec![(
        "policies/".to_owned(),
        palisade::bundle::load(&repo_path("policies"), &options).unwrap(),
    )];
    let mut dirs: Vec<_> = std::fs::read_dir(repo_path("tests/data/gatekeeper"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.push(repo_path("tests/data/expansion"));
    dirs.sort();
    for dir in dirs {
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        // A directory that also holds broken policies on purpose: its template and constraint.
        let own: Vec<_> = files
            .iter()
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name.starts_with("template") || name.starts_with("constraint")
            })
            .cloned()
            .collect();
        let loaded = [files, own]
            .into_iter()
            .filter(|f| !f.is_empty())
            .find_map(|files| {
                let docs = policy_documents(&files);
                Bundle::from_documents(docs, &options).ok()
            });
        // A directory of broken policies, or of constraints without their template, has nothing
        // to derive.
        if let Some(bundle) = loaded {
            out.push((dir.display().to_string(), bundle));
        }
    }
    generated_bundles(out)
}

/// The Gatekeeper documents of `files`.
fn policy_documents(files: &[std::path::PathBuf]) -> Vec<palisade::manifest::Document> {
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        for doc in palisade::manifest::parse_str(&text, file).unwrap_or_default() {
            let api = doc.value["apiVersion"].as_str().unwrap_or_default();
            if [
                "templates.gatekeeper.sh",
                "constraints.gatekeeper.sh",
                "mutations.gatekeeper.sh",
                "expansion.gatekeeper.sh",
                "config.gatekeeper.sh",
            ]
            .iter()
            .any(|g| api.starts_with(g))
            {
                docs.push(doc);
            }
        }
    }
    docs
}

/// `out` and the generated bundles: each constraint and mutator of this file alone, all of
/// them with the Config, and the empty bundle.
fn generated_bundles(mut out: Vec<(String, Bundle)>) -> Vec<(String, Bundle)> {
    for (i, c) in CONSTRAINTS.iter().enumerate() {
        out.push((
            format!("generated constraint {i}"),
            bundle_of(&format!("{DENY_ALL}\n---\n{}", constraint(c))),
        ));
    }
    for (i, m) in MUTATORS.iter().enumerate() {
        out.push((format!("generated mutator {i}"), bundle_of(m)));
    }
    let mut all = vec![DENY_ALL.to_owned(), CONFIG.to_owned()];
    all.extend(CONSTRAINTS.iter().map(|c| constraint(c)));
    all.extend(MUTATORS.iter().map(|m| (*m).to_owned()));
    out.push((
        "generated, all with a Config".into(),
        bundle_of(&all.join("\n---\n")),
    ));
    out.push(("empty".into(), bundle_of("")));
    out
}

/// The namespaces of the corpus: payments opts into mutual TLS (`security-level: high`).
const NAMESPACES: [(&str, &str); 6] = [
    ("payments", "high"),
    ("default", "low"),
    ("legacy", "low"),
    ("scratch-1", "high"),
    ("team-tmp", "high"),
    ("palisade-system", "high"),
];

fn inventory() -> Inventory {
    Inventory::from_objects(NAMESPACES.iter().map(|(n, level)| {
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n, "labels": {
            "kubernetes.io/metadata.name": n, "security-level": level,
            "network-policy": "zero-trust", "pod-security.kubernetes.io/enforce": "restricted"}}})
    }))
}

/// alice may use break-glass; nobody else may.
fn decider() -> Decider {
    let config = Config::parse(
        "breakGlass:\n  users: [alice]\n  maxTTL: 24h\n",
        "config.yaml",
    )
    .unwrap();
    Decider::new(Vec::new())
        .with_own_namespace("palisade-system")
        .with_config(Arc::new(config))
}

/// The time of every decision: 2027-01-15T08:00:00Z, an hour before the break-glass expiry.
fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
}
const EXPIRY: &str = "2027-01-15T09:00:00Z";

/// A captured review's `request`, and the endpoint it was sent to.
fn captured() -> Vec<(String, Endpoint, Value)> {
    let mut out = Vec::new();
    for dir in ["tests/data/admission", "tests/data/bench"] {
        let mut files: Vec<_> = std::fs::read_dir(repo_path(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        for file in files {
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            let body: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
            // The load scenarios send the admitted pod to /validate (benches/scenarios.sh).
            let endpoint = if name.starts_with("mutate") {
                Endpoint::Mutate
            } else {
                Endpoint::Validate
            };
            out.push((format!("{dir}/{name}"), endpoint, body["request"].clone()));
        }
    }
    out
}

/// Objects of kinds the captures lack: a ConfigMap, a Secret, a CronJob (its template deep in
/// the object) and a PodTemplate.
fn extra_objects() -> Vec<Value> {
    let template = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "registry.example.com/x:1"}]}});
    vec![
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-settings", "namespace": "default", "labels": {"tier": "web"}}, "data": {"a": "b"}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "web-secret", "namespace": "default", "labels": {"tier": "web"}}, "data": {}}),
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly", "namespace": "default"}, "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": template}}}}),
        json!({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "tpl", "namespace": "default"}, "template": template}),
    ]
}

fn gvk(object: &Value) -> (String, String, String) {
    let api = object["apiVersion"].as_str().unwrap_or("v1");
    let (group, version) = api.split_once('/').unwrap_or(("", api));
    (
        group.to_owned(),
        version.to_owned(),
        object["kind"].as_str().unwrap_or_default().to_owned(),
    )
}

/// An AdmissionRequest for `object` as the API server sends it (`object` null on DELETE).
fn request(operation: &str, object: &Value, old: Option<&Value>, user: &str) -> Value {
    let (group, version, kind) = gvk(object);
    let is_namespace = group.is_empty() && kind == "Namespace";
    let name = &object["metadata"]["name"];
    json!({
        "uid": "5f0c9c1e-match-conditions",
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": palisade::webhooks::resource_of(&group, &kind)},
        "name": name,
        "namespace": if is_namespace { name.clone() } else { object["metadata"]["namespace"].clone() },
        "operation": operation,
        "userInfo": {"username": user, "groups": ["system:authenticated"]},
        "object": if operation == "DELETE" { Value::Null } else { object.clone() },
        "oldObject": match (operation, old) {
            ("DELETE", _) => object.clone(),
            (_, Some(old)) => old.clone(),
            _ => Value::Null,
        },
        "dryRun": false,
    })
}

/// Where a kind keeps its pod template's metadata, if it has one.
fn template_metadata(object: &mut Value) -> Option<&mut Value> {
    let (group, _, kind) = gvk(object);
    let path = palisade::podpaths::of_kind(&group, &kind)?;
    if path.template.is_empty() {
        return None;
    }
    let mut at = object;
    for key in path.template {
        at = at.get_mut(*key)?;
    }
    Some(&mut at["metadata"])
}

fn in_namespace(object: &Value, ns: &str) -> Value {
    let mut o = object.clone();
    let (group, _, kind) = gvk(&o);
    if group.is_empty() && kind == "Namespace" {
        o["metadata"]["name"] = json!(ns);
    } else if !ns.is_empty() || o["metadata"].get("namespace").is_some() {
        o["metadata"]["namespace"] = json!(ns);
    }
    o
}

/// The corpus: every captured review as it is, then each captured and extra object moved
/// through the namespaces and operations, given other kinds (a look-alike group and case too),
/// sent through subresources, changed only in its status, and given break-glass annotations
/// (valid, half, look-alike, on the pod template) by an allowed and a refused requester.
fn corpus() -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = captured()
        .into_iter()
        .map(|(name, _, request)| (name, request))
        .collect();
    let mut objects: Vec<Value> = captured()
        .iter()
        .filter_map(|(_, _, r)| {
            let o = if r["object"].is_object() {
                &r["object"]
            } else {
                &r["oldObject"]
            };
            o.is_object().then(|| o.clone())
        })
        .collect();
    objects.extend(extra_objects());
    objects.sort_by_key(|o| o.to_string());
    objects.dedup();
    for object in &objects {
        let (_, _, kind) = gvk(object);
        let what = |s: &str| format!("{kind} {}: {s}", object["metadata"]["name"]);
        for (ns, _) in NAMESPACES.iter().chain(&[("kube-public", "")]) {
            let o = in_namespace(object, ns);
            for op in ["CREATE", "UPDATE", "DELETE"] {
                let old = (op == "UPDATE").then(|| {
                    let mut old = o.clone();
                    old["metadata"]["labels"] = json!({"before": "yes"});
                    old
                });
                out.push((
                    what(&format!("{op} in {ns}")),
                    request(op, &o, old.as_ref(), "mallory"),
                ));
            }
            // Other kinds for the same object, and kinds that look like those the bundles name.
            for (api, other) in [
                ("v1", "ConfigMap"),
                ("v1", "Namespace"),
                ("apps/v1", "Deployment"),
                ("batch/v1", "CronJob"),
                ("example.com/v1", "Pod"),
                ("v1", "pod"),
                ("v1", "Secret"),
            ] {
                let mut k = o.clone();
                k["apiVersion"] = json!(api);
                k["kind"] = json!(other);
                let k = in_namespace(&k, ns);
                out.push((
                    what(&format!("CREATE as {api} {other} in {ns}")),
                    request("CREATE", &k, None, "mallory"),
                ));
            }
        }
        // Subresources, and an UPDATE that changes only the status.
        for sub in ["status", "ephemeralcontainers", "scale"] {
            let mut r = request("UPDATE", object, Some(object), "mallory");
            r["subResource"] = json!(sub);
            out.push((what(&format!("UPDATE /{sub}")), r));
        }
        let mut status = object.clone();
        status["status"] = json!({"phase": "Changed", "conditions": [{"type": "Ready"}]});
        out.push((
            what("UPDATE of the status through the main resource"),
            request("UPDATE", &status, Some(object), "mallory"),
        ));
        let mut connect = request("CONNECT", object, None, "mallory");
        connect["subResource"] = json!("exec");
        connect["kind"] = json!({"group": "", "version": "v1", "kind": "PodExecOptions"});
        connect["object"] =
            json!({"apiVersion": "v1", "kind": "PodExecOptions", "command": ["sh"]});
        out.push((what("CONNECT /exec"), connect));
        // Break-glass annotations: valid, half, look-alike; on the object and on its template.
        let annotations: [(&str, Value); 6] = [
            (
                "valid",
                json!({"palisade.dev/break-glass": "INC-1", "palisade.dev/break-glass-expires": EXPIRY}),
            ),
            ("reason only", json!({"palisade.dev/break-glass": "INC-1"})),
            (
                "expiry only",
                json!({"palisade.dev/break-glass-expires": EXPIRY}),
            ),
            (
                "blank reason",
                json!({"palisade.dev/break-glass": "\u{200b}"}),
            ),
            (
                "look-alike keys",
                json!({"Palisade.dev/break-glass": "INC-1", "palisade.dev/break-glass ": "INC-1", "palisade.dev/break-glass-grant": "x"}),
            ),
            ("none", json!({})),
        ];
        for (ns, _) in &NAMESPACES[..3] {
            for (label, notes) in &annotations {
                for on_template in [false, true] {
                    let mut o = in_namespace(object, ns);
                    let metadata = if on_template {
                        match template_metadata(&mut o) {
                            Some(m) => m,
                            None => continue,
                        }
                    } else {
                        &mut o["metadata"]
                    };
                    for (k, v) in notes.as_object().unwrap() {
                        metadata["annotations"][k] = v.clone();
                    }
                    let place = if on_template { "template" } else { "object" };
                    for user in ["alice", "mallory"] {
                        out.push((
                            what(&format!(
                                "CREATE in {ns}, {label} on the {place}, by {user}"
                            )),
                            request("CREATE", &o, None, user),
                        ));
                        out.push((
                            what(&format!(
                                "UPDATE in {ns}, {label} on the {place}, by {user}"
                            )),
                            request("UPDATE", &o, Some(&in_namespace(object, ns)), user),
                        ));
                    }
                }
            }
        }
    }
    out
}

/// The conditions as the API server evaluates them: a policy of them alone, which matches (is
/// called) when every condition is true.
struct Conditions(Option<AdmissionPolicy>);

impl Conditions {
    fn new(conditions: &[MatchCondition]) -> Self {
        if conditions.is_empty() {
            return Self(None);
        }
        let policy = json!({
            "metadata": {"name": "webhook"},
            "spec": {
                "failurePolicy": "Fail",
                "matchConditions": conditions.iter().map(MatchCondition::to_json).collect::<Vec<_>>(),
                "validations": [{"expression": "true"}],
            }
        });
        Self(Some(AdmissionPolicy::compile(&policy).unwrap_or_else(
            |e| panic!("{e}\n{}", serde_json::to_string_pretty(&policy).unwrap()),
        )))
    }

    /// Whether the API server would skip the call. An error in a condition would refuse the
    /// request (failurePolicy Fail), so none may fail on what the API server sends.
    fn skip(&self, request: &Value) -> bool {
        let Some(policy) = &self.0 else {
            return false;
        };
        match policy
            .evaluate(request, &Value::Null, None, Duration::from_secs(5))
            .unwrap()
        {
            PolicyVerdict::NotMatched => true,
            PolicyVerdict::Judged { errors, .. } => {
                assert!(
                    errors.is_empty(),
                    "a condition failed: {errors:?}\n{request}"
                );
                false
            }
        }
    }
}

/// Why Palisade's answer to a skipped review is not "allowed as it is", if it is not.
fn not_a_plain_allow(bundle: &Bundle, endpoint: Endpoint, request: &Value) -> Option<String> {
    let review = Review::from_request_json(request.clone()).ok()?;
    let d = decider()
        .decide(bundle, &inventory(), endpoint, &review, now(), None)
        .unwrap();
    let r = &d.response;
    let patched = r.patch.as_ref().is_some_and(|p| !p.0.is_empty());
    let plain = r.allowed
        && !patched
        && r.warnings.is_empty()
        && r.audit_annotations.is_empty()
        && d.violations.is_empty()
        && d.break_glass == Verdict::Absent;
    (!plain).then(|| {
        format!(
            "allowed {}, patch {:?}, warnings {:?}, audit {:?}, violations {}, break-glass {:?}; {}",
            r.allowed,
            r.patch,
            r.warnings,
            r.audit_annotations,
            d.violations.len(),
            d.break_glass,
            r.message
        )
    })
}

/// The reviews the conditions skip that Palisade would not have allowed as they are.
fn counterexamples(
    bundle: &Bundle,
    validating: &[MatchCondition],
    mutating: &[MatchCondition],
    corpus: &[(String, Value)],
) -> (Vec<String>, usize) {
    let (validating, mutating) = (Conditions::new(validating), Conditions::new(mutating));
    let mut found = Vec::new();
    let mut skipped = 0;
    for (name, request) in corpus {
        for (endpoint, conditions) in [
            (Endpoint::Validate, &validating),
            (Endpoint::Mutate, &mutating),
        ] {
            if conditions.skip(request) {
                skipped += 1;
                if let Some(why) = not_a_plain_allow(bundle, endpoint, request) {
                    found.push(format!("{endpoint:?} {name}: {why}"));
                }
            }
        }
    }
    (found, skipped)
}

#[test]
fn every_review_the_conditions_skip_palisade_would_allow_as_it_is() {
    let corpus = corpus();
    assert!(corpus.len() > 2_000, "{}", corpus.len());
    let bundles = bundles();
    assert!(bundles.len() >= 23, "{}", bundles.len());
    let mut total_skipped = 0;
    for (name, bundle) in &bundles {
        let validating = match_conditions::validating(bundle);
        let mutating = match_conditions::mutating(bundle);
        let (found, skipped) = counterexamples(bundle, &validating, &mutating, &corpus);
        assert!(
            found.is_empty(),
            "{name}: {} skipped reviews Palisade would not allow as they are:\n{}",
            found.len(),
            found[..found.len().min(10)].join("\n")
        );
        eprintln!("{name}: {skipped} skipped");
        total_skipped += skipped;
    }
    eprintln!(
        "{} reviews, {} bundles, {total_skipped} skipped calls checked",
        corpus.len(),
        bundles.len()
    );
    // The check has something to check.
    assert!(total_skipped > 10_000, "{total_skipped}");
}

#[test]
fn conditions_written_wrong_on_purpose_are_caught() {
    let corpus = corpus();
    let default =
        palisade::bundle::load(&repo_path("policies"), &EngineOptions::default()).unwrap();
    let wrong = |name: &str, expression: &str| MatchCondition {
        name: name.into(),
        expression: expression.into(),
    };
    // Pods in payments are judged (and mutated) there.
    let pods = [wrong(
        "palisade.dev/skip-pods-in-payments",
        r#"!(request.kind.kind == "Pod" && has(request.namespace) && request.namespace == "payments")"#,
    )];
    let (found, _) = counterexamples(&default, &pods, &pods, &corpus);
    assert!(found.iter().any(|f| f.starts_with("Validate")), "{found:?}");
    assert!(found.iter().any(|f| f.starts_with("Mutate")), "{found:?}");

    // Without its break-glass alternative, the mutating condition skips Deployments that alice
    // breaks glass on, whose grant /mutate stamps; the validating one, with no constraint,
    // skips mallory's refused annotations.
    let without_break_glass = |conditions: Vec<MatchCondition>| -> Vec<MatchCondition> {
        let glass = match_conditions::break_glass_annotated();
        conditions
            .into_iter()
            .map(|mut c| {
                c.expression = if c.expression == glass {
                    "false".into()
                } else {
                    c.expression.replace(&format!(" || ({glass})"), "")
                };
                c
            })
            .collect()
    };
    let mutating = without_break_glass(match_conditions::mutating(&default));
    assert_ne!(mutating, match_conditions::mutating(&default));
    let (found, _) = counterexamples(&default, &[], &mutating, &corpus);
    assert!(
        found
            .iter()
            .any(|f| f.contains("Deployment") && f.contains("by alice")),
        "{found:?}"
    );
    let empty = bundle_of("");
    let validating = without_break_glass(match_conditions::validating(&empty));
    let (found, _) = counterexamples(&empty, &validating, &[], &corpus);
    assert!(
        found
            .iter()
            .any(|f| f.contains("by mallory") && f.contains("Refused")),
        "{found:?}"
    );

    // A Config exclusion for the wrong process: the mutating webhook's legacy exclusion on the
    // validating webhook.
    let all = {
        let mut all = vec![DENY_ALL.to_owned(), CONFIG.to_owned()];
        all.extend(CONSTRAINTS.iter().map(|c| constraint(c)));
        bundle_of(&all.join("\n---\n"))
    };
    let mut validating = match_conditions::validating(&all);
    validating.push(wrong(
        "palisade.dev/legacy",
        r#"!has(request.namespace) || request.namespace != "legacy""#,
    ));
    let (found, _) = counterexamples(&all, &validating, &[], &corpus);
    assert!(found.iter().any(|f| f.contains("in legacy")), "{found:?}");
}

#[test]
fn conditions_are_few_named_uniquely_and_read_only_what_a_webhook_has() {
    for (name, bundle) in bundles() {
        for conditions in [
            match_conditions::validating(&bundle),
            match_conditions::mutating(&bundle),
        ] {
            assert!(conditions.len() <= 64, "{name}");
            let mut names: Vec<&str> = conditions.iter().map(|c| c.name.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), conditions.len(), "{name}: repeated names");
            for c in &conditions {
                let (prefix, local) = c.name.split_once('/').unwrap();
                assert_eq!(prefix, "palisade.dev");
                assert!(
                    local.len() <= 63
                        && local
                            .chars()
                            .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch)),
                    "{}",
                    c.name
                );
                // A webhook's conditions have object, oldObject, request and authorizer only.
                for absent in ["params", "namespaceObject", "variables"] {
                    assert!(
                        !c.expression.contains(absent),
                        "{name}: {} reads {absent}",
                        c.name
                    );
                }
            }
        }
    }
}

/// How many calls the conditions of `bundle` avoid among `reviews` (name, endpoint, request):
/// (avoided, sent).
fn avoided(bundle: &Bundle, reviews: &[(String, Endpoint, Value)]) -> (usize, usize) {
    let validating = Conditions::new(&match_conditions::validating(bundle));
    let mutating = Conditions::new(&match_conditions::mutating(bundle));
    let skipped = reviews
        .iter()
        .filter(|(_, endpoint, request)| match endpoint {
            Endpoint::Validate => validating.skip(request),
            Endpoint::Mutate => mutating.skip(request),
        })
        .count();
    (skipped, reviews.len())
}

/// The figures of BENCHMARKS.md ("Calls the API server no longer makes").
#[test]
fn calls_avoided_on_the_captured_reviews_and_the_load_scenarios() {
    let default =
        palisade::bundle::load(&repo_path("policies"), &EngineOptions::default()).unwrap();
    let (captures, bench): (Vec<_>, Vec<_>) = captured()
        .into_iter()
        .partition(|(name, _, _)| name.starts_with("tests/data/admission"));
    // Each API request behind the captures is one `validate-*` file (the `mutate-*` ones are
    // the same requests at the other webhook), sent to each webhook whose rules name it.
    let rules = |endpoint: Endpoint| -> Vec<Value> {
        let rules = match endpoint {
            Endpoint::Validate => palisade::webhooks::validating_rules(&default),
            Endpoint::Mutate => palisade::webhooks::mutating_rules(&default),
        };
        rules.iter().map(|r| r.to_json()).collect()
    };
    let sent = |rules: &[Value], request: &Value| -> bool {
        let resource = match request["subResource"].as_str() {
            Some(sub) if !sub.is_empty() => {
                format!(
                    "{}/{sub}",
                    request["resource"]["resource"].as_str().unwrap()
                )
            }
            _ => request["resource"]["resource"].as_str().unwrap().to_owned(),
        };
        let group = request["resource"]["group"].as_str().unwrap_or_default();
        let has = |list: &Value, item: &str| {
            list.as_array()
                .unwrap()
                .iter()
                .any(|x| x == item || (x == "*" && !item.contains('/')))
        };
        rules.iter().any(|r| {
            has(&r["apiGroups"], group)
                && has(&r["operations"], request["operation"].as_str().unwrap())
                && has(&r["resources"], &resource)
        })
    };
    let mut calls = Vec::new();
    for (name, _, request) in captures.iter().filter(|(n, _, _)| n.contains("/validate-")) {
        for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
            if sent(&rules(endpoint), request) {
                calls.push((format!("{name} at {endpoint:?}"), endpoint, request.clone()));
            }
        }
    }
    let as_captured = avoided(&default, &captures);
    let with_rules = avoided(&default, &calls);
    let load = avoided(&default, &bench);
    let load_empty = avoided(&bundle_of(""), &bench);
    eprintln!(
        "default bundle: calls avoided (avoided, calls) as captured {as_captured:?}; the requests sent as Palisade's rules send them {with_rules:?}; the load scenarios' bodies {load:?}, with the empty bundle {load_empty:?}"
    );
    assert_eq!(as_captured, (1, 15), "the captured calls");
    assert_eq!(
        with_rules,
        (2, 13),
        "the captured requests, as the rules send them"
    );
    assert_eq!(load, (0, 2), "the load scenarios' bodies");
    assert_eq!(
        load_empty,
        (2, 2),
        "the load scenarios' bodies, empty bundle"
    );
}

#[test]
fn manifests_with_match_conditions_validate_for_kubernetes_1_30_and_without_are_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec![DENY_ALL.to_owned(), CONFIG.to_owned()];
    all.extend(CONSTRAINTS.iter().map(|c| constraint(c)));
    all.extend(MUTATORS.iter().map(|m| (*m).to_owned()));
    std::fs::write(dir.path().join("all.yaml"), all.join("\n---\n")).unwrap();
    let default = repo_path("policies").display().to_string();
    let generated = dir.path().display().to_string();
    for policies in [&default, &generated] {
        let run = |extra: &[&str]| {
            let mut args = vec!["manifests", "--policies", policies.as_str()];
            args.extend(extra);
            let (code, out, err) = palisade_cli(&args);
            assert_eq!(code, 0, "{err}");
            out
        };
        let plain = run(&[]);
        assert!(!plain.contains("matchConditions"), "{plain}");
        let with = run(&["--match-conditions"]);
        let objects: Vec<Value> = palisade::manifest::parse_str(&with, Path::new("manifests"))
            .unwrap()
            .into_iter()
            .map(|d| d.value)
            .collect();
        let conditions: Vec<&Value> = objects
            .iter()
            .flat_map(|o| o["webhooks"].as_array().unwrap())
            .filter_map(|w| w.get("matchConditions"))
            .collect();
        assert!(!conditions.is_empty(), "{with}");
        let unknown = crate::deploy::validate_schemas_at(
            "palisade manifests --match-conditions",
            &(with.clone(), objects),
            Some(crate::deploy::KUBERNETES_VERSION),
        );
        assert!(unknown.is_empty(), "no schema for {unknown:?}");
    }
    let plain = palisade_cli(&["manifests", "--policies", &default]).1;
    assert_eq!(
        plain,
        std::fs::read_to_string(repo_path("manifests/base/webhooks.yaml")).unwrap()
    );
}
