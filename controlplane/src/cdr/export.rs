//! Reading CDRs back out: CSV export and a human-readable tail.
//!
//! Everything here opens its own read-only connection, so it runs beside a
//! live writer (WAL readers see the last commit and never block it) and never
//! creates a database that is not there.
//!
//! CSV follows RFC 4180: CRLF line ends, a header row, and a field quoted when
//! it holds a comma, a double quote, CR or LF, with quotes doubled. An absent
//! value is an empty field. The egress attempts are flattened into one
//! `attempts` column, `trunk:status` pairs joined by `;`.
//!
//! Tail lines are for a terminal: control characters in stored values (which
//! came off the network) are escaped so they cannot move the cursor or forge
//! extra lines.

use std::borrow::Cow;
use std::io::{BufWriter, Write};
use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, Row};

use super::record::fmt_time;
use super::store::open_reader;
use super::CdrError;

/// Columns of the export, in order: the [`super::CallRecord`] fields, the
/// derived durations, the media counters and the flattened attempts.
const CSV_SELECT: &str = "SELECT call_id, correlation_id, user, device, a_number, b_number,
    a_e164, b_e164, original_called, ingress_trunk, egress_trunk,
    start_time AS start, answer_time AS answer, end_time AS \"end\",
    duration_ms, billable_ms, disposition, sip_status, reason,
    a_packets_in, a_bytes_in, a_packets_out, b_packets_in, b_bytes_in, b_packets_out, dropped,
    (SELECT group_concat(trunk || ':' || sip_status, ';' ORDER BY ordinal)
       FROM attempts WHERE call_rowid = calls.id) AS attempts
  FROM calls";

/// What a tail line shows.
const LINE_SELECT: &str = "SELECT id, start_time, call_id, a_number, b_number, disposition,
    sip_status, duration_ms, egress_trunk FROM calls";

/// Writes every call (or those that started at or after `since`) as CSV to
/// `out`, oldest first, and returns how many data rows were written.
pub fn export_csv(
    db: &Path,
    out: &mut dyn Write,
    since: Option<DateTime<Utc>>,
) -> Result<usize, CdrError> {
    let conn = open_reader(db)?;
    let mut stmt = match since {
        Some(_) => conn.prepare(&format!("{CSV_SELECT} WHERE start_time >= ?1 ORDER BY id"))?,
        None => conn.prepare(&format!("{CSV_SELECT} ORDER BY id"))?,
    };
    let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
    let mut out = BufWriter::new(out);
    write_csv_row(&mut out, names.iter().map(|n| Cow::Borrowed(n.as_str())))?;

    let since = since.as_ref().map(fmt_time);
    let mut rows = match &since {
        Some(s) => stmt.query([s])?,
        None => stmt.query([])?,
    };
    let mut n = 0;
    while let Some(row) = rows.next()? {
        let fields = (0..names.len()).map(|i| match row.get_ref(i) {
            Ok(v) => value_text(v),
            Err(_) => Cow::Borrowed(""),
        });
        write_csv_row(&mut out, fields)?;
        n += 1;
    }
    out.flush()?;
    Ok(n)
}

/// Writes the last `n` calls, oldest first, one line each, and returns the
/// highest rowid in the database (0 if empty) to pass to [`follow`].
pub fn tail(db: &Path, n: usize, out: &mut dyn Write) -> Result<i64, CdrError> {
    let conn = open_reader(db)?;
    // Take the high-water mark first and read below it, so a commit landing
    // between the two queries is neither shown twice nor skipped by `follow`.
    let last: i64 = conn.query_row("SELECT coalesce(max(id), 0) FROM calls", [], |r| r.get(0))?;
    let limit = i64::try_from(n).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare(&format!(
        "SELECT * FROM ({LINE_SELECT} WHERE id <= ?1 ORDER BY id DESC LIMIT ?2) ORDER BY id"
    ))?;
    let mut out = BufWriter::new(out);
    let mut rows = stmt.query(rusqlite::params![last, limit])?;
    while let Some(row) = rows.next()? {
        write_line(&mut out, row)?;
    }
    out.flush()?;
    Ok(last)
}

/// Writes a line for every call with a rowid above `after_rowid`, oldest
/// first, and returns the highest rowid written (or `after_rowid` if none).
/// The caller loops, sleeping between calls.
pub fn follow(db: &Path, after_rowid: i64, out: &mut dyn Write) -> Result<i64, CdrError> {
    let conn = open_reader(db)?;
    lines_after(&conn, after_rowid, out)
}

