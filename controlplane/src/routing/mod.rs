//! Number normalization, routing by prefix, class of service and admission.
//!
//! The pieces a call goes through before it leaves on a trunk, each a pure
//! value with time passed in:
//! - [`e164`]: [`normalize`] reads a dialled string (the user part of a URI)
//!   as an [`E164`] number by a [`NumberingConfig`]; every other piece takes
//!   numbers only in that form.
//! - [`cos`]: a [`ClassOfService`] decides whether a user may call a
//!   destination at a given time.
//! - [`table`]: a [`RouteTable`] gives the trunks for a number, first choice
//!   first, by longest prefix.
//! - [`admission`]: [`Admission`] holds per-trunk concurrent-call limits and
//!   [`RateLimiter`] a per-source INVITE rate.
//!
//! What it does not: SIP, I/O, clocks, or failover between trunks (the
//! B2BUA walks the trunk list, asking [`Admission`] for each).
//!
//! Configuration errors (`validate`, `build`, `compile`) are `String`s
//! naming the offending field, ready to be prefixed with the section they
//! were read from.

pub mod admission;
pub mod cos;
pub mod e164;
pub mod table;

pub use admission::{Admission, AdmissionError, RateLimiter};
pub use cos::{ClassOfService, ClassOfServiceConfig, CosDecision, CosDenial};
pub use e164::{normalize, NumberError, NumberingConfig, E164};
pub use table::{RouteConfig, RouteTable};
