//! `tally reports watch` (`[reports] inbox`, issue 15 §3): a directory the PSPs' report files are dropped into
//! (by an SFTP job, a sync of the PSP's report bucket, an operator). Each file is imported as `tally reports import`
//! does ([`crate::import`]) once it has stopped changing, then moved out of the way with what happened to it:
//!
//! - `imported/NAME` — stored and booked (or the same bytes were stored already: nothing changed);
//! - `refused/NAME` and `refused/NAME.errors.txt` — every error with file, line and column; nothing stored or
//!   booked. Fix the file and drop it in again.
//!
//! A file is taken when two looks `poll_ms` apart see the same size and modification time, and it did not change
//! while it was read (a file still being written is left alone); hidden files and names ending `.part`, `.tmp` or
//! `.partial` are never taken — uploads should arrive by rename. A failure that is not the file's (PostgreSQL or
//! the broker down) leaves it in place for the next look: nothing is lost.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tally_domain::Timestamp;
use tally_kafka::{KafkaConfig, Producer};
use tokio_util::sync::CancellationToken;

use crate::store::Imported;

/// `[reports]` in `tally.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportsConfig {
    /// The directory `tally reports watch` imports from (none: give `--inbox`).
    pub inbox: Option<PathBuf>,
    /// How often the inbox is looked at.
    pub poll_ms: u64,
    /// Where the watcher serves /metrics and /healthz.
    pub listen: String,
    /// Stripe reports: the account they were run for (not in the file).
    pub stripe_account: String,
}

impl Default for ReportsConfig {
    fn default() -> Self {
        ReportsConfig {
            inbox: None,
            poll_ms: 2_000,
            listen: "127.0.0.1:9467".into(),
            stripe_account: tally_psp::stripe::PLATFORM_MERCHANT.into(),
        }
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub imported: AtomicU64,
    pub unchanged: AtomicU64,
    pub refused: AtomicU64,
    pub facts_booked: AtomicU64,
    pub lines_not_booked: AtomicU64,
    pub retries: AtomicU64,
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, v) in [
            ("tally_reports_inbox_files_imported_total", "report files stored and booked", &self.imported),
            ("tally_reports_inbox_files_unchanged_total", "report files stored before (same bytes)", &self.unchanged),
            ("tally_reports_inbox_files_refused_total", "report files refused whole", &self.refused),
            ("tally_reports_inbox_facts_booked_total", "settlement facts produced", &self.facts_booked),
            ("tally_reports_inbox_lines_not_booked_total", "lines the books cannot take", &self.lines_not_booked),
            (
                "tally_reports_inbox_retries_total",
                "imports left for the next look (store or broker failed)",
                &self.retries,
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("no inbox: set [reports] inbox or give --inbox")]
    NoInbox,
    #[error("inbox {0}: {1}")]
    Dir(String, std::io::Error),
    #[error(transparent)]
    Postgres(#[from] tally_postgres::PgError),
    #[error(transparent)]
    Kafka(#[from] tally_kafka::KafkaError),
    #[error("listening on {0}: {1}")]
    Listen(String, std::io::Error),
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    Imported { facts: usize, not_booked: usize },
    Unchanged,
    Refused { errors: usize },
}

fn now() -> Timestamp {
    let micros = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0);
    Timestamp::from_unix_micros(micros).unwrap_or(Timestamp::from_unix_micros(0).expect("the epoch"))
}

fn candidate(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return false };
    path.is_file() && !name.starts_with('.') && ![".part", ".tmp", ".partial"].iter().any(|s| name.ends_with(s))
}

/// Moves `path` into `dir` under its name (or, if taken, its name with a numeric suffix).
fn move_into(path: &Path, dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut target = dir.join(&name);
    let mut n = 1;
    while target.exists() {
        target = dir.join(format!("{name}.{n}"));
        n += 1;
    }
    std::fs::rename(path, &target)?;
    Ok(target)
}

/// Watches the inbox until `shutdown`.
pub async fn watch(
    config: ReportsConfig,
    kafka: KafkaConfig,
    postgres: tally_postgres::PostgresConfig,
    shutdown: CancellationToken,
) -> Result<(), InboxError> {
    let dir = config.inbox.clone().ok_or(InboxError::NoInbox)?;
    std::fs::create_dir_all(&dir).map_err(|e| InboxError::Dir(dir.display().to_string(), e))?;
    let pool = tally_postgres::pool(&postgres)?;
    tally_postgres::migrate(&pool).await?;
    let producer = Producer::new(&kafka)?;
    let metrics = Arc::new(Metrics::default());
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| InboxError::Listen(config.listen.clone(), e))?;
    let m = metrics.clone();
    let http = crate::serve_health(listener, move || m.render(), shutdown.clone());
    tracing::info!(inbox = %dir.display(), "reports inbox watching");
    let stripe = tally_psp::stripe::report::Options { account: config.stripe_account.clone(), ..Default::default() };
    // A file's size and modification time at the previous look.
    let mut seen: HashMap<PathBuf, (u64, Option<SystemTime>)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(config.poll_ms.max(10)));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(inbox = %dir.display(), error = %e, "inbox unreadable; looking again");
                continue;
            }
        };
        let mut now_seen = HashMap::new();
        let mut paths: Vec<PathBuf> =
            entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| candidate(p)).collect();
        paths.sort();
        for path in paths {
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            let stamp = (meta.len(), meta.modified().ok());
            let stable = seen.get(&path) == Some(&stamp);
            now_seen.insert(path.clone(), stamp);
            if !stable {
                continue;
            }
            match take(&pool, &producer, &kafka, &path, &dir, &stripe, &metrics).await {
                Ok(taken) => {
                    now_seen.remove(&path);
                    tracing::info!(file = %path.display(), ?taken, "report file taken");
                }
                Err(e) => {
                    metrics.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(file = %path.display(), error = %e, "report file left in the inbox; retrying");
                }
            }
        }
        seen = now_seen;
    }
    let _ = http.await;
    Ok(())
}

