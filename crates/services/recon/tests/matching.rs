//! The matcher on hand-built lines and facts: each break type found exactly where it was planted and nowhere else,
//! and the same outcome for any order of the inputs (property test).

use proptest::prelude::*;
use tally_domain::{EventKind, Psp, Timestamp};
use tally_money::{Amount, Currency, Money};
use tally_psp::report::{LineKind, SettlementLine};
use tally_recon::matching::{add_business_days, scope_to_day, FactLineage};
use tally_recon::{reconcile, BreakKind, Fact, Line, Outcome, Price, Rules};

fn eur(minor: i64) -> Money {
    Money::new(Amount::from_minor(minor), Currency::from_code("EUR").unwrap())
}

fn day(d: u32, hour: u32) -> Timestamp {
    // 2026-06-01 was a Monday.
    Timestamp::parse_rfc3339(&format!("2026-06-{d:02}T{hour:02}:00:00Z")).unwrap()
}

fn fact(kind: EventKind, psp: Psp, payment: &str, reference: &str, minor: i64, at: Timestamp, offset: i64) -> Fact {
    Fact {
        fact_key: format!("k-{kind:?}-{reference}"),
        kind,
        psp,
        payment_id: format!("{}:{payment}", psp.as_str()),
        psp_reference: reference.into(),
        merchant_id: "m1".into(),
        money: eur(minor),
        occurred_at: at,
        lineage: FactLineage { topic: "payments.capture.v1".into(), partition: 0, offset },
    }
}

#[allow(clippy::too_many_arguments)]
fn line(
    kind: LineKind,
    psp: Psp,
    n: u64,
    id: &str,
    payment: &str,
    modification: &str,
    gross: i64,
    fee: i64,
    at: Timestamp,
) -> Line {
    Line {
        file_sha256: format!("{:064}", if psp == Psp::Stripe { 1 } else { 2 }),
        file: format!("{}.csv", psp.as_str()),
        line: SettlementLine {
            psp,
            line: n,
            kind: kind.clone(),
            category: kind.as_str().into(),
            account: "acct".into(),
            line_id: (psp == Psp::Stripe).then(|| id.to_owned()),
            payment_reference: Some(payment.into()),
            modification_reference: Some(modification.into()),
            merchant_reference: None,
            gross: Some(eur(gross)),
            fee: Amount::from_minor(fee),
            net: eur(gross - fee),
            booked_at: at,
            settled_at: None,
            batch: (psp == Psp::Adyen).then(|| id.to_owned()),
        },
    }
}

/// 1.4% + 25 cents (Stripe), 0 + 10 cents (Adyen).
fn price(_: &str, psp: Psp, _: Timestamp) -> Option<Price> {
    Some(match psp {
        Psp::Stripe => Price { ppm: 14_000, fixed_minor: 25 },
        Psp::Adyen => Price { ppm: 0, fixed_minor: 10 },
    })
}

fn run(lines: &[Line], facts: &[Fact]) -> Outcome {
    let sla = |_: Psp| 2;
    reconcile(
        lines,
        facts,
        &Rules { sla_days: &sla, price: &price, scope: None, tolerances: &tally_recon::NO_TOLERANCE },
    )
}

