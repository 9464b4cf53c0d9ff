//! Manifests on disk: files, directories of them, and what a mounted ConfigMap looks like.
//!
//! [`read_path`] reads a file or a directory, [`read_objects`] the objects of several;
//! [`FileError`] says what could not be read.

use std::path::{Path, PathBuf};

use crate::manifest::{self, Document, ManifestError};

/// Why manifests could not be read from disk.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// A file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The error reading it.
        source: std::io::Error,
    },
    /// A file's text is not Kubernetes documents.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
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
/// reading both would load everything twice. So is `kustomization.yaml`, which is kustomize's.
pub fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>, FileError> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| FileError::Read {
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| FileError::Read {
                path: dir.clone(),
                source,
            })?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // kustomize's own file, never a Kubernetes object (policies/ has one for manifests/).
            if name.starts_with('.') || name == "kustomization.yaml" {
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
pub fn read_path(path: &Path) -> Result<Vec<Document>, FileError> {
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

/// Reads every document of one file, whatever its extension.
pub fn read_file(path: &Path) -> Result<Vec<Document>, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(manifest::parse_str(&text, path)?)
}

/// The objects of several files or directories, for an inventory.
pub fn read_objects(paths: &[PathBuf]) -> Result<Vec<serde_json::Value>, FileError> {
    let mut objects = Vec::new();
    for path in paths {
        objects.extend(read_path(path)?.into_iter().map(|d| d.value));
    }
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_entries_are_skipped_but_symlinked_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("..2026_01_01");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("p.yaml"), "kind: A\n").unwrap();
        std::os::unix::fs::symlink("..2026_01_01", dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/p.yaml", dir.path().join("p.yaml")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        std::fs::write(
            dir.path().join("kustomization.yaml"),
            "kind: Kustomization\n",
        )
        .unwrap();
        let files = manifest_files(dir.path()).unwrap();
        assert_eq!(files, [dir.path().join("p.yaml")]);
    }
}
