//! `kordon-radius-load`: Access-Request load for the verification node's
//! RADIUS front door.
//!
//! What it does: sends Access-Requests (Calling/Called-Station-Id,
//! h323-conf-id, in-trunkgroup-label, Message-Authenticator) over one or a
//! few UDP sockets for a given time, either at a fixed rate or as fast as a
//! window of outstanding requests allows; matches answers by socket and
//! Identifier, checks their Message-Authenticator, and prints throughput,
//! latency percentiles, accepts, rejects and timeouts as one summary line and
//! one JSON line.
//!
//! What it does not: retransmit (a request unanswered after `--timeout-ms`
//! is a timeout and its Identifier is reused), check the Response
//! Authenticator (the Message-Authenticator already proves the secret), or
//! pick numbers for you: `--a`/`--b` must classify as outgoing or local at
//! the target (answered without asking another node) to measure the node
//! alone.
//!
//! Invariants: at most 256 requests are outstanding per socket (the
//! Identifier is one octet); an answer counts only when its Identifier is
//! outstanding on that socket and its Message-Authenticator verifies over
//! that request's authenticator, so a late answer to a reused Identifier is
//! counted `mismatched`, not as a fast answer.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use kordon_bench::hist::Histogram;
use kordon_controlplane::verify::radius::{self, attr, cisco, cisco_vsa, Attribute, Code, Packet};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "kordon-radius-load",
    about = "RADIUS Access-Request load generator"
)]
struct Args {
    /// RADIUS server, ip:port.
    #[arg(long)]
    target: SocketAddr,
    /// Shared secret.
    #[arg(long)]
    secret: String,
    /// How long to send, seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Most requests outstanding in all (spread over the sockets, at most
    /// 256 each).
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Requests per second in all; 0 = as fast as the window allows.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// UDP sockets (each with its own Identifier space).
    #[arg(long, default_value_t = 1)]
    sockets: usize,
    /// A request unanswered this long is a timeout, milliseconds.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// Calling number pattern: each `X` is replaced by a digit of a running
    /// counter (rightmost `X` = units).
    #[arg(long, default_value = "7495XXXXXXX")]
    a: String,
    /// Called number pattern, as `--a`.
    #[arg(long, default_value = "7812XXXXXXX")]
    b: String,
    /// in-trunkgroup-label value (the source operator id).
    #[arg(long, default_value = "1")]
    in_label: String,
}

/// `pattern` with its `X`s replaced by the digits of `n` (rightmost first,
/// `n` taken modulo 10^count).
fn fill(pattern: &str, mut n: u64) -> String {
    let mut out: Vec<char> = pattern.chars().collect();
    for ch in out.iter_mut().rev() {
        if *ch == 'X' || *ch == 'x' {
            *ch = char::from(b'0' + (n % 10) as u8);
            n /= 10;
        }
    }
    out.into_iter().collect()
}

/// splitmix64: cheap, well-spread authenticators. Not secret: a load test
/// needs distinct authenticators, not unpredictable ones.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn authenticator(seed: u64) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..8].copy_from_slice(&mix(seed).to_be_bytes());
    a[8..].copy_from_slice(&mix(seed ^ 0x5555_5555_5555_5555).to_be_bytes());
    a
}

#[derive(Clone, Copy)]
struct Pending {
    sent: Instant,
    authenticator: [u8; 16],
}

/// One socket's outstanding requests, indexed by Identifier.
struct Table {
    slots: Vec<Option<Pending>>,
    outstanding: usize,
    next_id: u8,
}

impl Table {
    fn new() -> Table {
        Table {
            slots: vec![None; 256],
            outstanding: 0,
            next_id: 0,
        }
    }

    /// A free Identifier, searching from the one after the last used.
    fn free_id(&mut self) -> Option<u8> {
        for _ in 0..256 {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            if self.slots[usize::from(id)].is_none() {
                return Some(id);
            }
        }
        None
    }

    /// Frees requests older than `timeout`; returns how many.
    fn expire(&mut self, now: Instant, timeout: Duration) -> u64 {
        let mut n = 0;
        for s in &mut self.slots {
            if s.is_some_and(|p| now.duration_since(p.sent) >= timeout) {
                *s = None;
                n += 1;
            }
        }
        self.outstanding -= n as usize;
        n
    }
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    send_errors: AtomicU64,
    accepts: AtomicU64,
    rejects: AtomicU64,
    other_codes: AtomicU64,
    mismatched: AtomicU64,
    timeouts: AtomicU64,
}

