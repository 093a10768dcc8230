//! Client transactions (RFC 3261 §17.1, RFC 6026 §7.2): the INVITE and
//! non-INVITE machines, and the ACK and CANCEL requests built from the
//! original request.
//!
//! The machines send, retransmit and time out; they do not match responses
//! (the layer does) and do not know about CANCEL linkage (the layer starts a
//! deferred CANCEL when the INVITE reaches Proceeding). A CANCEL is an
//! ordinary non-INVITE client transaction that may start in `Waiting`.

use std::time::Duration;

use bytes::Bytes;

use super::{Cx, Fate, Timer, TxnEvent};
use crate::sip::message::{CSeq, Headers, Method, Request, Response};

/// Max-Forwards on the ACK and CANCEL the layer builds (RFC 3261 §8.1.1.6).
const MAX_FORWARDS: &str = "70";

/// The INVITE client transaction (RFC 3261 §17.1.1, Figure 5 as amended by
/// RFC 6026).
#[derive(Debug)]
pub(super) enum InviteClient {
    /// INVITE sent, no response yet: Timer A retransmits (unreliable
    /// transports), Timer B gives up.
    Calling {
        /// The INVITE as sent.
        request: Bytes,
        /// The interval Timer A was last armed with.
        interval: Duration,
    },
    /// A provisional response arrived: no retransmission, no timeout (the
    /// transaction user runs Timer C if it wants one).
    Proceeding,
    /// A non-2xx final response arrived and was ACKed: Timer D absorbs its
    /// retransmissions, each answered with the same ACK.
    Completed {
        /// The ACK as sent.
        ack: Bytes,
    },
    /// A 2xx arrived (RFC 6026 §7.2): Timer M keeps the transaction so
    /// further 2xx responses reach the transaction user instead of being
    /// stray.
    Accepted,
}

impl InviteClient {
    /// Sends the INVITE and arms A (unreliable transports) and B.
    pub(super) fn start(cx: &mut Cx<'_>, request: Bytes) -> InviteClient {
        cx.send(request.clone());
        let interval = cx.cfg.t1();
        if !cx.reliable {
            cx.arm(Timer::A, interval);
        }
        cx.arm(Timer::B, cx.cfg.timer_b());
        InviteClient::Calling { request, interval }
    }

    /// Whether no final response has arrived yet.
    pub(super) fn awaiting_final(&self) -> bool {
        matches!(
            self,
            InviteClient::Calling { .. } | InviteClient::Proceeding
        )
    }

    /// Whether a provisional response has arrived and no final one.
    pub(super) fn is_proceeding(&self) -> bool {
        matches!(self, InviteClient::Proceeding)
    }

    /// A response matched this transaction. `original` is the INVITE, for
    /// building the ACK of a non-2xx final response.
    pub(super) fn on_response(
        &mut self,
        cx: &mut Cx<'_>,
        original: &Request,
        response: Response,
    ) -> Fate {
        let status = response.status;
        match self {
            InviteClient::Calling { .. } | InviteClient::Proceeding => {
                if status < 200 {
                    cx.disarm(Timer::A);
                    cx.disarm(Timer::B);
                    *self = InviteClient::Proceeding;
                    cx.emit(TxnEvent::Response {
                        txn: cx.id,
                        response,
                    });
                    Fate::Alive
                } else if status < 300 {
                    cx.disarm(Timer::A);
                    cx.disarm(Timer::B);
                    cx.arm(Timer::M, cx.cfg.t1x64());
                    *self = InviteClient::Accepted;
                    cx.emit(TxnEvent::Response {
                        txn: cx.id,
                        response,
                    });
                    Fate::Alive
                } else {
                    cx.disarm(Timer::A);
                    cx.disarm(Timer::B);
                    let ack = build_ack(original, &response).to_bytes();
                    cx.send(ack.clone());
                    cx.emit(TxnEvent::Response {
                        txn: cx.id,
                        response,
                    });
                    *self = InviteClient::Completed { ack };
                    let wait = cx.cfg.timer_d(cx.reliable);
                    cx.wait_or_end(Timer::D, wait)
                }
            }
            InviteClient::Completed { ack } => {
                if (300..=699).contains(&status) {
                    // §17.1.1.2: a retransmitted final response gets the ACK again.
                    let ack = ack.clone();
                    cx.send(ack);
                } else if (200..300).contains(&status) {
                    // A 2xx after a non-2xx (a misbehaving fork): not ours to
                    // accept, but the transaction user may ACK and BYE it.
                    let peer = cx.peer;
                    cx.emit(TxnEvent::StrayResponse { response, peer });
                }
                Fate::Alive
            }
            InviteClient::Accepted => {
                // RFC 6026 §7.2: each 2xx goes up so the TU can ACK it;
                // anything else is absorbed.
                if (200..300).contains(&status) {
                    cx.emit(TxnEvent::Response {
                        txn: cx.id,
                        response,
                    });
                }
                Fate::Alive
            }
        }
    }

