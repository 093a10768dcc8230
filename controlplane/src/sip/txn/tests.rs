//! Transaction layer behaviour under a fake clock: one base `Instant` read
//! once per test, everything else is that base plus durations, and time
//! jumps straight to the next deadline.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::{TimerConfig, Transmit, TxnError, TxnEvent, TxnId, TxnLayer};
use crate::sip::message::{parse, Message, Method, Request, Response};
use crate::sip::{ConnId, Peer, Transport};

// ----- helpers -----

/// The fake clock's origin: the only clock reading under `sip/txn`, and in
/// test code; every other instant is this plus a duration.
fn base() -> Instant {
    Instant::now()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn layer() -> TxnLayer {
    TxnLayer::new(TimerConfig::default(), StdRng::seed_from_u64(7))
}

fn peer(transport: Transport, last: u8) -> Peer {
    Peer {
        transport,
        addr: SocketAddr::from(([192, 0, 2, last], 5060)),
        iface: 0,
        conn: None,
    }
}

/// The far UAS a client transaction talks to.
fn uas() -> Peer {
    peer(Transport::Udp, 20)
}

/// The far UAC a server transaction talks to.
fn uac() -> Peer {
    peer(Transport::Udp, 10)
}

fn parse_request(text: &str) -> Request {
    match parse(text.as_bytes()) {
        Ok(Message::Request(r)) => r,
        other => panic!("test request should parse: {other:?}"),
    }
}

fn parse_message(bytes: &[u8]) -> Message {
    parse(bytes).expect("the layer sends parseable messages")
}

/// A request as a UAC's transaction user hands it over: top Via without a
/// branch.
fn outgoing(method: &str, seq: u32) -> Request {
    parse_request(&format!(
        "{method} sip:bob@192.0.2.20 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.1:5060;rport\r\n\
         Max-Forwards: 70\r\n\
         Route: <sip:edge.example.net;lr>\r\n\
         Route: <sip:core.example.net;lr>\r\n\
         From: \"Alice\" <sip:alice@example.com>;tag=a1\r\n\
         To: <sip:bob@example.com>\r\n\
         Call-ID: call-1@192.0.2.1\r\n\
         CSeq: {seq} {method}\r\n\
         Contact: <sip:alice@192.0.2.1>\r\n\
         Content-Length: 0\r\n\r\n"
    ))
}

/// A request as a UAS receives it.
fn inbound(method: &str, branch: &str, seq: u32, to_tag: Option<&str>) -> Request {
    let to = match to_tag {
        Some(t) => format!("<sip:bob@example.com>;tag={t}"),
        None => "<sip:bob@example.com>".to_string(),
    };
    parse_request(&format!(
        "{method} sip:bob@192.0.2.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@example.com>;tag=a1\r\n\
         To: {to}\r\n\
         Call-ID: call-9@192.0.2.10\r\n\
         CSeq: {seq} {method}\r\n\
         Content-Length: 0\r\n\r\n"
    ))
}

/// A response to `req` carrying To tag `tag` (except for 100).
fn answer(req: &Request, status: u16, tag: &str) -> Response {
    let mut r = Response::for_request(req, status);
    if status > 100 {
        let mut to = r.to().expect("To");
        to.set_tag(tag);
        r.headers.set("To", to.to_string());
    }
    r
}

fn sent(l: &mut TxnLayer) -> Vec<Transmit> {
    std::iter::from_fn(|| l.poll_transmit()).collect()
}

fn sent_messages(l: &mut TxnLayer) -> Vec<Message> {
    sent(l).iter().map(|t| parse_message(&t.bytes)).collect()
}

fn events(l: &mut TxnLayer) -> Vec<TxnEvent> {
    std::iter::from_fn(|| l.poll_event()).collect()
}

fn status_of(m: &Message) -> u16 {
    match m {
        Message::Response(r) => r.status,
        Message::Request(r) => panic!("expected a response, got {}", r.method),
    }
}

fn request_in(m: Message) -> Request {
    match m {
        Message::Request(r) => r,
        Message::Response(r) => panic!("expected a request, got {}", r.status),
    }
}

/// Receives `req` on a fresh server layer and returns its transaction,
/// after checking the Request event (and 100 Trying for INVITE).
fn server_txn(l: &mut TxnLayer, now: Instant, req: Request) -> TxnId {
    server_txn_from(l, now, req, uac())
}

fn server_txn_from(l: &mut TxnLayer, now: Instant, req: Request, from: Peer) -> TxnId {
    let invite = req.method == Method::Invite;
    l.handle_message(now, Message::Request(req), from);
    let out = sent_messages(l);
    if invite {
        assert_eq!(out.len(), 1, "100 Trying at once");
        assert_eq!(status_of(&out[0]), 100);
    } else {
        assert!(out.is_empty());
    }
    match events(l).as_slice() {
        [TxnEvent::Request { txn, peer, .. }] => {
            assert_eq!(*peer, from);
            *txn
        }
        other => panic!("expected one Request event, got {other:?}"),
    }
}

/// Feeds a response to the client layer as if from the UAS.
fn deliver(l: &mut TxnLayer, now: Instant, response: Response) {
    l.handle_message(now, Message::Response(response), uas());
}

/// Steps through `times` (offsets from `t0`), checking that each is the next
/// deadline and that firing it sends exactly one copy of `expected`.
fn expect_retransmits(l: &mut TxnLayer, t0: Instant, times: &[Duration], expected: &[u8]) {
    for &at in times {
        assert_eq!(l.poll_timeout(), Some(t0 + at), "deadline at {at:?}");
        l.handle_timeout(t0 + at);
        let out = sent(l);
        assert_eq!(out.len(), 1, "one retransmission at {at:?}");
        assert_eq!(out[0].bytes.as_ref(), expected, "same bytes at {at:?}");
        assert!(events(l).is_empty(), "no event at {at:?}");
    }
}

/// Cumulative firing offsets of a timer starting at `first`, doubling, capped
/// at `cap`, strictly before `end`.
fn doubling(first: Duration, cap: Duration, end: Duration) -> Vec<Duration> {
    let mut out = Vec::new();
    let (mut at, mut step) = (first, first);
    while at < end {
        out.push(at);
        step = (step * 2).min(cap);
        at += step;
    }
    out
}

// ----- client transactions -----

#[test]
fn send_request_adds_a_fresh_branch_to_the_callers_via() {
    let t0 = base();
    let mut l = layer();
    let a = l.send_request(t0, outgoing("OPTIONS", 1), uas());
    let b = l.send_request(t0, outgoing("OPTIONS", 2), uas());
    let ba = l.request_of(a).expect("live").via_top().expect("via");
    let bb = l.request_of(b).expect("live").via_top().expect("via");
    let (ba, bb) = (ba.branch().expect("branch"), bb.branch().expect("branch"));
    assert!(ba.starts_with("z9hG4bK") && ba.len() > 20, "{ba}");
    assert_ne!(ba, bb);
    let out = sent_messages(&mut l);
    let first = request_in(out[0].clone());
    assert_eq!(first.via_top().expect("via").branch(), Some(ba));
    assert!(first.via_top().expect("via").params.has("rport"));
    assert_eq!(l.peer_of(a), Some(uas()));

    // A branch the caller chose is kept.
    let mut own = outgoing("OPTIONS", 3);
    own.headers
        .set("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKmine");
    let c = l.send_request(t0, own, uas());
    assert_eq!(
        l.request_of(c)
            .and_then(|r| r.via_top().ok())
            .and_then(|v| v.branch().map(str::to_string)),
        Some("z9hG4bKmine".to_string())
    );
}

#[test]
fn timer_a_doubles_until_timer_b_fires() {
    let t0 = base();
    let mut l = layer();
    let txn = l.send_request(t0, outgoing("INVITE", 1), uas());
    let first = sent(&mut l);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].peer, uas());
    // A: 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s (no cap); B at 64*T1 = 32 s.
    let times = doubling(ms(500), secs(3600), secs(32));
    assert_eq!(times.len(), 6);
    assert_eq!(times.last(), Some(&ms(31_500)));
    expect_retransmits(&mut l, t0, &times, &first[0].bytes);
    assert_eq!(l.poll_timeout(), Some(t0 + secs(32)));
    l.handle_timeout(t0 + secs(32));
    assert!(sent(&mut l).is_empty());
    assert_eq!(events(&mut l), vec![TxnEvent::Timeout { txn }]);
    assert!(l.is_empty());
    assert_eq!(l.poll_timeout(), None);
}

