//! Fuzz target: a node's answer to a VerifyCallState request body: total; 400 with error 1 exactly when the body is unreadable, else 200 with the request's ids echoed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kordon_controlplane::verify::node::fuzz_verify_node_request(data));
