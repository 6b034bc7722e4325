//! The command pipeline: load, decide, append and record, exactly once per command id.
//!
//! 1. The aggregates the command needs are loaded: latest snapshot plus the events after it.
//!    The first attempt skips the read where it can: aggregates this process wrote last
//!    come from its [`AggregateCache`], and a command that creates its aggregates takes
//!    them to be new. That state is unverified: the decision stands only if the append
//!    confirms it (see [`Pipeline::execute`]).
//! 2. A command id seen before returns the recorded outcome (or ALREADY_EXISTS when the
//!    request differs); it is looked up only when the command would otherwise fail.
//! 3. The pure domain decides; the events are appended with each aggregate's loaded version
//!    as the expected version, in one statement with the idempotency record, which the
//!    event store shares with other commands in flight (group commit).
//! 4. On a version conflict the whole command is loaded and decided again, up to
//!    [`MAX_ATTEMPTS`] times, unless the client pinned an expected version.
//! 5. After the commit, subscribers are woken and due snapshots are written in the
//!    background, off the command's critical path.

use std::sync::Arc;

use event_store::{
    AggregateId, CommandAppend, CommandLog, CommandRecord, CommandWrite, EventStore, Position,
    PostgresEventStore, Snapshot,
};
use serde_json::json;
use service_runtime::Clock;
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    backlog::SagaBacklog,
    cache::{AggregateCache, Cached},
    commands::{Command, Detail, Envelope, Outcome, Write},
    decide::decide,
    domain::State,
    error::CommandError,
    reference::References,
    session::{Entry, Session},
};

/// What the pipeline needs of its store: the event store and the command log.
/// [`PostgresEventStore`] in production; [`event_store::InMemoryEventStore`] in unit tests.
pub trait Store: EventStore + CommandLog + Clone + Send + Sync + 'static {}

impl<S: EventStore + CommandLog + Clone + Send + Sync + 'static> Store for S {}

/// The command type under which a voided command id is recorded.
pub const VOIDED: &str = "(voided)";

/// How often a command is decided again after losing a race for an aggregate's version.
/// Commands on one aggregate queue in-process (see [`KeyedLocks`]), so races only happen
/// between instances or across the several products of a reservation.
pub const MAX_ATTEMPTS: usize = 10;

/// Runs commands against the event store.
#[derive(Clone)]
pub struct Pipeline<S = PostgresEventStore> {
    store: S,
    clock: Arc<dyn Clock>,
    snapshot_every: u64,
    locks: Arc<KeyedLocks>,
    cache: Arc<AggregateCache>,
    refs: Arc<References>,
    backlog: Option<Arc<SagaBacklog>>,
}

impl<S: Store> Pipeline<S> {
    /// A pipeline writing to `store`, stamping events with `clock`, snapshotting each
    /// aggregate every `snapshot_every` events (0: never).
    pub fn new(store: S, clock: Arc<dyn Clock>, snapshot_every: u64) -> Self {
        Self {
            store,
            clock,
            snapshot_every,
            locks: Arc::new(KeyedLocks::default()),
            cache: Arc::new(AggregateCache::default()),
            refs: Arc::new(References::default()),
            backlog: None,
        }
    }

    /// Refuses PlaceOrder while `backlog` is full (see [`crate::backlog`]).
    pub fn with_backlog(mut self, backlog: Arc<SagaBacklog>) -> Self {
        self.backlog = Some(backlog);
        self
    }

