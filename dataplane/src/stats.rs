//! Per-worker counters and the reasons a packet is dropped.
//!
//! Counters are plain fields owned by a worker (no atomics on the packet path);
//! readers ask the worker for a snapshot and sum snapshots across workers.

/// Why a received packet was not forwarded. Indexes [`DropCounts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Shorter than the fixed header of its protocol.
    TooShort = 0,
    /// RTP/RTCP version field is not 2.
    BadVersion,
    /// The CSRC list runs past the end of the packet.
    CsrcOverflow,
    /// The header extension runs past the end of the packet.
    ExtensionOverflow,
    /// The padding count is zero or runs into the header.
    PaddingOverflow,
    /// An RTCP packet's length field disagrees with the datagram.
    RtcpMalformed,
    /// Neither RTP/RTCP nor anything this leg accepts (STUN, DTLS, garbage).
    UnknownProtocol,
    /// From a source other than the latched one.
    ForeignSource,
    /// From a source that may not latch this leg (RTP-Bleed protection).
    UnexpectedSource,
    /// The leg's direction forbids sending (or the far leg's forbids receiving).
    Direction,
    /// The far leg has no remote yet: nowhere to send.
    NoDestination,
    /// The kernel refused the send.
    SendFailed,
    /// Larger than a receive buffer (cut by the kernel).
    TooLong,
}

impl DropReason {
    /// Number of variants; the length of [`DropCounts`].
    pub const COUNT: usize = 13;
    /// Every reason, in index order.
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::TooShort,
        DropReason::BadVersion,
        DropReason::CsrcOverflow,
        DropReason::ExtensionOverflow,
        DropReason::PaddingOverflow,
        DropReason::RtcpMalformed,
        DropReason::UnknownProtocol,
        DropReason::ForeignSource,
        DropReason::UnexpectedSource,
        DropReason::Direction,
        DropReason::NoDestination,
        DropReason::SendFailed,
        DropReason::TooLong,
    ];

    /// The stable name used in gRPC stats and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::TooShort => "too_short",
            DropReason::BadVersion => "bad_version",
            DropReason::CsrcOverflow => "csrc_overflow",
            DropReason::ExtensionOverflow => "extension_overflow",
            DropReason::PaddingOverflow => "padding_overflow",
            DropReason::RtcpMalformed => "rtcp_malformed",
            DropReason::UnknownProtocol => "unknown_protocol",
            DropReason::ForeignSource => "foreign_source",
            DropReason::UnexpectedSource => "unexpected_source",
            DropReason::Direction => "direction",
            DropReason::NoDestination => "no_destination",
            DropReason::SendFailed => "send_failed",
            DropReason::TooLong => "too_long",
        }
    }
}

/// Drop counters indexed by [`DropReason`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounts(pub [u64; DropReason::COUNT]);

impl DropCounts {
    /// Counts one drop.
    #[inline]
    pub fn add(&mut self, reason: DropReason) {
        // The array has one slot per variant: the index is always in range.
        if let Some(slot) = self.0.get_mut(reason as usize) {
            *slot += 1;
        }
    }

    /// The count for one reason.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0.get(reason as usize).copied().unwrap_or(0)
    }

    /// Adds another set of counters into this one.
    pub fn merge(&mut self, other: &DropCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += *b;
        }
    }

    /// Sum over all reasons.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Non-zero counts as (name, count) pairs, for the wire.
    pub fn nonzero(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|r| (r.as_str(), self.get(*r)))
            .filter(|(_, c)| *c > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_index_order() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }

    #[test]
    fn counts_and_merges() {
        let mut a = DropCounts::default();
        a.add(DropReason::ForeignSource);
        a.add(DropReason::ForeignSource);
        let mut b = DropCounts::default();
        b.add(DropReason::TooShort);
        b.merge(&a);
        assert_eq!(b.get(DropReason::ForeignSource), 2);
        assert_eq!(b.total(), 3);
        assert_eq!(b.nonzero().count(), 2);
    }
}
