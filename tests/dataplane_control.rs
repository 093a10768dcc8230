//! The gRPC control API end to end: precise errors that name the field,
//! idempotent creates, requested ports, port exhaustion without partial
//! sessions, and the inactivity event.

mod common;

use std::time::Duration;

use common::*;
use kordon_proto::v1 as pb;
use tonic::Code;

fn remote() -> std::net::SocketAddr {
    "127.0.0.1:5000".parse().unwrap()
}

fn ok_session(id: &str) -> pb::CreateSessionRequest {
    session(
        id,
        leg("edge", remote()),
        leg("core", "127.0.0.1:5002".parse().unwrap()),
    )
}

#[test]
fn invalid_creates_name_the_field_and_leave_nothing_behind() {
    let k = Kordon::start(Config::new());
    let free_before = k.total().free_ports;

    let mut r = ok_session("bad");
    r.leg_a = None;
    assert_status(k.create(r), Code::InvalidArgument, "leg_a");

    let mut r = ok_session("bad");
    r.leg_b = None;
    assert_status(k.create(r), Code::InvalidArgument, "leg_b");

    let mut r = ok_session("bad");
    r.leg_a.as_mut().unwrap().interface = "nowhere".into();
    let s = assert_status(k.create(r), Code::InvalidArgument, "leg_a.interface");
    assert!(s.message().contains("nowhere"), "{s:?}");

    let mut r = ok_session("bad");
    r.leg_a.as_mut().unwrap().interface = String::new();
    assert_status(k.create(r), Code::InvalidArgument, "leg_a.interface");

    let mut r = ok_session("bad");
    r.leg_b.as_mut().unwrap().remote_rtp.as_mut().unwrap().ip = "300.1.2.3".into();
    assert_status(k.create(r), Code::InvalidArgument, "leg_b.remote_rtp.ip");

    let mut r = ok_session("bad");
    r.leg_b.as_mut().unwrap().remote_rtp.as_mut().unwrap().ip = "::1".into();
    assert_status(k.create(r), Code::InvalidArgument, "leg_b.remote_rtp.ip");

    let mut r = ok_session("bad");
    r.leg_a.as_mut().unwrap().remote_rtp.as_mut().unwrap().port = 0;
    assert_status(k.create(r), Code::InvalidArgument, "leg_a.remote_rtp.port");

    let mut r = ok_session("bad");
    r.leg_a.as_mut().unwrap().remote_rtp.as_mut().unwrap().port = 70_000;
    assert_status(k.create(r), Code::InvalidArgument, "leg_a.remote_rtp.port");

    let mut r = ok_session("bad");
    r.leg_b.as_mut().unwrap().remote_rtcp = Some(pb::Endpoint {
        ip: "127.0.0.1".into(),
        port: 0,
    });
    assert_status(k.create(r), Code::InvalidArgument, "leg_b.remote_rtcp.port");

    let mut r = ok_session("bad");
    r.leg_a.as_mut().unwrap().expected_source_ip = "a-host-name".into();
    assert_status(
        k.create(r),
        Code::InvalidArgument,
        "leg_a.expected_source_ip",
    );

    let mut r = ok_session("bad");
    r.leg_a.as_mut().unwrap().latch_mode = pb::LatchMode::LearnAny as i32;
    assert_status(k.create(r), Code::InvalidArgument, "leg_a.latch_mode");

    let mut r = ok_session("bad");
    r.leg_b.as_mut().unwrap().direction = 42;
    assert_status(k.create(r), Code::InvalidArgument, "leg_b.direction");

    let mut r = ok_session("bad");
    r.inactivity_timeout_secs = 1_000_000;
    assert_status(
        k.create(r),
        Code::InvalidArgument,
        "inactivity_timeout_secs",
    );

    assert_status(
        k.create(ok_session("")),
        Code::InvalidArgument,
        "session_id",
    );

    assert!(k.list().is_empty(), "no session from a refused create");
    assert_eq!(
        k.total().free_ports,
        free_before,
        "no port held by a refused create"
    );
    // The id of a refused create is free.
    k.create(ok_session("bad"))
        .expect("a valid create with the same id");
}