struct Shared {
    table: Mutex<Table>,
    freed: Condvar,
}

fn request_bytes(args: &Args, seq: u64, id: u8, auth: [u8; 16]) -> Vec<u8> {
    let attrs = vec![
        Attribute {
            typ: attr::CALLING_STATION_ID,
            value: fill(&args.a, seq).into_bytes(),
        },
        Attribute {
            typ: attr::CALLED_STATION_ID,
            value: fill(&args.b, seq).into_bytes(),
        },
        cisco_vsa(
            cisco::H323_CONF_ID,
            &format!("h323-conf-id=load-{}-{seq}", std::process::id()),
        ),
        cisco_vsa(
            cisco::AV_PAIR,
            &format!("in-trunkgroup-label={}", args.in_label),
        ),
    ];
    radius::request(id, auth, attrs, args.secret.as_bytes(), true)
}

/// Sends on `sock` until `deadline`, keeping at most `window` outstanding
/// and, when `interval` is set, one request per interval.
#[allow(clippy::too_many_arguments)]
fn sender(
    args: &Args,
    sock: &UdpSocket,
    shared: &Shared,
    counters: &Counters,
    window: usize,
    interval: Option<Duration>,
    deadline: Instant,
    seq_base: u64,
    seq_step: u64,
) {
    let timeout = Duration::from_millis(args.timeout_ms);
    let mut seq = seq_base;
    let mut next_at = Instant::now();
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        if let Some(iv) = interval {
            if now < next_at {
                thread::sleep((next_at - now).min(Duration::from_millis(5)));
                continue;
            }
            next_at += iv;
        }
        let id = {
            let mut t = shared.table.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                let now = Instant::now();
                counters
                    .timeouts
                    .fetch_add(t.expire(now, timeout), Ordering::Relaxed);
                if now >= deadline {
                    return;
                }
                if t.outstanding < window {
                    if let Some(id) = t.free_id() {
                        break id;
                    }
                }
                t = shared
                    .freed
                    .wait_timeout(t, Duration::from_millis(1))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        };
        let auth = authenticator(seq ^ (u64::from(std::process::id()) << 40));
        let bytes = request_bytes(args, seq, id, auth);
        {
            let mut t = shared.table.lock().unwrap_or_else(|e| e.into_inner());
            t.slots[usize::from(id)] = Some(Pending {
                sent: Instant::now(),
                authenticator: auth,
            });
            t.outstanding += 1;
        }
        match sock.send_to(&bytes, args.target) {
            Ok(_) => {
                counters.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                counters.send_errors.fetch_add(1, Ordering::Relaxed);
                let mut t = shared.table.lock().unwrap_or_else(|e| e.into_inner());
                t.slots[usize::from(id)] = None;
                t.outstanding -= 1;
            }
        }
        seq += seq_step;
    }
}

