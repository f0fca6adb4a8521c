//! `tally bench …`: benchmark harnesses. Each measures its subject beside a baseline in the same run and prints
//! medians and ratios; results are recorded in docs/benchmarks.md with the command that produced them.

mod ingest;
mod ledger;
mod recon;
mod recon_psp;
mod recon_shadow;
mod warehouse;

use std::process::ExitCode;

use anyhow::Result;
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
}

pub fn run(cmd: BenchCommand, config: Config) -> Result<ExitCode> {
    match cmd {
        BenchCommand::Ingest(args) => ingest::run(args, config),
        BenchCommand::Ledger(args) => ledger::run(args, config),
        BenchCommand::Recon(args) => recon::run(args, config),
        BenchCommand::ReconPsp(args) => recon_psp::run(args, config),
        BenchCommand::ReconShadow(args) => recon_shadow::run(args, config),
        BenchCommand::Warehouse(args) => warehouse::run(args, config),
    }
}
