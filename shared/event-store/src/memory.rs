//! The in-memory store: the same contract as PostgreSQL, for unit tests and examples.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use tokio::sync::watch;

use uuid::Uuid;

use crate::{
    AggregateId, CommandAppend, CommandLog, CommandWrite, Error, EventId, EventQuery, EventStore,
    MultiAppendResult, Position, RecordedCommand, RecordedEvent, Result, Snapshot, StreamAppend,
    Version, Wakeup,
    store::{replayed, validate},
};

/// An event store held in memory. Clones share the same events.
///
/// Each append is one "transaction": it gets the next transaction id, and all its events
/// become visible at once, so positions order exactly as PostgreSQL's do.
#[derive(Debug, Clone)]
pub struct InMemoryEventStore {
    state: Arc<Mutex<State>>,
    appended: Arc<watch::Sender<u64>>,
}

#[derive(Debug, Default)]
struct State {
    /// Every event in log order.
    events: Vec<RecordedEvent>,
    /// Index into `events` by event id.
    by_event_id: HashMap<EventId, usize>,
    /// Each stream's current version.
    versions: HashMap<AggregateId, Version>,
    /// The latest snapshot of each aggregate.
    snapshots: HashMap<AggregateId, Snapshot>,
    /// The command log, by command id.
    commands: HashMap<Uuid, RecordedCommand>,
    /// The id the next append gets.
    next_transaction: u64,
}

impl Default for InMemoryEventStore {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryEventStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                next_transaction: 1,
                ..State::default()
            })),
            appended: Arc::new(watch::channel(0).0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-written: every append
        // checks everything before it changes anything.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    /// Checks every stream's expected version, then appends all of them as one
    /// transaction. The caller validated the request and ruled out a replay.
    fn append(&mut self, streams: Vec<StreamAppend>) -> Result<MultiAppendResult> {
        for stream in &streams {
            let id = stream.events[0].aggregate_id;
            let actual = self.version_of(id);
            if let Some(expected) = stream.expected_version.required()
                && expected != actual
            {
                return Err(Error::VersionConflict {
                    aggregate_id: id,
                    expected: stream.expected_version,
                    actual,
                });
            }
        }
        let transaction_id = self.next_transaction;
        self.next_transaction += 1;
        let mut written = Vec::with_capacity(streams.len());
        let mut position = Position::START;
        for stream in streams {
            let id = stream.events[0].aggregate_id;
            let mut version = self.version_of(id);
            for mut envelope in stream.events {
                version = version.next();
                envelope.version = version;
                position = Position::new(transaction_id, self.events.len() as u64 + 1);
                let index = self.events.len();
                self.by_event_id.insert(envelope.event_id, index);
                self.events.push(RecordedEvent { position, envelope });
            }
            self.versions.insert(id, version);
            written.push((id, version));
        }
        Ok(MultiAppendResult {
            streams: written,
            position,
        })
    }

    fn version_of(&self, id: AggregateId) -> Version {
        self.versions.get(&id).copied().unwrap_or(Version::INITIAL)
    }

    /// The result of an earlier append whose events are all stored already.
    fn replayed_result(&self, streams: &[StreamAppend]) -> Result<Option<MultiAppendResult>> {
        let ids: Vec<EventId> = streams
            .iter()
            .flat_map(|s| s.events.iter().map(|e| e.event_id))
            .collect();
        let stored: Vec<&RecordedEvent> = ids
            .iter()
            .filter_map(|id| self.by_event_id.get(id).map(|&i| &self.events[i]))
            .collect();
        if stored.is_empty() {
            return Ok(None);
        }
        if stored.len() < ids.len() {
            let duplicate = ids
                .into_iter()
                .find(|id| self.by_event_id.contains_key(id))
                .unwrap_or_default();
            return Err(Error::DuplicateEventId(duplicate));
        }
        Ok(Some(replayed(streams, &stored)))
    }
}

impl CommandLog for InMemoryEventStore {
    async fn append_command(&self, command: CommandAppend) -> Result<CommandWrite> {
        if !command.streams.is_empty() {
            validate(&command.streams)?;
        }
        let CommandAppend { streams, record } = command;
        let written = {
            let mut state = self.lock();
            if state.commands.contains_key(&record.command_id) {
                return Ok(CommandWrite::AlreadyRecorded);
            }
            let written = if streams.is_empty() {
                None
            } else {
                if state.replayed_result(&streams)?.is_some() {
                    // Every event is stored: the same command, written by a retry.
                    return Ok(CommandWrite::AlreadyRecorded);
                }
                Some(state.append(streams)?)
            };
            let position = written.as_ref().map_or(record.position, |w| w.position);
            state.commands.insert(
                record.command_id,
                RecordedCommand {
                    command_type: record.command_type,
                    request_hash: record.request_hash,
                    outcome: record.outcome,
                    position: Some(position),
                },
            );
            written
        };
        if written.is_some() {
            self.appended.send_modify(|n| *n += 1);
        }
        Ok(CommandWrite::Appended(written))
    }

