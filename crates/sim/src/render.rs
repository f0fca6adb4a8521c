//! Facts rendered as the PSPs send them, built on the shared fixtures as templates (never a format from memory):
//! Stripe Events around charge / refund / dispute objects, Adyen standard notifications.

use serde_json::{json, Value};
use tally_domain::{EventKind, PaymentEvent, Psp, Secret};
use tally_money::Money;

use crate::lifecycle::{fact, ts, Ids, Lifecycle, ADYEN_KEY};

const STRIPE_EVENT: &str = include_str!("../../../../shared/fixtures/stripe/webhook-events/charge.succeeded.json");
const STRIPE_REFUND: &str =
    include_str!("../../../../shared/fixtures/stripe/webhook-events/charge.refund.updated.json");
const STRIPE_DISPUTE: &str =
    include_str!("../../../../shared/fixtures/stripe/webhook-events/charge.dispute.funds_withdrawn.json");
const ADYEN_NOTIFICATION: &str = include_str!("../../../../shared/fixtures/adyen/notifications/capture-true.json");

pub(crate) struct Rendered {
    pub psp: Psp,
    pub body: String,
}

fn template(source: &str) -> Value {
    serde_json::from_str(source).expect("fixture templates are JSON")
}

/// Every delivery of one payment's lifecycle, each with the facts it states.
pub(crate) fn lifecycle(
    psp: Psp,
    merchant: &str,
    money: Money,
    at: i64,
    lc: &Lifecycle,
    ids: &Ids,
) -> Vec<(Rendered, Vec<PaymentEvent>)> {
    match psp {
        Psp::Stripe => stripe(merchant, money, at, lc, ids),
        Psp::Adyen => adyen(merchant, money, at, lc, ids),
    }
}

fn stripe_event(id: &str, event_type: &str, created: i64, account: &str, object: Value) -> String {
    let mut e = template(STRIPE_EVENT);
    e["id"] = json!(format!("evt_{id}"));
    e["type"] = json!(event_type);
    e["created"] = json!(created);
    e["account"] = json!(account);
    // An endpoint pinned to an API version whose refunds are refunds (partial captures and cancellations create
    // no Refund objects since 2025-03-31.basil): the version Tally asks Stripe endpoints to use.
    e["api_version"] = json!("2025-03-31.basil");
    e["data"] = json!({ "object": object });
    serde_json::to_string(&e).expect("serialisable")
}

