//! `kordon`: the one binary. Subcommands and wiring only; the logic lives in the
//! data plane and control plane crates.

mod config;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::time::Duration;

use kordon_controlplane::b2bua::SipService;
use kordon_controlplane::media::MediaClient;
use kordon_controlplane::ng::{Calls, NgSettings};
use kordon_dataplane::Dataplane;
use tracing_subscriber::EnvFilter;

use crate::config::Config;

// mimalloc, unless built with `--features system-alloc` (for heap profilers
// that hook the C allocator, and for comparing memory figures).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Kordon: a Session Border Controller (SIP/WebRTC control plane, media data plane).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML); built-in defaults when absent.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Runs Kordon: the data plane and, as they land, the control plane services.
    Run,
    /// Runs the data plane alone (gRPC control API, no SIP).
    Dataplane,
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        action: ConfigCmd,
    },
    /// Call detail records (read from the CDR database; works while Kordon runs).
    Cdr {
        #[command(subcommand)]
        action: CdrCmd,
    },
    /// The call verification node's tools.
    Verify {
        #[command(subcommand)]
        action: VerifyCmd,
    },
    /// Makes the running `kordon run` re-read its configuration (sends it
    /// SIGHUP through its pid file).
    Reload,
}

#[derive(Subcommand, Debug)]
enum VerifyCmd {
    /// Counts verifications by verification code over a time span (at most
    /// `verify.limit_sql` rows are read).
    Report {
        /// Start (RFC 3339, `YYYY-MM-DD` or `YYYY-MM-DD HH:MM:SS`, UTC).
        #[arg(long)]
        from: String,
        /// End, exclusive (same forms).
        #[arg(long)]
        to: String,
    },
    /// Converts a classic `uvrd.conf` into Kordon's `[verify]` TOML (printed
    /// on standard output; notes about keys left out on standard error).
    ImportUvrd {
        /// The uvrd.conf file.
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum CdrCmd {
    /// Writes every record as CSV to standard output.
    Export {
        /// CSV (the only format so far; accepted for clarity).
        #[arg(long)]
        csv: bool,
        /// Only calls that started at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
    },
    /// Prints the last records, one line each.
    Tail {
        /// How many.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        /// Keep printing new records as they are written.
        #[arg(short, long)]
        follow: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Prints the effective configuration (file merged over defaults).
    Print,
    /// Checks the configuration and exits.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kordon: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Cmd::Config {
            action: ConfigCmd::Print,
        } => {
            print!("{}", cfg.to_toml());
            Ok(())
        }
        Cmd::Config {
            action: ConfigCmd::Check,
        } => {
            println!("configuration is valid");
            Ok(())
        }
        Cmd::Cdr { action } => cdr_command(&cfg, action),
        Cmd::Verify { action } => verify_command(&cfg, action),
        Cmd::Reload => reload_command(&cfg),
        Cmd::Run => serve(cfg, cli.config.clone(), true),
        Cmd::Dataplane => serve(cfg, cli.config.clone(), false),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kordon: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn cdr_command(cfg: &Config, action: CdrCmd) -> anyhow::Result<()> {
    use kordon_controlplane::cdr;
    let db = cfg.cdr.db_path(&cfg.general.data_dir);
    let mut out = std::io::stdout().lock();
    match action {
        CdrCmd::Export { csv: _, since } => {
            let since = match since {
                Some(s) => Some(
                    chrono::DateTime::parse_from_rfc3339(&s)
                        .with_context(|| format!("--since {s:?} is not an RFC 3339 time"))?
                        .with_timezone(&chrono::Utc),
                ),
                None => None,
            };
            cdr::export_csv(&db, &mut out, since)
                .with_context(|| format!("exporting {}", db.display()))?;
        }
        CdrCmd::Tail { lines, follow } => {
            let mut last = cdr::tail(&db, lines, &mut out)
                .with_context(|| format!("reading {}", db.display()))?;
            if !follow {
                return Ok(());
            }
            loop {
                use std::io::Write as _;
                out.flush()?;
                std::thread::sleep(Duration::from_millis(500));
                last = cdr::follow(&db, last, &mut out)
                    .with_context(|| format!("reading {}", db.display()))?;
            }
        }
    }
    Ok(())
}

fn verify_command(cfg: &Config, action: VerifyCmd) -> anyhow::Result<()> {
    use kordon_controlplane::verify::{records, uvrd};
    match action {
        VerifyCmd::Report { from, to } => {
            let from = records::parse_time(&from).map_err(|e| anyhow::anyhow!("--from: {e}"))?;
            let to = records::parse_time(&to).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
            let db = cfg.verify.db_file(&cfg.general.data_dir);
            let mut out = std::io::stdout().lock();
            records::report(&db, from, to, cfg.verify.limit_sql, &mut out)
                .map_err(|e| anyhow::anyhow!("{}: {e}", db.display()))?;
        }
        VerifyCmd::ImportUvrd { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let (v, notes) =
                uvrd::import(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            for n in notes {
                eprintln!("note: {n}");
            }
            if let Err((k, m)) = v.validate() {
                eprintln!("warning: the result will be refused until changed: {k}: {m}");
            }
            print!("{}", uvrd::to_toml(&v));
        }
    }
    Ok(())
}

fn reload_command(cfg: &Config) -> anyhow::Result<()> {
    let path = cfg.general.pid_path();
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {} (is `kordon run` running?)", path.display()))?;
    let pid: u32 = text
        .trim()
        .parse()
        .with_context(|| format!("{}: {:?} is not a pid", path.display(), text.trim()))?;
    // A pid file left by a crash may name another program by now.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    anyhow::ensure!(
        comm.trim() == "kordon",
        "process {pid} from {} is not a running kordon ({:?}); is `kordon run` running?",
        path.display(),
        comm.trim()
    );
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .context("running kill")?;
    anyhow::ensure!(status.success(), "kill -HUP {pid} failed ({status})");
    println!("sent SIGHUP to {pid}");
    Ok(())
}

/// Re-reads the configuration file and applies what can change while
/// running (the `[verify]` section).
async fn reload(
    path: Option<&std::path::Path>,
    verify: &kordon_controlplane::verify::service::VerifyService,
) {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "reload refused: invalid configuration; the old one stays");
            return;
        }
    };
    match verify.reload(cfg.verify).await {
        Ok(kept) if kept.is_empty() => tracing::info!("configuration reloaded"),
        Ok(kept) => tracing::warn!(
            settings = %kept.join(", "),
            "configuration reloaded; these verify settings changed but need a restart"
        ),
        Err(e) => tracing::error!(error = %e, "reload refused; the old configuration stays"),
    }
}

