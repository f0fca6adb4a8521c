//! Scoped replay (issue 16, DESIGN §13): a scope resolved to exact archived records, recomputed with the current
//! code, and diffed against the live ledger by a canonical hash per fact (`tally replay plan`). Replaying unchanged
//! data yields an empty diff. (Apply — reversal and re-post journals — and the warehouse's side are the next part.)

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
                        AND ($6::text IS NULL OR psp = $6)))
             SELECT f.fact_key, f.payment_id, f.kind, f.topic, f.kafka_partition, f.kafka_offset,
                    e.account, e.currency, e.amount_minor
               FROM facts f LEFT JOIN journals j ON j.fact_key = f.fact_key
               LEFT JOIN entries e ON e.journal_id = j.journal_id",
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