fn stripe(merchant: &str, money: Money, at: i64, lc: &Lifecycle, ids: &Ids) -> Vec<(Rendered, Vec<PaymentEvent>)> {
    let ch = format!("ch_{}", ids.payment);
    let currency = money.currency.code().to_lowercase();
    let minor = money.amount.minor();
    let mut charge = template(STRIPE_EVENT)["data"]["object"].clone();
    charge["id"] = json!(ch);
    charge["amount"] = json!(minor);
    charge["currency"] = json!(currency);
    charge["created"] = json!(at);
    charge["payment_intent"] = json!(format!("pi_{}", ids.payment));
    charge["balance_transaction"] = json!(format!("txn_{}", ids.payment));
    charge["refunds"]["url"] = json!(format!("/v1/charges/{ch}/refunds"));
    let mut out = Vec::new();
    let mut step = 0;
    let mut emit = |event_type: &str, object: Value, kinds: &[(EventKind, &str, Option<&str>, Money)]| {
        step += 1;
        let created = at + step * 60;
        let evt = format!("{}{step}", ids.payment);
        let body = stripe_event(&evt, event_type, created, merchant, object);
        let facts = kinds
            .iter()
            .map(|(k, r, o, m)| fact(Psp::Stripe, *k, (&ch, r, *o), merchant, *m, ts(created), format!("evt_{evt}")))
            .collect();
        out.push((Rendered { psp: Psp::Stripe, body }, facts));
    };
    if lc.declined {
        let mut failed = charge.clone();
        failed["status"] = json!("failed");
        failed["paid"] = json!(false);
        failed["captured"] = json!(false);
        failed["amount_captured"] = json!(0);
        failed["failure_code"] = json!("card_declined");
        emit("charge.failed", failed, &[(EventKind::AuthorizationFailed, &ch, None, money)]);
        return out;
    }
    if lc.manual_capture {
        let mut authorized = charge.clone();
        authorized["captured"] = json!(false);
        authorized["amount_captured"] = json!(0);
        emit("charge.succeeded", authorized, &[(EventKind::Authorized, &ch, None, money)]);
        let mut captured = charge.clone();
        captured["amount_captured"] = json!(minor);
        emit("charge.captured", captured, &[(EventKind::Captured, &ch, None, money)]);
    } else {
        let mut both = charge.clone();
        both["amount_captured"] = json!(minor);
        emit(
            "charge.succeeded",
            both,
            &[(EventKind::Authorized, &ch, None, money), (EventKind::Captured, &ch, None, money)],
        );
    }
    if let Some(refund_minor) = lc.refund {
        let re = format!("re_{}", ids.refs[0]);
        let mut refund = template(STRIPE_REFUND)["data"]["object"].clone();
        refund["id"] = json!(re);
        refund["amount"] = json!(refund_minor);
        refund["currency"] = json!(currency);
        refund["charge"] = json!(ch);
        refund["payment_intent"] = json!(format!("pi_{}", ids.payment));
        refund["status"] = json!("succeeded");
        refund["metadata"] = json!({});
        let r = Money::new(tally_money::Amount::from_minor(refund_minor), money.currency);
        emit("charge.refund.updated", refund, &[(EventKind::Refunded, &re, Some(&ch), r)]);
    }
    if let Some(won) = lc.chargeback {
        let mut dispute = template(STRIPE_DISPUTE)["data"]["object"].clone();
        dispute["id"] = json!(format!("dp_{}", ids.refs[1]));
        dispute["amount"] = json!(minor);
        dispute["currency"] = json!(currency);
        dispute["charge"] = json!(ch);
        dispute["status"] = json!("needs_response");
        // The money a dispute moves is in its balance transactions (negative: withdrawn, positive: reinstated).
        let withdrawal = json!({"id": format!("txn_w{}", ids.refs[1]), "object": "balance_transaction",
            "amount": -minor, "currency": currency, "fee": 0});
        dispute["balance_transactions"] = json!([withdrawal]);
        let opened = (EventKind::ChargebackOpened, ch.as_str(), None, money);
        emit("charge.dispute.funds_withdrawn", dispute.clone(), &[opened]);
        dispute["status"] = json!(if won { "won" } else { "lost" });
        if won {
            let reinstatement = json!({"id": format!("txn_r{}", ids.refs[1]), "object": "balance_transaction",
                "amount": minor, "currency": currency, "fee": 0});
            dispute["balance_transactions"] = json!([withdrawal, reinstatement]);
        }
        let kind = if won { EventKind::ChargebackWon } else { EventKind::ChargebackLost };
        // A closed dispute restates its opening (so that it nets correctly whichever arrives first).
        emit("charge.dispute.closed", dispute, &[opened, (kind, &ch, None, money)]);
    }
    out
}

fn adyen_item(
    code: &str,
    psp_ref: &str,
    original: Option<&str>,
    merchant: &str,
    money: Money,
    at: i64,
    success: bool,
) -> Value {
    let mut item = template(ADYEN_NOTIFICATION)["notificationItems"][0]["NotificationRequestItem"].clone();
    item["amount"] = json!({ "currency": money.currency.code(), "value": money.amount.minor() });
    item["eventCode"] = json!(code);
    item["eventDate"] = json!(ts(at).to_string());
    item["merchantAccountCode"] = json!(merchant);
    item["merchantReference"] = json!(format!("order-{}", original.unwrap_or(psp_ref)));
    item["pspReference"] = json!(psp_ref);
    item["success"] = json!(if success { "true" } else { "false" });
    item["reason"] = json!(if success { "" } else { "Refused" });
    match original {
        Some(o) => item["originalReference"] = json!(o),
        None => {
            item.as_object_mut().expect("object").remove("originalReference");
        }
    }
    sign(&mut item);
    item
}

fn sign(item: &mut Value) {
    let key = tally_psp::adyen::HmacKey::from_hex(ADYEN_KEY).expect("hex key");
    let wire: tally_psp::adyen::wire::NotificationRequestItem =
        serde_json::from_value(item.clone()).expect("rendered items parse");
    item["additionalData"] = json!({ "hmacSignature": tally_psp::adyen::sign_item(&wire, &key) });
}

fn adyen_body(item: Value) -> String {
    serde_json::to_string(&json!({ "live": "false", "notificationItems": [{ "NotificationRequestItem": item }] }))
        .expect("serialisable")
}

