//! Stripe PaymentIntents. Wire formats from Stripe's published spec (`stripe/openapi`, `openapi/spec3.json`, read at
//! commit af5309ca; notes in docs/adr/0018): requests are form-encoded, nested keys bracketed (`metadata[k]=v`,
//! the spec's `deepObject` style); every answer is the resource or `{"error": api_errors}`.
//!
//! | call | request | answer |
//! |---|---|---|
//! | authorize | `POST /v1/payment_intents` `amount`, `currency` (lower case), `capture_method`, `confirm=true`, `payment_method`, `metadata[…]` | `payment_intent` |
//! | capture | `POST /v1/payment_intents/{intent}/capture` `amount_to_capture` | `payment_intent` |
//! | refund | `POST /v1/refunds` `payment_intent`, `amount`, `metadata[…]` | `refund` |
//! | cancel | `POST /v1/payment_intents/{intent}/cancel` | `payment_intent` |
//! | resolve | the same request again, same `Idempotency-Key` (Stripe answers it once and replays its answer) | |
//!
//! PaymentIntent `status` → Tally:
//!
//! | Stripe | Tally | facts (fact keys as the webhooks give them: by the charge) |
//! |---|---|---|
//! | `requires_capture` | authorized (`amount_capturable`) | authorized |
//! | `succeeded` | captured (`amount_received` of `amount`) | authorized, captured |
//! | `requires_payment_method` (after a decline) | failed (`last_payment_error`) | authorization_failed, when the error names its charge |
//! | `canceled` | canceled | canceled, when there is a charge |
//! | `processing` | pending: resolved later | — |
//! | `requires_action`, `requires_confirmation` | requires_review (Tally cannot authenticate a customer server to server) | — |
//! | anything else | requires_review, with the status named | — |
//!
//! Refund `status` (a plain string in the spec; its description lists `pending`, `requires_action`, `succeeded`,
//! `failed`, `canceled`): `succeeded` and `pending` are a refund Stripe booked (its balance moves at creation, as
//! the webhook mapping books it); `failed` and `canceled` are a failed refund; `requires_action` is received.
//! A 409 is Stripe's "a request with this key is still running": no answer yet, never a failure.

use serde::Deserialize;
use serde_json::Value;
use tally_domain::{EventKind, PaymentEvent, Psp};

use super::transport::{Body, Reply, Transport};
use super::{api_fact, psp_idempotency_key, Answer, Call, FactNames, PspModification, PspPayment, PspStatus};
use crate::model::{CaptureMethod, OperationState};

/// The API version Tally's requests and their answers are read in (the webhook mapping needs basil or later).
pub const API_VERSION: &str = "2025-03-31.basil";

#[derive(Debug, Deserialize)]
struct PaymentIntent {
    id: String,
    status: String,
    amount: Option<i64>,
    amount_capturable: Option<i64>,
    amount_received: Option<i64>,
    currency: Option<String>,
    /// A charge id, or the expanded charge.
    latest_charge: Option<Value>,
    last_payment_error: Option<ApiError>,
}

#[derive(Debug, Deserialize)]
struct ApiError {
    #[serde(rename = "type")]
    kind: String,
    code: Option<String>,
    decline_code: Option<String>,
    message: Option<String>,
    charge: Option<String>,
    payment_intent: Option<Box<PaymentIntent>>,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ApiError,
}

#[derive(Debug, Deserialize)]
struct Refund {
    id: String,
    amount: i64,
    currency: String,
    charge: Option<Value>,
    status: Option<String>,
}

fn id_of(v: &Option<Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Object(o)) => o.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

pub struct Stripe {
    pub transport: Transport,
}

impl Stripe {
    async fn post(&self, call: &Call<'_>, path: &str, form: Vec<(String, String)>) -> Reply {
        let key = psp_idempotency_key(call.operation);
        let account = call.merchant.stripe_account.clone();
        let mut extra = vec![("Stripe-Version", API_VERSION)];
        if let Some(account) = account.as_deref() {
            extra.push(("Stripe-Account", account));
        }
        self.transport.send(reqwest::Method::POST, path, &Body::Form(form), Some(&key), &extra).await
    }

