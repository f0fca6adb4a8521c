//! `tally sim generate|send|check`: a seeded workload on disk, delivered like a PSP, and the oracles.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use tally_domain::Psp;

use crate::config::Config;

#[derive(Subcommand)]
pub enum SimCommand {
    /// Generate a deterministic workload with its ground truth into DIR.
    Generate(GenerateArgs),
    /// Deliver a workload to an ingest like a PSP (signing Stripe deliveries at send time, retrying 409/5xx).
    Send(SendArgs),
    /// Run the oracles against the ledger; exit 0 only if all hold.
    Check(CheckArgs),
}

#[derive(Args)]
pub struct GenerateArgs {
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Size of the workload: payments = events / 2.3. At the generator's ratios a payment yields ~2 facts to book,
    /// so facts ≈ 0.87 × events (1,000,000 → 874,926 for seed 2026; the ground truth has the exact count).
    #[arg(long, default_value_t = 20_000)]
    pub events: usize,
    #[arg(long)]
    pub out: PathBuf,
    /// Up to 6 lowercase letters or digits that start every payment and PSP reference, so that a second run of the
    /// same seed is new to the edge and the ledger (`tally demo` tags each run)
    #[arg(long, default_value = "", value_parser = parse_run_tag)]
    pub run_tag: String,
}

fn parse_run_tag(s: &str) -> Result<String, String> {
    tally_sim::check_run_tag(s).map(|()| s.to_owned())
}

#[derive(Args)]
pub struct SendArgs {
    #[arg(long)]
    pub dir: PathBuf,
    /// Ingest's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: String,
    /// Deliveries per second at most (0: as fast as the connections go).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
}

#[derive(Args)]
pub struct CheckArgs {
    #[arg(long)]
    pub dir: PathBuf,
}

/// One line of `deliveries.jsonl`.
#[derive(Serialize, Deserialize, Clone)]
pub struct DeliveryLine {
    pub seq: usize,
    pub psp: Psp,
    pub fault: String,
    pub signing: tally_sim::Signing,
    pub expect_status: u16,
    pub expect_code: Option<String>,
    pub body: String,
}

/// One line of `sent.jsonl`: what ingest finally answered.
#[derive(Serialize, Deserialize)]
pub struct SentLine {
    pub seq: usize,
    pub status: u16,
    pub code: Option<String>,
    pub attempts: u32,
}

pub fn run(cmd: SimCommand, config: Config) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cmd {
        SimCommand::Generate(args) => {
            let truth = generate(&args)?;
            println!(
                "{} payments, {} facts, {} deliveries → {}",
                truth.payments,
                truth.facts.len(),
                truth.deliveries,
                args.out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        SimCommand::Send(args) => rt.block_on(async {
            let stats = send(&args).await?;
            println!("sent {} deliveries in {:.1} s, {} retries", stats.0, stats.1.as_secs_f64(), stats.2);
            Ok(ExitCode::SUCCESS)
        }),
        SimCommand::Check(args) => rt.block_on(async {
            let pool = tally_postgres::pool(&config.postgres)?;
            let report = check(&pool, &args.dir, &config).await?;
            print!("{}", report.render());
            Ok(if report.all_ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }),
    }
}

pub fn generate(args: &GenerateArgs) -> Result<tally_sim::Truth> {
    let config = tally_sim::SimConfig {
        run_tag: args.run_tag.clone(),
        ..tally_sim::SimConfig::new(args.seed, (args.events * 10 / 23).max(1))
    };
    let w = tally_sim::generate(&config);
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let merchants = tally_sim::merchants_csv(&w.merchants);
    std::fs::write(args.out.join("merchants.csv"), merchants)?;
    let mut lines = Vec::new();
    for d in &w.deliveries {
        let line = DeliveryLine {
            seq: d.seq,
            psp: d.psp,
            fault: d.fault.to_owned(),
            signing: d.signing,
            expect_status: d.expect.status,
            expect_code: d.expect.code.clone(),
            body: d.body.clone(),
        };
        serde_json::to_writer(&mut lines, &line)?;
        lines.push(b'\n');
    }
    std::fs::write(args.out.join("deliveries.jsonl"), lines)?;
    std::fs::write(args.out.join("truth.json"), serde_json::to_vec_pretty(&w.truth)?)?;
    // The PSPs' settlement reports for the workload, discrepancies injected into `reports/truth.json`.
    let reports = tally_sim::reports_for_workload(&w, args.seed, &tally_sim::ReportConfig::default());
    let dir = args.out.join("reports");
    for (path, bytes) in &reports.files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, bytes)?;
    }
    std::fs::write(dir.join("truth.json"), serde_json::to_vec_pretty(&reports.injected)?)?;
    std::fs::write(dir.join("booked.json"), serde_json::to_vec_pretty(&reports.booked)?)?;
    Ok(w.truth)
}