/// A scenario with one break of each type planted, and clean matches around them.
fn scenario() -> (Vec<Line>, Vec<Fact>) {
    use EventKind::*;
    use LineKind as L;
    let (s, a) = (Psp::Stripe, Psp::Adyen);
    let facts = vec![
        fact(Captured, s, "ch_1", "ch_1", 10_000, day(1, 10), 1),
        fact(Refunded, s, "ch_1", "re_1", 2_500, day(1, 12), 2),
        fact(Captured, s, "ch_2", "ch_2", 5_000, day(1, 10), 3),
        fact(Captured, s, "ch_3", "ch_3", 7_000, day(1, 10), 4), // never settled: missing_at_psp
        fact(Captured, s, "ch_4", "ch_4", 1_000, day(1, 10), 5), // fee differs from the plan
        fact(Captured, s, "ch_5", "ch_5", 1_000, day(1, 10), 6), // settled late
        fact(Captured, s, "ch_7", "ch_7", 3_000, day(1, 10), 7),
        fact(Refunded, s, "ch_7", "re_7", 3_000, day(1, 11), 8), // a settled line names this refund
        fact(Captured, a, "P1", "C1", 2_000, day(2, 9), 9),
        fact(Captured, a, "P2", "C2", 4_000, day(2, 9), 10), // settled in USD
        fact(ChargebackOpened, a, "P1", "D1", 2_000, day(3, 9), 11),
    ];
    let mut usd = line(L::Settled, a, 3, "2", "P2", "C2", 4_000, 10, day(3, 9));
    usd.line.gross = Some(Money::new(Amount::from_minor(4_000), Currency::from_code("USD").unwrap()));
    usd.line.net = Money::new(Amount::from_minor(3_990), Currency::from_code("USD").unwrap());
    let lines = vec![
        line(L::Settled, s, 2, "txn_1", "ch_1", "ch_1", 10_000, 165, day(3, 0)), // 1.4% of 100.00 + 0.25 = 1.65
        line(L::Refunded, s, 3, "txn_2", "ch_1", "re_1", -2_500, 0, day(3, 0)),
        line(L::Settled, s, 4, "txn_3", "ch_2", "ch_2", 5_100, 96, day(3, 0)), // amount differs
        line(L::Settled, s, 5, "txn_1", "ch_1", "ch_1", 10_000, 165, day(3, 0)), // the same line again
        line(L::Settled, s, 6, "txn_9", "ch_9", "ch_9", 900, 38, day(3, 0)),   // a payment Tally never saw
        line(L::Settled, s, 7, "txn_4", "ch_4", "ch_4", 1_000, 50, day(3, 0)), // plan says 39
        line(L::Settled, s, 8, "txn_5", "ch_5", "ch_5", 1_000, 39, day(8, 0)), // due 3 June, booked 8 June
        line(L::Settled, s, 9, "txn_6", "ch_7", "re_7", 3_000, 67, day(3, 0)), // names a refund: category
        line(L::Settled, s, 10, "txn_7", "ch_7", "ch_7", 3_000, 67, day(3, 0)),
        line(L::Refunded, s, 11, "txn_8", "ch_7", "re_7", -3_000, 0, day(3, 0)),
        line(L::Settled, a, 2, "1", "P1", "C1", 2_000, 10, day(3, 9)),
        usd,
        line(L::Chargeback, a, 4, "4", "P1", "D1", -2_000, 0, day(4, 9)), // batches 1, 2, 4: 3 is missing
    ];
    (lines, facts)
}

#[test]
fn every_planted_break_is_found_once_and_nothing_else() {
    let (lines, facts) = scenario();
    let outcome = run(&lines, &facts);
    let found: Vec<(BreakKind, Option<String>)> =
        outcome.breaks.iter().map(|b| (b.kind, b.payment_id.clone())).collect();
    let p = |s: &str| Some(s.to_owned());
    let mut expected = vec![
        (BreakKind::MissingInLedger, p("stripe:ch_9")),
        (BreakKind::MissingAtPsp, p("stripe:ch_3")),
        (BreakKind::MissingAtPsp, p("stripe:ch_5")),
        (BreakKind::AmountMismatch, p("stripe:ch_2")),
        (BreakKind::CurrencyMismatch, p("adyen:P2")),
        (BreakKind::FeeMismatch, p("stripe:ch_4")),
        (BreakKind::DuplicateLine, p("stripe:ch_1")),
        (BreakKind::CategoryMismatch, p("stripe:ch_7")),
        (BreakKind::MissingBatch, None),
    ];
    let mut found_sorted = found.clone();
    found_sorted.sort();
    expected.sort();
    assert_eq!(found_sorted, expected, "{:#?}", outcome.breaks);
    // Both sides' lineage where both exist.
    let amount = outcome.breaks.iter().find(|b| b.kind == BreakKind::AmountMismatch).unwrap();
    assert_eq!(amount.line.as_ref().map(|l| (l.file.as_str(), l.line)), Some(("stripe.csv", 4)));
    assert_eq!(amount.fact.as_ref().map(|f| f.offset), Some(3));
    let batch = outcome.breaks.iter().find(|b| b.kind == BreakKind::MissingBatch).unwrap();
    assert!(batch.detail.contains("batch 3 missing"), "{}", batch.detail);
    let stripe = &outcome.totals[&("stripe".to_owned(), "EUR".to_owned())];
    assert_eq!(stripe.booked_minor, 10_000 + 5_000 + 7_000 + 1_000 + 1_000 + 3_000);
    assert_eq!(stripe.lines, 10);
    // ch_1 settled and refunded, ch_7 settled and refunded.
    assert_eq!(stripe.matched, 4);
}

