//! Number ranges: our capacity (SETUP files), other operators' ranges (which
//! node answers for a number) and preset intervals, all as one sorted,
//! non-overlapping [`RangeMap`] over packed numbers.
//!
//! A number is packed into a `u64` ([`pack`]): its digit count in the top
//! byte, its value below. Ranges join numbers of one length, so a range is a
//! contiguous interval of packed values and numbers of different lengths
//! never fall into one another's ranges.
//!
//! File formats read here:
//! - SETUP files (`SETUP_<uvr id>_<YYYY>_<MM>_<DD>_<hh>_<mm>_<ss>`, UTC): a
//!   header line `CODE;RANGE_START;RANGE_END;UVR_TYPE`, then one line per
//!   range; the E.164 number is country code + CODE + RANGE digits. UVR_TYPE
//!   is 1 (main node) or 2 (backup); both count as capacity.
//! - Range files of other operators (our format, any file name not starting
//!   with `.`): a header line `RANGE_START;RANGE_END;UVR_ID`, then lines of
//!   two full E.164 numbers of equal length and the node id answering for
//!   them. `#` starts a comment line in both.
//!
//! Invariants: parsing never panics; a file is either read whole or refused
//! with the number of its first bad line.

use std::fmt;

/// Most digits of a number (E.164).
pub const MAX_DIGITS: usize = 15;

/// Packs 1 to 15 ASCII digits (a leading `+` is dropped) into a `u64`; `None`
/// for anything else.
pub fn pack(digits: &str) -> Option<u64> {
    let d = digits.strip_prefix('+').unwrap_or(digits).as_bytes();
    if d.is_empty() || d.len() > MAX_DIGITS {
        return None;
    }
    let mut v: u64 = 0;
    for &c in d {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u64::from(c - b'0');
    }
    Some(((d.len() as u64) << 56) | v)
}

/// The digits of a packed number.
pub fn unpack(p: u64) -> String {
    let len = (p >> 56) as usize;
    let v = p & ((1u64 << 56) - 1);
    format!("{v:0len$}")
}

/// Checks and packs a range `from..=to` given as digit strings.
pub fn range_of(from: &str, to: &str) -> Result<(u64, u64), String> {
    let a = pack(from).ok_or_else(|| format!("{from:?} is not 1 to 15 digits"))?;
    let b = pack(to).ok_or_else(|| format!("{to:?} is not 1 to 15 digits"))?;
    if a >> 56 != b >> 56 {
        return Err(format!(
            "{from:?} and {to:?} do not have the same number of digits"
        ));
    }
    if a > b {
        return Err(format!("{from:?} is after {to:?}"));
    }
    Ok((a, b))
}

/// Sorted, non-overlapping ranges of packed numbers, each with a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeMap<V> {
    ranges: Vec<(u64, u64, V)>,
}

impl<V> Default for RangeMap<V> {
    fn default() -> Self {
        RangeMap { ranges: Vec::new() }
    }
}

impl<V: Copy> RangeMap<V> {
    /// Sorts the ranges; overlapping ranges are refused, naming both.
    pub fn build(mut ranges: Vec<(u64, u64, V)>) -> Result<RangeMap<V>, String> {
        ranges.sort_unstable_by_key(|r| r.0);
        for w in ranges.windows(2) {
            if let [a, b] = w {
                if b.0 <= a.1 {
                    return Err(format!(
                        "ranges {}-{} and {}-{} overlap",
                        unpack(a.0),
                        unpack(a.1),
                        unpack(b.0),
                        unpack(b.1)
                    ));
                }
            }
        }
        Ok(RangeMap { ranges })
    }

    /// The value of the range holding `n` (packed).
    pub fn get(&self, n: u64) -> Option<V> {
        let i = self.ranges.partition_point(|r| r.0 <= n);
        let r = self.ranges.get(i.checked_sub(1)?)?;
        (n <= r.1).then_some(r.2)
    }

    /// The value of the range holding the number `digits`.
    pub fn lookup(&self, digits: &str) -> Option<V> {
        self.get(pack(digits)?)
    }

    /// How many ranges.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether there is no range.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The ranges, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &(u64, u64, V)> {
        self.ranges.iter()
    }
}

/// A bad line of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number (0 when the file as a whole is at fault).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.message)
        } else {
            write!(f, "line {}: {}", self.line, self.message)
        }
    }
}

fn err(line: usize, message: impl Into<String>) -> LineError {
    LineError {
        line,
        message: message.into(),
    }
}

