//! A fake Stripe on 127.0.0.1: the PaymentIntents subset Tally's connector speaks (create with confirm, retrieve,
//! capture, cancel; refunds), form-encoded like Stripe's API, keeping state, **honouring idempotency keys** (a key
//! answers once and replays its answer, even to a request arriving while the first is still being answered; the same
//! key with other parameters is an `idempotency_error`), counting charges per key and per Tally payment — so that a
//! test can prove that no payment was charged twice — with faults, and sending signed webhooks for what it did to
//! `tally ingest`.
//!
//! Payment methods as Stripe's test tokens: `pm_card_chargeDeclined` declines (402 `card_declined`), anything else
//! authorizes. Faults (`POST /__sim/faults`, JSON [`Faults`]): latency, a 503 before anything happens, a charge that
//! is made and then never answered in time (the ambiguous timeout), an outage.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tally_domain::Secret;

/// Faults to inject, as `POST /__sim/faults` takes them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Every answer waits this long.
    pub latency_ms: u64,
    /// While set, every API request gets a 503 before anything happens (nothing charged, nothing stored).
    pub outage: bool,
    /// The next this many creates charge, then every answer for their key waits `hang_ms` (longer than the
    /// client's timeout) for `hang_window_ms`: the PSP acted and the caller does not know.
    pub hang_after_charge: u32,
    pub hang_ms: u64,
    pub hang_window_ms: u64,
    /// Webhooks wait this much longer (beyond [`Webhooks::delay_ms`]): a test orders the API's facts before them.
    pub webhook_delay_ms: u64,
}

/// Where to send webhooks: ingest's Stripe endpoint and its signing secret.
#[derive(Debug, Clone)]
pub struct Webhooks {
    pub url: String,
    pub secret: Secret<String>,
    /// How long after the API answer the webhook is sent.
    pub delay_ms: u64,
}

struct State_ {
    /// Makes this simulator's ids its own, as Stripe's are unique: a fact key derives from them, and the edge
    /// remembers fact keys for days (a second simulator must not make the same charge ids).
    tag: String,
    /// By idempotency key: the request's fingerprint and the answer.
    answers: HashMap<String, (String, u16, Value)>,
    charges: HashMap<String, u32>,
    /// Charges per Tally payment (`metadata[tally_payment]`): two keys for one payment would show here.
    charged_payments: HashMap<String, u32>,
    refunded: HashMap<String, i64>,
    intents: HashMap<String, Value>,
    hanging: HashMap<String, Instant>,
    next: u64,
    requests: u64,
    faults: Faults,
    webhooks_sent: u64,
}

impl Default for State_ {
    fn default() -> Self {
        State_ {
            tag: unique_tag(),
            answers: HashMap::new(),
            charges: HashMap::new(),
            charged_payments: HashMap::new(),
            refunded: HashMap::new(),
            intents: HashMap::new(),
            hanging: HashMap::new(),
            next: 0,
            requests: 0,
            faults: Faults::default(),
            webhooks_sent: 0,
        }
    }
}

/// Twelve base-36 characters from the clock and the process: distinct for every simulator started.
pub(crate) fn unique_tag() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STARTED: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut n = nanos
        ^ (u64::from(std::process::id()) << 40)
        ^ STARTED.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut out = String::with_capacity(12);
    for _ in 0..12 {
        out.push(char::from_digit((n % 36) as u32, 36).expect("a base-36 digit"));
        n /= 36;
    }
    out
}

/// The simulator's shared state.
#[derive(Clone, Default)]
pub struct Sim {
    state: Arc<Mutex<State_>>,
    webhooks: Option<Webhooks>,
}

/// What the simulator did, for tests and `GET /__sim/state`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Books {
    /// Charges per idempotency key: a value above 1 would be a double charge.
    pub charges: HashMap<String, u32>,
    /// Charges per Tally payment: a value above 1 is a double charge under two keys.
    pub charged_payments: HashMap<String, u32>,
    pub requests: u64,
    pub intents: usize,
    pub webhooks_sent: u64,
}

impl Sim {
    pub fn new(webhooks: Option<Webhooks>) -> Self {
        Sim { state: Arc::default(), webhooks }
    }

