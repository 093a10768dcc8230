//! The rtpengine "ng" control protocol end to end: a raw UDP client talks
//! bencode to `kordon dataplane`'s ng listener, and loopback peers exchange
//! real RTP and RTCP through the media the commands set up.
//!
//! Addresses: Kordon's interfaces (`internal`, `external`) are on 127.0.0.1,
//! the caller on 127.0.0.2 and the callee on 127.0.0.3, so an SDP address
//! tells whose it is. The SDP returned for the offer goes to the callee, which
//! sends to the port in it; the SDP returned for the answer goes to the caller,
//! which sends to the port in that one.

mod common;
mod ng;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{relay, rtcp_sr, rtp, start_ng, Config, Kordon, Peer, WAIT};
use kordon_controlplane::ng::bencode::Value;
use ng::{
    about, answer, at, command, crlf, error_reason, int_at, list, offer, ok_sdp, received_from,
    result, str_at, SdpText, ICE,
};

const CALLER: &str = "127.0.0.2";
const CALLEE: &str = "127.0.0.3";
const KORDON_IP: &str = "127.0.0.1";
const CALLER_TAG: &str = "caller-tag-1";
const CALLEE_TAG: &str = "callee-tag-1";

/// The caller's offer: three codecs, ptime, ICE, and an `o=` address that is
/// not the media address.
fn caller_sdp(rtp: SocketAddr) -> String {
    let (ip, p) = (rtp.ip(), rtp.port());
    crlf(&format!(
        "
v=0
o=alice 2890844526 2890844526 IN IP4 192.0.2.10
s=-
c=IN IP4 {ip}
t=0 0
m=audio {p} RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:20
a=ice-ufrag:F7gI
a=ice-pwd:x9cml/YzichV2+XlhiMu8g
a=candidate:1 1 UDP 2130706431 {ip} {p} typ host
a=candidate:1 2 UDP 2130706430 {ip} {p1} typ host
a=sendrecv
",
        p1 = p + 1
    ))
}

/// The callee's answer.
fn callee_sdp(rtp: SocketAddr) -> String {
    let (ip, p) = (rtp.ip(), rtp.port());
    crlf(&format!(
        "
v=0
o=bob 2808844564 2808844564 IN IP4 {ip}
s=-
c=IN IP4 {ip}
t=0 0
m=audio {p} RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:20
a=sendrecv
"
    ))
}

/// A plain one-stream SDP from `rtp`, with `extra` media-level lines.
fn simple_sdp(rtp: SocketAddr, proto: &str, extra: &str) -> String {
    let (ip, p) = (rtp.ip(), rtp.port());
    crlf(&format!(
        "
v=0
o=- 1 1 IN IP4 {ip}
s=-
c=IN IP4 {ip}
t=0 0
m=audio {p} {proto} 0
a=rtpmap:0 PCMU/8000
{extra}"
    ))
}

/// An offer with the options Kamailio's `rtpengine_offer("replace-origin
/// ICE=remove")` sends, from `ip`.
fn offer_req(call_id: &str, sdp: &str, ip: &str) -> Value {
    offer(call_id, CALLER_TAG, sdp)
        .with("replace", list(&["origin"]))
        .with("ICE", "remove")
        .with("received-from", received_from(ip))
}

/// The matching answer from `ip`.
fn answer_req(call_id: &str, sdp: &str, ip: &str) -> Value {
    answer(call_id, CALLER_TAG, CALLEE_TAG, sdp)
        .with("replace", list(&["origin"]))
        .with("ICE", "remove")
        .with("received-from", received_from(ip))
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("an IP"), port)
}

/// Asserts `port` is an even RTP port of interface `iface`.
fn assert_port_of(k: &Kordon, iface: &str, port: u16) {
    let range = k.config.ports_of(iface);
    assert!(
        range.contains(&port) && port.is_multiple_of(2),
        "port {port} is not an RTP port of interface {iface} ({range:?})"
    );
}

