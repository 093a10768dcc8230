//! Harness of the data plane's end-to-end tests: runs the real `kordon dataplane`
//! binary on a generated configuration, talks to it over gRPC and exchanges real
//! UDP datagrams with it through loopback peers.
//!
//! What it gives a test: [`Kordon`] (the child process, killed on drop, with a
//! blocking gRPC client), [`Config`] (a TOML file with free ports), [`Peer`] (a
//! UDP socket with receive-with-deadline helpers), an RTP/RTCP packet builder and
//! small waiting helpers.
//!
//! Invariants: a test never sleeps to synchronise. It waits for an event (a
//! datagram, a counter, a gRPC answer, a stream event) with a deadline and fails
//! with a message saying what it waited for. The only fixed waits are absence
//! checks ([`Peer::expect_silence`]), which always come after a counter proved
//! that the packets in question were handled. Each [`Config`] gets its own block
//! of media ports, so tests run in parallel.
#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::fs::File;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kordon_proto::v1 as pb;
use kordon_proto::v1::dataplane_client::DataplaneClient;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// How long an expected datagram may take.
pub(crate) const RECV_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a counter or a state may take to reach its expected value.
pub(crate) const WAIT: Duration = Duration::from_secs(5);
/// How long a peer listens to show that nothing arrives (after a counter proved
/// the packets were handled; see the module doc).
pub(crate) const SILENCE: Duration = Duration::from_millis(150);
/// RTP payload bytes of [`rtp`] packets (20 ms of G.711).
pub(crate) const PAYLOAD_LEN: usize = 160;

/// First port of the media port blocks, below Linux's ephemeral range
/// (32768-60999) so that peers' sockets never take a media port, and away from
/// Kordon's default ranges (16384-32767).
const MEDIA_BASE: u16 = 10_000;
/// Ports per [`Config`]: two interfaces of 32 ports (16 pairs) each.
const MEDIA_BLOCK: u16 = 64;
/// Blocks between `MEDIA_BASE` and 16000.
const MEDIA_BLOCKS: u32 = 93;

static NEXT_BLOCK: AtomicU32 = AtomicU32::new(0);
static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

/// The first port of a media block of this process. Blocks are unique within a
/// test binary (cargo runs binaries one after another); the process id spreads
/// concurrent runs of the suite over different blocks.
fn media_block() -> u16 {
    let n = NEXT_BLOCK.fetch_add(1, Ordering::Relaxed);
    assert!(
        n < MEDIA_BLOCKS,
        "more Kordon instances than media port blocks"
    );
    let k = (std::process::id().wrapping_mul(7) + n) % MEDIA_BLOCKS;
    MEDIA_BASE + k as u16 * MEDIA_BLOCK
}

/// A free TCP port on 127.0.0.1 (the kernel's choice; free when returned).
pub(crate) fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// A fresh directory under the system's temp dir.
pub(crate) fn temp_dir(tag: &str) -> PathBuf {
    let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("kordon-e2e-{}-{n}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a temp dir");
    dir
}

/// Serialises the CPU-heavy tests of one test binary: each blasts packets from
/// several threads, and two at once on a small machine only starve each other.
pub(crate) fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A panicking test poisons the lock; the next one may still run.
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

/// The binary under test.
pub(crate) fn kordon_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kordon")
}

/// One media interface of a [`Config`].
#[derive(Clone, Debug)]
pub(crate) struct Interface {
    /// Name used in `LegSpec.interface`.
    pub(crate) name: String,
    /// Bind address.
    pub(crate) bind: String,
    /// Advertised address, when not the bind address.
    pub(crate) advertised: Option<String>,
    /// First port.
    pub(crate) port_min: u16,
    /// Last port.
    pub(crate) port_max: u16,
}

/// A data plane configuration. [`Config::new`] gives two interfaces on
/// 127.0.0.1, `edge` and `core`, of 16 port pairs each, one worker, no CPU
/// pinning; [`Config::with`] adds `[dataplane]` keys.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    /// `dataplane.workers`.
    pub(crate) workers: usize,
    /// `dataplane.backend`.
    pub(crate) backend: &'static str,
    /// Media interfaces.
    pub(crate) interfaces: Vec<Interface>,
    /// Extra `key = value` lines of the `[dataplane]` table.
    pub(crate) lines: Vec<String>,
    /// First port of this configuration's media block.
    pub(crate) block: u16,
    /// The subcommand: `dataplane` (default) or `run` (with SIP).
    pub(crate) subcommand: &'static str,
    /// TOML appended after the generated tables (`[sip]`, `[cdr]`...).
    pub(crate) extra: String,
}

