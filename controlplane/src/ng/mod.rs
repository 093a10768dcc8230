//! The rtpengine "ng" control protocol front door: Kamailio's and OpenSIPS's
//! `rtpengine` modules send `<cookie> <bencoded dictionary>` over UDP and read
//! `<cookie> <bencoded dictionary>` back.
//!
//! - [`bencode`]: the wire codec.
//! - [`calls`]: the commands (`ping`, `offer`, `answer`, `delete`, `query`,
//!   `list`, `statistics`), which keep per-call state, drive data planes through
//!   [`crate::media::MediaClient`] (the same gRPC client the B2BUA uses) and
//!   rewrite SDP through [`crate::sdp`].
//! - [`server`]: the UDP listener and the reply cache that makes a
//!   retransmitted cookie get the first answer instead of a second action.

pub mod bencode;
pub mod calls;
pub mod server;

pub use calls::{Calls, NgSettings};
pub use server::{serve, NgConfig};