#[test]
fn timer_b_can_be_shortened() {
    let t0 = base();
    let cfg = TimerConfig {
        timer_b: Some(secs(4)),
        ..TimerConfig::default()
    };
    let mut l = TxnLayer::new(cfg, StdRng::seed_from_u64(1));
    let txn = l.send_request(t0, outgoing("INVITE", 1), uas());
    let first = sent(&mut l);
    expect_retransmits(&mut l, t0, &[ms(500), ms(1500), ms(3500)], &first[0].bytes);
    assert_eq!(l.poll_timeout(), Some(t0 + secs(4)));
    l.handle_timeout(t0 + secs(4));
    assert_eq!(events(&mut l), vec![TxnEvent::Timeout { txn }]);
}

#[test]
fn timer_e_doubles_up_to_t2_until_timer_f() {
    let t0 = base();
    let mut l = layer();
    let txn = l.send_request(t0, outgoing("OPTIONS", 1), uas());
    let first = sent(&mut l);
    // E: 0.5, 1.5, 3.5, 7.5, then every 4 s: 11.5 ... 31.5; F at 32 s.
    let times = doubling(ms(500), secs(4), secs(32));
    assert_eq!(
        &times[..5],
        &[ms(500), ms(1500), ms(3500), ms(7500), ms(11_500)]
    );
    assert_eq!(times.last(), Some(&ms(31_500)));
    expect_retransmits(&mut l, t0, &times, &first[0].bytes);
    l.handle_timeout(t0 + secs(32));
    assert_eq!(events(&mut l), vec![TxnEvent::Timeout { txn }]);
    assert!(l.is_empty());
}

#[test]
fn timer_e_retransmits_every_t2_after_a_provisional() {
    let t0 = base();
    let mut l = layer();
    let txn = l.send_request(t0, outgoing("OPTIONS", 1), uas());
    let first = sent(&mut l);
    let req = l.request_of(txn).expect("live").clone();
    deliver(&mut l, t0 + ms(200), answer(&req, 100, ""));
    assert!(matches!(
        events(&mut l).as_slice(),
        [TxnEvent::Response { response, .. }] if response.status == 100
    ));
    // The E already armed fires at 0.5 s; from then on every T2.
    expect_retransmits(
        &mut l,
        t0,
        &[ms(500), ms(4500), ms(8500), ms(12_500)],
        &first[0].bytes,
    );
    deliver(&mut l, t0 + secs(13), answer(&req, 200, "b1"));
    assert!(matches!(
        events(&mut l).as_slice(),
        [TxnEvent::Response { txn: t, response }] if *t == txn && response.status == 200
    ));
}

#[test]
fn timer_k_absorbs_retransmitted_responses_then_ends() {
    let t0 = base();
    let mut l = layer();
    let txn = l.send_request(t0, outgoing("OPTIONS", 1), uas());
    sent(&mut l);
    let req = l.request_of(txn).expect("live").clone();
    let ok = answer(&req, 200, "b1");
    deliver(&mut l, t0 + ms(100), ok.clone());
    assert_eq!(events(&mut l).len(), 1);
    deliver(&mut l, t0 + ms(600), ok.clone());
    assert!(events(&mut l).is_empty(), "retransmitted 200 absorbed");
    assert!(sent(&mut l).is_empty(), "no retransmission in Completed");
    assert_eq!(l.poll_timeout(), Some(t0 + ms(100) + secs(5)), "K = T4");
    l.handle_timeout(t0 + ms(5100));
    assert!(l.is_empty());
    assert_eq!(l.request_of(txn), None);
    // Now it is a stray.
    deliver(&mut l, t0 + ms(5200), ok);
    assert!(matches!(
        events(&mut l).as_slice(),
        [TxnEvent::StrayResponse { .. }]
    ));
}

#[test]
fn non_2xx_final_is_acked_per_17_1_1_3_and_timer_d_absorbs_retransmissions() {
    let t0 = base();
    let mut l = layer();
    let txn = l.send_request(t0, outgoing("INVITE", 7), uas());
    sent(&mut l);
    let invite = l.request_of(txn).expect("live").clone();
    let busy = answer(&invite, 486, "b7");
    deliver(&mut l, t0 + ms(300), busy.clone());
    assert!(matches!(
        events(&mut l).as_slice(),
        [TxnEvent::Response { txn: t, response }] if *t == txn && response.status == 486
    ));
    let out = sent(&mut l);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].peer, uas());
    let ack = request_in(parse_message(&out[0].bytes));
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.uri, invite.uri);
    assert_eq!(ack.call_id(), invite.call_id());
    assert_eq!(ack.headers.get("From"), invite.headers.get("From"));
    assert_eq!(
        ack.to().expect("to").tag(),
        Some("b7"),
        "To from the response"
    );
    let cseq = ack.cseq().expect("cseq");
    assert_eq!((cseq.seq, cseq.method), (7, Method::Ack));
    let vias: Vec<_> = ack.headers.get_all("Via").collect();
    assert_eq!(
        vias,
        vec![invite.headers.get("Via").expect("via")],
        "top Via only"
    );
    assert_eq!(
        ack.headers.get_all("Route").collect::<Vec<_>>(),
        invite.headers.get_all("Route").collect::<Vec<_>>()
    );
    assert!(ack.body.is_empty());

    // A retransmitted 486 gets the same ACK, and no second event.
    deliver(&mut l, t0 + ms(800), busy.clone());
    assert!(events(&mut l).is_empty());
    let again = sent(&mut l);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].bytes, out[0].bytes);

    // Timer D: 32 s on UDP.
    assert_eq!(l.poll_timeout(), Some(t0 + ms(300) + secs(32)));
    l.handle_timeout(t0 + ms(300) + secs(32));
    assert!(l.is_empty());
    assert!(events(&mut l).is_empty());
}

