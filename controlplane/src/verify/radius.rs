//! RADIUS packets (RFC 2865) with Message-Authenticator (RFC 3579).
//!
//! What it does: decodes and encodes RADIUS packets, checks a received
//! Message-Authenticator, builds the node's Access-Accept/Access-Reject
//! answers (Response Authenticator and Message-Authenticator filled in) and
//! Access-Requests for tests and load, and reads the call fields the
//! verification node needs from an Access-Request ([`CallQuery`]).
//!
//! What it does not: sockets, retransmission or duplicate detection, shared
//! secret lookup, User-Password hiding, EAP.
//!
//! Invariants: [`Packet::decode`] never panics and accepts only packets whose
//! attributes exactly fill the declared Length (RFC 2865 §3, §5); a packet it
//! returns encodes back to the same bytes up to that Length. Every decode
//! error is the peer's fault and is not worth a retry of the same bytes: the
//! RFC's answer is to drop the packet silently.

#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use md5::{Digest, Md5};

/// Smallest packet: Code, Identifier, Length, Authenticator (RFC 2865 §3).
pub const HEADER_LEN: usize = 20;
/// Largest packet (RFC 2865 §3).
pub const MAX_PACKET_LEN: usize = 4096;
/// Largest attribute value: the attribute Length octet counts the two header
/// octets too (RFC 2865 §5).
pub const MAX_VALUE_LEN: usize = 253;

/// Attribute types this module reads or writes.
pub mod attr {
    /// Called-Station-Id (RFC 2865 §5.30).
    pub const CALLED_STATION_ID: u8 = 30;
    /// Calling-Station-Id (RFC 2865 §5.31).
    pub const CALLING_STATION_ID: u8 = 31;
    /// Vendor-Specific (RFC 2865 §5.26).
    pub const VENDOR_SPECIFIC: u8 = 26;
    /// Message-Authenticator (RFC 3579 §3.2).
    pub const MESSAGE_AUTHENTICATOR: u8 = 80;
}

/// Cisco's SMI enterprise number, the Vendor-Id of its VSAs.
pub const CISCO_VENDOR_ID: u32 = 9;

/// Cisco VSA sub-attribute types this module reads.
pub mod cisco {
    /// Cisco-AVPair, `key=value` text.
    pub const AV_PAIR: u8 = 1;
    /// h323-conf-id, the call's conference id.
    pub const H323_CONF_ID: u8 = 24;
    /// h323-redirect-number, the redirecting number.
    pub const H323_REDIRECT_NUMBER: u8 = 106;
}

/// Packet type (RFC 2865 §3, Code field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// 1.
    AccessRequest,
    /// 2.
    AccessAccept,
    /// 3.
    AccessReject,
    /// Any other code; never 1, 2 or 3 when built by [`Code::from`].
    Other(u8),
}

impl From<u8> for Code {
    fn from(b: u8) -> Self {
        match b {
            1 => Code::AccessRequest,
            2 => Code::AccessAccept,
            3 => Code::AccessReject,
            other => Code::Other(other),
        }
    }
}

impl From<Code> for u8 {
    fn from(c: Code) -> Self {
        match c {
            Code::AccessRequest => 1,
            Code::AccessAccept => 2,
            Code::AccessReject => 3,
            Code::Other(b) => b,
        }
    }
}

/// One attribute: Type and Value (the Length octet is derived).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// Attribute type.
    pub typ: u8,
    /// Value, at most [`MAX_VALUE_LEN`] bytes on the wire.
    pub value: Vec<u8>,
}

/// A RADIUS packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Packet type.
    pub code: Code,
    /// Matches requests and responses.
    pub identifier: u8,
    /// Request or Response Authenticator.
    pub authenticator: [u8; 16],
    /// Attributes in wire order.
    pub attributes: Vec<Attribute>,
}

/// Why a datagram is not a RADIUS packet. All are the peer's fault; the
/// packet is dropped (RFC 2865 §3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RadiusError {
    /// Fewer than 20 bytes received.
    #[error("packet shorter than the 20-byte header")]
    TooShort,
    /// Length field below 20 or above the bytes received.
    #[error("length field {declared} does not fit the {actual} bytes received")]
    LengthMismatch {
        /// The Length field.
        declared: usize,
        /// Bytes received.
        actual: usize,
    },
    /// More than 4096 bytes received.
    #[error("packet longer than 4096 bytes")]
    TooLong,
    /// An attribute's Length runs past the packet's Length.
    #[error("attribute at offset {offset} runs past the packet length")]
    AttributeOverflow {
        /// Offset of the attribute's Type octet in the packet.
        offset: usize,
    },
    /// An attribute's Length is below 2, or its header is cut by the
    /// packet's Length.
    #[error("attribute at offset {offset} has a length below 2")]
    AttributeTooShort {
        /// Offset of the attribute's Type octet in the packet.
        offset: usize,
    },
    /// A Message-Authenticator whose value is not 16 bytes, or a second one
    /// (RFC 3579 §3.2: length 18, at most one per packet).
    #[error("malformed or repeated Message-Authenticator")]
    BadMessageAuthenticator,
}

