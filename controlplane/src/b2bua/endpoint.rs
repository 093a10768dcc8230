//! The SIP endpoint: the transaction layer (sans-IO) behind one lock, the
//! driver task that feeds it bytes and time, and the routing of its events
//! to the tasks that own them (calls, OPTIONS probes) or to the stateless
//! handlers (REGISTER, OPTIONS, malformed requests).
//!
//! Locking: a task locks [`Endpoint::with`], acts on the transaction layer,
//! and the lock is released after the transmits and events it produced are
//! drained. The lock is never held across an await.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

use crate::sip::message::{self, Message, Method, Request, Response};
use crate::sip::transport::{TransportEvent, TransportLayer};
use crate::sip::txn::{TxnEvent, TxnId, TxnLayer};
use crate::sip::Peer;

/// What a call (or probe) task receives.
#[derive(Debug)]
pub(crate) enum Input {
    /// An in-dialog request, or a request on an early dialog (PRACK).
    Request(Box<InRequest>),
    /// An ACK for a 2xx.
    Ack(Box<Request>),
    /// The caller cancelled its INVITE (already answered 200 by the layer).
    Cancel,
    /// A response to one of the task's client transactions.
    Response(TxnId, Box<Response>),
    /// A client transaction failed (Timer B/F or transport error).
    Failed { txn: TxnId, timeout: bool },
    /// A 2xx sent by the task was never ACKed.
    AckTimeout,
}

/// A request for a task, boxed so [`Input`] stays small: every call holds
/// a channel whose first block has room for 32 of them.
#[derive(Debug)]
pub(crate) struct InRequest {
    pub(crate) txn: TxnId,
    pub(crate) request: Request,
    pub(crate) peer: Peer,
}

pub(crate) type Owner = mpsc::UnboundedSender<Input>;

/// A dialog as the endpoint routes it: Call-ID and Kordon's tag.
pub(crate) type DialogKey = (String, String);

/// Something the endpoint cannot decide alone: handed to the service.
#[derive(Debug)]
pub(crate) enum Dispatch {
    /// A new INVITE (no To tag); its CANCEL already routes to `rx`'s sender.
    NewInvite {
        txn: TxnId,
        request: Request,
        peer: Peer,
        tx: Owner,
        rx: mpsc::UnboundedReceiver<Input>,
    },
    /// A REGISTER.
    Register {
        txn: TxnId,
        request: Request,
        peer: Peer,
    },
}

/// Endpoint counters.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct EndpointStats {
    pub(crate) received: u64,
    pub(crate) unparseable: u64,
    pub(crate) bad_requests: u64,
    pub(crate) no_dialog: u64,
}

pub(crate) struct Inner {
    pub(crate) txn: TxnLayer,
    owners: HashMap<TxnId, Owner>,
    dialogs: HashMap<DialogKey, Owner>,
    invites: HashMap<TxnId, Owner>,
    dispatch: Vec<Dispatch>,
    pub(crate) stats: EndpointStats,
    /// Kordon's own sent-by addresses (loop detection).
    own: Vec<String>,
    user_agent: String,
}

/// The endpoint shared by all tasks.
pub(crate) struct Endpoint {
    inner: Mutex<Inner>,
    transport: TransportLayer,
    wake: Notify,
}

impl Endpoint {
    pub(crate) fn new(
        txn: TxnLayer,
        transport: TransportLayer,
        own: Vec<String>,
        user_agent: &str,
    ) -> Endpoint {
        Endpoint {
            inner: Mutex::new(Inner {
                txn,
                owners: HashMap::new(),
                dialogs: HashMap::new(),
                invites: HashMap::new(),
                dispatch: Vec::new(),
                stats: EndpointStats::default(),
                own,
                user_agent: user_agent.to_string(),
            }),
            transport,
            wake: Notify::new(),
        }
    }

    pub(crate) fn transport(&self) -> &TransportLayer {
        &self.transport
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock is a bug; keep serving regardless.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the endpoint, then sends what it produced and routes its
    /// events; returns `f`'s value and the work for the service.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> (R, Vec<Dispatch>) {
        let mut g = self.lock();
        let before = g.txn.poll_timeout();
        let r = f(&mut g);
        let dispatch = self.drain(&mut g);
        let after = g.txn.poll_timeout();
        drop(g);
        if after.is_some() && (before.is_none() || after < before) {
            self.wake.notify_one();
        }
        (r, dispatch)
    }

    fn drain(&self, g: &mut Inner) -> Vec<Dispatch> {
        loop {
            let mut progressed = false;
            while let Some(t) = g.txn.poll_transmit() {
                progressed = true;
                if let Err(e) = self.transport.send(&t.peer, t.bytes) {
                    tracing::debug!(peer = %t.peer.addr, error = %e, "send failed");
                    g.txn.handle_transport_error(Instant::now(), t.peer);
                }
            }
            while let Some(ev) = g.txn.poll_event() {
                progressed = true;
                g.route(ev);
            }
            if !progressed {
                break;
            }
        }
        std::mem::take(&mut g.dispatch)
    }

