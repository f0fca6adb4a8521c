//! `tally bench ledger`: the ledger sink over N pre-produced events, beside (a) a naive consumer that commits one
//! transaction per event (the seed design) and (b) a raw `COPY` of the same rows with no checks (what this
//! PostgreSQL can write at most). Each runs in a database of its own, created for the run.

// Timing statistics, never money: the workspace-wide float ban does not apply here.
#![allow(clippy::float_arithmetic)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use futures::SinkExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::ClientConfig;
use tally_contracts::{decode_payment_event, encode_payment_event};
use tally_domain::ledger::postings;
use tally_domain::{Attributes, EventKind, PaymentEvent, Psp, Source};
use tally_kafka::{topic_for, Header, Producer, TOPICS};
use tally_money::{Amount, Currency, Money};
use tally_postgres::PostgresConfig;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

#[derive(Args)]
pub struct LedgerArgs {
    /// Events pre-produced for the sink and copied by the COPY baseline.
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Events the naive per-event consumer books (it is slow; its rate is what is compared).
    #[arg(long, default_value_t = 3_000)]
    naive_events: usize,
    /// Events produced at a steady rate while the sink runs, for source→ledger latency.
    #[arg(long, default_value_t = 3_000)]
    latency_events: usize,
    /// Rate of the latency phase, events per second.
    #[arg(long, default_value_t = 1_000)]
    latency_rate: u64,
    /// Where the sink reads: `broker` (the local Kafka-API broker, end to end) or `memory` (the same records handed
    /// to the sink framework from memory: the sink's own claim/fence/commit path beside raw COPY, without the broker).
    #[arg(long, default_value = "broker", value_parser = ["broker", "memory"])]
    source: String,
}

use crate::now;

fn capture(run: &str, i: usize) -> PaymentEvent {
    let id = format!("ch_{run}_{i}");
    PaymentEvent {
        kind: EventKind::Captured,
        payment_id: format!("stripe:{id}"),
        psp: Psp::Stripe,
        psp_reference: id.clone(),
        original_reference: None,
        merchant_id: format!("m{}", i % 50),
        money: Money::new(Amount::from_minor(1000 + (i % 997) as i64), Currency::from_code("EUR").expect("EUR")),
        fee: None,
        occurred_at: now(),
        received_at: now(),
        source: Source::Webhook,
        source_event_id: format!("evt_{id}"),
        attributes: Attributes::default(),
    }
}

/// Produces one event as ingest does: keyed by payment id, with the headers ingest writes on every lifecycle record
/// (the broker stores and serves those too).
async fn produce(producer: &Producer, topic: &str, e: &PaymentEvent) -> Result<()> {
    let key = e.fact_key().to_string();
    let headers = [
        Header { key: "fact_key", value: key.as_bytes() },
        Header { key: "delivery_id", value: e.source_event_id.as_bytes() },
    ];
    producer.send(topic, e.payment_id.as_bytes(), &encode_payment_event(e, None)?, &headers).await?;
    Ok(())
}

use super::database;

