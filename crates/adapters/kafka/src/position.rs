//! Where a sink's stored position stands against the partition's log (issue 12, item 7; DESIGN §5).
//!
//! A sink stores `next_offset` per partition with its effects. The log can go backwards under it: a topic deleted
//! and recreated, a broker's storage restored from an older copy. Then offsets restart low while the stored position
//! is high, and a sink that resets to `earliest` and drops "already seen" offsets skips every new record below its
//! old position. Three checks, each a named, fail-stop error — never a discard:
//!
//! 1. **On claim**, the stored offset must lie within the log's watermarks (`low ≤ next_offset ≤ high`).
//! 2. **The anchor**: the sink stores a digest of the last record it committed; after a claim it reads from
//!    `next_offset − 1` and the first record must be that record. A recreated log that has already grown past the
//!    old position (which no watermark can show) fails here.
//! 3. **While consuming**, a record below `next_offset` in an owned partition is the log going backwards, and a
//!    fetch position above the high watermark (seen in librdkafka's statistics, then confirmed by asking the broker
//!    for the watermarks) is a log that restarted while the sink was running (the local broker answers such fetches
//!    with nothing, not an error).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use sha2::{Digest, Sha256};

/// How often a sink's librdkafka reports statistics (the input of [`suspects`]).
pub const STATISTICS_INTERVAL_MS: u32 = 5000;

