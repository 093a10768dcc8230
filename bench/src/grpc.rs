//! Driving Kordon's data plane over its gRPC API: connect, create and delete many
//! sessions with a fixed number of requests in flight, and read `Stats`.

use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use kordon_proto::v1::dataplane_client::DataplaneClient;
use kordon_proto::v1::{
    CreateSessionRequest, CreateSessionResponse, DeleteSessionRequest, Endpoint, LegSpec,
    StatsRequest, StatsResponse,
};
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::hist::Histogram;

/// Time allowed for one RPC.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// A data plane client.
pub type Client = DataplaneClient<Channel>;

/// Connects to the data plane's gRPC endpoint (e.g. `http://127.0.0.1:50051`).
pub async fn connect(url: &str) -> Result<Client> {
    let ep = tonic::transport::Endpoint::from_shared(url.to_string())
        .context("gRPC URL")?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true);
    let ch = ep
        .connect()
        .await
        .with_context(|| format!("connect {url}"))?;
    Ok(DataplaneClient::new(ch))
}

/// Calls `Stats`.
pub async fn stats(client: &mut Client) -> Result<StatsResponse> {
    let r = tokio::time::timeout(RPC_TIMEOUT, client.stats(StatsRequest {}))
        .await
        .map_err(|_| anyhow!("Stats timed out"))??;
    Ok(r.into_inner())
}

fn endpoint(a: SocketAddrV4) -> Endpoint {
    Endpoint {
        ip: a.ip().to_string(),
        port: u32::from(a.port()),
    }
}

/// A create request for a bench stream: leg A on interface `internal` towards
/// `a`, leg B on `external` towards `b`, both expecting sources from 127.0.0.1.
pub fn session_request(id: String, a: SocketAddrV4, b: SocketAddrV4) -> CreateSessionRequest {
    let leg = |iface: &str, remote: SocketAddrV4| LegSpec {
        interface: iface.to_string(),
        remote_rtp: Some(endpoint(remote)),
        expected_source_ip: remote.ip().to_string(),
        ..Default::default()
    };
    CreateSessionRequest {
        session_id: id,
        leg_a: Some(leg("internal", a)),
        leg_b: Some(leg("external", b)),
        inactivity_timeout_secs: 0,
    }
}

/// Results of a batch of RPCs run with bounded concurrency.
pub struct Batch<T> {
    /// One result per request, in request order.
    pub results: Vec<Result<T, tonic::Status>>,
    /// Latency of each RPC, ns.
    pub latency: Histogram,
    /// Wall time of the whole batch.
    pub elapsed: Duration,
}

impl<T> Batch<T> {
    /// Number of failed requests and the first failure.
    pub fn failures(&self) -> (usize, Option<&tonic::Status>) {
        let mut n = 0;
        let mut first = None;
        for r in &self.results {
            if let Err(e) = r {
                n += 1;
                first.get_or_insert(e);
            }
        }
        (n, first)
    }
}

async fn run_batch<Req, T, F, Fut>(
    client: &Client,
    reqs: Vec<Req>,
    concurrency: usize,
    call: F,
) -> Batch<T>
where
    Req: Clone + Send + Sync + 'static,
    T: Send + 'static,
    F: Fn(Client, Req) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<T, tonic::Status>> + Send,
{
    let total = reqs.len();
    let reqs = Arc::new(reqs);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..concurrency.max(1).min(total.max(1)) {
        let client = client.clone();
        let reqs = Arc::clone(&reqs);
        let next = Arc::clone(&next);
        let call = call.clone();
        set.spawn(async move {
            let mut out = Vec::new();
            let mut hist = Histogram::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= reqs.len() {
                    break;
                }
                let t = Instant::now();
                let r =
                    match tokio::time::timeout(RPC_TIMEOUT, call(client.clone(), reqs[i].clone()))
                        .await
                    {
                        Ok(r) => r,
                        Err(_) => Err(tonic::Status::deadline_exceeded("bench: RPC timed out")),
                    };
                hist.record(t.elapsed().as_nanos() as u64);
                out.push((i, r));
            }
            (out, hist)
        });
    }
    let mut slots: Vec<Option<Result<T, tonic::Status>>> = (0..total).map(|_| None).collect();
    let mut latency = Histogram::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((out, hist)) => {
                latency.merge(&hist);
                for (i, r) in out {
                    slots[i] = Some(r);
                }
            }
            Err(e) => {
                // A panicked worker: its unfinished requests stay unanswered.
                eprintln!("bench: RPC worker failed: {e}");
            }
        }
    }
    let elapsed = started.elapsed();
    let results = slots
        .into_iter()
        .map(|s| s.unwrap_or_else(|| Err(tonic::Status::aborted("bench: request not run"))))
        .collect();
    Batch {
        results,
        latency,
        elapsed,
    }
}

/// Creates sessions, `concurrency` requests in flight.
pub async fn create_sessions(
    client: &Client,
    reqs: Vec<CreateSessionRequest>,
    concurrency: usize,
) -> Batch<CreateSessionResponse> {
    run_batch(client, reqs, concurrency, |mut c, r| async move {
        c.create_session(r).await.map(|r| r.into_inner())
    })
    .await
}

/// Deletes sessions by id, `concurrency` requests in flight.
pub async fn delete_sessions(client: &Client, ids: Vec<String>, concurrency: usize) -> Batch<()> {
    run_batch(client, ids, concurrency, |mut c, session_id| async move {
        c.delete_session(DeleteSessionRequest { session_id })
            .await
            .map(|_| ())
    })
    .await
}

/// Where each side sends, from a create answer: `(leg_a.local_rtp, leg_b.local_rtp)`.
pub fn local_ports(r: &CreateSessionResponse) -> Result<(SocketAddrV4, SocketAddrV4)> {
    let s = r
        .session
        .as_ref()
        .ok_or_else(|| anyhow!("answer without session"))?;
    let get = |leg: &Option<kordon_proto::v1::LegInfo>, name: &str| -> Result<SocketAddrV4> {
        let ep = leg
            .as_ref()
            .and_then(|l| l.local_rtp.as_ref())
            .ok_or_else(|| anyhow!("answer without {name}.local_rtp"))?;
        let ip = ep
            .ip
            .parse()
            .with_context(|| format!("{name}.local_rtp ip {:?}", ep.ip))?;
        let port =
            u16::try_from(ep.port).map_err(|_| anyhow!("{name}.local_rtp port {}", ep.port))?;
        Ok(SocketAddrV4::new(ip, port))
    };
    Ok((get(&s.leg_a, "leg_a")?, get(&s.leg_b, "leg_b")?))
}
