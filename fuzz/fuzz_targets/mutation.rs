//! `palisade_core::fuzzing::mutation`: see core/src/fuzzing.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| palisade_core::fuzzing::mutation(data));