#[test]
fn accepted_client_delivers_2xx_retransmissions_until_timer_m() {
    let t0 = base();
    let mut l = layer();
    let txn = l.send_request(t0, outgoing("INVITE", 1), uas());
    sent(&mut l);
    let invite = l.request_of(txn).expect("live").clone();
    deliver(&mut l, t0 + ms(100), answer(&invite, 180, "b1"));
    let ok = answer(&invite, 200, "b1");
    deliver(&mut l, t0 + ms(200), ok.clone());
    deliver(&mut l, t0 + ms(700), ok.clone());
    let ev = events(&mut l);
    let statuses: Vec<u16> = ev
        .iter()
        .map(|e| match e {
            TxnEvent::Response { txn: t, response } if *t == txn => response.status,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(statuses, vec![180, 200, 200], "each 2xx reaches the TU");
    assert!(sent(&mut l).is_empty(), "the layer never ACKs a 2xx");
    // A late non-2xx is absorbed in Accepted.
    deliver(&mut l, t0 + ms(800), answer(&invite, 500, "b1"));
    assert!(events(&mut l).is_empty());
    // Timer M = 64*T1.
    assert_eq!(l.poll_timeout(), Some(t0 + ms(200) + secs(32)));
    l.handle_timeout(t0 + ms(200) + secs(32));
    assert!(l.is_empty());
    deliver(&mut l, t0 + secs(40), ok);
    assert!(matches!(
        events(&mut l).as_slice(),
        [TxnEvent::StrayResponse { response, peer }] if response.status == 200 && *peer == uas()
    ));
}

#[test]
fn cancel_before_any_provisional_waits_for_one() {
    let t0 = base();
    let mut l = layer();
    let invite_txn = l.send_request(t0, outgoing("INVITE", 3), uas());
    sent(&mut l);
    let invite = l.request_of(invite_txn).expect("live").clone();
    let cancel_txn = l.cancel(t0 + ms(100), invite_txn).expect("cancellable");
    assert!(
        sent(&mut l).is_empty(),
        "no CANCEL before a provisional (§9.1)"
    );
    assert_eq!(
        l.cancel(t0 + ms(150), invite_txn),
        Some(cancel_txn),
        "idempotent"
    );
    // The INVITE retransmission goes on meanwhile.
    l.handle_timeout(t0 + ms(500));
    assert_eq!(sent(&mut l).len(), 1);

    deliver(&mut l, t0 + ms(600), answer(&invite, 100, ""));
    let out = sent(&mut l);
    assert_eq!(out.len(), 1, "the CANCEL goes out on the first provisional");
    let cancel = request_in(parse_message(&out[0].bytes));
    assert_eq!(cancel.method, Method::Cancel);
    assert_eq!(cancel.uri, invite.uri);
    assert_eq!(cancel.headers.get("Via"), invite.headers.get("Via"));
    assert_eq!(cancel.headers.get_all("Via").count(), 1);
    for h in ["From", "To", "Call-ID"] {
        assert_eq!(cancel.headers.get(h), invite.headers.get(h), "{h}");
    }
    let cseq = cancel.cseq().expect("cseq");
    assert_eq!((cseq.seq, cseq.method), (3, Method::Cancel));
    assert_eq!(cancel.headers.get_all("Route").count(), 2);
    assert_eq!(
        l.request_of(cancel_txn).map(Request::to_bytes),
        Some(out[0].bytes.clone())
    );

    // The CANCEL is retransmitted on E; its 200 and the INVITE's 487 are
    // routed to the right transactions.
    l.handle_timeout(t0 + ms(1100));
    assert_eq!(sent(&mut l).len(), 1, "CANCEL retransmitted by E");
    events(&mut l);
    deliver(&mut l, t0 + ms(1200), answer(&cancel, 200, "b3"));
    deliver(&mut l, t0 + ms(1300), answer(&invite, 487, "b3"));
    let ev = events(&mut l);
    assert!(
        matches!(&ev[0], TxnEvent::Response { txn, response } if *txn == cancel_txn && response.status == 200)
    );
    assert!(
        matches!(&ev[1], TxnEvent::Response { txn, response } if *txn == invite_txn && response.status == 487)
    );
    assert_eq!(
        l.cancel(t0 + ms(1400), invite_txn),
        Some(cancel_txn),
        "still live in K"
    );
}

#[test]
fn a_held_back_cancel_is_dropped_when_the_invite_ends_first() {
    let t0 = base();
    let mut l = layer();
    let invite_txn = l.send_request(t0, outgoing("INVITE", 1), uas());
    sent(&mut l);
    let invite = l.request_of(invite_txn).expect("live").clone();
    let cancel_txn = l.cancel(t0, invite_txn).expect("cancellable");
    assert_eq!(l.len(), 2);
    deliver(&mut l, t0 + ms(100), answer(&invite, 603, "b1"));
    let out = sent_messages(&mut l);
    assert_eq!(out.len(), 1);
    assert_eq!(
        request_in(out[0].clone()).method,
        Method::Ack,
        "only the ACK"
    );
    assert_eq!(l.request_of(cancel_txn), None);
    assert_eq!(l.len(), 1);
    assert_eq!(
        l.cancel(t0 + ms(200), invite_txn),
        None,
        "nothing left to cancel"
    );
    l.check_invariants();
}

#[test]
fn cancel_after_a_provisional_goes_at_once() {
    let t0 = base();
    let mut l = layer();
    let invite_txn = l.send_request(t0, outgoing("INVITE", 1), uas());
    sent(&mut l);
    let invite = l.request_of(invite_txn).expect("live").clone();
    deliver(&mut l, t0 + ms(50), answer(&invite, 180, "b1"));
    l.cancel(t0 + ms(60), invite_txn).expect("cancellable");
    let out = sent_messages(&mut l);
    assert_eq!(out.len(), 1);
    assert_eq!(request_in(out[0].clone()).method, Method::Cancel);
    // Unknown, non-INVITE and answered transactions cannot be cancelled.
    let options = l.send_request(t0, outgoing("OPTIONS", 2), uas());
    assert_eq!(l.cancel(t0, options), None);
    deliver(&mut l, t0 + ms(70), answer(&invite, 200, "b1"));
    let fresh = l.send_request(t0, outgoing("INVITE", 3), uas());
    let fresh_req = l.request_of(fresh).expect("live").clone();
    deliver(&mut l, t0 + ms(80), answer(&fresh_req, 200, "b2"));
    assert_eq!(l.cancel(t0 + ms(90), fresh), None);
}

#[test]
fn transport_error_fails_pending_client_transactions_to_that_peer() {
    let t0 = base();
    let mut l = layer();
    let far = Peer {
        conn: Some(ConnId(4)),
        ..peer(Transport::Tcp, 30)
    };
    let other = peer(Transport::Tcp, 31);
    let a = l.send_request(t0, outgoing("INVITE", 1), far);
    let b = l.send_request(t0, outgoing("OPTIONS", 2), far);
    let c = l.send_request(t0, outgoing("OPTIONS", 3), other);
    sent(&mut l);
    l.handle_transport_error(t0 + ms(10), far);
    let ev = events(&mut l);
    assert_eq!(
        ev,
        vec![
            TxnEvent::TransportError { txn: a },
            TxnEvent::TransportError { txn: b }
        ]
    );
    assert!(l.request_of(a).is_none() && l.request_of(b).is_none());
    assert!(l.request_of(c).is_some());
    l.check_invariants();
}

#[test]
fn requests_the_layer_cannot_run_fail_or_go_stateless() {
    let t0 = base();
    let mut l = layer();
    let mut no_via = outgoing("OPTIONS", 1);
    no_via.headers.remove("Via");
    let txn = l.send_request(t0, no_via, uas());
    assert_eq!(events(&mut l), vec![TxnEvent::TransportError { txn }]);
    assert!(l.request_of(txn).is_none());
    let ack = l.send_request(t0, outgoing("ACK", 1), uas());
    assert_eq!(sent(&mut l).len(), 1, "ACK sent statelessly");
    assert!(l.request_of(ack).is_none());
    assert!(l.is_empty());
    // Neither id is ever taken by a later transaction.
    let later = l.send_request(t0, outgoing("OPTIONS", 2), uas());
    assert_ne!(later, txn);
    assert_ne!(later, ack);
}

// ----- server transactions -----

#[test]
fn retransmitted_invite_gets_the_last_provisional() {
    let t0 = base();
    let mut l = layer();
    let req = inbound("INVITE", "z9hG4bKin1", 1, None);
    let txn = server_txn(&mut l, t0, req.clone());
    l.handle_message(t0 + ms(500), Message::Request(req.clone()), uac());
    let out = sent_messages(&mut l);
    assert_eq!(out.iter().map(status_of).collect::<Vec<_>>(), vec![100]);
    assert!(
        events(&mut l).is_empty(),
        "a retransmission is no new request"
    );

    let ringing = answer(&req, 180, "u1");
    l.respond(t0 + ms(600), txn, ringing.clone())
        .expect("respond");
    let first = sent(&mut l);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].peer, uac());
    l.handle_message(t0 + ms(1500), Message::Request(req), uac());
    let again = sent(&mut l);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].bytes, ringing.to_bytes());
    assert!(events(&mut l).is_empty());
    assert_eq!(l.poll_timeout(), None, "no timer in Proceeding");
}

