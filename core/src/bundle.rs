//! A policy bundle: the ConstraintTemplates, Constraints and mutators of a set of documents,
//! checked as a whole so that one load reports every problem.
//!
//! [`load`] reads a directory or file into a [`Bundle`], [`Bundle::from_documents`] builds one
//! from documents already read; a [`BundleError`] lists every [`Problem`]. Gatekeeper's other
//! kinds that a bundle reads (`Config`, `SyncSet`, Providers, ExpansionTemplates) are kept for
//! the parts that use them. The policies applied to the cluster join the files' in [`overlay`].

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

pub mod overlay;

use crate::expansion::Expansions;
use crate::manifest::{Document, ManifestError};
use crate::mutation::{Mutator, Mutators};
use crate::policy::{
    Constraint, EngineOptions, Policies, Template, external, parse_constraint, template,
};

/// The API group of Constraints; each template's kind is a kind of it.
pub const CONSTRAINTS_GROUP: &str = "constraints.gatekeeper.sh";
/// The API group of ConstraintTemplates.
pub const TEMPLATES_GROUP: &str = "templates.gatekeeper.sh";
/// The API group of the mutators (Assign, AssignMetadata, ModifySet).
pub const MUTATIONS_GROUP: &str = "mutations.gatekeeper.sh";

/// Gatekeeper's other groups and their kinds: kept for the parts that read them (a `Config`
/// lists the kinds to sync, ExpansionTemplates become the bundle's [`Expansions`]).
const OTHER_GATEKEEPER_KINDS: [(&str, &[&str]); 5] = [
    ("config.gatekeeper.sh", &["Config"]),
    ("expansion.gatekeeper.sh", &["ExpansionTemplate"]),
    ("externaldata.gatekeeper.sh", &["Provider"]),
    ("syncset.gatekeeper.sh", &["SyncSet"]),
    ("status.gatekeeper.sh", &[]),
];

/// One problem in a bundle, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// "Kind name at file (document N)".
    pub at: String,
    /// What is wrong, and how to fix it where that is known.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// Everything wrong with a bundle, so that one run shows every problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct BundleError {
    /// Every problem, in the order they were found.
    pub problems: Vec<Problem>,
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{n} problem{} in the policy bundle",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl BundleError {
    /// An error of one problem.
    pub fn one(at: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            problems: vec![Problem {
                at: at.into(),
                message: message.into(),
            }],
        }
    }
}

impl From<ManifestError> for BundleError {
    fn from(e: ManifestError) -> Self {
        match e {
            ManifestError::Shape { origin, message } => Self::one(origin.to_string(), message),
            other => Self::one("bundle", other.to_string()),
        }
    }
}

/// Templates, constraints and mutators, ready to serve.
#[derive(Clone, Default)]
pub struct Bundle {
    policies: Policies,
    mutators: Mutators,
    /// Documents of other kinds (configuration) for the parts that use them.
    others: Vec<Document>,
    /// Documents that were ignored, and why.
    warnings: Vec<Problem>,
    sync: Option<Vec<SyncKind>>,
    /// The namespaces the `Config` takes out of each process (`spec.match`).
    excluded: Excluded,
    /// The ExpansionTemplates of `others`, checked.
    expansions: Expansions,
    /// `(kind, name)` of the constraints that come from the cluster, whose status Palisade
    /// writes.
    from_cluster: std::collections::HashSet<(String, String)>,
    /// The external data Providers of the policy files.
    providers: external::Providers,
}

/// One `spec.sync.syncOnly` entry of a Gatekeeper `Config`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SyncKind {
    /// The API group; empty for the core group.
    pub group: String,
    /// The API version (`v1`).
    pub version: String,
    /// The kind (`Namespace`).
    pub kind: String,
}

impl SyncKind {
    /// The kind `kind` of `group/version`.
    pub fn new(group: &str, version: &str, kind: &str) -> Self {
        Self {
            group: group.to_owned(),
            version: version.to_owned(),
            kind: kind.to_owned(),
        }
    }

    /// `v1 Namespace`.
    pub fn namespace() -> Self {
        Self::new("", "v1", "Namespace")
    }

    /// `networking.k8s.io/v1 NetworkPolicy`.
    pub fn network_policy() -> Self {
        Self::new("networking.k8s.io", "v1", "NetworkPolicy")
    }
}

