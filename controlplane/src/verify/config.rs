//! `[verify]`: the call verification node's settings.
//!
//! Keys keep the names of the node's classic `uvrd.conf` where one applies
//! (`w_size`, `req_timer`, `call_timer`, `release_code`...), so an operator
//! who knows that file finds them; `kordon verify import-uvrd` converts such
//! a file. Every key has a default; the defaults listen on loopback only.
//!
//! Paths left empty are placed under the data directory (see the `*_dir`
//! methods); relative paths are taken relative to it.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::routing::NumberingConfig;

/// One node id this node answers for (the classic `[uvr_N]` sections).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeIdConfig {
    /// The node id (`uvr_id`): `uvrT` of requests we answer, `uvrO` of the
    /// requests we send.
    pub uvr_id: u32,
    /// The operator id of the operator this node serves (`operator_id`,
    /// compared with `id_src`/`id_dst` and trunk labels).
    pub operator_id: u32,
}

/// Another operator's number range, configured inline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeConfig {
    /// First number, E.164 digits.
    pub from: String,
    /// Last number, E.164 digits, same length as `from`.
    pub to: String,
    /// The node (`uvrT`) that answers for these numbers.
    pub uvr: u32,
}

/// One preset interval of `[last_numbers]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresetInterval {
    /// `"FROM-TO"`, E.164 digits of equal length (the classic `int_N`).
    pub range: String,
    /// This interval's answer (the classic `int_event_N`); absent = the
    /// section's `int_event`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<u8>,
}

/// `[verify.last_numbers]`: preset answers to incoming verification requests
/// for numbers A in given intervals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LastNumbers {
    /// Answer of intervals without their own: 0 Continue, 1 no answer (the
    /// asking node times out), 2 Release.
    pub int_event: u8,
    /// The intervals.
    pub intervals: Vec<PresetInterval>,
}

impl Default for LastNumbers {
    fn default() -> Self {
        LastNumbers {
            int_event: 1,
            intervals: Vec::new(),
        }
    }
}