#[test]
fn timer_g_doubles_up_to_t2_and_timer_h_reports_a_missing_ack() {
    let t0 = base();
    let mut l = layer();
    let req = inbound("INVITE", "z9hG4bKin2", 1, None);
    let txn = server_txn(&mut l, t0, req.clone());
    let busy = answer(&req, 486, "u2");
    l.respond(t0, txn, busy.clone()).expect("respond");
    assert_eq!(sent(&mut l).len(), 1);
    // G: 0.5, 1.5, 3.5, 7.5, then every 4 s up to H at 32 s.
    let times = doubling(ms(500), secs(4), secs(32));
    expect_retransmits(&mut l, t0, &times, &busy.to_bytes());
    // A retransmitted INVITE also gets the final response.
    l.handle_message(t0 + ms(31_600), Message::Request(req), uac());
    assert_eq!(sent(&mut l).len(), 1);
    assert_eq!(l.poll_timeout(), Some(t0 + secs(32)));
    l.handle_timeout(t0 + secs(32));
    assert_eq!(events(&mut l), vec![TxnEvent::AckTimeout { txn }]);
    assert!(l.is_empty());
}

#[test]
fn ack_confirms_a_non_2xx_and_timer_i_absorbs_its_retransmissions() {
    let t0 = base();
    let mut l = layer();
    let req = inbound("INVITE", "z9hG4bKin3", 1, None);
    let txn = server_txn(&mut l, t0, req.clone());
    l.respond(t0, txn, answer(&req, 404, "u3"))
        .expect("respond");
    sent(&mut l);
    let ack = inbound("ACK", "z9hG4bKin3", 1, Some("u3"));
    l.handle_message(t0 + ms(700), Message::Request(ack.clone()), uac());
    assert!(
        events(&mut l).is_empty(),
        "the ACK of a non-2xx is absorbed"
    );
    assert_eq!(
        l.poll_timeout(),
        Some(t0 + ms(700) + secs(5)),
        "I = T4, G and H off"
    );
    l.handle_message(t0 + ms(900), Message::Request(ack.clone()), uac());
    assert!(events(&mut l).is_empty() && sent(&mut l).is_empty());
    l.handle_timeout(t0 + ms(5700));
    assert!(l.is_empty());
    assert!(sent(&mut l).is_empty());
    assert!(events(&mut l).is_empty());
    // The transaction is gone: a further ACK now goes to the TU.
    l.handle_message(t0 + ms(6000), Message::Request(ack), uac());
    assert!(matches!(events(&mut l).as_slice(), [TxnEvent::Ack { .. }]));
}

#[test]
fn timer_j_answers_retransmitted_requests_then_ends() {
    let t0 = base();
    let mut l = layer();
    let req = inbound("OPTIONS", "z9hG4bKin4", 1, None);
    let txn = server_txn(&mut l, t0, req.clone());
    // Trying absorbs a retransmission.
    l.handle_message(t0 + ms(100), Message::Request(req.clone()), uac());
    assert!(sent(&mut l).is_empty());
    l.respond(t0 + ms(200), txn, answer(&req, 200, "u4"))
        .expect("respond");
    assert_eq!(sent(&mut l).len(), 1);
    assert_eq!(
        l.respond(t0 + ms(250), txn, answer(&req, 500, "u4")),
        Err(TxnError::AlreadyFinal)
    );
    l.handle_message(t0 + ms(300), Message::Request(req.clone()), uac());
    let again = sent_messages(&mut l);
    assert_eq!(again.iter().map(status_of).collect::<Vec<_>>(), vec![200]);
    assert!(events(&mut l).is_empty());
    assert_eq!(l.poll_timeout(), Some(t0 + ms(200) + secs(32)), "J = 64*T1");
    l.handle_timeout(t0 + ms(200) + secs(32));
    assert!(l.is_empty());
}

