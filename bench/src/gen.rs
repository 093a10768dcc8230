//! The load generator and sink: paced PCMU RTP both ways over every stream of a
//! relay, received back with kernel timestamps, on one thread.
//!
//! Each stream has two sides, A and B. Each side owns a small pool of loopback
//! sockets (stream `i` uses socket `i % pool`), so thousands of streams cost a
//! handful of descriptors. Every 1 ms tick (a timerfd) the generator sends the
//! packets due by then (`rate × elapsed − sent`) with `sendmmsg`, batching the
//! consecutive packets of one socket; readable sockets are drained with
//! `recvmmsg`. Nothing is allocated per packet.
//!
//! Time line of a run: *prime* (one packet per stream-direction, so relays that
//! latch learn both sides), *warm-up* at full rate, the *measuring window*,
//! *cool-down* (still sending, so packets of the window's end are not followed by
//! silence) and *drain* (receive only). Only packets whose send time falls in the
//! window are counted, sent and received alike; so in-flight packets at either
//! edge are neither loss nor gain.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, Socket, Type};

use crate::hist::Histogram;
use crate::packet::{self, PACKET_LEN};
use crate::procfs::{self, UdpDrops};
use crate::sys::{self, Epoll, RecvBatch, SendBatch, Ticker, MAX_BATCH};

/// Socket buffer size asked for the generator's sockets.
const SOCKET_BUFFER: usize = 8 << 20;
/// Time spent sending one packet per stream-direction before the load.
const PRIME: Duration = Duration::from_millis(300);
/// Sending goes on this long after the window.
const COOL_DOWN: Duration = Duration::from_millis(200);
/// Receive-only time at the end.
const DRAIN: Duration = Duration::from_millis(300);
/// The "dead stream" look-back: the end of the window.
const DEAD_LOOKBACK_NS: u64 = 1_000_000_000;
/// Token of the ticker in the epoll set (sockets use their index).
const TICK_TOKEN: u64 = u64::MAX;
/// Most `recvmmsg` calls on one socket per readiness, so sending is not starved.
const MAX_RECV_ROUNDS: usize = 4;

/// Now, in ns since the epoch (CLOCK_REALTIME, like kernel receive timestamps).
pub fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The generator's local sockets: `per_side` for side A, then `per_side` for B.
pub struct Pools {
    sockets: Vec<UdpSocket>,
    per_side: usize,
}

impl Pools {
    /// Binds `2 × per_side` UDP sockets on 127.0.0.1, on consecutive ports from
    /// `base_port` (0: ephemeral ports), with large buffers and receive timestamps.
    pub fn bind(per_side: usize, base_port: u16) -> Result<Self> {
        let per_side = per_side.max(1);
        let mut sockets = Vec::with_capacity(2 * per_side);
        for i in 0..2 * per_side {
            let port = if base_port == 0 {
                0
            } else {
                base_port + i as u16
            };
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            s.set_nonblocking(true)?;
            sys::set_buffers(s.as_raw_fd(), SOCKET_BUFFER);
            sys::enable_rx_timestamps(s.as_raw_fd()).context("SO_TIMESTAMPNS")?;
            let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
            s.bind(&addr.into())
                .with_context(|| {
                    format!("bind generator socket {addr} (another kordon-loadgen running? see --local-base-port)")
                })?;
            sockets.push(UdpSocket::from(s));
        }
        Ok(Pools { sockets, per_side })
    }

    /// The socket index side `side` (0 = A, 1 = B) of `stream` uses.
    pub fn index(&self, side: usize, stream: usize) -> usize {
        side * self.per_side + stream % self.per_side
    }

    /// Local address of side `side` of `stream`.
    pub fn addr(&self, side: usize, stream: usize) -> SocketAddrV4 {
        match self.sockets[self.index(side, stream)].local_addr() {
            Ok(std::net::SocketAddr::V4(a)) => a,
            _ => SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
        }
    }

    /// Local ports of all sockets.
    pub fn ports(&self) -> HashSet<u16> {
        self.sockets
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .map(|a| a.port())
            .collect()
    }
}

