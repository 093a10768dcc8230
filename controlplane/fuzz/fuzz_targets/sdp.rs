//! Fuzz target: SDP parser: total; written text re-parses equal; rewrites touch only what they name.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kordon_controlplane::sdp::fuzz_sdp(data));
