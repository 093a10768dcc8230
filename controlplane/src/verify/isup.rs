//! Numbers in ISUP address form (ITU-T Q.763 §3.9 / §3.10), as carried inside
//! the BER `data` of the VerifyCallState request ([`super::ber`]).
//!
//! Layout:
//! - octet 1: bit 8 odd/even indicator (1 = odd number of digits), bits 1-7
//!   nature of address (3 national, 4 international, 0 as sent by nodes that
//!   do not fill it in);
//! - octet 2: bits 5-7 numbering plan (1 = E.164); bit 8 (INN / number
//!   incomplete) and bits 1-4 (presentation, screening) are ignored on decode
//!   and written as 0: the verification node compares numbers, not
//!   presentation;
//! - then the digits in BCD, two per octet, low nibble first; when the count
//!   is odd the last octet's high nibble is a 0 filler.
//!
//! What it does not do: the ISUP codes 11, 12 and ST (0xB, 0xC, 0xF) are not
//! digits of a number to verify, so every nibble 0xA-0xF is refused.
//!
//! Invariants: [`IsupNumber::decode`] is total (an [`IsupError`] naming the
//! octet, never a panic) and holds between 1 and [`MAX_DIGITS`] digits; for
//! every decoded value, `decode(encode(v)) == v`.

#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

/// Most digits a number may carry (16 octets of BCD). E.164 numbers have at
/// most 15; national forms with prefixes stay well below this.
pub const MAX_DIGITS: usize = 32;

/// Nature of address: international number.
pub const NATURE_INTERNATIONAL: u8 = 4;
/// Numbering plan: ISDN/telephony (E.164).
pub const PLAN_E164: u8 = 1;

/// Why bytes or text are not a number in ISUP address form. Offsets count
/// octets from the start of the address (octet 0 = odd/even + nature). Every
/// variant is the sender's fault; retrying the same bytes cannot help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsupError {
    /// Fewer than the two header octets and one digit octet.
    #[error("ISUP address of {len} octets: needs at least 3")]
    TooShort {
        /// Octets given.
        len: usize,
    },
    /// More digits than [`MAX_DIGITS`].
    #[error("ISUP address with {count} digits: at most {MAX_DIGITS}")]
    TooManyDigits {
        /// Digits given or encoded.
        count: usize,
    },
    /// A nibble 0xA-0xF where a digit belongs.
    #[error("non-BCD nibble 0x{nibble:X} at octet {offset}")]
    NotBcd {
        /// Octet holding the nibble.
        offset: usize,
        /// The nibble.
        nibble: u8,
    },
    /// The odd/even flag says odd but the last high nibble is not 0.
    #[error("filler nibble 0x{nibble:X} at octet {offset}: must be 0 for an odd count")]
    BadFiller {
        /// Octet holding the filler.
        offset: usize,
        /// The nibble found.
        nibble: u8,
    },
    /// No digits in a number given as text.
    #[error("number has no digits")]
    NoDigits,
    /// A character other than an ASCII digit in a number given as text.
    #[error("character {ch:?} at {index} is not a digit")]
    NotADigit {
        /// Byte index in the text.
        index: usize,
        /// The character.
        ch: char,
    },
}

/// A number in ISUP address form.
///
/// Values built by [`IsupNumber::international`] or [`IsupNumber::decode`]
/// hold `nature` < 128, `plan` < 8 and 1..=[`MAX_DIGITS`] ASCII digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IsupNumber {
    /// Nature of address indicator (7 bits).
    pub nature: u8,
    /// Numbering plan indicator (3 bits).
    pub plan: u8,
    /// The digits, ASCII `0`-`9` only.
    pub digits: String,
}

