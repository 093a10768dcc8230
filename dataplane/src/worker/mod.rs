//! The per-core worker: owns its sessions, their sockets, its counters and its
//! packet IO; takes commands from a lock-free queue at the top of every loop
//! turn; reads the clock once per turn.
//!
//! Nothing here is shared with other threads except the command queue, the
//! wake-up eventfd, the event broadcast and the port pools (touched only when a
//! socket closes, never per packet).

mod command;

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_queue::ArrayQueue;
use kordon_proto::v1 as pb;
use slab::Slab;
use socket2::Socket;
use tokio::sync::{broadcast, oneshot};

pub use command::{
    Command, LegSnapshot, NewLeg, NewSession, SessionSnapshot, WorkerCounters, WorkerSnapshot,
};

use crate::io::{Backend, PacketHandler, Removal};
use crate::ports::PortPool;
use crate::session::{LatchEvent, LatchPolicy, Leg, LegId, Session, SockKind, NO_SOCK};
use crate::stats::DropReason;

/// Commands served per turn at most, so packets are never starved by control.
const COMMANDS_PER_TURN: usize = 256;
/// How often timers (inactivity, overload report) are checked.
const TICK: Duration = Duration::from_millis(250);

/// One socket of a leg.
#[derive(Debug)]
struct SockEntry {
    sock: Socket,
    gen: u32,
    session: u32,
    leg: LegId,
    kind: SockKind,
    closing: bool,
    /// The other socket of the pair, to know when the pair's port is free.
    sibling: (u32, u32),
    /// Interface and RTP port of the pair.
    port: (u16, u16),
    /// A delete waiting for this socket to close.
    delete_waiter: Option<u32>,
}

/// A delete answered once its sockets are closed.
#[derive(Debug)]
struct PendingDelete {
    socks_left: usize,
    reply: Option<oneshot::Sender<Option<SessionSnapshot>>>,
    snap: Option<SessionSnapshot>,
}

/// Shared, per interface, per worker: the port pools.
pub type Pools = Arc<Vec<Vec<Mutex<PortPool>>>>;

/// The worker's state apart from its IO.
pub struct Core {
    id: u32,
    sessions: Slab<Session>,
    socks: Slab<SockEntry>,
    deletes: Slab<PendingDelete>,
    next_gen: u32,
    counters: WorkerCounters,
    policy: LatchPolicy,
    events: broadcast::Sender<pb::Event>,
    pools: Pools,
    rng: u64,
    next_tick: Instant,
    capped_at_last_report: u64,
    backend_name: &'static str,
    sockets: SocketSettings,
}

