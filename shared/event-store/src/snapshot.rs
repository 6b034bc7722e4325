//! Snapshots: an aggregate's folded state at a version, so loading it need not replay the
//! whole stream.

use chrono::{DateTime, Utc};

use crate::{AggregateId, Version};

/// An aggregate's state as of `version`.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The aggregate.
    pub aggregate_id: AggregateId,
    /// The kind of aggregate.
    pub aggregate_type: String,
    /// The stream version the state includes.
    pub version: Version,
    /// The shape of `state`; bump it when the aggregate's state type changes so old snapshots
    /// are ignored instead of misread.
    pub schema_version: u32,
    /// The serialised state.
    pub state: serde_json::Value,
    /// When the snapshot was taken.
    pub taken_at: DateTime<Utc>,
}
