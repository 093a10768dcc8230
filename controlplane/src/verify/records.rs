//! Verification records: one row per verification, in SQLite, written off the
//! request path by one thread.
//!
//! What is here: the record and its codes, [`RecordSink`] (the node's
//! non-blocking end of the queue), [`spawn`] and [`RecordsHandle`] (the
//! writer thread, batching and daily retention clean-up; `writer`),
//! [`cleanup`] (the SQL side of retention; `store`), and [`report`] with
//! [`parse_time`] (a plain-text summary for the CLI; `report`).
//!
//! What is not: deciding what a verification's code is (see the node).
//!
//! Invariants: the request path never waits on SQLite: [`RecordSink::submit`]
//! is a `try_send` and a full queue is a counted drop. One thread writes; the
//! table's `time` column is RFC 3339 UTC with milliseconds, so text order is
//! time order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};

mod report;
mod store;
mod writer;

pub use report::{parse_time, report};
pub use store::cleanup;
pub use writer::{spawn, RecordsHandle};

/// Verification codes (the `code` column). 4 is the classic "calling number
/// not served"; the others are ours (README, verification section).
pub mod code {
    /// The originating node confirmed the call (Continue), or our registry
    /// holds it.
    pub const CONFIRMED: u8 = 0;
    /// The call was not found (Release): the caller's number was spoofed.
    pub const NOT_CONFIRMED: u8 = 1;
    /// The asked node did not answer within `req_timer`.
    pub const TIMEOUT: u8 = 2;
    /// The asked node answered an error, answered something unreadable, or
    /// could not be reached.
    pub const ERROR: u8 = 3;
    /// Asked about a number A that is not of our capacity.
    pub const A_NOT_SERVED: u8 = 4;
    /// No node is known for number A: nobody to ask.
    pub const NO_NODE: u8 = 5;
    /// Answered from a preset interval (`last_numbers`).
    pub const PRESET: u8 = 6;
    /// Passed without a query: a local call, or own number A with
    /// `verify_own_a` off.
    pub const PASSED: u8 = 7;
    /// An outgoing call, registered.
    pub const REGISTERED: u8 = 8;
    /// The request could not be used (bad numbers, bad data).
    pub const BAD_REQUEST: u8 = 9;

    /// The name of a code, for reports.
    pub fn name(c: u8) -> &'static str {
        match c {
            CONFIRMED => "confirmed",
            NOT_CONFIRMED => "not confirmed",
            TIMEOUT => "timeout",
            ERROR => "error",
            A_NOT_SERVED => "calling number not served",
            NO_NODE => "no node for number A",
            PRESET => "preset answer",
            PASSED => "passed without query",
            REGISTERED => "registered",
            BAD_REQUEST => "bad request",
            _ => "unknown",
        }
    }
}

/// Which way a verification went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// We asked another node about an incoming call.
    Out,
    /// Another node asked us about a call from our network.
    In,
    /// Decided here without asking anyone.
    Local,
}

impl Direction {
    /// `out`, `in`, `local`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Out => "out",
            Direction::In => "in",
            Direction::Local => "local",
        }
    }
}

/// One verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// When it started, milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// Which way.
    pub direction: Direction,
    /// Which interface brought it: `rest`, `radius`, `sip`, `node`.
    pub source: &'static str,
    /// The call id (REST/RADIUS `call_id`, SIP Call-ID, or the inter-node
    /// `sessionId`).
    pub call_id: String,
    /// Number A as received.
    pub a: String,
    /// Number B as received (hex of the hash when hashed).
    pub b: String,
    /// Original called number, if any.
    pub c: Option<String>,
    /// Operator the call came from.
    pub id_src: Option<u32>,
    /// Operator the call goes to.
    pub id_dst: Option<u32>,
    /// Asking node.
    pub uvr_o: Option<u32>,
    /// Answering node.
    pub uvr_t: Option<u32>,
    /// The request, as sent or received (JSON for inter-node, a summary
    /// otherwise).
    pub request: String,
    /// The answer (`Continue`, `Release`, `Error 5`, `timeout`, `201`...).
    pub answer: String,
    /// Verification code ([`code`]).
    pub code: u8,
    /// Whether this is an incident (a spoofed or unserved number A).
    pub incident: bool,
    /// How long the verification took, microseconds.
    pub latency_us: u64,
}

/// Where the node hands records; never blocks.
#[derive(Debug, Default)]
pub struct RecordSink {
    tx: Option<SyncSender<Record>>,
    dropped: AtomicU64,
    submitted: AtomicU64,
}

impl RecordSink {
    /// A sink that discards everything (records off, tests).
    pub fn disabled() -> RecordSink {
        RecordSink::default()
    }

    /// A sink feeding `tx`.
    pub fn new(tx: SyncSender<Record>) -> RecordSink {
        RecordSink {
            tx: Some(tx),
            ..RecordSink::default()
        }
    }

    /// Queues a record; when the queue is full or closed it is counted as
    /// dropped.
    pub fn submit(&self, r: Record) {
        let Some(tx) = &self.tx else {
            return;
        };
        match tx.try_send(r) {
            Ok(()) => {
                self.submitted.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records queued so far.
    pub fn submitted(&self) -> u64 {
        self.submitted.load(Ordering::Relaxed)
    }

    /// Records lost to a full or closed queue.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
