//! Adyen notification items → canonical events. Each item becomes one [`Outcome`]:
//!
//! | eventCode | success=true | success=false |
//! |---|---|---|
//! | AUTHORISATION | authorized | authorization_failed |
//! | CAPTURE | captured | capture_failed |
//! | CAPTURE_FAILED | capture_failed | ignored |
//! | REFUND, REFUND_WITH_DATA | refunded | ignored: the refund was refused, no money moved |
//! | CANCEL_OR_REFUND with `modification.action=refund` | refunded | ignored |
//! | REFUND_FAILED, REFUNDED_REVERSED | refund_failed (reverses a booked refund) | ignored |
//! | CHARGEBACK | chargeback_opened | ignored |
//! | CHARGEBACK_REVERSED, PREARBITRATION_WON | chargeback_won | ignored |
//! | SECOND_CHARGEBACK, PREARBITRATION_LOST | chargeback_lost | ignored |
//! | every other code in Adyen's list | ignored, with the reason | |
//!
//! The payment is named by `originalReference` (modifications) or `pspReference` (the payment itself). Amounts are
//! rescaled from Adyen's exponent to ISO 4217 (CLP, CVE). Adyen notifications have no event id: the source event id
//! is `pspReference:eventCode:success`, which is also what makes a retried item the same fact.

use serde_json::Value;
use tally_domain::{Attributes, EventKind, PaymentEvent, Psp, Source, Timestamp};
use tally_money::{rescale, Currency, ExponentScheme, Money};

use super::wire::{self, Body, NotificationRequestItem};
use crate::error::schema;
use crate::{NormalizeError, Outcome};

/// Normalises an Adyen webhook body: one outcome per notification item.
pub fn normalize(body: &[u8], received_at: Timestamp) -> Result<Vec<Outcome>, NormalizeError> {
    let items = match wire::parse(body) {
        Ok(Body::Standard(n)) => n.items.into_iter().map(|w| w.item).collect(),
        Ok(Body::BareItem(item)) => vec![*item],
        Ok(Body::Other(kind)) => {
            return Ok(vec![Outcome::Ignored {
                event_type: kind,
                reason: "not a payment notification (platform, management or terminal webhook)".into(),
            }])
        }
        Err((false, why)) => return Err(NormalizeError::MalformedJson(why)),
        Err((true, why)) => return Err(schema("adyen notification", why)),
    };
    if items.is_empty() {
        return Err(schema("adyen notification", "notificationItems is empty"));
    }
    items.iter().map(|item| normalize_item(item, received_at)).collect()
}

fn normalize_item(item: &NotificationRequestItem, received_at: Timestamp) -> Result<Outcome, NormalizeError> {
    let code = item.event_code.as_str();
    if !super::is_known_event_code(code) {
        return Err(NormalizeError::UnknownEventType(crate::error::clean(code)));
    }
    if !matches!(item.success.as_str(), "true" | "false") {
        return Err(schema(code, format!("success must be \"true\" or \"false\", got {:?}", item.success)));
    }
    let ignore = |reason: &str| Ok(Outcome::Ignored { event_type: code.to_owned(), reason: reason.to_owned() });
    let success = item.success();
    let kind = match (code, success) {
        ("AUTHORISATION", true) => EventKind::Authorized,
        ("AUTHORISATION", false) => EventKind::AuthorizationFailed,
        ("CAPTURE", true) => EventKind::Captured,
        ("CAPTURE", false) | ("CAPTURE_FAILED", true) => EventKind::CaptureFailed,
        ("REFUND" | "REFUND_WITH_DATA", true) => EventKind::Refunded,
        ("CANCEL_OR_REFUND", true) if item.additional("modification.action") == Some("refund") => EventKind::Refunded,
        ("CANCEL_OR_REFUND", true) => return ignore("cancel-or-refund resolved to a cancellation: no money moved"),
        ("REFUND_FAILED" | "REFUNDED_REVERSED", true) => EventKind::RefundFailed,
        ("CHARGEBACK", true) => EventKind::ChargebackOpened,
        ("CHARGEBACK_REVERSED" | "PREARBITRATION_WON", true) => EventKind::ChargebackWon,
        ("SECOND_CHARGEBACK" | "PREARBITRATION_LOST", true) => EventKind::ChargebackLost,
        (_, false) => return ignore("the PSP refused the request (success=false): no money moved"),
        ("CANCELLATION" | "TECHNICAL_CANCEL", true) => return ignore("authorisation cancelled: no money moved"),
        ("NOTIFICATION_OF_CHARGEBACK" | "REQUEST_FOR_INFORMATION" | "DISPUTE_DEFENSE_PERIOD_ENDED", true) => {
            return ignore("dispute information only: funds move with CHARGEBACK")
        }
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
    let payment = item.original_reference.as_deref().unwrap_or(&item.psp_reference);

    Ok(Outcome::Events(vec![PaymentEvent {
        kind,
        payment_id: format!("adyen:{payment}"),
        psp: Psp::Adyen,
        psp_reference: item.psp_reference.clone(),
        original_reference: item.original_reference.clone(),
        merchant_id: item.merchant_account_code.clone(),
        money: Money::new(minor, currency),
        fee: None,
        occurred_at,
        received_at,
        source: Source::Webhook,
        source_event_id: format!("{}:{}:{}", item.psp_reference, item.event_code, item.success),
        attributes: Attributes {
            card_token: item.additional("recurring.recurringDetailReference").map(str::to_owned),
            card_brand: item.payment_method.clone(),
            card_country: item.additional("cardIssuingCountry").map(str::to_owned),
            customer_token: item.additional("shopperReference").map(str::to_owned),
            device_id: None,
            payment_method: item.payment_method.clone(),
            // On success Adyen's `reason` is auth code:last4:expiry, which Tally does not keep; on failures and
            // disputes it is the refusal or dispute reason.
            reason: item.reason.clone().filter(|r| !r.is_empty() && (!success || is_dispute(kind))),
        },
    }]))
}

fn is_dispute(kind: EventKind) -> bool {
    matches!(kind, EventKind::ChargebackOpened | EventKind::ChargebackWon | EventKind::ChargebackLost)
}
