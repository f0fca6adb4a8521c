//! `tally`: the one binary. Each subcommand is a small module; services are `run(config, shutdown)`.

mod archive;
mod audit;
mod bench;
mod chaos;
mod config;
mod cost;
mod demo;
mod ingest;
mod merchants;
mod psp_sim;
mod reference;
mod replay;
mod reports;
mod sim;
mod stack;
mod warehouse;
mod webhook;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "tally", version, about = "Payments events → exactly-once ledger, archive, warehouse and proof")]
struct Cli {
    /// Configuration file (default: ./tally.toml if present). `TALLY__SECTION__KEY` variables override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Debug PSP webhooks: verify signatures, normalise bodies.
    #[command(subcommand)]
    Webhook(webhook::WebhookCommand),
    /// Run the webhook ingest service.
    Ingest,
    /// Run the payments API (merchants call it; it calls Stripe and Adyen).
    Api,
    /// Relay the payments API's outbox to Kafka, read from PostgreSQL's log (a logical replication slot).
    Relay,
    /// The PSP simulator: a fake Stripe (idempotency keys, faults, charges counted, signed webhooks to ingest).
    PspSim(psp_sim::PspSimArgs),
    /// The payments API's merchants and their keys.
    #[command(subcommand)]
    Merchants(merchants::MerchantsCommand),
    /// Run a sink.
    #[command(subcommand)]
    Sink(SinkCommand),
    /// Ledger tools.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Archive tools.
    #[command(subcommand)]
    Archive(archive::ArchiveCommand),
    /// Reconciliation: prove that every layer holds what the log holds.
    #[command(subcommand)]
    Recon(archive::ReconCommand),
    /// The warehouse (DuckDB): read-only SQL over its tables and marts.
    #[command(subcommand)]
    Warehouse(warehouse::WarehouseCommand),
    /// PSP settlement reports: import them (each file once), then `tally recon psp`.
    #[command(subcommand)]
    Reports(reports::ReportsCommand),
    /// The audit log: signed checkpoints, verification, inclusion proofs, the auditor's export.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Scoped replay: a scope of archived facts recomputed and diffed against the live ledger.
    #[command(subcommand)]
    Replay(replay::ReplayCommand),
    /// Backfills: facts produced again from what the archive kept.
    #[command(subcommand)]
    Backfill(replay::BackfillCommand),
    /// The ledger's dead-letter records: list them, requeue one (audited).
    #[command(subcommand)]
    Dlq(replay::DlqCommand),
    /// Reference data (merchant dimension, FX rates), versioned.
    #[command(subcommand)]
    Reference(reference::ReferenceCommand),
    /// Apply pending PostgreSQL migrations and exit.
    Migrate,
    /// Simulated workloads with ground truth.
    #[command(subcommand)]
    Sim(sim::SimCommand),
    /// The whole pipeline on the local stack with a generated workload, the oracles and a summary.
    Demo(demo::DemoArgs),
    /// The workload on a private stack while processes are killed and services restarted; then the oracles.
    Chaos(chaos::ChaosArgs),
    /// Kafka topics Tally owns.
    #[command(subcommand)]
    Topics(stack::TopicsCommand),
    /// The local stack (PostgreSQL, Redis, Kafka-API broker).
    #[command(subcommand)]
    Stack(stack::StackCommand),
    /// Benchmarks, each beside its baseline measured in the same run.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// The monthly cost at today's volume and at scale, from measured coefficients and a cited price table.
    Cost(cost::CostArgs),
}

#[derive(Subcommand)]
enum SinkCommand {
    /// The exactly-once Kafka → PostgreSQL ledger sink.
    Ledger,
    /// Every topic → immutable Parquet files in the object store, with a manifest in PostgreSQL.
    Archive,
    /// The lifecycle topics → enriched, tokenized rows in the DuckDB warehouse (`[warehouse] path`).
    Warehouse,
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Check the ledger's invariants on the live database; exit 1 with a report if any fails.
    Verify,
}

/// The wall clock as a [`tally_domain::Timestamp`] (the pure core never reads it; the binary does, for `received_at`).
pub(crate) fn now() -> tally_domain::Timestamp {
    let micros =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0);
    tally_domain::Timestamp::from_unix_micros(micros).expect("the clock is within years 1-9999")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TALLY_LOG")
                .unwrap_or_else(|_| "info,tokio_postgres=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Webhook(cmd) => webhook::run(cmd),
        Command::Cost(args) => cost::run(args),
        Command::PspSim(args) => psp_sim::run(args),
        command => config::load(cli.config.as_deref()).and_then(|config| match command {
            Command::Ingest => ingest::run(config),
            Command::Api => ingest::run_api(config),
            Command::Relay => ingest::run_relay(config),
            Command::Merchants(cmd) => merchants::run(cmd, &config),
            Command::Sink(SinkCommand::Ledger) => ingest::run_ledger_sink(config),
            Command::Sink(SinkCommand::Archive) => ingest::run_archive_sink(config),
            Command::Sink(SinkCommand::Warehouse) => ingest::run_warehouse_sink(config),
            Command::Warehouse(cmd) => warehouse::run(cmd, &config),
            Command::Archive(cmd) => archive::run_archive(cmd, &config),
            Command::Recon(cmd) => archive::run_recon(cmd, &config),
            Command::Ledger(LedgerCommand::Verify) => stack::ledger_verify(&config),
            Command::Reference(cmd) => reference::run(cmd, &config),
            Command::Audit(cmd) => audit::run(cmd, &config),
            Command::Replay(cmd) => replay::run(cmd, &config),
            Command::Backfill(cmd) => replay::backfill(cmd, &config),
            Command::Dlq(cmd) => replay::dlq(cmd, &config),
            Command::Reports(cmd) => reports::run(cmd, &config),
            Command::Migrate => stack::migrate(&config),
            Command::Sim(cmd) => sim::run(cmd, config),
            Command::Demo(args) => demo::run(args, config),
            Command::Chaos(args) => chaos::run(args, config),
            Command::Topics(cmd) => stack::run_topics(cmd, &config),
            Command::Stack(cmd) => stack::run_stack(cmd, &config),
            Command::Bench(cmd) => bench::run(cmd, config),
            Command::Webhook(_) | Command::Cost(_) | Command::PspSim(_) => unreachable!("handled above"),
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
