//! Tally's pure payment core: the canonical [`PaymentEvent`], its deterministic [`FactKey`], the ledger posting
//! rules ([`ledger`]), payment status derivation ([`status`]), the PAN scanner ([`pan`]) and [`Secret`].
//!
//! Nothing here does I/O, reads the clock or draws randomness: time comes in as [`Timestamp`] values, identities are
//! UUIDv5 hashes. `crates/tally/tests/tidy.rs` fails the build if that slips.

pub mod event;
pub mod fact_key;
pub mod ledger;
pub mod pan;
pub mod secret;
pub mod status;
pub mod time;

pub use event::{distinct_facts, Attributes, EventKind, PaymentEvent, Psp, Source};
pub use fact_key::{FactIdentity, FactKey};
pub use secret::Secret;
pub use time::Timestamp;

/// The edge dedup protocol's vocabulary (DESIGN §6), shared by its Redis and PostgreSQL stores.
pub mod edge {
    /// What a claim on a fact key found.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum ClaimState {
        /// The key was free (or its previous claim expired): the caller owns it now.
        Claimed,
        /// Another delivery is producing this fact right now: answer retry-later.
        Processing,
        /// The fact was produced already: a duplicate.
        Done,
    }
}