    pub fn books(&self) -> Books {
        let s = self.state.lock().expect("sim state");
        Books {
            charges: s.charges.clone(),
            charged_payments: s.charged_payments.clone(),
            requests: s.requests,
            intents: s.intents.len(),
            webhooks_sent: s.webhooks_sent,
        }
    }

    pub fn set_faults(&self, faults: Faults) {
        self.state.lock().expect("sim state").faults = faults;
    }

    /// The intent `id` as Stripe would return it.
    pub fn intent(&self, id: &str) -> Option<Value> {
        self.state.lock().expect("sim state").intents.get(id).cloned()
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/payment_intents", post(create))
            .route("/v1/payment_intents/{id}", get(retrieve))
            .route("/v1/payment_intents/{id}/capture", post(capture))
            .route("/v1/payment_intents/{id}/cancel", post(cancel))
            .route("/v1/refunds", post(refund))
            .route("/__sim/faults", post(faults))
            .route("/__sim/state", get(|State(sim): State<Sim>| async move { Json(sim.books()) }))
            .with_state(self.clone())
    }

    /// Serves on `listener` until the task is dropped.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    /// Answers a request under its idempotency key: the stored answer if there is one (the same parameters), an
    /// error if the parameters differ, else `make`'s answer, stored.
    async fn answer(
        &self,
        headers: &HeaderMap,
        fingerprint: String,
        make: impl FnOnce(&mut State_) -> (u16, Value, Vec<(String, Value)>),
    ) -> Response {
        let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (status, body, delay, events) = {
            let mut s = self.state.lock().expect("sim state");
            s.requests += 1;
            if s.faults.outage {
                return error(503, "api_error", "simulated outage", None);
            }
            let latency = s.faults.latency_ms;
            let stored = key.as_ref().and_then(|k| s.answers.get(k).cloned());
            match (&key, stored) {
                (Some(_), Some((fp, _, _))) if fp != fingerprint => return error(
                    400,
                    "idempotency_error",
                    "Keys for idempotent requests can only be used with the same parameters they were first used with.",
                    None,
                ),
                (Some(k), Some((_, status, body))) => {
                    let hang = s.hanging.get(k).is_some_and(|until| Instant::now() < *until);
                    let wait = if hang { s.faults.hang_ms } else { latency };
                    (status, body, wait, Vec::new())
                }
                _ => {
                    let (status, body, events) = make(&mut s);
                    let mut wait = latency;
                    if let Some(k) = &key {
                        s.answers.insert(k.clone(), (fingerprint, status, body.clone()));
                        let charged = body["object"] == "payment_intent" && status == 200;
                        if charged && s.faults.hang_after_charge > 0 {
                            s.faults.hang_after_charge -= 1;
                            let window = Duration::from_millis(s.faults.hang_window_ms);
                            s.hanging.insert(k.clone(), Instant::now() + window);
                            wait = s.faults.hang_ms;
                        }
                    }
                    (status, body, wait, events)
                }
            }
        };
        if !events.is_empty() {
            self.send_webhooks(events, headers);
        }
        tokio::time::sleep(Duration::from_millis(delay)).await;
        (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), Json(body)).into_response()
    }

    /// Sends each event as Stripe does: POST with `Stripe-Signature: t=…,v1=…` over the exact bytes.
    fn send_webhooks(&self, events: Vec<(String, Value)>, headers: &HeaderMap) {
        let Some(hooks) = self.webhooks.clone() else { return };
        let account = headers.get("stripe-account").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let sim = self.clone();
        let extra = self.state.lock().expect("sim state").faults.webhook_delay_ms;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(hooks.delay_ms + extra)).await;
            let client = reqwest::Client::new();
            for (event_type, object) in events {
                let (id, created) = {
                    let mut s = sim.state.lock().expect("sim state");
                    s.next += 1;
                    (format!("evt_{}{}", s.tag, s.next), unix_now())
                };
                let mut event = json!({"id": id, "object": "event", "type": event_type, "api_version": "2025-03-31.basil",
                    "created": created, "livemode": false, "pending_webhooks": 1, "data": {"object": object}});
                if let Some(a) = &account {
                    event["account"] = json!(a);
                }
                let body = serde_json::to_vec(&event).expect("an event serializes");
                let signature = tally_psp::stripe::sign(&body, &hooks.secret, created);
                // Stripe retries a failed delivery for days; the simulator for about a minute, backing off.
                for attempt in 0..12u32 {
                    let sent = client
                        .post(&hooks.url)
                        .header("Stripe-Signature", &signature)
                        .header("Content-Type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    if sent.is_ok_and(|r| r.status().is_success()) {
                        sim.state.lock().expect("sim state").webhooks_sent += 1;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis((200u64 << attempt.min(5)).min(6_000))).await;
                }
            }
        });
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn error(status: u16, kind: &str, message: &str, extra: Option<Value>) -> Response {
    let mut e = json!({"type": kind, "message": message});
    if let Some(Value::Object(extra)) = extra {
        e.as_object_mut().expect("an object").extend(extra);
    }
    (StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST), Json(json!({"error": e}))).into_response()
}

