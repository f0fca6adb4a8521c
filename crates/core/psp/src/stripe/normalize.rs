//! Stripe Event → canonical events. The mapping, per event type:
//!
//! | event type | facts |
//! |---|---|
//! | `charge.succeeded` | authorized (+ captured `amount_captured` when `captured: true`) |
//! | `charge.captured` | captured (`amount_captured`) |
//! | `charge.failed` | authorization_failed |
//! | `charge.expired` | canceled (the authorization expired uncaptured) |
//! | `payment_intent.amount_capturable_updated` | authorized (`amount_capturable`) of the latest charge |
//! | `payment_intent.succeeded` | captured (`amount_received`) of the latest charge |
//! | `payment_intent.payment_failed` | authorization_failed of the failed charge |
//! | `payment_intent.canceled` | canceled, of the latest charge |
//! | `charge.refunded` with its refunds listed (API < 2022-11-15) | per refund: refunded (+ refund_failed), or canceled for a release |
//! | `charge.refund.updated`, `refund.created`, `refund.updated`, `refund.failed` | refunded (+ refund_failed); before 2025-03-31.basil an exception (see below) |
//! | `charge.dispute.funds_withdrawn` | chargeback_opened (+ fee for Stripe's dispute fee) |
//! | `charge.dispute.funds_reinstated` | chargeback_opened + chargeback_won for what the reinstating balance transactions returned |
//! | `charge.dispute.closed` | as reinstated, + chargeback_lost for what stays withdrawn |
//! | `payout.paid` of a connected account | payout |
//! | every other type in Stripe's published list | ignored, with the reason |
//! | a type not in the list | unknown (acknowledged, kept, counted) |
//!
//! Facts about a charge are keyed by the charge id, refunds by the refund id, so a fact stated by two event types
//! (`charge.succeeded` and `payment_intent.succeeded`) has one fact key; a fact that cannot name its charge is
//! never keyed by anything else (it is ignored with the reason). No amount has a default: a money field that is
//! missing is a schema violation or an exception, never zero.
//!
//! **A release is not a refund.** Before API version 2025-03-31.basil, a partial capture or the cancellation or
//! expiry of an uncaptured charge created a Refund object for the released amount (Stripe changelog "Remove Refund
//! objects in partial capture and payment cancellation flows"). Such a "refund" returned no captured money: Tally
//! books it as `canceled`. From a charge (which says what was captured) the release can be told apart; from a bare
//! Refund object on an older version it cannot, so such a refund is an exception to review, and the endpoint should
//! be pinned to 2025-03-31.basil or later (docs/adr/0004).
//!
//! Money moves when Stripe's *balance* moves: a refund is booked at creation (Stripe debits the balance then, even
//! while pending) and reversed if it fails; a dispute is booked when funds are withdrawn, not when an inquiry opens,
//! and what it returns is read from its balance transactions, which may return only part of the disputed amount.

use serde::de::DeserializeOwned;
use serde_json::Value;
use tally_domain::{Attributes, EventKind, PaymentEvent, Psp, Source, Timestamp};
use tally_money::{rescale, Currency, ExponentScheme, Money};

use super::wire::{BalanceTransaction, Charge, Dispute, Event, PaymentIntent, Payout, Refund};
use crate::error::{clean, schema};
use crate::{Endpoint, NormalizeError, Outcome};

/// The merchant id of events about the platform's own Stripe account (no `account` field).
pub const PLATFORM_MERCHANT: &str = "platform";

/// The first API version whose partial captures and cancellations create no Refund objects.
pub const RELEASES_WITHOUT_REFUNDS: &str = "2025-03-31";

/// Whether `api_version` (`YYYY-MM-DD[.name]`) renders releases without Refund objects.
fn releases_without_refunds(api_version: Option<&str>) -> bool {
    api_version.is_some_and(|v| v.get(..10).is_some_and(|date| date >= RELEASES_WITHOUT_REFUNDS))
}

