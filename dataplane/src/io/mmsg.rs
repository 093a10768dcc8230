//! The fallback backend: level-triggered epoll, `recvmmsg` per ready socket and
//! `sendmmsg` per run of packets leaving through the same socket.
//!
//! Used where io_uring is missing or refused (ENOSYS, EPERM) or when configured.
//! The per-turn cap bounds how many packets one turn reads; level-triggered
//! epoll reports a socket that still holds packets again next turn, so nothing
//! is starved and nothing is disabled.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use super::sys::{decode_sockaddr, EventFd, RawAddr, SOCKADDR_LEN};
use super::{PacketHandler, Removal};

const WAKE_TOKEN: u64 = u64::MAX;
/// Most datagrams one `recvmmsg` call takes from one socket.
const PER_SOCKET_BATCH: usize = 32;

#[derive(Clone, Copy)]
struct Out {
    fd: RawFd,
    slot: u32,
    len: u32,
}

/// A worker's epoll + mmsg IO.
pub struct Mmsg {
    epfd: OwnedFd,
    events: Vec<libc::epoll_event>,
    bufs: Vec<u8>,
    buf_size: usize,
    names: Vec<RawAddr>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    dests: Vec<RawAddr>,
    send_iovs: Vec<libc::iovec>,
    send_hdrs: Vec<libc::mmsghdr>,
    out: Vec<Out>,
    wake: Arc<EventFd>,
    cap: usize,
    backlog: bool,
}

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is plain data; all-zero is a valid empty value.
    unsafe { std::mem::zeroed() }
}

