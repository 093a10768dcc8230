//! `[sip]`: interfaces, trunks, users, routes, numbering, timers and policy
//! of the B2BUA. Every key has a default; the defaults make a working
//! single-box setup on loopback (see the README's quick start).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::registrar::{RegistrarConfig, UserConfig};
use crate::routing::{ClassOfServiceConfig, NumberingConfig, RouteConfig};
use crate::sip::transport::{InterfaceConfig, TlsConfig};
use crate::sip::Transport;

/// `[sip]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// Turn the SIP service off (`kordon run` then serves only gRPC and ng).
    pub enabled: bool,
    /// SIP interfaces: a listen address and an advertised address each.
    pub interfaces: Vec<SipInterface>,
    /// TLS certificate and trust settings.
    pub tls: TlsConfig,
    /// Largest SIP message accepted, bytes.
    pub max_message_bytes: usize,
    /// The `User-Agent`/`Server` token Kordon sends.
    pub user_agent: String,
    /// RFC 3261 timers and the call timers.
    pub timers: TimersConfig,
    /// INVITEs per second accepted from one source address; 0 = no limit.
    pub invite_rate_per_source: f64,
    /// Burst allowance of that limit.
    pub invite_burst: u32,
    /// What happens to requests from an address that matches no trunk:
    /// `challenge` (treat the sender as a user: digest authentication) or
    /// `reject` (403).
    pub unknown_sources: UnknownSources,
    /// E.164 normalization.
    pub numbering: NumberingConfig,
    /// Registrar and digest settings.
    pub registrar: RegistrarConfig,
    /// Users (registrar accounts).
    pub users: Vec<UserConfig>,
    /// Classes of service, referred to by users' `cos`.
    pub cos: Vec<ClassOfServiceConfig>,
    /// Trunks: peers known by address.
    pub trunks: Vec<TrunkConfig>,
    /// Routes by E.164 prefix to ordered trunk lists.
    pub routes: Vec<RouteConfig>,
}

/// What to do with a request from an unknown source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownSources {
    /// Digest-challenge it as a user.
    Challenge,
    /// Answer 403.
    Reject,
}

/// One SIP interface with the data plane interface its calls' media use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipInterface {
    /// Listener settings.
    #[serde(flatten)]
    pub sip: InterfaceConfig,
    /// The data plane interface (`dataplane.interfaces.<name>`) that media of
    /// calls on this SIP interface use; "" = `external` if the data plane
    /// has it, else its first interface.
    pub media_interface: String,
}

/// `[sip.timers]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimersConfig {
    /// RFC 3261 T1, ms.
    pub t1_ms: u64,
    /// RFC 3261 T2, ms.
    pub t2_ms: u64,
    /// RFC 3261 T4, ms.
    pub t4_ms: u64,
    /// How long a callee may ring before the call is cancelled and the
    /// caller gets 480, seconds.
    pub no_answer_s: u64,
    /// How long one egress attempt may go without any response before the
    /// next route is tried (besides Timer B), ms.
    pub attempt_timeout_ms: u64,
    /// Longest call, seconds; then both legs get BYE. 0 = no limit.
    pub max_duration_s: u64,
    /// Session interval Kordon asks for on egress (RFC 4028), seconds; 0 = off.
    pub session_expires_s: u32,
    /// Smallest session interval Kordon accepts (Min-SE), seconds.
    pub min_se_s: u32,
    /// Retry-After sent with 503 when Kordon is overloaded, seconds.
    pub retry_after_s: u32,
}

impl Default for TimersConfig {
    fn default() -> Self {
        TimersConfig {
            t1_ms: 500,
            t2_ms: 4000,
            t4_ms: 5000,
            no_answer_s: 60,
            attempt_timeout_ms: 4000,
            max_duration_s: 4 * 3600,
            session_expires_s: 1800,
            min_se_s: 90,
            retry_after_s: 5,
        }
    }
}

/// What to do with P-Asserted-Identity/Privacy towards or from a trunk
/// (RFC 3325).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrivacyPolicy {
    /// Pass identity headers through (rewritten to Kordon's host).
    Pass,
    /// Strip them (the trunk is outside the trust domain).
    Strip,
    /// Set P-Asserted-Identity from the caller's number even if absent.
    Set,
}

