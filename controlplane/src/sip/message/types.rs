//! Typed header views: URIs, name-addrs, Via, CSeq.
//!
//! Each view parses from the header value the message stores and prints back
//! in a normal form. They are small and hand-written on purpose: they run on
//! every message and only the parts the B2BUA reads are kept typed; the rest
//! of a value stays in [`Params`].

#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use std::fmt;

use super::{Method, ParseError};

/// `;name=value` parameters in order. A value of `None` is a flag (`;lr`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(pub Vec<(String, Option<String>)>);

impl Params {
    /// Parses `;a=b;c` (the leading `;` optional).
    pub fn parse(s: &str) -> Params {
        let mut out = Vec::new();
        for part in split_outside_quotes(s, ';') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            match part.split_once('=') {
                Some((k, v)) => out.push((k.trim().to_string(), Some(v.trim().to_string()))),
                None => out.push((part.to_string(), None)),
            }
        }
        Params(out)
    }

    /// Whether `name` is present (case-insensitive).
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
    }

    /// The value of `name`, `None` if absent or a flag.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_deref())
    }

    /// Sets `name` (replacing an existing one, keeping its position).
    pub fn set(&mut self, name: &str, value: Option<String>) {
        if let Some(slot) = self
            .0
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            slot.1 = value;
        } else {
            self.0.push((name.to_string(), value));
        }
    }

    /// Removes `name`.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }
}

impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, v) in &self.0 {
            match v {
                Some(v) => write!(f, ";{k}={v}")?,
                None => write!(f, ";{k}")?,
            }
        }
        Ok(())
    }
}

/// Splits on `sep` except inside double quotes or angle brackets.
pub(crate) fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut in_quotes = false;
    let mut angle = 0u32;
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '<' if !in_quotes => angle += 1,
            '>' if !in_quotes => angle = angle.saturating_sub(1),
            c if c == sep && !in_quotes && angle == 0 => {
                out.push(s.get(start..i).unwrap_or(""));
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(s.get(start..).unwrap_or(""));
    out
}

/// URI schemes Kordon handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UriScheme {
    /// `sip:`
    Sip,
    /// `sips:`
    Sips,
    /// `tel:` (RFC 3966)
    Tel,
}

/// A SIP, SIPS or tel URI. For `tel:` the number is in `user` and `host` is
/// empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    /// The scheme.
    pub scheme: UriScheme,
    /// The user part (unescaped as received; a password is kept in it).
    pub user: Option<String>,
    /// Host name or address (IPv6 with its brackets).
    pub host: String,
    /// Explicit port.
    pub port: Option<u16>,
    /// URI parameters (`;transport=tcp;lr`).
    pub params: Params,
    /// Raw `?headers` part, without the `?`.
    pub headers: Option<String>,
}

impl Uri {
    /// A `sip:user@host:port` URI.
    pub fn sip(user: Option<&str>, host: &str, port: Option<u16>) -> Uri {
        Uri {
            scheme: UriScheme::Sip,
            user: user.map(str::to_string),
            host: host.to_string(),
            port,
            params: Params::default(),
            headers: None,
        }
    }

    /// Parses a URI.
    pub fn parse(s: &str) -> Result<Uri, ParseError> {
        let s = s.trim();
        // Never in a SIP or tel URI unescaped (RFC 3261 §25.1, RFC 3966), and
        // the delimiters of the headers around one: a URI holding one could
        // not be written back inside `<...>`.
        if let Some(c) = s
            .chars()
            .find(|c| matches!(c, '<' | '>' | '"') || c.is_whitespace())
        {
            return Err(ParseError::new(format!("{c:?} in URI {:?}", short(s))));
        }
        let (scheme, rest) = if let Some(r) = strip_prefix_ci(s, "sip:") {
            (UriScheme::Sip, r)
        } else if let Some(r) = strip_prefix_ci(s, "sips:") {
            (UriScheme::Sips, r)
        } else if let Some(r) = strip_prefix_ci(s, "tel:") {
            (UriScheme::Tel, r)
        } else {
            return Err(ParseError::new(format!("unsupported URI scheme in {s:?}")));
        };
        let (rest, headers) = match rest.split_once('?') {
            Some((a, h)) => (a, Some(h.to_string())),
            None => (rest, None),
        };
        if scheme == UriScheme::Tel {
            let (num, params) = match rest.split_once(';') {
                Some((n, p)) => (n, Params::parse(p)),
                None => (rest, Params::default()),
            };
            if num.is_empty() {
                return Err(ParseError::new("empty tel URI"));
            }
            return Ok(Uri {
                scheme,
                user: Some(num.to_string()),
                host: String::new(),
                port: None,
                params,
                headers,
            });
        }
        let (userinfo, hostpart) = match rest.rfind('@') {
            Some(at) => (
                Some(rest.get(..at).unwrap_or("")),
                rest.get(at + 1..).unwrap_or(""),
            ),
            None => (None, rest),
        };
        let (hostport, params) = match hostpart.split_once(';') {
            Some((h, p)) => (h, Params::parse(p)),
            None => (hostpart, Params::default()),
        };
        let (host, port) = split_host_port(hostport)?;
        if let Some(u) = userinfo {
            if u.is_empty() {
                return Err(ParseError::new("empty user part in URI"));
            }
        }
        Ok(Uri {
            scheme,
            user: userinfo.map(str::to_string),
            host,
            port,
            params,
            headers,
        })
    }

