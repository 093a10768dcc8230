//! Sessions, legs and latching: the per-packet decision, free of IO and clocks.
//!
//! A session has two legs (A and B). A packet received on one leg's socket is
//! checked (parse, latch, direction) and, when it passes, sent from the other
//! leg's matching socket to that leg's peer. The caller owns sockets and time:
//! it passes the receiving socket's identity, the source, the bytes (rewritten
//! in place when the far leg asks for SSRC/sequence rewriting) and `now`, and
//! gets back where to send or why the packet was dropped.
//!
//! Invariants: a latched leg accepts packets only from its latched source
//! (RTP-Bleed protection); only a source that passes the leg's [`LatchMode`]
//! may latch; re-latching happens by [`Leg::update`] or after the latched
//! source has been silent for the configured idle time.

mod latch;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

pub use latch::{Latch, LatchMode, LatchPolicy};

use crate::packet::{self, rtcp, rtp, Kind};
use crate::stats::{DropCounts, DropReason};

/// Index of a socket in its worker's socket table.
pub type SockIdx = u32;

/// A leg without an RTCP socket (rtcp-mux from the start: the odd port stays
/// reserved, unbound, until mux is turned off).
pub const NO_SOCK: SockIdx = u32::MAX;

/// Media direction of a leg as negotiated in SDP, seen from the leg's peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Peer sends and receives.
    SendRecv,
    /// Peer sends only.
    SendOnly,
    /// Peer receives only.
    RecvOnly,
    /// Neither (hold).
    Inactive,
}

impl Direction {
    /// The peer may send media to us.
    #[inline]
    pub fn peer_sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }
    /// The peer may receive media from us.
    #[inline]
    pub fn peer_receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// Which of a leg's two sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SockKind {
    /// The even port.
    Rtp = 0,
    /// The odd port (unused for media once rtcp-mux is on).
    Rtcp = 1,
}

/// What the control plane says about a leg's peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegParams {
    /// Where the peer receives RTP (SDP).
    pub remote_rtp: Option<SocketAddr>,
    /// Where the peer receives RTCP; default RTP port + 1 (or the RTP address with mux).
    pub remote_rtcp: Option<SocketAddr>,
    /// Source IP allowed to latch; default the remote RTP IP.
    pub expected_ip: Option<IpAddr>,
    /// Negotiated direction.
    pub direction: Direction,
    /// RTCP multiplexed on the RTP port (RFC 5761).
    pub rtcp_mux: bool,
    /// Latching rule.
    pub latch_mode: LatchMode,
    /// Rewrite SSRC and sequence numbers of what is sent to this peer.
    pub rewrite_ssrc: bool,
}

impl LegParams {
    /// The IP allowed to latch.
    pub fn expected_ip(&self) -> Option<IpAddr> {
        self.expected_ip.or(self.remote_rtp.map(|a| a.ip()))
    }

    /// Where RTCP for this peer goes when nothing latched.
    pub fn rtcp_destination(&self) -> Option<SocketAddr> {
        if self.rtcp_mux {
            return self.remote_rtp;
        }
        self.remote_rtcp.or_else(|| {
            self.remote_rtp
                .and_then(|a| a.port().checked_add(1).map(|p| SocketAddr::new(a.ip(), p)))
        })
    }

    /// The port a strict latch expects for `kind`.
    fn expected_port(&self, kind: SockKind) -> Option<u16> {
        match kind {
            SockKind::Rtp => self.remote_rtp.map(|a| a.port()),
            SockKind::Rtcp => self.rtcp_destination().map(|a| a.port()),
        }
    }
}

/// A partial change of [`LegParams`] (`None` = unchanged).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LegUpdate {
    /// New remote RTP address.
    pub remote_rtp: Option<SocketAddr>,
    /// New remote RTCP address.
    pub remote_rtcp: Option<SocketAddr>,
    /// New expected source IP.
    pub expected_ip: Option<IpAddr>,
    /// New direction.
    pub direction: Option<Direction>,
    /// rtcp-mux on or off.
    pub rtcp_mux: Option<bool>,
    /// New latch mode.
    pub latch_mode: Option<LatchMode>,
    /// SSRC rewriting on or off.
    pub rewrite_ssrc: Option<bool>,
    /// Forget the latched sources.
    pub relatch: bool,
}

