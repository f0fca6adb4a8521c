//! `[api]` in tally.toml (`TALLY__API__…` in the environment).

use serde::Deserialize;
use tally_domain::Secret;

use crate::connector::{BreakerConfig, RetryConfig};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address to listen on.
    pub listen: String,
    /// Larger request bodies are refused with 413 before anything is read from them.
    pub max_body_bytes: usize,
    /// How long a finished idempotency key and its response are kept (at least 24 h).
    pub idempotency_retention_secs: u64,
    /// How long a request holds its key; a key still locked after this belongs to a request that stopped, and the
    /// next request with it takes over. Must exceed the longest PSP call: `attempts × timeout_ms` plus backoffs.
    pub idempotency_lease_secs: u64,
    /// Encryption at rest of payment-method tokens: key id → base64 of 32 bytes, and the id that seals new rows.
    pub encryption_keys: Vec<EncryptionKey>,
    pub encryption_active: String,
    /// How often the resolver looks for PSP operations left open, and how old one must be to be taken.
    pub resolver_interval_ms: u64,
    pub resolver_min_age_ms: u64,
    /// Past this age an operation is not resent (the PSPs keep idempotency keys about 24 h): its payment goes to
    /// `requires_review`.
    pub resolver_give_up_secs: u64,
    pub retry: RetryConfig,
    pub breaker: BreakerConfig,
    pub stripe: Option<StripeApi>,
    pub adyen: Option<AdyenApi>,
    /// TLS 1.3 on the listener when set; plain HTTP (for loopback behind a terminating proxy) when not.
    pub tls: Option<crate::tls::TlsConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionKey {
    pub id: String,
    pub key: Secret<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeApi {
    /// `https://api.stripe.com` in production; the PSP simulator's address in tests.
    pub base_url: String,
    /// The secret key (`sk_…`), sent as a bearer token.
    pub secret_key: Secret<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdyenApi {
    /// `https://checkout-test.adyen.com/v71`, or the live prefix URL of the company account.
    pub base_url: String,
    pub api_key: Secret<String>,
    pub return_url: String,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "127.0.0.1:8090".into(),
            max_body_bytes: 64 * 1024,
            idempotency_retention_secs: 24 * 3600,
            idempotency_lease_secs: 60,
            encryption_keys: Vec::new(),
            encryption_active: "k1".into(),
            resolver_interval_ms: 1_000,
            resolver_min_age_ms: 60_000,
            resolver_give_up_secs: 23 * 3600,
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
            stripe: None,
            adyen: None,
            tls: None,
        }
    }
}

impl ApiConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.idempotency_retention_secs < 24 * 3600 {
            return Err("api.idempotency_retention_secs: keys are kept at least 24 h (86400)".into());
        }
        let longest_call_ms = u64::from(self.retry.attempts.max(1)) * (self.retry.timeout_ms + self.retry.cap_ms);
        if self.idempotency_lease_secs * 1_000 <= longest_call_ms {
            return Err(format!(
                "api.idempotency_lease_secs ({} s) must exceed the longest PSP call ({longest_call_ms} ms: attempts × \
                 (timeout_ms + cap_ms)), or a retry could take over a key whose request is still running",
                self.idempotency_lease_secs
            ));
        }
        if self.resolver_min_age_ms <= longest_call_ms {
            return Err(format!(
                "api.resolver_min_age_ms ({}) must exceed the longest PSP call ({longest_call_ms} ms), or the resolver \
                 would resend an operation whose request is still waiting for its answer",
                self.resolver_min_age_ms
            ));
        }
        if self.resolver_give_up_secs == 0 || self.resolver_give_up_secs >= 24 * 3600 {
            return Err("api.resolver_give_up_secs: 1 s to under 24 h (the PSPs keep idempotency keys 24 h)".into());
        }
        if self.stripe.is_none() && self.adyen.is_none() {
            return Err("api: configure at least one PSP ([api.stripe] or [api.adyen])".into());
        }
        Ok(())
    }
}
