//! The warehouse's DuckDB file: the sink's offsets and its rows in one transaction per batch (`sql/schema.sql`).
//!
//! A batch is appended to a staging table (DuckDB's appender: its fastest write), then lands in one set-based step:
//! fact keys already in `fct_payment_events` become `wh_duplicates`, the others rows — so that a fact is one row
//! whatever the log repeats. The partition's offset moves in the same transaction, fenced by the claim: the same
//! epoch, and the batch starting where the last one ended.

use std::collections::HashMap;
use std::path::Path;
use tally_duckdb::duckdb;

use duckdb::types::Value;
use duckdb::{params, Connection};
use tally_reference::enrich::Reference;
use tally_reference::merchants::MerchantVersion;
use tally_sink::{Claim, LogRecord, Part};

use crate::land::{date_of_days, date_value, enrichment_values, event_row, ts_value, Tokenizer};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("warehouse file: {0}")]
    Duck(#[from] duckdb::Error),
    #[error("{topic}[{partition}] is owned by a later claim (epoch {found}, ours {ours}) or moved on: this member must stop")]
    Fenced { topic: String, partition: i32, ours: i64, found: i64 },
    #[error("money: {0}")]
    Money(#[from] tally_money::MoneyError),
}

const SCHEMA: &str = include_str!("../sql/schema.sql");

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Landed {
    pub rows: u64,
    pub duplicates: u64,
    pub rejects: u64,
    pub merchant_unknown: u64,
    pub fx_unavailable: u64,
}

/// The open warehouse file and the reference data the sink enriches with now.
pub struct Warehouse {
    pub(crate) conn: Connection,
    pub(crate) group_id: String,
    reference: Reference,
    pub(crate) tokens: Tokenizer,
    pub(crate) models: crate::models::Models,
    pub(crate) allowed_lateness_secs: i64,
}

pub(crate) fn now_micros() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

impl Warehouse {
    /// Opens (creating) the file and its tables. DuckDB lets one process write a file: a second sink on the same
    /// file fails here, loudly.
    pub fn open(
        path: &Path,
        group_id: &str,
        reference: Reference,
        tokens: Tokenizer,
        allowed_lateness_secs: i64,
        checkpoint_threshold: &str,
    ) -> Result<Warehouse, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = tally_duckdb::open(path).map_err(|tally_duckdb::DuckError::Duck(e)| e)?;
        conn.execute_batch(SCHEMA)?;
        // DuckDB checkpoints (rewrites the changed row groups into the file) when its WAL passes this; at the 16 MB
        // default nearly every batch pays a checkpoint that grows with the table (bench: commit 130 → 660 ms over
        // 200K rows; at 1 GB, ~90 ms). A larger WAL costs replay time after a crash, not data.
        conn.execute_batch(&format!("SET checkpoint_threshold = '{}'", checkpoint_threshold.replace('\'', "")))?;
        let models = crate::models::open(&conn)?;
        Ok(Warehouse { conn, group_id: group_id.to_owned(), reference, tokens, models, allowed_lateness_secs })
    }

    /// A second connection to the same database, for reads (queries served while the sink writes).
    pub fn reader(&self) -> Result<Connection, StoreError> {
        Ok(self.conn.try_clone()?)
    }

    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    /// Claims a partition: bumps its epoch (fencing any earlier owner) and reads where to start.
    pub fn claim(&mut self, topic: &str, partition: i32) -> Result<Claim, StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO wh_offsets (group_id, topic, kafka_partition, next_offset, owner_epoch) VALUES (?, ?, ?, 0, 1)
             ON CONFLICT (group_id, topic, kafka_partition) DO UPDATE SET owner_epoch = wh_offsets.owner_epoch + 1",
            params![self.group_id, topic, partition],
        )?;
        let (next_offset, epoch, anchor) = tx.query_row(
            "SELECT next_offset, owner_epoch, anchor FROM wh_offsets
              WHERE group_id = ? AND topic = ? AND kafka_partition = ?",
            params![self.group_id, topic, partition],
            |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, Option<Vec<u8>>>(2)?)),
        )?;
        tx.commit()?;
        Ok(Claim { topic: topic.to_owned(), partition, next_offset, epoch, anchor })
    }

    /// Lands a batch and moves each part's offset, in one transaction, or nothing.
    pub fn commit(&mut self, parts: &[Part<Claim>]) -> Result<Landed, StoreError> {
        let started = std::time::Instant::now();
        let now = now_micros();
        let mut landed = Landed::default();
        // A fact is one row whatever the log repeats. Its representative is the delivery with the earliest
        // occurred_at (a PSP restating a fact later — a dispute's close restating its opening — must not move it to
        // a later day), the first in log order among equals: the same for any arrival order (I4).
        let mut held: HashMap<tally_domain::FactKey, (usize, i64, &LogRecord)> = HashMap::new();
        let mut latest = None;
        let (mut rows, mut dups, mut rejects) = (Vec::new(), Vec::new(), Vec::new());
        let records: Vec<&LogRecord> = parts.iter().flat_map(|p| p.records.iter()).collect();
        let workers = std::thread::available_parallelism().map_or(1, usize::from).min(8);
        let prepared = prepare(&records, &self.reference, &self.tokens, now, workers)?;
        for (record, prepared) in records.into_iter().zip(prepared) {
            let (key, occurred, row) = match prepared {
                Prepared::Reject(reason) => {
                    rejects.push((record, reason));
                    continue;
                }
                Prepared::Row { key, occurred, row } => (key, occurred, row),
            };
            latest = Some(latest.map_or(occurred, |l: i64| l.max(occurred)));
            match held.get_mut(&key) {
                Some((_, at, _)) if occurred >= *at => dups.push((key.0.to_string(), record)),
                Some((i, at, kept)) => {
                    dups.push((key.0.to_string(), *kept));
                    rows[*i] = row;
                    (*at, *kept) = (occurred, record);
                }
                None => {
                    held.insert(key, (rows.len(), occurred, record));
                    rows.push(row);
                }
            }
        }
        let t_rows = started.elapsed();
        let tx = self.conn.transaction()?;
        for part in parts {
            let found: Option<(i64, i64)> = tx
                .query_row(
                    "SELECT owner_epoch, next_offset FROM wh_offsets
                      WHERE group_id = ? AND topic = ? AND kafka_partition = ?",
                    params![self.group_id, part.claim.topic, part.claim.partition],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .ok();
            if found != Some((part.claim.epoch, part.claim.next_offset)) {
                return Err(StoreError::Fenced {
                    topic: part.claim.topic.clone(),
                    partition: part.claim.partition,
                    ours: part.claim.epoch,
                    found: found.map_or(-1, |f| f.0),
                });
            }
        }
        tx.execute("DELETE FROM wh_stage_events", [])?;
        {
            let mut app = tx.appender_to_catalog_and_db("wh_stage_events", "temp", "main")?;
            for row in &rows {
                app.append_row(duckdb::appender_params_from_iter(row))?;
            }
            app.flush()?;
        }
        let ts = ts_value(now);
        // The keys the batch touches, before any row moves (a displaced row's day is recomputed too).
        let t_staged = started.elapsed();
        crate::models::affected_from(&tx, crate::models::Staged::Batch)?;
        // Rows the batch displaces (it has an earlier delivery of their fact) become duplicates, and so do the
        // staged rows that lose to a landed one.
        // Most batches carry no fact already landed: one probe of the key decides whether the earliest-delivery
        // rule has anything to do (the profile: four joins against the growing fact table, ~35 ms a batch).
        let overlap: i64 = tx.query_row(
            "SELECT count(*) FROM wh_stage_events s SEMI JOIN fct_payment_events f ON f.fact_key = s.fact_key",
            [],
            |r| r.get(0),
        )?;
        let (mut displaced, mut lost) = (0, 0);
        if overlap > 0 {
            displaced = tx.execute(
                "INSERT INTO wh_duplicates
                 SELECT f.fact_key, f.topic, f.kafka_partition, f.kafka_offset, $1
                   FROM fct_payment_events f JOIN wh_stage_events s ON f.fact_key = s.fact_key
                  WHERE s.occurred_at < f.occurred_at",
                params![ts],
            )? as u64;
            lost = tx.execute(
                "INSERT INTO wh_duplicates
                 SELECT s.fact_key, s.topic, s.kafka_partition, s.kafka_offset, s.landed_at
                   FROM wh_stage_events s JOIN fct_payment_events f ON f.fact_key = s.fact_key
                  WHERE s.occurred_at >= f.occurred_at",
                [],
            )? as u64;
            tx.execute(
                "DELETE FROM fct_payment_events WHERE fact_key IN (
                    SELECT s.fact_key FROM wh_stage_events s JOIN fct_payment_events f ON f.fact_key = s.fact_key
                     WHERE s.occurred_at < f.occurred_at)",
                [],
            )?;
        }
        let (unknown, unavailable): (i64, i64) = tx.query_row(
            if overlap > 0 {
                "SELECT count(*) FILTER (WHERE merchant_unknown), count(*) FILTER (WHERE fx_unavailable)
                   FROM wh_stage_events s ANTI JOIN fct_payment_events f ON f.fact_key = s.fact_key"
            } else {
                "SELECT count(*) FILTER (WHERE merchant_unknown), count(*) FILTER (WHERE fx_unavailable)
                   FROM wh_stage_events"
            },
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let inserted = tx.execute(
            if overlap > 0 {
                "INSERT INTO fct_payment_events
                 SELECT s.* FROM wh_stage_events s ANTI JOIN fct_payment_events f ON f.fact_key = s.fact_key"
            } else {
                "INSERT INTO fct_payment_events SELECT * FROM wh_stage_events"
            },
            [],
        )? as u64;
        landed.rows = inserted - displaced;
        landed.duplicates = displaced + lost;
        (landed.merchant_unknown, landed.fx_unavailable) = (unknown as u64, unavailable as u64);
        {
            let mut app = tx.appender("wh_duplicates")?;
            for (key, r) in &dups {
                app.append_row(params![key, r.topic, r.partition, r.offset, ts])?;
            }
            app.flush()?;
            let mut app = tx.appender("wh_rejects")?;
            for (r, reason) in &rejects {
                app.append_row(params![r.topic, r.partition, r.offset, reason, ts])?;
            }
            app.flush()?;
        }
        landed.duplicates += dups.len() as u64;
        landed.rejects = rejects.len() as u64;
        // The event-time watermark (the latest occurred_at landed), then the models for the keys the batch touched.
        if let Some(latest) = latest {
            tx.execute(
                "UPDATE wh_watermark SET watermark = CASE WHEN watermark IS NULL OR watermark < $1 THEN $1 ELSE watermark END",
                params![ts_value(latest)],
            )?;
        }
        let t_landed = started.elapsed();
        self.models.refresh(&tx, now, self.allowed_lateness_secs)?;
        let t_models = started.elapsed();
        for part in parts {
            let Some(last) = part.records.last() else { continue };
            let anchor = tally_kafka::position::record_digest(last.key.as_deref(), last.value.as_deref());
            tx.execute(
                "UPDATE wh_offsets SET next_offset = ?, anchor = ?
                  WHERE group_id = ? AND topic = ? AND kafka_partition = ? AND owner_epoch = ?",
                params![part.end(), anchor, self.group_id, part.claim.topic, part.claim.partition, part.claim.epoch],
            )?;
        }
        tx.commit()?;
        tracing::debug!(
            rows = ?t_rows, staged = ?(t_staged - t_rows), landed = ?(t_landed - t_staged),
            models = ?(t_models - t_landed), offsets_and_commit = ?(started.elapsed() - t_models),
            "batch phases"
        );
        Ok(landed)
    }

    /// Puts new reference data in force: mirrors the merchant dimension into `dim_merchant`, and enriches again
    /// every flagged row the new data resolves (a merchant now known, a rate now published). Rows that were not
    /// flagged keep the versions they name (I5); a replay with `--reference latest` is what moves them. Returns the
    /// rows enriched again.
    pub fn set_reference(&mut self, reference: Reference) -> Result<u64, StoreError> {
        let flagged: Vec<(String, String, i32, String, i64, Option<i64>)> = {
            let mut stmt = self.conn.prepare(
                "SELECT fact_key, merchant_id, CAST(event_date - DATE '1970-01-01' AS INTEGER), currency, amount_minor,
                        fee_minor
                   FROM fct_payment_events WHERE merchant_unknown OR fx_unavailable",
            )?;
            let rows =
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let now_us = now_micros();
        let now = ts_value(now_us);
        let mut updates = Vec::new();
        for (key, merchant, days, code, amount, fee) in &flagged {
            let day = date_of_days(*days);
            let currency = tally_money::Currency::from_code(code)?;
            let money = tally_money::Money::new(tally_money::Amount::from_minor(*amount), currency);
            let e = reference.enrich(merchant, day, money, fee.map(tally_money::Amount::from_minor))?;
            if e.merchant.is_none() && e.reporting.is_none() {
                continue;
            }
            let mut row = vec![Value::Text(key.clone())];
            row.extend(enrichment_values(&e, &reference));
            row.push(now.clone());
            updates.push(row);
        }
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM wh_stage_enrich", [])?;
        {
            let mut app = tx.appender_to_catalog_and_db("wh_stage_enrich", "temp", "main")?;
            for row in &updates {
                app.append_row(duckdb::appender_params_from_iter(row))?;
            }
            app.flush()?;
        }
        // A row keeps a resolution it already had: only what was flagged is taken from the new data.
        let reenriched = tx.execute(
            "UPDATE fct_payment_events f SET
                merchant_valid_from = CASE WHEN f.merchant_unknown THEN s.merchant_valid_from ELSE f.merchant_valid_from END,
                merchant_unknown = f.merchant_unknown AND s.merchant_unknown,
                reporting_currency = s.reporting_currency,
                reporting_amount_minor = CASE WHEN f.fx_unavailable THEN s.reporting_amount_minor ELSE f.reporting_amount_minor END,
                reporting_fee_minor = CASE WHEN f.fx_unavailable THEN s.reporting_fee_minor ELSE f.reporting_fee_minor END,
                fx_rate_date = CASE WHEN f.fx_unavailable THEN s.fx_rate_date ELSE f.fx_rate_date END,
                fx_from_rate = CASE WHEN f.fx_unavailable THEN s.fx_from_rate ELSE f.fx_from_rate END,
                fx_to_rate = CASE WHEN f.fx_unavailable THEN s.fx_to_rate ELSE f.fx_to_rate END,
                fx_source = CASE WHEN f.fx_unavailable THEN s.fx_source ELSE f.fx_source END,
                fx_unavailable = f.fx_unavailable AND s.fx_unavailable,
                merchants_version = CASE WHEN f.merchant_unknown AND NOT s.merchant_unknown THEN s.merchants_version ELSE f.merchants_version END,
                fx_version = CASE WHEN f.fx_unavailable AND NOT s.fx_unavailable THEN s.fx_version ELSE f.fx_version END,
                enriched_at = s.enriched_at
               FROM wh_stage_enrich s
              WHERE f.fact_key = s.fact_key
                AND ((f.merchant_unknown AND NOT s.merchant_unknown) OR (f.fx_unavailable AND NOT s.fx_unavailable))",
            [],
        )? as u64;
        tx.execute("DELETE FROM dim_merchant", [])?;
        {
            let mut app = tx.appender("dim_merchant")?;
            for v in reference.merchants.iter() {
                app.append_row(dim_row(v))?;
            }
            app.flush()?;
        }
        // The rows enriched again change their days' reporting twins (a closed day is restated) and their payments.
        crate::models::affected_from(&tx, crate::models::Staged::Reenrichment)?;
        self.models.refresh(&tx, now_us, self.allowed_lateness_secs)?;
        tx.execute(
            "INSERT INTO wh_reference VALUES (?, ?, ?, ?)",
            params![reference.merchants_version, reference.fx_version, now, reenriched as i64],
        )?;
        tx.commit()?;
        self.reference = reference;
        Ok(reenriched)
    }

    /// Rows, duplicates and rejects landed, and rows still flagged — for metrics and tests.
    pub fn counts(&self) -> Result<Counts, StoreError> {
        Ok(self.conn.query_row(
            "SELECT (SELECT count(*) FROM fct_payment_events), (SELECT count(*) FROM wh_duplicates),
                    (SELECT count(*) FROM wh_rejects),
                    (SELECT count(*) FROM fct_payment_events WHERE merchant_unknown),
                    (SELECT count(*) FROM fct_payment_events WHERE fx_unavailable)",
            [],
            |r| {
                Ok(Counts {
                    rows: r.get(0)?,
                    duplicates: r.get(1)?,
                    rejects: r.get(2)?,
                    merchant_unknown: r.get(3)?,
                    fx_unavailable: r.get(4)?,
                })
            },
        )?)
    }
}

/// Totals in the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub rows: i64,
    pub duplicates: i64,
    pub rejects: i64,
    pub merchant_unknown: i64,
    pub fx_unavailable: i64,
}

