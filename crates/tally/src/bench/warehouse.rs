//! `tally bench warehouse`: the warehouse sink's sustained events/s from memory (its own path: decode, enrichment,
//! tokenization, landing, models, fenced offsets) beside DuckDB's appender writing the same already-enriched rows
//! with no key, offsets or models (the engine's limit), and source→warehouse latency at a steady rate through the
//! local broker (produce → row visible to a query).

// Timing statistics, never money: the workspace-wide float ban does not apply here.
#![allow(clippy::float_arithmetic)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use tally_contracts::encode_payment_event;
use tally_domain::{Attributes, EventKind, PaymentEvent, Psp, Source, Timestamp};
use tally_kafka::{topic_for, Producer, TOPICS};
use tally_money::{Amount, Currency, Money};
use tally_reference::enrich::{MerchantIndex, Reference};
use tally_reference::merchants::{MerchantVersion, Price};
use tally_sink::Batching;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

#[derive(Args)]
pub struct WarehouseArgs {
    /// Records the sink lands from memory (and the appender baseline writes).
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Events produced at a steady rate through the broker while the sink runs, for source→warehouse latency.
    #[arg(long, default_value_t = 10_000)]
    latency_events: usize,
    /// Rate of the latency phase, events per second.
    #[arg(long, default_value_t = 1_000)]
    latency_rate: u64,
}

fn now_micros() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

const CURRENCIES: [&str; 5] = ["EUR", "USD", "GBP", "JPY", "BHD"];

/// A capture of merchant `m<i % 50>` in one of five currencies (BHD: no ECB rate), spread over ten days of 2026.
fn capture(run: &str, i: usize, received: i64) -> PaymentEvent {
    let id = format!("ch_{run}_{i}");
    let occurred = 1_780_000_000 + (i as i64 % 864_000);
    PaymentEvent {
        kind: EventKind::Captured,
        payment_id: format!("stripe:{id}"),
        psp: Psp::Stripe,
        psp_reference: id.clone(),
        original_reference: None,
        merchant_id: format!("m{}", i % 50),
        money: Money::new(
            Amount::from_minor(1000 + (i % 997) as i64),
            Currency::from_code(CURRENCIES[i % 5]).expect("ISO"),
        ),
        fee: None,
        occurred_at: Timestamp::from_unix_secs(occurred).expect("in range"),
        received_at: Timestamp::from_unix_micros(received).expect("in range"),
        source: Source::Webhook,
        source_event_id: format!("evt_{id}"),
        attributes: Attributes {
            card_token: Some(format!("pm_{}", i % 5000)),
            customer_token: Some(format!("customer{}@example.com", i % 8000)),
            device_id: Some(format!("dev{}", i % 6000)),
            ..Attributes::default()
        },
    }
}

fn reference() -> Result<Reference> {
    let csv = tally_warehouse::reference::ecb_csv("eurofxref-hist.zip", crate::demo::ECB_HISTORY)?;
    let fx = tally_reference::ecb::EcbRates::parse(&csv).map_err(|e| anyhow::anyhow!("{e}"))?;
    let versions = (0..50).map(|m| MerchantVersion {
        merchant_id: format!("m{m}"),
        valid_from: time::macros::date!(2020 - 01 - 01),
        valid_to: None,
        legal_name: format!("Merchant {m}"),
        country: "DE".into(),
        mcc: "5411".into(),
        settlement_currency: Currency::from_code("EUR").expect("EUR"),
        risk_tier: "low".into(),
        stripe: Price { ppm: 14_000, fixed_minor: 25 },
        adyen: Price { ppm: 12_000, fixed_minor: 11 },
    });
    Ok(Reference {
        merchants: MerchantIndex::new(versions),
        merchants_version: Some(1),
        fx,
        fx_version: Some(2),
        reporting: Currency::from_code("EUR").expect("EUR"),
        fx_max_age_days: 7,
    })
}

