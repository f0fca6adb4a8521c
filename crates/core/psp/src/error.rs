use tally_money::MoneyError;

/// Why a signature did not verify. Every variant is a rejection; there is no "unchecked" success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no secret configured: refusing to accept unverified webhooks")]
    NoSecretConfigured,
    #[error("invalid secret: {0}")]
    InvalidSecret(String),
    #[error("unable to extract timestamp and signatures from header")]
    MalformedHeader,
    #[error("no signatures found with expected scheme v1")]
    NoSignatureWithScheme,
    #[error("no signatures found matching the expected signature for payload")]
    NoMatch,
    #[error("timestamp {timestamp} outside the tolerance zone ({tolerance_secs} s before {now})")]
    OutsideTolerance { timestamp: i64, now: i64, tolerance_secs: u64 },
    #[error("notification item {index} has no additionalData.hmacSignature")]
    MissingSignature { index: usize },
    #[error("notification item {index}: HMAC signature does not match")]
    ItemMismatch { index: usize },
    #[error("body is not a notification that can be verified: {0}")]
    MalformedBody(String),
}

impl SignatureError {
    /// A stable machine-readable code, used in HTTP error bodies and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            SignatureError::NoSecretConfigured => "no_secret_configured",
            SignatureError::InvalidSecret(_) => "invalid_secret",
            SignatureError::MalformedHeader => "signature_header_malformed",
            SignatureError::NoSignatureWithScheme => "signature_scheme_missing",
            SignatureError::NoMatch | SignatureError::ItemMismatch { .. } => "signature_mismatch",
            SignatureError::OutsideTolerance { .. } => "timestamp_outside_tolerance",
            SignatureError::MissingSignature { .. } => "signature_missing",
            SignatureError::MalformedBody(_) => "malformed_body",
        }
    }
}

/// Why a body could not be normalised. The message never contains a card number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    #[error("body contains {count} PAN-looking number(s) ({networks:?}); rejected, the number is not shown")]
    PanDetected { count: usize, networks: Vec<&'static str> },
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("schema violation in {event_type}: {detail}")]
    Schema { event_type: String, detail: String },
    #[error("amount: {0}")]
    Money(#[from] MoneyError),
    #[error("{event_type}: the ledger would refuse this fact: {detail}")]
    NotBookable { event_type: String, detail: String },
}

impl NormalizeError {
    pub fn code(&self) -> &'static str {
        match self {
            NormalizeError::PanDetected { .. } => "pan_detected",
            NormalizeError::MalformedJson(_) => "malformed_json",
            NormalizeError::Schema { .. } => "schema_violation",
            NormalizeError::Money(_) | NormalizeError::NotBookable { .. } => "invalid_amount",
        }
    }
}

pub(crate) fn schema(event_type: &str, detail: impl Into<String>) -> NormalizeError {
    NormalizeError::Schema { event_type: clean(event_type), detail: clean(&detail.into()) }
}

/// Text derived from a payload (a serde error quotes the offending value, an event type is whatever the sender
/// wrote) with every card number masked, so that no error message, log line or CLI output can carry one.
pub(crate) fn clean(text: &str) -> String {
    String::from_utf8_lossy(&tally_domain::pan::redact(text.as_bytes())).into_owned()
}
