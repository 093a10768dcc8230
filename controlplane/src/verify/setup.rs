//! Our capacity from SETUP files, and other operators' range files.
//!
//! What it does:
//! - [`scan`] takes the SETUP files dropped in the watched directory
//!   (`setup_path`), oldest name time first, and for each one either applies
//!   it (stores it, swaps the new capacity into the node, moves the file to
//!   the outbox `setup_outbox`) or refuses it (moves it to `setup_refused`
//!   with a `<name>.error` note beside it saying why). A file applied for a
//!   node id replaces that node id's previous file; other node ids keep their
//!   ranges.
//! - [`load_capacity`] rebuilds the capacity at start-up from the files
//!   stored in the `capacity` table of the verification database.
//! - [`load_ranges_dir`] reads the directory of other operators' range files.
//!
//! What it does not do: send the files anywhere (the outbox is for whatever
//! forwards them), nor watch the directory by itself (the caller runs [`scan`]
//! every `main_timer` seconds).
//!
//! Producers: write the file under another name or in another directory of
//! the same filesystem, then rename it into the watched directory. As a guard
//! against a producer that writes in place, a file is only taken once its
//! modification time is at least [`MIN_AGE`] old; a younger one is left for
//! the next scan.
//!
//! Invariants:
//! - nothing is half-loaded: a refused file changes neither the table nor the
//!   node; an applied one is stored in one transaction before the node sees it;
//! - a node id's files apply in increasing name time; a file whose time is not
//!   later than the applied one is refused;
//! - files whose name is not `SETUP_...` are left where they are;
//! - an I/O or database failure leaves the file in place for the next scan
//!   and is reported in [`ScanReport::errors`]; it is never a refusal;
//! - nothing here panics on file content or names.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rusqlite::{params, Connection, OptionalExtension};

use super::config::VerifyConfig;
use super::node::Node;
use super::numbers::{parse_ranges, parse_setup, parse_setup_name, RangeMap, SetupName};

/// How old a file's modification time must be before [`scan`] takes it.
pub const MIN_AGE: Duration = Duration::from_secs(1);

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// One scan at a time: two scans would both build from the same capacity.
static SCAN_LOCK: Mutex<()> = Mutex::new(());

/// What one [`scan`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Files applied (and moved to the outbox), in the order applied.
    pub applied: Vec<String>,
    /// Files refused (moved to the refused directory): name and reason.
    pub refused: Vec<(String, String)>,
    /// Failures that left files in place or stopped the scan (unreadable
    /// directory, database error, a move that failed).
    pub errors: Vec<String>,
}

fn open(db: &Path) -> Result<Connection, String> {
    let e = |m: rusqlite::Error| format!("{}: {m}", db.display());
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|m| format!("{}: {m}", dir.display()))?;
    }
    let conn = Connection::open(db).map_err(e)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(e)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(e)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(path = %db.display(), mode = %mode, "verify database is not in WAL mode");
    }
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS capacity (
            uvr_id INTEGER PRIMARY KEY,
            file_name TEXT NOT NULL,
            file_time INTEGER NOT NULL,
            content TEXT NOT NULL,
            applied_at TEXT NOT NULL
        );",
    )
    .map_err(e)?;
    Ok(conn)
}

/// The stored file of each node id: `uvr_id → (file_name, file_time, content)`.
fn stored(conn: &Connection) -> Result<HashMap<u32, (String, i64, String)>, rusqlite::Error> {
    let mut st = conn.prepare("SELECT uvr_id, file_name, file_time, content FROM capacity")?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    let mut out = HashMap::new();
    for row in rows {
        let (id, name, time, content) = row?;
        // Ids outside u32 cannot be ours; skip rather than fail.
        if let Ok(id) = u32::try_from(id) {
            out.insert(id, (name, time, content));
        }
    }
    Ok(out)
}

