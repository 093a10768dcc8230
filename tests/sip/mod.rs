//! SIPp driver of the SIP end-to-end tests: finds `sipp` and the G.711 pcap
//! it ships, builds its command line for one of the scenarios of
//! `tests/sip/scenarios/`, runs it with a deadline and reads what it
//! reported: exit code, call counts from the `-trace_stat` CSV (or the
//! `-trace_screen` dump), response times, the `-trace_err` log and every SIP
//! message it sent and received (`-trace_msg`).
//!
//! Used as `mod sip;` from a `tests/sip_*.rs` file (or `#[path =
//! "sip/mod.rs"] mod sip;`). Every scenario documents its keys in its header;
//! [`Sipp::new`] gives each key a default ([`DEFAULT_KEYS`], `domain` = the
//! remote address, `pcap` = [`g711a_pcap`]), so a test sets only what it
//! checks.
//!
//! SIPp's exit codes: 0 every call succeeded, 1 at least one failed, 97 it
//! stopped on an internal command or its global timeout, 99 it stopped with
//! no call processed, 255 a fatal error, 254 it could not bind a socket
//! ([`exit_meaning`]).
//!
//! What needs what: scenarios that play RTP (`uac_pcap`, `uas`) open a raw
//! socket ([`can_play_pcap`] says whether this process may); TLS (`-t l1`)
//! needs a SIPp built with OpenSSL, which Debian's is not
//! ([`Features::tls`]).
#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

/// Where the scenarios are.
pub(crate) const SCENARIO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sip/scenarios");

/// Environment variable naming the `sipp` binary to use instead of the one
/// on the PATH.
pub(crate) const SIPP_ENV: &str = "KORDON_SIPP";
/// Environment variable naming the pcap to play instead of SIPp's own.
pub(crate) const PCAP_ENV: &str = "KORDON_SIPP_PCAP";

/// Where SIPp's G.711 A-law pcap is installed (Debian's `sip-tester`
/// first, then a source install's layout).
pub(crate) const PCAP_CANDIDATES: &[&str] = &[
    "/usr/share/sip-tester/g711a.pcap",
    "/usr/share/doc/sip-tester/examples/pcap/g711a.pcap",
    "/usr/local/share/sipp/pcap/g711a.pcap",
    "/usr/share/sipp/pcap/g711a.pcap",
];

/// Length of SIPp's g711a.pcap: 236 packets of PCMA, 20 ms apart, 7.05 s.
pub(crate) const G711A_PCAP_LEN: Duration = Duration::from_millis(7_050);
/// RTP packets in SIPp's g711a.pcap.
pub(crate) const G711A_PCAP_PACKETS: u64 = 236;

/// A default for every key the scenarios use; `domain` and `pcap` are set
/// per run (see [`Sipp::new`]).
pub(crate) const DEFAULT_KEYS: &[(&str, &str)] = &[
    ("caller", "alice"),
    ("callee", "bob"),
    ("user", "alice"),
    ("password", "secret"),
    ("expires", "3600"),
    ("expect", "200"),
    ("session_expires", "90"),
    ("min_se", "90"),
];

/// Extra time [`Sipp::run`] gives SIPp past its own `-timeout` to write its
/// files and exit.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// The SIP transport (`-t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    /// UDP, one socket (`u1`).
    Udp,
    /// TCP, one connection (`t1`).
    Tcp,
    /// TLS, one connection (`l1`; SIPp built with OpenSSL only).
    Tls,
}

impl Transport {
    /// The `-t` value.
    pub(crate) fn flag(self) -> &'static str {
        match self {
            Transport::Udp => "u1",
            Transport::Tcp => "t1",
            Transport::Tls => "l1",
        }
    }

    /// What `[transport]` becomes in the messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }
}

/// The `sipp` binary: `$KORDON_SIPP`, else `sipp` on the PATH.
pub(crate) fn sipp_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(SIPP_ENV) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("{SIPP_ENV}={} is not a file", p.display());
    }
    find_on_path("sipp")
        .context("sipp is not installed (Debian package sip-tester; scripts/test.sh installs it)")
}

