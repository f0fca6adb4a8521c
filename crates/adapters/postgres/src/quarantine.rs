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
