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

    /// Wraps the state as a [`State`].
    fn into_state(self) -> State;

    /// The aggregate in `state`, if `state` holds this kind.
    fn in_state(state: &State) -> Option<&Self>;

    /// The aggregate in `state`, mutably, if `state` holds this kind.
    fn in_state_mut(state: &mut State) -> Option<&mut Self>;

    /// The aggregate out of `state`, if `state` holds this kind.
    fn from_state(state: State) -> Option<Self>;
}

/// The state of any one aggregate: how the pipeline and its cache hold aggregates without
/// knowing their kind. A new aggregate fails to compile until every match on this handles
/// it.
#[derive(Debug, Clone)]
pub enum State {
    /// An order.
    Order(Order),
    /// A product's inventory.
    Product(Product),
    /// An order's payment.
    Payment(Payment),
}

impl State {
    /// The aggregate type stored with its events.
    pub fn aggregate_type(&self) -> &'static str {
        match self {
            State::Order(_) => Order::TYPE,
            State::Product(_) => Product::TYPE,
            State::Payment(_) => Payment::TYPE,
        }
    }

    /// The snapshot schema of its kind.
    pub fn snapshot_schema(&self) -> u32 {
        match self {
            State::Order(_) => Order::SNAPSHOT_SCHEMA,
            State::Product(_) => Product::SNAPSHOT_SCHEMA,
            State::Payment(_) => Payment::SNAPSHOT_SCHEMA,
        }
    }

    /// The serialised state, for a snapshot.
    pub fn encode(&self) -> serde_json::Result<serde_json::Value> {
        match self {
            State::Order(order) => serde_json::to_value(order),
            State::Product(product) => serde_json::to_value(product),
            State::Payment(payment) => serde_json::to_value(payment),
        }
    }
}

/// Ties an aggregate type to its [`State`] variant.
macro_rules! in_state {
    ($variant:ident) => {
        fn into_state(self) -> $crate::domain::State {
            $crate::domain::State::$variant(self)
        }

        fn in_state(state: &$crate::domain::State) -> Option<&Self> {
            match state {
                $crate::domain::State::$variant(a) => Some(a),
                _ => None,
            }
        }

        fn in_state_mut(state: &mut $crate::domain::State) -> Option<&mut Self> {
            match state {
                $crate::domain::State::$variant(a) => Some(a),
                _ => None,
            }
        }

        fn from_state(state: $crate::domain::State) -> Option<Self> {
            match state {
                $crate::domain::State::$variant(a) => Some(a),
                _ => None,
            }
        }
    };
}
pub(crate) use in_state;

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
