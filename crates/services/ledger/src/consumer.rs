//! The consumer loop: one blocking thread that polls, batches, and commits through the store. Rebalances are handled
//! in the poll thread itself (librdkafka calls back from `poll`), so a revoked partition's pending records are dropped
//! before anything else happens, and an assigned partition is claimed (epoch bump) and seeked to the stored offset.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tally_kafka::position::{self, Admit, LogPositionError};
use tally_kafka::{Header, KafkaConfig, Producer};
use tally_postgres::PostgresConfig;
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

type Claims = Arc<Mutex<HashMap<(String, i32), PartitionClaim>>>;

struct SinkContext {
    store: LedgerStore,
    rt: tokio::runtime::Handle,
    claims: Claims,
    revoked: AtomicBool,
    shutdown: CancellationToken,
    /// A log that went backwards, found in a callback: the poll loop stops the sink with it.
    fatal: Mutex<Option<LogPositionError>>,
    /// Partitions whose fetch position the statistics show above the high watermark: the poll loop asks the broker.
    suspects: Mutex<Vec<(String, i32)>>,
}

impl SinkContext {
    fn fail(&self, e: LogPositionError) {
        tracing::error!(error = %e, "stopping the sink");
        self.fatal.lock().expect("fatal lock").get_or_insert(e);
    }
}

impl ClientContext for SinkContext {
    fn stats(&self, statistics: rdkafka::statistics::Statistics) {
        let suspects = position::suspects(&statistics);
        if !suspects.is_empty() {
            *self.suspects.lock().expect("suspects lock") = suspects;
        }
    }
}

impl ConsumerContext for SinkContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS {
            // Revoke (or a rebalance error): forget everything not yet committed; the next owner resumes from the
            // stored offsets.
            self.claims.lock().expect("claims lock").clear();
            self.revoked.store(true, Ordering::SeqCst);
            let _ = consumer.unassign();
            return;
        }
        let claims = position::claim_assigned(
            consumer,
            tpl,
            |topic, partition| self.rt.block_on(self.store.claim(topic, partition)),
            || self.shutdown.is_cancelled(),
            |e| self.fail(e),
        );
        *self.claims.lock().expect("claims lock") = claims;
        if let Err(e) = consumer.assign(tpl) {
            tracing::error!(error = %e, "assign failed");
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
    tokio::task::spawn_blocking(move || consume(config, kafka, store, producer, rt, shutdown))
        .await
        .map_err(|e| SinkError::Join(e.to_string()))?
}

fn consume(
    config: LedgerConfig,
    kafka: KafkaConfig,
    store: LedgerStore,
    producer: Producer,
    rt: tokio::runtime::Handle,
    shutdown: CancellationToken,
) -> Result<(), SinkError> {
    let claims: Claims = Arc::default();
    let context = SinkContext {
        store: store.clone(),
        rt: rt.clone(),
        claims: claims.clone(),
        revoked: AtomicBool::new(false),
        shutdown: shutdown.clone(),
        fatal: Mutex::default(),
        suspects: Mutex::default(),
    };
    let consumer: BaseConsumer<SinkContext> = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // Every assignment seeks to a stored offset; one out of range is a log that went backwards: an error, never a
        // silent reset (tally_kafka::position).
        .set("auto.offset.reset", "error")
        .set("statistics.interval.ms", position::STATISTICS_INTERVAL_MS.to_string())
        .set("session.timeout.ms", config.session_timeout_ms.to_string())
        .set("max.poll.interval.ms", config.max_poll_interval_ms.to_string())
        // Answer fetches as soon as data is there: the batch timer, not the broker, bounds latency.
        .set("fetch.wait.max.ms", "50")
        .set("allow.auto.create.topics", "false")
        .create_with_context(context)?;
    let topics: Vec<String> = LEDGER_TOPICS.iter().map(|t| kafka.topic(t)).collect();
    consumer.subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())?;
    let dlq = kafka.topic("payments.dlq.v1");
    let max_wait = Duration::from_millis(config.batch_max_wait_ms);

    let mut pending: Vec<Decoded> = Vec::new();
    let mut first_at: Option<Instant> = None;
    loop {
        let stopping = shutdown.is_cancelled();
        if !stopping {
            if let Some(result) = consumer.poll(Duration::from_millis(50)) {
                match result {
                    Ok(m) => {
                        if position::admit_message(&claims, &m)? == Some(Admit::Record) {
                            pending.push(Decoded::decode(Incoming {
                                topic: m.topic().to_owned(),
                                partition: m.partition(),
                                offset: m.offset(),
                                key: m.key().map(<[u8]>::to_vec),
                                value: m.payload().map(<[u8]>::to_vec),
                            }));
                            first_at.get_or_insert_with(Instant::now);
                        }
                    }
                    // The stored position is not in the log: stop (ADR 0006). Anything else librdkafka retries.
                    Err(e) if position::is_out_of_range(&e) => return Err(SinkError::Consumer(e)),
                    Err(e) => tracing::warn!(error = %e, "consumer error"),
                }
            }
        }
        if let Some(e) = consumer.context().fatal.lock().expect("fatal lock").take() {
            return Err(e.into());
        }
        let suspects = std::mem::take(&mut *consumer.context().suspects.lock().expect("suspects lock"));
        position::confirm_suspects(&consumer, suspects, &claims)?;
        if consumer.context().revoked.swap(false, Ordering::SeqCst) {
            pending.clear();
            first_at = None;
        }
        let due = pending.len() >= config.batch_max_records || first_at.is_some_and(|t| t.elapsed() >= max_wait);
        if (due || stopping) && !pending.is_empty() {
            flush(&consumer, &claims, &store, &producer, &dlq, &rt, &mut pending)?;
            first_at = None;
        }
        if stopping {
            break;
        }
    }
    consumer.unsubscribe();
    Ok(())
}

