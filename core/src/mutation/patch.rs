//! The JSON patch (RFC 6902) that turns the object as received into the object as mutated.
//!
//! Written for the admission path instead of `json_patch::diff`, which builds and trims a
//! JSON pointer at every node it visits and cost a third of a 5-container Pod's mutation: here
//! the walk keeps one path string, and a pointer is made only for an operation. Objects are
//! compared key by key and lists index by index (a longer list gets `add`s at its end, a
//! shorter one `remove`s from its end, highest index first), so that every operation applies
//! to the document as the operations before it left it.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation};
use serde_json::Value;

/// The operations that turn `from` into `to`; none when they are equal.
pub(crate) fn diff(from: &Value, to: &Value) -> Patch {
    let mut ops = Vec::new();
    let mut path = String::new();
    walk(from, to, &mut path, &mut ops);
    Patch(ops)
}

fn walk(from: &Value, to: &Value, path: &mut String, ops: &mut Vec<PatchOperation>) {
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, old) in a {
                let len = path.len();
                push_token(path, key);
                match b.get(key) {
                    Some(new) => walk(old, new, path, ops),
                    None => ops.push(PatchOperation::Remove(RemoveOperation {
                        path: pointer(path),
                    })),
                }
                path.truncate(len);
            }
            for (key, new) in b {
                if !a.contains_key(key) {
                    let len = path.len();
                    push_token(path, key);
                    ops.push(PatchOperation::Add(AddOperation {
                        path: pointer(path),
                        value: new.clone(),
                    }));
                    path.truncate(len);
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (old, new)) in a.iter().zip(b).enumerate() {
                let len = path.len();
                path.push('/');
                path.push_str(&i.to_string());
                walk(old, new, path, ops);
                path.truncate(len);
            }
            for (i, new) in b.iter().enumerate().skip(a.len()) {
                ops.push(PatchOperation::Add(AddOperation {
                    path: pointer(&format!("{path}/{i}")),
                    value: new.clone(),
                }));
            }
            for i in (b.len()..a.len()).rev() {
                ops.push(PatchOperation::Remove(RemoveOperation {
                    path: pointer(&format!("{path}/{i}")),
                }));
            }
        }
        _ if from == to => {}
        _ => ops.push(PatchOperation::Replace(ReplaceOperation {
            path: pointer(path),
            value: to.clone(),
        })),
    }
}

/// Appends `/token`, escaped as RFC 6901 says (`~` as `~0`, `/` as `~1`).
fn push_token(path: &mut String, token: &str) {
    path.push('/');
    for c in token.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
}

/// The path as a pointer. It was built from escaped tokens, so it always parses; the fallback
/// (the whole document) is never reached.
fn pointer(path: &str) -> PointerBuf {
    PointerBuf::parse(path).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Applying the patch to `from` (with json_patch, as the API server applies it) gives `to`.
    fn check(from: Value, to: Value) -> Patch {
        let patch = diff(&from, &to);
        let mut doc = from.clone();
        json_patch::patch(&mut doc, &patch).unwrap();
        assert_eq!(doc, to, "patch {patch:?}");
        patch
    }

    #[test]
    fn equal_documents_need_no_operation() {
        let pod = json!({"spec": {"containers": [{"name": "a"}]}});
        assert!(check(pod.clone(), pod).0.is_empty());
    }

    #[test]
    fn fields_are_added_replaced_and_removed_in_place() {
        let patch = check(
            json!({"metadata": {"labels": {"app": "web"}, "annotations": {"x": "1"}},
                   "spec": {"containers": [{"name": "a", "image": "nginx"}]}}),
            json!({"metadata": {"labels": {"app": "web", "mtls": "strict"}},
                   "spec": {"containers": [{"name": "a", "image": "nginx",
                       "securityContext": {"runAsNonRoot": true}}]}}),
        );
        let text = serde_json::to_string(&patch).unwrap();
        assert!(text.contains("\"/metadata/labels/mtls\""), "{text}");
        assert!(
            text.contains("\"/spec/containers/0/securityContext\""),
            "{text}"
        );
        assert!(text.contains("\"remove\""), "{text}");
    }

    #[test]
    fn keys_with_slashes_and_tildes_are_escaped() {
        let patch = check(
            json!({"metadata": {"annotations": {}}}),
            json!({"metadata": {"annotations": {"sidecar.istio.io/inject": "true", "a~b": "c"}}}),
        );
        let text = serde_json::to_string(&patch).unwrap();
        assert!(
            text.contains("/metadata/annotations/sidecar.istio.io~1inject"),
            "{text}"
        );
        assert!(text.contains("/metadata/annotations/a~0b"), "{text}");
    }

    #[test]
    fn lists_grow_and_shrink_at_their_end() {
        check(json!({"l": [1, 2]}), json!({"l": [1, 2, 3, 4]}));
        check(json!({"l": [1, 2, 3, 4]}), json!({"l": [9]}));
        check(json!({"l": [{"a": 1}]}), json!({"l": "not a list"}));
        check(json!(1), json!({"whole": "document"}));
    }

    #[test]
    fn the_bundle_mutators_patch_the_captured_pod_to_what_they_compute() {
        // Every fixture pod through the real mutators: the patch must rebuild the result.
        let bundle = crate::bundle::load(
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../policies")),
            &Default::default(),
        )
        .unwrap();
        let namespaces = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/mutation/namespaces.yaml"
        ))
        .unwrap();
        let namespaces =
            crate::manifest::parse_str(&namespaces, std::path::Path::new("namespaces.yaml"))
                .unwrap();
        let payments = namespaces
            .iter()
            .find(|d| d.name() == "payments")
            .map(|d| d.value.clone());
        for fixture in [
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/data/admission/mutate-create-pod.json"
            ),
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/data/bench/mutate-pod-5-containers.json"
            ),
        ] {
            let bytes = std::fs::read(fixture).unwrap();
            let review = crate::admission::decode(&bytes).unwrap();
            let mutated = bundle
                .mutators()
                .mutate(&review, payments.as_ref())
                .unwrap()
                .expect("the bundle changes the captured pod");
            let patch = check(review.object().clone(), mutated);
            assert!(!patch.0.is_empty());
        }
    }
}
