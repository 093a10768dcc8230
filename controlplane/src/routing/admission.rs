//! Admission control: per-trunk concurrent-call limits and a per-source
//! INVITE rate limiter.
//!
//! What it does:
//! - [`Admission`] counts calls in progress on each trunk and refuses one
//!   more when a trunk is at its limit (the caller then tries the next trunk
//!   of the route, or answers 503 with Retry-After).
//! - [`RateLimiter`] is a token bucket per source IP address: each source
//!   may send `burst` INVITEs at once and `rate_per_s` a second on average.
//!
//! What it does not: read a clock (time is an argument), share state across
//! threads (the owner serializes calls), or decide the SIP answer.
//!
//! Invariants:
//! - [`Admission::release`] never takes a count below zero, whatever the
//!   order of calls.
//! - [`RateLimiter`] tracks at most `max_sources` addresses, and each
//!   [`RateLimiter::check`] is O(1) amortized: memory stays bounded under a
//!   flood of spoofed sources.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Why [`Admission::try_acquire`] refused a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// The trunk already carries as many calls as its limit allows; a retry
    /// may succeed once a call ends (SIP: next route, then 503 with
    /// Retry-After).
    #[error("trunk {trunk:?} is at its limit of {limit} concurrent calls")]
    Full {
        /// The trunk's name.
        trunk: String,
        /// Its concurrent-call limit.
        limit: u32,
    },
    /// No trunk of that name was configured: a configuration or internal
    /// fault, not the caller's.
    #[error("unknown trunk {trunk:?}")]
    UnknownTrunk {
        /// The name asked for.
        trunk: String,
    },
}

/// Limit and current count for one trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TrunkSlot {
    /// 0 means unlimited.
    limit: u32,
    active: u32,
}

/// Concurrent-call counts and limits per trunk.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    trunks: HashMap<String, TrunkSlot>,
}

impl Admission {
    /// Starts with no active calls; `limits` gives each trunk's name and
    /// limit (0 = unlimited). A name given twice keeps the last limit.
    pub fn new(limits: impl IntoIterator<Item = (String, u32)>) -> Self {
        let trunks = limits
            .into_iter()
            .map(|(name, limit)| (name, TrunkSlot { limit, active: 0 }))
            .collect();
        Admission { trunks }
    }

    /// Counts one more call on `trunk`, or says why it cannot.
    pub fn try_acquire(&mut self, trunk: &str) -> Result<(), AdmissionError> {
        let Some(slot) = self.trunks.get_mut(trunk) else {
            return Err(AdmissionError::UnknownTrunk {
                trunk: trunk.to_owned(),
            });
        };
        if slot.limit != 0 && slot.active >= slot.limit {
            return Err(AdmissionError::Full {
                trunk: trunk.to_owned(),
                limit: slot.limit,
            });
        }
        slot.active = slot.active.saturating_add(1);
        Ok(())
    }

    /// Counts one call fewer on `trunk`. Releasing an unknown trunk, or one
    /// with no active call, changes nothing.
    pub fn release(&mut self, trunk: &str) {
        match self.trunks.get_mut(trunk) {
            Some(slot) if slot.active > 0 => slot.active -= 1,
            Some(_) => tracing::debug!(trunk, "release on a trunk with no active call"),
            None => tracing::debug!(trunk, "release on an unknown trunk"),
        }
    }

    /// Calls in progress on `trunk` (0 for an unknown trunk).
    pub fn active(&self, trunk: &str) -> u32 {
        self.trunks.get(trunk).map_or(0, |slot| slot.active)
    }
}

/// A token bucket: `tokens` as of `last`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Per-source-IP token bucket for INVITEs.
///
/// Sources are kept in two generations, each holding at most half of
/// `max_sources`. A source seen again moves to the current generation; when
/// the current one is full it becomes the previous one and the old previous
/// one is dropped. So a source silent for a whole generation is forgotten (it
/// starts again with a full bucket, as a new source would), a busy source is
/// never forgotten, and both memory and the work per call stay bounded. A
/// scan for the least recently seen source on each insertion would be exact
/// LRU but O(n) per call under a flood; a linked LRU list would need a second
/// index per entry for little gain.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    /// Tokens per second; 0 (or not a finite positive number) turns the
    /// limiter off.
    rate_per_s: f64,
    /// Bucket size in tokens, at least 1.
    burst: f64,
    /// Most sources per generation.
    generation_cap: usize,
    current: HashMap<IpAddr, Bucket>,
    previous: HashMap<IpAddr, Bucket>,
    limited_total: u64,
}

