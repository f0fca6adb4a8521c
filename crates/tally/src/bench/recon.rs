//! `tally bench recon`: a full completeness pass over an archive and a ledger of N events (default 10M), beside its
//! baseline in the same run — the same pass comparing every range offset by offset (every Parquet file and every
//! ledger row read) instead of by checksum.
//!
//! The state is built once, directly (not through the broker: 10M records would take the local broker most of an
//! hour): Parquet files written by the archive's own encoder with the default flush size, their manifest rows, the
//! ledger's event log and journals (COPY), and both sinks' offsets. The log's watermarks are given to recon as the
//! generated ends — the only part of a pass that would ask the broker, two numbers per partition. Later runs reuse
//! the state (`--rebuild` to start over).
// Timings are seconds as f64; money is nowhere near this module.
#![allow(clippy::float_arithmetic)]

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use futures::SinkExt;
use tally_archive::recon::{completeness, LogView, ReconError, ReconOptions};
use tally_archive::{encode, LogRecord, Objects};
use tally_contracts::encode_payment_event;
use tally_domain::{Attributes, EventKind, PaymentEvent, Psp, Source, Timestamp};
use tally_kafka::{KafkaConfig, Watermarks, TOPICS};
use tally_money::{Amount, Currency, Money};
use tally_postgres::PostgresConfig;

use crate::config::Config;

#[derive(Args)]
pub struct ReconArgs {
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Timed passes of the checksum pass (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Build the state again even if a previous run left one of this size.
    #[arg(long)]
    rebuild: bool,
    /// Where the benchmark's archive goes.
    #[arg(long, default_value = ".tally/bench/recon-archive")]
    archive: String,
}

const DATABASE: &str = "tally_bench_recon";
const LEDGER_GROUP: &str = "bench-ledger";
const ARCHIVE_GROUP: &str = "bench-archive";
const PER_FILE: u64 = 100_000;

/// The generated log: every partition of the ledger's topics, events spread evenly.
struct GeneratedLog {
    ends: Vec<(String, i32, i64)>,
}

impl LogView for GeneratedLog {
    fn watermarks(&self, topic: &str) -> Result<Option<Vec<Watermarks>>, ReconError> {
        let marks: Vec<Watermarks> = self
            .ends
            .iter()
            .filter(|(t, ..)| t == topic)
            .map(|(_, p, high)| Watermarks { partition: *p, low: 0, high: *high })
            .collect();
        Ok((!marks.is_empty()).then_some(marks))
    }
}

fn event(topic_kind: EventKind, partition: i32, offset: i64) -> PaymentEvent {
    let payment = format!("pi_{partition}_{offset}");
    PaymentEvent {
        kind: topic_kind,
        payment_id: format!("stripe:{payment}"),
        psp: Psp::Stripe,
        psp_reference: payment.clone(),
        original_reference: None,
        merchant_id: format!("m_{}", offset % 997),
        money: Money::new(Amount::from_minor(100 + offset % 10_000), Currency::from_code("EUR").expect("EUR")),
        fee: None,
        occurred_at: Timestamp::from_unix_secs(1_760_000_000 + offset).expect("in range"),
        received_at: Timestamp::from_unix_secs(1_760_000_100 + offset).expect("in range"),
        source: Source::Webhook,
        source_event_id: format!("evt_{payment}"),
        attributes: Attributes::default(),
    }
}

/// One kind per ledger topic (what the topic carries).
fn kind_of(topic: &str) -> Option<EventKind> {
    Some(match topic {
        "payments.authorization.v1" => EventKind::Authorized,
        "payments.capture.v1" => EventKind::Captured,
        "payments.refund.v1" => EventKind::Refunded,
        "payments.chargeback.v1" => EventKind::ChargebackOpened,
        "payments.settlement-report.v1" => EventKind::Payout,
        _ => return None,
    })
}

pub fn run(args: ReconArgs, config: Config) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let kafka = KafkaConfig { topic_prefix: "bench.".into(), ..config.kafka.clone() };
        let url =
            format!("{}/{DATABASE}", config.postgres.url.rsplit_once('/').context("database url has no /database")?.0);
        let postgres = PostgresConfig { url, ..config.postgres.clone() };
        let prefixed = &kafka;
        let partitions: Vec<(String, EventKind, i32)> = TOPICS
            .iter()
            .filter_map(|t| kind_of(t.name).map(|k| (t.name, k, t.partitions)))
            .flat_map(|(name, kind, n)| (0..n).map(move |p| (prefixed.topic(name), kind, p)))
            .collect();
        let per_partition = args.events.div_ceil(partitions.len() as u64) as i64;
        let ends: Vec<(String, i32, i64)> = partitions.iter().map(|(t, _, p)| (t.clone(), *p, per_partition)).collect();
        let total = per_partition * partitions.len() as i64;