impl Config {
    /// One worker, backend `auto`, interfaces `edge` (block..+31) and `core`
    /// (block+32..+63).
    pub(crate) fn new() -> Config {
        let block = media_block();
        Config {
            workers: 1,
            backend: "auto",
            interfaces: vec![
                Interface {
                    name: "edge".into(),
                    bind: "127.0.0.1".into(),
                    advertised: None,
                    port_min: block,
                    port_max: block + MEDIA_BLOCK / 2 - 1,
                },
                Interface {
                    name: "core".into(),
                    bind: "127.0.0.1".into(),
                    advertised: None,
                    port_min: block + MEDIA_BLOCK / 2,
                    port_max: block + MEDIA_BLOCK - 1,
                },
            ],
            lines: Vec::new(),
            block,
            subcommand: "dataplane",
            extra: String::new(),
        }
    }

    /// Runs `kordon run` (data plane, SIP, CDR) with `extra` TOML appended;
    /// the data directory is the instance's temporary directory.
    pub(crate) fn run_with(mut self, extra: &str) -> Config {
        self.subcommand = "run";
        self.extra = extra.to_string();
        self
    }

    /// Adds a `key = value` line to `[dataplane]`.
    pub(crate) fn with(mut self, line: &str) -> Config {
        self.lines.push(line.to_string());
        self
    }

    /// Sets the worker count.
    pub(crate) fn workers(mut self, n: usize) -> Config {
        self.workers = n;
        self
    }

    /// Sets the advertised address of interface `name`.
    pub(crate) fn with_advertised(mut self, name: &str, ip: &str) -> Config {
        let i = self
            .interfaces
            .iter_mut()
            .find(|i| i.name == name)
            .expect("interface exists");
        i.advertised = Some(ip.to_string());
        self
    }

    /// Sets the backend (`auto`, `io_uring`, `mmsg`).
    pub(crate) fn backend(mut self, b: &'static str) -> Config {
        self.backend = b;
        self
    }

    /// The TOML text, listening on the given gRPC and metrics ports.
    pub(crate) fn toml(&self, grpc: u16, metrics: u16) -> String {
        let mut t = String::new();
        t.push_str("[general]\nlog = \"info\"\n\n[dataplane]\n");
        t.push_str(&format!(
            "workers = {}\npin_workers = false\n",
            self.workers
        ));
        t.push_str(&format!("backend = \"{}\"\n", self.backend));
        t.push_str(&format!("grpc_listen = \"127.0.0.1:{grpc}\"\n"));
        for l in &self.lines {
            t.push_str(l);
            t.push('\n');
        }
        for i in &self.interfaces {
            t.push_str(&format!(
                "\n[dataplane.interfaces.{}]\nbind = \"{}\"\nport_min = {}\nport_max = {}\n",
                i.name, i.bind, i.port_min, i.port_max
            ));
            if let Some(adv) = &i.advertised {
                t.push_str(&format!("advertised = \"{adv}\"\n"));
            }
        }
        t.push_str(&format!("\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n"));
        // Instances run in parallel: the ng front door is off unless a test
        // turns it on (Config::for_ng) on a port of its own.
        if !self.lines.iter().any(|l| l.contains("[ng]")) {
            t.push_str("\n[ng]\nlisten = \"\"\n");
        }
        // Likewise the verification node's fixed default ports: off unless
        // the test's own TOML has a [verify] section.
        if !self.extra.contains("[verify]") {
            t.push_str("\n[verify]\nenabled = false\n");
        }
        t.push('\n');
        t.push_str(&self.extra);
        t
    }
}

/// Events of one WatchEvents stream, forwarded to a channel by a task.
pub(crate) struct Events {
    rx: mpsc::Receiver<pb::Event>,
}

impl Events {
    /// The next event if one is already here.
    pub(crate) fn try_next(&self) -> Option<pb::Event> {
        self.rx.try_recv().ok()
    }