#[test]
fn unknown_or_empty_session_ids_are_refused_on_every_call() {
    let k = Kordon::start(Config::new());
    assert_status(k.get("nope"), Code::NotFound, "nope");
    assert_status(k.delete("nope"), Code::NotFound, "nope");
    let upd = |id: &str| pb::UpdateSessionRequest {
        session_id: id.into(),
        leg_a: Some(pb::LegUpdate {
            direction: pb::Direction::Inactive as i32,
            ..Default::default()
        }),
        leg_b: None,
    };
    assert_status(k.update(upd("nope")), Code::NotFound, "nope");
    assert_status(k.get(""), Code::InvalidArgument, "session_id");
    assert_status(k.delete(""), Code::InvalidArgument, "session_id");
    assert_status(k.update(upd("")), Code::InvalidArgument, "session_id");
}

#[test]
fn invalid_updates_name_the_field_and_change_nothing() {
    let k = Kordon::start(Config::new());
    let before = k.create(ok_session("upd")).unwrap();
    let bad = |u: pb::LegUpdate| pb::UpdateSessionRequest {
        session_id: "upd".into(),
        leg_a: None,
        leg_b: Some(u),
    };
    assert_status(
        k.update(bad(pb::LegUpdate {
            remote_rtp: Some(pb::Endpoint {
                ip: "not-an-ip".into(),
                port: 4000,
            }),
            direction: pb::Direction::Inactive as i32,
            ..Default::default()
        })),
        Code::InvalidArgument,
        "leg_b.remote_rtp.ip",
    );
    assert_status(
        k.update(bad(pb::LegUpdate {
            latch_mode: pb::LatchMode::LearnAny as i32,
            ..Default::default()
        })),
        Code::InvalidArgument,
        "leg_b.latch_mode",
    );
    let after = k.get("upd").unwrap();
    assert_eq!(
        after.leg_b, before.leg_b,
        "a refused update changes nothing"
    );
}

#[test]
fn create_is_idempotent_and_a_conflicting_retry_is_refused() {
    let k = Kordon::start(Config::new());
    let req = ok_session("idem");
    let first = k.create(req.clone()).unwrap();
    let again = k.create(req.clone()).unwrap();
    assert_eq!(first, again, "a retry gets the first answer");
    assert_eq!(k.list().len(), 1, "and no second session");
    assert_eq!(k.total().sessions, 1);

    let mut other = req.clone();
    other
        .leg_b
        .as_mut()
        .unwrap()
        .remote_rtp
        .as_mut()
        .unwrap()
        .port = 6000;
    assert_status(k.create(other), Code::AlreadyExists, "session_id");
    assert_eq!(
        k.get("idem").unwrap().leg_b,
        first.leg_b,
        "the session is untouched"
    );
}

#[test]
fn requested_ports_are_honoured_after_a_delete_and_refused_when_taken() {
    let k = Kordon::start(Config::new());
    let first = k.create(ok_session("ports")).unwrap();
    let (pa, pb_) = (
        addr(&leg_a(&first).local_rtp).port(),
        addr(&leg_b(&first).local_rtp).port(),
    );

    let mut want = ok_session("ports-again");
    want.leg_a.as_mut().unwrap().requested_rtp_port = u32::from(pa);
    want.leg_b.as_mut().unwrap().requested_rtp_port = u32::from(pb_);
    // Taken by the live session.
    assert_status(
        k.create(want.clone()),
        Code::AlreadyExists,
        "leg_a.requested_rtp_port",
    );

    // After the delete, the same ports are granted (a session re-created after
    // a control plane restart keeps its addresses).
    let free = k.total().free_ports;
    k.delete("ports").unwrap();
    // The pairs come back once the worker closed the sockets; how soon after
    // DeleteSession answers is the concern of dataplane_overload's
    // ports_of_a_deleted_session_can_be_requested_as_soon_as_delete_answers_*.
    k.wait_total("the deleted session's pairs to come back", WAIT, |t| {
        t.free_ports == free + 2
    });
    let again = k.create(want.clone()).expect("re-create on the old ports");
    assert_eq!(addr(&leg_a(&again).local_rtp).port(), pa);
    assert_eq!(addr(&leg_b(&again).local_rtp).port(), pb_);

    // And the session on requested ports relays.
    let (a, b) = (Peer::bind("127.0.0.1"), Peer::bind("127.0.0.1"));
    let call = k.call("ports-relay", &a, &b);
    relay_one(&a, call.a_local, &b, call.b_local, 1, 1);
    assert_eq!(k.list().len(), 2);
}

