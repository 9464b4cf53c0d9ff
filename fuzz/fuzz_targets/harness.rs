//! The review targets' harness, started once per fuzzing process on the repository's bundle,
//! inventory and captured reviews.

use std::path::Path;
use std::sync::LazyLock;

use palisade_core::fuzzing::Harness;

pub static HARNESS: LazyLock<Harness> = LazyLock::new(|| {
    match Harness::from_repository(&Path::new(env!("CARGO_MANIFEST_DIR")).join("..")) {
        Ok(h) => h,
        Err(e) => panic!("the fuzz harness cannot start: {e:#}"),
    }
});
