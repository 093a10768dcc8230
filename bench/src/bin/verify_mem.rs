//! Memory of the verification node's registry of outgoing calls: registers
//! N calls (distinct A and B, as a busy network would) in a fresh process
//! and reports the resident set growth per call, plus the time per
//! registration and per lookup. Same allocator as `kordon` (mimalloc).
//!
//! `kordon-verify-mem --calls 1000000`

use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use kordon_bench::procfs::process_rss_bytes;
use kordon_controlplane::verify::ber::CalledNumber;
use kordon_controlplane::verify::isup::IsupNumber;
use kordon_controlplane::verify::registry::Registry;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Registry memory per kept call.
#[derive(Parser, Debug)]
struct Args {
    /// Calls to register.
    #[arg(long, default_value_t = 1_000_000)]
    calls: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let pid = std::process::id();
    let reg = Registry::new(b"bench-network-key", 3600);
    // Numbers and call ids are made on the fly; only the registry keeps them.
    let a = |i: u64| format!("7495{:07}", i % 10_000_000);
    let b = |i: u64| format!("7812{:07}", (i * 7919) % 10_000_000);
    let before = process_rss_bytes(pid)?;
    let t0 = Instant::now();
    for i in 0..args.calls {
        reg.register(&format!("call-{i:016x}@kordon"), &a(i), &b(i), 22)
            .map_err(|e| anyhow::anyhow!("registering call {i}: {e}"))?;
    }
    let reg_ns = t0.elapsed().as_nanos() as f64 / args.calls as f64;
    let after = process_rss_bytes(pid)?;
    let per_call = (after.saturating_sub(before)) as f64 / args.calls as f64;
    // Lookups as an answering node does them (clear B; hashed B costs the
    // same minus one HMAC).
    let probes = args.calls.min(200_000);
    let t1 = Instant::now();
    let mut found = 0u64;
    for i in 0..probes {
        let called = CalledNumber::Plain(IsupNumber::international(&b(i))?);
        found += u64::from(reg.find(&a(i), &called).is_some());
    }
    let find_ns = t1.elapsed().as_nanos() as f64 / probes as f64;
    anyhow::ensure!(found == probes, "only {found} of {probes} calls found");
    println!(
        "registry: {} calls, RSS {:.1} MiB -> {:.1} MiB, {:.1} bytes/call; register {:.0} ns, find {:.0} ns",
        reg.len(),
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        per_call,
        reg_ns,
        find_ns
    );
    println!(
        "{{\"calls\":{},\"bytes_per_call\":{:.1},\"register_ns\":{:.0},\"find_ns\":{:.0}}}",
        reg.len(),
        per_call,
        reg_ns,
        find_ns
    );
    Ok(())
}
