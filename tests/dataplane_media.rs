//! What flows and what does not, end to end: hold directions set through
//! UpdateSession, RTCP on port + 1 or multiplexed on the RTP port (and during
//! hold), and hostile or malformed datagrams, each counted under its reason.

mod common;

use common::*;
use kordon_proto::v1 as pb;

fn set_direction(k: &Kordon, id: &str, d: pb::Direction) -> pb::SessionInfo {
    let s = k
        .update(pb::UpdateSessionRequest {
            session_id: id.to_string(),
            leg_a: Some(pb::LegUpdate {
                direction: d as i32,
                ..Default::default()
            }),
            leg_b: None,
        })
        .unwrap_or_else(|e| panic!("setting leg A {d:?}: {e}"));
    assert_eq!(leg_a(&s).direction, d as i32);
    assert_eq!(
        leg_b(&s).direction,
        pb::Direction::Sendrecv as i32,
        "leg B untouched"
    );
    s
}

#[test]
fn hold_directions_gate_media_per_way_and_resume() {
    let k = Kordon::start(Config::new());
    let (a, b) = (Peer::bind("127.0.0.1"), Peer::bind("127.0.0.1"));
    let call = k.call("hold", &a, &b);
    assert_eq!(
        leg_a(&call.info).direction,
        pb::Direction::Sendrecv as i32,
        "default direction"
    );
    relay_one(&a, call.a_local, &b, call.b_local, 0xA, 1);
    relay_one(&b, call.b_local, &a, call.a_local, 0xB, 1);

    // A sendonly (A puts B on hold, e.g. music): A -> B flows, B -> A does not.
    set_direction(&k, &call.id, pb::Direction::Sendonly);
    relay_one(&a, call.a_local, &b, call.b_local, 0xA, 2);
    b.send(call.b_local, &rtp(0xB, 2));
    k.wait_session(&call.id, "dropping B -> A for direction", |s| {
        dropped(leg_b(s), "direction") == 1
    });
    a.expect_silence("A is sendonly: it receives nothing");

    // A recvonly: B -> A flows, A -> B does not.
    set_direction(&k, &call.id, pb::Direction::Recvonly);
    relay_one(&b, call.b_local, &a, call.a_local, 0xB, 3);
    a.send(call.a_local, &rtp(0xA, 3));
    k.wait_session(&call.id, "dropping A -> B for direction", |s| {
        dropped(leg_a(s), "direction") == 1
    });
    b.expect_silence("A is recvonly: it sends nothing");

    // A inactive: nothing either way.
    set_direction(&k, &call.id, pb::Direction::Inactive);
    a.send(call.a_local, &rtp(0xA, 4));
    b.send(call.b_local, &rtp(0xB, 4));
    let s = k.wait_session(&call.id, "dropping both ways for direction", |s| {
        dropped(leg_a(s), "direction") == 2 && dropped(leg_b(s), "direction") == 2
    });
    a.expect_silence("inactive");
    b.expect_silence("inactive");
    // Dropped media still comes from the latched peers (counted in, not out).
    assert_eq!(counters(leg_a(&s)).rtp_packets_in, 4);
    assert_eq!(counters(leg_b(&s)).rtp_packets_in, 4);

    // Resume: both ways again, and the latches survived the hold.
    let s = set_direction(&k, &call.id, pb::Direction::Sendrecv);
    assert_eq!(addr(&leg_a(&s).latched_rtp), a.addr());
    relay(&a, call.a_local, &b, call.b_local, 0xA, 5, 5);
    relay(&b, call.b_local, &a, call.a_local, 0xB, 5, 5);
    let s = k.get(&call.id).unwrap();
    assert_eq!(
        counters(leg_b(&s)).packets_out,
        1 + 1 + 5,
        "A -> B: before hold, sendonly, resume"
    );
    assert_eq!(
        counters(leg_a(&s)).packets_out,
        1 + 1 + 5,
        "B -> A: before hold, recvonly, resume"
    );
}

#[test]
fn direction_given_at_create_is_honoured() {
    let k = Kordon::start(Config::new());
    let (a, b) = (Peer::bind("127.0.0.1"), Peer::bind("127.0.0.1"));
    let mut la = leg("edge", a.addr());
    la.direction = pb::Direction::Recvonly as i32;
    let call = Call::new(
        k.create(session("create-recvonly", la, leg("core", b.addr())))
            .unwrap(),
    );
    relay_one(&b, call.b_local, &a, call.a_local, 0xB, 1);
    a.send(call.a_local, &rtp(0xA, 1));
    k.wait_session(&call.id, "dropping A -> B", |s| {
        dropped(leg_a(s), "direction") == 1
    });
    b.expect_silence("A is recvonly");
}

