//! The warehouse's side of a replay (issue 16 §2–§3, DESIGN §13): the scope's archived records landed again, with
//! the current code and pinned reference data, into the sink's staging space, and compared row by row with the live
//! `fct_payment_events` by a canonical hash of each row's content (lineage columns — which code wrote it, when,
//! under which replay, with which reference versions — left out). A plan applies the changed rows and refreshes the
//! models in a transaction that is rolled back (the shadow: the mart rows a plan shows are the ones an apply writes
//! unless other facts land on those days in between; an apply reports what it restated); an apply commits the
//! same transaction, with the changed rows tagged with the replay id, every affected mart day recomputed and a
//! closed one restated (`restatements`, naming the replay), and the plan recorded in `wh_replays` so that the same
//! plan twice changes nothing.
//!
//! DuckDB lets one process write the file, so a replay runs where the file is open: in the sink (`POST /replay`;
//! the file is locked only to read positions and to stage, compare and apply — the sink lands its batches between)
//! or, when no sink runs, on the file itself ([`run`]). An apply is refused as stale when the rows that would change
//! (or the unexpected ones) are not the plan's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tally_duckdb::duckdb;
use tally_reference::enrich::Reference;
use tally_sink::LogRecord;

use duckdb::params;
use duckdb::types::Value;

use crate::land::{event_row, ts_value};
use crate::store::{now_micros, StoreError, Warehouse};

/// The columns a replay does not compare: which reference versions and code wrote the row, when, under which replay.
/// The reference versions are lineage too: a row enriched again to the same values under a later version is
/// unchanged (its replacement, when another column changes, names the version used).
const LINEAGE: [&str; 6] =
    ["merchants_version", "fx_version", "processor_version", "replay_id", "landed_at", "enriched_at"];
/// The mart's governance columns (versions, times, the close), left out of a mart row's values.
const GOVERNANCE: [&str; 5] = ["version", "computed_at", "restated_at", "complete_to", "closed"];

/// Which reference data rows are enriched with when landed again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pin {
    /// The versions each live row names (I5: a replay reproduces the row unless the code changed).
    #[default]
    Rows,
    /// The latest versions loaded (re-enrichment).
    Latest,
}

/// A scope as the warehouse filters its rows (event time, UTC microseconds, half-open).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    pub merchants: Vec<String>,
    pub from_micros: Option<i64>,
    pub to_micros: Option<i64>,
    pub kinds: Vec<String>,
    pub psp: Option<String>,
}

/// An archived record, as the log held it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    #[serde(with = "b64")]
    pub key: Option<Vec<u8>>,
    #[serde(with = "b64")]
    pub value: Option<Vec<u8>>,
}

/// What a replay is asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub filter: Filter,
    pub reference: Pin,
    /// Every archived record of the scope.
    pub records: Vec<Record>,
    /// The archive's files as (topic, partition, start, end) offset ranges: a live row landed from an offset no file
    /// holds yet is counted, not called unexpected.
    pub covered: Vec<(String, i32, i64, i64)>,
    /// None: plan (nothing is kept).
    pub apply: Option<Apply>,
}

/// An apply: the plan it applies, and the diff that plan showed (the current diff must be the same).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Apply {
    pub replay_id: String,
    pub plan_sha256: String,
    pub expect: Diff,
}

/// One column of a row that would change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnChange {
    pub column: String,
    pub live: serde_json::Value,
    pub expected: serde_json::Value,
}

/// A landed row that landing its record again gives otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowChange {
    pub fact_key: String,
    pub payment_id: String,
    pub kind: String,
    pub columns: Vec<ColumnChange>,
}

