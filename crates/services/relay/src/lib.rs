//! `tally relay`: the payments API's transactional outbox onto Kafka, read from PostgreSQL's log (issue 17 §5b).
//!
//! The relay reads a logical replication slot with the `pgoutput` plugin over the publication of the outbox table,
//! as Debezium's outbox router does — never by polling the table. Per pass: the slot's pending transactions are
//! peeked (whole transactions, in commit order), each outbox insert produced to its topic with `acks=all` (its LSN
//! and outbox id as lineage headers), and only once Kafka acknowledged every record is the slot advanced to the
//! last commit's end. A crash in between re-reads the same transactions: at least once, in commit order (so in
//! order per payment, each on its key's partition), deduplicated downstream by fact key and payment version.

pub mod pgoutput;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use serde::Deserialize;
use tally_kafka::{Header, KafkaConfig, Producer};
use tokio_util::sync::CancellationToken;

use crate::pgoutput::{Message, Relations};

/// The outbox table the relay publishes.
pub const OUTBOX_TABLE: &str = "api_payment_outbox";

/// `[relay]` in tally.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// The address of `/metrics` and `/healthz`.
    pub listen: String,
    /// The logical replication slot (one per relay deployment: two relays must not share one).
    pub slot: String,
    /// The publication of the outbox table.
    pub publication: String,
    /// At most about this many changes per pass (whole transactions: a pass may take more).
    pub batch_changes: i32,
    /// The pause after a pass that found nothing.
    pub idle_ms: u64,
    /// WAL the slot may hold back before the relay reports it: an error in the log at each crossing, `/healthz`
    /// 503, and `tally_relay_slot_lag_alert_bytes` beside `tally_relay_slot_lag_bytes` for the alert rule
    /// (`ops/prometheus/tally.rules.yml`). PostgreSQL keeps a slot's WAL for ever: a stopped relay means a filling disk.
    pub slot_lag_alert_bytes: i64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            listen: "127.0.0.1:9468".into(),
            slot: "tally_outbox".into(),
            publication: "tally_outbox".into(),
            batch_changes: 1_000,
            idle_ms: 200,
            slot_lag_alert_bytes: 1 << 30,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("postgres: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Pool(#[from] tally_postgres::PgError),
    #[error(transparent)]
    Kafka(#[from] tally_kafka::KafkaError),
    #[error("the replication slot {0}: {1}")]
    Slot(String, String),
    #[error("decoding the slot's changes: {0}")]
    Decode(String),
}

impl From<deadpool_postgres::PoolError> for RelayError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        RelayError::Pool(e.into())
    }
}

#[derive(Debug)]
pub struct Metrics {
    pub records: AtomicU64,
    pub transactions: AtomicU64,
    pub passes_failed: AtomicU64,
    /// Bytes of WAL the slot holds back (current WAL position − confirmed position); −1 before the first look, while
    /// the slot cannot be read (PostgreSQL unreachable) and when it does not exist.
    pub slot_lag_bytes: AtomicI64,
    /// The configured alert threshold, exported for the alert rule.
    pub slot_lag_alert_bytes: AtomicI64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            records: AtomicU64::new(0),
            transactions: AtomicU64::new(0),
            passes_failed: AtomicU64::new(0),
            slot_lag_bytes: AtomicI64::new(-1),
            slot_lag_alert_bytes: AtomicI64::new(RelayConfig::default().slot_lag_alert_bytes),
        }
    }
}

