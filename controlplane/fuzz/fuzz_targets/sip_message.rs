//! Fuzz target: SIP message parser: total; reasons fit a status line; a request that validates (and each response built for it) re-parses equal.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kordon_controlplane::sip::message::fuzzing::fuzz_sip_message(data));
