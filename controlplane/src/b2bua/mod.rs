//! The B2BUA: every call is two dialogs (caller side A, callee side B) and a
//! media anchor in the data plane, with nothing of one side visible to the
//! other.
//!
//! Shape: the SIP transaction layer is sans-IO and sits in [`endpoint`]
//! behind one lock with a driver task; each call is a task ([`call`]) that
//! receives its dialogs' requests and responses over a channel, drives the
//! data plane over gRPC and writes one CDR when it ends. Time in call tasks
//! is tokio's clock, so tests can pause and advance it.

mod call;
pub mod config;
mod endpoint;
mod media;
mod trunks;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng as _;
use tokio::sync::broadcast;

use crate::cdr::{CdrConfig, CdrHandle, CdrWriter};
use crate::media::MediaClient;
use crate::registrar::Registrar;
use crate::routing::{Admission, ClassOfService, RateLimiter, RouteTable};
use crate::sip::dialog::LocalAddr;
use crate::sip::transport::{TransportLayer, TransportSettings};
use crate::sip::txn::TxnLayer;
use crate::sip::Transport;

pub use config::SipConfig;
use endpoint::{Dispatch, Endpoint};
use trunks::Trunks;

/// Methods Kordon accepts (the Allow header).
pub(crate) const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK, UPDATE, INFO, REGISTER";

/// A random token of `n` characters from `[a-z0-9]` (tags, Call-IDs).
pub(crate) fn random_token(n: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| {
            let i = rng.random_range(0..ALPHABET.len());
            char::from(ALPHABET.get(i).copied().unwrap_or(b'x'))
        })
        .collect()
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A call event, for the log and for subscribers (API, observability).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEvent {
    /// Kordon's call id ("" for trunk events).
    pub call_id: String,
    /// The correlation id of the call.
    pub correlation_id: String,
    /// What happened.
    pub kind: EventKind,
}

/// What happened to a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// An INVITE was accepted for processing.
    Trying {
        /// Caller number as received.
        from: String,
        /// Called number as received.
        to: String,
    },
    /// The callee is ringing (18x).
    Ringing,
    /// The callee answered.
    Answered,
    /// The call ended.
    Ended {
        /// SIP status of the outcome.
        status: u16,
        /// Why.
        cause: String,
    },
    /// The data plane refused or failed a request for this call.
    MediaFailure {
        /// The error.
        reason: String,
    },
    /// A trunk answered OPTIONS again.
    TrunkUp {
        /// Its name.
        trunk: String,
    },
    /// A trunk stopped answering OPTIONS.
    TrunkDown {
        /// Its name.
        trunk: String,
    },
}

/// Counters of the service.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) calls: AtomicU64,
    pub(crate) active: AtomicU64,
    pub(crate) answered: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) media_failures: AtomicU64,
    pub(crate) cdr_dropped: AtomicU64,
    pub(crate) verify_released: AtomicU64,
}

/// A snapshot of the service's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SipStats {
    /// INVITEs that became calls.
    pub calls: u64,
    /// Calls in progress.
    pub active_calls: u64,
    /// Calls answered.
    pub answered: u64,
    /// INVITEs refused by the per-source rate limit.
    pub rate_limited: u64,
    /// Data plane failures seen by calls.
    pub media_failures: u64,
    /// Messages that could not be parsed.
    pub unparseable: u64,
    /// Requests answered 400.
    pub bad_requests: u64,
    /// Registered contacts.
    pub registrations: u64,
}

/// One SIP interface at run time.
#[derive(Debug, Clone)]
pub(crate) struct Iface {
    pub(crate) media_interface: String,
}

