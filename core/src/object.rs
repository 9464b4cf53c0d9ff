//! The identity of a Kubernetes object, read one way for admission requests, manifests, the
//! inventory and the mutators.
//!
//! [`ObjectRef`] is that identity; [`to_regorus`] converts an object for the policies.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

/// Group, version, kind, namespace and name of one object. Empty strings stand for absent parts:
/// the core group is `""`, and a cluster-scoped object has no namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    /// The API group; `""` for the core group.
    pub group: String,
    /// The API version (`v1`).
    pub version: String,
    /// The kind (`Pod`).
    pub kind: String,
    /// `metadata.namespace`; `""` for a cluster-scoped object (a Namespace included).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl ObjectRef {
    /// Reads `apiVersion`, `kind`, `metadata.namespace` and `metadata.name` of an object.
    pub fn of(object: &Value) -> Self {
        let (group, version) = split_api_version(object["apiVersion"].as_str().unwrap_or_default());
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        Self {
            group: group.to_owned(),
            version: version.to_owned(),
            kind: text(&object["kind"]),
            namespace: text(&object["metadata"]["namespace"]),
            name: text(&object["metadata"]["name"]),
        }
    }

    /// `v1` for the core group, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether this is a core/v1 Namespace.
    pub fn is_namespace(&self) -> bool {
        self.kind == "Namespace" && self.group.is_empty()
    }

    /// The namespace that exemptions and namespace matchers consider: a Namespace's own name.
    pub fn effective_namespace(&self) -> &str {
        if self.is_namespace() {
            &self.name
        } else {
            &self.namespace
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.kind.is_empty() {
            "(no kind)"
        } else {
            &self.kind
        };
        let name = if self.name.is_empty() {
            "(no name)"
        } else {
            &self.name
        };
        if self.namespace.is_empty() {
            write!(f, "{kind} {name}")
        } else {
            write!(f, "{kind} {}/{name}", self.namespace)
        }
    }
}

/// `("apps", "v1")` for `apps/v1`, `("", "v1")` for `v1`.
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

/// The labels of an object, empty when it has none.
pub fn labels_of(object: &Value) -> BTreeMap<&str, &str> {
    object["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// How a JSON value's type reads in a message: "a list", "a string".
pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// JSON to a regorus value, node by node: a quarter faster than going through serde, and this
/// runs once per review on the request path and once per inventory object.
///
/// Object keys repeat across reviews and objects (`metadata`, `name`, `image`, …), so each
/// thread keeps the keys it has seen as shared regorus strings: a key then costs a hash lookup
/// and a reference count instead of an allocation, and every inventory object shares one copy
/// of each key. The table is bounded (4,096 keys of at most 64 bytes), so
/// hostile keys (label names are free text) cannot grow it; past the bound keys are allocated.
pub fn to_regorus(v: &Value) -> regorus::Value {
    KEYS.with(|keys| convert(v, &mut keys.borrow_mut()))
}

const MAX_KEYS: usize = 4096;
const MAX_KEY_LEN: usize = 64;

type KeyTable = std::collections::HashMap<Box<str>, regorus::Value, foldhash::fast::FixedState>;

thread_local! {
    static KEYS: std::cell::RefCell<KeyTable> = std::cell::RefCell::new(KeyTable::default());
}

fn key(k: &str, keys: &mut KeyTable) -> regorus::Value {
    if let Some(v) = keys.get(k) {
        return v.clone();
    }
    let v = regorus::Value::from(k);
    if keys.len() < MAX_KEYS && k.len() <= MAX_KEY_LEN {
        keys.insert(k.into(), v.clone());
    }
    v
}

fn convert(v: &Value, keys: &mut KeyTable) -> regorus::Value {
    match v {
        Value::Null => regorus::Value::Null,
        Value::Bool(b) => regorus::Value::from(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => regorus::Value::from(i),
            (None, Some(u)) => regorus::Value::from(u),
            // -0 (Go's encoder writes a negative zero so) is 0, as OPA prints and compares it;
            // regorus would print "-0".
            _ => match n.as_f64() {
                Some(0.0) => regorus::Value::from(0u64),
                f => regorus::Value::from(f.unwrap_or(f64::NAN)),
            },
        },
        Value::String(s) => regorus::Value::from(s.as_str()),
        Value::Array(items) => regorus::Value::from(
            items
                .iter()
                .map(|item| convert(item, keys))
                .collect::<Vec<_>>(),
        ),
        Value::Object(map) => regorus::Value::from(
            map.iter()
                .map(|(k, v)| (key(k, keys), convert(v, keys)))
                .collect::<BTreeMap<_, _>>(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_negative_zero_reaches_policies_as_zero() {
        let v: Value = serde_json::from_str(r#"{"a": -0, "b": -0.0, "c": 0.5}"#).unwrap();
        let r = to_regorus(&v);
        assert_eq!(r["a"].to_json_str().unwrap(), "0");
        assert_eq!(r["b"].to_json_str().unwrap(), "0");
        assert_eq!(r["c"].to_json_str().unwrap(), "0.5");
    }

    #[test]
    fn reads_core_and_grouped_objects() {
        let np = ObjectRef::of(&json!({"apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy", "metadata": {"name": "deny", "namespace": "shop"}}));
        assert_eq!(
            (np.group.as_str(), np.version.as_str()),
            ("networking.k8s.io", "v1")
        );
        assert_eq!(np.api_version(), "networking.k8s.io/v1");
        assert_eq!(np.to_string(), "NetworkPolicy shop/deny");
        let ns = ObjectRef::of(&json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "shop"}}));
        assert!(ns.is_namespace());
        assert_eq!(ns.api_version(), "v1");
        assert_eq!(ns.effective_namespace(), "shop");
        assert_eq!(ObjectRef::of(&json!({})).to_string(), "(no kind) (no name)");
    }

    #[test]
    fn direct_conversion_equals_regorus_own() {
        use serde::Deserialize as _;
        let body = include_str!("../../tests/data/admission/validate-update-pod.json");
        let json: Value = serde_json::from_str(body).unwrap();
        let extra =
            serde_json::json!({"n": [1, -2, 3.5, 18446744073709551615u64, null, true, {"": "x"}]});
        for v in [&json, &extra] {
            assert_eq!(to_regorus(v), regorus::Value::deserialize(v).unwrap());
        }
    }
}
