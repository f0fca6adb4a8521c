//! `tally api`: the payments API (DESIGN §7, issue 17). A merchant calls Tally, Tally calls a PSP, and every
//! outcome reaches the same exactly-once ledger through the transactional outbox.
//!
//! The parts, in the order a request meets them: [`merchants`] (who is calling), [`idempotency`] (has this been
//! asked before), [`store`] (the payment and its state machine, guarded by PostgreSQL), the PSP connectors, and the
//! outbox rows each change writes in its own transaction.

pub mod config;
pub mod connector;
pub mod http;
pub mod idempotency;
pub mod merchants;
pub mod model;
pub mod service;
pub mod store;
pub mod tls;
pub mod vault;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Builds the API from its configuration: the vault, the connectors, migrations applied.
pub async fn build(
    config: config::ApiConfig,
    postgres: tally_postgres::PostgresConfig,
) -> Result<Arc<service::Api>, String> {
    config.validate()?;
    let keys: Vec<(String, tally_domain::Secret<String>)> =
        config.encryption_keys.iter().map(|k| (k.id.clone(), k.key.clone())).collect();
    let vault = vault::Vault::new(&keys, &config.encryption_active).map_err(|e| format!("api.encryption: {e}"))?;
    let stripe = match &config.stripe {
        Some(s) => Some(connector::stripe::Stripe {
            transport: connector::Transport::new(
                &s.base_url,
                vec![("Authorization".into(), format!("Bearer {}", s.secret_key.expose()))],
                config.retry.clone(),
                config.breaker.clone(),
            )?,
        }),
        None => None,
    };
    let adyen = match &config.adyen {
        Some(a) => Some(connector::adyen::Adyen {
            transport: connector::Transport::new(
                &a.base_url,
                vec![("X-API-Key".into(), a.api_key.expose().clone())],
                config.retry.clone(),
                config.breaker.clone(),
            )?,
            return_url: a.return_url.clone(),
        }),
        None => None,
    };
    let tls = config.tls.as_ref().map(tls::server_config).transpose()?;
    let pool = tally_postgres::pool(&postgres).map_err(|e| e.to_string())?;
    tally_postgres::migrate(&pool).await.map_err(|e| e.to_string())?;
    Ok(Arc::new(service::Api {
        config,
        pool,
        vault,
        connectors: connector::Connectors { stripe, adyen },
        metrics: service::Metrics::default(),
        tls,
    }))
}

/// Serves on `listener` (TLS 1.3 when `[api.tls]` is set) and runs the resolver and the key expiry until `shutdown`, then drains in-flight requests.
pub async fn serve(
    api: Arc<service::Api>,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let background = {
        let (api, shutdown) = (api.clone(), shutdown.clone());
        tokio::spawn(async move {
            let every = Duration::from_millis(api.config.resolver_interval_ms.max(10));
            let retention = Duration::from_secs(api.config.idempotency_retention_secs);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
                if let Err(e) = api.resolve_open().await {
                    tracing::warn!(error = %e, "the resolver's pass failed; next pass retries");
                }
                if let Ok(client) = api.pool.get().await {
                    let _ = idempotency::expire(&client, retention).await;
                }
            }
        })
    };
    let tls = api.tls.clone();
    let app = http::router(api);
    let stop = shutdown.clone().cancelled_owned();
    let served = match tls {
        Some(config) => axum::serve(tls::TlsListener::new(listener, config)?, app).with_graceful_shutdown(stop).await,
        None => axum::serve(listener, app).with_graceful_shutdown(stop).await,
    };
    shutdown.cancel();
    let _ = background.await;
    served
}