/// What one run sends, to where, and what to watch.
pub struct LoadSpec {
    /// Packets per second, both directions together.
    pub rate_pps: u64,
    /// Warm-up at full rate before the window.
    pub warmup: Duration,
    /// The measuring window.
    pub duration: Duration,
    /// Pacing period.
    pub tick: Duration,
    /// Per stream: `[where side A sends, where side B sends]` (the relay's ports).
    pub dests: Vec<[SocketAddrV4; 2]>,
    /// The relay process, for its CPU time.
    pub relay_pid: Option<u32>,
    /// The CPU the relay is pinned to, for that CPU's busy time.
    pub relay_cpu: Option<usize>,
    /// The CPU the generator is pinned to, for that CPU's busy time.
    pub gen_cpu: Option<usize>,
    /// Never sleep: poll epoll without a timeout (uses a whole core).
    pub busy_poll: bool,
}

/// Counters of one run (window figures only count packets sent in the window).
pub struct Outcome {
    /// Length of the measuring window.
    pub window_ns: u64,
    /// Packets sent in the window.
    pub sent: u64,
    /// Packets received whose send time is in the window.
    pub received: u64,
    /// Packets the kernel refused to send, whole run.
    pub send_errors: u64,
    /// Datagrams received that were not the bench's, or named an unknown stream.
    pub foreign: u64,
    /// Latency (kernel receive time − send time) of the window's packets, ns.
    pub latency: Histogram,
    /// Stream-directions that received nothing sent in the window's last second.
    pub dead: u64,
    /// Stream-directions in total.
    pub stream_dirs: u64,
    /// Relay CPU time (all threads) over the window, ns.
    pub relay_cpu_ns: Option<u64>,
    /// Busy time of the relay's CPU over the window, ns.
    pub relay_core_ns: Option<u64>,
    /// The generator's own CPU time over the window, ns.
    pub gen_cpu_ns: Option<u64>,
    /// Busy time of the generator's CPU over the window, ns.
    pub gen_core_ns: Option<u64>,
    /// UDP receive-buffer drops from warm-up to drain, by owner.
    pub udp_drops: Option<UdpDrops>,
}

#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    relay_cpu: Option<u64>,
    relay_core_idle: Option<u64>,
    gen_cpu: Option<u64>,
    gen_core_idle: Option<u64>,
}

fn sample(spec: &LoadSpec) -> Sample {
    Sample {
        at: Instant::now(),
        relay_cpu: spec.relay_pid.and_then(|p| procfs::process_cpu_ns(p).ok()),
        relay_core_idle: spec.relay_cpu.and_then(|c| procfs::cpu_idle_ns(c).ok()),
        gen_cpu: procfs::process_cpu_ns(std::process::id()).ok(),
        gen_core_idle: spec.gen_cpu.and_then(|c| procfs::cpu_idle_ns(c).ok()),
    }
}

fn delta(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    Some(b?.saturating_sub(a?))
}

/// Decides how many packets are due: `rate × elapsed − already scheduled`.
struct Pacer {
    start: Instant,
    stop: Instant,
    rate: u64,
    scheduled: u64,
    max_burst: u64,
    /// Packets per tick: the least worth sending outside a tick.
    chunk: u64,
}

impl Pacer {
    /// Packets to send now, or 0 when fewer than `min` are due (or sending is over).
    fn due(&mut self, now: Instant, min: u64) -> u64 {
        if now >= self.stop {
            return 0;
        }
        let elapsed = now.duration_since(self.start).as_nanos();
        let target = (elapsed * u128::from(self.rate) / 1_000_000_000) as u64;
        let mut due = target.saturating_sub(self.scheduled);
        if due < min {
            return 0;
        }
        if due > self.max_burst {
            // Behind: forget the backlog beyond one burst; the result will show
            // the generator missed its target.
            self.scheduled = target - self.max_burst;
            due = self.max_burst;
        }
        self.scheduled += due;
        due
    }
}

struct Engine<'a> {
    pools: &'a Pools,
    /// Per stream-direction `k = 2 × stream + dir`: destination and next sequence number.
    dest: Vec<SocketAddrV4>,
    seq: Vec<u64>,
    last_sec: Vec<u32>,
    /// Stream-directions ordered by sending socket, walked round-robin.
    order: Vec<u32>,
    cursor: usize,
    batch: SendBatch,
    batch_sock: usize,
    rbatch: RecvBatch,
    // Window in send time (ns since the epoch).
    w0: u64,
    w1: u64,
    dead_from: u64,
    sent: u64,
    received: u64,
    send_errors: u64,
    foreign: u64,
    latency: Histogram,
}