/// A mart row the replay recomputes: its values before and after (None: no row), and whether it is closed (a closed
/// row changed is restated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MartChange {
    pub mart: String,
    pub merchant_id: String,
    pub day: String,
    pub currency: String,
    pub closed: bool,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// The warehouse's diff for a scope.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Diff {
    pub reference: Pin,
    pub unchanged: u64,
    pub would_change: Vec<RowChange>,
    /// Archived facts the warehouse has no row for (its sink lands them; a replay does not race it).
    pub missing: Vec<String>,
    /// Rows in scope whose fact no archived record of the scope holds.
    pub unexpected: Vec<String>,
    /// Rows in scope landed from offsets the archive holds no file for yet (not compared).
    pub not_archived_yet: u64,
    /// Facts whose row was landed from a record outside the scope (an earlier restatement of the fact): not compared.
    pub landed_from_another_record: u64,
    /// Records that are not bookable facts (the sink rejected them too).
    pub rejects: u64,
    /// Records of topics this warehouse does not consume (another topic prefix's, sharing the archive): not compared.
    #[serde(default)]
    pub other_topics: u64,
    /// The reference versions (merchants, fx) the rows were landed again with.
    #[serde(default)]
    pub reference_versions: Vec<Versions>,
    /// The mart rows an apply recomputes, with their values before and after.
    pub marts: Vec<MartChange>,
    /// SHA-256 over the live rows compared (fact key and content hash, sorted).
    pub base_checksum: String,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.would_change.is_empty() && self.missing.is_empty() && self.unexpected.is_empty()
    }
}

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub rows_replaced: u64,
    pub restatements: u64,
    /// When the plan was applied before (then nothing was done now).
    pub applied_before: Option<String>,
}

