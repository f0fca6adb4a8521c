//! PostgreSQL: report files imported once (by SHA-256) with their lines, in one transaction; the ledger's facts and
//! the merchants' pricing plans read for matching.

use std::collections::BTreeMap;

use deadpool_postgres::Pool;
use tally_domain::{EventKind, Psp, Timestamp};
use tally_money::{Amount, Currency, Money};
use tally_psp::report::{LineKind, Report, SettlementLine};

use crate::matching::{Fact, FactLineage, Line, Price};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("postgres: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("postgres pool: {0}")]
    Pool(String),
    #[error("stored row unreadable: {0}")]
    Row(String),
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Pool(e.to_string())
    }
}

/// What importing one file did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Imported {
    /// New: the file and every line stored.
    Stored { sha256: String, lines: usize },
    /// The same bytes were imported before (under this or another name): nothing changed.
    AlreadyImported { sha256: String, as_name: String, at: String },
}

/// Whether a file with this SHA-256 is stored (then importing it again changes nothing, and books nothing).
pub async fn is_imported(pool: &Pool, sha256: &str) -> Result<bool, StoreError> {
    let client = pool.get().await?;
    Ok(client.query_opt("SELECT 1 FROM report_files WHERE sha256 = $1", &[&sha256]).await?.is_some())
}

/// Stores a parsed report and its lines in one transaction, or nothing when the same bytes are stored already.
pub async fn import(pool: &Pool, report: &Report) -> Result<Imported, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // Serialise importers of the same file (two operators, a retried job): the second sees the first's row.
    tx.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 15))", &[&report.sha256]).await?;
    if let Some(row) = tx
        .query_opt(
            "SELECT name, to_char(imported_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM report_files
              WHERE sha256 = $1",
            &[&report.sha256],
        )
        .await?
    {
        return Ok(Imported::AlreadyImported { sha256: report.sha256.clone(), as_name: row.get(0), at: row.get(1) });
    }
    let account = report.lines.first().map(|l| l.account.clone());
    let unmapped = serde_json::to_value(&report.unmapped).map_err(|e| StoreError::Row(e.to_string()))?;
    tx.execute(
        "INSERT INTO report_files (sha256, psp, name, account, lines, unknown_columns, unmapped)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &report.sha256,
            &report.psp.as_str(),
            &report.file,
            &account,
            &(report.lines.len() as i32),
            &report.unknown_columns,
            &unmapped,
        ],
    )
    .await?;
    let l = &report.lines;
    let col = |f: &dyn Fn(&SettlementLine) -> Option<String>| l.iter().map(f).collect::<Vec<Option<String>>>();
    tx.execute(
        "INSERT INTO report_lines (file_sha256, line, psp, kind, category, account, line_id, payment_reference,
            modification_reference, merchant_reference, gross_minor, gross_currency, fee_minor, net_minor,
            net_currency, booked_at, settled_at, batch)
         SELECT $1, u.line, u.psp, u.kind, u.category, u.account, u.line_id, u.pay, u.modif, u.mref, u.gross, u.gcur,
            u.fee, u.net, u.ncur, 'epoch'::timestamptz + u.at * interval '1 microsecond',
            'epoch'::timestamptz + u.settled * interval '1 microsecond', u.batch
           FROM unnest($2::int[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
                $10::text[], $11::bigint[], $12::text[], $13::bigint[], $14::bigint[], $15::text[], $16::bigint[],
                $17::text[], $18::bigint[])
             AS u(line, psp, kind, category, account, line_id, pay, modif, mref, gross, gcur, fee, net, ncur, at, batch,
                  settled)",
        &[
            &report.sha256,
            &l.iter().map(|x| x.line as i32).collect::<Vec<_>>(),
            &l.iter().map(|x| x.psp.as_str()).collect::<Vec<_>>(),
            &l.iter().map(|x| x.kind.as_str()).collect::<Vec<_>>(),
            &l.iter().map(|x| x.category.clone()).collect::<Vec<_>>(),
            &l.iter().map(|x| x.account.clone()).collect::<Vec<_>>(),
            &col(&|x| x.line_id.clone()),
            &col(&|x| x.payment_reference.clone()),
            &col(&|x| x.modification_reference.clone()),
            &col(&|x| x.merchant_reference.clone()),
            &l.iter().map(|x| x.gross.map(|g| g.amount.minor())).collect::<Vec<_>>(),
            &col(&|x| x.gross.map(|g| g.currency.code().to_owned())),
            &l.iter().map(|x| x.fee.minor()).collect::<Vec<_>>(),
            &l.iter().map(|x| x.net.amount.minor()).collect::<Vec<_>>(),
            &l.iter().map(|x| x.net.currency.code()).collect::<Vec<_>>(),
            &l.iter().map(|x| x.booked_at.unix_micros()).collect::<Vec<_>>(),
            &col(&|x| x.batch.clone()),
            &l.iter().map(|x| x.settled_at.map(|t| t.unix_micros())).collect::<Vec<_>>(),
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(Imported::Stored { sha256: report.sha256.clone(), lines: report.lines.len() })
}

fn psp(s: &str) -> Result<Psp, StoreError> {
    s.parse::<Psp>().map_err(StoreError::Row)
}

fn currency(s: &str) -> Result<Currency, StoreError> {
    Currency::from_code(s).map_err(|e| StoreError::Row(e.to_string()))
}

fn at(micros: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_unix_micros(micros).map_err(|e| StoreError::Row(e.to_string()))
}

fn line_kind(s: &str) -> Result<LineKind, StoreError> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|e| StoreError::Row(format!("{s}: {e}")))
}

