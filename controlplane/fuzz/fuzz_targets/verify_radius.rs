//! Fuzz target: RADIUS codec: total; a packet that decodes encodes back to its bytes; answers and requests built from it decode and verify.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kordon_controlplane::verify::radius::fuzz_verify_radius(data));
