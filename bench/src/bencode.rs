//! A minimal bencode encoder and decoder, enough for rtpengine's ng protocol.
//!
//! Dictionaries are kept in a `BTreeMap`, so encoding always emits keys in the
//! sorted order bencode requires; decoding accepts any key order. Nesting is
//! limited to [`MAX_DEPTH`] so hostile input cannot exhaust the stack.

use std::collections::BTreeMap;
use std::fmt;

/// Deepest nesting of lists and dictionaries the decoder accepts.
pub const MAX_DEPTH: usize = 32;

/// A bencoded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `i<n>e`
    Int(i64),
    /// `<len>:<bytes>`
    Bytes(Vec<u8>),
    /// `l...e`
    List(Vec<Value>),
    /// `d...e`
    Dict(BTreeMap<Vec<u8>, Value>),
}

/// Why a buffer is not valid bencode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset where decoding failed.
    pub at: usize,
    /// What was wrong.
    pub what: &'static str,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bencode: {} at byte {}", self.what, self.at)
    }
}

impl std::error::Error for DecodeError {}

impl Value {
    /// A byte string from text.
    pub fn str(s: &str) -> Value {
        Value::Bytes(s.as_bytes().to_vec())
    }

    /// A list of byte strings from text.
    pub fn str_list(items: &[&str]) -> Value {
        Value::List(items.iter().map(|s| Value::str(s)).collect())
    }

    /// A dictionary from `(key, value)` pairs.
    pub fn dict<'a>(pairs: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
        Value::Dict(
            pairs
                .into_iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v))
                .collect(),
        )
    }

    /// Looks a key up in a dictionary.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(d) => d.get(key.as_bytes()),
            _ => None,
        }
    }

    /// The value as UTF-8 text, when it is a byte string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// Encodes the value, appending to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(n) => {
                out.push(b'i');
                out.extend_from_slice(n.to_string().as_bytes());
                out.push(b'e');
            }
            Value::Bytes(b) => {
                out.extend_from_slice(b.len().to_string().as_bytes());
                out.push(b':');
                out.extend_from_slice(b);
            }
            Value::List(items) => {
                out.push(b'l');
                for v in items {
                    v.encode_into(out);
                }
                out.push(b'e');
            }
            Value::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    out.extend_from_slice(k.len().to_string().as_bytes());
                    out.push(b':');
                    out.extend_from_slice(k);
                    v.encode_into(out);
                }
                out.push(b'e');
            }
        }
    }

    /// Encodes the value into a new buffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }
}

/// Decodes exactly one value filling the whole buffer.
pub fn decode(buf: &[u8]) -> Result<Value, DecodeError> {
    let (v, used) = decode_prefix(buf)?;
    if used != buf.len() {
        return Err(DecodeError {
            at: used,
            what: "trailing bytes",
        });
    }
    Ok(v)
}

/// Decodes one value at the start of the buffer; returns it and the bytes used.
pub fn decode_prefix(buf: &[u8]) -> Result<(Value, usize), DecodeError> {
    let mut pos = 0;
    let v = parse(buf, &mut pos, 0)?;
    Ok((v, pos))
}

fn err(at: usize, what: &'static str) -> DecodeError {
    DecodeError { at, what }
}

