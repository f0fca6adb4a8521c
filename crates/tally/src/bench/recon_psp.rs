//! `tally bench recon-psp`: the nightly PSP reconciliation (`tally recon psp`: load every report line, the
//! ledger's facts and the pricing plans from PostgreSQL, then match) over N report lines against N booked captures,
//! beside its baseline in the same run — the same join done as one SQL query (lines to facts by payment and
//! reference, counting the unmatched and the amount and fee differences). One line in 1,000 settles one minor unit
//! high, so both must report the same number of amount differences: the baseline checks the subject.
//!
//! The state is generated in a database of the run's own with `generate_series` (not through the importer: that
//! path is tested, this measures matching), and dropped at the end.
// Timings are seconds as f64; money is integer minor units throughout.
#![allow(clippy::float_arithmetic)]

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use tally_recon::BreakKind;

use crate::config::Config;

#[derive(Args)]
pub struct ReconPspArgs {
    /// Report lines (and booked captures) to match.
    #[arg(long, default_value_t = 1_000_000)]
    lines: i64,
    /// Timed passes of each (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(args: ReconPspArgs, config: Config) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let name = format!("tally_bench_recon_psp_{}", std::process::id());
        let db = super::database(&config.postgres, &name).await?;
        let pool = tally_postgres::pool(&db)?;
        let n = args.lines;
        println!("tally bench recon-psp: {n} Stripe settlement lines against {n} booked captures (1 in 1,000 off by one)");
        let built = Instant::now();
        let client = pool.get().await?;
        // Captures on Monday 2026-06-01, settled on Wednesday the 3rd (T+2), priced 2.9% + 30 cents.
        client
            .execute(
                "INSERT INTO event_log (fact_key, kind, payment_id, psp, psp_reference, merchant_id, amount_minor,
                    currency, occurred_at, received_at, source, source_event_id, topic, kafka_partition, kafka_offset,
                    schema_id, processor_version, event)
                 SELECT md5(i::text)::uuid, 'captured', 'stripe:ch_' || i, 'stripe', 'ch_' || i, 'm1', 1000 + i % 997,
                    'EUR', timestamptz '2026-06-01 00:00:00+00' + (i % 80000) * interval '1 second', now(), 'webhook',
                    'evt_' || i, 'payments.capture.v1', (i % 6)::int, i / 6, 3, 'bench', '{}'
                   FROM generate_series(1, $1::bigint) i",
                &[&n],
            )
            .await?;
        client
            .batch_execute(&format!(
                "INSERT INTO report_files (sha256, psp, name, account, lines, unknown_columns, unmapped)
                 VALUES (repeat('0', 64), 'stripe', 'bench.csv', 'platform', {n}, '{{}}', '{{}}');
                 INSERT INTO report_lines (file_sha256, line, psp, kind, category, account, line_id, payment_reference,
                    modification_reference, gross_minor, gross_currency, fee_minor, net_minor, net_currency, booked_at,
                    settled_at)
                 SELECT repeat('0', 64), i + 1, 'stripe', 'settled', 'charge', 'platform', 'txn_' || i, 'ch_' || i,
                    'ch_' || i, g, 'EUR', f, g - f, 'EUR', timestamptz '2026-06-01 00:00:00+00' + (i % 80000) * interval '1 second',
                    timestamptz '2026-06-03 00:00:00+00'
                   FROM (SELECT i, a + (CASE WHEN i % 1000 = 0 THEN 1 ELSE 0 END) AS g, (a * 29000 + 500000) / 1000000 + 30 AS f
                           FROM (SELECT i, 1000 + i % 997 AS a FROM generate_series(1, {n}) i) x) y;
                 INSERT INTO reference_versions (kind, content_hash, source, rows, changes) VALUES ('merchants', 'b', 'bench', 1, 1);
                 INSERT INTO merchant_versions (merchant_id, valid_from, legal_name, country, mcc, settlement_currency,
                    risk_tier, stripe_ppm, stripe_fixed_minor, adyen_ppm, adyen_fixed_minor, version_id)
                 SELECT 'm1', '2025-01-01', 'Bench', 'DE', '5999', 'EUR', 'low', 29000, 30, 12000, 10, version_id
                   FROM reference_versions;
                 ANALYZE event_log; ANALYZE report_lines;"
            ))
            .await?;
        println!("state    : built in {:.1} s", built.elapsed().as_secs_f64());
        let expected_off = n / 1000;

        let (mut tally_secs, mut found) = (Vec::new(), 0);
        for _ in 0..args.runs {
            let started = Instant::now();
            let outcome = crate::reports::reconcile(&pool, &crate::reports::PspReconArgs::default()).await?;
            tally_secs.push(started.elapsed().as_secs_f64());
            found = outcome.count(BreakKind::AmountMismatch);
            anyhow::ensure!(
                outcome.breaks.len() == found,
                "only amount differences were planted, found {:?}",
                BreakKind::ALL.map(|k| (k.as_str(), outcome.count(k)))
            );
        }
        let (mut sql_secs, mut sql_found) = (Vec::new(), 0i64);
        for _ in 0..args.runs {
            let started = Instant::now();
            let row = client
                .query_one(
                    "SELECT count(*) FILTER (WHERE e.fact_key IS NULL),
                            count(*) FILTER (WHERE e.amount_minor <> abs(l.gross_minor)),
                            count(*) FILTER (WHERE e.amount_minor = abs(l.gross_minor)
                                AND l.fee_minor <> (e.amount_minor * m.stripe_ppm + 500000) / 1000000 + m.stripe_fixed_minor)
                       FROM report_lines l
                       LEFT JOIN event_log e ON e.payment_id = l.psp || ':' || l.payment_reference
                            AND e.psp_reference = l.modification_reference AND e.kind = 'captured'
                       LEFT JOIN dim_merchant m ON m.merchant_id = e.merchant_id",
                    &[],
                )
                .await?;
            sql_secs.push(started.elapsed().as_secs_f64());
            let (missing, off, fees): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
            anyhow::ensure!(missing == 0 && fees == 0, "baseline: {missing} unmatched, {fees} fee differences");
            sql_found = off;
        }
        drop(client);
        drop(pool);
        super::drop_database(&config.postgres, &name).await?;
        anyhow::ensure!(
            found as i64 == expected_off && sql_found == expected_off,
            "planted {expected_off} amount differences: recon found {found}, the SQL baseline {sql_found}"
        );
        let (t, s) = (median(tally_secs.clone()), median(sql_secs.clone()));
        println!(
            "recon psp: {t:>7.2} s median of {:?} (load lines, facts and plans, then match; {found} amount breaks)",
            tally_secs.iter().map(|x| (x * 100.0).round() / 100.0).collect::<Vec<_>>()
        );
        println!(
            "one SQL  : {s:>7.2} s median of {:?} (the same join and checks as one query; {sql_found} differences)",
            sql_secs.iter().map(|x| (x * 100.0).round() / 100.0).collect::<Vec<_>>()
        );
        println!("ratio    : recon/SQL {:.2}×; goal < 30 s for {n} lines: {}", t / s, if t < 30.0 { "met" } else { "NOT met" });
        Ok(ExitCode::SUCCESS)
    })
}
