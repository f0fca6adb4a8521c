//! `tally sink warehouse`: a consumer-group member over the lifecycle topics, on the sink framework
//! (`tally_sink`), landing enriched rows and its offsets in one DuckDB transaction per batch. Beside the consumer: a
//! reference watcher (new reference versions in PostgreSQL → flagged rows enriched again) and a listener serving
//! `/metrics`, `/healthz` and read-only `/query`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tally_kafka::position::LogPositionError;
use tally_kafka::{KafkaConfig, LIFECYCLE_TOPICS};
use tally_postgres::PostgresConfig;
use tally_sink::{Batching, FrameworkError, KafkaSource, KafkaSourceConfig, Source};
use tokio_util::sync::CancellationToken;

use crate::land::Tokenizer;
use crate::store::{StoreError, Warehouse};
use crate::{query, WarehouseConfig};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Framework(#[from] FrameworkError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Postgres(#[from] tally_postgres::PgError),
    #[error("reference data: {0}")]
    Reference(#[from] crate::reference::LoadError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("listener {0}: {1}")]
    Listen(String, std::io::Error),
    #[error("sink thread: {0}")]
    Join(String),
}

impl From<LogPositionError> for SinkError {
    fn from(e: LogPositionError) -> Self {
        SinkError::Framework(FrameworkError::Position(e))
    }
}

/// The sink's counters (`/metrics`, Prometheus text format).
#[derive(Debug, Default)]
pub struct Metrics {
    pub rows: AtomicU64,
    pub duplicates: AtomicU64,
    pub rejects: AtomicU64,
    pub merchant_unknown: AtomicU64,
    pub fx_unavailable: AtomicU64,
    pub reenriched: AtomicU64,
    pub batches: AtomicU64,
    pub commit_micros: AtomicU64,
    pub reference_loads: AtomicU64,
    pub queries: AtomicU64,
    pub replays: AtomicU64,
}

impl Metrics {
    pub fn render(&self) -> String {
        let counters = [
            ("tally_warehouse_rows_total", "Fact rows landed.", &self.rows),
            ("tally_warehouse_duplicates_total", "Consumed records of a fact already landed.", &self.duplicates),
            ("tally_warehouse_rejects_total", "Consumed records that are not bookable facts.", &self.rejects),
            ("tally_warehouse_merchant_unknown_total", "Rows landed flagged merchant_unknown.", &self.merchant_unknown),
            ("tally_warehouse_fx_unavailable_total", "Rows landed flagged fx_unavailable.", &self.fx_unavailable),
            (
                "tally_warehouse_reenriched_total",
                "Flagged rows enriched again by new reference data.",
                &self.reenriched,
            ),
            ("tally_warehouse_batches_total", "Batches committed.", &self.batches),
            ("tally_warehouse_reference_loads_total", "Reference versions put in force.", &self.reference_loads),
            ("tally_warehouse_queries_total", "Read-only queries served.", &self.queries),
            ("tally_warehouse_replays_total", "Replay plans and applies served.", &self.replays),
        ];
        let mut out = String::new();
        for (name, help, v) in counters {
            out += &format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n", v.load(Ordering::Relaxed));
        }
        let micros = self.commit_micros.load(Ordering::Relaxed);
        let secs = format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000);
        out += &format!(
            "# HELP tally_warehouse_commit_seconds_total Time spent committing batches.\n# TYPE tally_warehouse_commit_seconds_total counter\ntally_warehouse_commit_seconds_total {secs}\n"
        );
        out
    }
}

struct Shared {
    warehouse: Mutex<Warehouse>,
    metrics: Metrics,
    query_timeout: Duration,
    pool: deadpool_postgres::Pool,
    fx_max_age_days: i64,
}