impl Mmsg {
    /// Buffers for `cap` packets per turn of `buf_size` bytes each.
    pub fn new(buf_size: usize, cap: usize, wake: Arc<EventFd>) -> io::Result<Self> {
        // SAFETY: plain system call; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        let epfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let cap = cap.max(1);
        let empty_iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let me = Mmsg {
            epfd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 256],
            bufs: vec![0u8; cap * buf_size],
            buf_size,
            names: vec![RawAddr::default(); cap],
            iovs: vec![empty_iov; cap],
            hdrs: (0..cap).map(|_| zeroed_mmsghdr()).collect(),
            dests: vec![RawAddr::default(); cap],
            send_iovs: vec![empty_iov; cap],
            send_hdrs: (0..cap).map(|_| zeroed_mmsghdr()).collect(),
            out: Vec::with_capacity(cap),
            wake,
            cap,
            backlog: false,
        };
        me.ctl(libc::EPOLL_CTL_ADD, me.wake.raw(), WAKE_TOKEN)?;
        Ok(me)
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: our epoll fd, a caller's open fd, a live event struct.
        let rc = unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), op, fd, &mut ev) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Starts receiving on a socket.
    pub fn add_socket(&mut self, idx: u32, gen: u32, fd: RawFd) -> io::Result<()> {
        self.ctl(
            libc::EPOLL_CTL_ADD,
            fd,
            (u64::from(gen) << 32) | u64::from(idx),
        )
    }

    /// Stops receiving on a socket; the caller closes it.
    pub fn remove_socket(&mut self, fd: RawFd) -> Removal {
        let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0);
        Removal::Done
    }

    /// One loop turn (see the module doc).
    pub fn turn<H: PacketHandler>(&mut self, h: &mut H, deadline: Instant) {
        use std::os::fd::AsRawFd;
        let timeout_ms = if self.backlog {
            0
        } else {
            let left = deadline.saturating_duration_since(Instant::now());
            left.as_millis().min(1000) as libc::c_int
        };
        // SAFETY: our epoll fd and a buffer of `events.len()` entries.
        let n = unsafe {
            libc::epoll_wait(
                self.epfd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                timeout_ms,
            )
        };
        let now = Instant::now();
        let ready = usize::try_from(n).unwrap_or(0);
        let mut used = 0usize;
        let mut capped = false;
        self.out.clear();
        for i in 0..ready.min(self.events.len()) {
            let token = self.events.get(i).map_or(WAKE_TOKEN, |e| e.u64);
            if token == WAKE_TOKEN {
                self.wake.drain();
                continue;
            }
            let room = (self.cap - used).min(PER_SOCKET_BATCH);
            if room == 0 {
                capped = true;
                break;
            }
            let (idx, gen) = (token as u32, (token >> 32) as u32);
            let Some(fd) = h_fd(h, idx, gen) else {
                continue;
            };
            let got = self.recv_batch(fd, used, room);
            for k in used..used + got {
                self.handle_one(h, k, idx, gen, now);
            }
            used += got;
        }
        let send_errors = self.flush();
        self.backlog = capped;
        h.on_turn(used, capped, send_errors, 0);
    }

    /// Receives up to `room` datagrams into slots `first..`.
    fn recv_batch(&mut self, fd: RawFd, first: usize, room: usize) -> usize {
        let base = self.bufs.as_mut_ptr();
        for k in first..first + room {
            let (Some(iov), Some(name), Some(hdr)) = (
                self.iovs.get_mut(k),
                self.names.get_mut(k),
                self.hdrs.get_mut(k),
            ) else {
                return 0;
            };
            // In bounds: k < cap and bufs holds cap * buf_size bytes.
            iov.iov_base = base.wrapping_add(k * self.buf_size).cast();
            iov.iov_len = self.buf_size;
            hdr.msg_hdr.msg_name = name.bytes.as_mut_ptr().cast();
            hdr.msg_hdr.msg_namelen = SOCKADDR_LEN as libc::socklen_t;
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_control = std::ptr::null_mut();
            hdr.msg_hdr.msg_controllen = 0;
            hdr.msg_hdr.msg_flags = 0;
            hdr.msg_len = 0;
        }
        let Some(hdrs) = self.hdrs.get_mut(first..first + room) else {
            return 0;
        };
        // SAFETY: `room` headers, each pointing at its own live buffer slot and
        // name slot owned by `self`; fd is an open socket of this worker.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                room as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        usize::try_from(n).unwrap_or(0)
    }

    #[inline]
    fn handle_one<H: PacketHandler>(
        &mut self,
        h: &mut H,
        k: usize,
        idx: u32,
        gen: u32,
        now: Instant,
    ) {
        let Some(hdr) = self.hdrs.get(k) else { return };
        let len = hdr.msg_len as usize;
        if hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            h.on_truncated(idx, gen);
            return;
        }
        let namelen = hdr.msg_hdr.msg_namelen as usize;
        let Some(src) = self
            .names
            .get(k)
            .and_then(|n| n.bytes.get(..namelen.min(SOCKADDR_LEN)))
            .and_then(decode_sockaddr)
        else {
            return;
        };
        let start = k * self.buf_size;
        let Some(buf) = self.bufs.get_mut(start..start + len.min(self.buf_size)) else {
            return;
        };
        if let Some((fd, dst)) = h.on_datagram(idx, gen, src, buf, now) {
            if let Some(d) = self.dests.get_mut(k) {
                d.set(dst);
                self.out.push(Out {
                    fd,
                    slot: k as u32,
                    len: len as u32,
                });
            }
        }
    }

    /// Sends queued packets, one `sendmmsg` per run leaving the same socket.
    /// Returns how many the kernel refused.
    fn flush(&mut self) -> u64 {
        let mut errors = 0u64;
        let base = self.bufs.as_mut_ptr();
        for (j, o) in self.out.iter().enumerate() {
            let (Some(iov), Some(hdr), Some(dest)) = (
                self.send_iovs.get_mut(j),
                self.send_hdrs.get_mut(j),
                self.dests.get_mut(o.slot as usize),
            ) else {
                break;
            };
            iov.iov_base = base.wrapping_add(o.slot as usize * self.buf_size).cast();
            iov.iov_len = o.len as usize;
            hdr.msg_hdr.msg_name = dest.bytes.as_mut_ptr().cast();
            hdr.msg_hdr.msg_namelen = dest.len;
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_control = std::ptr::null_mut();
            hdr.msg_hdr.msg_controllen = 0;
            hdr.msg_hdr.msg_flags = 0;
        }
        let total = self.out.len();
        let mut i = 0;
        while i < total {
            let fd = self.out.get(i).map_or(-1, |o| o.fd);
            let mut j = i + 1;
            while j < total && self.out.get(j).map(|o| o.fd) == Some(fd) {
                j += 1;
            }
            let Some(run) = self.send_hdrs.get_mut(i..j) else {
                break;
            };
            // SAFETY: `run` headers point at live buffer and destination slots
            // owned by `self`; fd is an open socket of this worker.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    run.as_mut_ptr(),
                    run.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            let sent = usize::try_from(n).unwrap_or(0);
            errors += (run.len() - sent.min(run.len())) as u64;
            i = j;
        }
        errors
    }
}

/// The fd behind a live socket token (stale tokens give `None`).
#[inline]
fn h_fd<H: PacketHandler>(h: &mut H, idx: u32, gen: u32) -> Option<RawFd> {
    h.socket_fd(idx, gen)
}