impl Metrics {
    pub fn render(&self) -> String {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "# HELP tally_relay_records_total Outbox records produced to Kafka (at least once).\n\
             # TYPE tally_relay_records_total counter\ntally_relay_records_total {}\n\
             # HELP tally_relay_transactions_total Outbox transactions confirmed on the slot.\n\
             # TYPE tally_relay_transactions_total counter\ntally_relay_transactions_total {}\n\
             # HELP tally_relay_passes_failed_total Passes that ended in an error (nothing confirmed; retried).\n\
             # TYPE tally_relay_passes_failed_total counter\ntally_relay_passes_failed_total {}\n\
             # HELP tally_relay_slot_lag_bytes WAL the replication slot retains behind the current position.\n\
             # TYPE tally_relay_slot_lag_bytes gauge\ntally_relay_slot_lag_bytes {}\n\
             # HELP tally_relay_slot_lag_alert_bytes The slot lag above which the relay reports itself unhealthy.\n\
             # TYPE tally_relay_slot_lag_alert_bytes gauge\ntally_relay_slot_lag_alert_bytes {}\n",
            r(&self.records),
            r(&self.transactions),
            r(&self.passes_failed),
            self.slot_lag_bytes.load(Ordering::Relaxed),
            self.slot_lag_alert_bytes.load(Ordering::Relaxed),
        )
    }
}

/// Creates the publication and the slot if they do not exist (idempotent). The database needs
/// `wal_level = logical` and the role the `REPLICATION` attribute.
pub async fn ensure(pool: &Pool, config: &RelayConfig) -> Result<(), RelayError> {
    let client = pool.get().await?;
    let wal: String = client.query_one("SHOW wal_level", &[]).await?.get(0);
    if wal != "logical" {
        return Err(RelayError::Slot(
            config.slot.clone(),
            format!("wal_level is {wal}: logical decoding needs wal_level = logical (`make up` sets it)"),
        ));
    }
    let has_pub: bool = client
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", &[&config.publication])
        .await?
        .get(0);
    if !has_pub {
        // A name is an identifier, not a parameter: checked, then quoted.
        check_name(&config.publication)?;
        client
            .batch_execute(&format!("CREATE PUBLICATION \"{}\" FOR TABLE {OUTBOX_TABLE}", config.publication))
            .await?;
    }
    let has_slot: bool = client
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)", &[&config.slot])
        .await?
        .get(0);
    if !has_slot {
        check_name(&config.slot)?;
        client
            .query_one("SELECT pg_create_logical_replication_slot($1, 'pgoutput')::text", &[&config.slot])
            .await
            .map_err(|e| RelayError::Slot(config.slot.clone(), db_message(&e)))?;
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), RelayError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(RelayError::Slot(name.to_owned(), "names are lower-case letters, digits and _ (at most 63)".into()))
    }
}

fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_owned())
}

/// One outbox record as the slot decoded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub lsn: String,
    pub outbox_id: String,
    pub topic: String,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

pub struct Relay {
    pub config: RelayConfig,
    pub kafka: KafkaConfig,
    pub pool: Pool,
    pub producer: Producer,
    pub metrics: Arc<Metrics>,
}

/// Where a pass stops (for tests of a crash between producing and confirming).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    Yes,
    /// Produce, then stop as a crash would: the slot is not advanced.
    CrashBeforeConfirming,
}