fn find_on_path(program: &str) -> Result<PathBuf> {
    let paths = std::env::var_os("PATH").context("no PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .with_context(|| format!("{program} is not on the PATH"))
}

/// What the installed SIPp was built with, from `sipp -v`
/// (`SIPp v3.6.1-SCTP-PCAP-RTPSTREAM.`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Features {
    /// The version line.
    pub(crate) version: String,
    /// pcap play (`play_pcap_audio`).
    pub(crate) pcap: bool,
    /// TLS transport.
    pub(crate) tls: bool,
    /// SCTP transport.
    pub(crate) sctp: bool,
    /// `rtp_stream` / `-rtp_echo` threads.
    pub(crate) rtpstream: bool,
}

/// Runs `sipp -v` and reads its build flags.
pub(crate) fn features() -> Result<Features> {
    let out = Command::new(sipp_bin()?)
        .arg("-v")
        .stdin(Stdio::null())
        .output()
        .context("running sipp -v")?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let version = text
        .lines()
        .find(|l| l.contains("SIPp v"))
        .with_context(|| format!("no version in the output of sipp -v: {text:?}"))?
        .trim()
        .to_string();
    let flags: Vec<&str> = version
        .split('v')
        .nth(1)
        .unwrap_or_default()
        .trim_end_matches('.')
        .split('-')
        .collect();
    let has = |f: &str| flags.iter().any(|x| x.eq_ignore_ascii_case(f));
    Ok(Features {
        pcap: has("PCAP"),
        tls: has("TLS"),
        sctp: has("SCTP"),
        rtpstream: has("RTPSTREAM"),
        version,
    })
}

/// SIPp's G.711 A-law pcap: `$KORDON_SIPP_PCAP`, else the first of
/// [`PCAP_CANDIDATES`] that exists.
pub(crate) fn g711a_pcap() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(PCAP_ENV) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    PCAP_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Whether this process may open a raw socket: SIPp sends `play_pcap_audio`
/// RTP through one, which takes CAP_NET_RAW (root).
pub(crate) fn raw_sockets_allowed() -> bool {
    socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::UDP),
    )
    .is_ok()
}

/// Ok when the scenarios that play RTP can run here; else why not (a test
/// prints it and skips).
pub(crate) fn can_play_pcap() -> std::result::Result<PathBuf, String> {
    let f = features().map_err(|e| format!("{e:#}"))?;
    if !f.pcap {
        return Err(format!("{} was built without pcap play", f.version));
    }
    let pcap = g711a_pcap().ok_or_else(|| {
        format!("SIPp's g711a.pcap is in none of {PCAP_CANDIDATES:?} (set {PCAP_ENV} to its path)")
    })?;
    if !raw_sockets_allowed() {
        return Err(
            "SIPp plays RTP from a pcap through a raw socket, which needs \
                    CAP_NET_RAW (root); this process has not got it"
                .into(),
        );
    }
    Ok(pcap)
}

/// The path of scenario `name` (`"uac_pcap"` or `"uac_pcap.xml"`).
pub(crate) fn scenario(name: &str) -> PathBuf {
    let file = if name.ends_with(".xml") {
        name.to_string()
    } else {
        format!("{name}.xml")
    };
    Path::new(SCENARIO_DIR).join(file)
}

/// What a SIPp exit code means.
pub(crate) fn exit_meaning(code: Option<i32>) -> &'static str {
    match code {
        Some(0) => "every call succeeded",
        Some(1) => "at least one call failed",
        Some(97) => "stopped on an internal command or its global timeout",
        Some(99) => "stopped with no call processed",
        Some(255) | Some(-1) => "fatal error",
        Some(254) | Some(-2) => "fatal error binding a socket",
        Some(_) => "unknown exit code",
        None => "killed by a signal",
    }
}

