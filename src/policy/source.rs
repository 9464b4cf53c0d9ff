//! Reading Kubernetes documents from files: YAML or JSON, several documents per file, `List`s.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// One Kubernetes object read from a file, and where it came from.
#[derive(Debug, Clone)]
pub struct Document {
    pub origin: Origin,
    pub value: serde_json::Value,
}

/// Where a document came from, for error messages: file, document number, List item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    /// 1-based position of the YAML document in the file.
    pub document: usize,
    /// 0-based index inside a `List`'s items.
    pub item: Option<usize>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (document {}", self.file.display(), self.document)?;
        if let Some(item) = self.item {
            write!(f, ", items[{item}]")?;
        }
        f.write_str(")")
    }
}

impl Document {
    pub fn api_version(&self) -> &str {
        self.value["apiVersion"].as_str().unwrap_or_default()
    }

    /// The API group of `apiVersion` ("" for the core group).
    pub fn group(&self) -> &str {
        self.api_version()
            .split_once('/')
            .map(|(g, _)| g)
            .unwrap_or_default()
    }

    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }

    /// "Kind name at file (document N)".
    pub fn describe(&self) -> String {
        format!("{} {:?} at {}", self.kind(), self.name(), self.origin)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{file} (document {document}): not valid YAML or JSON: {message}")]
    Parse {
        file: PathBuf,
        document: usize,
        message: String,
    },
    #[error("{origin}: {message}")]
    Shape { origin: Origin, message: String },
}

/// Whether a path names a YAML or JSON file.
pub fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Every manifest file under `dir`, recursively, in a stable order. Hidden entries are skipped:
/// a mounted ConfigMap holds its real files in `..<timestamp>/` directories behind symlinks, and
/// reading both would load everything twice.
pub fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| SourceError::Read {
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| SourceError::Read {
                path: dir.clone(),
                source,
            })?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            // Follow symlinks: that is how mounted volumes present their files.
            if path.is_dir() {
                stack.push(path);
            } else if is_manifest(&path) {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Reads every document of a file, or of every manifest under a directory.
pub fn read_path(path: &Path) -> Result<Vec<Document>, SourceError> {
    if path.is_dir() {
        let mut docs = Vec::new();
        for file in manifest_files(path)? {
            docs.extend(read_file(&file)?);
        }
        Ok(docs)
    } else {
        read_file(path)
    }
}

pub fn read_file(path: &Path) -> Result<Vec<Document>, SourceError> {
    let text = std::fs::read_to_string(path).map_err(|source| SourceError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_str(&text, path)
}

/// Parses YAML (JSON is YAML) with any number of documents; empty documents are skipped and
/// `List` objects are expanded into their items.
pub fn parse_str(text: &str, file: &Path) -> Result<Vec<Document>, SourceError> {
    let mut docs = Vec::new();
    for (i, de) in yaml_serde::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        let value = serde_json::Value::deserialize(de).map_err(|e: yaml_serde::Error| {
            SourceError::Parse {
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
                return Err(SourceError::Shape {
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
) -> Result<(), SourceError> {
    let kind = value["kind"].as_str().unwrap_or_default().to_owned();
    if kind.ends_with("List") && value.get("items").is_some() {
        let items = match value["items"].take() {
            serde_json::Value::Array(items) => items,
            serde_json::Value::Null => Vec::new(),
            _ => {
                return Err(SourceError::Shape {
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
                return Err(SourceError::Shape {
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

pub fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a mapping",
    }
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

    #[test]
    fn hidden_entries_are_skipped_but_symlinked_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("..2026_01_01");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("p.yaml"), "kind: A\n").unwrap();
        std::os::unix::fs::symlink("..2026_01_01", dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/p.yaml", dir.path().join("p.yaml")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let files = manifest_files(dir.path()).unwrap();
        assert_eq!(files, [dir.path().join("p.yaml")]);
    }
}
