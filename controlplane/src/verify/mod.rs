//! The call verification node (anti-fraud, seed 004): its wire codecs so far.
//!
//! - [`ber`]: the BER `data` of the inter-node VerifyCallState request, with
//!   numbers in ISUP address form ([`isup`]).
//! - [`radius`]: RADIUS Access-Request/Accept/Reject packets.
//!
//! The node itself (registry, capacity, presets, REST, inter-node client and
//! server, records) builds on them.

pub mod ber;
pub mod isup;
pub mod radius;