/// Every stored report line with its file.
pub async fn lines(pool: &Pool) -> Result<Vec<Line>, StoreError> {
    lines_where(pool, "true", &[]).await
}

/// The stored lines of these payments (`{psp}:{reference}`, as facts name them).
pub async fn lines_of(pool: &Pool, payments: &[String]) -> Result<Vec<Line>, StoreError> {
    // By (psp, reference), so that the index on report_lines serves it.
    lines_where(
        pool,
        "(l.psp, l.payment_reference) IN
            (SELECT split_part(p, ':', 1), substr(p, strpos(p, ':') + 1) FROM unnest($1::text[]) p)",
        &[&payments],
    )
    .await
}

/// The stored lines of these files.
pub async fn lines_in(pool: &Pool, files: &[String]) -> Result<Vec<Line>, StoreError> {
    lines_where(pool, "l.file_sha256 = ANY($1)", &[&files]).await
}

async fn lines_where(
    pool: &Pool,
    filter: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<Line>, StoreError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            &format!(
                "SELECT l.file_sha256, f.name, l.line, l.psp, l.kind, l.category, l.account, l.line_id,
                        l.payment_reference, l.modification_reference, l.merchant_reference, l.gross_minor,
                        l.gross_currency, l.fee_minor, l.net_minor, l.net_currency,
                        (extract(epoch FROM l.booked_at) * 1000000)::bigint, l.batch,
                        (extract(epoch FROM l.settled_at) * 1000000)::bigint
                   FROM report_lines l JOIN report_files f ON f.sha256 = l.file_sha256
                  WHERE {filter}
                  ORDER BY l.file_sha256, l.line"
            ),
            params,
        )
        .await?;
    rows.iter()
        .map(|r| {
            let gross = match (r.get::<_, Option<i64>>(11), r.get::<_, Option<String>>(12)) {
                (Some(a), Some(c)) => Some(Money::new(Amount::from_minor(a), currency(&c)?)),
                _ => None,
            };
            Ok(Line {
                file_sha256: r.get(0),
                file: r.get(1),
                line: SettlementLine {
                    psp: psp(r.get(3))?,
                    line: r.get::<_, i32>(2) as u64,
                    kind: line_kind(r.get(4))?,
                    category: r.get(5),
                    account: r.get(6),
                    line_id: r.get(7),
                    payment_reference: r.get(8),
                    modification_reference: r.get(9),
                    merchant_reference: r.get(10),
                    gross,
                    fee: Amount::from_minor(r.get(13)),
                    net: Money::new(Amount::from_minor(r.get(14)), currency(r.get(15))?),
                    booked_at: at(r.get(16))?,
                    settled_at: r.get::<_, Option<i64>>(18).map(at).transpose()?,
                    batch: r.get(17),
                },
            })
        })
        .collect()
}

