//! Kordon behind a real Kamailio: Debian's `kamailio` (whose package ships the
//! `rtpengine` module) runs tests/ng/kamailio.cfg, a stateful proxy that calls
//! `rtpengine_offer()`, `rtpengine_answer()` and `rtpengine_delete()` on
//! Kordon's ng socket, and SIPp (Debian's `sip-tester`) places calls through
//! it with RTP.
//!
//! Who is where: Kamailio and Kordon on 127.0.0.1, the SIPp caller (UAC) on
//! 127.0.0.2, the SIPp callee (UAS) on 127.0.0.3. The UAC plays a pcap of
//! [`PACKETS`] RTP packets to the address in its 200 OK, the UAS echoes every
//! RTP packet back to where it came from (`-rtp_echo`). The scenarios check
//! that each side's SDP names Kordon (tests/ng/uac.xml, tests/ng/uas.xml);
//! Kordon's counters then show every packet of both directions relayed: the
//! echo proves the UAS got the caller's packets from Kordon's address (it
//! answers the source, and Kordon counts only what its latched peer sends).
//!
//! SIPp plays pcaps through a raw socket: without CAP_NET_RAW (not root) the
//! test says so and skips; everything else missing is a failure.

mod common;
mod ng;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{free_udp_port, start_ng, temp_dir, Config};
use ng::{command, int_at, result, udp_listening, Proc};

/// Calls placed.
const CALLS: u64 = 5;
/// RTP packets in the pcap (20 ms apart: 0.5 s of audio).
const PACKETS: u64 = 25;
/// RTP payload bytes per packet (20 ms of G.711).
const PAYLOAD: usize = 160;
/// How long the UAC stays in the call after starting the pcap: its length and
/// a margin for the last echoes to come back through Kordon.
const PAUSE_MS: u64 = 1_500;

const UAC_IP: &str = "127.0.0.2";
const UAS_IP: &str = "127.0.0.3";

