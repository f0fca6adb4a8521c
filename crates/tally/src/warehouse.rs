//! `tally warehouse query "SQL"`: read-only SQL over the warehouse. While `tally sink warehouse` runs it holds the
//! file (DuckDB: one writing process), so the query goes to its `/query`; otherwise the file is opened read-only.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Subcommand;
use tally_warehouse::query::{self, Answer};
use tally_warehouse::reference::Loaded;

use crate::config::Config;

#[derive(Subcommand)]
pub enum WarehouseCommand {
    /// One reading statement (SELECT, WITH, FROM, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN …), stopped after
    /// `[warehouse] query_timeout_ms`.
    Query {
        sql: String,
        #[arg(long, default_value = "table", value_parser = ["table", "csv", "json"])]
        format: String,
        /// Rows shown at most.
        #[arg(long, default_value_t = 10_000)]
        max_rows: usize,
    },
}

pub fn run(cmd: WarehouseCommand, config: &Config) -> Result<ExitCode> {
    let WarehouseCommand::Query { sql, format, max_rows } = cmd;
    let answer = ask(config, &sql, max_rows)?;
    print!("{}", query::render(&answer, &format));
    Ok(ExitCode::SUCCESS)
}

/// Asks the running sink, or the file when no sink holds it.
pub fn ask(config: &Config, sql: &str, max_rows: usize) -> Result<Answer> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(ask_any(config, sql, max_rows))?.with_context(|| {
        format!("no warehouse at {} (run `tally sink warehouse` first)", config.warehouse.path.display())
    })
}

/// The running sink's answer, or the file's (read-only) when no sink listens; None when there is neither.
async fn ask_any(config: &Config, sql: &str, max_rows: usize) -> Result<Option<Answer>> {
    let w = &config.warehouse;
    let timeout = Duration::from_millis(w.query_timeout_ms);
    if let Some(answer) = query::ask_sink(&w.listen, sql, max_rows, timeout).await.map_err(anyhow::Error::msg)? {
        return Ok(Some(answer));
    }
    if !w.path.exists() {
        return Ok(None);
    }
    let (path, sql) = (w.path.clone(), sql.to_owned());
    tokio::task::spawn_blocking(move || {
        let conn = query::open_read_only(&path).with_context(|| format!("opening {} read-only", path.display()))?;
        Ok(Some(query::run(&conn, &sql, timeout, max_rows)?))
    })
    .await?
}

/// Per merchant × currency, the ledger's totals (from its journal entries) against the warehouse's (`rows` of
/// `proof::warehouse_totals_sql`): how many keys the ledger has, how many differ, the first few that do.
async fn ledger_agreement(
    config: &Config,
    pool: &deadpool_postgres::Pool,
    rows: &[Vec<serde_json::Value>],
    limit: usize,
) -> Result<(usize, usize, Vec<tally_warehouse::proof::Difference<[String; 2]>>)> {
    use tally_warehouse::proof;
    let ledger = proof::ledger_totals(&pool.get().await?, &config.kafka.topic_prefix).await?;
    let (wrong, first) = proof::differences(&ledger, &proof::keyed::<2>(rows), limit);
    Ok((ledger.len(), wrong, first))
}

async fn ask_running(config: &Config, sql: &str) -> Result<Answer> {
    let w = &config.warehouse;
    query::ask_sink(&w.listen, sql, 1_000_000, Duration::from_millis(w.query_timeout_ms))
        .await
        .map_err(anyhow::Error::msg)?
        .with_context(|| format!("no warehouse sink answers at {}", w.listen))
}

