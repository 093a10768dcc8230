//! SIP parsing into [`super::Message`], serialization, and the checks that
//! decide between handling a request and answering it with a 400.
//!
//! The parser is our own. It finds the end of the head (the empty line),
//! checks the head's bytes (UTF-8, no control characters, CRLF line ends),
//! reads the start line, unfolds continuation lines and splits each header
//! line into a name and a value (RFC 3261 §7.3.1, white space before the
//! colon allowed); the values are kept as text and read through the typed
//! views in `types.rs` when needed. The body is cut from the input by
//! Content-Length.
//!
//! rsip 0.4 did this job at first and was measured (the cases are in
//! `conformance.rs`, the costs in bench/RESULTS.md): on its own it rejects
//! valid messages and accepts broken ones (it knows only fourteen methods
//! and fails any extension method; it fails folded headers, white space
//! before a colon, IPv6-literal and `tel:` Request-URIs; it maps lower-case
//! method names onto the standard ones; it takes `SIP/1.0` for SIP/2.0; it
//! reads a doubled space before the Request-URI as part of a user name; it
//! replaces the reason phrase of a known status code with its own). Once the
//! framing, start line and folding were ours, it only split header lines at
//! the colon, at ~1.4 µs per message, so it went; the conformance tests keep
//! rsip's behaviour pinned down for the record.
//!
//! Content-Length is framing, not a header: it is checked against the body,
//! removed from [`super::Headers`], and written again from the body's length
//! by `to_bytes`, so a message survives `parse(to_bytes())` unchanged.

#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use super::types::{CSeq, NameAddr, Uri, Via};
use super::{canonical_name, Header, Headers, Message, Method, Request, Response};

/// The largest message Kordon accepts on any transport.
pub const MAX_MESSAGE_BYTES: usize = 65_535;

/// Why a message could not be parsed or used; the text is fit for a 400's
/// reason phrase ("Bad Request - missing Call-ID").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    reason: String,
}

impl ParseError {
    /// A new error with `reason`.
    pub fn new(reason: impl Into<String>) -> ParseError {
        let mut reason: String = reason.into();
        // A reason phrase must stay on one line and within reason.
        reason.retain(|c| c != '\r' && c != '\n');
        if reason.len() > 120 {
            let mut cut = 120;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        ParseError { reason }
    }

    /// The reason, one line.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for ParseError {}

/// Parses one whole message (a datagram, or one frame cut from a stream).
pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(ParseError::new("message too large"));
    }
    // RFC 3261 §7.5: CRLFs before the start line are ignored.
    let mut bytes = bytes;
    while let Some(rest) = bytes.strip_prefix(b"\r\n") {
        bytes = rest;
    }
    let head_end = find(bytes, b"\r\n\r\n").ok_or_else(|| {
        if find(bytes, b"\n\n").is_some() {
            ParseError::new("lines end in a bare LF, not CRLF")
        } else {
            ParseError::new("head not terminated by an empty line")
        }
    })?;
    let head = bytes.get(..head_end).unwrap_or_default();
    let body = bytes.get(head_end + 4..).unwrap_or_default();
    check_head_bytes(head)?;
    let head = std::str::from_utf8(head)
        .map_err(|e| ParseError::new(format!("head is not UTF-8 (byte {})", e.valid_up_to())))?;
    let (line, block) = head.split_once("\r\n").unwrap_or((head, ""));
    let start = start_line(line)?;
    let headers = split_headers(block)?;
    let (headers, body) = body_of(headers, body)?;
    match start {
        StartLine::Request { method, uri } => Ok(Message::Request(Request {
            method: Method::from_token(method),
            uri: Uri::parse(uri).map_err(|e| ParseError::new(format!("bad Request-URI: {e}")))?,
            headers,
            body,
        })),
        StartLine::Response { status, reason } => Ok(Message::Response(Response {
            status,
            reason: reason.to_string(),
            headers,
            body,
        })),
    }
}

