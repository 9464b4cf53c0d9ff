//! The generated objects, the mutators that do not map, and equivalence: what the generated CEL
//! does to sample objects (evaluated with cel-rust) against what Palisade's mutators do.

use super::*;
use crate::admission::Review;
use crate::manifest::parse_str;
use crate::matcher::Match;
use crate::policy::cel::to_owned_val;
use cel::Value as CelValue;
use cel::objects::Key;
use std::path::Path;

fn mutators(yaml: &str) -> Mutators {
    let docs = parse_str(yaml, Path::new("m.yaml")).unwrap();
    Mutators::new(docs.iter().map(|d| Mutator::parse(d).unwrap()).collect())
}

fn gen_with(yaml: &str, config: &Config) -> (Vec<Value>, Vec<Unmapped>) {
    generate(&mutators(yaml), &[], config, "palisade-system")
}

fn gen_of(yaml: &str) -> (Vec<Value>, Vec<Unmapped>) {
    gen_with(yaml, &Config::default())
}

fn assign(name: &str, kinds: &str, location: &str, value: &str, extra: &str) -> String {
    format!(
        "apiVersion: mutations.gatekeeper.sh/v1\nkind: Assign\nmetadata: {{name: {name}}}\nspec:\n  applyTo: [{kinds}]\n  location: '{location}'\n  parameters:\n    assign: {{value: {value}}}\n{extra}---\n"
    )
}

const POD: &str = "{groups: [\"\"], kinds: [Pod], versions: [v1]}";
const DEPLOYMENT: &str = "{groups: [apps], kinds: [Deployment], versions: [v1]}";

fn label(name: &str, key: &str, value: &str, matcher: &str) -> String {
    format!(
        "apiVersion: mutations.gatekeeper.sh/v1\nkind: AssignMetadata\nmetadata: {{name: {name}}}\nspec:\n{matcher}  location: 'metadata.labels.\"{key}\"'\n  parameters: {{assign: {{value: \"{value}\"}}}}\n---\n"
    )
}

fn policy<'a>(objects: &'a [Value], name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == "MutatingAdmissionPolicy" && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no policy {name} in {objects:#?}"))
}

fn expression(policy: &Value) -> &str {
    let m = &policy["spec"]["mutations"][0];
    m["applyConfiguration"]["expression"]
        .as_str()
        .or(m["jsonPatch"]["expression"].as_str())
        .unwrap()
}

// ---- the objects ----

#[test]
fn assign_metadata_becomes_a_json_patch_add_when_absent_and_its_binding() {
    let (objects, unmapped) = gen_of(&label("mesh", "sidecar.istio.io/inject", "true", ""));
    assert!(unmapped.is_empty(), "{unmapped:?}");
    assert_eq!(objects.len(), 2);
    let ns = namespace_name();
    assert_eq!(
        objects[0],
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicy",
            "metadata": {"name": "palisade-assignmetadata-mesh",
                         "labels": {"app.kubernetes.io/managed-by": "palisade"}},
            "spec": {
                "failurePolicy": "Fail",
                "reinvocationPolicy": "IfNeeded",
                "matchConstraints": {
                    "matchPolicy": "Exact",
                    "resourceRules": [{"apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"],
                                       "operations": ["CREATE", "UPDATE"], "scope": "*"}],
                    "excludeResourceRules": [{"apiGroups": [""], "apiVersions": ["*"], "resources": ["pods"],
                                              "operations": ["UPDATE"], "scope": "*"}],
                },
                "matchConditions": [{"name": "palisade-exempt-namespaces",
                                     "expression": format!("!({ns} in [\"kube-system\", \"palisade-system\"])")}],
                "mutations": [{"patchType": "JSONPatch", "jsonPatch": {"expression":
                    "!has(object.metadata.labels) ? [JSONPatch{op: \"add\", path: \"/metadata/labels\", value: {\"sidecar.istio.io/inject\": \"true\"}}] : (\"sidecar.istio.io/inject\" in object.metadata.labels ? [] : [JSONPatch{op: \"add\", path: \"/metadata/labels/sidecar.istio.io~1inject\", value: \"true\"}])"}}],
            }
        })
    );
    assert_eq!(
        objects[1],
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicyBinding",
            "metadata": {"name": "palisade-assignmetadata-mesh",
                         "labels": {"app.kubernetes.io/managed-by": "palisade"}},
            "spec": {"policyName": "palisade-assignmetadata-mesh"},
        })
    );
}

