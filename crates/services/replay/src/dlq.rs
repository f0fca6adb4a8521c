//! The ledger's dead-letter records (`sink_rejects`, each beside its copy on `payments.dlq.v1`): listed, and one
//! requeued — its original record, read from the archive at its exact position, produced again to its own topic
//! (key, value and headers as the log held them), once the cause is fixed. The ledger's sink then books it (fact
//! keys are deterministic: a fact booked meanwhile is a duplicate, never a second booking) or rejects it again at its
//! new offset. Every requeue is an audit record (`dlq.requeue`, I8) written in the transaction that is committed
//! only after the broker acknowledged the record; a record requeued before is refused unless asked again.

use deadpool_postgres::Pool;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tally_archive::objects::Objects;
use tally_kafka::{Header, KafkaConfig, Producer};

use crate::ReplayError;

/// A record the ledger's sink refused, and its last requeue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub reason: String,
    pub rejected_at: String,
    /// Who requeued it last, and when.
    pub requeued: Option<(String, String)>,
}

fn subject(topic: &str, partition: i32, offset: i64) -> String {
    format!("dlq:{topic}[{partition}]@{offset}")
}

/// Every dead-letter record (of topics starting with `prefix`), oldest first.
pub async fn list(pool: &Pool, prefix: &str) -> Result<Vec<Rejected>, ReplayError> {
    let rows = pool
        .get()
        .await?
        .query(
            "SELECT r.topic, r.kafka_partition, r.kafka_offset, r.reason,
                    to_char(r.rejected_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                    q.actor, to_char(q.recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
               FROM sink_rejects r
               LEFT JOIN LATERAL (
                   SELECT actor, recorded_at FROM audit_log
                    WHERE action = 'dlq.requeue'
                      AND subject = 'dlq:' || r.topic || '[' || r.kafka_partition || ']@' || r.kafka_offset
                    ORDER BY seq DESC LIMIT 1) q ON true
              WHERE starts_with(r.topic, $1)
              ORDER BY r.rejected_at, 1, 2, 3",
            &[&prefix],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Rejected {
            topic: r.get(0),
            partition: r.get(1),
            offset: r.get(2),
            reason: r.get(3),
            rejected_at: r.get(4),
            requeued: r.get::<_, Option<String>>(5).map(|a| (a, r.get(6))),
        })
        .collect())
}

/// Why a requeue did nothing.
#[derive(Debug, thiserror::Error)]
pub enum RequeueError {
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error("{0}")]
    Refused(String),
}

impl From<tokio_postgres::Error> for RequeueError {
    fn from(e: tokio_postgres::Error) -> Self {
        RequeueError::Replay(ReplayError::Db(e))
    }
}

impl From<deadpool_postgres::PoolError> for RequeueError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        RequeueError::Replay(ReplayError::from(e))
    }
}

/// What a requeue did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Requeued {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The SHA-256 of the record's value, as produced again.
    pub value_sha256: String,
    pub audit_seq: u64,
}

/// Who requeues, and why.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub actor: &'a str,
    pub reason: &'a str,
    pub ticket: &'a str,
    /// Requeue a record that was requeued before.
    pub again: bool,
}

/// Requeues one dead-letter record (see the module's description).
pub async fn requeue(
    pool: &Pool,
    objects: &Objects,
    kafka: &KafkaConfig,
    request: Request<'_>,
) -> Result<Requeued, RequeueError> {
    let Request { topic, partition, offset, actor, reason, ticket, again } = request;
    if [actor, reason, ticket].iter().any(|s| s.trim().is_empty()) {
        return Err(RequeueError::Refused("a requeue needs an actor, a reason and a ticket".into()));
    }
    let mut client = pool.get().await?;
    let rejected: Option<String> = client
        .query_opt(
            "SELECT reason FROM sink_rejects WHERE topic = $1 AND kafka_partition = $2 AND kafka_offset = $3",
            &[&topic, &partition, &offset],
        )
        .await?
        .map(|r| r.get(0));
    let Some(rejected) = rejected else {
        return Err(RequeueError::Refused(format!("{topic}[{partition}]@{offset} is not a dead-letter record")));
    };
    let subject = subject(topic, partition, offset);
    if !again {
        let before = client
            .query_opt(
                "SELECT actor, to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM audit_log
                  WHERE action = 'dlq.requeue' AND subject = $1 ORDER BY seq DESC LIMIT 1",
                &[&subject],
            )
            .await?;
        if let Some(b) = before {
            return Err(RequeueError::Refused(format!(
                "{subject} was requeued by {} at {}: --again to requeue it once more",
                b.get::<_, String>(0),
                b.get::<_, String>(1)
            )));
        }
    }
    // The original record, at its exact position in the archive.
    let file = tally_archive::manifest::list_files(pool)
        .await
        .map_err(ReplayError::from)?
        .into_iter()
        .find(|f| f.topic == topic && f.partition == partition && f.start_offset <= offset && offset < f.end_offset)
        .ok_or_else(|| {
            RequeueError::Refused(format!(
                "{topic}[{partition}]@{offset} is not archived yet: requeue it once the archive sink has flushed it"
            ))
        })?;
    let bytes = objects.get(&file.path).await.map_err(ReplayError::from)?;
    let records = tokio::task::spawn_blocking(move || tally_archive::file::read_records(bytes))
        .await
        .map_err(|e| ReplayError::Archive(e.to_string()))?
        .map_err(ReplayError::from)?;
    let record = records
        .into_iter()
        .find(|r| r.offset == offset)
        .ok_or_else(|| ReplayError::Archive(format!("{} does not hold offset {offset}", file.path)))?;
    // A record without a key or a value would be another record if produced (a tombstone, another partition).
    let (Some(key), Some(value)) = (record.key.clone(), record.value.clone()) else {
        return Err(RequeueError::Refused(format!(
            "{topic}[{partition}]@{offset} has no key or no value: producing it again would change it"
        )));
    };
    let value_sha256 = hex::encode(Sha256::digest(&value));
    // The producer first: the audit transaction (which holds the audit log's lock) waits only for the broker's ack.
    let producer = Producer::new(kafka).map_err(|e| ReplayError::Archive(format!("producer: {e}")))?;
    let tx = client.transaction().await?;
    let entry = tally_audit::Entry {
        actor: actor.to_owned(),
        action: "dlq.requeue".into(),
        subject: Some(subject),
        reason: Some(reason.to_owned()),
        ticket: Some(ticket.to_owned()),
        before: Some(value_sha256.clone()),
        detail: Some(serde_json::json!({ "rejected_for": rejected, "archive_file": file.path, "again": again })),
        ..tally_audit::Entry::default()
    };
    let audit_seq = tally_audit::append(&tx, &entry).await.map_err(ReplayError::from)?;
    let headers: Vec<Header<'_>> =
        record.headers.iter().filter_map(|(k, v)| v.as_deref().map(|v| Header { key: k.as_str(), value: v })).collect();
    producer
        .send(topic, &key, &value, &headers)
        .await
        .map_err(|e| ReplayError::Archive(format!("producing to {topic}: {e}")))?;
    tx.commit().await?;
    Ok(Requeued { topic: topic.to_owned(), partition, offset, value_sha256, audit_seq })
}
