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
pub use fact_key::{ContentDigest, FactIdentity, FactKey};
pub use secret::Secret;
pub use time::Timestamp;

/// The edge dedup protocol's vocabulary (DESIGN §6), shared by its Redis and PostgreSQL stores.
pub mod edge {
    use crate::ContentDigest;

    /// What a claim on a fact key found.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum ClaimState {
        /// The key was free (or its previous claim expired): the caller owns it now.
        Claimed,
        /// Another delivery is producing this fact right now: answer retry-later.
        Processing,
        /// The fact was produced already: a duplicate — of the content in `Produced` (None for a claim confirmed
        /// before the edge kept the content digest).
        Done(Option<Produced>),
    }

    /// What the edge keeps with a confirmed claim: the content it produced, and the delivery that carried it (its
    /// bytes are in `webhooks.raw.v1` under that id).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Produced {
        pub content: ContentDigest,
        pub delivery_id: uuid::Uuid,
    }

    impl Produced {
        /// The Redis value of a confirmed claim: `done:<token>:<content>:<delivery>`.
        pub fn done_value(&self, token: &str) -> String {
            format!("done:{token}:{}:{}", self.content, self.delivery_id)
        }

        /// Reads a Redis claim value: None when it is not `done:…`; `Some(None)` for the older `done:<token>`.
        pub fn parse_done(value: &str) -> Option<Option<Produced>> {
            let rest = value.strip_prefix("done:")?;
            let mut parts = rest.split(':');
            let (_token, content, delivery) = (parts.next(), parts.next(), parts.next());
            let parsed = match (content, delivery, parts.next()) {
                (Some(c), Some(d), None) => match (c.parse(), d.parse()) {
                    (Ok(c), Ok(d)) => Some(Produced { content: ContentDigest(c), delivery_id: d }),
                    _ => None,
                },
                _ => None,
            };
            Some(parsed)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_done_value_reads_back_and_older_values_are_done_without_content() {
            let p =
                Produced { content: ContentDigest(uuid::Uuid::from_u128(7)), delivery_id: uuid::Uuid::from_u128(9) };
            assert_eq!(Produced::parse_done(&p.done_value("tok")), Some(Some(p)));
            assert_eq!(Produced::parse_done("done:tok"), Some(None));
            assert_eq!(Produced::parse_done("processing:tok"), None);
            assert_eq!(Produced::parse_done("done:tok:not-a-uuid:x"), Some(None));
        }
    }
}
