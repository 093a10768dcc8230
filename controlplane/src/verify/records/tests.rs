//! Tests of the writer thread, retention and the report, against real SQLite
//! files in a temporary directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};

use super::store::{insert_batch, open_reader, open_writer, CLEANUP_CHUNK};
use super::*;

/// A fresh, empty directory under the system temp dir; removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::AtomicU32;
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "kordon-verify-rec-{tag}-{}-{}-{nanos}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        TempDir(dir)
    }

    fn db(&self) -> PathBuf {
        self.0.join("verify.sqlite")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).expect("test times are in range")
}

/// 2024-05-01T10:00:00.000Z
const T0: i64 = 1_714_557_600_000;

/// Retention long enough that the clean-up the writer runs at start leaves
/// rows dated [`T0`] alone.
const KEEP: u32 = 100_000;

fn sample(n: u32, time_ms: i64) -> Record {
    Record {
        time_ms,
        direction: match n % 3 {
            0 => Direction::Out,
            1 => Direction::In,
            _ => Direction::Local,
        },
        source: "rest",
        call_id: format!("call-{n}"),
        a: "74951234567".into(),
        b: "74957654321".into(),
        c: None,
        id_src: Some(7),
        id_dst: None,
        uvr_o: Some(1),
        uvr_t: Some(2),
        request: "{}".into(),
        answer: "Continue".into(),
        code: code::CONFIRMED,
        incident: false,
        latency_us: 1_500,
    }
}

fn count(path: &Path) -> i64 {
    open_reader(path)
        .expect("db opens read-only")
        .query_row("SELECT count(*) FROM verifications", [], |r| r.get(0))
        .expect("count query runs")
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn writes_1000_records_and_shutdown_flushes_them() {
    let dir = TempDir::new("thousand");
    let (sink, handle) = spawn(&dir.db(), KEEP, 30, 2_000).expect("spawn");
    for n in 0..1_000 {
        sink.submit(sample(n, T0 + i64::from(n)));
    }
    assert_eq!((sink.submitted(), sink.dropped()), (1_000, 0));
    // Shut down with the sink still alive: the stop flag, not a closed
    // queue, must end the thread.
    let started = Instant::now();
    handle.shutdown();
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown hung");
    assert_eq!(count(&dir.db()), 1_000);
    // The thread is joined and its queue end gone: a later record is
    // counted as dropped and never reaches the file.
    sink.submit(sample(5_000, T0));
    assert_eq!(sink.dropped(), 1);
    assert_eq!(count(&dir.db()), 1_000);
}

#[test]
fn records_are_committed_without_shutdown() {
    let dir = TempDir::new("flush");
    let (sink, handle) = spawn(&dir.db(), KEEP, 30, 100).expect("spawn");
    for n in 0..50 {
        sink.submit(sample(n, T0));
    }
    wait_until("50 records written", || handle.written() == 50);
    assert_eq!(count(&dir.db()), 50);
    assert_eq!(handle.failed(), 0);
    handle.shutdown();
}

#[test]
fn stores_every_field_in_its_column() {
    let dir = TempDir::new("fields");
    let (sink, handle) = spawn(&dir.db(), KEEP, 30, 10).expect("spawn");
    let mut r = sample(2, T0 + 7_123);
    r.c = Some("74950000000".into());
    r.code = code::NOT_CONFIRMED;
    r.incident = true;
    r.latency_us = u64::MAX;
    sink.submit(r);
    handle.shutdown();
    let c = open_reader(&dir.db()).expect("reader");
    type Row = (
        String,
        String,
        String,
        Option<String>,
        Option<i64>,
        Option<i64>,
        i64,
        i64,
        i64,
    );
    let row: Row = c
        .query_row(
            "SELECT time, direction, source, c, id_src, id_dst, code, incident, latency_us \
             FROM verifications",
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
                    x.get(7)?,
                    x.get(8)?,
                ))
            },
        )
        .expect("row");
    assert_eq!(
        row,
        (
            "2024-05-01T10:00:07.123Z".to_string(),
            "local".to_string(),
            "rest".to_string(),
            Some("74950000000".to_string()),
            Some(7),
            None,
            1,
            1,
            i64::MAX
        )
    );
}

