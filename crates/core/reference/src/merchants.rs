//! The merchant dimension (SCD type 2): each version of a merchant's attributes with its half-open validity
//! `[valid_from, valid_to)` (no `valid_to`: current). A file is CSV with a header, columns by name:
//!
//! | column | meaning |
//! |---|---|
//! | `merchant_id` | the PSP account id the events carry |
//! | `valid_from`, `valid_to` | `YYYY-MM-DD`, UTC; `valid_to` empty for the current version |
//! | `legal_name`, `country` (ISO 3166 alpha-2), `mcc` (ISO 18245), `settlement_currency` (ISO 4217) | |
//! | `risk_tier` | `low`, `medium`, `high` |
//! | `stripe_percent`, `stripe_fixed_minor`, `adyen_percent`, `adyen_fixed_minor` | the pricing plan per PSP: a percentage (up to 4 decimals) plus a fixed fee in the settlement currency's minor units |
//!
//! Every column is required and no other is accepted (a misspelt column must not be ignored); every error names
//! its line and column. [`merge`] applies a loaded file to the current dimension: a version that starts after a
//! merchant's current one closes it and opens the new one; history is never rewritten (a correction is a new
//! version).

use std::collections::{BTreeMap, BTreeSet};

use tally_money::Currency;
use time::Date;

use crate::{content_hash, LineError, Refused, MAX_ERRORS};

const MCC_LIST: &str = include_str!("../../../../../shared/fixtures/data/iso18245/iso18245_official_list.csv");

pub const COLUMNS: [&str; 12] = [
    "merchant_id",
    "valid_from",
    "valid_to",
    "legal_name",
    "country",
    "mcc",
    "settlement_currency",
    "risk_tier",
    "stripe_percent",
    "stripe_fixed_minor",
    "adyen_percent",
    "adyen_fixed_minor",
];

/// A PSP's price: `ppm` parts per million of the amount (2.9 % = 29,000) plus a fixed fee in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Price {
    pub ppm: u32,
    pub fixed_minor: i64,
}

/// One version of a merchant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MerchantVersion {
    pub merchant_id: String,
    pub valid_from: Date,
    pub valid_to: Option<Date>,
    pub legal_name: String,
    pub country: String,
    pub mcc: String,
    pub settlement_currency: Currency,
    pub risk_tier: String,
    pub stripe: Price,
    pub adyen: Price,
}

impl MerchantVersion {
    /// Whether the version is valid at `day` (half-open: a version starting that day is the one).
    pub fn valid_at(&self, day: Date) -> bool {
        self.valid_from <= day && self.valid_to.is_none_or(|to| day < to)
    }

    fn same_attributes(&self, other: &MerchantVersion) -> bool {
        (&self.legal_name, &self.country, &self.mcc, self.settlement_currency, &self.risk_tier, self.stripe, self.adyen)
            == (
                &other.legal_name,
                &other.country,
                &other.mcc,
                other.settlement_currency,
                &other.risk_tier,
                other.stripe,
                other.adyen,
            )
    }
}

/// A parsed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantDimension {
    pub versions: Vec<MerchantVersion>,
    pub content_hash: String,
}

fn date(s: &str) -> Option<Date> {
    let [y, m, d] = s.split('-').collect::<Vec<_>>()[..] else { return None };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let month = time::Month::try_from(m.parse::<u8>().ok()?).ok()?;
    Date::from_calendar_date(y.parse().ok()?, month, d.parse().ok()?).ok()
}

/// A percentage with at most 4 decimals, 0 to 100, as parts per million.
fn percent(s: &str) -> Option<u32> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() || frac.len() > 4 || !whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ppm = whole.parse::<u32>().ok()?.checked_mul(10_000)?.checked_add(format!("{frac:0<4}").parse().ok()?)?;
    (ppm <= 1_000_000).then_some(ppm)
}

