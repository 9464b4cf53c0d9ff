//! Reads: one object, and lists in pages.

use axum::response::Response;
use base64::Engine;
use serde_json::{Value, json};

use super::{Call, error, respond};
use crate::apiserver::store::{ApiError, Key, Stored};

pub(super) fn get(call: &Call, name: &str) -> Response {
    let r = call.target.resource;
    let store = call.shared.store.lock().unwrap();
    match store
        .objects
        .get(&(r, call.target.namespace.clone(), name.to_owned()))
    {
        Some(s) => call.respond(200, &s.render(&r)),
        None => error(ApiError::not_found(&r, name)),
    }
}

/// A list, in pages with `limit` and `continue`, filtered by a `key=value` label selector.
pub(super) fn list(call: &Call) -> Response {
    let (target, requested, q) = (&call.target, call.requested, &call.query);
    let r = target.resource;
    let store = call.shared.store.lock().unwrap();
    let (list_rv, start) = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(token.trim_end_matches('='))
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
            match decoded {
                Some(t) => (
                    t["rv"].as_u64().unwrap_or(store.rv),
                    t["start"].as_str().unwrap_or("").to_owned(),
                ),
                None => {
                    return error(ApiError::bad_request("continue key is not valid".into()));
                }
            }
        }
        None => (store.rv, String::new()),
    };
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let matching: Vec<(&Key, &Stored)> = store
        .objects
        .iter()
        .filter(|(k, _)| k.0 == r && (target.namespace.is_empty() || k.1 == target.namespace))
        .filter(|(k, _)| start.is_empty() || sort_key(k) > start)
        .filter(|(_, stored)| {
            q.get("labelSelector").is_none_or(|selector| {
                selector.split(',').all(|term| {
                    let (key, value) = term.split_once('=').unwrap_or((term, ""));
                    let value = value.trim_start_matches('=');
                    stored.object["metadata"]["labels"][key] == value
                })
            })
        })
        .collect();
    let take = limit.unwrap_or(usize::MAX).min(matching.len());
    let items: Vec<Value> = matching[..take]
        .iter()
        .map(|(_, s)| {
            let mut item = s.render(&r);
            let m = item.as_object_mut().unwrap();
            m.remove("kind");
            m.remove("apiVersion");
            item
        })
        .collect();
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if take < matching.len() {
        let last = sort_key(matching[take - 1].0);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(
                &json!({"v": "meta.k8s.io/v1", "rv": list_rv, "start": format!("{last}\u{0}")}),
            )
            .unwrap(),
        );
        metadata["continue"] = json!(token);
        metadata["remainingItemCount"] = json!(matching.len() - take);
    }
    respond(
        200,
        &json!({"kind": format!("{}List", r.kind), "apiVersion": requested.api_version(), "metadata": metadata, "items": items}),
    )
}

/// Pages are ordered as etcd orders keys: by namespace, then name.
fn sort_key(k: &Key) -> String {
    if k.1.is_empty() {
        k.2.clone()
    } else {
        format!("{}/{}", k.1, k.2)
    }
}
