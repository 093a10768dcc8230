//! A call's media anchor: one data plane session per media section, leg A
//! facing the caller and leg B the callee. An SDP from one side updates (or
//! creates) that side's leg; the rewritten SDP for the other side carries the
//! other leg's addresses and nothing of the sender: origin, connection
//! addresses, ports and ICE candidates are all Kordon's.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;

use kordon_proto::v1 as pb;

use crate::cdr::MediaCounters;
use crate::media::{MediaClient, MediaError};
use crate::sdp::{self, Connection, Rtcp, Sdp};

/// Which party of the call an SDP belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The caller (ingress).
    A,
    /// The callee (egress).
    B,
}

impl Side {
    fn idx(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }

    /// The other party.
    pub(crate) fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// Most media sections of one SDP that get a data plane session each; more
/// is refused (488) rather than letting one INVITE take hundreds of ports.
const MAX_SECTIONS: usize = 8;

/// Why an SDP could not be anchored.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AnchorError {
    /// The SDP is unreadable (the sender's fault: 488/400).
    #[error("bad SDP: {0}")]
    Sdp(String),
    /// The data plane refused or is unreachable (503 with Retry-After).
    #[error("media relay: {0}")]
    Media(#[from] MediaError),
}

#[derive(Debug, Clone)]
struct Section {
    session_id: String,
    /// Advertised RTP address of leg A and leg B.
    local: [SocketAddr; 2],
}

/// The media of one call.
#[derive(Debug)]
pub(crate) struct Anchor {
    call_id: String,
    /// Data plane interface of each side.
    ifaces: [String; 2],
    sections: Vec<Option<Section>>,
    /// o= session id and version Kordon uses towards each side.
    origin: [(u64, u64); 2],
    /// Whether rtcp-mux was offered to each side in the last SDP it got.
    serial: u32,
}

impl Anchor {
    /// An anchor with no sessions yet. `origin_seed` makes the o= ids
    /// unrelated to anything either party sent.
    pub(crate) fn new(call_id: &str, iface_a: &str, iface_b: &str, origin_seed: u64) -> Anchor {
        Anchor {
            call_id: call_id.to_string(),
            ifaces: [iface_a.to_string(), iface_b.to_string()],
            sections: Vec::new(),
            origin: [(origin_seed, 1), (origin_seed ^ 0x5a5a_5a5a, 1)],
            serial: 0,
        }
    }

    /// Whether any session exists (and so must be deleted).
    pub(crate) fn is_active(&self) -> bool {
        self.sections.iter().any(Option::is_some)
    }

    /// Moves side B to another data plane interface before any session
    /// exists (failover to a trunk on another interface).
    pub(crate) fn set_iface_b(&mut self, iface: &str) {
        self.ifaces[1] = iface.to_string();
    }

    /// Applies `text` (an offer or answer from `from`) and returns the SDP to
    /// send to the other side. `expected` is the source IP media from `from`
    /// may latch from (a NATed user's signalling address), `None` = the SDP's.
    ///
    /// The future is boxed: a call task holds it only while the data plane
    /// answers, so held calls do not carry a gRPC exchange's state inline.
    pub(crate) fn apply<'a>(
        &'a mut self,
        client: &'a mut MediaClient,
        from: Side,
        text: &'a [u8],
        expected: Option<IpAddr>,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, AnchorError>> + Send + 'a>> {
        Box::pin(self.apply_inner(client, from, text, expected))
    }

