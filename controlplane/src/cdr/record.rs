//! The call detail record itself: what the B2BUA fills in when a call ends.
//!
//! Plain data, no I/O. Durations are derived from the timestamps rather than
//! stored alongside them, so they cannot disagree. Times serialize as RFC 3339
//! UTC with milliseconds, the same text the database holds.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};

/// One call: one ingress INVITE, however many egress attempts it took.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CallRecord {
    /// Kordon's own id of the call (not the ingress Call-ID); opaque.
    pub call_id: String,
    /// Id tying this call to logs, traces and the verification node.
    pub correlation_id: String,
    /// The authenticated user, if the call came from a registered user.
    pub user: Option<String>,
    /// The user's device, if known.
    pub device: Option<String>,
    /// Calling number as received.
    pub a_number: String,
    /// Called number as received.
    pub b_number: String,
    /// Calling number normalized to E.164, if it could be.
    pub a_e164: Option<String>,
    /// Called number normalized to E.164, if it could be.
    pub b_e164: Option<String>,
    /// The originally called number, from Diversion or History-Info.
    pub original_called: Option<String>,
    /// Trunk the call came in on, if it came from a trunk.
    pub ingress_trunk: Option<String>,
    /// Trunk the call finally went out on (the last attempt), if any.
    pub egress_trunk: Option<String>,
    /// When the ingress INVITE arrived.
    #[serde(serialize_with = "ser_time")]
    pub start: DateTime<Utc>,
    /// When the call was answered, if it was.
    #[serde(serialize_with = "ser_opt_time")]
    pub answer: Option<DateTime<Utc>>,
    /// When the call ended (BYE, CANCEL or final failure).
    #[serde(serialize_with = "ser_time")]
    pub end: DateTime<Utc>,
    /// How the call ended.
    pub disposition: Disposition,
    /// Final SIP status sent to the caller (200 for an answered call).
    pub sip_status: u16,
    /// Human-readable reason (reason phrase, Reason header, internal cause).
    pub reason: String,
    /// Media counters from the data plane.
    pub media: MediaCounters,
    /// Egress attempts, in the order they were made.
    pub attempts: Vec<EgressAttempt>,
}

impl CallRecord {
    /// Milliseconds from the INVITE to the end of the call (0 if the clock
    /// went backwards).
    pub fn duration_ms(&self) -> u64 {
        span_ms(self.start, self.end)
    }

    /// Milliseconds from answer to the end of the call; 0 if unanswered.
    pub fn billable_ms(&self) -> u64 {
        self.answer.map_or(0, |a| span_ms(a, self.end))
    }
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// Answered (and later hung up).
    Answered,
    /// The callee was busy (486, 600).
    Busy,
    /// Nobody answered in time (408, 480, or our no-answer timer).
    NoAnswer,
    /// The caller gave up before an answer (CANCEL, 487).
    Cancelled,
    /// Refused by the far end or by routing (other 4xx/5xx/6xx).
    Rejected,
    /// Refused by policy: authentication, class of service, fraud checks.
    Forbidden,
    /// Failed inside Kordon or on the way (timeouts, transport, media).
    Failed,
}

impl Disposition {
    /// Every disposition, in declaration order.
    pub const ALL: [Disposition; 7] = [
        Disposition::Answered,
        Disposition::Busy,
        Disposition::NoAnswer,
        Disposition::Cancelled,
        Disposition::Rejected,
        Disposition::Forbidden,
        Disposition::Failed,
    ];

    /// The stored and exported name: `answered`, `busy`, `no_answer`,
    /// `cancelled`, `rejected`, `forbidden` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Answered => "answered",
            Disposition::Busy => "busy",
            Disposition::NoAnswer => "no_answer",
            Disposition::Cancelled => "cancelled",
            Disposition::Rejected => "rejected",
            Disposition::Forbidden => "forbidden",
            Disposition::Failed => "failed",
        }
    }
}

impl fmt::Display for Disposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A disposition name that is not one of [`Disposition::as_str`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown call disposition {0:?}")]
pub struct UnknownDisposition(pub String);

impl FromStr for Disposition {
    type Err = UnknownDisposition;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Disposition::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| UnknownDisposition(s.to_string()))
    }
}

/// Media counters for the call, as reported by the data plane at teardown.
/// "In" is what Kordon received from that side, "out" what it sent to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MediaCounters {
    /// Packets received from the A side.
    pub a_packets_in: u64,
    /// Bytes received from the A side.
    pub a_bytes_in: u64,
    /// Packets sent to the A side.
    pub a_packets_out: u64,
    /// Packets received from the B side.
    pub b_packets_in: u64,
    /// Bytes received from the B side.
    pub b_bytes_in: u64,
    /// Packets sent to the B side.
    pub b_packets_out: u64,
    /// Packets dropped by the data plane, both sides together.
    pub dropped: u64,
}

/// One try at sending the call out a trunk.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EgressAttempt {
    /// The trunk tried.
    pub trunk: String,
    /// When the egress INVITE was sent.
    #[serde(serialize_with = "ser_time")]
    pub start: DateTime<Utc>,
    /// When the attempt ended (final response, timeout, or end of call).
    #[serde(serialize_with = "ser_time")]
    pub end: DateTime<Utc>,
    /// Final status of the attempt (408 for a timeout with no response).
    pub sip_status: u16,
    /// Reason phrase or cause.
    pub reason: String,
}

/// `to - from` in whole milliseconds, 0 when negative.
fn span_ms(from: DateTime<Utc>, to: DateTime<Utc>) -> u64 {
    u64::try_from((to - from).num_milliseconds()).unwrap_or(0)
}

/// The one text form of a time in this module: `2024-05-01T10:00:00.123Z`.
pub(super) fn fmt_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn ser_time<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&fmt_time(t))
}

fn ser_opt_time<S: serde::Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_some(&fmt_time(t)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).expect("test times are in range")
    }

    #[test]
    fn disposition_names_round_trip() {
        for d in Disposition::ALL {
            assert_eq!(d.as_str().parse::<Disposition>(), Ok(d));
            assert_eq!(d.to_string(), d.as_str());
        }
        assert_eq!(
            "Answered".parse::<Disposition>(),
            Err(UnknownDisposition("Answered".into()))
        );
    }

    #[test]
    fn durations_derive_from_times_and_never_go_negative() {
        let mut r = CallRecord {
            call_id: "c".into(),
            correlation_id: "x".into(),
            user: None,
            device: None,
            a_number: "1".into(),
            b_number: "2".into(),
            a_e164: None,
            b_e164: None,
            original_called: None,
            ingress_trunk: None,
            egress_trunk: None,
            start: at(1_000),
            answer: Some(at(3_500)),
            end: at(10_250),
            disposition: Disposition::Answered,
            sip_status: 200,
            reason: "OK".into(),
            media: MediaCounters::default(),
            attempts: Vec::new(),
        };
        assert_eq!(r.duration_ms(), 9_250);
        assert_eq!(r.billable_ms(), 6_750);
        r.answer = None;
        assert_eq!(r.billable_ms(), 0);
        r.end = at(0);
        assert_eq!(r.duration_ms(), 0);
        assert_eq!(fmt_time(&at(1_234)), "1970-01-01T00:00:01.234Z");
    }
}