/// One SIPp run: scenario, addresses, load, keys, traces. Build it, then
/// [`Sipp::run`] (wait for the end) or [`Sipp::spawn`] (a UAS that must be
/// listening before its caller starts).
#[derive(Clone, Debug)]
pub(crate) struct Sipp {
    /// The scenario file (`-sf`).
    pub(crate) scenario: PathBuf,
    /// A short name for the files of this run (`<name>.stdout` ...).
    pub(crate) name: String,
    /// Working directory; every trace goes there.
    pub(crate) dir: PathBuf,
    /// Where requests go (a UAC, or a UAS that sends requests first); none
    /// for a UAS.
    pub(crate) remote: Option<SocketAddr>,
    /// Local SIP address (`-i`, `-p`; port 0 = SIPp chooses).
    pub(crate) local: SocketAddr,
    /// Media address (`-mi`, `-mp`): the SDP's `c=`, and the base of
    /// `[auto_media_port]` (base + 4 × (call number − 1)).
    pub(crate) media: Option<SocketAddr>,
    /// `-t`.
    pub(crate) transport: Transport,
    /// `-m`: stop after this many calls (None: run until stopped).
    pub(crate) calls: Option<u64>,
    /// `-r` calls per second (None: SIPp's default, 10).
    pub(crate) rate: Option<f64>,
    /// `-rp` in ms (None: 1000).
    pub(crate) rate_period_ms: Option<u64>,
    /// `-l`: simultaneous calls at most.
    pub(crate) limit: Option<u64>,
    /// `-d` in ms: the length of every `<pause/>` without its own duration.
    pub(crate) pause_ms: Option<u64>,
    /// `-key NAME VALUE`, one per name.
    pub(crate) keys: BTreeMap<String, String>,
    /// `-set NAME VALUE` (the scenario must declare the global).
    pub(crate) globals: BTreeMap<String, String>,
    /// `-au`, `-ap`, `-auth_uri`.
    pub(crate) auth: Option<Auth>,
    /// Whole-run deadline: SIPp's `-timeout` (with `-timeout_error`), and
    /// [`Sipp::run`] kills it [`EXIT_GRACE`] later.
    pub(crate) timeout: Duration,
    /// `-recv_timeout` in ms: a receive without its own timeout fails the
    /// call after this long.
    pub(crate) recv_timeout_ms: Option<u64>,
    /// `-trace_msg`: every message sent and received, to `<name>_messages.log`.
    pub(crate) trace_msg: bool,
    /// `-rtp_echo`: echo RTP received on the media port.
    pub(crate) rtp_echo: bool,
    /// `-tls_cert`, `-tls_key`.
    pub(crate) tls_files: Option<(PathBuf, PathBuf)>,
    /// Anything else, appended as is.
    pub(crate) extra: Vec<String>,
}

/// Digest credentials of a UAC.
#[derive(Clone, Debug)]
pub(crate) struct Auth {
    /// `-au`.
    pub(crate) user: String,
    /// `-ap`.
    pub(crate) password: String,
    /// `-auth_uri`: the URI the digest covers (it must be the Request-URI;
    /// SIPp's default is the remote address).
    pub(crate) uri: Option<String>,
}

