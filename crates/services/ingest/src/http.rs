//! Routes and the mapping of verdicts to HTTP. Error bodies are JSON with a stable `code`, a human `message` and
//! whether a retry can succeed.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tally_domain::Psp;
use tally_kafka::RAW_TOPIC;

use crate::pipeline::Reply;
use crate::{Ingest, RejectCode};

pub(crate) fn router(ingest: Arc<Ingest>) -> Router {
    let mut router = Router::new()
        .route("/webhooks/stripe", post(stripe))
        .route("/webhooks/adyen", post(adyen))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics));
    if ingest.config.bench_baseline {
        router = router.route("/bench/raw", post(bench_raw));
    }
    // The size limit is enforced in `read_body`, with Tally's JSON error instead of axum's plain text.
    router.layer(DefaultBodyLimit::disable()).with_state(ingest)
}

fn status_of(code: RejectCode) -> StatusCode {
    match code {
        RejectCode::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        RejectCode::PanDetected => StatusCode::UNPROCESSABLE_ENTITY,
        RejectCode::ClaimInProgress => StatusCode::CONFLICT,
        RejectCode::PspNotConfigured | RejectCode::BrokerUnavailable | RejectCode::DedupUnavailable => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        RejectCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

fn error(code: RejectCode, message: &str) -> Response {
    let body = Json(json!({ "code": code.as_str(), "message": message, "retryable": code.retryable() }));
    let mut response = (status_of(code), body).into_response();
    if code.retryable() {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

async fn read_body(ingest: &Ingest, body: Body) -> Result<axum::body::Bytes, Response> {
    to_bytes(body, ingest.config.max_body_bytes).await.map_err(|_| {
        ingest.metrics.reject(RejectCode::BodyTooLarge);
        error(RejectCode::BodyTooLarge, &format!("body exceeds {} bytes", ingest.config.max_body_bytes))
    })
}

async fn stripe(State(ingest): State<Arc<Ingest>>, headers: HeaderMap, body: Body) -> Response {
    let body = match read_body(&ingest, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match handle_detached(&ingest, Psp::Stripe, headers, body).await {
        Reply::Accepted { delivery_id, facts, duplicates, conflicts } => Json(json!({
            "status": "accepted", "delivery_id": delivery_id, "facts": facts, "duplicates": duplicates,
            "content_conflicts": conflicts
        }))
        .into_response(),
        Reply::Ignored { delivery_id, code, reasons } => {
            Json(json!({ "status": "ignored", "delivery_id": delivery_id, "code": code, "reasons": reasons }))
                .into_response()
        }
        Reply::Rejected { code, message } => error(code, &message),
    }
}

/// Runs the pipeline in its own task: if the PSP hangs up mid-request, axum drops the handler, but claim → produce
/// → confirm (or release) still runs to its end, so that no claim is left `processing` and no record is produced
/// behind the back of a released claim.
async fn handle_detached(ingest: &Arc<Ingest>, psp: Psp, headers: HeaderMap, body: axum::body::Bytes) -> Reply {
    let ingest = ingest.clone();
    match tokio::spawn(async move { ingest.handle(psp, &headers, &body).await }).await {
        Ok(reply) => reply,
        Err(e) => Reply::Rejected { code: RejectCode::Internal, message: format!("pipeline task failed: {e}") },
    }
}

/// Adyen expects the literal body `[accepted]` once every item of the batch is durable (or known, or ignored).
async fn adyen(State(ingest): State<Arc<Ingest>>, headers: HeaderMap, body: Body) -> Response {
    let body = match read_body(&ingest, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match handle_detached(&ingest, Psp::Adyen, headers, body).await {
        Reply::Accepted { .. } | Reply::Ignored { .. } => {
            ([(header::CONTENT_TYPE, "text/plain")], "[accepted]").into_response()
        }
        Reply::Rejected { code, message } => error(code, &message),
    }
}

/// Each dependency separately. 200 while intake can work: the broker is up and at least one dedup store is.
async fn healthz(State(ingest): State<Arc<Ingest>>) -> Response {
    let producer = ingest.producer.clone();
    let kafka = tokio::task::spawn_blocking(move || producer.ping(Duration::from_secs(2)))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    let postgres = tally_postgres::health(&ingest.pool).await.map_err(|e| e.to_string());
    let redis = ingest.dedup.redis_health().await;
    let part = |r: &Result<String, String>| match r {
        Ok(detail) => json!({ "ok": true, "detail": detail }),
        Err(e) => json!({ "ok": false, "error": e }),
    };
    let kafka = kafka.map(|n| format!("{n} broker(s)"));
    let postgres = postgres.map(|h| format!("PostgreSQL {}", h.server_version));
    let ready = kafka.is_ok() && (postgres.is_ok() || redis.is_ok());
    let status = match (ready, postgres.is_ok() && redis.is_ok()) {
        (true, true) => "ok",
        (true, false) => "degraded",
        (false, _) => "down",
    };
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(json!({ "status": status, "kafka": part(&kafka), "postgres": part(&postgres), "redis": part(&redis) })))
        .into_response()
}

async fn metrics(State(ingest): State<Arc<Ingest>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], ingest.metrics.render()).into_response()
}

/// The benchmark's baseline: the body straight to the raw topic, no verification, no dedup.
async fn bench_raw(State(ingest): State<Arc<Ingest>>, body: Body) -> Response {
    let body = match read_body(&ingest, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let topic = ingest.kafka.topic(RAW_TOPIC);
    match ingest.producer.send(&topic, b"bench", &body, &[]).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => error(RejectCode::BrokerUnavailable, &e.to_string()),
    }
}