/// Per-leg counters (plain fields: the worker owns them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LegCounters {
    /// Valid RTP packets received from the peer.
    pub rtp_packets_in: u64,
    /// Their bytes.
    pub rtp_bytes_in: u64,
    /// Valid RTCP packets received from the peer.
    pub rtcp_packets_in: u64,
    /// Their bytes.
    pub rtcp_bytes_in: u64,
    /// Packets sent to the peer.
    pub packets_out: u64,
    /// Their bytes.
    pub bytes_out: u64,
    /// Packets received on this leg and dropped, by reason.
    pub dropped: DropCounts,
    /// Last packet accepted from the peer.
    pub last_packet: Option<Instant>,
}

/// SSRC/sequence rewriting state of the stream sent to one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rewrite {
    ssrc_out: u32,
    last_in_ssrc: Option<u32>,
    seq_offset: u16,
    last_out_seq: u16,
}

impl Rewrite {
    /// A rewriter that sends with `ssrc_out`.
    pub fn new(ssrc_out: u32) -> Self {
        Rewrite {
            ssrc_out,
            last_in_ssrc: None,
            seq_offset: 0,
            last_out_seq: 0,
        }
    }

    /// Rewrites one RTP packet: one outgoing SSRC, and a sequence that goes on
    /// without a jump when the incoming SSRC changes.
    #[inline]
    fn apply_rtp(&mut self, buf: &mut [u8], hdr: &rtp::RtpHeader) {
        let first = self.last_in_ssrc.is_none();
        if self.last_in_ssrc != Some(hdr.ssrc) {
            if !first {
                self.seq_offset = self.last_out_seq.wrapping_add(1).wrapping_sub(hdr.seq);
            }
            self.last_in_ssrc = Some(hdr.ssrc);
        }
        let out = hdr.seq.wrapping_add(self.seq_offset);
        // Track the highest sequence sent (RFC 3550 A.1 style wrap-aware compare).
        if first || out.wrapping_sub(self.last_out_seq) < 0x8000 {
            self.last_out_seq = out;
        }
        rtp::set_ssrc_seq(buf, self.ssrc_out, out);
    }

    /// The SSRC this rewriter sends with.
    pub fn ssrc(&self) -> u32 {
        self.ssrc_out
    }
}

/// One side of a session.
#[derive(Debug)]
pub struct Leg {
    /// Index of the media interface.
    pub iface: u16,
    /// Kordon's advertised RTP address for this leg.
    pub local_rtp: SocketAddr,
    /// The leg's sockets: [RTP, RTCP].
    pub socks: [SockIdx; 2],
    /// What the control plane said.
    pub params: LegParams,
    /// Latched sources: [RTP, RTCP].
    pub latch: [Latch; 2],
    /// Rewriting of what is sent to this leg's peer.
    pub rewrite: Option<Rewrite>,
    /// Counters.
    pub counters: LegCounters,
}

impl Leg {
    /// A new leg; `ssrc_out` is used when rewriting is or gets enabled.
    pub fn new(
        iface: u16,
        local_rtp: SocketAddr,
        socks: [SockIdx; 2],
        params: LegParams,
        ssrc_out: u32,
    ) -> Self {
        let rewrite = params.rewrite_ssrc.then(|| Rewrite::new(ssrc_out));
        Leg {
            iface,
            local_rtp,
            socks,
            params,
            latch: [Latch::Open, Latch::Open],
            rewrite,
            counters: LegCounters::default(),
        }
    }