impl Sipp {
    /// A run of `scenario` (a name under [`SCENARIO_DIR`] or a path) with
    /// its files in `dir`, on 127.0.0.1 with a port SIPp chooses, UDP, one
    /// call, a 30 s deadline, `-trace_msg` on, and every key at its default.
    pub(crate) fn new(scenario: &str, dir: &Path) -> Sipp {
        let path = if scenario.contains('/') {
            PathBuf::from(scenario)
        } else {
            self::scenario(scenario)
        };
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "sipp".into());
        let mut keys: BTreeMap<String, String> = DEFAULT_KEYS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let pcap = g711a_pcap().unwrap_or_else(|| PathBuf::from(PCAP_CANDIDATES[0]));
        keys.insert("pcap".into(), pcap.to_string_lossy().to_string());
        Sipp {
            scenario: path,
            name,
            dir: dir.to_path_buf(),
            remote: None,
            local: (Ipv4Addr::LOCALHOST, 0).into(),
            media: None,
            transport: Transport::Udp,
            calls: Some(1),
            rate: None,
            rate_period_ms: None,
            limit: None,
            pause_ms: None,
            keys,
            globals: BTreeMap::new(),
            auth: None,
            timeout: Duration::from_secs(30),
            recv_timeout_ms: None,
            trace_msg: true,
            rtp_echo: false,
            tls_files: None,
            extra: Vec::new(),
        }
    }

    /// Names the files of this run `<name>.*` (two runs of one scenario in
    /// one directory need different names).
    pub(crate) fn name(mut self, name: &str) -> Sipp {
        self.name = name.to_string();
        self
    }

    /// Sends to `addr`; `domain` defaults to it.
    pub(crate) fn remote(mut self, addr: SocketAddr) -> Sipp {
        self.remote = Some(addr);
        self
    }

    /// Binds SIP to `ip:port` (0: a port SIPp chooses).
    pub(crate) fn local(mut self, ip: IpAddr, port: u16) -> Sipp {
        self.local = SocketAddr::new(ip, port);
        self
    }

    /// Media at `ip`, `[auto_media_port]` from `base` on.
    pub(crate) fn media(mut self, ip: IpAddr, base: u16) -> Sipp {
        self.media = Some(SocketAddr::new(ip, base));
        self
    }

    /// `-t`.
    pub(crate) fn transport(mut self, t: Transport) -> Sipp {
        self.transport = t;
        self
    }

    /// `-m`.
    pub(crate) fn calls(mut self, n: u64) -> Sipp {
        self.calls = Some(n);
        self
    }

    /// No `-m`: runs until stopped ([`Running::stop`]) or its deadline.
    pub(crate) fn unlimited(mut self) -> Sipp {
        self.calls = None;
        self
    }

    /// `-r` calls per second.
    pub(crate) fn rate(mut self, cps: f64) -> Sipp {
        self.rate = Some(cps);
        self
    }

    /// `-rp` in ms.
    pub(crate) fn rate_period_ms(mut self, ms: u64) -> Sipp {
        self.rate_period_ms = Some(ms);
        self
    }

    /// `-l`.
    pub(crate) fn limit(mut self, n: u64) -> Sipp {
        self.limit = Some(n);
        self
    }

    /// `-d` in ms (call length, ring time ... as each scenario says).
    pub(crate) fn pause_ms(mut self, ms: u64) -> Sipp {
        self.pause_ms = Some(ms);
        self
    }

    /// `-key name value` (replaces the default).
    pub(crate) fn key(mut self, name: &str, value: impl ToString) -> Sipp {
        self.keys.insert(name.to_string(), value.to_string());
        self
    }

    /// `-set name value` (a `<Global>` of the scenario).
    pub(crate) fn global(mut self, name: &str, value: impl ToString) -> Sipp {
        self.globals.insert(name.to_string(), value.to_string());
        self
    }

    /// Digest credentials; the digest covers `sip:<domain key>`.
    pub(crate) fn auth(mut self, user: &str, password: &str) -> Sipp {
        self.auth = Some(Auth {
            user: user.to_string(),
            password: password.to_string(),
            uri: None,
        });
        self
    }

    /// Whole-run deadline.
    pub(crate) fn timeout(mut self, t: Duration) -> Sipp {
        self.timeout = t;
        self
    }

    /// `-recv_timeout` in ms.
    pub(crate) fn recv_timeout_ms(mut self, ms: u64) -> Sipp {
        self.recv_timeout_ms = Some(ms);
        self
    }

    /// `-trace_msg` on or off (off for load runs: the log grows by every
    /// message).
    pub(crate) fn trace_msg(mut self, on: bool) -> Sipp {
        self.trace_msg = on;
        self
    }

    /// `-rtp_echo`.
    pub(crate) fn rtp_echo(mut self) -> Sipp {
        self.rtp_echo = true;
        self
    }

    /// `-tls_cert`, `-tls_key`.
    pub(crate) fn tls_files(mut self, cert: &Path, key: &Path) -> Sipp {
        self.tls_files = Some((cert.to_path_buf(), key.to_path_buf()));
        self
    }

    /// Appends raw arguments.
    pub(crate) fn arg(mut self, a: impl ToString) -> Sipp {
        self.extra.push(a.to_string());
        self
    }

    /// The file `<dir>/<name><suffix>`.
    fn file(&self, suffix: &str) -> PathBuf {
        self.dir.join(format!("{}{suffix}", self.name))
    }

    /// Paths of this run's files.
    pub(crate) fn files(&self) -> Files {
        Files {
            stdout: self.file(".stdout"),
            errors: self.file("_errors.log"),
            messages: self.trace_msg.then(|| self.file("_messages.log")),
            stat: self.file("_stat.csv"),
            screen: self.file("_screen.log"),
        }
    }

    /// The arguments (without the program), in the order SIPp gets them.
    pub(crate) fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
        if let Some(r) = self.remote {
            push(&[&r.to_string()]);
        }
        push(&["-sf", &self.scenario.to_string_lossy()]);
        push(&["-t", self.transport.flag()]);
        push(&["-i", &self.local.ip().to_string()]);
        if self.local.port() != 0 {
            push(&["-p", &self.local.port().to_string()]);
        }
        if let Some(m) = self.media {
            push(&["-mi", &m.ip().to_string(), "-mp", &m.port().to_string()]);
        }
        if let Some(n) = self.calls {
            push(&["-m", &n.to_string()]);
        }
        if let Some(r) = self.rate {
            push(&["-r", &format_rate(r)]);
        }
        if let Some(p) = self.rate_period_ms {
            push(&["-rp", &p.to_string()]);
        }
        if let Some(l) = self.limit {
            push(&["-l", &l.to_string()]);
        }
        if let Some(d) = self.pause_ms {
            push(&["-d", &d.to_string()]);
        }
        let mut keys = self.keys.clone();
        if !keys.contains_key("domain") {
            let domain = match self.remote {
                Some(r) => r.to_string(),
                None => self.local.ip().to_string(),
            };
            keys.insert("domain".into(), domain);
        }
        for (k, v) in &keys {
            push(&["-key", k, v]);
        }
        for (k, v) in &self.globals {
            push(&["-set", k, v]);
        }
        if let Some(auth) = &self.auth {
            let uri = auth.uri.clone().unwrap_or_else(|| keys["domain"].clone());
            push(&["-au", &auth.user, "-ap", &auth.password, "-auth_uri", &uri]);
        }
        let secs = self.timeout.as_secs().max(1);
        push(&["-timeout", &format!("{secs}s"), "-timeout_error"]);
        if let Some(ms) = self.recv_timeout_ms {
            push(&["-recv_timeout", &ms.to_string()]);
        }
        if self.rtp_echo {
            push(&["-rtp_echo"]);
        }
        if let Some((cert, key)) = &self.tls_files {
            push(&[
                "-tls_cert",
                &cert.to_string_lossy(),
                "-tls_key",
                &key.to_string_lossy(),
            ]);
        }
        let f = self.files();
        push(&["-nostdin"]);
        push(&["-trace_err", "-error_file", &f.errors.to_string_lossy()]);
        push(&["-trace_stat", "-stf", &f.stat.to_string_lossy(), "-fd", "1"]);
        push(&["-trace_screen", "-screen_file", &f.screen.to_string_lossy()]);
        if let Some(m) = &f.messages {
            push(&["-trace_msg", "-message_file", &m.to_string_lossy()]);
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    /// The command line as one shell-like string (for messages).
    pub(crate) fn command_line(&self) -> String {
        let mut s = sipp_bin()
            .map(|p| p.to_string_lossy().to_string())
            .unwrap_or_else(|_| "sipp".into());
        for a in self.args() {
            s.push(' ');
            if a.is_empty() || a.contains([' ', '"', '\'', ';', '&', '|', '$', '*']) {
                s.push('\'');
                s.push_str(&a.replace('\'', "'\\''"));
                s.push('\'');
            } else {
                s.push_str(&a);
            }
        }
        s
    }

    /// Starts SIPp in the background (output to `<name>.stdout`).
    pub(crate) fn spawn(&self) -> Result<Running> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        if !self.scenario.is_file() {
            bail!("no scenario {}", self.scenario.display());
        }
        let files = self.files();
        for f in [&files.errors, &files.stat, &files.screen] {
            let _ = std::fs::remove_file(f);
        }
        if let Some(m) = &files.messages {
            let _ = std::fs::remove_file(m);
        }
        let out = File::create(&files.stdout)
            .with_context(|| format!("creating {}", files.stdout.display()))?;
        let err = out.try_clone()?;
        let child = Command::new(sipp_bin()?)
            .args(self.args())
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", self.command_line()))?;
        Ok(Running {
            child: Some(child),
            sipp: self.clone(),
            started: Instant::now(),
        })
    }

    /// Runs SIPp to its end (or its deadline) and reads the results.
    pub(crate) fn run(&self) -> Result<Outcome> {
        self.spawn()?.wait()
    }
}