/// Waits until the running warehouse sink has consumed every lifecycle topic to its end (true), or `timeout`.
pub async fn wait_for_sink(config: &Config, timeout: Duration) -> Result<bool> {
    let deadline = std::time::Instant::now() + timeout;
    let mut ends = std::collections::BTreeMap::new();
    for name in tally_kafka::LIFECYCLE_TOPICS {
        let (brokers, topic) = (config.kafka.brokers.clone(), config.kafka.topic(name));
        let t = topic.clone();
        let marks = tokio::task::spawn_blocking(move || tally_kafka::watermarks(&brokers, &t, Duration::from_secs(10)))
            .await??
            .unwrap_or_default();
        for m in marks {
            ends.insert((topic.clone(), m.partition), m.high);
        }
    }
    let group = config.warehouse.group_id.replace('\'', "''");
    let w = &config.warehouse;
    loop {
        // A sink still starting (reading its reference data) does not answer yet: not caught up, not an error.
        let sql = format!("SELECT topic, kafka_partition, next_offset FROM wh_offsets WHERE group_id = '{group}'");
        let rows = match query::ask_sink(&w.listen, &sql, 1_000_000, Duration::from_millis(w.query_timeout_ms)).await {
            Ok(Some(a)) => a.rows,
            Ok(None) | Err(_) => Vec::new(),
        };
        let at: std::collections::BTreeMap<(String, i32), i64> = rows
            .iter()
            .map(|r| {
                let topic = r[0].as_str().unwrap_or_default().to_owned();
                ((topic, r[1].as_i64().unwrap_or(-1) as i32), r[2].as_i64().unwrap_or(0))
            })
            .collect();
        if ends.iter().all(|(tp, high)| at.get(tp).copied().unwrap_or(0) >= *high) {
            return Ok(true);
        }
        if std::time::Instant::now() > deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The warehouse's oracles for a run (the facts of topics under `config.kafka.topic_prefix`), added to `report`:
/// every fact once, enrichment, the daily mart against the simulator's truth, and agreement with the ledger.
/// Returns a one-line summary and a few lines of the daily mart.
pub async fn oracles(
    config: &Config,
    pool: &deadpool_postgres::Pool,
    truth: &tally_sim::Truth,
    report: &mut crate::sim::CheckReport,
) -> Result<(String, String)> {
    use tally_warehouse::proof;
    let prefix = config.kafka.topic_prefix.replace('\'', "''");
    let counts = ask_running(
        config,
        &format!(
            "SELECT count(*), count(DISTINCT fact_key), count(*) FILTER (WHERE merchant_unknown),
                    count(*) FILTER (WHERE fx_unavailable), string_agg(DISTINCT currency, ',') FILTER (WHERE fx_unavailable),
                    (SELECT count(*) FROM wh_duplicates WHERE starts_with(topic, '{prefix}')),
                    (SELECT count(*) FROM wh_rejects WHERE starts_with(topic, '{prefix}')),
                    (SELECT count(*) FROM restatements WHERE merchant_id IN (
                        SELECT DISTINCT merchant_id FROM fct_payment_events WHERE starts_with(topic, '{prefix}')))
               FROM fct_payment_events WHERE starts_with(topic, '{prefix}') AND source <> 'settlement_report'"
        ),
    )
    .await?;
    let c = &counts.rows[0];
    let n = |i: usize| c[i].as_i64().unwrap_or(-1);
    let (rows, distinct, unknown, unavailable) = (n(0), n(1), n(2), n(3));
    let flagged_currencies = c[4].as_str().unwrap_or("").to_owned();
    report.rows.push((
        "warehouse: every fact once".into(),
        Some(rows == truth.facts.len() as i64 && distinct == rows),
        format!("{rows} rows, {distinct} fact keys, {} facts in truth; {} duplicates stopped", truth.facts.len(), n(5)),
    ));
    // Every merchant is in the loaded dimension; only currencies the ECB does not publish lack a rate.
    let ecb = tally_reference::ecb::EcbRates::parse(&unzip_ecb()?).map_err(|e| anyhow::anyhow!("{e}"))?;
    let published: Vec<&str> = ecb.currencies().collect();
    let only_unpublished = flagged_currencies.split(',').filter(|c| !c.is_empty()).all(|c| !published.contains(&c));
    report.rows.push((
        "warehouse: enrichment".into(),
        Some(unknown == 0 && only_unpublished),
        format!(
            "{unknown} merchant_unknown, {unavailable} fx_unavailable ({})",
            if flagged_currencies.is_empty() { "none" } else { &flagged_currencies }
        ),
    ));
    // The daily mart against the simulator's daily truth, to the minor unit.
    let mart = proof::keyed::<3>(&ask_running(config, &proof::mart_daily_sql(&config.kafka.topic_prefix)).await?.rows);
    let expected: std::collections::BTreeMap<[String; 3], [i64; 4]> = truth
        .daily
        .iter()
        .map(|d| {
            (
                [d.merchant.clone(), d.day.clone(), d.currency.clone()],
                [d.captured, d.refunded, d.dispute_withdrawn, d.dispute_lost],
            )
        })
        .filter(|(_, v)| v.iter().any(|x| *x != 0))
        .collect();
    let (wrong, first) = proof::differences(&mart, &expected, 3);
    report.rows.push((
        "warehouse: daily mart = truth".into(),
        Some(wrong == 0 && !expected.is_empty()),
        if wrong == 0 {
            format!("{} merchant × day × currency rows to the minor unit", expected.len())
        } else {
            format!("{wrong} of {} rows differ, e.g. {first:?}", expected.len())
        },
    ));
    // Ledger ↔ warehouse, per merchant × currency.
    let totals = ask_running(config, &proof::warehouse_totals_sql(&config.kafka.topic_prefix)).await?;
    let (keys, wrong, first) = ledger_agreement(config, pool, &totals.rows, 3).await?;
    report.rows.push((
        "ledger ↔ warehouse agreement".into(),
        Some(wrong == 0 && keys > 0),
        if wrong == 0 {
            format!("{keys} merchant × currency totals (captured, refunded, charged back, lost)")
        } else {
            format!("{wrong} of {keys} differ (ledger, warehouse), e.g. {first:?}")
        },
    ));
    // No personal data in any table: every text column scanned for the simulator's customers' e-mails, names,
    // phones and streets (every name, an even sample of the rest).
    let names: Vec<&String> =
        truth.pii.iter().filter(|v| v.contains(' ') && !v.chars().any(|c| c.is_ascii_digit())).collect();
    let step = (truth.pii.len() / 300).max(1);
    let mut needles: Vec<&String> = truth.pii.iter().step_by(step).chain(names).collect();
    needles.sort();
    needles.dedup();
    let pattern = needles
        .iter()
        .map(|v| {
            v.chars()
                .map(|c| if ".+*?()[]{}|^$\\".contains(c) { format!("\\{c}") } else { c.to_string() })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("|")
        .replace('\'', "''");
    let columns = ask_running(
        config,
        "SELECT c.table_name, c.column_name FROM information_schema.columns c
           JOIN information_schema.tables t ON t.table_name = c.table_name AND t.table_schema = c.table_schema
          WHERE c.data_type = 'VARCHAR' AND t.table_type = 'BASE TABLE' AND c.table_schema = 'main'",
    )
    .await?;
    let mut found = Vec::new();
    for c in &columns.rows {
        let (t, col) = (c[0].as_str().unwrap_or_default(), c[1].as_str().unwrap_or_default());
        let sql = format!("SELECT count(*) FROM \"{t}\" WHERE regexp_matches(\"{col}\", '{pattern}')");
        let hits = ask_running(config, &sql).await?.rows[0][0].as_i64().unwrap_or(-1);
        if hits != 0 {
            found.push(format!("{t}.{col}: {hits}"));
        }
    }
    report.rows.push((
        "warehouse: no PII".into(),
        Some(found.is_empty() && !needles.is_empty() && columns.rows.len() > 20),
        if found.is_empty() {
            format!(
                "{} text columns scanned for {} of the {} customers' values",
                columns.rows.len(),
                needles.len(),
                truth.pii.len()
            )
        } else {
            format!("found in {}", found.join(", "))
        },
    ));
    let lines = ask_running(
        config,
        &format!(
            "SELECT merchant_id, CAST(day AS VARCHAR) AS day, currency, captures_count, captured_minor, refunded_minor,
                    chargeback_minor, net_minor, reporting_net_minor, version, closed
               FROM mart_merchant_daily
              WHERE merchant_id IN (SELECT DISTINCT merchant_id FROM fct_payment_events WHERE starts_with(topic, '{prefix}'))
              ORDER BY reporting_net_minor DESC NULLS LAST LIMIT 5"
        ),
    )
    .await?;
    let summary = format!(
        "{rows} fact rows ({unknown} merchant_unknown, {unavailable} fx_unavailable), {} duplicates and {} rejects accounted for, {} closed days restated by late facts",
        n(5),
        n(6),
        n(7)
    );
    Ok((summary, query::render(&lines, "table")))
}

/// The ECB history the demo loads, unzipped (with the same reader the loader uses).
fn unzip_ecb() -> Result<Vec<u8>> {
    tally_warehouse::reference::ecb_csv("eurofxref-hist.zip", crate::demo::ECB_HISTORY)
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Records the running warehouse sink has consumed (the sum of its stored offsets).
pub async fn consumed(config: &Config) -> Result<i64> {
    let group = config.warehouse.group_id.replace('\'', "''");
    let a = ask_running(
        config,
        &format!("SELECT coalesce(sum(next_offset), 0)::BIGINT FROM wh_offsets WHERE group_id = '{group}'"),
    )
    .await?;
    Ok(a.rows[0][0].as_i64().unwrap_or(0))
}

/// Loads a generated workload's merchant dimension and the ECB history as reference versions (demo and chaos).
pub async fn load_demo_reference(
    pool: &deadpool_postgres::Pool,
    workload: &std::path::Path,
) -> Result<(Loaded, Loaded)> {
    let file = workload.join("merchants.csv");
    let merchants = tally_warehouse::reference::load_merchants(
        pool,
        "tally demo",
        &file.display().to_string(),
        &std::fs::read(&file)?,
    )
    .await
    .context("loading the simulator's merchant dimension")?;
    let fx = tally_warehouse::reference::load_fx(
        pool,
        "tally demo",
        "eurofxref-hist.zip (ECB, shared fixtures)",
        crate::demo::ECB_HISTORY,
    )
    .await
    .context("loading the ECB's rate history")?;
    Ok((merchants, fx))
}

/// The warehouse's part of `tally recon completeness`.
#[derive(Debug, serde::Serialize)]
pub struct WarehouseRecon {
    /// False: no sink answered and no file exists (nothing to check; said, not failed).
    pub checked: bool,
    pub partitions: usize,
    pub offsets_accounted: i64,
    /// Archive files' offset ranges whose checksum the warehouse's accounting was compared with.
    pub ranges_compared: usize,
    pub agreement_keys: usize,
    pub findings: Vec<String>,
}

impl WarehouseRecon {
    pub fn clean(&self) -> bool {
        self.findings.is_empty()
    }

    pub fn render(&self, config: &Config) -> String {
        if !self.checked {
            return format!(
                "warehouse: not checked (no sink at {} and no file at {})\n",
                config.warehouse.listen,
                config.warehouse.path.display()
            );
        }
        let mut s = format!(
            "warehouse: {} partitions, {} consumed offsets each accounted for once (row, duplicate or reject): {}; \
             {} archive ranges compared by checksum; ledger ↔ warehouse totals for {} merchant × currency: {}\n",
            self.partitions,
            self.offsets_accounted,
            if self.findings.iter().any(|f| f.contains('[')) { "NO" } else { "yes" },
            self.ranges_compared,
            self.agreement_keys,
            if self.findings.iter().any(|f| f.starts_with("ledger")) { "DIFFER" } else { "agree" },
        );
        for f in &self.findings {
            s += &format!("  {f}\n");
        }
        s
    }
}

/// Every offset the warehouse sink consumed is accounted for exactly once, and its totals agree with the ledger's
/// entries per merchant × currency (for the configured topic prefix).
pub async fn recon(config: &Config, pool: &deadpool_postgres::Pool) -> Result<WarehouseRecon> {
    use tally_warehouse::proof;
    let Some(accounting) = ask_any(config, &proof::accounting_sql(&config.warehouse.group_id), 1_000_000).await? else {
        return Ok(WarehouseRecon {
            checked: false,
            partitions: 0,
            offsets_accounted: 0,
            ranges_compared: 0,
            agreement_keys: 0,
            findings: vec![],
        });
    };
    let mut findings = proof::accounting_findings(&accounting.rows);
    let offsets_accounted = accounting.rows.iter().map(|r| r[4].as_i64().unwrap_or(0)).sum();
    // The archive's per-range checksums, for the ranges the warehouse has consumed whole.
    let next: std::collections::BTreeMap<(String, i64), i64> = accounting
        .rows
        .iter()
        .map(|r| {
            ((r[0].as_str().unwrap_or_default().to_owned(), r[1].as_i64().unwrap_or(-1)), r[2].as_i64().unwrap_or(0))
        })
        .collect();
    let topics: Vec<String> = tally_kafka::LIFECYCLE_TOPICS.iter().map(|t| config.kafka.topic(t)).collect();
    let files = pool
        .get()
        .await?
        .query(
            "SELECT topic, kafka_partition, start_offset, end_offset, records, facts, key_sum::text FROM archive_files
              WHERE topic = ANY($1) ORDER BY 1, 2, 3",
            &[&topics],
        )
        .await?;
    type Range = (String, i32, i64, i64, i64, i64, String);
    let ranges: Vec<Range> = files
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6)))
        .filter(|r: &Range| next.get(&(r.0.clone(), i64::from(r.1))).is_some_and(|n| r.3 <= *n))
        .collect();
    for chunk in ranges.chunks(1000) {
        let keys: Vec<(String, i32, i64, i64)> = chunk.iter().map(|r| (r.0.clone(), r.1, r.2, r.3)).collect();
        let answer = ask_any(config, &proof::range_sums_sql(&keys), 1_000_000)
            .await?
            .context("the warehouse stopped answering during recon")?;
        for (r, got) in chunk.iter().zip(&answer.rows) {
            let (records, facts, sum) = (got[4].as_i64(), got[5].as_i64(), got[6].as_str().unwrap_or_default());
            if (records, facts, sum) != (Some(r.4), Some(r.5), r.6.as_str()) {
                findings.push(format!(
                    "{}[{}] offsets {}..{}: the archive holds {} records, {} facts (key sum {}); the warehouse accounts for {} records, {} facts (key sum {sum})",
                    r.0, r.1, r.2, r.3, r.4, r.5, r.6, records.unwrap_or(-1), facts.unwrap_or(-1)
                ));
            }
        }
    }
    let ranges_compared = ranges.len();
    let totals = ask_any(config, &proof::warehouse_totals_sql(&config.kafka.topic_prefix), 1_000_000)
        .await?
        .context("the warehouse stopped answering during recon")?;
    let (agreement_keys, wrong, first) = ledger_agreement(config, pool, &totals.rows, 5).await?;
    for (key, l, wh) in first {
        findings.push(format!("ledger {l:?} ≠ warehouse {wh:?} for {} {}", key[0], key[1]));
    }
    if wrong > 5 {
        findings.push(format!("ledger ≠ warehouse for {} more merchant × currency", wrong - 5));
    }
    Ok(WarehouseRecon {
        checked: true,
        partitions: accounting.rows.len(),
        offsets_accounted,
        ranges_compared,
        agreement_keys,
        findings,
    })
}
