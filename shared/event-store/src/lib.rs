//! An append-only event store.
//!
//! Events are stored in streams, one per aggregate, each event carrying the stream
//! [`Version`] it was written at. Appends use optimistic concurrency: the caller says which
//! version it expects the stream to be at ([`ExpectedVersion`]) and gets a typed
//! [`Error::VersionConflict`] when another writer got there first.
//!
//! Every event also gets a [`Position`] in the global log. Subscribers read the log forward
//! from a checkpoint with [`EventStore::read_all`]; the PostgreSQL implementation never hands
//! out a position below a transaction that is still running, so an event that commits late
//! is never skipped (see `ARCHITECTURE.md`).
//!
//! Two implementations pass the same conformance suite (the `conformance` feature): [`PostgresEventStore`] and
//! [`InMemoryEventStore`]. This crate knows nothing of orders or gRPC.

mod command_log;
mod envelope;
mod error;
mod ids;
mod memory;
mod position;
mod postgres;
mod query;
mod snapshot;
mod store;
mod subscription;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

pub use command_log::{CommandAppend, CommandLog, CommandRecord, CommandWrite, RecordedCommand};
pub use envelope::{EventEnvelope, EventEnvelopeBuilder, Metadata, Payload, RecordedEvent};
pub use error::{Error, InvalidAppend, Result};
pub use ids::{AggregateId, EventId, Version};
pub use memory::InMemoryEventStore;
pub use position::{ParsePositionError, Position};
pub use postgres::{DEFAULT_WRITERS, MAX_BATCH, NOTIFY_CHANNEL, Notifier, PostgresEventStore};
pub use query::EventQuery;
pub use snapshot::Snapshot;
pub use store::{
    AppendOptions, AppendResult, EventStore, ExpectedVersion, LogPage, MultiAppendResult,
    StreamAppend,
};
pub use subscription::{Subscription, Wakeup};

/// The migrations this crate's PostgreSQL schema needs, applied by every service at start-up.
///
/// They live in the workspace's `migrations/` folder, which also holds the read-model and saga
/// tables, so that one ordered history describes the whole database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");
