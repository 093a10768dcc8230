//! io_uring refused by the kernel: with `kernel.io_uring_disabled = 2`, a data
//! plane configured for io_uring must fall back to recvmmsg/sendmmsg, say so in
//! its log and in Stats, and relay.
//!
//! In its own test binary, because the sysctl is machine-wide: cargo runs test
//! binaries one after another, so no other test of this suite sees it. The
//! previous value (0) is restored as soon as Kordon has started (the backend
//! is chosen at start-up), or by a drop guard if anything panics. The test only
//! runs from 0, so that two runs at once never leave io_uring disabled.

mod common;

use std::path::Path;

use common::*;

const SYSCTL: &str = "/proc/sys/kernel/io_uring_disabled";

/// Restores the sysctl's previous value when dropped.
struct Restore {
    previous: String,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(SYSCTL, &self.previous) {
            eprintln!(
                "could not restore {SYSCTL} to {}: {e}",
                self.previous.trim()
            );
        }
    }
}

#[test]
fn io_uring_disabled_by_sysctl_falls_back_to_mmsg_and_says_why() {
    if !Path::new(SYSCTL).exists() {
        eprintln!("skipped: {SYSCTL} does not exist (kernel older than 6.6)");
        return;
    }
    let previous = std::fs::read_to_string(SYSCTL).expect("reading the sysctl");
    if previous.trim() != "0" {
        // Already restricted: by the administrator, or by a concurrent run of this
        // test, whose value must not be "restored" by us after it restored 0.
        eprintln!("skipped: {SYSCTL} is {} already, not 0", previous.trim());
        return;
    }
    if let Err(e) = std::fs::write(SYSCTL, "2") {
        eprintln!(
            "skipped: {SYSCTL} is not writable here ({e}); run as root to cover the fallback"
        );
        return;
    }
    let restore = Restore {
        previous: previous.clone(),
    };

    let k = Kordon::start(Config::new().backend("io_uring"));
    drop(restore);
    assert_eq!(
        std::fs::read_to_string(SYSCTL).unwrap().trim(),
        previous.trim(),
        "{SYSCTL} is restored"
    );

    let stats = k.stats();
    assert_eq!(stats.total.as_ref().unwrap().backend, "mmsg", "{stats:#?}");
    assert!(
        stats.workers.iter().all(|w| w.backend == "mmsg"),
        "{stats:#?}"
    );
    let log = k.log();
    assert!(
        log.contains("falling back"),
        "the log says it falls back:\n{log}"
    );
    assert!(log.contains("EPERM"), "the log says why (EPERM):\n{log}");

    let (a, b) = (Peer::bind("127.0.0.1"), Peer::bind("127.0.0.1"));
    let call = k.call("fallback", &a, &b);
    relay(&a, call.a_local, &b, call.b_local, 0xA, 1, 5);
    relay(&b, call.b_local, &a, call.a_local, 0xB, 1, 5);
}
