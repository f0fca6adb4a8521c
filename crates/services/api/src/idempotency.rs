//! Idempotency keys (issue 17 §2), with PostgreSQL as the arbiter: one row per (merchant, key) holding the request's
//! fingerprint, a lock while the first request runs, what it made (its payment and PSP operation — the recovery
//! point, written in the same transaction that made them) and, once finished, the response bytes.
//!
//! | the key … | a request with the same fingerprint gets | another request gets |
//! |---|---|---|
//! | is new | runs; the key is locked for `lease` | — |
//! | is locked (the first still runs) | 409 `idempotency_key_in_use` | 422 `idempotency_key_reused` |
//! | was locked by a request that crashed (lease over) | takes the lock over and *resumes*: what the first made is resolved, never made again | 422 |
//! | is finished | the stored response, byte for byte, `Idempotent-Replayed: true` | 422 |
//!
//! Responses that say "try again" (409 busy, 429, 5xx) are not stored: the key is released, so that a retry runs.

use std::time::Duration;

use deadpool_postgres::GenericClient;
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::store::StoreError;

/// The request a key is used for.
pub struct Request<'a> {
    pub merchant: &'a str,
    pub key: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    /// The parsed body (the fingerprint is over its canonical form: key order and spacing do not make a request
    /// another one).
    pub body: &'a Value,
}

impl Request<'_> {
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [self.method, self.path] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        canonical(self.body, &mut h);
        h.finalize().into()
    }
}

/// A canonical encoding of a JSON value: object keys sorted, every part length- or tag-prefixed.
fn canonical(v: &Value, h: &mut Sha256) {
    match v {
        Value::Null => h.update(b"n"),
        Value::Bool(b) => h.update(if *b { b"t" } else { b"f" }),
        Value::Number(n) => {
            let s = n.to_string();
            h.update(b"#");
            h.update((s.len() as u64).to_be_bytes());
            h.update(s.as_bytes());
        }
        Value::String(s) => {
            h.update(b"s");
            h.update((s.len() as u64).to_be_bytes());
            h.update(s.as_bytes());
        }
        Value::Array(items) => {
            h.update(b"[");
            h.update((items.len() as u64).to_be_bytes());
            items.iter().for_each(|i| canonical(i, h));
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            h.update(b"{");
            h.update((keys.len() as u64).to_be_bytes());
            for k in keys {
                h.update((k.len() as u64).to_be_bytes());
                h.update(k.as_bytes());
                canonical(&map[k], h);
            }
        }
    }
}

/// What the key says about the request.
#[derive(Debug, PartialEq, Eq)]
pub enum Begin {
    /// A new key: the request runs, holding the lock as `token`.
    New { token: Uuid },
    /// The request that first used the key stopped without finishing (its lock ran out): this one holds the lock
    /// now, as `token`, and must resume from what the first made.
    Resume { token: Uuid, payment: Option<Uuid>, operation: Option<Uuid> },
    /// The stored response.
    Replay { status: u16, body: Vec<u8> },
    /// The first request is still running.
    InUse,
    /// The key was used for another request.
    Reused,
}

/// Claims the key for the request, or says why not.
pub async fn begin(client: &impl GenericClient, req: &Request<'_>, lease: Duration) -> Result<Begin, StoreError> {
    let fingerprint = req.fingerprint().to_vec();
    let lease = lease.as_secs_f64();
    let token = Uuid::from_u128(rand::random());
    let inserted = client
        .execute(
            "INSERT INTO api_idempotency_keys (merchant_id, idempotency_key, request_method, request_path,
                                               request_sha256, locked_until, lock_token, created_at)
             VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6), $7, now())
             ON CONFLICT (merchant_id, idempotency_key) DO NOTHING",
            &[&req.merchant, &req.key, &req.method, &req.path, &fingerprint, &lease, &token],
        )
        .await?;
    if inserted == 1 {
        return Ok(Begin::New { token });
    }
    // The key exists: take its lock over if it ran out (a crashed first request), in one statement so that two
    // retries cannot both take it.
    let row = client
        .query_opt(
            "WITH taken AS (
                 UPDATE api_idempotency_keys SET locked_until = now() + make_interval(secs => $4), lock_token = $5
                  WHERE merchant_id = $1 AND idempotency_key = $2 AND request_sha256 = $3
                    AND locked_until IS NOT NULL AND locked_until < now()
              RETURNING payment_id, operation_id)
             SELECT k.request_sha256, k.response_status, k.response_body, k.locked_until IS NOT NULL,
                    (SELECT count(*) FROM taken), (SELECT payment_id FROM taken), (SELECT operation_id FROM taken)
               FROM api_idempotency_keys k WHERE k.merchant_id = $1 AND k.idempotency_key = $2",
            &[&req.merchant, &req.key, &fingerprint, &lease, &token],
        )
        .await?;
    // Released between the two statements (its first request made nothing): this request may run.
    let Some(row) = row else { return Ok(Begin::InUse) };
    let stored: Vec<u8> = row.get(0);
    if stored != fingerprint {
        return Ok(Begin::Reused);
    }
    let taken: i64 = row.get(4);
    if taken == 1 {
        return Ok(Begin::Resume { token, payment: row.get(5), operation: row.get(6) });
    }
    let status: Option<i16> = row.get(1);
    match status {
        Some(status) => Ok(Begin::Replay { status: status.unsigned_abs(), body: row.get(2) }),
        None => Ok(Begin::InUse),
    }
}

