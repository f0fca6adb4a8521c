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

    /// What the edge keeps with a confirmed claim: the content it produced, the delivery that carried it (its
    /// bytes are in `webhooks.raw.v1` under that id), and the fact's `occurred_at` in that delivery (None for a
    /// claim confirmed before the edge kept it). The time is outside the content digest on purpose — a PSP restates a
    /// fact with a later event time, which is the same fact — but the edge needs it: a same-content delivery with an
    /// *earlier* time must still reach the sinks, which date a fact by its earliest statement (I4).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Produced {
        pub content: ContentDigest,
        pub delivery_id: uuid::Uuid,
        pub occurred_at: Option<crate::Timestamp>,
    }

    impl Produced {
        /// The Redis value of a confirmed claim: `done:<token>` and [`Produced::done_suffix`].
        pub fn done_value(&self, token: &str) -> String {
            format!("done:{token}{}", self.done_suffix())
        }

        /// What follows the token in a done value: `:<content>:<delivery>[:<occurred_at µs>]`. A compare-and-set
        /// on a done value whose token the caller does not know compares this.
        pub fn done_suffix(&self) -> String {
            match self.occurred_at {
                Some(at) => format!(":{}:{}:{}", self.content, self.delivery_id, at.unix_micros()),
                None => format!(":{}:{}", self.content, self.delivery_id),
            }
        }

        /// Whether a delivery of the same content stating `occurred_at` states this fact earlier than what was
        /// produced — then it is produced too (a restatement the sinks keep), not dropped as a duplicate.
        pub fn restated_earlier_by(&self, content: ContentDigest, occurred_at: crate::Timestamp) -> bool {
            self.content == content && self.occurred_at.is_some_and(|at| occurred_at < at)
        }

        /// Reads a Redis claim value: None when it is not `done:…`; `Some(None)` for the older `done:<token>`.
        pub fn parse_done(value: &str) -> Option<Option<Produced>> {
            let rest = value.strip_prefix("done:")?;
            let mut parts = rest.split(':');
            let (_token, content, delivery, at) = (parts.next(), parts.next(), parts.next(), parts.next());
            let occurred_at = match at.map(|a| a.parse::<i64>().map(crate::Timestamp::from_unix_micros)) {
                None => Ok(None),
                Some(Ok(Ok(at))) => Ok(Some(at)),
                Some(_) => Err(()),
            };
            let parsed = match (content, delivery, occurred_at, parts.next()) {
                (Some(c), Some(d), Ok(occurred_at), None) => match (c.parse(), d.parse()) {
                    (Ok(c), Ok(d)) => Some(Produced { content: ContentDigest(c), delivery_id: d, occurred_at }),
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
            let at = crate::Timestamp::from_unix_micros(1_764_028_800_000_000).unwrap();
            let p = Produced {
                content: ContentDigest(uuid::Uuid::from_u128(7)),
                delivery_id: uuid::Uuid::from_u128(9),
                occurred_at: Some(at),
            };
            assert_eq!(Produced::parse_done(&p.done_value("tok")), Some(Some(p)));
            assert!(p.done_value("tok").ends_with(&p.done_suffix()));
            // A value written before the edge kept the time reads back without it.
            let older = Produced { occurred_at: None, ..p };
            assert_eq!(older.done_value("tok"), format!("done:tok:{}:{}", p.content, p.delivery_id));
            assert_eq!(Produced::parse_done(&older.done_value("tok")), Some(Some(older)));
            assert_eq!(Produced::parse_done(&format!("{}:soon", older.done_value("tok"))), Some(None));
            // Only the same content stated earlier is a restatement; a time-less claim never is.
            let earlier = crate::Timestamp::from_unix_micros(1_764_028_799_000_000).unwrap();
            assert!(p.restated_earlier_by(p.content, earlier));
            assert!(!p.restated_earlier_by(p.content, at));
            assert!(!p.restated_earlier_by(ContentDigest(uuid::Uuid::from_u128(8)), earlier));
            assert!(!older.restated_earlier_by(p.content, earlier));
            assert_eq!(Produced::parse_done("done:tok"), Some(None));
            assert_eq!(Produced::parse_done("processing:tok"), None);
            assert_eq!(Produced::parse_done("done:tok:not-a-uuid:x"), Some(None));
        }
    }
}
