//! The RADIUS front door of the verification node, in process on 127.0.0.1,
//! driven by FreeRADIUS's `radclient` (package freeradius-utils) and by our
//! own codec for what radclient will not send (malformed packets, wrong or
//! missing Message-Authenticators, unusable fields).
//!
//! The radclient tests are skipped, saying so, only when `radclient` is not
//! installed.

use std::io::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kordon_controlplane::verify::config::NodeIdConfig;
use kordon_controlplane::verify::numbers::{range_of, RangeMap};
use kordon_controlplane::verify::radius::{self, attr, cisco, cisco_vsa, Attribute, Code, Packet};
use kordon_controlplane::verify::radius_server::{serve, RadiusStats};
use kordon_controlplane::verify::records::RecordSink;
use kordon_controlplane::verify::{Node, State, VerifyConfig};

const SECRET: &str = "testing123";
/// Our capacity, node 10 of operator 100.
const OURS: (&str, &str) = ("74950000000", "74959999999");

struct Server {
    /// Runs the server; dropped with the test.
    _rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    stats: Arc<RadiusStats>,
}

fn start(edit: impl FnOnce(&mut VerifyConfig)) -> Server {
    let mut cfg = VerifyConfig {
        nodes: vec![NodeIdConfig {
            uvr_id: 10,
            operator_id: 100,
        }],
        radius_secret: SECRET.to_string(),
        req_timer: 200,
        ..VerifyConfig::default()
    };
    edit(&mut cfg);
    let (lo, hi) = range_of(OURS.0, OURS.1).expect("range");
    let capacity = RangeMap::build(vec![(lo, hi, 10u32)]).expect("capacity");
    let state = State::from_config(cfg, Arc::new(capacity), vec![]).expect("state");
    let node = Arc::new(Node::new(
        state,
        RecordSink::disabled(),
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")),
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let stats = Arc::new(RadiusStats::default());
    let socket = rt
        .block_on(tokio::net::UdpSocket::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    rt.spawn(serve(Arc::new(socket), node, stats.clone()));
    Server {
        _rt: rt,
        addr,
        stats,
    }
}

impl Server {
    fn get(&self, f: impl Fn(&RadiusStats) -> &std::sync::atomic::AtomicU64) -> u64 {
        f(&self.stats).load(Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------- radclient

fn radclient_available() -> bool {
    Command::new("radclient")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Runs `radclient -x` with `attrs` (radclient's `Name = "value", ...`
/// syntax) and returns (exit success, stdout + stderr).
fn radclient(addr: SocketAddr, secret: &str, attrs: &str) -> (bool, String) {
    let mut child = Command::new("radclient")
        .args(["-x", "-r", "1", "-t", "1"])
        .arg(addr.to_string())
        .args(["auth", secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("radclient runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(attrs.as_bytes())
        .expect("write attributes");
    let out = child.wait_with_output().expect("radclient finishes");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn call(a: &str, b: &str, in_label: &str, conf_id: &str) -> String {
    format!(
        "Calling-Station-Id = \"{a}\", Called-Station-Id = \"{b}\", \
         Cisco-AVPair = \"in-trunkgroup-label={in_label}\", \
         Cisco-AVPair = \"out-trunkgroup-label=200\", \
         h323-conf-id = \"h323-conf-id={conf_id}\", \
         h323-redirect-number = \"h323-redirect-number=74957777777\"\n"
    )
}

macro_rules! need_radclient {
    () => {
        if !radclient_available() {
            eprintln!("SKIPPED: radclient not found (apt-get install -y freeradius-utils)");
            return;
        }
    };
}

#[test]
fn radclient_outgoing_incoming_own_a_and_local_calls() {
    need_radclient!();
    let s = start(|_| {});
    // Outgoing: A ours, B not: registered, accepted.
    let (ok, out) = radclient(
        s.addr,
        SECRET,
        &call("74951234567", "78121234567", "100", "c1"),
    );
    assert!(ok, "radclient failed:\n{out}");
    assert!(out.contains("Received Access-Accept"), "{out}");

    // From operator 5 with our own A, not registered: verify_own_a releases.
    let (ok, out) = radclient(
        s.addr,
        SECRET,
        &call("74951111111", "74952222222", "5", "c2"),
    );
    assert!(out.contains("Received Access-Reject"), "{out}");
    assert!(!ok, "radclient exits non-zero on a reject:\n{out}");

    // Local: both ours, from our operator.
    let (ok, out) = radclient(
        s.addr,
        SECRET,
        &call("74951111111", "74952222222", "100", "c3"),
    );
    assert!(ok, "{out}");
    assert!(out.contains("Received Access-Accept"), "{out}");

    assert_eq!(s.get(|x| &x.accepts), 2);
    assert_eq!(s.get(|x| &x.rejects), 1);
    assert_eq!(s.get(|x| &x.unusable), 0);
}

#[test]
fn radclient_wrong_secret_gets_no_answer() {
    need_radclient!();
    let s = start(|_| {});
    // radclient 3.2 adds no Message-Authenticator unless asked; asked, it
    // signs it with its (wrong) secret and the server drops the request.
    let attrs = format!(
        "Message-Authenticator = 0x00, {}",
        call("74951234567", "78121234567", "100", "w1")
    );
    let (ok, out) = radclient(s.addr, "not-the-secret", &attrs);
    assert!(!ok, "{out}");
    assert!(out.contains("No reply from server"), "{out}");
    assert!(out.contains("Message-Authenticator"), "sent one:\n{out}");
    assert!(s.get(|x| &x.dropped_bad_authenticator) >= 1);
    assert_eq!(s.get(|x| &x.accepts) + s.get(|x| &x.rejects), 0);

    // The right secret with a Message-Authenticator is answered.
    let attrs = format!(
        "Message-Authenticator = 0x00, {}",
        call("74951234567", "78121234567", "100", "w2")
    );
    let (ok, out) = radclient(s.addr, SECRET, &attrs);
    assert!(ok, "{out}");
    assert!(out.contains("Received Access-Accept"), "{out}");
}

#[test]
fn radclient_without_message_authenticator_when_required_is_dropped() {
    need_radclient!();
    let s = start(|c| c.radius_require_message_authenticator = true);
    let (ok, out) = radclient(
        s.addr,
        SECRET,
        &call("74951234567", "78121234567", "100", "r1"),
    );
    assert!(!ok, "{out}");
    assert!(out.contains("No reply from server"), "{out}");
    assert!(s.get(|x| &x.dropped_no_authenticator) >= 1);
}

// ------------------------------------------------------------- own codec

struct Client {
    sock: UdpSocket,
    to: SocketAddr,
}

fn client(s: &Server) -> Client {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    Client { sock, to: s.addr }
}

impl Client {
    fn send(&self, bytes: &[u8]) {
        self.sock.send_to(bytes, self.to).expect("send");
    }

    /// The next answer, checked against `req` (identifier, Response
    /// Authenticator is not checked here: radclient does that above;
    /// Message-Authenticator over the Request Authenticator is).
    fn answer(&self, req: &[u8], secret: &[u8]) -> Packet {
        let mut buf = [0u8; 4096];
        let (n, _) = self.sock.recv_from(&mut buf).expect("an answer");
        let mut raw = buf[..n].to_vec();
        let p = Packet::decode(&raw).expect("answer decodes");
        assert_eq!(p.identifier, req[1]);
        raw[4..20].copy_from_slice(&req[4..20]);
        assert_eq!(
            p.verify_message_authenticator(&raw, secret),
            Some(true),
            "answer's Message-Authenticator"
        );
        p
    }
}

fn string(typ: u8, v: &str) -> Attribute {
    Attribute {
        typ,
        value: v.as_bytes().to_vec(),
    }
}

fn attrs(a: Option<&str>, b: Option<&str>, conf_id: Option<&str>, label: &str) -> Vec<Attribute> {
    let mut v = Vec::new();
    if let Some(a) = a {
        v.push(string(attr::CALLING_STATION_ID, a));
    }
    if let Some(b) = b {
        v.push(string(attr::CALLED_STATION_ID, b));
    }
    if let Some(c) = conf_id {
        v.push(cisco_vsa(cisco::H323_CONF_ID, &format!("h323-conf-id={c}")));
    }
    v.push(cisco_vsa(
        cisco::AV_PAIR,
        &format!("in-trunkgroup-label={label}"),
    ));
    v
}

fn good(id: u8) -> Vec<u8> {
    radius::request(
        id,
        [id; 16],
        attrs(Some("74951234567"), Some("78121234567"), Some("g"), "100"),
        SECRET.as_bytes(),
        true,
    )
}

#[test]
fn malformed_and_other_packets_are_dropped_and_counted() {
    let s = start(|_| {});
    let c = client(&s);
    c.send(&[1, 2, 3]); // shorter than a header
    let mut long_len = good(1);
    long_len[2..4].copy_from_slice(&500u16.to_be_bytes()); // Length past the datagram
    c.send(&long_len);
    let mut overflow = good(2);
    overflow[21] = 250; // first attribute runs past Length
    c.send(&overflow);
    c.send(&vec![1u8; 5000]); // larger than any RADIUS packet
    let mut accounting = good(3);
    accounting[0] = 4;
    c.send(&accounting);
    // The loop is alive and handles datagrams in order: once this is
    // answered, every drop above has been counted.
    let req = good(4);
    c.send(&req);
    assert_eq!(c.answer(&req, SECRET.as_bytes()).code, Code::AccessAccept);
    assert_eq!(s.get(|x| &x.dropped_malformed), 4);
    assert_eq!(s.get(|x| &x.dropped_not_access_request), 1);
    assert_eq!(s.get(|x| &x.requests), 6);
    let m = s.stats.metrics();
    assert!(
        m.contains("kordon_verify_radius_dropped_malformed_total 4\n"),
        "{m}"
    );
    assert!(
        m.contains("# TYPE kordon_verify_radius_accepts_total counter"),
        "{m}"
    );
}

#[test]
fn message_authenticator_missing_when_required_or_wrong_is_dropped() {
    let s = start(|c| c.radius_require_message_authenticator = true);
    let c = client(&s);
    let a = attrs(Some("74951234567"), Some("78121234567"), Some("m"), "100");
    c.send(&radius::request(
        1,
        [1; 16],
        a.clone(),
        SECRET.as_bytes(),
        false,
    ));
    c.send(&radius::request(2, [2; 16], a.clone(), b"wrong", true));
    let mut tampered = radius::request(3, [3; 16], a, SECRET.as_bytes(), true);
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    c.send(&tampered);
    let req = good(4);
    c.send(&req);
    assert_eq!(c.answer(&req, SECRET.as_bytes()).code, Code::AccessAccept);
    assert_eq!(s.get(|x| &x.dropped_no_authenticator), 1);
    assert_eq!(s.get(|x| &x.dropped_bad_authenticator), 2);
    assert_eq!(s.get(|x| &x.accepts), 1);
}

#[test]
fn unusable_requests_are_accepted_and_counted() {
    let s = start(|_| {});
    let c = client(&s);
    let cases = [
        attrs(None, Some("78121234567"), Some("u1"), "100"),
        attrs(Some("74951234567"), None, Some("u2"), "100"),
        attrs(Some("74951234567"), Some("78121234567"), None, "100"),
        attrs(Some("not a number"), Some("78121234567"), Some("u4"), "100"),
    ];
    for (i, a) in cases.into_iter().enumerate() {
        let id = u8::try_from(i).unwrap();
        let req = radius::request(id, [id; 16], a, SECRET.as_bytes(), true);
        c.send(&req);
        assert_eq!(c.answer(&req, SECRET.as_bytes()).code, Code::AccessAccept);
    }
    assert_eq!(s.get(|x| &x.unusable), 4);
    assert_eq!(s.get(|x| &x.accepts), 4);
}

#[test]
fn a_label_that_is_not_a_number_sends_a_transit_call_to_verification() {
    // Neither number ours: in-trunkgroup-label decides. With no node known
    // for A, verification fails with an error, released with error_code.
    let s = start(|c| c.error_code = 41);
    let c = client(&s);
    let transit = |id: u8, label: &str| {
        radius::request(
            id,
            [id; 16],
            attrs(Some("78121234567"), Some("78131234567"), Some("t"), label),
            SECRET.as_bytes(),
            true,
        )
    };
    let ours = transit(1, "100");
    c.send(&ours);
    assert_eq!(c.answer(&ours, SECRET.as_bytes()).code, Code::AccessAccept);
    let junk = transit(2, "trunk-a");
    c.send(&junk);
    assert_eq!(c.answer(&junk, SECRET.as_bytes()).code, Code::AccessReject);
    assert_eq!(s.get(|x| &x.unusable), 0);
}

#[test]
fn a_retransmission_gets_the_same_answer_once_handled() {
    let s = start(|_| {});
    let c = client(&s);
    let req = good(9);
    c.send(&req);
    let mut first = [0u8; 4096];
    let (n1, _) = c.sock.recv_from(&mut first).expect("answer");
    c.send(&req);
    let mut second = [0u8; 4096];
    let (n2, _) = c.sock.recv_from(&mut second).expect("resent answer");
    assert_eq!(first[..n1], second[..n2]);
    assert_eq!(s.get(|x| &x.duplicates), 1);
    assert_eq!(s.get(|x| &x.accepts), 1);
    // Same identifier, new Request Authenticator: a new request.
    let mut again = req.clone();
    again[4] ^= 0xff;
    let again = {
        let p = Packet::decode(&again).unwrap();
        radius::request(
            p.identifier,
            p.authenticator,
            p.attributes,
            SECRET.as_bytes(),
            true,
        )
    };
    c.send(&again);
    c.answer(&again, SECRET.as_bytes());
    assert_eq!(s.get(|x| &x.accepts), 2);
}