impl fmt::Display for SyncKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            write!(f, "{} ({})", self.kind, self.version)
        } else {
            write!(f, "{} ({}/{})", self.kind, self.group, self.version)
        }
    }
}

/// The kinds to sync into data.inventory: the `Config`'s `spec.sync.syncOnly` joined with every
/// `SyncSet`'s `spec.gvks` (Gatekeeper 3.15+ reads both and syncs their union). `None` when the
/// bundle holds neither. Gatekeeper reads one Config, named `config`; two Configs, or entries
/// without version or kind, are errors.
fn sync_only(others: &[Document]) -> Result<Option<Vec<SyncKind>>, BundleError> {
    let configs: Vec<&Document> = others.iter().filter(|d| d.kind() == "Config").collect();
    let sync_sets: Vec<&Document> = others.iter().filter(|d| d.kind() == "SyncSet").collect();
    if configs.is_empty() && sync_sets.is_empty() {
        return Ok(None);
    }
    let fail = |doc: &Document, message: String| BundleError {
        problems: vec![Problem {
            at: doc.describe(),
            message,
        }],
    };
    if configs.len() > 1 {
        return Err(fail(
            configs[0],
            format!(
                "a second Config at {}; Gatekeeper reads one Config: merge their spec.sync.syncOnly lists",
                configs[1].describe()
            ),
        ));
    }
    let mut kinds: Vec<SyncKind> = Vec::new();
    let lists = configs
        .iter()
        .map(|d| {
            (
                *d,
                "spec.sync.syncOnly",
                &d.value["spec"]["sync"]["syncOnly"],
            )
        })
        .chain(
            sync_sets
                .iter()
                .map(|d| (*d, "spec.gvks", &d.value["spec"]["gvks"])),
        );
    for (doc, path, entries) in lists {
        let Some(list) = entries.as_array() else {
            if entries.is_null() {
                continue;
            }
            return Err(fail(
                doc,
                format!("{path} must be a list of {{group, version, kind}}"),
            ));
        };
        for (i, entry) in list.iter().enumerate() {
            let field = |name: &str| entry.get(name).and_then(|v| v.as_str()).unwrap_or("");
            let kind = SyncKind {
                group: field("group").to_owned(),
                version: field("version").to_owned(),
                kind: field("kind").to_owned(),
            };
            if kind.version.is_empty() || kind.kind.is_empty() {
                return Err(fail(
                    doc,
                    format!(
                        "{path}[{i}] needs version and kind (group is empty for the core group), e.g. {{group: \"\", version: v1, kind: Namespace}}"
                    ),
                ));
            }
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
    }
    Ok(Some(kinds))
}

/// Whether the documents of other kinds can be served together: what [`Bundle::assemble`]
/// checks of them.
pub(crate) fn check_others(others: &[Document]) -> Result<(), BundleError> {
    sync_only(others)?;
    if let Some(config) = others.iter().find(|d| d.kind() == "Config") {
        Excluded::parse(&config.value["spec"]["match"])
            .map_err(|e| BundleError::one(config.describe(), e))?;
    }
    Expansions::from_documents(others)?;
    Ok(())
}

/// Whether a `Config` can be served: its `spec.sync.syncOnly` and `spec.match` are valid.
pub(crate) fn check_config(config: &Document) -> Result<(), BundleError> {
    sync_only(std::slice::from_ref(config))?;
    Excluded::parse(&config.value["spec"]["match"])
        .map_err(|e| BundleError::one(config.describe(), e))?;
    Ok(())
}

/// The parts of Gatekeeper that a `Config`'s `spec.match[].processes` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// The validating webhook (`webhook`).
    Webhook,
    /// The mutating webhook (`mutation-webhook`).
    Mutation,
    /// The audit (`audit`).
    Audit,
}

/// The namespaces a `Config` takes out of each process: Gatekeeper's `spec.match`, with its
/// wildcards (`kube-*`, `*-system`, `*tmp*`). A Namespace object is matched by its own name,
/// anything else by its namespace.
#[derive(Debug, Clone, Default, PartialEq)]
struct Excluded {
    /// Patterns per process, in [`Process`] order.
    patterns: [Vec<String>; 3],
}

