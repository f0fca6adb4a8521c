//! Adyen: HMAC verification of standard notifications and normalisation of their items.

mod normalize;
pub mod report;
mod verify;
pub mod wire;

pub use normalize::normalize;
pub use verify::{sign_item, signing_string, verify_item, verify_notification, verify_payload, HmacKey};

/// The 43 `eventCode` values of `@adyen/api-library` 32.1.0 (see `data/README.md`).
pub const EVENT_CODES: &str = include_str!("../../data/adyen_event_codes.txt");

/// Codes Adyen documents that the SDK's list lacks: `DISPUTE_OPENED_WITH_CHARGEBACK` (Adyen's Webhooks API
/// reference: sent "in rare cases, [when] Adyen receives a CHARGEBACK event without a preceding
/// NOTIFICATION_OF_CHARGEBACK").
pub const DOCUMENTED_EVENT_CODES: &[&str] = &["DISPUTE_OPENED_WITH_CHARGEBACK"];

pub fn is_known_event_code(code: &str) -> bool {
    DOCUMENTED_EVENT_CODES.contains(&code) || EVENT_CODES.lines().any(|l| l.trim() == code)
}
