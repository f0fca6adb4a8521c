//! The ECB's euro foreign exchange reference rates, as published: a CSV whose header is `Date` then one column per
//! currency (units of that currency per 1 EUR), a trailing empty column, one row per TARGET business day, newest
//! first, `N/A` where a currency has no rate that day. The daily file (`eurofxref.csv`) writes dates as
//! `30 October 2026` and pads with spaces; the history (`eurofxref-hist.csv`, inside the zip) writes `2026-10-30`.
//!
//! A rate is kept as the exact decimal the ECB printed ([`Rate`]). Lookups give the last rate published on or before
//! a date, no older than a bound: weekends and TARGET holidays are gaps of up to four days, and a currency the ECB
//! stopped publishing (RUB since March 2022) must not be served a years-old rate.

use std::collections::{BTreeMap, BTreeSet};

use tally_money::fx::Rate;
use time::{Date, Month};

use crate::{content_hash, LineError, Refused, MAX_ERRORS};

/// Parsed rates: date → currency code → rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcbRates {
    days: BTreeMap<Date, BTreeMap<String, Rate>>,
    currencies: BTreeSet<String>,
    /// The content hash of the file(s) parsed.
    pub content_hash: String,
    /// Data rows read (days).
    pub rows: usize,
}

/// What a lookup found: the rate and the ECB date it was published for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub date: Date,
    pub rate: Rate,
}

/// Two currencies' rates against EUR on one ECB day: what a conversion between them uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cross {
    pub date: Date,
    /// Units of the source currency per EUR.
    pub from: Rate,
    /// Units of the target currency per EUR.
    pub to: Rate,
}

/// The base currency of every ECB rate.
pub const BASE: &str = "EUR";

fn parse_date(s: &str) -> Option<Date> {
    if let [y, m, d] = s.split('-').collect::<Vec<_>>()[..] {
        let month = Month::try_from(m.parse::<u8>().ok()?).ok()?;
        if y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return None;
        }
        return Date::from_calendar_date(y.parse().ok()?, month, d.parse().ok()?).ok();
    }
    // `30 October 2026`
    if let [d, m, y] = s.split_whitespace().collect::<Vec<_>>()[..] {
        let month = [
            Month::January,
            Month::February,
            Month::March,
            Month::April,
            Month::May,
            Month::June,
            Month::July,
            Month::August,
            Month::September,
            Month::October,
            Month::November,
            Month::December,
        ]
        .into_iter()
        .find(|month| month.to_string() == m)?;
        return Date::from_calendar_date(y.parse().ok()?, month, d.parse().ok()?).ok();
    }
    None
}

