//! Correction journals (I3): entries one operator proposed and a second approved, booked for a cause in the
//! caller's transaction (a reconciliation break's resolution; the replay issue's apply). The journal, its entries
//! and the balances move together; the database refuses a correction whose entries do not hash to the approved
//! journal, and any change to one afterwards (migration 0015).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tally_domain::ledger::{Account, Correction, CorrectionError, Entry};
use tally_money::{Amount, Currency, Money};
use uuid::Uuid;

use crate::PROCESSOR_VERSION;

/// A proposed journal as an operator writes it (`--journal FILE`): signed minor units, a debit positive and a
/// credit negative, as the ledger stores them. Every field is required; unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalFile {
    pub entries: Vec<FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub account: String,
    pub currency: String,
    pub amount_minor: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ProposalError {
    #[error("journal: {0}")]
    Json(#[from] serde_json::Error),
    #[error("journal entry {index}: {reason}")]
    Entry { index: usize, reason: String },
    #[error("journal: {0}")]
    Correction(#[from] CorrectionError),
}

impl JournalFile {
    /// The correction these entries make for `cause`, checked against the chart and for balance.
    pub fn correction(&self, cause: &str) -> Result<Correction, ProposalError> {
        let entries = self
            .entries
            .iter()
            .enumerate()
            .map(|(index, e)| {
                let account: Account = e.account.parse().map_err(|reason| ProposalError::Entry { index, reason })?;
                let currency = Currency::from_code(&e.currency)
                    .map_err(|err| ProposalError::Entry { index, reason: format!("currency: {err}") })?;
                Ok(Entry { account, money: Money::new(Amount::from_minor(e.amount_minor), currency) })
            })
            .collect::<Result<Vec<_>, ProposalError>>()?;
        Ok(Correction::new(cause, entries)?)
    }

    pub fn parse(bytes: &[u8]) -> Result<JournalFile, ProposalError> {
        Ok(serde_json::from_slice(bytes)?)
    }

    pub fn of(correction: &Correction) -> JournalFile {
        JournalFile {
            entries: correction
                .entries()
                .iter()
                .map(|e| FileEntry {
                    account: e.account.to_string(),
                    currency: e.money.currency.code().to_owned(),
                    amount_minor: e.money.amount.minor(),
                })
                .collect(),
        }
    }
}

/// The hash an approval names: SHA-256 of the correction's canonical text, lower-case hex.
pub fn sha256(correction: &Correction) -> String {
    hex::encode(Sha256::digest(correction.canonical().as_bytes()))
}

/// Who decided a correction, and why.
#[derive(Debug, Clone, Copy)]
pub struct Approval<'a> {
    pub proposed_by: &'a str,
    pub approved_by: &'a str,
    pub reason: &'a str,
    pub ticket: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Booked {
    pub correction_id: Uuid,
    pub journal_id: i64,
    pub journal_sha256: String,
}

/// A correction's id: deterministic in its cause, so that a cause is booked at most once.
pub fn correction_id(cause: &str) -> Uuid {
    Uuid::new_v5(&Uuid::from_u128(0x7a11_c077_ec71_0000_0000_0000_0000_0015), cause.as_bytes())
}

/// What a correction corrects, where it is one fact's (a replay's reversal or re-post): the fact, and the replay.
#[derive(Debug, Clone, Copy, Default)]
pub struct Link {
    pub fact_key: Option<Uuid>,
    pub replay_id: Option<Uuid>,
}

/// Books `correction` in `tx`: its record, one journal, its entries in order and the balances. The caller commits
/// (with its own record of why, e.g. the break's resolution); the database checks the binding at commit.
pub async fn book(
    tx: &tokio_postgres::Transaction<'_>,
    correction: &Correction,
    approval: Approval<'_>,
) -> Result<Booked, tokio_postgres::Error> {
    book_linked(tx, correction, approval, Link::default()).await
}

/// [`book`], naming the fact it corrects and the replay that books it (on the record and on every entry, I6).
pub async fn book_linked(
    tx: &tokio_postgres::Transaction<'_>,
    correction: &Correction,
    approval: Approval<'_>,
    link: Link,
) -> Result<Booked, tokio_postgres::Error> {
    Ok(book_many(tx, &[(correction, link)], approval).await?.remove(0))
}

/// Books several corrections with one approval: every journal, then every balance they move in one statement, its
/// rows locked in sorted order (as the sinks' batches lock them), so that an apply of many corrections cannot
/// deadlock with a sink.
pub async fn book_many(
    tx: &tokio_postgres::Transaction<'_>,
    corrections: &[(&Correction, Link)],
    approval: Approval<'_>,
) -> Result<Vec<Booked>, tokio_postgres::Error> {
    let mut deltas: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut booked = Vec::with_capacity(corrections.len());
    for (correction, link) in corrections {
        booked.push(insert(tx, correction, approval, *link, &mut deltas).await?);
    }
    crate::store::add_to_balances(tx, deltas).await?;
    Ok(booked)
}

async fn insert(
    tx: &tokio_postgres::Transaction<'_>,
    correction: &Correction,
    approval: Approval<'_>,
    link: Link,
    deltas: &mut BTreeMap<(String, String), i64>,
) -> Result<Booked, tokio_postgres::Error> {
    let id = correction_id(correction.cause());
    let hash = sha256(correction);
    tx.execute(
        "INSERT INTO ledger_corrections (correction_id, cause, journal_sha256, proposed_by, approved_by, reason, ticket,
            fact_key, replay_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &id,
            &correction.cause(),
            &hash,
            &approval.proposed_by,
            &approval.approved_by,
            &approval.reason,
            &approval.ticket,
            &link.fact_key,
            &link.replay_id,
        ],
    )
    .await?;
    let journal_id: i64 = tx
        .query_one("INSERT INTO journals (correction_id, kind) VALUES ($1, 'correction') RETURNING journal_id", &[&id])
        .await?
        .get(0);
    let entries = correction.entries();
    let accounts: Vec<String> = entries.iter().map(|e| e.account.to_string()).collect();
    let currencies: Vec<&str> = entries.iter().map(|e| e.money.currency.code()).collect();
    let amounts: Vec<i64> = entries.iter().map(|e| e.money.amount.minor()).collect();
    tx.execute(
        "INSERT INTO entries (journal_id, account, currency, amount_minor, correction_id, processor_version, replay_id)
         SELECT $1, u.a, u.c, u.m, $5, $6, $7
           FROM unnest($2::text[], $3::text[], $4::bigint[]) WITH ORDINALITY AS u(a, c, m, n)
          ORDER BY u.n",
        &[&journal_id, &accounts, &currencies, &amounts, &id, &PROCESSOR_VERSION, &link.replay_id],
    )
    .await?;
    for ((a, c), m) in accounts.iter().zip(&currencies).zip(&amounts) {
        *deltas.entry((a.clone(), (*c).to_owned())).or_default() += m;
    }
    Ok(Booked { correction_id: id, journal_id, journal_sha256: hash })
}
