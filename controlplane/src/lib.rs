//! Kordon's control plane.
//!
//! Today it holds:
//! - [`media`]: the client the control plane drives data planes with;
//! - [`ng`]: the rtpengine ng control protocol (bencode over UDP);
//! - [`sdp`]: SDP parsing, offer/answer reads and rewrites, shared by ng and
//!   the B2BUA.
//!
//! SIP, calls, routing, CDR and verification build on them.

pub mod cdr;
pub mod media;
pub mod ng;
pub mod registrar;
pub mod routing;
pub mod sdp;
pub mod sip;