impl Packet {
    /// Decodes a received datagram. Bytes past the Length field are padding
    /// and ignored (RFC 2865 §3).
    pub fn decode(bytes: &[u8]) -> Result<Packet, RadiusError> {
        if bytes.len() < HEADER_LEN {
            return Err(RadiusError::TooShort);
        }
        if bytes.len() > MAX_PACKET_LEN {
            return Err(RadiusError::TooLong);
        }
        let (header, _) = bytes
            .split_first_chunk::<HEADER_LEN>()
            .ok_or(RadiusError::TooShort)?;
        let [code, identifier, l0, l1, auth @ ..] = *header;
        let declared = usize::from(u16::from_be_bytes([l0, l1]));
        if declared < HEADER_LEN || declared > bytes.len() {
            return Err(RadiusError::LengthMismatch {
                declared,
                actual: bytes.len(),
            });
        }
        let body = bytes
            .get(HEADER_LEN..declared)
            .ok_or(RadiusError::LengthMismatch {
                declared,
                actual: bytes.len(),
            })?;
        let mut attributes = Vec::new();
        let mut seen_ma = false;
        for item in walk(body) {
            let (_, typ, value) = item?;
            if typ == attr::MESSAGE_AUTHENTICATOR {
                if seen_ma || value.len() != 16 {
                    return Err(RadiusError::BadMessageAuthenticator);
                }
                seen_ma = true;
            }
            attributes.push(Attribute {
                typ,
                value: value.to_vec(),
            });
        }
        Ok(Packet {
            code: Code::from(code),
            identifier,
            authenticator: auth,
            attributes,
        })
    }

    /// Encodes the packet. Values longer than [`MAX_VALUE_LEN`] are cut to
    /// that length; keeping the whole packet within [`MAX_PACKET_LEN`] is the
    /// caller's job (a longer one will not decode).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.attributes_len());
        out.push(u8::from(self.code));
        out.push(self.identifier);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.authenticator);
        for a in &self.attributes {
            let value = a.value.get(..MAX_VALUE_LEN).unwrap_or(&a.value);
            out.push(a.typ);
            out.push(attr_len_octet(value.len()));
            out.extend_from_slice(value);
        }
        let len = u16::try_from(out.len()).unwrap_or(u16::MAX).to_be_bytes();
        if let Some(dst) = out.get_mut(2..4) {
            dst.copy_from_slice(&len);
        }
        out
    }

    fn attributes_len(&self) -> usize {
        self.attributes
            .iter()
            .map(|a| 2 + a.value.len().min(MAX_VALUE_LEN))
            .sum()
    }

    /// Checks the Message-Authenticator of `raw`, the bytes this packet was
    /// decoded from, with the shared `secret`: `None` when the packet has no
    /// Message-Authenticator, else whether HMAC-MD5 over `raw` (up to its
    /// Length) with the attribute's value zeroed matches it (RFC 3579 §3.2).
    ///
    /// The HMAC covers the Authenticator field as received, which is right
    /// for an Access-Request. A response is signed over the Request
    /// Authenticator: put it in `raw[4..20]` before calling.
    pub fn verify_message_authenticator(&self, raw: &[u8], secret: &[u8]) -> Option<bool> {
        let expected = self
            .attributes
            .iter()
            .find(|a| a.typ == attr::MESSAGE_AUTHENTICATOR)?;
        let Some((mac, received)) = message_authenticator_of(raw, secret) else {
            return Some(false);
        };
        // Both the bytes and this packet's copy must carry the right MAC.
        Some(ct_eq(&mac, received) & ct_eq(&mac, &expected.value))
    }
}

/// The Length octet of an attribute with a value of `value_len` bytes
/// (already cut to [`MAX_VALUE_LEN`]).
fn attr_len_octet(value_len: usize) -> u8 {
    u8::try_from(value_len + 2).unwrap_or(u8::MAX)
}

/// Walks the attributes of `body` (the bytes after the header, up to the
/// Length): yields (offset in packet, type, value) or the first structural
/// error, then stops.
fn walk(body: &[u8]) -> impl Iterator<Item = Result<(usize, u8, &[u8]), RadiusError>> {
    let mut rest = body;
    let mut pos = HEADER_LEN;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || rest.is_empty() {
            return None;
        }
        let offset = pos;
        let [typ, len, ..] = *rest else {
            failed = true;
            return Some(Err(RadiusError::AttributeTooShort { offset }));
        };
        let len = usize::from(len);
        if len < 2 {
            failed = true;
            return Some(Err(RadiusError::AttributeTooShort { offset }));
        }
        let Some((attr, tail)) = rest.split_at_checked(len) else {
            failed = true;
            return Some(Err(RadiusError::AttributeOverflow { offset }));
        };
        rest = tail;
        pos += len;
        Some(Ok((offset, typ, attr.get(2..).unwrap_or_default())))
    })
}