impl RateLimiter {
    /// A limiter allowing each source `burst` INVITEs at once and
    /// `rate_per_s` a second on average, tracking at most `max_sources`
    /// sources. `rate_per_s` of 0 (or negative, NaN or infinite) turns it
    /// off; a `burst` of 0 counts as 1 and a `max_sources` below 2 as 2, so a
    /// configured rate always lets some INVITEs through.
    pub fn new(rate_per_s: f64, burst: u32, max_sources: usize) -> Self {
        let rate_per_s = if rate_per_s.is_finite() && rate_per_s > 0.0 {
            rate_per_s
        } else {
            0.0
        };
        RateLimiter {
            rate_per_s,
            burst: f64::from(burst.max(1)),
            generation_cap: (max_sources / 2).max(1),
            current: HashMap::new(),
            previous: HashMap::new(),
            limited_total: 0,
        }
    }

    /// Whether an INVITE from `ip` at `now` is allowed (`true`) or over the
    /// source's rate (`false`, and counted in [`RateLimiter::limited_total`]).
    /// A `now` earlier than the source's last INVITE counts as no time passed.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.rate_per_s == 0.0 {
            return true;
        }
        let bucket = match self.current.get_mut(&ip) {
            Some(bucket) => bucket,
            None => {
                let known = self.previous.remove(&ip);
                if self.current.len() >= self.generation_cap {
                    // Everything in `previous` was silent for a whole
                    // generation: forget it.
                    std::mem::swap(&mut self.current, &mut self.previous);
                    self.current.clear();
                }
                let start = known.unwrap_or(Bucket {
                    tokens: self.burst,
                    last: now,
                });
                self.current.entry(ip).or_insert(start)
            }
        };
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate_per_s).min(self.burst);
        if now > bucket.last {
            bucket.last = now;
        }
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            self.limited_total = self.limited_total.saturating_add(1);
            false
        }
    }

    /// INVITEs refused since the limiter was made.
    pub fn limited_total(&self) -> u64 {
        self.limited_total
    }

    /// Sources currently remembered (at most `max_sources`, or 2 when that
    /// was below 2).
    pub fn tracked_sources(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    fn admission() -> Admission {
        Admission::new([("mts".to_owned(), 2), ("intl".to_owned(), 0)])
    }

    #[test]
    fn refuses_a_call_over_the_trunk_limit() {
        let mut a = admission();
        assert_eq!(a.try_acquire("mts"), Ok(()));
        assert_eq!(a.try_acquire("mts"), Ok(()));
        let e = a.try_acquire("mts").unwrap_err();
        assert_eq!(
            e,
            AdmissionError::Full {
                trunk: "mts".to_owned(),
                limit: 2
            }
        );
        assert_eq!(
            e.to_string(),
            "trunk \"mts\" is at its limit of 2 concurrent calls"
        );
        assert_eq!(a.active("mts"), 2);
    }

    #[test]
    fn release_makes_room_again() {
        let mut a = admission();
        a.try_acquire("mts").unwrap();
        a.try_acquire("mts").unwrap();
        a.release("mts");
        assert_eq!(a.active("mts"), 1);
        assert_eq!(a.try_acquire("mts"), Ok(()));
    }

    #[test]
    fn zero_limit_is_unlimited_but_counted() {
        let mut a = admission();
        for _ in 0..1000 {
            a.try_acquire("intl").unwrap();
        }
        assert_eq!(a.active("intl"), 1000);
    }

    #[test]
    fn unknown_trunk_is_refused() {
        let mut a = admission();
        assert_eq!(
            a.try_acquire("beeline"),
            Err(AdmissionError::UnknownTrunk {
                trunk: "beeline".to_owned()
            })
        );
        assert_eq!(a.active("beeline"), 0);
        a.release("beeline");
        assert_eq!(a.active("beeline"), 0);
    }

    #[test]
    fn release_never_underflows() {
        let mut a = admission();
        a.release("mts");
        a.release("mts");
        assert_eq!(a.active("mts"), 0);
        a.try_acquire("mts").unwrap();
        a.release("mts");
        a.release("mts");
        assert_eq!(a.active("mts"), 0);
        // The limit still holds after spurious releases.
        a.try_acquire("mts").unwrap();
        a.try_acquire("mts").unwrap();
        assert!(a.try_acquire("mts").is_err());
    }

    #[test]
    fn trunks_are_counted_separately() {
        let mut a = admission();
        a.try_acquire("mts").unwrap();
        a.try_acquire("intl").unwrap();
        assert_eq!(a.active("mts"), 1);
        assert_eq!(a.active("intl"), 1);
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn allows_a_burst_then_limits() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(1.0, 3, 100);
        assert!(rl.check(ip(1), t0));
        assert!(rl.check(ip(1), t0));
        assert!(rl.check(ip(1), t0));
        assert!(!rl.check(ip(1), t0));
        assert!(!rl.check(ip(1), t0 + Duration::from_millis(500)));
        assert_eq!(rl.limited_total(), 2);
    }

    #[test]
    fn refills_at_the_configured_rate() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(2.0, 1, 100);
        assert!(rl.check(ip(1), t0));
        assert!(!rl.check(ip(1), t0 + Duration::from_millis(100)));
        // Half a second at 2/s is one token.
        assert!(rl.check(ip(1), t0 + Duration::from_millis(600)));
        assert!(!rl.check(ip(1), t0 + Duration::from_millis(700)));
        // A long silence refills only up to the burst.
        let later = t0 + Duration::from_secs(3600);
        assert!(rl.check(ip(1), later));
        assert!(!rl.check(ip(1), later));
        assert_eq!(rl.limited_total(), 3);
    }

    #[test]
    fn sources_have_their_own_buckets() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(1.0, 1, 100);
        assert!(rl.check(ip(1), t0));
        assert!(!rl.check(ip(1), t0));
        assert!(rl.check(ip(2), t0));
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert!(rl.check(v6, t0));
        assert!(!rl.check(v6, t0));
    }

    #[test]
    fn zero_rate_turns_limiting_off() {
        let t0 = Instant::now();
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let mut rl = RateLimiter::new(rate, 1, 10);
            for n in 0..100 {
                assert!(rl.check(ip(n % 3), t0));
            }
            assert_eq!(rl.limited_total(), 0);
            assert_eq!(rl.tracked_sources(), 0);
        }
    }

    #[test]
    fn zero_burst_still_lets_one_through() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(1.0, 0, 10);
        assert!(rl.check(ip(1), t0));
        assert!(!rl.check(ip(1), t0));
    }

    #[test]
    fn time_going_backwards_refills_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut rl = RateLimiter::new(1.0, 1, 10);
        assert!(rl.check(ip(1), t0));
        assert!(!rl.check(ip(1), t0 - Duration::from_secs(5)));
        assert!(!rl.check(ip(1), t0 + Duration::from_millis(900)));
        assert!(rl.check(ip(1), t0 + Duration::from_secs(2)));
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_sources() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(1.0, 5, 1000);
        for n in 0..100_000 {
            assert!(rl.check(ip(n), t0));
            assert!(rl.tracked_sources() <= 1000);
        }
        assert_eq!(rl.limited_total(), 0);
    }

    #[test]
    fn a_busy_source_is_not_forgotten_during_a_flood() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(1.0, 2, 100);
        let abuser = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        assert!(rl.check(abuser, t0));
        assert!(rl.check(abuser, t0));
        for n in 0..10_000 {
            rl.check(ip(n), t0);
            // The abuser keeps sending and stays limited: flooding other
            // sources does not buy it a fresh bucket.
            assert!(
                !rl.check(abuser, t0),
                "abuser got through after {n} sources"
            );
        }
        assert!(rl.tracked_sources() <= 100);
    }

    #[test]
    fn an_idle_source_is_forgotten_and_starts_afresh() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(1.0, 1, 4);
        assert!(rl.check(ip(1), t0));
        assert!(!rl.check(ip(1), t0));
        // Two generations of two sources each push it out.
        for n in 2..6 {
            rl.check(ip(n), t0);
        }
        assert!(rl.tracked_sources() <= 4);
        assert!(rl.check(ip(1), t0));
    }

    #[test]
    fn a_source_from_the_previous_generation_keeps_its_bucket() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(1.0, 1, 4);
        assert!(rl.check(ip(1), t0));
        rl.check(ip(2), t0);
        // Generation turns over: ip(1) is now in the previous one.
        rl.check(ip(3), t0);
        assert!(!rl.check(ip(1), t0));
    }
}