    /// One of this transaction's timers expired.
    pub(super) fn on_timer(&mut self, cx: &mut Cx<'_>, timer: Timer) -> Fate {
        match (&mut *self, timer) {
            (InviteClient::Calling { request, interval }, Timer::A) => {
                cx.send(request.clone());
                *interval = interval.saturating_mul(2);
                let next = *interval;
                cx.arm(Timer::A, next);
                Fate::Alive
            }
            (InviteClient::Calling { .. }, Timer::B) => {
                cx.emit(TxnEvent::Timeout { txn: cx.id });
                Fate::Terminated
            }
            (InviteClient::Completed { .. }, Timer::D) | (InviteClient::Accepted, Timer::M) => {
                Fate::Terminated
            }
            // A timer left over from an earlier state; states disarm what
            // they leave behind, so this is not expected.
            _ => Fate::Alive,
        }
    }
}

/// The non-INVITE client transaction (RFC 3261 §17.1.2, Figure 6).
#[derive(Debug)]
pub(super) enum NonInviteClient {
    /// A CANCEL held back until its INVITE gets a provisional response
    /// (RFC 3261 §9.1). Nothing sent, no timers.
    Waiting {
        /// The request, to send when released.
        request: Bytes,
    },
    /// Request sent: Timer E retransmits (unreliable transports), doubling
    /// up to T2; Timer F gives up.
    Trying {
        /// The request as sent.
        request: Bytes,
        /// The interval Timer E was last armed with.
        interval: Duration,
    },
    /// A provisional response arrived: Timer E now retransmits every T2.
    Proceeding {
        /// The request as sent.
        request: Bytes,
    },
    /// A final response arrived: Timer K absorbs its retransmissions.
    Completed,
}

impl NonInviteClient {
    /// Sends the request and arms E (unreliable transports) and F.
    pub(super) fn start(cx: &mut Cx<'_>, request: Bytes) -> NonInviteClient {
        cx.send(request.clone());
        let interval = cx.cfg.t1();
        if !cx.reliable {
            cx.arm(Timer::E, interval);
        }
        cx.arm(Timer::F, cx.cfg.t1x64());
        NonInviteClient::Trying { request, interval }
    }

    /// A transaction created but not yet sent (a deferred CANCEL).
    pub(super) fn waiting(request: Bytes) -> NonInviteClient {
        NonInviteClient::Waiting { request }
    }

    /// Whether this is a CANCEL still held back.
    pub(super) fn is_waiting(&self) -> bool {
        matches!(self, NonInviteClient::Waiting { .. })
    }

    /// Whether the request was sent and no final response has arrived.
    pub(super) fn awaiting_final(&self) -> bool {
        matches!(
            self,
            NonInviteClient::Trying { .. } | NonInviteClient::Proceeding { .. }
        )
    }

    /// Sends a held-back request now; no effect in any other state.
    pub(super) fn release(&mut self, cx: &mut Cx<'_>) {
        if let NonInviteClient::Waiting { request } = self {
            let request = request.clone();
            *self = NonInviteClient::start(cx, request);
        }
    }

