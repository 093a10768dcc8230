//! The transaction layer: owns every live transaction, matches messages to
//! them, and queues what they send and report.
//!
//! Transactions live in a slab; a [`TxnId`] is a slot plus the slot's
//! generation, bumped when the transaction ends. Three hash indexes route
//! messages: client transactions by (branch, CSeq method) (RFC 3261
//! §17.1.3), server transactions by (branch, sent-by, method) with ACK
//! folded onto INVITE (§17.2.3), and INVITE server transactions whose 2xx
//! awaits its ACK by (Call-ID, From tag, To tag, CSeq number), since that
//! ACK carries a new branch (§13.2.2.4). Deadlines sit in one ordered set
//! holding each transaction's earliest armed timer, so
//! [`TxnLayer::poll_timeout`] is O(1) and re-arming is O(log n).
//!
//! Requests whose top Via branch lacks the `z9hG4bK` cookie (RFC 2543
//! peers) are matched on (Call-ID, From tag, CSeq number, Request-URI, top
//! Via, method), which is §17.2.3's fallback without the To tag (an ACK adds
//! one the INVITE did not have).
//!
//! Not done here: parsing or validating messages (the caller hands in
//! checked ones), dialog state, and Timer C.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use slab::Slab;
use tracing::{debug, warn};

use super::client::{build_cancel, InviteClient, NonInviteClient};
use super::server::{AckDisposition, InviteServer, NonInviteServer};
use super::{Cx, Fate, TimerConfig, Timers, Transmit, TxnError, TxnEvent, TxnId};
use crate::sip::message::{Message, Method, Request, Response, Via};
use crate::sip::Peer;

/// The branch prefix of RFC 3261 (§8.1.1.7).
const MAGIC_COOKIE: &str = "z9hG4bK";

/// Routes responses to client transactions (RFC 3261 §17.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    branch: String,
    method: Method,
}

/// Routes requests to server transactions (RFC 3261 §17.2.3). The method
/// of an ACK is stored as INVITE.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ServerKey {
    /// An RFC 3261 branch.
    Branch {
        branch: String,
        sent_by: String,
        method: Method,
    },
    /// A branch without the magic cookie, or none (RFC 2543).
    Legacy {
        call_id: String,
        from_tag: String,
        seq: u32,
        uri: String,
        via: String,
        method: Method,
    },
}

impl ServerKey {
    /// The key of `request`, `None` if its top Via (or, for the fallback,
    /// CSeq) cannot be read.
    fn of(request: &Request) -> Option<ServerKey> {
        let method = match request.method {
            Method::Ack => Method::Invite,
            ref m => m.clone(),
        };
        let via = request.via_top().ok()?;
        match via.branch() {
            Some(branch) if branch.starts_with(MAGIC_COOKIE) => Some(ServerKey::Branch {
                branch: branch.to_string(),
                sent_by: via.sent_by().to_ascii_lowercase(),
                method,
            }),
            _ => Some(ServerKey::Legacy {
                call_id: request.call_id()?.to_string(),
                from_tag: request
                    .from()
                    .ok()
                    .and_then(|f| f.tag().map(str::to_string))
                    .unwrap_or_default(),
                seq: request.cseq().ok()?.seq,
                uri: request.uri.to_string(),
                via: request.headers.get("Via")?.to_string(),
                method,
            }),
        }
    }

    /// The same key for another method (a CANCEL's INVITE, RFC 3261 §9.2).
    fn with_method(&self, method: Method) -> ServerKey {
        let mut key = self.clone();
        match &mut key {
            ServerKey::Branch { method: m, .. } | ServerKey::Legacy { method: m, .. } => {
                *m = method
            }
        }
        key
    }
}

/// Recognises the ACK for a 2xx, which has a branch of its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AckKey {
    call_id: String,
    from_tag: String,
    to_tag: String,
    seq: u32,
}

impl AckKey {
    /// The key a 2xx to INVITE expects its ACK to carry.
    fn of_response(response: &Response) -> Option<AckKey> {
        Some(AckKey {
            call_id: response.call_id()?.to_string(),
            from_tag: tag(response.from().ok().as_ref().and_then(|f| f.tag())),
            to_tag: tag(response.to().ok().as_ref().and_then(|t| t.tag())),
            seq: response.cseq().ok()?.seq,
        })
    }