    /// Applies a change from the control plane. A changed remote, expected
    /// source, latch mode or rtcp-mux, or an explicit `relatch`, forgets the
    /// latched sources.
    pub fn update(&mut self, u: &LegUpdate, ssrc_out: u32) {
        let before = self.params.clone();
        if let Some(a) = u.remote_rtp {
            self.params.remote_rtp = Some(a);
        }
        if let Some(a) = u.remote_rtcp {
            self.params.remote_rtcp = Some(a);
        }
        if let Some(ip) = u.expected_ip {
            self.params.expected_ip = Some(ip);
        }
        if let Some(d) = u.direction {
            self.params.direction = d;
        }
        if let Some(m) = u.rtcp_mux {
            self.params.rtcp_mux = m;
        }
        if let Some(m) = u.latch_mode {
            self.params.latch_mode = m;
        }
        if let Some(r) = u.rewrite_ssrc {
            self.params.rewrite_ssrc = r;
            if r && self.rewrite.is_none() {
                self.rewrite = Some(Rewrite::new(ssrc_out));
            } else if !r {
                self.rewrite = None;
            }
        }
        let peer_changed = before.remote_rtp != self.params.remote_rtp
            || before.remote_rtcp != self.params.remote_rtcp
            || before.expected_ip() != self.params.expected_ip()
            || before.latch_mode != self.params.latch_mode
            || before.rtcp_mux != self.params.rtcp_mux;
        if u.relatch || peer_changed {
            self.latch = [Latch::Open, Latch::Open];
        }
    }

    /// Where packets of `kind` for this leg's peer go: the latched source
    /// (symmetric RTP), else what the control plane announced.
    #[inline]
    pub fn destination(&self, kind: SockKind) -> Option<SocketAddr> {
        match kind {
            SockKind::Rtp => self.latch[0].addr().or(self.params.remote_rtp),
            SockKind::Rtcp if self.params.rtcp_mux => {
                self.latch[0].addr().or(self.params.remote_rtp)
            }
            SockKind::Rtcp => self.latch[1]
                .addr()
                .or_else(|| self.params.rtcp_destination()),
        }
    }

    /// The socket that sends packets of `kind` to this leg's peer (none when
    /// RTCP is not muxed and the RTCP socket is not open).
    #[inline]
    pub fn out_sock(&self, kind: SockKind) -> Option<SockIdx> {
        let s = match kind {
            SockKind::Rtcp if !self.params.rtcp_mux => self.socks[1],
            _ => self.socks[0],
        };
        (s != NO_SOCK).then_some(s)
    }
}

/// Identifies a leg within a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegId {
    /// The first leg.
    A = 0,
    /// The second leg.
    B = 1,
}

impl LegId {
    /// The other leg.
    #[inline]
    pub fn other(self) -> LegId {
        match self {
            LegId::A => LegId::B,
            LegId::B => LegId::A,
        }
    }
}

/// A packet accepted for forwarding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forward {
    /// Send from this socket...
    pub out_sock: SockIdx,
    /// ...to this address.
    pub dst: SocketAddr,
}

/// A latch that happened while handling a packet, for the event stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatchEvent {
    /// Which leg latched.
    pub leg: LegId,
    /// Which of its sockets.
    pub kind: SockKind,
    /// The source it latched to.
    pub source: SocketAddr,
}

/// A media session: two legs and its bookkeeping.
#[derive(Debug)]
pub struct Session {
    /// The control plane's id.
    pub id: String,
    /// Legs A and B.
    pub legs: [Leg; 2],
    /// No accepted packet for this long raises an event.
    pub inactivity_timeout: Duration,
    /// When it was created (wall clock, ms since the epoch).
    pub created_unix_ms: i64,
    /// When it was created (monotonic).
    pub created: Instant,
    /// The inactivity event was raised and no packet came since.
    pub idle_reported: bool,
    /// A latch waiting to be reported (at most one per packet).
    pub pending_latch: Option<LatchEvent>,
}

impl Session {
    /// A leg by id.
    #[inline]
    pub fn leg(&self, id: LegId) -> &Leg {
        match id {
            LegId::A => &self.legs[0],
            LegId::B => &self.legs[1],
        }
    }

    /// The last time any leg accepted a packet, or creation.
    pub fn last_activity(&self) -> Instant {
        let [a, b] = &self.legs;
        [a.counters.last_packet, b.counters.last_packet]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(self.created)
    }

