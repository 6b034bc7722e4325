//! The store's error type. Callers match on variants, never on message text.

use crate::{AggregateId, EventId, ExpectedVersion, Version};

/// Shorthand for results of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an operation on the store failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The stream was not at the version the writer expected. Nothing was written.
    #[error("version conflict on stream {aggregate_id}: expected {expected}, actual {actual}")]
    VersionConflict {
        /// The stream that moved.
        aggregate_id: AggregateId,
        /// What the writer expected.
        expected: ExpectedVersion,
        /// The stream's version when the append was refused.
        actual: Version,
    },
    /// Some, but not all, of a batch's event ids are already stored (a batch whose ids are
    /// all stored is an idempotent retry and succeeds). Nothing was written.
    #[error("event {0} is already stored with a different batch")]
    DuplicateEventId(EventId),
    /// The append request itself is malformed. Nothing was written.
    #[error("invalid append: {0}")]
    InvalidAppend(#[from] InvalidAppend),
    /// The database cannot be reached (connection refused, pool timed out, server shutting
    /// down). Worth retrying later.
    #[error("event store unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// Any other database failure.
    #[error("event store database error")]
    Database(#[source] sqlx::Error),
    /// A stored row could not be turned back into an event.
    #[error("stored event is corrupt: {0}")]
    Corrupt(String),
}

/// The ways an append request can be malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAppend {
    /// No events to append.
    #[error("the batch is empty")]
    EmptyBatch,
    /// An event has an empty (or blank) type name.
    #[error("event {0} has an empty event type")]
    EmptyEventType(EventId),
    /// An event has an empty (or blank) aggregate type.
    #[error("event {0} has an empty aggregate type")]
    EmptyAggregateType(EventId),
    /// An event's payload is not a JSON object.
    #[error("event {0} has a payload that is not a JSON object")]
    PayloadNotObject(EventId),
    /// A single-stream append holds events of several streams, or a multi-stream append
    /// names one stream twice.
    #[error("stream {0} appears in more than one place in the request")]
    MixedStreams(AggregateId),
    /// Two events of one stream in the batch do not have consecutive versions.
    #[error(
        "versions in stream {aggregate_id} are not contiguous: {previous} is followed by {next}"
    )]
    NonContiguousVersions {
        /// The stream.
        aggregate_id: AggregateId,
        /// The earlier event's version.
        previous: Version,
        /// The version that should have been `previous + 1`.
        next: Version,
    },
    /// The first event's version does not follow the expected version.
    #[error(
        "stream {aggregate_id}: the first event has version {first} but the expected version is {expected}"
    )]
    VersionDoesNotFollowExpected {
        /// The stream.
        aggregate_id: AggregateId,
        /// What the writer expected.
        expected: ExpectedVersion,
        /// The first event's version.
        first: Version,
    },
    /// One event id appears twice in the batch.
    #[error("event {0} appears twice in the batch")]
    RepeatedEventId(EventId),
}

impl Error {
    /// Sorts a database error into "unavailable" (retry later) or "database" (a bug or a
    /// constraint), from its kind and SQLSTATE, never from its text.
    pub fn from_sqlx(err: sqlx::Error) -> Self {
        if is_unavailable(&err) {
            Error::Unavailable(err)
        } else {
            Error::Database(err)
        }
    }
}

impl Error {
    /// The same failure, for each of several callers it stops (a sqlx error cannot be
    /// cloned): the kind, "unavailable" or not, is kept, and the message.
    pub(crate) fn shared(err: &sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolTimedOut => Error::Unavailable(sqlx::Error::PoolTimedOut),
            sqlx::Error::PoolClosed => Error::Unavailable(sqlx::Error::PoolClosed),
            err if is_unavailable(err) => {
                Error::Unavailable(sqlx::Error::Io(std::io::Error::other(err.to_string())))
            }
            err => Error::Database(sqlx::Error::Protocol(err.to_string())),
        }
    }
}

/// True when a database error means "the database cannot be reached right now".
fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            // A FATAL error ends the session: the server refused or dropped the connection
            // (shutting down, not accepting connections, too many clients).
            let fatal = db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some_and(|pg| {
                    matches!(
                        pg.severity(),
                        sqlx::postgres::PgSeverity::Fatal | sqlx::postgres::PgSeverity::Panic
                    )
                });
            // Class 08: connection exceptions; 53300: too many connections; 57P01..57P03:
            // admin shutdown, crash shutdown, cannot connect now.
            fatal
                || db.code().is_some_and(|code| {
                    code.starts_with("08")
                        || matches!(&*code, "53300" | "57P01" | "57P02" | "57P03")
                })
        }
        _ => false,
    }
}
