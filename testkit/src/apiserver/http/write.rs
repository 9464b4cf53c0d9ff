//! Writes: create (POST), update (PUT, optimistic concurrency), patch (server-side apply only,
//! on the object or its `/status`) and delete.

use axum::response::Response;
use serde_json::{Value, json};

use super::{Call, error};
use crate::apiserver::mutate;
use crate::apiserver::resources::Resource;
use crate::apiserver::store::{ApiError, identity};

/// The body as JSON, or the 400 to answer.
fn json_body(call: &Call) -> Result<Value, ApiError> {
    serde_json::from_slice::<Value>(&call.body)
        .map_err(|_| ApiError::bad_request("the body is not JSON".into()))
}

pub(super) fn create(call: &Call) -> Response {
    let r = call.target.resource;
    let mut object = match json_body(call) {
        Ok(object) => object,
        Err(e) => return error(e),
    };
    if r.namespaced {
        object["metadata"]["namespace"] = json!(call.target.namespace);
    }
    let manager = call.manager();
    let Some((ns, name)) = identity(&r, &object).ok() else {
        return error(identity(&r, &object).unwrap_err());
    };
    match mutate(call.shared, |s| s.create(&r, &ns, &name, &manager, object)) {
        Ok(v) => call.respond(201, &v),
        Err(e) => error(e),
    }
}

pub(super) fn update(call: &Call, name: &str) -> Response {
    let r = call.target.resource;
    let mut object = match json_body(call) {
        Ok(object) => object,
        Err(e) => return error(e),
    };
    if object["metadata"]["name"].as_str() != Some(name) {
        return error(ApiError::bad_request(
            "the name of the body does not match the URL".into(),
        ));
    }
    if r.namespaced {
        object["metadata"]["namespace"] = json!(call.target.namespace);
    }
    let manager = call.manager();
    let ns = call.target.namespace.clone();
    match mutate(call.shared, |s| s.update(&r, &ns, name, &manager, object)) {
        Ok(v) => call.respond(200, &v),
        Err(e) => error(e),
    }
}

/// Server-side apply (`application/apply-patch+yaml`) of the object, or of its `/status`; any
/// other patch is 415.
pub(super) fn patch(call: &Call, name: &str) -> Response {
    let r = call.target.resource;
    let content_type = call
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type != "application/apply-patch+yaml" {
        return error(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the stand-in implements only server-side apply, not {content_type}"),
            Value::Null,
        ));
    }
    let Some(manager) = call.query.get("fieldManager").cloned() else {
        return error(ApiError::bad_request(
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into(),
        ));
    };
    let config: Value = match serde_json::from_slice(&call.body) {
        Ok(v) => v,
        Err(_) => match yaml_serde::from_slice(&call.body) {
            Ok(v) => v,
            Err(e) => {
                return error(ApiError::bad_request(format!("error decoding YAML: {e}")));
            }
        },
    };
    if config["metadata"]["name"].as_str() != Some(name) {
        return error(ApiError::bad_request(
            "the name of the body does not match the URL".into(),
        ));
    }
    if Resource::of(&config, &call.served) != Some(call.requested) {
        return error(ApiError::bad_request(
            "apiVersion and kind must match the URL".into(),
        ));
    }
    let force = call.query.get("force").is_some_and(|f| f == "true");
    let ns = call.target.namespace.clone();
    if call.target.status {
        return match mutate(call.shared, |s| {
            s.apply_status(&r, &ns, name, &manager, config, force)
        }) {
            Ok(v) => call.respond(200, &v),
            Err(e) => error(e),
        };
    }
    let existed =
        call.shared
            .store
            .lock()
            .unwrap()
            .objects
            .contains_key(&(r, ns.clone(), name.to_owned()));
    match mutate(call.shared, |s| {
        s.apply(&r, &ns, name, &manager, config, force)
    }) {
        Ok(v) => call.respond(if existed { 200 } else { 201 }, &v),
        Err(e) => error(e),
    }
}

pub(super) fn delete(call: &Call, name: &str) -> Response {
    let r = call.target.resource;
    let ns = call.target.namespace.clone();
    // DeleteOptions' preconditions, as the real server checks them: 409 Conflict when the
    // object's uid or resourceVersion is no longer the one named.
    let options: Value = serde_json::from_slice(&call.body).unwrap_or(Value::Null);
    let preconditions = options["preconditions"].clone();
    match mutate(call.shared, |s| {
        if let Some(current) = s.objects.get(&(r, ns.clone(), name.to_owned())) {
            for (field, what) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
                let (Some(want), Some(have)) = (
                    preconditions[field].as_str(),
                    current.object["metadata"][field].as_str(),
                ) else {
                    continue;
                };
                if want != have {
                    return Err(ApiError::new(
                        409,
                        "Conflict",
                        format!(
                            "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: {what} in precondition: {want}, {what} in object meta: {have}",
                            r.qualified()
                        ),
                        ApiError::details(&r, name),
                    ));
                }
            }
        }
        s.delete(&r, &ns, name)
    }) {
        Ok(v) => call.respond(200, &v),
        Err(e) => error(e),
    }
}
