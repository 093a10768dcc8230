//! Call verification end to end: two Kordons on loopback as operators O and
//! T, each the other's peer verification node (direct peering map), with
//! SIPp callers and callees, curl on the REST API and radclient on RADIUS.
//!
//! Who is who:
//! - O: operator 11, node 1, capacity 7495xxxxxxx (a SETUP file); its
//!   subscriber's PBX (SIPp) calls from 127.0.0.2; trunk `t` towards T is an
//!   interconnect (operator 22).
//! - T: operator 22, node 2, capacity 7812xxxxxxx; trunk `o` from O
//!   (operator 11, identified by O's SIP port), trunk `foreign` (operator
//!   33) from 127.0.0.4 where spoofing callers come from, trunk `pstn`
//!   towards its own callee (SIPp on 127.0.0.3).
//! - Each knows the other's ranges (config) and address (`verify.peers`).

mod common;
mod sip;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_tcp_port, free_udp_port, kordon_bin, temp_dir, Config, Kordon};
use sip::Sipp;

const PBX_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const CALLEE_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const FOREIGN_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);
/// O's subscriber.
const O_NUMBER: &str = "74957654321";
/// T's subscriber.
const T_NUMBER: &str = "78121234567";

/// One operator's Kordon.
struct Op {
    k: Kordon,
    sip: SocketAddr,
    rest: SocketAddr,
    radius: SocketAddr,
    node: SocketAddr,
    setup_dir: PathBuf,
    config: PathBuf,
    sipp: PathBuf,
}

/// Ports of an operator, chosen before either starts (each names the other).
struct Ports {
    sip: u16,
    rest: u16,
    radius: u16,
    node: u16,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            sip: free_udp_port(),
            rest: free_tcp_port(),
            radius: free_udp_port(),
            node: free_tcp_port(),
        }
    }
}

fn setup_file(dir: &Path, uvr: u32, stamp: &str, body: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(format!("SETUP_{uvr}_{stamp}"));
    std::fs::write(&p, format!("CODE;RANGE_START;RANGE_END;UVR_TYPE\n{body}")).unwrap();
    p
}

/// Starts an operator: `verify` holds extra `[verify]` keys, `tables` extra
/// TOML tables (trunks, routes).
fn operator(
    me: &Ports,
    uvr: u32,
    operator_id: u32,
    capacity: &str,
    verify: &str,
    sip_tables: &str,
) -> Op {
    let work = temp_dir("verify-op");
    let setup_dir = work.join("setup");
    setup_file(&setup_dir, uvr, "2026_01_01_00_00_00", capacity);
    let t = format!(
        "[sip]\n[[sip.interfaces]]\nname = \"default\"\nlisten = \"127.0.0.1:{}\"\ntls_port = 0\nmedia_interface = \"edge\"\n{sip_tables}\n\
         [verify]\nnodes = [{{ uvr_id = {uvr}, operator_id = {operator_id} }}]\n\
         rest_port = {}\nradius_port = {}\nlocal_port = {}\nradius_secret = \"testing123\"\n\
         hash_key = \"e2e-network-key\"\nmain_timer = 1\nsetup_path = {:?}\n{verify}\n",
        me.sip,
        me.rest,
        me.radius,
        me.node,
        setup_dir.display().to_string(),
    );
    let k = Kordon::start(Config::new().run_with(&t));
    let sipp = k.dir().join("sipp");
    std::fs::create_dir_all(&sipp).unwrap();
    let lo = |p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p);
    let op = Op {
        config: k.dir().join("kordon.toml"),
        sip: lo(me.sip),
        rest: lo(me.rest),
        radius: lo(me.radius),
        node: lo(me.node),
        setup_dir,
        sipp,
        k,
    };
    // The SETUP file given at start is applied by the first scan.
    wait_for(&op, "the SETUP file to be applied", || {
        std::fs::read_dir(&op.setup_dir)
            .map(|d| d.count() == 0)
            .unwrap_or(false)
    });
    op
}

