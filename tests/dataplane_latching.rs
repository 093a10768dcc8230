//! Latching (symmetric RTP) and RTP-Bleed protection, end to end: who may latch
//! a leg, what happens to everyone else, NAT'd peers, strict and learn-any
//! modes, re-latching, and the Latched events that go with it.
//!
//! The "attacker" sends from 127.0.0.2, another loopback address, so it is a
//! different source IP from the peers on 127.0.0.1.

mod common;

use std::time::Duration;

use common::*;
use kordon_proto::v1 as pb;

const SPRAY: u64 = 20;

/// Whether `ev` says leg `leg` of session `id` latched (its RTCP socket when
/// `rtcp`) to `source`.
fn is_latched(
    ev: &pb::Event,
    id: &str,
    leg: pb::LegId,
    rtcp: bool,
    source: std::net::SocketAddr,
) -> bool {
    match &ev.kind {
        Some(pb::event::Kind::Latched(l)) => {
            ev.session_id == id
                && l.leg == leg as i32
                && l.rtcp == rtcp
                && l.source.is_some()
                && addr(&l.source) == source
        }
        _ => false,
    }
}

#[test]
fn foreign_source_cannot_latch_before_the_peer_and_gets_nothing_back() {
    let k = Kordon::start(Config::new());
    let events = k.watch();
    let (a, b) = (Peer::bind("127.0.0.1"), Peer::bind("127.0.0.1"));
    let attacker = Peer::bind("127.0.0.2");
    let call = k.call("bleed-before", &a, &b);

    for i in 0..SPRAY as u16 {
        attacker.send(call.a_local, &rtp(0xBAD, i));
        attacker.send(call.b_local, &rtp(0xBAD, 1000 + i));
    }
    let s = k.wait_session(&call.id, "dropping the spray as unexpected_source", |s| {
        dropped(leg_a(s), "unexpected_source") == SPRAY
            && dropped(leg_b(s), "unexpected_source") == SPRAY
    });
    for l in [leg_a(&s), leg_b(&s)] {
        let c = counters(l);
        assert_eq!(
            (c.rtp_packets_in, c.packets_out),
            (0, 0),
            "spray is neither accepted nor sent: {c:?}"
        );
        assert!(l.latched_rtp.is_none(), "spray must not latch: {l:?}");
    }

    // The real peers still latch, and the first thing each side receives is the
    // other peer's packet: none of the spray went through.
    a.send(call.a_local, &rtp(0xA, 1));
    let (d, from) = b.expect("A's first packet");
    assert_eq!(from, call.b_local);
    check_rtp(&d, 0xA, 1);
    b.send(call.b_local, &rtp(0xB, 1));
    let (d, from) = a.expect("B's first packet");
    assert_eq!(from, call.a_local);
    check_rtp(&d, 0xB, 1);
    relay(&a, call.a_local, &b, call.b_local, 0xA, 2, 10);
    relay(&b, call.b_local, &a, call.a_local, 0xB, 2, 10);

    events.wait_for("Latched leg A to peer A", WAIT, |ev| {
        is_latched(ev, &call.id, pb::LegId::A, false, a.addr())
    });
    events.wait_for("Latched leg B to peer B", WAIT, |ev| {
        is_latched(ev, &call.id, pb::LegId::B, false, b.addr())
    });
    let s = k.get(&call.id).unwrap();
    assert_eq!(addr(&leg_a(&s).latched_rtp), a.addr());
    assert_eq!(addr(&leg_b(&s).latched_rtp), b.addr());
    attacker.expect_silence("an unlatched attacker gets nothing back");
}

#[test]
fn foreign_source_after_latch_is_dropped_and_does_not_redirect_media() {
    // No idle re-latch: the same-IP impostor below must stay foreign however slow
    // the machine is.
    let k = Kordon::start(Config::new().with("relatch_idle_ms = 0"));
    let (a, b) = (Peer::bind("127.0.0.1"), Peer::bind("127.0.0.1"));
    let attacker = Peer::bind("127.0.0.2");
    let impostor = Peer::bind("127.0.0.1"); // the expected IP, another port
    let call = k.call("bleed-after", &a, &b);
    relay_one(&a, call.a_local, &b, call.b_local, 0xA, 1);
    relay_one(&b, call.b_local, &a, call.a_local, 0xB, 1);

    for i in 0..SPRAY as u16 {
        attacker.send(call.a_local, &rtp(0xBAD, i));
        attacker.send(call.b_local, &rtp(0xBAD, 100 + i));
        impostor.send(call.a_local, &rtp(0xBAD, 200 + i));
        impostor.send(call.b_local, &rtp(0xBAD, 300 + i));
    }
    let s = k.wait_session(&call.id, "dropping the spray as foreign_source", |s| {
        dropped(leg_a(s), "foreign_source") == 2 * SPRAY
            && dropped(leg_b(s), "foreign_source") == 2 * SPRAY
    });
    assert_eq!(addr(&leg_a(&s).latched_rtp), a.addr(), "latch unchanged");
    assert_eq!(addr(&leg_b(&s).latched_rtp), b.addr(), "latch unchanged");
    assert_eq!(counters(leg_a(&s)).packets_out, 1);
    assert_eq!(counters(leg_b(&s)).packets_out, 1);

    // Media still goes to the latched peers, and the next thing each receives
    // is the other's packet.
    relay_one(&b, call.b_local, &a, call.a_local, 0xB, 2);
    relay_one(&a, call.a_local, &b, call.b_local, 0xA, 2);
    attacker.expect_silence("the attacker receives none of the media");
    impostor.expect_silence("the same-IP impostor receives none of the media");
}

