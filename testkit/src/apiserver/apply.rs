//! Server-side apply and field ownership: the leaf paths a manager sets, conflicts with other
//! managers (`FieldManagerConflict`), `force`, fields a manager stops applying, and `/status`
//! applied per list-map element as a CRD's schema declares.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::resources::Resource;
use super::store::{ApiError, Event, Managed, Store, Stored, now};

/// Paths of the fields a manager sets in `object`: every leaf under spec, data, and the labels
/// and annotations. Maps are descended into, lists are atomic, an empty map is a leaf.
pub(super) fn leaf_paths(object: &Value) -> BTreeSet<Vec<String>> {
    fn walk(value: &Value, path: &mut Vec<String>, out: &mut BTreeSet<Vec<String>>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    path.push(k.clone());
                    walk(v, path, out);
                    path.pop();
                }
            }
            _ => {
                out.insert(path.clone());
            }
        }
    }
    let mut out = BTreeSet::new();
    let Some(map) = object.as_object() else {
        return out;
    };
    for (k, v) in map {
        match k.as_str() {
            "apiVersion" | "kind" | "status" => {}
            "metadata" => {
                for field in ["labels", "annotations"] {
                    if let Some(m) = v.get(field) {
                        walk(m, &mut vec![k.clone(), field.to_owned()], &mut out);
                    }
                }
            }
            _ => walk(v, &mut vec![k.clone()], &mut out),
        }
    }
    out
}

/// The keys of a list-map element segment, `k:{"id":"a"}`.
fn segment_keys(seg: &str) -> Option<Map<String, Value>> {
    serde_json::from_str(seg.strip_prefix("k:")?).ok()
}

fn matches_keys(element: &Value, keys: &Map<String, Value>) -> bool {
    keys.iter().all(|(k, v)| element.get(k) == Some(v))
}

fn child<'a>(v: &'a Value, seg: &str) -> Option<&'a Value> {
    match segment_keys(seg) {
        Some(keys) => v.as_array()?.iter().find(|e| matches_keys(e, &keys)),
        None => v.get(seg),
    }
}

fn child_mut<'a>(v: &'a mut Value, seg: &str) -> Option<&'a mut Value> {
    match segment_keys(seg) {
        Some(keys) => v
            .as_array_mut()?
            .iter_mut()
            .find(|e| matches_keys(e, &keys)),
        None => v.get_mut(seg),
    }
}

pub(super) fn value_at<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(object, |v, k| child(v, k))
}

fn set_at(object: &mut Value, path: &[String], value: Value) {
    let mut node = object;
    for k in &path[..path.len() - 1] {
        if let Some(keys) = segment_keys(k) {
            if !node.is_array() {
                *node = json!([]);
            }
            let list = node.as_array_mut().unwrap();
            let at = match list.iter().position(|e| matches_keys(e, &keys)) {
                Some(i) => i,
                None => {
                    list.push(Value::Object(keys));
                    list.len() - 1
                }
            };
            node = &mut list[at];
        } else {
            let is_container = node.get(k).is_some_and(|v| v.is_object() || v.is_array());
            if !is_container {
                node[k] = json!({});
            }
            node = &mut node[k];
        }
    }
    node[&path[path.len() - 1]] = value;
}

/// Removes the field at `path`, and the maps (and list-map elements) it leaves empty, but
/// never the top level.
fn remove_at(object: &mut Value, path: &[String]) {
    if path.is_empty() {
        return;
    }
    let (last, parent_path) = (&path[path.len() - 1], &path[..path.len() - 1]);
    let Some(parent) = value_at_mut(object, parent_path) else {
        return;
    };
    match (parent, segment_keys(last)) {
        (Value::Array(list), Some(keys)) => list.retain(|e| !matches_keys(e, &keys)),
        (Value::Object(map), _) => {
            map.remove(last);
        }
        _ => return,
    }
    if path.len() > 2 {
        let parent = value_at(object, parent_path);
        let empty = match (parent, parent_path.last().and_then(|s| segment_keys(s))) {
            (Some(Value::Object(m)), Some(keys)) => m.keys().all(|k| keys.contains_key(k)),
            (Some(Value::Object(m)), None) => m.is_empty(),
            _ => false,
        };
        if empty {
            remove_at(object, parent_path);
        }
    }
}

fn value_at_mut<'a>(object: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(object, |v, k| child_mut(v, k))
}