/// What a worker needs to open sockets itself (RTCP after rtcp-mux is
/// turned off).
#[derive(Debug, Clone)]
pub struct SocketSettings {
    /// Bind address per interface index.
    pub binds: Vec<std::net::IpAddr>,
    /// SO_RCVBUF.
    pub rcvbuf: usize,
    /// SO_SNDBUF.
    pub sndbuf: usize,
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Core {
    /// A worker core.
    pub fn new(
        id: u32,
        policy: LatchPolicy,
        events: broadcast::Sender<pb::Event>,
        pools: Pools,
        seed: u64,
        backend_name: &'static str,
        sockets: SocketSettings,
    ) -> Self {
        Core {
            id,
            sessions: Slab::new(),
            socks: Slab::new(),
            deletes: Slab::new(),
            next_gen: 1,
            counters: WorkerCounters::default(),
            policy,
            events,
            pools,
            rng: seed | 1,
            next_tick: Instant::now() + TICK,
            capped_at_last_report: 0,
            backend_name,
            sockets,
        }
    }

    fn next_random(&mut self) -> u32 {
        // xorshift64*: SSRCs need to differ, not to be secret.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }

    fn emit(&self, session_id: &str, kind: pb::event::Kind) {
        // No receiver is fine: nobody is watching.
        let _ = self.events.send(pb::Event {
            unix_ms: unix_ms(SystemTime::now()),
            session_id: session_id.to_string(),
            kind: Some(kind),
        });
    }

    fn add_socket(
        &mut self,
        backend: &mut Backend,
        sock: Socket,
        session: u32,
        leg: LegId,
        kind: SockKind,
        port: (u16, u16),
    ) -> std::io::Result<(u32, u32)> {
        let gen = self.next_gen & 0xff_ffff;
        self.next_gen = self.next_gen.wrapping_add(1).max(1);
        let fd = sock.as_raw_fd();
        let idx = self.socks.insert(SockEntry {
            sock,
            gen,
            session,
            leg,
            kind,
            closing: false,
            sibling: (u32::MAX, 0),
            port,
            delete_waiter: None,
        }) as u32;
        if let Err(e) = backend.add_socket(idx, gen, fd) {
            self.socks.remove(idx as usize);
            return Err(e);
        }
        Ok((idx, gen))
    }

    fn remove_socket(&mut self, backend: &mut Backend, idx: u32) {
        let Some(e) = self.socks.get_mut(idx as usize) else {
            return;
        };
        if e.closing {
            return;
        }
        e.closing = true;
        let (gen, fd) = (e.gen, e.sock.as_raw_fd());
        if backend.remove_socket(idx, gen, fd) == Removal::Done {
            self.finish_close(idx);
        }
    }

    /// Closes a socket whose receive is gone; frees the port pair when its
    /// sibling is closed too.
    fn finish_close(&mut self, idx: u32) {
        if !self.socks.contains(idx as usize) {
            return;
        }
        let e = self.socks.remove(idx as usize);
        let (sib, sib_gen) = e.sibling;
        let sibling_open = self
            .socks
            .get(sib as usize)
            .is_some_and(|s| s.gen == sib_gen);
        drop(e.sock);
        if !sibling_open {
            self.release_port(e.port.0, e.port.1);
        }
        if let Some(w) = e.delete_waiter {
            if let Some(d) = self.deletes.get_mut(w as usize) {
                d.socks_left = d.socks_left.saturating_sub(1);
            }
            self.maybe_answer_delete(w);
        }
    }

    fn create(
        &mut self,
        backend: &mut Backend,
        new: NewSession,
    ) -> Result<SessionSnapshot, String> {
        let key = self.sessions.vacant_key() as u32;
        let NewSession {
            id,
            legs,
            inactivity_timeout,
        } = new;
        let mut built: Vec<Leg> = Vec::with_capacity(2);
        let mut opened: Vec<u32> = Vec::with_capacity(4);
        let mut pending = legs.into_iter().enumerate();
        while let Some((i, nl)) = pending.next() {
            let leg_id = if i == 0 { LegId::A } else { LegId::B };
            match self.open_leg(backend, key, leg_id, nl, &mut opened) {
                Ok(leg) => built.push(leg),
                Err(e) => {
                    self.abort_create(backend, &opened);
                    // Legs not reached yet still hold their port pairs.
                    for (_, rest) in pending {
                        self.release_port(rest.iface, rest.port);
                    }
                    return Err(format!("arming receive: {e}"));
                }
            }
        }
        let (Some(b), Some(a)) = (built.pop(), built.pop()) else {
            return Err("a session needs two legs".into());
        };
        let now = Instant::now();
        let session = Session {
            id,
            legs: [a, b],
            inactivity_timeout,
            created_unix_ms: unix_ms(SystemTime::now()),
            created: now,
            idle_reported: false,
            pending_latch: None,
        };
        let k = self.sessions.insert(session) as u32;
        debug_assert_eq!(k, key);
        Ok(self.snapshot(k, now).expect("just inserted"))
    }

    /// Arms a new leg's sockets. On error the sockets armed so far are in
    /// `opened` (the caller removes them); the leg's port is released by then.
    fn open_leg(
        &mut self,
        backend: &mut Backend,
        key: u32,
        leg_id: LegId,
        nl: NewLeg,
        opened: &mut Vec<u32>,
    ) -> std::io::Result<Leg> {
        let port = (nl.iface, nl.port);
        let rtp = match self.add_socket(backend, nl.rtp, key, leg_id, SockKind::Rtp, port) {
            Ok(r) => r,
            Err(e) => {
                drop(nl.rtcp);
                self.release_port(nl.iface, nl.port);
                return Err(e);
            }
        };
        opened.push(rtp.0);
        let mut rtcp_idx = NO_SOCK;
        if let Some(sock) = nl.rtcp {
            let rtcp = self.add_socket(backend, sock, key, leg_id, SockKind::Rtcp, port)?;
            opened.push(rtcp.0);
            self.pair(rtp, rtcp);
            rtcp_idx = rtcp.0;
        }
        let ssrc = self.next_random();
        Ok(Leg::new(
            nl.iface,
            nl.local_rtp,
            [rtp.0, rtcp_idx],
            nl.params,
            ssrc,
        ))
    }

    /// Links a leg's two sockets, so the port pair is freed after both close.
    fn pair(&mut self, rtp: (u32, u32), rtcp: (u32, u32)) {
        if let Some(s) = self.socks.get_mut(rtp.0 as usize) {
            s.sibling = rtcp;
        }
        if let Some(s) = self.socks.get_mut(rtcp.0 as usize) {
            s.sibling = rtp;
        }
    }

    fn release_port(&self, iface: u16, port: u16) {
        if let Some(pool) = self
            .pools
            .get(usize::from(iface))
            .and_then(|w| w.get(self.id as usize))
        {
            pool.lock().unwrap_or_else(|p| p.into_inner()).release(port);
        }
    }

    /// Opens the RTCP socket of legs that turned rtcp-mux off.
    fn open_missing_rtcp(&mut self, backend: &mut Backend, handle: u32) {
        let Some(s) = self.sessions.get(handle as usize) else {
            return;
        };
        let mut wanted = Vec::new();
        for (i, leg) in s.legs.iter().enumerate() {
            if !leg.params.rtcp_mux && leg.socks[1] == NO_SOCK {
                wanted.push((i, leg.iface, leg.local_rtp.port(), leg.socks[0]));
            }
        }
        for (i, iface, port, rtp_idx) in wanted {
            let Some(ip) = self.sockets.binds.get(usize::from(iface)).copied() else {
                continue;
            };
            let sock = match crate::io::sys::media_socket(
                ip,
                port.wrapping_add(1),
                self.sockets.rcvbuf,
                self.sockets.sndbuf,
            ) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(worker = self.id, port = port.wrapping_add(1), error = %e,
                        "cannot open the RTCP socket after rtcp-mux was turned off");
                    continue;
                }
            };
            let leg_id = if i == 0 { LegId::A } else { LegId::B };
            let Ok(rtcp) =
                self.add_socket(backend, sock, handle, leg_id, SockKind::Rtcp, (iface, port))
            else {
                continue;
            };
            let rtp_gen = self.socks.get(rtp_idx as usize).map_or(0, |e| e.gen);
            self.pair((rtp_idx, rtp_gen), rtcp);
            if let Some(leg) = self
                .sessions
                .get_mut(handle as usize)
                .and_then(|s| s.legs.get_mut(i))
            {
                leg.socks[1] = rtcp.0;
            }
        }
    }

