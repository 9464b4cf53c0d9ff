//! ValidatingAdmissionPolicies generated from K8sNativeValidation constraints, so that the API
//! server judges what it can alone (no inventory, no break-glass, no external data), and the
//! webhook keeps the rest.
//!
//! (Skeleton: the interface the manifests command and the leader's sync build on.)

use serde::Deserialize;
use serde_json::Value;

use crate::bundle::Bundle;
use crate::config::Config;

/// Where a constraint is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Placement {
    /// Palisade's webhook only (the default).
    #[default]
    Webhook,
    /// A generated ValidatingAdmissionPolicy only: the webhook is no longer sent it.
    ApiServer,
    /// Both.
    Both,
}

/// The configuration file's `validatingAdmissionPolicies`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyConfig {
    /// Where constraints are judged, unless a rule below says otherwise.
    pub placement: Placement,
    /// Per-constraint placements; the first match wins.
    pub constraints: Vec<PlacementRule>,
    /// Whether the leader keeps the generated objects in the cluster in sync with the bundle.
    pub sync: bool,
}

/// One `validatingAdmissionPolicies.constraints` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PlacementRule {
    /// The constraint's kind; any kind when absent.
    #[serde(default)]
    pub kind: Option<String>,
    /// The constraint's name.
    pub name: String,
    /// Where it is judged.
    pub placement: Placement,
}

/// What [`generate`] made of a bundle under a configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Generated {
    /// ValidatingAdmissionPolicies and their bindings, in a stable order: each policy, then its
    /// bindings.
    pub objects: Vec<Value>,
    /// The constraints (kind, name) the API server judges alone: the webhook is not sent them.
    pub api_server_only: Vec<(String, String)>,
    /// Constraints placed on the API server that stay on the webhook: (kind, name, why).
    pub kept_on_webhook: Vec<(String, String, String)>,
}

/// The ValidatingAdmissionPolicies and bindings for `bundle` under `config` (its
/// `validatingAdmissionPolicies`, `breakGlass` and `namespaces`).
pub fn generate(_bundle: &Bundle, _config: &Config) -> Generated {
    Generated::default()
}
