//! The data plane's part of Kordon's TOML configuration (`[dataplane]`), with a
//! built-in default for every key and a validation that names the offending key.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

/// A setting that cannot be used, with the dotted key that holds it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ConfigError {
    /// Dotted path of the key, e.g. `dataplane.interfaces.external.port_min`.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    /// Builds an error for `key`.
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Packet IO backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendChoice {
    /// io_uring when the kernel allows it, else recvmmsg/sendmmsg.
    Auto,
    /// io_uring (falls back to mmsg, with a log line saying why, when refused).
    IoUring,
    /// epoll + recvmmsg/sendmmsg.
    Mmsg,
}

/// Default latching rule for legs that do not ask for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LatchModeConfig {
    /// The expected source IP, any port.
    ExpectedIp,
    /// The expected source IP and the announced port.
    Strict,
    /// Any first source (trusted networks only; needs `allow_learn_any`).
    LearnAny,
}

/// One named media interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceConfig {
    /// Local address the sockets bind to.
    pub bind: IpAddr,
    /// Address announced to peers (1:1 NAT); default: `bind`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertised: Option<IpAddr>,
    /// First port of the range (RTP uses even ports, RTCP the odd one above).
    pub port_min: u16,
    /// Last port of the range, inclusive.
    pub port_max: u16,
}

impl InterfaceConfig {
    /// The address peers are told to send to.
    pub fn advertised(&self) -> IpAddr {
        self.advertised.unwrap_or(self.bind)
    }

    /// Number of RTP/RTCP port pairs in the range.
    pub fn pairs(&self) -> u32 {
        let first = u32::from(self.port_min).div_ceil(2) * 2;
        let last = u32::from(self.port_max);
        if last < first + 1 {
            0
        } else {
            (last - first).div_ceil(2)
        }
    }
}

/// `[dataplane]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataplaneConfig {
    /// Worker threads; 0 = one per core.
    pub workers: usize,
    /// CPUs to pin workers to, in order; empty = worker i on CPU i.
    pub cpus: Vec<usize>,
    /// Pin workers to CPUs.
    pub pin_workers: bool,
    /// Packet IO backend.
    pub backend: BackendChoice,
    /// gRPC control listener.
    pub grpc_listen: SocketAddr,
    /// Named media interfaces.
    pub interfaces: BTreeMap<String, InterfaceConfig>,
    /// SO_RCVBUF of every media socket (forced past rmem_max when root).
    pub socket_rcvbuf_bytes: usize,
    /// SO_SNDBUF of every media socket.
    pub socket_sndbuf_bytes: usize,
    /// Most packets a worker reads in one loop turn before it serves commands
    /// and timers again (overload fairness).
    pub max_packets_per_turn: usize,
    /// io_uring submission queue entries per worker.
    pub uring_entries: u32,
    /// Receive buffers per worker (io_uring provided-buffer ring; a power of two).
    pub recv_buffers: u32,
    /// Size of one receive buffer; larger datagrams are dropped.
    pub recv_buffer_bytes: u32,
    /// A session with no accepted packet for this long raises an event.
    pub inactivity_timeout_secs: u32,
    /// Default latching rule.
    pub latch_mode: LatchModeConfig,
    /// Allow `learn-any` latching at all (trusted networks only).
    pub allow_learn_any: bool,
    /// A latched source silent for this long may be replaced by a new source
    /// that passes the latch rule; 0 = only the control plane re-latches.
    pub relatch_idle_ms: u64,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        let mut interfaces = BTreeMap::new();
        interfaces.insert(
            "internal".to_string(),
            InterfaceConfig {
                bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
                advertised: None,
                port_min: 16384,
                port_max: 24575,
            },
        );
        interfaces.insert(
            "external".to_string(),
            InterfaceConfig {
                bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
                advertised: None,
                port_min: 24576,
                port_max: 32767,
            },
        );
        DataplaneConfig {
            workers: 0,
            cpus: Vec::new(),
            pin_workers: true,
            backend: BackendChoice::Auto,
            grpc_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 50051)),
            interfaces,
            socket_rcvbuf_bytes: 256 * 1024,
            socket_sndbuf_bytes: 256 * 1024,
            max_packets_per_turn: 256,
            uring_entries: 4096,
            recv_buffers: 4096,
            recv_buffer_bytes: 2048,
            inactivity_timeout_secs: 60,
            latch_mode: LatchModeConfig::ExpectedIp,
            allow_learn_any: false,
            relatch_idle_ms: 2000,
        }
    }
}

