//! MutatingAdmissionPolicies (admissionregistration.k8s.io/v1, GA in Kubernetes 1.36) for the
//! mutators that map exactly onto one, so that the API server can apply them itself.
//!
//! Only what is certain to do what Palisade's webhook does is mapped; everything else is
//! returned with the reason, one line each:
//!
//! - `AssignMetadata`: a JSON patch `add`, only when the label or annotation is absent (the
//!   mutator only adds), creating the map when the object has none.
//! - `Assign` of a scalar on a pod spec field that is known to be a plain (granular) field of
//!   a granular struct, at the pod level or in `containers`/`initContainers` selected by
//!   `[name: *]` or `[name: <value>]`: an apply configuration, which server-side apply merges
//!   field by field and, for those lists (`listType: map`, keyed by `name`), element by element,
//!   so it sets exactly the selected fields and creates their missing parents as Palisade does.
//!   A non-scalar value, a field of unknown merge strategy, another list or another kind is not
//!   mapped: an apply configuration merges an object into what is there (Palisade replaces it)
//!   and replaces atomic lists and structs.
//! - `match` and Palisade's own exemptions: kinds → `resourceRules` (with Pods on CREATE only,
//!   as the webhook does), `labelSelector` → `objectSelector` and `namespaceSelector` →
//!   `namespaceSelector` (both with the same semantics in Kubernetes, old object included on
//!   UPDATE), and the namespace names (exempt namespaces, the bundle's `Config` for mutation,
//!   the configuration file's `mutation: false`, `namespaces`, `excludedNamespaces`, `name`)
//!   → CEL `matchConditions` on the namespace name the API server sets.
//!
//! Mutators that depend on each other (a selector on a label another mutator adds, locations that
//! overlap, the same label added with different values) are not mapped: Palisade applies its
//! mutators to a fixed point in a fixed order, and the order of admission policies is not
//! guaranteed.
//!
//! [`generate`] makes the objects; the webhook configuration is not changed here.

use crate::policy::cel::string_literal as cel_string;
use serde_json::{Value, json};

use super::location::{Segment, Selector};
use super::{Condition, Kind, Mutator, Mutators, Operation};
use crate::config::Config;
use crate::matcher::{Glob, LabelSelector, Operator, Scope, SourceMatch};
use crate::webhooks::{EXCLUDED_NAMESPACES, resource_of};

/// A mutator that stays on the webhook: (kind, name, why).
pub type Unmapped = (String, String, String);

/// What the namespace name of a request is to Palisade (`ObjectRef::effective_namespace`): a
/// Namespace's own name, else the request's namespace, else the object's.
const NAME: &str = "(request.name != \"\" ? request.name : (has(object.metadata.name) ? object.metadata.name : \"\"))";

fn namespace_name() -> String {
    format!(
        "(request.kind.group == \"\" && request.kind.kind == \"Namespace\" ? {NAME} : (request.namespace != \"\" ? request.namespace : (has(object.metadata.namespace) ? object.metadata.namespace : \"\")))"
    )
}

/// How server-side apply and CEL see a whitelisted leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaf {
    Bool,
    Int,
    Str,
}

/// Pod spec fields (relative to the pod spec) that are scalars under granular structs only.
const POD_FIELDS: &[(&[&str], Leaf)] = &[
    (&["securityContext", "runAsNonRoot"], Leaf::Bool),
    (&["securityContext", "runAsUser"], Leaf::Int),
    (&["securityContext", "runAsGroup"], Leaf::Int),
    (&["securityContext", "fsGroup"], Leaf::Int),
    (&["securityContext", "fsGroupChangePolicy"], Leaf::Str),
    (&["securityContext", "seccompProfile", "type"], Leaf::Str),
    (&["securityContext", "appArmorProfile", "type"], Leaf::Str),
    (&["automountServiceAccountToken"], Leaf::Bool),
    (&["enableServiceLinks"], Leaf::Bool),
    (&["hostNetwork"], Leaf::Bool),
    (&["hostPID"], Leaf::Bool),
    (&["hostIPC"], Leaf::Bool),
    (&["shareProcessNamespace"], Leaf::Bool),
    (&["priorityClassName"], Leaf::Str),
    (&["runtimeClassName"], Leaf::Str),
    (&["serviceAccountName"], Leaf::Str),
    (&["terminationGracePeriodSeconds"], Leaf::Int),
    (&["dnsPolicy"], Leaf::Str),
    (&["schedulerName"], Leaf::Str),
];

