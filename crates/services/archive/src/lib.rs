//! The archive sink and completeness reconciliation (DESIGN §1 I1, I2, I6; §5).
//!
//! `tally sink archive` writes every record of every topic to immutable Parquet files, one per topic-partition
//! offset range ([`file`]), through any object store ([`objects`]); a file counts once the manifest in PostgreSQL
//! holds it ([`manifest`]). `tally archive gc` removes files that crashed attempts left outside the manifest
//! ([`gc`]). `tally recon completeness` compares the broker's log, the archive and the ledger offset by offset
//! ([`recon`]). Parquet (without Arrow) lives in this crate only.

pub mod checksum;
pub mod file;
pub mod gc;
pub mod manifest;
pub mod objects;
pub mod recon;
mod sink;

use serde::Deserialize;

pub use file::{
    encode, object_path, parse_object_path, read_facts, read_records, ArchivedFact, EncodedFile, LogRecord,
};
pub use manifest::{Claim, Manifest, ManifestError, ManifestFile};
pub use objects::{ObjectError, Objects};
pub use sink::{run, SinkError, CRASH_AFTER_PUT_ENV, CRASH_ONCE_ENV};

/// Written into every manifest row.
pub const PROCESSOR_VERSION: &str = concat!("tally-archive/", env!("CARGO_PKG_VERSION"));

/// `[archive]` in tally.toml (`TALLY__ARCHIVE__…` in the environment).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// Where files go: a local directory, or a URL object_store understands (`file:///…`, `s3://bucket/prefix`).
    pub location: String,
    /// The consumer group, and the key of the sink's offsets in PostgreSQL.
    pub group_id: String,
    /// A partition's buffer becomes a file when it holds this many records …
    pub flush_max_records: usize,
    /// … or this many bytes …
    pub flush_max_bytes: usize,
    /// … or when its first record has waited this long (the archive's lag behind the log, at most).
    pub flush_max_age_ms: u64,
    pub session_timeout_ms: u64,
    pub max_poll_interval_ms: u64,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            location: ".tally/archive".into(),
            group_id: "tally-archive".into(),
            flush_max_records: 100_000,
            flush_max_bytes: 64 << 20,
            flush_max_age_ms: 2_000,
            session_timeout_ms: 10_000,
            max_poll_interval_ms: 60_000,
        }
    }
}
