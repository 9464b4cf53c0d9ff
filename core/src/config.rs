//! The configuration file (`serve --config`): enforcement modes for rollouts, break-glass and the
//! background audit. Every field is optional; an empty file is the default configuration, which
//! enforces every constraint as written, lets nobody use break-glass, and audits every minute.
//!
//! ```yaml
//! enforcement: dryrun            # deny | warn | dryrun: caps every constraint's action
//! namespaces:                    # first match wins; matched on the namespace name the API server sets
//!   - names: [payments, "team-*"]
//!     enforcement: deny
//!   - names: [legacy]
//!     mutation: false
//! breakGlass:
//!   users: [alice@example.com]
//!   groups: [sre-oncall]
//!   maxTTL: 24h
//! audit:
//!   interval: 60s
//!   maxResultsPerReport: 1000
//!   constraintViolationsLimit: 20
//! ```
//!
//! Nothing here can be changed by a tenant: namespaces are matched by name, never by a label or
//! an annotation.
//!
//! [`Config::parse`] reads the file into a [`Config`] (or a [`ConfigError`] naming the field);
//! [`Config::mode`] is what applies in one namespace.

use std::time::Duration;

use serde::Deserialize;

use crate::policy::Action;

/// The identities of the Kubernetes controllers that create a workload's objects from its
/// template (kube-controller-manager with `--use-service-account-credentials`, the default of
/// kubeadm and the managed services, or with its own identity otherwise).
pub const DEFAULT_TRUSTED_CONTROLLERS: [&str; 8] = [
    "system:serviceaccount:kube-system:replicaset-controller",
    "system:serviceaccount:kube-system:deployment-controller",
    "system:serviceaccount:kube-system:statefulset-controller",
    "system:serviceaccount:kube-system:daemon-set-controller",
    "system:serviceaccount:kube-system:job-controller",
    "system:serviceaccount:kube-system:cronjob-controller",
    "system:serviceaccount:kube-system:replication-controller",
    "system:kube-controller-manager",
];

/// Groups that hold every user (or every service account): naming one in `breakGlass.groups`
/// would let anyone bypass the policies, so it is refused.
const TOO_WIDE_GROUPS: [&str; 4] = [
    "system:authenticated",
    "system:unauthenticated",
    "system:serviceaccounts",
    "system:masters",
];

/// The configuration file, as [`Config::parse`] reads it; the [`Default`] is what applies
/// without one.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Caps every constraint's enforcementAction outside the namespaces listed below.
    pub enforcement: Action,
    /// Per-namespace exceptions to `enforcement` and to mutation; the first match wins.
    pub namespaces: Vec<NamespaceRule>,
    /// Who may use break-glass, and for how long.
    pub break_glass: BreakGlass,
    /// The background audit.
    pub audit: Audit,
    /// Where constraints are judged: the webhook, generated ValidatingAdmissionPolicies, or both
    /// ([`crate::policy::vap`]).
    pub validating_admission_policies: crate::policy::vap::PolicyConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            enforcement: Action::Deny,
            namespaces: Vec::new(),
            break_glass: BreakGlass::default(),
            audit: Audit::default(),
            validating_admission_policies: Default::default(),
        }
    }
}

/// One `namespaces` entry: the namespaces it names, and what changes there. It sets at least one of
/// `enforcement` and `mutation`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamespaceRule {
    /// Exact names, or `prefix*`.
    pub names: Vec<String>,
    /// The cap in these namespaces (default: the top-level `enforcement`).
    #[serde(default)]
    pub enforcement: Option<Action>,
    /// Whether `/mutate` changes objects here (default true): `false` turns off every mutator,
    /// for every kind, in the namespaces the rule matches.
    #[serde(default)]
    pub mutation: Option<bool>,
}

impl NamespaceRule {
    fn matches(&self, namespace: &str) -> bool {
        self.names.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => namespace.starts_with(prefix),
            None => p == namespace,
        })
    }
}

