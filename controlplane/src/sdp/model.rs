//! The SDP data model: a session description as ordered lines, with typed
//! views of the lines offer/answer handling reads.
//!
//! The model keeps the text of every line it does not interpret (and of every
//! attribute, typed or not), so serializing a parsed description gives the
//! peer's lines back in their order; only `v=`, `o=`, `c=` and `m=` are
//! rebuilt from their fields (single spaces, canonical numbers and address
//! types).

#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use super::parse;
use super::{SdpError, SdpErrorKind};

/// The address type of a `c=`, `o=` or `a=rtcp:` address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrType {
    /// `IP4`.
    Ip4,
    /// `IP6`.
    Ip6,
}

impl AddrType {
    /// `IP4` or `IP6`.
    pub fn as_str(self) -> &'static str {
        match self {
            AddrType::Ip4 => "IP4",
            AddrType::Ip6 => "IP6",
        }
    }

    /// The address type of an IP address.
    pub fn of(ip: IpAddr) -> AddrType {
        match ip {
            IpAddr::V4(_) => AddrType::Ip4,
            IpAddr::V6(_) => AddrType::Ip6,
        }
    }
}

impl fmt::Display for AddrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A connection address: the value of `c=<nettype> <addrtype> <address>`
/// (RFC 8866 section 5.7), also used by `a=rtcp:`.
///
/// Made only by the parser, [`Connection::from_ip`] and [`Connection::new`],
/// so every field is a non-empty token and an IP literal matches its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub(super) nettype: String,
    pub(super) addrtype: AddrType,
    pub(super) address: String,
}

impl Connection {
    /// `IN IP4 <ip>` or `IN IP6 <ip>`.
    pub fn from_ip(ip: IpAddr) -> Connection {
        Connection {
            nettype: "IN".to_owned(),
            addrtype: AddrType::of(ip),
            address: ip.to_string(),
        }
    }

    /// Any connection, such as a host name (`IN IP4 media.example.net`).
    /// Refuses fields with white space or control characters (text from an
    /// ng flag must not inject lines) and an IP literal of the other type.
    pub fn new(nettype: &str, addrtype: AddrType, address: &str) -> Result<Connection, SdpError> {
        if !is_token(nettype) || !is_token(address) {
            return Err(SdpError::api(SdpErrorKind::NotAToken("connection field")));
        }
        parse::connection_fields(nettype, addrtype.as_str(), address, "c=").map_err(SdpError::api)
    }

    /// `IN` in practice.
    pub fn nettype(&self) -> &str {
        &self.nettype
    }

    /// `IP4` or `IP6`.
    pub fn addrtype(&self) -> AddrType {
        self.addrtype
    }

    /// An IP literal, a host name, or a multicast address with `/ttl[/n]`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The address as an IP, when it is an IP literal (a multicast `/ttl`
    /// suffix is ignored). `None` for a host name, which an SBC does not
    /// resolve.
    pub fn ip(&self) -> Option<IpAddr> {
        let literal = self.address.split('/').next().unwrap_or_default();
        IpAddr::from_str(literal).ok()
    }

    /// `0.0.0.0` or `::`: the pre-RFC 3264 way of putting a call on hold.
    pub fn is_unspecified(&self) -> bool {
        self.ip().is_some_and(|ip| ip.is_unspecified())
    }
}

/// A non-empty field given through the API: no space and no ASCII control
/// character (so no field separator, CR or LF). Stricter than what the
/// parser takes from a peer, which only splits on white space.
pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty() && !s.contains(|c: char| c == ' ' || c.is_ascii_control())
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.nettype, self.addrtype, self.address)
    }
}

/// The `o=` line (RFC 8866 section 5.2):
/// `<username> <sess-id> <sess-version> <nettype> <addrtype> <address>`.
///
/// Its string fields are non-empty tokens (see [`Connection::new`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub(super) username: String,
    pub(super) session_id: String,
    pub(super) session_version: u64,
    pub(super) nettype: String,
    pub(super) addrtype: AddrType,
    pub(super) address: String,
}

impl Origin {
    /// Often `-`.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Numeric by the RFC; kept as written.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Increases with every change of the description (RFC 3264 section 8).
    pub fn session_version(&self) -> u64 {
        self.session_version
    }

    /// `IN` in practice.
    pub fn nettype(&self) -> &str {
        &self.nettype
    }

    /// `IP4` or `IP6`.
    pub fn addrtype(&self) -> AddrType {
        self.addrtype
    }

