//! `tally sink archive`: one blocking thread polls every topic, buffers records per partition, and turns a buffer
//! into a file when it is big or old enough: write the object, then enter it into the manifest in the transaction
//! that moves the partition's offset (fenced by the claimed epoch). A crash between the two leaves an object outside
//! the manifest — garbage for `tally archive gc`, never a gap or a duplicate: the next owner resumes at the stored
//! offset and writes the range again.

use std::time::Duration;

use tally_kafka::position::{self, LogPositionError};
use tally_kafka::{KafkaConfig, TOPICS};
use tally_postgres::PostgresConfig;
use tally_sink::{Batching, FrameworkError, KafkaSource, KafkaSourceConfig, Part};
use tokio_util::sync::CancellationToken;

use crate::file::encode;
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
    tokio::task::spawn_blocking(move || {
        let topics: Vec<String> = TOPICS.iter().map(|t| kafka.topic(t.name)).collect();
        let (claim_manifest, claim_rt) = (manifest.clone(), rt.clone());
        let mut source = KafkaSource::new(
            &KafkaSourceConfig {
                brokers: &kafka.brokers,
                group_id: &config.group_id,
                topics: &topics,
                session_timeout_ms: config.session_timeout_ms,
                max_poll_interval_ms: config.max_poll_interval_ms,
                // The archive flushes every few seconds anyway: an idle partition need not be asked often (each
                // empty fetch costs the local broker, the pipeline's bottleneck, a query per partition, and this
                // sink reads them all).
                fetch_wait_max_ms: 500,
            },
            Box::new(move |topic, partition| {
                claim_rt.block_on(claim_manifest.claim(topic, partition)).map_err(|e| e.to_string())
            }),
            shutdown.clone(),
        )?;
        let batching = Batching::PerPartition {
            max_records: config.flush_max_records,
            max_bytes: config.flush_max_bytes,
            max_age: Duration::from_millis(config.flush_max_age_ms),
        };
        let crash = CrashHook::from_env();
        tally_sink::run(&mut source, batching, &shutdown, |parts| {
            for part in parts.iter_mut() {
                flush(&manifest, &objects, &rt, part, &crash, &shutdown)?;
            }
            Ok(())
        })
    })
    .await
    .map_err(|e| SinkError::Join(e.to_string()))?
}

/// Writes one partition's batch as one file and commits it (the framework checked it starts at the claimed offset
/// and is contiguous).
fn flush(
    manifest: &Manifest,
    objects: &Objects,
    rt: &tokio::runtime::Handle,
    part: &Part<Claim>,
    crash: &CrashHook,
    shutdown: &CancellationToken,
) -> Result<(), SinkError> {
    let (claim, records) = (&part.claim, &part.records);
    let Some(last) = records.last() else { return Ok(()) };
    let anchor = position::record_digest(last.key.as_deref(), last.value.as_deref());
    let file = encode(records)?;
    let mut backoff = Duration::from_millis(200);
    // Retried for as long as the sink runs; once it is told to stop, a few more tries, then the batch is left
    // uncommitted (its offsets too: the next run reads it again) instead of holding the process for ever.
    let mut tries_after_stop = 0;
    let mut give_up = || {
        tries_after_stop += usize::from(shutdown.is_cancelled());
        tries_after_stop > 3
    };
    while let Err(e) = rt.block_on(objects.put(&file.path, file.bytes.clone())) {
        if give_up() {
            return Err(e.into());
        }
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
        match rt.block_on(manifest.commit(claim, &file, &anchor)) {
            Ok(()) => break,
            Err(e) if e.is_transient() && !give_up() => {
                tracing::warn!(path = %file.path, error = %e, "manifest commit failed; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
    tracing::debug!(path = %file.path, records = file.sum.records, "archived");
    Ok(())
}

/// A cheap non-deterministic number for the crash hook (no RNG dependency for a test hook).
fn chance() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    u64::from(nanos / 1000) ^ u64::from(std::process::id())
}
