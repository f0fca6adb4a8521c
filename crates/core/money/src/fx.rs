//! Currency conversion without floats: a rate is an exact decimal as its source publishes it, conversion is one
//! rational computation in `i128`, rounded once to the target currency's ISO 4217 exponent, half away from zero.
//!
//! Rates are quoted against a base currency (the ECB's: units of the quote currency per 1 EUR); a conversion between
//! two quote currencies is the cross rate through the base, computed in the same single step (no intermediate
//! rounding in EUR).

use crate::{Amount, Currency, MoneyError};

/// A positive exact decimal `mantissa / 10^scale` (ECB: `1.1172` → 11172 / 10^4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate {
    mantissa: u64,
    scale: u8,
}

impl Rate {
    /// The base currency's rate against itself.
    pub const ONE: Rate = Rate { mantissa: 1, scale: 0 };

    pub fn new(mantissa: u64, scale: u8) -> Result<Rate, MoneyError> {
        if mantissa == 0 || scale > 18 {
            return Err(MoneyError::MalformedDecimal { input: format!("{mantissa}e-{scale}"), why: "not a rate" });
        }
        Ok(Rate { mantissa, scale })
    }

    /// Parses a rate as published: digits with at most one `.`, positive, at most 18 decimals.
    pub fn parse(input: &str) -> Result<Rate, MoneyError> {
        let bad = |why| MoneyError::MalformedDecimal { input: input.to_owned(), why };
        let s = input.trim();
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        if whole.is_empty() || !whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad("a rate is digits with an optional decimal point"));
        }
        let scale = u8::try_from(frac.len()).map_err(|_| bad("too many decimals"))?;
        let mantissa: u64 = format!("{whole}{frac}").parse().map_err(|_| bad("too many digits"))?;
        if mantissa == 0 {
            return Err(bad("a rate must be positive"));
        }
        Rate::new(mantissa, scale).map_err(|_| bad("too many decimals"))
    }

    pub fn mantissa(self) -> u64 {
        self.mantissa
    }

    pub fn scale(self) -> u8 {
        self.scale
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digits = format!("{:0>width$}", self.mantissa, width = usize::from(self.scale) + 1);
        let (whole, frac) = digits.split_at(digits.len() - usize::from(self.scale));
        if frac.is_empty() {
            write!(f, "{whole}")
        } else {
            write!(f, "{whole}.{frac}")
        }
    }
}

fn pow10(n: u32) -> Result<i128, MoneyError> {
    10i128.checked_pow(n).ok_or(MoneyError::Overflow)
}

/// `amount` of `from` in `to`, given both currencies' rates against the same base (`Rate::ONE` for the base
/// itself): `amount × 10^e(to) × rate(to) / (10^e(from) × rate(from))`, rounded once, half away from zero.
pub fn convert(
    amount: Amount,
    from: Currency,
    from_rate: Rate,
    to: Currency,
    to_rate: Rate,
) -> Result<Amount, MoneyError> {
    let a = i128::from(amount.minor());
    // rate = m / 10^s, so the factor is m_to × 10^s_from / (m_from × 10^s_to).
    let num = a
        .checked_mul(pow10(u32::from(to.exponent()))?)
        .and_then(|x| x.checked_mul(i128::from(to_rate.mantissa)))
        .and_then(|x| x.checked_mul(pow10(u32::from(from_rate.scale)).ok()?))
        .ok_or(MoneyError::Overflow)?;
    let den = pow10(u32::from(from.exponent()))?
        .checked_mul(i128::from(from_rate.mantissa))
        .and_then(|x| x.checked_mul(pow10(u32::from(to_rate.scale)).ok()?))
        .ok_or(MoneyError::Overflow)?;
    let (q, r) = (num / den, num % den);
    // Half away from zero: |r| ≥ den/2 moves q one unit away from zero (den > 0).
    let q = if r.unsigned_abs() * 2 >= den.unsigned_abs() { q + num.signum() } else { q };
    i64::try_from(q).map(Amount::from_minor).map_err(|_| MoneyError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cur(code: &str) -> Currency {
        Currency::from_code(code).unwrap()
    }

    fn rate(s: &str) -> Rate {
        Rate::parse(s).unwrap()
    }

    #[test]
    fn rates_parse_exactly_and_print_back() {
        for s in ["1.1172", "175.68", "20275.17", "0.83380", "7.4735", "1", "136.00"] {
            assert_eq!(rate(s).to_string(), s);
        }
        assert_eq!(rate("0.83380"), Rate::new(83380, 5).unwrap());
        for bad in ["", "N/A", "-1.2", "1,2", "0", "0.000", "1.2.3", ".5", "1e3"] {
            assert!(Rate::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn eur_to_quote_and_back() {
        // 100.00 EUR at 1.1172 USD per EUR = 111.72 USD; 111.72 USD back = 100.00 EUR.
        let usd = rate("1.1172");
        assert_eq!(
            convert(Amount::from_minor(10_000), cur("EUR"), Rate::ONE, cur("USD"), usd).unwrap().minor(),
            11_172
        );
        assert_eq!(
            convert(Amount::from_minor(11_172), cur("USD"), usd, cur("EUR"), Rate::ONE).unwrap().minor(),
            10_000
        );
    }

    #[test]
    fn cross_rates_go_through_the_base_in_one_step_and_round_once() {
        // 1,000 JPY → USD at 175.68 JPY/EUR and 1.1172 USD/EUR: 1000 × 100 × 1.1172 / 175.68 = 635.928... → 636 cents.
        let got = convert(Amount::from_minor(1000), cur("JPY"), rate("175.68"), cur("USD"), rate("1.1172")).unwrap();
        assert_eq!(got.minor(), 636);
        // Rounded once: 4 JPY = 400 × 1.1172 / 175.68 = 2.54 → 3 cents. Rounding in EUR first would give
        // 4 / 175.68 = 2.28 → 2 EUR cents → 2.23 → 2 USD cents.
        let four = convert(Amount::from_minor(4), cur("JPY"), rate("175.68"), cur("USD"), rate("1.1172")).unwrap();
        assert_eq!(four.minor(), 3);
        // To a three-decimal currency (BHD has exponent 3) the result keeps its mills.
        let bhd = convert(Amount::from_minor(10_000), cur("EUR"), Rate::ONE, cur("BHD"), rate("0.4213")).unwrap();
        assert_eq!(bhd.minor(), 42_130);
    }

    #[test]
    fn half_away_from_zero_both_signs() {
        // 1 cent EUR at 1.5 → 1.5 cents → 2; a refund of -1 cent → -2.
        let r = rate("1.5");
        assert_eq!(convert(Amount::from_minor(1), cur("EUR"), Rate::ONE, cur("USD"), r).unwrap().minor(), 2);
        assert_eq!(convert(Amount::from_minor(-1), cur("EUR"), Rate::ONE, cur("USD"), r).unwrap().minor(), -2);
        // 1.4999… stays down.
        let r = rate("1.4999");
        assert_eq!(convert(Amount::from_minor(1), cur("EUR"), Rate::ONE, cur("USD"), r).unwrap().minor(), 1);
        assert_eq!(convert(Amount::from_minor(-1), cur("EUR"), Rate::ONE, cur("USD"), r).unwrap().minor(), -1);
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        let huge = Amount::from_minor(i64::MAX);
        assert_eq!(convert(huge, cur("EUR"), Rate::ONE, cur("IDR"), rate("20275.17")), Err(MoneyError::Overflow));
    }
}
