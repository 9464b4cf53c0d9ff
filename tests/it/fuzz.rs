//! The fuzz corpora replayed through the fuzz targets' own entry points (`palisade_core::fuzzing`),
//! so that every saved input (the seeds, what the fuzzer found worth keeping, and every crash
//! turned regression) runs in CI whether or not the machine can build libFuzzer.

use std::path::PathBuf;
use std::sync::LazyLock;

use palisade_core::fuzzing::{self, Harness};

use crate::common::repo_path;

static HARNESS: LazyLock<Harness> = LazyLock::new(|| {
    Harness::from_repository(&repo_path("")).expect("the fuzz harness starts on the repository")
});

/// The saved inputs of one target: its corpus and its regressions.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for dir in ["fuzz/corpus", "fuzz/regressions"] {
        let dir = repo_path(dir).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let path = e.expect("corpus entry").path();
            let data = std::fs::read(&path).expect("corpus file");
            files.push((path, data));
        }
    }
    files.sort();
    assert!(
        files.len() >= 5,
        "fuzz corpus of {target} has {} inputs; run python3 fuzz/seeds/make.py",
        files.len()
    );
    files
}

/// Runs every input, naming the one that fails.
fn replay(target: &str, run: impl Fn(&[u8]) + std::panic::RefUnwindSafe) {
    let mut failed = Vec::new();
    for (path, data) in inputs(target) {
        if std::panic::catch_unwind(|| run(&data)).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target} fails on: {failed:#?}");
}

#[test]
fn the_review_corpus_decodes_decides_and_encodes() {
    replay("review", |d| HARNESS.review(d));
}

#[test]
fn the_review_variant_corpus_decodes_decides_and_encodes() {
    replay("review_variant", |d| HARNESS.review_variant(d));
}

#[test]
fn the_mutation_corpus_parses_and_applies_locations() {
    replay("mutation", fuzzing::mutation);
}

#[test]
fn the_bundle_corpus_loads_and_evaluates() {
    replay("bundle", fuzzing::bundle);
}

#[test]
fn the_matching_corpus_matches_as_the_reference() {
    replay("matching", fuzzing::matching);
}

/// What the harness's checks rely on: the reference glob is Gatekeeper's, and the seeds hold
/// a Pod CREATE, which the bundle patches, so that the patch checks run.
#[test]
fn the_reference_glob_and_the_seeds_are_what_the_checks_rely_on() {
    let glob = std::panic::catch_unwind(|| {
        assert!(fuzzing::reference_glob("kube-*", "kube-system"));
        assert!(!fuzzing::reference_glob("kube-*", "kube"));
        assert!(fuzzing::reference_glob("*-system", "kube-system"));
        assert!(fuzzing::reference_glob("*", ""));
        assert!(!fuzzing::reference_glob("kube-system", "kube-system-2"));
    });
    assert!(glob.is_ok());
    // A real review with every mutation the bundle makes: variants of it must have been
    // patched for the patch checks to mean anything.
    let seeds = HARNESS.seeds();
    assert!(seeds.len() >= 10, "{} seed reviews", seeds.len());
    assert!(
        seeds
            .iter()
            .any(|r| r["request"]["kind"]["kind"] == "Pod" && r["request"]["operation"] == "CREATE"),
        "no Pod CREATE among the seeds: the mutation path would go untested"
    );
}
