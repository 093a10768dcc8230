//! Fuzz target: RTP header parser: lengths add up, rewrites touch only SSRC and sequence number.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kordon_dataplane::packet::fuzz::rtp(data));