#[test]
fn a_clean_month_is_clean() {
    let (s, d) = (Psp::Stripe, day(1, 10));
    let facts = vec![fact(EventKind::Captured, s, "ch_1", "ch_1", 10_000, d, 1)];
    let lines = vec![line(LineKind::Settled, s, 2, "txn_1", "ch_1", "ch_1", 10_000, 165, day(3, 0))];
    let outcome = run(&lines, &facts);
    assert!(outcome.breaks.is_empty(), "{:#?}", outcome.breaks);
    // A fact not yet due is no break; once the reports reach past its due date, it is one.
    let mut facts = facts;
    facts.push(fact(EventKind::Captured, s, "ch_2", "ch_2", 1_000, day(2, 10), 2));
    assert!(run(&lines, &facts).breaks.is_empty());
    let later = vec![lines[0].clone(), line(LineKind::Fee, s, 3, "txn_f", "-", "-", -100, 0, day(9, 0))];
    assert_eq!(run(&later, &facts).count(BreakKind::MissingAtPsp), 1);
}

#[test]
fn a_nightly_run_for_one_day_judges_that_days_facts_with_their_later_lines() {
    let s = Psp::Stripe;
    let facts = vec![
        fact(EventKind::Captured, s, "ch_1", "ch_1", 10_000, day(1, 10), 1), // settled on the 3rd, correctly
        fact(EventKind::Captured, s, "ch_2", "ch_2", 5_000, day(1, 11), 2),  // settled for too much
        fact(EventKind::Captured, s, "ch_3", "ch_3", 7_000, day(2, 10), 3),  // another day: out of scope
    ];
    let lines = vec![
        line(LineKind::Settled, s, 2, "txn_1", "ch_1", "ch_1", 10_000, 165, day(3, 0)),
        line(LineKind::Settled, s, 3, "txn_2", "ch_2", "ch_2", 5_001, 95, day(3, 0)),
        line(LineKind::Settled, s, 4, "txn_3", "ch_3", "ch_3", 6_000, 109, day(4, 0)),
        line(LineKind::Settled, s, 5, "txn_9", "ch_9", "ch_9", 900, 38, day(1, 0)), // unknown, booked on the 1st
        line(LineKind::Settled, s, 6, "txn_8", "ch_8", "ch_8", 900, 38, day(2, 0)), // unknown, booked on the 2nd
    ];
    assert_eq!(run(&lines, &facts).breaks.len(), 4, "everything: ch_2, ch_3, ch_8, ch_9");
    let (l, f, scope) = scope_to_day(&lines, &facts, day(1, 0));
    let sla = |_: Psp| 2;
    let rules = Rules { sla_days: &sla, price: &price, scope: Some(&scope), tolerances: &tally_recon::NO_TOLERANCE };
    let breaks: Vec<_> =
        reconcile(&l, &f, &rules).breaks.into_iter().map(|b| (b.kind, b.payment_id.unwrap())).collect();
    assert_eq!(
        breaks,
        [(BreakKind::MissingInLedger, "stripe:ch_9".into()), (BreakKind::AmountMismatch, "stripe:ch_2".into())]
    );
}

