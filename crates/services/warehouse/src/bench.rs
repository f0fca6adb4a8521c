//! The warehouse sink's own path measured (`tally bench warehouse`): the sink over records from memory (the real
//! claim, decode, enrichment, tokenization, landing, models and fenced offsets), beside DuckDB's appender writing
//! the same already-enriched rows into a table of the same columns with no key, offsets or models — what this
//! engine can write at most.

use std::path::Path;
use std::time::{Duration, Instant};

use tally_duckdb::duckdb;

use duckdb::types::Value;
use tally_reference::enrich::Reference;
use tally_sink::{Batching, LogRecord, MemorySource};
use tokio_util::sync::CancellationToken;

use crate::land::{event_row, Tokenizer};
use crate::sink::SinkError;
use crate::store::{StoreError, Warehouse};

/// What the sink did: records accounted for, time from its first commit to its last, and what the first held.
#[derive(Debug, Clone, Copy)]
pub struct SinkRun {
    pub records: u64,
    pub first_commit: u64,
    pub after_first: Duration,
    pub batches: u64,
}

/// Runs the sink over `records` from memory into a new file at `path`, until every record is accounted for.
pub fn sink_from_memory(
    path: &Path,
    records: Vec<LogRecord>,
    reference: Reference,
    batching: Batching,
    checkpoint_threshold: &str,
) -> Result<SinkRun, SinkError> {
    let total = records.len() as u64;
    let mut w =
        Warehouse::open(path, "bench", reference.clone(), Tokenizer::new(b"bench"), 86_400, checkpoint_threshold)?;
    w.set_reference(reference)?;
    let w = std::sync::Mutex::new(w);
    let mut source =
        MemorySource::new(records, |t, p| w.lock().expect("lock").claim(t, p)).map_err(SinkError::Config)?;
    let shutdown = CancellationToken::new();
    let (mut done, mut first, mut batches, mut since) = (0u64, 0u64, 0u64, None);
    tally_sink::run(&mut source, batching, &shutdown, |parts| {
        let landed = w.lock().expect("lock").commit(parts)?;
        done += landed.rows + landed.duplicates + landed.rejects;
        batches += 1;
        if since.is_none() {
            since = Some(Instant::now());
            first = done;
        }
        if done >= total {
            shutdown.cancel();
        }
        Ok::<(), SinkError>(())
    })?;
    Ok(SinkRun {
        records: done,
        first_commit: first,
        after_first: since.map_or(Duration::ZERO, |s| s.elapsed()),
        batches,
    })
}

/// Appends the rows the sink would land (enriched beforehand, not timed) with DuckDB's appender into a keyless
/// table of the same columns in a new file at `path`, and into the sink's own keyed table in a file beside it;
/// returns the time each appending and its commit took.
pub fn appender_baseline(path: &Path, records: &[LogRecord], reference: &Reference) -> Result<Baselines, StoreError> {
    let tokens = Tokenizer::new(b"bench");
    let mut rows: Vec<Vec<Value>> = Vec::with_capacity(records.len());
    for r in records {
        if let Ok(fact) = tally_contracts::decode_lifecycle_record(r.key.as_deref(), r.value.as_deref()) {
            rows.push(event_row(r, &fact, reference, &tokens, 0)?);
        }
    }
    let append = |conn: &mut duckdb::Connection, table: &str| -> Result<Duration, StoreError> {
        let started = Instant::now();
        let tx = conn.transaction()?;
        {
            let mut app = tx.appender(table)?;
            for row in &rows {
                app.append_row(duckdb::appender_params_from_iter(row))?;
            }
            app.flush()?;
        }
        tx.commit()?;
        Ok(started.elapsed())
    };
    // (2) The sink's own fact table, with its key: the floor the exactly-once key alone puts under any writer.
    let schema_path = path.with_extension("schema.duckdb");
    let schema = Warehouse::open(&schema_path, "bench", reference.clone(), tokens, 86_400, "1GB")?;
    let mut conn = schema.reader()?;
    let keyed = append(&mut conn, "fct_payment_events")?;
    drop((conn, schema));
    // (1) The same columns, from the sink's own schema, without its key.
    let mut conn = tally_duckdb::open(path).map_err(|tally_duckdb::DuckError::Duck(e)| e)?;
    conn.execute_batch(&format!(
        "ATTACH '{}' AS s (READ_ONLY); CREATE TABLE baseline AS SELECT * FROM s.fct_payment_events LIMIT 0; DETACH s;",
        schema_path.display()
    ))?;
    let bare = append(&mut conn, "baseline")?;
    Ok(Baselines { bare, keyed })
}

/// The appender's time for the same rows: into a keyless table of the same columns, and into the sink's own keyed
/// fact table; both in one transaction, without offsets, duplicate checks or models.
pub struct Baselines {
    pub bare: Duration,
    pub keyed: Duration,
}
