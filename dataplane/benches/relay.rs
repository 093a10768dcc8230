//! The per-packet decision of a relay, without IO: session lookup by socket
//! handle, parse, latch check, direction, destination and (optionally) the
//! SSRC/sequence rewrite. Groups are named by what varies.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kordon_dataplane::packet::rtp;
use kordon_dataplane::session::{
    Direction, LatchMode, LatchPolicy, Leg, LegId, LegParams, Session, SockKind,
};
use slab::Slab;

fn params(remote: SocketAddr, rewrite: bool) -> LegParams {
    LegParams {
        remote_rtp: Some(remote),
        remote_rtcp: None,
        expected_ip: None,
        direction: Direction::SendRecv,
        rtcp_mux: false,
        latch_mode: LatchMode::ExpectedIp,
        rewrite_ssrc: rewrite,
    }
}

fn sessions(n: usize, rewrite: bool) -> Slab<Session> {
    let mut slab = Slab::with_capacity(n);
    for i in 0..n {
        let a: SocketAddr = ([127, 0, 0, 1], 20000 + (i % 20000) as u16).into();
        let b: SocketAddr = ([127, 0, 0, 1], 40000 + (i % 20000) as u16).into();
        let base = (i * 4) as u32;
        slab.insert(Session {
            id: format!("s{i}"),
            legs: [
                Leg::new(0, a, [base, base + 1], params(a, false), 1),
                Leg::new(1, b, [base + 2, base + 3], params(b, rewrite), 2),
            ],
            inactivity_timeout: Duration::from_secs(60),
            created_unix_ms: 0,
            created: Instant::now(),
            idle_reported: false,
            pending_latch: None,
        });
    }
    slab
}

fn bench_decision(c: &mut Criterion) {
    let policy = LatchPolicy {
        relatch_idle: Some(Duration::from_secs(2)),
    };
    let mut g = c.benchmark_group("relay/decision");
    g.throughput(Throughput::Elements(1));
    for (name, rewrite, foreign) in [
        ("plain", false, false),
        ("rewrite", true, false),
        ("foreign_drop", false, true),
    ] {
        for n in [100usize, 10_000] {
            let mut slab = sessions(n, rewrite);
            let mut pkt = [0u8; 172];
            rtp::write_header(&mut pkt, 0, false, 1, 160, 0x1234).unwrap();
            let now = Instant::now();
            let mut i = 0usize;
            g.bench_function(BenchmarkId::new(name, format!("sessions{n}")), |bch| {
                bch.iter(|| {
                    i = (i + 7919) % n;
                    let s = slab.get_mut(i).unwrap();
                    let src = if foreign {
                        SocketAddr::from(([127, 0, 0, 2], 9))
                    } else {
                        s.legs[0].params.remote_rtp.unwrap()
                    };
                    let r = s.on_packet(
                        LegId::A,
                        SockKind::Rtp,
                        src,
                        black_box(&mut pkt),
                        now,
                        &policy,
                    );
                    s.pending_latch = None;
                    black_box(r)
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench_decision);
criterion_main!(benches);