#[test]
fn rtcp_from_port_plus_one_reaches_the_other_peers_port_plus_one() {
    let k = Kordon::start(Config::new());
    let events = k.watch();
    let ((a, a_rtcp), (b, b_rtcp)) = (Peer::pair("127.0.0.1"), Peer::pair("127.0.0.1"));
    let call = k.call("rtcp", &a, &b);
    assert_eq!(call.a_local_rtcp().port(), call.a_local.port() + 1);
    assert_eq!(
        addr(&leg_b(&call.info).remote_rtcp),
        b_rtcp.addr(),
        "default remote RTCP is RTP + 1"
    );

    a_rtcp.send(call.a_local_rtcp(), &rtcp_sr(0xA));
    let (d, from) = b_rtcp.expect("A's sender report on B's RTCP port");
    assert_eq!((d, from), (rtcp_sr(0xA), call.b_local_rtcp()));
    b_rtcp.send(call.b_local_rtcp(), &rtcp_sr(0xB));
    let (d, from) = a_rtcp.expect("B's sender report on A's RTCP port");
    assert_eq!((d, from), (rtcp_sr(0xB), call.a_local_rtcp()));

    events.wait_for("RTCP latch of leg A", WAIT, |ev| {
        ev.session_id == call.id
            && matches!(&ev.kind, Some(pb::event::Kind::Latched(l)) if l.leg == pb::LegId::A as i32 && l.rtcp)
    });
    let s = k.get(&call.id).unwrap();
    for l in [leg_a(&s), leg_b(&s)] {
        let c = counters(l);
        assert_eq!(
            (c.rtcp_packets_in, c.rtcp_bytes_in, c.rtp_packets_in),
            (1, 28, 0),
            "{c:?}"
        );
        assert_eq!(c.packets_out, 1, "{c:?}");
    }
    assert_eq!(addr(&leg_a(&s).latched_rtcp), a_rtcp.addr());
    // RTP is not affected by RTCP latching, and lands on the RTP ports.
    relay_one(&a, call.a_local, &b, call.b_local, 0xA, 1);
    relay_one(&b, call.b_local, &a, call.a_local, 0xB, 1);
}

#[test]
fn rtcp_goes_to_the_announced_remote_rtcp() {
    let k = Kordon::start(Config::new());
    let ((a, a_rtcp), b) = (Peer::pair("127.0.0.1"), Peer::bind("127.0.0.1"));
    let b_rtcp_elsewhere = Peer::bind("127.0.0.1");
    let mut lb = leg("core", b.addr());
    lb.remote_rtcp = Some(ep(b_rtcp_elsewhere.addr()));
    let call = Call::new(
        k.create(session("rtcp-remote", leg("edge", a.addr()), lb))
            .unwrap(),
    );
    a_rtcp.send(call.a_local_rtcp(), &rtcp_sr(0xA));
    let (d, from) = b_rtcp_elsewhere.expect("A's report at B's announced RTCP address");
    assert_eq!((d, from), (rtcp_sr(0xA), call.b_local_rtcp()));
}

#[test]
fn rtcp_mux_relays_sender_reports_on_the_rtp_port() {
    let k = Kordon::start(Config::new());
    let (a, b) = (Peer::bind("127.0.0.1"), Peer::bind("127.0.0.1"));
    let (mut la, mut lb) = (leg("edge", a.addr()), leg("core", b.addr()));
    la.rtcp_mux = true;
    lb.rtcp_mux = true;
    let call = Call::new(k.create(session("rtcp-mux", la, lb)).unwrap());
    assert_eq!(
        call.a_local_rtcp(),
        call.a_local,
        "with mux, RTCP shares the RTP port"
    );
    assert_eq!(call.b_local_rtcp(), call.b_local);

    a.send(call.a_local, &rtcp_sr(0xA));
    let (d, from) = b.expect("A's muxed sender report");
    assert_eq!((d, from), (rtcp_sr(0xA), call.b_local));
    b.send(call.b_local, &rtcp_sr(0xB));
    let (d, from) = a.expect("B's muxed sender report");
    assert_eq!((d, from), (rtcp_sr(0xB), call.a_local));
    // RTP keeps flowing on the same ports.
    relay(&a, call.a_local, &b, call.b_local, 0xA, 1, 3);
    relay(&b, call.b_local, &a, call.a_local, 0xB, 1, 3);
    let s = k.get(&call.id).unwrap();
    let c = counters(leg_a(&s));
    assert_eq!((c.rtcp_packets_in, c.rtp_packets_in), (1, 3), "{c:?}");
}

