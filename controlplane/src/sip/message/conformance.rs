//! Conformance of [`parse`] and [`Request::validate`] on hand-written
//! messages (`testdata/`, raw bytes with CRLF line ends).
//!
//! - `testdata/valid/`: what real peers send, the unusual but legal
//!   included. Each must parse, validate when it is a request, read as its
//!   case says, and come back unchanged from `parse(to_bytes())`.
//! - `testdata/invalid/`: broken messages. Each must be refused, by `parse`
//!   or by `validate` as the case says, with a reason naming the problem.
//! - `bare_rsip_*`: what rsip 0.4 does on its own with the cases it gets
//!   wrong; they are why `parse` frames the message itself (see parse.rs).
//! - `malformed_input`: inputs fuzzing found, and every fixture, through the
//!   fuzz target's invariant check.

use bytes::Bytes;

use super::fuzzing::fuzz_sip_message;
use super::*;

macro_rules! fixture {
    ($kind:literal, $name:literal) => {
        (
            $name,
            include_bytes!(concat!("testdata/", $kind, "/", $name, ".sip")).as_slice(),
        )
    };
}

type Check = fn(&Message);

fn req(m: &Message) -> &Request {
    match m {
        Message::Request(r) => r,
        Message::Response(r) => panic!("expected a request, got a {} response", r.status),
    }
}

fn resp(m: &Message) -> &Response {
    match m {
        Message::Response(r) => r,
        Message::Request(r) => panic!("expected a response, got {}", r.method),
    }
}

fn vias(m: &Message) -> Vec<Via> {
    let headers = match m {
        Message::Request(r) => &r.headers,
        Message::Response(r) => &r.headers,
    };
    headers
        .get_all("Via")
        .map(|v| Via::parse(v).expect("every Via of a valid case reads"))
        .collect()
}

fn name_addr(r: &Request, name: &str) -> NameAddr {
    NameAddr::parse(r.headers.get(name).expect("header present")).expect("header reads")
}

/// A MESSAGE whose body takes the message to just under the size limit.
fn large_body_message() -> Vec<u8> {
    let head = "MESSAGE sip:bob@example.com SIP/2.0\r\n\
        Via: SIP/2.0/TCP 198.51.100.7:5060;branch=z9hG4bK-big1\r\n\
        From: <sip:alice@example.net>;tag=big1\r\n\
        To: <sip:bob@example.com>\r\n\
        Call-ID: big-1@example.net\r\n\
        CSeq: 1 MESSAGE\r\n\
        Max-Forwards: 70\r\n\
        Content-Type: text/plain\r\n\
        Content-Length: 65000\r\n\r\n";
    let mut msg = head.as_bytes().to_vec();
    msg.extend((0..65_000u32).map(|i| b"abcdefghijklmnopqrstuvwxyz\r\n"[(i % 28) as usize]));
    assert!(msg.len() <= MAX_MESSAGE_BYTES);
    msg
}

