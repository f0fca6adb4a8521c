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

/// The archived facts in `scope`, in (topic, partition, offset) order, with the manifest files read;
/// `progress(files done, files, records read)` is called after each file.
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
    for f in &files {
        let bytes = objects.get(&f.path).await?;
        let records = tokio::task::spawn_blocking(move || tally_archive::file::read_records(bytes))
            .await
            .map_err(|e| ReplayError::Archive(format!("reading {}: {e}", f.path)))??;
        read.files += 1;
        read.records += records.len() as u64;
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
                Err(_) => read.undecodable += 1,
            }
        }
        progress(read.files, total, read.records);
    }
    out.sort_by(|a, b| a.located.cmp(&b.located));
    Ok((out, read, files))
}
