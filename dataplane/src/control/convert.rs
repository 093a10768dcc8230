//! Between the wire (proto) and the worker's types: request validation that
//! names the offending field, and snapshots back to proto.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use kordon_proto::v1 as pb;
use tonic::Status;

use crate::session::{Direction, LatchMode, LegParams, LegUpdate};
use crate::worker::{LegSnapshot, SessionSnapshot, WorkerSnapshot};

use super::Iface;

/// A validated leg of a create request.
#[derive(Debug, Clone)]
pub(crate) struct ValidLeg {
    pub(crate) iface: u16,
    pub(crate) requested_port: Option<u16>,
    pub(crate) params: LegParams,
}

/// A validated create request.
#[derive(Debug, Clone)]
pub(crate) struct ValidCreate {
    pub(crate) id: String,
    pub(crate) legs: [ValidLeg; 2],
    pub(crate) inactivity_timeout: Duration,
}

/// Defaults and switches that validation needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    pub(crate) latch_mode: LatchMode,
    pub(crate) allow_learn_any: bool,
    pub(crate) inactivity_timeout: Duration,
}

fn bad(field: &str, why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {why}"))
}

/// Checks a session id.
pub(crate) fn session_id(id: &str) -> Result<(), Status> {
    if id.is_empty() {
        return Err(bad("session_id", "required"));
    }
    if id.len() > 256 {
        return Err(bad("session_id", "longer than 256 characters"));
    }
    if !id.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(bad("session_id", "only printable ASCII is allowed"));
    }
    Ok(())
}

fn ip(field: &str, s: &str) -> Result<IpAddr, Status> {
    s.parse::<IpAddr>()
        .map_err(|_| bad(field, format!("{s:?} is not an IP address")))
}

fn endpoint(field: &str, e: &pb::Endpoint, iface: Option<&Iface>) -> Result<SocketAddr, Status> {
    let addr = ip(&format!("{field}.ip"), &e.ip)?;
    let port = u16::try_from(e.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| {
            bad(
                &format!("{field}.port"),
                format!("{} is not in 1..=65535", e.port),
            )
        })?;
    if let Some(i) = iface {
        if addr.is_ipv4() != i.bind.is_ipv4() {
            return Err(bad(
                &format!("{field}.ip"),
                format!("address family differs from interface {:?}", i.name),
            ));
        }
    }
    Ok(SocketAddr::new(addr, port))
}

fn direction(field: &str, v: i32) -> Result<Option<Direction>, Status> {
    match pb::Direction::try_from(v) {
        Ok(pb::Direction::Unspecified) => Ok(None),
        Ok(pb::Direction::Sendrecv) => Ok(Some(Direction::SendRecv)),
        Ok(pb::Direction::Sendonly) => Ok(Some(Direction::SendOnly)),
        Ok(pb::Direction::Recvonly) => Ok(Some(Direction::RecvOnly)),
        Ok(pb::Direction::Inactive) => Ok(Some(Direction::Inactive)),
        Err(_) => Err(bad(field, format!("unknown direction {v}"))),
    }
}

fn latch_mode(field: &str, v: i32, rules: &Rules) -> Result<Option<LatchMode>, Status> {
    let m = match pb::LatchMode::try_from(v) {
        Ok(pb::LatchMode::Unspecified) => return Ok(None),
        Ok(pb::LatchMode::ExpectedIp) => LatchMode::ExpectedIp,
        Ok(pb::LatchMode::Strict) => LatchMode::Strict,
        Ok(pb::LatchMode::LearnAny) => LatchMode::LearnAny,
        Err(_) => return Err(bad(field, format!("unknown latch mode {v}"))),
    };
    if m == LatchMode::LearnAny && !rules.allow_learn_any {
        return Err(bad(
            field,
            "learn-any is disabled (dataplane.allow_learn_any = false)",
        ));
    }
    Ok(Some(m))
}

fn iface_index<'a>(
    field: &str,
    name: &str,
    ifaces: &'a [Iface],
) -> Result<(u16, &'a Iface), Status> {
    if name.is_empty() {
        return Err(bad(field, "required"));
    }
    ifaces
        .iter()
        .enumerate()
        .find(|(_, i)| i.name == name)
        .map(|(k, i)| (k as u16, i))
        .ok_or_else(|| {
            let known: Vec<&str> = ifaces.iter().map(|i| i.name.as_str()).collect();
            bad(
                field,
                format!(
                    "unknown interface {name:?} (configured: {})",
                    known.join(", ")
                ),
            )
        })
}

