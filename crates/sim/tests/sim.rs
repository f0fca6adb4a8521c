//! The generator's promises: determinism, and truth that agrees with what the PSP formats say.

use std::collections::{BTreeMap, BTreeSet};

use tally_domain::{EventKind, PaymentEvent, Psp, Timestamp};
use tally_psp::{Endpoint, Outcome};
use tally_sim::{generate, Signing, SimConfig, TruthFact};

fn small(seed: u64) -> SimConfig {
    let mut c = SimConfig::new(seed, 3000);
    c.merchants = 2000;
    // Raise the fault rates so that a small workload has every kind of fault.
    c.forged_rate = 0.01;
    c.malformed_rate = 0.01;
    c.pan_rate = 0.01;
    c.unknown_type_rate = 0.01;
    c.chargeback_rate = 0.05;
    c
}

fn bytes(w: &tally_sim::Workload) -> Vec<u8> {
    let mut out = serde_json::to_vec(&w.truth).unwrap();
    for d in &w.deliveries {
        out.extend(serde_json::to_vec(d).unwrap());
    }
    for m in &w.merchants {
        out.extend(serde_json::to_vec(m).unwrap());
    }
    out
}

#[test]
fn the_same_seed_gives_byte_identical_output_and_another_seed_does_not() {
    let a = bytes(&generate(&small(42)));
    let b = bytes(&generate(&small(42)));
    assert_eq!(a, b);
    assert_ne!(a, bytes(&generate(&small(43))));
}

/// What Tally's normalisers make of every genuine delivery (and duplicate) of `w`, at a test-mode endpoint.
fn normalised(w: &tally_sim::Workload) -> Vec<PaymentEvent> {
    let at = Timestamp::from_unix_secs(1_800_000_000).unwrap();
    let mut booked = Vec::new();
    for d in w.deliveries.iter().filter(|d| d.fault == "fact" || d.fault == "duplicate") {
        for outcome in tally_psp::normalize(d.psp, d.body.as_bytes(), at, &Endpoint::default())
            .unwrap_or_else(|e| panic!("{e}: {}", d.body))
        {
            match outcome {
                Outcome::Events(events) => booked.extend(events),
                other => panic!("a genuine delivery was not booked: {other:?}"),
            }
        }
    }
    booked
}

fn named(e: &PaymentEvent) -> TruthFact {
    TruthFact {
        payment_id: e.payment_id.clone(),
        kind: e.kind.as_str().to_owned(),
        psp_reference: e.psp_reference.clone(),
        original_reference: e.original_reference.clone(),
    }
}

#[test]
fn every_genuine_delivery_normalises_to_exactly_the_intended_facts() {
    let w = generate(&small(7));
    let booked = normalised(&w);
    let names: BTreeSet<TruthFact> = booked.iter().map(named).collect();
    let truth: BTreeSet<TruthFact> = w.truth.facts.iter().cloned().collect();
    assert_eq!(names.difference(&truth).collect::<Vec<_>>(), Vec::<&TruthFact>::new(), "booked, not intended");
    assert_eq!(truth.difference(&names).collect::<Vec<_>>(), Vec::<&TruthFact>::new(), "intended, not booked");
    // Content too: every booked fact states what was intended.
    let intended: BTreeMap<_, _> = w.facts.iter().map(|f| (named(f), f)).collect();
    for e in &booked {
        let i = intended[&named(e)];
        assert!(i.same_content(e), "{e:?} vs {i:?}");
    }
}

