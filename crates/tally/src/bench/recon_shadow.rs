//! `tally bench recon-shadow`: how long after its evidence `tally recon shadow` records a break (goal: p99 < 1 s),
//! on a database holding N captures and a report settling half of them, beside the baseline of the same evidence
//! waiting for a nightly run (one full `reconcile` over the same lines and facts, the least it can take).
//!
//! Evidence, one after the other: a report file of `--lines` lines for captures still open, one of them a minor
//! unit high and one for a payment no delivery stated → both breaks recorded (measured in the database's clock:
//! the breaks' `first_seen` after the file's `imported_at`); then the missing capture produced → the
//! `missing_in_ledger` break resolved `auto` (measured from the produce's acknowledgement). The state is generated
//! with `generate_series` in a database of the run's own and dropped at the end.
// Timings are seconds as f64; money is integer minor units throughout.
#![allow(clippy::float_arithmetic)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use tally_domain::{Attributes, EventKind, PaymentEvent, Psp, Source, Timestamp};
use tally_kafka::{Header, KafkaConfig, Producer};
use tally_money::{Amount, Currency, Money};

use crate::config::Config;

#[derive(Args)]
pub struct ReconShadowArgs {
    /// Captures in the shadow's state (half of them settled by a report already there).
    #[arg(long, default_value_t = 100_000)]
    captures: i64,
    /// Evidence files to import, one after the other.
    #[arg(long, default_value_t = 40)]
    files: usize,
    /// Lines per evidence file.
    #[arg(long, default_value_t = 200)]
    lines: usize,
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn capture(i: i64) -> PaymentEvent {
    let at = Timestamp::from_unix_secs(1_780_272_000 + i % 80_000).expect("in range");
    PaymentEvent {
        kind: EventKind::Captured,
        payment_id: format!("stripe:ch_{i}"),
        psp: Psp::Stripe,
        psp_reference: format!("ch_{i}"),
        original_reference: None,
        merchant_id: "m1".into(),
        money: Money::new(Amount::from_minor(1000 + i % 997), Currency::from_code("EUR").expect("EUR")),
        fee: None,
        occurred_at: at,
        received_at: at,
        source: Source::Webhook,
        source_event_id: format!("evt_{i}"),
        attributes: Attributes::default(),
    }
}

fn major(minor: i64) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}

