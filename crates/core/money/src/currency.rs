use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::iso4217_table::TABLE;

/// Currencies PSPs settle in that ISO 4217 does not list: (code, numeric (none), minor units, name).
/// CNH is offshore renminbi, which Adyen and others process with 2 decimals.
const EXTENSIONS: &[(&str, u16, u8, &str)] = &[("CNH", 0, 2, "Chinese Yuan Renminbi (offshore)")];
use crate::MoneyError;

/// An ISO 4217 currency that has minor units. Cheap to copy; compares by code.
///
/// Internally an index into the compiled-in ISO 4217 table, so the exponent lookup is an array access.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency(u16);

/// Whose idea of a currency's exponent applies to an amount on the wire.
///
/// Tally stores every amount in ISO 4217 minor units. Some PSPs put amounts on the wire with a different exponent;
/// the normaliser rescales them with [`crate::rescale`] before they become [`crate::Money`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExponentScheme {
    /// ISO 4217 List One.
    Iso4217,
    /// Stripe (docs.stripe.com/currencies): its zero-decimal list (BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND
    /// VUV XAF XOF XPF) and three-decimal list (BHD JOD KWD OMR TND) agree with ISO 4217 except MGA, which Stripe
    /// treats as zero-decimal (ISO: 2); and ISK, zero-decimal in ISO but kept at two decimals on Stripe's API for
    /// backwards compatibility (`100` = 1 króna). HUF and TWD quirks are about allowed values, not the exponent.
    Stripe,
    /// Adyen (docs.adyen.com/development-resources/currency-codes: "for CLP, CVE, IDR and ISK the standard has a
    /// different number of decimals"): CLP 2 (ISO 0), CVE 0 (ISO 2), IDR 0 (ISO 2), ISK 2 (ISO 0).
    Adyen,
}

/// Where a PSP's wire exponent differs from ISO 4217: (scheme, code, the PSP's exponent).
const WIRE_EXPONENTS: &[(ExponentScheme, &str, u8)] = &[
    (ExponentScheme::Stripe, "ISK", 2),
    (ExponentScheme::Stripe, "MGA", 0),
    (ExponentScheme::Adyen, "CLP", 2),
    (ExponentScheme::Adyen, "CVE", 0),
    (ExponentScheme::Adyen, "IDR", 0),
    (ExponentScheme::Adyen, "ISK", 2),
];

impl Currency {
    /// Looks a currency up by its alphabetic code. Case-insensitive, because Stripe sends `usd`.
    pub fn from_code(code: &str) -> Result<Self, MoneyError> {
        let upper = code.to_ascii_uppercase();
        if let Ok(i) = TABLE.binary_search_by(|(c, ..)| (*c).cmp(upper.as_str())) {
            return Ok(Currency(i as u16));
        }
        EXTENSIONS
            .iter()
            .position(|(c, ..)| *c == upper)
            .map(|i| Currency((TABLE.len() + i) as u16))
            .ok_or_else(|| MoneyError::UnknownCurrency(code.to_owned()))
    }

    fn entry(self) -> &'static (&'static str, u16, u8, &'static str) {
        let i = self.0 as usize;
        TABLE.get(i).unwrap_or_else(|| &EXTENSIONS[i - TABLE.len()])
    }

    /// Whether ISO 4217 lists the currency (false for PSP extensions such as CNH).
    pub fn is_iso(self) -> bool {
        (self.0 as usize) < TABLE.len()
    }

    /// The alphabetic code, e.g. `"EUR"`.
    pub fn code(self) -> &'static str {
        self.entry().0
    }

    /// The ISO 4217 numeric code, e.g. 978 for EUR (0 for extensions).
    pub fn numeric(self) -> u16 {
        self.entry().1
    }

    /// Minor units (ISO 4217 for ISO currencies): the decimal places between a major and a minor unit.
    pub fn exponent(self) -> u8 {
        self.entry().2
    }

    /// The exponent that `scheme` uses on the wire for this currency.
    pub fn exponent_in(self, scheme: ExponentScheme) -> u8 {
        WIRE_EXPONENTS
            .iter()
            .find(|(s, code, _)| *s == scheme && *code == self.code())
            .map_or(self.exponent(), |(_, _, e)| *e)
    }

    /// The ISO name, e.g. `"Euro"`.
    pub fn name(self) -> &'static str {
        self.entry().3
    }

    /// Every ISO 4217 currency with minor units, in code order (extensions excluded).
    pub fn all() -> impl Iterator<Item = Currency> {
        (0..TABLE.len()).map(|i| Currency(i as u16))
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl std::str::FromStr for Currency {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::from_code(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Currency::from_code(&code).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_is_case_insensitive_and_rejects_unknown_codes() {
        assert_eq!(Currency::from_code("usd").unwrap().code(), "USD");
        assert_eq!(Currency::from_code("JPY").unwrap().exponent(), 0);
        assert_eq!(Currency::from_code("BHD").unwrap().exponent(), 3);
        assert!(matches!(Currency::from_code("XAU"), Err(MoneyError::UnknownCurrency(_))));
        assert!(matches!(Currency::from_code("EURO"), Err(MoneyError::UnknownCurrency(_))));
        assert!(matches!(Currency::from_code(""), Err(MoneyError::UnknownCurrency(_))));
    }

    fn differing(scheme: ExponentScheme) -> Vec<(&'static str, u8, u8)> {
        Currency::all()
            .filter(|c| c.exponent_in(scheme) != c.exponent())
            .map(|c| (c.code(), c.exponent(), c.exponent_in(scheme)))
            .collect()
    }

    #[test]
    fn adyen_differs_from_iso_exactly_where_its_currency_page_says() {
        // (code, ISO, Adyen): one row per currency Adyen names.
        assert_eq!(differing(ExponentScheme::Adyen), vec![("CLP", 0, 2), ("CVE", 2, 0), ("IDR", 2, 0), ("ISK", 0, 2)]);
    }

    #[test]
    fn stripe_differs_from_iso_for_isk_and_mga_only() {
        assert_eq!(differing(ExponentScheme::Stripe), vec![("ISK", 0, 2), ("MGA", 2, 0)]);
        // Stripe's published lists, checked one by one against the scheme.
        let zero = ["BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV", "XAF"];
        for code in zero.into_iter().chain(["XOF", "XPF"]) {
            assert_eq!(Currency::from_code(code).unwrap().exponent_in(ExponentScheme::Stripe), 0, "{code}");
        }
        for code in ["BHD", "JOD", "KWD", "OMR", "TND"] {
            assert_eq!(Currency::from_code(code).unwrap().exponent_in(ExponentScheme::Stripe), 3, "{code}");
        }
        assert!(differing(ExponentScheme::Iso4217).is_empty());
    }

    #[test]
    fn psp_extensions_are_known_but_not_iso() {
        let cnh = Currency::from_code("cnh").unwrap();
        assert_eq!((cnh.code(), cnh.exponent(), cnh.is_iso()), ("CNH", 2, false));
        assert!(Currency::from_code("CNY").unwrap().is_iso());
        assert!(Currency::all().all(|c| c.is_iso()));
        assert_ne!(cnh, Currency::from_code("CNY").unwrap());
    }

    #[test]
    fn serde_round_trips_as_the_code() {
        let eur = Currency::from_code("EUR").unwrap();
        assert_eq!(serde_json::to_string(&eur).unwrap(), "\"EUR\"");
        assert_eq!(serde_json::from_str::<Currency>("\"eur\"").unwrap(), eur);
        assert!(serde_json::from_str::<Currency>("\"ZZZ\"").is_err());
    }
}