    /// `host[:port]`.
    pub fn host_port(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scheme {
            UriScheme::Sip => f.write_str("sip:")?,
            UriScheme::Sips => f.write_str("sips:")?,
            UriScheme::Tel => {
                write!(
                    f,
                    "tel:{}{}",
                    self.user.as_deref().unwrap_or(""),
                    self.params
                )?;
                if let Some(h) = &self.headers {
                    write!(f, "?{h}")?;
                }
                return Ok(());
            }
        }
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        f.write_str(&self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.params)?;
        if let Some(h) = &self.headers {
            write!(f, "?{h}")?;
        }
        Ok(())
    }
}

/// At most 60 characters of `s`, for error reasons.
fn short(s: &str) -> &str {
    let end = s.char_indices().nth(60).map(|(i, _)| i).unwrap_or(s.len());
    s.get(..end).unwrap_or("")
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// Splits `host[:port]`, keeping IPv6 brackets on the host.
fn split_host_port(s: &str) -> Result<(String, Option<u16>), ParseError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(ParseError::new("empty host"));
    }
    if s.starts_with('[') {
        let end = s
            .find(']')
            .ok_or_else(|| ParseError::new(format!("unclosed IPv6 reference in {s:?}")))?;
        let host = s.get(..=end).unwrap_or("");
        let inner = s.get(1..end).unwrap_or("");
        if inner.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(ParseError::new(format!("bad IPv6 reference {host:?}")));
        }
        let rest = s.get(end + 1..).unwrap_or("").trim_start();
        let port = match rest.strip_prefix(':') {
            Some(p) => Some(parse_port(p)?),
            None if rest.is_empty() => None,
            None => return Err(ParseError::new(format!("garbage after host in {s:?}"))),
        };
        return Ok((host.to_string(), port));
    }
    let (host, port) = match s.split_once(':') {
        Some((h, p)) => (h.trim_end(), Some(parse_port(p)?)),
        None => (s, None),
    };
    if host.is_empty() {
        return Err(ParseError::new("empty host"));
    }
    // hostname or IPv4address (RFC 3261 §25.1); `_` is not in the grammar
    // but appears in names some PBXes give themselves. Anything else (`<`,
    // `>`, `"`, white space) means the value around the host is broken.
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(ParseError::new(format!("bad host {host:?}")));
    }
    Ok((host.to_string(), port))
}

fn parse_port(p: &str) -> Result<u16, ParseError> {
    p.trim()
        .parse::<u16>()
        .map_err(|_| ParseError::new(format!("bad port {p:?}")))
}

/// `"Display" <uri>;params` (From, To, Contact, Route, P-Asserted-Identity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name, without its quotes and with its `\` escapes undone.
    pub display: Option<String>,
    /// The URI.
    pub uri: Uri,
    /// Header parameters (`;tag=`, `;expires=`).
    pub params: Params,
}

impl NameAddr {
    /// A bare `<uri>`.
    pub fn new(uri: Uri) -> NameAddr {
        NameAddr {
            display: None,
            uri,
            params: Params::default(),
        }
    }