/// HMAC-MD5 over `raw` up to its Length, with the Message-Authenticator's
/// value zeroed, and that value as received. `None` when `raw` does not hold
/// a well-formed packet with a Message-Authenticator.
fn message_authenticator_of<'a>(raw: &'a [u8], secret: &[u8]) -> Option<([u8; 16], &'a [u8])> {
    let [_, _, l0, l1, ..] = *raw else {
        return None;
    };
    let declared = usize::from(u16::from_be_bytes([l0, l1]));
    let packet = raw.get(..declared)?;
    let body = packet.get(HEADER_LEN..)?;
    let mut ma_offset = None;
    for item in walk(body) {
        let (offset, typ, value) = item.ok()?;
        if typ == attr::MESSAGE_AUTHENTICATOR && value.len() == 16 {
            ma_offset = Some(offset + 2);
            break;
        }
    }
    let at = ma_offset?;
    let (before, after) = packet.split_at_checked(at)?;
    let (received, after) = after.split_at_checked(16)?;
    Some((hmac_md5(secret, &[before, &[0u8; 16], after]), received))
}

/// HMAC-MD5 (RFC 2104) of the concatenation of `parts`.
fn hmac_md5(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        let digest: [u8; 16] = Md5::digest(key).into();
        for (d, s) in k.iter_mut().zip(digest) {
            *d = s;
        }
    } else {
        for (d, s) in k.iter_mut().zip(key) {
            *d = *s;
        }
    }
    let mut inner = Md5::new();
    inner.update(k.map(|b| b ^ 0x36));
    for p in parts {
        inner.update(p);
    }
    let inner: [u8; 16] = inner.finalize().into();
    let mut outer = Md5::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

/// Compares without an early exit, so timing does not tell how many leading
/// bytes of a guessed MAC were right.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Encodes `code`/`identifier`/`attributes` with `authenticator` in the
/// header and, when `with_ma`, a Message-Authenticator appended (any given
/// one dropped) and filled in per RFC 3579 §3.2 over those bytes.
fn build(
    code: Code,
    identifier: u8,
    authenticator: [u8; 16],
    mut attributes: Vec<Attribute>,
    secret: &[u8],
    with_ma: bool,
) -> Vec<u8> {
    if with_ma {
        attributes.retain(|a| a.typ != attr::MESSAGE_AUTHENTICATOR);
        attributes.push(Attribute {
            typ: attr::MESSAGE_AUTHENTICATOR,
            value: vec![0; 16],
        });
    }
    let mut out = Packet {
        code,
        identifier,
        authenticator,
        attributes,
    }
    .encode();
    if with_ma {
        // The Message-Authenticator is the last attribute: its value is the
        // last 16 bytes, zero while the HMAC is taken.
        let mac = hmac_md5(secret, &[&out]);
        let start = out.len().saturating_sub(16);
        if let Some(dst) = out.get_mut(start..) {
            dst.copy_from_slice(&mac);
        }
    }
    out
}

/// Builds the answer to `req`: Access-Accept when `accept`, else
/// Access-Reject, with `req`'s identifier, `extra` attributes and a
/// Message-Authenticator (RFC 3579 §3.2: HMAC-MD5 over the response carrying
/// the Request Authenticator). The Response Authenticator,
/// MD5(Code+ID+Length+RequestAuth+Attributes+Secret) (RFC 2865 §3), is
/// computed last, over the final attributes.
pub fn answer(req: &Packet, accept: bool, extra: Vec<Attribute>, secret: &[u8]) -> Vec<u8> {
    let code = if accept {
        Code::AccessAccept
    } else {
        Code::AccessReject
    };
    let mut out = build(code, req.identifier, req.authenticator, extra, secret, true);
    let mut h = Md5::new();
    h.update(&out);
    h.update(secret);
    let response_auth: [u8; 16] = h.finalize().into();
    if let Some(dst) = out.get_mut(4..HEADER_LEN) {
        dst.copy_from_slice(&response_auth);
    }
    out
}

/// Builds an Access-Request with the caller's (random) `authenticator` and
/// `attributes`, plus a Message-Authenticator signed with `secret` when
/// `with_message_authenticator` (any Message-Authenticator in `attributes` is
/// then replaced). Without it, `attributes` go out as given.
pub fn request(
    identifier: u8,
    authenticator: [u8; 16],
    attributes: Vec<Attribute>,
    secret: &[u8],
    with_message_authenticator: bool,
) -> Vec<u8> {
    build(
        Code::AccessRequest,
        identifier,
        authenticator,
        attributes,
        secret,
        with_message_authenticator,
    )
}

