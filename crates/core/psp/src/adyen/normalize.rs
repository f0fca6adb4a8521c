//! Adyen notification items → canonical events. Each item becomes one [`Outcome`], on its own: an unknown or
//! unmappable item never takes the batch's other items with it.
//!
//! | eventCode | success=true | success=false |
//! |---|---|---|
//! | AUTHORISATION | authorized (+ captured, for an account with immediate capture: [`CaptureMode`]) | authorization_failed |
//! | CAPTURE | captured | captured + capture_reversed (refused, or a flip of an accepted capture) |
//! | CAPTURE with reason "Transaction (Auto-)recaptured" | captured + capture_reversed + captured again | — |
//! | CAPTURE_FAILED | captured + capture_reversed (the scheme rejected the capture) | ignored |
//! | REFUND, REFUND_WITH_DATA | refunded | refunded + refund_failed (refused, or a flip) |
//! | CANCEL_OR_REFUND, `modification.action=refund` | refunded | refunded + refund_failed |
//! | CANCEL_OR_REFUND, `modification.action=cancel` | canceled | ignored |
//! | CANCEL_OR_REFUND without `modification.action` | exception: cannot tell money from no money | ignored |
//! | REFUND_FAILED, REFUNDED_REVERSED | refunded + refund_failed | ignored |
//! | CANCELLATION, TECHNICAL_CANCEL, EXPIRE | canceled | ignored |
//! | CHARGEBACK | chargeback_opened (+ chargeback_lost / _won when `disputeStatus` says it ended) | ignored |
//! | CHARGEBACK_REVERSED | chargeback_opened + chargeback_won | ignored |
//! | SECOND_CHARGEBACK | … + second_chargeback | ignored |
//! | PREARBITRATION_WON / _LOST | … + prearbitration_won / _lost | ignored |
//! | every other code in Adyen's list | ignored, with the reason | |
//! | a code not in Adyen's list | unknown (acknowledged, kept, counted) | |
//!
//! **A reversal always travels with what it reverses.** A failed capture or refund states the capture or refund
//! too, under the same key as the original's; a later dispute stage states the stages before it. So a reversal that
//! arrives alone, before its original, or after a flip (Adyen may resend a pspReference + eventCode with the other
//! `success`) nets to the same books in every arrival order (I4), and never reverses money that was not booked.
//!
//! The payment is named by `originalReference` (modifications, disputes) or `pspReference` (the payment itself).
//! Every stage of a dispute shares the dispute's pspReference; the stage is in the fact's kind, hence in its key.
//! Amounts are rescaled from Adyen's exponent to ISO 4217 ([`ExponentScheme::Adyen`]). Adyen notifications have
//! no event id: the source event id is `pspReference:eventCode:success`.

use serde_json::Value;
use tally_domain::{Attributes, EventKind, PaymentEvent, Psp, Source, Timestamp};
use tally_money::{rescale, Currency, ExponentScheme, Money};

use super::wire::{self, Body, NotificationRequestItem};
use crate::error::{clean, schema};
use crate::{CaptureMode, Endpoint, NormalizeError, Outcome};

/// Normalises an Adyen webhook body: one outcome per notification item.
pub fn normalize(body: &[u8], received_at: Timestamp, endpoint: &Endpoint) -> Result<Vec<Outcome>, NormalizeError> {
    let (live, items) = match wire::parse(body) {
        Ok(Body::Standard(n)) => (n.live, n.items.into_iter().map(|w| w.item).collect::<Vec<_>>()),
        Ok(Body::BareItem(item)) => (None, vec![*item]),
        Ok(Body::Other(kind)) => {
            return Ok(vec![Outcome::ignored(
                &kind,
                "not a payment notification (platform, management or terminal webhook)",
            )])
        }
        Err((false, why)) => return Err(NormalizeError::MalformedJson(why)),
        Err((true, why)) => return Err(schema("adyen notification", why)),
    };
    if items.is_empty() {
        return Err(schema("adyen notification", "notificationItems is empty"));
    }
    let live = match live.as_deref() {
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(schema("adyen notification", format!("live must be \"true\" or \"false\", got {other:?}")))
        }
        None => None,
    };
    items
        .iter()
        .map(|item| {
            let code = item.event_code.as_str();
            match live {
                Some(live) if live != endpoint.live => Ok(Outcome::OtherMode { event_type: clean(code), live }),
                None => {
                    Ok(Outcome::exception(code, "the notification does not say whether it is live (no `live` field)"))
                }
                Some(_) => normalize_item(item, received_at, endpoint),
            }
        })
        .collect()
}

