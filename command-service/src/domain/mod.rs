//! The write-side domain: aggregates that decide (`handle`) and evolve (`apply`).
//!
//! Pure: no I/O, no clock, no randomness. `handle` holds every business rule and returns the
//! events to record (an empty list when the command changes nothing); `apply` only folds an
//! event into the state and never refuses.

pub mod inventory;
pub mod order;
pub mod payment;
#[cfg(test)]
pub(crate) mod testing;

use domain_events::DomainEvent;
use serde::{Serialize, de::DeserializeOwned};

pub use inventory::{Product, ProductCommand};
pub use order::{Order, OrderCommand, OrderStatus};
pub use payment::{Payment, PaymentCommand, PaymentStatus};

/// An event-sourced aggregate.
pub trait Aggregate:
    Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// The aggregate type stored with its events.
    const TYPE: &'static str;
    /// The shape of the serialised state; bump it when the state type changes so stored
    /// snapshots are ignored rather than misread.
    const SNAPSHOT_SCHEMA: u32;
    /// What the aggregate can be asked to do.
    type Command;

    /// Decides what happens: the events to record, or why not.
    fn handle(&self, command: &Self::Command) -> Result<Vec<DomainEvent>, DomainError>;

    /// Folds one of the aggregate's own events into the state.
    fn apply(&mut self, event: &DomainEvent);
}

/// Why the domain refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The command is about something that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A business rule refuses the command in the aggregate's current state.
    #[error("{0}")]
    Refused(String),
}

pub(crate) fn refused(reason: impl Into<String>) -> DomainError {
    DomainError::Refused(reason.into())
}
