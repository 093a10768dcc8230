//! SIP transports: UDP, TCP and TLS listeners on named interfaces.
//!
//! [`TransportLayer::bind`] opens, per configured interface, a UDP socket and
//! a TCP listener on the same `ip:port` and optionally a TLS listener, then
//! hands back one bounded channel of [`TransportEvent`]s: every inbound
//! message, already framed (one datagram, or one Content-Length frame cut
//! from a stream), plus asynchronous send failures. [`TransportLayer::send`]
//! never blocks: a datagram goes straight to the kernel, stream bytes go to
//! a per-connection bounded write queue, opening a connection first when
//! none exists to the peer.
//!
//! What it does not do: parse messages (beyond finding their end), pick a
//! transport or resolve names (RFC 3263 belongs to the caller), or rewrite
//! Via/Contact. It knows addresses; the caller decides what to put in them
//! using [`TransportLayer::advertised`].
//!
//! Invariants: a stream connection is registered under its [`ConnId`] and
//! its remote address for as long as its tasks run, whether it was accepted
//! or opened by us, so a reply on an outbound connection carries that
//! connection's id; bad input from the network is a counted drop (or, on a
//! stream, a counted close), never a panic; nothing in the receive path
//! waits on the caller except the event channel, which UDP never waits on.

mod framing;
mod stream;
mod tls;
mod udp;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use super::message::MAX_MESSAGE_BYTES;
use super::{ConnId, Peer, Transport};

/// Capacity of the channel carrying [`TransportEvent`]s to the caller.
pub const EVENT_QUEUE_CAPACITY: usize = 4096;

/// Messages a stream connection may hold queued for writing before
/// [`TransportLayer::send`] refuses more.
pub const WRITE_QUEUE_MESSAGES: usize = 256;

/// How long [`TransportLayer::shutdown`] waits for connections to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// One SIP interface: where Kordon listens and what it calls itself there.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InterfaceConfig {
    /// Unique name, used by routes to pick the interface.
    pub name: String,
    /// `ip:port` for UDP and TCP (port 0 picks a free port, the same for
    /// both).
    pub listen: String,
    /// Host written into Via, Contact and SDP by the caller: an IP or a
    /// name; empty means the listen IP, and must not be left empty when
    /// listening on 0.0.0.0 or [::].
    pub advertised: String,
    /// Whether to listen on UDP.
    pub udp: bool,
    /// Whether to listen on (and connect over) TCP.
    pub tcp: bool,
    /// TLS port on the listen IP; 0 turns TLS off on this interface.
    pub tls_port: u16,
}

impl Default for InterfaceConfig {
    fn default() -> Self {
        InterfaceConfig {
            name: "default".to_string(),
            listen: "127.0.0.1:5060".to_string(),
            advertised: String::new(),
            udp: true,
            tcp: true,
            tls_port: 5061,
        }
    }
}

/// TLS material and policy, shared by all interfaces.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain; empty means a self-signed certificate made
    /// once under `<data_dir>/tls/` and reused afterwards.
    pub cert: String,
    /// PEM private key for `cert`.
    pub key: String,
    /// PEM CA bundle that servers we connect to must chain to; empty
    /// means servers are not verified (warned about once).
    pub ca: String,
    /// Limit on a TLS handshake, either direction, in milliseconds.
    pub handshake_timeout_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: String::new(),
            key: String::new(),
            ca: String::new(),
            handshake_timeout_ms: 5000,
        }
    }
}

/// Limits of the transport layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportSettings {
    /// Largest message accepted from the network, headers and body.
    pub max_message_bytes: usize,
    /// A stream connection with no traffic either way for this long is
    /// closed.
    pub idle_timeout: Duration,
    /// Limit on opening an outbound TCP connection.
    pub connect_timeout: Duration,
}

impl Default for TransportSettings {
    fn default() -> Self {
        TransportSettings {
            max_message_bytes: MAX_MESSAGE_BYTES,
            idle_timeout: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(3),
        }
    }
}