#[test]
fn shutdown_works_after_the_sink_is_dropped() {
    let dir = TempDir::new("dropped");
    let db = dir.0.join("nested").join("deeper").join("v.sqlite");
    let (sink, handle) = spawn(&db, KEEP, 30, 100).expect("spawn creates directories");
    for n in 0..10 {
        sink.submit(sample(n, T0));
    }
    drop(sink);
    std::thread::sleep(Duration::from_millis(50));
    handle.shutdown();
    assert_eq!(count(&db), 10);
}

#[test]
fn spawn_refuses_bad_settings_by_name() {
    let dir = TempDir::new("bad");
    for (days, cut, queue, word) in [
        (0, 30, 10, "db_days"),
        (30, 1_440, 10, "db_cut_time_min"),
        (30, 30, 0, "queue"),
    ] {
        let e = spawn(&dir.db(), days, cut, queue).expect_err(word);
        assert!(e.contains(word), "{e}");
    }
    assert!(!dir.db().exists(), "nothing is created for bad settings");
}

#[test]
fn spawn_refuses_a_foreign_schema() {
    let dir = TempDir::new("foreign");
    let c = rusqlite::Connection::open(dir.db()).expect("raw open");
    c.pragma_update(None, "user_version", 42).expect("pragma");
    drop(c);
    let e = spawn(&dir.db(), 30, 30, 10).expect_err("foreign schema");
    assert!(e.contains("schema version 42"), "{e}");
}

#[test]
fn cleanup_removes_old_rows_only_in_chunks() {
    let dir = TempDir::new("cleanup");
    let mut conn = open_writer(&dir.db()).expect("open");
    let now = at(T0);
    let day = 86_400_000;
    let cut = T0 - 2 * day;
    // More old rows than one chunk, so the loop must go round.
    let old: Vec<Record> = (0..CLEANUP_CHUNK + 500)
        .map(|n| sample(n, cut - 1 - i64::from(n)))
        .collect();
    insert_batch(&mut conn, &old).expect("insert old");
    let keep = [sample(1, cut), sample(2, cut + 1), sample(3, T0)];
    insert_batch(&mut conn, &keep).expect("insert new");
    let deleted = cleanup(&conn, now, 2).expect("cleanup");
    assert_eq!(deleted, u64::from(CLEANUP_CHUNK) + 500);
    assert_eq!(count(&dir.db()), 3, "a row exactly at the cut-off stays");
    assert_eq!(cleanup(&conn, now, 2).expect("again"), 0);
    let e = cleanup(&conn, now, 0).expect_err("0 days");
    assert!(e.contains("db_days"), "{e}");
    assert_eq!(count(&dir.db()), 3, "0 days deletes nothing");
}

#[test]
fn the_thread_cleans_up_at_start() {
    let dir = TempDir::new("startclean");
    let now = Utc::now().timestamp_millis();
    let day = 86_400_000;
    {
        let mut conn = open_writer(&dir.db()).expect("open");
        insert_batch(
            &mut conn,
            &[sample(1, now - 40 * day), sample(2, now - 10 * day)],
        )
        .expect("insert");
    }
    let (_sink, handle) = spawn(&dir.db(), 30, 30, 10).expect("spawn");
    wait_until("the old row to go", || count(&dir.db()) == 1);
    handle.set_retention(5, 0);
    handle.shutdown();
    assert_eq!(count(&dir.db()), 1);
}

/// A database of 10 verifications one second apart from [`T0`]: codes
/// 0,0,0,1,1,2,4,4,4,4; directions out,in,local repeating; the code 1 and
/// 4 rows are incidents.
fn report_db(dir: &TempDir) {
    let mut conn = open_writer(&dir.db()).expect("open");
    let codes = [0u8, 0, 0, 1, 1, 2, 4, 4, 4, 4];
    let rows: Vec<Record> = codes
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let mut r = sample(i as u32, T0 + 1_000 * i as i64);
            r.code = c;
            r.incident = c == 1 || c == 4;
            r
        })
        .collect();
    insert_batch(&mut conn, &rows).expect("insert");
}

fn run_report(db: &Path, from: i64, to: i64, limit: u64) -> String {
    let mut out = Vec::new();
    report(db, at(from), at(to), limit, &mut out).expect("report");
    String::from_utf8(out).expect("report is UTF-8")
}

