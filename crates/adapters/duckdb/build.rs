//! This crate's tests (unit and integration) find the prebuilt libduckdb.so through their RUNPATH (rpath.rs).

include!("rpath.rs");

fn main() {
    duckdb_rpath();
}
