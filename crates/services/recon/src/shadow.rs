//! `tally recon shadow` (issue 15 §4, ADR 0015 §6): the PSP reconciliation, run continuously. The nightly run
//! matches everything at once; the shadow matches each payment again whenever evidence about it arrives, with the
//! same rules (`reconcile`), so that the two agree on the same inputs and a break is raised seconds after its
//! evidence instead of the next morning.
//!
//! Evidence, and what it triggers:
//! - a **lifecycle fact** (capture, refund, dispute: the kinds matching reads), consumed from the lifecycle topics
//!   on the sink framework and kept in `shadow_facts` with the shadow's offsets in one transaction (exactly once;
//!   the shadow never waits for the ledger) → its payment is matched again: a capture opens an *expectation* (its
//!   settlement is due by the PSP's SLA), a line that arrived before it stops being `missing_in_ledger`;
//! - a **report file** imported (`report_files`, polled) → the payments of its lines are matched again (a line with
//!   no fact, an amount that differs, a duplicated line), and when the file moves a PSP's coverage (the newest
//!   settlement time any report shows) every payment of that PSP with an expectation is too: an SLA that passed
//!   becomes `missing_at_psp`; batch gaps are judged on every line, as nightly.
//!
//! Each evaluation records what it finds (`record_breaks`, stable ids: the nightly run finds the same ids) and
//! resolves as `auto` the open breaks of those payments it no longer finds. At start it matches every payment once
//! (what happened while it was down). Open expectations by age are a metric.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tally_domain::{Psp, Timestamp};
use tally_kafka::KafkaConfig;
use tally_sink::{Batching, Claim, KafkaSource, KafkaSourceConfig, Part};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::matching::{coverage, missing_batches, Scope, MATCHED_KINDS};
use crate::store::{self, Clears, StoreError};
use crate::{reconcile, Break, Line, Price, Rules};

/// Who the shadow's automatic resolutions name.
pub const ACTOR: &str = "tally recon shadow";

#[derive(Debug, Clone)]
pub struct ShadowConfig {
    pub group_id: String,
    /// Where `/metrics` and `/healthz` are served.
    pub listen: String,
    pub stripe_sla_days: u32,
    pub adyen_sla_days: u32,
    /// How long consumed facts wait for more before they are committed and matched.
    pub batch_max_wait_ms: u64,
    /// How often `report_files` is looked at for new files.
    pub file_poll_ms: u64,
    /// Differences let pass (as `tally recon psp --tolerance`).
    pub tolerances: crate::Tolerances,
}

impl Default for ShadowConfig {
    fn default() -> Self {
        ShadowConfig {
            group_id: "tally-recon-shadow".into(),
            listen: "127.0.0.1:9466".into(),
            stripe_sla_days: 2,
            adyen_sla_days: 2,
            batch_max_wait_ms: 100,
            file_poll_ms: 250,
            tolerances: crate::Tolerances::default(),
        }
    }
}

/// The shadow's counters and gauges (Prometheus names in [`Metrics::render`]).
#[derive(Debug, Default)]
pub struct Metrics {
    pub facts_consumed: AtomicU64,
    pub files_seen: AtomicU64,
    pub evaluations: AtomicU64,
    pub payments_evaluated: AtomicU64,
    /// Breaks this shadow recorded first (a break found before, by it or by a nightly run, is not counted again).
    pub breaks_raised: AtomicU64,
    pub evaluation_seconds_total_micros: AtomicU64,
    /// Open expectations (due settlements without a line) by age bucket.
    pub open_expectations: Mutex<BTreeMap<&'static str, u64>>,
}

