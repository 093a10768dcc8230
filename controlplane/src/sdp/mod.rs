//! SDP (RFC 8866, RFC 4566): parse a session description, read what offer/
//! answer handling needs, rewrite addresses, ports and attributes, and write
//! it back. The only SDP code in Kordon: the ng front door and the B2BUA both
//! use it.
//!
//! What it does:
//! - [`parse`] text into an [`Sdp`]: the `o=` line, session-level lines, and
//!   [`Media`] sections, every line in its order. `c=`, `a=` and `m=` are
//!   interpreted; any other line, and every attribute's text, is kept as
//!   written. Typed views ([`Attributes`]) cover `a=rtcp` (RFC 3605),
//!   `a=rtcp-mux`, directions, ICE (RFC 8839), `a=rtpmap`, `a=fmtp`,
//!   `a=ptime`.
//! - Effective values for a media section: [`Sdp::rtp_addr`],
//!   [`Sdp::rtcp_addr`], [`Sdp::direction_of`], [`Media::is_rejected`].
//! - Rewrites (connection addresses, ports, `a=rtcp`, `a=rtcp-mux`,
//!   direction, ICE removal, `o=`, proto) that change only the lines they
//!   name and keep every other line in place.
//! - [`Sdp`]'s `Display` writes CRLF line endings.
//!
//! What it does not: offer/answer negotiation (codec choice, matching an
//! answer to its offer), resolving host names, DTLS/SRTP attributes beyond
//! keeping them, or SDP outside SIP/ng (no `v=` other than 0, no multiple
//! sessions in one body).
//!
//! Limits, refused with an error naming them: [`MAX_BYTES`] of text,
//! [`MAX_LINES`] lines, [`MAX_MEDIA`] media sections.
//!
//! Invariants:
//! - Parsing is total: any text gives an [`Sdp`] or an [`SdpError`] naming
//!   the line and the problem, never a panic.
//! - Every [`Sdp`] value (parsed, then changed through this API) writes text
//!   that parses back to an equal value and writes the same text again, as
//!   long as the text stays under [`MAX_BYTES`] (bare-LF input grows by one
//!   byte a line when written with CRLF).
//! - A parsed description has no malformed `a=rtcp`, `a=rtpmap`, `a=fmtp`,
//!   `a=ptime` or `a=candidate`: the typed views see every one.
//! - Every [`SdpError`] is the sender's fault (the access side's or the
//!   upstream's, depending on who sent the body) and retrying the same body
//!   cannot help: SIP answers 400 (malformed body) or 488, ng answers
//!   `result: error` with the error's text as `error-reason`.

#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use std::fmt;

mod model;
mod parse;
mod rewrite;
mod side;
#[cfg(test)]
mod tests;

pub use model::{
    AddrType, Attribute, Attributes, Candidate, Connection, Direction, Fmtp, Line, Media, Origin,
    OtherLine, Rtcp, Rtpmap, Sdp, ICE_ATTRIBUTES,
};
pub use parse::parse;
pub use side::{media_side, unspecified, MediaSide};

/// Largest body [`parse`] accepts, in bytes.
pub const MAX_BYTES: usize = 64 * 1024;
/// Most lines [`parse`] accepts (trailing blank lines aside).
pub const MAX_LINES: usize = 1000;
/// Most media sections [`parse`] accepts.
pub const MAX_MEDIA: usize = 64;

/// Why a session description was refused (or a rewrite argument refused).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SdpError {
    /// 1-based line number, when one line is to blame.
    pub line: Option<usize>,
    /// What is wrong.
    pub kind: SdpErrorKind,
}

impl SdpError {
    pub(crate) fn api(kind: SdpErrorKind) -> SdpError {
        SdpError { line: None, kind }
    }
}

impl fmt::Display for SdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(n) => write!(f, "sdp line {n}: {}", self.kind),
            None => write!(f, "sdp: {}", self.kind),
        }
    }
}

