//! Reference data for enrichment (DESIGN §11), in the formats its publishers use, parsed strictly: a malformed
//! file is refused whole with every error's line and column, never half-loaded. Each parsed file knows its content
//! hash, which names the reference-data version every enriched row records (I5).
//!
//! - [`ecb`]: the ECB's euro foreign exchange reference rates (daily file and full history).
//! - [`merchants`]: the merchant dimension (SCD type 2) and how a loaded file changes it.
//! - [`enrich`]: what both say about one fact (merchant as of its day, amounts in the reporting currency).

pub mod ecb;
pub mod enrich;
pub mod merchants;

use sha2::{Digest, Sha256};

/// One thing wrong with a reference file, where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}{}: {message}", column.as_ref().map(|c| format!(", column {c}")).unwrap_or_default())]
pub struct LineError {
    /// 1-based.
    pub line: usize,
    pub column: Option<String>,
    pub message: String,
}

/// A refused file: every error found (up to a bound), not only the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} error(s), first: {}", errors.len(), errors.first().map(ToString::to_string).unwrap_or_default())]
pub struct Refused {
    pub errors: Vec<LineError>,
}

/// At most this many errors are collected before a file is given up on.
pub const MAX_ERRORS: usize = 100;

/// The SHA-256 of a file's bytes, hex: its version's identity.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