/// The simulator states what moved per payment, from the lifecycle it drew; Tally's normalisers and posting rules
/// turn the PSPs' deliveries into journals. Two independent statements: they must agree to the minor unit, per
/// payment and per account (issue 12, item 16).
#[test]
fn tallys_postings_of_the_deliveries_move_exactly_the_money_the_simulator_says_moved() {
    for seed in [7, 8, 9] {
        let w = generate(&small(seed));
        let booked = normalised(&w);
        let mut per_payment: BTreeMap<(String, String), i64> = BTreeMap::new();
        for e in tally_domain::distinct_facts(&booked).into_values() {
            let Some(journal) = tally_domain::ledger::postings(e).unwrap() else { continue };
            for entry in journal.entries {
                let class = entry.account.to_string().split(':').next().unwrap().to_owned();
                *per_payment.entry((e.payment_id.clone(), class)).or_default() += entry.money.amount.minor();
            }
        }
        per_payment.retain(|_, a| *a != 0);
        let mut stated: BTreeMap<(String, String), i64> = BTreeMap::new();
        for m in &w.truth.moved {
            for (account, amount) in m.accounts().into_iter().filter(|(_, a)| *a != 0) {
                stated.insert((m.payment_id.clone(), account.split(':').next().unwrap().to_owned()), amount);
            }
        }
        let moved: BTreeMap<&str, &tally_sim::Moved> =
            w.truth.moved.iter().map(|m| (m.payment_id.as_str(), m)).collect();
        let wrong: Vec<String> = stated
            .iter()
            .filter(|(k, a)| per_payment.get(*k) != Some(*a))
            .chain(per_payment.iter().filter(|(k, a)| stated.get(*k) != Some(*a)))
            .map(|((p, class), _)| {
                let (posted, said) =
                    (per_payment.get(&(p.clone(), class.clone())), stated.get(&(p.clone(), class.clone())));
                format!("{p} {class}: posted {posted:?}, moved {said:?} ({:?})", moved.get(p.as_str()))
            })
            .collect();
        assert!(
            wrong.is_empty(),
            "seed {seed}: {} differences, first: {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(3)]
        );
        // And in total, per account and currency.
        let mut totals: BTreeMap<(String, String), i64> = BTreeMap::new();
        for ((account, currency), amount) in tally_domain::ledger::balances(&booked).unwrap() {
            totals.insert((account.to_string(), currency.code().to_owned()), amount.minor());
        }
        totals.retain(|_, a| *a != 0);
        let stated: BTreeMap<(String, String), i64> =
            w.truth.balances.iter().map(|(a, c, m)| ((a.clone(), c.clone()), *m)).collect();
        assert_eq!(totals, stated, "seed {seed}");
        // The statuses Tally derives are the states the PSPs report.
        let mut by_payment: BTreeMap<&str, Vec<&PaymentEvent>> = BTreeMap::new();
        for e in &booked {
            by_payment.entry(&e.payment_id).or_default().push(e);
        }
        for (payment, status) in &w.truth.statuses {
            let derived = tally_domain::status::derive_status(by_payment[payment.as_str()].iter().copied());
            let derived = derived.map(|s| serde_json::to_value(s).unwrap().as_str().unwrap().to_owned());
            assert_eq!(derived.as_deref(), Some(status.as_str()), "seed {seed}: {payment}");
        }
    }
}

#[test]
fn other_mode_payments_are_never_booked() {
    let w = generate(&SimConfig { other_mode_rate: 0.05, ..small(5) });
    assert!(w.truth.unbooked_payments.len() >= 20, "{}", w.truth.unbooked_payments.len());
    let at = Timestamp::from_unix_secs(1_800_000_000).unwrap();
    for d in w.deliveries.iter().filter(|d| d.fault == "other_mode") {
        for outcome in tally_psp::normalize(d.psp, d.body.as_bytes(), at, &Endpoint::default()).unwrap() {
            assert!(matches!(outcome, Outcome::OtherMode { live: true, .. }), "{outcome:?}");
        }
    }
    let unbooked: BTreeSet<&String> = w.truth.unbooked_payments.iter().collect();
    assert!(w.truth.facts.iter().all(|f| !unbooked.contains(&f.payment_id)));
    assert!(w.truth.moved.iter().all(|m| !unbooked.contains(&m.payment_id)));
}

#[test]
fn faults_are_present_and_expected_to_be_refused_for_the_right_reason() {
    let w = generate(&small(11));
    let count = |fault: &str| w.deliveries.iter().filter(|d| d.fault == fault).count();
    for fault in ["duplicate", "forged", "malformed", "pan", "unknown_type"] {
        assert!(count(fault) >= 5, "{fault}: {}", count(fault));
    }
    let at = Timestamp::from_unix_secs(1_800_000_000).unwrap();
    for d in &w.deliveries {
        match d.fault {
            "forged" if d.psp == Psp::Stripe => assert_eq!(d.signing, Signing::Forged),
            "forged" => {
                let key = tally_psp::adyen::HmacKey::from_hex(tally_sim::ADYEN_KEY).unwrap();
                assert!(tally_psp::adyen::verify_notification(d.body.as_bytes(), &[key]).is_err());
            }
            "malformed" => {
                assert_eq!(
                    tally_psp::normalize(d.psp, d.body.as_bytes(), at, &Endpoint::default()).unwrap_err().code(),
                    "malformed_json"
                )
            }
            "pan" => assert_eq!(
                tally_psp::normalize(d.psp, d.body.as_bytes(), at, &Endpoint::default()).unwrap_err().code(),
                "pan_detected"
            ),
            "unknown_type" => assert!(matches!(
                tally_psp::normalize(d.psp, d.body.as_bytes(), at, &Endpoint::default()).unwrap()[..],
                [Outcome::Unknown { .. }]
            )),
            _ => {}
        }
    }
    // Genuine Adyen deliveries carry a valid HMAC; nothing genuine carries a card number.
    let key = tally_psp::adyen::HmacKey::from_hex(tally_sim::ADYEN_KEY).unwrap();
    for d in w.deliveries.iter().filter(|d| d.fault == "fact") {
        if d.psp == Psp::Adyen {
            tally_psp::adyen::verify_notification(d.body.as_bytes(), std::slice::from_ref(&key)).unwrap();
        }
        assert!(tally_psp::scan_for_pans(d.body.as_bytes()).is_empty());
    }
}

