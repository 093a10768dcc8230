//! The only module of the bench with `unsafe`: thin, safe wrappers over the Linux
//! calls the load generator and the minimal forwarder need and that neither `std`
//! nor `socket2` offer — `recvmmsg`/`sendmmsg` with per-message addresses and
//! kernel receive timestamps, `epoll`, `timerfd`, CPU pinning, a few socket options
//! and `sysconf(_SC_CLK_TCK)`.
//!
//! Every batch structure allocates its buffers once; the raw pointers the kernel
//! reads point into heap storage that is never resized, so they stay valid when
//! the owning struct moves.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::fs::File;
use std::io::{self, Read};
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Most messages one `recvmmsg`/`sendmmsg` call handles.
pub const MAX_BATCH: usize = 64;
/// Size of each receive buffer: larger than any packet the bench sends.
pub const RECV_BUF_SIZE: usize = 2048;
/// Size of each send buffer.
pub const SEND_BUF_SIZE: usize = 256;

/// `SO_TIMESTAMPNS` (and `SCM_TIMESTAMPNS`) on the generic Linux ABI (x86-64, arm64).
const SO_TIMESTAMPNS: libc::c_int = 35;
/// `SO_SNDBUFFORCE`: like `SO_SNDBUF` but above `wmem_max` (needs CAP_NET_ADMIN).
const SO_SNDBUFFORCE: libc::c_int = 32;
/// `SO_RCVBUFFORCE`: like `SO_RCVBUF` but above `rmem_max` (needs CAP_NET_ADMIN).
const SO_RCVBUFFORCE: libc::c_int = 33;
/// Room for one `struct timespec` control message, in 8-byte words (aligned).
const CTRL_WORDS: usize = 8;

fn to_sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn from_sockaddr(sa: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
        u16::from_be(sa.sin_port),
    )
}

fn zeroed_vec<T>(n: usize) -> Vec<T> {
    (0..n)
        .map(|_| {
            // SAFETY: only instantiated with libc's plain C structs (iovec, mmsghdr,
            // sockaddr_in, epoll_event), for which all-zero bytes (null pointers,
            // zero integers) is a valid value.
            unsafe { zeroed::<T>() }
        })
        .collect()
}

/// Outcome of a receive call.
fn would_block(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR))
}

/// A preallocated batch of receive buffers for `recvmmsg`, with each message's
/// source address and kernel receive timestamp (`SO_TIMESTAMPNS`).
pub struct RecvBatch {
    bufs: Vec<u8>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    names: Vec<libc::sockaddr_in>,
    ctrl: Vec<[u64; CTRL_WORDS]>,
    len: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    /// Allocates [`MAX_BATCH`] buffers of [`RECV_BUF_SIZE`] bytes.
    pub fn new() -> Self {
        let mut b = RecvBatch {
            bufs: vec![0u8; MAX_BATCH * RECV_BUF_SIZE],
            iovs: zeroed_vec(MAX_BATCH),
            hdrs: zeroed_vec(MAX_BATCH),
            names: zeroed_vec(MAX_BATCH),
            ctrl: vec![[0u64; CTRL_WORDS]; MAX_BATCH],
            len: 0,
        };
        let bufs = b.bufs.as_mut_ptr();
        for i in 0..MAX_BATCH {
            b.iovs[i] = libc::iovec {
                iov_base: bufs.wrapping_add(i * RECV_BUF_SIZE).cast::<c_void>(),
                iov_len: RECV_BUF_SIZE,
            };
        }
        for i in 0..MAX_BATCH {
            let h = &mut b.hdrs[i].msg_hdr;
            h.msg_name = (&mut b.names[i] as *mut libc::sockaddr_in).cast::<c_void>();
            h.msg_iov = &mut b.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = b.ctrl[i].as_mut_ptr().cast::<c_void>();
        }
        b
    }

    /// Receives up to [`MAX_BATCH`] datagrams without blocking. Returns how many
    /// arrived (0 when none was waiting).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for h in &mut self.hdrs {
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_controllen = CTRL_WORDS * 8;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: every header points at buffers owned by `self` (set up in `new`,
        // never resized) with the lengths just reset; the kernel writes at most
        // those lengths; `fd` is a plain descriptor (a bad one yields EBADF).
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                MAX_BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            self.len = 0;
            let err = io::Error::last_os_error();
            return if would_block(&err) { Ok(0) } else { Err(err) };
        }
        self.len = n as usize;
        Ok(self.len)
    }

    /// Number of datagrams from the last [`RecvBatch::recv`].
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the last receive returned nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `i`-th datagram of the last receive.
    pub fn packet(&self, i: usize) -> &[u8] {
        let len = (self.hdrs[i].msg_len as usize).min(RECV_BUF_SIZE);
        &self.bufs[i * RECV_BUF_SIZE..i * RECV_BUF_SIZE + len]
    }

    /// Source address of the `i`-th datagram.
    pub fn source(&self, i: usize) -> SocketAddrV4 {
        from_sockaddr(&self.names[i])
    }

    /// Kernel receive time (CLOCK_REALTIME, ns since the epoch) of the `i`-th
    /// datagram, when the socket has `SO_TIMESTAMPNS` on.
    pub fn rx_time_ns(&self, i: usize) -> Option<u64> {
        let hdr = &self.hdrs[i].msg_hdr;
        if hdr.msg_controllen < size_of::<libc::cmsghdr>() {
            return None;
        }
        // SAFETY: `hdr` is the msghdr the kernel just filled: msg_control points
        // into `self.ctrl[i]` and msg_controllen is what the kernel wrote there, so
        // the CMSG_* walk stays inside that buffer.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == SO_TIMESTAMPNS {
                    let ts =
                        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::timespec>());
                    return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
                }
                cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
            }
        }
        None
    }
}

