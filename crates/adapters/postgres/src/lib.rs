//! PostgreSQL adapter: the pool every Tally service uses, the migrations in `migrations/`, the edge-dedup fallback
//! store and the PAN quarantine.

mod config;
mod dedup;
mod migrate;
pub mod offsets;
mod quarantine;

pub use config::PostgresConfig;
pub use dedup::PgDedup;
pub use migrate::{migrate, Migration, MIGRATIONS};
pub use quarantine::{quarantine, record_edge_exceptions, EdgeException, QuarantineRecord};

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("postgres: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("postgres pool: {0}")]
    Pool(String),
    #[error("invalid database url: {0}")]
    Url(String),
    #[error("migration {version} ({name}) was changed after it was applied (checksum {applied} → {now})")]
    MigrationChanged { version: i32, name: &'static str, applied: String, now: String },
}

impl From<deadpool_postgres::PoolError> for PgError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        PgError::Pool(e.to_string())
    }
}

/// A connection pool with bounded connect and wait times, so that an unreachable database fails fast.
pub fn pool(config: &PostgresConfig) -> Result<Pool, PgError> {
    let mut pg: tokio_postgres::Config =
        config.url.parse().map_err(|e: tokio_postgres::Error| PgError::Url(e.to_string()))?;
    pg.connect_timeout(Duration::from_millis(config.connect_timeout_ms));
    // A hung transaction must not hold ledger rows forever, nor a writer wait on them forever.
    pg.options("-c lock_timeout=30s -c idle_in_transaction_session_timeout=60s");
    let manager = Manager::from_config(pg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(config.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_millis(config.connect_timeout_ms)))
        .create_timeout(Some(Duration::from_millis(config.connect_timeout_ms)))
        .build()
        .map_err(|e| PgError::Pool(e.to_string()))
}

/// What the server reports about itself.
#[derive(Debug, Clone)]
pub struct PgHealth {
    pub server_version: String,
    pub database: String,
}

/// Asks the server for its version and database.
pub async fn health(pool: &Pool) -> Result<PgHealth, PgError> {
    let client = pool.get().await?;
    let row = client.query_one("select current_setting('server_version'), current_database()", &[]).await?;
    Ok(PgHealth { server_version: row.get(0), database: row.get(1) })
}
