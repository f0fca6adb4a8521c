//! PSP reconciliation (DESIGN §12, ADR 0015): settlement report files imported once each (by SHA-256) and kept line
//! by line, then matched against the ledger's facts. `matching` is pure; `store` is PostgreSQL.

pub mod booking;
pub mod import;
pub mod inbox;
pub mod matching;
pub mod shadow;
pub mod store;

pub use matching::{reconcile, Break, BreakKind, Fact, Line, Outcome, Price, Rules, Tolerances, NO_TOLERANCE};