/// Rebuilds our capacity from the SETUP files stored in `db`, keeping only
/// node ids still in `cfg.nodes`. The error names the file and line at fault
/// (a stored file can stop parsing when `numbering.country_code` changes).
pub fn load_capacity(db: &Path, cfg: &VerifyConfig) -> Result<RangeMap<u32>, String> {
    let conn = open(db)?;
    let files = stored(&conn).map_err(|m| format!("{}: {m}", db.display()))?;
    let mut ids: Vec<&u32> = files.keys().collect();
    ids.sort_unstable();
    let mut ranges = Vec::new();
    for id in ids {
        if !cfg.is_own_node(*id) {
            continue;
        }
        let Some((name, _, content)) = files.get(id) else {
            continue;
        };
        let parsed = parse_setup(content, &cfg.numbering.country_code)
            .map_err(|e| format!("stored {name}: {e}"))?;
        ranges.extend(parsed.into_iter().map(|r| (r.start, r.end, *id)));
    }
    RangeMap::build(ranges).map_err(|m| format!("stored SETUP files: {m}"))
}

fn fmt_time(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| t.to_string())
}

/// Moves `src` to `dst`: a rename, or a copy and remove across filesystems.
fn move_file(src: &Path, dst: &Path) -> io::Result<()> {
    match fs::rename(src, dst) {
        Ok(()) => Ok(()),
        Err(rename_err) => {
            if !src.exists() {
                return Err(rename_err);
            }
            fs::copy(src, dst)?;
            fs::remove_file(src)
        }
    }
}

struct Dirs {
    setup: PathBuf,
    outbox: PathBuf,
    refused: PathBuf,
}

/// A file found in the watched directory.
struct Candidate {
    name: String,
    parsed: SetupName,
    path: PathBuf,
}

/// Scans the SETUP directory once (module documentation); `db` is the
/// verification database holding the `capacity` table.
pub fn scan(node: &Node, db: &Path) -> ScanReport {
    scan_at(node, db, SystemTime::now())
}

/// [`scan`] with the current time given: files modified after
/// `now - MIN_AGE` are left for later.
pub fn scan_at(node: &Node, db: &Path, now: SystemTime) -> ScanReport {
    let _one = SCAN_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let mut report = ScanReport::default();
    let cfg = node.state().cfg.clone();
    let dirs = Dirs {
        setup: cfg.setup_dir(node.data_dir()),
        outbox: cfg.outbox_dir(node.data_dir()),
        refused: cfg.refused_dir(node.data_dir()),
    };
    for d in [&dirs.setup, &dirs.outbox, &dirs.refused] {
        if let Err(m) = fs::create_dir_all(d) {
            report
                .errors
                .push(format!("cannot create {}: {m}", d.display()));
        }
    }
    if !report.errors.is_empty() {
        warn_errors(&report);
        return report;
    }
    let candidates = match list(&dirs.setup, now) {
        Ok(c) => c,
        Err(m) => {
            report.errors.push(m);
            warn_errors(&report);
            return report;
        }
    };
    if candidates.is_empty() {
        return report;
    }
    let conn = match open(db) {
        Ok(c) => c,
        Err(m) => {
            report.errors.push(m);
            warn_errors(&report);
            return report;
        }
    };
    for c in candidates {
        take(node, &cfg, &conn, &dirs, c, &mut report);
    }
    warn_errors(&report);
    report
}

fn warn_errors(report: &ScanReport) {
    for e in &report.errors {
        tracing::warn!(error = %e, "SETUP scan");
    }
}

/// The `SETUP_` files of `dir` old enough to take, oldest name time first.
fn list(dir: &Path, now: SystemTime) -> Result<Vec<Candidate>, String> {
    let rd = fs::read_dir(dir).map_err(|m| format!("cannot list {}: {m}", dir.display()))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|m| format!("cannot list {}: {m}", dir.display()))?;
        let Ok(name) = entry.file_name().into_string() else {
            tracing::debug!(dir = %dir.display(), "SETUP scan: ignoring a file whose name is not UTF-8");
            continue;
        };
        let Some(parsed) = parse_setup_name(&name) else {
            tracing::debug!(file = %name, "SETUP scan: ignoring a file not named SETUP_<id>_<YYYY>_<MM>_<DD>_<hh>_<mm>_<ss>");
            continue;
        };
        let path = entry.path();
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let fresh = meta
            .modified()
            .ok()
            .is_some_and(|m| now.duration_since(m).map_or(true, |age| age < MIN_AGE));
        if fresh {
            tracing::debug!(file = %name, "SETUP scan: file modified less than 1 s ago, left for the next scan");
            continue;
        }
        out.push(Candidate { name, parsed, path });
    }
    out.sort_by(|a, b| (a.parsed.time, &a.name).cmp(&(b.parsed.time, &b.name)));
    Ok(out)
}

