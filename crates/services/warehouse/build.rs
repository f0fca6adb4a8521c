//! This crate's tests (unit and integration) find the prebuilt libduckdb.so through their RUNPATH (crates/adapters/duckdb/rpath.rs).

include!("../../adapters/duckdb/rpath.rs");

fn main() {
    duckdb_rpath();
}