fn fingerprint(path: &str, form: &HashMap<String, String>) -> String {
    let mut pairs: Vec<_> = form.iter().collect();
    pairs.sort();
    format!("{path}?{pairs:?}")
}

fn amount(form: &HashMap<String, String>, field: &str) -> Option<i64> {
    form.get(field).and_then(|v| v.parse().ok()).filter(|v: &i64| *v > 0)
}

async fn create(State(sim): State<Sim>, headers: HeaderMap, Form(f): Form<HashMap<String, String>>) -> Response {
    let (Some(amount), Some(currency)) = (amount(&f, "amount"), f.get("currency").cloned()) else {
        return error(400, "invalid_request_error", "Missing required param: amount or currency.", None);
    };
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let fp = fingerprint("/v1/payment_intents", &f);
    sim.answer(&headers, fp, move |s| {
        s.next += 1;
        let (pi, ch) = (format!("pi_{}{}", s.tag, s.next), format!("ch_{}{}", s.tag, s.next));
        *s.charges.entry(key).or_default() += 1;
        if let Some(p) = f.get("metadata[tally_payment]") {
            *s.charged_payments.entry(p.clone()).or_default() += 1;
        }
        let metadata: serde_json::Map<String, Value> = f
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("metadata[")?.strip_suffix(']')?.to_owned(), json!(v))))
            .collect();
        if f.get("payment_method").map(String::as_str) == Some("pm_card_chargeDeclined") {
            let intent = json!({"id": pi, "object": "payment_intent", "status": "requires_payment_method",
                "amount": amount, "amount_capturable": 0, "amount_received": 0, "currency": currency,
                "capture_method": f.get("capture_method"), "latest_charge": ch, "metadata": metadata,
                "last_payment_error": {"type": "card_error", "code": "card_declined", "decline_code": "generic_decline", "charge": ch}});
            s.intents.insert(pi.clone(), intent.clone());
            let body = json!({"error": {"type": "card_error", "code": "card_declined", "decline_code": "generic_decline",
                "message": "Your card was declined.", "charge": ch, "payment_intent": intent.clone()}});
            return (402, body, vec![("payment_intent.payment_failed".into(), intent)]);
        }
        let manual = f.get("capture_method").map(String::as_str) == Some("manual");
        let intent = json!({"id": pi, "object": "payment_intent", "amount": amount, "currency": currency,
            "capture_method": if manual {"manual"} else {"automatic"},
            "status": if manual {"requires_capture"} else {"succeeded"}, "latest_charge": ch,
            "amount_capturable": if manual {amount} else {0}, "amount_received": if manual {0} else {amount},
            "metadata": metadata, "livemode": false, "created": unix_now()});
        s.intents.insert(pi, intent.clone());
        let event = if manual { "payment_intent.amount_capturable_updated" } else { "payment_intent.succeeded" };
        (200, intent.clone(), vec![(event.into(), intent)])
    })
    .await
}

