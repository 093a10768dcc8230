//! Number normalization to E.164: the one function every caller uses to turn
//! a dialled string into a canonical international number.
//!
//! What it does: takes the user part of a SIP or tel URI (or any dialled
//! string), drops URI user parameters (everything from the first `;`) and
//! visual separators (space, `-`, `.`, `(`, `)`), then reads the digits by
//! the rules of a [`NumberingConfig`], tried in this order:
//!
//! 1. `+<digits>`: already international, kept as is;
//! 2. starts with the international prefix (`810`): the rest is international;
//! 3. starts with `00`: the rest is international;
//! 4. trunk prefix followed by a full national number (`8 495 123 45 67`):
//!    the country code replaces the trunk prefix;
//! 5. a full national number (`495 123 45 67`): the country code is added;
//! 6. the country code followed by a full national number (`7 495 ...`):
//!    kept as is;
//! 7. a local number (`123 45 67`, national length minus the area code's):
//!    country code and default area code are added.
//!
//! Anything else is refused with a [`NumberError`].
//!
//! What it does not: strip a `tel:` or `sip:` scheme or a host (the caller
//! passes the user part), look up number portability, or check that a
//! country code exists.
//!
//! Invariants:
//! - [`normalize`] never panics, whatever the input or the configuration.
//! - An [`E164`] holds 1 to 15 ASCII digits, the first not `0`.
//! - Normalizing the `Display` of an [`E164`] (`+<digits>`) gives it back.

#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use std::fmt;

/// Longest number E.164 allows, in digits (ITU-T E.164 section 6.1).
pub const MAX_DIGITS: usize = 15;

/// How numbers dialled without `+` are read: the local numbering plan.
///
/// Defaults describe Moscow, Russia: country code `7`, trunk prefix `8`,
/// international prefix `810`, area code `495`, 10-digit national numbers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NumberingConfig {
    /// Country calling code, 1 to 3 digits, not starting with `0`.
    pub country_code: String,
    /// Prefix dialled before a national number (`8` in Russia, `0` in much of
    /// Europe); empty when the plan has none.
    pub trunk_prefix: String,
    /// Prefix dialled before an international number (`810`); `00` is always
    /// understood as well. Empty when only `00` and `+` are used.
    pub international_prefix: String,
    /// Default area code added to local numbers; empty turns local numbers off.
    pub abc: String,
    /// Length of a significant national number (area code included).
    pub national_len: usize,
}

impl Default for NumberingConfig {
    fn default() -> Self {
        NumberingConfig {
            country_code: "7".to_owned(),
            trunk_prefix: "8".to_owned(),
            international_prefix: "810".to_owned(),
            abc: "495".to_owned(),
            national_len: 10,
        }
    }
}

impl NumberingConfig {
    /// Checks the plan is usable; the error names the field and the problem,
    /// e.g. `numbering.abc: "49a" has a non-digit character 'a'`.
    pub fn validate(&self) -> Result<(), String> {
        digits_only("numbering.country_code", &self.country_code)?;
        digits_only("numbering.trunk_prefix", &self.trunk_prefix)?;
        digits_only("numbering.international_prefix", &self.international_prefix)?;
        digits_only("numbering.abc", &self.abc)?;
        let cc = self.country_code.len();
        if cc == 0 || cc > 3 {
            return Err(format!(
                "numbering.country_code: {:?} must have 1 to 3 digits",
                self.country_code
            ));
        }
        if self.country_code.starts_with('0') {
            return Err(format!(
                "numbering.country_code: {:?} cannot start with 0",
                self.country_code
            ));
        }
        if self.national_len == 0 {
            return Err("numbering.national_len: must be at least 1".to_owned());
        }
        if cc.saturating_add(self.national_len) > MAX_DIGITS {
            return Err(format!(
                "numbering.national_len: {} digits after a {}-digit country code exceed the \
                 {MAX_DIGITS} digits E.164 allows",
                self.national_len, cc
            ));
        }
        if !self.abc.is_empty() && self.abc.len() >= self.national_len {
            return Err(format!(
                "numbering.abc: {:?} must be shorter than numbering.national_len ({})",
                self.abc, self.national_len
            ));
        }
        Ok(())
    }
}

fn digits_only(field: &str, value: &str) -> Result<(), String> {
    match value.chars().find(|c| !c.is_ascii_digit()) {
        Some(c) => Err(format!(
            "{field}: {value:?} has a non-digit character {c:?}"
        )),
        None => Ok(()),
    }
}

