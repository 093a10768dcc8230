//! Server transactions (RFC 3261 §17.2, RFC 6026 §7.1): the INVITE and
//! non-INVITE machines.
//!
//! The machines send responses the transaction user gives them, repeat the
//! last one when the request is retransmitted, and run the response
//! retransmission and ACK timers. They do not match requests (the layer
//! does) and never see the request itself: the layer keeps it.
//!
//! RFC 3261 gives the retransmission of a 2xx to INVITE to the UAS core
//! (§13.3.1.4); here the INVITE machine does it in Accepted, so the
//! transaction user has nothing to run: the layer stops the retransmission
//! when it recognises the ACK. As §13.3.1.4 says, the 2xx is retransmitted
//! whatever the transport, since a later hop may be unreliable.

use std::time::Duration;

use bytes::Bytes;

use super::{Cx, Fate, Timer, TxnError, TxnEvent};

/// Whether the ACK for a retransmitted 2xx has arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AckWait {
    /// Not yet: the 2xx is retransmitted, the next time after `interval`.
    Pending {
        /// The interval the retransmission timer was last armed with.
        interval: Duration,
    },
    /// The ACK arrived: retransmission stopped.
    Received,
}

/// The INVITE server transaction (RFC 3261 §17.2.1, Figure 7 as amended by
/// RFC 6026).
#[derive(Debug)]
pub(super) enum InviteServer {
    /// No final response yet; a retransmitted INVITE gets the last
    /// provisional response again (the layer's 100 Trying at first).
    Proceeding {
        /// The last provisional response sent.
        last: Bytes,
        /// The To tag of the last provisional response, if it had one
        /// (reused in the 200 to a CANCEL, RFC 3261 §9.2).
        to_tag: Option<String>,
    },
    /// A non-2xx final response was sent: Timer G retransmits it
    /// (unreliable transports), Timer H waits for the ACK.
    Completed {
        /// The final response as sent.
        response: Bytes,
        /// The interval Timer G was last armed with.
        interval: Duration,
    },
    /// The ACK arrived: Timer I absorbs its retransmissions.
    Confirmed,
    /// A 2xx was sent (RFC 6026 §7.1): it is retransmitted until its ACK
    /// arrives; Timer L ends the transaction, absorbing retransmitted
    /// INVITEs meanwhile.
    Accepted {
        /// The 2xx as sent.
        response: Bytes,
        /// Whether its ACK arrived.
        ack: AckWait,
    },
}

/// What to do with an ACK that matched an INVITE server transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AckDisposition {
    /// Absorbed by the transaction (the ACK of a non-2xx, or out of place).
    Absorbed(Fate),
    /// The ACK of a 2xx: the transaction user gets it.
    Deliver,
}

impl InviteServer {
    /// Sends the layer's 100 Trying (RFC 3261 §17.2.1: at once is allowed)
    /// and waits for the transaction user.
    pub(super) fn start(cx: &mut Cx<'_>, trying: Bytes) -> InviteServer {
        cx.send(trying.clone());
        InviteServer::Proceeding {
            last: trying,
            to_tag: None,
        }
    }

    /// Whether no final response has been sent.
    pub(super) fn is_proceeding(&self) -> bool {
        matches!(self, InviteServer::Proceeding { .. })
    }

    /// The To tag given by the transaction user in a provisional response.
    pub(super) fn to_tag(&self) -> Option<&str> {
        match self {
            InviteServer::Proceeding { to_tag, .. } => to_tag.as_deref(),
            _ => None,
        }
    }

    /// The INVITE arrived again.
    pub(super) fn on_retransmission(&mut self, cx: &mut Cx<'_>) {
        match self {
            InviteServer::Proceeding { last, .. } => cx.send(last.clone()),
            InviteServer::Completed { response, .. } => cx.send(response.clone()),
            // RFC 6026 §7.1: absorbed in Accepted; the 2xx has its own
            // retransmission. Confirmed absorbs everything.
            InviteServer::Accepted { .. } | InviteServer::Confirmed => {}
        }
    }

    /// The transaction user answers. `to_tag` is the To tag the response
    /// carries; `wire` is the response serialized.
    pub(super) fn respond(
        &mut self,
        cx: &mut Cx<'_>,
        status: u16,
        to_tag: Option<String>,
        wire: Bytes,
    ) -> Result<Fate, TxnError> {
        if !self.is_proceeding() {
            return Err(TxnError::AlreadyFinal);
        }
        cx.send(wire.clone());
        if status < 200 {
            *self = InviteServer::Proceeding { last: wire, to_tag };
        } else if status < 300 {
            let interval = cx.cfg.t1();
            cx.arm(Timer::Retransmit2xx, interval);
            cx.arm(Timer::L, cx.cfg.t1x64());
            *self = InviteServer::Accepted {
                response: wire,
                ack: AckWait::Pending { interval },
            };
        } else {
            let interval = cx.cfg.t1();
            if !cx.reliable {
                cx.arm(Timer::G, interval);
            }
            cx.arm(Timer::H, cx.cfg.t1x64());
            *self = InviteServer::Completed {
                response: wire,
                interval,
            };
        }
        Ok(Fate::Alive)
    }

