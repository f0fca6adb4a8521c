//! `tally reports import` (settlement report files into PostgreSQL, once each) and `tally recon psp` (the nightly
//! match of those lines against the ledger). The parsing is `tally_psp::report`, the storing and matching
//! `tally_recon`; this module reads files and arguments and prints.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use tally_domain::Psp;
use tally_money::DecimalSeparator;
use tally_psp::report::Report;
use tally_recon::store::Imported;
use tally_recon::{BreakKind, Rules, Tolerances};

use crate::config::Config;

#[derive(Subcommand)]
pub enum ReportsCommand {
    /// Import settlement report files (Stripe itemized balance / payout reconciliation CSV, Adyen Settlement details
    /// CSV). Each file is parsed whole — any error refuses it, naming file, line and column — and stored once: the
    /// same bytes again change nothing. Exit 1 when any file is refused.
    Import(ImportArgs),
    /// Watch a directory (`[reports] inbox`) and import each report file dropped into it once it stops changing,
    /// then move it to `imported/` or `refused/` (with `NAME.errors.txt`: every error's file, line and column).
    /// Serves /metrics and /healthz; stops on SIGTERM.
    Watch(WatchArgs),
}

#[derive(Args)]
pub struct WatchArgs {
    /// The directory to watch (default: `[reports] inbox`).
    #[arg(long)]
    inbox: Option<PathBuf>,
    /// How often to look (default: `[reports] poll_ms`).
    #[arg(long)]
    poll_ms: Option<u64>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum PspArg {
    Stripe,
    Adyen,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Separator {
    Dot,
    Comma,
}

#[derive(Args)]
pub struct ImportArgs {
    /// Report files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The PSP that wrote them (default: told by each file's header).
    #[arg(long, value_enum)]
    psp: Option<PspArg>,
    /// Stripe: the account the report was run for (`acct_…` for a connected account). Not in the file.
    #[arg(long, default_value = tally_psp::stripe::PLATFORM_MERCHANT)]
    account: String,
    /// Stripe: the report run's `decimal_separator`.
    #[arg(long, value_enum, default_value = "dot")]
    decimal_separator: Separator,
    /// What each file did, as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct PspReconArgs {
    /// The nightly run for one UTC day (`YYYY-MM-DD`): the facts of that day with every line that settles them, and
    /// the lines booked that day for payments the ledger does not know (batch gaps are always judged whole).
    #[arg(long, value_parser = parse_day)]
    date: Option<time::Date>,
    /// Business days from a capture or refund to its settlement line, Stripe.
    #[arg(long, default_value_t = 2)]
    stripe_sla_days: u32,
    /// Business days from a capture or refund to its settlement line, Adyen.
    #[arg(long, default_value_t = 2)]
    adyen_sla_days: u32,
    /// Totals and breaks as JSON.
    #[arg(long)]
    json: bool,
    /// Breaks listed per type (the table shows the first N of each).
    #[arg(long, default_value_t = 5)]
    show: usize,
    /// A difference to let pass, `psp:amount_mismatch=N` or `psp:fee_mismatch=N` (minor units; repeatable). None by
    /// default: every difference is a break.
    #[arg(long)]
    tolerance: Vec<String>,
}

impl Default for PspReconArgs {
    fn default() -> Self {
        PspReconArgs { date: None, stripe_sla_days: 2, adyen_sla_days: 2, json: false, show: 3, tolerance: Vec::new() }
    }
}

fn parse_day(s: &str) -> Result<time::Date, String> {
    time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]"))
        .map_err(|e| format!("{s:?} is not a date as YYYY-MM-DD: {e}"))
}

/// Reads and parses one report file (`tally_recon::import::parse_file`).
pub fn parse_file(
    path: &Path,
    psp: Option<Psp>,
    stripe: &tally_psp::stripe::report::Options,
) -> Result<Result<Report, tally_psp::report::Refused>> {
    Ok(tally_recon::import::parse_file(path, psp, stripe)?)
}

pub fn run(cmd: ReportsCommand, config: &Config) -> Result<ExitCode> {
    let args = match cmd {
        ReportsCommand::Import(args) => args,
        ReportsCommand::Watch(args) => {
            let mut reports = config.reports.clone();
            if let Some(dir) = args.inbox {
                reports.inbox = Some(dir);
            }
            if let Some(ms) = args.poll_ms {
                reports.poll_ms = ms;
            }
            let (kafka, postgres) = (config.kafka.clone(), config.postgres.clone());
            return crate::ingest::serve(|shutdown| async move {
                tally_recon::inbox::watch(reports, kafka, postgres, shutdown).await.map_err(Into::into)
            });
        }
    };
    let decimal_separator = match args.decimal_separator {
        Separator::Dot => DecimalSeparator::Dot,
        Separator::Comma => DecimalSeparator::Comma,
    };
    let stripe = tally_psp::stripe::report::Options { account: args.account.clone(), decimal_separator };
    let psp = args.psp.map(|p| match p {
        PspArg::Stripe => Psp::Stripe,
        PspArg::Adyen => Psp::Adyen,
    });
    crate::archive::runtime()?.block_on(async {
        let pool = tally_postgres::pool(&config.postgres)?;
        tally_postgres::migrate(&pool).await?;
        let producer = tally_kafka::Producer::new(&config.kafka)?;
        let mut refused = 0;
        let mut results = Vec::new();
        for path in &args.files {
            match parse_file(path, psp, &stripe)? {
                Err(r) => {
                    refused += 1;
                    if !args.json {
                        eprintln!("refused  {}: {} error(s), nothing imported", r.file, r.total);
                        for e in &r.errors {
                            eprintln!("  {e}");
                        }
                        if r.total > r.errors.len() {
                            eprintln!("  … and {} more", r.total - r.errors.len());
                        }
                    }
                    results.push(
                        serde_json::json!({"file": r.file, "outcome": "refused", "errors": r.errors, "total": r.total}),
                    );
                }
                Ok(report) => {
                    let (outcome, booking) =
                        tally_recon::import::import(&pool, &producer, &config.kafka, &report, crate::now()).await?;
                    if !args.json {
                        for n in &booking.not_booked {
                            eprintln!("not booked {}:{}: {}", report.file, n.line, n.reason);
                        }
                    }
                    if !args.json {
                        match &outcome {
                            Imported::Stored { lines, .. } => println!(
                                "imported {}: {} {} line(s), {} fact(s) booked, {} not booked, sha256 {}{}{}",
                                report.file,
                                lines,
                                report.psp.as_str(),
                                booking.facts,
                                booking.not_booked.len(),
                                &report.sha256[..16],
                                if report.unknown_columns.is_empty() {
                                    String::new()
                                } else {
                                    format!("; unknown columns ignored: {}", report.unknown_columns.join(", "))
                                },
                                if report.unmapped.is_empty() {
                                    String::new()
                                } else {
                                    format!("; unmapped categories kept: {:?}", report.unmapped)
                                }
                            ),
                            Imported::AlreadyImported { as_name, at, .. } => {
                                println!("unchanged {}: the same bytes were imported as {as_name} at {at}", report.file)
                            }
                        }
                    }
                    let mut value = serde_json::to_value(&outcome)?;
                    value["file"] = serde_json::json!(report.file);
                    value["unknown_columns"] = serde_json::json!(report.unknown_columns);
                    value["unmapped"] = serde_json::json!(report.unmapped);
                    value["booking"] = serde_json::to_value(&booking)?;
                    results.push(value);
                }
            }
        }
        if args.json {
            println!("{}", serde_json::to_string_pretty(&results)?);
        }
        Ok(if refused > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
    })
}

/// Imports every report the simulator wrote under `dir` (`stripe/*.csv` of the platform account, `adyen/*.csv`);
/// books their lines; returns the files' SHA-256s and how many facts were produced. A refused file is an error
/// here: the simulator writes the real formats.
pub async fn import_simulated(
    pool: &deadpool_postgres::Pool,
    kafka: &tally_kafka::KafkaConfig,
    dir: &Path,
) -> Result<(Vec<String>, usize)> {
    let producer = tally_kafka::Producer::new(kafka)?;
    let (mut shas, mut facts) = (Vec::new(), 0);
    for (psp, sub) in [(Psp::Stripe, "stripe"), (Psp::Adyen, "adyen")] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else { continue };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            let report = parse_file(&path, Some(psp), &Default::default())?.map_err(|r| anyhow::anyhow!("{r}"))?;
            let (_, booking) = tally_recon::import::import(pool, &producer, kafka, &report, crate::now()).await?;
            anyhow::ensure!(booking.not_booked.is_empty(), "{}: {:?}", report.file, booking.not_booked);
            facts += booking.facts;
            shas.push(report.sha256);
        }
    }
    Ok((shas, facts))
}