/// The ledger's facts of the kinds matching reads, for the PSPs given.
pub async fn facts(pool: &Pool, psps: &[Psp]) -> Result<Vec<Fact>, StoreError> {
    let kinds: Vec<&str> = crate::matching::MATCHED_KINDS.iter().map(|k| k.as_str()).collect();
    let psps: Vec<&str> = psps.iter().map(|p| p.as_str()).collect();
    facts_where(pool, "event_log", "kind = ANY($1) AND psp = ANY($2)", &[&kinds, &psps]).await
}

/// The shadow's own facts (`shadow_facts`) of these payments.
pub async fn shadow_facts(pool: &Pool, payments: &[String]) -> Result<Vec<Fact>, StoreError> {
    facts_where(pool, "shadow_facts", "payment_id = ANY($1)", &[&payments]).await
}

/// The payments of a PSP with a fact whose settlement is expected (a capture or a refund), in the shadow's facts.
pub async fn shadow_expecting(pool: &Pool, psp: Psp) -> Result<Vec<String>, StoreError> {
    let kinds: Vec<&str> = crate::matching::EXPECTED.iter().map(|k| k.as_str()).collect();
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT DISTINCT payment_id FROM shadow_facts WHERE psp = $1 AND kind = ANY($2)",
            &[&psp.as_str(), &kinds],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

async fn facts_where(
    pool: &Pool,
    table: &str,
    filter: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<Fact>, StoreError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            &format!(
                "SELECT fact_key::text, kind, psp, payment_id, psp_reference, merchant_id, amount_minor, currency,
                        (extract(epoch FROM occurred_at) * 1000000)::bigint, topic, kafka_partition, kafka_offset
                   FROM {table} WHERE {filter}"
            ),
            params,
        )
        .await?;
    rows.iter()
        .map(|r| {
            let kind: String = r.get(1);
            Ok(Fact {
                fact_key: r.get(0),
                kind: EventKind::ALL
                    .into_iter()
                    .find(|k| k.as_str() == kind)
                    .ok_or_else(|| StoreError::Row(format!("kind {kind}")))?,
                psp: psp(r.get(2))?,
                payment_id: r.get(3),
                psp_reference: r.get(4),
                merchant_id: r.get(5),
                money: Money::new(Amount::from_minor(r.get(6)), currency(r.get(7))?),
                occurred_at: at(r.get(8))?,
                lineage: FactLineage { topic: r.get(9), partition: r.get(10), offset: r.get(11) },
            })
        })
        .collect()
}

/// The merchants' pricing plans as loaded (`dim_merchant`), for as-of lookups.
#[derive(Debug, Clone, Default)]
pub struct Plans {
    /// merchant → (valid_from µs, valid_to µs or MAX, stripe, adyen), sorted by valid_from.
    versions: BTreeMap<String, Vec<(i64, i64, Price, Price)>>,
}

impl Plans {
    pub fn price(&self, merchant: &str, psp: Psp, at: Timestamp) -> Option<Price> {
        let t = at.unix_micros();
        let (_, _, stripe, adyen) = self.versions.get(merchant)?.iter().find(|(from, to, ..)| *from <= t && t < *to)?;
        Some(match psp {
            Psp::Stripe => *stripe,
            Psp::Adyen => *adyen,
        })
    }
}

pub async fn plans(pool: &Pool) -> Result<Plans, StoreError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT merchant_id, (extract(epoch FROM valid_from::timestamp) * 1000000)::bigint,
                    (extract(epoch FROM valid_to::timestamp) * 1000000)::bigint,
                    stripe_ppm, stripe_fixed_minor, adyen_ppm, adyen_fixed_minor
               FROM dim_merchant ORDER BY merchant_id, valid_from",
            &[],
        )
        .await?;
    let mut plans = Plans::default();
    for r in &rows {
        let price = |ppm: i32, fixed: i64| Price { ppm: ppm.max(0) as u32, fixed_minor: fixed };
        plans.versions.entry(r.get(0)).or_default().push((
            r.get(1),
            r.get::<_, Option<i64>>(2).unwrap_or(i64::MAX),
            price(r.get(3), r.get(4)),
            price(r.get(5), r.get(6)),
        ));
    }
    Ok(plans)
}