/// A Vendor-Specific attribute holding one Cisco sub-attribute (RFC 2865
/// §5.26 layout: Vendor-Id, then vendor type, vendor length, value). A value
/// longer than the attribute can carry (247 bytes) is cut.
pub fn cisco_vsa(sub_type: u8, value: &str) -> Attribute {
    let bytes = value.as_bytes();
    let bytes = bytes.get(..MAX_VALUE_LEN - 6).unwrap_or(bytes);
    let mut v = Vec::with_capacity(6 + bytes.len());
    v.extend_from_slice(&CISCO_VENDOR_ID.to_be_bytes());
    v.push(sub_type);
    v.push(attr_len_octet(bytes.len()));
    v.extend_from_slice(bytes);
    Attribute {
        typ: attr::VENDOR_SPECIFIC,
        value: v,
    }
}

/// The fields the node uses, from an Access-Request. For each field the
/// first attribute that carries it wins; values that are not UTF-8, or empty
/// once the prefix and trailing NULs are gone, are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallQuery {
    /// Cisco h323-conf-id, without any `h323-conf-id=` prefix.
    pub call_id: Option<String>,
    /// Calling-Station-Id: the calling number.
    pub a: Option<String>,
    /// Called-Station-Id: the called number.
    pub b: Option<String>,
    /// Cisco h323-redirect-number, without any `h323-redirect-number=`
    /// prefix: the redirecting number.
    pub c: Option<String>,
    /// Cisco-AVPair `in-trunkgroup-label=`: the incoming trunk group.
    pub id_src: Option<String>,
    /// Cisco-AVPair `out-trunkgroup-label=`: the outgoing trunk group.
    pub id_dst: Option<String>,
}

