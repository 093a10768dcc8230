//! Packet IO: the io_uring backend, the epoll + recvmmsg/sendmmsg fallback, and
//! the few system calls around them. This is one of the two places `unsafe` is
//! allowed; each block says why it holds.
//!
//! Backends never decide anything about a packet: they hand each datagram to
//! the worker core and send what it returns.

pub mod mmsg;
pub mod sys;
pub mod uring;

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::Instant;

/// What a backend needs from the worker that owns it.
pub trait PacketHandler {
    /// Handles one datagram received on socket `sock` (generation `gen`), possibly
    /// rewriting it in place. Returns the fd and destination to send it to.
    fn on_datagram(
        &mut self,
        sock: u32,
        gen: u32,
        src: SocketAddr,
        buf: &mut [u8],
        now: Instant,
    ) -> Option<(RawFd, SocketAddr)>;

    /// The fd of a live socket, `None` for a stale (removed) one.
    fn socket_fd(&self, sock: u32, gen: u32) -> Option<RawFd>;

    /// A datagram larger than a receive buffer was cut: count it on the socket.
    fn on_truncated(&mut self, sock: u32, gen: u32);

    /// A socket whose removal was pending is now free of in-flight receives.
    fn on_socket_closed(&mut self, sock: u32, gen: u32);

    /// Per-turn accounting: packets received this turn, whether the cap hit,
    /// sends the kernel refused, receives re-armed.
    fn on_turn(&mut self, received: usize, capped: bool, send_errors: u64, rearms: u64);
}

/// Which backend runs, for logs and stats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// io_uring.
    Uring,
    /// epoll + recvmmsg/sendmmsg.
    Mmsg,
}

impl BackendKind {
    /// Name in stats and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Uring => "io_uring",
            BackendKind::Mmsg => "mmsg",
        }
    }
}

/// A worker's packet IO.
// One per worker, never moved on the packet path: the size difference is moot.
#[allow(clippy::large_enum_variant)]
pub enum Backend {
    /// io_uring.
    Uring(uring::Uring),
    /// epoll + mmsg.
    Mmsg(mmsg::Mmsg),
}

/// Whether a removed socket is gone now or after in-flight work completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// Closed now.
    Done,
    /// [`PacketHandler::on_socket_closed`] will be called.
    Pending,
}

impl Backend {
    /// Kind of this backend.
    pub fn kind(&self) -> BackendKind {
        match self {
            Backend::Uring(_) => BackendKind::Uring,
            Backend::Mmsg(_) => BackendKind::Mmsg,
        }
    }

    /// Starts receiving on a socket.
    pub fn add_socket(&mut self, sock: u32, gen: u32, fd: RawFd) -> std::io::Result<()> {
        match self {
            Backend::Uring(u) => u.add_socket(sock, gen, fd),
            Backend::Mmsg(m) => m.add_socket(sock, gen, fd),
        }
    }

    /// Stops receiving on a socket.
    pub fn remove_socket(&mut self, sock: u32, gen: u32, fd: RawFd) -> Removal {
        match self {
            Backend::Uring(u) => u.remove_socket(sock, gen),
            Backend::Mmsg(m) => m.remove_socket(fd),
        }
    }

    /// One loop turn: wait up to `deadline` for packets, handle at most the
    /// configured number, send what the handler returns.
    pub fn turn<H: PacketHandler>(&mut self, h: &mut H, deadline: Instant) {
        match self {
            Backend::Uring(u) => u.turn(h, deadline),
            Backend::Mmsg(m) => m.turn(h, deadline),
        }
    }
}
