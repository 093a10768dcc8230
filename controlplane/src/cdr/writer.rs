//! Getting records from the call path onto disk without the call path waiting.
//!
//! [`CdrWriter::submit`] is a `try_send` onto a bounded channel: no lock
//! held across I/O, no await, no blocking. One dedicated OS thread (not a
//! tokio task: SQLite calls block, and a commit can take milliseconds) waits
//! for the first record of a batch, then gathers more until the batch is full
//! or `flush_ms` has passed since that first record, and commits them in one
//! transaction.
//!
//! A batch that fails to commit is retried with doubling backoff; if it still
//! fails it is logged at `error` with its size and counted in
//! [`CdrStats::failed`]. While the database keeps failing, later batches get a
//! single try each, so a full disk cannot stall shutdown for minutes.
//!
//! Closing is race-free without a lock: one atomic word holds a "closed" bit
//! and the number of `submit` calls in progress. `submit` registers itself in
//! that word before sending; once the writer thread sees the closed bit it
//! waits for the in-progress count to reach zero, and only then drains the
//! channel for the last time, so no record can slip in after the final drain.
//!
//! Records travel boxed: the channel preallocates its capacity, and 64 Ki
//! pointers cost 512 KiB where 64 Ki records would cost tens of megabytes.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::record::CallRecord;
use super::store::Store;
use super::{CdrConfig, CdrError};

/// The closed bit of [`Shared::state`]; the bits below count `submit` calls
/// in progress.
const CLOSED: u64 = 1 << 63;

/// Counters of a writer, read with [`CdrWriter::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CdrStats {
    /// Records committed to the database.
    pub written: u64,
    /// Records accepted and not yet committed or given up on.
    pub queued: u64,
    /// Records given up on after their batch failed every retry.
    pub failed: u64,
    /// Records refused because the queue was full.
    pub dropped_full: u64,
}

/// How hard the writer thread tries before giving a batch up.
#[derive(Debug, Clone, Copy)]
struct RetryPolicy {
    /// Tries per batch while the database is healthy (at least 1).
    attempts: u32,
    /// Pause after the first failure; doubled after each further one.
    first_backoff: Duration,
}

impl RetryPolicy {
    /// Five tries over about 1.5 s: enough to ride out a checkpoint stall or a
    /// log rotation freeing space, short enough not to back the queue up far.
    const DEFAULT: RetryPolicy = RetryPolicy {
        attempts: 5,
        first_backoff: Duration::from_millis(100),
    };
}

/// State shared by every writer clone, the handle and the thread.
#[derive(Debug, Default)]
struct Shared {
    /// [`CLOSED`] bit plus the number of `submit` calls in progress.
    state: AtomicU64,
    accepted: AtomicU64,
    written: AtomicU64,
    failed: AtomicU64,
    dropped_full: AtomicU64,
}

impl Shared {
    fn close(&self) {
        self.state.fetch_or(CLOSED, Ordering::SeqCst);
    }

    fn is_closed(&self) -> bool {
        self.state.load(Ordering::SeqCst) & CLOSED != 0
    }

    /// Waits until no `submit` is between its check of the closed bit and the
    /// end of its send. Such a window is a handful of instructions, so a
    /// yielding spin is enough.
    fn wait_for_submitters(&self) {
        while self.state.load(Ordering::SeqCst) & !CLOSED != 0 {
            std::thread::yield_now();
        }
    }

    fn stats(&self) -> CdrStats {
        let written = self.written.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        let accepted = self.accepted.load(Ordering::Relaxed);
        CdrStats {
            written,
            queued: accepted.saturating_sub(written.saturating_add(failed)),
            failed,
            dropped_full: self.dropped_full.load(Ordering::Relaxed),
        }
    }
}

/// The call path's end of the CDR queue. Cloning is two reference-count
/// increments.
#[derive(Debug, Clone)]
pub struct CdrWriter {
    /// `None` when CDRs are disabled: records are accepted and discarded.
    tx: Option<SyncSender<Box<CallRecord>>>,
    shared: Arc<Shared>,
}

