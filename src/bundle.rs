//! A policy bundle: the ConstraintTemplates, Constraints and mutators of a set of documents,
//! checked as a whole so that one load reports every problem.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

pub mod cluster;

use crate::manifest::{Document, ManifestError};
use crate::mutation::{Mutator, Mutators};
use crate::policy::{
    Constraint, EngineOptions, Policies, Template, external, parse_constraint, template,
};

pub const CONSTRAINTS_GROUP: &str = "constraints.gatekeeper.sh";
pub const TEMPLATES_GROUP: &str = "templates.gatekeeper.sh";
pub const MUTATIONS_GROUP: &str = "mutations.gatekeeper.sh";

/// Gatekeeper's other groups and their kinds: kept for the parts that read them (a `Config`
/// lists the kinds to sync), or ignored with a warning when Palisade does not run them.
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
    /// `(kind, name)` of the constraints that come from the cluster, whose status Palisade
    /// writes.
    from_cluster: std::collections::HashSet<(String, String)>,
    /// The external data Providers of the policy files.
    providers: external::Providers,
}

/// One `spec.sync.syncOnly` entry of a Gatekeeper `Config`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SyncKind {
    pub group: String,
    pub version: String,
    pub kind: String,
}

impl SyncKind {
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

/// Reads the syncOnly lists of the `Config` documents. Gatekeeper reads one Config, named
/// `config`; two Configs, or entries without version or kind, are errors.
fn sync_only(others: &[Document]) -> Result<Option<Vec<SyncKind>>, BundleError> {
    let configs: Vec<&Document> = others.iter().filter(|d| d.kind() == "Config").collect();
    let Some(config) = configs.first() else {
        return Ok(None);
    };
    let fail = |message: String| BundleError {
        problems: vec![Problem {
            at: config.describe(),
            message,
        }],
    };
    if configs.len() > 1 {
        return Err(fail(format!(
            "a second Config at {}; Gatekeeper reads one Config: merge their spec.sync.syncOnly lists",
            configs[1].describe()
        )));
    }
    let entries = &config.value["spec"]["sync"]["syncOnly"];
    let mut kinds: Vec<SyncKind> = Vec::new();
    let Some(list) = entries.as_array() else {
        if entries.is_null() {
            return Ok(Some(kinds));
        }
        return Err(fail(
            "spec.sync.syncOnly must be a list of {group, version, kind}".into(),
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
            return Err(fail(format!(
                "spec.sync.syncOnly[{i}] needs version and kind (group is empty for the core group), e.g. {{group: \"\", version: v1, kind: Namespace}}"
            )));
        }
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    Ok(Some(kinds))
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
                (group, kind) => match OTHER_GATEKEEPER_KINDS.iter().find(|(g, _)| *g == group) {
                    Some((_, kinds)) if kinds.contains(&kind) => others.push(doc),
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
        Ok(Self {
            policies: Policies::new(templates, constraints),
            mutators: Mutators::new(mutators),
            others,
            warnings,
            sync,
            from_cluster: Default::default(),
            providers: Default::default(),
        })
    }

    /// Whether the constraint `kind`/`name` comes from the cluster (not from --policies).
    pub fn is_from_cluster(&self, kind: &str, name: &str) -> bool {
        self.from_cluster
            .contains(&(kind.to_owned(), name.to_owned()))
    }

    /// The kinds a `Config` asks to sync into data.inventory (`spec.sync.syncOnly`), in its
    /// order without repeats; `None` when the bundle holds no `Config`.
    pub fn sync_only(&self) -> Option<&[SyncKind]> {
        self.sync.as_deref()
    }

    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// The external data Providers (`externaldata.gatekeeper.sh`) of the policy files.
    pub fn providers(&self) -> &external::Providers {
        &self.providers
    }

    pub fn mutators(&self) -> &Mutators {
        &self.mutators
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
