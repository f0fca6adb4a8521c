//! Scoped replay (issue 16, DESIGN §13): a scope resolved to exact archived records, recomputed with the current
//! code, and diffed against the live ledger by a canonical hash per fact (`tally replay plan`). Replaying unchanged
//! data yields an empty diff. `tally replay apply` books the diff as correction journals — per changed fact a
//! reversal of what the ledger holds and a re-post of what the rules post — in one transaction with the plan's
//! application and its audit record. (The warehouse's side of a replay is the next part.)

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
    #[error("posting rules refuse an archived fact {0}: {1}")]
    Posting(FactKey, String),
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
    /// SHA-256 over the live side compared (fact key and its journal's canonical hash, sorted): apply refuses a
    /// plan whose base no longer matches (the live data changed).
    pub base_checksum: String,
    pub diff: Diff,
    /// SHA-256 of this plan's canonical JSON with `hash` empty.
    pub hash: String,
}

impl Plan {
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

/// Plans a replay of `scope` against the ledger: resolves it in the archive, recomputes every fact's journal with
/// the current posting rules, reads the live journals, and diffs them. Read-only.
pub async fn plan(
    pool: &Pool,
    objects: &Objects,
    scope: &Scope,
    progress: &mut (dyn FnMut(u64, u64, u64) + Send),
) -> Result<Plan, ReplayError> {
    let (archived, read) = resolve::resolve(pool, objects, scope, progress).await?;
    let located: Vec<scope::Located> = archived.iter().map(|a| a.located.clone()).collect();
    let records_checksum = scope::checksum(&located);
    let keys: Vec<uuid::Uuid> =
        archived.iter().map(|a| a.located.fact_key.0).collect::<BTreeSet<_>>().into_iter().collect();

    // The live side: every fact booked in scope (by the scope's own predicates) or held by the archive's records,
    // with all its journals' entries, and where the ledger took it from.
    let client = pool.get().await?;
    let merchants: Option<Vec<String>> = (!scope.merchants.is_empty()).then(|| scope.merchants.clone());
    let kinds: Option<Vec<String>> =
        (!scope.kinds.is_empty()).then(|| scope.kinds.iter().map(|k| k.as_str().to_owned()).collect());
    let micros = |t: Option<tally_domain::Timestamp>| t.map(|t| t.unix_micros());
    let rows = client
        .query(
            "WITH facts AS (
                SELECT fact_key, payment_id, kind, topic, kafka_partition, kafka_offset FROM event_log
                 WHERE fact_key = ANY($1)
                    OR (($2::text[] IS NULL OR merchant_id = ANY($2))
                        AND ($3::bigint IS NULL OR occurred_at >= to_timestamp($3 / 1e6))
                        AND ($4::bigint IS NULL OR occurred_at < to_timestamp($4 / 1e6))
                        AND ($5::text[] IS NULL OR kind = ANY($5))
                        AND ($6::text IS NULL OR psp = $6))),
             -- A fact's books: its own journal, and the corrections booked for it (a replay's reversal and re-post).
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
            &[&keys, &merchants, &micros(scope.from), &micros(scope.to), &kinds, &scope.psp.map(|p| p.as_str())],
        )
        .await?;
    let mut live_entries: BTreeMap<FactKey, LiveFact> = BTreeMap::new();
    for r in &rows {
        let key = FactKey(r.get(0));
        let slot = live_entries.entry(key).or_insert_with(|| {
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

    // The expected side: per fact, the archived record the ledger booked (its position in the event log), else
    // the first; its journal by the current rules.
    let mut expected: BTreeMap<FactKey, Side> = BTreeMap::new();
    let mut chosen: BTreeMap<FactKey, &resolve::Archived> = BTreeMap::new();
    for a in &archived {
        let booked_at = live_entries.get(&a.located.fact_key).map(|(_, at, _)| at);
        let is_booked = booked_at
            .is_some_and(|(t, p, o)| *t == a.located.topic && *p == a.located.partition && *o == a.located.offset);
        match chosen.get(&a.located.fact_key) {
            Some(_) if !is_booked => {}
            _ => {
                chosen.insert(a.located.fact_key, a);
            }
        }
    }
    for (key, a) in &chosen {
        let journal =
            tally_domain::ledger::postings(&a.event).map_err(|e| ReplayError::Posting(*key, e.to_string()))?;
        let legs = canonical(
            journal
                .into_iter()
                .flat_map(|j| j.entries)
                .map(|e| (e.account.to_string(), e.money.currency.code().to_owned(), e.money.amount.minor())),
        );
        expected
            .insert(*key, Side { payment_id: a.event.payment_id.clone(), kind: a.event.kind.as_str().into(), legs });
    }

    // Only live facts the archive covers are compared: a fact booked from an offset no archive file holds yet is
    // counted, not called unexpected.
    let files = tally_archive::manifest::list_files(pool).await?;
    let covered = |(topic, partition, offset): &(String, i32, i64)| {
        files.iter().any(|f| {
            f.topic == *topic && f.partition == *partition && f.start_offset <= *offset && *offset < f.end_offset
        })
    };
    let mut live: BTreeMap<FactKey, Side> = BTreeMap::new();
    let mut not_archived_yet = 0;
    for (key, (mut side, at, entries)) in live_entries {
        if !expected.contains_key(&key) && !covered(&at) {
            not_archived_yet += 1;
            continue;
        }
        side.legs = canonical(entries);
        live.insert(key, side);
    }
    let mut base = Sha256::new();
    for (key, side) in &live {
        base.update(format!("{}\t{}\n", key.0, plan::hash(&side.legs)).as_bytes());
    }
    let diff = plan::diff(&expected, &live);
    Ok(Plan {
        version: 1,
        scope: scope.clone(),
        records: archived.len() as u64,
        records_checksum,
        facts: expected.len() as u64,
        read,
        processor_version: PROCESSOR_VERSION.to_owned(),
        not_archived_yet,
        base_checksum: hex::encode(base.finalize()),
        diff,
        hash: String::new(),
    }
    .sealed())
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

/// Applies a plan to the ledger: refused unless its hash is its content's, money-moving plans need a second
/// operator's approval, and a plan whose base no longer matches the live ledger (or whose scope resolves to other
/// records now) is stale. In one transaction, under a lock that serialises applies: the application record, per
/// fact that would change a reversal of what the ledger holds and a re-post of what the rules post (per unexpected
/// fact a reversal), each a correction journal naming the fact and tagged with the replay id, and the audit record.
/// The same plan twice: the second changes nothing and says when the first was applied.
pub async fn apply(pool: &Pool, objects: &Objects, plan: &Plan, who: Approval<'_>) -> Result<Applied, ApplyError> {
    if !plan.is_sealed() {
        return Err(ApplyError::NotSealed);
    }
    if who.reason.trim().is_empty() || who.ticket.trim().is_empty() || who.actor.trim().is_empty() {
        return Err(ApplyError::Refused("an apply needs an actor, a reason and a ticket".into()));
    }
    let replay_id =
        uuid::Uuid::new_v5(&uuid::Uuid::from_u128(0x7a11_4e91_0000_0000_0000_0000_0000_0016), plan.hash.as_bytes());
    let d = &plan.diff;
    let mut applied = Applied { replay_id, corrections: 0, applied_before: None, missing_not_applied: d.missing.len() };
    let mut client = pool.get().await?;
    if let Some(r) = client
        .query_opt(
            "SELECT applied_by, to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
               FROM replay_applications WHERE plan_sha256 = $1",
            &[&plan.hash],
        )
        .await?
    {
        applied.applied_before = Some((r.get(0), r.get(1)));
        return Ok(applied);
    }
    if d.would_change.is_empty() && d.unexpected.is_empty() {
        return Ok(applied);
    }
    let approver = who.approved_by.filter(|a| !a.trim().is_empty()).ok_or_else(|| {
        ApplyError::Refused("a replay that moves money needs --approved-by (a second operator)".into())
    })?;
    if approver == who.actor {
        return Err(ApplyError::Refused(format!("{approver} applies this plan: a second operator approves it")));
    }
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&REPLAY_LOCK]).await?;
    // Under the lock no other apply commits: what the ledger holds now is what this one corrects.
    let fresh = self::plan(pool, objects, &plan.scope, &mut |_, _, _| {}).await?;
    if fresh.records_checksum != plan.records_checksum {
        return Err(ApplyError::Stale("the scope resolves to other archived records now".into()));
    }
    if fresh.base_checksum != plan.base_checksum {
        return Err(ApplyError::Stale("the ledger's books for the scope changed since the plan was made".into()));
    }
    let approval = tally_ledger::corrections::Approval {
        proposed_by: who.actor,
        approved_by: approver,
        reason: who.reason,
        ticket: who.ticket,
    };
    let mut corrections = Vec::new();
    for c in &d.would_change {
        let reversal = format!("replay:{}:{}:reversal", plan.hash, c.fact_key.0);
        corrections.push((c.fact_key, legs_correction(reversal, &c.live, -1)?));
        let repost = format!("replay:{}:{}:repost", plan.hash, c.fact_key.0);
        corrections.push((c.fact_key, legs_correction(repost, &c.expected, 1)?));
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
    for (fact, correction) in &corrections {
        let link = tally_ledger::corrections::Link { fact_key: Some(fact.0), replay_id: Some(replay_id) };
        tally_ledger::corrections::book_linked(&tx, correction, approval, link).await?;
    }
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
    Ok(applied)
}
