//! Reference loads on the real PostgreSQL: the simulator-style merchant file and the ECB's published files become
//! versions; the same content again changes nothing; a later file closes and opens versions; a refused file loads
//! nothing at all; and the stored rows are append-only.

use std::path::PathBuf;

use tally_warehouse::reference::{load_fx, load_merchants, merchant_dimension, LoadError};

const HEADER: &str = "merchant_id,valid_from,valid_to,legal_name,country,mcc,settlement_currency,risk_tier,stripe_percent,stripe_fixed_minor,adyen_percent,adyen_fixed_minor";

fn csv(rows: &[&str]) -> Vec<u8> {
    format!("{HEADER}\n{}\n", rows.join("\n")).into_bytes()
}

fn ecb(name: &str) -> Vec<u8> {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    std::fs::read(PathBuf::from(dir).join("../../../../shared/fixtures/data/ecb").join(name)).unwrap()
}

async fn count(pool: &deadpool_postgres::Pool, sql: &str) -> i64 {
    pool.get().await.unwrap().query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merchant_loads_are_versions_that_close_and_open_and_never_half_load() {
    let (_, pool) = tally_testkit::database("tally_ref_").await;
    let first = csv(&[
        "acct_a,2025-01-01,,Alpha GmbH,DE,5411,EUR,low,2.9,30,1.75,10",
        "acct_b,2025-01-01,,Beta SA,FR,5812,EUR,medium,2.9,30,1.5,10",
    ]);
    let l = load_merchants(&pool, "test", "first.csv", &first).await.unwrap();
    assert_eq!((l.rows, l.changes, l.already_loaded), (2, 2, false));
    let again = load_merchants(&pool, "test", "first-copy.csv", &first).await.unwrap();
    assert_eq!((again.version_id, again.changes, again.already_loaded), (l.version_id, 0, true));

    // acct_a changes tier on 2026-06-01: its version closes that day, the new one opens.
    let later = csv(&["acct_a,2026-06-01,,Alpha GmbH,DE,5411,EUR,high,2.9,30,1.75,10"]);
    let l2 = load_merchants(&pool, "test", "later.csv", &later).await.unwrap();
    assert_eq!((l2.changes, l2.already_loaded), (2, false));
    let dim = merchant_dimension(&pool.get().await.unwrap()).await.unwrap();
    let a: Vec<_> = dim.iter().filter(|v| v.merchant_id == "acct_a").collect();
    assert_eq!(a.len(), 2);
    assert_eq!(a[0].valid_to, Some(time::macros::date!(2026 - 06 - 01)));
    assert_eq!((a[1].risk_tier.as_str(), a[1].valid_to), ("high", None));

    // A file with one bad line and one good one: refused whole, with the line and column; nothing of it stored.
    let bad = csv(&[
        "acct_c,2025-01-01,,Gamma,DE,5411,EUR,low,2.9,30,1.75,10",
        "acct_d,2025-01-01,,Delta,DE,0000,EUR,low,2.9,30,1.75,10",
    ]);
    match load_merchants(&pool, "test", "bad.csv", &bad).await {
        Err(LoadError::Refused { refused, .. }) => {
            assert_eq!((refused.errors[0].line, refused.errors[0].column.as_deref()), (3, Some("mcc")), "{refused}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // A file that would rewrite acct_b's history: refused whole.
    let rewrite = csv(&["acct_b,2025-01-01,,Beta SA,FR,5812,EUR,high,2.9,30,1.5,10"]);
    assert!(matches!(load_merchants(&pool, "test", "rewrite.csv", &rewrite).await, Err(LoadError::History { .. })));
    assert_eq!(count(&pool, "SELECT count(*) FROM merchant_versions").await, 3);
    assert_eq!(count(&pool, "SELECT count(*) FROM reference_versions").await, 2);
    // Append-only: the dimension's rows cannot be edited behind the loader's back.
    let client = pool.get().await.unwrap();
    assert!(client.execute("UPDATE merchant_versions SET risk_tier = 'low'", &[]).await.is_err());
    assert!(client.execute("DELETE FROM merchant_version_ends", &[]).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ecb_files_load_as_published_and_again_change_nothing() {
    let (_, pool) = tally_testkit::database("tally_fx_").await;
    let hist = load_fx(&pool, "test", "eurofxref-hist.zip", &ecb("eurofxref-hist.zip")).await.unwrap();
    assert!(hist.rows > 150_000, "{hist:?}");
    assert_eq!(count(&pool, "SELECT count(*) FROM fx_rates").await, hist.rows);
    let again = load_fx(&pool, "test", "copy.zip", &ecb("eurofxref-hist.zip")).await.unwrap();
    assert!(again.already_loaded && again.version_id == hist.version_id);
    let daily = load_fx(&pool, "test", "eurofxref.csv", &ecb("eurofxref.csv")).await.unwrap();
    assert_ne!(daily.version_id, hist.version_id);
    // The daily file's USD for 2026-10-30 is the history's, stored exactly: 1.1172 = 11172 × 10^-4.
    let rows = pool
        .get()
        .await
        .unwrap()
        .query("SELECT DISTINCT mantissa, scale FROM fx_rates WHERE currency = 'USD' AND rate_date = '2026-10-30'", &[])
        .await
        .unwrap();
    let got: Vec<(i64, i16)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, [(11172, 4)]);
    // A zip that is not the ECB's: refused.
    let mut broken = ecb("eurofxref-hist.zip");
    broken.truncate(1000);
    assert!(matches!(
        load_fx(&pool, "test", "broken.zip", &broken).await,
        Err(LoadError::Zip(..) | LoadError::Refused { .. })
    ));
}

/// The same dimension as Parquet (written by DuckDB from the CSV, its columns in another order, the percentages as
/// decimals): the same versions, named by the Parquet file's own hash; a Parquet file missing a column is refused
/// with the column's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parquet_dimension_loads_like_its_csv_and_is_refused_like_it() {
    let rows = csv(&[
        "acct_p,2025-01-01,2026-06-01,\"Pea, Ltd\",DE,5411,EUR,low,2.9,30,1.75,10",
        "acct_p,2026-06-01,,\"Pea, Ltd\",DE,5411,EUR,high,2.9,30,1.75,10",
        "acct_q,2025-03-01,,Queue SA,FR,5812,EUR,medium,1.4,25,1.2,11",
    ]);
    let dir = std::env::temp_dir().join(format!("tally-ref-parquet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (csv_path, parquet_path, partial_path) =
        (dir.join("m.csv"), dir.join("m.parquet"), dir.join("partial.parquet"));
    std::fs::write(&csv_path, &rows).unwrap();
    let conn = tally_duckdb::duckdb::Connection::open_in_memory().unwrap();
    conn.execute_batch(&format!(
        "COPY (SELECT adyen_fixed_minor, merchant_id, valid_from, valid_to, legal_name, country, CAST(mcc AS VARCHAR) AS mcc,
                      settlement_currency, risk_tier, CAST(stripe_percent AS DECIMAL(6, 3)) AS stripe_percent,
                      stripe_fixed_minor, CAST(adyen_percent AS DECIMAL(6, 3)) AS adyen_percent
                 FROM read_csv('{csv}', header = true, types = {{'mcc': 'VARCHAR', 'valid_to': 'DATE'}}))
           TO '{parquet}' (FORMAT PARQUET);
         COPY (SELECT merchant_id, valid_from FROM read_csv('{csv}', header = true)) TO '{partial}' (FORMAT PARQUET);",
        csv = csv_path.display(),
        parquet = parquet_path.display(),
        partial = partial_path.display()
    ))
    .unwrap();
    let (_, from_csv) = tally_testkit::database("tally_refpq_").await;
    let (_, from_parquet) = tally_testkit::database("tally_refpq_").await;
    let a = load_merchants(&from_csv, "test", "m.csv", &rows).await.unwrap();
    let parquet = std::fs::read(&parquet_path).unwrap();
    let b = load_merchants(&from_parquet, "test", "m.parquet", &parquet).await.unwrap();
    assert_eq!((a.rows, a.changes), (b.rows, b.changes));
    assert_eq!(b.content_hash, tally_reference::content_hash(&parquet), "the version is the Parquet file's hash");
    let dim =
        |pool: deadpool_postgres::Pool| async move { merchant_dimension(&pool.get().await.unwrap()).await.unwrap() };
    assert_eq!(dim(from_csv).await, dim(from_parquet.clone()).await);
    match load_merchants(&from_parquet, "test", "partial.parquet", &std::fs::read(&partial_path).unwrap()).await {
        Err(LoadError::Refused { refused, .. }) => {
            let columns: Vec<_> = refused.errors.iter().filter_map(|e| e.column.as_deref()).collect();
            assert!(columns.contains(&"legal_name") && columns.contains(&"valid_to"), "{:?}", refused.errors)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}