/// Applies or refuses one file.
fn take(
    node: &Node,
    cfg: &VerifyConfig,
    conn: &Connection,
    dirs: &Dirs,
    c: Candidate,
    report: &mut ScanReport,
) {
    let id = c.parsed.uvr_id;
    if !cfg.is_own_node(id) {
        let why = format!("node id {id} is not one of ours (verify.nodes)");
        refuse(dirs, &c, why, report);
        return;
    }
    let content = match fs::read(&c.path) {
        Ok(b) => b,
        Err(m) => {
            report.errors.push(format!("cannot read {}: {m}", c.name));
            return;
        }
    };
    let last: Option<(String, i64, String)> = match conn
        .query_row(
            "SELECT file_name, file_time, content FROM capacity WHERE uvr_id = ?1",
            params![i64::from(id)],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
    {
        Ok(v) => v,
        Err(m) => {
            report
                .errors
                .push(format!("{}: reading the capacity table: {m}", c.name));
            return;
        }
    };
    if let Some((last_name, last_time, last_content)) = &last {
        if *last_name == c.name && last_content.as_bytes() == content.as_slice() {
            // Applied before but the move to the outbox failed: finish it.
            finish(dirs, &c, report);
            return;
        }
        if c.parsed.time <= *last_time {
            let why = format!(
                "its time {} is not later than that of the applied {last_name} ({})",
                fmt_time(c.parsed.time),
                fmt_time(*last_time)
            );
            refuse(dirs, &c, why, report);
            return;
        }
    }
    let Ok(content) = String::from_utf8(content) else {
        refuse(dirs, &c, "not UTF-8 text".to_string(), report);
        return;
    };
    let ranges = match parse_setup(&content, &cfg.numbering.country_code) {
        Ok(r) => r,
        Err(e) => {
            refuse(dirs, &c, e.to_string(), report);
            return;
        }
    };
    let current = node.state().capacity.clone();
    let mut all: Vec<(u64, u64, u32)> = current.iter().filter(|r| r.2 != id).copied().collect();
    all.extend(ranges.iter().map(|r| (r.start, r.end, id)));
    let new = match RangeMap::build(all) {
        Ok(m) => m,
        Err(m) => {
            refuse(dirs, &c, m, report);
            return;
        }
    };
    if let Err(m) = store(conn, id, &c, &content) {
        report
            .errors
            .push(format!("{}: storing into the capacity table: {m}", c.name));
        return;
    }
    node.update_state(|s| s.capacity = Arc::new(new));
    tracing::info!(file = %c.name, uvr_id = id, ranges = ranges.len(), "SETUP file applied");
    finish(dirs, &c, report);
}

fn store(conn: &Connection, id: u32, c: &Candidate, content: &str) -> rusqlite::Result<()> {
    // `unchecked_transaction` because the connection is shared by reference;
    // nothing else uses it while the transaction is open.
    let tx = conn.unchecked_transaction()?;
    tx.execute(
        "INSERT OR REPLACE INTO capacity (uvr_id, file_name, file_time, content, applied_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            i64::from(id),
            c.name,
            c.parsed.time,
            content,
            chrono::Utc::now().to_rfc3339()
        ],
    )?;
    tx.commit()
}

/// Moves an applied file to the outbox.
fn finish(dirs: &Dirs, c: &Candidate, report: &mut ScanReport) {
    report.applied.push(c.name.clone());
    if let Err(m) = move_file(&c.path, &dirs.outbox.join(&c.name)) {
        report.errors.push(format!(
            "{} applied but not moved to {}: {m}",
            c.name,
            dirs.outbox.display()
        ));
    }
}

