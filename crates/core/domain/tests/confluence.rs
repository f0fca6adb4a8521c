//! I4: any permutation and duplication of the same facts gives the same payment status and the same balances.

mod common;

use common::event;
use proptest::prelude::*;
use tally_domain::ledger::balances;
use tally_domain::status::{derive_status, PaymentStatus};
use tally_domain::EventKind::{self, *};
use tally_domain::PaymentEvent;

/// A plausible set of facts for one payment — every lifecycle shape Tally books, with partial amounts — and the
/// status that shape must have, worked out from the shape itself (not by `derive_status`).
fn lifecycle(payment: usize) -> impl Strategy<Value = (Vec<PaymentEvent>, PaymentStatus)> {
    let currency = prop_oneof![Just("EUR"), Just("JPY"), Just("BHD"), Just("USD")];
    (currency, 1i64..1_000_000, 0u8..9, 0u8..4, any::<bool>(), 0u8..7, 0i64..100).prop_map(
        move |(code, amount, shape, refunds, refund_fails, dispute, fee_pct)| {
            let ch = format!("ch_{payment}");
            let merchant = format!("m{}", payment % 3);
            let e = |kind: EventKind, reference: &str, minor: i64| event(kind, &ch, reference, &merchant, minor, code);
            let mut out = Vec::new();
            if shape == 0 {
                out.push(e(AuthorizationFailed, &ch, amount));
                return (out, PaymentStatus::AuthorizationFailed);
            }
            out.push(e(Authorized, &ch, amount));
            if shape == 1 {
                // A capture the scheme reversed: stated with the capture it reverses.
                let cap = format!("cap_{payment}");
                out.extend([e(Captured, &cap, amount), e(CaptureReversed, &cap, amount)]);
                return (out, PaymentStatus::CaptureFailed);
            }
            if shape == 8 {
                out.push(e(Canceled, &ch, amount));
                return (out, PaymentStatus::Canceled);
            }
            if shape == 2 {
                return (out, PaymentStatus::Authorized);
            }
            out.push(e(Captured, &ch, amount));
            if shape >= 4 {
                let mut settled = e(Settled, &format!("st_{payment}"), amount);
                settled.fee = Some(tally_money::Amount::from_minor(amount * fee_pct / 100));
                out.push(settled);
            }
            let part = (amount / 4).max(1);
            for r in 0..refunds {
                let re = format!("re_{payment}_{r}");
                out.push(e(Refunded, &re, part));
                if refund_fails && r == 0 {
                    out.push(e(RefundFailed, &re, part));
                }
            }
            match dispute {
                1 => out.push(e(ChargebackOpened, &ch, amount)),
                2 => out.extend([e(ChargebackOpened, &ch, amount), e(ChargebackWon, &ch, amount)]),
                3 => out.extend([e(ChargebackOpened, &ch, amount), e(ChargebackLost, &ch, amount)]),
                // The later stages of a dispute, under the dispute's one reference.
                4 => out.extend([
                    e(ChargebackOpened, &ch, amount),
                    e(ChargebackWon, &ch, amount),
                    e(SecondChargeback, &ch, amount),
                ]),
                5 => out.extend([
                    e(ChargebackOpened, &ch, amount),
                    e(ChargebackWon, &ch, amount),
                    e(SecondChargeback, &ch, amount),
                    e(PrearbitrationWon, &ch, amount),
                ]),
                6 => out.extend([
                    e(ChargebackOpened, &ch, amount),
                    e(ChargebackWon, &ch, amount),
                    e(SecondChargeback, &ch, amount),
                    e(PrearbitrationLost, &ch, amount),
                ]),
                _ => {}
            }
            let net_refunds = i64::from(refunds) - i64::from(refund_fails && refunds > 0);
            let expected = match dispute {
                1 | 4 => PaymentStatus::Disputed,
                2 | 5 => PaymentStatus::ChargebackWon,
                3 | 6 => PaymentStatus::ChargebackLost,
                _ if net_refunds > 0 && net_refunds * part >= amount => PaymentStatus::Refunded,
                _ if net_refunds > 0 => PaymentStatus::PartiallyRefunded,
                _ if shape >= 4 => PaymentStatus::Settled,
                _ => PaymentStatus::Captured,
            };
            (out, expected)
        },
    )
}