/// Age buckets of an open expectation, by how far its due time is behind the newest report of its PSP.
const AGE_BUCKETS: [&str; 4] = ["not_due", "overdue_lt_1d", "overdue_1d_to_3d", "overdue_ge_3d"];

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, v) in [
            ("tally_recon_shadow_facts_consumed_total", "lifecycle facts consumed", &self.facts_consumed),
            ("tally_recon_shadow_report_files_seen_total", "report files noticed", &self.files_seen),
            ("tally_recon_shadow_evaluations_total", "matching runs over a set of payments", &self.evaluations),
            ("tally_recon_shadow_payments_evaluated_total", "payments matched again", &self.payments_evaluated),
            ("tally_recon_shadow_breaks_raised_total", "breaks first recorded by the shadow", &self.breaks_raised),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Ordering::Relaxed));
        }
        // Seconds with six decimals, from integer microseconds (no float arithmetic on the way).
        let micros = self.evaluation_seconds_total_micros.load(Ordering::Relaxed);
        let secs = format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000);
        let _ = writeln!(
            out,
            "# HELP tally_recon_shadow_evaluation_seconds_total time spent matching\n\
             # TYPE tally_recon_shadow_evaluation_seconds_total counter\ntally_recon_shadow_evaluation_seconds_total {secs}"
        );
        let _ = writeln!(
            out,
            "# HELP tally_recon_shadow_open_expectations settlements expected and not in any report, by age\n\
             # TYPE tally_recon_shadow_open_expectations gauge"
        );
        let open = self.open_expectations.lock().map(|m| m.clone()).unwrap_or_default();
        for bucket in AGE_BUCKETS {
            let _ = writeln!(
                out,
                "tally_recon_shadow_open_expectations{{age=\"{bucket}\"}} {}",
                open.get(bucket).copied().unwrap_or(0)
            );
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShadowError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Postgres(#[from] tally_postgres::PgError),
    #[error("postgres: {0}")]
    Pg(#[from] tokio_postgres::Error),
    #[error("postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error(transparent)]
    Framework(#[from] tally_sink::FrameworkError),
    #[error("{topic}[{partition}]: the shadow's offset moved under it (another member owns the partition)")]
    Fenced { topic: String, partition: i32 },
    #[error("listening on {0}: {1}")]
    Listen(String, std::io::Error),
    #[error("shadow thread: {0}")]
    Join(String),
}

/// What the evaluator is told.
enum Evidence {
    /// Facts of these payments were committed.
    Facts(BTreeSet<String>),
}

/// Runs the shadow until `shutdown`.
pub async fn run(
    config: ShadowConfig,
    kafka: KafkaConfig,
    postgres: tally_postgres::PostgresConfig,
    shutdown: CancellationToken,
) -> Result<(), ShadowError> {
    let pool = tally_postgres::pool(&postgres)?;
    tally_postgres::migrate(&pool).await?;
    let metrics = Arc::new(Metrics::default());
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| ShadowError::Listen(config.listen.clone(), e))?;
    let m = metrics.clone();
    let http = crate::serve_health(listener, move || m.render(), shutdown.clone());
    tracing::info!(listen = %config.listen, group = %config.group_id, "recon shadow starting");

    let (tx, rx) = mpsc::unbounded_channel();
    let evaluator = {
        let (pool, config, metrics, shutdown) = (pool.clone(), config.clone(), metrics.clone(), shutdown.clone());
        // An evaluator that stops (an error) stops the consumer too: facts must not be committed unmatched.
        tokio::spawn(async move {
            let result = evaluate_loop(pool, config, metrics, rx, shutdown.clone()).await;
            if let Err(e) = &result {
                tracing::error!(error = %e, "recon shadow evaluator stopped");
            }
            shutdown.cancel();
            result
        })
    };
    let rt = tokio::runtime::Handle::current();
    let consumer = {
        let (pool, config, metrics, shutdown) = (pool.clone(), config.clone(), metrics.clone(), shutdown.clone());
        tokio::task::spawn_blocking(move || consume(pool, config, kafka, metrics, tx, rt, shutdown))
    };
    let consumed = consumer.await.map_err(|e| ShadowError::Join(e.to_string()));
    // The consumer ends on shutdown or on an error; either way the evaluator stops too.
    shutdown.cancel();
    let evaluated = evaluator.await.map_err(|e| ShadowError::Join(e.to_string()))?;
    let _ = http.await;
    consumed??;
    evaluated
}

/// The sink-framework loop: lifecycle facts into `shadow_facts` with the offsets, then their payments to the
/// evaluator.
fn consume(
    pool: Pool,
    config: ShadowConfig,
    kafka: KafkaConfig,
    metrics: Arc<Metrics>,
    evidence: mpsc::UnboundedSender<Evidence>,
    rt: tokio::runtime::Handle,
    shutdown: CancellationToken,
) -> Result<(), ShadowError> {
    let topics: Vec<String> = tally_kafka::LIFECYCLE_TOPICS.iter().map(|t| kafka.topic(t)).collect();
    let (claim_pool, claim_rt, group) = (pool.clone(), rt.clone(), config.group_id.clone());
    let mut source = KafkaSource::new(
        &KafkaSourceConfig {
            brokers: &kafka.brokers,
            group_id: &config.group_id,
            topics: &topics,
            session_timeout_ms: 10_000,
            max_poll_interval_ms: 300_000,
            fetch_wait_max_ms: 50,
        },
        Box::new(move |topic, partition| claim_rt.block_on(claim(&claim_pool, &group, topic, partition))),
        shutdown.clone(),
    )?;
    let batching = Batching::Together { max_records: 5_000, max_wait: Duration::from_millis(config.batch_max_wait_ms) };
    tally_sink::run(&mut source, batching, &shutdown, |parts| {
        let payments = rt.block_on(commit(&pool, &config.group_id, parts))?;
        metrics.facts_consumed.fetch_add(payments.1 as u64, Ordering::Relaxed);
        if !payments.0.is_empty() && evidence.send(Evidence::Facts(payments.0)).is_err() {
            // The evaluator is gone (it stopped on an error and cancelled the run): stop here too.
            return Err(ShadowError::Join("the evaluator stopped".into()));
        }
        Ok::<(), ShadowError>(())
    })
}

async fn claim(pool: &Pool, group: &str, topic: &str, partition: i32) -> Result<Claim, String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let c = tally_postgres::offsets::claim(&client, group, topic, partition).await.map_err(|e| e.to_string())?;
    Ok(Claim { topic: topic.to_owned(), partition, next_offset: c.next_offset, epoch: c.epoch, anchor: c.anchor })
}

/// One transaction: the batch's facts (each key once, its first consumed delivery) and each partition's new
/// offset, fenced by the claim. Returns the payments touched and how many facts were read.
async fn commit(pool: &Pool, group: &str, parts: &[Part<Claim>]) -> Result<(BTreeSet<String>, usize), ShadowError> {
    let mut rows: Vec<(tally_contracts::EncodedEvent, &str, i32, i64)> = Vec::new();
    for part in parts {
        for r in &part.records {
            // What cannot be decoded is the ledger's DLQ's to report; the shadow only reads what matching reads.
            let Ok(fact) = tally_contracts::decode_lifecycle_record(r.key.as_deref(), r.value.as_deref()) else {
                continue;
            };
            if MATCHED_KINDS.contains(&fact.event.kind) {
                rows.push((fact, r.topic.as_str(), r.partition, r.offset));
            }
        }
    }
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let col =
        |f: &dyn Fn(&tally_domain::PaymentEvent) -> String| rows.iter().map(|(x, ..)| f(&x.event)).collect::<Vec<_>>();
    tx.execute(
        "INSERT INTO shadow_facts (fact_key, kind, psp, payment_id, psp_reference, merchant_id, amount_minor, currency,
            occurred_at, topic, kafka_partition, kafka_offset)
         SELECT u.k, u.kind, u.psp, u.pay, u.r, u.m, u.a, u.c, 'epoch'::timestamptz + u.at * interval '1 microsecond',
                u.t, u.p, u.o
           FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[],
                $8::text[], $9::bigint[], $10::text[], $11::int[], $12::bigint[])
             AS u(k, kind, psp, pay, r, m, a, c, at, t, p, o)
         ON CONFLICT (fact_key) DO NOTHING",
        &[
            &rows.iter().map(|(x, ..)| x.fact_key.0).collect::<Vec<_>>(),
            &col(&|e| e.kind.as_str().to_owned()),
            &col(&|e| e.psp.as_str().to_owned()),
            &col(&|e| e.payment_id.clone()),
            &col(&|e| e.psp_reference.clone()),
            &col(&|e| e.merchant_id.clone()),
            &rows.iter().map(|(x, ..)| x.event.money.amount.minor()).collect::<Vec<_>>(),
            &col(&|e| e.money.currency.code().to_owned()),
            &rows.iter().map(|(x, ..)| x.event.occurred_at.unix_micros()).collect::<Vec<_>>(),
            &rows.iter().map(|(_, t, ..)| (*t).to_owned()).collect::<Vec<_>>(),
            &rows.iter().map(|(_, _, p, _)| *p).collect::<Vec<_>>(),
            &rows.iter().map(|(.., o)| *o).collect::<Vec<_>>(),
        ],
    )
    .await?;
    for part in parts {
        let last = part.records.last();
        let anchor = last.map(|o| tally_kafka::position::record_digest(o.key.as_deref(), o.value.as_deref()));
        let (c, end) = (&part.claim, part.end());
        let moved = tally_postgres::offsets::advance(
            &tx,
            group,
            &c.topic,
            c.partition,
            c.epoch,
            c.next_offset,
            end,
            anchor.as_deref(),
        )
        .await?;
        if !moved {
            return Err(ShadowError::Fenced { topic: part.claim.topic.clone(), partition: part.claim.partition });
        }
    }
    tx.commit().await?;
    Ok((rows.iter().map(|(x, ..)| x.event.payment_id.clone()).collect(), rows.len()))
}

