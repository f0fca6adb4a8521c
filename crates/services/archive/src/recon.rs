//! `tally recon completeness`: for every topic-partition, four views of the same offsets — the broker's log
//! (watermarks), the archive (manifest + objects), the ledger (event log, duplicates and rejects: every consumed
//! offset is accounted for exactly once) and each sink's stored offset — compared range by range.
//!
//! Ranges are the archive's files. For each one, PostgreSQL computes the ledger's checksum of the same range
//! ([`crate::checksum`]) and only a range whose figures differ is read back and compared offset by offset, so a clean
//! pass moves one row per file, not one per record.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use tally_kafka::{KafkaConfig, Watermarks, TOPICS};
use uuid::Uuid;

use crate::checksum::{FactMoney, MONEY_SQL, ROW_SQL};
use crate::file::read_facts;
use crate::manifest::ManifestFile;
use crate::objects::Objects;

#[derive(Debug, thiserror::Error)]
pub enum ReconError {
    #[error(transparent)]
    Kafka(#[from] tally_kafka::KafkaError),
    #[error("postgres: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error(transparent)]
    Manifest(#[from] crate::ManifestError),
    #[error(transparent)]
    Objects(#[from] crate::ObjectError),
    #[error("{0}")]
    Other(String),
}

/// What the log says about a partition; the broker by default, given directly by the benchmark.
pub trait LogView {
    /// Watermarks of every partition of `topic` (None: the topic does not exist).
    fn watermarks(&self, topic: &str) -> Result<Option<Vec<Watermarks>>, ReconError>;
}

/// The broker's log.
pub struct Broker {
    pub brokers: String,
    pub timeout: Duration,
}

impl LogView for Broker {
    fn watermarks(&self, topic: &str) -> Result<Option<Vec<Watermarks>>, ReconError> {
        Ok(tally_kafka::watermarks(&self.brokers, topic, self.timeout)?)
    }
}

#[derive(Debug, Clone)]
pub struct ReconOptions {
    /// The ledger sink's group (its offsets in `sink_offsets`).
    pub ledger_group: String,
    /// The topics the ledger books, with the prefix applied.
    pub ledger_topics: Vec<String>,
    pub archive_group: String,
    /// Ranges compared in parallel (one database connection each).
    pub parallelism: usize,
    /// Compare every range offset by offset (read every file and every ledger row), not only the ranges whose
    /// checksums differ: slower, for when the checksums themselves are in doubt — and the benchmark's baseline.
    pub full_compare: bool,
}

/// One finding. Every kind but the sink lag (reported per partition, not here) makes the report unclean.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Discrepancy {
    /// Offsets below the archive's stored offset that no manifest file holds.
    ArchiveGap { topic: String, partition: i32, from: i64, to: i64 },
    /// Offsets two manifest files hold.
    ArchiveOverlap { topic: String, partition: i32, from: i64, to: i64, path: String },
    /// A manifest file whose object is gone.
    ArchiveFileMissing { topic: String, partition: i32, from: i64, to: i64, path: String },
    /// A manifest file whose object is not what was written (size).
    ArchiveFileChanged { topic: String, partition: i32, path: String, manifest_bytes: i64, object_bytes: i64 },
    /// A file holding fewer records than its offset range: offsets inside it were never archived.
    ArchiveFileHoles { topic: String, partition: i32, path: String, records: i64, span: i64 },
    /// Manifest files beyond the archive sink's stored offset.
    ManifestBeyondOffset { topic: String, partition: i32, manifest_end: i64, next_offset: i64 },
    /// A sink's stored offset is above the log's end: the log lost records (or was recreated) under it.
    OffsetBeyondLog { topic: String, partition: i32, group: String, next_offset: i64, high: i64 },
    /// The log's start moved past records a sink had not read yet: they are gone.
    LogTruncated { topic: String, partition: i32, group: String, next_offset: i64, low: i64 },
    /// Offsets the ledger consumed (below its stored offset) but accounts for nowhere: facts missing from the ledger.
    LedgerMissing { topic: String, partition: i32, from: i64, to: i64, facts_in_archive: i64 },
    /// A ledger row at an offset the archive does not hold.
    LedgerExtra { topic: String, partition: i32, offset: i64 },
    /// The ledger booked a different fact at an offset than the archive holds there.
    LedgerFactDiffers { topic: String, partition: i32, offset: i64, archive: Option<Uuid>, ledger: Option<Uuid> },
    /// One fact booked more than once (event log rows or journals).
    DoubleBooked { fact_key: Uuid, bookings: Vec<String> },
    /// The ledger rejected a record that the archive holds as a fact its posting rules accept: money left unbooked.
    LedgerRejectedBookable { topic: String, partition: i32, offset: i64, fact_key: Uuid },
    /// The ledger booked the archived fact with other money (amount, fee or currency) than the archive holds.
    LedgerMoneyDiffers {
        topic: String,
        partition: i32,
        offset: i64,
        fact_key: Uuid,
        archived: FactMoney,
        booked: FactMoney,
    },
}

/// One sink's position on a partition.
#[derive(Debug, Clone, Serialize)]
pub struct SinkPosition {
    pub group: String,
    pub next_offset: i64,
    pub lag: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionReport {
    pub topic: String,
    pub partition: i32,
    pub log_low: i64,
    pub log_high: i64,
    pub archive_files: usize,
    pub archived_records: i64,
    pub sinks: Vec<SinkPosition>,
    pub discrepancies: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub clean: bool,
    pub partitions: Vec<PartitionReport>,
    pub discrepancies: Vec<Discrepancy>,
    /// Objects outside the manifest (`tally archive gc` removes them); garbage, not a discrepancy.
    pub orphan_files: usize,
    pub archived_records: i64,
    pub ledger_rows: i64,
    /// Ranges compared by checksum, and those whose checksums differed and were compared offset by offset.
    pub ranges_compared: usize,
    pub ranges_drilled: usize,
    pub elapsed_ms: u64,
}

/// A range of one partition: a manifest file whose object is present, or offsets with no usable file.
#[derive(Debug, Clone)]
struct Segment {
    start: i64,
    end: i64,
    file: Option<ManifestFile>,
}

pub async fn completeness(
    log: &(dyn LogView + Sync),
    kafka: &KafkaConfig,
    pool: &Pool,
    objects: &Objects,
    options: &ReconOptions,
) -> Result<Report, ReconError> {
    let started = Instant::now();
    // This deployment's topics (its prefix); others sharing the database and store are not in scope.
    let scope: BTreeSet<String> = TOPICS.iter().map(|t| kafka.topic(t.name)).collect();
    // The manifest and the sinks' offsets from one snapshot (a file committed between two reads would otherwise
    // look like a gap); the objects listed after it (a file is written before its manifest row).
    let (files, sinks) = snapshot(pool).await?;
    let mut by_partition: HashMap<(String, i32), Vec<ManifestFile>> = HashMap::new();
    for f in files.into_iter().filter(|f| scope.contains(&f.topic)) {
        by_partition.entry((f.topic.clone(), f.partition)).or_default().push(f);
    }
    let listed: HashMap<String, u64> = objects.list().await?.into_iter().map(|l| (l.path, l.size)).collect();
    let manifest_paths: BTreeSet<&str> = by_partition.values().flatten().map(|f| f.path.as_str()).collect();
    let orphan_files = listed
        .keys()
        .filter(|p| crate::parse_object_path(p).is_some_and(|(t, ..)| scope.contains(&t)))
        .filter(|p| !manifest_paths.contains(p.as_str()))
        .count();

    let mut discrepancies: Vec<Discrepancy> = Vec::new();
    let mut partitions = Vec::new();
    // Ledger work: (topic, partition, ledger next offset, segments).
    let mut ledger_work: Vec<(String, i32, i64, Vec<Segment>)> = Vec::new();
    for spec in TOPICS {
        let topic = kafka.topic(spec.name);
        let Some(marks) = log.watermarks(&topic)? else { continue };
        for w in marks {
            let key = (topic.clone(), w.partition);
            let positions = sinks.get(&key).cloned().unwrap_or_default();
            let before = discrepancies.len();
            for (group, next) in &positions {
                if *next > w.high {
                    discrepancies.push(Discrepancy::OffsetBeyondLog {
                        topic: topic.clone(),
                        partition: w.partition,
                        group: group.clone(),
                        next_offset: *next,
                        high: w.high,
                    });
                } else if w.low > *next {
                    discrepancies.push(Discrepancy::LogTruncated {
                        topic: topic.clone(),
                        partition: w.partition,
                        group: group.clone(),
                        next_offset: *next,
                        low: w.low,
                    });
                }
            }
            let archive_next = positions.get(&options.archive_group).copied().unwrap_or(0);
            let files = by_partition.remove(&key).unwrap_or_default();
            let archived_records = files.iter().map(|f| f.records).sum();
            let archive_files = files.len();
            let mut segments = archive_segments(&topic, w.partition, files, archive_next, &listed, &mut discrepancies);
            if options.ledger_topics.contains(&topic) {
                let ledger_next = positions.get(&options.ledger_group).copied().unwrap_or(0);
                let covered = segments.last().map_or(0, |s| s.end);
                if covered < ledger_next {
                    segments.push(Segment { start: covered, end: ledger_next, file: None });
                }
                segments.retain(|s| s.start < ledger_next);
                if !segments.is_empty() {
                    ledger_work.push((topic.clone(), w.partition, ledger_next, segments));
                }
            }
            partitions.push(PartitionReport {
                topic: topic.clone(),
                partition: w.partition,
                log_low: w.low,
                log_high: w.high,
                archive_files,
                archived_records,
                sinks: positions
                    .iter()
                    .map(|(g, n)| SinkPosition { group: g.clone(), next_offset: *n, lag: w.high - n })
                    .collect(),
                discrepancies: discrepancies.len() - before,
            });
        }
    }
    // Manifest rows of partitions the log does not have at all.
    for ((topic, partition), files) in by_partition {
        let end = files.iter().map(|f| f.end_offset).max().unwrap_or(0);
        discrepancies.push(Discrepancy::OffsetBeyondLog {
            topic,
            partition,
            group: options.archive_group.clone(),
            next_offset: end,
            high: 0,
        });
    }

    // The ledger, range by range, in parallel.
    let compared = ledger_work.iter().map(|w| w.3.len()).sum();
    // The global double-booking check runs beside the per-range comparisons (it scans the fact-key indexes).
    let ranges = futures::stream::iter(ledger_work)
        .map(|(topic, partition, next, segments)| {
            compare_ledger(pool, objects, topic, partition, next, segments, options.full_compare)
        })
        .buffer_unordered(options.parallelism.max(1))
        .try_collect::<Vec<LedgerFindings>>();
    let (results, double) = futures::future::try_join(ranges, double_bookings(pool)).await?;
    let mut double: BTreeMap<Uuid, BTreeSet<String>> = double;
    let (mut ledger_rows, mut drilled) = (0, 0);
    for r in results {
        ledger_rows += r.rows;
        drilled += r.drilled;
        discrepancies.extend(r.discrepancies);
        for (k, b) in r.double {
            double.entry(k).or_default().extend(b);
        }
    }
    for (fact_key, bookings) in double {
        discrepancies.push(Discrepancy::DoubleBooked { fact_key, bookings: bookings.into_iter().collect() });
    }
    discrepancies.sort();
    for p in &mut partitions {
        p.discrepancies = discrepancies.iter().filter(|d| d.partition() == Some((&p.topic, p.partition))).count();
    }
    Ok(Report {
        clean: discrepancies.is_empty(),
        archived_records: partitions.iter().map(|p| p.archived_records).sum(),
        partitions,
        discrepancies,
        orphan_files,
        ledger_rows,
        ranges_compared: compared,
        ranges_drilled: drilled,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

impl Discrepancy {
    fn partition(&self) -> Option<(&String, i32)> {
        use Discrepancy::*;
        match self {
            ArchiveGap { topic, partition, .. }
            | ArchiveOverlap { topic, partition, .. }
            | ArchiveFileMissing { topic, partition, .. }
            | ArchiveFileChanged { topic, partition, .. }
            | ArchiveFileHoles { topic, partition, .. }
            | ManifestBeyondOffset { topic, partition, .. }
            | OffsetBeyondLog { topic, partition, .. }
            | LogTruncated { topic, partition, .. }
            | LedgerMissing { topic, partition, .. }
            | LedgerExtra { topic, partition, .. }
            | LedgerFactDiffers { topic, partition, .. }
            | LedgerRejectedBookable { topic, partition, .. }
            | LedgerMoneyDiffers { topic, partition, .. } => Some((topic, *partition)),
            DoubleBooked { .. } => None,
        }
    }
}

type SinkOffsets = HashMap<(String, i32), BTreeMap<String, i64>>;

/// The manifest, and `sink_offsets` as (topic, partition) → group → next offset, read in one snapshot.
async fn snapshot(pool: &Pool) -> Result<(Vec<ManifestFile>, SinkOffsets), ReconError> {
    let mut client = pool.get().await?;
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let files = crate::manifest::list_files_in(&tx).await?;
    let rows = tx.query("SELECT group_id, topic, kafka_partition, next_offset FROM sink_offsets", &[]).await?;
    tx.commit().await?;
    let mut out: SinkOffsets = HashMap::new();
    for r in rows {
        out.entry((r.get(1), r.get(2))).or_default().insert(r.get(0), r.get(3));
    }
    Ok((files, out))
}

/// Walks a partition's manifest files in offset order: reports gaps, overlaps, missing or changed objects, and
/// returns the segments covering `0 .. max(end of files, archive offset)`.
fn archive_segments(
    topic: &str,
    partition: i32,
    mut files: Vec<ManifestFile>,
    archive_next: i64,
    listed: &HashMap<String, u64>,
    out: &mut Vec<Discrepancy>,
) -> Vec<Segment> {
    files.sort_by_key(|f| (f.start_offset, f.end_offset));
    let mut segments = Vec::new();
    let mut cursor = 0;
    for f in files {
        if f.start_offset < cursor {
            out.push(Discrepancy::ArchiveOverlap {
                topic: topic.to_owned(),
                partition,
                from: f.start_offset,
                to: f.end_offset.min(cursor),
                path: f.path.clone(),
            });
            if f.end_offset > cursor {
                segments.push(Segment { start: cursor, end: f.end_offset, file: None });
                cursor = f.end_offset;
            }
            continue;
        }
        if f.start_offset > cursor {
            out.push(Discrepancy::ArchiveGap { topic: topic.to_owned(), partition, from: cursor, to: f.start_offset });
            segments.push(Segment { start: cursor, end: f.start_offset, file: None });
        }
        let usable = match listed.get(&f.path) {
            None => {
                out.push(Discrepancy::ArchiveFileMissing {
                    topic: topic.to_owned(),
                    partition,
                    from: f.start_offset,
                    to: f.end_offset,
                    path: f.path.clone(),
                });
                false
            }
            Some(size) if i64::try_from(*size).ok() != Some(f.bytes) => {
                out.push(Discrepancy::ArchiveFileChanged {
                    topic: topic.to_owned(),
                    partition,
                    path: f.path.clone(),
                    manifest_bytes: f.bytes,
                    object_bytes: i64::try_from(*size).unwrap_or(i64::MAX),
                });
                false
            }
            Some(_) if f.records != f.end_offset - f.start_offset => {
                out.push(Discrepancy::ArchiveFileHoles {
                    topic: topic.to_owned(),
                    partition,
                    path: f.path.clone(),
                    records: f.records,
                    span: f.end_offset - f.start_offset,
                });
                false
            }
            Some(_) => true,
        };
        cursor = f.end_offset;
        segments.push(Segment { start: f.start_offset, end: f.end_offset, file: usable.then_some(f) });
    }
    if cursor < archive_next {
        out.push(Discrepancy::ArchiveGap { topic: topic.to_owned(), partition, from: cursor, to: archive_next });
        segments.push(Segment { start: cursor, end: archive_next, file: None });
    } else if cursor > archive_next {
        out.push(Discrepancy::ManifestBeyondOffset {
            topic: topic.to_owned(),
            partition,
            manifest_end: cursor,
            next_offset: archive_next,
        });
    }
    segments
}

#[derive(Default)]
struct LedgerFindings {
    rows: i64,
    drilled: usize,
    discrepancies: Vec<Discrepancy>,
    double: BTreeMap<Uuid, BTreeSet<String>>,
}

/// The ledger's rows of one partition below `limit`, as (offset, fact key, amount, fee, currency): the key None for a
/// rejected record; a duplicate carries the money its fact was booked with (none for a content conflict, whose
/// money differs by definition and is reported as a data-quality exception).
const LEDGER_ROWS: &str = "
    SELECT kafka_offset AS o, fact_key AS k, amount_minor AS a, fee_minor AS f, currency AS c FROM event_log
     WHERE topic = $1 AND kafka_partition = $2 AND kafka_offset >= $3 AND kafka_offset < $4
    UNION ALL
    SELECT d.kafka_offset, d.fact_key, e.amount_minor, e.fee_minor, e.currency
      FROM sink_duplicates d LEFT JOIN event_log e ON e.fact_key = d.fact_key AND NOT d.conflict
     WHERE d.topic = $1 AND d.kafka_partition = $2 AND d.kafka_offset >= $3 AND d.kafka_offset < $4
    UNION ALL
    SELECT kafka_offset, NULL::uuid, NULL::bigint, NULL::bigint, NULL::text FROM sink_rejects
     WHERE topic = $1 AND kafka_partition = $2 AND kafka_offset >= $3 AND kafka_offset < $4";

/// One ledger row at an offset: the fact key (None: rejected) and the money booked for it.
type LedgerRow = (Option<Uuid>, Option<FactMoney>);

async fn compare_ledger(
    pool: &Pool,
    objects: &Objects,
    topic: String,
    partition: i32,
    limit: i64,
    segments: Vec<Segment>,
    full_compare: bool,
) -> Result<LedgerFindings, ReconError> {
    let client = pool.get().await?;
    let starts: Vec<i64> = segments.iter().map(|s| s.start).collect();
    // width_bucket(o, starts) = how many starts are ≤ o: the 1-based index of o's segment.
    let sql = format!(
        "SELECT width_bucket(o, $5::bigint[]) AS b, count(*), count(DISTINCT o), coalesce(sum({ROW_SQL}), 0)::text,
                coalesce(sum({MONEY_SQL}), 0)::text
           FROM ({LEDGER_ROWS}) u GROUP BY b ORDER BY b"
    );
    let rows = client.query(&sql, &[&topic, &partition, &0i64, &limit, &starts]).await?;
    let mut sums: HashMap<usize, (i64, i64, i128, i128)> = HashMap::new();
    let parse = |r: &tokio_postgres::Row, i: usize| {
        r.get::<_, String>(i).parse::<i128>().map_err(|e| ReconError::Other(format!("range sum: {e}")))
    };
    for r in rows {
        let b: i32 = r.get(0);
        sums.insert(usize::try_from(b).unwrap_or(0), (r.get(1), r.get(2), parse(&r, 3)?, parse(&r, 4)?));
    }
    let mut findings = LedgerFindings { rows: sums.values().map(|s| s.0).sum(), ..Default::default() };
    // Offsets the ledger should account for but does not, merged into ranges across segments.
    let mut missing: Vec<(i64, bool)> = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        let end = seg.end.min(limit);
        let (count, distinct, key_sum, money_sum) = sums.get(&(i + 1)).copied().unwrap_or((0, 0, 0, 0));
        // Files written before the money sum existed are compared by their keys only.
        let compare_money = seg.file.as_ref().is_some_and(|f| f.money_sum.is_some());
        let matches = match &seg.file {
            Some(f) if seg.end <= limit => {
                count == f.records
                    && distinct == count
                    && key_sum == f.key_sum
                    && f.money_sum.is_none_or(|m| m == money_sum)
            }
            Some(_) => false,
            // No archive to compare with: every offset, once.
            None => count == end - seg.start && distinct == count,
        };
        if matches && !full_compare {
            continue;
        }
        findings.drilled += 1;
        let ledger =
            client.query(&format!("{LEDGER_ROWS} ORDER BY 1"), &[&topic, &partition, &seg.start, &end]).await?;
        let mut at: BTreeMap<i64, Vec<LedgerRow>> = BTreeMap::new();
        for r in ledger {
            let money = match (r.get::<_, Option<i64>>(2), r.get::<_, Option<String>>(4)) {
                (Some(amount_minor), Some(currency)) => Some(FactMoney { amount_minor, fee_minor: r.get(3), currency }),
                _ => None,
            };
            at.entry(r.get(0)).or_default().push((r.get(1), money));
        }
        let mut file_bytes = None;
        let archive: Option<BTreeMap<i64, Option<(Uuid, FactMoney)>>> = match &seg.file {
            Some(f) => {
                let bytes = objects.get(&f.path).await?;
                file_bytes = Some(bytes.clone());
                let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
                if sha256 != f.sha256 {
                    findings.discrepancies.push(Discrepancy::ArchiveFileChanged {
                        topic: topic.clone(),
                        partition,
                        path: f.path.clone(),
                        manifest_bytes: f.bytes,
                        object_bytes: bytes.len() as i64,
                    });
                    continue;
                }
                let facts = tokio::task::spawn_blocking(move || read_facts(bytes))
                    .await
                    .map_err(|e| ReconError::Other(e.to_string()))?
                    .map_err(|e| ReconError::Other(format!("{}: {e}", f.path)))?;
                Some(facts.into_iter().filter(|a| a.offset < end).map(|a| (a.offset, a.fact)).collect())
            }
            None => None,
        };
        for (offset, keys) in &at {
            if keys.len() > 1 {
                for k in keys.iter().filter_map(|(k, _)| k.as_ref()) {
                    findings.double.entry(*k).or_default().insert(format!("{topic}[{partition}]@{offset}"));
                }
            }
        }
        match archive {
            Some(archive) => {
                for (offset, archived) in &archive {
                    match at.get(offset) {
                        None => missing.push((*offset, archived.is_some())),
                        Some(rows) => {
                            let (booked, booked_money) = &rows[0];
                            let archived_key = archived.as_ref().map(|(k, _)| *k);
                            // A rejected record (None) is judged below, by what the archive holds there.
                            if booked.is_some() && *booked != archived_key {
                                findings.discrepancies.push(Discrepancy::LedgerFactDiffers {
                                    topic: topic.clone(),
                                    partition,
                                    offset: *offset,
                                    archive: archived_key,
                                    ledger: *booked,
                                });
                            } else if let (true, Some((fact_key, archived)), Some(booked)) =
                                (compare_money, archived, booked_money)
                            {
                                if archived != booked {
                                    findings.discrepancies.push(Discrepancy::LedgerMoneyDiffers {
                                        topic: topic.clone(),
                                        partition,
                                        offset: *offset,
                                        fact_key: *fact_key,
                                        archived: archived.clone(),
                                        booked: booked.clone(),
                                    });
                                }
                            }
                        }
                    }
                }
                // A rejected record is accounted for only if the ledger could not have booked it: a fact the archive
                // holds that passes the posting rules (`check_bookable`) and was rejected is money left unbooked.
                let rejected: Vec<(i64, Uuid)> = archive
                    .iter()
                    .filter_map(|(o, archived)| Some((*o, archived.as_ref()?.0)))
                    .filter(|(o, _)| at.get(o).is_some_and(|rows| rows[0].0.is_none()))
                    .collect();
                if let (false, Some(bytes)) = (rejected.is_empty(), file_bytes.take()) {
                    let records = tokio::task::spawn_blocking(move || crate::file::read_records(bytes))
                        .await
                        .map_err(|e| ReconError::Other(e.to_string()))?
                        .map_err(|e| ReconError::Other(e.to_string()))?;
                    let by_offset: BTreeMap<i64, &crate::file::LogRecord> =
                        records.iter().map(|r| (r.offset, r)).collect();
                    for (offset, fact_key) in rejected {
                        let event = by_offset
                            .get(&offset)
                            .and_then(|r| r.value.as_deref())
                            .and_then(|v| tally_contracts::decode_payment_event(v).ok());
                        if event.is_some_and(|e| tally_domain::ledger::check_bookable(&e.event).is_ok()) {
                            findings.discrepancies.push(Discrepancy::LedgerRejectedBookable {
                                topic: topic.clone(),
                                partition,
                                offset,
                                fact_key,
                            });
                        }
                    }
                }
                for offset in at.keys().filter(|o| !archive.contains_key(o)) {
                    findings.discrepancies.push(Discrepancy::LedgerExtra {
                        topic: topic.clone(),
                        partition,
                        offset: *offset,
                    });
                }
            }
            None => {
                for offset in seg.start..end {
                    if !at.contains_key(&offset) {
                        missing.push((offset, false));
                    }
                }
            }
        }
    }
    // Contiguous missing offsets → one finding per range.
    missing.sort_unstable();
    let mut i = 0;
    while i < missing.len() {
        let (from, mut facts) = (missing[i].0, i64::from(missing[i].1));
        let mut to = from + 1;
        i += 1;
        while i < missing.len() && missing[i].0 == to {
            facts += i64::from(missing[i].1);
            to += 1;
            i += 1;
        }
        findings.discrepancies.push(Discrepancy::LedgerMissing {
            topic: topic.clone(),
            partition,
            from,
            to,
            facts_in_archive: facts,
        });
    }
    Ok(findings)
}

/// Facts with more than one event-log row or more than one journal: booked twice, whatever the offsets say. (A
/// correction journal has no fact, migration 0015, and is not a booking of one.) Each
/// table is first grouped on its fact-key index alone (an index-only scan), and only the keys found are looked up.
async fn double_bookings(pool: &Pool) -> Result<BTreeMap<Uuid, BTreeSet<String>>, ReconError> {
    let client = pool.get().await?;
    let mut out: BTreeMap<Uuid, BTreeSet<String>> = BTreeMap::new();
    for (table, describe) in [
        ("event_log", "topic || '[' || kafka_partition || ']@' || kafka_offset"),
        ("journals", "'journal ' || journal_id"),
    ] {
        let keys: Vec<Uuid> = client
            .query(
                &format!("SELECT fact_key FROM {table} WHERE fact_key IS NOT NULL GROUP BY 1 HAVING count(*) > 1"),
                &[],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if keys.is_empty() {
            continue;
        }
        let rows = client
            .query(
                &format!("SELECT fact_key, array_agg({describe}) FROM {table} WHERE fact_key = ANY($1) GROUP BY 1"),
                &[&keys],
            )
            .await?;
        for r in rows {
            out.entry(r.get(0)).or_default().extend(r.get::<_, Vec<String>>(1));
        }
    }
    Ok(out)
}

impl Report {
    /// The human table: one line per partition, then every discrepancy.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<34} {:>4} {:>10} {:>10} {:>6} {:>10}  {:<40} issues",
            "topic", "part", "log low", "log high", "files", "archived", "sink lag (group: lag)"
        );
        for p in &self.partitions {
            let lags: Vec<String> = p.sinks.iter().map(|k| format!("{}: {}", k.group, k.lag)).collect();
            let _ = writeln!(
                s,
                "{:<34} {:>4} {:>10} {:>10} {:>6} {:>10}  {:<40} {}",
                p.topic,
                p.partition,
                p.log_low,
                p.log_high,
                p.archive_files,
                p.archived_records,
                lags.join(", "),
                if p.discrepancies == 0 { "ok".to_owned() } else { p.discrepancies.to_string() }
            );
        }
        let _ = writeln!(
            s,
            "\n{} archived records, {} ledger rows, {} ranges compared by checksum ({} read offset by offset), {} orphan files (tally archive gc), {} ms",
            self.archived_records, self.ledger_rows, self.ranges_compared, self.ranges_drilled, self.orphan_files, self.elapsed_ms
        );
        if self.clean {
            let _ = writeln!(
                s,
                "CLEAN: every offset archived once and accounted for once in the ledger, with the archived money; no fact booked twice"
            );
        } else {
            let _ = writeln!(s, "NOT CLEAN: {} discrepancies", self.discrepancies.len());
            for d in &self.discrepancies {
                let _ = writeln!(s, "  {}", d.describe());
            }
        }
        s
    }
}

impl Discrepancy {
    pub fn describe(&self) -> String {
        use Discrepancy::*;
        match self {
            ArchiveGap { topic, partition, from, to } => {
                format!("archive gap        {topic}[{partition}] offsets {from}..{to} ({} never archived)", to - from)
            }
            ArchiveOverlap { topic, partition, from, to, path } => {
                format!("archive overlap    {topic}[{partition}] offsets {from}..{to} archived twice (also in {path})")
            }
            ArchiveFileMissing { topic, partition, from, to, path } => {
                format!("archive file gone  {topic}[{partition}] offsets {from}..{to}: {path} is in the manifest, not in the store")
            }
            ArchiveFileChanged { topic, partition, path, manifest_bytes, object_bytes } => format!(
                "archive file changed {topic}[{partition}] {path}: {object_bytes} bytes, the manifest says {manifest_bytes}"
            ),
            ArchiveFileHoles { topic, partition, path, records, span } => format!(
                "archive file holes {topic}[{partition}] {path}: {records} records for {span} offsets"
            ),
            ManifestBeyondOffset { topic, partition, manifest_end, next_offset } => format!(
                "manifest ahead     {topic}[{partition}] files end at {manifest_end}, the archive sink's offset is {next_offset}"
            ),
            OffsetBeyondLog { topic, partition, group, next_offset, high } => format!(
                "offset beyond log  {topic}[{partition}] {group} stored {next_offset}, the log ends at {high}"
            ),
            LogTruncated { topic, partition, group, next_offset, low } => format!(
                "log truncated      {topic}[{partition}] the log starts at {low}, {group} had only read to {next_offset}"
            ),
            LedgerMissing { topic, partition, from, to, facts_in_archive } => format!(
                "ledger missing     {topic}[{partition}] offsets {from}..{to} consumed but not accounted for ({facts_in_archive} facts the archive holds)"
            ),
            LedgerExtra { topic, partition, offset } => {
                format!("ledger extra       {topic}[{partition}] offset {offset} is in the ledger, not in the archive")
            }
            LedgerFactDiffers { topic, partition, offset, archive, ledger } => format!(
                "fact differs       {topic}[{partition}] offset {offset}: archive {archive:?}, ledger {ledger:?}"
            ),
            DoubleBooked { fact_key, bookings } => {
                format!("double booked      fact {fact_key}: {}", bookings.join(", "))
            }
            LedgerRejectedBookable { topic, partition, offset, fact_key } => format!(
                "rejected bookable  {topic}[{partition}] offset {offset}: the ledger rejected fact {fact_key}, which its posting rules accept"
            ),
            LedgerMoneyDiffers { topic, partition, offset, fact_key, archived, booked } => format!(
                "money differs      {topic}[{partition}] offset {offset}: fact {fact_key} archived as {archived}, booked as {booked}"
            ),
        }
    }
}
