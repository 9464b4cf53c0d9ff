//! The default-deny generator (what Kyverno's generate rules do, built in). Every namespace that
//! matches the selector and is not exempt holds two NetworkPolicies:
//! - `default-deny-all`: every pod, Ingress and Egress, no rule;
//! - `allow-dns`: egress from every pod to the cluster DNS pods in kube-system, UDP and TCP 53.
//!
//! They are written with server-side apply under the field manager `palisade`, re-created when
//! deleted and restored when changed. A policy of the same name that Palisade did not create
//! (no `palisade` manager in its managedFields) is left alone, and nothing is ever deleted:
//! taking a namespace out of the selector keeps its policies, since removing a default-deny
//! would open its traffic.
//!
//! It runs as a kube-runtime controller on Namespaces that also watches NetworkPolicies, so a
//! deleted or edited policy brings its namespace back to the reconciler; only the leader runs it.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::{Value, json};

use crate::telemetry::metrics::{Metrics, ReasonLabels};
use crate::zero_trust::{ALLOW_DNS, DEFAULT_DENY, FIELD_MANAGER, Scope, generated_policies};

/// How often every namespace is checked again, even without an event.
const RESYNC: Duration = Duration::from_secs(300);

struct Context {
    client: kube::Client,
    scope: Scope,
    metrics: Arc<Metrics>,
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("cannot apply NetworkPolicy {namespace}/{name}: {source}")]
    Apply {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("cannot read NetworkPolicy {namespace}/{name}: {source}")]
    Read {
        namespace: String,
        name: String,
        source: kube::Error,
    },
}

/// Runs the generator until the future is dropped.
pub async fn run(client: kube::Client, scope: Scope, metrics: Arc<Metrics>) {
    tracing::info!(selector = %scope.selector, "default-deny generator started");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let policies: Api<NetworkPolicy> = Api::all(client.clone());
    let context = Arc::new(Context {
        client,
        scope,
        metrics,
    });
    Controller::new(namespaces, watcher::Config::default())
        .watches(policies, watcher::Config::default(), |policy| {
            let name = policy.metadata.name.as_deref()?;
            if name != DEFAULT_DENY && name != ALLOW_DNS {
                return None;
            }
            Some(ObjectRef::new(policy.metadata.namespace.as_deref()?))
        })
        .run(reconcile, on_error, context)
        .for_each(|_| std::future::ready(()))
        .await;
}

async fn reconcile(namespace: Arc<Namespace>, context: Arc<Context>) -> Result<Action, Error> {
    let value = serde_json::to_value(namespace.as_ref()).unwrap_or(Value::Null);
    if !context.scope.includes(&value) {
        return Ok(Action::await_change());
    }
    let Some(name) = namespace.metadata.name.as_deref() else {
        return Ok(Action::await_change());
    };
    let api: Api<NetworkPolicy> = Api::namespaced(context.client.clone(), name);
    for desired in generated_policies(name) {
        let policy = desired["metadata"]["name"].as_str().unwrap_or_default();
        let existing = api.get_opt(policy).await.map_err(|source| Error::Read {
            namespace: name.to_owned(),
            name: policy.to_owned(),
            source,
        })?;
        let reason = match existing {
            None => "created",
            Some(current) => {
                if !created_by_palisade(&current) {
                    tracing::warn!(
                        namespace = name,
                        policy,
                        "a NetworkPolicy of this name exists and was not created by Palisade; leaving it alone"
                    );
                    continue;
                }
                if matches_desired(&current, &desired) {
                    continue;
                }
                "restored"
            }
        };
        let failed = |source| Error::Apply {
            namespace: name.to_owned(),
            name: policy.to_owned(),
            source,
        };
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let applied = api
            .patch(policy, &params, &Patch::Apply(&desired))
            .await
            .map_err(failed)?;
        if !matches_desired(&applied, &desired) {
            // Apply takes back the fields Palisade owns, but a field someone else added (an
            // ingress rule, say) stays theirs: replace the spec, guarded by the
            // resourceVersion just read (a conflict retries the whole reconcile).
            let mut restored = serde_json::to_value(&applied).unwrap_or(Value::Null);
            restored["spec"] = desired["spec"].clone();
            restored["metadata"]["labels"]["app.kubernetes.io/managed-by"] = json!("palisade");
            if let Some(meta) = restored["metadata"].as_object_mut() {
                meta.remove("managedFields");
            }
            let restored: NetworkPolicy =
                serde_json::from_value(restored).map_err(|e| failed(kube::Error::SerdeError(e)))?;
            let params = kube::api::PostParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..Default::default()
            };
            api.replace(policy, &params, &restored)
                .await
                .map_err(failed)?;
        }
        context
            .metrics
            .cluster()
            .default_deny_applied
            .get_or_create(&ReasonLabels { reason })
            .inc();
        tracing::info!(
            namespace = name,
            policy,
            reason,
            "generated NetworkPolicy applied"
        );
    }
    Ok(Action::requeue(RESYNC))
}

fn on_error(namespace: Arc<Namespace>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(namespace = namespace.metadata.name.as_deref().unwrap_or(""), %error, "default-deny generation failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

fn created_by_palisade(policy: &NetworkPolicy) -> bool {
    policy
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .any(|m| m.manager.as_deref() == Some(FIELD_MANAGER))
}

/// Whether the policy still says what Palisade applied: the same spec and Palisade's label.
fn matches_desired(current: &NetworkPolicy, desired: &Value) -> bool {
    let Ok(current) = serde_json::to_value(current) else {
        return false;
    };
    current["spec"] == desired["spec"]
        && current["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "palisade"
}
