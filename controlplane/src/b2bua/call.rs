//! One call: the caller's dialog (side A), the callee's (side B), the media
//! anchor and the CDR. A task per call, fed by the endpoint.
//!
//! Phases: admit (source, rate, identity, numbers, policy, destination) →
//! attempts in route order (failover on timeout, 408, 5xx) → confirmed (BYE,
//! re-INVITE/UPDATE, session and duration timers) → teardown (media
//! counters, CDR, events). Every exit path goes through [`Call::finish`].

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::endpoint::{DialogKey, InRequest, Input, Owner};
use super::media::{Anchor, AnchorError, Side};
use super::{random_token, unix_now, CallEvent, EventKind, Shared};
use crate::cdr::{CallRecord, Disposition, EgressAttempt, MediaCounters};
use crate::registrar::{AuthOutcome, Lookup};
use crate::routing::{normalize, CosDecision};
use crate::sip::dialog::{Dialog, LocalAddr};
use crate::sip::message::{CSeq, Method, NameAddr, Request, Response, Uri};
use crate::sip::txn::TxnId;
use crate::sip::{Peer, Transport};

/// Statuses after which the next route is tried (seed 000: SBC failure).
fn fails_over(status: u16) -> bool {
    status == 408 || (500..600).contains(&status)
}

fn has_sdp(headers_body: (&crate::sip::message::Headers, &Bytes)) -> bool {
    let (h, body) = headers_body;
    !body.is_empty()
        && h.get("Content-Type")
            .is_none_or(|c| c.to_ascii_lowercase().starts_with("application/sdp"))
}

fn user_of(uri: &Uri) -> String {
    let u = uri.user.clone().unwrap_or_default();
    match u.split_once(';') {
        Some((a, _)) => a.to_string(),
        None => u,
    }
}

/// Where one attempt goes.
#[derive(Debug, Clone)]
enum Target {
    Trunk(String),
    User { peer: Peer, contact: Uri },
}

/// How the caller was admitted.
#[derive(Debug, Clone)]
enum Caller {
    Trunk(String),
    User(String),
}

/// How the call ended, for the A side, the CDR and the event.
#[derive(Debug, Clone)]
struct End {
    status: u16,
    reason: String,
    disposition: Disposition,
}

impl End {
    fn new(status: u16, reason: impl Into<String>, disposition: Disposition) -> End {
        End {
            status,
            reason: reason.into(),
            disposition,
        }
    }
}

/// Session timer of one leg (RFC 4028).
#[derive(Debug, Clone, Copy)]
struct SessionTimer {
    interval: Duration,
    /// Kordon refreshes (true) or the far side does.
    we_refresh: bool,
    deadline: Instant,
}

impl SessionTimer {
    fn reset(&mut self, now: Instant) {
        let wait = if self.we_refresh {
            self.interval / 2
        } else {
            // RFC 4028 §10: BYE when no refresh came before the interval minus
            // the smaller of 32 s and a third of it.
            let margin = Duration::from_secs(32).min(self.interval / 3);
            self.interval.saturating_sub(margin)
        };
        self.deadline = now.checked_add(wait).unwrap_or(now);
    }
}

/// Longest session interval Kordon keeps (a day): a peer's larger value is
/// clamped, so no timer arithmetic can overflow.
const MAX_SESSION_S: u64 = 86_400;

/// A Session-Expires value (RFC 4028 §4): the interval in seconds, clamped to
/// `[min_se, MAX_SESSION_S]`, and whether it names the UAS as refresher.
/// `None` when it is not a number.
fn session_expires(value: &str, min_se: u32) -> Option<(u64, bool)> {
    let (secs, params) = value.split_once(';').unwrap_or((value, ""));
    let secs: u64 = secs.trim().parse().ok()?;
    let secs = secs.clamp(u64::from(min_se).max(1), MAX_SESSION_S);
    Some((secs, params.to_ascii_lowercase().contains("refresher=uas")))
}

struct BLeg {
    txn: TxnId,
    invite: Request,
    peer: Peer,
    local: LocalAddr,
    dialog: Option<Dialog>,
    timer: Option<SessionTimer>,
    /// The ACK sent for B's 2xx, sent again when the 2xx is (RFC 3261
    /// §13.2.2.4: the UAC acknowledges every retransmission).
    ack: Option<Request>,
}

pub(crate) struct Call {
    sh: Arc<Shared>,
    tx: Owner,
    rx: mpsc::UnboundedReceiver<Input>,
    id: String,
    correlation: String,
    a_txn: TxnId,
    a_req: Request,
    a_peer: Peer,
    a_tag: String,
    a_local: LocalAddr,
    a_dialog: Option<Dialog>,
    a_timer: Option<SessionTimer>,
    a_rseq: u32,
    a_answered: bool,
    b: Option<BLeg>,
    anchor: Anchor,
    expected_a: Option<IpAddr>,
    caller: Option<Caller>,
    txns: Vec<TxnId>,
    dialogs: Vec<DialogKey>,
    admitted: Vec<String>,
    rec: CallRecord,
    /// Requests that arrived while a transaction of the other leg was pending.
    deferred: Vec<Input>,
    /// Changes when the service stops.
    stop: tokio::sync::watch::Receiver<bool>,
}

pub(crate) async fn run(
    sh: Arc<Shared>,
    txn: TxnId,
    req: Request,
    peer: Peer,
    tx: Owner,
    rx: mpsc::UnboundedReceiver<Input>,
) {
    let Some(a_local) = sh.local_addr(peer.iface, peer.transport) else {
        sh.ep.with(|g| {
            g.forget(&[txn], &[]);
            g.reply(txn, 500, Some("Server Internal Error - no local address"));
        });
        return;
    };
    // Rate limit first: a flood must cost as little as possible.
    let allowed = Shared::lock(&sh.limiter).check(peer.addr.ip(), std::time::Instant::now());
    if !allowed {
        sh.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
        sh.ep.with(|g| {
            g.forget(&[txn], &[]);
            let mut r = response_to(&req, 503, &random_token(10));
            r.reason = "Service Unavailable - rate limit".into();
            r.headers
                .push("Retry-After", sh.cfg.timers.retry_after_s.to_string());
            g.respond(txn, r);
        });
        return;
    }
    let media_iface = sh
        .ifaces
        .get(usize::from(peer.iface))
        .map(|i| i.media_interface.clone())
        .unwrap_or_default();
    let id = random_token(16);
    let now: DateTime<Utc> = Utc::now();
    let from_user = req.from().map(|f| user_of(&f.uri)).unwrap_or_default();
    let rec = CallRecord {
        call_id: id.clone(),
        correlation_id: random_token(24),
        user: None,
        device: req.headers.get("User-Agent").map(str::to_string),
        a_number: from_user,
        b_number: user_of(&req.uri),
        a_e164: None,
        b_e164: None,
        original_called: None,
        ingress_trunk: None,
        egress_trunk: None,
        start: now,
        answer: None,
        end: now,
        disposition: Disposition::Failed,
        sip_status: 0,
        reason: String::new(),
        media: MediaCounters::default(),
        attempts: Vec::new(),
    };
    let sh_stop = sh.shutdown.subscribe();
    let mut call = Call {
        anchor: Anchor::new(
            &id,
            &media_iface,
            &media_iface,
            rand::random::<u32>().into(),
        ),
        correlation: rec.correlation_id.clone(),
        sh,
        tx,
        rx,
        id,
        a_txn: txn,
        a_req: req,
        a_peer: peer,
        a_tag: random_token(10),
        a_local,
        a_dialog: None,
        a_timer: None,
        a_rseq: 0,
        a_answered: false,
        b: None,
        expected_a: None,
        caller: None,
        txns: vec![txn],
        dialogs: Vec::new(),
        admitted: Vec::new(),
        rec,
        deferred: Vec::new(),
        stop: sh_stop,
    };
    call.main().await;
}