    /// The originator's address or host name: topology to hide.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Sets the username (topology hiding uses `-`).
    pub fn set_username(&mut self, username: &str) -> Result<(), SdpError> {
        self.username = token(username, "o= username")?;
        Ok(())
    }

    /// Sets the session id (a B2BUA gives each leg its own).
    pub fn set_session_id(&mut self, session_id: &str) -> Result<(), SdpError> {
        self.session_id = token(session_id, "o= session id")?;
        Ok(())
    }

    /// Sets the session version.
    pub fn set_session_version(&mut self, version: u64) {
        self.session_version = version;
    }

    /// Sets the address and its type.
    pub fn set_address(&mut self, ip: IpAddr) {
        self.addrtype = AddrType::of(ip);
        self.address = ip.to_string();
    }
}

fn token(s: &str, what: &'static str) -> Result<String, SdpError> {
    if is_token(s) {
        Ok(s.to_owned())
    } else {
        Err(SdpError::api(SdpErrorKind::NotAToken(what)))
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {} {}",
            self.username,
            self.session_id,
            self.session_version,
            self.nettype,
            self.addrtype,
            self.address
        )
    }
}

/// An `a=` line: `a=<name>` (a flag) or `a=<name>:<value>`, kept as written.
///
/// Attributes are only made by the parser and by the typed rewrite methods,
/// both of which validate them, so a name is never empty and neither part
/// holds `:` in the name, CR, LF or NUL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub(super) name: String,
    pub(super) value: Option<String>,
}

impl Attribute {
    /// The name (before the first `:`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value (after the first `:`), `None` for a flag such as `a=rtcp-mux`.
    pub fn value(&self) -> Option<&str> {
        self.value.as_deref()
    }

    /// Whether this is one of the ICE attributes of RFC 8839 section 5.
    pub fn is_ice(&self) -> bool {
        ICE_ATTRIBUTES.contains(&self.name.as_str())
    }

    /// The direction this attribute sets, if it is one.
    pub fn direction(&self) -> Option<Direction> {
        Direction::from_name(&self.name)
    }

    pub(super) fn flag(name: &str) -> Attribute {
        Attribute {
            name: name.to_owned(),
            value: None,
        }
    }

    pub(super) fn with_value(name: &str, value: String) -> Attribute {
        Attribute {
            name: name.to_owned(),
            value: Some(value),
        }
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}:{}", self.name, v),
            None => f.write_str(&self.name),
        }
    }
}

/// The ICE attributes of RFC 8839 section 5; [`crate::sdp::Sdp::remove_ice`]
/// removes these.
pub const ICE_ATTRIBUTES: &[&str] = &[
    "candidate",
    "remote-candidates",
    "end-of-candidates",
    "ice-lite",
    "ice-mismatch",
    "ice-ufrag",
    "ice-pwd",
    "ice-pacing",
    "ice-options",
];

/// Any other line, kept verbatim: `s=`, `t=`, `b=`, `i=`, `k=`, ...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherLine {
    pub(super) kind: char,
    pub(super) value: String,
}

impl OtherLine {
    /// The type letter.
    pub fn kind(&self) -> char {
        self.kind
    }

    /// Everything after `=` (trailing white space trimmed).
    pub fn value(&self) -> &str {
        &self.value
    }
}

/// One line of a session or media section (other than `v=`, `o=`, `m=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// `c=`.
    Connection(Connection),
    /// `a=`.
    Attribute(Attribute),
    /// Anything else, verbatim.
    Other(OtherLine),
}

impl Line {
    /// The attribute, if this is an `a=` line.
    pub fn as_attribute(&self) -> Option<&Attribute> {
        match self {
            Line::Attribute(a) => Some(a),
            _ => None,
        }
    }

    /// The connection, if this is a `c=` line.
    pub fn as_connection(&self) -> Option<&Connection> {
        match self {
            Line::Connection(c) => Some(c),
            _ => None,
        }
    }

    /// The type letter.
    pub fn kind(&self) -> char {
        match self {
            Line::Connection(_) => 'c',
            Line::Attribute(_) => 'a',
            Line::Other(o) => o.kind,
        }
    }

    pub(super) fn is_attribute(&self, name: &str) -> bool {
        self.as_attribute().is_some_and(|a| a.name == name)
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Line::Connection(c) => write!(f, "c={c}"),
            Line::Attribute(a) => write!(f, "a={a}"),
            Line::Other(o) => write!(f, "{}={}", o.kind, o.value),
        }
    }
}

