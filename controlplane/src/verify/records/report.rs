//! Reading records back: a plain-text summary of an interval, and the time
//! parser the CLI uses for its bounds.
//!
//! What is here: [`report`] counts the verifications with `from <= time < to`
//! by code, by direction and as incidents, reading at most `limit_sql` rows
//! (the earliest ones) and saying so when more matched; [`parse_time`].
//!
//! What is not: listing individual rows, writing.
//!
//! Invariants: the database is opened read-only, so a report never creates
//! a file and runs beside the writer. Values read back (direction text, out
//! of range codes) came from this build, but a damaged file is shown, never
//! trusted: control characters are escaped and unknown codes named
//! `unknown`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use super::code;
use super::store::{fmt_time, open_reader};

/// Writes to `out` a summary of the verifications in `db` with
/// `from <= time < to`: one line per verification code present (code, name,
/// count), the totals per direction, the total, the number of incidents and,
/// when more than `limit_sql` rows matched (0 = no bound), a line saying the
/// report covers only the first `limit_sql` of them.
///
/// Errors name the file or the problem: a missing or foreign database, an
/// interval whose `from` is not before `to`, a failed write to `out`.
pub fn report(
    db: &Path,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit_sql: u64,
    out: &mut dyn Write,
) -> Result<(), String> {
    if from >= to {
        return Err(format!(
            "report interval is empty: from {} is not before to {}",
            fmt_time(&from),
            fmt_time(&to)
        ));
    }
    let conn = open_reader(db)?;
    let (from_s, to_s) = (fmt_time(&from), fmt_time(&to));
    // One row past the bound tells whether the bound cut anything off.
    // SQLite reads a negative LIMIT as no limit.
    let fetch: i64 = match limit_sql {
        0 => -1,
        n => i64::try_from(n).map_or(-1, |n| n.saturating_add(1)),
    };
    let read_err =
        |e: rusqlite::Error| format!("verification records database {}: {e}", db.display());
    let mut stmt = conn
        .prepare(
            "SELECT code, direction, incident FROM verifications
              WHERE time >= ?1 AND time < ?2 ORDER BY time, id LIMIT ?3",
        )
        .map_err(read_err)?;
    let mut rows = stmt
        .query(rusqlite::params![from_s, to_s, fetch])
        .map_err(read_err)?;
    let mut by_code: BTreeMap<i64, u64> = BTreeMap::new();
    let mut by_direction: BTreeMap<String, u64> = BTreeMap::new();
    let (mut total, mut incidents) = (0u64, 0u64);
    let mut truncated = false;
    while let Some(row) = rows.next().map_err(read_err)? {
        if limit_sql != 0 && total == limit_sql {
            truncated = true;
            break;
        }
        let c: i64 = row.get(0).map_err(read_err)?;
        let d: String = row.get(1).map_err(read_err)?;
        let i: i64 = row.get(2).map_err(read_err)?;
        *by_code.entry(c).or_default() += 1;
        *by_direction.entry(d).or_default() += 1;
        incidents += u64::from(i != 0);
        total += 1;
    }
    write_summary(
        out,
        &Summary {
            from: &from_s,
            to: &to_s,
            by_code: &by_code,
            by_direction: &by_direction,
            total,
            incidents,
            truncated_at: truncated.then_some(limit_sql),
        },
    )
    .map_err(|e| format!("writing the report: {e}"))
}

/// What [`report`] found.
struct Summary<'a> {
    from: &'a str,
    to: &'a str,
    by_code: &'a BTreeMap<i64, u64>,
    by_direction: &'a BTreeMap<String, u64>,
    total: u64,
    incidents: u64,
    /// The bound, when it cut rows off.
    truncated_at: Option<u64>,
}

fn code_name(c: i64) -> &'static str {
    u8::try_from(c).map_or("unknown", code::name)
}

/// Control characters escaped, so a damaged value cannot move the cursor.
fn printable(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            o.extend(c.escape_default());
        } else {
            o.push(c);
        }
    }
    o
}

fn write_summary(out: &mut dyn Write, s: &Summary<'_>) -> std::io::Result<()> {
    writeln!(out, "Verifications from {} to {}", s.from, s.to)?;
    writeln!(out)?;
    let name_w = s
        .by_code
        .keys()
        .map(|&c| code_name(c).len())
        .chain(std::iter::once("name".len()))
        .max()
        .unwrap_or(4);
    writeln!(out, "{:>4}  {:<name_w$}  {:>10}", "code", "name", "count")?;
    if s.by_code.is_empty() {
        writeln!(out, "      (no verifications in this interval)")?;
    }
    for (c, n) in s.by_code {
        writeln!(out, "{:>4}  {:<name_w$}  {:>10}", c, code_name(*c), n)?;
    }
    writeln!(out)?;
    let dirs: Vec<(String, u64)> = s
        .by_direction
        .iter()
        .map(|(d, n)| (printable(d), *n))
        .collect();
    let label_w = dirs
        .iter()
        .map(|(d, _)| d.chars().count())
        .chain(["direction".len(), "incidents".len()])
        .max()
        .unwrap_or(9);
    writeln!(out, "{:<label_w$}  {:>10}", "direction", "count")?;
    for (d, n) in &dirs {
        writeln!(out, "{:<label_w$}  {:>10}", d, n)?;
    }
    writeln!(out, "{:<label_w$}  {:>10}", "total", s.total)?;
    writeln!(out, "{:<label_w$}  {:>10}", "incidents", s.incidents)?;
    if let Some(n) = s.truncated_at {
        writeln!(out)?;
        writeln!(
            out,
            "NOTE: more rows match; this report covers only the first {n} rows \
             (limit_sql = {n})."
        )?;
    }
    Ok(())
}

/// Parses a report bound: RFC 3339 (`2024-05-01T10:00:00Z`, any offset),
/// `YYYY-MM-DD` (midnight UTC) or `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    let t = s.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S") {
        return Ok(d.and_utc());
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    Err(format!(
        "{s:?} is not a time: use RFC 3339 (2024-05-01T10:00:00Z), YYYY-MM-DD or \
         YYYY-MM-DD HH:MM:SS (UTC)"
    ))
}