fn adyen(merchant: &str, money: Money, at: i64, lc: &Lifecycle, ids: &Ids) -> Vec<(Rendered, Vec<PaymentEvent>)> {
    let payment = ids.payment.to_uppercase()[..16].to_owned();
    let mut out = Vec::new();
    let mut step = 0;
    // Each delivery with the facts it states: a later dispute stage restates the stages before it.
    let mut emit = |code: &str,
                    psp_ref: &str,
                    original: Option<&str>,
                    m: Money,
                    success: bool,
                    status: Option<&str>,
                    kinds: &[EventKind]| {
        step += 1;
        let when = at + step * 60;
        let mut item = adyen_item(code, psp_ref, original, merchant, m, when, success);
        // additionalData is not in Adyen's HMAC signing string: adding to it keeps the signature valid.
        if let Some(status) = status {
            item["additionalData"]["disputeStatus"] = json!(status);
        }
        let source = format!("{psp_ref}:{code}:{success}");
        let facts = kinds
            .iter()
            .map(|kind| {
                let key = (original.unwrap_or(psp_ref), psp_ref, original);
                fact(Psp::Adyen, *kind, key, merchant, m, ts(when), source.clone())
            })
            .collect();
        out.push((Rendered { psp: Psp::Adyen, body: adyen_body(item) }, facts));
    };
    if lc.declined {
        emit("AUTHORISATION", &payment, None, money, false, None, &[EventKind::AuthorizationFailed]);
        return out;
    }
    emit("AUTHORISATION", &payment, None, money, true, None, &[EventKind::Authorized]);
    emit("CAPTURE", &ids.refs[0], Some(&payment), money, true, None, &[EventKind::Captured]);
    if let Some(refund_minor) = lc.refund {
        let r = Money::new(tally_money::Amount::from_minor(refund_minor), money.currency);
        emit("REFUND", &ids.refs[1], Some(&payment), r, true, None, &[EventKind::Refunded]);
    }
    if let Some(won) = lc.chargeback {
        // Every stage of a dispute carries the dispute's own pspReference.
        let dispute = &ids.refs[2];
        let opened = EventKind::ChargebackOpened;
        emit("CHARGEBACK", dispute, Some(&payment), money, true, Some("Undefended"), &[opened]);
        if won {
            emit(
                "CHARGEBACK_REVERSED",
                dispute,
                Some(&payment),
                money,
                true,
                Some("Won"),
                &[opened, EventKind::ChargebackWon],
            );
        } else {
            // Lost without a second chargeback: the CHARGEBACK again, with its final disputeStatus.
            emit(
                "CHARGEBACK",
                dispute,
                Some(&payment),
                money,
                true,
                Some("Lost"),
                &[opened, EventKind::ChargebackLost],
            );
        }
    }
    out
}

/// The same notification with a signature that is not the PSP's.
pub(crate) fn forge_adyen(body: &str) -> String {
    let mut v: Value = serde_json::from_str(body).expect("rendered");
    v["notificationItems"][0]["NotificationRequestItem"]["additionalData"]["hmacSignature"] =
        json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    serde_json::to_string(&v).expect("serialisable")
}

/// The same delivery with a card number in a free-text field (signed correctly: the PSP really sent it).
pub(crate) fn with_pan(psp: Psp, body: &str) -> String {
    let mut v: Value = serde_json::from_str(body).expect("rendered");
    match psp {
        Psp::Stripe => v["data"]["object"]["description"] = json!("customer wrote 4242 4242 4242 4242"),
        Psp::Adyen => {
            let item = &mut v["notificationItems"][0]["NotificationRequestItem"];
            item["merchantReference"] = json!("4111111111111111");
            sign(item);
        }
    }
    serde_json::to_string(&v).expect("serialisable")
}

/// The same Stripe event with a type Stripe does not publish.
pub(crate) fn unknown_type(body: &str) -> String {
    let mut v: Value = serde_json::from_str(body).expect("rendered");
    v["type"] = json!("charge.teleported");
    serde_json::to_string(&v).expect("serialisable")
}

/// The `Stripe-Signature` header for `body` at `now` (valid or forged).
pub fn stripe_header(body: &str, forged: bool, now: i64) -> String {
    let secret = if forged { "whsec_not_stripes" } else { crate::STRIPE_SECRET };
    tally_psp::stripe::sign(body.as_bytes(), &Secret::new(secret.to_owned()), now)
}
