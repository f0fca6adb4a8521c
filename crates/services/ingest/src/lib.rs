//! `tally ingest`: the HTTP service PSPs call (DESIGN §2, §6).
//!
//! Per delivery, in this order: body size limit → signature over the raw bytes → PAN scan (422 + redacted
//! quarantine) → normalise → encode (Avro, Confluent framing) → edge dedup claim → produce (`acks=all`)
//! → confirm the claim → 2xx. On a produce failure the claims are released and the PSP gets a 5xx, so it retries
//! (I1). The raw delivery goes to `webhooks.raw.v1` too, as part of the same acknowledgement.

mod config;
mod dedup;
mod http;
mod metrics;
mod pipeline;

pub use config::{AdyenConfig, IngestConfig, Mode, StripeConfig};
pub use dedup::{Claim, EdgeDedup, OwnedClaim};
pub use metrics::{Metrics, RejectCode};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tally_kafka::{KafkaConfig, Producer};
use tally_postgres::PostgresConfig;
use tally_psp::adyen::HmacKey;
use tally_redis::{RedisConfig, RedisDedup};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Kafka(#[from] tally_kafka::KafkaError),
    #[error(transparent)]
    Postgres(#[from] tally_postgres::PgError),
    #[error("listening on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
}

/// Everything a running ingest needs, built once from the configuration.
pub struct Ingest {
    pub(crate) config: IngestConfig,
    pub(crate) kafka: KafkaConfig,
    pub(crate) producer: Producer,
    pub(crate) pool: deadpool_postgres::Pool,
    pub(crate) dedup: EdgeDedup,
    pub(crate) adyen_keys: Vec<HmacKey>,
    /// What each PSP's normaliser needs to know about its endpoint (mode, capture settings).
    pub(crate) stripe_endpoint: tally_psp::Endpoint,
    pub(crate) adyen_endpoint: tally_psp::Endpoint,
    pub metrics: Arc<Metrics>,
}

impl Ingest {
    /// Validates the configuration and connects lazily: a dependency that is down at start does not stop the
    /// service from starting (it reports itself in /healthz), except that migrations need PostgreSQL.
    pub async fn new(
        config: IngestConfig,
        kafka: KafkaConfig,
        postgres: PostgresConfig,
        redis: RedisConfig,
    ) -> Result<Arc<Self>, IngestError> {
        config.validate(&kafka)?;
        let adyen_keys = config
            .adyen
            .hmac_keys
            .iter()
            .map(|k| HmacKey::from_hex(k.expose()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| IngestError::Config(format!("ingest.adyen.hmac_keys: {e}")))?;
        let pool = tally_postgres::pool(&postgres)?;
        tally_postgres::migrate(&pool).await?;
        let metrics = Arc::new(Metrics::default());
        let dedup = EdgeDedup::new(RedisDedup::new(redis), tally_postgres::PgDedup::new(pool.clone()), metrics.clone());
        Ok(Arc::new(Ingest {
            producer: Producer::new(&kafka)?,
            stripe_endpoint: config.stripe.endpoint(),
            adyen_endpoint: config.adyen.endpoint(),
            config,
            kafka,
            pool,
            dedup,
            adyen_keys,
            metrics,
        }))
    }

    /// Serves on an already bound listener until `shutdown` is cancelled, then drains in-flight requests and
    /// flushes the producer.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
        let app = http::router(self.clone());
        axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await?;
        let producer = self.producer.clone();
        let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await;
        Ok(())
    }
}

/// `tally ingest`: binds `config.listen` and serves until shutdown.
pub async fn run(
    config: IngestConfig,
    kafka: KafkaConfig,
    postgres: PostgresConfig,
    redis: RedisConfig,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    let listen = config.listen.clone();
    let ingest = Ingest::new(config, kafka, postgres, redis).await?;
    let listener =
        TcpListener::bind(&listen).await.map_err(|source| IngestError::Listen { addr: listen.clone(), source })?;
    let addr: SocketAddr = listener.local_addr().map_err(|source| IngestError::Listen { addr: listen, source })?;
    tracing::info!(%addr, "ingest listening");
    ingest.serve(listener, shutdown).await.map_err(|source| IngestError::Listen { addr: addr.to_string(), source })
}

/// A random (version 4) UUID. Built from `rand` rather than uuid's `v4` feature, which would unify into the pure
/// core's `uuid` and give it a randomness dependency (the tidy test forbids that).
pub(crate) fn random_uuid() -> uuid::Uuid {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid()
}
