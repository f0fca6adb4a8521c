//! Points the RUNPATH of this crate's tests at the prebuilt libduckdb.so, so that nothing needs LD_LIBRARY_PATH at
//! run time. A crate whose binaries or tests link this one does the same in its own build script (cargo applies
//! link arguments per package).

fn main() {
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
    println!("cargo:rustc-link-arg-tests=-Wl,-rpath,{dir}");
}
