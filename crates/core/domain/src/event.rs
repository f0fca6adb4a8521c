//! The canonical payment event (DESIGN §3): every PSP webhook, API call and report row becomes one or more of these.

use std::fmt;

use serde::{Deserialize, Serialize};
use tally_money::{Amount, Money};

use crate::fact_key::{FactIdentity, FactKey};
use crate::Timestamp;

/// The payment service provider a fact comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Psp {
    Stripe,
    Adyen,
}

impl Psp {
    pub fn as_str(self) -> &'static str {
        match self {
            Psp::Stripe => "stripe",
            Psp::Adyen => "adyen",
        }
    }
}

impl fmt::Display for Psp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Psp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stripe" => Ok(Psp::Stripe),
            "adyen" => Ok(Psp::Adyen),
            other => Err(format!("unknown PSP {other:?} (expected stripe or adyen)")),
        }
    }
}

/// Which door a fact came in through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Webhook,
    Api,
    SettlementReport,
}

/// What happened. The ledger postings and the payment status are functions of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Authorized,
    AuthorizationFailed,
    Captured,
    /// A capture the PSP refused outright (schema v1; Adyen's `CAPTURE` with `success=false` was mapped here). No
    /// money moves. Since v2 Tally states a failed capture as [`EventKind::CaptureReversed`] beside its capture.
    CaptureFailed,
    Settled,
    Refunded,
    RefundFailed,
    ChargebackOpened,
    ChargebackWon,
    ChargebackLost,
    Payout,
    Fee,
    // Added in schema v2 (appended: Avro enum positions of v1 symbols never move).
    /// A booked capture taken back by the scheme or the PSP (Adyen `CAPTURE_FAILED`, a `CAPTURE` flipped to
    /// `success=false`). Always stated together with the capture it reverses, so that it never reverses money that
    /// was not booked.
    CaptureReversed,
    /// An authorization released without capture: cancelled, expired, or the uncaptured remainder of a partial
    /// capture. No money moves.
    Canceled,
    /// A dispute's second stage (Adyen `SECOND_CHARGEBACK`, the issuer's pre-arbitration): funds withdrawn again
    /// after the first chargeback was reversed.
    SecondChargeback,
    /// The merchant won the pre-arbitration: the second withdrawal is returned.
    PrearbitrationWon,
    /// The merchant lost the pre-arbitration: the second withdrawal is a loss.
    PrearbitrationLost,
    // Added in schema v3: settlement report lines (`source = settlement_report`, ADR 0015 §4). They move the PSP
    // balance and settle the receivable; they never change a payment's status.
    /// A report line that credited the PSP balance: a capture settled, a failed refund or a dispute's funds
    /// returned. `money` = the line's gross, `fee` = what the PSP kept of it (gross − net).
    SettledCredit,
    /// A report line that debited the PSP balance: a refund, a capture reversal, a chargeback, or a fee of its own.
    /// `money` = the gross taken (0 for a fee line), `fee` = the fee on top; the balance lost `money + fee`.
    SettledDebit,
    /// A report line that paid the PSP balance out to the bank account; `money` = the amount paid out.
    SettledPayout,
    // Added in schema v4: the two currency legs of a report line settled across currencies (Adyen's gross in one
    // currency, net in another; ADR 0015 §4). The line's own settled fact is in the net currency; these move the
    // receivable between the two currencies through `fx_conversion:{psp}`, one currency per fact.
    /// The receivable leaves this currency: `money` is converted away (DR fx_conversion, CR psp_receivable).
    ConversionOut,
    /// The receivable arrives in this currency: `money` is what the conversion gave (DR psp_receivable, CR
    /// fx_conversion).
    ConversionIn,
}

impl EventKind {
    pub const ALL: [EventKind; 22] = [
        EventKind::Authorized,
        EventKind::AuthorizationFailed,
        EventKind::Captured,
        EventKind::CaptureFailed,
        EventKind::Settled,
        EventKind::Refunded,
        EventKind::RefundFailed,
        EventKind::ChargebackOpened,
        EventKind::ChargebackWon,
        EventKind::ChargebackLost,
        EventKind::Payout,
        EventKind::Fee,
        EventKind::CaptureReversed,
        EventKind::Canceled,
        EventKind::SecondChargeback,
        EventKind::PrearbitrationWon,
        EventKind::PrearbitrationLost,
        EventKind::SettledCredit,
        EventKind::SettledDebit,
        EventKind::SettledPayout,
        EventKind::ConversionOut,
        EventKind::ConversionIn,
    ];

