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

use std::{any::Any, sync::Arc};

use domain_events::{
    StoredEvent,
    values::{PaymentId, ProductId},
};
use event_store::{
    AggregateId, CommandAppend, CommandLog, CommandRecord, CommandWrite, EventEnvelope, EventId,
    EventStore, ExpectedVersion, Metadata, Position, PostgresEventStore, Snapshot, StreamAppend,
    Version,
};
use serde_json::json;
use service_runtime::Clock;
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    backlog::SagaBacklog,
    cache::{AggregateCache, Cached},
    commands::{Command, Detail, Envelope, Outcome, Write},
    domain::{
        Aggregate, DomainError, Order, OrderCommand, Payment, PaymentCommand, PaymentStatus,
        Product, ProductCommand,
    },
    error::CommandError,
    reference::{OrderFact, References},
};

/// The command type under which a voided command id is recorded.
pub const VOIDED: &str = "(voided)";

/// How often a command is decided again after losing a race for an aggregate's version.
/// Commands on one aggregate queue in-process (see [`KeyedLocks`]), so races only happen
/// between instances or across the several products of a reservation.
pub const MAX_ATTEMPTS: usize = 10;

/// Runs commands against the event store.
#[derive(Clone)]
pub struct Pipeline {
    store: PostgresEventStore,
    clock: Arc<dyn Clock>,
    snapshot_every: u64,
    locks: Arc<KeyedLocks>,
    cache: Arc<AggregateCache>,
    refs: Arc<References>,
    backlog: Option<Arc<SagaBacklog>>,
}

impl Pipeline {
    /// A pipeline writing to `store`, stamping events with `clock`, snapshotting each
    /// aggregate every `snapshot_every` events (0: never).
    pub fn new(store: PostgresEventStore, clock: Arc<dyn Clock>, snapshot_every: u64) -> Self {
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
    /// nothing and is not recorded, so the same command id can be sent again later.
    pub async fn execute(&self, envelope: &Envelope) -> Result<Outcome, CommandError> {
        let Some(backlog) = self
            .backlog
            .as_deref()
            .filter(|_| matches!(envelope.command, Command::PlaceOrder { .. }))
        else {
            return self.execute_admitted(envelope).await;
        };
        if let Err(refused) = backlog.admit() {
            // A retry of an order already placed still gets its recorded answer.
            return self.replay_or(envelope, refused).await;
        }
        let outcome = self.execute_admitted(envelope).await;
        if outcome.is_ok() {
            backlog.placed();
        }
        outcome
    }

    async fn execute_admitted(&self, envelope: &Envelope) -> Result<Outcome, CommandError> {
        let _turn = self.locks.lock(lock_keys(&envelope.command)).await;
        let mut session =
            Session::optimistic(&self.store, &self.cache, creates_streams(&envelope.command));
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
        mut session: Session<'_>,
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
        session: Session<'_>,
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
                for mut entry in session.entries {
                    let written = !entry.pending.is_empty();
                    let state: Arc<dyn Any + Send + Sync> =
                        Arc::from(std::mem::replace(&mut entry.state, Box::new(())));
                    if written {
                        self.snapshot_in_background(&entry, state.clone(), outcome.position, now);
                    }
                    self.cache.put(
                        entry.id,
                        Cached {
                            version: entry.version(),
                            last_position: if written {
                                Some(appended.position)
                            } else {
                                entry.last_position
                            },
                            state,
                        },
                    );
                }
                Ok(Some(outcome))
            }
        }
    }

    /// Writes a snapshot of `entry` (whose new state is `state`) if its version crossed a
    /// multiple of the snapshot interval. Encoding and writing happen in a task of their
    /// own; failures are logged: a missing snapshot only costs load time.
    fn snapshot_in_background(
        &self,
        entry: &Entry,
        state: Arc<dyn Any + Send + Sync>,
        position: Position,
        now: chrono::DateTime<chrono::Utc>,
    ) {
        if self.snapshot_every == 0 {
            return;
        }
        let (before, after) = (entry.loaded_version.get(), entry.version().get());
        if before / self.snapshot_every == after / self.snapshot_every {
            return;
        }
        let (encode, store) = (entry.encode_state, self.store.clone());
        let (aggregate_id, version, schema_version, aggregate_type) = (
            entry.id,
            entry.version(),
            entry.snapshot_schema,
            entry.aggregate_type.to_owned(),
        );
        tokio::spawn(async move {
            let Some(state) = encode(state.as_ref()) else {
                return;
            };
            let snapshot = Snapshot {
                aggregate_id,
                aggregate_type,
                version,
                schema_version,
                state: json!({ "position": position, "state": state }),
                taken_at: now,
            };
            match store.save_snapshot(snapshot).await {
                Ok(()) => metrics::counter!("command_snapshots_written_total").increment(1),
                Err(err) => tracing::warn!(error = %err, "could not save a snapshot"),
            }
        });
    }
}