    /// A response matched this transaction.
    pub(super) fn on_response(&mut self, cx: &mut Cx<'_>, response: Response) -> Fate {
        match self {
            NonInviteClient::Trying { request, .. } | NonInviteClient::Proceeding { request } => {
                if response.status < 200 {
                    // Timer E keeps its deadline; when it fires in
                    // Proceeding it is re-armed with T2 (§17.1.2.2).
                    *self = NonInviteClient::Proceeding {
                        request: request.clone(),
                    };
                    cx.emit(TxnEvent::Response {
                        txn: cx.id,
                        response,
                    });
                    Fate::Alive
                } else {
                    cx.disarm(Timer::E);
                    cx.disarm(Timer::F);
                    *self = NonInviteClient::Completed;
                    cx.emit(TxnEvent::Response {
                        txn: cx.id,
                        response,
                    });
                    let wait = cx.cfg.t4_or_zero(cx.reliable);
                    cx.wait_or_end(Timer::K, wait)
                }
            }
            // Retransmissions are absorbed; nothing can answer a request
            // that was never sent.
            NonInviteClient::Completed | NonInviteClient::Waiting { .. } => Fate::Alive,
        }
    }

    /// One of this transaction's timers expired.
    pub(super) fn on_timer(&mut self, cx: &mut Cx<'_>, timer: Timer) -> Fate {
        match (&mut *self, timer) {
            (NonInviteClient::Trying { request, interval }, Timer::E) => {
                cx.send(request.clone());
                *interval = cx.cfg.double_capped(*interval);
                let next = *interval;
                cx.arm(Timer::E, next);
                Fate::Alive
            }
            (NonInviteClient::Proceeding { request }, Timer::E) => {
                cx.send(request.clone());
                cx.arm(Timer::E, cx.cfg.t2());
                Fate::Alive
            }
            (NonInviteClient::Trying { .. } | NonInviteClient::Proceeding { .. }, Timer::F) => {
                cx.emit(TxnEvent::Timeout { txn: cx.id });
                Fate::Terminated
            }
            (NonInviteClient::Completed, Timer::K) => Fate::Terminated,
            _ => Fate::Alive,
        }
    }
}

/// The ACK for a non-2xx final response (RFC 3261 §17.1.1.3): the
/// original's Request-URI, Call-ID, From, CSeq number and Route set, its top
/// Via alone, and the response's To (which carries the tag).
pub(super) fn build_ack(original: &Request, response: &Response) -> Request {
    let mut ack = Request::new(Method::Ack, original.uri.clone());
    let mut h = Headers::default();
    if let Some(via) = original.headers.get("Via") {
        h.push("Via", via);
    }
    h.push("Max-Forwards", MAX_FORWARDS);
    if let Some(from) = original.headers.get("From") {
        h.push("From", from);
    }
    if let Some(to) = response
        .headers
        .get("To")
        .or_else(|| original.headers.get("To"))
    {
        h.push("To", to);
    }
    if let Some(call_id) = original.call_id() {
        h.push("Call-ID", call_id);
    }
    if let Ok(cseq) = original.cseq() {
        h.push(
            "CSeq",
            CSeq {
                seq: cseq.seq,
                method: Method::Ack,
            }
            .to_string(),
        );
    }
    for route in original.headers.get_all("Route") {
        h.push("Route", route);
    }
    ack.headers = h;
    ack
}

/// The CANCEL of a pending request (RFC 3261 §9.1): the original's
/// Request-URI, Call-ID, From, To, CSeq number and Route set, and its top
/// Via alone (so the branch matches the original's transaction).
pub(super) fn build_cancel(original: &Request) -> Request {
    let mut cancel = Request::new(Method::Cancel, original.uri.clone());
    let mut h = Headers::default();
    if let Some(via) = original.headers.get("Via") {
        h.push("Via", via);
    }
    h.push("Max-Forwards", MAX_FORWARDS);
    for name in ["From", "To", "Call-ID"] {
        if let Some(value) = original.headers.get(name) {
            h.push(name, value);
        }
    }
    if let Ok(cseq) = original.cseq() {
        h.push(
            "CSeq",
            CSeq {
                seq: cseq.seq,
                method: Method::Cancel,
            }
            .to_string(),
        );
    }
    for route in original.headers.get_all("Route") {
        h.push("Route", route);
    }
    cancel.headers = h;
    cancel
}
