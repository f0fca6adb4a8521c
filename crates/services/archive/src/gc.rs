//! `tally archive gc`: removes archive objects that are not in the manifest — files written by an attempt that
//! crashed (or was fenced) between writing the object and committing the manifest row. Young files are kept: a live
//! sink is between those two steps for a moment, and its file must not be taken from under it.

use std::collections::HashSet;
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
    /// Orphans younger than the minimum age, left for now.
    pub kept_young: Vec<String>,
    /// `.parquet` objects whose name is not an archive name: never touched.
    pub foreign: Vec<String>,
    pub dry_run: bool,
}

pub async fn gc(pool: &Pool, objects: &Objects, min_age: Duration, dry_run: bool) -> Result<GcReport, GcError> {
    let manifest: HashSet<String> = list_files(pool).await?.into_iter().map(|f| f.path).collect();
    let listed: Vec<Listed> = objects.list().await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let min_age = i64::try_from(min_age.as_secs()).unwrap_or(i64::MAX);
    let mut report = GcReport { dry_run, ..GcReport::default() };
    for object in listed {
        if parse_object_path(&object.path).is_none() {
            report.foreign.push(object.path);
            continue;
        }
        report.listed += 1;
        if manifest.contains(&object.path) {
            report.in_manifest += 1;
        } else if now - object.modified_unix < min_age {
            report.kept_young.push(object.path);
        } else {
            if !dry_run {
                objects.delete(&object.path).await?;
                tracing::info!(path = %object.path, "removed an archive file outside the manifest");
            }
            report.orphans.push(object.path);
        }
    }
    Ok(report)
}