impl Engine<'_> {
    fn sender(&self, k: usize) -> usize {
        self.pools.index(k & 1, k >> 1)
    }

    fn queue(&mut self, k: usize) {
        let sock = self.sender(k);
        if !self.batch.is_empty() && (sock != self.batch_sock || self.batch.is_full()) {
            self.flush();
        }
        self.batch_sock = sock;
        let seq = self.seq[k];
        self.seq[k] = seq + 1;
        let buf = self.batch.push(self.dest[k], PACKET_LEN);
        packet::write_fields(buf, (k >> 1) as u32, (k & 1) as u8, seq);
    }

    fn flush(&mut self) {
        let n = self.batch.len();
        if n == 0 {
            return;
        }
        let now = realtime_ns();
        for i in 0..n {
            packet::stamp(self.batch.packet_mut(i), now);
        }
        let fd = self.pools.sockets[self.batch_sock].as_raw_fd();
        let (sent, _err) = self.batch.send(fd);
        if now >= self.w0 && now < self.w1 {
            self.sent += sent as u64;
        }
        self.send_errors += (n - sent) as u64;
    }

    fn send_round_robin(&mut self, count: u64) {
        if count == 0 {
            return;
        }
        for _ in 0..count {
            let k = self.order[self.cursor] as usize;
            self.cursor += 1;
            if self.cursor == self.order.len() {
                self.cursor = 0;
            }
            self.queue(k);
        }
        self.flush();
    }

    fn drain(&mut self, sock: usize) -> Result<()> {
        let fd = self.pools.sockets[sock].as_raw_fd();
        let n_dirs = self.dest.len();
        for _ in 0..MAX_RECV_ROUNDS {
            let n = self.rbatch.recv(fd).context("recvmmsg")?;
            for i in 0..n {
                let Some(f) = packet::parse(self.rbatch.packet(i)) else {
                    self.foreign += 1;
                    continue;
                };
                let k = 2 * f.stream as usize + f.dir as usize;
                if f.dir > 1 || k >= n_dirs {
                    self.foreign += 1;
                    continue;
                }
                if f.send_ns >= self.w0 && f.send_ns < self.w1 {
                    let rx = self.rbatch.rx_time_ns(i).unwrap_or_else(realtime_ns);
                    self.received += 1;
                    self.latency.record(rx.saturating_sub(f.send_ns));
                    if f.send_ns >= self.dead_from {
                        self.last_sec[k] += 1;
                    }
                }
            }
            if n < MAX_BATCH {
                break;
            }
        }
        Ok(())
    }
}