/// The nightly PSP reconciliation: every stored line against the ledger's facts.
pub async fn reconcile(pool: &deadpool_postgres::Pool, args: &PspReconArgs) -> Result<tally_recon::Outcome> {
    reconcile_scoped(pool, args, None).await
}

/// Only the lines of the files named by SHA-256 and the facts of the payments named (the demo's own run, on a
/// database that holds earlier runs too); `None`: everything.
pub async fn reconcile_scoped(
    pool: &deadpool_postgres::Pool,
    args: &PspReconArgs,
    scope: Option<(&[String], &[String])>,
) -> Result<tally_recon::Outcome> {
    let mut lines = tally_recon::store::lines(pool).await?;
    if let Some((files, _)) = scope {
        lines.retain(|l| files.contains(&l.file_sha256));
    }
    let mut psps: Vec<Psp> = lines.iter().map(|l| l.line.psp).collect();
    psps.sort_by_key(|p| p.as_str());
    psps.dedup();
    let mut facts = tally_recon::store::facts(pool, &psps).await?;
    if let Some((_, payments)) = scope {
        let payments: std::collections::HashSet<&String> = payments.iter().collect();
        facts.retain(|f| payments.contains(&f.payment_id));
    }
    let plans = tally_recon::store::plans(pool).await?;
    let (stripe, adyen) = (args.stripe_sla_days, args.adyen_sla_days);
    let sla = move |p: Psp| match p {
        Psp::Stripe => stripe,
        Psp::Adyen => adyen,
    };
    let price = |m: &str, p: Psp, t| plans.price(m, p, t);
    let tolerances = Tolerances::parse(&args.tolerance).map_err(anyhow::Error::msg)?;
    let Some(day) = args.date else {
        return Ok(tally_recon::reconcile(
            &lines,
            &facts,
            &Rules { sla_days: &sla, price: &price, scope: None, tolerances: &tolerances },
        ));
    };
    let start = tally_domain::Timestamp::from_unix_secs(day.midnight().assume_utc().unix_timestamp())?;
    let (day_lines, day_facts, scope) = tally_recon::matching::scope_to_day(&lines, &facts, start);
    let rules = Rules { sla_days: &sla, price: &price, scope: Some(&scope), tolerances: &tolerances };
    Ok(tally_recon::reconcile(&day_lines, &day_facts, &rules))
}

