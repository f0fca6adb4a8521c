//! The one HTTP transport under every connector: a per-request timeout, retries on network errors and 5xx only
//! (exponential backoff with full jitter, capped), never on a 4xx, every retry with the same idempotency key, and
//! the PSP's circuit breaker fed by what happened.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;

use super::breaker::{Breaker, BreakerConfig};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Requests per call, the first included.
    pub attempts: u32,
    /// The backoff's first ceiling; it doubles per retry up to `cap_ms`.
    pub base_ms: u64,
    pub cap_ms: u64,
    /// How long one request may take before it counts as unanswered.
    pub timeout_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig { attempts: 3, base_ms: 100, cap_ms: 2_000, timeout_ms: 10_000 }
    }
}

impl RetryConfig {
    /// The pause before retry `n` (1-based): uniform in [0, min(cap, base · 2^(n−1))] ("full jitter").
    pub fn backoff(&self, n: u32) -> Duration {
        let ceiling = self.base_ms.saturating_mul(1u64 << n.saturating_sub(1).min(40)).min(self.cap_ms);
        Duration::from_millis(rand::random_range(0..=ceiling))
    }
}

/// A request body.
pub enum Body {
    /// `application/x-www-form-urlencoded` (Stripe), pairs in order, nested keys already bracketed.
    Form(Vec<(String, String)>),
    Json(serde_json::Value),
    Empty,
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A 2xx or 4xx: the PSP answered.
    Answered { status: u16, body: Vec<u8> },
    /// Nothing reached the PSP: the breaker is open, or no connection could be made. The PSP did nothing.
    NotSent,
    /// Sent, and no answer after every retry: the PSP may have acted.
    NoAnswer { reason: String },
}

pub struct Transport {
    client: reqwest::Client,
    base_url: String,
    headers: Vec<(String, String)>,
    retry: RetryConfig,
    pub breaker: Breaker,
    /// Requests sent, and of those, retries.
    pub requests: AtomicU64,
    pub retries: AtomicU64,
}

impl Transport {
    /// `headers`: sent on every request (authentication).
    pub fn new(
        base_url: &str,
        headers: Vec<(String, String)>,
        retry: RetryConfig,
        breaker: BreakerConfig,
    ) -> Result<Self, String> {
        let timeout = Duration::from_millis(retry.timeout_ms);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| format!("an HTTP client: {e}"))?;
        Ok(Transport {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            headers,
            retry,
            breaker: Breaker::new(breaker),
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        })
    }

    /// Sends `body` to `path` with the idempotency key, retrying as configured.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Body,
        idempotency_key: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Reply {
        let url = format!("{}{path}", self.base_url);
        let mut last = String::new();
        let mut sent = 0u32;
        // Requests that may have reached the PSP (a refused connection never did).
        let mut reached = 0u32;
        for attempt in 1..=self.retry.attempts.max(1) {
            if attempt > 1 {
                tokio::time::sleep(self.retry.backoff(attempt - 1)).await;
                self.retries.fetch_add(1, Ordering::Relaxed);
            }
            if !self.breaker.allow() {
                if reached == 0 {
                    return Reply::NotSent;
                }
                break;
            }
            let mut req = self.client.request(method.clone(), &url);
            for (k, v) in &self.headers {
                req = req.header(k, v);
            }
            for (k, v) in extra {
                req = req.header(*k, *v);
            }
            if let Some(key) = idempotency_key {
                req = req.header("Idempotency-Key", key);
            }
            req = match body {
                Body::Form(pairs) => req.form(pairs),
                Body::Json(v) => req.json(v),
                Body::Empty => req,
            };
            sent += 1;
            self.requests.fetch_add(1, Ordering::Relaxed);
            match req.send().await {
                Ok(resp) if resp.status().is_server_error() => {
                    reached += 1;
                    self.breaker.failure();
                    last = format!("HTTP {}", resp.status().as_u16());
                }
                Ok(resp) => {
                    reached += 1;
                    let status = resp.status().as_u16();
                    match resp.bytes().await {
                        Ok(bytes) => {
                            self.breaker.success();
                            return Reply::Answered { status, body: bytes.to_vec() };
                        }
                        Err(e) => {
                            self.breaker.failure();
                            last = format!("HTTP {status}, body unreadable: {e}");
                        }
                    }
                }
                Err(e) => {
                    self.breaker.failure();
                    if !e.is_connect() {
                        reached += 1;
                    }
                    last = if e.is_timeout() { "timed out".into() } else { format!("network error: {e}") };
                }
            }
        }
        if reached == 0 {
            // Not one request got as far as a connection: the PSP cannot have acted.
            tracing::warn!(url = %url, sent, reason = %last, "no request reached the PSP");
            return Reply::NotSent;
        }
        Reply::NoAnswer { reason: format!("no answer after {sent} request(s): {last}") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_full_jitter_under_an_exponential_ceiling_and_the_cap() {
        let r = RetryConfig { attempts: 5, base_ms: 100, cap_ms: 350, timeout_ms: 1_000 };
        for (n, ceiling) in [(1, 100), (2, 200), (3, 350), (10, 350), (40, 350)] {
            let samples: Vec<u128> = (0..400).map(|_| r.backoff(n).as_millis()).collect();
            assert!(samples.iter().all(|&s| s <= ceiling), "retry {n}: within {ceiling} ms");
            // Full jitter: spread over the whole range, not clustered at the ceiling.
            assert!(samples.iter().any(|&s| s < ceiling / 4) && samples.iter().any(|&s| s > ceiling * 3 / 4), "{n}");
        }
    }
}
