//! Digest authentication for SIP: RFC 3261 §22 on the rules of RFC 7616,
//! with SHA-256 as RFC 8760 adds it.
//!
//! What is here:
//! - [`Credentials`]: an `Authorization` / `Proxy-Authorization` value, parsed
//!   and printed, and the response it ought to carry for a password;
//! - [`Challenge`]: a `WWW-Authenticate` / `Proxy-Authenticate` value, parsed
//!   (for the client side and for tests);
//! - [`NonceKeeper`]: issues challenges and verifies credentials against them.
//!
//! What is not: `qop=auth-int`, the `-sess` algorithms, `userhash` and
//! RFC 2069 digests without `qop`. Kordon always offers `qop="auth"`, and
//! RFC 7616 §3.4 has the client answer with one of the offered qops (the
//! qop-less form is gone from RFC 7616), so a credential without `qop` is
//! refused with [`AuthError::UnsupportedQop`]; accepting it would also leave
//! the nonce count, and with it replay protection, out.
//!
//! Nonces need no storage to be checked. Each carries its issue time, a
//! sequence number, random bytes and an HMAC-SHA-256 (RFC 2104) over those,
//! the algorithm and the realm, keyed with a secret drawn at construction.
//! A nonce not made by this keeper (altered, made up, or from before a
//! restart) fails the MAC; an old one is recognised by its time. Storage is
//! only used for the nonce count of nonces that authenticated a request, in
//! a map bounded by `max_tracked`. The keeper reads no clock: time is an
//! argument, and its randomness comes from the rng given to
//! [`NonceKeeper::new`].

#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use md5::Md5;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

/// Longest header value the parsers look at; real ones are a few hundred bytes.
pub const MAX_VALUE_BYTES: usize = 4096;

/// A digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `MD5` (RFC 2617; what most SIP phones still send).
    Md5,
    /// `SHA-256` (RFC 7616, for SIP RFC 8760).
    Sha256,
}