/// A preallocated batch of datagrams to send with `sendmmsg`, each with its own
/// destination. Buffers keep their bytes between batches, so constant parts of a
/// packet (a template) are written once.
pub struct SendBatch {
    bufs: Vec<u8>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    names: Vec<libc::sockaddr_in>,
    len: usize,
}

impl Default for SendBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl SendBatch {
    /// Allocates [`MAX_BATCH`] buffers of [`SEND_BUF_SIZE`] bytes.
    pub fn new() -> Self {
        let mut b = SendBatch {
            bufs: vec![0u8; MAX_BATCH * SEND_BUF_SIZE],
            iovs: zeroed_vec(MAX_BATCH),
            hdrs: zeroed_vec(MAX_BATCH),
            names: zeroed_vec(MAX_BATCH),
            len: 0,
        };
        let bufs = b.bufs.as_mut_ptr();
        for i in 0..MAX_BATCH {
            b.iovs[i] = libc::iovec {
                iov_base: bufs.wrapping_add(i * SEND_BUF_SIZE).cast::<c_void>(),
                iov_len: 0,
            };
        }
        for i in 0..MAX_BATCH {
            let h = &mut b.hdrs[i].msg_hdr;
            h.msg_name = (&mut b.names[i] as *mut libc::sockaddr_in).cast::<c_void>();
            h.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_iov = &mut b.iovs[i];
            h.msg_iovlen = 1;
        }
        b
    }

    /// The full buffer of slot `i` (for writing a template once).
    pub fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.bufs[i * SEND_BUF_SIZE..(i + 1) * SEND_BUF_SIZE]
    }

    /// Appends a datagram of `len` bytes to `dest` and returns its buffer to fill.
    /// Panics when the batch is full or `len` exceeds [`SEND_BUF_SIZE`].
    pub fn push(&mut self, dest: SocketAddrV4, len: usize) -> &mut [u8] {
        assert!(self.len < MAX_BATCH && len <= SEND_BUF_SIZE);
        let i = self.len;
        self.len += 1;
        self.names[i] = to_sockaddr(dest);
        self.iovs[i].iov_len = len;
        &mut self.bufs[i * SEND_BUF_SIZE..i * SEND_BUF_SIZE + len]
    }

    /// The `i`-th queued datagram, writable (e.g. to stamp a send time).
    pub fn packet_mut(&mut self, i: usize) -> &mut [u8] {
        let len = self.iovs[i].iov_len;
        &mut self.bufs[i * SEND_BUF_SIZE..i * SEND_BUF_SIZE + len]
    }

    /// Number of queued datagrams.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when no more datagram fits.
    pub fn is_full(&self) -> bool {
        self.len == MAX_BATCH
    }

    /// Sends every queued datagram from `fd` and empties the batch. Returns how
    /// many the kernel took; the rest were refused (full send buffer, ENOBUFS...).
    pub fn send(&mut self, fd: RawFd) -> (usize, Option<io::Error>) {
        let total = self.len;
        self.len = 0;
        send_all(fd, &mut self.hdrs[..total])
    }
}