async fn retrieve(State(sim): State<Sim>, Path(id): Path<String>) -> Response {
    match sim.intent(&id) {
        Some(intent) => Json(intent).into_response(),
        None => error(404, "invalid_request_error", &format!("No such payment_intent: '{id}'"), None),
    }
}

async fn capture(
    State(sim): State<Sim>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let fp = fingerprint(&format!("/v1/payment_intents/{id}/capture"), &f);
    sim.answer(&headers, fp, move |s| {
        let Some(intent) = s.intents.get_mut(&id) else {
            return (404, json!({"error": {"type": "invalid_request_error", "message": "No such payment_intent"}}), vec![]);
        };
        if intent["status"] != "requires_capture" {
            let message = format!("This PaymentIntent could not be captured because it has a status of {}.", intent["status"]);
            let body = json!({"error": {"type": "invalid_request_error", "code": "payment_intent_unexpected_state", "message": message}});
            return (400, body, vec![]);
        }
        let capturable = intent["amount_capturable"].as_i64().unwrap_or(0);
        let amount = amount(&f, "amount_to_capture").unwrap_or(capturable);
        if amount > capturable {
            let body = json!({"error": {"type": "invalid_request_error", "code": "amount_too_large", "message": "The amount to capture exceeds the capturable amount."}});
            return (400, body, vec![]);
        }
        intent["status"] = json!("succeeded");
        intent["amount_received"] = json!(amount);
        intent["amount_capturable"] = json!(0);
        (200, intent.clone(), vec![("payment_intent.succeeded".into(), intent.clone())])
    })
    .await
}

async fn cancel(
    State(sim): State<Sim>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let fp = fingerprint(&format!("/v1/payment_intents/{id}/cancel"), &f);
    sim.answer(&headers, fp, move |s| {
        let Some(intent) = s.intents.get_mut(&id) else {
            return (404, json!({"error": {"type": "invalid_request_error", "message": "No such payment_intent"}}), vec![]);
        };
        if intent["status"] == "succeeded" || intent["status"] == "canceled" {
            let body = json!({"error": {"type": "invalid_request_error", "code": "payment_intent_unexpected_state",
                "message": format!("You cannot cancel this PaymentIntent because it has a status of {}.", intent["status"])}});
            return (400, body, vec![]);
        }
        intent["status"] = json!("canceled");
        intent["amount_capturable"] = json!(0);
        (200, intent.clone(), vec![("payment_intent.canceled".into(), intent.clone())])
    })
    .await
}

async fn refund(State(sim): State<Sim>, headers: HeaderMap, Form(f): Form<HashMap<String, String>>) -> Response {
    let fp = fingerprint("/v1/refunds", &f);
    sim.answer(&headers, fp, move |s| {
        let Some(intent) = f.get("payment_intent").and_then(|id| s.intents.get(id)).cloned() else {
            return (404, json!({"error": {"type": "invalid_request_error", "message": "No such payment_intent"}}), vec![]);
        };
        let received = intent["amount_received"].as_i64().unwrap_or(0);
        let pi_id = intent["id"].as_str().unwrap_or_default().to_owned();
        let refunded = s.refunded.get(&pi_id).copied().unwrap_or(0);
        let amount = amount(&f, "amount").unwrap_or(received - refunded);
        if amount <= 0 || refunded + amount > received {
            let body = json!({"error": {"type": "invalid_request_error", "code": "charge_already_refunded",
                "message": "The refund exceeds what is left to refund."}});
            return (400, body, vec![]);
        }
        s.refunded.insert(pi_id, refunded + amount);
        let (charge, currency, pi) = (intent["latest_charge"].clone(), intent["currency"].clone(), intent["id"].clone());
        s.next += 1;
        let refund = json!({"id": format!("re_{}{}", s.tag, s.next), "object": "refund", "amount": amount, "currency": currency,
            "charge": charge, "payment_intent": pi, "status": "succeeded", "created": unix_now(), "reason": null});
        (200, refund.clone(), vec![("refund.created".into(), refund)])
    })
    .await
}

async fn faults(State(sim): State<Sim>, Json(f): Json<Faults>) -> Response {
    sim.set_faults(f);
    StatusCode::NO_CONTENT.into_response()
}
