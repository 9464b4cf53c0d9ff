//! What the stand-in stores: objects with their field managers, one cluster-wide
//! `resourceVersion`, the history watches replay; and the changes other than server-side apply
//! (create, update, delete), with the real server's errors.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

use serde_json::{Value, json};

use super::apply::{fields_v1, leaf_paths, value_at};
use super::rbac::Rbac;
use super::resources::{
    ADMISSION_POLICY_KINDS, CRD_GROUPS, CRDS, NAMESPACES, NETWORK_POLICIES, RESOURCES, Resource,
    SECRETS, crd_resources, reorder,
};

/// An API error: a `Status` object and its HTTP code.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub body: Value,
}

impl ApiError {
    pub(super) fn new(code: u16, reason: &str, message: String, details: Value) -> Self {
        let mut body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": details,
            "code": code,
        });
        if body["details"].is_null() {
            body.as_object_mut().unwrap().remove("details");
        }
        Self { code, body }
    }

    pub(super) fn details(r: &Resource, name: &str) -> Value {
        let mut d = json!({"name": name});
        if !r.group.is_empty() {
            d["group"] = json!(r.group);
        }
        d["kind"] = json!(r.plural);
        d
    }

    /// An error about the object `name` of `r`, its message said as the real server says it.
    fn about(r: &Resource, name: &str, code: u16, reason: &str, message: String) -> Self {
        Self::new(code, reason, message, Self::details(r, name))
    }

    pub(super) fn not_found(r: &Resource, name: &str) -> Self {
        let message = format!("{} \"{name}\" not found", r.qualified());
        Self::about(r, name, 404, "NotFound", message)
    }

    pub(super) fn already_exists(r: &Resource, name: &str) -> Self {
        let message = format!("{} \"{name}\" already exists", r.qualified());
        Self::about(r, name, 409, "AlreadyExists", message)
    }

    pub(super) fn conflict(r: &Resource, name: &str) -> Self {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            r.qualified()
        );
        Self::about(r, name, 409, "Conflict", message)
    }

    pub(super) fn bad_request(message: String) -> Self {
        Self::new(400, "BadRequest", message, Value::Null)
    }
}

/// Which fields a manager owns, as leaf paths.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Managed {
    pub(super) manager: String,
    pub(super) operation: &'static str,
    /// Written through `/status`.
    pub(super) subresource: bool,
    pub(super) time: String,
    pub(super) fields: BTreeSet<Vec<String>>,
}

#[derive(Debug, Clone)]
pub(super) struct Stored {
    /// The object without managedFields.
    pub(super) object: Value,
    pub(super) managed: Vec<Managed>,
}

impl Stored {
    pub(super) fn render(&self, r: &Resource) -> Value {
        let mut object = self.object.clone();
        let entries: Vec<Value> = self
            .managed
            .iter()
            .map(|m| {
                let mut entry = json!({
                    "manager": m.manager,
                    "operation": m.operation,
                    "apiVersion": r.api_version(),
                    "time": m.time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": fields_v1(&m.fields),
                });
                if m.subresource {
                    entry["subresource"] = json!("status");
                }
                entry
            })
            .collect();
        if !entries.is_empty() {
            object["metadata"]["managedFields"] = Value::Array(entries);
        }
        object
    }
}

pub(super) type Key = (Resource, String, String);

#[derive(Debug, Clone)]
pub(super) struct Event {
    pub(super) rv: u64,
    pub(super) resource: Resource,
    pub(super) namespace: String,
    pub(super) kind: &'static str,
    pub(super) object: Value,
}

pub(super) struct Store {
    pub(super) rv: u64,
    pub(super) objects: BTreeMap<Key, Stored>,
    /// Events after `compacted`, oldest first.
    pub(super) history: VecDeque<Event>,
    pub(super) history_limit: usize,
    /// Watches from a resourceVersion at or below this get 410 Expired.
    pub(super) compacted: u64,
    pub(super) failing_tokens: HashSet<String>,
    /// `(group, plural)` of kinds every client is forbidden, as by missing RBAC.
    pub(super) forbidden: HashSet<(String, String)>,
    /// The rules every client is held to: those of Palisade's ServiceAccount in
    /// manifests/base/rbac.yaml, unless a test lifts them.
    pub(super) rbac: Option<Rbac>,
    /// CRD groups installed so far (see [`CRD_GROUPS`]).
    pub(super) installed: HashSet<&'static str>,
    /// Kinds defined by the CustomResourceDefinitions stored, with their schemas.
    pub(super) defined: Vec<(Resource, Value)>,
    /// Whether admissionregistration.k8s.io/v1 ValidatingAdmissionPolicies and their bindings
    /// are served (Kubernetes 1.30 and later); objects stored meanwhile are kept.
    pub(super) admission_policies: bool,
}