#[test]
fn lifecycles_have_the_configured_shape() {
    let w = generate(&small(3));
    let statuses: Vec<&str> = w.truth.statuses.iter().map(|(_, s)| s.as_str()).collect();
    let share = |s: &str| statuses.iter().filter(|x| **x == s).count() as f64 / statuses.len() as f64;
    assert!((0.04..0.13).contains(&share("authorization_failed")), "{}", share("authorization_failed"));
    assert!(share("captured") > 0.6, "{}", share("captured"));
    assert!(share("canceled") > 0.01, "{}", share("canceled"));
    assert!(share("refunded") + share("partially_refunded") > 0.03);
    assert!(share("chargeback_won") + share("chargeback_lost") + share("disputed") > 0.02);
    let currencies: BTreeSet<&str> = w.facts.iter().map(|f| f.money.currency.code()).collect();
    for c in ["JPY", "BHD", "EUR", "CLP", "CVE", "IDR", "ISK", "MGA"] {
        assert!(currencies.contains(c), "{c}: {currencies:?}");
    }
    // The PSPs' sequences the mappings must get right (issue 12), each present.
    let kinds: BTreeSet<EventKind> = w.facts.iter().map(|f| f.kind).collect();
    for k in [EventKind::Canceled, EventKind::RefundFailed, EventKind::Fee, EventKind::SecondChargeback] {
        assert!(kinds.contains(&k), "{k:?}");
    }
    assert!(kinds.contains(&EventKind::PrearbitrationWon) || kinds.contains(&EventKind::PrearbitrationLost));
    let partial = w.truth.moved.iter().filter(|m| m.captured > 0 && m.captured < m.authorized).count();
    let reinstated_in_part = w.truth.moved.iter().filter(|m| m.dispute_returned > 0 && m.dispute_lost > 0).count();
    assert!(partial > 10 && reinstated_in_part > 0, "{partial} partial captures, {reinstated_in_part} partly won");
    let batches = w
        .deliveries
        .iter()
        .filter(|d| d.psp == Psp::Adyen && d.body.matches("NotificationRequestItem").count() > 1)
        .count();
    assert!(batches > 20, "{batches} multi-item Adyen notifications");
    let flips = w
        .deliveries
        .iter()
        .filter(|d| d.body.contains(r#""eventCode":"REFUND""#) && d.body.contains(r#""success":"false""#))
        .count();
    assert!(flips > 0, "an Adyen refund flipped to success=false");
    assert!(w.merchants.len() >= 2000 && w.merchants.iter().any(|m| m.valid_to.is_some()), "SCD2 versions present");
}

/// The simulator's merchant dimension is a file `tally reference load merchants` accepts: every version valid, the
/// changed merchants closed the day their second version opens (as-of lookups either side of it).
#[test]
fn the_merchant_dimension_is_a_valid_scd2_file() {
    use tally_reference::merchants::{as_of, merge, Change, MerchantDimension};
    let w = generate(&small(7));
    let file =
        MerchantDimension::parse(tally_sim::merchants_csv(&w.merchants).as_bytes()).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(file.versions.len(), w.merchants.len());
    let changes = merge(&[], &file).unwrap();
    assert_eq!(changes.len(), file.versions.len());
    assert!(changes.iter().all(|c| matches!(c, Change::Open(_))));
    let changed: BTreeSet<&str> =
        file.versions.iter().filter(|v| v.valid_to.is_some()).map(|v| v.merchant_id.as_str()).collect();
    assert!(!changed.is_empty(), "some merchants change over time");
    for id in &changed {
        let (before, after) = (
            as_of(&file.versions, id, time::macros::date!(2026 - 05 - 31)).unwrap(),
            as_of(&file.versions, id, time::macros::date!(2026 - 06 - 01)).unwrap(),
        );
        assert_ne!(before.risk_tier, after.risk_tier, "{id}");
    }
}

/// The daily truth (stated facts dated by their first statement) and the per-payment truth (the lifecycle) are
/// two derivations inside the simulator: summed per merchant and currency they must agree, and days must spread.
#[test]
fn the_daily_movements_add_up_to_what_moved_per_merchant() {
    // The demo's size: its payments span several days.
    let w = generate(&SimConfig::new(5, 20_000));
    let mut by_days: BTreeMap<(String, String), [i64; 4]> = BTreeMap::new();
    for d in &w.truth.daily {
        let t = by_days.entry((d.merchant.clone(), d.currency.clone())).or_default();
        for (i, v) in [d.captured, d.refunded, d.dispute_withdrawn, d.dispute_lost].into_iter().enumerate() {
            t[i] += v;
        }
    }
    let mut by_payments: BTreeMap<(String, String), [i64; 4]> = BTreeMap::new();
    for m in &w.truth.moved {
        let t = by_payments.entry((m.merchant.clone(), m.currency.clone())).or_default();
        let v = [m.captured, m.refunded, m.dispute_withdrawn - m.dispute_returned, m.dispute_lost];
        for i in 0..4 {
            t[i] += v[i];
        }
    }
    by_days.retain(|_, t| t.iter().any(|v| *v != 0));
    by_payments.retain(|_, t| t.iter().any(|v| *v != 0));
    assert!(by_payments.len() > 100, "{}", by_payments.len());
    assert_eq!(by_days, by_payments);
    let days: BTreeSet<&str> = w.truth.daily.iter().map(|d| d.day.as_str()).collect();
    assert!(days.len() >= 3, "{days:?}");
}