/// Container fields (relative to one container), likewise.
const CONTAINER_FIELDS: &[(&[&str], Leaf)] = &[
    (&["securityContext", "runAsNonRoot"], Leaf::Bool),
    (&["securityContext", "runAsUser"], Leaf::Int),
    (&["securityContext", "runAsGroup"], Leaf::Int),
    (&["securityContext", "readOnlyRootFilesystem"], Leaf::Bool),
    (&["securityContext", "allowPrivilegeEscalation"], Leaf::Bool),
    (&["securityContext", "privileged"], Leaf::Bool),
    (&["securityContext", "procMount"], Leaf::Str),
    (&["securityContext", "seccompProfile", "type"], Leaf::Str),
    (&["securityContext", "appArmorProfile", "type"], Leaf::Str),
    (&["imagePullPolicy"], Leaf::Str),
    (&["terminationMessagePolicy"], Leaf::Str),
    (&["stdin"], Leaf::Bool),
    (&["stdinOnce"], Leaf::Bool),
    (&["tty"], Leaf::Bool),
    (&["workingDir"], Leaf::Str),
];

/// The pod spec lists keyed by `name` (`listType: map`) that an apply configuration merges by
/// element.
const CONTAINER_LISTS: [&str; 2] = ["containers", "initContainers"];

