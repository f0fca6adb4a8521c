//! The sinks' offsets in PostgreSQL (`sink_offsets`, DESIGN §5): one row per group × topic × partition, owned by
//! the member whose epoch it holds. The ledger, the archive and the recon shadow claim and move them the same way.

use deadpool_postgres::GenericClient;

/// A partition claimed: where the next batch must start, the epoch that fences earlier owners, and the digest of
/// the record before it (`tally_kafka::position`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetClaim {
    pub next_offset: i64,
    pub epoch: i64,
    pub anchor: Option<Vec<u8>>,
}

/// Takes ownership of a partition for `group`: bumps its epoch (fencing any previous owner) and returns where to
/// resume (offset 0 for a partition never seen).
pub async fn claim(
    client: &impl GenericClient,
    group: &str,
    topic: &str,
    partition: i32,
) -> Result<OffsetClaim, tokio_postgres::Error> {
    let row = client
        .query_one(
            "INSERT INTO sink_offsets (group_id, topic, kafka_partition, next_offset, owner_epoch)
             VALUES ($1, $2, $3, 0, 1)
             ON CONFLICT (group_id, topic, kafka_partition)
             DO UPDATE SET owner_epoch = sink_offsets.owner_epoch + 1
             RETURNING next_offset, owner_epoch, last_record_sha256",
            &[&group, &topic, &partition],
        )
        .await?;
    Ok(OffsetClaim { next_offset: row.get(0), epoch: row.get(1), anchor: row.get(2) })
}

/// Moves a partition's offset from `from` to `to` (with `anchor`, the digest of the record before `to`), in the
/// caller's transaction, if and only if `epoch` still owns it at `from`. False: fenced (another owner, or a gap).
#[allow(clippy::too_many_arguments)]
pub async fn advance(
    tx: &impl GenericClient,
    group: &str,
    topic: &str,
    partition: i32,
    epoch: i64,
    from: i64,
    to: i64,
    anchor: Option<&[u8]>,
) -> Result<bool, tokio_postgres::Error> {
    let n = tx
        .execute(
            "UPDATE sink_offsets SET next_offset = $5, last_record_sha256 = $7
             WHERE group_id = $1 AND topic = $2 AND kafka_partition = $3 AND owner_epoch = $4 AND next_offset = $6",
            &[&group, &topic, &partition, &epoch, &to, &from, &anchor],
        )
        .await?;
    Ok(n == 1)
}
