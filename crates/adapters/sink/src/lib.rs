//! The one exactly-once sink framework (DESIGN §5, issue 14 §1). Every sink is the same loop:
//!
//! 1. **assignment**: the source (Kafka's group, or memory) hands out partitions; each is *claimed* in the sink's own
//!    store (its `owner_epoch` bumped, fencing any earlier owner; its stored `next_offset` and anchor read), the
//!    stored position is checked against the log (`tally_kafka::position`: above the high watermark, below the low,
//!    a replaced anchor — each a loud, named error), and the partition is read from there;
//! 2. **bounded batches**: records are admitted only for claimed partitions, each offset once and in order (a record
//!    at or below one already held = the log went backwards: fail-stop), buffered per partition, and flushed when the
//!    [`Batching`] policy says so;
//! 3. **commit(batch, fence)**: the sink writes its effects and each partition's new offset in its own store, fenced
//!    by the claim (epoch + the batch starting where the last one ended). A batch that does not start at the claimed
//!    offset is a gap: fail-stop, never committed past. After the commit the claims advance and the source is told
//!    (Kafka's group commit, advisory).
//!
//! The sink supplies two functions — `claim` and `commit` — and the framework does the rest, so a new sink is those
//! two functions against its store.

mod kafka;
mod memory;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub use kafka::{KafkaSource, KafkaSourceConfig};
pub use memory::MemorySource;
use tally_kafka::position::{Claims, LogPositionError, PositionedClaim};
use tokio_util::sync::CancellationToken;

/// A record as consumed from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch, as the broker reports it.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl LogRecord {
    /// The record's size in memory, roughly: what the size-based flush counts.
    pub fn weight(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len)).sum();
        64 + self.key.as_ref().map_or(0, Vec::len) + self.value.as_ref().map_or(0, Vec::len) + headers
    }
}

/// A sink's ownership of one partition, as its store granted it: the epoch that fences earlier owners, where the
/// next batch must start, and the digest of the record before it (`tally_kafka::position`; verified against the log
/// after the claim, then taken).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
    pub epoch: i64,
    pub anchor: Option<Vec<u8>>,
}

impl PositionedClaim for Claim {
    fn next_offset(&self) -> i64 {
        self.next_offset
    }
    fn set_next_offset(&mut self, next: i64) {
        self.next_offset = next;
    }
    fn anchor_mut(&mut self) -> &mut Option<Vec<u8>> {
        &mut self.anchor
    }
    fn epoch(&self) -> i64 {
        self.epoch
    }
}

/// One partition's share of a batch: its claim and its records, contiguous from `claim.next_offset()`.
#[derive(Debug)]
pub struct Part<C> {
    pub claim: C,
    pub records: Vec<LogRecord>,
}

impl<C> Part<C> {
    /// The offset after the part's last record (what the partition's stored offset becomes).
    pub fn end(&self) -> i64 {
        self.records.last().map_or(0, |r| r.offset + 1)
    }
}

/// When buffered records become a batch.
#[derive(Debug, Clone, Copy)]
pub enum Batching {
    /// All partitions' records in one batch (one transaction), when `max_records` are held or the oldest has waited
    /// `max_wait`: the ledger.
    Together { max_records: usize, max_wait: Duration },
    /// Each partition its own batch, when it holds `max_records` records or `max_bytes`, or its oldest record is
    /// `max_age` old: the archive (one file per batch).
    PerPartition { max_records: usize, max_bytes: usize, max_age: Duration },
}