    /// The first event that satisfies `pred`, skipping others; panics after
    /// `timeout` naming `what`.
    pub(crate) fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&pb::Event) -> bool,
    ) -> pb::Event {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(ev) if pred(&ev) => return ev,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("no event {what} within {timeout:?}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("event stream ended while waiting for {what}")
                }
            }
        }
    }
}

/// A running `kordon dataplane`, killed on drop, with a blocking gRPC client.
pub(crate) struct Kordon {
    child: Child,
    dir: PathBuf,
    log: PathBuf,
    out: PathBuf,
    /// gRPC listener.
    pub(crate) grpc: SocketAddr,
    /// Metrics listener.
    pub(crate) metrics: SocketAddr,
    /// The configuration it runs.
    pub(crate) config: Config,
    rt: tokio::runtime::Runtime,
    client: DataplaneClient<Channel>,
}

/// Why a start attempt failed.
enum StartFailure {
    /// A listener port was taken between choosing and binding it: try others.
    PortRace(String),
    /// Anything else.
    Fatal(String),
}

impl Kordon {
    /// Starts Kordon on `config` and waits (10 s at most) until it answers
    /// Stats. Listener ports are chosen free just before; if another program
    /// takes one in between, Kordon exits and is started again on others.
    pub(crate) fn start(config: Config) -> Kordon {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("building a tokio runtime");
        let mut rt = Some(rt);
        let mut last = String::new();
        for _ in 0..3 {
            let r = rt.take().expect("runtime is given back on failure");
            match Kordon::try_start(&config, r) {
                Ok(k) => return k,
                Err((r, StartFailure::PortRace(log))) => {
                    last = log;
                    rt = Some(r);
                }
                Err((_, StartFailure::Fatal(msg))) => panic!("{msg}"),
            }
        }
        panic!("kordon could not bind its listeners three times; last log:\n{last}");
    }