/// How a break was resolved (ADR 0015): `accepted` (the difference stands, e.g. a PSP concession), `auto` (it
/// cleared by itself: a run no longer finds it), `fixed_by_booking` (a correction journal, maker-checker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    Accepted,
    Auto,
    FixedByBooking,
}

impl Resolution {
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Accepted => "accepted",
            Resolution::Auto => "auto",
            Resolution::FixedByBooking => "fixed_by_booking",
        }
    }
}

/// A stored break with its resolution, if any.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredBreak {
    pub break_id: String,
    pub kind: String,
    pub psp: String,
    pub payment_id: Option<String>,
    pub file: Option<String>,
    pub line: Option<i32>,
    pub fact: Option<String>,
    pub amount_minor: Option<i64>,
    pub currency: Option<String>,
    pub detail: String,
    pub first_seen: String,
    pub resolution: Option<String>,
    pub resolved_by: Option<String>,
    pub reason: Option<String>,
    pub ticket: Option<String>,
    /// A `fixed_by_booking` resolution: the booked correction journal's hash and the operator who approved it.
    pub journal_sha256: Option<String>,
    pub approved_by: Option<String>,
}

/// What a run saw whole, so that the open breaks in it it no longer finds are resolved `auto` (a late settlement
/// arrived, a capture came after its line).
#[derive(Debug, Clone, Copy)]
pub enum Clears<'a> {
    /// A full run of these PSPs, by this actor.
    Psps(&'a [Psp], &'a str),
    /// Every fact and line of these payments (the shadow's evaluation), by this actor: only breaks it recorded
    /// itself are cleared (a nightly run's stay until a nightly run no longer finds them); batch gaps are not.
    Payments(&'a [String], &'a str),
    /// Every line's batch (the shadow, after a file arrived), by this actor: the batch gaps it recorded itself and
    /// no longer finds.
    Batches(&'a str),
}

/// Records the breaks a run found (those seen before keep their first sighting) and returns the ids that are
/// still open (no resolution). With `clears`, open breaks in what the run saw whole that it no longer finds are
/// resolved `auto` (a run for one day sees too little to clear anything).
/// `found_by` names the run (`tally recon psp`, `tally recon shadow`) on the breaks it records first.
pub async fn record_breaks(
    pool: &Pool,
    breaks: &[crate::Break],
    found_by: &str,
    clears: Option<Clears<'_>>,
) -> Result<Vec<String>, StoreError> {
    Ok(record(pool, breaks, found_by, clears).await?.0)
}

/// [`record_breaks`], returning how many of the breaks were recorded for the first time.
pub async fn record_new_breaks(
    pool: &Pool,
    breaks: &[crate::Break],
    found_by: &str,
    clears: Clears<'_>,
) -> Result<usize, StoreError> {
    Ok(record(pool, breaks, found_by, Some(clears)).await?.1)
}