#[derive(Debug, thiserror::Error)]
pub enum FrameworkError {
    #[error("kafka consumer: {0}")]
    Consumer(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Position(#[from] LogPositionError),
    #[error("{topic}[{partition}]: the log continues at offset {found}, but the sink stopped at {expected}: records are missing from the log; refusing to commit past them")]
    Gap { topic: String, partition: i32, expected: i64, found: i64 },
}

/// Where records come from. The framework owns the loop; a source only delivers admitted records and reports
/// what happened to its assignment.
pub trait Source<C: PositionedClaim> {
    /// The claims of the partitions this member owns (filled by the source on assignment).
    fn claims(&self) -> &Claims<C>;
    /// The next admitted record of a claimed partition, or None within `timeout`.
    fn poll(&mut self, timeout: Duration) -> Result<Option<LogRecord>, FrameworkError>;
    /// A fatal position error found outside `poll` (in a rebalance callback, from the statistics).
    fn check(&mut self) -> Result<(), FrameworkError>;
    /// Whether partitions were revoked since the last call (buffered records are then dropped).
    fn take_revoked(&mut self) -> bool;
    /// After a commit: the new stored offsets (advisory for Kafka: lag tools read them).
    fn committed(&mut self, ends: &[(String, i32, i64)]);
    /// Leaves the group.
    fn close(&mut self);
}

/// Test hook: when set to a path, the first sink process that creates that file stops working after its first
/// commit — it polls and commits nothing more, yet stays up — until shutdown: the hung sink a watchdog must find.
pub const STALL_ONCE_ENV: &str = "TALLY_SINK_STALL_ONCE_MARKER";

#[derive(Default)]
struct Buffer {
    records: Vec<LogRecord>,
    bytes: usize,
    first_at: Option<Instant>,
}

/// Runs a sink until `shutdown` (then commits what it holds and leaves) or the first error. `commit` writes a batch
/// and each part's offset ([`Part::end`]), fenced by the part's claim, in the sink's store — all of it or an error;
/// it may take the records out of the parts.
pub fn run<C, S, E>(
    source: &mut S,
    batching: Batching,
    shutdown: &CancellationToken,
    mut commit: impl FnMut(&mut [Part<C>]) -> Result<(), E>,
) -> Result<(), E>
where
    C: PositionedClaim + Clone,
    S: Source<C>,
    E: From<FrameworkError>,
{
    let mut stall = std::env::var_os(STALL_ONCE_ENV).map(std::path::PathBuf::from);
    let mut buffers: BTreeMap<(String, i32), Buffer> = BTreeMap::new();
    let mut commits = 0u64;
    loop {
        let stopping = shutdown.is_cancelled();
        // Asked once, after the first commit (taken: no file system call per record afterwards).
        if commits == 1 && stall.take().is_some_and(|p| std::fs::File::create_new(p).is_ok()) {
            tracing::error!("{STALL_ONCE_ENV}: stalling after the first commit");
            while !shutdown.is_cancelled() {
                std::thread::sleep(Duration::from_millis(100));
            }
            source.close();
            return Ok(());
        }
        if !stopping {
            if let Some(record) = source.poll(Duration::from_millis(50))? {
                let buffer = buffers.entry((record.topic.clone(), record.partition)).or_default();
                // A record at or below what the buffer holds: the log went backwards under this owner.
                if let Some(last) = buffer.records.last().filter(|last| record.offset <= last.offset) {
                    return Err(FrameworkError::from(LogPositionError::Backwards {
                        topic: record.topic,
                        partition: record.partition,
                        stored: last.offset + 1,
                        found: record.offset,
                    })
                    .into());
                }
                buffer.bytes += record.weight();
                buffer.first_at.get_or_insert_with(Instant::now);
                buffer.records.push(record);
            }
        }
        source.check()?;
        if source.take_revoked() {
            buffers.clear();
        }
        let due: Vec<Vec<(String, i32)>> = match batching {
            Batching::Together { max_records, max_wait } => {
                let held: usize = buffers.values().map(|b| b.records.len()).sum();
                let oldest = buffers.values().filter_map(|b| b.first_at).min();
                let due = held >= max_records || oldest.is_some_and(|t| t.elapsed() >= max_wait);
                if (due || stopping) && held > 0 {
                    vec![buffers.iter().filter(|(_, b)| !b.records.is_empty()).map(|(tp, _)| tp.clone()).collect()]
                } else {
                    Vec::new()
                }
            }
            Batching::PerPartition { max_records, max_bytes, max_age } => buffers
                .iter()
                .filter(|(_, b)| !b.records.is_empty())
                .filter(|(_, b)| {
                    stopping
                        || b.records.len() >= max_records
                        || b.bytes >= max_bytes
                        || b.first_at.is_some_and(|t| t.elapsed() >= max_age)
                })
                .map(|(tp, _)| vec![tp.clone()])
                .collect(),
        };
        for partitions in due {
            let mut parts = Vec::with_capacity(partitions.len());
            for tp in &partitions {
                let records = buffers.remove(tp).map(|b| b.records).unwrap_or_default();
                // Only partitions still ours: a revoked one's records are read again by its next owner.
                let Some(claim) = source.claims().lock().expect("claims lock").get(tp).cloned() else { continue };
                let expected = claim.next_offset();
                if let Some(first) = records.first().filter(|r| r.offset != expected) {
                    return Err(FrameworkError::Gap {
                        topic: tp.0.clone(),
                        partition: tp.1,
                        expected,
                        found: first.offset,
                    }
                    .into());
                }
                if let Some(w) = records.windows(2).find(|w| w[1].offset != w[0].offset + 1) {
                    return Err(FrameworkError::Gap {
                        topic: tp.0.clone(),
                        partition: tp.1,
                        expected: w[0].offset + 1,
                        found: w[1].offset,
                    }
                    .into());
                }
                parts.push(Part { claim, records });
            }
            if parts.is_empty() {
                continue;
            }
            // Taken before the commit, which may consume the records.
            let ends: Vec<(String, i32, i64)> = parts
                .iter()
                .filter_map(|p| p.records.first().map(|r| (r.topic.clone(), r.partition, p.end())))
                .collect();
            commit(&mut parts)?;
            commits += 1;
            {
                let mut claims = source.claims().lock().expect("claims lock");
                for (topic, partition, end) in &ends {
                    if let Some(c) = claims.get_mut(&(topic.clone(), *partition)) {
                        c.set_next_offset(*end);
                    }
                }
            }
            source.committed(&ends);
        }
        if stopping {
            break;
        }
    }
    source.close();
    Ok(())
}
