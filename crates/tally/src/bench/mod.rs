//! `tally bench …`: benchmark harnesses. Each measures its subject beside a baseline in the same run and prints
//! medians and ratios; results are recorded in docs/benchmarks.md with the command that produced them.

mod ingest;
mod ledger;
mod recon;
mod recon_psp;
mod recon_shadow;
mod replay;
mod warehouse;

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;

use crate::config::Config;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Webhook ingest: deliveries/s and latency percentiles, full pipeline vs produce-only baseline.
    Ingest(ingest::IngestArgs),
    /// Ledger sink: events/s and source→ledger latency, beside a per-event-transaction consumer and a raw COPY.
    Ledger(ledger::LedgerArgs),
    /// Completeness recon: seconds for a full pass over an archive and ledger of 10M events, beside an
    /// offset-by-offset pass.
    Recon(recon::ReconArgs),
    /// PSP reconciliation: seconds to match N settlement report lines against the ledger, beside the same join
    /// as one SQL query.
    ReconPsp(recon_psp::ReconPspArgs),
    /// PSP reconciliation, continuous: how long after its evidence `tally recon shadow` records a break, beside a
    /// nightly run over the same state.
    ReconShadow(recon_shadow::ReconShadowArgs),
    /// Warehouse sink: events/s from memory beside DuckDB's appender, and source→warehouse latency at a steady rate.
    Warehouse(warehouse::WarehouseArgs),
    /// Replay: a plan over an unchanged scope of 1M archived events (ledger, then ledger and warehouse), beside
    /// reading the same Parquet rows with no recompute.
    Replay(replay::ReplayArgs),
}

/// A database of the run's own, named `name`, on the server of `base` (dropped first if an earlier run left it),
/// with Tally's migrations.
async fn database(base: &tally_postgres::PostgresConfig, name: &str) -> Result<tally_postgres::PostgresConfig> {
    let admin = tally_postgres::pool(base)?;
    let admin = admin.get().await?;
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name}")).await?;
    admin.batch_execute(&format!("CREATE DATABASE {name}")).await?;
    let url = format!("{}/{name}", base.url.rsplit_once('/').context("database url has no /database")?.0);
    let config = tally_postgres::PostgresConfig { url, ..base.clone() };
    tally_postgres::migrate(&tally_postgres::pool(&config)?).await?;
    Ok(config)
}

/// Drops a run's own database (its connections closed first).
async fn drop_database(base: &tally_postgres::PostgresConfig, name: &str) -> Result<()> {
    let admin = tally_postgres::pool(base)?;
    admin.get().await?.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
    Ok(())
}

pub fn run(cmd: BenchCommand, config: Config) -> Result<ExitCode> {
    match cmd {
        BenchCommand::Ingest(args) => ingest::run(args, config),
        BenchCommand::Ledger(args) => ledger::run(args, config),
        BenchCommand::Recon(args) => recon::run(args, config),
        BenchCommand::ReconPsp(args) => recon_psp::run(args, config),
        BenchCommand::ReconShadow(args) => recon_shadow::run(args, config),
        BenchCommand::Warehouse(args) => warehouse::run(args, config),
        BenchCommand::Replay(args) => replay::run(args, config),
    }
}
