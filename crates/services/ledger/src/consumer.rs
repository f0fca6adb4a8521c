//! The ledger sink on the framework (`tally_sink`): the framework claims, seeks, checks positions and batches; this
//! module commits a batch — DLQ copies of undecodable records, then effects + offsets in one fenced transaction — and
//! isolates a record the database refuses so that it never stalls a partition.

use std::collections::HashMap;
use std::time::Duration;

use tally_kafka::position::LogPositionError;
use tally_kafka::{Header, KafkaConfig, Producer};
use tally_postgres::PostgresConfig;
use tally_sink::{Batching, FrameworkError, KafkaSource, KafkaSourceConfig, Part, Source};
use tokio_util::sync::CancellationToken;

use crate::batch::{Decoded, Incoming, LEDGER_TOPICS};
use crate::store::{LedgerStore, PartitionClaim, StoreError};
use crate::LedgerConfig;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Kafka(#[from] tally_kafka::KafkaError),
    #[error("kafka consumer: {0}")]
    Consumer(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Postgres(#[from] tally_postgres::PgError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("sink thread: {0}")]
    Join(String),
    #[error("{topic}[{partition}]: the log continues at offset {found}, but the ledger stopped at {expected}: records are missing from the log; refusing to book past them")]
    Gap { topic: String, partition: i32, expected: i64, found: i64 },
    #[error(transparent)]
    Position(#[from] LogPositionError),
}

impl From<FrameworkError> for SinkError {
    fn from(e: FrameworkError) -> Self {
        match e {
            FrameworkError::Consumer(e) => SinkError::Consumer(e),
            FrameworkError::Position(e) => SinkError::Position(e),
            FrameworkError::Gap { topic, partition, expected, found } => {
                SinkError::Gap { topic, partition, expected, found }
            }
        }
    }
}

/// `tally sink ledger`: consumes until `shutdown`, then commits what it holds and leaves the group.
pub async fn run(
    config: LedgerConfig,
    kafka: KafkaConfig,
    postgres: PostgresConfig,
    shutdown: CancellationToken,
) -> Result<(), SinkError> {
    let pool = tally_postgres::pool(&postgres)?;
    tally_postgres::migrate(&pool).await?;
    let store = LedgerStore::new(pool, config.group_id.clone());
    let producer = Producer::new(&kafka)?;
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let topics: Vec<String> = LEDGER_TOPICS.iter().map(|t| kafka.topic(t)).collect();
        let claim_store = store.clone();
        let claim_rt = rt.clone();
        let mut source = KafkaSource::new(
            &KafkaSourceConfig {
                brokers: &kafka.brokers,
                group_id: &config.group_id,
                topics: &topics,
                session_timeout_ms: config.session_timeout_ms,
                max_poll_interval_ms: config.max_poll_interval_ms,
                // Answer fetches as soon as data is there: the batch timer, not the broker, bounds latency.
                fetch_wait_max_ms: 50,
            },
            Box::new(move |topic, partition| {
                claim_rt.block_on(claim_store.claim(topic, partition)).map_err(|e| e.to_string())
            }),
            shutdown.clone(),
        )?;
        let dlq = kafka.topic("payments.dlq.v1");
        consume(&mut source, &config, &store, &producer, &dlq, &rt, &shutdown)
    })
    .await
    .map_err(|e| SinkError::Join(e.to_string()))?
}

/// The ledger on any source (Kafka, or memory for `tally bench ledger --source memory`): batches of
/// `batch_max_records` across partitions or `batch_max_wait_ms`, each committed in one transaction.
pub fn consume(
    source: &mut impl Source<PartitionClaim>,
    config: &LedgerConfig,
    store: &LedgerStore,
    producer: &Producer,
    dlq: &str,
    rt: &tokio::runtime::Handle,
    shutdown: &CancellationToken,
) -> Result<(), SinkError> {
    let batching = Batching::Together {
        max_records: config.batch_max_records,
        max_wait: Duration::from_millis(config.batch_max_wait_ms),
    };
    tally_sink::run(source, batching, shutdown, |parts| flush(store, producer, dlq, rt, parts))
}

/// Commits a batch (all of it, or fails): DLQ copies first, then effects + offsets in one transaction. Retries
/// through database outages; a fence is fatal (another owner has the partition).
fn flush(
    store: &LedgerStore,
    producer: &Producer,
    dlq: &str,
    rt: &tokio::runtime::Handle,
    parts: &mut [Part<PartitionClaim>],
) -> Result<(), SinkError> {
    let ranges: Vec<(PartitionClaim, i64)> = parts.iter().map(|p| (p.claim.clone(), p.end())).collect();
    let mut pending: Vec<Decoded> = parts
        .iter_mut()
        .flat_map(|p| std::mem::take(&mut p.records))
        .map(|r| {
            Decoded::decode(Incoming {
                topic: r.topic,
                partition: r.partition,
                offset: r.offset,
                key: r.key,
                value: r.value,
            })
        })
        .collect();
    for d in &pending {
        if let Decoded::Reject { origin, reason } = d {
            send_to_dlq(producer, rt, dlq, origin, reason)?;
        }
    }
    let outcome = match commit_retrying(store, rt, &ranges, &pending) {
        Ok(o) => o,
        Err(e) if e.is_data_error() => {
            tracing::warn!(error = %e, "batch refused by the database; isolating the record that caused it");
            let claims: HashMap<(String, i32), PartitionClaim> =
                ranges.into_iter().map(|(c, _)| ((c.topic.clone(), c.partition), c)).collect();
            isolate(claims, store, producer, dlq, rt, &mut pending)?;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    tracing::debug!(?outcome, records = pending.len(), "batch committed");
    Ok(())
}

/// Commits, retrying through transient database errors with back-off.
fn commit_retrying(
    store: &LedgerStore,
    rt: &tokio::runtime::Handle,
    ranges: &[(PartitionClaim, i64)],
    records: &[Decoded],
) -> Result<crate::BatchOutcome, StoreError> {
    let mut backoff = Duration::from_millis(200);
    let mut retried = false;
    loop {
        match rt.block_on(store.commit(ranges, records)) {
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "batch commit failed; retrying");
                retried = true;
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            // The earlier attempt committed before its connection broke: done, not fenced.
            Err(StoreError::Fenced { .. })
                if retried && rt.block_on(store.already_committed(ranges)).unwrap_or(false) =>
            {
                return Ok(crate::BatchOutcome::default());
            }
            other => return other,
        }
    }
}

/// A batch the database refused: commit its records one at a time, in offset order; the one(s) refused become
/// rejects (DLQ + `sink_rejects`) with the database's reason, so that one bad record never stalls a partition.
fn isolate(
    mut claims: HashMap<(String, i32), PartitionClaim>,
    store: &LedgerStore,
    producer: &Producer,
    dlq: &str,
    rt: &tokio::runtime::Handle,
    pending: &mut [Decoded],
) -> Result<(), SinkError> {
    pending.sort_by(|a, b| {
        let (a, b) = (a.origin(), b.origin());
        (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset))
    });
    for record in pending.iter() {
        let origin = record.origin().clone();
        let tp = (origin.topic.clone(), origin.partition);
        let Some(claim) = claims.get(&tp).cloned() else { continue };
        let range = [(claim, origin.offset + 1)];
        let single = match commit_retrying(store, rt, &range, std::slice::from_ref(record)) {
            Ok(_) => None,
            Err(e) if e.is_data_error() => Some(e.to_string()),
            Err(e) => return Err(e.into()),
        };
        if let Some(reason) = single {
            let reason = format!("refused by the ledger database: {reason}");
            send_to_dlq(producer, rt, dlq, &origin, &reason)?;
            commit_retrying(store, rt, &range, &[Decoded::Reject { origin: origin.clone(), reason }])?;
        }
        if let Some(c) = claims.get_mut(&tp) {
            c.next_offset = origin.offset + 1;
        }
    }
    Ok(())
}

/// The record's original key and bytes to the DLQ, with where it came from and why.
fn send_to_dlq(
    producer: &Producer,
    rt: &tokio::runtime::Handle,
    dlq: &str,
    origin: &Incoming,
    reason: &str,
) -> Result<(), SinkError> {
    let (partition, offset) = (origin.partition.to_string(), origin.offset.to_string());
    let headers = [
        Header { key: "origin_topic", value: origin.topic.as_bytes() },
        Header { key: "origin_partition", value: partition.as_bytes() },
        Header { key: "origin_offset", value: offset.as_bytes() },
        Header { key: "reason", value: reason.as_bytes() },
    ];
    let (key, value) = (origin.key.as_deref().unwrap_or_default(), origin.value.as_deref().unwrap_or_default());
    rt.block_on(producer.send(dlq, key, value, &headers))?;
    tracing::warn!(topic = %origin.topic, partition = origin.partition, offset = origin.offset, %reason, "record sent to the DLQ");
    Ok(())
}