/// Imports one file and moves it to `imported/` or `refused/`. An error leaves the file where it is.
pub async fn take(
    pool: &deadpool_postgres::Pool,
    producer: &Producer,
    kafka: &KafkaConfig,
    path: &Path,
    inbox: &Path,
    stripe: &tally_psp::stripe::report::Options,
    metrics: &Metrics,
) -> Result<Taken, Box<dyn std::error::Error + Send + Sync>> {
    let refuse = |reasons: String, errors: usize| -> Result<Taken, Box<dyn std::error::Error + Send + Sync>> {
        let moved = move_into(path, &inbox.join("refused"))?;
        let mut why = moved.clone().into_os_string();
        why.push(".errors.txt");
        std::fs::write(PathBuf::from(why), reasons)?;
        metrics.refused.fetch_add(1, Ordering::Relaxed);
        Ok(Taken::Refused { errors })
    };
    let stamp = |p: &Path| std::fs::metadata(p).map(|m| (m.len(), m.modified().ok()));
    let before = stamp(path)?;
    let parsed = crate::import::parse_file(path, None, stripe);
    // Still being written after all (a writer that paused longer than a look): leave it for a later look.
    if stamp(path)? != before {
        return Err(format!("{} changed while it was read", path.display()).into());
    }
    let parsed = match parsed {
        Ok(p) => p,
        Err(crate::import::ReadError::UnknownFormat(name)) => {
            return refuse(format!("{name}: neither a Stripe nor an Adyen report header\n"), 1)
        }
        Err(e) => return Err(e.into()),
    };
    let report = match parsed {
        Ok(r) => r,
        Err(refused) => {
            let mut text: String = refused.errors.iter().map(|e| format!("{e}\n")).collect();
            if refused.total > refused.errors.len() {
                text.push_str(&format!("… and {} more\n", refused.total - refused.errors.len()));
            }
            return refuse(text, refused.total);
        }
    };
    let (outcome, booking) = crate::import::import(pool, producer, kafka, &report, now()).await?;
    move_into(path, &inbox.join("imported"))?;
    for n in &booking.not_booked {
        tracing::warn!(file = %path.display(), line = n.line, reason = %n.reason, "report line not booked");
    }
    Ok(match outcome {
        Imported::Stored { .. } => {
            metrics.imported.fetch_add(1, Ordering::Relaxed);
            metrics.facts_booked.fetch_add(booking.facts as u64, Ordering::Relaxed);
            metrics.lines_not_booked.fetch_add(booking.not_booked.len() as u64, Ordering::Relaxed);
            Taken::Imported { facts: booking.facts, not_booked: booking.not_booked.len() }
        }
        Imported::AlreadyImported { .. } => {
            metrics.unchanged.fetch_add(1, Ordering::Relaxed);
            Taken::Unchanged
        }
    })
}
