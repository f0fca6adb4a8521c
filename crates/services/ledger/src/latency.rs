//! Source→ledger latency of booked facts: from each fact's `received_at` to the commit of the transaction that
//! booked it. The commit time is PostgreSQL's own (`pg_xact_commit_timestamp` of the event-log row's `xmin`,
//! recorded when `track_commit_timestamp = on`, which `scripts/up.sh` sets); `booked_at` is the transaction's start
//! (`now()`), which leaves the batch's writes and its commit out (issue 13, item 5), so it is only the fallback on a
//! server without commit timestamps, and said so.

use deadpool_postgres::Pool;

use crate::StoreError;

/// Percentiles in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub facts: i64,
    /// True: measured to the commit; false: to the transaction's start (the server has no commit timestamps).
    pub to_commit: bool,
    /// p50 / p95 / p99 to `booked_at` (the transaction's start), beside it: what the figures were before issue 13.
    pub to_start: [f64; 3],
}

impl Latency {
    /// How the figures were measured, for a report line.
    pub fn basis(&self) -> &'static str {
        if self.to_commit {
            "received_at → commit"
        } else {
            "received_at → transaction start (track_commit_timestamp is off: excludes the batch's writes and commit)"
        }
    }
}

/// The latency of the event-log rows whose payment ids are in `payments`, or whose payment id matches `like` (None
/// if no row matches).
pub async fn booking_latency(pool: &Pool, payments: Filter<'_>) -> Result<Option<Latency>, StoreError> {
    let client = pool.get().await?;
    let on: String = client.query_one("SHOW track_commit_timestamp", &[]).await?.get(0);
    let to_commit = on == "on";
    let booked = if to_commit { "pg_xact_commit_timestamp(xmin)" } else { "booked_at" };
    let (condition, param): (&str, &(dyn tokio_postgres::types::ToSql + Sync)) = match &payments {
        Filter::Ids(ids) => ("payment_id = ANY($1)", ids),
        Filter::Like(pattern) => ("payment_id LIKE $1", pattern),
    };
    let row = client
        .query_one(
            &format!(
                "SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP
                        (ORDER BY extract(epoch FROM {booked} - received_at)), count(*),
                        percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP
                        (ORDER BY extract(epoch FROM booked_at - received_at))
                   FROM event_log WHERE {condition}"
            ),
            &[param],
        )
        .await?;
    let facts: i64 = row.get(1);
    let p: Option<Vec<f64>> = row.get(0);
    let s: Option<Vec<f64>> = row.get(2);
    Ok(match (p.as_deref(), s.as_deref()) {
        (Some([p50, p95, p99]), Some([s50, s95, s99])) if facts > 0 => {
            Some(Latency { p50: *p50, p95: *p95, p99: *p99, facts, to_commit, to_start: [*s50, *s95, *s99] })
        }
        _ => None,
    })
}

/// Which facts.
pub enum Filter<'a> {
    Ids(&'a [String]),
    Like(&'a str),
}