/// Everything calls share.
pub(crate) struct Shared {
    pub(crate) cfg: SipConfig,
    pub(crate) ep: Arc<Endpoint>,
    pub(crate) media: MediaClient,
    pub(crate) registrar: Mutex<Registrar>,
    pub(crate) routes: RouteTable,
    pub(crate) cos: HashMap<String, ClassOfService>,
    pub(crate) trunks: Trunks,
    pub(crate) admission: Mutex<Admission>,
    pub(crate) limiter: Mutex<RateLimiter>,
    pub(crate) cdr: Option<CdrWriter>,
    pub(crate) events: broadcast::Sender<CallEvent>,
    pub(crate) ifaces: Vec<Iface>,
    pub(crate) counters: Counters,
    pub(crate) stopping: AtomicBool,
    pub(crate) calls_done: tokio::sync::Notify,
    /// Flips to true when the service stops: calls end themselves.
    pub(crate) shutdown: tokio::sync::watch::Sender<bool>,
    /// The call verification node, when on.
    pub(crate) verify: Option<Arc<crate::verify::Node>>,
}

impl Shared {
    /// How Kordon names itself on interface `iface` over `transport`.
    pub(crate) fn local_addr(&self, iface: u16, transport: Transport) -> Option<LocalAddr> {
        let (host, port) = self.ep.transport().advertised(iface, transport)?;
        Some(LocalAddr {
            host,
            port,
            transport,
        })
    }

    pub(crate) fn lock<'a, T>(m: &'a Mutex<T>) -> std::sync::MutexGuard<'a, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dispatch(self: &Arc<Self>, d: Dispatch) {
        match d {
            Dispatch::NewInvite {
                txn,
                request,
                peer,
                tx,
                rx,
            } => {
                if self.stopping.load(Ordering::Relaxed) {
                    self.ep.with(|g| {
                        g.forget(&[txn], &[]);
                        g.reply(txn, 503, Some("Service Unavailable - shutting down"));
                    });
                    return;
                }
                tokio::spawn(call::run(self.clone(), txn, request, peer, tx, rx));
            }
            Dispatch::Register { txn, request, peer } => {
                let resp = Self::lock(&self.registrar).handle_register(&request, peer, unix_now());
                self.ep.with(|g| g.respond(txn, resp));
            }
        }
    }
}

fn render_metrics(sh: &Shared) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(2048);
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        crate::metrics::write(&mut out, &format!("kordon_sip_{name}"), kind, help, value);
    };
    let c = &sh.counters;
    let ep = sh.ep.with(|g| g.stats).0;
    let t = sh.ep.transport().stats();
    metric(
        "calls_total",
        "counter",
        "INVITEs that became calls",
        c.calls.load(Ordering::Relaxed),
    );
    metric(
        "calls_active",
        "gauge",
        "calls in progress",
        c.active.load(Ordering::Relaxed),
    );
    metric(
        "calls_answered_total",
        "counter",
        "calls answered",
        c.answered.load(Ordering::Relaxed),
    );
    metric(
        "rate_limited_total",
        "counter",
        "INVITEs refused by the per-source rate limit",
        c.rate_limited.load(Ordering::Relaxed),
    );
    metric(
        "media_failures_total",
        "counter",
        "data plane failures seen by calls",
        c.media_failures.load(Ordering::Relaxed),
    );
    metric(
        "messages_received_total",
        "counter",
        "SIP messages parsed",
        ep.received,
    );
    metric(
        "messages_unparseable_total",
        "counter",
        "SIP messages dropped as unparseable",
        ep.unparseable,
    );
    metric(
        "bad_requests_total",
        "counter",
        "requests answered 400",
        ep.bad_requests,
    );
    metric(
        "no_dialog_total",
        "counter",
        "in-dialog requests answered 481",
        ep.no_dialog,
    );
    metric(
        "registrations",
        "gauge",
        "registered contacts",
        Shared::lock(&sh.registrar).binding_count() as u64,
    );
    metric("transport_sent_total", "counter", "messages sent", t.sent);
    metric(
        "transport_dropped_oversize_total",
        "counter",
        "messages over the size limit",
        t.dropped_oversize,
    );
    metric(
        "transport_dropped_malformed_total",
        "counter",
        "datagrams or streams with bad framing",
        t.dropped_malformed_frame,
    );
    metric(
        "transport_keepalives_total",
        "counter",
        "CRLF keep-alives",
        t.keepalives,
    );
    metric(
        "transport_connections",
        "gauge",
        "open TCP/TLS connections",
        t.connections_open,
    );
    metric(
        "transport_send_failed_total",
        "counter",
        "sends that failed",
        t.send_failed,
    );
    metric(
        "verify_released_total",
        "counter",
        "calls from interconnects released by call verification",
        sh.counters.verify_released.load(Ordering::Relaxed),
    );
    for tr in &sh.trunks.list {
        let _ = writeln!(
            out,
            "kordon_sip_trunk_up{{trunk=\"{}\"}} {}",
            tr.cfg.name,
            u8::from(tr.is_up())
        );
    }
    if let Some(w) = &sh.cdr {
        let s = w.stats();
        for (name, help, v) in [
            (
                "kordon_cdr_written_total",
                "call records written",
                s.written,
            ),
            (
                "kordon_cdr_failed_total",
                "call records lost to database errors",
                s.failed,
            ),
            (
                "kordon_cdr_dropped_total",
                "call records refused by a full queue",
                s.dropped_full,
            ),
        ] {
            crate::metrics::write(&mut out, name, "counter", help, v);
        }
    }
    out
}