impl IsupNumber {
    /// An international E.164 number (nature 4, plan 1). A leading `+` is
    /// dropped; the rest must be 1..=[`MAX_DIGITS`] ASCII digits.
    pub fn international(digits: &str) -> Result<Self, IsupError> {
        let digits = digits.strip_prefix('+').unwrap_or(digits);
        if digits.is_empty() {
            return Err(IsupError::NoDigits);
        }
        if let Some((index, ch)) = digits.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
            return Err(IsupError::NotADigit { index, ch });
        }
        if digits.len() > MAX_DIGITS {
            return Err(IsupError::TooManyDigits {
                count: digits.len(),
            });
        }
        Ok(IsupNumber {
            nature: NATURE_INTERNATIONAL,
            plan: PLAN_E164,
            digits: digits.to_owned(),
        })
    }

    /// The address octets. Infallible: on a hand-built value `nature` is
    /// masked to 7 bits, `plan` to 3, and characters of `digits` other than
    /// ASCII digits are skipped (the odd/even flag counts what is written).
    /// More than [`MAX_DIGITS`] digits are written but do not decode.
    pub fn encode(&self) -> Vec<u8> {
        let nibbles: Vec<u8> = self
            .digits
            .bytes()
            .filter(u8::is_ascii_digit)
            .map(|b| b - b'0')
            .collect();
        let odd = !nibbles.len().is_multiple_of(2);
        let mut out = Vec::with_capacity(2 + nibbles.len().div_ceil(2));
        let flag = if odd { 0x80 } else { 0 };
        out.push(flag | (self.nature & 0x7F));
        out.push((self.plan & 0x07) << 4);
        for pair in nibbles.chunks(2) {
            let (lo, hi) = match *pair {
                [lo, hi] => (lo, hi),
                [lo] => (lo, 0),
                _ => continue,
            };
            out.push(hi << 4 | lo);
        }
        out
    }

    /// Reads the address octets (all of `bytes`).
    pub fn decode(bytes: &[u8]) -> Result<Self, IsupError> {
        let [first, second, rest @ ..] = bytes else {
            return Err(IsupError::TooShort { len: bytes.len() });
        };
        if rest.is_empty() {
            return Err(IsupError::TooShort { len: bytes.len() });
        }
        let odd = first & 0x80 != 0;
        let count = rest.len() * 2 - usize::from(odd);
        if count > MAX_DIGITS {
            return Err(IsupError::TooManyDigits { count });
        }
        let mut digits = String::with_capacity(count);
        let last = rest.len() - 1;
        for (i, &octet) in rest.iter().enumerate() {
            let offset = i + 2;
            let (lo, hi) = (octet & 0x0F, octet >> 4);
            digits.push(bcd(lo, offset)?);
            if odd && i == last {
                if hi != 0 {
                    return Err(IsupError::BadFiller { offset, nibble: hi });
                }
            } else {
                digits.push(bcd(hi, offset)?);
            }
        }
        Ok(IsupNumber {
            nature: first & 0x7F,
            plan: (second >> 4) & 0x07,
            digits,
        })
    }
}

/// Invariant check for the `verify_isup` cargo-fuzz target (and the unit
/// tests): [`IsupNumber::decode`] of `data` returns. A number that decodes
/// holds `nature` < 128, `plan` < 8 and 1..=[`MAX_DIGITS`] ASCII digits,
/// encodes to octets that decode to an equal number, and encoding that again
/// gives the same octets. An error has a non-empty message. Panics only if
/// one of those breaks.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_verify_isup(data: &[u8]) {
    match IsupNumber::decode(data) {
        Ok(n) => {
            assert!(n.nature < 128 && n.plan < 8, "header out of range: {n:?}");
            assert!(
                (1..=MAX_DIGITS).contains(&n.digits.len())
                    && n.digits.bytes().all(|b| b.is_ascii_digit()),
                "digits out of range: {n:?}"
            );
            let wire = n.encode();
            assert_eq!(
                IsupNumber::decode(&wire).as_ref(),
                Ok(&n),
                "re-decode differs: {wire:02X?}"
            );
            let again = IsupNumber::decode(&wire).map(|m| m.encode());
            assert_eq!(again.as_ref(), Ok(&wire), "encoding is not a fixed point");
        }
        Err(e) => assert!(!e.to_string().is_empty(), "empty error message"),
    }
}