/// Receives answers until `stop`, recording latencies into the histogram it
/// returns.
fn receiver(
    args: &Args,
    sock: &UdpSocket,
    shared: &Shared,
    counters: &Counters,
    stop: &AtomicBool,
) -> Histogram {
    let mut hist = Histogram::new();
    let mut buf = [0u8; radius::MAX_PACKET_LEN];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue; // read timeout: look at `stop` again
        };
        let now = Instant::now();
        if from != args.target {
            continue;
        }
        let mut raw = buf[..n].to_vec();
        let Ok(p) = Packet::decode(&raw) else {
            counters.mismatched.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let mut t = shared.table.lock().unwrap_or_else(|e| e.into_inner());
        let slot = &mut t.slots[usize::from(p.identifier)];
        let Some(pending) = *slot else {
            counters.mismatched.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        raw[4..20].copy_from_slice(&pending.authenticator);
        if p.verify_message_authenticator(&raw, args.secret.as_bytes()) != Some(true) {
            counters.mismatched.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        *slot = None;
        t.outstanding -= 1;
        drop(t);
        shared.freed.notify_one();
        hist.record(u64::try_from(now.duration_since(pending.sent).as_nanos()).unwrap_or(u64::MAX));
        let c = match p.code {
            Code::AccessAccept => &counters.accepts,
            Code::AccessReject => &counters.rejects,
            _ => &counters.other_codes,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
    hist
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.sockets == 0 || args.window == 0 {
        bail!("--sockets and --window must be at least 1");
    }
    if args.window > 256 * args.sockets {
        bail!(
            "--window {} is more than 256 per socket; use --sockets {}",
            args.window,
            args.window.div_ceil(256)
        );
    }
    let duration_ok = args.duration.is_finite() && args.duration > 0.0;
    let rate_ok = args.rate.is_finite() && args.rate >= 0.0;
    if !duration_ok || !rate_ok {
        bail!("--duration must be positive and --rate not negative");
    }
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration);
    let interval =
        (args.rate > 0.0).then(|| Duration::from_secs_f64(args.sockets as f64 / args.rate));
    let bind = if args.target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for k in 0..args.sockets {
        let sock = Arc::new(UdpSocket::bind(bind).context("binding a UDP socket")?);
        sock.set_read_timeout(Some(Duration::from_millis(20)))?;
        let shared = Arc::new(Shared {
            table: Mutex::new(Table::new()),
            freed: Condvar::new(),
        });
        // The window split over the sockets, the remainder to the first ones.
        let window = args.window / args.sockets + usize::from(k < args.window % args.sockets);
        let (a, s, sh, c) = (args.clone(), sock.clone(), shared.clone(), counters.clone());
        let step = args.sockets as u64;
        senders.push(thread::spawn(move || {
            sender(
                &a,
                &s,
                &sh,
                &c,
                window.max(1),
                interval,
                deadline,
                k as u64,
                step,
            );
        }));
        let (a, s, sh, c, st) = (args.clone(), sock, shared, counters.clone(), stop.clone());
        receivers.push(thread::spawn(move || {
            let h = receiver(&a, &s, &sh, &c, &st);
            // What is still outstanding after the grace period timed out.
            let left = sh
                .table
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .outstanding;
            c.timeouts.fetch_add(left as u64, Ordering::Relaxed);
            h
        }));
    }
    for s in senders {
        let _ = s.join();
    }
    let sending = started.elapsed();
    // Let the last requests be answered or time out.
    thread::sleep(Duration::from_millis(args.timeout_ms));
    stop.store(true, Ordering::Relaxed);
    let mut hist = Histogram::new();
    for r in receivers {
        if let Ok(h) = r.join() {
            hist.merge(&h);
        }
    }
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let (sent, accepts, rejects) = (
        get(&counters.sent),
        get(&counters.accepts),
        get(&counters.rejects),
    );
    let answered = hist.count();
    let secs = sending.as_secs_f64();
    let us = |q: f64| hist.quantile(q) as f64 / 1000.0;
    let timeouts = get(&counters.timeouts);
    println!(
        "radius-load target={} sent={sent} answered={answered} accept={accepts} reject={rejects} \
         timeouts={timeouts} mismatched={} send_errors={} rate={:.0}/s p50={:.0}us p99={:.0}us max={:.0}us",
        args.target,
        get(&counters.mismatched),
        get(&counters.send_errors),
        answered as f64 / secs,
        us(0.5),
        us(0.99),
        hist.max() as f64 / 1000.0,
    );
    let json = serde_json::json!({
        "bench": "radius",
        "target": args.target.to_string(),
        "sockets": args.sockets,
        "window": args.window,
        "rate_asked": args.rate,
        "duration_s": secs,
        "sent": sent,
        "answered": answered,
        "accepts": accepts,
        "rejects": rejects,
        "other_codes": get(&counters.other_codes),
        "timeouts": timeouts,
        "mismatched": get(&counters.mismatched),
        "send_errors": get(&counters.send_errors),
        "throughput_per_s": answered as f64 / secs,
        "latency_us": { "p50": us(0.5), "p99": us(0.99), "max": hist.max() as f64 / 1000.0 },
    });
    println!("{json}");
    if answered == 0 && sent > 0 {
        eprintln!(
            "no answers from {}: is the server running, and the secret right?",
            args.target
        );
        std::process::exit(2);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_replaces_xs_from_the_right() {
        assert_eq!(fill("7495XXX", 42), "7495042");
        assert_eq!(fill("7495XX", 1234), "749534");
        assert_eq!(fill("749", 5), "749");
    }

    #[test]
    fn table_reuses_identifiers_and_expires() {
        let mut t = Table::new();
        let now = Instant::now();
        for _ in 0..256 {
            let id = t.free_id().unwrap();
            t.slots[usize::from(id)] = Some(Pending {
                sent: now,
                authenticator: [0; 16],
            });
            t.outstanding += 1;
        }
        assert_eq!(t.free_id(), None);
        assert_eq!(
            t.expire(now + Duration::from_secs(2), Duration::from_secs(1)),
            256
        );
        assert_eq!(t.outstanding, 0);
        assert!(t.free_id().is_some());
    }
}
