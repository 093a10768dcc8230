//! RTP fixed header (RFC 3550 §5.1): a validating parser over a borrowed slice
//! and in-place rewrites of the fields a relay changes.
//!
//! What it does: checks version, CSRC list, header extension (RFC 3550 §5.3.1,
//! any profile, so RFC 8285 one- and two-byte forms alike) and padding fit the
//! datagram, and reports where payload and padding start.
//!
//! What it does not: look inside the extension or payload, check the payload
//! type against a negotiated map, or decrypt SRTP (the SRTP header is the RTP
//! header, so [`parse`] works before unprotect too, although the padding and
//! payload lengths only mean something once the packet is decrypted).
//!
//! Invariant: on `Ok(h)`, `h.header_len + h.payload_len + h.padding_len` is the
//! datagram length.
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use crate::stats::DropReason;

/// Length of the fixed RTP header, without CSRCs or extension.
pub const FIXED_HEADER_LEN: usize = 12;

/// What [`parse`] learned about an RTP packet; the bytes stay in the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpHeader {
    /// The M bit.
    pub marker: bool,
    /// Payload type, 0..=127.
    pub payload_type: u8,
    /// Sequence number, as on the wire (not extended).
    pub seq: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Number of CSRC identifiers, 0..=15.
    pub csrc_count: u8,
    /// Bytes before the payload: fixed header, CSRC list and extension.
    pub header_len: usize,
    /// Bytes of payload between header and padding.
    pub payload_len: usize,
    /// Bytes of padding at the end, including the count byte; 0 without the P bit.
    pub padding_len: usize,
}

/// Parses and validates the RTP header at the start of `buf` (RFC 3550 §5.1).
///
/// Drops, in the order checked: shorter than 12 bytes → `TooShort`; version not
/// 2 → `BadVersion`; the CSRC list runs past the end → `CsrcOverflow`; with the X
/// bit, the 4-byte extension header or its `length` 32-bit words run past the
/// end → `ExtensionOverflow`; with the P bit, a padding count (the last byte) of
/// zero or one that reaches into the header → `PaddingOverflow`. A packet with
/// an empty payload is valid (RFC 3550 allows it; comfort-noise-less DTX does it).
#[inline]
pub fn parse(buf: &[u8]) -> Result<RtpHeader, DropReason> {
    let Some((fixed, after_fixed)) = buf.split_first_chunk::<FIXED_HEADER_LEN>() else {
        return Err(DropReason::TooShort);
    };
    let [b0, b1, seq_hi, seq_lo, ts0, ts1, ts2, ts3, ssrc0, ssrc1, ssrc2, ssrc3] = *fixed;
    if b0 >> 6 != 2 {
        return Err(DropReason::BadVersion);
    }
    let has_padding = b0 & 0x20 != 0;
    let has_extension = b0 & 0x10 != 0;
    let csrc_count = b0 & 0x0f;

    let csrc_len = usize::from(csrc_count) * 4;
    let Some(after_csrc) = after_fixed.get(csrc_len..) else {
        return Err(DropReason::CsrcOverflow);
    };
    let mut header_len = FIXED_HEADER_LEN + csrc_len;

    if has_extension {
        // RFC 3550 §5.3.1: 16-bit profile-defined value, 16-bit length in words,
        // not counting this 4-byte header.
        let Some(([_, _, len_hi, len_lo], ext_body)) = after_csrc.split_first_chunk::<4>() else {
            return Err(DropReason::ExtensionOverflow);
        };
        let ext_len = usize::from(u16::from_be_bytes([*len_hi, *len_lo])) * 4;
        if ext_body.len() < ext_len {
            return Err(DropReason::ExtensionOverflow);
        }
        header_len += 4 + ext_len;
    }

    let padding_len = if has_padding {
        // RFC 3550 §5.1: the last octet counts the padding, itself included, so
        // it cannot be zero; it may not eat into the header.
        let count = buf.last().map_or(0, |&b| usize::from(b));
        if count == 0 || header_len + count > buf.len() {
            return Err(DropReason::PaddingOverflow);
        }
        count
    } else {
        0
    };

    Ok(RtpHeader {
        marker: b1 & 0x80 != 0,
        payload_type: b1 & 0x7f,
        seq: u16::from_be_bytes([seq_hi, seq_lo]),
        timestamp: u32::from_be_bytes([ts0, ts1, ts2, ts3]),
        ssrc: u32::from_be_bytes([ssrc0, ssrc1, ssrc2, ssrc3]),
        csrc_count,
        header_len,
        // Both checks above keep header_len + padding_len <= buf.len().
        payload_len: buf.len() - header_len - padding_len,
        padding_len,
    })
}