fn short(s: &str) -> &str {
    let end = s.char_indices().nth(80).map(|(i, _)| i).unwrap_or(s.len());
    s.get(..end).unwrap_or("")
}

/// The first position of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The head is text (RFC 3261 §7.3.1, §25.1): no control characters but
/// HTAB, and CR and LF only as a pair ending a line. rsip would take a NUL
/// inside a header value as part of it.
fn check_head_bytes(head: &[u8]) -> Result<(), ParseError> {
    let mut prev = 0u8;
    for (i, &b) in head.iter().enumerate() {
        match b {
            b'\n' if prev != b'\r' => return Err(ParseError::new("bare LF in head")),
            b'\r' if head.get(i + 1) != Some(&b'\n') => {
                return Err(ParseError::new("bare CR in head"))
            }
            b'\t' | b'\r' | b'\n' => {}
            0..=0x1f | 0x7f => {
                return Err(ParseError::new(format!(
                    "control character 0x{b:02x} in head at byte {i}"
                )))
            }
            _ => {}
        }
        prev = b;
    }
    Ok(())
}

/// `token` characters (RFC 3261 §25.1): methods and header names.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

enum StartLine<'a> {
    Request { method: &'a str, uri: &'a str },
    Response { status: u16, reason: &'a str },
}

/// Reads `Method SP Request-URI SP SIP-Version` or
/// `SIP-Version SP Status-Code SP Reason-Phrase` (RFC 3261 §7.1, §7.2), one
/// space each; a response is told by its leading `SIP/`.
fn start_line(line: &str) -> Result<StartLine<'_>, ParseError> {
    let bad = |what: &str| ParseError::new(format!("bad {what} {:?}", short(line)));
    let is_response = line
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"));
    if is_response {
        let (version, rest) = line.split_once(' ').ok_or_else(|| bad("status line"))?;
        check_version(version)?;
        let (code, reason) = rest.split_once(' ').ok_or_else(|| bad("status line"))?;
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::new(format!(
                "bad status code {:?}",
                short(code)
            )));
        }
        let status: u16 = code
            .parse()
            .map_err(|_| ParseError::new(format!("bad status code {:?}", short(code))))?;
        if !(100..=699).contains(&status) {
            return Err(ParseError::new(format!(
                "status code {status} out of range"
            )));
        }
        return Ok(StartLine::Response { status, reason });
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("request line"));
    };
    if method.is_empty() || !method.bytes().all(is_token) {
        return Err(ParseError::new(format!("bad method {:?}", short(method))));
    }
    if uri.is_empty() {
        return Err(bad("request line"));
    }
    check_version(version)?;
    Ok(StartLine::Request { method, uri })
}

/// Only SIP/2.0 is spoken (its letters in any case, RFC 3261 §7.1); another
/// version is the peer's 505.
fn check_version(v: &str) -> Result<(), ParseError> {
    if v.eq_ignore_ascii_case("SIP/2.0") {
        return Ok(());
    }
    let what = if v.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("SIP/")) {
        "unsupported SIP version"
    } else {
        "bad SIP version"
    };
    Err(ParseError::new(format!("{what} {:?}", short(v))))
}

