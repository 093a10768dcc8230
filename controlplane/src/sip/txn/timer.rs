//! Transaction timers: their names, their durations and the per-transaction
//! table of deadlines.
//!
//! Timers are named as in RFC 3261 §17 (A–K) and RFC 6026 (L, M), plus the
//! 2xx retransmission of §13.3.1.4, which the RFC leaves unnamed. A
//! transaction keeps one deadline slot per timer; the layer indexes only the
//! earliest one. Durations that are zero on reliable transports (D, I, J,
//! K) are never armed: the machine ends instead.

use std::time::{Duration, Instant};

/// The shortest T1 used, so a misconfigured zero cannot make a
/// retransmission timer fire at the instant it is armed, forever.
const MIN_T1: Duration = Duration::from_millis(1);

/// Timer D on unreliable transports is at least this (RFC 3261 §17.1.1.2).
const MIN_TIMER_D: Duration = Duration::from_secs(32);

/// The base intervals of RFC 3261 §17 (Table 4) and overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate: first retransmission interval (default 500 ms).
    pub t1: Duration,
    /// Longest retransmission interval for non-INVITE requests and INVITE
    /// responses (default 4 s).
    pub t2: Duration,
    /// How long a message may stay in the network (default 5 s): Timers I
    /// and K on unreliable transports.
    pub t4: Duration,
    /// INVITE client transaction timeout; `None` is the RFC's 64*T1.
    pub timer_b: Option<Duration>,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            timer_b: None,
        }
    }
}

impl TimerConfig {
    /// T1, never zero.
    pub(super) fn t1(&self) -> Duration {
        self.t1.max(MIN_T1)
    }

    /// T2, never below T1.
    pub(super) fn t2(&self) -> Duration {
        self.t2.max(self.t1())
    }

    /// 64*T1: Timers B (default), F, H, J (unreliable), L and M.
    pub(super) fn t1x64(&self) -> Duration {
        self.t1().saturating_mul(64)
    }

    /// Timer B: the INVITE client transaction timeout.
    pub(super) fn timer_b(&self) -> Duration {
        self.timer_b.unwrap_or_else(|| self.t1x64())
    }

    /// Timer D: how long a Completed INVITE client transaction absorbs
    /// retransmitted final responses. At least 32 s, and no less than the
    /// 64*T1 the server may go on retransmitting for.
    pub(super) fn timer_d(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.t1x64().max(MIN_TIMER_D)
        }
    }

    /// Timers I and K: T4, zero on reliable transports.
    pub(super) fn t4_or_zero(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.t4
        }
    }

    /// Timer J: 64*T1, zero on reliable transports.
    pub(super) fn timer_j(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.t1x64()
        }
    }

    /// The next interval of a doubling retransmission timer capped at T2
    /// (Timers E and G, the 2xx retransmission).
    pub(super) fn double_capped(&self, interval: Duration) -> Duration {
        interval.saturating_mul(2).min(self.t2())
    }
}

/// A transaction timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// INVITE client: request retransmission, doubling from T1 (unreliable).
    A,
    /// INVITE client: transaction timeout while Calling.
    B,
    /// INVITE client: wait in Completed for response retransmissions.
    D,
    /// Non-INVITE client: request retransmission, doubling from T1 up to T2.
    E,
    /// Non-INVITE client: transaction timeout.
    F,
    /// INVITE server: non-2xx final response retransmission up to T2.
    G,
    /// INVITE server: wait for the ACK of a non-2xx final response.
    H,
    /// INVITE server: wait in Confirmed for ACK retransmissions.
    I,
    /// Non-INVITE server: wait in Completed for request retransmissions.
    J,
    /// Non-INVITE client: wait in Completed for response retransmissions.
    K,
    /// INVITE server: stay in Accepted (RFC 6026); also when the 2xx stops
    /// being retransmitted without an ACK (RFC 3261 §13.3.1.4).
    L,
    /// INVITE client: stay in Accepted (RFC 6026).
    M,
    /// INVITE server: 2xx retransmission, doubling from T1 up to T2, until
    /// the ACK arrives (RFC 3261 §13.3.1.4, done here for the TU).
    Retransmit2xx,
}

impl Timer {
    /// Every timer, in table order; on equal deadlines the earlier one in
    /// this list fires first.
    const ALL: [Timer; 13] = [
        Timer::A,
        Timer::B,
        Timer::D,
        Timer::E,
        Timer::F,
        Timer::G,
        Timer::H,
        Timer::I,
        Timer::J,
        Timer::K,
        Timer::L,
        Timer::M,
        Timer::Retransmit2xx,
    ];

    /// Number of timers (the table size).
    const COUNT: usize = Timer::ALL.len();
}

/// One transaction's deadlines, indexed by [`Timer`].
#[derive(Debug, Clone, Default)]
pub(super) struct Timers([Option<Instant>; Timer::COUNT]);

impl Timers {
    /// Arms `timer` at `at`, replacing any earlier deadline.
    pub(super) fn set(&mut self, timer: Timer, at: Instant) {
        self.0[timer as usize] = Some(at);
    }

    /// Disarms `timer`.
    pub(super) fn clear(&mut self, timer: Timer) {
        self.0[timer as usize] = None;
    }

    /// The earliest armed deadline.
    pub(super) fn next(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }

    /// Disarms and returns the timer that expired first at `now`, if any.
    pub(super) fn take_expired(&mut self, now: Instant) -> Option<Timer> {
        let mut best: Option<(Instant, Timer)> = None;
        for timer in Timer::ALL {
            if let Some(at) = self.0[timer as usize] {
                if at <= now && best.is_none_or(|(b, _)| at < b) {
                    best = Some((at, timer));
                }
            }
        }
        let (_, timer) = best?;
        self.clear(timer);
        Some(timer)
    }
}