#[test]
fn rtcp_on_the_rtp_port_without_mux_is_dropped() {
    let k = Kordon::start(Config::new());
    let (a, b) = (Peer::bind("127.0.0.1"), Peer::bind("127.0.0.1"));
    let call = k.call("rtcp-no-mux", &a, &b);
    a.send(call.a_local, &rtcp_sr(0xA));
    k.wait_session(&call.id, "dropping RTCP on the RTP port", |s| {
        dropped(leg_a(s), "unknown_protocol") == 1
    });
    relay_one(&a, call.a_local, &b, call.b_local, 0xA, 1);
}

#[test]
fn rtcp_flows_while_media_is_inactive() {
    let k = Kordon::start(Config::new());
    let ((a, a_rtcp), (b, b_rtcp)) = (Peer::pair("127.0.0.1"), Peer::pair("127.0.0.1"));
    let call = k.call("rtcp-hold", &a, &b);
    set_direction(&k, &call.id, pb::Direction::Inactive);
    a.send(call.a_local, &rtp(0xA, 1));
    b.send(call.b_local, &rtp(0xB, 1));
    k.wait_session(&call.id, "dropping RTP on hold", |s| {
        dropped(leg_a(s), "direction") == 1 && dropped(leg_b(s), "direction") == 1
    });
    a_rtcp.send(call.a_local_rtcp(), &rtcp_sr(0xA));
    let (d, from) = b_rtcp.expect("A's report during hold");
    assert_eq!((d, from), (rtcp_sr(0xA), call.b_local_rtcp()));
    b_rtcp.send(call.b_local_rtcp(), &rtcp_sr(0xB));
    let (d, from) = a_rtcp.expect("B's report during hold");
    assert_eq!((d, from), (rtcp_sr(0xB), call.a_local_rtcp()));
    a.expect_silence("no RTP on hold");
    b.expect_silence("no RTP on hold");
}

#[test]
fn malformed_rtp_is_dropped_and_counted_by_reason_and_valid_rtp_still_flows_on_io_uring() {
    malformed_rtp_is_counted_by_reason("io_uring");
}

#[test]
fn malformed_rtp_is_dropped_and_counted_by_reason_and_valid_rtp_still_flows_on_mmsg() {
    malformed_rtp_is_counted_by_reason("mmsg");
}