impl Relay {
    /// The pending transactions' outbox records, in commit order, and the end of the last commit; nothing is
    /// consumed from the slot.
    pub async fn peek(&self) -> Result<(Vec<Record>, Option<pgoutput::Lsn>, u64), RelayError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes($1, NULL, $2,
                        'proto_version', '1', 'publication_names', $3)",
                &[&self.config.slot, &self.config.batch_changes, &self.config.publication],
            )
            .await
            .map_err(|e| RelayError::Slot(self.config.slot.clone(), db_message(&e)))?;
        let mut relations = Relations::default();
        let (mut records, mut pending, mut end, mut commits) = (Vec::new(), Vec::new(), None, 0u64);
        for row in rows {
            let lsn: String = row.get(0);
            let data: Vec<u8> = row.get(1);
            match pgoutput::decode(&data).map_err(|e| RelayError::Decode(format!("at {lsn}: {e}")))? {
                Message::Relation(r) => relations.learn(r),
                Message::Insert { relation, columns } => {
                    let rel = relations.get(relation).ok_or_else(|| {
                        RelayError::Decode(format!("at {lsn}: an insert into unknown relation {relation}"))
                    })?;
                    if rel.name != OUTBOX_TABLE {
                        continue;
                    }
                    pending.push(outbox_record(&lsn, &rel.columns, &columns)?);
                }
                Message::Commit { end_lsn, .. } => {
                    records.append(&mut pending);
                    end = Some(end_lsn);
                    commits += 1;
                }
                Message::Begin { .. } | Message::Other(_) => {}
            }
        }
        Ok((records, end, commits))
    }

    /// One pass: peek, produce everything, then (only then) confirm. Returns how many records it produced.
    pub async fn pass(&self, confirm: Confirm) -> Result<usize, RelayError> {
        let (records, end, commits) = self.peek().await?;
        let Some(end) = end else { return Ok(0) };
        let prefix = &self.kafka.topic_prefix;
        let sends = records.iter().map(|r| {
            let topic = format!("{prefix}{}", r.topic);
            async move {
                let headers = [
                    Header { key: "tally.lsn", value: r.lsn.as_bytes() },
                    Header { key: "tally.outbox_id", value: r.outbox_id.as_bytes() },
                ];
                self.producer.send(&topic, &r.key, &r.value, &headers).await
            }
        });
        // Enqueued in commit order (the producer keeps per-partition order), awaited together.
        for result in futures::future::join_all(sends).await {
            result?;
        }
        self.metrics.records.fetch_add(records.len() as u64, Ordering::Relaxed);
        if confirm == Confirm::CrashBeforeConfirming {
            return Ok(records.len());
        }
        let client = self.pool.get().await?;
        client
            .query_one(
                "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)::text",
                &[&self.config.slot, &pgoutput::lsn_text(end)],
            )
            .await
            .map_err(|e| RelayError::Slot(self.config.slot.clone(), db_message(&e)))?;
        self.metrics.transactions.fetch_add(commits, Ordering::Relaxed);
        Ok(records.len())
    }

    /// The WAL the slot holds back, in bytes.
    pub async fn slot_lag(&self) -> Result<i64, RelayError> {
        let row = async {
            let client = self.pool.get().await?;
            let row = client
                .query_opt(
                    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
                       FROM pg_replication_slots WHERE slot_name = $1",
                    &[&self.config.slot],
                )
                .await?;
            Ok::<_, RelayError>(row)
        }
        .await;
        let row = match row {
            Ok(row) => row,
            Err(e) => {
                // Unknown is not zero: the rule on −1 fires rather than the last good value standing.
                self.metrics.slot_lag_bytes.store(-1, Ordering::Relaxed);
                return Err(e);
            }
        };
        let lag = row.and_then(|r| r.get::<_, Option<i64>>(0)).unwrap_or(-1);
        let limit = self.config.slot_lag_alert_bytes;
        self.metrics.slot_lag_alert_bytes.store(limit, Ordering::Relaxed);
        let before = self.metrics.slot_lag_bytes.swap(lag, Ordering::Relaxed);
        if lag > limit && before <= limit {
            tracing::error!(slot = %self.config.slot, lag_bytes = lag, limit_bytes = limit,
                "the replication slot holds back more WAL than slot_lag_alert_bytes: is Kafka reachable?");
        } else if lag <= limit && before > limit {
            tracing::info!(slot = %self.config.slot, lag_bytes = lag, "the replication slot's lag is under its limit again");
        }
        Ok(lag)
    }

    /// `/healthz`: the slot exists and holds back no more WAL than `slot_lag_alert_bytes`.
    pub async fn health(&self) -> Result<String, String> {
        match self.slot_lag().await {
            Ok(lag) if lag < 0 => Err(format!("the replication slot {} does not exist", self.config.slot)),
            Ok(lag) if lag > self.config.slot_lag_alert_bytes => Err(format!(
                "the replication slot {} holds back {lag} bytes of WAL, over slot_lag_alert_bytes ({})",
                self.config.slot, self.config.slot_lag_alert_bytes
            )),
            Ok(lag) => Ok(format!("ok, slot lag {lag} bytes")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Passes until `shutdown`; an error is logged and the pass retried (nothing was confirmed).
    pub async fn run(&self, shutdown: CancellationToken) {
        let idle = Duration::from_millis(self.config.idle_ms.max(1));
        while !shutdown.is_cancelled() {
            let n = match self.pass(Confirm::Yes).await {
                Ok(n) => n,
                Err(e) => {
                    self.metrics.passes_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "relay pass failed; retrying");
                    0
                }
            };
            let _ = self.slot_lag().await;
            if n == 0 {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = tokio::time::sleep(idle) => {}
                }
            }
        }
    }
}