/// Records what the request made, in the transaction that made it: a request resuming after a crash starts from
/// here.
/// Refused with [`StoreError::Stale`] when the key's lock is no longer this request's (it ran past its lease and
/// another request took the key over): the transaction must roll back, so that the key names one payment only.
pub async fn remember(
    tx: &impl GenericClient,
    held: &Held<'_>,
    payment: Uuid,
    operation: Option<Uuid>,
) -> Result<(), StoreError> {
    let n = tx
        .execute(
            "UPDATE api_idempotency_keys SET payment_id = $3, operation_id = coalesce($4, operation_id)
              WHERE merchant_id = $1 AND idempotency_key = $2 AND lock_token = $5",
            &[&held.merchant, &held.key, &payment, &operation, &held.token],
        )
        .await?;
    if n != 1 {
        return Err(StoreError::Stale(payment));
    }
    Ok(())
}

/// The key a request holds: the merchant's key and the token of its lock.
#[derive(Debug, Clone, Copy)]
pub struct Held<'a> {
    pub merchant: &'a str,
    pub key: &'a str,
    pub token: Uuid,
}

/// Stores the response and unlocks the key, if this request still holds it (false: another request took it over,
/// and that one stores the response).
pub async fn finish(
    client: &impl GenericClient,
    held: &Held<'_>,
    status: u16,
    body: &[u8],
) -> Result<bool, StoreError> {
    let status = i16::try_from(status).expect("an HTTP status fits");
    let n = client
        .execute(
            "UPDATE api_idempotency_keys SET response_status = $3, response_body = $4, locked_until = NULL,
                    lock_token = NULL, finished_at = now()
              WHERE merchant_id = $1 AND idempotency_key = $2 AND lock_token = $5",
            &[&held.merchant, &held.key, &status, &body, &held.token],
        )
        .await?;
    Ok(n == 1)
}

/// Forgets a key whose request made nothing (it was refused before acting, or told to try again): a retry runs.
pub async fn release(client: &impl GenericClient, held: &Held<'_>) -> Result<(), StoreError> {
    client
        .execute(
            "DELETE FROM api_idempotency_keys
              WHERE merchant_id = $1 AND idempotency_key = $2 AND lock_token = $3 AND payment_id IS NULL",
            &[&held.merchant, &held.key, &held.token],
        )
        .await?;
    Ok(())
}

/// Deletes keys older than `keep` (configurable, ≥ 24 h) that no request holds: finished ones, and those whose
/// request stopped (what it made was resolved by the resolver). Returns how many.
pub async fn expire(client: &impl GenericClient, keep: Duration) -> Result<u64, StoreError> {
    Ok(client
        .execute(
            "DELETE FROM api_idempotency_keys
              WHERE created_at < now() - make_interval(secs => $1) AND (locked_until IS NULL OR locked_until < now())",
            &[&keep.as_secs_f64()],
        )
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(method: &str, path: &str, body: &str) -> [u8; 32] {
        let body: Value = serde_json::from_str(body).expect("json");
        Request { merchant: "m", key: "k", method, path, body: &body }.fingerprint()
    }

    #[test]
    fn the_fingerprint_ignores_key_order_and_spacing_and_sees_every_value() {
        let a = fp("POST", "/v1/payments", r#"{"amount":100,"currency":"EUR","meta":{"a":1,"b":[1,2]}}"#);
        assert_eq!(a, fp("POST", "/v1/payments", r#"{ "currency": "EUR", "meta": {"b":[1,2],"a":1}, "amount": 100 }"#));
        assert_ne!(a, fp("POST", "/v1/payments", r#"{"amount":101,"currency":"EUR","meta":{"a":1,"b":[1,2]}}"#));
        assert_ne!(a, fp("POST", "/v1/payments", r#"{"amount":100,"currency":"EUR","meta":{"a":1,"b":[2,1]}}"#));
        assert_ne!(a, fp("POST", "/v1/payments", r#"{"amount":"100","currency":"EUR","meta":{"a":1,"b":[1,2]}}"#));
        assert_ne!(a, fp("POST", "/v1/payments/x", r#"{"amount":100,"currency":"EUR","meta":{"a":1,"b":[1,2]}}"#));
        // Length prefixes: moving bytes between the method and the path is another request.
        assert_ne!(fp("POS", "T/v1", "{}"), fp("POST", "/v1", "{}"));
    }
}