pub fn run(args: WarehouseArgs, mut config: Config) -> Result<ExitCode> {
    let run = format!("w{}", std::process::id());
    let dir = std::env::temp_dir().join(format!("tally-bench-warehouse-{run}"));
    std::fs::create_dir_all(&dir)?;
    let topic = format!("benchw.{run}.{}", topic_for(EventKind::Captured));
    let partitions = TOPICS.iter().find(|t| t.name == topic_for(EventKind::Captured)).map_or(6, |t| t.partitions);
    println!(
        "tally bench warehouse: {} captures from memory (50 merchants, 5 currencies, 10 days; PII-like identifiers to \
         tokenize), batches of {}",
        args.events, config.warehouse.batch_max_records
    );
    let mut next = vec![0i64; partitions as usize];
    let records: Vec<tally_sink::LogRecord> = (0..args.events)
        .map(|i| {
            let e = capture(&run, i, now_micros());
            let partition = (i % partitions as usize) as i32;
            let offset = next[partition as usize];
            next[partition as usize] += 1;
            Ok(tally_sink::LogRecord {
                topic: topic.clone(),
                partition,
                offset,
                timestamp_ms: None,
                key: Some(e.payment_id.as_bytes().to_vec()),
                value: Some(encode_payment_event(&e, Some("bench"))?),
                headers: vec![],
            })
        })
        .collect::<Result<_>>()?;
    let reference = reference()?;
    let batching = Batching::Together {
        max_records: config.warehouse.batch_max_records,
        max_wait: Duration::from_millis(config.warehouse.batch_max_wait_ms),
    };
    let sink = tally_warehouse::bench::sink_from_memory(
        &dir.join("sink.duckdb"),
        records.clone(),
        reference.clone(),
        batching,
        &config.warehouse.checkpoint_threshold,
    )?;
    let timed = sink.records - sink.first_commit;
    let sink_rate = timed as f64 / sink.after_first.as_secs_f64();
    println!(
        "sink     : {sink_rate:>9.0} events/s from memory ({timed} records in {:.1} s after the first commit of {}; {} batches)",
        sink.after_first.as_secs_f64(),
        sink.first_commit,
        sink.batches
    );
    let base = tally_warehouse::bench::appender_baseline(&dir.join("baseline.duckdb"), &records, &reference)?;
    let base_rate = records.len() as f64 / base.bare.as_secs_f64();
    let keyed_rate = records.len() as f64 / base.keyed.as_secs_f64();
    println!(
        "appender : {base_rate:>9.0} events/s (the same enriched rows, one transaction, no key, offsets or models)"
    );
    println!("keyed    : {keyed_rate:>9.0} events/s (the same, into the sink's own fact table with its key)");
    println!(
        "ratio    : sink/appender {:.2}× (goal ≥ 0.5×)  sink/keyed appender {:.2}×",
        sink_rate / base_rate,
        sink_rate / keyed_rate
    );

    // Latency through the broker: a steady stream; each row's latency is from its produce (received_at) to the
    // first query that sees it (polled every 50 ms: an upper bound by up to 50 ms).
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        config.kafka.topic_prefix = format!("benchw.{run}l.");
        tally_kafka::ensure_topics(&config.kafka, TOPICS).await?;
        config.warehouse.path = dir.join("latency.duckdb");
        config.warehouse.group_id = format!("bench-{run}");
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        config.warehouse.listen = format!("127.0.0.1:{port}");
        let shutdown = CancellationToken::new();
        let sink = tokio::spawn(tally_warehouse::run(
            config.warehouse.clone(),
            config.kafka.clone(),
            config.postgres.clone(),
            shutdown.clone(),
        ));
        let listen = config.warehouse.listen.clone();
        let ask = move |sql: String| {
            let listen = listen.clone();
            async move { tally_warehouse::query::ask_sink(&listen, &sql, 1_000_000, Duration::from_secs(10)).await }
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while ask("SELECT 1".into()).await.ok().flatten().is_none() {
            anyhow::ensure!(Instant::now() < deadline, "the warehouse sink did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let producer = Producer::new(&config.kafka)?;
        let lat_topic = config.kafka.topic(topic_for(EventKind::Captured));
        let n = args.latency_events;
        let rate = args.latency_rate.max(1);
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<i64>();
        let poll_stop = CancellationToken::new();
        let poller = {
            let stop = poll_stop.clone();
            let ask = ask.clone();
            tokio::spawn(async move {
                let mut last = -1i64;
                while !stop.is_cancelled() {
                    if let Ok(Some(a)) = ask(format!(
                        "SELECT rowid, epoch_us(received_at) FROM fct_payment_events WHERE rowid > {last} ORDER BY rowid"
                    ))
                    .await
                    {
                        let at = now_micros();
                        for r in &a.rows {
                            last = last.max(r[0].as_i64().unwrap_or(last));
                            let _ = seen_tx.send(at - r[1].as_i64().unwrap_or(at));
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
        for i in 0..n {
            tick.tick().await;
            let e = capture(&format!("{run}l"), i, now_micros());
            producer.send(&lat_topic, e.payment_id.as_bytes(), &encode_payment_event(&e, None)?, &[]).await?;
        }
        let mut latencies = Vec::with_capacity(n);
        let deadline = Instant::now() + Duration::from_secs(120);
        while latencies.len() < n {
            match tokio::time::timeout(Duration::from_secs(1), seen_rx.recv()).await {
                Ok(Some(l)) => latencies.push(l),
                _ => anyhow::ensure!(Instant::now() < deadline, "only {} of {n} rows seen", latencies.len()),
            }
        }
        poll_stop.cancel();
        let _ = poller.await;
        shutdown.cancel();
        sink.await?.context("the warehouse sink")?;
        latencies.sort_unstable();
        let q = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)] as f64 / 1000.0;
        println!(
            "latency  : source→warehouse p50 {:.0} ms  p95 {:.0} ms  p99 {:.0} ms ({n} events at {rate}/s, produce → \
             visible to a query polled every 50 ms; goal p95 < 10 s)",
            q(0.50),
            q(0.95),
            q(0.99)
        );
        Ok::<(), anyhow::Error>(())
    })?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ExitCode::SUCCESS)
}
