// Shared by the build scripts of every package whose tests or binaries link DuckDB (`include!`d: cargo applies
// link arguments per package, so each says so itself). Points the RUNPATH at the prebuilt libduckdb.so that
// scripts/install-deps.sh fetched (DUCKDB_LIB_DIR, from .cargo/config.toml), so nothing needs LD_LIBRARY_PATH.

/// Every linked target of the package (its binaries, integration tests and unit-test harness).
fn duckdb_rpath() {
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    let Ok(dir) = std::env::var("DUCKDB_LIB_DIR") else {
        println!("cargo:warning=DUCKDB_LIB_DIR is not set: run scripts/install-deps.sh (make up) first");
        return;
    };
    // The resolved directory: .tally/lib is a link into the machine's cache.
    let Ok(dir) = std::fs::canonicalize(&dir).map(|p| p.display().to_string()) else {
        println!("cargo:warning={dir} does not exist: run scripts/install-deps.sh (make up) to fetch DuckDB's engine");
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
}