/// `[[sip.trunks]]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrunkConfig {
    /// Name used by routes and in CDRs.
    pub name: String,
    /// The SIP interface the trunk is reached through.
    pub interface: String,
    /// Where requests to the trunk go (`ip:port`).
    pub address: String,
    /// Transport towards the trunk.
    pub transport: Transport,
    /// Source addresses identifying the trunk: `ip`, `ip/prefix` or
    /// `ip:port`. Empty = the `address`'s IP.
    pub acl: Vec<String>,
    /// Most concurrent calls through the trunk (both directions); 0 = no limit.
    pub max_calls: u32,
    /// Take the caller's number from P-Asserted-Identity on calls from it.
    pub trust_pai: bool,
    /// P-Asserted-Identity/Privacy handling towards it.
    pub privacy: PrivacyPolicy,
    /// OPTIONS probe interval, seconds; 0 = no probing (always up).
    pub options_interval_s: u64,
    /// The data plane interface for media to this trunk ("" = the SIP
    /// interface's).
    pub media_interface: String,
    /// The operator behind the trunk (its id in the operators' directory),
    /// for call verification: a trunk whose operator is not one of
    /// `verify.nodes` is an interconnect — calls from it are verified, calls
    /// to it registered. Absent = a trunk of our own network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_id: Option<u32>,
}

impl Default for TrunkConfig {
    fn default() -> Self {
        TrunkConfig {
            name: String::new(),
            interface: "default".to_string(),
            address: String::new(),
            transport: Transport::Udp,
            acl: Vec::new(),
            max_calls: 0,
            trust_pai: false,
            privacy: PrivacyPolicy::Pass,
            options_interval_s: 0,
            media_interface: String::new(),
            operator_id: None,
        }
    }
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            enabled: true,
            interfaces: vec![SipInterface::default()],
            tls: TlsConfig::default(),
            max_message_bytes: crate::sip::message::MAX_MESSAGE_BYTES,
            user_agent: "Kordon".to_string(),
            timers: TimersConfig::default(),
            invite_rate_per_source: 0.0,
            invite_burst: 50,
            unknown_sources: UnknownSources::Challenge,
            numbering: NumberingConfig::default(),
            registrar: RegistrarConfig::default(),
            users: vec![
                UserConfig {
                    username: "alice".into(),
                    password: "alice-secret".into(),
                    ..UserConfig::default()
                },
                UserConfig {
                    username: "bob".into(),
                    password: "bob-secret".into(),
                    ..UserConfig::default()
                },
            ],
            cos: Vec::new(),
            trunks: vec![
                TrunkConfig {
                    name: "pstn".into(),
                    address: "127.0.0.1:5080".into(),
                    acl: vec!["127.0.0.1:5080".into()],
                    ..TrunkConfig::default()
                },
                TrunkConfig {
                    name: "pbx".into(),
                    address: "127.0.0.1:5070".into(),
                    acl: vec!["127.0.0.1:5070".into()],
                    ..TrunkConfig::default()
                },
            ],
            routes: vec![RouteConfig {
                prefix: String::new(),
                trunks: vec!["pstn".into()],
            }],
        }
    }
}

/// One ACL entry: an address range, optionally one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AclEntry {
    net: IpAddr,
    prefix: u8,
    port: Option<u16>,
}

impl AclEntry {
    /// Parses `ip`, `ip/prefix` or `ip:port`.
    pub fn parse(s: &str) -> Result<AclEntry, String> {
        if let Ok(sa) = s.parse::<SocketAddr>() {
            let prefix = if sa.is_ipv4() { 32 } else { 128 };
            return Ok(AclEntry {
                net: sa.ip(),
                prefix,
                port: Some(sa.port()),
            });
        }
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = ip
            .parse()
            .map_err(|_| format!("{s:?} is not ip, ip/prefix or ip:port"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: bad prefix length"))?,
            None => max,
        };
        Ok(AclEntry {
            net,
            prefix,
            port: None,
        })
    }

    /// Whether `src` matches; the score orders matches (longer prefix, then a
    /// port, wins).
    pub fn matches(&self, src: SocketAddr) -> Option<u32> {
        if let Some(p) = self.port {
            if p != src.port() {
                return None;
            }
        }
        let ok = match (self.net, src.ip()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        };
        ok.then(|| u32::from(self.prefix) * 2 + u32::from(self.port.is_some()))
    }
}

impl SipConfig {
    /// Fills empty `media_interface`s: `external` if the data plane has it,
    /// else its first interface.
    pub fn resolve_media_interfaces(&mut self, media_interfaces: &[&str]) {
        let fallback = if media_interfaces.contains(&"external") {
            "external"
        } else {
            media_interfaces.first().copied().unwrap_or("")
        };
        for i in &mut self.interfaces {
            if i.media_interface.is_empty() {
                i.media_interface = fallback.to_string();
            }
        }
    }

    /// Transaction timers.
    pub fn txn_timers(&self) -> crate::sip::txn::TimerConfig {
        crate::sip::txn::TimerConfig {
            t1: Duration::from_millis(self.timers.t1_ms),
            t2: Duration::from_millis(self.timers.t2_ms),
            t4: Duration::from_millis(self.timers.t4_ms),
            ..crate::sip::txn::TimerConfig::default()
        }
    }

