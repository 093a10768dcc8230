//! The running verification node: its listeners (REST, RADIUS, inter-node),
//! the records writer, the periodic work (SETUP and ranges directories every
//! `main_timer`, registry expiry every second), reload and orderly stop.
//!
//! Stop order: the listeners and periodic work end; a SETUP load in progress
//! finishes; REST, inter-node and RADIUS requests in progress are answered
//! (each within `req_timer`; a held preset request is cut); then the queued
//! records are written.
//!
//! Reload ([`VerifyService::reload`]) applies every `[verify]` setting except
//! those fixed at start ([`RESTART_ONLY`]), which are reported back so the
//! caller can say a restart is needed. Stopping waits for a SETUP file load
//! in progress, then drains the records queue.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::config::{parse_hhmm, VerifyConfig};
use super::node::{Node, State};
use super::radius_server::{self, RadiusStats};
use super::records::{self, RecordsHandle};
use super::{rest, setup};

/// Settings read once at start; a reload that changes them says so.
pub const RESTART_ONLY: &[&str] = &[
    "enabled",
    "db_path",
    "rest_addr",
    "rest_port",
    "radius_addr",
    "radius_port",
    "addr_local",
    "local_port",
    "w_size",
    "hash_key",
];

/// Records waiting for the writer before new ones are dropped (and counted).
const RECORD_QUEUE: usize = 1 << 16;

/// The running node.
pub struct VerifyService {
    node: Arc<Node>,
    records: Option<RecordsHandle>,
    radius: Arc<RadiusStats>,
    /// RADIUS requests in progress hold one each: a stop waits for them.
    radius_slots: Arc<tokio::sync::Semaphore>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The REST and inter-node listeners: stopped gracefully.
    http_tasks: Vec<tokio::task::JoinHandle<()>>,
    stop_http: tokio::sync::watch::Sender<bool>,
    db: PathBuf,
    /// Held while a SETUP directory scan runs: a stop waits for it.
    scanning: Arc<Mutex<()>>,
    /// Where the listeners are (REST, RADIUS, inter-node).
    pub addrs: (Option<SocketAddr>, Option<SocketAddr>, Option<SocketAddr>),
}

fn scan_now(node: &Node, db: &Path, lock: &Mutex<()>) {
    let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
    let report = setup::scan(node, db);
    for f in &report.applied {
        tracing::info!(file = %f, "SETUP file applied");
    }
    for (f, why) in &report.refused {
        tracing::warn!(file = %f, reason = %why, "SETUP file refused");
    }
}

