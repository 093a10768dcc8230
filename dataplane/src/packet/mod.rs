//! Borrowed views over received datagrams: the RFC 7983 first-byte demux and the
//! RTP ([`rtp`]) and RTCP ([`rtcp`]) header parsers.
//!
//! What it does: looks at a datagram in place, says what protocol it is, checks
//! the header is self-consistent and reports where header, payload and padding
//! lie; rewrites the few header fields a relay changes (SSRC, sequence number).
//!
//! What it does not: own or copy bytes, allocate, read the clock, decrypt SRTP,
//! interpret payloads or keep per-stream state (sequence extension, jitter and
//! latching live with the leg).
//!
//! Invariants: every function is total over `&[u8]`. A bad packet is a
//! [`DropReason`](crate::stats::DropReason), never a panic; the modules deny raw
//! indexing and `unwrap` so the compiler holds us to it. The `fuzzing` feature
//! exposes [`fuzz`] entry points that assert these invariants.
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

pub mod rtcp;
pub mod rtp;

/// What a datagram on a media port is, by its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// RTP (RFC 3550), first byte 128..=191, not an RTCP packet type.
    Rtp,
    /// RTCP (RFC 3550), first byte 128..=191, second byte 192..=223 (RFC 5761 §4).
    Rtcp,
    /// STUN (RFC 8489), first byte 0..=3.
    Stun,
    /// DTLS record (RFC 6347), first byte 20..=63.
    Dtls,
    /// Anything else: ZRTP, TURN channel data, garbage, an empty datagram.
    Other,
}

/// Classifies a datagram by its first two bytes.
///
/// The first byte follows RFC 7983 §7: 0..=3 STUN, 20..=63 DTLS, 128..=191
/// RTP/RTCP; ZRTP (16..=19), TURN channels (64..=79) and the rest are
/// [`Kind::Other`]. RTP and RTCP sharing a port are told apart by RFC 5761 §4: a
/// second byte of 192..=223 is an RTCP packet type (RTP payload types 64..=95
/// with the marker bit set look the same, which is why RFC 5761 forbids them
/// when muxing). A lone RTP/RTCP first byte counts as RTP; its parser then drops
/// it as too short.
#[inline]
pub fn classify(buf: &[u8]) -> Kind {
    match buf {
        [0..=3, ..] => Kind::Stun,
        [20..=63, ..] => Kind::Dtls,
        [128..=191, 192..=223, ..] => Kind::Rtcp,
        [128..=191, ..] => Kind::Rtp,
        _ => Kind::Other,
    }
}

