//! Fuzz target: RTCP compound walker: at least one packet, sender SSRC rewrite touches only that field.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kordon_dataplane::packet::fuzz::rtcp(data));
