//! The settlement reports the PSPs would send for a workload (issue 15 §2), with discrepancies injected at known
//! rates into a known-truth list. Written from the simulator's own facts and its merchants' pricing plans, in the
//! PSPs' formats (Stripe's itemized balance CSV, Adyen's Settlement details CSV with the 2026 header), by the
//! simulator's own arithmetic: none of Tally's parsing, matching or fee code is used here.
//!
//! Settlement: funds are available `settle_days` business days after the fact's day (00:00 UTC; Adyen books them
//! at 00:00 CET of that day). Stripe: one file per available-on day. Adyen: one file per day holding each merchant
//! account's batch of that day, batches numbered 1, 2, … per account.

use std::collections::{BTreeMap, BTreeSet};

use rand::{Rng, RngCore};
use serde::Serialize;
use tally_domain::{EventKind, PaymentEvent, Psp};
use tally_money::Currency;

use crate::dimension::{letters, Merchant};
use crate::render;

/// Rates are per line of the kind each applies to.
#[derive(Debug, Clone)]
pub struct ReportConfig {
    pub settle_days: u32,
    /// A capture's settlement line left out.
    pub missing_rate: f64,
    /// A settlement line's gross one minor unit off.
    pub amount_rate: f64,
    /// A settlement line's fee one minor unit off the merchant's plan.
    pub fee_rate: f64,
    /// A settlement line in another currency of the same exponent.
    pub currency_rate: f64,
    /// Per settlement line: an extra line for a payment no delivery ever stated.
    pub unknown_payment_rate: f64,
    /// A settlement line written twice.
    pub duplicate_rate: f64,
    /// A settlement three calendar days after its SLA.
    pub late_rate: f64,
    /// Per Adyen account with three or more batches: a middle batch never sent.
    pub missing_batch_rate: f64,
    /// Per settled payment without refunds: a refund line the PSP settled that no delivery stated.
    pub unbooked_refund_rate: f64,
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            settle_days: 2,
            missing_rate: 0.004,
            amount_rate: 0.003,
            fee_rate: 0.003,
            currency_rate: 0.002,
            unknown_payment_rate: 0.002,
            duplicate_rate: 0.003,
            late_rate: 0.003,
            missing_batch_rate: 0.05,
            unbooked_refund_rate: 0.002,
        }
    }
}

/// One discrepancy the simulator put in, as the break a reconciliation must report: its type (ADR 0015's names),
/// the PSP and the payment (`{psp}:{reference}`; none for a missing batch, whose detail names account and number).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
pub struct Injected {
    pub kind: String,
    pub psp: String,
    pub payment_id: Option<String>,
    pub detail: String,
}

pub struct Reports {
    /// (relative path, bytes), sorted by path.
    pub files: Vec<(String, Vec<u8>)>,
    /// Every break the reports must produce, sorted.
    pub injected: Vec<Injected>,
    /// What booking every line sent must do to the books, per (account, currency), non-zero, sorted: the PSP
    /// balance (`cash:{psp}`) by each line's net, the receivable by its gross, the PSP's fee as `psp_fees` — except
    /// a Stripe dispute's fee, which the webhook already stated, so the line settles its whole net against the
    /// receivable. A line written twice counts once. Stated from the lines the simulator planned, in its own terms.
    pub booked: Vec<(String, String, i64)>,
}

/// See [`Reports::booked`].
fn booked(sent: &[Planned]) -> Vec<(String, String, i64)> {
    let mut seen = BTreeSet::new();
    let mut out: BTreeMap<(String, String), i64> = BTreeMap::new();
    for l in sent.iter().filter(|l| seen.insert((l.psp, l.id.clone()))) {
        let (psp, currency) = (l.psp.as_str(), l.currency.code().to_owned());
        let net = l.gross - l.fee;
        let mut add = |account: String, amount: i64| *out.entry((account, currency.clone())).or_insert(0) += amount;
        add(format!("cash:{psp}"), net);
        if l.psp == Psp::Stripe && l.category == "dispute" {
            add(format!("psp_receivable:{psp}"), -net);
        } else {
            add(format!("psp_receivable:{psp}"), -l.gross);
            add("psp_fees".to_owned(), l.fee);
        }
    }
    out.into_iter().filter(|(_, a)| *a != 0).map(|((account, currency), a)| (account, currency, a)).collect()
}

const DAY: i64 = 86_400;

