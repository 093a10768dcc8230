//! RFC 3261 transactions as sans-IO state machines.
//!
//! One machine per transaction kind (§17): INVITE and non-INVITE, client
//! (`client.rs`) and server (`server.rs`), with RFC 6026's Accepted state for
//! INVITE. Each is a state enum whose variants hold only what that state
//! needs; timers A–M are named as in the RFCs and live in a fixed
//! per-transaction table (`timer.rs`). The [`TxnLayer`] owns every live
//! transaction in a slab, matches incoming messages to them (§17.1.3,
//! §17.2.3), answers CANCEL (§9.2), generates the ACK for a non-2xx final
//! response (§17.1.1.3), retransmits a 2xx to INVITE until it is ACKed
//! (§13.3.1.4) and keeps a cheap ordered index of deadlines.
//!
//! What it does not do: no sockets, clock or tasks (time is an argument,
//! randomness comes from the rng given at construction); no dialog state
//! (Call-ID and tags are read only to recognise the ACK for a 2xx); no
//! Timer C (the transaction user runs its own no-answer timer); no parsing
//! or validation of incoming messages beyond reading the Via, CSeq, Call-ID
//! and tags it matches on (the caller hands in parsed, validated messages).
//!
//! Invariants: a [`TxnId`] names one transaction for its whole life and is
//! never reused (a slot's generation is bumped when its transaction ends);
//! the layer's deadline index holds exactly the earliest armed timer of each
//! live transaction.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::message::{Request, Response};
use super::Peer;

mod client;
mod layer;
mod server;
mod timer;

#[cfg(test)]
mod tests;

pub use layer::TxnLayer;
pub use timer::TimerConfig;

use timer::{Timer, Timers};

/// A transaction handle: a slab index plus the generation of that slot.
///
/// Opaque to the transaction user. Once the transaction ends, the id is
/// simply unknown to every [`TxnLayer`] call; it never names a later
/// transaction that reuses the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TxnId {
    index: u32,
    generation: u32,
}

/// What the transaction layer tells its user (the B2BUA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnEvent {
    /// A new request (not a retransmission) created a server transaction.
    /// For INVITE the layer has already sent 100 Trying.
    Request {
        /// The new server transaction; answer it with [`TxnLayer::respond`].
        txn: TxnId,
        /// The request as received.
        request: Request,
        /// Where it came from (responses go back there, RFC 3581).
        peer: Peer,
    },
    /// An ACK that belongs to no INVITE server transaction awaiting one for
    /// a non-2xx response: the ACK for a 2xx (RFC 3261 §13.2.2.4, §17.2.3),
    /// for the transaction user to match to its dialog. If it matched a 2xx
    /// the layer was retransmitting, the retransmission has stopped.
    Ack {
        /// The ACK.
        request: Request,
        /// Where it came from.
        peer: Peer,
    },
    /// A CANCEL matched an INVITE server transaction still in Proceeding.
    /// The layer has already answered the CANCEL with 200 (RFC 3261 §9.2);
    /// the transaction user must now answer `invite` with 487. A CANCEL
    /// that matches nothing is answered 481 with no event; one for an
    /// INVITE already answered finally is answered 200 with no event.
    Cancel {
        /// The INVITE server transaction being cancelled.
        invite: TxnId,
        /// The CANCEL.
        request: Request,
        /// Where it came from.
        peer: Peer,
    },
    /// A response for a client transaction: provisional or final, and for
    /// an INVITE also each further 2xx while in Accepted (RFC 6026), so the
    /// transaction user can ACK it again.
    Response {
        /// The client transaction.
        txn: TxnId,
        /// The response.
        response: Response,
    },
    /// Timer B or F fired: the client transaction failed without a final
    /// response. Treat it as a 408.
    Timeout {
        /// The client transaction, now ended.
        txn: TxnId,
    },
    /// The transport to the peer failed (or the request had no usable top
    /// Via): the client transaction failed without a final response.
    TransportError {
        /// The client transaction, now ended.
        txn: TxnId,
    },
    /// A response that matched no client transaction, such as a 2xx
    /// retransmitted after its transaction ended, or a 2xx arriving after a
    /// non-2xx final response: the transaction user may ACK (and BYE) it.
    StrayResponse {
        /// The response.
        response: Response,
        /// Where it came from.
        peer: Peer,
    },
    /// An INVITE server transaction's final response was never ACKed: Timer
    /// H for a non-2xx (informational), Timer L for a 2xx (the session
    /// should be ended with a BYE, RFC 3261 §13.3.1.4).
    AckTimeout {
        /// The server transaction, now ended.
        txn: TxnId,
    },
}

/// Bytes for the transport to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send them.
    pub peer: Peer,
    /// One whole serialized message.
    pub bytes: Bytes,
}

/// A transaction user's call the layer refused. Every variant is the
/// caller's fault; none succeeds when retried as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    /// The id names no live transaction (it ended, or never existed here).
    #[error("unknown or ended transaction")]
    UnknownTxn,
    /// The transaction is a client transaction; only server transactions
    /// take responses.
    #[error("not a server transaction")]
    NotServer,
    /// A final response was already sent on this transaction.
    #[error("a final response was already sent")]
    AlreadyFinal,
    /// The status code is outside 100..=699.
    #[error("status code {0} outside 100..=699")]
    InvalidStatus(u16),
}

/// Whether a machine lives on after an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Still running.
    Alive,
    /// Reached Terminated: the layer removes it.
    Terminated,
}

/// What a machine may touch while it handles one input: the clock reading,
/// its timers and the layer's output queues, already addressed to its peer.
struct Cx<'a> {
    now: Instant,
    cfg: TimerConfig,
    reliable: bool,
    id: TxnId,
    peer: Peer,
    timers: &'a mut Timers,
    transmits: &'a mut VecDeque<Transmit>,
    events: &'a mut VecDeque<TxnEvent>,
}

impl Cx<'_> {
    /// Queues `bytes` to the transaction's peer.
    fn send(&mut self, bytes: Bytes) {
        self.transmits.push_back(Transmit {
            peer: self.peer,
            bytes,
        });
    }

    /// Queues an event for the transaction user.
    fn emit(&mut self, event: TxnEvent) {
        self.events.push_back(event);
    }

    /// Arms `timer` to fire `after` from now.
    fn arm(&mut self, timer: Timer, after: Duration) {
        self.timers.set(timer, self.now + after);
    }

    /// Disarms `timer`.
    fn disarm(&mut self, timer: Timer) {
        self.timers.clear(timer);
    }

    /// Enters a wait state that lasts `wait` (Timers D, I, J, K): zero on a
    /// reliable transport means the transaction ends at once.
    fn wait_or_end(&mut self, timer: Timer, wait: Duration) -> Fate {
        if wait.is_zero() {
            Fate::Terminated
        } else {
            self.arm(timer, wait);
            Fate::Alive
        }
    }
}