/// Splits one CSV line: fields separated by commas, a field in double quotes may hold commas and `""`.
fn fields(line: &str) -> Result<Vec<String>, &'static str> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cur.push(c),
            (false, '"') if cur.is_empty() && !was_quoted => {
                quoted = true;
                was_quoted = true;
            }
            (false, '"') => return Err("a quote inside an unquoted field"),
            (false, ',') => {
                out.push(std::mem::take(&mut cur));
                was_quoted = false;
            }
            (false, c) => cur.push(c),
        }
    }
    if quoted {
        return Err("an unterminated quoted field");
    }
    out.push(cur);
    Ok(out)
}

impl MerchantDimension {
    pub fn parse(bytes: &[u8]) -> Result<MerchantDimension, Refused> {
        let err = |line: usize, column: Option<&str>, message: String| LineError {
            line,
            column: column.map(str::to_owned),
            message,
        };
        let text = std::str::from_utf8(bytes)
            .map_err(|e| Refused { errors: vec![err(1, None, format!("not UTF-8: {e}"))] })?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end_matches('\r')));
        let Some((_, header)) = lines.next() else {
            return Err(Refused { errors: vec![err(1, None, "empty file".into())] });
        };
        let header = fields(header).map_err(|e| Refused { errors: vec![err(1, None, e.into())] })?;
        let mut errors = Vec::new();
        let mut index = BTreeMap::new();
        for (i, h) in header.iter().enumerate() {
            if !COLUMNS.contains(&h.as_str()) {
                errors.push(err(1, Some(h), format!("unknown column (the columns are: {})", COLUMNS.join(", "))));
            } else if index.insert(h.as_str(), i).is_some() {
                errors.push(err(1, Some(h), "column given twice".into()));
            }
        }
        for c in COLUMNS {
            if !index.contains_key(c) {
                errors.push(err(1, Some(c), "required column missing".into()));
            }
        }
        if !errors.is_empty() {
            return Err(Refused { errors });
        }
        let mccs: BTreeSet<&str> = MCC_LIST.lines().skip(1).filter_map(|l| l.split(',').next()).collect();
        let mut versions = Vec::new();
        for (n, line) in lines {
            if errors.len() >= MAX_ERRORS {
                break;
            }
            if line.trim().is_empty() {
                continue;
            }
            let cells = match fields(line) {
                Ok(c) if c.len() == header.len() => c,
                Ok(c) => {
                    errors.push(err(n, None, format!("{} fields, the header has {}", c.len(), header.len())));
                    continue;
                }
                Err(e) => {
                    errors.push(err(n, None, e.into()));
                    continue;
                }
            };
            let before = errors.len();
            let get = |c: &'static str| cells[index[c]].trim().to_owned();
            let (id, from, to, name, country, mcc, currency, tier) = (
                get("merchant_id"),
                get("valid_from"),
                get("valid_to"),
                get("legal_name"),
                get("country"),
                get("mcc"),
                get("settlement_currency"),
                get("risk_tier"),
            );
            let mut bad = |c: &str, m: String| errors.push(err(n, Some(c), m));
            if id.is_empty() {
                bad("merchant_id", "empty".into());
            }
            let valid_from = date(&from);
            if valid_from.is_none() {
                bad("valid_from", format!("{from:?} is not a date (YYYY-MM-DD)"));
            }
            let valid_to = if to.is_empty() { Some(None) } else { date(&to).map(Some) };
            if valid_to.is_none() {
                bad("valid_to", format!("{to:?} is not a date (YYYY-MM-DD) or empty"));
            }
            if let (Some(f), Some(Some(t))) = (valid_from, valid_to) {
                if t <= f {
                    bad("valid_to", format!("{t} is not after valid_from {f} (validity is half-open)"));
                }
            }
            if name.is_empty() {
                bad("legal_name", "empty".into());
            }
            if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
                bad("country", format!("{country:?} is not an ISO 3166 alpha-2 code"));
            }
            if !mccs.contains(mcc.as_str()) {
                bad("mcc", format!("{mcc:?} is not in the ISO 18245 list"));
            }
            let settlement_currency = Currency::from_code(&currency).ok().filter(|c| c.is_iso());
            if settlement_currency.is_none() {
                bad("settlement_currency", format!("{currency:?} is not an ISO 4217 currency"));
            }
            if !["low", "medium", "high"].contains(&tier.as_str()) {
                bad("risk_tier", format!("{tier:?} is not low, medium or high"));
            }
            let mut price = |psp: &str| {
                let (pc, fc) = (format!("{psp}_percent"), format!("{psp}_fixed_minor"));
                let (p, f) = (cells[index[pc.as_str()]].trim(), cells[index[fc.as_str()]].trim());
                let ppm = percent(p);
                if ppm.is_none() {
                    errors.push(err(n, Some(&pc), format!("{p:?} is not a percentage (0–100, up to 4 decimals)")));
                }
                let fixed = f.parse::<i64>().ok().filter(|f| *f >= 0);
                if fixed.is_none() {
                    errors.push(err(n, Some(&fc), format!("{f:?} is not a non-negative integer of minor units")));
                }
                Some(Price { ppm: ppm?, fixed_minor: fixed? })
            };
            let (stripe, adyen) = (price("stripe"), price("adyen"));
            if errors.len() > before {
                continue;
            }
            if let (Some(valid_from), Some(valid_to), Some(settlement_currency), Some(stripe), Some(adyen)) =
                (valid_from, valid_to, settlement_currency, stripe, adyen)
            {
                versions.push((
                    n,
                    MerchantVersion {
                        merchant_id: id,
                        valid_from,
                        valid_to,
                        legal_name: name,
                        country,
                        mcc,
                        settlement_currency,
                        risk_tier: tier,
                        stripe,
                        adyen,
                    },
                ));
            }
        }
        // Per merchant: versions must not overlap, and at most one may be open (and it must be the last).
        let mut by_merchant: BTreeMap<&str, Vec<(usize, &MerchantVersion)>> = BTreeMap::new();
        for (n, v) in &versions {
            by_merchant.entry(&v.merchant_id).or_default().push((*n, v));
        }
        for list in by_merchant.values_mut() {
            list.sort_by_key(|(_, v)| v.valid_from);
            for pair in list.windows(2) {
                let ((_, a), (n, b)) = (pair[0], pair[1]);
                if a.valid_to.is_none_or(|to| to > b.valid_from) {
                    errors.push(err(
                        n,
                        Some("valid_from"),
                        format!(
                            "{}'s version from {} overlaps its version from {}",
                            b.merchant_id, b.valid_from, a.valid_from
                        ),
                    ));
                }
            }
        }
        if versions.is_empty() && errors.is_empty() {
            errors.push(err(2, None, "no merchants in the file".into()));
        }
        if !errors.is_empty() {
            errors.sort_by_key(|e| e.line);
            return Err(Refused { errors });
        }
        Ok(MerchantDimension {
            versions: versions.into_iter().map(|(_, v)| v).collect(),
            content_hash: content_hash(bytes),
        })
    }
}

