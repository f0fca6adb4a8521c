//! `tally reference load merchants|fx FILE`: a file is parsed whole by `tally_reference` (refused with every error's
//! line and column, nothing half-loaded), then applied in one transaction as a new reference version — or not at
//! all: the same content loaded again is the version it already is, and a merchant file that would rewrite history
//! is refused. Tables: `migrations/0008_reference.sql` (append-only; SCD2 closes are rows of their own).

use std::io::Read;

use deadpool_postgres::Pool;
use serde::Serialize;
use tally_reference::ecb::EcbRates;
use tally_reference::merchants::{merge, Change, MerchantDimension, MerchantVersion, Price};
use tally_reference::Refused;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{source_name}: refused, nothing loaded: {refused}")]
    Refused { source_name: String, refused: Refused },
    #[error("{source_name}: refused, nothing loaded: {}", reasons.join("; "))]
    History { source_name: String, reasons: Vec<String> },
    #[error("{0}: not a zip holding one CSV: {1}")]
    Zip(String, String),
    #[error("{0}: not a readable Parquet file: {1}")]
    Parquet(String, String),
    #[error("postgres: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("stored dimension: {0}")]
    Stored(String),
}

/// What a load did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Loaded {
    pub kind: &'static str,
    pub version_id: i64,
    pub content_hash: String,
    pub rows: i64,
    /// Rows written by this load (0: the content was loaded before, as `version_id`).
    pub changes: i64,
    pub already_loaded: bool,
}

const LOCK: &str = "SELECT pg_advisory_xact_lock(hashtextextended('tally-reference-' || $1, 0))";

async fn existing(
    tx: &tokio_postgres::Transaction<'_>,
    kind: &str,
    hash: &str,
) -> Result<Option<(i64, i64)>, LoadError> {
    Ok(tx
        .query_opt(
            "SELECT version_id, rows FROM reference_versions WHERE kind = $1 AND content_hash = $2",
            &[&kind, &hash],
        )
        .await?
        .map(|r| (r.get(0), r.get(1))))
}

/// The stored dimension, every version with its end if it has one.
pub async fn merchant_dimension(
    client: &impl deadpool_postgres::GenericClient,
) -> Result<Vec<MerchantVersion>, LoadError> {
    let rows = client
        .query(
            "SELECT merchant_id, valid_from, valid_to, legal_name, country, mcc, settlement_currency, risk_tier,
                    stripe_ppm, stripe_fixed_minor, adyen_ppm, adyen_fixed_minor
               FROM dim_merchant ORDER BY merchant_id, valid_from",
            &[],
        )
        .await?;
    rows.iter().map(merchant_version).collect()
}

/// A `dim_merchant`-shaped row (the first twelve columns).
fn merchant_version(r: &tokio_postgres::Row) -> Result<MerchantVersion, LoadError> {
    let code: String = r.get(6);
    let ppm = |i: usize| u32::try_from(r.get::<_, i32>(i)).map_err(|e| LoadError::Stored(e.to_string()));
    Ok(MerchantVersion {
        merchant_id: r.get(0),
        valid_from: r.get(1),
        valid_to: r.get(2),
        legal_name: r.get(3),
        country: r.get(4),
        mcc: r.get(5),
        settlement_currency: tally_money::Currency::from_code(&code).map_err(|e| LoadError::Stored(e.to_string()))?,
        risk_tier: r.get(7),
        stripe: Price { ppm: ppm(8)?, fixed_minor: r.get(9) },
        adyen: Price { ppm: ppm(10)?, fixed_minor: r.get(11) },
    })
}

