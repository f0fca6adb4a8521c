//! PSP adapters of the pure core: for Stripe and for Adyen, the same parts — wire types, `verify` (signature over
//! the PSP's bytes, no default that succeeds), `normalize` (wire → canonical [`PaymentEvent`]s or an explicit
//! [`Outcome::Ignored`]). [`normalize`] at the crate root is the one entry point: PAN scan first, then the PSP's
//! normaliser, so no code path can normalise a body that carries a card number.

pub mod adyen;
mod error;
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

/// Scans `body` for card numbers, then normalises it with the PSP's rules. `received_at` is when the delivery
/// arrived; the core never reads the clock.
pub fn normalize(psp: Psp, body: &[u8], received_at: Timestamp) -> Result<Vec<Outcome>, NormalizeError> {
    let found = scan_for_pans(body);
    if !found.is_empty() {
        return Err(NormalizeError::PanDetected {
            count: found.len(),
            networks: found.iter().map(|m| m.network).collect(),
        });
    }
    match psp {
        Psp::Stripe => stripe::normalize(body, received_at).map(|o| vec![o]),
        Psp::Adyen => adyen::normalize(body, received_at),
    }
}