/// The `[verify]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifyConfig {
    /// Run the node (REST, RADIUS, inter-node listeners, SBC checks).
    pub enabled: bool,
    /// The node ids served here (at least one).
    pub nodes: Vec<NodeIdConfig>,
    /// How numbers without `+` are read (the classic `abc` is `numbering.abc`).
    /// Every node of the network must read numbers alike, or hashed numbers B
    /// will not match.
    pub numbering: NumberingConfig,
    /// Send number B hashed (`7E 00` + 8 bytes) rather than in clear.
    pub hashed: bool,
    /// The network-wide key of the number hash (text, used as bytes).
    pub hash_key: String,
    /// Encryption of the exchange (serviceKey 0x81): not supported; `true` is
    /// refused at start-up.
    pub encrypted: bool,
    /// Q.850 cause of a call released after verification.
    pub release_code: u8,
    /// When the asked node does not answer in time: 0 lets the call through,
    /// any other value releases it with that cause.
    pub timeout_code: u8,
    /// When verification fails with an error (error answer, unreachable node,
    /// no node known for number A): 0 lets the call through, any other value
    /// releases it with that cause.
    pub error_code: u8,
    /// Answering a request, check first that number A is of our capacity;
    /// when not, answer error 5 and record verification code 4.
    pub verify_own_number: bool,
    /// An incoming call (from another operator) whose number A is of our own
    /// capacity is checked against our registry of outgoing calls.
    pub verify_own_a: bool,
    /// Most verification requests in flight towards other nodes.
    pub w_size: usize,
    /// Most rows a report reads (0 = no bound).
    pub limit_sql: u64,
    /// Days verification records are kept.
    pub db_days: u32,
    /// Time of day (UTC, `HH:MM`) of the daily clean-up of old records.
    pub db_cut_time: String,
    /// Records database (empty = `<data_dir>/verify.sqlite`).
    pub db_path: String,
    /// REST listener address (empty = off).
    pub rest_addr: String,
    /// REST listener port.
    pub rest_port: u16,
    /// RADIUS listener address (empty = off).
    pub radius_addr: String,
    /// RADIUS listener port.
    pub radius_port: u16,
    /// RADIUS shared secret.
    pub radius_secret: String,
    /// Drop Access-Requests that carry no Message-Authenticator.
    pub radius_require_message_authenticator: bool,
    /// Inter-node listener address (empty = off).
    pub addr_local: String,
    /// Inter-node listener port.
    pub local_port: u16,
    /// The hub (`УВз`) requests go to when `peers` has no entry (empty = none).
    pub remote_addr: String,
    /// The hub's port.
    pub remote_port: u16,
    /// Direct peering: `uvrT` (as a string key) → `ip:port` of that node.
    pub peers: BTreeMap<String, String>,
    /// How long to wait for an answer from another node, milliseconds.
    pub req_timer: u64,
    /// How long an outgoing call stays in the registry, seconds.
    pub call_timer: u64,
    /// How often the SETUP and ranges directories are scanned, seconds.
    pub main_timer: u64,
    /// Directory watched for SETUP files (empty = `<data_dir>/verify/setup`).
    pub setup_path: String,
    /// Where applied SETUP files go (empty = `<data_dir>/verify/setup-out`).
    pub setup_outbox: String,
    /// Where refused SETUP files go, each with a `.error` note beside it
    /// (empty = `<data_dir>/verify/setup-refused`).
    pub setup_refused: String,
    /// Directory of other operators' range files (empty =
    /// `<data_dir>/verify/ranges`).
    pub ranges_path: String,
    /// Other operators' ranges given inline.
    pub ranges: Vec<RangeConfig>,
    /// Preset answers.
    pub last_numbers: LastNumbers,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            enabled: true,
            nodes: vec![NodeIdConfig {
                uvr_id: 1,
                operator_id: 1,
            }],
            numbering: NumberingConfig::default(),
            hashed: true,
            hash_key: "change-this-network-key".to_string(),
            encrypted: false,
            release_code: 50,
            timeout_code: 0,
            error_code: 0,
            verify_own_number: true,
            verify_own_a: true,
            w_size: 64,
            limit_sql: 10_000,
            db_days: 366,
            db_cut_time: "00:30".to_string(),
            db_path: String::new(),
            rest_addr: "127.0.0.1".to_string(),
            rest_port: 8085,
            radius_addr: "127.0.0.1".to_string(),
            radius_port: 1812,
            radius_secret: "change-this-secret".to_string(),
            radius_require_message_authenticator: false,
            addr_local: "127.0.0.1".to_string(),
            local_port: 8081,
            remote_addr: String::new(),
            remote_port: 8081,
            peers: BTreeMap::new(),
            req_timer: 1500,
            call_timer: 3600,
            main_timer: 67,
            setup_path: String::new(),
            setup_outbox: String::new(),
            setup_refused: String::new(),
            ranges_path: String::new(),
            ranges: Vec::new(),
            last_numbers: LastNumbers::default(),
        }
    }
}

/// Largest `w_size`.
const MAX_WINDOW: usize = 4096;

fn listener(key: &str, addr: &str, port: u16) -> Result<Option<SocketAddr>, String> {
    if addr.is_empty() {
        return Ok(None);
    }
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("verify.{key}: {addr:?} is not an IP address"))?;
    Ok(Some(SocketAddr::new(ip, port)))
}

fn under(data_dir: &Path, value: &str, default: &str) -> PathBuf {
    if value.is_empty() {
        data_dir.join(default)
    } else {
        data_dir.join(value)
    }
}

/// Parses `HH:MM` into minutes after midnight.
pub fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let h: u32 = h.parse().ok()?;
    let m: u32 = m.parse().ok()?;
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// Parses `"FROM-TO"` into its two digit strings.
pub fn parse_interval(s: &str) -> Option<(&str, &str)> {
    let (a, b) = s.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let a = a.strip_prefix('+').unwrap_or(a);
    let b = b.strip_prefix('+').unwrap_or(b);
    Some((a, b))
}

