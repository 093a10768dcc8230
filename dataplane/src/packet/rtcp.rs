//! RTCP compound packets (RFC 3550 §6.1, §6.4): a validating walk over a borrowed
//! slice and the in-place rewrite of the first packet's sender SSRC.
//!
//! What it does: the header validity checks of RFC 3550 §A.2, relaxed for real
//! peers: every packet is version 2, the length fields tile the datagram
//! exactly, only the last packet may carry padding, and the first packet is an
//! RTCP type carrying an SSRC. It does not insist that the first packet is an SR
//! or RR (RFC 5506 reduced-size RTCP sends a lone feedback packet), nor does it
//! look at the types after the first.
//!
//! What it does not: decode report blocks, SDES items or feedback, or handle
//! SRTCP: the SRTCP trailer (E flag, index, tag) breaks the tiling, so the
//! compound is parsed after unprotect.
//!
//! Invariant: on `Ok`, the datagram is a whole number of 32-bit words, at least
//! 8 bytes, and bytes 4..8 are the first packet's sender SSRC.
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use crate::stats::DropReason;

/// What [`parse`] learned about an RTCP compound packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtcpCompound {
    /// Packet type of the first packet (200 SR, 201 RR, 205/206 feedback, ...).
    pub first_type: u8,
    /// SSRC of the sender: bytes 4..8 of the first packet.
    pub sender_ssrc: u32,
    /// Number of packets in the compound, saturating at 255.
    pub packets: u8,
}

/// Validates an RTCP compound packet and reports its first packet.
///
/// Drops: shorter than 8 bytes → `TooShort`; any packet whose version is not 2
/// → `BadVersion`; a packet header cut short, a length field running past the
/// end, a walk not ending exactly at the end of `buf`, a padding bit anywhere
/// but the last packet, a padding count of zero or one reaching into the
/// packet's header (or, in a lone packet, its sender SSRC), a first packet type
/// outside 192..=223, or a first packet too short to hold an SSRC →
/// `RtcpMalformed`.
#[inline]
pub fn parse(buf: &[u8]) -> Result<RtcpCompound, DropReason> {
    let Some((&[_, first_type, _, _, s0, s1, s2, s3], _)) = buf.split_first_chunk::<8>() else {
        return Err(DropReason::TooShort);
    };
    let mut packets: u8 = 0;
    let mut rest = buf;
    while !rest.is_empty() {
        let Some((&[b0, _, len_hi, len_lo], _)) = rest.split_first_chunk::<4>() else {
            return Err(DropReason::RtcpMalformed);
        };
        if b0 >> 6 != 2 {
            return Err(DropReason::BadVersion);
        }
        // RFC 3550 §6.4.1: length in 32-bit words minus one, header included.
        let len = (usize::from(u16::from_be_bytes([len_hi, len_lo])) + 1) * 4;
        let Some((packet, tail)) = rest.split_at_checked(len) else {
            return Err(DropReason::RtcpMalformed);
        };
        if packets == 0 && len < 8 {
            // The first packet must hold the sender SSRC we report and rewrite.
            return Err(DropReason::RtcpMalformed);
        }
        if b0 & 0x20 != 0 {
            // RFC 3550 §6.4.1: padding only on the last packet of a compound; its
            // last octet counts the padding, itself included. Padding may not
            // cover the header, nor the first packet's sender SSRC: otherwise
            // rewriting that SSRC would rewrite the count (found by fuzzing,
            // `rejects_padding_covering_sender_ssrc`).
            let count = packet.last().map_or(0, |&b| usize::from(b));
            let content = if packets == 0 { 8 } else { 4 };
            if !tail.is_empty() || count == 0 || count > len - content {
                return Err(DropReason::RtcpMalformed);
            }
        }
        packets = packets.saturating_add(1);
        rest = tail;
    }
    if !(192..=223).contains(&first_type) {
        return Err(DropReason::RtcpMalformed);
    }
    Ok(RtcpCompound {
        first_type,
        sender_ssrc: u32::from_be_bytes([s0, s1, s2, s3]),
        packets,
    })
}