    /// `_customer`: the merchant's customer token is no Stripe Customer (`cus_…`); Stripe is not sent it.
    pub async fn authorize(&self, call: &Call<'_>, token: &str, _customer: Option<&str>) -> Answer<PspPayment> {
        let p = call.payment;
        let amount = match wire_amount(p.amount, &p.currency) {
            Ok(a) => a,
            Err(e) => return refused_locally(e),
        };
        let form = vec![
            ("amount".into(), amount.to_string()),
            ("currency".into(), p.currency.to_ascii_lowercase()),
            (
                "capture_method".into(),
                match p.capture_method {
                    CaptureMethod::Automatic => "automatic",
                    CaptureMethod::Manual => "manual",
                }
                .into(),
            ),
            ("confirm".into(), "true".into()),
            ("payment_method".into(), token.to_owned()),
            ("metadata[tally_payment]".into(), crate::model::public_id(p.id)),
            ("metadata[tally_operation]".into(), call.operation.to_string()),
            ("metadata[merchant_reference]".into(), p.merchant_reference.clone()),
        ];
        let reply = self.post(call, "/v1/payment_intents", form).await;
        self.answered(call, reply, |pi: PaymentIntent| Answer::Ok(self.payment(call, &pi)))
    }

    pub async fn capture(&self, call: &Call<'_>, amount: i64) -> Answer<PspModification> {
        let Some(intent) = call.payment.psp_payment_id.clone() else {
            return refused_locally("the payment has no PaymentIntent to capture".into());
        };
        let wire = match wire_amount(amount, &call.payment.currency) {
            Ok(a) => a,
            Err(e) => return refused_locally(e),
        };
        let form = vec![("amount_to_capture".into(), wire.to_string())];
        let reply = self.post(call, &format!("/v1/payment_intents/{intent}/capture"), form).await;
        self.answered(call, reply, |pi: PaymentIntent| {
            let payment = self.payment(call, &pi);
            let state =
                if payment.status == PspStatus::Captured { OperationState::Succeeded } else { OperationState::Failed };
            let facts = payment.facts.iter().filter(|f| f.kind == EventKind::Captured).cloned().collect();
            Answer::Ok(PspModification {
                state,
                psp_reference: payment.psp_charge_id.clone(),
                amount: payment.captured,
                failure: (state == OperationState::Failed)
                    .then(|| ("not_captured".into(), Some(format!("the PaymentIntent is {}", pi.status)))),
                payment: Some(payment),
                facts,
            })
        })
    }

    pub async fn refund(&self, call: &Call<'_>, amount: i64) -> Answer<PspModification> {
        let Some(intent) = call.payment.psp_payment_id.clone() else {
            return refused_locally("the payment has no PaymentIntent to refund".into());
        };
        let wire = match wire_amount(amount, &call.payment.currency) {
            Ok(a) => a,
            Err(e) => return refused_locally(e),
        };
        let form = vec![
            ("payment_intent".into(), intent),
            ("amount".into(), wire.to_string()),
            ("metadata[tally_payment]".into(), crate::model::public_id(call.payment.id)),
            ("metadata[tally_operation]".into(), call.operation.to_string()),
        ];
        let reply = self.post(call, "/v1/refunds", form).await;
        self.answered(call, reply, |r: Refund| self.refunded(call, &r))
    }

    pub async fn cancel(&self, call: &Call<'_>) -> Answer<PspModification> {
        let Some(intent) = call.payment.psp_payment_id.clone() else {
            return refused_locally("the payment has no PaymentIntent to cancel".into());
        };
        let reply = self.post(call, &format!("/v1/payment_intents/{intent}/cancel"), Vec::new()).await;
        self.answered(call, reply, |pi: PaymentIntent| {
            let payment = self.payment(call, &pi);
            let state =
                if payment.status == PspStatus::Canceled { OperationState::Succeeded } else { OperationState::Failed };
            Answer::Ok(PspModification {
                state,
                psp_reference: Some(pi.id.clone()),
                amount: call.payment.authorized_amount,
                failure: None,
                facts: payment.facts.clone(),
                payment: Some(payment),
            })
        })
    }

    /// A 2xx reply read as `W` and handed to `then`; anything else as [`Stripe::failure`] says.
    fn answered<W: serde::de::DeserializeOwned, T>(
        &self,
        call: &Call<'_>,
        reply: Reply,
        then: impl FnOnce(W) -> Answer<T>,
    ) -> Answer<T> {
        match reply {
            Reply::Answered { status, body } if (200..300).contains(&status) => match serde_json::from_slice(&body) {
                Ok(wire) => then(wire),
                Err(e) => unreadable(status, &e),
            },
            other => self.failure(call, other),
        }
    }

