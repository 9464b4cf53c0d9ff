//! The stand-in over HTTP: authentication, the query, routing, authorisation, then one handler
//! per verb (`read`: get and list, `watch`, `write`: create, update, patch and delete) and the
//! discovery documents.

mod discovery;
mod read;
mod watch;
mod write;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Shared;
use super::resources::{Resource, in_version};
use super::store::ApiError;

fn respond(code: u16, body: &Value) -> Response {
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [("content-type", "application/json")],
        serde_json::to_vec(body).unwrap(),
    )
        .into_response()
}

fn error(e: ApiError) -> Response {
    respond(e.code, &e.body)
}

/// Which resource and object a path names.
struct Target {
    /// The kind in the version the path names.
    resource: Resource,
    /// The namespace of the path (empty for cluster-wide).
    namespace: String,
    name: Option<String>,
    /// The path ends in `/status`.
    status: bool,
}

enum Route {
    /// `/api`: the core versions.
    Core,
    /// `/apis`: every group.
    Groups,
    /// `/apis/<group>`.
    Group(&'static str),
    Discovery(&'static str, &'static str),
    Object(Target),
}

fn route(path: &str, resources: &[Resource]) -> Option<Route> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api"] => return Some(Route::Core),
        ["apis"] => return Some(Route::Groups),
        ["apis", g] => {
            return resources
                .iter()
                .find(|r| r.group == *g)
                .map(|r| Route::Group(r.group));
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let known = resources
        .iter()
        .copied()
        .find(|r| r.group == group && r.version == version)?;
    let find = |plural: &str| {
        resources
            .iter()
            .copied()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    };
    let target = match rest {
        [] => return Some(Route::Discovery(known.group, known.version)),
        [plural] => Target {
            resource: find(plural)?,
            namespace: String::new(),
            name: None,
            status: false,
        },
        ["namespaces", ns, plural] if group.is_empty() || find(plural).is_some() => Target {
            resource: find(plural)?,
            namespace: (*ns).to_owned(),
            name: None,
            status: false,
        },
        ["namespaces", ns, plural, name] => Target {
            resource: find(plural)?,
            namespace: (*ns).to_owned(),
            name: Some((*name).to_owned()),
            status: false,
        },
        ["namespaces", ns, plural, name, "status"] => Target {
            resource: find(plural).filter(|r| r.status)?,
            namespace: (*ns).to_owned(),
            name: Some((*name).to_owned()),
            status: true,
        },
        [plural, name, "status"] if find(plural).is_some_and(|r| r.status) => Target {
            resource: find(plural)?,
            namespace: String::new(),
            name: Some((*name).to_owned()),
            status: true,
        },
        [plural, name] => Target {
            resource: find(plural)?,
            namespace: String::new(),
            name: Some((*name).to_owned()),
            status: false,
        },
        _ => return None,
    };
    Some(Route::Object(target))
}

fn query(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) async fn handle(
    shared: Arc<Shared>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Response {
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(ApiError::bad_request("cannot read the body".into())),
    };
    shared.requests.lock().unwrap().push(format!(
        "{} {}",
        parts.method,
        parts.uri.path_and_query().map_or("", |p| p.as_str())
    ));
    dispatch(&shared, parts.method, parts.uri, parts.headers, body)
}

/// A request on objects, authenticated, routed and authorised: what a verb's handler needs.
struct Call<'a> {
    shared: &'a Arc<Shared>,
    /// The kind in the version the path names.
    requested: Resource,
    /// The object or objects named, `resource` in the version they are stored in.
    target: Target,
    query: BTreeMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
    /// The kinds served when the request came.
    served: Vec<Resource>,
}

impl Call<'_> {
    /// An answer in the version the path names.
    fn respond(&self, code: u16, body: &Value) -> Response {
        respond(code, &in_version(&self.requested, body.clone()))
    }

    /// The field manager of a create or update: `fieldManager`, else the client's name.
    fn manager(&self) -> String {
        self.query
            .get("fieldManager")
            .cloned()
            .unwrap_or_else(|| agent(&self.headers))
    }
}

