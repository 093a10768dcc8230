//! The io_uring backend: one multishot `recvmsg` per socket drawing from a
//! provided-buffer ring, in-place forwarding, and sends batched into one
//! submission per loop turn.
//!
//! A received buffer is handed back to the kernel as soon as the packet is
//! dropped, or when its send completes: the bytes are never copied. The number
//! of receive completions handled per turn is capped (the kernel would hand over
//! thousands at once); the rest wait for the next turn, after commands and
//! timers. A multishot receive that stops (no buffers left, an error) is armed
//! again at once, so no stream is ever disabled for good.
//!
//! Removing a socket cancels its receive first and closes it only when the
//! kernel confirms: an in-flight receive holds the file open, and closing early
//! would keep the port bound.
#![allow(unsafe_code)]

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Instant;

use io_uring::types::{BufRingEntry, Fd, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};

use super::sys::{decode_sockaddr, EventFd, RawAddr, SOCKADDR_LEN};
use super::{PacketHandler, Removal};

const OP_RECV: u64 = 1;
const OP_SEND: u64 = 2;
const OP_WAKE: u64 = 3;
const OP_CANCEL: u64 = 4;
const BGID: u16 = 7;

#[inline]
fn ud(op: u64, gen: u32, idx: u32) -> u64 {
    (op << 56) | ((u64::from(gen) & 0xff_ffff) << 32) | u64::from(idx)
}

#[inline]
fn ud_parts(ud: u64) -> (u64, u32, u32) {
    (ud >> 56, ((ud >> 32) & 0xff_ffff) as u32, ud as u32)
}

/// Checks that io_uring with provided-buffer rings works here. The error says
/// why not (ENOSYS: no io_uring; EPERM: disabled by sysctl or seccomp).
pub fn probe() -> io::Result<()> {
    let ring: IoUring = IoUring::builder().build(8)?;
    let bufs = BufRing::new(&ring, 8, 64)?;
    drop(ring);
    drop(bufs);
    Ok(())
}

/// The provided-buffer ring and the memory it points into.
struct BufRing {
    entries: *mut BufRingEntry,
    layout: Layout,
    mask: u16,
    tail: u16,
    mem: Vec<u8>,
    buf_size: usize,
}