#[test]
fn assign_on_a_pod_field_becomes_a_guarded_apply_configuration() {
    let loc = "spec.securityContext.runAsNonRoot";
    let yaml = assign(
        "nonroot",
        POD,
        loc,
        "true",
        &format!("    pathTests: [{{subPath: '{loc}', condition: MustNotExist}}]\n"),
    );
    let (objects, unmapped) = gen_of(&yaml);
    assert!(unmapped.is_empty(), "{unmapped:?}");
    let p = policy(&objects, "palisade-assign-nonroot");
    assert_eq!(
        p["spec"]["matchConstraints"]["resourceRules"],
        json!([{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"],
                "operations": ["CREATE"], "scope": "*"}])
    );
    assert_eq!(
        expression(p),
        "!(has(object.spec) && has(object.spec.securityContext) && has(object.spec.securityContext.runAsNonRoot)) ? Object{spec: Object.spec{securityContext: Object.spec.securityContext{runAsNonRoot: true}}} : Object{}"
    );
}

#[test]
fn assign_through_a_container_glob_maps_over_the_containers_by_name() {
    let loc = "spec.template.spec.containers[name: *].securityContext.allowPrivilegeEscalation";
    let yaml = assign(
        "noescalation",
        DEPLOYMENT,
        loc,
        "false",
        &format!("    pathTests: [{{subPath: '{loc}', condition: MustNotExist}}]\n"),
    );
    let (objects, unmapped) = gen_of(&yaml);
    assert!(unmapped.is_empty(), "{unmapped:?}");
    let p = policy(&objects, "palisade-assign-noescalation");
    assert_eq!(
        p["spec"]["matchConstraints"]["resourceRules"][0]["operations"],
        json!(["CREATE", "UPDATE"])
    );
    assert_eq!(
        expression(p),
        "has(object.spec) && has(object.spec.template) && has(object.spec.template.spec) && has(object.spec.template.spec.containers) \
         && object.spec.template.spec.containers.exists(c, !(has(c.securityContext) && has(c.securityContext.allowPrivilegeEscalation))) \
         ? Object{spec: Object.spec{template: Object.spec.template{spec: Object.spec.template.spec{containers: \
         object.spec.template.spec.containers.filter(c, !(has(c.securityContext) && has(c.securityContext.allowPrivilegeEscalation)))\
         .map(c, Object.spec.template.spec.containers{name: c.name, securityContext: Object.spec.template.spec.containers.securityContext{allowPrivilegeEscalation: false}})}}}} : Object{}"
    );
}

#[test]
fn a_named_container_is_selected_by_its_name() {
    let yaml = assign(
        "pull",
        POD,
        "spec.initContainers[name: setup].imagePullPolicy",
        "Always",
        "",
    );
    let (objects, _) = gen_of(&yaml);
    let e = expression(policy(&objects, "palisade-assign-pull"));
    assert!(
        e.contains("object.spec.initContainers.filter(c, c.name == \"setup\")"),
        "{e}"
    );
    assert!(e.contains("imagePullPolicy: \"Always\""), "{e}");
}

#[test]
fn match_becomes_selectors_and_conditions() {
    let matcher = "  match:\n    kinds: [{apiGroups: [\"\"], kinds: [Pod]}, {apiGroups: [apps], kinds: [Deployment]}]\n    scope: Namespaced\n    namespaces: [\"team-*\"]\n    excludedNamespaces: [team-legacy]\n    labelSelector: {matchLabels: {tier: web}}\n    namespaceSelector: {matchExpressions: [{key: env, operator: In, values: [prod]}]}\n    name: \"web-*\"\n";
    let (objects, unmapped) = gen_of(&label("team", "team", "x", matcher));
    assert!(unmapped.is_empty(), "{unmapped:?}");
    let p = policy(&objects, "palisade-assignmetadata-team");
    let c = &p["spec"]["matchConstraints"];
    assert_eq!(
        c["resourceRules"],
        json!([
            {"apiGroups": [""], "apiVersions": ["*"], "resources": ["pods"], "operations": ["CREATE"], "scope": "Namespaced"},
            {"apiGroups": ["apps"], "apiVersions": ["*"], "resources": ["deployments"], "operations": ["CREATE", "UPDATE"], "scope": "Namespaced"},
        ])
    );
    assert!(c.get("excludeResourceRules").is_none());
    assert_eq!(
        c["objectSelector"],
        json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]})
    );
    assert_eq!(
        c["namespaceSelector"],
        json!({"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]})
    );
    let names: Vec<&str> = p["spec"]["matchConditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "palisade-exempt-namespaces",
            "match-namespaces",
            "match-excluded-namespaces",
            "match-name"
        ]
    );
}