    /// How many kinds schema v1 could carry: the first ones of [`EventKind::ALL`] (v2 only appended symbols).
    pub const V1_KINDS: usize = 12;
    /// How many kinds schema v2 could carry (v3 appended the settlement kinds).
    pub const V2_KINDS: usize = 17;
    /// How many kinds schema v3 could carry (v4 appended the conversion kinds).
    pub const V3_KINDS: usize = 20;

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Authorized => "authorized",
            EventKind::AuthorizationFailed => "authorization_failed",
            EventKind::Captured => "captured",
            EventKind::CaptureFailed => "capture_failed",
            EventKind::Settled => "settled",
            EventKind::Refunded => "refunded",
            EventKind::RefundFailed => "refund_failed",
            EventKind::ChargebackOpened => "chargeback_opened",
            EventKind::ChargebackWon => "chargeback_won",
            EventKind::ChargebackLost => "chargeback_lost",
            EventKind::Payout => "payout",
            EventKind::Fee => "fee",
            EventKind::CaptureReversed => "capture_reversed",
            EventKind::Canceled => "canceled",
            EventKind::SecondChargeback => "second_chargeback",
            EventKind::PrearbitrationWon => "prearbitration_won",
            EventKind::PrearbitrationLost => "prearbitration_lost",
            EventKind::SettledCredit => "settled_credit",
            EventKind::SettledDebit => "settled_debit",
            EventKind::SettledPayout => "settled_payout",
            EventKind::ConversionOut => "conversion_out",
            EventKind::ConversionIn => "conversion_in",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Non-monetary facts about the payment. Tokens only: a PAN never reaches this type (I7).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attributes {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub card_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub card_brand: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub card_country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub customer_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub device_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub payment_method: Option<String>,
    /// A PSP-side reason (decline code, dispute reason, refusal text).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
}

/// One business fact about a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentEvent {
    pub kind: EventKind,
    /// Tally's payment id, also the Kafka key: `<psp>:<the PSP's id of the payment>`.
    pub payment_id: String,
    pub psp: Psp,
    /// The PSP's reference of *this* fact (a charge, refund, dispute, modification, payout …).
    pub psp_reference: String,
    /// The PSP's reference of the payment this fact modifies, when it is not the payment itself.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub original_reference: Option<String>,
    pub merchant_id: String,
    /// Gross amount in ISO 4217 minor units.
    pub money: Money,
    /// The PSP's fee, in `money`'s currency, for facts that carry one (settlements).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fee: Option<Amount>,
    /// Event time as the PSP states it.
    pub occurred_at: Timestamp,
    /// When Tally received the delivery that carried the fact.
    pub received_at: Timestamp,
    pub source: Source,
    /// The PSP's id of the delivery/event (Stripe `evt_…`; for Adyen, which has none, a synthetic id).
    pub source_event_id: String,
    #[serde(default)]
    pub attributes: Attributes,
}

impl PaymentEvent {
    /// The business identity that makes this fact unique, whatever delivery carried it.
    pub fn identity(&self) -> FactIdentity<'_> {
        FactIdentity {
            psp: self.psp,
            kind: self.kind,
            psp_reference: &self.psp_reference,
            original_reference: self.original_reference.as_deref(),
        }
    }

    pub fn fact_key(&self) -> FactKey {
        self.identity().key()
    }

    /// True when `other` states the same business content: same identity, payment, merchant and money.
    /// Delivery details (received-at, source event id) and PSP-side descriptive fields may differ between two
    /// deliveries of the same fact; a difference here is an `ExistsWithDifferentContent` exception, never a merge.
    pub fn same_content(&self, other: &PaymentEvent) -> bool {
        // `crate::fact_key::content_digest` digests exactly these fields: keep the two together.
        self.identity() == other.identity()
            && self.payment_id == other.payment_id
            && self.merchant_id == other.merchant_id
            && self.money == other.money
            && self.fee == other.fee
    }

    /// The digest of what `same_content` compares.
    pub fn content_digest(&self) -> crate::fact_key::ContentDigest {
        crate::fact_key::content_digest(self)
    }
}

/// One event per fact key, chosen independently of input order.
///
/// Deliveries of one fact normally carry the same content. When they do not (an `ExistsWithDifferentContent`
/// conflict, which the ledger records as an exception), every function of a *set* of facts must still give the same
/// answer for any arrival order (I4), so the representative is the least by a fixed ordering of the content, never
/// "the first seen" or "the last seen".
pub fn distinct_facts<'a, I>(events: I) -> std::collections::BTreeMap<FactKey, &'a PaymentEvent>
where
    I: IntoIterator<Item = &'a PaymentEvent>,
{
    let rank = |e: &PaymentEvent| {
        (
            e.money.amount,
            e.fee,
            e.money.currency.code(),
            e.payment_id.clone(),
            e.merchant_id.clone(),
            e.occurred_at,
            e.source_event_id.clone(),
            e.received_at,
        )
    };
    let mut out: std::collections::BTreeMap<FactKey, &'a PaymentEvent> = std::collections::BTreeMap::new();
    for event in events {
        out.entry(event.fact_key())
            .and_modify(|kept| {
                if rank(event) < rank(kept) {
                    *kept = event;
                }
            })
            .or_insert(event);
    }
    out
}
