//! Call detail records: one row per call in SQLite, written off the call path.
//!
//! A call (one ingress INVITE) ends in exactly one [`CallRecord`], which keeps
//! the egress attempts made for it. The B2BUA hands the record to a
//! [`CdrWriter`], whose [`CdrWriter::submit`] only pushes onto a bounded queue:
//! it never blocks, never awaits and never touches the disk. One dedicated OS
//! thread (started by [`spawn`]) drains that queue in batches into a [`Store`],
//! one SQLite transaction per batch. [`CdrHandle::shutdown`] stops intake,
//! writes whatever is still queued and joins the thread, so a graceful stop
//! loses nothing.
//!
//! [`export_csv`], [`tail`] and [`follow`] read the same database through a
//! separate read-only connection; the database runs in WAL mode, so they work
//! while the writer is running.
//!
//! What this module does not do: decide a call's disposition (the B2BUA
//! does), rotate or prune old rows, or ship records anywhere else.
//!
//! Invariants:
//! - a record accepted by `submit` is either committed, or counted in
//!   [`CdrStats::failed`] after retries and a loud log line; a record refused by
//!   `submit` is reported to the caller ([`CdrError::QueueFull`] is also counted
//!   in [`CdrStats::dropped_full`]);
//! - times are stored as RFC 3339 UTC text with milliseconds
//!   (`2024-05-01T10:00:00.123Z`), which sorts as text in time order.

mod export;
mod record;
mod store;
mod writer;

use std::path::{Path, PathBuf};

pub use export::{export_csv, follow, tail};
pub use record::{CallRecord, Disposition, EgressAttempt, MediaCounters, UnknownDisposition};
pub use store::{Store, SCHEMA_VERSION};
pub(crate) use writer::with_retries;
pub use writer::{spawn, CdrHandle, CdrStats, CdrWriter};

/// Largest accepted `cdr.queue`: beyond this a backlog is a symptom to fix, not
/// to buffer.
const MAX_QUEUE: usize = 1 << 24;
/// Largest accepted `cdr.flush_ms` (one minute).
const MAX_FLUSH_MS: u64 = 60_000;

/// The `[cdr]` section of the configuration.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CdrConfig {
    /// Whether records are written at all. When false, [`spawn`] opens nothing
    /// and its writer accepts and discards records.
    pub enabled: bool,
    /// Database file. Empty means `<data_dir>/cdr.sqlite`; a relative path is
    /// taken relative to the data directory, an absolute one as is.
    pub path: String,
    /// Capacity of the queue between the call path and the writer thread, in
    /// records. When it is full, records are refused and counted.
    pub queue: usize,
    /// Most records committed in one transaction.
    pub batch: usize,
    /// Longest a queued record waits before its batch is committed, in
    /// milliseconds.
    pub flush_ms: u64,
}

impl Default for CdrConfig {
    fn default() -> Self {
        CdrConfig {
            enabled: true,
            path: String::new(),
            queue: 65_536,
            batch: 512,
            flush_ms: 200,
        }
    }
}

impl CdrConfig {
    /// Where the database lives, given the process's data directory.
    pub fn db_path(&self, data_dir: &Path) -> PathBuf {
        if self.path.is_empty() {
            data_dir.join("cdr.sqlite")
        } else {
            // `join` keeps an absolute path as it is.
            data_dir.join(&self.path)
        }
    }

    /// Checks the values; the error names the offending key (`cdr.queue`, ...).
    pub fn validate(&self) -> Result<(), String> {
        if self.queue == 0 || self.queue > MAX_QUEUE {
            return Err(format!(
                "cdr.queue must be between 1 and {MAX_QUEUE}, got {}",
                self.queue
            ));
        }
        if self.batch == 0 || self.batch > self.queue {
            return Err(format!(
                "cdr.batch must be between 1 and cdr.queue ({}), got {}",
                self.queue, self.batch
            ));
        }
        if self.flush_ms == 0 || self.flush_ms > MAX_FLUSH_MS {
            return Err(format!(
                "cdr.flush_ms must be between 1 and {MAX_FLUSH_MS}, got {}",
                self.flush_ms
            ));
        }
        if self.path.contains('\0') {
            return Err("cdr.path must not contain a NUL character".to_string());
        }
        Ok(())
    }
}