/// A response to `req` carrying `tag` as To tag.
fn response_to(req: &Request, status: u16, tag: &str) -> Response {
    let mut r = Response::for_request(req, status);
    if status > 100 {
        if let Ok(mut to) = r.to() {
            if to.tag().is_none() {
                to.set_tag(tag);
                r.headers.set("To", to.to_string());
            }
        }
    }
    r
}

impl Call {
    async fn main(&mut self) {
        // Counted from admission to the CDR, so a graceful stop waits for
        // every record.
        self.sh.counters.active.fetch_add(1, Ordering::Relaxed);
        let end = match self.admit() {
            Err(Some(end)) => end,
            Err(None) => {
                // Challenged (407): not a call yet, no record.
                self.cleanup_routes();
                self.sh.counters.active.fetch_sub(1, Ordering::Relaxed);
                self.sh.calls_done.notify_waiters();
                return;
            }
            Ok(targets) => {
                self.sh.counters.calls.fetch_add(1, Ordering::Relaxed);
                self.event(EventKind::Trying {
                    from: self.rec.a_number.clone(),
                    to: self.rec.b_number.clone(),
                });
                match self.verify_incoming(&targets).await {
                    Some(end) => end,
                    None => match self.setup(targets).await {
                        Ok(()) => self.confirmed().await,
                        Err(end) => end,
                    },
                }
            }
        };
        self.finish(end).await;
        self.sh.counters.active.fetch_sub(1, Ordering::Relaxed);
        self.sh.calls_done.notify_waiters();
    }

    fn event(&self, kind: EventKind) {
        tracing::info!(call = %self.id, correlation = %self.correlation, event = ?kind, "call event");
        let _ = self.sh.events.send(CallEvent {
            call_id: self.id.clone(),
            correlation_id: self.correlation.clone(),
            kind,
        });
    }

    /// Answers the caller's INVITE.
    fn answer_a(&mut self, mut resp: Response) {
        if (101..300).contains(&resp.status) {
            resp.headers.push("Contact", self.a_local.contact("kordon"));
        }
        if resp.status >= 200 {
            self.a_answered = true;
        }
        let txn = self.a_txn;
        self.sh.ep.with(|g| g.respond(txn, resp));
    }

    fn reject_a(&mut self, status: u16, reason: &str) {
        if self.a_answered {
            return;
        }
        let mut r = response_to(&self.a_req, status, &self.a_tag);
        if !reason.is_empty() {
            r.reason = reason.to_string();
        }
        if status == 503 {
            r.headers
                .push("Retry-After", self.sh.cfg.timers.retry_after_s.to_string());
        }
        self.answer_a(r);
    }

    /// The operator behind trunk `name` when it is an interconnect (an
    /// operator id that is not one of the verification node's).
    fn interconnect(&self, node: &crate::verify::Node, name: &str) -> Option<u32> {
        let op = self.sh.trunks.get(name)?.cfg.operator_id?;
        (!node.state().cfg.is_own_operator(op)).then_some(op)
    }

    fn verify_numbers(&self) -> (String, String) {
        let a = self
            .rec
            .a_e164
            .clone()
            .unwrap_or_else(|| self.rec.a_number.clone());
        let b = self
            .rec
            .b_e164
            .clone()
            .unwrap_or_else(|| self.rec.b_number.clone());
        (a, b)
    }

    /// A call from an interconnect trunk is classified and verified by the
    /// verification node before any INVITE leaves; a release answers the
    /// caller 403 with the Q.850 cause in a Reason header.
    async fn verify_incoming(&mut self, targets: &[Target]) -> Option<End> {
        let node = self.sh.verify.clone()?;
        let Some(Caller::Trunk(name)) = &self.caller else {
            return None;
        };
        let id_src = self.interconnect(&node, name)?;
        let id_dst = targets.iter().find_map(|t| match t {
            Target::Trunk(n) => self.sh.trunks.get(n)?.cfg.operator_id,
            Target::User { .. } => None,
        });
        let (a, b) = self.verify_numbers();
        let req = crate::verify::CheckRequest {
            a,
            b,
            c: self.rec.original_called.clone(),
            d: None,
            id_src: Some(id_src),
            id_dst,
            call_id: self.id.clone(),
        };
        // The caller may give up while the far node is asked.
        let check = node.check(&req, "sip");
        tokio::pin!(check);
        let out = loop {
            tokio::select! {
                out = &mut check => break out,
                input = self.rx.recv() => match input {
                    Some(Input::Cancel) => {
                        self.reject_a(487, "");
                        return Some(End::new(487, "cancelled by caller", Disposition::Cancelled));
                    }
                    Some(other) => self.deferred.push(other),
                    None => {
                        return Some(End::new(500, "call task lost its input", Disposition::Failed));
                    }
                },
            }
        };
        let crate::verify::Verdict::Release(cause) = out.verdict else {
            return None;
        };
        let why = crate::verify::records::code::name(out.code);
        let mut r = response_to(&self.a_req, 403, &self.a_tag);
        r.reason = "Forbidden - call verification failed".into();
        r.headers
            .push("Reason", format!("Q.850;cause={cause};text=\"{why}\""));
        self.answer_a(r);
        self.sh
            .counters
            .verify_released
            .fetch_add(1, Ordering::Relaxed);
        Some(End::new(
            403,
            format!("call verification: {why} (Q.850 cause {cause})"),
            Disposition::Forbidden,
        ))
    }

    /// A call from our network to an interconnect trunk is registered with
    /// the verification node before its INVITE leaves, so the far node's
    /// question cannot overtake it.
    fn register_outgoing(&self, trunk: &str) {
        let Some(node) = self.sh.verify.clone() else {
            return;
        };
        let Some(id_dst) = self.interconnect(&node, trunk) else {
            return;
        };
        if let Some(Caller::Trunk(src)) = &self.caller {
            if self.interconnect(&node, src).is_some() {
                // Transit: the originating operator registered it.
                return;
            }
        }
        let (a, b) = self.verify_numbers();
        let out = node.register(&crate::verify::RegisterRequest {
            a,
            b,
            id_dst,
            call_id: self.id.clone(),
        });
        if out.verdict != crate::verify::Verdict::Registered {
            tracing::warn!(call = %self.id, reason = ?out.detail, "outgoing call not registered for verification");
        }
    }

