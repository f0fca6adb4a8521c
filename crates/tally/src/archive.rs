//! `tally archive gc` and `tally recon completeness`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;
use tally_archive::recon::{completeness, Broker, ReconOptions, Report};
use tally_archive::Objects;

use crate::config::Config;

#[derive(Subcommand)]
pub enum ArchiveCommand {
    /// Remove archive files that are not in the manifest (left by attempts that crashed between writing a file and
    /// committing it) and can never be: their range starts below the sink's stored offset. Files younger than
    /// --min-age-secs are kept too.
    Gc {
        #[arg(long, default_value_t = 600)]
        min_age_secs: u64,
        /// List what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum ReconCommand {
    /// Compare, per topic-partition and offset range, the broker's log, the archive, the ledger and every sink's
    /// offsets. Exit 0 only when clean, 1 with the discrepancies otherwise.
    Completeness {
        /// The report as JSON (for machines) instead of the table.
        #[arg(long)]
        json: bool,
        /// Compare every range offset by offset (every archive file and ledger row read), not only the ranges
        /// whose checksums differ.
        #[arg(long)]
        full: bool,
    },
    /// Match every imported settlement report line (`tally reports import`) against the ledger's facts: totals per
    /// PSP × currency and breaks by type, each naming the report line and the fact's offset. Exit 1 with breaks.
    Psp(crate::reports::PspReconArgs),
    /// PSP reconciliation breaks as recorded: list, show, resolve (attributable, append-only).
    #[command(subcommand)]
    Breaks(crate::reports::BreaksCommand),
    /// The PSP reconciliation, continuously: consumes the lifecycle topics and watches imported reports, matches
    /// each payment again when evidence about it arrives, and records breaks within seconds (the nightly run's
    /// rules and ids). Serves /metrics and /healthz; stops on SIGTERM.
    Shadow(ShadowArgs),
}

#[derive(clap::Args)]
pub struct ShadowArgs {
    /// Where /metrics and /healthz are served.
    #[arg(long, default_value = "127.0.0.1:9466")]
    listen: String,
    /// The consumer group (and the name of its offsets in `sink_offsets`).
    #[arg(long, default_value = "tally-recon-shadow")]
    group_id: String,
    /// Business days from a capture or refund to its settlement line, Stripe.
    #[arg(long, default_value_t = 2)]
    stripe_sla_days: u32,
    /// Business days from a capture or refund to its settlement line, Adyen.
    #[arg(long, default_value_t = 2)]
    adyen_sla_days: u32,
    /// A difference to let pass, `psp:amount_mismatch=N` or `psp:fee_mismatch=N` (as `recon psp`).
    #[arg(long)]
    tolerance: Vec<String>,
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

pub fn run_archive(cmd: ArchiveCommand, config: &Config) -> Result<ExitCode> {
    let ArchiveCommand::Gc { min_age_secs, dry_run, json } = cmd;
    runtime()?.block_on(async {
        let pool = tally_postgres::pool(&config.postgres)?;
        tally_postgres::migrate(&pool).await?;
        let objects = Objects::open(&config.archive.location)?;
        let report =
            tally_archive::gc::gc(&pool, &objects, &config.archive.group_id, Duration::from_secs(min_age_secs), dry_run)
                .await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            let verb = if dry_run { "would remove" } else { "removed" };
            println!(
                "archive {}: {} files, {} in the manifest; {verb} {} orphan files; kept {} a sink may still commit or younger than {min_age_secs} s; {} foreign files untouched",
                objects.location(),
                report.listed,
                report.in_manifest,
                report.orphans.len(),
                report.kept.len(),
                report.foreign.len()
            );
            for p in &report.orphans {
                println!("  {verb} {p}");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// What recon compares, from the configuration.
pub fn recon_options(config: &Config) -> ReconOptions {
    ReconOptions {
        ledger_group: config.ledger.group_id.clone(),
        ledger_topics: tally_ledger::LEDGER_TOPICS.iter().map(|t| config.kafka.topic(t)).collect(),
        archive_group: config.archive.group_id.clone(),
        parallelism: 2,
        full_compare: false,
    }
}

/// One completeness pass against the configured broker, database and archive.
pub async fn recon(config: &Config, full_compare: bool) -> Result<Report> {
    let pool = tally_postgres::pool(&config.postgres)?;
    tally_postgres::migrate(&pool).await?;
    let objects = Objects::open(&config.archive.location)?;
    let broker = Broker { brokers: config.kafka.brokers.clone(), timeout: Duration::from_secs(10) };
    let options = ReconOptions { full_compare, ..recon_options(config) };
    let kafka = config.kafka.clone();
    Ok(completeness(&broker, &kafka, &pool, &objects, &options).await?)
}

pub fn run_recon(cmd: ReconCommand, config: &Config) -> Result<ExitCode> {
    let (json, full) = match cmd {
        ReconCommand::Completeness { json, full } => (json, full),
        ReconCommand::Psp(args) => return crate::reports::run_recon_psp(args, config),
        ReconCommand::Breaks(cmd) => return crate::reports::run_breaks(cmd, config),
        ReconCommand::Shadow(args) => {
            let shadow = tally_recon::shadow::ShadowConfig {
                group_id: args.group_id,
                listen: args.listen,
                stripe_sla_days: args.stripe_sla_days,
                adyen_sla_days: args.adyen_sla_days,
                tolerances: tally_recon::Tolerances::parse(&args.tolerance).map_err(anyhow::Error::msg)?,
                ..Default::default()
            };
            let (kafka, postgres) = (config.kafka.clone(), config.postgres.clone());
            return crate::ingest::serve(|shutdown| async move {
                tally_recon::shadow::run(shadow, kafka, postgres, shutdown).await.map_err(Into::into)
            });
        }
    };
    let rt = runtime()?;
    let report = rt.block_on(recon(config, full))?;
    let warehouse = rt.block_on(async {
        let pool = tally_postgres::pool(&config.postgres)?;
        crate::warehouse::recon(config, &pool).await
    })?;
    if json {
        // The archive and ledger figures at the top level (as before the warehouse), the warehouse's beside them.
        let mut value = serde_json::to_value(&report)?;
        value["warehouse"] = serde_json::to_value(&warehouse)?;
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", report.render());
        print!("{}", warehouse.render(config));
    }
    Ok(if report.clean && warehouse.clean() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Waits until the ledger sink has consumed its topics and the archive sink every topic to the log's current end
/// (quiescence), or `timeout` passes. Returns whether they caught up.
pub async fn wait_for_sinks(config: &Config, pool: &deadpool_postgres::Pool, timeout: Duration) -> Result<bool> {
    let deadline = std::time::Instant::now() + timeout;
    let options = recon_options(config);
    let mut ends: Vec<(String, String, i32, i64)> = Vec::new();
    for spec in tally_kafka::TOPICS {
        let topic = config.kafka.topic(spec.name);
        let brokers = config.kafka.brokers.clone();
        let t = topic.clone();
        let marks = tokio::task::spawn_blocking(move || tally_kafka::watermarks(&brokers, &t, Duration::from_secs(10)))
            .await??
            .unwrap_or_default();
        for w in marks {
            ends.push((options.archive_group.clone(), topic.clone(), w.partition, w.high));
            if options.ledger_topics.contains(&topic) {
                ends.push((options.ledger_group.clone(), topic.clone(), w.partition, w.high));
            }
        }
    }
    loop {
        let client = pool.get().await?;
        let mut behind = 0;
        for (group, topic, partition, high) in &ends {
            let next: Option<i64> = client
                .query_opt(
                    "SELECT next_offset FROM sink_offsets WHERE group_id = $1 AND topic = $2 AND kafka_partition = $3",
                    &[group, topic, partition],
                )
                .await?
                .map(|r| r.get(0));
            if next.unwrap_or(0) < *high {
                behind += 1;
            }
        }
        if behind == 0 {
            return Ok(true);
        }
        if std::time::Instant::now() > deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