    fn try_start(
        config: &Config,
        rt: tokio::runtime::Runtime,
    ) -> Result<Kordon, (tokio::runtime::Runtime, StartFailure)> {
        let (grpc_port, metrics_port) = (free_tcp_port(), free_tcp_port());
        let dir = temp_dir("dp");
        let cfg_path = dir.join("kordon.toml");
        let mut text = config.toml(grpc_port, metrics_port);
        text = text.replacen(
            "[general]\n",
            &format!(
                "[general]\ndata_dir = {:?}\n",
                dir.join("data").display().to_string()
            ),
            1,
        );
        std::fs::write(&cfg_path, text).expect("writing the config");
        let log = dir.join("kordon.stderr");
        let out = dir.join("kordon.stdout");
        let mut cmd = Command::new(kordon_bin());
        cmd.arg("--config")
            .arg(&cfg_path)
            .arg(config.subcommand)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(File::create(&out).expect("creating the stdout file"))
            .stderr(File::create(&log).expect("creating the stderr file"));
        let mut child = cmd.spawn().expect("spawning kordon");
        let grpc: SocketAddr = ([127, 0, 0, 1], grpc_port).into();
        let url = format!("http://{grpc}");
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = loop {
            if let Ok(Some(status)) = child.try_wait() {
                let text = read_log(&log) + &read_log(&out);
                let _ = std::fs::remove_dir_all(&dir);
                if text.contains("binding gRPC listener")
                    || text.contains("binding metrics listener")
                {
                    return Err((rt, StartFailure::PortRace(text)));
                }
                return Err((
                    rt,
                    StartFailure::Fatal(format!(
                        "kordon exited ({status}) during start-up:\n{text}"
                    )),
                ));
            }
            let attempt = rt.block_on(async {
                let mut c = DataplaneClient::connect(url.clone()).await.ok()?;
                c.stats(pb::StatsRequest {}).await.ok()?;
                Some(c)
            });
            if let Some(c) = attempt {
                break c;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                let text = read_log(&log) + &read_log(&out);
                return Err((
                    rt,
                    StartFailure::Fatal(format!(
                        "kordon did not answer Stats within 10 s:\n{text}"
                    )),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Ok(Kordon {
            child,
            dir,
            log,
            out,
            grpc,
            metrics: ([127, 0, 0, 1], metrics_port).into(),
            config: config.clone(),
            rt,
            client,
        })
    }

    /// What Kordon wrote so far, stderr then stdout (wherever its log goes).
    pub(crate) fn log(&self) -> String {
        read_log(&self.log) + &read_log(&self.out)
    }

    /// What Kordon wrote to stderr so far.
    pub(crate) fn stderr(&self) -> String {
        read_log(&self.log)
    }

    /// What Kordon wrote to stdout so far.
    pub(crate) fn stdout(&self) -> String {
        read_log(&self.out)
    }

    /// The temp directory of this instance.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs a future on this instance's runtime.
    pub(crate) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// A clone of the gRPC client (for requests with custom metadata).
    pub(crate) fn client(&self) -> DataplaneClient<Channel> {
        self.client.clone()
    }

    /// CreateSession; the created session.
    pub(crate) fn create(&self, req: pb::CreateSessionRequest) -> Result<pb::SessionInfo, Status> {
        let mut c = self.client.clone();
        self.rt.block_on(async move {
            let r = c.create_session(req).await?.into_inner();
            r.session
                .ok_or_else(|| Status::internal("CreateSession answered no session"))
        })
    }

    /// UpdateSession.
    pub(crate) fn update(&self, req: pb::UpdateSessionRequest) -> Result<pb::SessionInfo, Status> {
        let mut c = self.client.clone();
        self.rt
            .block_on(async move { Ok(c.update_session(req).await?.into_inner()) })
    }

    /// DeleteSession; the final snapshot.
    pub(crate) fn delete(&self, id: &str) -> Result<pb::SessionInfo, Status> {
        let mut c = self.client.clone();
        let req = pb::DeleteSessionRequest {
            session_id: id.to_string(),
        };
        self.rt.block_on(async move {
            let r = c.delete_session(req).await?.into_inner();
            r.session
                .ok_or_else(|| Status::internal("DeleteSession answered no session"))
        })
    }

    /// GetSession.
    pub(crate) fn get(&self, id: &str) -> Result<pb::SessionInfo, Status> {
        let mut c = self.client.clone();
        let req = pb::GetSessionRequest {
            session_id: id.to_string(),
        };
        self.rt
            .block_on(async move { Ok(c.get_session(req).await?.into_inner()) })
    }

    /// ListSessions.
    pub(crate) fn list(&self) -> Vec<pb::SessionInfo> {
        let mut c = self.client.clone();
        self.rt
            .block_on(async move { c.list_sessions(pb::ListSessionsRequest {}).await })
            .expect("ListSessions")
            .into_inner()
            .sessions
    }

    /// Stats.
    pub(crate) fn stats(&self) -> pb::StatsResponse {
        let mut c = self.client.clone();
        self.rt
            .block_on(async move { c.stats(pb::StatsRequest {}).await })
            .expect("Stats")
            .into_inner()
    }

    /// The summed worker counters.
    pub(crate) fn total(&self) -> pb::WorkerStats {
        self.stats().total.expect("Stats has a total")
    }

    /// Subscribes to WatchEvents. Returns once the subscription is in place, so
    /// every event raised afterwards is seen.
    pub(crate) fn watch(&self) -> Events {
        let mut c = self.client.clone();
        let mut stream = self
            .rt
            .block_on(async move { c.watch_events(pb::WatchEventsRequest {}).await })
            .expect("WatchEvents")
            .into_inner();
        let (tx, rx) = mpsc::channel();
        self.rt.spawn(async move {
            while let Ok(Some(ev)) = stream.message().await {
                if tx.send(ev).is_err() {
                    break;
                }
            }
        });
        Events { rx }
    }

    /// Polls GetSession until `pred` holds; panics after [`WAIT`] naming `what`
    /// and showing the last answer.
    pub(crate) fn wait_session(
        &self,
        id: &str,
        what: &str,
        mut pred: impl FnMut(&pb::SessionInfo) -> bool,
    ) -> pb::SessionInfo {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.get(id).expect("GetSession");
            if pred(&s) {
                return s;
            }
            if Instant::now() >= deadline {
                panic!("session {id}: not {what} within {WAIT:?}; last state: {s:#?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Polls Stats until `pred` holds on the total; panics after `timeout`.
    pub(crate) fn wait_total(
        &self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&pb::WorkerStats) -> bool,
    ) -> pb::WorkerStats {
        let deadline = Instant::now() + timeout;
        loop {
            let t = self.total();
            if pred(&t) {
                return t;
            }
            if Instant::now() >= deadline {
                panic!("stats: not {what} within {timeout:?}; last: {t:#?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Creates a session between two peers: leg A on `edge` towards `a`, leg B
    /// on `core` towards `b`, everything else default.
    pub(crate) fn call(&self, id: &str, a: &Peer, b: &Peer) -> Call {
        let info = self
            .create(session(id, leg("edge", a.addr()), leg("core", b.addr())))
            .unwrap_or_else(|e| panic!("creating {id}: {e}"));
        Call::new(info)
    }
}

impl Kordon {
    /// Sends SIGTERM and waits (15 s at most) for the exit; its exit code.
    pub(crate) fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Kordon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- kordon log ({}) ----\n{}", self.grpc, self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn read_log(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// A created session's addresses.
#[derive(Clone, Debug)]
pub(crate) struct Call {
    /// Session id.
    pub(crate) id: String,
    /// Where peer A sends RTP (leg A's local RTP).
    pub(crate) a_local: SocketAddr,
    /// Where peer B sends RTP (leg B's local RTP).
    pub(crate) b_local: SocketAddr,
    /// The create answer.
    pub(crate) info: pb::SessionInfo,
}

impl Call {
    /// From a create answer.
    pub(crate) fn new(info: pb::SessionInfo) -> Call {
        Call {
            id: info.session_id.clone(),
            a_local: addr(&leg_a(&info).local_rtp),
            b_local: addr(&leg_b(&info).local_rtp),
            info,
        }
    }

    /// Leg A's local RTCP address.
    pub(crate) fn a_local_rtcp(&self) -> SocketAddr {
        addr(&leg_a(&self.info).local_rtcp)
    }

    /// Leg B's local RTCP address.
    pub(crate) fn b_local_rtcp(&self) -> SocketAddr {
        addr(&leg_b(&self.info).local_rtcp)
    }
}

/// A UDP peer (a phone, a trunk, an attacker) on loopback.
#[derive(Debug)]
pub(crate) struct Peer {
    sock: UdpSocket,
}

impl Peer {
    /// A socket on `ip` (e.g. "127.0.0.1", "127.0.0.2"), kernel-chosen port.
    pub(crate) fn bind(ip: &str) -> Peer {
        let sock = UdpSocket::bind((ip, 0)).unwrap_or_else(|e| panic!("binding {ip}:0: {e}"));
        Peer { sock }
    }

    /// An RTP socket on an even port and its RTCP socket on the port above.
    pub(crate) fn pair(ip: &str) -> (Peer, Peer) {
        for _ in 0..200 {
            let rtp = Peer::bind(ip);
            let p = rtp.addr().port();
            if !p.is_multiple_of(2) || p == u16::MAX {
                continue;
            }
            if let Ok(rtcp) = UdpSocket::bind((ip, p + 1)) {
                return (rtp, Peer { sock: rtcp });
            }
        }
        panic!("no even/odd port pair free on {ip}");
    }

    /// The bound address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.sock.local_addr().expect("local_addr")
    }

    /// Sends one datagram.
    pub(crate) fn send(&self, to: SocketAddr, data: &[u8]) {
        let n = self
            .sock
            .send_to(data, to)
            .unwrap_or_else(|e| panic!("{} sending to {to}: {e}", self.addr()));
        assert_eq!(n, data.len());
    }

    /// Receives one datagram within `timeout`.
    pub(crate) fn recv(&self, timeout: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        let mut buf = [0u8; 2048];
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("set_read_timeout");
            match self.sock.recv_from(&mut buf) {
                Ok((n, from)) => return Some((buf[..n].to_vec(), from)),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None
                }
                // A receive with a timeout is not restarted after a signal.
                Err(e) if e.kind() == ErrorKind::Interrupted && !left.is_zero() => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => return None,
                Err(e) => panic!("{} receiving: {e}", self.addr()),
            }
        }
    }

    /// Receives one datagram or panics after [`RECV_TIMEOUT`] naming `what`.
    pub(crate) fn expect(&self, what: &str) -> (Vec<u8>, SocketAddr) {
        self.recv(RECV_TIMEOUT).unwrap_or_else(|| {
            panic!(
                "{}: no datagram ({what}) within {RECV_TIMEOUT:?}",
                self.addr()
            )
        })
    }

    /// Receives datagrams until one satisfies `pred` (others are discarded), or
    /// panics after `timeout` naming `what`.
    pub(crate) fn expect_matching(
        &self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&[u8], SocketAddr) -> bool,
    ) -> (Vec<u8>, SocketAddr) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!("{}: no datagram ({what}) within {timeout:?}", self.addr());
            }
            if let Some((d, from)) = self.recv(left) {
                if pred(&d, from) {
                    return (d, from);
                }
            }
        }
    }

    /// Asserts nothing arrives for [`SILENCE`].
    pub(crate) fn expect_silence(&self, why: &str) {
        if let Some((d, from)) = self.recv(SILENCE) {
            panic!(
                "{}: unexpected datagram from {from} ({why}): {} bytes, {:02x?}",
                self.addr(),
                d.len(),
                &d[..d.len().min(16)]
            );
        }
    }

    /// Discards whatever is queued now.
    pub(crate) fn drain(&self) -> usize {
        self.sock.set_nonblocking(true).expect("set_nonblocking");
        let mut buf = [0u8; 2048];
        let mut n = 0;
        while self.sock.recv_from(&mut buf).is_ok() {
            n += 1;
        }
        self.sock.set_nonblocking(false).expect("set_nonblocking");
        n
    }

    /// The socket itself.
    pub(crate) fn socket(&self) -> &UdpSocket {
        &self.sock
    }
}

/// An RTP packet: 12-byte header (V=2, PT 0, no marker), `PAYLOAD_LEN` bytes
/// of payload derived from `ssrc` and `seq` so that [`check_rtp`] can tell a
/// packet is intact.
pub(crate) fn rtp(ssrc: u32, seq: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + PAYLOAD_LEN);
    p.extend_from_slice(&[0x80, 0x00]);
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq).wrapping_mul(160)).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..PAYLOAD_LEN).map(|i| payload_byte(ssrc, seq, i)));
    p
}