impl Algorithm {
    /// The token on the wire.
    pub fn token(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// The algorithm a token names (case-insensitive); `None` for anything
    /// else, including the `-sess` variants.
    pub fn from_token(s: &str) -> Option<Algorithm> {
        if s.eq_ignore_ascii_case("MD5") {
            Some(Algorithm::Md5)
        } else if s.eq_ignore_ascii_case("SHA-256") {
            Some(Algorithm::Sha256)
        } else {
            None
        }
    }

    /// The lower-case hex digest of `data` (RFC 7616 §3.4.1 `H`).
    fn hex_digest(self, data: &[u8]) -> String {
        match self {
            Algorithm::Md5 => hex(&Md5::digest(data)),
            Algorithm::Sha256 => hex(&Sha256::digest(data)),
        }
    }

    /// One byte naming the algorithm inside the nonce MAC.
    fn mac_code(self) -> u8 {
        match self {
            Algorithm::Md5 => 1,
            Algorithm::Sha256 => 2,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

/// Why credentials were not accepted.
///
/// Every variant is the peer's doing. How each maps onto SIP is the
/// caller's choice; the registrar's mapping is in `crate::registrar`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The header value could not be read; the text says what is wrong and
    /// is fit for a 400's reason phrase.
    #[error("malformed credentials: {0}")]
    Malformed(String),
    /// The credentials are for another realm.
    #[error("credentials for another realm")]
    WrongRealm,
    /// The nonce is genuine and the response right for it, but the nonce is
    /// too old (or was dropped from tracking): challenge again with
    /// `stale=true` so the client retries without asking its user.
    #[error("stale nonce")]
    StaleNonce,
    /// The nonce was not issued by this keeper for this realm and algorithm.
    #[error("nonce not issued here")]
    ForgedNonce,
    /// The nonce count is not above the last one accepted for this nonce.
    #[error("nonce count replayed")]
    Replay,
    /// The response does not match: wrong password, or an altered request.
    #[error("wrong digest response")]
    BadResponse,
    /// An algorithm other than `MD5` and `SHA-256`.
    #[error("unsupported digest algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// A `qop` other than `auth`, or none (RFC 2069 digest).
    #[error("unsupported qop {0:?}")]
    UnsupportedQop(String),
}

/// Digest credentials: one `Authorization` or `Proxy-Authorization` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `username`.
    pub username: String,
    /// `realm`.
    pub realm: String,
    /// `nonce`, as received in the challenge.
    pub nonce: String,
    /// `uri`: the digest-uri the response was computed over.
    pub uri: String,
    /// `response`: the hex digest proving the password.
    pub response: String,
    /// `algorithm`; `MD5` when absent (RFC 7616 §3.4).
    pub algorithm: Algorithm,
    /// `qop`, as sent (`auth`).
    pub qop: Option<String>,
    /// `nc`, the nonce count (eight hex digits on the wire).
    pub nc: Option<u32>,
    /// `cnonce`, the client nonce.
    pub cnonce: Option<String>,
    /// `opaque`, returned from the challenge.
    pub opaque: Option<String>,
}

impl Credentials {
    /// Parses a `Digest username="..", realm="..", ...` value.
    ///
    /// Parameter names are case-insensitive, values may be tokens or quoted
    /// strings with `\` escapes, unknown parameters are ignored (RFC 7235
    /// §2.1) and a repeated known one is an error. `username`, `realm`,
    /// `nonce`, `uri` and `response` are required; with `qop`, so are `nc`
    /// (eight hex digits) and `cnonce` (RFC 7616 §3.4).
    pub fn parse(header_value: &str) -> Result<Credentials, AuthError> {
        let mut username = None;
        let mut realm = None;
        let mut nonce = None;
        let mut uri = None;
        let mut response = None;
        let mut algorithm = None;
        let mut qop = None;
        let mut nc = None;
        let mut cnonce = None;
        let mut opaque = None;
        for (name, value) in digest_params(header_value)? {
            let slot = match name.as_str() {
                "username" => &mut username,
                "realm" => &mut realm,
                "nonce" => &mut nonce,
                "uri" => &mut uri,
                "response" => &mut response,
                "algorithm" => &mut algorithm,
                "qop" => &mut qop,
                "nc" => &mut nc,
                "cnonce" => &mut cnonce,
                "opaque" => &mut opaque,
                _ => continue,
            };
            if slot.is_some() {
                return Err(AuthError::Malformed(format!("duplicate {name}")));
            }
            *slot = Some(value);
        }
        let required = |v: Option<String>, name: &str| {
            v.ok_or_else(|| AuthError::Malformed(format!("missing {name}")))
        };
        let algorithm = match algorithm {
            None => Algorithm::Md5,
            Some(a) => Algorithm::from_token(&a)
                .ok_or_else(|| AuthError::UnsupportedAlgorithm(short(&a).to_string()))?,
        };
        let nc = nc.map(|n| parse_nc(&n)).transpose()?;
        if qop.is_some() && (nc.is_none() || cnonce.is_none()) {
            return Err(AuthError::Malformed("qop without nc and cnonce".into()));
        }
        Ok(Credentials {
            username: required(username, "username")?,
            realm: required(realm, "realm")?,
            nonce: required(nonce, "nonce")?,
            uri: required(uri, "uri")?,
            response: required(response, "response")?,
            algorithm,
            qop,
            nc,
            cnonce,
            opaque,
        })
    }

    /// The response these credentials should carry for `method` and
    /// `password` (RFC 7616 §3.4.1): `H(H(A1):nonce:nc:cnonce:qop:H(A2))`
    /// with `A1 = username:realm:password` and `A2 = method:uri`; without
    /// `qop`, the RFC 2069 form `H(H(A1):nonce:H(A2))`.
    ///
    /// A client fills in every other field and sets `response` to this.
    pub fn expected_response(&self, method: &str, password: &str) -> String {
        let alg = self.algorithm;
        let ha1 = alg.hex_digest(format!("{}:{}:{password}", self.username, self.realm).as_bytes());
        let ha2 = alg.hex_digest(format!("{method}:{}", self.uri).as_bytes());
        let kd = match (&self.qop, self.nc, &self.cnonce) {
            (Some(qop), Some(nc), Some(cnonce)) => {
                format!("{ha1}:{}:{nc:08x}:{cnonce}:{qop}:{ha2}", self.nonce)
            }
            _ => format!("{ha1}:{}:{ha2}", self.nonce),
        };
        alg.hex_digest(kd.as_bytes())
    }
}

impl fmt::Display for Credentials {
    /// The header value, as a client sends it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Digest username={}, realm={}, nonce={}, uri={}, response={}, algorithm={}",
            quote(&self.username),
            quote(&self.realm),
            quote(&self.nonce),
            quote(&self.uri),
            quote(&self.response),
            self.algorithm
        )?;
        if let Some(qop) = &self.qop {
            write!(f, ", qop={}", quote(qop))?;
        }
        if let Some(nc) = self.nc {
            write!(f, ", nc={nc:08x}")?;
        }
        if let Some(cnonce) = &self.cnonce {
            write!(f, ", cnonce={}", quote(cnonce))?;
        }
        if let Some(opaque) = &self.opaque {
            write!(f, ", opaque={}", quote(opaque))?;
        }
        Ok(())
    }
}

/// A digest challenge: one `WWW-Authenticate` or `Proxy-Authenticate` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `realm`.
    pub realm: String,
    /// `nonce`.
    pub nonce: String,
    /// `opaque`, to be returned unchanged.
    pub opaque: Option<String>,
    /// `algorithm`; `MD5` when absent.
    pub algorithm: Algorithm,
    /// The `qop` options offered, in order (`["auth"]`); empty when none.
    pub qop: Vec<String>,
    /// `stale=true`: the last credentials were right but their nonce old.
    pub stale: bool,
}

