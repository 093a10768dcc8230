//! The `data` field of the inter-node VerifyCallState request: hex of a BER
//! SEQUENCE holding the call's numbers.
//!
//! ```text
//! 30 len                          SEQUENCE
//!    41 len <ISUP address>        [APPLICATION 1] calling number
//!    42 len <called>              [APPLICATION 2] called number
//!    43 len <called>              [APPLICATION 3] original called number (optional)
//! ```
//!
//! Numbers are in ISUP address form ([`super::isup`]). A called number may be
//! hashed (a node configured `hashed=yes` does not send number B in clear):
//! its content is then the two octets `7E 00` followed by the first 8 bytes
//! of HMAC-SHA-256 (RFC 2104 over SHA-256) keyed with the network-wide key
//! from configuration, over the E.164 digits as ASCII without `+`
//! ([`hash_number`]). In a called field a first octet `7E` (even count,
//! nature 126, a national-use code) is therefore always the hash marker; a
//! plain called number of nature 126 is only representable with an odd digit
//! count.
//!
//! Decoding rules:
//! - definite lengths only: short form, or long form with 1 to 4 length
//!   octets (non-minimal long forms are accepted, as BER allows); the
//!   indefinite form, lengths past the end of the enclosing element and
//!   anything after the SEQUENCE are refused;
//! - inside the SEQUENCE the three fields may come in any order, each at most
//!   once, in primitive form (`0x40 | n`); every other element, whatever its
//!   tag, is skipped by its length without looking inside: a peer of a later
//!   version may add fields, and refusing them would fail every call it
//!   verifies. Tags in high-tag-number form take at most [`MAX_TAG_OCTETS`];
//! - the calling and called numbers are required.
//!
//! Encoding writes the three fields in tag order with minimal definite
//! lengths, upper-case hex for [`VerifyData::to_hex`].
//!
//! What it does not do: the JSON envelope, the response `data` (`3000`, an
//! empty SEQUENCE, is not a [`VerifyData`]), or deciding what a match means.
//!
//! Invariants: decoding is total and linear: any input of at most
//! [`MAX_DATA_BYTES`] gives a value or a [`BerError`] naming the byte offset,
//! never a panic, and each element read advances by at least two octets. For
//! every decoded value `v`, `decode(encode(v)) == v`. Every [`BerError`] is
//! the sending node's fault (`Upstream`); retrying the same bytes cannot help.

#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use sha2::{Digest, Sha256};

use super::isup::{IsupError, IsupNumber};

/// Largest `data` accepted, in octets. A request holds three numbers (about
/// 40 octets); the cap bounds allocation and work on hostile input.
pub const MAX_DATA_BYTES: usize = 4096;

/// Most octets a tag may take (high-tag-number form included).
pub const MAX_TAG_OCTETS: usize = 5;

/// Most octets after `0x8N` in a long-form length.
pub const MAX_LENGTH_OCTETS: usize = 4;

const TAG_SEQUENCE: u8 = 0x30;
const TAG_CALLING: u8 = 0x41;
const TAG_CALLED: u8 = 0x42;
const TAG_ORIGINAL_CALLED: u8 = 0x43;
/// Bit 6 of a tag octet: constructed form.
const CONSTRUCTED: u8 = 0x20;
/// First two content octets of a hashed called number.
const HASH_MARKER: [u8; 2] = [0x7E, 0x00];

/// Which number a field error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// [APPLICATION 1].
    Calling,
    /// [APPLICATION 2].
    Called,
    /// [APPLICATION 3].
    OriginalCalled,
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Field::Calling => "calling number [APPLICATION 1]",
            Field::Called => "called number [APPLICATION 2]",
            Field::OriginalCalled => "original called number [APPLICATION 3]",
        })
    }
}

