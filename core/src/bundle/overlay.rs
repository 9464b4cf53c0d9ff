//! Policies applied to the cluster (ConstraintTemplates, Constraints, mutators, `Config`,
//! Providers, ExpansionTemplates, SyncSets), each kept with its last good form, and merged with
//! the files' bundle into the one that serves.
//!
//! Objects arrive one at a time, so unlike the files' bundle (checked as a whole, replaced
//! whole), each is judged alone: a broken template or constraint is reported on its own status
//! and its last good form keeps serving, while the rest of the bundle is unaffected. The same
//! name in the files and in the cluster is a conflict that the file wins.
//!
//! [`ClusterPolicies`] holds what the cluster applied, each object as a [`Tracked`];
//! [`ClusterPolicies::merge`] makes the serving bundle of it and the files' bundle.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde_json::Value;

use super::{Bundle, CONSTRAINTS_GROUP, MUTATIONS_GROUP, Problem, TEMPLATES_GROUP};
use crate::expansion::{EXPANSION_GROUP, ExpansionTemplate, Expansions};
use crate::manifest::Document;
use crate::mutation::Mutator;
use crate::policy::{Constraint, EngineOptions, Template, external, parse_constraint, template};

/// The group of Gatekeeper's `Config`.
pub const CONFIG_GROUP: &str = "config.gatekeeper.sh";
/// The group of Gatekeeper's `SyncSet`.
pub const SYNCSET_GROUP: &str = "syncset.gatekeeper.sh";

/// One object from the cluster: as last seen, its last good form, and what is wrong with the
/// object as last seen.
#[derive(Clone)]
pub struct Tracked<T> {
    /// The object as last seen.
    pub doc: Document,
    /// Its last good form, which serves; `None` if it never was good.
    pub good: Option<T>,
    /// What is wrong with the object as last seen (and its conflicts with the files), for its
    /// status.
    pub errors: Vec<String>,
    fingerprint: u64,
}

impl<T> Tracked<T> {
    /// The object as now seen: `result` when it is good, else its error beside the `previous`
    /// good form, which keeps serving.
    fn judged(
        doc: Document,
        fingerprint: u64,
        previous: Option<T>,
        result: Result<T, String>,
    ) -> Self {
        let (good, errors) = match result {
            Ok(t) => (Some(t), Vec::new()),
            Err(e) => (previous, vec![e]),
        };
        Self {
            doc,
            good,
            errors,
            fingerprint,
        }
    }

    /// `metadata.generation` of the object as last seen (0 when absent): the status's
    /// `observedGeneration`.
    pub fn generation(&self) -> i64 {
        self.doc.value["metadata"]["generation"]
            .as_i64()
            .unwrap_or(0)
    }

    /// `metadata.uid` of the object as last seen (empty when absent).
    pub fn uid(&self) -> &str {
        self.doc.value["metadata"]["uid"].as_str().unwrap_or("")
    }
}

/// A hash of what defines the object (its spec), so that a change of status or labels alone
/// does not compile a template again.
fn fingerprint(doc: &Document) -> u64 {
    let mut h = DefaultHasher::new();
    doc.value["spec"].to_string().hash(&mut h);
    h.finish()
}

type Key = (String, String);

/// The policies read from the cluster.
#[derive(Default, Clone)]
pub struct ClusterPolicies {
    /// By template name.
    templates: BTreeMap<String, Tracked<Arc<Template>>>,
    /// By (kind, name).
    constraints: BTreeMap<Key, Tracked<Constraint>>,
    /// By (kind, name).
    mutators: BTreeMap<Key, Tracked<Mutator>>,
    config: Option<Document>,
    /// External data Providers by name.
    providers: BTreeMap<String, Tracked<Arc<external::Provider>>>,
    /// ExpansionTemplates by name; `good` is the form last served. Judged at merge time, since
    /// whether one may serve depends on the others (cycles, the files' names).
    expansions: BTreeMap<String, Tracked<Document>>,
    /// SyncSets by name; `good` is the last valid form.
    sync_sets: BTreeMap<String, Tracked<Document>>,
}

