//! Forward-only migrations from `migrations/`, applied in order, each in its own transaction, under an advisory lock
//! so that concurrent starters do not race. An applied migration whose file changed is an error, not a re-run.

use deadpool_postgres::Pool;
use sha2::{Digest, Sha256};

use crate::PgError;

pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "ingest", sql: include_str!("../../../../migrations/0001_ingest.sql") },
    Migration { version: 2, name: "ledger", sql: include_str!("../../../../migrations/0002_ledger.sql") },
    Migration { version: 3, name: "archive", sql: include_str!("../../../../migrations/0003_archive.sql") },
    Migration {
        version: 4,
        name: "edge_exceptions",
        sql: include_str!("../../../../migrations/0004_edge_exceptions.sql"),
    },
    Migration { version: 5, name: "log_anchor", sql: include_str!("../../../../migrations/0005_log_anchor.sql") },
    Migration {
        version: 6,
        name: "edge_claim_content",
        sql: include_str!("../../../../migrations/0006_edge_claim_content.sql"),
    },
    Migration {
        version: 7,
        name: "archive_money_sum",
        sql: include_str!("../../../../migrations/0007_archive_money_sum.sql"),
    },
    Migration { version: 8, name: "reference", sql: include_str!("../../../../migrations/0008_reference.sql") },
    Migration {
        version: 9,
        name: "ledger_statement_checks",
        sql: include_str!("../../../../migrations/0009_ledger_statement_checks.sql"),
    },
    Migration {
        version: 10,
        name: "settlement_reports",
        sql: include_str!("../../../../migrations/0010_settlement_reports.sql"),
    },
    Migration { version: 11, name: "recon_breaks", sql: include_str!("../../../../migrations/0011_recon_breaks.sql") },
    Migration {
        version: 12,
        name: "edge_claim_time",
        sql: include_str!("../../../../migrations/0012_edge_claim_time.sql"),
    },
    Migration { version: 13, name: "recon_shadow", sql: include_str!("../../../../migrations/0013_recon_shadow.sql") },
    Migration {
        version: 14,
        name: "recon_break_finder",
        sql: include_str!("../../../../migrations/0014_recon_break_finder.sql"),
    },
    Migration { version: 15, name: "corrections", sql: include_str!("../../../../migrations/0015_corrections.sql") },
    Migration { version: 16, name: "audit", sql: include_str!("../../../../migrations/0016_audit.sql") },
    Migration {
        version: 17,
        name: "correction_guards",
        sql: include_str!("../../../../migrations/0017_correction_guards.sql"),
    },
    Migration { version: 18, name: "replay", sql: include_str!("../../../../migrations/0018_replay.sql") },
    Migration { version: 19, name: "payments_api", sql: include_str!("../../../../migrations/0019_payments_api.sql") },
];

/// An arbitrary constant: the advisory lock key of Tally's migrator.
const LOCK_KEY: i64 = 0x7a11_0001;

/// Applies every pending migration, all in one transaction that first takes the migrator's advisory lock (so that
/// concurrent starters queue instead of racing, even on creating the bookkeeping table). Returns the versions this
/// call applied.
pub async fn migrate(pool: &Pool) -> Result<Vec<i32>, PgError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version int PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await?;
    let mut applied_now = Vec::new();
    for m in MIGRATIONS {
        let checksum = hex::encode(Sha256::digest(m.sql.as_bytes()));
        let row = tx.query_opt("SELECT checksum FROM schema_migrations WHERE version = $1", &[&m.version]).await?;
        match row {
            Some(row) => {
                let applied: String = row.get(0);
                if applied != checksum {
                    return Err(PgError::MigrationChanged { version: m.version, name: m.name, applied, now: checksum });
                }
            }
            None => {
                tx.batch_execute(m.sql).await?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    &[&m.version, &m.name, &checksum],
                )
                .await?;
                applied_now.push(m.version);
            }
        }
    }
    tx.commit().await?;
    Ok(applied_now)
}