/// The day (unix seconds at 00:00 UTC) `days` business days after the day of `secs`.
fn settlement_day(secs: i64, days: u32) -> i64 {
    let mut day = secs.div_euclid(DAY);
    let mut left = days;
    while left > 0 {
        day += 1;
        // 1970-01-01 was a Thursday; Monday = 0.
        if (day + 3).rem_euclid(7) < 5 {
            left -= 1;
        }
    }
    day * DAY
}

/// `secs` plus `days` business days, same time of day: when a fact's settlement is due.
fn due(secs: i64, days: u32) -> i64 {
    settlement_day(secs, days) + secs.rem_euclid(DAY)
}

fn date(secs: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(secs).expect("simulated times are in range");
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

fn datetime(secs: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(secs).expect("simulated times are in range");
    format!("{} {:02}:{:02}:{:02}", date(secs), t.hour(), t.minute(), t.second())
}

/// Minor units as a decimal in major units, by the currency's ISO exponent.
fn major(minor: i64, currency: Currency) -> String {
    let exp = u32::from(currency.exponent());
    if exp == 0 {
        return minor.to_string();
    }
    let scale = 10i64.pow(exp);
    let sign = if minor < 0 { "-" } else { "" };
    let m = minor.unsigned_abs();
    format!("{sign}{}.{:0width$}", m / scale as u64, m % scale as u64, width = exp as usize)
}

/// A percentage written as decimal text ("2.9", "1.25") in parts per million, by the simulator's own parsing.
fn ppm(percent: &str) -> i64 {
    let (int, frac) = percent.split_once('.').unwrap_or((percent, ""));
    let frac = format!("{frac:0<4}");
    int.parse::<i64>().unwrap_or(0) * 10_000 + frac[..4].parse::<i64>().unwrap_or(0)
}

/// The contracted fee on `gross` minor units: percentage plus fixed part, rounded once, half away from zero, to the
/// PSP's smallest unit (`unit` minor units).
fn plan_fee(gross: i64, percent: &str, fixed: i64, unit: i64) -> i64 {
    let exact = i128::from(gross.abs()) * i128::from(ppm(percent)) + i128::from(fixed) * 1_000_000;
    let step = i128::from(unit) * 1_000_000;
    ((exact + step / 2) / step * i128::from(unit)) as i64
}

/// Another currency with the same number of decimals.
fn other_currency(c: Currency) -> Currency {
    let pool: &[&str] = match c.exponent() {
        0 => &["JPY", "KRW"],
        3 => &["BHD", "KWD"],
        _ => &["EUR", "USD", "GBP"],
    };
    let pick = pool.iter().find(|code| **code != c.code()).expect("every pool has two");
    Currency::from_code(pick).expect("ISO codes")
}

/// The first six characters of a payment's reference (after Stripe's `ch_`): the run tag when the workload has
/// one (`SimConfig::run_tag` prefixes every reference). Ids the reports make up start with it, so that two runs of
/// one seed (the demo runs twice) never state the same line, as two PSP accounts never would.
fn run_prefix(reference: &str) -> String {
    let r = reference.strip_prefix("ch_").unwrap_or(reference);
    r.chars().take(6).collect::<String>().to_lowercase()
}

/// One settlement line, before rendering.
#[derive(Clone)]
struct Planned {
    psp: Psp,
    /// Stripe's `balance_transaction_id` (a duplicated line repeats it).
    id: String,
    /// Stripe `reporting_category` / Adyen `Type`.
    category: &'static str,
    payment: String,
    modification: String,
    account: String,
    currency: Currency,
    gross: i64,
    fee: i64,
    created: i64,
    settled: i64,
    /// When the fact the line settles is due, for facts that must be settled within the SLA.
    due: Option<i64>,
    /// The break this line must cause.
    inject: Option<Injected>,
}

/// The reports of a generated workload, from a generator seeded apart from the workload's (whose draws stay as
/// they were).
pub fn for_workload(w: &crate::Workload, seed: u64, config: &ReportConfig) -> Reports {
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed ^ 0x5e77_1e00);
    reports(&w.facts, &w.truth.unbooked_payments, &w.merchants, config, &mut rng)
}

