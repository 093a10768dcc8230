//! The data plane under load, end to end.
//!
//! - Overload and recovery: one worker with a small per-turn cap and small
//!   buffers is blasted from several sockets; it must report the overload
//!   (capped turns, a WorkerOverload event) and, once the blast stops, every
//!   stream of every session must flow again: no receive is disabled for good.
//! - Port reuse while media pours in: the ports of a deleted session can be
//!   requested again as soon as DeleteSession has answered.
//!
//! In their own test binary, one test at a time ([`common::exclusive`]): the
//! blasts take the machine's CPUs, and other tests would only slow them down
//! (cargo runs test binaries one after another).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use kordon_proto::v1 as pb;

const SESSIONS: usize = 4;
/// Blast at least this long, and until the worker reported capped turns.
const BLAST_MIN: Duration = Duration::from_millis(1500);
/// Never blast longer than this.
const BLAST_MAX: Duration = Duration::from_secs(5);
/// Paced packets per stream after the blast.
const GENTLE: u16 = 5;

fn overload_and_recover(backend: &'static str) {
    let _alone = exclusive();
    let k = Kordon::start(
        Config::new()
            .backend(backend)
            .with("max_packets_per_turn = 16")
            .with("socket_rcvbuf_bytes = 32768")
            .with("socket_sndbuf_bytes = 32768")
            .with("recv_buffers = 64"),
    );
    let events = k.watch();
    let peers: Vec<(Peer, Peer)> = (0..SESSIONS)
        .map(|_| (Peer::bind("127.0.0.1"), Peer::bind("127.0.0.1")))
        .collect();
    let calls: Vec<Call> = peers
        .iter()
        .enumerate()
        .map(|(i, (a, b))| k.call(&format!("{backend}-overload-{i}"), a, b))
        .collect();
    // Latch every leg first, so the blast is accepted media, not unexpected sources.
    for (i, ((a, b), c)) in peers.iter().zip(&calls).enumerate() {
        relay_one(a, c.a_local, b, c.b_local, 0xA000 + i as u32, 0);
        relay_one(b, c.b_local, a, c.a_local, 0xB000 + i as u32, 0);
    }

    // Two threads, each sending as fast as it can from half of the sockets: on
    // loopback that is well beyond what one worker reading 16 packets a turn
    // through 64 receive buffers carries.
    let stop = Arc::new(AtomicBool::new(false));
    let mut routes: Vec<(std::net::UdpSocket, std::net::SocketAddr)> = Vec::new();
    for ((a, b), c) in peers.iter().zip(&calls) {
        routes.push((a.socket().try_clone().unwrap(), c.a_local));
        routes.push((b.socket().try_clone().unwrap(), c.b_local));
    }
    let mut halves = [Vec::new(), Vec::new()];
    for (i, r) in routes.into_iter().enumerate() {
        halves[i % 2].push(r);
    }
    let blasters: Vec<_> = halves
        .into_iter()
        .map(|routes| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + BLAST_MAX;
                let mut seq = 1u16;
                let mut sent = 0u64;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    for (s, to) in &routes {
                        for _ in 0..8 {
                            if s.send_to(&rtp(0xF100D, seq), to).is_ok() {
                                sent += 1;
                            }
                            seq = seq.wrapping_add(1);
                        }
                    }
                }
                sent
            })
        })
        .collect();
    let started = Instant::now();
    let stats = k.wait_total("reporting capped turns", BLAST_MAX, |t| t.capped_turns > 0);
    if let Some(left) = BLAST_MIN.checked_sub(started.elapsed()) {
        std::thread::sleep(left); // the blast's duration, not a synchronisation
    }
    stop.store(true, Ordering::Relaxed);
    let sent: u64 = blasters.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(stats.capped_turns > 0);
    let ev = events.wait_for(
        "WorkerOverload",
        WAIT,
        |ev| matches!(&ev.kind, Some(pb::event::Kind::WorkerOverload(w)) if w.capped_turns > 0),
    );
    assert!(
        ev.session_id.is_empty(),
        "a worker-level event has no session: {ev:?}"
    );

    // Let the backlog drain: the worker's receive count stops moving once the
    // blast's queued packets are handled; then empty the peers' queues so the
    // paced packets below are not dropped behind blast leftovers.
    let mut last = k.total().rx_packets;
    wait_until("the worker to finish the backlog", WAIT, || {
        std::thread::sleep(Duration::from_millis(50)); // poll interval
        let now = k.total().rx_packets;
        let quiet = now == last;
        last = now;
        quiet.then_some(())
    });
    for (a, b) in &peers {
        a.drain();
        b.drain();
    }

    // Recovery: every stream of every session carries paced packets again, each
    // one waited for before the next is sent.
    for (i, ((a, b), c)) in peers.iter().zip(&calls).enumerate() {
        for (from, to, at, via, ssrc) in [
            (a, c.a_local, b, c.b_local, 0xC0DE_A000 + i as u32),
            (b, c.b_local, a, c.a_local, 0xC0DE_B000 + i as u32),
        ] {
            for seq in 1..=GENTLE {
                from.send(to, &rtp(ssrc, seq));
                let (d, src) = at.expect_matching(
                    &format!(
                        "{} paced packet {seq} of stream {ssrc:#x} after the blast",
                        c.id
                    ),
                    RECV_TIMEOUT,
                    |d, _| rtp_id(d) == Some((ssrc, seq)),
                );
                assert_eq!(src, via);
                check_rtp(&d, ssrc, seq);
            }
        }
    }
    let t = k.total();
    eprintln!(
        "{backend}: blasted {sent} packets; kordon rx {} tx {} capped_turns {} recv_rearms {} send_errors {} dropped {:?}",
        t.rx_packets, t.tx_packets, t.capped_turns, t.recv_rearms, t.send_errors, t.dropped
    );
    assert!(
        t.rx_packets < sent,
        "the blast was more than the worker could read"
    );
    if t.backend == "io_uring" {
        assert!(
            t.recv_rearms > 0,
            "64 receive buffers ran out and receives were re-armed: {t:#?}"
        );
    }
}