        let admin = tally_postgres::pool(&config.postgres)?;
        let exists =
            admin.get().await?.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&DATABASE]).await?.is_some();
        let mut reuse = exists && !args.rebuild;
        if reuse {
            let pool = tally_postgres::pool(&postgres)?;
            let n: i64 = pool
                .get()
                .await?
                .query_one("SELECT coalesce(sum(records), 0)::bigint FROM archive_files", &[])
                .await?
                .get(0);
            reuse = n == total && std::path::Path::new(&args.archive).exists();
        }
        if !reuse {
            println!(
                "tally bench recon: building {total} events ({} partitions × {per_partition}) …",
                partitions.len()
            );
            let started = Instant::now();
            let admin = admin.get().await?;
            admin.batch_execute(&format!("DROP DATABASE IF EXISTS {DATABASE}")).await?;
            admin.batch_execute(&format!("CREATE DATABASE {DATABASE}")).await?;
            let _ = std::fs::remove_dir_all(&args.archive);
            build(&postgres, &args.archive, &partitions, per_partition).await?;
            println!("  built in {:.0} s", started.elapsed().as_secs_f64());
        } else {
            println!("tally bench recon: reusing {total} events in database {DATABASE} and {}", args.archive);
        }

        let pool = tally_postgres::pool(&postgres)?;
        let objects = Objects::open(&args.archive)?;
        let log = GeneratedLog { ends };
        let options = ReconOptions {
            ledger_group: LEDGER_GROUP.into(),
            ledger_topics: partitions.iter().map(|(t, ..)| t.clone()).collect(),
            archive_group: ARCHIVE_GROUP.into(),
            parallelism: 2,
            full_compare: false,
        };
        let mut times = Vec::new();
        for i in 0..args.runs.max(1) {
            let started = Instant::now();
            let report = completeness(&log, &kafka, &pool, &objects, &options).await?;
            let secs = started.elapsed().as_secs_f64();
            anyhow::ensure!(report.clean, "the generated state must reconcile clean:\n{}", report.render());
            anyhow::ensure!(
                report.archived_records == total && report.ledger_rows == total,
                "counts: {}",
                report.render()
            );
            // A clean state agrees by checksums alone (key and money sums): a drilled range is a pass that measured
            // the slow path, or checksums that disagree between the archive and PostgreSQL.
            anyhow::ensure!(
                report.ranges_drilled == 0,
                "{} ranges were read offset by offset in a clean state",
                report.ranges_drilled
            );
            println!(
                "  checksum pass {}: {secs:.2} s ({} ranges, none drilled, {} records archived, {} ledger rows)",
                i + 1,
                report.ranges_compared,
                report.archived_records,
                report.ledger_rows
            );
            times.push(secs);
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let started = Instant::now();
        let full = completeness(&log, &kafka, &pool, &objects, &ReconOptions { full_compare: true, ..options.clone() })
            .await?;
        let baseline = started.elapsed().as_secs_f64();
        anyhow::ensure!(full.clean, "the offset-by-offset pass must agree:\n{}", full.render());
        println!(
            "recon     : median {median:.2} s for a full completeness pass over {total} events ({} runs)",
            times.len()
        );
        println!("baseline  : {baseline:.2} s comparing every range offset by offset");
        println!(
            "ratio     : {:.1}× faster than the baseline; goal < 30 s: {}",
            baseline / median,
            if median < 30.0 { "met" } else { "NOT met" }
        );
        Ok(ExitCode::SUCCESS)
    })
}

