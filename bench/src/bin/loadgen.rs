//! `kordon-loadgen`: load generator and sink for RTP relays, session set-up
//! bench, readiness probe and report renderer. See `bench/README.md`.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use kordon_bench::gen::{self, LoadSpec, Pools};
use kordon_bench::grpc;
use kordon_bench::ng::NgClient;
use kordon_bench::procfs;
use kordon_bench::report::{self, Criteria, PointInfo, Record, RelayResult, SessionsResult};
use kordon_bench::sys;

#[derive(Parser)]
#[command(name = "kordon-loadgen", about = "RTP relay load generator and sink")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Sets up streams on a relay, runs paced RTP both ways and reports.
    Relay(RelayArgs),
    /// Creates many idle sessions on Kordon over gRPC: rate and memory per session.
    Sessions(SessionsArgs),
    /// Waits until a relay answers (Kordon: `Stats`; rtpengine: `ping`; fwd: ports bound).
    WaitReady(WaitArgs),
    /// Renders JSON-lines results as markdown tables.
    Report(ReportArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    Kordon,
    Fwd,
    Rtpengine,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Kordon => "kordon",
            Target::Fwd => "fwd",
            Target::Rtpengine => "rtpengine",
        }
    }
}

#[derive(clap::Args)]
struct Endpoints {
    /// Kordon's gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    grpc: String,
    /// rtpengine's ng listener (UDP).
    #[arg(long, default_value = "127.0.0.1:22222")]
    ng: SocketAddr,
    /// kordon-fwd's first port.
    #[arg(long, default_value_t = 2000)]
    fwd_base_port: u16,
}