async fn record(
    pool: &Pool,
    breaks: &[crate::Break],
    found_by: &str,
    clears: Option<Clears<'_>>,
) -> Result<(Vec<String>, usize), StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let ids: Vec<String> = breaks.iter().map(crate::Break::id).collect();
    let col = |f: &dyn Fn(&crate::Break) -> Option<String>| breaks.iter().map(f).collect::<Vec<Option<String>>>();
    let inserted = tx
        .execute(
            "INSERT INTO recon_breaks (break_id, kind, psp, payment_id, file_sha256, file_name, line, fact_key, topic,
            kafka_partition, kafka_offset, amount_minor, currency, detail, found_by)
         SELECT u.*, $15 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[],
            $8::text[], $9::text[], $10::int[], $11::bigint[], $12::bigint[], $13::text[], $14::text[]) AS u
         ON CONFLICT (break_id) DO NOTHING",
            &[
                &ids,
                &breaks.iter().map(|b| b.kind.as_str()).collect::<Vec<_>>(),
                &breaks.iter().map(|b| b.psp.as_str()).collect::<Vec<_>>(),
                &col(&|b| b.payment_id.clone()),
                &col(&|b| b.line.as_ref().map(|l| l.file_sha256.clone())),
                &col(&|b| b.line.as_ref().map(|l| l.file.clone())),
                &breaks.iter().map(|b| b.line.as_ref().map(|l| l.line as i32)).collect::<Vec<_>>(),
                &col(&|b| b.fact_key.clone()),
                &col(&|b| b.fact.as_ref().map(|f| f.topic.clone())),
                &breaks.iter().map(|b| b.fact.as_ref().map(|f| f.partition)).collect::<Vec<_>>(),
                &breaks.iter().map(|b| b.fact.as_ref().map(|f| f.offset)).collect::<Vec<_>>(),
                &breaks.iter().map(|b| b.amount.map(|m| m.amount.minor())).collect::<Vec<_>>(),
                &col(&|b| b.amount.map(|m| m.currency.code().to_owned())),
                &breaks.iter().map(|b| b.detail.clone()).collect::<Vec<_>>(),
                &found_by,
            ],
        )
        .await?;
    // What the run saw whole: (actor, reason, PSPs, payments, only batch gaps, only the actor's own breaks).
    type Whole<'a> = (&'a str, &'a str, Option<Vec<&'a str>>, Option<&'a [String]>, bool, Option<&'a str>);
    let whole: Option<Whole> = match clears {
        None => None,
        Some(Clears::Psps(psps, actor)) => Some((
            actor,
            "no longer found by a full run",
            Some(psps.iter().map(|p| p.as_str()).collect()),
            None,
            false,
            None,
        )),
        Some(Clears::Batches(actor)) => Some((actor, "the batch arrived", None, None, true, Some(actor))),
        Some(Clears::Payments(payments, actor)) => Some((
            actor,
            "no longer found with every fact and line of its payment",
            None,
            Some(payments),
            false,
            Some(actor),
        )),
    };
    // The open breaks in it this run no longer finds are resolved `auto` (an operator's resolution of the same
    // break at the same moment wins: nothing collides); one audit record for all of them.
    let mut cleared: Option<(&str, &str, Vec<String>)> = None;
    if let Some((actor, reason, psps, payments, batches_only, own)) = whole {
        let rows = tx
            .query(
                "INSERT INTO recon_resolutions (break_id, resolution, reason, ticket, actor)
                 SELECT b.break_id, 'auto', $2, '-', $3
                   FROM recon_breaks b
                  WHERE b.break_id <> ALL($1)
                    AND ($4::text[] IS NULL OR b.psp = ANY($4))
                    AND ($5::text[] IS NULL OR b.payment_id = ANY($5))
                    AND (NOT $6 OR b.kind = 'missing_batch')
                    AND ($7::text IS NULL OR b.found_by = $7)
                    AND NOT EXISTS (SELECT 1 FROM recon_resolutions r WHERE r.break_id = b.break_id)
                 ON CONFLICT (break_id) DO NOTHING
                 RETURNING break_id",
                &[&ids, &reason, &actor, &psps, &payments, &batches_only, &own],
            )
            .await?;
        cleared = Some((actor, reason, rows.iter().map(|r| r.get(0)).collect()));
    }
    if let Some((actor, reason, mut resolved)) = cleared.filter(|(_, _, r)| !r.is_empty()) {
        resolved.sort();
        let entry = tally_audit::Entry {
            actor: actor.to_owned(),
            action: "recon.breaks.auto_resolve".into(),
            reason: Some(reason.to_owned()),
            after: Some("auto".into()),
            detail: Some(serde_json::json!({ "breaks": resolved })),
            ..tally_audit::Entry::default()
        };
        tally_audit::append(&tx, &entry).await?;
    }
    let open: Vec<String> = tx
        .query(
            "SELECT b FROM unnest($1::text[]) b WHERE NOT EXISTS (SELECT 1 FROM recon_resolutions r WHERE r.break_id = b)",
            &[&ids],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    tx.commit().await?;
    Ok((open, inserted as usize))
}