/// `tally sink warehouse`: runs until `shutdown`, then commits what it holds and leaves the group.
pub async fn run(
    config: WarehouseConfig,
    kafka: KafkaConfig,
    postgres: PostgresConfig,
    shutdown: CancellationToken,
) -> Result<(), SinkError> {
    let reporting =
        tally_money::Currency::from_code(&config.reporting_currency).map_err(|e| SinkError::Config(e.to_string()))?;
    if config.token_key.expose() == crate::config::DEMO_TOKEN_KEY {
        tracing::warn!("[warehouse] token_key is the demo key: set your own before real customer data lands");
    }
    let pool = tally_postgres::pool(&postgres)?;
    tally_postgres::migrate(&pool).await?;
    let client = pool.get().await.map_err(|e| SinkError::Postgres(tally_postgres::PgError::Pool(e.to_string())))?;
    let reference = crate::reference::reference_state(&client, reporting, config.fx_max_age_days, None).await?;
    drop(client);
    let (path, group) = (config.path.clone(), config.group_id.clone());
    let tokens = Tokenizer::new(config.token_key.expose().as_bytes());
    let lateness = config.allowed_lateness_secs;
    let checkpoint = config.checkpoint_threshold.clone();
    let warehouse = tokio::task::spawn_blocking(move || -> Result<Warehouse, StoreError> {
        let mut w = Warehouse::open(&path, &group, reference.clone(), tokens, lateness, &checkpoint)?;
        w.set_reference(reference)?;
        Ok(w)
    })
    .await
    .map_err(|e| SinkError::Join(e.to_string()))??;
    tracing::info!(path = %config.path.display(), "warehouse sink starting");
    let shared = Arc::new(Shared {
        warehouse: Mutex::new(warehouse),
        metrics: Metrics::default(),
        query_timeout: Duration::from_millis(config.query_timeout_ms),
        pool: pool.clone(),
        fx_max_age_days: config.fx_max_age_days,
    });

    let listener =
        tokio::net::TcpListener::bind(&config.listen).await.map_err(|e| SinkError::Listen(config.listen.clone(), e))?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/query", post(serve_query))
        // A replay's request holds its scope's archived records.
        .route("/replay", post(serve_replay).layer(axum::extract::DefaultBodyLimit::max(1 << 30)))
        .with_state(shared.clone());
    let server_stop = shutdown.clone();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).with_graceful_shutdown(server_stop.cancelled_owned()).await;
    });

    let watcher = tokio::spawn(watch_reference(
        shared.clone(),
        pool.clone(),
        reporting,
        config.fx_max_age_days,
        Duration::from_millis(config.reference_poll_ms),
        shutdown.clone(),
    ));

    let consumer_shared = shared.clone();
    let consumer_stop = shutdown.clone();
    let result = tokio::task::spawn_blocking(move || -> Result<(), SinkError> {
        let topics: Vec<String> = LIFECYCLE_TOPICS.iter().map(|t| kafka.topic(t)).collect();
        let claim_shared = consumer_shared.clone();
        let mut source = KafkaSource::new(
            &KafkaSourceConfig {
                brokers: &kafka.brokers,
                group_id: &config.group_id,
                topics: &topics,
                session_timeout_ms: config.session_timeout_ms,
                max_poll_interval_ms: config.max_poll_interval_ms,
                fetch_wait_max_ms: 100,
            },
            Box::new(move |topic, partition| {
                claim_shared
                    .warehouse
                    .lock()
                    .expect("warehouse lock")
                    .claim(topic, partition)
                    .map_err(|e| e.to_string())
            }),
            consumer_stop.clone(),
        )?;
        let batching = Batching::Together {
            max_records: config.batch_max_records,
            max_wait: Duration::from_millis(config.batch_max_wait_ms),
        };
        consume(&mut source, batching, &consumer_shared, &consumer_stop)
    })
    .await
    .map_err(|e| SinkError::Join(e.to_string()));
    shutdown.cancel();
    let _ = watcher.await;
    let _ = server.await;
    result?
}