async fn build(
    postgres: &PostgresConfig,
    archive: &str,
    partitions: &[(String, EventKind, i32)],
    per_partition: i64,
) -> Result<()> {
    let pool = tally_postgres::pool(postgres)?;
    tally_postgres::migrate(&pool).await?;
    let objects = Objects::open(archive)?;
    let client = pool.get().await?;
    // Loading is faster with the indexes built afterwards (the same definitions as the migration).
    client
        .batch_execute(
            "ALTER TABLE journals DROP CONSTRAINT journals_fact_key_fkey;
             ALTER TABLE journals DROP CONSTRAINT journals_fact_key_key;
             ALTER TABLE event_log DROP CONSTRAINT event_log_pkey;
             ALTER TABLE event_log DROP CONSTRAINT event_log_topic_kafka_partition_kafka_offset_key;
             DROP INDEX event_log_payment;",
        )
        .await?;
    for (topic, kind, partition) in partitions {
        let bare = topic.trim_start_matches("bench.");
        let mut start = 0i64;
        while start < per_partition {
            let end = (start + PER_FILE as i64).min(per_partition);
            let mut records = Vec::with_capacity((end - start) as usize);
            let (mut events, mut journals) = (String::new(), String::new());
            for offset in start..end {
                let e = event(*kind, *partition, offset);
                let key = e.fact_key().0;
                records.push(LogRecord {
                    topic: topic.clone(),
                    partition: *partition,
                    offset,
                    timestamp_ms: Some(1_763_700_000_000 + offset),
                    key: Some(e.payment_id.as_bytes().to_vec()),
                    value: Some(encode_payment_event(&e, None)?),
                    headers: Vec::new(),
                });
                events.push_str(&format!(
                    "{key}\t{}\t{}\tstripe\t{}\t{}\t{}\tEUR\t2025-10-09 08:53:20+00\t2025-10-09 08:55:00+00\twebhook\t{}\t{topic}\t{partition}\t{offset}\t1\tbench\t{{}}\n",
                    kind.as_str(), e.payment_id, e.psp_reference, e.merchant_id, e.money.amount.minor(), e.source_event_id
                ));
                journals.push_str(&format!("{key}\t{}\t{}\n", e.payment_id, kind.as_str()));
            }
            let file = encode(&records)?;
            objects.put(&file.path, file.bytes.clone()).await?;
            tally_archive::manifest::insert_file(&client, &file, 1, "bench").await?;
            for (table, data) in [
                ("event_log (fact_key, kind, payment_id, psp, psp_reference, merchant_id, amount_minor, currency, occurred_at, received_at, source, source_event_id, topic, kafka_partition, kafka_offset, schema_id, processor_version, event)", events),
                ("journals (fact_key, payment_id, kind)", journals),
            ] {
                let sink = client.copy_in(&format!("COPY {table} FROM STDIN")).await?;
                futures::pin_mut!(sink);
                sink.send(bytes::Bytes::from(data)).await?;
                sink.finish().await?;
            }
            start = end;
        }
        for group in [LEDGER_GROUP, ARCHIVE_GROUP] {
            client
                .execute(
                    "INSERT INTO sink_offsets (group_id, topic, kafka_partition, next_offset, owner_epoch) VALUES ($1, $2, $3, $4, 1)",
                    &[&group, &topic, partition, &per_partition],
                )
                .await?;
        }
        println!("  {bare}[{partition}]: {per_partition} events");
    }
    // One statement at a time: VACUUM cannot run in the implicit transaction of a multi-statement query.
    for sql in [
        "ALTER TABLE event_log ADD PRIMARY KEY (fact_key)",
        "ALTER TABLE event_log ADD UNIQUE (topic, kafka_partition, kafka_offset)",
        "CREATE INDEX event_log_payment ON event_log (payment_id)",
        "ALTER TABLE journals ADD UNIQUE (fact_key)",
        "ALTER TABLE journals ADD FOREIGN KEY (fact_key) REFERENCES event_log (fact_key)",
        "VACUUM ANALYZE event_log",
        "VACUUM ANALYZE journals",
    ] {
        client.batch_execute(sql).await?;
    }
    Ok(())
}
