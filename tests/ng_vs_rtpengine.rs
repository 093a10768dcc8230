//! Kordon's ng front door against the reference: the same offers and answers
//! go to rtpengine (Debian's `rtpengine-daemon`, started here in the
//! foreground without its kernel module) and to Kordon, and the rewritten SDPs
//! must agree line for line once what legitimately differs is normalised:
//!
//! - Ports are each implementation's own: they are named `P1`, `P2`... in the
//!   order they first appear across a call's steps, so the same name must come
//!   back where the same port does (a re-INVITE keeps its ports), and `a=rtcp`
//!   is written relative to them (`P1+1`, or `P1` with rtcp-mux).
//! - Line order within a section: rtpengine writes `a=rtcp`, `a=ptime`,
//!   `a=rtcp-mux` and the direction where it likes; Kordon keeps the peer's
//!   order and appends what it adds. Sections are compared as sets of lines
//!   (ng_protocol checks Kordon's order exactly).
//! - Direction attributes: rtpengine always writes one per media section (an
//!   explicit `a=sendrecv`, a session-level one moved down); Kordon keeps the
//!   peer's. The effective direction of each section is compared instead.
//! - rtpengine adds `a=rtpmap` for static payload types that had none; Kordon
//!   does not add lines the peer did not write. Those added lines are dropped.
//! - rtpengine remembers a side's `a=ptime` and repeats it in that side's
//!   later SDPs that have none (a re-INVITE without ptime); Kordon relays
//!   what the peer wrote. Dropped from rtpengine's side when the input
//!   section has no `a=ptime`.
//! - rtpengine keeps `a=end-of-candidates` when it removes ICE; Kordon removes
//!   it with the rest of ICE (an SBC terminating ICE must not announce the end
//!   of candidates it never offered). Dropped from rtpengine's side, asserted
//!   absent from Kordon's.
//! - With `replace: [session-connection]` and no session-level `c=`, Kordon
//!   adds one (pointing at itself, like every media `c=`); rtpengine does
//!   nothing. Marked per step.
//!
//! Anything else that differs fails. A difference Kordon does not share by
//! design is tested separately: IPv6 peers on IPv4-only interfaces, which
//! rtpengine bridges and Kordon's data plane refuses.

mod common;
mod ng;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{free_udp_port, start_ng, temp_dir, Config, Ng};
use kordon_controlplane::ng::bencode::Value;
use ng::{
    answer, command, crlf, error_reason, list, offer, ok_sdp, received_from, result, udp_listening,
    Proc, SdpText, ICE,
};

const TAG_A: &str = "tag-a";
const TAG_B: &str = "tag-b";
const DIRECTIONS: &[&str] = &["sendrecv", "sendonly", "recvonly", "inactive"];

/// rtpengine, in the foreground, userspace forwarding only.
struct Rtpengine {
    _proc: Proc,
    ng: Ng,
}

/// Media ports of this process's rtpengine: between the harness's Kordon
/// blocks (10000-15951) and Kordon's default ranges (16384-), a block of 100
/// chosen by process id so that concurrent runs do not collide.
fn rtpengine_ports() -> (u16, u16) {
    let base = 15_960 + (std::process::id() % 4) as u16 * 100;
    (base, base + 99)
}

fn start_rtpengine(dir: &Path) -> Rtpengine {
    assert!(
        ng::have("rtpengine"),
        "rtpengine is not installed: scripts/test.sh installs Debian's rtpengine-daemon"
    );
    let port = free_udp_port();
    let listen: SocketAddr = ([127, 0, 0, 1], port).into();
    let (min, max) = rtpengine_ports();
    ng::stop_packaged_service("rtpengine-daemon.service");
    let mut cmd = Command::new("rtpengine");
    cmd.args([
        "--config-file=none",
        "--foreground",
        "--log-stderr",
        "--log-level=6",
        "--table=-1",
        "--num-threads=2",
        "--delete-delay=0",
        "--interface=127.0.0.1",
    ])
    .arg(format!("--listen-ng={listen}"))
    .arg(format!("--port-min={min}"))
    .arg(format!("--port-max={max}"));
    let mut p = Proc::start("rtpengine", cmd, dir);
    p.wait_ready("listening for ng", Duration::from_secs(10), || {
        udp_listening(listen)
    });
    let ng = Ng::new(listen);
    let pong = ng.request(&command("ping"));
    assert_eq!(result(&pong), "pong", "rtpengine: {pong:?}");
    Rtpengine { _proc: p, ng }
}

