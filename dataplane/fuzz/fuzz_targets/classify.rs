//! Fuzz target: RFC 7983 / RFC 5761 demux: total, and agrees with the first two bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kordon_dataplane::packet::fuzz::classify(data));
