//! Text to [`Sdp`]: line splitting, limits, and the grammar of the lines the
//! model interprets (`v=`, `o=`, `c=`, `m=` and the typed attributes).
//!
//! Strict where a mistake would send media to the wrong place (ports,
//! addresses, `a=rtcp`), lenient where real peers are sloppy: CRLF or bare
//! LF, trailing white space, blank lines at the end, runs of spaces between
//! fields, lower-case `ip4`, unknown line types and attributes (kept
//! verbatim).

#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use std::time::Duration;

use super::model::{
    AddrType, Attribute, Candidate, Connection, Fmtp, Line, Media, Origin, OtherLine, Rtcp, Rtpmap,
    Sdp,
};
use super::{SdpError, SdpErrorKind, MAX_BYTES, MAX_LINES, MAX_MEDIA};

type Kind = SdpErrorKind;

/// Parses a session description; see the module docs of [`crate::sdp`] for
/// what is accepted and refused.
pub fn parse(text: &str) -> Result<Sdp, SdpError> {
    if text.len() > MAX_BYTES {
        return Err(SdpError {
            line: None,
            kind: Kind::TooLarge { bytes: text.len() },
        });
    }
    let mut origin: Option<Origin> = None;
    let mut session: Vec<Line> = Vec::new();
    let mut media: Vec<Media> = Vec::new();
    let mut blank_at: Option<usize> = None;
    let mut seen_version = false;

    for (index, raw) in text.split('\n').enumerate() {
        let number = index + 1;
        let at = |kind: Kind| SdpError {
            line: Some(number),
            kind,
        };
        let line = raw.trim_end_matches([' ', '\t', '\r']);
        if number > MAX_LINES && !line.is_empty() {
            return Err(at(Kind::TooManyLines));
        }
        if line.is_empty() {
            if !seen_version {
                return Err(at(Kind::MissingVersion));
            }
            // Blank lines are only tolerated at the very end.
            blank_at.get_or_insert(number);
            continue;
        }
        if let Some(blank) = blank_at {
            return Err(SdpError {
                line: Some(blank),
                kind: Kind::Malformed("empty line before the end of the description"),
            });
        }
        if !seen_version {
            if line != "v=0" {
                return Err(at(Kind::MissingVersion));
            }
            seen_version = true;
            continue;
        }
        if line.contains(['\r', '\0']) {
            return Err(at(Kind::Malformed("CR or NUL inside a line")));
        }
        let (kind, value) =
            split_line(line).ok_or_else(|| at(Kind::Malformed("expected <letter>=<value>")))?;
        let in_media = !media.is_empty();
        let section = match media.last_mut() {
            Some(m) => &mut m.lines,
            None => &mut session,
        };
        match kind {
            'v' => return Err(at(Kind::Malformed("v= line after the first line"))),
            'm' => {
                if media.len() == MAX_MEDIA {
                    return Err(at(Kind::TooManyMedia));
                }
                media.push(media_line(value).map_err(at)?);
            }
            'o' if !in_media => {
                if origin.is_some() {
                    return Err(at(Kind::Malformed("second o= line")));
                }
                origin = Some(origin_line(value).map_err(at)?);
            }
            'c' => section.push(Line::Connection(connection(value, "c=").map_err(at)?)),
            'a' => section.push(Line::Attribute(attribute(value).map_err(at)?)),
            _ => section.push(Line::Other(OtherLine {
                kind,
                value: value.to_owned(),
            })),
        }
    }

    let origin = origin.ok_or(SdpError {
        line: None,
        kind: Kind::MissingOrigin,
    })?;
    Ok(Sdp {
        origin,
        lines: session,
        media,
    })
}

/// `<lower-case letter>=<value>`.
fn split_line(line: &str) -> Option<(char, &str)> {
    match line.as_bytes() {
        [k @ b'a'..=b'z', b'=', ..] => Some((char::from(*k), line.get(2..)?)),
        _ => None,
    }
}

/// The first 32 characters of a peer's token, for an error message.
fn excerpt(s: &str) -> String {
    s.chars().take(32).collect()
}

/// A decimal number made of ASCII digits only (no sign, no spaces); leading
/// zeros are accepted.
fn number<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn addrtype(s: &str) -> Result<AddrType, Kind> {
    if s.eq_ignore_ascii_case("IP4") {
        Ok(AddrType::Ip4)
    } else if s.eq_ignore_ascii_case("IP6") {
        Ok(AddrType::Ip6)
    } else {
        Err(Kind::UnknownAddrType(excerpt(s)))
    }
}

