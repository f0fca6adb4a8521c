//! Scoped replay (issue 16, DESIGN §13): a scope resolved to exact archived records, recomputed with the current
//! code, and diffed against the live ledger by a canonical hash per fact (`tally replay plan`). Replaying unchanged
//! data yields an empty diff. `tally replay apply` books the diff as correction journals — per changed fact a
//! reversal of what the ledger holds and a re-post of what the rules post — in one transaction with the plan's
//! application and its audit record. With a warehouse, the same records are landed again there and diffed row by
//! row (`tally_warehouse::replay`); an apply replaces the changed rows and restates the mart days they touch, in the
//! warehouse's own transaction (two stores, two transactions: each side is idempotent, so an apply interrupted
//! between them is completed by running it again).

pub mod backfill;
pub mod dlq;
pub mod plan;
pub mod resolve;
pub mod scope;

use std::collections::{BTreeMap, BTreeSet};

use deadpool_postgres::Pool;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tally_archive::objects::Objects;
use tally_domain::FactKey;

use crate::plan::{canonical, Diff, Side};
use crate::resolve::Read;
use crate::scope::Scope;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("postgres: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("postgres pool: {0}")]
    Pool(String),
    #[error("archive manifest: {0}")]
    Manifest(#[from] tally_archive::manifest::ManifestError),
    #[error("archive objects: {0}")]
    Objects(#[from] tally_archive::objects::ObjectError),
    #[error("archive file: {0}")]
    File(#[from] tally_archive::file::FileError),
    #[error("archive: {0}")]
    Archive(String),
    #[error("warehouse: {0}")]
    Warehouse(#[from] tally_warehouse::replay::ReplayError),
}

impl From<deadpool_postgres::PoolError> for ReplayError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        ReplayError::Pool(e.to_string())
    }
}

/// What the ledger processor that made a plan calls itself: a plan is made with the current code.
pub const PROCESSOR_VERSION: &str = tally_ledger::PROCESSOR_VERSION;

/// A replay plan: the scope and what it resolved to, the diff, and the live state it was made against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub version: u32,
    pub scope: Scope,
    /// The archived records in scope (duplicates of a fact included) and their checksum.
    pub records: u64,
    pub records_checksum: String,
    /// Distinct facts in scope.
    pub facts: u64,
    pub read: Read,
    pub processor_version: String,
    /// The ledger facts in scope whose records the archive does not hold yet (not compared; the archive lags).
    pub not_archived_yet: u64,
    /// Archived facts left out of the comparison, and why.
    pub skipped: Skipped,
    /// SHA-256 over the live side compared (fact key and its journal's canonical hash, sorted): apply refuses a
    /// plan whose base no longer matches (the live data changed).
    pub base_checksum: String,
    pub diff: Diff,
    /// The warehouse's diff (None: no warehouse was compared — none configured, or no sink and no file).
    #[serde(default)]
    pub warehouse: Option<tally_warehouse::replay::Diff>,
    /// SHA-256 of this plan's canonical JSON with `hash` empty.
    pub hash: String,
}

/// Facts a plan does not compare: the ledger refused every record of them (its DLQ holds them), the posting rules
/// refuse them now, or the ledger booked a record of the same key with other content than the scope's (a content
/// conflict: which one is right is the exception's to settle, not a replay's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Skipped {
    pub rejected_by_the_sink: u64,
    pub refused_by_the_rules: u64,
    pub booked_from_another_record: u64,
}

/// What a plan compares besides the ledger.
#[derive(Debug, Clone, Copy, Default)]
pub struct Targets<'a> {
    /// The warehouse (its sink, or its file when no sink runs).
    pub warehouse: Option<&'a tally_warehouse::WarehouseConfig>,
    /// Which reference data the warehouse's rows are enriched with when landed again.
    pub reference: tally_warehouse::replay::Pin,
}

impl Plan {
    /// Whether applying the plan would change nothing, in the ledger or the warehouse.
    pub fn is_empty(&self) -> bool {
        self.diff.is_empty() && self.warehouse.as_ref().is_none_or(|w| w.is_empty())
    }

    /// The plan with its hash set to its content's.
    pub fn seal(self) -> Plan {
        self.sealed()
    }

    fn sealed(mut self) -> Plan {
        self.hash = String::new();
        self.hash = hex::encode(Sha256::digest(serde_json::to_vec(&self).expect("plain data")));
        self
    }

    /// Whether the plan's hash is its content's.
    pub fn is_sealed(&self) -> bool {
        self.clone().sealed().hash == self.hash
    }
}