    fn abort_create(&mut self, backend: &mut Backend, opened: &[u32]) {
        for idx in opened {
            self.remove_socket(backend, *idx);
        }
    }

    /// Removes a session. The answer goes out once every socket is closed and
    /// its port pair is back in the pool (with io_uring that is a loop turn or
    /// two later), so a caller may re-request the ports as soon as it has it.
    fn delete(
        &mut self,
        backend: &mut Backend,
        handle: u32,
        id: &str,
        reply: oneshot::Sender<Option<SessionSnapshot>>,
    ) {
        if self.sessions.get(handle as usize).map(|s| s.id.as_str()) != Some(id) {
            let _ = reply.send(None);
            return;
        }
        let snap = self.snapshot(handle, Instant::now());
        let s = self.sessions.remove(handle as usize);
        let socks: Vec<u32> = s
            .legs
            .iter()
            .flat_map(|l| l.socks)
            .filter(|i| *i != NO_SOCK && self.socks.contains(*i as usize))
            .collect();
        let waiter = self.deletes.insert(PendingDelete {
            socks_left: socks.len(),
            reply: Some(reply),
            snap,
        });
        for idx in &socks {
            if let Some(e) = self.socks.get_mut(*idx as usize) {
                e.delete_waiter = Some(waiter as u32);
            }
        }
        for idx in socks {
            self.remove_socket(backend, idx);
        }
        self.maybe_answer_delete(waiter as u32);
    }

    fn maybe_answer_delete(&mut self, waiter: u32) {
        let done = self
            .deletes
            .get(waiter as usize)
            .is_some_and(|d| d.socks_left == 0);
        if done {
            let mut d = self.deletes.remove(waiter as usize);
            if let Some(reply) = d.reply.take() {
                let _ = reply.send(d.snap.take());
            }
        }
    }

    fn snapshot(&self, handle: u32, now: Instant) -> Option<SessionSnapshot> {
        let s = self.sessions.get(handle as usize)?;
        let wall = SystemTime::now();
        let to_unix =
            |t: Option<Instant>| t.map_or(0, |t| unix_ms(wall - now.saturating_duration_since(t)));
        let leg = |l: &Leg| LegSnapshot {
            iface: l.iface,
            local_rtp: l.local_rtp,
            params: l.params.clone(),
            latched: [l.latch[0].addr(), l.latch[1].addr()],
            counters: l.counters,
            last_packet_unix_ms: to_unix(l.counters.last_packet),
        };
        Some(SessionSnapshot {
            id: s.id.clone(),
            worker: self.id,
            handle,
            legs: [leg(&s.legs[0]), leg(&s.legs[1])],
            inactivity_timeout: s.inactivity_timeout,
            created_unix_ms: s.created_unix_ms,
        })
    }