fn leg(
    field: &str,
    spec: Option<&pb::LegSpec>,
    ifaces: &[Iface],
    rules: &Rules,
) -> Result<ValidLeg, Status> {
    let spec = spec.ok_or_else(|| bad(field, "required"))?;
    let (k, itf) = iface_index(&format!("{field}.interface"), &spec.interface, ifaces)?;
    let requested_port = match spec.requested_rtp_port {
        0 => None,
        p => {
            let p16 = u16::try_from(p).ok().filter(|p| {
                p % 2 == 0 && *p >= itf.port_min && u32::from(*p) < u32::from(itf.port_max)
            });
            Some(p16.ok_or_else(|| {
                bad(
                    &format!("{field}.requested_rtp_port"),
                    format!(
                        "{p} is not an even port with its pair inside {}..={}",
                        itf.port_min, itf.port_max
                    ),
                )
            })?)
        }
    };
    let remote_rtp = spec
        .remote_rtp
        .as_ref()
        .map(|e| endpoint(&format!("{field}.remote_rtp"), e, Some(itf)))
        .transpose()?;
    let remote_rtcp = spec
        .remote_rtcp
        .as_ref()
        .map(|e| endpoint(&format!("{field}.remote_rtcp"), e, Some(itf)))
        .transpose()?;
    let expected_ip = if spec.expected_source_ip.is_empty() {
        None
    } else {
        Some(ip(
            &format!("{field}.expected_source_ip"),
            &spec.expected_source_ip,
        )?)
    };
    Ok(ValidLeg {
        iface: k,
        requested_port,
        params: LegParams {
            remote_rtp,
            remote_rtcp,
            expected_ip,
            direction: direction(&format!("{field}.direction"), spec.direction)?
                .unwrap_or(Direction::SendRecv),
            rtcp_mux: spec.rtcp_mux,
            latch_mode: latch_mode(&format!("{field}.latch_mode"), spec.latch_mode, rules)?
                .unwrap_or(rules.latch_mode),
            rewrite_ssrc: spec.rewrite_ssrc,
        },
    })
}

/// Validates a create request.
pub(crate) fn create(
    req: &pb::CreateSessionRequest,
    ifaces: &[Iface],
    rules: &Rules,
) -> Result<ValidCreate, Status> {
    session_id(&req.session_id)?;
    let a = leg("leg_a", req.leg_a.as_ref(), ifaces, rules)?;
    let b = leg("leg_b", req.leg_b.as_ref(), ifaces, rules)?;
    let inactivity_timeout = match req.inactivity_timeout_secs {
        0 => rules.inactivity_timeout,
        s if s > 86_400 => {
            return Err(bad("inactivity_timeout_secs", "at most 86400"));
        }
        s => Duration::from_secs(u64::from(s)),
    };
    Ok(ValidCreate {
        id: req.session_id.clone(),
        legs: [a, b],
        inactivity_timeout,
    })
}

fn leg_update(
    field: &str,
    u: Option<&pb::LegUpdate>,
    iface: &Iface,
    rules: &Rules,
) -> Result<Option<LegUpdate>, Status> {
    let Some(u) = u else { return Ok(None) };
    Ok(Some(LegUpdate {
        remote_rtp: u
            .remote_rtp
            .as_ref()
            .map(|e| endpoint(&format!("{field}.remote_rtp"), e, Some(iface)))
            .transpose()?,
        remote_rtcp: u
            .remote_rtcp
            .as_ref()
            .map(|e| endpoint(&format!("{field}.remote_rtcp"), e, Some(iface)))
            .transpose()?,
        expected_ip: u
            .expected_source_ip
            .as_deref()
            .map(|s| ip(&format!("{field}.expected_source_ip"), s))
            .transpose()?,
        direction: direction(&format!("{field}.direction"), u.direction)?,
        rtcp_mux: u.rtcp_mux,
        latch_mode: latch_mode(&format!("{field}.latch_mode"), u.latch_mode, rules)?,
        rewrite_ssrc: u.rewrite_ssrc,
        relatch: u.relatch,
    }))
}

