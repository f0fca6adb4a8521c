//! Decimal major-unit strings ("12.34", "-0.50", "1234") to minor units, without floats.
//!
//! Stripe's report CSVs carry gross/fee/net in major units, optionally with `,` as decimal separator. The parser
//! accepts exactly `-?DIGITS(SEP DIGITS)?`: no exponent notation, no thousands separators, no leading `+`, no bare
//! `.5` or `5.`. Fraction digits beyond the currency's exponent are accepted only when they are zeros
//! (`12.340` is exactly 1234 cents); any non-zero excess digit is [`MoneyError::ExcessPrecision`], never rounded.

use crate::{Amount, Currency, MoneyError};

/// The character between the major and the minor part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecimalSeparator {
    #[default]
    Dot,
    Comma,
}

impl DecimalSeparator {
    fn as_char(self) -> char {
        match self {
            DecimalSeparator::Dot => '.',
            DecimalSeparator::Comma => ',',
        }
    }
}

/// Parses a decimal string in major units of `currency` into minor units.
pub fn parse_major(input: &str, currency: Currency, sep: DecimalSeparator) -> Result<Amount, MoneyError> {
    let malformed = |why| MoneyError::MalformedDecimal { input: input.to_owned(), why };
    let (negative, unsigned) = match input.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, input),
    };
    let (int_part, frac_part) = match unsigned.split_once(sep.as_char()) {
        Some((i, f)) => (i, Some(f)),
        None => (unsigned, None),
    };
    if int_part.is_empty() {
        return Err(malformed("no digits before the decimal separator"));
    }
    if !int_part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("only ASCII digits, one optional leading '-' and one decimal separator are allowed"));
    }
    let frac = frac_part.unwrap_or("");
    if frac_part.is_some() && frac.is_empty() {
        return Err(malformed("no digits after the decimal separator"));
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("only ASCII digits, one optional leading '-' and one decimal separator are allowed"));
    }
    let exp = usize::from(currency.exponent());
    let (kept, excess) = frac.split_at(frac.len().min(exp));
    if excess.bytes().any(|b| b != b'0') {
        return Err(MoneyError::ExcessPrecision { input: input.to_owned(), currency, exponent: currency.exponent() });
    }
    // Accumulate digits of the integer part, then the kept fraction padded with zeros to the exponent.
    let padding = std::iter::repeat_n(b'0', exp - kept.len());
    let digits = int_part.bytes().chain(kept.bytes()).chain(padding);
    // Accumulate towards the sign, so that i64::MIN (whose magnitude i64 cannot hold) parses.
    let mut minor: i64 = 0;
    for d in digits {
        let d = i64::from(d - b'0');
        let shifted = minor.checked_mul(10);
        minor = if negative { shifted.and_then(|m| m.checked_sub(d)) } else { shifted.and_then(|m| m.checked_add(d)) }
            .ok_or(MoneyError::Overflow)?;
    }
    Ok(Amount::from_minor(minor))
}

/// Parses a decimal in major units written by a PSP whose exponent for `currency` may differ from ISO 4217 (Adyen
/// writes IDR with 0 decimals, ISO has 2): a fraction finer than either exponent is [`MoneyError::ExcessPrecision`]
/// (finer than the PSP's is not an amount that PSP moves; finer than ISO's is not one Tally can hold). The result
/// is in ISO minor units, as every amount Tally stores.
pub fn parse_major_in(
    input: &str,
    currency: Currency,
    sep: DecimalSeparator,
    scheme: crate::ExponentScheme,
) -> Result<Amount, MoneyError> {
    let psp = currency.exponent_in(scheme);
    if let Some((_, frac)) = input.split_once(sep.as_char()) {
        if frac.bytes().skip(usize::from(psp)).any(|b| b != b'0') && frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(MoneyError::ExcessPrecision { input: input.to_owned(), currency, exponent: psp });
        }
    }
    parse_major(input, currency, sep)
}