fn dim_row(v: &MerchantVersion) -> [Value; 12] {
    [
        Value::Text(v.merchant_id.clone()),
        date_value(v.valid_from),
        v.valid_to.map_or(Value::Null, date_value),
        Value::Text(v.legal_name.clone()),
        Value::Text(v.country.clone()),
        Value::Text(v.mcc.clone()),
        Value::Text(v.settlement_currency.code().to_owned()),
        Value::Text(v.risk_tier.clone()),
        Value::Int(i32::try_from(v.stripe.ppm).unwrap_or(i32::MAX)),
        Value::BigInt(v.stripe.fixed_minor),
        Value::Int(i32::try_from(v.adyen.ppm).unwrap_or(i32::MAX)),
        Value::BigInt(v.adyen.fixed_minor),
    ]
}

/// A record made ready to land: its row, or why it cannot be one.
#[derive(Debug, PartialEq)]
enum Prepared {
    Reject(String),
    Row { key: tally_domain::FactKey, occurred: i64, row: Vec<Value> },
}

/// Decodes, enriches and tokenizes every record of a batch. Each record is independent, so large batches are split
/// over the machine's cores (the profile: ~130 ms of a 20,000-record batch on one core, before the transaction);
/// which delivery represents a fact is decided afterwards, in log order.
fn prepare(
    records: &[&LogRecord],
    reference: &Reference,
    tokens: &Tokenizer,
    now: i64,
    workers: usize,
) -> Result<Vec<Prepared>, StoreError> {
    let one = |record: &&LogRecord| -> Result<Prepared, StoreError> {
        Ok(match tally_contracts::decode_lifecycle_record(record.key.as_deref(), record.value.as_deref()) {
            Err(reason) => Prepared::Reject(reason),
            Ok(fact) => Prepared::Row {
                key: fact.fact_key,
                occurred: fact.event.occurred_at.unix_micros(),
                row: event_row(record, &fact, reference, tokens, now)?,
            },
        })
    };
    if workers < 2 || records.len() < 2_000 {
        return records.iter().map(one).collect();
    }
    let one = &one;
    std::thread::scope(|scope| {
        let chunks: Vec<_> = records
            .chunks(records.len().div_ceil(workers))
            .map(|chunk| scope.spawn(move || chunk.iter().map(one).collect::<Result<Vec<_>, _>>()))
            .collect();
        let mut out = Vec::with_capacity(records.len());
        for chunk in chunks {
            out.extend(chunk.join().expect("a row worker panicked")?);
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_domain::{Attributes, EventKind, PaymentEvent, Psp, Source, Timestamp};
    use tally_money::{Amount, Currency, Money};

    fn record(offset: i64, reference: &str) -> LogRecord {
        record_at(offset, reference, 1_780_000_000, 1234)
    }

    /// A capture of `minor` EUR cents by m1 at `secs`.
    fn record_at(offset: i64, reference: &str, secs: i64, minor: i64) -> LogRecord {
        let t = Timestamp::from_unix_secs(secs).unwrap();
        let event = PaymentEvent {
            kind: EventKind::Captured,
            payment_id: format!("stripe:{reference}"),
            psp: Psp::Stripe,
            psp_reference: reference.into(),
            original_reference: None,
            merchant_id: "m1".into(),
            money: Money::new(Amount::from_minor(minor), Currency::from_code("EUR").unwrap()),
            fee: None,
            occurred_at: t,
            received_at: t,
            source: Source::Webhook,
            source_event_id: format!("evt_{reference}"),
            attributes: Attributes::default(),
        };
        LogRecord {
            topic: "payments.capture.v1".into(),
            partition: 0,
            offset,
            timestamp_ms: None,
            key: Some(event.payment_id.clone().into_bytes()),
            value: Some(tally_contracts::encode_payment_event(&event, None).unwrap()),
            headers: vec![],
        }
    }

    #[test]
    fn records_prepared_on_several_cores_are_the_ones_prepared_on_one_in_log_order() {
        let reference = Reference::empty(Currency::from_code("EUR").unwrap(), 7);
        let tokens = Tokenizer::new(b"k");
        let mut records: Vec<LogRecord> =
            (0..5_001).map(|i| record_at(i, &format!("ch_{i}"), 1_780_000_000 + i, 100 + i)).collect();
        records[2_600].value = Some(b"not an event".to_vec());
        let refs: Vec<&LogRecord> = records.iter().collect();
        let one = prepare(&refs, &reference, &tokens, 7, 1).unwrap();
        let three = prepare(&refs, &reference, &tokens, 7, 3).unwrap();
        assert_eq!(one.len(), 5_001);
        assert!(matches!(one[2_600], Prepared::Reject(_)), "{:?}", one[2_600]);
        assert!(matches!(&one[5_000], Prepared::Row { occurred, .. } if *occurred == (1_780_005_000) * 1_000_000));
        assert_eq!(one, three);
    }

    fn open(dir: &std::path::Path) -> Warehouse {
        let reference = Reference::empty(Currency::from_code("EUR").unwrap(), 7);
        Warehouse::open(&dir.join("w.duckdb"), "g", reference, Tokenizer::new(b"k"), 3600, "16MB").unwrap()
    }

    #[test]
    fn a_batch_lands_with_its_offsets_once_and_a_stale_owner_is_fenced() {
        let dir = std::env::temp_dir().join(format!("tally-wh-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut w = open(&dir);
        let old = w.claim("payments.capture.v1", 0).unwrap();
        let claim = w.claim("payments.capture.v1", 0).unwrap();
        assert_eq!((claim.epoch, claim.next_offset), (old.epoch + 1, 0));
        let records = vec![record(0, "ch_a"), record(1, "ch_b"), record(2, "ch_a")];
        // The earlier owner's batch is refused and lands nothing.
        let stale = [Part { claim: old, records: records.clone() }];
        assert!(matches!(w.commit(&stale), Err(StoreError::Fenced { .. })));
        assert_eq!(w.counts().unwrap().rows, 0);
        let landed = w.commit(&[Part { claim: claim.clone(), records }]).unwrap();
        assert_eq!((landed.rows, landed.duplicates, landed.rejects, landed.merchant_unknown), (2, 1, 0, 2));
        // The same range again (a lost acknowledgement retried by a claim that did not move): fenced, not twice.
        assert!(matches!(
            w.commit(&[Part { claim: claim.clone(), records: vec![record(0, "ch_a")] }]),
            Err(StoreError::Fenced { .. })
        ));
        drop(w);
        // Reopened: the offset and the anchor were stored with the rows.
        let mut w = open(&dir);
        let again = w.claim("payments.capture.v1", 0).unwrap();
        assert_eq!(again.next_offset, 3);
        assert!(again.anchor.is_some());
        let next = w.commit(&[Part { claim: again, records: vec![record(3, "ch_b"), record(4, "ch_c")] }]).unwrap();
        assert_eq!((next.rows, next.duplicates), (1, 1));
        assert_eq!(
            w.counts().unwrap(),
            Counts { rows: 3, duplicates: 2, rejects: 0, merchant_unknown: 3, fx_unavailable: 0 }
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn new_reference_data_enriches_the_flagged_rows_again_and_mirrors_the_dimension() {
        let dir = std::env::temp_dir().join(format!("tally-wh-ref-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut w = open(&dir);
        let claim = w.claim("payments.capture.v1", 0).unwrap();
        w.commit(&[Part { claim, records: vec![record(0, "ch_a")] }]).unwrap();
        assert_eq!(w.counts().unwrap().merchant_unknown, 1);
        let dim = tally_reference::merchants::MerchantDimension::parse(
            b"merchant_id,valid_from,valid_to,legal_name,country,mcc,settlement_currency,risk_tier,stripe_percent,stripe_fixed_minor,adyen_percent,adyen_fixed_minor\nm1,2020-01-01,,One,DE,5411,EUR,low,2.9,30,1.75,10\n",
        )
        .unwrap();
        let mut reference = Reference::empty(Currency::from_code("EUR").unwrap(), 7);
        reference.merchants = tally_reference::enrich::MerchantIndex::new(dim.versions);
        reference.merchants_version = Some(4);
        assert_eq!(w.set_reference(reference.clone()).unwrap(), 1);
        assert_eq!(w.counts().unwrap().merchant_unknown, 0);
        // Again: nothing left to resolve, the mirror is replaced, not doubled.
        assert_eq!(w.set_reference(reference).unwrap(), 0);
        let n: i64 = w.conn.query_row("SELECT count(*) FROM dim_merchant", [], |r| r.get(0)).unwrap();
        let v: i64 = w.conn.query_row("SELECT merchants_version FROM fct_payment_events", [], |r| r.get(0)).unwrap();
        assert_eq!((n, v), (1, 4));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_late_fact_for_a_closed_day_restates_it_once_and_the_increments_equal_a_full_rebuild() {
        let dir = std::env::temp_dir().join(format!("tally-wh-late-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut w = open(&dir);
        let day = 1_780_000_000 - 1_780_000_000 % 86_400; // 00:00 UTC of the first day
        let mut claim = w.claim("payments.capture.v1", 0).unwrap();
        let mut land = |w: &mut Warehouse, records: Vec<LogRecord>| {
            let end = records.last().unwrap().offset + 1;
            w.commit(&[Part { claim: claim.clone(), records }]).unwrap();
            claim.next_offset = end;
        };
        let mart = |w: &Warehouse| -> Vec<(String, i64, i64, i64, bool)> {
            let mut stmt = w
                .conn
                .prepare("SELECT CAST(day AS VARCHAR), captured_minor, captures_count, version, closed FROM mart_merchant_daily ORDER BY day")
                .unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        let restatements =
            |w: &Warehouse| -> i64 { w.conn.query_row("SELECT count(*) FROM restatements", [], |r| r.get(0)).unwrap() };
        // Day 1, then day 2 open: nothing is closed yet (lateness one hour, watermark 10:00 on day 2).
        land(&mut w, vec![record_at(0, "ch_1", day + 3600, 100), record_at(1, "ch_2", day + 7200, 200)]);
        land(&mut w, vec![record_at(2, "ch_3", day + 86_400 + 36_000, 50)]);
        let d1 = time::OffsetDateTime::from_unix_timestamp(day).unwrap().date().to_string();
        assert_eq!(mart(&w)[0], (d1.clone(), 300, 2, 1, true), "day 1 closed: its end + 1 h is before the watermark");
        assert!(!mart(&w)[1].4, "day 2 still open");
        // A day-2 fact before the close changes day 2 without a restatement.
        land(&mut w, vec![record_at(3, "ch_4", day + 86_400 + 60, 25)]);
        assert_eq!((mart(&w)[1].1, mart(&w)[1].3, restatements(&w)), (75, 1, 0));
        // A late fact for closed day 1: restated once, version 2, with a restatement row saying before and after.
        land(&mut w, vec![record_at(4, "ch_5", day + 10_000, 7)]);
        assert_eq!(mart(&w)[0], (d1.clone(), 307, 3, 2, true));
        assert_eq!(restatements(&w), 1);
        let (before, after): (String, String) =
            w.conn.query_row("SELECT before, after FROM restatements", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        assert!(
            before.contains("\"captured_minor\":300") && after.contains("\"captured_minor\":307"),
            "{before} → {after}"
        );
        // The same late fact again (a duplicate): no change, no second restatement.
        land(&mut w, vec![record_at(5, "ch_5", day + 10_000, 7)]);
        assert_eq!((mart(&w)[0].3, restatements(&w)), (2, 1));
        // The increments equal a full rebuild from the facts: recomputing everything changes nothing.
        let before = mart(&w);
        let payments: i64 = w.conn.query_row("SELECT count(*) FROM fct_payments", [], |r| r.get(0)).unwrap();
        let tx = w.conn.transaction().unwrap();
        crate::models::affect_everything(&tx).unwrap();
        w.models.refresh(&tx, now_micros(), 3600).unwrap();
        tx.commit().unwrap();
        assert_eq!(mart(&w), before);
        assert_eq!(restatements(&w), 1);
        let after: i64 = w.conn.query_row("SELECT count(*) FROM fct_payments", [], |r| r.get(0)).unwrap();
        assert_eq!((payments, after), (5, 5));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_earliest_delivery_of_a_fact_is_its_row_whatever_the_order() {
        let dir = std::env::temp_dir().join(format!("tally-wh-order-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let day = 1_780_000_000 - 1_780_000_000 % 86_400;
        let days = |w: &Warehouse| -> Vec<(String, i64)> {
            let mut stmt = w
                .conn
                .prepare("SELECT CAST(day AS VARCHAR), captured_minor FROM mart_merchant_daily ORDER BY day")
                .unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
        };
        let mut results = Vec::new();
        // The same capture stated on day 2 and again (earlier) on day 1: either order, in one batch or two.
        for (order, batches) in [(false, 1), (true, 1), (false, 2), (true, 2)] {
            let sub = dir.join(format!("{order}{batches}"));
            std::fs::create_dir_all(&sub).unwrap();
            let mut w = open(&sub);
            let (late, early) = (day + 86_400 + 60, day + 60);
            let times = if order { [early, late] } else { [late, early] };
            let records: Vec<LogRecord> =
                times.iter().enumerate().map(|(i, t)| record_at(i as i64, "ch_x", *t, 500)).collect();
            let mut claim = w.claim("payments.capture.v1", 0).unwrap();
            if batches == 1 {
                w.commit(&[Part { claim, records }]).unwrap();
            } else {
                for r in records {
                    let end = r.offset + 1;
                    w.commit(&[Part { claim: claim.clone(), records: vec![r] }]).unwrap();
                    claim.next_offset = end;
                }
            }
            let c = w.counts().unwrap();
            assert_eq!((c.rows, c.duplicates), (1, 1), "order {order}, {batches} batches");
            results.push(days(&w));
        }
        let first = time::OffsetDateTime::from_unix_timestamp(day).unwrap().date().to_string();
        assert_eq!(results[0], vec![(first, 500)]);
        assert!(results.iter().all(|r| *r == results[0]), "{results:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