/// A booked fact as read: its side, where the ledger took it from (topic, partition, offset), its entries.
type LiveFact = (Side, (String, i32, i64), Vec<(String, String, i64)>);

/// The ledger's books of these facts: its payment, kind, where the ledger took it from, and its legs (its own
/// journal's entries and those of the corrections booked for it, a replay's reversal and re-post).
async fn live_books<C: tokio_postgres::GenericClient>(
    client: &C,
    keys: &[uuid::Uuid],
) -> Result<BTreeMap<FactKey, LiveFact>, tokio_postgres::Error> {
    let rows = client
        .query(
            "WITH facts AS (
                SELECT fact_key, payment_id, kind, topic, kafka_partition, kafka_offset FROM event_log
                 WHERE fact_key = ANY($1)),
             legs AS (
                SELECT j.fact_key, e.account, e.currency, e.amount_minor
                  FROM journals j JOIN entries e ON e.journal_id = j.journal_id
                 WHERE j.fact_key IN (SELECT fact_key FROM facts)
                UNION ALL
                SELECT c.fact_key, e.account, e.currency, e.amount_minor
                  FROM ledger_corrections c JOIN journals j ON j.correction_id = c.correction_id
                  JOIN entries e ON e.journal_id = j.journal_id
                 WHERE c.fact_key IN (SELECT fact_key FROM facts))
             SELECT f.fact_key, f.payment_id, f.kind, f.topic, f.kafka_partition, f.kafka_offset,
                    l.account, l.currency, l.amount_minor
               FROM facts f LEFT JOIN legs l ON l.fact_key = f.fact_key",
            &[&keys],
        )
        .await?;
    let mut out: BTreeMap<FactKey, LiveFact> = BTreeMap::new();
    for r in &rows {
        let slot = out.entry(FactKey(r.get(0))).or_insert_with(|| {
            (
                Side { payment_id: r.get(1), kind: r.get(2), legs: Vec::new() },
                (r.get(3), r.get(4), r.get(5)),
                Vec::new(),
            )
        });
        if let (Some(a), Some(c), Some(m)) =
            (r.get::<_, Option<String>>(6), r.get::<_, Option<String>>(7), r.get::<_, Option<i64>>(8))
        {
            slot.2.push((a, c, m));
        }
    }
    Ok(out)
}

/// A scope resolved in the archive: its records, what was read, the files.
type Resolved = (Vec<resolve::Archived>, Read, Vec<tally_archive::ManifestFile>);

/// A scope's predicates over `event_log l` ($1 merchants, $2/$3 event time in µs, $4 kinds, $5 PSP).
const IN_SCOPE: &str = "($1::text[] IS NULL OR l.merchant_id = ANY($1))
        AND ($2::bigint IS NULL OR l.occurred_at >= 'epoch'::timestamptz + $2 * interval '1 microsecond')
        AND ($3::bigint IS NULL OR l.occurred_at < 'epoch'::timestamptz + $3 * interval '1 microsecond')
        AND ($4::text[] IS NULL OR l.kind = ANY($4))
        AND ($5::text IS NULL OR l.psp = $5)";

/// Every fact the ledger booked within the scope, and the archived `keys` it booked outside it (a fact booked from
/// a record dated otherwise), with its entries: the facts and their entries read by two lean queries at once, on
/// two connections sharing one snapshot (a fact booked meanwhile is in both or in neither), the keys outside the
/// scope afterwards in the same snapshot.
async fn live_side(
    pool: &Pool,
    keys: &[uuid::Uuid],
    scope: &Scope,
) -> Result<BTreeMap<FactKey, LiveFact>, ReplayError> {
    let merchants: Option<Vec<String>> = (!scope.merchants.is_empty()).then(|| scope.merchants.clone());
    let kinds: Option<Vec<String>> =
        (!scope.kinds.is_empty()).then(|| scope.kinds.iter().map(|k| k.as_str().to_owned()).collect());
    let (from, to) = (scope.from.map(|t| t.unix_micros()), scope.to.map(|t| t.unix_micros()));
    let psp = scope.psp.map(|p| p.as_str());
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [&merchants, &from, &to, &kinds, &psp];
    let (a, b) = (pool.get().await?, pool.get().await?);
    a.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
    let read = async {
        let snapshot: String = a.query_one("SELECT pg_export_snapshot()", &[]).await?.get(0);
        b.batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
            snapshot.replace('\'', "")
        ))
        .await?;
        read_live(&a, &b, keys, &params).await
    }
    .await;
    // Read-only: ending either transaction, even an aborted one, changes nothing.
    let _ = a.batch_execute("COMMIT").await;
    let _ = b.batch_execute("COMMIT").await;
    read
}

