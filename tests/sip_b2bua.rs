//! The B2BUA against real SIP peers: SIPp (Debian's `sip-tester`) callers and
//! callees on their own loopback addresses, Kordon between them.
//!
//! Who is where: Kordon's SIP and media on 127.0.0.1; the caller (trunk
//! `pbx`) on 127.0.0.2; the callee trunk `pstn` on 127.0.0.3 and a second
//! callee trunk `backup` on 127.0.0.4. Distinct addresses let a test prove
//! topology hiding: nothing the callee receives may name 127.0.0.2 or carry
//! the caller's Call-ID or tags, and the other way round.
//!
//! Scenarios live in tests/sip/scenarios (each documents its keys); the SIPp
//! driver is tests/sip/mod.rs.

mod common;
mod sip;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_udp_port, kordon_bin, Config, Kordon};
use sip::{Sipp, Transport};

const KORDON_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const UAC_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const UAS_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const BACKUP_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);
const CALLEE: &str = "74951234567";

/// A Kordon with SIP and the addresses of its peers.
struct Lab {
    k: Kordon,
    sip: SocketAddr,
    uas: SocketAddr,
    backup: SocketAddr,
    dir: PathBuf,
}

/// What a lab varies.
#[derive(Default)]
struct Setup {
    /// TOML lines added to `[sip]` (before any sub-table).
    sip: Vec<String>,
    /// TOML lines added to `[sip.timers]`.
    timers: Vec<String>,
    /// Extra lines for the `pstn` trunk table.
    pstn: Vec<String>,
    /// Extra lines for the `pbx` trunk table.
    pbx: Vec<String>,
    /// Extra tables after the trunks (users, cos).
    tables: String,
    /// The routes (`[[sip.routes]]` tables); default: everything to pstn.
    routes: Option<String>,
    /// Transport of the pstn trunk.
    pstn_transport: Option<&'static str>,
    /// TLS port of the interface (0 = none).
    tls_port: u16,
}

fn lab(setup: Setup) -> Lab {
    let sip_port = free_udp_port();
    let uas = SocketAddr::new(IpAddr::V4(UAS_IP), free_udp_port());
    let backup = SocketAddr::new(IpAddr::V4(BACKUP_IP), free_udp_port());
    let mut t = String::new();
    t.push_str("[sip]\n");
    for l in &setup.sip {
        t.push_str(l);
        t.push('\n');
    }
    t.push_str(&format!(
        "[[sip.interfaces]]\nname = \"default\"\nlisten = \"127.0.0.1:{sip_port}\"\ntls_port = {}\nmedia_interface = \"edge\"\n",
        setup.tls_port
    ));
    t.push_str("[sip.timers]\n");
    for l in &setup.timers {
        t.push_str(l);
        t.push('\n');
    }
    t.push_str(&format!(
        "[[sip.trunks]]\nname = \"pstn\"\naddress = \"{uas}\"\nacl = [\"{UAS_IP}\"]\ntransport = \"{}\"\nmedia_interface = \"core\"\n",
        setup.pstn_transport.unwrap_or("udp")
    ));
    for l in &setup.pstn {
        t.push_str(l);
        t.push('\n');
    }
    t.push_str(&format!(
        "[[sip.trunks]]\nname = \"backup\"\naddress = \"{backup}\"\nacl = [\"{BACKUP_IP}\"]\nmedia_interface = \"core\"\n"
    ));
    t.push_str(&format!(
        "[[sip.trunks]]\nname = \"pbx\"\naddress = \"{UAC_IP}:5060\"\nacl = [\"{UAC_IP}\"]\n"
    ));
    for l in &setup.pbx {
        t.push_str(l);
        t.push('\n');
    }
    t.push_str(
        &setup
            .routes
            .clone()
            .unwrap_or_else(|| "[[sip.routes]]\nprefix = \"\"\ntrunks = [\"pstn\"]\n".into()),
    );
    t.push_str(&setup.tables);
    let k = Kordon::start(Config::new().run_with(&t));
    let dir = k.dir().join("sipp");
    std::fs::create_dir_all(&dir).expect("sipp dir");
    Lab {
        sip: SocketAddr::new(IpAddr::V4(KORDON_IP), sip_port),
        uas,
        backup,
        dir,
        k,
    }
}

impl Lab {
    fn config_path(&self) -> PathBuf {
        self.k.dir().join("kordon.toml")
    }

    /// A caller on 127.0.0.2 towards Kordon.
    fn uac(&self, scenario: &str) -> Sipp {
        Sipp::new(scenario, &self.dir)
            .remote(self.sip)
            .local(IpAddr::V4(UAC_IP), free_udp_port())
            .media(IpAddr::V4(UAC_IP), free_udp_port())
            .key("callee", CALLEE)
            .key("caller", "74957654321")
    }

