//! Readers for the few `/proc` figures the bench reports: a process's CPU time
//! (all its threads) and resident memory, a CPU's busy time, and UDP socket drops.

use std::collections::HashSet;
use std::fs;
use std::io;

use crate::sys;

/// CPU time of a whole process (every thread, live or exited), in ns, from the
/// `utime` and `stime` fields of `/proc/PID/stat`.
pub fn process_cpu_ns(pid: u32) -> io::Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = parse_stat_cpu_ticks(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/PID/stat"))?;
    Ok(ticks_to_ns(ticks))
}

/// Converts `/proc` clock ticks to nanoseconds.
pub fn ticks_to_ns(ticks: u64) -> u64 {
    ticks.saturating_mul(1_000_000_000) / sys::clock_ticks_per_sec()
}

/// `utime + stime` (clock ticks) from the text of `/proc/PID/stat`. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted from the
/// last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After ')': field 3 (state) is index 0, so utime (14) is index 11, stime (15) index 12.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size of a process in bytes (`VmRSS` of `/proc/PID/status`).
pub fn process_rss_bytes(pid: u32) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vmrss_bytes(&status).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS"))
}

/// `VmRSS` in bytes from the text of `/proc/PID/status`.
pub fn parse_vmrss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Number of open file descriptors of a process.
pub fn process_fd_count(pid: u32) -> io::Result<u64> {
    Ok(fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64)
}

/// Idle time (idle + iowait) of one CPU in ns, from `/proc/stat`. On a tickless
/// kernel these two fields are measured exactly when the CPU sleeps, whereas the
/// busy fields are sampled at ticks (and alias with any periodic load), so a
/// CPU's busy time over an interval is best taken as wall time − idle time. It
/// then includes softirq work done in `ksoftirqd` and anything else that ran on
/// that CPU.
pub fn cpu_idle_ns(cpu: usize) -> io::Result<u64> {
    let stat = fs::read_to_string("/proc/stat")?;
    parse_cpu_idle_ticks(&stat, cpu)
        .map(ticks_to_ns)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "cpu line missing in /proc/stat"))
}

/// Idle + iowait ticks of `cpuN` from the text of `/proc/stat`.
pub fn parse_cpu_idle_ticks(stat: &str, cpu: usize) -> Option<u64> {
    let name = format!("cpu{cpu}");
    let line = stat
        .lines()
        .find(|l| l.split_ascii_whitespace().next() == Some(name.as_str()))?;
    // user nice system idle iowait irq softirq steal guest guest_nice
    let mut f = line.split_ascii_whitespace().skip(4);
    let idle: u64 = f.next()?.parse().ok()?;
    let iowait: u64 = f.next()?.parse().ok()?;
    Some(idle + iowait)
}

/// UDP receive-buffer drops of IPv4 sockets, by owner.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UdpDrops {
    /// Drops on sockets bound to one of the given ports (the generator's).
    pub mine: u64,
    /// Drops on sockets of the relay process (by socket inode).
    pub relay: u64,
    /// Drops on every other UDP socket of the host.
    pub others: u64,
}

impl UdpDrops {
    /// Counter increase from `self` to `later`.
    pub fn since(&self, later: &UdpDrops) -> UdpDrops {
        UdpDrops {
            mine: later.mine.saturating_sub(self.mine),
            relay: later.relay.saturating_sub(self.relay),
            others: later.others.saturating_sub(self.others),
        }
    }
}

/// Inodes of the sockets a process holds open (`/proc/PID/fd` → `socket:[N]`).
pub fn socket_inodes(pid: u32) -> io::Result<HashSet<u64>> {
    let mut set = HashSet::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(link) = fs::read_link(entry?.path()) else {
            continue;
        };
        let link = link.to_string_lossy();
        if let Some(n) = link
            .strip_prefix("socket:[")
            .and_then(|r| r.strip_suffix(']'))
        {
            if let Ok(inode) = n.parse() {
                set.insert(inode);
            }
        }
    }
    Ok(set)
}

/// Reads `/proc/net/udp` and sums the `drops` column by owner.
pub fn udp_drops(my_ports: &HashSet<u16>, relay_inodes: &HashSet<u64>) -> io::Result<UdpDrops> {
    let text = fs::read_to_string("/proc/net/udp")?;
    Ok(parse_udp_drops(&text, my_ports, relay_inodes))
}

/// Sums the `drops` column of a `/proc/net/udp` text by owner: local port in
/// `my_ports`, else inode in `relay_inodes`, else other.
pub fn parse_udp_drops(
    text: &str,
    my_ports: &HashSet<u16>,
    relay_inodes: &HashSet<u64>,
) -> UdpDrops {
    let mut d = UdpDrops::default();
    for line in text.lines().skip(1) {
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        if f.len() < 13 {
            continue;
        }
        let Ok(drops) = f[f.len() - 1].parse::<u64>() else {
            continue;
        };
        let port = f[1]
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
            .unwrap_or(0);
        let inode: u64 = f[9].parse().unwrap_or(0);
        if my_ports.contains(&port) {
            d.mine += drops;
        } else if relay_inodes.contains(&inode) {
            d.relay += drops;
        } else {
            d.others += drops;
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_ticks_counts_from_last_paren() {
        let s = "1234 (a b) c)) S 1 1 1 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 1 2 3";
        assert_eq!(parse_stat_cpu_ticks(s), Some(325));
    }

    #[test]
    fn vmrss_is_read_in_bytes() {
        let s = "Name:\tx\nVmPeak:\t  100 kB\nVmRSS:\t    2048 kB\nThreads: 3\n";
        assert_eq!(parse_vmrss_bytes(s), Some(2048 * 1024));
    }

    #[test]
    fn cpu_idle_adds_idle_and_iowait() {
        let s =
            "cpu  9 9 9 9 9 9 9 9 0 0\ncpu0 1 2 3 1000 50 4 5 6 0 0\ncpu1 10 0 20 5 5 0 30 0 0 0\n";
        assert_eq!(parse_cpu_idle_ticks(s, 0), Some(1050));
        assert_eq!(parse_cpu_idle_ticks(s, 1), Some(10));
        assert_eq!(parse_cpu_idle_ticks(s, 2), None);
    }

    #[test]
    fn udp_drops_split_by_port_then_inode() {
        let s = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                 1: 0100007F:EE48 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 11 2 0000000000000000 7\n\
                 2: 0100007F:07D0 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 22 2 0000000000000000 3\n\
                 3: 0100007F:07D2 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 33 2 0000000000000000 5\n";
        let mine: HashSet<u16> = [0xEE48].into_iter().collect();
        let relay: HashSet<u64> = [22].into_iter().collect();
        assert_eq!(
            parse_udp_drops(s, &mine, &relay),
            UdpDrops {
                mine: 7,
                relay: 3,
                others: 5
            }
        );
    }

    #[test]
    fn own_socket_inodes_are_listed() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let inodes = socket_inodes(std::process::id()).unwrap();
        assert!(!inodes.is_empty());
        drop(sock);
    }
}