/// What a SETUP file's name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetupName {
    /// The node id the capacity is for.
    pub uvr_id: u32,
    /// The time in the name, seconds since the Unix epoch (UTC).
    pub time: i64,
}

/// Reads `SETUP_<uvr id>_<YYYY>_<MM>_<DD>_<hh>_<mm>_<ss>`; `None` when the name
/// is not of that form or the date does not exist.
pub fn parse_setup_name(name: &str) -> Option<SetupName> {
    let rest = name.strip_prefix("SETUP_")?;
    let parts: Vec<&str> = rest.split('_').collect();
    let [id, y, mo, d, h, mi, s] = parts.as_slice() else {
        return None;
    };
    let num = |t: &str, len: usize| -> Option<u32> {
        (t.len() == len && t.bytes().all(|c| c.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    if id.is_empty() || id.len() > 9 || !id.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let uvr_id: u32 = id.parse().ok()?;
    let date = chrono::NaiveDate::from_ymd_opt(num(y, 4)? as i32, num(mo, 2)?, num(d, 2)?)?;
    let time = date.and_hms_opt(num(h, 2)?, num(mi, 2)?, num(s, 2)?)?;
    Some(SetupName {
        uvr_id,
        time: time.and_utc().timestamp(),
    })
}

/// One range of a SETUP file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetupRange {
    /// First number, packed.
    pub start: u64,
    /// Last number, packed.
    pub end: u64,
    /// 1 main node, 2 backup.
    pub uvr_type: u8,
}

fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

fn digits_field(line: usize, name: &str, v: &str) -> Result<(), LineError> {
    if v.is_empty() || !v.bytes().all(|c| c.is_ascii_digit()) {
        return Err(err(line, format!("{name} {v:?} is not digits")));
    }
    Ok(())
}

/// Reads a SETUP file's text; `country_code` prefixes every number.
pub fn parse_setup(text: &str, country_code: &str) -> Result<Vec<SetupRange>, LineError> {
    let mut it = lines(text);
    let Some((n, header)) = it.next() else {
        return Err(err(
            0,
            "empty file: the header line CODE;RANGE_START;RANGE_END;UVR_TYPE is missing",
        ));
    };
    if !header
        .split(';')
        .map(str::trim)
        .map(str::to_ascii_uppercase)
        .eq(["CODE", "RANGE_START", "RANGE_END", "UVR_TYPE"])
    {
        return Err(err(
            n,
            format!("header {header:?} is not CODE;RANGE_START;RANGE_END;UVR_TYPE"),
        ));
    }
    let mut out = Vec::new();
    for (n, l) in it {
        let f: Vec<&str> = l.split(';').map(str::trim).collect();
        let [code, start, end, typ] = f.as_slice() else {
            return Err(err(n, format!("{} fields, 4 expected", f.len())));
        };
        digits_field(n, "CODE", code)?;
        digits_field(n, "RANGE_START", start)?;
        digits_field(n, "RANGE_END", end)?;
        let uvr_type = match *typ {
            "1" => 1,
            "2" => 2,
            other => return Err(err(n, format!("UVR_TYPE {other:?} is neither 1 nor 2"))),
        };
        if start.len() != end.len() {
            return Err(err(
                n,
                "RANGE_START and RANGE_END do not have the same number of digits",
            ));
        }
        let a = format!("{country_code}{code}{start}");
        let b = format!("{country_code}{code}{end}");
        let (start, end) = range_of(&a, &b).map_err(|m| err(n, m))?;
        out.push(SetupRange {
            start,
            end,
            uvr_type,
        });
    }
    Ok(out)
}

/// Reads another operators' range file (format in the module documentation).
pub fn parse_ranges(text: &str) -> Result<Vec<(u64, u64, u32)>, LineError> {
    let mut it = lines(text);
    let Some((n, header)) = it.next() else {
        return Err(err(
            0,
            "empty file: the header line RANGE_START;RANGE_END;UVR_ID is missing",
        ));
    };
    if !header
        .split(';')
        .map(str::trim)
        .map(str::to_ascii_uppercase)
        .eq(["RANGE_START", "RANGE_END", "UVR_ID"])
    {
        return Err(err(
            n,
            format!("header {header:?} is not RANGE_START;RANGE_END;UVR_ID"),
        ));
    }
    let mut out = Vec::new();
    for (n, l) in it {
        let f: Vec<&str> = l.split(';').map(str::trim).collect();
        let [start, end, id] = f.as_slice() else {
            return Err(err(n, format!("{} fields, 3 expected", f.len())));
        };
        let (a, b) = range_of(start, end).map_err(|m| err(n, m))?;
        let id: u32 = id
            .parse()
            .map_err(|_| err(n, format!("UVR_ID {id:?} is not a node id")))?;
        out.push((a, b, id));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trips_and_keeps_lengths_apart() {
        for s in ["7", "74951234567", "000123", "999999999999999"] {
            assert_eq!(unpack(pack(s).unwrap()), s);
        }
        assert_eq!(pack("+7495"), pack("7495"));
        assert!(pack("").is_none());
        assert!(pack("1234567890123456").is_none());
        assert!(pack("74a").is_none());
        assert_ne!(pack("0123"), pack("123"));
    }

    #[test]
    fn range_map_finds_and_refuses_overlaps() {
        let r = |a: &str, b: &str, v: u32| {
            let (a, b) = range_of(a, b).unwrap();
            (a, b, v)
        };
        let m = RangeMap::build(vec![
            r("74951000000", "74951999999", 1),
            r("74950000000", "74950000009", 2),
            r("7812", "7812", 3),
        ])
        .unwrap();
        assert_eq!(m.lookup("74951234567"), Some(1));
        assert_eq!(m.lookup("74950000009"), Some(2));
        assert_eq!(m.lookup("74950000010"), None);
        assert_eq!(m.lookup("7812"), Some(3));
        assert_eq!(m.lookup("78120"), None);
        assert_eq!(m.lookup("7495123456"), None);
        let e = RangeMap::build(vec![
            r("74951000000", "74951999999", 1),
            r("74951999999", "74952000000", 2),
        ])
        .unwrap_err();
        assert!(e.contains("overlap"), "{e}");
    }

    #[test]
    fn setup_names() {
        let n = parse_setup_name("SETUP_1234_2024_03_15_10_30_00").unwrap();
        assert_eq!(n.uvr_id, 1234);
        assert_eq!(n.time, 1_710_498_600);
        for bad in [
            "SETUP_1234_2024_02_30_10_30_00",
            "SETUP_1234_2024_03_15_10_30",
            "SETUP__2024_03_15_10_30_00",
            "SETUP_12a_2024_03_15_10_30_00",
            "setup_1_2024_03_15_10_30_00",
            "SETUP_1_2024_3_15_10_30_00",
            "SETUP_1_2024_03_15_24_00_00",
        ] {
            assert!(parse_setup_name(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn setup_file_reads_whole_or_names_the_line() {
        let ok = "CODE;RANGE_START;RANGE_END;UVR_TYPE\r\n812;2000000;2000999;1\r\n\r\n495;0000000;0000099;2\r\n";
        let v = parse_setup(ok, "7").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(unpack(v[0].start), "78122000000");
        assert_eq!(unpack(v[1].end), "74950000099");
        assert_eq!(v[1].uvr_type, 2);
        let bad = "CODE;RANGE_START;RANGE_END;UVR_TYPE\n812;2000000;2000999;1\n812;2001000;20x;1\n";
        let e = parse_setup(bad, "7").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("RANGE_END"), "{e}");
        assert_eq!(parse_setup("812;1;2;1\n", "7").unwrap_err().line, 1);
        assert_eq!(
            parse_setup("CODE;RANGE_START;RANGE_END;UVR_TYPE\n1;5;4;1\n", "7")
                .unwrap_err()
                .line,
            2
        );
        assert_eq!(
            parse_setup("CODE;RANGE_START;RANGE_END;UVR_TYPE\n1;5;6;3\n", "7")
                .unwrap_err()
                .line,
            2
        );
        assert_eq!(parse_setup("", "7").unwrap_err().line, 0);
        assert!(parse_setup("CODE;RANGE_START;RANGE_END;UVR_TYPE\n", "7")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn range_files() {
        let v = parse_ranges(
            "RANGE_START;RANGE_END;UVR_ID\n# T's block\n78120000000;78129999999;1346\n",
        )
        .unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].2, 1346);
        assert_eq!(
            parse_ranges("RANGE_START;RANGE_END;UVR_ID\n7812;78129;1\n")
                .unwrap_err()
                .line,
            2
        );
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,200}") {
            let _ = parse_setup(&s, "7");
            let _ = parse_ranges(&s);
            let _ = parse_setup_name(&s);
            let _ = pack(&s);
        }
    }
}