/// The call ids `list` shows.
fn listed(k_ng: &common::Ng) -> Vec<String> {
    let l = k_ng.request(&command("list"));
    assert_eq!(result(&l), "ok", "{l:?}");
    at(&l, &["calls"])
        .as_list()
        .expect("calls is a list")
        .iter()
        .map(|v| v.as_str().expect("a call id").to_string())
        .collect()
}

/// Polls `query` until `pred` holds; panics after [`WAIT`] showing the last.
fn wait_query(ng: &common::Ng, call_id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let q = ng.request(&about("query", call_id, CALLER_TAG));
        if pred(&q) {
            return q;
        }
        if Instant::now() >= deadline {
            panic!("query of {call_id}: not {what} within {WAIT:?}; last: {q:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Per-stream RTP packets received from the side of `tag`.
fn stream_packets(q: &Value, tag: &str) -> i64 {
    int_at(
        q,
        &[
            "tags", tag, "medias", "0", "streams", "0", "stats", "packets",
        ],
    )
}

#[test]
fn ping_answers_pong() {
    let (_k, ng) = start_ng(Config::new());
    let a = ng.request(&command("ping"));
    assert_eq!(result(&a), "pong", "{a:?}");
}

#[test]
fn offer_and_answer_rewrite_sdp_and_media_flows_both_ways() {
    let (k, ng) = start_ng(Config::new());
    let (caller, caller_rtcp) = Peer::pair(CALLER);
    let (callee, callee_rtcp) = Peer::pair(CALLEE);
    let call_id = "flow-1@test";

    // The offer: what the callee gets.
    let o = ng.request(&offer_req(call_id, &caller_sdp(caller.addr()), CALLER));
    let to_callee = ok_sdp(&o, "offer");
    assert!(o.get("warning").is_none(), "no warning expected: {o:?}");
    let p = SdpText::parse(&to_callee).port(0);
    assert_port_of(&k, "internal", p);
    let expected = crlf(&format!(
        "
v=0
o=alice 2890844526 2890844526 IN IP4 {KORDON_IP}
s=-
c=IN IP4 {KORDON_IP}
t=0 0
m=audio {p} RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:20
a=sendrecv
a=rtcp:{p1}
",
        p1 = p + 1
    ));
    assert_eq!(
        to_callee, expected,
        "offer: c=, m= port, o= and a=rtcp are Kordon's, ICE is gone, every other line is kept in place"
    );

    // The answer: what the caller gets.
    let a = ng.request(&answer_req(call_id, &callee_sdp(callee.addr()), CALLEE));
    let to_caller = ok_sdp(&a, "answer");
    let q = SdpText::parse(&to_caller).port(0);
    assert_port_of(&k, "internal", q);
    assert_ne!(p, q, "each side has its own port");
    let expected = crlf(&format!(
        "
v=0
o=bob 2808844564 2808844564 IN IP4 {KORDON_IP}
s=-
c=IN IP4 {KORDON_IP}
t=0 0
m=audio {q} RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:20
a=sendrecv
a=rtcp:{q1}
",
        q1 = q + 1
    ));
    assert_eq!(to_caller, expected, "answer rewritten like the offer");

    // Media: the caller sends to the answer's port, the callee to the offer's;
    // each receives from the address the other SDP named.
    let for_caller = addr(KORDON_IP, q);
    let for_callee = addr(KORDON_IP, p);
    relay(&caller, for_caller, &callee, for_callee, 0xA11CE, 100, 5);
    relay(&callee, for_callee, &caller, for_caller, 0xB0B, 200, 3);
    // RTCP on the a=rtcp ports, both ways.
    caller_rtcp.send(addr(KORDON_IP, q + 1), &rtcp_sr(0xA11CE));
    let (d, from) = callee_rtcp.expect("RTCP caller -> callee");
    assert_eq!((d, from), (rtcp_sr(0xA11CE), addr(KORDON_IP, p + 1)));
    callee_rtcp.send(addr(KORDON_IP, p + 1), &rtcp_sr(0xB0B));
    let (d, from) = caller_rtcp.expect("RTCP callee -> caller");
    assert_eq!((d, from), (rtcp_sr(0xB0B), addr(KORDON_IP, q + 1)));

    // query: per-stream counters, by the tag of the side that sent.
    let qr = wait_query(&ng, call_id, "counting 5 + 3 RTP packets", |v| {
        stream_packets(v, CALLER_TAG) == 5 && stream_packets(v, CALLEE_TAG) == 3
    });
    let caller_stream = at(&qr, &["tags", CALLER_TAG, "medias", "0", "streams", "0"]);
    assert_eq!(int_at(caller_stream, &["local port"]), i64::from(q));
    assert_eq!(str_at(caller_stream, &["endpoint", "address"]), CALLER);
    assert_eq!(
        int_at(caller_stream, &["endpoint", "port"]),
        i64::from(caller.addr().port())
    );
    assert_eq!(int_at(caller_stream, &["stats", "errors"]), 0);
    // Sent to the caller: 3 RTP and 1 RTCP.
    assert_eq!(int_at(caller_stream, &["stats_out", "packets"]), 4);
    let callee_stream = at(&qr, &["tags", CALLEE_TAG, "medias", "0", "streams", "0"]);
    assert_eq!(int_at(callee_stream, &["local port"]), i64::from(p));
    assert_eq!(str_at(callee_stream, &["endpoint", "address"]), CALLEE);
    assert_eq!(int_at(callee_stream, &["stats_out", "packets"]), 6);
    assert_eq!(int_at(&qr, &["totals", "RTP", "packets"]), 8);

    // delete: the totals count what Kordon received from both sides.
    let d = ng.request(&about("delete", call_id, CALLER_TAG));
    assert_eq!(result(&d), "ok", "{d:?}");
    assert_eq!(int_at(&d, &["totals", "RTP", "packets"]), 5 + 3);
    assert_eq!(
        int_at(&d, &["totals", "RTP", "bytes"]),
        8 * rtp(1, 1).len() as i64
    );
    assert_eq!(int_at(&d, &["totals", "RTP", "errors"]), 0);
    assert_eq!(int_at(&d, &["totals", "RTCP", "packets"]), 2);
    assert!(listed(&ng).is_empty(), "the call is gone");
    assert!(k.list().is_empty(), "its media session is gone");
    // A second delete finds nothing.
    let again = ng.request(&about("delete", call_id, CALLER_TAG));
    assert!(!error_reason(&again).is_empty());
}

#[test]
fn retransmitted_cookie_gets_the_same_answer_and_creates_nothing() {
    let (k, ng) = start_ng(Config::new());
    let (caller, _caller_rtcp) = Peer::pair(CALLER);
    let req = offer_req("retrans-1@test", &caller_sdp(caller.addr()), CALLER);
    let payload = kordon_controlplane::ng::bencode::encode_to_vec(&req);
    let cookie = ng.cookie();
    let first = ng.raw(&cookie, &payload);
    let second = ng.raw(&cookie, &payload);
    assert_eq!(
        String::from_utf8_lossy(&first),
        String::from_utf8_lossy(&second),
        "a retransmission gets the first answer, byte for byte"
    );
    let a = kordon_controlplane::ng::bencode::decode_all(&first).expect("bencode");
    ok_sdp(&a, "offer");
    assert_eq!(listed(&ng), vec!["retrans-1@test".to_string()]);
    assert_eq!(k.list().len(), 1, "one media session");
    assert_eq!(k.total().sessions, 1);
    let s = ng.request(&command("statistics"));
    assert_eq!(int_at(&s, &["statistics", "totalstatistics", "offers"]), 1);
    assert_eq!(
        int_at(&s, &["statistics", "currentstatistics", "mediasessions"]),
        1
    );

    // The same offer under a new cookie is a new request: it updates the
    // call (same ports), still one call and one session.
    let again = ng.request(&req);
    assert_eq!(
        SdpText::parse(&ok_sdp(&again, "re-offer")).port(0),
        SdpText::parse(str_at(&a, &["sdp"])).port(0)
    );
    assert_eq!(listed(&ng).len(), 1);
    assert_eq!(k.list().len(), 1);
}

#[test]
fn unknown_flags_give_a_warning_not_a_failure() {
    let (_k, ng) = start_ng(Config::new());
    let (caller, _r) = Peer::pair(CALLER);
    let req = offer_req("flags-1@test", &caller_sdp(caller.addr()), CALLER)
        .with("flags", list(&["no-such-flag", "trust-address"]));
    let a = ng.request(&req);
    ok_sdp(&a, "offer with an unknown flag");
    let w = str_at(&a, &["warning"]);
    assert!(w.contains("no-such-flag"), "warning names the flag: {w:?}");
    assert!(
        !w.contains("trust-address"),
        "a known flag is not warned: {w:?}"
    );
}

#[test]
fn malformed_sdp_is_an_error_naming_the_line() {
    let (k, ng) = start_ng(Config::new());
    let bad = crlf(
        "
v=0
o=- 1 1 IN IP4 127.0.0.2
s=-
c=IN IP4 127.0.0.2
t=0 0
m=audio notaport RTP/AVP 0
",
    );
    let a = ng.request(&offer("badsdp-1@test", CALLER_TAG, &bad));
    let reason = error_reason(&a);
    assert!(reason.contains("line 6"), "names the line: {reason:?}");
    assert!(listed(&ng).is_empty(), "no call created");
    assert!(k.list().is_empty(), "no media session created");
}

#[test]
fn malformed_bencode_is_an_error_mentioning_bencode() {
    let (_k, ng) = start_ng(Config::new());
    for payload in [&b"d7:command4:pin"[..], b"d7:command4:pingi1e", b"x"] {
        let answer = ng.raw(&ng.cookie(), payload);
        let a = kordon_controlplane::ng::bencode::decode_all(&answer).expect("bencode answer");
        let reason = error_reason(&a);
        assert!(
            reason.contains("bencode"),
            "{:?}: reason {reason:?}",
            String::from_utf8_lossy(payload)
        );
    }
    // A dictionary without a command, and a message that is not one.
    let a = ng.request(&Value::dict().with("call-id", "x"));
    assert!(error_reason(&a).contains("command"), "{a:?}");
    let a = ng.request(&Value::from(42i64));
    assert!(!error_reason(&a).is_empty());
    let a = ng.request(&command("no-such-command"));
    assert!(error_reason(&a).contains("no-such-command"), "{a:?}");
}

#[test]
fn answer_query_and_delete_of_an_unknown_call_are_errors() {
    let (k, ng) = start_ng(Config::new());
    let (callee, _r) = Peer::pair(CALLEE);
    let a = ng.request(&answer_req(
        "nobody@test",
        &callee_sdp(callee.addr()),
        CALLEE,
    ));
    assert!(
        error_reason(&a).to_ascii_lowercase().contains("call"),
        "{a:?}"
    );
    for cmd in ["query", "delete"] {
        let a = ng.request(&about(cmd, "nobody@test", CALLER_TAG));
        assert!(!error_reason(&a).is_empty(), "{cmd}: {a:?}");
    }
    assert!(listed(&ng).is_empty());
    assert!(k.list().is_empty());
}

#[test]
fn direction_puts_each_side_on_its_interface() {
    let (k, ng) = start_ng(Config::new());
    let (caller, _r1) = Peer::pair(CALLER);
    let (callee, _r2) = Peer::pair(CALLEE);
    let call_id = "dir-1@test";
    let o = ng.request(
        &offer_req(call_id, &caller_sdp(caller.addr()), CALLER)
            .with("direction", list(&["internal", "external"])),
    );
    // The callee is on the second interface: the offer it gets names it.
    let p = SdpText::parse(&ok_sdp(&o, "offer")).port(0);
    assert_port_of(&k, "external", p);
    let a = ng.request(&answer_req(call_id, &callee_sdp(callee.addr()), CALLEE));
    let q = SdpText::parse(&ok_sdp(&a, "answer")).port(0);
    assert_port_of(&k, "internal", q);
    relay(
        &caller,
        addr(KORDON_IP, q),
        &callee,
        addr(KORDON_IP, p),
        1,
        1,
        2,
    );
    relay(
        &callee,
        addr(KORDON_IP, p),
        &caller,
        addr(KORDON_IP, q),
        2,
        1,
        2,
    );
    let qr = ng.request(&about("query", call_id, CALLER_TAG));
    assert_eq!(
        str_at(&qr, &["tags", CALLER_TAG, "medias", "0", "interface"]),
        "internal"
    );
    assert_eq!(
        str_at(&qr, &["tags", CALLEE_TAG, "medias", "0", "interface"]),
        "external"
    );

    // An interface that does not exist is an error, not a crash.
    let bad = ng.request(
        &offer_req("dir-2@test", &caller_sdp(caller.addr()), CALLER)
            .with("direction", list(&["internal", "nowhere"])),
    );
    assert!(error_reason(&bad).contains("nowhere"), "{bad:?}");
}

#[test]
fn received_from_latches_a_nated_caller() {
    let (k, ng) = start_ng(Config::new());
    // The caller is behind a NAT: its SDP names 127.0.0.9, where nothing
    // listens, but its packets (and its SIP) come from 127.0.0.2.
    let (caller, _r1) = Peer::pair(CALLER);
    let (callee, _r2) = Peer::pair(CALLEE);
    let intruder = Peer::bind("127.0.0.4");
    let call_id = "nat-1@test";
    let announced = addr("127.0.0.9", caller.addr().port());
    let o = ng.request(&offer_req(call_id, &caller_sdp(announced), CALLER));
    let p = SdpText::parse(&ok_sdp(&o, "offer")).port(0);
    let a = ng.request(&answer_req(call_id, &callee_sdp(callee.addr()), CALLEE));
    let q = SdpText::parse(&ok_sdp(&a, "answer")).port(0);
    let (for_caller, for_callee) = (addr(KORDON_IP, q), addr(KORDON_IP, p));

    // Another address may not take the caller's leg.
    intruder.send(for_caller, &rtp(0xBAD, 1));
    wait_query(
        &ng,
        call_id,
        "counting the intruder's packet as an error",
        |v| {
            int_at(
                v,
                &[
                    "tags", CALLER_TAG, "medias", "0", "streams", "0", "stats", "errors",
                ],
            ) == 1
        },
    );
    callee.expect_silence("a foreign source is dropped");

    // The caller's first packet latches its leg; the callee's media follows.
    relay(&caller, for_caller, &callee, for_callee, 0xCA11, 1, 2);
    relay(&callee, for_callee, &caller, for_caller, 0xCA1E, 1, 2);
    let qr = ng.request(&about("query", call_id, CALLER_TAG));
    let ep = at(
        &qr,
        &[
            "tags", CALLER_TAG, "medias", "0", "streams", "0", "endpoint",
        ],
    );
    assert_eq!(
        str_at(ep, &["address"]),
        CALLER,
        "latched to the NAT's address"
    );
    assert_eq!(int_at(ep, &["port"]), i64::from(caller.addr().port()));
    assert_eq!(k.list().len(), 1);
}

#[test]
fn rtcp_mux_offered_and_declined_falls_back_to_rtcp_ports() {
    let (_k, ng) = start_ng(Config::new());
    let (caller, caller_rtcp) = Peer::pair(CALLER);
    let (callee, callee_rtcp) = Peer::pair(CALLEE);
    let call_id = "mux-declined@test";
    let o = ng.request(&offer_req(
        call_id,
        &simple_sdp(caller.addr(), "RTP/AVP", "a=rtcp-mux"),
        CALLER,
    ));
    let to_callee = SdpText::parse(&ok_sdp(&o, "offer"));
    let p = to_callee.port(0);
    assert_eq!(to_callee.attr(0, "rtcp-mux"), Some(""), "mux is offered on");
    // RFC 5761 section 5.1.3: the offer names the port for RTCP without mux.
    assert_eq!(
        to_callee.attr(0, "rtcp"),
        Some(format!("{}", p + 1).as_str())
    );

    let a = ng.request(&answer_req(
        call_id,
        &simple_sdp(callee.addr(), "RTP/AVP", ""),
        CALLEE,
    ));
    let to_caller = SdpText::parse(&ok_sdp(&a, "answer"));
    let q = to_caller.port(0);
    assert_eq!(
        to_caller.attr(0, "rtcp-mux"),
        None,
        "the callee declined mux"
    );
    assert_eq!(
        to_caller.attr(0, "rtcp"),
        Some(format!("{}", q + 1).as_str())
    );

    // RTP as usual; RTCP on the separate ports both sides now use.
    relay(
        &caller,
        addr(KORDON_IP, q),
        &callee,
        addr(KORDON_IP, p),
        7,
        1,
        1,
    );
    relay(
        &callee,
        addr(KORDON_IP, p),
        &caller,
        addr(KORDON_IP, q),
        8,
        1,
        1,
    );
    callee_rtcp.send(addr(KORDON_IP, p + 1), &rtcp_sr(8));
    let (d, from) = caller_rtcp.expect("callee's RTCP at the caller's RTCP port");
    assert_eq!((d, from), (rtcp_sr(8), addr(KORDON_IP, q + 1)));
    caller_rtcp.send(addr(KORDON_IP, q + 1), &rtcp_sr(7));
    let (d, from) = callee_rtcp.expect("caller's RTCP at the callee's RTCP port");
    assert_eq!((d, from), (rtcp_sr(7), addr(KORDON_IP, p + 1)));
}

#[test]
fn rtcp_mux_accepted_carries_rtcp_on_the_rtp_ports() {
    let (_k, ng) = start_ng(Config::new());
    let (caller, _r1) = Peer::pair(CALLER);
    let (callee, _r2) = Peer::pair(CALLEE);
    let call_id = "mux-accepted@test";
    let o = ng.request(&offer_req(
        call_id,
        &simple_sdp(caller.addr(), "RTP/AVP", "a=rtcp-mux"),
        CALLER,
    ));
    let p = SdpText::parse(&ok_sdp(&o, "offer")).port(0);
    let a = ng.request(&answer_req(
        call_id,
        &simple_sdp(callee.addr(), "RTP/AVP", "a=rtcp-mux"),
        CALLEE,
    ));
    let to_caller = SdpText::parse(&ok_sdp(&a, "answer"));
    let q = to_caller.port(0);
    assert_eq!(to_caller.attr(0, "rtcp-mux"), Some(""));
    assert_eq!(
        to_caller.attr(0, "rtcp"),
        Some(format!("{q}").as_str()),
        "with mux agreed RTCP shares the RTP port"
    );
    caller.send(addr(KORDON_IP, q), &rtcp_sr(9));
    let (d, from) = callee.expect("muxed RTCP caller -> callee");
    assert_eq!((d, from), (rtcp_sr(9), addr(KORDON_IP, p)));
    callee.send(addr(KORDON_IP, p), &rtcp_sr(10));
    let (d, from) = caller.expect("muxed RTCP callee -> caller");
    assert_eq!((d, from), (rtcp_sr(10), addr(KORDON_IP, q)));
}

#[test]
fn hold_with_a_null_address_is_kept_and_nothing_is_sent_to_it() {
    let (_k, ng) = start_ng(Config::new());
    // RFC 2543 hold: c=0.0.0.0 and no direction attribute. The port is the
    // trap's: a datagram sent to 0.0.0.0:port would reach 127.0.0.1:port on
    // Linux, where the trap listens.
    let trap = Peer::bind(KORDON_IP);
    let (callee, _r) = Peer::pair(CALLEE);
    let call_id = "hold-1@test";
    let held = addr("0.0.0.0", trap.addr().port());
    let o = ng.request(&offer_req(
        call_id,
        &simple_sdp(held, "RTP/AVP", ""),
        CALLER,
    ));
    let to_callee = SdpText::parse(&ok_sdp(&o, "offer"));
    assert_eq!(
        to_callee.addr(0),
        Some("0.0.0.0"),
        "the callee still sees the hold"
    );
    let p = to_callee.port(0);
    // A callee that answers sendrecv all the same.
    let a = ng.request(&answer_req(
        call_id,
        &simple_sdp(callee.addr(), "RTP/AVP", ""),
        CALLEE,
    ));
    ok_sdp(&a, "answer");
    callee.send(addr(KORDON_IP, p), &rtp(0x401D, 1));
    wait_query(&ng, call_id, "counting the callee's packet", |v| {
        stream_packets(v, CALLEE_TAG) == 1
    });
    trap.expect_silence("nothing is sent to a held peer's 0.0.0.0");
}

#[test]
fn transport_protocol_is_translated_for_the_callee_only() {
    let (_k, ng) = start_ng(Config::new());
    let (caller, _r1) = Peer::pair(CALLER);
    let (callee, _r2) = Peer::pair(CALLEE);
    let call_id = "proto-1@test";
    let o = ng.request(
        &offer_req(call_id, &simple_sdp(caller.addr(), "RTP/AVPF", ""), CALLER)
            .with("transport-protocol", "RTP/AVP"),
    );
    assert_eq!(SdpText::parse(&ok_sdp(&o, "offer")).proto(0), "RTP/AVP");
    let a = ng.request(&answer_req(
        call_id,
        &simple_sdp(callee.addr(), "RTP/AVP", ""),
        CALLEE,
    ));
    assert_eq!(
        SdpText::parse(&ok_sdp(&a, "answer")).proto(0),
        "RTP/AVPF",
        "the caller gets an answer in the protocol it offered"
    );
}

#[test]
fn rejected_and_second_media_sections_carry_no_peer_address() {
    let (_k, ng) = start_ng(Config::new());
    let (caller, _r1) = Peer::pair(CALLER);
    let (callee, _r2) = Peer::pair(CALLEE);
    let call_id = "twomedia-1@test";
    let (c, cp) = (caller.addr().ip(), caller.addr().port());
    let offer_sdp = crlf(&format!(
        "
v=0
o=alice 1 1 IN IP4 {c}
s=-
t=0 0
m=audio {cp} RTP/AVP 0
c=IN IP4 {c}
a=rtpmap:0 PCMU/8000
a=ice-ufrag:abcd
a=ice-pwd:0123456789abcdef012345
a=candidate:1 1 UDP 2130706431 {c} {cp} typ host
m=video {vp} RTP/AVP 96
c=IN IP4 {c}
b=AS:512
a=rtpmap:96 H264/90000
a=fmtp:96 profile-level-id=42e01f
",
        vp = cp + 2
    ));
    let o = ng.request(&offer_req(call_id, &offer_sdp, CALLER));
    let to_callee = SdpText::parse(&ok_sdp(&o, "offer"));
    assert_eq!(to_callee.media.len(), 2);
    for i in 0..2 {
        assert_eq!(to_callee.addr(i), Some(KORDON_IP), "media {i}");
        assert_ne!(to_callee.port(i), 0);
    }
    assert!(!to_callee.has_any_attr(ICE));
    assert_eq!(to_callee.session_addr(), None, "no session c= was added");
    let vp = to_callee.port(1);
    assert_eq!(
        to_callee.media[1][1..],
        [
            format!("c=IN IP4 {KORDON_IP}"),
            "b=AS:512".into(),
            "a=rtpmap:96 H264/90000".into(),
            "a=fmtp:96 profile-level-id=42e01f".into(),
            format!("a=rtcp:{}", vp + 1),
        ],
        "the video section keeps its lines in place"
    );
    let (e, ep) = (callee.addr().ip(), callee.addr().port());
    let answer_sdp = crlf(&format!(
        "
v=0
o=bob 2 2 IN IP4 {e}
s=-
t=0 0
m=audio {ep} RTP/AVP 0
c=IN IP4 {e}
a=rtpmap:0 PCMU/8000
m=video 0 RTP/AVP 96
c=IN IP4 {e}
"
    ));
    let a = ng.request(&answer_req(call_id, &answer_sdp, CALLEE));
    let to_caller = SdpText::parse(&ok_sdp(&a, "answer"));
    assert_eq!(to_caller.addr(0), Some(KORDON_IP));
    assert_eq!(to_caller.port(1), 0, "the rejection stays a rejection");
    assert_eq!(
        to_caller.addr(1),
        Some(KORDON_IP),
        "the rejected section does not show the callee's address"
    );
    assert_eq!(to_caller.origin_addr(), KORDON_IP);
}

#[test]
fn callee_reinvite_moves_its_media_and_the_caller_answers() {
    let (_k, ng) = start_ng(Config::new());
    let (caller, _r1) = Peer::pair(CALLER);
    let (callee, _r2) = Peer::pair(CALLEE);
    let (callee_moved, _r3) = Peer::pair(CALLEE);
    let call_id = "reinvite-1@test";
    let o = ng.request(&offer_req(call_id, &caller_sdp(caller.addr()), CALLER));
    let p = SdpText::parse(&ok_sdp(&o, "offer")).port(0);
    let a = ng.request(&answer_req(call_id, &callee_sdp(callee.addr()), CALLEE));
    let q = SdpText::parse(&ok_sdp(&a, "answer")).port(0);
    relay(
        &caller,
        addr(KORDON_IP, q),
        &callee,
        addr(KORDON_IP, p),
        1,
        1,
        1,
    );

    // The callee re-INVITEs from a new port: its tag is the From tag now, and
    // the caller's 200 OK is the answer (To tag: the caller's).
    let reoffer = offer(call_id, CALLEE_TAG, &callee_sdp(callee_moved.addr()))
        .with("to-tag", CALLER_TAG)
        .with("received-from", received_from(CALLEE));
    let ro = SdpText::parse(&ok_sdp(&ng.request(&reoffer), "callee's re-offer"));
    assert_eq!(ro.port(0), q, "the caller keeps sending where it did");
    let reanswer = answer(call_id, CALLEE_TAG, CALLER_TAG, &caller_sdp(caller.addr()))
        .with("received-from", received_from(CALLER));
    let ra = SdpText::parse(&ok_sdp(&ng.request(&reanswer), "caller's answer"));
    assert_eq!(ra.port(0), p, "the callee keeps sending to the same port");
    // The callee offers again (same SDP: nothing changes); an "answer" from
    // the callee itself, the side that just offered, is refused.
    ok_sdp(&ng.request(&reoffer), "callee's second re-offer");
    let wrong = answer(call_id, CALLER_TAG, CALLEE_TAG, &callee_sdp(callee.addr()));
    assert!(error_reason(&ng.request(&wrong)).contains("offerer"));

    // The callee's new socket latches and gets the caller's media.
    relay(
        &callee_moved,
        addr(KORDON_IP, p),
        &caller,
        addr(KORDON_IP, q),
        2,
        1,
        1,
    );
    relay(
        &caller,
        addr(KORDON_IP, q),
        &callee_moved,
        addr(KORDON_IP, p),
        1,
        2,
        2,
    );
}
