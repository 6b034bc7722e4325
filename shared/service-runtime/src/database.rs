//! Connecting to PostgreSQL and applying the migrations.

use std::time::Duration;

use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

/// Why the database could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// No connection could be made.
    #[error("cannot connect to the database")]
    Connect(#[source] sqlx::Error),
    /// The migrations failed.
    #[error("cannot apply the database migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// Opens a pool of up to `max_connections` and applies the migrations. Several instances
/// starting at once is safe: sqlx takes an advisory lock while migrating.
///
/// Statements are limited to 30 s and idle transactions to 10 s: a write transaction left
/// open holds back every subscriber of the event log (see `ARCHITECTURE.md`).
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, DatabaseError> {
    connect_with_settings(url, max_connections, &[]).await
}

/// [`connect`], with extra session settings (name, value) on every connection.
pub async fn connect_with_settings(
    url: &str,
    max_connections: u32,
    settings: &[(&str, &str)],
) -> Result<PgPool, DatabaseError> {
    let options = url
        .parse::<PgConnectOptions>()
        .map_err(DatabaseError::Connect)?
        .options([
            ("statement_timeout", "30s"),
            ("idle_in_transaction_session_timeout", "10s"),
        ])
        .options(settings.iter().copied());
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        // A ping per acquire would add a round trip to every statement; a dead connection
        // shows up as an I/O error instead, which maps to UNAVAILABLE.
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .map_err(DatabaseError::Connect)?;
    event_store::MIGRATOR
        .run(&pool)
        .await
        .map_err(DatabaseError::Migrate)?;
    Ok(pool)
}

/// True when a trivial query succeeds within a second.
pub async fn is_reachable(pool: &PgPool) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_secs(1),
            sqlx::query("SELECT 1").execute(pool)
        )
        .await,
        Ok(Ok(_))
    )
}
