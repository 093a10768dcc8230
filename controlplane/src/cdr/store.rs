//! The SQLite side: schema, the writer's connection and the readers' one.
//!
//! Two tables. `calls` holds one row per call with one column per
//! [`CallRecord`] field (times as RFC 3339 UTC text with milliseconds, named
//! `start_time`/`answer_time`/`end_time` so nobody has to quote the `END`
//! keyword) plus the derived `duration_ms` and `billable_ms`. Its `id` is the
//! rowid, which only grows, so readers use it to follow new rows. `attempts`
//! holds the egress attempts, keyed by (`call_rowid`, `ordinal`), with the
//! `call_id` repeated for ad-hoc queries.
//!
//! The database runs in WAL mode with `synchronous=NORMAL`: a commit is one
//! sequential append, a power cut may lose the last commits but never corrupts
//! the file, and readers never block the writer. The schema version is kept in
//! `PRAGMA user_version`; a file from a newer build is refused rather than
//! written with the wrong layout.
//!
//! Not here: batching, retries and threads (see the writer), formatting (see
//! export).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags};

use super::record::{fmt_time, CallRecord};
use super::CdrError;

/// The schema this build creates, writes and reads (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;

/// How long a statement waits for a lock held by another connection (a
/// reader's checkpoint, a second writer by mistake) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS calls (
    id              INTEGER PRIMARY KEY,
    call_id         TEXT NOT NULL,
    correlation_id  TEXT NOT NULL,
    user            TEXT,
    device          TEXT,
    a_number        TEXT NOT NULL,
    b_number        TEXT NOT NULL,
    a_e164          TEXT,
    b_e164          TEXT,
    original_called TEXT,
    ingress_trunk   TEXT,
    egress_trunk    TEXT,
    start_time      TEXT NOT NULL,
    answer_time     TEXT,
    end_time        TEXT NOT NULL,
    duration_ms     INTEGER NOT NULL,
    billable_ms     INTEGER NOT NULL,
    disposition     TEXT NOT NULL,
    sip_status      INTEGER NOT NULL,
    reason          TEXT NOT NULL,
    a_packets_in    INTEGER NOT NULL,
    a_bytes_in      INTEGER NOT NULL,
    a_packets_out   INTEGER NOT NULL,
    b_packets_in    INTEGER NOT NULL,
    b_bytes_in      INTEGER NOT NULL,
    b_packets_out   INTEGER NOT NULL,
    dropped         INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_start_time ON calls (start_time);
CREATE INDEX IF NOT EXISTS calls_call_id ON calls (call_id);
CREATE TABLE IF NOT EXISTS attempts (
    call_rowid  INTEGER NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    call_id     TEXT NOT NULL,
    ordinal     INTEGER NOT NULL,
    trunk       TEXT NOT NULL,
    start_time  TEXT NOT NULL,
    end_time    TEXT NOT NULL,
    sip_status  INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    PRIMARY KEY (call_rowid, ordinal)
) WITHOUT ROWID;
";

const INSERT_CALL: &str = "INSERT INTO calls (
    call_id, correlation_id, user, device, a_number, b_number, a_e164, b_e164,
    original_called, ingress_trunk, egress_trunk, start_time, answer_time, end_time,
    duration_ms, billable_ms, disposition, sip_status, reason,
    a_packets_in, a_bytes_in, a_packets_out, b_packets_in, b_bytes_in, b_packets_out, dropped
) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
          ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26)";

