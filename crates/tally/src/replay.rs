//! `tally replay plan|apply`: a scope resolved in the archive, recomputed, and diffed against the live ledger; a
//! plan's diff booked as reversal and re-post correction journals (tally_replay).

// Progress rates and ETAs, never money: the workspace-wide float ban does not apply here.
#![allow(clippy::float_arithmetic)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use tally_replay::scope::Scope;

use crate::config::Config;

#[derive(Subcommand)]
pub enum ReplayCommand {
    /// Resolves a scope to exact archived records, recomputes what the ledger should hold for them with the
    /// current code, and diffs it against the live rows (read-only). Exit 0: empty diff; 1: differences.
    Plan(PlanArgs),
    /// Books a plan's diff as correction journals (a reversal and a re-post per changed fact, tagged with the
    /// replay id), in one transaction with its audit record. Refused if the plan was edited or is stale; the same
    /// plan twice changes nothing. A plan that moves money needs a second operator (--approved-by).
    Apply(ApplyArgs),
}

#[derive(Subcommand)]
pub enum DlqCommand {
    /// Every record the ledger's sink refused (of this configuration's topics), with its reason and last requeue.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Produces a refused record again to its own topic — read from the archive at its exact position, key, value
    /// and headers as the log held them — once its cause is fixed; the ledger then books it (once: fact keys are
    /// deterministic) or refuses it again. An audit record; a record requeued before needs --again.
    Requeue {
        topic: String,
        partition: i32,
        offset: i64,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        ticket: String,
        /// Who requeues it (default: $TALLY_OPERATOR).
        #[arg(long, env = "TALLY_OPERATOR")]
        actor: Option<String>,
        /// Requeue a record that was requeued before.
        #[arg(long)]
        again: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum BackfillCommand {
    /// Re-normalises, with the current code, the PSP bytes of deliveries acknowledged without booking (a type Tally
    /// did not know yet, an ignored item, a recorded exception) from the archive's copy of `webhooks.raw.v1`, and
    /// produces their facts; facts the ledger booked already are not produced (fact keys are deterministic, so a
    /// fact produced twice is still booked once). Exit 0: done; 1: some deliveries are refused by the current code.
    Raw(BackfillArgs),
}

/// A scope on the command line (issue 16 §1).
#[derive(Args)]
pub struct ScopeArgs {
    /// Merchants, comma-separated (default: all).
    #[arg(long)]
    merchant: Option<String>,
    /// Event time from (UTC; YYYY-MM-DD or RFC 3339), inclusive.
    #[arg(long)]
    from: Option<String>,
    /// Event time to, exclusive.
    #[arg(long)]
    to: Option<String>,
    /// Kinds, comma-separated (captured, refunded, settled_credit, …; default: all).
    #[arg(long)]
    kind: Option<String>,
    #[arg(long)]
    psp: Option<String>,
}

impl ScopeArgs {
    /// The scope, or the usage error printed.
    fn scope(&self) -> Option<Scope> {
        Scope::parse(
            self.merchant.as_deref(),
            self.from.as_deref(),
            self.to.as_deref(),
            self.kind.as_deref(),
            self.psp.as_deref(),
        )
        .map_err(|e| eprintln!("{e}"))
        .ok()
    }
}

#[derive(Args)]
pub struct BackfillArgs {
    /// The facts produced (and, by its PSP, the deliveries read).
    #[command(flatten)]
    scope: ScopeArgs,
    /// Deliveries acknowledged with these codes only, comma-separated (unknown_event_type, not_booked,
    /// exception_recorded, other_mode; default: all of them).
    #[arg(long)]
    code: Option<String>,
    /// Count what would be produced; produce nothing.
    #[arg(long)]
    dry_run: bool,
    /// Who runs it, for the audit record (default: $TALLY_OPERATOR).
    #[arg(long, env = "TALLY_OPERATOR")]
    actor: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ApplyArgs {
    plan: PathBuf,
    #[arg(long)]
    reason: String,
    #[arg(long)]
    ticket: String,
    /// The second operator who approved the plan (required when it moves money).
    #[arg(long)]
    approved_by: Option<String>,
    /// Who applies it (default: $TALLY_OPERATOR).
    #[arg(long, env = "TALLY_OPERATOR")]
    actor: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct PlanArgs {
    #[command(flatten)]
    scope: ScopeArgs,
    /// The reference data warehouse rows are enriched with when landed again: `rows` (the versions each row
    /// names: a replay reproduces it unless the code changed) or `latest` (re-enrich with the latest loaded).
    #[arg(long, default_value = "rows", value_parser = ["rows", "latest"])]
    reference: String,
    /// Compare the ledger only (not the warehouse).
    #[arg(long)]
    ledger_only: bool,
    /// Write the plan (JSON, with its hash) here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Who plans it, for the audit record (default: $TALLY_OPERATOR, else the login).
    #[arg(long, env = "TALLY_OPERATOR")]
    actor: Option<String>,
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: ReplayCommand, config: &Config) -> Result<ExitCode> {
    let args = match cmd {
        ReplayCommand::Plan(args) => args,
        ReplayCommand::Apply(args) => return apply(args, config),
    };
    let Some(scope) = args.scope.scope() else { return Ok(ExitCode::from(2)) };
    let actor = args
        .actor
        .filter(|a| !a.trim().is_empty())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "tally replay plan".into());
    crate::archive::runtime()?.block_on(async {
        let pool = tally_postgres::pool(&config.postgres)?;
        tally_postgres::migrate(&pool).await?;
        let objects = tally_archive::objects::Objects::open(&config.archive.location)?;
        let started = Instant::now();
        let mut progress = archive_progress(started);
        let targets = tally_replay::Targets {
            warehouse: (!args.ledger_only).then_some(&config.warehouse),
            reference: if args.reference == "latest" {
                tally_warehouse::replay::Pin::Latest
            } else {
                tally_warehouse::replay::Pin::Rows
            },
        };
        let plan = tally_replay::plan(&pool, &objects, &scope, targets, &mut progress).await?;
        let seq = tally_replay::audit_plan(&pool, &plan, &actor).await?;
        if let Some(out) = &args.out {
            std::fs::write(out, serde_json::to_vec_pretty(&plan)?)
                .with_context(|| format!("writing {}", out.display()))?;
        }
        if args.json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            print!("{}", render(&plan, started.elapsed().as_secs_f64()));
            println!("audit record {seq} (replay.plan by {actor})");
            if let Some(out) = &args.out {
                println!("plan written to {}", out.display());
            }
        }
        Ok(if plan.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
    })
}

pub fn dlq(cmd: DlqCommand, config: &Config) -> Result<ExitCode> {
    crate::archive::runtime()?.block_on(async {
        let pool = tally_postgres::pool(&config.postgres)?;
        tally_postgres::migrate(&pool).await?;
        match cmd {
            DlqCommand::List { json } => {
                let rows = tally_replay::dlq::list(&pool, &config.kafka.topic_prefix).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    for r in &rows {
                        let requeued = r.requeued.as_ref().map_or(String::new(), |(by, at)| {
                            format!(" (requeued by {by} at {at})")
                        });
                        println!("{}[{}]@{}  {}  {}{requeued}", r.topic, r.partition, r.offset, r.rejected_at, r.reason);
                    }
                    println!("({} dead-letter records)", rows.len());
                }
                Ok(ExitCode::SUCCESS)
            }
            DlqCommand::Requeue { topic, partition, offset, reason, ticket, actor, again, json } => {
                let Some(actor) = crate::reports::operator(actor, "requeues it", "a requeue") else {
                    return Ok(ExitCode::from(2));
                };
                let objects = tally_archive::objects::Objects::open(&config.archive.location)?;
                let request = tally_replay::dlq::Request {
                    topic: &topic,
                    partition,
                    offset,
                    actor: &actor,
                    reason: &reason,
                    ticket: &ticket,
                    again,
                };
                match tally_replay::dlq::requeue(&pool, &objects, &config.kafka, request).await {
                    Ok(done) if json => println!("{}", serde_json::to_string_pretty(&done)?),
                    Ok(done) => println!(
                        "{topic}[{partition}]@{offset} requeued to {topic} (value sha256 {}); audit record {} by {actor}",
                        done.value_sha256, done.audit_seq
                    ),
                    Err(tally_replay::dlq::RequeueError::Refused(why)) => {
                        eprintln!("{why}");
                        return Ok(ExitCode::from(2));
                    }
                    Err(e) => return Err(e.into()),
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

pub fn backfill(cmd: BackfillCommand, config: &Config) -> Result<ExitCode> {
    let BackfillCommand::Raw(args) = cmd;
    let Some(scope) = args.scope.scope() else { return Ok(ExitCode::from(2)) };
    const CODES: [&str; 4] = ["unknown_event_type", "not_booked", "exception_recorded", "other_mode"];
    let codes: Vec<String> =
        args.code.as_deref().map(|c| c.split(',').map(|s| s.trim().to_owned()).collect()).unwrap_or_default();
    if let Some(bad) = codes.iter().find(|c| !CODES.contains(&c.as_str())) {
        eprintln!("--code {bad}: not an acknowledgement code (one of {})", CODES.join(", "));
        return Ok(ExitCode::from(2));
    }
    let Some(actor) = crate::reports::operator(args.actor, "runs it", "a backfill") else {
        return Ok(ExitCode::from(2));
    };
    crate::archive::runtime()?.block_on(async {
        let pool = tally_postgres::pool(&config.postgres)?;
        tally_postgres::migrate(&pool).await?;
        let objects = tally_archive::objects::Objects::open(&config.archive.location)?;
        let (stripe, adyen) = (config.ingest.stripe.endpoint(), config.ingest.adyen.endpoint());
        let backfill = tally_replay::backfill::Backfill {
            scope: &scope,
            codes: &codes,
            stripe: &stripe,
            adyen: &adyen,
            dry_run: args.dry_run,
        };
        let started = Instant::now();
        let terminal = std::io::stderr().is_terminal();
        let mut progress = move |done: u64, total: u64| {
            if terminal {
                let secs = started.elapsed().as_secs_f64().max(1e-3);
                let eta = if done > 0 { secs / done as f64 * (total - done) as f64 } else { 0.0 };
                eprint!(
                    "\r  reading the archive's raw deliveries: {done}/{total} files, {:.1} files/s, ETA {eta:.0} s   ",
                    done as f64 / secs
                );
                if done == total {
                    eprintln!();
                }
            }
        };
        let report = tally_replay::backfill::raw(&pool, &objects, &config.kafka, &backfill, &mut progress).await?;
        let seq = tally_replay::backfill::audit(&pool, &scope, &codes, &report, &actor).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            println!(
                "{} raw deliveries read; {} acknowledged (of the PSP and codes asked for)",
                report.raw_records, report.deliveries
            );
            println!(
                "{} facts in scope stated by the current code: {} booked already (not produced), {} {}",
                report.facts,
                report.already_booked,
                report.produced,
                if report.dry_run { "produced (dry run: would produce the rest)" } else { "produced" }
            );
            for (outcome, n) in &report.still_not_booked {
                println!("  still not booked: {n} items ({outcome})");
            }
            for r in report.refused.iter().take(10) {
                println!("  refused: {r}");
            }
            println!("fact keys checksum {}; audit record {seq} by {actor}", report.fact_keys_checksum);
        }
        if let Some(error) = &report.error {
            eprintln!(
                "stopped after {} facts produced: {error}; run the backfill again to produce the rest",
                report.produced
            );
            return Ok(ExitCode::from(2));
        }
        Ok(if report.refused.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
    })
}

/// Progress of a scope's resolution on a terminal: files, records, rate and ETA.
fn archive_progress(started: Instant) -> impl FnMut(u64, u64, u64) + Send {
    let terminal = std::io::stderr().is_terminal();
    move |done: u64, total: u64, records: u64| {
        if terminal {
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            let eta = if done > 0 { secs / done as f64 * (total - done) as f64 } else { 0.0 };
            eprint!(
                "\r  reading the archive: {done}/{total} files, {records} records, {:.0} records/s, ETA {eta:.0} s   ",
                records as f64 / secs
            );
            if done == total {
                eprintln!();
            }
        }
    }
}

fn render(plan: &tally_replay::Plan, secs: f64) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "scope {}", serde_json::to_string(&plan.scope).unwrap_or_default());
    let _ = writeln!(
        s,
        "resolved to {} archived records ({} facts; checksum {}) from {} files, {} records read in {secs:.1} s \
         ({:.0} records/s){}",
        plan.records,
        plan.facts,
        plan.records_checksum,
        plan.read.files,
        plan.read.records,
        plan.read.records as f64 / secs.max(1e-3),
        if plan.read.undecodable > 0 { format!(", {} undecodable", plan.read.undecodable) } else { String::new() }
    );
    let d = &plan.diff;
    let _ = writeln!(
        s,
        "diff: {} unchanged, {} would change, {} missing, {} unexpected; {} booked but not archived yet (not compared)",
        d.unchanged,
        d.would_change.len(),
        d.missing.len(),
        d.unexpected.len(),
        plan.not_archived_yet
    );
    let k = &plan.skipped;
    if k.rejected_by_the_sink + k.refused_by_the_rules + k.booked_from_another_record > 0 {
        let _ = writeln!(
            s,
            "left out: {} facts the ledger's sink rejected (its DLQ), {} the posting rules refuse, {} booked from another \
             record of the same key (a content conflict)",
            k.rejected_by_the_sink, k.refused_by_the_rules, k.booked_from_another_record
        );
    }
    if !d.impact.is_empty() {
        let _ = writeln!(s, "money impact (what applying would post; debit +, credit −):");
        for (account, currency, minor) in &d.impact {
            let _ = writeln!(s, "  {account:<44} {currency} {minor:>16}");
        }
    }
    for (what, list) in [("would change", &d.would_change), ("missing", &d.missing), ("unexpected", &d.unexpected)] {
        for c in list.iter().take(10) {
            let _ = writeln!(
                s,
                "  {what:<12} {} {} {}: live {:?} → expected {:?}",
                c.fact_key.0, c.payment_id, c.kind, c.live, c.expected
            );
        }
        if list.len() > 10 {
            let _ = writeln!(s, "  … {} more {what}", list.len() - 10);
        }
    }
    match &plan.warehouse {
        None => {
            let _ = writeln!(s, "warehouse: not compared (no sink listening and no file, or --ledger-only)");
        }
        Some(w) => {
            let _ = writeln!(
                s,
                "warehouse (reference: {}): {} rows unchanged, {} would change, {} missing, {} unexpected; {} landed \
                 but not archived yet, {} landed from a record outside the scope, {} records of topics it does not \
                 consume (not compared)",
                serde_json::to_value(w.reference).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
                w.unchanged,
                w.would_change.len(),
                w.missing.len(),
                w.unexpected.len(),
                w.not_archived_yet,
                w.landed_from_another_record,
                w.other_topics
            );
            for c in w.would_change.iter().take(10) {
                let cols: Vec<String> =
                    c.columns.iter().map(|k| format!("{} {} → {}", k.column, k.live, k.expected)).collect();
                let _ = writeln!(s, "  would change {} {} {}: {}", c.fact_key, c.payment_id, c.kind, cols.join(", "));
            }
            if w.would_change.len() > 10 {
                let _ = writeln!(s, "  … {} more rows would change", w.would_change.len() - 10);
            }
            for (what, list) in [("missing", &w.missing), ("unexpected", &w.unexpected)] {
                if !list.is_empty() {
                    let shown: Vec<&str> = list.iter().take(5).map(String::as_str).collect();
                    let _ = writeln!(s, "  {what}: {}{}", shown.join(", "), if list.len() > 5 { ", …" } else { "" });
                }
            }
            if !w.marts.is_empty() {
                let _ = writeln!(s, "mart rows recomputed by an apply (closed ones are restated):");
            }
            for m in w.marts.iter().take(20) {
                let money = |v: &Option<serde_json::Value>, k: &str| {
                    v.as_ref().and_then(|v| v.get(k)).map_or("-".to_owned(), |x| x.to_string())
                };
                let _ = writeln!(
                    s,
                    "  {} {} {} {}{}: net {} → {}, fees {} → {}",
                    m.mart,
                    m.merchant_id,
                    m.day,
                    m.currency,
                    if m.closed { " (closed: restated)" } else { "" },
                    money(&m.before, "net_minor"),
                    money(&m.after, "net_minor"),
                    money(&m.before, "fees_minor"),
                    money(&m.after, "fees_minor")
                );
            }
        }
    }
    let _ = writeln!(
        s,
        "{} (plan {})",
        if plan.is_empty() { "EMPTY DIFF: nothing to replay" } else { "DIFFERENCES FOUND" },
        plan.hash
    );
    s
}

fn apply(args: ApplyArgs, config: &Config) -> Result<ExitCode> {
    let bytes = std::fs::read(&args.plan).with_context(|| format!("reading {}", args.plan.display()))?;
    let plan: tally_replay::Plan = match serde_json::from_slice(&bytes) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}: not a replay plan: {e}", args.plan.display());
            return Ok(ExitCode::from(2));
        }
    };
    let Some(actor) = crate::reports::operator(args.actor, "applies it", "an apply") else {
        return Ok(ExitCode::from(2));
    };
    crate::archive::runtime()?.block_on(async {
        let pool = tally_postgres::pool(&config.postgres)?;
        tally_postgres::migrate(&pool).await?;
        let objects = tally_archive::objects::Objects::open(&config.archive.location)?;
        let who = tally_replay::Approval {
            actor: &actor,
            approved_by: args.approved_by.as_deref(),
            reason: &args.reason,
            ticket: &args.ticket,
        };
        let mut progress = archive_progress(Instant::now());
        match tally_replay::apply(&pool, &objects, &plan, who, Some(&config.warehouse), &mut progress).await {
            Ok(applied) if args.json => {
                println!("{}", serde_json::to_string_pretty(&applied)?);
                Ok(ExitCode::SUCCESS)
            }
            Ok(applied) => {
                let rows = applied.warehouse.as_ref();
                match (&applied.applied_before, applied.corrections) {
                    (Some((by, at)), _) => {
                        println!("plan {} was applied to the ledger by {by} at {at}: nothing booked", plan.hash)
                    }
                    (None, 0) if rows.is_none() && plan.is_empty() => {
                        println!("plan {}: nothing to apply (an empty diff): nothing done", plan.hash)
                    }
                    (None, 0) if rows.is_none() => {
                        let unexpected = plan.warehouse.as_ref().map_or(0, |w| w.unexpected.len());
                        let missing = plan.warehouse.as_ref().map_or(0, |w| w.missing.len()) + plan.diff.missing.len();
                        println!(
                            "plan {}: nothing an apply changes: {missing} missing facts or rows (the sinks book and land \
                             them) and {unexpected} unexpected warehouse rows (a replay never removes a row: every \
                             consumed offset is accounted for; see `tally recon completeness`) are not applied",
                            plan.hash
                        )
                    }
                    (None, 0) => {}
                    (None, n) => println!(
                        "replay {} applied: {n} correction journals ({} facts re-posted, {} reversed), approved by {}",
                        applied.replay_id,
                        plan.diff.would_change.len(),
                        plan.diff.unexpected.len(),
                        args.approved_by.as_deref().unwrap_or("-")
                    ),
                }
                match rows {
                    Some(tally_warehouse::replay::Applied { applied_before: Some(at), .. }) => {
                        println!("warehouse: plan {} was applied at {at}: nothing done", plan.hash)
                    }
                    Some(w) => println!(
                        "warehouse: {} rows replaced (tagged replay {}), {} closed mart days restated",
                        w.rows_replaced, applied.replay_id, w.restatements
                    ),
                    None => {}
                }
                if applied.missing_not_applied > 0 {
                    println!(
                        "{} missing facts not applied: the ledger's sink books them (`tally recon completeness`)",
                        applied.missing_not_applied
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e @ tally_replay::ApplyError::Replay(_)) => Err(e.into()),
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::from(2))
            }
        }
    })
}
