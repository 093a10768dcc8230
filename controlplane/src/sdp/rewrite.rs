//! Rewrites: the changes an SBC makes to a description it relays. Each one
//! touches only the lines it names; every other line keeps its text and its
//! place.
//!
//! Where a line is set and several exist (a second `c=` in a media section,
//! a second direction attribute), the first is replaced in place and the
//! others are dropped, so exactly one remains. A new line goes where RFC 8866
//! section 5 orders it: `c=` after `s=`/`i=`/`u=`/`e=`/`p=` (session) or `i=`
//! (media), attributes at the end of their section.

#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use std::net::IpAddr;

use super::model::{
    is_token, Attribute, Attributes, Connection, Direction, Line, Media, Rtcp, Sdp,
};
use super::{SdpError, SdpErrorKind};

/// Replaces the first line for which `is` holds with `new` and drops the
/// other such lines; without one, inserts `new` at `insert_at(lines)`.
fn set_one(
    lines: &mut Vec<Line>,
    is: impl Fn(&Line) -> bool,
    new: Line,
    insert_at: impl FnOnce(&[Line]) -> usize,
) {
    match lines.iter().position(&is) {
        Some(first) => {
            let mut index = 0;
            lines.retain(|l| {
                let keep = index == first || !is(l);
                index += 1;
                keep
            });
            // Lines before `first` were all kept, so it has not moved.
            if let Some(slot) = lines.get_mut(first) {
                *slot = new;
            }
        }
        None => {
            let at = insert_at(lines).min(lines.len());
            lines.insert(at, new);
        }
    }
}

fn at_end(lines: &[Line]) -> usize {
    lines.len()
}

fn is_direction(line: &Line) -> bool {
    line.as_attribute().is_some_and(|a| a.direction().is_some())
}

fn is_ice(line: &Line) -> bool {
    line.as_attribute().is_some_and(Attribute::is_ice)
}

fn set_direction(lines: &mut Vec<Line>, direction: Option<Direction>) {
    match direction {
        Some(d) => set_one(
            lines,
            is_direction,
            Line::Attribute(Attribute::flag(d.as_str())),
            at_end,
        ),
        None => lines.retain(|l| !is_direction(l)),
    }
}

impl Media {
    /// Sets the `m=` port (0 rejects or disables the stream). A `/<count>`
    /// stays as it was.
    pub fn set_port(&mut self, port: u16) {
        self.port = port;
    }

    /// Sets the `m=` transport protocol, such as `RTP/AVP` or
    /// `UDP/TLS/RTP/SAVPF`. Refuses anything that is not one field: the value
    /// may come from an ng flag, and must not inject lines.
    pub fn set_proto(&mut self, proto: &str) -> Result<(), SdpError> {
        if !is_token(proto) {
            return Err(SdpError::api(SdpErrorKind::NotAToken("m= proto")));
        }
        self.proto = proto.to_owned();
        Ok(())
    }

    /// Sets the media-level `c=` (replacing every other media-level `c=`).
    pub fn set_connection(&mut self, connection: Connection) {
        set_one(
            &mut self.lines,
            |l| l.kind() == 'c',
            Line::Connection(connection),
            |lines| {
                lines
                    .iter()
                    .position(|l| l.kind() != 'i')
                    .unwrap_or(lines.len())
            },
        );
    }

    /// Removes the media-level `c=` lines (the session-level one applies).
    pub fn remove_connection(&mut self) {
        self.lines.retain(|l| l.kind() != 'c');
    }

    /// Sets `a=rtcp:` (RFC 3605).
    pub fn set_rtcp(&mut self, rtcp: Rtcp) {
        set_one(
            &mut self.lines,
            |l| l.is_attribute("rtcp"),
            Line::Attribute(Attribute::with_value("rtcp", rtcp.to_string())),
            at_end,
        );
    }

    /// Removes `a=rtcp:` (RTCP then goes to the RTP port + 1).
    pub fn remove_rtcp(&mut self) {
        self.lines.retain(|l| !l.is_attribute("rtcp"));
    }

    /// Adds `a=rtcp-mux` (if missing) or removes it (RFC 5761).
    pub fn set_rtcp_mux(&mut self, on: bool) {
        if on {
            if !self.rtcp_mux() {
                self.lines
                    .push(Line::Attribute(Attribute::flag("rtcp-mux")));
            }
        } else {
            self.lines.retain(|l| !l.is_attribute("rtcp-mux"));
        }
    }

    /// Sets the media-level direction attribute; `None` removes it, so the
    /// session-level one (or `sendrecv`) applies.
    pub fn set_direction(&mut self, direction: Option<Direction>) {
        set_direction(&mut self.lines, direction);
    }

    /// Removes this section's ICE attributes ([`crate::sdp::ICE_ATTRIBUTES`]).
    pub fn remove_ice(&mut self) {
        self.lines.retain(|l| !is_ice(l));
    }
}

impl Sdp {
    /// Sets the session-level `c=` (replacing every other session-level `c=`).
    pub fn set_session_connection(&mut self, connection: Connection) {
        set_one(
            &mut self.lines,
            |l| l.kind() == 'c',
            Line::Connection(connection),
            |lines| {
                lines
                    .iter()
                    .position(|l| !matches!(l.kind(), 's' | 'i' | 'u' | 'e' | 'p'))
                    .unwrap_or(lines.len())
            },
        );
    }

    /// Removes the session-level `c=` lines.
    pub fn remove_session_connection(&mut self) {
        self.lines.retain(|l| l.kind() != 'c');
    }

    /// Puts `connection` in every `c=` line, session and media level, so no
    /// address of the peer's survives. A media section without a `c=` of its
    /// own gets one only when there is no session-level `c=` either.
    pub fn set_all_connections(&mut self, connection: Connection) {
        let session_level = self.connection().is_some();
        if session_level {
            self.set_session_connection(connection.clone());
        }
        for media in &mut self.media {
            if media.connection().is_some() || !session_level {
                media.set_connection(connection.clone());
            }
        }
    }

    /// Sets the session-level direction attribute (the default for media
    /// sections without their own); `None` removes it.
    pub fn set_direction(&mut self, direction: Option<Direction>) {
        set_direction(&mut self.lines, direction);
    }

    /// Removes every ICE attribute, session and media level: what an SBC does
    /// when it terminates ICE towards a peer that does not speak it.
    pub fn remove_ice(&mut self) {
        self.lines.retain(|l| !is_ice(l));
        for media in &mut self.media {
            media.remove_ice();
        }
    }

    /// Puts `ip` (and its address type) in the `o=` line.
    pub fn set_origin_address(&mut self, ip: IpAddr) {
        self.origin.set_address(ip);
    }

    /// Adds one to the `o=` session version, as a changed description must
    /// (RFC 3264 section 8); stays at `u64::MAX` rather than wrap to a lower
    /// version. Not calling it keeps the version.
    pub fn bump_version(&mut self) {
        self.origin.session_version = self.origin.session_version.saturating_add(1);
    }
}