fn parse(buf: &[u8], pos: &mut usize, depth: usize) -> Result<Value, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(err(*pos, "nested too deep"));
    }
    match buf.get(*pos) {
        None => Err(err(*pos, "unexpected end")),
        Some(b'i') => {
            *pos += 1;
            let start = *pos;
            let end = start
                + buf[start..]
                    .iter()
                    .position(|&c| c == b'e')
                    .ok_or(err(start, "unterminated integer"))?;
            let text = &buf[start..end];
            let valid = match text {
                [] | [b'-'] => false,
                [b'-', b'0', ..] => false,
                [b'0', _, ..] => false,
                [b'-', rest @ ..] | rest => rest.iter().all(u8::is_ascii_digit),
            };
            if !valid {
                return Err(err(start, "malformed integer"));
            }
            let n = std::str::from_utf8(text)
                .ok()
                .and_then(|t| t.parse::<i64>().ok())
                .ok_or(err(start, "integer out of range"))?;
            *pos = end + 1;
            Ok(Value::Int(n))
        }
        Some(b'l') => {
            *pos += 1;
            let mut items = Vec::new();
            loop {
                match buf.get(*pos) {
                    None => return Err(err(*pos, "unterminated list")),
                    Some(b'e') => {
                        *pos += 1;
                        return Ok(Value::List(items));
                    }
                    Some(_) => items.push(parse(buf, pos, depth + 1)?),
                }
            }
        }
        Some(b'd') => {
            *pos += 1;
            let mut d = BTreeMap::new();
            loop {
                match buf.get(*pos) {
                    None => return Err(err(*pos, "unterminated dictionary")),
                    Some(b'e') => {
                        *pos += 1;
                        return Ok(Value::Dict(d));
                    }
                    Some(c) if c.is_ascii_digit() => {
                        let key = parse_bytes(buf, pos)?;
                        let v = parse(buf, pos, depth + 1)?;
                        d.insert(key, v);
                    }
                    Some(_) => return Err(err(*pos, "dictionary key is not a string")),
                }
            }
        }
        Some(c) if c.is_ascii_digit() => Ok(Value::Bytes(parse_bytes(buf, pos)?)),
        Some(_) => Err(err(*pos, "unexpected byte")),
    }
}

fn parse_bytes(buf: &[u8], pos: &mut usize) -> Result<Vec<u8>, DecodeError> {
    let start = *pos;
    let colon = start
        + buf[start..]
            .iter()
            .position(|&c| c == b':')
            .ok_or(err(start, "missing ':'"))?;
    let digits = &buf[start..colon];
    if digits.is_empty()
        || !digits.iter().all(u8::is_ascii_digit)
        || (digits.len() > 1 && digits[0] == b'0')
    {
        return Err(err(start, "malformed length"));
    }
    let len: usize = std::str::from_utf8(digits)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or(err(start, "length out of range"))?;
    let data_start = colon + 1;
    let data_end = data_start
        .checked_add(len)
        .ok_or(err(start, "length out of range"))?;
    if data_end > buf.len() {
        return Err(err(start, "string runs past the end"));
    }
    *pos = data_end;
    Ok(buf[data_start..data_end].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encodes_dict_keys_sorted() {
        let v = Value::dict([
            ("sdp", Value::str("v=0")),
            ("command", Value::str("offer")),
            ("n", Value::Int(-3)),
        ]);
        assert_eq!(v.encode(), b"d7:command5:offer1:ni-3e3:sdp3:v=0e".to_vec());
    }

    #[test]
    fn decodes_ng_answer() {
        let v = decode(b"d6:result2:ok3:sdp5:m=a 1e").unwrap();
        assert_eq!(v.get("result").and_then(Value::as_str), Some("ok"));
        assert_eq!(v.get("sdp").and_then(Value::as_str), Some("m=a 1"));
    }

    #[test]
    fn rejects_malformed_input() {
        for bad in [
            &b"i-0e"[..],
            b"i03e",
            b"ie",
            b"5:abc",
            b"l",
            b"di1ei2ee",
            b"x",
            b"01:a",
            b"i1ee",
        ] {
            assert!(decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = vec![b'l'; MAX_DEPTH + 5];
        assert!(decode(&deep).is_err());
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::Int),
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::Bytes),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
                proptest::collection::btree_map(
                    proptest::collection::vec(any::<u8>(), 0..8),
                    inner,
                    0..6
                )
                .prop_map(Value::Dict),
            ]
        })
    }

    proptest! {
        #[test]
        fn encode_then_decode_round_trips(v in value()) {
            prop_assert_eq!(decode(&v.encode()), Ok(v));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }
}
