//! `tally sink archive`: one blocking thread polls every topic, buffers records per partition, and turns a buffer
//! into a file when it is big or old enough: write the object, then enter it into the manifest in the transaction
//! that moves the partition's offset (fenced by the claimed epoch). A crash between the two leaves an object outside
//! the manifest — garbage for `tally archive gc`, never a gap or a duplicate: the next owner resumes at the stored
//! offset and writes the range again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tally_kafka::position::{self, Admit, LogPositionError};
use tally_kafka::{KafkaConfig, TOPICS};
use tally_postgres::PostgresConfig;
use tokio_util::sync::CancellationToken;

use crate::file::{encode, LogRecord};
use crate::manifest::{Claim, Manifest, ManifestError};
use crate::objects::Objects;
use crate::ArchiveConfig;

/// Test hook: when set to N (0–1000), the process aborts after writing an object and before entering it into the
/// manifest, with probability N/1000 — the crash window that leaves garbage. Used by the crash tests only.
pub const CRASH_AFTER_PUT_ENV: &str = "TALLY_ARCHIVE_CRASH_AFTER_PUT_PERMILLE";
/// Test hook: when set to a path, the first process of the sink that creates that file aborts in the same window
/// (one crash for the whole run, whatever restarts follow). Used by the chaos test of unexplained exits.
pub const CRASH_ONCE_ENV: &str = "TALLY_ARCHIVE_CRASH_ONCE_MARKER";

/// The crash hooks, read once at start.
struct CrashHook {
    permille: u64,
    once: Option<std::path::PathBuf>,
}

impl CrashHook {
    fn from_env() -> CrashHook {
        CrashHook {
            permille: std::env::var(CRASH_AFTER_PUT_ENV).ok().and_then(|v| v.parse().ok()).unwrap_or(0),
            once: std::env::var_os(CRASH_ONCE_ENV).map(Into::into),
        }
    }

