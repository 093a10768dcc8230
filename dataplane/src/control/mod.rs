//! The control side of the data plane: starts the workers, keeps the session
//! directory (session id → worker and handle), allocates ports and binds
//! sockets off the packet path, and serves the gRPC API.
//!
//! Worker state is only ever reached through commands; the directory here is
//! the one lock, and it is never taken by a worker.

mod convert;
mod service;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kordon_proto::v1 as pb;
use tokio::sync::{broadcast, oneshot};
use tonic::Status;

pub use service::Service;

use crate::config::{BackendChoice, DataplaneConfig, LatchModeConfig};
use crate::io::{self, Backend, BackendKind};
use crate::ports::{PortError, PortPool};
use crate::session::{LatchMode, LatchPolicy};
use crate::worker::{self, Command, Core, NewLeg, NewSession, Pools, WorkerHandle, WorkerSnapshot};

/// A media interface as the control side knows it.
#[derive(Debug, Clone)]
pub struct Iface {
    /// Configured name.
    pub name: String,
    /// Bind address.
    pub bind: IpAddr,
    /// Advertised address.
    pub advertised: IpAddr,
    /// Range start.
    pub port_min: u16,
    /// Range end (inclusive).
    pub port_max: u16,
}

#[derive(Debug)]
enum Entry {
    /// A create is on its way to a worker.
    Pending,
    Ready(Box<Ready>),
}

/// What the directory keeps per session: enough to route commands and to
/// answer a retried create with the first answer, and little else (the
/// request is kept encoded: a few hundred bytes instead of two proto trees).
#[derive(Debug)]
struct Ready {
    worker: u32,
    handle: u32,
    ifaces: [u16; 2],
    ports: [u16; 2],
    created_unix_ms: i64,
    request: Box<[u8]>,
}

/// Why the data plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A worker thread or its IO could not be set up.
    #[error("worker {worker}: {source}")]
    Worker {
        /// Which worker.
        worker: usize,
        /// What failed.
        source: std::io::Error,
    },
}