/// The reads of [`live_side`], in its transactions.
async fn read_live(
    facts: &tokio_postgres::Client,
    entries: &tokio_postgres::Client,
    keys: &[uuid::Uuid],
    params: &[&(dyn tokio_postgres::types::ToSql + Sync); 5],
) -> Result<BTreeMap<FactKey, LiveFact>, ReplayError> {
    let facts_sql = format!(
        "SELECT l.fact_key, l.payment_id, l.kind, l.topic, l.kafka_partition, l.kafka_offset FROM event_log l
          WHERE {IN_SCOPE}"
    );
    let facts_read = facts.query(&facts_sql, params);
    let entries_sql = format!(
        "SELECT l.fact_key, e.account, e.currency, e.amount_minor
               FROM event_log l JOIN journals j ON j.fact_key = l.fact_key JOIN entries e ON e.journal_id = j.journal_id
              WHERE {IN_SCOPE}
             UNION ALL
             SELECT l.fact_key, e.account, e.currency, e.amount_minor
               FROM event_log l JOIN ledger_corrections c ON c.fact_key = l.fact_key
               JOIN journals j ON j.correction_id = c.correction_id JOIN entries e ON e.journal_id = j.journal_id
              WHERE {IN_SCOPE}"
    );
    let entries_read = entries.query(&entries_sql, params);
    let (fact_rows, entry_rows) = tokio::try_join!(facts_read, entries_read)?;
    let mut out: BTreeMap<FactKey, LiveFact> = BTreeMap::new();
    for r in &fact_rows {
        out.insert(
            FactKey(r.get(0)),
            (
                Side { payment_id: r.get(1), kind: r.get(2), legs: Vec::new() },
                (r.get(3), r.get(4), r.get(5)),
                Vec::new(),
            ),
        );
    }
    for r in &entry_rows {
        if let Some(fact) = out.get_mut(&FactKey(r.get(0))) {
            fact.2.push((r.get(1), r.get(2), r.get(3)));
        }
    }
    let rest: Vec<uuid::Uuid> = keys.iter().filter(|k| !out.contains_key(&FactKey(**k))).copied().collect();
    if !rest.is_empty() {
        out.extend(live_books(facts, &rest).await?);
    }
    Ok(out)
}

/// Plans a replay of `scope`: resolves it in the archive, recomputes every fact's journal with the current posting
/// rules, reads the live journals, and diffs them; with a warehouse, diffs its rows too. Read-only.
pub async fn plan(
    pool: &Pool,
    objects: &Objects,
    scope: &Scope,
    targets: Targets<'_>,
    progress: &mut (dyn FnMut(u64, u64, u64) + Send),
) -> Result<Plan, ReplayError> {
    let started = std::time::Instant::now();
    let resolved = resolve::resolve(pool, objects, scope, progress).await?;
    let t_resolved = started.elapsed();
    let mut plan = ledger_plan(pool, scope, &resolved).await?;
    let t_ledger = started.elapsed();
    if let Some(config) = targets.warehouse {
        let request = warehouse_request(scope, &resolved, targets.reference, None);
        plan.warehouse = tally_warehouse::replay::where_it_is(config, pool, &request).await?.map(|o| o.diff);
    }
    tracing::debug!(
        resolve = ?t_resolved, ledger = ?(t_ledger - t_resolved), warehouse = ?(started.elapsed() - t_ledger),
        "plan phases"
    );
    Ok(plan.sealed())
}

/// The warehouse's request for a resolved scope.
fn warehouse_request(
    scope: &Scope,
    (archived, _, files): &Resolved,
    reference: tally_warehouse::replay::Pin,
    apply: Option<tally_warehouse::replay::Apply>,
) -> tally_warehouse::replay::Request {
    use tally_warehouse::replay::{Filter, Record, Request};
    Request {
        filter: Filter {
            merchants: scope.merchants.clone(),
            from_micros: scope.from.map(|t| t.unix_micros()),
            to_micros: scope.to.map(|t| t.unix_micros()),
            kinds: scope.kinds.iter().map(|k| k.as_str().to_owned()).collect(),
            psp: scope.psp.map(|p| p.as_str().to_owned()),
        },
        reference,
        records: archived
            .iter()
            .map(|a| Record {
                topic: a.located.topic.clone(),
                partition: a.located.partition,
                offset: a.located.offset,
                key: a.key.clone(),
                value: Some(a.value.clone()),
            })
            .collect(),
        covered: files.iter().map(|f| (f.topic.clone(), f.partition, f.start_offset, f.end_offset)).collect(),
        apply,
    }
}