impl Excluded {
    fn parse(entries: &serde_json::Value) -> Result<Self, String> {
        let mut excluded = Excluded::default();
        if entries.is_null() {
            return Ok(excluded);
        }
        let Some(entries) = entries.as_array() else {
            return Err(
                "spec.match must be a list of {excludedNamespaces: [...], processes: [...]}".into(),
            );
        };
        for (i, entry) in entries.iter().enumerate() {
            let list = |field: &str| -> Result<Vec<String>, String> {
                let value = &entry[field];
                let items = match value {
                    serde_json::Value::Null => return Ok(Vec::new()),
                    serde_json::Value::Array(items) => items,
                    _ => return Err(format!("spec.match[{i}].{field} must be a list of strings")),
                };
                items
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .ok_or_else(|| {
                                format!("spec.match[{i}].{field}: {v} is not a non-empty string")
                            })
                    })
                    .collect()
            };
            if let Some(other) = entry.as_object().and_then(|o| {
                o.keys()
                    .find(|k| !matches!(k.as_str(), "excludedNamespaces" | "processes"))
            }) {
                return Err(format!(
                    "spec.match[{i}].{other} is not a field of a Config's match entry (excludedNamespaces, processes)"
                ));
            }
            let namespaces = list("excludedNamespaces")?;
            for process in list("processes")? {
                let slots: &[usize] = match process.as_str() {
                    "*" => &[0, 1, 2],
                    "webhook" => &[0],
                    "mutation-webhook" => &[1],
                    "audit" => &[2],
                    // data.inventory keeps these namespaces' objects: stricter, never looser.
                    "sync" => &[],
                    other => {
                        return Err(format!(
                            "spec.match[{i}].processes: {other:?} is not one of *, webhook, mutation-webhook, audit, sync"
                        ));
                    }
                };
                for &slot in slots {
                    for ns in &namespaces {
                        if !excluded.patterns[slot].contains(ns) {
                            excluded.patterns[slot].push(ns.clone());
                        }
                    }
                }
            }
        }
        Ok(excluded)
    }

    fn excludes(&self, process: Process, ns: &str) -> bool {
        !ns.is_empty()
            && self.patterns[process as usize]
                .iter()
                .any(|pattern| wildcard_matches(pattern, ns))
    }
}

/// Gatekeeper's namespace wildcard: `kube-*` (prefix), `*-system` (suffix), `*tmp*` (contains),
/// or an exact name.
fn wildcard_matches(pattern: &str, ns: &str) -> bool {
    match (pattern.strip_prefix('*'), pattern.strip_suffix('*')) {
        (Some(_), Some(_)) if pattern.len() >= 2 => ns.contains(&pattern[1..pattern.len() - 1]),
        (Some(_), Some(_)) => true,
        (Some(suffix), None) => ns.ends_with(suffix),
        (None, Some(prefix)) => ns.starts_with(prefix),
        (None, None) => ns == pattern,
    }
}

/// What a Config may hold besides `spec.sync`, and why Palisade does not read it: said at load,
/// never ignored silently.
fn config_warnings(doc: &Document) -> Vec<String> {
    let mut warnings = Vec::new();
    let Some(spec) = doc.value["spec"].as_object() else {
        return warnings;
    };
    for (field, value) in spec {
        let why = match field.as_str() {
            "sync" => continue,
            "match" => {
                for entry in value.as_array().into_iter().flatten() {
                    let processes = entry["processes"].as_array().cloned().unwrap_or_default();
                    if processes.iter().any(|p| p == "sync") {
                        warnings.push("spec.match: the sync process is not applied: data.inventory keeps the objects of these namespaces (policies see more than Gatekeeper's would, never less)".to_owned());
                    }
                    for ns in entry["excludedNamespaces"].as_array().into_iter().flatten() {
                        if let Some(pattern) = ns.as_str().filter(|p| p.contains('*')) {
                            warnings.push(format!(
                                "spec.match: {pattern:?} excludes every namespace it matches, present and future: whoever may create a namespace so named escapes these processes; list exact names where you can"
                            ));
                        }
                    }
                }
                continue;
            }
            "validation" => {
                "spec.validation (traces) is not read: Palisade logs its decisions (--log-level)"
            }
            "readiness" => "spec.readiness is not read: Palisade's /readyz reports readiness",
            _ => "is not a field of Gatekeeper's Config; it is not read",
        };
        warnings.push(if why.starts_with("spec.") {
            why.to_owned()
        } else {
            format!("spec.{field} {why}")
        });
    }
    warnings
}