/// A media direction attribute (RFC 3264 section 5.1, RFC 8866 section 6.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `a=sendrecv`, the default.
    SendRecv,
    /// `a=sendonly`.
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`.
    Inactive,
}

impl Direction {
    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction an attribute name sets, if it is one.
    pub fn from_name(name: &str) -> Option<Direction> {
        match name {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    /// The direction as seen from the other side: what an answer mirrors
    /// (RFC 3264 section 6.1: sendonly is answered with recvonly).
    pub fn reversed(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `a=rtcp:<port> [<nettype> <addrtype> <address>]` (RFC 3605).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rtcp {
    /// The RTCP port.
    pub port: u16,
    /// The RTCP address, when it differs from the media's `c=`.
    pub connection: Option<Connection>,
}

impl FromStr for Rtcp {
    type Err = SdpErrorKind;

    fn from_str(s: &str) -> Result<Rtcp, SdpErrorKind> {
        parse::rtcp(s)
    }
}

impl fmt::Display for Rtcp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.connection {
            Some(c) => write!(f, "{} {}", self.port, c),
            None => write!(f, "{}", self.port),
        }
    }
}

/// `a=rtpmap:<payload type> <encoding>/<clock rate>[/<params>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rtpmap {
    /// 0 to 127.
    pub payload_type: u8,
    /// `PCMU`, `opus`, `telephone-event`, ... as written.
    pub encoding: String,
    /// In Hz.
    pub clock_rate: u32,
    /// Channels for audio, as written.
    pub params: Option<String>,
}

impl FromStr for Rtpmap {
    type Err = SdpErrorKind;

    fn from_str(s: &str) -> Result<Rtpmap, SdpErrorKind> {
        parse::rtpmap(s)
    }
}

impl fmt::Display for Rtpmap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}/{}",
            self.payload_type, self.encoding, self.clock_rate
        )?;
        match &self.params {
            Some(p) => write!(f, "/{p}"),
            None => Ok(()),
        }
    }
}

/// `a=fmtp:<format> <parameters>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fmtp {
    /// The format (payload type for RTP) it applies to.
    pub format: String,
    /// The parameters, as written (may be empty).
    pub params: String,
}

impl FromStr for Fmtp {
    type Err = SdpErrorKind;

    fn from_str(s: &str) -> Result<Fmtp, SdpErrorKind> {
        parse::fmtp(s)
    }
}

/// An ICE candidate (RFC 8839 section 5.1):
/// `a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type>`,
/// then optionally `raddr <address>`, `rport <port>` and extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Foundation.
    pub foundation: String,
    /// Component id: 1 for RTP, 2 for RTCP.
    pub component: u16,
    /// `UDP` (any case), `TCP`, ...
    pub transport: String,
    /// Priority.
    pub priority: u32,
    /// An IP literal or a host name (browsers send mDNS `.local` names).
    pub address: String,
    /// Port.
    pub port: u16,
    /// `host`, `srflx`, `prflx` or `relay`.
    pub kind: String,
    /// `raddr`.
    pub related_address: Option<String>,
    /// `rport`.
    pub related_port: Option<u16>,
    /// Whatever follows, as written (`generation 0 network-id 1`, ...).
    pub extensions: String,
}

impl FromStr for Candidate {
    type Err = SdpErrorKind;

    fn from_str(s: &str) -> Result<Candidate, SdpErrorKind> {
        parse::candidate(s)
    }
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {} {} typ {}",
            self.foundation,
            self.component,
            self.transport,
            self.priority,
            self.address,
            self.port,
            self.kind
        )?;
        if let Some(a) = &self.related_address {
            write!(f, " raddr {a}")?;
        }
        if let Some(p) = self.related_port {
            write!(f, " rport {p}")?;
        }
        if !self.extensions.is_empty() {
            write!(f, " {}", self.extensions)?;
        }
        Ok(())
    }
}

/// Typed reads of the attributes of one section: the session section (for
/// [`Sdp`]) or a media section (for [`Media`]).
///
/// Typed accessors parse on demand. The parser has refused every malformed
/// `a=rtcp`, `a=rtpmap`, `a=fmtp`, `a=ptime` and `a=candidate`, so on a
/// parsed description they see every one; the first of several is the one
/// that counts for the single-valued ones.
pub trait Attributes {
    /// The section's lines in order.
    fn lines(&self) -> &[Line];

    /// The `a=` lines in order.
    fn attributes(&self) -> impl Iterator<Item = &Attribute> {
        self.lines().iter().filter_map(Line::as_attribute)
    }

