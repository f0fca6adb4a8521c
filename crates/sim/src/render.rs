//! Facts rendered as the PSPs send them, built on the shared fixtures as templates (never a format from memory):
//! Stripe Events around charge / refund / dispute objects, Adyen standard notifications.

use serde_json::{json, Value};
use tally_domain::{EventKind, PaymentEvent, Psp, Secret};
use tally_money::{Amount, Currency, Money};

use crate::lifecycle::{fact, ts, DisputeEnd, Ids, Lifecycle, RefundFailure, Release, ADYEN_KEY};

const STRIPE_EVENT: &str = include_str!("../../../../shared/fixtures/stripe/webhook-events/charge.succeeded.json");
const STRIPE_REFUND: &str =
    include_str!("../../../../shared/fixtures/stripe/webhook-events/charge.refund.updated.json");
const STRIPE_DISPUTE: &str =
    include_str!("../../../../shared/fixtures/stripe/webhook-events/charge.dispute.funds_withdrawn.json");
const STRIPE_INTENT_CANCELED: &str =
    include_str!("../../../../shared/fixtures/stripe/webhook-events/payment_intent.canceled.json");
const ADYEN_NOTIFICATION: &str = include_str!("../../../../shared/fixtures/adyen/notifications/capture-true.json");

pub(crate) struct Rendered {
    pub psp: Psp,
    /// Rendered in live mode (Tally's endpoints are test-mode: the other mode).
    pub live: bool,
    pub body: String,
}

/// The decimals a PSP uses on the wire where they differ from ISO 4217 — Stripe: ISK two-decimal, MGA
/// zero-decimal (docs.stripe.com/currencies); Adyen: CLP 2, CVE 0, IDR 0, ISK 2
/// (docs.adyen.com/development-resources/currency-codes). Stated here again on purpose, not read from
/// `tally_money`: the simulator must not share the table it checks, or a wrong entry would pass every oracle.
fn wire_exponent(psp: Psp, currency: Currency) -> u32 {
    let iso = u32::from(currency.exponent());
    match (psp, currency.code()) {
        (Psp::Stripe, "ISK") => 2,
        (Psp::Stripe, "MGA") => 0,
        (Psp::Adyen, "CLP" | "ISK") => 2,
        (Psp::Adyen, "CVE" | "IDR") => 0,
        _ => iso,
    }
}

/// The smallest ISO minor amount the PSP can send in `currency` (100 where the wire has two decimals fewer).
pub(crate) fn wire_unit(psp: Psp, currency: Currency) -> i64 {
    10i64.pow(u32::from(currency.exponent()).saturating_sub(wire_exponent(psp, currency)))
}

/// An ISO minor amount as the PSP writes it.
fn wire(psp: Psp, currency: Currency, minor: i64) -> i64 {
    let (iso, wire) = (u32::from(currency.exponent()), wire_exponent(psp, currency));
    if wire >= iso {
        minor * 10i64.pow(wire - iso)
    } else {
        minor / 10i64.pow(iso - wire)
    }
}

fn money(minor: i64, currency: Currency) -> Money {
    Money::new(Amount::from_minor(minor), currency)
}

fn template(source: &str) -> Value {
    serde_json::from_str(source).expect("fixture templates are JSON")
}

/// Every delivery of one payment's lifecycle, each with the facts it states.
pub(crate) fn lifecycle(
    psp: Psp,
    merchant: &str,
    currency: Currency,
    at: i64,
    lc: &Lifecycle,
    ids: &Ids,
) -> Vec<(Rendered, Vec<PaymentEvent>)> {
    match psp {
        Psp::Stripe => stripe(merchant, currency, at, lc, ids),
        Psp::Adyen => adyen(merchant, currency, at, lc, ids),
    }
}

