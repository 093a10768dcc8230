//! Import of a classic `uvrd.conf` into [`VerifyConfig`], and rendering of a
//! `[verify]` section as TOML.
//!
//! What it does: reads the INI-like file (`[section]`, `key=value`, `;`
//! starting a comment anywhere outside quotes, `"quoted"` values, lines that
//! are only comments), maps every key that has a meaning here onto the
//! `[verify]` settings, and returns one note per key that does not apply,
//! `ignored: [section] key (reason)`, plus notes on values kept that will need
//! attention.
//!
//! What it does not do: validate the result (call [`VerifyConfig::validate`];
//! `encrypted = yes` is kept and refused there), read files, or carry over
//! the UNIT PBX interfaces (`[ats_N]`, `[ext_N]`), the SFTP exchange, e-mail
//! and logging settings, which have no counterpart.
//!
//! Invariants: never panics on input; a line that is neither a section, a
//! `key=value` nor a comment, an unterminated quote, or a value of the wrong
//! type is an error naming the line number. Keys keep the last value given.
//! Settings absent from the file keep Kordon's defaults.

use std::collections::BTreeMap;

use serde::Serialize;

use super::config::{LastNumbers, NodeIdConfig, PresetInterval, VerifyConfig};

/// One `key=value` line.
#[derive(Debug)]
struct Entry {
    line: usize,
    key: String,
    value: String,
}

/// Sections in file order of first appearance, each with its entries.
type Sections = Vec<(String, Vec<Entry>)>;

fn fail(line: usize, m: impl std::fmt::Display) -> String {
    format!("line {line}: {m}")
}

/// Removes a `;` comment that is outside quotes; an unterminated quote is an
/// error.
fn strip_comment(line: usize, l: &str) -> Result<&str, String> {
    let mut quoted = false;
    for (i, c) in l.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => return Ok(&l[..i]),
            _ => {}
        }
    }
    if quoted {
        return Err(fail(line, "a quoted value is not closed"));
    }
    Ok(l)
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'.')
}

fn unquote(line: usize, v: &str) -> Result<String, String> {
    let Some(inner) = v.strip_prefix('"') else {
        if v.contains('"') {
            return Err(fail(line, format!("stray quote in value {v:?}")));
        }
        return Ok(v.to_string());
    };
    let Some(inner) = inner.strip_suffix('"') else {
        return Err(fail(
            line,
            format!("text after the closing quote in value {v:?}"),
        ));
    };
    if inner.contains('"') {
        return Err(fail(
            line,
            format!("text after the closing quote in value {v:?}"),
        ));
    }
    Ok(inner.to_string())
}

fn parse(text: &str) -> Result<Sections, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out: Sections = Vec::new();
    let mut current: Option<usize> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let trimmed = raw.trim();
        if trimmed.starts_with('#') {
            continue;
        }
        let l = strip_comment(n, trimmed)?.trim();
        if l.is_empty() {
            continue;
        }
        if let Some(rest) = l.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(fail(n, format!("{l:?} is not a [section] line")));
            };
            let name = name.trim().to_ascii_lowercase();
            if !is_name(&name) {
                return Err(fail(n, format!("{name:?} is not a section name")));
            }
            current = Some(match out.iter().position(|(s, _)| *s == name) {
                Some(p) => p,
                None => {
                    out.push((name, Vec::new()));
                    out.len() - 1
                }
            });
            continue;
        }
        let Some((k, v)) = l.split_once('=') else {
            return Err(fail(
                n,
                format!("{l:?} is neither [section], key=value nor a ; comment"),
            ));
        };
        let key = k.trim().to_ascii_lowercase();
        if !is_name(&key) {
            return Err(fail(n, format!("{:?} is not a key name", k.trim())));
        }
        let value = unquote(n, v.trim())?;
        let Some(sec) = current.and_then(|c| out.get_mut(c)) else {
            return Err(fail(n, format!("key {key} comes before any [section]")));
        };
        sec.1.push(Entry {
            line: n,
            key,
            value,
        });
    }
    Ok(out)
}

fn number<T: std::str::FromStr>(sec: &str, e: &Entry) -> Result<T, String> {
    e.value.trim().parse().map_err(|_| {
        fail(
            e.line,
            format!("[{sec}] {}: {:?} is not a number in range", e.key, e.value),
        )
    })
}