/// Why a `data` field was refused. Offsets count octets of the decoded
/// bytes, or characters of the hex text for the hex variants.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BerError {
    /// More than [`MAX_DATA_BYTES`].
    #[error("data of {len} octets: at most {MAX_DATA_BYTES}")]
    TooLarge {
        /// Octets given.
        len: usize,
    },
    /// The input ends inside a tag or a length.
    #[error("truncated {what} at byte {offset}")]
    Truncated {
        /// Where the missing octet belongs.
        offset: usize,
        /// `"tag"` or `"length"`.
        what: &'static str,
    },
    /// A tag in high-tag-number form longer than [`MAX_TAG_OCTETS`].
    #[error("tag at byte {offset} longer than {MAX_TAG_OCTETS} octets")]
    TagTooLong {
        /// Offset of the tag.
        offset: usize,
    },
    /// Length octet `0x80`.
    #[error("indefinite length at byte {offset}")]
    IndefiniteLength {
        /// Offset of the length octet.
        offset: usize,
    },
    /// Long-form length with more than [`MAX_LENGTH_OCTETS`] octets (or the
    /// reserved `0xFF`).
    #[error("length at byte {offset} uses {octets} octets: at most {MAX_LENGTH_OCTETS}")]
    LengthTooLong {
        /// Offset of the first length octet.
        offset: usize,
        /// Length octets announced.
        octets: usize,
    },
    /// The content would run past the end of its enclosing element.
    #[error("length {len} at byte {offset} runs past the end ({available} octets left)")]
    LengthPastEnd {
        /// Offset of the first length octet.
        offset: usize,
        /// Length announced.
        len: u64,
        /// Octets left in the enclosing element.
        available: usize,
    },
    /// The outer element is not a SEQUENCE.
    #[error("expected SEQUENCE (0x30) at byte {offset}, found tag 0x{tag:02X}")]
    NotSequence {
        /// Offset of the tag.
        offset: usize,
        /// First tag octet found.
        tag: u8,
    },
    /// Octets after the SEQUENCE.
    #[error("trailing bytes after the SEQUENCE at byte {offset}")]
    TrailingBytes {
        /// Offset of the first extra octet.
        offset: usize,
    },
    /// A number field in constructed form.
    #[error("{field} at byte {offset} is constructed, expected primitive")]
    Constructed {
        /// The field.
        field: Field,
        /// Offset of its tag.
        offset: usize,
    },
    /// A number field seen twice.
    #[error("{field} repeated at byte {offset}")]
    Duplicate {
        /// The field.
        field: Field,
        /// Offset of the second tag.
        offset: usize,
    },
    /// A required field is absent.
    #[error("{field} missing")]
    Missing {
        /// The field.
        field: Field,
    },
    /// A number field's content is not an ISUP address.
    #[error("{field} at byte {offset}: {source}")]
    Number {
        /// The field.
        field: Field,
        /// Offset of the field's content.
        offset: usize,
        /// What is wrong with the address (its offsets count from `offset`).
        source: IsupError,
    },
    /// Content starting with the hash marker `7E` that is not `7E 00` plus 8
    /// octets.
    #[error("{field} at byte {offset}: hashed form needs 7E 00 and 8 octets, got {len} octets")]
    BadHashed {
        /// The field.
        field: Field,
        /// Offset of the field's content.
        offset: usize,
        /// Content octets found.
        len: usize,
    },
    /// Hex text of odd length.
    #[error("hex data of odd length {len}")]
    OddHex {
        /// Characters given.
        len: usize,
    },
    /// A character that is not a hex digit.
    #[error("non-hex character at {offset}")]
    NotHex {
        /// Byte offset in the text.
        offset: usize,
    },
}

/// A called (or original called) number: in clear, or hashed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CalledNumber {
    /// In ISUP address form.
    Plain(IsupNumber),
    /// The first 8 bytes of HMAC-SHA-256 over the E.164 digits
    /// ([`hash_number`]).
    Hashed([u8; 8]),
}

impl CalledNumber {
    /// Whether this is the number `e164_digits` (a leading `+` is ignored).
    /// A plain number compares its digits, whatever its nature (nodes send
    /// international digits with nature 0 too); a hashed one compares, in
    /// constant time, with [`hash_number`] under `key`.
    pub fn matches(&self, key: &[u8], e164_digits: &str) -> bool {
        let digits = e164_digits.strip_prefix('+').unwrap_or(e164_digits);
        match self {
            CalledNumber::Plain(n) => n.digits == digits,
            CalledNumber::Hashed(h) => {
                let want = hash_number(key, digits);
                h.iter()
                    .zip(want.iter())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
            }
        }
    }

    fn encode_content(&self) -> Vec<u8> {
        match self {
            CalledNumber::Plain(n) => n.encode(),
            CalledNumber::Hashed(h) => {
                let mut out = HASH_MARKER.to_vec();
                out.extend_from_slice(h);
                out
            }
        }
    }

