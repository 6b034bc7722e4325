//! The `EventStore` trait and the types its methods take and return.

use std::{collections::HashSet, fmt, future::Future};

use crate::{
    AggregateId, EventEnvelope, EventQuery, InvalidAppend, Position, RecordedEvent, Result,
    Snapshot, Version, Wakeup,
};

/// What a writer expects a stream's version to be when it appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// No check: the events go after whatever the stream holds, and the store numbers them.
    Any,
    /// The stream must have no events yet.
    NoStream,
    /// The stream must be at exactly this version.
    Exact(Version),
}

impl ExpectedVersion {
    /// The version the stream must be at, when there is one to check.
    pub fn required(self) -> Option<Version> {
        match self {
            ExpectedVersion::Any => None,
            ExpectedVersion::NoStream => Some(Version::INITIAL),
            ExpectedVersion::Exact(v) => Some(v),
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(v) => write!(f, "{v}"),
        }
    }
}

/// Options for a single-stream append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOptions {
    /// The optimistic-concurrency check to make.
    pub expected_version: ExpectedVersion,
}

impl AppendOptions {
    /// Append whatever the stream's version.
    pub fn any() -> Self {
        Self {
            expected_version: ExpectedVersion::Any,
        }
    }

    /// The stream must not exist yet.
    pub fn expect_new() -> Self {
        Self {
            expected_version: ExpectedVersion::NoStream,
        }
    }

    /// The stream must be at exactly `version`.
    pub fn expect_version(version: Version) -> Self {
        Self {
            expected_version: ExpectedVersion::Exact(version),
        }
    }
}

/// The events for one stream within a multi-stream append.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamAppend {
    /// The check for this stream.
    pub expected_version: ExpectedVersion,
    /// This stream's events, in version order; all share one aggregate id.
    pub events: Vec<EventEnvelope>,
}

/// What a single-stream append wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// The stream's version after the append.
    pub stream_version: Version,
    /// The position of the last event written.
    pub position: Position,
}

/// What a multi-stream append wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiAppendResult {
    /// Each stream's version after the append, in request order.
    pub streams: Vec<(AggregateId, Version)>,
    /// The position of the last event written.
    pub position: Position,
}

/// A filtered read of the log (see [`EventStore::read_all_of_types`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LogPage {
    /// The matching events, in log order.
    pub events: Vec<RecordedEvent>,
    /// Everything up to here has been scanned: read on from this position. It may lie
    /// past the last event returned, never before it.
    pub scanned_to: Position,
}

/// An append-only store of event streams with a global, late-commit-safe log.
///
/// Every method that writes is all-or-nothing. Methods return futures that are `Send`, so a
/// store can be shared across tokio tasks.
pub trait EventStore: Send + Sync {
    /// Appends events to one stream, checking its version first.
    ///
    /// With [`ExpectedVersion::Any`] the store numbers the events after the stream's current
    /// version; otherwise the first event's version must be the expected version plus one.
    fn append(
        &self,
        events: Vec<EventEnvelope>,
        options: AppendOptions,
    ) -> impl Future<Output = Result<AppendResult>> + Send {
        async move {
            let aggregate_id = events.first().map(|e| e.aggregate_id);
            if let Some(id) = aggregate_id
                && events.iter().any(|e| e.aggregate_id != id)
            {
                return Err(InvalidAppend::MixedStreams(id).into());
            }
            let result = self
                .append_streams(vec![StreamAppend {
                    expected_version: options.expected_version,
                    events,
                }])
                .await?;
            let stream_version = result.streams.first().map(|(_, v)| *v).unwrap_or_default();
            Ok(AppendResult {
                stream_version,
                position: result.position,
            })
        }
    }

    /// Appends to several streams at once, each with its own version check: either every
    /// stream's events are written or none are.
    fn append_streams(
        &self,
        streams: Vec<StreamAppend>,
    ) -> impl Future<Output = Result<MultiAppendResult>> + Send;

