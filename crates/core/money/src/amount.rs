use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Currency, MoneyError};

/// A signed number of minor units. Arithmetic is checked: overflow is an error, never a wrap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Amount(i64);

impl Amount {
    pub const ZERO: Amount = Amount(0);

    pub const fn from_minor(minor: i64) -> Self {
        Amount(minor)
    }

    pub const fn minor(self) -> i64 {
        self.0
    }

    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    pub fn checked_add(self, other: Amount) -> Result<Amount, MoneyError> {
        self.0.checked_add(other.0).map(Amount).ok_or(MoneyError::Overflow)
    }

    pub fn checked_sub(self, other: Amount) -> Result<Amount, MoneyError> {
        self.0.checked_sub(other.0).map(Amount).ok_or(MoneyError::Overflow)
    }

    pub fn checked_neg(self) -> Result<Amount, MoneyError> {
        self.0.checked_neg().map(Amount).ok_or(MoneyError::Overflow)
    }

    /// Sums amounts, failing on overflow.
    pub fn checked_sum<I: IntoIterator<Item = Amount>>(items: I) -> Result<Amount, MoneyError> {
        items.into_iter().try_fold(Amount::ZERO, Amount::checked_add)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An amount with its currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub amount: Amount,
    pub currency: Currency,
}

impl Money {
    pub const fn new(amount: Amount, currency: Currency) -> Self {
        Money { amount, currency }
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        Ok(Money::new(self.amount.checked_add(other.amount)?, self.currency))
    }

    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        Ok(Money::new(self.amount.checked_sub(other.amount)?, self.currency))
    }

    fn same_currency(self, other: Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch { left: self.currency, right: other.currency })
        }
    }
}

/// Renders in major units with the currency's exponent, e.g. `12.34 EUR`, `1234 JPY`, `-0.050 BHD`.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exp = u32::from(self.currency.exponent());
        let minor = self.amount.minor();
        let sign = if minor < 0 { "-" } else { "" };
        let abs = minor.unsigned_abs();
        if exp == 0 {
            return write!(f, "{sign}{abs} {}", self.currency);
        }
        let scale = 10u64.pow(exp);
        write!(f, "{sign}{}.{:0width$} {}", abs / scale, abs % scale, self.currency, width = exp as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cur(code: &str) -> Currency {
        Currency::from_code(code).unwrap()
    }

    #[test]
    fn checked_arithmetic_reports_overflow() {
        assert_eq!(Amount::from_minor(i64::MAX).checked_add(Amount::from_minor(1)), Err(MoneyError::Overflow));
        assert_eq!(Amount::from_minor(i64::MIN).checked_sub(Amount::from_minor(1)), Err(MoneyError::Overflow));
        assert_eq!(Amount::from_minor(i64::MIN).checked_neg(), Err(MoneyError::Overflow));
        assert_eq!(Amount::from_minor(2).checked_sub(Amount::from_minor(5)), Ok(Amount::from_minor(-3)));
        assert_eq!(Amount::checked_sum([1, 2, 3].map(Amount::from_minor)), Ok(Amount::from_minor(6)));
    }

    #[test]
    fn money_refuses_to_mix_currencies() {
        let a = Money::new(Amount::from_minor(100), cur("EUR"));
        let b = Money::new(Amount::from_minor(100), cur("USD"));
        assert!(matches!(a.checked_add(b), Err(MoneyError::CurrencyMismatch { .. })));
        assert_eq!(a.checked_add(a).unwrap().amount.minor(), 200);
    }

    #[test]
    fn display_uses_the_currency_exponent() {
        assert_eq!(Money::new(Amount::from_minor(1234), cur("EUR")).to_string(), "12.34 EUR");
        assert_eq!(Money::new(Amount::from_minor(-5), cur("EUR")).to_string(), "-0.05 EUR");
        assert_eq!(Money::new(Amount::from_minor(1234), cur("JPY")).to_string(), "1234 JPY");
        assert_eq!(Money::new(Amount::from_minor(-50), cur("BHD")).to_string(), "-0.050 BHD");
        assert_eq!(Money::new(Amount::from_minor(i64::MIN), cur("USD")).to_string(), "-92233720368547758.08 USD");
    }
}
