//! Builders shared by the domain's integration tests.
#![allow(dead_code)]

use tally_domain::{Attributes, EventKind, PaymentEvent, Psp, Source, Timestamp};
use tally_money::{Amount, Currency, Money};

pub fn event(kind: EventKind, payment: &str, reference: &str, merchant: &str, minor: i64, code: &str) -> PaymentEvent {
    PaymentEvent {
        kind,
        payment_id: format!("stripe:{payment}"),
        psp: Psp::Stripe,
        psp_reference: reference.to_owned(),
        original_reference: (reference != payment).then(|| payment.to_owned()),
        merchant_id: merchant.to_owned(),
        money: Money::new(Amount::from_minor(minor), Currency::from_code(code).unwrap()),
        fee: None,
        occurred_at: Timestamp::from_unix_secs(1_700_000_000).unwrap(),
        received_at: Timestamp::from_unix_secs(1_700_000_001).unwrap(),
        source: Source::Webhook,
        source_event_id: format!("evt_{reference}_{kind}"),
        attributes: Attributes::default(),
    }
}