/// A replay's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub diff: Diff,
    pub applied: Option<Applied>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("warehouse file: {0}")]
    Duck(#[from] duckdb::Error),
    #[error("reference data: {0}")]
    Reference(#[from] crate::reference::LoadError),
    #[error("money: {0}")]
    Money(#[from] tally_money::MoneyError),
    #[error("stale plan: {0}; plan again")]
    Stale(String),
    #[error("postgres: {0}")]
    Postgres(String),
    #[error("the warehouse sink at {0}: {1}")]
    Sink(String, String),
}

/// The reference versions a row names: (merchants, fx).
pub type Versions = (Option<i64>, Option<i64>);

/// The reference data a replay enriches with: the latest, and the states each live row's versions name.
pub struct References {
    pub latest: Reference,
    pub pinned: HashMap<Versions, Reference>,
}

/// Loads the reference states a replay of this warehouse needs (every version pair its rows name, and the latest).
pub async fn references(
    pool: &deadpool_postgres::Pool,
    pairs: &[Versions],
    reporting: tally_money::Currency,
    fx_max_age_days: i64,
) -> Result<References, ReplayError> {
    let client = pool.get().await.map_err(|e| ReplayError::Postgres(e.to_string()))?;
    let latest = crate::reference::reference_state(&client, reporting, fx_max_age_days, None).await?;
    let mut pinned = HashMap::new();
    for pair in pairs {
        let state = crate::reference::reference_state(&client, reporting, fx_max_age_days, Some(*pair)).await?;
        pinned.insert(*pair, state);
    }
    Ok(References { latest, pinned })
}

/// Runs a replay on a warehouse held by this process (the sink's, or the file opened by `tally replay`). The
/// warehouse is locked only while its file is read or written: decoding the records and landing them again run on
/// every core without it, so a sink keeps landing batches in between.
pub async fn run(
    warehouse: &Mutex<Warehouse>,
    pool: &deadpool_postgres::Pool,
    fx_max_age_days: i64,
    request: &Request,
) -> Result<Outcome, ReplayError> {
    let (pairs, reporting, tokens, topics) = {
        let w = warehouse.lock().expect("warehouse lock");
        (w.version_pairs()?, w.reference().reporting, w.tokens.clone(), w.consumed_topics()?)
    };
    let refs = references(pool, &pairs, reporting, fx_max_age_days).await?;
    let lock = || warehouse.lock().expect("warehouse lock");
    tokio::task::block_in_place(|| {
        if let Some(done) = lock().applied(request)? {
            return Ok(done);
        }
        let now = now_micros();
        let mut diff = Diff { reference: request.reference, ..Diff::default() };
        let started = std::time::Instant::now();
        // The records of the topics this warehouse consumes, decoded as the sink decodes them (on every core).
        let ours = |r: &&Record| topics.contains(&r.topic);
        diff.other_topics = request.records.iter().filter(|r| !ours(r)).count() as u64;
        let records: Vec<LogRecord> = request
            .records
            .iter()
            .filter(ours)
            .map(|r| LogRecord {
                topic: r.topic.clone(),
                partition: r.partition,
                offset: r.offset,
                timestamp_ms: None,
                key: r.key.clone(),
                value: r.value.clone(),
                headers: vec![],
            })
            .collect();
        let decoded = on_every_core(&records, |r| {
            tally_contracts::decode_lifecycle_record(r.key.as_deref(), r.value.as_deref()).ok()
        });
        // The records of each fact.
        let mut facts: HashMap<tally_domain::FactKey, Vec<usize>> = HashMap::with_capacity(decoded.len());
        for (i, d) in decoded.iter().enumerate() {
            match d {
                Some(fact) => facts.entry(fact.fact_key).or_default().push(i),
                None => diff.rejects += 1,
            }
        }
        tracing::debug!(decoded = ?started.elapsed(), "replay: records decoded");
        let live = lock().live_positions(facts.keys())?;
        tracing::debug!(live = ?started.elapsed(), "replay: live positions read");
        diff.reference_versions = match request.reference {
            Pin::Rows => {
                live.values().map(|(_, v)| *v).collect::<std::collections::BTreeSet<_>>().into_iter().collect()
            }
            Pin::Latest => vec![(refs.latest.merchants_version, refs.latest.fx_version)],
        };
        // Per fact, the record its row was landed from (or, for a fact not landed, the one the sink would keep: the
        // earliest occurred_at, then the first in log order), landed again with the reference pinned (on every core).
        let facts: Vec<(&tally_domain::FactKey, &Vec<usize>)> = facts.iter().collect();
        let landed = on_every_core(&facts, |(key, indexes)| -> Result<Option<Vec<Value>>, ReplayError> {
            fn at(r: &LogRecord) -> (&str, i32, i64) {
                (r.topic.as_str(), r.partition, r.offset)
            }
            let fact = |i: &usize| (&records[*i], decoded[*i].as_ref().expect("decoded"));
            let (chosen, reference) = match live.get(*key) {
                Some(((topic, partition, offset), versions)) => {
                    let Some(chosen) =
                        indexes.iter().map(fact).find(|(r, _)| at(r) == (topic.as_str(), *partition, *offset))
                    else {
                        return Ok(None);
                    };
                    let reference = match request.reference {
                        Pin::Latest => &refs.latest,
                        Pin::Rows => refs.pinned.get(versions).ok_or_else(|| {
                            ReplayError::Stale(format!("reference versions {versions:?} were not loaded"))
                        })?,
                    };
                    (chosen, reference)
                }
                None => {
                    let chosen = indexes
                        .iter()
                        .map(fact)
                        .min_by_key(|(r, f)| (f.event.occurred_at.unix_micros(), at(r)))
                        .expect("a fact has a record");
                    (chosen, &refs.latest)
                }
            };
            Ok(Some(event_row(chosen.0, chosen.1, reference, &tokens, now)?))
        });
        let mut rows = Vec::with_capacity(landed.len());
        for row in landed {
            match row? {
                Some(row) => rows.push(row),
                None => diff.landed_from_another_record += 1,
            }
        }
        tracing::debug!(rows = ?started.elapsed(), "replay: rows landed again");
        lock().compare(request, &rows, diff, now, started)
    })
}

/// Where a live row was landed from, and the reference versions it names.
type Live = ((String, i32, i64), Versions);

impl Warehouse {
    /// The (merchants, fx) version pairs the landed rows name.
    pub fn version_pairs(&self) -> Result<Vec<Versions>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT DISTINCT merchants_version, fx_version FROM fct_payment_events")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The topics this warehouse's sink consumes (its claimed partitions').
    fn consumed_topics(&self) -> Result<std::collections::BTreeSet<String>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT DISTINCT topic FROM wh_offsets WHERE group_id = ?")?;
        let rows = stmt.query_map(params![self.group_id], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Whether this apply's plan was applied before (its outcome then).
    fn applied(&self, request: &Request) -> Result<Option<Outcome>, ReplayError> {
        let Some(apply) = &request.apply else { return Ok(None) };
        let before: Option<String> = self
            .conn
            .query_row(
                "SELECT strftime(applied_at, '%Y-%m-%dT%H:%M:%SZ') FROM wh_replays WHERE plan_sha256 = ?",
                params![apply.plan_sha256],
                |r| r.get(0),
            )
            .ok();
        Ok(before.map(|at| Outcome {
            diff: apply.expect.clone(),
            applied: Some(Applied { applied_before: Some(at), ..Applied::default() }),
        }))
    }

    /// Where each of these facts' rows was landed from, and the reference versions it names.
    fn live_positions<'a>(
        &self,
        keys: impl Iterator<Item = &'a tally_domain::FactKey>,
    ) -> Result<HashMap<tally_domain::FactKey, Live>, ReplayError> {
        self.conn.execute("DELETE FROM wh_replay_keys", [])?;
        {
            let mut app = self.conn.appender_to_catalog_and_db("wh_replay_keys", "temp", "main")?;
            for key in keys {
                app.append_row(params![key.0.to_string()])?;
            }
            app.flush()?;
        }
        let mut stmt = self.conn.prepare(
            "SELECT f.fact_key, f.topic, f.kafka_partition, f.kafka_offset, f.merchants_version, f.fx_version
               FROM fct_payment_events f SEMI JOIN wh_replay_keys k ON k.fact_key = f.fact_key",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, ((r.get(1)?, r.get(2)?, r.get(3)?), (r.get(4)?, r.get(5)?))))
        })?;
        let mut out = HashMap::new();
        for row in rows {
            let (key, live) = row?;
            if let Ok(key) = key.parse() {
                out.insert(tally_domain::FactKey(key), live);
            }
        }
        Ok(out)
    }

    /// Stages the rows landed again, compares them with the live ones, and shadows (a plan) or applies the change.
    fn compare(
        &mut self,
        request: &Request,
        rows: &[Vec<Value>],
        mut diff: Diff,
        now: i64,
        started: std::time::Instant,
    ) -> Result<Outcome, ReplayError> {
        self.conn.execute("DELETE FROM wh_stage_events", [])?;
        {
            let mut app = self.conn.appender_to_catalog_and_db("wh_stage_events", "temp", "main")?;
            for row in rows {
                app.append_row(duckdb::appender_params_from_iter(row))?;
            }
            app.flush()?;
        }
        tracing::debug!(staged = ?started.elapsed(), "replay: rows staged");
        // Compared exactly, column by column; the live side's checksum from DuckDB's 64-bit row hash (summed, so
        // the order does not matter: it dates the live state a plan was made against, within one build).
        let content = self.content_columns()?;
        let hash = |alias: &str| {
            format!("hash({})", content.iter().map(|c| format!("{alias}.{c}")).collect::<Vec<_>>().join(", "))
        };
        let row = |alias: &str| {
            format!(
                "struct_pack({})",
                content.iter().map(|c| format!("{c} := {alias}.{c}")).collect::<Vec<_>>().join(", ")
            )
        };
        self.conn.execute_batch(&format!(
            "CREATE OR REPLACE TEMP TABLE wh_replay_cmp AS
             SELECT s.fact_key, f.fact_key IS NOT NULL AS landed,
                    f.fact_key IS NOT NULL AND {} IS DISTINCT FROM {} AS changed,
                    CASE WHEN f.fact_key IS NULL THEN NULL ELSE {} END AS live_hash
               FROM wh_stage_events s LEFT JOIN fct_payment_events f ON f.fact_key = s.fact_key",
            row("s"),
            row("f"),
            hash("f")
        ))?;
        let (unchanged, compared): (i64, String) = self.conn.query_row(
            "SELECT count(*) FILTER (WHERE landed AND NOT changed),
                    count(*) FILTER (WHERE landed) || ':' || coalesce(sum(live_hash::HUGEINT), 0)
               FROM wh_replay_cmp",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        diff.unchanged = unchanged as u64;
        tracing::debug!(compared = ?started.elapsed(), "replay: rows compared");
        diff.missing = self.strings("SELECT fact_key FROM wh_replay_cmp WHERE NOT landed ORDER BY 1")?;
        // Rows in scope that no archived record of the scope holds: unexpected where the archive covers their
        // offset, else not archived yet.
        let mut ranges: BTreeMap<(String, i32), Vec<(i64, i64)>> = BTreeMap::new();
        for (topic, partition, start, end) in &request.covered {
            ranges.entry((topic.clone(), *partition)).or_default().push((*start, *end));
        }
        let covered = |topic: &str, partition: i32, offset: i64| {
            ranges
                .get(&(topic.to_owned(), partition))
                .is_some_and(|r| r.iter().any(|(s, e)| *s <= offset && offset < *e))
        };
        let mut unexpected_hashes = Vec::new();
        {
            let mut stmt = self.conn.prepare(&format!(
                "SELECT f.fact_key, f.topic, f.kafka_partition, f.kafka_offset, {} FROM fct_payment_events f
                  WHERE {} AND f.fact_key NOT IN (SELECT fact_key FROM wh_replay_keys) ORDER BY 1",
                hash("f"),
                filter_sql(&request.filter)
            ))?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i32>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get(4)?,
                ))
            })?;
            for row in rows {
                let (key, topic, partition, offset, h): (String, String, i32, i64, u64) = row?;
                if covered(&topic, partition, offset) {
                    unexpected_hashes.push(format!("{key}:{h}"));
                    diff.unexpected.push(key);
                } else {
                    diff.not_archived_yet += 1;
                }
            }
        }
        diff.base_checksum = {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            h.update(compared.as_bytes());
            for u in &unexpected_hashes {
                h.update(b"\n");
                h.update(u.as_bytes());
            }
            hex::encode(h.finalize())
        };
        diff.would_change = self.row_changes(&content)?;
        tracing::debug!(changes = ?started.elapsed(), "replay: unexpected rows and changes");
        if let Some(apply) = &request.apply {
            let (e, d) = (&apply.expect, &diff);
            if e.would_change != d.would_change || e.unexpected != d.unexpected || e.reference != d.reference {
                return Err(ReplayError::Stale(
                    "the rows the warehouse and the current code give are not the plan's".into(),
                ));
            }
        }
        if diff.would_change.is_empty() {
            return Ok(Outcome { diff, applied: request.apply.as_ref().map(|_| Applied::default()) });
        }
        // The shadow (a plan) or the apply: the changed rows replace the live ones, and the models are refreshed for
        // the keys they touch, in one transaction.
        let replay_id = request.apply.as_ref().map(|a| a.replay_id.clone());
        let tx = self.conn.transaction()?;
        tx.execute_batch(
            "DELETE FROM wh_stage_events
              WHERE fact_key NOT IN (SELECT fact_key FROM wh_replay_cmp WHERE changed)",
        )?;
        tx.execute(
            "UPDATE wh_stage_events s SET landed_at = f.landed_at, replay_id = ?
               FROM fct_payment_events f WHERE f.fact_key = s.fact_key",
            params![replay_id],
        )?;
        crate::models::affected_from(&tx, crate::models::Staged::Batch)?;
        let before = mart_rows(&tx)?;
        tx.execute_batch(
            "DELETE FROM fct_payment_events WHERE fact_key IN (SELECT fact_key FROM wh_stage_events);
             INSERT INTO fct_payment_events SELECT * FROM wh_stage_events;",
        )?;
        let replaced: i64 = tx.query_row("SELECT count(*) FROM wh_stage_events", [], |r| r.get(0))?;
        self.models.refresh(&tx, now, self.allowed_lateness_secs)?;
        let after = mart_rows(&tx)?;
        let restatements = tx.execute(
            "UPDATE restatements SET replay_id = ? WHERE restated_at = ? AND replay_id IS NULL",
            params![replay_id, ts_value(now)],
        )? as u64;
        let keys: BTreeSet<&(String, String, String)> = before.keys().chain(after.keys()).collect();
        for key in keys {
            let (b, a) = (before.get(key), after.get(key));
            if b.map(|b| &b.1) == a.map(|a| &a.1) {
                continue;
            }
            diff.marts.push(MartChange {
                mart: "mart_merchant_daily".into(),
                merchant_id: key.0.clone(),
                day: key.1.clone(),
                currency: key.2.clone(),
                closed: b.or(a).is_some_and(|r| r.0),
                before: b.map(|b| b.1.clone()),
                after: a.map(|a| a.1.clone()),
            });
        }
        let Some(apply) = &request.apply else {
            // A plan keeps nothing.
            drop(tx);
            return Ok(Outcome { diff, applied: None });
        };
        tx.execute(
            "INSERT INTO wh_replays VALUES (?, ?, ?, ?, ?)",
            params![apply.plan_sha256, apply.replay_id, ts_value(now), replaced, restatements as i64],
        )?;
        tx.commit()?;
        let applied = Applied { rows_replaced: replaced as u64, restatements, applied_before: None };
        Ok(Outcome { diff, applied: Some(applied) })
    }

    /// The columns a replay compares, in table order.
    fn content_columns(&self) -> Result<Vec<String>, duckdb::Error> {
        let all = self.strings(
            "SELECT column_name FROM information_schema.columns
              WHERE table_name = 'fct_payment_events' AND table_schema = 'main' ORDER BY ordinal_position",
        )?;
        Ok(all.into_iter().filter(|c| !LINEAGE.contains(&c.as_str())).collect())
    }

    fn strings(&self, sql: &str) -> Result<Vec<String>, duckdb::Error> {
        let mut stmt = self.conn.prepare(sql)?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect()
    }

    /// The rows that would change, column by column: live (`fct_payment_events`) against landed again
    /// (`wh_stage_events`).
    fn row_changes(&self, content: &[String]) -> Result<Vec<RowChange>, duckdb::Error> {
        let cols = content.join(", ");
        let read = |table: &str| -> Result<BTreeMap<String, Vec<Value>>, duckdb::Error> {
            let mut stmt = self.conn.prepare(&format!(
                "SELECT {cols} FROM {table} WHERE fact_key IN
                    (SELECT fact_key FROM wh_replay_cmp WHERE changed)"
            ))?;
            let n = content.len();
            let rows = stmt.query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect::<Result<Vec<_>, _>>())?;
            let mut out = BTreeMap::new();
            for row in rows {
                let row = row?;
                let key = match &row[0] {
                    Value::Text(k) => k.clone(),
                    other => format!("{other:?}"),
                };
                out.insert(key, row);
            }
            Ok(out)
        };
        let (live, expected) = (read("fct_payment_events")?, read("wh_stage_events")?);
        let text = |v: &Value| match v {
            Value::Text(s) => s.clone(),
            other => format!("{other:?}"),
        };
        let index = |name: &str| content.iter().position(|c| c == name).expect("a content column");
        let (payment, kind) = (index("payment_id"), index("kind"));
        Ok(expected
            .iter()
            .filter_map(|(key, e)| {
                let l = live.get(key)?;
                let columns = content
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| l[*i] != e[*i])
                    .map(|(i, c)| ColumnChange {
                        column: c.clone(),
                        live: crate::query::json(l[i].clone()),
                        expected: crate::query::json(e[i].clone()),
                    })
                    .collect();
                Some(RowChange { fact_key: key.clone(), payment_id: text(&e[payment]), kind: text(&e[kind]), columns })
            })
            .collect())
    }
}