/// Leaf paths of `value` (a `status`), following `schema`: lists declared
/// `x-kubernetes-list-type: map` are descended into per element, keyed by their map keys.
fn status_paths(
    value: &Value,
    schema: &Value,
    path: &mut Vec<String>,
    out: &mut BTreeSet<Vec<String>>,
) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                path.push(k.clone());
                status_paths(v, &schema["properties"][k], path, out);
                path.pop();
            }
        }
        Value::Array(list) if schema["x-kubernetes-list-type"] == "map" => {
            let keys: Vec<&str> = schema["x-kubernetes-list-map-keys"]
                .as_array()
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for element in list {
                let id: Map<String, Value> = keys
                    .iter()
                    .map(|k| ((*k).to_owned(), element[*k].clone()))
                    .collect();
                path.push(format!("k:{}", Value::Object(id)));
                status_paths(element, &schema["items"], path, out);
                path.pop();
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

pub(super) fn fields_v1(fields: &BTreeSet<Vec<String>>) -> Value {
    let mut root = json!({});
    for path in fields {
        // A map of strings is owned as a whole too: "." beside its keys.
        if path.len() == 3 && path[0] == "metadata" {
            root["f:metadata"][format!("f:{}", path[1])]["."] = json!({});
        }
        let mut node = &mut root;
        for k in path {
            let name = if k.starts_with("k:") {
                k.clone()
            } else {
                format!("f:{k}")
            };
            node = node
                .as_object_mut()
                .unwrap()
                .entry(name)
                .or_insert_with(|| json!({}));
        }
    }
    root
}

impl Store {
    pub(super) fn apply(
        &mut self,
        r: &Resource,
        ns: &str,
        name: &str,
        manager: &str,
        config: Value,
        force: bool,
    ) -> Result<(Value, Vec<Event>), ApiError> {
        let key = (*r, ns.to_owned(), name.to_owned());
        let Some(current) = self.objects.get(&key).cloned() else {
            self.create(r, ns, name, manager, config)?;
            // The creating manager applied: its entry says so.
            let stored = self.objects.get_mut(&key).unwrap();
            for m in &mut stored.managed {
                m.operation = "Apply";
            }
            let answer = stored.render(r);
            let event = Event {
                rv: self.rv,
                resource: *r,
                namespace: ns.to_owned(),
                kind: "ADDED",
                object: answer.clone(),
            };
            return Ok((answer, vec![event]));
        };
        let fields = leaf_paths(&config);
        self.apply_fields(r, ns, name, manager, current, &config, fields, force, false)
    }

    /// The part of server-side apply both the object and its `/status` share: `manager` sets
    /// `fields` (leaf paths) to their values in `config`. A field another manager owns with a
    /// different value is a conflict (409 with `FieldManagerConflict` causes) unless forced;
    /// forced, it changes owner. Fields this manager applied before and no longer does, that
    /// nobody else owns, are removed.
    #[allow(clippy::too_many_arguments)]
    fn apply_fields(
        &mut self,
        r: &Resource,
        ns: &str,
        name: &str,
        manager: &str,
        current: Stored,
        config: &Value,
        fields: BTreeSet<Vec<String>>,
        force: bool,
        subresource: bool,
    ) -> Result<(Value, Vec<Event>), ApiError> {
        let mut conflicts: Vec<(Vec<String>, String)> = Vec::new();
        for m in &current.managed {
            if m.manager == manager {
                continue;
            }
            for p in m.fields.intersection(&fields) {
                if value_at(&current.object, p) != value_at(config, p) {
                    conflicts.push((p.clone(), m.manager.clone()));
                }
            }
        }
        if !conflicts.is_empty() && !force {
            let causes: Vec<Value> = conflicts
                .iter()
                .map(|(p, m)| {
                    json!({
                        "reason": "FieldManagerConflict",
                        "message": format!("conflict with \"{m}\""),
                        "field": format!(".{}", p.join(".")),
                    })
                })
                .collect();
            let list: Vec<String> = conflicts
                .iter()
                .map(|(p, m)| format!("conflict with \"{m}\": .{}", p.join(".")))
                .collect();
            let message = if list.len() == 1 {
                format!("Apply failed with 1 conflict: {}", list[0])
            } else {
                format!(
                    "Apply failed with {} conflicts: {}",
                    list.len(),
                    list.join("\n")
                )
            };
            return Err(ApiError::new(
                409,
                "Conflict",
                message,
                json!({ "causes": causes }),
            ));
        }
        let mine = |m: &Managed| {
            m.manager == manager && m.operation == "Apply" && m.subresource == subresource
        };
        // Fields this manager applied before and no longer does, that nobody else owns, go.
        let previously: BTreeSet<Vec<String>> = current
            .managed
            .iter()
            .filter(|m| mine(m))
            .flat_map(|m| m.fields.iter().cloned())
            .collect();
        let others: BTreeSet<Vec<String>> = current
            .managed
            .iter()
            .filter(|m| !mine(m))
            .flat_map(|m| m.fields.iter().cloned())
            .collect();
        let mut object = current.object.clone();
        for p in previously
            .difference(&fields)
            .filter(|p| !others.contains(*p))
        {
            remove_at(&mut object, p);
        }
        for p in &fields {
            if let Some(v) = value_at(config, p) {
                set_at(&mut object, p, v.clone());
            }
        }
        // Ownership is shared where the values agree, and taken over where forced.
        let mut managed = current.managed.clone();
        for m in &mut managed {
            if mine(m) {
                m.fields = fields.clone();
            } else {
                m.fields.retain(|p| !conflicts.iter().any(|(c, _)| c == p));
            }
        }
        if !managed.iter().any(mine) {
            managed.push(Managed {
                manager: manager.to_owned(),
                operation: "Apply",
                subresource,
                time: now(),
                fields: fields.clone(),
            });
        }
        managed.retain(|m| !m.fields.is_empty());
        Ok(self.commit(r, ns, name, manager, "Apply", current, object, managed))
    }

    /// fields, owned per manager; lists the CRD's schema declares `x-kubernetes-list-type: map`
    /// are merged per element, so that managers can own one element each.
    pub(super) fn apply_status(
        &mut self,
        r: &Resource,
        ns: &str,
        name: &str,
        manager: &str,
        config: Value,
        force: bool,
    ) -> Result<(Value, Vec<Event>), ApiError> {
        let key = (*r, ns.to_owned(), name.to_owned());
        let Some(current) = self.objects.get(&key).cloned() else {
            return Err(ApiError::not_found(r, name));
        };
        let schema = self.schema(r).cloned().unwrap_or(Value::Null);
        let mut fields = BTreeSet::new();
        if let Some(status) = config.get("status") {
            status_paths(
                status,
                &schema["properties"]["status"],
                &mut vec!["status".to_owned()],
                &mut fields,
            );
        }
        self.apply_fields(r, ns, name, manager, current, &config, fields, force, true)
    }
}
