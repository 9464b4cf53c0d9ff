//! Kubernetes documents from manifest text: YAML or JSON, several documents per text, `List`s
//! expanded. Reading them from disk is [`files`].
//!
//! [`parse_str`] reads text into [`Document`]s, each with its [`Origin`] for messages, or fails
//! with a [`ManifestError`].

pub mod files;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::object::{ObjectRef, json_type, split_api_version};

/// One Kubernetes object read from a file, and where it came from.
#[derive(Debug, Clone)]
pub struct Document {
    /// Where it was read.
    pub origin: Origin,
    /// The object, as JSON.
    pub value: serde_json::Value,
}

/// Where a document came from, for error messages: file, document number, List item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file; `cluster` for an object read from the cluster.
    pub file: PathBuf,
    /// 1-based position of the YAML document in the file.
    pub document: usize,
    /// 0-based index inside a `List`'s items.
    pub item: Option<usize>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.document == 0 {
            // Not from a file: an object read from the cluster.
            return write!(f, "{}", self.file.display());
        }
        write!(f, "{} (document {}", self.file.display(), self.document)?;
        if let Some(item) = self.item {
            write!(f, ", items[{item}]")?;
        }
        f.write_str(")")
    }
}

impl Document {
    /// An object read from the cluster (described as `Kind "name" at cluster`).
    pub fn from_cluster(value: serde_json::Value) -> Self {
        Self {
            origin: Origin {
                file: PathBuf::from("cluster"),
                document: 0,
                item: None,
            },
            value,
        }
    }

    /// The object's identity.
    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef::of(&self.value)
    }

    /// `apiVersion` (empty when absent).
    pub fn api_version(&self) -> &str {
        self.value["apiVersion"].as_str().unwrap_or_default()
    }

    /// The API group of `apiVersion` ("" for the core group).
    pub fn group(&self) -> &str {
        split_api_version(self.api_version()).0
    }

    /// `kind` (empty when absent).
    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }

    /// `metadata.name` (empty when absent).
    pub fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }

    /// "Kind name at file (document N)".
    pub fn describe(&self) -> String {
        format!("{} {:?} at {}", self.kind(), self.name(), self.origin)
    }
}

/// Why manifest text does not read as Kubernetes documents.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A document is not YAML or JSON.
    #[error("{file} (document {document}): not valid YAML or JSON: {message}")]
    Parse {
        /// The file, as named to [`parse_str`].
        file: PathBuf,
        /// 1-based position of the YAML document in the file.
        document: usize,
        /// The parser's message.
        message: String,
    },
    /// A document is not an object, or a `List`'s items are not a list of objects.
    #[error("{origin}: {message}")]
    Shape {
        /// The document, or the `List` item.
        origin: Origin,
        /// What was expected.
        message: String,
    },
}

/// Parses YAML (JSON is YAML) with any number of documents; empty documents are skipped and
/// `List` objects are expanded into their items.
pub fn parse_str(text: &str, file: &Path) -> Result<Vec<Document>, ManifestError> {
    let mut docs = Vec::new();
    for (i, de) in yaml_serde::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        let value = serde_json::Value::deserialize(de).map_err(|e: yaml_serde::Error| {
            ManifestError::Parse {
                file: file.to_path_buf(),
                document,
                message: e.to_string(),
            }
        })?;
        let origin = Origin {
            file: file.to_path_buf(),
            document,
            item: None,
        };
        match value {
            serde_json::Value::Null => {}
            serde_json::Value::Object(_) => push_object(&mut docs, origin, value)?,
            other => {
                return Err(ManifestError::Shape {
                    origin,
                    message: format!(
                        "expected a Kubernetes object (a mapping with apiVersion and kind), found {}",
                        json_type(&other)
                    ),
                });
            }
        }
    }
    Ok(docs)
}

fn push_object(
    docs: &mut Vec<Document>,
    origin: Origin,
    mut value: serde_json::Value,
) -> Result<(), ManifestError> {
    let kind = value["kind"].as_str().unwrap_or_default().to_owned();
    if kind.ends_with("List") && value.get("items").is_some() {
        let items = match value["items"].take() {
            serde_json::Value::Array(items) => items,
            serde_json::Value::Null => Vec::new(),
            _ => {
                return Err(ManifestError::Shape {
                    origin,
                    message: format!("{kind}.items must be a list"),
                });
            }
        };
        for (i, item) in items.into_iter().enumerate() {
            let origin = Origin {
                item: Some(i),
                ..origin.clone()
            };
            if !item.is_object() {
                return Err(ManifestError::Shape {
                    origin,
                    message: "a List item must be a Kubernetes object".into(),
                });
            }
            docs.push(Document {
                origin,
                value: item,
            });
        }
        return Ok(());
    }
    docs.push(Document { origin, value });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_multi_document_yaml_lists_and_skips_empty_documents() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n---\n\
                    apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: b}}\n\
                    - {apiVersion: v1, kind: Namespace, metadata: {name: c}}\n";
        let docs = parse_str(text, Path::new("x.yaml")).unwrap();
        let names: Vec<_> = docs.iter().map(Document::name).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(docs[2].origin.to_string(), "x.yaml (document 3, items[1])");
    }

    #[test]
    fn json_documents_are_read_too() {
        let docs = parse_str(
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"}}"#,
            Path::new("p.json"),
        )
        .unwrap();
        assert_eq!(docs[0].kind(), "Pod");
    }

    #[test]
    fn a_yaml_error_names_file_document_and_line() {
        let err = parse_str("kind: A\n---\nkind: [unclosed\n", Path::new("bad.yaml")).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("bad.yaml (document 2)"), "{text}");
        assert!(text.contains("line"), "{text}");
    }

    #[test]
    fn a_scalar_document_is_rejected() {
        let err = parse_str("just a string\n", Path::new("s.yaml")).unwrap_err();
        assert!(err.to_string().contains("found a string"), "{err}");
    }
}