/// Splits the header lines (the head after the start line, without its
/// final CRLF) into names and values, joining folded lines.
fn split_headers(block: &str) -> Result<Headers, ParseError> {
    let mut pairs: Vec<(&str, String)> = Vec::with_capacity(16);
    for line in block.split_terminator("\r\n") {
        if line.starts_with([' ', '\t']) {
            // RFC 3261 §7.3.1: a folded line continues the previous value;
            // the line break and the white space around it become one SP.
            let Some((_, value)) = pairs.last_mut() else {
                return Err(ParseError::new("continuation line after the start line"));
            };
            let kept = value.trim_end_matches([' ', '\t']).len();
            value.truncate(kept);
            value.push(' ');
            value.push_str(line.trim_start_matches([' ', '\t']));
            continue;
        }
        let name_len = line
            .bytes()
            .position(|b| !is_token(b))
            .unwrap_or(line.len());
        let (name, rest) = line.split_at(name_len);
        let value = rest.trim_start_matches([' ', '\t']).strip_prefix(':');
        let value = match value {
            Some(v) if !name.is_empty() => v,
            _ if !line.contains(':') => {
                return Err(ParseError::new(format!(
                    "header line without ':': {:?}",
                    short(line)
                )))
            }
            _ => {
                return Err(ParseError::new(format!(
                    "bad header name in {:?}",
                    short(line)
                )))
            }
        };
        pairs.push((name, value.to_string()));
    }
    Ok(convert_headers(pairs))
}

/// Splits values of the headers that may carry several comma-separated
/// entries, so each entry is one [`Header`].
const MULTI: &[&str] = &["Via", "Route", "Record-Route", "Contact"];

fn convert_headers(pairs: Vec<(&str, String)>) -> Headers {
    let mut out = Vec::with_capacity(pairs.len() + 4);
    for (name, value) in pairs {
        let name = canonical_name(name);
        let value = value.trim();
        if MULTI.iter().any(|m| m.eq_ignore_ascii_case(name))
            && !(name == "Contact" && value == "*")
        {
            for part in super::types::split_outside_quotes(value, ',') {
                let part = part.trim();
                if !part.is_empty() {
                    out.push(Header {
                        name: name.to_string(),
                        value: part.to_string(),
                    });
                }
            }
        } else {
            out.push(Header {
                name: name.to_string(),
                value: value.to_string(),
            });
        }
    }
    Headers(out)
}

/// Cuts the body by Content-Length (RFC 3261 §18.3: a longer body is
/// truncated to it on UDP, a shorter one is an error; every Content-Length
/// must agree, or a stream peer could smuggle a second message) and takes
/// Content-Length out of the header list.
fn body_of(mut headers: Headers, body: &[u8]) -> Result<(Headers, Bytes), ParseError> {
    let mut length: Option<usize> = None;
    for v in headers.get_all("Content-Length") {
        let bad = || ParseError::new(format!("bad Content-Length {:?}", short(v)));
        // 1*DIGIT: no sign, no space inside (usize::from_str would take "+4").
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: usize = v.parse().map_err(|_| bad())?;
        if length.is_some_and(|l| l != n) {
            return Err(ParseError::new("conflicting Content-Length values"));
        }
        length = Some(n);
    }
    headers.remove("Content-Length");
    let body = match length {
        Some(n) => body
            .get(..n)
            .ok_or_else(|| ParseError::new("body shorter than Content-Length"))?,
        None => body,
    };
    Ok((headers, Bytes::copy_from_slice(body)))
}

/// The standard reason phrase of a status code.
pub fn default_reason(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        421 => "Extension Required",
        422 => "Session Interval Too Small",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => match status / 100 {
            1 => "Session Progress",
            2 => "OK",
            3 => "Redirection",
            4 => "Request Failure",
            5 => "Server Error",
            _ => "Global Failure",
        },
    }
}

fn write_headers(out: &mut BytesMut, headers: &Headers, body: &Bytes) {
    for h in &headers.0 {
        if h.name.eq_ignore_ascii_case("Content-Length") {
            continue;
        }
        out.put_slice(h.name.as_bytes());
        out.put_slice(b": ");
        out.put_slice(h.value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"Content-Length: ");
    out.put_slice(body.len().to_string().as_bytes());
    out.put_slice(b"\r\n\r\n");
    out.put_slice(body);
}

fn header<'a>(headers: &'a Headers, name: &str) -> Result<&'a str, ParseError> {
    headers
        .get(name)
        .ok_or_else(|| ParseError::new(format!("missing {name}")))
}