#[test]
fn ack_for_2xx_stops_its_retransmission_and_reaches_the_tu() {
    let t0 = base();
    let mut l = layer();
    let req = inbound("INVITE", "z9hG4bKin5", 1, None);
    let txn = server_txn(&mut l, t0, req.clone());
    let ok = answer(&req, 200, "u5");
    l.respond(t0, txn, ok.clone()).expect("respond");
    assert_eq!(sent(&mut l).len(), 1);
    // 2xx retransmission: T1, doubling, capped at T2.
    expect_retransmits(&mut l, t0, &[ms(500), ms(1500), ms(3500)], &ok.to_bytes());
    // A retransmitted INVITE is absorbed in Accepted (RFC 6026).
    l.handle_message(t0 + ms(3600), Message::Request(req), uac());
    assert!(sent(&mut l).is_empty() && events(&mut l).is_empty());
    // The ACK has a branch of its own.
    let ack = inbound("ACK", "z9hG4bKack5", 1, Some("u5"));
    l.handle_message(t0 + secs(4), Message::Request(ack.clone()), uac());
    assert_eq!(
        events(&mut l),
        vec![TxnEvent::Ack {
            request: ack,
            peer: uac()
        }]
    );
    // No more retransmissions; Timer L ends the transaction quietly.
    assert_eq!(l.poll_timeout(), Some(t0 + secs(32)));
    l.handle_timeout(t0 + secs(32));
    assert!(sent(&mut l).is_empty());
    assert!(events(&mut l).is_empty(), "no AckTimeout once ACKed");
    assert!(l.is_empty());
}

#[test]
fn unacked_2xx_ends_with_ack_timeout_at_64_t1() {
    let t0 = base();
    let mut l = layer();
    let req = inbound("INVITE", "z9hG4bKin6", 1, None);
    let txn = server_txn(&mut l, t0, req.clone());
    let ok = answer(&req, 200, "u6");
    l.respond(t0, txn, ok.clone()).expect("respond");
    sent(&mut l);
    let times = doubling(ms(500), secs(4), secs(32));
    expect_retransmits(&mut l, t0, &times, &ok.to_bytes());
    l.handle_timeout(t0 + secs(32));
    assert_eq!(events(&mut l), vec![TxnEvent::AckTimeout { txn }]);
    assert!(l.is_empty());
}

#[test]
fn cancel_of_a_pending_invite_is_answered_200_and_reported() {
    let t0 = base();
    let mut l = layer();
    let req = inbound("INVITE", "z9hG4bKin7", 5, None);
    let txn = server_txn(&mut l, t0, req.clone());
    l.respond(t0, txn, answer(&req, 180, "u7"))
        .expect("respond");
    sent(&mut l);
    let cancel = inbound("CANCEL", "z9hG4bKin7", 5, None);
    l.handle_message(t0 + ms(100), Message::Request(cancel.clone()), uac());
    let out = sent_messages(&mut l);
    assert_eq!(out.len(), 1);
    let Message::Response(ok) = &out[0] else {
        panic!("a response");
    };
    assert_eq!(ok.status, 200);
    let cseq = ok.cseq().expect("cseq");
    assert_eq!((cseq.seq, cseq.method), (5, Method::Cancel));
    assert_eq!(ok.to().expect("to").tag(), Some("u7"), "same To tag (§9.2)");
    assert_eq!(
        events(&mut l),
        vec![TxnEvent::Cancel {
            invite: txn,
            request: cancel.clone(),
            peer: uac()
        }]
    );
    // A retransmitted CANCEL gets the same 200 and no second event.
    l.handle_message(t0 + ms(600), Message::Request(cancel.clone()), uac());
    let again = sent(&mut l);
    assert_eq!(again.len(), 1);
    assert_eq!(parse_message(&again[0].bytes), out[0]);
    assert!(events(&mut l).is_empty());
    // The TU ends the INVITE with 487, which is ACKed as usual.
    l.respond(t0 + ms(700), txn, answer(&req, 487, "u7"))
        .expect("respond");
    assert_eq!(
        sent_messages(&mut l)
            .iter()
            .map(status_of)
            .collect::<Vec<_>>(),
        vec![487]
    );
    // Once answered, a new CANCEL is answered 200 but not reported.
    let late = inbound("CANCEL", "z9hG4bKin7", 5, None);
    let mut late_from_elsewhere = late.clone();
    late_from_elsewhere.headers.set(
        "Via",
        "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKin7;received=192.0.2.10",
    );
    // (Same key: branch and sent-by are what matter; it is a retransmission.)
    l.handle_message(t0 + ms(800), Message::Request(late_from_elsewhere), uac());
    assert_eq!(sent(&mut l).len(), 1);
    assert!(events(&mut l).is_empty());
}

#[test]
fn cancel_after_the_final_response_is_answered_200_without_an_event() {
    let t0 = base();
    let mut l = layer();
    let req = inbound("INVITE", "z9hG4bKin8", 1, None);
    let txn = server_txn(&mut l, t0, req.clone());
    l.respond(t0, txn, answer(&req, 200, "u8"))
        .expect("respond");
    sent(&mut l);
    let cancel = inbound("CANCEL", "z9hG4bKin8", 1, None);
    l.handle_message(t0 + ms(100), Message::Request(cancel), uac());
    let out = sent_messages(&mut l);
    assert_eq!(out.iter().map(status_of).collect::<Vec<_>>(), vec![200]);
    let Message::Response(r) = &out[0] else {
        panic!("a response")
    };
    assert_eq!(r.cseq().expect("cseq").method, Method::Cancel);
    assert!(r.to().expect("to").tag().is_some(), "a To tag is added");
    assert!(events(&mut l).is_empty());
}

#[test]
fn unmatched_cancel_gets_481_and_no_event() {
    let t0 = base();
    let mut l = layer();
    let cancel = inbound("CANCEL", "z9hG4bKnothing", 1, None);
    l.handle_message(t0, Message::Request(cancel.clone()), uac());
    let out = sent(&mut l);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].peer, uac());
    assert_eq!(status_of(&parse_message(&out[0].bytes)), 481);
    assert!(events(&mut l).is_empty());
    // Its own transaction answers retransmissions, then ends on J.
    l.handle_message(t0 + ms(500), Message::Request(cancel), uac());
    assert_eq!(sent(&mut l).len(), 1);
    l.handle_timeout(t0 + secs(32));
    assert!(l.is_empty());
}