/// Stored breaks, newest first: all, or only the open ones; of one type, or of every type.
pub async fn list_breaks(
    pool: &Pool,
    open_only: bool,
    kind: Option<&str>,
    id: Option<&str>,
) -> Result<Vec<StoredBreak>, StoreError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT b.break_id, b.kind, b.psp, b.payment_id, b.file_name, b.line,
                    CASE WHEN b.topic IS NULL THEN NULL ELSE b.topic || '[' || b.kafka_partition || ']@' || b.kafka_offset END,
                    b.amount_minor, b.currency, b.detail,
                    to_char(b.first_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                    r.resolution, r.actor, r.reason, r.ticket, r.journal_sha256, r.approved_by
               FROM recon_breaks b LEFT JOIN recon_resolutions r ON r.break_id = b.break_id
              WHERE ($1::bool IS FALSE OR r.break_id IS NULL) AND ($2::text IS NULL OR b.kind = $2)
                AND ($3::text IS NULL OR b.break_id = $3)
              ORDER BY b.first_seen DESC, b.break_id",
            &[&open_only, &kind, &id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| StoredBreak {
            break_id: r.get(0),
            kind: r.get(1),
            psp: r.get(2),
            payment_id: r.get(3),
            file: r.get(4),
            line: r.get(5),
            fact: r.get(6),
            amount_minor: r.get(7),
            currency: r.get(8),
            detail: r.get(9),
            first_seen: r.get(10),
            resolution: r.get(11),
            resolved_by: r.get(12),
            reason: r.get(13),
            ticket: r.get(14),
            journal_sha256: r.get(15),
            approved_by: r.get(16),
        })
        .collect())
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no break {0}")]
    NoSuchBreak(String),
    #[error("break {id} was resolved already ({resolution} by {actor})")]
    AlreadyResolved { id: String, resolution: String, actor: String },
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<tokio_postgres::Error> for ResolveError {
    fn from(e: tokio_postgres::Error) -> Self {
        ResolveError::Store(StoreError::Db(e))
    }
}

/// Resolves one break, once, attributably, without booking anything. A resolution that books money is proposed
/// ([`propose`]) and approved by another operator ([`approve`]).
pub async fn resolve(
    pool: &Pool,
    id: &str,
    resolution: Resolution,
    reason: &str,
    ticket: &str,
    actor: &str,
) -> Result<(), ResolveError> {
    attributable(reason, ticket, actor)?;
    if resolution == Resolution::Auto {
        return Err(ResolveError::Refused(
            "auto is recorded by a full `tally recon psp` run when it no longer finds a break, not by hand".into(),
        ));
    }
    if resolution == Resolution::FixedByBooking {
        return Err(ResolveError::Refused(
            "fixed_by_booking books a correction journal, which a second operator approves: propose it with \
             `--journal FILE`, then another operator runs `tally recon breaks approve ID --journal-sha256 HASH`"
                .into(),
        ));
    }
    let mut client = pool.get().await.map_err(StoreError::from)?;
    let tx = client.transaction().await?;
    open_break(&tx, id).await?;
    tx.execute(
        "INSERT INTO recon_resolutions (break_id, resolution, reason, ticket, actor) VALUES ($1, $2, $3, $4, $5)",
        &[&id, &resolution.as_str(), &reason, &ticket, &actor],
    )
    .await?;
    let entry = tally_audit::Entry {
        actor: actor.to_owned(),
        action: "recon.break.resolve".into(),
        subject: Some(format!("break:{id}")),
        reason: Some(reason.to_owned()),
        ticket: Some(ticket.to_owned()),
        before: Some("open".into()),
        after: Some(resolution.as_str().into()),
        ..tally_audit::Entry::default()
    };
    tally_audit::append(&tx, &entry).await?;
    tx.commit().await?;
    Ok(())
}

/// A correction journal proposed for a break (the maker's half of `fixed_by_booking`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Proposal {
    pub break_id: String,
    pub journal: tally_ledger::corrections::JournalFile,
    pub journal_sha256: String,
    pub proposed_by: String,
    pub reason: String,
    pub ticket: String,
    pub proposed_at: String,
}

/// The cause a break's correction is booked for; part of the hashed text, so an approval binds the break.
pub fn correction_cause(break_id: &str) -> String {
    format!("recon_break:{break_id}")
}