/// A pcap (Ethernet, IPv4, UDP) of `n` RTP packets of PCMA, 20 ms apart. SIPp
/// replaces the addresses and ports with the call's.
fn write_pcap(path: &Path, n: u64) {
    let mut out = Vec::new();
    // Global header: magic, version 2.4, GMT offset, accuracy, snaplen, Ethernet.
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65_535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for i in 0..n {
        let mut rtp = vec![0x80, 8];
        rtp.extend_from_slice(&(1000 + i as u16).to_be_bytes());
        rtp.extend_from_slice(&(160 * i as u32).to_be_bytes());
        rtp.extend_from_slice(&0x4b4f_5244u32.to_be_bytes());
        rtp.extend(std::iter::repeat_n(0xd5, PAYLOAD));
        let udp_len = 8 + rtp.len() as u16;
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&(20 + udp_len).to_be_bytes());
        ip.extend_from_slice(&(i as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 0, 64, 17, 0, 0, 127, 0, 0, 2, 127, 0, 0, 3]);
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&40_000u16.to_be_bytes());
        frame.extend_from_slice(&50_000u16.to_be_bytes());
        frame.extend_from_slice(&udp_len.to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&rtp);
        let usecs = i * 20_000;
        out.extend_from_slice(&((usecs / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((usecs % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    std::fs::write(path, out).expect("writing the pcap");
}

/// Whether this process may open raw sockets (SIPp's pcap play needs them).
fn raw_sockets_allowed() -> bool {
    socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::UDP),
    )
    .is_ok()
}

/// A free even port on `ip` whose port + 2 is free too (SIPp binds audio at
/// `-mp` and video at `-mp` + 2).
fn free_media_base(ip: &str) -> u16 {
    for _ in 0..100 {
        let a = UdpSocket::bind((ip, 0)).expect("binding a probe socket");
        let p = a.local_addr().expect("local_addr").port();
        if p.is_multiple_of(2) && p < 65_000 && UdpSocket::bind((ip, p + 2)).is_ok() {
            return p;
        }
    }
    panic!("no free media ports on {ip}");
}

/// SIPp's error files in `dir`, for failure messages.
fn sipp_errors(dir: &Path) -> String {
    let mut s = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.ends_with("_errors.log") {
            s.push_str(&format!("---- {name} ----\n"));
            s.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    s
}

#[test]
fn kamailio_calls_through_kordon_carry_rtp_both_ways() {
    for (program, package) in [("kamailio", "kamailio"), ("sipp", "sip-tester")] {
        assert!(
            ng::have(program),
            "{program} is not installed: scripts/test.sh installs Debian's {package}"
        );
    }
    if !raw_sockets_allowed() {
        eprintln!(
            "SKIPPED: SIPp plays RTP from a pcap through a raw socket, which needs \
             CAP_NET_RAW (root); this process has not got it"
        );
        return;
    }
    ng::stop_packaged_service("kamailio.service");

    let (k, kordon_ng) = start_ng(Config::new());
    let scratch = ng::Scratch(temp_dir("kamailio"));
    let dir = scratch.0.clone();
    let sip_port = free_udp_port();
    let uas_port = free_udp_port();
    let uac_port = free_udp_port();
    let uas_media = free_media_base(UAS_IP);
    let uac_media = free_media_base(UAC_IP);
    let ng_port = kordon_ng.to.port();

    let cfg = include_str!("ng/kamailio.cfg")
        .replace("@SIP_PORT@", &sip_port.to_string())
        .replace("@NG_PORT@", &ng_port.to_string())
        .replace("@UAS_PORT@", &uas_port.to_string());
    std::fs::write(dir.join("kamailio.cfg"), cfg).expect("writing kamailio.cfg");
    let uac = include_str!("ng/uac.xml").replace("@PAUSE_MS@", &PAUSE_MS.to_string());
    std::fs::write(dir.join("uac.xml"), uac).expect("writing uac.xml");
    std::fs::write(dir.join("uas.xml"), include_str!("ng/uas.xml")).expect("writing uas.xml");
    write_pcap(&dir.join("rtp.pcap"), PACKETS);
    let d = dir.to_str().expect("a UTF-8 temp dir");

    // Kamailio in the foreground (-DD: no daemon, workers forked), logging to
    // stderr; ready once it listens and its rtpengine module found Kordon.
    let mut cmd = Command::new("kamailio");
    cmd.args([
        "-f",
        "kamailio.cfg",
        "-DD",
        "-E",
        "-m",
        "32",
        "-M",
        "4",
        "-Y",
        d,
        "-w",
        d,
    ]);
    let mut kamailio = Proc::start("kamailio", cmd, &dir);
    let sip: SocketAddr = ([127, 0, 0, 1], sip_port).into();
    kamailio.wait_ready(
        "listening and talking to Kordon",
        Duration::from_secs(10),
        || {
            udp_listening(sip) && {
                let log = std::fs::read_to_string(dir.join("kamailio.log")).unwrap_or_default();
                log.contains("support for it enabled")
            }
        },
    );

    let mut cmd = Command::new("sipp");
    cmd.args(["-sf", "uas.xml", "-i", UAS_IP, "-p", &uas_port.to_string()])
        .args(["-mi", UAS_IP, "-mp", &uas_media.to_string(), "-rtp_echo"])
        .args(["-m", &CALLS.to_string(), "-nostdin", "-trace_err"])
        .args(["-timeout", "25s", "-timeout_error"]);
    let mut uas = Proc::start("sipp-uas", cmd, &dir);
    let uas_sip: SocketAddr = (UAS_IP.parse::<std::net::IpAddr>().expect("ip"), uas_port).into();
    uas.wait_ready("listening", Duration::from_secs(10), || {
        udp_listening(uas_sip)
    });

    let mut cmd = Command::new("sipp");
    cmd.arg(sip.to_string())
        .args(["-sf", "uac.xml", "-i", UAC_IP, "-p", &uac_port.to_string()])
        .args(["-mi", UAC_IP, "-mp", &uac_media.to_string()])
        .args([
            "-m",
            &CALLS.to_string(),
            "-r",
            &CALLS.to_string(),
            "-l",
            &CALLS.to_string(),
        ])
        .args([
            "-nostdin",
            "-trace_err",
            "-timeout",
            "20s",
            "-timeout_error",
        ]);
    let mut uac = Proc::start("sipp-uac", cmd, &dir);
    let status = uac.wait(Duration::from_secs(25));
    assert!(
        status.success(),
        "the SIPp caller failed ({status}): not every call succeeded\n{}\n---- kamailio ----\n{}\n{}",
        uac.output(),
        kamailio.output(),
        sipp_errors(&dir)
    );
    let status = uas.wait(Duration::from_secs(10));
    assert!(
        status.success(),
        "the SIPp callee failed ({status})\n{}\n{}",
        uas.output(),
        sipp_errors(&dir)
    );

    // Kamailio offered, answered and deleted every call.
    let s = kordon_ng.request(&command("statistics"));
    assert_eq!(result(&s), "ok", "{s:?}");
    let total = |k: &str| int_at(&s, &["statistics", "totalstatistics", k]) as u64;
    assert_eq!(
        (total("offers"), total("answers"), total("deletes")),
        (CALLS, CALLS, CALLS),
        "offers, answers, deletes: {s:?}"
    );
    let l = kordon_ng.request(&command("list"));
    assert_eq!(
        ng::at(&l, &["calls"]).as_list().map(<[_]>::len),
        Some(0),
        "{l:?}"
    );

    // Every packet of both directions went through Kordon, none dropped.
    let t = k.total();
    let expected = 2 * CALLS * PACKETS;
    let size = (12 + PAYLOAD) as u64;
    assert_eq!(t.sessions, 0, "every media session deleted: {t:#?}");
    assert!(
        t.dropped.iter().all(|d| d.count == 0),
        "nothing dropped: {t:#?}"
    );
    assert_eq!(
        (t.rx_packets, t.tx_packets),
        (expected, expected),
        "{CALLS} calls x {PACKETS} packets, caller to callee and echoed back: {t:#?}"
    );
    assert_eq!((t.rx_bytes, t.tx_bytes), (expected * size, expected * size));
    assert_eq!(total("packetsrelayed"), expected);
}
