//! Unit tests of the per-packet decision: latching, RTP-Bleed, directions,
//! RTCP, rewriting. Time is given, never read.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

const PEER_A: &str = "127.0.0.1:40000";
const PEER_B: &str = "127.0.0.1:50000";
const ATTACKER: &str = "127.0.0.2:40000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn params(remote: &str) -> LegParams {
    LegParams {
        remote_rtp: Some(addr(remote)),
        remote_rtcp: None,
        expected_ip: None,
        direction: Direction::SendRecv,
        rtcp_mux: false,
        latch_mode: LatchMode::ExpectedIp,
        rewrite_ssrc: false,
    }
}

fn session(a: LegParams, b: LegParams) -> Session {
    let now = Instant::now();
    Session {
        id: "s1".into(),
        legs: [
            Leg::new(0, addr("127.0.0.1:20000"), [0, 1], a, 0xaaaa_0001),
            Leg::new(1, addr("127.0.0.1:30000"), [2, 3], b, 0xbbbb_0002),
        ],
        inactivity_timeout: Duration::from_secs(60),
        created_unix_ms: 0,
        created: now,
        idle_reported: false,
        pending_latch: None,
    }
}

fn rtp_packet(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0u8; 172];
    rtp::write_header(&mut p, 0, false, seq, u32::from(seq) * 160, ssrc).unwrap();
    p
}

fn rtcp_sr(ssrc: u32) -> Vec<u8> {
    // SR with no report blocks: 28 bytes, length field 6.
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0; 20]);
    p
}

const POLICY: LatchPolicy = LatchPolicy {
    relatch_idle: Some(Duration::from_secs(2)),
};

fn send(
    s: &mut Session,
    leg: LegId,
    kind: SockKind,
    from: &str,
    now: Instant,
) -> Result<Forward, DropReason> {
    let mut p = match kind {
        SockKind::Rtp => rtp_packet(1, 7),
        SockKind::Rtcp => rtcp_sr(7),
    };
    s.on_packet(leg, kind, addr(from), &mut p, now, &POLICY)
}

#[test]
fn relays_both_ways_from_the_peer_sockets() {
    let mut s = session(params(PEER_A), params(PEER_B));
    let now = Instant::now();
    let f = send(&mut s, LegId::A, SockKind::Rtp, PEER_A, now).unwrap();
    assert_eq!(
        f,
        Forward {
            out_sock: 2,
            dst: addr(PEER_B)
        }
    );
    let f = send(&mut s, LegId::B, SockKind::Rtp, PEER_B, now).unwrap();
    assert_eq!(
        f,
        Forward {
            out_sock: 0,
            dst: addr(PEER_A)
        }
    );
    assert_eq!(s.legs[0].counters.rtp_packets_in, 1);
    assert_eq!(s.legs[1].counters.packets_out, 1);
}

#[test]
fn foreign_source_cannot_latch_before_the_peer() {
    let mut s = session(params(PEER_A), params(PEER_B));
    let now = Instant::now();
    assert_eq!(
        send(&mut s, LegId::A, SockKind::Rtp, ATTACKER, now),
        Err(DropReason::UnexpectedSource)
    );
    assert_eq!(s.legs[0].latch[0], Latch::Open);
    assert!(s.pending_latch.is_none());
    // The real peer still latches.
    send(&mut s, LegId::A, SockKind::Rtp, PEER_A, now).unwrap();
    assert_eq!(s.legs[0].latch[0].addr(), Some(addr(PEER_A)));
    assert!(s.pending_latch.take().is_some());
}

#[test]
fn drops_foreign_source_after_latch() {
    let mut s = session(params(PEER_A), params(PEER_B));
    let now = Instant::now();
    send(&mut s, LegId::A, SockKind::Rtp, PEER_A, now).unwrap();
    assert_eq!(
        send(&mut s, LegId::A, SockKind::Rtp, ATTACKER, now),
        Err(DropReason::ForeignSource)
    );
    // Same IP, other port, while the latched source is active: refused too.
    assert_eq!(
        send(
            &mut s,
            LegId::A,
            SockKind::Rtp,
            "127.0.0.1:40100",
            now + Duration::from_millis(100)
        ),
        Err(DropReason::ForeignSource)
    );
    // B's media still goes to the latched A.
    let f = send(&mut s, LegId::B, SockKind::Rtp, PEER_B, now).unwrap();
    assert_eq!(f.dst, addr(PEER_A));
    assert_eq!(s.legs[0].counters.dropped.get(DropReason::ForeignSource), 2);
}

