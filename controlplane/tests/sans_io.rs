//! The protocol folders stay sans-IO: no tokio, no sockets, no clock. Time
//! and randomness come in as arguments, so their tests can fake both.
//! Test modules (`tests.rs`, code after `#[cfg(test)]`) are not scanned.

use std::path::{Path, PathBuf};

/// Folders and files of this crate (and the data plane) that must not touch IO.
const SANS_IO: &[&str] = &[
    "src/sip/txn",
    "src/sip/message",
    "src/sip/dialog.rs",
    "src/sip/auth.rs",
    "src/sip/transport/framing.rs",
    "src/routing",
    "src/sdp",
    "../dataplane/src/packet",
    "../dataplane/src/session",
];

const FORBIDDEN: &[&str] = &[
    "tokio",
    "std::net::UdpSocket",
    "std::net::TcpStream",
    "Instant::now",
    "SystemTime::now",
    "Utc::now",
    "thread::sleep",
];

fn files(p: &Path, out: &mut Vec<PathBuf>) {
    if p.is_dir() {
        for e in std::fs::read_dir(p).expect("readable folder").flatten() {
            files(&e.path(), out);
        }
    } else if p.extension().is_some_and(|e| e == "rs")
        && p.file_name().is_some_and(|n| n != "tests.rs")
    {
        out.push(p.to_path_buf());
    }
}

#[test]
fn protocol_code_does_no_io_and_reads_no_clock() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut all = Vec::new();
    for p in SANS_IO {
        let path = root.join(p);
        assert!(path.exists(), "{} is gone: update SANS_IO", path.display());
        files(&path, &mut all);
    }
    assert!(all.len() > 10, "scanned too few files: {all:?}");
    let mut found = Vec::new();
    for f in &all {
        let text = std::fs::read_to_string(f).expect("readable file");
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            // An inline test module ends the scan; `#[cfg(test)] mod tests;`
            // does not.
            let inline_tests = line.trim_start().starts_with("#[cfg(test)]")
                && lines.get(n + 1).is_some_and(|next| next.contains('{'));
            if inline_tests {
                break;
            }
            let code = line.split("//").next().unwrap_or("");
            for word in FORBIDDEN {
                if code.contains(word) {
                    found.push(format!("{}:{}: {word}", f.display(), n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "IO or clock in sans-IO code:\n{}",
        found.join("\n")
    );
}