fn consume(
    source: &mut impl Source<tally_sink::Claim>,
    batching: Batching,
    shared: &Shared,
    shutdown: &CancellationToken,
) -> Result<(), SinkError> {
    tally_sink::run(source, batching, shutdown, |parts| {
        let started = Instant::now();
        let landed = shared.warehouse.lock().expect("warehouse lock").commit(parts)?;
        let m = &shared.metrics;
        m.commit_micros.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        m.batches.fetch_add(1, Ordering::Relaxed);
        m.rows.fetch_add(landed.rows, Ordering::Relaxed);
        m.duplicates.fetch_add(landed.duplicates, Ordering::Relaxed);
        m.rejects.fetch_add(landed.rejects, Ordering::Relaxed);
        m.merchant_unknown.fetch_add(landed.merchant_unknown, Ordering::Relaxed);
        m.fx_unavailable.fetch_add(landed.fx_unavailable, Ordering::Relaxed);
        tracing::debug!(?landed, "batch landed");
        Ok::<(), SinkError>(())
    })
}

/// Puts each new reference version in force as it is loaded (flagged rows are enriched again).
async fn watch_reference(
    shared: Arc<Shared>,
    pool: deadpool_postgres::Pool,
    reporting: tally_money::Currency,
    max_age: i64,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let current = {
            let w = shared.warehouse.lock().expect("warehouse lock");
            (w.reference().merchants_version, w.reference().fx_version)
        };
        let result = async {
            let client = pool.get().await.map_err(|e| e.to_string())?;
            let latest = crate::reference::latest_versions(&client).await.map_err(|e| e.to_string())?;
            if latest == current {
                return Ok(None);
            }
            let reference = crate::reference::reference_state(&client, reporting, max_age, Some(latest))
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(Some(reference))
        }
        .await;
        let reference = match result {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "reading reference versions failed; retrying");
                continue;
            }
        };
        let (m, f) = (reference.merchants_version, reference.fx_version);
        let s = shared.clone();
        match tokio::task::spawn_blocking(move || s.warehouse.lock().expect("warehouse lock").set_reference(reference))
            .await
        {
            Ok(Ok(n)) => {
                shared.metrics.reference_loads.fetch_add(1, Ordering::Relaxed);
                shared.metrics.reenriched.fetch_add(n, Ordering::Relaxed);
                tracing::info!(merchants_version = ?m, fx_version = ?f, reenriched = n, "reference data in force");
            }
            Ok(Err(e)) => tracing::error!(error = %e, "putting reference data in force failed; retrying"),
            Err(e) => tracing::error!(error = %e, "reference task failed"),
        }
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    ([("content-type", "text/plain; version=0.0.4")], shared.metrics.render()).into_response()
}

#[derive(serde::Deserialize)]
struct QueryRequest {
    sql: String,
    #[serde(default = "default_max_rows")]
    max_rows: usize,
}

fn default_max_rows() -> usize {
    10_000
}

/// A replay plan or apply, between two batches (the consumer waits for the lock; nothing it lands is lost).
async fn serve_replay(State(shared): State<Arc<Shared>>, Json(req): Json<crate::replay::Request>) -> Response {
    shared.metrics.replays.fetch_add(1, Ordering::Relaxed);
    match crate::replay::run(&shared.warehouse, &shared.pool, shared.fx_max_age_days, &req).await {
        Ok(outcome) => Json(outcome).into_response(),
        Err(crate::replay::ReplayError::Stale(reason)) => (
            StatusCode::CONFLICT,
            Json(serde_json::json!({ "error": format!("stale plan: {reason}"), "stale": reason })),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "replay failed");
            (StatusCode::INTERNAL_SERVER_ERROR, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
        }
    }
}

async fn serve_query(State(shared): State<Arc<Shared>>, Json(req): Json<QueryRequest>) -> Response {
    shared.metrics.queries.fetch_add(1, Ordering::Relaxed);
    let s = shared.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let conn = s.warehouse.lock().expect("warehouse lock").reader().map_err(|e| e.to_string())?;
        query::run(&conn, &req.sql, s.query_timeout, req.max_rows).map_err(|e| e.to_string())
    })
    .await;
    match answer {
        Ok(Ok(a)) => Json(a).into_response(),
        Ok(Err(e)) => (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "error": e }))).into_response(),
        Err(e) => {
            (StatusCode::INTERNAL_SERVER_ERROR, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
        }
    }
}