#[test]
fn requested_port_bound_by_another_program_is_refused() {
    let cfg = Config::new();
    let edge = cfg.interfaces[0].clone();
    let k = Kordon::start(cfg);
    // Another program holds the RTCP half of the last pair of `edge`.
    let port = edge.port_max - 1;
    let squatter =
        std::net::UdpSocket::bind(("127.0.0.1", port + 1)).expect("binding the RTCP port");
    let mut r = ok_session("squatted");
    r.leg_a.as_mut().unwrap().requested_rtp_port = u32::from(port);
    assert_status(
        k.create(r.clone()),
        Code::AlreadyExists,
        "leg_a.requested_rtp_port",
    );
    assert!(k.list().is_empty());
    drop(squatter);
    let s = k.create(r).expect("free once the other program let go");
    assert_eq!(addr(&leg_a(&s).local_rtp).port(), port);
}

#[test]
fn odd_or_out_of_range_requested_ports_are_invalid() {
    let cfg = Config::new();
    let edge = cfg.interfaces[0].clone();
    let k = Kordon::start(cfg);
    for p in [
        u32::from(edge.port_min) + 1,
        u32::from(edge.port_max) + 1,
        u32::from(edge.port_min) - 2,
        70_000,
    ] {
        let mut r = ok_session("odd");
        r.leg_a.as_mut().unwrap().requested_rtp_port = p;
        assert_status(
            k.create(r),
            Code::InvalidArgument,
            "leg_a.requested_rtp_port",
        );
    }
    // Leg B's field is named as such.
    let mut r = ok_session("odd");
    r.leg_b.as_mut().unwrap().requested_rtp_port = u32::from(k.config.interfaces[1].port_max) + 1;
    assert_status(
        k.create(r),
        Code::InvalidArgument,
        "leg_b.requested_rtp_port",
    );
    assert!(k.list().is_empty());
}

#[test]
fn requested_ports_of_two_workers_in_one_session_are_invalid() {
    let cfg = Config::new().workers(2);
    let edge = cfg.interfaces[0].clone();
    let k = Kordon::start(cfg);
    // Pair k belongs to worker k % 2: the first two pairs sit on different workers.
    let mut r = ok_session("split");
    r.leg_a.as_mut().unwrap().requested_rtp_port = u32::from(edge.port_min);
    r.leg_b.as_mut().unwrap().interface = "edge".into();
    r.leg_b.as_mut().unwrap().requested_rtp_port = u32::from(edge.port_min) + 2;
    assert_status(
        k.create(r.clone()),
        Code::InvalidArgument,
        "requested_rtp_port",
    );
    r.leg_b.as_mut().unwrap().requested_rtp_port = u32::from(edge.port_min) + 4;
    let s = k.create(r).expect("both pairs on worker 0");
    assert_eq!(s.worker, 0);
}

#[test]
fn port_exhaustion_is_resource_exhausted_never_a_partial_session() {
    let mut cfg = Config::new();
    // 5 pairs on one interface: two sessions take 4; a third gets one leg's
    // pair and must give it back when the second leg finds none.
    cfg.interfaces.truncate(1);
    cfg.interfaces[0].name = "tiny".into();
    cfg.interfaces[0].port_max = cfg.interfaces[0].port_min + 9;
    let k = Kordon::start(cfg);
    let tiny = |id: &str| {
        session(
            id,
            leg("tiny", remote()),
            leg("tiny", "127.0.0.1:5002".parse().unwrap()),
        )
    };
    assert_eq!(k.total().free_ports, 5);
    k.create(tiny("s1")).unwrap();
    k.create(tiny("s2")).unwrap();
    assert_eq!(k.total().free_ports, 1);

    for _ in 0..3 {
        let s = assert_status(k.create(tiny("s3")), Code::ResourceExhausted, "tiny");
        assert!(
            s.message().contains("leg_b"),
            "the message says which leg found no port: {s:?}"
        );
        assert_eq!(k.list().len(), 2, "no partial session");
        assert_eq!(k.total().free_ports, 1, "leg A's pair was given back");
        assert_status(k.get("s3"), Code::NotFound, "s3");
    }

    k.delete("s1").unwrap();
    // See requested_ports_are_honoured_after_a_delete_and_refused_when_taken.
    k.wait_total("s1's pairs to come back", WAIT, |t| t.free_ports == 3);
    let s3 = k.create(tiny("s3")).expect("a delete frees the pairs");
    assert_eq!(k.list().len(), 2);
    // The new session works.
    let (a, b) = (Peer::bind("127.0.0.1"), Peer::bind("127.0.0.1"));
    k.update(pb::UpdateSessionRequest {
        session_id: "s3".into(),
        leg_a: Some(pb::LegUpdate {
            remote_rtp: Some(ep(a.addr())),
            ..Default::default()
        }),
        leg_b: Some(pb::LegUpdate {
            remote_rtp: Some(ep(b.addr())),
            ..Default::default()
        }),
    })
    .unwrap();
    let call = Call::new(s3);
    relay_one(&a, call.a_local, &b, call.b_local, 3, 1);
}