/// Sends every kind of malformed RTP then a valid packet; only the valid one
/// is forwarded, the others are counted under their reasons.
fn malformed_rtp_is_counted_by_reason(backend: &'static str) {
    let k = Kordon::start(Config::new().backend(backend));
    let (a, b) = (Peer::bind("127.0.0.1"), Peer::bind("127.0.0.1"));
    let call = k.call("malformed-rtp", &a, &b);
    let valid = rtp(0xA, 7);

    let mut short = valid.clone();
    short.truncate(11);
    let mut csrc = valid.clone();
    csrc[0] = 0x8F; // 15 CSRCs = 60 bytes, only 20 follow the fixed header
    csrc.truncate(32);
    let mut ext = valid.clone();
    ext[0] = 0x90; // X bit; the extension claims 255 words
    ext[12..16].copy_from_slice(&[0xBE, 0xDE, 0x00, 0xFF]);
    ext.truncate(40);
    let mut pad_zero = valid.clone();
    pad_zero[0] = 0xA0; // P bit, padding count 0
    *pad_zero.last_mut().unwrap() = 0;
    let mut pad_long = valid.clone();
    pad_long[0] = 0xA0; // P bit, padding count larger than the payload
    pad_long.truncate(40);
    *pad_long.last_mut().unwrap() = 200;
    let mut stun = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    stun.extend_from_slice(&[7; 12]);
    let too_long = {
        let mut p = valid.clone();
        p.resize(4000, 0x55); // above recv_buffer_bytes (2048)
        p
    };

    let cases: [(&str, &[u8]); 8] = [
        ("too_short", &short),
        ("too_short", &[]),
        ("csrc_overflow", &csrc),
        ("extension_overflow", &ext),
        ("padding_overflow", &pad_zero),
        ("padding_overflow", &pad_long),
        ("unknown_protocol", &stun),
        ("too_long", &too_long),
    ];
    for (_, d) in cases {
        a.send(call.a_local, d);
    }
    // The valid packet after them is the first (and only) thing B receives.
    a.send(call.a_local, &valid);
    let (d, from) = b.expect("the valid packet after the malformed ones");
    assert_eq!(from, call.b_local);
    check_rtp(&d, 0xA, 7);

    let s = k.wait_session(&call.id, "counting every malformed packet", |s| {
        counters(leg_a(s))
            .dropped
            .iter()
            .map(|d| d.count)
            .sum::<u64>()
            == cases.len() as u64
    });
    let la = leg_a(&s);
    for reason in [
        "too_short",
        "csrc_overflow",
        "extension_overflow",
        "padding_overflow",
        "unknown_protocol",
        "too_long",
    ] {
        let want = cases.iter().filter(|(r, _)| *r == reason).count() as u64;
        assert_eq!(
            dropped(la, reason),
            want,
            "{reason}: {:?}",
            counters(la).dropped
        );
    }
    let c = counters(la);
    assert_eq!(
        c.rtp_packets_in, 1,
        "only the valid packet is accepted: {c:?}"
    );
    assert_eq!(counters(leg_b(&s)).packets_out, 1);
    assert_eq!(addr(&la.latched_rtp), a.addr());
    b.expect_silence("nothing malformed is forwarded");
    let t = k.total();
    assert_eq!(worker_dropped(&t, "padding_overflow"), 2);
}

#[test]
fn rtp_versions_other_than_2_are_not_relayed() {
    // RFC 7983 demultiplexes on the first byte: only 128..=191 (version 2) is
    // RTP/RTCP. A packet of RTP size that is neither STUN nor DTLS is a bad RTP
    // version, on either port.
    let k = Kordon::start(Config::new());
    let ((a, a_rtcp), (b, b_rtcp)) = (Peer::pair("127.0.0.1"), Peer::pair("127.0.0.1"));
    let call = k.call("bad-version", &a, &b);
    for first in [0x40u8, 0xC0] {
        let mut p = rtp(0xA, 1);
        p[0] = first;
        a.send(call.a_local, &p);
    }
    let mut v3 = rtcp_sr(0xA);
    v3[0] = 0xC0;
    a_rtcp.send(call.a_local_rtcp(), &v3);
    a.send(call.a_local, &rtp(0xA, 2));
    check_rtp(&b.expect("the valid packet").0, 0xA, 2);
    let s = k.wait_session(&call.id, "counting the bad versions", |s| {
        dropped(leg_a(s), "bad_version") == 3
    });
    assert_eq!(counters(leg_a(&s)).rtcp_packets_in, 0);
    b_rtcp.expect_silence("bad-version RTCP is not relayed");
}

#[test]
fn malformed_rtcp_is_dropped_as_rtcp_malformed_and_valid_rtcp_still_flows() {
    let k = Kordon::start(Config::new());
    // Only the RTCP sockets talk here.
    let ((_a, a_rtcp), (_b, b_rtcp)) = (Peer::pair("127.0.0.1"), Peer::pair("127.0.0.1"));
    let call = k.call("malformed-rtcp", &_a, &_b);
    // Length field says 204 bytes; 8 arrive.
    let lying_length = [0x80u8, 200, 0, 50, 0, 0, 0, 1];
    // A sender report followed by a truncated second packet header.
    let mut cut_compound = rtcp_sr(0xA);
    cut_compound.extend_from_slice(&[0x81, 201]);
    // Not an RTCP packet type (second byte 150).
    let mut not_rtcp_type = rtcp_sr(0xA);
    not_rtcp_type[1] = 150;
    // Garbage: looks like version 2, but nothing adds up.
    let garbage: Vec<u8> = (0..64u8)
        .map(|i| 0x80 | (i.wrapping_mul(37) & 0x3F))
        .collect();
    let cases: [&[u8]; 4] = [&lying_length, &cut_compound, &not_rtcp_type, &garbage];
    for d in cases {
        a_rtcp.send(call.a_local_rtcp(), d);
    }
    a_rtcp.send(call.a_local_rtcp(), &rtcp_sr(0xA));
    let (d, from) = b_rtcp.expect("the valid report after the malformed ones");
    assert_eq!((d, from), (rtcp_sr(0xA), call.b_local_rtcp()));
    let s = k.wait_session(&call.id, "counting malformed RTCP", |s| {
        dropped(leg_a(s), "rtcp_malformed") == 4
    });
    let c = counters(leg_a(&s));
    assert_eq!(c.dropped.len(), 1, "{c:?}");
    assert_eq!(c.rtcp_packets_in, 1);
    b_rtcp.expect_silence("nothing malformed is forwarded");
}

