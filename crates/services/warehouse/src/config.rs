use std::path::PathBuf;

use serde::Deserialize;
use tally_domain::Secret;

/// `[warehouse]` in tally.toml (`TALLY__WAREHOUSE__…` in the environment).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WarehouseConfig {
    /// The DuckDB file (one writing process: the sink).
    pub path: PathBuf,
    /// The consumer group, and the key of the sink's offsets in the DuckDB file.
    pub group_id: String,
    /// Every amount is also stated in this currency (ISO 4217 code).
    pub reporting_currency: String,
    /// The oldest ECB rate a fact may be converted with, in days before its UTC date (weekends and TARGET holidays
    /// are gaps of up to four days); older: `fx_unavailable`.
    pub fx_max_age_days: i64,
    /// A mart day closes once the event-time watermark (the latest `occurred_at` landed) passes its end plus this;
    /// a fact that changes a closed day restates it.
    pub allowed_lateness_secs: i64,
    /// DuckDB checkpoints its WAL into the file when the WAL passes this size (DuckDB's notation: `256MB`, `1GB`).
    /// Larger: fewer, cheaper-per-row checkpoints; a longer WAL replay after a crash.
    pub checkpoint_threshold: String,
    /// How often the sink asks PostgreSQL for new reference versions (and re-enriches flagged rows).
    pub reference_poll_ms: u64,
    /// The key of the tokens that replace customer, card and device identifiers (HMAC-SHA256). Stable: the same
    /// value gives the same token, so joins work; change it and every token changes.
    pub token_key: Secret<String>,
    /// `/metrics`, `/healthz` and `/query` (read-only SQL while the sink holds the file).
    pub listen: String,
    /// A read-only query is stopped after this long.
    pub query_timeout_ms: u64,
    pub batch_max_records: usize,
    pub batch_max_wait_ms: u64,
    pub session_timeout_ms: u64,
    pub max_poll_interval_ms: u64,
}

/// The token key a fresh checkout uses; the sink warns when it runs with it.
pub const DEMO_TOKEN_KEY: &str = "tally-demo-token-key-change-me";

impl Default for WarehouseConfig {
    fn default() -> Self {
        WarehouseConfig {
            path: PathBuf::from(".tally/warehouse.duckdb"),
            group_id: "tally-warehouse".into(),
            reporting_currency: "EUR".into(),
            fx_max_age_days: 7,
            allowed_lateness_secs: 86_400,
            checkpoint_threshold: "1GB".into(),
            reference_poll_ms: 2_000,
            token_key: Secret::new(DEMO_TOKEN_KEY.into()),
            listen: "127.0.0.1:8091".into(),
            query_timeout_ms: 30_000,
            batch_max_records: 20_000,
            batch_max_wait_ms: 200,
            session_timeout_ms: 10_000,
            max_poll_interval_ms: 60_000,
        }
    }
}