#[test]
fn reliable_transports_send_once_and_skip_the_wait_states() {
    let t0 = base();
    let tcp = peer(Transport::Tcp, 20);
    let mut l = layer();

    // Client INVITE: no Timer A, only B; a non-2xx is ACKed and D is zero.
    let inv = l.send_request(t0, outgoing("INVITE", 1), tcp);
    assert_eq!(sent(&mut l).len(), 1);
    assert_eq!(l.poll_timeout(), Some(t0 + secs(32)), "B only");
    let invite = l.request_of(inv).expect("live").clone();
    l.handle_message(
        t0 + ms(100),
        Message::Response(answer(&invite, 486, "t1")),
        tcp,
    );
    assert_eq!(sent(&mut l).len(), 1, "the ACK");
    assert!(l.request_of(inv).is_none(), "Terminated at once (D = 0)");
    events(&mut l);

    // Client non-INVITE: no Timer E, only F; K is zero.
    let opt = l.send_request(t0, outgoing("OPTIONS", 2), tcp);
    assert_eq!(sent(&mut l).len(), 1);
    assert_eq!(l.poll_timeout(), Some(t0 + secs(32)), "F only");
    let options = l.request_of(opt).expect("live").clone();
    l.handle_message(
        t0 + ms(200),
        Message::Response(answer(&options, 200, "t2")),
        tcp,
    );
    assert!(l.request_of(opt).is_none(), "Terminated at once (K = 0)");
    assert!(l.is_empty());
    events(&mut l);

    // Server non-INVITE: J is zero.
    let from = peer(Transport::Tcp, 10);
    let req = inbound("OPTIONS", "z9hG4bKt3", 1, None);
    let txn = server_txn_from(&mut l, t0, req.clone(), from);
    l.respond(t0, txn, answer(&req, 200, "t3"))
        .expect("respond");
    assert_eq!(sent(&mut l).len(), 1);
    assert!(l.is_empty(), "Terminated at once (J = 0)");

    // Server INVITE: no G, H still runs; the ACK ends it at once (I = 0).
    let req = inbound("INVITE", "z9hG4bKt4", 1, None);
    let txn = server_txn_from(&mut l, t0, req.clone(), from);
    l.respond(t0, txn, answer(&req, 480, "t4"))
        .expect("respond");
    assert_eq!(sent(&mut l).len(), 1);
    assert_eq!(l.poll_timeout(), Some(t0 + secs(32)), "H only");
    let ack = inbound("ACK", "z9hG4bKt4", 1, Some("t4"));
    l.handle_message(t0 + ms(50), Message::Request(ack), from);
    assert!(l.is_empty(), "Terminated at once (I = 0)");
    assert!(sent(&mut l).is_empty());
    assert!(events(&mut l).is_empty());
}

#[test]
fn stale_txn_ids_are_unknown_after_termination() {
    let t0 = base();
    let mut l = layer();
    let req = inbound("OPTIONS", "z9hG4bKst1", 1, None);
    let txn = server_txn(&mut l, t0, req.clone());
    l.respond(t0, txn, answer(&req, 200, "s1"))
        .expect("respond");
    sent(&mut l);
    l.handle_timeout(t0 + secs(32));
    assert!(l.is_empty());
    assert_eq!(
        l.respond(t0 + secs(33), txn, answer(&req, 200, "s1")),
        Err(TxnError::UnknownTxn)
    );
    assert_eq!(l.request_of(txn), None);
    assert_eq!(l.peer_of(txn), None);
    assert_eq!(l.cancel(t0, txn), None);
    // The slot is reused by the next transaction under another id.
    let next = server_txn(
        &mut l,
        t0 + secs(33),
        inbound("OPTIONS", "z9hG4bKst2", 2, None),
    );
    assert_ne!(next, txn);
    assert_eq!(l.request_of(txn), None);
    assert!(l.request_of(next).is_some());
}

#[test]
fn respond_refuses_client_transactions_and_bad_status_codes() {
    let t0 = base();
    let mut l = layer();
    let client = l.send_request(t0, outgoing("OPTIONS", 1), uas());
    sent(&mut l);
    let req = l.request_of(client).expect("live").clone();
    assert_eq!(
        l.respond(t0, client, answer(&req, 200, "x")),
        Err(TxnError::NotServer)
    );
    let inv = inbound("INVITE", "z9hG4bKbad", 1, None);
    let txn = server_txn(&mut l, t0, inv.clone());
    let mut odd = answer(&inv, 200, "x");
    odd.status = 99;
    assert_eq!(l.respond(t0, txn, odd), Err(TxnError::InvalidStatus(99)));
    l.respond(t0, txn, answer(&inv, 200, "x")).expect("respond");
    assert_eq!(
        l.respond(t0, txn, answer(&inv, 200, "x")),
        Err(TxnError::AlreadyFinal)
    );
}

#[test]
fn requests_without_the_magic_cookie_match_on_the_rfc_2543_fields() {
    let t0 = base();
    let mut l = layer();
    let req = inbound("INVITE", "old1", 1, None);
    let txn = server_txn(&mut l, t0, req.clone());
    l.handle_message(t0 + ms(500), Message::Request(req.clone()), uac());
    assert_eq!(sent(&mut l).len(), 1, "retransmission recognised");
    assert!(events(&mut l).is_empty());
    l.respond(t0, txn, answer(&req, 486, "o1"))
        .expect("respond");
    sent(&mut l);
    l.handle_message(
        t0 + ms(600),
        Message::Request(inbound("ACK", "old1", 1, Some("o1"))),
        uac(),
    );
    assert!(
        events(&mut l).is_empty(),
        "ACK absorbed by the INVITE transaction"
    );
    assert_eq!(l.poll_timeout(), Some(t0 + ms(600) + secs(5)), "Confirmed");
    // A different CSeq is a different transaction.
    server_txn(&mut l, t0 + ms(700), inbound("INVITE", "old1", 2, None));
}

// ----- a deterministic pair -----

/// Which packets the link loses: called with the packet's number over the
/// whole run, whether the UAS sent it, and its number among that side's.
type Loss = Box<dyn Fn(usize, bool, usize) -> bool>;

/// Two layers over an in-memory link with a fixed delay and a loss rule.
struct Pair {
    now: Instant,
    uac: TxnLayer,
    uas: TxnLayer,
    uac_peer: Peer,
    uas_peer: Peer,
    in_flight: Vec<(Instant, Transmit, Peer)>,
    sent: usize,
    sent_by: [usize; 2],
    lose: Loss,
    delay: Duration,
}

impl Pair {
    fn new(now: Instant, lose: Loss) -> Pair {
        Pair {
            now,
            uac: TxnLayer::new(TimerConfig::default(), StdRng::seed_from_u64(11)),
            uas: TxnLayer::new(TimerConfig::default(), StdRng::seed_from_u64(22)),
            uac_peer: peer(Transport::Udp, 1),
            uas_peer: peer(Transport::Udp, 20),
            in_flight: Vec::new(),
            sent: 0,
            sent_by: [0, 0],
            lose,
            delay: ms(20),
        }
    }

    /// Moves every queued transmit of both sides onto the link.
    fn pump(&mut self) {
        for side in [0, 1] {
            loop {
                let (layer, from) = if side == 0 {
                    (&mut self.uac, self.uac_peer)
                } else {
                    (&mut self.uas, self.uas_peer)
                };
                let Some(t) = layer.poll_transmit() else {
                    break;
                };
                let n = (self.sent, self.sent_by[side]);
                self.sent += 1;
                self.sent_by[side] += 1;
                if !(self.lose)(n.0, side == 1, n.1) {
                    self.in_flight.push((self.now + self.delay, t, from));
                }
            }
        }
    }