#[test]
fn inactivity_timeout_raises_an_event() {
    let k = Kordon::start(Config::new());
    let events = k.watch();
    let mut quiet = ok_session("quiet");
    quiet.inactivity_timeout_secs = 1;
    let info = k.create(quiet).unwrap();
    assert_eq!(info.inactivity_timeout_secs, 1);
    // A busy session with the same timeout raises nothing while it talks.
    let (a, b) = (Peer::bind("127.0.0.1"), Peer::bind("127.0.0.1"));
    let mut busy = session("busy", leg("edge", a.addr()), leg("core", b.addr()));
    busy.inactivity_timeout_secs = 1;
    let call = Call::new(k.create(busy).unwrap());

    let mut seq = 0;
    let ev = wait_until("an inactivity event", Duration::from_secs(5), || {
        seq += 1;
        relay_one(&a, call.a_local, &b, call.b_local, 9, seq);
        events
            .try_next()
            .filter(|ev| matches!(ev.kind, Some(pb::event::Kind::InactivityTimeout(_))))
    });
    assert_eq!(
        ev.session_id, "quiet",
        "only the quiet session times out: {ev:?}"
    );
    match ev.kind {
        Some(pb::event::Kind::InactivityTimeout(t)) => assert!(t.idle_secs >= 1, "{t:?}"),
        other => panic!("{other:?}"),
    }
    assert!(
        k.get("quiet").is_ok(),
        "the event does not delete the session"
    );
}

#[test]
fn a_create_abandoned_by_its_client_leaves_no_stuck_id_and_no_orphan_session() {
    let k = Kordon::start(Config::new());
    let free = k.total().free_ports;
    // A gRPC deadline makes client and server drop the request wherever it is;
    // sweeping it over the life of a create stops creates at every step. A retry
    // without a deadline must then get an answer (the first one or a fresh
    // session), the session must be deletable by its id, and nothing may stay
    // behind in a worker.
    for i in 0..40u64 {
        let id = format!("abandoned-{i}");
        let mut req = tonic::Request::new(ok_session(&id));
        req.set_timeout(Duration::from_micros(25 * i));
        let mut c = k.client();
        let _ = k.block_on(async move { c.create_session(req).await });
        let s = wait_until(
            &format!("a retried create of {id} to answer"),
            WAIT,
            || match k.create(ok_session(&id)) {
                Ok(s) => Some(s),
                Err(e) if e.code() == Code::Unavailable => None,
                Err(e) => panic!("retry of {id}: {e:?}"),
            },
        );
        assert_eq!(s.session_id, id);
        k.delete(&id)
            .unwrap_or_else(|e| panic!("deleting {id}: {e:?}"));
    }
    let left: Vec<String> = k.list().into_iter().map(|s| s.session_id).collect();
    assert!(left.is_empty(), "no orphan session: {left:?}");
    let t = k.wait_total("every port back", WAIT, |t| t.free_ports == free);
    assert_eq!(t.sessions, 0);
}

#[test]
fn session_ids_outside_the_contract_are_invalid() {
    // dataplane.proto: "Client-chosen, 1..=256 printable ASCII characters."
    let k = Kordon::start(Config::new());
    assert!(
        k.create(ok_session(&"x".repeat(256))).is_ok(),
        "256 characters are allowed"
    );
    for id in [
        "x".repeat(257),
        "caf\u{e9}".to_string(),
        "tab\there".to_string(),
    ] {
        assert_status(
            k.create(ok_session(&id)),
            Code::InvalidArgument,
            "session_id",
        );
    }
}