impl DataplaneConfig {
    /// Worker count after resolving 0 to the number of cores.
    pub fn worker_count(&self) -> usize {
        if self.workers == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            self.workers
        }
    }

    /// Checks every value; `prefix` is the table's dotted path (`dataplane`).
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{prefix}.{k}");
        if self.workers > 256 {
            return Err(ConfigError::new(key("workers"), "at most 256"));
        }
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        for (i, cpu) in self.cpus.iter().enumerate() {
            if *cpu >= cores.max(1024) {
                return Err(ConfigError::new(
                    format!("{prefix}.cpus[{i}]"),
                    format!("CPU {cpu} does not exist"),
                ));
            }
        }
        if self.interfaces.is_empty() {
            return Err(ConfigError::new(
                key("interfaces"),
                "at least one media interface is needed",
            ));
        }
        let mut seen: Vec<(&str, &InterfaceConfig)> = Vec::new();
        for (name, itf) in &self.interfaces {
            let ik = |k: &str| format!("{prefix}.interfaces.{name}.{k}");
            if name.is_empty()
                || name.len() > 32
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(ConfigError::new(
                    format!("{prefix}.interfaces.{name}"),
                    "name must be 1-32 characters of [A-Za-z0-9_-]",
                ));
            }
            if itf.port_min < 1024 {
                return Err(ConfigError::new(ik("port_min"), "must be 1024 or above"));
            }
            if itf.port_max < itf.port_min {
                return Err(ConfigError::new(
                    ik("port_max"),
                    format!("below port_min ({})", itf.port_min),
                ));
            }
            if itf.pairs() == 0 {
                return Err(ConfigError::new(
                    ik("port_max"),
                    "the range holds no even/odd port pair",
                ));
            }
            if itf.advertised().is_unspecified() {
                return Err(ConfigError::new(
                    ik("advertised"),
                    "bind is a wildcard address: set the address peers must send to",
                ));
            }
            for (other, o) in &seen {
                let same_addr =
                    o.bind == itf.bind || o.bind.is_unspecified() || itf.bind.is_unspecified();
                if same_addr && itf.port_min <= o.port_max && o.port_min <= itf.port_max {
                    return Err(ConfigError::new(
                        ik("port_min"),
                        format!("range overlaps interface {other:?} on the same address"),
                    ));
                }
            }
            seen.push((name, itf));
        }
        if self.max_packets_per_turn == 0 || self.max_packets_per_turn > 65536 {
            return Err(ConfigError::new(
                key("max_packets_per_turn"),
                "must be 1..=65536",
            ));
        }
        if !(8..=32768).contains(&self.uring_entries) || !self.uring_entries.is_power_of_two() {
            return Err(ConfigError::new(
                key("uring_entries"),
                "must be a power of two in 8..=32768",
            ));
        }
        if !(64..=32768).contains(&self.recv_buffers) || !self.recv_buffers.is_power_of_two() {
            return Err(ConfigError::new(
                key("recv_buffers"),
                "must be a power of two in 64..=32768",
            ));
        }
        if !(256..=65536).contains(&self.recv_buffer_bytes) {
            return Err(ConfigError::new(
                key("recv_buffer_bytes"),
                "must be 256..=65536",
            ));
        }
        if self.latch_mode == LatchModeConfig::LearnAny && !self.allow_learn_any {
            return Err(ConfigError::new(
                key("latch_mode"),
                "learn-any needs allow_learn_any = true (trusted networks only)",
            ));
        }
        if self.inactivity_timeout_secs == 0 {
            return Err(ConfigError::new(
                key("inactivity_timeout_secs"),
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// File descriptors the port ranges can need (two sockets per pair), plus
    /// head room for the process itself.
    pub fn fd_budget(&self) -> u64 {
        self.interfaces
            .values()
            .map(|i| u64::from(i.pairs()) * 2)
            .sum::<u64>()
            + 1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        DataplaneConfig::default().validate("dataplane").unwrap();
    }

    #[test]
    fn names_the_key_of_a_bad_range() {
        let mut c = DataplaneConfig::default();
        c.interfaces.get_mut("external").unwrap().port_max = 100;
        let e = c.validate("dataplane").unwrap_err();
        assert_eq!(e.key, "dataplane.interfaces.external.port_max");
    }

    #[test]
    fn refuses_overlapping_ranges_on_one_address() {
        let mut c = DataplaneConfig::default();
        c.interfaces.get_mut("external").unwrap().port_min = 20000;
        let e = c.validate("dataplane").unwrap_err();
        assert!(e.reason.contains("overlaps"), "{e}");
    }

    #[test]
    fn learn_any_needs_opt_in() {
        let c = DataplaneConfig {
            latch_mode: LatchModeConfig::LearnAny,
            ..Default::default()
        };
        assert_eq!(
            c.validate("dataplane").unwrap_err().key,
            "dataplane.latch_mode"
        );
    }

    #[test]
    fn counts_pairs() {
        let i = InterfaceConfig {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            advertised: None,
            port_min: 16385,
            port_max: 16390,
        };
        // 16386/7, 16388/9; 16390 has no odd partner.
        assert_eq!(i.pairs(), 2);
    }
}