#[test]
fn relatches_after_idle_only_from_an_allowed_source() {
    let mut s = session(params(PEER_A), params(PEER_B));
    let t0 = Instant::now();
    send(&mut s, LegId::A, SockKind::Rtp, PEER_A, t0).unwrap();
    let later = t0 + Duration::from_secs(3);
    // An attacker from another IP never re-latches, even after silence.
    assert_eq!(
        send(&mut s, LegId::A, SockKind::Rtp, ATTACKER, later),
        Err(DropReason::ForeignSource)
    );
    // The peer behind a NAT that moved its port does.
    send(&mut s, LegId::A, SockKind::Rtp, "127.0.0.1:40100", later).unwrap();
    assert_eq!(s.legs[0].latch[0].addr(), Some(addr("127.0.0.1:40100")));
}

#[test]
fn never_relatches_when_policy_says_so() {
    let mut s = session(params(PEER_A), params(PEER_B));
    let t0 = Instant::now();
    let strict_policy = LatchPolicy { relatch_idle: None };
    let mut p = rtp_packet(1, 7);
    s.on_packet(
        LegId::A,
        SockKind::Rtp,
        addr(PEER_A),
        &mut p,
        t0,
        &strict_policy,
    )
    .unwrap();
    let r = s.on_packet(
        LegId::A,
        SockKind::Rtp,
        addr("127.0.0.1:40100"),
        &mut p,
        t0 + Duration::from_secs(3600),
        &strict_policy,
    );
    assert_eq!(r, Err(DropReason::ForeignSource));
}

#[test]
fn strict_mode_pins_the_port() {
    let mut a = params(PEER_A);
    a.latch_mode = LatchMode::Strict;
    let mut s = session(a, params(PEER_B));
    let now = Instant::now();
    assert_eq!(
        send(&mut s, LegId::A, SockKind::Rtp, "127.0.0.1:40100", now),
        Err(DropReason::UnexpectedSource)
    );
    send(&mut s, LegId::A, SockKind::Rtp, PEER_A, now).unwrap();
}

#[test]
fn nat_peer_latches_from_the_signalling_ip_and_gets_media_there() {
    let mut a = params("10.0.0.5:4000");
    a.expected_ip = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut s = session(a, params(PEER_B));
    let now = Instant::now();
    // Before the peer speaks, media goes to the SDP address.
    assert_eq!(
        send(&mut s, LegId::B, SockKind::Rtp, PEER_B, now)
            .unwrap()
            .dst,
        addr("10.0.0.5:4000")
    );
    send(&mut s, LegId::A, SockKind::Rtp, "127.0.0.1:61000", now).unwrap();
    assert_eq!(
        send(&mut s, LegId::B, SockKind::Rtp, PEER_B, now)
            .unwrap()
            .dst,
        addr("127.0.0.1:61000")
    );
}

#[test]
fn learn_any_latches_the_first_source() {
    let mut a = params(PEER_A);
    a.latch_mode = LatchMode::LearnAny;
    let mut s = session(a, params(PEER_B));
    send(&mut s, LegId::A, SockKind::Rtp, ATTACKER, Instant::now()).unwrap();
}

#[test]
fn no_expected_source_means_nothing_latches() {
    let mut a = params(PEER_A);
    a.remote_rtp = None;
    let mut s = session(a, params(PEER_B));
    assert_eq!(
        send(&mut s, LegId::A, SockKind::Rtp, PEER_A, Instant::now()),
        Err(DropReason::UnexpectedSource)
    );
}

#[test]
fn hold_directions_gate_media_but_not_rtcp() {
    let now = Instant::now();
    let cases = [
        (Direction::SendOnly, true, false),
        (Direction::RecvOnly, false, true),
        (Direction::Inactive, false, false),
        (Direction::SendRecv, true, true),
    ];
    for (dir, a_to_b, b_to_a) in cases {
        let mut a = params(PEER_A);
        a.direction = dir;
        let mut s = session(a, params(PEER_B));
        assert_eq!(
            send(&mut s, LegId::A, SockKind::Rtp, PEER_A, now).is_ok(),
            a_to_b,
            "{dir:?} A->B"
        );
        assert_eq!(
            send(&mut s, LegId::B, SockKind::Rtp, PEER_B, now).is_ok(),
            b_to_a,
            "{dir:?} B->A"
        );
        assert!(
            send(&mut s, LegId::A, SockKind::Rtcp, "127.0.0.1:40001", now).is_ok(),
            "{dir:?} RTCP"
        );
    }
}

