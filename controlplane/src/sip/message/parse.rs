//! Parsing with rsip into [`super::Message`], serialization, and the checks
//! that decide between handling a request and answering it with a 400.
//!
//! rsip tokenizes the start line and header lines; the values are kept as
//! text and read through the typed views in `types.rs` when needed. rsip
//! forgets the reason phrase of a known status code (it maps `180 Ringing`
//! onto an enum), so responses come out with the standard phrase.

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
    // rsip knows a fixed list of methods and refuses the rest, though RFC
    // 3261 §7.1 allows extension methods (which deserve a 501, not
    // silence): such a request is parsed with a stand-in method and given
    // its own back.
    let mut extension: Option<String> = None;
    let msg = match rsip::SipMessage::try_from(bytes) {
        Ok(m) => m,
        Err(e) => match extension_method(bytes) {
            Some((token, rest)) => {
                let mut patched = Vec::with_capacity(rest.len() + 8);
                patched.extend_from_slice(b"OPTIONS");
                patched.extend_from_slice(rest);
                extension = Some(token);
                rsip::SipMessage::try_from(patched.as_slice()).map_err(|e| {
                    ParseError::new(format!("unparseable message: {}", short(&e.to_string())))
                })?
            }
            None => {
                return Err(ParseError::new(format!(
                    "unparseable message: {}",
                    short(&e.to_string())
                )))
            }
        },
    };
    match msg {
        rsip::SipMessage::Request(r) => {
            let method = match extension {
                Some(token) => Method::Other(token),
                None => Method::from_token(&r.method.to_string()),
            };
            let uri = Uri::parse(&r.uri.to_string())?;
            let headers = convert_headers(&r.headers)?;
            let body = body_of(&headers, r.body)?;
            Ok(Message::Request(Request {
                method,
                uri,
                headers,
                body,
            }))
        }
        rsip::SipMessage::Response(r) => {
            let status = r.status_code.code();
            if !(100..=699).contains(&status) {
                return Err(ParseError::new(format!(
                    "status code {status} out of range"
                )));
            }
            let reason = match &r.status_code {
                rsip::StatusCode::Other(_, reason) => reason.clone(),
                _ => default_reason(status).to_string(),
            };
            let headers = convert_headers(&r.headers)?;
            let body = body_of(&headers, r.body)?;
            Ok(Message::Response(Response {
                status,
                reason,
                headers,
                body,
            }))
        }
    }
}

/// An extension method rsip does not know: `(token, the bytes after it)`,
/// when the request line starts with an RFC 3261 token that is not one of
/// the methods rsip parses.
fn extension_method(bytes: &[u8]) -> Option<(String, &[u8])> {
    let end = bytes.iter().position(|b| *b == b' ')?;
    let (token, rest) = bytes.split_at_checked(end)?;
    let is_token = |b: &u8| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(b);
    if token.is_empty() || token.len() > 32 || !token.iter().all(is_token) {
        return None;
    }
    let token = std::str::from_utf8(token).ok()?;
    if !matches!(Method::from_token(token), Method::Other(_)) {
        return None;
    }
    Some((token.to_string(), rest))
}

fn short(s: &str) -> &str {
    let end = s.char_indices().nth(80).map(|(i, _)| i).unwrap_or(s.len());
    s.get(..end).unwrap_or("")
}

/// Splits values of the headers that may carry several comma-separated
/// entries, so each entry is one [`Header`].
const MULTI: &[&str] = &["Via", "Route", "Record-Route", "Contact"];

fn convert_headers(h: &rsip::Headers) -> Result<Headers, ParseError> {
    let mut out = Vec::with_capacity(16);
    for header in h.iter() {
        let line = header.to_string();
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| ParseError::new(format!("header line without ':': {}", short(&line))))?;
        let name = canonical_name(name.trim());
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(ParseError::new(format!(
                "bad header name {:?}",
                short(name)
            )));
        }
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
    Ok(Headers(out))
}

/// Checks the body against Content-Length (RFC 3261 §18.3: a longer body is
/// truncated to it on UDP, a shorter one is an error).
fn body_of(headers: &Headers, body: Vec<u8>) -> Result<Bytes, ParseError> {
    match headers.get("Content-Length") {
        Some(v) => {
            let n: usize = v
                .trim()
                .parse()
                .map_err(|_| ParseError::new(format!("bad Content-Length {:?}", short(v))))?;
            if n > body.len() {
                return Err(ParseError::new("body shorter than Content-Length"));
            }
            let mut body = body;
            body.truncate(n);
            Ok(Bytes::from(body))
        }
        None => Ok(Bytes::from(body)),
    }
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
    /// mandatory headers are present and readable, and CSeq names the
    /// request's method. The error is the 400's reason.
    pub fn validate(&self) -> Result<(), ParseError> {
        self.via_top()
            .map_err(|e| ParseError::new(format!("bad Via: {e}")))?;
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
        if let Some(c) = self.contact() {
            if self.headers.get("Contact") != Some("*") {
                c?;
            }
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
        // Round trip through our serializer and rsip again.
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
    fn extension_methods_parse() {
        let text = INVITE
            .replacen("INVITE sip:", "FOO sip:", 1)
            .replace("314159 INVITE", "314159 FOO");
        let Ok(Message::Request(r)) = parse(text.as_bytes()) else {
            panic!("an extension method parses");
        };
        assert_eq!(r.method, Method::Other("FOO".into()));
        r.validate().expect("valid");
        assert!(r
            .to_bytes()
            .starts_with(b"FOO sip:bob@192.0.2.4 SIP/2.0\r\n"));
    }

    #[test]
    fn short_body_is_an_error() {
        let bad = INVITE.replace("Content-Length: 4", "Content-Length: 40");
        assert!(parse(bad.as_bytes()).is_err());
    }
}