/// `f` over `items` on every core (in chunks, in order).
pub fn on_every_core<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism().map_or(1, usize::from).min(8);
    if workers < 2 || items.len() < 2_000 {
        return items.iter().map(f).collect();
    }
    let f = &f;
    std::thread::scope(|scope| {
        let chunks: Vec<_> = items
            .chunks(items.len().div_ceil(workers))
            .map(|chunk| scope.spawn(move || chunk.iter().map(f).collect::<Vec<_>>()))
            .collect();
        chunks.into_iter().flat_map(|c| c.join().expect("a replay worker panicked")).collect()
    })
}

/// Mart rows by (merchant, day, currency): (closed, values).
type MartRows = BTreeMap<(String, String, String), (bool, serde_json::Value)>;

/// The mart rows of the affected days (`wh_affected_days`).
fn mart_rows(conn: &duckdb::Connection) -> Result<MartRows, duckdb::Error> {
    let mut stmt = conn.prepare(
        "SELECT m.merchant_id, CAST(m.day AS VARCHAR), m.currency, m.closed, CAST(to_json(m) AS VARCHAR)
           FROM mart_merchant_daily m
           SEMI JOIN wh_affected_days a ON a.merchant_id = m.merchant_id AND a.day = m.day AND a.currency = m.currency",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            (r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?),
            (r.get::<_, bool>(3)?, r.get::<_, String>(4)?),
        ))
    })?;
    let mut out = BTreeMap::new();
    for row in rows {
        let (key, (closed, json)) = row?;
        let mut values: serde_json::Value = serde_json::from_str(&json).unwrap_or(serde_json::Value::Null);
        if let Some(o) = values.as_object_mut() {
            for c in GOVERNANCE.iter().chain(&["merchant_id", "day", "currency"]) {
                o.remove(*c);
            }
        }
        out.insert(key, (closed, values));
    }
    Ok(out)
}

