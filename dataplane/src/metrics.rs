//! Prometheus text exposition of the data plane's counters on a small HTTP
//! listener (`GET /metrics`). Counters come from the workers through the same
//! Stats command as the gRPC API.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use kordon_proto::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::control::Service;

/// Renders counters in the Prometheus text format (version 0.0.4).
pub fn render(stats: &pb::StatsResponse, free_pairs: &[(String, u32)]) -> String {
    let mut out = String::with_capacity(4096);
    let counter =
        |out: &mut String, name: &str, help: &str, get: &dyn Fn(&pb::WorkerStats) -> u64| {
            let _ = writeln!(out, "# HELP kordon_dataplane_{name} {help}");
            let _ = writeln!(out, "# TYPE kordon_dataplane_{name} counter");
            for w in &stats.workers {
                let _ = writeln!(
                    out,
                    "kordon_dataplane_{name}{{worker=\"{}\"}} {}",
                    w.worker,
                    get(w)
                );
            }
        };
    counter(&mut out, "rx_packets_total", "Datagrams received.", &|w| {
        w.rx_packets
    });
    counter(&mut out, "rx_bytes_total", "Bytes received.", &|w| {
        w.rx_bytes
    });
    counter(&mut out, "tx_packets_total", "Datagrams forwarded.", &|w| {
        w.tx_packets
    });
    counter(&mut out, "tx_bytes_total", "Bytes forwarded.", &|w| {
        w.tx_bytes
    });
    counter(
        &mut out,
        "capped_turns_total",
        "Loop turns that stopped at the per-turn packet cap.",
        &|w| w.capped_turns,
    );
    counter(
        &mut out,
        "send_errors_total",
        "Sends the kernel refused.",
        &|w| w.send_errors,
    );
    counter(
        &mut out,
        "recv_rearms_total",
        "Receives armed again after they stopped.",
        &|w| w.recv_rearms,
    );
    let _ = writeln!(
        out,
        "# HELP kordon_dataplane_dropped_packets_total Datagrams dropped, by reason."
    );
    let _ = writeln!(out, "# TYPE kordon_dataplane_dropped_packets_total counter");
    for w in &stats.workers {
        for d in &w.dropped {
            let _ = writeln!(
                out,
                "kordon_dataplane_dropped_packets_total{{worker=\"{}\",reason=\"{}\"}} {}",
                w.worker, d.reason, d.count
            );
        }
    }
    let _ = writeln!(out, "# HELP kordon_dataplane_sessions Sessions served.");
    let _ = writeln!(out, "# TYPE kordon_dataplane_sessions gauge");
    for w in &stats.workers {
        let _ = writeln!(
            out,
            "kordon_dataplane_sessions{{worker=\"{}\",backend=\"{}\"}} {}",
            w.worker, w.backend, w.sessions
        );
    }
    let _ = writeln!(
        out,
        "# HELP kordon_dataplane_free_port_pairs Free RTP/RTCP port pairs."
    );
    let _ = writeln!(out, "# TYPE kordon_dataplane_free_port_pairs gauge");
    for (name, free) in free_pairs {
        let _ = writeln!(
            out,
            "kordon_dataplane_free_port_pairs{{interface=\"{name}\"}} {free}"
        );
    }
    out
}

/// Serves `GET /metrics` on `addr` until the task is dropped.
pub async fn serve(addr: SocketAddr, service: Service) -> std::io::Result<()> {
    serve_with(addr, service, Arc::new(String::new)).await
}

/// More Prometheus text appended to the data plane's (other services of the
/// process: SIP, CDR).
pub type Extra = Arc<dyn Fn() -> String + Send + Sync>;

/// As [`serve`], with `extra`'s text after the data plane's.
pub async fn serve_with(addr: SocketAddr, service: Service, extra: Extra) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics endpoint listening");
    loop {
        let (stream, _) = listener.accept().await?;
        let svc = service.clone();
        let extra = extra.clone();
        tokio::spawn(async move {
            let _ = answer(stream, svc, extra).await;
        });
    }
}

async fn answer(mut stream: TcpStream, svc: Service, extra: Extra) -> std::io::Result<()> {
    let mut buf = [0u8; 2048];
    let mut used = 0;
    // Read the request head (bounded); the body, if any, is ignored.
    while let Some(room) = buf.get_mut(used..).filter(|r| !r.is_empty()) {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(room))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        if n == 0 {
            break;
        }
        used += n;
        if buf
            .get(..used)
            .is_some_and(|h| h.windows(4).any(|w| w == b"\r\n\r\n"))
        {
            break;
        }
    }
    let head = String::from_utf8_lossy(buf.get(..used).unwrap_or_default());
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = if method != "GET" {
        (
            "405 Method Not Allowed",
            "text/plain",
            "only GET is served\n".to_string(),
        )
    } else if path != "/metrics" {
        ("404 Not Found", "text/plain", "try /metrics\n".to_string())
    } else {
        match svc.stats().await {
            Ok(stats) => (
                "200 OK",
                "text/plain; version=0.0.4",
                render(&stats, &svc.free_pairs()) + &extra(),
            ),
            Err(e) => (
                "503 Service Unavailable",
                "text/plain",
                format!("{}\n", e.message()),
            ),
        }
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(resp.as_bytes()).await?;
    stream.shutdown().await
}
