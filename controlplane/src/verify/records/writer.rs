//! The writer thread: takes records off the sink's queue, commits them in
//! batches, and runs the daily retention clean-up.
//!
//! What is here: [`spawn`], which opens the database and starts one OS thread
//! (not a tokio task: SQLite calls block), and [`RecordsHandle`], which owns
//! that thread. The thread waits for a first record, gathers more until the
//! batch holds [`BATCH_MAX`] or [`FLUSH`] has passed since that first record,
//! and commits them in one transaction. A batch that fails is retried twice
//! with a short backoff, then counted in [`RecordsHandle::failed`] and logged;
//! while the database keeps failing later batches get one try each, so a
//! full disk cannot stall shutdown.
//!
//! Retention: a clean-up runs once when the thread starts and then daily at
//! `db_cut_time_min` minutes after UTC midnight. It deletes in chunks of
//! [`super::store::CLEANUP_CHUNK`] rows, one chunk per turn of the loop, so
//! batches of new records are committed between chunks.
//!
//! What is not here: the schema and SQL (see the store), the queue's sending
//! side (see [`super::RecordSink`]).
//!
//! Stopping: [`RecordSink`] is not ours to close, so the handle raises a stop
//! flag that the thread checks at least every [`IDLE`]; the thread then
//! writes everything still queued and returns. If the sink is dropped first
//! the thread notices the closed queue and keeps running the clean-up until
//! it is stopped. A record the sink accepts in the instant between the final
//! drain and the thread's exit is lost; records submitted after that are
//! counted by the sink as dropped. Shut the node's intake down first.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveTime, TimeDelta, Utc};
use rusqlite::Connection;

use super::store::{self, CLEANUP_CHUNK};
use super::{Record, RecordSink};

/// Most records committed in one transaction.
pub(super) const BATCH_MAX: usize = 1_000;

/// Longest a queued record waits for its batch to be committed (the time
/// SQLite takes to commit comes on top).
pub(super) const FLUSH: Duration = Duration::from_millis(100);

/// Longest the idle thread waits before it looks at the stop flag, the
/// retention settings and the clock again.
pub(super) const IDLE: Duration = Duration::from_millis(100);

/// How long the thread sleeps at a time while a batch fills.
const SLICE: Duration = Duration::from_millis(20);

/// Tries per batch while the database is healthy.
const ATTEMPTS: u32 = 3;

/// Pause after a failed try; doubled after each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Minutes in a day: `db_cut_time_min` must be below this.
const DAY_MIN: u32 = 24 * 60;

/// State shared by the handle and the thread.
#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    written: AtomicU64,
    failed: AtomicU64,
    /// `db_days << 32 | db_cut_time_min`, so both change together.
    retention: AtomicU64,
}

fn pack(db_days: u32, db_cut_time_min: u32) -> u64 {
    (u64::from(db_days) << 32) | u64::from(db_cut_time_min)
}

fn unpack(v: u64) -> (u32, u32) {
    ((v >> 32) as u32, v as u32)
}

fn check_retention(db_days: u32, db_cut_time_min: u32) -> Result<(), String> {
    if db_days == 0 {
        return Err("verification records: db_days is 0; it must be at least 1".to_string());
    }
    if db_cut_time_min >= DAY_MIN {
        return Err(format!(
            "verification records: db_cut_time_min is {db_cut_time_min}; it must be below \
             {DAY_MIN} (minutes after UTC midnight)"
        ));
    }
    Ok(())
}

/// The first daily clean-up time strictly after `now`: `db_cut_time_min`
/// minutes after a UTC midnight.
pub(super) fn next_cut_after(now: DateTime<Utc>, db_cut_time_min: u32) -> DateTime<Utc> {
    let midnight = now.date_naive().and_time(NaiveTime::MIN).and_utc();
    let today = midnight + TimeDelta::minutes(i64::from(db_cut_time_min.min(DAY_MIN - 1)));
    if today > now {
        today
    } else {
        today + TimeDelta::days(1)
    }
}

