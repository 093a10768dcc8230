//! Bencode, the value encoding of the rtpengine ng protocol: integers, byte
//! strings, lists and dictionaries (BEP 3).
//!
//! What it does: [`decode`] / [`decode_all`] turn bytes into a [`Value`];
//! [`encode`] / [`encode_to_vec`] turn a [`Value`] back into bytes.
//!
//! What it does not do: the ng framing (`<cookie> <dict>`), command semantics,
//! or key sorting. rtpengine's and Kamailio's bencode parsers take dictionary
//! keys in any order, and keeping the sender's order keeps replies readable in
//! packet captures, so a dictionary is a list of pairs written in insertion
//! order, not a sorted map.
//!
//! Invariants:
//! - Decoding is total: any input gives a value or a [`BencodeError`] naming the
//!   byte offset, never a panic. Nesting is capped at [`MAX_DEPTH`] containers,
//!   so hostile input cannot exhaust the stack, and a string's length prefix is
//!   checked against the bytes left before anything is allocated.
//! - Decoding is strict: no leading zeros (in integers or length prefixes), no
//!   `-0`, no integer outside `i64`, no duplicate dictionary key, dictionary
//!   keys are byte strings. Hence the encoding is canonical: for every accepted
//!   input, `encode(decode(input))` gives back exactly the bytes consumed.
//! - Every [`BencodeError`] is the sender's fault (`Peer` at the ng edge, where
//!   it becomes `result: error` with the error's text as `error-reason`);
//!   retrying the same bytes cannot help.

#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use std::fmt;

/// How many lists and dictionaries may nest inside each other. ng messages
/// use two or three levels; 32 leaves room and bounds the decoder's recursion.
pub const MAX_DEPTH: usize = 32;

/// A bencode value.
///
/// A dictionary keeps its pairs in insertion (or wire) order; [`Value::get`]
/// finds a key by a linear scan, which is what ng dictionaries (a dozen keys)
/// want. [`Value::insert`] keeps keys unique; [`decode`] refuses duplicates.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    /// `i<decimal>e`.
    Int(i64),
    /// `<length>:<bytes>`: a byte string, UTF-8 or not.
    Bytes(Vec<u8>),
    /// `l<values>e`.
    List(Vec<Value>),
    /// `d<key><value>...e`, in insertion order.
    Dict(Vec<(Vec<u8>, Value)>),
}

impl Value {
    /// An empty dictionary.
    pub fn dict() -> Value {
        Value::Dict(Vec::new())
    }

    /// An empty list.
    pub fn list() -> Value {
        Value::List(Vec::new())
    }

