//! What one SIP message costs to read and write.
//!
//! Groups are named by what varies, each iteration handling one message:
//!
//! - `sip_parse/ours/{invite_sdp,response_200}`: [`parse`], the path every
//!   received message takes (framing checks, header lines, owned types).
//! - `sip_parse/rsip_alone/{invite_sdp,response_200}`: rsip 0.4's
//!   `SipMessage::try_from` by itself, the crate `parse` once used, kept
//!   beside ours; `sip_parse/rsip_alone/invite_head_as_fed`: the same on the
//!   fixed status line and header lines `parse` used to hand it (its share
//!   of a parse then).
//! - `sip_parse/validate/invite_sdp`: [`Request::validate`] on a parsed
//!   request (the typed views it reads).
//! - `sip_parse/serialize/invite_sdp`: [`Request::to_bytes`].
//! - `sip_parse/scan/invite_sdp`: a lower bound for any parser: find every
//!   header line's end, read Content-Length and check the body is there,
//!   with plain std code (no memchr, no allocation).
//!
//! The inputs are the conformance fixtures `invite_sdp.sip` (a carrier
//! INVITE with SDP, 1.0 kB) and `response_200_sdp.sip` (its 200 OK). Figures
//! go to `bench/RESULTS.md`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kordon_controlplane::sip::message::{parse, Message};

const INVITE: &[u8] = include_bytes!("../src/sip/message/testdata/valid/invite_sdp.sip");
const OK_200: &[u8] = include_bytes!("../src/sip/message/testdata/valid/response_200_sdp.sip");

/// Where the head ends and how long the body is: every CRLF found, each
/// line's name compared against Content-Length (long or compact form), its
/// digits read. `None` if the head never ends or the body is short.
fn scan(msg: &[u8]) -> Option<(usize, usize)> {
    let mut content_length = 0usize;
    let mut pos = 0usize;
    loop {
        let rest = msg.get(pos..)?;
        let eol = rest.windows(2).position(|w| w == b"\r\n")?;
        let line = rest.get(..eol)?;
        pos += eol + 2;
        if line.is_empty() {
            break;
        }
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = line.get(..colon)?.trim_ascii();
            if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
                content_length =
                    line.get(colon + 1..)?
                        .trim_ascii()
                        .iter()
                        .try_fold(0usize, |n, &d| {
                            d.is_ascii_digit()
                                .then(|| n.checked_mul(10)?.checked_add(usize::from(d - b'0')))?
                        })?;
            }
        }
    }
    (msg.len() - pos >= content_length).then_some((pos, content_length))
}

fn bench_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("sip_parse/ours");
    g.throughput(Throughput::Elements(1));
    for (name, msg) in [("invite_sdp", INVITE), ("response_200", OK_200)] {
        assert!(parse(msg).is_ok(), "{name} parses");
        g.bench_function(name, |b| b.iter(|| parse(black_box(msg))));
    }
    g.finish();

    let mut as_fed = b"SIP/2.0 200 OK\r\n".to_vec();
    let head_end = INVITE
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("the INVITE fixture has a head");
    let first_eol = INVITE
        .windows(2)
        .position(|w| w == b"\r\n")
        .expect("the INVITE fixture has a start line");
    as_fed.extend_from_slice(&INVITE[first_eol + 2..head_end + 4]);
    let mut g = c.benchmark_group("sip_parse/rsip_alone");
    g.throughput(Throughput::Elements(1));
    for (name, msg) in [
        ("invite_sdp", INVITE),
        ("response_200", OK_200),
        ("invite_head_as_fed", as_fed.as_slice()),
    ] {
        assert!(rsip::SipMessage::try_from(msg).is_ok(), "{name} parses");
        g.bench_function(name, |b| {
            b.iter(|| rsip::SipMessage::try_from(black_box(msg)))
        });
    }
    g.finish();
}

fn bench_validate_serialize(c: &mut Criterion) {
    let Ok(Message::Request(invite)) = parse(INVITE) else {
        panic!("the INVITE fixture is a request");
    };
    invite.validate().expect("the INVITE fixture validates");

    let mut g = c.benchmark_group("sip_parse/validate");
    g.throughput(Throughput::Elements(1));
    g.bench_function("invite_sdp", |b| b.iter(|| black_box(&invite).validate()));
    g.finish();

    let mut g = c.benchmark_group("sip_parse/serialize");
    g.throughput(Throughput::Elements(1));
    g.bench_function("invite_sdp", |b| b.iter(|| black_box(&invite).to_bytes()));
    g.finish();
}

fn bench_scan(c: &mut Criterion) {
    let (head, body) = scan(INVITE).expect("the INVITE fixture scans");
    assert_eq!(head + body, INVITE.len());
    let mut g = c.benchmark_group("sip_parse/scan");
    g.throughput(Throughput::Elements(1));
    g.bench_function("invite_sdp", |b| b.iter(|| scan(black_box(INVITE))));
    g.finish();
}

criterion_group!(benches, bench_parse, bench_validate_serialize, bench_scan);
criterion_main!(benches);