/// A run for one day with the scope's rules.
fn run_day(lines: &[Line], facts: &[Fact], d: u32) -> Vec<(BreakKind, String)> {
    let (l, f, scope) = scope_to_day(lines, facts, day(d, 0));
    let sla = |_: Psp| 2;
    let rules = Rules { sla_days: &sla, price: &price, scope: Some(&scope), tolerances: &tally_recon::NO_TOLERANCE };
    reconcile(&l, &f, &rules).breaks.into_iter().map(|b| (b.kind, b.payment_id.unwrap_or_default())).collect()
}

#[test]
fn a_day_run_finds_a_payments_later_lines_and_a_missing_settlement_whatever_the_day() {
    let s = Psp::Stripe;
    // Captured on the 1st (settled on the 3rd), refunded on the 10th (settled on the 12th); ch_2 captured on the
    // 1st and never settled; on the 10th the PSP also settles a refund of ch_3 that the ledger never booked.
    let facts = vec![
        fact(EventKind::Captured, s, "ch_1", "ch_1", 10_000, day(1, 10), 1),
        fact(EventKind::Refunded, s, "ch_1", "re_1", 2_500, day(10, 10), 2),
        fact(EventKind::Captured, s, "ch_2", "ch_2", 4_000, day(1, 10), 3),
        fact(EventKind::Captured, s, "ch_3", "ch_3", 1_000, day(1, 11), 4),
    ];
    let lines = vec![
        line(LineKind::Settled, s, 2, "txn_1", "ch_1", "ch_1", 10_000, 165, day(3, 0)),
        line(LineKind::Settled, s, 3, "txn_3", "ch_3", "ch_3", 1_000, 39, day(3, 0)),
        line(LineKind::Refunded, s, 4, "txn_2", "ch_1", "re_1", -2_500, 0, day(12, 0)),
        line(LineKind::Refunded, s, 5, "txn_4", "ch_3", "re_x", -500, 0, day(10, 0)),
    ];
    // Run again later, the 1st's payments bring every line they have since: ch_3's unbooked refund too (the same
    // break, by id, as the 10th's run records).
    assert_eq!(
        run_day(&lines, &facts, 1),
        [(BreakKind::MissingInLedger, "stripe:ch_3".to_owned()), (BreakKind::MissingAtPsp, "stripe:ch_2".to_owned())]
    );
    assert_eq!(run_day(&lines, &facts, 10), [(BreakKind::MissingInLedger, "stripe:ch_3".to_owned())]);
    assert!(run_day(&lines, &facts, 12).is_empty(), "the refund's line matches its fact of the 10th");
}