fn payload_byte(ssrc: u32, seq: u16, i: usize) -> u8 {
    (ssrc as u8) ^ (seq as u8).wrapping_mul(31) ^ (i as u8).wrapping_mul(7) ^ (seq >> 8) as u8
}

/// The (ssrc, seq) of an RTP packet built by [`rtp`], if it is one.
pub(crate) fn rtp_id(d: &[u8]) -> Option<(u32, u16)> {
    if d.len() != 12 + PAYLOAD_LEN || d[0] != 0x80 || d[1] != 0 {
        return None;
    }
    let seq = u16::from_be_bytes([d[2], d[3]]);
    let ssrc = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
    Some((ssrc, seq))
}

/// Asserts `d` is exactly `rtp(ssrc, seq)`.
pub(crate) fn check_rtp(d: &[u8], ssrc: u32, seq: u16) {
    assert_eq!(
        rtp_id(d),
        Some((ssrc, seq)),
        "not RTP ssrc {ssrc:#x} seq {seq}: {:02x?}",
        &d[..d.len().min(16)]
    );
    assert!(
        d == rtp(ssrc, seq).as_slice(),
        "RTP ssrc {ssrc:#x} seq {seq} arrived altered"
    );
}

/// An RTCP sender report (PT 200), 28 bytes, from `ssrc`.
pub(crate) fn rtcp_sr(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0x11; 8]); // NTP timestamp
    p.extend_from_slice(&[0, 0, 1, 0]); // RTP timestamp
    p.extend_from_slice(&[0, 0, 0, 5]); // packet count
    p.extend_from_slice(&[0, 0, 3, 32]); // octet count
    p
}

