//! Importing report files, the one way `tally reports import`, the inbox and the demo all do it: which PSP wrote a
//! file (its header, unless told), Adyen's batch number (its file name), the parse (a file with any error is
//! refused whole), then — unless the same bytes are stored already — its lines' facts produced and durable, and only
//! then the file and its lines stored.

use std::path::Path;

use deadpool_postgres::Pool;
use tally_domain::{Psp, Timestamp};
use tally_kafka::{KafkaConfig, Producer};
use tally_psp::report::{Refused, Report};

use crate::booking::{BookError, Booking};
use crate::store::{self, Imported, StoreError};

/// Which PSP wrote a file, from its header.
pub fn sniff(bytes: &[u8]) -> Option<Psp> {
    let first = bytes.split(|&b| b == b'\n').next()?;
    let header = String::from_utf8_lossy(first);
    if header.contains("balance_transaction_id") {
        Some(Psp::Stripe)
    } else if header.contains("Psp Reference") {
        Some(Psp::Adyen)
    } else {
        None
    }
}

/// Adyen names its files `settlement_detail_report_batch_N.csv`.
pub fn batch_of(path: &Path) -> Option<u64> {
    let name = path.file_stem()?.to_str()?;
    let digits = name.rsplit_once("batch_")?.1;
    digits.parse().ok()
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading {0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: neither a Stripe nor an Adyen report header (say which with --psp)")]
    UnknownFormat(String),
}

/// Reads and parses one report file; `stripe` says how a Stripe report was run (the file does not).
pub fn parse_file(
    path: &Path,
    psp: Option<Psp>,
    stripe: &tally_psp::stripe::report::Options,
) -> Result<Result<Report, Refused>, ReadError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| ReadError::Io(name.clone(), e))?;
    let psp = psp.or_else(|| sniff(&bytes)).ok_or_else(|| ReadError::UnknownFormat(name.clone()))?;
    Ok(match psp {
        Psp::Stripe => tally_psp::stripe::report::parse(&name, &bytes, stripe),
        Psp::Adyen => tally_psp::adyen::report::parse(&name, &bytes, batch_of(path)),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Book(#[from] BookError),
}

/// Books a parsed report's lines (produced and durable) unless the same bytes were imported already — then
/// nothing is produced: the file's facts were, before it was recorded — and stores it.
pub async fn import(
    pool: &Pool,
    producer: &Producer,
    kafka: &KafkaConfig,
    report: &Report,
    received_at: Timestamp,
) -> Result<(Imported, Booking), ImportError> {
    let booking = if store::is_imported(pool, &report.sha256).await? {
        Booking::default()
    } else {
        crate::booking::produce(producer, kafka, report, received_at).await?
    };
    Ok((store::import(pool, report).await?, booking))
}
