//! Objects that policies may look up, in Gatekeeper's `data.inventory` layout:
//! `cluster[<groupVersion>][<kind>][<name>]` for cluster-scoped objects and
//! `namespace[<ns>][<groupVersion>][<kind>][<name>]` for namespaced ones.
//!
//! An [`Inventory`] is an immutable snapshot, handed to each evaluation beside the input; it is
//! never compiled into a template. [`Inventory::apply`] makes the next snapshot from a batch of
//! changes, sharing every untouched subtree with the previous one, so a change costs the same
//! whatever the number of templates, and touches only the maps on the changed object's path.
//!
//! What `data.inventory` holds of each object is the inventory's [`Keep`]: whole objects by
//! default; in the server, the fields the bundle's templates read ([`keep`]). Namespaces are
//! also held whole, and NetworkPolicies read into the model, whatever the templates read.

pub mod keep;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;

pub use self::keep::{Keep, Reads};
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
    /// What objects arriving now are pruned to.
    keep: Arc<Keep>,
    /// Every way the objects held may have been pruned: a template may read this snapshot only
    /// when each of them keeps what it reads.
    held: Vec<Arc<Keep>>,
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
            keep: Arc::default(),
            held: vec![Arc::default()],
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

    /// An empty snapshot that keeps of each object what `keep` says.
    pub fn pruned(keep: Arc<Keep>) -> Self {
        Self::default().with_keep(keep)
    }

    /// This snapshot, keeping from now on what `keep` says of the objects that arrive. The
    /// objects already held stay as they were pruned, and count in [`Inventory::holds`] until
    /// [`Inventory::settled`] says that every one has arrived again.
    pub fn with_keep(&self, keep: Arc<Keep>) -> Self {
        let mut next = self.clone();
        if *next.keep == *keep {
            return next;
        }
        if next.is_empty() {
            next.held.clear();
        }
        next.held.retain(|k| **k != *keep);
        next.held.push(keep.clone());
        next.keep = keep;
        next
    }

    /// This snapshot, once every object it holds was stored under the current [`Keep`] (the
    /// live inventory re-listed every kind since the keep changed).
    pub fn settled(&self) -> Self {
        let mut next = self.clone();
        next.held = vec![next.keep.clone()];
        next
    }

    /// What objects arriving now are pruned to.
    pub fn keep(&self) -> &Arc<Keep> {
        &self.keep
    }

    /// Whether every object held keeps what `reads` reads, so that a template reading it sees
    /// what it would see in whole objects.
    pub fn holds(&self, reads: &Reads) -> bool {
        reads.is_empty() || self.held.iter().all(|k| k.covers(reads))
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

    /// This snapshot with every object of `top` laid over it (they win on the same identity),
    /// as `top` holds them: pruned by its own keep, which then counts in [`Inventory::holds`].
    pub fn overlay(&self, top: &Inventory) -> Self {
        let mut next = self.clone();
        if top.is_empty() {
            return next;
        }
        for k in &top.held {
            if !next.held.iter().any(|h| **h == **k) {
                next.held.push(k.clone());
            }
        }
        for (name, ns) in top.namespaces.iter() {
            if Arc::make_mut(&mut next.namespaces)
                .insert(name.clone(), ns.clone())
                .is_none()
            {
                next.len += 1;
            }
            if let Some(labels) = top.namespace_labels.get(name) {
                Arc::make_mut(&mut next.namespace_labels).insert(name.clone(), labels.clone());
            }
        }
        for (ns, policies) in top.network_policies.iter() {
            let by_ns = Arc::make_mut(&mut next.network_policies);
            let mine = Arc::make_mut(by_ns.entry(ns.clone()).or_default());
            for (name, policy) in policies.iter() {
                if mine.insert(name.clone(), policy.clone()).is_none() {
                    next.len += 1;
                }
            }
        }
        let mut objects = Vec::new();
        let root = &top.data["inventory"];
        let mut kinds = |prefix: Vec<regorus::Value>, by_gv: &regorus::Value| {
            for (gv, by_kind) in by_gv.as_object().into_iter().flat_map(|m| m.iter()) {
                for (kind, by_name) in by_kind.as_object().into_iter().flat_map(|m| m.iter()) {
                    let mut path = prefix.clone();
                    path.extend([gv.clone(), kind.clone()]);
                    for (name, object) in by_name.as_object().into_iter().flat_map(|m| m.iter()) {
                        objects.push((path.clone(), name.clone(), object.clone()));
                    }
                }
            }
        };
        kinds(vec!["inventory".into(), "cluster".into()], &root["cluster"]);
        for (ns, by_gv) in root["namespace"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.iter())
        {
            kinds(
                vec!["inventory".into(), "namespace".into(), ns.clone()],
                by_gv,
            );
        }
        for (path, name, object) in objects {
            // Namespaces and NetworkPolicies were counted with their maps.
            let counted = match path.as_slice() {
                [_, _, gv, kind] => gv == &"v1".into() && kind == &"Namespace".into(),
                [_, _, _, gv, kind] => {
                    kind == &"NetworkPolicy".into()
                        && gv
                            .as_string()
                            .is_ok_and(|gv| gv.starts_with("networking.k8s.io/"))
                }
                _ => false,
            };
            let mut node = Some(&mut next.data);
            for key in path {
                node = node
                    .and_then(|n| n.as_object_mut().ok())
                    .map(|m| m.get_or_insert_with(key, regorus::Value::new_object));
            }
            if let Some(by_name) = node.and_then(|n| n.as_object_mut().ok())
                && by_name.insert(name, object).is_none()
                && !counted
            {
                next.len += 1;
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
        let held_elsewhere = is_network_policy(&id) || id.is_namespace();
        // What data.inventory holds: what templates read, else (for kinds held nowhere else)
        // the object's name, so that it counts and can be found.
        let value = match self.keep.prune(&id.api_version(), &id.kind, &object) {
            Some(kept) => Some(to_regorus(&kept)),
            None if held_elsewhere => None,
            None => Some(to_regorus(&keep::identity_of(&object))),
        };
        let mut new = false;
        if is_network_policy(&id) {
            let policy = netpol::Policy::parse(&object, &id.namespace);
            let by_ns = Arc::make_mut(&mut self.network_policies);
            let policies = by_ns.entry(id.namespace.clone()).or_default();
            new = Arc::make_mut(policies)
                .insert(id.name.clone(), Arc::new(policy))
                .is_none();
        }
        if id.is_namespace() {
            let labels = netpol::Namespace::of(&object)
                .ok()
                .map(|ns| Arc::new(ns.labels));
            Arc::make_mut(&mut self.namespace_labels).insert(id.name.clone(), labels);
            new = Arc::make_mut(&mut self.namespaces)
                .insert(id.name.clone(), Arc::new(object))
                .is_none();
        }
        match value {
            Some(value) => {
                if let Some(by_name) = self.by_name_mut(&id, true) {
                    let added = by_name.insert(id.name.as_str().into(), value).is_none();
                    new |= added && !held_elsewhere;
                }
            }
            // Held for another keep, which read this kind.
            None => self.remove_from_tree(&id),
        }
        if new {
            self.len += 1;
        }
    }

    fn remove_from_tree(&mut self, id: &ObjectRef) {
        if let Some(by_name) = self.by_name_mut(id, false) {
            by_name.remove(&id.name.as_str().into());
        }
        self.prune(id);
    }

    fn delete(&mut self, id: &ObjectRef) {
        if !self.contains(id) {
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
        self.remove_from_tree(id);
        self.len -= 1;
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

    /// Whether an object with this identity is held.
    pub fn contains(&self, id: &ObjectRef) -> bool {
        if id.is_namespace() {
            self.namespaces.contains_key(&id.name)
        } else if is_network_policy(id) {
            self.network_policies
                .get(&id.namespace)
                .is_some_and(|p| p.contains_key(&id.name))
        } else {
            self.get(id).is_some()
        }
    }

    /// The object with this identity, as policies see it in data.inventory (pruned to what
    /// they read; absent when none reads its kind).
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

    fn reads_policy_specs() -> Reads {
        let mut reads = Reads::default();
        reads.add(
            [
                "namespace",
                "shop",
                "networking.k8s.io/v1",
                "NetworkPolicy",
                "p",
                "spec",
            ]
            .map(|k| keep::Step::Key(k.into()))
            .to_vec(),
            true,
        );
        reads
    }

    #[test]
    fn a_pruned_inventory_holds_what_its_keep_reads_and_counts_everything() {
        let keep = Arc::new(Keep::of([&reads_policy_specs()]));
        let inv = Inventory::pruned(keep.clone()).apply(shop().into_iter().map(Change::Upsert));
        assert_eq!(inv.len(), 2);
        // No template reads Namespaces: held whole beside, not in data.inventory.
        assert_eq!(tree(&inv)["cluster"], json!({}));
        assert!(inv.namespace("shop").is_some());
        let policy = ObjectRef::of(&shop()[1]);
        let ns = ObjectRef::of(&shop()[0]);
        assert!(inv.contains(&policy) && inv.contains(&ns));
        assert!(inv.holds(&reads_policy_specs()));
        assert!(!inv.holds(&Reads::everything()));
        let gone = inv.apply([Change::Delete(ns), Change::Delete(policy)]);
        assert_eq!(gone.len(), 0);
        assert_eq!(tree(&gone)["namespace"], json!({}));
    }

    #[test]
    fn a_wider_keep_holds_only_once_settled() {
        let narrow = Arc::new(Keep::of([&Reads::default()]));
        let inv = Inventory::pruned(narrow).apply(shop().into_iter().map(Change::Upsert));
        assert!(!inv.holds(&reads_policy_specs()));
        let wider = Arc::new(Keep::of([&reads_policy_specs()]));
        let relisted = inv
            .with_keep(wider)
            .apply(shop().into_iter().map(Change::Upsert));
        assert!(!relisted.holds(&reads_policy_specs()), "not settled yet");
        assert!(relisted.settled().holds(&reads_policy_specs()));
        // An empty inventory holds nothing pruned another way.
        let empty = Inventory::pruned(Arc::new(Keep::of([&Reads::default()])));
        assert!(empty.with_keep(Arc::default()).holds(&Reads::everything()));
    }

    #[test]
    fn an_overlay_lays_every_object_over_and_counts_each_once() {
        let live = Inventory::from_objects(shop());
        let mut files = shop();
        files[0]["metadata"]["labels"] = json!({"a": "c"});
        files.push(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "shop"}}));
        let top = Inventory::from_objects(files.clone());
        let both = live.overlay(&top);
        assert_eq!(both.len(), 3);
        assert_eq!(
            both.namespace("shop").unwrap()["metadata"]["labels"]["a"],
            "c"
        );
        assert_eq!(tree(&both), tree(&Inventory::from_objects(files)));
        // Pruned files count in what the result holds.
        let pruned = Inventory::pruned(Arc::new(Keep::of([&Reads::default()])))
            .apply(shop().into_iter().map(Change::Upsert));
        assert!(!live.overlay(&pruned).holds(&reads_policy_specs()));
    }
}