    /// The first attribute called `name`.
    fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes().find(|a| a.name == name)
    }

    /// Whether there is an attribute called `name` (flag or not).
    fn has_attribute(&self, name: &str) -> bool {
        self.attribute(name).is_some()
    }

    /// The value of the first attribute called `name` (`None` for a flag).
    fn attribute_value(&self, name: &str) -> Option<&str> {
        self.attribute(name)?.value()
    }

    /// `a=rtcp:` (RFC 3605).
    fn rtcp(&self) -> Option<Rtcp> {
        parse::rtcp(self.attribute_value("rtcp")?).ok()
    }

    /// `a=rtcp-mux` (RFC 5761).
    fn rtcp_mux(&self) -> bool {
        self.has_attribute("rtcp-mux")
    }

    /// The first direction attribute of this section (no inheritance: see
    /// [`Sdp::direction_of`]).
    fn direction(&self) -> Option<Direction> {
        self.attributes().find_map(Attribute::direction)
    }

    /// `a=ice-ufrag:`.
    fn ice_ufrag(&self) -> Option<&str> {
        self.attribute_value("ice-ufrag")
    }

    /// `a=ice-pwd:`.
    fn ice_pwd(&self) -> Option<&str> {
        self.attribute_value("ice-pwd")
    }

    /// `a=ice-options:` (space-separated tokens such as `trickle`).
    fn ice_options(&self) -> Option<&str> {
        self.attribute_value("ice-options")
    }

    /// `a=ice-lite` (a session-level flag).
    fn ice_lite(&self) -> bool {
        self.has_attribute("ice-lite")
    }

    /// The `a=candidate:` lines in order.
    fn candidates(&self) -> impl Iterator<Item = Candidate> {
        self.attributes()
            .filter(|a| a.name == "candidate")
            .filter_map(|a| parse::candidate(a.value()?).ok())
    }

    /// `a=end-of-candidates` (RFC 8840).
    fn end_of_candidates(&self) -> bool {
        self.has_attribute("end-of-candidates")
    }

    /// `a=remote-candidates:`, as written.
    fn remote_candidates(&self) -> Option<&str> {
        self.attribute_value("remote-candidates")
    }

    /// The `a=rtpmap:` lines in order.
    fn rtpmaps(&self) -> impl Iterator<Item = Rtpmap> {
        self.attributes()
            .filter(|a| a.name == "rtpmap")
            .filter_map(|a| parse::rtpmap(a.value()?).ok())
    }

    /// The `a=rtpmap:` of one payload type.
    fn rtpmap(&self, payload_type: u8) -> Option<Rtpmap> {
        self.rtpmaps().find(|r| r.payload_type == payload_type)
    }

    /// The `a=fmtp:` lines in order.
    fn fmtps(&self) -> impl Iterator<Item = Fmtp> {
        self.attributes()
            .filter(|a| a.name == "fmtp")
            .filter_map(|a| parse::fmtp(a.value()?).ok())
    }

    /// The `a=fmtp:` of one format.
    fn fmtp(&self, format: &str) -> Option<Fmtp> {
        self.fmtps().find(|f| f.format == format)
    }

    /// `a=ptime:` (milliseconds, possibly fractional, on the wire).
    fn ptime(&self) -> Option<Duration> {
        parse::ptime(self.attribute_value("ptime")?).ok()
    }
}

/// One media section: the `m=` line and the lines after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub(super) kind: String,
    pub(super) port: u16,
    pub(super) port_count: Option<u16>,
    pub(super) proto: String,
    pub(super) formats: Vec<String>,
    pub(super) lines: Vec<Line>,
}

impl Media {
    /// `audio`, `video`, `application`, ...
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The RTP port; 0 for a rejected or disabled stream.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `/<n>` after the port (RFC 8866 section 5.14), if written.
    pub fn port_count(&self) -> Option<u16> {
        self.port_count
    }

    /// `RTP/AVP`, `UDP/TLS/RTP/SAVPF`, ...
    pub fn proto(&self) -> &str {
        &self.proto
    }

    /// The formats (payload types for RTP), in preference order.
    pub fn formats(&self) -> &[String] {
        &self.formats
    }

    /// Port 0: the stream was rejected (in an answer) or is disabled
    /// (RFC 3264 section 6).
    pub fn is_rejected(&self) -> bool {
        self.port == 0
    }

    /// The media-level `c=` line, if any (the first of several).
    pub fn connection(&self) -> Option<&Connection> {
        self.lines.iter().find_map(Line::as_connection)
    }
}

