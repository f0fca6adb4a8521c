//! Payment status derived from the *set* of a payment's facts with a fixed precedence, so that any arrival order
//! and any duplication of the same facts gives the same status (I4).

use serde::{Deserialize, Serialize};
use tally_money::Amount;

use crate::{distinct_facts, EventKind, PaymentEvent};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    AuthorizationFailed,
    Authorized,
    CaptureFailed,
    Captured,
    Settled,
    PartiallyRefunded,
    Refunded,
    Disputed,
    ChargebackWon,
    ChargebackLost,
}

/// The status of one payment given its facts (duplicates allowed), or `None` when no fact in the set is about the
/// payment lifecycle (payouts and fees alone have no payment status).
///
/// Precedence, highest first: chargeback lost > chargeback won > disputed > refunded (net refunds ≥ captured) >
/// partially refunded (net refunds > 0) > settled > captured > capture failed > authorized > authorization failed.
/// Net refunds are refunds minus failed refunds; a refund that arrives before its capture counts as refunded until
/// the capture arrives, and the sink records it as a data-quality exception meanwhile.
pub fn derive_status<'a, I>(events: I) -> Option<PaymentStatus>
where
    I: IntoIterator<Item = &'a PaymentEvent>,
{
    // Deduplicate by fact key first: the status is a function of the set, not the multiset.
    let distinct = distinct_facts(events);
    let has = |k: EventKind| distinct.values().any(|e| e.kind == k);
    // Saturating sums: a status must always be derivable; absurd totals only saturate the comparison.
    let total = |k: EventKind| {
        distinct.values().filter(|e| e.kind == k).fold(0i64, |acc, e| acc.saturating_add(e.money.amount.minor()))
    };
    let net_refunded = Amount::from_minor(total(EventKind::Refunded).saturating_sub(total(EventKind::RefundFailed)));
    let captured = Amount::from_minor(total(EventKind::Captured));

    let status = if has(EventKind::ChargebackLost) {
        PaymentStatus::ChargebackLost
    } else if has(EventKind::ChargebackWon) {
        PaymentStatus::ChargebackWon
    } else if has(EventKind::ChargebackOpened) {
        PaymentStatus::Disputed
    } else if net_refunded.minor() > 0 && net_refunded >= captured {
        PaymentStatus::Refunded
    } else if net_refunded.minor() > 0 {
        PaymentStatus::PartiallyRefunded
    } else if has(EventKind::Settled) {
        PaymentStatus::Settled
    } else if has(EventKind::Captured) {
        PaymentStatus::Captured
    } else if has(EventKind::CaptureFailed) {
        PaymentStatus::CaptureFailed
    } else if has(EventKind::Authorized) {
        PaymentStatus::Authorized
    } else if has(EventKind::AuthorizationFailed) {
        PaymentStatus::AuthorizationFailed
    } else {
        return None;
    };
    Some(status)
}