fn boolean(sec: &str, e: &Entry) -> Result<bool, String> {
    match e.value.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" | "1" => Ok(true),
        "no" | "false" | "off" | "0" => Ok(false),
        _ => Err(fail(
            e.line,
            format!("[{sec}] {}: {:?} is neither yes nor no", e.key, e.value),
        )),
    }
}

fn ignored(notes: &mut Vec<String>, sec: &str, key: &str, why: &str) {
    notes.push(format!("ignored: [{sec}] {key} ({why})"));
}

/// Why a `[general]` key has no counterpart, `None` when it is mapped.
fn general_ignored(key: &str) -> Option<&'static str> {
    Some(match key {
        k if k.starts_with("log_") => "logging is set in Kordon's own settings",
        k if k.starts_with("ats_") => "no UNIT PBX interfaces: the SBC itself asks",
        "hash_on" => "hashing follows `hashed` alone",
        "load_numbers" => "no numbers database from the SFTP server",
        "slimit_fdn" | "hlimit_fdn" => "open-file limits belong to the service manager",
        _ => return None,
    })
}

fn general(
    cfg: &mut VerifyConfig,
    entries: &[Entry],
    notes: &mut Vec<String>,
) -> Result<Option<(usize, usize)>, String> {
    const S: &str = "general";
    let mut uvr_num = None;
    for e in entries {
        let v = e.value.clone();
        match e.key.as_str() {
            "db_cut_time" => cfg.db_cut_time = v,
            "db_days" => cfg.db_days = number(S, e)?,
            "addr_local" => cfg.addr_local = v,
            "local_port" => cfg.local_port = number(S, e)?,
            "remote_addr" | "addr_remote" => cfg.remote_addr = v,
            "remote_port" => cfg.remote_port = number(S, e)?,
            "encrypted" => {
                cfg.encrypted = boolean(S, e)?;
                if cfg.encrypted {
                    notes.push(format!(
                        "line {}: [general] encrypted = yes kept, but the encrypted exchange \
                         (serviceKey 0x81) is not supported: start-up refuses it; set \
                         encrypted = false",
                        e.line
                    ));
                }
            }
            "hashed" => cfg.hashed = boolean(S, e)?,
            "release_code" => cfg.release_code = number(S, e)?,
            "timeout_code" => cfg.timeout_code = number(S, e)?,
            "error_code" => cfg.error_code = number(S, e)?,
            "verify_own_number" => cfg.verify_own_number = boolean(S, e)?,
            "verify_own_a" => cfg.verify_own_a = boolean(S, e)?,
            "abc" => cfg.numbering.abc = v,
            "w_size" => cfg.w_size = number(S, e)?,
            "limit_sql" => cfg.limit_sql = number(S, e)?,
            "rest_addr" => cfg.rest_addr = v,
            "rest_port" => cfg.rest_port = number(S, e)?,
            "radius_addr" => cfg.radius_addr = v,
            "radius_port" => cfg.radius_port = number(S, e)?,
            "radius_secret" => cfg.radius_secret = v,
            "uvr_num" => uvr_num = Some((number(S, e)?, e.line)),
            k => {
                let why = general_ignored(k).unwrap_or("not known to this import");
                ignored(notes, S, k, why);
            }
        }
    }
    Ok(uvr_num)
}

fn timers(
    cfg: &mut VerifyConfig,
    entries: &[Entry],
    notes: &mut Vec<String>,
) -> Result<(), String> {
    const S: &str = "timers";
    for e in entries {
        match e.key.as_str() {
            "req_timer" => cfg.req_timer = number(S, e)?,
            "call_timer" => cfg.call_timer = number(S, e)?,
            "main_timer" => cfg.main_timer = number(S, e)?,
            k @ ("refresh_numbers" | "refresh_unload") => {
                ignored(notes, S, k, "no SFTP exchange with the central system")
            }
            k if k.starts_with("ats_") => ignored(notes, S, k, "no UNIT PBX interfaces"),
            k => ignored(notes, S, k, "not known to this import"),
        }
    }
    Ok(())
}

fn sftp(cfg: &mut VerifyConfig, entries: &[Entry], notes: &mut Vec<String>) {
    for e in entries {
        match e.key.as_str() {
            "setup_path" => {
                cfg.setup_path = e.value.clone();
                notes.push(format!(
                    "line {}: [sftp] setup_path kept as the watched SETUP directory; applied \
                     files go to setup_outbox, not to an SFTP server",
                    e.line
                ));
            }
            k => ignored(notes, "sftp", k, "no SFTP exchange with the central system"),
        }
    }
}

