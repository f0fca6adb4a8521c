//! The merchant dimension: ~80K rows with SCD2 validity, MCCs from ISO 18245 (shared fixture).

use rand::{Rng, RngCore};
use serde::Serialize;

const MCC_LIST: &str = include_str!("../../../../shared/fixtures/data/iso18245/iso18245_official_list.csv");

/// (country, settlement currency) pairs; the currencies cover exponents 0, 2 and 3, and those whose decimals at a PSP
/// differ from ISO 4217 (CLP, CVE, IDR, ISK, MGA).
pub(crate) const COUNTRIES: &[(&str, &str)] = &[
    ("DE", "EUR"),
    ("FR", "EUR"),
    ("NL", "EUR"),
    ("US", "USD"),
    ("GB", "GBP"),
    ("JP", "JPY"),
    ("SE", "SEK"),
    ("BH", "BHD"),
    ("CL", "CLP"),
    ("CV", "CVE"),
    ("ID", "IDR"),
    ("IS", "ISK"),
    ("MG", "MGA"),
];

#[derive(Debug, Clone, Serialize)]
pub struct Merchant {
    pub id: String,
    pub name: String,
    pub country: String,
    pub mcc: String,
    pub settlement_currency: String,
    pub risk_tier: String,
    pub valid_from: String,
    pub valid_to: Option<String>,
    /// Pricing per PSP: percentage (decimal text) plus a fixed fee in the settlement currency's minor units.
    pub stripe_percent: String,
    pub stripe_fixed_minor: i64,
    pub adyen_percent: String,
    pub adyen_fixed_minor: i64,
}

/// The merchant dimension as `tally reference load merchants` reads it (`tally_reference::merchants::COLUMNS`).
pub fn merchants_csv(merchants: &[Merchant]) -> String {
    let mut out = String::from(
        "merchant_id,valid_from,valid_to,legal_name,country,mcc,settlement_currency,risk_tier,stripe_percent,stripe_fixed_minor,adyen_percent,adyen_fixed_minor\n",
    );
    for m in merchants {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{}\n",
            m.id,
            m.valid_from,
            m.valid_to.as_deref().unwrap_or(""),
            m.name,
            m.country,
            m.mcc,
            m.settlement_currency,
            m.risk_tier,
            m.stripe_percent,
            m.stripe_fixed_minor,
            m.adyen_percent,
            m.adyen_fixed_minor
        ));
    }
    out
}

pub(crate) fn letters(rng: &mut impl RngCore, n: usize, upper: bool) -> String {
    let base = if upper { b'A' } else { b'a' };
    (0..n).map(|_| (base + (rng.next_u32() % 26) as u8) as char).collect()
}

/// `n` merchants; 5% change risk tier once (two SCD2 versions, the first closed when the second opens).
pub fn merchants(rng: &mut impl RngCore, n: usize) -> Vec<Merchant> {
    let mccs: Vec<&str> = MCC_LIST.lines().skip(1).filter_map(|l| l.split(',').next()).collect();
    let tiers = ["low", "medium", "high"];
    let mut out = Vec::with_capacity(n + n / 20);
    for i in 0..n {
        let (country, currency) = COUNTRIES[rng.random_range(0..COUNTRIES.len())];
        let m = Merchant {
            id: format!("acct_{}", letters(rng, 16, false)),
            name: format!("Merchant {i} {}", letters(rng, 6, true)),
            country: country.into(),
            mcc: mccs[rng.random_range(0..mccs.len())].into(),
            settlement_currency: currency.into(),
            risk_tier: tiers[rng.random_range(0..tiers.len())].into(),
            valid_from: "2025-01-01".into(),
            valid_to: None,
            // From the index, not the generator: the workload's draws stay as they were.
            stripe_percent: "2.9".into(),
            stripe_fixed_minor: 30,
            adyen_percent: format!("1.{}", 2 + i % 8),
            adyen_fixed_minor: 10 + 5 * (i % 3) as i64,
        };
        if rng.random_bool(0.05) {
            let mut changed = m.clone();
            changed.risk_tier = tiers[(tiers.iter().position(|t| *t == m.risk_tier).unwrap_or(0) + 1) % 3].into();
            changed.valid_from = "2026-06-01".into();
            out.push(Merchant { valid_to: Some("2026-06-01".into()), ..m });
            out.push(changed);
        } else {
            out.push(m);
        }
    }
    out
}
