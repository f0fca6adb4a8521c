//! Stripe Event → canonical events. The mapping, per event type:
//!
//! | event type | facts |
//! |---|---|
//! | `charge.succeeded` | authorized (+ captured when `captured: true`) |
//! | `charge.captured` | captured (`amount_captured`) |
//! | `charge.failed` | authorization_failed |
//! | `payment_intent.amount_capturable_updated` | authorized (`amount_capturable`) of the latest charge |
//! | `payment_intent.succeeded` | captured (`amount_received`) of the latest charge |
//! | `payment_intent.payment_failed` | authorization_failed of the failed charge |
//! | `charge.refunded` | refunded for every refund listed (+ refund_failed for failed/canceled ones) |
//! | `charge.refund.updated`, `refund.created`, `refund.updated`, `refund.failed` | refunded (+ refund_failed) |
//! | `charge.dispute.funds_withdrawn` | chargeback_opened (+ fee for Stripe's dispute fee) |
//! | `charge.dispute.funds_reinstated` | chargeback_won |
//! | `charge.dispute.closed` | chargeback_won / chargeback_lost by status |
//! | `payout.paid` of a connected account | payout |
//! | every other type in Stripe's published list | ignored, with the reason |
//!
//! Facts about a charge are keyed by the charge id, refunds by the refund id, so a fact stated by two event types
//! (`charge.succeeded` and `payment_intent.succeeded`) has one fact key. Money moves when Stripe's *balance* moves:
//! a refund is booked at creation (Stripe debits the balance then, even while pending) and reversed if it fails; a
//! dispute is booked when funds are withdrawn, not when an inquiry opens.

use serde::de::DeserializeOwned;
use serde_json::Value;
use tally_domain::{Attributes, EventKind, PaymentEvent, Psp, Source, Timestamp};
use tally_money::{rescale, Currency, ExponentScheme, Money};

use super::wire::{Charge, Dispute, Event, PaymentIntent, Payout, Refund};
use crate::error::{clean, schema};
use crate::{NormalizeError, Outcome};

/// The merchant id of events about the platform's own Stripe account (no `account` field).
pub const PLATFORM_MERCHANT: &str = "platform";