    /// The next instant anything happens.
    fn next(&self) -> Option<Instant> {
        let link = self.in_flight.iter().map(|(at, ..)| *at).min();
        [link, self.uac.poll_timeout(), self.uas.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Jumps to `at`: delivers what has arrived, then fires timers.
    fn advance(&mut self, at: Instant) {
        self.now = self.now.max(at);
        let now = self.now;
        let (due, later): (Vec<_>, Vec<_>) =
            self.in_flight.drain(..).partition(|(at, ..)| *at <= now);
        self.in_flight = later;
        for (_, t, from) in due {
            let msg = parse_message(&t.bytes);
            if t.peer.addr == self.uas_peer.addr {
                self.uas.handle_message(now, msg, from);
            } else {
                self.uac.handle_message(now, msg, from);
            }
        }
        self.uac.handle_timeout(now);
        self.uas.handle_timeout(now);
    }
}

/// The ACK a UAC's dialog sends for a 2xx: a new transaction-less request.
fn ack_for_2xx(invite: &Request, ok: &Response, n: u32) -> Request {
    let mut ack = Request::new(Method::Ack, invite.uri.clone());
    ack.headers.push(
        "Via",
        format!("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKack{n}"),
    );
    ack.headers.push("Max-Forwards", "70");
    for h in ["From", "Call-ID"] {
        ack.headers.push(h, invite.headers.get(h).expect("header"));
    }
    ack.headers.push("To", ok.headers.get("To").expect("To"));
    let seq = invite.cseq().expect("cseq").seq;
    ack.headers.push("CSeq", format!("{seq} ACK"));
    ack
}

#[derive(Debug, Default)]
struct Outcome {
    invite_ok: usize,
    acks_sent: usize,
    acks_received: usize,
    bye_ok: bool,
    failures: Vec<TxnEvent>,
}

fn run_call(lose: Loss) -> Outcome {
    let t0 = base();
    let mut p = Pair::new(t0, lose);
    let mut out = Outcome::default();
    let invite_txn = p.uac.send_request(t0, outgoing("INVITE", 1), p.uas_peer);
    let invite = p.uac.request_of(invite_txn).expect("live").clone();
    let mut bye_txn = None;
    let deadline = t0 + secs(120);
    loop {
        // Drain transmits and events until both sides are quiet.
        loop {
            p.pump();
            let mut progressed = false;
            while let Some(ev) = p.uas.poll_event() {
                progressed = true;
                match ev {
                    TxnEvent::Request { txn, request, .. } => match request.method {
                        Method::Invite => {
                            p.uas
                                .respond(p.now, txn, answer(&request, 180, "uas1"))
                                .expect("180");
                            let mut ok = answer(&request, 200, "uas1");
                            ok.headers.push("Contact", "<sip:bob@192.0.2.20>");
                            p.uas.respond(p.now, txn, ok).expect("200");
                        }
                        _ => p
                            .uas
                            .respond(p.now, txn, answer(&request, 200, "uas1"))
                            .expect("200"),
                    },
                    TxnEvent::Ack { .. } => out.acks_received += 1,
                    other => out.failures.push(other),
                }
            }
            while let Some(ev) = p.uac.poll_event() {
                progressed = true;
                let two_xx = match ev {
                    TxnEvent::Response { txn, response } if txn == invite_txn => {
                        (200..300).contains(&response.status).then_some(response)
                    }
                    TxnEvent::StrayResponse { response, .. }
                        if response.cseq().expect("cseq").method == Method::Invite =>
                    {
                        Some(response)
                    }
                    TxnEvent::Response { txn, response } if Some(txn) == bye_txn => {
                        if response.status == 200 {
                            out.bye_ok = true;
                        }
                        None
                    }
                    TxnEvent::Response { .. } => None,
                    other => {
                        out.failures.push(other);
                        None
                    }
                };
                if let Some(ok) = two_xx {
                    out.invite_ok += 1;
                    out.acks_sent += 1;
                    let ack = ack_for_2xx(&invite, &ok, out.acks_sent as u32);
                    p.uac.send_stateless(Message::Request(ack), p.uas_peer);
                    if bye_txn.is_none() {
                        let mut bye = outgoing("BYE", 2);
                        bye.headers.set("To", ok.headers.get("To").expect("To"));
                        bye_txn = Some(p.uac.send_request(p.now, bye, p.uas_peer));
                    }
                }
            }
            if !progressed {
                break;
            }
        }
        p.uac.check_invariants();
        p.uas.check_invariants();
        let Some(next) = p.next() else {
            break;
        };
        assert!(next <= deadline, "the exchange should settle within 120 s");
        p.advance(next);
    }
    assert!(
        p.uac.is_empty() && p.uas.is_empty(),
        "every transaction ended"
    );
    out
}

fn assert_completed(out: &Outcome, case: &str) {
    assert!(out.failures.is_empty(), "{case}: {:?}", out.failures);
    assert!(out.invite_ok >= 1, "{case}: call answered");
    assert!(out.acks_received >= 1, "{case}: 2xx ACKed");
    assert!(out.bye_ok, "{case}: BYE answered");
}

#[test]
fn pair_completes_invite_ack_and_bye_when_the_first_packets_are_lost() {
    // The first packets are all copies of the INVITE: up to six losses
    // leave Timer A a copy that arrives before Timer B.
    for n in 0..7 {
        let out = run_call(Box::new(move |i, _, _| i < n));
        assert_completed(&out, &format!("first {n} lost"));
    }
    // Seven: the INVITE and all six retransmissions are lost; Timer B.
    let out = run_call(Box::new(|i, _, _| i < 7));
    assert!(matches!(
        out.failures.as_slice(),
        [TxnEvent::Timeout { .. }]
    ));
    assert_eq!(out.invite_ok, 0);
}

#[test]
fn pair_completes_when_any_single_packet_is_lost() {
    // In turn: INVITE, 100, 180, 200, ACK, BYE, its 200, and what follows.
    for k in 0..12 {
        let out = run_call(Box::new(move |i, _, _| i == k));
        assert_completed(&out, &format!("packet {k} lost"));
    }
}

#[test]
fn pair_completes_when_the_uas_first_packets_are_lost() {
    // 100, 180 and 200 lost, then 2xx retransmissions: the UAC keeps
    // resending the INVITE, the UAS absorbs it in Accepted, and a later 2xx
    // retransmission gets through before Timer B.
    for n in 0..9 {
        let out = run_call(Box::new(move |_, from_uas, j| from_uas && j < n));
        assert_completed(&out, &format!("first {n} from the UAS lost"));
    }
}

// ----- scale -----

#[test]
fn poll_timeout_stays_exact_with_fifty_thousand_transactions() {
    const N: usize = 50_000;
    let t0 = base();
    let mut l = layer();
    let mut ids = Vec::with_capacity(N);
    for i in 0..N {
        // Staggered starts, a mix of kinds and transports.
        let at = t0 + Duration::from_micros((i as u64 * 7919) % 2_000_000);
        let method = if i % 3 == 0 { "INVITE" } else { "OPTIONS" };
        let transport = if i % 5 == 0 {
            Transport::Tcp
        } else {
            Transport::Udp
        };
        let far = Peer {
            addr: SocketAddr::from(([198, 51, 100, (i % 250) as u8], 5060)),
            ..peer(transport, 20)
        };
        ids.push(l.send_request(at, outgoing(method, i as u32 + 1), far));
    }
    assert_eq!(l.len(), N);
    assert_eq!(l.poll_timeout(), l.earliest_by_scan());
    assert_eq!(sent(&mut l).len(), N);

    // Answer every fourth one halfway through the first second.
    let mid = t0 + ms(400);
    l.handle_timeout(mid);
    for (i, &id) in ids.iter().enumerate().step_by(4) {
        let req = l.request_of(id).expect("live").clone();
        let status = if i % 8 == 0 { 180 } else { 200 };
        let from = l.peer_of(id).expect("live");
        l.handle_message(mid, Message::Response(answer(&req, status, "z")), from);
    }
    sent(&mut l);
    events(&mut l);
    assert_eq!(l.poll_timeout(), l.earliest_by_scan());
    l.check_invariants();

    // Walk the clock deadline by deadline, checking against a full scan at
    // intervals, until everything with a timer is gone.
    let mut steps = 0u64;
    let mut timeouts = 0usize;
    while let Some(at) = l.poll_timeout() {
        l.handle_timeout(at);
        steps += 1;
        if steps.is_multiple_of(50_000) {
            assert_eq!(l.poll_timeout(), l.earliest_by_scan());
            sent(&mut l);
        }
        while let Some(ev) = l.poll_event() {
            if matches!(ev, TxnEvent::Timeout { .. }) {
                timeouts += 1;
            }
        }
        assert!(at <= t0 + secs(40), "everything ends by D/F + 2 s");
    }
    l.check_invariants();
    // Left: INVITEs that got a 180 and wait for the TU (no Timer C here).
    assert_eq!(l.earliest_by_scan(), None);
    let proceeding = (0..N).filter(|i| i % 8 == 0 && i % 3 == 0).count();
    assert_eq!(l.len(), proceeding);
    // Every unanswered transaction timed out (B or F), and so did each
    // OPTIONS that only got a 180 (F runs on in Proceeding).
    let unanswered = (0..N).filter(|i| i % 4 != 0).count();
    let options_180 = (0..N).filter(|i| i % 8 == 0 && i % 3 != 0).count();
    assert_eq!(timeouts, unanswered + options_180);
}

// ----- hostile input -----

fn arb_request_text() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "FOO"]),
        prop::sample::select(vec!["z9hG4bKa", "z9hG4bKb", "old", "", "z9hG4bK"]),
        prop::sample::select(vec!["192.0.2.10:5060", "192.0.2.10", "[2001:db8::1]:5070"]),
        0u32..3,
        prop::option::of(prop::sample::select(vec!["x", "y"])),
        prop::sample::select(vec!["c1", "c2"]),
        "[ -~]{0,12}",
    )
        .prop_map(|(method, branch, host, seq, to_tag, call_id, junk)| {
            let branch = if branch.is_empty() {
                String::new()
            } else {
                format!(";branch={branch}")
            };
            let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
            format!(
                "{method} sip:b@192.0.2.1 SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {host}{branch}\r\n\
                 From: <sip:a@example.com>;tag=f\r\n\
                 To: <sip:b@example.com>{to_tag}\r\n\
                 Call-ID: {call_id}\r\n\
                 CSeq: {seq} {method}\r\n\
                 X-Junk: {junk}\r\n\
                 Content-Length: 0\r\n\r\n"
            )
        })
}

