//! Class of service: which destinations a user may call, and when.
//!
//! What it does: [`ClassOfService::compile`] checks a [`ClassOfServiceConfig`]
//! (prefix lists, an hours window, a set of week days, a UTC offset) and
//! [`ClassOfService::check`] decides one call from its E.164 destination and
//! the current time, both passed in.
//!
//! Rules, checked in this order, the first refusal wins:
//! 1. a destination starting with any `deny_prefixes` entry is refused (deny
//!    wins over allow, whatever the prefix lengths);
//! 2. when `allow_prefixes` is not empty, a destination starting with none of
//!    them is refused;
//! 3. the local week day (at `utc_offset`) must be in `days`;
//! 4. the local time of day must be inside `hours`, start included, end
//!    excluded. A window whose end is before its start wraps over midnight
//!    (`22:00-06:00`). Day and hour are both read from the same local
//!    moment: with `days = "fri"` and `hours = "22:00-02:00"`, Saturday 01:00
//!    is outside the days.
//!
//! What it does not: look the user up, normalize the number, or follow
//! daylight saving time (the offset is fixed; operators change it with the
//! season if they need to).
//!
//! Invariants: a compiled class holds only digit prefixes, a non-empty hours
//! window and a valid offset, so [`ClassOfService::check`] is total.

use chrono::{DateTime, Datelike, FixedOffset, Timelike, Utc};

use super::e164::E164;

/// Minutes in a day; `24:00` is allowed as the end of a window.
const DAY_MINUTES: u16 = 24 * 60;

/// Week days in `days`, Monday first (the index is
/// [`chrono::Weekday::num_days_from_monday`]).
const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// A class of service as written in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassOfServiceConfig {
    /// The name users refer to this class by.
    pub name: String,
    /// E.164 digit prefixes the user may call; empty allows every destination.
    pub allow_prefixes: Vec<String>,
    /// E.164 digit prefixes the user may never call; these win over
    /// `allow_prefixes`.
    pub deny_prefixes: Vec<String>,
    /// `HH:MM-HH:MM` in local time, may wrap over midnight; empty means always.
    pub hours: String,
    /// Week days, as `mon-fri`, `mon,wed,sat` or a mix (`mon-wed,sat`); ranges
    /// may wrap (`fri-mon`). Empty means every day.
    pub days: String,
    /// Offset of the local time `hours` and `days` are read in, `+HH:MM` or
    /// `-HH:MM`.
    pub utc_offset: String,
}

impl Default for ClassOfServiceConfig {
    fn default() -> Self {
        ClassOfServiceConfig {
            name: String::new(),
            allow_prefixes: Vec::new(),
            deny_prefixes: Vec::new(),
            hours: String::new(),
            days: String::new(),
            utc_offset: "+00:00".to_owned(),
        }
    }
}

/// The outcome of [`ClassOfService::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CosDecision {
    /// The call may proceed.
    Allow,
    /// The call is refused (SIP answers 403 with the denial as reason phrase).
    Deny(CosDenial),
}

/// Why a class of service refused a call.
///
/// `Display` is short enough for a CDR field and a 403 reason phrase; it
/// does not reveal the rule that matched (that is in the variant's fields,
/// for logs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CosDenial {
    /// The destination is denied, or not in the allow list.
    #[error("destination not allowed by class of service")]
    DestinationNotAllowed {
        /// The rule that refused: `deny_prefixes: <prefix>` for a matching
        /// deny prefix, `allow_prefixes: no match` when no allowed prefix
        /// matched.
        prefix_rule: String,
    },
    /// The local time of day is outside `hours`.
    #[error("outside the hours allowed by class of service")]
    OutsideHours,
    /// The local week day is not in `days`.
    #[error("outside the days allowed by class of service")]
    OutsideDays,
}

/// A checked, ready-to-use class of service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassOfService {
    name: String,
    allow_prefixes: Vec<String>,
    deny_prefixes: Vec<String>,
    /// `(start, end)` in minutes from local midnight; `None` means always.
    /// `start != end`; `start > end` wraps over midnight.
    hours: Option<(u16, u16)>,
    /// Bit `n` set: day `n` (Monday = 0) is allowed.
    days: u8,
    offset: FixedOffset,
}

