//! The curated models (`models/*.sql`, described in `models/README.md`), built incrementally in the transaction that
//! lands a batch: the batch names the keys it affects, each incremental model is recomputed from the facts for those
//! keys, and the governed mart versions, closes and restates its rows.

use tally_duckdb::duckdb;

use duckdb::{params, Connection};

use crate::land::ts_value;

const FCT_PAYMENTS: &str = include_str!("../models/fct_payments.sql");
const MART_MERCHANT_DAILY: &str = include_str!("../models/mart_merchant_daily.sql");
const MART_DAILY_OVERVIEW: &str = include_str!("../models/mart_daily_overview.sql");
const MART_CHARGEBACK_RATIO: &str = include_str!("../models/mart_chargeback_ratio.sql");

/// The governed mart's key.
const KEY: [&str; 3] = ["merchant_id", "day", "currency"];

/// The models' tables and the SQL that governs the mart, prepared once per file.
pub struct Models {
    govern: Vec<(String, Bind)>,
}

/// What a governance statement binds as `$1`.
#[derive(Clone, Copy)]
enum Bind {
    Nothing,
    Now,
    Lateness,
}

/// Creates what the models need (idempotent) and prepares the governance statements.
pub fn open(conn: &Connection) -> Result<Models, duckdb::Error> {
    conn.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS wh_affected_days (merchant_id VARCHAR, day DATE, currency VARCHAR);
         CREATE TEMP TABLE IF NOT EXISTS wh_affected_payments (payment_id VARCHAR);
         CREATE TABLE IF NOT EXISTS wh_watermark (watermark TIMESTAMP);
         INSERT INTO wh_watermark SELECT NULL WHERE NOT EXISTS (SELECT 1 FROM wh_watermark);
         CREATE TABLE IF NOT EXISTS restatements (
             mart          VARCHAR   NOT NULL,
             merchant_id   VARCHAR   NOT NULL,
             day           DATE      NOT NULL,
             currency      VARCHAR   NOT NULL,
             from_version  BIGINT    NOT NULL,
             to_version    BIGINT    NOT NULL,
             restated_at   TIMESTAMP NOT NULL,
             watermark     TIMESTAMP,
             before        VARCHAR   NOT NULL,
             after         VARCHAR   NOT NULL,
             replay_id     VARCHAR
         );
         ALTER TABLE restatements ADD COLUMN IF NOT EXISTS replay_id VARCHAR;",
    )?;
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS fct_payments AS {FCT_PAYMENTS} LIMIT 0;
         CREATE TEMP TABLE IF NOT EXISTS wh_stage_mart AS {MART_MERCHANT_DAILY} LIMIT 0;
         CREATE TABLE IF NOT EXISTS mart_merchant_daily AS
             SELECT m.*, 1::BIGINT AS version, NULL::TIMESTAMP AS computed_at, NULL::TIMESTAMP AS restated_at,
                    NULL::TIMESTAMP AS complete_to, false AS closed
               FROM ({MART_MERCHANT_DAILY}) m LIMIT 0;
         {MART_DAILY_OVERVIEW}
         {MART_CHARGEBACK_RATIO}"
    ))?;
    let typed: Vec<(String, String)> = {
        let mut stmt = conn.prepare(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'wh_stage_mart'
              ORDER BY ordinal_position",
        )?;
        let names = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        names.collect::<Result<Vec<_>, _>>()?.into_iter().filter(|(c, _)| !KEY.contains(&c.as_str())).collect()
    };
    let values: Vec<String> = typed.iter().map(|(c, _)| c.clone()).collect();
    // A day left without facts (its only fact moved to an earlier day) is recomputed as zeros, not left stale; an open one is then removed.
    let zeros = typed
        .iter()
        .map(|(c, t)| if t == "VARCHAR" { format!("m.{c}") } else { "0".to_owned() })
        .collect::<Vec<_>>()
        .join(", ");
    let on = KEY.map(|k| format!("m.{k} = s.{k}")).join(" AND ");
    let changed = values.iter().map(|c| format!("m.{c} IS DISTINCT FROM s.{c}")).collect::<Vec<_>>().join(" OR ");
    let json = |alias: &str| {
        format!(
            "to_json(struct_pack({}))",
            values.iter().map(|c| format!("{c} := {alias}.{c}")).collect::<Vec<_>>().join(", ")
        )
    };
    let set = values.iter().map(|c| format!("{c} = s.{c}")).collect::<Vec<_>>().join(", ");
    let govern = vec![
        (
            format!(
            "INSERT INTO wh_stage_mart
             SELECT m.merchant_id, m.day, m.currency, {zeros}
               FROM mart_merchant_daily m
               SEMI JOIN wh_affected_days a ON a.merchant_id = m.merchant_id AND a.day = m.day AND a.currency = m.currency
               ANTI JOIN wh_stage_mart s ON {on}"
            ),
            Bind::Nothing,
        ),
        // A closed day whose values change is restated: recorded with the values before and after …
        (
            format!(
            "INSERT INTO restatements (mart, merchant_id, day, currency, from_version, to_version, restated_at, watermark,
                                       before, after)
             SELECT 'mart_merchant_daily', m.merchant_id, m.day, m.currency, m.version, m.version + 1, $1,
                    (SELECT watermark FROM wh_watermark), {before}, {after}
               FROM mart_merchant_daily m JOIN wh_stage_mart s ON {on}
              WHERE m.closed AND ({changed})",
                before = json("m"),
                after = json("s"),
            ),
            Bind::Now,
        ),
        // … and takes the next version; an open day just changes.
        (
            format!(
            "UPDATE mart_merchant_daily m SET {set},
                    version = m.version + CASE WHEN m.closed THEN 1 ELSE 0 END,
                    restated_at = CASE WHEN m.closed THEN $1 ELSE m.restated_at END,
                    computed_at = $1,
                    complete_to = (SELECT watermark FROM wh_watermark)
               FROM wh_stage_mart s
              WHERE {on} AND ({changed})"
            ),
            Bind::Now,
        ),
        (
            format!(
            "INSERT INTO mart_merchant_daily
             SELECT s.*, 1, $1, NULL, (SELECT watermark FROM wh_watermark), false
               FROM wh_stage_mart s ANTI JOIN mart_merchant_daily m ON {on}"
            ),
            Bind::Now,
        ),
        // An open day left without facts goes (a closed one stays, restated to zeros: never a silent change).
        ("DELETE FROM mart_merchant_daily WHERE NOT closed AND facts = 0".to_owned(), Bind::Nothing),
        // Open days are complete to the current watermark; a day whose end plus the allowed lateness the watermark
        // has passed closes.
        (
            "UPDATE mart_merchant_daily SET complete_to = (SELECT watermark FROM wh_watermark),
                closed = coalesce((day + INTERVAL 1 DAY + to_seconds($1)) <= (SELECT watermark FROM wh_watermark), false)
          WHERE NOT closed"
                .to_owned(),
            Bind::Lateness,
        ),
    ];
    Ok(Models { govern })
}