    fn decode_content(field: Field, offset: usize, content: &[u8]) -> Result<Self, BerError> {
        if content.first() == HASH_MARKER.first() {
            return match content {
                [0x7E, 0x00, rest @ ..] => <[u8; 8]>::try_from(rest)
                    .map(CalledNumber::Hashed)
                    .map_err(|_| BerError::BadHashed {
                        field,
                        offset,
                        len: content.len(),
                    }),
                _ => Err(BerError::BadHashed {
                    field,
                    offset,
                    len: content.len(),
                }),
            };
        }
        decode_number(field, offset, content).map(CalledNumber::Plain)
    }
}

/// The hashed form of a called number: the first 8 bytes of
/// HMAC-SHA-256(`key`, the digits as ASCII). A leading `+` is dropped first,
/// so `+7...` and `7...` hash alike.
pub fn hash_number(key: &[u8], e164_digits: &str) -> [u8; 8] {
    let digits = e164_digits.strip_prefix('+').unwrap_or(e164_digits);
    let mac = hmac_sha256(key, digits.as_bytes());
    let mut out = [0u8; 8];
    for (o, m) in out.iter_mut().zip(mac.iter()) {
        *o = *m;
    }
    out
}

/// HMAC (RFC 2104) over SHA-256, block size 64.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        let digest: [u8; 32] = Sha256::digest(key).into();
        for (b, k) in block.iter_mut().zip(digest.iter()) {
            *b = *k;
        }
    } else {
        for (b, k) in block.iter_mut().zip(key.iter()) {
            *b = *k;
        }
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let inner: [u8; 32] = inner.finalize().into();
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5C));
    outer.update(inner);
    outer.finalize().into()
}

/// The decoded `data` of a VerifyCallState request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VerifyData {
    /// Number A, [APPLICATION 1].
    pub calling: IsupNumber,
    /// Number B, [APPLICATION 2].
    pub called: CalledNumber,
    /// The number B was diverted from, [APPLICATION 3].
    pub original_called: Option<CalledNumber>,
}

impl VerifyData {
    /// The BER octets: fields in tag order, minimal definite lengths.
    pub fn encode(&self) -> Vec<u8> {
        let mut content = Vec::with_capacity(48);
        put_element(&mut content, TAG_CALLING, &self.calling.encode());
        put_element(&mut content, TAG_CALLED, &self.called.encode_content());
        if let Some(orig) = &self.original_called {
            put_element(&mut content, TAG_ORIGINAL_CALLED, &orig.encode_content());
        }
        let mut out = Vec::with_capacity(content.len() + 6);
        put_element(&mut out, TAG_SEQUENCE, &content);
        out
    }

    /// Reads the BER octets (all of `bytes`; see the module docs for the
    /// rules).
    pub fn decode(bytes: &[u8]) -> Result<Self, BerError> {
        if bytes.len() > MAX_DATA_BYTES {
            return Err(BerError::TooLarge { len: bytes.len() });
        }
        let mut r = Reader {
            data: bytes,
            pos: 0,
        };
        let seq = r.element(bytes.len())?;
        if seq.tag != TAG_SEQUENCE {
            return Err(BerError::NotSequence {
                offset: seq.offset,
                tag: seq.tag,
            });
        }
        if r.pos != bytes.len() {
            return Err(BerError::TrailingBytes { offset: r.pos });
        }
        let end = seq.content_offset + seq.content.len();
        r.pos = seq.content_offset;
        let (mut calling, mut called, mut original) = (None, None, None);
        while r.pos < end {
            let el = r.element(end)?;
            let field = match el.tag & !CONSTRUCTED {
                TAG_CALLING => Field::Calling,
                TAG_CALLED => Field::Called,
                TAG_ORIGINAL_CALLED => Field::OriginalCalled,
                _ => continue,
            };
            if el.tag & CONSTRUCTED != 0 {
                return Err(BerError::Constructed {
                    field,
                    offset: el.offset,
                });
            }
            let dup = match field {
                Field::Calling => calling.is_some(),
                Field::Called => called.is_some(),
                Field::OriginalCalled => original.is_some(),
            };
            if dup {
                return Err(BerError::Duplicate {
                    field,
                    offset: el.offset,
                });
            }
            let at = el.content_offset;
            match field {
                Field::Calling => calling = Some(decode_number(field, at, el.content)?),
                Field::Called => {
                    called = Some(CalledNumber::decode_content(field, at, el.content)?)
                }
                Field::OriginalCalled => {
                    original = Some(CalledNumber::decode_content(field, at, el.content)?)
                }
            }
        }
        Ok(VerifyData {
            calling: calling.ok_or(BerError::Missing {
                field: Field::Calling,
            })?,
            called: called.ok_or(BerError::Missing {
                field: Field::Called,
            })?,
            original_called: original,
        })
    }