fn init_logs(cfg: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.general.log))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn serve(cfg: Config, path: Option<PathBuf>, full: bool) -> anyhow::Result<()> {
    init_logs(&cfg);
    if full {
        std::fs::create_dir_all(&cfg.general.data_dir).with_context(|| {
            format!("creating data directory {}", cfg.general.data_dir.display())
        })?;
    }
    let dataplane = Dataplane::start(&cfg.dataplane).context("starting the data plane")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        // One control thread per CPU this process may run on (taskset and
        // cgroups included), at most 4: control work is light, and fewer
        // threads than CPUs spares wake-ups between them.
        .worker_threads(
            std::thread::available_parallelism()
                .map(|n| n.get().min(4))
                .unwrap_or(2),
        )
        .thread_name("kordon-ctl")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(async {
        let service = dataplane.service();
        let grpc_addr = cfg.dataplane.grpc_listen;
        let listener = tokio::net::TcpListener::bind(grpc_addr)
            .await
            .with_context(|| format!("binding gRPC listener {grpc_addr}"))?;
        tracing::info!(addr = %grpc_addr, "gRPC control API listening");
        // The control plane (ng, SIP) drives the data plane through its gRPC
        // API, as any control plane does.
        let mut local = grpc_addr;
        if local.ip().is_unspecified() {
            local.set_ip(if local.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        if let Some(addr) = cfg.ng.addr().map_err(anyhow::Error::msg)? {
            let socket = tokio::net::UdpSocket::bind(addr)
                .await
                .with_context(|| format!("binding ng listener {addr}"))?;
            let media = MediaClient::lazy(&format!("http://{local}"), Duration::from_secs(5))
                .map_err(anyhow::Error::msg)?;
            let calls = std::sync::Arc::new(Calls::new(
                media,
                NgSettings {
                    default_interface: cfg.ng_default_interface(),
                },
            ));
            let ttl = Duration::from_secs(cfg.ng.cookie_cache_secs);
            tracing::info!(%addr, "ng control protocol listening");
            tokio::spawn(async move {
                if let Err(e) = kordon_controlplane::ng::serve(socket, calls, ttl).await {
                    tracing::error!(error = %e, "ng listener stopped");
                }
            });
        }
        let verify = if full && cfg.verify.enabled {
            Some(
                kordon_controlplane::verify::service::VerifyService::start(
                    cfg.verify.clone(),
                    &cfg.general.data_dir,
                )
                .await
                .map_err(anyhow::Error::msg)
                .context("starting the verification node")?,
            )
        } else {
            None
        };
        let sip = if full && cfg.sip.enabled {
            // The B2BUA calls the data plane in this process directly: the same
            // gRPC messages, without an HTTP/2 round trip over loopback.
            let media = MediaClient::local(std::sync::Arc::new(service.clone()));
            let mut sip_cfg = cfg.sip.clone();
            let names: Vec<&str> = cfg
                .dataplane
                .interfaces
                .keys()
                .map(String::as_str)
                .collect();
            sip_cfg.resolve_media_interfaces(&names);
            Some(
                SipService::start(
                    sip_cfg,
                    &cfg.cdr,
                    &cfg.general.data_dir,
                    media,
                    verify.as_ref().map(|v| v.node()),
                )
                .await
                .context("starting SIP")?,
            )
        } else {
            None
        };
        // Metrics: the data plane's counters, then SIP's and the CDR writer's.
        if let Some(addr) = cfg.metrics.addr()? {
            let svc = service.clone();
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding metrics listener {addr}"))?;
            drop(l);
            let sip_metrics = sip.as_ref().map(|s| s.metrics());
            let verify_metrics = verify.as_ref().map(|v| v.metrics_fn());
            let extra: kordon_dataplane::metrics::Extra = std::sync::Arc::new(move || {
                let mut out = sip_metrics.as_ref().map(|f| f()).unwrap_or_default();
                if let Some(f) = &verify_metrics {
                    out.push_str(&f());
                }
                out
            });
            tokio::spawn(async move {
                if let Err(e) = kordon_dataplane::metrics::serve_with(addr, svc, extra).await {
                    tracing::error!(error = %e, "metrics endpoint stopped");
                }
            });
        }
        let incoming = tokio_stream_from(listener);
        let (stop_grpc, grpc_stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service.into_server())
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = grpc_stopped.await;
                }),
        );
        // The handler first: a `kordon reload` that finds the pid file must
        // not meet SIGHUP's default action (termination).
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
        let pid_path = cfg.general.pid_path();
        if full {
            std::fs::write(&pid_path, format!("{}\n", std::process::id()))
                .with_context(|| format!("writing pid file {}", pid_path.display()))?;
        }
        let stop = shutdown_signal();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = hup.recv() => match &verify {
                    Some(v) => reload(path.as_deref(), v).await,
                    None => tracing::info!("SIGHUP: nothing reloads without the verification node"),
                },
            }
        }
        // Calls end first (their media deletes still need the gRPC API),
        // then the CDR queue drains, then the API stops.
        if let Some(sip) = sip {
            tracing::info!("ending calls and draining CDRs");
            sip.shutdown().await;
        }
        if let Some(v) = verify {
            tracing::info!("stopping the verification node");
            v.shutdown().await;
        }
        if full {
            let _ = std::fs::remove_file(&pid_path);
        }
        let _ = stop_grpc.send(());
        server
            .await
            .context("gRPC server task")?
            .context("gRPC server")
    });
    tracing::info!("stopping");
    dataplane.stop();
    result
}

fn tokio_stream_from(
    listener: tokio::net::TcpListener,
) -> tokio_stream::wrappers::TcpListenerStream {
    tokio_stream::wrappers::TcpListenerStream::new(listener)
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}
