//! Kordon's control plane.
//!
//! Today it holds the client the control plane drives data planes with
//! ([`media`]); SIP, calls, routing, CDR and verification build on it.

pub mod media;