/// Moves a refused file to the refused directory with its note.
fn refuse(dirs: &Dirs, c: &Candidate, why: String, report: &mut ScanReport) {
    tracing::warn!(file = %c.name, reason = %why, "SETUP file refused");
    let note = dirs.refused.join(format!("{}.error", c.name));
    if let Err(m) = fs::write(&note, format!("{why}\n")) {
        report
            .errors
            .push(format!("cannot write {}: {m}", note.display()));
    }
    if let Err(m) = move_file(&c.path, &dirs.refused.join(&c.name)) {
        report.errors.push(format!(
            "{} refused but not moved to {}: {m}",
            c.name,
            dirs.refused.display()
        ));
    }
    report.refused.push((c.name.clone(), why));
}

/// Reads every regular file not starting with `.` in `dir` (other operators'
/// ranges, [`parse_ranges`] format), in name order. A missing directory gives
/// no ranges; the error is `<file>: line N: reason`.
pub fn load_ranges_dir(dir: &Path) -> Result<Vec<(u64, u64, u32)>, String> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut paths = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            paths.push(path);
        }
    }
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let text = fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        let ranges = parse_ranges(&text).map_err(|e| format!("{}: {e}", p.display()))?;
        out.extend(ranges);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::config::NodeIdConfig;
    use crate::verify::node::State;
    use crate::verify::records::RecordSink;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn temp_dir() -> PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kordon-verify-setup-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn cfg() -> VerifyConfig {
        VerifyConfig {
            nodes: vec![
                NodeIdConfig {
                    uvr_id: 1,
                    operator_id: 11,
                },
                NodeIdConfig {
                    uvr_id: 2,
                    operator_id: 11,
                },
            ],
            ..VerifyConfig::default()
        }
    }

    struct Fixture {
        dir: PathBuf,
        db: PathBuf,
        node: Node,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = temp_dir();
            let state =
                State::from_config(cfg(), Arc::new(RangeMap::default()), Vec::new()).unwrap();
            Fixture {
                db: dir.join("verify.sqlite"),
                node: Node::new(state, RecordSink::disabled(), &dir),
                dir,
            }
        }

        fn drop_file(&self, name: &str, text: &str) {
            let setup = self.dir.join("verify/setup");
            fs::create_dir_all(&setup).unwrap();
            fs::write(setup.join(name), text).unwrap();
        }

        /// Scans as if two seconds had passed.
        fn scan(&self) -> ScanReport {
            scan_at(
                &self.node,
                &self.db,
                SystemTime::now() + Duration::from_secs(2),
            )
        }

        fn lookup(&self, n: &str) -> Option<u32> {
            self.node.state().capacity.lookup(n)
        }

        fn note(&self, name: &str) -> String {
            fs::read_to_string(self.dir.join(format!("verify/setup-refused/{name}.error"))).unwrap()
        }
    }

    const HEADER: &str = "CODE;RANGE_START;RANGE_END;UVR_TYPE\n";

    fn file(lines: &[&str]) -> String {
        let mut s = HEADER.to_string();
        for l in lines {
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    #[test]
    fn applies_and_moves_to_outbox() {
        let f = Fixture::new();
        f.drop_file(
            "SETUP_1_2024_03_15_10_30_00",
            &file(&["495;1234000;1234999;1"]),
        );
        f.drop_file("README.txt", "not a setup file");
        let r = f.scan();
        assert_eq!(r.applied, vec!["SETUP_1_2024_03_15_10_30_00"]);
        assert!(r.refused.is_empty() && r.errors.is_empty(), "{r:?}");
        assert_eq!(f.lookup("74951234567"), Some(1));
        assert_eq!(f.lookup("74951235000"), None);
        assert!(f
            .dir
            .join("verify/setup-out/SETUP_1_2024_03_15_10_30_00")
            .is_file());
        assert!(!f
            .dir
            .join("verify/setup/SETUP_1_2024_03_15_10_30_00")
            .exists());
        assert!(f.dir.join("verify/setup/README.txt").is_file());
    }

    #[test]
    fn fresh_file_waits() {
        let f = Fixture::new();
        f.drop_file(
            "SETUP_1_2024_03_15_10_30_00",
            &file(&["495;1234000;1234999;1"]),
        );
        let r = scan(&f.node, &f.db);
        assert!(r.applied.is_empty(), "{r:?}");
        assert!(f
            .dir
            .join("verify/setup/SETUP_1_2024_03_15_10_30_00")
            .is_file());
        assert_eq!(f.scan().applied.len(), 1);
    }

    #[test]
    fn later_file_replaces_and_other_ids_stay() {
        let f = Fixture::new();
        f.drop_file(
            "SETUP_1_2024_03_15_10_30_00",
            &file(&["495;1234000;1234999;1"]),
        );
        f.drop_file(
            "SETUP_2_2024_03_15_10_30_00",
            &file(&["812;2000000;2000999;2"]),
        );
        assert_eq!(f.scan().applied.len(), 2);
        f.drop_file(
            "SETUP_1_2024_04_01_00_00_00",
            &file(&["495;5550000;5550099;1"]),
        );
        let r = f.scan();
        assert_eq!(r.applied, vec!["SETUP_1_2024_04_01_00_00_00"]);
        assert_eq!(f.lookup("74951234567"), None);
        assert_eq!(f.lookup("74955550050"), Some(1));
        assert_eq!(f.lookup("78122000500"), Some(2));
    }

    #[test]
    fn same_scan_applies_in_time_order() {
        let f = Fixture::new();
        f.drop_file(
            "SETUP_1_2024_05_01_00_00_00",
            &file(&["495;5550000;5550099;1"]),
        );
        f.drop_file(
            "SETUP_1_2024_04_01_00_00_00",
            &file(&["495;1234000;1234999;1"]),
        );
        let r = f.scan();
        assert_eq!(
            r.applied,
            vec!["SETUP_1_2024_04_01_00_00_00", "SETUP_1_2024_05_01_00_00_00"]
        );
        assert_eq!(f.lookup("74955550050"), Some(1));
        assert_eq!(f.lookup("74951234567"), None);
    }

    #[test]
    fn older_or_equal_time_is_refused() {
        let f = Fixture::new();
        f.drop_file(
            "SETUP_1_2024_03_15_10_30_00",
            &file(&["495;1234000;1234999;1"]),
        );
        f.scan();
        f.drop_file(
            "SETUP_1_2024_03_15_10_29_59",
            &file(&["495;5550000;5550099;1"]),
        );
        let r = f.scan();
        assert_eq!(r.refused.len(), 1, "{r:?}");
        assert!(r.refused[0].1.contains("not later"), "{r:?}");
        assert!(f.note("SETUP_1_2024_03_15_10_29_59").contains("not later"));
        assert!(f
            .dir
            .join("verify/setup-refused/SETUP_1_2024_03_15_10_29_59")
            .is_file());
        assert_eq!(f.lookup("74951234567"), Some(1));
        assert_eq!(f.lookup("74955550050"), None);
    }

    #[test]
    fn same_name_again_is_refused_unless_identical() {
        let f = Fixture::new();
        let first = file(&["495;1234000;1234999;1"]);
        f.drop_file("SETUP_1_2024_03_15_10_30_00", &first);
        f.scan();
        // Identical (a move to the outbox that failed before): just moved.
        f.drop_file("SETUP_1_2024_03_15_10_30_00", &first);
        let r = f.scan();
        assert_eq!(r.applied.len(), 1, "{r:?}");
        // Same name, other content: not later, refused.
        f.drop_file(
            "SETUP_1_2024_03_15_10_30_00",
            &file(&["495;5550000;5550099;1"]),
        );
        let r = f.scan();
        assert_eq!(r.refused.len(), 1, "{r:?}");
        assert!(r.refused[0].1.contains("not later"), "{r:?}");
        assert_eq!(f.lookup("74951234567"), Some(1));
        assert_eq!(f.lookup("74955550050"), None);
    }

    #[test]
    fn other_node_id_is_refused() {
        let f = Fixture::new();
        f.drop_file(
            "SETUP_77_2024_03_15_10_30_00",
            &file(&["495;1234000;1234999;1"]),
        );
        let r = f.scan();
        assert_eq!(r.refused.len(), 1);
        assert!(r.refused[0].1.contains("node id 77"), "{r:?}");
        assert!(f
            .note("SETUP_77_2024_03_15_10_30_00")
            .contains("not one of ours"));
        assert_eq!(f.lookup("74951234567"), None);
    }

    #[test]
    fn broken_line_is_refused_with_its_number_and_changes_nothing() {
        let f = Fixture::new();
        f.drop_file(
            "SETUP_1_2024_03_15_10_30_00",
            &file(&["495;1234000;1234999;1"]),
        );
        f.scan();
        f.drop_file(
            "SETUP_1_2024_04_01_00_00_00",
            &file(&["495;5550000;5550099;1", "495;55x;5550199;1"]),
        );
        let r = f.scan();
        assert_eq!(r.refused.len(), 1, "{r:?}");
        assert!(r.refused[0].1.starts_with("line 3: "), "{r:?}");
        assert!(f
            .note("SETUP_1_2024_04_01_00_00_00")
            .starts_with("line 3: "));
        assert_eq!(f.lookup("74951234567"), Some(1));
        assert_eq!(f.lookup("74955550050"), None);
        // The table still holds the first file.
        let c = load_capacity(&f.db, &cfg()).unwrap();
        assert_eq!(c.lookup("74951234567"), Some(1));
        assert_eq!(c.lookup("74955550050"), None);
    }

    #[test]
    fn overlap_with_another_node_id_is_refused() {
        let f = Fixture::new();
        f.drop_file(
            "SETUP_1_2024_03_15_10_30_00",
            &file(&["495;1234000;1234999;1"]),
        );
        f.scan();
        f.drop_file(
            "SETUP_2_2024_04_01_00_00_00",
            &file(&["495;1234500;1235500;1"]),
        );
        let r = f.scan();
        assert_eq!(r.refused.len(), 1, "{r:?}");
        assert!(r.refused[0].1.contains("overlap"), "{r:?}");
        assert_eq!(f.lookup("74951234567"), Some(1));
        assert_eq!(f.lookup("74951235400"), None);
        assert_eq!(load_capacity(&f.db, &cfg()).unwrap().len(), 1);
    }

    #[test]
    fn reload_from_db_gives_the_same_capacity() {
        let f = Fixture::new();
        f.drop_file(
            "SETUP_1_2024_03_15_10_30_00",
            &file(&["495;1234000;1234999;1", "495;0000000;0000099;2"]),
        );
        f.drop_file(
            "SETUP_2_2024_03_15_10_30_00",
            &file(&["812;2000000;2000999;2"]),
        );
        assert_eq!(f.scan().applied.len(), 2);
        let loaded = load_capacity(&f.db, &cfg()).unwrap();
        assert_eq!(&loaded, &*f.node.state().capacity);
        assert_eq!(loaded.len(), 3);
        // A node id dropped from the configuration no longer counts.
        let mut one = cfg();
        one.nodes.retain(|n| n.uvr_id == 1);
        let loaded = load_capacity(&f.db, &one).unwrap();
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded.lookup("78122000500"), None);
    }

    #[test]
    fn empty_db_loads_empty_capacity() {
        let dir = temp_dir();
        assert!(load_capacity(&dir.join("v.sqlite"), &cfg())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn ranges_dir() {
        let dir = temp_dir();
        assert!(load_ranges_dir(&dir.join("missing")).unwrap().is_empty());
        fs::write(
            dir.join("a.csv"),
            "RANGE_START;RANGE_END;UVR_ID\n78120000000;78129999999;1346\n",
        )
        .unwrap();
        fs::write(dir.join(".hidden"), "garbage").unwrap();
        fs::create_dir(dir.join("sub")).unwrap();
        assert_eq!(load_ranges_dir(&dir).unwrap().len(), 1);
        fs::write(
            dir.join("b.csv"),
            "RANGE_START;RANGE_END;UVR_ID\n# fine\n7812;78129;1\n",
        )
        .unwrap();
        let e = load_ranges_dir(&dir).unwrap_err();
        assert!(
            e.ends_with(
                "b.csv: line 3: \"7812\" and \"78129\" do not have the same number of digits"
            ),
            "{e}"
        );
    }
}
