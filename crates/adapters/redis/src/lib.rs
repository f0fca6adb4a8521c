//! Redis adapter. Redis is an optimisation in Tally (edge dedup); correctness never depends on it.

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
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
