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

/// Scans `body` for card numbers, then normalises it with the PSP's rules. `received_at` is when the delivery
/// arrived; the core never reads the clock.
pub fn normalize(psp: Psp, body: &[u8], received_at: Timestamp) -> Result<Vec<Outcome>, NormalizeError> {
    let found = pan::scan(body);
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