impl Models {
    /// Recomputes the models for the keys in `wh_affected_days` / `wh_affected_payments` (filled by the caller) on
    /// `conn`, inside the caller's transaction.
    pub fn refresh(&self, conn: &Connection, now_micros: i64, allowed_lateness_secs: i64) -> Result<(), duckdb::Error> {
        conn.execute_batch(&format!(
            "DELETE FROM fct_payments WHERE payment_id IN (SELECT payment_id FROM wh_affected_payments);
             INSERT INTO fct_payments {FCT_PAYMENTS};
             DELETE FROM wh_stage_mart;
             INSERT INTO wh_stage_mart {MART_MERCHANT_DAILY};"
        ))?;
        let now = ts_value(now_micros);
        for (sql, bind) in &self.govern {
            match bind {
                Bind::Nothing => conn.execute(sql, [])?,
                Bind::Now => conn.execute(sql, params![now])?,
                Bind::Lateness => conn.execute(sql, params![allowed_lateness_secs])?,
            };
        }
        Ok(())
    }
}

/// What staged the facts whose keys a refresh recomputes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staged {
    /// A batch (`wh_stage_events`): its rows' keys, and those of the landed rows of the same facts (a staged row
    /// may displace one from another day).
    Batch,
    /// A re-enrichment (`wh_stage_enrich`, fact keys only): the landed rows' keys.
    Reenrichment,
}

/// Names the keys (`wh_affected_days`, `wh_affected_payments`) the staged facts affect.
pub fn affected_from(conn: &Connection, staged: Staged) -> Result<(), duckdb::Error> {
    let (table, own_keys) = match staged {
        Staged::Batch => {
            ("wh_stage_events", "SELECT merchant_id, event_date, currency, payment_id FROM wh_stage_events UNION ")
        }
        Staged::Reenrichment => ("wh_stage_enrich", ""),
    };
    conn.execute_batch(&format!(
        "CREATE OR REPLACE TEMP TABLE wh_touched AS
             {own_keys}SELECT e.merchant_id, e.event_date, e.currency, e.payment_id
               FROM {table} x JOIN fct_payment_events e ON e.fact_key = x.fact_key;
         DELETE FROM wh_affected_days;
         INSERT INTO wh_affected_days SELECT DISTINCT merchant_id, event_date, currency FROM wh_touched;
         DELETE FROM wh_affected_payments;
         INSERT INTO wh_affected_payments SELECT DISTINCT payment_id FROM wh_touched;"
    ))
}

/// Every key: a full rebuild of the models from the facts (the tests show the incremental result equals it).
pub fn affect_everything(conn: &Connection) -> Result<(), duckdb::Error> {
    conn.execute_batch(
        "DELETE FROM wh_affected_days;
         INSERT INTO wh_affected_days SELECT DISTINCT merchant_id, event_date, currency FROM fct_payment_events;
         DELETE FROM wh_affected_payments;
         INSERT INTO wh_affected_payments SELECT DISTINCT payment_id FROM fct_payment_events;",
    )
}