    /// A non-2xx reply (or none) as an answer.
    fn failure<T>(&self, call: &Call<'_>, reply: Reply) -> Answer<T> {
        match reply {
            Reply::NotSent => Answer::NotSent,
            Reply::NoAnswer { reason } => Answer::NoAnswer { reason },
            Reply::Answered { status: 409, .. } => Answer::NoAnswer {
                reason: "Stripe answered 409: a request with this idempotency key is still being processed".into(),
            },
            // Not an answer about the payment: the request was not taken (keys, permissions, rate): what an earlier
            // request of the operation did is still unknown.
            Reply::Answered { status: status @ (401 | 403 | 429), .. } => {
                Answer::NoAnswer { reason: format!("Stripe answered {status}: the request was not processed") }
            }
            Reply::Answered { status, body }
                if serde_json::from_slice::<ErrorBody>(&body).is_ok_and(|e| e.error.kind == "idempotency_error") =>
            {
                tracing::error!(status, "Stripe refused an idempotency key: a resent request differs from the first");
                Answer::NoAnswer { reason: "Stripe answered idempotency_error".into() }
            }
            Reply::Answered { status, body } => match serde_json::from_slice::<ErrorBody>(&body) {
                Ok(ErrorBody { error }) => {
                    let code = error.decline_code.clone().or(error.code.clone()).unwrap_or(error.kind.clone());
                    let payment = error.payment_intent.as_deref().map(|pi| {
                        let mut p = self.payment(call, pi);
                        // A decline names its charge on the error even where the intent's copy does not.
                        if p.facts.is_empty() && p.status == PspStatus::Failed {
                            if let Some(charge) = error.charge.as_deref() {
                                p.facts.extend(self.fact(
                                    call,
                                    EventKind::AuthorizationFailed,
                                    charge,
                                    charge,
                                    None,
                                    pi,
                                ));
                            }
                        }
                        p
                    });
                    Answer::Refused { status, code, message: error.message.unwrap_or_default(), payment }
                }
                Err(_) => Answer::Refused {
                    status,
                    code: format!("http_{status}"),
                    message: "Stripe's error body was not an error object".into(),
                    payment: None,
                },
            },
        }
    }

    /// The intent as Tally sees it, with the facts it states.
    fn payment(&self, call: &Call<'_>, pi: &PaymentIntent) -> PspPayment {
        let charge = id_of(&pi.latest_charge).or_else(|| pi.last_payment_error.as_ref().and_then(|e| e.charge.clone()));
        let iso = |v: Option<i64>| v.and_then(|v| iso_amount(v, &call.payment.currency).ok());
        let (amount, capturable, received) = (iso(pi.amount), iso(pi.amount_capturable), iso(pi.amount_received));
        let review = |why: String| PspPayment {
            status: PspStatus::NeedsReview,
            psp_payment_id: pi.id.clone(),
            psp_charge_id: charge.clone(),
            authorized: 0,
            captured: 0,
            failure: Some(("psp_status".into(), Some(why))),
            facts: Vec::new(),
        };
        let mut out = match (pi.status.as_str(), &charge) {
            ("requires_capture", Some(_)) => match capturable {
                Some(a) => PspPayment {
                    status: PspStatus::Authorized,
                    psp_payment_id: pi.id.clone(),
                    psp_charge_id: charge.clone(),
                    authorized: a,
                    captured: 0,
                    failure: None,
                    facts: Vec::new(),
                },
                None => return review("requires_capture without amount_capturable".into()),
            },
            ("succeeded", Some(_)) => match (amount, received) {
                (Some(a), Some(r)) => PspPayment {
                    status: PspStatus::Captured,
                    psp_payment_id: pi.id.clone(),
                    psp_charge_id: charge.clone(),
                    authorized: a,
                    captured: r,
                    failure: None,
                    facts: Vec::new(),
                },
                _ => return review("succeeded without amount and amount_received".into()),
            },
            ("requires_payment_method", _) => PspPayment {
                status: PspStatus::Failed,
                psp_payment_id: pi.id.clone(),
                psp_charge_id: charge.clone(),
                authorized: 0,
                captured: 0,
                failure: Some(match &pi.last_payment_error {
                    Some(e) => (e.decline_code.clone().or(e.code.clone()).unwrap_or(e.kind.clone()), e.message.clone()),
                    None => ("requires_payment_method".into(), None),
                }),
                facts: Vec::new(),
            },
            ("canceled", _) => PspPayment {
                status: PspStatus::Canceled,
                psp_payment_id: pi.id.clone(),
                psp_charge_id: charge.clone(),
                authorized: 0,
                captured: 0,
                failure: None,
                facts: Vec::new(),
            },
            ("processing", _) => PspPayment {
                status: PspStatus::Processing,
                psp_payment_id: pi.id.clone(),
                psp_charge_id: charge.clone(),
                authorized: 0,
                captured: 0,
                failure: None,
                facts: Vec::new(),
            },
            (other, _) => return review(format!("Stripe status {other:?}")),
        };
        if let Some(ch) = charge.as_deref() {
            let kinds: &[EventKind] = match out.status {
                PspStatus::Authorized => &[EventKind::Authorized],
                PspStatus::Captured => &[EventKind::Authorized, EventKind::Captured],
                PspStatus::Failed => &[EventKind::AuthorizationFailed],
                PspStatus::Canceled => &[EventKind::Canceled],
                _ => &[],
            };
            for kind in kinds {
                out.facts.extend(self.fact(call, *kind, ch, ch, None, pi));
            }
        }
        out
    }