pub fn run_recon_psp(args: PspReconArgs, config: &Config) -> Result<ExitCode> {
    crate::archive::runtime()?.block_on(async {
        let pool = tally_postgres::pool(&config.postgres)?;
        tally_postgres::migrate(&pool).await?;
        let outcome = reconcile(&pool, &args).await?;
        // Every break is recorded (first sighting kept); a full run also clears, as `auto`, the open breaks of its
        // PSPs it no longer finds (a late settlement arrived). A run for one day sees too little to clear anything.
        let psps: Vec<Psp> = outcome.totals.keys().filter_map(|(p, _)| p.parse().ok()).collect();
        let clears = args.date.is_none().then_some(tally_recon::store::Clears::Psps(&psps, "tally recon psp"));
        let open: std::collections::HashSet<String> =
            tally_recon::store::record_breaks(&pool, &outcome.breaks, "tally recon psp", clears).await?.into_iter().collect();
        if args.json {
            let totals: Vec<_> = outcome
                .totals
                .iter()
                .map(|((psp, currency), t)| serde_json::json!({"psp": psp, "currency": currency, "totals": t}))
                .collect();
            let breaks: Vec<serde_json::Value> = outcome
                .breaks
                .iter()
                .map(|b| {
                    let (mut v, id) = (serde_json::to_value(b).unwrap_or_default(), b.id());
                    v["open"] = serde_json::json!(open.contains(&id));
                    v["id"] = serde_json::json!(id);
                    v
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "clean": open.is_empty(),
                    "open": open.len(),
                    "lines": outcome.lines,
                    "facts": outcome.facts,
                    "totals": totals,
                    "breaks_by_type": BreakKind::ALL.iter().map(|k| (k.as_str(), outcome.count(*k))).collect::<std::collections::BTreeMap<_, _>>(),
                    "unpaired_lines": outcome.unpaired,
                    "breaks": breaks,
                }))?
            );
        } else {
            print!("{}", render(&outcome, args.show));
            println!(
                "{} open, {} resolved before (`tally recon breaks list`, `… resolve ID --as accepted --reason … --ticket …`)",
                open.len(),
                outcome.breaks.len() - open.len()
            );
        }
        Ok(if open.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
    })
}

