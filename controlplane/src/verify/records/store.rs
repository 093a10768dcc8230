//! The `verifications` table: opening the database, inserting batches, and
//! the retention clean-up.
//!
//! What is here: the schema (created on first open, `PRAGMA user_version`
//! [`SCHEMA_VERSION`]), the writer's connection (WAL, `synchronous=NORMAL`,
//! a busy timeout), one-transaction batch inserts, chunked deletes of old
//! rows, and the read-only opener the report uses.
//!
//! What is not: threads, queues and schedules (see the writer), formatting
//! (see the report).
//!
//! Invariants: `time` is RFC 3339 UTC text with exactly three fractional
//! digits and a `Z` (`2024-05-01T10:00:07.000Z`), so text order is time
//! order and range queries use the index. A file whose `user_version` is
//! neither 0 (new) nor ours is refused, never rewritten.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, OpenFlags};

use super::Record;

/// The schema this build creates, writes and reads (`PRAGMA user_version`).
pub(super) const SCHEMA_VERSION: i64 = 1;

/// How long a statement waits for a lock held by another connection (a
/// report's checkpoint, a second writer by mistake) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Rows deleted per statement by the clean-up: small enough that a chunk
/// holds the write lock for milliseconds, not seconds.
pub(super) const CLEANUP_CHUNK: u32 = 10_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS verifications (
    id          INTEGER PRIMARY KEY,
    time        TEXT NOT NULL,
    direction   TEXT NOT NULL,
    source      TEXT NOT NULL,
    call_id     TEXT NOT NULL,
    a           TEXT NOT NULL,
    b           TEXT NOT NULL,
    c           TEXT,
    id_src      INTEGER,
    id_dst      INTEGER,
    uvr_o       INTEGER,
    uvr_t       INTEGER,
    request     TEXT NOT NULL,
    answer      TEXT NOT NULL,
    code        INTEGER NOT NULL,
    incident    INTEGER NOT NULL,
    latency_us  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS verifications_time ON verifications (time);
";

const INSERT: &str = "INSERT INTO verifications (
    time, direction, source, call_id, a, b, c, id_src, id_dst, uvr_o, uvr_t,
    request, answer, code, incident, latency_us
) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)";

const DELETE_CHUNK: &str = "DELETE FROM verifications WHERE id IN
    (SELECT id FROM verifications WHERE time < ?1 LIMIT ?2)";

/// The stored form of a time: RFC 3339, UTC, milliseconds, `Z`.
pub(super) fn fmt_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Opens (creating it and its parent directories if absent) the records
/// database at `path` for writing, switches it to WAL and creates the schema.
pub(super) fn open_writer(path: &Path) -> Result<Connection, String> {
    let err = |what: &str, e: &dyn std::fmt::Display| {
        format!(
            "verification records database {}: {what}: {e}",
            path.display()
        )
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err("cannot create its directory", &e))?;
    }
    let conn = Connection::open(path).map_err(|e| err("cannot open", &e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| err("cannot set busy_timeout", &e))?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(|e| err("cannot switch to WAL", &e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        // Some filesystems cannot hold the shared-memory index; writing still
        // works, but a running report will block the writer.
        tracing::warn!(path = %path.display(), mode = %mode, "verification records database is not in WAL mode");
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(|e| err("cannot set synchronous", &e))?;
    match user_version(&conn).map_err(|e| err("cannot read user_version", &e))? {
        0 => conn
            .execute_batch(&format!(
                "BEGIN; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))
            .map_err(|e| err("cannot create the schema", &e))?,
        SCHEMA_VERSION => {}
        found => {
            return Err(format!(
                "verification records database {}: schema version {found}, this build \
                 uses {SCHEMA_VERSION}; refusing to write to it",
                path.display()
            ))
        }
    }
    // Prepared now so a broken file fails at start-up, not on the first batch.
    conn.prepare_cached(INSERT)
        .map_err(|e| err("cannot prepare the insert", &e))?;
    Ok(conn)
}

/// Opens the database read-only. Never creates the file; works beside a
/// running writer (a WAL reader sees the last commit).
pub(super) fn open_reader(path: &Path) -> Result<Connection, String> {
    let err = |what: &str, e: &dyn std::fmt::Display| {
        format!(
            "verification records database {}: {what}: {e}",
            path.display()
        )
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| err("cannot open read-only", &e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| err("cannot set busy_timeout", &e))?;
    let found = user_version(&conn).map_err(|e| err("cannot read user_version", &e))?;
    if found != SCHEMA_VERSION {
        return Err(format!(
            "verification records database {}: schema version {found}, this build reads \
             {SCHEMA_VERSION}",
            path.display()
        ));
    }
    Ok(conn)
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// SQLite integers are signed 64-bit; a larger value is clamped rather than
/// failing the batch it sits in.
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The stored time of `r`. A `time_ms` outside chrono's range (only a bug
/// could make one) is stored as `fallback` so the row still sorts sensibly.
fn record_time(r: &Record, fallback: &DateTime<Utc>) -> String {
    match DateTime::from_timestamp_millis(r.time_ms) {
        Some(t) => fmt_time(&t),
        None => fmt_time(fallback),
    }
}

/// Inserts `records` in one transaction: all of them or, on error, none.
pub(super) fn insert_batch(conn: &mut Connection, records: &[Record]) -> rusqlite::Result<()> {
    let now = Utc::now();
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(INSERT)?;
        for r in records {
            stmt.execute(params![
                record_time(r, &now),
                r.direction.as_str(),
                r.source,
                r.call_id,
                r.a,
                r.b,
                r.c,
                r.id_src,
                r.id_dst,
                r.uvr_o,
                r.uvr_t,
                r.request,
                r.answer,
                r.code,
                r.incident,
                int(r.latency_us),
            ])?;
        }
    }
    tx.commit()
}

/// The time (stored form) before which rows are old: `now` minus `db_days`
/// days. An error when `db_days` is 0 (refused by configuration; deleting
/// everything is never the answer to a bad setting).
pub(super) fn cutoff(now: DateTime<Utc>, db_days: u32) -> Result<String, String> {
    if db_days == 0 {
        return Err(
            "verification records clean-up: db_days is 0; it must be at least 1, \
                    nothing deleted"
                .to_string(),
        );
    }
    let t = now
        .checked_sub_signed(chrono::TimeDelta::days(i64::from(db_days)))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    Ok(fmt_time(&t))
}

/// Deletes at most [`CLEANUP_CHUNK`] rows older than `cutoff` (a stored-form
/// time) in one statement; returns how many went.
pub(super) fn delete_chunk(conn: &Connection, cutoff: &str) -> Result<u64, String> {
    let n = conn
        .prepare_cached(DELETE_CHUNK)
        .and_then(|mut s| s.execute(params![cutoff, CLEANUP_CHUNK]))
        .map_err(|e| format!("verification records clean-up: delete before {cutoff}: {e}"))?;
    Ok(n as u64)
}

/// Deletes every record older than `db_days` days before `now`, in chunks of
/// 10 000 rows so no single statement holds the write lock long,
/// and returns how many rows were deleted. `db_days == 0` is an error and
/// deletes nothing.
pub fn cleanup(conn: &Connection, now: DateTime<Utc>, db_days: u32) -> Result<u64, String> {
    let cutoff = cutoff(now, db_days)?;
    let mut total = 0u64;
    loop {
        let n = delete_chunk(conn, &cutoff)?;
        total += n;
        if n < u64::from(CLEANUP_CHUNK) {
            return Ok(total);
        }
    }
}
