use serde::Deserialize;

/// `[ledger]` in tally.toml (`TALLY__LEDGER__…` in the environment).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// The consumer group, and the key of the sink's offsets in PostgreSQL.
    pub group_id: String,
    /// A batch is committed when it holds this many records …
    pub batch_max_records: usize,
    /// … or when its first record has waited this long.
    pub batch_max_wait_ms: u64,
    /// How long the group waits for a silent member before giving its partitions to others.
    pub session_timeout_ms: u64,
    /// The longest pause between polls before this member is considered gone. librdkafka also sends it as the
    /// rebalance timeout: how long a rebalance waits for members (a kill -9'd one never answers) before going on.
    pub max_poll_interval_ms: u64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            group_id: "tally-ledger".into(),
            batch_max_records: 5000,
            batch_max_wait_ms: 50,
            session_timeout_ms: 10_000,
            max_poll_interval_ms: 60_000,
        }
    }
}
