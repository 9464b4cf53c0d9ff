//! Objects that policies may look up, in Gatekeeper's `data.inventory` layout:
//! `cluster[<groupVersion>][<kind>][<name>]` for cluster-scoped objects and
//! `namespace[<ns>][<groupVersion>][<kind>][<name>]` for namespaced ones.
//!
//! An [`Inventory`] is an immutable snapshot, handed to each evaluation beside the input; it is
//! never compiled into a template. [`Inventory::apply`] makes the next snapshot from a batch of
//! changes, sharing every untouched subtree with the previous one, so a change costs the same
//! whatever the number of templates, and touches only the maps on the changed object's path.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;

use crate::netpol;
use crate::object::{ObjectRef, to_regorus};

/// The annotation `kubectl apply` writes: a second copy of the object, which no policy needs.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// One change to the inventory.
#[derive(Debug, Clone)]
pub enum Change {
    /// Adds the object, or replaces the one with the same identity.
    Upsert(Value),
    /// Removes the object with this identity, if it is held.
    Delete(ObjectRef),
}

/// A snapshot of the objects policies may look up (`data.inventory`). Namespaces are also kept
/// as JSON, for namespaceSelectors, and NetworkPolicies read into the model ([`crate::netpol`]).
/// Cheap to clone: every part is shared.
#[derive(Clone)]
pub struct Inventory {
    /// `{"inventory": {"cluster": …, "namespace": …}}`, the data every evaluation gets.
    data: regorus::Value,
    /// Namespaces by name, for namespaceSelectors.
    namespaces: Arc<HashMap<String, Arc<Value>>>,
    /// NetworkPolicies read into the model, by namespace and name: read once when they arrive,
    /// so a review of a NetworkPolicy judges its namespace without reading them again.
    network_policies: Arc<HashMap<String, Arc<NetworkPolicies>>>,
    /// Each Namespace's labels as the NetworkPolicy model reads them (its name label set), for
    /// reviews that look at every namespace (communication matrices); `None`: unreadable.
    namespace_labels: Arc<HashMap<String, Option<Arc<netpol::model::Labels>>>>,
    len: usize,
}

/// One namespace's NetworkPolicies, by name; an `Err` is one the model could not read.
pub type NetworkPolicies = BTreeMap<String, Arc<Result<netpol::Policy, String>>>;

impl std::fmt::Debug for Inventory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inventory")
            .field("objects", &self.len)
            .field("namespaces", &self.namespaces.len())
            .finish()
    }
}

impl Default for Inventory {
    fn default() -> Self {
        let mut tree = regorus::Value::new_object();
        if let Ok(root) = tree.as_object_mut() {
            root.insert("cluster".into(), regorus::Value::new_object());
            root.insert("namespace".into(), regorus::Value::new_object());
        }
        let mut data = regorus::Value::new_object();
        if let Ok(root) = data.as_object_mut() {
            root.insert("inventory".into(), tree);
        }
        Self {
            data,
            namespaces: Arc::default(),
            network_policies: Arc::default(),
            namespace_labels: Arc::default(),
            len: 0,
        }
    }
}

impl Inventory {
    /// A snapshot holding `objects`. Objects without apiVersion, kind or name are ignored, since
    /// no policy could look them up.
    pub fn from_objects(objects: impl IntoIterator<Item = Value>) -> Self {
        Self::default().apply(objects.into_iter().map(Change::Upsert))
    }

    /// The next snapshot: this one with `changes` applied in order. `self` is unchanged, so
    /// evaluations still reading it are not disturbed.
    pub fn apply(&self, changes: impl IntoIterator<Item = Change>) -> Self {
        let mut next = self.clone();
        for change in changes {
            match change {
                Change::Upsert(object) => next.upsert(object),
                Change::Delete(object_ref) => next.delete(&object_ref),
            }
        }
        next
    }

    fn upsert(&mut self, mut object: Value) {
        let id = ObjectRef::of(&object);
        if id.version.is_empty() || id.kind.is_empty() || id.name.is_empty() {
            return;
        }
        if let Some(metadata) = object["metadata"].as_object_mut() {
            metadata.remove("managedFields");
            if let Some(annotations) = metadata
                .get_mut("annotations")
                .and_then(Value::as_object_mut)
            {
                annotations.remove(LAST_APPLIED);
            }
        }
        let value = to_regorus(&object);
        if is_network_policy(&id) {
            let policy = netpol::Policy::parse(&object, &id.namespace);
            let by_ns = Arc::make_mut(&mut self.network_policies);
            let policies = by_ns.entry(id.namespace.clone()).or_default();
            Arc::make_mut(policies).insert(id.name.clone(), Arc::new(policy));
        }
        if id.is_namespace() {
            let labels = netpol::Namespace::of(&object)
                .ok()
                .map(|ns| Arc::new(ns.labels));
            Arc::make_mut(&mut self.namespace_labels).insert(id.name.clone(), labels);
            Arc::make_mut(&mut self.namespaces).insert(id.name.clone(), Arc::new(object));
        }
        let Some(by_name) = self.by_name_mut(&id, true) else {
            return;
        };
        if by_name.insert(id.name.as_str().into(), value).is_none() {
            self.len += 1;
        }
    }

