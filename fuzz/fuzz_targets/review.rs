//! `palisade_core::fuzzing::Harness::review`: see core/src/fuzzing.rs.
#![no_main]

#[path = "harness.rs"]
mod harness;

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: palisade_core::fuzzing::tolerate_policy_engine_panics(),
    |data: &[u8]| harness::HARNESS.review(data)
);