fn lines_after(conn: &Connection, after_rowid: i64, out: &mut dyn Write) -> Result<i64, CdrError> {
    let mut stmt = conn.prepare(&format!("{LINE_SELECT} WHERE id > ?1 ORDER BY id"))?;
    let mut out = BufWriter::new(out);
    let mut last = after_rowid;
    let mut rows = stmt.query([after_rowid])?;
    while let Some(row) = rows.next()? {
        last = write_line(&mut out, row)?;
    }
    out.flush()?;
    Ok(last)
}

/// One line from a [`LINE_SELECT`] row:
/// `<start>  <call_id>  <a> → <b>  <disposition> <status>  <secs>s  via <trunk>`.
/// Returns the row's id.
fn write_line(out: &mut dyn Write, row: &Row<'_>) -> Result<i64, CdrError> {
    let id: i64 = row.get(0)?;
    let text = |i: usize| -> Cow<'_, str> {
        match row.get_ref(i) {
            Ok(ValueRef::Null) | Err(_) => Cow::Borrowed("-"),
            Ok(v) => value_text(v),
        }
    };
    let ms: i64 = row.get::<_, Option<i64>>(7)?.unwrap_or(0).max(0);
    writeln!(
        out,
        "{}  {}  {} → {}  {} {}  {}.{:03}s  via {}",
        printable(&text(1)),
        printable(&text(2)),
        printable(&text(3)),
        printable(&text(4)),
        printable(&text(5)),
        printable(&text(6)),
        ms / 1000,
        ms % 1000,
        printable(&text(8)),
    )?;
    Ok(id)
}

/// A stored value as text: NULL is empty, numbers in decimal, text as is
/// (invalid UTF-8 replaced), blobs in hex.
fn value_text(v: ValueRef<'_>) -> Cow<'_, str> {
    match v {
        ValueRef::Null => Cow::Borrowed(""),
        ValueRef::Integer(i) => Cow::Owned(i.to_string()),
        ValueRef::Real(f) => Cow::Owned(f.to_string()),
        ValueRef::Text(t) => String::from_utf8_lossy(t),
        ValueRef::Blob(b) => Cow::Owned(b.iter().map(|x| format!("{x:02x}")).collect()),
    }
}

/// Escapes control characters for a terminal line.
fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

fn write_csv_row<'a>(
    out: &mut dyn Write,
    fields: impl Iterator<Item = Cow<'a, str>>,
) -> std::io::Result<()> {
    for (i, f) in fields.enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        write_csv_field(out, &f)?;
    }
    out.write_all(b"\r\n")
}