/// A message received from the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// Where it came from; `conn` is set for stream transports, and `addr`
    /// is then the connection's remote address.
    pub peer: Peer,
    /// Exactly one framed SIP message, not yet parsed.
    pub bytes: Bytes,
}

/// What the transport layer reports to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportEvent {
    /// A message arrived.
    Message(Inbound),
    /// Bytes accepted by [`TransportLayer::send`] could not be delivered
    /// (connection refused or timed out, handshake failed, write failed, or
    /// the connection closed with them still queued). `peer.conn` names the
    /// connection that failed. The transaction layer treats it as a
    /// transport error (RFC 3261 §17.1.4).
    SendFailed {
        /// The far side.
        peer: Peer,
        /// What went wrong, for logs.
        reason: String,
    },
}

/// Counters, summed since bind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Messages delivered as [`TransportEvent::Message`].
    pub received: u64,
    /// Messages handed to the kernel (UDP) or written to a connection.
    pub sent: u64,
    /// Datagrams over the size limit, and streams closed for a message
    /// over it.
    pub dropped_oversize: u64,
    /// Datagrams that do not start like SIP, and streams closed for bad
    /// framing (no or bad Content-Length).
    pub dropped_malformed_frame: u64,
    /// Keep-alives seen: CRLF-only datagrams and CRLFCRLF pings on streams.
    pub keepalives: u64,
    /// Stream connections currently established.
    pub connections_open: u64,
    /// Sends refused by [`TransportLayer::send`] plus
    /// [`TransportEvent::SendFailed`] events.
    pub send_failed: u64,
    /// Inbound datagrams dropped because the event channel was full.
    pub dropped_event_queue_full: u64,
    /// Outbound datagrams dropped because the socket buffer was full.
    pub dropped_send_would_block: u64,
}

/// Whose fault a transport error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The configuration is unusable; fix it and restart.
    Config,
    /// The caller asked for something this layer does not offer.
    Caller,
    /// The network or the far side refused or is congested.
    Network,
}

/// A transport-layer failure.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A configuration value is unusable.
    #[error("{field}: {reason}")]
    Config {
        /// The setting, e.g. `sip.interfaces[1].listen`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A socket could not be bound.
    #[error("{field} {addr}: {}", io_reason(.source))]
    Bind {
        /// The setting that named the address.
        field: String,
        /// The address.
        addr: SocketAddr,
        /// The system's refusal.
        #[source]
        source: io::Error,
    },
    /// TLS material could not be loaded, made or stored.
    #[error("{field} {path}: {reason}")]
    Tls {
        /// The setting involved, e.g. `sip.tls.cert`.
        field: String,
        /// The file involved.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// No interface has this index.
    #[error("no SIP interface {0}")]
    UnknownInterface(u16),
    /// The transport is not enabled on the interface.
    #[error("{transport} is not enabled on SIP interface {iface}")]
    TransportDisabled {
        /// The interface index.
        iface: u16,
        /// The transport asked for.
        transport: Transport,
    },
    /// The connection's write queue is full: the far side is not reading.
    #[error("write queue to {addr} (connection {conn}) is full")]
    QueueFull {
        /// The connection number.
        conn: u64,
        /// Its remote address.
        addr: SocketAddr,
    },
    /// The kernel refused a datagram.
    #[error("send to {addr}: {source}")]
    Send {
        /// The destination.
        addr: SocketAddr,
        /// The system's refusal.
        #[source]
        source: io::Error,
    },
    /// [`TransportLayer::shutdown`] has run.
    #[error("transport layer is shut down")]
    Closed,
}

impl TransportError {
    /// Whose fault it is.
    pub fn fault(&self) -> Fault {
        match self {
            TransportError::Config { .. }
            | TransportError::Bind { .. }
            | TransportError::Tls { .. } => Fault::Config,
            TransportError::UnknownInterface(_)
            | TransportError::TransportDisabled { .. }
            | TransportError::Closed => Fault::Caller,
            TransportError::QueueFull { .. } | TransportError::Send { .. } => Fault::Network,
        }
    }

    /// Whether the same send may succeed later.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            TransportError::QueueFull { .. } | TransportError::Send { .. }
        )
    }

    fn config(field: impl Into<String>, reason: impl Into<String>) -> TransportError {
        TransportError::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A short reason for the common bind failures, the system's text else.
fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => "address in use".to_string(),
        io::ErrorKind::AddrNotAvailable => "address not available on this host".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    }
}

