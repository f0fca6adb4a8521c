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
//!    fetch position above the high watermark (seen in librdkafka's statistics, twice in a row) is a log that
//!    restarted while the sink was running (the local broker answers such fetches with nothing, not an error).

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::statistics::Statistics;
use sha2::{Digest, Sha256};

/// How often a sink's librdkafka reports statistics (the input of [`LogWatch`]).
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

/// Where to start reading after a claim, and the anchor to verify first (None: nothing to verify — a partition
/// never committed, a position stored before anchors existed, or an anchor record removed by retention).
pub fn start(next_offset: i64, anchor: Option<Vec<u8>>, low: i64) -> (i64, Option<Vec<u8>>) {
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
) -> Result<(i64, Option<Vec<u8>>), ClaimCheckError> {
    let (low, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
    check_stored(topic, partition, next_offset, low, high)?;
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
/// broker's high watermark in two consecutive reports has a log that restarted under the sink.
#[derive(Debug, Default)]
pub struct LogWatch {
    above: HashMap<(String, i32), u32>,
}

impl LogWatch {
    pub fn observe(&mut self, stats: &Statistics) -> Option<LogPositionError> {
        let mut seen = HashMap::new();
        for (topic, t) in &stats.topics {
            for (&partition, p) in &t.partitions {
                // -1 is librdkafka's internal UA partition; -1001 an unknown offset.
                if partition < 0 || !p.desired || p.hi_offset < 0 || p.next_offset < 0 {
                    continue;
                }
                if p.next_offset > p.hi_offset {
                    let key = (topic.clone(), partition);
                    let n = self.above.get(&key).copied().unwrap_or(0) + 1;
                    if n >= 2 {
                        return Some(LogPositionError::AboveLog {
                            topic: topic.clone(),
                            partition,
                            stored: p.next_offset,
                            high: p.hi_offset,
                        });
                    }
                    seen.insert(key, n);
                }
            }
        }
        self.above = seen;
        None
    }
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
    fn a_fetch_position_above_the_log_twice_in_a_row_is_a_restarted_log() {
        let mut w = LogWatch::default();
        assert_eq!(w.observe(&stats(10, 10)), None);
        assert_eq!(w.observe(&stats(10, 1)), None, "once may be a report between two updates");
        assert!(matches!(w.observe(&stats(10, 1)), Some(LogPositionError::AboveLog { stored: 10, high: 1, .. })));
        let mut w = LogWatch::default();
        assert_eq!(w.observe(&stats(10, 1)), None);
        assert_eq!(w.observe(&stats(12, 12)), None, "caught up again: the count starts over");
        assert_eq!(w.observe(&stats(13, 1)), None);
    }
}
