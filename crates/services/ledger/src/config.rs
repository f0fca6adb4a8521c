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
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            group_id: "tally-ledger".into(),
            batch_max_records: 5000,
            batch_max_wait_ms: 50,
            session_timeout_ms: 10_000,
        }
    }
}
