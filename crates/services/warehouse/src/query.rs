//! `tally warehouse query`: read-only SQL over the warehouse, with a time limit. DuckDB lets one process write a
//! file, so while the sink runs it serves queries itself (`POST /query` on its listener, on a second connection to
//! the same database); when it does not, the file is opened read-only.
//!
//! Read-only is enforced twice: only statements that read are accepted (SELECT, WITH, FROM, DESCRIBE, SHOW,
//! SUMMARIZE, EXPLAIN, VALUES, TABLE), and every query runs in a transaction that is rolled back.

use std::path::Path;
use std::time::Duration;
use tally_duckdb::duckdb;

use duckdb::types::{TimeUnit, Value};
use duckdb::{AccessMode, Config, Connection};
use serde::{Deserialize, Serialize};

/// A query's answer: column names, then rows of JSON values (money stays integer minor units).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<serde_json::Value>>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(
        "only reading statements are served (SELECT, WITH, FROM, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN, VALUES, TABLE)"
    )]
    NotReadOnly,
    #[error("one statement at a time")]
    Several,
    #[error("stopped after {0:?} (`[warehouse] query_timeout_ms`)")]
    Timeout(Duration),
    #[error("{0}")]
    Duck(#[from] duckdb::Error),
}

const READING: &[&str] = &["select", "with", "from", "describe", "show", "summarize", "explain", "values", "table"];

fn check(sql: &str) -> Result<&str, QueryError> {
    let sql = sql.trim().trim_end_matches(';').trim();
    let first = sql.split(|c: char| !c.is_ascii_alphabetic()).next().unwrap_or("").to_ascii_lowercase();
    if !READING.contains(&first.as_str()) {
        return Err(QueryError::NotReadOnly);
    }
    // A `;` outside quotes would start a second statement.
    let (mut quote, mut several) = (None, false);
    for c in sql.chars() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, ';') => several = true,
            _ => {}
        }
    }
    if several {
        return Err(QueryError::Several);
    }
    Ok(sql)
}

/// Opens the file read-only (when no sink holds it).
pub fn open_read_only(path: &Path) -> Result<Connection, QueryError> {
    Ok(Connection::open_with_flags(path, Config::default().access_mode(AccessMode::ReadOnly)?)?)
}

/// Runs one reading statement on `conn`, stopped after `timeout`, in a transaction that is rolled back.
pub fn run(conn: &Connection, sql: &str, timeout: Duration, max_rows: usize) -> Result<Answer, QueryError> {
    let sql = check(sql)?;
    let interrupt = conn.interrupt_handle();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let timer = std::thread::spawn(move || {
        if done_rx.recv_timeout(timeout).is_err() {
            interrupt.interrupt();
            return true;
        }
        false
    });
    conn.execute_batch("BEGIN TRANSACTION READ ONLY").or_else(|_| conn.execute_batch("BEGIN TRANSACTION"))?;
    let result = (|| -> Result<Answer, duckdb::Error> {
        let mut stmt = conn.prepare(sql)?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        let mut columns = Vec::new();
        while let Some(row) = rows.next()? {
            if columns.is_empty() {
                columns = row.as_ref().column_names();
            }
            if out.len() >= max_rows {
                break;
            }
            let n = row.as_ref().column_count();
            out.push((0..n).map(|i| row.get::<_, Value>(i).map(json)).collect::<Result<Vec<_>, _>>()?);
        }
        if columns.is_empty() {
            columns = rows.as_ref().map(|s| s.column_names()).unwrap_or_default();
        }
        Ok(Answer { columns, rows: out })
    })();
    let _ = conn.execute_batch("ROLLBACK");
    let _ = done_tx.send(());
    let timed_out = timer.join().unwrap_or(false);
    match result {
        Err(_) if timed_out => Err(QueryError::Timeout(timeout)),
        other => Ok(other?),
    }
}

pub(crate) fn json(v: Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Null => J::Null,
        Value::Boolean(b) => J::Bool(b),
        Value::TinyInt(i) => i.into(),
        Value::SmallInt(i) => i.into(),
        Value::Int(i) => i.into(),
        Value::BigInt(i) => i.into(),
        Value::UTinyInt(i) => i.into(),
        Value::USmallInt(i) => i.into(),
        Value::UInt(i) => i.into(),
        Value::UBigInt(i) => i.into(),
        // Sums of minor units come back as HUGEINT: exact as a string when they do not fit an i64.
        Value::HugeInt(i) => i64::try_from(i).map_or_else(|_| J::String(i.to_string()), Into::into),
        Value::Float(f) => serde_json::Number::from_f64(f64::from(f)).map_or(J::Null, J::Number),
        Value::Double(f) => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
        Value::Decimal(d) => J::String(d.to_string()),
        Value::Text(s) => J::String(s),
        Value::Date32(d) => J::String(crate::land::date_of_days(d).to_string()),
        Value::Timestamp(unit, t) => {
            let micros = match unit {
                TimeUnit::Second => t.saturating_mul(1_000_000),
                TimeUnit::Millisecond => t.saturating_mul(1000),
                TimeUnit::Microsecond => t,
                TimeUnit::Nanosecond => t / 1000,
            };
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
                .ok()
                .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                .map_or(J::Null, J::String)
        }
        Value::Blob(b) => J::String(hex::encode(b)),
        other => J::String(format!("{other:?}")),
    }
}

