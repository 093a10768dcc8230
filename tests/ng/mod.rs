//! Shared by the ng end-to-end tests (`ng_protocol`, `ng_kamailio`,
//! `ng_vs_rtpengine`): building ng requests, reading answers, looking at SDP
//! text line by line, and running foreign programs (Kamailio, SIPp,
//! rtpengine) as children that are killed when the test ends.
//!
//! The SDP helpers here are deliberately textual and independent of Kordon's
//! SDP code: they check what a SIP peer would read.
#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::fs::File;
use std::io::Read as _;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kordon_controlplane::ng::bencode::Value;

/// A bencode list of strings.
pub(crate) fn list(items: &[&str]) -> Value {
    Value::List(items.iter().map(|s| Value::from(*s)).collect())
}

/// `received-from` as Kamailio sends it: `["IP4", ip]`.
pub(crate) fn received_from(ip: &str) -> Value {
    list(&["IP4", ip])
}

/// An `offer` from `from_tag`.
pub(crate) fn offer(call_id: &str, from_tag: &str, sdp: &str) -> Value {
    Value::dict()
        .with("command", "offer")
        .with("call-id", call_id)
        .with("from-tag", from_tag)
        .with("sdp", sdp)
}

/// An `answer` from `to_tag` to the offer of `from_tag`.
pub(crate) fn answer(call_id: &str, from_tag: &str, to_tag: &str, sdp: &str) -> Value {
    Value::dict()
        .with("command", "answer")
        .with("call-id", call_id)
        .with("from-tag", from_tag)
        .with("to-tag", to_tag)
        .with("sdp", sdp)
}

/// A command about a whole call (`query`, `delete`).
pub(crate) fn about(command: &str, call_id: &str, from_tag: &str) -> Value {
    Value::dict()
        .with("command", command)
        .with("call-id", call_id)
        .with("from-tag", from_tag)
}

/// A command without arguments (`ping`, `list`, `statistics`).
pub(crate) fn command(command: &str) -> Value {
    Value::dict().with("command", command)
}

/// The value at `path` in nested dictionaries and lists (a list index is
/// written as a number); panics naming the path and showing `v`.
pub(crate) fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    let mut cur = v;
    for (n, key) in path.iter().enumerate() {
        let next = match cur {
            Value::List(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => cur.get(key),
        };
        cur = next.unwrap_or_else(|| panic!("no {:?} in the answer: {v:?}", &path[..=n]));
    }
    cur
}

/// The string at `path`.
pub(crate) fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    at(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path:?} is not a string in {v:?}"))
}

/// The integer at `path`.
pub(crate) fn int_at(v: &Value, path: &[&str]) -> i64 {
    at(v, path)
        .as_int()
        .unwrap_or_else(|| panic!("{path:?} is not an integer in {v:?}"))
}

/// The `result` of an answer.
pub(crate) fn result(v: &Value) -> &str {
    str_at(v, &["result"])
}

/// Asserts `result: ok` (showing the `error-reason` otherwise).
pub(crate) fn assert_ok(v: &Value, what: &str) {
    assert_eq!(
        v.get("result").and_then(Value::as_str),
        Some("ok"),
        "{what}: {:?}",
        v.get("error-reason")
    );
}

/// The `sdp` of a successful offer or answer.
pub(crate) fn ok_sdp(v: &Value, what: &str) -> String {
    assert_ok(v, what);
    str_at(v, &["sdp"]).to_string()
}

/// The `error-reason` of a failed command.
pub(crate) fn error_reason(v: &Value) -> &str {
    assert_eq!(result(v), "error", "expected an error, got {v:?}");
    str_at(v, &["error-reason"])
}

/// SDP text with CRLF line ends, from a literal written with `\n` and
/// starting on the line after the opening quote.
pub(crate) fn crlf(text: &str) -> String {
    let body = text.strip_prefix('\n').unwrap_or(text);
    let mut out = String::with_capacity(body.len() + 32);
    for line in body.lines() {
        out.push_str(line.trim_end());
        out.push_str("\r\n");
    }
    out
}