/// What applying a file does to the dimension.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// A new version.
    Open(MerchantVersion),
    /// The current version of `merchant_id` that started at `valid_from` ends at `valid_to`.
    Close { merchant_id: String, valid_from: Date, valid_to: Date },
}

/// Applies `file` to the `current` dimension: versions already there (same start, same attributes) change nothing;
/// a version starting after a merchant's current one closes it at that day and opens; a new merchant's versions
/// open. Anything that would rewrite history — other attributes for an existing version, a version inside or
/// before an existing one — is refused, with the merchant and the dates.
pub fn merge(current: &[MerchantVersion], file: &MerchantDimension) -> Result<Vec<Change>, Vec<String>> {
    let mut by_merchant: BTreeMap<&str, Vec<&MerchantVersion>> = BTreeMap::new();
    for v in current {
        by_merchant.entry(&v.merchant_id).or_default().push(v);
    }
    let (mut changes, mut refused) = (Vec::new(), Vec::new());
    let mut incoming: Vec<&MerchantVersion> = file.versions.iter().collect();
    incoming.sort_by(|a, b| (&a.merchant_id, a.valid_from).cmp(&(&b.merchant_id, b.valid_from)));
    for v in incoming {
        let known = by_merchant.entry(&v.merchant_id).or_default();
        if let Some(same) = known.iter().find(|k| k.valid_from == v.valid_from) {
            let closes_open = same.valid_to.is_none() && v.valid_to.is_some();
            if !same.same_attributes(v) || (same.valid_to.is_some() && same.valid_to != v.valid_to) {
                refused.push(format!(
                    "{} from {}: differs from the loaded version (history is not rewritten; load a new version)",
                    v.merchant_id, v.valid_from
                ));
            } else if closes_open {
                // The same version, now with an end: the file closes it (its successor follows in the file).
                changes.push(Change::Close {
                    merchant_id: v.merchant_id.clone(),
                    valid_from: v.valid_from,
                    valid_to: v.valid_to.unwrap_or(v.valid_from),
                });
            }
            continue;
        }
        let open = known.iter().find(|k| k.valid_to.is_none()).copied();
        let latest_end = known.iter().filter_map(|k| k.valid_to).max();
        match open {
            Some(o) if v.valid_from > o.valid_from => {
                let already_closed = changes.iter().any(|c| {
                    matches!(c, Change::Close { merchant_id, valid_from, .. }
                        if *merchant_id == o.merchant_id && *valid_from == o.valid_from)
                });
                if !already_closed {
                    changes.push(Change::Close {
                        merchant_id: o.merchant_id.clone(),
                        valid_from: o.valid_from,
                        valid_to: v.valid_from,
                    });
                }
                changes.push(Change::Open(v.clone()));
            }
            Some(o) => refused.push(format!(
                "{} from {}: starts before the current version from {} (history is not rewritten)",
                v.merchant_id, v.valid_from, o.valid_from
            )),
            None if latest_end.is_some_and(|end| v.valid_from < end) => refused.push(format!(
                "{} from {}: inside its recorded history (history is not rewritten)",
                v.merchant_id, v.valid_from
            )),
            None => changes.push(Change::Open(v.clone())),
        }
        known.push(v);
    }
    if refused.is_empty() {
        Ok(changes)
    } else {
        Err(refused)
    }
}

