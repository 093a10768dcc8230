//! Fuzz target: VerifyCallState BER `data` decoder: total; a decoded value encodes (octets and hex) to what decodes back equal.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kordon_controlplane::verify::ber::fuzz_verify_ber(data));