/// A proto endpoint.
pub(crate) fn ep(a: SocketAddr) -> pb::Endpoint {
    pb::Endpoint {
        ip: a.ip().to_string(),
        port: u32::from(a.port()),
    }
}

/// A proto endpoint as an address (panics when absent or malformed).
pub(crate) fn addr(e: &Option<pb::Endpoint>) -> SocketAddr {
    let e = e.as_ref().expect("endpoint is set");
    let ip: IpAddr = e.ip.parse().expect("endpoint ip");
    SocketAddr::new(ip, u16::try_from(e.port).expect("endpoint port"))
}

/// A leg on `interface` whose peer receives RTP at `remote`.
pub(crate) fn leg(interface: &str, remote: SocketAddr) -> pb::LegSpec {
    pb::LegSpec {
        interface: interface.to_string(),
        remote_rtp: Some(ep(remote)),
        ..Default::default()
    }
}

/// A create request.
pub(crate) fn session(id: &str, a: pb::LegSpec, b: pb::LegSpec) -> pb::CreateSessionRequest {
    pb::CreateSessionRequest {
        session_id: id.to_string(),
        leg_a: Some(a),
        leg_b: Some(b),
        inactivity_timeout_secs: 0,
    }
}

/// Leg A of a session.
pub(crate) fn leg_a(s: &pb::SessionInfo) -> &pb::LegInfo {
    s.leg_a.as_ref().expect("leg_a")
}

