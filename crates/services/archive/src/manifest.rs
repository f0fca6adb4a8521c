//! The manifest in PostgreSQL: which files make the archive, and the archive sink's offsets. Same protocol as the
//! ledger (DESIGN §5): a partition is claimed by bumping its epoch in `sink_offsets`; a file enters the manifest in
//! the transaction that moves the offset from the file's first offset to its end, under the claimed epoch.

use deadpool_postgres::Pool;

use crate::file::EncodedFile;
use crate::PROCESSOR_VERSION;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("postgres: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("postgres pool: {0}")]
    Pool(String),
    #[error("fenced: {topic}[{partition}] is owned by a newer epoch or moved past offset {start}")]
    Fenced { topic: String, partition: i32, start: i64 },
}

impl From<deadpool_postgres::PoolError> for ManifestError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        ManifestError::Pool(e.to_string())
    }
}

impl ManifestError {
    /// The database went away (retry the same commit), as opposed to a fence (stop).
    pub fn is_transient(&self) -> bool {
        match self {
            ManifestError::Pool(_) => true,
            ManifestError::Db(e) => e.as_db_error().is_none_or(|db| {
                let code = db.code().code();
                ["08", "53", "57"].iter().any(|class| code.starts_with(class))
                    || ["40001", "40P01", "55P03"].contains(&code)
            }),
            ManifestError::Fenced { .. } => false,
        }
    }
}

/// This sink's ownership of one partition (the framework's claim).
pub type Claim = tally_sink::Claim;

/// A manifest row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    pub topic: String,
    pub partition: i32,
    pub start_offset: i64,
    pub end_offset: i64,
    pub path: String,
    pub bytes: i64,
    pub sha256: String,
    pub records: i64,
    pub facts: i64,
    pub key_sum: i128,
    /// None for files written before migration 0007.
    pub money_sum: Option<i128>,
}

#[derive(Clone)]
pub struct Manifest {
    pool: Pool,
    group: String,
}

impl Manifest {
    pub fn new(pool: Pool, group: impl Into<String>) -> Self {
        Manifest { pool, group: group.into() }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Takes ownership of a partition: bumps its epoch (fencing any previous owner) and returns where to resume.
    pub async fn claim(&self, topic: &str, partition: i32) -> Result<Claim, ManifestError> {
        let client = self.pool.get().await?;
        let c = tally_postgres::offsets::claim(&client, &self.group, topic, partition).await?;
        Ok(Claim { topic: topic.to_owned(), partition, next_offset: c.next_offset, epoch: c.epoch, anchor: c.anchor })
    }

    /// Enters a written file into the manifest and moves the partition's offset to its end, if and only if `claim`
    /// still owns the partition at the file's first offset. Idempotent for the same file after a lost
    /// acknowledgement: a retry finds its own row and reports success.
    /// `anchor`: the digest of the file's last record (`tally_kafka::position::record_digest`).
    pub async fn commit(&self, claim: &Claim, file: &EncodedFile, anchor: &[u8]) -> Result<(), ManifestError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let moved = tally_postgres::offsets::advance(
            &tx,
            &self.group,
            &claim.topic,
            claim.partition,
            claim.epoch,
            file.start_offset,
            file.end_offset,
            Some(anchor),
        )
        .await?;
        if !moved {
            drop(tx);
            // Our own earlier attempt may have committed before its connection broke.
            let mine = client
                .query_opt(
                    "SELECT 1 FROM archive_files a JOIN sink_offsets s
                       ON s.group_id = $1 AND s.topic = a.topic AND s.kafka_partition = a.kafka_partition
                     WHERE a.path = $2 AND a.sha256 = $3 AND a.owner_epoch = $4 AND s.owner_epoch = $4",
                    &[&self.group, &file.path, &file.sha256, &claim.epoch],
                )
                .await?;
            return match mine {
                Some(_) => Ok(()),
                None => Err(ManifestError::Fenced {
                    topic: claim.topic.clone(),
                    partition: claim.partition,
                    start: file.start_offset,
                }),
            };
        }
        insert_file(&tx, file, claim.epoch, PROCESSOR_VERSION).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every manifest row, in (topic, partition, start) order.
    pub async fn files(&self) -> Result<Vec<ManifestFile>, ManifestError> {
        list_files(&self.pool).await
    }
}

/// The manifest row of a written file (the sink's commit; the recon benchmark's loader).
pub async fn insert_file(
    client: &impl deadpool_postgres::GenericClient,
    file: &EncodedFile,
    epoch: i64,
    processor_version: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO archive_files (topic, kafka_partition, start_offset, end_offset, path, bytes, sha256, records,
                facts, key_sum, money_sum, first_timestamp, last_timestamp, owner_epoch, processor_version)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::text::numeric, $11::text::numeric,
                'epoch'::timestamptz + $12::bigint * interval '1 millisecond',
                'epoch'::timestamptz + $13::bigint * interval '1 millisecond', $14, $15)",
            &[
                &file.topic,
                &file.partition,
                &file.start_offset,
                &file.end_offset,
                &file.path,
                &(file.bytes.len() as i64),
                &file.sha256,
                &file.sum.records,
                &file.sum.facts,
                &file.sum.key_sum.to_string(),
                &file.sum.money_sum.to_string(),
                &file.first_timestamp_ms,
                &file.last_timestamp_ms,
                &epoch,
                &processor_version,
            ],
        )
        .await
        .map(drop)
}

pub async fn list_files(pool: &Pool) -> Result<Vec<ManifestFile>, ManifestError> {
    let client = pool.get().await?;
    list_files_in(&client).await
}

/// The manifest as one client (or transaction) sees it.
pub async fn list_files_in(client: &impl deadpool_postgres::GenericClient) -> Result<Vec<ManifestFile>, ManifestError> {
    let rows = client
        .query(
            "SELECT topic, kafka_partition, start_offset, end_offset, path, bytes, sha256, records, facts, key_sum::text,
                    money_sum::text
             FROM archive_files ORDER BY topic, kafka_partition, start_offset",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ManifestFile {
            topic: r.get(0),
            partition: r.get(1),
            start_offset: r.get(2),
            end_offset: r.get(3),
            path: r.get(4),
            bytes: r.get(5),
            sha256: r.get(6),
            records: r.get(7),
            facts: r.get(8),
            key_sum: r.get::<_, String>(9).parse().unwrap_or(i128::MIN),
            money_sum: r.get::<_, Option<String>>(10).map(|s| s.parse().unwrap_or(i128::MIN)),
        })
        .collect())
}
