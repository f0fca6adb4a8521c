use deadpool_postgres::Pool;
use uuid::Uuid;

use crate::PgError;

/// A refused delivery, stored without the card number.
pub struct QuarantineRecord<'a> {
    pub delivery_id: Uuid,
    pub psp: &'a str,
    pub received_at_micros: i64,
    pub reason: &'a str,
    pub detail: &'a str,
    pub headers: serde_json::Value,
    pub redacted_body: &'a [u8],
    pub body_sha256: &'a str,
}

pub async fn quarantine(pool: &Pool, r: &QuarantineRecord<'_>) -> Result<(), PgError> {
    let client = pool.get().await?;
    client
        .execute(
            "INSERT INTO quarantine (delivery_id, psp, received_at, reason, detail, headers, redacted_body, body_sha256)
             VALUES ($1, $2, 'epoch'::timestamptz + $3::bigint * interval '1 microsecond', $4, $5, $6, $7, $8)
             ON CONFLICT (delivery_id) DO NOTHING",
            &[&r.delivery_id, &r.psp, &r.received_at_micros, &r.reason, &r.detail, &r.headers, &r.redacted_body, &r.body_sha256],
        )
        .await?;
    Ok(())
}

/// A data-quality exception found at the webhook edge (`edge_exceptions`).
pub struct EdgeException<'a> {
    /// `unmapped` or `content_conflict`.
    pub kind: &'a str,
    pub delivery_id: Uuid,
    pub psp: &'a str,
    /// The notification item's index in its delivery (0 for a Stripe event).
    pub item: i32,
    pub event_type: &'a str,
    pub fact_key: Option<Uuid>,
    pub detail: serde_json::Value,
}

/// Records exceptions in one statement; a retried delivery records nothing twice.
pub async fn record_edge_exceptions(pool: &Pool, rows: &[EdgeException<'_>]) -> Result<(), PgError> {
    if rows.is_empty() {
        return Ok(());
    }
    let client = pool.get().await?;
    let col = |f: fn(&EdgeException<'_>) -> String| rows.iter().map(f).collect::<Vec<_>>();
    client
        .execute(
            "INSERT INTO edge_exceptions (kind, delivery_id, psp, item, event_type, fact_key, detail)
             SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::int[], $5::text[], $6::uuid[], $7::jsonb[])
             ON CONFLICT (delivery_id, item, kind) DO NOTHING",
            &[
                &col(|r| r.kind.to_owned()),
                &rows.iter().map(|r| r.delivery_id).collect::<Vec<_>>(),
                &col(|r| r.psp.to_owned()),
                &rows.iter().map(|r| r.item).collect::<Vec<_>>(),
                &col(|r| r.event_type.to_owned()),
                &rows.iter().map(|r| r.fact_key).collect::<Vec<_>>(),
                &rows.iter().map(|r| r.detail.clone()).collect::<Vec<_>>(),
            ],
        )
        .await?;
    Ok(())
}