/// Normalises one Stripe Event body.
pub fn normalize(body: &[u8], received_at: Timestamp) -> Result<Outcome, NormalizeError> {
    let event: Event = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            schema("stripe event", e.to_string())
        } else {
            NormalizeError::MalformedJson(clean(&e.to_string()))
        }
    })?;
    if !super::is_known_event_type(&event.event_type) {
        return Err(NormalizeError::UnknownEventType(clean(&event.event_type)));
    }
    let ctx = Ctx { event: &event, received_at };
    let ignore = |reason: &str| Ok(Outcome::Ignored { event_type: event.event_type.clone(), reason: reason.into() });
    let events = match event.event_type.as_str() {
        "charge.succeeded" => {
            let ch: Charge = ctx.object()?;
            let mut out = vec![ctx.charge_fact(EventKind::Authorized, &ch, ch.amount)?];
            if ch.captured {
                out.push(ctx.charge_fact(EventKind::Captured, &ch, ch.amount_captured.unwrap_or(ch.amount))?);
            }
            out
        }
        "charge.captured" => {
            let ch: Charge = ctx.object()?;
            vec![ctx.charge_fact(EventKind::Captured, &ch, ch.amount_captured.unwrap_or(ch.amount))?]
        }
        "charge.failed" => {
            let ch: Charge = ctx.object()?;
            vec![ctx.charge_fact(EventKind::AuthorizationFailed, &ch, ch.amount)?]
        }
        "payment_intent.amount_capturable_updated" => {
            let pi: PaymentIntent = ctx.object()?;
            vec![ctx.intent_fact(EventKind::Authorized, &pi, pi.amount_capturable, latest_charge(&pi))?]
        }
        "payment_intent.succeeded" => {
            let pi: PaymentIntent = ctx.object()?;
            vec![ctx.intent_fact(EventKind::Captured, &pi, pi.amount_received, latest_charge(&pi))?]
        }
        "payment_intent.payment_failed" => {
            let pi: PaymentIntent = ctx.object()?;
            let charge = pi.last_payment_error.as_ref().and_then(|e| e.charge.clone()).or_else(|| latest_charge(&pi));
            let mut fact = ctx.intent_fact(EventKind::AuthorizationFailed, &pi, pi.amount, charge)?;
            fact.attributes.reason =
                pi.last_payment_error.as_ref().and_then(|e| e.decline_code.clone().or_else(|| e.code.clone()));
            vec![fact]
        }
        "charge.refunded" => {
            let ch: Charge = ctx.object()?;
            match ch.refunds.as_ref().filter(|r| !r.data.is_empty()) {
                Some(list) => {
                    list.data.iter().map(|r| ctx.refund_facts(r, Some(&ch.id))).collect::<Result<Vec<_>, _>>()?.concat()
                }
                None => {
                    return ignore(
                        "charge.refunded without an expanded refunds list (API versions since 2022-11-15): the \
                         refunds are booked from refund.created / charge.refund.updated, which carry them",
                    )
                }
            }
        }
        "charge.refund.updated" | "refund.created" | "refund.updated" | "refund.failed" => {
            let refund: Refund = ctx.object()?;
            if refund.charge.is_none() {
                return ignore("refund of a payment that is not a charge: not booked");
            }
            ctx.refund_facts(&refund, None)?
        }
        "charge.dispute.funds_withdrawn" => {
            let dp: Dispute = ctx.object()?;
            let mut out = vec![ctx.dispute_fact(EventKind::ChargebackOpened, &dp)?];
            for bt in dp.balance_transactions.iter().filter(|bt| bt.fee > 0) {
                let mut fee = ctx.fact(EventKind::Fee, &dp.charge, &bt.id, Some(&dp.charge), bt.fee, &bt.currency)?;
                fee.attributes.reason = Some("dispute fee".into());
                out.push(fee);
            }
            out
        }
        "charge.dispute.funds_reinstated" => vec![ctx.dispute_fact(EventKind::ChargebackWon, &ctx.object()?)?],
        "charge.dispute.closed" => {
            let dp: Dispute = ctx.object()?;
            match dp.status.as_str() {
                "won" => vec![ctx.dispute_fact(EventKind::ChargebackWon, &dp)?],
                "lost" => vec![ctx.dispute_fact(EventKind::ChargebackLost, &dp)?],
                _ => return ignore("dispute closed without a won/lost outcome (an inquiry): no funds moved"),
            }
        }
        "charge.dispute.created" | "charge.dispute.updated" => {
            return ignore(
                "dispute opened or updated: funds are booked when charge.dispute.funds_withdrawn arrives (an \
                 inquiry never withdraws funds)",
            )
        }
        "payout.paid" => {
            let po: Payout = ctx.object()?;
            if event.account.is_none() {
                return ignore(
                    "payout of the platform's own balance: settlement is booked from the settlement report, \
                     booking the payout too would count it twice",
                );
            }
            vec![ctx.fact(EventKind::Payout, &po.id, &po.id, None, po.amount, &po.currency)?]
        }
        other if super::RETIRED_EVENT_TYPES.contains(&other) => {
            return ignore("retired event type (transfers and payouts were split in API version 2017-04-06)")
        }
        other => return ignore(&format!("{other} moves no money that Tally books")),
    };
    Ok(Outcome::Events(events))
}

struct Ctx<'a> {
    event: &'a Event,
    received_at: Timestamp,
}