fn bcd(nibble: u8, offset: usize) -> Result<char, IsupError> {
    if nibble <= 9 {
        Ok(char::from(b'0' + nibble))
    } else {
        Err(IsupError::NotBcd { offset, nibble })
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_the_manual_example() {
        let n = IsupNumber::decode(&[0x84, 0x10, 0x47, 0x99, 0x49, 0x49, 0x93, 0x05]).unwrap();
        assert_eq!(n, IsupNumber::international("74999494395").unwrap());
        assert_eq!(n.encode(), [0x84, 0x10, 0x47, 0x99, 0x49, 0x49, 0x93, 0x05]);
    }

    #[test]
    fn decodes_unknown_nature_and_plan() {
        let n = IsupNumber::decode(&[0x80, 0x00, 0x47, 0x59, 0x89, 0x88, 0x82, 0x02]).unwrap();
        assert_eq!((n.nature, n.plan), (0, 0));
        assert_eq!(n.digits, "74959888282");
    }

    #[test]
    fn even_and_odd_counts() {
        let even = IsupNumber::international("1234").unwrap();
        assert_eq!(even.encode(), [0x04, 0x10, 0x21, 0x43]);
        let odd = IsupNumber::international("+123").unwrap();
        assert_eq!(odd.encode(), [0x84, 0x10, 0x21, 0x03]);
        assert_eq!(IsupNumber::decode(&even.encode()).unwrap(), even);
        assert_eq!(IsupNumber::decode(&odd.encode()).unwrap(), odd);
    }

    #[test]
    fn ignores_inn_and_screening_bits() {
        let n = IsupNumber::decode(&[0x04, 0x9F, 0x21]).unwrap();
        assert_eq!((n.nature, n.plan, n.digits.as_str()), (4, 1, "12"));
    }

    #[test]
    fn refuses_malformed_addresses() {
        assert_eq!(
            IsupNumber::decode(&[0x84, 0x10]),
            Err(IsupError::TooShort { len: 2 })
        );
        assert_eq!(
            IsupNumber::decode(&[0x04, 0x10, 0x2A]),
            Err(IsupError::NotBcd {
                offset: 2,
                nibble: 0xA
            })
        );
        assert_eq!(
            IsupNumber::decode(&[0x04, 0x10, 0xF1]),
            Err(IsupError::NotBcd {
                offset: 2,
                nibble: 0xF
            })
        );
        // A filler is only allowed as the last high nibble of an odd count.
        assert_eq!(
            IsupNumber::decode(&[0x84, 0x10, 0x21, 0x13]),
            Err(IsupError::BadFiller {
                offset: 3,
                nibble: 1
            })
        );
        assert_eq!(
            IsupNumber::decode(&[0x84, 0x10, 0xF1, 0x03]),
            Err(IsupError::NotBcd {
                offset: 2,
                nibble: 0xF
            })
        );
        assert_eq!(
            IsupNumber::decode(&[0x04, 0x10, 0x1F]),
            Err(IsupError::NotBcd {
                offset: 2,
                nibble: 0xF
            })
        );
        let long = [&[0x04, 0x10][..], &[0x11; 17]].concat();
        assert_eq!(
            IsupNumber::decode(&long),
            Err(IsupError::TooManyDigits { count: 34 })
        );
    }

    #[test]
    fn fuzz_body_accepts_samples_and_hostile_input() {
        for bytes in [
            &[0x84, 0x10, 0x47, 0x99, 0x49, 0x49, 0x93, 0x05][..],
            &[0x04, 0x9F, 0x21],
            &[0x84, 0x10, 0xF1, 0x03],
            &[0x84, 0x10],
            &[],
            &[0xFF; 40],
        ] {
            fuzz_verify_isup(bytes);
        }
    }

    #[test]
    fn refuses_bad_text() {
        assert_eq!(IsupNumber::international("+"), Err(IsupError::NoDigits));
        assert_eq!(
            IsupNumber::international("12a"),
            Err(IsupError::NotADigit { index: 2, ch: 'a' })
        );
        assert!(IsupNumber::international(&"1".repeat(33)).is_err());
    }

    fn arb_number() -> impl Strategy<Value = IsupNumber> {
        (0u8..128, 0u8..8, "[0-9]{1,32}").prop_map(|(nature, plan, digits)| IsupNumber {
            nature,
            plan,
            digits,
        })
    }

    proptest! {
        #[test]
        fn encode_decode_identity(n in arb_number()) {
            prop_assert_eq!(IsupNumber::decode(&n.encode()), Ok(n));
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(n) = IsupNumber::decode(&data) {
                prop_assert_eq!(IsupNumber::decode(&n.encode()), Ok(n));
            }
        }
    }
}