/// `int_<X>` or `int_event_<X>`: which, and X.
fn interval_key(key: &str) -> Option<(bool, usize)> {
    if let Some(x) = key.strip_prefix("int_event_") {
        return x.parse().ok().map(|x| (true, x));
    }
    let x = key.strip_prefix("int_")?;
    x.parse().ok().map(|x| (false, x))
}

fn last_numbers(entries: &[Entry], notes: &mut Vec<String>) -> Result<LastNumbers, String> {
    const S: &str = "last_numbers";
    let mut out = LastNumbers::default();
    let mut int_num: Option<(usize, usize)> = None;
    let mut ranges: BTreeMap<usize, String> = BTreeMap::new();
    let mut events: BTreeMap<usize, (u8, usize)> = BTreeMap::new();
    for e in entries {
        match e.key.as_str() {
            "int_event" => out.int_event = number(S, e)?,
            "int_num" => int_num = Some((number(S, e)?, e.line)),
            k => match interval_key(k) {
                Some((false, x)) => {
                    ranges.insert(x, e.value.trim().to_string());
                }
                Some((true, x)) => {
                    events.insert(x, (number(S, e)?, e.line));
                }
                None => ignored(notes, S, k, "not known to this import"),
            },
        }
    }
    let count = match int_num {
        Some((n, line)) => {
            if let Some(x) = (0..n).find(|x| !ranges.contains_key(x)) {
                return Err(fail(
                    line,
                    format!("[{S}] int_num = {n} but int_{x} is missing"),
                ));
            }
            n
        }
        None => ranges.keys().next_back().map_or(0, |x| x + 1),
    };
    for (x, range) in ranges {
        if x >= count {
            ignored(notes, S, &format!("int_{x}"), "beyond int_num");
            continue;
        }
        out.intervals.push(PresetInterval {
            range,
            event: events.remove(&x).map(|(v, _)| v),
        });
    }
    for x in events.keys() {
        ignored(
            notes,
            S,
            &format!("int_event_{x}"),
            "no int_ interval with that index",
        );
    }
    if int_num.is_none() && count != out.intervals.len() {
        // Gaps in the indices without int_num: kept in index order.
        notes.push(format!(
            "[{S}] interval indices are not 0..{count}; the intervals present are kept"
        ));
    }
    Ok(out)
}

fn uvr_section(
    index: usize,
    name: &str,
    entries: &[Entry],
    notes: &mut Vec<String>,
) -> Result<NodeIdConfig, String> {
    let mut uvr_id = None;
    let mut operator_id = None;
    for e in entries {
        match e.key.as_str() {
            "uvr_id" => uvr_id = Some(number(name, e)?),
            "operator_id" => operator_id = Some(number(name, e)?),
            k @ "private_rsa_key_path" => {
                ignored(notes, name, k, "encrypted exchange is not supported")
            }
            k @ "private_key_path" => ignored(notes, name, k, "no SFTP exchange"),
            k => ignored(notes, name, k, "not known to this import"),
        }
    }
    match (uvr_id, operator_id) {
        (Some(uvr_id), Some(operator_id)) => Ok(NodeIdConfig {
            uvr_id,
            operator_id,
        }),
        _ => Err(format!(
            "[uvr_{index}]: both uvr_id and operator_id are needed"
        )),
    }
}

/// Why a whole section has no counterpart.
fn section_ignored(name: &str) -> &'static str {
    if name == "smtp" {
        "no e-mail notifications"
    } else if name.starts_with("ats_") {
        "no UNIT PBX interfaces: the SBC itself asks"
    } else if name.starts_with("ext_") {
        "no PBX server connections"
    } else {
        "section not known to this import"
    }
}

