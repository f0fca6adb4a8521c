//! Import and matching against a real PostgreSQL: a file is stored once by its SHA-256 (the same bytes again change
//! nothing), its lines read back as parsed, the rows refuse change, and the ledger's facts and the merchants'
//! plans are read for matching.

use tally_domain::Psp;
use tally_recon::store::{self, Imported};
use tally_recon::{reconcile, BreakKind, Rules};

const STRIPE: &str =
    "balance_transaction_id,created_utc,available_on_utc,currency,gross,fee,net,reporting_category,source_id,charge_id
txn_1,2026-06-01 10:00:00,2026-06-03 00:00:00,eur,100.00,3.20,96.80,charge,ch_1,ch_1
txn_2,2026-06-01 11:00:00,2026-06-03 00:00:00,eur,50.00,1.75,48.25,charge,ch_2,ch_2
txn_3,2026-06-01 12:00:00,2026-06-03 00:00:00,eur,9.00,0.56,8.44,charge,ch_9,ch_9
";

async fn fact(pool: &deadpool_postgres::Pool, charge: &str, minor: i64, offset: i64) {
    let client = pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO event_log (fact_key, kind, payment_id, psp, psp_reference, merchant_id, amount_minor, currency,
                occurred_at, received_at, source, source_event_id, topic, kafka_partition, kafka_offset, schema_id,
                processor_version, event)
             VALUES (gen_random_uuid(), 'captured', $1, 'stripe', $2, 'm1', $3, 'EUR', '2026-06-01 09:00:00+00',
                now(), 'webhook', 'evt', 'payments.capture.v1', 0, $4, 3, 'test', '{}')",
            &[&format!("stripe:{charge}"), &charge, &minor, &offset],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_report_is_stored_once_read_back_as_parsed_and_matched_against_the_ledger() {
    let (_, pool) = tally_testkit::database("recon_store").await;
    let options = tally_psp::stripe::report::Options { account: "acct_1".into(), ..Default::default() };
    let report = tally_psp::stripe::report::parse("june.csv", STRIPE.as_bytes(), &options).unwrap();
    assert!(matches!(store::import(&pool, &report).await.unwrap(), Imported::Stored { lines: 3, .. }));
    // The same bytes under another name: nothing changes.
    let again = tally_psp::stripe::report::parse("copy-of-june.csv", STRIPE.as_bytes(), &options).unwrap();
    match store::import(&pool, &again).await.unwrap() {
        Imported::AlreadyImported { as_name, .. } => assert_eq!(as_name, "june.csv"),
        other => panic!("{other:?}"),
    }
    let lines = store::lines(&pool).await.unwrap();
    assert_eq!(lines.iter().map(|l| l.line.clone()).collect::<Vec<_>>(), report.lines);
    assert!(lines.iter().all(|l| l.file == "june.csv" && l.file_sha256 == report.sha256));
    // What the PSPs said is append-only.
    let client = pool.get().await.unwrap();
    for sql in ["UPDATE report_lines SET fee_minor = 0", "DELETE FROM report_files", "TRUNCATE report_lines"] {
        let err = client.batch_execute(sql).await.unwrap_err();
        assert!(format!("{err:?}").contains("append-only"), "{sql}: {err:?}");
    }

    // The ledger booked ch_1 and ch_2 (ch_2 for 49.00); ch_9 it never saw. Plan: 2.9% + 30 cents.
    fact(&pool, "ch_1", 10_000, 1).await;
    fact(&pool, "ch_2", 4_900, 2).await;
    client
        .batch_execute(
            "INSERT INTO reference_versions (kind, content_hash, source, rows, changes) VALUES ('merchants', 'h', 't', 1, 1);
             INSERT INTO merchant_versions (merchant_id, valid_from, legal_name, country, mcc, settlement_currency,
                risk_tier, stripe_ppm, stripe_fixed_minor, adyen_ppm, adyen_fixed_minor, version_id)
             SELECT 'm1', '2025-01-01', 'M One', 'DE', '5999', 'EUR', 'low', 29000, 30, 12000, 10, version_id
               FROM reference_versions;",
        )
        .await
        .unwrap();
    let facts = store::facts(&pool, &[Psp::Stripe]).await.unwrap();
    assert_eq!(facts.len(), 2);
    let plans = store::plans(&pool).await.unwrap();
    let price = |m: &str, p: Psp, t| plans.price(m, p, t);
    let sla = |_: Psp| 2;
    let outcome = reconcile(&lines, &facts, &Rules { sla_days: &sla, price: &price });
    let kinds: Vec<(BreakKind, Option<&str>)> =
        outcome.breaks.iter().map(|b| (b.kind, b.payment_id.as_deref())).collect();
    assert_eq!(
        kinds,
        [(BreakKind::MissingInLedger, Some("stripe:ch_9")), (BreakKind::AmountMismatch, Some("stripe:ch_2"))]
    );
    let amount = outcome.breaks.iter().find(|b| b.kind == BreakKind::AmountMismatch).unwrap();
    assert_eq!(amount.fact.as_ref().map(|f| (f.topic.as_str(), f.offset)), Some(("payments.capture.v1", 2)));
    assert_eq!(amount.line.as_ref().map(|l| (l.file.as_str(), l.line)), Some(("june.csv", 3)));
    // ch_1: 2.9% of 100.00 + 0.30 = 3.20, as the line says: matched.
    let totals = &outcome.totals[&("stripe".to_owned(), "EUR".to_owned())];
    assert_eq!((totals.lines, totals.matched, totals.booked_minor, totals.settled_minor), (3, 1, 14_900, 15_900));
}