fn valid_cases() -> Vec<(&'static str, &'static [u8], Check)> {
    macro_rules! case {
        ($name:literal, $check:expr) => {{
            let (name, bytes) = fixture!("valid", $name);
            (name, bytes, $check as Check)
        }};
    }
    vec![
        case!("invite_sdp", |m| {
            let r = req(m);
            assert_eq!(r.method, Method::Invite);
            assert_eq!(r.uri.user.as_deref(), Some("+12125550199"));
            assert_eq!(r.uri.port, Some(5060));
            assert_eq!(r.uri.params.get("user"), Some("phone"));
            assert_eq!(
                r.from().expect("from").display.as_deref(),
                Some("Front Desk")
            );
            assert_eq!(r.headers.get("Session-Expires"), Some("1800;refresher=uac"));
            assert!(r.body.starts_with(b"v=0\r\n") && r.body.ends_with(b"a=sendrecv\r\n"));
            assert!(!r.headers.has("Content-Length"), "framing, not a header");
        }),
        case!("response_200_sdp", |m| {
            let r = resp(m);
            assert_eq!((r.status, r.reason.as_str()), (200, "OK"));
            assert_eq!(r.to().expect("to").tag(), Some("as5f01b2c3"));
            let via = r.via_top().expect("via");
            assert_eq!(via.params.get("received"), Some("198.51.100.7"));
            assert_eq!(via.params.get("rport"), Some("5060"));
            assert_eq!(r.cseq().expect("cseq").method, Method::Invite);
            assert!(r.body.starts_with(b"v=0\r\n"));
        }),
        case!("compact_forms", |m| {
            let r = req(m);
            r.via_top().expect("v: is Via");
            assert_eq!(r.call_id(), Some("compact-1@198.51.100.7"));
            assert_eq!(r.to().expect("t: is To").uri.host, "example.com");
            assert_eq!(r.from().expect("f: is From").tag(), Some("cf1"));
            assert!(r.contact().is_some());
            assert!(r.headers.has_token("Supported", "timer"));
            assert_eq!(r.headers.get("Subject"), Some("compact forms only"));
            assert_eq!(r.headers.get("Content-Type"), Some("application/sdp"));
            assert!(
                r.headers.0.iter().all(|h| h.name.len() > 1),
                "names stored long"
            );
            assert!(r.body.ends_with(b"a=sendrecv\r\n"));
        }),
        case!("folded_headers", |m| {
            let r = req(m);
            let via = r.via_top().expect("folded Via");
            assert_eq!(via.branch(), Some("z9hG4bK-fold1"));
            assert!(via.params.has("rport"));
            assert_eq!(r.from().expect("from").tag(), Some("fold1"));
            let cseq = r.cseq().expect("folded CSeq");
            assert_eq!((cseq.seq, cseq.method), (10, Method::Options));
            assert_eq!(
                r.headers.get("Subject"),
                Some("a subject that carries on over three lines")
            );
        }),
        case!("case_and_whitespace", |m| {
            let r = req(m);
            let via = r.via_top().expect("via");
            assert_eq!(via.transport, "UDP");
            assert_eq!(via.branch(), Some("z9hG4bK-ws1"));
            let from = r.from().expect("from");
            assert_eq!(
                (from.display.as_deref(), from.tag()),
                (Some("Alice"), Some("ws1"))
            );
            let to = r.to().expect("to");
            assert_eq!(
                (to.uri.scheme, to.uri.host.as_str()),
                (UriScheme::Sip, "Example.COM")
            );
            assert_eq!(r.call_id(), Some("ws-1@example.net"));
            let cseq = r.cseq().expect("cseq");
            assert_eq!((cseq.seq, cseq.method), (7, Method::Message));
            assert_eq!(r.max_forwards().expect("mf"), Some(70));
            assert_eq!(r.body.as_ref(), b"hello");
        }),
        case!("space_before_colon", |m| {
            let r = req(m);
            assert_eq!(r.call_id(), Some("sbc-1@example.net"));
            assert_eq!(r.via_top().expect("via").branch(), Some("z9hG4bK-sbc1"));
            assert_eq!(r.from().expect("from").tag(), Some("sbc1"));
            assert!(r.body.is_empty());
        }),
        case!("version_lowercase", |m| assert_eq!(
            req(m).method,
            Method::Bye
        )),
        case!("via_lists", |m| {
            let v = vias(m);
            let branches: Vec<_> = v.iter().map(|v| v.branch().unwrap_or("")).collect();
            assert_eq!(
                branches,
                [
                    "z9hG4bK-vl1",
                    "z9hG4bK-vl2",
                    "z9hG4bK-vl3",
                    "z9hG4bK-vl4",
                    "z9hG4bK-vl5"
                ]
            );
            let transports: Vec<_> = v.iter().map(|v| v.transport.as_str()).collect();
            assert_eq!(transports, ["UDP", "TCP", "TLS", "UDP", "WSS"]);
            assert_eq!(
                (v[2].host.as_str(), v[2].port),
                ("[2001:db8::9]", Some(5061))
            );
            assert_eq!(v[3].params.get("rport"), Some("5062"));
            assert_eq!(v[3].params.get("received"), Some("198.51.100.70"));
        }),
        case!("via_spaced_protocol", |m| {
            let via = req(m).via_top().expect("SWS around '/' is legal");
            assert_eq!(via.transport, "UDP");
            assert_eq!(via.sent_by(), "198.51.100.7:5060");
            assert_eq!(via.branch(), Some("z9hG4bK-sp1"));
            assert!(via.params.has("rport"));
        }),
        case!("ipv6_request_uri", |m| {
            let r = req(m);
            assert_eq!(r.uri.host, "[2001:db8::20]");
            assert_eq!(r.uri.port, Some(5060));
            assert_eq!(r.uri.params.get("transport"), Some("udp"));
            assert_eq!(r.via_top().expect("via").host, "[2001:db8::7]");
            let contact = r.contact().expect("present").expect("reads");
            assert_eq!(contact.uri.host_port(), "[2001:db8::7]:5060");
        }),
        case!("escaped_user", |m| {
            let r = req(m);
            assert_eq!(r.uri.user.as_deref(), Some("%61lice.smith%2Bhome"));
            assert_eq!(r.uri.host, "example.com");
            assert_eq!(
                r.from().expect("from").uri.user.as_deref(),
                Some("caller%40legacy")
            );
            let to = r.to().expect("to");
            assert_eq!(to.uri.user.as_deref(), Some("+1-212-555-0199%3Bext%3D12"));
            assert_eq!(to.uri.params.get("user"), Some("phone"));
        }),
        case!("tel_uri", |m| {
            let r = req(m);
            assert_eq!(r.uri.scheme, UriScheme::Tel);
            assert_eq!(r.uri.user.as_deref(), Some("+12125550199"));
            assert_eq!(r.from().expect("from").uri.scheme, UriScheme::Tel);
            let to = r.to().expect("to");
            assert_eq!(to.uri.params.get("phone-context"), Some("example.com"));
        }),
        case!("display_names", |m| {
            let r = req(m);
            let from = r.from().expect("from");
            assert_eq!(from.display.as_deref(), Some(r#"Smith, John "JJ" \ Jr"#));
            assert_eq!(
                NameAddr::parse(&from.to_string()).expect("written back"),
                from
            );
            assert_eq!(r.to().expect("to").display.as_deref(), Some("Bob Jones"));
            assert_eq!(
                r.headers.get_all("Contact").count(),
                1,
                "comma inside quotes"
            );
            let contact = r.contact().expect("present").expect("reads");
            assert_eq!(contact.display.as_deref(), Some("Desk, 2nd floor <east>"));
            assert_eq!(
                NameAddr::parse(&contact.to_string()).expect("back"),
                contact
            );
            let pai = r.headers.get("P-Asserted-Identity").expect("pai");
            assert!(pai.ends_with(", <tel:+12125550100>"), "not split: {pai}");
        }),
        case!("unknown_headers", |m| {
            let r = req(m);
            let codes: Vec<_> = r.headers.get_all("x-account-code").collect();
            assert_eq!(
                codes,
                [r#"0042 "quoted" <angle> ;semi, comma"#, "second instance"]
            );
            assert_eq!(
                r.headers.0[1].name, "X-Account-Code",
                "order and spelling kept"
            );
            assert_eq!(r.headers.get("Subject"), Some(""));
            assert_eq!(r.headers.get("X.Odd!Name~Token"), Some("value"));
            assert!(r
                .headers
                .get("Reason")
                .expect("reason")
                .contains("cause=16"));
        }),
        case!("long_headers", |m| {
            let r = req(m);
            assert_eq!(r.headers.get("X-Long").map(str::len), Some(3200));
            assert_eq!(r.headers.get_all("Record-Route").count(), 12);
        }),
        case!("response_reason_utf8", |m| {
            let r = resp(m);
            assert_eq!(r.status, 183);
            assert_eq!(r.reason, "Sitzung läuft – frühe Medien");
            let via = r.via_top().expect("via");
            assert_eq!(via.params.get("rport"), Some("5064"));
            assert_eq!(via.params.get("received"), Some("203.0.113.5"));
        }),
        case!("response_empty_reason", |m| assert_eq!(
            (resp(m).status, resp(m).reason.as_str()),
            (180, "")
        )),
        case!("response_unknown_code", |m| {
            let r = resp(m);
            assert_eq!(r.status, 499);
            assert_eq!(r.reason, "Something We Never Heard Of");
        }),
        case!("zero_body", |m| assert!(req(m).body.is_empty())),
        case!("no_content_length", |m| {
            let r = req(m);
            assert!(r.body.is_empty());
            assert_eq!(r.headers.get("Accept"), Some("application/sdp"));
        }),
        case!("body_longer_than_content_length", |m| assert_eq!(
            req(m).body.as_ref(),
            b"hello",
            "cut at Content-Length"
        )),
        case!("sips", |m| {
            let r = req(m);
            assert_eq!(r.uri.scheme, UriScheme::Sips);
            assert_eq!(name_addr(r, "Route").uri.scheme, UriScheme::Sips);
            assert_eq!(r.via_top().expect("via").transport, "TLS");
        }),
        case!("params_without_values", |m| {
            let r = req(m);
            assert_eq!(
                r.uri.params.0,
                [("lr".into(), None), ("x-flag".into(), None)]
            );
            let via = r.via_top().expect("via");
            assert!(via.params.has("rport") && via.params.has("alias"));
            assert_eq!(via.params.get("rport"), None, "a flag has no value");
            let routes: Vec<_> = r.headers.get_all("Route").collect();
            assert_eq!(
                routes,
                ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr;ob>"]
            );
            assert!(r.from().expect("from").params.has("x-mark"));
            let contact = r.contact().expect("present").expect("reads");
            assert_eq!(
                contact.params.get("+sip.instance"),
                Some("\"<urn:uuid:00000000-0000-1000-8000-00aabbccddee>\"")
            );
            assert!(contact.params.has("+sip.ice"));
            assert!(contact.uri.params.has("ob"));
        }),
        case!("register_contacts", |m| {
            let r = req(m);
            let contacts: Vec<_> = r
                .headers
                .get_all("Contact")
                .map(|c| NameAddr::parse(c).expect("contact reads"))
                .collect();
            assert_eq!(contacts.len(), 3);
            assert_eq!(contacts[0].params.get("q"), Some("0.9"));
            assert_eq!(contacts[1].display.as_deref(), Some("Alice, mobile"));
            assert_eq!(contacts[1].uri.params.get("transport"), Some("tcp"));
            assert_eq!(
                contacts[2].params.get("expires"),
                Some("60"),
                "addr-spec param"
            );
            let auth = r.headers.get("Authorization").expect("auth");
            assert!(
                auth.ends_with("algorithm=MD5"),
                "not split at commas: {auth}"
            );
        }),
        case!("register_star", |m| {
            let r = req(m);
            assert_eq!(r.headers.get("Contact"), Some("*"));
            assert_eq!(r.headers.get("Expires"), Some("0"));
        }),
        case!("unknown_method", |m| {
            let r = req(m);
            assert_eq!(r.method, Method::Other("PUBLISH".into()));
            assert!(r.body.starts_with(b"<?xml"));
        }),
        case!("extension_method", |m| {
            let r = req(m);
            assert_eq!(r.method, Method::Other("x-Probe.1".into()));
            assert_eq!(r.cseq().expect("cseq").method, r.method);
        }),
        case!("ack_with_routes", |m| {
            let r = req(m);
            assert_eq!(r.method, Method::Ack);
            assert_eq!(r.headers.get_all("Route").count(), 2);
        }),
        case!("cancel_max_cseq", |m| {
            let r = req(m);
            assert_eq!(r.cseq().expect("cseq").seq, 2_147_483_647);
            assert_eq!(r.max_forwards().expect("mf"), Some(0));
        }),
        case!("refer_escaped_headers", |m| {
            let r = req(m);
            let refer_to = name_addr(r, "Refer-To");
            assert_eq!(
                refer_to.uri.headers.as_deref(),
                Some("Replaces=abc%40198.51.100.7%3Bto-tag%3Dx1%3Bfrom-tag%3Dx2&Subject=a%20b")
            );
            let contact = r.contact().expect("present").expect("reads");
            assert_eq!(contact.uri.user.as_deref(), Some("alice:secret"));
        }),
        case!("leading_crlf", |m| assert_eq!(
            req(m).method,
            Method::Options
        )),
    ]
}

#[test]
fn valid_messages_parse_validate_and_round_trip() {
    let large = large_body_message();
    let mut cases = valid_cases();
    cases.push(("large_body", large.leak(), |m| {
        assert_eq!(req(m).body.len(), 65_000);
    }));
    assert!(cases.len() >= 25);
    for (name, bytes, check) in cases {
        let msg = parse(bytes).unwrap_or_else(|e| panic!("{name}: refused: {e}"));
        if let Message::Request(r) = &msg {
            r.validate()
                .unwrap_or_else(|e| panic!("{name}: does not validate: {e}"));
        }
        check(&msg);
        let wire = msg.to_bytes();
        let again = parse(&wire).unwrap_or_else(|e| panic!("{name}: written form refused: {e}"));
        assert_eq!(again, msg, "{name}: changed by a round trip");
        if let Message::Request(r) = &again {
            r.validate()
                .unwrap_or_else(|e| panic!("{name}: written form does not validate: {e}"));
        }
        assert_eq!(
            again.to_bytes(),
            wire,
            "{name}: writing is not a fixed point"
        );
    }
}

/// Where a broken message must be stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Parse,
    Validate,
}

fn invalid_cases() -> Vec<(&'static str, &'static [u8], Stage, &'static str)> {
    use Stage::{Parse, Validate};
    macro_rules! case {
        ($name:literal, $stage:expr, $reason:literal) => {{
            let (name, bytes) = fixture!("invalid", $name);
            (name, bytes, $stage, $reason)
        }};
    }
    vec![
        case!("bare_lf_line_ends", Parse, "lines end in a bare LF"),
        case!(
            "body_shorter_than_content_length",
            Parse,
            "body shorter than Content-Length"
        ),
        case!("contact_not_a_uri", Validate, "bad Contact: ' ' in URI"),
        case!(
            "content_length_conflict",
            Parse,
            "conflicting Content-Length"
        ),
        case!(
            "content_length_garbage",
            Parse,
            "bad Content-Length \"12abc\""
        ),
        case!("content_length_huge", Parse, "bad Content-Length"),
        case!(
            "content_length_negative",
            Parse,
            "bad Content-Length \"-4\""
        ),
        case!(
            "content_length_plus_sign",
            Parse,
            "bad Content-Length \"+0\""
        ),
        case!(
            "cseq_method_mismatch",
            Validate,
            "CSeq method does not match"
        ),
        case!("cseq_not_a_number", Validate, "bad CSeq number"),
        case!("cseq_overflow", Validate, "bad CSeq number"),
        case!("cseq_without_method", Validate, "CSeq without method"),
        case!("duplicate_call_id", Validate, "more than one Call-ID"),
        case!("empty", Parse, "not terminated by an empty line"),
        case!(
            "fold_into_start_line",
            Parse,
            "continuation line after the start line"
        ),
        case!(
            "from_garbage_after_angle",
            Validate,
            "bad From: garbage after '>'"
        ),
        case!("from_unclosed_angle", Validate, "bad From: unclosed '<'"),
        case!("header_without_colon", Parse, "header line without ':'"),
        case!("max_forwards_not_a_number", Validate, "bad Max-Forwards"),
        case!("method_lowercase", Validate, "CSeq method does not match"),
        case!("no_call_id", Validate, "missing Call-ID"),
        case!("no_cseq", Validate, "missing CSeq"),
        case!("no_empty_line", Parse, "not terminated by an empty line"),
        case!("no_from", Validate, "missing From"),
        case!("no_via", Validate, "missing Via"),
        case!("non_utf8_header", Parse, "not UTF-8"),
        case!("nul_in_call_id", Parse, "control character 0x00"),
        case!("only_crlf", Parse, "not terminated by an empty line"),
        case!("request_line_double_space", Parse, "bad request line"),
        case!("request_line_extra_token", Parse, "bad request line"),
        case!("request_line_no_version", Parse, "bad request line"),
        case!("request_uri_bad_host", Parse, "bad Request-URI: bad host"),
        case!(
            "request_uri_http",
            Parse,
            "bad Request-URI: unsupported URI scheme"
        ),
        case!(
            "request_uri_ipv6_unclosed",
            Parse,
            "unclosed IPv6 reference"
        ),
        case!(
            "response_version_1",
            Parse,
            "unsupported SIP version \"SIP/1.0\""
        ),
        case!(
            "second_contact_broken",
            Validate,
            "bad Contact: bad IPv6 reference"
        ),
        case!("status_099", Parse, "status code 99 out of range"),
        case!("status_700", Parse, "status code 700 out of range"),
        case!("status_letters", Parse, "bad status code \"2x0\""),
        case!(
            "status_line_without_reason_separator",
            Parse,
            "bad status line"
        ),
        case!("status_two_digits", Parse, "bad status code \"99\""),
        case!("to_stray_angle", Validate, "bad To: '>' in URI"),
        case!("to_unclosed_quote", Validate, "bad To: unclosed quote"),
        case!("version_1", Parse, "unsupported SIP version \"SIP/1.0\""),
        case!("version_2_1", Parse, "unsupported SIP version \"SIP/2.1\""),
        case!("version_3", Parse, "unsupported SIP version \"SIP/3.0\""),
        case!("via_bad_port", Validate, "bad Via: bad port \"65536\""),
        case!("via_garbage", Validate, "bad Via: bad Via protocol"),
    ]
}

#[test]
fn broken_messages_are_refused_with_the_reason() {
    let too_large = {
        let mut m = large_body_message();
        m.resize(MAX_MESSAGE_BYTES + 1, b'x');
        m
    };
    let mut cases = invalid_cases();
    cases.push((
        "too_large",
        too_large.leak(),
        Stage::Parse,
        "message too large",
    ));
    assert!(cases.len() >= 25);
    for (name, bytes, stage, want) in cases {
        let got = match parse(bytes) {
            Err(e) => (Stage::Parse, e),
            Ok(Message::Request(r)) => match r.validate() {
                Err(e) => (Stage::Validate, e),
                Ok(()) => panic!("{name}: accepted"),
            },
            Ok(Message::Response(r)) => panic!("{name}: accepted as a {} response", r.status),
        };
        assert_eq!(
            got.0, stage,
            "{name}: refused at the wrong stage: {}",
            got.1
        );
        assert!(
            got.1.reason().contains(want),
            "{name}: reason {:?} does not say {want:?}",
            got.1.reason()
        );
    }
}

/// What rsip 0.4 does on its own with the messages it gets wrong. If an
/// rsip upgrade changes one of these, this test says so and the workaround
/// in parse.rs can be looked at again.
#[test]
fn bare_rsip_rejects_these_valid_messages() {
    let expect = [
        ("extension_method", "invalid method: x-Probe.1"),
        ("folded_headers", "Tokenizer error"),
        ("space_before_colon", "Tokenizer error"),
        ("version_lowercase", "Tokenizer error"),
        // The host part's text after its first ':' is read as a port.
        ("ipv6_request_uri", "invalid digit found in string"),
        ("tel_uri", "number too large to fit in target type"),
    ];
    let all = valid_cases();
    for (name, error) in expect {
        let (_, bytes, _) = all.iter().find(|c| c.0 == name).expect("case exists");
        let e = rsip::SipMessage::try_from(*bytes).expect_err(name);
        assert!(e.to_string().contains(error), "{name}: rsip said {e}");
        parse(bytes).unwrap_or_else(|e| panic!("{name}: still refused: {e}"));
    }
}

#[test]
fn bare_rsip_accepts_these_broken_messages() {
    let rsip_request = |name: &str| {
        let (_, bytes, _, _) = invalid_cases()
            .into_iter()
            .find(|c| c.0 == name)
            .expect("case exists");
        match rsip::SipMessage::try_from(bytes) {
            Ok(rsip::SipMessage::Request(r)) => r,
            other => panic!("{name}: rsip now gives {other:?}"),
        }
    };
    // A NUL inside a header value is kept as part of the value.
    let r = rsip_request("nul_in_call_id");
    assert!(r.headers.iter().any(|h| h.to_string().contains('\0')));
    // Without the empty line ending the head, the first header is the only
    // one and the rest of the head becomes the body.
    let r = rsip_request("no_empty_line");
    assert_eq!(r.headers.iter().count(), 1);
    assert!(r.body.starts_with(b"From: "));
    // Two spaces before the Request-URI: the URI loses its scheme, " sip"
    // becomes its user name and "bob" that user's password.
    let r = rsip_request("request_line_double_space");
    assert_eq!(r.uri.scheme, None);
    assert_eq!(r.uri.to_string(), " sip:bob@example.com");
    // SIP/1.0 is taken as version 1; SIP/2.1 as SIP/2.0.
    assert_eq!(rsip_request("version_1").version, rsip::Version::V1);
    assert_eq!(rsip_request("version_2_1").version, rsip::Version::V2);
    // Method names are case-sensitive (RFC 3261 §7.1); rsip maps "invite"
    // onto INVITE, so CSeq "1 INVITE" would have matched it.
    assert_eq!(
        rsip_request("method_lowercase").method,
        rsip::Method::Invite
    );
    // Hosts are not checked.
    assert_eq!(
        rsip_request("request_uri_bad_host").uri.host().to_string(),
        "exa(mple).com"
    );
    // Two Content-Length values that disagree are not looked at.
    rsip_request("content_length_conflict");
}

#[test]
fn bare_rsip_replaces_reason_phrases_of_known_codes() {
    for (name, status) in [
        ("response_reason_utf8", 183),
        ("response_empty_reason", 180),
    ] {
        let (_, bytes, _) = valid_cases()
            .into_iter()
            .find(|c| c.0 == name)
            .expect("case exists");
        let Ok(rsip::SipMessage::Response(r)) = rsip::SipMessage::try_from(bytes) else {
            panic!("{name}: rsip refused it");
        };
        assert!(!matches!(r.status_code, rsip::StatusCode::Other(..)));
        assert_eq!(r.status_code.code(), status);
        // parse keeps the phrase that was sent.
        let Ok(Message::Response(ours)) = parse(bytes) else {
            panic!("{name}: refused");
        };
        assert_ne!(ours.reason, super::default_reason(status));
    }
}

#[test]
fn response_for_each_valid_request_round_trips() {
    for (name, bytes, _) in valid_cases() {
        let Ok(Message::Request(r)) = parse(bytes) else {
            continue;
        };
        for status in [100, 183, 200, 404, 487, 503, 603] {
            let resp = Response::for_request(&r, status);
            let Ok(Message::Response(back)) = parse(&resp.to_bytes()) else {
                panic!("{name}: {status} does not parse back");
            };
            assert_eq!(back, resp, "{name}: {status} changed");
            assert_eq!(back.call_id(), r.call_id());
            assert_eq!(back.cseq().expect("cseq"), r.cseq().expect("cseq"));
        }
    }
}

/// Inputs the `sip_message` fuzz target found (each a fixed bug, see the
/// comment on it), then every fixture: all go through the target's
/// invariant check.
#[test]
fn malformed_input() {
    let found: &[&[u8]] = &[
        // An addr-spec Contact whose URI ends in `?>`: it read as a URI with
        // the header part ">", written back as `<sip:bob@h?>>`, which does
        // not read. URIs now refuse `<`, `>`, `"` and white space.
        b"REGISTER sip:example.com SIP/2.0\r\n\
          Via: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK-f1\r\n\
          From: <sip:alice@example.com>;tag=f1\r\n\
          To: <sip:alice@example.com>\r\n\
          Call-ID: f1\r\n\
          CSeq: 1 REGISTER\r\n\
          Contact: sip:bob@h?>\r\n\r\n",
    ];
    for input in found {
        fuzz_sip_message(input);
    }
    for (_, bytes, _) in valid_cases() {
        fuzz_sip_message(bytes);
    }
    for (_, bytes, _, _) in invalid_cases() {
        fuzz_sip_message(bytes);
    }
    fuzz_sip_message(&large_body_message());
}

#[test]
fn serializing_keeps_the_body_and_rewrites_content_length() {
    let Ok(Message::Request(mut r)) = parse(fixture!("valid", "zero_body").1) else {
        panic!("parses");
    };
    r.body = Bytes::from_static(b"0123456789");
    let wire = r.to_bytes();
    let text = std::str::from_utf8(&wire).expect("text");
    assert_eq!(text.matches("Content-Length").count(), 1);
    assert!(text.ends_with("Content-Length: 10\r\n\r\n0123456789"));
}
