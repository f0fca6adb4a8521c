//! `tally merchants create|create-key|revoke-key`: the payments API's merchants and their keys (tally_api::merchants).

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use tally_api::merchants::{self, Merchant};
use tally_domain::Psp;

use crate::config::Config;

#[derive(Subcommand)]
pub enum MerchantsCommand {
    /// Create a merchant of the API (the same settings again change nothing; other settings are refused).
    Create {
        #[arg(long)]
        id: String,
        /// The PSPs it may be routed to, preferred first.
        #[arg(long, value_delimiter = ',', required = true)]
        psps: Vec<Psp>,
        /// Route a new payment to the next PSP while the first's circuit breaker is open.
        #[arg(long)]
        failover: bool,
        /// The Stripe connected account its payments are made on (`acct_…`); none: the platform's own account.
        #[arg(long)]
        stripe_account: Option<String>,
        /// The Adyen merchant account (required with adyen).
        #[arg(long)]
        adyen_merchant_account: Option<String>,
        /// Requests per second it may make.
        #[arg(long, default_value_t = 100)]
        rate: u32,
    },
    /// Create an API key for a merchant: printed once, only its hash is kept.
    CreateKey {
        #[arg(long)]
        merchant: String,
    },
    /// Revoke a key by its id (the 16 hex digits after `tally_sk_`): it stops working at once.
    RevokeKey {
        #[arg(long)]
        key_id: String,
    },
}

pub fn run(cmd: MerchantsCommand, config: &Config) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let pool = tally_postgres::pool(&config.postgres)?;
        tally_postgres::migrate(&pool).await.context("migrations")?;
        let client = pool.get().await.context("connecting to PostgreSQL")?;
        match cmd {
            MerchantsCommand::Create { id, psps, failover, stripe_account, adyen_merchant_account, rate } => {
                let m = Merchant {
                    merchant_id: id,
                    psps,
                    failover,
                    stripe_account,
                    adyen_merchant_account,
                    rate_per_second: rate,
                };
                match merchants::create(&client, &m).await {
                    Ok(()) => {
                        println!("merchant {} routed to {:?}", m.merchant_id, m.psps);
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(tally_api::store::StoreError::Refused(why)) => {
                        eprintln!("refused: {why}");
                        Ok(ExitCode::from(2))
                    }
                    Err(e) => Err(e.into()),
                }
            }
            MerchantsCommand::CreateKey { merchant } => match merchants::create_key(&client, &merchant).await {
                Ok(key) => {
                    println!("{}", key.expose());
                    eprintln!("the key is shown once: only its hash is kept");
                    Ok(ExitCode::SUCCESS)
                }
                Err(tally_api::store::StoreError::Refused(why)) => {
                    eprintln!("refused: {why}");
                    Ok(ExitCode::from(2))
                }
                Err(e) => Err(e.into()),
            },
            MerchantsCommand::RevokeKey { key_id } => {
                if merchants::revoke_key(&client, &key_id).await? {
                    println!("revoked {key_id}");
                    Ok(ExitCode::SUCCESS)
                } else {
                    eprintln!("no active key {key_id}");
                    Ok(ExitCode::from(2))
                }
            }
        }
    })
}