/// One ng request of a call.
struct Step {
    what: &'static str,
    req: Value,
    /// The SDP it carries (to tell what rtpengine added).
    sdp: String,
    /// Kordon adds a session-level `c=` here (see the module doc).
    kordon_adds_session_c: bool,
}

fn step(what: &'static str, req: Value) -> Step {
    let sdp = req
        .get("sdp")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    Step {
        what,
        req,
        sdp,
        kordon_adds_session_c: false,
    }
}

/// An offer from side A (the caller), as Kamailio's
/// `rtpengine_offer("replace-origin ICE=remove")` sends it.
fn offer_a(call_id: &str, sdp: &str) -> Value {
    offer(call_id, TAG_A, sdp)
        .with("received-from", received_from("127.0.0.2"))
        .with("replace", list(&["origin"]))
        .with("ICE", "remove")
}

/// The answer from side B.
fn answer_b(call_id: &str, sdp: &str) -> Value {
    answer(call_id, TAG_A, TAG_B, sdp)
        .with("received-from", received_from("127.0.0.3"))
        .with("replace", list(&["origin"]))
        .with("ICE", "remove")
}

/// A re-INVITE from side B: B offers (its tag is the From tag now).
fn reoffer_b(call_id: &str, sdp: &str) -> Value {
    answer(call_id, TAG_B, TAG_A, sdp)
        .with("command", "offer")
        .with("received-from", received_from("127.0.0.3"))
        .with("replace", list(&["origin"]))
}

/// Its answer from side A.
fn reanswer_a(call_id: &str, sdp: &str) -> Value {
    answer(call_id, TAG_B, TAG_A, sdp)
        .with("received-from", received_from("127.0.0.2"))
        .with("replace", list(&["origin"]))
}

/// Port names of one implementation over one call.
#[derive(Default)]
struct Ports {
    names: HashMap<u16, usize>,
}

impl Ports {
    fn name(&mut self, port: u16) -> String {
        if port == 0 {
            return "0".into();
        }
        let next = self.names.len() + 1;
        format!("P{}", self.names.entry(port).or_insert(next))
    }