/// Invariant-checking entry points for the cargo-fuzz targets in `fuzz/`.
///
/// Each function takes arbitrary bytes and panics only if an invariant of the
/// parsers is broken, never because the input is bad. Unit tests run them too
/// (`malformed_input`), so the checks cannot rot between fuzz runs.
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz {
    use super::{classify as demux, rtcp as rtcp_mod, rtp as rtp_mod, Kind};

    /// Parses `data` as RTP and checks: the three lengths add up to the datagram;
    /// the header holds at least its CSRC list; a parsed packet classifies as
    /// RTP/RTCP; rewriting SSRC and sequence number changes exactly those two
    /// fields (and bytes), and never the parse verdict.
    pub fn rtp(data: &[u8]) {
        let parsed = rtp_mod::parse(data);
        if let Ok(h) = parsed {
            assert_eq!(h.header_len + h.payload_len + h.padding_len, data.len());
            assert!(h.header_len >= 12 + 4 * usize::from(h.csrc_count));
            assert!(h.header_len.is_multiple_of(4));
            assert!(h.csrc_count <= 15);
            assert!(h.payload_type <= 127);
            if h.padding_len > 0 {
                assert_eq!(data.last().map(|&b| usize::from(b)), Some(h.padding_len));
            }
            assert!(matches!(demux(data), Kind::Rtp | Kind::Rtcp));
        }

        let ssrc = 0x5a5a_0f0f_u32 ^ data.len() as u32;
        let seq = 0xa5a5_u16 ^ data.len() as u16;
        let mut copy = data.to_vec();
        rtp_mod::set_ssrc_seq(&mut copy, ssrc, seq);
        assert_eq!(copy.len(), data.len());
        for (i, (a, b)) in data.iter().zip(copy.iter()).enumerate() {
            let rewritten = data.len() >= 12 && matches!(i, 2 | 3 | 8..=11);
            if !rewritten {
                assert_eq!(a, b, "byte {i} changed by set_ssrc_seq");
            }
        }
        match (parsed, rtp_mod::parse(&copy)) {
            (Ok(before), Ok(after)) => {
                assert_eq!(
                    after,
                    rtp_mod::RtpHeader {
                        ssrc,
                        seq,
                        ..before
                    }
                );
            }
            (Err(before), Err(after)) => assert_eq!(before, after),
            (before, after) => panic!("rewrite changed the verdict: {before:?} -> {after:?}"),
        }
    }

    /// Parses `data` as an RTCP compound and checks: at least one packet; the
    /// first type is an RTCP type; the sender SSRC is bytes 4..8; the datagram
    /// classifies as RTCP; rewriting the sender SSRC changes only that field.
    pub fn rtcp(data: &[u8]) {
        let parsed = rtcp_mod::parse(data);
        if let Ok(c) = parsed {
            assert!(c.packets >= 1);
            assert!((192..=223).contains(&c.first_type));
            assert!(data.len() >= 8 && data.len().is_multiple_of(4));
            let ssrc_bytes = data.get(4..8).and_then(|s| <[u8; 4]>::try_from(s).ok());
            assert_eq!(ssrc_bytes.map(u32::from_be_bytes), Some(c.sender_ssrc));
            assert_eq!(demux(data), Kind::Rtcp);
        }

        let ssrc = 0x0f0f_5a5a_u32 ^ data.len() as u32;
        let mut copy = data.to_vec();
        rtcp_mod::set_sender_ssrc(&mut copy, ssrc);
        for (i, (a, b)) in data.iter().zip(copy.iter()).enumerate() {
            let rewritten = data.len() >= 8 && matches!(i, 4..=7);
            if !rewritten {
                assert_eq!(a, b, "byte {i} changed by set_sender_ssrc");
            }
        }
        match (parsed, rtcp_mod::parse(&copy)) {
            (Ok(before), Ok(after)) => {
                assert_eq!(
                    after,
                    rtcp_mod::RtcpCompound {
                        sender_ssrc: ssrc,
                        ..before
                    }
                );
            }
            (Err(before), Err(after)) => assert_eq!(before, after),
            (before, after) => panic!("rewrite changed the verdict: {before:?} -> {after:?}"),
        }
    }

    /// Classifies `data` and checks the verdict agrees with the first bytes.
    pub fn classify(data: &[u8]) {
        let kind = demux(data);
        let first = data.first().copied();
        let second = data.get(1).copied();
        let expected = match (first, second) {
            (None, _) => Kind::Other,
            (Some(b), _) if b <= 3 => Kind::Stun,
            (Some(b), _) if (20..=63).contains(&b) => Kind::Dtls,
            (Some(b), Some(pt)) if (128..=191).contains(&b) && (192..=223).contains(&pt) => {
                Kind::Rtcp
            }
            (Some(b), _) if (128..=191).contains(&b) => Kind::Rtp,
            (Some(_), _) => Kind::Other,
        };
        assert_eq!(kind, expected);
        assert_eq!(demux(data), kind, "classify is deterministic");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_datagram_is_other() {
        assert_eq!(classify(&[]), Kind::Other);
    }

    #[test]
    fn first_byte_ranges_follow_rfc_7983() {
        for b in 0..=255u8 {
            let expected = match b {
                0..=3 => Kind::Stun,
                20..=63 => Kind::Dtls,
                128..=191 => Kind::Rtp,
                _ => Kind::Other,
            };
            // Second byte 0 is PT 0 (PCMU) without marker: RTP when muxed.
            assert_eq!(classify(&[b, 0]), expected, "first byte {b}");
            assert_eq!(classify(&[b]), expected, "lone first byte {b}");
        }
    }

    #[test]
    fn rtcp_packet_types_are_rtcp_when_muxed() {
        for pt in 192..=223u8 {
            assert_eq!(classify(&[0x80, pt, 0, 1]), Kind::Rtcp, "second byte {pt}");
            assert_eq!(classify(&[0xbf, pt]), Kind::Rtcp, "second byte {pt}");
        }
        assert_eq!(classify(&[0x81, 200, 0, 6]), Kind::Rtcp);
    }

    #[test]
    fn rtp_payload_types_around_the_rtcp_range_stay_rtp() {
        // PT 63 and 96 with marker: 191 and 224 in the second byte.
        assert_eq!(classify(&[0x80, 191]), Kind::Rtp);
        assert_eq!(classify(&[0x80, 224]), Kind::Rtp);
        // PT 111 (Opus) with and without marker.
        assert_eq!(classify(&[0x80, 111]), Kind::Rtp);
        assert_eq!(classify(&[0x80, 0x80 | 111]), Kind::Rtp);
    }

    #[test]
    fn stun_binding_request_is_stun() {
        let stun = [0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        assert_eq!(classify(&stun), Kind::Stun);
    }

    #[test]
    fn dtls_client_hello_is_dtls() {
        assert_eq!(classify(&[22, 0xfe, 0xfd]), Kind::Dtls);
    }

    #[test]
    fn turn_channel_and_zrtp_are_other() {
        assert_eq!(classify(&[0x40, 0x00, 0x00, 0x04]), Kind::Other);
        assert_eq!(classify(&[0x10, 0x00]), Kind::Other);
    }
}

/// Hostile inputs through every parser and its invariant checks. Every crash
/// the fuzzers find becomes a case here.
#[cfg(test)]
mod malformed_input {
    use super::{classify, fuzz, rtcp, rtp, Kind};
    use crate::stats::DropReason;

    /// (input, expected RTP verdict, expected RTCP verdict)
    type Case = (
        &'static [u8],
        Result<(), DropReason>,
        Result<(), DropReason>,
    );

    const CASES: &[Case] = &[
        (&[], Err(DropReason::TooShort), Err(DropReason::TooShort)),
        (
            &[0x80],
            Err(DropReason::TooShort),
            Err(DropReason::TooShort),
        ),
        // All bits set: version 3.
        (
            &[0xff; 12],
            Err(DropReason::BadVersion),
            Err(DropReason::BadVersion),
        ),
        // V=2, P, X, CC=15 on a bare header.
        (
            &[0xbf, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            Err(DropReason::CsrcOverflow),
            Err(DropReason::RtcpMalformed),
        ),
        // V=2, X, extension length 0xffff words.
        (
            &[
                0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xbe, 0xde, 0xff, 0xff,
            ],
            Err(DropReason::ExtensionOverflow),
            Err(DropReason::RtcpMalformed),
        ),
        // V=2, P, padding count 255 on a 13-byte packet.
        (
            &[0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff],
            Err(DropReason::PaddingOverflow),
            Err(DropReason::RtcpMalformed),
        ),
        // RTCP RR whose length field claims 0xffff words.
        (
            &[0x80, 201, 0xff, 0xff, 0, 0, 0, 1],
            Err(DropReason::TooShort),
            Err(DropReason::RtcpMalformed),
        ),
        // RTCP RR with padding bit and a zero count.
        (
            &[0xa0, 201, 0, 1, 0, 0, 0, 0],
            Err(DropReason::TooShort),
            Err(DropReason::RtcpMalformed),
        ),
        // Fuzzer find (rtcp): padding count is the sender SSRC's last byte.
        (
            &[0xa0, 0xc9, 0x00, 0x01, 0xed, 0x01, 0x07, 0x01],
            Err(DropReason::TooShort),
            Err(DropReason::RtcpMalformed),
        ),
        // The smallest valid RTCP: an RR without report blocks.
        (
            &[0x80, 201, 0, 1, 0, 0, 0, 7],
            Err(DropReason::TooShort),
            Ok(()),
        ),
    ];

    #[test]
    fn hostile_inputs_get_their_drop_reason_and_keep_invariants() {
        for (i, (input, rtp_verdict, rtcp_verdict)) in CASES.iter().enumerate() {
            assert_eq!(rtp::parse(input).map(|_| ()), *rtp_verdict, "case {i} rtp");
            assert_eq!(
                rtcp::parse(input).map(|_| ()),
                *rtcp_verdict,
                "case {i} rtcp"
            );
            fuzz::rtp(input);
            fuzz::rtcp(input);
            fuzz::classify(input);
        }
    }

    #[test]
    fn every_two_byte_prefix_classifies_consistently() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                fuzz::classify(&[a, b]);
            }
        }
        assert_eq!(classify(&[0x80, 200]), Kind::Rtcp);
    }
}