#[test]
fn objects_come_in_mutator_order_each_policy_then_its_binding() {
    let yaml = label("b", "b", "1", "")
        + &label("a", "a", "1", "")
        + &assign("z", POD, "spec.hostPID", "false", "");
    let (objects, _) = gen_of(&yaml);
    let names: Vec<String> = objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            "MutatingAdmissionPolicy/palisade-assign-z",
            "MutatingAdmissionPolicyBinding/palisade-assign-z",
            "MutatingAdmissionPolicy/palisade-assignmetadata-a",
            "MutatingAdmissionPolicyBinding/palisade-assignmetadata-a",
            "MutatingAdmissionPolicy/palisade-assignmetadata-b",
            "MutatingAdmissionPolicyBinding/palisade-assignmetadata-b",
        ]
    );
}

// ---- what does not map ----

fn reason(yaml: &str, config: &Config, name: &str) -> String {
    let (objects, unmapped) = gen_with(yaml, config);
    let found = unmapped
        .iter()
        .find(|(_, n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} was mapped: {objects:#?}"));
    assert!(
        !objects.iter().any(|o| o["metadata"]["name"]
            .as_str()
            .unwrap()
            .ends_with(&format!("-{name}"))),
        "{name} is both mapped and unmapped"
    );
    found.2.clone()
}

#[test]
fn unmappable_mutators_are_reported_with_their_reason() {
    let default = Config::default();
    let modify_set = "apiVersion: mutations.gatekeeper.sh/v1\nkind: ModifySet\nmetadata: {name: caps}\nspec:\n  applyTo: [{groups: [\"\"], kinds: [Pod], versions: [v1]}]\n  location: 'spec.containers[name: *].securityContext.capabilities.drop'\n  parameters: {operation: merge, values: {fromList: [ALL]}}\n";
    let cases: Vec<(String, &str, &str)> = vec![
        (
            modify_set.to_owned(),
            "caps",
            "ModifySet adds to or removes from a list as a set",
        ),
        (
            assign(
                "obj",
                POD,
                "spec.securityContext.seccompProfile",
                "{type: RuntimeDefault}",
                "",
            ),
            "obj",
            "assign.value is a mapping",
        ),
        (
            assign("unknown", POD, "spec.nodeSelector.zone", "a", ""),
            "unknown",
            "not a field Palisade knows",
        ),
        (
            assign("type", POD, "spec.hostPID", "\"yes\"", ""),
            "type",
            "is not the Bool",
        ),
        (
            assign(
                "wild",
                "{groups: [\"*\"], kinds: [Pod], versions: [v1]}",
                "spec.hostPID",
                "false",
                "",
            ),
            "wild",
            "applyTo has a wildcard",
        ),
        (
            assign(
                "crd",
                "{groups: [example.com], kinds: [Widget], versions: [v1]}",
                "spec.hostPID",
                "false",
                "",
            ),
            "crd",
            "kind Widget (group \"example.com\") has no pod spec",
        ),
        (
            assign(
                "ports",
                POD,
                "spec.containers[name: *].ports[containerPort: 80].protocol",
                "TCP",
                "",
            ),
            "ports",
            "not a field Palisade knows",
        ),
        (
            assign("envs", POD, "spec.volumes[name: *].name", "x", ""),
            "envs",
            "only containers and initContainers",
        ),
        (
            assign(
                "root",
                DEPLOYMENT,
                "spec.securityContext.runAsNonRoot",
                "true",
                "",
            ),
            "root",
            "is not under the pod spec (spec.template.spec)",
        ),
        (
            assign(
                "mixed",
                &format!("{POD}, {DEPLOYMENT}"),
                "spec.hostPID",
                "false",
                "",
            ),
            "mixed",
            "pod specs are at different paths",
        ),
        (
            assign("generated", POD, "spec.hostPID", "false", "")
                .replace("  location:", "  match: {source: Generated}\n  location:"),
            "generated",
            "match.source is Generated",
        ),
    ];
    for (yaml, name, needle) in cases {
        let why = reason(&yaml, &default, name);
        assert!(
            why.contains(needle),
            "{name}: {why:?} should say {needle:?}"
        );
        assert!(!why.contains('\n'), "one line: {why}");
    }
}

#[test]
fn break_glass_keeps_pod_mutators_on_the_webhook() {
    let config = Config::parse("breakGlass: {users: [alice]}\n", "c.yaml").unwrap();
    let yaml = assign(
        "nonroot",
        POD,
        "spec.securityContext.runAsNonRoot",
        "true",
        "",
    ) + &label(
        "svc",
        "team",
        "x",
        "  match: {kinds: [{apiGroups: [\"\"], kinds: [Service]}]}\n",
    );
    let why = reason(&yaml, &config, "nonroot");
    assert!(why.contains("break-glass"), "{why}");
    let (objects, _) = gen_with(&yaml, &config);
    policy(&objects, "palisade-assignmetadata-svc");
    // Without break-glass users, the same mutator maps.
    let (objects, _) = gen_of(&yaml);
    policy(&objects, "palisade-assign-nonroot");
}

#[test]
fn mutators_that_depend_on_each_other_stay_on_the_webhook() {
    let default = Config::default();
    // A selector on a label another AssignMetadata adds.
    let yaml = label("team", "team", "payments", "")
        + &assign(
            "seccomp",
            POD,
            "spec.securityContext.seccompProfile.type",
            "RuntimeDefault",
            "",
        )
        .replace(
            "  location:",
            "  match: {labelSelector: {matchLabels: {team: payments}}}\n  location:",
        );
    assert!(
        reason(&yaml, &default, "seccomp")
            .contains("reads label \"team\", which AssignMetadata team adds")
    );
    // Overlapping locations, and a path test on what another sets.
    let yaml = assign("a", POD, "spec.securityContext.runAsNonRoot", "true", "")
        + &assign("b", POD, "spec.securityContext.runAsNonRoot", "false", "")
        + &assign(
            "c",
            POD,
            "spec.securityContext.runAsUser",
            "1000",
            "    pathTests: [{subPath: 'spec.securityContext', condition: MustExist}]\n",
        )
        + &assign("d", POD, "spec.hostPID", "false", "");
    for name in ["a", "b"] {
        assert!(reason(&yaml, &default, name).contains("overlaps"), "{name}");
    }
    assert!(
        reason(&yaml, &default, "c")
            .contains("pathTest on spec.securityContext depends on what Assign a sets")
    );
    let (objects, _) = gen_of(&yaml);
    policy(&objects, "palisade-assign-d");
    // The same label with two values.
    let yaml = label("x1", "team", "a", "")
        + &label("x2", "team", "b", "")
        + &label("x3", "team", "a", "");
    assert!(reason(&yaml, &default, "x1").contains("with another value"));
    assert!(reason(&yaml, &default, "x2").contains("with another value"));
}

// ---- equivalence, evaluated ----

/// cel-rust has no message construction: `JSONPatch{op: …}` and `Object.a.b{f: …}` become the
/// maps `{"op": …}` and `{"f": …}`, the one rewrite made before evaluating the generated text.
fn as_maps(expr: &str) -> String {
    let types = regex::Regex::new(r"(JSONPatch|Object(\.[A-Za-z]+)*)\{").unwrap();
    let out = types.replace_all(expr, "{");
    let fields = regex::Regex::new(r"([{,] ?)([A-Za-z]+): ").unwrap();
    fields.replace_all(&out, "$1\"$2\": ").into_owned()
}

fn from_cel(v: &CelValue) -> Value {
    match v {
        CelValue::Null => Value::Null,
        CelValue::Bool(b) => json!(b),
        CelValue::Int(i) => json!(i),
        CelValue::UInt(u) => json!(u),
        CelValue::Float(f) => json!(f),
        CelValue::String(s) => json!(s.as_str()),
        CelValue::List(l) => Value::Array(l.iter().map(from_cel).collect()),
        CelValue::Map(m) => Value::Object(
            m.map
                .iter()
                .map(|(k, v)| {
                    let Key::String(k) = k else {
                        panic!("key {k:?}")
                    };
                    (k.to_string(), from_cel(v))
                })
                .collect(),
        ),
        other => panic!("unexpected CEL value {other:?}"),
    }
}

fn eval(expr: &str, object: &Value, request: &Value) -> Value {
    let program = cel::Program::compile(expr).unwrap_or_else(|e| panic!("{expr}: {e:?}"));
    let mut ctx = cel::Context::default();
    ctx.add_variable_as_val("object", to_owned_val(object));
    ctx.add_variable_as_val("request", to_owned_val(request));
    from_cel(
        &program
            .execute(&ctx)
            .unwrap_or_else(|e| panic!("{expr}: {e:?}")),
    )
}

/// Server-side apply's merge for the types the generated configurations touch: objects merge
/// field by field, `containers`/`initContainers` by `name`, scalars replace.
fn apply(live: &mut Value, config: &Value) {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) => {
            for (k, v) in c {
                let slot = l.entry(k.clone()).or_insert(Value::Null);
                if (k == "containers" || k == "initContainers") && v.is_array() {
                    let items = slot.as_array_mut().expect("a list merged by key exists");
                    for want in v.as_array().unwrap() {
                        let item = items
                            .iter_mut()
                            .find(|i| i["name"] == want["name"])
                            .expect("apply configurations only name existing containers here");
                        apply(item, want);
                    }
                } else if v.is_object() {
                    if slot.is_null() {
                        *slot = json!({});
                    }
                    apply(slot, v);
                } else {
                    *slot = v.clone();
                }
            }
        }
        (_, c) => panic!("cannot apply {c} here"),
    }
}