/// `breakGlass`: the allow-list of who may use and approve break-glass ([`crate::breakglass`]),
/// empty by default, and the limit on how far ahead a request may expire.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct BreakGlass {
    /// Users (`userInfo.username`) who may use and set the break-glass annotations.
    pub users: Vec<String>,
    /// Groups (`userInfo.groups`) whose members may.
    pub groups: Vec<String>,
    /// How far ahead `palisade.dev/break-glass-expires` may be.
    #[serde(rename = "maxTTL", with = "humantime_serde")]
    pub max_ttl: Duration,
    /// Controllers that copy a workload's pod template into the objects they create: they may
    /// carry the annotations onto objects a workload owns.
    pub trusted_controllers: Vec<String>,
}

impl Default for BreakGlass {
    fn default() -> Self {
        Self {
            users: Vec::new(),
            groups: Vec::new(),
            max_ttl: Duration::from_secs(24 * 3600),
            trusted_controllers: DEFAULT_TRUSTED_CONTROLLERS.map(String::from).to_vec(),
        }
    }
}

impl BreakGlass {
    /// Whether the requester is on the allow-list.
    pub fn allows(&self, user: &crate::admission::UserInfo) -> bool {
        (!user.username.is_empty() && self.users.contains(&user.username))
            || user.groups.iter().any(|g| self.groups.contains(g))
    }

    /// Whether the requester is one of `trustedControllers`, which may carry the annotations from a
    /// workload's template onto the objects it owns.
    pub fn is_trusted_controller(&self, user: &crate::admission::UserInfo) -> bool {
        !user.username.is_empty() && self.trusted_controllers.contains(&user.username)
    }
}

/// `audit`: the background audit of what runs in the cluster, done by the leader.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Audit {
    /// Whether the leader audits what runs in the cluster.
    pub enabled: bool,
    /// Time between two audits (at least 1s; 60s by default).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Results listed in one PolicyReport; the summary still counts every one.
    pub max_results_per_report: usize,
    /// Violations listed in a cluster constraint's `status.violations` (Gatekeeper's
    /// `--constraint-violations-limit`); `status.totalViolations` counts every one.
    pub constraint_violations_limit: usize,
    /// Objects asked for per list call when a kind is not in the inventory.
    pub page_size: u32,
}

impl Default for Audit {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(60),
            max_results_per_report: 1000,
            constraint_violations_limit: 20,
            page_size: 500,
        }
    }
}

/// How reviews in one namespace are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    /// The cap on every constraint's enforcementAction.
    pub enforcement: Action,
    /// Whether the mutators apply.
    pub mutation: bool,
}

impl Config {
    /// The mode of a namespace (`""` for cluster-scoped objects, which get the default).
    pub fn mode(&self, namespace: &str) -> Mode {
        let rule = if namespace.is_empty() {
            None
        } else {
            self.namespaces.iter().find(|r| r.matches(namespace))
        };
        Mode {
            enforcement: rule.and_then(|r| r.enforcement).unwrap_or(self.enforcement),
            mutation: rule.and_then(|r| r.mutation).unwrap_or(true),
        }
    }