impl fmt::Debug for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bundle")
            .field("policies", &self.policies)
            .field("mutators", &self.mutators.len())
            .field("others", &self.others.len())
            .finish_non_exhaustive()
    }
}

fn is_provider(doc: &Document) -> bool {
    doc.group() == external::GROUP && doc.kind() == "Provider"
}

/// A kind that `group` does not define, with the closest one it does, for the message.
fn unknown_kind(group: &str, kind: &str, known: &[&str]) -> String {
    let close = known
        .iter()
        .find(|k| k.eq_ignore_ascii_case(kind) || k.starts_with(kind) || kind.starts_with(*k));
    match close {
        Some(k) => format!("{group} has no kind {kind}; did you mean {k}?"),
        None if known.is_empty() => format!("{group} has no kinds a bundle may hold"),
        None => format!(
            "{group} has no kind {kind}; it defines {}",
            known.join(", ")
        ),
    }
}

impl Bundle {
    /// Builds a bundle from documents; collects every problem before failing.
    pub fn from_documents(
        docs: Vec<Document>,
        options: &EngineOptions,
    ) -> Result<Self, BundleError> {
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        let mut templates: HashMap<String, Arc<Template>> = HashMap::new();
        let mut constraint_docs = Vec::new();
        let mut others = Vec::new();
        let mut mutators: Vec<Mutator> = Vec::new();
        // Kinds whose template failed: their constraints are not reported a second time.
        let mut failed_kinds = Vec::new();
        let problem = |doc: &Document, message: String| Problem {
            at: doc.describe(),
            message,
        };
        // Providers first: the templates that call external_data are checked against them.
        let mut providers: Vec<external::Provider> = Vec::new();
        for doc in docs.iter().filter(|d| is_provider(d)) {
            match external::parse(doc) {
                Ok(p) => match providers.iter().find(|q| q.name == p.name) {
                    Some(prev) => {
                        problems.push(problem(doc, format!("duplicates {}", prev.describe)))
                    }
                    None => providers.push(p),
                },
                Err(message) => problems.push(problem(doc, message)),
            }
        }
        let providers = external::Providers::new(providers);
        let with_providers;
        let options = if providers.is_empty() {
            options
        } else {
            with_providers = EngineOptions {
                external: providers.clone(),
                ..options.clone()
            };
            &with_providers
        };
        for doc in docs {
            match (doc.group(), doc.kind()) {
                (external::GROUP, "Provider") => {}
                (TEMPLATES_GROUP, "ConstraintTemplate") => {
                    match template::parse(&doc).and_then(|src| Template::compile(src, options)) {
                        Ok(t) => {
                            warnings.extend(t.warnings.iter().map(|w| problem(&doc, w.clone())));
                            if let Some(prev) = templates.get(&t.kind) {
                                let message = format!(
                                    "kind {} is already defined by {}",
                                    t.kind, prev.describe
                                );
                                problems.push(problem(&doc, message));
                            } else {
                                templates.insert(t.kind.clone(), Arc::new(t));
                            }
                        }
                        Err(message) => {
                            if let Some(kind) =
                                doc.value["spec"]["crd"]["spec"]["names"]["kind"].as_str()
                            {
                                failed_kinds.push(kind.to_owned());
                            }
                            problems.push(problem(&doc, message));
                        }
                    }
                }
                (TEMPLATES_GROUP, kind) => problems.push(problem(
                    &doc,
                    unknown_kind(TEMPLATES_GROUP, kind, &["ConstraintTemplate"]),
                )),
                (CONSTRAINTS_GROUP, _) => constraint_docs.push(doc),
                (MUTATIONS_GROUP, _) => match Mutator::parse(&doc) {
                    Ok(m) => {
                        if let Some(prev) = mutators
                            .iter()
                            .find(|p: &&Mutator| p.kind == m.kind && p.name == m.name)
                        {
                            problems.push(Problem {
                                at: m.describe.clone(),
                                message: format!("duplicates {}", prev.describe),
                            });
                        } else {
                            mutators.push(m);
                        }
                    }
                    Err(message) => problems.push(problem(&doc, message)),
                },
                ("connection.gatekeeper.sh", "Connection") => warnings.push(problem(
                    &doc,
                    "a Connection exports Gatekeeper's violations (Dapr, disk); Palisade does not read it: it publishes PolicyReports, metrics and decision logs instead".into(),
                )),
                ("gvkmanifest.gatekeeper.sh", kind) => problems.push(problem(
                    &doc,
                    format!(
                        "{kind} (gator's schema manifest for kinds it cannot look up) is not supported: Palisade reads objects as they are; remove it from the bundle"
                    ),
                )),
                (group, kind) => match OTHER_GATEKEEPER_KINDS.iter().find(|(g, _)| *g == group) {
                    Some((_, kinds)) if kinds.contains(&kind) => {
                        if kind == "Config" {
                            warnings.extend(
                                config_warnings(&doc)
                                    .into_iter()
                                    .map(|message| problem(&doc, message)),
                            );
                        }
                        others.push(doc)
                    }
                    Some((_, kinds)) => {
                        problems.push(problem(&doc, unknown_kind(group, kind, kinds)))
                    }
                    None => {
                        let message = format!(
                            "not a Gatekeeper policy (apiVersion {:?}, kind {kind:?}); ignored. Move it out of the policy directory, or fix apiVersion and kind",
                            doc.api_version()
                        );
                        warnings.push(problem(&doc, message));
                    }
                },
            }
        }
        let mut constraints: Vec<Constraint> = Vec::new();
        for doc in constraint_docs {
            let Some(template) = templates.get(doc.kind()) else {
                if failed_kinds.iter().any(|k| k == doc.kind()) {
                    continue;
                }
                let mut known: Vec<&str> = templates.keys().map(String::as_str).collect();
                known.sort_unstable();
                let message = format!(
                    "no ConstraintTemplate defines kind {}{}",
                    doc.kind(),
                    if known.is_empty() {
                        String::new()
                    } else {
                        format!(" (defined: {})", known.join(", "))
                    }
                );
                problems.push(problem(&doc, message));
                continue;
            };
            match parse_constraint(&doc, template.schema.as_ref()) {
                Ok(c) => {
                    if let Some(prev) = constraints
                        .iter()
                        .find(|p| p.kind == c.kind && p.name == c.name)
                    {
                        problems.push(Problem {
                            at: c.describe.clone(),
                            message: format!("duplicates {}", prev.describe),
                        });
                    } else {
                        constraints.push(c);
                    }
                }
                Err(errors) => {
                    problems.extend(errors.into_iter().map(|message| problem(&doc, message)))
                }
            }
        }
        // Checked here too, so that one load reports these with every other problem.
        if let Err(e) = Expansions::from_documents(&others) {
            problems.extend(e.problems);
        }
        if !problems.is_empty() {
            return Err(BundleError { problems });
        }
        let mut bundle = Self::assemble(templates, constraints, mutators, others, warnings)?;
        bundle.providers = providers;
        Ok(bundle)
    }