#[test]
fn rewrite_ssrc_gives_the_peer_one_ssrc_and_a_continuous_sequence() {
    let k = Kordon::start(Config::new());
    let (a, b) = (Peer::bind("127.0.0.1"), Peer::bind("127.0.0.1"));
    let mut lb = leg("core", b.addr());
    lb.rewrite_ssrc = true;
    let call = Call::new(
        k.create(session("rewrite", leg("edge", a.addr()), lb))
            .unwrap(),
    );
    assert!(leg_b(&call.info).rewrite_ssrc);
    // A's stream changes SSRC and jumps its sequence midway (a transfer, a
    // re-INVITE to another media server).
    let sent: Vec<(u32, u16)> = (100..103)
        .map(|q| (0x1111, q))
        .chain((5000..5003).map(|q| (0x2222, q)))
        .collect();
    for (ssrc, seq) in &sent {
        a.send(call.a_local, &rtp(*ssrc, *seq));
    }
    let got: Vec<Vec<u8>> = sent
        .iter()
        .map(|_| b.expect("rewritten packet").0)
        .collect();
    let out_ssrc = u32::from_be_bytes(got[0][8..12].try_into().unwrap());
    let first_seq = u16::from_be_bytes([got[0][2], got[0][3]]);
    for (i, (d, (ssrc, seq))) in got.iter().zip(&sent).enumerate() {
        assert_eq!(
            u32::from_be_bytes(d[8..12].try_into().unwrap()),
            out_ssrc,
            "one SSRC towards B"
        );
        assert_eq!(
            u16::from_be_bytes([d[2], d[3]]),
            first_seq.wrapping_add(i as u16),
            "no sequence jump"
        );
        let mut expect = rtp(*ssrc, *seq);
        expect[2..4].copy_from_slice(&d[2..4]);
        expect[8..12].copy_from_slice(&d[8..12]);
        assert_eq!(d, &expect, "only SSRC and sequence are rewritten");
    }
    // Towards A nothing is rewritten.
    relay_one(&b, call.b_local, &a, call.a_local, 0x3333, 7);
}

#[test]
fn turning_rtcp_mux_off_by_update_opens_the_rtcp_ports() {
    let k = Kordon::start(Config::new());
    let ((a, a_rtcp), (b, b_rtcp)) = (Peer::pair("127.0.0.1"), Peer::pair("127.0.0.1"));
    let (mut la, mut lb) = (leg("edge", a.addr()), leg("core", b.addr()));
    la.rtcp_mux = true;
    lb.rtcp_mux = true;
    let call = Call::new(k.create(session("mux-off", la, lb)).unwrap());
    a.send(call.a_local, &rtcp_sr(0xA));
    assert_eq!(b.expect("muxed report").0, rtcp_sr(0xA));

    let mux_off = || pb::LegUpdate {
        rtcp_mux: Some(false),
        ..Default::default()
    };
    let s = k
        .update(pb::UpdateSessionRequest {
            session_id: call.id.clone(),
            leg_a: Some(mux_off()),
            leg_b: Some(mux_off()),
        })
        .unwrap();
    let call = Call::new(s);
    assert_eq!(call.a_local_rtcp().port(), call.a_local.port() + 1);
    a_rtcp.send(call.a_local_rtcp(), &rtcp_sr(0xA));
    let (d, from) = b_rtcp.expect("A's report on port + 1 after mux is off");
    assert_eq!((d, from), (rtcp_sr(0xA), call.b_local_rtcp()));
    b_rtcp.send(call.b_local_rtcp(), &rtcp_sr(0xB));
    let (d, from) = a_rtcp.expect("B's report on port + 1 after mux is off");
    assert_eq!((d, from), (rtcp_sr(0xB), call.a_local_rtcp()));
    relay_one(&a, call.a_local, &b, call.b_local, 0xA, 1);
}
