//! `tally api`: the payments API (DESIGN §7, issue 17). A merchant calls Tally, Tally calls a PSP, and every
//! outcome reaches the same exactly-once ledger through the transactional outbox.
//!
//! The parts, in the order a request meets them: [`merchants`] (who is calling), [`idempotency`] (has this been
//! asked before), [`store`] (the payment and its state machine, guarded by PostgreSQL), the PSP connectors, and the
//! outbox rows each change writes in its own transaction.

pub mod idempotency;
pub mod merchants;
pub mod model;
pub mod store;
pub mod vault;