/// Leg B of a session.
pub(crate) fn leg_b(s: &pb::SessionInfo) -> &pb::LegInfo {
    s.leg_b.as_ref().expect("leg_b")
}

/// A leg's counters.
pub(crate) fn counters(l: &pb::LegInfo) -> &pb::LegCounters {
    l.counters.as_ref().expect("counters")
}

/// A leg's drop count for `reason`.
pub(crate) fn dropped(l: &pb::LegInfo, reason: &str) -> u64 {
    counters(l)
        .dropped
        .iter()
        .find(|d| d.reason == reason)
        .map_or(0, |d| d.count)
}

/// A worker's (or the total's) drop count for `reason`.
pub(crate) fn worker_dropped(w: &pb::WorkerStats, reason: &str) -> u64 {
    w.dropped
        .iter()
        .find(|d| d.reason == reason)
        .map_or(0, |d| d.count)
}

/// Asserts a gRPC failure with `code` whose message contains `needle`.
pub(crate) fn assert_status<T: std::fmt::Debug>(
    r: Result<T, Status>,
    code: Code,
    needle: &str,
) -> Status {
    match r {
        Ok(v) => panic!("expected {code:?} mentioning {needle:?}, got success: {v:?}"),
        Err(s) => {
            assert_eq!(
                s.code(),
                code,
                "status {s:?}, expected {code:?} mentioning {needle:?}"
            );
            assert!(
                s.message().contains(needle),
                "status message {:?} does not mention {needle:?}",
                s.message()
            );
            s
        }
    }
}

/// Polls `f` until it gives a value; panics after `timeout` naming `what`.
pub(crate) fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("not {what} within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `count` RTP packets (`seq0..`) from `from` to `to`, then asserts each
/// arrives at `at`, in order, intact, from `via` (Kordon's address on the far
/// leg).
pub(crate) fn relay(
    from: &Peer,
    to: SocketAddr,
    at: &Peer,
    via: SocketAddr,
    ssrc: u32,
    seq0: u16,
    count: u16,
) {
    for i in 0..count {
        from.send(to, &rtp(ssrc, seq0.wrapping_add(i)));
    }
    for i in 0..count {
        let seq = seq0.wrapping_add(i);
        let (d, src) = at.expect(&format!(
            "RTP ssrc {ssrc:#x} seq {seq} relayed {} -> {}",
            from.addr(),
            at.addr()
        ));
        assert_eq!(
            src, via,
            "RTP must come from the far leg's advertised address"
        );
        check_rtp(&d, ssrc, seq);
    }
}

/// Sends one RTP packet and asserts it arrives at `at` from `via`.
pub(crate) fn relay_one(
    from: &Peer,
    to: SocketAddr,
    at: &Peer,
    via: SocketAddr,
    ssrc: u32,
    seq: u16,
) {
    relay(from, to, at, via, ssrc, seq, 1);
}

/// Writes `text` to `dir/name` and returns the path.
pub(crate) fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    let mut f = File::create(&p).expect("creating a file");
    f.write_all(text.as_bytes()).expect("writing a file");
    p
}

/// A free UDP port on 127.0.0.1 (the kernel's choice; free when returned).
pub(crate) fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