    /// The key an ACK carries.
    fn of_ack(ack: &Request) -> Option<AckKey> {
        Some(AckKey {
            call_id: ack.call_id()?.to_string(),
            from_tag: tag(ack.from().ok().as_ref().and_then(|f| f.tag())),
            to_tag: tag(ack.to().ok().as_ref().and_then(|t| t.tag())),
            seq: ack.cseq().ok()?.seq,
        })
    }
}

fn tag(t: Option<&str>) -> String {
    t.unwrap_or_default().to_string()
}

/// A transaction's machine, with the index keys and links of its kind.
#[derive(Debug)]
enum Machine {
    InviteClient {
        m: InviteClient,
        key: ClientKey,
        /// The CANCEL started (or held back) for this INVITE.
        cancel: Option<TxnId>,
    },
    NonInviteClient {
        m: NonInviteClient,
        key: ClientKey,
    },
    InviteServer {
        m: InviteServer,
        key: ServerKey,
        /// Set once a 2xx was sent: how its ACK is recognised.
        ack_key: Option<AckKey>,
    },
    NonInviteServer {
        m: NonInviteServer,
        key: ServerKey,
    },
}

impl Machine {
    fn on_timer(&mut self, cx: &mut Cx<'_>, timer: super::Timer) -> Fate {
        match self {
            Machine::InviteClient { m, .. } => m.on_timer(cx, timer),
            Machine::NonInviteClient { m, .. } => m.on_timer(cx, timer),
            Machine::InviteServer { m, .. } => m.on_timer(cx, timer),
            Machine::NonInviteServer { m, .. } => m.on_timer(cx, timer),
        }
    }

    /// A client transaction whose request is out and unanswered.
    fn client_awaiting_final(&self) -> bool {
        match self {
            Machine::InviteClient { m, .. } => m.awaiting_final(),
            Machine::NonInviteClient { m, .. } => m.awaiting_final(),
            _ => false,
        }
    }

    /// A CANCEL still held back for its INVITE's provisional response.
    fn is_waiting_cancel(&self) -> bool {
        matches!(self, Machine::NonInviteClient { m, .. } if m.is_waiting())
    }
}

/// One live transaction.
#[derive(Debug)]
struct Entry {
    id: TxnId,
    peer: Peer,
    /// The request that created it (for a client transaction, as sent).
    request: Request,
    machine: Machine,
    timers: Timers,
    /// The deadline this transaction has in the layer's index.
    scheduled: Option<Instant>,
}

/// The transaction layer of RFC 3261 §17 for one SIP endpoint.
///
/// Inputs are [`handle_message`](Self::handle_message) (from the
/// transport), [`handle_timeout`](Self::handle_timeout),
/// [`handle_transport_error`](Self::handle_transport_error) and the
/// transaction user's calls ([`send_request`](Self::send_request),
/// [`respond`](Self::respond), [`cancel`](Self::cancel),
/// [`send_stateless`](Self::send_stateless)).
///
/// After any input a driver drains, in this order:
/// 1. [`poll_transmit`](Self::poll_transmit) until `None`, so responses,
///    ACKs and retransmissions leave before anything else happens;
/// 2. [`poll_event`](Self::poll_event) until `None`, handing each event to
///    the transaction user (whose calls back into the layer may queue more
///    transmits: drain again from 1 when they do);
/// 3. [`poll_timeout`](Self::poll_timeout) last, since both earlier steps
///    may arm or disarm timers, and sleep until it (or the next input),
///    then call [`handle_timeout`](Self::handle_timeout).
///
/// Transmits and events each come out in the order they were produced.
#[derive(Debug)]
pub struct TxnLayer {
    cfg: TimerConfig,
    rng: StdRng,
    txns: Slab<Entry>,
    /// Per slab slot: the generation of its current or next transaction.
    generations: Vec<u32>,
    clients: HashMap<ClientKey, TxnId>,
    servers: HashMap<ServerKey, TxnId>,
    acks: HashMap<AckKey, TxnId>,
    /// (deadline, index, generation) of each transaction's earliest timer.
    deadlines: BTreeSet<(Instant, u32, u32)>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TxnEvent>,
}