    /// The events of one stream in version order, from `from` (inclusive) when given.
    fn get_events_for_aggregate(
        &self,
        aggregate_id: AggregateId,
        from: Option<Version>,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>>> + Send;

    /// Every event of one type, in log order.
    fn get_events_by_type(
        &self,
        event_type: &str,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>>> + Send {
        let query = EventQuery::new().event_types([event_type]);
        async move { self.query(&query).await }
    }

    /// The events matching every filter of `query`, in log order.
    fn query(&self, query: &EventQuery) -> impl Future<Output = Result<Vec<RecordedEvent>>> + Send;

    /// Up to `limit` events after `after` in log order, never skipping an event that commits
    /// later: only events of transactions that have ended are returned.
    fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>>> + Send;

    /// Like [`EventStore::read_all`], but only events of `event_types`: up to `limit` of
    /// them, and how far the log was scanned, so a reader interested in few types moves
    /// past the rest without receiving them. This default reads every event and filters.
    fn read_all_of_types(
        &self,
        after: Position,
        limit: usize,
        event_types: &[String],
    ) -> impl Future<Output = Result<LogPage>> + Send {
        async move {
            let mut page = LogPage {
                events: Vec::new(),
                scanned_to: after,
            };
            loop {
                let read = self.read_all(page.scanned_to, limit).await?;
                let Some(last) = read.last().map(|e| e.position) else {
                    return Ok(page);
                };
                page.scanned_to = last;
                let full = read.len() >= limit;
                page.events.extend(
                    read.into_iter()
                        .filter(|e| event_types.contains(&e.event_type)),
                );
                if !page.events.is_empty() || !full {
                    return Ok(page);
                }
            }
        }
    }

    /// The position of the last event [`EventStore::read_all`] can return now, if any.
    fn head(&self) -> impl Future<Output = Result<Option<Position>>> + Send;

    /// A wake-up source that fires after events are appended, for [`crate::Subscription`].
    fn wakeup(&self) -> impl Future<Output = Result<Wakeup>> + Send;

    /// Stores a snapshot, replacing an older one of the same aggregate.
    fn save_snapshot(&self, snapshot: Snapshot) -> impl Future<Output = Result<()>> + Send;

    /// The latest snapshot of an aggregate taken with `schema_version`; snapshots of other
    /// schema versions are ignored.
    fn load_snapshot(
        &self,
        aggregate_id: AggregateId,
        schema_version: u32,
    ) -> impl Future<Output = Result<Option<Snapshot>>> + Send;
}

/// Checks a multi-stream append request before anything is written. Shared by both stores
/// so they refuse exactly the same requests.
pub(crate) fn validate(streams: &[StreamAppend]) -> Result<(), InvalidAppend> {
    if streams.iter().all(|s| s.events.is_empty()) {
        return Err(InvalidAppend::EmptyBatch);
    }
    let mut seen_streams = HashSet::new();
    let mut seen_events = HashSet::new();
    for stream in streams {
        let Some(first) = stream.events.first() else {
            return Err(InvalidAppend::EmptyBatch);
        };
        if !seen_streams.insert(first.aggregate_id) {
            return Err(InvalidAppend::MixedStreams(first.aggregate_id));
        }
        if let Some(expected) = stream.expected_version.required()
            && first.version != expected.next()
        {
            return Err(InvalidAppend::VersionDoesNotFollowExpected {
                aggregate_id: first.aggregate_id,
                expected: stream.expected_version,
                first: first.version,
            });
        }
        let mut previous: Option<Version> = None;
        for event in &stream.events {
            if event.aggregate_id != first.aggregate_id {
                return Err(InvalidAppend::MixedStreams(first.aggregate_id));
            }
            if event.event_type.trim().is_empty() {
                return Err(InvalidAppend::EmptyEventType(event.event_id));
            }
            if event.aggregate_type.trim().is_empty() {
                return Err(InvalidAppend::EmptyAggregateType(event.event_id));
            }
            if !event.payload.is_object() {
                return Err(InvalidAppend::PayloadNotObject(event.event_id));
            }
            if !seen_events.insert(event.event_id) {
                return Err(InvalidAppend::RepeatedEventId(event.event_id));
            }
            if let Some(prev) = previous
                && event.version != prev.next()
            {
                return Err(InvalidAppend::NonContiguousVersions {
                    aggregate_id: event.aggregate_id,
                    previous: prev,
                    next: event.version,
                });
            }
            previous = Some(event.version);
        }
    }
    Ok(())
}

/// Builds the result of an idempotent retry from the events that are already stored.
pub(crate) fn replayed(streams: &[StreamAppend], stored: &[&RecordedEvent]) -> MultiAppendResult {
    let streams = streams
        .iter()
        .filter_map(|s| s.events.first())
        .map(|first| {
            let version = stored
                .iter()
                .filter(|e| e.aggregate_id == first.aggregate_id)
                .map(|e| e.version)
                .max()
                .unwrap_or_default();
            (first.aggregate_id, version)
        })
        .collect();
    let position = stored.iter().map(|e| e.position).max().unwrap_or_default();
    MultiAppendResult { streams, position }
}
