//! Redis adapter. Redis is an optimisation in Tally (edge dedup, DESIGN §6); correctness never depends on it, and an
//! unreachable Redis must fail fast so that the caller can fall back to PostgreSQL.

mod dedup;

pub use dedup::RedisDedup;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis is not configured")]
    NotConfigured,
    #[error("redis unreachable (next attempt in {0} ms)")]
    Backoff(u64),
}

/// `[redis]` in tally.toml (`TALLY__REDIS__…` in the environment).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port/`; empty disables Redis (PostgreSQL carries edge dedup alone).
    pub url: String,
    /// Bound on connecting and on each command; past it the caller falls back.
    pub timeout_ms: u64,
    /// After a failure, how long to go straight to the fallback before trying Redis again.
    pub retry_after_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig { url: "redis://127.0.0.1:63799/".into(), timeout_ms: 250, retry_after_ms: 1000 }
    }
}

#[derive(Debug, Clone)]
pub struct RedisHealth {
    pub version: String,
}

/// PINGs the server and reads its version from `INFO server`.
pub async fn health(url: &str) -> Result<RedisHealth, RedisError> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let _: String = redis::cmd("PING").query_async(&mut conn).await?;
    let info: String = redis::cmd("INFO").arg("server").query_async(&mut conn).await?;
    let version = info.lines().find_map(|l| l.strip_prefix("redis_version:")).unwrap_or("unknown").trim().to_owned();
    Ok(RedisHealth { version })
}