fn format_rate(r: f64) -> String {
    if r.fract() == 0.0 {
        format!("{}", r as u64)
    } else {
        format!("{r}")
    }
}

/// The files of a run.
#[derive(Clone, Debug)]
pub(crate) struct Files {
    /// stdout and stderr (the screens SIPp prints, fatal errors).
    pub(crate) stdout: PathBuf,
    /// `-trace_err`: unexpected messages, failed checks, timeouts.
    pub(crate) errors: PathBuf,
    /// `-trace_msg`: every message sent and received.
    pub(crate) messages: Option<PathBuf>,
    /// `-trace_stat`: the statistics, a CSV row per second and at the end.
    pub(crate) stat: PathBuf,
    /// `-trace_screen`: the screens when SIPp ended.
    pub(crate) screen: PathBuf,
}

/// A SIPp process in the background; killed on drop.
#[derive(Debug)]
pub(crate) struct Running {
    child: Option<Child>,
    /// The run it is.
    pub(crate) sipp: Sipp,
    started: Instant,
}

impl Running {
    /// Its process id.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it has exited.
    pub(crate) fn exited(&mut self) -> bool {
        match &mut self.child {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// Waits until its SIP socket listens (UDP: bound; TCP: listening), or
    /// fails with its output if it exits or `timeout` passes. IPv4 only.
    pub(crate) fn wait_listening(&mut self, timeout: Duration) -> Result<()> {
        let addr = self.sipp.local;
        if addr.port() == 0 {
            bail!("{}: no fixed local port to wait for", self.sipp.name);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if listening(self.sipp.transport, addr) {
                return Ok(());
            }
            if self.exited() {
                bail!(
                    "{} exited before listening on {addr}:\n{}",
                    self.sipp.name,
                    read(&self.sipp.files().stdout)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} not listening on {addr} within {timeout:?}:\n{}",
                    self.sipp.name,
                    read(&self.sipp.files().stdout)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the end (killing it [`EXIT_GRACE`] after its deadline) and
    /// reads the results.
    pub(crate) fn wait(mut self) -> Result<Outcome> {
        let deadline = self.started + self.sipp.timeout + EXIT_GRACE;
        let mut child = self.child.take().context("already waited for")?;
        let mut killed = false;
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                killed = true;
                break child.wait()?;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Ok(Outcome::read(
            &self.sipp,
            status,
            killed,
            self.started.elapsed(),
        ))
    }

    /// Asks it to stop (SIGUSR1: no new calls, the running ones end), then
    /// waits as [`Running::wait`] does, at most `grace` before killing it.
    pub(crate) fn stop(mut self, grace: Duration) -> Result<Outcome> {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args(["-USR1", &pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // Waiting goes by the run's deadline: make it `grace` from now.
        self.sipp.timeout = self.started.elapsed() + grace;
        let deadline = Instant::now() + grace;
        let mut child = self.child.take().context("already waited for")?;
        let mut killed = false;
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                killed = true;
                break child.wait()?;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Ok(Outcome::read(
            &self.sipp,
            status,
            killed,
            self.started.elapsed(),
        ))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether something listens on `addr` for `transport`, from /proc/net/udp
/// or /proc/net/tcp (IPv4): a probe that does not take the port.
pub(crate) fn listening(transport: Transport, addr: SocketAddr) -> bool {
    let SocketAddr::V4(a) = addr else {
        return false;
    };
    let (table, state) = match transport {
        Transport::Udp => ("/proc/net/udp", None),
        Transport::Tcp | Transport::Tls => ("/proc/net/tcp", Some("0A")),
    };
    let want = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(a.ip().octets()),
        a.port()
    );
    std::fs::read_to_string(table).is_ok_and(|t| {
        t.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&want.as_str()) && state.is_none_or(|s| f.get(3) == Some(&s))
        })
    })
}

/// Starts `uas`, waits until it listens, runs `uac` to its end, then waits
/// for `uas` (which must have `-m` set, or it runs to its deadline).
pub(crate) fn run_pair(uas: &Sipp, uac: &Sipp) -> Result<(Outcome, Outcome)> {
    let mut server = uas.spawn()?;
    server.wait_listening(Duration::from_secs(10))?;
    let client = uac.run()?;
    let server = server.wait()?;
    Ok((server, client))
}

/// The statistics of a run (cumulative values).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stats {
    /// Calls created (incoming and outgoing).
    pub(crate) created: u64,
    /// Calls that reached the end of the scenario with every check passed.
    pub(crate) successful: u64,
    /// Calls that failed.
    pub(crate) failed: u64,
    /// Retransmissions SIPp sent.
    pub(crate) retransmissions: u64,
    /// Failed calls by reason (`FailedRegexpDoesntMatch`, ...), non-zero only
    /// (CSV only).
    pub(crate) failures: BTreeMap<String, u64>,
    /// Mean response times by name (`rtd` of the scenario: "1", "session",
    /// ...) (CSV only).
    pub(crate) response_times: BTreeMap<String, Duration>,
}

impl Stats {
    /// From a `-trace_stat` CSV: the last row (SIPp writes one per `-fd`
    /// period and one at the end).
    pub(crate) fn from_csv(text: &str) -> Option<Stats> {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<&str> = lines.next()?.split(';').map(str::trim).collect();
        let row: Vec<&str> = lines.next_back()?.split(';').map(str::trim).collect();
        let get = |name: &str| -> Option<&str> {
            let i = header.iter().position(|h| *h == name)?;
            row.get(i).copied()
        };
        let num = |name: &str| get(name).and_then(|v| v.parse::<u64>().ok());
        let mut s = Stats {
            created: num("TotalCallCreated")?,
            successful: num("SuccessfulCall(C)")?,
            failed: num("FailedCall(C)")?,
            retransmissions: num("Retransmissions(C)").unwrap_or(0),
            ..Stats::default()
        };
        for (i, h) in header.iter().enumerate() {
            let Some(v) = row.get(i) else { continue };
            if let Some(reason) = h.strip_suffix("(C)") {
                if reason.starts_with("Failed") && reason != "FailedCall" {
                    if let Ok(n) = v.parse::<u64>() {
                        if n > 0 {
                            s.failures.insert(reason.to_string(), n);
                        }
                    }
                }
                if let Some(name) = reason.strip_prefix("ResponseTime") {
                    if !name.ends_with("StDev") {
                        if let Some(d) = parse_sipp_duration(v) {
                            s.response_times.insert(name.to_string(), d);
                        }
                    }
                }
            }
        }
        Some(s)
    }

    /// From a `-trace_screen` dump: the cumulative column of the statistics
    /// screen (no failure reasons, no response times).
    pub(crate) fn from_screen(text: &str) -> Option<Stats> {
        let cumulative = |label: &str| -> Option<u64> {
            let line = text.lines().rfind(|l| l.trim_start().starts_with(label))?;
            line.split('|').nth(2)?.trim().parse().ok()
        };
        Some(Stats {
            created: cumulative("Total Calls created")?,
            successful: cumulative("Successful call")?,
            failed: cumulative("Failed call")?,
            ..Stats::default()
        })
    }
}

/// `HH:MM:SS:uuuuuu` (SIPp's CSV time format).
fn parse_sipp_duration(v: &str) -> Option<Duration> {
    let p: Vec<u64> = v
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, s, us] = p[..] else { return None };
    Some(Duration::from_micros(
        ((h * 60 + m) * 60 + s) * 1_000_000 + us,
    ))
}

/// Which way a traced message went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// SIPp sent it.
    Sent,
    /// SIPp received it.
    Received,
}

/// One message of a `-trace_msg` log.
#[derive(Clone, Debug)]
pub(crate) struct Traced {
    /// Sent or received.
    pub(crate) direction: Direction,
    /// The SIP message, CRLF line ends as on the wire.
    pub(crate) text: String,
}

impl Traced {
    /// The first line (request line or status line).
    pub(crate) fn first_line(&self) -> &str {
        self.text.lines().next().unwrap_or_default().trim_end()
    }

    /// The request method, or None for a response.
    pub(crate) fn method(&self) -> Option<&str> {
        let l = self.first_line();
        (!l.starts_with("SIP/2.0")).then(|| l.split(' ').next().unwrap_or_default())
    }

    /// The status code of a response.
    pub(crate) fn status(&self) -> Option<u16> {
        self.first_line()
            .strip_prefix("SIP/2.0 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse().ok())
    }

    /// The values of header `name` (case-insensitive; not the compact form).
    pub(crate) fn headers(&self, name: &str) -> Vec<&str> {
        let head = self.text.split("\r\n\r\n").next().unwrap_or_default();
        head.lines()
            .skip(1)
            .filter_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
            })
            .collect()
    }

    /// The body (after the blank line).
    pub(crate) fn body(&self) -> &str {
        self.text.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }
}

/// Splits a `-trace_msg` log into messages. Each entry is a dashed line with
/// a timestamp, `<TRANSPORT> message received [N] bytes :` or `...
/// message sent (N bytes):`, a blank line, the message.
pub(crate) fn parse_messages(log: &str) -> Vec<Traced> {
    let mut out = Vec::new();
    for entry in log
        .split("----------------------------------------------- ")
        .skip(1)
    {
        let mut parts = entry.splitn(3, '\n');
        let _stamp = parts.next();
        let Some(what) = parts.next() else { continue };
        let direction = if what.contains("message received") {
            Direction::Received
        } else if what.contains("message sent") {
            Direction::Sent
        } else {
            continue;
        };
        let text = parts.next().unwrap_or_default();
        let text = text.strip_prefix('\n').unwrap_or(text);
        // SIPp ends each entry with a line end of its own, after the
        // message's last CRLF.
        let text = text.strip_suffix('\n').unwrap_or(text);
        out.push(Traced {
            direction,
            text: text.to_string(),
        });
    }
    out
}

/// What a run left: exit status, statistics, logs.
#[derive(Clone, Debug)]
pub(crate) struct Outcome {
    /// The command line.
    pub(crate) command: String,
    /// SIPp's exit status.
    pub(crate) status: ExitStatus,
    /// Whether the helper killed it at its deadline.
    pub(crate) killed: bool,
    /// How long it ran.
    pub(crate) elapsed: Duration,
    /// Statistics from the CSV, else from the screen dump (None when SIPp
    /// wrote neither, e.g. on a fatal error).
    pub(crate) stats: Option<Stats>,
    /// The files.
    pub(crate) files: Files,
}

impl Outcome {
    fn read(sipp: &Sipp, status: ExitStatus, killed: bool, elapsed: Duration) -> Outcome {
        let files = sipp.files();
        let stats = Stats::from_csv(&read(&files.stat))
            .or_else(|| Stats::from_screen(&read(&files.screen)));
        Outcome {
            command: sipp.command_line(),
            status,
            killed,
            elapsed,
            stats,
            files,
        }
    }