impl Store {
    /// The kinds served now: the built-in ones, those of installed CRD groups and those that
    /// stored CustomResourceDefinitions define.
    pub(super) fn served(&self) -> Vec<Resource> {
        RESOURCES
            .into_iter()
            .filter(|r| !CRD_GROUPS.contains(&r.group) || self.installed.contains(r.group))
            .filter(|r| self.admission_policies || !ADMISSION_POLICY_KINDS.contains(r))
            .chain(self.defined.iter().map(|(r, _)| *r))
            .collect()
    }

    /// The schema of `r`'s stored objects, when a CRD defines it.
    pub(super) fn schema(&self, r: &Resource) -> Option<&Value> {
        self.defined
            .iter()
            .find(|(d, _)| d.same_kind(r) && d.version == d.storage)
            .map(|(_, s)| s)
    }
}

pub(super) fn identity(r: &Resource, object: &Value) -> Result<(String, String), ApiError> {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    if name.is_empty() {
        return Err(ApiError::new(
            422,
            "Invalid",
            format!(
                "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                r.kind
            ),
            Value::Null,
        ));
    }
    let ns = if r.namespaced {
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
    } else {
        ""
    };
    Ok((ns.to_owned(), name.to_owned()))
}

/// The real server's checks of a Secret that Palisade's writes meet: a `kubernetes.io/tls`
/// Secret holds `tls.crt` and `tls.key`, and `type` cannot change.
pub(super) fn validate_secret(
    r: &Resource,
    name: &str,
    object: &Value,
    current: Option<&Value>,
) -> Result<(), ApiError> {
    if *r != SECRETS {
        return Ok(());
    }
    let invalid = |detail: String| {
        ApiError::new(
            422,
            "Invalid",
            format!("Secret \"{name}\" is invalid: {detail}"),
            ApiError::details(r, name),
        )
    };
    let kind = object["type"].as_str().unwrap_or("Opaque");
    if let Some(current) = current {
        let was = current["type"].as_str().unwrap_or("Opaque");
        if was != kind {
            return Err(invalid(format!(
                "type: Invalid value: \"{kind}\": field is immutable"
            )));
        }
    }
    if kind == "kubernetes.io/tls" {
        for key in ["tls.crt", "tls.key"] {
            if object["data"].get(key).is_none() {
                return Err(invalid(format!("data[{key}]: Required value")));
            }
        }
    }
    Ok(())
}

pub(super) fn now() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

pub(super) fn uid() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("5a4d1e00-0000-4000-8000-{n:012x}")
}

impl Store {
    pub(super) fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    pub(super) fn event(
        &self,
        r: &Resource,
        ns: &str,
        kind: &'static str,
        stored: &Stored,
    ) -> Event {
        Event {
            rv: self.rv,
            resource: *r,
            namespace: ns.to_owned(),
            kind,
            object: stored.render(r),
        }
    }