pub fn render(outcome: &tally_recon::Outcome, show: usize) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "PSP reconciliation (settlement reports against the ledger): {} report lines, {} ledger facts",
        outcome.lines, outcome.facts
    );
    if outcome.lines == 0 {
        let _ = writeln!(out, "  no report line in scope: nothing was compared (import the PSPs' files first)");
    }
    let _ = writeln!(
        out,
        "  {:<7} {:<4} {:>16} {:>16} {:>12} {:>8} {:>8} {:>7}",
        "psp", "cur", "booked", "settled", "fees", "lines", "matched", "broken"
    );
    for ((psp, currency), t) in &outcome.totals {
        let _ = writeln!(
            out,
            "  {psp:<7} {currency:<4} {:>16} {:>16} {:>12} {:>8} {:>8} {:>7}",
            t.booked_minor, t.settled_minor, t.fees_minor, t.lines, t.matched, t.broken
        );
    }
    if !outcome.unpaired.is_empty() {
        let _ = writeln!(out, "  lines not paired with a fact by design: {:?}", outcome.unpaired);
    }
    let _ = writeln!(out, "  breaks by type (amounts in minor units):");
    for kind in BreakKind::ALL {
        let n = outcome.count(kind);
        let _ = writeln!(out, "    {:<18} {n}", kind.as_str());
        for b in outcome.breaks.iter().filter(|b| b.kind == kind).take(show) {
            let line = b.line.as_ref().map_or(String::new(), |l| format!(" {}:{}", l.file, l.line));
            let fact = b.fact.as_ref().map_or(String::new(), |f| format!(" {}[{}]@{}", f.topic, f.partition, f.offset));
            let _ = writeln!(out, "      {}{line}{fact}: {}", b.payment_id.as_deref().unwrap_or("-"), b.detail);
        }
    }
    let _ = writeln!(out, "{}", if outcome.breaks.is_empty() { "clean" } else { "BREAKS FOUND" });
    out
}