    /// An ACK matched this transaction by branch (RFC 3261 §17.2.3).
    pub(super) fn on_ack(&mut self, cx: &mut Cx<'_>) -> AckDisposition {
        match self {
            InviteServer::Completed { .. } => {
                cx.disarm(Timer::G);
                cx.disarm(Timer::H);
                *self = InviteServer::Confirmed;
                let wait = cx.cfg.t4_or_zero(cx.reliable);
                AckDisposition::Absorbed(cx.wait_or_end(Timer::I, wait))
            }
            InviteServer::Confirmed => AckDisposition::Absorbed(Fate::Alive),
            // An ACK reusing the INVITE's branch for a 2xx (RFC 6026 §7.1
            // passes ACKs in Accepted to the TU).
            InviteServer::Accepted { .. } => {
                self.on_2xx_ack(cx);
                AckDisposition::Deliver
            }
            // An ACK before any final response acknowledges nothing.
            InviteServer::Proceeding { .. } => AckDisposition::Absorbed(Fate::Alive),
        }
    }

    /// The ACK for this transaction's 2xx arrived: stop retransmitting it.
    /// The transaction stays in Accepted until Timer L.
    pub(super) fn on_2xx_ack(&mut self, cx: &mut Cx<'_>) {
        if let InviteServer::Accepted { ack, .. } = self {
            *ack = AckWait::Received;
            cx.disarm(Timer::Retransmit2xx);
        }
    }

    /// One of this transaction's timers expired.
    pub(super) fn on_timer(&mut self, cx: &mut Cx<'_>, timer: Timer) -> Fate {
        match (&mut *self, timer) {
            (InviteServer::Completed { response, interval }, Timer::G) => {
                cx.send(response.clone());
                *interval = cx.cfg.double_capped(*interval);
                let next = *interval;
                cx.arm(Timer::G, next);
                Fate::Alive
            }
            (InviteServer::Completed { .. }, Timer::H) => {
                cx.emit(TxnEvent::AckTimeout { txn: cx.id });
                Fate::Terminated
            }
            (InviteServer::Confirmed, Timer::I) => Fate::Terminated,
            (
                InviteServer::Accepted {
                    response,
                    ack: AckWait::Pending { interval },
                },
                Timer::Retransmit2xx,
            ) => {
                cx.send(response.clone());
                *interval = cx.cfg.double_capped(*interval);
                let next = *interval;
                cx.arm(Timer::Retransmit2xx, next);
                Fate::Alive
            }
            (InviteServer::Accepted { ack, .. }, Timer::L) => {
                if matches!(ack, AckWait::Pending { .. }) {
                    cx.emit(TxnEvent::AckTimeout { txn: cx.id });
                }
                Fate::Terminated
            }
            _ => Fate::Alive,
        }
    }
}

/// The non-INVITE server transaction (RFC 3261 §17.2.2, Figure 8).
#[derive(Debug)]
pub(super) enum NonInviteServer {
    /// Nothing sent yet; retransmitted requests are absorbed.
    Trying,
    /// A provisional response was sent; a retransmitted request gets it
    /// again.
    Proceeding {
        /// The last provisional response sent.
        last: Bytes,
    },
    /// A final response was sent; Timer J keeps answering retransmitted
    /// requests with it.
    Completed {
        /// The final response as sent.
        response: Bytes,
    },
}

impl NonInviteServer {
    /// A new transaction waiting for the transaction user.
    pub(super) fn start() -> NonInviteServer {
        NonInviteServer::Trying
    }

    /// The request arrived again.
    pub(super) fn on_retransmission(&mut self, cx: &mut Cx<'_>) {
        match self {
            NonInviteServer::Trying => {}
            NonInviteServer::Proceeding { last } => cx.send(last.clone()),
            NonInviteServer::Completed { response } => cx.send(response.clone()),
        }
    }

    /// The transaction user (or the layer, for CANCEL) answers.
    pub(super) fn respond(
        &mut self,
        cx: &mut Cx<'_>,
        status: u16,
        wire: Bytes,
    ) -> Result<Fate, TxnError> {
        if matches!(self, NonInviteServer::Completed { .. }) {
            return Err(TxnError::AlreadyFinal);
        }
        cx.send(wire.clone());
        if status < 200 {
            *self = NonInviteServer::Proceeding { last: wire };
            Ok(Fate::Alive)
        } else {
            *self = NonInviteServer::Completed { response: wire };
            let wait = cx.cfg.timer_j(cx.reliable);
            Ok(cx.wait_or_end(Timer::J, wait))
        }
    }

    /// One of this transaction's timers expired.
    pub(super) fn on_timer(&mut self, _cx: &mut Cx<'_>, timer: Timer) -> Fate {
        match (&*self, timer) {
            (NonInviteServer::Completed { .. }, Timer::J) => Fate::Terminated,
            _ => Fate::Alive,
        }
    }
}
