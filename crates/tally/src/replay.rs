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
    let scope = match Scope::parse(
        args.merchant.as_deref(),
        args.from.as_deref(),
        args.to.as_deref(),
        args.kind.as_deref(),
        args.psp.as_deref(),
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
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
        let terminal = std::io::stderr().is_terminal();
        let mut progress = move |done: u64, total: u64, records: u64| {
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
        };
        let plan = tally_replay::plan(&pool, &objects, &scope, &mut progress).await?;
        let seq = tally_replay::audit_plan(&pool, &plan, &actor).await?;
        if let Some(out) = &args.out {
            std::fs::write(out, serde_json::to_vec_pretty(&plan)?).with_context(|| format!("writing {}", out.display()))?;
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
        Ok(if plan.diff.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
    })
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
    let _ = writeln!(
        s,
        "{} (plan {})",
        if d.is_empty() { "EMPTY DIFF: nothing to replay" } else { "DIFFERENCES FOUND" },
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
        match tally_replay::apply(&pool, &objects, &plan, who).await {
            Ok(applied) if args.json => {
                println!("{}", serde_json::to_string_pretty(&applied)?);
                Ok(ExitCode::SUCCESS)
            }
            Ok(applied) => {
                match (&applied.applied_before, applied.corrections) {
                    (Some((by, at)), _) => println!("plan {} was applied by {by} at {at}: nothing done", plan.hash),
                    (None, 0) => println!("plan {}: nothing to apply (an empty diff): nothing done", plan.hash),
                    (None, n) => println!(
                        "replay {} applied: {n} correction journals ({} facts re-posted, {} reversed), approved by {}",
                        applied.replay_id,
                        plan.diff.would_change.len(),
                        plan.diff.unexpected.len(),
                        args.approved_by.as_deref().unwrap_or("-")
                    ),
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