/// The running transports. Cheap to clone; all clones drive the same
/// sockets.
#[derive(Clone)]
pub struct TransportLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for TransportLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportLayer")
            .field("interfaces", &self.shared.ifaces.len())
            .finish_non_exhaustive()
    }
}

/// One bound interface.
pub(crate) struct Iface {
    name: String,
    /// The advertised host, bracketed when it is an IPv6 literal.
    advertised: String,
    /// Released on shutdown so the port can be bound again.
    udp: RwLock<Option<Arc<std::net::UdpSocket>>>,
    udp_addr: Option<SocketAddr>,
    tcp_addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
    /// The IP outbound connections leave from.
    local_ip: IpAddr,
}

impl Iface {
    pub(crate) fn local_ip(&self) -> IpAddr {
        self.local_ip
    }
}

/// Counters, as atomics.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) received: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) dropped_oversize: AtomicU64,
    pub(crate) dropped_malformed_frame: AtomicU64,
    pub(crate) keepalives: AtomicU64,
    pub(crate) connections_open: AtomicU64,
    pub(crate) send_failed: AtomicU64,
    pub(crate) dropped_event_queue_full: AtomicU64,
    pub(crate) dropped_send_would_block: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What every task of the layer shares.
pub(crate) struct Shared {
    pub(crate) settings: TransportSettings,
    pub(crate) ifaces: Vec<Iface>,
    pub(crate) events: mpsc::Sender<TransportEvent>,
    pub(crate) counters: Counters,
    pub(crate) conns: Mutex<stream::ConnTable>,
    pub(crate) next_conn: AtomicU64,
    pub(crate) tls: Option<tls::TlsContext>,
    /// Set once by shutdown; every task watches it.
    pub(crate) shutdown: watch::Sender<bool>,
    /// Spawns from `send`, which may run outside the runtime's threads.
    pub(crate) runtime: tokio::runtime::Handle,
    /// The reference point for connections' last-activity stamps.
    pub(crate) epoch: Instant,
    /// Listener and UDP receive tasks.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Live connection tasks, and a wake-up when the count drops to zero.
    pub(crate) conn_tasks: AtomicUsize,
    pub(crate) conn_tasks_done: Notify,
    closed: AtomicBool,
}

impl Shared {
    /// The interface at `iface`.
    pub(crate) fn iface(&self, iface: u16) -> Result<&Iface, TransportError> {
        self.ifaces
            .get(usize::from(iface))
            .ok_or(TransportError::UnknownInterface(iface))
    }

    /// A fresh connection number.
    pub(crate) fn new_conn_id(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    /// Whether shutdown has begun.
    pub(crate) fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Completes once shutdown has begun.
    pub(crate) async fn shut_down(&self) {
        raised(&mut self.shutdown.subscribe()).await;
    }

    /// Milliseconds since `epoch`, for activity stamps.
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Reports a failure after `send` accepted the bytes.
    pub(crate) async fn send_failed(&self, peer: Peer, reason: String) {
        bump(&self.counters.send_failed);
        tracing::debug!(transport = %peer.transport, conn = ?peer.conn, %reason, "send failed");
        let event = TransportEvent::SendFailed { peer, reason };
        tokio::select! {
            _ = self.events.send(event) => {}
            _ = self.shut_down() => {}
        }
    }
}

/// Completes once the flag behind `rx` is set (or its sender is gone).
/// The watch guard is dropped here, so callers' futures stay `Send`.
pub(crate) async fn raised(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|set| *set).await;
}