/// Why a fact is left out of a plan's comparison (counted in [`Skipped`]).
enum Skip {
    BookedFromAnother,
    Rejected,
    Refused,
}

/// The ledger's side of a plan (unsealed).
async fn ledger_plan(pool: &Pool, scope: &Scope, resolved: &Resolved) -> Result<Plan, ReplayError> {
    let (archived, read, files) = resolved;
    let (read, files) = (read.clone(), files.as_slice());
    let located: Vec<scope::Located> = archived.iter().map(|a| a.located.clone()).collect();
    let records_checksum = scope::checksum(&located);
    let keys: Vec<uuid::Uuid> =
        archived.iter().map(|a| a.located.fact_key.0).collect::<BTreeSet<_>>().into_iter().collect();
    let started = std::time::Instant::now();
    let mut live_entries = live_side(pool, &keys, scope).await?;
    tracing::debug!(live_books = ?started.elapsed(), facts = live_entries.len(), "ledger plan: live books read");
    let client = pool.get().await?;
    let rejected: BTreeSet<(String, i32, i64)> = client
        .query("SELECT topic, kafka_partition, kafka_offset FROM sink_rejects", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();

    // The expected side: per fact, the archived record the ledger booked (its position in the event log); a fact
    // the ledger never booked, by its first record the sink did not reject. Its journal by the current rules.
    let mut skipped = Skipped::default();
    let mut by_key: BTreeMap<FactKey, Vec<&resolve::Archived>> = BTreeMap::new();
    for a in archived {
        by_key.entry(a.located.fact_key).or_default().push(a);
    }
    let mut expected: BTreeMap<FactKey, Side> = BTreeMap::new();
    let mut left_out: BTreeSet<FactKey> = BTreeSet::new();
    // Each fact on its own: on every core, in chunks.
    let by_key: Vec<(FactKey, Vec<&resolve::Archived>)> = by_key.into_iter().collect();
    let one = |(key, records): &(FactKey, Vec<&resolve::Archived>)| -> Result<Side, Skip> {
        fn at<'a>(a: &&'a resolve::Archived) -> (&'a str, i32, i64) {
            (a.located.topic.as_str(), a.located.partition, a.located.offset)
        }
        let chosen = match live_entries.get(key) {
            Some((_, (topic, partition, offset), _)) => records
                .iter()
                .find(|a| at(a) == (topic.as_str(), *partition, *offset))
                .ok_or(Skip::BookedFromAnother)?,
            None => records
                .iter()
                .find(|a| !rejected.contains(&(a.located.topic.clone(), a.located.partition, a.located.offset)))
                .ok_or(Skip::Rejected)?,
        };
        let journal = tally_domain::ledger::postings(&chosen.event).map_err(|_| Skip::Refused)?;
        let legs = canonical(
            journal
                .into_iter()
                .flat_map(|j| j.entries)
                .map(|e| (e.account.to_string(), e.money.currency.code().to_owned(), e.money.amount.minor())),
        );
        Ok(Side { payment_id: chosen.event.payment_id.clone(), kind: chosen.event.kind.as_str().into(), legs })
    };
    let sides: Vec<Result<Side, Skip>> = tally_warehouse::replay::on_every_core(&by_key, one);
    for ((key, _), side) in by_key.iter().zip(sides) {
        match side {
            Ok(side) => {
                expected.insert(*key, side);
            }
            Err(why) => {
                match why {
                    Skip::BookedFromAnother => skipped.booked_from_another_record += 1,
                    Skip::Rejected => skipped.rejected_by_the_sink += 1,
                    Skip::Refused => skipped.refused_by_the_rules += 1,
                }
                left_out.insert(*key);
            }
        }
    }
    drop(client);

    // Only live facts the archive covers are compared: a fact booked from an offset no archive file holds yet is
    // counted, not called unexpected. The files are the ones the resolution read, as ranges per partition.
    let mut ranges: BTreeMap<(String, i32), Vec<(i64, i64)>> = BTreeMap::new();
    for f in files {
        ranges.entry((f.topic.clone(), f.partition)).or_default().push((f.start_offset, f.end_offset));
    }
    for r in ranges.values_mut() {
        r.sort_unstable();
    }
    let covered = |(topic, partition, offset): &(String, i32, i64)| {
        ranges.get(&(topic.clone(), *partition)).is_some_and(|r| {
            let i = r.partition_point(|(start, _)| start <= offset);
            i > 0 && *offset < r[i - 1].1
        })
    };
    let mut live: BTreeMap<FactKey, Side> = BTreeMap::new();
    let mut not_archived_yet = 0;
    for (key, (side, at, entries)) in std::mem::take(&mut live_entries) {
        if left_out.contains(&key) {
            continue;
        }
        if !expected.contains_key(&key) && !covered(&at) {
            not_archived_yet += 1;
            continue;
        }
        live.insert(key, Side { legs: canonical(entries), ..side });
    }
    let mut base = Sha256::new();
    for (key, side) in &live {
        base.update(format!("{}\t{}\n", key.0, plan::hash(&side.legs)).as_bytes());
    }
    let diff = plan::diff(&expected, &live);
    tracing::debug!(total = ?started.elapsed(), "ledger plan: expected, live and diff");
    Ok(Plan {
        version: 2,
        scope: scope.clone(),
        records: archived.len() as u64,
        records_checksum,
        facts: expected.len() as u64,
        read,
        processor_version: PROCESSOR_VERSION.to_owned(),
        not_archived_yet,
        skipped,
        base_checksum: hex::encode(base.finalize()),
        diff,
        warehouse: None,
        hash: String::new(),
    })
}