    /// `a=rtcp` port relative to a known RTP port.
    fn rtcp_name(&mut self, port: u16) -> String {
        if self.names.contains_key(&port) {
            return self.name(port);
        }
        match port.checked_sub(1).filter(|p| self.names.contains_key(p)) {
            Some(rtp) => format!("{}+1", self.name(rtp)),
            None => self.name(port),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Who {
    Kordon,
    Rtpengine,
}

fn is_direction(line: &str) -> bool {
    DIRECTIONS
        .iter()
        .any(|d| line.strip_prefix("a=") == Some(d))
}

/// rtpmap payload types written in `lines`.
fn rtpmaps(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .filter_map(|r| r.split(' ').next())
        .map(str::to_string)
        .collect()
}

/// Checks what both must do, then normalises (see the module doc).
fn normalize(who: Who, out: &str, input: &str, step: &Step, ports: &mut Ports) -> Vec<String> {
    let sdp = SdpText::parse(out);
    let inp = SdpText::parse(input);
    let ctx = format!("{who:?}, {}:\n{out}", step.what);
    assert_eq!(
        sdp.media.len(),
        inp.media.len(),
        "media sections kept: {ctx}"
    );
    // Every c= names the relay (or keeps a hold's null address).
    for l in sdp.session.iter().chain(sdp.media.iter().flatten()) {
        if let Some(c) = l.strip_prefix("c=") {
            assert!(
                c == "IN IP4 127.0.0.1"
                    || c == "IN IP4 0.0.0.0" && input.contains("c=IN IP4 0.0.0.0"),
                "a c= that is not the relay's: {l:?} in {ctx}"
            );
        }
    }
    // ICE is gone (but for rtpengine's end-of-candidates).
    for l in sdp.session.iter().chain(sdp.media.iter().flatten()) {
        let ice = ICE.iter().any(|a| {
            l.strip_prefix("a=")
                .and_then(|r| r.strip_prefix(a))
                .is_some_and(|r| r.is_empty() || r.starts_with(':'))
        });
        if ice && !(who == Who::Rtpengine && l == "a=end-of-candidates") {
            panic!("ICE attribute {l:?} left in {ctx}");
        }
    }
    // o= follows replace-origin.
    let replace_origin = step
        .req
        .get("replace")
        .and_then(Value::as_list)
        .is_some_and(|l| l.iter().any(|v| v.as_str() == Some("origin")));
    if replace_origin {
        assert_eq!(sdp.origin_addr(), "127.0.0.1", "o= replaced: {ctx}");
    } else {
        assert_eq!(sdp.origin_addr(), inp.origin_addr(), "o= kept: {ctx}");
    }

    let session_dir = sdp
        .session
        .iter()
        .find(|l| is_direction(l))
        .map(|l| l[2..].to_string());
    let mut session: Vec<String> = sdp
        .session
        .iter()
        .filter(|l| !is_direction(l))
        .filter(|l| {
            !(who == Who::Kordon
                && step.kordon_adds_session_c
                && l.starts_with("c=")
                && inp.session_addr().is_none())
        })
        .cloned()
        .collect();
    session[1..].sort();
    let mut norm = session;
    for (i, m) in sdp.media.iter().enumerate() {
        let mut fields: Vec<String> = m[0].split(' ').map(str::to_string).collect();
        let port: u16 = fields[1].parse().expect("m= port");
        fields[1] = ports.name(port);
        norm.push(fields.join(" "));
        let input_maps = rtpmaps(&inp.media[i]);
        let mut dir = session_dir.clone();
        let mut rest = Vec::new();
        for l in &m[1..] {
            if is_direction(l) {
                dir = Some(l[2..].to_string());
                continue;
            }
            if who == Who::Rtpengine && l == "a=end-of-candidates" {
                continue;
            }
            if who == Who::Rtpengine
                && l.starts_with("a=rtpmap:")
                && !rtpmaps(std::slice::from_ref(l))
                    .iter()
                    .all(|pt| input_maps.contains(pt))
            {
                continue;
            }
            if who == Who::Rtpengine
                && l.starts_with("a=ptime:")
                && !inp.media[i].iter().any(|x| x.starts_with("a=ptime:"))
            {
                continue;
            }
            if let Some(v) = l.strip_prefix("a=rtcp:") {
                let p: u16 = v
                    .split(' ')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .expect("a=rtcp port");
                let tail = v
                    .split_once(' ')
                    .map(|(_, t)| format!(" {t}"))
                    .unwrap_or_default();
                rest.push(format!("a=rtcp:{}{tail}", ports.rtcp_name(p)));
                continue;
            }
            rest.push(l.clone());
        }
        rest.sort();
        norm.extend(rest);
        norm.push(format!(
            "(direction {})",
            dir.unwrap_or_else(|| "sendrecv".into())
        ));
    }
    norm
}

/// Runs `steps` on both and compares every returned SDP.
fn compare(rtpe: &Rtpengine, kordon: &Ng, name: &str, steps: &[Step]) {
    let (mut pr, mut pk) = (Ports::default(), Ports::default());
    for s in steps {
        let r = rtpe.ng.request(&s.req);
        let k = kordon.request(&s.req);
        let rs = ok_sdp(&r, &format!("rtpengine, {name}, {}", s.what));
        let ks = ok_sdp(&k, &format!("Kordon, {name}, {}", s.what));
        let rn = normalize(Who::Rtpengine, &rs, &s.sdp, s, &mut pr);
        let kn = normalize(Who::Kordon, &ks, &s.sdp, s, &mut pk);
        if rn != kn {
            let mut diff = String::new();
            for l in &rn {
                if !kn.contains(l) {
                    diff.push_str(&format!("  only rtpengine: {l}\n"));
                }
            }
            for l in &kn {
                if !rn.contains(l) {
                    diff.push_str(&format!("  only Kordon:    {l}\n"));
                }
            }
            panic!(
                "{name}, {}: the SDPs differ\n{diff}--- rtpengine:\n{rs}--- Kordon:\n{ks}--- normalised rtpengine:\n{}\n--- normalised Kordon:\n{}",
                s.what,
                rn.join("\n"),
                kn.join("\n")
            );
        }
    }
    for ng in [&rtpe.ng, kordon] {
        let call_id = steps[0]
            .req
            .get("call-id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let d = ng.request(&ng::about("delete", call_id, TAG_A));
        assert_eq!(result(&d), "ok", "{name}: delete: {d:?}");
    }
}

fn basic(call_id: &str) -> Vec<Step> {
    vec![
        step(
            "offer",
            offer_a(
                call_id,
                &crlf(
                    "
v=0
o=alice 2890844526 2890844526 IN IP4 192.0.2.10
s=-
c=IN IP4 127.0.0.2
t=0 0
m=audio 49170 RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:20
a=ice-ufrag:F7gI
a=ice-pwd:x9cml/YzichV2+XlhiMu8g
a=candidate:1 1 UDP 2130706431 127.0.0.2 49170 typ host
a=candidate:1 2 UDP 2130706430 127.0.0.2 49171 typ host
a=sendrecv
",
                ),
            ),
        ),
        step(
            "answer",
            answer_b(
                call_id,
                &crlf(
                    "
v=0
o=bob 2808844564 2808844564 IN IP4 127.0.0.3
s=-
c=IN IP4 127.0.0.3
t=0 0
m=audio 5004 RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:20
a=sendrecv
",
                ),
            ),
        ),
    ]
}

#[test]
fn rewritten_sdp_matches_rtpengine() {
    let dir = ng::Scratch(temp_dir("rtpengine"));
    let rtpe = start_rtpengine(&dir.0);
    let (_k, kordon) = start_ng(Config::new());

    compare(&rtpe, &kordon, "basic", &basic("basic@test"));

    // Audio and video with media-level c=, a static payload type without
    // rtpmap; the answer rejects the video.
    let id = "two-media@test";
    compare(
        &rtpe,
        &kordon,
        "two media, video rejected",
        &[
            step(
                "offer",
                offer_a(
                    id,
                    &crlf(
                        "
v=0
o=alice 1 1 IN IP4 127.0.0.2
s=-
t=0 0
m=audio 49170 RTP/AVP 0
c=IN IP4 127.0.0.2
m=video 51372 RTP/AVP 96
c=IN IP4 127.0.0.2
b=AS:512
a=rtpmap:96 H264/90000
a=fmtp:96 profile-level-id=42e01f
",
                    ),
                ),
            ),
            step(
                "answer",
                answer_b(
                    id,
                    &crlf(
                        "
v=0
o=bob 2 2 IN IP4 127.0.0.3
s=-
t=0 0
m=audio 5004 RTP/AVP 0
c=IN IP4 127.0.0.3
m=video 0 RTP/AVP 96
c=IN IP4 127.0.0.3
",
                    ),
                ),
            ),
        ],
    );

    // rtcp-mux offered and accepted, then offered and declined.
    for (name, id, callee_mux) in [
        ("rtcp-mux accepted", "mux-yes@test", "a=rtcp-mux\n"),
        ("rtcp-mux declined", "mux-no@test", ""),
    ] {
        compare(
            &rtpe,
            &kordon,
            name,
            &[
                step(
                    "offer",
                    offer_a(
                        id,
                        &crlf(
                            "
v=0
o=alice 1 1 IN IP4 127.0.0.2
s=-
c=IN IP4 127.0.0.2
t=0 0
m=audio 49170 RTP/AVP 0
a=rtpmap:0 PCMU/8000
a=rtcp-mux
",
                        ),
                    ),
                ),
                step(
                    "answer",
                    answer_b(
                        id,
                        &crlf(&format!(
                            "
v=0
o=bob 2 2 IN IP4 127.0.0.3
s=-
c=IN IP4 127.0.0.3
t=0 0
m=audio 5004 RTP/AVP 0
a=rtpmap:0 PCMU/8000
{callee_mux}"
                        )),
                    ),
                ),
            ],
        );
    }

    // Session-level ICE, end-of-candidates, a=rtcp with an address, one-way
    // media.
    let id = "ice-oneway@test";
    compare(
        &rtpe,
        &kordon,
        "ICE and one-way media",
        &[
            step(
                "offer",
                offer_a(
                    id,
                    &crlf(
                        "
v=0
o=alice 1 1 IN IP4 127.0.0.2
s=-
c=IN IP4 127.0.0.2
t=0 0
a=ice-lite
a=ice-options:trickle
m=audio 49170 RTP/AVP 0
a=rtpmap:0 PCMU/8000
a=rtcp:49175 IN IP4 127.0.0.2
a=ice-ufrag:abcd
a=ice-pwd:0123456789abcdef012345
a=candidate:1 1 UDP 2130706431 127.0.0.2 49170 typ host
a=end-of-candidates
a=sendonly
",
                    ),
                ),
            ),
            step(
                "answer",
                answer_b(
                    id,
                    &crlf(
                        "
v=0
o=bob 2 2 IN IP4 127.0.0.3
s=-
c=IN IP4 127.0.0.3
t=0 0
m=audio 5004 RTP/AVP 0
a=rtpmap:0 PCMU/8000
a=recvonly
",
                    ),
                ),
            ),
        ],
    );

    // Session-level direction and other session lines; no ICE option, no
    // origin replacement.
    let id = "session-lines@test";
    let mut o = offer(
        id,
        TAG_A,
        &crlf(
            "
v=0
o=alice 1 1 IN IP4 192.0.2.10
s=Talk
i=A call
c=IN IP4 127.0.0.2
b=AS:64
t=0 0
a=inactive
m=audio 49170 RTP/AVP 8
a=rtpmap:8 PCMA/8000
a=maxptime:40
",
        ),
    );
    o.insert("received-from", received_from("127.0.0.2"));
    compare(&rtpe, &kordon, "session-level lines", &[step("offer", o)]);

    // transport-protocol: the callee gets RTP/AVP, the caller keeps RTP/AVPF.
    let id = "avpf@test";
    compare(
        &rtpe,
        &kordon,
        "transport-protocol",
        &[
            step(
                "offer",
                offer_a(
                    id,
                    &crlf(
                        "
v=0
o=alice 1 1 IN IP4 127.0.0.2
s=-
c=IN IP4 127.0.0.2
t=0 0
m=audio 49170 RTP/AVPF 0
a=rtpmap:0 PCMU/8000
",
                    ),
                )
                .with("transport-protocol", "RTP/AVP"),
            ),
            step(
                "answer",
                answer_b(
                    id,
                    &crlf(
                        "
v=0
o=bob 2 2 IN IP4 127.0.0.3
s=-
c=IN IP4 127.0.0.3
t=0 0
m=audio 5004 RTP/AVP 0
a=rtpmap:0 PCMU/8000
",
                    ),
                ),
            ),
        ],
    );

    // Re-INVITEs on an established call: the caller holds with c=0.0.0.0
    // (RFC 2543), then the callee re-offers. Ports stay what they were.
    let id = "reinvite@test";
    let mut steps = basic(id);
    steps.push(step(
        "hold re-offer from the caller",
        offer_a(
            id,
            &crlf(
                "
v=0
o=alice 2890844526 2890844527 IN IP4 192.0.2.10
s=-
c=IN IP4 0.0.0.0
t=0 0
m=audio 49170 RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:20
a=sendonly
",
            ),
        ),
    ));
    steps.push(step(
        "hold answer",
        answer_b(
            id,
            &crlf(
                "
v=0
o=bob 2808844564 2808844565 IN IP4 127.0.0.3
s=-
c=IN IP4 127.0.0.3
t=0 0
m=audio 5004 RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:20
a=recvonly
",
            ),
        ),
    ));
    steps.push(step(
        "re-offer from the callee",
        reoffer_b(
            id,
            &crlf(
                "
v=0
o=bob 2808844564 2808844566 IN IP4 127.0.0.3
s=-
c=IN IP4 127.0.0.3
t=0 0
m=audio 5004 RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=sendrecv
",
            ),
        ),
    ));
    steps.push(step(
        "its answer from the caller",
        reanswer_a(
            id,
            &crlf(
                "
v=0
o=alice 2890844526 2890844528 IN IP4 192.0.2.10
s=-
c=IN IP4 127.0.0.2
t=0 0
m=audio 49170 RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=sendrecv
",
            ),
        ),
    ));
    compare(&rtpe, &kordon, "re-INVITEs", &steps);

    // replace: session-connection on an SDP without a session-level c=.
    let id = "session-c@test";
    let mut s = step(
        "offer",
        offer_a(
            id,
            &crlf(
                "
v=0
o=alice 1 1 IN IP4 127.0.0.2
s=-
t=0 0
m=audio 49170 RTP/AVP 0
c=IN IP4 127.0.0.2
a=rtpmap:0 PCMU/8000
a=ptime:20
",
            ),
        )
        .with("replace", list(&["origin", "session-connection"])),
    );
    s.kordon_adds_session_c = true;
    compare(&rtpe, &kordon, "replace session-connection", &[s]);
}

/// The one difference by design: Kordon's data plane relays within one
/// address family per interface, so an IPv6 peer needs an IPv6 interface;
/// rtpengine bridges the families. Kordon says why instead of answering an
/// SDP it cannot serve.
#[test]
fn ipv6_peer_on_ipv4_interfaces_is_refused_by_kordon_and_bridged_by_rtpengine() {
    let dir = ng::Scratch(temp_dir("rtpengine6"));
    let rtpe = start_rtpengine(&dir.0);
    let (_k, kordon) = start_ng(Config::new());
    let sdp = crlf(
        "
v=0
o=alice 1 1 IN IP6 2001:db8::1
s=-
c=IN IP6 2001:db8::1
t=0 0
m=audio 49170 RTP/AVP 0
a=rtpmap:0 PCMU/8000
",
    );
    let req = offer_a("v6@test", &sdp);
    let r = rtpe.ng.request(&req);
    let bridged = SdpText::parse(&ok_sdp(&r, "rtpengine"));
    assert_eq!(bridged.addr(0), Some("127.0.0.1"));
    let k = kordon.request(&req);
    let reason = error_reason(&k);
    assert!(reason.contains("address family"), "{reason:?}");
}