/// Commits `pending` (all of it, or fails): DLQ copies first, then effects + offsets in one transaction, then the
/// advisory Kafka commit. Retries through database outages; a fence is fatal (another owner has the partition).
fn flush(
    consumer: &BaseConsumer<SinkContext>,
    claims: &Claims,
    store: &LedgerStore,
    producer: &Producer,
    dlq: &str,
    rt: &tokio::runtime::Handle,
    pending: &mut Vec<Decoded>,
) -> Result<(), SinkError> {
    let owned: HashMap<(String, i32), PartitionClaim> = claims.lock().expect("claims lock").clone();
    // Only records of partitions we own (`admit` stopped the sink at any below the claimed position).
    pending.retain(|d| {
        let o = d.origin();
        owned.contains_key(&(o.topic.clone(), o.partition))
    });
    if pending.is_empty() {
        return Ok(());
    }
    // A partition's records must continue exactly where its last batch ended, each offset once: a jump means records
    // vanished from the log (truncation, a recreated topic), which must stop the sink rather than be committed past.
    let mut expected: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for d in pending.iter() {
        let o = d.origin();
        let tp = (o.topic.clone(), o.partition);
        let next = expected.entry(tp.clone()).or_insert(owned[&tp].next_offset);
        if o.offset != *next {
            return Err(SinkError::Gap { topic: tp.0, partition: tp.1, expected: *next, found: o.offset });
        }
        *next += 1;
    }
    let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for d in pending.iter() {
        let o = d.origin();
        let end = ends.entry((o.topic.clone(), o.partition)).or_insert(0);
        *end = (*end).max(o.offset + 1);
    }
    let ranges: Vec<(PartitionClaim, i64)> = ends.iter().map(|(tp, end)| (owned[tp].clone(), *end)).collect();

    for d in pending.iter() {
        if let Decoded::Reject { origin, reason } = d {
            send_to_dlq(producer, rt, dlq, origin, reason)?;
        }
    }

    let outcome = match commit_retrying(store, rt, &ranges, pending) {
        Ok(o) => o,
        Err(e) if e.is_data_error() => {
            tracing::warn!(error = %e, "batch refused by the database; isolating the record that caused it");
            isolate(claims, store, producer, dlq, rt, pending)?;
            pending.clear();
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    tracing::debug!(?outcome, records = pending.len(), "batch committed");
    let mut tpl = TopicPartitionList::new();
    {
        let mut claims = claims.lock().expect("claims lock");
        for ((topic, partition), end) in &ends {
            if let Some(c) = claims.get_mut(&(topic.clone(), *partition)) {
                c.next_offset = *end;
            }
            let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*end));
        }
    }
    // Advisory only: the stored offsets are the truth; this keeps standard lag tools meaningful.
    let _ = consumer.commit(&tpl, CommitMode::Async);
    pending.clear();
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
    claims: &Claims,
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
        let Some(claim) = claims.lock().expect("claims lock").get(&tp).cloned() else { continue };
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
        if let Some(c) = claims.lock().expect("claims lock").get_mut(&tp) {
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
