//! Merchants of the API and their keys. A key is `tally_sk_<key id>_<secret>`: the key id (16 hex digits) finds
//! the row, the SHA-256 of the whole key is compared in constant time. Only the hash is stored; the key is shown once.

use base64::Engine as _;
use deadpool_postgres::GenericClient;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tally_domain::{Psp, Secret};

use crate::store::StoreError;

const PREFIX: &str = "tally_sk_";

/// How a merchant's payments are routed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Merchant {
    pub merchant_id: String,
    /// The PSPs it may be routed to, preferred first.
    pub psps: Vec<Psp>,
    /// Whether a new payment may go to the next PSP while the first's breaker is open.
    pub failover: bool,
    /// Stripe connected account (`Stripe-Account`); `None`: the platform's own account.
    pub stripe_account: Option<String>,
    pub adyen_merchant_account: Option<String>,
    pub rate_per_second: u32,
}

impl Merchant {
    /// The merchant id a PSP's webhooks name this merchant by (what the ledger's facts carry).
    pub fn psp_merchant_id(&self, psp: Psp) -> Option<String> {
        match psp {
            Psp::Stripe => {
                Some(self.stripe_account.clone().unwrap_or_else(|| tally_psp::stripe::PLATFORM_MERCHANT.to_owned()))
            }
            Psp::Adyen => self.adyen_merchant_account.clone(),
        }
    }
}

/// Creates (or, with the same settings, keeps) a merchant. Different settings for an existing id are refused.
pub async fn create(client: &impl GenericClient, m: &Merchant) -> Result<(), StoreError> {
    if m.psps.is_empty() {
        return Err(StoreError::Refused("a merchant needs at least one PSP".into()));
    }
    let psps: Vec<&str> = m.psps.iter().map(|p| p.as_str()).collect();
    let rate = i32::try_from(m.rate_per_second).map_err(|_| StoreError::Refused("rate_per_second too large".into()))?;
    let inserted = client
        .execute(
            "INSERT INTO api_merchants (merchant_id, psps, failover, stripe_account, adyen_merchant_account,
                                        rate_per_second)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (merchant_id) DO NOTHING",
            &[&m.merchant_id, &psps, &m.failover, &m.stripe_account, &m.adyen_merchant_account, &rate],
        )
        .await
        .map_err(|e| match e.as_db_error() {
            Some(db) if db.code() == &tokio_postgres::error::SqlState::CHECK_VIOLATION => {
                StoreError::Refused(format!("merchant {}: {}", m.merchant_id, db.message()))
            }
            _ => StoreError::Db(e),
        })?;
    if inserted == 0 && find(client, &m.merchant_id).await?.as_ref() != Some(m) {
        return Err(StoreError::Refused(format!("merchant {} exists with other settings", m.merchant_id)));
    }
    Ok(())
}

pub async fn find(client: &impl GenericClient, merchant_id: &str) -> Result<Option<Merchant>, StoreError> {
    let row = client
        .query_opt(
            "SELECT merchant_id, psps, failover, stripe_account, adyen_merchant_account, rate_per_second
               FROM api_merchants WHERE merchant_id = $1",
            &[&merchant_id],
        )
        .await?;
    Ok(row.map(|r| {
        let psps: Vec<String> = r.get(1);
        let rate: i32 = r.get(5);
        Merchant {
            merchant_id: r.get(0),
            psps: psps.iter().map(|p| p.parse().expect("the CHECK constraint bounds psps")).collect(),
            failover: r.get(2),
            stripe_account: r.get(3),
            adyen_merchant_account: r.get(4),
            rate_per_second: rate.unsigned_abs(),
        }
    }))
}

/// A new key for the merchant: returned once, stored as its hash.
pub async fn create_key(client: &impl GenericClient, merchant_id: &str) -> Result<Secret<String>, StoreError> {
    // A key the PAN scan would take for a card number would be refused on every request: drawn again.
    let (key_id, key) = loop {
        let id: [u8; 8] = rand::random();
        let secret: [u8; 32] = rand::random();
        let key_id = hex::encode(id);
        let key = format!("{PREFIX}{key_id}_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret));
        if !tally_domain::pan::contains_pan(key.as_bytes()) {
            break (key_id, key);
        }
    };
    let hash = Sha256::digest(key.as_bytes()).to_vec();
    let n = client
        .execute(
            "INSERT INTO api_keys (key_id, merchant_id, key_sha256)
             SELECT $1, merchant_id, $3 FROM api_merchants WHERE merchant_id = $2",
            &[&key_id, &merchant_id, &hash],
        )
        .await?;
    if n == 0 {
        return Err(StoreError::Refused(format!("no merchant {merchant_id}: create it first")));
    }
    Ok(Secret::new(key))
}

/// The merchant a presented key belongs to, or `None` (unknown, revoked, or not a key at all).
pub async fn authenticate(client: &impl GenericClient, presented: &str) -> Result<Option<Merchant>, StoreError> {
    let Some(key_id) = presented.strip_prefix(PREFIX).and_then(|rest| rest.split_once('_')).map(|(id, _)| id) else {
        return Ok(None);
    };
    if key_id.len() != 16 || !key_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let row = client
        .query_opt("SELECT merchant_id, key_sha256 FROM api_keys WHERE key_id = $1 AND revoked_at IS NULL", &[&key_id])
        .await?;
    let Some(row) = row else { return Ok(None) };
    let stored: Vec<u8> = row.get(1);
    let presented = Sha256::digest(presented.as_bytes());
    if !bool::from(stored.as_slice().ct_eq(presented.as_slice())) {
        return Ok(None);
    }
    let merchant: String = row.get(0);
    find(client, &merchant).await
}

/// Revokes a key: it stops working at once.
pub async fn revoke_key(client: &impl GenericClient, key_id: &str) -> Result<bool, StoreError> {
    Ok(client
        .execute("UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL", &[&key_id])
        .await?
        == 1)
}
