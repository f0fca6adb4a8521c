//! Adyen Checkout v71. Wire formats from Adyen's published spec (`Adyen/adyen-openapi`,
//! `json/CheckoutService-v71.json`, read at commit a0f79b26; notes in docs/adr/0018): JSON bodies, `X-API-Key`,
//! an optional `Idempotency-Key` header of at most 64 characters on every operation used here.
//!
//! | call | request | answer |
//! |---|---|---|
//! | authorize | `POST /payments` `merchantAccount`, `reference`, `amount{currency,value}`, `paymentMethod{type: scheme, storedPaymentMethodId}`, `returnUrl` (required by the spec), `shopperInteraction: ContAuth`, `recurringProcessingModel: UnscheduledCardOnFile`, `additionalData.manualCapture: "true"` for manual capture | `PaymentResponse` (`resultCode`, `pspReference`) |
//! | capture | `POST /payments/{pspReference}/captures` `merchantAccount`, `amount`, `reference` | 201, `status: received` |
//! | refund | `POST /payments/{pspReference}/refunds` the same | 201, `status: received` |
//! | cancel | `POST /payments/{pspReference}/cancels` `merchantAccount`, `reference` | 201, `status: received` |
//! | resolve | the same request again with the same `Idempotency-Key`, or the webhook | |
//!
//! Captures, refunds and cancels are only `received`: Adyen confirms them by webhook (CAPTURE, REFUND,
//! CANCELLATION), which is where the ledger's facts of them come from; the API states none itself.
//!
//! `resultCode` → Tally:
//!
//! | Adyen | Tally | facts (keyed as the webhook mapping keys them: by pspReference) |
//! |---|---|---|
//! | `Authorised` | authorized (an automatic capture is Adyen's to do; its CAPTURE webhook books it) | authorized |
//! | `Refused` | failed (`refusalReason`, `refusalReasonCode`) | authorization_failed |
//! | `Cancelled` | canceled | — |
//! | `Pending`, `Received` | pending: the outcome comes by webhook | — |
//! | `RedirectShopper`, `IdentifyShopper`, `ChallengeShopper`, `PresentToShopper`, `PartiallyAuthorised`, `AuthenticationFinished`, `AuthenticationNotRequired`, `Success`, `Error`, anything else | requires_review | — |

use serde::Deserialize;
use serde_json::json;
use tally_domain::{EventKind, PaymentEvent, Psp};

use super::transport::{Body, Reply, Transport};
use super::{api_fact, psp_idempotency_key, Answer, Call, FactNames, PspModification, PspPayment, PspStatus};
use crate::model::{CaptureMethod, OperationState};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PaymentResponse {
    psp_reference: Option<String>,
    result_code: Option<String>,
    refusal_reason: Option<String>,
    refusal_reason_code: Option<String>,
    amount: Option<WireAmount>,
}

