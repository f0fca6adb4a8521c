//! The proof (issue 15 §5): on several seeds, the simulator's reports — rendered in the PSPs' formats and read back
//! by the real parsers — matched against the facts its deliveries state give exactly the breaks it injected: no
//! miss, no false break. The simulator computes fees, due dates and batches by its own arithmetic.

use std::collections::BTreeMap;

use tally_domain::{EventKind, Psp};
use tally_psp::report::Report;
use tally_recon::matching::{FactLineage, MATCHED_KINDS};
use tally_recon::{reconcile, BreakKind, Fact, Line, Price, Rules};

fn parse(path: &str, bytes: &[u8]) -> Report {
    let r = if path.starts_with("stripe/") {
        let options = tally_psp::stripe::report::Options { account: "platform".into(), ..Default::default() };
        tally_psp::stripe::report::parse(path, bytes, &options)
    } else {
        tally_psp::adyen::report::parse(path, bytes, None)
    };
    r.unwrap_or_else(|e| panic!("the simulator wrote a file the parser refuses: {e}\n{:#?}", e.errors))
}

/// A break as compared: (type, PSP, payment — or, for a missing batch, its detail).
type Named = (String, String, String);

/// What one seed's reconciliation finds beside what its simulator injected, sorted.
/// What booking the reports did, per (account, currency), beside what the simulator says it must, and the lines
/// that were not booked.
type Booked = (Vec<(String, String, i64)>, Vec<(String, String, i64)>, Vec<String>);

fn one_seed(seed: u64, payments: usize) -> (Vec<Named>, Vec<Named>, Booked) {
    // Few merchants, so that Adyen accounts have several daily batches (a missing one can be in the middle).
    let w = tally_sim::generate(&tally_sim::SimConfig { merchants: 40, ..tally_sim::SimConfig::new(seed, payments) });
    let reports = tally_sim::reports_for_workload(&w, seed, &tally_sim::ReportConfig::default());
    let mut lines = Vec::new();
    let (mut line_facts, mut not_booked) = (Vec::new(), Vec::new());
    let at = tally_domain::Timestamp::from_unix_secs(1_800_000_000).unwrap();
    for (path, bytes) in &reports.files {
        let report = parse(path, bytes);
        let (facts, booking) = tally_recon::booking::facts(&report, at);
        line_facts.extend(facts);
        not_booked.extend(booking.not_booked.iter().map(|n| format!("{path}:{n}")));
        lines.extend(report.lines.into_iter().map(|line| Line {
            file_sha256: report.sha256.clone(),
            file: path.clone(),
            line,
        }));
    }
    // The ledger holds each stated fact once (by its key), of the payments it books.
    let mut facts: BTreeMap<String, Fact> = BTreeMap::new();
    for (i, e) in w.facts.iter().enumerate() {
        if w.truth.unbooked_payments.contains(&e.payment_id) || !MATCHED_KINDS.contains(&e.kind) {
            continue;
        }
        let key = e.fact_key().0.to_string();
        let fact = Fact {
            fact_key: key.clone(),
            kind: e.kind,
            psp: e.psp,
            payment_id: e.payment_id.clone(),
            psp_reference: e.psp_reference.clone(),
            merchant_id: e.merchant_id.clone(),
            money: e.money,
            occurred_at: e.occurred_at,
            lineage: FactLineage { topic: tally_kafka_topic(e.kind).into(), partition: 0, offset: i as i64 },
        };
        // The earliest statement is the booked one's time.
        facts
            .entry(key)
            .and_modify(|f| {
                if e.occurred_at < f.occurred_at {
                    f.occurred_at = e.occurred_at
                }
            })
            .or_insert(fact);
    }
    let facts: Vec<Fact> = facts.into_values().collect();
    // Pricing plans through the real merchant loader, from the dimension the simulator writes.
    let dimension =
        tally_reference::merchants::MerchantDimension::parse(tally_sim::merchants_csv(&w.merchants).as_bytes())
            .expect("the simulator's dimension loads");
    let plans: BTreeMap<String, (Price, Price)> = dimension
        .versions
        .iter()
        .map(|v| {
            let p = |x: &tally_reference::merchants::Price| Price { ppm: x.ppm, fixed_minor: x.fixed_minor };
            (v.merchant_id.clone(), (p(&v.stripe), p(&v.adyen)))
        })
        .collect();
    let price = |m: &str, psp: Psp, _| plans.get(m).map(|(s, a)| if psp == Psp::Stripe { *s } else { *a });
    let sla = |_: Psp| 2;
    let outcome = reconcile(
        &lines,
        &facts,
        &Rules { sla_days: &sla, price: &price, scope: None, tolerances: &tally_recon::NO_TOLERANCE },
    );
    // The shadow's way (`tally recon shadow`): each payment matched with only its own lines and facts, under the
    // coverage and batch gaps of every line, in chunks of any size — the same breaks, by id, as the whole run.
    let payment_of = |l: &Line| {
        l.line.payment_reference.as_ref().map(|r| format!("{}:{r}", l.line.psp.as_str())).unwrap_or_default()
    };
    let mut payments: Vec<String> =
        facts.iter().map(|f| f.payment_id.clone()).chain(lines.iter().map(payment_of)).collect();
    payments.sort();
    payments.dedup();
    let (all_coverage, all_batches) =
        (tally_recon::matching::coverage(&lines), tally_recon::matching::missing_batches(&lines));
    let chunk = 1 + (seed as usize * 7919) % 400;
    let mut shadow_ids = std::collections::BTreeSet::new();
    for part in payments.chunks(chunk) {
        let part: std::collections::BTreeSet<&String> = part.iter().collect();
        let part_lines: Vec<Line> = lines.iter().filter(|l| part.contains(&payment_of(l))).cloned().collect();
        let part_facts: Vec<Fact> = facts.iter().filter(|f| part.contains(&f.payment_id)).cloned().collect();
        let scope = tally_recon::matching::Scope {
            judged: part_facts.iter().map(|f| f.fact_key.clone()).collect(),
            coverage: all_coverage.clone(),
            batches: all_batches.clone(),
        };
        let o = reconcile(
            &part_lines,
            &part_facts,
            &Rules { sla_days: &sla, price: &price, scope: Some(&scope), tolerances: &tally_recon::NO_TOLERANCE },
        );
        shadow_ids.extend(o.breaks.iter().map(|b| b.id()));
    }
    let nightly_ids: std::collections::BTreeSet<String> = outcome.breaks.iter().map(|b| b.id()).collect();
    assert_eq!(nightly_ids.len(), outcome.breaks.len(), "seed {seed}: break ids are unique");
    assert_eq!(shadow_ids, nightly_ids, "seed {seed}: the shadow's decomposition (chunks of {chunk}) differs");
    let found: Vec<Named> = outcome
        .breaks
        .iter()
        .map(|b| {
            let what = if b.kind == BreakKind::MissingBatch {
                b.detail.clone()
            } else {
                b.payment_id.clone().unwrap_or_default()
            };
            (b.kind.as_str().to_owned(), b.psp.as_str().to_owned(), what)
        })
        .collect();
    let injected: Vec<Named> = reports
        .injected
        .iter()
        .map(|i| {
            let what =
                if i.kind == "missing_batch" { i.detail.clone() } else { i.payment_id.clone().unwrap_or_default() };
            (i.kind.clone(), i.psp.clone(), what)
        })
        .collect();
    let mut found = found;
    let mut injected = injected;
    found.sort();
    injected.sort();
    // The ledger's balances from the line facts (each fact key once, as the ledger books them).
    let booked: Vec<(String, String, i64)> = tally_domain::ledger::balances(&line_facts)
        .expect("every line fact posts")
        .into_iter()
        .filter(|(_, a)| !a.is_zero())
        .map(|((account, currency), a)| (account.to_string(), currency.code().to_owned(), a.minor()))
        .collect();
    (found, injected, (booked, reports.booked.clone(), not_booked))
}

