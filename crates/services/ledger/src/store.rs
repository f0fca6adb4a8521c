//! The ledger's PostgreSQL side: partition claims (epoch fencing) and the one-transaction batch commit.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use deadpool_postgres::Pool;
use serde_json::json;
use tally_domain::ledger::{postings, predecessor};
use tally_domain::status::derive_status;
use tally_domain::{EventKind, PaymentEvent, Psp, Source, Timestamp};
use tally_money::{Amount, Currency, Money};
use uuid::Uuid;

use crate::batch::{Decoded, Incoming};
use crate::PROCESSOR_VERSION;
use tally_contracts::EncodedEvent;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("postgres: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("postgres pool: {0}")]
    Pool(String),
    #[error("fenced: {topic}[{partition}] is owned by a newer epoch or moved past offset {start}")]
    Fenced { topic: String, partition: i32, start: i64 },
    #[error("ledger arithmetic: {0}")]
    Arithmetic(String),
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Pool(e.to_string())
    }
}

impl StoreError {
    /// The database refused a record's content (SQLSTATE class 22 data exception or 23 integrity violation), or
    /// the ledger's arithmetic did: retrying cannot help, the record must be isolated and rejected.
    pub fn is_data_error(&self) -> bool {
        match self {
            StoreError::Arithmetic(_) => true,
            StoreError::Db(e) => e.as_db_error().is_some_and(|db| {
                let code = db.code().code();
                code.starts_with("22") || code.starts_with("23")
            }),
            _ => false,
        }
    }

    /// Worth retrying the same batch (the database went away), as opposed to a fence, which means stop.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Pool(_) => true,
            StoreError::Db(e) => match e.as_db_error() {
                // No server error: the connection broke (server restarting, network).
                None => true,
                // 08 connection exception, 53 insufficient resources, 57 operator intervention (shutdown,
                // restart), 40001 serialization failure, 40P01 deadlock: the same batch can succeed on retry.
                Some(db) => {
                    let code = db.code().code();
                    ["08", "53", "57"].iter().any(|class| code.starts_with(class))
                        || ["40001", "40P01", "55P03"].contains(&code)
                }
            },
            StoreError::Fenced { .. } | StoreError::Arithmetic(_) => false,
        }
    }
}

/// This sink's ownership of one partition (the framework's claim).
pub type PartitionClaim = tally_sink::Claim;

/// What one batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub booked: usize,
    pub duplicates: usize,
    pub conflicts: usize,
    pub rejects: usize,
    pub orphans: usize,
}

#[derive(Clone)]
pub struct LedgerStore {
    pool: Pool,
    group: String,
}