    /// Parses a name-addr or addr-spec.
    pub fn parse(s: &str) -> Result<NameAddr, ParseError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ParseError::new("empty address"));
        }
        if let Some(lt) = find_outside_quotes(s, '<') {
            let display = display_name(s.get(..lt).unwrap_or(""))?;
            let after = s.get(lt + 1..).unwrap_or("");
            let gt = after
                .find('>')
                .ok_or_else(|| ParseError::new(format!("unclosed '<' in {s:?}")))?;
            let uri = Uri::parse(after.get(..gt).unwrap_or(""))?;
            let tail = after.get(gt + 1..).unwrap_or("").trim_start();
            if !tail.is_empty() && !tail.starts_with(';') {
                return Err(ParseError::new(format!("garbage after '>' in {s:?}")));
            }
            Ok(NameAddr {
                display,
                uri,
                params: Params::parse(tail),
            })
        } else {
            // A quote before any parameter is a display name that lost its
            // `<URI>` or its closing quote (a quoted parameter value is fine).
            if s.split(';').next().is_some_and(|u| u.contains('"')) {
                let what = if quotes_closed(s) {
                    "quoted display name without a <URI>"
                } else {
                    "unclosed quote"
                };
                return Err(ParseError::new(format!("{what} in {s:?}")));
            }
            // addr-spec: parameters after the URI belong to the header (RFC 3261 §20.10).
            let (uri, params) = match s.split_once(';') {
                Some((u, p)) => (u, Params::parse(p)),
                None => (s, Params::default()),
            };
            Ok(NameAddr {
                display: None,
                uri: Uri::parse(uri)?,
                params,
            })
        }
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&str> {
        self.params.get("tag")
    }

    /// Sets the `tag` parameter.
    pub fn set_tag(&mut self, tag: &str) {
        self.params.set("tag", Some(tag.to_string()));
    }
}

/// The display name before `<`: a quoted string (its `\x` escapes
/// undone) or tokens separated by white space (RFC 3261 §25.1).
fn display_name(s: &str) -> Result<Option<String>, ParseError> {
    let s = s.trim();
    let Some(quoted) = s.strip_prefix('"') else {
        if s.contains('"') {
            return Err(ParseError::new(format!(
                "stray quote in display name {s:?}"
            )));
        }
        return Ok((!s.is_empty()).then(|| s.to_string()));
    };
    let mut out = String::with_capacity(quoted.len());
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, e)) => out.push(e),
                None => break,
            },
            '"' => {
                if !quoted.get(i + 1..).unwrap_or("").trim().is_empty() {
                    return Err(ParseError::new(format!(
                        "garbage after display name in {s:?}"
                    )));
                }
                return Ok(Some(out));
            }
            c => out.push(c),
        }
    }
    Err(ParseError::new(format!(
        "unclosed quote in display name {s:?}"
    )))
}

/// Whether every `"` in `s` is closed (`\"` inside quotes escapes one).
fn quotes_closed(s: &str) -> bool {
    let mut in_quotes = false;
    let mut escaped = false;
    for c in s.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            _ => {}
        }
    }
    !in_quotes
}

fn find_outside_quotes(s: &str, needle: char) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            c if c == needle && !in_quotes => return Some(i),
            _ => {}
        }
    }
    None
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            // A quoted string with `"` and `\` escaped; CR and LF cannot be
            // escaped (RFC 3261 §25.1 quoted-pair) and are left out.
            f.write_str("\"")?;
            for c in d.chars().filter(|c| *c != '\r' && *c != '\n') {
                if c == '"' || c == '\\' {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
            f.write_str("\" ")?;
        }
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

/// One Via entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Transport token, upper case (`UDP`, `TCP`, `TLS`, `WS`, `WSS`).
    pub transport: String,
    /// sent-by host.
    pub host: String,
    /// sent-by port.
    pub port: Option<u16>,
    /// Parameters (`branch`, `rport`, `received`).
    pub params: Params,
}