impl CdrWriter {
    /// Queues `rec` for writing. Never blocks and never waits: if the queue is
    /// full the record is dropped, counted in [`CdrStats::dropped_full`] and
    /// [`CdrError::QueueFull`] returned; after shutdown it returns
    /// [`CdrError::Closed`]. Logging the refusal is up to the caller.
    pub fn submit(&self, rec: CallRecord) -> Result<(), CdrError> {
        let Some(tx) = &self.tx else {
            return Ok(());
        };
        let s = &*self.shared;
        if s.state.fetch_add(1, Ordering::SeqCst) & CLOSED != 0 {
            s.state.fetch_sub(1, Ordering::SeqCst);
            return Err(CdrError::Closed);
        }
        // Counted before the send so the thread can never have written more
        // than was accepted.
        s.accepted.fetch_add(1, Ordering::Relaxed);
        let res = match tx.try_send(Box::new(rec)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                s.accepted.fetch_sub(1, Ordering::Relaxed);
                s.dropped_full.fetch_add(1, Ordering::Relaxed);
                Err(CdrError::QueueFull)
            }
            Err(TrySendError::Disconnected(_)) => {
                s.accepted.fetch_sub(1, Ordering::Relaxed);
                Err(CdrError::Closed)
            }
        };
        s.state.fetch_sub(1, Ordering::SeqCst);
        res
    }

    /// A snapshot of the counters (each read separately, so `queued` may be
    /// off by a batch in flight).
    pub fn stats(&self) -> CdrStats {
        self.shared.stats()
    }
}

/// Owns the writer thread; keep it until shutdown.
///
/// Dropping it without [`CdrHandle::shutdown`] closes the queue and lets the
/// thread finish the backlog on its own, unjoined; a process that exits right
/// after may lose that backlog.
#[derive(Debug)]
pub struct CdrHandle {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    done: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl CdrHandle {
    /// The same counters as [`CdrWriter::stats`].
    pub fn stats(&self) -> CdrStats {
        self.shared.stats()
    }

    /// Stops accepting records, writes everything already queued, commits,
    /// joins the thread and returns the final counters. Later `submit`s get
    /// [`CdrError::Closed`].
    pub async fn shutdown(mut self) -> CdrStats {
        self.shared.close();
        if let Some(done) = self.done.take() {
            // An error means the thread ended without signalling, which only a
            // panic inside SQLite could cause; the join below reports it.
            let _ = done.await;
        }
        if let Some(thread) = self.thread.take() {
            // The thread signalled as its last act, so this join is immediate.
            if thread.join().is_err() {
                tracing::error!("CDR writer thread panicked; unwritten records are lost");
            }
        }
        let stats = self.shared.stats();
        tracing::info!(
            written = stats.written,
            failed = stats.failed,
            dropped_full = stats.dropped_full,
            lost_in_queue = stats.queued,
            "CDR writer stopped"
        );
        stats
    }
}

impl Drop for CdrHandle {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shared.close();
        }
    }
}

/// Opens the CDR database and starts the writer thread.
///
/// Errors here are configuration errors ([`super::Fault::Config`], apart from
/// a failure to start the thread): the process should refuse to start. With
/// `cfg.enabled == false`, nothing is opened and the writer discards records.
pub fn spawn(cfg: &CdrConfig, data_dir: &Path) -> Result<(CdrWriter, CdrHandle), CdrError> {
    spawn_with(cfg, data_dir, RetryPolicy::DEFAULT)
}

fn spawn_with(
    cfg: &CdrConfig,
    data_dir: &Path,
    retry: RetryPolicy,
) -> Result<(CdrWriter, CdrHandle), CdrError> {
    cfg.validate().map_err(CdrError::Config)?;
    let shared = Arc::new(Shared::default());
    if !cfg.enabled {
        tracing::info!("CDRs disabled");
        let writer = CdrWriter {
            tx: None,
            shared: Arc::clone(&shared),
        };
        return Ok((
            writer,
            CdrHandle {
                shared,
                thread: None,
                done: None,
            },
        ));
    }
    let path = cfg.db_path(data_dir);
    let store = Store::open(&path)?;
    let (tx, rx) = mpsc::sync_channel(cfg.queue);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let drain = Drain {
        rx,
        sink: Sink {
            store,
            shared: Arc::clone(&shared),
            retry,
            degraded: false,
        },
        batch_max: cfg.batch,
        flush: Duration::from_millis(cfg.flush_ms),
    };
    let thread = std::thread::Builder::new()
        .name("kordon-cdr".into())
        .spawn(move || {
            drain.run();
            let _ = done_tx.send(());
        })
        .map_err(CdrError::Thread)?;
    tracing::info!(
        path = %path.display(),
        queue = cfg.queue,
        batch = cfg.batch,
        flush_ms = cfg.flush_ms,
        "CDR writer started"
    );
    Ok((
        CdrWriter {
            tx: Some(tx),
            shared: Arc::clone(&shared),
        },
        CdrHandle {
            shared,
            thread: Some(thread),
            done: Some(done_rx),
        },
    ))
}

