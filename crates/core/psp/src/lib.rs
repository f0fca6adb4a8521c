//! PSP adapters of the pure core: for Stripe and for Adyen, the same parts — wire types, `verify` (signature over
//! the PSP's bytes, no default that succeeds), `normalize` (wire → canonical [`PaymentEvent`]s or an explicit
//! [`Outcome::Ignored`]). [`normalize`] at the crate root is the one entry point: PAN scan first, then the PSP's
//! normaliser, so no code path can normalise a body that carries a card number.

pub mod adyen;
mod error;
pub mod report;
pub mod stripe;

pub use error::{NormalizeError, SignatureError};

use tally_domain::{pan, PaymentEvent, Psp, Timestamp};

/// What a PSP notification (or one item of an Adyen batch) becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Facts to book. One notification may state several (Stripe's `charge.succeeded` with `captured: true` states
    /// both the authorization and the capture).
    Events(Vec<PaymentEvent>),
    /// A known notification type that Tally deliberately does not book, and why.
    Ignored { event_type: String, reason: String },
    /// A type the PSP added after Tally's list: acknowledged and kept (raw topic) for replay once Tally maps it.
    Unknown { event_type: String },
    /// A notification of the other mode (a test event at a live endpoint, or the reverse): never booked.
    OtherMode { event_type: String, live: bool },
    /// A notification Tally cannot map without a person (a field the mapping needs is missing or contradictory):
    /// acknowledged, kept, and recorded as a data-quality exception to review. Never booked, never silent.
    Exception { event_type: String, reason: String },
}

impl Outcome {
    pub(crate) fn ignored(event_type: &str, reason: impl Into<String>) -> Outcome {
        Outcome::Ignored { event_type: error::clean(event_type), reason: reason.into() }
    }

    pub(crate) fn exception(event_type: &str, reason: impl Into<String>) -> Outcome {
        Outcome::Exception { event_type: error::clean(event_type), reason: error::clean(&reason.into()) }
    }
}

/// How the endpoint that received a delivery is set up: what the normalisers need beyond the bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// The endpoint takes live (production) notifications; otherwise test ones. The other mode is never booked.
    pub live: bool,
    /// How Adyen captures, per merchant account (see [`CaptureMode`]).
    pub adyen_capture: CaptureModes,
}

/// Adyen's capture setting of a merchant account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMode {
    /// Manual or delayed automatic capture: each capture arrives as a `CAPTURE` notification.
    #[default]
    Delayed,
    /// Immediate automatic capture: an `AUTHORISATION` with `success=true` is also the capture of its full amount,
    /// and Adyen sends no `CAPTURE` unless the account enabled it (it is then the same fact).
    Immediate,
}

/// Capture modes per Adyen merchant account, with the mode of accounts not listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureModes {
    pub default: CaptureMode,
    pub accounts: std::collections::BTreeMap<String, CaptureMode>,
}

impl CaptureModes {
    pub fn of(&self, merchant_account: &str) -> CaptureMode {
        self.accounts.get(merchant_account).copied().unwrap_or(self.default)
    }
}

/// Every card number in a body: in its raw bytes, and — when the body uses JSON `\u` escapes, which hide digits
/// from a byte scan — in every decoded JSON string as well.
pub fn scan_for_pans(body: &[u8]) -> Vec<pan::PanMatch> {
    let mut found = pan::scan(body);
    if found.is_empty() && body.windows(2).any(|w| w == b"\\u") {
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
            let mut strings = Vec::new();
            collect_strings(&value, &mut strings);
            // Positions refer to the decoded text, not to `body`: `redact_pans` handles that case whole.
            found.extend(strings.iter().flat_map(|s| pan::scan(s.as_bytes())));
        }
    }
    found
}

/// `body` with its card numbers masked; a body whose numbers hide behind JSON escapes is replaced whole.
pub fn redact_pans(body: &[u8]) -> Vec<u8> {
    let redacted = pan::redact(body);
    if scan_for_pans(&redacted).is_empty() {
        redacted
    } else {
        b"{\"redacted\":\"card number in JSON-escaped form; body withheld\"}".to_vec()
    }
}

fn collect_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        serde_json::Value::Object(o) => o.iter().for_each(|(k, x)| {
            out.push(k.clone());
            collect_strings(x, out);
        }),
        _ => {}
    }
}

/// A body that was scanned for card numbers and holds none: what [`normalize_scanned`] takes. The edge needs the
/// scan's matches for itself (redaction, quarantine), so it scans once with [`pan_free`] and still cannot hand an
/// unscanned body to a normaliser.
#[derive(Debug, Clone, Copy)]
pub struct PanFree<'a>(&'a [u8]);

/// Scans `body` once: the body as [`PanFree`] when it holds no card number, else every match.
pub fn pan_free(body: &[u8]) -> Result<PanFree<'_>, Vec<pan::PanMatch>> {
    let found = scan_for_pans(body);
    if found.is_empty() {
        Ok(PanFree(body))
    } else {
        Err(found)
    }
}

/// Scans `body` for card numbers, then [`normalize_scanned`]. `received_at` is when the delivery arrived; the core
/// never reads the clock.
pub fn normalize(
    psp: Psp,
    body: &[u8],
    received_at: Timestamp,
    endpoint: &Endpoint,
) -> Result<Vec<Outcome>, NormalizeError> {
    let body = pan_free(body).map_err(|found| NormalizeError::PanDetected {
        count: found.len(),
        networks: found.iter().map(|m| m.network).collect(),
    })?;
    normalize_scanned(psp, body, received_at, endpoint)
}

/// Normalises a scanned body with the PSP's rules, then checks every fact with the ledger's own rule
/// ([`tally_domain::ledger::check_bookable`]), so that nothing the ledger would refuse is acknowledged.
pub fn normalize_scanned(
    psp: Psp,
    body: PanFree<'_>,
    received_at: Timestamp,
    endpoint: &Endpoint,
) -> Result<Vec<Outcome>, NormalizeError> {
    let PanFree(body) = body;
    let outcomes = match psp {
        Psp::Stripe => stripe::normalize(body, received_at, endpoint).map(|o| vec![o])?,
        Psp::Adyen => adyen::normalize(body, received_at, endpoint)?,
    };
    for outcome in &outcomes {
        if let Outcome::Events(events) = outcome {
            for event in events {
                tally_domain::ledger::check_bookable(event).map_err(|e| NormalizeError::NotBookable {
                    event_type: event.kind.as_str().to_owned(),
                    detail: e.to_string(),
                })?;
            }
        }
    }
    Ok(outcomes)
}