    async fn apply_inner(
        &mut self,
        client: &mut MediaClient,
        from: Side,
        text: &[u8],
        expected: Option<IpAddr>,
    ) -> Result<Vec<u8>, AnchorError> {
        let text = std::str::from_utf8(text).map_err(|_| AnchorError::Sdp("not UTF-8".into()))?;
        let mut sdp = sdp::parse(text).map_err(|e| AnchorError::Sdp(e.to_string()))?;
        let me = from.idx();
        let other = from.other().idx();
        let count = sdp.media().len();
        if count > MAX_SECTIONS {
            return Err(AnchorError::Sdp(format!(
                "{count} media sections, at most {MAX_SECTIONS} are relayed"
            )));
        }
        if self.sections.len() < count {
            self.sections.resize(count, None);
        }
        for i in 0..count {
            let Some(m) = sdp.media().get(i) else {
                continue;
            };
            if m.is_rejected() {
                continue;
            }
            let side = sdp::media_side(&sdp, m, None);
            let section = match self.sections.get(i).cloned().flatten() {
                Some(s) => {
                    let mine = crate::media::leg_update_for(&side, expected);
                    let theirs = pb::LegUpdate {
                        rtcp_mux: Some(side.rtcp_mux),
                        ..Default::default()
                    };
                    let (leg_a, leg_b) = if me == 0 {
                        (mine, theirs)
                    } else {
                        (theirs, mine)
                    };
                    client
                        .update(pb::UpdateSessionRequest {
                            session_id: s.session_id.clone(),
                            leg_a: Some(leg_a),
                            leg_b: Some(leg_b),
                        })
                        .await?;
                    s
                }
                None => {
                    self.serial += 1;
                    let session_id = format!("sip-{}-{}", self.call_id, i + 1);
                    let mine = crate::media::leg_for(&self.ifaces[me], &side, expected);
                    let theirs = pb::LegSpec {
                        interface: self.ifaces[other].clone(),
                        rtcp_mux: side.rtcp_mux,
                        ..Default::default()
                    };
                    let (leg_a, leg_b) = if me == 0 {
                        (mine, theirs)
                    } else {
                        (theirs, mine)
                    };
                    let info = client
                        .create(pb::CreateSessionRequest {
                            session_id: session_id.clone(),
                            leg_a: Some(leg_a),
                            leg_b: Some(leg_b),
                            inactivity_timeout_secs: 0,
                        })
                        .await?;
                    let Some([la, lb]) = crate::media::local_rtp(&info) else {
                        // Not usable, but it exists: it must not outlive the call.
                        let _ = client.delete(&session_id).await;
                        return Err(AnchorError::Media(MediaError::Unavailable(
                            "session without local addresses".into(),
                        )));
                    };
                    let s = Section {
                        session_id,
                        local: [la, lb],
                    };
                    if let Some(slot) = self.sections.get_mut(i) {
                        *slot = Some(s.clone());
                    }
                    s
                }
            };
            let local = section.local[other];
            if let Some(mm) = sdp.media_mut().get_mut(i) {
                mm.set_port(local.port());
                let ip = if side.held {
                    sdp::unspecified(local.ip())
                } else {
                    local.ip()
                };
                mm.set_connection(Connection::from_ip(ip));
                mm.set_rtcp_mux(side.rtcp_mux);
                mm.set_rtcp(Rtcp {
                    port: local.port().saturating_add(1),
                    connection: None,
                });
                if side.held {
                    mm.set_direction(Some(side.direction));
                }
            }
        }
        self.rewrite_session(&mut sdp, other);
        Ok(sdp.to_string().into_bytes())
    }

    /// Session-level rewrite towards side index `to`: origin and session c=
    /// are Kordon's; ICE (ours is plain RTP) and a rejected section's own
    /// address are removed.
    fn rewrite_session(&mut self, sdp: &mut Sdp, to: usize) {
        let Some(ip) = self
            .sections
            .iter()
            .flatten()
            .next()
            .map(|s| s.local[to].ip())
        else {
            return;
        };
        if let Some(c) = sdp.connection() {
            let held = c.is_unspecified();
            sdp.set_session_connection(Connection::from_ip(if held {
                sdp::unspecified(ip)
            } else {
                ip
            }));
        }
        for mm in sdp.media_mut().iter_mut() {
            if mm.is_rejected() && mm.connection().is_some() {
                mm.set_connection(Connection::from_ip(ip));
            }
        }
        sdp.remove_ice();
        let (id, version) = &mut self.origin[to];
        let origin = sdp.origin_mut();
        // Session id and version are ours per side (RFC 4566 §5.2): a new
        // version for every SDP sent, whatever the sender's numbering.
        let _ = origin.set_username("kordon");
        let _ = origin.set_session_id(&id.to_string());
        origin.set_session_version(*version);
        *version += 1;
        sdp.set_origin_address(ip);
    }

    /// Deletes every session, returning the media counters for the CDR.
    /// Errors are logged and the counters of what answered kept.
    pub(crate) fn delete<'a>(
        &'a mut self,
        client: &'a mut MediaClient,
    ) -> Pin<Box<dyn Future<Output = MediaCounters> + Send + 'a>> {
        Box::pin(self.delete_inner(client))
    }

    async fn delete_inner(&mut self, client: &mut MediaClient) -> MediaCounters {
        let mut c = MediaCounters::default();
        for s in self.sections.drain(..).flatten() {
            match client.delete(&s.session_id).await {
                Ok(info) => {
                    if let Some(a) = info.leg_a.as_ref().and_then(|l| l.counters.as_ref()) {
                        c.a_packets_in += a.rtp_packets_in;
                        c.a_bytes_in += a.rtp_bytes_in;
                        c.a_packets_out += a.packets_out;
                        c.dropped += a.dropped.iter().map(|d| d.count).sum::<u64>();
                    }
                    if let Some(b) = info.leg_b.as_ref().and_then(|l| l.counters.as_ref()) {
                        c.b_packets_in += b.rtp_packets_in;
                        c.b_bytes_in += b.rtp_bytes_in;
                        c.b_packets_out += b.packets_out;
                        c.dropped += b.dropped.iter().map(|d| d.count).sum::<u64>();
                    }
                }
                Err(e) => {
                    tracing::warn!(session = %s.session_id, error = %e, "media session delete failed");
                }
            }
        }
        c
    }
}