/// Rewrites the first packet's sender SSRC (bytes 4..8) in place; does nothing
/// to a buffer shorter than 8 bytes.
#[inline]
pub fn set_sender_ssrc(buf: &mut [u8], ssrc: u32) {
    if let Some((&mut [_, _, _, _, ref mut s0, ref mut s1, ref mut s2, ref mut s3], _)) =
        buf.split_first_chunk_mut::<8>()
    {
        [*s0, *s1, *s2, *s3] = ssrc.to_be_bytes();
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One packet of a compound: type, count field, body words after the header.
    #[derive(Clone, Debug)]
    struct Pkt {
        pt: u8,
        count: u8,
        body: Vec<u32>,
    }

    /// Lays out packets per RFC 3550 §6.4; `padding` pads the last one.
    fn build(pkts: &[Pkt], padding: Option<u8>) -> Vec<u8> {
        let mut buf = Vec::new();
        for (i, p) in pkts.iter().enumerate() {
            let pad = if i + 1 == pkts.len() { padding } else { None };
            let pad_len = pad.map_or(0, usize::from);
            let words = p.body.len() + pad_len / 4;
            let mut b0 = 0x80 | (p.count & 0x1f);
            if pad.is_some() {
                b0 |= 0x20;
            }
            buf.push(b0);
            buf.push(p.pt);
            buf.extend_from_slice(&(words as u16).to_be_bytes());
            for w in &p.body {
                buf.extend_from_slice(&w.to_be_bytes());
            }
            if let Some(n) = pad {
                buf.extend(std::iter::repeat_n(0u8, usize::from(n) - 1));
                buf.push(n);
            }
        }
        buf
    }

    /// A sender report with no report blocks followed by an SDES CNAME chunk.
    fn sr_sdes() -> Vec<u8> {
        build(
            &[
                Pkt {
                    pt: 200,
                    count: 0,
                    body: vec![0x1122_3344, 0xe000_0000, 0, 160, 10, 1600],
                },
                Pkt {
                    pt: 202,
                    count: 1,
                    // SSRC, CNAME "abcd", end of items.
                    body: vec![0x1122_3344, 0x0104_6162, 0x6364_0000],
                },
            ],
            None,
        )
    }

    #[test]
    fn parses_sender_report_with_sdes() {
        let buf = sr_sdes();
        assert_eq!(buf.len(), 28 + 16);
        assert_eq!(
            parse(&buf),
            Ok(RtcpCompound {
                first_type: 200,
                sender_ssrc: 0x1122_3344,
                packets: 2,
            })
        );
    }

    #[test]
    fn accepts_lone_receiver_report() {
        let buf = build(
            &[Pkt {
                pt: 201,
                count: 0,
                body: vec![7],
            }],
            None,
        );
        assert_eq!(buf.len(), 8);
        assert_eq!(parse(&buf).unwrap().packets, 1);
    }

    #[test]
    fn accepts_lone_feedback_packet_as_reduced_size_rtcp() {
        // RFC 4585 generic NACK, sent alone as RFC 5506 allows.
        let buf = build(
            &[Pkt {
                pt: 205,
                count: 1,
                body: vec![0xaaaa_aaaa, 0xbbbb_bbbb, 0x0010_0000],
            }],
            None,
        );
        let c = parse(&buf).unwrap();
        assert_eq!((c.first_type, c.sender_ssrc), (205, 0xaaaa_aaaa));
    }

    #[test]
    fn accepts_padding_on_last_packet() {
        let mut pkts = vec![
            Pkt {
                pt: 200,
                count: 0,
                body: vec![1, 2, 3, 4, 5, 6],
            },
            Pkt {
                pt: 203,
                count: 1,
                body: vec![1],
            },
        ];
        assert_eq!(parse(&build(&pkts, Some(4))).unwrap().packets, 2);
        pkts.truncate(1);
        assert_eq!(parse(&build(&pkts, Some(8))).unwrap().packets, 1);
    }

    #[test]
    fn rejects_shorter_than_eight_bytes() {
        for len in 0..8 {
            let buf = [0x80, 201, 0, 1, 0, 0, 0, 0];
            assert_eq!(parse(&buf[..len]), Err(DropReason::TooShort), "len {len}");
        }
    }

    #[test]
    fn rejects_bad_version_in_first_packet() {
        let mut buf = sr_sdes();
        buf[0] &= 0x3f;
        assert_eq!(parse(&buf), Err(DropReason::BadVersion));
    }

    #[test]
    fn rejects_bad_version_in_later_packet() {
        let mut buf = sr_sdes();
        buf[28] = (buf[28] & 0x3f) | 0xc0;
        assert_eq!(parse(&buf), Err(DropReason::BadVersion));
    }

    #[test]
    fn rejects_length_running_past_the_end() {
        let mut buf = sr_sdes();
        buf[31] += 1;
        assert_eq!(parse(&buf), Err(DropReason::RtcpMalformed));
    }

    #[test]
    fn rejects_trailing_bytes_after_last_packet() {
        let mut buf = sr_sdes();
        buf.extend_from_slice(&[0x80, 0xca]);
        assert_eq!(parse(&buf), Err(DropReason::RtcpMalformed));
        // A whole trailing word is read as a packet header running past the end.
        buf.extend_from_slice(&[0, 1]);
        assert_eq!(parse(&buf), Err(DropReason::RtcpMalformed));
    }

    #[test]
    fn rejects_srtcp_trailer_left_in_place() {
        // SRTCP-style trailer left in place: 4 bytes of index, no valid header.
        let mut buf = sr_sdes();
        buf.extend_from_slice(&[0x00, 0x00, 0x00, 0x01]);
        assert_eq!(parse(&buf), Err(DropReason::BadVersion));
        let mut buf = sr_sdes();
        buf.extend_from_slice(&[0x80, 0x00, 0x00, 0x01]);
        assert_eq!(parse(&buf), Err(DropReason::RtcpMalformed));
    }

    #[test]
    fn rejects_padding_bit_before_last_packet() {
        let mut buf = sr_sdes();
        buf[0] |= 0x20;
        assert_eq!(parse(&buf), Err(DropReason::RtcpMalformed));
    }

    #[test]
    fn rejects_padding_count_zero_or_beyond_packet_content() {
        let pkts = [Pkt {
            pt: 201,
            count: 0,
            body: vec![7],
        }];
        let mut buf = build(&pkts, Some(4));
        assert!(parse(&buf).is_ok());
        *buf.last_mut().unwrap() = 0;
        assert_eq!(parse(&buf), Err(DropReason::RtcpMalformed));
        // Body is SSRC (4) + padding (4): a count of 5 reaches into the SSRC.
        *buf.last_mut().unwrap() = 5;
        assert_eq!(parse(&buf), Err(DropReason::RtcpMalformed));
        // In a later packet the padding may run up to the header.
        let mut pkts = vec![pkts[0].clone(), pkts[0].clone()];
        pkts[1].body.clear();
        let mut buf = build(&pkts, Some(4));
        assert!(parse(&buf).is_ok());
        *buf.last_mut().unwrap() = 5;
        assert_eq!(parse(&buf), Err(DropReason::RtcpMalformed));
    }

    #[test]
    fn rejects_padding_covering_sender_ssrc() {
        // Fuzzer find: a lone padded RR whose padding count (1) is the last
        // byte of the sender SSRC; rewriting the SSRC rewrote the count.
        let buf = [0xa0, 0xc9, 0x00, 0x01, 0xed, 0x01, 0x07, 0x01];
        assert_eq!(parse(&buf), Err(DropReason::RtcpMalformed));
        // The same padding after the SSRC is fine.
        let buf = [0xa0, 0xc9, 0x00, 0x02, 0xed, 0x01, 0x07, 0x01, 0, 0, 0, 4];
        assert!(parse(&buf).is_ok());
    }

    #[test]
    fn rejects_first_type_outside_rtcp_range() {
        for pt in [0u8, 96, 191, 224, 255] {
            let mut buf = sr_sdes();
            buf[1] = pt;
            assert_eq!(parse(&buf), Err(DropReason::RtcpMalformed), "type {pt}");
        }
    }

    #[test]
    fn rejects_first_packet_without_room_for_ssrc() {
        // An empty BYE (length 0) first: bytes 4..8 would be the next header.
        let buf = build(
            &[
                Pkt {
                    pt: 203,
                    count: 0,
                    body: vec![],
                },
                Pkt {
                    pt: 201,
                    count: 0,
                    body: vec![7],
                },
            ],
            None,
        );
        assert_eq!(parse(&buf), Err(DropReason::RtcpMalformed));
    }

    #[test]
    fn set_sender_ssrc_rewrites_only_that_field() {
        let before = sr_sdes();
        let mut after = before.clone();
        set_sender_ssrc(&mut after, 0x0bad_cafe);
        assert_eq!(
            parse(&after).unwrap(),
            RtcpCompound {
                sender_ssrc: 0x0bad_cafe,
                ..parse(&before).unwrap()
            }
        );
        assert_eq!(before[..4], after[..4]);
        assert_eq!(before[8..], after[8..]);
    }

    #[test]
    fn set_sender_ssrc_ignores_short_buffers() {
        for len in 0..8 {
            let mut buf = vec![0x55u8; len];
            set_sender_ssrc(&mut buf, 0);
            assert!(buf.iter().all(|&b| b == 0x55), "len {len}");
        }
    }

    #[test]
    fn packet_count_saturates() {
        let rr = Pkt {
            pt: 201,
            count: 0,
            body: vec![7],
        };
        let buf = build(&vec![rr; 300], None);
        assert_eq!(parse(&buf).unwrap().packets, 255);
    }

    fn compound() -> impl Strategy<Value = (Vec<Pkt>, Option<u8>)> {
        let first = (
            192u8..=223,
            0u8..32,
            prop::collection::vec(any::<u32>(), 1..8),
        );
        let later = (
            any::<u8>(),
            0u8..32,
            prop::collection::vec(any::<u32>(), 0..8),
        );
        (
            first,
            prop::collection::vec(later, 0..6),
            prop::option::of((1u8..=16).prop_map(|w| w * 4)),
        )
            .prop_map(|(f, rest, padding)| {
                let to_pkt = |(pt, count, body)| Pkt { pt, count, body };
                let pkts = std::iter::once(f).chain(rest).map(to_pkt).collect();
                (pkts, padding)
            })
    }

    proptest! {
        #[test]
        fn built_compounds_parse_back_to_their_fields((pkts, padding) in compound()) {
            let buf = build(&pkts, padding);
            prop_assert_eq!(parse(&buf), Ok(RtcpCompound {
                first_type: pkts[0].pt,
                sender_ssrc: pkts[0].body[0],
                packets: pkts.len() as u8,
            }));
        }

        #[test]
        fn compounds_cut_inside_the_last_packet_are_dropped(
            (pkts, padding) in compound(), seed in any::<usize>()
        ) {
            let buf = build(&pkts, padding);
            let last = pkts.last().unwrap();
            let last_len = 4 + 4 * last.body.len() + padding.map_or(0, usize::from);
            let cut = 1 + seed % (last_len - 1);
            prop_assert!(parse(&buf[..buf.len() - cut]).is_err());
        }
    }
}