#[test]
fn what_reviews_found_the_first_matcher_getting_wrong() {
    use EventKind::*;
    let (s, a) = (Psp::Stripe, Psp::Adyen);
    let usd = |m: i64| Money::new(Amount::from_minor(m), Currency::from_code("USD").unwrap());
    let facts = vec![
        // One booked refund; the PSP settles it and one Tally never booked (earlier, for less).
        fact(Captured, s, "ch_1", "ch_1", 10_000, day(1, 10), 1),
        fact(Refunded, s, "ch_1", "re_1", 2_500, day(1, 12), 2),
        // A refund line with the wrong sign.
        fact(Captured, s, "ch_2", "ch_2", 5_000, day(1, 10), 3),
        fact(Refunded, s, "ch_2", "re_2", 5_000, day(1, 12), 4),
        // A failed Adyen capture and its recapture: one settlement, for the recapture.
        fact(Captured, a, "P1", "C1", 2_000, day(1, 9), 5),
        fact(CaptureReversed, a, "P1", "C1", 2_000, day(1, 9), 6),
        fact(Captured, a, "P1", "C1#recaptured", 2_000, day(1, 9), 7),
        // A refund that failed before it settled: nothing expected.
        fact(Captured, s, "ch_4", "ch_4", 3_000, day(1, 10), 8),
        fact(Refunded, s, "ch_4", "re_4", 3_000, day(1, 11), 9),
        fact(RefundFailed, s, "ch_4", "re_4", 3_000, day(1, 12), 10),
        // Stripe partial capture: the charge line is the authorization, the reversal line the rest.
        fact(Captured, s, "ch_5", "ch_5", 6_000, day(1, 10), 11),
    ];
    let mut no_charge_id = line(LineKind::Refunded, s, 6, "txn_r2", "-", "re_2", 5_000, 0, day(3, 0));
    no_charge_id.line.payment_reference = None;
    let mut usd_gross = line(LineKind::Settled, s, 7, "txn_c4", "ch_4", "ch_4", 3_000, 0, day(3, 0));
    usd_gross.line.gross = Some(usd(3_000));
    usd_gross.line.net = eur(2_000);
    usd_gross.line.fee = Amount::from_minor(700);
    let mut facts = facts;
    facts[7].money = usd(3_000);
    let lines = vec![
        line(LineKind::Refunded, s, 2, "txn_x", "ch_1", "re_x", -1_000, 0, day(2, 0)),
        line(LineKind::Refunded, s, 3, "txn_r1", "ch_1", "re_1", -2_500, 0, day(3, 0)),
        line(LineKind::Settled, s, 4, "txn_c1", "ch_1", "ch_1", 10_000, 165, day(3, 0)),
        line(LineKind::Settled, s, 5, "txn_c2", "ch_2", "ch_2", 5_000, 95, day(3, 0)),
        no_charge_id, // +50.00 for a refund: the wrong sign, found through its re_ reference alone
        usd_gross,    // gross in USD, fees in EUR: no fee check across currencies
        line(LineKind::Settled, a, 8, "1", "P1", "C1", 2_000, 10, day(3, 9)),
        line(LineKind::Settled, s, 9, "txn_c5", "ch_5", "ch_5", 10_000, 109, day(3, 0)),
        line(LineKind::CaptureReversed, s, 10, "txn_p5", "ch_5", "ch_5", -4_000, 0, day(3, 0)),
    ];
    let outcome = run(&lines, &facts);
    let found: Vec<(BreakKind, Option<&str>)> =
        outcome.breaks.iter().map(|b| (b.kind, b.payment_id.as_deref())).collect();
    assert_eq!(
        found,
        [(BreakKind::MissingInLedger, Some("stripe:ch_1")), (BreakKind::AmountMismatch, Some("stripe:ch_2"))],
        "{:#?}",
        outcome.breaks
    );
    assert!(outcome.breaks[0].line.as_ref().is_some_and(|l| l.line == 2), "the unbooked refund, not re_1's line");
    assert_eq!(outcome.fallbacks, 0, "every match here is by reference");
}

#[test]
fn business_days_skip_weekends() {
    // Friday 5 June + 2 business days = Tuesday 9 June.
    assert_eq!(add_business_days(day(5, 10), 2), day(9, 10));
    assert_eq!(add_business_days(day(1, 10), 2), day(3, 10));
    assert_eq!(add_business_days(day(6, 10), 1), day(8, 10));
}

