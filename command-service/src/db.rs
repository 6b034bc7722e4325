//! The idempotency log: every SQL statement of this crate outside the event store.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::{commands::Outcome, error::CommandError};

/// A command recorded earlier under the same id.
pub struct Recorded {
    /// The request's hash then.
    pub request_hash: Vec<u8>,
    /// What the command did then.
    pub outcome: Outcome,
}

/// Looks up an idempotency key.
pub async fn find(pool: &sqlx::PgPool, command_id: Uuid) -> Result<Option<Recorded>, CommandError> {
    let row: Option<(Vec<u8>, sqlx::types::Json<Outcome>)> =
        sqlx::query_as("SELECT request_hash, outcome FROM command_log WHERE command_id = $1")
            .bind(command_id)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(request_hash, outcome)| Recorded {
        request_hash,
        outcome: outcome.0,
    }))
}

/// Records a command's outcome in the caller's transaction (the one holding its events).
/// Returns false when the id is already recorded (a concurrent retry won the race); the
/// transaction is then aborted and must be rolled back.
pub async fn record(
    conn: &mut PgConnection,
    command_id: Uuid,
    command_type: &str,
    request_hash: &[u8],
    outcome: &Outcome,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<bool, CommandError> {
    let result = sqlx::query(
        "INSERT INTO command_log (command_id, command_type, request_hash, outcome, recorded_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(command_id)
    .bind(command_type)
    .bind(request_hash)
    .bind(sqlx::types::Json(outcome))
    .bind(at)
    .execute(conn)
    .await;
    match result {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23505") => Ok(false),
        Err(err) => Err(err.into()),
    }
}