impl VerifyService {
    /// Loads the capacity and ranges, opens the records, binds the listeners
    /// and starts the periodic work. Errors name what failed.
    pub async fn start(cfg: VerifyConfig, data_dir: &Path) -> Result<VerifyService, String> {
        cfg.validate().map_err(|(k, m)| format!("{k}: {m}"))?;
        let db = cfg.db_file(data_dir);
        if let Some(parent) = db.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        let capacity = setup::load_capacity(&db, &cfg)?;
        let owners = setup::load_ranges_dir(&cfg.ranges_dir(data_dir))?;
        let cut = parse_hhmm(&cfg.db_cut_time).unwrap_or(30);
        let state = State::from_config(cfg.clone(), Arc::new(capacity), owners)?;
        let (sink, handle) = records::spawn(&db, cfg.db_days, cut, RECORD_QUEUE)?;
        let node = Arc::new(Node::new(state, sink, data_dir));
        let radius = Arc::new(RadiusStats::default());
        let radius_slots = radius_server::in_flight();
        let mut tasks = Vec::new();
        let mut http_tasks = Vec::new();
        let (stop_http, stop_rx) = tokio::sync::watch::channel(false);
        let key = |r: Result<Option<SocketAddr>, (String, String)>| {
            r.map_err(|(k, m)| format!("{k}: {m}"))
        };
        let rest_addr = key(cfg.rest_listener())?;
        let radius_addr = key(cfg.radius_listener())?;
        let node_addr = key(cfg.node_listener())?;
        let mut bound = (None, None, None);
        if let Some(a) = rest_addr {
            let l = tokio::net::TcpListener::bind(a)
                .await
                .map_err(|e| format!("verify.rest_addr/rest_port {a}: {e}"))?;
            bound.0 = l.local_addr().ok();
            tracing::info!(addr = %a, "verification REST API listening");
            http_tasks.push(tokio::spawn(rest::serve_rest_until(
                l,
                node.clone(),
                stop_rx.clone(),
            )));
        }
        if let Some(a) = radius_addr {
            let s = tokio::net::UdpSocket::bind(a)
                .await
                .map_err(|e| format!("verify.radius_addr/radius_port {a}: {e}"))?;
            bound.1 = s.local_addr().ok();
            tracing::info!(addr = %a, "verification RADIUS listening");
            tasks.push(tokio::spawn(radius_server::serve_with(
                Arc::new(s),
                node.clone(),
                radius.clone(),
                radius_slots.clone(),
            )));
        }
        if let Some(a) = node_addr {
            let l = tokio::net::TcpListener::bind(a)
                .await
                .map_err(|e| format!("verify.addr_local/local_port {a}: {e}"))?;
            bound.2 = l.local_addr().ok();
            tracing::info!(addr = %a, "verification inter-node listener");
            http_tasks.push(tokio::spawn(rest::serve_node_until(
                l,
                node.clone(),
                stop_rx.clone(),
            )));
        }
        let scanning = Arc::new(Mutex::new(()));
        {
            let (n, d, l) = (node.clone(), db.clone(), scanning.clone());
            tokio::task::spawn_blocking(move || scan_now(&n, &d, &l))
                .await
                .map_err(|e| format!("first SETUP scan: {e}"))?;
        }
        let (n, d, l) = (node.clone(), db.clone(), scanning.clone());
        tasks.push(tokio::spawn(async move {
            let mut last_scan = tokio::time::Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                n.registry().expire();
                let every = Duration::from_secs(n.state().cfg.main_timer);
                if last_scan.elapsed() >= every {
                    last_scan = tokio::time::Instant::now();
                    let (n, d, l) = (n.clone(), d.clone(), l.clone());
                    let _ = tokio::task::spawn_blocking(move || {
                        scan_now(&n, &d, &l);
                        // Under the scan lock, so a reload cannot interleave.
                        let _g = l.lock().unwrap_or_else(|p| p.into_inner());
                        if let Err(e) = reload_ranges(&n) {
                            tracing::warn!(error = %e, "range files not reloaded");
                        }
                    })
                    .await;
                }
            }
        }));
        Ok(VerifyService {
            node,
            records: Some(handle),
            radius,
            radius_slots,
            tasks,
            http_tasks,
            stop_http,
            db,
            scanning,
            addrs: bound,
        })
    }

    /// The node (for the SBC's call flow).
    pub fn node(&self) -> Arc<Node> {
        self.node.clone()
    }

    /// Applies a new `[verify]` section. Returns the restart-only settings
    /// that changed (kept at their old values until a restart).
    pub async fn reload(&self, cfg: VerifyConfig) -> Result<Vec<&'static str>, String> {
        cfg.validate().map_err(|(k, m)| format!("{k}: {m}"))?;
        let old = self.node.state().cfg.clone();
        let mut changed = Vec::new();
        let mut cfg = cfg;
        macro_rules! keep {
            ($($f:ident),*) => {$(
                if cfg.$f != old.$f {
                    changed.push(stringify!($f));
                    cfg.$f = old.$f.clone();
                }
            )*};
        }
        keep!(
            enabled,
            db_path,
            rest_addr,
            rest_port,
            radius_addr,
            radius_port,
            addr_local,
            local_port,
            w_size,
            hash_key
        );
        let node = self.node.clone();
        let db = self.db.clone();
        let lock = self.scanning.clone();
        let cut = parse_hhmm(&cfg.db_cut_time).unwrap_or(30);
        let days = cfg.db_days;
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
            let capacity = setup::load_capacity(&db, &cfg)?;
            let owners = setup::load_ranges_dir(&cfg.ranges_dir(node.data_dir()))?;
            let state = State::from_config(cfg, Arc::new(capacity), owners)?;
            node.set_state(state);
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())??;
        if let Some(r) = &self.records {
            r.set_retention(days, cut);
        }
        let (n, d, l) = (self.node.clone(), self.db.clone(), self.scanning.clone());
        let _ = tokio::task::spawn_blocking(move || scan_now(&n, &d, &l)).await;
        Ok(changed)
    }

    /// A function rendering [`VerifyService::metrics`], for the metrics
    /// endpoint.
    pub fn metrics_fn(&self) -> impl Fn() -> String + Send + Sync + 'static {
        let node = self.node.clone();
        let radius = self.radius.clone();
        move || render_metrics(&node, &radius)
    }

    /// Prometheus text of the node's counters.
    pub fn metrics(&self) -> String {
        render_metrics(&self.node, &self.radius)
    }
}