#[test]
fn strict_mode_refuses_the_right_ip_from_the_wrong_port() {
    let k = Kordon::start(Config::new());
    let events = k.watch();
    let (a, b) = (Peer::bind("127.0.0.1"), Peer::bind("127.0.0.1"));
    let wrong_port = Peer::bind("127.0.0.1");
    let mut la = leg("edge", a.addr());
    la.latch_mode = pb::LatchMode::Strict as i32;
    let call = Call::new(
        k.create(session("strict", la, leg("core", b.addr())))
            .unwrap(),
    );
    assert_eq!(leg_a(&call.info).latch_mode, pb::LatchMode::Strict as i32);

    for i in 0..5 {
        wrong_port.send(call.a_local, &rtp(0xBAD, i));
    }
    let s = k.wait_session(&call.id, "refusing the wrong port", |s| {
        dropped(leg_a(s), "unexpected_source") == 5
    });
    assert!(leg_a(&s).latched_rtp.is_none());

    // The announced port latches; B's media goes to it, not to the wrong port.
    relay_one(&a, call.a_local, &b, call.b_local, 0xA, 1);
    relay_one(&b, call.b_local, &a, call.a_local, 0xB, 1);
    events.wait_for("Latched leg A (strict)", WAIT, |ev| {
        is_latched(ev, &call.id, pb::LegId::A, false, a.addr())
    });
    wrong_port.expect_silence("the wrong port never latched");
}

#[test]
fn expected_ip_mode_latches_the_peer_from_any_port_of_its_ip() {
    let k = Kordon::start(Config::new());
    let (announced, b) = (Peer::bind("127.0.0.1"), Peer::bind("127.0.0.1"));
    let moved = Peer::bind("127.0.0.1"); // the same host, another port (a NAT binding)
    let call = k.call("expected-ip", &announced, &b);
    relay_one(&moved, call.a_local, &b, call.b_local, 0xA, 1);
    relay_one(&b, call.b_local, &moved, call.a_local, 0xB, 1);
    announced.expect_silence("media follows the latched port, not the announced one");
}

#[test]
fn natted_peer_latches_from_the_expected_ip_and_gets_media_there_not_at_the_sdp_address() {
    let k = Kordon::start(Config::new());
    let events = k.watch();
    // The SDP names 127.0.0.9 (a private address behind the NAT); the signalling
    // came from 127.0.0.1, where the NAT maps the phone to some port.
    let sdp = Peer::bind("127.0.0.9");
    let natted = Peer::bind("127.0.0.1");
    let b = Peer::bind("127.0.0.1");
    let mut la = leg("edge", sdp.addr());
    la.expected_source_ip = "127.0.0.1".into();
    let call = Call::new(k.create(session("nat", la, leg("core", b.addr()))).unwrap());
    assert_eq!(leg_a(&call.info).expected_source_ip, "127.0.0.1");

    // The SDP address itself is not the expected source: it cannot latch.
    sdp.send(call.a_local, &rtp(0xBAD, 1));
    k.wait_session(&call.id, "refusing the SDP address as a source", |s| {
        dropped(leg_a(s), "unexpected_source") == 1
    });

    // The NAT'd source latches; media for it goes to where it sent from.
    relay_one(&natted, call.a_local, &b, call.b_local, 0xA, 1);
    events.wait_for("Latched leg A to the NAT address", WAIT, |ev| {
        is_latched(ev, &call.id, pb::LegId::A, false, natted.addr())
    });
    relay(&b, call.b_local, &natted, call.a_local, 0xB, 1, 5);
    let s = k.get(&call.id).unwrap();
    assert_eq!(addr(&leg_a(&s).latched_rtp), natted.addr());
    assert_eq!(
        addr(&leg_a(&s).remote_rtp),
        sdp.addr(),
        "the SDP address is kept as told"
    );
    sdp.expect_silence("no media to the SDP address once latched");
}