/// `<nettype> <addrtype> <address>` from three fields. An address that is an
/// IP literal of the other family is refused: it would be used as written.
pub(super) fn connection_fields(
    nettype: &str,
    at: &str,
    address: &str,
    what: &'static str,
) -> Result<Connection, Kind> {
    let c = Connection {
        nettype: nettype.to_owned(),
        addrtype: addrtype(at)?,
        address: address.to_owned(),
    };
    let literal = address.split('/').next().unwrap_or_default();
    if let Ok(ip) = literal.parse::<std::net::IpAddr>() {
        if AddrType::of(ip) != c.addrtype {
            return Err(Kind::AddrTypeMismatch(what));
        }
    }
    Ok(c)
}

fn connection(value: &str, what: &'static str) -> Result<Connection, Kind> {
    let fields: Vec<&str> = value.split_ascii_whitespace().collect();
    let [nettype, at, address] = fields.as_slice() else {
        return Err(Kind::Malformed("c= line needs 3 fields"));
    };
    connection_fields(nettype, at, address, what)
}

fn origin_line(value: &str) -> Result<Origin, Kind> {
    let fields: Vec<&str> = value.split_ascii_whitespace().collect();
    let [username, session_id, version, nettype, at, address] = fields.as_slice() else {
        return Err(Kind::Malformed("o= line needs 6 fields"));
    };
    Ok(Origin {
        username: (*username).to_owned(),
        session_id: (*session_id).to_owned(),
        session_version: number(version)
            .ok_or(Kind::Malformed("o= session version is not a 64-bit number"))?,
        nettype: (*nettype).to_owned(),
        addrtype: addrtype(at)?,
        address: (*address).to_owned(),
    })
}

/// `<media> <port>[/<count>] <proto> <fmt> ...`.
fn media_line(value: &str) -> Result<Media, Kind> {
    let fields: Vec<&str> = value.split_ascii_whitespace().collect();
    let [kind, port_spec, proto, formats @ ..] = fields.as_slice() else {
        return Err(Kind::Malformed("m= line needs at least 4 fields"));
    };
    if formats.is_empty() {
        return Err(Kind::Malformed("m= line needs at least 4 fields"));
    }
    let bad_port = || Kind::BadPort(excerpt(port_spec));
    let (port, port_count) = match port_spec.split_once('/') {
        Some((port, count)) => {
            let count: u16 = number(count).filter(|&n| n > 0).ok_or_else(bad_port)?;
            (port, Some(count))
        }
        None => (*port_spec, None),
    };
    Ok(Media {
        kind: (*kind).to_owned(),
        port: number(port).ok_or_else(bad_port)?,
        port_count,
        proto: (*proto).to_owned(),
        formats: formats.iter().map(|f| (*f).to_owned()).collect(),
        lines: Vec::new(),
    })
}

/// `<name>[:<value>]`, validating the typed attributes.
fn attribute(value: &str) -> Result<Attribute, Kind> {
    let (name, value) = match value.split_once(':') {
        Some((name, value)) => (name, Some(value)),
        None => (value, None),
    };
    if name.is_empty() {
        return Err(Kind::Malformed("a= line without an attribute name"));
    }
    check_attribute(name, value)?;
    Ok(Attribute {
        name: name.to_owned(),
        value: value.map(str::to_owned),
    })
}

/// Refuses a malformed value of an attribute the model reads.
pub(super) fn check_attribute(name: &str, value: Option<&str>) -> Result<(), Kind> {
    let needs = |what| value.ok_or(Kind::Malformed(what));
    match name {
        "rtcp" => rtcp(needs("a=rtcp needs a port")?).map(drop),
        "rtpmap" => rtpmap(needs("a=rtpmap needs a value")?).map(drop),
        "fmtp" => fmtp(needs("a=fmtp needs a value")?).map(drop),
        "ptime" => ptime(needs("a=ptime needs a value")?).map(drop),
        "candidate" => candidate(needs("a=candidate needs a value")?).map(drop),
        _ => Ok(()),
    }
}

