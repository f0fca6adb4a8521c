//! The warehouse side of Tally (DESIGN §11): the columnar tables finance, risk and support query.
//!
//! - [`reference`]: reference data — the merchant dimension (SCD2) and the ECB's FX rates — loaded into PostgreSQL
//!   as versions named by their content hash (ADR 0012), and read back as the state enrichment uses.
//! - [`land`]: a consumed fact → an enriched, tokenized row with its lineage.
//! - [`store`]: the DuckDB file — rows and the sink's offsets in one transaction, re-enrichment of flagged rows.
//! - [`models`]: the curated tables and marts (`models/*.sql`), built incrementally in the same transaction.
//! - [`sink`]: `tally sink warehouse`, on the sink framework, with `/metrics`, `/healthz` and `/query`.
//! - [`query`]: read-only SQL with a time limit, served by the sink or on the file.
//! - [`replay`]: the warehouse's side of a replay — the scope's records landed again and diffed, marts restated.
//! - [`proof`]: what the warehouse must agree with — the ledger's entries, the simulator's daily truth.

pub mod bench;
mod config;
pub mod land;
pub mod models;
pub mod proof;
pub mod query;
pub mod reference;
pub mod replay;
pub mod sink;
pub mod store;

pub use config::{WarehouseConfig, DEMO_TOKEN_KEY};
pub use sink::run;

/// Names the code that wrote a row (lineage, I6).
pub const PROCESSOR_VERSION: &str = concat!("tally-warehouse/", env!("CARGO_PKG_VERSION"));