#[test]
fn the_plans_fee_rounds_once_half_away_from_zero() {
    let p = Price { ppm: 14_000, fixed_minor: 25 };
    assert_eq!(p.fee(Amount::from_minor(10_000), 1).unwrap().minor(), 165);
    // 1.4% of 1.25 = 0.0175 → 2 cents.
    assert_eq!(p.fee(Amount::from_minor(125), 1).unwrap().minor(), 27);
    assert_eq!(Price { ppm: 25_000, fixed_minor: 0 }.fee(Amount::from_minor(-10), 1).unwrap().minor(), 0);
    assert_eq!(Price { ppm: 50_000, fixed_minor: 0 }.fee(Amount::from_minor(10), 1).unwrap().minor(), 1);
    // Once, to the PSP's unit: 1.4495% of 1,000 IDR is 14.495 IDR → 14 IDR (1,400 minor units at Adyen's whole
    // rupiah), not 14.50 rounded again to 15.
    let idr = Price { ppm: 14_495, fixed_minor: 0 };
    assert_eq!(idr.fee(Amount::from_minor(100_000), 100).unwrap().minor(), 1_400);
    let unit = tally_recon::matching::wire_unit(Psp::Adyen, Currency::from_code("IDR").unwrap());
    assert_eq!(unit, 100);
    assert_eq!(tally_recon::matching::wire_unit(Psp::Stripe, Currency::from_code("IDR").unwrap()), 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn any_order_of_lines_and_facts_gives_the_same_outcome(seed in any::<u64>()) {
        let (mut lines, mut facts) = scenario();
        let expected = run(&lines, &facts);
        // A deterministic shuffle from the seed (Fisher–Yates with an LCG).
        let mut state = seed | 1;
        let mut next = |n: usize| { state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); (state >> 33) as usize % n };
        for i in (1..lines.len()).rev() { let j = next(i + 1); lines.swap(i, j); }
        for i in (1..facts.len()).rev() { let j = next(i + 1); facts.swap(i, j); }
        // Facts may also arrive twice (at-least-once reads of the ledger are not possible, but the matcher must not care).
        let dup = facts[next(facts.len())].clone();
        facts.push(dup);
        prop_assert_eq!(run(&lines, &facts), expected);
    }
}

/// A tolerance is per PSP and break type, lets a difference up to it pass (counted), and nothing else.
#[test]
fn a_configured_tolerance_lets_only_its_psps_small_differences_pass() {
    use tally_recon::Tolerances;
    // A Stripe capture of 10.00 settled at 10.01 with the plan's fee (1.4% + 25 = 39 cents on 10.01 → 39), and an
    // Adyen one of 20.00 settled exact with a fee one cent above the plan's 10.
    let lines = vec![
        line(LineKind::Settled, Psp::Stripe, 2, "txn_1", "ch_1", "ch_1", 1_001, 39, day(2, 10)),
        line(LineKind::Settled, Psp::Adyen, 2, "1", "P1", "P1", 2_000, 11, day(2, 10)),
    ];
    let facts = vec![
        fact(EventKind::Captured, Psp::Stripe, "ch_1", "ch_1", 1_000, day(1, 10), 1),
        fact(EventKind::Captured, Psp::Adyen, "P1", "P1", 2_000, day(1, 10), 2),
    ];
    let sla = |_: Psp| 2;
    let with = |specs: &[&str]| {
        let t = Tolerances::parse(&specs.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        let o = reconcile(&lines, &facts, &Rules { sla_days: &sla, price: &price, scope: None, tolerances: &t });
        let kinds: Vec<BreakKind> = o.breaks.iter().map(|b| b.kind).collect();
        (kinds, o.totals.values().map(|t| t.within_tolerance).sum::<u64>())
    };
    assert_eq!(with(&[]), (vec![BreakKind::AmountMismatch, BreakKind::FeeMismatch], 0));
    assert_eq!(with(&["stripe:amount_mismatch=1"]), (vec![BreakKind::FeeMismatch], 1));
    assert_eq!(with(&["stripe:amount_mismatch=1", "adyen:fee_mismatch=1"]), (vec![], 2));
    // Another PSP's or another type's tolerance does not apply.
    assert_eq!(with(&["adyen:amount_mismatch=5", "stripe:fee_mismatch=5"]).0.len(), 2);
    for bad in
        ["stripe:duplicate_line=1", "stripe:amount_mismatch=-1", "stripe:amount_mismatch", "paypal:fee_mismatch=1"]
    {
        assert!(Tolerances::parse(&[bad.to_owned()]).is_err(), "{bad}");
    }
}
