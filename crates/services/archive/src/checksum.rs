//! The per-range checksum that lets recon compare an offset range of the archive with the same range of the ledger
//! without moving its rows: how many records, how many of them are facts, and the exact sum of the first 8 bytes of
//! their fact keys. A missing, extra or different fact changes the figures; PostgreSQL computes the same sum with
//! [`KEY_SQL`]. It is a checksum against accidents, not a cryptographic commitment.

use uuid::Uuid;

/// The first 8 bytes of a fact key as a signed big-endian integer.
pub fn key_prefix(key: &Uuid) -> i64 {
    let b = key.as_bytes();
    i64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// The SQL expression of [`key_prefix`] for a uuid column named `k`.
pub const KEY_SQL: &str = "('x' || encode(substring(uuid_send(k) from 1 for 8), 'hex'))::bit(64)::bigint";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RangeSum {
    pub records: i64,
    pub facts: i64,
    /// Exact (no wrap-around): i128 holds the sum of 2^64 records.
    pub key_sum: i128,
}

impl RangeSum {
    pub fn add(&mut self, key: Option<Uuid>) {
        self.records += 1;
        if let Some(k) = key {
            self.facts += 1;
            self.key_sum += i128::from(key_prefix(&k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_big_endian_signed() {
        let k = Uuid::parse_str("ffffffff-ffff-fffe-0000-000000000000").unwrap();
        assert_eq!(key_prefix(&k), -2);
        let k = Uuid::parse_str("00000000-0000-0102-ffff-ffffffffffff").unwrap();
        assert_eq!(key_prefix(&k), 258);
    }

    #[test]
    fn a_different_fact_changes_the_sum() {
        let (a, b) = (Uuid::from_u128(1 << 64), Uuid::from_u128(2 << 64));
        let mut x = RangeSum::default();
        x.add(Some(a));
        x.add(None);
        let mut y = RangeSum::default();
        y.add(Some(b));
        y.add(None);
        assert_eq!((x.records, x.facts), (y.records, y.facts));
        assert_ne!(x, y);
    }
}