    /// Executes a command once, however often it is sent.
    ///
    /// The first attempt reads as little as it can: aggregates this process wrote last come
    /// from its cache, and a command that creates its aggregates takes them to be new. Such
    /// state is unverified, so that attempt's decision stands only when the append confirms
    /// every unverified aggregate (each gets events, appended at the version the decision
    /// assumed); anything else (a version conflict, a refusal, a no-op) evicts them and
    /// decides the command again from the store.
    ///
    /// The idempotency log is read only when something stops the command: a retry that
    /// decides the same way collides with its own record (or its own event ids) in the
    /// append, and a retry the new state would refuse is recognised before the refusal is
    /// returned. The common case, a new command, costs no lookup.
    ///
    /// With a [`SagaBacklog`], PlaceOrder is first admitted by it; a refusal changes
    /// nothing and is not recorded, so the same command id can be sent again later. A
    /// placed order's total is remembered once the placement is stored, so the saga's
    /// stock and payment commands for it read nothing more of the order.
    pub async fn execute(&self, envelope: &Envelope) -> Result<Outcome, CommandError> {
        let Command::PlaceOrder { order_id, .. } = envelope.command else {
            return self.execute_admitted(envelope).await;
        };
        if let Some(backlog) = &self.backlog
            && let Err(refused) = backlog.admit()
        {
            // A retry of an order already placed still gets its recorded answer.
            return self.replay_or(envelope, refused).await;
        }
        let outcome = self.execute_admitted(envelope).await;
        if let Ok(placed) = &outcome {
            if let Some(backlog) = &self.backlog {
                backlog.placed();
            }
            if let Detail::Total {
                amount_minor,
                currency,
            } = &placed.detail
            {
                self.refs.remember_placed(order_id, *amount_minor, currency);
            }
        }
        outcome
    }

    async fn execute_admitted(&self, envelope: &Envelope) -> Result<Outcome, CommandError> {
        let streams = envelope.command.streams();
        let _turn = self.locks.lock(streams.keys).await;
        let mut session = Session::optimistic(&self.store, &self.cache, streams.creates);
        let decided = decide(
            &envelope.command,
            &mut session,
            envelope.expected_version,
            &self.refs,
        )
        .await;
        if !session.has_unverified() {
            // Everything came from the store: this was an ordinary first attempt.
            return self.settle(envelope, session, decided, 1).await;
        }
        let ids: Vec<AggregateId> = session.entries.iter().map(|e| e.id).collect();
        if let Ok(detail) = decided
            && session.unverified_all_written()
            && let Ok(Some(outcome)) = self.commit(envelope, session, detail).await
        {
            return Ok(outcome);
        }
        for id in ids {
            self.cache.evict(id);
        }
        metrics::counter!("command_redecisions_total", "reason" => "unverified").increment(1);
        let mut session = Session::new(&self.store);
        let decided = decide(
            &envelope.command,
            &mut session,
            envelope.expected_version,
            &self.refs,
        )
        .await;
        self.settle(envelope, session, decided, 1).await
    }

    /// Finishes an attempt decided from the store: commits it, or decides again after a
    /// version conflict (up to [`MAX_ATTEMPTS`], unless the client pinned a version).
    async fn settle(
        &self,
        envelope: &Envelope,
        mut session: Session<'_, S>,
        mut decided: Result<Detail, CommandError>,
        mut attempt: usize,
    ) -> Result<Outcome, CommandError> {
        loop {
            let detail = match decided {
                Ok(detail) => detail,
                Err(err) => {
                    if matches!(err, CommandError::Conflict { .. }) {
                        metrics::counter!("command_version_conflicts_total").increment(1);
                    }
                    return self.replay_or(envelope, err).await;
                }
            };
            match self.commit(envelope, session, detail).await {
                Ok(Some(outcome)) => return Ok(outcome),
                // A concurrent request with the same command id committed first.
                Ok(None) => {
                    return self.replay(envelope).await?.ok_or_else(|| {
                        CommandError::Internal("command id recorded but not found".into())
                    });
                }
                Err(CommandError::Conflict { .. })
                    if envelope.expected_version.is_none() && attempt < MAX_ATTEMPTS =>
                {
                    metrics::counter!("command_version_conflicts_total").increment(1);
                    metrics::counter!("command_redecisions_total", "reason" => "conflict")
                        .increment(1);
                    tracing::debug!(
                        attempt,
                        command = envelope.command_type,
                        "version conflict; deciding again"
                    );
                    // Jitter spreads out writers that keep colliding.
                    let jitter = u64::from(Uuid::new_v4().as_bytes()[0]) % 4;
                    tokio::time::sleep(std::time::Duration::from_millis(attempt as u64 + jitter))
                        .await;
                }
                Err(err) => {
                    if matches!(err, CommandError::Conflict { .. }) {
                        metrics::counter!("command_version_conflicts_total").increment(1);
                    }
                    return self.replay_or(envelope, err).await;
                }
            }
            attempt += 1;
            session = Session::new(&self.store);
            decided = decide(
                &envelope.command,
                &mut session,
                envelope.expected_version,
                &self.refs,
            )
            .await;
        }
    }