/// The answer as an aligned text table, CSV or JSON.
pub fn render(answer: &Answer, format: &str) -> String {
    let cell = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    match format {
        "json" => serde_json::to_string_pretty(answer).unwrap_or_default(),
        "csv" => {
            let quote = |s: String| {
                if s.contains([',', '"', '\n']) {
                    format!("\"{}\"", s.replace('"', "\"\""))
                } else {
                    s
                }
            };
            let mut out = answer.columns.iter().cloned().map(quote).collect::<Vec<_>>().join(",") + "\n";
            for row in &answer.rows {
                out += &(row.iter().map(|v| quote(cell(v))).collect::<Vec<_>>().join(",") + "\n");
            }
            out
        }
        _ => {
            let cells: Vec<Vec<String>> = answer.rows.iter().map(|r| r.iter().map(cell).collect()).collect();
            let widths: Vec<usize> = (0..answer.columns.len())
                .map(|i| cells.iter().map(|r| r[i].len()).chain([answer.columns[i].len()]).max().unwrap_or(0))
                .collect();
            let line = |r: &[String]| {
                r.iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_owned()
            };
            let mut out = line(&answer.columns) + "\n";
            out += &(widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  ") + "\n");
            for r in &cells {
                out += &(line(r) + "\n");
            }
            out + &format!("({} rows)\n", answer.rows.len())
        }
    }
}

/// Asks a running sink (`[warehouse] listen`) to run a query. `Ok(None)`: no sink listens there.
pub async fn ask_sink(listen: &str, sql: &str, max_rows: usize, timeout: Duration) -> Result<Option<Answer>, String> {
    let body = serde_json::json!({ "sql": sql, "max_rows": max_rows }).to_string();
    let sent = reqwest::Client::new()
        .post(format!("http://{listen}/query"))
        .header("content-type", "application/json")
        .body(body)
        .timeout(timeout + Duration::from_secs(5))
        .send()
        .await;
    let response = match sent {
        Ok(r) => r,
        Err(e) if e.is_connect() => return Ok(None),
        Err(e) => return Err(format!("asking the warehouse sink at {listen}: {e}")),
    };
    let status = response.status();
    let text = response.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        return Err(v["error"].as_str().unwrap_or(&text).to_owned());
    }
    serde_json::from_str(&text).map(Some).map_err(|e| format!("the sink's answer: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_single_reading_statements_pass() {
        for ok in ["SELECT 1", "  with x as (select 1) select * from x;", "FROM fct_payment_events", "select ';'"] {
            assert!(check(ok).is_ok(), "{ok}");
        }
        for bad in ["DELETE FROM fct_payment_events", "insert into t values (1)", "COPY t TO 'x'", "ATTACH 'x'", ""] {
            assert!(matches!(check(bad), Err(QueryError::NotReadOnly)), "{bad}");
        }
        assert!(matches!(check("select 1; drop table t"), Err(QueryError::Several)));
    }

    #[test]
    fn a_query_answers_and_writes_are_refused_even_inside_a_select() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (a BIGINT, d DATE); INSERT INTO t VALUES (1, DATE '2026-06-01')").unwrap();
        let a = run(&conn, "SELECT a, d, sum(a) AS s FROM t GROUP BY ALL", Duration::from_secs(5), 10).unwrap();
        assert_eq!(a.columns, ["a", "d", "s"]);
        assert_eq!(a.rows, vec![vec![serde_json::json!(1), serde_json::json!("2026-06-01"), serde_json::json!(1)]]);
        assert!(render(&a, "table").contains("2026-06-01"));
        assert_eq!(render(&a, "csv"), "a,d,s\n1,2026-06-01,1\n");
    }

    #[test]
    fn a_long_query_is_stopped_at_its_limit() {
        let conn = Connection::open_in_memory().unwrap();
        let slow = "SELECT count(*) FROM range(100000000) a, range(100000) b WHERE a.range * b.range = -1";
        let e = run(&conn, slow, Duration::from_millis(200), 10).unwrap_err();
        assert!(matches!(e, QueryError::Timeout(_)), "{e}");
        // The connection still answers afterwards.
        assert!(run(&conn, "SELECT 1", Duration::from_secs(5), 10).is_ok());
    }
}
