//! What the warehouse must agree with (issue 14 §5): the ledger, per merchant × currency (captured, refunded and
//! charged-back totals), and the simulator's ground truth, per merchant × UTC day × currency. The ledger's side is
//! read from its *effects* — journal entries — and the warehouse's from its facts and marts: two derivations that
//! agree only if both interpret every fact alike.

use std::collections::BTreeMap;

/// Totals per (merchant, currency): captured (net of reversals), refunded (net of failures), charged back
/// (withdrawn net of returned), lost to disputes.
pub type Totals = BTreeMap<[String; 2], [i64; 4]>;

/// The ledger's totals for the facts that came through topics starting with `topic_prefix`: credits to the
/// merchant's payable by captures, debits to it by refunds, the merchant's dispute reserve, and the losses.
pub async fn ledger_totals(
    client: &impl deadpool_postgres::GenericClient,
    topic_prefix: &str,
) -> Result<Totals, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT l.merchant_id, e.currency,
                    sum(CASE WHEN e.account = 'merchant_payable:' || l.merchant_id AND l.kind IN ('captured', 'capture_reversed')
                             THEN -e.amount_minor ELSE 0 END)::bigint,
                    sum(CASE WHEN e.account = 'merchant_payable:' || l.merchant_id AND l.kind IN ('refunded', 'refund_failed')
                             THEN e.amount_minor ELSE 0 END)::bigint,
                    sum(CASE WHEN e.account = 'dispute_reserve:' || l.merchant_id
                              AND l.kind IN ('chargeback_opened', 'second_chargeback', 'chargeback_won', 'prearbitration_won')
                             THEN e.amount_minor ELSE 0 END)::bigint,
                    sum(CASE WHEN e.account = 'chargeback_losses' THEN e.amount_minor ELSE 0 END)::bigint
               FROM entries e JOIN event_log l ON l.fact_key = e.fact_key
              WHERE starts_with(l.topic, $1)
              GROUP BY 1, 2",
            &[&topic_prefix],
        )
        .await?;
    let mut out = Totals::new();
    for r in rows {
        let v = [r.get(2), r.get(3), r.get(4), r.get(5)];
        if v.iter().any(|x: &i64| *x != 0) {
            out.insert([r.get(0), r.get(1)], v);
        }
    }
    Ok(out)
}

/// The same totals from the warehouse's facts (run it with [`crate::query`]; `{prefix}` is replaced).
pub fn warehouse_totals_sql(topic_prefix: &str) -> String {
    format!(
        "SELECT merchant_id, currency,
                sum(CASE kind WHEN 'captured' THEN amount_minor WHEN 'capture_reversed' THEN -amount_minor ELSE 0 END)::BIGINT,
                sum(CASE kind WHEN 'refunded' THEN amount_minor WHEN 'refund_failed' THEN -amount_minor ELSE 0 END)::BIGINT,
                sum(CASE WHEN kind IN ('chargeback_opened', 'second_chargeback') THEN amount_minor
                         WHEN kind IN ('chargeback_won', 'prearbitration_won') THEN -amount_minor ELSE 0 END)::BIGINT,
                sum(CASE WHEN kind IN ('chargeback_lost', 'prearbitration_lost') THEN amount_minor ELSE 0 END)::BIGINT
           FROM fct_payment_events WHERE starts_with(topic, '{}')
          GROUP BY 1, 2",
        topic_prefix.replace('\'', "''")
    )
}

/// The daily mart's rows for the merchants in `merchants` (the run's), as (merchant, day, currency) →
/// [captured, refunded, charged back, lost].
pub fn mart_daily_sql(topic_prefix: &str) -> String {
    format!(
        "SELECT m.merchant_id, CAST(m.day AS VARCHAR), m.currency, m.captured_minor, m.refunded_minor,
                m.chargeback_minor, m.chargeback_lost_minor
           FROM mart_merchant_daily m
          WHERE m.merchant_id IN (SELECT DISTINCT merchant_id FROM fct_payment_events WHERE starts_with(topic, '{}'))",
        topic_prefix.replace('\'', "''")
    )
}

/// Rows of an answer as totals keyed by its first `key` columns (text), then four integers.
pub fn keyed<const K: usize>(rows: &[Vec<serde_json::Value>]) -> BTreeMap<[String; K], [i64; 4]> {
    let mut out = BTreeMap::new();
    for r in rows {
        let key: [String; K] = std::array::from_fn(|i| r[i].as_str().unwrap_or_default().to_owned());
        let v: [i64; 4] = std::array::from_fn(|i| r[K + i].as_i64().unwrap_or(i64::MIN));
        if v.iter().any(|x| *x != 0) {
            out.insert(key, v);
        }
    }
    out
}