/// The mutation of one mapped mutator, in parts the tests evaluate on their own.
#[derive(Debug, Clone, PartialEq)]
enum Plan {
    /// JSON patch: when `!has(<map>)`, add the whole map; else, unless the key is in it, add it.
    Metadata {
        map: String,
        key: String,
        value: String,
    },
    /// Apply configuration, applied only when `guard` holds. With `list`, the configuration
    /// sets the field on the elements `selection` returns (by name).
    Assign {
        guard: String,
        list: Option<ListPlan>,
        apply: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
struct ListPlan {
    /// The list's fields from the object's root (`spec.template.spec.containers`).
    fields: Vec<String>,
    /// CEL: the selected elements.
    selection: String,
    /// The field's path within an element.
    inner: Vec<String>,
}

/// One mapped mutator, before it becomes YAML.
#[derive(Debug, Clone, PartialEq)]
struct Mapped {
    kind: Kind,
    name: String,
    rules: Vec<Value>,
    exclude_rules: Vec<Value>,
    object_selector: Option<Value>,
    namespace_selector: Option<Value>,
    conditions: Vec<(String, String)>,
    plan: Plan,
}

/// The MutatingAdmissionPolicies and their bindings for the mutators that map exactly (each
/// policy followed by its binding, in the mutators' order), and the mutators that do not, with
/// why. `config` is the configuration file (`mutation: false` namespaces, break-glass), and
/// `own_namespace` Palisade's namespace, exempt like kube-system.
pub fn generate(
    mutators: &Mutators,
    excluded_from_mutation: &[String],
    config: &Config,
    own_namespace: &str,
) -> (Vec<Value>, Vec<Unmapped>) {
    let mut unmapped = Vec::new();
    let mut mapped = Vec::new();
    for m in mutators.list() {
        match plan(m, excluded_from_mutation, config, own_namespace) {
            Ok(p) => mapped.push((m, p)),
            Err(why) => unmapped.push((m.kind.as_str().to_owned(), m.name.clone(), why)),
        }
    }
    let conflicts = conflicts(&mapped);
    let mut objects = Vec::new();
    for (m, p) in mapped {
        if let Some(why) = conflicts.iter().find(|(n, _)| *n == m.name).map(|c| &c.1) {
            unmapped.push((m.kind.as_str().to_owned(), m.name.clone(), why.clone()));
            continue;
        }
        objects.extend(render(&p));
    }
    (objects, unmapped)
}

/// The YAML that `palisade manifests --mutating-admission-policies` appends: a note, one
/// comment line per mutator that stays on the webhook, then each policy and its binding.
/// `config` is the configuration the webhook runs with (the default when none is known).
pub fn manifests(
    bundle: &crate::bundle::Bundle,
    config: &Config,
    own_namespace: &str,
) -> Result<String, String> {
    let excluded = bundle.excluded_patterns(crate::bundle::Process::Mutation);
    let (objects, unmapped) = generate(bundle.mutators(), excluded, config, own_namespace);
    let mut out = String::from(
        "# MutatingAdmissionPolicies (admissionregistration.k8s.io/v1, Kubernetes 1.36+) for the mutators that map exactly.\n\
         # The webhook keeps applying every mutator as well; the results are the same.\n",
    );
    for (kind, name, why) in &unmapped {
        out.push_str(&format!("# {kind} {name} stays on the webhook: {why}\n"));
    }
    for object in &objects {
        out.push_str("---\n");
        out.push_str(&yaml_serde::to_string(object).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// The name of the policy and binding of a mutator.
pub fn policy_name(kind: Kind, name: &str) -> String {
    format!("palisade-{}-{name}", kind.as_str().to_lowercase())
}

fn render(m: &Mapped) -> [Value; 2] {
    let name = policy_name(m.kind, &m.name);
    let labels = json!({"app.kubernetes.io/managed-by": "palisade"});
    let mut constraints = json!({
        "matchPolicy": "Exact",
        "resourceRules": m.rules,
    });
    if !m.exclude_rules.is_empty() {
        constraints["excludeResourceRules"] = json!(m.exclude_rules);
    }
    if let Some(s) = &m.namespace_selector {
        constraints["namespaceSelector"] = s.clone();
    }
    if let Some(s) = &m.object_selector {
        constraints["objectSelector"] = s.clone();
    }
    let mutation = match &m.plan {
        Plan::Metadata { .. } => json!({
            "patchType": "JSONPatch",
            "jsonPatch": {"expression": metadata_expression(&m.plan)},
        }),
        Plan::Assign { guard, apply, .. } => {
            let expression = if guard == "true" {
                apply.clone()
            } else {
                format!("{guard} ? {apply} : Object{{}}")
            };
            json!({
                "patchType": "ApplyConfiguration",
                "applyConfiguration": {"expression": expression},
            })
        }
    };
    let mut spec = json!({
        "failurePolicy": "Fail",
        "reinvocationPolicy": "IfNeeded",
        "matchConstraints": constraints,
        "mutations": [mutation],
    });
    if !m.conditions.is_empty() {
        spec["matchConditions"] = m
            .conditions
            .iter()
            .map(|(n, e)| json!({"name": n, "expression": e}))
            .collect();
    }
    [
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicy",
            "metadata": {"name": name, "labels": labels},
            "spec": spec,
        }),
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicyBinding",
            "metadata": {"name": name, "labels": labels},
            "spec": {"policyName": name},
        }),
    ]
}

/// The JSON patch expression of an AssignMetadata plan.
fn metadata_expression(plan: &Plan) -> String {
    let Plan::Metadata { map, key, value } = plan else {
        return String::new();
    };
    let (k, v) = (cel_string(key), cel_string(value));
    format!(
        "!has(object.metadata.{map}) ? [JSONPatch{{op: \"add\", path: \"/metadata/{map}\", value: {{{k}: {v}}}}}] : ({k} in object.metadata.{map} ? [] : [JSONPatch{{op: \"add\", path: {}, value: {v}}}])",
        cel_string(&format!("/metadata/{map}/{}", pointer_token(key)))
    )
}

fn pointer_token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn cel_list(items: &[String]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|s| cel_string(s))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// CEL for "`s` fits `pattern`", as [`Glob::matches`] and the bundle Config's wildcards read it
/// (`*`, `*infix*`, `*suffix`, `prefix*`, else exact).
fn cel_glob(s: &str, pattern: &str) -> String {
    if pattern == "*" {
        return "true".into();
    }
    match (pattern.strip_prefix('*'), pattern.strip_suffix('*')) {
        (Some(rest), _) if rest.ends_with('*') => {
            format!("{s}.contains({})", cel_string(&rest[..rest.len() - 1]))
        }
        (Some(suffix), _) => format!("{s}.endsWith({})", cel_string(suffix)),
        (None, Some(prefix)) => format!("{s}.startsWith({})", cel_string(prefix)),
        (None, None) => format!("{s} == {}", cel_string(pattern)),
    }
}

fn any_glob(s: &str, patterns: &[String]) -> String {
    let parts: Vec<String> = patterns.iter().map(|p| cel_glob(s, p)).collect();
    format!("({})", parts.join(" || "))
}

fn label_selector_json(s: &LabelSelector) -> Value {
    let exprs: Vec<Value> = s
        .requirements
        .iter()
        .map(|r| {
            let op = match r.operator {
                Operator::In => "In",
                Operator::NotIn => "NotIn",
                Operator::Exists => "Exists",
                Operator::DoesNotExist => "DoesNotExist",
            };
            if r.values.is_empty() {
                json!({"key": r.key, "operator": op})
            } else {
                json!({"key": r.key, "operator": op, "values": r.values})
            }
        })
        .collect();
    json!({"matchExpressions": exprs})
}

/// The match conditions every mapped mutator has, and those of its `match`.
fn conditions(
    m: &Mutator,
    excluded_from_mutation: &[String],
    config: &Config,
    own_namespace: &str,
) -> Vec<(String, String)> {
    let ns = namespace_name();
    let mut exempt: Vec<String> = EXCLUDED_NAMESPACES
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    if !own_namespace.is_empty() && !exempt.iter().any(|e| e == own_namespace) {
        exempt.push(own_namespace.to_owned());
    }
    let mut out = vec![(
        "palisade-exempt-namespaces".to_owned(),
        format!("!({ns} in {})", cel_list(&exempt)),
    )];
    if !excluded_from_mutation.is_empty() {
        out.push((
            "gatekeeper-config-excluded-namespaces".to_owned(),
            format!("{ns} == \"\" || !{}", any_glob(&ns, excluded_from_mutation)),
        ));
    }
    // The configuration file: the first rule that names the namespace decides.
    if config.namespaces.iter().any(|r| r.mutation == Some(false)) {
        let mut expr = "true".to_owned();
        for rule in config.namespaces.iter().rev() {
            let names: Vec<String> = rule
                .names
                .iter()
                .map(|p| match p.strip_suffix('*') {
                    Some(prefix) => format!("{ns}.startsWith({})", cel_string(prefix)),
                    None => format!("{ns} == {}", cel_string(p)),
                })
                .collect();
            let on = rule.mutation.unwrap_or(true);
            expr = format!("(({}) ? {on} : {expr})", names.join(" || "));
        }
        out.push((
            "palisade-configuration-mutation".to_owned(),
            format!("{ns} == \"\" || {expr}"),
        ));
    }
    let matcher = &m.matcher;
    if !matcher.namespaces.is_empty() {
        out.push((
            "match-namespaces".to_owned(),
            format!(
                "{ns} == \"\" || {}",
                any_glob(&ns, &globs(&matcher.namespaces))
            ),
        ));
    }
    if !matcher.excluded_namespaces.is_empty() {
        out.push((
            "match-excluded-namespaces".to_owned(),
            format!(
                "{ns} == \"\" || !{}",
                any_glob(&ns, &globs(&matcher.excluded_namespaces))
            ),
        ));
    }
    if let Some(name) = &matcher.name {
        out.push(("match-name".to_owned(), cel_glob(NAME, name.pattern())));
    }
    out
}

fn globs(list: &[Glob]) -> Vec<String> {
    list.iter().map(|g| g.pattern().to_owned()).collect()
}

fn scope(m: &Mutator) -> &'static str {
    match m.matcher.scope {
        Scope::All => "*",
        Scope::Cluster => "Cluster",
        Scope::Namespaced => "Namespaced",
    }
}

