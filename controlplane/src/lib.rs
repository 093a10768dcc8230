//! Kordon's control plane.
//!
//! It holds:
//! - [`b2bua`]: the SIP B2BUA (calls, trunks, routing, registrar glue, CDR);
//! - [`sip`]: messages, transports, transactions, dialogs, digest auth;
//! - [`routing`], [`registrar`], [`cdr`]: the call-control pieces it uses;
//! - [`media`]: the client the control plane drives data planes with;
//! - [`ng`]: the rtpengine ng control protocol (bencode over UDP);
//! - [`sdp`]: SDP parsing, offer/answer reads and rewrites, shared by ng and
//!   the B2BUA.
//!

pub mod b2bua;
pub mod cdr;
pub mod media;
pub mod metrics;
pub mod ng;
pub mod registrar;
pub mod routing;
pub mod sdp;
pub mod sip;
pub mod verify;