/// The reports for `facts` (the workload's stated facts; `unbooked` payments are never settled).
pub fn reports(
    facts: &[PaymentEvent],
    unbooked: &[String],
    merchants: &[Merchant],
    config: &ReportConfig,
    rng: &mut impl RngCore,
) -> Reports {
    let plans: BTreeMap<&str, &Merchant> = merchants.iter().map(|m| (m.id.as_str(), m)).collect();
    // Each fact once, at its earliest statement (a closed dispute restates its opening).
    let mut first: BTreeMap<(String, &'static str, String, Option<String>), &PaymentEvent> = BTreeMap::new();
    for f in facts.iter().filter(|f| !unbooked.contains(&f.payment_id)) {
        let key = (f.payment_id.clone(), f.kind.as_str(), f.psp_reference.clone(), f.original_reference.clone());
        let e = first.entry(key).or_insert(f);
        if f.occurred_at < e.occurred_at {
            *e = f;
        }
    }
    let refunded: BTreeSet<&str> =
        first.values().filter(|f| f.kind == EventKind::Refunded).map(|f| f.payment_id.as_str()).collect();
    let dispute_fee: BTreeMap<&str, i64> = first
        .values()
        .filter(|f| f.kind == EventKind::Fee)
        .map(|f| (f.payment_id.as_str(), f.money.amount.minor()))
        .collect();
    let mut injected = Vec::new();
    let mut lines: Vec<Planned> = Vec::new();
    for f in first.values() {
        let (psp, created) = (f.psp, f.occurred_at.unix_secs());
        let reference = f.payment_id.split_once(':').map_or("", |(_, r)| r).to_owned();
        let amount = f.money.amount.minor();
        let settled = settlement_day(created, config.settle_days);
        let (category, gross, fee, due_at) = match (f.kind, psp) {
            (EventKind::Captured, _) => {
                let m = plans.get(f.merchant_id.as_str()).expect("every merchant is in the dimension");
                // A PSP charges in the units it moves (Adyen has no fraction of a rupiah).
                let unit = render::wire_unit(psp, f.money.currency);
                let fee = match psp {
                    Psp::Stripe => plan_fee(amount, &m.stripe_percent, m.stripe_fixed_minor, unit),
                    Psp::Adyen => plan_fee(amount, &m.adyen_percent, m.adyen_fixed_minor, unit),
                };
                (
                    if psp == Psp::Stripe { "charge" } else { "Settled" },
                    amount,
                    fee,
                    Some(due(created, config.settle_days)),
                )
            }
            (EventKind::Refunded, Psp::Stripe) => ("refund", -amount, 0, Some(due(created, config.settle_days))),
            (EventKind::Refunded, Psp::Adyen) => ("Refunded", -amount, 0, Some(due(created, config.settle_days))),
            (EventKind::RefundFailed, Psp::Stripe) => ("refund_failure", amount, 0, None),
            (EventKind::RefundFailed, Psp::Adyen) => ("RefundedReversed", amount, 0, None),
            (EventKind::ChargebackOpened, Psp::Stripe) => {
                ("dispute", -amount, dispute_fee.get(f.payment_id.as_str()).copied().unwrap_or(0), None)
            }
            (EventKind::ChargebackOpened, Psp::Adyen) => ("Chargeback", -amount, 0, None),
            (EventKind::SecondChargeback, Psp::Adyen) => ("SecondChargeback", -amount, 0, None),
            (EventKind::ChargebackWon | EventKind::PrearbitrationWon, Psp::Stripe) => {
                ("dispute_reversal", amount, 0, None)
            }
            (EventKind::ChargebackWon | EventKind::PrearbitrationWon, Psp::Adyen) => {
                ("ChargebackReversed", amount, 0, None)
            }
            _ => continue,
        };
        lines.push(Planned {
            psp,
            id: format!("txn_{}{:08}", run_prefix(&reference), lines.len()),
            category,
            payment: reference,
            modification: f.psp_reference.clone(),
            account: f.merchant_id.clone(),
            currency: f.money.currency,
            gross,
            fee,
            created,
            settled,
            due: due_at,
            inject: None,
        });
    }

    // Discrepancies on settlement lines of captures: at most one per line, each carried by the line that shows it
    // (so that a line never sent — in a missing batch — takes its discrepancy with it).
    let mut out: Vec<Planned> = Vec::with_capacity(lines.len());
    let mut left_out: Vec<(Psp, String, i64)> = Vec::new();
    for mut l in lines {
        let payment_id = format!("{}:{}", l.psp.as_str(), l.payment);
        if !(l.category == "charge" || l.category == "Settled") {
            out.push(l);
            continue;
        }
        let say = |kind: &str, detail: &str| {
            Some(Injected {
                kind: kind.into(),
                psp: l.psp.as_str().into(),
                payment_id: Some(payment_id.clone()),
                detail: detail.into(),
            })
        };
        let unit = render::wire_unit(l.psp, l.currency);
        if rng.random_bool(config.missing_rate) {
            left_out.push((l.psp, payment_id, l.due.expect("settlements are due")));
        } else if rng.random_bool(config.amount_rate) {
            let inject = say("amount_mismatch", "gross one wire unit high");
            out.push(Planned { gross: l.gross + unit, inject, ..l });
        } else if rng.random_bool(config.fee_rate) {
            let inject = say("fee_mismatch", "fee one wire unit above the plan");
            out.push(Planned { fee: l.fee + unit, inject, ..l });
        } else if rng.random_bool(config.currency_rate) {
            let other = other_currency(l.currency);
            let inject = say("currency_mismatch", "written in another currency");
            out.push(Planned { currency: other, inject, ..l });
        } else if rng.random_bool(config.duplicate_rate) {
            let inject = say("duplicate_line", "the line written twice");
            out.push(l.clone());
            out.push(Planned { inject, due: None, ..l });
        } else if rng.random_bool(config.late_rate) {
            let inject = say("missing_at_psp", "settled three days after its SLA");
            out.push(Planned { settled: l.settled + 3 * DAY, inject, ..l });
        } else if rng.random_bool(config.unknown_payment_rate) {
            let ghost = match l.psp {
                // As many draws as before the prefix (so that the workloads' other draws stay as they were).
                Psp::Stripe => format!("ch_{}{}", run_prefix(&l.payment), &letters(rng, 24, false)[6..]),
                Psp::Adyen => format!("{}{}", run_prefix(&l.payment).to_uppercase(), &letters(rng, 16, true)[6..]),
            };
            let inject = Some(Injected {
                kind: "missing_in_ledger".into(),
                psp: l.psp.as_str().into(),
                payment_id: Some(format!("{}:{ghost}", l.psp.as_str())),
                detail: "a settlement for a payment no delivery stated".into(),
            });
            let id = format!("txn_g{}{}", run_prefix(&l.payment), letters(rng, 12, false));
            out.push(Planned { id, payment: ghost.clone(), modification: ghost, due: None, inject, ..l.clone() });
            out.push(l);
        } else if !refunded.contains(payment_id.as_str()) && rng.random_bool(config.unbooked_refund_rate) {
            let (category, modification) = match l.psp {
                Psp::Stripe => ("refund", format!("re_{}", letters(rng, 24, false))),
                Psp::Adyen => ("Refunded", letters(rng, 16, true)),
            };
            let inject = say("missing_in_ledger", "a refund settled that no delivery stated");
            let id = format!("txn_r{}{}", run_prefix(&l.payment), letters(rng, 12, false));
            out.push(Planned { id, category, modification, gross: -l.gross, fee: 0, due: None, inject, ..l.clone() });
            l.inject = None;
            out.push(l);
        } else {
            out.push(l);
        }
    }

    // Adyen batches per account, in order of days; a middle batch of some accounts never sent.
    let mut days: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for l in out.iter().filter(|l| l.psp == Psp::Adyen) {
        days.entry(l.account.clone()).or_default().insert(l.settled);
    }
    let mut batch_of: BTreeMap<(String, i64), u64> = BTreeMap::new();
    let mut missing: BTreeSet<(String, i64)> = BTreeSet::new();
    for (account, set) in &days {
        for (i, day) in set.iter().enumerate() {
            batch_of.insert((account.clone(), *day), i as u64 + 1);
        }
        if set.len() >= 3 && rng.random_bool(config.missing_batch_rate) {
            let n = rng.random_range(2..set.len() as u64);
            let day = *set.iter().nth(n as usize - 1).expect("in range");
            missing.insert((account.clone(), day));
            injected.push(Injected {
                kind: "missing_batch".into(),
                psp: "adyen".into(),
                payment_id: None,
                detail: format!("{account}: batch {n} missing"),
            });
        }
    }
    let mut sent: Vec<Planned> = Vec::with_capacity(out.len());
    for l in out {
        if l.psp == Psp::Adyen && missing.contains(&(l.account.clone(), l.settled)) {
            if let Some(due) = l.due {
                left_out.push((l.psp, format!("adyen:{}", l.payment), due));
            }
            continue;
        }
        injected.extend(l.inject.clone());
        sent.push(l);
    }
    // A left-out settlement is a break once the reports reach past its due date.
    for psp in [Psp::Stripe, Psp::Adyen] {
        let newest = sent.iter().filter(|l| l.psp == psp).map(|l| l.settled).max();
        for (_, payment, due) in left_out.iter().filter(|(p, ..)| *p == psp) {
            if newest.is_some_and(|n| *due < n) {
                injected.push(Injected {
                    kind: "missing_at_psp".into(),
                    psp: psp.as_str().into(),
                    payment_id: Some(payment.clone()),
                    detail: "the settlement left out".into(),
                });
            }
        }
    }
    injected.sort();
    Reports { files: render(&sent, &batch_of), injected, booked: booked(&sent) }
}

const STRIPE_HEADER: &str =
    "balance_transaction_id,created_utc,available_on_utc,currency,gross,fee,net,reporting_category,source_id,charge_id";

fn render(lines: &[Planned], batch_of: &BTreeMap<(String, i64), u64>) -> Vec<(String, Vec<u8>)> {
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    let adyen_header = ADYEN_HEADER.trim_end();
    let header_2026 = adyen_header.split(',').collect::<Vec<_>>();
    let col = |name: &str| header_2026.iter().position(|h| *h == name).expect("a 2026 column");
    for l in lines {
        let net = l.gross - l.fee;
        match l.psp {
            Psp::Stripe => {
                let file = files
                    .entry(format!("stripe/balance_{}.csv", date(l.settled)))
                    .or_insert_with(|| format!("{STRIPE_HEADER}\n"));
                file.push_str(&format!(
                    "{},{},{},{},{},{},{},{},{},{}\n",
                    l.id,
                    datetime(l.created),
                    datetime(l.settled),
                    l.currency.code().to_ascii_lowercase(),
                    major(l.gross, l.currency),
                    major(l.fee, l.currency),
                    major(net, l.currency),
                    l.category,
                    l.modification,
                    l.payment
                ));
            }
            Psp::Adyen => {
                let file = files
                    .entry(format!("adyen/settlement_detail_report_{}.csv", date(l.settled)))
                    .or_insert_with(|| format!("{adyen_header}\n"));
                let mut row = vec![String::new(); header_2026.len()];
                let cet = |secs: i64| datetime(secs + 3_600);
                let (debit, credit) = if l.gross < 0 {
                    (major(-l.gross, l.currency), String::new())
                } else {
                    (String::new(), major(l.gross, l.currency))
                };
                let (ndebit, ncredit) = if net < 0 {
                    (major(-net, l.currency), String::new())
                } else {
                    (String::new(), major(net, l.currency))
                };
                // The fee split: interchange 60%, scheme fees 15%, the rest markup (each non-negative).
                // Each part in whole wire units, as the whole fee is.
                let unit = render::wire_unit(l.psp, l.currency);
                let interchange = l.fee * 60 / 100 / unit * unit;
                let scheme = l.fee * 15 / 100 / unit * unit;
                let markup = l.fee - interchange - scheme;
                let fees = |v: i64| if l.fee == 0 { String::new() } else { major(v, l.currency) };
                for (name, value) in [
                    ("Company Account", "TallySim".to_owned()),
                    ("Merchant Account", l.account.clone()),
                    ("Psp Reference", l.payment.clone()),
                    ("Merchant Reference", format!("order-{}", l.payment.to_ascii_lowercase())),
                    ("Payment Method", "visa".into()),
                    ("Creation Date", cet(l.created)),
                    ("TimeZone", "CET".into()),
                    ("Type", l.category.into()),
                    ("Modification Reference", l.modification.clone()),
                    ("Gross Currency", l.currency.code().into()),
                    ("Gross Debit (GC)", debit),
                    ("Gross Credit (GC)", credit),
                    ("Exchange Rate", "1".into()),
                    ("Net Currency", l.currency.code().into()),
                    ("Net Debit (NC)", ndebit),
                    ("Net Credit (NC)", ncredit),
                    ("Markup (NC)", fees(markup)),
                    ("Scheme Fees (NC)", fees(scheme)),
                    ("Interchange (NC)", fees(interchange)),
                    ("Batch Number", batch_of[&(l.account.clone(), l.settled)].to_string()),
                    ("Booking Date", cet(l.settled)),
                    ("Booking Date TimeZone", "CET".into()),
                ] {
                    row[col(name)] = value;
                }
                file.push_str(&row.join(","));
                file.push('\n');
            }
        }
    }
    files.into_iter().map(|(k, v)| (k, v.into_bytes())).collect()
}

/// The Settlement details header as Adyen wrote it in 2026 (`shared/fixtures/reports/`).
const ADYEN_HEADER: &str = include_str!("../../../../shared/fixtures/reports/adyen_settlement_details_header_2026.csv");