/// The writer thread's loop.
struct Drain {
    rx: Receiver<Box<CallRecord>>,
    sink: Sink,
    batch_max: usize,
    flush: Duration,
}

/// How long the writer sleeps at a time while a batch fills.
const SLICE: Duration = Duration::from_millis(20);

impl Drain {
    fn run(mut self) {
        let mut batch: Vec<CallRecord> = Vec::with_capacity(self.batch_max);
        let shared = Arc::clone(&self.sink.shared);
        loop {
            // Idle: wake every `flush` to notice a shutdown.
            match self.rx.recv_timeout(self.flush) {
                Ok(rec) => batch.push(*rec),
                Err(RecvTimeoutError::Timeout) if shared.is_closed() => break,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let deadline = Instant::now() + self.flush;
            // The batch fills while this thread sleeps in short slices rather
            // than waiting on the queue: a send to a sleeping (not parked)
            // receiver costs the call path no wake-up, so a busy second
            // makes a few wake-ups here instead of one per record.
            while batch.len() < self.batch_max && !shared.is_closed() {
                match self.rx.try_recv() {
                    Ok(rec) => batch.push(*rec),
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
            self.sink.write(&mut batch);
            if shared.is_closed() {
                break;
            }
        }
        // Closed (or every writer dropped): nothing more can arrive once the
        // submits in progress are done, so this drain is the last.
        shared.wait_for_submitters();
        loop {
            while batch.len() < self.batch_max {
                match self.rx.try_recv() {
                    Ok(rec) => batch.push(*rec),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            self.sink.write(&mut batch);
        }
    }
}

/// The store plus what the thread needs to retry and count.
struct Sink {
    store: Store,
    shared: Arc<Shared>,
    retry: RetryPolicy,
    /// Set after a batch was given up on, cleared by the next commit.
    degraded: bool,
}

impl Sink {
    /// Commits `batch` (retrying as the policy says), counts the outcome and
    /// empties it.
    fn write(&mut self, batch: &mut Vec<CallRecord>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let tries = if self.degraded {
            1
        } else {
            self.retry.attempts.max(1)
        };
        let path = self.store.path().to_path_buf();
        let store = &mut self.store;
        let tried = with_retries(
            "CDR batch",
            &path,
            n,
            tries,
            self.retry.first_backoff,
            || store.insert_batch(batch),
        );
        match tried {
            Ok(()) => {
                self.shared.written.fetch_add(n, Ordering::Relaxed);
                if self.degraded {
                    tracing::warn!(path = %path.display(), "CDR database writable again");
                    self.degraded = false;
                }
            }
            Err(e) => {
                self.shared.failed.fetch_add(n, Ordering::Relaxed);
                tracing::error!(
                    path = %path.display(),
                    records = n,
                    tries,
                    first_call_id = %batch.first().map_or("", |r| r.call_id.as_str()),
                    last_call_id = %batch.last().map_or("", |r| r.call_id.as_str()),
                    total_failed = self.shared.failed.load(Ordering::Relaxed),
                    error = %e,
                    "CDR batch LOST: insert failed on every try"
                );
                self.degraded = true;
            }
        }
        batch.clear();
    }
}

/// Runs `insert` up to `tries` times, sleeping `first_backoff`, then twice
/// as long, between tries and logging each failure but the last, which is
/// returned. Shared by the database writers (CDRs, verification records);
/// they count and log the final outcome themselves.
pub(crate) fn with_retries<E: std::fmt::Display>(
    what: &str,
    path: &Path,
    records: u64,
    tries: u32,
    first_backoff: Duration,
    mut insert: impl FnMut() -> Result<(), E>,
) -> Result<(), E> {
    let tries = tries.max(1);
    let mut backoff = first_backoff;
    let mut attempt = 1;
    loop {
        match insert() {
            Ok(()) => return Ok(()),
            Err(e) if attempt < tries => {
                tracing::warn!(
                    path = %path.display(),
                    records,
                    attempt,
                    error = %e,
                    "{what} insert failed, retrying"
                );
                std::thread::sleep(backoff);
                backoff = backoff.saturating_mul(2);
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdr::store::tests::{count, sample, TempDir};

    fn cfg(queue: usize, batch: usize, flush_ms: u64) -> CdrConfig {
        CdrConfig {
            queue,
            batch,
            flush_ms,
            ..CdrConfig::default()
        }
    }

    #[tokio::test]
    async fn shutdown_drains_everything_queued() {
        let dir = TempDir::new("drain");
        let (w, h) = spawn(&cfg(20_000, 512, 200), &dir.0).expect("spawn");
        for i in 0..10_000 {
            w.submit(sample(i)).expect("queue has room");
        }
        let stats = h.shutdown().await;
        assert_eq!(
            stats,
            CdrStats {
                written: 10_000,
                queued: 0,
                failed: 0,
                dropped_full: 0
            }
        );
        assert_eq!(count(&dir.db()), 10_000);
        assert!(matches!(w.submit(sample(0)), Err(CdrError::Closed)));
    }

    #[tokio::test]
    async fn writes_a_lone_record_after_flush_interval() {
        let dir = TempDir::new("flush");
        let (w, h) = spawn(&cfg(16, 8, 20), &dir.0).expect("spawn");
        w.submit(sample(1)).expect("room");
        let deadline = Instant::now() + Duration::from_secs(10);
        while w.stats().written < 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(w.stats().written, 1, "written without a shutdown");
        // Readable while the writer is still running.
        assert_eq!(count(&dir.db()), 1);
        assert_eq!(h.shutdown().await.written, 1);
    }

    #[test]
    fn full_queue_refuses_without_blocking() {
        let shared = Arc::new(Shared::default());
        // No consumer: nothing leaves the queue.
        let (tx, _rx) = mpsc::sync_channel(4);
        let w = CdrWriter {
            tx: Some(tx),
            shared,
        };
        for i in 0..4 {
            w.submit(sample(i)).expect("room");
        }
        let t = Instant::now();
        for i in 4..104 {
            assert!(matches!(w.submit(sample(i)), Err(CdrError::QueueFull)));
        }
        let took = t.elapsed();
        println!("100 refused submits took {took:?}");
        let s = w.stats();
        assert_eq!((s.queued, s.dropped_full, s.written), (4, 100, 0));
    }

    #[tokio::test]
    async fn disabled_writer_accepts_and_discards() {
        let dir = TempDir::new("disabled");
        let c = CdrConfig {
            enabled: false,
            ..CdrConfig::default()
        };
        let (w, h) = spawn(&c, &dir.0).expect("spawn");
        w.submit(sample(1)).expect("discarded");
        assert_eq!(h.shutdown().await, CdrStats::default());
        assert!(!dir.db().exists());
    }

    #[test]
    fn bad_config_and_unopenable_path_fail_up_front() {
        let dir = TempDir::new("badcfg");
        let e = spawn(&cfg(0, 1, 1), &dir.0).expect_err("queue 0");
        assert!(matches!(e, CdrError::Config(_)), "{e}");
        let missing = dir.0.join("no/such/dir");
        let e = spawn(&CdrConfig::default(), &missing).expect_err("missing dir");
        assert_eq!(e.fault(), crate::cdr::Fault::Config, "{e}");
    }

    #[tokio::test]
    async fn failed_batches_are_retried_then_counted() {
        let dir = TempDir::new("fail");
        let retry = RetryPolicy {
            attempts: 3,
            first_backoff: Duration::from_millis(1),
        };
        let (w, h) = spawn_with(&cfg(64, 8, 10), &dir.0, retry).expect("spawn");
        // Pull the tables out from under the writer: every insert now fails.
        let other = rusqlite::Connection::open(dir.db()).expect("second connection");
        other
            .execute_batch("DROP TABLE attempts; DROP TABLE calls;")
            .expect("drop");
        for i in 0..3 {
            w.submit(sample(i)).expect("room");
        }
        let stats = h.shutdown().await;
        assert_eq!((stats.written, stats.failed, stats.queued), (0, 3, 0));
    }

    #[tokio::test]
    async fn throughput_sanity() {
        let dir = TempDir::new("speed");
        let (w, h) = spawn(&CdrConfig::default(), &dir.0).expect("spawn");
        let n = 20_000u32;
        let t = Instant::now();
        let mut refused = 0;
        for i in 0..n {
            if w.submit(sample(i)).is_err() {
                refused += 1;
            }
        }
        let submit = t.elapsed();
        let stats = h.shutdown().await;
        let total = t.elapsed();
        println!(
            "cdr throughput: {n} submits in {submit:?}, all committed in {total:?} \
             ({:.0} records/s; {refused} refused; {stats:?})",
            f64::from(n) / total.as_secs_f64().max(1e-9)
        );
    }
}