#[derive(Debug, Deserialize)]
struct WireAmount {
    currency: String,
    value: i64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ModificationResponse {
    psp_reference: String,
    status: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceError {
    error_code: Option<String>,
    message: Option<String>,
    error_type: Option<String>,
}

pub struct Adyen {
    pub transport: Transport,
    /// `returnUrl`, required by the spec even for a stored card that never redirects.
    pub return_url: String,
}

impl Adyen {
    async fn post(&self, call: &Call<'_>, path: &str, body: serde_json::Value) -> Reply {
        let key = psp_idempotency_key(call.operation);
        self.transport.send(reqwest::Method::POST, path, &Body::Json(body), Some(&key), &[]).await
    }

    fn account<T>(call: &Call<'_>) -> Result<String, Box<Answer<T>>> {
        call.merchant.adyen_merchant_account.clone().ok_or_else(|| {
            Box::new(Answer::Refused {
                status: 0,
                code: "not_sendable".into(),
                message: format!("merchant {} has no Adyen merchant account", call.merchant.merchant_id),
                payment: None,
            })
        })
    }

    /// `customer`: the shopper (`shopperReference`), which Adyen requires with a stored payment method.
    pub async fn authorize(&self, call: &Call<'_>, token: &str, customer: Option<&str>) -> Answer<PspPayment> {
        let p = call.payment;
        let account = match Self::account(call) {
            Ok(a) => a,
            Err(e) => return *e,
        };
        let Some(customer) = customer else {
            return Answer::Refused {
                status: 0,
                code: "not_sendable".into(),
                message: "Adyen needs the shopper (customer) of a stored payment method".into(),
                payment: None,
            };
        };
        let value = match wire_amount(p.amount, &p.currency) {
            Ok(v) => v,
            Err(message) => return Answer::Refused { status: 0, code: "not_sendable".into(), message, payment: None },
        };
        let mut body = json!({
            "merchantAccount": account,
            "reference": crate::model::public_id(p.id),
            "amount": {"currency": p.currency, "value": value},
            "paymentMethod": {"type": "scheme", "storedPaymentMethodId": token},
            "returnUrl": self.return_url,
            "shopperReference": customer,
            "shopperInteraction": "ContAuth",
            "recurringProcessingModel": "UnscheduledCardOnFile",
            "metadata": {"tally_operation": call.operation.to_string()},
        });
        if p.capture_method == CaptureMethod::Manual {
            body["additionalData"] = json!({"manualCapture": "true"});
        }
        match self.post(call, "/payments", body).await {
            Reply::Answered { status, body } if (200..300).contains(&status) => {
                match serde_json::from_slice::<PaymentResponse>(&body) {
                    Ok(r) => Answer::Ok(self.payment(call, &r)),
                    Err(e) => Answer::NoAnswer { reason: format!("HTTP {status} with an unreadable body: {e}") },
                }
            }
            other => failure(other),
        }
    }

    fn payment(&self, call: &Call<'_>, r: &PaymentResponse) -> PspPayment {
        let reference = r.psp_reference.clone().unwrap_or_default();
        let code = r.result_code.as_deref().unwrap_or("");
        // The amount the answer states, in ISO minor units and the payment's currency; never the request's amount
        // in its place (the webhook states what Adyen read, and the fact must say the same).
        let stated = r
            .amount
            .as_ref()
            .filter(|a| a.currency == call.payment.currency)
            .and_then(|a| iso_amount(a.value, &a.currency).ok());
        let mut status = match code {
            "Authorised" if !reference.is_empty() => PspStatus::Authorized,
            "Refused" if !reference.is_empty() => PspStatus::Failed,
            "Cancelled" => PspStatus::Canceled,
            "Pending" | "Received" if !reference.is_empty() => PspStatus::Processing,
            _ => PspStatus::NeedsReview,
        };
        let mut why = format!("Adyen resultCode {code:?}");
        if status == PspStatus::Authorized && stated.is_none() {
            status = PspStatus::NeedsReview;
            why = "Authorised without an amount in the payment's currency".into();
        }
        let authorized = if status == PspStatus::Authorized { stated.unwrap_or(0) } else { 0 };
        // Adyen captures an automatic-capture payment itself after authorising it; its CAPTURE webhook books it.
        let automatic = call.payment.capture_method == CaptureMethod::Automatic;
        if status == PspStatus::Authorized && automatic {
            status = PspStatus::Captured;
        }
        let mut facts = Vec::new();
        let kind = match status {
            PspStatus::Authorized | PspStatus::Captured => Some(EventKind::Authorized),
            PspStatus::Failed => Some(EventKind::AuthorizationFailed),
            _ => None,
        };
        if let (Some(kind), Some(amount)) = (kind, stated) {
            facts.extend(make_fact(call, kind, &reference, amount));
        }
        PspPayment {
            status,
            psp_charge_id: (!reference.is_empty()).then(|| reference.clone()),
            psp_payment_id: reference,
            authorized,
            captured: if status == PspStatus::Captured { authorized } else { 0 },
            failure: match status {
                PspStatus::Failed => {
                    Some((r.refusal_reason_code.clone().unwrap_or_else(|| "refused".into()), r.refusal_reason.clone()))
                }
                PspStatus::NeedsReview => Some(("psp_status".into(), Some(why))),
                _ => None,
            },
            facts,
        }
    }

    async fn modify(&self, call: &Call<'_>, what: &str, amount: Option<i64>) -> Answer<PspModification> {
        let account = match Self::account(call) {
            Ok(a) => a,
            Err(e) => return *e,
        };
        let Some(reference) = call.payment.psp_payment_id.clone() else {
            return Answer::Refused {
                status: 0,
                code: "not_sendable".into(),
                message: "the payment has no pspReference yet".into(),
                payment: None,
            };
        };
        let mut body = json!({"merchantAccount": account, "reference": call.operation.to_string()});
        if let Some(amount) = amount {
            let value = match wire_amount(amount, &call.payment.currency) {
                Ok(v) => v,
                Err(message) => {
                    return Answer::Refused { status: 0, code: "not_sendable".into(), message, payment: None }
                }
            };
            body["amount"] = json!({"currency": call.payment.currency, "value": value});
        }
        match self.post(call, &format!("/payments/{reference}/{what}"), body).await {
            Reply::Answered { status, body } if (200..300).contains(&status) => {
                match serde_json::from_slice::<ModificationResponse>(&body) {
                    Ok(m) if m.status == "received" => Answer::Ok(PspModification {
                        state: OperationState::Received,
                        psp_reference: Some(m.psp_reference),
                        amount: amount.unwrap_or(call.payment.authorized_amount),
                        payment: None,
                        facts: Vec::new(),
                        failure: None,
                    }),
                    Ok(m) => Answer::NoAnswer { reason: format!("Adyen answered status {:?}, not received", m.status) },
                    Err(e) => Answer::NoAnswer { reason: format!("HTTP {status} with an unreadable body: {e}") },
                }
            }
            other => failure(other),
        }
    }

    pub async fn capture(&self, call: &Call<'_>, amount: i64) -> Answer<PspModification> {
        self.modify(call, "captures", Some(amount)).await
    }

    pub async fn refund(&self, call: &Call<'_>, amount: i64) -> Answer<PspModification> {
        self.modify(call, "refunds", Some(amount)).await
    }

    pub async fn cancel(&self, call: &Call<'_>) -> Answer<PspModification> {
        self.modify(call, "cancels", None).await
    }
}

fn failure<T>(reply: Reply) -> Answer<T> {
    match reply {
        Reply::NotSent => Answer::NotSent,
        Reply::NoAnswer { reason } => Answer::NoAnswer { reason },
        // Not an answer about the payment: the request was not taken (keys, permissions, rate, or 704: a request
        // with this idempotency key is still being processed).
        Reply::Answered { status: status @ (401 | 403 | 429), .. } => {
            Answer::NoAnswer { reason: format!("Adyen answered {status}: the request was not processed") }
        }
        Reply::Answered { status: 422, body }
            if serde_json::from_slice::<ServiceError>(&body).is_ok_and(|e| e.error_code.as_deref() == Some("704")) =>
        {
            Answer::NoAnswer { reason: "Adyen answered 704: the request with this key is still being processed".into() }
        }
        Reply::Answered { status, body } => {
            let e: Option<ServiceError> = serde_json::from_slice(&body).ok();
            let code = e.as_ref().and_then(|e| e.error_code.clone()).unwrap_or_else(|| format!("http_{status}"));
            let message = e
                .map(|e| format!("{} ({})", e.message.unwrap_or_default(), e.error_type.unwrap_or_default()))
                .unwrap_or_else(|| "Adyen's error body was not a ServiceError".into());
            Answer::Refused { status, code, message, payment: None }
        }
    }
}

/// A fact as the Adyen webhook mapping states it: payment `adyen:<pspReference>`, the merchant account as merchant;
/// `minor` in ISO units already.
fn make_fact(call: &Call<'_>, kind: EventKind, reference: &str, minor: i64) -> Option<PaymentEvent> {
    let wire = wire_amount(minor, &call.payment.currency).ok()?;
    let names = FactNames { payment: reference, reference, original: None };
    api_fact(call, Psp::Adyen, kind, names, (wire, &call.payment.currency))
}

fn wire_amount(minor: i64, currency: &str) -> Result<i64, String> {
    super::wire_amount(Psp::Adyen, minor, currency)
}

fn iso_amount(wire: i64, currency: &str) -> Result<i64, String> {
    super::iso_amount(Psp::Adyen, wire, currency)
}