/// A number in E.164 form: 1 to 15 digits, country code first, no `+`.
///
/// Only [`normalize`] makes one, so the invariant always holds. `Display`
/// writes `+<digits>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E164(String);

impl E164 {
    /// The digits, country code first, without `+`.
    pub fn digits(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{}", self.0)
    }
}

/// Why a string is not a number [`normalize`] can read.
///
/// Every variant but [`NumberError::Config`] is the fault of whoever sent the
/// number (a SIP answer of 484 Address Incomplete or 404 fits); retrying the
/// same string cannot help. [`NumberError::Config`] is the operator's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    /// No digits at all (empty, only separators, or a bare `+`).
    #[error("number has no digits")]
    Empty,
    /// A character that is neither a digit, a separator nor a leading `+`.
    #[error("number has an invalid character {ch:?} at position {position}")]
    InvalidChar {
        /// The character refused.
        ch: char,
        /// Its position in the input, counted in characters from 0.
        position: usize,
    },
    /// Nothing follows an international prefix.
    #[error("nothing follows the international prefix")]
    NothingAfterPrefix,
    /// The international number would be longer than E.164 allows.
    #[error("number has {digits} digits, more than the {MAX_DIGITS} E.164 allows")]
    TooLong {
        /// How many digits the international number would have.
        digits: usize,
    },
    /// The international number would start with `0`, which no country code does.
    #[error("number starts with 0 where a country code is expected")]
    LeadingZero,
    /// The digits match none of the numbering plan's forms.
    #[error("{digits} digits match no known national, international or local form")]
    UnknownFormat {
        /// How many digits were dialled.
        digits: usize,
    },
    /// The numbering plan itself is invalid (the text names the field).
    #[error("invalid numbering configuration: {0}")]
    Config(String),
}

impl NumberError {
    /// Whether the operator's configuration, not the number, is at fault.
    pub fn is_config(&self) -> bool {
        matches!(self, NumberError::Config(_))
    }
}

/// Reads `raw` (the user part of a URI, or a dialled string) as an E.164 number
/// by the rules in the module documentation.
pub fn normalize(raw: &str, cfg: &NumberingConfig) -> Result<E164, NumberError> {
    cfg.validate().map_err(NumberError::Config)?;
    let user = match raw.split_once(';') {
        Some((user, _params)) => user,
        None => raw,
    };
    let mut digits = String::with_capacity(user.len().min(2 * MAX_DIGITS));
    let mut plus = false;
    for (position, ch) in user.chars().enumerate() {
        match ch {
            '0'..='9' => digits.push(ch),
            ' ' | '-' | '.' | '(' | ')' => {}
            '+' if !plus && digits.is_empty() => plus = true,
            _ => return Err(NumberError::InvalidChar { ch, position }),
        }
    }
    if digits.is_empty() {
        return Err(NumberError::Empty);
    }
    let international = if plus {
        digits
    } else {
        classify(&digits, cfg)?
    };
    if international.len() > MAX_DIGITS {
        return Err(NumberError::TooLong {
            digits: international.len(),
        });
    }
    if international.starts_with('0') {
        return Err(NumberError::LeadingZero);
    }
    Ok(E164(international))
}