impl LedgerStore {
    pub fn new(pool: Pool, group: impl Into<String>) -> Self {
        LedgerStore { pool, group: group.into() }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Takes ownership of a partition: bumps its epoch (fencing any previous owner) and returns where to resume.
    pub async fn claim(&self, topic: &str, partition: i32) -> Result<PartitionClaim, StoreError> {
        let client = self.pool.get().await?;
        let c = tally_postgres::offsets::claim(&client, &self.group, topic, partition).await?;
        Ok(PartitionClaim {
            topic: topic.to_owned(),
            partition,
            next_offset: c.next_offset,
            epoch: c.epoch,
            anchor: c.anchor,
        })
    }

    /// Whether every range is already committed by this owner: after a connection broke during COMMIT, a retry is
    /// fenced by its own success (`next_offset` moved to the end, same epoch), which is not a foreign owner.
    pub async fn already_committed(&self, ranges: &[(PartitionClaim, i64)]) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        for (claim, end) in ranges {
            let row = client
                .query_opt(
                    "SELECT 1 FROM sink_offsets WHERE group_id = $1 AND topic = $2 AND kafka_partition = $3
                     AND owner_epoch = $4 AND next_offset = $5",
                    &[&self.group, &claim.topic, &claim.partition, &claim.epoch, end],
                )
                .await?;
            if row.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Books a batch: the records of each claimed partition from its `next_offset` up to `ends[claim]` (exclusive),
    /// effects and offsets in one transaction. A fenced claim aborts everything.
    pub async fn commit(
        &self,
        claims: &[(PartitionClaim, i64)],
        records: &[Decoded],
    ) -> Result<BatchOutcome, StoreError> {
        let started = std::time::Instant::now();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut outcome = BatchOutcome::default();

        // Facts, first occurrence per fact key in offset order; later ones are duplicates within the batch.
        let mut seen: HashSet<Uuid> = HashSet::new();
        let mut facts = Vec::new();
        let mut dupes = Vec::new();
        let mut rejects = Vec::new();
        for r in records {
            match r {
                Decoded::Fact { origin, fact } => {
                    if seen.insert(fact.fact_key.0) {
                        facts.push((origin, fact.as_ref()));
                    } else {
                        dupes.push((origin, fact.as_ref()));
                    }
                }
                Decoded::Reject { origin, reason } => rejects.push((origin, reason)),
            }
        }

        // 1. The event log. ON CONFLICT: the fact key (or the offset) is there already.
        let col = |f: &dyn Fn(&PaymentEvent) -> String| facts.iter().map(|(_, x)| f(&x.event)).collect::<Vec<String>>();
        let keys: Vec<Uuid> = facts.iter().map(|(_, x)| x.fact_key.0).collect();
        let kinds = col(&|e| e.kind.as_str().to_owned());
        let payments = col(&|e| e.payment_id.clone());
        let psps = col(&|e| e.psp.as_str().to_owned());
        let refs = col(&|e| e.psp_reference.clone());
        let originals: Vec<Option<String>> = facts.iter().map(|(_, x)| x.event.original_reference.clone()).collect();
        let merchants = col(&|e| e.merchant_id.clone());
        let amounts: Vec<i64> = facts.iter().map(|(_, x)| x.event.money.amount.minor()).collect();
        let currencies = col(&|e| e.money.currency.code().to_owned());
        let fees: Vec<Option<i64>> = facts.iter().map(|(_, x)| x.event.fee.map(Amount::minor)).collect();
        let occurred: Vec<i64> = facts.iter().map(|(_, x)| x.event.occurred_at.unix_micros()).collect();
        let received: Vec<i64> = facts.iter().map(|(_, x)| x.event.received_at.unix_micros()).collect();
        let sources = col(&|e| {
            serde_json::to_value(e.source).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
        });
        let source_ids = col(&|e| e.source_event_id.clone());
        let deliveries: Vec<Option<String>> = facts.iter().map(|(_, x)| x.delivery_id.clone()).collect();
        let topics: Vec<String> = facts.iter().map(|(o, _)| o.topic.clone()).collect();
        let partitions: Vec<i32> = facts.iter().map(|(o, _)| o.partition).collect();
        let offsets: Vec<i64> = facts.iter().map(|(o, _)| o.offset).collect();
        let schema_ids: Vec<i32> = facts.iter().map(|(_, x)| x.schema_id as i32).collect();
        // Serialized straight to the wire's jsonb, without an intermediate `serde_json::Value` per event.
        let bodies: Vec<tokio_postgres::types::Json<&PaymentEvent>> =
            facts.iter().map(|(_, x)| tokio_postgres::types::Json(&x.event)).collect();
        let inserted: BTreeSet<Uuid> = tx
            .query(
                "INSERT INTO event_log (fact_key, kind, payment_id, psp, psp_reference, original_reference, merchant_id,
                    amount_minor, currency, fee_minor, occurred_at, received_at, source, source_event_id, delivery_id,
                    topic, kafka_partition, kafka_offset, schema_id, processor_version, event)
                 SELECT u.k, u.kind, u.p, u.psp, u.r, u.o, u.m, u.a, u.c, u.f,
                    'epoch'::timestamptz + u.occ * interval '1 microsecond',
                    'epoch'::timestamptz + u.rec * interval '1 microsecond',
                    u.s, u.sid, u.d, u.t, u.part, u.off, u.sch, $20, u.ev
                 FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                    $8::bigint[], $9::text[], $10::bigint[], $11::bigint[], $12::bigint[], $13::text[], $14::text[],
                    $15::text[], $16::text[], $17::int[], $18::bigint[], $19::int[], $21::jsonb[])
                    AS u(k, kind, p, psp, r, o, m, a, c, f, occ, rec, s, sid, d, t, part, off, sch, ev)
                 ON CONFLICT DO NOTHING
                 RETURNING fact_key",
                &[
                    &keys, &kinds, &payments, &psps, &refs, &originals, &merchants, &amounts, &currencies, &fees,
                    &occurred, &received, &sources, &source_ids, &deliveries, &topics, &partitions, &offsets,
                    &schema_ids, &PROCESSOR_VERSION, &bodies,
                ],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let new: Vec<(&Incoming, &EncodedEvent)> =
            facts.iter().filter(|(_, x)| inserted.contains(&x.fact_key.0)).copied().collect();
        dupes.extend(facts.iter().filter(|(_, x)| !inserted.contains(&x.fact_key.0)).copied());
        outcome.booked = new.len();
        let t_events = started.elapsed();

        // 2. Duplicates: the same content is counted and skipped; different content is an exception, never merged.
        if !dupes.is_empty() {
            let dupe_keys: Vec<Uuid> = dupes.iter().map(|(_, x)| x.fact_key.0).collect();
            let existing: HashMap<Uuid, serde_json::Value> = tx
                .query("SELECT fact_key, event FROM event_log WHERE fact_key = ANY($1)", &[&dupe_keys])
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let mut conflict_flags = Vec::new();
            for (origin, x) in &dupes {
                let key = x.fact_key.0;
                let stored = existing.get(&key).and_then(|v| serde_json::from_value::<PaymentEvent>(v.clone()).ok());
                let same = stored.as_ref().is_some_and(|s| s.same_content(&x.event));
                conflict_flags.push(!same);
                if same {
                    outcome.duplicates += 1;
                } else {
                    outcome.conflicts += 1;
                    tx.execute(
                        "INSERT INTO dq_exceptions (kind, fact_key, payment_id, detail) VALUES ('content_conflict', $1, $2, $3)",
                        &[&key, &x.event.payment_id, &json!({
                            "booked": existing.get(&key),
                            "incoming": &x.event,
                            "origin": { "topic": origin.topic, "partition": origin.partition, "offset": origin.offset },
                        })],
                    )
                    .await?;
                }
            }
            tx.execute(
                "INSERT INTO sink_duplicates (topic, kafka_partition, kafka_offset, fact_key, conflict)
                 SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::uuid[], $5::bool[])
                 ON CONFLICT DO NOTHING",
                &[
                    &dupes.iter().map(|(o, _)| o.topic.clone()).collect::<Vec<_>>(),
                    &dupes.iter().map(|(o, _)| o.partition).collect::<Vec<_>>(),
                    &dupes.iter().map(|(o, _)| o.offset).collect::<Vec<_>>(),
                    &dupe_keys,
                    &conflict_flags,
                ],
            )
            .await?;
        }

        let t_dupes = started.elapsed();
        // 3. Journals and entries of the new facts; balances and merchant views as commutative increments.
        let mut journals = Vec::new();
        for (origin, x) in &new {
            if let Some(j) = postings(&x.event).map_err(|e| StoreError::Arithmetic(e.to_string()))? {
                journals.push((origin, x, j));
            }
        }
        if !journals.is_empty() {
            let ids: HashMap<Uuid, i64> = tx
                .query(
                    "INSERT INTO journals (fact_key, payment_id, kind)
                     SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[]) RETURNING fact_key, journal_id",
                    &[
                        &journals.iter().map(|(_, _, j)| j.fact_key.0).collect::<Vec<_>>(),
                        &journals.iter().map(|(_, x, _)| x.event.payment_id.clone()).collect::<Vec<_>>(),
                        &journals.iter().map(|(_, x, _)| x.event.kind.as_str().to_owned()).collect::<Vec<_>>(),
                    ],
                )
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let (mut jid, mut acc, mut cur, mut amt, mut fk, mut top, mut par, mut off) =
                (vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
            let mut deltas: BTreeMap<(String, String), Amount> = BTreeMap::new();
            for (origin, _, j) in &journals {
                for e in &j.entries {
                    jid.push(ids[&j.fact_key.0]);
                    acc.push(e.account.to_string());
                    cur.push(e.money.currency.code().to_owned());
                    amt.push(e.money.amount.minor());
                    fk.push(j.fact_key.0);
                    top.push(origin.topic.clone());
                    par.push(origin.partition);
                    off.push(origin.offset);
                    let d = deltas.entry((e.account.to_string(), e.money.currency.code().to_owned())).or_default();
                    *d = d.checked_add(e.money.amount).map_err(|e| StoreError::Arithmetic(e.to_string()))?;
                }
            }
            tx.execute(
                "INSERT INTO entries (journal_id, account, currency, amount_minor, fact_key, topic, kafka_partition,
                    kafka_offset, processor_version)
                 SELECT u.j, u.a, u.c, u.m, u.f, u.t, u.p, u.o, $9
                 FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::uuid[], $6::text[], $7::int[],
                    $8::bigint[]) AS u(j, a, c, m, f, t, p, o)",
                &[&jid, &acc, &cur, &amt, &fk, &top, &par, &off, &PROCESSOR_VERSION],
            )
            .await?;
            add_to_balances(&tx, deltas.into_iter().map(|(k, d)| (k, d.minor())).collect()).await?;
        }
        let t_postings = started.elapsed();
        self.merchant_views(&tx, &new).await?;
        let t_views = started.elapsed();

        // 4. Payments and orphans, under per-payment locks taken in one order, so that two sinks booking facts of
        // one payment (from different topics) see each other's committed facts when they recompute.
        let affected: BTreeSet<String> = new.iter().map(|(_, x)| x.event.payment_id.clone()).collect();
        if !affected.is_empty() {
            let affected: Vec<String> = affected.into_iter().collect();
            tx.execute(
                "SELECT pg_advisory_xact_lock(k) FROM (SELECT hashtextextended(p, 7411) AS k FROM unnest($1::text[]) p ORDER BY 1) s",
                &[&affected],
            )
            .await?;
            let rows = tx
                .query(
                    "SELECT payment_id, kind, psp, psp_reference, original_reference, merchant_id, amount_minor, currency, fee_minor
                     FROM event_log WHERE payment_id = ANY($1) ORDER BY payment_id, fact_key",
                    &[&affected],
                )
                .await?;
            let mut by_payment: BTreeMap<String, Vec<PaymentEvent>> = BTreeMap::new();
            for r in &rows {
                if let Some(e) = row_event(r) {
                    by_payment.entry(e.payment_id.clone()).or_default().push(e);
                }
            }
            let mut upserts = (vec![], vec![], vec![], vec![], vec![], vec![]);
            for (payment, events) in &by_payment {
                let status = derive_status(events)
                    .and_then(|s| serde_json::to_value(s).ok())
                    .and_then(|v| v.as_str().map(str::to_owned));
                upserts.0.push(payment.clone());
                upserts.1.push(events[0].psp.as_str().to_owned());
                upserts.2.push(events[0].merchant_id.clone());
                upserts.3.push(events[0].money.currency.code().to_owned());
                upserts.4.push(status);
                upserts.5.push(events.len() as i32);
            }
            tx.execute(
                "INSERT INTO payments (payment_id, psp, merchant_id, currency, status, facts)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[])
                 ON CONFLICT (payment_id) DO UPDATE SET status = EXCLUDED.status, facts = EXCLUDED.facts, updated_at = now()",
                &[&upserts.0, &upserts.1, &upserts.2, &upserts.3, &upserts.4, &upserts.5],
            )
            .await?;
            // Orphans: a new fact whose predecessor kind is not known for its payment.
            let known: BTreeSet<(String, EventKind)> =
                by_payment.values().flatten().map(|e| (e.payment_id.clone(), e.kind)).collect();
            let orphans: Vec<_> = new
                .iter()
                .filter_map(|(_, x)| predecessor(x.event.kind).map(|needs| (x, needs)))
                .filter(|(x, needs)| !known.contains(&(x.event.payment_id.clone(), *needs)))
                .collect();
            if !orphans.is_empty() {
                outcome.orphans = orphans.len();
                tx.execute(
                    "INSERT INTO dq_exceptions (kind, fact_key, payment_id, detail)
                     SELECT 'orphan', u.k, u.p, jsonb_build_object('needs', u.n, 'kind', u.kind)
                       FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) AS u(k, p, n, kind)
                     ON CONFLICT (fact_key) WHERE kind = 'orphan' DO NOTHING",
                    &[
                        &orphans.iter().map(|(x, _)| x.fact_key.0).collect::<Vec<_>>(),
                        &orphans.iter().map(|(x, _)| x.event.payment_id.clone()).collect::<Vec<_>>(),
                        &orphans.iter().map(|(_, needs)| needs.as_str()).collect::<Vec<_>>(),
                        &orphans.iter().map(|(x, _)| x.event.kind.as_str()).collect::<Vec<_>>(),
                    ],
                )
                .await?;
            }
            // … and orphans that the new facts complete resolve themselves.
            let (pays, kinds): (Vec<String>, Vec<String>) =
                new.iter().map(|(_, x)| (x.event.payment_id.clone(), x.event.kind.as_str().to_owned())).unzip();
            tx.execute(
                "UPDATE dq_exceptions d SET resolved_at = now()
                 FROM unnest($1::text[], $2::text[]) AS u(p, k)
                 WHERE d.kind = 'orphan' AND d.resolved_at IS NULL AND d.payment_id = u.p AND d.detail->>'needs' = u.k",
                &[&pays, &kinds],
            )
            .await?;
        }

        let t_payments = started.elapsed();
        // 5. Rejects: recorded here, their copy is on the DLQ.
        if !rejects.is_empty() {
            outcome.rejects = rejects.len();
            tx.execute(
                "INSERT INTO sink_rejects (topic, kafka_partition, kafka_offset, reason)
                 SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[]) ON CONFLICT DO NOTHING",
                &[
                    &rejects.iter().map(|(o, _)| o.topic.clone()).collect::<Vec<_>>(),
                    &rejects.iter().map(|(o, _)| o.partition).collect::<Vec<_>>(),
                    &rejects.iter().map(|(o, _)| o.offset).collect::<Vec<_>>(),
                    &rejects.iter().map(|(_, r)| (*r).clone()).collect::<Vec<_>>(),
                ],
            )
            .await?;
        }

        // 6. The fenced offset update (DESIGN §5): zero rows means another owner or a gap — abort everything.
        for (claim, end) in claims {
            // The last record's digest: the anchor the next owner verifies against the log.
            let last = records
                .iter()
                .map(Decoded::origin)
                .find(|o| o.topic == claim.topic && o.partition == claim.partition && o.offset == end - 1);
            let anchor = last.map(|o| tally_kafka::position::record_digest(o.key.as_deref(), o.value.as_deref()));
            let moved = tally_postgres::offsets::advance(
                &tx,
                &self.group,
                &claim.topic,
                claim.partition,
                claim.epoch,
                claim.next_offset,
                *end,
                anchor.as_deref(),
            )
            .await?;
            if !moved {
                return Err(StoreError::Fenced {
                    topic: claim.topic.clone(),
                    partition: claim.partition,
                    start: claim.next_offset,
                });
            }
        }
        let t_offsets = started.elapsed();
        tx.commit().await?;
        tracing::debug!(
            records = records.len(), events = ?t_events, duplicates = ?(t_dupes - t_events),
            postings = ?(t_postings - t_dupes), views = ?(t_views - t_postings), payments = ?(t_payments - t_views),
            offsets = ?(t_offsets - t_payments), commit = ?(started.elapsed() - t_offsets),
            "batch phases"
        );
        Ok(outcome)
    }

    async fn merchant_views(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        new: &[(&Incoming, &EncodedEvent)],
    ) -> Result<(), StoreError> {
        // (captured, refunded, disputed, facts, watermark µs) per merchant and currency.
        type Delta = (i64, i64, i64, i64, i64);
        let mut views: BTreeMap<(String, String), Delta> = BTreeMap::new();
        for (_, x) in new {
            let e = &x.event;
            let v = views.entry((e.merchant_id.clone(), e.money.currency.code().to_owned())).or_insert((
                0,
                0,
                0,
                0,
                i64::MIN,
            ));
            let a = e.money.amount.minor();
            let add = |t: &mut i64, d: i64| *t = t.saturating_add(d);
            let effect = tally_domain::ledger::view_effect(e.kind);
            add(&mut v.0, a.saturating_mul(effect.captured.into()));
            add(&mut v.1, a.saturating_mul(effect.refunded.into()));
            add(&mut v.2, a.saturating_mul(effect.disputed.into()));
            v.3 += 1;
            v.4 = v.4.max(e.received_at.unix_micros());
        }
        if views.is_empty() {
            return Ok(());
        }
        let mut cols = (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        for ((m, c), (cap, refd, disp, n, wm)) in views {
            cols.0.push(m);
            cols.1.push(c);
            cols.2.push(cap);
            cols.3.push(refd);
            cols.4.push(disp);
            cols.5.push(n);
            cols.6.push(wm);
        }
        tx.execute(
            "INSERT INTO merchant_views (merchant_id, currency, captured_minor, refunded_minor, disputed_minor, facts, watermark)
             SELECT u.m, u.c, u.cap, u.r, u.d, u.n, 'epoch'::timestamptz + u.w * interval '1 microsecond'
             FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[])
                AS u(m, c, cap, r, d, n, w)
             ON CONFLICT (merchant_id, currency) DO UPDATE SET
                captured_minor = merchant_views.captured_minor + EXCLUDED.captured_minor,
                refunded_minor = merchant_views.refunded_minor + EXCLUDED.refunded_minor,
                disputed_minor = merchant_views.disputed_minor + EXCLUDED.disputed_minor,
                facts = merchant_views.facts + EXCLUDED.facts,
                watermark = GREATEST(merchant_views.watermark, EXCLUDED.watermark)",
            &[&cols.0, &cols.1, &cols.2, &cols.3, &cols.4, &cols.5, &cols.6],
        )
        .await?;
        Ok(())
    }
}