impl VerifyConfig {
    /// Checks every key; the error is `(dotted key, reason)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let e = |k: &str, m: String| (format!("verify.{k}"), m);
        if self.encrypted {
            return Err(e(
                "encrypted",
                "encrypted exchange (serviceKey 0x81) is not supported; set encrypted = false"
                    .to_string(),
            ));
        }
        if self.nodes.is_empty() {
            return Err(e("nodes", "at least one node id is needed".to_string()));
        }
        let mut ids: Vec<u32> = self.nodes.iter().map(|n| n.uvr_id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(e("nodes", "a uvr_id appears twice".to_string()));
        }
        if let Err(m) = self.numbering.validate() {
            return Err(match m.split_once(':') {
                Some((k, r)) => (format!("verify.{}", k.trim()), r.trim().to_string()),
                None => ("verify.numbering".to_string(), m),
            });
        }
        if self.hashed && self.hash_key.is_empty() {
            return Err(e("hash_key", "must not be empty when hashed = true".into()));
        }
        if self.w_size == 0 || self.w_size > MAX_WINDOW {
            return Err(e("w_size", format!("must be 1 to {MAX_WINDOW}")));
        }
        if self.req_timer == 0 || self.req_timer > 60_000 {
            return Err(e("req_timer", "must be 1 to 60000 ms".into()));
        }
        if self.call_timer == 0 || self.call_timer > 7 * 86_400 {
            return Err(e("call_timer", "must be 1 s to 7 days".into()));
        }
        if self.main_timer == 0 || self.main_timer > 86_400 {
            return Err(e("main_timer", "must be 1 s to 1 day".into()));
        }
        if self.db_days == 0 {
            return Err(e("db_days", "must be at least 1".into()));
        }
        if parse_hhmm(&self.db_cut_time).is_none() {
            return Err(e(
                "db_cut_time",
                format!("{:?} is not a time of day HH:MM", self.db_cut_time),
            ));
        }
        for (k, c) in [
            ("release_code", self.release_code),
            ("timeout_code", self.timeout_code),
            ("error_code", self.error_code),
        ] {
            if c > 127 {
                return Err(e(k, format!("{c} is not a Q.850 cause (0-127)")));
            }
        }
        if self.release_code == 0 {
            return Err(e("release_code", "must be a cause (1-127)".into()));
        }
        self.rest_listener()?;
        self.radius_listener()?;
        self.node_listener()?;
        self.hub()?;
        self.peer_map()?;
        if self.last_numbers.int_event > 2 {
            return Err(e("last_numbers.int_event", "must be 0, 1 or 2".into()));
        }
        for (i, p) in self.last_numbers.intervals.iter().enumerate() {
            if p.event.is_some_and(|v| v > 2) {
                return Err(e(
                    &format!("last_numbers.intervals[{i}].event"),
                    "must be 0, 1 or 2".into(),
                ));
            }
            let ok = parse_interval(&p.range)
                .is_some_and(|(a, b)| crate::verify::numbers::range_of(a, b).is_ok());
            if !ok {
                return Err(e(
                    &format!("last_numbers.intervals[{i}].range"),
                    format!(
                        "{:?} is not FROM-TO with E.164 digits of equal length, FROM <= TO",
                        p.range
                    ),
                ));
            }
        }
        for (i, r) in self.ranges.iter().enumerate() {
            if let Err(m) = crate::verify::numbers::range_of(&r.from, &r.to) {
                return Err(e(&format!("ranges[{i}]"), m));
            }
        }
        Ok(())
    }

    /// The REST listener, `None` when off.
    pub fn rest_listener(&self) -> Result<Option<SocketAddr>, (String, String)> {
        listener("rest_addr", &self.rest_addr, self.rest_port).map_err(split)
    }

    /// The RADIUS listener, `None` when off.
    pub fn radius_listener(&self) -> Result<Option<SocketAddr>, (String, String)> {
        listener("radius_addr", &self.radius_addr, self.radius_port).map_err(split)
    }

    /// The inter-node listener, `None` when off.
    pub fn node_listener(&self) -> Result<Option<SocketAddr>, (String, String)> {
        listener("addr_local", &self.addr_local, self.local_port).map_err(split)
    }

    /// The hub, `None` when none is configured.
    pub fn hub(&self) -> Result<Option<SocketAddr>, (String, String)> {
        listener("remote_addr", &self.remote_addr, self.remote_port).map_err(split)
    }

    /// `peers` parsed.
    pub fn peer_map(&self) -> Result<BTreeMap<u32, SocketAddr>, (String, String)> {
        let mut out = BTreeMap::new();
        for (k, v) in &self.peers {
            let id: u32 = k.parse().map_err(|_| {
                (
                    format!("verify.peers.{k}"),
                    "the key must be a node id (uvrT)".to_string(),
                )
            })?;
            let addr: SocketAddr = v
                .parse()
                .map_err(|_| (format!("verify.peers.{k}"), format!("{v:?} is not ip:port")))?;
            out.insert(id, addr);
        }
        Ok(out)
    }

    /// The records database.
    pub fn db_file(&self, data_dir: &Path) -> PathBuf {
        under(data_dir, &self.db_path, "verify.sqlite")
    }

    /// The watched SETUP directory.
    pub fn setup_dir(&self, data_dir: &Path) -> PathBuf {
        under(data_dir, &self.setup_path, "verify/setup")
    }

    /// Where applied SETUP files go.
    pub fn outbox_dir(&self, data_dir: &Path) -> PathBuf {
        under(data_dir, &self.setup_outbox, "verify/setup-out")
    }

    /// Where refused SETUP files go.
    pub fn refused_dir(&self, data_dir: &Path) -> PathBuf {
        under(data_dir, &self.setup_refused, "verify/setup-refused")
    }

    /// The directory of other operators' range files.
    pub fn ranges_dir(&self, data_dir: &Path) -> PathBuf {
        under(data_dir, &self.ranges_path, "verify/ranges")
    }

    /// Whether `operator_id` is one of ours.
    pub fn is_own_operator(&self, operator_id: u32) -> bool {
        self.nodes.iter().any(|n| n.operator_id == operator_id)
    }

    /// Whether `uvr_id` is one of ours.
    pub fn is_own_node(&self, uvr_id: u32) -> bool {
        self.nodes.iter().any(|n| n.uvr_id == uvr_id)
    }
}

