//! Adyen: HMAC verification of standard notifications and normalisation of their items.

mod normalize;
mod verify;
pub mod wire;

pub use normalize::normalize;
pub use verify::{sign_item, signing_string, verify_item, verify_notification, verify_payload, HmacKey};

/// The 43 `eventCode` values of `@adyen/api-library` 32.1.0 (see `data/README.md`).
pub const EVENT_CODES: &str = include_str!("../../data/adyen_event_codes.txt");

pub fn is_known_event_code(code: &str) -> bool {
    EVENT_CODES.lines().any(|l| l.trim() == code)
}