/// What is wrong with a session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdpErrorKind {
    /// Longer than [`MAX_BYTES`].
    TooLarge {
        /// The body's length.
        bytes: usize,
    },
    /// More than [`MAX_LINES`] lines.
    TooManyLines,
    /// More than [`MAX_MEDIA`] media sections.
    TooManyMedia,
    /// The first line is not `v=0`.
    MissingVersion,
    /// No `o=` line before the first `m=`.
    MissingOrigin,
    /// An address type other than `IP4`/`IP6` (the peer's token, cut short).
    UnknownAddrType(String),
    /// An IP literal of the other family than its address type says
    /// (the line type named).
    AddrTypeMismatch(&'static str),
    /// An `m=` port that is not 0-65535, or a bad `/<count>`.
    BadPort(String),
    /// A rewrite argument that would not be one field (white space, control
    /// characters, empty): the field named.
    NotAToken(&'static str),
    /// Any other malformed line; the text says what.
    Malformed(&'static str),
}

impl fmt::Display for SdpErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SdpErrorKind::TooLarge { bytes } => {
                write!(f, "body is {bytes} bytes, over the {MAX_BYTES}-byte limit")
            }
            SdpErrorKind::TooManyLines => write!(f, "more than {MAX_LINES} lines (the limit)"),
            SdpErrorKind::TooManyMedia => {
                write!(f, "more than {MAX_MEDIA} media sections (the limit)")
            }
            SdpErrorKind::MissingVersion => f.write_str("the first line must be v=0"),
            SdpErrorKind::MissingOrigin => f.write_str("no o= line"),
            SdpErrorKind::UnknownAddrType(t) => {
                write!(f, "unknown address type {t:?} (IP4 or IP6 expected)")
            }
            SdpErrorKind::AddrTypeMismatch(what) => {
                write!(f, "{what} address does not match its address type")
            }
            SdpErrorKind::BadPort(p) => write!(f, "bad m= port {p:?}"),
            SdpErrorKind::NotAToken(what) => {
                write!(
                    f,
                    "{what} must be one field: no white space or control characters"
                )
            }
            SdpErrorKind::Malformed(what) => f.write_str(what),
        }
    }
}

/// Invariant check for the `sdp` cargo-fuzz target (and the unit tests).
///
/// When `data` is UTF-8 and parses: the written text parses back to an equal
/// description and writes the same text (unless it grew past [`MAX_BYTES`]);
/// the typed views see every typed attribute; the effective addresses are
/// consistent; and a full rewrite (every rewrite method) keeps those
/// properties, does what it says and leaves every other line in place.
/// Panics only if one of those invariants breaks.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_sdp(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(sdp) = parse(text) else {
        return;
    };
    fuzz::check(&sdp);
}

#[cfg(any(test, feature = "fuzzing"))]
mod fuzz {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

    use super::{parse, Attributes, Connection, Direction, Line, Rtcp, Sdp, SdpErrorKind};
    use super::{ICE_ATTRIBUTES, MAX_BYTES};

    pub(super) fn check(sdp: &Sdp) {
        round_trip(sdp);
        typed_views(sdp);
        rewrite(sdp);
    }

    fn round_trip(sdp: &Sdp) {
        let text = sdp.to_string();
        match parse(&text) {
            Ok(again) => {
                assert_eq!(&again, sdp, "re-parse differs:\n{text}");
                assert_eq!(again.to_string(), text, "writing is not a fixed point");
            }
            Err(e) => assert!(
                text.len() > MAX_BYTES && matches!(e.kind, SdpErrorKind::TooLarge { .. }),
                "written text does not parse: {e}\n{text}"
            ),
        }
    }

    fn count(lines: &[Line], name: &str) -> usize {
        lines.iter().filter(|l| l.is_attribute(name)).count()
    }

