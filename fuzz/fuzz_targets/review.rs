//! `palisade::fuzzing::Harness::review`: see src/fuzzing.rs.
#![no_main]

#[path = "harness.rs"]
mod harness;

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: palisade::fuzzing::tolerate_policy_engine_panics(),
    |data: &[u8]| harness::HARNESS.review(data)
);