    /// Settles `command_id` for good: true when no command with it had run (now none ever
    /// will: the id is recorded as voided, in the idempotency log that every command's
    /// append also writes, so exactly one of the two gets it), false when one had.
    pub async fn void(&self, command_id: Uuid, reason: &str) -> Result<bool, CommandError> {
        let record = CommandRecord {
            command_id,
            command_type: VOIDED.to_owned(),
            request_hash: Vec::new(),
            outcome: json!({ "reason": reason }),
            recorded_at: self.clock.now(),
            position: Position::START,
        };
        let written = self
            .store
            .append_command(CommandAppend {
                streams: Vec::new(),
                record,
            })
            .await?;
        let voided = match written {
            CommandWrite::Appended(_) => true,
            CommandWrite::AlreadyRecorded => {
                let recorded = self.store.find_command(command_id).await?.ok_or_else(|| {
                    CommandError::Internal("command id recorded but not found".into())
                })?;
                recorded.command_type == VOIDED
            }
        };
        let result = if voided { "voided" } else { "ran" };
        metrics::counter!("command_voids_total", "result" => result).increment(1);
        Ok(voided)
    }

    /// The recorded outcome if the command id was used before, else `err`.
    async fn replay_or(
        &self,
        envelope: &Envelope,
        err: CommandError,
    ) -> Result<Outcome, CommandError> {
        match self.replay(envelope).await {
            Ok(Some(outcome)) => Ok(outcome),
            Ok(None) => Err(err),
            Err(err @ (CommandError::CommandIdReused(_) | CommandError::Voided { .. })) => Err(err),
            // The lookup failing too (database down) says no more than the first error.
            Err(_) => Err(err),
        }
    }

    /// The recorded outcome of an earlier request with the same command id.
    async fn replay(&self, envelope: &Envelope) -> Result<Option<Outcome>, CommandError> {
        let Some(recorded) = self.store.find_command(envelope.command_id).await? else {
            return Ok(None);
        };
        if recorded.command_type == VOIDED {
            return Err(CommandError::Voided {
                command_id: envelope.command_id,
                reason: recorded.outcome["reason"].as_str().unwrap_or("").to_owned(),
            });
        }
        if recorded.request_hash != envelope.request_hash {
            return Err(CommandError::CommandIdReused(envelope.command_id));
        }
        metrics::counter!("command_replays_total").increment(1);
        let mut outcome: Outcome = serde_json::from_value(recorded.outcome).map_err(|err| {
            CommandError::Internal(format!("recorded outcome does not decode: {err}"))
        })?;
        if let Some(position) = recorded.position {
            outcome.position = position;
        }
        Ok(Some(outcome))
    }