#[derive(clap::Args)]
struct RelayArgs {
    /// Which relay.
    #[arg(long, value_enum)]
    target: Target,
    #[command(flatten)]
    endpoints: Endpoints,
    /// Streams (sessions); each has two directions.
    #[arg(long, default_value_t = 100)]
    streams: usize,
    /// Packets per second sent, both directions together.
    #[arg(long, default_value_t = 50_000)]
    rate: u64,
    /// Measuring window, s.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Full-rate warm-up before the window, s.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Pin the generator to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
    /// The relay's PID, for its CPU time per packet.
    #[arg(long)]
    relay_pid: Option<u32>,
    /// The CPU the relay is pinned to, for that CPU's busy time per packet.
    #[arg(long)]
    relay_cpu: Option<usize>,
    /// Generator sockets per side; stream i uses socket i % N.
    #[arg(long, default_value_t = 8)]
    sockets_per_side: usize,
    /// First local port of the generator (0: ephemeral). Fixed ports let a
    /// relay that latched once (kordon-fwd) be reused across runs.
    #[arg(long, default_value_t = 61000)]
    local_base_port: u16,
    /// Pacing period, µs.
    #[arg(long, default_value_t = 1000)]
    tick_us: u64,
    /// Never sleep between events (a whole core spins; no wake-ups).
    #[arg(long)]
    busy_poll: bool,
    /// Pass criterion: loss below this, %.
    #[arg(long, default_value_t = 0.1)]
    max_loss_pct: f64,
    /// Pass criterion: median latency below this, µs.
    #[arg(long, default_value_t = 1000.0)]
    max_p50_us: f64,
    /// Set-up requests in flight (Kordon).
    #[arg(long, default_value_t = 32)]
    setup_concurrency: usize,
    /// Name in the results (default: the target).
    #[arg(long)]
    label: Option<String>,
    /// Free tag in the results (compare.sh: `grid` or `search`).
    #[arg(long, default_value = "")]
    tag: String,
    /// Print the result as one JSON line on stdout.
    #[arg(long)]
    json: bool,
    /// Also append the JSON line to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
struct SessionsArgs {
    /// Kordon's gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    grpc: String,
    /// Sessions to create.
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// The relay's PID, for its memory.
    #[arg(long)]
    relay_pid: Option<u32>,
    /// Pin this tool to a CPU.
    #[arg(long)]
    cpu: Option<usize>,
    /// Wait this long before reading memory, s.
    #[arg(long, default_value_t = 1.0)]
    settle: f64,
    /// Ask for rtcp-mux on both legs (one socket per leg instead of two).
    #[arg(long)]
    rtcp_mux: bool,
    /// Name in the results.
    #[arg(long, default_value = "kordon")]
    label: String,
    /// Print the result as one JSON line on stdout.
    #[arg(long)]
    json: bool,
    /// Also append the JSON line to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
struct WaitArgs {
    /// Which relay.
    #[arg(long, value_enum)]
    target: Target,
    #[command(flatten)]
    endpoints: Endpoints,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
}

#[derive(clap::Args)]
struct ReportArgs {
    /// JSON-lines files written by `relay --out` / `sessions --out`, one per run;
    /// with several, the tables show medians over runs.
    files: Vec<PathBuf>,
    /// The label the CPU ratio is computed against.
    #[arg(long, default_value = "fwd")]
    baseline: String,
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Relay(a) => relay(a),
        Cmd::Sessions(a) => sessions(a),
        Cmd::WaitReady(a) => wait_ready(a),
        Cmd::Report(a) => report_cmd(a),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")
}

fn emit(record: &Record, json: bool, out: &Option<PathBuf>) -> Result<()> {
    let line = serde_json::to_string(record)?;
    if json {
        println!("{line}");
    }
    if let Some(path) = out {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("open {}", path.display()))?;
        writeln!(f, "{line}")?;
    }
    Ok(())
}

/// What must be undone after a run.
enum Teardown {
    None,
    Kordon {
        rt: Box<tokio::runtime::Runtime>,
        client: grpc::Client,
        ids: Vec<String>,
    },
    Rtpengine {
        ng: NgClient,
        calls: Vec<String>,
    },
}

impl Teardown {
    fn run(self) -> Result<()> {
        match self {
            Teardown::None => Ok(()),
            Teardown::Kordon { rt, client, ids } => {
                let n = ids.len();
                let b = rt.block_on(grpc::delete_sessions(&client, ids, 32));
                let (failed, first) = b.failures();
                if failed > 0 {
                    bail!(
                        "{failed}/{n} deletes failed, first: {}",
                        first.map(|s| s.to_string()).unwrap_or_default()
                    );
                }
                Ok(())
            }
            Teardown::Rtpengine { mut ng, calls } => {
                let mut failed = 0;
                for c in &calls {
                    if ng.delete_call(c).is_err() {
                        failed += 1;
                    }
                }
                if failed > 0 {
                    bail!("{failed}/{} rtpengine deletes failed", calls.len());
                }
                Ok(())
            }
        }
    }
}

fn setup(a: &RelayArgs, pools: &Pools) -> Result<(Vec<[SocketAddrV4; 2]>, Teardown)> {
    let pid = std::process::id();
    match a.target {
        Target::Fwd => {
            let base = u32::from(a.endpoints.fwd_base_port);
            let last = base + 4 * a.streams.saturating_sub(1) as u32 + 2;
            anyhow::ensure!(last <= 65535, "fwd ports run past 65535");
            let dests = (0..a.streams as u32)
                .map(|i| {
                    let p = (base + 4 * i) as u16;
                    [
                        SocketAddrV4::new(Ipv4Addr::LOCALHOST, p),
                        SocketAddrV4::new(Ipv4Addr::LOCALHOST, p + 2),
                    ]
                })
                .collect();
            Ok((dests, Teardown::None))
        }
        Target::Kordon => {
            let rt = Box::new(runtime()?);
            let client = rt.block_on(grpc::connect(&a.endpoints.grpc))?;
            let ids: Vec<String> = (0..a.streams).map(|i| format!("bench-{pid}-{i}")).collect();
            let reqs = ids
                .iter()
                .enumerate()
                .map(|(i, id)| {
                    grpc::session_request(id.clone(), pools.addr(0, i), pools.addr(1, i))
                })
                .collect();
            let b = rt.block_on(grpc::create_sessions(&client, reqs, a.setup_concurrency));
            let mut dests = Vec::with_capacity(a.streams);
            let mut created = Vec::new();
            let mut first_err = None;
            for (id, r) in ids.iter().zip(&b.results) {
                match r {
                    Ok(resp) => {
                        created.push(id.clone());
                        match grpc::local_ports(resp) {
                            Ok((la, lb)) => dests.push([la, lb]),
                            Err(e) => {
                                first_err.get_or_insert(e);
                            }
                        }
                    }
                    Err(s) => {
                        first_err.get_or_insert(anyhow!("CreateSession {id}: {s}"));
                    }
                }
            }
            let teardown = Teardown::Kordon {
                rt,
                client,
                ids: created,
            };
            if let Some(e) = first_err {
                let _ = teardown.run();
                return Err(e.context("setting sessions up on Kordon"));
            }
            eprintln!(
                "kordon: {} sessions created in {:.2} s",
                a.streams,
                b.elapsed.as_secs_f64()
            );
            Ok((dests, teardown))
        }
        Target::Rtpengine => {
            let mut ng = NgClient::new(a.endpoints.ng)?;
            let t = Instant::now();
            let mut dests = Vec::with_capacity(a.streams);
            let mut calls = Vec::with_capacity(a.streams);
            for i in 0..a.streams {
                let call = format!("bench-{pid}-{i}");
                match ng.setup_call(&call, pools.addr(0, i), pools.addr(1, i)) {
                    Ok((to_a, to_b)) => {
                        calls.push(call);
                        dests.push([to_a, to_b]);
                    }
                    Err(e) => {
                        calls.push(call);
                        let _ = Teardown::Rtpengine { ng, calls }.run();
                        return Err(e.context("setting calls up on rtpengine"));
                    }
                }
            }
            eprintln!(
                "rtpengine: {} calls set up in {:.2} s",
                a.streams,
                t.elapsed().as_secs_f64()
            );
            Ok((dests, Teardown::Rtpengine { ng, calls }))
        }
    }
}

fn relay(a: RelayArgs) -> Result<()> {
    anyhow::ensure!(a.streams > 0, "--streams must be at least 1");
    anyhow::ensure!(a.rate > 0, "--rate must be positive");
    anyhow::ensure!(
        a.duration > 0.0 && a.warmup >= 0.0,
        "bad --duration/--warmup"
    );
    if let Some(cpu) = a.cpu {
        sys::pin_to_cpu(cpu).with_context(|| format!("pin to CPU {cpu}"))?;
    }
    let pools = Pools::bind(a.sockets_per_side, a.local_base_port)?;
    let (dests, teardown) = setup(&a, &pools)?;
    let spec = LoadSpec {
        rate_pps: a.rate,
        warmup: Duration::from_secs_f64(a.warmup),
        duration: Duration::from_secs_f64(a.duration),
        tick: Duration::from_micros(a.tick_us.max(50)),
        dests,
        relay_pid: a.relay_pid,
        relay_cpu: a.relay_cpu,
        gen_cpu: a.cpu,
        busy_poll: a.busy_poll,
    };
    let outcome = gen::run(&spec, &pools);
    let torn = teardown.run();
    let outcome = outcome?;
    if let Err(e) = torn {
        eprintln!("warning: teardown: {e:#}");
    }
    let result = RelayResult::from_outcome(
        PointInfo {
            label: a
                .label
                .clone()
                .unwrap_or_else(|| a.target.name().to_string()),
            target: a.target.name().to_string(),
            tag: a.tag.clone(),
            rate_pps: a.rate,
        },
        &outcome,
        Criteria {
            max_loss_pct: a.max_loss_pct,
            max_p50_us: a.max_p50_us,
        },
    );
    eprintln!("{}", result.summary());
    emit(&Record::Relay(result), a.json, &a.out)
}

fn sessions(a: SessionsArgs) -> Result<()> {
    if let Some(cpu) = a.cpu {
        sys::pin_to_cpu(cpu).with_context(|| format!("pin to CPU {cpu}"))?;
    }
    let rt = runtime()?;
    let mut client = rt.block_on(grpc::connect(&a.grpc))?;
    let before = rt.block_on(grpc::stats(&mut client))?;
    let sessions_before = before.total.as_ref().map_or(0, |t| t.sessions);
    let settle = Duration::from_secs_f64(a.settle);
    std::thread::sleep(settle);
    let rss = |pid: Option<u32>| pid.and_then(|p| procfs::process_rss_bytes(p).ok());
    let fds = |pid: Option<u32>| pid.and_then(|p| procfs::process_fd_count(p).ok());
    let rss_before = rss(a.relay_pid);
    let fds_before = fds(a.relay_pid);

    let pid = std::process::id();
    let ids: Vec<String> = (0..a.count).map(|i| format!("idle-{pid}-{i}")).collect();
    let reqs = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            // Plausible, distinct remotes; no traffic is sent to them.
            let port = 10_000 + (2 * i % 50_000) as u16;
            let mut r = grpc::session_request(
                id.clone(),
                SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
                SocketAddrV4::new(Ipv4Addr::LOCALHOST, port + 1),
            );
            for leg in [&mut r.leg_a, &mut r.leg_b].into_iter().flatten() {
                leg.rtcp_mux = a.rtcp_mux;
            }
            r
        })
        .collect();
    let created = rt.block_on(grpc::create_sessions(&client, reqs, a.concurrency));
    let (create_failed, first) = created.failures();
    let first_error = first.map(|s| s.to_string());
    let ok_ids: Vec<String> = ids
        .iter()
        .zip(&created.results)
        .filter(|(_, r)| r.is_ok())
        .map(|(id, _)| id.clone())
        .collect();
    let n_created = ok_ids.len() as u64;
    std::thread::sleep(settle);
    let rss_after = rss(a.relay_pid);
    let fds_after = fds(a.relay_pid);
    let during = rt.block_on(grpc::stats(&mut client)).ok();

    let deleted = rt.block_on(grpc::delete_sessions(&client, ok_ids, a.concurrency));
    let (delete_failed, _) = deleted.failures();
    std::thread::sleep(settle);
    let rss_after_delete = rss(a.relay_pid);

    let per = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(x), Some(y)) if n_created > 0 => Some((y as f64 - x as f64) / n_created as f64),
        _ => None,
    };
    let result = SessionsResult {
        label: a.label.clone(),
        count: a.count as u64,
        concurrency: a.concurrency as u64,
        created: n_created,
        create_failed: create_failed as u64,
        first_error,
        create_per_s: n_created as f64 / created.elapsed.as_secs_f64().max(1e-9),
        create_p50_ms: created.latency.quantile(0.5) as f64 / 1e6,
        create_p99_ms: created.latency.quantile(0.99) as f64 / 1e6,
        delete_per_s: (n_created as usize - delete_failed.min(n_created as usize)) as f64
            / deleted.elapsed.as_secs_f64().max(1e-9),
        delete_failed: delete_failed as u64,
        rss_before,
        rss_after,
        rss_after_delete,
        rss_per_session: per(rss_before, rss_after),
        fds_per_session: per(fds_before, fds_after),
    };
    eprintln!(
        "{}: {} sessions created ({} failed{}) at {:.0}/s (p50 {:.2} ms, p99 {:.2} ms), deleted at {:.0}/s; \
         Stats sessions before/during: {}/{}; RSS {} -> {} -> {} bytes: {} bytes/session; {} fds/session",
        result.label,
        result.created,
        result.create_failed,
        result.first_error.as_deref().map(|e| format!(", first: {e}")).unwrap_or_default(),
        result.create_per_s,
        result.create_p50_ms,
        result.create_p99_ms,
        result.delete_per_s,
        sessions_before,
        during.and_then(|s| s.total).map_or("-".into(), |t| t.sessions.to_string()),
        rss_before.map_or("-".into(), |v| v.to_string()),
        rss_after.map_or("-".into(), |v| v.to_string()),
        rss_after_delete.map_or("-".into(), |v| v.to_string()),
        result.rss_per_session.map_or("-".into(), |v| format!("{v:.0}")),
        result.fds_per_session.map_or("-".into(), |v| format!("{v:.2}")),
    );
    emit(&Record::Sessions(result), a.json, &a.out)
}

