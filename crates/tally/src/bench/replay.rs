//! `tally bench replay`: a replay plan over an unchanged scope of N archived events (default 1M), beside its
//! baseline in the same run — reading the same Parquet rows from the archive with no decoding, recomputing or
//! comparing. Two plans are timed: the ledger's side alone, and the ledger's and the warehouse's together.
//!
//! The state is built once (later runs reuse it; `--rebuild` starts over), without the broker: Parquet files
//! written by the archive's own encoder and their manifest rows; the same records booked by the real ledger sink
//! (its memory source: claims, fences, commits) and landed by the real warehouse sink into a DuckDB file.
// Timings are seconds as f64; money is nowhere near this module.
#![allow(clippy::float_arithmetic)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use tally_archive::{encode, LogRecord, Objects};
use tally_contracts::encode_payment_event;
use tally_domain::{Attributes, EventKind, PaymentEvent, Psp, Source, Timestamp};
use tally_kafka::{topic_for, Producer, TOPICS};
use tally_money::{Amount, Currency, Money};
use tally_postgres::PostgresConfig;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

#[derive(Args)]
pub struct ReplayArgs {
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Timed plans of each kind (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Build the state again even if a previous run left one of this size.
    #[arg(long)]
    rebuild: bool,
    /// Where the benchmark's archive and warehouse file go.
    #[arg(long, default_value = ".tally/bench/replay")]
    dir: PathBuf,
}

const DATABASE: &str = "tally_bench_replay";
const PER_FILE: usize = 100_000;

/// Event `i`: authorizations and captures (a capture posts two legs, an authorization none) of 50 merchants over
/// 30 days, on the authorization and capture topics' partitions.
fn event(i: u64) -> PaymentEvent {
    let payment = format!("pi_{}", i / 2);
    let kind = if i.is_multiple_of(2) { EventKind::Authorized } else { EventKind::Captured };
    PaymentEvent {
        kind,
        payment_id: format!("stripe:{payment}"),
        psp: Psp::Stripe,
        psp_reference: payment.clone(),
        original_reference: None,
        merchant_id: format!("m_{}", (i / 2) % 50),
        money: Money::new(Amount::from_minor(100 + (i / 2 % 10_000) as i64), Currency::from_code("EUR").expect("EUR")),
        fee: None,
        occurred_at: Timestamp::from_unix_secs(1_760_000_000 + (i as i64 / 2) % (30 * 86_400)).expect("in range"),
        received_at: Timestamp::from_unix_secs(1_760_000_100 + (i as i64 / 2) % (30 * 86_400)).expect("in range"),
        source: Source::Webhook,
        source_event_id: format!("evt_{payment}_{}", kind.as_str()),
        attributes: Attributes::default(),
    }
}

/// Every record of the run, in log order per partition.
fn records(prefix: &str, n: u64) -> Result<Vec<LogRecord>> {
    let partitions = |kind: EventKind| TOPICS.iter().find(|t| t.name == topic_for(kind)).map_or(6, |t| t.partitions);
    let mut next: std::collections::BTreeMap<(String, i32), i64> = Default::default();
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let e = event(i);
        let topic = format!("{prefix}{}", topic_for(e.kind));
        // A payment's records share a partition, as the payment id key gives them in the log.
        let partition = ((i / 2) % partitions(e.kind) as u64) as i32;
        let offset = next.entry((topic.clone(), partition)).or_default();
        out.push(LogRecord {
            topic,
            partition,
            offset: *offset,
            timestamp_ms: Some(1_763_700_000_000 + i as i64),
            key: Some(e.payment_id.as_bytes().to_vec()),
            value: Some(encode_payment_event(&e, None)?),
            headers: vec![("fact_key".into(), Some(e.fact_key().to_string().into_bytes()))],
        });
        *offset += 1;
    }
    Ok(out)
}