pub fn run(args: ReconShadowArgs, config: Config) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let name = format!("tally_bench_recon_shadow_{}", std::process::id());
        let db = super::database(&config.postgres, &name).await?;
        let pool = tally_postgres::pool(&db)?;
        let n = args.captures;
        println!(
            "tally bench recon-shadow: {n} captures, half settled; {} evidence files of {} lines, then the missing capture",
            args.files, args.lines
        );
        let built = Instant::now();
        let client = pool.get().await?;
        // Captures on Monday 2026-06-01 (due Wednesday the 3rd); the reports reach Tuesday the 2nd, so nothing is
        // overdue and the coverage never moves (each file would otherwise match every open payment again).
        client
            .batch_execute(&format!(
                "INSERT INTO shadow_facts (fact_key, kind, psp, payment_id, psp_reference, merchant_id, amount_minor,
                    currency, occurred_at, topic, kafka_partition, kafka_offset)
                 SELECT md5(i::text)::uuid, 'captured', 'stripe', 'stripe:ch_' || i, 'ch_' || i, 'm1', 1000 + i % 997,
                    'EUR', timestamptz '2026-06-01 00:00:00+00' + (i % 80000) * interval '1 second', 'bench', 0, i
                   FROM generate_series(1, {n}) i;
                 INSERT INTO report_files (sha256, psp, name, account, lines, unknown_columns, unmapped)
                 VALUES (repeat('0', 64), 'stripe', 'base.csv', 'platform', {half}, '{{}}', '{{}}');
                 INSERT INTO report_lines (file_sha256, line, psp, kind, category, account, line_id, payment_reference,
                    modification_reference, gross_minor, gross_currency, fee_minor, net_minor, net_currency, booked_at,
                    settled_at)
                 SELECT repeat('0', 64), i + 1, 'stripe', 'settled', 'charge', 'platform', 'txn_' || i, 'ch_' || i,
                    'ch_' || i, 1000 + i % 997, 'EUR', 0, 1000 + i % 997, 'EUR',
                    timestamptz '2026-06-01 00:00:00+00' + (i % 80000) * interval '1 second', timestamptz '2026-06-02 00:00:00+00'
                   FROM generate_series(1, {half}) i;
                 ANALYZE shadow_facts; ANALYZE report_lines;",
                half = n / 2
            ))
            .await?;
        println!("state    : built in {:.1} s", built.elapsed().as_secs_f64());

        // The nightly baseline: one full run over the same lines and facts.
        let started = Instant::now();
        let lines = tally_recon::store::lines(&pool).await?;
        let payments: Vec<String> = (1..=n).map(|i| format!("stripe:ch_{i}")).collect();
        let facts = tally_recon::store::shadow_facts(&pool, &payments).await?;
        let sla = |_: Psp| 2;
        let price = |_: &str, _: Psp, _| None;
        let nightly = tally_recon::reconcile(&lines, &facts, &tally_recon::Rules { sla_days: &sla, price: &price, scope: None, tolerances: &tally_recon::NO_TOLERANCE });
        let nightly_secs = started.elapsed().as_secs_f64();
        anyhow::ensure!(nightly.breaks.is_empty(), "the base state has breaks: {:?}", nightly.breaks.first());

        let kafka = KafkaConfig { topic_prefix: format!("bench-shadow-{}.", std::process::id()), ..config.kafka.clone() };
        tally_kafka::ensure_topics(&kafka, tally_kafka::TOPICS).await?;
        let producer = Producer::new(&kafka)?;
        let shutdown = tokio_util::sync::CancellationToken::new();
        let shadow_config = tally_recon::shadow::ShadowConfig {
            group_id: format!("bench-shadow-{}", std::process::id()),
            listen: "127.0.0.1:0".into(),
            ..Default::default()
        };
        let started = Instant::now();
        let service = tokio::spawn(tally_recon::shadow::run(shadow_config, kafka.clone(), db.clone(), shutdown.clone()));

        let (mut file_secs, mut fact_secs) = (Vec::new(), Vec::new());
        let mut next = n / 2 + 1;
        for f in 0..args.files {
            let ghost = n + 1 + f as i64;
            let mut csv = String::from(
                "balance_transaction_id,created_utc,available_on_utc,currency,gross,fee,net,reporting_category,source_id,charge_id\n",
            );
            for k in 0..args.lines {
                let (i, last) = (next, k + 1 == args.lines);
                let (id, amount) = if last { (ghost, 1000 + ghost % 997) } else { (i, 1000 + i % 997 + i64::from(k == 0)) };
                if !last {
                    next += 1;
                }
                csv.push_str(&format!(
                    "txn_e{f}_{k},2026-06-01 12:00:00,2026-06-02 00:00:00,eur,{m},0.00,{m},charge,ch_{id},ch_{id}\n",
                    m = major(amount)
                ));
            }
            let report = tally_psp::stripe::report::parse(&format!("evidence_{f}.csv"), csv.as_bytes(), &Default::default())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            tally_recon::store::import(&pool, &report).await?;
            // Both breaks of the file, recorded after the file was.
            let deadline = Instant::now() + Duration::from_secs(120);
            let latency = loop {
                let row = client
                    .query_one(
                        "SELECT count(*), extract(epoch FROM max(b.first_seen) - min(f.imported_at))::float8
                           FROM recon_breaks b JOIN report_files f ON f.sha256 = b.file_sha256 WHERE b.file_sha256 = $1",
                        &[&report.sha256],
                    )
                    .await?;
                if row.get::<_, i64>(0) >= 2 {
                    break row.get::<_, f64>(1);
                }
                anyhow::ensure!(Instant::now() < deadline, "file {f}: its breaks were not recorded within 120 s");
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            // The first file also waits for the shadow's start (its first pass over every payment).
            if f == 0 {
                println!("start    : first file's breaks {:.2} s after start (the first pass matches all {n} payments)", started.elapsed().as_secs_f64());
            } else {
                file_secs.push(latency);
            }
            // The missing capture arrives: the break is resolved.
            let e = capture(ghost);
            let key = e.fact_key().to_string();
            let value = tally_contracts::encode_payment_event(&e, None)?;
            let topic = kafka.topic(tally_kafka::topic_for(e.kind));
            producer.send(&topic, e.payment_id.as_bytes(), &value, &[Header { key: "fact_key", value: key.as_bytes() }]).await?;
            let acked = Instant::now();
            loop {
                let cleared: i64 = client
                    .query_one(
                        "SELECT count(*) FROM recon_breaks b JOIN recon_resolutions r ON r.break_id = b.break_id
                          WHERE b.payment_id = $1 AND b.kind = 'missing_in_ledger'",
                        &[&e.payment_id],
                    )
                    .await?
                    .get(0);
                if cleared == 1 {
                    break;
                }
                anyhow::ensure!(acked.elapsed() < Duration::from_secs(120), "file {f}: the ghost's break was not cleared");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            fact_secs.push(acked.elapsed().as_secs_f64());
        }
        let open: i64 = client
            .query_one(
                "SELECT count(*) FROM recon_breaks b WHERE NOT EXISTS
                    (SELECT 1 FROM recon_resolutions r WHERE r.break_id = b.break_id)",
                &[],
            )
            .await?
            .get(0);
        shutdown.cancel();
        service.await??;
        drop(client);
        drop(pool);
        super::drop_database(&config.postgres, &name).await?;
        anyhow::ensure!(open == args.files as i64, "one amount break per file stays open, found {open}");
        let line = |label: &str, v: &[f64]| {
            println!(
                "{label}: p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} samples)",
                percentile(v, 0.5) * 1000.0,
                percentile(v, 0.95) * 1000.0,
                percentile(v, 0.99) * 1000.0,
                percentile(v, 1.0) * 1000.0,
                v.len()
            )
        };
        line("file → breaks   ", &file_secs);
        line("fact → cleared  ", &fact_secs);
        println!("nightly baseline: {nightly_secs:.2} s for one full run over the same {} lines and {} facts", lines.len(), facts.len());
        let worst = percentile(&file_secs, 0.99).max(percentile(&fact_secs, 0.99));
        println!("goal p99 < 1 s  : {}", if worst < 1.0 { "met" } else { "NOT met" });
        Ok(ExitCode::SUCCESS)
    })
}