    /// The callee trunk on 127.0.0.3, listening.
    fn uas(&self, scenario: &str) -> sip::Running {
        self.callee(scenario, self.uas)
    }

    fn callee(&self, scenario: &str, at: SocketAddr) -> sip::Running {
        let mut r = Sipp::new(scenario, &self.dir)
            .name(&format!("{}-{}", scenario, at.port()))
            .local(at.ip(), at.port())
            .media(at.ip(), free_udp_port())
            .unlimited()
            .timeout(Duration::from_secs(120))
            .spawn()
            .expect("starting the callee");
        r.wait_listening(Duration::from_secs(10))
            .expect("callee listening");
        r
    }

    /// Every CDR row (CSV with a header) as maps.
    fn cdrs(&self) -> Vec<std::collections::HashMap<String, String>> {
        let out = Command::new(kordon_bin())
            .arg("--config")
            .arg(self.config_path())
            .args(["cdr", "export", "--csv"])
            .output()
            .expect("running kordon cdr export");
        assert!(
            out.status.success(),
            "cdr export failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mut lines = text.lines();
        let header: Vec<String> = lines
            .next()
            .unwrap_or("")
            .split(',')
            .map(str::to_string)
            .collect();
        lines
            .filter(|l| !l.is_empty())
            .map(|l| header.iter().cloned().zip(split_csv(l)).collect())
            .collect()
    }

    /// Waits until `n` CDR rows exist (they are written off the call path).
    fn wait_cdrs(&self, n: usize) -> Vec<std::collections::HashMap<String, String>> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let rows = self.cdrs();
            if rows.len() >= n || Instant::now() > deadline {
                return rows;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// One CSV line (RFC 4180 quoting).
fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Values of `header` in every message of a -trace_msg log.
fn header_values(log: &str, header: &str) -> Vec<String> {
    let prefix = format!("{}:", header.to_ascii_lowercase());
    log.lines()
        .filter(|l| l.to_ascii_lowercase().starts_with(&prefix))
        .map(|l| l[prefix.len()..].trim().to_string())
        .collect()
}

fn tag_of(v: &str) -> Option<String> {
    v.split(';')
        .find_map(|p| p.trim().strip_prefix("tag=").map(str::to_string))
}

#[test]
fn hundred_calls_with_rtp_hide_each_side_and_write_cdrs() {
    if let Err(why) = sip::can_play_pcap() {
        eprintln!("skipped: {why}");
        return;
    }
    let lab = lab(Setup::default());
    let uas = lab.uas("uas");
    let out = lab
        .uac("uac_pcap")
        .calls(100)
        .rate(25.0)
        // The lab's media interfaces have 16 port pairs each.
        .limit(14)
        .pause_ms(1_000)
        .timeout(Duration::from_secs(90))
        .run()
        .expect("running the caller");
    assert!(out.success(), "calls failed:\n{}", out.report());
    out.assert_calls("caller", 100);
    drop(uas);
    // Topology hiding: what the callee received names only Kordon.
    let uas_log = read(&lab.dir.join(format!("uas-{}_messages.log", lab.uas.port())));
    let uac_log = read(&out.files.messages.clone().expect("caller traced"));
    assert!(uas_log.contains("INVITE"), "the callee log is empty");
    assert!(
        !uas_log.contains(&UAC_IP.to_string()),
        "the caller's address reached the callee"
    );
    assert!(
        !uac_log.contains(&UAS_IP.to_string()),
        "the callee's address reached the caller"
    );
    let uac_ids: Vec<String> = header_values(&uac_log, "Call-ID");
    assert!(!uac_ids.is_empty());
    for id in uac_ids.iter().take(200) {
        assert!(
            !uas_log.contains(id.as_str()),
            "caller Call-ID {id} reached the callee"
        );
    }
    for v in header_values(&uac_log, "From").iter().take(200) {
        if let Some(tag) = tag_of(v) {
            assert!(
                !uas_log.contains(&tag),
                "caller tag {tag} reached the callee"
            );
        }
    }
    for v in header_values(&uas_log, "To").iter().take(200) {
        if let Some(tag) = tag_of(v) {
            assert!(
                !uac_log.contains(&tag),
                "callee tag {tag} reached the caller"
            );
        }
    }
    for id in header_values(&uas_log, "Call-ID").iter().take(200) {
        assert!(
            !uac_log.contains(id.as_str()),
            "callee Call-ID {id} reached the caller"
        );
    }
    // One CDR per call with media counted both ways.
    let rows = lab.wait_cdrs(100);
    assert_eq!(rows.len(), 100, "CDR rows");
    for r in &rows {
        assert_eq!(r["disposition"], "answered", "{r:?}");
        assert_eq!(r["ingress_trunk"], "pbx");
        assert_eq!(r["egress_trunk"], "pstn");
        assert_eq!(r["b_e164"], format!("+{CALLEE}"));
        let a: u64 = r["a_packets_in"].parse().unwrap_or(0);
        let b: u64 = r["b_packets_in"].parse().unwrap_or(0);
        assert!(a > 0 && b > 0, "media counters: {r:?}");
    }
}

/// Places one call with uac_expect and checks the final status.
fn expect_status(lab: &Lab, status: u16) -> sip::Outcome {
    let out = lab
        .uac("uac_expect")
        .key("expect", status)
        .timeout(Duration::from_secs(30))
        .run()
        .expect("running the caller");
    assert!(
        out.success(),
        "expected {status}:\n{}\nkordon log:\n{}",
        out.report(),
        lab.k.log()
    );
    out
}

#[test]
fn busy_callee_is_relayed_and_recorded() {
    let lab = lab(Setup::default());
    let _uas = lab.uas("uas_busy");
    expect_status(&lab, 486);
    let rows = lab.wait_cdrs(1);
    assert_eq!(rows[0]["disposition"], "busy");
    assert_eq!(rows[0]["sip_status"], "486");
    // The call shows on the metrics endpoint beside the data plane's counters.
    let metrics = http_get(lab.k.metrics, "/metrics");
    assert!(metrics.contains("kordon_sip_calls_total 1"), "{metrics}");
    assert!(
        metrics.contains("kordon_sip_trunk_up{trunk=\"pstn\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("kordon_cdr_written_total 1"), "{metrics}");
    assert!(metrics.contains("kordon_dataplane_"), "{metrics}");
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn no_answer_timer_cancels_the_callee_and_answers_480() {
    let lab = lab(Setup {
        timers: vec!["no_answer_s = 2".into()],
        ..Setup::default()
    });
    let uas = lab.uas("uas_noanswer");
    let started = Instant::now();
    expect_status(&lab, 480);
    assert!(started.elapsed() >= Duration::from_secs(2));
    let rows = lab.wait_cdrs(1);
    assert_eq!(rows[0]["disposition"], "no_answer");
    // The callee got its CANCEL and finished its call.
    let out = uas.stop(Duration::from_secs(5)).expect("callee");
    let log = read(&out.files.messages.clone().expect("traced"));
    assert!(log.contains("CANCEL sip:"), "no CANCEL reached the callee");
}

#[test]
fn failover_to_the_next_trunk_after_503() {
    let lab = lab(Setup {
        routes: Some("[[sip.routes]]\nprefix = \"7\"\ntrunks = [\"pstn\", \"backup\"]\n".into()),
        ..Setup::default()
    });
    let _first = lab.uas("uas_503");
    let _second = lab.callee("uas", lab.backup);
    expect_status(&lab, 200);
    let rows = lab.wait_cdrs(1);
    assert_eq!(rows[0]["egress_trunk"], "backup", "{:?}", rows[0]);
    assert_eq!(rows[0]["attempts"], "pstn:503;backup:200");
}

#[test]
fn failover_when_the_first_trunk_is_silent() {
    let lab = lab(Setup {
        timers: vec!["attempt_timeout_ms = 1000".into()],
        routes: Some("[[sip.routes]]\nprefix = \"\"\ntrunks = [\"pstn\", \"backup\"]\n".into()),
        ..Setup::default()
    });
    // Nothing listens on the pstn address.
    let _second = lab.callee("uas", lab.backup);
    expect_status(&lab, 200);
    let rows = lab.wait_cdrs(1);
    assert_eq!(rows[0]["attempts"], "pstn:408;backup:200");
}

#[test]
fn a_trunk_that_stops_answering_options_is_skipped() {
    let lab = lab(Setup {
        pstn: vec!["options_interval_s = 1".into()],
        timers: vec!["t1_ms = 100".into()],
        routes: Some("[[sip.routes]]\nprefix = \"\"\ntrunks = [\"pstn\", \"backup\"]\n".into()),
        ..Setup::default()
    });
    let _second = lab.callee("uas", lab.backup);
    // pstn never answers OPTIONS: within a probe or two it is down.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lab.k.log().contains("trunk stopped answering OPTIONS") {
        assert!(
            Instant::now() < deadline,
            "pstn never marked down:\n{}",
            lab.k.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = Instant::now();
    expect_status(&lab, 200);
    // Skipped, not tried: no attempt and no wait for a timeout.
    assert!(started.elapsed() < Duration::from_secs(1));
    let rows = lab.wait_cdrs(1);
    assert_eq!(rows[0]["attempts"], "backup:200");
    // It answers again: marked up.
    let _probe = lab.uas("uas_options");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lab.k.log().contains("trunk answers OPTIONS again") {
        assert!(
            Instant::now() < deadline,
            "pstn never marked up:\n{}",
            lab.k.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn trunk_admission_limit_answers_503() {
    let lab = lab(Setup {
        pstn: vec!["max_calls = 1".into()],
        ..Setup::default()
    });
    let _uas = lab.uas("uas_noanswer");
    // The first call rings (and holds the only slot) ...
    let ringing = lab
        .uac("uac_cancel")
        .name("ringing")
        .pause_ms(3_000)
        .spawn()
        .expect("first caller");
    std::thread::sleep(Duration::from_millis(700));
    // ... so the second is refused.
    expect_status(&lab, 503);
    let first = ringing.wait().expect("first caller ends");
    assert!(first.success(), "{}", first.report());
    let rows = lab.wait_cdrs(2);
    assert!(
        rows.iter()
            .any(|r| r["attempts"] == "pstn:503" && r["reason"].contains("capacity")),
        "{rows:?}"
    );
}

#[test]
fn unknown_source_is_rejected_when_configured() {
    let lab = lab(Setup {
        sip: vec!["unknown_sources = \"reject\"".into()],
        ..Setup::default()
    });
    let out = Sipp::new("uac_expect", &lab.dir)
        .remote(lab.sip)
        .local(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)), free_udp_port())
        .key("callee", CALLEE)
        .key("expect", 403)
        .run()
        .expect("caller");
    assert!(out.success(), "{}", out.report());
    let rows = lab.wait_cdrs(1);
    assert_eq!(rows[0]["disposition"], "rejected");
}

#[test]
fn unknown_number_is_404_and_unregistered_user_480() {
    let lab = lab(Setup {
        routes: Some("[[sip.routes]]\nprefix = \"7495\"\ntrunks = [\"pstn\"]\n".into()),
        tables: "[[sip.users]]\nusername = \"bob\"\npassword = \"bob-pw\"\n".into(),
        ..Setup::default()
    });
    // No route for +1...
    let out = lab
        .uac("uac_expect")
        .key("callee", "12025550100")
        .key("expect", 404)
        .run()
        .expect("caller");
    assert!(out.success(), "{}", out.report());
    // A known user who has not registered.
    let out = lab
        .uac("uac_expect")
        .name("bob")
        .key("callee", "bob")
        .key("expect", 480)
        .run()
        .expect("caller");
    assert!(out.success(), "{}", out.report());
    // Neither a number nor a user.
    let out = lab
        .uac("uac_expect")
        .name("nobody")
        .key("callee", "nobody")
        .key("expect", 404)
        .run()
        .expect("caller");
    assert!(out.success(), "{}", out.report());
}

#[test]
fn class_of_service_forbids_a_destination_with_a_cdr_reason() {
    let lab = lab(Setup {
        // SIPp answers only the first challenge and knows only MD5.
        tables: "[sip.registrar]\nalgorithms = [\"MD5\", \"SHA-256\"]\n\
                 [[sip.users]]\nusername = \"alice\"\npassword = \"alice-pw\"\ncos = \"local\"\n\
                 [[sip.cos]]\nname = \"local\"\nallow_prefixes = [\"7495\"]\n"
            .into(),
        ..Setup::default()
    });
    // alice calls from an address that is no trunk: challenged, then checked.
    let out = Sipp::new("uac_auth_expect", &lab.dir)
        .remote(lab.sip)
        .local(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5)), free_udp_port())
        .key("caller", "alice")
        .key("callee", "88121234567")
        .key("expect", 403)
        .auth("alice", "alice-pw")
        .run()
        .expect("caller");
    assert!(out.success(), "{}\n{}", out.report(), lab.k.log());
    let rows = lab.wait_cdrs(1);
    assert_eq!(rows[0]["disposition"], "forbidden");
    assert_eq!(rows[0]["user"], "alice");
    assert!(
        rows[0]["reason"].contains("class of service"),
        "{:?}",
        rows[0]
    );
}

#[test]
fn registered_user_receives_a_call_from_a_trunk() {
    let lab = lab(Setup {
        // SIPp answers only the first challenge and knows only MD5.
        tables: "[sip.registrar]\nalgorithms = [\"MD5\", \"SHA-256\"]\n\
                 [[sip.users]]\nusername = \"carol\"\npassword = \"carol-pw\"\n"
            .into(),
        ..Setup::default()
    });
    let ua = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6)), free_udp_port());
    let reg = Sipp::new("uac_register", &lab.dir)
        .remote(lab.sip)
        .local(ua.ip(), ua.port())
        .key("user", "carol")
        .key("domain", lab.sip)
        .auth("carol", "carol-pw")
        .run()
        .expect("register");
    assert!(reg.success(), "{}\n{}", reg.report(), lab.k.log());
    let callee = Sipp::new("uas_registered", &lab.dir)
        .local(ua.ip(), ua.port())
        .key("user", "carol")
        .spawn();
    let mut callee = callee.expect("registered UA");
    callee
        .wait_listening(Duration::from_secs(5))
        .expect("listening");
    let out = lab
        .uac("uac_expect")
        .key("callee", "carol")
        .key("expect", 200)
        .run()
        .expect("caller");
    assert!(out.success(), "{}\n{}", out.report(), lab.k.log());
    let done = callee.wait().expect("callee ends");
    assert!(done.success(), "{}", done.report());
}

#[test]
fn cancel_before_answer_reaches_the_callee() {
    let lab = lab(Setup::default());
    let uas = lab.uas("uas_noanswer");
    let out = lab.uac("uac_cancel").pause_ms(500).run().expect("caller");
    assert!(out.success(), "{}\n{}", out.report(), lab.k.log());
    let rows = lab.wait_cdrs(1);
    assert_eq!(rows[0]["disposition"], "cancelled");
    let done = uas.stop(Duration::from_secs(5)).expect("callee");
    let log = read(&done.files.messages.clone().expect("traced"));
    assert!(
        log.contains("CANCEL sip:"),
        "the CANCEL did not reach the callee"
    );
}

#[test]
fn hold_and_resume_reinvites_are_relayed() {
    let lab = lab(Setup::default());
    let uas = lab.uas("uas");
    let out = lab.uac("uac_hold").pause_ms(300).run().expect("caller");
    assert!(out.success(), "{}\n{}", out.report(), lab.k.log());
    drop(uas);
    let log = read(&lab.dir.join(format!("uas-{}_messages.log", lab.uas.port())));
    assert!(log.contains("a=sendonly"), "hold did not reach the callee");
}

#[test]
fn reliable_early_media_with_prack_on_both_legs() {
    let lab = lab(Setup::default());
    let _uas = lab.uas("uas_prack");
    let out = lab.uac("uac_prack").run().expect("caller");
    assert!(out.success(), "{}\n{}", out.report(), lab.k.log());
}

#[test]
fn session_timer_expiry_ends_the_call() {
    let lab = lab(Setup {
        timers: vec!["min_se_s = 6".into()],
        ..Setup::default()
    });
    let _uas = lab.uas("uas");
    let started = Instant::now();
    let out = lab
        .uac("uac_timer")
        .key("session_expires", 6)
        .key("min_se", 6)
        .timeout(Duration::from_secs(30))
        .run()
        .expect("caller");
    assert!(out.success(), "{}\n{}", out.report(), lab.k.log());
    // BYE before the interval: 6 - min(32, 6/3) = 4 s after the answer.
    assert!(started.elapsed() >= Duration::from_secs(3));
    let rows = lab.wait_cdrs(1);
    assert!(rows[0]["reason"].contains("session timer"), "{:?}", rows[0]);
}

#[test]
fn the_same_call_over_tcp() {
    let lab = lab(Setup {
        pstn_transport: Some("tcp"),
        ..Setup::default()
    });
    let mut uas = Sipp::new("uas", &lab.dir)
        .name("uas-tcp")
        .local(lab.uas.ip(), lab.uas.port())
        .media(lab.uas.ip(), free_udp_port())
        .transport(Transport::Tcp)
        .unlimited()
        .timeout(Duration::from_secs(60))
        .spawn()
        .expect("callee");
    uas.wait_listening(Duration::from_secs(5))
        .expect("listening");
    let out = lab
        .uac("uac_expect")
        .transport(Transport::Tcp)
        .key("expect", 200)
        .run()
        .expect("caller");
    assert!(out.success(), "{}\n{}", out.report(), lab.k.log());
    let rows = lab.wait_cdrs(1);
    assert_eq!(rows[0]["disposition"], "answered");
}

#[test]
fn the_same_call_over_tls_between_two_kordons() {
    // SIPp from Debian has no TLS: a second Kordon is the TLS trunk. The
    // near one sends the call over TLS (its client side), the far one
    // receives it (its server side, self-signed certificate) and hands it to
    // its SIPp callee.
    let far_tls = free_udp_port();
    let far = lab(Setup {
        tls_port: far_tls,
        tables: "[[sip.trunks]]\nname = \"near\"\naddress = \"127.0.0.1:9\"\ntransport = \"tls\"\nacl = [\"127.0.0.1\"]\n"
            .into(),
        ..Setup::default()
    });
    let _uas = far.uas("uas");
    let near = lab(Setup {
        tls_port: free_udp_port(),
        routes: Some("[[sip.routes]]\nprefix = \"\"\ntrunks = [\"far\"]\n".into()),
        tables: format!(
            "[[sip.trunks]]\nname = \"far\"\naddress = \"127.0.0.1:{far_tls}\"\ntransport = \"tls\"\nacl = [\"127.0.0.1:{far_tls}\"]\n"
        ),
        ..Setup::default()
    });
    let out = near
        .uac("uac_expect")
        .key("expect", 200)
        .pause_ms(200)
        .run()
        .expect("caller");
    assert!(
        out.success(),
        "{}\nnear:\n{}\nfar:\n{}",
        out.report(),
        near.k.log(),
        far.k.log()
    );
    let far_rows = far.wait_cdrs(1);
    assert_eq!(far_rows[0]["ingress_trunk"], "near");
    assert_eq!(far_rows[0]["disposition"], "answered");
    let near_rows = near.wait_cdrs(1);
    assert_eq!(near_rows[0]["egress_trunk"], "far");
}

#[test]
fn bad_input_gets_precise_answers() {
    let lab = lab(Setup::default());
    let sock = UdpSocket::bind((UAC_IP, 0)).expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let local = sock.local_addr().expect("addr");
    // The final response to `text` (by its branch): provisional responses
    // and retransmissions of earlier answers are skipped.
    let send = |text: String| -> String {
        sock.send_to(text.as_bytes(), lab.sip).expect("send");
        let call_id = text
            .lines()
            .find_map(|l| l.split("branch=").nth(1))
            .unwrap_or("none")
            .to_string();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                let r = String::from_utf8_lossy(&buf[..n]).to_string();
                if !r.starts_with("SIP/2.0 1") && r.contains(call_id.as_str()) {
                    return r;
                }
            }
        }
        String::new()
    };
    let req = |method: &str, extra: &str, drop: &str| -> String {
        let base = format!(
            "{method} sip:{CALLEE}@{} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:a@{local}>;tag=t1\r\nTo: <sip:{CALLEE}@{}>\r\n\
             Call-ID: bad-{}@x\r\nCSeq: 1 {method}\r\nContact: <sip:a@{local}>\r\n{extra}Content-Length: 0\r\n\r\n",
            lab.sip,
            rand_token(),
            lab.sip,
            rand_token()
        );
        base.lines()
            .filter(|l| drop.is_empty() || !l.starts_with(drop))
            .map(|l| format!("{l}\r\n"))
            .collect()
    };
    let r = send(req("INVITE", "", "Call-ID"));
    assert!(r.starts_with("SIP/2.0 400"), "{r}");
    assert!(
        r.lines().next().unwrap_or("").contains("Call-ID"),
        "reason names the problem: {r}"
    );
    let r = send(req("INVITE", "", "").replace("Max-Forwards: 70", "Max-Forwards: 0"));
    assert!(r.starts_with("SIP/2.0 483"), "{r}");
    let r = send(req("FOO", "", ""));
    assert!(r.starts_with("SIP/2.0 501"), "{r}");
    let r = send(req("INVITE", "", "").replace("CSeq: 1 INVITE", "CSeq: x INVITE"));
    assert!(r.starts_with("SIP/2.0 400"), "{r}");
    // A loop: an INVITE that already went through Kordon.
    let looped = req("INVITE", "", "").replacen(
        "Via: ",
        &format!("Via: SIP/2.0/UDP {};branch=z9hG4bKloop\r\nVia: ", lab.sip),
        1,
    );
    let r = send(looped);
    assert!(r.starts_with("SIP/2.0 482"), "{r}");
    // Garbage: no answer, counted, and Kordon still serves.
    sock.send_to(b"\x00\x01garbage\r\n\r\n", lab.sip)
        .expect("send");
    let r = send(req("OPTIONS", "", ""));
    assert!(r.starts_with("SIP/2.0 200"), "{r}");
    assert!(!lab.k.log().contains("panicked"));
}

fn rand_token() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    format!(
        "{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[test]
fn sigterm_ends_calls_and_loses_no_cdr() {
    let mut lab = lab(Setup::default());
    let _uas = lab.uas("uas");
    // Five calls that would last a minute.
    let callers = lab
        .uac("uac_expect")
        .key("expect", 200)
        .calls(5)
        .rate(50.0)
        .pause_ms(60_000)
        .timeout(Duration::from_secs(60))
        .spawn()
        .expect("callers");
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.k.log().matches("event=Answered").count() < 5 {
        assert!(Instant::now() < deadline, "calls not up:\n{}", lab.k.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let code = lab.k.terminate();
    assert_eq!(code, Some(0), "exit:\n{}", lab.k.log());
    // Every caller got a BYE from Kordon: its calls ended, not timed out.
    let out = callers.stop(Duration::from_secs(10)).expect("callers");
    let log = read(&out.files.messages.clone().expect("traced"));
    assert!(log.matches("BYE sip:").count() >= 5, "callers got no BYE");
    let rows = lab.cdrs();
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert!(rows.iter().all(|r| r["disposition"] == "answered"));
}

#[test]
fn maximum_call_duration_ends_the_call() {
    let lab = lab(Setup {
        timers: vec!["max_duration_s = 2".into()],
        ..Setup::default()
    });
    let _uas = lab.uas("uas");
    let started = Instant::now();
    // uac_timer waits for the far side's BYE.
    let out = lab
        .uac("uac_timer")
        .timeout(Duration::from_secs(20))
        .run()
        .expect("caller");
    assert!(out.success(), "{}\n{}", out.report(), lab.k.log());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let rows = lab.wait_cdrs(1);
    assert_eq!(rows[0]["reason"], "maximum call duration");
}

#[test]
fn invite_flood_from_one_source_is_rate_limited() {
    let lab = lab(Setup {
        sip: vec![
            "invite_rate_per_source = 2.0".into(),
            "invite_burst = 2".into(),
        ],
        ..Setup::default()
    });
    let sock = UdpSocket::bind((UAC_IP, 0)).expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let local = sock.local_addr().expect("addr");
    for i in 0..10 {
        let text = format!(
            "INVITE sip:{CALLEE}@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKflood{i}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:a@{local}>;tag=f{i}\r\nTo: <sip:{CALLEE}@{sip}>\r\n\
             Call-ID: flood-{i}-{pid}@x\r\nCSeq: 1 INVITE\r\nContact: <sip:a@{local}>\r\nContent-Length: 0\r\n\r\n",
            sip = lab.sip,
            pid = std::process::id()
        );
        sock.send_to(text.as_bytes(), lab.sip).expect("send");
    }
    let mut limited = 0;
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let r = String::from_utf8_lossy(&buf[..n]);
            if r.starts_with("SIP/2.0 503 Service Unavailable - rate limit") {
                assert!(r.contains("Retry-After:"), "{r}");
                limited += 1;
            }
        }
    }
    assert!(limited >= 7, "only {limited} of 10 INVITEs were limited");
}

#[test]
fn exhausted_media_ports_answer_503_with_retry_after_and_recover() {
    let lab = lab(Setup::default());
    let _uas = lab.uas("uas");
    // The lab's media interfaces have 16 port pairs each: 20 calls held at
    // once cannot all get a session.
    let out = lab
        .uac("uac_expect")
        .key("expect", 200)
        .calls(20)
        .rate(200.0)
        .limit(20)
        .pause_ms(2_000)
        .timeout(Duration::from_secs(30))
        .run()
        .expect("callers");
    let stats = out.stats().expect("stats");
    assert!(
        stats.successful >= 1 && stats.failed >= 1,
        "some calls must fail for want of ports: {}",
        out.report()
    );
    let log = read(&out.files.messages.clone().expect("traced"));
    assert!(
        log.contains("SIP/2.0 503 Service Unavailable - media relay"),
        "no 503"
    );
    assert!(log.contains("Retry-After:"), "503 without Retry-After");
    let rows = lab.wait_cdrs(20);
    let refused: Vec<_> = rows.iter().filter(|r| r["sip_status"] == "503").collect();
    assert!(!refused.is_empty());
    assert!(
        refused.iter().all(|r| r["reason"].contains("media relay")),
        "{refused:?}"
    );
    assert!(lab.k.log().contains("MediaFailure"), "no event logged");
    // Once the calls ended, their ports are back: a new call goes through.
    let again = lab
        .uac("uac_expect")
        .name("again")
        .key("expect", 200)
        .run()
        .expect("caller");
    assert!(again.success(), "{}", again.report());
}

#[test]
fn late_offer_from_the_callee_is_answered_in_the_ack() {
    let lab = lab(Setup::default());
    let uas = lab.uas("uas_late_offer");
    let out = lab
        .uac("uac_late_offer")
        .pause_ms(200)
        .run()
        .expect("caller");
    assert!(out.success(), "{}\n{}", out.report(), lab.k.log());
    let done = uas.stop(Duration::from_secs(5)).expect("callee");
    let stats = done.stats().expect("stats");
    assert_eq!(stats.successful, 1, "{}", done.report());
    // The caller's offer-less INVITE reached the callee without SDP, the
    // callee's offer reached the caller rewritten to Kordon's media address,
    // and the caller's answer reached the callee in the ACK.
    let caller_log = read(&out.files.messages.clone().expect("traced"));
    assert!(
        !caller_log.contains(&format!("c=IN IP4 {UAS_IP}")),
        "callee's media address leaked"
    );
    let rows = lab.wait_cdrs(1);
    assert_eq!(rows[0]["disposition"], "answered");
}

/// Sends an INVITE with P-Asserted-Identity and Privacy from the pbx trunk
/// and returns what the callee (answering 486) received.
fn invite_with_identity(lab: &Lab) -> String {
    let uas = lab.uas("uas_busy");
    let sock = UdpSocket::bind((UAC_IP, 0)).expect("bind");
    let local = sock.local_addr().expect("addr");
    let text = format!(
        "INVITE sip:{CALLEE}@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKpai1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:0000@{local}>;tag=p1\r\nTo: <sip:{CALLEE}@{sip}>\r\n\
         Call-ID: pai-{pid}@x\r\nCSeq: 1 INVITE\r\nContact: <sip:a@{local}>\r\n\
         P-Asserted-Identity: <sip:84951112233@10.9.9.9>\r\nPrivacy: id\r\nContent-Length: 0\r\n\r\n",
        sip = lab.sip,
        pid = std::process::id()
    );
    sock.send_to(text.as_bytes(), lab.sip).expect("send");
    let deadline = Instant::now() + Duration::from_secs(5);
    let log = lab
        .dir
        .join(format!("uas_busy-{}_messages.log", lab.uas.port()));
    // Until the callee has answered (486), so the call ends at once.
    while !read(&log).contains("SIP/2.0 486") {
        assert!(Instant::now() < deadline, "the callee never answered");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(uas);
    read(&log)
}

#[test]
fn asserted_identity_is_taken_from_a_trusted_trunk_and_passed_or_stripped() {
    let lab1 = lab(Setup {
        pbx: vec!["trust_pai = true".into()],
        ..Setup::default()
    });
    let got = invite_with_identity(&lab1);
    assert!(
        got.contains("P-Asserted-Identity: <sip:+74951112233@127.0.0.1>"),
        "identity not asserted to the trunk:\n{got}"
    );
    assert!(got.contains("Privacy: id"), "Privacy not passed:\n{got}");
    assert!(
        !got.contains("10.9.9.9"),
        "the caller's host leaked:\n{got}"
    );
    let rows = lab1.wait_cdrs(1);
    assert_eq!(rows[0]["a_number"], "84951112233");
    assert_eq!(rows[0]["a_e164"], "+74951112233");
    // Towards a trunk outside the trust domain: no identity headers.
    let lab2 = lab(Setup {
        pbx: vec!["trust_pai = true".into()],
        pstn: vec!["privacy = \"strip\"".into()],
        ..Setup::default()
    });
    let got = invite_with_identity(&lab2);
    assert!(
        !got.contains("P-Asserted-Identity"),
        "identity not stripped:\n{got}"
    );
    // An untrusted trunk's PAI is neither believed nor passed.
    let lab3 = lab(Setup::default());
    let got = invite_with_identity(&lab3);
    assert!(
        !got.contains("P-Asserted-Identity"),
        "untrusted identity passed:\n{got}"
    );
    let rows = lab3.wait_cdrs(1);
    assert_eq!(rows[0]["a_number"], "0000");
}

#[test]
fn kordon_refreshes_the_callee_session_with_update() {
    let lab = lab(Setup {
        timers: vec!["min_se_s = 2".into()],
        ..Setup::default()
    });
    let uas = Sipp::new("uas_timer_refreshed", &lab.dir)
        .local(lab.uas.ip(), lab.uas.port())
        .media(lab.uas.ip(), free_udp_port())
        .key("session_expires", 4)
        .timeout(Duration::from_secs(30))
        .spawn();
    let mut uas = uas.expect("callee");
    uas.wait_listening(Duration::from_secs(5))
        .expect("listening");
    // The call lasts longer than half the interval (2 s): Kordon, the
    // refresher towards the callee, sends an UPDATE in between.
    let out = lab
        .uac("uac_expect")
        .key("expect", 200)
        .pause_ms(3_500)
        .run()
        .expect("caller");
    assert!(out.success(), "{}\n{}", out.report(), lab.k.log());
    let done = uas.wait().expect("callee ends");
    assert!(
        done.success(),
        "no refresh reached the callee:\n{}",
        done.report()
    );
    let rows = lab.wait_cdrs(1);
    assert_eq!(rows[0]["reason"], "caller hung up", "{:?}", rows[0]);
}