fn warehouse_config(dir: &std::path::Path) -> tally_warehouse::WarehouseConfig {
    tally_warehouse::WarehouseConfig {
        path: dir.join("warehouse.duckdb"),
        // As `tally_warehouse::bench::sink_from_memory` lands it.
        group_id: "bench".into(),
        token_key: tally_domain::Secret::new("bench".into()),
        // No sink listens here: a plan opens the file.
        listen: "127.0.0.1:1".into(),
        ..Default::default()
    }
}

pub fn run(args: ReplayArgs, config: Config) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let url =
            format!("{}/{DATABASE}", config.postgres.url.rsplit_once('/').context("database url has no /database")?.0);
        let postgres = PostgresConfig { url, ..config.postgres.clone() };
        let admin = tally_postgres::pool(&config.postgres)?;
        let exists =
            admin.get().await?.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&DATABASE]).await?.is_some();
        let archive = args.dir.join("archive");
        let wh = warehouse_config(&args.dir);
        let mut reuse = exists && !args.rebuild && wh.path.exists();
        if reuse {
            let pool = tally_postgres::pool(&postgres)?;
            let client = pool.get().await?;
            let archived: i64 =
                client.query_one("SELECT coalesce(sum(records), 0)::bigint FROM archive_files", &[]).await?.get(0);
            let booked: i64 = client.query_one("SELECT count(*) FROM event_log", &[]).await?.get(0);
            reuse = archived == args.events as i64 && booked == args.events as i64;
        }
        if reuse {
            println!("tally bench replay: reusing {} events in database {DATABASE} and {}", args.events, args.dir.display());
        } else {
            println!("tally bench replay: building {} events (archive, ledger, warehouse) …", args.events);
            let started = Instant::now();
            let _ = std::fs::remove_dir_all(&args.dir);
            std::fs::create_dir_all(&args.dir)?;
            let postgres = super::database(&config.postgres, DATABASE).await?;
            build(&config, &postgres, &archive, &wh, args.events).await?;
            println!("  built in {:.0} s", started.elapsed().as_secs_f64());
        }
        let pool = tally_postgres::pool(&postgres)?;
        let objects = Objects::open(&archive.display().to_string())?;

        // The baseline: every file of the manifest read, its rows materialized, nothing decoded.
        let mut baseline = Vec::new();
        for _ in 0..args.runs.max(1) {
            let started = Instant::now();
            let mut rows = 0u64;
            for f in tally_archive::manifest::list_files(&pool).await? {
                let bytes = objects.get(&f.path).await?;
                rows += tokio::task::spawn_blocking(move || tally_archive::file::read_records(bytes)).await??.len() as u64;
            }
            anyhow::ensure!(rows == args.events, "the archive holds {rows} records, not {}", args.events);
            baseline.push(started.elapsed().as_secs_f64());
        }
        let scope = tally_replay::scope::Scope::default();
        let (runs, events) = (args.runs.max(1), args.events);
        let timed = |with_warehouse: bool| {
            let (pool, objects, scope, wh) = (&pool, &objects, &scope, &wh);
            async move {
                let mut secs = Vec::new();
                for run in 0..runs {
                    let targets = tally_replay::Targets {
                        warehouse: with_warehouse.then_some(wh),
                        reference: tally_warehouse::replay::Pin::Rows,
                    };
                    let started = Instant::now();
                    let plan = tally_replay::plan(pool, objects, scope, targets, &mut |_, _, _| {}).await?;
                    let s = started.elapsed().as_secs_f64();
                    anyhow::ensure!(plan.is_empty(), "an unchanged scope must plan an empty diff");
                    anyhow::ensure!(plan.facts == events, "{} facts planned, not {events}", plan.facts);
                    if with_warehouse {
                        let rows = plan.warehouse.as_ref().map_or(0, |w| w.unchanged);
                        anyhow::ensure!(rows == events, "{rows} warehouse rows compared, not {events}");
                    }
                    println!(
                        "  plan {} {}: {s:.2} s ({:.0} events/s)",
                        if with_warehouse { "ledger + warehouse" } else { "ledger" },
                        run + 1,
                        events as f64 / s
                    );
                    secs.push(s);
                }
                Ok::<_, anyhow::Error>(median(secs))
            }
        };
        let ledger = timed(false).await?;
        let both = timed(true).await?;
        let base = median(baseline);
        let rate = |s: f64| args.events as f64 / s;
        println!(
            "baseline : median {base:.2} s reading the scope's {} Parquet rows, nothing decoded ({:.0} rows/s)",
            args.events,
            rate(base)
        );
        for (what, s) in [("ledger", ledger), ("ledger + warehouse", both)] {
            println!(
                "plan     : median {s:.2} s, {:.0} events/s ({what}); {:.2}× the baseline's time; goals ≥ 50,000 events/s: {}, 1M in < 30 s: {}",
                rate(s),
                s / base,
                if rate(s) >= 50_000.0 { "met" } else { "NOT met" },
                if args.events < 1_000_000 {
                    "not measured (fewer events)"
                } else if s * 1_000_000.0 / (args.events as f64) < 30.0 {
                    "met"
                } else {
                    "NOT met"
                }
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn build(
    config: &Config,
    postgres: &PostgresConfig,
    archive: &std::path::Path,
    wh: &tally_warehouse::WarehouseConfig,
    n: u64,
) -> Result<()> {
    let prefix = "benchr.";
    let all = records(prefix, n)?;
    // The archive: the archive's own encoder, files of up to PER_FILE records per partition, and their manifest.
    let pool = tally_postgres::pool(postgres)?;
    let objects = Objects::open(&archive.display().to_string())?;
    let mut by_partition: std::collections::BTreeMap<(String, i32), Vec<LogRecord>> = Default::default();
    for r in &all {
        by_partition.entry((r.topic.clone(), r.partition)).or_default().push(r.clone());
    }
    {
        let client = pool.get().await?;
        for records in by_partition.values() {
            for chunk in records.chunks(PER_FILE) {
                let file = encode(chunk)?;
                objects.put(&file.path, file.bytes.clone()).await?;
                tally_archive::manifest::insert_file(&client, &file, 1, "bench").await?;
            }
        }
    }
    println!("  archive: {} files", by_partition.values().map(|r| r.len().div_ceil(PER_FILE)).sum::<usize>());
    // The ledger: the real sink over the same records from memory.
    let store = tally_ledger::LedgerStore::new(pool.clone(), "bench-replay-ledger");
    let producer = Producer::new(&config.kafka)?;
    let rt = tokio::runtime::Handle::current();
    let shutdown = CancellationToken::new();
    let ledger = config.ledger.clone();
    let (stop, dlq, records) = (shutdown.clone(), format!("{prefix}payments.dlq.v1"), all.clone());
    let started = Instant::now();
    let sink = tokio::task::spawn_blocking(move || -> Result<()> {
        let claim = |t: &str, p: i32| rt.block_on(store.claim(t, p));
        let mut source = tally_sink::MemorySource::new(records, claim).map_err(anyhow::Error::msg)?;
        tally_ledger::consume(&mut source, &ledger, &store, &producer, &dlq, &rt, &stop)?;
        Ok(())
    });
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let booked: i64 = pool.get().await?.query_one("SELECT count(*) FROM event_log", &[]).await?.get(0);
        if booked == n as i64 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline && !sink.is_finished(), "the ledger sink booked {booked} of {n}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    shutdown.cancel();
    sink.await??;
    println!("  ledger: {n} events booked by the sink in {:.0} s", started.elapsed().as_secs_f64());
    // The warehouse: the real sink over the same records from memory.
    let started = Instant::now();
    let path = wh.path.clone();
    let reference =
        tally_reference::enrich::Reference::empty(Currency::from_code("EUR").expect("EUR"), wh.fx_max_age_days);
    let batching =
        tally_sink::Batching::Together { max_records: wh.batch_max_records, max_wait: Duration::from_millis(200) };
    let threshold = wh.checkpoint_threshold.clone();
    let landed = tokio::task::spawn_blocking(move || {
        tally_warehouse::bench::sink_from_memory(&path, all, reference, batching, &threshold)
    })
    .await??;
    println!("  warehouse: {} records landed in {:.0} s", landed.records, started.elapsed().as_secs_f64());
    Ok(())
}