/// Owns the writer thread; keep it until shutdown.
///
/// Dropping it without [`RecordsHandle::shutdown`] raises the stop flag and
/// lets the thread finish the backlog on its own, unjoined.
#[derive(Debug)]
pub struct RecordsHandle {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl RecordsHandle {
    /// Stops the thread: it writes everything already queued, commits and
    /// returns; this call joins it (within about 100 ms plus the time to
    /// write the backlog). Works whether or not the sink was dropped.
    pub fn shutdown(mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("verification records thread panicked; unwritten records are lost");
            }
        }
        tracing::info!(
            written = self.written(),
            failed = self.failed(),
            "verification records writer stopped"
        );
    }

    /// New retention settings, used from the next clean-up on (a changed
    /// cut time also moves the next clean-up). Invalid values (`db_days` 0,
    /// `db_cut_time_min` of a day or more) are logged and ignored: the old
    /// settings stay.
    pub fn set_retention(&self, db_days: u32, db_cut_time_min: u32) {
        match check_retention(db_days, db_cut_time_min) {
            Ok(()) => self
                .shared
                .retention
                .store(pack(db_days, db_cut_time_min), Ordering::SeqCst),
            Err(e) => tracing::warn!(error = %e, "retention settings ignored"),
        }
    }

    /// Records committed so far.
    pub fn written(&self) -> u64 {
        self.shared.written.load(Ordering::Relaxed)
    }

    /// Records given up on after their batch failed every try.
    pub fn failed(&self) -> u64 {
        self.shared.failed.load(Ordering::Relaxed)
    }
}

impl Drop for RecordsHandle {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

/// Opens (creating it, its directories and its table if absent) the records
/// database at `db` and starts the writer thread. The sink holds a queue of
/// `queue` records; beyond that the sink drops and counts.
///
/// Errors name the file and the problem: a directory or file that cannot be
/// created or opened, a schema from another build, `queue` 0, `db_days` 0,
/// `db_cut_time_min` of a day or more, a thread that cannot start.
pub fn spawn(
    db: &Path,
    db_days: u32,
    db_cut_time_min: u32,
    queue: usize,
) -> Result<(RecordSink, RecordsHandle), String> {
    check_retention(db_days, db_cut_time_min)?;
    if queue == 0 {
        return Err("verification records: queue is 0; it must be at least 1".to_string());
    }
    let conn = store::open_writer(db)?;
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        written: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        retention: AtomicU64::new(pack(db_days, db_cut_time_min)),
    });
    let (tx, rx) = mpsc::sync_channel(queue);
    let writer = Writer {
        conn,
        path: db.to_path_buf(),
        rx,
        shared: Arc::clone(&shared),
        batch: Vec::with_capacity(BATCH_MAX),
        intake_open: true,
        degraded: false,
    };
    let thread = std::thread::Builder::new()
        .name("kordon-verify-rec".into())
        .spawn(move || writer.run())
        .map_err(|e| format!("verification records: cannot start the writer thread: {e}"))?;
    tracing::info!(
        path = %db.display(),
        queue,
        db_days,
        db_cut_time_min,
        "verification records writer started"
    );
    Ok((
        RecordSink::new(tx),
        RecordsHandle {
            shared,
            thread: Some(thread),
        },
    ))
}

/// A clean-up in progress.
struct Cleaning {
    /// Rows with a time below this (stored form) go.
    cutoff: String,
    deleted: u64,
    started: Instant,
}

/// The thread's state.
struct Writer {
    conn: Connection,
    path: PathBuf,
    rx: Receiver<Record>,
    shared: Arc<Shared>,
    batch: Vec<Record>,
    /// Cleared when every sender is gone.
    intake_open: bool,
    /// Set after a batch was given up on, cleared by the next commit.
    degraded: bool,
}