    /// Exit code 0, not killed: every call succeeded.
    pub(crate) fn success(&self) -> bool {
        !self.killed && self.status.code() == Some(0)
    }

    /// The statistics, or an error saying there are none.
    pub(crate) fn stats(&self) -> Result<&Stats> {
        self.stats
            .as_ref()
            .with_context(|| format!("no statistics from SIPp\n{}", self.report()))
    }

    /// `(successful, failed)` calls.
    pub(crate) fn counts(&self) -> Result<(u64, u64)> {
        let s = self.stats()?;
        Ok((s.successful, s.failed))
    }

    /// The `-trace_err` log.
    pub(crate) fn errors(&self) -> String {
        read(&self.files.errors)
    }

    /// What SIPp printed.
    pub(crate) fn stdout(&self) -> String {
        read(&self.files.stdout)
    }

    /// Every traced message (empty without `-trace_msg`).
    pub(crate) fn messages(&self) -> Vec<Traced> {
        self.files
            .messages
            .as_ref()
            .map(|p| parse_messages(&read(p)))
            .unwrap_or_default()
    }

    /// The messages SIPp received.
    pub(crate) fn received(&self) -> Vec<Traced> {
        self.messages()
            .into_iter()
            .filter(|m| m.direction == Direction::Received)
            .collect()
    }

