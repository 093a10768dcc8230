//! SDP tests: golden files (peer SDP in, rewritten SDP out), behaviours of
//! the parser, reads and rewrites, property tests, and the hostile inputs
//! every fuzzer find lands in.

#![allow(clippy::indexing_slicing, clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use proptest::prelude::*;

use super::*;

const RELAY: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));

fn relay() -> Connection {
    Connection::from_ip(RELAY)
}

fn addr(s: &str) -> Option<SocketAddr> {
    Some(s.parse().unwrap())
}

fn err(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

/// The files keep LF endings (friendlier to git and editors); the writer
/// uses CRLF.
fn crlf(text: &str) -> String {
    text.replace('\n', "\r\n")
}

/// Parses `input` (as written and with CRLF: both must agree), rewrites it,
/// and compares the result with `expected`.
fn golden(input: &str, expected: &str, rewrite: impl FnOnce(&mut Sdp)) -> Sdp {
    let sdp = parse(input).unwrap();
    assert_eq!(
        parse(&crlf(input)).unwrap(),
        sdp,
        "CRLF and LF parse differently"
    );
    fuzz_sdp(input.as_bytes());
    let mut rewritten = sdp.clone();
    rewrite(&mut rewritten);
    let out = rewritten.to_string();
    assert_eq!(
        out,
        crlf(expected),
        "\n--- got ---\n{out}--- want ---\n{expected}"
    );
    assert_eq!(parse(&out).unwrap(), rewritten);
    sdp
}

mod golden_files {
    use super::*;

    #[test]
    fn pbx_offer_gets_relay_address_port_and_rtcp() {
        let sdp = golden(
            include_str!("testdata/pbx_offer.sdp"),
            include_str!("testdata/pbx_offer.expected.sdp"),
            |s| {
                s.set_all_connections(relay());
                s.set_origin_address(RELAY);
                s.bump_version();
                let m = &mut s.media_mut()[0];
                m.set_port(30000);
                m.set_rtcp(Rtcp {
                    port: 30001,
                    connection: None,
                });
            },
        );
        let m = &sdp.media()[0];
        assert_eq!(sdp.rtp_addr(m), addr("192.168.1.20:10000"));
        assert_eq!(sdp.rtcp_addr(m), addr("192.168.1.20:10001"));
        assert_eq!(sdp.direction_of(m), Direction::SendRecv);
        assert_eq!(m.ptime(), Some(Duration::from_millis(20)));
        assert_eq!(
            m.rtpmaps().map(|r| r.encoding).collect::<Vec<_>>(),
            ["PCMU", "PCMA", "telephone-event"]
        );
        assert_eq!(m.fmtp("101").unwrap().params, "0-16");
        assert_eq!(sdp.session_name(), Some("Asterisk PBX 18.0.0"));
        assert_eq!(sdp.origin().session_version(), 1184823117);
    }

    #[test]
    fn webrtc_offer_becomes_plain_rtp_without_ice_or_mux() {
        let sdp = golden(
            include_str!("testdata/webrtc_offer.sdp"),
            include_str!("testdata/webrtc_offer.expected.sdp"),
            |s| {
                s.remove_ice();
                s.set_all_connections(relay());
                s.set_origin_address(RELAY);
                s.bump_version();
                // DTLS attributes stay: dropping them is the caller's call.
                for (m, port) in s.media_mut().iter_mut().zip([30002, 30004]) {
                    m.set_proto("RTP/AVP").unwrap();
                    m.set_port(port);
                    m.set_rtcp_mux(false);
                    m.set_rtcp(Rtcp {
                        port: port + 1,
                        connection: None,
                    });
                }
            },
        );
        assert_eq!(sdp.attribute_value("group"), Some("BUNDLE 0 1"));
        let [audio, video] = sdp.media() else {
            panic!("two m= lines")
        };
        assert_eq!(audio.ice_ufrag(), Some("EsAw"));
        assert_eq!(audio.ice_pwd(), Some("P2uYro0UCOQ4zxjKXaWCBui1"));
        assert_eq!(audio.ice_options(), Some("trickle"));
        assert!(audio.end_of_candidates() && !video.end_of_candidates());
        assert!(!sdp.ice_lite());
        let candidates: Vec<Candidate> = audio.candidates().collect();
        assert_eq!(candidates.len(), 3);
        assert_eq!(candidates[1].kind, "srflx");
        assert_eq!(
            candidates[1].related_address.as_deref(),
            Some("192.168.0.196")
        );
        assert_eq!(candidates[1].related_port, Some(54400));
        assert_eq!(candidates[1].extensions, "generation 0 network-id 1");
        assert_eq!(candidates[2].transport, "tcp");
        assert_eq!(candidates[2].port, 9);
        // With rtcp-mux, RTCP shares the RTP address despite a=rtcp:9.
        assert!(audio.rtcp_mux());
        assert_eq!(sdp.rtp_addr(audio), addr("198.51.100.23:54400"));
        assert_eq!(sdp.rtcp_addr(audio), addr("198.51.100.23:54400"));
        assert_eq!(
            audio.rtcp(),
            Some(Rtcp {
                port: 9,
                connection: Some(Connection::from_ip(Ipv4Addr::UNSPECIFIED.into())),
            })
        );
        assert_eq!(sdp.direction_of(video), Direction::RecvOnly);
        let opus = audio.rtpmap(111).unwrap();
        assert_eq!(
            (opus.clock_rate, opus.params.as_deref()),
            (48000, Some("2"))
        );
        assert_eq!(audio.rtpmap(96), None);
        assert_eq!(
            audio.fmtp("111").unwrap().params,
            "minptime=10;useinbandfec=1"
        );
    }

    #[test]
    fn session_level_connection_and_direction_apply_to_every_stream() {
        let sdp = golden(
            include_str!("testdata/session_connection_only.sdp"),
            include_str!("testdata/session_connection_only.expected.sdp"),
            |s| {
                s.set_all_connections(relay());
                s.set_origin_address(RELAY);
                s.origin_mut().set_username("-").unwrap();
                s.bump_version();
                s.set_direction(None);
                let media = s.media_mut();
                media[0].set_port(30006);
                media[0].set_direction(Some(Direction::SendRecv));
                media[1].set_port(30008);
            },
        );
        assert_eq!(
            sdp.media()
                .iter()
                .filter(|m| m.connection().is_some())
                .count(),
            0
        );
        let [audio, video] = sdp.media() else {
            panic!("two m= lines")
        };
        assert_eq!(sdp.rtp_addr(audio), addr("192.0.2.101:49170"));
        assert_eq!(sdp.rtcp_addr(audio), addr("192.0.2.101:49171"));
        assert_eq!(sdp.rtp_addr(video), addr("192.0.2.101:51372"));
        assert_eq!(sdp.direction_of(audio), Direction::SendOnly);
        assert_eq!(sdp.direction_of(video), Direction::SendOnly);
        assert_eq!(audio.direction(), None);
        assert_eq!(sdp.origin().address(), "host.atlanta.example.com");
        assert_eq!(sdp.session_name(), Some(""));
    }

    #[test]
    fn rejected_stream_keeps_port_zero_and_its_lines() {
        let sdp = golden(
            include_str!("testdata/one_rejected.sdp"),
            include_str!("testdata/one_rejected.expected.sdp"),
            |s| {
                s.set_all_connections(relay());
                s.set_origin_address(RELAY);
                s.bump_version();
                for m in s.media_mut().iter_mut().filter(|m| !m.is_rejected()) {
                    m.set_port(30010);
                    m.set_rtcp(Rtcp {
                        port: 30011,
                        connection: Some(relay()),
                    });
                    m.set_rtcp_mux(true);
                }
            },
        );
        let [audio, video] = sdp.media() else {
            panic!("two m= lines")
        };
        assert!(video.is_rejected() && !audio.is_rejected());
        assert_eq!(sdp.rtp_addr(video), None);
        assert_eq!(sdp.rtcp_addr(video), None);
        assert_eq!(sdp.rtcp_addr(audio), addr("10.0.0.5:4001"));
        assert_eq!(sdp.direction_of(video), Direction::Inactive);
    }
}

mod parsing {
    use super::*;

    const MINIMAL: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";

    #[test]
    fn crlf_and_bare_lf_parse_alike_and_write_crlf() {
        let lf = MINIMAL.replace("\r\n", "\n");
        assert_eq!(parse(&lf).unwrap(), parse(MINIMAL).unwrap());
        assert_eq!(parse(&lf).unwrap().to_string(), MINIMAL);
    }

    #[test]
    fn tolerates_trailing_white_space_blank_end_lines_and_no_final_newline() {
        let sloppy = "v=0 \no=- 1 1 IN IP4 192.0.2.1\t\ns=-\r\r\nc=IN  IP4   192.0.2.1\nt=0 0\nm=audio  5000 RTP/AVP  0 \n\n\r\n";
        assert_eq!(parse(sloppy).unwrap().to_string(), MINIMAL);
        let unterminated = MINIMAL.trim_end();
        assert_eq!(parse(unterminated).unwrap().to_string(), MINIMAL);
    }

    #[test]
    fn keeps_unknown_lines_and_attributes_verbatim_and_in_order() {
        let text = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\ni=info\r\nu=http://example.com/x\r\nb=AS:128\r\nt=0 0\r\nz=2882844526 -1h\r\nx=unknown line\r\na=tool:kordon 1.0\r\na=x-weird attr: with:colons \r\nm=audio 5000/2 RTP/AVP 0 96\r\ni=media info\r\nk=prompt\r\na=flag\r\na=empty:\r\ny=media-level other\r\n";
        let sdp = parse(text).unwrap();
        assert_eq!(sdp.to_string(), text.replace(" \r\n", "\r\n"));
        let kinds: String = sdp.lines().iter().map(Line::kind).collect();
        assert_eq!(kinds, "siubtzxaa");
        let m = &sdp.media()[0];
        assert_eq!((m.port(), m.port_count()), (5000, Some(2)));
        assert_eq!(m.attribute("flag").unwrap().value(), None);
        assert_eq!(m.attribute("empty").unwrap().value(), Some(""));
        assert_eq!(sdp.attribute_value("x-weird attr"), Some(" with:colons"));
    }

    #[test]
    fn o_line_inside_a_media_section_is_kept_as_an_other_line() {
        let text = format!("{MINIMAL}o=stray 1 1 IN IP4 192.0.2.9\r\n");
        let sdp = parse(&text).unwrap();
        assert_eq!(sdp.origin().username(), "-");
        assert_eq!(sdp.media()[0].lines()[0].kind(), 'o');
        assert_eq!(sdp.to_string(), text);
    }

    #[test]
    fn origin_fields_are_read_and_address_type_is_case_insensitive() {
        let sdp =
            parse("v=0\no=jdoe 2890844526 18446744073709551615 IN ip6 2001:db8::1\ns=-\nt=0 0\n")
                .unwrap();
        let o = sdp.origin();
        assert_eq!(
            (
                o.username(),
                o.session_id(),
                o.session_version(),
                o.nettype(),
                o.addrtype(),
                o.address()
            ),
            (
                "jdoe",
                "2890844526",
                u64::MAX,
                "IN",
                AddrType::Ip6,
                "2001:db8::1"
            )
        );
        assert!(sdp
            .to_string()
            .contains("o=jdoe 2890844526 18446744073709551615 IN IP6 2001:db8::1\r\n"));
        assert!(sdp.media().is_empty());
    }

    #[test]
    fn refuses_a_body_that_does_not_start_with_v0() {
        for text in [
            "",
            "\r\n",
            "o=- 1 1 IN IP4 192.0.2.1\r\n",
            "v=1\r\n",
            " v=0\r\n",
            "\nv=0\n",
        ] {
            assert!(
                err(text).ends_with("the first line must be v=0"),
                "{text:?}: {}",
                err(text)
            );
        }
        assert_eq!(err("v=1\r\n"), "sdp line 1: the first line must be v=0");
    }

    #[test]
    fn refuses_a_short_m_line_naming_its_line() {
        let text = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nm=audio 5000 RTP/AVP\r\n";
        assert_eq!(err(text), "sdp line 4: m= line needs at least 4 fields");
    }

    #[test]
    fn refuses_bad_m_ports() {
        for port in [
            "70000", "-1", "+5", "abc", "5000/0", "5000/", "/2", "5000/x",
        ] {
            let text = format!("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nm=audio {port} RTP/AVP 0\n");
            assert_eq!(err(&text), format!("sdp line 4: bad m= port {port:?}"));
        }
    }

    #[test]
    fn refuses_unknown_address_types_and_mismatched_literals() {
        let text = "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IPX 192.0.2.1\n";
        assert_eq!(
            err(text),
            "sdp line 4: unknown address type \"IPX\" (IP4 or IP6 expected)"
        );
        let text = "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP6 192.0.2.1\n";
        assert_eq!(
            err(text),
            "sdp line 4: c= address does not match its address type"
        );
        let text = "v=0\no=- 1 1 IN IP7 192.0.2.1\n";
        assert!(err(text).starts_with("sdp line 2: unknown address type"));
        let text = format!("{MINIMAL}a=rtcp:5001 IN IP4 2001:db8::1\r\n");
        assert_eq!(
            err(&text),
            "sdp line 7: a=rtcp address does not match its address type"
        );
    }

    #[test]
    fn refuses_malformed_structural_lines() {
        let cases = [
            ("v=0\nv=0\n", "sdp line 2: v= line after the first line"),
            ("v=0\nhello\n", "sdp line 2: expected <letter>=<value>"),
            ("v=0\nA=x\n", "sdp line 2: expected <letter>=<value>"),
            ("v=0\n=x\n", "sdp line 2: expected <letter>=<value>"),
            ("v=0\ns=a\rb\n", "sdp line 2: CR or NUL inside a line"),
            ("v=0\ns=a\0b\n", "sdp line 2: CR or NUL inside a line"),
            (
                "v=0\ns=-\n\nt=0 0\n",
                "sdp line 3: empty line before the end of the description",
            ),
            (
                "v=0\no=- 1 1 IN IP4\n",
                "sdp line 2: o= line needs 6 fields",
            ),
            (
                "v=0\no=- 1 x IN IP4 a\n",
                "sdp line 2: o= session version is not a 64-bit number",
            ),
            (
                "v=0\no=- 1 1 IN IP4 a\no=- 1 1 IN IP4 a\n",
                "sdp line 3: second o= line",
            ),
            ("v=0\nc=IN IP4\n", "sdp line 2: c= line needs 3 fields"),
            ("v=0\na=\n", "sdp line 2: a= line without an attribute name"),
            (
                "v=0\na=:x\n",
                "sdp line 2: a= line without an attribute name",
            ),
            ("v=0\ns=-\nt=0 0\n", "sdp: no o= line"),
        ];
        for (text, want) in cases {
            assert_eq!(err(text), want, "{text:?}");
        }
    }

    #[test]
    fn refuses_malformed_typed_attributes() {
        let cases = [
            ("a=rtcp", "a=rtcp needs a port"),
            ("a=rtcp:abc", "a=rtcp port is not a port number"),
            ("a=rtcp:70000", "a=rtcp port is not a port number"),
            ("a=rtcp:5001 IN IP4", "a=rtcp needs a port and optionally an address"),
            ("a=rtpmap:128 foo/8000", "a=rtpmap payload type is not 0-127"),
            ("a=rtpmap:0 PCMU", "a=rtpmap needs <payload type> <encoding>/<clock rate>"),
            ("a=rtpmap:0 PCMU/x", "a=rtpmap needs <payload type> <encoding>/<clock rate>"),
            ("a=rtpmap:0 /8000", "a=rtpmap needs <payload type> <encoding>/<clock rate>"),
            ("a=rtpmap:0 PCMU/8000/", "a=rtpmap needs <payload type> <encoding>/<clock rate>"),
            ("a=fmtp:", "a=fmtp needs a format"),
            ("a=ptime:x", "a=ptime is not a number of milliseconds"),
            ("a=ptime:20.", "a=ptime is not a number of milliseconds"),
            ("a=ptime:.5", "a=ptime is not a number of milliseconds"),
            ("a=candidate:1 1 udp 100 192.0.2.1 5000 host", "a=candidate needs <foundation> <component> <transport> <priority> <address> <port> typ <type>"),
            ("a=candidate:1 x udp 100 192.0.2.1 5000 typ host", "a=candidate component is not a number"),
            ("a=candidate:1 1 udp -5 192.0.2.1 5000 typ host", "a=candidate priority is not a number"),
            ("a=candidate:1 1 udp 5 192.0.2.1 99999 typ host", "a=candidate port is not a port number"),
            ("a=candidate:1 1 udp 5 192.0.2.1 9 typ host raddr 0.0.0.0 rport x", "a=candidate rport is not a port number"),
        ];
        for (line, want) in cases {
            let text = format!("{MINIMAL}{line}\r\n");
            assert_eq!(err(&text), format!("sdp line 7: {want}"), "{line}");
        }
    }

    #[test]
    fn enforces_and_names_the_limits() {
        let big = format!("{MINIMAL}a=x:{}\r\n", "y".repeat(MAX_BYTES));
        assert_eq!(
            err(&big),
            format!(
                "sdp: body is {} bytes, over the 65536-byte limit",
                big.len()
            )
        );
        let many_lines = format!("{MINIMAL}{}", "a=x\r\n".repeat(MAX_LINES));
        assert_eq!(
            err(&many_lines),
            "sdp line 1001: more than 1000 lines (the limit)"
        );
        let at_limit = format!("{MINIMAL}{}\r\n\r\n", "a=x\r\n".repeat(MAX_LINES - 6));
        assert!(parse(&at_limit).is_ok());
        let head = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n";
        let many_media = format!("{head}{}", "m=audio 0 RTP/AVP 0\r\n".repeat(MAX_MEDIA + 1));
        assert_eq!(
            err(&many_media),
            "sdp line 68: more than 64 media sections (the limit)"
        );
        let max_media = format!("{head}{}", "m=audio 0 RTP/AVP 0\r\n".repeat(MAX_MEDIA));
        assert_eq!(parse(&max_media).unwrap().media().len(), MAX_MEDIA);
    }
}

mod reads {
    use super::*;

    fn sdp(media_lines: &str) -> Sdp {
        parse(&format!(
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n{media_lines}"
        ))
        .unwrap()
    }

    fn rtcp_of(media_lines: &str) -> Option<SocketAddr> {
        let s = sdp(media_lines);
        s.rtcp_addr(&s.media()[0])
    }

    #[test]
    fn rtcp_address_follows_mux_then_attribute_then_port_plus_one() {
        assert_eq!(rtcp_of(""), addr("192.0.2.1:5001"));
        assert_eq!(rtcp_of("a=rtcp:6000\r\n"), addr("192.0.2.1:6000"));
        assert_eq!(
            rtcp_of("a=rtcp:6000 IN IP4 198.51.100.1\r\n"),
            addr("198.51.100.1:6000")
        );
        assert_eq!(
            rtcp_of("a=rtcp:6000 IN IP6 2001:db8::2\r\n"),
            addr("[2001:db8::2]:6000")
        );
        assert_eq!(
            rtcp_of("a=rtcp:6000\r\na=rtcp-mux\r\n"),
            addr("192.0.2.1:5000")
        );
        assert_eq!(rtcp_of("a=rtcp:6000 IN IP4 rtcp.example.net\r\n"), None);
    }

    #[test]
    fn rtcp_port_plus_one_does_not_wrap() {
        let s = parse("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\nm=audio 65535 RTP/AVP 0\n").unwrap();
        let m = &s.media()[0];
        assert_eq!(s.rtp_addr(m), addr("192.0.2.1:65535"));
        assert_eq!(s.rtcp_addr(m), None);
    }

    #[test]
    fn media_connection_overrides_session_connection() {
        let s = sdp("c=IN IP6 2001:db8::5\r\n");
        let m = &s.media()[0];
        assert_eq!(s.rtp_addr(m), addr("[2001:db8::5]:5000"));
        assert_eq!(s.connection().unwrap().address(), "192.0.2.1");
    }

    #[test]
    fn host_names_and_missing_connections_give_no_address() {
        let s = sdp("c=IN IP4 media.example.net\r\n");
        assert_eq!(s.rtp_addr(&s.media()[0]), None);
        let s =
            parse("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\nm=audio 5000 RTP/AVP 0\n").unwrap();
        assert_eq!(s.rtp_addr(&s.media()[0]), None);
        assert_eq!(s.rtcp_addr(&s.media()[0]), None);
    }

    #[test]
    fn multicast_ttl_suffix_is_ignored_for_the_ip() {
        let s = sdp("c=IN IP4 233.252.0.1/127\r\n");
        assert_eq!(s.rtp_addr(&s.media()[0]), addr("233.252.0.1:5000"));
    }

    #[test]
    fn hold_address_is_unspecified() {
        let s = sdp("c=IN IP4 0.0.0.0\r\n");
        assert!(s.media()[0].connection().unwrap().is_unspecified());
        assert!(!s.connection().unwrap().is_unspecified());
    }

    #[test]
    fn direction_defaults_to_sendrecv_and_media_overrides_session() {
        let s = sdp("");
        assert_eq!(s.direction_of(&s.media()[0]), Direction::SendRecv);
        let s = parse("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\na=inactive\nm=audio 5000 RTP/AVP 0\nm=audio 5002 RTP/AVP 0\na=recvonly\na=sendonly\n").unwrap();
        assert_eq!(s.direction_of(&s.media()[0]), Direction::Inactive);
        assert_eq!(s.direction_of(&s.media()[1]), Direction::RecvOnly);
        assert_eq!(Direction::SendOnly.reversed(), Direction::RecvOnly);
        assert_eq!(Direction::Inactive.reversed(), Direction::Inactive);
    }

    #[test]
    fn ptime_may_be_fractional() {
        let s = sdp("a=ptime:22.5\r\n");
        assert_eq!(s.media()[0].ptime(), Some(Duration::from_micros(22_500)));
        let s = sdp("a=ptime:030\r\n");
        assert_eq!(s.media()[0].ptime(), Some(Duration::from_millis(30)));
    }

    #[test]
    fn ice_lite_is_read_at_session_level() {
        let s = parse("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\na=ice-lite\na=ice-ufrag:abcd\nm=audio 5000 RTP/AVP 0\na=remote-candidates:1 192.0.2.3 5000\n").unwrap();
        assert!(s.ice_lite());
        assert_eq!(s.ice_ufrag(), Some("abcd"));
        assert_eq!(s.media()[0].ice_ufrag(), None);
        assert_eq!(s.media()[0].remote_candidates(), Some("1 192.0.2.3 5000"));
    }

    #[test]
    fn typed_values_write_what_they_read() {
        for text in [
            "1 1 UDP 2130706431 192.0.2.1 5000 typ host",
            "2 2 udp 1694498815 198.51.100.7 61000 typ srflx raddr 10.0.0.1 rport 5001 generation 0",
            "3 1 tcp 1 a8b1.local 9 typ host tcptype active",
        ] {
            assert_eq!(text.parse::<Candidate>().unwrap().to_string(), text);
        }
        for text in ["0 PCMU/8000", "111 opus/48000/2"] {
            assert_eq!(text.parse::<Rtpmap>().unwrap().to_string(), text);
        }
        for text in ["5001", "5001 IN IP6 2001:db8::1"] {
            assert_eq!(text.parse::<Rtcp>().unwrap().to_string(), text);
        }
        assert_eq!(
            "96  profile-level-id=42e01f;packetization-mode=1".parse::<Fmtp>(),
            Ok(Fmtp {
                format: "96".into(),
                params: "profile-level-id=42e01f;packetization-mode=1".into()
            })
        );
        assert_eq!("101".parse::<Fmtp>().unwrap().params, "");
    }
}

mod rewrites {
    use super::*;

    #[test]
    fn set_session_connection_inserts_after_the_header_lines() {
        let mut s = parse(
            "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\ni=x\nb=AS:1\nt=0 0\nm=audio 5000 RTP/AVP 0\n",
        )
        .unwrap();
        s.set_session_connection(relay());
        let kinds: String = s.lines().iter().map(Line::kind).collect();
        assert_eq!(kinds, "sicbt");
        s.remove_session_connection();
        assert_eq!(s.connection(), None);
    }

    #[test]
    fn set_media_connection_replaces_the_first_and_drops_the_others() {
        let mut s = parse("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\nm=audio 5000 RTP/AVP 0\ni=title\nc=IN IP4 233.252.0.1/127\nc=IN IP4 233.252.0.2/127\na=x\n").unwrap();
        let m = &mut s.media_mut()[0];
        m.set_connection(relay());
        assert_eq!(
            m.to_string(),
            "m=audio 5000 RTP/AVP 0\r\ni=title\r\nc=IN IP4 203.0.113.10\r\na=x\r\n"
        );
        m.remove_connection();
        m.set_connection(relay());
        assert_eq!(
            m.to_string(),
            "m=audio 5000 RTP/AVP 0\r\ni=title\r\nc=IN IP4 203.0.113.10\r\na=x\r\n"
        );
    }

    #[test]
    fn set_all_connections_adds_media_lines_only_without_a_session_one() {
        let mut s = parse("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\nm=audio 5000 RTP/AVP 0\nm=audio 5002 RTP/AVP 0\nc=IN IP4 192.0.2.3\n").unwrap();
        s.set_all_connections(relay());
        assert_eq!(s.connection(), None);
        assert!(s.media().iter().all(|m| m.connection() == Some(&relay())));
    }

    #[test]
    fn direction_is_replaced_in_place_and_duplicates_dropped() {
        let mut s = parse("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\nm=audio 5000 RTP/AVP 0\na=a\na=sendonly\na=b\na=inactive\n").unwrap();
        let m = &mut s.media_mut()[0];
        m.set_direction(Some(Direction::RecvOnly));
        assert_eq!(
            m.to_string(),
            "m=audio 5000 RTP/AVP 0\r\na=a\r\na=recvonly\r\na=b\r\n"
        );
        m.set_direction(None);
        assert_eq!(m.to_string(), "m=audio 5000 RTP/AVP 0\r\na=a\r\na=b\r\n");
        m.set_direction(Some(Direction::Inactive));
        assert_eq!(
            m.to_string(),
            "m=audio 5000 RTP/AVP 0\r\na=a\r\na=b\r\na=inactive\r\n"
        );
    }

    #[test]
    fn rtcp_and_mux_are_set_once_and_removed() {
        let mut s = parse("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\nm=audio 5000 RTP/AVP 0\na=rtcp:1\na=x\na=rtcp:2\n").unwrap();
        let m = &mut s.media_mut()[0];
        m.set_rtcp(Rtcp {
            port: 7001,
            connection: Some(relay()),
        });
        m.set_rtcp_mux(true);
        m.set_rtcp_mux(true);
        assert_eq!(
            m.to_string(),
            "m=audio 5000 RTP/AVP 0\r\na=rtcp:7001 IN IP4 203.0.113.10\r\na=x\r\na=rtcp-mux\r\n"
        );
        m.remove_rtcp();
        m.set_rtcp_mux(false);
        assert_eq!(m.to_string(), "m=audio 5000 RTP/AVP 0\r\na=x\r\n");
    }

    #[test]
    fn remove_ice_strips_every_rfc_8839_attribute_at_both_levels() {
        let mut s = parse("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\na=ice-lite\na=ice-options:ice2\na=ice-pacing:50\na=group:BUNDLE 0\nm=audio 5000 RTP/AVP 0\na=mid:0\na=ice-ufrag:u\na=ice-pwd:p\na=candidate:1 1 udp 1 192.0.2.1 5000 typ host\na=remote-candidates:1 192.0.2.1 5000\na=ice-mismatch\na=end-of-candidates\n").unwrap();
        s.remove_ice();
        assert_eq!(
            s.to_string(),
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=audio 5000 RTP/AVP 0\r\na=mid:0\r\n"
        );
    }

    #[test]
    fn origin_rewrites_and_version_bump_saturates() {
        let mut s =
            parse("v=0\no=- 1 18446744073709551614 IN IP4 192.0.2.1\ns=-\nt=0 0\n").unwrap();
        s.bump_version();
        s.bump_version();
        assert_eq!(s.origin().session_version(), u64::MAX);
        s.set_origin_address("2001:db8::10".parse().unwrap());
        s.origin_mut().set_session_id("42").unwrap();
        s.origin_mut().set_session_version(7);
        assert!(s.to_string().contains("o=- 42 7 IN IP6 2001:db8::10\r\n"));
    }

    #[test]
    fn arguments_that_would_inject_lines_are_refused() {
        let mut s =
            parse("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\nm=audio 5000 RTP/AVP 0\n").unwrap();
        let m = &mut s.media_mut()[0];
        for bad in ["RTP/AVP\r\na=evil", "RTP AVP", "RTP\u{1}AVP", ""] {
            assert_eq!(
                m.set_proto(bad).unwrap_err().to_string(),
                "sdp: m= proto must be one field: no white space or control characters"
            );
        }
        assert_eq!(m.proto(), "RTP/AVP");
        assert!(Connection::new("IN", AddrType::Ip4, "198.51.100.1\r\na=x").is_err());
        assert!(Connection::new("IN", AddrType::Ip6, "198.51.100.1").is_err());
        assert!(s.origin_mut().set_username("a b").is_err());
        assert!(s.origin_mut().set_session_id("1\0").is_err());
        let host = Connection::new("IN", AddrType::Ip4, "media.example.net").unwrap();
        assert_eq!(
            (host.nettype(), host.addrtype(), host.address()),
            ("IN", AddrType::Ip4, "media.example.net")
        );
        assert_eq!(host.ip(), None);
    }
}

/// Hostile inputs and every fuzzer find: none panics, each keeps the fuzz
/// invariants.
#[test]
fn malformed_input() {
    let cases: &[&[u8]] = &[
        b"",
        b"v=0",
        b"v=0\n",
        b"v=0\no=",
        b"v=0\no=- 1 1 IN IP4 a\nm=",
        b"v=0\no=- 1 1 IN IP4 a\nm=a 1 b c\nc=IN IP4 1.2.3.4\na=rtcp:65535 IN IP6 ::\n",
        b"v=0\no=- 1 1 IN IP4 a\nm=a 65535 b c\nc=IN IP4 1.2.3.4\n",
        b"v=0\no=- 1 1 IN IP4 a\na=\xff\n",
        "v=0\no=- 1 1 IN IP4 a\ns=\u{feff}\u{3000}\n".as_bytes(),
        "v=0\no=- 1 1 IN IP4 a\na=é:ü\nm=é 0 ü ß\n".as_bytes(),
        b"v=0\no=- 1 1 IN IP4 a\nm=audio 1/65535 RTP/AVP 0\n",
        b"v=0\no=- 1 1 IN IP4 a\nm=audio 1 RTP/AVP 0\na=candidate:a 1 b 1 c 1 typ d raddr\n",
        b"v=0\no=- 1 1 IN IP4 a\nm=audio 1 RTP/AVP 0\na=ptime:99999999999\n",
        b"v=0\no=- 1 1 IN IP4 a\nm=audio 1 RTP/AVP 0\na=ptime:1.99999999999999999999\n",
        b"v=0\x0c\no=- 1 1 IN IP4 a\x0c\n",
        b"v=0\no=-\x0c1 1 IN IP4 a\n",
    ];
    for input in cases {
        fuzz_sdp(input);
    }
}

/// Generators for SDP text: valid by construction, with the sloppiness
/// peers show (runs of spaces, tabs, bare LF, trailing white space).
mod gen {
    use super::*;

    pub(super) fn token() -> impl Strategy<Value = String> {
        "[A-Za-z0-9+/.#_-]{1,10}"
    }

    fn sep() -> impl Strategy<Value = &'static str> {
        prop_oneof![4 => Just(" "), 1 => Just("  "), 1 => Just("\t")]
    }

    fn address() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(|o| format!("IP4 {}", Ipv4Addr::from(o))),
            any::<u128>().prop_map(|a| format!("IP6 {}", std::net::Ipv6Addr::from(a))),
            "[a-z]{1,8}\\.example\\.(net|com)".prop_map(|h| format!("ip4 {h}")),
            (any::<[u8; 4]>(), 1u8..=255)
                .prop_map(|(o, ttl)| format!("IP4 {}/{ttl}", Ipv4Addr::from(o))),
        ]
    }

    fn connection() -> impl Strategy<Value = String> {
        (sep(), address()).prop_map(|(s, a)| format!("c=IN{s}{}", a.replacen(' ', s, 1)))
    }

    fn free_text() -> impl Strategy<Value = String> {
        "[ -~]{0,24}"
    }

    fn generic_name() -> impl Strategy<Value = String> {
        token().prop_filter("typed names have their own generators", |n| {
            !matches!(
                n.as_str(),
                "rtcp" | "rtpmap" | "fmtp" | "ptime" | "candidate"
            )
        })
    }

    fn attribute() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "sendrecv",
                "sendonly",
                "recvonly",
                "inactive",
                "rtcp-mux",
                "ice-lite",
                "end-of-candidates",
                "rtcp-rsize",
                "ice-mismatch",
            ])
            .prop_map(|f| format!("a={f}")),
            any::<u16>().prop_map(|p| format!("a=rtcp:{p}")),
            (any::<u16>(), address()).prop_map(|(p, a)| format!("a=rtcp:{p} IN {a}")),
            (
                0u8..=127,
                "[A-Za-z0-9.-]{1,10}",
                any::<u32>(),
                proptest::option::of(1u8..=8)
            )
                .prop_map(|(pt, enc, rate, ch)| match ch {
                    Some(ch) => format!("a=rtpmap:{pt} {enc}/{rate}/{ch}"),
                    None => format!("a=rtpmap:{pt} {enc}/{rate}"),
                }),
            (token(), free_text()).prop_map(|(f, p)| format!("a=fmtp:{f} {p}")),
            (0u32..1000, proptest::option::of(0u32..1000)).prop_map(|(ms, frac)| match frac {
                Some(f) => format!("a=ptime:{ms}.{f}"),
                None => format!("a=ptime:{ms}"),
            }),
            (
                token(),
                1u16..=256,
                any::<u32>(),
                any::<[u8; 4]>(),
                any::<u16>(),
                any::<bool>()
            )
                .prop_map(|(f, c, prio, ip, port, related)| {
                    let mut line = format!(
                        "a=candidate:{f} {c} udp {prio} {} {port} typ host",
                        Ipv4Addr::from(ip)
                    );
                    if related {
                        line.push_str(" raddr 10.0.0.1 rport 9 generation 0");
                    }
                    line
                }),
            token().prop_map(|t| format!("a=ice-ufrag:{t}")),
            token().prop_map(|t| format!("a=ice-pwd:{t}")),
            Just("a=ice-options:trickle ice2".to_owned()),
            (generic_name(), free_text()).prop_map(|(n, v)| format!("a={n}:{v}")),
            generic_name().prop_map(|n| format!("a={n}")),
        ]
    }

    fn other() -> impl Strategy<Value = String> {
        ("[bdefghijklnpqrstuwxyz]", free_text()).prop_map(|(k, v)| format!("{k}={v}"))
    }

    fn line() -> impl Strategy<Value = String> {
        prop_oneof![1 => connection(), 4 => attribute(), 2 => other()]
    }

    fn media() -> impl Strategy<Value = Vec<String>> {
        (
            prop::sample::select(vec!["audio", "video", "application", "text"]),
            any::<u16>(),
            proptest::option::of(1u16..=4),
            prop::sample::select(vec!["RTP/AVP", "RTP/SAVPF", "UDP/TLS/RTP/SAVPF", "udp"]),
            proptest::collection::vec(
                prop_oneof![(0u8..=127).prop_map(|p| p.to_string()), token()],
                1..6,
            ),
            sep(),
            proptest::collection::vec(line(), 0..10),
        )
            .prop_map(|(kind, port, count, proto, formats, s, lines)| {
                let port = match count {
                    Some(n) => format!("{port}/{n}"),
                    None => port.to_string(),
                };
                let m = format!("m={kind}{s}{port} {proto} {}", formats.join(s));
                std::iter::once(m).chain(lines).collect()
            })
    }

    /// A whole description, with its lines ended by CRLF or LF at random,
    /// and perhaps trailing spaces and blank lines.
    pub(super) fn sdp() -> impl Strategy<Value = String> {
        (
            token(),
            any::<u64>(),
            any::<u64>(),
            address(),
            proptest::collection::vec(line(), 0..10),
            proptest::collection::vec(media(), 0..4),
            proptest::collection::vec(
                prop_oneof![Just("\r\n"), Just("\n"), Just(" \r\n"), Just("\t\n")],
                64,
            ),
            prop_oneof![Just(""), Just("\r\n"), Just("\n\n")],
        )
            .prop_map(|(user, id, version, addr, session, media, endings, tail)| {
                let lines = [
                    "v=0".to_owned(),
                    format!("o={user} {id} {version} IN {addr}"),
                ]
                .into_iter()
                .chain(session)
                .chain(media.into_iter().flatten());
                let mut text = String::new();
                for (i, l) in lines.enumerate() {
                    text.push_str(&l);
                    text.push_str(endings[i % endings.len()]);
                }
                text.push_str(tail);
                text
            })
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn generated_sdp_round_trips(text in gen::sdp()) {
        let first = parse(&text);
        prop_assert!(first.is_ok(), "{:?} for\n{}", first, text);
        let first = first.unwrap();
        let written = first.to_string();
        prop_assert_eq!(parse(&written), Ok(first.clone()));
        prop_assert_eq!(parse(&written).unwrap().to_string(), written);
        fuzz_sdp(text.as_bytes());
    }

    #[test]
    fn parser_never_panics_on_arbitrary_text(text in "(?s).{0,300}") {
        fuzz_sdp(text.as_bytes());
    }

    #[test]
    fn parser_never_panics_on_mutated_sdp(
        text in gen::sdp(),
        at in any::<prop::sample::Index>(),
        cut in 0usize..8,
        insert in "(?s).{0,4}",
    ) {
        let mut bytes = text.into_bytes();
        let at = at.index(bytes.len() + 1);
        let end = (at + cut).min(bytes.len());
        bytes.splice(at..end, insert.bytes());
        fuzz_sdp(&bytes);
    }
}
