//! `palisade::fuzzing::Harness::review_variant`: see src/fuzzing.rs.
#![no_main]

use std::path::Path;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use palisade::fuzzing::Harness;

static HARNESS: LazyLock<Harness> = LazyLock::new(|| {
    match Harness::from_repository(&Path::new(env!("CARGO_MANIFEST_DIR")).join("..")) {
        Ok(h) => h,
        Err(e) => panic!("the fuzz harness cannot start: {e:#}"),
    }
});

fuzz_target!(
    init: palisade::fuzzing::tolerate_policy_engine_panics(),
    |data: &[u8]| HARNESS.review_variant(data)
);