fn statuses(events: &[PaymentEvent]) -> Vec<(String, Option<PaymentStatus>)> {
    let mut ids: Vec<_> = events.iter().map(|e| e.payment_id.clone()).collect();
    ids.sort();
    ids.dedup();
    ids.into_iter()
        .map(|id| {
            let s = derive_status(events.iter().filter(|e| e.payment_id == id));
            (id, s)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn permutation_and_duplication_give_the_same_status_and_balances(
        payments in (1usize..6).prop_flat_map(|n| (0..n).map(lifecycle).collect::<Vec<_>>()),
        dup_picks in proptest::collection::vec((any::<prop::sample::Index>(), 0i64..3), 0..12),
        shuffle_seed in any::<u64>(),
    ) {
        let expected: Vec<(String, Option<PaymentStatus>)> = {
            let mut v: Vec<_> =
                payments.iter().map(|(events, status)| (events[0].payment_id.clone(), Some(*status))).collect();
            v.sort();
            v
        };
        let original: Vec<PaymentEvent> = payments.into_iter().flat_map(|(events, _)| events).collect();
        let mut delivered = original.clone();
        for (pick, extra) in &dup_picks {
            let mut dup = pick.get(&original).clone();
            // A retried delivery: same fact, different delivery metadata …
            dup.received_at = tally_domain::Timestamp::from_unix_secs(1_800_000_000).unwrap();
            dup.source_event_id.push_str("_retry");
            // … and sometimes conflicting content (a larger amount under the same fact key), which the ledger
            // records as an exception: the result must still not depend on which copy arrived first.
            dup.money.amount = tally_money::Amount::from_minor(dup.money.amount.minor() + extra);
            delivered.push(dup);
        }
        // A deterministic Fisher–Yates shuffle driven by the generated seed.
        let mut state = shuffle_seed | 1;
        for i in (1..delivered.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            delivered.swap(i, (state % (i as u64 + 1)) as usize);
        }

        prop_assert_eq!(statuses(&original), expected.clone());
        prop_assert_eq!(statuses(&delivered), expected);
        prop_assert_eq!(balances(&delivered).unwrap(), balances(&original).unwrap());
        // The same deliveries in reverse order: nothing may depend on which copy came first.
        delivered.reverse();
        prop_assert_eq!(balances(&delivered).unwrap(), balances(&original).unwrap());
    }
}

#[test]
fn status_precedence_scenarios() {
    let e = |kind, reference: &str, minor| event(kind, "ch_1", reference, "m1", minor, "EUR");
    let cases: Vec<(Vec<PaymentEvent>, Option<PaymentStatus>)> = vec![
        (vec![], None),
        (vec![e(Payout, "po_1", 100)], None),
        (vec![e(AuthorizationFailed, "ch_1", 100)], Some(PaymentStatus::AuthorizationFailed)),
        (vec![e(Authorized, "ch_1", 100)], Some(PaymentStatus::Authorized)),
        (vec![e(Authorized, "ch_1", 100), e(CaptureFailed, "c1", 100)], Some(PaymentStatus::CaptureFailed)),
        (vec![e(Captured, "ch_1", 100), e(Authorized, "ch_1", 100)], Some(PaymentStatus::Captured)),
        (vec![e(Captured, "ch_1", 100), e(Settled, "s1", 100)], Some(PaymentStatus::Settled)),
        (vec![e(Captured, "ch_1", 100), e(Refunded, "re_1", 40)], Some(PaymentStatus::PartiallyRefunded)),
        (
            vec![e(Captured, "ch_1", 100), e(Refunded, "re_1", 40), e(Refunded, "re_2", 60)],
            Some(PaymentStatus::Refunded),
        ),
        (
            vec![e(Captured, "ch_1", 100), e(Refunded, "re_1", 40), e(RefundFailed, "re_1", 40)],
            Some(PaymentStatus::Captured),
        ),
        // A refund before its capture: refunded until the capture is known.
        (vec![e(Refunded, "re_1", 40)], Some(PaymentStatus::Refunded)),
        (vec![e(Captured, "ch_1", 100), e(ChargebackOpened, "ch_1", 100)], Some(PaymentStatus::Disputed)),
        (
            vec![e(ChargebackOpened, "ch_1", 100), e(ChargebackWon, "ch_1", 100), e(Refunded, "re_1", 100)],
            Some(PaymentStatus::ChargebackWon),
        ),
        (vec![e(ChargebackLost, "ch_1", 100), e(ChargebackWon, "ch_1", 100)], Some(PaymentStatus::ChargebackLost)),
        // Stage order, not arrival order: the second chargeback reopens a won dispute, pre-arbitration ends it.
        (
            vec![e(ChargebackOpened, "d1", 100), e(ChargebackWon, "d1", 100), e(SecondChargeback, "d1", 100)],
            Some(PaymentStatus::Disputed),
        ),
        (
            vec![e(PrearbitrationWon, "d1", 100), e(SecondChargeback, "d1", 100), e(ChargebackOpened, "d1", 100)],
            Some(PaymentStatus::ChargebackWon),
        ),
        (vec![e(PrearbitrationLost, "d1", 100), e(ChargebackWon, "d1", 100)], Some(PaymentStatus::ChargebackLost)),
        // Captures net of reversals; a release is not a capture.
        (
            vec![e(Authorized, "ch_1", 100), e(Captured, "c1", 100), e(CaptureReversed, "c1", 100)],
            Some(PaymentStatus::CaptureFailed),
        ),
        (
            vec![e(Captured, "c1", 100), e(CaptureReversed, "c1", 100), e(Captured, "c2", 60)],
            Some(PaymentStatus::Captured),
        ),
        (vec![e(Authorized, "ch_1", 100), e(Canceled, "ch_1", 100)], Some(PaymentStatus::Canceled)),
        (vec![e(Captured, "ch_1", 70), e(Canceled, "re_1", 30)], Some(PaymentStatus::Captured)),
        // A full refund of what was captured, after a partial capture.
        (
            vec![e(Captured, "ch_1", 70), e(Canceled, "re_1", 30), e(Refunded, "re_2", 70)],
            Some(PaymentStatus::Refunded),
        ),
    ];
    for (events, expected) in cases {
        let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
        assert_eq!(derive_status(&events), expected, "{kinds:?}");
    }
}