fn attributable(reason: &str, ticket: &str, actor: &str) -> Result<(), ResolveError> {
    if reason.trim().is_empty() || ticket.trim().is_empty() || actor.trim().is_empty() {
        return Err(ResolveError::Refused("a resolution needs a reason, a ticket and an actor".into()));
    }
    Ok(())
}

/// Takes the break's lock for the rest of `tx` and checks it exists and is unresolved.
async fn open_break(tx: &tokio_postgres::Transaction<'_>, id: &str) -> Result<(), ResolveError> {
    tx.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 16))", &[&id]).await?;
    if tx.query_opt("SELECT 1 FROM recon_breaks WHERE break_id = $1", &[&id]).await?.is_none() {
        return Err(ResolveError::NoSuchBreak(id.to_owned()));
    }
    if let Some(r) = tx.query_opt("SELECT resolution, actor FROM recon_resolutions WHERE break_id = $1", &[&id]).await?
    {
        return Err(ResolveError::AlreadyResolved { id: id.to_owned(), resolution: r.get(0), actor: r.get(1) });
    }
    Ok(())
}

/// The maker proposes a correction journal for an open break: checked against the chart and for balance, stored
/// append-only with its hash (which the checker approves). Proposing the same journal again changes nothing.
pub async fn propose(
    pool: &Pool,
    id: &str,
    journal: &tally_ledger::corrections::JournalFile,
    reason: &str,
    ticket: &str,
    actor: &str,
) -> Result<Proposal, ResolveError> {
    attributable(reason, ticket, actor)?;
    let correction = journal.correction(&correction_cause(id)).map_err(|e| ResolveError::Refused(e.to_string()))?;
    let hash = tally_ledger::corrections::sha256(&correction);
    let canonical = tally_ledger::corrections::JournalFile::of(&correction);
    let mut client = pool.get().await.map_err(StoreError::from)?;
    let tx = client.transaction().await?;
    open_break(&tx, id).await?;
    let journal = serde_json::to_value(&canonical).map_err(|e| ResolveError::Refused(e.to_string()))?;
    let inserted = tx
        .execute(
            "INSERT INTO recon_proposals (break_id, journal, journal_sha256, proposed_by, reason, ticket)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (break_id, journal_sha256) DO NOTHING",
            &[&id, &journal, &hash, &actor, &reason, &ticket],
        )
        .await?;
    if inserted > 0 {
        let entry = tally_audit::Entry {
            actor: actor.to_owned(),
            action: "recon.break.propose".into(),
            subject: Some(format!("break:{id}")),
            reason: Some(reason.to_owned()),
            ticket: Some(ticket.to_owned()),
            plan: Some(hash.clone()),
            detail: Some(serde_json::json!({ "journal": journal })),
            ..tally_audit::Entry::default()
        };
        tally_audit::append(&tx, &entry).await?;
    }
    tx.commit().await?;
    let mut stored = proposals(pool, id).await?;
    stored.retain(|p| p.journal_sha256 == hash);
    stored.pop().ok_or_else(|| ResolveError::Refused(format!("proposal {hash} for break {id} vanished")))
}

/// The proposals made for a break, oldest first.
pub async fn proposals(pool: &Pool, id: &str) -> Result<Vec<Proposal>, StoreError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT break_id, journal, journal_sha256, proposed_by, reason, ticket,
                    to_char(proposed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
               FROM recon_proposals WHERE break_id = $1 ORDER BY id",
            &[&id],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Proposal {
                break_id: r.get(0),
                journal: serde_json::from_value(r.get(1)).map_err(|e| StoreError::Row(e.to_string()))?,
                journal_sha256: r.get(2),
                proposed_by: r.get(3),
                reason: r.get(4),
                ticket: r.get(5),
                proposed_at: r.get(6),
            })
        })
        .collect()
}