/// What every evaluation shares: how far each PSP's reports reach and the batch gaps, from every stored line —
/// kept up to date file by file (a batch gap needs only each account's batch numbers: one line per batch is kept).
struct Global {
    files: HashSet<String>,
    coverage: BTreeMap<Psp, Timestamp>,
    batch_lines: BTreeMap<(String, String), Line>,
    batches: Vec<Break>,
    plans: store::Plans,
}

impl Global {
    async fn load(pool: &Pool) -> Result<(Global, Vec<Line>), ShadowError> {
        let lines = store::lines(pool).await?;
        let mut global = Global {
            files: HashSet::new(),
            coverage: BTreeMap::new(),
            batch_lines: BTreeMap::new(),
            batches: Vec::new(),
            plans: store::plans(pool).await?,
        };
        global.add(&lines);
        Ok((global, lines))
    }

    /// Takes in a new file's lines.
    fn add(&mut self, lines: &[Line]) {
        for (psp, newest) in coverage(lines) {
            let e = self.coverage.entry(psp).or_insert(newest);
            *e = (*e).max(newest);
        }
        for l in lines {
            self.files.insert(l.file_sha256.clone());
            if let Some(batch) = &l.line.batch {
                self.batch_lines.entry((l.line.account.clone(), batch.clone())).or_insert_with(|| l.clone());
            }
        }
        self.batches = missing_batches(self.batch_lines.values());
    }
}