    /// The value under `key` if this is a dictionary holding it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.get_key(key.as_bytes())
    }

    /// The value under a byte-string `key` if this is a dictionary holding it.
    pub fn get_key(&self, key: &[u8]) -> Option<&Value> {
        self.as_dict()?
            .iter()
            .find(|(k, _)| k.as_slice() == key)
            .map(|(_, v)| v)
    }

    /// The value under `key`, mutably, if this is a dictionary holding it.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        match self {
            Value::Dict(entries) => entries
                .iter_mut()
                .find(|(k, _)| k.as_slice() == key.as_bytes())
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// Removes `key` from a dictionary, returning its value; the other pairs
    /// keep their order.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        match self {
            Value::Dict(entries) => {
                let at = entries
                    .iter()
                    .position(|(k, _)| k.as_slice() == key.as_bytes())?;
                Some(entries.remove(at).1)
            }
            _ => None,
        }
    }

    /// Sets `key` to `value` in a dictionary. A key already present keeps its
    /// position and gets the new value (the old one is returned); a new key is
    /// appended.
    ///
    /// # Panics
    ///
    /// If `self` is not a dictionary. Only our own code builds values this
    /// way (replies), so that is a bug, never bad input.
    pub fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Value>) -> Option<Value> {
        let Value::Dict(entries) = self else {
            panic!(
                "Value::insert on a {}: only dictionaries take keys",
                self.type_name()
            );
        };
        let key = key.into();
        let value = value.into();
        match entries.iter_mut().find(|(k, _)| *k == key) {
            Some((_, slot)) => Some(std::mem::replace(slot, value)),
            None => {
                entries.push((key, value));
                None
            }
        }
    }

    /// [`Value::insert`] for chaining: `Value::dict().with("result", "ok")`.
    ///
    /// # Panics
    ///
    /// If `self` is not a dictionary (see [`Value::insert`]).
    #[must_use]
    pub fn with(mut self, key: impl Into<Vec<u8>>, value: impl Into<Value>) -> Value {
        self.insert(key, value);
        self
    }

    /// Appends `value` to a list.
    ///
    /// # Panics
    ///
    /// If `self` is not a list; as for [`Value::insert`], that is a bug in the
    /// code building the value.
    pub fn push(&mut self, value: impl Into<Value>) {
        let Value::List(items) = self else {
            panic!(
                "Value::push on a {}: only lists take items",
                self.type_name()
            );
        };
        items.push(value.into());
    }

    /// The bytes of a byte string that is valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(self.as_bytes()?).ok()
    }

    /// The bytes of a byte string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The integer, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The items, if this is a list.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(items) => Some(items),
            _ => None,
        }
    }

    /// The pairs in order, if this is a dictionary.
    pub fn as_dict(&self) -> Option<&[(Vec<u8>, Value)]> {
        match self {
            Value::Dict(entries) => Some(entries),
            _ => None,
        }
    }

    /// "integer", "byte string", "list" or "dictionary", for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Int(_) => "integer",
            Value::Bytes(_) => "byte string",
            Value::List(_) => "list",
            Value::Dict(_) => "dictionary",
        }
    }
}

/// Byte strings print as `b"..."` (escaped), which is what ng values are.
impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Bytes(b) => write!(f, "{:?}", ByteStr(b)),
            Value::List(items) => f.debug_list().entries(items).finish(),
            Value::Dict(entries) => f
                .debug_map()
                .entries(entries.iter().map(|(k, v)| (ByteStr(k), v)))
                .finish(),
        }
    }
}

struct ByteStr<'a>(&'a [u8]);

impl fmt::Debug for ByteStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Bytes(s.as_bytes().to_vec())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Bytes(s.into_bytes())
    }
}

impl From<&[u8]> for Value {
    fn from(b: &[u8]) -> Value {
        Value::Bytes(b.to_vec())
    }
}

impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Value {
        Value::Bytes(b)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Int(i)
    }
}

impl From<i32> for Value {
    fn from(i: i32) -> Value {
        Value::Int(i64::from(i))
    }
}

impl From<u32> for Value {
    fn from(i: u32) -> Value {
        Value::Int(i64::from(i))
    }
}

impl From<u16> for Value {
    fn from(i: u16) -> Value {
        Value::Int(i64::from(i))
    }
}

impl From<Vec<Value>> for Value {
    fn from(items: Vec<Value>) -> Value {
        Value::List(items)
    }
}

/// Why some bytes are not bencode, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bencode: {kind} at byte {offset}")]
pub struct BencodeError {
    /// Byte offset into the input: where the offending item starts for
    /// unterminated items and bad lengths, else the offending byte itself.
    pub offset: usize,
    /// What is wrong.
    pub kind: BencodeErrorKind,
}

/// What is wrong with some bencode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BencodeErrorKind {
    /// The input ended where a value should start.
    UnexpectedEnd,
    /// A byte that cannot start a value.
    UnexpectedByte(u8),
    /// `i...` without its `e`.
    UnterminatedInteger,
    /// An integer with no digits or a non-digit in it.
    InvalidInteger,
    /// An integer or length prefix written with a leading zero.
    LeadingZero,
    /// `i-0e`.
    NegativeZero,
    /// An integer outside `i64`.
    IntegerOverflow,
    /// A length prefix with a non-digit in it, or without its `:`.
    InvalidLength,
    /// A string longer than the input left.
    LengthPastEnd,
    /// `l...` without its `e`.
    UnterminatedList,
    /// `d...` without its `e`.
    UnterminatedDict,
    /// A dictionary key that is not a byte string.
    KeyNotString,
    /// The same key twice in one dictionary.
    DuplicateKey,
    /// Lists and dictionaries nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// Bytes after a complete value ([`decode_all`] only).
    TrailingBytes,
}

