//! `tally ingest`: runs the webhook service until SIGINT/SIGTERM.

use std::process::ExitCode;

use anyhow::Result;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

pub fn run(config: Config) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let shutdown = CancellationToken::new();
        let signals = tokio::spawn(shutdown_on_signal(shutdown.clone()));
        let result =
            tally_ingest::run(config.ingest, config.kafka, config.postgres, config.redis, shutdown.clone()).await;
        shutdown.cancel();
        let _ = signals.await;
        result?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Cancels `shutdown` on SIGINT or SIGTERM (or when it is cancelled by someone else).
async fn shutdown_on_signal(shutdown: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return shutdown.cancelled().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = shutdown.cancelled() => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}