fn plan(
    m: &Mutator,
    excluded_from_mutation: &[String],
    config: &Config,
    own_namespace: &str,
) -> Result<Mapped, String> {
    if m.matcher.source == SourceMatch::Generated {
        return Err(
            "match.source is Generated: it changes only expansion resultants, which no admission policy sees"
                .into(),
        );
    }
    let (rules, exclude_rules, plan) = match &m.operation {
        Operation::Merge(_) | Operation::Prune(_) => {
            return Err("ModifySet adds to or removes from a list as a set; an apply configuration merges a list by its schema and a JSON patch needs indices, so neither does the same".into());
        }
        Operation::AssignIfAbsent(value) => metadata_plan(m, value)?,
        Operation::Assign(value) => assign_plan(m, value)?,
    };
    let break_glass = !config.break_glass.users.is_empty() || !config.break_glass.groups.is_empty();
    if break_glass && touches_pods(&rules) {
        return Err("break-glass is configured: the webhook leaves an honoured emergency pod as written, which an admission policy cannot judge".into());
    }
    Ok(Mapped {
        kind: m.kind,
        name: m.name.clone(),
        rules,
        exclude_rules,
        object_selector: m.matcher.label_selector.as_ref().map(label_selector_json),
        namespace_selector: m
            .matcher
            .namespace_selector
            .as_ref()
            .map(label_selector_json),
        conditions: conditions(m, excluded_from_mutation, config, own_namespace),
        plan,
    })
}