/// Commands that create every aggregate they touch: an order, a product, an order's payment.
fn creates_streams(command: &Command) -> bool {
    matches!(
        command,
        Command::CreateOrder { .. }
            | Command::CreateProduct { .. }
            | Command::AuthorizePayment { .. }
    )
}

/// The aggregates whose commands queue behind each other in this process: racing for a
/// version in PostgreSQL only to retry is slower than waiting in line.
fn lock_keys(command: &Command) -> Vec<AggregateId> {
    let order = |id: domain_events::values::OrderId| AggregateId::from_uuid(id.as_uuid());
    let product = |sku: &domain_events::values::Sku| {
        AggregateId::from_uuid(ProductId::for_sku(sku).as_uuid())
    };
    let mut keys = match command {
        Command::CreateOrder { order_id, .. }
        | Command::AddOrderLine { order_id, .. }
        | Command::RemoveOrderLine { order_id, .. }
        | Command::PlaceOrder { order_id, .. }
        | Command::ConfirmOrder { order_id }
        | Command::ShipOrder { order_id }
        | Command::CancelOrder { order_id, .. } => vec![order(*order_id)],
        Command::CreateProduct { sku, .. } | Command::RestockProduct { sku, .. } => {
            vec![product(sku)]
        }
        Command::ReserveStock { items, .. } => items.iter().map(|(sku, _)| product(sku)).collect(),
        Command::ReleaseStock { skus, .. } => skus.iter().map(product).collect(),
        Command::AuthorizePayment { order_id, .. } | Command::RefundPayment { order_id, .. } => {
            vec![AggregateId::from_uuid(
                PaymentId::for_order(*order_id).as_uuid(),
            )]
        }
    };
    // A fixed order, so two commands needing the same keys cannot deadlock.
    keys.sort();
    keys.dedup();
    keys
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

/// One aggregate loaded during a command.
struct Entry {
    id: AggregateId,
    aggregate_type: &'static str,
    snapshot_schema: u32,
    loaded_version: Version,
    /// Position of the aggregate's last stored event, if any.
    last_position: Option<Position>,
    state: Box<dyn Any + Send + Sync>,
    encode_state: fn(&(dyn Any + Send + Sync)) -> Option<serde_json::Value>,
    /// Events decided in this command, already applied to `state`.
    pending: Vec<domain_events::DomainEvent>,
    /// Taken from the cache or assumed new rather than read from the store.
    unverified: bool,
}

impl Entry {
    fn new<A: Aggregate>(
        id: AggregateId,
        state: A,
        loaded_version: Version,
        last_position: Option<Position>,
    ) -> Self {
        Self {
            id,
            aggregate_type: A::TYPE,
            snapshot_schema: A::SNAPSHOT_SCHEMA,
            loaded_version,
            last_position,
            state: Box::new(state),
            encode_state: encode_state::<A>,
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

    fn version(&self) -> Version {
        Version::new(self.loaded_version.get() + self.pending.len() as u64)
    }
}

fn encode_state<A: Aggregate>(state: &(dyn Any + Send + Sync)) -> Option<serde_json::Value> {
    serde_json::to_value(state.downcast_ref::<A>()?).ok()
}

/// The aggregates one attempt at a command has loaded, and the events it decided.
struct Session<'a> {
    store: &'a PostgresEventStore,
    entries: Vec<Entry>,
    /// Aggregates found here are used without reading the store (unverified).
    cache: Option<&'a AggregateCache>,
    /// Take every aggregate not in the cache to be new instead of reading it (unverified).
    assume_new: bool,
}

impl<'a> Session<'a> {
    /// A session that reads every aggregate from the store.
    fn new(store: &'a PostgresEventStore) -> Self {
        Self {
            store,
            entries: Vec::new(),
            cache: None,
            assume_new: false,
        }
    }

    /// A session that takes aggregates from `cache` when it has them and, if `assume_new`,
    /// takes the others to be new; it reads the store only for the rest.
    fn optimistic(
        store: &'a PostgresEventStore,
        cache: &'a AggregateCache,
        assume_new: bool,
    ) -> Self {
        Self {
            cache: Some(cache),
            assume_new,
            ..Self::new(store)
        }
    }

    /// True when some aggregate was not read from the store.
    fn has_unverified(&self) -> bool {
        self.entries.iter().any(|e| e.unverified)
    }

    /// True when every aggregate not read from the store has events to append, so the
    /// append's version check confirms the state the decision assumed.
    fn unverified_all_written(&self) -> bool {
        self.entries
            .iter()
            .all(|e| !e.unverified || !e.pending.is_empty())
    }

    /// Loads an aggregate (once per session) and returns its state and version.
    async fn load<A: Aggregate>(&mut self, id: AggregateId) -> Result<(&A, Version), CommandError> {
        let index = match self.entries.iter().position(|e| e.id == id) {
            Some(index) => index,
            None => {
                let cached = self.cache.and_then(|cache| cache.take(id)).and_then(|c| {
                    // Taken out of the cache, the state is usually ours alone: no copy.
                    let state = Arc::downcast::<A>(c.state).ok()?;
                    let state = Arc::try_unwrap(state).unwrap_or_else(|shared| (*shared).clone());
                    Some(Entry::new::<A>(id, state, c.version, c.last_position))
                });
                if self.cache.is_some() {
                    let result = if cached.is_some() { "hit" } else { "miss" };
                    metrics::counter!("command_aggregate_cache_total", "result" => result)
                        .increment(1);
                }
                let entry = match cached {
                    Some(entry) => entry.unverified(),
                    None if self.assume_new => {
                        Entry::new::<A>(id, A::default(), Version::INITIAL, None).unverified()
                    }
                    None => load::<A>(self.store, id).await?,
                };
                self.entries.push(entry);
                self.entries.len() - 1
            }
        };
        let entry = &self.entries[index];
        let state = entry
            .state
            .downcast_ref::<A>()
            .ok_or_else(|| CommandError::NotFound(format!("{id} is not a {}", A::TYPE)))?;
        Ok((state, entry.version()))
    }

    /// Asks a loaded aggregate to handle a command; its events are applied and kept for the
    /// append. `what` names the aggregate in a not-found message.
    fn decide<A: Aggregate>(
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
        let state = entry
            .state
            .downcast_mut::<A>()
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
    fn last_position(&self) -> Position {
        self.entries
            .iter()
            .filter_map(|e| e.last_position)
            .max()
            .unwrap_or(Position::START)
    }

    /// The appends for every aggregate with decided events.
    fn appends(
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
                let events = entry
                    .pending
                    .iter()
                    .enumerate()
                    .map(|(i, event)| {
                        let version = Version::new(entry.loaded_version.get() + 1 + i as u64);
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
                            aggregate_type: entry.aggregate_type.to_owned(),
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
pub(crate) async fn load_state<A: Aggregate>(
    store: &PostgresEventStore,
    id: AggregateId,
) -> Result<(A, Version), CommandError> {
    let entry = load::<A>(store, id).await?;
    let version = entry.version();
    let state = entry
        .state
        .downcast::<A>()
        .map_err(|_| CommandError::Internal(format!("{id} did not load as a {}", A::TYPE)))?;
    Ok((*state, version))
}

/// Loads an aggregate: the latest snapshot of its current schema, if it decodes, plus every
/// event after it.
async fn load<A: Aggregate>(
    store: &PostgresEventStore,
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
    Ok(Entry::new::<A>(id, state, version, last_position))
}

fn decode_snapshot<A: Aggregate>(value: &serde_json::Value) -> Option<(A, Option<Position>)> {
    let state = serde_json::from_value(value.get("state")?.clone()).ok()?;
    let position = serde_json::from_value(value.get("position")?.clone()).ok();
    Some((state, position))
}

/// Checks a client-pinned version against the loaded one.
fn check_expected(
    id: AggregateId,
    expected: Option<Version>,
    actual: Version,
) -> Result<(), CommandError> {
    match expected {
        Some(expected) if expected != actual => Err(CommandError::Conflict {
            aggregate_id: id.as_uuid(),
            expected,
            actual,
        }),
        _ => Ok(()),
    }
}

/// Loads what `command` needs and decides it. Returns the command-specific detail.
async fn decide(
    command: &Command,
    session: &mut Session<'_>,
    expected: Option<Version>,
    refs: &References,
) -> Result<Detail, CommandError> {
    // What the stock and payment commands require of their order.
    let store = session.store;
    let order_fact = |order_id: domain_events::values::OrderId, placed: bool| async move {
        match refs.order(store, order_id).await? {
            OrderFact::Missing => Err(CommandError::NotFound(format!(
                "order {order_id} not found"
            ))),
            OrderFact::Draft if placed => Err(CommandError::Refused(format!(
                "order {order_id} has not been placed"
            ))),
            fact => Ok(fact),
        }
    };
    let order_stream = |id: domain_events::values::OrderId| AggregateId::from_uuid(id.as_uuid());
    let product_stream = |sku: &domain_events::values::Sku| {
        AggregateId::from_uuid(ProductId::for_sku(sku).as_uuid())
    };
    let payment_stream = |id: domain_events::values::OrderId| {
        AggregateId::from_uuid(PaymentId::for_order(id).as_uuid())
    };

    // New lines are priced from the catalogue first.
    let priced = match command {
        Command::CreateOrder { lines, .. } => refs.price_lines(store, lines).await?,
        Command::AddOrderLine { line, .. } => {
            refs.price_lines(store, std::slice::from_ref(line)).await?
        }
        _ => Vec::new(),
    };
    // Commands on a single order share their shape.
    let order_command =
        |command: &Command| -> Option<(domain_events::values::OrderId, OrderCommand)> {
            Some(match command {
                Command::CreateOrder {
                    order_id,
                    customer_id,
                    currency,
                    ..
                } => (
                    *order_id,
                    OrderCommand::Create {
                        order_id: *order_id,
                        customer_id: *customer_id,
                        currency: *currency,
                        lines: priced.clone(),
                    },
                ),
                Command::AddOrderLine { order_id, .. } => {
                    (*order_id, OrderCommand::AddLine(priced.first()?.clone()))
                }
                Command::RemoveOrderLine { order_id, sku } => {
                    (*order_id, OrderCommand::RemoveLine(sku.clone()))
                }
                Command::PlaceOrder {
                    order_id,
                    payment_method,
                } => (*order_id, OrderCommand::Place(payment_method.clone())),
                Command::ConfirmOrder { order_id } => (*order_id, OrderCommand::Confirm),
                Command::CancelOrder { order_id, reason } => {
                    (*order_id, OrderCommand::Cancel(reason.clone()))
                }
                _ => return None,
            })
        };
    if let Some((order_id, order_command)) = order_command(command) {
        let id = order_stream(order_id);
        let (order, version) = session.load::<Order>(id).await?;
        if matches!(command, Command::PlaceOrder { .. }) {
            // A draft from before lines were checked against the catalogue may name a
            // product that does not exist.
            let skus: Vec<_> = order.lines().iter().map(|l| l.sku.clone()).collect();
            for sku in &skus {
                refs.price(store, sku).await?;
            }
        }
        check_expected(id, expected, version)?;
        session.decide::<Order>(id, &format!("order {order_id}"), &order_command)?;
        let (order, _) = session.load::<Order>(id).await?;
        return Ok(match command {
            Command::PlaceOrder { .. } => match order.total() {
                Some(total) => Detail::Total {
                    amount_minor: total.amount_minor(),
                    currency: total.currency().to_string(),
                },
                None => Detail::None,
            },
            _ => Detail::None,
        });
    }

    match command {
        Command::ShipOrder { order_id } => {
            let id = order_stream(*order_id);
            let (order, _) = session.load::<Order>(id).await?;
            let lines = order.lines().to_vec();
            let shipped_now =
                session.decide::<Order>(id, &format!("order {order_id}"), &OrderCommand::Ship)? > 0;
            if shipped_now {
                for line in &lines {
                    let product = product_stream(&line.sku);
                    session.load::<Product>(product).await?;
                    session.decide::<Product>(
                        product,
                        &format!("product {}", line.sku),
                        &ProductCommand::Commit(*order_id),
                    )?;
                }
                let payment = payment_stream(*order_id);
                session.load::<Payment>(payment).await?;
                session.decide::<Payment>(
                    payment,
                    &format!("payment for order {order_id}"),
                    &PaymentCommand::Capture,
                )?;
            }
            Ok(Detail::None)
        }
        Command::CreateProduct {
            sku,
            name,
            price,
            initial_stock,
        } => {
            let id = product_stream(sku);
            session.load::<Product>(id).await?;
            session.decide::<Product>(
                id,
                &format!("product {sku}"),
                &ProductCommand::Create {
                    sku: sku.clone(),
                    name: name.clone(),
                    price: *price,
                    initial_stock: *initial_stock,
                },
            )?;
            Ok(Detail::None)
        }
        Command::RestockProduct { sku, quantity } => {
            let id = product_stream(sku);
            session.load::<Product>(id).await?;
            session.decide::<Product>(
                id,
                &format!("product {sku}"),
                &ProductCommand::Restock(*quantity),
            )?;
            Ok(Detail::None)
        }
        Command::ReserveStock { order_id, items } => {
            order_fact(*order_id, true).await?;
            for (sku, quantity) in items {
                let id = product_stream(sku);
                session.load::<Product>(id).await?;
                session.decide::<Product>(
                    id,
                    &format!("product {sku}"),
                    &ProductCommand::Reserve {
                        order_id: *order_id,
                        quantity: *quantity,
                    },
                )?;
            }
            Ok(Detail::None)
        }
        Command::ReleaseStock { order_id, skus } => {
            order_fact(*order_id, false).await?;
            for sku in skus {
                let id = product_stream(sku);
                session.load::<Product>(id).await?;
                session.decide::<Product>(
                    id,
                    &format!("product {sku}"),
                    &ProductCommand::Release(*order_id),
                )?;
            }
            Ok(Detail::None)
        }
        Command::AuthorizePayment {
            order_id,
            customer_id,
            amount,
            method,
        } => {
            if let OrderFact::Placed(total) = order_fact(*order_id, true).await?
                && total != *amount
            {
                return Err(CommandError::Refused(format!(
                    "the amount {amount} is not the total of order {order_id}, {total}"
                )));
            }
            let id = payment_stream(*order_id);
            session.load::<Payment>(id).await?;
            session.decide::<Payment>(
                id,
                &format!("payment for order {order_id}"),
                &PaymentCommand::Authorize {
                    order_id: *order_id,
                    customer_id: *customer_id,
                    amount: *amount,
                    method: method.clone(),
                },
            )?;
            let (payment, _) = session.load::<Payment>(id).await?;
            Ok(Detail::Payment {
                authorized: matches!(
                    payment.status(),
                    PaymentStatus::Authorized | PaymentStatus::Captured
                ),
                decline_reason: payment.decline_reason().map(|r| r.to_string()),
            })
        }
        Command::RefundPayment { order_id, reason } => {
            order_fact(*order_id, false).await?;
            let id = payment_stream(*order_id);
            session.load::<Payment>(id).await?;
            session.decide::<Payment>(
                id,
                &format!("payment for order {order_id}"),
                &PaymentCommand::Refund(reason.clone()),
            )?;
            Ok(Detail::None)
        }
        _ => Err(CommandError::Internal("order command fell through".into())),
    }
}