    /// Decides what to do with a datagram received on `leg`'s `kind` socket
    /// from `src`. Rewrites `buf` in place when the far leg rewrites SSRCs.
    /// Counts on both legs. A latch that happens is left in `pending_latch`.
    #[inline]
    pub fn on_packet(
        &mut self,
        leg: LegId,
        kind: SockKind,
        src: SocketAddr,
        buf: &mut [u8],
        now: Instant,
        policy: &LatchPolicy,
    ) -> Result<Forward, DropReason> {
        let [a, b] = &mut self.legs;
        let (rx, tx) = match leg {
            LegId::A => (a, b),
            LegId::B => (b, a),
        };
        match Self::check(
            rx,
            tx,
            leg,
            kind,
            src,
            buf,
            now,
            policy,
            &mut self.pending_latch,
        ) {
            Ok(fwd) => {
                self.idle_reported = false;
                tx.counters.packets_out += 1;
                tx.counters.bytes_out += buf.len() as u64;
                Ok(fwd)
            }
            Err(reason) => {
                rx.counters.dropped.add(reason);
                Err(reason)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn check(
        rx: &mut Leg,
        tx: &mut Leg,
        leg: LegId,
        kind: SockKind,
        src: SocketAddr,
        buf: &mut [u8],
        now: Instant,
        policy: &LatchPolicy,
        pending: &mut Option<LatchEvent>,
    ) -> Result<Forward, DropReason> {
        // 1. What is it? RFC 5761: with mux, RTCP shares the RTP socket.
        let is_rtcp = match kind {
            SockKind::Rtcp => true,
            SockKind::Rtp => match packet::classify(buf) {
                Kind::Rtp => false,
                Kind::Rtcp if rx.params.rtcp_mux => true,
                Kind::Rtcp | Kind::Stun | Kind::Dtls | Kind::Other => {
                    return Err(first_byte_reason(buf))
                }
            },
        };
        let rtp_hdr = if is_rtcp {
            rtcp::parse(buf)?;
            None
        } else {
            Some(rtp::parse(buf)?)
        };
        // 2. Latch: with mux, both share the RTP latch.
        let latch_kind = if is_rtcp && kind == SockKind::Rtcp {
            SockKind::Rtcp
        } else {
            SockKind::Rtp
        };
        let slot = latch_kind as usize;
        let expected_port = rx.params.expected_port(latch_kind);
        let expected_ip = rx.params.expected_ip();
        let mode = rx.params.latch_mode;
        let latch = rx.latch.get_mut(slot).ok_or(DropReason::UnexpectedSource)?;
        if latch.admit(src, now, mode, expected_ip, expected_port, policy)? {
            *pending = Some(LatchEvent {
                leg,
                kind: latch_kind,
                source: src,
            });
        }
        let len = buf.len() as u64;
        rx.counters.last_packet = Some(now);
        if is_rtcp {
            rx.counters.rtcp_packets_in += 1;
            rx.counters.rtcp_bytes_in += len;
        } else {
            rx.counters.rtp_packets_in += 1;
            rx.counters.rtp_bytes_in += len;
        }
        // 3. Direction: RTCP flows whatever the direction (RFC 3264 §5.1).
        let media_allowed = rx.params.direction.peer_sends() && tx.params.direction.peer_receives();
        if !is_rtcp && !media_allowed {
            return Err(DropReason::Direction);
        }
        // 4. Where to.
        let out_kind = if is_rtcp {
            SockKind::Rtcp
        } else {
            SockKind::Rtp
        };
        let dst = tx.destination(out_kind).ok_or(DropReason::NoDestination)?;
        // 5. Rewrite for the far peer.
        if let Some(rw) = tx.rewrite.as_mut() {
            match rtp_hdr {
                Some(h) => rw.apply_rtp(buf, &h),
                None => rtcp::set_sender_ssrc(buf, rw.ssrc()),
            }
        }
        Ok(Forward {
            out_sock: tx.out_sock(out_kind).ok_or(DropReason::NoDestination)?,
            dst,
        })
    }
}

/// Drop reason for a datagram that is not RTP/RTCP this leg accepts.
/// STUN and DTLS are protocols this leg does not speak (yet); anything else of
/// RTP size whose version is not 2 is a bad RTP packet.
fn first_byte_reason(buf: &[u8]) -> DropReason {
    match packet::classify(buf) {
        Kind::Rtp | Kind::Rtcp | Kind::Stun | Kind::Dtls => DropReason::UnknownProtocol,
        Kind::Other if buf.len() < 12 => DropReason::TooShort,
        Kind::Other => DropReason::BadVersion,
    }
}

#[cfg(test)]
mod tests;