impl Config {
    /// A configuration for the ng front door: the interfaces are named
    /// `internal` (block..+31) and `external` (block+32..+63), and an `[ng]`
    /// table listens on 127.0.0.1:`ng_port` with `internal` as the default
    /// interface. Add other `[dataplane]` keys with [`Config::with`] before
    /// this call: the table goes where those lines go, so a later line would
    /// land in `[ng]`.
    pub(crate) fn for_ng(mut self, ng_port: u16) -> Config {
        for (i, name) in self.interfaces.iter_mut().zip(["internal", "external"]) {
            i.name = name.to_string();
        }
        self.lines.push(format!(
            "\n[ng]\nlisten = \"127.0.0.1:{ng_port}\"\ndefault_interface = \"internal\""
        ));
        self
    }

    /// The ng listener set by [`Config::for_ng`].
    pub(crate) fn ng_addr(&self) -> Option<SocketAddr> {
        self.lines.iter().find_map(|l| {
            let rest = l.split("[ng]\nlisten = \"").nth(1)?;
            rest.split('"').next()?.parse().ok()
        })
    }

    /// The port range of interface `name`.
    pub(crate) fn ports_of(&self, name: &str) -> std::ops::RangeInclusive<u16> {
        let i = self
            .interfaces
            .iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("no interface {name}"));
        i.port_min..=i.port_max
    }
}

/// Starts Kordon with the ng front door on a free UDP port
/// ([`Config::for_ng`] applied to `config`) and returns it with an ng client.
pub(crate) fn start_ng(config: Config) -> (Kordon, Ng) {
    let k = Kordon::start(config.for_ng(free_udp_port()));
    let addr = k.config.ng_addr().expect("ng listener in the config");
    (k, Ng::new(addr))
}

/// A blocking client of the ng protocol (`<cookie> <bencode>` over UDP).
#[derive(Debug)]
pub(crate) struct Ng {
    sock: UdpSocket,
    /// The server.
    pub(crate) to: SocketAddr,
    next: AtomicU32,
}

impl Ng {
    /// A client of the server at `to`, on a fresh loopback socket.
    pub(crate) fn new(to: SocketAddr) -> Ng {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("binding the ng client");
        Ng {
            sock,
            to,
            next: AtomicU32::new(0),
        }
    }

    /// A cookie this client has not used.
    pub(crate) fn cookie(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}_{n}", std::process::id())
    }

    /// Sends `payload` under `cookie` and returns the payload of the answer
    /// carrying that cookie (answers to other cookies are skipped); panics
    /// after [`RECV_TIMEOUT`].
    pub(crate) fn raw(&self, cookie: &str, payload: &[u8]) -> Vec<u8> {
        let mut d = Vec::with_capacity(cookie.len() + 1 + payload.len());
        d.extend_from_slice(cookie.as_bytes());
        d.push(b' ');
        d.extend_from_slice(payload);
        self.sock
            .send_to(&d, self.to)
            .expect("sending an ng request");
        let deadline = Instant::now() + RECV_TIMEOUT;
        let mut buf = vec![0u8; 65_536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no ng answer to cookie {cookie} from {} within {RECV_TIMEOUT:?}",
                self.to
            );
            self.sock
                .set_read_timeout(Some(left))
                .expect("set_read_timeout");
            let n = match self.sock.recv_from(&mut buf) {
                Ok((n, _)) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => panic!("receiving an ng answer: {e}"),
            };
            let got = &buf[..n];
            let prefix = format!("{cookie} ");
            if let Some(rest) = got.strip_prefix(prefix.as_bytes()) {
                return rest.to_vec();
            }
        }
    }

    /// Sends `req` under `cookie`; the decoded answer.
    pub(crate) fn send(
        &self,
        cookie: &str,
        req: &kordon_controlplane::ng::bencode::Value,
    ) -> kordon_controlplane::ng::bencode::Value {
        let answer = self.raw(
            cookie,
            &kordon_controlplane::ng::bencode::encode_to_vec(req),
        );
        kordon_controlplane::ng::bencode::decode_all(&answer).unwrap_or_else(|e| {
            panic!(
                "ng answer is not bencode ({e}): {:?}",
                String::from_utf8_lossy(&answer)
            )
        })
    }

    /// Sends `req` under a fresh cookie; the decoded answer.
    pub(crate) fn request(
        &self,
        req: &kordon_controlplane::ng::bencode::Value,
    ) -> kordon_controlplane::ng::bencode::Value {
        self.send(&self.cookie(), req)
    }
}