/// One key where two totals differ: the key, the left and the right figures (None: absent on that side).
pub type Difference<K> = (K, Option<[i64; 4]>, Option<[i64; 4]>);

/// Where two keyed totals differ, at most `limit` of them, and how many in all.
pub fn differences<K: Ord + Clone>(
    left: &BTreeMap<K, [i64; 4]>,
    right: &BTreeMap<K, [i64; 4]>,
    limit: usize,
) -> (usize, Vec<Difference<K>>) {
    let mut keys: Vec<&K> = left.keys().chain(right.keys()).collect();
    keys.sort();
    keys.dedup();
    let diffs: Vec<_> = keys
        .into_iter()
        .filter(|k| left.get(*k) != right.get(*k))
        .map(|k| ((*k).clone(), left.get(k).copied(), right.get(k).copied()))
        .collect();
    (diffs.len(), diffs.into_iter().take(limit).collect())
}

/// Per partition the sink owns: its stored next offset, and over every offset it accounted for (a row, a duplicate
/// or a reject) how many there are, how many distinct, the least and the greatest.
pub fn accounting_sql(group_id: &str) -> String {
    format!(
        "WITH accounted AS (
             SELECT topic, kafka_partition, kafka_offset FROM fct_payment_events
             UNION ALL SELECT topic, kafka_partition, kafka_offset FROM wh_duplicates
             UNION ALL SELECT topic, kafka_partition, kafka_offset FROM wh_rejects),
         per AS (
             SELECT topic, kafka_partition, count(*) AS n, count(DISTINCT kafka_offset) AS d,
                    min(kafka_offset) AS lo, max(kafka_offset) AS hi
               FROM accounted GROUP BY ALL)
         SELECT o.topic, o.kafka_partition, o.next_offset, coalesce(p.n, 0), coalesce(p.d, 0), p.lo, p.hi
           FROM wh_offsets o LEFT JOIN per p ON p.topic = o.topic AND p.kafka_partition = o.kafka_partition
          WHERE o.group_id = '{}'
          ORDER BY 1, 2",
        group_id.replace('\'', "''")
    )
}

/// What the accounting rows say is wrong, per partition: offsets accounted twice, offsets below the stored position
/// not accounted for, offsets accounted beyond it. Empty: every consumed offset is accounted for exactly once.
pub fn accounting_findings(rows: &[Vec<serde_json::Value>]) -> Vec<String> {
    let mut out = Vec::new();
    for r in rows {
        let (topic, partition) = (r[0].as_str().unwrap_or("?"), r[1].as_i64().unwrap_or(-1));
        let next = r[2].as_i64().unwrap_or(0);
        let (n, d) = (r[3].as_i64().unwrap_or(0), r[4].as_i64().unwrap_or(0));
        let (lo, hi) = (r[5].as_i64(), r[6].as_i64());
        if n != d {
            out.push(format!("{topic}[{partition}]: {} offsets accounted for more than once", n - d));
        }
        if d < next && lo.is_none_or(|lo| lo == 0) {
            out.push(format!("{topic}[{partition}]: {} of the {next} consumed offsets not accounted for", next - d));
        } else if lo.is_some_and(|lo| lo > 0) {
            // A partition whose log starts later (retention) accounts from its low watermark: only gaps inside count.
            let span = hi.unwrap_or(-1) - lo.unwrap_or(0) + 1;
            if d < span {
                out.push(format!("{topic}[{partition}]: {} offsets missing inside {lo:?}..={hi:?}", span - d));
            }
        }
        if hi.is_some_and(|hi| hi >= next) {
            out.push(format!(
                "{topic}[{partition}]: offsets accounted up to {hi:?}, beyond the stored position {next}"
            ));
        }
    }
    out
}

