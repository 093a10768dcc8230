//! The call verification node (anti-fraud): the originating operator's node
//! confirms to the terminating operator's node that a call really left its
//! network, so that calls with a spoofed calling number are released.
//!
//! - [`node`]: the decisions (classification, registration, verification,
//!   answers to other nodes);
//! - [`registry`]: outgoing calls kept `call_timer` seconds;
//! - [`numbers`]: number ranges, SETUP files and other operators' ranges;
//! - [`records`]: the record of every verification (SQLite);
//! - [`peer`]: the inter-node `VerifyCallState` exchange;
//! - [`rest`]: the REST API and the inter-node endpoint, on [`http`];
//! - [`service`]: the running node (listeners, periodic work, reload, stop);
//! - [`ber`], [`isup`], [`radius`]: wire codecs;
//! - [`radius_server`]: the RADIUS front door (section 9);
//! - [`setup`]: our capacity from SETUP files, other operators' range files;
//! - [`uvrd`]: import of a classic `uvrd.conf`;
//! - [`config`]: the `[verify]` settings.

pub mod ber;
pub mod config;
pub mod http;
pub mod isup;
pub mod node;
pub mod numbers;
pub mod peer;
pub mod radius;
pub mod radius_server;
pub mod records;
pub mod registry;
pub mod rest;
pub mod service;
pub mod setup;
pub mod uvrd;

pub use config::VerifyConfig;
pub use node::{CheckRequest, Class, Node, Outcome, RegisterRequest, State, Verdict};
