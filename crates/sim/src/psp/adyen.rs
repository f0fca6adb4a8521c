//! A fake Adyen Checkout (v71) on 127.0.0.1: `/payments` and the modifications of a payment (`captures`, `refunds`,
//! `cancels`), JSON as Adyen's spec states it (`CheckoutService-v71.json`), `X-API-Key` required, the optional
//! `Idempotency-Key` honoured (a key answers once and replays its answer), authorisations counted per key and per
//! Tally payment (`reference`). Modifications are answered `received`, as Adyen does; their outcome would come by
//! webhook (not sent yet: the Adyen notifications' HMAC signing is the next step).
//!
//! `storedPaymentMethodId` `declined` is refused (`Refused`, refusalReasonCode 2); anything else is authorised.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::stripe::Faults;

#[derive(Default)]
struct State_ {
    /// This simulator's pspReferences start here (16 digits, distinct per simulator: a fact key derives from them).
    base: u64,
    answers: HashMap<String, (Value, u16, Value)>,
    authorisations: HashMap<String, u32>,
    authorised_payments: HashMap<String, u32>,
    payments: HashMap<String, Value>,
    next: u64,
    requests: u64,
    faults: Faults,
}

#[derive(Clone)]
pub struct Sim {
    state: Arc<Mutex<State_>>,
    api_key: String,
}

/// What the simulator did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Books {
    /// Authorisations per idempotency key.
    pub authorisations: HashMap<String, u32>,
    /// Authorisations per merchant reference (Tally's payment id): above 1 is a double charge.
    pub authorised_payments: HashMap<String, u32>,
    pub requests: u64,
}

impl Sim {
    /// A simulator that accepts `api_key` in `X-API-Key`.
    pub fn new(api_key: &str) -> Self {
        let tag = super::stripe::unique_tag();
        let base = u64::from_str_radix(&tag, 36).unwrap_or(0) % 9_000_000_000_000_000 + 1_000_000_000_000_000;
        Sim { state: Arc::new(Mutex::new(State_ { base, ..State_::default() })), api_key: api_key.to_owned() }
    }

    pub fn books(&self) -> Books {
        let s = self.state.lock().expect("sim state");
        Books {
            authorisations: s.authorisations.clone(),
            authorised_payments: s.authorised_payments.clone(),
            requests: s.requests,
        }
    }

    pub fn set_faults(&self, faults: Faults) {
        self.state.lock().expect("sim state").faults = faults;
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/payments", post(payments))
            .route("/payments/{psp}/{what}", post(modification))
            .with_state(self.clone())
    }

    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    async fn answer(
        &self,
        headers: &HeaderMap,
        request: &Value,
        make: impl FnOnce(&mut State_) -> (u16, Value),
    ) -> Response {
        if headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(self.api_key.as_str()) {
            return service_error(401, "000", "HTTP Status Response - Unauthorized", "security");
        }
        let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (status, body, latency) = {
            let mut s = self.state.lock().expect("sim state");
            s.requests += 1;
            if s.faults.outage {
                return service_error(503, "901", "Service unavailable (simulated outage)", "internal");
            }
            let latency = s.faults.latency_ms;
            match key.as_ref().and_then(|k| s.answers.get(k).cloned()) {
                Some((first, _, _)) if first != *request => {
                    return service_error(422, "704", "request already processed or in progress", "validation")
                }
                Some((_, status, body)) => (status, body, latency),
                None => {
                    let (status, body) = make(&mut s);
                    if let Some(k) = key {
                        s.answers.insert(k, (request.clone(), status, body.clone()));
                    }
                    (status, body, latency)
                }
            }
        };
        tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
        (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), Json(body)).into_response()
    }
}

fn service_error(status: u16, code: &str, message: &str, kind: &str) -> Response {
    let body = json!({"status": status, "errorCode": code, "message": message, "errorType": kind});
    (StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST), Json(body)).into_response()
}

fn psp_reference(s: &State_) -> String {
    format!("{:016}", (s.base + s.next) % 10_000_000_000_000_000)
}

async fn payments(State(sim): State<Sim>, headers: HeaderMap, Json(req): Json<Value>) -> Response {
    for field in ["merchantAccount", "reference", "amount", "paymentMethod", "returnUrl"] {
        if req.get(field).is_none() {
            return service_error(422, "14_0", &format!("Required field '{field}' is missing"), "validation");
        }
    }
    if req["paymentMethod"].get("storedPaymentMethodId").is_some() && req.get("shopperReference").is_none() {
        return service_error(422, "14_1", "shopperReference is required with a stored payment method", "validation");
    }
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let request = req.clone();
    sim.answer(&headers, &request, move |s| {
        s.next += 1;
        let reference = psp_reference(s);
        *s.authorisations.entry(key).or_default() += 1;
        *s.authorised_payments.entry(req["reference"].as_str().unwrap_or("").to_owned()).or_default() += 1;
        let refused = req["paymentMethod"]["storedPaymentMethodId"] == "declined";
        let body = if refused {
            json!({"pspReference": reference, "resultCode": "Refused", "refusalReason": "Refused",
                "refusalReasonCode": "2", "merchantReference": req["reference"], "amount": req["amount"]})
        } else {
            json!({"pspReference": reference, "resultCode": "Authorised", "merchantReference": req["reference"],
                "amount": req["amount"]})
        };
        s.payments.insert(reference, req.clone());
        (200, body)
    })
    .await
}

async fn modification(
    State(sim): State<Sim>,
    Path((payment, what)): Path<(String, String)>,
    headers: HeaderMap,
    Json(req): Json<Value>,
) -> Response {
    if !matches!(what.as_str(), "captures" | "refunds" | "cancels") {
        return service_error(404, "000", "no such operation", "validation");
    }
    if req.get("merchantAccount").is_none() || (what != "cancels" && req.get("amount").is_none()) {
        return service_error(422, "14_0", "Required field is missing", "validation");
    }
    let request = req.clone();
    sim.answer(&headers, &request, move |s| {
        if !s.payments.contains_key(&payment) {
            return (422, json!({"status": 422, "errorCode": "167", "message": "Original pspReference required for this operation", "errorType": "validation"}));
        }
        s.next += 1;
        let mut body = json!({"status": "received", "pspReference": psp_reference(s), "paymentPspReference": payment,
            "merchantAccount": req["merchantAccount"], "reference": req.get("reference")});
        if let Some(amount) = req.get("amount") {
            body["amount"] = amount.clone();
        }
        (201, body)
    })
    .await
}
