//! Objects that policies may look up, in Gatekeeper's `data.inventory` layout:
//! `cluster[<groupVersion>][<kind>][<name>]` for cluster-scoped objects and
//! `namespace[<ns>][<groupVersion>][<kind>][<name>]` for namespaced ones.
//!
//! An [`Inventory`] is an immutable snapshot. Tests and the CLI fill it from files; a live
//! cluster feed produces new snapshots through the same [`Inventory::from_objects`] seam.

use std::collections::HashMap;

use serde_json::{Map, Value};

#[derive(Debug, Clone)]
pub struct Inventory {
    tree: Value,
    /// `{"inventory": tree}` as a regorus value, ready to be added as engine data.
    data: regorus::Value,
    namespaces: HashMap<String, Value>,
    len: usize,
}

impl Default for Inventory {
    fn default() -> Self {
        Self::from_objects(std::iter::empty())
    }
}

impl Inventory {
    /// Builds the layout from objects. Objects without apiVersion, kind or name are ignored,
    /// since no policy could look them up.
    pub fn from_objects(objects: impl IntoIterator<Item = Value>) -> Self {
        let mut cluster = Map::new();
        let mut namespaced = Map::new();
        let mut namespaces = HashMap::new();
        let mut len = 0;
        for object in objects {
            let (Some(gv), Some(kind), Some(name)) = (
                object["apiVersion"].as_str().map(str::to_owned),
                object["kind"].as_str().map(str::to_owned),
                object["metadata"]["name"].as_str().map(str::to_owned),
            ) else {
                continue;
            };
            len += 1;
            if kind == "Namespace" && gv == "v1" {
                namespaces.insert(name.clone(), object.clone());
            }
            let root = match object["metadata"]["namespace"].as_str() {
                Some(ns) if !ns.is_empty() => entry(&mut namespaced, ns),
                _ => &mut cluster,
            };
            let by_kind = entry(entry(root, &gv), &kind);
            by_kind.insert(name, object);
        }
        let tree = serde_json::json!({"cluster": cluster, "namespace": namespaced});
        let data = regorus::Value::from(serde_json::json!({ "inventory": tree.clone() }));
        Self {
            tree,
            data,
            namespaces,
            len,
        }
    }

    /// The Namespace object called `name`, if known.
    pub fn namespace(&self, name: &str) -> Option<&Value> {
        self.namespaces.get(name)
    }

    /// The layout as JSON (`{"cluster": …, "namespace": …}`).
    pub fn tree(&self) -> &Value {
        &self.tree
    }

    /// `{"inventory": …}`, to add as engine data.
    pub fn data(&self) -> &regorus::Value {
        &self.data
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len(&self) -> usize {
        self.len
    }
}

fn entry<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = map
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(m) => m,
        // Made an object just above.
        _ => unreachable!(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lays_out_objects_as_gatekeeper_does() {
        let inv = Inventory::from_objects([
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"a": "b"}}}),
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                   "metadata": {"name": "default-deny", "namespace": "shop"}}),
            json!({"kind": "Broken"}),
        ]);
        assert_eq!(inv.len(), 2);
        let tree = inv.tree();
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
        let data = serde_json::to_value(inv.data()).unwrap();
        assert_eq!(data["inventory"], *tree);
    }
}