    fn fires(&self) -> bool {
        (self.permille > 0 && chance() % 1000 < self.permille)
            || self.once.as_ref().is_some_and(|p| std::fs::File::create_new(p).is_ok())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("kafka consumer: {0}")]
    Consumer(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Postgres(#[from] tally_postgres::PgError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Objects(#[from] crate::ObjectError),
    #[error(transparent)]
    File(#[from] crate::file::FileError),
    #[error("sink thread: {0}")]
    Join(String),
    #[error("{topic}[{partition}]: the log continues at offset {found}, but the archive stopped at {expected}: records are missing from the log; refusing to archive past them")]
    Gap { topic: String, partition: i32, expected: i64, found: i64 },
    #[error(transparent)]
    Position(#[from] LogPositionError),
}

type Claims = Arc<Mutex<HashMap<(String, i32), Claim>>>;

struct SinkContext {
    manifest: Manifest,
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
            self.claims.lock().expect("claims lock").clear();
            self.revoked.store(true, Ordering::SeqCst);
            let _ = consumer.unassign();
            return;
        }
        let claims = position::claim_assigned(
            consumer,
            tpl,
            |topic, partition| self.rt.block_on(self.manifest.claim(topic, partition)),
            || self.shutdown.is_cancelled(),
            |e| self.fail(e),
        );
        *self.claims.lock().expect("claims lock") = claims;
        if let Err(e) = consumer.assign(tpl) {
            tracing::error!(error = %e, "assign failed");
        }
    }
}

/// A partition's records not yet in a file.
#[derive(Default)]
struct Buffer {
    records: Vec<LogRecord>,
    bytes: usize,
    first_at: Option<Instant>,
}

/// `tally sink archive`: consumes every topic until `shutdown`, then writes what it holds and leaves the group.
pub async fn run(
    config: ArchiveConfig,
    kafka: KafkaConfig,
    postgres: PostgresConfig,
    shutdown: CancellationToken,
) -> Result<(), SinkError> {
    let pool = tally_postgres::pool(&postgres)?;
    tally_postgres::migrate(&pool).await?;
    let manifest = Manifest::new(pool, config.group_id.clone());
    let objects = Objects::open(&config.location)?;
    tracing::info!(location = objects.location(), "archive sink starting");
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || consume(config, kafka, manifest, objects, rt, shutdown))
        .await
        .map_err(|e| SinkError::Join(e.to_string()))?
}

fn consume(
    config: ArchiveConfig,
    kafka: KafkaConfig,
    manifest: Manifest,
    objects: Objects,
    rt: tokio::runtime::Handle,
    shutdown: CancellationToken,
) -> Result<(), SinkError> {
    let claims: Claims = Arc::default();
    let context = SinkContext {
        manifest: manifest.clone(),
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
        // The archive flushes every few seconds anyway: an idle partition need not be asked often (each empty fetch
        // costs the local broker, the pipeline's bottleneck, a query per partition, and this sink reads them all).
        .set("fetch.wait.max.ms", "500")
        .set("allow.auto.create.topics", "false")
        .create_with_context(context)?;
    let topics: Vec<String> = TOPICS.iter().map(|t| kafka.topic(t.name)).collect();
    consumer.subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())?;
    let crash = CrashHook::from_env();
    let max_age = Duration::from_millis(config.flush_max_age_ms);

    let mut buffers: HashMap<(String, i32), Buffer> = HashMap::new();
    loop {
        let stopping = shutdown.is_cancelled();
        if !stopping {
            if let Some(result) = consumer.poll(Duration::from_millis(50)) {
                match result {
                    Ok(m) if position::admit_message(&claims, &m)? == Some(Admit::Record) => {
                        let record = LogRecord {
                            topic: m.topic().to_owned(),
                            partition: m.partition(),
                            offset: m.offset(),
                            timestamp_ms: m.timestamp().to_millis(),
                            key: m.key().map(<[u8]>::to_vec),
                            value: m.payload().map(<[u8]>::to_vec),
                            headers: m
                                .headers()
                                .map(|hs| hs.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect())
                                .unwrap_or_default(),
                        };
                        let buffer = buffers.entry((record.topic.clone(), record.partition)).or_default();
                        // A record at or below what the buffer holds: the log went backwards under this owner.
                        if let Some(last) = buffer.records.last().filter(|last| record.offset <= last.offset) {
                            return Err(LogPositionError::Backwards {
                                topic: record.topic,
                                partition: record.partition,
                                stored: last.offset + 1,
                                found: record.offset,
                            }
                            .into());
                        }
                        buffer.bytes += record.weight();
                        buffer.first_at.get_or_insert_with(Instant::now);
                        buffer.records.push(record);
                    }
                    Ok(_) => {}
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
            buffers.clear();
        }
        for (tp, buffer) in buffers.iter_mut() {
            let due = buffer.records.len() >= config.flush_max_records
                || buffer.bytes >= config.flush_max_bytes
                || buffer.first_at.is_some_and(|t| t.elapsed() >= max_age);
            if (due || stopping) && !buffer.records.is_empty() {
                let records = std::mem::take(&mut buffer.records);
                *buffer = Buffer::default();
                if let Some(end) = flush(&claims, &manifest, &objects, &rt, tp, records, &crash)? {
                    let mut tpl = TopicPartitionList::new();
                    let _ = tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(end));
                    // Advisory only: the manifest's offsets are the truth; this keeps lag tools meaningful.
                    let _ = consumer.commit(&tpl, CommitMode::Async);
                }
            }
        }
        if stopping {
            break;
        }
    }
    consumer.unsubscribe();
    Ok(())
}

/// Writes one partition's buffered records as one file and commits it; returns the new offset, or None if the
/// partition is no longer ours (the records are dropped; the next owner reads them again).
fn flush(
    claims: &Claims,
    manifest: &Manifest,
    objects: &Objects,
    rt: &tokio::runtime::Handle,
    tp: &(String, i32),
    records: Vec<LogRecord>,
    crash: &CrashHook,
) -> Result<Option<i64>, SinkError> {
    let Some(claim) = claims.lock().expect("claims lock").get(tp).cloned() else { return Ok(None) };
    let Some(last) = records.last() else { return Ok(None) };
    let anchor = position::record_digest(last.key.as_deref(), last.value.as_deref());
    // Every offset from the stored position on, each once: a jump means records vanished from the log (truncation,
    // a recreated topic, a reset to `earliest`) and must stop the sink rather than be archived past.
    for (i, r) in records.iter().enumerate() {
        let expected = claim.next_offset + i as i64;
        if r.offset != expected {
            return Err(SinkError::Gap { topic: tp.0.clone(), partition: tp.1, expected, found: r.offset });
        }
    }
    let file = encode(&records)?;
    let mut backoff = Duration::from_millis(200);
    while let Err(e) = rt.block_on(objects.put(&file.path, file.bytes.clone())) {
        tracing::warn!(path = %file.path, error = %e, "writing archive file failed; retrying");
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
    if crash.fires() {
        tracing::error!(path = %file.path, "crash hook: aborting between object write and manifest commit");
        std::process::abort();
    }
    let mut backoff = Duration::from_millis(200);
    loop {
        match rt.block_on(manifest.commit(&claim, &file, &anchor)) {
            Ok(()) => break,
            Err(e) if e.is_transient() => {
                tracing::warn!(path = %file.path, error = %e, "manifest commit failed; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
    tracing::debug!(path = %file.path, records = file.sum.records, "archived");
    if let Some(c) = claims.lock().expect("claims lock").get_mut(tp) {
        c.next_offset = file.end_offset;
    }
    Ok(Some(file.end_offset))
}

/// A cheap non-deterministic number for the crash hook (no RNG dependency for a test hook).
fn chance() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    u64::from(nanos / 1000) ^ u64::from(std::process::id())
}
