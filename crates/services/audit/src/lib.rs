//! The audit log (I8, DESIGN §13): every correction, resolution, approval and reference load — and, as they are
//! built, replay, backfill and requeue — is an append-only record whose canonical bytes are a leaf of an RFC 6962
//! Merkle tree, written in the same transaction as what it records. Signed checkpoints (C2SP tlog-checkpoint in an
//! Ed25519 signed note) fix the tree's state; inclusion and consistency proofs show a record is in it and that a
//! later state extends an earlier one; an export is checked with Go's sumdb packages, without Tally's code.

pub mod config;
pub mod merkle;
pub mod note;
pub mod record;
pub mod store;

pub use note::{Checkpoint, NoteSigner, NoteVerifier};
pub use record::{Entry, Record};
pub use store::{append, AuditError, VerifyReport};

/// Hex SHA-256 of some bytes: the checksum form of an audit record's `before` / `after`.
pub fn checksum(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