#[test]
fn learn_any_latches_the_first_source_when_enabled() {
    let k = Kordon::start(Config::new().with("allow_learn_any = true"));
    let (b, anyone) = (Peer::bind("127.0.0.1"), Peer::bind("127.0.0.2"));
    let mut la = leg("edge", "127.0.0.9:5000".parse().unwrap());
    la.latch_mode = pb::LatchMode::LearnAny as i32;
    let call = Call::new(
        k.create(session("learn-any", la, leg("core", b.addr())))
            .unwrap(),
    );
    relay_one(&anyone, call.a_local, &b, call.b_local, 0xA, 1);
    relay_one(&b, call.b_local, &anyone, call.a_local, 0xB, 1);
    // Once latched, a second source is foreign even in learn-any.
    let second = Peer::bind("127.0.0.3");
    second.send(call.a_local, &rtp(0xBAD, 1));
    k.wait_session(&call.id, "dropping a second source", |s| {
        dropped(leg_a(s), "foreign_source") == 1
    });
}

#[test]
fn relatches_to_a_new_port_only_after_the_latched_source_went_quiet() {
    let k = Kordon::start(Config::new().with("relatch_idle_ms = 1000"));
    let events = k.watch();
    let (old, b) = (Peer::bind("127.0.0.1"), Peer::bind("127.0.0.1"));
    let new = Peer::bind("127.0.0.1");
    let call = k.call("relatch-idle", &old, &b);
    relay_one(&old, call.a_local, &b, call.b_local, 0xA, 1);

    // While the old source is active, the new port is foreign.
    new.send(call.a_local, &rtp(0xC, 1));
    k.wait_session(
        &call.id,
        "refusing the new port while the old one talks",
        |s| dropped(leg_a(s), "foreign_source") == 1,
    );
    relay_one(&old, call.a_local, &b, call.b_local, 0xA, 2);

    // The old source goes quiet; the new one keeps sending and takes over.
    let mut seq = 2;
    wait_until("the new port re-latching leg A", WAIT, || {
        seq += 1;
        new.send(call.a_local, &rtp(0xC, seq));
        b.recv(Duration::from_millis(50))
            .filter(|(d, _)| rtp_id(d) == Some((0xC, seq)))
    });
    events.wait_for("Latched leg A to the new port", WAIT, |ev| {
        is_latched(ev, &call.id, pb::LegId::A, false, new.addr())
    });
    relay_one(&b, call.b_local, &new, call.a_local, 0xB, 1);
    old.expect_silence("media follows the re-latched source");
}

#[test]
fn update_with_relatch_lets_a_new_source_latch_at_once() {
    let k = Kordon::start(Config::new().with("relatch_idle_ms = 0"));
    let (old, b, new) = (
        Peer::bind("127.0.0.1"),
        Peer::bind("127.0.0.1"),
        Peer::bind("127.0.0.1"),
    );
    let call = k.call("relatch-update", &old, &b);
    relay_one(&old, call.a_local, &b, call.b_local, 0xA, 1);
    let s = k
        .update(pb::UpdateSessionRequest {
            session_id: call.id.clone(),
            leg_a: Some(pb::LegUpdate {
                relatch: true,
                ..Default::default()
            }),
            leg_b: None,
        })
        .unwrap();
    assert!(
        leg_a(&s).latched_rtp.is_none(),
        "relatch forgets the source: {s:#?}"
    );
    relay_one(&new, call.a_local, &b, call.b_local, 0xA, 2);
    relay_one(&b, call.b_local, &new, call.a_local, 0xB, 1);
    old.send(call.a_local, &rtp(0xA, 3));
    k.wait_session(&call.id, "the old source now being foreign", |s| {
        dropped(leg_a(s), "foreign_source") == 1
    });
}

#[test]
fn update_to_a_new_remote_moves_media_there() {
    // A re-INVITE moves leg A's peer to another host (127.0.0.3).
    let k = Kordon::start(Config::new().with("relatch_idle_ms = 0"));
    let (old, b) = (Peer::bind("127.0.0.1"), Peer::bind("127.0.0.1"));
    let new = Peer::bind("127.0.0.3");
    let call = k.call("moved", &old, &b);
    relay_one(&old, call.a_local, &b, call.b_local, 0xA, 1);
    relay_one(&b, call.b_local, &old, call.a_local, 0xB, 1);
    let s = k
        .update(pb::UpdateSessionRequest {
            session_id: call.id.clone(),
            leg_a: Some(pb::LegUpdate {
                remote_rtp: Some(ep(new.addr())),
                ..Default::default()
            }),
            leg_b: None,
        })
        .unwrap();
    assert_eq!(addr(&leg_a(&s).remote_rtp), new.addr());
    assert_eq!(leg_a(&s).expected_source_ip, "127.0.0.3");
    assert!(
        leg_a(&s).latched_rtp.is_none(),
        "a new remote forgets the latch"
    );
    // Before the new peer speaks, media already goes to the new remote.
    relay_one(&b, call.b_local, &new, call.a_local, 0xB, 2);
    // The old host is now unexpected; the new one latches.
    old.send(call.a_local, &rtp(0xA, 2));
    k.wait_session(&call.id, "refusing the old host", |s| {
        dropped(leg_a(s), "unexpected_source") == 1
    });
    relay_one(&new, call.a_local, &b, call.b_local, 0xC, 1);
    old.expect_silence("the old host gets nothing after the move");
}
