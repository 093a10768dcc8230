//! Trunks: peers known by address. A request is from a trunk when its source
//! matches the trunk's ACL on the trunk's interface (the most specific entry
//! wins). A trunk with OPTIONS probing is marked down when a probe goes
//! unanswered and up again at its next answer; routing skips down trunks.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::config::{AclEntry, TrunkConfig};
use super::endpoint::Input;
use super::{CallEvent, EventKind, Shared};
use crate::sip::dialog::LocalAddr;
use crate::sip::message::{CSeq, Method, Request, Uri};
use crate::sip::Peer;

/// One trunk at run time.
#[derive(Debug)]
pub(crate) struct Trunk {
    pub(crate) cfg: TrunkConfig,
    pub(crate) addr: SocketAddr,
    pub(crate) iface: u16,
    acl: Vec<AclEntry>,
    up: AtomicBool,
    pub(crate) probes_failed: AtomicU64,
}

impl Trunk {
    /// Whether routing may use it.
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Where requests to it go.
    pub(crate) fn peer(&self) -> Peer {
        Peer {
            transport: self.cfg.transport,
            addr: self.addr,
            iface: self.iface,
            conn: None,
        }
    }
}

/// All trunks.
#[derive(Debug, Default)]
pub(crate) struct Trunks {
    pub(crate) list: Vec<Trunk>,
}

impl Trunks {
    /// Builds the table; `iface_of` maps an interface name to its index.
    pub(crate) fn build(
        cfgs: &[TrunkConfig],
        iface_of: impl Fn(&str) -> Option<u16>,
    ) -> Result<Trunks, String> {
        let mut list = Vec::new();
        for (i, c) in cfgs.iter().enumerate() {
            let addr: SocketAddr = c
                .address
                .parse()
                .map_err(|_| format!("sip.trunks[{i}].address: not ip:port"))?;
            let iface = iface_of(&c.interface)
                .ok_or_else(|| format!("sip.trunks[{i}].interface: unknown interface"))?;
            let mut acl = Vec::new();
            for (j, a) in c.acl.iter().enumerate() {
                acl.push(AclEntry::parse(a).map_err(|m| format!("sip.trunks[{i}].acl[{j}]: {m}"))?);
            }
            if acl.is_empty() {
                acl.push(
                    AclEntry::parse(&addr.ip().to_string())
                        .map_err(|m| format!("sip.trunks[{i}]: {m}"))?,
                );
            }
            list.push(Trunk {
                cfg: c.clone(),
                addr,
                iface,
                acl,
                up: AtomicBool::new(true),
                probes_failed: AtomicU64::new(0),
            });
        }
        Ok(Trunks { list })
    }

    /// The trunk a request from `src` on interface `iface` comes from.
    pub(crate) fn identify(&self, src: SocketAddr, iface: u16) -> Option<&Trunk> {
        self.list
            .iter()
            .filter(|t| t.iface == iface)
            .filter_map(|t| {
                t.acl
                    .iter()
                    .filter_map(|a| a.matches(src))
                    .max()
                    .map(|s| (s, t))
            })
            .max_by_key(|(s, _)| *s)
            .map(|(_, t)| t)
    }

    /// The trunk named `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Trunk> {
        self.list.iter().find(|t| t.cfg.name == name)
    }
}

/// Probes trunk `idx` with OPTIONS every `options_interval_s` until the
/// service stops. Any answer but 503 means up; no answer means down.
pub(crate) async fn probe(sh: Arc<Shared>, idx: usize) {
    let Some(trunk) = sh.trunks.list.get(idx) else {
        return;
    };
    let interval = Duration::from_secs(trunk.cfg.options_interval_s.max(1));
    // An unanswered probe counts once the interval (at most Timer F) passed.
    let wait = interval.min(Duration::from_millis(sh.cfg.timers.t1_ms * 64));
    let (tx, mut rx) = mpsc::unbounded_channel::<Input>();
    let mut seq = 0u32;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if sh.stopping.load(Ordering::Relaxed) {
            return;
        }
        seq += 1;
        let Some(local) = sh.local_addr(trunk.iface, trunk.cfg.transport) else {
            return;
        };
        let req = options_request(&local, trunk, seq);
        let (txn, _) = sh.ep.with(|g| g.send_request(req, trunk.peer(), &tx));
        let deadline = tokio::time::Instant::now() + wait;
        let alive = loop {
            tokio::select! {
                input = rx.recv() => match input {
                    Some(Input::Response(t, response)) if t == txn && response.status >= 200 => {
                        break response.status != 503;
                    }
                    Some(Input::Failed { txn: t, .. }) if t == txn => break false,
                    Some(_) => continue,
                    None => return,
                },
                () = tokio::time::sleep_until(deadline) => break false,
            }
        };
        sh.ep.with(|g| g.forget(&[txn], &[]));
        let was = trunk.up.swap(alive, Ordering::Relaxed);
        if !alive {
            trunk.probes_failed.fetch_add(1, Ordering::Relaxed);
        }
        if was != alive {
            if alive {
                tracing::info!(trunk = %trunk.cfg.name, "trunk answers OPTIONS again: up");
            } else {
                tracing::warn!(trunk = %trunk.cfg.name, "trunk stopped answering OPTIONS: down");
            }
            let _ = sh.events.send(CallEvent {
                call_id: String::new(),
                correlation_id: String::new(),
                kind: if alive {
                    EventKind::TrunkUp {
                        trunk: trunk.cfg.name.clone(),
                    }
                } else {
                    EventKind::TrunkDown {
                        trunk: trunk.cfg.name.clone(),
                    }
                },
            });
        }
    }
}

fn options_request(local: &LocalAddr, trunk: &Trunk, seq: u32) -> Request {
    let uri = Uri::sip(None, &trunk.addr.ip().to_string(), Some(trunk.addr.port()));
    let mut r = Request::new(Method::Options, uri.clone());
    r.headers.push("Via", local.via());
    r.headers.push("Max-Forwards", "70");
    r.headers.push(
        "From",
        format!(
            "<sip:kordon@{}:{}>;tag={}",
            local.host,
            local.port,
            super::random_token(10)
        ),
    );
    r.headers.push("To", format!("<{uri}>"));
    r.headers.push("Call-ID", super::random_token(20));
    r.headers.push(
        "CSeq",
        CSeq {
            seq,
            method: Method::Options,
        }
        .to_string(),
    );
    r.headers.push("Contact", local.contact("kordon"));
    r.headers.push("Accept", "application/sdp");
    r
}
