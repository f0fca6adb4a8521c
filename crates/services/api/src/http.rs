//! The HTTP surface (`openapi.json`). Every POST meets, in order: a body limit → the merchant's key (401) → the
//! merchant's rate limit (429 + `Retry-After`) → a PAN scan of the whole request (422, nothing stored or logged,
//! I7) → `Idempotency-Key` (400 when missing) → the body's schema (400) → the key's verdict (replay, 409, 422) →
//! the work. Errors are `{"error": {"type", "code", "message", "param"}}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use tally_domain::{Psp, Secret};
use uuid::Uuid;

use crate::idempotency::{self, Begin, Request};
use crate::merchants::{self, Merchant};
use crate::model::{parse_public_id, CaptureMethod, OperationKind, Status};
use crate::service::{not_found, resource_bytes, Api, Create, Held, Metrics, Refusal};
use crate::store::{self, StoreError};

/// The published spec, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

pub struct Http {
    pub api: Arc<Api>,
    limiter: Limiter,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    responses: Mutex<HashMap<(&'static str, u16), u64>>,
    pan_rejections: std::sync::atomic::AtomicU64,
    rate_limited: std::sync::atomic::AtomicU64,
}

pub fn router(api: Arc<Api>) -> Router {
    let max = api.config.max_body_bytes;
    let http = Arc::new(Http { api, limiter: Limiter::default(), counters: Counters::default() });
    Router::new()
        .route("/v1/payments", post(create).get(list))
        .route("/v1/payments/{id}", get(show))
        .route("/v1/payments/{id}/capture", post(capture))
        .route("/v1/payments/{id}/refunds", post(refund))
        .route("/v1/payments/{id}/cancel", post(cancel))
        .route("/openapi.json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(max))
        .with_state(http)
}

fn error(r: &Refusal) -> Response {
    let body = json!({"error": {"type": r.kind, "code": r.code, "message": r.message, "param": r.param}});
    let mut resp =
        (StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), axum::Json(body)).into_response();
    if r.status == 429 {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

fn json_bytes(status: u16, body: Vec<u8>, replayed: bool) -> Response {
    let mut resp =
        (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), [(header::CONTENT_TYPE, "application/json")], body)
            .into_response();
    if replayed {
        resp.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    resp
}

impl Http {
    fn count(&self, route: &'static str, status: u16) {
        *self.counters.responses.lock().expect("counters").entry((route, status)).or_default() += 1;
    }

    /// The caller, by `Authorization: Bearer <key>`, then its rate limit.
    async fn merchant(&self, headers: &HeaderMap) -> Result<Merchant, Refusal> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| unauthenticated("send the API key as `Authorization: Bearer tally_sk_…`"))?;
        let client = self.api.pool.get().await.map_err(StoreError::from)?;
        let merchant = merchants::authenticate(&client, presented.trim())
            .await?
            .ok_or_else(|| unauthenticated("the API key is not valid"))?;
        if let Err(wait) = self.limiter.take(&merchant.merchant_id, merchant.rate_per_second) {
            Metrics::add(&self.counters.rate_limited);
            return Err(Refusal::new(
                429,
                "rate_limit_error",
                "rate_limited",
                format!("more than {} requests per second; retry in {wait} s", merchant.rate_per_second),
            ));
        }
        Ok(merchant)
    }

    /// A card number anywhere in the request (path, query, headers, body) refuses it before anything else reads
    /// it. The response never echoes where.
    fn scan(&self, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Result<(), Refusal> {
        let in_headers = headers.iter().any(|(_, v)| tally_domain::pan::contains_pan(v.as_bytes()));
        let decoded = percent_decode(uri.path_and_query().map_or("", |p| p.as_str()));
        if tally_domain::pan::contains_pan(body)
            || tally_domain::pan::contains_pan(uri.to_string().as_bytes())
            || tally_domain::pan::contains_pan(&decoded)
            || in_headers
        {
            Metrics::add(&self.counters.pan_rejections);
            return Err(Refusal::new(
                422,
                "invalid_request_error",
                "card_number_in_request",
                "the request contains what looks like a card number; send a PSP payment-method token instead",
            ));
        }
        Ok(())
    }

    /// The steps every POST shares, then `work` with the key held.
    async fn post(
        &self,
        route: &'static str,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &Bytes,
        work: impl AsyncFnOnce(&Merchant, &Value, &Held<'_>, Begin) -> Result<crate::service::Done, Refusal>,
    ) -> Response {
        let resp = async {
            let merchant = self.merchant(headers).await?;
            self.scan(uri, headers, body)?;
            let key = headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .ok_or_else(|| {
                    Refusal::new(
                        400,
                        "invalid_request_error",
                        "idempotency_key_missing",
                        "every POST needs an Idempotency-Key header",
                    )
                })?
                .to_owned();
            if key.len() > 255 {
                return Err(Refusal::new(
                    400,
                    "invalid_request_error",
                    "idempotency_key_invalid",
                    "at most 255 characters",
                ));
            }
            let value: Value = if body.is_empty() {
                json!({})
            } else {
                serde_json::from_slice(body)
                    .map_err(|_| Refusal::new(400, "invalid_request_error", "invalid_json", "the body is not JSON"))?
            };
            // The body again as parsed: a card number hidden in JSON escapes (`\u0034…`) is one now.
            self.scan(uri, headers, &serde_json::to_vec(&value).expect("a JSON value serializes"))?;
            let path = uri.path().to_owned();
            let req = Request {
                merchant: &merchant.merchant_id,
                key: &key,
                method: method.as_str(),
                path: &path,
                body: &value,
            };
            let lease = std::time::Duration::from_secs(self.api.config.idempotency_lease_secs);
            let begin = {
                let client = self.api.pool.get().await.map_err(StoreError::from)?;
                idempotency::begin(&client, &req, lease).await?
            };
            match begin {
                Begin::Replay { status, body } => {
                    Metrics::add(&self.api.metrics.replays);
                    Ok(json_bytes(status, body, true))
                }
                Begin::InUse => Err(Refusal::new(
                    409,
                    "idempotency_error",
                    "idempotency_key_in_use",
                    "a request with this key is still being processed; retry later",
                )),
                Begin::Reused => Err(Refusal::new(
                    422,
                    "idempotency_error",
                    "idempotency_key_reused",
                    "this key was used for another request",
                )),
                Begin::New { token } | Begin::Resume { token, .. } => {
                    let held = Held { merchant: &merchant.merchant_id, key: &key, token };
                    match work(&merchant, &value, &held, begin).await {
                        Ok(done) => Ok(json_bytes(done.status, done.body, false)),
                        Err(refusal) => {
                            // Nothing was made: the key is released so that a retry runs (a key that names a
                            // payment is never released).
                            if let Ok(client) = self.api.pool.get().await {
                                let _ = idempotency::release(&client, &held).await;
                            }
                            Err(refusal)
                        }
                    }
                }
            }
        }
        .await;
        let resp = resp.unwrap_or_else(|r| error(&r));
        self.count(route, resp.status().as_u16());
        resp
    }
}

/// `%XX` and `+` decoded (a card number split by `%20` in a query is still one).
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    out
}

fn unauthenticated(message: &str) -> Refusal {
    Refusal::new(401, "authentication_error", "unauthenticated", message)
}

/// Strict body parsing: an unknown field or a wrong type is a 400 naming the field.
fn parse<T: for<'de> Deserialize<'de>>(value: &Value) -> Result<T, Refusal> {
    serde_json::from_value(value.clone()).map_err(|e| {
        Refusal::new(
            400,
            "invalid_request_error",
            "parameter_invalid",
            format!("the body does not match the schema: {e}"),
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    #[serde(deserialize_with = "minor_units")]
    amount: i64,
    currency: String,
    merchant_reference: String,
    payment_method: String,
    capture_method: CaptureMethod,
    #[serde(default)]
    psp: Option<Psp>,
    /// The merchant's token of its customer (required for Adyen: its `shopperReference`).
    #[serde(default)]
    customer: Option<String>,
}

impl<'de> Deserialize<'de> for CaptureMethod {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|_| serde::de::Error::custom(format!("capture_method {s:?}: automatic or manual")))
    }
}

fn validate(b: CreateBody) -> Result<Create, Refusal> {
    let bad =
        |code, param, message: String| Err(Refusal::new(400, "invalid_request_error", code, message).param(param));
    check_amount(b.amount)?;
    let upper = b.currency.len() == 3 && b.currency.bytes().all(|c| c.is_ascii_uppercase());
    if !upper || tally_money::Currency::from_code(&b.currency).is_err() {
        return bad("currency_invalid", "currency", "an ISO 4217 currency code in capitals, e.g. EUR".into());
    }
    let customer_ok = |c: &String| {
        (3..=256).contains(&c.len()) && c.bytes().all(|c| c.is_ascii_alphanumeric() || b"_-.:@".contains(&c))
    };
    if b.customer.as_ref().is_some_and(|c| !customer_ok(c)) {
        return bad("customer_invalid", "customer", "a customer token: 3 to 256 letters, digits or _ - . : @".into());
    }
    // Characters, as the spec's maxLength and PostgreSQL's length() count them; no control characters (PostgreSQL's
    // text cannot hold U+0000, and none belongs in an order reference).
    let chars = b.merchant_reference.chars().count();
    if !(1..=255).contains(&chars) || b.merchant_reference.chars().any(char::is_control) {
        return bad(
            "merchant_reference_invalid",
            "merchant_reference",
            "1 to 255 characters, none of them a control character".into(),
        );
    }
    let token_ok = (3..=128).contains(&b.payment_method.len())
        && b.payment_method.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
    if !token_ok {
        return bad(
            "payment_method_invalid",
            "payment_method",
            "a PSP payment-method token: 3 to 128 letters, digits, _ or -".into(),
        );
    }
    Ok(Create {
        amount: b.amount,
        currency: b.currency,
        merchant_reference: b.merchant_reference,
        payment_method: Secret::new(b.payment_method),
        customer: b.customer.map(Secret::new),
        capture_method: b.capture_method,
        psp: b.psp,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AmountBody {
    #[serde(deserialize_with = "minor_units")]
    amount: i64,
}

/// The most an amount may be (`openapi.json`'s `maximum`): 12 digits. No PSP takes more, and 13 to 19 digits would
/// look like a card number to the PAN scan.
pub const MAX_AMOUNT: i64 = 999_999_999_999;

/// An amount in minor units: a JSON integer, or a number without a fraction (JSON Schema's `integer` admits
/// `1000.0`; exact up to 2^53, far above [`MAX_AMOUNT`]). `1000.5` and anything larger are refused, never rounded.
fn minor_units<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 => Ok(f as i64),
        _ => Err(serde::de::Error::custom(format!("amount {n} is not a whole number of minor units"))),
    }
}

/// Positive and at most [`MAX_AMOUNT`].
fn check_amount(amount: i64) -> Result<i64, Refusal> {
    if amount <= 0 || amount > MAX_AMOUNT {
        return Err(Refusal::new(
            400,
            "invalid_request_error",
            "amount_invalid",
            format!("amount is in minor units, from 1 to {MAX_AMOUNT}"),
        )
        .param("amount"));
    }
    Ok(amount)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyBody {}

async fn create(State(http): State<Arc<Http>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let api = http.api.clone();
    http.post("create", &method, &uri, &headers, &body, async |merchant, value, held, begin| {
        let req = validate(parse::<CreateBody>(value)?)?;
        match begin {
            Begin::Resume { payment: Some(p), operation, .. } => api.resume(merchant, held, p, operation).await,
            _ => api.create(merchant, held, req).await,
        }
    })
    .await
}

fn payment_id(id: &str) -> Result<Uuid, Refusal> {
    parse_public_id(id).ok_or_else(not_found)
}

/// A request as received, for the POST steps.
struct Raw {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

async fn modification(http: Arc<Http>, route: &'static str, id: String, kind: OperationKind, raw: Raw) -> Response {
    let Raw { method, uri, headers, body } = raw;
    let api = http.api.clone();
    http.post(route, &method, &uri, &headers, &body, async |merchant, value, held, begin| {
        let amount = match kind {
            OperationKind::Cancel => {
                parse::<EmptyBody>(value)?;
                None
            }
            _ => Some(check_amount(parse::<AmountBody>(value)?.amount)?),
        };
        let id = payment_id(&id)?;
        match begin {
            Begin::Resume { payment: Some(p), operation, .. } if p == id => {
                api.resume(merchant, held, p, operation).await
            }
            _ => api.modify(merchant, held, id, kind, amount).await,
        }
    })
    .await
}

async fn capture(
    State(http): State<Arc<Http>>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    modification(http, "capture", id, OperationKind::Capture, Raw { method, uri, headers, body }).await
}

async fn refund(
    State(http): State<Arc<Http>>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    modification(http, "refund", id, OperationKind::Refund, Raw { method, uri, headers, body }).await
}

async fn cancel(
    State(http): State<Arc<Http>>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    modification(http, "cancel", id, OperationKind::Cancel, Raw { method, uri, headers, body }).await
}

async fn show(State(http): State<Arc<Http>>, Path(id): Path<String>, uri: Uri, headers: HeaderMap) -> Response {
    let resp = async {
        let merchant = http.merchant(&headers).await?;
        http.scan(&uri, &headers, b"")?;
        let id = payment_id(&id)?;
        let client = http.api.pool.get().await.map_err(StoreError::from)?;
        let p = store::load(&client, &merchant.merchant_id, id).await?.ok_or_else(not_found)?;
        Ok::<_, Refusal>(json_bytes(200, resource_bytes(&p), false))
    }
    .await
    .unwrap_or_else(|r| error(&r));
    http.count("show", resp.status().as_u16());
    resp
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<i64>,
    starting_after: Option<String>,
    status: Option<String>,
}

async fn list(
    State(http): State<Arc<Http>>,
    uri: Uri,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let resp = async {
        let merchant = http.merchant(&headers).await?;
        http.scan(&uri, &headers, b"")?;
        let Query(q) = query.map_err(|e| {
            Refusal::new(
                400,
                "invalid_request_error",
                "parameter_invalid",
                format!("{e} (limit, starting_after, status)"),
            )
        })?;
        let limit = q.limit.unwrap_or(20);
        if !(1..=100).contains(&limit) {
            return Err(
                Refusal::new(400, "invalid_request_error", "parameter_invalid", "limit is 1 to 100").param("limit")
            );
        }
        let after = match q.starting_after.as_deref() {
            Some(a) => Some(parse_public_id(a).ok_or_else(|| {
                Refusal::new(400, "invalid_request_error", "parameter_invalid", "starting_after is a payment id")
                    .param("starting_after")
            })?),
            None => None,
        };
        let status = match q.status.as_deref() {
            Some(s) => Some(
                s.parse::<Status>()
                    .map_err(|e| Refusal::new(400, "invalid_request_error", "parameter_invalid", e).param("status"))?,
            ),
            None => None,
        };
        let client = http.api.pool.get().await.map_err(StoreError::from)?;
        // One more than asked tells whether there is a next page.
        let mut page = store::list(&client, &merchant.merchant_id, status, after, limit + 1).await?;
        let has_more = page.len() > usize::try_from(limit).unwrap_or(usize::MAX);
        page.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let data: Vec<_> = page.iter().map(|p| p.resource()).collect();
        let body = serde_json::to_vec(&json!({"object": "list", "data": data, "has_more": has_more}))
            .expect("a list serializes");
        Ok(json_bytes(200, body, false))
    }
    .await
    .unwrap_or_else(|r| error(&r));
    http.count("list", resp.status().as_u16());
    resp
}

async fn healthz(State(http): State<Arc<Http>>) -> Response {
    let db = tally_postgres::health(&http.api.pool).await;
    let breakers: serde_json::Map<String, Value> = [Psp::Stripe, Psp::Adyen]
        .into_iter()
        .filter_map(|p| http.api.connectors.breaker(p).map(|b| (p.to_string(), json!(format!("{:?}", b.state())))))
        .collect();
    let ok = db.is_ok();
    let body = json!({"status": if ok {"ok"} else {"degraded"}, "postgres": db.map(|_| "ok".to_owned()).unwrap_or_else(|e| e.to_string()), "breakers": breakers});
    (if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, axum::Json(body)).into_response()
}

async fn metrics(State(http): State<Arc<Http>>) -> Response {
    use std::fmt::Write as _;
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = String::new();
    out.push_str("# HELP tally_api_responses_total API responses by route and status.\n# TYPE tally_api_responses_total counter\n");
    let mut rows: Vec<_> = http.counters.responses.lock().expect("counters").iter().map(|(k, v)| (*k, *v)).collect();
    rows.sort();
    for ((route, status), n) in rows {
        let _ = writeln!(out, "tally_api_responses_total{{route=\"{route}\",status=\"{status}\"}} {n}");
    }
    let m = &http.api.metrics;
    for (name, help, v) in [
        (
            "tally_api_idempotent_replays_total",
            "Stored responses replayed for a repeated idempotency key.",
            m.replays.load(Relaxed),
        ),
        (
            "tally_api_pan_rejections_total",
            "Requests refused for containing a card number.",
            http.counters.pan_rejections.load(Relaxed),
        ),
        (
            "tally_api_rate_limited_total",
            "Requests refused by a merchant's rate limit.",
            http.counters.rate_limited.load(Relaxed),
        ),
        (
            "tally_api_operations_unresolved_total",
            "PSP calls left without an answer (pending).",
            m.unresolved.load(Relaxed),
        ),
        ("tally_api_operations_resolved_total", "Open PSP operations the resolver resolved.", m.resolved.load(Relaxed)),
        (
            "tally_api_failovers_total",
            "New payments routed past a PSP whose breaker was open.",
            m.failovers.load(Relaxed),
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    }
    out.push_str("# HELP tally_api_breaker_state Circuit breaker per PSP: 0 closed, 1 half-open, 2 open.\n# TYPE tally_api_breaker_state gauge\n");
    for psp in [Psp::Stripe, Psp::Adyen] {
        if let Some(b) = http.api.connectors.breaker(psp) {
            let _ = writeln!(out, "tally_api_breaker_state{{psp=\"{psp}\"}} {}", b.state().gauge());
        }
    }
    out.push_str("# HELP tally_api_psp_requests_total HTTP requests sent to a PSP, retries included.\n# TYPE tally_api_psp_requests_total counter\n");
    let transports = [
        (Psp::Stripe, http.api.connectors.stripe.as_ref().map(|c| &c.transport)),
        (Psp::Adyen, http.api.connectors.adyen.as_ref().map(|c| &c.transport)),
    ];
    for (psp, t) in &transports {
        if let Some(t) = t {
            let _ = writeln!(out, "tally_api_psp_requests_total{{psp=\"{psp}\"}} {}", t.requests.load(Relaxed));
        }
    }
    out.push_str("# HELP tally_api_psp_retries_total Retries of PSP requests (network errors and 5xx).\n# TYPE tally_api_psp_retries_total counter\n");
    for (psp, t) in &transports {
        if let Some(t) = t {
            let _ = writeln!(out, "tally_api_psp_retries_total{{psp=\"{psp}\"}} {}", t.retries.load(Relaxed));
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// A token bucket per merchant, in integer milli-tokens: `rate` tokens a second, a burst of one second's worth.
/// Per process: with several API processes each enforces its own share.
#[derive(Default)]
struct Limiter {
    buckets: Mutex<HashMap<String, (u64, Instant)>>,
}

impl Limiter {
    /// Takes a token, or says how many whole seconds to wait for one.
    fn take(&self, merchant: &str, rate: u32) -> Result<(), u64> {
        let capacity = u64::from(rate) * 1_000;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("limiter");
        let (tokens, at) = buckets.entry(merchant.to_owned()).or_insert((capacity, now));
        let elapsed_ms = u64::try_from(now.duration_since(*at).as_millis()).unwrap_or(u64::MAX);
        *tokens = tokens.saturating_add(elapsed_ms.saturating_mul(u64::from(rate))).min(capacity);
        *at = now;
        if *tokens >= 1_000 {
            *tokens -= 1_000;
            Ok(())
        } else {
            let missing_ms = (1_000 - *tokens).div_ceil(u64::from(rate).max(1));
            Err(missing_ms.div_ceil(1_000).max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_one_seconds_burst_then_refuses_until_it_refills() {
        let l = Limiter::default();
        assert!((0..5).all(|_| l.take("m", 5).is_ok()));
        assert_eq!(l.take("m", 5), Err(1));
        assert!(l.take("other", 5).is_ok(), "per merchant");
        std::thread::sleep(std::time::Duration::from_millis(250));
        assert!(l.take("m", 5).is_ok(), "a fifth of a second refills one of five");
    }

    #[test]
    fn the_spec_states_the_currencies_and_the_amounts_the_api_takes() {
        let spec: Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        let schemas = &spec["components"]["schemas"];
        let listed: std::collections::BTreeSet<String> = schemas["CreatePayment"]["properties"]["currency"]["enum"]
            .as_array()
            .expect("an enum of currencies")
            .iter()
            .map(|c| c.as_str().expect("a code").to_owned())
            .collect();
        // Every code of three capitals: taken by `validate` exactly when the spec lists it.
        for a in b'A'..=b'Z' {
            for b in b'A'..=b'Z' {
                for c in b'A'..=b'Z' {
                    let code = String::from_utf8(vec![a, b, c]).expect("ascii");
                    let taken = tally_money::Currency::from_code(&code).is_ok();
                    assert_eq!(taken, listed.contains(&code), "{code}: the API and the spec disagree");
                }
            }
        }
        for schema in ["CreatePayment", "Amount"] {
            assert_eq!(schemas[schema]["properties"]["amount"]["maximum"], MAX_AMOUNT, "{schema}");
        }
    }

    #[test]
    fn a_merchant_reference_is_1_to_255_characters_without_control_characters() {
        let create = |reference: &str| {
            let body = serde_json::json!({"amount": 100, "currency": "EUR", "merchant_reference": reference,
                "payment_method": "pm_card_visa", "capture_method": "manual"});
            validate(serde_json::from_value(body).expect("a body")).map(|_| ()).map_err(|r| r.code)
        };
        assert_eq!(create(&"é".repeat(255)), Ok(()), "255 characters in 510 bytes");
        for refused in ["", "order\u{0}1", "order\n1", "order\u{82}", &"x".repeat(256)] {
            assert_eq!(create(refused), Err("merchant_reference_invalid"), "{refused:?}");
        }
        let spec: Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        let pattern = spec["components"]["schemas"]["CreatePayment"]["properties"]["merchant_reference"]["pattern"]
            .as_str()
            .expect("a pattern");
        assert_eq!(pattern, "^[^\\u0000-\\u001f\\u007f-\\u009f]+$", "the spec states the same rule");
    }

    #[test]
    fn an_amount_is_a_whole_number_of_minor_units_within_the_maximum() {
        let amount = |json: &str| serde_json::from_str::<AmountBody>(json).map(|b| b.amount).map_err(|e| e.to_string());
        assert_eq!(amount(r#"{"amount": 1999}"#), Ok(1999));
        assert_eq!(amount(r#"{"amount": 1999.0}"#), Ok(1999), "JSON Schema's integer admits 1999.0");
        assert!(amount(r#"{"amount": 1999.5}"#).unwrap_err().contains("whole number"));
        assert!(amount(r#"{"amount": 1e300}"#).is_err(), "not rounded into range");
        assert!(amount(r#"{"amount": 18446744073709551615}"#).is_err());
        assert!(amount(r#"{"amount": "1999"}"#).is_err(), "a string is not an amount");
        assert_eq!(check_amount(MAX_AMOUNT).ok(), Some(MAX_AMOUNT));
        for refused in [0, -1, MAX_AMOUNT + 1] {
            assert_eq!(check_amount(refused).map_err(|r| r.code), Err("amount_invalid"), "{refused}");
        }
    }

    #[test]
    fn the_spec_is_valid_json_and_documents_every_route_and_error_code() {
        let spec: Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        assert_eq!(spec["openapi"], "3.1.0");
        for path in [
            "/v1/payments",
            "/v1/payments/{id}",
            "/v1/payments/{id}/capture",
            "/v1/payments/{id}/refunds",
            "/v1/payments/{id}/cancel",
        ] {
            assert!(spec["paths"][path].is_object(), "{path} is in the spec");
        }
        let codes = spec["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
            .as_array()
            .expect("the error codes are an enum");
        let http = include_str!("http.rs");
        let source = [&http[..http.find("#[cfg(test)]").expect("a test module")], include_str!("service.rs")].concat();
        // Every `Refusal::new(status, "<type>", "<code>", …)`: the literal after each error type.
        let mut used = std::collections::BTreeSet::new();
        for kind in
            ["invalid_request_error", "api_error", "idempotency_error", "rate_limit_error", "authentication_error"]
        {
            let marker = format!("\"{kind}\",");
            for (i, _) in source.match_indices(&marker) {
                let rest = source[i + marker.len()..].trim_start();
                if let Some(code) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) {
                    used.insert(code.to_owned());
                }
            }
        }
        assert!(used.len() > 10, "found the codes the code uses: {used:?}");
        for code in used {
            assert!(codes.iter().any(|c| c == code.as_str()), "error code {code} is documented in openapi.json");
        }
    }
}