    /// A bundle from parts already checked one by one (the files' and the cluster's, merged).
    pub(crate) fn assemble(
        templates: HashMap<String, Arc<Template>>,
        constraints: Vec<Constraint>,
        mutators: Vec<Mutator>,
        others: Vec<Document>,
        warnings: Vec<Problem>,
    ) -> Result<Self, BundleError> {
        let sync = sync_only(&others)?;
        let excluded = match others.iter().find(|d| d.kind() == "Config") {
            Some(config) => Excluded::parse(&config.value["spec"]["match"])
                .map_err(|e| BundleError::one(config.describe(), e))?,
            None => Excluded::default(),
        };
        let expansions = Expansions::from_documents(&others)?;
        let mut warnings = warnings;
        warnings.extend(expansions.warnings());
        Ok(Self {
            expansions,
            policies: Policies::new(templates, constraints),
            mutators: Mutators::new(mutators),
            others,
            warnings,
            sync,
            excluded,
            from_cluster: Default::default(),
            providers: Default::default(),
        })
    }

    /// Whether the constraint `kind`/`name` comes from the cluster (not from --policies).
    pub fn is_from_cluster(&self, kind: &str, name: &str) -> bool {
        self.from_cluster
            .contains(&(kind.to_owned(), name.to_owned()))
    }