fn stripe_event(id: &str, event_type: &str, created: i64, account: &str, live: bool, object: Value) -> String {
    let mut e = template(STRIPE_EVENT);
    e["id"] = json!(format!("evt_{id}"));
    e["type"] = json!(event_type);
    e["created"] = json!(created);
    e["account"] = json!(account);
    e["livemode"] = json!(live);
    // An endpoint pinned to an API version whose refunds are refunds (partial captures and cancellations create
    // no Refund objects since 2025-03-31.basil): the version Tally asks Stripe endpoints to use.
    e["api_version"] = json!("2025-03-31.basil");
    e["data"] = json!({ "object": object });
    serde_json::to_string(&e).expect("serialisable")
}

type Stated<'a> = (EventKind, &'a str, Option<&'a str>, i64);

fn stripe(
    merchant: &str,
    currency: Currency,
    at: i64,
    lc: &Lifecycle,
    ids: &Ids,
) -> Vec<(Rendered, Vec<PaymentEvent>)> {
    let ch = format!("ch_{}", ids.payment);
    let cur = currency.code().to_lowercase();
    let w = |minor: i64| wire(Psp::Stripe, currency, minor);
    let auth = lc.authorized;
    let mut charge = template(STRIPE_EVENT)["data"]["object"].clone();
    charge["id"] = json!(ch);
    charge["amount"] = json!(w(auth));
    charge["currency"] = json!(cur);
    charge["created"] = json!(at);
    charge["payment_intent"] = json!(format!("pi_{}", ids.payment));
    charge["balance_transaction"] = json!(format!("txn_{}", ids.payment));
    charge["refunds"]["url"] = json!(format!("/v1/charges/{ch}/refunds"));
    // The customer's details as Stripe carries them (billing_details, in the fixture's shape): personal data that
    // must never reach the warehouse.
    let who = Person::of(&ids.payment);
    charge["billing_details"]["email"] = json!(who.email);
    charge["billing_details"]["name"] = json!(who.name);
    charge["billing_details"]["phone"] = json!(who.phone);
    charge["billing_details"]["address"]["line1"] = json!(who.street);
    charge["billing_details"]["address"]["city"] = json!("London");
    charge["billing_details"]["address"]["postal_code"] = json!("NW1 6XE");
    charge["billing_details"]["address"]["country"] = json!("GB");
    let mut out = Vec::new();
    let mut step = 0;
    let mut emit = |event_type: &str, object: Value, kinds: &[Stated<'_>]| {
        step += 1;
        let created = at + step * 60;
        let evt = format!("{}{step}", ids.payment);
        let body = stripe_event(&evt, event_type, created, merchant, lc.live, object);
        let facts = kinds
            .iter()
            .map(|(k, r, o, m)| {
                fact(Psp::Stripe, *k, (&ch, r, *o), merchant, money(*m, currency), ts(created), format!("evt_{evt}"))
            })
            .collect();
        out.push((Rendered { psp: Psp::Stripe, live: lc.live, body }, facts));
    };
    if lc.declined {
        let mut failed = charge.clone();
        failed["status"] = json!("failed");
        failed["paid"] = json!(false);
        failed["captured"] = json!(false);
        failed["amount_captured"] = json!(0);
        failed["failure_code"] = json!("card_declined");
        emit("charge.failed", failed, &[(EventKind::AuthorizationFailed, &ch, None, auth)]);
        return out;
    }
    if lc.manual_capture {
        let mut authorized = charge.clone();
        authorized["captured"] = json!(false);
        authorized["amount_captured"] = json!(0);
        emit("charge.succeeded", authorized.clone(), &[(EventKind::Authorized, &ch, None, auth)]);
        match lc.release {
            Release::CapturedAll | Release::CapturedPart(_) => {
                let captured = lc.captured();
                let mut c = charge.clone();
                // A partial capture releases the rest; on basil and later no Refund object says so.
                c["amount_captured"] = json!(w(captured));
                emit("charge.captured", c, &[(EventKind::Captured, &ch, None, captured)]);
            }
            Release::Canceled => {
                let mut pi = template(STRIPE_INTENT_CANCELED)["data"]["object"].clone();
                pi["id"] = json!(format!("pi_{}", ids.payment));
                pi["amount"] = json!(w(auth));
                pi["amount_capturable"] = json!(0);
                pi["amount_received"] = json!(0);
                pi["currency"] = json!(cur);
                pi["latest_charge"] = json!(ch);
                emit("payment_intent.canceled", pi, &[(EventKind::Canceled, &ch, None, auth)]);
            }
            Release::Expired => emit("charge.expired", authorized, &[(EventKind::Canceled, &ch, None, auth)]),
        }
    } else {
        let mut both = charge.clone();
        both["amount_captured"] = json!(w(auth));
        emit(
            "charge.succeeded",
            both,
            &[(EventKind::Authorized, &ch, None, auth), (EventKind::Captured, &ch, None, auth)],
        );
    }
    if let Some(plan) = &lc.refund {
        let re = format!("re_{}", ids.refs[0]);
        let mut refund = template(STRIPE_REFUND)["data"]["object"].clone();
        refund["id"] = json!(re);
        refund["amount"] = json!(w(plan.amount));
        refund["currency"] = json!(cur);
        refund["charge"] = json!(ch);
        refund["payment_intent"] = json!(format!("pi_{}", ids.payment));
        refund["metadata"] = json!({});
        let refunded = (EventKind::Refunded, re.as_str(), Some(ch.as_str()), plan.amount);
        if plan.failure.is_some() {
            // Accepted first (pending), then failed: the failure states the refund it reverses.
            refund["status"] = json!("pending");
            emit("charge.refund.updated", refund.clone(), &[refunded]);
            refund["status"] = json!("failed");
            refund["failure_reason"] = json!("expired_or_canceled_card");
            let failed = (EventKind::RefundFailed, re.as_str(), Some(ch.as_str()), plan.amount);
            emit("charge.refund.updated", refund, &[refunded, failed]);
        } else {
            refund["status"] = json!("succeeded");
            emit("charge.refund.updated", refund, &[refunded]);
        }
    }
    if let Some(plan) = &lc.dispute {
        let d = plan.amount;
        let mut dispute = template(STRIPE_DISPUTE)["data"]["object"].clone();
        dispute["id"] = json!(format!("dp_{}", ids.refs[1]));
        dispute["amount"] = json!(w(d));
        dispute["currency"] = json!(cur);
        dispute["charge"] = json!(ch);
        dispute["status"] = json!("needs_response");
        // The money a dispute moves is in its balance transactions (negative: withdrawn, positive: reinstated),
        // the dispute fee on the withdrawal.
        let txn_w = format!("txn_w{}", ids.refs[1]);
        let withdrawal = json!({"id": txn_w, "object": "balance_transaction",
            "amount": -w(d), "currency": cur, "fee": w(plan.fee)});
        dispute["balance_transactions"] = json!([withdrawal]);
        let opened = (EventKind::ChargebackOpened, ch.as_str(), None, d);
        let mut withdrawn = vec![opened];
        if plan.fee > 0 {
            withdrawn.push((EventKind::Fee, txn_w.as_str(), Some(ch.as_str()), plan.fee));
        }
        emit("charge.dispute.funds_withdrawn", dispute.clone(), &withdrawn);
        // Every later event of the dispute lists the withdrawal too, so it states the opening and its fee again.
        let reinstate = |amount: i64| {
            json!({"id": format!("txn_r{}", ids.refs[1]), "object": "balance_transaction",
                "amount": w(amount), "currency": cur, "fee": 0})
        };
        // A closed dispute restates its opening (so that it nets correctly whichever arrives first).
        match plan.end {
            DisputeEnd::Won | DisputeEnd::SecondWon => {
                dispute["balance_transactions"] = json!([withdrawal, reinstate(d)]);
                dispute["status"] = json!("won");
                emit(
                    "charge.dispute.closed",
                    dispute,
                    &[withdrawn.as_slice(), &[(EventKind::ChargebackWon, &ch, None, d)]].concat(),
                );
            }
            DisputeEnd::Lost | DisputeEnd::SecondLost => {
                dispute["status"] = json!("lost");
                emit(
                    "charge.dispute.closed",
                    dispute,
                    &[withdrawn.as_slice(), &[(EventKind::ChargebackLost, &ch, None, d)]].concat(),
                );
            }
            DisputeEnd::PartlyWon(r) => {
                dispute["balance_transactions"] = json!([withdrawal, reinstate(r)]);
                let won = (EventKind::ChargebackWon, ch.as_str(), None, r);
                emit("charge.dispute.funds_reinstated", dispute.clone(), &[withdrawn.as_slice(), &[won]].concat());
                dispute["status"] = json!("lost");
                emit(
                    "charge.dispute.closed",
                    dispute,
                    &[withdrawn.as_slice(), &[won, (EventKind::ChargebackLost, &ch, None, d - r)]].concat(),
                );
            }
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn adyen_item(
    code: &str,
    psp_ref: &str,
    original: Option<&str>,
    merchant: &str,
    currency: Currency,
    minor: i64,
    at: i64,
    success: bool,
) -> Value {
    let mut item = template(ADYEN_NOTIFICATION)["notificationItems"][0]["NotificationRequestItem"].clone();
    item["amount"] = json!({ "currency": currency.code(), "value": wire(Psp::Adyen, currency, minor) });
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

fn adyen_body(item: Value, live: bool) -> String {
    let live = if live { "true" } else { "false" };
    serde_json::to_string(&json!({ "live": live, "notificationItems": [{ "NotificationRequestItem": item }] }))
        .expect("serialisable")
}

/// Two notifications as one: `first`'s items, then `second`'s (each item keeps its own HMAC).
pub(crate) fn merge_adyen(first: &str, second: &str) -> String {
    let mut a: Value = serde_json::from_str(first).expect("rendered");
    let b: Value = serde_json::from_str(second).expect("rendered");
    let items = b["notificationItems"].as_array().cloned().unwrap_or_default();
    a["notificationItems"].as_array_mut().expect("items").extend(items);
    serde_json::to_string(&a).expect("serialisable")
}

fn adyen(merchant: &str, currency: Currency, at: i64, lc: &Lifecycle, ids: &Ids) -> Vec<(Rendered, Vec<PaymentEvent>)> {
    use EventKind::*;
    let payment = ids.payment.to_uppercase()[..16].to_owned();
    let shopper = Person::of(&ids.payment).email;
    let mut out = Vec::new();
    let mut step = 0;
    // Each delivery with the facts it states: a reversal states what it reverses, a later dispute stage the stages
    // before it.
    let mut emit = |code: &str,
                    psp_ref: &str,
                    original: Option<&str>,
                    minor: i64,
                    success: bool,
                    status: Option<&str>,
                    kinds: &[EventKind]| {
        step += 1;
        let when = at + step * 60;
        let mut item = adyen_item(code, psp_ref, original, merchant, currency, minor, when, success);
        // additionalData is not in Adyen's HMAC signing string: adding to it keeps the signature valid.
        if let Some(status) = status {
            item["additionalData"]["disputeStatus"] = json!(status);
        }
        // Merchants often use the shopper's e-mail as Adyen's shopperReference: personal data, which Tally maps to
        // the fact's customer token and the warehouse must tokenize.
        item["additionalData"]["shopperReference"] = json!(shopper);
        let source = format!("{psp_ref}:{code}:{success}");
        let facts = kinds
            .iter()
            .map(|kind| {
                let key = (original.unwrap_or(psp_ref), psp_ref, original);
                let mut f = fact(Psp::Adyen, *kind, key, merchant, money(minor, currency), ts(when), source.clone());
                f.attributes.customer_token = Some(shopper.clone());
                f
            })
            .collect();
        out.push((Rendered { psp: Psp::Adyen, live: lc.live, body: adyen_body(item, lc.live) }, facts));
    };
    let auth = lc.authorized;
    if lc.declined {
        emit("AUTHORISATION", &payment, None, auth, false, None, &[AuthorizationFailed]);
        return out;
    }
    emit("AUTHORISATION", &payment, None, auth, true, None, &[Authorized]);
    let p = Some(payment.as_str());
    match lc.release {
        Release::CapturedAll | Release::CapturedPart(_) => {
            emit("CAPTURE", &ids.refs[0], p, lc.captured(), true, None, &[Captured])
        }
        Release::Canceled => emit("CANCELLATION", &ids.refs[0], p, auth, true, None, &[Canceled]),
        Release::Expired => emit("EXPIRE", &ids.refs[0], p, auth, true, None, &[Canceled]),
    }
    if let Some(plan) = &lc.refund {
        let r = &ids.refs[1];
        emit("REFUND", r, p, plan.amount, true, None, &[Refunded]);
        match plan.failure {
            None => {}
            Some(RefundFailure::Failed) => {
                emit("REFUND_FAILED", r, p, plan.amount, true, None, &[Refunded, RefundFailed])
            }
            // The same notification again, now with success=false: the refund was not made after all.
            Some(RefundFailure::Flipped) => emit("REFUND", r, p, plan.amount, false, None, &[Refunded, RefundFailed]),
        }
    }
    if let Some(plan) = &lc.dispute {
        // Every stage of a dispute carries the dispute's own pspReference.
        let (dispute, d) = (&ids.refs[2], plan.amount);
        emit("CHARGEBACK", dispute, p, d, true, Some("Undefended"), &[ChargebackOpened]);
        match plan.end {
            DisputeEnd::Won => {
                emit("CHARGEBACK_REVERSED", dispute, p, d, true, Some("Won"), &[ChargebackOpened, ChargebackWon])
            }
            // Lost without a second chargeback: the CHARGEBACK again, with its final disputeStatus.
            DisputeEnd::Lost | DisputeEnd::PartlyWon(_) => {
                emit("CHARGEBACK", dispute, p, d, true, Some("Lost"), &[ChargebackOpened, ChargebackLost])
            }
            DisputeEnd::SecondWon | DisputeEnd::SecondLost => {
                let reversed = [ChargebackOpened, ChargebackWon];
                emit("CHARGEBACK_REVERSED", dispute, p, d, true, Some("Won"), &reversed);
                let second = [ChargebackOpened, ChargebackWon, SecondChargeback];
                emit("SECOND_CHARGEBACK", dispute, p, d, true, None, &second);
                let (code, last) = match plan.end {
                    DisputeEnd::SecondWon => ("PREARBITRATION_WON", PrearbitrationWon),
                    _ => ("PREARBITRATION_LOST", PrearbitrationLost),
                };
                emit(code, dispute, p, d, true, None, &[ChargebackOpened, ChargebackWon, SecondChargeback, last]);
            }
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

/// A simulated customer: personal data, derived from the payment id (no draw from the seeded generator, so the
/// workload's other choices do not move).
pub(crate) struct Person {
    pub email: String,
    pub name: String,
    pub phone: String,
    pub street: String,
}

impl Person {
    pub(crate) fn of(payment: &str) -> Person {
        const FIRST: [&str; 8] = ["Olivia", "Noah", "Amelia", "Leo", "Isla", "Oscar", "Ava", "Arthur"];
        const LAST: [&str; 8] = ["Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Davies", "Evans"];
        let h = payment.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        let (first, last) = (FIRST[(h % 8) as usize], LAST[((h >> 8) % 8) as usize]);
        let tail = &payment[payment.len().saturating_sub(6)..];
        Person {
            email: format!("{}.{}.{tail}@example.com", first.to_lowercase(), last.to_lowercase()),
            name: format!("{first} {last}"),
            phone: format!("+44 20 7946 {:04}", h % 10_000),
            street: format!("{} Baker Street", 1 + h % 200),
        }
    }
}