impl Challenge {
    /// Parses a `Digest realm="..", nonce="..", ...` value (same syntax rules
    /// as [`Credentials::parse`]; `realm` and `nonce` are required).
    pub fn parse(header_value: &str) -> Result<Challenge, AuthError> {
        let mut realm = None;
        let mut nonce = None;
        let mut opaque = None;
        let mut algorithm = None;
        let mut qop = None;
        let mut stale = None;
        for (name, value) in digest_params(header_value)? {
            let slot = match name.as_str() {
                "realm" => &mut realm,
                "nonce" => &mut nonce,
                "opaque" => &mut opaque,
                "algorithm" => &mut algorithm,
                "qop" => &mut qop,
                "stale" => &mut stale,
                _ => continue,
            };
            if slot.is_some() {
                return Err(AuthError::Malformed(format!("duplicate {name}")));
            }
            *slot = Some(value);
        }
        let algorithm = match algorithm {
            None => Algorithm::Md5,
            Some(a) => Algorithm::from_token(&a)
                .ok_or_else(|| AuthError::UnsupportedAlgorithm(short(&a).to_string()))?,
        };
        Ok(Challenge {
            realm: realm.ok_or_else(|| AuthError::Malformed("missing realm".into()))?,
            nonce: nonce.ok_or_else(|| AuthError::Malformed("missing nonce".into()))?,
            opaque,
            algorithm,
            qop: qop
                .map(|q| {
                    q.split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            stale: stale.is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }
}

/// Bytes of a nonce: issue time, sequence number, random, MAC.
const NONCE_TIME: usize = 8;
const NONCE_SEQ: usize = 8;
const NONCE_RANDOM: usize = 8;
const NONCE_MAC: usize = 16;
const NONCE_BYTES: usize = NONCE_TIME + NONCE_SEQ + NONCE_RANDOM + NONCE_MAC;

/// The nonce count state of one nonce that authenticated a request.
#[derive(Debug, Clone, Copy)]
struct Tracked {
    /// When the nonce was issued (unix seconds).
    issued: u64,
    /// The highest nonce count accepted with it.
    last_nc: u32,
}

/// What a genuine nonce says about itself.
struct Opened {
    issued: u64,
    seq: u64,
}

/// Issues digest challenges and verifies credentials against them.
///
/// Invariants: a nonce verifies only under the realm and algorithm it was
/// issued for; the tracking map never holds more than `max_tracked` nonces;
/// a nonce count is only recorded once the response proved the password, so
/// a client without it cannot use up or block counts.
///
/// When the map is full, expired nonces go first, then the oldest (lowest
/// sequence number). An evicted nonce that is still young would lose its
/// replay protection, so every untracked nonce at or below the highest
/// evicted sequence number is answered as stale from then on; fresh
/// challenges are numbered above it, so clients recover at once.
pub struct NonceKeeper {
    /// HMAC key for nonces.
    secret: [u8; 32],
    /// The `opaque` sent with every challenge (not checked: the nonce
    /// carries all the state).
    opaque: String,
    /// Random bytes for nonces, seeded from the rng given at construction.
    rng: StdRng,
    /// How long a nonce is good for, in seconds (at least 1).
    lifetime_s: u64,
    /// Most nonces whose count is tracked (at least 1).
    max_tracked: usize,
    /// Sequence number of the next nonce.
    next_seq: u64,
    /// Nonce count per tracked nonce, by sequence number.
    tracked: BTreeMap<u64, Tracked>,
    /// Highest sequence number evicted while still young.
    evicted_up_to: Option<u64>,
}

impl fmt::Debug for NonceKeeper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret stays out of logs.
        f.debug_struct("NonceKeeper")
            .field("lifetime_s", &self.lifetime_s)
            .field("max_tracked", &self.max_tracked)
            .field("tracked", &self.tracked.len())
            .field("evicted_up_to", &self.evicted_up_to)
            .finish_non_exhaustive()
    }
}

impl NonceKeeper {
    /// A keeper with a fresh secret from `rng`. Nonces are good for
    /// `lifetime` (whole seconds, at least one); at most `max_tracked` (at
    /// least one) nonce counts are remembered.
    pub fn new(rng: &mut impl RngCore, lifetime: Duration, max_tracked: usize) -> Self {
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        let mut opaque = [0u8; 8];
        rng.fill_bytes(&mut opaque);
        NonceKeeper {
            secret,
            opaque: hex(&opaque),
            rng: StdRng::from_rng(rng),
            lifetime_s: lifetime.as_secs().max(1),
            max_tracked: max_tracked.max(1),
            // A random start hides how many challenges were issued; 2^62
            // leaves room for any number of them without wrapping.
            next_seq: rng.next_u64() >> 2,
            tracked: BTreeMap::new(),
            evicted_up_to: None,
        }
    }

    /// How many nonces have their count tracked.
    pub fn tracked(&self) -> usize {
        self.tracked.len()
    }

    /// A challenge header value with a new nonce:
    /// `Digest realm="..", nonce="..", opaque="..", algorithm=.., qop="auth"`,
    /// and `, stale=true` when asked.
    pub fn challenge(
        &mut self,
        realm: &str,
        algorithm: Algorithm,
        now_unix: u64,
        stale: bool,
    ) -> String {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let mut random = [0u8; NONCE_RANDOM];
        self.rng.fill_bytes(&mut random);
        let time = now_unix.to_be_bytes();
        let seq = seq.to_be_bytes();
        let mac = self.mac(&time, &seq, &random, algorithm, realm);
        let mut nonce = String::with_capacity(NONCE_BYTES * 2);
        for part in [&time[..], &seq[..], &random[..], &mac[..]] {
            nonce.push_str(&hex(part));
        }
        format!(
            "Digest realm={}, nonce=\"{nonce}\", opaque=\"{}\", algorithm={}, qop=\"auth\"{}",
            quote(realm),
            self.opaque,
            algorithm,
            if stale { ", stale=true" } else { "" }
        )
    }

    /// Checks `creds` for a request with `method` against `password`.
    ///
    /// In order: the realm, the qop, that the nonce is ours (for this realm
    /// and algorithm), the response (in constant time), the nonce's age, and
    /// that the nonce count is above the last accepted one, which is then
    /// recorded. So [`AuthError::StaleNonce`] and [`AuthError::Replay`] are
    /// only returned for a right password (RFC 7616 §3.3 on `stale`).
    ///
    /// The digest-uri is not compared with the Request-URI: it is covered by
    /// the response, and the nonce count stops reuse of a captured response.
    pub fn verify(
        &mut self,
        creds: &Credentials,
        method: &str,
        password: &str,
        realm: &str,
        now_unix: u64,
    ) -> Result<(), AuthError> {
        if creds.realm != realm {
            return Err(AuthError::WrongRealm);
        }
        match creds.qop.as_deref() {
            Some(q) if q.eq_ignore_ascii_case("auth") => {}
            Some(q) => return Err(AuthError::UnsupportedQop(short(q).to_string())),
            None => return Err(AuthError::UnsupportedQop("none".into())),
        }
        let (Some(nc), Some(_)) = (creds.nc, &creds.cnonce) else {
            return Err(AuthError::Malformed("qop without nc and cnonce".into()));
        };
        let opened = self
            .open(&creds.nonce, creds.algorithm, realm)
            .ok_or(AuthError::ForgedNonce)?;
        let expected = creds.expected_response(method, password);
        if !constant_time_eq(
            expected.as_bytes(),
            creds.response.to_ascii_lowercase().as_bytes(),
        ) {
            return Err(AuthError::BadResponse);
        }
        if now_unix.saturating_sub(opened.issued) >= self.lifetime_s {
            return Err(AuthError::StaleNonce);
        }
        if let Some(t) = self.tracked.get_mut(&opened.seq) {
            if nc <= t.last_nc {
                return Err(AuthError::Replay);
            }
            t.last_nc = nc;
            return Ok(());
        }
        if self.evicted_up_to.is_some_and(|floor| opened.seq <= floor) {
            return Err(AuthError::StaleNonce);
        }
        if nc == 0 {
            return Err(AuthError::Replay);
        }
        self.track(opened.seq, opened.issued, nc, now_unix);
        Ok(())
    }

    /// Records the first count of a nonce, making room first.
    fn track(&mut self, seq: u64, issued: u64, nc: u32, now_unix: u64) {
        if self.tracked.len() >= self.max_tracked {
            // Sequence order is issue order, so the expired ones are in front
            // (unless the caller's clock went backwards; they then wait for
            // the eviction below).
            while let Some(entry) = self.tracked.first_entry() {
                if now_unix.saturating_sub(entry.get().issued) >= self.lifetime_s {
                    entry.remove();
                } else {
                    break;
                }
            }
        }
        while self.tracked.len() >= self.max_tracked {
            let Some((evicted, _)) = self.tracked.pop_first() else {
                break;
            };
            self.evicted_up_to = Some(self.evicted_up_to.map_or(evicted, |f| f.max(evicted)));
        }
        self.tracked.insert(
            seq,
            Tracked {
                issued,
                last_nc: nc,
            },
        );
    }

    /// The nonce MAC: HMAC-SHA-256 over time, sequence number, random bytes,
    /// algorithm and realm (the only variable-length part, last, so no two
    /// inputs run together), truncated to 128 bits.
    fn mac(
        &self,
        time: &[u8; NONCE_TIME],
        seq: &[u8; NONCE_SEQ],
        random: &[u8; NONCE_RANDOM],
        algorithm: Algorithm,
        realm: &str,
    ) -> [u8; NONCE_MAC] {
        let full = hmac_sha256(
            &self.secret,
            &[time, seq, random, &[algorithm.mac_code()], realm.as_bytes()],
        );
        let mut out = [0u8; NONCE_MAC];
        for (o, b) in out.iter_mut().zip(full.iter()) {
            *o = *b;
        }
        out
    }

    /// Reads a nonce back, `None` unless this keeper issued it for `realm`
    /// and `algorithm`.
    fn open(&self, nonce: &str, algorithm: Algorithm, realm: &str) -> Option<Opened> {
        let bytes: [u8; NONCE_BYTES] = unhex(nonce)?;
        let (time, rest) = bytes.split_first_chunk::<NONCE_TIME>()?;
        let (seq, rest) = rest.split_first_chunk::<NONCE_SEQ>()?;
        let (random, mac) = rest.split_first_chunk::<NONCE_RANDOM>()?;
        let expected = self.mac(time, seq, random, algorithm, realm);
        if !constant_time_eq(&expected, mac) {
            return None;
        }
        Some(Opened {
            issued: u64::from_be_bytes(*time),
            seq: u64::from_be_bytes(*seq),
        })
    }
}

/// HMAC-SHA-256 (RFC 2104) of the concatenated `parts` under a 32-byte key.
fn hmac_sha256(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut ipad = [0x36u8; BLOCK];
    let mut opad = [0x5cu8; BLOCK];
    for ((i, o), k) in ipad.iter_mut().zip(opad.iter_mut()).zip(key.iter()) {
        *i ^= k;
        *o ^= k;
    }
    let mut inner = Sha256::new();
    inner.update(ipad);
    for p in parts {
        inner.update(p);
    }
    let mut outer = Sha256::new();
    outer.update(opad);
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Equality whose time depends on the lengths only, not on where the inputs
/// differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        for nibble in [b >> 4, b & 0x0f] {
            if let Some(&d) = DIGITS.get(usize::from(nibble)) {
                s.push(char::from(d));
            }
        }
    }
    s
}

