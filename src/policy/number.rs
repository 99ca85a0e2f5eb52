//! Exact decimal numbers for rule conditions.
//!
//! A condition compares what the policy author wrote with what the event
//! holds, numerically and exactly: `1`, `1.0` and `10e-1` are equal, and
//! `9007199254740993` is not `9007199254740992` (as it would be through f64).
//! Both sides are JSON number text; comparing their significant digits and
//! decimal exponent needs no allocation on the event side.

use std::fmt;

/// A number as written in a policy (JSON number grammar), kept exactly.
#[derive(Clone, PartialEq, Eq)]
pub struct Decimal {
    /// The text as written, for display.
    text: String,
    negative: bool,
    /// Significant digits (ASCII), no leading or trailing zeros; empty for zero.
    digits: Box<[u8]>,
    /// Value = 0.`digits` × 10^`exponent`.
    exponent: i64,
}

impl Decimal {
    /// Parse JSON number text; `None` if it is not one (`01`, `0x10`, `+1`, `.5`, `1_000`).
    pub fn parse(text: &str) -> Option<Decimal> {
        let parts = Parts::of(text)?;
        Some(Decimal {
            text: text.to_owned(),
            negative: parts.negative && parts.significant().next().is_some(),
            digits: parts.significant().collect(),
            exponent: parts.exponent(),
        })
    }

    /// Whether JSON number text `raw` (from an event) has exactly this value.
    pub fn matches(&self, raw: &str) -> bool {
        let Some(parts) = Parts::of(raw) else {
            return false;
        };
        let zero = self.digits.is_empty();
        parts.significant().eq(self.digits.iter().copied())
            && (zero || (parts.negative == self.negative && parts.exponent() == self.exponent))
    }

    /// The number as an f64 (for display in JSON reports).
    pub fn as_f64(&self) -> f64 {
        self.text.parse().unwrap_or(f64::NAN)
    }
}

impl fmt::Debug for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The pieces of JSON number text.
struct Parts<'a> {
    negative: bool,
    int: &'a [u8],
    frac: &'a [u8],
    exp: i64,
}

impl<'a> Parts<'a> {
    /// Split text that follows RFC 8259's number grammar exactly.
    fn of(text: &'a str) -> Option<Parts<'a>> {
        let b = text.as_bytes();
        let (negative, b) = match b.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, b),
        };
        let int_len = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let (int, b) = b.split_at(int_len);
        if int.is_empty() || (int.len() > 1 && int.first() == Some(&b'0')) {
            return None;
        }
        let (frac, b) = match b.split_first() {
            Some((b'.', rest)) => {
                let n = rest.iter().take_while(|c| c.is_ascii_digit()).count();
                if n == 0 {
                    return None;
                }
                rest.split_at(n)
            }
            _ => (&[][..], b),
        };
        let exp = match b.split_first() {
            None => 0,
            Some((b'e' | b'E', rest)) => {
                let (sign, digits) = match rest.split_first() {
                    Some((b'-', d)) => (-1i64, d),
                    Some((b'+', d)) => (1, d),
                    _ => (1, rest),
                };
                if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                    return None;
                }
                // Saturate: exponents beyond ±10^15 are all "too far" alike.
                let magnitude = digits.iter().fold(0i64, |acc, d| {
                    acc.saturating_mul(10)
                        .saturating_add(i64::from(d - b'0'))
                        .min(1_000_000_000_000_000)
                });
                sign * magnitude
            }
            Some(_) => return None,
        };
        Some(Parts {
            negative,
            int,
            frac,
            exp,
        })
    }

    fn all_digits(&self) -> impl DoubleEndedIterator<Item = u8> + Clone + 'a {
        self.int.iter().chain(self.frac).copied()
    }

    fn leading_zeros(&self) -> usize {
        self.all_digits().take_while(|d| *d == b'0').count()
    }

    /// Significant digits: without leading and trailing zeros.
    fn significant(&self) -> impl Iterator<Item = u8> + 'a {
        let total = self.int.len() + self.frac.len();
        let lead = self.leading_zeros();
        let trail = if lead == total {
            0
        } else {
            self.all_digits().rev().take_while(|d| *d == b'0').count()
        };
        self.all_digits().skip(lead).take(total - lead - trail)
    }

    /// The decimal exponent of 0.`significant` (meaningless for zero).
    fn exponent(&self) -> i64 {
        let point = i64::try_from(self.int.len()).unwrap_or(i64::MAX);
        let lead = i64::try_from(self.leading_zeros()).unwrap_or(i64::MAX);
        point.saturating_sub(lead).saturating_add(self.exp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::parse(s).unwrap_or_else(|| panic!("{s} should parse"))
    }

    #[test]
    fn equal_values_match_in_any_notation() {
        for (a, b) in [
            ("1", "1.0"),
            ("1", "10e-1"),
            ("1", "0.1e1"),
            ("100", "1e2"),
            ("100", "1E+2"),
            ("0", "-0"),
            ("0", "0.000e5"),
            ("-2.5", "-25e-1"),
            ("0.001", "1e-3"),
        ] {
            assert!(d(a).matches(b), "{a} == {b}");
            assert!(d(b).matches(a), "{b} == {a}");
        }
    }

    #[test]
    fn integers_beyond_f64_stay_exact() {
        assert!(!d("9007199254740993").matches("9007199254740992"));
        assert!(d("9007199254740993").matches("9007199254740993"));
        assert!(d("123456789012345678901234567890").matches("1.2345678901234567890123456789e29"));
    }

    #[test]
    fn different_values_do_not_match() {
        for (a, b) in [
            ("1", "-1"),
            ("1", "10"),
            ("1", "0.1"),
            ("12", "21"),
            ("0", "1e-400"),
        ] {
            assert!(!d(a).matches(b), "{a} != {b}");
        }
    }

    #[test]
    fn only_json_number_text_parses() {
        for bad in [
            "01234", "0x10", "+1", ".5", "1.", "1_000", "1e", "-", "", "1e+", "NaN", "inf", "1 ",
        ] {
            assert!(Decimal::parse(bad).is_none(), "{bad:?} must not parse");
            assert!(!d("1").matches(bad));
        }
    }
}