/// The scope as a WHERE clause over `fct_payment_events f` (values quoted as SQL literals).
fn filter_sql(f: &Filter) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let list = |v: &[String]| v.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", ");
    let mut clauses = vec!["true".to_owned()];
    if !f.merchants.is_empty() {
        clauses.push(format!("f.merchant_id IN ({})", list(&f.merchants)));
    }
    if !f.kinds.is_empty() {
        clauses.push(format!("f.kind IN ({})", list(&f.kinds)));
    }
    if let Some(p) = &f.psp {
        clauses.push(format!("f.psp = {}", quote(p)));
    }
    if let Some(from) = f.from_micros {
        clauses.push(format!("f.occurred_at >= make_timestamp({from}::BIGINT)"));
    }
    if let Some(to) = f.to_micros {
        clauses.push(format!("f.occurred_at < make_timestamp({to}::BIGINT)"));
    }
    clauses.join(" AND ")
}

/// Whether a warehouse sink answers at `config.listen`.
async fn listening(config: &crate::WarehouseConfig) -> Result<bool, ReplayError> {
    let probe = reqwest::Client::new()
        .get(format!("http://{}/healthz", config.listen))
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await;
    match probe {
        Ok(_) => Ok(true),
        Err(e) if e.is_connect() => Ok(false),
        Err(e) => Err(ReplayError::Sink(config.listen.clone(), e.to_string())),
    }
}