impl Writer {
    fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::SeqCst)
    }

    fn run(mut self) {
        let mut seen = self.shared.retention.load(Ordering::SeqCst);
        let (days, cut) = unpack(seen);
        let mut next_cut = next_cut_after(Utc::now(), cut);
        let mut cleaning = self.start_cleanup(days);
        while !self.stopping() {
            let now_retention = self.shared.retention.load(Ordering::SeqCst);
            if now_retention != seen {
                seen = now_retention;
                next_cut = next_cut_after(Utc::now(), unpack(seen).1);
            }
            // While a clean-up runs, only pick up what is already queued
            // between its chunks; otherwise wait, but not past the next cut.
            let wait = if cleaning.is_some() {
                Duration::ZERO
            } else {
                (next_cut - Utc::now())
                    .to_std()
                    .unwrap_or(Duration::ZERO)
                    .min(IDLE)
            };
            if self.intake_open {
                match self.rx.recv_timeout(wait) {
                    Ok(rec) => {
                        self.batch.push(rec);
                        self.fill();
                        self.write();
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {
                        tracing::info!("verification record sink dropped; clean-up continues");
                        self.intake_open = false;
                    }
                }
            } else if !wait.is_zero() {
                std::thread::sleep(wait);
            }
            let now = Utc::now();
            if cleaning.is_none() && now >= next_cut {
                cleaning = self.start_cleanup(unpack(seen).0);
                next_cut = next_cut_after(now, unpack(seen).1);
            }
            if let Some(c) = cleaning.as_mut() {
                if self.cleanup_chunk(c) {
                    cleaning = None;
                }
            }
        }
        // Stopped: write whatever is still queued.
        loop {
            while self.batch.len() < BATCH_MAX {
                match self.rx.try_recv() {
                    Ok(rec) => self.batch.push(rec),
                    Err(_) => break,
                }
            }
            if self.batch.is_empty() {
                break;
            }
            self.write();
        }
    }

    /// Gathers records into the batch until it is full, [`FLUSH`] has passed
    /// since the first one, or the thread is told to stop. Sleeps in short
    /// slices rather than waiting on the queue: a send to a sleeping (not
    /// parked) receiver costs the sender no wake-up.
    fn fill(&mut self) {
        let deadline = Instant::now() + FLUSH;
        while self.batch.len() < BATCH_MAX && !self.stopping() {
            match self.rx.try_recv() {
                Ok(rec) => self.batch.push(rec),
                Err(TryRecvError::Empty) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    std::thread::sleep(left.min(SLICE));
                }
                Err(TryRecvError::Disconnected) => break,
            }
        }
    }

    /// Commits the batch (retrying while the database is healthy), counts
    /// the outcome and empties it.
    fn write(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let n = self.batch.len() as u64;
        let tries = if self.degraded { 1 } else { ATTEMPTS };
        let (conn, batch) = (&mut self.conn, &self.batch);
        let tried = crate::cdr::with_retries(
            "verification records batch",
            &self.path,
            n,
            tries,
            FIRST_BACKOFF,
            || store::insert_batch(conn, batch),
        );
        match tried {
            Ok(()) => {
                self.shared.written.fetch_add(n, Ordering::Relaxed);
                if self.degraded {
                    tracing::warn!(path = %self.path.display(), "verification records database writable again");
                    self.degraded = false;
                }
            }
            Err(e) => {
                self.shared.failed.fetch_add(n, Ordering::Relaxed);
                tracing::error!(
                    path = %self.path.display(),
                    records = n,
                    tries,
                    total_failed = self.shared.failed.load(Ordering::Relaxed),
                    error = %e,
                    "verification records batch LOST: insert failed on every try"
                );
                self.degraded = true;
            }
        }
        self.batch.clear();
    }

    fn start_cleanup(&self, db_days: u32) -> Option<Cleaning> {
        match store::cutoff(Utc::now(), db_days) {
            Ok(cutoff) => Some(Cleaning {
                cutoff,
                deleted: 0,
                started: Instant::now(),
            }),
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "verification records clean-up skipped");
                None
            }
        }
    }

    /// Deletes one chunk; true when the clean-up is over (done or failed).
    fn cleanup_chunk(&self, c: &mut Cleaning) -> bool {
        match store::delete_chunk(&self.conn, &c.cutoff) {
            Ok(n) => {
                c.deleted += n;
                if n < u64::from(CLEANUP_CHUNK) {
                    tracing::info!(
                        path = %self.path.display(),
                        before = %c.cutoff,
                        deleted = c.deleted,
                        ms = c.started.elapsed().as_millis() as u64,
                        "verification records clean-up done"
                    );
                    return true;
                }
                false
            }
            Err(e) => {
                tracing::error!(
                    path = %self.path.display(),
                    deleted = c.deleted,
                    error = %e,
                    "verification records clean-up failed; next try at the next cut time"
                );
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test time")
            .with_timezone(&Utc)
    }

    #[test]
    fn next_cut_is_today_before_the_cut_and_tomorrow_from_it() {
        assert_eq!(
            next_cut_after(t("2024-05-01T00:10:00Z"), 30),
            t("2024-05-01T00:30:00Z")
        );
        assert_eq!(
            next_cut_after(t("2024-05-01T00:30:00Z"), 30),
            t("2024-05-02T00:30:00Z")
        );
        assert_eq!(
            next_cut_after(t("2024-12-31T23:59:59Z"), 0),
            t("2025-01-01T00:00:00Z")
        );
        assert_eq!(
            next_cut_after(t("2024-05-01T12:00:00Z"), 1_439),
            t("2024-05-01T23:59:00Z")
        );
    }

    #[test]
    fn set_retention_takes_valid_settings_and_ignores_bad_ones() {
        let dir = std::env::temp_dir().join(format!(
            "kordon-verify-rec-retention-{}",
            std::process::id()
        ));
        let db = dir.join("v.sqlite");
        let (_sink, handle) = spawn(&db, 30, 30, 10).expect("spawn");
        let get = |h: &RecordsHandle| unpack(h.shared.retention.load(Ordering::SeqCst));
        assert_eq!(get(&handle), (30, 30));
        handle.set_retention(7, 90);
        assert_eq!(get(&handle), (7, 90));
        handle.set_retention(0, 90);
        handle.set_retention(7, 1_440);
        assert_eq!(get(&handle), (7, 90), "bad settings leave the old ones");
        handle.shutdown();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
