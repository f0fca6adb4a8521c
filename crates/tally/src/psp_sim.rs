//! `tally psp-sim`: the PSP simulator's fake Stripe on loopback (tally_sim::psp), for trying the payments API and for
//! its tests. It serves until SIGINT/SIGTERM.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use tally_domain::Secret;
use tally_sim::psp::stripe::{Sim, Webhooks};

#[derive(Args)]
pub struct PspSimArgs {
    /// Where the fake Stripe API listens (point `api.stripe.base_url` at it).
    #[arg(long, default_value = "127.0.0.1:12111")]
    listen: String,
    /// Send signed webhooks for what it does to this URL (ingest's `/webhooks/stripe`); the signing secret comes from
    /// `TALLY_PSP_SIM_WEBHOOK_SECRET` (an ingest `whsec_…`).
    #[arg(long)]
    webhook_url: Option<String>,
    /// How long after its API answer each webhook is sent.
    #[arg(long, default_value_t = 0)]
    webhook_delay_ms: u64,
}

pub fn run(args: PspSimArgs) -> Result<ExitCode> {
    let webhooks = match args.webhook_url {
        Some(url) => {
            let secret = std::env::var("TALLY_PSP_SIM_WEBHOOK_SECRET")
                .context("--webhook-url needs TALLY_PSP_SIM_WEBHOOK_SECRET (the ingest endpoint's whsec_…)")?;
            Some(Webhooks { url, secret: Secret::new(secret), delay_ms: args.webhook_delay_ms })
        }
        None => None,
    };
    crate::ingest::serve(|shutdown| async move {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        tracing::info!(addr = %args.listen, "PSP simulator (Stripe) listening; faults: POST /__sim/faults, books: GET /__sim/state");
        let sim = Sim::new(webhooks);
        tokio::select! {
            served = sim.serve(listener) => served.map_err(Into::into),
            () = shutdown.cancelled() => Ok(()),
        }
    })
}
