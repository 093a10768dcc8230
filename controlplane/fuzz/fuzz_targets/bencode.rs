//! Fuzz target: bencode decoder: total, canonical (re-encoding gives the bytes consumed), round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kordon_controlplane::ng::bencode::fuzz_bencode(data));