fn wait_ready(a: WaitArgs) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs_f64(a.timeout);
    let mut last_err = anyhow!("not tried");
    while Instant::now() < deadline {
        let mut detail = String::new();
        let r = match a.target {
            Target::Kordon => runtime().and_then(|rt| {
                rt.block_on(async {
                    let mut c = grpc::connect(&a.endpoints.grpc).await?;
                    let s = grpc::stats(&mut c).await?;
                    let backends: Vec<String> = s
                        .workers
                        .iter()
                        .map(|w| {
                            format!(
                                "worker {}: {}, {} free ports",
                                w.worker, w.backend, w.free_ports
                            )
                        })
                        .collect();
                    detail = format!(" ({})", backends.join("; "));
                    Ok(())
                })
            }),
            Target::Rtpengine => NgClient::new(a.endpoints.ng).and_then(|mut c| c.ping()),
            Target::Fwd => {
                // Bound by kordon-fwd when binding it here fails.
                let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, a.endpoints.fwd_base_port);
                match UdpSocket::bind(addr) {
                    Ok(_) => Err(anyhow!("{addr} not bound yet")),
                    Err(_) => Ok(()),
                }
            }
        };
        match r {
            Ok(()) => {
                eprintln!("{} is ready{detail}", a.target.name());
                return Ok(());
            }
            Err(e) => last_err = e,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(last_err.context(format!(
        "{} not ready after {} s",
        a.target.name(),
        a.timeout
    )))
}

fn report_cmd(a: ReportArgs) -> Result<()> {
    // Each file is one run; figures are medians over runs.
    let mut runs = Vec::new();
    for path in &a.files {
        let f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
        let mut records = Vec::new();
        for (n, line) in BufReader::new(f).lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Record>(&line) {
                Ok(r) => records.push(r),
                Err(e) => eprintln!("{}:{}: skipped: {e}", path.display(), n + 1),
            }
        }
        runs.push(records);
    }
    print!("{}", report::markdown(&runs, &a.baseline));
    Ok(())
}
