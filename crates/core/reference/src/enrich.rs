//! Enrichment (DESIGN §11): what the reference data says about one fact — the merchant version valid at its event
//! time, and its amounts in the reporting currency. Never guessed: a merchant the dimension does not know, or a
//! currency pair without an ECB rate close enough to the event, is `None` here and a flag on the row, which is
//! enriched again once a reference version resolves it.
//!
//! The state is the reference data *as of* a pair of version ids (the merchants load and the FX load it includes up
//! to); the row names them, so that enriching again with the same versions gives the same row (I5).

use std::collections::HashMap;

use tally_money::fx::{convert, Rate};
use tally_money::{Amount, Currency, Money, MoneyError};
use time::Date;

use crate::ecb::EcbRates;
use crate::merchants::MerchantVersion;

/// The merchant dimension indexed by merchant, each merchant's versions by `valid_from`.
#[derive(Debug, Clone, Default)]
pub struct MerchantIndex {
    by_id: HashMap<String, Vec<MerchantVersion>>,
    versions: usize,
}

impl MerchantIndex {
    pub fn new(versions: impl IntoIterator<Item = MerchantVersion>) -> MerchantIndex {
        let mut by_id: HashMap<String, Vec<MerchantVersion>> = HashMap::new();
        let mut n = 0;
        for v in versions {
            n += 1;
            by_id.entry(v.merchant_id.clone()).or_default().push(v);
        }
        for list in by_id.values_mut() {
            list.sort_by_key(|v| v.valid_from);
        }
        MerchantIndex { by_id, versions: n }
    }

    /// The version of `merchant_id` valid at `day` (half-open: a version that starts that day is the one).
    pub fn as_of(&self, merchant_id: &str, day: Date) -> Option<&MerchantVersion> {
        let list = self.by_id.get(merchant_id)?;
        // The last version starting on or before the day, if it has not ended by then.
        let i = list.partition_point(|v| v.valid_from <= day);
        list[..i].last().filter(|v| v.valid_at(day))
    }

    /// Versions held.
    pub fn len(&self) -> usize {
        self.versions
    }

    pub fn is_empty(&self) -> bool {
        self.versions == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &MerchantVersion> {
        self.by_id.values().flatten()
    }
}

/// The reference data an enrichment reads, and the versions that name it.
#[derive(Debug, Clone)]
pub struct Reference {
    pub merchants: MerchantIndex,
    /// The last merchants load included (None: no dimension loaded yet).
    pub merchants_version: Option<i64>,
    pub fx: EcbRates,
    /// The last FX load included.
    pub fx_version: Option<i64>,
    /// The currency every amount is also stated in.
    pub reporting: Currency,
    /// How old the last ECB rate may be (weekends and TARGET holidays are gaps of up to four days).
    pub fx_max_age_days: i64,
}

/// An amount stated in the reporting currency, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Converted {
    pub amount: Amount,
    pub fee: Option<Amount>,
    /// The ECB day whose rates were used.
    pub rate_date: Date,
    /// Units of the fact's currency per EUR, as published.
    pub from_rate: Rate,
    /// Units of the reporting currency per EUR, as published.
    pub to_rate: Rate,
}

/// What the reference data says about one fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrichment<'a> {
    /// None: the dimension does not know the merchant at that day (`merchant_unknown`).
    pub merchant: Option<&'a MerchantVersion>,
    /// None: no rate for the pair close enough to the event (`fx_unavailable`).
    pub reporting: Option<Converted>,
}

impl Reference {
    /// An empty state: nothing loaded, every fact flagged.
    pub fn empty(reporting: Currency, fx_max_age_days: i64) -> Reference {
        Reference {
            merchants: MerchantIndex::default(),
            merchants_version: None,
            fx: EcbRates::from_rates([], String::new()),
            fx_version: None,
            reporting,
            fx_max_age_days,
        }
    }

    /// Enriches a fact of `merchant_id` that happened on UTC day `day`, moving `money` (and `fee`, in the same
    /// currency). An amount too large to convert is an error, not a flag: it cannot be made right by reference data.
    pub fn enrich(
        &self,
        merchant_id: &str,
        day: Date,
        money: Money,
        fee: Option<Amount>,
    ) -> Result<Enrichment<'_>, MoneyError> {
        let merchant = self.merchants.as_of(merchant_id, day);
        let (from, to) = (money.currency, self.reporting);
        let reporting = match self.fx.cross_on_or_before(from.code(), to.code(), day, self.fx_max_age_days) {
            None => None,
            Some(cross) => {
                let conv = |a: Amount| convert(a, from, cross.from, to, cross.to);
                Some(Converted {
                    amount: conv(money.amount)?,
                    fee: fee.map(conv).transpose()?,
                    rate_date: cross.date,
                    from_rate: cross.from,
                    to_rate: cross.to,
                })
            }
        };
        Ok(Enrichment { merchant, reporting })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merchants::Price;
    use time::macros::date;

