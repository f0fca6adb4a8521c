//! `tally warehouse query "SQL"`: read-only SQL over the warehouse. While `tally sink warehouse` runs it holds the
//! file (DuckDB: one writing process), so the query goes to its `/query`; otherwise the file is opened read-only.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use tally_warehouse::query::{self, Answer};

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
    let w = &config.warehouse;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let served = rt.block_on(async {
        let client = reqwest::Client::new();
        let body = serde_json::json!({ "sql": sql, "max_rows": max_rows }).to_string();
        client
            .post(format!("http://{}/query", w.listen))
            .header("content-type", "application/json")
            .body(body)
            .timeout(Duration::from_millis(w.query_timeout_ms + 5_000))
            .send()
            .await
    });
    match served {
        Ok(response) => {
            let status = response.status();
            let text = rt.block_on(response.text())?;
            if !status.is_success() {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                bail!("{}", v["error"].as_str().unwrap_or(&text));
            }
            serde_json::from_str(&text).context("the sink's answer")
        }
        Err(e) if e.is_connect() => {
            if !w.path.exists() {
                bail!("no warehouse at {} (run `tally sink warehouse` first)", w.path.display());
            }
            let conn =
                query::open_read_only(&w.path).with_context(|| format!("opening {} read-only", w.path.display()))?;
            Ok(query::run(&conn, sql, Duration::from_millis(w.query_timeout_ms), max_rows)?)
        }
        Err(e) => Err(e).context("asking the warehouse sink"),
    }
}