fn dispatch(
    shared: &Arc<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = authenticate(shared, &headers) {
        return error(e);
    }
    let q = query(&uri);
    let watching = q.get("watch").is_some_and(|w| w == "1" || w == "true");
    if let Err(e) = supported_selectors(&q, watching) {
        return error(e);
    }
    let served = shared.store.lock().unwrap().served();
    let Some(route) = route(uri.path(), &served) else {
        return respond(
            404,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "the server could not find the requested resource", "reason": "NotFound", "details": {}, "code": 404}),
        );
    };
    let target = match route {
        Route::Object(t) => t,
        other => return discovery::answer(other, &served),
    };
    if let Err(e) = authorize(shared, &method, &target, watching) {
        return error(e);
    }
    let requested = target.resource;
    let call = Call {
        shared,
        requested,
        target: Target {
            resource: requested.stored(),
            ..target
        },
        query: q,
        headers,
        body,
        served,
    };
    if call.target.status && method != Method::PATCH && method != Method::GET {
        return error(ApiError::new(
            405,
            "MethodNotAllowed",
            "the stand-in implements only get and server-side apply on /status".into(),
            Value::Null,
        ));
    }
    match (method, call.target.name.clone()) {
        (Method::GET, None) if watching => watch::watch(&call),
        (Method::GET, None) => read::list(&call),
        (Method::GET, Some(name)) => read::get(&call, &name),
        (Method::POST, None) => write::create(&call),
        (Method::PUT, Some(name)) => write::update(&call, &name),
        (Method::PATCH, Some(name)) => write::patch(&call, &name),
        (Method::DELETE, Some(name)) => write::delete(&call, &name),
        _ => error(ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".into(),
            Value::Null,
        )),
    }
}

/// Any bearer token is Palisade's ServiceAccount; none is 401, and a token a test made fail
/// gets 500.
fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if token.is_empty() {
        return Err(ApiError::new(
            401,
            "Unauthorized",
            "Unauthorized".into(),
            Value::Null,
        ));
    }
    if shared.store.lock().unwrap().failing_tokens.contains(token) {
        return Err(ApiError::new(
            500,
            "InternalError",
            "Internal error occurred: the stand-in was told to fail this client".into(),
            Value::Null,
        ));
    }
    Ok(())
}

/// `key=value` label selectors on lists only, no field selectors: anything else is 400, so
/// that a test would notice.
fn supported_selectors(q: &BTreeMap<String, String>, watching: bool) -> Result<(), ApiError> {
    if q.contains_key("fieldSelector") || (watching && q.contains_key("labelSelector")) {
        return Err(ApiError::bad_request(
            "the stand-in implements label selectors on lists only, and no field selectors".into(),
        ));
    }
    if let Some(selector) = q.get("labelSelector")
        && selector
            .split(',')
            .any(|t| t.split_once('=').is_none() || t.contains("!="))
    {
        return Err(ApiError::bad_request(
            "the stand-in implements only key=value label selectors".into(),
        ));
    }
    Ok(())
}

/// Holds the request to the RBAC rules (and to the kinds a test forbade), with the real
/// server's 403.
fn authorize(
    shared: &Shared,
    method: &Method,
    target: &Target,
    watching: bool,
) -> Result<(), ApiError> {
    let requested = target.resource;
    let forbidden = (requested.group.to_owned(), requested.plural.to_owned());
    let verb = match (method, &target.name) {
        (&Method::GET, None) if watching => "watch",
        (&Method::GET, None) => "list",
        (&Method::GET, Some(_)) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, None) => "deletecollection",
        (&Method::DELETE, Some(_)) => "delete",
        _ => "access",
    };
    let resource = if target.status {
        format!("{}/status", requested.plural)
    } else {
        requested.plural.to_owned()
    };
    let denied = {
        let mut store = shared.store.lock().unwrap();
        // A server-side apply that creates its object needs create as well as patch, as on
        // the real server.
        let creates = method == Method::PATCH
            && !target.status
            && target.name.as_ref().is_some_and(|name| {
                !store.objects.contains_key(&(
                    requested.stored(),
                    target.namespace.clone(),
                    name.clone(),
                ))
            });
        let verbs: &[&str] = if creates { &[verb, "create"] } else { &[verb] };
        store.forbidden.contains(&forbidden)
            || store.rbac.as_mut().is_some_and(|rbac| {
                !verbs.iter().all(|verb| {
                    rbac.allows(
                        verb,
                        requested.group,
                        &resource,
                        &target.namespace,
                        target.name.as_deref(),
                    )
                })
            })
    };
    if !denied {
        return Ok(());
    }
    // The real server's wording.
    let scope = if target.namespace.is_empty() {
        "at the cluster scope".to_owned()
    } else {
        format!("in the namespace \"{}\"", target.namespace)
    };
    let what = if requested.group.is_empty() {
        requested.plural.to_owned()
    } else {
        format!("{}.{}", requested.plural, requested.group)
    };
    Err(ApiError::new(
        403,
        "Forbidden",
        format!(
            "{what} is forbidden: User \"system:serviceaccount:palisade-system:palisade\" cannot {verb} resource \"{resource}\" in API group \"{}\" {scope}",
            requested.group
        ),
        json!({"group": requested.group, "kind": requested.plural}),
    ))
}

fn agent(headers: &HeaderMap) -> String {
    headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split('/').next())
        .unwrap_or("unknown")
        .to_owned()
}