impl TxnLayer {
    /// A layer with the given timers. Branches and tags are drawn from a
    /// generator seeded once from `rng`, so a seeded `rng` makes the layer
    /// deterministic.
    pub fn new(cfg: TimerConfig, mut rng: impl RngCore) -> Self {
        TxnLayer {
            cfg,
            rng: StdRng::from_rng(&mut rng),
            txns: Slab::new(),
            generations: Vec::new(),
            clients: HashMap::new(),
            servers: HashMap::new(),
            acks: HashMap::new(),
            deadlines: BTreeSet::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// A message from the transport, parsed and validated by the caller.
    ///
    /// A request is matched to a server transaction: a retransmission gets
    /// the last response again (no event), a new request makes a
    /// transaction and a [`TxnEvent::Request`], a CANCEL is answered here
    /// (see [`TxnEvent::Cancel`]), an ACK is absorbed by the INVITE
    /// transaction it acknowledges or else passed up as [`TxnEvent::Ack`].
    /// A response is matched to a client transaction by top Via branch and
    /// CSeq method, or else passed up as [`TxnEvent::StrayResponse`].
    /// Messages without a readable top Via (or CSeq, where needed) are
    /// dropped.
    pub fn handle_message(&mut self, now: Instant, msg: Message, peer: Peer) {
        match msg {
            Message::Request(request) => self.on_request(now, request, peer),
            Message::Response(response) => self.on_response(now, response, peer),
        }
    }

    /// Starts a client transaction for `request` to `peer` and returns it.
    ///
    /// The transaction user has built the request completely, with its own
    /// top Via; the layer adds a fresh `z9hG4bK` branch to that Via unless
    /// it already has one (if a live transaction of the same method already
    /// uses that branch, responses go to the newer one). An ACK has no
    /// transaction: it is sent as by
    /// [`send_stateless`](Self::send_stateless) and the id returned is
    /// already unknown. A request without a readable top Via cannot be
    /// matched: its id comes back with a [`TxnEvent::TransportError`]
    /// already queued.
    pub fn send_request(&mut self, now: Instant, mut request: Request, peer: Peer) -> TxnId {
        if request.method == Method::Ack {
            warn!("ACK given to send_request: sent without a transaction");
            self.send_stateless(Message::Request(request), peer);
            return self.dead_id();
        }
        let Some(branch) = self.ensure_branch(&mut request) else {
            warn!(method = %request.method, "request without a readable top Via: failed");
            let txn = self.dead_id();
            self.events.push_back(TxnEvent::TransportError { txn });
            return txn;
        };
        let key = ClientKey {
            branch,
            method: request.method.clone(),
        };
        let wire = request.to_bytes();
        let invite = request.method == Method::Invite;
        let machine_key = key.clone();
        let id = self.insert(now, peer, request, move |cx| {
            if invite {
                Machine::InviteClient {
                    m: InviteClient::start(cx, wire),
                    key: machine_key,
                    cancel: None,
                }
            } else {
                Machine::NonInviteClient {
                    m: NonInviteClient::start(cx, wire),
                    key: machine_key,
                }
            }
        });
        self.clients.insert(key, id);
        id
    }

    /// Cancels a pending INVITE client transaction (RFC 3261 §9.1) and
    /// returns the CANCEL's client transaction.
    ///
    /// The CANCEL goes out once the INVITE has had a provisional response:
    /// at once if it has, else when the first one arrives. If the INVITE
    /// gets a final response (or fails) before any provisional, the CANCEL
    /// is dropped unsent and its id becomes unknown, with no event. Calling
    /// again returns the same CANCEL while it lives. `None` if `invite` is
    /// not a live INVITE client transaction awaiting a final response.
    pub fn cancel(&mut self, now: Instant, invite: TxnId) -> Option<TxnId> {
        let entry = self.entry(invite)?;
        let Machine::InviteClient { m, key, cancel } = &entry.machine else {
            return None;
        };
        if let Some(existing) = *cancel {
            if self.entry(existing).is_some() {
                return Some(existing);
            }
        }
        if !m.awaiting_final() {
            return None;
        }
        let release = m.is_proceeding();
        let key = ClientKey {
            branch: key.branch.clone(),
            method: Method::Cancel,
        };
        let request = build_cancel(&entry.request);
        let peer = entry.peer;
        let wire = request.to_bytes();
        let machine_key = key.clone();
        let id = self.insert(now, peer, request, move |cx| Machine::NonInviteClient {
            m: if release {
                NonInviteClient::start(cx, wire)
            } else {
                NonInviteClient::waiting(wire)
            },
            key: machine_key,
        });
        self.clients.insert(key, id);
        if let Some(Entry {
            machine: Machine::InviteClient { cancel, .. },
            ..
        }) = self.entry_mut(invite)
        {
            *cancel = Some(id);
        }
        Some(id)
    }

    /// Sends `response` on server transaction `txn`.
    ///
    /// A provisional response may be followed by others; the first final
    /// one moves the transaction on. A 2xx to INVITE is retransmitted by the
    /// layer until its ACK arrives, for 64*T1 at most, after which
    /// [`TxnEvent::AckTimeout`] asks the transaction user to end the
    /// session. The response is sent as given: the transaction user builds
    /// it (typically from [`Response::for_request`]).
    pub fn respond(
        &mut self,
        now: Instant,
        txn: TxnId,
        response: Response,
    ) -> Result<(), TxnError> {
        let status = response.status;
        if !(100..=699).contains(&status) {
            return Err(TxnError::InvalidStatus(status));
        }
        let entry = self.entry(txn).ok_or(TxnError::UnknownTxn)?;
        let is_invite = match entry.machine {
            Machine::InviteServer { .. } => true,
            Machine::NonInviteServer { .. } => false,
            _ => return Err(TxnError::NotServer),
        };
        let ack_key = if is_invite && (200..300).contains(&status) {
            AckKey::of_response(&response)
        } else {
            None
        };
        let to_tag = response.to().ok().and_then(|t| t.tag().map(str::to_string));
        let wire = response.to_bytes();
        let slot_key = ack_key.clone();
        let result = self
            .drive(now, txn, move |machine, cx, _| match machine {
                Machine::InviteServer { m, ack_key, .. } => {
                    match m.respond(cx, status, to_tag, wire) {
                        Ok(fate) => {
                            if slot_key.is_some() {
                                *ack_key = slot_key;
                            }
                            (fate, Ok(()))
                        }
                        Err(e) => (Fate::Alive, Err(e)),
                    }
                }
                Machine::NonInviteServer { m, .. } => match m.respond(cx, status, wire) {
                    Ok(fate) => (fate, Ok(())),
                    Err(e) => (Fate::Alive, Err(e)),
                },
                _ => (Fate::Alive, Err(TxnError::NotServer)),
            })
            .unwrap_or(Err(TxnError::UnknownTxn));
        if result.is_ok() {
            if let Some(key) = ack_key {
                if self.entry(txn).is_some() {
                    // Two INVITE transactions answered 2xx with the same
                    // dialog identifiers (a TU that set no To tag, or a
                    // duplicated INVITE on another branch): the ACK can
                    // match only one, the later; the earlier forgets its key
                    // and ends by Timer L / ACK timeout.
                    if let Some(prev) = self.acks.insert(key, txn) {
                        if prev != txn {
                            if let Some(Entry {
                                machine: Machine::InviteServer { ack_key, .. },
                                ..
                            }) = self.entry_mut(prev)
                            {
                                *ack_key = None;
                            }
                        }
                    }
                }
            }
        }
        result
    }

    /// Sends a message outside any transaction: the ACK for a 2xx, or a
    /// response to a request that gets no transaction.
    pub fn send_stateless(&mut self, msg: Message, peer: Peer) {
        self.transmits.push_back(Transmit {
            peer,
            bytes: msg.to_bytes(),
        });
    }

    /// The transport to `peer` failed (a connection dropped or could not be
    /// opened, an ICMP error). Every client transaction to that peer still
    /// waiting for a final response fails with
    /// [`TxnEvent::TransportError`]. Server transactions are left to their
    /// timers: the transport may yet reach the peer on a new connection.
    ///
    /// This scans every transaction; transport failures are rare next to
    /// messages.
    pub fn handle_transport_error(&mut self, _now: Instant, peer: Peer) {
        let failed: Vec<TxnId> = self
            .txns
            .iter()
            .filter(|(_, e)| same_destination(e.peer, peer) && e.machine.client_awaiting_final())
            .map(|(_, e)| e.id)
            .collect();
        for txn in failed {
            if self.entry(txn).is_some() {
                self.events.push_back(TxnEvent::TransportError { txn });
                self.remove(txn);
            }
        }
    }

    /// Fires every timer due at `now`, earliest first.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, index, generation)) = self.deadlines.first() {
            if at > now {
                break;
            }
            let id = TxnId { index, generation };
            let Some(entry) = self.txns.get_mut(index as usize).filter(|e| e.id == id) else {
                // Cannot happen (removal unindexes); drop it rather than spin.
                self.deadlines.remove(&(at, index, generation));
                continue;
            };
            match entry.timers.take_expired(now) {
                Some(timer) => {
                    self.drive(now, id, |machine, cx, _| (machine.on_timer(cx, timer), ()));
                }
                None => {
                    // Cannot happen either (the index holds the earliest
                    // armed timer); drop the entry and re-index the table.
                    self.deadlines.remove(&(at, index, generation));
                    if entry.scheduled == Some(at) {
                        entry.scheduled = None;
                    }
                    reschedule(&mut self.deadlines, entry);
                }
            }
        }
    }