#[test]
fn rtcp_goes_to_rtp_port_plus_one_or_the_mux_port() {
    let now = Instant::now();
    let mut s = session(params(PEER_A), params(PEER_B));
    let f = send(&mut s, LegId::A, SockKind::Rtcp, "127.0.0.1:40001", now).unwrap();
    assert_eq!(
        f,
        Forward {
            out_sock: 3,
            dst: addr("127.0.0.1:50001")
        }
    );
    assert_eq!(s.legs[0].counters.rtcp_packets_in, 1);

    let mut b = params(PEER_B);
    b.rtcp_mux = true;
    let mut a = params(PEER_A);
    a.rtcp_mux = true;
    let mut s = session(a, b);
    let mut sr = rtcp_sr(9);
    let f = s
        .on_packet(LegId::A, SockKind::Rtp, addr(PEER_A), &mut sr, now, &POLICY)
        .unwrap();
    assert_eq!(
        f,
        Forward {
            out_sock: 2,
            dst: addr(PEER_B)
        }
    );
}

#[test]
fn rtcp_on_rtp_port_without_mux_is_dropped() {
    let mut s = session(params(PEER_A), params(PEER_B));
    let mut sr = rtcp_sr(9);
    let r = s.on_packet(
        LegId::A,
        SockKind::Rtp,
        addr(PEER_A),
        &mut sr,
        Instant::now(),
        &POLICY,
    );
    assert_eq!(r, Err(DropReason::UnknownProtocol));
}

#[test]
fn malformed_packets_are_counted_by_reason() {
    let mut s = session(params(PEER_A), params(PEER_B));
    let now = Instant::now();
    let mut short = vec![0x80, 0, 0];
    assert_eq!(
        s.on_packet(
            LegId::A,
            SockKind::Rtp,
            addr(PEER_A),
            &mut short,
            now,
            &POLICY
        ),
        Err(DropReason::TooShort)
    );
    let mut v1 = rtp_packet(1, 1);
    v1[0] = 0x40;
    assert!(s
        .on_packet(LegId::A, SockKind::Rtp, addr(PEER_A), &mut v1, now, &POLICY)
        .is_err());
    let mut stun = vec![0u8; 20];
    assert_eq!(
        s.on_packet(
            LegId::A,
            SockKind::Rtp,
            addr(PEER_A),
            &mut stun,
            now,
            &POLICY
        ),
        Err(DropReason::UnknownProtocol)
    );
    let mut bad_rtcp = vec![0x80, 200, 0, 50, 0, 0, 0, 0];
    assert_eq!(
        s.on_packet(
            LegId::A,
            SockKind::Rtcp,
            addr(PEER_A),
            &mut bad_rtcp,
            now,
            &POLICY
        ),
        Err(DropReason::RtcpMalformed)
    );
    assert_eq!(s.legs[0].counters.dropped.total(), 4);
    // Malformed input never latches.
    assert_eq!(s.legs[0].latch, [Latch::Open, Latch::Open]);
}

#[test]
fn no_destination_until_the_far_peer_is_known() {
    let mut b = params(PEER_B);
    b.remote_rtp = None;
    b.expected_ip = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut s = session(params(PEER_A), b);
    let now = Instant::now();
    assert_eq!(
        send(&mut s, LegId::A, SockKind::Rtp, PEER_A, now),
        Err(DropReason::NoDestination)
    );
    // Once B speaks, it has a destination.
    send(&mut s, LegId::B, SockKind::Rtp, PEER_B, now).unwrap();
    assert_eq!(
        send(&mut s, LegId::A, SockKind::Rtp, PEER_A, now)
            .unwrap()
            .dst,
        addr(PEER_B)
    );
}

#[test]
fn update_with_a_new_remote_relatches() {
    let mut s = session(params(PEER_A), params(PEER_B));
    let now = Instant::now();
    send(&mut s, LegId::A, SockKind::Rtp, PEER_A, now).unwrap();
    let u = LegUpdate {
        remote_rtp: Some(addr("127.0.0.3:7000")),
        ..Default::default()
    };
    s.legs[0].update(&u, 1);
    assert_eq!(s.legs[0].latch[0], Latch::Open);
    assert_eq!(
        send(&mut s, LegId::A, SockKind::Rtp, PEER_A, now),
        Err(DropReason::UnexpectedSource)
    );
    send(&mut s, LegId::A, SockKind::Rtp, "127.0.0.3:7000", now).unwrap();
}