fn send_all(fd: RawFd, hdrs: &mut [libc::mmsghdr]) -> (usize, Option<io::Error>) {
    let mut done = 0;
    while done < hdrs.len() {
        let rest = &mut hdrs[done..];
        // SAFETY: the headers point at buffers, iovecs and addresses owned by the
        // caller's batch, valid for this call; the kernel only reads them (and
        // writes msg_len inside the headers themselves).
        let n = unsafe {
            libc::sendmmsg(
                fd,
                rest.as_mut_ptr(),
                rest.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return (done, Some(err));
        }
        if n == 0 {
            break;
        }
        done += n as usize;
    }
    (done, None)
}

/// Sends the datagrams of a [`RecvBatch`] onwards without copying them: the
/// minimal forwarder's whole data path.
pub struct Forwarder {
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    name: Box<libc::sockaddr_in>,
}

impl Default for Forwarder {
    fn default() -> Self {
        Self::new()
    }
}

impl Forwarder {
    /// Allocates the headers once.
    pub fn new() -> Self {
        // SAFETY: sockaddr_in is a plain C struct; all-zero is a valid value.
        let name: Box<libc::sockaddr_in> = Box::new(unsafe { zeroed() });
        let mut f = Forwarder {
            iovs: zeroed_vec(MAX_BATCH),
            hdrs: zeroed_vec(MAX_BATCH),
            name,
        };
        let name_ptr = (&mut *f.name as *mut libc::sockaddr_in).cast::<c_void>();
        for i in 0..MAX_BATCH {
            let h = &mut f.hdrs[i].msg_hdr;
            h.msg_name = name_ptr;
            h.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_iov = &mut f.iovs[i];
            h.msg_iovlen = 1;
        }
        f
    }

    /// Sends all datagrams of `batch` from `fd` to `dest`. Returns how many the
    /// kernel took.
    pub fn forward(
        &mut self,
        fd: RawFd,
        batch: &RecvBatch,
        dest: SocketAddrV4,
    ) -> (usize, Option<io::Error>) {
        *self.name = to_sockaddr(dest);
        let n = batch.len();
        for i in 0..n {
            self.iovs[i] = libc::iovec {
                iov_base: batch.iovs[i].iov_base,
                iov_len: batch.hdrs[i].msg_len as usize,
            };
        }
        send_all(fd, &mut self.hdrs[..n])
    }
}

/// A level-triggered epoll set whose events carry a caller-chosen `u64` token.
pub struct Epoll {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
    ready: usize,
}

impl Epoll {
    /// Creates the set, able to report up to `capacity` events per wait.
    pub fn new(capacity: usize) -> io::Result<Self> {
        // SAFETY: plain syscall without pointers.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll {
            // SAFETY: `fd` was just returned by epoll_create1 and is owned by no one else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            events: zeroed_vec(capacity.max(1)),
            ready: 0,
        })
    }

    /// Watches `fd` for readability, reporting `token`.
    pub fn add_readable(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event on the stack for the call's duration.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout_ms` (−1: forever) and returns how many events are ready;
    /// read them with [`Epoll::token`].
    pub fn wait(&mut self, timeout_ms: i32) -> io::Result<usize> {
        // SAFETY: `events` is an owned buffer of `len` epoll_event the kernel fills.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                timeout_ms,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            self.ready = 0;
            return if err.raw_os_error() == Some(libc::EINTR) {
                Ok(0)
            } else {
                Err(err)
            };
        }
        self.ready = n as usize;
        Ok(self.ready)
    }

    /// Token of the `i`-th ready event of the last wait.
    pub fn token(&self, i: usize) -> u64 {
        assert!(i < self.ready);
        // Copy out of the (packed) struct.
        let ev = self.events[i];
        ev.u64
    }
}

/// A periodic, non-blocking CLOCK_MONOTONIC timerfd.
pub struct Ticker {
    file: File,
}

impl Ticker {
    /// Starts a timer firing every `period`.
    pub fn new(period: Duration) -> io::Result<Self> {
        // SAFETY: plain syscall without pointers.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by timerfd_create and is owned by no one else.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let ts = libc::timespec {
            tv_sec: period.as_secs() as libc::time_t,
            tv_nsec: period.subsec_nanos() as libc::c_long,
        };
        let spec = libc::itimerspec {
            it_interval: ts,
            it_value: ts,
        };
        // SAFETY: `spec` lives on the stack for the call; the old value is not asked.
        let rc =
            unsafe { libc::timerfd_settime(owned.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Ticker {
            file: File::from(owned),
        })
    }

    /// Consumes the pending expirations and returns how many there were.
    pub fn expirations(&mut self) -> u64 {
        let mut buf = [0u8; 8];
        match self.file.read(&mut buf) {
            Ok(8) => u64::from_ne_bytes(buf),
            _ => 0,
        }
    }
}

impl AsRawFd for Ticker {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// Pins the calling thread (and the threads it creates later) to one CPU.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is a plain bit array; zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { zeroed() };
    if cpu >= 8 * size_of::<libc::cpu_set_t>() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cpu index out of range",
        ));
    }
    // SAFETY: `cpu` was checked to be inside the set.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 = this thread.
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_int_opt(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the option value is a c_int on the stack, its size passed alongside.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast::<c_void>(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Turns on kernel receive timestamps (`SO_TIMESTAMPNS`, CLOCK_REALTIME).
pub fn enable_rx_timestamps(fd: RawFd) -> io::Result<()> {
    set_int_opt(fd, libc::SOL_SOCKET, SO_TIMESTAMPNS, 1)
}

/// Sets both socket buffers to `bytes`, above the sysctl caps when the process
/// may (`SO_*BUFFORCE`, root), else as large as the caps allow.
pub fn set_buffers(fd: RawFd, bytes: usize) {
    let v = bytes.min(i32::MAX as usize / 2) as libc::c_int;
    if set_int_opt(fd, libc::SOL_SOCKET, SO_RCVBUFFORCE, v).is_err() {
        let _ = set_int_opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, v);
    }
    if set_int_opt(fd, libc::SOL_SOCKET, SO_SNDBUFFORCE, v).is_err() {
        let _ = set_int_opt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, v);
    }
}

/// Clock ticks per second of `/proc` CPU times (`sysconf(_SC_CLK_TCK)`).
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: plain libc call without pointers.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}