    /// The next message to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the transaction user.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<TxnEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due: the
    /// earliest deadline over all transactions, in O(1).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(at, _, _)| at)
    }

    /// How many transactions are live (including CANCEL transactions the
    /// layer runs itself).
    pub fn len(&self) -> usize {
        self.txns.len()
    }

    /// Whether no transaction is live.
    pub fn is_empty(&self) -> bool {
        self.txns.is_empty()
    }

    /// The request that created `txn` (for a client transaction, as sent,
    /// with its branch).
    pub fn request_of(&self, txn: TxnId) -> Option<&Request> {
        self.entry(txn).map(|e| &e.request)
    }

    /// The peer `txn` talks to.
    pub fn peer_of(&self, txn: TxnId) -> Option<Peer> {
        self.entry(txn).map(|e| e.peer)
    }

    // ----- requests -----

    fn on_request(&mut self, now: Instant, request: Request, peer: Peer) {
        let Some(key) = ServerKey::of(&request) else {
            debug!(method = %request.method, "request without a readable top Via dropped");
            return;
        };
        match request.method {
            Method::Ack => self.on_ack(now, request, peer, key),
            Method::Cancel => self.on_cancel(now, request, peer, key),
            _ => self.on_server_request(now, request, peer, key),
        }
    }

    /// A request other than ACK and CANCEL.
    fn on_server_request(&mut self, now: Instant, request: Request, peer: Peer, key: ServerKey) {
        if let Some(&id) = self.servers.get(&key) {
            self.retransmitted(now, id);
            return;
        }
        // RFC 3261 §17.2.1: the 100 Trying may go out at once.
        let trying = (request.method == Method::Invite)
            .then(|| Response::for_request(&request, 100).to_bytes());
        let machine_key = key.clone();
        let id = self.insert(now, peer, request.clone(), move |cx| match trying {
            Some(trying) => Machine::InviteServer {
                m: InviteServer::start(cx, trying),
                key: machine_key,
                ack_key: None,
            },
            None => Machine::NonInviteServer {
                m: NonInviteServer::start(),
                key: machine_key,
            },
        });
        self.servers.insert(key, id);
        self.events.push_back(TxnEvent::Request {
            txn: id,
            request,
            peer,
        });
    }

    /// A request matched server transaction `id`: answer as it last did.
    fn retransmitted(&mut self, now: Instant, id: TxnId) {
        self.drive(now, id, |machine, cx, _| {
            match machine {
                Machine::InviteServer { m, .. } => m.on_retransmission(cx),
                Machine::NonInviteServer { m, .. } => m.on_retransmission(cx),
                Machine::InviteClient { .. } | Machine::NonInviteClient { .. } => {}
            }
            (Fate::Alive, ())
        });
    }

    /// A CANCEL (RFC 3261 §9.2): answered here, in a transaction of its own.
    fn on_cancel(&mut self, now: Instant, request: Request, peer: Peer, key: ServerKey) {
        if let Some(&id) = self.servers.get(&key) {
            self.retransmitted(now, id);
            return;
        }
        // Only INVITE is looked for: cancelling a non-INVITE request has
        // no effect (§9.2), so a 481 for one changes nothing either.
        let invite = self.servers.get(&key.with_method(Method::Invite)).copied();
        let (status, to_tag, cancels) = match invite.and_then(|id| self.entry(id)) {
            Some(Entry {
                machine: Machine::InviteServer { m, .. },
                ..
            }) if m.is_proceeding() => (200, m.to_tag().map(str::to_string), true),
            Some(_) => (200, None, false),
            None => (481, None, false),
        };
        let mut response = Response::for_request(&request, status);
        self.ensure_to_tag(&mut response, to_tag);
        let wire = response.to_bytes();
        let machine_key = key.clone();
        let id = self.insert(now, peer, request.clone(), move |_| {
            Machine::NonInviteServer {
                m: NonInviteServer::start(),
                key: machine_key,
            }
        });
        self.servers.insert(key, id);
        self.drive(now, id, move |machine, cx, _| match machine {
            Machine::NonInviteServer { m, .. } => {
                (m.respond(cx, status, wire).unwrap_or(Fate::Alive), ())
            }
            _ => (Fate::Alive, ()),
        });
        if let (true, Some(invite)) = (cancels, invite) {
            self.events.push_back(TxnEvent::Cancel {
                invite,
                request,
                peer,
            });
        }
    }

    /// An ACK: for a non-2xx it belongs to the INVITE transaction with the
    /// same branch; for a 2xx it has a branch of its own and goes up.
    fn on_ack(&mut self, now: Instant, request: Request, peer: Peer, key: ServerKey) {
        if let Some(&id) = self.servers.get(&key) {
            let deliver = self.drive(now, id, |machine, cx, _| match machine {
                Machine::InviteServer { m, .. } => match m.on_ack(cx) {
                    AckDisposition::Absorbed(fate) => (fate, false),
                    AckDisposition::Deliver => (Fate::Alive, true),
                },
                _ => (Fate::Alive, false),
            });
            if deliver == Some(true) {
                self.events.push_back(TxnEvent::Ack { request, peer });
            }
            return;
        }
        if let Some(id) = AckKey::of_ack(&request).and_then(|k| self.acks.get(&k).copied()) {
            self.drive(now, id, |machine, cx, _| {
                if let Machine::InviteServer { m, .. } = machine {
                    m.on_2xx_ack(cx);
                }
                (Fate::Alive, ())
            });
        }
        self.events.push_back(TxnEvent::Ack { request, peer });
    }

    // ----- responses -----

    fn on_response(&mut self, now: Instant, response: Response, peer: Peer) {
        if !(100..=699).contains(&response.status) {
            debug!(
                status = response.status,
                "response with a bad status dropped"
            );
            return;
        }
        let (Ok(via), Ok(cseq)) = (response.via_top(), response.cseq()) else {
            debug!("response without a readable top Via or CSeq dropped");
            return;
        };
        let id = via.branch().and_then(|branch| {
            self.clients
                .get(&ClientKey {
                    branch: branch.to_string(),
                    method: cseq.method,
                })
                .copied()
        });
        let Some(id) = id else {
            self.events
                .push_back(TxnEvent::StrayResponse { response, peer });
            return;
        };
        let invite = self.drive(now, id, move |machine, cx, original| match machine {
            Machine::InviteClient { m, .. } => (m.on_response(cx, original, response), true),
            Machine::NonInviteClient { m, .. } => (m.on_response(cx, response), false),
            Machine::InviteServer { .. } | Machine::NonInviteServer { .. } => (Fate::Alive, false),
        });
        if invite == Some(true) {
            self.settle_cancel(now, id);
        }
    }

    /// After a response to INVITE `invite`: release its held-back CANCEL
    /// on a provisional, drop it on a final response (RFC 3261 §9.1).
    fn settle_cancel(&mut self, now: Instant, invite: TxnId) {
        let Some(Entry {
            machine:
                Machine::InviteClient {
                    m,
                    cancel: Some(cancel),
                    ..
                },
            ..
        }) = self.entry(invite)
        else {
            return;
        };
        let cancel = *cancel;
        let (proceeding, pending) = (m.is_proceeding(), m.awaiting_final());
        let waiting = self
            .entry(cancel)
            .is_some_and(|e| e.machine.is_waiting_cancel());
        if !waiting {
            return;
        }
        if proceeding {
            self.drive(now, cancel, |machine, cx, _| {
                if let Machine::NonInviteClient { m, .. } = machine {
                    m.release(cx);
                }
                (Fate::Alive, ())
            });
        } else if !pending {
            self.remove(cancel);
        }
    }

    // ----- slab, indexes, deadlines -----

    fn entry(&self, id: TxnId) -> Option<&Entry> {
        self.txns.get(id.index as usize).filter(|e| e.id == id)
    }

    fn entry_mut(&mut self, id: TxnId) -> Option<&mut Entry> {
        self.txns.get_mut(id.index as usize).filter(|e| e.id == id)
    }

    /// Creates a transaction: `make` builds its machine (and may send and
    /// arm timers through the context); the layer indexes its deadline.
    fn insert(
        &mut self,
        now: Instant,
        peer: Peer,
        request: Request,
        make: impl FnOnce(&mut Cx<'_>) -> Machine,
    ) -> TxnId {
        let id = self.next_id();
        let mut timers = Timers::default();
        let mut cx = Cx {
            now,
            cfg: self.cfg,
            reliable: peer.transport.is_reliable(),
            id,
            peer,
            timers: &mut timers,
            transmits: &mut self.transmits,
            events: &mut self.events,
        };
        let machine = make(&mut cx);
        let mut entry = Entry {
            id,
            peer,
            request,
            machine,
            timers,
            scheduled: None,
        };
        reschedule(&mut self.deadlines, &mut entry);
        let key = self.txns.insert(entry);
        debug_assert_eq!(key, id.index as usize, "insert uses the vacant key");
        id
    }

    /// The id the next inserted transaction gets.
    fn next_id(&mut self) -> TxnId {
        let slot = self.txns.vacant_key();
        if self.generations.len() <= slot {
            self.generations.resize(slot + 1, 0);
        }
        TxnId {
            index: u32::try_from(slot).expect("a slab of 2^32 transactions does not fit in memory"),
            generation: self.generations.get(slot).copied().unwrap_or(0),
        }
    }

    /// An id that names no transaction, now or later: the next slot's id,
    /// with the slot's generation moved past it.
    fn dead_id(&mut self) -> TxnId {
        let id = self.next_id();
        if let Some(g) = self.generations.get_mut(id.index as usize) {
            *g = g.wrapping_add(1);
        }
        id
    }

    /// Runs `f` on transaction `id`'s machine with a context for it, then
    /// removes the transaction if it ended, or re-indexes its deadline.
    /// `None` if `id` is unknown.
    fn drive<R>(
        &mut self,
        now: Instant,
        id: TxnId,
        f: impl FnOnce(&mut Machine, &mut Cx<'_>, &Request) -> (Fate, R),
    ) -> Option<R> {
        let entry = self
            .txns
            .get_mut(id.index as usize)
            .filter(|e| e.id == id)?;
        let mut cx = Cx {
            now,
            cfg: self.cfg,
            reliable: entry.peer.transport.is_reliable(),
            id,
            peer: entry.peer,
            timers: &mut entry.timers,
            transmits: &mut self.transmits,
            events: &mut self.events,
        };
        let (fate, r) = f(&mut entry.machine, &mut cx, &entry.request);
        match fate {
            Fate::Alive => reschedule(&mut self.deadlines, entry),
            Fate::Terminated => self.remove(id),
        }
        Some(r)
    }

    /// Ends transaction `id`: out of the slab, the indexes and the
    /// deadlines; its slot's generation moves on. A CANCEL still held back
    /// for an INVITE goes with it.
    fn remove(&mut self, id: TxnId) {
        if self.entry(id).is_none() {
            return;
        }
        let slot = id.index as usize;
        let entry = self.txns.remove(slot);
        if let Some(g) = self.generations.get_mut(slot) {
            *g = g.wrapping_add(1);
        }
        if let Some(at) = entry.scheduled {
            self.deadlines.remove(&(at, id.index, id.generation));
        }
        match entry.machine {
            Machine::InviteClient { key, cancel, .. } => {
                unindex(&mut self.clients, &key, id);
                if let Some(cancel) = cancel {
                    if self
                        .entry(cancel)
                        .is_some_and(|e| e.machine.is_waiting_cancel())
                    {
                        self.remove(cancel);
                    }
                }
            }
            Machine::NonInviteClient { key, .. } => unindex(&mut self.clients, &key, id),
            Machine::InviteServer { key, ack_key, .. } => {
                unindex(&mut self.servers, &key, id);
                if let Some(ack_key) = ack_key {
                    unindex(&mut self.acks, &ack_key, id);
                }
            }
            Machine::NonInviteServer { key, .. } => unindex(&mut self.servers, &key, id),
        }
    }

    // ----- identifiers -----

    /// Makes sure the top Via has a branch, adding a fresh one; returns it.
    /// `None` if there is no readable top Via.
    fn ensure_branch(&mut self, request: &mut Request) -> Option<String> {
        let header = request
            .headers
            .0
            .iter_mut()
            .find(|h| h.name.eq_ignore_ascii_case("Via"))?;
        let mut via = Via::parse(&header.value).ok()?;
        if let Some(branch) = via.branch().filter(|b| !b.is_empty()) {
            return Some(branch.to_string());
        }
        let branch = format!(
            "{MAGIC_COOKIE}{:016x}{:08x}",
            self.rng.next_u64(),
            self.rng.next_u32()
        );
        via.params.set("branch", Some(branch.clone()));
        header.value = via.to_string();
        Some(branch)
    }

    /// Gives a response a To tag if it lacks one: `tag`, or a fresh one
    /// (RFC 3261 §8.2.6.2). A To that cannot be read is left alone.
    fn ensure_to_tag(&mut self, response: &mut Response, tag: Option<String>) {
        let Ok(mut to) = response.to() else {
            return;
        };
        if to.tag().is_some() {
            return;
        }
        let tag = tag.unwrap_or_else(|| format!("{:016x}", self.rng.next_u64()));
        to.set_tag(&tag);
        response.headers.set("To", to.to_string());
    }
}

#[cfg(test)]
impl TxnLayer {
    /// The earliest deadline found by scanning every transaction, to check
    /// the index against.
    pub(super) fn earliest_by_scan(&self) -> Option<Instant> {
        self.txns.iter().filter_map(|(_, e)| e.timers.next()).min()
    }

    /// Panics unless the slab, the generations, the three indexes and the
    /// deadline set agree with each other.
    pub(super) fn check_invariants(&self) {
        let mut armed = 0;
        for (slot, e) in &self.txns {
            assert_eq!(slot, e.id.index as usize, "entry id names its slot");
            assert_eq!(self.generations.get(slot), Some(&e.id.generation));
            assert_eq!(
                e.scheduled,
                e.timers.next(),
                "indexed deadline is the earliest"
            );
            if let Some(at) = e.scheduled {
                assert!(self.deadlines.contains(&(at, e.id.index, e.id.generation)));
                armed += 1;
            }
            match &e.machine {
                Machine::InviteClient { key, .. } | Machine::NonInviteClient { key, .. } => {
                    assert_eq!(self.clients.get(key), Some(&e.id), "client key indexed");
                }
                Machine::InviteServer { key, ack_key, .. } => {
                    assert_eq!(self.servers.get(key), Some(&e.id), "server key indexed");
                    if let Some(k) = ack_key {
                        assert_eq!(self.acks.get(k), Some(&e.id), "ack key indexed");
                    }
                }
                Machine::NonInviteServer { key, .. } => {
                    assert_eq!(self.servers.get(key), Some(&e.id), "server key indexed");
                }
            }
        }
        assert_eq!(self.deadlines.len(), armed, "no stale deadlines");
        for id in self
            .clients
            .values()
            .chain(self.servers.values())
            .chain(self.acks.values())
        {
            assert!(self.entry(*id).is_some(), "indexes name live transactions");
        }
    }
}

/// Re-indexes `entry`'s earliest deadline if it changed.
fn reschedule(deadlines: &mut BTreeSet<(Instant, u32, u32)>, entry: &mut Entry) {
    let next = entry.timers.next();
    if next == entry.scheduled {
        return;
    }
    if let Some(old) = entry.scheduled {
        deadlines.remove(&(old, entry.id.index, entry.id.generation));
    }
    if let Some(new) = next {
        deadlines.insert((new, entry.id.index, entry.id.generation));
    }
    entry.scheduled = next;
}

/// Removes `key` from `index` if it still routes to `id` (a later
/// transaction may have taken it over).
fn unindex<K: std::hash::Hash + Eq>(index: &mut HashMap<K, TxnId>, key: &K, id: TxnId) {
    if index.get(key) == Some(&id) {
        index.remove(key);
    }
}

/// Whether a transport failure reported for `failed` concerns a
/// transaction talking to `peer`: same transport, address and interface,
/// and the same connection when both name one.
fn same_destination(peer: Peer, failed: Peer) -> bool {
    peer.transport == failed.transport
        && peer.addr == failed.addr
        && peer.iface == failed.iface
        && (peer.conn.is_none() || failed.conn.is_none() || peer.conn == failed.conn)
}