/// Re-expresses `value` given with exponent `from` in exponent `to`, exactly or not at all.
///
/// Used for PSPs whose wire exponent differs from ISO 4217 (Adyen sends CLP with exponent 2: `100000` on the wire
/// is 1000 CLP). A value that would lose precision is an error, never a silent truncation.
pub fn rescale(value: i64, from: u8, to: u8) -> Result<Amount, MoneyError> {
    let inexact = MoneyError::InexactRescale { value, from, to };
    if from == to {
        return Ok(Amount::from_minor(value));
    }
    let factor = 10i64.checked_pow(u32::from(from.abs_diff(to))).ok_or(MoneyError::Overflow)?;
    if to > from {
        value.checked_mul(factor).map(Amount::from_minor).ok_or(MoneyError::Overflow)
    } else if value % factor == 0 {
        Ok(Amount::from_minor(value / factor))
    } else {
        Err(inexact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cur(code: &str) -> Currency {
        Currency::from_code(code).unwrap()
    }

    fn parse(s: &str, code: &str) -> Result<i64, MoneyError> {
        parse_major(s, cur(code), DecimalSeparator::Dot).map(Amount::minor)
    }

    #[test]
    fn parses_major_units_per_exponent() {
        let table = [
            ("12.34", "USD", 1234),
            ("-0.50", "EUR", -50),
            ("0.5", "EUR", 50),
            ("7", "EUR", 700),
            ("1234", "JPY", 1234),
            ("1234.00", "JPY", 1234),
            ("1.234", "BHD", 1234),
            ("0.0001", "CLF", 1),
            ("12.340", "USD", 1234),
            ("-0", "USD", 0),
            ("92233720368547758.07", "USD", i64::MAX),
            ("-92233720368547758.08", "USD", i64::MIN),
        ];
        for (input, code, expected) in table {
            assert_eq!(parse(input, code), Ok(expected), "{input} {code}");
        }
        assert_eq!(parse_major("12,34", cur("EUR"), DecimalSeparator::Comma).unwrap().minor(), 1234);
    }

    #[test]
    fn a_psp_exponent_finer_or_coarser_than_iso_refuses_what_either_cannot_hold() {
        use crate::ExponentScheme::{Adyen, Iso4217};
        let p = |s: &str, code: &str, scheme| {
            parse_major_in(s, cur(code), DecimalSeparator::Dot, scheme).map(Amount::minor)
        };
        // IDR: ISO 2, Adyen 0 — Adyen never moves a fraction of a rupiah.
        assert_eq!(p("15000.50", "IDR", Iso4217), Ok(1_500_050));
        assert!(matches!(p("15000.50", "IDR", Adyen), Err(MoneyError::ExcessPrecision { exponent: 0, .. })));
        assert_eq!(p("15000.00", "IDR", Adyen), Ok(1_500_000));
        // CLP: ISO 0, Adyen 2 — Adyen's "5000.00" is 5000 pesos; a centavo Tally cannot hold.
        assert_eq!(p("5000.00", "CLP", Adyen), Ok(5000));
        assert!(matches!(p("5000.50", "CLP", Adyen), Err(MoneyError::ExcessPrecision { exponent: 0, .. })));
        assert!(matches!(p("1.2.3", "EUR", Adyen), Err(MoneyError::MalformedDecimal { .. })));
    }

    #[test]
    fn rejects_excess_precision_instead_of_rounding() {
        assert!(matches!(parse("12.345", "USD"), Err(MoneyError::ExcessPrecision { exponent: 2, .. })));
        assert!(matches!(parse("1.5", "JPY"), Err(MoneyError::ExcessPrecision { exponent: 0, .. })));
        assert!(matches!(parse("0.0001", "BHD"), Err(MoneyError::ExcessPrecision { .. })));
    }

    #[test]
    fn rejects_malformed_and_overflowing_input() {
        for bad in ["", "-", ".5", "5.", "+5", "1e3", "1,000.00", "1.2.3", " 1", "1 ", "0x10", "١٢", "--1", "1.-5"] {
            assert!(matches!(parse(bad, "USD"), Err(MoneyError::MalformedDecimal { .. })), "{bad:?}");
        }
        assert!(matches!(parse("12.34", "USD").and(parse("12,34", "USD")), Err(MoneyError::MalformedDecimal { .. })));
        assert_eq!(parse("92233720368547758.08", "USD"), Err(MoneyError::Overflow));
        assert_eq!(parse("-92233720368547758.09", "USD"), Err(MoneyError::Overflow));
    }

    #[test]
    fn rescale_is_exact_or_an_error() {
        assert_eq!(rescale(100_000, 2, 0), Ok(Amount::from_minor(1000))); // Adyen CLP → ISO CLP
        assert_eq!(rescale(1500, 0, 2), Ok(Amount::from_minor(150_000))); // Adyen CVE → ISO CVE
        assert_eq!(rescale(-250, 2, 0).unwrap_err(), MoneyError::InexactRescale { value: -250, from: 2, to: 0 });
        assert_eq!(rescale(i64::MAX, 0, 2), Err(MoneyError::Overflow));
        assert_eq!(rescale(42, 2, 2), Ok(Amount::from_minor(42)));
    }

    proptest! {
        /// Rendering minor units as a decimal string and parsing it back is the identity, for every exponent.
        #[test]
        fn display_then_parse_round_trips(
            minor in prop_oneof![any::<i64>(), Just(i64::MIN), Just(i64::MAX), Just(0), Just(-1)],
            idx in 0usize..160,
        ) {
            let currency = Currency::all().nth(idx % Currency::all().count()).unwrap();
            let rendered = crate::Money::new(Amount::from_minor(minor), currency).to_string();
            let number = rendered.split(' ').next().unwrap();
            prop_assert_eq!(parse_major(number, currency, DecimalSeparator::Dot), Ok(Amount::from_minor(minor)));
        }
    }
}