/// A SHA-256 over a record's key and value (each length-prefixed, `-1` for null): what the anchor compares.
pub fn record_digest(key: Option<&[u8]>, value: Option<&[u8]>) -> Vec<u8> {
    let mut h = Sha256::new();
    for part in [key, value] {
        match part {
            Some(bytes) => {
                h.update((bytes.len() as i64).to_be_bytes());
                h.update(bytes);
            }
            None => h.update((-1i64).to_be_bytes()),
        }
    }
    h.finalize().to_vec()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogPositionError {
    #[error("{topic}[{partition}]: the stored position {stored} is above the log's end {high}: the log restarted (a recreated topic, restored broker storage) and the sink refuses to consume it; reconcile the stored offsets first (docs/adr/0006-ledger-sink.md)")]
    AboveLog { topic: String, partition: i32, stored: i64, high: i64 },
    #[error("{topic}[{partition}]: the stored position {stored} is below the log's first offset {low}: records {stored}..{low} were deleted before this sink read them; refusing to consume past the gap")]
    BelowLog { topic: String, partition: i32, stored: i64, low: i64 },
    #[error("{topic}[{partition}]: the record at offset {offset} is not the one this sink committed there last: the log was replaced (a recreated topic); refusing to consume it (docs/adr/0006-ledger-sink.md)")]
    Replaced { topic: String, partition: i32, offset: i64 },
    #[error("{topic}[{partition}]: received offset {found} below the stored position {stored} in a partition this sink owns: the log went backwards; refusing to skip the record")]
    Backwards { topic: String, partition: i32, stored: i64, found: i64 },
}

/// Check 1: the stored position against the log's watermarks (records live at `low .. high`).
pub fn check_stored(topic: &str, partition: i32, stored: i64, low: i64, high: i64) -> Result<(), LogPositionError> {
    if stored > high {
        return Err(LogPositionError::AboveLog { topic: topic.to_owned(), partition, stored, high });
    }
    if stored < low {
        return Err(LogPositionError::BelowLog { topic: topic.to_owned(), partition, stored, low });
    }
    Ok(())
}

/// Where to seek after a claim, and the anchor to verify there.
pub type Start = (i64, Option<Vec<u8>>);

/// Where to start reading after a claim, and the anchor to verify first (None: nothing to verify — a partition
/// never committed, a position stored before anchors existed, or an anchor record removed by retention).
pub fn start(next_offset: i64, anchor: Option<Vec<u8>>, low: i64) -> Start {
    match anchor {
        Some(digest) if next_offset > low.max(0) => (next_offset - 1, Some(digest)),
        _ => (next_offset, None),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimCheckError {
    #[error("reading the log's watermarks: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Position(#[from] LogPositionError),
}

/// After a claim (blocking: asks the broker for the partition's watermarks): check 1, then where to seek and the
/// anchor to verify there.
pub fn after_claim<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
    next_offset: i64,
    anchor: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Start, ClaimCheckError> {
    let low = confirm(consumer, topic, partition, next_offset, timeout)?;
    Ok(start(next_offset, anchor, low))
}

/// What to do with a record received for a partition the sink owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// A new record: process it.
    Record,
    /// The anchor record, verified: drop it (it is committed already).
    Anchor,
}

/// Checks 2 and 3 for one record: `anchor` is taken once verified.
pub fn admit(
    topic: &str,
    partition: i32,
    next_offset: i64,
    anchor: &mut Option<Vec<u8>>,
    offset: i64,
    digest: impl FnOnce() -> Vec<u8>,
) -> Result<Admit, LogPositionError> {
    if let Some(expected) = anchor.take() {
        if offset == next_offset - 1 && digest() == expected {
            return Ok(Admit::Anchor);
        }
        return Err(LogPositionError::Replaced { topic: topic.to_owned(), partition, offset: next_offset - 1 });
    }
    if offset < next_offset {
        return Err(LogPositionError::Backwards {
            topic: topic.to_owned(),
            partition,
            stored: next_offset,
            found: offset,
        });
    }
    Ok(Admit::Record)
}

/// Check 3's second half, over librdkafka's periodic statistics: a partition whose fetch position stands above the
/// broker's high watermark is *suspect* — its log may have restarted under the sink. The statistics can be stale (a
/// high watermark remembered from an earlier assignment while the first fetch of a new one waits on a slow broker),
/// so a suspect is only a reason to ask the broker: [`confirm`] decides. Returns the (topic, partition)s whose fetch
/// position is above their high watermark.
pub fn suspects(stats: &Statistics) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for (topic, t) in &stats.topics {
        for (&partition, p) in &t.partitions {
            // -1 is librdkafka's internal UA partition; -1001 an unknown offset.
            if partition < 0 || !p.desired || p.hi_offset < 0 || p.next_offset < 0 {
                continue;
            }
            if p.next_offset > p.hi_offset {
                out.push((topic.clone(), partition));
            }
        }
    }
    out.sort();
    out
}

/// Asks the broker (blocking) whether a stored position still lies within its partition's log (check 1); returns the
/// log's first offset.
pub fn confirm<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
    next_offset: i64,
    timeout: Duration,
) -> Result<i64, ClaimCheckError> {
    let (low, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
    check_stored(topic, partition, next_offset, low, high)?;
    Ok(low)
}

/// What the checks need of a sink's claim on a partition.
pub trait PositionedClaim {
    /// Where the owner's next batch must start.
    fn next_offset(&self) -> i64;
    /// After a committed batch: where the next one starts.
    fn set_next_offset(&mut self, next: i64);
    /// The anchor still to verify (taken once verified).
    fn anchor_mut(&mut self) -> &mut Option<Vec<u8>>;
    /// The owner epoch the claim fenced earlier owners with (logged).
    fn epoch(&self) -> i64;
}

/// The assignment half of a sink's rebalance callback: claims each assigned partition in the sink's own store
/// (`claim`, retried through store outages until `stopping()`), checks the stored position against the log
/// ([`start_after_claim`]), and sets the offset each partition is read from. A log that went backwards goes to
/// `fail` and its partition is left out. Returns the claims, by (topic, partition).
pub fn claim_assigned<C: ConsumerContext, T: PositionedClaim, E: std::fmt::Display>(
    consumer: &BaseConsumer<C>,
    tpl: &mut rdkafka::TopicPartitionList,
    claim: impl Fn(&str, i32) -> Result<T, E>,
    stopping: impl Fn() -> bool,
    fail: impl Fn(LogPositionError),
) -> HashMap<(String, i32), T> {
    let mut claims = HashMap::new();
    let mut starts = Vec::new();
    for elem in tpl.elements() {
        let (topic, partition) = (elem.topic().to_owned(), elem.partition());
        // Claiming must succeed before consuming: retry through a database outage.
        let claimed = loop {
            match claim(&topic, partition) {
                Ok(c) => break Some(c),
                Err(e) if !stopping() => {
                    tracing::warn!(%topic, partition, error = %e, "claiming partition failed; retrying");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(_) => break None,
            }
        };
        let Some(mut claimed) = claimed else { continue };
        // The stored position against the log: within its watermarks, and the anchor record read again first.
        let anchor = claimed.anchor_mut().clone();
        let start = start_after_claim(consumer, &topic, partition, claimed.next_offset(), anchor, &stopping)
            .unwrap_or_else(|e| {
                fail(e);
                None
            });
        let Some((offset, anchor)) = start else { continue };
        *claimed.anchor_mut() = anchor;
        tracing::info!(%topic, partition, next_offset = claimed.next_offset(), epoch = claimed.epoch(), "claimed");
        starts.push((topic.clone(), partition, offset));
        claims.insert((topic, partition), claimed);
    }
    for (topic, partition, offset) in &starts {
        let _ = tpl.set_partition_offset(topic, *partition, rdkafka::Offset::Offset(*offset));
    }
    claims
}

/// A sink's claims, by (topic, partition).
pub type Claims<T> = Mutex<HashMap<(String, i32), T>>;

/// After a claim, inside the rebalance callback: [`after_claim`], retried through broker errors until `stopping()`.
/// `Ok(None)`: stopping. `Err`: the log went backwards (the caller stops the sink and leaves the partition alone).
pub fn start_after_claim<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
    next_offset: i64,
    anchor: Option<Vec<u8>>,
    stopping: impl Fn() -> bool,
) -> Result<Option<Start>, LogPositionError> {
    loop {
        match after_claim(consumer, topic, partition, next_offset, anchor.clone(), CLAIM_CHECK_TIMEOUT) {
            Ok(start) => return Ok(Some(start)),
            Err(ClaimCheckError::Position(e)) => return Err(e),
            Err(ClaimCheckError::Kafka(e)) if !stopping() => {
                tracing::warn!(%topic, partition, error = %e, "reading the watermarks failed; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(ClaimCheckError::Kafka(_)) => return Ok(None),
        }
    }
}

/// How long a claim check waits for the broker's watermarks before retrying.
pub const CLAIM_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// [`admit`] for a received message: None when its partition is not claimed (revoked meanwhile: the next owner
/// reads it again).
pub fn admit_message<T: PositionedClaim>(
    claims: &Claims<T>,
    m: &BorrowedMessage<'_>,
) -> Result<Option<Admit>, LogPositionError> {
    let mut claims = claims.lock().expect("claims lock");
    let Some(claim) = claims.get_mut(&(m.topic().to_owned(), m.partition())) else { return Ok(None) };
    let next_offset = claim.next_offset();
    let digest = || record_digest(m.key(), m.payload());
    admit(m.topic(), m.partition(), next_offset, claim.anchor_mut(), m.offset(), digest).map(Some)
}

/// Asks the broker about each suspect partition that is claimed: a stored position above the log's end is the
/// error; a broker that does not answer is asked again at the next report.
pub fn confirm_suspects<C: ConsumerContext, T: PositionedClaim>(
    consumer: &BaseConsumer<C>,
    suspects: Vec<(String, i32)>,
    claims: &Claims<T>,
) -> Result<(), LogPositionError> {
    for (topic, partition) in suspects {
        let next = claims.lock().expect("claims lock").get(&(topic.clone(), partition)).map(T::next_offset);
        let Some(next_offset) = next else { continue };
        match confirm(consumer, &topic, partition, next_offset, CLAIM_CHECK_TIMEOUT) {
            Ok(_) => {}
            Err(ClaimCheckError::Position(e)) => return Err(e),
            Err(ClaimCheckError::Kafka(e)) => {
                tracing::warn!(%topic, partition, error = %e, "reading the watermarks failed")
            }
        }
    }
    Ok(())
}

/// A consumer error that means the stored position is not in the log (the offset-reset error of
/// `auto.offset.reset = error`, or the broker's out-of-range answer): the sink must stop.
pub fn is_out_of_range(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode::{AutoOffsetReset, OffsetOutOfRange};
    matches!(e.rdkafka_error_code(), Some(AutoOffsetReset | OffsetOutOfRange))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_position_must_lie_within_the_log() {
        assert_eq!(check_stored("t", 0, 5, 0, 5), Ok(()));
        assert_eq!(check_stored("t", 0, 0, 0, 0), Ok(()));
        assert!(matches!(check_stored("t", 0, 6, 0, 5), Err(LogPositionError::AboveLog { stored: 6, high: 5, .. })));
        assert!(matches!(check_stored("t", 0, 2, 3, 9), Err(LogPositionError::BelowLog { stored: 2, low: 3, .. })));
    }

    #[test]
    fn the_anchor_is_read_first_unless_there_is_none_or_it_is_gone() {
        let d = record_digest(Some(b"k"), Some(b"v"));
        assert_eq!(start(10, Some(d.clone()), 0), (9, Some(d.clone())));
        assert_eq!(start(10, None, 0), (10, None));
        assert_eq!(start(0, Some(d.clone()), 0), (0, None));
        assert_eq!(start(10, Some(d), 10), (10, None), "retention removed the anchor record");
    }

    #[test]
    fn a_replaced_log_and_a_backwards_record_stop_the_sink() {
        let d = record_digest(Some(b"k"), Some(b"v"));
        let mut anchor = Some(d.clone());
        assert_eq!(admit("t", 0, 10, &mut anchor, 9, || d.clone()), Ok(Admit::Anchor));
        assert_eq!(anchor, None);
        assert_eq!(admit("t", 0, 10, &mut anchor, 10, || unreachable!()), Ok(Admit::Record));
        assert!(matches!(
            admit("t", 0, 10, &mut anchor, 3, || unreachable!()),
            Err(LogPositionError::Backwards { stored: 10, found: 3, .. })
        ));
        // Same offset, other content: the log was recreated and has grown past the old position.
        let mut anchor = Some(d.clone());
        let other = record_digest(Some(b"k"), Some(b"w"));
        assert!(matches!(
            admit("t", 0, 10, &mut anchor, 9, || other),
            Err(LogPositionError::Replaced { offset: 9, .. })
        ));
        // The anchor offset skipped: something else came first.
        let mut anchor = Some(d);
        assert!(matches!(admit("t", 0, 10, &mut anchor, 10, Vec::new), Err(LogPositionError::Replaced { .. })));
    }

    #[test]
    fn digests_tell_null_from_empty_and_key_from_value() {
        assert_ne!(record_digest(None, Some(b"")), record_digest(Some(b""), Some(b"")));
        assert_ne!(record_digest(Some(b"ab"), Some(b"c")), record_digest(Some(b"a"), Some(b"bc")));
    }

    fn stats(next: i64, hi: i64) -> Statistics {
        use rdkafka::statistics::{Partition, Topic};
        let partition =
            Partition { partition: 0, desired: true, next_offset: next, hi_offset: hi, ..Default::default() };
        let topic = Topic { topic: "t".into(), partitions: HashMap::from([(0, partition)]), ..Default::default() };
        Statistics { topics: HashMap::from([("t".to_owned(), topic)]), ..Default::default() }
    }

    #[test]
    fn a_fetch_position_above_the_high_watermark_makes_the_partition_suspect() {
        assert_eq!(suspects(&stats(10, 10)), Vec::<(String, i32)>::new());
        assert_eq!(suspects(&stats(10, 1)), vec![("t".to_owned(), 0)]);
        assert_eq!(suspects(&stats(10, -1001)), Vec::<(String, i32)>::new(), "an unknown watermark is no evidence");
    }
}
