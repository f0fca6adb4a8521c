//! Edge dedup (DESIGN §6): claim each fact key in Redis, or in PostgreSQL when Redis is unreachable. Redis is an
//! optimisation; the ledger's unique fact key stays the final arbiter, so a fact confirmed in Redis just before an
//! outage may be produced once more through the fallback, and the ledger counts it as a duplicate.

use std::sync::Arc;
use std::time::Duration;

use tally_domain::edge::{ClaimState, Produced};
use tally_domain::FactKey;
use tally_postgres::PgDedup;
use tally_redis::RedisDedup;
use uuid::Uuid;

use crate::Metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    Redis,
    Postgres,
}

/// A claim this delivery owns: it must be confirmed after the produce succeeds, or released if it fails.
#[derive(Debug, Clone)]
pub struct OwnedClaim {
    pub key: FactKey,
    token: Uuid,
    store: Store,
    /// What the confirmed claim keeps: this delivery's content digest and id.
    produced: Produced,
}

/// What claiming a fact key found.
#[derive(Debug, Clone)]
pub enum Claim {
    Owned(OwnedClaim),
    Processing,
    /// Produced already, with this content by this delivery (None: confirmed before the edge kept it).
    Done(Done),
}

/// A fact key found done: what was produced, and where the claim lives (for [`EdgeDedup::restate`]).
#[derive(Debug, Clone, Copy)]
pub struct Done {
    pub produced: Option<Produced>,
    store: Store,
}

#[derive(Debug, thiserror::Error)]
#[error("no edge-dedup store reachable (redis: {redis}; postgres: {postgres})")]
pub struct DedupUnavailable {
    redis: String,
    postgres: String,
}

#[derive(Clone)]
pub struct EdgeDedup {
    redis: RedisDedup,
    pg: PgDedup,
    metrics: Arc<Metrics>,
}

impl EdgeDedup {
    pub fn new(redis: RedisDedup, pg: PgDedup, metrics: Arc<Metrics>) -> Self {
        EdgeDedup { redis, pg, metrics }
    }

    /// Claims `key` for a delivery that would produce `produced` (its content digest and delivery id).
    pub async fn claim(&self, key: FactKey, produced: Produced, lease: Duration) -> Result<Claim, DedupUnavailable> {
        let token = crate::random_uuid();
        let to_claim = |state: ClaimState, store| match state {
            ClaimState::Claimed => Claim::Owned(OwnedClaim { key, token, store, produced }),
            ClaimState::Processing => Claim::Processing,
            ClaimState::Done(produced) => Claim::Done(Done { produced, store }),
        };
        let redis_err = match self.redis.claim(&key.to_string(), &token.to_string(), lease).await {
            Ok(state) => return Ok(to_claim(state, Store::Redis)),
            Err(e) => e.to_string(),
        };
        Metrics::add(&self.metrics.dedup_fallbacks_to_postgres, 1);
        match self.pg.claim(key.0, token, lease).await {
            Ok(state) => Ok(to_claim(state, Store::Postgres)),
            Err(e) => Err(DedupUnavailable { redis: redis_err, postgres: e.to_string() }),
        }
    }

    /// True when the claim was still ours and is now `done`.
    pub async fn confirm(&self, claim: &OwnedClaim, ttl: Duration) -> bool {
        let result = match claim.store {
            Store::Redis => self
                .redis
                .confirm(&claim.key.to_string(), &claim.token.to_string(), &claim.produced, ttl)
                .await
                .map_err(|e| e.to_string()),
            Store::Postgres => {
                self.pg.confirm(claim.key.0, claim.token, &claim.produced, ttl).await.map_err(|e| e.to_string())
            }
        };
        match result {
            Ok(confirmed) => confirmed,
            Err(e) => {
                tracing::warn!(fact_key = %claim.key, error = %e, "edge claim confirm failed; the lease will expire");
                false
            }
        }
    }

    /// Moves a done claim to `now`, a delivery that stated the same content earlier than `done` and has been
    /// produced. True when the claim moved; false when it had changed meanwhile (then a still earlier statement, or
    /// none, holds it) or the store failed — either way the fact is in the log, and the sinks keep its earliest.
    pub async fn restate(&self, key: FactKey, done: &Done, now: Produced, ttl: Duration) -> bool {
        let Some(was) = done.produced else { return false };
        let result = match done.store {
            Store::Redis => self
                .redis
                .restate(&key.to_string(), &crate::random_uuid().to_string(), &was, &now, ttl)
                .await
                .map_err(|e| e.to_string()),
            Store::Postgres => self.pg.restate(key.0, &was, &now, ttl).await.map_err(|e| e.to_string()),
        };
        result.unwrap_or_else(|e| {
            tracing::warn!(fact_key = %key, error = %e, "edge claim restate failed; the earlier statement is produced");
            false
        })
    }

    pub async fn release(&self, claim: &OwnedClaim) {
        let result = match claim.store {
            Store::Redis => {
                self.redis.release(&claim.key.to_string(), &claim.token.to_string()).await.map_err(|e| e.to_string())
            }
            Store::Postgres => self.pg.release(claim.key.0, claim.token).await.map_err(|e| e.to_string()),
        };
        if let Err(e) = result {
            tracing::warn!(fact_key = %claim.key, error = %e, "edge claim release failed; the lease will expire");
        }
    }
}

impl EdgeDedup {
    /// For /healthz: whether Redis answers (its absence only degrades the service).
    pub async fn redis_health(&self) -> Result<String, String> {
        self.redis.ping().await.map_err(|e| e.to_string())
    }
}
