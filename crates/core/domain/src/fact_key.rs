//! Deterministic fact keys (DESIGN §3): UUIDv5 over the source-independent business identity of a fact.
//!
//! A retried delivery, or a second event type stating the same fact (Stripe's `charge.succeeded` and
//! `payment_intent.succeeded` both state the capture of one charge), maps to the same key; the ledger's unique
//! constraint on the key is the final arbiter of exactly-once (I2).

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{EventKind, Psp};

/// Tally's UUIDv5 namespace for fact keys. Changing it changes every key: never do that.
const NAMESPACE: Uuid = Uuid::from_u128(0x7d2d_a445_9a9f_4ca9_be9a_893d_dba9_4638);

/// What makes a fact unique.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FactIdentity<'a> {
    pub psp: Psp,
    pub kind: EventKind,
    pub psp_reference: &'a str,
    pub original_reference: Option<&'a str>,
}

impl FactIdentity<'_> {
    /// The key. The name fed to UUIDv5 is an unambiguous encoding: a version tag, then each field length-prefixed,
    /// and `None` distinct from `Some("")`, so that distinct identities never encode to the same bytes.
    pub fn key(&self) -> FactKey {
        let mut name = Vec::with_capacity(64);
        name.extend_from_slice(b"tally.fact.v1");
        for field in [self.psp.as_str(), self.kind.as_str(), self.psp_reference] {
            push_field(&mut name, Some(field));
        }
        push_field(&mut name, self.original_reference);
        FactKey(Uuid::new_v5(&NAMESPACE, &name))
    }
}

/// A digest of a fact's business content (what `PaymentEvent::same_content` compares), kept by the edge with its
/// claim so that a re-delivery with other content is seen there (issue 12, item 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentDigest(pub Uuid);

impl std::fmt::Display for ContentDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The content digest of a fact: its key, payment, merchant, amount, currency and fee, encoded as unambiguously as
/// the key is. Two events have the same digest exactly when `same_content` holds (test below).
pub fn content_digest(event: &crate::PaymentEvent) -> ContentDigest {
    let mut name = Vec::with_capacity(128);
    name.extend_from_slice(b"tally.content.v1");
    name.extend_from_slice(event.fact_key().0.as_bytes());
    push_field(&mut name, Some(&event.payment_id));
    push_field(&mut name, Some(&event.merchant_id));
    push_field(&mut name, Some(event.money.currency.code()));
    name.extend_from_slice(&event.money.amount.minor().to_be_bytes());
    match event.fee {
        None => name.push(0),
        Some(fee) => {
            name.push(1);
            name.extend_from_slice(&fee.minor().to_be_bytes());
        }
    }
    ContentDigest(Uuid::new_v5(&NAMESPACE, &name))
}

fn push_field(buf: &mut Vec<u8>, field: Option<&str>) {
    match field {
        None => buf.push(0),
        Some(s) => {
            buf.push(1);
            buf.extend_from_slice(&(s.len() as u64).to_be_bytes());
            buf.extend_from_slice(s.as_bytes());
        }
    }
}

/// A fact's unique key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FactKey(pub Uuid);

impl fmt::Display for FactKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for FactKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FactKey({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn id<'a>(psp: Psp, kind: EventKind, r: &'a str, o: Option<&'a str>) -> FactIdentity<'a> {
        FactIdentity { psp, kind, psp_reference: r, original_reference: o }
    }

    #[test]
    fn key_is_stable_across_releases() {
        // Pinned (computed independently with Python's uuid.uuid5 over the same encoding): a change here silently
        // re-keys every booked fact and breaks dedup against history.
        let k = id(Psp::Stripe, EventKind::Captured, "ch_3MmlLrLkdIwHu7ix0snN0B15", None).key();
        assert_eq!(k.0.get_version_num(), 5);
        assert_eq!(k.to_string(), "e1de53cb-eea1-5174-89b7-ab2fc8a908a6");
    }

    #[test]
    fn fields_cannot_bleed_into_each_other() {
        let a = id(Psp::Adyen, EventKind::Refunded, "AB", Some("C")).key();
        let b = id(Psp::Adyen, EventKind::Refunded, "A", Some("BC")).key();
        let c = id(Psp::Adyen, EventKind::Refunded, "ABC", None).key();
        let d = id(Psp::Adyen, EventKind::Refunded, "ABC", Some("")).key();
        let all = [a, b, c, d];
        for (i, x) in all.iter().enumerate() {
            for y in &all[i + 1..] {
                assert_ne!(x, y);
            }
        }
    }

    fn psp() -> impl Strategy<Value = Psp> {
        prop_oneof![Just(Psp::Stripe), Just(Psp::Adyen)]
    }

    fn kind() -> impl Strategy<Value = EventKind> {
        (0..EventKind::ALL.len()).prop_map(|i| EventKind::ALL[i])
    }

    type Owned = (Psp, EventKind, String, Option<String>);

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Distinct identities give distinct keys; equal identities give equal keys.
        #[test]
        fn distinct_facts_never_collide(
            facts in proptest::collection::vec(
                (psp(), kind(), "[A-Za-z0-9_:]{0,12}", proptest::option::of("[A-Za-z0-9_:]{0,6}")), 1..64)
        ) {
            let mut seen: HashMap<FactKey, Owned> = HashMap::new();
            for (p, k, r, o) in facts {
                let key = id(p, k, &r, o.as_deref()).key();
                if let Some(prev) = seen.get(&key) {
                    prop_assert_eq!(prev, &(p, k, r.clone(), o.clone()), "collision");
                }
                // Recomputing is deterministic.
                prop_assert_eq!(key, id(p, k, &r, o.as_deref()).key());
                seen.insert(key, (p, k, r, o));
            }
        }
    }
}
