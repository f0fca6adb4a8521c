//! What the warehouse must agree with (issue 14 §5): the ledger, per merchant × currency (captured, refunded and
//! charged-back totals), and the simulator's ground truth, per merchant × UTC day × currency. The ledger's side is
//! read from its *effects* — journal entries — and the warehouse's from its facts and marts: two derivations that
//! agree only if both interpret every fact alike.

use std::collections::BTreeMap;

/// Totals per (merchant, currency): captured (net of reversals), refunded (net of failures), charged back
/// (withdrawn net of returned), lost to disputes.
pub type Totals = BTreeMap<(String, String), [i64; 4]>;

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
            out.insert((r.get(0), r.get(1)), v);
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