fn tally_kafka_topic(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Refunded => "payments.refund.v1",
        EventKind::Captured => "payments.capture.v1",
        _ => "payments.chargeback.v1",
    }
}

#[test]
fn the_breaks_found_are_exactly_the_breaks_the_simulator_injected_on_several_seeds() {
    for seed in [1, 7, 42] {
        let (found, injected, (booked, expected, not_booked)) = one_seed(seed, 12_000);
        let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
        for (k, ..) in &injected {
            *by_kind.entry(k.as_str()).or_default() += 1;
        }
        eprintln!("seed {seed}: {} breaks injected {by_kind:?}", injected.len());
        // Every type is exercised on these seeds (so that an empty list cannot pass for a match).
        for kind in [
            "missing_in_ledger",
            "missing_at_psp",
            "amount_mismatch",
            "fee_mismatch",
            "currency_mismatch",
            "duplicate_line",
            "missing_batch",
        ] {
            assert!(injected.iter().any(|(k, ..)| k == kind), "seed {seed}: no {kind} injected");
        }
        let missed: Vec<_> = injected.iter().filter(|i| !found.contains(i)).collect();
        let false_breaks: Vec<_> = found.iter().filter(|f| !injected.contains(f)).collect();
        assert!(
            missed.is_empty() && false_breaks.is_empty(),
            "seed {seed}: missed {missed:#?}\nfalse {false_breaks:#?}"
        );
        assert_eq!(found, injected, "seed {seed}: the same breaks, as many times");
        // Booking: every line the simulator wrote is bookable, and the books move exactly as its lines say.
        assert_eq!(not_booked, Vec::<String>::new(), "seed {seed}");
        assert!(expected.iter().any(|(a, ..)| a == "cash:adyen") && expected.iter().any(|(a, ..)| a == "psp_fees"));
        let differ: Vec<_> = expected
            .iter()
            .filter(|e| !booked.contains(e))
            .map(|e| ("expected", e))
            .chain(booked.iter().filter(|b| !expected.contains(b)).map(|b| ("booked", b)))
            .collect();
        assert!(differ.is_empty(), "seed {seed}: {differ:#?}");
    }
}
