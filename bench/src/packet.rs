//! The bench's test packet: 172 bytes of PCMU RTP (a 12-byte RTP header, PT 0,
//! and 160 bytes of payload). The payload starts with what the sink needs to
//! account for it; the rest is µ-law silence (0xFF).
//!
//! Payload layout (little endian), at offset 12 of the datagram:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `KBNC` |
//! | 4..8 | stream id |
//! | 8 | direction (0 = A→B, 1 = B→A) |
//! | 9..12 | reserved |
//! | 12..20 | sequence number of this stream-direction |
//! | 20..28 | send time, ns since the epoch (CLOCK_REALTIME) |

/// Datagram size: RTP header + 160 bytes of 20 ms PCMU.
pub const PACKET_LEN: usize = 172;
/// RTP header size (no CSRC, no extension).
pub const RTP_HEADER_LEN: usize = 12;
/// Marks the bench's payloads.
pub const MAGIC: u32 = u32::from_le_bytes(*b"KBNC");

const OFF_MAGIC: usize = RTP_HEADER_LEN;
const OFF_STREAM: usize = RTP_HEADER_LEN + 4;
const OFF_DIR: usize = RTP_HEADER_LEN + 8;
const OFF_SEQ: usize = RTP_HEADER_LEN + 12;
const OFF_TIME: usize = RTP_HEADER_LEN + 20;
const FIELDS_END: usize = RTP_HEADER_LEN + 28;

/// Writes the parts that never change (RTP version and payload type, magic,
/// silence) into a buffer of at least [`PACKET_LEN`] bytes.
pub fn write_template(buf: &mut [u8]) {
    let buf = &mut buf[..PACKET_LEN];
    buf.fill(0xFF);
    buf[..RTP_HEADER_LEN].fill(0);
    buf[0] = 0x80; // V=2, no padding, no extension, no CSRC
    buf[1] = 0; // M=0, PT=0 (PCMU)
    buf[OFF_MAGIC..OFF_MAGIC + 4].copy_from_slice(&MAGIC.to_le_bytes());
    buf[OFF_DIR..FIELDS_END].fill(0);
}

/// SSRC used for a stream-direction.
pub fn ssrc(stream: u32, dir: u8) -> u32 {
    0x4b00_0000 ^ (stream << 1) ^ u32::from(dir)
}

/// Fills the per-packet fields of a templated buffer (everything but the send
/// time, see [`stamp`]).
#[inline]
pub fn write_fields(buf: &mut [u8], stream: u32, dir: u8, seq: u64) {
    buf[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
    buf[4..8].copy_from_slice(&((seq as u32).wrapping_mul(160)).to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc(stream, dir).to_be_bytes());
    buf[OFF_STREAM..OFF_STREAM + 4].copy_from_slice(&stream.to_le_bytes());
    buf[OFF_DIR] = dir;
    buf[OFF_SEQ..OFF_SEQ + 8].copy_from_slice(&seq.to_le_bytes());
}

/// Writes the send time (ns since the epoch) into a packet.
#[inline]
pub fn stamp(buf: &mut [u8], send_ns: u64) {
    buf[OFF_TIME..OFF_TIME + 8].copy_from_slice(&send_ns.to_le_bytes());
}

/// What the sink reads back from a bench packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields {
    /// Stream id.
    pub stream: u32,
    /// Direction: 0 = A→B, 1 = B→A.
    pub dir: u8,
    /// Sequence number within the stream-direction.
    pub seq: u64,
    /// Send time, ns since the epoch.
    pub send_ns: u64,
}

/// Parses a received datagram; `None` when it is not a bench packet.
#[inline]
pub fn parse(buf: &[u8]) -> Option<Fields> {
    if buf.len() < FIELDS_END || buf[0] >> 6 != 2 {
        return None;
    }
    let word = |o: usize| u32::from_le_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
    let dword = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&buf[o..o + 8]);
        u64::from_le_bytes(b)
    };
    if word(OFF_MAGIC) != MAGIC {
        return None;
    }
    Some(Fields {
        stream: word(OFF_STREAM),
        dir: buf[OFF_DIR],
        seq: dword(OFF_SEQ),
        send_ns: dword(OFF_TIME),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn written_fields_parse_back(stream in any::<u32>(), dir in 0u8..2, seq in any::<u64>(), t in any::<u64>()) {
            let mut buf = [0u8; PACKET_LEN];
            write_template(&mut buf);
            write_fields(&mut buf, stream, dir, seq);
            stamp(&mut buf, t);
            prop_assert_eq!(parse(&buf), Some(Fields { stream, dir, seq, send_ns: t }));
            prop_assert_eq!(buf[0], 0x80);
            prop_assert_eq!(buf[1], 0);
            prop_assert!(buf[FIELDS_END..].iter().all(|b| *b == 0xFF));
        }
    }

    #[test]
    fn foreign_datagrams_are_rejected() {
        assert_eq!(parse(&[0x80; 100]), None);
        assert_eq!(parse(&[0u8; 10]), None);
    }
}