fn read_lines<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines().map(|l| serde_json::from_str(l).with_context(|| format!("parsing {}", path.display()))).collect()
}

/// Delivers every line; returns (deliveries, elapsed, retries) and writes `sent.jsonl`.
pub async fn send(args: &SendArgs) -> Result<(usize, Duration, usize)> {
    let lines: Vec<DeliveryLine> = read_lines(&args.dir.join("deliveries.jsonl"))?;
    let total = lines.len();
    let client =
        reqwest::Client::builder().timeout(Duration::from_secs(30)).pool_max_idle_per_host(args.concurrency).build()?;
    let lines = Arc::new(lines);
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let pace = (args.rate > 0).then(|| Duration::from_micros(1_000_000 * args.concurrency as u64 / args.rate));
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (client, lines, next, done, retries) =
                (client.clone(), lines.clone(), next.clone(), done.clone(), retries.clone());
            let target = args.target.clone();
            tokio::spawn(async move {
                let mut sent = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(d) = lines.get(i) else { break };
                    let t = Instant::now();
                    let (status, code, attempts) = deliver(&client, &target, d).await;
                    retries.fetch_add(attempts as usize - 1, Ordering::Relaxed);
                    done.fetch_add(1, Ordering::Relaxed);
                    sent.push(SentLine { seq: d.seq, status, code, attempts });
                    if let Some(pace) = pace {
                        tokio::time::sleep(pace.saturating_sub(t.elapsed())).await;
                    }
                }
                sent
            })
        })
        .collect();
    let progress = {
        let done = done.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let n = done.load(Ordering::Relaxed);
                eprint!("\r  sent {n}/{total} ({}%)   ", n * 100 / total.max(1));
                if n >= total {
                    eprintln!();
                    break;
                }
            }
        })
    };
    let mut sent = Vec::with_capacity(total);
    for w in workers {
        sent.extend(w.await?);
    }
    let _ = progress.await;
    sent.sort_by_key(|s| s.seq);
    let mut out = std::fs::File::create(args.dir.join("sent.jsonl"))?;
    for s in &sent {
        serde_json::to_writer(&mut out, s)?;
        out.write_all(b"\n")?;
    }
    Ok((total, started.elapsed(), retries.load(Ordering::Relaxed)))
}

