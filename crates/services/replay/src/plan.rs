//! The diff of a replay plan (issue 16 §2), pure: what the current posting rules say each fact in scope books,
//! against what the ledger holds for it, compared by a canonical hash per fact.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tally_domain::FactKey;

/// A journal as (account, currency, signed minor units), in a canonical order (sorted, equal legs summed, zero
/// legs dropped): two journals that move the same money compare equal however their entries were written.
pub type Legs = Vec<(String, String, i64)>;

pub fn canonical(entries: impl IntoIterator<Item = (String, String, i64)>) -> Legs {
    let mut sums: BTreeMap<(String, String), i64> = BTreeMap::new();
    for (a, c, m) in entries {
        *sums.entry((a, c)).or_default() += m;
    }
    sums.into_iter().filter(|(_, m)| *m != 0).map(|((a, c), m)| (a, c, m)).collect()
}

/// The canonical hash of a fact's journal (none: the fact posts nothing).
pub fn hash(legs: &Legs) -> String {
    let mut h = Sha256::new();
    for (a, c, m) in legs {
        h.update(format!("{a}\t{c}\t{m}\n").as_bytes());
    }
    hex::encode(h.finalize())
}

/// One fact whose books would change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub fact_key: FactKey,
    pub payment_id: String,
    pub kind: String,
    /// What the ledger holds (empty: no journal) and what the current rules post (empty: nothing).
    pub live: Legs,
    pub expected: Legs,
}

/// The diff: unchanged facts counted; the others listed, with the money impact per account × currency of making
/// the ledger what the rules say (expected − live).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diff {
    pub unchanged: u64,
    /// Booked with other entries than the current rules post.
    pub would_change: Vec<Change>,
    /// In the archive's scope, posting money, and not booked at all.
    pub missing: Vec<Change>,
    /// Booked in the ledger within the scope, but no archived record of the scope holds the fact.
    pub unexpected: Vec<Change>,
    pub impact: Vec<(String, String, i64)>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.would_change.is_empty() && self.missing.is_empty() && self.unexpected.is_empty()
    }
}

/// What one fact is on each side.
#[derive(Debug, Clone)]
pub struct Side {
    pub payment_id: String,
    pub kind: String,
    pub legs: Legs,
}

/// Compares the expected journals of the archived facts with the live ones. `live` holds every fact the ledger
/// booked within the scope (with its journal's legs, empty when it posted none); a fact the ledger never booked is
/// absent from it.
pub fn diff(expected: &BTreeMap<FactKey, Side>, live: &BTreeMap<FactKey, Side>) -> Diff {
    let change = |key: &FactKey, side: &Side, live: &Legs, expected: &Legs| Change {
        fact_key: *key,
        payment_id: side.payment_id.clone(),
        kind: side.kind.clone(),
        live: live.clone(),
        expected: expected.clone(),
    };
    let mut d = Diff::default();
    let mut impact: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut add = |legs: &Legs, sign: i64| {
        for (a, c, m) in legs {
            *impact.entry((a.clone(), c.clone())).or_default() += sign * m;
        }
    };
    for (key, e) in expected {
        match live.get(key) {
            Some(l) if l.legs == e.legs => d.unchanged += 1,
            Some(l) => {
                add(&e.legs, 1);
                add(&l.legs, -1);
                d.would_change.push(change(key, e, &l.legs, &e.legs));
            }
            // Never booked: a fact that posts nothing is no difference (the ledger keeps no journal for it either,
            // but its event-log row is missing: that is completeness recon's finding, not a replay's).
            None if e.legs.is_empty() => d.unchanged += 1,
            None => {
                add(&e.legs, 1);
                d.missing.push(change(key, e, &Vec::new(), &e.legs));
            }
        }
    }
    let expected_keys: BTreeSet<&FactKey> = expected.keys().collect();
    // A fact booked in scope that posts nothing is no difference either.
    for (key, l) in live.iter().filter(|(k, l)| !expected_keys.contains(k) && !l.legs.is_empty()) {
        add(&l.legs, -1);
        d.unexpected.push(change(key, l, &l.legs, &Vec::new()));
    }
    d.impact = impact.into_iter().filter(|(_, m)| *m != 0).map(|((a, c), m)| (a, c, m)).collect();
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(legs: &[(&str, i64)]) -> Side {
        Side {
            payment_id: "p".into(),
            kind: "captured".into(),
            legs: canonical(legs.iter().map(|(a, m)| (a.to_string(), "EUR".to_string(), *m))),
        }
    }

    #[test]
    fn canonical_legs_ignore_order_and_split_legs_and_the_diff_sorts_every_fact_into_one_place() {
        let a = canonical([("x".into(), "EUR".into(), 5), ("y".into(), "EUR".into(), -5)]);
        let b =
            canonical([("y".into(), "EUR".into(), -2), ("x".into(), "EUR".into(), 5), ("y".into(), "EUR".into(), -3)]);
        assert_eq!(a, b);
        assert_eq!(hash(&a), hash(&b));
        assert!(canonical([("x".into(), "EUR".into(), 5), ("x".into(), "EUR".into(), -5)]).is_empty());

        let k = |n: u128| FactKey(uuid::Uuid::from_u128(n));
        let right = side(&[("psp_receivable:stripe", 100), ("merchant_payable:m", -100)]);
        let backwards = side(&[("psp_receivable:stripe", -100), ("merchant_payable:m", 100)]);
        let expected =
            BTreeMap::from([(k(1), right.clone()), (k(2), right.clone()), (k(3), right.clone()), (k(5), side(&[]))]);
        let live = BTreeMap::from([(k(1), right.clone()), (k(2), backwards), (k(4), right.clone())]);
        let d = diff(&expected, &live);
        // 1 unchanged, 5 posts nothing and was not booked: no difference.
        assert_eq!(d.unchanged, 2);
        assert_eq!(d.would_change.iter().map(|c| c.fact_key).collect::<Vec<_>>(), [k(2)]);
        assert_eq!(d.missing.iter().map(|c| c.fact_key).collect::<Vec<_>>(), [k(3)]);
        assert_eq!(d.unexpected.iter().map(|c| c.fact_key).collect::<Vec<_>>(), [k(4)]);
        // Impact: +2×100 to fix 2, +100 to book 3, −100 to take 4 out.
        assert_eq!(
            d.impact,
            [
                ("merchant_payable:m".to_owned(), "EUR".to_owned(), -200),
                ("psp_receivable:stripe".to_owned(), "EUR".to_owned(), 200)
            ]
        );
        assert!(!d.is_empty());
        assert!(diff(&expected, &expected).would_change.is_empty());
    }
}
