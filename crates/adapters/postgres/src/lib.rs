//! PostgreSQL adapter.

use tokio_postgres::NoTls;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("postgres: {0}")]
    Db(#[from] tokio_postgres::Error),
}

/// What the server reports about itself.
#[derive(Debug, Clone)]
pub struct PgHealth {
    pub server_version: String,
    pub database: String,
}

/// Connects, asks the server for its version and database, and disconnects.
pub async fn health(url: &str) -> Result<PgHealth, PgError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    // The connection future drives the socket; it ends when `client` is dropped, and is awaited below.
    let driver = tokio::spawn(connection);
    let row = client.query_one("select current_setting('server_version'), current_database()", &[]).await?;
    let health = PgHealth { server_version: row.get(0), database: row.get(1) };
    drop(client);
    let _ = driver.await;
    Ok(health)
}
