//! The command log: each command's idempotency record, written atomically with the events
//! it appends, so a retry is recognised and answered with the original outcome.

use std::future::Future;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{MultiAppendResult, Position, Result, StreamAppend};

/// A command's idempotency record, written with its events.
#[derive(Debug, Clone)]
pub struct CommandRecord {
    /// The client's idempotency key.
    pub command_id: Uuid,
    /// What kind of command (the RPC name).
    pub command_type: String,
    /// A hash of the whole request, to tell a retry from a different request.
    pub request_hash: Vec<u8>,
    /// What the command did, returned again on a retry.
    pub outcome: serde_json::Value,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// The position to record when the command appends nothing (its aggregates' last
    /// event); with events, the position of the last one is recorded instead.
    pub position: Position,
}

/// One command's write: its events, by stream, and its idempotency record.
#[derive(Debug, Clone)]
pub struct CommandAppend {
    /// The events, one entry per stream, each with its expected version. May be empty.
    pub streams: Vec<StreamAppend>,
    /// The record stored with them.
    pub record: CommandRecord,
}

/// A command recorded earlier.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedCommand {
    /// What the command was (the RPC's name, or a marker the caller chose).
    pub command_type: String,
    /// The request's hash then.
    pub request_hash: Vec<u8>,
    /// What the command did then.
    pub outcome: serde_json::Value,
    /// Where its last event (or its aggregates' last event) is.
    pub position: Option<Position>,
}

/// What [`CommandLog::append_command`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandWrite {
    /// Stored: the append's result, or `None` when the command had no events.
    Appended(Option<MultiAppendResult>),
    /// The command id was recorded before; nothing was written.
    AlreadyRecorded,
}

/// Where a command's idempotency record is kept, with the events it appended: the write
/// side's contract with its store, implemented by [`crate::PostgresEventStore`] and
/// [`crate::InMemoryEventStore`].
pub trait CommandLog: Send + Sync {
    /// Appends a command's events and records the command (its id, request hash and
    /// outcome) atomically: either both are stored or neither. With no events, only the
    /// record is written, at `record.position`. [`CommandWrite::AlreadyRecorded`] means the
    /// command id was recorded first (by a concurrent retry, say, or a void): look it up
    /// with [`CommandLog::find_command`]. A version check that fails is
    /// [`crate::Error::VersionConflict`], as for any append.
    fn append_command(
        &self,
        command: CommandAppend,
    ) -> impl Future<Output = Result<CommandWrite>> + Send;

    /// A recorded command: its type, request hash, outcome and the position it was
    /// written at.
    fn find_command(
        &self,
        command_id: Uuid,
    ) -> impl Future<Output = Result<Option<RecordedCommand>>> + Send;
}
