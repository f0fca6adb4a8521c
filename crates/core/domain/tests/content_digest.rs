//! The edge's content digest (issue 12, item 8) agrees with `same_content`, the ledger's content comparison: a
//! re-delivery that differs in money, fee, payment or merchant gets another digest; one that differs only in delivery
//! details does not.

mod common;

use common::event;
use proptest::prelude::*;
use tally_domain::{EventKind, PaymentEvent, Timestamp};
use tally_money::Amount;

/// One change to a copy of the event: content changes (0–5) and delivery-detail changes (6–8).
fn change(e: &PaymentEvent, which: u8, n: i64) -> PaymentEvent {
    let mut c = e.clone();
    match which {
        0 => c.money = tally_money::Money::new(Amount::from_minor(e.money.amount.minor() + n), e.money.currency),
        1 => c.fee = Some(Amount::from_minor(n)),
        2 => c.payment_id = format!("{}x{n}", e.payment_id),
        3 => c.merchant_id = format!("{}x{n}", e.merchant_id),
        4 => c.money = tally_money::Money::new(e.money.amount, tally_money::Currency::from_code("USD").unwrap()),
        5 => c.psp_reference = format!("{}x{n}", e.psp_reference),
        6 => c.received_at = Timestamp::from_unix_secs(1_760_000_000 + n).unwrap(),
        7 => c.source_event_id = format!("evt_other_{n}"),
        _ => c.occurred_at = Timestamp::from_unix_secs(1_700_000_000 + n).unwrap(),
    }
    c
}

proptest! {
    #[test]
    fn the_digest_differs_exactly_when_the_content_does(which in 0u8..9, n in 1i64..1_000_000, minor in 1i64..10_000_000) {
        let e = event(EventKind::Captured, "ch_1", "ch_1", "m1", minor, "EUR");
        let c = change(&e, which, n);
        prop_assert_eq!(e.content_digest() == c.content_digest(), e.same_content(&c));
        prop_assert_eq!(e.content_digest() == c.content_digest(), which >= 6);
    }
}

#[test]
fn no_fee_and_a_zero_fee_are_different_content() {
    let e = event(EventKind::Settled, "ch_1", "st_1", "m1", 1000, "EUR");
    let mut zero = e.clone();
    zero.fee = Some(Amount::from_minor(0));
    assert!(!e.same_content(&zero));
    assert_ne!(e.content_digest(), zero.content_digest());
}