/// The version of `merchant_id` valid at `day`, if any.
pub fn as_of<'a>(versions: &'a [MerchantVersion], merchant_id: &str, day: Date) -> Option<&'a MerchantVersion> {
    versions.iter().find(|v| v.merchant_id == merchant_id && v.valid_at(day))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    const HEADER: &str = "merchant_id,valid_from,valid_to,legal_name,country,mcc,settlement_currency,risk_tier,stripe_percent,stripe_fixed_minor,adyen_percent,adyen_fixed_minor";

    fn file(rows: &[&str]) -> Result<MerchantDimension, Refused> {
        MerchantDimension::parse(format!("{HEADER}\n{}\n", rows.join("\n")).as_bytes())
    }

    #[test]
    fn a_file_with_two_versions_parses_and_as_of_is_half_open() {
        let f = file(&[
            "acct_1,2025-01-01,2026-06-01,\"Shop, Inc.\",DE,5411,EUR,low,2.9,30,1.75,10",
            "acct_1,2026-06-01,,\"Shop, Inc.\",DE,5411,EUR,high,2.9,30,1.75,10",
        ])
        .unwrap();
        assert_eq!(f.versions.len(), 2);
        assert_eq!(f.versions[0].legal_name, "Shop, Inc.");
        assert_eq!(f.versions[0].stripe, Price { ppm: 29_000, fixed_minor: 30 });
        assert_eq!(f.versions[0].adyen, Price { ppm: 17_500, fixed_minor: 10 });
        // The day the new version starts belongs to it.
        assert_eq!(as_of(&f.versions, "acct_1", date!(2026 - 05 - 31)).unwrap().risk_tier, "low");
        assert_eq!(as_of(&f.versions, "acct_1", date!(2026 - 06 - 01)).unwrap().risk_tier, "high");
        assert_eq!(as_of(&f.versions, "acct_1", date!(2024 - 12 - 31)), None);
        assert_eq!(as_of(&f.versions, "acct_2", date!(2026 - 06 - 01)), None);
    }

    #[test]
    fn every_bad_field_is_refused_with_its_line_and_column() {
        let e = file(&[
            "acct_1,2025-01-01,,Shop,DE,5411,EUR,low,2.9,30,1.75,10",
            "acct_2,2025-13-01,,Shop,DEU,9999,XXX,extreme,101,-1,2.12345,x",
            "acct_3,2025-01-01,2025-01-01,Shop,DE,5411,EUR,low,2.9,30,1.75,10",
            "acct_1,2025-06-01,,Shop,DE,5411,EUR,low,2.9,30,1.75,10",
            "acct_4,2025-01-01,,Shop,DE,5411,EUR,low",
        ])
        .unwrap_err()
        .errors;
        let at: Vec<(usize, Option<&str>)> = e.iter().map(|e| (e.line, e.column.as_deref())).collect();
        assert_eq!(
            at,
            [
                (3, Some("valid_from")),
                (3, Some("country")),
                (3, Some("mcc")),
                (3, Some("settlement_currency")),
                (3, Some("risk_tier")),
                (3, Some("stripe_percent")),
                (3, Some("stripe_fixed_minor")),
                (3, Some("adyen_percent")),
                (3, Some("adyen_fixed_minor")),
                (4, Some("valid_to")),
                (5, Some("valid_from")),
                (6, None),
            ],
            "{e:#?}"
        );
        let header = MerchantDimension::parse(b"merchant_id,valid_from,risk_teir\n").unwrap_err().errors;
        assert!(header.iter().any(|e| e.column.as_deref() == Some("risk_teir")), "{header:?}");
        assert!(header.iter().any(|e| e.column.as_deref() == Some("risk_tier")), "{header:?}");
    }

    #[test]
    fn merge_opens_closes_and_never_rewrites_history() {
        let first = file(&["acct_1,2025-01-01,,Shop,DE,5411,EUR,low,2.9,30,1.75,10"]).unwrap();
        let opened = merge(&[], &first).unwrap();
        assert_eq!(opened, vec![Change::Open(first.versions[0].clone())]);
        // The same file again: nothing.
        assert_eq!(merge(&first.versions, &first).unwrap(), vec![]);
        // A later version: the current one closes the day it starts.
        let later = file(&["acct_1,2026-06-01,,Shop,DE,5411,EUR,high,2.9,30,1.75,10"]).unwrap();
        assert_eq!(
            merge(&first.versions, &later).unwrap(),
            vec![
                Change::Close {
                    merchant_id: "acct_1".into(),
                    valid_from: date!(2025 - 01 - 01),
                    valid_to: date!(2026 - 06 - 01)
                },
                Change::Open(later.versions[0].clone()),
            ]
        );
        // A file with the full history (closed first version, then the new one): the same two changes.
        let full = file(&[
            "acct_1,2025-01-01,2026-06-01,Shop,DE,5411,EUR,low,2.9,30,1.75,10",
            "acct_1,2026-06-01,,Shop,DE,5411,EUR,high,2.9,30,1.75,10",
        ])
        .unwrap();
        assert_eq!(merge(&first.versions, &full).unwrap().len(), 2);
        // Other attributes for the loaded version, or a version before the current one: refused.
        let rewrite = file(&["acct_1,2025-01-01,,Shop,DE,5411,EUR,medium,2.9,30,1.75,10"]).unwrap();
        assert!(merge(&first.versions, &rewrite).unwrap_err()[0].contains("history is not rewritten"));
        let before = file(&["acct_1,2024-01-01,2025-01-01,Shop,DE,5411,EUR,low,2.9,30,1.75,10"]).unwrap();
        assert!(merge(&first.versions, &before).is_err());
    }
}