fn split(m: String) -> (String, String) {
    match m.split_once(": ") {
        Some((k, r)) => (k.to_string(), r.to_string()),
        None => ("verify".to_string(), m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_on_loopback() {
        let c = VerifyConfig::default();
        c.validate().unwrap();
        assert_eq!(
            c.rest_listener().unwrap(),
            Some("127.0.0.1:8085".parse().unwrap())
        );
        assert_eq!(
            c.radius_listener().unwrap(),
            Some("127.0.0.1:1812".parse().unwrap())
        );
        assert_eq!(
            c.node_listener().unwrap(),
            Some("127.0.0.1:8081".parse().unwrap())
        );
        assert_eq!(c.hub().unwrap(), None);
    }

    #[test]
    fn encrypted_is_refused_with_a_reason() {
        let c = VerifyConfig {
            encrypted: true,
            ..VerifyConfig::default()
        };
        let (k, m) = c.validate().unwrap_err();
        assert_eq!(k, "verify.encrypted");
        assert!(m.contains("not supported"), "{m}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let c = VerifyConfig {
            db_cut_time: "25:00".into(),
            ..VerifyConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "verify.db_cut_time");
        let mut c = VerifyConfig::default();
        c.peers.insert("x".into(), "127.0.0.1:1".into());
        assert_eq!(c.validate().unwrap_err().0, "verify.peers.x");
        let mut c = VerifyConfig::default();
        c.last_numbers.intervals.push(PresetInterval {
            range: "7495-749".into(),
            event: None,
        });
        assert_eq!(
            c.validate().unwrap_err().0,
            "verify.last_numbers.intervals[0].range"
        );
        let c = VerifyConfig {
            rest_addr: "localhost".into(),
            ..VerifyConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "verify.rest_addr");
        let mut c = VerifyConfig::default();
        c.numbering.abc = "4x5".into();
        assert_eq!(c.validate().unwrap_err().0, "verify.numbering.abc");
    }

    #[test]
    fn hhmm() {
        assert_eq!(parse_hhmm("00:30"), Some(30));
        assert_eq!(parse_hhmm("23:59"), Some(23 * 60 + 59));
        assert_eq!(parse_hhmm("24:00"), None);
        assert_eq!(parse_hhmm("1:5"), None);
    }
}