/// Loads a merchant dimension file (CSV, `tally_reference::merchants`).
pub async fn load_merchants(pool: &Pool, actor: &str, source_name: &str, bytes: &[u8]) -> Result<Loaded, LoadError> {
    let csv = merchants_csv(source_name, bytes)?;
    let mut file = MerchantDimension::parse(&csv)
        .map_err(|refused| LoadError::Refused { source_name: source_name.to_owned(), refused })?;
    // The version is the hash of the file as given (the Parquet file's, when one was given).
    file.content_hash = tally_reference::content_hash(bytes);
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute(LOCK, &[&"merchants"]).await?;
    let rows = file.versions.len() as i64;
    if let Some((version_id, rows)) = existing(&tx, "merchants", &file.content_hash).await? {
        return Ok(Loaded {
            kind: "merchants",
            version_id,
            content_hash: file.content_hash,
            rows,
            changes: 0,
            already_loaded: true,
        });
    }
    let current = merchant_dimension(&tx).await?;
    let changes = merge(&current, &file)
        .map_err(|reasons| LoadError::History { source_name: source_name.to_owned(), reasons })?;
    let version_id: i64 = tx
        .query_one(
            "INSERT INTO reference_versions (kind, content_hash, source, rows, changes) VALUES ('merchants', $1, $2, $3, $4)
             RETURNING version_id",
            &[&file.content_hash, &source_name, &rows, &(changes.len() as i64)],
        )
        .await?
        .get(0);
    let (mut opens, mut closes) = (Vec::new(), Vec::new());
    for c in &changes {
        match c {
            Change::Open(v) => {
                opens.push(v);
                if let Some(to) = v.valid_to {
                    closes.push((v.merchant_id.clone(), v.valid_from, to));
                }
            }
            Change::Close { merchant_id, valid_from, valid_to } => {
                closes.push((merchant_id.clone(), *valid_from, *valid_to))
            }
        }
    }
    let col = |f: &dyn Fn(&MerchantVersion) -> String| opens.iter().map(|v| f(v)).collect::<Vec<String>>();
    let (ids, names, countries, mccs, currencies, tiers) = (
        col(&|v| v.merchant_id.clone()),
        col(&|v| v.legal_name.clone()),
        col(&|v| v.country.clone()),
        col(&|v| v.mcc.clone()),
        col(&|v| v.settlement_currency.code().to_owned()),
        col(&|v| v.risk_tier.clone()),
    );
    let froms: Vec<time::Date> = opens.iter().map(|v| v.valid_from).collect();
    let ppm = |p: &dyn Fn(&MerchantVersion) -> Price| -> (Vec<i32>, Vec<i64>) {
        opens.iter().map(|v| (i32::try_from(p(v).ppm).unwrap_or(i32::MAX), p(v).fixed_minor)).unzip()
    };
    let ((s_ppm, s_fixed), (a_ppm, a_fixed)) = (ppm(&|v| v.stripe), ppm(&|v| v.adyen));
    tx.execute(
        "INSERT INTO merchant_versions (merchant_id, valid_from, legal_name, country, mcc, settlement_currency, risk_tier,
            stripe_ppm, stripe_fixed_minor, adyen_ppm, adyen_fixed_minor, version_id)
         SELECT u.*, $12 FROM unnest($1::text[], $2::date[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::int[], $9::bigint[], $10::int[], $11::bigint[]) u",
        &[&ids, &froms, &names, &countries, &mccs, &currencies, &tiers, &s_ppm, &s_fixed, &a_ppm, &a_fixed, &version_id],
    )
    .await?;
    let (c_ids, c_froms, c_tos): (Vec<String>, Vec<time::Date>, Vec<time::Date>) =
        closes.into_iter().fold((vec![], vec![], vec![]), |mut acc, (m, f, t)| {
            acc.0.push(m);
            acc.1.push(f);
            acc.2.push(t);
            acc
        });
    tx.execute(
        "INSERT INTO merchant_version_ends (merchant_id, valid_from, valid_to, version_id)
         SELECT u.*, $4 FROM unnest($1::text[], $2::date[], $3::date[]) u",
        &[&c_ids, &c_froms, &c_tos, &version_id],
    )
    .await?;
    audit_load(&tx, actor, "merchants", source_name, &file.content_hash, version_id, rows, changes.len() as i64)
        .await?;
    tx.commit().await?;
    tracing::info!(version_id, rows, changes = changes.len(), "merchant dimension loaded");
    Ok(Loaded {
        kind: "merchants",
        version_id,
        content_hash: file.content_hash,
        rows,
        changes: changes.len() as i64,
        already_loaded: false,
    })
}

