use std::collections::BTreeMap;

use serde::Deserialize;
use tally_domain::Secret;
use tally_kafka::KafkaConfig;
use tally_psp::{CaptureMode, CaptureModes, Endpoint};

use crate::IngestError;

/// `[ingest]` in tally.toml (`TALLY__INGEST__…` in the environment).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Address to listen on.
    pub listen: String,
    /// Larger bodies are refused with 413 before anything else is done with them.
    pub max_body_bytes: usize,
    /// How long an edge claim stays `processing` while its records are produced. Must exceed twice
    /// `kafka.message_timeout_ms` (a send waits at most that long for queue room, then at most that long for its
    /// delivery), so that a claim never expires while its produce may still succeed.
    pub claim_lease_ms: u64,
    /// Serve `POST /bench/raw` (produce the body to the raw topic, nothing else): the benchmark's baseline.
    pub bench_baseline: bool,
    pub stripe: StripeConfig,
    pub adyen: AdyenConfig,
}

/// `[ingest.stripe]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StripeConfig {
    /// Active endpoint secrets (`whsec_…`); several during a rotation. Empty: the endpoint refuses every delivery.
    pub secrets: Vec<Secret<String>>,
    /// Deliveries whose signed timestamp is older than this are refused (replay protection).
    pub tolerance_secs: u64,
    /// How long a produced fact is remembered at the edge: at least Stripe's retry window (3 days).
    pub dedup_ttl_secs: u64,
    /// `test` or `live`: the mode of the Stripe account this endpoint belongs to. An event of the other mode
    /// (Stripe sends connected accounts' test events to a live endpoint) is acknowledged, kept and never booked.
    pub mode: Mode,
}

/// Test or live (production) notifications.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Test,
    Live,
}

/// `[ingest.adyen]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdyenConfig {
    /// Active HMAC keys (hex, from the Customer Area); several during a rotation. Empty: every delivery is refused.
    pub hmac_keys: Vec<Secret<String>>,
    /// How long a produced fact is remembered at the edge: Adyen retries queued notifications for up to 30 days.
    pub dedup_ttl_secs: u64,
    /// `test` or `live`: which Adyen environment's notifications this endpoint books (the `live` field).
    pub mode: Mode,
    /// The capture setting of merchant accounts not listed in `capture`: `delayed` (manual or delayed automatic
    /// capture: captures arrive as CAPTURE notifications) or `immediate` (an AUTHORISATION is also the capture).
    pub capture_default: CaptureMode,
    /// Per merchant account: `{ "MyShopECOM" = "immediate" }`, as set in the Customer Area.
    pub capture: BTreeMap<String, CaptureMode>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 256 * 1024,
            claim_lease_ms: 15_000,
            bench_baseline: false,
            stripe: StripeConfig::default(),
            adyen: AdyenConfig::default(),
        }
    }
}

impl Default for StripeConfig {
    fn default() -> Self {
        StripeConfig { secrets: Vec::new(), tolerance_secs: 300, dedup_ttl_secs: 3 * 24 * 3600, mode: Mode::Test }
    }
}

impl Default for AdyenConfig {
    fn default() -> Self {
        AdyenConfig {
            hmac_keys: Vec::new(),
            dedup_ttl_secs: 30 * 24 * 3600,
            mode: Mode::Test,
            capture_default: CaptureMode::Delayed,
            capture: BTreeMap::new(),
        }
    }
}

impl StripeConfig {
    /// What the Stripe normaliser needs to know about this endpoint.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint { live: self.mode == Mode::Live, ..Endpoint::default() }
    }
}

impl AdyenConfig {
    /// What the Adyen normaliser needs to know about this endpoint.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            live: self.mode == Mode::Live,
            adyen_capture: CaptureModes { default: self.capture_default, accounts: self.capture.clone() },
        }
    }
}

impl IngestConfig {
    pub(crate) fn validate(&self, kafka: &KafkaConfig) -> Result<(), IngestError> {
        if self.claim_lease_ms <= 2 * kafka.message_timeout_ms {
            return Err(IngestError::Config(format!(
                "ingest.claim_lease_ms ({}) must exceed twice kafka.message_timeout_ms ({}): a produce may wait that \
                 long for queue room and then that long for its delivery",
                self.claim_lease_ms, kafka.message_timeout_ms
            )));
        }
        if self.max_body_bytes == 0 {
            return Err(IngestError::Config("ingest.max_body_bytes must be positive".into()));
        }
        if self.stripe.tolerance_secs == 0 {
            return Err(IngestError::Config(
                "ingest.stripe.tolerance_secs must be positive: 0 disables replay protection".into(),
            ));
        }
        Ok(())
    }
}