/// Whose fault a CDR failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The configuration or the database file given to us is unusable; the
    /// process should refuse to start (or the CLI command fail) with the message.
    Config,
    /// Something failed at run time: a full queue, the disk, the output.
    Internal,
}

/// Everything that can go wrong writing or reading CDRs.
#[derive(Debug, thiserror::Error)]
pub enum CdrError {
    /// The queue to the writer thread is full; the record was dropped and
    /// counted in [`CdrStats::dropped_full`].
    #[error("CDR queue full, record dropped")]
    QueueFull,
    /// The writer is shut down (or its thread is gone); the record was dropped.
    #[error("CDR writer is closed, record dropped")]
    Closed,
    /// A configuration value is out of range; the message names the key.
    #[error("invalid CDR configuration: {0}")]
    Config(String),
    /// The database could not be opened or prepared.
    #[error("cannot open CDR database {}: {source}", .path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a build with another schema.
    #[error(
        "CDR database {} has schema version {found}, this build uses {expected}",
        .path.display()
    )]
    Schema {
        /// The database file.
        path: PathBuf,
        /// `PRAGMA user_version` found in the file.
        found: i64,
        /// The version this build reads and writes.
        expected: i64,
    },
    /// A statement failed on an open database (disk full, I/O error, busy).
    #[error("CDR database error: {0}")]
    Db(#[from] rusqlite::Error),
    /// Writing exported rows to the output failed.
    #[error("CDR output error: {0}")]
    Io(#[from] std::io::Error),
    /// The writer thread could not be started.
    #[error("cannot start the CDR writer thread: {0}")]
    Thread(#[source] std::io::Error),
}

impl CdrError {
    /// Whose fault it is.
    pub fn fault(&self) -> Fault {
        match self {
            CdrError::Config(_) | CdrError::Open { .. } | CdrError::Schema { .. } => Fault::Config,
            CdrError::QueueFull
            | CdrError::Closed
            | CdrError::Db(_)
            | CdrError::Io(_)
            | CdrError::Thread(_) => Fault::Internal,
        }
    }

    /// Whether the same operation may succeed if tried again later.
    pub fn retryable(&self) -> bool {
        match self {
            CdrError::QueueFull => true,
            CdrError::Db(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::DiskFull
                    | rusqlite::ErrorCode::SystemIoFailure
            ),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_resolves_under_data_dir() {
        let c = CdrConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(
            c.db_path(Path::new("/var/lib/kordon")),
            PathBuf::from("/var/lib/kordon/cdr.sqlite")
        );
        let rel = CdrConfig {
            path: "cdr/calls.db".into(),
            ..CdrConfig::default()
        };
        assert_eq!(
            rel.db_path(Path::new("/d")),
            PathBuf::from("/d/cdr/calls.db")
        );
        let abs = CdrConfig {
            path: "/srv/cdr.db".into(),
            ..CdrConfig::default()
        };
        assert_eq!(abs.db_path(Path::new("/d")), PathBuf::from("/srv/cdr.db"));
    }

    #[test]
    fn validate_names_the_key() {
        let bad = |f: fn(&mut CdrConfig), key: &str| {
            let mut c = CdrConfig::default();
            f(&mut c);
            let e = c.validate().expect_err("value is out of range");
            assert!(e.contains(key), "{e} should name {key}");
        };
        bad(|c| c.queue = 0, "cdr.queue");
        bad(|c| c.batch = 0, "cdr.batch");
        bad(|c| c.batch = c.queue + 1, "cdr.batch");
        bad(|c| c.flush_ms = 0, "cdr.flush_ms");
        bad(|c| c.path = "a\0b".into(), "cdr.path");
    }

    #[test]
    fn faults_and_retries() {
        assert_eq!(CdrError::QueueFull.fault(), Fault::Internal);
        assert!(CdrError::QueueFull.retryable());
        assert_eq!(CdrError::Config("x".into()).fault(), Fault::Config);
        assert!(!CdrError::Closed.retryable());
    }
}