/// `<port> [<nettype> <addrtype> <address>]` (RFC 3605 section 2.1).
pub(super) fn rtcp(value: &str) -> Result<Rtcp, Kind> {
    let fields: Vec<&str> = value.split_ascii_whitespace().collect();
    let (port, connection) = match fields.as_slice() {
        [port] => (port, None),
        [port, nettype, at, address] => (
            port,
            Some(connection_fields(nettype, at, address, "a=rtcp")?),
        ),
        _ => {
            return Err(Kind::Malformed(
                "a=rtcp needs a port and optionally an address",
            ))
        }
    };
    Ok(Rtcp {
        port: number(port).ok_or(Kind::Malformed("a=rtcp port is not a port number"))?,
        connection,
    })
}

/// `<payload type> <encoding>/<clock rate>[/<params>]`.
pub(super) fn rtpmap(value: &str) -> Result<Rtpmap, Kind> {
    const BAD: Kind = Kind::Malformed("a=rtpmap needs <payload type> <encoding>/<clock rate>");
    let fields: Vec<&str> = value.split_ascii_whitespace().collect();
    let [pt, codec] = fields.as_slice() else {
        return Err(BAD);
    };
    let payload_type: u8 = number(pt)
        .filter(|&pt: &u8| pt <= 127)
        .ok_or(Kind::Malformed("a=rtpmap payload type is not 0-127"))?;
    let mut parts = codec.splitn(3, '/');
    let encoding = parts.next().filter(|e| !e.is_empty()).ok_or(BAD)?;
    let clock_rate = parts.next().and_then(number).ok_or(BAD)?;
    let params = match parts.next() {
        Some("") => return Err(BAD),
        p => p.map(str::to_owned),
    };
    Ok(Rtpmap {
        payload_type,
        encoding: encoding.to_owned(),
        clock_rate,
        params,
    })
}

/// `<format> [<parameters>]`.
pub(super) fn fmtp(value: &str) -> Result<Fmtp, Kind> {
    let value = value.trim_start_matches([' ', '\t']);
    let (format, params) = match value.split_once([' ', '\t']) {
        Some((format, params)) => (format, params.trim_start_matches([' ', '\t'])),
        None => (value, ""),
    };
    if format.is_empty() {
        return Err(Kind::Malformed("a=fmtp needs a format"));
    }
    Ok(Fmtp {
        format: format.to_owned(),
        params: params.to_owned(),
    })
}

/// Milliseconds, `20` or `22.5` (RFC 8866 section 9: an integer or a real).
/// Precision stops at microseconds.
pub(super) fn ptime(value: &str) -> Result<Duration, Kind> {
    const BAD: Kind = Kind::Malformed("a=ptime is not a number of milliseconds");
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    let ms: u32 = number(whole).ok_or(BAD)?;
    if !fraction.bytes().all(|b| b.is_ascii_digit()) || (value.contains('.') && fraction.is_empty())
    {
        return Err(BAD);
    }
    let micros = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    Ok(Duration::from_millis(u64::from(ms)) + Duration::from_micros(micros))
}

/// RFC 8839 section 5.1.
pub(super) fn candidate(value: &str) -> Result<Candidate, Kind> {
    const BAD: Kind = Kind::Malformed(
        "a=candidate needs <foundation> <component> <transport> <priority> <address> <port> typ <type>",
    );
    let mut fields = value.split_ascii_whitespace();
    let mut next = || fields.next().ok_or(BAD);
    let foundation = next()?.to_owned();
    let component =
        number(next()?).ok_or(Kind::Malformed("a=candidate component is not a number"))?;
    let transport = next()?.to_owned();
    let priority =
        number(next()?).ok_or(Kind::Malformed("a=candidate priority is not a number"))?;
    let address = next()?.to_owned();
    let port = number(next()?).ok_or(Kind::Malformed("a=candidate port is not a port number"))?;
    if next()? != "typ" {
        return Err(BAD);
    }
    let kind = next()?.to_owned();
    let mut rest: Vec<&str> = fields.collect();
    let mut related_address = None;
    let mut related_port = None;
    if let ["raddr", addr, ..] = rest.as_slice() {
        related_address = Some((*addr).to_owned());
        rest.drain(..2);
    }
    if let ["rport", port, ..] = rest.as_slice() {
        related_port =
            Some(number(port).ok_or(Kind::Malformed("a=candidate rport is not a port number"))?);
        rest.drain(..2);
    }
    Ok(Candidate {
        foundation,
        component,
        transport,
        priority,
        address,
        port,
        kind,
        related_address,
        related_port,
        extensions: rest.join(" "),
    })
}