    async fn find_command(&self, command_id: Uuid) -> Result<Option<RecordedCommand>> {
        Ok(self.lock().commands.get(&command_id).cloned())
    }
}

impl EventStore for InMemoryEventStore {
    async fn append_streams(&self, streams: Vec<StreamAppend>) -> Result<MultiAppendResult> {
        validate(&streams)?;
        let result = {
            let mut state = self.lock();
            if let Some(result) = state.replayed_result(&streams)? {
                return Ok(result);
            }
            state.append(streams)?
        };
        self.appended.send_modify(|n| *n += 1);
        Ok(result)
    }

    async fn get_events_for_aggregate(
        &self,
        aggregate_id: AggregateId,
        from: Option<Version>,
    ) -> Result<Vec<RecordedEvent>> {
        let from = from.unwrap_or(Version::INITIAL);
        let state = self.lock();
        Ok(state
            .events
            .iter()
            .filter(|e| e.aggregate_id == aggregate_id && e.version >= from)
            .cloned()
            .collect())
    }

    async fn query(&self, query: &EventQuery) -> Result<Vec<RecordedEvent>> {
        let state = self.lock();
        Ok(state
            .events
            .iter()
            .filter(|e| query.matches(e))
            .take(query.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect())
    }

    async fn read_all(&self, after: Position, limit: usize) -> Result<Vec<RecordedEvent>> {
        let state = self.lock();
        let start = state.events.partition_point(|e| e.position <= after);
        Ok(state.events[start..].iter().take(limit).cloned().collect())
    }

    async fn head(&self) -> Result<Option<Position>> {
        Ok(self.lock().events.last().map(|e| e.position))
    }

    async fn wakeup(&self) -> Result<Wakeup> {
        Ok(Wakeup::local(self.appended.subscribe()))
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        let mut state = self.lock();
        let newer = state
            .snapshots
            .get(&snapshot.aggregate_id)
            .is_none_or(|old| {
                old.version < snapshot.version || old.schema_version != snapshot.schema_version
            });
        if newer {
            state.snapshots.insert(snapshot.aggregate_id, snapshot);
        }
        Ok(())
    }

    async fn load_snapshot(
        &self,
        aggregate_id: AggregateId,
        schema_version: u32,
    ) -> Result<Option<Snapshot>> {
        Ok(self
            .lock()
            .snapshots
            .get(&aggregate_id)
            .filter(|s| s.schema_version == schema_version)
            .cloned())
    }
}

#[cfg(test)]
mod tests {
    //! The conformance suite against the in-memory store.

    use super::InMemoryEventStore;
    use crate::conformance;

    #[tokio::test]
    async fn appends_and_reads_a_stream() {
        conformance::appends_and_reads_a_stream(&InMemoryEventStore::new()).await;
    }

    #[tokio::test]
    async fn checks_expected_versions() {
        conformance::checks_expected_versions(&InMemoryEventStore::new()).await;
    }

    #[tokio::test]
    async fn appends_to_several_streams_atomically() {
        conformance::appends_to_several_streams_atomically(&InMemoryEventStore::new()).await;
    }

    #[tokio::test]
    async fn stores_each_event_id_once() {
        conformance::stores_each_event_id_once(&InMemoryEventStore::new()).await;
    }

    #[tokio::test]
    async fn refuses_malformed_appends() {
        conformance::refuses_malformed_appends(&InMemoryEventStore::new()).await;
    }

    #[tokio::test]
    async fn filters_queries() {
        conformance::filters_queries(&InMemoryEventStore::new()).await;
    }

    #[tokio::test]
    async fn reads_the_log_in_batches() {
        conformance::reads_the_log_in_batches(&InMemoryEventStore::new()).await;
    }

    #[tokio::test]
    async fn reads_the_log_by_type() {
        conformance::reads_the_log_by_type(&InMemoryEventStore::new()).await;
    }

    #[tokio::test]
    async fn keeps_the_latest_snapshot() {
        conformance::keeps_the_latest_snapshot(&InMemoryEventStore::new()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lets_one_of_many_concurrent_writers_win() {
        conformance::lets_one_of_many_concurrent_writers_win(&InMemoryEventStore::new()).await;
    }

    #[tokio::test]
    async fn subscription_catches_up_and_resumes() {
        conformance::subscription_catches_up_and_resumes(&InMemoryEventStore::new()).await;
    }

    #[tokio::test]
    async fn wakes_listeners_on_append() {
        conformance::wakes_listeners_on_append(&InMemoryEventStore::new()).await;
    }

    #[tokio::test]
    async fn records_each_command_once() {
        conformance::records_each_command_once(&InMemoryEventStore::new()).await;
    }
}