impl fmt::Display for BencodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BencodeErrorKind::UnexpectedEnd => f.write_str("unexpected end of input"),
            BencodeErrorKind::UnexpectedByte(b) => {
                write!(f, "unexpected byte {:?}", char::from(*b))
            }
            BencodeErrorKind::UnterminatedInteger => f.write_str("unterminated integer"),
            BencodeErrorKind::InvalidInteger => f.write_str("invalid integer"),
            BencodeErrorKind::LeadingZero => f.write_str("number with a leading zero"),
            BencodeErrorKind::NegativeZero => f.write_str("negative zero"),
            BencodeErrorKind::IntegerOverflow => f.write_str("integer out of 64-bit range"),
            BencodeErrorKind::InvalidLength => f.write_str("invalid string length"),
            BencodeErrorKind::LengthPastEnd => f.write_str("string length past the end of input"),
            BencodeErrorKind::UnterminatedList => f.write_str("unterminated list"),
            BencodeErrorKind::UnterminatedDict => f.write_str("unterminated dictionary"),
            BencodeErrorKind::KeyNotString => f.write_str("dictionary key is not a byte string"),
            BencodeErrorKind::DuplicateKey => f.write_str("duplicate dictionary key"),
            BencodeErrorKind::TooDeep => write!(f, "nesting deeper than {MAX_DEPTH} levels"),
            BencodeErrorKind::TrailingBytes => f.write_str("trailing bytes after the value"),
        }
    }
}

/// Decodes the value at the start of `input`; returns it and how many bytes it
/// took. Bytes after it are left alone (see [`decode_all`]).
pub fn decode(input: &[u8]) -> Result<(Value, usize), BencodeError> {
    let mut d = Decoder { input, pos: 0 };
    let value = d.value(0)?;
    Ok((value, d.pos))
}

/// Decodes `input` as exactly one value; trailing bytes are an error.
pub fn decode_all(input: &[u8]) -> Result<Value, BencodeError> {
    let (value, used) = decode(input)?;
    if used != input.len() {
        return Err(BencodeError {
            offset: used,
            kind: BencodeErrorKind::TrailingBytes,
        });
    }
    Ok(value)
}

/// Appends the encoding of `value` to `out`. Dictionary keys are written in
/// insertion order (rtpengine does not require sorted keys).
///
/// This recurses once per nesting level: decoded values are at most
/// [`MAX_DEPTH`] deep; only code could build one deep enough to matter.
pub fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Int(i) => {
            out.push(b'i');
            out.extend_from_slice(i.to_string().as_bytes());
            out.push(b'e');
        }
        Value::Bytes(b) => encode_bytes(b, out),
        Value::List(items) => {
            out.push(b'l');
            for item in items {
                encode(item, out);
            }
            out.push(b'e');
        }
        Value::Dict(entries) => {
            out.push(b'd');
            for (k, v) in entries {
                encode_bytes(k, out);
                encode(v, out);
            }
            out.push(b'e');
        }
    }
}

/// The encoding of `value` in a new buffer.
pub fn encode_to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode(value, &mut out);
    out
}