fn outbox_record(lsn: &str, names: &[String], values: &[Option<String>]) -> Result<Record, RelayError> {
    let col = |name: &str| -> Result<&str, RelayError> {
        let i = names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| RelayError::Decode(format!("at {lsn}: the outbox has no column {name}")))?;
        values
            .get(i)
            .and_then(|v| v.as_deref())
            .ok_or_else(|| RelayError::Decode(format!("at {lsn}: outbox column {name} is null")))
    };
    let bytes = |name: &str| -> Result<Vec<u8>, RelayError> {
        pgoutput::bytea(col(name)?).ok_or_else(|| RelayError::Decode(format!("at {lsn}: {name} is not bytea hex")))
    };
    Ok(Record {
        lsn: lsn.to_owned(),
        outbox_id: col("outbox_id")?.to_owned(),
        topic: col("topic")?.to_owned(),
        key: bytes("record_key")?,
        value: bytes("record_value")?,
    })
}

/// `tally relay`: ensures the slot, serves `/metrics` and `/healthz`, relays until shutdown.
pub async fn serve(
    config: RelayConfig,
    kafka: KafkaConfig,
    postgres: tally_postgres::PostgresConfig,
    shutdown: CancellationToken,
) -> Result<(), RelayError> {
    let pool = tally_postgres::pool(&postgres)?;
    tally_postgres::migrate(&pool).await?;
    ensure(&pool, &config).await?;
    tally_kafka::ensure_topics(&kafka, tally_kafka::API_TOPICS).await?;
    let relay = Arc::new(Relay { producer: Producer::new(&kafka)?, config, kafka, pool, metrics: Arc::default() });
    let listener = tokio::net::TcpListener::bind(&relay.config.listen).await.map_err(|e| {
        RelayError::Slot(relay.config.slot.clone(), format!("listening on {}: {e}", relay.config.listen))
    })?;
    let app = {
        use axum::routing::get;
        let (m, r) = (relay.metrics.clone(), relay.clone());
        axum::Router::new().route("/metrics", get(move || async move { m.render() })).route(
            "/healthz",
            get(move || async move {
                match r.health().await {
                    Ok(ok) => (axum::http::StatusCode::OK, format!("{ok}\n")),
                    Err(e) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
                }
            }),
        )
    };
    let stop = shutdown.clone();
    let http =
        tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await });
    relay.run(shutdown.clone()).await;
    let _ = http.await;
    let producer = relay.producer.clone();
    let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Every relay metric the alert rules name is one the relay serves.
    #[test]
    fn the_alert_rules_name_metrics_the_relay_serves() {
        let rules = include_str!("../../../../ops/prometheus/tally.rules.yml");
        let served = super::Metrics::default().render();
        let named: Vec<&str> = rules
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("tally_relay_"))
            .collect();
        assert!(named.len() >= 3, "{named:?}");
        for name in named {
            assert!(served.contains(&format!("\n{name} ")), "{name} is in the rules but not served");
        }
    }
}