    /// Drives the endpoint from the transport until it closes: parsing,
    /// checks that need no call state, timers.
    pub(crate) async fn drive(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<TransportEvent>,
        on_dispatch: impl Fn(Dispatch) + Send + 'static,
    ) {
        loop {
            let deadline = self.lock().txn.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                    None => std::future::pending().await,
                }
            };
            let out = tokio::select! {
                ev = rx.recv() => {
                    let Some(ev) = ev else { break };
                    match ev {
                        TransportEvent::Message(m) => self.inbound(m.bytes, m.peer),
                        TransportEvent::SendFailed { peer, reason } => {
                            tracing::debug!(peer = %peer.addr, %reason, "transport failure");
                            self.with(|g| g.txn.handle_transport_error(Instant::now(), peer)).1
                        }
                    }
                }
                () = sleep => self.with(|g| g.txn.handle_timeout(Instant::now())).1,
                () = self.wake.notified() => Vec::new(),
            };
            for d in out {
                on_dispatch(d);
            }
        }
    }

    fn inbound(&self, bytes: Bytes, peer: Peer) -> Vec<Dispatch> {
        let msg = match message::parse(&bytes) {
            Ok(m) => m,
            Err(e) => {
                let mut g = self.lock();
                g.stats.unparseable += 1;
                tracing::debug!(peer = %peer.addr, error = %e, "unparseable SIP message dropped");
                return Vec::new();
            }
        };
        self.with(|g| {
            g.stats.received += 1;
            match msg {
                Message::Request(mut req) => {
                    stamp_via(&mut req, peer);
                    if let Err(e) = req.validate() {
                        g.stats.bad_requests += 1;
                        if req.method != Method::Ack && req.via_top().is_ok() {
                            let mut resp = Response::for_request(&req, 400);
                            resp.reason = format!("Bad Request - {}", e.reason());
                            g.txn.send_stateless(Message::Response(resp), peer);
                        }
                        return;
                    }
                    g.txn
                        .handle_message(Instant::now(), Message::Request(req), peer);
                }
                Message::Response(resp) => {
                    if resp.via_top().is_err() || resp.cseq().is_err() {
                        g.stats.unparseable += 1;
                        return;
                    }
                    g.txn
                        .handle_message(Instant::now(), Message::Response(resp), peer);
                }
            }
        })
        .1
    }
}

/// RFC 3261 §18.2.1 and RFC 3581: the top Via of a request learns where it
/// really came from (`received`, and `rport` when the client asked), so the
/// responses, which copy it, show a NATed client its public address.
fn stamp_via(req: &mut Request, peer: Peer) {
    let Some(h) = req
        .headers
        .0
        .iter_mut()
        .find(|h| h.name.eq_ignore_ascii_case("Via"))
    else {
        return;
    };
    let Ok(mut via) = message::Via::parse(&h.value) else {
        return;
    };
    let ip = peer.addr.ip().to_string();
    let asked_rport = via.params.has("rport");
    if asked_rport {
        via.params.set("rport", Some(peer.addr.port().to_string()));
    }
    if asked_rport || via.host.trim_matches(|c| c == '[' || c == ']') != ip {
        via.params.set("received", Some(ip));
    }
    h.value = via.to_string();
}

impl Inner {
    /// Sends a new request; its responses go to `owner`.
    pub(crate) fn send_request(&mut self, request: Request, peer: Peer, owner: &Owner) -> TxnId {
        let id = self.txn.send_request(Instant::now(), request, peer);
        self.owners.insert(id, owner.clone());
        id
    }

    /// Answers a server transaction, adding Server.
    pub(crate) fn respond(&mut self, txn: TxnId, mut response: Response) {
        if !response.headers.has("Server") {
            response.headers.push("Server", self.user_agent.clone());
        }
        if let Err(e) = self.txn.respond(Instant::now(), txn, response) {
            tracing::debug!(error = ?e, "response to a finished transaction dropped");
        }
    }

    /// Answers a server transaction with a bare status.
    pub(crate) fn reply(&mut self, txn: TxnId, status: u16, reason: Option<&str>) {
        let Some(req) = self.txn.request_of(txn).cloned() else {
            return;
        };
        let mut resp = Response::for_request(&req, status);
        if let Some(r) = reason {
            resp.reason = r.to_string();
        }
        if status == 405 || status == 501 {
            resp.headers.push("Allow", crate::b2bua::ALLOW);
        }
        if status > 100 && resp.to().is_ok_and(|t| t.tag().is_none()) {
            if let Ok(mut to) = resp.to() {
                to.set_tag(&crate::b2bua::random_token(10));
                resp.headers.set("To", to.to_string());
            }
        }
        self.respond(txn, resp);
    }