/// A reason Adyen gives a CAPTURE that re-captures a capture the scheme had rejected (its capture failure-reasons
/// page: "Transaction Recaptured" or "Transaction Auto-recaptured").
fn is_recapture(item: &NotificationRequestItem) -> bool {
    item.reason
        .as_deref()
        .is_some_and(|r| r.starts_with("Transaction Recaptured") || r.starts_with("Transaction Auto-recaptured"))
}

fn normalize_item(
    item: &NotificationRequestItem,
    received_at: Timestamp,
    endpoint: &Endpoint,
) -> Result<Outcome, NormalizeError> {
    use EventKind::*;
    let code = item.event_code.as_str();
    if !super::is_known_event_code(code) {
        return Ok(Outcome::Unknown { event_type: clean(code) });
    }
    if !matches!(item.success.as_str(), "true" | "false") {
        return Err(schema(code, format!("success must be \"true\" or \"false\", got {:?}", item.success)));
    }
    let ignore = |reason: &str| Ok(Outcome::ignored(code, reason));
    let success = item.success();
    let payment = item.original_reference.as_deref().unwrap_or(&item.psp_reference);
    // (kind, psp_reference, original_reference) of each fact the item states.
    let this = |kind| (kind, item.psp_reference.clone(), item.original_reference.clone());
    let immediate = endpoint.adyen_capture.of(&item.merchant_account_code) == CaptureMode::Immediate;
    // A capture of an account with immediate capture is keyed by the payment itself, whether AUTHORISATION or a
    // CAPTURE states it, so that one capture stated twice is one fact; a delayed capture by its own reference.
    let capture = |kind| match immediate {
        true => (kind, payment.to_owned(), None),
        false => this(kind),
    };
    let facts: Vec<(EventKind, String, Option<String>)> = match (code, success) {
        ("AUTHORISATION", true) if immediate => vec![this(Authorized), capture(Captured)],
        ("AUTHORISATION", true) => vec![this(Authorized)],
        ("AUTHORISATION", false) => vec![this(AuthorizationFailed)],
        ("CAPTURE", true) if is_recapture(item) => {
            let (_, reference, original) = capture(Captured);
            vec![capture(Captured), capture(CaptureReversed), (Captured, format!("{reference}#recaptured"), original)]
        }
        ("CAPTURE", true) => vec![capture(Captured)],
        ("CAPTURE", false) | ("CAPTURE_FAILED", true) => vec![capture(Captured), capture(CaptureReversed)],
        ("REFUND" | "REFUND_WITH_DATA", true) => vec![this(Refunded)],
        ("REFUND" | "REFUND_WITH_DATA", false) | ("REFUND_FAILED" | "REFUNDED_REVERSED", true) => {
            vec![this(Refunded), this(RefundFailed)]
        }
        ("CANCEL_OR_REFUND", _) => match item.additional("modification.action") {
            Some("refund") if success => vec![this(Refunded)],
            Some("refund") => vec![this(Refunded), this(RefundFailed)],
            Some("cancel") if success => vec![(Canceled, item.psp_reference.clone(), item.original_reference.clone())],
            Some("cancel") => return ignore("the cancellation was refused (success=false): the authorisation stands"),
            Some(other) => {
                return Ok(Outcome::exception(
                    code,
                    format!("modification.action {other:?} is neither refund nor cancel"),
                ))
            }
            None => {
                return Ok(Outcome::exception(
                    code,
                    "additionalData.modification.action is missing: a refund (money moved) cannot be told from a \
                     cancellation (none did)",
                ))
            }
        },
        ("CANCELLATION" | "TECHNICAL_CANCEL" | "EXPIRE", true) => vec![this(Canceled)],
        ("CHARGEBACK", true) => match item.additional("disputeStatus") {
            // Brazil's disputes carry no disputeStatus; a CHARGEBACK then opens the dispute.
            None | Some("Undefended" | "Pending" | "Responded") => vec![this(ChargebackOpened)],
            Some("Lost" | "Accepted" | "Expired") => vec![this(ChargebackOpened), this(ChargebackLost)],
            Some("Won") => vec![this(ChargebackOpened), this(ChargebackWon)],
            Some(other) => return Ok(Outcome::exception(code, format!("unknown disputeStatus {other:?}"))),
        },
        ("CHARGEBACK_REVERSED", true) => vec![this(ChargebackOpened), this(ChargebackWon)],
        ("SECOND_CHARGEBACK", true) => vec![this(ChargebackOpened), this(ChargebackWon), this(SecondChargeback)],
        ("PREARBITRATION_WON" | "PREARBITRATION_LOST", true) => vec![
            this(ChargebackOpened),
            this(ChargebackWon),
            this(SecondChargeback),
            this(if code == "PREARBITRATION_WON" { PrearbitrationWon } else { PrearbitrationLost }),
        ],
        (_, false) => return ignore("the PSP refused the request (success=false): no money moved"),
        (
            "NOTIFICATION_OF_CHARGEBACK"
            | "REQUEST_FOR_INFORMATION"
            | "DISPUTE_DEFENSE_PERIOD_ENDED"
            | "DISPUTE_OPENED_WITH_CHARGEBACK"
            | "ISSUER_COMMENTS"
            | "ISSUER_RESPONSE_TIMEFRAME_EXPIRED"
            | "INFORMATION_SUPPLIED"
            | "NOTIFICATION_OF_FRAUD",
            true,
        ) => return ignore("dispute information only: funds move with CHARGEBACK and its later stages"),
        (other, true) => return ignore(&format!("{other} moves no money that Tally books")),
    };

    let amount = item.amount.as_ref().ok_or_else(|| schema(code, "amount is missing"))?;
    let currency =
        Currency::from_code(amount.currency.as_deref().ok_or_else(|| schema(code, "amount.currency is missing"))?)?;
    let value = match &amount.value {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.parse::<i64>().ok(),
        _ => None,
    }
    .ok_or_else(|| schema(code, "amount.value must be an integer"))?;
    let minor = rescale(value, currency.exponent_in(ExponentScheme::Adyen), currency.exponent())?;
    let event_date = item.event_date.as_deref().ok_or_else(|| schema(code, "eventDate is missing"))?;
    let occurred_at = Timestamp::parse_rfc3339(event_date).map_err(|e| schema(code, e.to_string()))?;
    let attributes = Attributes {
        card_token: item.additional("recurring.recurringDetailReference").map(str::to_owned),
        card_brand: item.payment_method.clone(),
        card_country: item.additional("cardIssuingCountry").map(str::to_owned),
        customer_token: item.additional("shopperReference").map(str::to_owned),
        device_id: None,
        payment_method: item.payment_method.clone(),
        // On success Adyen's `reason` is auth code:last4:expiry, which Tally does not keep; on failures and
        // disputes it is the refusal or dispute reason.
        reason: item
            .reason
            .clone()
            .filter(|r| !r.is_empty() && (!success || code != "AUTHORISATION" && code != "CAPTURE")),
    };
    let events = facts
        .into_iter()
        .map(|(kind, psp_reference, original_reference)| PaymentEvent {
            kind,
            payment_id: format!("adyen:{payment}"),
            psp: Psp::Adyen,
            psp_reference,
            original_reference,
            merchant_id: item.merchant_account_code.clone(),
            money: Money::new(minor, currency),
            fee: None,
            occurred_at,
            received_at,
            source: Source::Webhook,
            source_event_id: format!("{}:{}:{}", item.psp_reference, item.event_code, item.success),
            attributes: attributes.clone(),
        })
        .collect();
    Ok(Outcome::Events(events))
}