/// Normalises one Stripe Event body.
pub fn normalize(body: &[u8], received_at: Timestamp, endpoint: &Endpoint) -> Result<Outcome, NormalizeError> {
    let event: Event = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            schema("stripe event", e.to_string())
        } else {
            NormalizeError::MalformedJson(clean(&e.to_string()))
        }
    })?;
    let event_type = event.event_type.as_str();
    if !super::is_known_event_type(event_type) {
        return Ok(Outcome::Unknown { event_type: clean(event_type) });
    }
    if event.livemode != endpoint.live {
        return Ok(Outcome::OtherMode { event_type: clean(event_type), live: event.livemode });
    }
    let ctx = Ctx { event: &event, received_at };
    let ignore = |reason: &str| Ok(Outcome::ignored(event_type, reason));
    let exception = |reason: String| Ok(Outcome::exception(event_type, reason));
    let events = match event_type {
        "charge.succeeded" => {
            let ch: Charge = ctx.object()?;
            let mut out = vec![ctx.charge_fact(EventKind::Authorized, &ch, ch.amount)?];
            if ch.captured {
                out.push(ctx.charge_fact(EventKind::Captured, &ch, amount_captured(&ch, event_type)?)?);
            }
            out
        }
        "charge.captured" => {
            let ch: Charge = ctx.object()?;
            vec![ctx.charge_fact(EventKind::Captured, &ch, amount_captured(&ch, event_type)?)?]
        }
        "charge.failed" => {
            let ch: Charge = ctx.object()?;
            vec![ctx.charge_fact(EventKind::AuthorizationFailed, &ch, ch.amount)?]
        }
        "charge.expired" => {
            let ch: Charge = ctx.object()?;
            let mut fact = ctx.charge_fact(EventKind::Canceled, &ch, ch.amount)?;
            fact.attributes.reason = Some("expired".into());
            vec![fact]
        }
        "payment_intent.amount_capturable_updated" | "payment_intent.succeeded" | "payment_intent.canceled" => {
            let pi: PaymentIntent = ctx.object()?;
            let Some(charge) = latest_charge(&pi) else {
                return ignore(
                    "the intent names no charge (latest_charge, charges): its facts are booked from the charge                      events, which do; never under the intent's id",
                );
            };
            let (kind, minor) = match event_type {
                "payment_intent.amount_capturable_updated" => (EventKind::Authorized, pi.amount_capturable),
                "payment_intent.succeeded" => (EventKind::Captured, pi.amount_received),
                _ => (EventKind::Canceled, pi.amount),
            };
            vec![ctx.intent_fact(kind, &pi, minor, &charge)?]
        }
        "payment_intent.payment_failed" => {
            let pi: PaymentIntent = ctx.object()?;
            let charge = pi.last_payment_error.as_ref().and_then(|e| e.charge.clone()).or_else(|| latest_charge(&pi));
            let Some(charge) = charge else {
                return ignore("the attempt failed before any charge was created: nothing was authorised");
            };
            let mut fact = ctx.intent_fact(EventKind::AuthorizationFailed, &pi, pi.amount, &charge)?;
            fact.attributes.reason =
                pi.last_payment_error.as_ref().and_then(|e| e.decline_code.clone().or_else(|| e.code.clone()));
            vec![fact]
        }
        "charge.refunded" => {
            let ch: Charge = ctx.object()?;
            match ch.refunds.as_ref().filter(|r| !r.data.is_empty()) {
                Some(list) => ctx.listed_refunds(&ch, &list.data)?,
                None if !ch.captured && !releases_without_refunds(event.api_version.as_deref()) => {
                    // An uncaptured charge "refunded": its authorization was released (API before basil).
                    vec![ctx.charge_fact(EventKind::Canceled, &ch, ch.amount)?]
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
            let Some(charge) = refund.charge.clone() else {
                return ignore("refund of a payment that is not a charge: not booked");
            };
            if !releases_without_refunds(event.api_version.as_deref()) {
                return exception(format!(
                    "refund {} rendered with API version {:?}, before {RELEASES_WITHOUT_REFUNDS}.basil: it may be \
                     the release of an uncaptured authorization (no money moved), which a bare Refund object \
                     cannot tell; pin the webhook endpoint to {RELEASES_WITHOUT_REFUNDS}.basil or later",
                    refund.id,
                    event.api_version.as_deref().unwrap_or("none"),
                ));
            }
            ctx.refund_facts(&refund, &charge)?
        }
        "charge.dispute.funds_withdrawn" => {
            let dp: Dispute = ctx.object()?;
            let Some(bts) = dp.balance_transactions.as_ref() else {
                return exception(
                    "the dispute lists no balance_transactions: the withdrawn funds cannot be read".into(),
                );
            };
            let mut out = vec![ctx.dispute_fact(EventKind::ChargebackOpened, &dp, dp.amount)?];
            out.extend(ctx.dispute_fees(&dp, bts)?);
            out
        }
        "charge.dispute.funds_reinstated" | "charge.dispute.closed" => {
            let dp: Dispute = ctx.object()?;
            match ctx.dispute_outcome(&dp)? {
                Ok(facts) if facts.is_empty() => {
                    return ignore(
                        "the dispute withdrew no funds (an inquiry, or won before withdrawal): nothing moved",
                    )
                }
                Ok(facts) => facts,
                Err(reason) => return exception(reason),
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

/// What a captured charge captured. Never the authorized amount by default: on a partial capture the two differ.
fn amount_captured(ch: &Charge, event_type: &str) -> Result<i64, NormalizeError> {
    ch.amount_captured.ok_or_else(|| {
        schema(event_type, "amount_captured is missing: the captured amount of a captured charge cannot be read")
    })
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
        charge: &str,
    ) -> Result<PaymentEvent, NormalizeError> {
        let mut fact = self.fact(kind, charge, charge, None, minor, &pi.currency)?;
        fact.attributes.customer_token = pi.customer.clone();
        Ok(fact)
    }

    fn refund_facts(&self, refund: &Refund, charge: &str) -> Result<Vec<PaymentEvent>, NormalizeError> {
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

    /// The refunds a charge lists, with the releases told apart: on an uncaptured charge every "refund" released
    /// the authorization; on a partially captured one, the refund of exactly the uncaptured remainder (the earliest,
    /// if several match) did. Both are `canceled`, not money returned.
    fn listed_refunds(&self, ch: &Charge, refunds: &[Refund]) -> Result<Vec<PaymentEvent>, NormalizeError> {
        let event_type = &self.event.event_type;
        let release = match ch.captured {
            false => None,
            true => Some(ch.amount - amount_captured(ch, event_type)?),
        };
        let release_id = release.filter(|r| *r > 0).and_then(|remainder| {
            refunds.iter().filter(|r| r.amount == remainder).min_by_key(|r| (r.created, r.id.clone())).map(|r| &r.id)
        });
        let mut out = Vec::new();
        for refund in refunds {
            let charge = refund.charge.as_deref().unwrap_or(&ch.id);
            if !ch.captured || Some(&refund.id) == release_id {
                let mut fact =
                    self.fact(EventKind::Canceled, charge, &refund.id, Some(charge), refund.amount, &refund.currency)?;
                fact.attributes.reason = Some("authorization released".into());
                out.push(fact);
            } else {
                out.extend(self.refund_facts(refund, charge)?);
            }
        }
        Ok(out)
    }

    fn dispute_fact(&self, kind: EventKind, dp: &Dispute, minor: i64) -> Result<PaymentEvent, NormalizeError> {
        let mut fact = self.fact(kind, &dp.charge, &dp.charge, None, minor, &dp.currency)?;
        fact.attributes.reason = dp.reason.clone();
        Ok(fact)
    }

    /// The dispute fees its balance transactions state, one `fee` fact per transaction (keyed by its id).
    fn dispute_fees(&self, dp: &Dispute, bts: &[BalanceTransaction]) -> Result<Vec<PaymentEvent>, NormalizeError> {
        bts.iter()
            .filter(|bt| bt.fee > 0)
            .map(|bt| {
                let mut fee = self.fact(EventKind::Fee, &dp.charge, &bt.id, Some(&dp.charge), bt.fee, &bt.currency)?;
                fee.attributes.reason = Some("dispute fee".into());
                Ok(fee)
            })
            .collect()
    }

    /// The facts a reinstatement or a closed dispute states, from the money its balance transactions moved: what
    /// was withdrawn (the disputed amount), what reinstating transactions returned (`chargeback_won`, possibly
    /// part of it) and, once closed, what stays withdrawn (`chargeback_lost`). The opening is stated too, so that a
    /// reinstatement that arrives first still nets correctly. `Err` is an exception to review.
    #[allow(clippy::type_complexity)]
    fn dispute_outcome(&self, dp: &Dispute) -> Result<Result<Vec<PaymentEvent>, String>, NormalizeError> {
        let Some(bts) = dp.balance_transactions.as_ref() else {
            return Ok(Err("the dispute lists no balance_transactions: the money it moved cannot be read".into()));
        };
        let withdrawn = bts.iter().any(|bt| bt.amount < 0);
        let reinstating: Vec<_> = bts.iter().filter(|bt| bt.amount > 0).collect();
        if !withdrawn && reinstating.is_empty() {
            return Ok(Ok(Vec::new()));
        }
        let same_currency = reinstating.iter().all(|bt| bt.currency.eq_ignore_ascii_case(&dp.currency));
        let sum: i64 = reinstating.iter().map(|bt| bt.amount).sum();
        let withdrawn_bt: i64 = -bts.iter().filter(|bt| bt.amount < 0).map(|bt| bt.amount).sum::<i64>();
        // In the dispute's currency: a reinstatement in the balance's other currency is taken whole only when it
        // returns everything that was withdrawn.
        let returned = match (same_currency, reinstating.is_empty()) {
            (_, true) => 0,
            (true, false) => sum,
            (false, false) if sum == withdrawn_bt => dp.amount,
            (false, false) => {
                return Ok(Err(format!(
                    "part of the dispute was reinstated in {} while it was disputed in {}: the part cannot be \
                     converted without an FX rate",
                    reinstating[0].currency, dp.currency
                )))
            }
        };
        if returned > dp.amount {
            return Ok(Err(format!("reinstated {returned} exceeds the disputed amount {}", dp.amount)));
        }
        let closed = self.event.event_type == "charge.dispute.closed";
        if returned == 0 && !closed {
            return Ok(Err("funds_reinstated without a reinstating balance transaction".into()));
        }
        if closed && dp.status == "won" && returned == 0 {
            return Ok(Err("closed as won, yet no balance transaction reinstated the withdrawn funds".into()));
        }
        if closed && !matches!(dp.status.as_str(), "won" | "lost") {
            return Ok(Ok(Vec::new()));
        }
        // The opening and its fee, restated: whichever of the dispute's events arrives, the withdrawal and the
        // fee Stripe took with it are booked (once, by their keys), and the settlement report's dispute line,
        // which settles net of that fee, finds them.
        let mut out = vec![self.dispute_fact(EventKind::ChargebackOpened, dp, dp.amount)?];
        out.extend(self.dispute_fees(dp, bts)?);
        if returned > 0 {
            out.push(self.dispute_fact(EventKind::ChargebackWon, dp, returned)?);
        }
        if closed && dp.amount > returned {
            out.push(self.dispute_fact(EventKind::ChargebackLost, dp, dp.amount - returned)?);
        }
        Ok(Ok(out))
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
