//! One attempt at a command: the aggregates it loaded (from the store, the cache, or
//! taken to be new), the events it decided on each, and the appends they become.

use std::sync::Arc;

use domain_events::{DomainEvent, StoredEvent};
use event_store::{
    AggregateId, EventEnvelope, EventId, EventStore, ExpectedVersion, Metadata, Position,
    StreamAppend, Version,
};
use uuid::Uuid;

use crate::{
    cache::AggregateCache,
    commands::Envelope,
    domain::{Aggregate, DomainError, State},
    error::CommandError,
};

/// One aggregate loaded during a command.
pub(crate) struct Entry {
    pub(crate) id: AggregateId,
    pub(crate) loaded_version: Version,
    /// Position of the aggregate's last stored event, if any.
    pub(crate) last_position: Option<Position>,
    pub(crate) state: State,
    /// Events decided in this command, already applied to `state`.
    pub(crate) pending: Vec<DomainEvent>,
    /// Taken from the cache or assumed new rather than read from the store.
    pub(crate) unverified: bool,
}

impl Entry {
    fn new(
        id: AggregateId,
        state: State,
        loaded_version: Version,
        last_position: Option<Position>,
    ) -> Self {
        Self {
            id,
            loaded_version,
            last_position,
            state,
            pending: Vec::new(),
            unverified: false,
        }
    }

    fn unverified(self) -> Self {
        Self {
            unverified: true,
            ..self
        }
    }

    /// The version after the decided events.
    pub(crate) fn version(&self) -> Version {
        Version::new(self.loaded_version.get() + self.pending.len() as u64)
    }
}

/// The aggregates one attempt at a command has loaded, and the events it decided.
pub(crate) struct Session<'a, S> {
    pub(crate) store: &'a S,
    pub(crate) entries: Vec<Entry>,
    /// Aggregates found here are used without reading the store (unverified).
    cache: Option<&'a AggregateCache>,
    /// Take every aggregate not in the cache to be new instead of reading it (unverified).
    assume_new: bool,
}

impl<'a, S: EventStore> Session<'a, S> {
    /// A session that reads every aggregate from the store.
    pub(crate) fn new(store: &'a S) -> Self {
        Self {
            store,
            entries: Vec::new(),
            cache: None,
            assume_new: false,
        }
    }

    /// A session that takes aggregates from `cache` when it has them and, if `assume_new`,
    /// takes the others to be new; it reads the store only for the rest.
    pub(crate) fn optimistic(store: &'a S, cache: &'a AggregateCache, assume_new: bool) -> Self {
        Self {
            cache: Some(cache),
            assume_new,
            ..Self::new(store)
        }
    }

    /// True when some aggregate was not read from the store.
    pub(crate) fn has_unverified(&self) -> bool {
        self.entries.iter().any(|e| e.unverified)
    }

    /// True when every aggregate not read from the store has events to append, so the
    /// append's version check confirms the state the decision assumed.
    pub(crate) fn unverified_all_written(&self) -> bool {
        self.entries
            .iter()
            .all(|e| !e.unverified || !e.pending.is_empty())
    }

    /// Loads an aggregate (once per session) and returns its state and version.
    pub(crate) async fn load<A: Aggregate>(
        &mut self,
        id: AggregateId,
    ) -> Result<(&A, Version), CommandError> {
        let index = match self.entries.iter().position(|e| e.id == id) {
            Some(index) => index,
            None => {
                let cached = self.cache.and_then(|cache| cache.take(id)).and_then(|c| {
                    // Taken out of the cache, the state is usually ours alone: no copy.
                    let state = Arc::try_unwrap(c.state).unwrap_or_else(|shared| (*shared).clone());
                    A::in_state(&state)?;
                    Some(Entry::new(id, state, c.version, c.last_position))
                });
                if self.cache.is_some() {
                    let result = if cached.is_some() { "hit" } else { "miss" };
                    metrics::counter!("command_aggregate_cache_total", "result" => result)
                        .increment(1);
                }
                let entry = match cached {
                    Some(entry) => entry.unverified(),
                    None if self.assume_new => {
                        Entry::new(id, A::default().into_state(), Version::INITIAL, None)
                            .unverified()
                    }
                    None => load::<A, S>(self.store, id).await?,
                };
                self.entries.push(entry);
                self.entries.len() - 1
            }
        };
        let entry = &self.entries[index];
        let state = A::in_state(&entry.state)
            .ok_or_else(|| CommandError::NotFound(format!("{id} is not a {}", A::TYPE)))?;
        Ok((state, entry.version()))
    }

