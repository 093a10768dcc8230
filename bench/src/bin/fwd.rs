//! `kordon-fwd`: the minimal UDP forwarder, the syscall ceiling Kordon is
//! compared against. It binds `--pairs` port pairs on 127.0.0.1 — pair `i` is
//! ports `(P + 4i, P + 4i + 2)` — latches the first source seen on each port, and
//! sends whatever arrives on one port of a pair out of the other port to that
//! port's latched source (dropping it while that side has not latched). One
//! thread, epoll, `recvmmsg`/`sendmmsg` with 64-message batches, no copy.
//! Nothing else: no parsing, no counters per packet, no validation of sources.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use kordon_bench::sys::{self, Epoll, Forwarder, RecvBatch, MAX_BATCH};
use socket2::{Domain, Protocol, Socket, Type};

/// Socket buffer size asked for each port.
const SOCKET_BUFFER: usize = 4 << 20;
/// Most `recvmmsg` calls on one port per readiness.
const MAX_ROUNDS: usize = 8;

#[derive(Parser)]
#[command(
    name = "kordon-fwd",
    about = "Minimal recvmmsg/sendmmsg UDP forwarder (the syscall ceiling)"
)]
struct Args {
    /// Number of port pairs.
    #[arg(long, default_value_t = 1000)]
    pairs: u16,
    /// First port; pair i is (P + 4i, P + 4i + 2).
    #[arg(long, default_value_t = 2000)]
    base_port: u16,
    /// Pin the process to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
    /// Exit by itself after this many seconds.
    #[arg(long, default_value_t = 3600)]
    lifetime: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(cpu) = args.cpu {
        sys::pin_to_cpu(cpu).with_context(|| format!("pin to CPU {cpu}"))?;
    }
    let last = u32::from(args.base_port) + 4 * u32::from(args.pairs.max(1) - 1) + 2;
    anyhow::ensure!(last <= 65535, "ports run past 65535");
    let mut socks = Vec::with_capacity(2 * usize::from(args.pairs));
    for i in 0..args.pairs {
        for off in [0u16, 2] {
            let port = args.base_port + 4 * i + off;
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            s.set_nonblocking(true)?;
            sys::set_buffers(s.as_raw_fd(), SOCKET_BUFFER);
            let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
            s.bind(&addr.into())
                .with_context(|| format!("bind {addr}"))?;
            socks.push(UdpSocket::from(s));
        }
    }
    let fds: Vec<i32> = socks.iter().map(|s| s.as_raw_fd()).collect();
    let mut epoll = Epoll::new(256)?;
    for (i, fd) in fds.iter().enumerate() {
        epoll.add_readable(*fd, i as u64)?;
    }
    println!(
        "kordon-fwd: ready, {} pairs on 127.0.0.1:{}..{}",
        args.pairs, args.base_port, last
    );

    let mut latched: Vec<Option<SocketAddrV4>> = vec![None; fds.len()];
    let mut rb = RecvBatch::new();
    let mut fw = Forwarder::new();
    let (mut rx, mut tx, mut unlatched, mut refused) = (0u64, 0u64, 0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(args.lifetime);
    while Instant::now() < deadline {
        let n = epoll.wait(500)?;
        for e in 0..n {
            let j = epoll.token(e) as usize;
            let peer = j ^ 1;
            for _ in 0..MAX_ROUNDS {
                let got = rb.recv(fds[j])?;
                if got == 0 {
                    break;
                }
                rx += got as u64;
                if latched[j].is_none() {
                    latched[j] = Some(rb.source(0));
                }
                match latched[peer] {
                    Some(dst) => {
                        let (sent, _) = fw.forward(fds[peer], &rb, dst);
                        tx += sent as u64;
                        refused += (got - sent) as u64;
                    }
                    None => unlatched += got as u64,
                }
                if got < MAX_BATCH {
                    break;
                }
            }
        }
    }
    eprintln!("kordon-fwd: lifetime over; rx {rx} tx {tx} dropped-unlatched {unlatched} send-refused {refused}");
    Ok(())
}