/// What the generated policy does to `object` in `request` (None when it does not apply or
/// changes nothing), by evaluating its match conditions and mutation; the selectors and
/// resource rules are Palisade's (the same semantics, not evaluated here).
fn run_policy(p: &Value, object: &Value, request: &Value) -> Option<Value> {
    for c in p["spec"]["matchConditions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if eval(c["expression"].as_str().unwrap(), object, request) != json!(true) {
            return None;
        }
    }
    let m = &p["spec"]["mutations"][0];
    let mut out = object.clone();
    if m["patchType"] == "JSONPatch" {
        let ops = eval(
            &as_maps(m["jsonPatch"]["expression"].as_str().unwrap()),
            object,
            request,
        );
        let patch: json_patch::Patch = serde_json::from_value(ops).unwrap();
        json_patch::patch(&mut out, &patch).unwrap();
    } else {
        let config = eval(
            &as_maps(m["applyConfiguration"]["expression"].as_str().unwrap()),
            object,
            request,
        );
        apply(&mut out, &config);
    }
    (out != *object).then_some(out)
}

fn request_for(object: &Value, operation: &str) -> Value {
    let group_version = object["apiVersion"].as_str().unwrap();
    let group = group_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    json!({
        "kind": {"group": group, "version": "v1", "kind": object["kind"]},
        "name": object["metadata"]["name"],
        "namespace": object["metadata"]["namespace"].as_str().unwrap_or(""),
        "operation": operation,
    })
}