    /// Source, rate, identity, numbers, policy and destination. `Err(None)`
    /// = challenged, nothing more to do.
    fn admit(&mut self) -> Result<Vec<Target>, Option<End>> {
        let sh = self.sh.clone();
        let req = self.a_req.clone();
        let trunk = sh.trunks.identify(self.a_peer.addr, self.a_peer.iface);
        let caller = match trunk {
            Some(t) => {
                self.rec.ingress_trunk = Some(t.cfg.name.clone());
                if t.cfg.trust_pai {
                    if let Some(Ok(pai)) =
                        req.headers.get("P-Asserted-Identity").map(NameAddr::parse)
                    {
                        self.rec.a_number = user_of(&pai.uri);
                    }
                }
                Caller::Trunk(t.cfg.name.clone())
            }
            None => {
                if sh.cfg.unknown_sources == super::config::UnknownSources::Reject {
                    self.reject_a(403, "Forbidden - unknown source");
                    return Err(Some(End::new(403, "unknown source", Disposition::Rejected)));
                }
                let outcome = Shared::lock(&sh.registrar).authenticate(&req, unix_now());
                match outcome {
                    AuthOutcome::Authenticated { user } => {
                        // A NATed user's media comes from its signalling address.
                        self.expected_a = Some(self.a_peer.addr.ip());
                        self.rec.user = Some(user.clone());
                        Caller::User(user)
                    }
                    AuthOutcome::Respond(resp) => {
                        self.a_answered = true;
                        let txn = self.a_txn;
                        sh.ep.with(|g| g.respond(txn, resp));
                        return Err(None);
                    }
                }
            }
        };
        self.caller = Some(caller.clone());
        if let Some(orig) = req
            .headers
            .get("Diversion")
            .or_else(|| req.headers.get("History-Info"))
            .and_then(|v| NameAddr::parse(v.split(',').next().unwrap_or(v)).ok())
        {
            self.rec.original_called = Some(user_of(&orig.uri));
        }
        let numbering = &sh.cfg.numbering;
        self.rec.a_e164 = normalize(&self.rec.a_number, numbering)
            .ok()
            .map(|e| e.to_string());
        let b_user = self.rec.b_number.clone();
        let b_e164 = normalize(&b_user, numbering).ok();
        self.rec.b_e164 = b_e164.as_ref().map(ToString::to_string);
        // Class of service of a calling user.
        if let Caller::User(u) = &caller {
            let cos_name = Shared::lock(&sh.registrar)
                .user(u)
                .map(|c| c.cos.clone())
                .unwrap_or_default();
            if let (Some(cos), Some(dest)) = (sh.cos.get(&cos_name), b_e164.as_ref()) {
                if let CosDecision::Deny(why) = cos.check(dest, Utc::now()) {
                    let reason = why.to_string();
                    self.reject_a(403, &format!("Forbidden - {reason}"));
                    return Err(Some(End::new(403, reason, Disposition::Forbidden)));
                }
            }
        }
        // Destination: a registered user, else the routing table.
        let lookup = {
            let reg = Shared::lock(&sh.registrar);
            if reg.user(&b_user).is_some() {
                Some(match reg.lookup(&b_user, unix_now()) {
                    Lookup::Bindings(b) => b
                        .first()
                        .map(|b| (b.source, b.contact.uri.clone()))
                        .ok_or(480),
                    Lookup::NotRegistered => Err(480),
                    Lookup::UnknownUser => Err(404),
                })
            } else {
                None
            }
        };
        let targets = match lookup {
            Some(Ok((peer, contact))) => vec![Target::User { peer, contact }],
            Some(Err(480)) => {
                self.reject_a(480, "Temporarily Unavailable - not registered");
                return Err(Some(End::new(
                    480,
                    "user not registered",
                    Disposition::Rejected,
                )));
            }
            Some(Err(_)) => {
                self.reject_a(404, "Not Found - unknown user");
                return Err(Some(End::new(404, "unknown user", Disposition::Rejected)));
            }
            None => {
                let Some(dest) = b_e164 else {
                    self.reject_a(404, "Not Found - unknown user or number");
                    return Err(Some(End::new(
                        404,
                        "unknown destination",
                        Disposition::Rejected,
                    )));
                };
                let Some(trunks) = sh.routes.lookup(&dest) else {
                    self.reject_a(404, "Not Found - no route");
                    return Err(Some(End::new(404, "no route", Disposition::Rejected)));
                };
                trunks.iter().cloned().map(Target::Trunk).collect()
            }
        };
        // RFC 4028 §8.1: a session interval below ours is refused with 422.
        if let Some(se) = req
            .headers
            .get("Session-Expires")
            .and_then(|v| v.split(';').next())
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            if se < u64::from(sh.cfg.timers.min_se_s) {
                let mut r = response_to(&req, 422, &self.a_tag);
                r.headers.push("Min-SE", sh.cfg.timers.min_se_s.to_string());
                self.answer_a(r);
                return Err(Some(End::new(
                    422,
                    "session interval too small",
                    Disposition::Rejected,
                )));
            }
        }
        // Admission on the ingress trunk.
        if let Caller::Trunk(t) = &caller {
            if let Err(e) = Shared::lock(&sh.admission).try_acquire(t) {
                self.reject_a(503, "Service Unavailable - trunk at capacity");
                return Err(Some(End::new(503, e.to_string(), Disposition::Rejected)));
            }
            self.admitted.push(t.clone());
        }
        Ok(targets)
    }

    fn target_route(&self, t: &Target) -> Option<(Peer, Uri, Option<String>, String)> {
        match t {
            Target::Trunk(name) => {
                let trunk = self.sh.trunks.get(name)?;
                let mut uri = Uri::sip(
                    Some(&self.rec.b_number),
                    &trunk.addr.ip().to_string(),
                    Some(trunk.addr.port()),
                );
                match trunk.cfg.transport {
                    Transport::Udp => {}
                    Transport::Tcp => uri.params.set("transport", Some("tcp".into())),
                    Transport::Tls => uri.params.set("transport", Some("tls".into())),
                }
                let media = if trunk.cfg.media_interface.is_empty() {
                    self.sh
                        .ifaces
                        .get(usize::from(trunk.iface))
                        .map(|i| i.media_interface.clone())
                        .unwrap_or_default()
                } else {
                    trunk.cfg.media_interface.clone()
                };
                Some((trunk.peer(), uri, Some(name.clone()), media))
            }
            Target::User { peer, contact } => {
                let media = self
                    .sh
                    .ifaces
                    .get(usize::from(peer.iface))
                    .map(|i| i.media_interface.clone())
                    .unwrap_or_default();
                Some((*peer, contact.clone(), None, media))
            }
        }
    }

    /// From the first attempt to an answer (Ok) or a final failure.
    async fn setup(&mut self, targets: Vec<Target>) -> Result<(), End> {
        let a_offer = has_sdp((&self.a_req.headers, &self.a_req.body));
        // Media for the caller's offer, on the first usable target's interface.
        let first = targets.iter().find_map(|t| self.target_route(t));
        if let Some((_, _, _, media)) = &first {
            self.anchor.set_iface_b(media);
        }
        let mut b_offer: Option<Vec<u8>> = None;
        if a_offer {
            let body = self.a_req.body.clone();
            match self
                .anchor
                .apply(&mut self.sh.media.clone(), Side::A, &body, self.expected_a)
                .await
            {
                Ok(sdp) => b_offer = Some(sdp),
                Err(e) => return Err(self.media_failed(e)),
            }
        }
        let no_answer = Instant::now() + Duration::from_secs(self.sh.cfg.timers.no_answer_s);
        let mut last: Option<End> = None;
        let mut any_tried = false;
        for target in targets {
            let Some((peer, uri, trunk, _media)) = self.target_route(&target) else {
                continue;
            };
            if let Some(name) = &trunk {
                let up = self.sh.trunks.get(name).is_some_and(|t| t.is_up());
                if !up {
                    tracing::debug!(call = %self.id, trunk = %name, "trunk down: skipped");
                    continue;
                }
                let admitted = Shared::lock(&self.sh.admission).try_acquire(name);
                if admitted.is_err() {
                    let now = Utc::now();
                    self.rec.attempts.push(EgressAttempt {
                        trunk: name.clone(),
                        start: now,
                        end: now,
                        sip_status: 503,
                        reason: "trunk at capacity".into(),
                    });
                    last = Some(End::new(503, "trunk at capacity", Disposition::Failed));
                    continue;
                }
                self.admitted.push(name.clone());
                // Registered once the INVITE will surely leave, just before.
                self.register_outgoing(name);
            }
            any_tried = true;
            let started = Utc::now();
            let outcome = self
                .attempt(peer, uri, trunk.clone(), b_offer.clone(), no_answer)
                .await;
            let (status, reason) = match &outcome {
                Attempt::Answered => (200, "answered".to_string()),
                Attempt::Final(s, r) => (*s, r.clone()),
                Attempt::Timeout => (408, "no response".to_string()),
                Attempt::Cancelled => (487, "cancelled by caller".to_string()),
                Attempt::NoAnswer => (480, "no answer".to_string()),
                Attempt::Aborted(end) => (end.status, end.reason.clone()),
            };
            if let Some(name) = &trunk {
                self.rec.attempts.push(EgressAttempt {
                    trunk: name.clone(),
                    start: started,
                    end: Utc::now(),
                    sip_status: status,
                    reason: reason.clone(),
                });
            }
            match outcome {
                Attempt::Answered => {
                    self.rec.egress_trunk = trunk;
                    return Ok(());
                }
                Attempt::Final(s, r) if fails_over(s) => {
                    self.release_b_admission(&trunk);
                    last = Some(End::new(s, r, Disposition::Failed));
                }
                Attempt::Timeout => {
                    self.release_b_admission(&trunk);
                    last = Some(End::new(408, "no response", Disposition::Failed));
                }
                Attempt::Final(s, r) => {
                    self.rec.egress_trunk = trunk;
                    let disposition = match s {
                        486 | 600 => Disposition::Busy,
                        403 => Disposition::Forbidden,
                        _ => Disposition::Rejected,
                    };
                    self.reject_a(s, &r);
                    return Err(End::new(s, r, disposition));
                }
                Attempt::Cancelled => {
                    return Err(End::new(487, "cancelled by caller", Disposition::Cancelled));
                }
                Attempt::NoAnswer => {
                    self.reject_a(480, "Temporarily Unavailable - no answer");
                    return Err(End::new(480, "no answer", Disposition::NoAnswer));
                }
                Attempt::Aborted(end) => return Err(end),
            }
        }
        let end = match last {
            Some(e) if e.status == 408 => End::new(408, "no route answered", Disposition::Failed),
            Some(e) => End::new(
                503,
                format!("routes exhausted (last {} {})", e.status, e.reason),
                Disposition::Failed,
            ),
            None if !any_tried => End::new(503, "no trunk available", Disposition::Failed),
            None => End::new(503, "routes exhausted", Disposition::Failed),
        };
        let phrase = if end.status == 408 {
            "Request Timeout".to_string()
        } else {
            format!("Service Unavailable - {}", end.reason)
        };
        self.reject_a(end.status, &phrase);
        Err(end)
    }

    fn release_b_admission(&mut self, trunk: &Option<String>) {
        if let Some(name) = trunk {
            if let Some(pos) = self.admitted.iter().rposition(|t| t == name) {
                self.admitted.remove(pos);
                Shared::lock(&self.sh.admission).release(name);
            }
        }
    }

    fn media_failed(&mut self, e: AnchorError) -> End {
        match e {
            AnchorError::Sdp(reason) => {
                self.reject_a(488, &format!("Not Acceptable Here - {reason}"));
                End::new(488, reason, Disposition::Failed)
            }
            AnchorError::Media(err) => {
                self.sh
                    .counters
                    .media_failures
                    .fetch_add(1, Ordering::Relaxed);
                self.event(EventKind::MediaFailure {
                    reason: err.to_string(),
                });
                self.reject_a(503, "Service Unavailable - media relay");
                End::new(503, format!("media relay: {err}"), Disposition::Failed)
            }
        }
    }

    fn b_invite(
        &self,
        uri: Uri,
        local: &LocalAddr,
        trunk: Option<&str>,
        sdp: Option<&[u8]>,
    ) -> Request {
        let sh = &self.sh;
        let mut r = Request::new(Method::Invite, uri.clone());
        r.headers.push("Via", local.via());
        let mf = self
            .a_req
            .max_forwards()
            .ok()
            .flatten()
            .unwrap_or(70)
            .saturating_sub(1)
            .min(70);
        r.headers.push("Max-Forwards", mf.to_string());
        let display = self
            .a_req
            .from()
            .ok()
            .and_then(|f| f.display)
            .map(|d| format!("\"{}\" ", d.replace('"', "")))
            .unwrap_or_default();
        r.headers.push(
            "From",
            format!(
                "{display}<sip:{}@{}>;tag={}",
                self.rec.a_number,
                local.host,
                random_token(10)
            ),
        );
        r.headers.push(
            "To",
            format!("<sip:{}@{}>", self.rec.b_number, uri.host_port()),
        );
        r.headers.push("Call-ID", random_token(24));
        r.headers.push(
            "CSeq",
            CSeq {
                seq: 1,
                method: Method::Invite,
            }
            .to_string(),
        );
        r.headers.push("Contact", local.contact("kordon"));
        r.headers.push("Allow", super::ALLOW);
        r.headers.push("Supported", "100rel, timer");
        if sh.cfg.timers.session_expires_s > 0 {
            r.headers.push(
                "Session-Expires",
                format!("{};refresher=uac", sh.cfg.timers.session_expires_s),
            );
            r.headers.push("Min-SE", sh.cfg.timers.min_se_s.to_string());
        }
        r.headers.push("User-Agent", sh.cfg.user_agent.clone());
        // Identity (RFC 3325): asserted only when Kordon vouches for it.
        let policy = trunk
            .and_then(|t| sh.trunks.get(t))
            .map(|t| t.cfg.privacy)
            .unwrap_or(super::config::PrivacyPolicy::Pass);
        let vouched = match &self.caller {
            Some(Caller::User(_)) => true,
            Some(Caller::Trunk(t)) => {
                sh.trunks.get(t).is_some_and(|t| t.cfg.trust_pai)
                    && self.a_req.headers.has("P-Asserted-Identity")
            }
            None => false,
        };
        let assert = match policy {
            super::config::PrivacyPolicy::Strip => false,
            super::config::PrivacyPolicy::Pass => vouched,
            super::config::PrivacyPolicy::Set => true,
        };
        if assert {
            let number = self
                .rec
                .a_e164
                .clone()
                .unwrap_or_else(|| self.rec.a_number.clone());
            r.headers.push(
                "P-Asserted-Identity",
                format!("<sip:{number}@{}>", local.host),
            );
            if let Some(p) = self.a_req.headers.get("Privacy") {
                r.headers.push("Privacy", p.to_string());
            }
        }
        if let Some(orig) = &self.rec.original_called {
            r.headers.push(
                "Diversion",
                format!("<sip:{orig}@{}>;reason=unknown", local.host),
            );
        }
        if let Some(sdp) = sdp {
            r.headers.push("Content-Type", "application/sdp");
            r.body = Bytes::copy_from_slice(sdp);
        }
        r
    }

    /// One egress attempt, until answered or failed.
    async fn attempt(
        &mut self,
        peer: Peer,
        uri: Uri,
        trunk: Option<String>,
        b_offer: Option<Vec<u8>>,
        no_answer: Instant,
    ) -> Attempt {
        let Some(local) = self.sh.local_addr(peer.iface, peer.transport) else {
            return Attempt::Final(503, "no local address for the trunk's interface".into());
        };
        let invite = self.b_invite(uri, &local, trunk.as_deref(), b_offer.as_deref());
        let tx = self.tx.clone();
        let (txn, _) = self
            .sh
            .ep
            .with(|g| g.send_request(invite.clone(), peer, &tx));
        self.txns.push(txn);
        self.b = Some(BLeg {
            txn,
            invite,
            peer,
            local,
            dialog: None,
            timer: None,
            ack: None,
        });
        let first_response =
            Instant::now() + Duration::from_millis(self.sh.cfg.timers.attempt_timeout_ms);
        let mut got_response = false;
        let mut ringing_sent = false;
        let mut last_b_rseq: Option<u32> = None;
        // A reliable provisional sent to A and not yet PRACKed: (resp, next, interval, give up).
        let mut reliable: Option<(Response, Instant, Duration, Instant)> = None;
        let t1 = Duration::from_millis(self.sh.cfg.timers.t1_ms);
        loop {
            let retransmit_at = reliable.as_ref().map(|r| r.1);
            let input = tokio::select! {
                i = self.rx.recv() => i,
                _ = stopped(&mut self.stop) => {
                    self.cancel_b();
                    self.reject_a(503, "Service Unavailable - shutting down");
                    return Attempt::Aborted(End::new(503, "shutting down", Disposition::Failed));
                }
                () = tokio::time::sleep_until(no_answer) => {
                    self.cancel_b();
                    return Attempt::NoAnswer;
                }
                () = tokio::time::sleep_until(first_response), if !got_response => {
                    self.cancel_b();
                    return Attempt::Timeout;
                }
                () = sleep_opt(retransmit_at) => {
                    if let Some((resp, next, interval, give_up)) = reliable.as_mut() {
                        if Instant::now() >= *give_up {
                            reliable = None;
                        } else {
                            let r = resp.clone();
                            let txn = self.a_txn;
                            self.sh.ep.with(|g| g.respond(txn, r));
                            *interval = (*interval * 2).min(Duration::from_secs(4));
                            *next = Instant::now() + *interval;
                        }
                    }
                    continue;
                }
            };
            let Some(input) = input else {
                return Attempt::Aborted(End::new(
                    500,
                    "call task lost its input",
                    Disposition::Failed,
                ));
            };
            match input {
                Input::Cancel => {
                    self.cancel_b();
                    self.reject_a(487, "");
                    return Attempt::Cancelled;
                }
                Input::Response(t, response) if t == txn => {
                    got_response = true;
                    let status = response.status;
                    // RFC 3262 §4: a reliable provisional whose RSeq is not
                    // above the last one is a retransmission, not news.
                    if status > 100
                        && status < 200
                        && response.headers.has_token("Require", "100rel")
                    {
                        let rseq = response
                            .headers
                            .get("RSeq")
                            .and_then(|v| v.trim().parse::<u32>().ok());
                        if rseq.is_some() && rseq <= last_b_rseq {
                            continue;
                        }
                        last_b_rseq = rseq.or(last_b_rseq);
                    }
                    if status < 200 {
                        if status == 100 {
                            continue;
                        }
                        if let Err(end) = self.b_provisional(&response).await {
                            self.cancel_b();
                            return Attempt::Aborted(end);
                        }
                        let relay = self.relay_provisional(&response).await;
                        match relay {
                            Ok(Some(resp)) => {
                                if resp.headers.has_token("Require", "100rel") {
                                    reliable = Some((
                                        resp,
                                        Instant::now() + t1,
                                        t1,
                                        Instant::now() + t1 * 64,
                                    ));
                                }
                            }
                            Ok(None) => {}
                            Err(end) => {
                                self.cancel_b();
                                return Attempt::Aborted(end);
                            }
                        }
                        if !ringing_sent {
                            ringing_sent = true;
                            self.event(EventKind::Ringing);
                        }
                        continue;
                    }
                    if status < 300 {
                        return match self.b_answered(*response).await {
                            Ok(()) => Attempt::Answered,
                            Err(end) => Attempt::Aborted(end),
                        };
                    }
                    return Attempt::Final(status, response.reason.clone());
                }
                Input::Failed { txn: t, timeout } if t == txn => {
                    return if timeout {
                        Attempt::Timeout
                    } else {
                        Attempt::Final(503, "transport failure".into())
                    };
                }
                Input::Request(r) if r.request.method == Method::Prack => {
                    reliable = None;
                    self.sh
                        .ep
                        .with(|g| g.respond(r.txn, Response::for_request(&r.request, 200)));
                }
                Input::Request(r) => {
                    let (t, request) = (r.txn, &r.request);
                    // Nothing else is valid on the early dialog towards A.
                    let status = if request.method == Method::Bye {
                        481
                    } else {
                        491
                    };
                    self.sh
                        .ep
                        .with(|g| g.respond(t, Response::for_request(request, status)));
                }
                _ => {}
            }
        }
    }

    fn cancel_b(&mut self) {
        if let Some(b) = &self.b {
            let txn = b.txn;
            let (cancel, _) = self
                .sh
                .ep
                .with(|g| g.txn.cancel(std::time::Instant::now(), txn));
            if let Some(c) = cancel {
                self.txns.push(c);
            }
        }
    }

    /// Early dialog towards B; PRACK when B sends reliably (RFC 3262).
    async fn b_provisional(&mut self, resp: &Response) -> Result<(), End> {
        let Some(b) = self.b.as_mut() else {
            return Ok(());
        };
        if resp
            .to()
            .ok()
            .and_then(|t| t.tag().map(str::to_string))
            .is_none()
        {
            return Ok(());
        }
        if b.dialog.is_none() {
            if let Ok(d) = Dialog::uac(&b.invite, resp, b.peer, b.local.clone()) {
                let key = (d.call_id.clone(), d.local_tag.clone());
                b.dialog = Some(d);
                let tx = self.tx.clone();
                self.sh.ep.with(|g| g.add_dialog(key.clone(), &tx));
                self.dialogs.push(key);
            }
        }
        if resp.headers.has_token("Require", "100rel") {
            if let (Some(rseq), Some(d)) = (resp.headers.get("RSeq"), b.dialog.as_mut()) {
                let cseq = b.invite.cseq().map(|c| c.seq).unwrap_or(1);
                let mut prack = d.request(Method::Prack);
                prack
                    .headers
                    .push("RAck", format!("{} {cseq} INVITE", rseq.trim()));
                let peer = b.peer;
                let tx = self.tx.clone();
                let (t, _) = self.sh.ep.with(|g| g.send_request(prack, peer, &tx));
                self.txns.push(t);
            }
        }
        Ok(())
    }

    /// Relays a 18x to A (with the media answer when it carries SDP).
    async fn relay_provisional(&mut self, resp: &Response) -> Result<Option<Response>, End> {
        let mut out = response_to(&self.a_req, resp.status, &self.a_tag);
        out.reason = resp.reason.clone();
        if has_sdp((&resp.headers, &resp.body)) && has_sdp((&self.a_req.headers, &self.a_req.body))
        {
            let body = resp.body.clone();
            let sdp = match self
                .anchor
                .apply(&mut self.sh.media.clone(), Side::B, &body, None)
                .await
            {
                Ok(s) => s,
                Err(e) => return Err(self.media_failed(e)),
            };
            out.headers.push("Content-Type", "application/sdp");
            out.body = Bytes::from(sdp);
            let a_supports = self.a_req.headers.has_token("Supported", "100rel")
                || self.a_req.headers.has_token("Require", "100rel");
            if a_supports {
                self.a_rseq += 1;
                out.headers.push("Require", "100rel");
                out.headers.push("RSeq", self.a_rseq.to_string());
            }
        }
        out.headers.push("Contact", self.a_local.contact("kordon"));
        self.answer_a_provisional(out.clone());
        Ok(Some(out))
    }

    fn answer_a_provisional(&mut self, resp: Response) {
        let txn = self.a_txn;
        if self.a_dialog.is_none() {
            if let Ok(d) = Dialog::uas(&self.a_req, &self.a_tag, self.a_peer, self.a_local.clone())
            {
                let key = (d.call_id.clone(), d.local_tag.clone());
                let tx = self.tx.clone();
                self.sh.ep.with(|g| g.add_dialog(key.clone(), &tx));
                self.dialogs.push(key);
                self.a_dialog = Some(d);
            }
        }
        self.sh.ep.with(|g| g.respond(txn, resp));
    }

    /// B answered: confirm both dialogs, media, ACK, 200 to A.
    async fn b_answered(&mut self, resp: Response) -> Result<(), End> {
        let now = Instant::now();
        let a_offered = has_sdp((&self.a_req.headers, &self.a_req.body));
        let mut a_body = None;
        if has_sdp((&resp.headers, &resp.body)) {
            let body = resp.body.clone();
            match self
                .anchor
                .apply(&mut self.sh.media.clone(), Side::B, &body, None)
                .await
            {
                Ok(s) => a_body = Some(s),
                Err(e) => {
                    self.ack_and_bye_b(&resp);
                    return Err(self.media_failed(e));
                }
            }
        }
        let Some(b) = self.b.as_mut() else {
            return Err(End::new(500, "no B leg", Disposition::Failed));
        };
        let mut dialog = match Dialog::uac(&b.invite, &resp, b.peer, b.local.clone()) {
            Ok(d) => d,
            Err(e) => {
                return Err(End::new(
                    502,
                    format!("callee's 2xx unusable: {e}"),
                    Disposition::Failed,
                ));
            }
        };
        dialog.local_seq = b
            .invite
            .cseq()
            .map(|c| c.seq)
            .unwrap_or(1)
            .max(dialog.local_seq);
        let key = (dialog.call_id.clone(), dialog.local_tag.clone());
        let tx = self.tx.clone();
        self.sh.ep.with(|g| g.add_dialog(key.clone(), &tx));
        self.dialogs.push(key);
        // Session timer towards B, from its answer.
        let min_se = self.sh.cfg.timers.min_se_s;
        b.timer = resp.headers.get("Session-Expires").and_then(|v| {
            let (secs, uas_refreshes) = session_expires(v, min_se)?;
            let mut t = SessionTimer {
                interval: Duration::from_secs(secs),
                we_refresh: !uas_refreshes,
                deadline: now,
            };
            t.reset(now);
            Some(t)
        });
        let invite_seq = b.invite.cseq().map(|c| c.seq).unwrap_or(1);
        if a_offered || a_body.is_none() {
            let ack = dialog.ack(invite_seq);
            let peer = b.peer;
            b.ack = Some(ack.clone());
            self.sh.ep.with(|g| g.send_ack(ack, peer));
        }
        b.dialog = Some(dialog);
        // 200 to A.
        let mut ok = response_to(&self.a_req, 200, &self.a_tag);
        ok.headers.push("Allow", super::ALLOW);
        ok.headers.push("Supported", "100rel, timer");
        if let Some(se) = self.a_session_expires() {
            let refresher = if se.1 { "uas" } else { "uac" };
            ok.headers
                .push("Session-Expires", format!("{};refresher={refresher}", se.0));
            ok.headers.push("Require", "timer");
            let mut t = SessionTimer {
                interval: Duration::from_secs(se.0),
                we_refresh: se.1,
                deadline: now,
            };
            t.reset(now);
            self.a_timer = Some(t);
        }
        if let Some(sdp) = a_body {
            ok.headers.push("Content-Type", "application/sdp");
            ok.body = Bytes::from(sdp);
        }
        if self.a_dialog.is_none() {
            if let Ok(d) = Dialog::uas(&self.a_req, &self.a_tag, self.a_peer, self.a_local.clone())
            {
                let key = (d.call_id.clone(), d.local_tag.clone());
                self.sh.ep.with(|g| g.add_dialog(key.clone(), &tx));
                self.dialogs.push(key);
                self.a_dialog = Some(d);
            }
        }
        self.answer_a(ok);
        self.rec.answer = Some(Utc::now());
        self.sh.counters.answered.fetch_add(1, Ordering::Relaxed);
        self.event(EventKind::Answered);
        Ok(())
    }

    /// The session interval negotiated with A (RFC 4028): (seconds, whether
    /// Kordon refreshes).
    fn a_session_expires(&self) -> Option<(u64, bool)> {
        let v = self.a_req.headers.get("Session-Expires")?;
        session_expires(v, self.sh.cfg.timers.min_se_s)
    }

    fn ack_and_bye_b(&mut self, resp: &Response) {
        if let Some(b) = &self.b {
            if let Ok(mut d) = Dialog::uac(&b.invite, resp, b.peer, b.local.clone()) {
                let seq = b.invite.cseq().map(|c| c.seq).unwrap_or(1);
                let ack = d.ack(seq);
                d.local_seq = seq;
                let bye = d.request(Method::Bye);
                let peer = b.peer;
                let tx = self.tx.clone();
                self.sh.ep.with(|g| {
                    g.send_ack(ack, peer);
                    let t = g.send_request(bye, peer, &tx);
                    g.forget(&[t], &[]);
                });
            }
        }
    }

    /// The answered call until one side hangs up or a timer ends it.
    async fn confirmed(&mut self) -> End {
        let max = match self.sh.cfg.timers.max_duration_s {
            0 => None,
            s => Some(Instant::now() + Duration::from_secs(s)),
        };
        // The offerless case: B's offer went to A in the 200; A's answer comes in its ACK.
        let mut waiting_ack_answer = !has_sdp((&self.a_req.headers, &self.a_req.body))
            && self.b.as_ref().is_some_and(|b| b.dialog.is_some());
        // A held call keeps only what its dialogs need: the INVITEs' bodies
        // and most headers go (memory per call is a budget, see RESULTS.md).
        slim(&mut self.a_req);
        if let Some(b) = self.b.as_mut() {
            slim(&mut b.invite);
        }
        loop {
            let a_deadline = self.a_timer.map(|t| t.deadline);
            let b_deadline = self.b.as_ref().and_then(|b| b.timer).map(|t| t.deadline);
            let input = if let Some(d) = self.deferred.pop() {
                Some(d)
            } else {
                tokio::select! {
                    i = self.rx.recv() => i,
                    _ = stopped(&mut self.stop) => {
                        self.bye_both();
                        return End::new(200, "shutting down", Disposition::Answered);
                    }
                    () = sleep_opt(max) => {
                        self.bye_both();
                        return End::new(200, "maximum call duration", Disposition::Answered);
                    }
                    () = sleep_opt(a_deadline) => {
                        if let Some(r) = self.timer_fired(Side::A).await {
                            return r;
                        }
                        continue;
                    }
                    () = sleep_opt(b_deadline) => {
                        if let Some(r) = self.timer_fired(Side::B).await {
                            return r;
                        }
                        continue;
                    }
                }
            };
            let Some(input) = input else {
                return End::new(500, "call task lost its input", Disposition::Answered);
            };
            match input {
                Input::Ack(request) => {
                    if waiting_ack_answer && has_sdp((&request.headers, &request.body)) {
                        waiting_ack_answer = false;
                        let body = request.body.clone();
                        match self
                            .anchor
                            .apply(&mut self.sh.media.clone(), Side::A, &body, self.expected_a)
                            .await
                        {
                            Ok(sdp) => self.ack_b_with(Some(sdp)),
                            Err(e) => {
                                tracing::warn!(call = %self.id, error = %e, "answer in ACK unusable");
                                self.ack_b_with(None);
                                self.bye_both();
                                return End::new(
                                    488,
                                    "answer in ACK unusable",
                                    Disposition::Answered,
                                );
                            }
                        }
                    } else if waiting_ack_answer {
                        waiting_ack_answer = false;
                        self.ack_b_with(None);
                    }
                }
                Input::AckTimeout => {
                    self.bye_both();
                    return End::new(
                        408,
                        "caller never acknowledged the answer",
                        Disposition::Answered,
                    );
                }
                Input::Request(r) => {
                    let InRequest { txn, request, peer } = *r;
                    let side = self.side_of(&request);
                    if let Some(end) = self.in_dialog(side, txn, request, peer).await {
                        return end;
                    }
                }
                Input::Response(t, r) if (200..300).contains(&r.status) => {
                    // B's 2xx again: our ACK was lost.
                    if let Some(b) = self.b.as_ref().filter(|b| b.txn == t) {
                        if let Some(ack) = b.ack.clone() {
                            let peer = b.peer;
                            self.sh.ep.with(|g| g.send_ack(ack, peer));
                        }
                    }
                }
                Input::Response(..) | Input::Failed { .. } | Input::Cancel => {}
            }
        }
    }

    fn ack_b_with(&mut self, sdp: Option<Vec<u8>>) {
        if let Some(b) = &self.b {
            if let Some(d) = &b.dialog {
                let seq = b.invite.cseq().map(|c| c.seq).unwrap_or(1);
                let mut ack = d.ack(seq);
                if let Some(s) = sdp {
                    ack.headers.push("Content-Type", "application/sdp");
                    ack.body = Bytes::from(s);
                }
                let peer = b.peer;
                self.sh.ep.with(|g| g.send_ack(ack.clone(), peer));
                if let Some(b) = self.b.as_mut() {
                    b.ack = Some(ack);
                }
            }
        }
    }

    fn side_of(&self, req: &Request) -> Side {
        let tag = req.to().ok().and_then(|t| t.tag().map(str::to_string));
        if req.call_id() == self.a_req.call_id() && tag.as_deref() == Some(self.a_tag.as_str()) {
            Side::A
        } else {
            Side::B
        }
    }

    /// Forgets a finished in-call transaction (refreshes, re-INVITEs), so a
    /// long call does not collect them.
    fn done_with(&mut self, txn: TxnId) {
        self.txns.retain(|t| *t != txn);
        self.sh.ep.with(|g| g.forget(&[txn], &[]));
    }

    fn timer_mut(&mut self, side: Side) -> Option<&mut SessionTimer> {
        match side {
            Side::A => self.a_timer.as_mut(),
            Side::B => self.b.as_mut().and_then(|b| b.timer.as_mut()),
        }
    }

    fn dialog_mut(&mut self, side: Side) -> Option<&mut Dialog> {
        match side {
            Side::A => self.a_dialog.as_mut(),
            Side::B => self.b.as_mut().and_then(|b| b.dialog.as_mut()),
        }
    }

    async fn timer_fired(&mut self, side: Side) -> Option<End> {
        let timer = match side {
            Side::A => self.a_timer,
            Side::B => self.b.as_ref().and_then(|b| b.timer),
        }?;
        if !timer.we_refresh {
            self.bye_both();
            return Some(End::new(
                408,
                format!("session timer expired ({side:?} side)"),
                Disposition::Answered,
            ));
        }
        // Kordon refreshes with an UPDATE without SDP (RFC 4028 §9).
        let interval = timer.interval.as_secs();
        let peer = match side {
            Side::A => self.a_peer,
            Side::B => self.b.as_ref().map(|b| b.peer)?,
        };
        let d = self.dialog_mut(side)?;
        let mut upd = d.request(Method::Update);
        upd.headers
            .push("Session-Expires", format!("{interval};refresher=uac"));
        upd.headers.push("Supported", "timer");
        let tx = self.tx.clone();
        let (t, _) = self.sh.ep.with(|g| g.send_request(upd, peer, &tx));
        self.txns.push(t);
        let resp = self.wait_response(t).await;
        self.done_with(t);
        match resp {
            Some(r) if r.status < 300 => {
                let now = Instant::now();
                if let Some(t) = self.timer_mut(side) {
                    t.reset(now);
                }
                None
            }
            Some(r) if r.status == 405 || r.status == 501 => {
                // The peer does not do UPDATE: it has the session anyway.
                match side {
                    Side::A => self.a_timer = None,
                    Side::B => {
                        if let Some(b) = self.b.as_mut() {
                            b.timer = None;
                        }
                    }
                }
                None
            }
            _ => {
                self.bye_both();
                Some(End::new(
                    408,
                    format!("session refresh failed ({side:?} side)"),
                    Disposition::Answered,
                ))
            }
        }
    }

    /// Waits for the final response of `txn`, keeping other input for later.
    async fn wait_response(&mut self, txn: TxnId) -> Option<Response> {
        let deadline = Instant::now() + Duration::from_millis(self.sh.cfg.timers.t1_ms * 64);
        loop {
            let input = tokio::select! {
                i = self.rx.recv() => i?,
                () = tokio::time::sleep_until(deadline) => return None,
            };
            match input {
                Input::Response(t, response) if t == txn => {
                    if response.status >= 200 {
                        return Some(*response);
                    }
                }
                Input::Failed { txn: t, .. } if t == txn => return None,
                Input::Response(..) => {}
                other => self.deferred.insert(0, other),
            }
        }
    }

    /// A request inside the confirmed dialog of `side`.
    async fn in_dialog(
        &mut self,
        side: Side,
        txn: TxnId,
        req: Request,
        _peer: Peer,
    ) -> Option<End> {
        let ok_cseq = self
            .dialog_mut(side)
            .map(|d| d.accept_remote_cseq(&req).is_ok())
            .unwrap_or(false);
        if !ok_cseq {
            let mut r = Response::for_request(&req, 500);
            r.reason = "Server Internal Error - CSeq out of order".into();
            self.sh.ep.with(|g| g.respond(txn, r));
            return None;
        }
        match req.method {
            Method::Bye => {
                self.sh
                    .ep
                    .with(|g| g.respond(txn, Response::for_request(&req, 200)));
                self.bye(side.other());
                let who = if side == Side::A { "caller" } else { "callee" };
                Some(End::new(
                    200,
                    format!("{who} hung up"),
                    Disposition::Answered,
                ))
            }
            Method::Invite | Method::Update => {
                self.refresh(side, txn, req).await;
                None
            }
            Method::Prack | Method::Options | Method::Info => {
                self.sh
                    .ep
                    .with(|g| g.respond(txn, Response::for_request(&req, 200)));
                None
            }
            _ => {
                let mut r = Response::for_request(&req, 501);
                r.headers.push("Allow", super::ALLOW);
                self.sh.ep.with(|g| g.respond(txn, r));
                None
            }
        }
    }

    /// A re-INVITE or UPDATE from `side`: relayed to the other side with the
    /// media re-anchored (hold, resume, new address), and a session refresh.
    async fn refresh(&mut self, side: Side, txn: TxnId, req: Request) {
        let now = Instant::now();
        if let Some(t) = self.timer_mut(side) {
            t.reset(now);
        }
        if let Some(d) = self.dialog_mut(side) {
            d.refresh_target(req.contact());
        }
        let expected = if side == Side::A {
            self.expected_a
        } else {
            None
        };
        let offer = if has_sdp((&req.headers, &req.body)) {
            match self
                .anchor
                .apply(&mut self.sh.media.clone(), side, &req.body, expected)
                .await
            {
                Ok(s) => Some(s),
                Err(e) => {
                    let status = if matches!(e, AnchorError::Sdp(_)) {
                        488
                    } else {
                        503
                    };
                    let mut r = Response::for_request(&req, status);
                    r.reason = format!("{} - {e}", r.reason);
                    self.sh.ep.with(|g| g.respond(txn, r));
                    return;
                }
            }
        } else {
            None
        };
        let other = side.other();
        let peer = match other {
            Side::A => Some(self.a_peer),
            Side::B => self.b.as_ref().map(|b| b.peer),
        };
        let Some(peer) = peer else { return };
        let Some(d) = self.dialog_mut(other) else {
            return;
        };
        let mut out = d.request(req.method.clone());
        let out_seq = out.cseq().map(|c| c.seq).unwrap_or(1);
        if let Some(s) = &offer {
            out.headers.push("Content-Type", "application/sdp");
            out.body = Bytes::copy_from_slice(s);
        }
        let tx = self.tx.clone();
        let (t, _) = self.sh.ep.with(|g| g.send_request(out, peer, &tx));
        self.txns.push(t);
        let resp = self.wait_response(t).await;
        self.done_with(t);
        let Some(resp) = resp else {
            self.sh
                .ep
                .with(|g| g.respond(txn, Response::for_request(&req, 408)));
            return;
        };
        let mut back = Response::for_request(&req, resp.status);
        back.reason = resp.reason.clone();
        if resp.status < 300 {
            if let Some(d) = self.dialog_mut(other) {
                d.refresh_target(resp.contact());
            }
            if req.method == Method::Invite {
                if let Some(d) = self.dialog_mut(other) {
                    let ack = d.ack(out_seq);
                    self.sh.ep.with(|g| g.send_ack(ack, peer));
                }
            }
            if has_sdp((&resp.headers, &resp.body)) {
                match self
                    .anchor
                    .apply(&mut self.sh.media.clone(), other, &resp.body, None)
                    .await
                {
                    Ok(s) => {
                        back.headers.push("Content-Type", "application/sdp");
                        back.body = Bytes::from(s);
                    }
                    Err(e) => {
                        tracing::warn!(call = %self.id, error = %e, "re-INVITE answer unusable")
                    }
                }
            }
            let local = match side {
                Side::A => self.a_local.clone(),
                Side::B => match self.b.as_ref() {
                    Some(b) => b.local.clone(),
                    None => return,
                },
            };
            back.headers.push("Contact", local.contact("kordon"));
            if let Some(v) = req.headers.get("Session-Expires") {
                back.headers.push("Session-Expires", v.to_string());
                back.headers.push("Require", "timer");
            }
        }
        self.sh.ep.with(|g| g.respond(txn, back));
    }

    fn bye(&mut self, side: Side) {
        let peer = match side {
            Side::A => Some(self.a_peer),
            Side::B => self.b.as_ref().map(|b| b.peer),
        };
        let Some(peer) = peer else { return };
        let Some(d) = self.dialog_mut(side) else {
            return;
        };
        let bye = d.request(Method::Bye);
        let tx = self.tx.clone();
        let (t, _) = self.sh.ep.with(|g| g.send_request(bye, peer, &tx));
        self.txns.push(t);
    }

    fn bye_both(&mut self) {
        self.bye(Side::A);
        self.bye(Side::B);
    }

    fn cleanup_routes(&mut self) {
        let txns = std::mem::take(&mut self.txns);
        let dialogs = std::mem::take(&mut self.dialogs);
        self.sh.ep.with(|g| g.forget(&txns, &dialogs));
    }

    /// Media counters, admission, routes, CDR, event.
    async fn finish(&mut self, end: End) {
        if !self.a_answered {
            let reason = if end.status == 487 {
                String::new()
            } else {
                end.reason.clone()
            };
            self.reject_a(end.status.max(400), &reason);
        }
        if self.anchor.is_active() {
            self.rec.media = self.anchor.delete(&mut self.sh.media.clone()).await;
        }
        for t in std::mem::take(&mut self.admitted) {
            Shared::lock(&self.sh.admission).release(&t);
        }
        // Late responses to our BYEs need no one: forget after a grace period
        // so retransmissions still find their transaction.
        self.cleanup_routes();
        self.rec.end = Utc::now();
        self.rec.disposition = end.disposition;
        self.rec.sip_status = end.status;
        self.rec.reason = end.reason.clone();
        self.event(EventKind::Ended {
            status: end.status,
            cause: end.reason.clone(),
        });
        if let Some(w) = &self.sh.cdr {
            if let Err(e) = w.submit(self.rec.clone()) {
                self.sh.counters.cdr_dropped.fetch_add(1, Ordering::Relaxed);
                tracing::error!(call = %self.id, error = %e, "CDR not queued");
            }
        }
    }
}