/// The number at the end of the line that starts with `label`.
fn value(text: &str, label: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(label))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse().ok())
}

#[test]
fn report_counts_by_code_direction_and_incident() {
    let dir = TempDir::new("report");
    report_db(&dir);
    let text = run_report(&dir.db(), T0, T0 + 60_000, 0);
    let code_lines: Vec<Vec<&str>> = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("code"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(
        code_lines,
        vec![
            vec!["0", "confirmed", "3"],
            vec!["1", "not confirmed", "2"],
            vec!["2", "timeout", "1"],
            vec!["4", "calling number not served", "4"],
        ],
        "{text}"
    );
    assert_eq!(value(&text, "out"), Some(4), "{text}");
    assert_eq!(value(&text, "in "), Some(3), "{text}");
    assert_eq!(value(&text, "local"), Some(3), "{text}");
    assert_eq!(value(&text, "total"), Some(10), "{text}");
    assert_eq!(value(&text, "incidents"), Some(6), "{text}");
    assert!(!text.contains("limit_sql"), "{text}");
    // Columns line up: every count ends in the same column.
    let ends: Vec<usize> = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("code"))
        .take_while(|l| !l.is_empty())
        .map(str::len)
        .collect();
    assert!(ends.windows(2).all(|w| w[0] == w[1]), "{text}");
}

#[test]
fn report_honours_limit_sql_and_says_so() {
    let dir = TempDir::new("limit");
    report_db(&dir);
    let text = run_report(&dir.db(), T0, T0 + 60_000, 4);
    assert_eq!(value(&text, "total"), Some(4), "{text}");
    // The first four rows by time: codes 0,0,0,1.
    assert_eq!(value(&text, "   0"), Some(3), "{text}");
    assert_eq!(value(&text, "   4"), None, "{text}");
    assert!(
        text.contains("covers only the first 4 rows") && text.contains("limit_sql = 4"),
        "{text}"
    );
    // A bound equal to the match count cuts nothing and says nothing.
    let text = run_report(&dir.db(), T0, T0 + 60_000, 10);
    assert_eq!(value(&text, "total"), Some(10), "{text}");
    assert!(!text.contains("limit_sql"), "{text}");
}

#[test]
fn report_keeps_to_from_inclusive_to_exclusive() {
    let dir = TempDir::new("bounds");
    report_db(&dir);
    // Rows at T0+2 s, +3 s, +4 s; the one at +5 s is excluded.
    let text = run_report(&dir.db(), T0 + 2_000, T0 + 5_000, 0);
    assert_eq!(value(&text, "total"), Some(3), "{text}");
    assert_eq!(value(&text, "   2"), None, "{text}");
    assert_eq!(value(&text, "   1"), Some(2), "{text}");
    let text = run_report(&dir.db(), T0 + 100_000, T0 + 200_000, 0);
    assert_eq!(value(&text, "total"), Some(0), "{text}");
    assert!(text.contains("no verifications"), "{text}");
}

#[test]
fn report_errors_name_the_problem() {
    let dir = TempDir::new("reporterr");
    let mut out = Vec::new();
    let e = report(&dir.db(), at(T0), at(T0 + 1), 0, &mut out).expect_err("missing");
    assert!(e.contains("verify.sqlite"), "{e}");
    assert!(!dir.db().exists(), "a report never creates the file");
    report_db(&dir);
    let e = report(&dir.db(), at(T0), at(T0), 0, &mut out).expect_err("empty interval");
    assert!(e.contains("not before"), "{e}");
}

#[test]
fn parses_the_three_time_forms() {
    let want = at(T0);
    assert_eq!(parse_time("2024-05-01T10:00:00Z"), Ok(want));
    assert_eq!(parse_time("2024-05-01T13:00:00+03:00"), Ok(want));
    assert_eq!(parse_time(" 2024-05-01 10:00:00 "), Ok(want));
    assert_eq!(parse_time("2024-05-01"), Ok(want - TimeDelta::hours(10)));
    for bad in [
        "",
        "yesterday",
        "2024-13-01",
        "2024-05-01 25:00:00",
        "2024-05-01T10:00",
    ] {
        let e = parse_time(bad).expect_err(bad);
        assert!(e.contains("is not a time"), "{e}");
    }
}