impl EcbRates {
    /// Parses one ECB CSV (daily or history). Every malformed line is an error; none is skipped.
    pub fn parse(bytes: &[u8]) -> Result<EcbRates, Refused> {
        let mut errors = Vec::new();
        let err = |line: usize, column: Option<&str>, message: String| LineError {
            line,
            column: column.map(str::to_owned),
            message,
        };
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => t.strip_prefix('\u{feff}').unwrap_or(t),
            Err(e) => return Err(Refused { errors: vec![err(1, None, format!("not UTF-8: {e}"))] }),
        };
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
        let Some((_, header)) = lines.next() else {
            return Err(Refused { errors: vec![err(1, None, "empty file".into())] });
        };
        let mut columns: Vec<String> = header.split(',').map(|c| c.trim().to_owned()).collect();
        // The ECB ends every line with a comma: one empty trailing column.
        if columns.last().is_some_and(String::is_empty) {
            columns.pop();
        }
        if columns.first().map(String::as_str) != Some("Date") {
            return Err(Refused { errors: vec![err(1, None, "the header must start with `Date`".into())] });
        }
        let codes: Vec<String> = columns[1..].to_vec();
        let mut seen = BTreeSet::new();
        for c in &codes {
            if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
                errors.push(err(1, Some(c), "a currency column must be a three-letter code".into()));
            }
            if !seen.insert(c.clone()) {
                errors.push(err(1, Some(c), "currency column given twice".into()));
            }
        }
        let mut days: BTreeMap<Date, BTreeMap<String, Rate>> = BTreeMap::new();
        let mut rows = 0;
        for (n, line) in lines {
            if errors.len() >= MAX_ERRORS {
                break;
            }
            if line.trim().is_empty() {
                continue;
            }
            rows += 1;
            let mut cells: Vec<&str> = line.split(',').map(str::trim).collect();
            if cells.last().is_some_and(|c| c.is_empty()) {
                cells.pop();
            }
            if cells.len() != columns.len() {
                errors.push(err(n, None, format!("{} fields, the header has {}", cells.len(), columns.len())));
                continue;
            }
            let Some(date) = parse_date(cells[0]) else {
                errors.push(err(
                    n,
                    Some("Date"),
                    format!("{:?} is not a date (YYYY-MM-DD or `30 October 2026`)", cells[0]),
                ));
                continue;
            };
            let mut day = BTreeMap::new();
            for (code, cell) in codes.iter().zip(&cells[1..]) {
                if *cell == "N/A" {
                    continue;
                }
                match Rate::parse(cell) {
                    Ok(rate) => {
                        day.insert(code.clone(), rate);
                    }
                    Err(e) => errors.push(err(n, Some(code), e.to_string())),
                }
            }
            if days.insert(date, day).is_some() {
                errors.push(err(n, Some("Date"), format!("{date} appears twice")));
            }
        }
        if rows == 0 && errors.is_empty() {
            errors.push(err(2, None, "no rates in the file".into()));
        }
        if !errors.is_empty() {
            return Err(Refused { errors });
        }
        Ok(EcbRates { days, currencies: codes.into_iter().collect(), content_hash: content_hash(bytes), rows })
    }

    /// Rates as stored (e.g. the union of loaded versions, read back from the database): later entries for the
    /// same day and currency replace earlier ones.
    pub fn from_rates(rates: impl IntoIterator<Item = (Date, String, Rate)>, content_hash: String) -> EcbRates {
        let mut days: BTreeMap<Date, BTreeMap<String, Rate>> = BTreeMap::new();
        let mut currencies = BTreeSet::new();
        for (date, code, rate) in rates {
            currencies.insert(code.clone());
            days.entry(date).or_default().insert(code, rate);
        }
        let rows = days.len();
        EcbRates { days, currencies, content_hash, rows }
    }

    /// The cross of `from` and `to` on the last ECB day on or before `date` (at most `max_age_days` before it) on
    /// which both are published — one day's rates for both legs, never a mix of days. EUR legs are 1.
    pub fn cross_on_or_before(&self, from: &str, to: &str, date: Date, max_age_days: i64) -> Option<Cross> {
        if from == BASE && to == BASE {
            return Some(Cross { date, from: Rate::ONE, to: Rate::ONE });
        }
        let oldest = date - time::Duration::days(max_age_days);
        let leg = |rates: &BTreeMap<String, Rate>, code: &str| {
            if code == BASE {
                Some(Rate::ONE)
            } else {
                rates.get(code).copied()
            }
        };
        self.days
            .range(oldest..=date)
            .rev()
            .find_map(|(d, rates)| Some(Cross { date: *d, from: leg(rates, from)?, to: leg(rates, to)? }))
    }

    /// Every published rate, as (date, currency, rate), by date then currency.
    pub fn all(&self) -> impl Iterator<Item = (Date, &str, Rate)> {
        self.days.iter().flat_map(|(d, rates)| rates.iter().map(move |(c, r)| (*d, c.as_str(), *r)))
    }

    /// The currencies the file has columns for (not all published every day).
    pub fn currencies(&self) -> impl Iterator<Item = &str> {
        self.currencies.iter().map(String::as_str)
    }

    /// The first and last day with rates.
    pub fn span(&self) -> Option<(Date, Date)> {
        Some((*self.days.keys().next()?, *self.days.keys().next_back()?))
    }

    /// The last rate of `code` published on or before `date`, at most `max_age_days` before it. EUR is the base:
    /// always 1, dated `date`. None: no such rate (a currency the ECB does not publish, a date before its series,
    /// or a gap longer than the bound).
    pub fn on_or_before(&self, code: &str, date: Date, max_age_days: i64) -> Option<Published> {
        if code == BASE {
            return Some(Published { date, rate: Rate::ONE });
        }
        let oldest = date - time::Duration::days(max_age_days);
        self.days
            .range(oldest..=date)
            .rev()
            .find_map(|(d, rates)| rates.get(code).map(|rate| Published { date: *d, rate: *rate }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    const DAILY: &str = "Date, USD, JPY, BGN, \n30 October 2026, 1.1172, 175.68, N/A, \n";

    #[test]
    fn the_daily_file_with_its_spaces_and_long_dates() {
        let r = EcbRates::parse(DAILY.as_bytes()).unwrap();
        assert_eq!(r.rows, 1);
        assert_eq!(r.currencies().collect::<Vec<_>>(), ["BGN", "JPY", "USD"]);
        let usd = r.on_or_before("USD", date!(2026 - 10 - 30), 4).unwrap();
        assert_eq!((usd.date, usd.rate.to_string()), (date!(2026 - 10 - 30), "1.1172".to_owned()));
        assert_eq!(r.on_or_before("BGN", date!(2026 - 10 - 30), 4), None, "N/A is no rate");
        assert_eq!(r.on_or_before("EUR", date!(2026 - 11 - 02), 4).unwrap().rate, Rate::ONE);
        assert_eq!(r.content_hash, content_hash(DAILY.as_bytes()));
    }

    #[test]
    fn a_weekend_takes_fridays_rate_and_a_stale_series_none() {
        let csv = "Date,USD,RUB,\n2026-10-30,1.1172,N/A,\n2026-10-29,1.113,N/A,\n2022-03-01,1.1,117.5,\n";
        let r = EcbRates::parse(csv.as_bytes()).unwrap();
        // Saturday and Sunday: Friday's rate.
        assert_eq!(r.on_or_before("USD", date!(2026 - 11 - 01), 4).unwrap().date, date!(2026 - 10 - 30));
        // Before the series: nothing.
        assert_eq!(r.on_or_before("USD", date!(2022 - 02 - 28), 4), None);
        // RUB's last rate is years old: nothing, not a stale rate.
        assert_eq!(r.on_or_before("RUB", date!(2026 - 10 - 30), 4), None);
        assert_eq!(r.on_or_before("RUB", date!(2022 - 03 - 03), 4).unwrap().rate.to_string(), "117.5");
        // A currency the ECB does not publish at all.
        assert_eq!(r.on_or_before("BHD", date!(2026 - 10 - 30), 4), None);
    }

    #[test]
    fn every_malformed_line_is_refused_with_line_and_column() {
        let csv = "Date,USD,JPY,\n2026-10-30,1.1172,abc,\n2026-13-01,1.1,1.2,\n2026-10-28,1.1,\n2026-10-27,1.1,-3,\n2026-10-27,1.1,1.2,\n";
        let e = EcbRates::parse(csv.as_bytes()).unwrap_err().errors;
        let at: Vec<(usize, Option<&str>)> = e.iter().map(|e| (e.line, e.column.as_deref())).collect();
        assert_eq!(at, [(2, Some("JPY")), (3, Some("Date")), (4, None), (5, Some("JPY")), (6, Some("Date"))], "{e:?}");
        assert!(EcbRates::parse(b"Day,USD,\n").is_err());
        assert!(EcbRates::parse(b"Date,USD,\n").is_err(), "no rows");
        assert!(EcbRates::parse(b"Date,usd,\n2026-10-30,1.1,\n").is_err(), "not a code");
        assert!(EcbRates::parse(&[0xff, 0xfe]).is_err());
    }
}