    /// Serves one command. Returns false when the worker must stop.
    fn handle(&mut self, backend: &mut Backend, cmd: Command) -> bool {
        let now = Instant::now();
        match cmd {
            Command::Create(new, reply) => {
                let r = self.create(backend, *new);
                let _ = reply.send(r);
            }
            Command::Update(handle, id, updates, reply) => {
                let ok = self
                    .sessions
                    .get(handle as usize)
                    .is_some_and(|s| s.id == id);
                if ok {
                    let ssrcs = [self.next_random(), self.next_random()];
                    if let Some(s) = self.sessions.get_mut(handle as usize) {
                        for ((leg, u), ssrc) in s.legs.iter_mut().zip(updates.iter()).zip(ssrcs) {
                            if let Some(u) = u {
                                leg.update(u, ssrc);
                            }
                        }
                    }
                }
                if ok {
                    self.open_missing_rtcp(backend, handle);
                }
                let _ = reply.send(if ok { self.snapshot(handle, now) } else { None });
            }
            Command::Delete(handle, id, reply) => self.delete(backend, handle, &id, reply),
            Command::Get(handle, id, reply) => {
                let ok = self
                    .sessions
                    .get(handle as usize)
                    .is_some_and(|s| s.id == id);
                let _ = reply.send(if ok { self.snapshot(handle, now) } else { None });
            }
            Command::List(reply) => {
                let keys: Vec<u32> = self.sessions.iter().map(|(k, _)| k as u32).collect();
                let all = keys
                    .into_iter()
                    .filter_map(|k| self.snapshot(k, now))
                    .collect();
                let _ = reply.send(all);
            }
            Command::Stats(reply) => {
                let _ = reply.send(WorkerSnapshot {
                    worker: self.id,
                    backend: self.backend_name,
                    sessions: self.sessions.len() as u32,
                    counters: self.counters,
                });
            }
            Command::Stop => return false,
        }
        true
    }

    /// Inactivity and overload reporting, a few times a second.
    fn on_tick(&mut self, now: Instant) {
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + TICK;
        let mut idle: Vec<(String, u32)> = Vec::new();
        for (_, s) in self.sessions.iter_mut() {
            if s.idle_reported {
                continue;
            }
            let quiet = now.saturating_duration_since(s.last_activity());
            if quiet >= s.inactivity_timeout {
                s.idle_reported = true;
                idle.push((s.id.clone(), quiet.as_secs() as u32));
            }
        }
        for (id, secs) in idle {
            self.emit(
                &id,
                pb::event::Kind::InactivityTimeout(pb::InactivityTimeout { idle_secs: secs }),
            );
        }
        let capped = self.counters.capped_turns;
        if capped > self.capped_at_last_report {
            let delta = capped - self.capped_at_last_report;
            self.capped_at_last_report = capped;
            tracing::warn!(
                worker = self.id,
                capped_turns = delta,
                "worker overloaded: reading at its per-turn cap"
            );
            self.emit(
                "",
                pb::event::Kind::WorkerOverload(pb::WorkerOverload {
                    worker: self.id,
                    capped_turns: delta,
                }),
            );
        }
    }

    fn report_latch(&self, session: u32, ev: LatchEvent) {
        let Some(s) = self.sessions.get(session as usize) else {
            return;
        };
        tracing::debug!(session = %s.id, leg = ?ev.leg, kind = ?ev.kind, "latched");
        self.emit(
            &s.id,
            pb::event::Kind::Latched(pb::Latched {
                leg: match ev.leg {
                    LegId::A => pb::LegId::A as i32,
                    LegId::B => pb::LegId::B as i32,
                },
                rtcp: ev.kind == SockKind::Rtcp,
                source: Some(pb::Endpoint {
                    ip: ev.source.ip().to_string(),
                    port: u32::from(ev.source.port()),
                }),
            }),
        );
    }
}

