//! `palisade::fuzzing::mutation`: see src/fuzzing.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| palisade::fuzzing::mutation(data));