impl Ctx<'_> {
    fn object<T: DeserializeOwned>(&self) -> Result<T, NormalizeError> {
        T::deserialize(&self.event.data.object).map_err(|e| schema(&self.event.event_type, e.to_string()))
    }

    /// A fact with the common fields filled in. `payment` is the charge (or intent) id that names the payment.
    fn fact(
        &self,
        kind: EventKind,
        payment: &str,
        reference: &str,
        original: Option<&str>,
        minor: i64,
        currency: &str,
    ) -> Result<PaymentEvent, NormalizeError> {
        let currency = Currency::from_code(currency)?;
        // Stripe's wire exponent differs from ISO for ISK (2 vs 0): store ISO minor units.
        let amount = rescale(minor, currency.exponent_in(ExponentScheme::Stripe), currency.exponent())?;
        let occurred_at =
            Timestamp::from_unix_secs(self.event.created).map_err(|e| schema(&self.event.event_type, e.to_string()))?;
        Ok(PaymentEvent {
            kind,
            payment_id: format!("stripe:{payment}"),
            psp: Psp::Stripe,
            psp_reference: reference.to_owned(),
            original_reference: original.map(str::to_owned),
            merchant_id: self.event.account.clone().unwrap_or_else(|| PLATFORM_MERCHANT.to_owned()),
            money: Money::new(amount, currency),
            fee: None,
            occurred_at,
            received_at: self.received_at,
            source: Source::Webhook,
            source_event_id: self.event.id.clone(),
            attributes: Attributes::default(),
        })
    }

    fn charge_fact(&self, kind: EventKind, ch: &Charge, minor: i64) -> Result<PaymentEvent, NormalizeError> {
        let mut fact = self.fact(kind, &ch.id, &ch.id, None, minor, &ch.currency)?;
        let card = ch.payment_method_details.as_ref().and_then(|d| d.card.as_ref());
        fact.attributes = Attributes {
            card_token: card.and_then(|c| c.fingerprint.clone()),
            card_brand: card.and_then(|c| c.brand.clone()),
            card_country: card.and_then(|c| c.country.clone()),
            customer_token: ch.customer.clone(),
            device_id: None,
            payment_method: ch.payment_method_details.as_ref().and_then(|d| d.method_type.clone()),
            reason: ch.failure_code.clone(),
        };
        Ok(fact)
    }

    fn intent_fact(
        &self,
        kind: EventKind,
        pi: &PaymentIntent,
        minor: i64,
        charge: Option<String>,
    ) -> Result<PaymentEvent, NormalizeError> {
        // Without a charge (a failure before any charge was created) the intent names the payment.
        let reference = charge.unwrap_or_else(|| pi.id.clone());
        let mut fact = self.fact(kind, &reference, &reference, None, minor, &pi.currency)?;
        fact.attributes.customer_token = pi.customer.clone();
        Ok(fact)
    }

    fn refund_facts(&self, refund: &Refund, charge: Option<&str>) -> Result<Vec<PaymentEvent>, NormalizeError> {
        let charge = refund
            .charge
            .as_deref()
            .or(charge)
            .ok_or_else(|| schema(&self.event.event_type, "refund without a charge"))?;
        let make = |kind| -> Result<PaymentEvent, NormalizeError> {
            let mut fact = self.fact(kind, charge, &refund.id, Some(charge), refund.amount, &refund.currency)?;
            fact.attributes.reason = refund.reason.clone();
            Ok(fact)
        };
        let mut out = vec![make(EventKind::Refunded)?];
        if matches!(refund.status.as_deref(), Some("failed" | "canceled")) {
            out.push(make(EventKind::RefundFailed)?);
        }
        Ok(out)
    }

    fn dispute_fact(&self, kind: EventKind, dp: &Dispute) -> Result<PaymentEvent, NormalizeError> {
        let mut fact = self.fact(kind, &dp.charge, &dp.charge, None, dp.amount, &dp.currency)?;
        fact.attributes.reason = dp.reason.clone();
        Ok(fact)
    }
}

/// The charge an intent's latest attempt made: `latest_charge` (an id, or an expanded object) on current API
/// versions, the first element of `charges.data` (newest first) on older ones.
fn latest_charge(pi: &PaymentIntent) -> Option<String> {
    let id_of = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    };
    pi.latest_charge
        .as_ref()
        .and_then(id_of)
        .or_else(|| pi.charges.as_ref().and_then(|c| c.data.first()).and_then(id_of))
}