/// Locks a mutex, carrying on if a task panicked while holding it: every
/// critical section here leaves the data consistent at each step.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counts a live connection task for shutdown to wait on.
pub(crate) struct ConnTaskGuard {
    shared: Arc<Shared>,
}

impl ConnTaskGuard {
    pub(crate) fn new(shared: &Arc<Shared>) -> ConnTaskGuard {
        shared.conn_tasks.fetch_add(1, Ordering::AcqRel);
        ConnTaskGuard {
            shared: Arc::clone(shared),
        }
    }
}

impl Drop for ConnTaskGuard {
    fn drop(&mut self) {
        if self.shared.conn_tasks.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.conn_tasks_done.notify_waiters();
        }
    }
}

/// An interface's configuration, checked.
struct Planned {
    name: String,
    listen: SocketAddr,
    advertised: String,
    udp: bool,
    tcp: bool,
    tls_port: u16,
}

/// Checks the interfaces before anything is bound.
fn plan(ifaces: &[InterfaceConfig]) -> Result<Vec<Planned>, TransportError> {
    if ifaces.is_empty() {
        return Err(TransportError::config(
            "sip.interfaces",
            "at least one interface is needed",
        ));
    }
    if ifaces.len() > usize::from(u16::MAX) {
        return Err(TransportError::config(
            "sip.interfaces",
            "too many interfaces",
        ));
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::with_capacity(ifaces.len());
    for (i, c) in ifaces.iter().enumerate() {
        let field = |f: &str| format!("sip.interfaces[{i}].{f}");
        if c.name.is_empty() {
            return Err(TransportError::config(field("name"), "must not be empty"));
        }
        if let Some(first) = names.insert(&c.name, i) {
            return Err(TransportError::config(
                field("name"),
                format!("{:?} is also the name of sip.interfaces[{first}]", c.name),
            ));
        }
        let listen: SocketAddr = c.listen.trim().parse().map_err(|_| {
            TransportError::config(
                field("listen"),
                format!("{:?} is not an ip:port ([v6]:port for IPv6)", c.listen),
            )
        })?;
        if !c.udp && !c.tcp && c.tls_port == 0 {
            return Err(TransportError::config(
                field("udp"),
                "no transport enabled (udp, tcp and tls_port are all off)",
            ));
        }
        let advertised = advertised_host(c.advertised.trim(), listen.ip())
            .map_err(|reason| TransportError::config(field("advertised"), reason))?;
        out.push(Planned {
            name: c.name.clone(),
            listen,
            advertised,
            udp: c.udp,
            tcp: c.tcp,
            tls_port: c.tls_port,
        });
    }
    Ok(out)
}

/// The host to advertise: `configured`, or the listen IP; IPv6 literals
/// come bracketed so `host:port` can be written as is.
fn advertised_host(configured: &str, listen_ip: IpAddr) -> Result<String, String> {
    if configured.is_empty() {
        if listen_ip.is_unspecified() {
            return Err(format!(
                "must be set when listening on {listen_ip} (no address to put in Via)"
            ));
        }
        return Ok(match listen_ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        });
    }
    let bare = configured
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(configured);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        });
    }
    let host_ok = bare
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !host_ok {
        return Err(format!(
            "{configured:?} is neither an IP address nor a host name"
        ));
    }
    Ok(bare.to_ascii_lowercase())
}