#[test]
fn overloaded_io_uring_worker_reports_it_and_every_stream_recovers() {
    overload_and_recover("io_uring");
}

#[test]
fn overloaded_mmsg_worker_reports_it_and_every_stream_recovers() {
    overload_and_recover("mmsg");
}

/// Deletes a session receiving a media stream and at once re-creates it on the
/// same requested ports, `ROUNDS` times.
fn recreate_on_the_same_ports_right_after_delete(backend: &'static str) {
    const ROUNDS: usize = 40;
    let _alone = exclusive();
    let k = Kordon::start(Config::new().backend(backend));
    let (a, b) = (Peer::bind("127.0.0.1"), Peer::bind("127.0.0.1"));
    let first = k.call("reuse-0", &a, &b);
    // Two senders outpace one worker, so it always has a backlog of received
    // packets: work the worker does after answering the delete waits behind it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let blasters: Vec<_> = (0..2)
        .map(|_| {
            let (stop, to, sock) = (stop.clone(), first.a_local, a.socket().try_clone().unwrap());
            std::thread::spawn(move || {
                let p = rtp(1, 1);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for _ in 0..32 {
                        let _ = sock.send_to(&p, to);
                    }
                }
            })
        })
        .collect();
    let mut want = session("reuse", leg("edge", a.addr()), leg("core", b.addr()));
    want.leg_a.as_mut().unwrap().requested_rtp_port = u32::from(first.a_local.port());
    want.leg_b.as_mut().unwrap().requested_rtp_port = u32::from(first.b_local.port());
    let mut failures = Vec::new();
    for i in 1..=ROUNDS {
        k.wait_session(&format!("reuse-{}", i - 1), "receiving media", |s| {
            counters(leg_a(s)).rtp_packets_in > 0
        });
        k.delete(&format!("reuse-{}", i - 1)).unwrap();
        want.session_id = format!("reuse-{i}");
        if let Err(e) = k.create(want.clone()) {
            failures.push(format!(
                "{}: {:?} {}",
                want.session_id,
                e.code(),
                e.message()
            ));
            // Let the close finish, then go on with the next round.
            wait_until("the old ports to come back", WAIT, || {
                k.create(want.clone()).ok()
            });
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in blasters {
        t.join().unwrap();
    }
    assert!(
        failures.is_empty(),
        "{} of {ROUNDS} re-creates refused right after the delete: {failures:#?}",
        failures.len()
    );
}

// A control plane that re-creates a session on the same ports right after
// deleting it (restart recovery, a re-INVITE handled as delete + create) must
// get them, even while media still pours into the old session.

#[test]
fn ports_of_a_deleted_session_can_be_requested_as_soon_as_delete_answers_on_mmsg() {
    recreate_on_the_same_ports_right_after_delete("mmsg");
}

#[test]
fn ports_of_a_deleted_session_can_be_requested_as_soon_as_delete_answers_on_io_uring() {
    recreate_on_the_same_ports_right_after_delete("io_uring");
}
