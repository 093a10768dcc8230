//! What one party's SDP says about one media section, in the terms the data
//! plane needs: where to send RTP and RTCP, which direction, rtcp-mux, hold.
//! Shared by ng and the B2BUA so both read an SDP the same way.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{Attributes as _, Connection, Direction, Media, Rtcp, Sdp};

/// One party's view of one media section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaSide {
    /// Where the party receives RTP (`None` on hold or when unknown).
    pub remote_rtp: Option<SocketAddr>,
    /// Where it receives RTCP.
    pub remote_rtcp: Option<SocketAddr>,
    /// The direction it wrote (adjusted for `c=0.0.0.0` hold).
    pub direction: Direction,
    /// Whether it offers or accepts rtcp-mux.
    pub rtcp_mux: bool,
    /// `c=0.0.0.0` (or `::`): the RFC 2543 way of putting a call on hold.
    pub held: bool,
}

/// The unspecified address of `ip`'s family (`c=` of a call on hold).
pub fn unspecified(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    }
}

/// Reads media section `m` of `sdp`; `forced` replaces the addresses' IP
/// (media from a NATed party's signalling address).
pub fn media_side(sdp: &Sdp, m: &Media, forced: Option<IpAddr>) -> MediaSide {
    let mut rtp = sdp.rtp_addr(m);
    // With a=rtcp-mux the data plane sends RTCP to the RTP address and ignores
    // this one until mux is turned off (the answer declined it): then RTCP
    // goes where the SDP said it would without mux, a=rtcp or RTP port + 1.
    let mut rtcp = if m.rtcp_mux() {
        rtp.and_then(|r| match m.rtcp() {
            Some(Rtcp {
                port,
                connection: Some(c),
            }) => c.ip().map(|ip| SocketAddr::new(ip, port)),
            Some(Rtcp {
                port,
                connection: None,
            }) => Some(SocketAddr::new(r.ip(), port)),
            None => r.port().checked_add(1).map(|p| SocketAddr::new(r.ip(), p)),
        })
    } else {
        sdp.rtcp_addr(m)
    };
    if let Some(ip) = forced {
        rtp = rtp.map(|a| SocketAddr::new(ip, a.port()));
        rtcp = rtcp.map(|a| SocketAddr::new(ip, a.port()));
    }
    let mut direction = sdp.direction_of(m);
    // A peer on hold through c=0.0.0.0 receives nothing, whatever direction it
    // wrote; and nothing may be sent to 0.0.0.0, which would reach this host.
    let held = sdp
        .connection_for(m)
        .is_some_and(Connection::is_unspecified);
    if held {
        rtp = None;
        rtcp = None;
        direction = match direction {
            Direction::SendRecv => Direction::SendOnly,
            Direction::RecvOnly => Direction::Inactive,
            d => d,
        };
    }
    MediaSide {
        remote_rtp: rtp,
        remote_rtcp: rtcp,
        direction,
        rtcp_mux: m.rtcp_mux(),
        held,
    }
}