/// Tries to bind UDP and TCP on `listen`; with port 0, both get the same
/// port, retrying with fresh ports when TCP finds the UDP one taken.
async fn bind_udp_tcp(
    index: usize,
    p: &Planned,
) -> Result<(Option<udp::UdpPair>, Option<TcpListener>), TransportError> {
    let field = format!("sip.interfaces[{index}].listen");
    let bind_err = |addr: SocketAddr, source: io::Error| TransportError::Bind {
        field: field.clone(),
        addr,
        source,
    };
    const ATTEMPTS: usize = 16;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let udp = if p.udp {
            Some(udp::bind(p.listen).map_err(|e| bind_err(p.listen, e))?)
        } else {
            None
        };
        if !p.tcp {
            return Ok((udp, None));
        }
        let mut tcp_addr = p.listen;
        if let Some(u) = &udp {
            tcp_addr.set_port(
                u.send
                    .local_addr()
                    .map_err(|e| bind_err(p.listen, e))?
                    .port(),
            );
        }
        match stream::bind_listener(tcp_addr) {
            Ok(l) => return Ok((udp, Some(l))),
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse
                    && p.listen.port() == 0
                    && udp.is_some()
                    && attempt < ATTEMPTS =>
            {
                continue
            }
            Err(e) => return Err(bind_err(tcp_addr, e)),
        }
    }
}

impl TransportLayer {
    /// Binds every interface and starts the receive tasks. Fails, naming
    /// the setting and the address, when anything cannot be bound or
    /// loaded; nothing keeps running then.
    pub async fn bind(
        ifaces: &[InterfaceConfig],
        tls: &TlsConfig,
        data_dir: &Path,
        settings: TransportSettings,
    ) -> Result<(TransportLayer, mpsc::Receiver<TransportEvent>), TransportError> {
        if settings.max_message_bytes == 0 {
            return Err(TransportError::config(
                "sip.max_message_bytes",
                "must be above 0",
            ));
        }
        let planned = plan(ifaces)?;

        let mut bound = Vec::with_capacity(planned.len());
        for (i, p) in planned.iter().enumerate() {
            let (udp, tcp) = bind_udp_tcp(i, p).await?;
            let tls_listener = if p.tls_port != 0 {
                let addr = SocketAddr::new(p.listen.ip(), p.tls_port);
                Some(
                    stream::bind_listener(addr).map_err(|source| TransportError::Bind {
                        field: format!("sip.interfaces[{i}].tls_port"),
                        addr,
                        source,
                    })?,
                )
            } else {
                None
            };
            bound.push((udp, tcp, tls_listener));
        }

        let tls_ctx = if planned.iter().any(|p| p.tls_port != 0) {
            let mut sans = vec!["localhost".to_string()];
            for p in planned.iter().filter(|p| p.tls_port != 0) {
                if !p.listen.ip().is_unspecified() {
                    sans.push(p.listen.ip().to_string());
                }
                let host = p.advertised.trim_start_matches('[').trim_end_matches(']');
                sans.push(host.to_string());
            }
            sans.sort();
            sans.dedup();
            Some(tls::TlsContext::new(tls, data_dir, &sans)?)
        } else {
            None
        };

        let mut ifs = Vec::with_capacity(planned.len());
        let mut listeners = Vec::new();
        let mut udp_sockets = Vec::new();
        for (i, (p, (udp, tcp, tls_l))) in planned.into_iter().zip(bound).enumerate() {
            let index = u16::try_from(i).expect("plan() refuses more than u16::MAX interfaces");
            let addr_of = |r: io::Result<SocketAddr>| r.ok();
            let iface = Iface {
                name: p.name,
                advertised: p.advertised,
                udp_addr: udp.as_ref().and_then(|u| addr_of(u.send.local_addr())),
                tcp_addr: tcp.as_ref().and_then(|l| addr_of(l.local_addr())),
                tls_addr: tls_l.as_ref().and_then(|l| addr_of(l.local_addr())),
                udp: RwLock::new(None),
                local_ip: p.listen.ip(),
            };
            if let Some(u) = udp {
                *iface.udp.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(u.send));
                udp_sockets.push((index, Arc::new(u.recv)));
            }
            if let Some(l) = tcp {
                listeners.push((index, Transport::Tcp, l));
            }
            if let Some(l) = tls_l {
                listeners.push((index, Transport::Tls, l));
            }
            ifs.push(iface);
        }