    pub(super) fn create(
        &mut self,
        r: &Resource,
        ns: &str,
        name: &str,
        manager: &str,
        mut object: Value,
    ) -> Result<(Value, Vec<Event>), ApiError> {
        validate_secret(r, name, &object, None)?;
        if r.namespaced {
            match self
                .objects
                .get(&(NAMESPACES, String::new(), ns.to_owned()))
            {
                None => return Err(ApiError::not_found(&NAMESPACES, ns)),
                Some(n) if !n.object["metadata"]["deletionTimestamp"].is_null() => {
                    return Err(ApiError::new(
                        403,
                        "Forbidden",
                        format!(
                            "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                            r.qualified()
                        ),
                        ApiError::details(r, name),
                    ));
                }
                Some(_) => {}
            }
        }
        let key = (*r, ns.to_owned(), name.to_owned());
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(r, name));
        }
        if *r == NAMESPACES {
            object["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
        }
        // What the server defaults is nobody's field.
        let fields = leaf_paths(&object);
        if *r == NAMESPACES {
            object["spec"] = json!({"finalizers": ["kubernetes"]});
            object["status"] = json!({"phase": "Active"});
        }
        if *r == NETWORK_POLICIES && object.get("status").is_none() {
            object["status"] = json!({});
        }
        if r.status
            && let Some(m) = object.as_object_mut()
        {
            // Written only through /status.
            m.remove("status");
        }
        if *r == CRDS {
            object["status"] = json!({
                "conditions": [{"type": "Established", "status": "True", "reason": "InitialNamesAccepted"}],
                "acceptedNames": object["spec"]["names"].clone(),
                "storedVersions": [object["spec"]["versions"].as_array().and_then(|v| v.iter().find(|v| v["storage"] == true)).map(|v| v["name"].clone()).unwrap_or(Value::Null)],
            });
        }
        let rv = self.next_rv();
        let meta = object["metadata"].as_object_mut().unwrap();
        meta.remove("managedFields");
        meta.remove("resourceVersion");
        meta.remove("uid");
        if r.namespaced {
            meta.insert("namespace".into(), json!(ns));
        }
        meta.insert("uid".into(), json!(uid()));
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        if r.generation {
            meta.insert("generation".into(), json!(1));
        }
        meta.insert("creationTimestamp".into(), json!(now()));
        let object = reorder(r, object);
        let stored = Stored {
            object,
            managed: vec![Managed {
                manager: manager.to_owned(),
                operation: "Update",
                subresource: false,
                time: now(),
                fields,
            }],
        };
        let event = self.event(r, ns, "ADDED", &stored);
        let answer = stored.render(r);
        self.objects.insert(key, stored);
        Ok((answer, vec![event]))
    }

    pub(super) fn update(
        &mut self,
        r: &Resource,
        ns: &str,
        name: &str,
        manager: &str,
        mut object: Value,
    ) -> Result<(Value, Vec<Event>), ApiError> {
        let key = (*r, ns.to_owned(), name.to_owned());
        let Some(current) = self.objects.get(&key).cloned() else {
            return Err(ApiError::not_found(r, name));
        };
        let sent_rv = object["metadata"]["resourceVersion"].as_str().unwrap_or("");
        if !sent_rv.is_empty() && sent_rv != current.object["metadata"]["resourceVersion"] {
            return Err(ApiError::conflict(r, name));
        }
        validate_secret(r, name, &object, Some(&current.object))?;
        // What the server owns stays the server's.
        for field in [
            "uid",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "namespace",
        ] {
            match current.object["metadata"].get(field) {
                Some(v) => object["metadata"][field] = v.clone(),
                None => {
                    if let Some(m) = object["metadata"].as_object_mut() {
                        m.remove(field);
                    }
                }
            }
        }
        if let Some(m) = object["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
        if *r == NAMESPACES {
            object["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            object["status"] = current.object["status"].clone();
        }
        if r.status || *r == CRDS {
            match current.object.get("status") {
                Some(st) => object["status"] = st.clone(),
                None => {
                    if let Some(m) = object.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        let old_fields = leaf_paths(&current.object);
        let new_fields = leaf_paths(&object);
        let changed: BTreeSet<Vec<String>> = new_fields
            .iter()
            .filter(|p| value_at(&object, p) != value_at(&current.object, p))
            .cloned()
            .collect();
        let removed: BTreeSet<Vec<String>> = old_fields.difference(&new_fields).cloned().collect();
        // The updater takes what it changed; a removed field is nobody's.
        let mut managed = current.managed.clone();
        for m in &mut managed {
            m.fields
                .retain(|p| !changed.contains(p) && !removed.contains(p));
        }
        match managed
            .iter_mut()
            .find(|m| m.manager == manager && m.operation == "Update" && !m.subresource)
        {
            Some(m) => m.fields.extend(changed.iter().cloned()),
            None if !changed.is_empty() => managed.push(Managed {
                manager: manager.to_owned(),
                operation: "Update",
                subresource: false,
                time: now(),
                fields: changed.clone(),
            }),
            None => {}
        }
        managed.retain(|m| !m.fields.is_empty());
        Ok(self.commit(r, ns, name, manager, "Update", current, object, managed))
    }

    /// Stores `object` with `managed` in place of `current`, unless nothing changed: then the
    /// object, its resourceVersion and generation stay as they are.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn commit(
        &mut self,
        r: &Resource,
        ns: &str,
        name: &str,
        manager: &str,
        operation: &str,
        current: Stored,
        mut object: Value,
        mut managed: Vec<Managed>,
    ) -> (Value, Vec<Event>) {
        let same_fields = managed.len() == current.managed.len()
            && managed.iter().zip(&current.managed).all(|(a, b)| {
                a.manager == b.manager && a.operation == b.operation && a.fields == b.fields
            });
        let mut compare = object.clone();
        compare["metadata"]["resourceVersion"] =
            current.object["metadata"]["resourceVersion"].clone();
        if same_fields && compare == current.object {
            return (current.render(r), Vec::new());
        }
        if let Some(m) = managed
            .iter_mut()
            .find(|m| m.manager == manager && m.operation == operation)
        {
            m.time = now();
        }
        let rv = self.next_rv();
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        if r.generation && object.get("spec") != current.object.get("spec") {
            let g = current.object["metadata"]["generation"]
                .as_i64()
                .unwrap_or(1);
            object["metadata"]["generation"] = json!(g + 1);
        }
        let stored = Stored {
            object: reorder(r, object),
            managed,
        };
        let event = self.event(r, ns, "MODIFIED", &stored);
        let answer = stored.render(r);
        self.objects
            .insert((*r, ns.to_owned(), name.to_owned()), stored);
        (answer, vec![event])
    }

    /// The kinds the stored CustomResourceDefinitions define, after a change to them.
    pub(super) fn refresh_defined(&mut self) {
        self.defined = self
            .objects
            .iter()
            .filter(|(k, _)| k.0 == CRDS)
            .flat_map(|(_, s)| crd_resources(&s.object))
            .collect();
    }

    pub(super) fn delete(
        &mut self,
        r: &Resource,
        ns: &str,
        name: &str,
    ) -> Result<(Value, Vec<Event>), ApiError> {
        let key = (*r, ns.to_owned(), name.to_owned());
        let Some(current) = self.objects.get(&key).cloned() else {
            return Err(ApiError::not_found(r, name));
        };
        let mut events = Vec::new();
        if *r == NAMESPACES {
            // Terminating first, then what it holds, then itself.
            let mut terminating = current.clone();
            let rv = self.next_rv();
            terminating.object["metadata"]["resourceVersion"] = json!(rv.to_string());
            terminating.object["metadata"]["deletionTimestamp"] = json!(now());
            terminating.object["status"]["phase"] = json!("Terminating");
            events.push(self.event(r, ns, "MODIFIED", &terminating));
            let answer = terminating.render(r);
            self.delete_all(|k| k.0.namespaced && k.1 == name, &mut events)?;
            self.objects.remove(&key);
            let rv = self.next_rv();
            terminating.object["metadata"]["resourceVersion"] = json!(rv.to_string());
            events.push(self.event(r, ns, "DELETED", &terminating));
            return Ok((answer, events));
        }
        if *r == CRDS {
            // Its objects go first, then the kind stops being served.
            let kinds: Vec<Resource> = crd_resources(&current.object)
                .into_iter()
                .map(|(d, _)| d.stored())
                .collect();
            self.delete_all(|k| kinds.contains(&k.0), &mut events)?;
        }
        self.objects.remove(&key);
        let rv = self.next_rv();
        let mut gone = current;
        gone.object["metadata"]["resourceVersion"] = json!(rv.to_string());
        events.push(self.event(r, ns, "DELETED", &gone));
        let mut details = ApiError::details(r, name);
        details["uid"] = gone.object["metadata"]["uid"].clone();
        Ok((
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
            events,
        ))
    }

    /// Deletes every object whose key `matches`, adding their events to `events`.
    fn delete_all(
        &mut self,
        matches: impl Fn(&Key) -> bool,
        events: &mut Vec<Event>,
    ) -> Result<(), ApiError> {
        let contained: Vec<Key> = self
            .objects
            .keys()
            .filter(|k| matches(k))
            .cloned()
            .collect();
        for k in contained {
            let (_, mut e) = self.delete(&k.0, &k.1, &k.2)?;
            events.append(&mut e);
        }
        Ok(())
    }
}