    /// Received messages that contain `needle` (e.g. the other side's
    /// address, Call-ID or tag: what an SBC must not let through).
    pub(crate) fn received_containing(&self, needle: &str) -> Vec<Traced> {
        self.received()
            .into_iter()
            .filter(|m| m.text.contains(needle))
            .collect()
    }

    /// Everything a failure message needs: command, exit code and its
    /// meaning, statistics, the error log and the end of the output.
    pub(crate) fn report(&self) -> String {
        let mut s = String::new();
        let code = self.status.code();
        let _ = writeln!(s, "command: {}", self.command);
        let _ = writeln!(
            s,
            "exit: {:?} ({}){}; ran {:.1?}",
            code,
            exit_meaning(code),
            if self.killed {
                ", killed at its deadline"
            } else {
                ""
            },
            self.elapsed
        );
        let _ = writeln!(s, "stats: {:?}", self.stats);
        let errors = self.errors();
        if !errors.trim().is_empty() {
            let _ = writeln!(
                s,
                "---- {} ----\n{}",
                self.files.errors.display(),
                tail(&errors, 4000)
            );
        }
        let out = self.stdout();
        let _ = writeln!(
            s,
            "---- {} (end) ----\n{}",
            self.files.stdout.display(),
            tail(&out, 3000)
        );
        s
    }

    /// Panics with [`Outcome::report`] unless every call succeeded and
    /// there were `calls` of them.
    pub(crate) fn assert_calls(&self, what: &str, calls: u64) {
        let ok = self.success()
            && self
                .stats
                .as_ref()
                .is_some_and(|s| s.successful == calls && s.failed == 0);
        assert!(
            ok,
            "{what}: expected {calls} successful calls\n{}",
            self.report()
        );
    }
}

fn read(p: &Path) -> String {
    std::fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).to_string())
        .unwrap_or_default()
}

fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}