/// Decodes exactly `N` bytes of hex (either case).
fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    let digits = s.as_bytes().chunks_exact(2);
    for (o, pair) in out.iter_mut().zip(digits) {
        let mut v = 0u8;
        for &c in pair {
            v = (v << 4) | u8::try_from(char::from(c).to_digit(16)?).ok()?;
        }
        *o = v;
    }
    Some(out)
}

/// `nc`: eight hex digits (RFC 7616 §3.4 `nc-value = 8LHEX`; upper case is
/// tolerated, and the response is computed with the lower-case form).
fn parse_nc(s: &str) -> Result<u32, AuthError> {
    let bad = || AuthError::Malformed("nc must be 8 hex digits".into());
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    u32::from_str_radix(s, 16).map_err(|_| bad())
}

/// A quoted-string (RFC 7230 §3.2.6), with `"` and `\` escaped and line
/// breaks dropped so no value can end the header line.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\r' | '\n' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// At most 32 characters of `s`, for error texts quoting the peer.
fn short(s: &str) -> &str {
    let end = s.char_indices().nth(32).map_or(s.len(), |(i, _)| i);
    s.get(..end).unwrap_or("")
}

fn is_lws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// RFC 7230 §3.2.6 `tchar`.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Splits `Digest name=value, name="value", ...` into lower-cased names and
/// unquoted values, after checking the scheme. Empty list elements are
/// skipped (RFC 7230 §7).
fn digest_params(value: &str) -> Result<Vec<(String, String)>, AuthError> {
    let malformed = |m: &str| AuthError::Malformed(m.to_string());
    if value.len() > MAX_VALUE_BYTES {
        return Err(AuthError::Malformed(format!(
            "longer than {MAX_VALUE_BYTES} bytes"
        )));
    }
    let value = value.trim_matches(is_lws);
    let (scheme, mut rest) = match value.find(is_lws) {
        Some(i) => (value.get(..i).unwrap_or(""), value.get(i..).unwrap_or("")),
        None => (value, ""),
    };
    if scheme.is_empty() {
        return Err(malformed("empty"));
    }
    if !scheme.eq_ignore_ascii_case("Digest") {
        return Err(AuthError::Malformed(format!(
            "scheme {:?} is not Digest",
            short(scheme)
        )));
    }
    let mut out = Vec::new();
    loop {
        rest = rest.trim_start_matches(|c| is_lws(c) || c == ',');
        let Some(first) = rest.chars().next() else {
            break;
        };
        let name_end = rest.find(|c: char| !is_tchar(c)).unwrap_or(rest.len());
        if name_end == 0 {
            return Err(AuthError::Malformed(format!(
                "unexpected {first:?} where a parameter name belongs"
            )));
        }
        let name = rest.get(..name_end).unwrap_or("").to_ascii_lowercase();
        rest = rest
            .get(name_end..)
            .unwrap_or("")
            .trim_start_matches(is_lws);
        rest = rest
            .strip_prefix('=')
            .ok_or_else(|| AuthError::Malformed(format!("{} without '='", short(&name))))?
            .trim_start_matches(is_lws);
        let param_value = if let Some(quoted) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut escaped = false;
            let mut end = None;
            for (i, c) in quoted.char_indices() {
                if escaped {
                    v.push(c);
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    end = Some(i);
                    break;
                } else {
                    v.push(c);
                }
            }
            let end = end.ok_or_else(|| {
                AuthError::Malformed(format!("unterminated quoted {}", short(&name)))
            })?;
            rest = quoted.get(end + 1..).unwrap_or("");
            v
        } else {
            let end = rest
                .find(|c: char| c == ',' || is_lws(c))
                .unwrap_or(rest.len());
            let token = rest.get(..end).unwrap_or("");
            if token.is_empty() {
                return Err(AuthError::Malformed(format!(
                    "{} has no value",
                    short(&name)
                )));
            }
            if token.contains('"') {
                return Err(AuthError::Malformed(format!(
                    "stray quote in {}",
                    short(&name)
                )));
            }
            rest = rest.get(end..).unwrap_or("");
            token.to_string()
        };
        out.push((name, param_value));
        rest = rest.trim_start_matches(is_lws);
        if !rest.is_empty() && !rest.starts_with(',') {
            return Err(AuthError::Malformed(format!(
                "expected ',' after {}",
                out.last().map_or("", |(n, _)| short(n))
            )));
        }
    }
    if out.is_empty() {
        return Err(malformed("no parameters"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const REALM: &str = "kordon";

    fn keeper(lifetime_s: u64, max_tracked: usize) -> NonceKeeper {
        let mut rng = StdRng::seed_from_u64(7);
        NonceKeeper::new(&mut rng, Duration::from_secs(lifetime_s), max_tracked)
    }

    /// Answers `challenge` the way a phone would.
    fn answer(challenge: &str, user: &str, password: &str, nc: u32) -> Credentials {
        let ch = Challenge::parse(challenge).expect("our challenge parses");
        let mut c = Credentials {
            username: user.into(),
            realm: ch.realm,
            nonce: ch.nonce,
            uri: "sip:kordon.example".into(),
            response: String::new(),
            algorithm: ch.algorithm,
            qop: Some("auth".into()),
            nc: Some(nc),
            cnonce: Some("0a4f113b".into()),
            opaque: ch.opaque,
        };
        c.response = c.expected_response("REGISTER", password);
        c
    }

    #[test]
    fn md5_matches_rfc2617_example() {
        // RFC 2617 §3.5.
        let c = Credentials::parse(
            "Digest username=\"Mufasa\", realm=\"testrealm@host.com\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"/dir/index.html\", \
             qop=auth, nc=00000001, cnonce=\"0a4f113b\", \
             response=\"6629fae49393a05397450978507c4ef1\", \
             opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .expect("parses");
        assert_eq!(c.algorithm, Algorithm::Md5);
        assert_eq!(c.nc, Some(1));
        assert_eq!(c.expected_response("GET", "Circle Of Life"), c.response);
        // The same by hand from the formula, step by step.
        let h = |s: &str| Algorithm::Md5.hex_digest(s.as_bytes());
        let ha1 = h("Mufasa:testrealm@host.com:Circle Of Life");
        let ha2 = h("GET:/dir/index.html");
        assert_eq!(
            h(&format!(
                "{ha1}:dcd98b7102dd2f0e8b11d0f600bfb0c093:00000001:0a4f113b:auth:{ha2}"
            )),
            "6629fae49393a05397450978507c4ef1"
        );
    }

    #[test]
    fn sha256_matches_rfc7616_example() {
        // RFC 7616 §3.9.1, the SHA-256 response.
        let c = Credentials::parse(
            "Digest username=\"Mufasa\", realm=\"http-auth@example.org\", \
             uri=\"/dir/index.html\", algorithm=SHA-256, \
             nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", nc=00000001, \
             cnonce=\"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ\", qop=auth, \
             response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\", \
             opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"",
        )
        .expect("parses");
        assert_eq!(c.algorithm, Algorithm::Sha256);
        assert_eq!(c.expected_response("GET", "Circle of Life"), c.response);
        let mut md5 = c.clone();
        md5.algorithm = Algorithm::Md5;
        assert_eq!(
            md5.expected_response("GET", "Circle of Life"),
            "8ca523f5e9506fed4657c9700eebdbec"
        );
    }

    #[test]
    fn parses_escapes_case_and_unknown_params() {
        let c = Credentials::parse(
            "  digest USERNAME=\"a\\\"b\\\\c\" ,, realm=kordon,nonce=\"n\",uri=\"sip:x\",\
             response=\"AB\", algorithm=\"md5\", foo=\"bar, baz\", qop=\"auth\",\
             nc=0000000A, cnonce=c",
        )
        .expect("parses");
        assert_eq!(c.username, "a\"b\\c");
        assert_eq!(c.realm, "kordon");
        assert_eq!(c.algorithm, Algorithm::Md5);
        assert_eq!(c.nc, Some(10));
        assert_eq!(Credentials::parse(&c.to_string()), Ok(c));
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        let base = "Digest username=\"u\", realm=\"r\", nonce=\"n\", uri=\"s\", response=\"x\"";
        let cases = [
            ("", "empty"),
            ("Basic dXNlcjpwYXNz", "not Digest"),
            ("Digest", "no parameters"),
            ("Digest username=\"u", "unterminated"),
            ("Digest username", "without '='"),
            ("Digest username=", "has no value"),
            ("Digest username=\"u\" realm=\"r\"", "expected ','"),
            ("Digest =x", "parameter name"),
            (
                "Digest realm=\"r\", nonce=\"n\", uri=\"s\", response=\"x\"",
                "missing username",
            ),
        ];
        for (input, needle) in cases {
            match Credentials::parse(input) {
                Err(AuthError::Malformed(m)) => assert!(m.contains(needle), "{input}: {m}"),
                other => panic!("{input}: {other:?}"),
            }
        }
        let dup = format!("{base}, realm=\"again\"");
        assert_eq!(
            Credentials::parse(&dup),
            Err(AuthError::Malformed("duplicate realm".into()))
        );
        assert!(matches!(
            Credentials::parse(&format!("{base}, qop=auth, nc=1, cnonce=c")),
            Err(AuthError::Malformed(m)) if m.contains("nc")
        ));
        assert!(matches!(
            Credentials::parse(&format!("{base}, qop=auth")),
            Err(AuthError::Malformed(m)) if m.contains("cnonce")
        ));
        assert_eq!(
            Credentials::parse(&format!("{base}, algorithm=MD5-sess")),
            Err(AuthError::UnsupportedAlgorithm("MD5-sess".into()))
        );
    }

    #[test]
    fn challenge_then_verify_for_both_algorithms() {
        let mut k = keeper(300, 16);
        for alg in [Algorithm::Sha256, Algorithm::Md5] {
            let ch = k.challenge(REALM, alg, 1000, false);
            assert!(ch.starts_with("Digest realm=\"kordon\", nonce=\""), "{ch}");
            assert!(ch.contains(&format!("algorithm={alg}")));
            assert!(ch.ends_with("qop=\"auth\""));
            let parsed = Challenge::parse(&ch).expect("parses");
            assert_eq!(parsed.algorithm, alg);
            assert_eq!(parsed.qop, ["auth"]);
            assert!(!parsed.stale);
            let c = answer(&ch, "alice", "secret", 1);
            k.verify(&c, "REGISTER", "secret", REALM, 1010)
                .expect("right password");
        }
        assert_eq!(k.tracked(), 2);
        assert!(k
            .challenge(REALM, Algorithm::Md5, 1, true)
            .ends_with(", stale=true"));
    }

    #[test]
    fn wrong_password_is_bad_response() {
        let mut k = keeper(300, 16);
        let ch = k.challenge(REALM, Algorithm::Sha256, 1000, false);
        let c = answer(&ch, "alice", "guess", 1);
        assert_eq!(
            k.verify(&c, "REGISTER", "secret", REALM, 1000),
            Err(AuthError::BadResponse)
        );
        // Nothing was recorded, so the owner of the password is not blocked.
        assert_eq!(k.tracked(), 0);
        let c = answer(&ch, "alice", "secret", 1);
        assert_eq!(k.verify(&c, "REGISTER", "secret", REALM, 1000), Ok(()));
        // The method is covered by the response.
        let c = answer(&ch, "alice", "secret", 2);
        assert_eq!(
            k.verify(&c, "INVITE", "secret", REALM, 1000),
            Err(AuthError::BadResponse)
        );
    }

    #[test]
    fn expired_nonce_is_stale_only_with_the_right_password() {
        let mut k = keeper(300, 16);
        let ch = k.challenge(REALM, Algorithm::Md5, 1000, false);
        let c = answer(&ch, "alice", "secret", 1);
        assert_eq!(
            k.verify(&c, "REGISTER", "secret", REALM, 1300),
            Err(AuthError::StaleNonce)
        );
        assert_eq!(
            k.verify(&c, "REGISTER", "other", REALM, 1300),
            Err(AuthError::BadResponse)
        );
        assert_eq!(k.verify(&c, "REGISTER", "secret", REALM, 1299), Ok(()));
    }

    #[test]
    fn tampered_or_foreign_nonce_is_forged() {
        let mut k = keeper(300, 16);
        let ch = k.challenge(REALM, Algorithm::Sha256, 1000, false);
        let good = answer(&ch, "alice", "secret", 1);
        // Change the last digit of the issue time: the MAC no longer fits.
        let mut nonce = good.nonce.clone().into_bytes();
        if let Some(last_time_digit) = nonce.get_mut(NONCE_TIME * 2 - 1) {
            *last_time_digit = if *last_time_digit == b'f' { b'e' } else { b'f' };
        }
        let mut bad = good.clone();
        bad.nonce = String::from_utf8(nonce).expect("hex stays ascii");
        bad.response = bad.expected_response("REGISTER", "secret");
        assert_eq!(
            k.verify(&bad, "REGISTER", "secret", REALM, 1000),
            Err(AuthError::ForgedNonce)
        );
        for junk in ["", "zz", "dcd98b7102dd2f0e8b11d0f600bfb0c093"] {
            bad.nonce = junk.into();
            assert_eq!(
                k.verify(&bad, "REGISTER", "secret", REALM, 1000),
                Err(AuthError::ForgedNonce)
            );
        }
        // The nonce is bound to its algorithm: no downgrade to MD5.
        let mut md5 = good.clone();
        md5.algorithm = Algorithm::Md5;
        md5.response = md5.expected_response("REGISTER", "secret");
        assert_eq!(
            k.verify(&md5, "REGISTER", "secret", REALM, 1000),
            Err(AuthError::ForgedNonce)
        );
        // Another keeper (a restart) does not know it.
        let mut other =
            NonceKeeper::new(&mut StdRng::seed_from_u64(8), Duration::from_secs(300), 16);
        assert_eq!(
            other.verify(&good, "REGISTER", "secret", REALM, 1000),
            Err(AuthError::ForgedNonce)
        );
        // The realm is bound to the nonce as well as compared.
        let mut elsewhere = good.clone();
        elsewhere.realm = "elsewhere".into();
        elsewhere.response = elsewhere.expected_response("REGISTER", "secret");
        assert_eq!(
            k.verify(&elsewhere, "REGISTER", "secret", REALM, 1000),
            Err(AuthError::WrongRealm)
        );
        assert_eq!(
            k.verify(&elsewhere, "REGISTER", "secret", "elsewhere", 1000),
            Err(AuthError::ForgedNonce)
        );
        assert_eq!(k.verify(&good, "REGISTER", "secret", REALM, 1000), Ok(()));
    }

    #[test]
    fn replayed_count_is_refused_and_higher_accepted() {
        let mut k = keeper(300, 16);
        let ch = k.challenge(REALM, Algorithm::Sha256, 1000, false);
        let first = answer(&ch, "alice", "secret", 1);
        assert_eq!(k.verify(&first, "REGISTER", "secret", REALM, 1000), Ok(()));
        assert_eq!(
            k.verify(&first, "REGISTER", "secret", REALM, 1001),
            Err(AuthError::Replay)
        );
        let third = answer(&ch, "alice", "secret", 3);
        assert_eq!(k.verify(&third, "REGISTER", "secret", REALM, 1002), Ok(()));
        let second = answer(&ch, "alice", "secret", 2);
        assert_eq!(
            k.verify(&second, "REGISTER", "secret", REALM, 1003),
            Err(AuthError::Replay)
        );
        let zero = answer(
            &k.challenge(REALM, Algorithm::Md5, 1000, false),
            "a",
            "s",
            0,
        );
        assert_eq!(
            k.verify(&zero, "REGISTER", "s", REALM, 1000),
            Err(AuthError::Replay)
        );
    }

    #[test]
    fn qop_is_required() {
        let mut k = keeper(300, 16);
        let ch = k.challenge(REALM, Algorithm::Md5, 1000, false);
        let mut c = answer(&ch, "alice", "secret", 1);
        c.qop = None;
        c.nc = None;
        c.cnonce = None;
        c.response = c.expected_response("REGISTER", "secret");
        assert_eq!(
            k.verify(&c, "REGISTER", "secret", REALM, 1000),
            Err(AuthError::UnsupportedQop("none".into()))
        );
        c.qop = Some("auth-int".into());
        assert_eq!(
            k.verify(&c, "REGISTER", "secret", REALM, 1000),
            Err(AuthError::UnsupportedQop("auth-int".into()))
        );
    }

    #[test]
    fn tracking_is_bounded_and_eviction_stays_safe() {
        let mut k = keeper(300, 2);
        let challenges: Vec<String> = (0..3)
            .map(|_| k.challenge(REALM, Algorithm::Sha256, 1000, false))
            .collect();
        let creds: Vec<Credentials> = challenges
            .iter()
            .map(|ch| answer(ch, "alice", "secret", 1))
            .collect();
        for c in &creds {
            assert_eq!(k.verify(c, "REGISTER", "secret", REALM, 1000), Ok(()));
            assert!(k.tracked() <= 2);
        }
        // The first was evicted young: its replay is not let through.
        let Some(first) = creds.first() else {
            panic!("three credentials");
        };
        assert_eq!(
            k.verify(first, "REGISTER", "secret", REALM, 1001),
            Err(AuthError::StaleNonce)
        );
        // A fresh challenge works at once.
        let fresh = answer(
            &k.challenge(REALM, Algorithm::Sha256, 1001, true),
            "alice",
            "secret",
            1,
        );
        assert_eq!(k.verify(&fresh, "REGISTER", "secret", REALM, 1001), Ok(()));
        // Expired entries make room before young ones are evicted.
        let later = answer(
            &k.challenge(REALM, Algorithm::Sha256, 2000, false),
            "alice",
            "secret",
            1,
        );
        assert_eq!(k.verify(&later, "REGISTER", "secret", REALM, 2000), Ok(()));
        assert_eq!(k.tracked(), 1);
    }

    #[test]
    fn realm_is_quoted_safely_in_challenges() {
        let mut k = keeper(300, 4);
        let ch = k.challenge("a\"b\r\nX: y", Algorithm::Md5, 0, false);
        assert!(!ch.contains('\n'));
        assert_eq!(Challenge::parse(&ch).expect("parses").realm, "a\"bX: y");
    }

    /// Pieces that make the parser work: separators, quotes, escapes, names.
    fn fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("Digest ".to_string()),
            Just("username=".to_string()),
            Just("nc=".to_string()),
            Just("qop=auth".to_string()),
            Just("algorithm=".to_string()),
            Just("\"".to_string()),
            Just("\\".to_string()),
            Just(",".to_string()),
            Just("=".to_string()),
            Just(" ".to_string()),
            Just("\t".to_string()),
            Just("é".to_string()),
            "[a-zA-Z0-9]{0,8}",
            ".{0,4}",
        ]
    }

    fn credentials() -> impl Strategy<Value = Credentials> {
        let text = "[ -~é]{0,12}";
        (
            (text, text, text, text, "[0-9a-f]{32}"),
            prop_oneof![Just(Algorithm::Md5), Just(Algorithm::Sha256)],
            proptest::option::of((any::<u32>(), "[!-~]{1,12}")),
            proptest::option::of(text),
        )
            .prop_map(
                |((username, realm, nonce, uri, response), algorithm, qop, opaque)| Credentials {
                    username,
                    realm,
                    nonce,
                    uri,
                    response,
                    algorithm,
                    qop: qop.as_ref().map(|_| "auth".to_string()),
                    nc: qop.as_ref().map(|(nc, _)| *nc),
                    cnonce: qop.map(|(_, c)| c),
                    opaque,
                },
            )
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,200}") {
            let _ = Credentials::parse(&s);
            let _ = Challenge::parse(&s);
        }

        #[test]
        fn parse_never_panics_on_near_misses(
            parts in proptest::collection::vec(fragment(), 0..24)
        ) {
            let s = parts.concat();
            let _ = Credentials::parse(&s);
            let _ = Challenge::parse(&s);
        }

        #[test]
        fn printed_credentials_parse_back(c in credentials()) {
            prop_assert_eq!(Credentials::parse(&c.to_string()), Ok(c));
        }
    }
}
