//! Kordon's media data plane: a per-core RTP/RTCP relay with NAT latching.
//!
//! - [`worker`]: one thread per core owning its sessions, sockets and counters;
//!   commands arrive on a lock-free queue.
//! - [`io`]: io_uring (multishot receive, provided buffers, batched sends) or
//!   epoll + recvmmsg/sendmmsg, chosen at start-up.
//! - [`session`]: the per-packet decision (parse, latch, direction, rewrite),
//!   free of IO and clocks.
//! - [`packet`]: borrowed RTP/RTCP views and first-byte demux.
//! - [`control`]: the gRPC service (proto in `proto/`), session directory and
//!   port allocation.
//!
//! The data plane never parses SIP or SDP: it is told addresses and directions.

pub mod config;
pub mod control;
pub mod io;
pub mod metrics;
pub mod packet;
pub mod ports;
pub mod session;
pub mod stats;
pub mod worker;

pub use control::{Dataplane, Service};