macro_rules! common_accessors {
    () => {
        /// The top Via.
        pub fn via_top(&self) -> Result<Via, ParseError> {
            Via::parse(header(&self.headers, "Via")?)
        }

        /// The Call-ID.
        pub fn call_id(&self) -> Option<&str> {
            self.headers.get("Call-ID")
        }

        /// The From header.
        pub fn from(&self) -> Result<NameAddr, ParseError> {
            NameAddr::parse(header(&self.headers, "From")?)
                .map_err(|e| ParseError::new(format!("bad From: {e}")))
        }

        /// The To header.
        pub fn to(&self) -> Result<NameAddr, ParseError> {
            NameAddr::parse(header(&self.headers, "To")?)
                .map_err(|e| ParseError::new(format!("bad To: {e}")))
        }

        /// The CSeq header.
        pub fn cseq(&self) -> Result<CSeq, ParseError> {
            CSeq::parse(header(&self.headers, "CSeq")?)
                .map_err(|e| ParseError::new(format!("bad CSeq: {e}")))
        }

        /// The first Contact, if any.
        pub fn contact(&self) -> Option<Result<NameAddr, ParseError>> {
            self.headers.get("Contact").map(|c| {
                NameAddr::parse(c).map_err(|e| ParseError::new(format!("bad Contact: {e}")))
            })
        }
    };
}

impl Request {
    /// A request with no headers and no body.
    pub fn new(method: Method, uri: Uri) -> Request {
        Request {
            method,
            uri,
            headers: Headers::default(),
            body: Bytes::new(),
        }
    }

    /// The wire form; Content-Length is written from the body.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(512 + self.body.len());
        out.put_slice(self.method.as_str().as_bytes());
        out.put_u8(b' ');
        out.put_slice(self.uri.to_string().as_bytes());
        out.put_slice(b" SIP/2.0\r\n");
        write_headers(&mut out, &self.headers, &self.body);
        out.freeze()
    }

    common_accessors!();

    /// Max-Forwards, `None` when absent.
    pub fn max_forwards(&self) -> Result<Option<u32>, ParseError> {
        match self.headers.get("Max-Forwards") {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse::<u32>()
                .map(Some)
                .map_err(|_| ParseError::new(format!("bad Max-Forwards {:?}", short(v)))),
        }
    }

    /// The checks of RFC 3261 §8.2 that come before any processing: the
    /// mandatory headers are present, single and readable, CSeq names the
    /// request's method, and every Contact is readable. The error is the
    /// 400's reason.
    pub fn validate(&self) -> Result<(), ParseError> {
        self.via_top()
            .map_err(|e| ParseError::new(format!("bad Via: {e}")))?;
        // A second From, To, Call-ID, CSeq or Max-Forwards leaves it open
        // which one a dialog or a loop check would read (RFC 3261 §7.3.1:
        // only list headers may repeat).
        for name in ["From", "To", "Call-ID", "CSeq", "Max-Forwards"] {
            if self.headers.get_all(name).nth(1).is_some() {
                return Err(ParseError::new(format!("more than one {name}")));
            }
        }
        self.from()?;
        self.to()?;
        if self.call_id().map(str::trim).is_none_or(str::is_empty) {
            return Err(ParseError::new("missing Call-ID"));
        }
        let cseq = self.cseq()?;
        if cseq.method != self.method {
            return Err(ParseError::new("CSeq method does not match request"));
        }
        self.max_forwards()?;
        for c in self.headers.get_all("Contact").filter(|c| *c != "*") {
            NameAddr::parse(c).map_err(|e| ParseError::new(format!("bad Contact: {e}")))?;
        }
        Ok(())
    }
}

