//! PSP reconciliation (DESIGN §12, ADR 0015): settlement report files imported once each (by SHA-256) and kept line
//! by line, then matched against the ledger's facts. `matching` is pure; `store` is PostgreSQL.

pub mod booking;
pub mod import;
pub mod inbox;
pub mod matching;
pub mod shadow;
pub mod store;

pub use matching::{reconcile, Break, BreakKind, Fact, Line, Outcome, Price, Rules, Tolerances, NO_TOLERANCE};

/// Serves `/healthz` and `/metrics` (`render` gives the Prometheus text) on `listener` until `shutdown`: the
/// long-running recon processes' (`tally recon shadow`, `tally reports watch`) endpoints.
pub(crate) fn serve_health(
    listener: tokio::net::TcpListener,
    render: impl Fn() -> String + Clone + Send + Sync + 'static,
    shutdown: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(move || std::future::ready(render())));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
    })
}
