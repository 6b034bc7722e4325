//! Connecting to PostgreSQL and applying the migrations.

use std::time::Duration;

use sqlx::{
    Connection, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgDatabaseError, PgPoolOptions, PgSeverity},
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
    // A service that connects as its own least-privileged role cannot create the
    // migrations' bookkeeping table, so it only reads it when every migration is applied
    // already (orders-migrate applies them as the schema's owner).
    if !migrations_applied(&pool).await {
        event_store::MIGRATOR
            .run(&pool)
            .await
            .map_err(DatabaseError::Migrate)?;
    }
    Ok(pool)
}

/// A session setting that has PostgreSQL plan each statement for its parameters on every
/// call, for a connection that runs one statement for the life of the process against a
/// table that grows: a plan cached while the table was small would scan it whole.
pub const CUSTOM_PLANS: (&str, &str) = ("plan_cache_mode", "force_custom_plan");

/// `pool`'s connection settings for a connection of its own: named `name` (its
/// `application_name`), with `settings` (name, value) added.
pub fn own_options(pool: &PgPool, name: &str, settings: &[(&str, &str)]) -> PgConnectOptions {
    (*pool.connect_options())
        .clone()
        .application_name(name)
        .options(settings.iter().copied())
}

/// A connection of its own, for a task that runs one statement at a time (the batched
/// reads and saves): each statement costs its round trip and nothing else, where a pooled
/// connection also costs one as it goes back (sqlx tests each on release with a `Sync`,
/// off the caller's path but not off the cores). It is made on first use, retrying as
/// the pool does (for the pool's acquire timeout), and made again after an error that
/// may have broken it.
pub struct OwnConnection {
    name: String,
    options: PgConnectOptions,
    timeout: Duration,
    conn: Option<PgConnection>,
}

impl OwnConnection {
    /// Not connected yet: [`own_options`].
    pub fn new(pool: &PgPool, name: &str, settings: &[(&str, &str)]) -> Self {
        Self {
            name: name.to_owned(),
            options: own_options(pool, name, settings),
            timeout: pool.options().get_acquire_timeout(),
            conn: None,
        }
    }

    /// Runs `statement` on the connection, made first if there is none. The connection
    /// is kept unless the statement's error may have broken it.
    pub async fn run<T>(
        &mut self,
        statement: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, sqlx::Error> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => connect_own(&self.options, self.timeout).await?,
        };
        let conn = self.conn.insert(conn);
        let result = statement(conn).await;
        if let Err(err) = &result
            && !keeps_connection(err)
        {
            tracing::warn!(connection = %self.name, error = %err, "dropping the connection; the next statement makes a new one");
            self.conn = None;
        }
        result
    }
}

/// Connects, retrying with a doubling pause what a pool retries (the server refusing,
/// starting up, or out of connections) until `timeout` has passed: `PoolTimedOut` if the
/// last attempt was still under way then.
async fn connect_own(
    options: &PgConnectOptions,
    timeout: Duration,
) -> Result<PgConnection, sqlx::Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    loop {
        let err = match tokio::time::timeout_at(deadline, PgConnection::connect_with(options)).await
        {
            Ok(Ok(conn)) => return Ok(conn),
            Ok(Err(err)) if worth_retrying(&err) => err,
            Ok(Err(err)) => return Err(err),
            Err(_) => return Err(sqlx::Error::PoolTimedOut),
        };
        if tokio::time::Instant::now() + pause >= deadline {
            return Err(err);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(timeout / 5);
    }
}

fn worth_retrying(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) => true,
        // Too many connections; the server is starting up.
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("53300" | "57P03")),
        _ => false,
    }
}

/// True after an error that ends the statement alone (a timeout, a constraint): a
/// PostgreSQL ERROR, except those that stay with the connection's prepared statements
/// ("cached plan must not change result type" after a column changed type; "prepared
/// statement does not exist"). A FATAL one ends the connection (the backend was
/// terminated, the server is shutting down), and anything else (I/O, a protocol error, a
/// row that could not be decoded) may have left it mid-message.
fn keeps_connection(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|e| e.try_downcast_ref::<PgDatabaseError>())
        .is_some_and(|e| {
            !matches!(e.severity(), PgSeverity::Fatal | PgSeverity::Panic)
                && !matches!(e.code(), "0A000" | "26000")
        })
}

/// True when every migration this build knows is applied, unchanged.
async fn migrations_applied(pool: &PgPool) -> bool {
    let applied: Vec<(i64, Vec<u8>)> =
        match sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
        {
            Ok(rows) => rows,
            // No bookkeeping table yet: a fresh database.
            Err(_) => return false,
        };
    event_store::MIGRATOR.iter().all(|m| {
        applied
            .iter()
            .any(|(version, checksum)| *version == m.version && *checksum == *m.checksum)
    })
}

/// The group roles migration 0010 creates, one per service.
pub const SERVICE_ROLES: [(&str, &str); 3] = [
    ("command-service", "orders_command"),
    ("query-service", "orders_query"),
    ("saga-service", "orders_saga"),
];

/// Creates (or updates the password of) login role `user` in the group role `group`.
/// Needs a connection allowed to create roles (the migrations' owner).
pub async fn ensure_login_role(
    pool: &PgPool,
    user: &str,
    password: &str,
    group: &str,
) -> Result<(), sqlx::Error> {
    // DDL takes no parameters: PostgreSQL quotes the name and the password itself.
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(user)
            .fetch_one(pool)
            .await?;
    let template = if exists {
        "SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', $1::text, $2::text)"
    } else {
        "SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', $1::text, $2::text)"
    };
    let statement: String = sqlx::query_scalar(template)
        .bind(user)
        .bind(password)
        .fetch_one(pool)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(statement))
        .execute(pool)
        .await?;
    let grant: String = sqlx::query_scalar("SELECT format('GRANT %I TO %I', $1::text, $2::text)")
        .bind(group)
        .bind(user)
        .fetch_one(pool)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(grant))
        .execute(pool)
        .await?;
    Ok(())
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
