//! The per-range checksum that lets recon compare an offset range of the archive with the same range of the ledger
//! without moving its rows: how many records, how many of them are facts, and the exact sum over the facts of the
//! first 8 bytes of the fact key XOR the offset. A missing, extra, different or misplaced fact changes the figures;
//! PostgreSQL computes the same sum with [`ROW_SQL`]. A checksum against accidents, not a cryptographic commitment.

use uuid::Uuid;

/// The first 8 bytes of a fact key as a signed big-endian integer.
pub fn key_prefix(key: &Uuid) -> i64 {
    let b = key.as_bytes();
    i64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// What one fact at one offset adds to the sum.
pub fn row_value(key: &Uuid, offset: i64) -> i64 {
    key_prefix(key) ^ offset
}

/// The SQL expression of [`row_value`] for a uuid column `k` at offset `o`.
pub const ROW_SQL: &str = "(('x' || encode(substring(uuid_send(k) from 1 for 8), 'hex'))::bit(64)::bigint # o)";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RangeSum {
    pub records: i64,
    pub facts: i64,
    /// Exact (no wrap-around): i128 holds the sum of 2^64 records.
    pub key_sum: i128,
}

impl RangeSum {
    pub fn add(&mut self, offset: i64, key: Option<Uuid>) {
        self.records += 1;
        if let Some(k) = key {
            self.facts += 1;
            self.key_sum += i128::from(row_value(&k, offset));
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
        x.add(0, Some(a));
        x.add(1, None);
        let mut y = RangeSum::default();
        y.add(0, Some(b));
        y.add(1, None);
        assert_eq!((x.records, x.facts), (y.records, y.facts));
        assert_ne!(x, y);
    }

    #[test]
    fn the_same_facts_at_swapped_offsets_change_the_sum() {
        let (a, b) = (Uuid::from_u128(1 << 64), Uuid::from_u128(2 << 64));
        let mut x = RangeSum::default();
        x.add(10, Some(a));
        x.add(11, Some(b));
        let mut y = RangeSum::default();
        y.add(10, Some(b));
        y.add(11, Some(a));
        assert_ne!(x, y);
    }
}