/// The archive's per-range checksum (`tally_archive::checksum`: records, facts, Σ first 8 bytes of the fact key XOR
/// the offset) computed over what the warehouse accounted for in each range: rows and duplicates are facts, rejects
/// records. Equal figures mean the warehouse holds, offset for offset, the facts the archive holds.
pub fn range_sums_sql(ranges: &[(String, i32, i64, i64)]) -> String {
    let values = ranges
        .iter()
        .map(|(t, p, lo, hi)| format!("('{}', {p}, {lo}, {hi})", t.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "WITH ranges(topic, kafka_partition, lo, hi) AS (VALUES {values}),
         accounted AS (
             SELECT topic, kafka_partition, kafka_offset, fact_key FROM fct_payment_events
             UNION ALL SELECT topic, kafka_partition, kafka_offset, fact_key FROM wh_duplicates
             UNION ALL SELECT topic, kafka_partition, kafka_offset, NULL FROM wh_rejects),
         prefixed AS (
             SELECT *, CAST(('0x' || substr(replace(fact_key, '-', ''), 1, 16)) AS UBIGINT) AS u FROM accounted),
         valued AS (
             SELECT *, xor(CAST(CASE WHEN u >= 9223372036854775808 THEN u::HUGEINT - 18446744073709551616
                                     ELSE u::HUGEINT END AS BIGINT), kafka_offset) AS v
               FROM prefixed)
         SELECT r.topic, r.kafka_partition, r.lo, r.hi, count(a.kafka_offset), count(a.fact_key),
                CAST(coalesce(sum(CAST(a.v AS HUGEINT)), 0) AS VARCHAR)
           FROM ranges r LEFT JOIN valued a
             ON a.topic = r.topic AND a.kafka_partition = r.kafka_partition AND a.kafka_offset >= r.lo
            AND a.kafka_offset < r.hi
          GROUP BY ALL ORDER BY 1, 2, 3"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tally_duckdb::duckdb;

    #[test]
    fn keyed_rows_and_their_differences() {
        let a = keyed::<2>(&[vec![json!("m1"), json!("EUR"), json!(5), json!(1), json!(0), json!(0)]]);
        let b = keyed::<2>(&[
            vec![json!("m1"), json!("EUR"), json!(5), json!(2), json!(0), json!(0)],
            vec![json!("m2"), json!("USD"), json!(0), json!(0), json!(0), json!(0)],
        ]);
        let (n, d) = differences(&a, &b, 10);
        assert_eq!(n, 1, "all-zero rows are no rows");
        assert_eq!(d[0].1, Some([5, 1, 0, 0]));
        assert_eq!(d[0].2, Some([5, 2, 0, 0]));
        assert_eq!(differences(&a, &a, 10).0, 0);
    }

    #[test]
    fn the_range_checksum_in_sql_is_the_archives() {
        // The archive's value for a key and an offset: the key's first 8 bytes (big-endian, signed) XOR the offset.
        let keys = ["ffeeddcc-bbaa-9988-7766-554433221100", "00112233-4455-6677-8899-aabbccddeeff"];
        let expected: i128 = keys
            .iter()
            .zip([5i64, 7])
            .map(|(k, o)| {
                let hex = k.replace('-', "");
                let prefix = u64::from_str_radix(&hex[..16], 16).unwrap() as i64;
                i128::from(prefix ^ o)
            })
            .sum();
        let conn = duckdb::Connection::open_in_memory().unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE fct_payment_events (topic VARCHAR, kafka_partition INTEGER, kafka_offset BIGINT, fact_key VARCHAR);
             CREATE TABLE wh_duplicates AS SELECT * FROM fct_payment_events;
             CREATE TABLE wh_rejects (topic VARCHAR, kafka_partition INTEGER, kafka_offset BIGINT);
             INSERT INTO fct_payment_events VALUES ('t', 0, 5, '{}');
             INSERT INTO wh_duplicates VALUES ('t', 0, 7, '{}');
             INSERT INTO wh_rejects VALUES ('t', 0, 6), ('t', 0, 9);",
            keys[0], keys[1]
        ))
        .unwrap();
        let sql = range_sums_sql(&[("t".into(), 0, 5, 8), ("t".into(), 0, 8, 10), ("t".into(), 1, 0, 3)]);
        let a = crate::query::run(&conn, &sql, std::time::Duration::from_secs(5), 10).unwrap();
        assert_eq!(a.rows[0][4..], [json!(3), json!(2), json!(expected.to_string())]);
        assert_eq!(a.rows[1][4..], [json!(1), json!(0), json!("0")]);
        assert_eq!(a.rows[2][4..], [json!(0), json!(0), json!("0")], "a range with nothing: zeros, not missing");
    }

    #[test]
    fn accounting_finds_twice_missing_and_beyond() {
        let row = |next: i64, n: i64, d: i64, lo: Option<i64>, hi: Option<i64>| {
            vec![json!("t"), json!(0), json!(next), json!(n), json!(d), json!(lo), json!(hi)]
        };
        assert!(accounting_findings(&[row(10, 10, 10, Some(0), Some(9))]).is_empty());
        assert!(accounting_findings(&[row(0, 0, 0, None, None)]).is_empty(), "nothing consumed, nothing owed");
        let f = accounting_findings(&[row(10, 11, 10, Some(0), Some(9))]);
        assert!(f[0].contains("1 offsets accounted for more than once"), "{f:?}");
        let f = accounting_findings(&[row(10, 8, 8, Some(0), Some(9))]);
        assert!(f[0].contains("2 of the 10"), "{f:?}");
        let f = accounting_findings(&[row(10, 11, 11, Some(0), Some(10))]);
        assert!(f.iter().any(|x| x.contains("beyond")), "{f:?}");
    }
}
