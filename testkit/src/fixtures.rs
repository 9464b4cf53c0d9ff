//! Paths in the repository and the captured AdmissionReviews of `tests/data/admission`.

use std::path::{Path, PathBuf};

/// A path inside the repository (the workspace's root, whose `tests/data` the tests read).
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the testkit lies in the repository")
        .join(rel)
}

/// A file of `tests/data`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = repo_path("tests/data").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A captured review from tests/data/admission, edited.
pub fn edited_review(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut v: serde_json::Value =
        serde_json::from_slice(&fixture(&format!("admission/{name}"))).unwrap();
    edit(&mut v);
    serde_json::to_vec(&v).unwrap()
}

/// Moves a review and its object to namespace `ns`.
pub fn in_namespace(review: &mut serde_json::Value, ns: &str) {
    review["request"]["namespace"] = ns.into();
    review["request"]["object"]["metadata"]["namespace"] = ns.into();
}

/// Every captured review, with the endpoint it was sent to.
pub fn admission_fixtures() -> Vec<(PathBuf, &'static str)> {
    let dir = repo_path("tests/data/admission");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let endpoint = if name.starts_with("mutate") {
                "/mutate"
            } else {
                "/validate"
            };
            (p, endpoint)
        })
        .collect();
    out.sort();
    out
}