#[test]
fn update_of_direction_only_keeps_the_latch() {
    let mut s = session(params(PEER_A), params(PEER_B));
    let now = Instant::now();
    send(&mut s, LegId::A, SockKind::Rtp, PEER_A, now).unwrap();
    s.legs[0].update(
        &LegUpdate {
            direction: Some(Direction::SendOnly),
            ..Default::default()
        },
        1,
    );
    assert_eq!(s.legs[0].latch[0].addr(), Some(addr(PEER_A)));
}

#[test]
fn rewrites_ssrc_and_keeps_sequence_continuous_across_ssrc_change() {
    let mut b = params(PEER_B);
    b.rewrite_ssrc = true;
    let mut s = session(params(PEER_A), b);
    let now = Instant::now();
    let mut out = Vec::new();
    for (seq, ssrc) in [(100u16, 1u32), (101, 1), (102, 1), (5000, 2), (5001, 2)] {
        let mut p = rtp_packet(seq, ssrc);
        s.on_packet(LegId::A, SockKind::Rtp, addr(PEER_A), &mut p, now, &POLICY)
            .unwrap();
        let h = rtp::parse(&p).unwrap();
        out.push((h.seq, h.ssrc));
    }
    let ssrc = out[0].1;
    assert!(out.iter().all(|(_, s)| *s == ssrc));
    assert_ne!(ssrc, 1);
    let seqs: Vec<u16> = out.iter().map(|(q, _)| *q).collect();
    assert_eq!(seqs, vec![100, 101, 102, 103, 104]);
}

#[test]
fn ipv4_mapped_source_matches_expected_ipv4() {
    let mut s = session(params(PEER_A), params(PEER_B));
    send(
        &mut s,
        LegId::A,
        SockKind::Rtp,
        "[::ffff:127.0.0.1]:40000",
        Instant::now(),
    )
    .unwrap();
}

#[test]
fn last_activity_follows_accepted_packets_only() {
    let mut s = session(params(PEER_A), params(PEER_B));
    let created = s.created;
    let later = created + Duration::from_secs(10);
    let _ = send(&mut s, LegId::A, SockKind::Rtp, ATTACKER, later);
    assert_eq!(s.last_activity(), created);
    send(&mut s, LegId::A, SockKind::Rtp, PEER_A, later).unwrap();
    assert_eq!(s.last_activity(), later);
}

proptest! {
    /// Whatever sources send in whatever order, once a leg has latched it never
    /// forwards a packet from any other source until the idle time passes.
    #[test]
    fn latched_leg_only_forwards_its_source(
        sources in proptest::collection::vec((1u8..4, 40000u16..40003), 1..40),
    ) {
        let mut s = session(params(PEER_A), params(PEER_B));
        let policy = LatchPolicy { relatch_idle: None };
        let now = Instant::now();
        let mut latched: Option<SocketAddr> = None;
        for (host, port) in sources {
            let src = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)), port);
            let mut p = rtp_packet(1, 1);
            let r = s.on_packet(LegId::A, SockKind::Rtp, src, &mut p, now, &policy);
            match latched {
                None if r.is_ok() => {
                    prop_assert_eq!(src.ip(), addr(PEER_A).ip());
                    latched = Some(src);
                }
                None => prop_assert_eq!(r, Err(DropReason::UnexpectedSource)),
                Some(l) if l == src => prop_assert!(r.is_ok()),
                Some(_) => prop_assert_eq!(r, Err(DropReason::ForeignSource)),
            }
        }
    }

    /// The rewritten sequence never jumps, whatever the incoming SSRC changes.
    #[test]
    fn rewritten_sequence_is_continuous(
        runs in proptest::collection::vec((any::<u32>(), any::<u16>(), 1usize..20), 1..8),
    ) {
        let mut b = params(PEER_B);
        b.rewrite_ssrc = true;
        let mut s = session(params(PEER_A), b);
        let now = Instant::now();
        let mut prev: Option<u16> = None;
        let mut last_ssrc: Option<u32> = None;
        for (ssrc, start, len) in runs {
            // A new run is a new source: the same SSRC again would be a real gap.
            let ssrc = if last_ssrc == Some(ssrc) { ssrc.wrapping_add(1) } else { ssrc };
            last_ssrc = Some(ssrc);
            for k in 0..len {
                let mut p = rtp_packet(start.wrapping_add(k as u16), ssrc);
                s.on_packet(LegId::A, SockKind::Rtp, addr(PEER_A), &mut p, now, &POLICY).unwrap();
                let seq = rtp::parse(&p).unwrap().seq;
                if let Some(q) = prev {
                    prop_assert_eq!(seq, q.wrapping_add(1));
                }
                prev = Some(seq);
            }
        }
    }
}