    /// Checks the section; the error names the dotted key.
    pub fn validate(&self, media_interfaces: &[&str]) -> Result<(), (String, String)> {
        let err = |k: String, m: String| Err((k, m));
        if !self.enabled {
            return Ok(());
        }
        if self.interfaces.is_empty() {
            return err("sip.interfaces".into(), "at least one interface".into());
        }
        let mut names: Vec<&str> = Vec::new();
        for (i, iface) in self.interfaces.iter().enumerate() {
            if iface.sip.name.is_empty() || names.contains(&iface.sip.name.as_str()) {
                return err(
                    format!("sip.interfaces[{i}].name"),
                    "must be set and unique".into(),
                );
            }
            names.push(&iface.sip.name);
            if iface.sip.listen.parse::<SocketAddr>().is_err() {
                return err(
                    format!("sip.interfaces[{i}].listen"),
                    format!("{:?} is not ip:port", iface.sip.listen),
                );
            }
            if !iface.media_interface.is_empty()
                && !media_interfaces.contains(&iface.media_interface.as_str())
            {
                return err(
                    format!("sip.interfaces[{i}].media_interface"),
                    format!(
                        "{:?} is not a data plane interface ({})",
                        iface.media_interface,
                        media_interfaces.join(", ")
                    ),
                );
            }
        }
        if !(512..=1 << 20).contains(&self.max_message_bytes) {
            return err(
                "sip.max_message_bytes".into(),
                "must be within 512..=1048576".into(),
            );
        }
        if self.timers.t1_ms == 0 || self.timers.t2_ms < self.timers.t1_ms {
            return err("sip.timers.t1_ms".into(), "t1 > 0 and t2 >= t1".into());
        }
        if self.timers.no_answer_s == 0 {
            return err("sip.timers.no_answer_s".into(), "must be > 0".into());
        }
        if self.timers.session_expires_s != 0
            && self.timers.session_expires_s < self.timers.min_se_s
        {
            return err(
                "sip.timers.session_expires_s".into(),
                "must be 0 or >= min_se_s".into(),
            );
        }
        if self.invite_rate_per_source < 0.0 || !self.invite_rate_per_source.is_finite() {
            return err("sip.invite_rate_per_source".into(), "must be >= 0".into());
        }
        self.numbering
            .validate()
            .map_err(|m| ("sip.numbering".to_string(), m))?;
        let mut trunk_names: Vec<&str> = Vec::new();
        for (i, t) in self.trunks.iter().enumerate() {
            let k = |f: &str| format!("sip.trunks[{i}].{f}");
            if t.name.is_empty() || trunk_names.contains(&t.name.as_str()) {
                return err(k("name"), "must be set and unique".into());
            }
            trunk_names.push(&t.name);
            if !names.contains(&t.interface.as_str()) {
                return err(
                    k("interface"),
                    format!("{:?} is not a SIP interface", t.interface),
                );
            }
            if t.address.parse::<SocketAddr>().is_err() {
                return err(k("address"), format!("{:?} is not ip:port", t.address));
            }
            for (j, a) in t.acl.iter().enumerate() {
                AclEntry::parse(a).map_err(|m| (format!("sip.trunks[{i}].acl[{j}]"), m))?;
            }
            if !t.media_interface.is_empty()
                && !media_interfaces.contains(&t.media_interface.as_str())
            {
                return err(
                    k("media_interface"),
                    format!("{:?} is not a data plane interface", t.media_interface),
                );
            }
        }
        crate::routing::RouteTable::build(&self.routes, &trunk_names)
            .map_err(|m| ("sip.routes".to_string(), m))?;
        for (i, c) in self.cos.iter().enumerate() {
            crate::routing::ClassOfService::compile(c).map_err(|m| (format!("sip.cos[{i}]"), m))?;
        }
        for (i, u) in self.users.iter().enumerate() {
            if !u.cos.is_empty() && !self.cos.iter().any(|c| c.name == u.cos) {
                return err(
                    format!("sip.users[{i}].cos"),
                    format!("{:?} is not a class of service (sip.cos)", u.cos),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_entries_match_by_prefix_and_port() {
        let a = AclEntry::parse("10.0.0.0/8").expect("ok");
        assert!(a.matches("10.1.2.3:5060".parse().expect("sa")).is_some());
        assert!(a.matches("11.1.2.3:5060".parse().expect("sa")).is_none());
        let p = AclEntry::parse("127.0.0.1:5080").expect("ok");
        assert!(p.matches("127.0.0.1:5080".parse().expect("sa")).is_some());
        assert!(p.matches("127.0.0.1:5081".parse().expect("sa")).is_none());
        let host = AclEntry::parse("127.0.0.1").expect("ok");
        let s = "127.0.0.1:5080".parse().expect("sa");
        assert!(p.matches(s) > host.matches(s));
        assert!(AclEntry::parse("10.0.0.0/33").is_err());
        assert!(AclEntry::parse("nope").is_err());
    }
}