    fn typed_views_of(sdp: &Sdp, section: &impl Attributes) {
        let lines = section.lines();
        assert_eq!(section.candidates().count(), count(lines, "candidate"));
        assert_eq!(section.rtpmaps().count(), count(lines, "rtpmap"));
        assert_eq!(section.fmtps().count(), count(lines, "fmtp"));
        assert_eq!(section.rtcp().is_some(), section.has_attribute("rtcp"));
        assert_eq!(section.ptime().is_some(), section.has_attribute("ptime"));
        let _ = (
            section.ice_ufrag(),
            section.ice_pwd(),
            section.ice_options(),
        );
        let _ = (
            section.ice_lite(),
            section.end_of_candidates(),
            section.remote_candidates(),
        );
        let _ = (section.direction(), sdp.session_name());
    }

    fn typed_views(sdp: &Sdp) {
        typed_views_of(sdp, sdp);
        for m in sdp.media() {
            typed_views_of(sdp, m);
            let rtp = sdp.rtp_addr(m);
            let rtcp = sdp.rtcp_addr(m);
            if m.is_rejected() {
                assert_eq!(rtp, None);
            }
            if rtp.is_none() {
                assert_eq!(rtcp, None);
            } else if m.rtcp_mux() {
                assert_eq!(rtcp, rtp);
            }
            let _ = sdp.direction_of(m);
        }
    }

    /// Lines no rewrite below may touch: not `c=`, not `a=rtcp`,
    /// `a=rtcp-mux`, a direction or an ICE attribute.
    fn untouched(lines: &[Line]) -> Vec<&Line> {
        lines
            .iter()
            .filter(|l| match l {
                Line::Connection(_) => false,
                Line::Attribute(a) => {
                    !matches!(a.name(), "rtcp" | "rtcp-mux")
                        && a.direction().is_none()
                        && !ICE_ATTRIBUTES.contains(&a.name())
                }
                Line::Other(_) => true,
            })
            .collect()
    }

    fn rewrite(sdp: &Sdp) {
        let v4 = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7));
        let mut r = sdp.clone();
        r.set_all_connections(Connection::from_ip(v4));
        r.remove_ice();
        r.set_direction(None);
        r.set_origin_address(v6);
        r.bump_version();
        for (i, m) in r.media_mut().iter_mut().enumerate() {
            if m.is_rejected() {
                continue;
            }
            let port = 30000 + 2 * (i as u16);
            m.set_port(port);
            m.set_rtcp(Rtcp {
                port: port + 1,
                connection: Some(Connection::from_ip(v4)),
            });
            m.set_rtcp_mux(i % 2 == 0);
            m.set_direction(Some(Direction::SendOnly));
            m.set_proto("RTP/AVP").expect("RTP/AVP is a token");
        }
        round_trip(&r);

        assert_eq!(r.origin().address(), v6.to_string());
        assert_eq!(
            r.origin().session_version(),
            sdp.origin().session_version().saturating_add(1)
        );
        assert_eq!(untouched(r.lines()), untouched(sdp.lines()));
        assert_eq!(r.direction(), None);
        assert!(!r.attributes().any(|a| a.is_ice()));
        assert_eq!(r.media().len(), sdp.media().len());
        for (i, (after, before)) in r.media().iter().zip(sdp.media()).enumerate() {
            assert_eq!(untouched(after.lines()), untouched(before.lines()));
            assert!(!after.attributes().any(|a| a.is_ice()));
            assert_eq!(after.kind(), before.kind());
            assert_eq!(after.formats(), before.formats());
            assert_eq!(r.connection_for(after).and_then(Connection::ip), Some(v4));
            if before.is_rejected() {
                assert_eq!((after.port(), after.proto()), (0, before.proto()));
                continue;
            }
            let port = 30000 + 2 * (i as u16);
            assert_eq!(r.rtp_addr(after), Some(SocketAddr::new(v4, port)));
            let rtcp_port = if i % 2 == 0 { port } else { port + 1 };
            assert_eq!(r.rtcp_addr(after), Some(SocketAddr::new(v4, rtcp_port)));
            assert_eq!(r.direction_of(after), Direction::SendOnly);
            assert_eq!(after.proto(), "RTP/AVP");
        }
    }
}