fn review(object: &Value, request: &Value, old: Option<&Value>) -> Review {
    let mut body = request.clone();
    body["uid"] = json!("u");
    body["resource"] = json!({"group": "", "version": "v1", "resource": "x"});
    body["userInfo"] = json!({"username": "u"});
    body["object"] = object.clone();
    if let Some(old) = old {
        body["oldObject"] = old.clone();
    }
    let text =
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": body});
    crate::admission::decode(text.to_string().as_bytes()).unwrap()
}

fn pod(ns: &str, labels: Value, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "web-1", "namespace": ns, "labels": labels}, "spec": spec})
}

fn deployment(ns: &str, pod_spec: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "web", "namespace": ns},
           "spec": {"selector": {}, "template": {"metadata": {}, "spec": pod_spec}}})
}

fn containers(n: usize, with: Value) -> Value {
    Value::Array(
        (0..n)
            .map(|i| {
                let mut c = json!({"name": format!("c{i}"), "image": "nginx"});
                if i == 1 {
                    c["securityContext"] = with.clone();
                }
                c
            })
            .collect(),
    )
}

#[test]
fn mapped_mutators_do_what_palisades_do_on_sample_objects() {
    let alp = "spec.containers[name: *].securityContext.allowPrivilegeEscalation";
    let ro = "spec.template.spec.initContainers[name: *].securityContext.readOnlyRootFilesystem";
    let yaml = label("mesh", "sidecar.istio.io/inject", "true", "")
        + &label("note", "x", "y", "").replace("labels", "annotations")
        + &assign("nonroot", POD, "spec.securityContext.runAsNonRoot", "true", "    pathTests: [{subPath: 'spec.securityContext.runAsNonRoot', condition: MustNotExist}]\n")
        + &assign("seccomp", POD, "spec.securityContext.seccompProfile.type", "RuntimeDefault", "    pathTests: [{subPath: 'spec.securityContext.seccompProfile', condition: MustExist}]\n")
        + &assign("ape", POD, alp, "false", &format!("    pathTests: [{{subPath: '{alp}', condition: MustNotExist}}]\n"))
        + &assign("pull", POD, "spec.containers[name: c1].imagePullPolicy", "Always", "")
        + &assign("ro", DEPLOYMENT, ro, "true", "")
        + &assign("dnone", DEPLOYMENT, "spec.template.spec.automountServiceAccountToken", "false", "")
            .replace("  location:", "  match: {namespaces: [\"team-*\"], excludedNamespaces: [team-legacy], name: \"we*\"}\n  location:");
    let all = mutators(&yaml);
    let (objects, unmapped) = generate(&all, &[], &Config::default(), "palisade-system");
    assert!(unmapped.is_empty(), "{unmapped:?}");
    let mut samples = Vec::new();
    for ns in [
        "team-a",
        "team-legacy",
        "kube-system",
        "palisade-system",
        "other",
    ] {
        for labels in [
            json!({}),
            json!({"sidecar.istio.io/inject": "false"}),
            json!({"app": "x"}),
        ] {
            for n in [0, 1, 3] {
                for sc in [
                    json!({}),
                    json!({"allowPrivilegeEscalation": true, "runAsNonRoot": false}),
                ] {
                    let mut spec = json!({"containers": containers(n, sc.clone())});
                    spec["initContainers"] = containers(n, sc.clone());
                    if n == 1 {
                        spec["securityContext"] = json!({"runAsNonRoot": false});
                    }
                    samples.push((pod(ns, labels.clone(), spec.clone()), "CREATE", None));
                    let d = deployment(ns, spec);
                    samples.push((d.clone(), "CREATE", None));
                    samples.push((d.clone(), "UPDATE", Some(d)));
                }
            }
        }
        let mut bare = pod(
            ns,
            json!(null),
            json!({"containers": containers(1, json!({}))}),
        );
        bare["metadata"].as_object_mut().unwrap().remove("labels");
        samples.push((bare, "CREATE", None));
    }
    let decider = crate::config::Config::default();
    let mut compared = 0;
    for m in all.list() {
        let p = policy(&objects, &policy_name(m.kind, &m.name));
        let one = Mutators::new(vec![m.clone()]);
        for (object, op, old) in &samples {
            let request = request_for(object, op);
            let r = review(object, &request, old.as_ref());
            // Palisade's path: exempt namespaces, then (on a Pod's UPDATE nothing), the mutator.
            let exempt =
                ["kube-system", "palisade-system"].contains(&r.object_ref().effective_namespace());
            let in_rules = p["spec"]["matchConstraints"]["resourceRules"]
                .as_array()
                .unwrap()
                .iter()
                .any(|rule| {
                    let res = rule["resources"][0].as_str().unwrap();
                    let kind_res = if object["kind"] == "Pod" {
                        "pods"
                    } else {
                        "deployments"
                    };
                    (res == "*" || res == kind_res)
                        && rule["operations"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|o| o == *op)
                });
            let excluded = p["spec"]["matchConstraints"]["excludeResourceRules"]
                .as_array()
                .is_some_and(|rules| {
                    rules
                        .iter()
                        .any(|_| object["kind"] == "Pod" && *op == "UPDATE")
                });
            let palisade = if exempt
                || !decider.mode(r.object_ref().effective_namespace()).mutation
                || (object["kind"] == "Pod" && *op == "UPDATE")
            {
                None
            } else {
                one.mutate(&r, None).unwrap()
            };
            let map = if in_rules && !excluded {
                run_policy(p, object, &request)
            } else {
                None
            };
            assert_eq!(
                map,
                palisade,
                "{} {}: {op} {object}\nexpression: {}",
                m.kind.as_str(),
                m.name,
                expression(p)
            );
            compared += 1;
        }
    }
    assert!(compared > 1000, "{compared}");
}