    /// The namespace patterns the `Config`'s `spec.match` takes out of `process` (Gatekeeper's
    /// wildcards: `kube-*`, `*-system`, `*tmp*`).
    pub fn excluded_patterns(&self, process: Process) -> &[String] {
        &self.excluded.patterns[process as usize]
    }

    /// Whether the `Config`'s `spec.match` takes namespace `ns` out of `process`.
    pub fn excludes(&self, process: Process, ns: &str) -> bool {
        self.excluded.excludes(process, ns)
    }

    /// The namespace patterns (`kube-*`, `*-system`, `*tmp*`, exact) the `Config`'s `spec.match`
    /// takes out of `process`, in the order written.
    pub fn excluded_namespaces(&self, process: Process) -> &[String] {
        &self.excluded.patterns[process as usize]
    }

    /// The kinds a `Config` asks to sync into data.inventory (`spec.sync.syncOnly`), in its
    /// order without repeats; `None` when the bundle holds no `Config`.
    pub fn sync_only(&self) -> Option<&[SyncKind]> {
        self.sync.as_deref()
    }

    /// What the inventory keeps of each object for this bundle: the fields its templates read
    /// in data.inventory, of the kinds the `Config` syncs ([`crate::inventory::keep`]).
    pub fn inventory_keep(&self) -> crate::inventory::Keep {
        crate::inventory::Keep::of(self.policies.templates().map(|t| t.inventory_reads()))
    }

    /// The templates and constraints.
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// The external data Providers (`externaldata.gatekeeper.sh`) of the policy files.
    pub fn providers(&self) -> &external::Providers {
        &self.providers
    }

    /// The mutators (Assign, AssignMetadata, ModifySet), in application order.
    pub fn mutators(&self) -> &Mutators {
        &self.mutators
    }

    /// The ExpansionTemplates: which workloads are also judged by what they would create.
    pub fn expansions(&self) -> &Expansions {
        &self.expansions
    }

    /// Documents of Gatekeeper's other kinds, such as `Config`.
    pub fn others(&self) -> &[Document] {
        &self.others
    }

    /// Documents the bundle ignored, each with the reason.
    pub fn warnings(&self) -> &[Problem] {
        &self.warnings
    }
}

