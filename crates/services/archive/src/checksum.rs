//! The per-range checksum that lets recon compare an offset range of the archive with the same range of the ledger
//! without moving its rows: how many records, how many of them are facts, and the exact sum over the facts of the
//! first 8 bytes of the fact key XOR the offset. A missing, extra, different or misplaced fact changes the figures;
//! PostgreSQL computes the same sum with [`ROW_SQL`]. Beside it, the money sum ([`money_value`], [`MONEY_SQL`]) ties
//! the amount, fee and currency the archive holds to what the ledger booked for the same facts (issue 13: a ledger
//! that books the right facts with the wrong money passes the key sum). Checksums against accidents, not
//! cryptographic commitments.

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

/// The money one fact moves, as the archive's columns and the ledger's event log both state it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct FactMoney {
    pub amount_minor: i64,
    /// None and zero count alike (no fee moves no money).
    pub fee_minor: Option<i64>,
    /// ISO 4217 alphabetic code.
    pub currency: String,
}

impl std::fmt::Display for FactMoney {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.amount_minor, self.currency)?;
        match self.fee_minor {
            Some(fee) => write!(f, " (fee {fee})"),
            None => Ok(()),
        }
    }
}

/// The currency code's three bytes as an integer (`EUR` = 0x455552).
fn currency_number(code: &str) -> i64 {
    code.bytes().take(3).fold(0i64, |n, b| (n << 8) | i64::from(b))
}

/// What one fact's money at one offset adds to the money sum: amount, fee and currency each XOR the offset, weighted
/// 1, 2, 3 (so that amounts moved between offsets, or an amount turned into a fee, change the sum).
pub fn money_value(offset: i64, money: &FactMoney) -> i128 {
    i128::from(money.amount_minor ^ offset)
        + 2 * i128::from(money.fee_minor.unwrap_or(0) ^ offset)
        + 3 * i128::from(currency_number(&money.currency) ^ offset)
}

/// The SQL expression of [`money_value`] for columns amount `a`, fee `f`, currency `c` at offset `o` (numeric: exact).
pub const MONEY_SQL: &str = "((a # o)::numeric + 2 * (coalesce(f, 0) # o)::numeric
    + 3 * ((((get_byte(convert_to(c, 'UTF8'), 0)::bigint << 16) | (get_byte(convert_to(c, 'UTF8'), 1)::bigint << 8)
            | get_byte(convert_to(c, 'UTF8'), 2)::bigint) # o)::numeric))";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RangeSum {
    pub records: i64,
    pub facts: i64,
    /// Exact (no wrap-around): i128 holds the sum of 2^64 records.
    pub key_sum: i128,
    /// Σ [`money_value`] over the facts.
    pub money_sum: i128,
}

impl RangeSum {
    pub fn add(&mut self, offset: i64, fact: Option<(Uuid, &FactMoney)>) {
        self.records += 1;
        if let Some((k, money)) = fact {
            self.facts += 1;
            self.key_sum += i128::from(row_value(&k, offset));
            self.money_sum += money_value(offset, money);
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

    fn eur(amount_minor: i64, fee_minor: Option<i64>) -> FactMoney {
        FactMoney { amount_minor, fee_minor, currency: "EUR".into() }
    }

    #[test]
    fn currency_is_its_three_bytes() {
        assert_eq!(currency_number("EUR"), 0x45_55_52);
        assert_ne!(
            money_value(0, &eur(1, None)),
            money_value(0, &FactMoney { currency: "USD".into(), ..eur(1, None) })
        );
    }

    #[test]
    fn other_money_for_the_same_facts_changes_only_the_money_sum() {
        let (a, b) = (Uuid::from_u128(1 << 64), Uuid::from_u128(2 << 64));
        let sum = |moneys: [FactMoney; 2]| {
            let mut x = RangeSum::default();
            x.add(10, Some((a, &moneys[0])));
            x.add(11, Some((b, &moneys[1])));
            x
        };
        let booked = sum([eur(1000, None), eur(250, Some(3))]);
        for wrong in [
            [eur(1001, None), eur(250, Some(3))],
            [eur(250, Some(3)), eur(1000, None)],
            [eur(1000, None), eur(253, None)],
            [eur(1000, None), FactMoney { currency: "USD".into(), ..eur(250, Some(3)) }],
        ] {
            let other = sum(wrong.clone());
            assert_eq!((other.records, other.facts, other.key_sum), (booked.records, booked.facts, booked.key_sum));
            assert_ne!(other.money_sum, booked.money_sum, "{wrong:?}");
        }
    }

    #[test]
    fn a_different_fact_changes_the_sum() {
        let (a, b) = (Uuid::from_u128(1 << 64), Uuid::from_u128(2 << 64));
        let mut x = RangeSum::default();
        x.add(0, Some((a, &eur(1, None))));
        x.add(1, None);
        let mut y = RangeSum::default();
        y.add(0, Some((b, &eur(1, None))));
        y.add(1, None);
        assert_eq!((x.records, x.facts), (y.records, y.facts));
        assert_ne!(x.key_sum, y.key_sum);
    }

    #[test]
    fn the_same_facts_at_swapped_offsets_change_the_sum() {
        let (a, b) = (Uuid::from_u128(1 << 64), Uuid::from_u128(2 << 64));
        let mut x = RangeSum::default();
        let m = eur(1, None);
        x.add(10, Some((a, &m)));
        x.add(11, Some((b, &m)));
        let mut y = RangeSum::default();
        y.add(10, Some((b, &m)));
        y.add(11, Some((a, &m)));
        assert_ne!(x.key_sum, y.key_sum);
    }
}