fn wait_for(op: &Op, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\nlog:\n{}",
            op.k.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// O and T, wired to each other. `o_extra`/`t_extra` add `[verify]` keys.
fn pair(o_extra: &str, t_extra: &str) -> (Op, Op, Ports, Ports) {
    let timer = |extra: &str| {
        if extra.contains("req_timer") {
            extra.to_string()
        } else {
            format!("req_timer = 500\n{extra}")
        }
    };
    let (o_extra, t_extra) = (timer(o_extra), timer(t_extra));
    let (po, pt) = (Ports::new(), Ports::new());
    let callee = SocketAddr::new(IpAddr::V4(CALLEE_IP), free_udp_port());
    let o = operator(
        &po,
        1,
        11,
        "495;7000000;7999999;1\n",
        &format!(
            "ranges = [{{ from = \"78120000000\", to = \"78129999999\", uvr = 2 }}]\n{o_extra}\n[verify.peers]\n2 = \"127.0.0.1:{}\"\n",
            pt.node
        ),
        &format!(
            "[[sip.trunks]]\nname = \"pbx\"\naddress = \"{PBX_IP}:5060\"\nacl = [\"{PBX_IP}\"]\n\
             [[sip.trunks]]\nname = \"t\"\naddress = \"127.0.0.1:{}\"\nacl = [\"127.0.0.1:{}\"]\noperator_id = 22\nmedia_interface = \"core\"\n\
             [[sip.routes]]\nprefix = \"\"\ntrunks = [\"t\"]\n",
            pt.sip, pt.sip
        ),
    );
    let t = operator(
        &pt,
        2,
        22,
        "812;1000000;1999999;1\n",
        &format!(
            "ranges = [{{ from = \"74950000000\", to = \"74959999999\", uvr = 1 }}]\n{t_extra}\n[verify.peers]\n1 = \"127.0.0.1:{}\"\n",
            po.node
        ),
        &format!(
            "[[sip.trunks]]\nname = \"o\"\naddress = \"127.0.0.1:{}\"\nacl = [\"127.0.0.1:{}\"]\noperator_id = 11\n\
             [[sip.trunks]]\nname = \"foreign\"\naddress = \"{FOREIGN_IP}:5060\"\nacl = [\"{FOREIGN_IP}\"]\noperator_id = 33\n\
             [[sip.trunks]]\nname = \"pstn\"\naddress = \"{callee}\"\nacl = [\"{CALLEE_IP}\"]\nmedia_interface = \"core\"\n\
             [[sip.routes]]\nprefix = \"\"\ntrunks = [\"pstn\"]\n",
            po.sip, po.sip
        ),
    );
    (o, t, po, pt)
}

fn callee_of(t: &Op) -> SocketAddr {
    let text = std::fs::read_to_string(&t.config).unwrap();
    let line = text
        .lines()
        .skip_while(|l| !l.contains("name = \"pstn\""))
        .find(|l| l.starts_with("address"))
        .unwrap();
    line.split('"').nth(1).unwrap().parse().unwrap()
}

/// One call from `from_ip` to `op` expecting `status`; returns SIPp's message
/// trace.
fn call(op: &Op, from_ip: Ipv4Addr, caller: &str, callee: &str, status: u16) -> String {
    let name = format!("uac-{}-{}", from_ip, free_udp_port());
    let sipp = Sipp::new("uac_expect", &op.sipp)
        .name(&name)
        .remote(op.sip)
        .local(IpAddr::V4(from_ip), free_udp_port())
        .media(IpAddr::V4(from_ip), free_udp_port())
        .key("callee", callee)
        .key("caller", caller)
        .key("expect", status)
        .trace_msg(true)
        .timeout(Duration::from_secs(30));
    let out = sipp.run().expect("running SIPp");
    assert!(
        out.success(),
        "expected {status} from {caller} to {callee}:\n{}\nkordon log:\n{}",
        out.report(),
        op.k.log()
    );
    let files = sipp.files();
    files
        .messages
        .and_then(|m| std::fs::read_to_string(m).ok())
        .unwrap_or_default()
}

/// `kordon verify report` over the last day, as text.
fn report(op: &Op) -> String {
    let from = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    let to = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let out = Command::new(kordon_bin())
        .arg("--config")
        .arg(&op.config)
        .args(["verify", "report", "--from", &from, "--to", &to])
        .output()
        .expect("kordon verify report");
    assert!(
        out.status.success(),
        "report failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Waits until the report has a line for `name` with `count`.
fn wait_report(op: &Op, name: &str, count: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = report(op);
        let ok = r
            .lines()
            .any(|l| l.contains(name) && l.split_whitespace().last() == Some(&count.to_string()));
        if ok || Instant::now() > deadline {
            assert!(ok, "no line {name:?} with {count} in:\n{r}");
            return r;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// POST with curl; returns (status, headers text).
fn curl(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-i",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ])
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    resp.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn metric(op: &Op, name: &str) -> u64 {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(op.k.metrics).expect("metrics");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn genuine_call_completes_and_spoofed_caller_is_released() {
    let (o, t, _, _) = pair("", "");
    let callee = callee_of(&t);
    let _uas = {
        let mut r = Sipp::new("uas", &t.sipp)
            .name("callee")
            .local(callee.ip(), callee.port())
            .media(callee.ip(), free_udp_port())
            .unlimited()
            .timeout(Duration::from_secs(120))
            .spawn()
            .expect("callee");
        r.wait_listening(Duration::from_secs(10))
            .expect("callee listening");
        r
    };
    // O's subscriber calls T's: O registers the call before its INVITE
    // leaves, T asks O, O answers Continue, the call completes.
    call(&o, PBX_IP, O_NUMBER, T_NUMBER, 200);
    assert_eq!(metric(&o, "kordon_verify_registered_total"), 1);
    assert_eq!(metric(&t, "kordon_verify_asked_total"), 1);
    // A caller on a foreign trunk presents O's number: O never placed that
    // call, so T releases it with 403 and the Q.850 cause in Reason.
    let trace = call(&t, FOREIGN_IP, "74957000001", T_NUMBER, 403);
    assert!(
        trace.contains("Reason: Q.850;cause=50"),
        "no Reason header with cause 50 in:\n{trace}"
    );
    assert_eq!(metric(&t, "kordon_sip_verify_released_total"), 1);
    // Both nodes recorded both verifications.
    wait_report(&t, "confirmed", 1);
    let tr = wait_report(&t, "not confirmed", 1);
    assert!(tr.contains("incident"), "{tr}");
    wait_report(&o, "confirmed", 1);
    wait_report(&o, "not confirmed", 1);
    // T's CDR says why.
    let out = Command::new(kordon_bin())
        .arg("--config")
        .arg(&t.config)
        .args(["cdr", "export", "--csv"])
        .output()
        .unwrap();
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(
        csv.contains("call verification: not confirmed (Q.850 cause 50)"),
        "{csv}"
    );
}

#[test]
fn presets_timeouts_and_an_unreachable_node_over_rest() {
    // O answers from presets for 7495900xxxx: 00-99 release, 100-199 no
    // answer, 200-299 continue. T releases on timeout with cause 41.
    let o_presets = "[verify.last_numbers]\nint_event = 1\nintervals = [\
        { range = \"74959000000-74959000099\", event = 2 },\
        { range = \"74959000100-74959000199\" },\
        { range = \"74959000200-74959000299\", event = 0 }]\n";
    let (o, t, _, _) = pair(o_presets, "timeout_code = 41\n");
    let check = |a: &str, id: &str| {
        curl(
            t.rest,
            "/CheckCall",
            &format!(r#"{{"a":"{a}","b":"{T_NUMBER}","id_src":33,"call_id":"{id}"}}"#),
        )
    };
    let (s, h) = check("74959000005", "p1");
    assert_eq!(s, 404, "{h}");
    assert_eq!(header(&h, "X-Warning-Bits"), Some("0x00000000"), "{h}");
    assert_eq!(header(&h, "X-Error-Bits"), Some("0x00000024"), "{h}");
    let started = Instant::now();
    let (s, h) = check("74959000105", "p2");
    assert_eq!(s, 404, "{h}");
    assert_eq!(header(&h, "X-Warning-Bits"), Some("0x00000001"), "{h}");
    assert_eq!(header(&h, "X-Warning-Messages"), Some("Timeout"), "{h}");
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "answered before req_timer"
    );
    let (s, h) = check("74959000205", "p3");
    assert_eq!(s, 200, "{h}");
    // A registered call is confirmed by O.
    let (s, h) = curl(
        o.rest,
        "/RegisterCall",
        &format!(r#"{{"a":"74957110000","b":"{T_NUMBER}","id_dst":22,"call_id":"r1"}}"#),
    );
    assert_eq!(s, 201, "{h}");
    assert_eq!(header(&h, "X-Error-Bits"), Some("0x00000018"), "{h}");
    assert_eq!(check("74957110000", "r1").0, 200);
    assert_eq!(check("74957110001", "r2").0, 404);
    let (s, _) = curl(o.rest, "/callUpdate", r#"{"call_id":"r1"}"#);
    assert_eq!(s, 200);
    let (s, _) = curl(o.rest, "/callUpdate", r#"{"call_id":"nope"}"#);
    assert_eq!(s, 404);
    // Bad input.
    let (s, h) = curl(
        t.rest,
        "/CheckCall",
        r#"{"a":"7495x","b":"1","id_src":1,"call_id":"x"}"#,
    );
    assert_eq!(s, 400, "{h}");
    assert_eq!(header(&h, "X-Error-Bits"), Some("0x00000002"), "{h}");
    // O goes down: T gets no answer, which is the timeout path.
    let mut o = o;
    o.k.terminate();
    let (s, h) = check("74957110000", "r3");
    assert_eq!(s, 404, "{h}");
    assert_eq!(header(&h, "X-Warning-Bits"), Some("0x00000001"), "{h}");
    wait_report(&t, "timeout", 2);
}

#[test]
fn radius_requests_are_classified_and_verified_with_the_far_node() {
    let (o, t, _, _) = pair("", "");
    let radclient = |op: &Op, a: &str, b: &str, in_label: u32, conf: &str| -> String {
        let mut child = Command::new("radclient")
            .args(["-x", "-r", "1", "-t", "3"])
            .arg(op.radius.to_string())
            .args(["auth", "testing123"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("radclient (freeradius-utils)");
        use std::io::Write as _;
        let attrs = format!(
            "Calling-Station-Id = \"{a}\", Called-Station-Id = \"{b}\", \
             h323-conf-id = \"h323-conf-id={conf}\", Cisco-AVPair = \"in-trunkgroup-label={in_label}\", \
             Message-Authenticator = 0x00\n"
        );
        child
            .stdin
            .take()
            .unwrap()
            .write_all(attrs.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    // At O: an outgoing call (A ours, B not) is registered and accepted.
    let r = radclient(
        &o,
        "74957223344",
        T_NUMBER,
        11,
        "316004a8-571f97b3-cdd5364e-90ed2f02",
    );
    assert!(r.contains("Access-Accept"), "{r}");
    // At T: the same call arriving from O is confirmed by O...
    let r = radclient(&t, "74957223344", T_NUMBER, 11, "aa01");
    assert!(r.contains("Access-Accept"), "{r}");
    // ...and one O never placed is rejected.
    let r = radclient(&t, "74957223345", T_NUMBER, 11, "aa02");
    assert!(r.contains("Access-Reject"), "{r}");
    // A local call at T passes without a query.
    let r = radclient(&t, "78121110000", T_NUMBER, 22, "aa03");
    assert!(r.contains("Access-Accept"), "{r}");
    assert_eq!(metric(&t, "kordon_verify_asked_total"), 2);
}

#[test]
fn setup_files_load_refuse_and_config_reloads() {
    let (o, _t, _, _) = pair("", "");
    let own = |a: &str| {
        let (s, h) = curl(
            o.rest,
            "/CheckCall",
            &format!(r#"{{"a":"{a}","b":"74957000001","id_src":11,"call_id":"s"}}"#),
        );
        (s, header(&h, "X-Error-Bits").unwrap_or("").to_string())
    };
    // 7812 3xx is not O's yet.
    assert_eq!(own("78123000001").1, "0x00000024");
    // A newer file for node 1 replaces its capacity.
    setup_file(
        &o.setup_dir,
        1,
        "2026_02_01_00_00_00",
        "495;7000000;7999999;1\n812;3000000;3999999;2\n",
    );
    wait_for(&o, "the second SETUP file", || {
        own("78123000001").1 == "0x00000030"
    });
    // A broken file is refused whole, with its line number, and nothing changes.
    let broken = setup_file(
        &o.setup_dir,
        1,
        "2026_03_01_00_00_00",
        "495;7000000;7999999;1\n812;3000000;39x;1\n",
    );
    let note = o.k.dir().join("data/verify/setup-refused").join(format!(
        "{}.error",
        broken.file_name().unwrap().to_string_lossy()
    ));
    wait_for(&o, "the refusal note", || note.exists());
    let why = std::fs::read_to_string(&note).unwrap();
    assert!(why.contains("line 3"), "{why}");
    assert_eq!(own("78123000001").1, "0x00000030");
    // An older file than the one applied is refused too.
    setup_file(
        &o.setup_dir,
        1,
        "2025_12_01_00_00_00",
        "495;7000000;7999999;1\n",
    );
    wait_for(&o, "the older file's refusal", || {
        std::fs::read_dir(&o.setup_dir)
            .map(|d| d.count() == 0)
            .unwrap_or(false)
    });
    assert_eq!(own("78123000001").1, "0x00000030");
    // Reload: a preset added to the file applies after `kordon reload`.
    let ask = || {
        use kordon_controlplane::verify::ber::{CalledNumber, VerifyData};
        use kordon_controlplane::verify::isup::IsupNumber;
        let data = VerifyData {
            calling: IsupNumber::international("74957000005").unwrap(),
            called: CalledNumber::Plain(IsupNumber::international(T_NUMBER).unwrap()),
            original_called: None,
        }
        .to_hex();
        let (_, h) = curl(
            o.node,
            "/VerifyCallState",
            &format!(
                r#"{{"request":{{"serviceKey":80,"uvrO":2,"uvrT":1,"sessionId":"00000000000000A1","data":"{data}","opcode":"Request"}}}}"#
            ),
        );
        h
    };
    assert!(ask().contains(r#""opcode":"Release""#), "{}", ask());
    let text = std::fs::read_to_string(&o.config).unwrap();
    let text = text.replace(
        "[verify.peers]",
        "[verify.last_numbers]\nintervals = [{ range = \"74957000000-74957000009\", event = 0 }]\n[verify.peers]",
    );
    std::fs::write(&o.config, text).unwrap();
    let out = Command::new(kordon_bin())
        .arg("--config")
        .arg(&o.config)
        .arg("reload")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(&o, "the reloaded preset", || {
        ask().contains(r#""opcode":"Continue""#)
    });
}

#[test]
fn a_classic_uvrd_conf_converts_and_encryption_is_refused_at_start() {
    let dir = temp_dir("verify-cli");
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("controlplane/tests/fixtures/uvrd.conf");
    let out = Command::new(kordon_bin())
        .args(["verify", "import-uvrd"])
        .arg(&fixture)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let toml = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(toml.contains("[verify]"), "{toml}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("ignored:"));
    // The converted section is a valid configuration once encryption is off.
    let path = dir.join("converted.toml");
    std::fs::write(&path, toml.replace("encrypted = true", "encrypted = false")).unwrap();
    let check = Command::new(kordon_bin())
        .arg("--config")
        .arg(&path)
        .args(["config", "check"])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // encrypted = yes is refused before anything starts, with the reason.
    let enc = dir.join("encrypted.toml");
    std::fs::write(&enc, "[verify]\nencrypted = true\n").unwrap();
    let run = Command::new(kordon_bin())
        .arg("--config")
        .arg(&enc)
        .arg("run")
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("verify.encrypted") && err.contains("not supported"),
        "{err}"
    );
}

#[test]
fn a_caller_that_cancels_while_the_far_node_is_asked_gets_487() {
    // O does not answer for 749579000xx (preset 1): T would wait req_timer
    // (5 s); the caller cancels after 100 ms and must not wait for it.
    let o_presets =
        "[verify.last_numbers]\nintervals = [{ range = \"74957900000-74957900099\", event = 1 }]\n";
    let (_o, t, _, _) = pair(o_presets, "req_timer = 5000\n");
    let sipp = Sipp::new("uac_cancel_early", &t.sipp)
        .name("cancel-early")
        .remote(t.sip)
        .local(IpAddr::V4(FOREIGN_IP), free_udp_port())
        .media(IpAddr::V4(FOREIGN_IP), free_udp_port())
        .key("callee", T_NUMBER)
        .key("caller", "74957900001")
        .pause_ms(100)
        .timeout(Duration::from_secs(30));
    let started = Instant::now();
    let out = sipp.run().expect("running SIPp");
    assert!(out.success(), "{}\nT:\n{}", out.report(), t.k.log());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the 487 waited for the verification"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let csv = loop {
        let out = Command::new(kordon_bin())
            .arg("--config")
            .arg(&t.config)
            .args(["cdr", "export", "--csv"])
            .output()
            .unwrap();
        let csv = String::from_utf8_lossy(&out.stdout).to_string();
        if csv.lines().count() > 1 || Instant::now() > deadline {
            break csv;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(csv.contains("cancelled"), "{csv}");
}