/// The plan's audit record (I8): who planned what scope, against which live state, with which outcome.
pub async fn audit_plan(pool: &Pool, plan: &Plan, actor: &str) -> Result<u64, ReplayError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let entry = tally_audit::Entry {
        actor: actor.to_owned(),
        action: "replay.plan".into(),
        subject: Some(format!("plan:{}", plan.hash)),
        scope: Some(serde_json::to_value(&plan.scope).expect("plain data")),
        before: Some(plan.base_checksum.clone()),
        plan: Some(plan.hash.clone()),
        detail: Some(serde_json::json!({
            "records": plan.records,
            "records_checksum": plan.records_checksum,
            "facts": plan.facts,
            "unchanged": plan.diff.unchanged,
            "would_change": plan.diff.would_change.len(),
            "missing": plan.diff.missing.len(),
            "unexpected": plan.diff.unexpected.len(),
            "processor_version": plan.processor_version,
            "warehouse": plan.warehouse.as_ref().map(|w| serde_json::json!({
                "reference": w.reference,
                "unchanged": w.unchanged,
                "would_change": w.would_change.len(),
                "missing": w.missing.len(),
                "unexpected": w.unexpected.len(),
                "mart_rows": w.marts.len(),
                "base_checksum": w.base_checksum,
            })),
        })),
        ..tally_audit::Entry::default()
    };
    let seq = tally_audit::append(&tx, &entry).await?;
    tx.commit().await?;
    Ok(seq)
}

/// Why an apply did nothing.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error("the plan's hash is not its content's: it was edited, or is not a plan")]
    NotSealed,
    #[error("stale plan: {0}; plan again")]
    Stale(String),
    #[error("{0}")]
    Refused(String),
    #[error(
        "the ledger's corrections were booked (replay {replay_id}), the warehouse's side was not: {reason}; \
         apply the plan again to complete it"
    )]
    Partial { replay_id: uuid::Uuid, reason: String },
}

impl From<tokio_postgres::Error> for ApplyError {
    fn from(e: tokio_postgres::Error) -> Self {
        ApplyError::Replay(ReplayError::Db(e))
    }
}

impl From<deadpool_postgres::PoolError> for ApplyError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        ApplyError::Replay(ReplayError::from(e))
    }
}

/// What an apply did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub replay_id: uuid::Uuid,
    /// Correction journals booked (0: nothing to apply, or applied before).
    pub corrections: usize,
    /// The plan was applied before: by whom, when. Applying it again changed nothing.
    pub applied_before: Option<(String, String)>,
    /// Facts the archive holds and the ledger never booked: the ledger's sink books them (or completeness recon
    /// finds them), never a replay — booking them here could race the sink into a double booking.
    pub missing_not_applied: usize,
    /// The warehouse's side (None: the plan changes no warehouse row).
    pub warehouse: Option<tally_warehouse::replay::Applied>,
}

/// Who applies a plan, who approved it, and why.
#[derive(Debug, Clone, Copy)]
pub struct Approval<'a> {
    pub actor: &'a str,
    pub approved_by: Option<&'a str>,
    pub reason: &'a str,
    pub ticket: &'a str,
}