/// Turns digits dialled without `+` into international digits (not yet
/// checked for length or a leading zero).
fn classify(d: &str, cfg: &NumberingConfig) -> Result<String, NumberError> {
    let national_len = cfg.national_len;
    let cc = cfg.country_code.as_str();
    let international_rest = if cfg.international_prefix.is_empty() {
        None
    } else {
        d.strip_prefix(cfg.international_prefix.as_str())
    };
    if let Some(rest) = international_rest.or_else(|| d.strip_prefix("00")) {
        if rest.is_empty() {
            return Err(NumberError::NothingAfterPrefix);
        }
        return Ok(rest.to_owned());
    }
    if !cfg.trunk_prefix.is_empty() {
        if let Some(rest) = d.strip_prefix(cfg.trunk_prefix.as_str()) {
            if rest.len() == national_len {
                return Ok(format!("{cc}{rest}"));
            }
        }
    }
    if d.len() == national_len {
        return Ok(format!("{cc}{d}"));
    }
    if d.len() == cc.len().saturating_add(national_len) && d.starts_with(cc) {
        return Ok(d.to_owned());
    }
    if !cfg.abc.is_empty() && national_len.checked_sub(cfg.abc.len()) == Some(d.len()) {
        return Ok(format!("{cc}{}{d}", cfg.abc));
    }
    Err(NumberError::UnknownFormat { digits: d.len() })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ru() -> NumberingConfig {
        NumberingConfig::default()
    }

    fn norm(raw: &str) -> Result<String, NumberError> {
        normalize(raw, &ru()).map(|n| n.digits().to_owned())
    }

    #[test]
    fn keeps_plus_numbers_as_is() {
        assert_eq!(norm("+74951234567"), Ok("74951234567".to_owned()));
        assert_eq!(norm("+44 20 7946 0958"), Ok("442079460958".to_owned()));
    }

    #[test]
    fn display_writes_plus_and_digits() {
        let n = normalize("84951234567", &ru()).unwrap();
        assert_eq!(n.to_string(), "+74951234567");
        assert_eq!(n.digits(), "74951234567");
    }

    #[test]
    fn strips_visual_separators() {
        assert_eq!(norm("+7 (495) 123-45.67"), Ok("74951234567".to_owned()));
        assert_eq!(norm("(+7) 495 123 45 67"), Ok("74951234567".to_owned()));
    }

    #[test]
    fn strips_uri_user_parameters() {
        assert_eq!(
            norm("+74951234567;npdi;rn=+74950000000"),
            Ok("74951234567".to_owned())
        );
        assert_eq!(norm(";phone-context=x"), Err(NumberError::Empty));
    }

    #[test]
    fn strips_international_prefix() {
        assert_eq!(norm("810 44 20 7946 0958"), Ok("442079460958".to_owned()));
    }

    #[test]
    fn reads_double_zero_as_international() {
        assert_eq!(norm("00442079460958"), Ok("442079460958".to_owned()));
    }

    #[test]
    fn replaces_trunk_prefix_with_country_code() {
        assert_eq!(norm("8 495 123 45 67"), Ok("74951234567".to_owned()));
        assert_eq!(norm("8 916 123 45 67"), Ok("79161234567".to_owned()));
    }

    #[test]
    fn adds_country_code_to_national_number() {
        assert_eq!(norm("4951234567"), Ok("74951234567".to_owned()));
    }

    #[test]
    fn keeps_country_code_with_national_number() {
        assert_eq!(norm("74951234567"), Ok("74951234567".to_owned()));
    }

    #[test]
    fn adds_country_and_area_code_to_local_number() {
        assert_eq!(norm("123-45-67"), Ok("74951234567".to_owned()));
    }

    #[test]
    fn follows_another_numbering_plan() {
        let uk = NumberingConfig {
            country_code: "44".to_owned(),
            trunk_prefix: "0".to_owned(),
            international_prefix: "00".to_owned(),
            abc: String::new(),
            national_len: 10,
        };
        let n = |raw: &str| normalize(raw, &uk).map(|n| n.digits().to_owned());
        assert_eq!(n("020 7946 0958"), Ok("442079460958".to_owned()));
        assert_eq!(n("0033 1 23 45 67 89"), Ok("33123456789".to_owned()));
        assert_eq!(n("2079460958"), Ok("442079460958".to_owned()));
        assert_eq!(n("442079460958"), Ok("442079460958".to_owned()));
        // No area code configured: no local form.
        assert_eq!(n("9460958"), Err(NumberError::UnknownFormat { digits: 7 }));
    }

    #[test]
    fn rejects_empty() {
        assert_eq!(norm(""), Err(NumberError::Empty));
        assert_eq!(norm(" - ( ) ."), Err(NumberError::Empty));
        assert_eq!(norm("+"), Err(NumberError::Empty));
    }

    #[test]
    fn rejects_non_digits_naming_the_character() {
        assert_eq!(
            norm("8495123456x"),
            Err(NumberError::InvalidChar {
                ch: 'x',
                position: 10
            })
        );
        assert_eq!(
            norm("+7+495"),
            Err(NumberError::InvalidChar {
                ch: '+',
                position: 2
            })
        );
        assert_eq!(
            norm("7\u{0663}"),
            Err(NumberError::InvalidChar {
                ch: '\u{0663}',
                position: 1
            })
        );
        let e = norm("12*3").unwrap_err();
        assert_eq!(
            e.to_string(),
            "number has an invalid character '*' at position 2"
        );
    }

    #[test]
    fn rejects_more_than_fifteen_digits() {
        assert_eq!(
            norm("+1234567890123456"),
            Err(NumberError::TooLong { digits: 16 })
        );
        assert_eq!(
            norm("8101234567890123456"),
            Err(NumberError::TooLong { digits: 16 })
        );
        assert_eq!(norm("+123456789012345"), Ok("123456789012345".to_owned()));
    }

    #[test]
    fn rejects_leading_zero_country_code() {
        assert_eq!(norm("+0123"), Err(NumberError::LeadingZero));
        assert_eq!(norm("8100123"), Err(NumberError::LeadingZero));
    }

    #[test]
    fn rejects_bare_international_prefix() {
        assert_eq!(norm("810"), Err(NumberError::NothingAfterPrefix));
        assert_eq!(norm("00"), Err(NumberError::NothingAfterPrefix));
    }

    #[test]
    fn rejects_unknown_lengths() {
        assert_eq!(norm("12345"), Err(NumberError::UnknownFormat { digits: 5 }));
        assert_eq!(
            norm("849512345"),
            Err(NumberError::UnknownFormat { digits: 9 })
        );
        // Eleven digits that start with neither the trunk prefix nor the
        // country code.
        assert_eq!(
            norm("94951234567"),
            Err(NumberError::UnknownFormat { digits: 11 })
        );
    }

    #[test]
    fn refuses_an_invalid_plan_instead_of_panicking() {
        let bad = NumberingConfig {
            abc: "12345678901".to_owned(),
            national_len: 3,
            ..NumberingConfig::default()
        };
        let e = normalize("123", &bad).unwrap_err();
        assert!(e.is_config());
        assert!(e.to_string().contains("numbering.abc"), "{e}");
    }

    #[test]
    fn validate_names_the_field() {
        assert_eq!(NumberingConfig::default().validate(), Ok(()));
        let check = |cfg: NumberingConfig, field: &str| {
            let e = cfg.validate().unwrap_err();
            assert!(e.starts_with(field), "{e} should name {field}");
        };
        let d = NumberingConfig::default;
        check(
            NumberingConfig {
                country_code: String::new(),
                ..d()
            },
            "numbering.country_code",
        );
        check(
            NumberingConfig {
                country_code: "1234".to_owned(),
                ..d()
            },
            "numbering.country_code",
        );
        check(
            NumberingConfig {
                country_code: "07".to_owned(),
                ..d()
            },
            "numbering.country_code",
        );
        check(
            NumberingConfig {
                trunk_prefix: "8a".to_owned(),
                ..d()
            },
            "numbering.trunk_prefix",
        );
        check(
            NumberingConfig {
                international_prefix: "+".to_owned(),
                ..d()
            },
            "numbering.international_prefix",
        );
        check(
            NumberingConfig {
                abc: "49 5".to_owned(),
                ..d()
            },
            "numbering.abc",
        );
        check(
            NumberingConfig {
                national_len: 0,
                ..d()
            },
            "numbering.national_len",
        );
        check(
            NumberingConfig {
                national_len: 15,
                ..d()
            },
            "numbering.national_len",
        );
        check(
            NumberingConfig {
                national_len: 3,
                ..d()
            },
            "numbering.abc",
        );
    }

    proptest! {
        #[test]
        fn never_panics_on_any_text(raw in ".{0,40}") {
            let _ = normalize(&raw, &ru());
        }

        #[test]
        fn normalizing_the_display_is_idempotent(raw in "[+0-9 ().;-]{0,24}") {
            if let Ok(n) = normalize(&raw, &ru()) {
                prop_assert!(n.digits().len() <= MAX_DIGITS);
                prop_assert!(n.digits().bytes().all(|b| b.is_ascii_digit()));
                prop_assert_eq!(normalize(&n.to_string(), &ru()), Ok(n));
            }
        }

        #[test]
        fn never_panics_on_any_plan(
            raw in "[+0-9a ]{0,20}",
            cc in "[0-9a]{0,4}",
            trunk in "[0-9]{0,2}",
            intl in "[0-9]{0,3}",
            abc in "[0-9]{0,6}",
            national_len in 0usize..20,
        ) {
            let cfg = NumberingConfig {
                country_code: cc,
                trunk_prefix: trunk,
                international_prefix: intl,
                abc,
                national_len,
            };
            if let Ok(n) = normalize(&raw, &cfg) {
                prop_assert_eq!(normalize(&n.to_string(), &cfg), Ok(n));
            }
        }
    }
}
