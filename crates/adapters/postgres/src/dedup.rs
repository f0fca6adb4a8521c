//! The edge-dedup store on PostgreSQL (DESIGN §6), used when Redis is absent or unreachable. Same protocol as the
//! Redis store: claim with a lease, confirm as done for the retry window, release on failure — each guarded by the
//! claimant's token so that a late release never frees someone else's claim.

use std::time::Duration;

use deadpool_postgres::Pool;
use tally_domain::edge::{ClaimState, Produced};
use tally_domain::{ContentDigest, Timestamp};
use uuid::Uuid;

use crate::PgError;

#[derive(Clone)]
pub struct PgDedup {
    pool: Pool,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn micros(p: &Produced) -> Option<i64> {
    p.occurred_at.map(Timestamp::unix_micros)
}

impl PgDedup {
    pub fn new(pool: Pool) -> Self {
        PgDedup { pool }
    }

    pub async fn claim(&self, key: Uuid, token: Uuid, lease: Duration) -> Result<ClaimState, PgError> {
        let client = self.pool.get().await?;
        // Insert, or take over an expired row; either way RETURNING tells us we own it.
        let owned = client
            .query_opt(
                "INSERT INTO edge_claims (fact_key, state, token, expires_at)
                 VALUES ($1, 'processing', $2, now() + $3::bigint * interval '1 millisecond')
                 ON CONFLICT (fact_key) DO UPDATE
                    SET state = 'processing', token = EXCLUDED.token, expires_at = EXCLUDED.expires_at
                    WHERE edge_claims.expires_at < now()
                 RETURNING token",
                &[&key, &token, &millis(lease)],
            )
            .await?;
        if owned.is_some() {
            return Ok(ClaimState::Claimed);
        }
        let row = client
            .query_opt(
                "SELECT state, content_digest, delivery_id, occurred_at_micros FROM edge_claims WHERE fact_key = $1",
                &[&key],
            )
            .await?;
        Ok(match row {
            Some(r) if r.get::<_, String>(0) == "done" => {
                let occurred_at = r.get::<_, Option<i64>>(3).and_then(|at| Timestamp::from_unix_micros(at).ok());
                let produced = match (r.get::<_, Option<Uuid>>(1), r.get::<_, Option<Uuid>>(2)) {
                    (Some(content), Some(delivery_id)) => {
                        Some(Produced { content: ContentDigest(content), delivery_id, occurred_at })
                    }
                    _ => None,
                };
                ClaimState::Done(produced)
            }
            Some(_) => ClaimState::Processing,
            // Expired and deleted between the two statements: report busy, the PSP retries.
            None => ClaimState::Processing,
        })
    }

    /// Marks an owned claim done for `ttl`, with what it produced. False if the claim was lost (lease expired and
    /// taken over).
    pub async fn confirm(&self, key: Uuid, token: Uuid, produced: &Produced, ttl: Duration) -> Result<bool, PgError> {
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "UPDATE edge_claims SET state = 'done', expires_at = now() + $3::bigint * interval '1 millisecond',
                        content_digest = $4, delivery_id = $5, occurred_at_micros = $6
                 WHERE fact_key = $1 AND token = $2",
                &[&key, &token, &millis(ttl), &produced.content.0, &produced.delivery_id, &micros(produced)],
            )
            .await?;
        Ok(n == 1)
    }

    /// Moves a done claim to a delivery that stated the same content earlier (`Produced::restated_earlier_by`),
    /// after that delivery was produced — only ever to an earlier time, so that two concurrent restatements leave
    /// the earliest. False when the claim holds no later time of that content any more (expired, or moved to a
    /// statement at least as early meanwhile): nothing to do, the earlier one stands.
    pub async fn restate(&self, key: Uuid, was: &Produced, now: &Produced, ttl: Duration) -> Result<bool, PgError> {
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "UPDATE edge_claims SET delivery_id = $3, occurred_at_micros = $4,
                        expires_at = now() + $5::bigint * interval '1 millisecond'
                 WHERE fact_key = $1 AND state = 'done' AND content_digest = $2 AND occurred_at_micros > $4",
                &[&key, &was.content.0, &now.delivery_id, &micros(now), &millis(ttl)],
            )
            .await?;
        Ok(n == 1)
    }

    /// Frees an owned claim so that the PSP's retry can take it.
    pub async fn release(&self, key: Uuid, token: Uuid) -> Result<(), PgError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "DELETE FROM edge_claims WHERE fact_key = $1 AND token = $2 AND state = 'processing'",
                &[&key, &token],
            )
            .await?;
        Ok(())
    }
}
