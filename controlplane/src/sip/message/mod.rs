//! SIP messages as the rest of Kordon sees them.
//!
//! Parsing is ours (see [`parse`]; rsip was measured and dropped, the
//! reasons are in `parse.rs`); it yields these owned types, which the
//! transaction, dialog and B2BUA layers use. Serialization is
//! [`Request::to_bytes`] / [`Response::to_bytes`], ours: it only writes
//! header lines and is not worth a dependency.
//!
//! Header names are stored in their canonical long form (`v` becomes `Via`),
//! so lookups compare case-insensitively against one spelling. Typed views
//! (`Via`, `NameAddr`, `CSeq`, `Uri`) are parsed on demand from the stored
//! values; a header that fails to parse is the caller's 400.

use std::fmt;

use bytes::Bytes;

#[cfg(test)]
mod conformance;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod parse;
mod types;

pub use parse::{default_reason, parse, ParseError, MAX_MESSAGE_BYTES};
pub use types::{CSeq, NameAddr, Params, Uri, UriScheme, Via};

/// A SIP method.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// INVITE
    Invite,
    /// ACK
    Ack,
    /// BYE
    Bye,
    /// CANCEL
    Cancel,
    /// OPTIONS
    Options,
    /// REGISTER
    Register,
    /// PRACK (RFC 3262)
    Prack,
    /// UPDATE (RFC 3311)
    Update,
    /// INFO
    Info,
    /// REFER
    Refer,
    /// NOTIFY
    Notify,
    /// SUBSCRIBE
    Subscribe,
    /// MESSAGE
    Message,
    /// Any other token.
    Other(String),
}

impl Method {
    /// The method's token.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Prack => "PRACK",
            Method::Update => "UPDATE",
            Method::Info => "INFO",
            Method::Refer => "REFER",
            Method::Notify => "NOTIFY",
            Method::Subscribe => "SUBSCRIBE",
            Method::Message => "MESSAGE",
            Method::Other(s) => s,
        }
    }

    /// Maps a token (case-sensitive, RFC 3261 §7.1) to a method.
    pub fn from_token(s: &str) -> Method {
        match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "PRACK" => Method::Prack,
            "UPDATE" => Method::Update,
            "INFO" => Method::Info,
            "REFER" => Method::Refer,
            "NOTIFY" => Method::Notify,
            "SUBSCRIBE" => Method::Subscribe,
            "MESSAGE" => Method::Message,
            other => Method::Other(other.to_string()),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One header line: canonical name and raw value (trimmed, folded lines
/// joined). Multi-value headers (`Via: a, b`) are split into one entry per
/// value at parse time for Via, Route, Record-Route and Contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Canonical long-form name (`Via`, `Call-ID`, `CSeq`, ...). Unknown
    /// names keep the spelling they arrived with.
    pub name: String,
    /// The value, without leading/trailing whitespace.
    pub value: String,
}

/// An ordered header list with case-insensitive lookup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<Header>);

impl Headers {
    /// First value of `name` (canonical or compact form, any case).
    pub fn get(&self, name: &str) -> Option<&str> {
        let name = canonical_name(name);
        self.0
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// All values of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let name = canonical_name(name).to_string();
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(&name))
            .map(|h| h.value.as_str())
    }

    /// Appends a header.
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.0.push(Header {
            name: canonical_name(name).to_string(),
            value: value.into(),
        });
    }

    /// Inserts a header before all others (a new top Via).
    pub fn push_front(&mut self, name: &str, value: impl Into<String>) {
        self.0.insert(
            0,
            Header {
                name: canonical_name(name).to_string(),
                value: value.into(),
            },
        );
    }

    /// Replaces every value of `name` with one value (appended if absent).
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let canon = canonical_name(name);
        let value = value.into();
        if let Some(pos) = self
            .0
            .iter()
            .position(|h| h.name.eq_ignore_ascii_case(canon))
        {
            self.0.retain({
                let mut i = 0usize;
                move |h| {
                    let keep = i == pos || !h.name.eq_ignore_ascii_case(canon);
                    i += 1;
                    keep
                }
            });
            if let Some(h) = self
                .0
                .iter_mut()
                .find(|h| h.name.eq_ignore_ascii_case(canon))
            {
                h.value = value;
            }
        } else {
            self.push(canon, value);
        }
    }

    /// Removes every value of `name`.
    pub fn remove(&mut self, name: &str) {
        let canon = canonical_name(name);
        self.0.retain(|h| !h.name.eq_ignore_ascii_case(canon));
    }

    /// Removes the first value of `name` (the top Via), returning it.
    pub fn remove_first(&mut self, name: &str) -> Option<String> {
        let canon = canonical_name(name);
        let pos = self
            .0
            .iter()
            .position(|h| h.name.eq_ignore_ascii_case(canon))?;
        Some(self.0.remove(pos).value)
    }

    /// Whether `name` is present.
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Whether a comma-separated token header (Require, Supported, Allow)
    /// lists `token` (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// The spellings [`canonical_name`] returns for the headers read most.