/// An SDP body split into its session part and media sections, one string
/// per line (without line ends).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SdpText {
    /// Lines before the first `m=`.
    pub(crate) session: Vec<String>,
    /// Each media section, its `m=` line first.
    pub(crate) media: Vec<Vec<String>>,
}

impl SdpText {
    /// Splits `text`; asserts CRLF line ends (what SIP requires).
    pub(crate) fn parse(text: &str) -> SdpText {
        assert!(
            text.ends_with("\r\n"),
            "SDP does not end with CRLF: {text:?}"
        );
        let mut s = SdpText {
            session: Vec::new(),
            media: Vec::new(),
        };
        for line in text.split("\r\n").filter(|l| !l.is_empty()) {
            assert!(!line.contains('\n'), "bare LF in SDP line {line:?}");
            if line.starts_with("m=") {
                s.media.push(vec![line.to_string()]);
            } else if let Some(m) = s.media.last_mut() {
                m.push(line.to_string());
            } else {
                s.session.push(line.to_string());
            }
        }
        s
    }

    /// The `m=` port of media section `i`.
    pub(crate) fn port(&self, i: usize) -> u16 {
        let m = &self.media[i][0];
        m.split(' ')
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {m:?}"))
    }

    /// The `m=` protocol of media section `i`.
    pub(crate) fn proto(&self, i: usize) -> &str {
        self.media[i][0].split(' ').nth(2).unwrap_or_default()
    }

    /// The value of the first `a=name:` (or `Some("")` for a flag) in media
    /// section `i`.
    pub(crate) fn attr(&self, i: usize, name: &str) -> Option<&str> {
        attr_in(&self.media[i], name)
    }

    /// The session-level `c=` address.
    pub(crate) fn session_addr(&self) -> Option<&str> {
        conn_addr(&self.session)
    }

    /// The `c=` address that applies to media section `i`.
    pub(crate) fn addr(&self, i: usize) -> Option<&str> {
        conn_addr(&self.media[i]).or_else(|| self.session_addr())
    }

    /// The `o=` address.
    pub(crate) fn origin_addr(&self) -> &str {
        let o = self
            .session
            .iter()
            .find(|l| l.starts_with("o="))
            .expect("an o= line");
        o.rsplit(' ').next().unwrap_or_default()
    }

    /// Where media section `i` receives RTP.
    pub(crate) fn rtp(&self, i: usize) -> SocketAddr {
        let ip = self.addr(i).expect("a c= line");
        SocketAddr::new(ip.parse().expect("c= is an IP"), self.port(i))
    }

    /// Where media section `i` receives RTCP (`a=rtcp`, else RTP port + 1).
    pub(crate) fn rtcp(&self, i: usize) -> SocketAddr {
        let rtp = self.rtp(i);
        match self.attr(i, "rtcp") {
            Some(v) => {
                let port = v.split(' ').next().and_then(|p| p.parse().ok());
                SocketAddr::new(rtp.ip(), port.expect("a=rtcp port"))
            }
            None => SocketAddr::new(rtp.ip(), rtp.port() + 1),
        }
    }

    /// Whether any line of any section is one of `names` (attribute names).
    pub(crate) fn has_any_attr(&self, names: &[&str]) -> bool {
        std::iter::once(&self.session)
            .chain(self.media.iter())
            .flatten()
            .any(|l| {
                names
                    .iter()
                    .any(|n| attr_in(std::slice::from_ref(l), n).is_some())
            })
    }
}

fn attr_in<'a>(lines: &'a [String], name: &str) -> Option<&'a str> {
    lines.iter().find_map(|l| {
        let rest = l.strip_prefix("a=")?.strip_prefix(name)?;
        if rest.is_empty() {
            Some("")
        } else {
            rest.strip_prefix(':')
        }
    })
}

fn conn_addr(lines: &[String]) -> Option<&str> {
    let c = lines.iter().find(|l| l.starts_with("c="))?;
    c.split(' ').nth(2)
}

