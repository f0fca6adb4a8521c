//! Money for Tally: an [`Amount`] is a signed count of a currency's *minor units* (cents, yen, fils) held in an
//! `i64`, and [`Money`] is an amount with its [`Currency`]. There are no floats anywhere in this crate, every
//! arithmetic operation is checked, and amounts of different currencies never mix silently.
//!
//! The crate is pure: it does no I/O and never reads the clock or a random source.

mod amount;
mod currency;
mod decimal;
pub mod fx;
mod iso4217_table;

pub use amount::{Amount, Money};
pub use currency::{Currency, ExponentScheme};
pub use decimal::{parse_major, parse_major_in, rescale, DecimalSeparator};

/// Everything that can go wrong with money.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("unknown currency code {0:?} (not in ISO 4217 List One with minor units)")]
    UnknownCurrency(String),
    #[error("arithmetic overflow on amounts")]
    Overflow,
    #[error("currency mismatch: {left} vs {right}")]
    CurrencyMismatch { left: Currency, right: Currency },
    #[error("malformed decimal amount {input:?}: {why}")]
    MalformedDecimal { input: String, why: &'static str },
    #[error("{input:?} has more precision than {currency} allows ({exponent} decimal places)")]
    ExcessPrecision { input: String, currency: Currency, exponent: u8 },
    #[error("{value} cannot be rescaled from exponent {from} to {to} without losing precision")]
    InexactRescale { value: i64, from: u8, to: u8 },
}
