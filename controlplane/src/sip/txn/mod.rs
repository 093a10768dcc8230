//! RFC 3261 transactions as sans-IO state machines.
