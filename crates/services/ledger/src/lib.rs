//! `tally sink ledger`: a consumer-group member over the lifecycle topics that books every fact exactly once into
//! the PostgreSQL ledger (DESIGN §4, §5).
//!
//! Exactly-once is the sink's own protocol, not Kafka's: on assignment the sink bumps the partition's
//! `owner_epoch` (fencing the previous owner) and seeks to its stored `next_offset`; each batch writes its effects
//! and advances the offsets in ONE transaction, conditioned on the epoch and on the batch starting where the last
//! one ended. Kafka's group commit afterwards is advisory (it keeps lag tools working).

mod batch;
mod config;
mod consumer;
pub mod corrections;
pub mod latency;
mod store;
mod verify;

pub use batch::{Decoded, Incoming, LEDGER_TOPICS};
pub use config::LedgerConfig;
pub use consumer::{consume, run, SinkError};
pub use store::{BatchOutcome, LedgerStore, PartitionClaim, StoreError};
pub use verify::{verify, VerifyReport};

/// Written on every ledger row (I6).
pub const PROCESSOR_VERSION: &str = concat!("tally-ledger/", env!("CARGO_PKG_VERSION"));
