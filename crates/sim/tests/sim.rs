//! The generator's promises: determinism, and truth that agrees with what the PSP formats say.

use std::collections::BTreeSet;

use tally_domain::{Psp, Timestamp};
use tally_psp::{Endpoint, Outcome};
use tally_sim::{generate, Signing, SimConfig};

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

#[test]
fn every_genuine_delivery_normalises_to_exactly_the_intended_facts() {
    let w = generate(&small(7));
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
    let keys: BTreeSet<String> = booked.iter().map(|e| e.fact_key().to_string()).collect();
    let truth: BTreeSet<String> = w.truth.fact_keys.iter().cloned().collect();
    assert_eq!(keys, truth);
    // Content too: every booked fact states what was intended.
    let intended: std::collections::HashMap<_, _> = w.facts.iter().map(|f| (f.fact_key(), f)).collect();
    for e in &booked {
        let i = intended[&e.fact_key()];
        assert!(i.same_content(e), "{e:?} vs {i:?}");
    }
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
    assert!(share("captured") > 0.7);
    assert!(share("refunded") + share("partially_refunded") > 0.03);
    assert!(share("chargeback_won") + share("chargeback_lost") + share("disputed") > 0.02);
    let currencies: BTreeSet<&str> = w.facts.iter().map(|f| f.money.currency.code()).collect();
    assert!(currencies.contains("JPY") && currencies.contains("BHD") && currencies.contains("EUR"), "{currencies:?}");
    assert!(w.merchants.len() >= 2000 && w.merchants.iter().any(|m| m.valid_to.is_some()), "SCD2 versions present");
}