    /// Parses the YAML of a configuration file named `file` (for messages).
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let error = |field: String, message: String| ConfigError {
            file: file.to_owned(),
            field,
            message,
        };
        let value: serde_json::Value = yaml_serde::from_str(text)
            .map_err(|e| error(String::new(), format!("not valid YAML: {e}")))?;
        if value.is_null() {
            return Ok(Self::default());
        }
        if !value.is_object() {
            return Err(error(
                String::new(),
                "must be a mapping with the fields enforcement, namespaces, breakGlass, audit and validatingAdmissionPolicies"
                    .into(),
            ));
        }
        let config: Self = serde_path_to_error::deserialize(value).map_err(|e| {
            let field = e.path().to_string();
            error(
                if field == "." { String::new() } else { field },
                e.into_inner().to_string(),
            )
        })?;
        config
            .check()
            .map_err(|(field, message)| error(field, message))?;
        Ok(config)
    }

    /// What serde cannot say: patterns, durations and allow-lists that make no sense.
    fn check(&self) -> Result<(), (String, String)> {
        for (i, rule) in self.namespaces.iter().enumerate() {
            if rule.names.is_empty() {
                return Err((
                    format!("namespaces[{i}].names"),
                    "is empty: list namespace names or prefix* patterns".into(),
                ));
            }
            for (j, name) in rule.names.iter().enumerate() {
                let body = name.strip_suffix('*').unwrap_or(name);
                if name.is_empty() || name == "*" || body.contains('*') {
                    return Err((
                        format!("namespaces[{i}].names[{j}]"),
                        format!(
                            "{name:?} is not a namespace name or a prefix* pattern (a '*' only at the end, after at least one character; to change every namespace, set the top-level enforcement)"
                        ),
                    ));
                }
            }
            if rule.enforcement.is_none() && rule.mutation.is_none() {
                return Err((
                    format!("namespaces[{i}]"),
                    "sets neither enforcement nor mutation: add one, or remove the entry".into(),
                ));
            }
        }
        let glass = &self.break_glass;
        if glass.max_ttl.is_zero() {
            return Err((
                "breakGlass.maxTTL".into(),
                "must be more than 0, e.g. 4h".into(),
            ));
        }
        if let Some(g) = glass
            .groups
            .iter()
            .find(|g| TOO_WIDE_GROUPS.contains(&g.as_str()))
        {
            return Err((
                "breakGlass.groups".into(),
                format!(
                    "{g:?} holds every user or service account, which would let anyone bypass the policies: name the on-call group instead"
                ),
            ));
        }
        // A namespace's service accounts: whoever may create pods there may run as any of them.
        if let Some(g) = glass
            .groups
            .iter()
            .find(|g| g.starts_with("system:serviceaccounts:"))
        {
            return Err((
                "breakGlass.groups".into(),
                format!(
                    "{g:?} holds every service account of a namespace, and so anyone who may create pods there: name people's groups, or the one service account in breakGlass.users"
                ),
            ));
        }
        if glass
            .users
            .iter()
            .chain(&glass.groups)
            .any(String::is_empty)
        {
            return Err((
                "breakGlass".into(),
                "users and groups must not hold an empty name".into(),
            ));
        }
        if self.audit.interval < Duration::from_secs(1) {
            return Err((
                "audit.interval".into(),
                "must be at least 1s, e.g. 60s".into(),
            ));
        }
        if self.audit.max_results_per_report == 0 || self.audit.page_size == 0 {
            return Err((
                "audit".into(),
                "maxResultsPerReport and pageSize must be more than 0".into(),
            ));
        }
        self.validating_admission_policies.check()
    }
}

/// A configuration file that cannot be used: which file, which field, what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {}{message}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
pub struct ConfigError {
    /// The file, as named to [`Config::parse`].
    pub file: String,
    /// The path of the field, e.g. `namespaces[0].enforcement` (empty for the whole file).
    pub field: String,
    /// What is wrong and what to write instead.
    pub message: String,
}