#[test]
fn namespace_conditions_agree_with_palisades_matching() {
    let config = Config::parse(
        "namespaces:\n  - names: [batch]\n    enforcement: warn\n  - names: [\"bat*\", legacy]\n    mutation: false\n",
        "c.yaml",
    )
    .unwrap();
    let yaml = label(
        "l",
        "k",
        "v",
        "  match:\n    namespaces: [\"*a*\", \"b*\", \"*y\", legacy, \"*\"]\n    excludedNamespaces: [\"*tch\"]\n    name: \"*-1\"\n",
    );
    let excluded = vec!["gk-*".to_owned(), "*-tmp".to_owned()];
    let (objects, _) = generate(&mutators(&yaml), &excluded, &config, "palisade-system");
    let p = policy(&objects, "palisade-assignmetadata-l");
    let all = mutators(&yaml);
    let matcher = &all.list()[0].matcher;
    for ns in [
        "",
        "batch",
        "bath",
        "legacy",
        "gk-x",
        "a-tmp",
        "kube-system",
        "palisade-system",
        "away",
        "abby",
        "dispatch",
        "x",
    ] {
        for name in ["web-1", "web-2"] {
            for kind in ["Pod", "Namespace", "ClusterRole"] {
                let object = match kind {
                    "Namespace" => {
                        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": if ns.is_empty() { name } else { ns }}})
                    }
                    "ClusterRole" => {
                        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name}})
                    }
                    _ => {
                        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns}})
                    }
                };
                if kind == "Pod" && ns.is_empty() {
                    continue;
                }
                let request = request_for(&object, "CREATE");
                let r = review(&object, &request, None);
                let effective = r.object_ref().effective_namespace();
                let exempt = ["kube-system", "palisade-system"].contains(&effective);
                let config_excludes = !effective.is_empty()
                    && excluded.iter().any(|g| Glob::new(g).matches(effective));
                let palisade = !exempt
                    && !config_excludes
                    && config.mode(effective).mutation
                    && Match::matches(matcher, &r, None).unwrap();
                let cel = p["spec"]["matchConditions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|c| {
                        eval(c["expression"].as_str().unwrap(), &object, &request) == json!(true)
                    });
                assert_eq!(cel, palisade, "{kind} {name} in {ns:?}");
            }
        }
    }
}

#[test]
fn every_generated_expression_parses_as_cel() {
    let alp = "spec.containers[name: *].securityContext.allowPrivilegeEscalation";
    let yaml = label("a", "a~b/c", "v\\\"1", "")
        + &assign(
            "b",
            POD,
            alp,
            "false",
            &format!("    pathTests: [{{subPath: '{alp}', condition: MustNotExist}}]\n"),
        );
    let (objects, _) = gen_of(&yaml);
    for o in objects
        .iter()
        .filter(|o| o["kind"] == "MutatingAdmissionPolicy")
    {
        let e = expression(o);
        cel::Program::compile(e).unwrap_or_else(|err| panic!("{e}: {err:?}"));
        for c in o["spec"]["matchConditions"].as_array().unwrap() {
            cel::Program::compile(c["expression"].as_str().unwrap()).unwrap();
        }
    }
    // A key with `~` and `/` (escaped in the patch path) and a value with a quote.
    let object = pod("n", json!({}), json!({}));
    let p = policy(&objects, "palisade-assignmetadata-a");
    let out = run_policy(p, &object, &request_for(&object, "CREATE")).unwrap();
    assert_eq!(out["metadata"]["labels"]["a~b/c"], "v\"1");
}