const CANONICAL: &[&str] = &[
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Contact",
    "Content-Length",
    "Content-Type",
    "Max-Forwards",
    "Route",
    "Record-Route",
    "Require",
    "Supported",
    "Allow",
];

/// The canonical long form of a header name (RFC 3261 §7.3.3 compact forms
/// and the usual capitalisations); unknown names are returned unchanged.
pub fn canonical_name(name: &str) -> &str {
    // Fast path: the code asks with the canonical spelling, and most
    // headers arrive in it.
    if let Some(c) = CANONICAL.iter().find(|c| **c == name) {
        return c;
    }
    const TABLE: &[(&str, &str)] = &[
        ("v", "Via"),
        ("via", "Via"),
        ("f", "From"),
        ("from", "From"),
        ("t", "To"),
        ("to", "To"),
        ("i", "Call-ID"),
        ("call-id", "Call-ID"),
        ("cseq", "CSeq"),
        ("m", "Contact"),
        ("contact", "Contact"),
        ("l", "Content-Length"),
        ("content-length", "Content-Length"),
        ("c", "Content-Type"),
        ("content-type", "Content-Type"),
        ("k", "Supported"),
        ("supported", "Supported"),
        ("s", "Subject"),
        ("subject", "Subject"),
        ("e", "Content-Encoding"),
        ("content-encoding", "Content-Encoding"),
        ("x", "Session-Expires"),
        ("session-expires", "Session-Expires"),
        ("r", "Refer-To"),
        ("refer-to", "Refer-To"),
        ("max-forwards", "Max-Forwards"),
        ("route", "Route"),
        ("record-route", "Record-Route"),
        ("require", "Require"),
        ("rseq", "RSeq"),
        ("rack", "RAck"),
        ("min-se", "Min-SE"),
        ("expires", "Expires"),
        ("authorization", "Authorization"),
        ("www-authenticate", "WWW-Authenticate"),
        ("proxy-authorization", "Proxy-Authorization"),
        ("proxy-authenticate", "Proxy-Authenticate"),
        ("p-asserted-identity", "P-Asserted-Identity"),
        ("p-preferred-identity", "P-Preferred-Identity"),
        ("privacy", "Privacy"),
        ("diversion", "Diversion"),
        ("history-info", "History-Info"),
        ("retry-after", "Retry-After"),
        ("allow", "Allow"),
        ("unsupported", "Unsupported"),
        ("user-agent", "User-Agent"),
        ("server", "Server"),
        ("reason", "Reason"),
    ];
    for (k, v) in TABLE {
        if name.eq_ignore_ascii_case(k) {
            return v;
        }
    }
    name
}

/// A SIP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The Request-URI.
    pub uri: Uri,
    /// Headers in order.
    pub headers: Headers,
    /// The body (Content-Length is written from its length).
    pub body: Bytes,
}

/// A SIP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code, 100..=699.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// Headers in order.
    pub headers: Headers,
    /// The body.
    pub body: Bytes,
}

/// Either kind of message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}
