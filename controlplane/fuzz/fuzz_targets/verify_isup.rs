//! Fuzz target: ISUP address decoder: total; a decoded number encodes to octets that decode back equal.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kordon_controlplane::verify::isup::fuzz_verify_isup(data));
