//! `EventQuery`: a filter over the stored events, built step by step.

use chrono::{DateTime, Utc};

use crate::{AggregateId, Version};

/// A filter over stored events; every filter that is set must match. Results come in log
/// order (global sequence), at most `limit` of them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventQuery {
    pub(crate) aggregate_id: Option<AggregateId>,
    pub(crate) aggregate_type: Option<String>,
    pub(crate) event_types: Option<Vec<String>>,
    pub(crate) min_version: Option<Version>,
    pub(crate) max_version: Option<Version>,
    pub(crate) from_time: Option<DateTime<Utc>>,
    pub(crate) to_time: Option<DateTime<Utc>>,
    pub(crate) limit: Option<usize>,
}

impl EventQuery {
    /// A query that matches every event.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only events of this aggregate.
    pub fn aggregate_id(mut self, id: AggregateId) -> Self {
        self.aggregate_id = Some(id);
        self
    }

    /// Only events of aggregates of this type.
    pub fn aggregate_type(mut self, aggregate_type: impl Into<String>) -> Self {
        self.aggregate_type = Some(aggregate_type.into());
        self
    }

    /// Only events whose type is one of these.
    pub fn event_types<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.event_types = Some(types.into_iter().map(Into::into).collect());
        self
    }

    /// Only events with a stream version in `min..=max`.
    pub fn version_range(mut self, min: Version, max: Version) -> Self {
        self.min_version = Some(min);
        self.max_version = Some(max);
        self
    }

    /// Only events with a timestamp in `from..to` (from inclusive, to exclusive).
    pub fn time_range(mut self, from: DateTime<Utc>, to: DateTime<Utc>) -> Self {
        self.from_time = Some(from);
        self.to_time = Some(to);
        self
    }

    /// At most `limit` events.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// True when `event` passes every filter (used by the in-memory store).
    pub(crate) fn matches(&self, event: &crate::EventEnvelope) -> bool {
        self.aggregate_id.is_none_or(|id| event.aggregate_id == id)
            && self
                .aggregate_type
                .as_ref()
                .is_none_or(|t| &event.aggregate_type == t)
            && self
                .event_types
                .as_ref()
                .is_none_or(|ts| ts.contains(&event.event_type))
            && self.min_version.is_none_or(|v| event.version >= v)
            && self.max_version.is_none_or(|v| event.version <= v)
            && self.from_time.is_none_or(|t| event.timestamp >= t)
            && self.to_time.is_none_or(|t| event.timestamp < t)
    }
}
