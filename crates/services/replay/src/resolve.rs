//! Resolving a scope to the archived records it holds (issue 16 §1): every file of the archive's manifest is read
//! (event time is the fact's, not the file's: a late fact sits in any file), each lifecycle record decoded, and the
//! ones the scope contains kept with their exact position in the log. The broker's log is not needed.

use deadpool_postgres::Pool;
use tally_archive::objects::Objects;
use tally_contracts::ContractError;
use tally_domain::PaymentEvent;

use crate::scope::{Located, Scope};
use crate::ReplayError;

/// An archived fact in scope: where the log held it, and the fact.
#[derive(Debug, Clone)]
pub struct Archived {
    pub located: Located,
    pub event: PaymentEvent,
    /// The record as the log held it (the warehouse lands it again).
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
}

/// What a resolution read.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Read {
    pub files: u64,
    pub records: u64,
    /// Records of a lifecycle schema whose value did not decode (they are the DLQ's; counted, never guessed at).
    pub undecodable: u64,
}

/// What one file gave: its facts in scope, and its records read and undecodable.
type FileFacts = (Vec<Archived>, u64, u64);

/// The archived facts in `scope`, in (topic, partition, offset) order, with the manifest files read;
/// `progress(files done, files, records read)` is called after each file. Files are read and decoded on every
/// core (a few in flight, taken in manifest order).
pub async fn resolve(
    pool: &Pool,
    objects: &Objects,
    scope: &Scope,
    progress: &mut (dyn FnMut(u64, u64, u64) + Send),
) -> Result<(Vec<Archived>, Read, Vec<tally_archive::ManifestFile>), ReplayError> {
    let files = tally_archive::manifest::list_files(pool).await?;
    let mut read = Read::default();
    let mut out = Vec::new();
    let total = files.len() as u64;
    let workers = std::thread::available_parallelism().map_or(1, usize::from).clamp(1, 4);
    let mut in_flight: std::collections::VecDeque<tokio::task::JoinHandle<Result<FileFacts, ReplayError>>> =
        std::collections::VecDeque::new();
    let mut take = |done: Result<FileFacts, ReplayError>, read: &mut Read| -> Result<(), ReplayError> {
        let (facts, records, undecodable) = done?;
        read.files += 1;
        read.records += records;
        read.undecodable += undecodable;
        out.extend(facts);
        progress(read.files, total, read.records);
        Ok(())
    };
    for f in &files {
        if in_flight.len() >= workers {
            let done = in_flight.pop_front().expect("in flight").await;
            take(done.map_err(|e| ReplayError::Archive(e.to_string()))?, &mut read)?;
        }
        let bytes = objects.get(&f.path).await?;
        let (scope, path) = (scope.clone(), f.path.clone());
        in_flight.push_back(tokio::task::spawn_blocking(move || file_facts(bytes, &scope, &path)));
    }
    while let Some(handle) = in_flight.pop_front() {
        take(handle.await.map_err(|e| ReplayError::Archive(e.to_string()))?, &mut read)?;
    }
    out.sort_by(|a, b| a.located.cmp(&b.located));
    Ok((out, read, files))
}

/// One file's records decoded, and the scope's kept.
fn file_facts(bytes: bytes::Bytes, scope: &Scope, path: &str) -> Result<FileFacts, ReplayError> {
    let records =
        tally_archive::file::read_records(bytes).map_err(|e| ReplayError::Archive(format!("reading {path}: {e}")))?;
    let (mut out, mut undecodable) = (Vec::new(), 0);
    let n = records.len() as u64;
    for r in records {
        let Some(value) = r.value.as_deref() else { continue };
        match tally_contracts::decode_payment_event(value) {
            Ok(e) if scope.contains(&e.event) => out.push(Archived {
                located: Located { topic: r.topic, partition: r.partition, offset: r.offset, fact_key: e.fact_key },
                event: e.event,
                key: r.key,
                value: value.to_vec(),
            }),
            Ok(_) => {}
            // Another schema (raw deliveries): not a fact.
            Err(ContractError::WrongSchema { .. }) => {}
            Err(_) => undecodable += 1,
        }
    }
    Ok((out, n, undecodable))
}