    fn delete(&mut self, id: &ObjectRef) {
        if self.get(id).is_none() {
            return;
        }
        if id.is_namespace() {
            Arc::make_mut(&mut self.namespaces).remove(&id.name);
            Arc::make_mut(&mut self.namespace_labels).remove(&id.name);
        }
        if is_network_policy(id) {
            let by_ns = Arc::make_mut(&mut self.network_policies);
            if let Some(policies) = by_ns.get_mut(&id.namespace) {
                Arc::make_mut(policies).remove(&id.name);
                if policies.is_empty() {
                    by_ns.remove(&id.namespace);
                }
            }
        }
        if let Some(by_name) = self.by_name_mut(id, false)
            && by_name.remove(&id.name.as_str().into()).is_some()
        {
            self.len -= 1;
        }
        self.prune(id);
    }

    /// The path of maps down to `[<kind>]`: the root, the namespace (for namespaced objects),
    /// the groupVersion and the kind. Missing maps are made when `create` is set.
    fn path(id: &ObjectRef) -> Vec<regorus::Value> {
        let mut path: Vec<regorus::Value> = vec!["inventory".into()];
        if id.namespace.is_empty() {
            path.push("cluster".into());
        } else {
            path.push("namespace".into());
            path.push(id.namespace.as_str().into());
        }
        path.push(id.api_version().into());
        path.push(id.kind.as_str().into());
        path
    }

    fn by_name_mut(&mut self, id: &ObjectRef, create: bool) -> Option<&mut regorus::value::Object> {
        let mut node = &mut self.data;
        for key in Self::path(id) {
            let map = node.as_object_mut().ok()?;
            node = if create {
                map.get_or_insert_with(key, regorus::Value::new_object)
            } else {
                map.get_mut(&key)?
            };
        }
        node.as_object_mut().ok()
    }

    /// Removes the maps on `id`'s path that its deletion left empty.
    fn prune(&mut self, id: &ObjectRef) {
        let path = Self::path(id);
        // `inventory` and `cluster` / `namespace` stay, even when empty.
        for depth in (2..path.len()).rev() {
            let mut node = &mut self.data;
            for key in &path[..depth] {
                match node.as_object_mut().ok().and_then(|m| m.get_mut(key)) {
                    Some(child) => node = child,
                    None => return,
                }
            }
            let Ok(parent) = node.as_object_mut() else {
                return;
            };
            let empty = parent
                .get(&path[depth])
                .and_then(|v| v.as_object().ok())
                .is_some_and(|m| m.is_empty());
            if !empty {
                return;
            }
            parent.remove(&path[depth]);
        }
    }

    /// The object with this identity, as policies see it.
    pub fn get(&self, id: &ObjectRef) -> Option<&regorus::Value> {
        let mut node = &self.data;
        for key in Self::path(id) {
            node = node.as_object().ok()?.get(&key)?;
        }
        node.as_object().ok()?.get(&id.name.as_str().into())
    }

    /// The Namespace object called `name`, if known.
    pub fn namespace(&self, name: &str) -> Option<&Value> {
        self.namespaces.get(name).map(Arc::as_ref)
    }

    /// Every object of `kind` in API group `group` (any version), as JSON, for the audit.
    pub fn objects_of(&self, group: &str, kind: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let Ok(root) = self.data["inventory"].as_object() else {
            return out;
        };
        let mut collect = |by_gv: &regorus::Value| {
            let Ok(by_gv) = by_gv.as_object() else {
                return;
            };
            for (gv, by_kind) in by_gv.iter() {
                let gv = gv.as_string().map(|s| s.to_string()).unwrap_or_default();
                if crate::object::split_api_version(&gv).0 != group {
                    continue;
                }
                if let Ok(by_name) = by_kind[&regorus::Value::from(kind)].as_object() {
                    out.extend(
                        by_name
                            .values()
                            .filter_map(|o| serde_json::to_value(o).ok()),
                    );
                }
            }
        };
        if let Some(cluster) = root.get(&"cluster".into()) {
            collect(cluster);
        }
        if let Some(Ok(namespaces)) = root.get(&"namespace".into()).map(|n| n.as_object()) {
            for by_gv in namespaces.values() {
                collect(by_gv);
            }
        }
        out
    }