fn render_metrics(node: &Node, radius: &RadiusStats) -> String {
    let mut out = String::new();
    let s = &node.stats;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let rows = [
        (
            "registered_total",
            "counter",
            "outgoing calls registered",
            load(&s.registered),
        ),
        (
            "asked_total",
            "counter",
            "verification requests sent to other nodes",
            load(&s.asked),
        ),
        (
            "answered_total",
            "counter",
            "verification requests of other nodes answered",
            load(&s.answered),
        ),
        (
            "released_total",
            "counter",
            "calls released after verification",
            load(&s.released),
        ),
        (
            "timeouts_total",
            "counter",
            "other nodes' answers not received in time",
            load(&s.timeouts),
        ),
        (
            "errors_total",
            "counter",
            "verifications ended by an error",
            load(&s.errors),
        ),
        (
            "bad_requests_total",
            "counter",
            "requests refused as unusable",
            load(&s.bad_requests),
        ),
        (
            "registry_calls",
            "gauge",
            "outgoing calls in the registry",
            node.registry().len() as u64,
        ),
        (
            "records_dropped_total",
            "counter",
            "records lost to a full queue",
            node.records().dropped(),
        ),
    ];
    for (name, kind, help, v) in rows {
        crate::metrics::write(&mut out, &format!("kordon_verify_{name}"), kind, help, v);
    }
    out.push_str(&radius.metrics());
    out
}

impl VerifyService {
    /// Stops: waits for a SETUP load in progress, stops the listeners, then
    /// writes the queued records.
    pub async fn shutdown(mut self) {
        // No new scan starts once the tasks are gone; one already running
        // (on a blocking thread) holds the lock until its file is done.
        for t in self.tasks.drain(..) {
            t.abort();
        }
        // REST and inter-node requests in progress are answered (and
        // recorded); none needs more than req_timer.
        let wait = Duration::from_millis(self.node.state().cfg.req_timer) + Duration::from_secs(1);
        self.stop_http.send_replace(true);
        let deadline = tokio::time::Instant::now() + wait;
        for t in self.http_tasks.drain(..) {
            let abort = t.abort_handle();
            if tokio::time::timeout_at(deadline, t).await.is_err() {
                abort.abort();
                tracing::warn!("HTTP requests still in progress at stop were cut");
            }
        }
        let lock = self.scanning.clone();
        let _ = tokio::task::spawn_blocking(move || {
            drop(lock.lock().unwrap_or_else(|p| p.into_inner()));
        })
        .await;
        // RADIUS requests still being verified finish (and are recorded);
        // none waits longer than req_timer.
        let all = u32::try_from(radius_server::MAX_IN_FLIGHT).unwrap_or(u32::MAX);
        if tokio::time::timeout(wait, self.radius_slots.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!("RADIUS requests still in progress at stop; their records may be lost");
        }
        if let Some(r) = self.records.take() {
            let _ = tokio::task::spawn_blocking(move || r.shutdown()).await;
        }
    }
}

fn reload_ranges(node: &Node) -> Result<(), String> {
    let st = node.state();
    let owners = setup::load_ranges_dir(&st.cfg.ranges_dir(node.data_dir()))?;
    let fresh = State::from_config((*st.cfg).clone(), st.capacity.clone(), owners)?;
    if fresh.owners != st.owners {
        node.update_state(|s| s.owners = fresh.owners);
        tracing::info!("other operators' ranges reloaded");
    }
    Ok(())
}
