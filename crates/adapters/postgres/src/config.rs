use serde::Deserialize;

/// `[postgres]` in tally.toml (`TALLY__POSTGRES__…` in the environment).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// `postgres://user[:password]@host:port/database`
    pub url: String,
    pub pool_size: usize,
    /// Bound on connecting and on waiting for a pooled connection.
    pub connect_timeout_ms: u64,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig { url: "postgres://tally@127.0.0.1:54329/tally".into(), pool_size: 16, connect_timeout_ms: 2000 }
    }
}