/// Why the SIP service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting cannot be used; the key is named.
    #[error("{0}")]
    Config(String),
    /// A listener could not be bound.
    #[error("{0}")]
    Transport(String),
    /// The CDR database could not be opened.
    #[error("CDR store: {0}")]
    Cdr(String),
}

/// The running SIP service.
pub struct SipService {
    shared: Arc<Shared>,
    cdr: Option<CdrHandle>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SipService {
    /// Binds the interfaces and starts serving.
    pub async fn start(
        cfg: SipConfig,
        cdr_cfg: &CdrConfig,
        data_dir: &Path,
        media: MediaClient,
        verify: Option<Arc<crate::verify::Node>>,
    ) -> Result<SipService, StartError> {
        let sip_ifaces: Vec<_> = cfg.interfaces.iter().map(|i| i.sip.clone()).collect();
        let settings = TransportSettings {
            max_message_bytes: cfg.max_message_bytes,
            ..TransportSettings::default()
        };
        let (transport, rx) = TransportLayer::bind(&sip_ifaces, &cfg.tls, data_dir, settings)
            .await
            .map_err(|e| StartError::Transport(e.to_string()))?;
        let iface_of = |name: &str| transport.iface_by_name(name);
        let trunks = Trunks::build(&cfg.trunks, iface_of).map_err(StartError::Config)?;
        let trunk_names: Vec<&str> = cfg.trunks.iter().map(|t| t.name.as_str()).collect();
        let routes = RouteTable::build(&cfg.routes, &trunk_names)
            .map_err(|m| StartError::Config(format!("sip.routes: {m}")))?;
        let mut cos = HashMap::new();
        for (i, c) in cfg.cos.iter().enumerate() {
            let compiled = ClassOfService::compile(c)
                .map_err(|m| StartError::Config(format!("sip.cos[{i}]: {m}")))?;
            cos.insert(c.name.clone(), compiled);
        }
        let registrar = Registrar::new(cfg.registrar.clone(), cfg.users.clone(), &mut rand::rng())
            .map_err(|m| StartError::Config(format!("sip.registrar/users: {m}")))?;
        let admission = Admission::new(cfg.trunks.iter().map(|t| (t.name.clone(), t.max_calls)));
        let limiter = RateLimiter::new(cfg.invite_rate_per_source, cfg.invite_burst, 65_536);
        let (cdr, cdr_handle) = if cdr_cfg.enabled {
            let (w, h) =
                crate::cdr::spawn(cdr_cfg, data_dir).map_err(|e| StartError::Cdr(e.to_string()))?;
            (Some(w), Some(h))
        } else {
            (None, None)
        };
        let mut own = Vec::new();
        for (i, _) in cfg.interfaces.iter().enumerate() {
            let i = u16::try_from(i).unwrap_or(u16::MAX);
            for t in [Transport::Udp, Transport::Tcp, Transport::Tls] {
                if let Some((host, port)) = transport.advertised(i, t) {
                    own.push(format!("{host}:{port}"));
                }
                if let Some(a) = transport.local_addr(i, t) {
                    own.push(a.to_string());
                }
            }
        }
        let txn = TxnLayer::new(
            cfg.txn_timers(),
            <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng(),
        );
        let ep = Arc::new(Endpoint::new(txn, transport, own, &cfg.user_agent));
        let (events, _) = broadcast::channel(4096);
        let ifaces = cfg
            .interfaces
            .iter()
            .map(|i| Iface {
                media_interface: i.media_interface.clone(),
            })
            .collect();
        let shared = Arc::new(Shared {
            cfg,
            ep: ep.clone(),
            media,
            registrar: Mutex::new(registrar),
            routes,
            cos,
            trunks,
            admission: Mutex::new(admission),
            limiter: Mutex::new(limiter),
            cdr,
            events,
            ifaces,
            counters: Counters::default(),
            stopping: AtomicBool::new(false),
            calls_done: tokio::sync::Notify::new(),
            shutdown: tokio::sync::watch::Sender::new(false),
            verify,
        });
        let mut tasks = Vec::new();
        let sh = shared.clone();
        tasks.push(tokio::spawn(ep.drive(rx, move |d| sh.dispatch(d))));
        for (i, t) in shared.trunks.list.iter().enumerate() {
            if t.cfg.options_interval_s > 0 {
                tasks.push(tokio::spawn(trunks::probe(shared.clone(), i)));
            }
        }
        let sh = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tick.tick().await;
                Shared::lock(&sh.registrar).expire(unix_now());
            }
        }));
        for (i, iface) in shared.cfg.interfaces.iter().enumerate() {
            let i = u16::try_from(i).unwrap_or(u16::MAX);
            for t in [Transport::Udp, Transport::Tcp, Transport::Tls] {
                if let Some(a) = shared.ep.transport().local_addr(i, t) {
                    tracing::info!(interface = %iface.sip.name, transport = %t, addr = %a, "SIP listening");
                }
            }
        }
        Ok(SipService {
            shared,
            cdr: cdr_handle,
            tasks,
        })
    }

    /// Subscribes to call events.
    pub fn events(&self) -> broadcast::Receiver<CallEvent> {
        self.shared.events.subscribe()
    }

    /// The bound address of interface `iface` for `transport`.
    pub fn local_addr(&self, iface: u16, transport: Transport) -> Option<SocketAddr> {
        self.shared.ep.transport().local_addr(iface, transport)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SipStats {
        let c = &self.shared.counters;
        let ep = self.shared.ep.with(|g| g.stats).0;
        SipStats {
            calls: c.calls.load(Ordering::Relaxed),
            active_calls: c.active.load(Ordering::Relaxed),
            answered: c.answered.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
            media_failures: c.media_failures.load(Ordering::Relaxed),
            unparseable: ep.unparseable,
            bad_requests: ep.bad_requests,
            registrations: Shared::lock(&self.shared.registrar).binding_count() as u64,
        }
    }

    /// A renderer of the SIP, transport and CDR counters as Prometheus text,
    /// for the process's metrics endpoint.
    pub fn metrics(&self) -> impl Fn() -> String + Send + Sync + 'static {
        let sh = self.shared.clone();
        move || render_metrics(&sh)
    }

    /// Stops: new INVITEs get 503, calls in progress are ended (BYE), the
    /// CDR queue is drained to disk.
    pub async fn shutdown(self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        self.shared.shutdown.send_replace(true);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.shared.counters.active.load(Ordering::Relaxed) > 0 {
            tokio::select! {
                () = self.shared.calls_done.notified() => {}
                () = tokio::time::sleep_until(deadline) => break,
                () = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
            }
        }
        for t in &self.tasks {
            t.abort();
        }
        if let Some(h) = self.cdr {
            let stats = h.shutdown().await;
            tracing::info!(?stats, "CDR writer drained");
        }
        self.shared.ep.transport().shutdown().await;
    }
}