        let (events, rx) = mpsc::channel(EVENT_QUEUE_CAPACITY);
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            settings,
            ifaces: ifs,
            events,
            counters: Counters::default(),
            conns: Mutex::new(stream::ConnTable::default()),
            next_conn: AtomicU64::new(1),
            tls: tls_ctx,
            shutdown,
            runtime: tokio::runtime::Handle::current(),
            epoch: Instant::now(),
            tasks: Mutex::new(Vec::new()),
            conn_tasks: AtomicUsize::new(0),
            conn_tasks_done: Notify::new(),
            closed: AtomicBool::new(false),
        });

        let mut tasks = Vec::new();
        for (index, socket) in udp_sockets {
            tasks.push(tokio::spawn(udp::receive_loop(
                Arc::clone(&shared),
                index,
                socket,
            )));
        }
        for (index, transport, listener) in listeners {
            tasks.push(tokio::spawn(stream::accept_loop(
                Arc::clone(&shared),
                index,
                transport,
                listener,
            )));
        }
        *lock(&shared.tasks) = tasks;
        for (i, f) in shared.ifaces.iter().enumerate() {
            tracing::info!(
                iface = %f.name,
                index = i,
                udp = ?f.udp_addr,
                tcp = ?f.tcp_addr,
                tls = ?f.tls_addr,
                advertised = %f.advertised,
                "SIP interface bound"
            );
        }
        Ok((TransportLayer { shared }, rx))
    }

    /// Sends one message to `peer` without waiting. UDP goes to the
    /// kernel at once (a full socket buffer is a counted drop: the
    /// transaction retransmits). A stream message goes on `peer.conn` if it
    /// is alive, else on any live connection to `peer.addr` on that
    /// interface and transport, else on a new outbound connection opened in
    /// the background; a failure after this returns `Ok` arrives as
    /// [`TransportEvent::SendFailed`].
    pub fn send(&self, peer: &Peer, bytes: Bytes) -> Result<(), TransportError> {
        let result = self.send_inner(peer, bytes);
        if result.is_err() {
            bump(&self.shared.counters.send_failed);
        }
        result
    }

    fn send_inner(&self, peer: &Peer, bytes: Bytes) -> Result<(), TransportError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(TransportError::Closed);
        }
        let iface = self.shared.iface(peer.iface)?;
        let disabled = TransportError::TransportDisabled {
            iface: peer.iface,
            transport: peer.transport,
        };
        match peer.transport {
            Transport::Udp => {
                let socket = iface
                    .udp
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
                    .ok_or(disabled)?;
                udp::send(&self.shared, &socket, peer.addr, &bytes)
            }
            Transport::Tcp if iface.tcp_addr.is_none() => Err(disabled),
            Transport::Tls if iface.tls_addr.is_none() || self.shared.tls.is_none() => {
                Err(disabled)
            }
            Transport::Tcp | Transport::Tls => stream::send(&self.shared, peer, bytes),
        }
    }

    /// The bound address of `transport` on interface `iface` (the real
    /// port when the configuration said 0).
    pub fn local_addr(&self, iface: u16, transport: Transport) -> Option<SocketAddr> {
        let f = self.shared.ifaces.get(usize::from(iface))?;
        match transport {
            Transport::Udp => f.udp_addr,
            Transport::Tcp => f.tcp_addr,
            Transport::Tls => f.tls_addr,
        }
    }

    /// The host and port to put in Via and Contact for `transport` on
    /// `iface`; an IPv6 host comes bracketed.
    pub fn advertised(&self, iface: u16, transport: Transport) -> Option<(String, u16)> {
        let f = self.shared.ifaces.get(usize::from(iface))?;
        let port = self.local_addr(iface, transport)?.port();
        Some((f.advertised.clone(), port))
    }

    /// The index of the interface called `name`.
    pub fn iface_by_name(&self, name: &str) -> Option<u16> {
        let i = self.shared.ifaces.iter().position(|f| f.name == name)?;
        u16::try_from(i).ok()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> TransportStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TransportStats {
            received: get(&c.received),
            sent: get(&c.sent),
            dropped_oversize: get(&c.dropped_oversize),
            dropped_malformed_frame: get(&c.dropped_malformed_frame),
            keepalives: get(&c.keepalives),
            connections_open: get(&c.connections_open),
            send_failed: get(&c.send_failed),
            dropped_event_queue_full: get(&c.dropped_event_queue_full),
            dropped_send_would_block: get(&c.dropped_send_would_block),
        }
    }

    /// Stops listening, closes every connection (waiting up to two
    /// seconds for them) and releases the ports. Later sends fail with
    /// [`TransportError::Closed`]; the event channel stays open but quiet.
    pub async fn shutdown(&self) {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.shared.shutdown.send_replace(true);
        let tasks = std::mem::take(&mut *lock(&self.shared.tasks));
        for t in tasks {
            // A task that panicked is gone either way.
            let _ = t.await;
        }
        for f in &self.shared.ifaces {
            *f.udp.write().unwrap_or_else(PoisonError::into_inner) = None;
        }
        let wait = async {
            loop {
                let done = self.shared.conn_tasks_done.notified();
                tokio::pin!(done);
                done.as_mut().enable();
                if self.shared.conn_tasks.load(Ordering::Acquire) == 0 {
                    break;
                }
                done.await;
            }
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, wait).await.is_err() {
            tracing::warn!(
                left = self.shared.conn_tasks.load(Ordering::Acquire),
                "SIP connections still closing after shutdown grace period"
            );
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::PathBuf;

    /// An interface on 127.0.0.1 with ephemeral ports and no TLS.
    pub(crate) fn iface(name: &str) -> InterfaceConfig {
        InterfaceConfig {
            name: name.to_string(),
            listen: "127.0.0.1:0".to_string(),
            tls_port: 0,
            ..InterfaceConfig::default()
        }
    }

    /// A fresh directory under the system temp dir.
    pub(crate) fn temp_dir(tag: &str) -> PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "kordon-transport-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    /// A layer with the given interfaces and default settings.
    pub(crate) async fn layer(
        ifaces: &[InterfaceConfig],
        settings: TransportSettings,
    ) -> (TransportLayer, mpsc::Receiver<TransportEvent>) {
        // Without TLS nothing is written to the data directory.
        TransportLayer::bind(
            ifaces,
            &TlsConfig::default(),
            &std::env::temp_dir(),
            settings,
        )
        .await
        .expect("bind")
    }

    /// The next event, failing the test after five seconds.
    pub(crate) async fn next_event(rx: &mut mpsc::Receiver<TransportEvent>) -> TransportEvent {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an event within 5 s")
            .expect("channel open")
    }

    /// The next event, which must be a message.
    pub(crate) async fn next_message(rx: &mut mpsc::Receiver<TransportEvent>) -> Inbound {
        match next_event(rx).await {
            TransportEvent::Message(m) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// A small valid request.
    pub(crate) fn options(body: &str) -> Bytes {
        Bytes::from(format!(
            "OPTIONS sip:kordon@127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKtest\r\n\
             From: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:kordon@127.0.0.1>\r\n\
             Call-ID: test-call\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    }

    /// Polls `cond` on the stats until it holds, failing after five seconds.
    pub(crate) async fn until_stats(
        layer: &TransportLayer,
        cond: impl Fn(&TransportStats) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cond(&layer.stats()) {
            assert!(
                Instant::now() < deadline,
                "stats never matched: {:?}",
                layer.stats()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[test]
    fn layer_is_shareable_across_tasks() {
        fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
        assert_send_sync::<TransportLayer>();
    }

    #[test]
    fn config_defaults() {
        let c = InterfaceConfig::default();
        assert_eq!(
            (c.listen.as_str(), c.udp, c.tcp, c.tls_port),
            ("127.0.0.1:5060", true, true, 5061)
        );
        assert_eq!(TlsConfig::default().handshake_timeout_ms, 5000);
        assert_eq!(
            TransportSettings::default().max_message_bytes,
            MAX_MESSAGE_BYTES
        );
    }

    #[test]
    fn advertised_host_rules() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(advertised_host("", lo).unwrap(), "127.0.0.1");
        assert_eq!(
            advertised_host("", "::1".parse().unwrap()).unwrap(),
            "[::1]"
        );
        assert_eq!(advertised_host("2001:db8::1", lo).unwrap(), "[2001:db8::1]");
        assert_eq!(
            advertised_host("SBC.Example.com", lo).unwrap(),
            "sbc.example.com"
        );
        assert!(advertised_host("", "0.0.0.0".parse().unwrap()).is_err());
        assert!(advertised_host("a b", lo).is_err());
    }

    #[tokio::test]
    async fn bind_failure_names_the_interface_and_address() {
        let (a, _rx) = layer(&[iface("a")], TransportSettings::default()).await;
        let taken = a.local_addr(0, Transport::Udp).unwrap();
        let mut second = iface("b");
        second.listen = taken.to_string();
        let err = TransportLayer::bind(
            &[iface("first"), second],
            &TlsConfig::default(),
            &std::env::temp_dir(),
            TransportSettings::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("sip.interfaces[1].listen {taken}: address in use")
        );
        assert_eq!(err.fault(), Fault::Config);
    }

    #[tokio::test]
    async fn refuses_bad_interface_lists() {
        let dir = std::env::temp_dir();
        let s = TransportSettings::default;
        let t = TlsConfig::default();
        let mut bad_listen = iface("x");
        bad_listen.listen = "localhost:5060".to_string();
        for (ifaces, field) in [
            (vec![], "sip.interfaces"),
            (vec![iface("x"), iface("x")], "sip.interfaces[1].name"),
            (vec![bad_listen], "sip.interfaces[0].listen"),
        ] {
            match TransportLayer::bind(&ifaces, &t, &dir, s()).await {
                Err(TransportError::Config { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected a config error on {field}, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn same_port_for_udp_and_tcp_and_lookups() {
        let (l, _rx) = layer(
            &[iface("core"), iface("access")],
            TransportSettings::default(),
        )
        .await;
        let udp = l.local_addr(1, Transport::Udp).unwrap();
        let tcp = l.local_addr(1, Transport::Tcp).unwrap();
        assert_eq!(udp, tcp);
        assert_ne!(udp.port(), 0);
        assert_eq!(l.local_addr(1, Transport::Tls), None);
        assert_eq!(l.iface_by_name("access"), Some(1));
        assert_eq!(l.iface_by_name("nope"), None);
        assert_eq!(
            l.advertised(1, Transport::Tcp),
            Some(("127.0.0.1".to_string(), tcp.port()))
        );
        let peer = Peer {
            transport: Transport::Tls,
            addr: udp,
            iface: 0,
            conn: None,
        };
        assert!(matches!(
            l.send(&peer, options("")),
            Err(TransportError::TransportDisabled { .. })
        ));
        assert!(matches!(
            l.send(&Peer { iface: 9, ..peer }, options("")),
            Err(TransportError::UnknownInterface(9))
        ));
        l.shutdown().await;
        assert!(matches!(
            l.send(
                &Peer {
                    transport: Transport::Udp,
                    ..peer
                },
                options("")
            ),
            Err(TransportError::Closed)
        ));
        // The ports are free again.
        let mut again = iface("core");
        again.listen = udp.to_string();
        let (l2, _rx2) = layer(&[again], TransportSettings::default()).await;
        l2.shutdown().await;
    }
}