/// Reads a `uvrd.conf`; returns the settings (defaults where the file says
/// nothing) and the notes on what was not carried over. The error names the
/// line at fault.
pub fn import(text: &str) -> Result<(VerifyConfig, Vec<String>), String> {
    let sections = parse(text)?;
    let mut cfg = VerifyConfig::default();
    let mut notes = Vec::new();
    let mut uvr_num = None;
    let mut uvrs: BTreeMap<usize, &[Entry]> = BTreeMap::new();
    for (name, entries) in &sections {
        match name.as_str() {
            "general" => uvr_num = general(&mut cfg, entries, &mut notes)?,
            "timers" => timers(&mut cfg, entries, &mut notes)?,
            "sftp" => sftp(&mut cfg, entries, &mut notes),
            "last_numbers" => cfg.last_numbers = last_numbers(entries, &mut notes)?,
            n => match n.strip_prefix("uvr_").and_then(|x| x.parse::<usize>().ok()) {
                Some(x) => {
                    uvrs.insert(x, entries);
                }
                None => {
                    let why = section_ignored(n);
                    for e in entries {
                        ignored(&mut notes, n, &e.key, why);
                    }
                }
            },
        }
    }
    // The classic default is one node id.
    let (count, count_line) = uvr_num.unwrap_or((1, 0));
    let mut nodes = Vec::new();
    for x in 0..count {
        let Some(entries) = uvrs.get(&x) else {
            let at = if count_line == 0 {
                "uvr_num absent (1)".to_string()
            } else {
                format!("line {count_line}: uvr_num = {count}")
            };
            return Err(format!("{at}, but there is no [uvr_{x}] section"));
        };
        nodes.push(uvr_section(x, &format!("uvr_{x}"), entries, &mut notes)?);
    }
    for (x, entries) in uvrs.range(count..) {
        for e in *entries {
            ignored(&mut notes, &format!("uvr_{x}"), &e.key, "beyond uvr_num");
        }
    }
    cfg.nodes = nodes;
    notes.push(
        "hash_key is not part of uvrd.conf: left at its default; set the network-wide key"
            .to_string(),
    );
    Ok((cfg, notes))
}

#[derive(Serialize)]
struct Doc<'a> {
    verify: &'a VerifyConfig,
}