/// Durations written as `90s`, `15m` or `24h`.
mod humantime_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration ({e}): write it like 90s, 15m or 24h"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_default() {
        for text in ["", "# nothing\n", "{}"] {
            assert_eq!(Config::parse(text, "c.yaml").unwrap(), Config::default());
        }
        let c = Config::default();
        assert_eq!(
            c.mode("anything"),
            Mode {
                enforcement: Action::Deny,
                mutation: true
            }
        );
        assert!(c.break_glass.users.is_empty() && c.break_glass.groups.is_empty());
        assert_eq!(c.break_glass.max_ttl, Duration::from_secs(86_400));
        assert_eq!(c.audit.interval, Duration::from_secs(60));
    }

    #[test]
    fn namespaces_take_the_first_matching_rule_by_name_or_prefix() {
        let c = Config::parse(
            "enforcement: dryrun\nnamespaces:\n  - names: [payments, \"team-*\"]\n    enforcement: deny\n  - names: [team-legacy]\n    enforcement: warn\n  - names: [batch]\n    mutation: false\n",
            "c.yaml",
        )
        .unwrap();
        let e = |ns: &str| c.mode(ns).enforcement;
        assert_eq!(e("payments"), Action::Deny);
        assert_eq!(e("payments-2"), Action::Dryrun, "exact names are exact");
        assert_eq!(e("team-a"), Action::Deny);
        assert_eq!(e("team-legacy"), Action::Deny, "the first match wins");
        assert_eq!(e("other"), Action::Dryrun);
        assert_eq!(
            e(""),
            Action::Dryrun,
            "cluster-scoped objects get the default"
        );
        assert_eq!(
            c.mode("batch"),
            Mode {
                enforcement: Action::Dryrun,
                mutation: false
            }
        );
    }

    #[test]
    fn errors_name_the_file_the_field_and_the_fix() {
        let cases = [
            (
                "enforcement: audit\n",
                "enforcement",
                "unknown variant `audit`",
            ),
            (
                "enforcment: deny\n",
                "enforcment",
                "expected one of `enforcement`",
            ),
            (
                "namespaces:\n  - names: [a]\n    enforcement: block\n",
                "namespaces[0].enforcement",
                "expected one of",
            ),
            (
                "namespaces:\n  - names: [\"*\"]\n    enforcement: deny\n",
                "namespaces[0].names[0]",
                "top-level enforcement",
            ),
            (
                "namespaces:\n  - names: [\"a*b\"]\n    enforcement: deny\n",
                "namespaces[0].names[0]",
                "only at the end",
            ),
            (
                "namespaces:\n  - names: [a]\n",
                "namespaces[0]",
                "neither enforcement nor mutation",
            ),
            (
                "breakGlass:\n  maxTTL: forever\n",
                "breakGlass.maxTTL",
                "like 90s, 15m or 24h",
            ),
            (
                "breakGlass:\n  groups: [system:authenticated]\n",
                "breakGlass.groups",
                "every user",
            ),
            (
                "breakGlass:\n  groups: [sre, \"system:serviceaccounts:ci\"]\n",
                "breakGlass.groups",
                "every service account of a namespace",
            ),
            (
                "audit:\n  interval: 10ms\n",
                "audit.interval",
                "at least 1s",
            ),
            ("- a\n", "", "must be a mapping"),
            ("enforcement: [\n", "", "not valid YAML"),
        ];
        for (text, field, fix) in cases {
            let err = Config::parse(text, "/etc/palisade/config.yaml").unwrap_err();
            assert_eq!(err.field, field, "{text}: {err}");
            let shown = err.to_string();
            assert!(shown.starts_with("/etc/palisade/config.yaml: "), "{shown}");
            assert!(shown.contains(fix), "{text}: {shown}");
        }
    }

    #[test]
    fn break_glass_allows_named_users_and_groups_only() {
        let c = Config::parse("breakGlass:\n  users: [alice]\n  groups: [sre]\n", "c").unwrap();
        let user = |name: &str, groups: &[&str]| crate::admission::UserInfo {
            username: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        assert!(c.break_glass.allows(&user("alice", &[])));
        assert!(c.break_glass.allows(&user("bob", &["dev", "sre"])));
        assert!(!c.break_glass.allows(&user("bob", &["dev"])));
        assert!(!c.break_glass.allows(&user("", &[])));
        assert!(!c.break_glass.allows(&user("Alice", &[])));
        assert!(c.break_glass.is_trusted_controller(&user(
            "system:serviceaccount:kube-system:replicaset-controller",
            &[]
        )));
    }
}
