//! `tally demo` (what `make demo` runs): the whole pipeline on the local stack — ingest, the ledger, archive and
//! warehouse sinks in-process, reference data loaded, a generated workload delivered like a PSP, the oracles, and a
//! summary.

// Timing statistics, never money: the workspace-wide float ban does not apply here.
#![allow(clippy::float_arithmetic)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use tally_domain::Secret;
use tally_ingest::{Ingest, RejectCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::sim::{check, generate, send, GenerateArgs, SendArgs};

/// The ECB's euro reference rates as published (the shared fixture), loaded as a reference version by every demo.
pub const ECB_HISTORY: &[u8] = include_bytes!("../../../../shared/fixtures/data/ecb/eurofxref-hist.zip");

#[derive(Args)]
pub struct DemoArgs {
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Approximate number of payment events; the default takes a minute or two on 2 cores.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

pub fn run(args: DemoArgs, mut config: Config) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let started = Instant::now();
        let dir = PathBuf::from(".tally/demo").join(format!("seed-{}-events-{}", args.seed, args.events));
        // Each run its own payments (a tag on every id) and topics: a second run books and checks what it sent.
        let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
        let run_tag = base36(run % 36u128.pow(6));
        println!(
            "1/5 generating the workload (seed {}, ~{} events, run {run_tag}) into {}",
            args.seed,
            args.events,
            dir.display()
        );
        let truth =
            generate(&GenerateArgs { seed: args.seed, events: args.events, out: dir.clone(), run_tag: run_tag.clone() })?;

        // Topics of this run's own: the sinks start at offset 0 of a log nobody else wrote.
        config.kafka.topic_prefix = format!("{}demo-{run_tag}.", config.kafka.topic_prefix);
        // And a warehouse file of its own: its marts are this run's facts (merchants recur between runs of a seed).
        config.warehouse.path = dir.join(format!("warehouse-{run_tag}.duckdb"));
        let pool = tally_postgres::pool(&config.postgres)?;
        tally_postgres::migrate(&pool).await?;
        let (merchants, fx) = crate::warehouse::load_demo_reference(&pool, &dir).await?;
        println!(
            "    reference data: merchants version {} ({} rows), ECB rates version {} ({} rates)",
            merchants.version_id, merchants.rows, fx.version_id, fx.rows
        );
        println!("2/5 starting ingest and the ledger, archive and warehouse sinks (topics {}*)", config.kafka.topic_prefix);
        tally_kafka::ensure_topics(&config.kafka, tally_kafka::TOPICS).await?;
        config.ingest.stripe.secrets.push(Secret::new(tally_sim::STRIPE_SECRET.into()));
        config.ingest.adyen.hmac_keys.push(Secret::new(tally_sim::ADYEN_KEY.into()));
        let ingest = Ingest::new(config.ingest.clone(), config.kafka.clone(), config.postgres.clone(), config.redis.clone()).await?;
        let listener = TcpListener::bind(&config.ingest.listen).await.with_context(|| format!("binding {}", config.ingest.listen))?;
        let url = format!("http://{}", listener.local_addr()?);
        let shutdown = CancellationToken::new();
        // Any early return (an error) stops the services too: the runtime would otherwise wait for the sinks'
        // blocking threads for ever.
        let _stop_on_return = shutdown.clone().drop_guard();
        let server = tokio::spawn(ingest.clone().serve(listener, shutdown.clone()));
        let mut sink = tokio::spawn(tally_ledger::run(config.ledger.clone(), config.kafka.clone(), config.postgres.clone(), shutdown.clone()));
        let mut archive = tokio::spawn(tally_archive::run(config.archive.clone(), config.kafka.clone(), config.postgres.clone(), shutdown.clone()));
        let mut warehouse = tokio::spawn(tally_warehouse::run(config.warehouse.clone(), config.kafka.clone(), config.postgres.clone(), shutdown.clone()));

        println!("3/5 delivering {} webhooks to {url} like the PSPs do (retries on 409/5xx)", truth.deliveries);
        let sending = Instant::now();
        let (sent, send_time, retries) = send(&SendArgs { dir: dir.clone(), target: url.clone(), rate: 0, concurrency: args.concurrency }).await?;

        println!("4/5 waiting for the ledger to book every fact");
        let payments: Vec<String> = truth.moved.iter().map(|m| m.payment_id.clone()).collect();
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let n: i64 = pool.get().await?.query_one("SELECT count(*) FROM event_log WHERE payment_id = ANY($1)", &[&payments]).await?.get(0);
            if n >= truth.facts.len() as i64 || Instant::now() > deadline {
                break;
            }
            // A sink that stopped (a log that went backwards, a fence) will not book the rest: say why, now.
            if sink.is_finished() || archive.is_finished() || warehouse.is_finished() {
                shutdown.cancel();
                let (s, a, w) = ((&mut sink).await?, (&mut archive).await?, (&mut warehouse).await?);
                s.context("the ledger sink stopped")?;
                a.context("the archive sink stopped")?;
                w.context("the warehouse sink stopped")?;
                anyhow::bail!("a sink stopped before every fact was booked");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let booked_time = sending.elapsed();
        println!("    … and importing the PSPs' settlement reports for the workload (reports/), booking their lines");
        let (files, settlement_facts) =
            crate::reports::import_simulated(&pool, &config.kafka, &dir.join("reports")).await?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if settlement_facts_booked(&pool, &files).await? >= settlement_facts as i64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!("    … and for both sinks to reach the end of every topic");
        let caught_up = crate::archive::wait_for_sinks(&config, &pool, Duration::from_secs(120)).await?;
        let warehouse_caught_up = crate::warehouse::wait_for_sink(&config, Duration::from_secs(120)).await?;
        let caught_up = caught_up && warehouse_caught_up;
        if !caught_up {
            println!("    the sinks did not catch up within 120 s; the recon oracle will show how far behind they are");
        }

        let psp_recon = crate::reports::reconcile_scoped(
            &pool,
            &crate::reports::PspReconArgs::default(),
            Some((&files, &payments)),
        )
        .await?;

        println!("5/5 running the oracles\n");
        let mut report = check(&pool, &dir, &config).await?;
        report.rows.push(psp_recon_oracle(&dir, &psp_recon, files.len())?);
        report.rows.push(settlement_oracle(&pool, &dir, &files, settlement_facts).await?);
        report.rows.push(replay_oracle(&pool, &config).await?);
        report.rows.push(audit_oracle(&pool, &config).await?);
        // A stalled sink leaves ranges unread, which recon does not count against the ledger: quiescence is part of
        // the proof (issue 13, item 3).
        report.rows.push((
            "quiescence (sinks at every topic's end)".into(),
            Some(caught_up),
            if caught_up { "reached".into() } else { "not within 120 s".into() },
        ));
        let (warehouse_rows, mart_lines) = crate::warehouse::oracles(&config, &pool, &truth, &mut report).await?;
        let latency = tally_ledger::latency::booking_latency(&pool, tally_ledger::latency::Filter::Ids(&payments)).await?;
        let client = pool.get().await?;
        let sink_dupes: i64 = client
            .query_one(
                "SELECT count(*) FROM sink_duplicates d JOIN event_log l ON l.fact_key = d.fact_key WHERE l.payment_id = ANY($1)",
                &[&payments],
            )
            .await?
            .get(0);
        shutdown.cancel();
        server.await??;
        sink.await??;
        archive.await??;
        warehouse.await??;

        let m = &ingest.metrics;
        let rejections: Vec<String> = RejectCode::ALL
            .iter()
            .filter(|c| m.rejections(**c) > 0)
            .map(|c| format!("{} {}", c.as_str(), m.rejections(*c)))
            .collect();
        let ms = |s: f64| s * 1000.0;
        println!("{}", report.render());
        println!("mart_merchant_daily (this run's five largest merchant days, by net in the reporting currency)\n{mart_lines}");
        print!("{}", crate::reports::render(&psp_recon, 2));
        println!("summary");
        println!("  deliveries            {sent} sent in {:.1} s ({} PSP-style retries)", send_time.as_secs_f64(), retries);
        println!("  facts booked          {} ({:.0} events/s from first delivery to last booking)", truth.facts.len(), truth.facts.len() as f64 / booked_time.as_secs_f64());
        println!(
            "  duplicates blocked    {} deliveries / {} facts at the edge, {} at the sink",
            m.deliveries_duplicate.load(Ordering::Relaxed),
            m.facts_duplicate_at_edge.load(Ordering::Relaxed),
            sink_dupes
        );
        println!("  warehouse             {warehouse_rows}");
        println!("  rejected by reason    {}", if rejections.is_empty() { "none".into() } else { rejections.join(", ") });
        println!("  ignored (acknowledged) {}", m.deliveries_ignored.load(Ordering::Relaxed));
        if let Some(l) = &latency {
            println!("  source→ledger latency p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms ({})", ms(l.p50), ms(l.p95), ms(l.p99), l.basis());
        }
        println!("  oracles               {}", if report.all_ok() { "all green" } else { "FAILED (see the table above)" });
        println!("  took                  {:.0} s", started.elapsed().as_secs_f64());
        println!();
        println!("where to look next");
        println!("  console (while `tally ingest` runs): {url}/healthz and {url}/metrics");
        println!("  ledger:   psql {} -c 'SELECT account, currency, balance_minor FROM account_balances ORDER BY 1'", config.postgres.url);
        println!("  payments: psql {} -c 'SELECT status, count(*) FROM payments GROUP BY 1'", config.postgres.url);
        println!("  archive:  {}/topic=*/date=*/hour=*/*.parquet (query with DuckDB: see the README)", config.archive.location);
        println!(
            "  warehouse: TALLY__WAREHOUSE__PATH={} tally warehouse query \"SELECT * FROM mart_daily_overview ORDER BY date_day\"",
            config.warehouse.path.display()
        );
        println!(
            "  checks:   tally ledger verify; TALLY__KAFKA__TOPIC_PREFIX={} tally recon completeness; tally sim check --dir {}",
            config.kafka.topic_prefix,
            dir.display()
        );
        println!("  settlement: tally recon psp (every imported report; this run's are under {}/reports/)", dir.display());
        println!("  workload: {}/ (deliveries.jsonl, truth.json, merchants.csv, sent.jsonl, reports/)", dir.display());
        Ok(if report.all_ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
    })
}

/// How many settlement report facts of these files (by SHA-256, their lineage) the ledger has booked.
async fn settlement_facts_booked(pool: &deadpool_postgres::Pool, files: &[String]) -> Result<i64> {
    Ok(pool
        .get()
        .await?
        .query_one(
            "SELECT count(*) FROM event_log WHERE source = 'settlement_report'
                AND split_part(source_event_id, ':', 1) = ANY($1)",
            &[&files],
        )
        .await?
        .get(0))
}

/// Replaying unchanged data yields an empty diff (I5): a replay plan over this run's busiest merchant (by its
/// webhook facts; its settlement lines come along), from the archive, recomputed with the current rules against
/// the ledger it just booked and landed again against the warehouse's rows. (Its audit record is the plan's.)
async fn replay_oracle(pool: &deadpool_postgres::Pool, config: &Config) -> Result<(String, Option<bool>, String)> {
    let merchant: Option<String> = pool
        .get()
        .await?
        .query_opt(
            "SELECT merchant_id FROM event_log WHERE starts_with(topic, $1) AND source = 'webhook'
              GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1",
            &[&config.kafka.topic_prefix],
        )
        .await?
        .map(|r| r.get(0));
    let name = "replay plan, one merchant: empty diff".to_owned();
    let Some(merchant) = merchant else { return Ok((name, Some(false), "no merchant booked in this run".into())) };
    let scope = tally_replay::scope::Scope { merchants: vec![merchant.clone()], ..Default::default() };
    let objects = tally_archive::Objects::open(&config.archive.location)?;
    let targets = tally_replay::Targets { warehouse: Some(&config.warehouse), ..Default::default() };
    let plan = tally_replay::plan(pool, &objects, &scope, targets, &mut |_, _, _| {}).await?;
    tally_replay::audit_plan(pool, &plan, "tally demo").await?;
    let d = &plan.diff;
    let warehouse = match &plan.warehouse {
        Some(w) => format!(
            "; warehouse: {} rows unchanged, {} would change, {} missing, {} unexpected",
            w.unchanged,
            w.would_change.len(),
            w.missing.len(),
            w.unexpected.len()
        ),
        None => "; no warehouse compared".into(),
    };
    Ok((
        name,
        Some(plan.is_empty() && plan.facts > 0 && plan.warehouse.as_ref().is_some_and(|w| w.unchanged > 0)),
        format!(
            "{merchant}: {} facts from {} archived records, {} unchanged, {} would change, {} missing, {} unexpected{warehouse}",
            plan.facts,
            plan.records,
            d.unchanged,
            d.would_change.len(),
            d.missing.len(),
            d.unexpected.len()
        ),
    ))
}

/// The audit log (I8) verifies: a checkpoint signed now, and every checkpoint ever signed, is the tree hash of the
/// log's records as they are (the demo's reference loads and recon clears are records of it).
async fn audit_oracle(pool: &deadpool_postgres::Pool, config: &Config) -> Result<(String, Option<bool>, String)> {
    let (signer, _) = config.audit.signer()?;
    tally_audit::store::checkpoint(pool, &signer, &config.audit.origin).await?;
    let verifier = tally_audit::NoteVerifier::parse(&signer.verifier_key())?;
    let report = tally_audit::store::verify(pool, &verifier, &config.audit.origin).await?;
    let root = report.root.as_deref().map_or("-", |r| &r[..12]);
    let problem = report.problems.first().map(|p| format!("; {p}")).unwrap_or_default();
    Ok((
        "audit log verifies (signed checkpoints = its records)".into(),
        // The replay oracle before it wrote the plan's record: the log is never empty here.
        Some(report.is_clean() && report.records > 0),
        format!("{} records, {} checkpoints, root {root}…{problem}", report.records, report.checkpoints),
    ))
}

/// Booking the reports did to the books exactly what the simulator's lines say (`reports/booked.json`, stated in
/// its own terms): per account × currency, the PSP balance by the nets, the receivable by the grosses, the fees —
/// every line once, whatever was written twice.
async fn settlement_oracle(
    pool: &deadpool_postgres::Pool,
    dir: &Path,
    files: &[String],
    produced: usize,
) -> Result<(String, Option<bool>, String)> {
    let mut expected: Vec<(String, String, i64)> =
        serde_json::from_slice(&std::fs::read(dir.join("reports/booked.json")).context("reports/booked.json")?)?;
    expected.sort();
    let facts = settlement_facts_booked(pool, files).await?;
    let client = pool.get().await?;
    let mut actual: Vec<(String, String, i64)> = client
        .query(
            "SELECT e.account, e.currency, sum(e.amount_minor)::bigint
               FROM entries e JOIN event_log l ON l.fact_key = e.fact_key
              WHERE l.source = 'settlement_report' AND split_part(l.source_event_id, ':', 1) = ANY($1)
              GROUP BY 1, 2 HAVING sum(e.amount_minor) <> 0 ORDER BY 1, 2",
            &[&files],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    actual.sort();
    let differ = expected.iter().filter(|e| !actual.contains(e)).count()
        + actual.iter().filter(|a| !expected.contains(a)).count();
    let ok = differ == 0 && facts == produced as i64 && !expected.is_empty();
    Ok((
        "settlement booked = the reports' lines".into(),
        Some(ok),
        format!(
            "{facts}/{produced} line facts booked; {} account × currency balances, {differ} differ",
            expected.len()
        ),
    ))
}

/// The PSP reconciliation found exactly the discrepancies the simulator put into its reports: the same break types
/// for the same payments (a missing batch by its account and number), as many times.
fn psp_recon_oracle(
    dir: &Path,
    outcome: &tally_recon::Outcome,
    files: usize,
) -> Result<(String, Option<bool>, String)> {
    let truth: Vec<tally_sim::Injected> =
        serde_json::from_slice(&std::fs::read(dir.join("reports/truth.json")).context("reading reports/truth.json")?)?;
    let name = |kind: &str, psp: &str, payment: Option<&String>, detail: &str| {
        let what = if kind == "missing_batch" { detail.to_owned() } else { payment.cloned().unwrap_or_default() };
        (kind.to_owned(), psp.to_owned(), what)
    };
    let mut expected: Vec<_> = truth.iter().map(|i| name(&i.kind, &i.psp, i.payment_id.as_ref(), &i.detail)).collect();
    let mut found: Vec<_> = outcome
        .breaks
        .iter()
        .map(|b| name(b.kind.as_str(), b.psp.as_str(), b.payment_id.as_ref(), &b.detail))
        .collect();
    expected.sort();
    found.sort();
    let missed = expected.iter().filter(|e| !found.contains(e)).count();
    let extra = found.iter().filter(|f| !expected.contains(f)).count();
    let ok = found == expected;
    let detail = if ok {
        format!("{} breaks in {files} report files, each one injected", found.len())
    } else {
        format!("{} found, {} injected: {missed} missed, {extra} not injected", found.len(), expected.len())
    };
    Ok(("PSP recon = injected discrepancies".into(), Some(ok), detail))
}

/// `n` in base 36, lowercase, six digits (the run tag of a demo run).
fn base36(mut n: u128) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = digits[(n % 36) as usize];
        n /= 36;
    }
    String::from_utf8_lossy(&out).into_owned()
}