impl PacketHandler for Core {
    #[inline]
    fn on_datagram(
        &mut self,
        sock: u32,
        gen: u32,
        src: SocketAddr,
        buf: &mut [u8],
        now: Instant,
    ) -> Option<(RawFd, SocketAddr)> {
        let e = self.socks.get(sock as usize)?;
        if e.gen != gen || e.closing {
            return None;
        }
        let (session, leg, kind) = (e.session, e.leg, e.kind);
        let len = buf.len() as u64;
        self.counters.rx_packets += 1;
        self.counters.rx_bytes += len;
        let s = self.sessions.get_mut(session as usize)?;
        let verdict = s.on_packet(leg, kind, src, buf, now, &self.policy);
        if let Some(ev) = s.pending_latch.take() {
            self.report_latch(session, ev);
        }
        match verdict {
            Ok(fwd) => {
                let out = self.socks.get(fwd.out_sock as usize)?;
                self.counters.tx_packets += 1;
                self.counters.tx_bytes += len;
                Some((out.sock.as_raw_fd(), fwd.dst))
            }
            Err(reason) => {
                self.counters.dropped.add(reason);
                None
            }
        }
    }

    fn socket_fd(&self, sock: u32, gen: u32) -> Option<RawFd> {
        self.socks
            .get(sock as usize)
            .filter(|e| e.gen == gen && !e.closing)
            .map(|e| e.sock.as_raw_fd())
    }

    fn on_truncated(&mut self, sock: u32, gen: u32) {
        self.counters.rx_packets += 1;
        self.counters.dropped.add(DropReason::TooLong);
        let Some(e) = self.socks.get(sock as usize).filter(|e| e.gen == gen) else {
            return;
        };
        let (session, leg) = (e.session, e.leg);
        if let Some(s) = self.sessions.get_mut(session as usize) {
            s.legs[leg as usize]
                .counters
                .dropped
                .add(DropReason::TooLong);
        }
    }

    fn on_socket_closed(&mut self, sock: u32, gen: u32) {
        if self.socks.get(sock as usize).is_some_and(|e| e.gen == gen) {
            self.finish_close(sock);
        }
    }

    fn on_turn(&mut self, _received: usize, capped: bool, send_errors: u64, rearms: u64) {
        if capped {
            self.counters.capped_turns += 1;
        }
        if send_errors > 0 {
            self.counters.send_errors += send_errors;
            // Counted as forwarded above; move them to the drop column.
            self.counters.tx_packets = self.counters.tx_packets.saturating_sub(send_errors);
            for _ in 0..send_errors {
                self.counters.dropped.add(DropReason::SendFailed);
            }
        }
        self.counters.recv_rearms += rearms;
    }
}

/// A running worker's handle, for the control side.
#[derive(Debug)]
pub struct WorkerHandle {
    /// Worker index.
    pub id: u32,
    queue: Arc<ArrayQueue<Command>>,
    wake: Arc<crate::io::sys::EventFd>,
}

impl WorkerHandle {
    /// Queues a command and wakes the worker. Gives the command back when the
    /// queue is full.
    pub fn send(&self, cmd: Command) -> Result<(), Command> {
        self.queue.push(cmd)?;
        self.wake.wake();
        Ok(())
    }
}

/// Starts a worker thread: pins it, builds its IO with `make_backend` on the
/// thread itself (io_uring rings are single-issuer), then loops.
pub fn spawn(
    core: Core,
    cpu: Option<usize>,
    make_backend: impl FnOnce(Arc<crate::io::sys::EventFd>) -> std::io::Result<Backend> + Send + 'static,
) -> std::io::Result<(WorkerHandle, std::thread::JoinHandle<()>)> {
    let queue = Arc::new(ArrayQueue::new(4096));
    let wake = Arc::new(crate::io::sys::EventFd::new()?);
    let handle = WorkerHandle {
        id: core.id,
        queue: queue.clone(),
        wake: wake.clone(),
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
    let name = format!("kordon-w{}", core.id);
    let join = std::thread::Builder::new().name(name).spawn(move || {
        if let Some(cpu) = cpu {
            if let Err(e) = crate::io::sys::pin_to_cpu(cpu) {
                tracing::warn!(worker = core.id, cpu, error = %e, "could not pin worker");
            }
        }
        let mut backend = match make_backend(wake) {
            Ok(b) => {
                let _ = ready_tx.send(Ok(()));
                b
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        run(core, &mut backend, &queue);
    })?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok((handle, join)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::other("worker died during start-up")),
    }
}

fn run(mut core: Core, backend: &mut Backend, queue: &ArrayQueue<Command>) {
    loop {
        for _ in 0..COMMANDS_PER_TURN {
            let Some(cmd) = queue.pop() else { break };
            if !core.handle(backend, cmd) {
                return;
            }
        }
        let deadline = core.next_tick;
        backend.turn(&mut core, deadline);
        core.on_tick(Instant::now());
    }
}
