//! `tally reference load merchants|fx FILE`: reference data into versioned tables (tally_warehouse::reference).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use tally_warehouse::reference::{load_fx, load_merchants, LoadError, Loaded};

use crate::config::Config;

#[derive(Subcommand)]
pub enum ReferenceCommand {
    /// Load reference data as a new version (the same content again changes nothing). Exit 1 when the file is
    /// refused (every error with its line and column; nothing loaded), 2 on usage or setup errors.
    Load {
        #[command(subcommand)]
        what: LoadWhat,
    },
}

#[derive(Subcommand)]
pub enum LoadWhat {
    /// The merchant dimension (SCD2, CSV or Parquet, columns by name: merchant_id, valid_from, valid_to, legal_name,
    /// country, mcc, settlement_currency, risk_tier, stripe_percent, stripe_fixed_minor, adyen_percent,
    /// adyen_fixed_minor).
    Merchants {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// ECB euro reference rates as published: eurofxref.csv, eurofxref-hist.csv or eurofxref-hist.zip.
    Fx {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: ReferenceCommand, config: &Config) -> Result<ExitCode> {
    let ReferenceCommand::Load { what } = cmd;
    let (kind, file, json) = match what {
        LoadWhat::Merchants { file, json } => ("merchants", file, json),
        LoadWhat::Fx { file, json } => ("fx", file, json),
    };
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let name = file.display().to_string();
    // The audit record's actor: the operator, as for every audited action (TALLY_OPERATOR), else the login.
    let actor = std::env::var("TALLY_OPERATOR")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "tally reference load".into());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let pool = tally_postgres::pool(&config.postgres)?;
        tally_postgres::migrate(&pool).await?;
        let result = match kind {
            "merchants" => load_merchants(&pool, &actor, &name, &bytes).await,
            _ => load_fx(&pool, &actor, &name, &bytes).await,
        };
        match result {
            Ok(loaded) => {
                report(&loaded, json)?;
                Ok(ExitCode::SUCCESS)
            }
            Err(
                e @ (LoadError::Refused { .. }
                | LoadError::History { .. }
                | LoadError::Zip(..)
                | LoadError::Parquet(..)),
            ) => {
                refused(&e, json)?;
                Ok(ExitCode::from(1))
            }
            Err(e) => Err(e.into()),
        }
    })
}

fn report(l: &Loaded, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(l)?);
    } else if l.already_loaded {
        println!(
            "{}: this content is version {} already ({} rows, sha256 {}); nothing changed",
            l.kind, l.version_id, l.rows, l.content_hash
        );
    } else {
        println!(
            "{}: loaded as version {}: {} rows, {} changes, sha256 {}",
            l.kind, l.version_id, l.rows, l.changes, l.content_hash
        );
    }
    Ok(())
}

fn refused(e: &LoadError, json: bool) -> Result<()> {
    let lines: Vec<String> = match e {
        LoadError::Refused { refused, .. } => refused.errors.iter().map(ToString::to_string).collect(),
        LoadError::History { reasons, .. } => reasons.clone(),
        other => vec![other.to_string()],
    };
    if json {
        println!("{}", serde_json::json!({ "refused": true, "errors": lines }));
    } else {
        println!("REFUSED, nothing loaded: {} error(s)", lines.len());
        for l in &lines {
            println!("  {l}");
        }
    }
    Ok(())
}