const REPLAY_LOCK: i64 = 0x7a11_4e91;

/// Who applied this plan, and when, if it was.
async fn applied_before<C: tokio_postgres::GenericClient>(
    client: &C,
    hash: &str,
) -> Result<Option<(String, String)>, tokio_postgres::Error> {
    Ok(client
        .query_opt(
            "SELECT applied_by, to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
               FROM replay_applications WHERE plan_sha256 = $1",
            &[&hash],
        )
        .await?
        .map(|r| (r.get(0), r.get(1))))
}

fn legs_correction(
    cause: String,
    legs: &plan::Legs,
    sign: i64,
) -> Result<tally_domain::ledger::Correction, ApplyError> {
    let entries = legs
        .iter()
        .map(|(a, c, m)| {
            let account = a.parse().map_err(|e: String| ApplyError::Refused(format!("{cause}: {e}")))?;
            let currency = tally_money::Currency::from_code(c).map_err(|e| ApplyError::Refused(e.to_string()))?;
            Ok(tally_domain::ledger::Entry {
                account,
                money: tally_money::Money::new(tally_money::Amount::from_minor(sign * m), currency),
            })
        })
        .collect::<Result<Vec<_>, ApplyError>>()?;
    tally_domain::ledger::Correction::new(cause, entries).map_err(|e| ApplyError::Refused(e.to_string()))
}

/// Applies a plan: refused unless its hash is its content's, a plan that changes anything needs a second
/// operator's approval, and a plan is stale when the current data and code no longer give its diff (re-derived
/// for the ledger, and inside the warehouse for its rows). The ledger, in one transaction under a lock that serialises applies: the application
/// record, per fact that would change a reversal of what the ledger holds and a re-post of what the rules post (per
/// unexpected fact a reversal), each a correction journal naming the fact and tagged with the replay id, and the
/// audit record. Then the warehouse, in its own transaction: the changed rows replaced, the mart days they touch
/// recomputed (restated when closed), and its audit record. The same plan twice changes nothing and says when it
/// was applied; one interrupted between the two sides is completed by applying it again.
pub async fn apply(
    pool: &Pool,
    objects: &Objects,
    plan: &Plan,
    who: Approval<'_>,
    warehouse: Option<&tally_warehouse::WarehouseConfig>,
    progress: &mut (dyn FnMut(u64, u64, u64) + Send),
) -> Result<Applied, ApplyError> {
    if !plan.is_sealed() {
        return Err(ApplyError::NotSealed);
    }
    if who.reason.trim().is_empty() || who.ticket.trim().is_empty() || who.actor.trim().is_empty() {
        return Err(ApplyError::Refused("an apply needs an actor, a reason and a ticket".into()));
    }
    let replay_id =
        uuid::Uuid::new_v5(&uuid::Uuid::from_u128(0x7a11_4e91_0000_0000_0000_0000_0000_0016), plan.hash.as_bytes());
    let d = &plan.diff;
    let mut applied = Applied {
        replay_id,
        corrections: 0,
        applied_before: None,
        missing_not_applied: d.missing.len(),
        warehouse: None,
    };
    let ledger_changes = !(d.would_change.is_empty() && d.unexpected.is_empty());
    let rows = plan.warehouse.as_ref().filter(|w| !w.would_change.is_empty());
    if !ledger_changes && rows.is_none() {
        return Ok(applied);
    }
    let client = pool.get().await?;
    let before = applied_before(&**client, &plan.hash).await?;
    let audited = warehouse_audited(&**client, &plan.hash).await?;
    drop(client);
    // Applied before, both sides: nothing to do, and no approval needed to be told so.
    let ledger_to_do = ledger_changes && before.is_none();
    let warehouse_to_do = rows.is_some() && audited.is_none();
    if !ledger_to_do && !warehouse_to_do {
        applied.applied_before = before;
        if rows.is_some() {
            applied.warehouse =
                Some(tally_warehouse::replay::Applied { applied_before: audited, ..Default::default() });
        }
        return Ok(applied);
    }
    let approver = who.approved_by.filter(|a| !a.trim().is_empty()).ok_or_else(|| {
        ApplyError::Refused(
            "a replay that changes the books or the warehouse needs --approved-by (a second operator)".into(),
        )
    })?;
    if approver == who.actor {
        return Err(ApplyError::Refused(format!("{approver} applies this plan: a second operator approves it")));
    }
    // What the warehouse's side needs is there before the ledger's side books anything.
    let config = match rows {
        None => None,
        Some(_) => {
            let config = warehouse.ok_or_else(|| {
                ApplyError::Refused("the plan changes warehouse rows and no warehouse is configured".into())
            })?;
            if !tally_warehouse::replay::reachable(config).await {
                return Err(ApplyError::Refused(format!(
                    "the plan changes warehouse rows: no warehouse sink at {} and no file at {}",
                    config.listen,
                    config.path.display()
                )));
            }
            Some(config)
        }
    };
    let resolved = resolve::resolve(pool, objects, &plan.scope, progress).await?;
    if ledger_changes {
        match before {
            Some(before) => applied.applied_before = Some(before),
            None => apply_ledger(pool, &resolved, plan, who, approver, &mut applied).await?,
        }
    }
    if let (Some(expect), Some(config)) = (rows, config) {
        // Once this run booked the ledger's side, a failure here leaves the apply half done: said so.
        let booked = applied.corrections > 0;
        let partial = |e: ApplyError| if booked { ApplyError::Partial { replay_id, reason: e.to_string() } } else { e };
        let request = warehouse_request(
            &plan.scope,
            &resolved,
            expect.reference,
            Some(tally_warehouse::replay::Apply {
                replay_id: replay_id.to_string(),
                plan_sha256: plan.hash.clone(),
                expect: expect.clone(),
            }),
        );
        let outcome = match tally_warehouse::replay::where_it_is(config, pool, &request).await {
            Ok(Some(o)) => o,
            Ok(None) => {
                return Err(partial(ApplyError::Refused(format!(
                    "no warehouse sink at {} and no file at {}",
                    config.listen,
                    config.path.display()
                ))))
            }
            Err(tally_warehouse::replay::ReplayError::Stale(reason)) => return Err(partial(ApplyError::Stale(reason))),
            Err(e) => return Err(partial(ReplayError::from(e).into())),
        };
        let done = outcome.applied.unwrap_or_default();
        // Recorded even when the warehouse had applied the plan in an earlier run that stopped before its record.
        audit_warehouse(pool, plan, who, approver, replay_id, &outcome.diff, &done).await.map_err(partial)?;
        applied.warehouse = Some(done);
    }
    Ok(applied)
}