fn encode_bytes(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

/// A cursor over the input. `pos` only moves forward, and only past bytes
/// that were read through `peek`, so it never exceeds `input.len()`.
struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn err<T>(offset: usize, kind: BencodeErrorKind) -> Result<T, BencodeError> {
        Err(BencodeError { offset, kind })
    }

    /// One value; `depth` is how many containers enclose it.
    fn value(&mut self, depth: usize) -> Result<Value, BencodeError> {
        match self.peek() {
            None => Self::err(self.pos, BencodeErrorKind::UnexpectedEnd),
            Some(b'i') => self.int().map(Value::Int),
            Some(b'0'..=b'9') => self.bytes().map(|b| Value::Bytes(b.to_vec())),
            Some(b'l') => self.list(depth),
            Some(b'd') => self.dict(depth),
            Some(b) => Self::err(self.pos, BencodeErrorKind::UnexpectedByte(b)),
        }
    }

    /// `i[-]<digits>e`, canonical only.
    fn int(&mut self) -> Result<i64, BencodeError> {
        let start = self.pos;
        self.pos += 1; // 'i'
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let digits_start = self.pos;
        let mut value: i64 = 0;
        loop {
            match self.peek() {
                None => return Self::err(start, BencodeErrorKind::UnterminatedInteger),
                Some(b'e') => break,
                Some(d @ b'0'..=b'9') => {
                    if self.pos > digits_start && value == 0 {
                        // A second digit after a leading zero ("i03e", "i-0…").
                        return if negative {
                            Self::err(start, BencodeErrorKind::NegativeZero)
                        } else {
                            Self::err(digits_start, BencodeErrorKind::LeadingZero)
                        };
                    }
                    let digit = i64::from(d - b'0');
                    // Accumulate towards the sign so i64::MIN fits.
                    value = value
                        .checked_mul(10)
                        .and_then(|v| {
                            if negative {
                                v.checked_sub(digit)
                            } else {
                                v.checked_add(digit)
                            }
                        })
                        .ok_or(BencodeError {
                            offset: digits_start,
                            kind: BencodeErrorKind::IntegerOverflow,
                        })?;
                    self.pos += 1;
                }
                Some(_) => return Self::err(self.pos, BencodeErrorKind::InvalidInteger),
            }
        }
        if self.pos == digits_start {
            return Self::err(self.pos, BencodeErrorKind::InvalidInteger);
        }
        if negative && value == 0 {
            return Self::err(start, BencodeErrorKind::NegativeZero);
        }
        self.pos += 1; // 'e'
        Ok(value)
    }

    /// `<length>:<bytes>`, borrowed from the input. The length is checked
    /// against what is left before the caller copies anything.
    fn bytes(&mut self) -> Result<&'a [u8], BencodeError> {
        let start = self.pos;
        let mut len: usize = 0;
        loop {
            match self.peek() {
                None => return Self::err(start, BencodeErrorKind::InvalidLength),
                Some(b':') if self.pos > start => break,
                Some(d @ b'0'..=b'9') => {
                    if self.pos > start && len == 0 {
                        return Self::err(start, BencodeErrorKind::LeadingZero);
                    }
                    // An overflowing length is past the end of any input.
                    len = len
                        .checked_mul(10)
                        .and_then(|l| l.checked_add(usize::from(d - b'0')))
                        .ok_or(BencodeError {
                            offset: start,
                            kind: BencodeErrorKind::LengthPastEnd,
                        })?;
                    self.pos += 1;
                }
                Some(_) => return Self::err(self.pos, BencodeErrorKind::InvalidLength),
            }
        }
        let body = self.pos + 1; // after ':'
        let bytes = body
            .checked_add(len)
            .and_then(|end| self.input.get(body..end))
            .ok_or(BencodeError {
                offset: start,
                kind: BencodeErrorKind::LengthPastEnd,
            })?;
        self.pos = body + len;
        Ok(bytes)
    }

    fn list(&mut self, depth: usize) -> Result<Value, BencodeError> {
        let start = self.pos;
        if depth >= MAX_DEPTH {
            return Self::err(start, BencodeErrorKind::TooDeep);
        }
        self.pos += 1; // 'l'
        let mut items = Vec::new();
        loop {
            match self.peek() {
                None => return Self::err(start, BencodeErrorKind::UnterminatedList),
                Some(b'e') => break,
                Some(_) => items.push(self.value(depth + 1)?),
            }
        }
        self.pos += 1; // 'e'
        Ok(Value::List(items))
    }

    fn dict(&mut self, depth: usize) -> Result<Value, BencodeError> {
        let start = self.pos;
        if depth >= MAX_DEPTH {
            return Self::err(start, BencodeErrorKind::TooDeep);
        }
        self.pos += 1; // 'd'
        let mut entries = Vec::new();
        // (key, offset) for the duplicate check, borrowed from the input.
        let mut keys: Vec<(&'a [u8], usize)> = Vec::new();
        loop {
            match self.peek() {
                None => return Self::err(start, BencodeErrorKind::UnterminatedDict),
                Some(b'e') => break,
                Some(b'0'..=b'9') => {
                    let key_at = self.pos;
                    let key = self.bytes()?;
                    let value = self.value(depth + 1)?;
                    keys.push((key, key_at));
                    entries.push((key.to_vec(), value));
                }
                Some(_) => return Self::err(self.pos, BencodeErrorKind::KeyNotString),
            }
        }
        // Sorting beats a pairwise scan: a 64 KiB datagram can hold
        // thousands of keys.
        keys.sort_unstable();
        let duplicate = keys
            .windows(2)
            .filter_map(|w| match w {
                [(a, _), (b, at)] if a == b => Some(*at),
                _ => None,
            })
            .min();
        if let Some(at) = duplicate {
            return Self::err(at, BencodeErrorKind::DuplicateKey);
        }
        self.pos += 1; // 'e'
        Ok(Value::Dict(entries))
    }
}