/// Whether there is a warehouse to replay on: a sink listening, or its file.
pub async fn reachable(config: &crate::WarehouseConfig) -> bool {
    matches!(listening(config).await, Ok(true)) || config.path.exists()
}

/// Runs a replay where the warehouse is: asks the sink listening at `config.listen`, or, when none listens, opens
/// the file (when there is one). `Ok(None)`: there is no warehouse.
pub async fn where_it_is(
    config: &crate::WarehouseConfig,
    pool: &deadpool_postgres::Pool,
    request: &Request,
) -> Result<Option<Outcome>, ReplayError> {
    // Whether a sink listens, before a request of the scope's every record is built for it.
    let listening = listening(config).await?;
    let sent = if !listening {
        None
    } else {
        Some(
            reqwest::Client::new()
                .post(format!("http://{}/replay", config.listen))
                .header("content-type", "application/json")
                .body(serde_json::to_vec(request).expect("plain data"))
                .timeout(std::time::Duration::from_secs(3600))
                .send()
                .await,
        )
    };
    match sent {
        None => {}
        Some(Ok(response)) => {
            let status = response.status();
            let text = response.text().await.map_err(|e| ReplayError::Sink(config.listen.clone(), e.to_string()))?;
            if status == reqwest::StatusCode::CONFLICT {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                return Err(ReplayError::Stale(v["stale"].as_str().unwrap_or(&text).to_owned()));
            }
            if !status.is_success() {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                return Err(ReplayError::Sink(config.listen.clone(), v["error"].as_str().unwrap_or(&text).to_owned()));
            }
            return serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| ReplayError::Sink(config.listen.clone(), e.to_string()));
        }
        Some(Err(e)) => return Err(ReplayError::Sink(config.listen.clone(), e.to_string())),
    }
    if !config.path.exists() {
        return Ok(None);
    }
    let reporting = tally_money::Currency::from_code(&config.reporting_currency)?;
    let client = pool.get().await.map_err(|e| ReplayError::Postgres(e.to_string()))?;
    let reference = crate::reference::reference_state(&client, reporting, config.fx_max_age_days, None).await?;
    drop(client);
    let warehouse = Warehouse::open(
        &config.path,
        &config.group_id,
        reference,
        crate::land::Tokenizer::new(config.token_key.expose().as_bytes()),
        config.allowed_lateness_secs,
        &config.checkpoint_threshold,
    )?;
    let warehouse = Mutex::new(warehouse);
    run(&warehouse, pool, config.fx_max_age_days, request).await.map(Some)
}

mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&base64::engine::general_purpose::STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| base64::engine::general_purpose::STANDARD.decode(s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_filter_quotes_its_values() {
        let f = Filter {
            merchants: vec!["m'1".into(), "m2".into()],
            from_micros: Some(5),
            to_micros: None,
            kinds: vec!["captured".into()],
            psp: Some("adyen".into()),
        };
        assert_eq!(
            filter_sql(&f),
            "true AND f.merchant_id IN ('m''1', 'm2') AND f.kind IN ('captured') AND f.psp = 'adyen' \
             AND f.occurred_at >= make_timestamp(5::BIGINT)"
        );
        assert_eq!(filter_sql(&Filter::default()), "true");
    }
}
