//! Discovery: `/api`, `/apis`, `/apis/<group>` and `/apis/<group>/<version>`, one version per
//! group.

use axum::response::Response;
use serde_json::{Value, json};

use super::{Route, respond};
use crate::apiserver::resources::Resource;

/// The document a discovery route asks for (`route` is not an object's).
pub(super) fn answer(route: Route, resources: &[Resource]) -> Response {
    match route {
        Route::Discovery(group, version) => respond(200, &discovery(resources, group, version)),
        Route::Core => respond(
            200,
            &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]}),
        ),
        Route::Groups => {
            let mut groups: Vec<Value> = Vec::new();
            for r in resources.iter().filter(|r| !r.group.is_empty()) {
                if !groups.iter().any(|g| g["name"] == r.group) {
                    groups.push(api_group(r));
                }
            }
            respond(
                200,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            )
        }
        Route::Group(group) => {
            let r = resources.iter().find(|r| r.group == group).unwrap();
            let mut g = api_group(r);
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            respond(200, &g)
        }
        Route::Object(_) => unreachable!("an object's route is not discovery"),
    }
}

/// An APIGroup entry: the stand-in serves one version per group.
fn api_group(r: &Resource) -> Value {
    let version = json!({"groupVersion": r.api_version(), "version": r.version});
    json!({"name": r.group, "versions": [version.clone()], "preferredVersion": version})
}

fn discovery(served: &[Resource], group: &str, version: &str) -> Value {
    let resources: Vec<Value> = served
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .map(|r| {
            json!({
                "name": r.plural,
                "singularName": r.kind.to_lowercase(),
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            })
        })
        .collect();
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}