impl ClassOfService {
    /// Checks `cfg` and compiles it; the error names the field and the
    /// problem, e.g. `hours: "25:00-06:00": hour 25 is not 00 to 23`.
    pub fn compile(cfg: &ClassOfServiceConfig) -> Result<Self, String> {
        check_prefixes("allow_prefixes", &cfg.allow_prefixes)?;
        check_prefixes("deny_prefixes", &cfg.deny_prefixes)?;
        let hours = parse_hours(&cfg.hours).map_err(|e| format!("hours: {:?}: {e}", cfg.hours))?;
        let days = parse_days(&cfg.days).map_err(|e| format!("days: {:?}: {e}", cfg.days))?;
        let offset = parse_offset(&cfg.utc_offset)
            .map_err(|e| format!("utc_offset: {:?}: {e}", cfg.utc_offset))?;
        Ok(ClassOfService {
            name: cfg.name.clone(),
            allow_prefixes: cfg.allow_prefixes.clone(),
            deny_prefixes: cfg.deny_prefixes.clone(),
            hours,
            days,
            offset,
        })
    }

    /// The class's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Decides whether a call to `dest` placed at `now` may proceed.
    pub fn check(&self, dest: &E164, now: DateTime<Utc>) -> CosDecision {
        let digits = dest.digits();
        if let Some(p) = self
            .deny_prefixes
            .iter()
            .find(|p| digits.starts_with(p.as_str()))
        {
            return CosDecision::Deny(CosDenial::DestinationNotAllowed {
                prefix_rule: format!("deny_prefixes: {p}"),
            });
        }
        if !self.allow_prefixes.is_empty()
            && !self
                .allow_prefixes
                .iter()
                .any(|p| digits.starts_with(p.as_str()))
        {
            return CosDecision::Deny(CosDenial::DestinationNotAllowed {
                prefix_rule: "allow_prefixes: no match".to_owned(),
            });
        }
        let local = now.with_timezone(&self.offset);
        let day_bit = 1u8 << local.weekday().num_days_from_monday();
        if self.days & day_bit == 0 {
            return CosDecision::Deny(CosDenial::OutsideDays);
        }
        if let Some((start, end)) = self.hours {
            // hour() < 24 and minute() < 60, so this fits in u16.
            let minute = u16::try_from(local.hour() * 60 + local.minute()).unwrap_or(0);
            let inside = if start < end {
                start <= minute && minute < end
            } else {
                minute >= start || minute < end
            };
            if !inside {
                return CosDecision::Deny(CosDenial::OutsideHours);
            }
        }
        CosDecision::Allow
    }
}

fn check_prefixes(field: &str, prefixes: &[String]) -> Result<(), String> {
    for (i, p) in prefixes.iter().enumerate() {
        if p.is_empty() {
            return Err(format!(
                "{field}[{i}]: empty prefix (it would match every destination)"
            ));
        }
        if let Some(c) = p.chars().find(|c| !c.is_ascii_digit()) {
            return Err(format!(
                "{field}[{i}]: {p:?} has a non-digit character {c:?} (digits of the E.164 \
                 number, without '+')"
            ));
        }
    }
    Ok(())
}

/// Parses `HH:MM-HH:MM` into minutes from midnight; `""` (and the whole day,
/// `00:00-24:00`) is always.
fn parse_hours(s: &str) -> Result<Option<(u16, u16)>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let Some((start, end)) = s.split_once('-') else {
        return Err("expected HH:MM-HH:MM".to_owned());
    };
    let start = parse_hhmm(start.trim(), false)?;
    let end = parse_hhmm(end.trim(), true)?;
    if start == end {
        return Err("start equals end; leave hours empty to allow any time".to_owned());
    }
    if start == 0 && end == DAY_MINUTES {
        return Ok(None);
    }
    // 24:00 as an end is midnight: `18:00-24:00` becomes the wrapping
    // window 18:00-00:00, which contains the same minutes.
    Ok(Some((start, end % DAY_MINUTES)))
}

/// Parses `HH:MM` (hour 00 to 23, or `24:00` when `is_end`) into minutes.
fn parse_hhmm(s: &str, is_end: bool) -> Result<u16, String> {
    let not_hhmm = || format!("{s:?} is not HH:MM");
    let (h, m) = s.split_once(':').ok_or_else(not_hhmm)?;
    let number = |part: &str| -> Result<u16, String> {
        if part.is_empty() || part.len() > 2 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(not_hhmm());
        }
        part.parse::<u16>().map_err(|_| not_hhmm())
    };
    let (h, m) = (number(h)?, number(m)?);
    if m > 59 {
        return Err(format!("minute {m} is not 00 to 59"));
    }
    if is_end && h == 24 && m == 0 {
        return Ok(DAY_MINUTES);
    }
    if h > 23 {
        return Err(format!("hour {h} is not 00 to 23"));
    }
    Ok(h * 60 + m)
}