/// The evaluator: one at a time, so that two evaluations never race on the same payment's breaks.
async fn evaluate_loop(
    pool: Pool,
    config: ShadowConfig,
    metrics: Arc<Metrics>,
    mut evidence: mpsc::UnboundedReceiver<Evidence>,
    shutdown: CancellationToken,
) -> Result<(), ShadowError> {
    let mut open: HashMap<String, (Psp, Timestamp)> = HashMap::new();
    // At start: every payment once (what happened while the shadow was down).
    let (mut global, lines) = Global::load(&pool).await?;
    let mut all: BTreeSet<String> = lines.iter().filter_map(payment_of).collect();
    for psp in [Psp::Stripe, Psp::Adyen] {
        all.extend(store::shadow_expecting(&pool, psp).await?);
    }
    evaluate(&pool, &config, &metrics, &global, &all, &mut open).await?;
    let mut poll = tokio::time::interval(Duration::from_millis(config.file_poll_ms));
    loop {
        let mut payments = BTreeSet::new();
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            Some(Evidence::Facts(p)) = evidence.recv() => payments = p,
            _ = poll.tick() => {
                let known: Vec<String> = pool
                    .get()
                    .await?
                    .query("SELECT sha256 FROM report_files", &[])
                    .await?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                let new: Vec<String> = known.into_iter().filter(|f| !global.files.contains(f)).collect();
                if new.is_empty() {
                    continue;
                }
                metrics.files_seen.fetch_add(new.len() as u64, Ordering::Relaxed);
                let before = global.coverage.clone();
                let lines = store::lines_in(&pool, &new).await?;
                global.add(&lines);
                global.files.extend(new);
                global.plans = store::plans(&pool).await?;
                payments.extend(lines.iter().filter_map(payment_of));
                for (psp, newest) in &global.coverage {
                    if before.get(psp) != Some(newest) {
                        payments.extend(store::shadow_expecting(&pool, *psp).await?);
                    }
                }
                // The batch gaps are judged on every line: record them now (they name no payment), and clear the
                // ones a late batch filled.
                let new = store::record_new_breaks(&pool, &global.batches, ACTOR, Clears::Batches(ACTOR)).await?;
                metrics.breaks_raised.fetch_add(new as u64, Ordering::Relaxed);
            }
        }
        // More evidence queued meanwhile joins this evaluation.
        while let Ok(Evidence::Facts(p)) = evidence.try_recv() {
            payments.extend(p);
        }
        if !payments.is_empty() {
            evaluate(&pool, &config, &metrics, &global, &payments, &mut open).await?;
        }
    }
}

