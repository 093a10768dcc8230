//! End-to-end relay through the real `kordon dataplane` binary: RTP both ways
//! through real UDP sockets, from Kordon's advertised addresses, payload intact,
//! counters that match on Get and Delete, on both IO backends.

mod common;

use common::*;

/// Relays `n` packets each way through a fresh session and checks the
/// counters of GetSession and DeleteSession.
fn relay_both_ways_and_count(k: &Kordon, id: &str, n: u16) {
    let (a, b) = (Peer::bind("127.0.0.1"), Peer::bind("127.0.0.1"));
    let call = k.call(id, &a, &b);
    assert_eq!(call.a_local.ip().to_string(), "127.0.0.1");
    assert_ne!(call.a_local, call.b_local);
    assert_eq!(call.a_local.port() % 2, 0, "RTP ports are even");

    relay(&a, call.a_local, &b, call.b_local, 0xA1, 100, n);
    relay(&b, call.b_local, &a, call.a_local, 0xB2, 500, n);

    let n64 = u64::from(n);
    let bytes = n64 * (12 + PAYLOAD_LEN as u64);
    let s = k.wait_session(id, "counting every packet", |s| {
        counters(leg_a(s)).packets_out == n64 && counters(leg_b(s)).packets_out == n64
    });
    for l in [leg_a(&s), leg_b(&s)] {
        let c = counters(l);
        assert_eq!(c.rtp_packets_in, n64, "{c:?}");
        assert_eq!(c.rtp_bytes_in, bytes, "{c:?}");
        assert_eq!(c.bytes_out, bytes, "{c:?}");
        assert!(c.dropped.is_empty(), "nothing dropped: {c:?}");
        assert!(c.last_packet_unix_ms > 0, "{c:?}");
    }
    assert_eq!(
        addr(&leg_a(&s).latched_rtp),
        a.addr(),
        "leg A latched to its peer"
    );
    assert_eq!(
        addr(&leg_b(&s).latched_rtp),
        b.addr(),
        "leg B latched to its peer"
    );

    let fin = k.delete(id).expect("DeleteSession");
    assert_eq!(
        counters(leg_a(&fin)),
        counters(leg_a(&s)),
        "final counters of leg A"
    );
    assert_eq!(
        counters(leg_b(&fin)),
        counters(leg_b(&s)),
        "final counters of leg B"
    );
    assert_status(k.get(id), tonic::Code::NotFound, "session_id");
}

#[test]
fn relays_rtp_both_ways_from_advertised_addresses_and_counts_it() {
    let k = Kordon::start(Config::new());
    relay_both_ways_and_count(&k, "relay-1", 50);
    let t = k.total();
    assert_eq!(t.rx_packets, 100);
    assert_eq!(t.tx_packets, 100);
    assert_eq!(t.sessions, 0);
}

#[test]
fn relays_many_sessions_spread_over_workers() {
    let k = Kordon::start(Config::new().workers(2));
    let peers: Vec<(Peer, Peer)> = (0..6)
        .map(|_| (Peer::bind("127.0.0.1"), Peer::bind("127.0.0.1")))
        .collect();
    let calls: Vec<Call> = peers
        .iter()
        .enumerate()
        .map(|(i, (a, b))| k.call(&format!("multi-{i}"), a, b))
        .collect();
    let workers: std::collections::BTreeSet<u32> = calls.iter().map(|c| c.info.worker).collect();
    assert_eq!(workers.len(), 2, "sessions land on both workers");
    // Interleave: every session sends before any receives.
    for (i, ((a, b), c)) in peers.iter().zip(&calls).enumerate() {
        a.send(c.a_local, &rtp(0x100 + i as u32, 1));
        b.send(c.b_local, &rtp(0x200 + i as u32, 1));
    }
    for (i, ((a, b), c)) in peers.iter().zip(&calls).enumerate() {
        let (d, from) = b.expect("A's packet");
        assert_eq!(from, c.b_local);
        check_rtp(&d, 0x100 + i as u32, 1);
        let (d, from) = a.expect("B's packet");
        assert_eq!(from, c.a_local);
        check_rtp(&d, 0x200 + i as u32, 1);
    }
    assert_eq!(k.list().len(), 6);
    let stats = k.stats();
    assert_eq!(stats.workers.len(), 2);
    assert!(stats.workers.iter().all(|w| w.sessions == 3), "{stats:#?}");
}

#[test]
fn relays_with_the_mmsg_backend() {
    let k = Kordon::start(Config::new().backend("mmsg"));
    let stats = k.stats();
    assert_eq!(stats.total.as_ref().unwrap().backend, "mmsg");
    assert!(
        stats.workers.iter().all(|w| w.backend == "mmsg"),
        "{stats:#?}"
    );
    relay_both_ways_and_count(&k, "relay-mmsg", 40);
}

#[test]
fn relays_with_the_io_uring_backend() {
    let k = Kordon::start(Config::new().backend("io_uring"));
    let backend = k.total().backend;
    if backend != "io_uring" {
        // A kernel or sandbox that refuses io_uring: Kordon must say why.
        let log = k.log();
        assert!(
            log.contains("falling back"),
            "backend {backend} without a fallback log line:\n{log}"
        );
        eprintln!("io_uring refused here; the relay runs on {backend}");
    }
    relay_both_ways_and_count(&k, "relay-uring", 40);
}

#[test]
fn advertises_the_configured_address_but_sends_from_the_bound_one() {
    // 1:1 NAT set-up: sockets bind 127.0.0.1, peers are told 192.0.2.10.
    let k = Kordon::start(Config::new().with_advertised("edge", "192.0.2.10"));
    let (a, b) = (Peer::bind("127.0.0.1"), Peer::bind("127.0.0.1"));
    let info = k
        .create(session(
            "nat-adv",
            leg("edge", a.addr()),
            leg("core", b.addr()),
        ))
        .expect("create");
    let adv = addr(&leg_a(&info).local_rtp);
    assert_eq!(adv.ip().to_string(), "192.0.2.10");
    let call = Call::new(info);
    // Media reaches the bound address on the advertised port.
    let a_bound = std::net::SocketAddr::new([127, 0, 0, 1].into(), adv.port());
    relay_one(&a, a_bound, &b, call.b_local, 7, 1);
    relay_one(&b, call.b_local, &a, a_bound, 8, 1);
}

#[test]
fn relays_over_ipv6() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    }
    let mut cfg = Config::new();
    for i in &mut cfg.interfaces {
        i.bind = "::1".into();
    }
    let k = Kordon::start(cfg);
    let (a, b) = (Peer::bind("::1"), Peer::bind("::1"));
    let call = k.call("v6", &a, &b);
    assert_eq!(call.a_local.ip().to_string(), "::1");
    relay(&a, call.a_local, &b, call.b_local, 6, 1, 5);
    relay(&b, call.b_local, &a, call.a_local, 7, 1, 5);
    // An IPv4 remote on an IPv6 interface is refused, naming the field.
    assert_status(
        k.create(session(
            "v4-on-v6",
            leg("edge", "127.0.0.1:5000".parse().unwrap()),
            leg("core", b.addr()),
        )),
        tonic::Code::InvalidArgument,
        "leg_a.remote_rtp.ip",
    );
}
