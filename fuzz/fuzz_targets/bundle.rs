//! `palisade::fuzzing::bundle`: see src/fuzzing.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: palisade::fuzzing::tolerate_policy_engine_panics(),
    |data: &[u8]| palisade::fuzzing::bundle(data)
);