    /// Asks a loaded aggregate to handle a command; its events are applied and kept for the
    /// append. `what` names the aggregate in a not-found message. Returns how many events
    /// it decided.
    pub(crate) fn decide<A: Aggregate>(
        &mut self,
        id: AggregateId,
        what: &str,
        command: &A::Command,
    ) -> Result<usize, CommandError> {
        let entry = self
            .entries
            .iter_mut()
            .find(|e| e.id == id)
            .ok_or_else(|| {
                CommandError::Internal(format!("{what} decided before it was loaded"))
            })?;
        let state = A::in_state_mut(&mut entry.state)
            .ok_or_else(|| CommandError::NotFound(format!("{what} not found")))?;
        let events = state.handle(command).map_err(|err| match err {
            DomainError::NotFound(_) => CommandError::NotFound(format!("{what} not found")),
            refused => refused.into(),
        })?;
        for event in &events {
            state.apply(event);
        }
        let count = events.len();
        entry.pending.extend(events);
        Ok(count)
    }

    /// The position of the newest stored event among the loaded aggregates.
    pub(crate) fn last_position(&self) -> Position {
        self.entries
            .iter()
            .filter_map(|e| e.last_position)
            .max()
            .unwrap_or(Position::START)
    }

    /// The appends for every aggregate with decided events.
    pub(crate) fn appends(
        &self,
        envelope: &Envelope,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Vec<StreamAppend> {
        // The trace of the call that decided the events goes with them (W3C traceparent,
        // as the CloudEvents distributed-tracing extension stores it), so whoever acts on
        // them later (the saga) continues it.
        let extra: std::collections::BTreeMap<String, serde_json::Value> =
            service_runtime::telemetry::current_traceparent()
                .map(|tp| ("traceparent".to_owned(), serde_json::Value::String(tp)))
                .into_iter()
                .collect();
        self.entries
            .iter()
            .filter(|e| !e.pending.is_empty())
            .map(|entry| {
                let expected = if entry.loaded_version == Version::INITIAL {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(entry.loaded_version)
                };
                let events = (1..)
                    .zip(&entry.pending)
                    .map(|(n, event)| {
                        let version = Version::new(entry.loaded_version.get() + n);
                        let stored = StoredEvent::encode(event);
                        EventEnvelope {
                            // Derived from the command, so the same decision always has the
                            // same event ids and the store can recognise a replay.
                            event_id: EventId::from_uuid(Uuid::new_v5(
                                &envelope.command_id,
                                format!("{}/{}", entry.id, version).as_bytes(),
                            )),
                            event_type: stored.event_type.to_owned(),
                            aggregate_id: entry.id,
                            aggregate_type: entry.state.aggregate_type().to_owned(),
                            version,
                            timestamp: now,
                            payload: stored.payload.into(),
                            metadata: Metadata {
                                correlation_id: Some(envelope.correlation_id),
                                causation_id: Some(envelope.command_id),
                                extra: extra.clone(),
                            },
                        }
                    })
                    .collect();
                StreamAppend {
                    expected_version: expected,
                    events,
                }
            })
            .collect()
    }
}

/// Reads an aggregate's current state and version from the store.
pub(crate) async fn load_state<A: Aggregate, S: EventStore>(
    store: &S,
    id: AggregateId,
) -> Result<(A, Version), CommandError> {
    let entry = load::<A, S>(store, id).await?;
    let version = entry.version();
    let state = A::from_state(entry.state)
        .ok_or_else(|| CommandError::Internal(format!("{id} did not load as a {}", A::TYPE)))?;
    Ok((state, version))
}

/// Loads an aggregate: the latest snapshot of its current schema, if it decodes, plus every
/// event after it.
async fn load<A: Aggregate, S: EventStore>(
    store: &S,
    id: AggregateId,
) -> Result<Entry, CommandError> {
    let mut state = A::default();
    let mut version = Version::INITIAL;
    let mut last_position = None;
    if let Some(snapshot) = store.load_snapshot(id, A::SNAPSHOT_SCHEMA).await? {
        match decode_snapshot::<A>(&snapshot.state) {
            Some((snapshot_state, position)) => {
                state = snapshot_state;
                version = snapshot.version;
                last_position = position;
            }
            None => tracing::warn!(aggregate = %id, "ignoring a snapshot that does not decode"),
        }
    }
    let events = store
        .get_events_for_aggregate(id, Some(version.next()))
        .await?;
    for recorded in events {
        if recorded.aggregate_type != A::TYPE {
            return Err(CommandError::NotFound(format!("{id} is not a {}", A::TYPE)));
        }
        let event = StoredEvent::decode(&recorded.event_type, recorded.payload.as_str()).map_err(
            |err| {
                CommandError::Internal(format!(
                    "stored event {} does not decode: {err}",
                    recorded.event_id
                ))
            },
        )?;
        state.apply(&event);
        version = recorded.version;
        last_position = Some(recorded.position);
    }
    Ok(Entry::new(id, state.into_state(), version, last_position))
}

fn decode_snapshot<A: Aggregate>(value: &serde_json::Value) -> Option<(A, Option<Position>)> {
    let state = serde_json::from_value(value.get("state")?.clone()).ok()?;
    let position = serde_json::from_value(value.get("position")?.clone()).ok();
    Some((state, position))
}