const INSERT_ATTEMPT: &str = "INSERT INTO attempts (
    call_rowid, call_id, ordinal, trunk, start_time, end_time, sip_status, reason
) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// The writer's connection to the CDR database. One per database: SQLite
/// allows a single writer at a time, and the writer thread is it.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if absent) the database at `path`, switches it to WAL,
    /// and creates the schema if it is not there. The parent directory must
    /// exist. Every failure here is a [`super::Fault::Config`] error.
    pub fn open(path: &Path) -> Result<Store, CdrError> {
        let open_err = |source| CdrError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            // Some filesystems cannot hold the shared-memory index; the
            // writer still works, but readers will block it.
            tracing::warn!(path = %path.display(), mode = %mode, "CDR database is not in WAL mode");
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(open_err)?;

        let found = user_version(&conn).map_err(open_err)?;
        match found {
            0 => {
                conn.execute_batch(&format!(
                    "BEGIN; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
                ))
                .map_err(open_err)?;
            }
            SCHEMA_VERSION => {}
            found => {
                return Err(CdrError::Schema {
                    path: path.to_path_buf(),
                    found,
                    expected: SCHEMA_VERSION,
                })
            }
        }
        // Prepare both statements now so a broken file fails at start-up,
        // not on the first call.
        conn.prepare_cached(INSERT_CALL).map_err(open_err)?;
        conn.prepare_cached(INSERT_ATTEMPT).map_err(open_err)?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Inserts `records` and their attempts in one transaction: all of them
    /// or, on error, none.
    pub fn insert_batch(&mut self, records: &[CallRecord]) -> Result<(), CdrError> {
        let tx = self.conn.transaction()?;
        {
            let mut call = tx.prepare_cached(INSERT_CALL)?;
            let mut attempt = tx.prepare_cached(INSERT_ATTEMPT)?;
            for r in records {
                let m = &r.media;
                let rowid = call.insert(params![
                    r.call_id,
                    r.correlation_id,
                    r.user,
                    r.device,
                    r.a_number,
                    r.b_number,
                    r.a_e164,
                    r.b_e164,
                    r.original_called,
                    r.ingress_trunk,
                    r.egress_trunk,
                    fmt_time(&r.start),
                    r.answer.as_ref().map(fmt_time),
                    fmt_time(&r.end),
                    int(r.duration_ms()),
                    int(r.billable_ms()),
                    r.disposition.as_str(),
                    r.sip_status,
                    r.reason,
                    int(m.a_packets_in),
                    int(m.a_bytes_in),
                    int(m.a_packets_out),
                    int(m.b_packets_in),
                    int(m.b_bytes_in),
                    int(m.b_packets_out),
                    int(m.dropped),
                ])?;
                for (ordinal, a) in r.attempts.iter().enumerate() {
                    attempt.execute(params![
                        rowid,
                        r.call_id,
                        int(ordinal as u64),
                        a.trunk,
                        fmt_time(&a.start),
                        fmt_time(&a.end),
                        a.sip_status,
                        a.reason,
                    ])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// SQLite integers are signed 64-bit; a counter beyond that is clamped rather
/// than failing the whole batch it sits in.
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Opens the database read-only for export and tail. Never creates the file,
/// and works while the writer is running (WAL readers see the last commit).
pub(super) fn open_reader(path: &Path) -> Result<Connection, CdrError> {
    let open_err = |source| CdrError::Open {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    let found = user_version(&conn).map_err(open_err)?;
    if found != SCHEMA_VERSION {
        return Err(CdrError::Schema {
            path: path.to_path_buf(),
            found,
            expected: SCHEMA_VERSION,
        });
    }
    Ok(conn)
}

#[cfg(test)]
pub(super) mod tests {
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::cdr::record::{Disposition, EgressAttempt, MediaCounters};

    /// A fresh, empty directory under the system temp dir; removed on drop.
    pub(in crate::cdr) struct TempDir(pub(in crate::cdr) PathBuf);

    impl TempDir {
        pub(in crate::cdr) fn new(tag: &str) -> TempDir {
            use std::sync::atomic::{AtomicU32, Ordering};
            static SEQ: AtomicU32 = AtomicU32::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let dir = std::env::temp_dir().join(format!(
                "kordon-cdr-{tag}-{}-{}-{nanos}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).expect("temp dir is writable");
            TempDir(dir)
        }

        pub(in crate::cdr) fn db(&self) -> PathBuf {
            self.0.join("cdr.sqlite")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    pub(in crate::cdr) fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).expect("test times are in range")
    }

    /// A call answered on its second attempt; `n` varies ids and times.
    pub(in crate::cdr) fn sample(n: u32) -> CallRecord {
        let t0 = 1_714_557_600_000 + i64::from(n) * 1_000;
        CallRecord {
            call_id: format!("call-{n}"),
            correlation_id: format!("corr-{n}"),
            user: Some("alice".into()),
            device: None,
            a_number: "0301234567".into(),
            b_number: "+494012345".into(),
            a_e164: Some("+49301234567".into()),
            b_e164: Some("+494012345".into()),
            original_called: None,
            ingress_trunk: Some("access".into()),
            egress_trunk: Some("trunkB".into()),
            start: at(t0),
            answer: Some(at(t0 + 2_000)),
            end: at(t0 + 62_500),
            disposition: Disposition::Answered,
            sip_status: 200,
            reason: "OK".into(),
            media: MediaCounters {
                a_packets_in: 3_000,
                a_bytes_in: 516_000,
                a_packets_out: 2_990,
                b_packets_in: 2_990,
                b_bytes_in: 514_280,
                b_packets_out: 3_000,
                dropped: 10,
            },
            attempts: vec![
                EgressAttempt {
                    trunk: "trunkA".into(),
                    start: at(t0 + 10),
                    end: at(t0 + 500),
                    sip_status: 503,
                    reason: "Service Unavailable".into(),
                },
                EgressAttempt {
                    trunk: "trunkB".into(),
                    start: at(t0 + 510),
                    end: at(t0 + 62_500),
                    sip_status: 200,
                    reason: "OK".into(),
                },
            ],
        }
    }

    pub(in crate::cdr) fn count(path: &Path) -> i64 {
        let c = open_reader(path).expect("db opens read-only");
        c.query_row("SELECT count(*) FROM calls", [], |r| r.get(0))
            .expect("count query runs")
    }

    #[test]
    fn creates_schema_in_wal_mode_and_reopens() {
        let dir = TempDir::new("schema");
        let store = Store::open(&dir.db()).expect("open");
        let mode: String = store
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .expect("pragma");
        assert_eq!(mode, "wal");
        assert_eq!(user_version(&store.conn).expect("pragma"), SCHEMA_VERSION);
        drop(store);
        // A second open finds the schema and leaves it alone.
        let mut store = Store::open(&dir.db()).expect("reopen");
        store.insert_batch(&[sample(1)]).expect("insert");
        assert_eq!(count(&dir.db()), 1);
    }

    #[test]
    fn stores_every_field_and_attempts_in_order() {
        let dir = TempDir::new("fields");
        let mut store = Store::open(&dir.db()).expect("open");
        let mut r = sample(7);
        r.media.dropped = u64::MAX;
        r.answer = None;
        store.insert_batch(&[r.clone()]).expect("insert");
        let c = open_reader(&dir.db()).expect("reader");
        let row: (String, Option<String>, String, i64, i64, String, i64) = c
            .query_row(
                "SELECT start_time, answer_time, end_time, duration_ms, billable_ms, \
                 disposition, dropped FROM calls",
                [],
                |x| {
                    Ok((
                        x.get(0)?,
                        x.get(1)?,
                        x.get(2)?,
                        x.get(3)?,
                        x.get(4)?,
                        x.get(5)?,
                        x.get(6)?,
                    ))
                },
            )
            .expect("row");
        assert_eq!(row.0, "2024-05-01T10:00:07.000Z");
        assert_eq!(row.1, None);
        assert_eq!(row.2, "2024-05-01T10:01:09.500Z");
        assert_eq!((row.3, row.4), (62_500, 0));
        assert_eq!(row.5, "answered");
        assert_eq!(row.6, i64::MAX, "an out-of-range counter is clamped");
        let trunks: Vec<(i64, String, i64)> = c
            .prepare("SELECT ordinal, trunk, sip_status FROM attempts ORDER BY ordinal")
            .expect("prepare")
            .query_map([], |x| Ok((x.get(0)?, x.get(1)?, x.get(2)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(
            trunks,
            vec![(0, "trunkA".into(), 503), (1, "trunkB".into(), 200)]
        );
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = TempDir::new("newer");
        drop(Store::open(&dir.db()).expect("open"));
        let c = Connection::open(dir.db()).expect("raw open");
        c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .expect("pragma");
        drop(c);
        let e = Store::open(&dir.db()).expect_err("newer schema is refused");
        assert!(matches!(e, CdrError::Schema { found: 2, .. }), "{e}");
        assert_eq!(e.fault(), crate::cdr::Fault::Config);
    }

    #[test]
    fn reader_does_not_create_a_missing_file() {
        let dir = TempDir::new("missing");
        let e = open_reader(&dir.db()).expect_err("no such file");
        assert!(matches!(e, CdrError::Open { .. }), "{e}");
        assert!(!dir.db().exists());
    }
}