#[derive(Subcommand)]
pub enum BreaksCommand {
    /// The recorded breaks, newest first (open ones unless --all).
    List {
        #[arg(long)]
        all: bool,
        /// Only this type (missing_in_ledger, amount_mismatch, …).
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One break: both sides' lineage and its resolution.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Resolves a break, once, attributably (an append-only record: actor, reason, ticket). `--as
    /// fixed_by_booking --journal FILE` proposes a correction journal instead, which a second operator approves.
    Resolve {
        id: String,
        #[arg(long = "as", value_enum)]
        resolution: ResolutionArg,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        ticket: String,
        /// The correction journal to book (JSON: {"entries": [{"account", "currency", "amount_minor"}]}, signed
        /// minor units, debit positive), with `--as fixed_by_booking`.
        #[arg(long)]
        journal: Option<std::path::PathBuf>,
        /// Who resolves it (default: $TALLY_OPERATOR; required).
        #[arg(long, env = "TALLY_OPERATOR")]
        actor: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The second operator approves a proposed correction journal by its hash: it is booked and the break
    /// resolved `fixed_by_booking`, in one transaction.
    Approve {
        id: String,
        /// The hash `resolve --as fixed_by_booking` printed (and `show ID` lists).
        #[arg(long = "journal-sha256")]
        journal_sha256: String,
        /// Who approves (default: $TALLY_OPERATOR; not the operator who proposed it).
        #[arg(long, env = "TALLY_OPERATOR")]
        actor: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

/// The operator an attributable action names (`--actor` / `TALLY_OPERATOR`); says what is missing when none.
pub(crate) fn operator(actor: Option<String>, what: &str, action: &str) -> Option<String> {
    let actor = actor.filter(|a| !a.trim().is_empty());
    if actor.is_none() {
        eprintln!("who {what}? --actor NAME or TALLY_OPERATOR ({action} is attributable)");
    }
    actor
}

fn resolve_refused(e: tally_recon::store::ResolveError) -> Result<ExitCode> {
    match e {
        e @ tally_recon::store::ResolveError::Store(_) => Err(e.into()),
        e => {
            eprintln!("{e}");
            Ok(ExitCode::from(2))
        }
    }
}

/// `auto` is not an operator's choice: `tally recon psp` records it when a break is no longer found.
#[derive(Clone, Copy, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum ResolutionArg {
    FixedByBooking,
    Accepted,
}

pub fn run_breaks(cmd: BreaksCommand, config: &Config) -> Result<ExitCode> {
    crate::archive::runtime()?.block_on(async {
        let pool = tally_postgres::pool(&config.postgres)?;
        tally_postgres::migrate(&pool).await?;
        match cmd {
            BreaksCommand::List { all, kind, json } => {
                let list = tally_recon::store::list_breaks(&pool, !all, kind.as_deref(), None).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&list)?);
                } else {
                    println!("{:<16}  {:<18} {:<6} {:<40} {:<20} status", "id", "type", "psp", "payment", "first seen");
                    for b in &list {
                        println!(
                            "{:<16}  {:<18} {:<6} {:<40} {:<20} {}",
                            b.break_id,
                            b.kind,
                            b.psp,
                            b.payment_id.as_deref().unwrap_or("-"),
                            b.first_seen,
                            b.resolution.as_deref().unwrap_or("open")
                        );
                    }
                    println!("{} break(s)", list.len());
                }
                Ok(ExitCode::SUCCESS)
            }
            BreaksCommand::Show { id, json } => {
                let Some(b) = tally_recon::store::list_breaks(&pool, false, None, Some(&id)).await?.into_iter().next()
                else {
                    eprintln!("no break {id}");
                    return Ok(ExitCode::from(2));
                };
                if json {
                    println!("{}", serde_json::to_string_pretty(&b)?);
                } else {
                    println!("break {}: {} ({})", b.break_id, b.kind, b.psp);
                    println!("  payment      {}", b.payment_id.as_deref().unwrap_or("-"));
                    let line = b.file.as_ref().map(|f| format!("{f}:{}", b.line.unwrap_or(0)));
                    println!("  report line  {}", line.as_deref().unwrap_or("-"));
                    println!("  ledger fact  {}", b.fact.as_deref().unwrap_or("-"));
                    let amount = b.amount_minor.map(|a| format!("{a} {}", b.currency.as_deref().unwrap_or("")));
                    println!("  amount       {} (minor units)", amount.as_deref().unwrap_or("-"));
                    println!("  detail       {}", b.detail);
                    println!("  first seen   {}", b.first_seen);
                    if let (Some(hash), Some(approver)) = (&b.journal_sha256, &b.approved_by) {
                        println!("  correction   journal sha256 {hash}, approved by {approver}");
                    }
                    for p in tally_recon::store::proposals(&pool, &id).await? {
                        println!(
                            "  proposal     {} by {} at {} ({}; ticket {})",
                            p.journal_sha256, p.proposed_by, p.proposed_at, p.reason, p.ticket
                        );
                        print!("{}", render_journal(&p.journal));
                    }
                    match &b.resolution {
                        None => println!("  status       open"),
                        Some(r) => println!(
                            "  status       {r} by {} ({}; ticket {})",
                            b.resolved_by.as_deref().unwrap_or("?"),
                            b.reason.as_deref().unwrap_or(""),
                            b.ticket.as_deref().unwrap_or("")
                        ),
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            BreaksCommand::Resolve { id, resolution, reason, ticket, journal, actor, json } => {
                let Some(actor) = operator(actor, "resolves it", "a resolution") else {
                    return Ok(ExitCode::from(2));
                };
                let resolution = match (resolution, journal) {
                    (ResolutionArg::FixedByBooking, Some(path)) => {
                        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                        let journal = match tally_ledger::corrections::JournalFile::parse(&bytes) {
                            Ok(j) => j,
                            Err(e) => {
                                eprintln!("{}: {e}", path.display());
                                return Ok(ExitCode::from(2));
                            }
                        };
                        return match tally_recon::store::propose(&pool, &id, &journal, &reason, &ticket, &actor).await {
                            Ok(p) if json => {
                                println!("{}", serde_json::to_string_pretty(&p)?);
                                Ok(ExitCode::SUCCESS)
                            }
                            Ok(p) => {
                                println!("correction journal proposed for break {id} by {actor} (ticket {ticket}):");
                                print!("{}", render_journal(&p.journal));
                                println!("journal sha256 {}", p.journal_sha256);
                                println!(
                                    "a second operator books it: tally recon breaks approve {id} --journal-sha256 {}",
                                    p.journal_sha256
                                );
                                Ok(ExitCode::SUCCESS)
                            }
                            Err(e) => resolve_refused(e),
                        };
                    }
                    (ResolutionArg::FixedByBooking, None) => tally_recon::store::Resolution::FixedByBooking,
                    (ResolutionArg::Accepted, None) => tally_recon::store::Resolution::Accepted,
                    (ResolutionArg::Accepted, Some(_)) => {
                        eprintln!("--journal books money: use it with --as fixed_by_booking");
                        return Ok(ExitCode::from(2));
                    }
                };
                match tally_recon::store::resolve(&pool, &id, resolution, &reason, &ticket, &actor).await {
                    Ok(()) => {
                        if json {
                            let out = serde_json::json!({"break_id": id, "resolution": resolution, "actor": actor});
                            println!("{out}");
                        } else {
                            println!("break {id} resolved {} by {actor} (ticket {ticket})", resolution.as_str());
                        }
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(e) => resolve_refused(e),
                }
            }
            BreaksCommand::Approve { id, journal_sha256, actor, json } => {
                let Some(actor) = operator(actor, "approves it", "a resolution") else {
                    return Ok(ExitCode::from(2));
                };
                match tally_recon::store::approve(&pool, &id, &journal_sha256, &actor).await {
                    Ok(b) if json => {
                        println!("{}", serde_json::to_string_pretty(&b)?);
                        Ok(ExitCode::SUCCESS)
                    }
                    Ok(b) => {
                        println!(
                            "correction {} booked as journal {} (approved by {actor}); break {id} resolved \
                             fixed_by_booking",
                            b.correction_id, b.journal_id
                        );
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(e) => resolve_refused(e),
                }
            }
        }
    })
}

fn render_journal(journal: &tally_ledger::corrections::JournalFile) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for e in &journal.entries {
        let side = if e.amount_minor > 0 { "DR" } else { "CR" };
        let _ = writeln!(out, "      {side} {:<40} {:>16} {}", e.account, e.amount_minor.unsigned_abs(), e.currency);
    }
    out
}
