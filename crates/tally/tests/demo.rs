//! `tally demo` end to end on a small workload: ingest and the three sinks on the real stack, the oracles green.

use std::process::Command;

#[test]
fn the_demo_pipeline_books_a_generated_workload_with_every_oracle_green() {
    for var in ["TALLY__KAFKA__BROKERS", "TALLY__POSTGRES__URL", "TALLY__REDIS__URL"] {
        assert!(
            std::env::var_os(var).is_some(),
            "{var} is not set: run the tests with `make test` (it starts the stack)"
        );
    }
    // A fresh seed each run, so that the facts are new to the ledger and the edge.
    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 % 1_000_000_007;
    let dir = std::env::temp_dir().join(format!("tally-demo-test-{seed}"));
    std::fs::create_dir_all(&dir).unwrap();
    // Twice with the same seed: the second run must book and check its own payments (each run tags its ids), not
    // pass on the first run's rows with every delivery a duplicate at the edge.
    for run in 0..2 {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let out = Command::new(env!("CARGO_BIN_EXE_tally"))
            .args(["demo", "--seed", &seed.to_string(), "--events", "1500", "--concurrency", "16"])
            .env("TALLY__INGEST__LISTEN", "127.0.0.1:0")
            .env("TALLY__WAREHOUSE__LISTEN", format!("127.0.0.1:{port}"))
            .env("TALLY_LOG", "warn")
            .current_dir(&dir)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        for oracle in [
            "every expected fact booked exactly once  ok",
            "no unexpected fact                       ok",
            "nothing booked of other-mode payments    ok",
            "no content conflict                      ok",
            "money moved, per payment                 ok",
            "balances to the minor unit               ok",
            "payment statuses                         ok",
            "every journal balanced; ledger verify    ok",
            "each delivery answered as expected       ok",
            "quiescence (sinks at every topic's end)  ok",
            "warehouse: every fact once               ok",
            "warehouse: enrichment                    ok",
            "warehouse: daily mart = truth            ok",
            "ledger ↔ warehouse agreement             ok",
            "warehouse: no PII                        ok",
            "PSP recon = injected discrepancies       ok",
            "settlement booked = the reports' lines   ok",
        ] {
            assert!(stdout.contains(oracle), "missing `{oracle}` in:\n{stdout}");
        }
        // Replaying this run's busiest merchant from the archive changes nothing (I5); the audit log verifies (I8).
        for oracle in ["replay plan, one merchant: empty diff", "audit log verifies (signed checkpoints = its records)"]
        {
            let line = stdout
                .lines()
                .find(|l| l.contains(oracle))
                .unwrap_or_else(|| panic!("missing `{oracle}` in:\n{stdout}"));
            assert!(line[line.find(oracle).unwrap() + oracle.len()..].trim_start().starts_with("ok"), "{line}");
        }
        assert!(stdout.contains("oracles               all green"), "{stdout}");
        let number = |label: &str| -> u64 {
            let line = stdout
                .lines()
                .find(|l| l.trim_start().starts_with(label))
                .unwrap_or_else(|| panic!("{label}: {stdout}"));
            line.trim_start()[label.len()..].split_whitespace().next().unwrap().parse().unwrap()
        };
        let (sent, duplicates) = (number("deliveries"), number("duplicates blocked"));
        assert!(duplicates * 5 < sent, "run {run}: {duplicates} of {sent} deliveries were edge duplicates:\n{stdout}");
        if run == 1 {
            recon_covers_the_warehouse(&dir, &stdout);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `tally recon completeness` on the run's topics and warehouse file: clean; then a row deleted from the file
/// behind the sink's back is found twice over — an offset no longer accounted for, and totals that no longer agree
/// with the ledger.
fn recon_covers_the_warehouse(dir: &std::path::Path, stdout: &str) {
    let after = |marker: &str| -> String {
        let at = stdout.find(marker).unwrap_or_else(|| panic!("{marker}: {stdout}")) + marker.len();
        stdout[at..].split_whitespace().next().unwrap().to_owned()
    };
    let (path, prefix) = (after("TALLY__WAREHOUSE__PATH="), after("TALLY__KAFKA__TOPIC_PREFIX="));
    let recon = || {
        let out = Command::new(env!("CARGO_BIN_EXE_tally"))
            .args(["recon", "completeness", "--json"])
            .env("TALLY__WAREHOUSE__PATH", &path)
            .env("TALLY__WAREHOUSE__LISTEN", "127.0.0.1:1")
            .env("TALLY__KAFKA__TOPIC_PREFIX", &prefix)
            .env("TALLY_LOG", "error")
            .current_dir(dir)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), v)
    };
    let (code, clean) = recon();
    assert_eq!(code, Some(0), "{clean:#}");
    let w = &clean["warehouse"];
    assert_eq!(w["checked"], serde_json::json!(true), "{w}");
    assert!(w["offsets_accounted"].as_i64().unwrap() > 1000 && w["agreement_keys"].as_u64().unwrap() > 100, "{w}");
    assert!(w["ranges_compared"].as_u64().unwrap() > 0, "{w}");
    let conn = tally_duckdb::open(&dir.join(&path)).unwrap();
    let deleted = conn
        .execute(
            "DELETE FROM fct_payment_events WHERE fact_key = (
                SELECT fact_key FROM fct_payment_events WHERE kind = 'captured' AND kafka_offset > 0 ORDER BY fact_key LIMIT 1)",
            [],
        )
        .unwrap();
    assert_eq!(deleted, 1);
    drop(conn);
    let (code, dirty) = recon();
    assert_eq!(code, Some(1), "{dirty:#}");
    let findings: Vec<String> = serde_json::from_value(dirty["warehouse"]["findings"].clone()).unwrap();
    assert!(findings.iter().any(|f| f.contains("1 of the") && f.contains("not accounted for")), "{findings:?}");
    assert!(findings.iter().any(|f| f.starts_with("ledger ")), "{findings:?}");
    // … and the archive range that holds its offset no longer matches the warehouse's accounting.
    assert!(findings.iter().any(|f| f.contains("the archive holds") && f.contains("facts")), "{findings:?}");
    assert_eq!(dirty["discrepancies"].as_array().unwrap().len(), 0, "the archive and ledger are untouched");
}