/// The parts of a booked fact that status derivation reads (identity, kind, money).
fn row_event(r: &tokio_postgres::Row) -> Option<PaymentEvent> {
    let kind: String = r.get(1);
    let kind = EventKind::ALL.into_iter().find(|k| k.as_str() == kind)?;
    let psp: String = r.get(2);
    let currency = Currency::from_code(&r.get::<_, String>(7)).ok()?;
    let epoch = Timestamp::from_unix_micros(0).ok()?;
    Some(PaymentEvent {
        kind,
        payment_id: r.get(0),
        psp: psp.parse::<Psp>().ok()?,
        psp_reference: r.get(3),
        original_reference: r.get(4),
        merchant_id: r.get(5),
        money: Money::new(Amount::from_minor(r.get(6)), currency),
        fee: r.get::<_, Option<i64>>(8).map(Amount::from_minor),
        occurred_at: epoch,
        received_at: epoch,
        source: Source::Webhook,
        source_event_id: String::new(),
        attributes: Default::default(),
    })
}

/// Adds `deltas` to the balances of their (account, currency) in one statement. The keys are sorted (a
/// `BTreeMap`): writers that each call this once per transaction — a sink's batch, a correction, a replay's
/// corrections together — lock balance rows in one order and cannot deadlock with each other.
pub(crate) async fn add_to_balances(
    tx: &tokio_postgres::Transaction<'_>,
    deltas: BTreeMap<(String, String), i64>,
) -> Result<(), tokio_postgres::Error> {
    let (keys, sums): (Vec<(String, String)>, Vec<i64>) = deltas.into_iter().unzip();
    let (accounts, currencies): (Vec<String>, Vec<String>) = keys.into_iter().unzip();
    tx.execute(
        "INSERT INTO account_balances (account, currency, balance_minor)
         SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
         ON CONFLICT (account, currency) DO UPDATE SET balance_minor = account_balances.balance_minor + EXCLUDED.balance_minor",
        &[&accounts, &currencies, &sums],
    )
    .await?;
    Ok(())
}
