//! Commands a worker serves, and the snapshots it answers with.

use std::net::SocketAddr;
use std::time::Duration;

use socket2::Socket;
use tokio::sync::oneshot;

use crate::session::{LegCounters, LegParams, LegUpdate};
use crate::stats::DropCounts;

/// A leg ready to be served: its bound sockets and what the control plane said.
#[derive(Debug)]
pub struct NewLeg {
    /// Interface index.
    pub iface: u16,
    /// The RTP (even) port; RTCP is the next one.
    pub port: u16,
    /// Advertised RTP address.
    pub local_rtp: SocketAddr,
    /// Bound RTP socket.
    pub rtp: Socket,
    /// Bound RTCP socket; none with rtcp-mux.
    pub rtcp: Option<Socket>,
    /// Peer description.
    pub params: LegParams,
}

/// A session ready to be served.
#[derive(Debug)]
pub struct NewSession {
    /// The control plane's id.
    pub id: String,
    /// Legs A and B.
    pub legs: [NewLeg; 2],
    /// Inactivity timeout.
    pub inactivity_timeout: Duration,
}

/// Worker-wide counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerCounters {
    /// Datagrams received.
    pub rx_packets: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Datagrams forwarded.
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Drops by reason.
    pub dropped: DropCounts,
    /// Loop turns that stopped at the per-turn cap.
    pub capped_turns: u64,
    /// Sends the kernel refused.
    pub send_errors: u64,
    /// Receives armed again after they stopped.
    pub recv_rearms: u64,
}

impl WorkerCounters {
    /// Adds another worker's counters.
    pub fn merge(&mut self, o: &WorkerCounters) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.dropped.merge(&o.dropped);
        self.capped_turns += o.capped_turns;
        self.send_errors += o.send_errors;
        self.recv_rearms += o.recv_rearms;
    }
}

/// A leg as seen from outside.
#[derive(Clone, Debug)]
pub struct LegSnapshot {
    /// Interface index.
    pub iface: u16,
    /// Advertised RTP address.
    pub local_rtp: SocketAddr,
    /// Peer description.
    pub params: LegParams,
    /// Latched [RTP, RTCP] sources.
    pub latched: [Option<SocketAddr>; 2],
    /// Counters.
    pub counters: LegCounters,
    /// Last accepted packet, ms since the epoch (0 = never).
    pub last_packet_unix_ms: i64,
}

/// A session as seen from outside.
#[derive(Clone, Debug)]
pub struct SessionSnapshot {
    /// The control plane's id.
    pub id: String,
    /// Worker index.
    pub worker: u32,
    /// Slab handle within the worker.
    pub handle: u32,
    /// Legs A and B.
    pub legs: [LegSnapshot; 2],
    /// Inactivity timeout.
    pub inactivity_timeout: Duration,
    /// Creation, ms since the epoch.
    pub created_unix_ms: i64,
}

/// A worker's counters.
#[derive(Clone, Debug)]
pub struct WorkerSnapshot {
    /// Worker index.
    pub worker: u32,
    /// IO backend name.
    pub backend: &'static str,
    /// Sessions served.
    pub sessions: u32,
    /// Counters.
    pub counters: WorkerCounters,
}

/// What a worker can be asked.
#[derive(Debug)]
pub enum Command {
    /// Serve a new session.
    Create(
        Box<NewSession>,
        oneshot::Sender<Result<SessionSnapshot, String>>,
    ),
    /// Change legs (handle, session id, [A, B] updates).
    Update(
        u32,
        String,
        Box<[Option<LegUpdate>; 2]>,
        oneshot::Sender<Option<SessionSnapshot>>,
    ),
    /// Remove a session; answers its final snapshot.
    Delete(u32, String, oneshot::Sender<Option<SessionSnapshot>>),
    /// One session's snapshot.
    Get(u32, String, oneshot::Sender<Option<SessionSnapshot>>),
    /// All sessions' snapshots.
    List(oneshot::Sender<Vec<SessionSnapshot>>),
    /// Worker counters.
    Stats(oneshot::Sender<WorkerSnapshot>),
    /// End the worker loop.
    Stop,
}