/// One delivery, retried like a PSP retries: on 409, 5xx and timeouts, with back-off.
async fn deliver(client: &reqwest::Client, target: &str, d: &DeliveryLine) -> (u16, Option<String>, u32) {
    let url = format!("{target}/webhooks/{}", d.psp);
    let mut backoff = Duration::from_millis(100);
    for attempt in 1..=30u32 {
        let mut req = client.post(&url).header("content-type", "application/json").body(d.body.clone());
        if d.psp == Psp::Stripe {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|x| x.as_secs() as i64)
                .unwrap_or(0);
            req = req.header(
                "stripe-signature",
                tally_sim::stripe_header(&d.body, d.signing == tally_sim::Signing::Forged, now),
            );
        }
        // A timeout or a broken connection is retried, as the PSPs do.
        if let Ok(resp) = req.send().await {
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            let code = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(str::to_owned));
            if status != 409 && status < 500 {
                return (status, code, attempt);
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
    (599, Some("gave_up".into()), 30)
}

/// The oracles' results: (oracle, Some(passed) or None when it cannot run yet, figures).
pub struct CheckReport {
    pub rows: Vec<(String, Option<bool>, String)>,
}

impl CheckReport {
    /// Every oracle that can run passed.
    pub fn all_ok(&self) -> bool {
        self.rows.iter().all(|(_, ok, _)| ok.unwrap_or(true))
    }

    pub fn render(&self) -> String {
        let mut out = String::from("oracle                                   result  figures\n");
        for (name, ok, figures) in &self.rows {
            let result = match ok {
                Some(true) => "ok",
                Some(false) => "FAIL",
                None => "n/a",
            };
            out.push_str(&format!("{name:<40} {result:<7} {figures}\n"));
        }
        out
    }
}

pub async fn check(pool: &deadpool_postgres::Pool, dir: &Path, config: &crate::config::Config) -> Result<CheckReport> {
    let group = config.ledger.group_id.as_str();
    let truth: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("truth.json"))?)?;
    // The truth names facts and states money in its own terms; nothing here uses Tally's fact keys or postings.
    let facts: Vec<tally_sim::TruthFact> = serde_json::from_value(truth["facts"].clone()).context("truth.facts")?;
    let moved: Vec<tally_sim::Moved> = serde_json::from_value(truth["moved"].clone()).context("truth.moved")?;
    let unbooked: Vec<String> =
        serde_json::from_value(truth["unbooked_payments"].clone()).context("truth.unbooked_payments")?;
    let payments: Vec<String> = moved.iter().map(|m| m.payment_id.clone()).collect();
    let client = pool.get().await?;
    let mut rows = Vec::new();

    let expected: BTreeSet<tally_sim::TruthFact> = facts.into_iter().collect();
    let rows_booked: Vec<tally_sim::TruthFact> = client
        .query(
            "SELECT payment_id, kind, psp_reference, original_reference FROM event_log
              WHERE payment_id = ANY($1) AND source <> 'settlement_report'",
            &[&payments],
        )
        .await?
        .iter()
        .map(|r| tally_sim::TruthFact {
            payment_id: r.get(0),
            kind: r.get(1),
            psp_reference: r.get(2),
            original_reference: r.get(3),
        })
        .collect();
    let booked: BTreeSet<tally_sim::TruthFact> = rows_booked.iter().cloned().collect();
    // Named facts, counted: a fact booked twice (under two keys) shows as a repeated name.
    let twice = rows_booked.len() - booked.len();
    let missing = expected.difference(&booked).count();
    rows.push((
        "every expected fact booked exactly once".into(),
        Some(missing == 0 && twice == 0),
        format!("{}/{} facts, {twice} booked twice", expected.len() - missing, expected.len()),
    ));
    let unexpected = booked.difference(&expected).count();
    rows.push(("no unexpected fact".into(), Some(unexpected == 0), format!("{unexpected} unexpected")));
    let other_mode: i64 =
        client.query_one("SELECT count(*) FROM event_log WHERE payment_id = ANY($1)", &[&unbooked]).await?.get(0);
    rows.push((
        "nothing booked of other-mode payments".into(),
        Some(other_mode == 0),
        format!("{} payments, {other_mode} facts booked", unbooked.len()),
    ));

    // The workload never sends one fact with two contents: a conflict at the edge or in the ledger is a mapping
    // that states a fact differently from two deliveries.
    let conflicts: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM edge_exceptions x JOIN event_log l ON l.fact_key = x.fact_key
                      WHERE x.kind = 'content_conflict' AND l.payment_id = ANY($1))
                  + (SELECT count(*) FROM dq_exceptions WHERE kind = 'content_conflict' AND payment_id = ANY($1))",
            &[&payments],
        )
        .await?
        .get(0);
    rows.push(("no content conflict".into(), Some(conflicts == 0), format!("{conflicts} conflicts")));

    // The webhook pipeline's oracles below judge the facts the deliveries stated; settlement report lines (booked
    // by `tally reports import`, with `source = settlement_report`) have their own oracle (`tally demo`).
    // What moved, per payment: the ledger's entries of each payment by account class, against the truth's
    // statement of captured, refunded, disputed and fees in money terms.
    let mut ledger_moved: BTreeMap<(String, String), i64> = BTreeMap::new();
    for r in client
        .query(
            "SELECT l.payment_id, split_part(e.account, ':', 1), sum(e.amount_minor)::bigint
             FROM entries e JOIN event_log l ON l.fact_key = e.fact_key
             WHERE l.payment_id = ANY($1) AND l.source <> 'settlement_report' GROUP BY 1, 2",
            &[&payments],
        )
        .await?
    {
        ledger_moved.insert((r.get(0), r.get(1)), r.get(2));
    }
    ledger_moved.retain(|_, a| *a != 0);
    let mut stated: BTreeMap<(String, String), i64> = BTreeMap::new();
    for m in &moved {
        for (account, amount) in m.accounts().into_iter().filter(|(_, a)| *a != 0) {
            let class = account.split(':').next().unwrap_or_default().to_owned();
            stated.insert((m.payment_id.clone(), class), amount);
        }
    }
    let differ: BTreeSet<&String> = stated
        .iter()
        .filter(|(k, a)| ledger_moved.get(*k) != Some(*a))
        .chain(ledger_moved.iter().filter(|(k, a)| stated.get(*k) != Some(*a)))
        .map(|((payment, _), _)| payment)
        .collect();
    let differ = differ.len();
    rows.push((
        "money moved, per payment".into(),
        Some(differ == 0),
        format!("{} payments, {differ} differ", moved.len()),
    ));

    let mut expected: Vec<(String, String, i64)> = serde_json::from_value(truth["balances"].clone())?;
    expected.sort();
    let mut actual: Vec<(String, String, i64)> = client
        .query(
            "SELECT e.account, e.currency, sum(e.amount_minor)::bigint
             FROM entries e JOIN event_log l ON l.fact_key = e.fact_key
             WHERE l.payment_id = ANY($1) AND l.source <> 'settlement_report'
             GROUP BY 1, 2 HAVING sum(e.amount_minor) <> 0 ORDER BY 1, 2",
            &[&payments],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    actual.sort();
    let mismatched = expected.iter().filter(|e| !actual.contains(e)).count()
        + actual.iter().filter(|a| !expected.contains(a)).count();
    rows.push((
        "balances to the minor unit".into(),
        Some(mismatched == 0),
        format!("{} accounts, {mismatched} differ", expected.len()),
    ));

    let expected_status: BTreeMap<String, String> =
        serde_json::from_value::<Vec<(String, String)>>(truth["statuses"].clone())?.into_iter().collect();
    let actual_status: BTreeMap<String, String> = client
        .query("SELECT payment_id, coalesce(status, '') FROM payments WHERE payment_id = ANY($1)", &[&payments])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let wrong = expected_status.iter().filter(|(p, s)| actual_status.get(*p) != Some(s)).count();
    rows.push(("payment statuses".into(), Some(wrong == 0), format!("{} payments, {wrong} differ", payments.len())));

    let report = tally_ledger::verify(pool, group).await?;
    rows.push((
        "every journal balanced; ledger verify".into(),
        Some(report.is_clean()),
        format!("{} journals, {} unbalanced", report.journals, report.unbalanced_journals.len()),
    ));

    let lines: Vec<DeliveryLine> = read_lines(&dir.join("deliveries.jsonl"))?;
    let sent: Vec<SentLine> = read_lines(&dir.join("sent.jsonl")).unwrap_or_default();
    let mut wrong = Vec::new();
    for (d, s) in lines.iter().zip(&sent) {
        let code_ok = d.psp == Psp::Adyen && d.expect_status == 200 || d.expect_code == s.code;
        if d.seq != s.seq || d.expect_status != s.status || !code_ok {
            wrong.push(format!(
                "#{} {} expected {} {:?}, got {} {:?}",
                d.seq, d.fault, d.expect_status, d.expect_code, s.status, s.code
            ));
        }
    }
    let answered = sent.len() == lines.len();
    rows.push((
        "each delivery answered as expected".into(),
        Some(answered && wrong.is_empty()),
        format!(
            "{}/{} answered, {} unexpected{}",
            sent.len(),
            lines.len(),
            wrong.len(),
            wrong.first().map(|w| format!(" (first: {w})")).unwrap_or_default()
        ),
    ));
    let recon = crate::archive::recon(config, false).await?;
    let lagging: Vec<String> = recon
        .partitions
        .iter()
        .flat_map(|p| {
            p.sinks
                .iter()
                .filter(|s| s.lag > 0)
                .map(move |s| format!("{}[{}] {} {}", p.topic, p.partition, s.group, s.lag))
        })
        .collect();
    rows.push((
        "completeness recon".into(),
        Some(recon.clean),
        format!(
            "{} discrepancies; {} records archived, {} ledger rows; {} ranges by checksum{}",
            recon.discrepancies.len(),
            recon.archived_records,
            recon.ledger_rows,
            recon.ranges_compared,
            if lagging.is_empty() { String::new() } else { format!("; sinks still behind: {}", lagging.join(", ")) }
        ),
    ));
    for d in recon.discrepancies.iter().take(5) {
        rows.push(("  recon finding".into(), Some(false), d.describe()));
    }
    Ok(CheckReport { rows })
}
