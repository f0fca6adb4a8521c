//! Where archive files live: any `object_store` backend. A local directory by default; `s3://bucket/prefix` (and the
//! other URL schemes object_store knows) by configuration, through the same code path.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("archive location {location:?}: {reason}")]
    Location { location: String, reason: String },
}

/// An object listed in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub path: String,
    pub size: u64,
    /// Seconds since the epoch of the last modification.
    pub modified_unix: i64,
}

#[derive(Clone, Debug)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    location: String,
}

impl Objects {
    /// Opens `location`: a URL (`file:///abs/dir`, `s3://bucket/prefix`, `memory:///`) or a local directory path,
    /// created if missing.
    pub fn open(location: &str) -> Result<Objects, ObjectError> {
        let err = |reason: String| ObjectError::Location { location: location.to_owned(), reason };
        if location.contains("://") {
            let url = url::Url::parse(location).map_err(|e| err(e.to_string()))?;
            if url.scheme() == "file" {
                let dir = url.to_file_path().map_err(|()| err("not a local path".into()))?;
                return Self::local(&dir, location);
            }
            let (store, prefix) = object_store::parse_url(&url).map_err(|e| err(e.to_string()))?;
            return Ok(Objects { store: Arc::from(store), prefix, location: location.to_owned() });
        }
        Self::local(std::path::Path::new(location), location)
    }

    fn local(dir: &std::path::Path, location: &str) -> Result<Objects, ObjectError> {
        let err = |reason: String| ObjectError::Location { location: location.to_owned(), reason };
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let dir = dir.canonicalize().map_err(|e| err(e.to_string()))?;
        let store = LocalFileSystem::new_with_prefix(&dir).map_err(|e| err(e.to_string()))?;
        Ok(Objects { store: Arc::new(store), prefix: Path::default(), location: dir.display().to_string() })
    }

    /// Where the archive is, for people (the canonical directory of a local archive).
    pub fn location(&self) -> &str {
        &self.location
    }

    fn full(&self, path: &str) -> Path {
        let mut full = self.prefix.clone();
        for part in path.split('/') {
            full = full.child(part);
        }
        full
    }

    fn relative(&self, full: &Path) -> Option<String> {
        let parts: Vec<String> = full.prefix_match(&self.prefix)?.map(|p| p.as_ref().to_owned()).collect();
        Some(parts.join("/"))
    }

    /// Writes (or overwrites with the same bytes: names are deterministic) one object.
    pub async fn put(&self, path: &str, bytes: bytes::Bytes) -> Result<(), ObjectError> {
        self.store.put(&self.full(path), PutPayload::from(bytes)).await?;
        Ok(())
    }

    pub async fn get(&self, path: &str) -> Result<bytes::Bytes, ObjectError> {
        Ok(self.store.get(&self.full(path)).await?.bytes().await?)
    }

    pub async fn delete(&self, path: &str) -> Result<(), ObjectError> {
        self.store.delete(&self.full(path)).await?;
        Ok(())
    }

    /// Every `.parquet` object under the archive.
    pub async fn list(&self) -> Result<Vec<Listed>, ObjectError> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let metas: Vec<object_store::ObjectMeta> = self.store.list(prefix).try_collect().await?;
        let mut out: Vec<Listed> = metas
            .into_iter()
            .filter_map(|m| {
                let path = self.relative(&m.location)?;
                path.ends_with(".parquet").then(|| Listed {
                    path,
                    size: m.size,
                    modified_unix: m.last_modified.timestamp(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }
}