impl ClusterPolicies {
    /// Whether nothing from the cluster is held.
    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
            && self.constraints.is_empty()
            && self.mutators.is_empty()
            && self.config.is_none()
            && self.providers.is_empty()
            && self.expansions.is_empty()
            && self.sync_sets.is_empty()
    }

    /// The Providers templates are compiled against: the files' (in `options`), then the
    /// cluster's good ones, the files' winning a name both define.
    fn providers_for(&self, files: &external::Providers) -> external::Providers {
        let mut all: Vec<Arc<external::Provider>> = files
            .names()
            .filter_map(|n| files.get(n).cloned())
            .collect();
        for p in self.providers.values().filter_map(|p| p.good.clone()) {
            if files.get(&p.name).is_none() {
                all.push(p);
            }
        }
        external::Providers::from_shared(all)
    }

    /// `options` with every Provider, for compiling a template.
    fn with_providers(&self, options: &EngineOptions) -> EngineOptions {
        EngineOptions {
            external: self.providers_for(&options.external),
            ..options.clone()
        }
    }

    /// Compiles again every template that calls external_data: the Providers it was checked
    /// against and calls changed.
    fn recompile_external(&mut self, options: &EngineOptions) {
        let options = self.with_providers(options);
        for t in self.templates.values_mut() {
            if !t.doc.value["spec"].to_string().contains(external::BUILTIN) {
                continue;
            }
            let compiled = template::parse(&t.doc)
                .and_then(|s| Template::compile(s, &options))
                .map(Arc::new);
            let previous = t.good.take();
            *t = Tracked::judged(t.doc.clone(), t.fingerprint, previous, compiled);
        }
    }

    /// Takes in an object as the cluster now has it. A template is compiled only when its spec
    /// changed; a failure keeps the last good one.
    pub fn upsert(&mut self, value: Value, options: &EngineOptions) {
        let doc = Document::from_cluster(value);
        let fp = fingerprint(&doc);
        let name = doc.name().to_owned();
        match doc.group() {
            TEMPLATES_GROUP => {
                let entry = self.templates.get(&name);
                if entry.is_some_and(|t| t.fingerprint == fp) {
                    // Same spec: keep the compiled template, take the new metadata.
                    if let Some(t) = self.templates.get_mut(&name) {
                        t.doc = doc;
                    }
                    return;
                }
                let previous = entry.and_then(|t| t.good.clone());
                let compiled = template::parse(&doc)
                    .and_then(|s| Template::compile(s, &self.with_providers(options)))
                    .map(Arc::new);
                let tracked = Tracked::judged(doc, fp, previous, compiled);
                self.templates.insert(name, tracked);
            }
            CONSTRAINTS_GROUP => {
                let key = (doc.kind().to_owned(), name);
                let good = self.constraints.get(&key).and_then(|c| c.good.clone());
                // Parsed at merge time, against the template the merged bundle holds.
                self.constraints.insert(
                    key,
                    Tracked {
                        doc,
                        good,
                        errors: Vec::new(),
                        fingerprint: fp,
                    },
                );
            }
            MUTATIONS_GROUP => {
                let key = (doc.kind().to_owned(), name);
                let previous = self.mutators.get(&key).and_then(|m| m.good.clone());
                let parsed = Mutator::parse(&doc);
                let tracked = Tracked::judged(doc, fp, previous, parsed);
                self.mutators.insert(key, tracked);
            }
            CONFIG_GROUP => self.config = Some(doc),
            external::GROUP if doc.kind() == "Provider" => {
                if self
                    .providers
                    .get(&name)
                    .is_some_and(|p| p.fingerprint == fp)
                {
                    return;
                }
                let previous = self.providers.get(&name).and_then(|p| p.good.clone());
                let parsed = external::parse(&doc).map(Arc::new);
                if let Err(error) = &parsed {
                    // Said once per change; Palisade writes no status on Providers.
                    tracing::error!(provider = %doc.describe(), %error, "the cluster's external data Provider is invalid; templates that call it are not served");
                }
                self.providers
                    .insert(name, Tracked::judged(doc, fp, previous, parsed));
                self.recompile_external(options);
            }
            EXPANSION_GROUP if doc.kind() == crate::expansion::KIND => {
                if let Some(e) = self.expansions.get_mut(&name)
                    && e.fingerprint == fp
                {
                    e.doc = doc;
                    return;
                }
                // Judged at merge time; a new form's errors are said again.
                let good = self.expansions.get(&name).and_then(|e| e.good.clone());
                let errors = Vec::new();
                self.expansions.insert(
                    name,
                    Tracked {
                        doc,
                        good,
                        errors,
                        fingerprint: fp,
                    },
                );
            }
            SYNCSET_GROUP if doc.kind() == "SyncSet" => {
                if self
                    .sync_sets
                    .get(&name)
                    .is_some_and(|s| s.fingerprint == fp)
                {
                    return;
                }
                let previous = self.sync_sets.get(&name).and_then(|s| s.good.clone());
                let checked = super::sync_only(std::slice::from_ref(&doc))
                    .map(|_| doc.clone())
                    .map_err(|e| {
                        e.problems
                            .iter()
                            .map(|p| p.message.clone())
                            .collect::<Vec<_>>()
                            .join("; ")
                    });
                if let Err(error) = &checked {
                    // Said once per change; Palisade writes no status on SyncSets.
                    tracing::error!(syncset = %doc.describe(), %error, "the cluster's SyncSet is invalid; its last valid form, if any, stays synced");
                }
                self.sync_sets
                    .insert(name, Tracked::judged(doc, fp, previous, checked));
            }
            _ => {}
        }
    }

    /// Forgets an object the cluster no longer has.
    pub fn remove(&mut self, group: &str, kind: &str, name: &str, options: &EngineOptions) {
        let key = (kind.to_owned(), name.to_owned());
        match group {
            TEMPLATES_GROUP => {
                self.templates.remove(name);
            }
            CONSTRAINTS_GROUP => {
                self.constraints.remove(&key);
            }
            MUTATIONS_GROUP => {
                self.mutators.remove(&key);
            }
            CONFIG_GROUP => self.config = None,
            external::GROUP if self.providers.remove(name).is_some() => {
                self.recompile_external(options);
            }
            EXPANSION_GROUP => {
                self.expansions.remove(name);
            }
            SYNCSET_GROUP => {
                self.sync_sets.remove(name);
            }
            _ => {}
        }
    }

    /// Forgets every constraint of `kind` (its template and CRD are gone).
    pub fn remove_kind(&mut self, kind: &str) {
        self.constraints.retain(|(k, _), _| k != kind);
    }

    /// Replaces every object of (group, kind) with `values` (a watch's complete relist).
    pub fn replace_all(
        &mut self,
        group: &str,
        kind: &str,
        values: Vec<Value>,
        options: &EngineOptions,
    ) {
        let names: HashSet<String> = values
            .iter()
            .filter_map(|v| v["metadata"]["name"].as_str().map(str::to_owned))
            .collect();
        match group {
            TEMPLATES_GROUP => self.templates.retain(|n, _| names.contains(n)),
            CONSTRAINTS_GROUP => self
                .constraints
                .retain(|(k, n), _| k != kind || names.contains(n)),
            MUTATIONS_GROUP => self
                .mutators
                .retain(|(k, n), _| k != kind || names.contains(n)),
            CONFIG_GROUP if names.is_empty() => self.config = None,
            external::GROUP => {
                let before = self.providers.len();
                self.providers.retain(|n, _| names.contains(n));
                if self.providers.len() != before {
                    self.recompile_external(options);
                }
            }
            EXPANSION_GROUP => self.expansions.retain(|n, _| names.contains(n)),
            SYNCSET_GROUP => self.sync_sets.retain(|n, _| names.contains(n)),
            _ => {}
        }
        for v in values {
            self.upsert(v, options);
        }
    }

    /// The ConstraintTemplates, by name.
    pub fn templates(&self) -> impl Iterator<Item = &Tracked<Arc<Template>>> {
        self.templates.values()
    }

    /// The Constraints, by kind and name.
    pub fn constraints(&self) -> impl Iterator<Item = &Tracked<Constraint>> {
        self.constraints.values()
    }

    /// The constraint kind a template defines, from its spec (also when it does not compile).
    pub fn template_kind(doc: &Document) -> Option<&str> {
        doc.value["spec"]["crd"]["spec"]["names"]["kind"].as_str()
    }

    /// The files' bundle with the cluster's policies added. Constraints are judged here against
    /// the merged templates; every object's errors (and conflicts with the files) are recorded
    /// on it for its status.
    pub fn merge(&mut self, files: &Bundle) -> Bundle {
        let mut warnings = files.warnings().to_vec();
        let mut templates: HashMap<String, Arc<Template>> = files
            .policies()
            .templates()
            .map(|t| (t.kind.clone(), t.clone()))
            .collect();
        let file_names: HashSet<&str> = files
            .policies()
            .templates()
            .map(|t| t.name.as_str())
            .collect();
        for t in self.templates.values_mut() {
            t.errors.retain(|e| !e.starts_with(CONFLICT));
            let Some(good) = &t.good else { continue };
            if file_names.contains(good.name.as_str()) || templates.contains_key(&good.kind) {
                let message = format!(
                    "{CONFLICT}: the policy files (--policies) also define {} (kind {}); the files' template is served; rename or remove one of them",
                    good.name, good.kind
                );
                warnings.push(Problem {
                    at: t.doc.describe(),
                    message: message.clone(),
                });
                t.errors.push(message);
                continue;
            }
            warnings.extend(
                t.good
                    .iter()
                    .flat_map(|g| g.warnings.iter())
                    .map(|w| Problem {
                        at: t.doc.describe(),
                        message: w.clone(),
                    }),
            );
            templates.insert(good.kind.clone(), good.clone());
        }
        let mut constraints: Vec<Constraint> = files.policies().constraints().to_vec();
        let file_constraints: HashSet<Key> = constraints
            .iter()
            .map(|c| (c.kind.clone(), c.name.clone()))
            .collect();
        let mut from_cluster = HashSet::new();
        for (key, c) in self.constraints.iter_mut() {
            if file_constraints.contains(key) {
                c.errors = vec![format!(
                    "{CONFLICT}: the policy files (--policies) also define {} {}; the files' constraint is served; rename or remove one of them",
                    key.0, key.1
                )];
                warnings.push(Problem {
                    at: c.doc.describe(),
                    message: c.errors[0].clone(),
                });
                continue;
            }
            let Some(template) = templates.get(&key.0) else {
                c.errors = vec![format!(
                    "no ConstraintTemplate defines kind {}; apply its ConstraintTemplate, or delete this constraint",
                    key.0
                )];
                c.good = None;
                continue;
            };
            match parse_constraint(&c.doc, template.schema.as_ref()) {
                Ok(parsed) => {
                    c.good = Some(parsed);
                    c.errors.clear();
                }
                Err(errors) => c.errors = errors,
            }
            if let Some(good) = &c.good {
                constraints.push(good.clone());
                from_cluster.insert(key.clone());
            }
        }
        let mut mutators: Vec<Mutator> = files.mutators().list().to_vec();
        let file_mutators: HashSet<(String, String)> = mutators
            .iter()
            .map(|m| (m.kind.as_str().to_owned(), m.name.clone()))
            .collect();
        for (key, m) in self.mutators.iter_mut() {
            m.errors.retain(|e| !e.starts_with(CONFLICT));
            if file_mutators.contains(key) {
                let message = format!(
                    "{CONFLICT}: the policy files (--policies) also define {} {}; the files' mutator is served; rename or remove one of them",
                    key.0, key.1
                );
                warnings.push(Problem {
                    at: m.doc.describe(),
                    message: message.clone(),
                });
                m.errors.push(message);
                continue;
            }
            mutators.extend(m.good.clone());
        }
        let mut others = files.others().to_vec();
        if let Some(config) = &self.config {
            if others.iter().any(|d| d.kind() == "Config") {
                warnings.push(Problem {
                    at: config.describe(),
                    message: format!(
                        "{CONFLICT}: the policy files (--policies) also hold a Config; the files' Config is served. Remove one of them"
                    ),
                });
            } else if let Err(error) = super::check_config(config) {
                // Served without it; the files' bundle was checked as a whole already.
                for p in &error.problems {
                    tracing::error!(problem = %p, "the cluster's Gatekeeper Config is invalid and ignored; fix spec.sync.syncOnly or spec.match");
                }
            } else {
                others.push(config.clone());
            }
        }
        for p in self.providers.values() {
            for e in &p.errors {
                warnings.push(Problem {
                    at: p.doc.describe(),
                    message: e.clone(),
                });
            }
        }
        self.merge_sync_sets(files, &mut others, &mut warnings);
        self.merge_expansions(files, &mut others, &mut warnings);
        // Every cluster object was judged alone above, so this holds; should it not, the
        // cluster's other kinds (Config, SyncSets, ExpansionTemplates) are left out rather than
        // every cluster policy.
        if let Err(error) = super::check_others(&others) {
            tracing::error!(%error, "the cluster's Config, SyncSets and ExpansionTemplates do not fit the bundle; served without them");
            others.truncate(files.others().len());
        }
        let mut bundle = Bundle::assemble(templates, constraints, mutators, others, warnings)
            .unwrap_or_else(|_| files.clone());
        bundle.from_cluster = from_cluster;
        bundle.providers = self.providers_for(files.providers());
        bundle
    }
}