/// Reads and checks the bundle at `path` (a directory, searched recursively, or one file).
pub fn load(path: &Path, options: &EngineOptions) -> Result<Bundle, BundleError> {
    if !path.exists() {
        return Err(BundleError::one(
            path.display().to_string(),
            "no such file or directory; point --policies at a directory of Gatekeeper templates and constraints",
        ));
    }
    let docs = crate::manifest::files::read_path(path).map_err(|e| match e {
        crate::manifest::files::FileError::Manifest(e) => BundleError::from(e),
        e => BundleError::one("bundle", e.to_string()),
    })?;
    let bundle = Bundle::from_documents(docs, options)?;
    for warning in bundle.warnings() {
        tracing::warn!(%warning, "policy bundle");
    }
    Ok(bundle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_str;
    use std::path::Path;

    fn load(yaml: &str) -> Result<Bundle, BundleError> {
        let docs = parse_str(yaml, Path::new("b.yaml")).unwrap();
        Bundle::from_documents(docs, &EngineOptions::default())
    }

    #[test]
    fn gatekeepers_namespace_wildcards() {
        for (pattern, ns, matches) in [
            ("kube-*", "kube-system", true),
            ("kube-*", "kube-", true),
            ("kube-*", "kubesystem", false),
            ("kube-*", "my-kube-system", false),
            ("*-system", "kube-system", true),
            ("*-system", "system", false),
            ("*tmp*", "a-tmp-b", true),
            ("*tmp*", "tmp", true),
            ("*tmp*", "tm-p", false),
            ("*", "anything", true),
            ("**", "anything", true),
            ("legacy", "legacy", true),
            ("legacy", "Legacy", false),
            ("legacy", "legacy2", false),
        ] {
            assert_eq!(wildcard_matches(pattern, ns), matches, "{pattern} {ns}");
        }
    }

    #[test]
    fn a_configs_match_excludes_per_process() {
        let excluded = Excluded::parse(&serde_json::json!([
            {"excludedNamespaces": ["legacy"], "processes": ["webhook"]},
            {"excludedNamespaces": ["batch-*"], "processes": ["audit", "mutation-webhook"]},
            {"excludedNamespaces": ["everything"], "processes": ["*"]},
            {"excludedNamespaces": ["synced"], "processes": ["sync"]},
        ]))
        .unwrap();
        let x = |p, ns| excluded.excludes(p, ns);
        assert!(x(Process::Webhook, "legacy"));
        assert!(!x(Process::Audit, "legacy") && !x(Process::Mutation, "legacy"));
        assert!(x(Process::Audit, "batch-1") && x(Process::Mutation, "batch-1"));
        assert!(!x(Process::Webhook, "batch-1"));
        for p in [Process::Webhook, Process::Mutation, Process::Audit] {
            assert!(x(p, "everything"));
            assert!(
                !x(p, "synced"),
                "sync takes nothing out of the webhooks or the audit"
            );
            assert!(
                !x(p, ""),
                "a cluster-scoped object has no namespace to exclude"
            );
        }
        for (entries, says) in [
            (
                serde_json::json!({"excludedNamespaces": ["a"]}),
                "must be a list",
            ),
            (
                serde_json::json!([{"excludedNamespaces": "a", "processes": ["*"]}]),
                "spec.match[0].excludedNamespaces must be a list",
            ),
            (
                serde_json::json!([{"excludedNamespaces": ["a"], "processes": ["validation"]}]),
                "\"validation\" is not one of",
            ),
            (
                serde_json::json!([{"excludedNamespaces": [""], "processes": ["*"]}]),
                "is not a non-empty string",
            ),
            (
                serde_json::json!([{"excludedNamespace": ["a"], "processes": ["*"]}]),
                "spec.match[0].excludedNamespace is not a field",
            ),
        ] {
            let error = Excluded::parse(&entries).unwrap_err();
            assert!(error.contains(says), "{entries}: {error}");
        }
    }

    #[test]
    fn a_config_names_the_synced_kinds_and_a_bad_one_is_an_error() {
        assert_eq!(
            load("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
                .unwrap()
                .sync_only(),
            None
        );
        let config = |entries: &str| {
            format!(
                "apiVersion: config.gatekeeper.sh/v1alpha1\nkind: Config\nmetadata: {{name: config}}\nspec:\n  sync:\n    syncOnly: {entries}\n"
            )
        };
        let bundle = load(&config(
            "[{group: '', version: v1, kind: Namespace}, {group: apps, version: v1, kind: Deployment}, {version: v1, kind: Namespace}]",
        ))
        .unwrap();
        let kinds: Vec<String> = bundle
            .sync_only()
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(kinds, ["Namespace (v1)", "Deployment (apps/v1)"]);
        let err = load(&config("[{group: apps, kind: Deployment}]"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("Config \"config\" at b.yaml (document 1): spec.sync.syncOnly[0] needs version and kind"), "{err}");
        let two = format!("{}---\n{}", config("[]"), config("[]"));
        assert!(
            load(&two)
                .unwrap_err()
                .to_string()
                .contains("a second Config")
        );
    }

    #[test]
    fn a_misspelt_gatekeeper_kind_is_an_error() {
        let err = load("apiVersion: templates.gatekeeper.sh/v1\nkind: ConstraintTemplat\nmetadata: {name: x}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ConstraintTemplat \"x\" at b.yaml (document 1): templates.gatekeeper.sh has no kind ConstraintTemplat; did you mean ConstraintTemplate?"),
            "{err}"
        );
        let err = load(
            "apiVersion: config.gatekeeper.sh/v1alpha1\nkind: Configg\nmetadata: {name: config}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("did you mean Config?"), "{err}");
    }

    #[test]
    fn other_objects_are_ignored_with_a_warning() {
        let bundle = load("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n---\napiVersion: config.gatekeeper.sh/v1alpha1\nkind: Config\nmetadata: {name: config}\n").unwrap();
        assert_eq!(bundle.warnings().len(), 1);
        let warning = bundle.warnings()[0].to_string();
        assert!(
            warning
                .starts_with("ConfigMap \"notes\" at b.yaml (document 1): not a Gatekeeper policy"),
            "{warning}"
        );
        assert_eq!(bundle.others().len(), 1);
        assert_eq!(bundle.others()[0].kind(), "Config");
    }
}