impl Attributes for Media {
    fn lines(&self) -> &[Line] {
        &self.lines
    }
}

impl fmt::Display for Media {
    /// The `m=` line and the section's lines, each ending in CRLF.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m={} {}", self.kind, self.port)?;
        if let Some(n) = self.port_count {
            write!(f, "/{n}")?;
        }
        write!(f, " {}", self.proto)?;
        for format in &self.formats {
            write!(f, " {format}")?;
        }
        f.write_str("\r\n")?;
        for line in &self.lines {
            write!(f, "{line}\r\n")?;
        }
        Ok(())
    }
}

/// A session description.
///
/// `v=0` is implied (the parser refuses any other version) and `o=` is held
/// as a field, written right after `v=`; every other session-level line is in
/// [`Attributes::lines`] in the order it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdp {
    pub(super) origin: Origin,
    pub(super) lines: Vec<Line>,
    pub(super) media: Vec<Media>,
}

impl Sdp {
    /// The `o=` line.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The `o=` line, to change (topology hiding replaces the address and
    /// often the username too).
    pub fn origin_mut(&mut self) -> &mut Origin {
        &mut self.origin
    }

    /// The `s=` value, if the peer sent one.
    pub fn session_name(&self) -> Option<&str> {
        self.lines.iter().find_map(|l| match l {
            Line::Other(o) if o.kind == 's' => Some(o.value.as_str()),
            _ => None,
        })
    }

    /// The session-level `c=` line, if any.
    pub fn connection(&self) -> Option<&Connection> {
        self.lines.iter().find_map(Line::as_connection)
    }

    /// The media sections in order.
    pub fn media(&self) -> &[Media] {
        &self.media
    }

    /// The media sections, to rewrite (their number cannot change, which
    /// keeps RFC 3264's rule that an answer has as many as the offer).
    pub fn media_mut(&mut self) -> &mut [Media] {
        &mut self.media
    }

    /// The `c=` that applies to `media`: its own, else the session's.
    pub fn connection_for<'a>(&'a self, media: &'a Media) -> Option<&'a Connection> {
        media.connection().or_else(|| self.connection())
    }

    /// Where the peer receives RTP for `media`: the effective `c=` address and
    /// the `m=` port. `None` for a rejected stream, without a `c=`, or when the
    /// address is not an IP literal.
    pub fn rtp_addr(&self, media: &Media) -> Option<SocketAddr> {
        if media.is_rejected() {
            return None;
        }
        let ip = self.connection_for(media)?.ip()?;
        Some(SocketAddr::new(ip, media.port))
    }

    /// Where the peer receives RTCP for `media`: the RTP address with
    /// `a=rtcp-mux` (in an offer that is a proposal the answer must accept,
    /// RFC 5761 section 5.1.1); else `a=rtcp:` (its address, or the effective
    /// `c=`); else the RTP port + 1 (RFC 3550 section 11). `None` when
    /// [`Sdp::rtp_addr`] is, or when port + 1 would pass 65535.
    pub fn rtcp_addr(&self, media: &Media) -> Option<SocketAddr> {
        let rtp = self.rtp_addr(media)?;
        if media.rtcp_mux() {
            return Some(rtp);
        }
        match media.rtcp() {
            Some(Rtcp {
                port,
                connection: Some(c),
            }) => Some(SocketAddr::new(c.ip()?, port)),
            Some(Rtcp {
                port,
                connection: None,
            }) => Some(SocketAddr::new(rtp.ip(), port)),
            None => Some(SocketAddr::new(rtp.ip(), rtp.port().checked_add(1)?)),
        }
    }

    /// The direction that applies to `media`: its own attribute, else the
    /// session-level one, else `sendrecv` (RFC 3264 section 5.1).
    pub fn direction_of(&self, media: &Media) -> Direction {
        media
            .direction()
            .or_else(|| self.direction())
            .unwrap_or(Direction::SendRecv)
    }
}

impl Attributes for Sdp {
    /// The session-level lines (without `v=` and `o=`).
    fn lines(&self) -> &[Line] {
        &self.lines
    }
}

impl fmt::Display for Sdp {
    /// The description with CRLF line endings: `v=0`, `o=`, the session
    /// lines, then each media section.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v=0\r\no={}\r\n", self.origin)?;
        for line in &self.lines {
            write!(f, "{line}\r\n")?;
        }
        for media in &self.media {
            write!(f, "{media}")?;
        }
        Ok(())
    }
}
