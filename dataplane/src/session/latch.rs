//! Latching (symmetric RTP) without the RTP-Bleed hole.
//!
//! Before a leg latches, only a source that passes its [`LatchMode`] may latch
//! it; anything else is dropped as `UnexpectedSource` and gets nothing back.
//! After latching, only the latched source is accepted (`ForeignSource` for the
//! rest). The one automatic re-latch: when the latched source has been silent
//! for `relatch_idle` and a new source passes the latch rule (a NAT rebinding,
//! a phone that moved its port after a re-INVITE). The control plane can
//! always re-latch through an update.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::stats::DropReason;

/// Which sources may latch a leg.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatchMode {
    /// The expected IP (SDP or signalling source), any port: NAT-friendly.
    ExpectedIp,
    /// The expected IP and the announced port.
    Strict,
    /// Any first source; trusted networks only.
    LearnAny,
}

/// Worker-wide latching settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatchPolicy {
    /// Silence after which a latched source may be replaced; `None` = never.
    pub relatch_idle: Option<Duration>,
}

/// The latch state of one socket of a leg.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Latch {
    /// Nothing latched yet.
    Open,
    /// Latched to `addr`; `last_seen` is the last packet from it.
    Latched {
        /// The source.
        addr: SocketAddr,
        /// Its last packet.
        last_seen: Instant,
    },
}

impl Latch {
    /// The latched source, if any.
    #[inline]
    pub fn addr(&self) -> Option<SocketAddr> {
        match self {
            Latch::Open => None,
            Latch::Latched { addr, .. } => Some(*addr),
        }
    }

    /// Admits or refuses a packet from `src`. `Ok(true)` when this packet
    /// latched (or re-latched) the leg.
    #[inline]
    pub fn admit(
        &mut self,
        src: SocketAddr,
        now: Instant,
        mode: LatchMode,
        expected_ip: Option<IpAddr>,
        expected_port: Option<u16>,
        policy: &LatchPolicy,
    ) -> Result<bool, DropReason> {
        match self {
            Latch::Latched { addr, last_seen } if *addr == src => {
                *last_seen = now;
                Ok(false)
            }
            Latch::Latched { last_seen, .. } => {
                let idle = now.saturating_duration_since(*last_seen);
                let may_relatch = policy.relatch_idle.is_some_and(|d| idle >= d);
                if may_relatch && may_latch(src, mode, expected_ip, expected_port) {
                    *self = Latch::Latched {
                        addr: src,
                        last_seen: now,
                    };
                    Ok(true)
                } else {
                    Err(DropReason::ForeignSource)
                }
            }
            Latch::Open => {
                if may_latch(src, mode, expected_ip, expected_port) {
                    *self = Latch::Latched {
                        addr: src,
                        last_seen: now,
                    };
                    Ok(true)
                } else {
                    Err(DropReason::UnexpectedSource)
                }
            }
        }
    }
}

/// The latch rule itself.
#[inline]
fn may_latch(
    src: SocketAddr,
    mode: LatchMode,
    expected_ip: Option<IpAddr>,
    expected_port: Option<u16>,
) -> bool {
    let ip_ok = || expected_ip.is_some_and(|ip| same_ip(ip, src.ip()));
    match mode {
        LatchMode::LearnAny => true,
        LatchMode::ExpectedIp => ip_ok(),
        LatchMode::Strict => ip_ok() && expected_port == Some(src.port()),
    }
}

/// IP equality that treats an IPv4-mapped IPv6 address as its IPv4 address.
#[inline]
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}