impl Via {
    /// Parses `SIP/2.0/UDP host:port;branch=...`. White space may stand
    /// around each `/` (RFC 3261 §25.1: `SLASH = SWS "/" SWS`).
    pub fn parse(s: &str) -> Result<Via, ParseError> {
        let s = s.trim();
        let bad = || ParseError::new(format!("bad Via protocol in {:?}", short(s)));
        let mut rest = s;
        let mut fields = ["", "", ""];
        for (i, field) in fields.iter_mut().enumerate() {
            if i > 0 {
                rest = rest
                    .trim_start()
                    .strip_prefix('/')
                    .ok_or_else(bad)?
                    .trim_start();
            }
            let end = rest
                .find(|c: char| c == '/' || c.is_ascii_whitespace())
                .unwrap_or(rest.len());
            *field = rest.get(..end).unwrap_or("");
            rest = rest.get(end..).unwrap_or("");
        }
        let [name, version, transport] = fields;
        if !name.eq_ignore_ascii_case("SIP") || version != "2.0" || transport.is_empty() {
            return Err(bad());
        }
        if !rest.starts_with(|c: char| c.is_ascii_whitespace()) {
            return Err(ParseError::new("Via without sent-by"));
        }
        let rest = rest.trim();
        let (sent_by, params) = match rest.split_once(';') {
            Some((h, p)) => (h, Params::parse(p)),
            None => (rest, Params::default()),
        };
        let (host, port) = split_host_port(sent_by)?;
        Ok(Via {
            transport: transport.to_ascii_uppercase(),
            host,
            port,
            params,
        })
    }

    /// The branch parameter.
    pub fn branch(&self) -> Option<&str> {
        self.params.get("branch")
    }

    /// `host[:port]` as sent.
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SIP/2.0/{} {}{}",
            self.transport,
            self.sent_by(),
            self.params
        )
    }
}

/// The CSeq header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// Sequence number (< 2^31 per RFC 3261 §8.1.1.5, accepted up to u32).
    pub seq: u32,
    /// The method.
    pub method: Method,
}

impl CSeq {
    /// Parses `314159 INVITE`.
    pub fn parse(s: &str) -> Result<CSeq, ParseError> {
        let mut it = s.split_ascii_whitespace();
        let seq = it
            .next()
            .and_then(|n| n.parse::<u32>().ok())
            .ok_or_else(|| ParseError::new(format!("bad CSeq number in {s:?}")))?;
        let method = it
            .next()
            .ok_or_else(|| ParseError::new("CSeq without method"))?;
        if it.next().is_some() {
            return Err(ParseError::new(format!("trailing garbage in CSeq {s:?}")));
        }
        Ok(CSeq {
            seq,
            method: Method::from_token(method),
        })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_addr_with_tag_and_display() {
        let n = NameAddr::parse("\"Alice, A\" <sip:alice@10.0.0.1:5070;transport=tcp>;tag=abc")
            .expect("valid");
        assert_eq!(n.display.as_deref(), Some("Alice, A"));
        assert_eq!(n.uri.user.as_deref(), Some("alice"));
        assert_eq!(n.uri.port, Some(5070));
        assert_eq!(n.uri.params.get("transport"), Some("tcp"));
        assert_eq!(n.tag(), Some("abc"));
        let again = NameAddr::parse(&n.to_string()).expect("round trip");
        assert_eq!(again, n);
    }

    #[test]
    fn addr_spec_params_belong_to_header() {
        let n = NameAddr::parse("sip:bob@example.com;tag=x").expect("valid");
        assert_eq!(n.tag(), Some("x"));
        assert!(n.uri.params.0.is_empty());
    }

    #[test]
    fn parses_via_with_rport_flag() {
        let v = Via::parse("SIP/2.0/udp 192.0.2.1:5060;branch=z9hG4bK1;rport").expect("valid");
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.port, Some(5060));
        assert_eq!(v.branch(), Some("z9hG4bK1"));
        assert!(v.params.has("rport"));
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport"
        );
    }

    #[test]
    fn rejects_bad_inputs_without_panicking() {
        for s in [
            "",
            "SIP/2.0/UDP",
            "SIP/3.0/UDP a",
            "SIP/2.0/UDP [::1",
            "SIP/2.0/UDP a:99999",
        ] {
            assert!(Via::parse(s).is_err(), "{s}");
        }
        for s in ["", "http://x", "sip:", "sip:@h", "sip:a@h:x", "<sip:a@h"] {
            assert!(NameAddr::parse(s).is_err(), "{s}");
        }
        for s in ["", "x INVITE", "1", "1 INVITE x"] {
            assert!(CSeq::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn tel_and_ipv6_uris() {
        let t = Uri::parse("tel:+74951234567;phone-context=x").expect("tel");
        assert_eq!(t.user.as_deref(), Some("+74951234567"));
        let v6 = Uri::parse("sip:a@[2001:db8::1]:5062").expect("v6");
        assert_eq!(v6.host, "[2001:db8::1]");
        assert_eq!(v6.port, Some(5062));
    }
}
