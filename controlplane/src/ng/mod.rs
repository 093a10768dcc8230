//! The rtpengine "ng" control protocol front door: Kamailio's and OpenSIPS's
//! `rtpengine` modules send `<cookie> <bencoded dictionary>` over UDP and read
//! the reply the same way.
//!
//! So far this holds only the wire codec ([`bencode`]); the command handlers
//! come on top of it and reuse [`crate::sdp`] for every SDP they touch.

pub mod bencode;