/// Invariant check for the `bencode` cargo-fuzz target (and the unit tests):
/// decodes `data`; on success the encoding of the value is exactly the bytes
/// consumed (the format is canonical), and it decodes again to the same
/// value. Panics only if one of those invariants breaks.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_bencode(data: &[u8]) {
    match decode(data) {
        Ok((value, used)) => {
            assert!(used <= data.len());
            let encoded = encode_to_vec(&value);
            assert_eq!(
                Some(encoded.as_slice()),
                data.get(..used),
                "encoding is not canonical"
            );
            assert_eq!(decode_all(&encoded), Ok(value), "re-decode differs");
        }
        Err(e) => {
            assert!(e.offset <= data.len(), "error offset past the input: {e}");
            assert!(!e.to_string().is_empty());
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::BencodeErrorKind as K;
    use super::*;
    use proptest::prelude::*;

    fn err(input: &[u8]) -> BencodeError {
        decode_all(input).unwrap_err()
    }

    #[test]
    fn decodes_an_ng_offer_keeping_key_order() {
        let msg = b"d7:command5:offer3:sdp3:v=07:call-id3:abc5:flagsl5:tracee6:leg-idi2ee";
        let v = decode_all(msg).unwrap();
        let keys: Vec<&[u8]> = v
            .as_dict()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_slice())
            .collect();
        assert_eq!(
            keys,
            [&b"command"[..], b"sdp", b"call-id", b"flags", b"leg-id"]
        );
        assert_eq!(v.get("command").and_then(Value::as_str), Some("offer"));
        assert_eq!(v.get("leg-id").and_then(Value::as_int), Some(2));
        assert_eq!(
            v.get("flags").and_then(Value::as_list).map(<[_]>::len),
            Some(1)
        );
        assert_eq!(v.get("missing"), None);
        assert_eq!(encode_to_vec(&v), msg);
    }

    #[test]
    fn decode_reports_bytes_used_and_leaves_the_rest() {
        let (v, used) = decode(b"i42e trailing").unwrap();
        assert_eq!((v, used), (Value::Int(42), 4));
        assert_eq!(
            err(b"i42ex"),
            BencodeError {
                offset: 4,
                kind: K::TrailingBytes
            }
        );
    }

    #[test]
    fn integers_decode_across_the_whole_i64_range() {
        for (text, want) in [
            (&b"i0e"[..], 0),
            (b"i-1e", -1),
            (b"i9223372036854775807e", i64::MAX),
            (b"i-9223372036854775808e", i64::MIN),
        ] {
            assert_eq!(decode_all(text), Ok(Value::Int(want)));
        }
    }

    #[test]
    fn refuses_non_canonical_and_overflowing_integers() {
        let cases: &[(&[u8], usize, K)] = &[
            (b"i03e", 1, K::LeadingZero),
            (b"i00e", 1, K::LeadingZero),
            (b"i-0e", 0, K::NegativeZero),
            (b"i-01e", 0, K::NegativeZero),
            (b"ie", 1, K::InvalidInteger),
            (b"i-e", 2, K::InvalidInteger),
            (b"i+1e", 1, K::InvalidInteger),
            (b"i1.5e", 2, K::InvalidInteger),
            (b"i9223372036854775808e", 1, K::IntegerOverflow),
            (b"i-9223372036854775809e", 2, K::IntegerOverflow),
            (b"i12", 0, K::UnterminatedInteger),
            (b"i", 0, K::UnterminatedInteger),
        ];
        for (input, offset, kind) in cases {
            assert_eq!(
                err(input),
                BencodeError {
                    offset: *offset,
                    kind: *kind
                },
                "{}",
                input.escape_ascii()
            );
        }
    }

    #[test]
    fn error_text_names_the_problem_and_the_offset() {
        let e = err(b"d3:key4:abcd5:valuei12");
        assert_eq!(e.to_string(), "bencode: unterminated integer at byte 19");
        assert_eq!(
            err(b"").to_string(),
            "bencode: unexpected end of input at byte 0"
        );
        assert_eq!(
            err(b"x").to_string(),
            "bencode: unexpected byte 'x' at byte 0"
        );
    }

    #[test]
    fn string_length_is_checked_before_allocating() {
        // A forged 2^60-byte length must fail fast, not try to allocate.
        assert_eq!(
            err(b"1152921504606846976:abc"),
            BencodeError {
                offset: 0,
                kind: K::LengthPastEnd
            }
        );
        assert_eq!(
            err(b"99999999999999999999999999:x"),
            BencodeError {
                offset: 0,
                kind: K::LengthPastEnd
            }
        );
        assert_eq!(
            err(b"4:abc"),
            BencodeError {
                offset: 0,
                kind: K::LengthPastEnd
            }
        );
        assert_eq!(decode_all(b"0:"), Ok(Value::Bytes(Vec::new())));
    }

    #[test]
    fn refuses_malformed_length_prefixes() {
        assert_eq!(
            err(b"01:a"),
            BencodeError {
                offset: 0,
                kind: K::LeadingZero
            }
        );
        assert_eq!(
            err(b"1x:a"),
            BencodeError {
                offset: 1,
                kind: K::InvalidLength
            }
        );
        assert_eq!(
            err(b"12"),
            BencodeError {
                offset: 0,
                kind: K::InvalidLength
            }
        );
    }

    #[test]
    fn refuses_unterminated_containers_at_their_start() {
        assert_eq!(
            err(b"li1e"),
            BencodeError {
                offset: 0,
                kind: K::UnterminatedList
            }
        );
        assert_eq!(
            err(b"ld1:ai1e"),
            BencodeError {
                offset: 1,
                kind: K::UnterminatedDict
            }
        );
        assert_eq!(
            err(b"d1:a"),
            BencodeError {
                offset: 4,
                kind: K::UnexpectedEnd
            }
        );
    }

    #[test]
    fn dictionary_keys_must_be_unique_strings() {
        assert_eq!(
            err(b"di1ei2ee"),
            BencodeError {
                offset: 1,
                kind: K::KeyNotString
            }
        );
        assert_eq!(
            err(b"d1:ai1e1:bi2e1:ai3ee"),
            BencodeError {
                offset: 13,
                kind: K::DuplicateKey
            }
        );
        // Unsorted keys are fine: rtpengine does not sort either.
        assert!(decode_all(b"d1:bi1e1:ai2ee").is_ok());
    }

    #[test]
    fn nesting_is_capped_at_max_depth() {
        let ok = [vec![b'l'; MAX_DEPTH], vec![b'e'; MAX_DEPTH]].concat();
        assert!(decode_all(&ok).is_ok());
        let deep = [vec![b'l'; MAX_DEPTH + 1], vec![b'e'; MAX_DEPTH + 1]].concat();
        assert_eq!(
            err(&deep),
            BencodeError {
                offset: MAX_DEPTH,
                kind: K::TooDeep
            }
        );
        // A megabyte of openers fails at the cap, not by exhausting the stack.
        let hostile = vec![b'd'; 1 << 20];
        assert_eq!(err(&hostile).kind, K::KeyNotString);
        let hostile = [b"d1:a".repeat(1 << 18), b"i0e".to_vec()].concat();
        assert_eq!(err(&hostile).kind, K::TooDeep);
    }

    #[test]
    fn builders_keep_insertion_order_and_replace_in_place() {
        let mut reply = Value::dict()
            .with("result", "ok")
            .with("sdp", String::from("v=0\r\n"))
            .with("port", 30000u16);
        assert_eq!(reply.insert("result", "error"), Some(Value::from("ok")));
        reply.insert("error-reason", "no such call");
        let mut flags = Value::list();
        flags.push("trace");
        flags.push(7i32);
        reply.insert("flags", flags);
        assert_eq!(
            encode_to_vec(&reply),
            b"d6:result5:error3:sdp5:v=0\r\n4:porti30000e12:error-reason12:no such call5:flagsl5:tracei7eee"
        );
        assert_eq!(reply.remove("sdp"), Some(Value::from("v=0\r\n")));
        assert_eq!(reply.remove("sdp"), None);
        *reply.get_mut("port").unwrap() = Value::from(-1i64);
        assert_eq!(reply.get("port"), Some(&Value::Int(-1)));
        assert_eq!(format!("{:?}", reply.get("result").unwrap()), "b\"error\"");
    }

    #[test]
    fn accessors_return_none_for_other_types() {
        let v = Value::from(&b"\xff\xfe"[..]);
        assert_eq!(v.as_str(), None);
        assert_eq!(v.as_bytes(), Some(&b"\xff\xfe"[..]));
        assert_eq!(v.as_int(), None);
        assert_eq!(v.as_list(), None);
        assert_eq!(v.as_dict(), None);
        assert_eq!(v.get("x"), None);
        assert_eq!(Value::from(5u32).as_str(), None);
    }

    #[test]
    #[should_panic(expected = "only dictionaries take keys")]
    fn insert_into_a_non_dictionary_is_a_bug() {
        Value::list().insert("k", "v");
    }

    /// Hostile inputs and every fuzzer find: each gets its error and keeps
    /// the fuzz invariants.
    #[test]
    fn malformed_input() {
        let cases: &[&[u8]] = &[
            b"",
            b"e",
            b"-",
            b":",
            b"0",
            b"0:",
            b"1:",
            b"i-",
            b"i-0",
            b"l",
            b"d",
            b"de",
            b"d0:",
            b"d0:e",
            b"d0:0:e",
            b"d0:0:0:0:e",
            b"18446744073709551616:",
            b"i-9223372036854775808e",
            b"i18446744073709551616e",
        ];
        for input in cases {
            fuzz_bencode(input);
        }
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::Int),
            proptest::collection::vec(any::<u8>(), 0..24).prop_map(Value::Bytes),
        ];
        leaf.prop_recursive(5, 96, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::List),
                proptest::collection::vec(
                    (proptest::collection::vec(any::<u8>(), 0..6), inner),
                    0..8
                )
                .prop_map(|pairs| {
                    let mut d = Value::dict();
                    for (k, v) in pairs {
                        d.insert(k, v);
                    }
                    d
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_value_round_trips(v in arb_value()) {
            let bytes = encode_to_vec(&v);
            prop_assert_eq!(decode_all(&bytes), Ok(v));
            fuzz_bencode(&bytes);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            fuzz_bencode(&data);
        }

        #[test]
        fn truncated_encodings_are_errors(v in arb_value(), cut in any::<prop::sample::Index>()) {
            let bytes = encode_to_vec(&v);
            let cut = cut.index(bytes.len());
            let e = decode_all(&bytes[..cut]).unwrap_err();
            prop_assert!(e.offset <= cut);
        }
    }
}
