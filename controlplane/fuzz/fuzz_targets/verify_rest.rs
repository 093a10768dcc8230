//! Fuzz target: REST body parsers (RegisterCall, CheckCall, callUpdate): total; errors have messages; a parsed CheckCall has its mandatory fields.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kordon_controlplane::verify::rest::fuzz_verify_rest(data));