/// When the warehouse's side of this plan was recorded as applied, if it was.
async fn warehouse_audited<C: tokio_postgres::GenericClient>(
    client: &C,
    hash: &str,
) -> Result<Option<String>, tokio_postgres::Error> {
    Ok(client
        .query_opt(
            "SELECT to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM audit_log
              WHERE action = 'replay.apply.warehouse' AND subject = $1 ORDER BY seq LIMIT 1",
            &[&format!("plan:{hash}")],
        )
        .await?
        .map(|r| r.get(0)))
}

/// The audit record of a replay's warehouse side (I8).
async fn audit_warehouse(
    pool: &Pool,
    plan: &Plan,
    who: Approval<'_>,
    approver: &str,
    replay_id: uuid::Uuid,
    diff: &tally_warehouse::replay::Diff,
    done: &tally_warehouse::replay::Applied,
) -> Result<(), ApplyError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let entry = tally_audit::Entry {
        actor: who.actor.to_owned(),
        action: "replay.apply.warehouse".into(),
        subject: Some(format!("plan:{}", plan.hash)),
        reason: Some(who.reason.to_owned()),
        ticket: Some(who.ticket.to_owned()),
        scope: Some(serde_json::to_value(&plan.scope).expect("plain data")),
        before: Some(diff.base_checksum.clone()),
        plan: Some(plan.hash.clone()),
        detail: Some(serde_json::json!({
            "replay_id": replay_id.to_string(),
            "approved_by": approver,
            "reference": diff.reference,
            "rows_replaced": done.rows_replaced,
            // Set when the warehouse had applied the plan in a run that stopped before this record.
            "warehouse_applied_at": done.applied_before,
            "restatements": done.restatements,
            "mart_rows": diff.marts.len(),
            "fact_keys": diff.would_change.iter().map(|c| c.fact_key.clone()).collect::<Vec<_>>(),
        })),
        ..tally_audit::Entry::default()
    };
    tally_audit::append(&tx, &entry).await.map_err(ReplayError::from)?;
    tx.commit().await?;
    Ok(())
}

