//! The embedded DuckDB engine (DESIGN §11): one file, one writing process. Linked against DuckDB's prebuilt
//! `libduckdb.so` (scripts/install-deps.sh fetches it; `.cargo/config.toml` and `build.rs` point the build and the
//! RUNPATH at it), so the C++ engine is never compiled here.

pub use duckdb;

#[derive(Debug, thiserror::Error)]
pub enum DuckError {
    #[error("duckdb: {0}")]
    Duck(#[from] duckdb::Error),
}

/// The engine's version (`SELECT version()`), e.g. `v1.5.6`.
pub fn engine_version(conn: &duckdb::Connection) -> Result<String, DuckError> {
    Ok(conn.query_row("SELECT version()", [], |r| r.get(0))?)
}

/// Opens (creating if needed) a database file for writing.
pub fn open(path: &std::path::Path) -> Result<duckdb::Connection, DuckError> {
    Ok(duckdb::Connection::open(path)?)
}