impl CallQuery {
    /// Reads the fields from `p`'s attributes; malformed Vendor-Specific
    /// attributes are skipped.
    pub fn from_packet(p: &Packet) -> CallQuery {
        let mut q = CallQuery::default();
        for a in &p.attributes {
            match a.typ {
                attr::CALLING_STATION_ID => set(&mut q.a, text(&a.value, "")),
                attr::CALLED_STATION_ID => set(&mut q.b, text(&a.value, "")),
                attr::VENDOR_SPECIFIC => {
                    for (sub, value) in cisco_subs(&a.value) {
                        match sub {
                            cisco::H323_CONF_ID => {
                                set(&mut q.call_id, text(value, "h323-conf-id="));
                            }
                            cisco::H323_REDIRECT_NUMBER => {
                                set(&mut q.c, text(value, "h323-redirect-number="));
                            }
                            cisco::AV_PAIR => {
                                set(&mut q.id_src, pair(value, "in-trunkgroup-label="));
                                set(&mut q.id_dst, pair(value, "out-trunkgroup-label="));
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        q
    }
}

fn set(slot: &mut Option<String>, v: Option<String>) {
    if slot.is_none() {
        *slot = v;
    }
}

/// Strips `prefix` (ASCII case-insensitive) when present.
fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

fn clean(s: &str) -> Option<String> {
    let s = s.trim_end_matches('\0');
    (!s.is_empty()).then(|| s.to_owned())
}

/// The value as text, with `prefix` stripped when present.
fn text(value: &[u8], prefix: &str) -> Option<String> {
    let s = std::str::from_utf8(value).ok()?;
    clean(strip_prefix_ci(s, prefix).unwrap_or(s))
}

/// The value after `key` when the value starts with it.
fn pair(value: &[u8], key: &str) -> Option<String> {
    let s = std::str::from_utf8(value).ok()?;
    clean(strip_prefix_ci(s, key)?)
}

/// The sub-attributes of a Cisco Vendor-Specific value; nothing for another
/// vendor, and the walk stops at the first malformed sub-attribute.
fn cisco_subs(value: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let rest = match value.split_first_chunk::<4>() {
        Some((id, rest)) if u32::from_be_bytes(*id) == CISCO_VENDOR_ID => rest,
        _ => &[],
    };
    let mut rest = rest;
    std::iter::from_fn(move || {
        let [typ, len, ..] = *rest else {
            return None;
        };
        let (sub, tail) = rest.split_at_checked(usize::from(len))?;
        let v = sub.get(2..)?;
        rest = tail;
        Some((typ, v))
    })
}

/// Invariant check for the `verify_radius` cargo-fuzz target. Not a parser:
/// it panics, on purpose, when an invariant breaks.
///
/// A datagram that decodes encodes back to its bytes up to Length and
/// decodes again equal; its Message-Authenticator check answers exactly when
/// it has one; its fields read without panicking; the answer built for it
/// decodes, carries a Message-Authenticator that verifies over the Request
/// Authenticator, and a Response Authenticator that matches RFC 2865 §3; an
/// Access-Request rebuilt from its attributes verifies. An error has a
/// message.
#[cfg(any(test, feature = "fuzzing"))]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
pub fn fuzz_verify_radius(data: &[u8]) {
    const SECRET: &[u8] = b"fuzz-secret";
    let p = match Packet::decode(data) {
        Err(e) => {
            assert!(!e.to_string().is_empty(), "empty error message");
            return;
        }
        Ok(p) => p,
    };
    let declared = usize::from(u16::from_be_bytes([data[2], data[3]]));
    let wire = p.encode();
    assert_eq!(wire, &data[..declared], "encode differs from the input");
    assert_eq!(Packet::decode(&wire).as_ref(), Ok(&p), "re-decode differs");
    let has_ma = p
        .attributes
        .iter()
        .any(|a| a.typ == attr::MESSAGE_AUTHENTICATOR);
    assert_eq!(
        p.verify_message_authenticator(data, SECRET).is_some(),
        has_ma
    );
    let _ = CallQuery::from_packet(&p);

    let extra: Vec<Attribute> = p
        .attributes
        .iter()
        .filter(|a| a.typ != attr::MESSAGE_AUTHENTICATOR)
        .cloned()
        .collect();
    let fits =
        HEADER_LEN + 18 + extra.iter().map(|a| 2 + a.value.len()).sum::<usize>() <= MAX_PACKET_LEN;
    if !fits {
        return;
    }
    let ans = answer(&p, p.identifier % 2 == 0, extra.clone(), SECRET);
    let resp = Packet::decode(&ans).expect("an answer decodes");
    assert_eq!(resp.identifier, p.identifier);
    let mut signed = ans.clone();
    signed[4..HEADER_LEN].copy_from_slice(&p.authenticator);
    assert_eq!(
        resp.verify_message_authenticator(&signed, SECRET),
        Some(true)
    );
    let mut h = Md5::new();
    h.update(&signed);
    h.update(SECRET);
    let expected: [u8; 16] = h.finalize().into();
    assert_eq!(resp.authenticator, expected, "Response Authenticator");

    let req = request(p.identifier, p.authenticator, extra, SECRET, true);
    let rp = Packet::decode(&req).expect("a request decodes");
    assert_eq!(rp.verify_message_authenticator(&req, SECRET), Some(true));
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"xyzzy5461";
    const AUTH: [u8; 16] = [
        0x0f, 0x40, 0x3f, 0x94, 0x73, 0x97, 0x80, 0x57, 0xbd, 0x83, 0xd5, 0xcb, 0x98, 0xf4, 0x22,
        0x7a,
    ];

    fn a(typ: u8, value: &[u8]) -> Attribute {
        Attribute {
            typ,
            value: value.to_vec(),
        }
    }

    fn sample() -> Packet {
        Packet {
            code: Code::AccessRequest,
            identifier: 0,
            authenticator: AUTH,
            attributes: vec![
                a(1, b"nemo"),
                a(attr::CALLING_STATION_ID, b"74951234567"),
                cisco_vsa(cisco::H323_CONF_ID, "h323-conf-id=ABCD 0123"),
            ],
        }
    }

    fn with_len(mut bytes: Vec<u8>, len: u16) -> Vec<u8> {
        bytes[2..4].copy_from_slice(&len.to_be_bytes());
        bytes
    }

    #[test]
    fn encode_decode_round_trip() {
        let p = sample();
        let wire = p.encode();
        assert_eq!(wire.len(), 20 + 6 + 13 + 2 + 6 + 22);
        assert_eq!(&wire[2..4], &(wire.len() as u16).to_be_bytes());
        assert_eq!(Packet::decode(&wire), Ok(p));
    }

    #[test]
    fn header_layout_and_codes() {
        let wire = Packet {
            code: Code::Other(4),
            identifier: 7,
            authenticator: AUTH,
            attributes: vec![],
        }
        .encode();
        assert_eq!(&wire[..4], &[4, 7, 0, 20]);
        assert_eq!(&wire[4..], &AUTH);
        for b in 0..=255u8 {
            assert_eq!(u8::from(Code::from(b)), b);
        }
        assert_eq!(Code::from(2), Code::AccessAccept);
        assert_eq!(Code::from(3), Code::AccessReject);
    }

    #[test]
    fn bytes_past_length_are_ignored() {
        let p = sample();
        let mut wire = p.encode();
        wire.extend_from_slice(&[0xde, 0xad, 0xbe]);
        assert_eq!(Packet::decode(&wire), Ok(p));
    }

    #[test]
    fn rejects_short_packet() {
        assert_eq!(Packet::decode(&[]), Err(RadiusError::TooShort));
        assert_eq!(Packet::decode(&[1; 19]), Err(RadiusError::TooShort));
    }

    #[test]
    fn rejects_long_packet() {
        let mut wire = sample().encode();
        wire.resize(4097, 0);
        assert_eq!(Packet::decode(&wire), Err(RadiusError::TooLong));
        wire.truncate(4096);
        assert!(Packet::decode(&wire).is_ok());
    }

    #[test]
    fn rejects_length_above_received() {
        let wire = sample().encode();
        let n = wire.len();
        assert_eq!(
            Packet::decode(&with_len(wire, n as u16 + 1)),
            Err(RadiusError::LengthMismatch {
                declared: n + 1,
                actual: n
            })
        );
    }

    #[test]
    fn rejects_length_below_header() {
        let wire = sample().encode();
        let n = wire.len();
        assert_eq!(
            Packet::decode(&with_len(wire, 19)),
            Err(RadiusError::LengthMismatch {
                declared: 19,
                actual: n
            })
        );
    }

    #[test]
    fn rejects_attribute_past_length() {
        let mut wire = sample().encode();
        // First attribute (User-Name "nemo", length 6) claims 7.
        wire[21] = 7;
        let n = wire.len();
        // Shortening Length by one leaves the last attribute overflowing.
        let cut = with_len(sample().encode(), n as u16 - 1);
        assert_eq!(
            Packet::decode(&cut),
            Err(RadiusError::AttributeOverflow { offset: n - 30 })
        );
        // The walk misaligns: at 27 it reads Length '7' (55), past the end.
        assert_eq!(
            Packet::decode(&wire),
            Err(RadiusError::AttributeOverflow { offset: 27 })
        );
    }

    #[test]
    fn rejects_attribute_length_below_two() {
        for bad in [0u8, 1] {
            let mut wire = sample().encode();
            wire[21] = bad;
            assert_eq!(
                Packet::decode(&wire),
                Err(RadiusError::AttributeTooShort { offset: 20 })
            );
        }
    }

    #[test]
    fn rejects_attribute_header_cut_by_length() {
        // One stray byte after the header: a Type with no Length octet.
        let mut wire = Packet {
            code: Code::AccessRequest,
            identifier: 1,
            authenticator: AUTH,
            attributes: vec![],
        }
        .encode();
        wire.push(31);
        let wire = with_len(wire, 21);
        assert_eq!(
            Packet::decode(&wire),
            Err(RadiusError::AttributeTooShort { offset: 20 })
        );
    }

    #[test]
    fn rejects_bad_message_authenticator() {
        let mut p = sample();
        p.attributes.push(a(attr::MESSAGE_AUTHENTICATOR, &[0; 15]));
        assert_eq!(
            Packet::decode(&p.encode()),
            Err(RadiusError::BadMessageAuthenticator)
        );
        let mut p = sample();
        p.attributes.push(a(attr::MESSAGE_AUTHENTICATOR, &[0; 16]));
        p.attributes.push(a(attr::MESSAGE_AUTHENTICATOR, &[0; 16]));
        assert_eq!(
            Packet::decode(&p.encode()),
            Err(RadiusError::BadMessageAuthenticator)
        );
    }

    #[test]
    fn errors_have_messages() {
        let e = RadiusError::LengthMismatch {
            declared: 30,
            actual: 25,
        };
        assert_eq!(
            e.to_string(),
            "length field 30 does not fit the 25 bytes received"
        );
    }

    #[test]
    fn hmac_md5_matches_rfc_2202_vectors() {
        assert_eq!(
            hmac_md5(&[0x0b; 16], &[b"Hi There"]),
            [
                0x92, 0x94, 0x72, 0x7a, 0x36, 0x38, 0xbb, 0x1c, 0x13, 0xf4, 0x8e, 0xf8, 0x15, 0x8b,
                0xfc, 0x9d
            ]
        );
        // RFC 2202 test case 2, split across parts.
        assert_eq!(
            hmac_md5(b"Jefe", &[b"what do ya want ", b"for nothing?"]),
            [
                0x75, 0x0c, 0x78, 0x3e, 0x6a, 0xb0, 0xb5, 0x03, 0xea, 0xa8, 0x6e, 0x31, 0x0a, 0x5d,
                0xb7, 0x38
            ]
        );
        // RFC 2202 test case 6: an 80-byte key is hashed first.
        assert_eq!(
            hmac_md5(
                &[0xaa; 80],
                &[b"Test Using Larger Than Block-Size Key - Hash Key First"]
            ),
            [
                0x6b, 0x1a, 0xb7, 0xfe, 0x4b, 0xd7, 0xbf, 0x8f, 0x0b, 0x62, 0xe6, 0xce, 0x61, 0xb9,
                0xd0, 0xcd
            ]
        );
    }

    #[test]
    fn answer_has_rfc_2865_response_authenticator() {
        let req = sample();
        let extra = vec![a(18, b"ok")];
        let ans = answer(&req, true, extra.clone(), SECRET);
        let resp = Packet::decode(&ans).unwrap();
        assert_eq!(resp.code, Code::AccessAccept);
        assert_eq!(resp.identifier, req.identifier);
        assert_eq!(resp.attributes[0], extra[0]);
        assert_eq!(resp.attributes[1].typ, attr::MESSAGE_AUTHENTICATOR);
        // Recompute from the formula, independently of `answer`:
        // MD5(Code + ID + Length + RequestAuth + Attributes + Secret).
        let mut input = vec![2u8, req.identifier];
        input.extend_from_slice(&(ans.len() as u16).to_be_bytes());
        input.extend_from_slice(&req.authenticator);
        input.extend_from_slice(&ans[20..]);
        input.extend_from_slice(SECRET);
        let expected: [u8; 16] = Md5::digest(&input).into();
        assert_eq!(resp.authenticator, expected);
        assert_ne!(resp.authenticator, req.authenticator);

        let rej = Packet::decode(&answer(&req, false, vec![], SECRET)).unwrap();
        assert_eq!(rej.code, Code::AccessReject);
    }

    #[test]
    fn answer_message_authenticator_is_over_request_authenticator() {
        let req = sample();
        let ans = answer(&req, false, vec![], SECRET);
        let resp = Packet::decode(&ans).unwrap();
        // As received, the Response Authenticator is in place: no match.
        assert_eq!(resp.verify_message_authenticator(&ans, SECRET), Some(false));
        let mut signed = ans.clone();
        signed[4..20].copy_from_slice(&req.authenticator);
        assert_eq!(
            resp.verify_message_authenticator(&signed, SECRET),
            Some(true)
        );
        // Independent check: HMAC over the response with zeroed M-A value.
        let mut zeroed = signed.clone();
        let n = zeroed.len();
        zeroed[n - 16..].fill(0);
        assert_eq!(
            hmac_md5(SECRET, &[&zeroed]).as_slice(),
            &resp.attributes[0].value[..]
        );
    }

    #[test]
    fn request_message_authenticator_verifies_and_catches_a_flip() {
        let wire = request(9, AUTH, sample().attributes, SECRET, true);
        let p = Packet::decode(&wire).unwrap();
        assert_eq!(p.code, Code::AccessRequest);
        assert_eq!(p.verify_message_authenticator(&wire, SECRET), Some(true));
        assert_eq!(p.verify_message_authenticator(&wire, b"wrong"), Some(false));
        for i in 0..wire.len() {
            let mut bad = wire.clone();
            bad[i] ^= 0x01;
            assert_eq!(
                p.verify_message_authenticator(&bad, SECRET),
                Some(false),
                "byte {i}"
            );
        }
    }

    #[test]
    fn request_without_message_authenticator() {
        let wire = request(9, AUTH, sample().attributes, SECRET, false);
        let p = Packet::decode(&wire).unwrap();
        assert_eq!(p.attributes, sample().attributes);
        assert_eq!(p.verify_message_authenticator(&wire, SECRET), None);
    }

    #[test]
    fn call_query_with_prefixes() {
        let p = Packet {
            code: Code::AccessRequest,
            identifier: 3,
            authenticator: AUTH,
            attributes: vec![
                a(attr::CALLING_STATION_ID, b"74951112233"),
                a(attr::CALLED_STATION_ID, b"74954445566"),
                cisco_vsa(cisco::H323_CONF_ID, "h323-conf-id=1A2B3C4D 5E6F7081"),
                cisco_vsa(
                    cisco::H323_REDIRECT_NUMBER,
                    "h323-redirect-number=74957778899",
                ),
                cisco_vsa(cisco::AV_PAIR, "in-trunkgroup-label=TG_IN"),
                cisco_vsa(cisco::AV_PAIR, "out-trunkgroup-label=TG_OUT"),
            ],
        };
        assert_eq!(
            CallQuery::from_packet(&p),
            CallQuery {
                call_id: Some("1A2B3C4D 5E6F7081".into()),
                a: Some("74951112233".into()),
                b: Some("74954445566".into()),
                c: Some("74957778899".into()),
                id_src: Some("TG_IN".into()),
                id_dst: Some("TG_OUT".into()),
            }
        );
    }

    #[test]
    fn call_query_without_prefixes_and_several_subs_in_one_vsa() {
        let mut vsa = cisco_vsa(cisco::H323_CONF_ID, "1A2B3C4D\0");
        // A second sub-attribute in the same Vendor-Specific attribute.
        let second = cisco_vsa(cisco::H323_REDIRECT_NUMBER, "74957778899");
        vsa.value.extend_from_slice(&second.value[4..]);
        let p = Packet {
            code: Code::AccessRequest,
            identifier: 3,
            authenticator: AUTH,
            attributes: vec![
                vsa,
                cisco_vsa(cisco::AV_PAIR, "h323-call-origin=answer"),
                a(attr::CALLED_STATION_ID, b"100"),
                a(attr::CALLED_STATION_ID, b"200"),
            ],
        };
        let q = CallQuery::from_packet(&p);
        assert_eq!(q.call_id.as_deref(), Some("1A2B3C4D"));
        assert_eq!(q.c.as_deref(), Some("74957778899"));
        assert_eq!(q.b.as_deref(), Some("100"), "first one wins");
        assert_eq!((q.a, q.id_src, q.id_dst), (None, None, None));
    }

    #[test]
    fn call_query_skips_other_vendors_and_malformed_vsas() {
        let mut other = cisco_vsa(cisco::H323_CONF_ID, "X");
        other.value[3] = 10; // Vendor-Id 10, not Cisco
        let mut cut = cisco_vsa(cisco::H323_REDIRECT_NUMBER, "123");
        cut.value[5] = 40; // vendor length past the value
        let p = Packet {
            code: Code::AccessRequest,
            identifier: 0,
            authenticator: AUTH,
            attributes: vec![
                other,
                cut,
                a(26, &[0, 0]),
                a(attr::CALLING_STATION_ID, &[0xff]),
            ],
        };
        assert_eq!(CallQuery::from_packet(&p), CallQuery::default());
    }

    #[test]
    fn reads_a_request_signed_elsewhere() {
        // Seed made by a separate script with a stock HMAC-MD5 and the
        // fuzz body's secret.
        let wire = include_bytes!("../../fuzz/corpus/verify_radius/request_cisco_ma");
        let p = Packet::decode(wire).unwrap();
        assert_eq!(
            p.verify_message_authenticator(wire, b"fuzz-secret"),
            Some(true)
        );
        let q = CallQuery::from_packet(&p);
        assert_eq!(
            q.call_id.as_deref(),
            Some("1A2B3C4D 5E6F7081 92A3B4C5 D6E7F809")
        );
        assert_eq!(q.a.as_deref(), Some("74951112233"));
        assert_eq!(q.b.as_deref(), Some("74954445566"));
        assert_eq!(q.c.as_deref(), Some("74957778899"));
        assert_eq!(q.id_src.as_deref(), Some("TG_IN"));
        assert_eq!(q.id_dst.as_deref(), Some("TG_OUT"));
    }

    #[test]
    fn fuzz_body_accepts_samples() {
        fuzz_verify_radius(&sample().encode());
        fuzz_verify_radius(&request(1, AUTH, sample().attributes, SECRET, true));
        fuzz_verify_radius(&answer(&sample(), true, vec![], SECRET));
        fuzz_verify_radius(&[1, 2, 3]);
    }

    fn arb_packet() -> impl Strategy<Value = Packet> {
        let attr =
            (any::<u8>(), prop::collection::vec(any::<u8>(), 0..=253)).prop_map(|(typ, value)| {
                if typ == attr::MESSAGE_AUTHENTICATOR {
                    Attribute {
                        typ,
                        value: value.into_iter().chain([0; 16]).take(16).collect(),
                    }
                } else {
                    Attribute { typ, value }
                }
            });
        (
            any::<u8>(),
            any::<u8>(),
            any::<[u8; 16]>(),
            prop::collection::vec(attr, 0..15),
        )
            .prop_map(|(code, identifier, authenticator, mut attributes)| {
                // At most one Message-Authenticator.
                let mut seen = false;
                attributes.retain(|a| {
                    let dup = a.typ == attr::MESSAGE_AUTHENTICATOR && seen;
                    seen |= a.typ == attr::MESSAGE_AUTHENTICATOR;
                    !dup
                });
                Packet {
                    code: Code::from(code),
                    identifier,
                    authenticator,
                    attributes,
                }
            })
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..5000)) {
            let _ = Packet::decode(&bytes);
            fuzz_verify_radius(&bytes);
        }

        #[test]
        fn decode_never_panics_on_plausible_headers(
            code in 1u8..4,
            len in 0u16..600,
            body in prop::collection::vec(any::<u8>(), 0..600),
        ) {
            let mut bytes = vec![code, 0];
            bytes.extend_from_slice(&len.to_be_bytes());
            bytes.extend_from_slice(&[0; 16]);
            bytes.extend_from_slice(&body);
            fuzz_verify_radius(&bytes);
        }

        #[test]
        fn encode_decode_identity(p in arb_packet()) {
            let wire = p.encode();
            prop_assert!(wire.len() <= MAX_PACKET_LEN);
            prop_assert_eq!(Packet::decode(&wire), Ok(p));
            fuzz_verify_radius(&wire);
        }
    }
}
