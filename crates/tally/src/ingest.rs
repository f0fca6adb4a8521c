//! Long-running services (`tally ingest`, `tally api`, `tally relay`, `tally sink ledger|archive|warehouse`): each runs until SIGINT/SIGTERM.

use std::process::ExitCode;

use anyhow::Result;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

pub fn run(config: Config) -> Result<ExitCode> {
    serve(|shutdown| async move {
        tally_ingest::run(config.ingest, config.kafka, config.postgres, config.redis, shutdown)
            .await
            .map_err(Into::into)
    })
}

pub fn run_ledger_sink(config: Config) -> Result<ExitCode> {
    serve(|shutdown| async move {
        tally_ledger::run(config.ledger, config.kafka, config.postgres, shutdown).await.map_err(Into::into)
    })
}

pub fn run_archive_sink(config: Config) -> Result<ExitCode> {
    serve(|shutdown| async move {
        tally_archive::run(config.archive, config.kafka, config.postgres, shutdown).await.map_err(Into::into)
    })
}

pub fn run_warehouse_sink(config: Config) -> Result<ExitCode> {
    serve(|shutdown| async move {
        tally_warehouse::run(config.warehouse, config.kafka, config.postgres, shutdown).await.map_err(Into::into)
    })
}

pub fn run_api(config: Config) -> Result<ExitCode> {
    serve(|shutdown| async move {
        let listen = config.api.listen.clone();
        let api = tally_api::build(config.api, config.postgres).await.map_err(anyhow::Error::msg)?;
        let listener =
            tokio::net::TcpListener::bind(&listen).await.map_err(|e| anyhow::anyhow!("listening on {listen}: {e}"))?;
        tracing::info!(addr = %listen, "payments API listening");
        tally_api::serve(api, listener, shutdown).await.map_err(Into::into)
    })
}

pub fn run_relay(config: Config) -> Result<ExitCode> {
    serve(|shutdown| async move {
        tally_relay::serve(config.relay, config.kafka, config.postgres, shutdown).await.map_err(Into::into)
    })
}

/// Runs one service on a multi-threaded runtime with a shutdown token tied to SIGINT/SIGTERM.
pub(crate) fn serve<F, Fut>(service: F) -> Result<ExitCode>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let shutdown = CancellationToken::new();
        let signals = tokio::spawn(shutdown_on_signal(shutdown.clone()));
        let result = service(shutdown.clone()).await;
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