pub fn run(args: LedgerArgs, mut config: Config) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if args.source == "memory" {
        return rt.block_on(from_memory(&args, &config));
    }
    rt.block_on(async move {
        let run = format!("b{}", std::process::id());
        config.kafka.topic_prefix = format!("benchl.{run}.");
        tally_kafka::ensure_topics(&config.kafka, TOPICS).await?;
        println!("tally bench ledger: {} events pre-produced (captures, 1 journal + 2 entries each)", args.events);

        // Pre-produce.
        // A bulk load of N records queued at once: ingest's 5 s delivery timeout is for one webhook's records.
        let producer = Producer::new(&tally_kafka::KafkaConfig {
            message_timeout_ms: config.kafka.message_timeout_ms.max(300_000),
            ..config.kafka.clone()
        })?;
        let topic = config.kafka.topic(topic_for(EventKind::Captured));
        let sends = (0..args.events).map(|i| {
            let (producer, topic, run) = (&producer, &topic, &run);
            async move { produce(producer, topic, &capture(run, i)).await }
        });
        for chunk in futures::future::join_all(sends).await {
            chunk?;
        }

        // The sink.
        let sink_db = database(&config.postgres, &format!("tally_bench_sink_{run}")).await?;
        let pool = tally_postgres::pool(&sink_db)?;
        let shutdown = CancellationToken::new();
        let mut ledger = config.ledger.clone();
        ledger.group_id = format!("bench-{run}");
        let sink = tokio::spawn(tally_ledger::run(ledger, config.kafka.clone(), sink_db.clone(), shutdown.clone()));
        // Sustained rate: from the first commit seen (after the group join) to the last, counting only the events
        // booked after that first observation (issue 13, item 5: the first batch used to count without its time).
        let first = wait_count(&pool, 1, Duration::from_secs(60)).await?;
        let started = Instant::now();
        wait_count(&pool, args.events as i64, Duration::from_secs(600)).await?;
        let sink_secs = started.elapsed().as_secs_f64();
        let timed = args.events as i64 - first;
        let sink_rate = timed as f64 / sink_secs;
        println!(
            "sink     : {:>9.0} events/s ({timed} events in {:.1} s after the first commit of {first}; counting those \
             too, as before issue 13: {:.0}/s)",
            sink_rate,
            sink_secs,
            args.events as f64 / sink_secs
        );

        // Latency: a steady stream while the sink runs; received_at is stamped when each event is produced.
        let interval = Duration::from_micros(1_000_000 / args.latency_rate.max(1));
        let mut tick = tokio::time::interval(interval);
        for i in 0..args.latency_events {
            tick.tick().await;
            let e = capture(&format!("{run}lat"), i);
            produce(&producer, &topic, &e).await?;
        }
        wait_count(&pool, (args.events + args.latency_events) as i64, Duration::from_secs(120)).await?;
        shutdown.cancel();
        sink.await??;
        let pattern = format!("stripe:ch_{run}lat_%");
        let l = tally_ledger::latency::booking_latency(&pool, tally_ledger::latency::Filter::Like(&pattern))
            .await?
            .context("no latency event was booked")?;
        println!(
            "latency  : source→ledger p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms ({} events at {}/s; {})",
            l.p50 * 1000.0,
            l.p95 * 1000.0,
            l.p99 * 1000.0,
            l.facts,
            args.latency_rate,
            l.basis()
        );
        println!(
            "           to the transaction's start instead: p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms",
            l.to_start[0] * 1000.0,
            l.to_start[1] * 1000.0,
            l.to_start[2] * 1000.0
        );

        let naive_db = database(&config.postgres, &format!("tally_bench_naive_{run}")).await?;
        let (naive_rate, with_join) = naive(&config, &naive_db, &topic, args.naive_events).await?;
        println!(
            "naive    : {:>9.0} events/s (one transaction per event, {} events, from its first commit; with its \
             group join, as before issue 13: {:.0}/s)",
            naive_rate, args.naive_events, with_join
        );
        let copies = copies(&config, &run, args.events).await?;
        println!(
            "ratios   : sink/naive {:.1}×  sink/COPY {:.2}×  sink/schema COPY {:.2}×",
            sink_rate / naive_rate,
            sink_rate / copies.bare,
            sink_rate / copies.schema
        );
        drop_databases(&config.postgres, &run).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Waits until at least `n` events are booked; returns how many are.
/// The sink's own path: the same capture records as the broker run (key, value and the headers ingest writes), over
/// the capture topic's partitions, handed to the ledger by the framework's memory source; claims, fences and commits
/// are the real ones in a database of the run's own. Beside it, raw COPY of the same rows.
async fn from_memory(args: &LedgerArgs, config: &Config) -> Result<ExitCode> {
    let run = format!("m{}", std::process::id());
    let topic = format!("benchm.{run}.{}", topic_for(EventKind::Captured));
    let partitions = TOPICS.iter().find(|t| t.name == topic_for(EventKind::Captured)).map_or(6, |t| t.partitions);
    println!("tally bench ledger --source memory: {} events (captures, 1 journal + 2 entries each)", args.events);
    let mut next = vec![0i64; partitions as usize];
    let mut records = Vec::with_capacity(args.events);
    for i in 0..args.events {
        let e = capture(&run, i);
        let partition = (i % partitions as usize) as i32;
        let key = e.fact_key().to_string();
        records.push(tally_sink::LogRecord {
            topic: topic.clone(),
            partition,
            offset: next[partition as usize],
            timestamp_ms: None,
            key: Some(e.payment_id.as_bytes().to_vec()),
            value: Some(encode_payment_event(&e, None)?),
            headers: vec![
                ("fact_key".into(), Some(key.into_bytes())),
                ("delivery_id".into(), Some(e.source_event_id.into_bytes())),
            ],
        });
        next[partition as usize] += 1;
    }
    let sink_db = database(&config.postgres, &format!("tally_bench_sink_{run}")).await?;
    let pool = tally_postgres::pool(&sink_db)?;
    let store = tally_ledger::LedgerStore::new(pool.clone(), format!("bench-{run}"));
    let producer = Producer::new(&config.kafka)?;
    let rt = tokio::runtime::Handle::current();
    let shutdown = CancellationToken::new();
    let ledger = config.ledger.clone();
    let (stop, dlq) = (shutdown.clone(), format!("benchm.{run}.payments.dlq.v1"));
    let sink = tokio::task::spawn_blocking(move || -> Result<()> {
        let claim = |t: &str, p: i32| rt.block_on(store.claim(t, p));
        let mut source = tally_sink::MemorySource::new(records, claim).map_err(anyhow::Error::msg)?;
        tally_ledger::consume(&mut source, &ledger, &store, &producer, &dlq, &rt, &stop)?;
        Ok(())
    });
    let first = wait_count(&pool, 1, Duration::from_secs(60)).await?;
    let started = Instant::now();
    wait_count(&pool, args.events as i64, Duration::from_secs(600)).await?;
    let sink_secs = started.elapsed().as_secs_f64();
    shutdown.cancel();
    sink.await??;
    let timed = args.events as i64 - first;
    let sink_rate = timed as f64 / sink_secs;
    println!(
        "sink     : {:>9.0} events/s from memory ({timed} events in {:.1} s after the first commit of {first})",
        sink_rate, sink_secs
    );
    let copies = copies(config, &run, args.events).await?;
    println!(
        "ratios   : sink/COPY {:.2}× (goal ≥ 0.5×)  sink/schema COPY {:.2}×",
        sink_rate / copies.bare,
        sink_rate / copies.schema
    );
    drop_databases(&config.postgres, &run).await?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_count(pool: &deadpool_postgres::Pool, n: i64, timeout: Duration) -> Result<i64> {
    let deadline = Instant::now() + timeout;
    loop {
        let count: i64 = pool.get().await?.query_one("SELECT count(*) FROM event_log", &[]).await?.get(0);
        if count >= n {
            return Ok(count);
        }
        anyhow::ensure!(Instant::now() < deadline, "only {count} of {n} events booked in {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The seed design: consume, and per event one transaction with the event, its journal, entries, balances and
/// offset.
/// Returns (the rate from its first commit, the rate from before its group join as measured before issue 13).
async fn naive(config: &Config, db: &PostgresConfig, topic: &str, n: usize) -> Result<(f64, f64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", format!("bench-naive-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[topic])?;
    let pool = tally_postgres::pool(db)?;
    let mut client = pool.get().await?;
    // Timed like the sink: from its first commit (after the group join) to its last, counting the events after it.
    let mut done = 0;
    let joining = Instant::now();
    let mut started = joining;
    while done < n {
        let Some(m) = consumer.poll(Duration::from_millis(100)) else { continue };
        let m = m?;
        let fact = decode_payment_event(m.payload().unwrap_or_default())?;
        let e = &fact.event;
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO event_log (fact_key, kind, payment_id, psp, psp_reference, merchant_id, amount_minor, currency,
                occurred_at, received_at, source, source_event_id, topic, kafka_partition, kafka_offset, schema_id,
                processor_version, event)
             VALUES ($1, $2, $3, 'stripe', $4, $5, $6, $7, now(), now(), 'webhook', $8, $9, $10, $11, 1, 'naive', '{}')",
            &[&e.fact_key().0, &e.kind.as_str(), &e.payment_id, &e.psp_reference, &e.merchant_id, &e.money.amount.minor(),
              &e.money.currency.code(), &e.source_event_id, &m.topic(), &m.partition(), &m.offset()],
        )
        .await?;
        if let Some(j) = postings(e)? {
            let id: i64 = tx
                .query_one(
                    "INSERT INTO journals (fact_key, payment_id, kind) VALUES ($1, $2, $3) RETURNING journal_id",
                    &[&e.fact_key().0, &e.payment_id, &e.kind.as_str()],
                )
                .await?
                .get(0);
            for entry in &j.entries {
                tx.execute(
                    "INSERT INTO entries (journal_id, account, currency, amount_minor, fact_key, topic, kafka_partition, kafka_offset, processor_version)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'naive')",
                    &[&id, &entry.account.to_string(), &entry.money.currency.code(), &entry.money.amount.minor(), &e.fact_key().0, &m.topic(), &m.partition(), &m.offset()],
                )
                .await?;
                tx.execute(
                    "INSERT INTO account_balances VALUES ($1, $2, $3)
                     ON CONFLICT (account, currency) DO UPDATE SET balance_minor = account_balances.balance_minor + EXCLUDED.balance_minor",
                    &[&entry.account.to_string(), &entry.money.currency.code(), &entry.money.amount.minor()],
                )
                .await?;
            }
        }
        tx.execute(
            "INSERT INTO sink_offsets VALUES ('naive', $1, $2, $3, 1)
             ON CONFLICT (group_id, topic, kafka_partition) DO UPDATE SET next_offset = EXCLUDED.next_offset",
            &[&m.topic(), &m.partition(), &(m.offset() + 1)],
        )
        .await?;
        tx.commit().await?;
        done += 1;
        if done == 1 {
            started = Instant::now();
        }
    }
    Ok((n.saturating_sub(1) as f64 / started.elapsed().as_secs_f64(), n as f64 / joining.elapsed().as_secs_f64()))
}

struct Copies {
    bare: f64,
    schema: f64,
}

/// Both COPY baselines, each in a fresh database of its own.
async fn copies(config: &Config, run: &str, n: usize) -> Result<Copies> {
    let bare =
        copy(&database(&config.postgres, &format!("tally_bench_copy_{run}")).await?, run, n, CopyInto::Bare).await?;
    println!(
        "raw COPY : {bare:>9.0} events/s (the same rows, event JSON included, into bare tables: no keys, no indexes)"
    );
    let db = database(&config.postgres, &format!("tally_bench_schema_{run}")).await?;
    let schema = copy(&db, run, n, CopyInto::Schema).await?;
    println!(
        "schema COPY: {schema:>7.0} events/s (the same rows into the ledger's own tables: keys, indexes, triggers)"
    );
    Ok(Copies { bare, schema })
}

/// The run's databases go when it ends (they used to stay, one set per run).
async fn drop_databases(base: &PostgresConfig, run: &str) -> Result<()> {
    let admin = tally_postgres::pool(base)?;
    let admin = admin.get().await?;
    for kind in ["sink", "naive", "copy", "schema"] {
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS tally_bench_{kind}_{run} WITH (FORCE)")).await?;
    }
    Ok(())
}

/// Where the COPY baselines write.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CopyInto {
    /// (b) Bare tables with the ledger tables' columns and NOT NULLs only: what this PostgreSQL can write at most.
    Bare,
    /// (c) The ledger's own tables as migrated (keys, indexes, checks, the append-only and balance triggers): the
    /// floor that the schema's invariants alone put under any sink writing these rows.
    Schema,
}

/// COPY text-format field: `\N` for none, backslash escaped (JSON bodies carry backslashes; no tab or newline).
fn field(out: &mut String, v: Option<&str>) {
    match v {
        None => out.push_str("\\N"),
        Some(v) => out.push_str(&v.replace('\\', "\\\\")),
    }
}

fn line(out: &mut String, fields: &[Option<&str>]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        field(out, *f);
    }
    out.push('\n');
}

/// The rows the sink writes per event (its event-log row with the event's JSON body, its journal and its two
/// entries), COPYed into `into`. Timed from the first COPY to the last COPY's end (no transaction around them:
/// each COPY commits on its own).
async fn copy(db: &PostgresConfig, run: &str, n: usize, into: CopyInto) -> Result<f64> {
    let pool = tally_postgres::pool(db)?;
    let client = pool.get().await?;
    let (events_table, journals_table, entries_table) = match into {
        CopyInto::Bare => {
            client
                .batch_execute(
                    "CREATE TABLE bare_event_log AS SELECT * FROM event_log WITH NO DATA;
                     CREATE TABLE bare_journals AS SELECT * FROM journals WITH NO DATA;
                     CREATE TABLE bare_entries AS SELECT * FROM entries WITH NO DATA;",
                )
                .await?;
            ("bare_event_log", "bare_journals (journal_id, fact_key, payment_id, kind, booked_at)", "bare_entries")
        }
        // Identities assign 1, 2, … in COPY order in the fresh database, so entry i names journal i + 1.
        CopyInto::Schema => ("event_log", "journals (fact_key, payment_id, kind, booked_at)", "entries"),
    };
    let (mut events, mut journals, mut entries) = (String::new(), String::new(), String::new());
    let booked = now().to_string();
    for i in 0..n {
        let e = capture(run, i);
        let key = e.fact_key().to_string();
        let (offset, journal) = (i.to_string(), (i + 1).to_string());
        let (occurred, received) = (e.occurred_at.to_string(), e.received_at.to_string());
        let (amount, body) = (e.money.amount.minor().to_string(), serde_json::to_string(&e)?);
        let topic = topic_for(e.kind);
        line(
            &mut events,
            &[
                Some(&key),
                Some(e.kind.as_str()),
                Some(&e.payment_id),
                Some(e.psp.as_str()),
                Some(&e.psp_reference),
                None,
                Some(&e.merchant_id),
                Some(&amount),
                Some(e.money.currency.code()),
                None,
                Some(&occurred),
                Some(&received),
                Some("webhook"),
                Some(&e.source_event_id),
                Some(&e.source_event_id),
                Some(topic),
                Some("0"),
                Some(&offset),
                Some("1"),
                Some(tally_ledger::PROCESSOR_VERSION),
                None,
                Some(&booked),
                Some(&body),
            ],
        );
        let mut journal_fields = Vec::with_capacity(5);
        if into == CopyInto::Bare {
            journal_fields.push(Some(journal.as_str()));
        }
        journal_fields.extend([Some(key.as_str()), Some(&e.payment_id), Some(e.kind.as_str()), Some(&booked)]);
        line(&mut journals, &journal_fields);
        let j = postings(&e)?.context("a capture posts a journal")?;
        for entry in &j.entries {
            let (account, amount) = (entry.account.to_string(), entry.money.amount.minor().to_string());
            line(
                &mut entries,
                &[
                    Some(&journal),
                    Some(&account),
                    Some(entry.money.currency.code()),
                    Some(&amount),
                    Some(&key),
                    Some(topic),
                    Some("0"),
                    Some(&offset),
                    Some(tally_ledger::PROCESSOR_VERSION),
                    None,
                ],
            );
        }
    }
    let entries_columns = "(journal_id, account, currency, amount_minor, fact_key, topic, kafka_partition, \
        kafka_offset, processor_version, replay_id)";
    let started = Instant::now();
    for (table, data) in [
        (events_table.to_owned(), events),
        (journals_table.to_owned(), journals),
        (format!("{entries_table} {entries_columns}"), entries),
    ] {
        let sink = client.copy_in(&format!("COPY {table} FROM STDIN")).await?;
        futures::pin_mut!(sink);
        sink.send(bytes::Bytes::from(data)).await?;
        sink.finish().await?;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}
