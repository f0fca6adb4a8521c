//! The core crates stay pure (STYLE.md): no I/O dependency in their dependency closure, and no clock, randomness,
//! filesystem, network, environment or process access in their source.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;

const CORE: &[&str] = &["tally-money", "tally-domain", "tally-psp", "tally-reference"];

/// Crates that do I/O, read the clock or draw randomness. (`libc` is not listed: `sha2` reaches it through
/// `cpufeatures` for CPU feature detection; the source scan below catches direct system calls.)
const FORBIDDEN_DEPS: &[&str] = &[
    "tokio",
    "mio",
    "socket2",
    "async-std",
    "hyper",
    "reqwest",
    "axum",
    "rdkafka",
    "rdkafka-sys",
    "tokio-postgres",
    "postgres",
    "sqlx",
    "redis",
    "object_store",
    "rand",
    "rand_core",
    "getrandom",
    "chrono",
    "nix",
];

/// Source patterns that read the world.
const FORBIDDEN_SOURCE: &[&str] = &[
    "std::fs",
    "std::net",
    "std::env",
    "std::process",
    "std::thread",
    "SystemTime",
    "Instant::now",
    "now_utc",
    "now_local",
    "thread_rng",
    "OsRng",
    "File::",
];

#[test]
fn core_crates_have_no_io_dependency() {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(manifest_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let md: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let name_of: HashMap<&str, &str> = md["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    // Normal (non-dev, non-build) dependency edges of the resolved graph.
    let mut edges: HashMap<&str, Vec<&str>> = HashMap::new();
    for node in md["resolve"]["nodes"].as_array().unwrap() {
        let id = node["id"].as_str().unwrap();
        for dep in node["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"].as_array().unwrap().iter().any(|k| k["kind"].is_null());
            if normal {
                edges.entry(id).or_default().push(dep["pkg"].as_str().unwrap());
            }
        }
    }
    for core in CORE {
        let root = name_of.iter().find(|(_, n)| *n == core).map(|(id, _)| *id).expect(core);
        let mut seen = BTreeSet::new();
        let mut stack = vec![root];
        while let Some(id) = stack.pop() {
            if seen.insert(id) {
                stack.extend(edges.get(id).into_iter().flatten());
            }
        }
        let names: BTreeSet<&str> = seen.iter().map(|id| name_of[id]).collect();
        let bad: Vec<_> = FORBIDDEN_DEPS.iter().filter(|d| names.contains(*d)).collect();
        assert!(bad.is_empty(), "{core} depends (transitively) on {bad:?}");
        assert!(names.len() > 3, "{core}: dependency walk found only {names:?}");
    }
    // DuckDB's native engine in the one adapter crate that wraps it: the warehouse reaches it through that crate.
    let direct: BTreeSet<&str> = edges
        .iter()
        .filter(|(_, deps)| deps.iter().any(|d| name_of[d] == "duckdb"))
        .map(|(id, _)| name_of[id])
        .collect();
    assert_eq!(direct, BTreeSet::from(["tally-duckdb"]), "duckdb used directly by more than its adapter");
}

#[test]
fn core_sources_do_not_touch_the_world() {
    let root = Path::new(&manifest_dir()).join("../core");
    let mut files = Vec::new();
    collect_rs(&root, &mut files);
    assert!(files.len() > 10, "found only {} core source files", files.len());
    let mut offences = Vec::new();
    for file in files {
        // Integration tests of the core may read fixture files; the library sources may not.
        if file.components().any(|c| c.as_os_str() == "tests") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for pattern in FORBIDDEN_SOURCE {
            if text.contains(pattern) {
                offences.push(format!("{}: {pattern}", file.display()));
            }
        }
    }
    assert!(offences.is_empty(), "impure core:\n{}", offences.join("\n"));
}

fn collect_rs(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The package's directory as cargo or nextest gives it when the test runs (the compile-time value only as a
/// fallback): a test binary reused from another checkout sharing the target directory still reads this checkout's
/// files.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned())
}