    /// [`VerifyData::encode`] as upper-case hex, as sent in the JSON `data`.
    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let bytes = self.encode();
        let mut s = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            for nibble in [b >> 4, b & 0x0F] {
                s.push(char::from(
                    HEX.get(usize::from(nibble)).copied().unwrap_or(b'0'),
                ));
            }
        }
        s
    }

    /// Reads the JSON `data` text: hex, either case, no separators.
    pub fn from_hex(s: &str) -> Result<Self, BerError> {
        if s.len() > MAX_DATA_BYTES * 2 {
            return Err(BerError::TooLarge { len: s.len() / 2 });
        }
        if !s.len().is_multiple_of(2) {
            return Err(BerError::OddHex { len: s.len() });
        }
        let mut bytes = Vec::with_capacity(s.len() / 2);
        for (i, pair) in s.as_bytes().chunks(2).enumerate() {
            let offset = i * 2;
            let (hi, lo) = match *pair {
                [hi, lo] => (hi, lo),
                _ => return Err(BerError::OddHex { len: s.len() }),
            };
            let hi = hex_value(hi).ok_or(BerError::NotHex { offset })?;
            let lo = hex_value(lo).ok_or(BerError::NotHex { offset: offset + 1 })?;
            bytes.push(hi << 4 | lo);
        }
        Self::decode(&bytes)
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn decode_number(field: Field, offset: usize, content: &[u8]) -> Result<IsupNumber, BerError> {
    IsupNumber::decode(content).map_err(|source| BerError::Number {
        field,
        offset,
        source,
    })
}

fn put_element(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let be = (len as u64).to_be_bytes();
        let skip = be.iter().take_while(|&&b| b == 0).count();
        let octets = be.get(skip..).unwrap_or(&[]);
        out.push(0x80 | octets.len() as u8);
        out.extend_from_slice(octets);
    }
    out.extend_from_slice(content);
}

/// One element read by [`Reader::element`].
struct Element<'a> {
    /// Offset of the tag.
    offset: usize,
    /// First tag octet (a high-tag-number tag never equals a field's).
    tag: u8,
    content_offset: usize,
    content: &'a [u8],
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self, what: &'static str) -> Result<u8, BerError> {
        let b = self
            .data
            .get(self.pos)
            .copied()
            .ok_or(BerError::Truncated {
                offset: self.pos,
                what,
            })?;
        self.pos += 1;
        Ok(b)
    }

    /// Reads one element whose content must end by `end`, leaving `pos`
    /// after it.
    fn element(&mut self, end: usize) -> Result<Element<'a>, BerError> {
        let offset = self.pos;
        let tag = self.byte("tag")?;
        // High-tag-number form: continuation octets while bit 8 is set.
        if tag & 0x1F == 0x1F {
            let mut octets = 1;
            loop {
                let b = self.byte("tag")?;
                octets += 1;
                if octets > MAX_TAG_OCTETS {
                    return Err(BerError::TagTooLong { offset });
                }
                if b & 0x80 == 0 {
                    break;
                }
            }
        }
        let len_offset = self.pos;
        let first = self.byte("length")?;
        let len: u64 = match first {
            0x80 => return Err(BerError::IndefiniteLength { offset: len_offset }),
            0x00..=0x7F => u64::from(first),
            _ => {
                let octets = usize::from(first & 0x7F);
                if octets > MAX_LENGTH_OCTETS {
                    return Err(BerError::LengthTooLong {
                        offset: len_offset,
                        octets,
                    });
                }
                let mut len = 0u64;
                for _ in 0..octets {
                    len = len << 8 | u64::from(self.byte("length")?);
                }
                len
            }
        };
        let available = end.saturating_sub(self.pos);
        let content_len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= available)
            .ok_or(BerError::LengthPastEnd {
                offset: len_offset,
                len,
                available,
            })?;
        let content_offset = self.pos;
        let content = self
            .data
            .get(content_offset..content_offset + content_len)
            .ok_or(BerError::LengthPastEnd {
                offset: len_offset,
                len,
                available,
            })?;
        self.pos = content_offset + content_len;
        Ok(Element {
            offset,
            tag,
            content_offset,
            content,
        })
    }
}