/// The ICE attributes (RFC 8839) an SBC removes when it terminates ICE.
pub(crate) const ICE: &[&str] = &[
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "ice-lite",
    "ice-mismatch",
    "candidate",
    "remote-candidates",
    "end-of-candidates",
];

/// Whether `program` is on the PATH (or is an existing path).
pub(crate) fn have(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).exists();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// Whether something listens on UDP `ip:port` (IPv4), from /proc/net/udp:
/// a readiness probe that does not take the port.
pub(crate) fn udp_listening(addr: SocketAddr) -> bool {
    let SocketAddr::V4(a) = addr else {
        return false;
    };
    let want = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(a.ip().octets()),
        a.port()
    );
    std::fs::read_to_string("/proc/net/udp").is_ok_and(|t| {
        t.lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(1) == Some(want.as_str()))
    })
}

/// A child program in its own process group (Kamailio forks workers), which
/// is terminated on drop (SIGTERM, then SIGKILL after a grace period); its
/// output goes to a file that is shown when the test panics.
pub(crate) struct Proc {
    /// What it is, for messages.
    pub(crate) name: String,
    child: Child,
    /// Its stdout and stderr.
    pub(crate) log: PathBuf,
    exited: Option<std::process::ExitStatus>,
}

impl Proc {
    /// Starts `cmd` in `dir`, output to `dir/<name>.log`.
    pub(crate) fn start(name: &str, mut cmd: Command, dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).expect("creating a log file");
        let err = out.try_clone().expect("cloning a file handle");
        cmd.current_dir(dir)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_string(),
            child,
            log,
            exited: None,
        }
    }

    /// What it wrote so far.
    pub(crate) fn output(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Its exit status if it has exited.
    pub(crate) fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("try_wait");
        }
        self.exited
    }

    /// Waits for it to exit within `timeout`; panics (showing its output)
    /// otherwise.
    pub(crate) fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                return s;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} did not exit within {timeout:?}; output:\n{}",
                    self.name,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `ready` holds, failing early (with its output) if it exits.
    pub(crate) fn wait_ready(
        &mut self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            if ready() {
                return;
            }
            if let Some(s) = self.try_exit() {
                panic!(
                    "{} exited ({s}) before {what}; output:\n{}",
                    self.name,
                    self.output()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "{}: not {what} within {timeout:?}; output:\n{}",
                    self.name,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Proc {
    /// Sends `signal` to the process group this child leads.
    fn signal_group(&self, signal: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg("--")
            .arg(format!("-{}", self.child.id()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            // SIGTERM lets Kamailio's main process stop its workers.
            self.signal_group("TERM");
            let deadline = Instant::now() + Duration::from_secs(3);
            while self.try_exit().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if self.try_exit().is_none() {
                // The leader is not reaped yet, so its group id is still its own.
                self.signal_group("KILL");
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "---- {} output ({}) ----\n{}",
                self.name,
                self.log.display(),
                self.output()
            );
        }
    }
}

/// Debian's `kamailio` and `rtpengine-daemon` packages enable a system
/// service. These tests run their own in the foreground and need none; on a
/// systemd host where the package started one, it is stopped and disabled
/// here (and said so). Elsewhere nothing started one: Docker images refuse
/// service starts (policy-rc.d), and Kamailio's init script needs
/// `RUN_KAMAILIO=yes`.
pub(crate) fn stop_packaged_service(unit: &str) {
    if !Path::new("/run/systemd/system").is_dir() {
        return;
    }
    let active = Command::new("systemctl")
        .args(["is-active", "--quiet", unit])
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if active {
        eprintln!(
            "note: stopping and disabling the packaged {unit} service (the tests run their own)"
        );
        let _ = Command::new("systemctl")
            .args(["disable", "--now", unit])
            .stdin(Stdio::null())
            .status();
    }
}

/// A scratch directory removed on drop, unless the test is failing (its logs
/// are then left for a look).
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
