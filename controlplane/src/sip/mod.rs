//! SIP: messages, transports, transactions, dialogs and digest authentication.
//!
//! `message` hides the parser; `txn` and `dialog` are sans-IO state machines
//! (messages and time in, messages and events out); `transport` is the thin
//! async layer that moves bytes between sockets and the machines.

pub mod auth;
pub mod message;
pub mod transport;
pub mod txn;
