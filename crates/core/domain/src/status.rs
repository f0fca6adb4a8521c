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
    /// The authorization was released (cancelled or expired) and nothing was captured.
    Canceled,
    /// A capture was refused or reversed and nothing captured remains.
    CaptureFailed,
    Captured,
    Settled,
    PartiallyRefunded,
    Refunded,
    Disputed,
    ChargebackWon,
    ChargebackLost,
}

/// The stage of a dispute a fact belongs to, in the PSP's stage order (Adyen: CHARGEBACK → CHARGEBACK_REVERSED or
/// lost → SECOND_CHARGEBACK → PREARBITRATION_WON / _LOST; Stripe: funds withdrawn → reinstated or lost), with the
/// status the dispute has when that stage is the latest one known.
fn dispute_stage(kind: EventKind) -> Option<(u8, PaymentStatus)> {
    match kind {
        EventKind::ChargebackOpened => Some((1, PaymentStatus::Disputed)),
        EventKind::ChargebackWon => Some((2, PaymentStatus::ChargebackWon)),
        EventKind::ChargebackLost => Some((2, PaymentStatus::ChargebackLost)),
        EventKind::SecondChargeback => Some((3, PaymentStatus::Disputed)),
        EventKind::PrearbitrationWon => Some((4, PaymentStatus::ChargebackWon)),
        EventKind::PrearbitrationLost => Some((4, PaymentStatus::ChargebackLost)),
        _ => None,
    }
}

/// The status of one payment given its facts (duplicates allowed), or `None` when no fact in the set is about the
/// payment lifecycle (payouts and fees alone have no payment status).
///
/// Precedence, highest first:
/// - a dispute: the outcome of its latest *stage* (by the PSP's stage order, never by arrival): disputed while a
///   (second) chargeback is open, won or lost when that stage ends; when one stage has both a returned part and a
///   written-off part (Stripe reinstating part of a dispute), lost;
/// - refunded (net refunds ≥ net captured) > partially refunded (net refunds > 0);
/// - settled > captured (net captured > 0) > capture failed (a capture reversed or refused, none left) > canceled
///   > authorized > authorization failed.
///
/// Net refunds are refunds minus failed refunds, net captured is captures minus reversed captures; a refund that
/// arrives before its capture counts as refunded until the capture arrives, and the sink records it as a
/// data-quality exception meanwhile.
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
    let captured = Amount::from_minor(total(EventKind::Captured).saturating_sub(total(EventKind::CaptureReversed)));
    let dispute = distinct
        .values()
        .filter_map(|e| dispute_stage(e.kind))
        // The latest stage wins; within a stage, lost (the larger status) wins over won.
        .max();

    let status = if let Some((_, status)) = dispute {
        status
    } else if net_refunded.minor() > 0 && net_refunded >= captured {
        PaymentStatus::Refunded
    } else if net_refunded.minor() > 0 {
        PaymentStatus::PartiallyRefunded
    } else if has(EventKind::Settled) {
        PaymentStatus::Settled
    } else if captured.minor() > 0 {
        PaymentStatus::Captured
    } else if has(EventKind::CaptureReversed) || has(EventKind::CaptureFailed) {
        PaymentStatus::CaptureFailed
    } else if has(EventKind::Canceled) {
        PaymentStatus::Canceled
    } else if has(EventKind::Authorized) {
        PaymentStatus::Authorized
    } else if has(EventKind::AuthorizationFailed) {
        PaymentStatus::AuthorizationFailed
    } else {
        return None;
    };
    Some(status)
}
