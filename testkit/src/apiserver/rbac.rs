//! Authorisation: the RBAC rules that manifests/base/rbac.yaml binds to Palisade's
//! ServiceAccount, read and applied as the real authorizer does, and which of them requests
//! have used.

use std::collections::BTreeSet;

use serde_json::Value;

/// One RBAC PolicyRule; `namespace` is the Role's, empty for a ClusterRole's.
#[derive(Debug, Clone)]
pub(super) struct RbacRule {
    pub(super) namespace: String,
    pub(super) groups: Vec<String>,
    pub(super) resources: Vec<String>,
    pub(super) names: Vec<String>,
    pub(super) verbs: Vec<String>,
}

/// The rules bound to Palisade's ServiceAccount, evaluated as the real authorizer does:
/// allowed when any rule matches (group, resource or `*` / `<x>/status` forms, verb, and for
/// named rules the object's name; a create has no name, so a named rule never allows it).
/// Discovery is allowed to everyone, as by the default system:discovery role.
#[derive(Debug, Clone)]
pub(super) struct Rbac {
    pub(super) rules: Vec<RbacRule>,
    /// (rule, resource as the rule lists it, verb) that allowed a request.
    used: BTreeSet<(usize, String, String)>,
}

impl Rbac {
    pub(super) fn from_manifests() -> Self {
        Self::from_files(&["manifests/base/rbac.yaml"])
    }

    /// The rules bound to Palisade's ServiceAccount in these files of the repository (the
    /// base's rbac.yaml and an overlay's), as if applied together.
    pub(super) fn from_files(files: &[&str]) -> Self {
        let mut docs = Vec::new();
        for file in files {
            let path = crate::fixtures::repo_path(file);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            docs.extend(palisade_core::manifest::parse_str(&text, &path).unwrap());
        }
        let path = files.join(" and ");
        let bound = |kind: &str, name: &str| {
            docs.iter().any(|d| {
                let b = &d.value;
                b["kind"] == format!("{kind}Binding")
                    && b["roleRef"]["kind"] == kind
                    && b["roleRef"]["name"] == name
                    && b["subjects"].as_array().unwrap().iter().any(|s| {
                        s["kind"] == "ServiceAccount"
                            && s["name"] == "palisade"
                            && s["namespace"] == "palisade-system"
                    })
            })
        };
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect()
        };
        let mut rules = Vec::new();
        for doc in &docs {
            let role = &doc.value;
            let kind = role["kind"].as_str().unwrap_or("");
            if !matches!(kind, "ClusterRole" | "Role")
                || !bound(kind, role["metadata"]["name"].as_str().unwrap())
            {
                continue;
            }
            let namespace = if kind == "Role" {
                role["metadata"]["namespace"].as_str().unwrap().to_owned()
            } else {
                String::new()
            };
            for rule in role["rules"].as_array().unwrap() {
                rules.push(RbacRule {
                    namespace: namespace.clone(),
                    groups: strings(&rule["apiGroups"]),
                    resources: strings(&rule["resources"]),
                    names: strings(&rule["resourceNames"]),
                    verbs: strings(&rule["verbs"]),
                });
            }
        }
        assert!(!rules.is_empty(), "no rules bound to palisade in {path}");
        Self {
            rules,
            used: BTreeSet::new(),
        }
    }

    /// Every (rule, resource, verb) the rules grant that no request has used, as
    /// `verb group/resource [names] (in namespace)`.
    pub(super) fn unused(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            for resource in &rule.resources {
                for verb in &rule.verbs {
                    if !self.used.contains(&(i, resource.clone(), verb.clone())) {
                        let scope = if rule.namespace.is_empty() {
                            String::new()
                        } else {
                            format!(" in {}", rule.namespace)
                        };
                        out.push(format!(
                            "{verb} {}/{resource} {:?}{scope}",
                            rule.groups.join(","),
                            rule.names
                        ));
                    }
                }
            }
        }
        out
    }

    pub(super) fn allows(
        &mut self,
        verb: &str,
        group: &str,
        resource: &str,
        namespace: &str,
        name: Option<&str>,
    ) -> bool {
        let any = |list: &[String], item: &str| list.iter().any(|x| x == "*" || x == item);
        let resource_matches = |r: &String| {
            r == "*"
                || r == resource
                || r.strip_prefix("*/")
                    .is_some_and(|sub| resource.split_once('/').is_some_and(|(_, s)| s == sub))
        };
        let mut allowed = false;
        for (i, rule) in self.rules.iter().enumerate() {
            if (rule.namespace.is_empty() || rule.namespace == namespace)
                && any(&rule.groups, group)
                && any(&rule.verbs, verb)
                && (rule.names.is_empty()
                    || name.is_some_and(|n| rule.names.iter().any(|x| x == n)))
            {
                for r in rule.resources.iter().filter(|r| resource_matches(r)) {
                    self.used.insert((i, r.clone(), verb.to_owned()));
                    allowed = true;
                }
            }
        }
        allowed
    }
}