/// Runs the load described by `spec` through `pools` and returns its counters.
/// Bounded: returns after prime + warm-up + window + cool-down + drain.
pub fn run(spec: &LoadSpec, pools: &Pools) -> Result<Outcome> {
    let streams = spec.dests.len();
    let n_dirs = 2 * streams;
    let mut dest = Vec::with_capacity(n_dirs);
    for d in &spec.dests {
        dest.push(d[0]);
        dest.push(d[1]);
    }
    let mut order: Vec<u32> = (0..n_dirs as u32).collect();
    order.sort_by_key(|&k| (pools.index(k as usize & 1, k as usize >> 1), k));

    let mut batch = SendBatch::new();
    for i in 0..MAX_BATCH {
        packet::write_template(batch.slot_mut(i));
    }
    let mut e = Engine {
        pools,
        dest,
        seq: vec![0; n_dirs],
        last_sec: vec![0; n_dirs],
        order,
        cursor: 0,
        batch,
        batch_sock: 0,
        rbatch: RecvBatch::new(),
        w0: u64::MAX,
        w1: u64::MAX,
        dead_from: u64::MAX,
        sent: 0,
        received: 0,
        send_errors: 0,
        foreign: 0,
        latency: Histogram::new(),
    };

    let mut epoll = Epoll::new(pools.sockets.len() + 1)?;
    for (i, s) in pools.sockets.iter().enumerate() {
        epoll.add_readable(s.as_raw_fd(), i as u64)?;
    }
    let mut ticker = Ticker::new(spec.tick)?;
    epoll.add_readable(ticker.as_raw_fd(), TICK_TOKEN)?;
    let ports = pools.ports();

    // Prime: one packet per stream-direction, then let latching settle.
    let prime_end = Instant::now() + PRIME;
    e.send_round_robin(n_dirs as u64);
    while Instant::now() < prime_end {
        let n = epoll.wait(5)?;
        for i in 0..n {
            match epoll.token(i) {
                TICK_TOKEN => {
                    ticker.expirations();
                }
                s => e.drain(s as usize)?,
            }
        }
    }

    // Load.
    let relay_inodes = spec
        .relay_pid
        .and_then(|p| procfs::socket_inodes(p).ok())
        .unwrap_or_default();
    let drops_start = procfs::udp_drops(&ports, &relay_inodes).ok();
    let start = Instant::now();
    let start_rt = realtime_ns();
    e.w0 = start_rt + spec.warmup.as_nanos() as u64;
    e.w1 = e.w0 + spec.duration.as_nanos() as u64;
    e.dead_from = e.w1.saturating_sub(DEAD_LOOKBACK_NS).max(e.w0);
    let stop_sending = start + spec.warmup + spec.duration + COOL_DOWN;
    let end = stop_sending + DRAIN;
    let mut pacer = Pacer {
        start,
        stop: stop_sending,
        rate: spec.rate_pps,
        scheduled: 0,
        // Catch up at most 20 ms of backlog at once; send about once per tick.
        max_burst: (spec.rate_pps / 50).max(MAX_BATCH as u64),
        chunk: ((u128::from(spec.rate_pps) * spec.tick.as_nanos() / 1_000_000_000) as u64).max(1),
    };
    let mut s0: Option<Sample> = None;
    let mut s1: Option<Sample> = None;

    let wait_ms = if spec.busy_poll { 0 } else { 2 };
    loop {
        let n = epoll.wait(wait_ms)?;
        for i in 0..n {
            match epoll.token(i) {
                TICK_TOKEN => {
                    ticker.expirations();
                    // On a tick, send whatever is due, however little.
                    e.send_round_robin(pacer.due(Instant::now(), 1));
                }
                s => {
                    e.drain(s as usize)?;
                    // A long receive burst must not starve sending.
                    e.send_round_robin(pacer.due(Instant::now(), pacer.chunk));
                }
            }
        }
        let now_rt = realtime_ns();
        if s0.is_none() && now_rt >= e.w0 {
            s0 = Some(sample(spec));
        }
        if s1.is_none() && now_rt >= e.w1 {
            s1 = Some(sample(spec));
        }
        if Instant::now() >= end {
            break;
        }
    }

    let (a, b) = match (s0, s1) {
        (Some(a), Some(b)) => (a, b),
        _ => anyhow::bail!("the measuring window was not sampled"),
    };
    // Read outside the window: /proc/net/udp lists every socket of the relay too
    // and takes milliseconds to read with thousands of them.
    let drops_end = procfs::udp_drops(&ports, &relay_inodes).ok();
    let udp_drops = match (drops_start, drops_end) {
        (Some(x), Some(y)) => Some(x.since(&y)),
        _ => None,
    };
    // Busy = wall − idle over the same two samples.
    let wall = b.at.duration_since(a.at).as_nanos() as u64;
    let busy = |x: Option<u64>, y: Option<u64>| delta(x, y).map(|idle| wall.saturating_sub(idle));
    let relay_core_ns = busy(a.relay_core_idle, b.relay_core_idle);
    let gen_core_ns = busy(a.gen_core_idle, b.gen_core_idle);
    let dead = e.last_sec.iter().filter(|&&c| c == 0).count() as u64;
    Ok(Outcome {
        window_ns: spec.duration.as_nanos() as u64,
        sent: e.sent,
        received: e.received,
        send_errors: e.send_errors,
        foreign: e.foreign,
        latency: e.latency,
        dead,
        stream_dirs: n_dirs as u64,
        relay_cpu_ns: delta(a.relay_cpu, b.relay_cpu),
        relay_core_ns,
        gen_cpu_ns: delta(a.gen_cpu, b.gen_cpu),
        gen_core_ns,
        udp_drops,
    })
}