fn payment_of(l: &Line) -> Option<String> {
    l.line.payment_reference.as_ref().map(|r| format!("{}:{r}", l.line.psp.as_str()))
}

/// Matches these payments again with every fact and line they have, records what it finds, and clears what it
/// no longer finds; updates the open expectations.
async fn evaluate(
    pool: &Pool,
    config: &ShadowConfig,
    metrics: &Metrics,
    global: &Global,
    payments: &BTreeSet<String>,
    open: &mut HashMap<String, (Psp, Timestamp)>,
) -> Result<(), ShadowError> {
    let started = Instant::now();
    let payments: Vec<String> = payments.iter().cloned().collect();
    for chunk in payments.chunks(5_000) {
        let lines = store::lines_of(pool, chunk).await?;
        let facts = store::shadow_facts(pool, chunk).await?;
        let scope = Scope {
            judged: facts.iter().map(|f| f.fact_key.clone()).collect(),
            coverage: global.coverage.clone(),
            batches: global.batches.clone(),
        };
        let (stripe, adyen) = (config.stripe_sla_days, config.adyen_sla_days);
        let sla = move |p: Psp| match p {
            Psp::Stripe => stripe,
            Psp::Adyen => adyen,
        };
        let price = |m: &str, p: Psp, t| -> Option<Price> { global.plans.price(m, p, t) };
        let outcome = reconcile(
            &lines,
            &facts,
            &Rules { sla_days: &sla, price: &price, scope: Some(&scope), tolerances: &config.tolerances },
        );
        let new = store::record_new_breaks(pool, &outcome.breaks, ACTOR, Clears::Payments(chunk, ACTOR)).await?;
        metrics.breaks_raised.fetch_add(new as u64, Ordering::Relaxed);
        for f in &facts {
            open.remove(&f.fact_key);
        }
        for (key, psp, due) in outcome.open {
            open.insert(key, (psp, due));
        }
    }
    let mut buckets: BTreeMap<&'static str, u64> = AGE_BUCKETS.iter().map(|b| (*b, 0)).collect();
    for (psp, due) in open.values() {
        let behind = global.coverage.get(psp).map_or(i64::MIN, |c| c.unix_micros() - due.unix_micros());
        let bucket = match behind {
            b if b <= 0 => AGE_BUCKETS[0],
            b if b < 86_400_000_000 => AGE_BUCKETS[1],
            b if b < 3 * 86_400_000_000 => AGE_BUCKETS[2],
            _ => AGE_BUCKETS[3],
        };
        *buckets.entry(bucket).or_default() += 1;
    }
    if let Ok(mut m) = metrics.open_expectations.lock() {
        *m = buckets;
    }
    metrics.evaluations.fetch_add(1, Ordering::Relaxed);
    metrics.payments_evaluated.fetch_add(payments.len() as u64, Ordering::Relaxed);
    metrics.evaluation_seconds_total_micros.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    Ok(())
}