    fn version(id: &str, from: Date, to: Option<Date>, tier: &str) -> MerchantVersion {
        MerchantVersion {
            merchant_id: id.into(),
            valid_from: from,
            valid_to: to,
            legal_name: format!("{id} Ltd"),
            country: "DE".into(),
            mcc: "5812".into(),
            settlement_currency: Currency::from_code("EUR").unwrap(),
            risk_tier: tier.into(),
            stripe: Price { ppm: 14_000, fixed_minor: 25 },
            adyen: Price { ppm: 12_000, fixed_minor: 11 },
        }
    }

    fn money(minor: i64, code: &str) -> Money {
        Money::new(Amount::from_minor(minor), Currency::from_code(code).unwrap())
    }

    fn reference(csv: &str) -> Reference {
        Reference {
            merchants: MerchantIndex::new([
                version("m1", date!(2026 - 01 - 01), Some(date!(2026 - 06 - 01)), "low"),
                version("m1", date!(2026 - 06 - 01), None, "high"),
                version("m2", date!(2026 - 03 - 01), Some(date!(2026 - 04 - 01)), "low"),
            ]),
            merchants_version: Some(1),
            fx: EcbRates::parse(csv.as_bytes()).unwrap(),
            fx_version: Some(2),
            reporting: Currency::from_code("EUR").unwrap(),
            fx_max_age_days: 7,
        }
    }

    const RATES: &str = "Date,USD,JPY,GBP,\n2026-06-01,1.1000,170.00,0.8500,\n2026-05-29,1.2000,N/A,0.8600,\n";

    #[test]
    fn the_version_starting_on_the_day_is_the_one_and_ended_versions_end() {
        let r = reference(RATES);
        let tier = |id: &str, day: Date| r.merchants.as_of(id, day).map(|v| v.risk_tier.as_str());
        assert_eq!(tier("m1", date!(2026 - 05 - 31)), Some("low"));
        assert_eq!(tier("m1", date!(2026 - 06 - 01)), Some("high"), "valid_from is inclusive");
        assert_eq!(tier("m1", date!(2025 - 12 - 31)), None, "before the first version");
        assert_eq!(tier("m2", date!(2026 - 04 - 01)), None, "valid_to is exclusive, and nothing follows");
        assert_eq!(tier("m3", date!(2026 - 04 - 01)), None);
        assert_eq!(r.merchants.len(), 3);
    }

    #[test]
    fn a_weekend_takes_fridays_rates_for_both_legs_of_a_cross() {
        let r = reference(RATES);
        // Sunday 2026-05-31: Friday 2026-05-29's rates. 10.00 USD = 10 / 1.2 EUR = 8.333… → 8.33.
        let e = r.enrich("m1", date!(2026 - 05 - 31), money(1000, "USD"), Some(Amount::from_minor(30))).unwrap();
        let c = e.reporting.unwrap();
        assert_eq!((c.rate_date, c.amount.minor(), c.fee.map(Amount::minor)), (date!(2026 - 05 - 29), 833, Some(25)));
        assert_eq!(e.merchant.unwrap().risk_tier, "low");
        // JPY has no rate on 2026-05-29: a JPY fact on the Sunday takes no rate from another day's leg.
        let mut r = reference(RATES);
        r.reporting = Currency::from_code("GBP").unwrap();
        assert_eq!(r.enrich("m1", date!(2026 - 05 - 31), money(1000, "JPY"), None).unwrap().reporting, None);
        // On the Monday both legs are there: 1,000 JPY × 0.85 / 170 = 5.00 GBP.
        let c = r.enrich("m1", date!(2026 - 06 - 01), money(1000, "JPY"), None).unwrap().reporting.unwrap();
        assert_eq!(
            (c.amount.minor(), c.from_rate.to_string(), c.to_rate.to_string()),
            (500, "170.00".into(), "0.8500".into())
        );
    }

    #[test]
    fn unknown_currencies_and_stale_rates_are_none_and_eur_is_itself() {
        let r = reference(RATES);
        assert_eq!(r.enrich("m1", date!(2026 - 06 - 02), money(1000, "BHD"), None).unwrap().reporting, None);
        assert_eq!(r.enrich("m1", date!(2026 - 06 - 20), money(1000, "USD"), None).unwrap().reporting, None, "stale");
        let c = r.enrich("m9", date!(2030 - 01 - 01), money(1234, "EUR"), None).unwrap();
        assert_eq!((c.merchant, c.reporting.map(|c| c.amount.minor())), (None, Some(1234)));
        let empty = Reference::empty(Currency::from_code("EUR").unwrap(), 7);
        assert_eq!(empty.enrich("m1", date!(2026 - 06 - 01), money(1, "USD"), None).unwrap().reporting, None);
    }
}
