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
    #[serde(default)]
    pub amount_captured: Option<i64>,
    pub currency: String,
    #[serde(default)]
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
    #[serde(default)]
    pub balance_transactions: Vec<BalanceTransaction>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BalanceTransaction {
    pub id: String,
    pub currency: String,
    #[serde(default)]
    pub fee: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PaymentIntent {
    pub id: String,
    pub amount: i64,
    #[serde(default)]
    pub amount_capturable: i64,
    #[serde(default)]
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
