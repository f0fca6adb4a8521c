//! The parts of Stripe's API objects that Tally reads. Unknown fields are ignored: Stripe adds fields in every API
//! version, and an Event must keep parsing across versions.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// A Stripe Event (`"object": "event"`).
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub created: i64,
    /// Whether the event happened in live mode. Stripe sends connected accounts' test-mode events to a live
    /// endpoint too, signed with the live secret: a mode other than the endpoint's is never booked.
    pub livemode: bool,
    /// The API version the object was rendered with (`2025-03-31.basil`); null for events before October 2014.
    #[serde(default)]
    pub api_version: Option<String>,
    /// The connected account the event is about (Stripe Connect); absent for the platform's own events.
    #[serde(default)]
    pub account: Option<String>,
    pub data: EventData,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventData {
    pub object: Value,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Charge {
    pub id: String,
    pub amount: i64,
    /// Absent on old API versions (before 2020-ish), where a partial capture cannot be read from the charge.
    #[serde(default)]
    pub amount_captured: Option<i64>,
    pub currency: String,
    pub captured: bool,
    #[serde(default)]
    pub customer: Option<String>,
    #[serde(default)]
    pub failure_code: Option<String>,
    #[serde(default)]
    pub payment_method_details: Option<PaymentMethodDetails>,
    /// Expanded only on API versions before 2022-11-15.
    #[serde(default)]
    pub refunds: Option<List<Refund>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct List<T> {
    pub data: Vec<T>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PaymentMethodDetails {
    #[serde(rename = "type")]
    pub method_type: Option<String>,
    #[serde(default)]
    pub card: Option<CardDetails>,
}

/// Card details as Stripe reports them: brand, country, last4 and a fingerprint (a token). Never the number.
#[derive(Debug, Clone, Deserialize)]
pub struct CardDetails {
    #[serde(default)]
    pub brand: Option<String>,
    #[serde(default)]
    pub country: Option<String>,
    #[serde(default)]
    pub fingerprint: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Refund {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    /// Absent on refunds of non-charge payments; such refunds are not booked here.
    #[serde(default)]
    pub charge: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    /// Unix seconds; orders the refunds of one charge.
    #[serde(default)]
    pub created: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Dispute {
    /// Missing in some old fixtures; Tally keys disputes by charge (Stripe allows one dispute per charge).
    #[serde(default)]
    pub id: Option<String>,
    pub amount: i64,
    pub currency: String,
    pub charge: String,
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
    /// "Zero, one, or two balance transactions that show funds withdrawn and reinstated": the money that moved.
    /// `None` when the object does not carry the list at all.
    #[serde(default)]
    pub balance_transactions: Option<Vec<BalanceTransaction>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BalanceTransaction {
    pub id: String,
    /// Negative for a withdrawal, positive for a reinstatement.
    pub amount: i64,
    pub currency: String,
    pub fee: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PaymentIntent {
    pub id: String,
    pub amount: i64,
    pub amount_capturable: i64,
    pub amount_received: i64,
    pub currency: String,
    #[serde(default)]
    pub customer: Option<String>,
    /// A charge id on API versions since 2022-11-15.
    #[serde(default)]
    pub latest_charge: Option<Value>,
    /// The charges list on older API versions.
    #[serde(default)]
    pub charges: Option<List<Value>>,
    #[serde(default)]
    pub last_payment_error: Option<LastPaymentError>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LastPaymentError {
    #[serde(default)]
    pub charge: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub decline_code: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Payout {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, Value>,
}