/// Parses a day list into a Monday-first bit set; `""` is every day.
fn parse_days(s: &str) -> Result<u8, String> {
    if s.trim().is_empty() {
        return Ok(0x7f);
    }
    let mut set = 0u8;
    for item in s.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err("empty item in the list".to_owned());
        }
        let (first, last) = match item.split_once('-') {
            Some((a, b)) => (day_index(a.trim())?, day_index(b.trim())?),
            None => {
                let d = day_index(item)?;
                (d, d)
            }
        };
        // A range walks forward from `first` and may wrap past Sunday.
        let mut d = first;
        loop {
            set |= 1 << d;
            if d == last {
                break;
            }
            d = (d + 1) % 7;
        }
    }
    Ok(set)
}

/// Monday = 0 for a three-letter English day name, any case.
fn day_index(name: &str) -> Result<u8, String> {
    let lower = name.to_ascii_lowercase();
    DAY_NAMES
        .iter()
        .position(|d| *d == lower)
        .and_then(|i| u8::try_from(i).ok())
        .ok_or_else(|| format!("{name:?} is not a day (mon, tue, wed, thu, fri, sat, sun)"))
}

/// Parses `+HH:MM` / `-HH:MM`.
fn parse_offset(s: &str) -> Result<FixedOffset, String> {
    let expected = || "expected +HH:MM or -HH:MM".to_owned();
    let s = s.trim();
    let (sign, rest) = if let Some(rest) = s.strip_prefix('+') {
        (1i32, rest)
    } else if let Some(rest) = s.strip_prefix('-') {
        (-1i32, rest)
    } else {
        return Err(expected());
    };
    let (h, m) = rest.split_once(':').ok_or_else(expected)?;
    let two_digits = |part: &str| -> Result<i32, String> {
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(expected());
        }
        part.parse::<i32>().map_err(|_| expected())
    };
    let (h, m) = (two_digits(h)?, two_digits(m)?);
    if h > 23 || m > 59 {
        return Err("offset out of range (at most 23:59)".to_owned());
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
        .ok_or_else(|| "offset out of range (at most 23:59)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::e164::{normalize, NumberingConfig};
    use chrono::TimeZone;

    fn num(s: &str) -> E164 {
        normalize(s, &NumberingConfig::default()).unwrap()
    }

    /// 2024-01-01 is a Monday.
    fn at(day: u32, h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, day, h, m, 0).unwrap()
    }

    fn cos(cfg: ClassOfServiceConfig) -> ClassOfService {
        ClassOfService::compile(&cfg).unwrap()
    }

    fn prefixes(list: &[&str]) -> Vec<String> {
        list.iter().map(|p| (*p).to_owned()).collect()
    }

    const MOSCOW: &str = "+74951234567";
    const MOBILE: &str = "+79161234567";
    const PREMIUM: &str = "+78091234567";
    const LONDON: &str = "+442079460958";

    #[test]
    fn default_class_allows_everything_always() {
        let c = cos(ClassOfServiceConfig::default());
        for when in [at(1, 0, 0), at(6, 12, 30), at(7, 23, 59)] {
            assert_eq!(c.check(&num(LONDON), when), CosDecision::Allow);
        }
    }

    #[test]
    fn allows_only_listed_prefixes() {
        let c = cos(ClassOfServiceConfig {
            name: "local".to_owned(),
            allow_prefixes: prefixes(&["7495", "7499"]),
            ..ClassOfServiceConfig::default()
        });
        assert_eq!(c.name(), "local");
        assert_eq!(c.check(&num(MOSCOW), at(1, 12, 0)), CosDecision::Allow);
        assert_eq!(
            c.check(&num(MOBILE), at(1, 12, 0)),
            CosDecision::Deny(CosDenial::DestinationNotAllowed {
                prefix_rule: "allow_prefixes: no match".to_owned()
            })
        );
    }

    #[test]
    fn deny_prefix_wins_over_allow() {
        let c = cos(ClassOfServiceConfig {
            allow_prefixes: prefixes(&["780"]),
            deny_prefixes: prefixes(&["7"]),
            ..ClassOfServiceConfig::default()
        });
        // The allow prefix is longer, but deny still wins.
        assert_eq!(
            c.check(&num(PREMIUM), at(1, 12, 0)),
            CosDecision::Deny(CosDenial::DestinationNotAllowed {
                prefix_rule: "deny_prefixes: 7".to_owned()
            })
        );
    }

    #[test]
    fn denies_listed_prefixes_and_allows_the_rest() {
        let c = cos(ClassOfServiceConfig {
            deny_prefixes: prefixes(&["7809", "44"]),
            ..ClassOfServiceConfig::default()
        });
        assert_eq!(c.check(&num(MOSCOW), at(1, 12, 0)), CosDecision::Allow);
        assert!(matches!(
            c.check(&num(PREMIUM), at(1, 12, 0)),
            CosDecision::Deny(CosDenial::DestinationNotAllowed { .. })
        ));
        assert!(matches!(
            c.check(&num(LONDON), at(1, 12, 0)),
            CosDecision::Deny(CosDenial::DestinationNotAllowed { .. })
        ));
    }

    #[test]
    fn hours_window_includes_start_and_excludes_end() {
        let c = cos(ClassOfServiceConfig {
            hours: "09:00-18:00".to_owned(),
            ..ClassOfServiceConfig::default()
        });
        let deny = CosDecision::Deny(CosDenial::OutsideHours);
        assert_eq!(c.check(&num(MOSCOW), at(1, 8, 59)), deny);
        assert_eq!(c.check(&num(MOSCOW), at(1, 9, 0)), CosDecision::Allow);
        assert_eq!(c.check(&num(MOSCOW), at(1, 17, 59)), CosDecision::Allow);
        assert_eq!(c.check(&num(MOSCOW), at(1, 18, 0)), deny);
    }

    #[test]
    fn hours_window_wraps_over_midnight() {
        let c = cos(ClassOfServiceConfig {
            hours: "22:00-06:00".to_owned(),
            ..ClassOfServiceConfig::default()
        });
        let deny = CosDecision::Deny(CosDenial::OutsideHours);
        assert_eq!(c.check(&num(MOSCOW), at(1, 21, 59)), deny);
        assert_eq!(c.check(&num(MOSCOW), at(1, 22, 0)), CosDecision::Allow);
        assert_eq!(c.check(&num(MOSCOW), at(1, 23, 59)), CosDecision::Allow);
        assert_eq!(c.check(&num(MOSCOW), at(2, 0, 0)), CosDecision::Allow);
        assert_eq!(c.check(&num(MOSCOW), at(2, 5, 59)), CosDecision::Allow);
        assert_eq!(c.check(&num(MOSCOW), at(2, 6, 0)), deny);
        assert_eq!(c.check(&num(MOSCOW), at(2, 12, 0)), deny);
    }

    #[test]
    fn hours_may_end_at_twenty_four() {
        let c = cos(ClassOfServiceConfig {
            hours: "18:00-24:00".to_owned(),
            ..ClassOfServiceConfig::default()
        });
        assert_eq!(c.check(&num(MOSCOW), at(1, 23, 59)), CosDecision::Allow);
        assert_eq!(
            c.check(&num(MOSCOW), at(1, 0, 0)),
            CosDecision::Deny(CosDenial::OutsideHours)
        );
        let all_day = cos(ClassOfServiceConfig {
            hours: "00:00-24:00".to_owned(),
            ..ClassOfServiceConfig::default()
        });
        assert_eq!(all_day.check(&num(MOSCOW), at(1, 0, 0)), CosDecision::Allow);
        assert_eq!(
            all_day.check(&num(MOSCOW), at(1, 23, 59)),
            CosDecision::Allow
        );
    }

    #[test]
    fn days_range_and_list() {
        let weekdays = cos(ClassOfServiceConfig {
            days: "mon-fri".to_owned(),
            ..ClassOfServiceConfig::default()
        });
        let deny = CosDecision::Deny(CosDenial::OutsideDays);
        for day in 1..=5 {
            assert_eq!(
                weekdays.check(&num(MOSCOW), at(day, 12, 0)),
                CosDecision::Allow
            );
        }
        assert_eq!(weekdays.check(&num(MOSCOW), at(6, 12, 0)), deny);
        assert_eq!(weekdays.check(&num(MOSCOW), at(7, 12, 0)), deny);

        let some = cos(ClassOfServiceConfig {
            days: "Mon, wed,SAT".to_owned(),
            ..ClassOfServiceConfig::default()
        });
        let allowed: Vec<u32> = (1..=7)
            .filter(|d| some.check(&num(MOSCOW), at(*d, 12, 0)) == CosDecision::Allow)
            .collect();
        assert_eq!(allowed, vec![1, 3, 6]);
    }

    #[test]
    fn days_range_wraps_over_sunday() {
        let c = cos(ClassOfServiceConfig {
            days: "fri-mon".to_owned(),
            ..ClassOfServiceConfig::default()
        });
        let allowed: Vec<u32> = (1..=7)
            .filter(|d| c.check(&num(MOSCOW), at(*d, 12, 0)) == CosDecision::Allow)
            .collect();
        assert_eq!(allowed, vec![1, 5, 6, 7]);
    }

    #[test]
    fn hours_and_days_are_read_at_the_utc_offset() {
        let c = cos(ClassOfServiceConfig {
            hours: "09:00-18:00".to_owned(),
            days: "mon-fri".to_owned(),
            utc_offset: "+03:00".to_owned(),
            ..ClassOfServiceConfig::default()
        });
        // 06:30 UTC is 09:30 in Moscow.
        assert_eq!(c.check(&num(MOSCOW), at(1, 6, 30)), CosDecision::Allow);
        // 15:00 UTC is 18:00 in Moscow: closed.
        assert_eq!(
            c.check(&num(MOSCOW), at(1, 15, 0)),
            CosDecision::Deny(CosDenial::OutsideHours)
        );
        // Friday 22:00 UTC is already Saturday 01:00 in Moscow.
        assert_eq!(
            c.check(&num(MOSCOW), at(5, 22, 0)),
            CosDecision::Deny(CosDenial::OutsideDays)
        );
        // Sunday 22:00 UTC is Monday 01:00 in Moscow: a week day, but closed.
        assert_eq!(
            c.check(&num(MOSCOW), at(7, 22, 0)),
            CosDecision::Deny(CosDenial::OutsideHours)
        );

        let west = cos(ClassOfServiceConfig {
            days: "sun".to_owned(),
            utc_offset: "-05:30".to_owned(),
            ..ClassOfServiceConfig::default()
        });
        // Monday 05:00 UTC is still Sunday 23:30 at -05:30.
        assert_eq!(west.check(&num(MOSCOW), at(1, 5, 0)), CosDecision::Allow);
        assert_eq!(
            west.check(&num(MOSCOW), at(1, 5, 30)),
            CosDecision::Deny(CosDenial::OutsideDays)
        );
    }

    #[test]
    fn destination_is_checked_before_time() {
        let c = cos(ClassOfServiceConfig {
            deny_prefixes: prefixes(&["44"]),
            hours: "09:00-10:00".to_owned(),
            ..ClassOfServiceConfig::default()
        });
        assert!(matches!(
            c.check(&num(LONDON), at(1, 3, 0)),
            CosDecision::Deny(CosDenial::DestinationNotAllowed { .. })
        ));
    }

    #[test]
    fn denial_text_is_a_short_reason() {
        let d = CosDenial::DestinationNotAllowed {
            prefix_rule: "deny_prefixes: 7809".to_owned(),
        };
        assert_eq!(d.to_string(), "destination not allowed by class of service");
        assert_eq!(
            CosDenial::OutsideHours.to_string(),
            "outside the hours allowed by class of service"
        );
        assert_eq!(
            CosDenial::OutsideDays.to_string(),
            "outside the days allowed by class of service"
        );
    }

    #[test]
    fn compile_names_the_bad_field() {
        let bad = |cfg: ClassOfServiceConfig, field: &str| {
            let e = ClassOfService::compile(&cfg).unwrap_err();
            assert!(e.starts_with(field), "{e:?} should start with {field:?}");
        };
        let d = ClassOfServiceConfig::default;
        bad(
            ClassOfServiceConfig {
                allow_prefixes: prefixes(&["7", "+7"]),
                ..d()
            },
            "allow_prefixes[1]",
        );
        bad(
            ClassOfServiceConfig {
                deny_prefixes: prefixes(&[""]),
                ..d()
            },
            "deny_prefixes[0]",
        );
        for hours in [
            "9",
            "25:00-06:00",
            "09:60-10:00",
            "09:00-09:00",
            "24:00-06:00",
            "a:00-b:00",
            "09:00-",
            "009:00-10:00",
        ] {
            bad(
                ClassOfServiceConfig {
                    hours: hours.to_owned(),
                    ..d()
                },
                "hours",
            );
        }
        for days in ["mon-", "monday", "mon,,tue", "xyz", ","] {
            bad(
                ClassOfServiceConfig {
                    days: days.to_owned(),
                    ..d()
                },
                "days",
            );
        }
        for off in ["", "03:00", "+3:00", "+24:00", "+03:60", "+0300", "Z"] {
            bad(
                ClassOfServiceConfig {
                    utc_offset: off.to_owned(),
                    ..d()
                },
                "utc_offset",
            );
        }
        let e = ClassOfService::compile(&ClassOfServiceConfig {
            hours: "25:00-06:00".to_owned(),
            ..d()
        })
        .unwrap_err();
        assert_eq!(e, "hours: \"25:00-06:00\": hour 25 is not 00 to 23");
    }
}