impl BufRing {
    fn new(ring: &IoUring, count: u16, buf_size: usize) -> io::Result<Self> {
        let layout = Layout::from_size_align(usize::from(count) * 16, 4096)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: non-zero size (count >= 8), valid alignment.
        let entries = unsafe { alloc_zeroed(layout) }.cast::<BufRingEntry>();
        if entries.is_null() {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, "buffer ring"));
        }
        let mut me = BufRing {
            entries,
            layout,
            mask: count - 1,
            tail: 0,
            mem: vec![0u8; usize::from(count) * buf_size],
            buf_size,
        };
        // SAFETY: `entries` is page-aligned, zeroed, `count` entries long, and
        // lives until after the ring is dropped (Uring's field order).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries as u64, count, BGID, 0)?
        };
        for bid in 0..count {
            me.push(bid);
        }
        me.publish();
        Ok(me)
    }

    /// Queues buffer `bid` for the kernel (visible after [`Self::publish`]).
    #[inline]
    fn push(&mut self, bid: u16) {
        let slot = usize::from(self.tail & self.mask);
        let addr = self.mem.as_ptr() as u64 + (usize::from(bid) * self.buf_size) as u64;
        // SAFETY: slot <= mask < count: inside the allocation.
        let e = unsafe { &mut *self.entries.add(slot) };
        e.set_addr(addr);
        e.set_len(self.buf_size as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes queued buffers visible to the kernel.
    #[inline]
    fn publish(&self) {
        // SAFETY: the tail field overlays entry 0's reserved field, a u16 in our
        // allocation; the kernel only reads it. Release orders the entries' writes
        // before the new tail.
        unsafe {
            let tail = BufRingEntry::tail(self.entries).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }

    #[inline]
    fn buf(&mut self, bid: u16) -> Option<&mut [u8]> {
        let start = usize::from(bid) * self.buf_size;
        self.mem.get_mut(start..start + self.buf_size)
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the ring that used it is
        // gone (dropped before us).
        unsafe { dealloc(self.entries.cast(), self.layout) };
    }
}

#[derive(Clone, Copy)]
struct SockState {
    fd: RawFd,
    gen: u32,
    closing: bool,
}

/// A worker's io_uring.
pub struct Uring {
    // Field order matters: the ring goes first, then the memory it used.
    ring: IoUring,
    bufs: BufRing,
    recv_hdr: Box<libc::msghdr>,
    dests: Box<[RawAddr]>,
    socks: Vec<Option<SockState>>,
    wake: Arc<EventFd>,
    wake_buf: Box<u64>,
    cqes: Vec<cqueue::Entry>,
    cap: usize,
    backlog: bool,
    send_errors: u64,
    rearms: u64,
}

impl Uring {
    /// A ring with `entries` submission slots and `buffers` receive buffers of
    /// `buf_size` bytes; at most `cap` packets handled per turn.
    pub fn new(
        entries: u32,
        buffers: u16,
        buf_size: usize,
        cap: usize,
        wake: Arc<EventFd>,
    ) -> io::Result<Self> {
        let ring: IoUring = IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .setup_cqsize(entries * 4)
            .build(entries)?;
        let bufs = BufRing::new(&ring, buffers, buf_size)?;
        // SAFETY: msghdr is plain data; zeroed is a valid empty header.
        let mut hdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        hdr.msg_namelen = SOCKADDR_LEN as libc::socklen_t;
        let mut me = Uring {
            ring,
            bufs,
            recv_hdr: hdr,
            dests: vec![RawAddr::default(); usize::from(buffers)].into_boxed_slice(),
            socks: Vec::new(),
            wake,
            wake_buf: Box::new(0),
            cqes: Vec::with_capacity(64),
            cap: cap.max(1),
            backlog: false,
            send_errors: 0,
            rearms: 0,
        };
        me.arm_wake()?;
        Ok(me)
    }

    fn push(&mut self, e: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every entry we push points at memory owned by `self`
            // (buffers, msghdr, destinations, wake buffer) that outlives the
            // ring, or at nothing.
            if unsafe { self.ring.submission().push(e) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    fn arm_wake(&mut self) -> io::Result<()> {
        let e = opcode::Read::new(
            Fd(self.wake.raw()),
            (&mut *self.wake_buf as *mut u64).cast(),
            8,
        )
        .build()
        .user_data(ud(OP_WAKE, 0, 0));
        self.push(&e)
    }

    fn arm_recv(&mut self, idx: u32, gen: u32, fd: RawFd) -> io::Result<()> {
        let e = opcode::RecvMsgMulti::new(Fd(fd), &*self.recv_hdr, BGID)
            .build()
            .user_data(ud(OP_RECV, gen, idx));
        self.push(&e)
    }

    /// Starts receiving on a socket.
    pub fn add_socket(&mut self, idx: u32, gen: u32, fd: RawFd) -> io::Result<()> {
        let i = idx as usize;
        if self.socks.len() <= i {
            self.socks.resize(i + 1, None);
        }
        if let Some(s) = self.socks.get_mut(i) {
            *s = Some(SockState {
                fd,
                gen: gen & 0xff_ffff,
                closing: false,
            });
        }
        self.arm_recv(idx, gen, fd)
    }

    /// Cancels the socket's receive; the close is confirmed later.
    pub fn remove_socket(&mut self, idx: u32, gen: u32) -> Removal {
        let gen = gen & 0xff_ffff;
        match self.socks.get_mut(idx as usize) {
            Some(Some(s)) if s.gen == gen => s.closing = true,
            _ => return Removal::Done,
        }
        let e = opcode::AsyncCancel::new(ud(OP_RECV, gen, idx))
            .build()
            .user_data(ud(OP_CANCEL, gen, idx));
        match self.push(&e) {
            Ok(()) => Removal::Pending,
            Err(_) => {
                if let Some(s) = self.socks.get_mut(idx as usize) {
                    *s = None;
                }
                Removal::Done
            }
        }
    }

    fn wait(&mut self, deadline: Instant) {
        let want = if self.backlog { 0 } else { 1 };
        let left = deadline.saturating_duration_since(Instant::now());
        let ts = Timespec::new()
            .sec(left.as_secs())
            .nsec(left.subsec_nanos());
        let args = SubmitArgs::new().timespec(&ts);
        // ETIME (timeout), EINTR and EBUSY (completions to reap first) are normal.
        let _ = self.ring.submitter().submit_with_args(want, &args);
    }

    /// One loop turn (see the module doc).
    pub fn turn<H: PacketHandler>(&mut self, h: &mut H, deadline: Instant) {
        self.wait(deadline);
        let now = Instant::now();
        let mut received = 0usize;
        let mut capped = false;
        let errors_before = self.send_errors;
        let rearms_before = self.rearms;
        let mut batch = std::mem::take(&mut self.cqes);
        loop {
            let room = (self.cap - received).min(batch.capacity());
            if room == 0 {
                capped = !self.ring.completion().is_empty();
                break;
            }
            batch.clear();
            batch.extend(self.ring.completion().take(room));
            if batch.is_empty() {
                break;
            }
            for cqe in &batch {
                let (op, gen, idx) = ud_parts(cqe.user_data());
                match op {
                    OP_RECV => {
                        if cqe.result() >= 0 {
                            received += 1;
                        }
                        self.on_recv(h, cqe, gen, idx, now);
                    }
                    OP_SEND => {
                        if cqe.result() < 0 {
                            self.send_errors += 1;
                        }
                        self.bufs.push(idx as u16);
                    }
                    OP_WAKE => {
                        // Commands are drained at the top of the next turn.
                        let _ = self.arm_wake();
                    }
                    _ => {}
                }
            }
        }
        self.cqes = batch;
        self.bufs.publish();
        self.backlog = capped;
        h.on_turn(
            received,
            capped,
            self.send_errors - errors_before,
            self.rearms - rearms_before,
        );
    }

    fn on_recv<H: PacketHandler>(
        &mut self,
        h: &mut H,
        cqe: &cqueue::Entry,
        gen: u32,
        idx: u32,
        now: Instant,
    ) {
        let state = self.socks.get(idx as usize).copied().flatten();
        let live = state.filter(|s| s.gen == gen);
        let flags = cqe.flags();
        if cqe.result() >= 0 {
            if let Some(bid) = cqueue::buffer_select(flags) {
                let sent = match live {
                    Some(s) if !s.closing => {
                        self.forward(h, bid, cqe.result() as usize, s.gen, idx, now)
                    }
                    _ => false,
                };
                if !sent {
                    self.bufs.push(bid);
                }
            }
        }
        if cqueue::more(flags) {
            return;
        }
        // The multishot receive ended: confirm a close, or arm it again.
        match live {
            Some(s) if s.closing => {
                if let Some(slot) = self.socks.get_mut(idx as usize) {
                    *slot = None;
                }
                h.on_socket_closed(idx, gen);
            }
            Some(s) => {
                self.rearms += 1;
                // Buffers used this turn go back before the new receive starts.
                self.bufs.publish();
                if self.arm_recv(idx, gen, s.fd).is_err() {
                    // The ring is broken; the next turn retries through ENOBUFS paths.
                    tracing::warn!(socket = idx, "could not re-arm receive");
                }
            }
            None => {}
        }
    }

    /// Hands one received buffer to the handler; queues the send it asks for.
    /// Returns whether the buffer is now owned by a send.
    #[inline]
    fn forward<H: PacketHandler>(
        &mut self,
        h: &mut H,
        bid: u16,
        len: usize,
        gen: u32,
        idx: u32,
        now: Instant,
    ) -> bool {
        let hdr = &*self.recv_hdr;
        let Some(buf) = self.bufs.buf(bid) else {
            return false;
        };
        let Some(buf) = buf.get_mut(..len) else {
            return false;
        };
        let Ok(out) = RecvMsgOut::parse(buf, hdr) else {
            return false;
        };
        if out.is_payload_truncated() {
            h.on_truncated(idx, gen);
            return false;
        }
        let Some(src) = decode_sockaddr(out.name_data()) else {
            return false;
        };
        let payload_len = out.payload_data().len();
        let start = len - payload_len;
        let Some(payload) = buf.get_mut(start..) else {
            return false;
        };
        let Some((fd, dst)) = h.on_datagram(idx, gen, src, payload, now) else {
            return false;
        };
        let ptr = payload.as_ptr();
        let Some(dest) = self.dests.get_mut(usize::from(bid)) else {
            return false;
        };
        dest.set(dst);
        let e = opcode::Send::new(Fd(fd), ptr, payload_len as u32)
            .dest_addr(dest.as_ptr())
            .dest_addr_len(dest.len)
            .flags(libc::MSG_DONTWAIT)
            .build()
            .user_data(ud(OP_SEND, 0, u32::from(bid)));
        if self.push(&e).is_err() {
            self.send_errors += 1;
            return false;
        }
        true
    }
}