impl Response {
    /// A response to `req` (RFC 3261 §8.2.6.2): Via, From, To, Call-ID and
    /// CSeq copied, the standard reason phrase. The To tag is the caller's.
    pub fn for_request(req: &Request, status: u16) -> Response {
        let mut headers = Headers::default();
        for h in &req.headers.0 {
            if ["Via", "From", "To", "Call-ID", "CSeq"]
                .iter()
                .any(|n| h.name.eq_ignore_ascii_case(n))
            {
                headers.0.push(h.clone());
            }
        }
        Response {
            status,
            reason: default_reason(status).to_string(),
            headers,
            body: Bytes::new(),
        }
    }

    /// The wire form; Content-Length is written from the body.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(512 + self.body.len());
        out.put_slice(b"SIP/2.0 ");
        out.put_slice(self.status.to_string().as_bytes());
        out.put_u8(b' ');
        out.put_slice(self.reason.as_bytes());
        out.put_slice(b"\r\n");
        write_headers(&mut out, &self.headers, &self.body);
        out.freeze()
    }

    common_accessors!();
}

impl Message {
    /// The wire form.
    pub fn to_bytes(&self) -> Bytes {
        match self {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:bob@192.0.2.4 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKnashds8;rport\r\n\
        Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKother, SIP/2.0/TCP 10.0.0.8;branch=z9hG4bKthird\r\n\
        Max-Forwards: 70\r\n\
        To: Bob <sip:bob@example.com>\r\n\
        f: Alice <sip:alice@example.com>;tag=1928301774\r\n\
        i: a84b4c76e66710\r\n\
        CSeq: 314159 INVITE\r\n\
        Contact: <sip:alice@10.0.0.1:5060>\r\n\
        Content-Type: application/sdp\r\n\
        Content-Length: 4\r\n\r\nv=0\n";

    #[test]
    fn parses_request_and_splits_vias() {
        let Ok(Message::Request(r)) = parse(INVITE.as_bytes()) else {
            panic!("should parse");
        };
        assert_eq!(r.method, Method::Invite);
        assert_eq!(r.headers.get_all("via").count(), 3);
        assert_eq!(r.call_id(), Some("a84b4c76e66710"));
        assert_eq!(r.from().expect("from").tag(), Some("1928301774"));
        assert_eq!(r.body.as_ref(), b"v=0\n");
        assert_eq!(r.max_forwards().expect("mf"), Some(70));
        r.validate().expect("valid");
        // Round trip through our serializer and our parser again.
        let Ok(Message::Request(again)) = parse(&r.to_bytes()) else {
            panic!("round trip");
        };
        assert_eq!(again, r);
    }

    #[test]
    fn response_for_request_copies_the_right_headers() {
        let Ok(Message::Request(r)) = parse(INVITE.as_bytes()) else {
            panic!("should parse");
        };
        let resp = Response::for_request(&r, 486);
        assert_eq!(resp.reason, "Busy Here");
        assert_eq!(resp.headers.get_all("Via").count(), 3);
        assert!(resp.headers.get("Contact").is_none());
        let Ok(Message::Response(back)) = parse(&resp.to_bytes()) else {
            panic!("response parses");
        };
        assert_eq!(back.status, 486);
        assert_eq!(back.cseq().expect("cseq").seq, 314159);
    }

    #[test]
    fn validate_names_the_problem() {
        let missing = INVITE.replace("i: a84b4c76e66710\r\n", "");
        let Ok(Message::Request(r)) = parse(missing.as_bytes()) else {
            panic!("parses without Call-ID");
        };
        assert_eq!(
            r.validate().expect_err("invalid").reason(),
            "missing Call-ID"
        );
        let wrong = INVITE.replace("314159 INVITE", "314159 BYE");
        let Ok(Message::Request(r)) = parse(wrong.as_bytes()) else {
            panic!("parses");
        };
        assert!(r.validate().is_err());
    }

    #[test]
    fn short_body_is_an_error() {
        let bad = INVITE.replace("Content-Length: 4", "Content-Length: 40");
        assert!(parse(bad.as_bytes()).is_err());
    }
}