    /// Every Namespace object, by name.
    pub fn namespaces(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.namespaces
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_ref()))
    }

    /// Every Namespace's labels, as the NetworkPolicy model reads them; `None` for one whose
    /// labels cannot be read.
    pub fn namespace_labels(
        &self,
    ) -> impl Iterator<Item = (&str, Option<&Arc<netpol::model::Labels>>)> {
        self.namespace_labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_ref()))
    }

    /// The namespaces holding NetworkPolicies, and theirs.
    pub fn all_network_policies(&self) -> impl Iterator<Item = (&str, &Arc<NetworkPolicies>)> {
        self.network_policies.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The NetworkPolicies of `namespace`, read into the model.
    pub fn network_policies(&self, namespace: &str) -> Option<&Arc<NetworkPolicies>> {
        self.network_policies.get(namespace)
    }

    /// `{"inventory": …}`, the data document of every evaluation.
    pub fn data(&self) -> &regorus::Value {
        &self.data
    }

    /// Whether it holds no object.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of objects held.
    pub fn len(&self) -> usize {
        self.len
    }
}

fn is_network_policy(id: &ObjectRef) -> bool {
    id.group == "networking.k8s.io" && id.kind == "NetworkPolicy"
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shop() -> Vec<Value> {
        vec![
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"a": "b"}}}),
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                   "metadata": {"name": "default-deny", "namespace": "shop"}}),
            json!({"kind": "Broken"}),
        ]
    }

    fn tree(inv: &Inventory) -> Value {
        serde_json::to_value(inv.data()).unwrap()["inventory"].clone()
    }

    #[test]
    fn objects_of_a_kind_come_back_as_json_from_every_namespace() {
        let inventory = Inventory::from_objects(shop());
        let namespaces = inventory.objects_of("", "Namespace");
        assert_eq!(namespaces.len(), 1);
        assert_eq!(namespaces[0]["metadata"]["labels"]["a"], "b");
        assert!(inventory.objects_of("apps", "Namespace").is_empty());
        assert!(inventory.objects_of("", "Pod").is_empty());
    }

    #[test]
    fn lays_out_objects_as_gatekeeper_does() {
        let inv = Inventory::from_objects(shop());
        assert_eq!(inv.len(), 2);
        let tree = tree(&inv);
        assert_eq!(
            tree["cluster"]["v1"]["Namespace"]["shop"]["metadata"]["labels"]["a"],
            "b"
        );
        assert_eq!(
            tree["namespace"]["shop"]["networking.k8s.io/v1"]["NetworkPolicy"]["default-deny"]["metadata"]
                ["name"],
            "default-deny"
        );
        assert_eq!(inv.namespace("shop").unwrap()["metadata"]["name"], "shop");
        assert!(inv.namespace("other").is_none());
    }

    #[test]
    fn a_change_makes_a_new_snapshot_and_leaves_the_old_one_alone() {
        let before = Inventory::from_objects(shop());
        let relabelled = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "shop", "labels": {"a": "c"}}});
        let policy = ObjectRef::of(&shop()[1]);
        let after = before.apply([Change::Upsert(relabelled), Change::Delete(policy.clone())]);
        assert_eq!(after.len(), 1);
        assert_eq!(
            after.namespace("shop").unwrap()["metadata"]["labels"]["a"],
            "c"
        );
        assert!(after.get(&policy).is_none());
        // The emptied namespace subtree is gone, as if the policy had never been there.
        assert_eq!(tree(&after)["namespace"], json!({}));
        // The old snapshot still answers as before.
        assert_eq!(before.len(), 2);
        assert_eq!(
            before.namespace("shop").unwrap()["metadata"]["labels"]["a"],
            "b"
        );
        assert!(before.get(&policy).is_some());
        // Deleting what is not there changes nothing.
        assert_eq!(after.apply([Change::Delete(policy)]).len(), 1);
    }

    #[test]
    fn untouched_subtrees_are_shared_not_copied() {
        let mut objects = shop();
        objects.push(
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "default-deny", "namespace": "other"}}),
        );
        let before = Inventory::from_objects(objects);
        let after = before.apply([Change::Upsert(
            json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "shop"}}),
        )]);
        let other = |inv: &Inventory| match &inv.data()["inventory"]["namespace"]["other"] {
            regorus::Value::Object(map) => Arc::as_ptr(map),
            v => panic!("{v:?}"),
        };
        assert_eq!(other(&before), other(&after));
    }

    #[test]
    fn managed_fields_and_the_last_applied_copy_are_not_stored() {
        let inv = Inventory::from_objects([json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "shop", "managedFields": [{"manager": "kubectl"}],
                "annotations": {LAST_APPLIED: "{…}", "keep": "me"}}})]);
        let ns = &tree(&inv)["cluster"]["v1"]["Namespace"]["shop"]["metadata"];
        assert!(ns.get("managedFields").is_none());
        assert_eq!(ns["annotations"], json!({"keep": "me"}));
    }
}