fn arb_response_text() -> impl Strategy<Value = String> {
    (
        100u16..700,
        prop::sample::select(vec!["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS"]),
        prop::sample::select(vec!["z9hG4bKa", "z9hG4bKb", "none"]),
        0u32..3,
        "[ -~]{0,12}",
    )
        .prop_map(|(status, method, branch, seq, junk)| {
            format!(
                "SIP/2.0 {status} Whatever\r\n\
                 Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\n\
                 From: <sip:a@example.com>;tag=f\r\n\
                 To: <sip:b@example.com>;tag=t\r\n\
                 Call-ID: c1\r\n\
                 CSeq: {seq} {method}\r\n\
                 X-Junk: {junk}\r\n\
                 Content-Length: 0\r\n\r\n"
            )
        })
}

/// One step of a hostile session.
#[derive(Debug, Clone)]
enum Step {
    Inbound(String, bool),
    Respond(usize, u16),
    Send(bool),
    Cancel(usize),
    TransportError,
    Wait(u64),
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (arb_request_text(), any::<bool>()).prop_map(|(t, tcp)| Step::Inbound(t, tcp)),
        3 => (arb_response_text(), any::<bool>()).prop_map(|(t, tcp)| Step::Inbound(t, tcp)),
        2 => (0usize..8, 100u16..700).prop_map(|(i, s)| Step::Respond(i, s)),
        1 => any::<bool>().prop_map(Step::Send),
        1 => (0usize..8).prop_map(Step::Cancel),
        1 => Just(Step::TransportError),
        2 => (0u64..40_000).prop_map(Step::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn handle_message_never_panics_and_everything_ends(steps in prop::collection::vec(arb_step(), 1..40)) {
        let t0 = base();
        let mut now = t0;
        let mut l = layer();
        let mut server = Vec::new();
        let mut client = Vec::new();
        for step in steps {
            match step {
                Step::Inbound(text, tcp) => {
                    if let Ok(msg) = parse(text.as_bytes()) {
                        let from = peer(if tcp { Transport::Tcp } else { Transport::Udp }, 10);
                        l.handle_message(now, msg, from);
                    }
                }
                Step::Respond(i, status) => {
                    if let Some(&txn) = server.get(i) {
                        if let Some(req) = l.request_of(txn).cloned() {
                            let _ = l.respond(now, txn, answer(&req, status, "p"));
                        }
                    }
                }
                Step::Send(invite) => {
                    let method = if invite { "INVITE" } else { "OPTIONS" };
                    client.push(l.send_request(now, outgoing(method, 1), uas()));
                }
                Step::Cancel(i) => {
                    if let Some(&txn) = client.get(i) {
                        let _ = l.cancel(now, txn);
                    }
                }
                Step::TransportError => l.handle_transport_error(now, uas()),
                Step::Wait(n) => {
                    now += ms(n);
                    l.handle_timeout(now);
                }
            }
            while let Some(ev) = l.poll_event() {
                if let TxnEvent::Request { txn, .. } = ev {
                    server.push(txn);
                }
            }
            while l.poll_transmit().is_some() {}
            l.check_invariants();
            prop_assert_eq!(l.poll_timeout(), l.earliest_by_scan());
        }
        // Far enough ahead, every timer has fired and nothing is re-armed.
        l.handle_timeout(now + secs(3600));
        l.check_invariants();
        prop_assert_eq!(l.poll_timeout(), None);
    }
}
