//! Stripe: `Stripe-Signature` verification and Event normalisation.

mod normalize;
pub mod report;
mod verify;
pub mod wire;

pub use normalize::{normalize, PLATFORM_MERCHANT};
pub use verify::{sign, verify, Tolerance, DEFAULT_TOLERANCE_SECS};

/// Every event type in the official stripe-python 16.1.0 SDK (see `data/README.md`).
pub const EVENT_TYPES: &str = include_str!("../../data/stripe_event_types.txt");

/// Types that older API versions still deliver but the current SDK no longer lists: `transfer.paid` and
/// `transfer.failed` went when transfers and payouts were split (API version 2017-04-06).
pub const RETIRED_EVENT_TYPES: &[&str] = &["transfer.paid", "transfer.failed"];

/// Whether Stripe publishes (or once published) this event type.
pub fn is_known_event_type(event_type: &str) -> bool {
    RETIRED_EVENT_TYPES.contains(&event_type) || EVENT_TYPES.lines().any(|l| l.trim() == event_type)
}