/// A merchant file as the CSV the parser reads: the bytes themselves, or a Parquet file's rows rendered as CSV by
/// DuckDB (columns by name, dates as `YYYY-MM-DD`, NULL as empty), so that both formats meet the same strict parser;
/// an error's line is then the row number + 1.
pub fn merchants_csv(source_name: &str, bytes: &[u8]) -> Result<Vec<u8>, LoadError> {
    if !bytes.starts_with(b"PAR1") {
        return Ok(bytes.to_vec());
    }
    let bad = |e: String| LoadError::Parquet(source_name.to_owned(), e);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("tally-merchants-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| bad(e.to_string()))?;
    let (parquet, csv) = (dir.join("in.parquet"), dir.join("out.csv"));
    let result = (|| {
        std::fs::write(&parquet, bytes).map_err(|e| bad(e.to_string()))?;
        let conn = tally_duckdb::duckdb::Connection::open_in_memory().map_err(|e| bad(e.to_string()))?;
        conn.execute_batch(&format!(
            "COPY (SELECT * FROM read_parquet('{}')) TO '{}' (HEADER, DELIMITER ',')",
            parquet.display(),
            csv.display()
        ))
        .map_err(|e| bad(e.to_string()))?;
        std::fs::read(&csv).map_err(|e| bad(e.to_string()))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The CSV inside an ECB zip (`eurofxref-hist.zip`), or the bytes themselves when they are not a zip.
pub fn ecb_csv(source_name: &str, bytes: &[u8]) -> Result<Vec<u8>, LoadError> {
    if !bytes.starts_with(b"PK\x03\x04") {
        return Ok(bytes.to_vec());
    }
    let bad = |e: String| LoadError::Zip(source_name.to_owned(), e);
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| bad(e.to_string()))?;
    if archive.len() != 1 {
        return Err(bad(format!("{} entries", archive.len())));
    }
    let mut entry = archive.by_index(0).map_err(|e| bad(e.to_string()))?;
    let mut out = Vec::new();
    entry.read_to_end(&mut out).map_err(|e| bad(e.to_string()))?;
    Ok(out)
}

/// Loads ECB euro reference rates: the daily CSV, the history CSV, or the history zip as published.
pub async fn load_fx(pool: &Pool, actor: &str, source_name: &str, bytes: &[u8]) -> Result<Loaded, LoadError> {
    let csv = ecb_csv(source_name, bytes)?;
    let rates =
        EcbRates::parse(&csv).map_err(|refused| LoadError::Refused { source_name: source_name.to_owned(), refused })?;
    // The version is the published file's hash (the zip's, when a zip was given).
    let hash = tally_reference::content_hash(bytes);
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute(LOCK, &[&"fx"]).await?;
    let (mut dates, mut codes, mut mantissas, mut scales) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (date, code, rate) in rates.all() {
        dates.push(date);
        codes.push(code.to_owned());
        mantissas.push(i64::try_from(rate.mantissa()).unwrap_or(i64::MAX));
        scales.push(i16::from(rate.scale()));
    }
    let rows = dates.len() as i64;
    if let Some((version_id, rows)) = existing(&tx, "fx", &hash).await? {
        return Ok(Loaded { kind: "fx", version_id, content_hash: hash, rows, changes: 0, already_loaded: true });
    }
    let version_id: i64 = tx
        .query_one(
            "INSERT INTO reference_versions (kind, content_hash, source, rows, changes) VALUES ('fx', $1, $2, $3, $3)
             RETURNING version_id",
            &[&hash, &source_name, &rows],
        )
        .await?
        .get(0);
    tx.execute(
        "INSERT INTO fx_rates (version_id, rate_date, currency, mantissa, scale)
         SELECT $1, u.* FROM unnest($2::date[], $3::text[], $4::bigint[], $5::smallint[]) u",
        &[&version_id, &dates, &codes, &mantissas, &scales],
    )
    .await?;
    audit_load(&tx, actor, "fx", source_name, &hash, version_id, rows, rows).await?;
    tx.commit().await?;
    tracing::info!(version_id, rows, "fx rates loaded");
    Ok(Loaded { kind: "fx", version_id, content_hash: hash, rows, changes: rows, already_loaded: false })
}

/// The last version loaded of each kind: (merchants, fx).
pub async fn latest_versions(
    client: &impl deadpool_postgres::GenericClient,
) -> Result<(Option<i64>, Option<i64>), LoadError> {
    let row = client
        .query_one(
            "SELECT max(version_id) FILTER (WHERE kind = 'merchants'), max(version_id) FILTER (WHERE kind = 'fx')
               FROM reference_versions",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// The reference data as it stood after the given versions (`None`: the latest): the merchant dimension with the
/// versions and closes loaded up to `merchants`, and every ECB rate loaded up to `fx` (a later load's rate for the
/// same day and currency wins). Enrichment with the same pair gives the same rows (I5).
pub async fn reference_state(
    client: &impl deadpool_postgres::GenericClient,
    reporting: tally_money::Currency,
    fx_max_age_days: i64,
    pinned: Option<(Option<i64>, Option<i64>)>,
) -> Result<tally_reference::enrich::Reference, LoadError> {
    let (merchants_version, fx_version) = match pinned {
        Some(p) => p,
        None => latest_versions(client).await?,
    };
    let (m, f) = (merchants_version.unwrap_or(0), fx_version.unwrap_or(0));
    let rows = client
        .query(
            "SELECT v.merchant_id, v.valid_from, e.valid_to, v.legal_name, v.country, v.mcc, v.settlement_currency,
                    v.risk_tier, v.stripe_ppm, v.stripe_fixed_minor, v.adyen_ppm, v.adyen_fixed_minor
               FROM merchant_versions v
               LEFT JOIN merchant_version_ends e ON e.merchant_id = v.merchant_id AND e.valid_from = v.valid_from
                                                AND e.version_id <= $1
              WHERE v.version_id <= $1",
            &[&m],
        )
        .await?;
    let versions = rows.iter().map(merchant_version).collect::<Result<Vec<_>, _>>()?;
    let rates = client
        .query(
            "SELECT rate_date, currency, mantissa, scale FROM fx_rates WHERE version_id <= $1 ORDER BY version_id",
            &[&f],
        )
        .await?;
    let mut fx = Vec::with_capacity(rates.len());
    for r in &rates {
        let (mantissa, scale): (i64, i16) = (r.get(2), r.get(3));
        let rate = tally_money::fx::Rate::new(
            u64::try_from(mantissa).map_err(|e| LoadError::Stored(e.to_string()))?,
            u8::try_from(scale).map_err(|e| LoadError::Stored(e.to_string()))?,
        )
        .map_err(|e| LoadError::Stored(e.to_string()))?;
        fx.push((r.get::<_, time::Date>(0), r.get::<_, String>(1), rate));
    }
    Ok(tally_reference::enrich::Reference {
        merchants: tally_reference::enrich::MerchantIndex::new(versions),
        merchants_version,
        fx: EcbRates::from_rates(fx, format!("fx<={f}")),
        fx_version,
        reporting,
        fx_max_age_days,
    })
}

/// The audit record of a reference-data load (I8), in the load's transaction: the version it made and the content
/// hash before (the kind's previous version) and after.
#[allow(clippy::too_many_arguments)]
async fn audit_load(
    tx: &tokio_postgres::Transaction<'_>,
    actor: &str,
    kind: &str,
    source_name: &str,
    content_hash: &str,
    version_id: i64,
    rows: i64,
    changes: i64,
) -> Result<(), tokio_postgres::Error> {
    let before: Option<String> = tx
        .query_opt(
            "SELECT content_hash FROM reference_versions WHERE kind = $1 AND version_id < $2
              ORDER BY version_id DESC LIMIT 1",
            &[&kind, &version_id],
        )
        .await?
        .map(|r| r.get(0));
    let entry = tally_audit::Entry {
        actor: actor.to_owned(),
        action: "reference.load".into(),
        subject: Some(format!("reference:{kind}")),
        before,
        after: Some(content_hash.to_owned()),
        detail: Some(
            serde_json::json!({ "source": source_name, "version_id": version_id, "rows": rows, "changes": changes }),
        ),
        ..tally_audit::Entry::default()
    };
    tally_audit::append(tx, &entry).await?;
    Ok(())
}