/// Whether the rules can match a kind that carries a pod spec.
fn touches_pods(rules: &[Value]) -> bool {
    rules.iter().any(|r| {
        let resources: Vec<&str> = r["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let groups: Vec<&str> = r["apiGroups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        crate::podpaths::POD_PATHS.iter().any(|p| {
            let resource = p.resource.split('/').next().unwrap_or_default();
            (groups.contains(&"*") || groups.contains(&p.group))
                && (resources.contains(&"*") || resources.contains(&resource))
        })
    })
}

fn rule(
    groups: &[String],
    versions: &[String],
    resources: &[String],
    ops: &[&str],
    scope: &str,
) -> Value {
    json!({
        "apiGroups": groups,
        "apiVersions": versions,
        "resources": resources,
        "operations": ops,
        "scope": scope,
    })
}

type Rules = (Vec<Value>, Vec<Value>, Plan);

fn metadata_plan(m: &Mutator, value: &Value) -> Result<Rules, String> {
    let [Segment::Field(_), Segment::Field(map), Segment::Field(key)] = &m.location.segments[..]
    else {
        return Err("location is not metadata.labels.<key> or metadata.annotations.<key>".into());
    };
    let value = value.as_str().ok_or("assign.value is not a string")?;
    let scope = scope(m);
    let star = vec!["*".to_owned()];
    let mut rules = Vec::new();
    let mut exclude = Vec::new();
    if m.matcher.kinds.is_empty() {
        rules.push(rule(&star, &star, &star, &["CREATE", "UPDATE"], scope));
    }
    for k in &m.matcher.kinds {
        let groups = if k.api_groups.is_empty() || k.api_groups.iter().any(|g| g == "*") {
            star.clone()
        } else {
            k.api_groups.clone()
        };
        if k.kinds.is_empty() || k.kinds.iter().any(|x| x == "*") {
            rules.push(rule(&groups, &star, &star, &["CREATE", "UPDATE"], scope));
            continue;
        }
        for group in &groups {
            for kind in &k.kinds {
                let pod = kind == "Pod" && (group.is_empty() || group == "*");
                let ops: &[&str] = if pod && group.is_empty() {
                    &["CREATE"]
                } else {
                    &["CREATE", "UPDATE"]
                };
                rules.push(rule(
                    std::slice::from_ref(group),
                    &star,
                    &[resource_of(group, kind)],
                    ops,
                    scope,
                ));
            }
        }
    }
    // A Pod's update is never mutated by the webhook (its spec cannot change).
    let wide = rules.iter().any(|r| {
        r["operations"].as_array().is_some_and(|o| o.len() == 2)
            && (r["apiGroups"][0] == "*" || r["apiGroups"][0] == "")
            && (r["resources"][0] == "*" || r["resources"][0] == "pods")
    });
    if wide {
        exclude.push(rule(
            &[String::new()],
            &star,
            &["pods".to_owned()],
            &["UPDATE"],
            "*",
        ));
    }
    Ok((
        rules,
        exclude,
        Plan::Metadata {
            map: map.clone(),
            key: key.clone(),
            value: value.to_owned(),
        },
    ))
}

fn literal(value: &Value, leaf: Leaf) -> Option<String> {
    match (value, leaf) {
        (Value::Bool(b), Leaf::Bool) => Some(b.to_string()),
        (Value::Number(n), Leaf::Int) => n.as_i64().map(|i| i.to_string()),
        (Value::String(s), Leaf::Str) => Some(cel_string(s)),
        _ => None,
    }
}

/// `Object.a.b{c: <inner>}` for `fields` under the type path `prefix`.
fn construct(prefix: &[String], fields: &[String], leaf: &str) -> String {
    let mut expr = leaf.to_owned();
    for i in (0..fields.len()).rev() {
        let ty = type_name(prefix, &fields[..i]);
        expr = format!("{ty}{{{}: {expr}}}", fields[i]);
    }
    expr
}

fn type_name(prefix: &[String], fields: &[String]) -> String {
    let mut ty = "Object".to_owned();
    for f in prefix.iter().chain(fields) {
        ty.push('.');
        ty.push_str(f);
    }
    ty
}

/// `has(base.a) && has(base.a.b) …`, or `true` for no field.
fn has_chain(base: &str, fields: &[String]) -> Vec<String> {
    (1..=fields.len())
        .map(|i| format!("has({base}.{})", fields[..i].join(".")))
        .collect()
}

fn and(parts: &[String]) -> String {
    if parts.is_empty() {
        "true".into()
    } else {
        parts.join(" && ")
    }
}

fn assign_plan(m: &Mutator, value: &Value) -> Result<Rules, String> {
    if !(value.is_boolean() || value.is_number() || value.is_string()) {
        return Err(format!(
            "assign.value is {}: an apply configuration merges it into what is there, where Palisade replaces it",
            crate::object::json_type(value)
        ));
    }
    let location = m.location.to_string();
    // Kinds: the applyTo entries that match.kinds lets through, each a kind with a pod spec.
    let mut rules = Vec::new();
    let mut root: Option<Vec<String>> = None;
    for a in &m.apply_to {
        if [&a.groups, &a.kinds, &a.versions]
            .iter()
            .any(|l| l.iter().any(|x| x == "*"))
        {
            return Err(
                "applyTo has a wildcard; only named kinds with a known pod spec map".into(),
            );
        }
        for group in &a.groups {
            for kind in &a.kinds {
                if !m.matcher.kinds.is_empty()
                    && !m.matcher.kinds.iter().any(|k| k.matches(group, kind))
                {
                    continue;
                }
                let path = crate::podpaths::of_kind(group, kind).ok_or_else(|| {
                    format!("applyTo kind {kind} (group {group:?}) has no pod spec whose fields' merge strategy Palisade knows")
                })?;
                let mut pod_root: Vec<String> =
                    path.template.iter().map(|s| (*s).to_owned()).collect();
                pod_root.push("spec".to_owned());
                if root.as_ref().is_some_and(|r| *r != pod_root) {
                    return Err("applyTo names kinds whose pod specs are at different paths".into());
                }
                root = Some(pod_root);
                let ops: &[&str] = if group.is_empty() && kind == "Pod" {
                    &["CREATE"]
                } else {
                    &["CREATE", "UPDATE"]
                };
                rules.push(rule(
                    std::slice::from_ref(group),
                    &a.versions,
                    &[path.resource.to_owned()],
                    ops,
                    scope(m),
                ));
            }
        }
    }
    let Some(root) = root else {
        return Err("no applyTo kind is also in match.kinds: it never applies".into());
    };
    let segs = &m.location.segments;
    let fields_of = |segs: &[Segment]| -> Option<Vec<String>> {
        segs.iter()
            .map(|s| match s {
                Segment::Field(f) => Some(f.clone()),
                Segment::List { .. } => None,
            })
            .collect()
    };
    let not_under = || {
        format!(
            "location {location} is not under the pod spec ({})",
            root.join(".")
        )
    };
    if segs.len() <= root.len() {
        return Err(not_under());
    }
    let head = fields_of(&segs[..root.len()]).ok_or_else(not_under)?;
    if head != root {
        return Err(not_under());
    }
    let rest = &segs[root.len()..];
    let list_at = rest.iter().position(|s| matches!(s, Segment::List { .. }));
    let unknown = || {
        format!(
            "location {location}: not a field Palisade knows to be a scalar under granular structs of the pod spec (only securityContext and a few scalar fields of the pod and of containers/initContainers map)"
        )
    };
    let object_tests = |upto: usize| -> Vec<String> {
        // Path tests whose sub-path ends before `upto` segments: judged on the object.
        let mut parts = Vec::new();
        for t in &m.path_tests {
            let n = t.sub_path.segments.len();
            if n > upto {
                continue;
            }
            let fields = fields_of(&segs[..n]).unwrap_or_default();
            let exists = and(&has_chain("object", &fields));
            parts.push(match t.condition {
                Condition::MustExist => exists,
                Condition::MustNotExist => format!("!({exists})"),
            });
        }
        parts
    };
    match list_at {
        None => {
            let rel = fields_of(rest).ok_or_else(unknown)?;
            let leaf = POD_FIELDS
                .iter()
                .find(|(p, _)| p.iter().copied().eq(rel.iter().map(String::as_str)))
                .map(|(_, l)| *l)
                .ok_or_else(unknown)?;
            let lit = literal(value, leaf).ok_or_else(|| {
                format!("assign.value {value} is not the {leaf:?} that {location} holds")
            })?;
            let all = fields_of(segs).ok_or_else(unknown)?;
            let guard = and(&object_tests(segs.len()));
            let apply = construct(&[], &all, &lit);
            Ok((
                rules,
                Vec::new(),
                Plan::Assign {
                    guard,
                    list: None,
                    apply,
                },
            ))
        }
        Some(i) => {
            let list_field = match rest.get(i.wrapping_sub(1)) {
                Some(Segment::Field(f)) if i == 1 => f.clone(),
                _ => return Err(unknown()),
            };
            let Segment::List { key, value: sel } = &rest[i] else {
                return Err(unknown());
            };
            if !CONTAINER_LISTS.contains(&list_field.as_str()) || key != "name" {
                return Err(format!(
                    "location {location}: only containers and initContainers selected by [name: …] merge by element in an apply configuration"
                ));
            }
            let inner = fields_of(&rest[i + 1..]).ok_or_else(unknown)?;
            let leaf = CONTAINER_FIELDS
                .iter()
                .find(|(p, _)| p.iter().copied().eq(inner.iter().map(String::as_str)))
                .map(|(_, l)| *l)
                .ok_or_else(unknown)?;
            let lit = literal(value, leaf).ok_or_else(|| {
                format!("assign.value {value} is not the {leaf:?} that {location} holds")
            })?;
            let mut list_fields = root.clone();
            list_fields.push(list_field);
            let list_ref = format!("object.{}", list_fields.join("."));
            let sel_at = root.len() + i; // index of the List segment in `segs`
            // Element-level: the selector, and path tests that reach into the element.
            let mut elem = Vec::new();
            if let Selector::Value(want) = sel {
                elem.push(format!("c.name == {}", cel_string(want)));
            }
            for t in &m.path_tests {
                let n = t.sub_path.segments.len();
                if n <= sel_at {
                    continue;
                }
                let fields = fields_of(&segs[sel_at + 1..n]).unwrap_or_default();
                let exists = and(&has_chain("c", &fields));
                elem.push(match t.condition {
                    Condition::MustExist => exists,
                    Condition::MustNotExist => format!("!({exists})"),
                });
            }
            let elem = and(&elem);
            let selection = format!("{list_ref}.filter(c, {elem})");
            let mut guard = has_chain("object", &list_fields);
            guard.extend(object_tests(sel_at));
            guard.push(format!("{list_ref}.exists(c, {elem})"));
            let element_type = type_name(&list_fields, &[]);
            let inner_expr = construct(&list_fields, &inner, &lit);
            // `Object.…containers{securityContext: …}` → with the key first.
            let body = &inner_expr[element_type.len() + 1..inner_expr.len() - 1];
            let element = format!("{element_type}{{name: c.name, {body}}}");
            let list_expr = format!("{selection}.map(c, {element})");
            let apply = construct(&[], &list_fields, &list_expr);
            Ok((
                rules,
                Vec::new(),
                Plan::Assign {
                    guard: and(&guard),
                    list: Some(ListPlan {
                        fields: list_fields,
                        selection,
                        inner,
                    }),
                    apply,
                },
            ))
        }
    }
}

/// Mapped mutators that depend on each other, with why: (name, reason).
fn conflicts(mapped: &[(&Mutator, Mapped)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let path_of = |segs: &[Segment]| -> String {
        segs.iter()
            .map(|s| match s {
                Segment::Field(f) => f.clone(),
                Segment::List { .. } => "[]".into(),
            })
            .collect::<Vec<_>>()
            .join("\u{1}")
    };
    let prefix = |a: &str, b: &str| a == b || b.starts_with(&format!("{a}\u{1}"));
    let labels_added: Vec<(&Mutator, &str, &str)> = mapped
        .iter()
        .filter_map(|(m, p)| match &p.plan {
            Plan::Metadata { map, key, value } if map == "labels" => {
                Some((*m, key.as_str(), value.as_str()))
            }
            _ => None,
        })
        .collect();
    let mut push = |name: &str, why: String| {
        if !out.iter().any(|(n, _)| n == name) {
            out.push((name.to_owned(), why));
        }
    };
    for (a, pa) in mapped {
        // A selector on a label another (or the same) mapped AssignMetadata adds.
        for selector in [&a.matcher.label_selector, &a.matcher.namespace_selector]
            .into_iter()
            .flatten()
        {
            for r in &selector.requirements {
                if let Some((b, _, _)) = labels_added
                    .iter()
                    .find(|(b, k, _)| *k == r.key && b.name != a.name)
                {
                    push(
                        &a.name,
                        format!(
                            "its selector reads label {:?}, which AssignMetadata {} adds: Palisade re-matches to a fixed point, the order of admission policies is not guaranteed",
                            r.key, b.name
                        ),
                    );
                }
            }
        }
        for (b, pb) in mapped {
            if a.name == b.name && a.kind == b.kind {
                continue;
            }
            match (&pa.plan, &pb.plan) {
                (
                    Plan::Metadata {
                        map: ma,
                        key: ka,
                        value: va,
                    },
                    Plan::Metadata {
                        map: mb,
                        key: kb,
                        value: vb,
                    },
                ) if ma == mb && ka == kb && va != vb => {
                    push(
                        &a.name,
                        format!(
                            "AssignMetadata {} adds {ma} {ka:?} with another value: which one wins depends on the order, which admission policies do not guarantee",
                            b.name
                        ),
                    );
                }
                (Plan::Assign { .. }, Plan::Assign { .. }) => {
                    let la = path_of(&a.location.segments);
                    let lb = path_of(&b.location.segments);
                    if prefix(&la, &lb) || prefix(&lb, &la) {
                        push(
                            &a.name,
                            format!(
                                "its location overlaps Assign {}'s ({}): the result depends on the order",
                                b.name, b.location
                            ),
                        );
                    }
                    for t in &a.path_tests {
                        let st = path_of(&t.sub_path.segments);
                        if prefix(&st, &lb) || prefix(&lb, &st) {
                            push(
                                &a.name,
                                format!(
                                    "its pathTest on {} depends on what Assign {} sets: the result depends on the order",
                                    t.sub_path, b.name
                                ),
                            );
                        }
                    }
                }
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