impl ClusterPolicies {
    /// Adds the cluster's valid SyncSets to `others`; one the files also define (by name) is a
    /// conflict the file wins.
    fn merge_sync_sets(
        &mut self,
        files: &Bundle,
        others: &mut Vec<Document>,
        warnings: &mut Vec<Problem>,
    ) {
        let file_names: HashSet<&str> = files
            .others()
            .iter()
            .filter(|d| d.group() == SYNCSET_GROUP)
            .map(Document::name)
            .collect();
        for s in self.sync_sets.values_mut() {
            let before = s.errors.clone();
            s.errors.retain(|e| !e.starts_with(CONFLICT));
            if let Some(good) = &s.good {
                if file_names.contains(good.name()) {
                    s.errors.push(format!(
                        "{CONFLICT}: the policy files (--policies) also define SyncSet {}; the files' SyncSet is served; rename or remove one of them",
                        good.name()
                    ));
                } else {
                    others.push(good.clone());
                }
            }
            report(&s.doc, &before, &s.errors, warnings);
        }
    }

    /// Adds the cluster's ExpansionTemplates to `others`, each only where the set stays valid:
    /// a name the files also define is a conflict the file wins, and one that would close a
    /// cycle is refused. Those that serve as now written are taken first, then those changed
    /// since (each as now written, else its last good form), then new ones: a template that
    /// served is not pushed out by one that never did.
    fn merge_expansions(
        &mut self,
        files: &Bundle,
        others: &mut Vec<Document>,
        warnings: &mut Vec<Problem>,
    ) {
        let file_names: HashSet<&str> = files
            .expansions()
            .templates()
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        // Served as written first, then changed since served, then never served.
        let mut order: Vec<(u8, String)> = self
            .expansions
            .iter()
            .map(|(name, e)| {
                let rank = match &e.good {
                    Some(g) if g.value["spec"] == e.doc.value["spec"] => 0,
                    Some(_) => 1,
                    None => 2,
                };
                (rank, name.clone())
            })
            .collect();
        order.sort();
        for (_, name) in order {
            let Some(e) = self.expansions.get_mut(&name) else {
                continue;
            };
            let before = std::mem::take(&mut e.errors);
            let mut candidates = Vec::new();
            match ExpansionTemplate::parse(&e.doc) {
                Ok(_) => candidates.push(e.doc.clone()),
                Err(message) => e.errors.push(message),
            }
            if let Some(good) = &e.good
                && good.value["spec"] != e.doc.value["spec"]
            {
                candidates.push(good.clone());
            }
            for candidate in candidates {
                let fits = if file_names.contains(name.as_str()) {
                    Err(format!(
                        "{CONFLICT}: the policy files (--policies) also define ExpansionTemplate {name}; the files' template is served; rename or remove one of them"
                    ))
                } else {
                    others.push(candidate.clone());
                    Expansions::from_documents(others)
                        .map(|_| ())
                        .map_err(|error| {
                            others.pop();
                            error
                                .problems
                                .iter()
                                .map(|p| p.message.clone())
                                .collect::<Vec<_>>()
                                .join("; ")
                        })
                };
                match fits {
                    Ok(()) => {
                        e.good = Some(candidate);
                        break;
                    }
                    Err(message) => {
                        if e.errors.is_empty() {
                            e.errors.push(message);
                        }
                    }
                }
            }
            report(&e.doc, &before, &e.errors, warnings);
        }
    }
}