    /// Routes future requests of a dialog to `owner`.
    pub(crate) fn add_dialog(&mut self, key: DialogKey, owner: &Owner) {
        self.dialogs.insert(key, owner.clone());
    }

    /// Forgets a task's routes.
    pub(crate) fn forget(&mut self, txns: &[TxnId], dialogs: &[DialogKey]) {
        for t in txns {
            self.owners.remove(t);
            self.invites.remove(t);
        }
        for d in dialogs {
            self.dialogs.remove(d);
        }
    }

    /// Sends an ACK for a 2xx (no transaction).
    pub(crate) fn send_ack(&mut self, ack: Request, peer: Peer) {
        self.txn.send_stateless(Message::Request(ack), peer);
    }

    fn route(&mut self, ev: TxnEvent) {
        match ev {
            TxnEvent::Request { txn, request, peer } => self.route_request(txn, request, peer),
            TxnEvent::Ack { request, .. } => {
                if let Some(owner) = self.dialog_owner(&request) {
                    let _ = owner.send(Input::Ack(Box::new(request)));
                }
            }
            TxnEvent::Cancel { invite, .. } => {
                if let Some(owner) = self.invites.get(&invite) {
                    let _ = owner.send(Input::Cancel);
                } else {
                    self.reply(invite, 487, None);
                }
            }
            TxnEvent::Response { txn, response } => {
                if let Some(owner) = self.owners.get(&txn) {
                    let _ = owner.send(Input::Response(txn, Box::new(response)));
                }
            }
            TxnEvent::Timeout { txn } => {
                if let Some(owner) = self.owners.remove(&txn) {
                    let _ = owner.send(Input::Failed { txn, timeout: true });
                }
            }
            TxnEvent::TransportError { txn } => {
                if let Some(owner) = self.owners.remove(&txn) {
                    let _ = owner.send(Input::Failed {
                        txn,
                        timeout: false,
                    });
                }
            }
            TxnEvent::AckTimeout { txn } => {
                if let Some(owner) = self.invites.get(&txn).or_else(|| self.owners.get(&txn)) {
                    let _ = owner.send(Input::AckTimeout);
                }
            }
            TxnEvent::StrayResponse { .. } => {}
        }
    }

    fn dialog_owner(&self, req: &Request) -> Option<&Owner> {
        let call_id = req.call_id()?.to_string();
        let tag = req.to().ok()?.tag()?.to_string();
        self.dialogs.get(&(call_id, tag))
    }

    fn route_request(&mut self, txn: TxnId, req: Request, peer: Peer) {
        // Loop detection: a request Kordon itself sent came back.
        // Only a new INVITE is checked, so other requests parse no Via here.
        let looped = || {
            req.headers
                .get_all("Via")
                .filter_map(|v| message::Via::parse(v).ok())
                .any(|v| self.own.contains(&v.sent_by()))
        };
        let has_to_tag = req.to().is_ok_and(|t| t.tag().is_some());
        if has_to_tag {
            if let Some(owner) = self.dialog_owner(&req) {
                let _ = owner.send(Input::Request(Box::new(InRequest {
                    txn,
                    request: req,
                    peer,
                })));
            } else {
                self.stats.no_dialog += 1;
                self.reply(txn, 481, None);
            }
            return;
        }
        if req.method != Method::Options && req.max_forwards().ok().flatten() == Some(0) {
            self.reply(txn, 483, None);
            return;
        }
        match req.method {
            Method::Invite if looped() => self.reply(txn, 482, None),
            Method::Invite => {
                let (tx, rx) = mpsc::unbounded_channel();
                self.invites.insert(txn, tx.clone());
                self.dispatch.push(Dispatch::NewInvite {
                    txn,
                    request: req,
                    peer,
                    tx,
                    rx,
                });
            }
            Method::Register => self.dispatch.push(Dispatch::Register {
                txn,
                request: req,
                peer,
            }),
            Method::Options => {
                let mut resp = Response::for_request(&req, 200);
                resp.headers.push("Allow", crate::b2bua::ALLOW);
                resp.headers.push("Accept", "application/sdp");
                resp.headers.push("Supported", "100rel, timer");
                if let Ok(mut to) = resp.to() {
                    to.set_tag(&crate::b2bua::random_token(10));
                    resp.headers.set("To", to.to_string());
                }
                self.respond(txn, resp);
            }
            Method::Bye
            | Method::Prack
            | Method::Update
            | Method::Info
            | Method::Refer
            | Method::Notify => self.reply(txn, 481, None),
            Method::Ack | Method::Cancel => {}
            Method::Subscribe | Method::Message => self.reply(txn, 405, None),
            Method::Other(_) => self.reply(txn, 501, None),
        }
    }
}