/// Renders `cfg` as a `[verify]` TOML section (with its subtables).
pub fn to_toml(cfg: &VerifyConfig) -> String {
    match toml::to_string(&Doc { verify: cfg }) {
        Ok(s) => s,
        // Every field is a plain value, string, list or map with string
        // keys, which TOML always represents; kept as text rather than a panic.
        Err(e) => format!("# the [verify] section could not be rendered: {e}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../../tests/fixtures/uvrd.conf");

    #[test]
    fn imports_the_sample() {
        let (c, notes) = import(FIXTURE).unwrap();
        assert_eq!(c.db_cut_time, "02:15");
        assert_eq!(c.db_days, 90);
        assert_eq!(c.addr_local, "192.0.2.10");
        assert_eq!(c.local_port, 9081);
        assert_eq!(c.remote_addr, "192.0.2.200");
        assert_eq!(c.remote_port, 9082);
        assert!(!c.encrypted);
        assert!(c.hashed);
        assert_eq!(c.release_code, 21);
        assert_eq!(c.timeout_code, 0);
        assert_eq!(c.error_code, 41);
        assert!(!c.verify_own_number);
        assert!(c.verify_own_a);
        assert_eq!(c.numbering.abc, "812");
        assert_eq!(c.w_size, 16);
        assert_eq!(c.limit_sql, 5000);
        assert_eq!(c.rest_addr, "127.0.0.1");
        assert_eq!(c.rest_port, 18085);
        assert_eq!(c.radius_addr, "127.0.0.1");
        assert_eq!(c.radius_port, 11812);
        assert_eq!(c.radius_secret, "not;a comment");
        assert_eq!(c.main_timer, 30);
        assert_eq!(c.req_timer, 800);
        assert_eq!(c.call_timer, 1800);
        assert_eq!(c.setup_path, "/var/lib/uvr/setup");
        assert_eq!(c.last_numbers.int_event, 0);
        assert_eq!(
            c.last_numbers.intervals,
            vec![
                PresetInterval {
                    range: "78120000000-78120000999".into(),
                    event: Some(2),
                },
                PresetInterval {
                    range: "78121000000-78121000099".into(),
                    event: None,
                },
            ]
        );
        assert_eq!(
            c.nodes,
            vec![
                NodeIdConfig {
                    uvr_id: 4101,
                    operator_id: 20001,
                },
                NodeIdConfig {
                    uvr_id: 4102,
                    operator_id: 20001,
                },
            ]
        );
        c.validate().unwrap();
        for want in [
            "ignored: [general] log_level (",
            "ignored: [general] ats_num (",
            "ignored: [general] hash_on (",
            "ignored: [general] load_numbers (",
            "ignored: [general] hlimit_fdn (",
            "ignored: [timers] refresh_numbers (",
            "ignored: [sftp] sftp_ip (",
            "ignored: [smtp] mail_to (",
            "ignored: [uvr_0] private_key_path (",
            "ignored: [ats_0] comport (",
            "ignored: [ext_0] cdr_port (",
        ] {
            assert!(
                notes.iter().any(|n| n.starts_with(want)),
                "{want} missing in {notes:#?}"
            );
        }
        // Mapped keys give no "ignored" note.
        assert!(!notes.iter().any(|n| n.contains("] w_size ")), "{notes:#?}");
        assert!(!notes.iter().any(|n| n.contains("] uvr_id ")), "{notes:#?}");
    }

    #[test]
    fn encrypted_is_kept_with_a_note() {
        let (c, notes) =
            import("[general]\nencrypted=yes\n[uvr_0]\nuvr_id=1\noperator_id=2\n").unwrap();
        assert!(c.encrypted);
        assert!(
            notes.iter().any(|n| n.contains("not supported")),
            "{notes:?}"
        );
        assert_eq!(c.validate().unwrap_err().0, "verify.encrypted");
    }

    #[test]
    fn bad_lines_name_their_number() {
        let cases = [
            ("[general]\nw_size=4\nthis is not a line\n", 3),
            ("[general]\n[timers\n", 2),
            ("[general]\nradius_secret=\"open\n", 2),
            ("[general]\nradius_secret=\"a\"b\n", 2),
            ("w_size=4\n", 1),
            ("[general]\n\n; c\nw_size=four\n", 4),
            ("[general]\nhashed=maybe\n", 2),
            ("[general]\nrelease_code=300\n", 2),
            ("[general]\nbad key=1\n", 2),
            ("[general]\n=1\n", 2),
            ("[]\n", 1),
            ("[uvr_0]\nuvr_id=-1\n", 2),
        ];
        for (text, line) in cases {
            let e = import(text).unwrap_err();
            assert!(e.starts_with(&format!("line {line}: ")), "{text:?}: {e}");
        }
    }

    #[test]
    fn node_sections_follow_uvr_num() {
        let e = import("[general]\nuvr_num=2\n[uvr_0]\nuvr_id=1\noperator_id=2\n").unwrap_err();
        assert!(e.contains("[uvr_1]") && e.contains("line 2"), "{e}");
        let e = import("[general]\nw_size=2\n").unwrap_err();
        assert!(e.contains("[uvr_0]"), "{e}");
        let e = import("[uvr_0]\nuvr_id=1\n").unwrap_err();
        assert!(e.contains("operator_id"), "{e}");
        let (c, notes) =
            import("[uvr_0]\nuvr_id=1\noperator_id=2\n[uvr_1]\nuvr_id=3\noperator_id=4\n").unwrap();
        assert_eq!(c.nodes.len(), 1);
        assert!(
            notes
                .iter()
                .any(|n| n == "ignored: [uvr_1] uvr_id (beyond uvr_num)"),
            "{notes:?}"
        );
    }

    #[test]
    fn intervals_need_their_ranges() {
        let e =
            import("[last_numbers]\nint_num=2\nint_0=\"7-8\"\n[uvr_0]\nuvr_id=1\noperator_id=2\n")
                .unwrap_err();
        assert!(e.starts_with("line 2: ") && e.contains("int_1"), "{e}");
    }

    #[test]
    fn comments_quotes_and_bom() {
        let text = "\u{feff}; leading comment\n  ; indented comment\n# hash comment\n\
                    [General] ; section comment\nrest_addr = \"10.0.0.1\" ; where\n\
                    radius_secret=\"a;b\"\n[uvr_0]\nuvr_id=1\noperator_id=2\n";
        let (c, _) = import(text).unwrap();
        assert_eq!(c.rest_addr, "10.0.0.1");
        assert_eq!(c.radius_secret, "a;b");
    }

    #[test]
    fn toml_round_trips() {
        let (c, _) = import(FIXTURE).unwrap();
        let s = to_toml(&c);
        assert!(s.contains("[verify]"), "{s}");
        assert!(
            s.contains("[verify.last_numbers]") || s.contains("[[verify.last_numbers.intervals]]"),
            "{s}"
        );
        #[derive(serde::Deserialize)]
        struct Back {
            verify: VerifyConfig,
        }
        let back: Back = toml::from_str(&s).unwrap();
        assert_eq!(back.verify, c);
    }

    proptest::proptest! {
        #[test]
        fn import_never_panics(s in "\\PC{0,300}") {
            let _ = import(&s);
        }

        #[test]
        fn import_never_panics_on_ini_like(s in "(\\[[a-z_0-9]{0,8}\\]|[a-z_]{1,10}=\"?[a-z0-9;\" ]{0,10}|;[^\\n]{0,5}|\\n){0,30}") {
            let _ = import(&s);
        }
    }
}