/// RFC 4180 section 2: quote a field holding a comma, quote, CR or LF, and
/// double the quotes inside.
fn write_csv_field(out: &mut dyn Write, f: &str) -> std::io::Result<()> {
    if !f.contains([',', '"', '\r', '\n']) {
        return out.write_all(f.as_bytes());
    }
    out.write_all(b"\"")?;
    for (i, part) in f.split('"').enumerate() {
        if i > 0 {
            out.write_all(b"\"\"")?;
        }
        out.write_all(part.as_bytes())?;
    }
    out.write_all(b"\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdr::record::Disposition;
    use crate::cdr::store::tests::{at, sample, TempDir};
    use crate::cdr::store::Store;

    /// Splits RFC 4180 text back into rows of fields, to check the quoting
    /// round-trips rather than eyeballing it.
    fn parse_csv(s: &str) -> Vec<Vec<String>> {
        let mut rows = Vec::new();
        let mut row = Vec::new();
        let mut field = String::new();
        let mut quoted = false;
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match (quoted, c) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                (true, '"') => quoted = false,
                (true, c) => field.push(c),
                (false, '"') => quoted = true,
                (false, ',') => row.push(std::mem::take(&mut field)),
                (false, '\r') if chars.peek() == Some(&'\n') => {
                    chars.next();
                    row.push(std::mem::take(&mut field));
                    rows.push(std::mem::take(&mut row));
                }
                (false, c) => field.push(c),
            }
        }
        rows
    }

    fn col(rows: &[Vec<String>], name: &str) -> usize {
        rows[0]
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name}"))
    }

    #[test]
    fn csv_round_trips_records_attempts_and_quoting() {
        let dir = TempDir::new("csv");
        let mut store = Store::open(&dir.db()).expect("open");
        let mut tricky = sample(2);
        tricky.reason = "Busy, \"really\" busy\r\nsecond line".into();
        tricky.disposition = Disposition::Busy;
        tricky.answer = None;
        tricky.user = None;
        let mut none = sample(3);
        none.attempts.clear();
        store
            .insert_batch(&[sample(1), tricky.clone(), none])
            .expect("insert");

        let mut buf = Vec::new();
        let n = export_csv(&dir.db(), &mut buf, None).expect("export");
        assert_eq!(n, 3);
        let text = String::from_utf8(buf).expect("utf-8");
        assert!(text.contains("\"Busy, \"\"really\"\" busy\r\nsecond line\""));
        let rows = parse_csv(&text);
        assert_eq!(rows.len(), 4);
        assert!(rows.iter().all(|r| r.len() == rows[0].len()));
        assert_eq!(rows[0].len(), 27);
        assert_eq!(rows[0][0], "call_id");
        assert_eq!(rows[0][13], "end");

        let r = &rows[2];
        assert_eq!(r[col(&rows, "call_id")], "call-2");
        assert_eq!(r[col(&rows, "reason")], tricky.reason);
        assert_eq!(r[col(&rows, "disposition")], "busy");
        assert_eq!(r[col(&rows, "user")], "");
        assert_eq!(r[col(&rows, "answer")], "");
        assert_eq!(r[col(&rows, "start")], "2024-05-01T10:00:02.000Z");
        assert_eq!(r[col(&rows, "billable_ms")], "0");
        assert_eq!(r[col(&rows, "duration_ms")], "62500");
        assert_eq!(r[col(&rows, "attempts")], "trunkA:503;trunkB:200");
        assert_eq!(r[col(&rows, "dropped")], "10");
        assert_eq!(rows[1][col(&rows, "billable_ms")], "60500");
        assert_eq!(rows[3][col(&rows, "attempts")], "");
    }

    #[test]
    fn csv_since_filters_on_start() {
        let dir = TempDir::new("since");
        let mut store = Store::open(&dir.db()).expect("open");
        store
            .insert_batch(&[sample(1), sample(2), sample(3)])
            .expect("insert");
        let mut buf = Vec::new();
        // sample(n) starts n seconds after 10:00:00.
        let since = at(1_714_557_600_000 + 2_000);
        assert_eq!(
            export_csv(&dir.db(), &mut buf, Some(since)).expect("export"),
            2
        );
        let rows = parse_csv(&String::from_utf8(buf).expect("utf-8"));
        assert_eq!(rows[1][0], "call-2");
        assert_eq!(rows[2][0], "call-3");
    }

    #[test]
    fn tail_then_follow_print_new_calls_once() {
        let dir = TempDir::new("tail");
        let mut store = Store::open(&dir.db()).expect("open");
        let mut first = sample(1);
        first.b_number = "+49\n40\u{1b}[2J".into();
        store
            .insert_batch(&[first, sample(2), sample(3)])
            .expect("insert");

        let mut buf = Vec::new();
        let last = tail(&dir.db(), 2, &mut buf).expect("tail");
        assert_eq!(last, 3);
        let text = String::from_utf8(buf).expect("utf-8");
        assert_eq!(
            text,
            "2024-05-01T10:00:02.000Z  call-2  0301234567 → +494012345  answered 200  62.500s  via trunkB\n\
             2024-05-01T10:00:03.000Z  call-3  0301234567 → +494012345  answered 200  62.500s  via trunkB\n"
        );

        let mut buf = Vec::new();
        assert_eq!(follow(&dir.db(), last, &mut buf).expect("follow"), last);
        assert!(buf.is_empty(), "nothing new yet");

        let mut late = sample(4);
        late.egress_trunk = None;
        late.disposition = Disposition::NoAnswer;
        late.sip_status = 480;
        late.answer = None;
        store.insert_batch(&[late]).expect("insert");
        let mut buf = Vec::new();
        assert_eq!(follow(&dir.db(), last, &mut buf).expect("follow"), 4);
        let text = String::from_utf8(buf).expect("utf-8");
        assert_eq!(
            text,
            "2024-05-01T10:00:04.000Z  call-4  0301234567 → +494012345  no_answer 480  62.500s  via -\n"
        );

        // The hostile number is escaped onto one line.
        let mut buf = Vec::new();
        tail(&dir.db(), 10, &mut buf).expect("tail");
        let text = String::from_utf8(buf).expect("utf-8");
        assert_eq!(text.lines().count(), 4);
        assert!(text.contains("+49\\n40\\u{1b}[2J"), "{text}");
    }

    #[test]
    fn tail_of_an_empty_database() {
        let dir = TempDir::new("empty");
        drop(Store::open(&dir.db()).expect("open"));
        let mut buf = Vec::new();
        assert_eq!(tail(&dir.db(), 10, &mut buf).expect("tail"), 0);
        assert!(buf.is_empty());
        let mut buf = Vec::new();
        assert_eq!(export_csv(&dir.db(), &mut buf, None).expect("export"), 0);
        assert_eq!(parse_csv(&String::from_utf8(buf).expect("utf-8")).len(), 1);
    }
}