/// The result of one egress attempt.
#[derive(Debug)]
enum Attempt {
    Answered,
    Final(u16, String),
    Timeout,
    Cancelled,
    NoAnswer,
    Aborted(End),
}

/// Drops the body and every header but those identifying the request.
fn slim(req: &mut Request) {
    req.body = Bytes::new();
    req.headers.0.retain(|h| {
        ["Call-ID", "CSeq", "From", "To", "Via"]
            .iter()
            .any(|n| h.name.eq_ignore_ascii_case(n))
    });
    req.headers.0.shrink_to_fit();
}

/// Resolves once the service is stopping, at once if it already is (a call
/// admitted during the stop still ends with it).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_expires_is_clamped_and_never_overflows_a_timer() {
        assert_eq!(
            session_expires("1800;refresher=uac", 90),
            Some((1800, false))
        );
        assert_eq!(session_expires("30;refresher=UAS", 90), Some((90, true)));
        assert_eq!(
            session_expires("18446744073709551615", 90),
            Some((MAX_SESSION_S, false))
        );
        assert_eq!(session_expires("99999999999999999999999", 90), None);
        assert_eq!(session_expires("x", 90), None);
        let now = Instant::now();
        for we_refresh in [true, false] {
            let mut t = SessionTimer {
                interval: Duration::from_secs(MAX_SESSION_S),
                we_refresh,
                deadline: now,
            };
            t.reset(now);
            assert!(t.deadline > now);
        }
    }
}
