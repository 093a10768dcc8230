//! Kordon's load bench: a paced RTP load generator and sink, a minimal
//! recvmmsg/sendmmsg forwarder (the syscall ceiling), and clients to set sessions
//! up on the relays compared — Kordon over gRPC, rtpengine over its ng protocol.
//!
//! The binaries are `kordon-loadgen` (generator, sink, session bench, report) and
//! `kordon-fwd` (the minimal forwarder); `bench/compare.sh` runs the comparison.
//! See `bench/README.md` for what each figure means.

pub mod gen;
pub mod grpc;
pub mod hist;
pub mod ng;
pub mod packet;
pub mod procfs;
pub mod report;
pub mod sys;