/// Validates an update against the session's interfaces.
pub(crate) fn update(
    req: &pb::UpdateSessionRequest,
    ifaces: [&Iface; 2],
    rules: &Rules,
) -> Result<[Option<LegUpdate>; 2], Status> {
    Ok([
        leg_update("leg_a", req.leg_a.as_ref(), ifaces[0], rules)?,
        leg_update("leg_b", req.leg_b.as_ref(), ifaces[1], rules)?,
    ])
}

fn ep(a: SocketAddr) -> pb::Endpoint {
    pb::Endpoint {
        ip: a.ip().to_string(),
        port: u32::from(a.port()),
    }
}

fn pb_direction(d: Direction) -> pb::Direction {
    match d {
        Direction::SendRecv => pb::Direction::Sendrecv,
        Direction::SendOnly => pb::Direction::Sendonly,
        Direction::RecvOnly => pb::Direction::Recvonly,
        Direction::Inactive => pb::Direction::Inactive,
    }
}

fn pb_latch(m: LatchMode) -> pb::LatchMode {
    match m {
        LatchMode::ExpectedIp => pb::LatchMode::ExpectedIp,
        LatchMode::Strict => pb::LatchMode::Strict,
        LatchMode::LearnAny => pb::LatchMode::LearnAny,
    }
}

fn leg_info(l: &LegSnapshot, ifaces: &[Iface]) -> pb::LegInfo {
    let p = &l.params;
    let local_rtcp = if p.rtcp_mux {
        l.local_rtp
    } else {
        SocketAddr::new(l.local_rtp.ip(), l.local_rtp.port().wrapping_add(1))
    };
    let c = &l.counters;
    pb::LegInfo {
        interface: ifaces
            .get(usize::from(l.iface))
            .map(|i| i.name.clone())
            .unwrap_or_default(),
        local_rtp: Some(ep(l.local_rtp)),
        local_rtcp: Some(ep(local_rtcp)),
        remote_rtp: p.remote_rtp.map(ep),
        remote_rtcp: p.rtcp_destination().map(ep),
        expected_source_ip: p.expected_ip().map(|i| i.to_string()).unwrap_or_default(),
        direction: pb_direction(p.direction) as i32,
        rtcp_mux: p.rtcp_mux,
        latch_mode: pb_latch(p.latch_mode) as i32,
        rewrite_ssrc: p.rewrite_ssrc,
        latched_rtp: l.latched[0].map(ep),
        latched_rtcp: if p.rtcp_mux {
            l.latched[0]
        } else {
            l.latched[1]
        }
        .map(ep),
        counters: Some(pb::LegCounters {
            rtp_packets_in: c.rtp_packets_in,
            rtp_bytes_in: c.rtp_bytes_in,
            rtcp_packets_in: c.rtcp_packets_in,
            rtcp_bytes_in: c.rtcp_bytes_in,
            packets_out: c.packets_out,
            bytes_out: c.bytes_out,
            dropped: c
                .dropped
                .nonzero()
                .map(|(r, n)| pb::DropCount {
                    reason: r.to_string(),
                    count: n,
                })
                .collect(),
            last_packet_unix_ms: l.last_packet_unix_ms,
        }),
    }
}

/// A snapshot on the wire.
pub(crate) fn session_info(s: &SessionSnapshot, ifaces: &[Iface]) -> pb::SessionInfo {
    pb::SessionInfo {
        session_id: s.id.clone(),
        worker: s.worker,
        leg_a: Some(leg_info(&s.legs[0], ifaces)),
        leg_b: Some(leg_info(&s.legs[1], ifaces)),
        inactivity_timeout_secs: s.inactivity_timeout.as_secs() as u32,
        created_unix_ms: s.created_unix_ms,
    }
}

/// Worker counters on the wire.
pub(crate) fn worker_stats(w: &WorkerSnapshot, free_ports: u32) -> pb::WorkerStats {
    let c = &w.counters;
    pb::WorkerStats {
        worker: w.worker,
        backend: w.backend.to_string(),
        sessions: w.sessions,
        rx_packets: c.rx_packets,
        rx_bytes: c.rx_bytes,
        tx_packets: c.tx_packets,
        tx_bytes: c.tx_bytes,
        dropped: c
            .dropped
            .nonzero()
            .map(|(r, n)| pb::DropCount {
                reason: r.to_string(),
                count: n,
            })
            .collect(),
        capped_turns: c.capped_turns,
        send_errors: c.send_errors,
        recv_rearms: c.recv_rearms,
        free_ports,
    }
}