/// A running data plane.
#[derive(Debug)]
pub struct Dataplane {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    workers: Vec<WorkerHandle>,
    ifaces: Vec<Iface>,
    pools: Pools,
    directory: Mutex<HashMap<String, Entry>>,
    events: broadcast::Sender<pb::Event>,
    rules: convert::Rules,
    rcvbuf: usize,
    sndbuf: usize,
    next_worker: AtomicUsize,
    backend: BackendKind,
    joins: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// Picks the IO backend: io_uring unless configured otherwise or refused by the
/// kernel, in which case the reason is logged once.
pub fn choose_backend(choice: BackendChoice) -> BackendKind {
    match choice {
        BackendChoice::Mmsg => BackendKind::Mmsg,
        BackendChoice::Auto | BackendChoice::IoUring => match io::uring::probe() {
            Ok(()) => BackendKind::Uring,
            Err(e) => {
                let why = match e.raw_os_error() {
                    Some(libc::ENOSYS) => "the kernel has no io_uring (ENOSYS)",
                    Some(libc::EPERM) => {
                        "io_uring is not permitted (EPERM: kernel.io_uring_disabled or seccomp)"
                    }
                    _ => "io_uring set-up failed",
                };
                tracing::warn!(error = %e, "{why}; falling back to recvmmsg/sendmmsg");
                BackendKind::Mmsg
            }
        },
    }
}

impl Dataplane {
    /// Starts the workers described by `cfg` (already validated).
    pub fn start(cfg: &DataplaneConfig) -> Result<Self, StartError> {
        let n = cfg.worker_count();
        let backend = choose_backend(cfg.backend);
        match io::sys::raise_nofile(cfg.fd_budget()) {
            Ok(lim) if lim >= cfg.fd_budget() => {
                tracing::info!(nofile = lim, "file descriptor limit fits the port ranges")
            }
            Ok(lim) => tracing::warn!(
                nofile = lim,
                wanted = cfg.fd_budget(),
                "file descriptor limit is below what the port ranges can use"
            ),
            Err(e) => tracing::warn!(error = %e, "could not raise the file descriptor limit"),
        }
        let ifaces: Vec<Iface> = cfg
            .interfaces
            .iter()
            .map(|(name, i)| Iface {
                name: name.clone(),
                bind: i.bind,
                advertised: i.advertised(),
                port_min: i.port_min,
                port_max: i.port_max,
            })
            .collect();
        let pools: Pools = Arc::new(
            ifaces
                .iter()
                .map(|i| {
                    (0..n as u32)
                        .map(|w| Mutex::new(PortPool::new(i.port_min, i.port_max, n as u32, w)))
                        .collect()
                })
                .collect(),
        );
        let (events, _) = broadcast::channel(4096);
        let policy = LatchPolicy {
            relatch_idle: (cfg.relatch_idle_ms > 0)
                .then(|| Duration::from_millis(cfg.relatch_idle_ms)),
        };
        let mut workers = Vec::with_capacity(n);
        let mut joins = Vec::with_capacity(n);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9)
            ^ u64::from(std::process::id());
        for w in 0..n {
            let cpu = cfg
                .pin_workers
                .then(|| cfg.cpus.get(w).copied().unwrap_or(w));
            let core = Core::new(
                w as u32,
                policy,
                events.clone(),
                pools.clone(),
                seed.wrapping_add((w as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                backend.as_str(),
                worker::SocketSettings {
                    binds: ifaces.iter().map(|i| i.bind).collect(),
                    rcvbuf: cfg.socket_rcvbuf_bytes,
                    sndbuf: cfg.socket_sndbuf_bytes,
                },
            );
            let (entries, buffers, buf_size, cap) = (
                cfg.uring_entries,
                cfg.recv_buffers.min(u32::from(u16::MAX) / 2 + 1) as u16,
                cfg.recv_buffer_bytes as usize,
                cfg.max_packets_per_turn,
            );
            let started = worker::spawn(core, cpu, move |wake| match backend {
                BackendKind::Uring => {
                    io::uring::Uring::new(entries, buffers, buf_size, cap, wake).map(Backend::Uring)
                }
                BackendKind::Mmsg => io::mmsg::Mmsg::new(buf_size, cap, wake).map(Backend::Mmsg),
            });
            let (handle, join) =
                started.map_err(|source| StartError::Worker { worker: w, source })?;
            workers.push(handle);
            joins.push(join);
        }
        tracing::info!(
            workers = n,
            backend = backend.as_str(),
            interfaces = ?ifaces.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
            "data plane started"
        );
        Ok(Dataplane {
            inner: Arc::new(Inner {
                workers,
                ifaces,
                pools,
                directory: Mutex::new(HashMap::new()),
                events,
                rules: convert::Rules {
                    latch_mode: match cfg.latch_mode {
                        LatchModeConfig::ExpectedIp => LatchMode::ExpectedIp,
                        LatchModeConfig::Strict => LatchMode::Strict,
                        LatchModeConfig::LearnAny => LatchMode::LearnAny,
                    },
                    allow_learn_any: cfg.allow_learn_any,
                    inactivity_timeout: Duration::from_secs(u64::from(cfg.inactivity_timeout_secs)),
                },
                rcvbuf: cfg.socket_rcvbuf_bytes,
                sndbuf: cfg.socket_sndbuf_bytes,
                next_worker: AtomicUsize::new(0),
                backend,
                joins: Mutex::new(joins),
            }),
        })
    }

    /// The IO backend in use.
    pub fn backend(&self) -> BackendKind {
        self.inner.backend
    }

    /// The gRPC service over this data plane.
    pub fn service(&self) -> Service {
        Service::new(self.inner.clone())
    }

    /// Per-worker counters and free port pairs, for metrics.
    pub async fn stats(&self) -> Result<pb::StatsResponse, Status> {
        self.inner.stats().await
    }

    /// Stops the workers and waits for them.
    pub fn stop(&self) {
        for w in &self.inner.workers {
            let _ = w.send(Command::Stop);
        }
        let joins =
            std::mem::take(&mut *self.inner.joins.lock().unwrap_or_else(|p| p.into_inner()));
        for j in joins {
            let _ = j.join();
        }
    }
}

fn port_status(e: PortError, field: &str, iface: &Iface) -> Status {
    match e {
        PortError::Exhausted => Status::resource_exhausted(format!(
            "{field}: no free port pair on interface {:?}",
            iface.name
        )),
        PortError::Taken => Status::already_exists(format!("{field}: port pair in use")),
        PortError::NotOurs => {
            Status::invalid_argument(format!("{field}: port outside the interface's range"))
        }
    }
}

impl Inner {
    fn lock_dir(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic elsewhere cannot leave the map half-written (single inserts
        // and removes), so a poisoned lock is still usable.
        self.directory.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pool(&self, iface: u16, worker: u32) -> Option<&Mutex<PortPool>> {
        self.pools.get(usize::from(iface))?.get(worker as usize)
    }

    fn release(&self, iface: u16, worker: u32, port: u16) {
        if let Some(p) = self.pool(iface, worker) {
            p.lock().unwrap_or_else(|p| p.into_inner()).release(port);
        }
    }

    /// Allocates (or takes the requested) pair and binds both sockets.
    fn open_leg(
        &self,
        field: &str,
        leg: &convert::ValidLeg,
        worker: u32,
    ) -> Result<(u16, socket2::Socket, Option<socket2::Socket>), Status> {
        let iface = self
            .ifaces
            .get(usize::from(leg.iface))
            .ok_or_else(|| Status::internal("interface index"))?;
        let pool = self
            .pool(leg.iface, worker)
            .ok_or_else(|| Status::internal("port pool index"))?;
        let field_port = format!("{field}.requested_rtp_port");
        // With rtcp-mux the odd port stays reserved but unbound: one socket
        // (and one file descriptor) per leg instead of two.
        let mux = leg.params.rtcp_mux;
        let bind = |port: u16| -> std::io::Result<(socket2::Socket, Option<socket2::Socket>)> {
            let rtp = io::sys::media_socket(iface.bind, port, self.rcvbuf, self.sndbuf)?;
            let rtcp = if mux {
                None
            } else {
                Some(io::sys::media_socket(
                    iface.bind,
                    port + 1,
                    self.rcvbuf,
                    self.sndbuf,
                )?)
            };
            Ok((rtp, rtcp))
        };
        if let Some(port) = leg.requested_port {
            pool.lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(port)
                .map_err(|e| port_status(e, &field_port, iface))?;
            return match bind(port) {
                Ok((a, b)) => Ok((port, a, b)),
                Err(e) => {
                    self.release(leg.iface, worker, port);
                    Err(Status::already_exists(format!(
                        "{field_port}: {port} cannot be bound: {e}"
                    )))
                }
            };
        }
        // A port another program holds is skipped; a few tries, then give up.
        let mut skipped = Vec::new();
        let result = loop {
            let port = match pool.lock().unwrap_or_else(|p| p.into_inner()).alloc() {
                Ok(p) => p,
                Err(e) => break Err(port_status(e, &format!("{field}.interface"), iface)),
            };
            match bind(port) {
                Ok((a, b)) => break Ok((port, a, b)),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && skipped.len() < 16 => {
                    skipped.push(port);
                }
                Err(e) => {
                    skipped.push(port);
                    break Err(Status::internal(format!("{field}: binding {port}: {e}")));
                }
            }
        };
        for p in skipped {
            self.release(leg.iface, worker, p);
        }
        result
    }

    fn pick_worker(&self, v: &convert::ValidCreate) -> Result<u32, Status> {
        let n = self.workers.len() as u32;
        let mut chosen: Option<(u32, &str)> = None;
        for (leg, field) in v.legs.iter().zip(["leg_a", "leg_b"]) {
            let Some(port) = leg.requested_port else {
                continue;
            };
            let Some(iface) = self.ifaces.get(usize::from(leg.iface)) else {
                continue;
            };
            let w = PortPool::worker_of(iface.port_min, port, n).ok_or_else(|| {
                Status::invalid_argument(format!("{field}.requested_rtp_port: not a pair start"))
            })?;
            match chosen {
                Some((c, other)) if c != w => {
                    return Err(Status::invalid_argument(format!(
                    "{field}.requested_rtp_port: belongs to worker {w}, {other}'s to worker {c}; \
                         a session's legs share a worker"
                )))
                }
                _ => chosen = Some((w, field)),
            }
        }
        Ok(match chosen {
            Some((w, _)) => w,
            None => (self.next_worker.fetch_add(1, Ordering::Relaxed) as u32) % n.max(1),
        })
    }

    async fn ask<T>(
        &self,
        worker: u32,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Status> {
        let w = self
            .workers
            .get(worker as usize)
            .ok_or_else(|| Status::internal("worker index"))?;
        let (tx, rx) = oneshot::channel();
        w.send(make(tx))
            .map_err(|_| Status::unavailable(format!("worker {worker} command queue is full")))?;
        rx.await
            .map_err(|_| Status::unavailable(format!("worker {worker} is gone")))
    }

    pub(crate) async fn create(
        &self,
        req: pb::CreateSessionRequest,
    ) -> Result<pb::SessionInfo, Status> {
        let v = convert::create(&req, &self.ifaces, &self.rules)?;
        {
            let mut dir = self.lock_dir();
            match dir.get(&v.id) {
                Some(Entry::Ready(r)) => {
                    return if *r.request == *prost::Message::encode_to_vec(&req) {
                        Ok(self.first_answer(&v, r))
                    } else {
                        Err(Status::already_exists(format!(
                            "session_id: {:?} exists with other parameters",
                            v.id
                        )))
                    };
                }
                Some(Entry::Pending) => {
                    return Err(Status::unavailable(
                        "session_id: a create for this id is in progress",
                    ))
                }
                None => {
                    dir.insert(v.id.clone(), Entry::Pending);
                }
            }
        }
        let result = self.create_on_worker(&v, &req).await;
        let mut dir = self.lock_dir();
        match result {
            Ok(ready) => {
                let answer = self.first_answer(&v, &ready);
                dir.insert(v.id.clone(), Entry::Ready(Box::new(ready)));
                Ok(answer)
            }
            Err(e) => {
                dir.remove(&v.id);
                Err(e)
            }
        }
    }

    /// The answer to a create, rebuilt from what the directory keeps: the same
    /// bytes for the first call and for every retry.
    fn first_answer(&self, v: &convert::ValidCreate, r: &Ready) -> pb::SessionInfo {
        let leg = |k: usize| {
            let l = &v.legs[k];
            let ip = self
                .ifaces
                .get(usize::from(l.iface))
                .map_or(IpAddr::from([0, 0, 0, 0]), |i| i.advertised);
            worker::LegSnapshot {
                iface: l.iface,
                local_rtp: SocketAddr::new(ip, r.ports[k]),
                params: l.params.clone(),
                latched: [None, None],
                counters: Default::default(),
                last_packet_unix_ms: 0,
            }
        };
        let snap = worker::SessionSnapshot {
            id: v.id.clone(),
            worker: r.worker,
            handle: r.handle,
            legs: [leg(0), leg(1)],
            inactivity_timeout: v.inactivity_timeout,
            created_unix_ms: r.created_unix_ms,
        };
        convert::session_info(&snap, &self.ifaces)
    }

    async fn create_on_worker(
        &self,
        v: &convert::ValidCreate,
        req: &pb::CreateSessionRequest,
    ) -> Result<Ready, Status> {
        let worker = self.pick_worker(v)?;
        let (port_a, rtp_a, rtcp_a) = self.open_leg("leg_a", &v.legs[0], worker)?;
        let (port_b, rtp_b, rtcp_b) = match self.open_leg("leg_b", &v.legs[1], worker) {
            Ok(x) => x,
            Err(e) => {
                drop((rtp_a, rtcp_a));
                self.release(v.legs[0].iface, worker, port_a);
                return Err(e);
            }
        };
        let new_leg = |l: &convert::ValidLeg, port: u16, rtp, rtcp| -> Result<NewLeg, Status> {
            let iface = self
                .ifaces
                .get(usize::from(l.iface))
                .ok_or_else(|| Status::internal("interface index"))?;
            Ok(NewLeg {
                iface: l.iface,
                port,
                local_rtp: SocketAddr::new(iface.advertised, port),
                rtp,
                rtcp,
                params: l.params.clone(),
            })
        };
        let new = NewSession {
            id: v.id.clone(),
            legs: [
                new_leg(&v.legs[0], port_a, rtp_a, rtcp_a)?,
                new_leg(&v.legs[1], port_b, rtp_b, rtcp_b)?,
            ],
            inactivity_timeout: v.inactivity_timeout,
        };
        let w = self
            .workers
            .get(worker as usize)
            .ok_or_else(|| Status::internal("worker index"))?;
        let (tx, rx) = oneshot::channel();
        if let Err(cmd) = w.send(Command::Create(Box::new(new), tx)) {
            // The sockets close with the command; their ports go back.
            drop(cmd);
            self.release(v.legs[0].iface, worker, port_a);
            self.release(v.legs[1].iface, worker, port_b);
            return Err(Status::unavailable(format!(
                "worker {worker} command queue is full"
            )));
        }
        match rx.await {
            Ok(Ok(snap)) => Ok(Ready {
                worker,
                handle: snap.handle,
                ifaces: [v.legs[0].iface, v.legs[1].iface],
                ports: [port_a, port_b],
                created_unix_ms: snap.created_unix_ms,
                request: prost::Message::encode_to_vec(req).into_boxed_slice(),
            }),
            Ok(Err(why)) => Err(Status::internal(format!("worker {worker}: {why}"))),
            Err(_) => Err(Status::unavailable(format!("worker {worker} is gone"))),
        }
    }

    fn lookup(&self, id: &str) -> Result<(u32, u32, [u16; 2]), Status> {
        convert::session_id(id)?;
        match self.lock_dir().get(id) {
            Some(Entry::Ready(r)) => Ok((r.worker, r.handle, r.ifaces)),
            Some(Entry::Pending) => Err(Status::unavailable("session is being created")),
            None => Err(Status::not_found(format!("session_id: no session {id:?}"))),
        }
    }

    pub(crate) async fn update(
        &self,
        req: pb::UpdateSessionRequest,
    ) -> Result<pb::SessionInfo, Status> {
        let (worker, handle, ifaces) = self.lookup(&req.session_id)?;
        let itf = |k: u16| {
            self.ifaces
                .get(usize::from(k))
                .ok_or_else(|| Status::internal("interface index"))
        };
        let updates = convert::update(&req, [itf(ifaces[0])?, itf(ifaces[1])?], &self.rules)?;
        let id = req.session_id.clone();
        let snap = self
            .ask(worker, |tx| {
                Command::Update(handle, id, Box::new(updates), tx)
            })
            .await?
            .ok_or_else(|| {
                Status::not_found(format!("session_id: no session {:?}", req.session_id))
            })?;
        Ok(convert::session_info(&snap, &self.ifaces))
    }

    pub(crate) async fn delete(&self, id: &str) -> Result<pb::SessionInfo, Status> {
        let (worker, handle, _) = self.lookup(id)?;
        let owned = id.to_string();
        // The directory entry goes only once the worker has the command: a full
        // queue leaves the session deletable by a retry.
        let snap = self
            .ask(worker, |tx| Command::Delete(handle, owned, tx))
            .await;
        if snap.is_ok() {
            self.lock_dir().remove(id);
        }
        let snap =
            snap?.ok_or_else(|| Status::not_found(format!("session_id: no session {id:?}")))?;
        Ok(convert::session_info(&snap, &self.ifaces))
    }

    pub(crate) async fn get(&self, id: &str) -> Result<pb::SessionInfo, Status> {
        let (worker, handle, _) = self.lookup(id)?;
        let owned = id.to_string();
        let snap = self
            .ask(worker, |tx| Command::Get(handle, owned, tx))
            .await?
            .ok_or_else(|| Status::not_found(format!("session_id: no session {id:?}")))?;
        Ok(convert::session_info(&snap, &self.ifaces))
    }

    pub(crate) async fn list(&self) -> Result<Vec<pb::SessionInfo>, Status> {
        let mut all = Vec::new();
        for w in 0..self.workers.len() as u32 {
            let snaps = self.ask(w, Command::List).await?;
            all.extend(snaps.iter().map(|s| convert::session_info(s, &self.ifaces)));
        }
        all.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        Ok(all)
    }

    pub(crate) async fn stats(&self) -> Result<pb::StatsResponse, Status> {
        let mut snaps: Vec<WorkerSnapshot> = Vec::with_capacity(self.workers.len());
        for w in 0..self.workers.len() as u32 {
            snaps.push(self.ask(w, Command::Stats).await?);
        }
        let mut total = worker::WorkerCounters::default();
        let mut sessions = 0;
        let mut free_total = 0;
        let mut workers = Vec::with_capacity(snaps.len());
        for s in &snaps {
            total.merge(&s.counters);
            sessions += s.sessions;
            let free: u32 = (0..self.ifaces.len() as u16)
                .filter_map(|i| self.pool(i, s.worker))
                .map(|p| p.lock().unwrap_or_else(|p| p.into_inner()).free())
                .sum();
            free_total += free;
            workers.push(convert::worker_stats(s, free));
        }
        let total = convert::worker_stats(
            &WorkerSnapshot {
                worker: u32::MAX,
                backend: self.backend.as_str(),
                sessions,
                counters: total,
            },
            free_total,
        );
        Ok(pb::StatsResponse {
            workers,
            total: Some(total),
        })
    }

    /// Free pairs per interface, for metrics.
    pub(crate) fn free_pairs(&self) -> Vec<(String, u32)> {
        self.ifaces
            .iter()
            .enumerate()
            .map(|(k, i)| {
                let free = (0..self.workers.len() as u32)
                    .filter_map(|w| self.pool(k as u16, w))
                    .map(|p| p.lock().unwrap_or_else(|p| p.into_inner()).free())
                    .sum();
                (i.name.clone(), free)
            })
            .collect()
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<pb::Event> {
        self.events.subscribe()
    }
}
