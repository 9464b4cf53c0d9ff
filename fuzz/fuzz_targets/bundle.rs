//! `palisade_core::fuzzing::bundle`: see core/src/fuzzing.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: palisade_core::fuzzing::tolerate_policy_engine_panics(),
    |data: &[u8]| palisade_core::fuzzing::bundle(data)
);