    /// A fact about the charge `charge`, keyed as the webhook mapping keys it (`tally_psp::stripe`), with the
    /// amount it would read: authorized = `amount_capturable` (or `amount` once captured), captured =
    /// `amount_received`, failed and canceled = `amount`.
    fn fact(
        &self,
        call: &Call<'_>,
        kind: EventKind,
        charge: &str,
        reference: &str,
        original: Option<&str>,
        pi: &PaymentIntent,
    ) -> Option<PaymentEvent> {
        let minor = match (kind, pi.status.as_str()) {
            (EventKind::Authorized, "requires_capture") => pi.amount_capturable?,
            (EventKind::Captured, _) => pi.amount_received?,
            _ => pi.amount?,
        };
        // No currency on the answer: no fact from it (the webhook states it), never the request's currency.
        make_fact(call, kind, charge, reference, original, minor, pi.currency.as_deref()?)
    }

    fn refunded(&self, call: &Call<'_>, r: &Refund) -> Answer<PspModification> {
        let charge = id_of(&r.charge).or_else(|| call.payment.psp_charge_id.clone());
        let state = match r.status.as_deref() {
            Some("succeeded" | "pending") => OperationState::Succeeded,
            Some("failed" | "canceled") => OperationState::Failed,
            _ => OperationState::Received,
        };
        let mut facts = Vec::new();
        if let Some(ch) = charge.as_deref() {
            facts.extend(make_fact(call, EventKind::Refunded, ch, &r.id, Some(ch), r.amount, &r.currency));
            if state == OperationState::Failed {
                facts.extend(make_fact(call, EventKind::RefundFailed, ch, &r.id, Some(ch), r.amount, &r.currency));
            }
        }
        let Ok(amount) = iso_amount(r.amount, &r.currency) else {
            return Answer::NoAnswer { reason: format!("refund {} in an unknown currency {:?}", r.id, r.currency) };
        };
        Answer::Ok(PspModification {
            state,
            psp_reference: Some(r.id.clone()),
            amount,
            payment: None,
            facts,
            failure: (state == OperationState::Failed).then(|| {
                ("refund_failed".into(), Some(format!("the refund is {}", r.status.as_deref().unwrap_or("?"))))
            }),
        })
    }
}

/// A fact about the charge as the Stripe webhook mapping states it: payment `stripe:<charge>`, the merchant the
/// webhook names (the connected account or the platform).
fn make_fact(
    call: &Call<'_>,
    kind: EventKind,
    charge: &str,
    reference: &str,
    original: Option<&str>,
    wire_minor: i64,
    currency: &str,
) -> Option<PaymentEvent> {
    let names = FactNames { payment: charge, reference, original };
    api_fact(call, Psp::Stripe, kind, names, (wire_minor, currency))
}

fn wire_amount(minor: i64, currency: &str) -> Result<i64, String> {
    super::wire_amount(Psp::Stripe, minor, currency)
}

fn iso_amount(wire: i64, currency: &str) -> Result<i64, String> {
    super::iso_amount(Psp::Stripe, wire, currency)
}

fn refused_locally<T>(message: String) -> Answer<T> {
    Answer::Refused { status: 0, code: "not_sendable".into(), message, payment: None }
}

fn unreadable<T>(status: u16, e: &serde_json::Error) -> Answer<T> {
    // A 2xx whose body Tally cannot read: the PSP acted, what it did is unknown — never a failure.
    Answer::NoAnswer { reason: format!("HTTP {status} with an unreadable body: {e}") }
}