/// Invariant check for the `verify_ber` cargo-fuzz target (and the unit
/// tests): decodes `data` as octets, and as hex text when it is UTF-8. A
/// value that decodes encodes to octets (and hex) that decode to an equal
/// value, and encoding that again gives the same octets. An error has a
/// non-empty message. Panics only if one of those breaks.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_verify_ber(data: &[u8]) {
    let check = |decoded: Result<VerifyData, BerError>| match decoded {
        Ok(v) => {
            let wire = v.encode();
            assert_eq!(
                VerifyData::decode(&wire).as_ref(),
                Ok(&v),
                "re-decode differs: {wire:02X?}"
            );
            assert_eq!(
                VerifyData::from_hex(&v.to_hex()).as_ref(),
                Ok(&v),
                "hex round trip differs"
            );
            let again = VerifyData::decode(&wire).map(|w| w.encode());
            assert_eq!(again.as_ref(), Ok(&wire), "encoding is not a fixed point");
        }
        Err(e) => assert!(!e.to_string().is_empty(), "empty error message"),
    };
    check(VerifyData::decode(data));
    if let Ok(text) = std::str::from_utf8(data) {
        check(VerifyData::from_hex(text));
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Second example of the operator manual: calling 74999494395
    /// (international, E.164), called hashed.
    const MANUAL_HASHED: &str = "301641088410479949499305420a7e00642242ef464958ed";
    /// First example: calling with nature/plan 0/0, called and original
    /// called hashed.
    const MANUAL_ORIGINAL: &str =
        "302241088000475989888202420A7E004463AB956F942C67430A7E0091F73DAAE02D048C";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn err(bytes: &[u8]) -> BerError {
        let e = VerifyData::decode(bytes).unwrap_err();
        fuzz_verify_ber(bytes);
        e
    }

    #[test]
    fn decodes_the_manual_examples_and_encodes_them_back() {
        let v = VerifyData::from_hex(MANUAL_HASHED).unwrap();
        assert_eq!(v.calling, IsupNumber::international("74999494395").unwrap());
        assert_eq!(
            v.called,
            CalledNumber::Hashed([0x64, 0x22, 0x42, 0xEF, 0x46, 0x49, 0x58, 0xED])
        );
        assert_eq!(v.original_called, None);
        assert_eq!(v.to_hex(), MANUAL_HASHED.to_uppercase());
        assert_eq!(v.encode(), hex(MANUAL_HASHED));

        let v = VerifyData::from_hex(MANUAL_ORIGINAL).unwrap();
        assert_eq!((v.calling.nature, v.calling.plan), (0, 0));
        assert_eq!(v.calling.digits, "74959888282");
        assert!(matches!(v.called, CalledNumber::Hashed(_)));
        assert_eq!(
            v.original_called,
            Some(CalledNumber::Hashed([
                0x91, 0xF7, 0x3D, 0xAA, 0xE0, 0x2D, 0x04, 0x8C
            ]))
        );
        assert_eq!(v.to_hex(), MANUAL_ORIGINAL);
    }

    #[test]
    fn plain_numbers_round_trip_with_even_and_odd_counts() {
        for (a, b) in [("74999494395", "4951234567"), ("1234", "123")] {
            let v = VerifyData {
                calling: IsupNumber::international(a).unwrap(),
                called: CalledNumber::Plain(IsupNumber::international(b).unwrap()),
                original_called: Some(CalledNumber::Plain(IsupNumber::international(a).unwrap())),
            };
            assert_eq!(VerifyData::decode(&v.encode()).unwrap(), v);
            assert_eq!(VerifyData::from_hex(&v.to_hex()).unwrap(), v);
            assert!(v.called.matches(b"k", b));
            assert!(v.called.matches(b"k", &format!("+{b}")));
            assert!(!v.called.matches(b"k", a));
        }
    }

    #[test]
    fn hashed_called_number_round_trips_and_matches() {
        let key = b"network-wide key";
        let v = VerifyData {
            calling: IsupNumber::international("74999494395").unwrap(),
            called: CalledNumber::Hashed(hash_number(key, "4951234567")),
            original_called: None,
        };
        let hex = v.to_hex();
        assert!(hex.contains("420A7E00"));
        let back = VerifyData::from_hex(&hex).unwrap();
        assert_eq!(back, v);
        assert!(back.called.matches(key, "4951234567"));
        assert!(back.called.matches(key, "+4951234567"));
        assert!(!back.called.matches(key, "4951234568"));
        assert!(!back.called.matches(b"other key", "4951234567"));
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        let h = |k: &[u8], m: &[u8]| -> String {
            hmac_sha256(k, m)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        };
        assert_eq!(
            h(&[0x0B; 20], b"Hi There"),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            h(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            h(
                &[0xAA; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        assert_eq!(hash_number(b"Jefe", "1"), hmac_sha256(b"Jefe", b"1")[..8]);
    }

    #[test]
    fn hex_is_case_insensitive() {
        let lower = VerifyData::from_hex(&MANUAL_ORIGINAL.to_lowercase()).unwrap();
        let upper = VerifyData::from_hex(&MANUAL_HASHED.to_uppercase()).unwrap();
        assert_eq!(lower, VerifyData::from_hex(MANUAL_ORIGINAL).unwrap());
        assert_eq!(upper, VerifyData::from_hex(MANUAL_HASHED).unwrap());
        assert_eq!(
            VerifyData::from_hex("30 0"),
            Err(BerError::NotHex { offset: 2 })
        );
        assert_eq!(
            VerifyData::from_hex("300"),
            Err(BerError::OddHex { len: 3 })
        );
        assert_eq!(
            VerifyData::from_hex("3g"),
            Err(BerError::NotHex { offset: 1 })
        );
    }

    #[test]
    fn skips_unknown_elements() {
        // [APPLICATION 9], a context tag, a constructed universal and a
        // high-tag-number element around the fields.
        let bytes = hex("3026490101A0020500\
             41088410479949499305\
             80020000\
             420A7E00642242EF464958ED\
             5F81000100");
        let v = VerifyData::decode(&bytes).unwrap();
        assert_eq!(v, VerifyData::from_hex(MANUAL_HASHED).unwrap());
        fuzz_verify_ber(&bytes);
    }

    #[test]
    fn accepts_fields_in_any_order_and_long_form_lengths() {
        let bytes = hex("3081174281 0a7e00642242ef464958ed4108841047994949930 5"
            .replace(' ', "")
            .as_str());
        assert_eq!(
            VerifyData::decode(&bytes).unwrap(),
            VerifyData::from_hex(MANUAL_HASHED).unwrap()
        );
    }

    #[test]
    fn refuses_malformed_data() {
        let good = hex(MANUAL_HASHED);
        // Every truncation.
        for cut in 0..good.len() {
            err(&good[..cut]);
        }
        assert_eq!(
            err(&[]),
            BerError::Truncated {
                offset: 0,
                what: "tag"
            }
        );
        assert_eq!(
            err(&[0x30]),
            BerError::Truncated {
                offset: 1,
                what: "length"
            }
        );
        // Length past the end.
        let mut long = good.clone();
        long[1] = 0x17;
        assert!(matches!(
            err(&long),
            BerError::LengthPastEnd { offset: 1, .. }
        ));
        let mut inner = good.clone();
        inner[3] = 0x15;
        assert!(matches!(
            err(&inner),
            BerError::LengthPastEnd { offset: 3, .. }
        ));
        // Indefinite length, outer and inner.
        assert_eq!(
            err(&hex(
                "30804108841047994949930542 0a7e00642242ef464958ed0000"
                    .replace(' ', "")
                    .as_str()
            )),
            BerError::IndefiniteLength { offset: 1 }
        );
        assert_eq!(
            err(&hex("300441800000")),
            BerError::IndefiniteLength { offset: 3 }
        );
        // Too many length octets, reserved 0xFF.
        assert_eq!(
            err(&hex("3085000000000000")),
            BerError::LengthTooLong {
                offset: 1,
                octets: 5
            }
        );
        assert!(matches!(err(&hex("30FF")), BerError::LengthTooLong { .. }));
        // Huge 4-octet length.
        assert!(matches!(
            err(&hex("3084FFFFFFFF")),
            BerError::LengthPastEnd { .. }
        ));
        // Trailing garbage.
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(
            err(&trailing),
            BerError::TrailingBytes { offset: good.len() }
        );
        // Not a SEQUENCE.
        assert_eq!(
            err(&hex("3100")),
            BerError::NotSequence {
                offset: 0,
                tag: 0x31
            }
        );
        // Non-BCD nibble in the calling number (0x99 -> 0x9A).
        let mut nibble = good.clone();
        nibble[7] = 0x9A;
        assert_eq!(
            err(&nibble),
            BerError::Number {
                field: Field::Calling,
                offset: 4,
                source: IsupError::NotBcd {
                    offset: 3,
                    nibble: 0xA
                }
            }
        );
        // Filler 0xF in a plain called number: only 0 is a filler.
        assert!(matches!(
            err(&hex("300C4104041021434204841021F3")),
            BerError::Number {
                field: Field::Called,
                source: IsupError::BadFiller { nibble: 0xF, .. },
                ..
            }
        ));
        // Filler in the middle.
        assert!(matches!(
            err(&hex("300C410404102143420484100F21")),
            BerError::Number {
                field: Field::Called,
                source: IsupError::NotBcd { nibble: 0xF, .. },
                ..
            }
        ));
        // Hashed form of the wrong size.
        assert!(matches!(
            err(&hex("30124108841047994949930542067E0001020304")),
            BerError::BadHashed {
                field: Field::Called,
                len: 6,
                ..
            }
        ));
        // Missing, duplicate and constructed fields.
        assert_eq!(
            err(&hex("300A41088410479949499305")),
            BerError::Missing {
                field: Field::Called
            }
        );
        assert_eq!(
            err(&hex("3000")),
            BerError::Missing {
                field: Field::Calling
            }
        );
        assert!(matches!(
            err(&hex("30144108841047994949930541088410479949499305")),
            BerError::Duplicate {
                field: Field::Calling,
                offset: 12
            }
        ));
        assert!(matches!(
            err(&hex("300A61088410479949499305")),
            BerError::Constructed {
                field: Field::Calling,
                ..
            }
        ));
        // Over-long high-tag-number form.
        assert_eq!(
            err(&hex("30071F818181810100")),
            BerError::TagTooLong { offset: 2 }
        );
        assert!(matches!(
            err(&vec![0u8; MAX_DATA_BYTES + 1]),
            BerError::TooLarge { .. }
        ));
    }

    fn arb_number() -> impl Strategy<Value = IsupNumber> {
        (0u8..128, 0u8..8, "[0-9]{1,32}").prop_map(|(nature, plan, digits)| IsupNumber {
            nature,
            plan,
            digits,
        })
    }

    fn arb_called() -> impl Strategy<Value = CalledNumber> {
        prop_oneof![
            arb_number()
                .prop_filter("7E is the hash marker", |n| {
                    !(n.nature == 0x7E && n.digits.len().is_multiple_of(2))
                })
                .prop_map(CalledNumber::Plain),
            any::<[u8; 8]>().prop_map(CalledNumber::Hashed),
        ]
    }

    fn arb_data() -> impl Strategy<Value = VerifyData> {
        (
            arb_number(),
            arb_called(),
            proptest::option::of(arb_called()),
        )
            .prop_map(|(calling, called, original_called)| VerifyData {
                calling,
                called,
                original_called,
            })
    }

    proptest! {
        #[test]
        fn encode_decode_identity(v in arb_data()) {
            prop_assert_eq!(VerifyData::decode(&v.encode()), Ok(v.clone()));
            prop_assert_eq!(VerifyData::from_hex(&v.to_hex().to_lowercase()), Ok(v.clone()));
            fuzz_verify_ber(&v.encode());
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            fuzz_verify_ber(&data);
        }

        #[test]
        fn mutated_encodings_never_panic(v in arb_data(), at in any::<prop::sample::Index>(), b in any::<u8>()) {
            let mut wire = v.encode();
            let i = at.index(wire.len());
            wire[i] = b;
            fuzz_verify_ber(&wire);
        }
    }
}