/// The checker approves a proposal by its hash: in one transaction the correction journal is booked (its entries,
/// the balances) and the break resolved `fixed_by_booking` — the maker as actor, the checker as approver, who must
/// be someone else. The database holds the same rules (migrations 0011, 0015).
pub async fn approve(
    pool: &Pool,
    id: &str,
    journal_sha256: &str,
    approver: &str,
) -> Result<tally_ledger::corrections::Booked, ResolveError> {
    if approver.trim().is_empty() {
        return Err(ResolveError::Refused("an approval needs an approver".into()));
    }
    let mut client = pool.get().await.map_err(StoreError::from)?;
    let tx = client.transaction().await?;
    open_break(&tx, id).await?;
    let Some(row) = tx
        .query_opt(
            "SELECT journal, proposed_by, reason, ticket FROM recon_proposals WHERE break_id = $1 AND journal_sha256 = $2",
            &[&id, &journal_sha256],
        )
        .await?
    else {
        return Err(ResolveError::Refused(format!(
            "break {id} has no proposed journal {journal_sha256} (`tally recon breaks show {id}` lists its proposals)"
        )));
    };
    let (maker, reason, ticket): (String, String, String) = (row.get(1), row.get(2), row.get(3));
    if maker == approver {
        return Err(ResolveError::Refused(format!(
            "{approver} proposed this journal: a second operator approves it (maker-checker)"
        )));
    }
    let journal: tally_ledger::corrections::JournalFile =
        serde_json::from_value(row.get(0)).map_err(|e| StoreError::Row(e.to_string()))?;
    let correction = journal.correction(&correction_cause(id)).map_err(|e| ResolveError::Refused(e.to_string()))?;
    if tally_ledger::corrections::sha256(&correction) != journal_sha256 {
        return Err(ResolveError::Refused(format!("the stored proposal no longer hashes to {journal_sha256}")));
    }
    let approval = tally_ledger::corrections::Approval {
        proposed_by: &maker,
        approved_by: approver,
        reason: &reason,
        ticket: &ticket,
    };
    let before = balances_checksum(&tx, &correction).await?;
    let booked = tally_ledger::corrections::book(&tx, &correction, approval).await?;
    let after = balances_checksum(&tx, &correction).await?;
    tx.execute(
        "INSERT INTO recon_resolutions (break_id, resolution, reason, ticket, actor, journal_sha256, approved_by)
         VALUES ($1, 'fixed_by_booking', $2, $3, $4, $5, $6)",
        &[&id, &reason, &ticket, &maker, &journal_sha256, &approver],
    )
    .await?;
    let entry = tally_audit::Entry {
        actor: approver.to_owned(),
        action: "ledger.correction.book".into(),
        subject: Some(format!("break:{id}")),
        reason: Some(reason.clone()),
        ticket: Some(ticket.clone()),
        before: Some(before),
        after: Some(after),
        plan: Some(journal_sha256.to_owned()),
        detail: Some(serde_json::json!({
            "proposed_by": maker,
            "correction_id": booked.correction_id.to_string(),
            "journal_id": booked.journal_id,
            "resolution": "fixed_by_booking",
        })),
        ..tally_audit::Entry::default()
    };
    tally_audit::append(&tx, &entry).await?;
    tx.commit().await?;
    Ok(booked)
}

/// A checksum of the balances a correction touches (account, currency, balance per line, sorted): the audit
/// record's `before` and `after`.
async fn balances_checksum(
    tx: &tokio_postgres::Transaction<'_>,
    correction: &tally_domain::ledger::Correction,
) -> Result<String, tokio_postgres::Error> {
    let (accounts, currencies): (Vec<String>, Vec<String>) =
        correction.entries().iter().map(|e| (e.account.to_string(), e.money.currency.code().to_owned())).unzip();
    let rows = tx
        .query(
            "SELECT u.a, u.c, coalesce(b.balance_minor, 0)
               FROM (SELECT DISTINCT * FROM unnest($1::text[], $2::text[])) AS u(a, c)
               LEFT JOIN account_balances b ON b.account = u.a AND b.currency = u.c
              ORDER BY 1, 2",
            &[&accounts, &currencies],
        )
        .await?;
    let text: String = rows
        .iter()
        .map(|r| format!("{}\t{}\t{}\n", r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, i64>(2)))
        .collect();
    Ok(tally_audit::checksum(text.as_bytes()))
}