/// Rewrites the sequence number (bytes 2..4) and SSRC (bytes 8..12) in place.
///
/// Does nothing to a buffer shorter than the fixed header. The caller has parsed
/// the packet already; this only touches the two fields, so every other
/// property of the header is unchanged.
#[inline]
pub fn set_ssrc_seq(buf: &mut [u8], ssrc: u32, seq: u16) {
    let Some((fixed, _)) = buf.split_first_chunk_mut::<FIXED_HEADER_LEN>() else {
        return;
    };
    let [_, _, seq_hi, seq_lo, _, _, _, _, ssrc0, ssrc1, ssrc2, ssrc3] = fixed;
    [*seq_hi, *seq_lo] = seq.to_be_bytes();
    [*ssrc0, *ssrc1, *ssrc2, *ssrc3] = ssrc.to_be_bytes();
}

/// Writes a minimal 12-byte RTP header (V=2, no padding, extension or CSRCs) at
/// the start of `buf` and returns its length, or `None` if `buf` is shorter.
///
/// Only the low 7 bits of `pt` are used. Meant for tests, benches and the load
/// generator; the relay rewrites headers with [`set_ssrc_seq`] instead.
pub fn write_header(
    buf: &mut [u8],
    pt: u8,
    marker: bool,
    seq: u16,
    ts: u32,
    ssrc: u32,
) -> Option<usize> {
    let fixed = buf.first_chunk_mut::<FIXED_HEADER_LEN>()?;
    let [s0, s1] = seq.to_be_bytes();
    let [t0, t1, t2, t3] = ts.to_be_bytes();
    let [x0, x1, x2, x3] = ssrc.to_be_bytes();
    *fixed = [
        0x80,
        (u8::from(marker) << 7) | (pt & 0x7f),
        s0,
        s1,
        t0,
        t1,
        t2,
        t3,
        x0,
        x1,
        x2,
        x3,
    ];
    Some(FIXED_HEADER_LEN)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The fields of a packet a test builds; `build` lays them out per RFC 3550.
    #[derive(Clone, Debug)]
    struct Spec {
        marker: bool,
        pt: u8,
        seq: u16,
        ts: u32,
        ssrc: u32,
        csrcs: Vec<u32>,
        extension: Option<(u16, Vec<u32>)>,
        payload: Vec<u8>,
        padding: Option<u8>,
    }

    fn build(s: &Spec) -> Vec<u8> {
        let mut buf = vec![0u8; 12];
        write_header(&mut buf, s.pt, s.marker, s.seq, s.ts, s.ssrc).unwrap();
        buf[0] |= s.csrcs.len() as u8;
        for c in &s.csrcs {
            buf.extend_from_slice(&c.to_be_bytes());
        }
        if let Some((profile, words)) = &s.extension {
            buf[0] |= 0x10;
            buf.extend_from_slice(&profile.to_be_bytes());
            buf.extend_from_slice(&(words.len() as u16).to_be_bytes());
            for w in words {
                buf.extend_from_slice(&w.to_be_bytes());
            }
        }
        buf.extend_from_slice(&s.payload);
        if let Some(p) = s.padding {
            buf[0] |= 0x20;
            buf.extend(std::iter::repeat_n(0u8, usize::from(p) - 1));
            buf.push(p);
        }
        buf
    }

    fn pcmu(seq: u16) -> Vec<u8> {
        let mut buf = vec![0xffu8; 172];
        write_header(&mut buf, 0, false, seq, 160 * u32::from(seq), 0x1234_5678).unwrap();
        buf
    }

    #[test]
    fn parses_plain_pcmu_packet() {
        let h = parse(&pcmu(7)).unwrap();
        assert_eq!(
            h,
            RtpHeader {
                marker: false,
                payload_type: 0,
                seq: 7,
                timestamp: 1120,
                ssrc: 0x1234_5678,
                csrc_count: 0,
                header_len: 12,
                payload_len: 160,
                padding_len: 0,
            }
        );
    }

    #[test]
    fn accepts_header_only_packet() {
        let mut buf = [0u8; 12];
        write_header(&mut buf, 96, true, 1, 2, 3).unwrap();
        let h = parse(&buf).unwrap();
        assert!(h.marker);
        assert_eq!(h.payload_type, 96);
        assert_eq!((h.header_len, h.payload_len, h.padding_len), (12, 0, 0));
    }

    #[test]
    fn rejects_shorter_than_fixed_header() {
        for len in 0..12 {
            let buf = vec![0x80u8; len];
            assert_eq!(parse(&buf), Err(DropReason::TooShort), "len {len}");
        }
    }

    #[test]
    fn rejects_versions_other_than_two() {
        for v in [0u8, 1, 3] {
            let mut buf = pcmu(1);
            buf[0] = (buf[0] & 0x3f) | (v << 6);
            assert_eq!(parse(&buf), Err(DropReason::BadVersion), "version {v}");
        }
    }

    #[test]
    fn rejects_csrc_count_beyond_length() {
        let mut buf = [0u8; 12 + 8];
        write_header(&mut buf, 0, false, 0, 0, 0).unwrap();
        buf[0] |= 2;
        assert!(parse(&buf).is_ok());
        buf[0] |= 3;
        assert_eq!(parse(&buf), Err(DropReason::CsrcOverflow));
        buf[0] |= 0x0f;
        assert_eq!(parse(&buf[..12]), Err(DropReason::CsrcOverflow));
    }

    #[test]
    fn rejects_extension_header_cut_short() {
        let mut buf = pcmu(1);
        buf[0] |= 0x10;
        // Fixed header plus 3 bytes: no room for the 4-byte extension header.
        assert_eq!(parse(&buf[..15]), Err(DropReason::ExtensionOverflow));
    }

    #[test]
    fn rejects_extension_length_beyond_packet() {
        let mut buf = vec![0u8; 12];
        write_header(&mut buf, 0, false, 0, 0, 0).unwrap();
        buf[0] |= 0x10;
        buf.extend_from_slice(&[0xbe, 0xde, 0x00, 0x02]);
        buf.extend_from_slice(&[0u8; 7]);
        assert_eq!(parse(&buf), Err(DropReason::ExtensionOverflow));
        buf.push(0);
        let h = parse(&buf).unwrap();
        assert_eq!((h.header_len, h.payload_len), (24, 0));
    }

    #[test]
    fn rejects_extension_after_csrcs_that_do_not_leave_room() {
        let mut buf = vec![0u8; 16];
        write_header(&mut buf, 0, false, 0, 0, 0).unwrap();
        buf[0] |= 0x10 | 1;
        assert_eq!(parse(&buf), Err(DropReason::ExtensionOverflow));
    }

    #[test]
    fn rejects_zero_padding_count() {
        let mut buf = pcmu(1);
        buf[0] |= 0x20;
        *buf.last_mut().unwrap() = 0;
        assert_eq!(parse(&buf), Err(DropReason::PaddingOverflow));
    }

    #[test]
    fn rejects_padding_reaching_into_header() {
        let mut buf = pcmu(1);
        buf[0] |= 0x20;
        *buf.last_mut().unwrap() = 161;
        assert_eq!(parse(&buf), Err(DropReason::PaddingOverflow));
        *buf.last_mut().unwrap() = 160;
        let h = parse(&buf).unwrap();
        assert_eq!((h.payload_len, h.padding_len), (0, 160));
    }

    #[test]
    fn rejects_padding_bit_on_bare_header() {
        let mut buf = [0u8; 12];
        write_header(&mut buf, 0, false, 0, 0, 12).unwrap();
        buf[0] |= 0x20;
        // The last byte is the SSRC's low byte (12): it would cover the header.
        assert_eq!(parse(&buf), Err(DropReason::PaddingOverflow));
    }

    #[test]
    fn accepts_extension_and_padding() {
        let spec = Spec {
            marker: true,
            pt: 111,
            seq: 65535,
            ts: u32::MAX,
            ssrc: 0xdead_beef,
            csrcs: vec![1, 2, 3],
            extension: Some((0xbede, vec![0x1000_0000, 0])),
            payload: vec![0xaa; 20],
            padding: Some(4),
        };
        let buf = build(&spec);
        let h = parse(&buf).unwrap();
        assert_eq!(h.csrc_count, 3);
        assert_eq!(h.header_len, 12 + 12 + 4 + 8);
        assert_eq!(h.payload_len, 20);
        assert_eq!(h.padding_len, 4);
        assert_eq!(h.ssrc, 0xdead_beef);
        assert!(h.marker);
    }

    #[test]
    fn accepts_empty_extension() {
        let spec = Spec {
            marker: false,
            pt: 8,
            seq: 0,
            ts: 0,
            ssrc: 0,
            csrcs: vec![],
            extension: Some((0x1000, vec![])),
            payload: vec![],
            padding: None,
        };
        let h = parse(&build(&spec)).unwrap();
        assert_eq!((h.header_len, h.payload_len), (16, 0));
    }

    #[test]
    fn checks_csrcs_before_extension_and_padding() {
        // All three bits claim more than there is; the CSRC list is reported.
        let mut buf = [0u8; 12];
        write_header(&mut buf, 0, false, 0, 0, 0).unwrap();
        buf[0] |= 0x30 | 0x0f;
        assert_eq!(parse(&buf), Err(DropReason::CsrcOverflow));
    }

    #[test]
    fn set_ssrc_seq_rewrites_only_those_fields() {
        let before = pcmu(9);
        let mut after = before.clone();
        set_ssrc_seq(&mut after, 0xcafe_f00d, 4242);
        let (a, b) = (parse(&before).unwrap(), parse(&after).unwrap());
        assert_eq!(
            b,
            RtpHeader {
                ssrc: 0xcafe_f00d,
                seq: 4242,
                ..a
            }
        );
        assert_eq!(before[..2], after[..2]);
        assert_eq!(before[4..8], after[4..8]);
        assert_eq!(before[12..], after[12..]);
    }

    #[test]
    fn set_ssrc_seq_ignores_short_buffers() {
        for len in 0..12 {
            let mut buf = vec![0x55u8; len];
            set_ssrc_seq(&mut buf, u32::MAX, u16::MAX);
            assert!(buf.iter().all(|&b| b == 0x55), "len {len}");
        }
    }

    #[test]
    fn write_header_refuses_short_buffers() {
        let mut buf = [0u8; 11];
        assert_eq!(write_header(&mut buf, 0, false, 0, 0, 0), None);
        assert_eq!(buf, [0u8; 11]);
    }

    #[test]
    fn write_header_masks_payload_type_to_seven_bits() {
        let mut buf = [0u8; 12];
        write_header(&mut buf, 0xff, false, 0, 0, 0).unwrap();
        let h = parse(&buf).unwrap();
        assert_eq!(h.payload_type, 0x7f);
        assert!(!h.marker);
    }

    fn spec() -> impl Strategy<Value = Spec> {
        (
            (
                any::<bool>(),
                0u8..128,
                any::<u16>(),
                any::<u32>(),
                any::<u32>(),
            ),
            prop::collection::vec(any::<u32>(), 0..=15),
            prop::option::of((any::<u16>(), prop::collection::vec(any::<u32>(), 0..8))),
            prop::collection::vec(any::<u8>(), 0..64),
            prop::option::of(1u8..=255),
        )
            .prop_map(
                |((marker, pt, seq, ts, ssrc), csrcs, extension, payload, padding)| Spec {
                    marker,
                    pt,
                    seq,
                    ts,
                    ssrc,
                    csrcs,
                    extension,
                    payload,
                    padding,
                },
            )
    }

    proptest! {
        #[test]
        fn built_packets_parse_back_to_their_fields(s in spec()) {
            let buf = build(&s);
            let h = parse(&buf).unwrap();
            let ext_len = s.extension.as_ref().map_or(0, |(_, w)| 4 + 4 * w.len());
            prop_assert_eq!(h, RtpHeader {
                marker: s.marker,
                payload_type: s.pt,
                seq: s.seq,
                timestamp: s.ts,
                ssrc: s.ssrc,
                csrc_count: s.csrcs.len() as u8,
                header_len: 12 + 4 * s.csrcs.len() + ext_len,
                payload_len: s.payload.len(),
                padding_len: s.padding.map_or(0, usize::from),
            });
        }

        #[test]
        fn rewritten_packets_parse_back_with_new_ssrc_and_seq(
            s in spec(), ssrc in any::<u32>(), seq in any::<u16>()
        ) {
            let mut buf = build(&s);
            let before = parse(&buf).unwrap();
            set_ssrc_seq(&mut buf, ssrc, seq);
            prop_assert_eq!(parse(&buf).unwrap(), RtpHeader { ssrc, seq, ..before });
        }

        #[test]
        fn arbitrary_bytes_never_break_the_length_invariant(
            first in 0x80u8..0xc0, rest in prop::collection::vec(any::<u8>(), 0..96)
        ) {
            let buf: Vec<u8> = std::iter::once(first).chain(rest).collect();
            if let Ok(h) = parse(&buf) {
                prop_assert_eq!(h.header_len + h.payload_len + h.padding_len, buf.len());
                prop_assert!(h.header_len >= 12 + 4 * usize::from(h.csrc_count));
            }
        }
    }
}