    /// Appends the session's events and records the command in one statement. `Ok(None)`
    /// when the command id was recorded concurrently.
    async fn commit(
        &self,
        envelope: &Envelope,
        session: Session<'_, S>,
        detail: Detail,
    ) -> Result<Option<Outcome>, CommandError> {
        let now = self.clock.now();
        let streams = session.appends(envelope, now);
        let mut outcome = Outcome {
            writes: session
                .entries
                .iter()
                .map(|e| Write {
                    aggregate_id: e.id.as_uuid(),
                    version: e.version().get(),
                })
                .collect(),
            // The store records the real position beside the outcome.
            position: session.last_position(),
            detail,
        };
        let record = CommandRecord {
            command_id: envelope.command_id,
            command_type: envelope.command_type.to_owned(),
            request_hash: envelope.request_hash.clone(),
            outcome: serde_json::to_value(&outcome)
                .map_err(|err| CommandError::Internal(format!("outcome does not encode: {err}")))?,
            recorded_at: now,
            position: outcome.position,
        };
        match self
            .store
            .append_command(CommandAppend { streams, record })
            .instrument(tracing::info_span!("append"))
            .await?
        {
            CommandWrite::AlreadyRecorded => Ok(None),
            CommandWrite::Appended(None) => Ok(Some(outcome)),
            CommandWrite::Appended(Some(appended)) => {
                outcome.position = appended.position;
                for entry in session.entries {
                    let written = !entry.pending.is_empty();
                    let Entry {
                        id,
                        loaded_version,
                        last_position,
                        ..
                    } = entry;
                    let version = entry.version();
                    let state = Arc::new(entry.state);
                    if written {
                        self.snapshot_in_background(
                            id,
                            (loaded_version, version),
                            state.clone(),
                            outcome.position,
                            now,
                        );
                    }
                    self.cache.put(
                        id,
                        Cached {
                            version,
                            last_position: if written {
                                Some(appended.position)
                            } else {
                                last_position
                            },
                            state,
                        },
                    );
                }
                Ok(Some(outcome))
            }
        }
    }

    /// Writes a snapshot of aggregate `aggregate_id` (moved from version `before` to
    /// `after`, now in `state`) if its version crossed a multiple of the snapshot interval.
    /// Encoding and writing happen in a task of their own; failures are logged: a missing
    /// snapshot only costs load time.
    fn snapshot_in_background(
        &self,
        aggregate_id: AggregateId,
        (before, after): (event_store::Version, event_store::Version),
        state: Arc<State>,
        position: Position,
        now: chrono::DateTime<chrono::Utc>,
    ) {
        if self.snapshot_every == 0
            || before.get() / self.snapshot_every == after.get() / self.snapshot_every
        {
            return;
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            let Ok(encoded) = state.encode() else {
                return;
            };
            let snapshot = Snapshot {
                aggregate_id,
                aggregate_type: state.aggregate_type().to_owned(),
                version: after,
                schema_version: state.snapshot_schema(),
                state: json!({ "position": position, "state": encoded }),
                taken_at: now,
            };
            match store.save_snapshot(snapshot).await {
                Ok(()) => metrics::counter!("command_snapshots_written_total").increment(1),
                Err(err) => tracing::warn!(error = %err, "could not save a snapshot"),
            }
        });
    }
}

/// One async mutex per aggregate id, created on demand and dropped when idle.
#[derive(Default)]
pub struct KeyedLocks {
    locks: std::sync::Mutex<std::collections::HashMap<AggregateId, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    /// Waits for every key, in the order given (callers pass them sorted).
    async fn lock(&self, keys: Vec<AggregateId>) -> Vec<tokio::sync::OwnedMutexGuard<()>> {
        let mutexes: Vec<Arc<tokio::sync::Mutex<()>>> = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            if locks.len() > 4096 {
                // Nobody holds or waits for a mutex whose only reference is the map's.
                locks.retain(|_, m| Arc::strong_count(m) > 1);
            }
            keys.iter()
                .map(|k| locks.entry(*k).or_default().clone())
                .collect()
        };
        let mut guards = Vec::with_capacity(mutexes.len());
        for mutex in mutexes {
            guards.push(mutex.lock_owned().await);
        }
        guards
    }
}

#[cfg(test)]
mod tests;
