//! Why a command failed, and the one place each failure becomes a gRPC status.

use std::collections::HashMap;

use event_store::Version;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use uuid::Uuid;

use crate::domain::DomainError;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The command names an aggregate that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A business rule refused the command.
    #[error("{0}")]
    Refused(String),
    /// The aggregate was not at the expected version (and retrying did not help, or the
    /// client asked for that exact version).
    #[error(
        "version conflict on {aggregate_id}: expected version {expected}, actual version {actual}"
    )]
    Conflict {
        /// The aggregate.
        aggregate_id: Uuid,
        /// The version the command was decided on.
        expected: Version,
        /// The version found.
        actual: Version,
    },
    /// An order line's catalogue price is not the one the client expected.
    #[error("the price of {sku} is {current}, not {expected}")]
    PriceChanged {
        /// The product.
        sku: String,
        /// The unit price the client sent.
        expected: domain_events::values::Money,
        /// The catalogue's unit price.
        current: domain_events::values::Money,
    },
    /// The command id was voided (`VoidCommand`) before a command with it ran.
    #[error("command {command_id} was voided before it ran: {reason}")]
    Voided {
        /// The command id.
        command_id: Uuid,
        /// Why it was voided.
        reason: String,
    },
    /// Too many placed orders wait for the fulfilment saga to accept another
    /// (see [`crate::backlog`]).
    #[error("{waiting} placed orders are waiting for the fulfilment saga (limit {limit})")]
    SagaBacklog {
        /// The backlog's estimate.
        waiting: u64,
        /// The configured limit.
        limit: u64,
        /// When to try again.
        retry_after: std::time::Duration,
    },
    /// The idempotency key was used before with a different request.
    #[error("command_id {0} was already used for a different request")]
    CommandIdReused(Uuid),
    /// The database cannot be reached.
    #[error("the database is unavailable")]
    Unavailable(#[source] event_store::Error),
    /// Anything else: a bug or a corrupt store.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<DomainError> for CommandError {
    fn from(err: DomainError) -> Self {
        match err {
            DomainError::NotFound(what) => CommandError::NotFound(what),
            DomainError::Refused(reason) => CommandError::Refused(reason),
        }
    }
}

impl From<event_store::Error> for CommandError {
    fn from(err: event_store::Error) -> Self {
        match err {
            event_store::Error::VersionConflict {
                aggregate_id,
                expected,
                actual,
            } => CommandError::Conflict {
                aggregate_id: aggregate_id.as_uuid(),
                expected: expected.required().unwrap_or_default(),
                actual,
            },
            event_store::Error::Unavailable(_) => CommandError::Unavailable(err),
            other => {
                CommandError::Internal(format!("{other}: {:?}", std::error::Error::source(&other)))
            }
        }
    }
}

impl From<CommandError> for Status {
    fn from(err: CommandError) -> Self {
        match err {
            CommandError::NotFound(what) => Status::not_found(what),
            CommandError::Refused(reason) => {
                let mut details = ErrorDetails::new();
                details.add_precondition_failure_violation(
                    "BUSINESS_RULE",
                    "command",
                    reason.clone(),
                );
                Status::with_error_details(Code::FailedPrecondition, reason, details)
            }
            CommandError::Conflict {
                aggregate_id,
                expected,
                actual,
            } => {
                let message = format!(
                    "version conflict on {aggregate_id}: expected version {expected}, actual version {actual}"
                );
                let metadata = HashMap::from([
                    ("aggregate_id".to_owned(), aggregate_id.to_string()),
                    ("expected_version".to_owned(), expected.to_string()),
                    ("actual_version".to_owned(), actual.to_string()),
                ]);
                let details =
                    ErrorDetails::with_error_info("VERSION_CONFLICT", "orders.v1", metadata);
                Status::with_error_details(Code::Aborted, message, details)
            }
            CommandError::PriceChanged {
                sku,
                expected,
                current,
            } => {
                let message = format!("the price of {sku} is {current}, not {expected}");
                let metadata = HashMap::from([
                    ("sku".to_owned(), sku.clone()),
                    (
                        "expected_amount_minor".to_owned(),
                        expected.amount_minor().to_string(),
                    ),
                    (
                        "current_amount_minor".to_owned(),
                        current.amount_minor().to_string(),
                    ),
                    ("currency".to_owned(), current.currency().to_string()),
                ]);
                let mut details =
                    ErrorDetails::with_error_info("PRICE_CHANGED", "orders.v1", metadata);
                details.add_precondition_failure_violation("PRICE_CHANGED", sku, message.clone());
                Status::with_error_details(Code::FailedPrecondition, message, details)
            }
            CommandError::Voided { command_id, reason } => {
                let message = format!("command {command_id} was voided before it ran: {reason}");
                let metadata = HashMap::from([("command_id".to_owned(), command_id.to_string())]);
                let details =
                    ErrorDetails::with_error_info("COMMAND_VOIDED", "orders.v1", metadata);
                Status::with_error_details(Code::FailedPrecondition, message, details)
            }
            CommandError::SagaBacklog {
                waiting,
                limit,
                retry_after,
            } => {
                let message = format!(
                    "{waiting} placed orders are waiting for the fulfilment saga (limit {limit}); \
                     nothing was changed: place the order again later"
                );
                let metadata = HashMap::from([
                    ("waiting".to_owned(), waiting.to_string()),
                    ("limit".to_owned(), limit.to_string()),
                ]);
                let mut details =
                    ErrorDetails::with_error_info("SAGA_BACKLOG", "orders.v1", metadata);
                details.set_retry_info(Some(retry_after));
                Status::with_error_details(Code::ResourceExhausted, message, details)
            }
            CommandError::CommandIdReused(id) => Status::already_exists(format!(
                "command_id {id} was already used for a different request; use a new command_id"
            )),
            CommandError::Unavailable(source) => {
                tracing::warn!(error = %source, "database unavailable");
                Status::unavailable("the database is unavailable; retry later")
            }
            CommandError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                Status::internal("internal error")
            }
        }
    }
}
