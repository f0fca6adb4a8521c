//! `tally archive gc`: removes archive objects that are not in the manifest — files written by an attempt that
//! crashed (or was fenced) between writing the object and committing the manifest row.
//!
//! An object is garbage only if it can never be committed: its range starts below the archive sink's stored offset
//! for its partition (every later commit starts at or above that offset), and the manifest — read again after the
//! offsets — does not hold it. A file at the stored offset may be a live sink's, between its two steps, or the same
//! range about to be written again: it is kept. Young files are kept as well, as a second guard.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use deadpool_postgres::Pool;
use serde::Serialize;

use crate::file::parse_object_path;
use crate::manifest::list_files;
use crate::objects::{Listed, Objects};

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Manifest(#[from] crate::ManifestError),
    #[error(transparent)]
    Objects(#[from] crate::ObjectError),
}

#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    /// Archive-named objects in the store.
    pub listed: usize,
    pub in_manifest: usize,
    /// Objects outside the manifest that were (or, with `dry_run`, would be) removed.
    pub orphans: Vec<String>,
    /// Outside the manifest but younger than the minimum age, or at or past the stored offset (a sink may still
    /// commit it): left for now.
    pub kept: Vec<String>,
    /// `.parquet` objects whose name is not an archive name: never touched.
    pub foreign: Vec<String>,
    pub dry_run: bool,
}

pub async fn gc(
    pool: &Pool,
    objects: &Objects,
    group: &str,
    min_age: Duration,
    dry_run: bool,
) -> Result<GcReport, GcError> {
    let listed: Vec<Listed> = objects.list().await?;
    // After listing: the offsets, then the manifest (a file committed meanwhile is in it, or below the offsets).
    let client = pool.get().await.map_err(|e| GcError::Manifest(e.into()))?;
    let rows = client
        .query("SELECT topic, kafka_partition, next_offset FROM sink_offsets WHERE group_id = $1", &[&group])
        .await
        .map_err(|e| GcError::Manifest(e.into()))?;
    let next: HashMap<(String, i32), i64> = rows.iter().map(|r| ((r.get(0), r.get(1)), r.get(2))).collect();
    let manifest: HashSet<String> = list_files(pool).await?.into_iter().map(|f| f.path).collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let min_age = i64::try_from(min_age.as_secs()).unwrap_or(i64::MAX);
    let mut report = GcReport { dry_run, ..GcReport::default() };
    for object in listed {
        let Some((topic, partition, start, _)) = parse_object_path(&object.path) else {
            report.foreign.push(object.path);
            continue;
        };
        report.listed += 1;
        if manifest.contains(&object.path) {
            report.in_manifest += 1;
            continue;
        }
        let committable = next.get(&(topic, partition)).is_none_or(|n| start >= *n);
        if committable || now - object.modified_unix < min_age {
            report.kept.push(object.path);
            continue;
        }
        if !dry_run {
            objects.delete(&object.path).await?;
            tracing::info!(path = %object.path, "removed an archive file outside the manifest");
        }
        report.orphans.push(object.path);
    }
    Ok(report)
}