/// Puts an object's errors among the bundle's warnings, and logs those not logged before
/// (Palisade writes no status on these kinds, so the log and the warnings are where they show).
fn report(doc: &Document, before: &[String], errors: &[String], warnings: &mut Vec<Problem>) {
    for error in errors {
        if !before.contains(error) {
            tracing::error!(object = %doc.describe(), %error, "policy from the cluster not served as written; its last good form serves, if any and if it still fits");
        }
        warnings.push(Problem {
            at: doc.describe(),
            message: error.clone(),
        });
    }
}

/// How a conflict with the files starts, in errors and warnings.
pub const CONFLICT: &str = "conflict";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_str;
    use serde_json::json;
    use std::path::Path;

    fn files(yaml: &str) -> Bundle {
        let docs = parse_str(yaml, Path::new("files.yaml")).unwrap();
        Bundle::from_documents(docs, &EngineOptions::default()).unwrap()
    }

    fn expansion(name: &str, parent: &str, generated: &str) -> Value {
        json!({"apiVersion": "expansion.gatekeeper.sh/v1beta1", "kind": "ExpansionTemplate",
               "metadata": {"name": name},
               "spec": {"applyTo": [{"groups": ["apps"], "versions": ["v1"], "kinds": [parent]}],
                        "templateSource": "spec.template",
                        "generatedGVK": {"group": "apps", "version": "v1", "kind": generated}}})
    }

    fn sync_set(name: &str, gvks: Value) -> Value {
        json!({"apiVersion": "syncset.gatekeeper.sh/v1alpha1", "kind": "SyncSet",
               "metadata": {"name": name}, "spec": {"gvks": gvks}})
    }

    /// `(names of the ExpansionTemplates served, warnings)` of the merge.
    fn expanded(state: &mut ClusterPolicies, files: &Bundle) -> (Vec<String>, Vec<String>) {
        let merged = state.merge(files);
        let names = merged
            .expansions()
            .templates()
            .iter()
            .map(|t| t.name.clone())
            .collect();
        let warnings = merged.warnings().iter().map(ToString::to_string).collect();
        (names, warnings)
    }

    #[test]
    fn a_cluster_expansion_template_that_breaks_the_set_is_refused_alone() {
        let options = EngineOptions::default();
        // The files expand Deployments into ReplicaSets.
        let files = files(
            "apiVersion: expansion.gatekeeper.sh/v1beta1\nkind: ExpansionTemplate\nmetadata: {name: deploy-to-rs}\nspec:\n  applyTo: [{groups: [apps], versions: [v1], kinds: [Deployment]}]\n  templateSource: spec.template\n  generatedGVK: {group: apps, version: v1, kind: ReplicaSet}\n",
        );
        let mut state = ClusterPolicies::default();
        state.upsert(expansion("sts-to-ds", "StatefulSet", "DaemonSet"), &options);
        // Closes a cycle with the files' template; a broken one; one of the files' name.
        state.upsert(
            expansion("rs-to-deploy", "ReplicaSet", "Deployment"),
            &options,
        );
        state.upsert(
            json!({"apiVersion": "expansion.gatekeeper.sh/v1beta1", "kind": "ExpansionTemplate",
                   "metadata": {"name": "broken"}, "spec": {"applyTo": [{"groups": ["apps"], "versions": ["v1"], "kinds": ["*"]}]}}),
            &options,
        );
        state.upsert(expansion("deploy-to-rs", "Job", "Pod"), &options);
        // Only the good one beside them serves, with the files' template.
        let (names, warnings) = expanded(&mut state, &files);
        assert_eq!(names, ["deploy-to-rs", "sts-to-ds"], "{warnings:?}");
        let about = |name: &str| -> String {
            warnings
                .iter()
                .filter(|w| w.starts_with(&format!("ExpansionTemplate {name:?} at cluster")))
                .cloned()
                .collect()
        };
        assert!(
            about("rs-to-deploy").contains("expand each other in a cycle"),
            "{warnings:?}"
        );
        assert!(about("broken").contains("\"*\" is not a wildcard here"));
        assert!(about("deploy-to-rs").contains(
            "conflict: the policy files (--policies) also define ExpansionTemplate deploy-to-rs"
        ));
        assert!(about("sts-to-ds").is_empty());
        // The files' template is the one that serves under that name.
        let merged = state.merge(&files);
        let served = &merged.expansions().templates()[0];
        assert_eq!(served.generated.kind, "ReplicaSet");
        assert!(merged.expansions().expands("apps", "v1", "StatefulSet"));
    }

    #[test]
    fn a_cycle_among_cluster_templates_refuses_the_new_one_and_a_bad_change_keeps_the_last_good() {
        let options = EngineOptions::default();
        let files = Bundle::default();
        let mut state = ClusterPolicies::default();
        // "z-first" serves first; "a-second" then closes a cycle with it: a-second is refused,
        // although it sorts first.
        state.upsert(expansion("z-first", "Deployment", "ReplicaSet"), &options);
        assert_eq!(expanded(&mut state, &files).0, ["z-first"]);
        state.upsert(expansion("a-second", "ReplicaSet", "Deployment"), &options);
        let (names, warnings) = expanded(&mut state, &files);
        assert_eq!(names, ["z-first"]);
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("ExpansionTemplate \"a-second\"") && w.contains("cycle")),
            "{warnings:?}"
        );
        // z-first changed to something broken: its last good form keeps serving, and a-second
        // still may not close the cycle with it.
        let mut broken = expansion("z-first", "Deployment", "ReplicaSet");
        broken["spec"]["templateSource"] = json!("");
        state.upsert(broken, &options);
        let (names, warnings) = expanded(&mut state, &files);
        assert_eq!(names, ["z-first"], "{warnings:?}");
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("spec.templateSource: required"))
        );
        // z-first changed to a form that no longer feeds a-second: both serve.
        state.upsert(expansion("z-first", "Deployment", "Pod"), &options);
        let (names, warnings) = expanded(&mut state, &files);
        assert_eq!(names, ["a-second", "z-first"], "{warnings:?}");
        assert!(warnings.is_empty(), "{warnings:?}");
        // Deleted: gone.
        state.remove(EXPANSION_GROUP, "ExpansionTemplate", "a-second", &options);
        assert_eq!(expanded(&mut state, &files).0, ["z-first"]);
        state.replace_all(EXPANSION_GROUP, "ExpansionTemplate", Vec::new(), &options);
        assert!(expanded(&mut state, &files).0.is_empty());
    }

    #[test]
    fn cluster_sync_sets_join_the_files_kinds_and_a_bad_one_drops_nothing_else() {
        let options = EngineOptions::default();
        let files = files(
            "apiVersion: syncset.gatekeeper.sh/v1alpha1\nkind: SyncSet\nmetadata: {name: files}\nspec:\n  gvks: [{group: '', version: v1, kind: Namespace}]\n",
        );
        let mut state = ClusterPolicies::default();
        // A cluster template and constraint beside them must keep serving throughout.
        state.upsert(
            json!({"apiVersion": "templates.gatekeeper.sh/v1", "kind": "ConstraintTemplate",
                   "metadata": {"name": "k8sdeny"},
                   "spec": {"crd": {"spec": {"names": {"kind": "K8sDeny"}}},
                            "targets": [{"target": "admission.k8s.gatekeeper.sh",
                                         "rego": "package k8sdeny\nviolation[{\"msg\": \"no\"}] { true }\n"}]}}),
            &options,
        );
        state.upsert(
            sync_set(
                "ingresses",
                json!([{"group": "networking.k8s.io", "version": "v1", "kind": "Ingress"}]),
            ),
            &options,
        );
        let kinds = |b: &Bundle| -> Vec<String> {
            b.sync_only()
                .unwrap_or_default()
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        let merged = state.merge(&files);
        assert_eq!(
            kinds(&merged),
            ["Namespace (v1)", "Ingress (networking.k8s.io/v1)"]
        );
        // Broken (an entry without a kind): reported; its last valid form stays synced, and
        // nothing else of the cluster is dropped.
        state.upsert(
            sync_set(
                "ingresses",
                json!([{"group": "networking.k8s.io", "version": "v1"}]),
            ),
            &options,
        );
        // A new one broken from the start, and one of the files' name.
        state.upsert(sync_set("bad", json!("Ingress")), &options);
        state.upsert(
            sync_set(
                "files",
                json!([{"group": "apps", "version": "v1", "kind": "Deployment"}]),
            ),
            &options,
        );
        let merged = state.merge(&files);
        assert_eq!(
            kinds(&merged),
            ["Namespace (v1)", "Ingress (networking.k8s.io/v1)"]
        );
        assert!(merged.policies().templates().any(|t| t.kind == "K8sDeny"));
        let warnings: Vec<String> = merged.warnings().iter().map(ToString::to_string).collect();
        for (name, says) in [
            ("ingresses", "spec.gvks[0] needs version and kind"),
            ("bad", "spec.gvks must be a list"),
            (
                "files",
                "conflict: the policy files (--policies) also define SyncSet files",
            ),
        ] {
            assert!(
                warnings
                    .iter()
                    .any(|w| w.starts_with(&format!("SyncSet {name:?} at cluster"))
                        && w.contains(says)),
                "{name}: {warnings:?}"
            );
        }
        // Deleted: its kinds leave.
        state.remove(SYNCSET_GROUP, "SyncSet", "ingresses", &options);
        assert_eq!(kinds(&state.merge(&files)), ["Namespace (v1)"]);
    }
}
