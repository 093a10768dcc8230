//! Kordon's configuration: one TOML file, every key with a built-in default.
//! Unknown keys are refused (a typo must not silently fall back to a default),
//! and every semantic check names the dotted key it is about.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use kordon_dataplane::config::{ConfigError, DataplaneConfig};
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Config {
    /// Process-wide settings.
    pub general: General,
    /// The media data plane.
    pub dataplane: DataplaneConfig,
    /// The Prometheus endpoint.
    pub metrics: Metrics,
    /// The rtpengine-compatible ng control protocol.
    pub ng: kordon_controlplane::ng::NgConfig,
    /// The SIP B2BUA: interfaces, trunks, users, routes, timers.
    pub sip: kordon_controlplane::b2bua::SipConfig,
    /// Call detail records.
    pub cdr: kordon_controlplane::cdr::CdrConfig,
    /// The call verification node (anti-fraud).
    pub verify: kordon_controlplane::verify::VerifyConfig,
}

/// `[general]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct General {
    /// Where Kordon keeps its files (databases, pid file).
    pub data_dir: PathBuf,
    /// Log filter (tracing's env-filter syntax); RUST_LOG overrides it.
    pub log: String,
    /// Pid file of `kordon run` (`kordon reload` signals that process);
    /// empty = `<data_dir>/kordon.pid`, relative = under the data dir.
    pub pid_file: String,
}

impl General {
    /// The pid file's path.
    pub(crate) fn pid_path(&self) -> PathBuf {
        if self.pid_file.is_empty() {
            self.data_dir.join("kordon.pid")
        } else {
            self.data_dir.join(&self.pid_file)
        }
    }
}

impl Default for General {
    fn default() -> Self {
        General {
            data_dir: PathBuf::from("kordon-data"),
            log: "info".to_string(),
            pid_file: String::new(),
        }
    }
}

/// `[metrics]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Metrics {
    /// Listener of `GET /metrics`; empty = off.
    pub listen: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            listen: "127.0.0.1:9464".to_string(),
        }
    }
}

impl Metrics {
    /// The parsed listener, `None` when off.
    pub(crate) fn addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.listen.is_empty() {
            return Ok(None);
        }
        self.listen.parse().map(Some).map_err(|_| {
            ConfigError::new(
                "metrics.listen",
                format!("{:?} is not an address:port", self.listen),
            )
        })
    }
}

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, an unknown key or a value of the wrong type.
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message: line, column, key.
        message: String,
    },
    /// A value that cannot be used.
    #[error("{path}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key and the reason.
        source: ConfigError,
    },
}

impl Config {
    /// Reads and checks a file; `None` = the built-in defaults.
    pub(crate) fn load(path: Option<&Path>) -> Result<Config, LoadError> {
        let Some(path) = path else {
            let c = Config::default();
            c.validate().map_err(|source| LoadError::Invalid {
                path: PathBuf::from("<defaults>"),
                source,
            })?;
            return Ok(c);
        };
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            LoadError::Syntax { message, .. } => LoadError::Syntax {
                path: path.to_path_buf(),
                message,
            },
            LoadError::Invalid { source, .. } => LoadError::Invalid {
                path: path.to_path_buf(),
                source,
            },
            other => other,
        })
    }

    /// Parses and checks TOML text.
    pub(crate) fn parse(text: &str) -> Result<Config, LoadError> {
        let c: Config = toml::from_str(text).map_err(|e| LoadError::Syntax {
            path: PathBuf::new(),
            message: e.to_string().trim_end().to_string(),
        })?;
        c.validate().map_err(|source| LoadError::Invalid {
            path: PathBuf::new(),
            source,
        })?;
        Ok(c)
    }

    /// Checks every section.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.general.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::new("general.data_dir", "must not be empty"));
        }
        self.dataplane.validate("dataplane")?;
        let metrics = self.metrics.addr()?;
        if metrics.is_some() && metrics == Some(self.dataplane.grpc_listen) {
            return Err(ConfigError::new(
                "metrics.listen",
                "same address as dataplane.grpc_listen",
            ));
        }
        let ng = self
            .ng
            .addr()
            .map_err(|reason| ConfigError::new("ng.listen", reason))?;
        if ng.is_some()
            && !self.ng.default_interface.is_empty()
            && !self
                .dataplane
                .interfaces
                .contains_key(&self.ng.default_interface)
        {
            return Err(ConfigError::new(
                "ng.default_interface",
                format!(
                    "{:?} is not a configured interface (dataplane.interfaces)",
                    self.ng.default_interface
                ),
            ));
        }
        let media: Vec<&str> = self
            .dataplane
            .interfaces
            .keys()
            .map(String::as_str)
            .collect();
        self.sip
            .validate(&media)
            .map_err(|(key, reason)| ConfigError::new(key, reason))?;
        self.verify
            .validate()
            .map_err(|(key, reason)| ConfigError::new(key, reason))?;
        self.cdr.validate().map_err(|m| match m.split_once(':') {
            Some((k, r)) => ConfigError::new(k.trim(), r.trim().to_string()),
            None => ConfigError::new("cdr", m),
        })?;
        Ok(())
    }

    /// The interface ng uses when a request names none.
    pub(crate) fn ng_default_interface(&self) -> String {
        if !self.ng.default_interface.is_empty() {
            return self.ng.default_interface.clone();
        }
        if self.dataplane.interfaces.contains_key("internal") {
            return "internal".to_string();
        }
        self.dataplane
            .interfaces
            .keys()
            .next()
            .cloned()
            .unwrap_or_default()
    }

    /// The effective configuration as TOML.
    pub(crate) fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_print() {
        let c = Config::default();
        let again = Config::parse(&c.to_toml()).unwrap();
        assert_eq!(c, again);
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_is_refused_with_its_name() {
        let e = Config::parse("[dataplane]\nworkerz = 2\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("workerz"), "{e}");
    }

    #[test]
    fn wrong_type_is_refused_with_its_key() {
        let e = Config::parse("[dataplane]\nworkers = \"two\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("workers"), "{e}");
    }

    #[test]
    fn semantic_error_names_the_dotted_key() {
        let text = "[dataplane.interfaces.edge]\nbind = \"127.0.0.1\"\nport_min = 40000\nport_max = 30000\n";
        let e = Config::parse(text).unwrap_err().to_string();
        assert!(e.contains("dataplane.interfaces.edge.port_max"), "{e}");
    }

    #[test]
    fn bad_metrics_address_is_refused() {
        let e = Config::parse("[metrics]\nlisten = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("metrics.listen"), "{e}");
    }

    #[test]
    fn a_partial_interface_table_replaces_the_defaults() {
        let text = "[dataplane.interfaces.core]\nbind = \"127.0.0.1\"\nadvertised = \"192.0.2.10\"\nport_min = 40000\nport_max = 40999\n";
        let c = Config::parse(text).unwrap();
        assert_eq!(c.dataplane.interfaces.len(), 1);
        assert_eq!(
            c.dataplane.interfaces["core"].advertised().to_string(),
            "192.0.2.10"
        );
    }
}