/// The ledger's side of an apply (see [`apply`]).
async fn apply_ledger(
    pool: &Pool,
    resolved: &Resolved,
    plan: &Plan,
    who: Approval<'_>,
    approver: &str,
    applied: &mut Applied,
) -> Result<(), ApplyError> {
    let (d, replay_id) = (&plan.diff, applied.replay_id);
    // What the plan says is what the current code says now: the same diff, by the same processor. (The hash only
    // shows the file was not edited by accident; a plan is re-derived, never trusted, before it books money.)
    let fresh = ledger_plan(pool, &plan.scope, resolved).await?;
    if fresh.processor_version != plan.processor_version {
        return Err(ApplyError::Stale(format!(
            "the plan was made by {}, this is {}",
            plan.processor_version, fresh.processor_version
        )));
    }
    let (f, p) = (&fresh.diff, &plan.diff);
    if f.would_change != p.would_change
        || f.unexpected != p.unexpected
        || f.missing != p.missing
        || f.impact != p.impact
    {
        return Err(ApplyError::Stale("the diff the current books and code give is not the plan's".into()));
    }
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&REPLAY_LOCK]).await?;
    if let Some(before) = applied_before(&*tx, &plan.hash).await? {
        applied.applied_before = Some(before);
        return Ok(());
    }
    // Under the lock no other apply commits: the books of the facts this one corrects, read in its own
    // transaction, must still be the plan's.
    let keys: Vec<uuid::Uuid> = d.would_change.iter().chain(&d.unexpected).map(|c| c.fact_key.0).collect();
    let now = live_books(&*tx, &keys).await?;
    for c in d.would_change.iter().chain(&d.unexpected) {
        let legs = now.get(&c.fact_key).map(|(_, _, entries)| canonical(entries.clone())).unwrap_or_default();
        if legs != c.live {
            return Err(ApplyError::Stale(format!("the books of fact {} changed since the plan", c.fact_key.0)));
        }
    }
    let approval = tally_ledger::corrections::Approval {
        proposed_by: who.actor,
        approved_by: approver,
        reason: who.reason,
        ticket: who.ticket,
    };
    // A side that posts nothing books nothing (a fact booked without a journal, or whose kind posts nothing now).
    let mut corrections = Vec::new();
    for c in &d.would_change {
        if !c.live.is_empty() {
            let reversal = format!("replay:{}:{}:reversal", plan.hash, c.fact_key.0);
            corrections.push((c.fact_key, legs_correction(reversal, &c.live, -1)?));
        }
        if !c.expected.is_empty() {
            let repost = format!("replay:{}:{}:repost", plan.hash, c.fact_key.0);
            corrections.push((c.fact_key, legs_correction(repost, &c.expected, 1)?));
        }
    }
    for c in &d.unexpected {
        let reversal = format!("replay:{}:{}:reversal", plan.hash, c.fact_key.0);
        corrections.push((c.fact_key, legs_correction(reversal, &c.live, -1)?));
    }
    tx.execute(
        "INSERT INTO replay_applications (plan_sha256, replay_id, scope, base_checksum, applied_by, approved_by, reason,
            ticket, corrections)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &plan.hash,
            &replay_id,
            &serde_json::to_value(&plan.scope).expect("plain data"),
            &plan.base_checksum,
            &who.actor,
            &approver,
            &who.reason,
            &who.ticket,
            &(corrections.len() as i32),
        ],
    )
    .await?;
    let linked: Vec<(&tally_domain::ledger::Correction, tally_ledger::corrections::Link)> = corrections
        .iter()
        .map(|(fact, c)| (c, tally_ledger::corrections::Link { fact_key: Some(fact.0), replay_id: Some(replay_id) }))
        .collect();
    tally_ledger::corrections::book_many(&tx, &linked, approval).await?;
    let entry = tally_audit::Entry {
        actor: who.actor.to_owned(),
        action: "replay.apply".into(),
        subject: Some(format!("plan:{}", plan.hash)),
        reason: Some(who.reason.to_owned()),
        ticket: Some(who.ticket.to_owned()),
        scope: Some(serde_json::to_value(&plan.scope).expect("plain data")),
        before: Some(plan.base_checksum.clone()),
        plan: Some(plan.hash.clone()),
        detail: Some(serde_json::json!({
            "replay_id": replay_id.to_string(),
            "approved_by": approver,
            "corrections": corrections.len(),
            "would_change": d.would_change.len(),
            "unexpected": d.unexpected.len(),
            "missing_not_applied": d.missing.len(),
            "impact": d.impact,
        })),
        ..tally_audit::Entry::default()
    };
    tally_audit::append(&tx, &entry).await?;
    tx.commit().await?;
    applied.corrections = corrections.len();
    Ok(())
}
