//! The prebuilt engine links and runs: the version the install script fetched, a transaction that appends rows and
//! moves an offsets row together (what a sink commit does), a rollback that leaves nothing, and Parquet out and in.

use tally_duckdb::duckdb::params;

#[test]
fn the_prebuilt_engine_commits_rows_and_offsets_together_and_reads_parquet() {
    let dir = std::env::temp_dir().join(format!("tally-duckdb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut conn = tally_duckdb::open(&dir.join("w.duckdb")).unwrap();
    assert_eq!(tally_duckdb::engine_version(&conn).unwrap(), "v1.5.6");
    conn.execute_batch(
        "CREATE TABLE facts (k BIGINT PRIMARY KEY, amount_minor BIGINT NOT NULL, currency VARCHAR NOT NULL);
         CREATE TABLE offsets (topic VARCHAR, part INTEGER, next_offset BIGINT, PRIMARY KEY (topic, part));",
    )
    .unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut app = tx.appender("facts").unwrap();
        for k in 0..10_000i64 {
            app.append_row(params![k, k * 3, "EUR"]).unwrap();
        }
    }
    tx.execute("INSERT OR REPLACE INTO offsets VALUES ('t', 0, 10000)", []).unwrap();
    tx.commit().unwrap();
    // A batch that fails half-way leaves neither its rows nor its offset.
    let tx = conn.transaction().unwrap();
    tx.execute("INSERT INTO facts VALUES (10000, 1, 'EUR')", []).unwrap();
    tx.execute("INSERT OR REPLACE INTO offsets VALUES ('t', 0, 10001)", []).unwrap();
    assert!(tx.execute("INSERT INTO facts VALUES (0, 1, 'EUR')", []).is_err(), "a duplicate key");
    tx.rollback().unwrap();
    let (n, sum, next): (i64, i64, i64) = conn
        .query_row(
            "SELECT count(*), sum(amount_minor)::BIGINT, (SELECT next_offset FROM offsets) FROM facts",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((n, sum, next), (10_000, 3 * (0..10_000i64).sum::<i64>(), 10_000));
    let parquet = dir.join("facts.parquet");
    conn.execute(&format!("COPY facts TO '{}' (FORMAT parquet)", parquet.display()), []).unwrap();
    let back: i64 = conn
        .query_row(&format!("SELECT sum(amount_minor)::BIGINT FROM read_parquet('{}')", parquet.display()), [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(back, sum);
    drop(conn);
    let _ = std::fs::remove_dir_all(&dir);
}
