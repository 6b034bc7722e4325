//! Applying batches of events to the read-model tables, with the checkpoint in the same
//! transaction, and the projector that follows the log.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use domain_events::{DecodeError, DomainEvent, StoredEvent};
use event_store::{Position, PostgresEventStore, RecordedEvent, Subscription};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;
use uuid::Uuid;

use crate::{
    db::{self, Tables},
    model::{EventInfo, OrderView, ReadModel, touched},
    views::OrderViews,
};

/// The live projection's name in `projection_checkpoints`.
pub const READ_MODELS: &str = "read_models";

/// How many events one projector transaction applies at most.
pub const BATCH_SIZE: usize = 1000;

/// Why a batch was not applied.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// A stored event does not decode: the projection must stop rather than guess.
    #[error("event {event_id} ({event_type}) at {position} cannot be projected: {reason}")]
    Poison {
        /// The event.
        event_id: Uuid,
        /// Its type.
        event_type: String,
        /// Its position.
        position: Position,
        /// What is wrong with it.
        reason: String,
    },
    /// The checkpoint moved under us: another instance or a rebuild applied events.
    #[error("the checkpoint moved; another writer owns this projection")]
    CheckpointMoved,
    /// The database failed; retry later.
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

/// What one batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The new checkpoint.
    pub position: Position,
    /// Events folded in.
    pub applied: i64,
    /// Events of unknown types skipped.
    pub skipped: i64,
    /// The order views the batch changed, as committed.
    pub orders: Vec<OrderView>,
}

/// A batch of the log decoded into domain events, ready to fold.
#[derive(Debug)]
pub struct DecodedBatch {
    events: Vec<(DomainEvent, EventInfo)>,
    skipped: i64,
    last: Option<Position>,
}

impl DecodedBatch {
    /// Events in the batch, decoded or skipped.
    pub fn len(&self) -> usize {
        self.events.len() + usize::try_from(self.skipped).unwrap_or(0)
    }

    /// True for a batch of no events.
    pub fn is_empty(&self) -> bool {
        self.last.is_none()
    }

    /// The position of its last event.
    pub fn last(&self) -> Option<Position> {
        self.last
    }
}

/// Decodes a batch of the log. Events of unknown types are skipped (and counted); an event
/// that does not decode stops the projection.
pub fn decode_batch(batch: &[RecordedEvent]) -> Result<DecodedBatch, BatchError> {
    let mut events = Vec::with_capacity(batch.len());
    let mut skipped = 0;
    for recorded in batch {
        match StoredEvent::decode(&recorded.event_type, recorded.payload.as_str()) {
            Ok(event) => events.push((
                event,
                EventInfo {
                    aggregate_id: recorded.aggregate_id.as_uuid(),
                    version: recorded.version.as_i64(),
                    occurred_at: recorded.timestamp,
                },
            )),
            Err(DecodeError::UnknownEventType(event_type)) => {
                tracing::warn!(%event_type, event_id = %recorded.event_id, "skipping an event of an unknown type");
                skipped += 1;
            }
            Err(err) => {
                return Err(BatchError::Poison {
                    event_id: recorded.event_id.as_uuid(),
                    event_type: recorded.event_type.clone(),
                    position: recorded.position,
                    reason: err.to_string(),
                });
            }
        }
    }
    Ok(DecodedBatch {
        events,
        skipped,
        last: batch.last().map(|e| e.position),
    })
}

/// The live projector's in-memory order views, and the generation of the tables whose
/// rows they equal (see [`db::Checkpoint::generation`]).
#[derive(Debug, Clone, Copy)]
pub struct Live<'a> {
    /// Views equal to the rows of the tables of `generation`.
    pub views: &'a OrderViews,
    /// The generation they belong to.
    pub generation: i64,
}

/// Applies `batch` (which follows `from` in the log) to `tables` and moves the checkpoint
/// of `projection` from `from` to the batch's last position, all in one statement.
///
/// With `live`, orders held in its views are not read again, and the batch is written only
/// if the stored generation is still its generation; with `None`, every order the batch
/// touches is read from `tables`.
pub async fn apply_batch(
    conn: &mut PgConnection,
    tables: Tables,
    projection: &str,
    from: Position,
    batch: &[RecordedEvent],
    live: Option<Live<'_>>,
) -> Result<Applied, BatchError> {
    let decoded = decode_batch(batch)?;
    apply_decoded(conn, tables, projection, from, &decoded, live).await
}

/// [`apply_batch`] for a batch decoded already (a rebuild decodes while it writes).
pub async fn apply_decoded(
    conn: &mut PgConnection,
    tables: Tables,
    projection: &str,
    from: Position,
    batch: &DecodedBatch,
    live: Option<Live<'_>>,
) -> Result<Applied, BatchError> {
    let Some(last) = batch.last else {
        return Ok(Applied {
            position: from,
            applied: 0,
            skipped: 0,
            orders: Vec::new(),
        });
    };
    let (events, skipped) = (&batch.events, batch.skipped);

    // Orders whose first event here is their creation have no row yet: only the others
    // are read.
    let mut order_ids = HashSet::new();
    let mut new_orders = HashSet::new();
    let mut skus = HashSet::new();
    let mut customer_ids = HashSet::new();
    for (event, _) in events {
        let (order, sku, customer) = touched(event);
        if let Some(order) = order
            && order_ids.insert(order)
            && matches!(event, DomainEvent::OrderCreated(_))
        {
            new_orders.insert(order);
        }
        skus.extend(sku);
        customer_ids.extend(customer);
    }
    let mut model = ReadModel::default();
    let mut order_ids: Vec<Uuid> = order_ids.difference(&new_orders).copied().collect();
    if let Some(live) = live {
        order_ids.retain(|id| match live.views.get(*id) {
            Some(view) => {
                customer_ids.insert(view.customer_id);
                model.orders.insert(*id, OrderView::clone(&view));
                false
            }
            None => true,
        });
    }
    let skus: Vec<String> = skus.into_iter().collect();

    // The rows the batch touches are read first, outside any transaction: this instance is
    // the only writer while it holds the lock, and the write below only happens if the
    // checkpoint is still where these reads assumed it.
    for order in db::load_orders(conn, tables, &order_ids).await? {
        customer_ids.insert(order.customer_id);
        model.orders.insert(order.order_id, order);
    }
    for product in db::load_products(conn, tables, &skus).await? {
        model.products.insert(product.sku.clone(), product);
    }
    let customer_ids: Vec<Uuid> = customer_ids.into_iter().collect();
    for customer in db::load_customers(conn, tables, &customer_ids).await? {
        model.customers.insert(customer.customer_id, customer);
    }
    let before = model.clone();
    for (event, info) in events {
        model.apply(event, *info);
    }
    let orders = changed(&before.orders, &model.orders);
    let products = changed(&before.products, &model.products);
    let customers = changed(&before.customers, &model.customers);
    let applied = i64::try_from(events.len()).unwrap_or(i64::MAX);
    let write = db::BatchWrite {
        projection,
        from,
        to: last,
        applied,
        skipped,
        orders: &orders,
        products: &products,
        customers: &customers,
        generation: live.map(|l| l.generation),
    };
    if !db::write_batch(conn, tables, &write).await? {
        return Err(BatchError::CheckpointMoved);
    }
    Ok(Applied {
        position: last,
        applied,
        skipped,
        orders: orders.into_iter().cloned().collect(),
    })
}

/// The rows of `after` that differ from `before`.
fn changed<'a, K: std::hash::Hash + Eq, V: PartialEq>(
    before: &HashMap<K, V>,
    after: &'a HashMap<K, V>,
) -> Vec<&'a V> {
    after
        .iter()
        .filter(|(k, v)| before.get(k) != Some(v))
        .map(|(_, v)| v)
        .collect()
}

/// What the rest of the service can see of the projection: how far it is, and whether it
/// is healthy. Shared between the projector task and the API.
#[derive(Debug)]
pub struct ProjectionState {
    checkpoint: watch::Sender<Position>,
    leader: AtomicBool,
    stopped: Mutex<Option<String>>,
    watchers: AtomicUsize,
    views: OrderViews,
}

impl Default for ProjectionState {
    fn default() -> Self {
        Self {
            checkpoint: watch::channel(Position::START).0,
            leader: AtomicBool::new(false),
            stopped: Mutex::new(None),
            watchers: AtomicUsize::new(0),
            views: OrderViews::default(),
        }
    }
}

impl ProjectionState {
    /// Follows the checkpoint as it moves.
    pub fn subscribe(&self) -> watch::Receiver<Position> {
        self.checkpoint.subscribe()
    }

    /// The checkpoint this instance knows of.
    pub fn checkpoint(&self) -> Position {
        *self.checkpoint.borrow()
    }

    fn advance_to(&self, position: Position) {
        self.checkpoint.send_if_modified(|current| {
            let moved = *current != position;
            *current = position;
            moved
        });
    }

    /// The order views this instance keeps in memory (see [`OrderViews`]); use them only
    /// while [`Self::is_leader`].
    pub fn views(&self) -> &OrderViews {
        &self.views
    }

    /// True while this instance holds the projection's leadership lock.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// Why the projection stopped, if it did.
    pub fn stopped(&self) -> Option<String> {
        self.stopped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn stop(&self, reason: String) {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
    }

    /// How many `WatchOrder` streams are open.
    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }

    /// Counts an open watcher until the guard drops; `None` when `max` are open already.
    pub fn watcher(self: &Arc<Self>, max: usize) -> Option<WatcherGuard> {
        self.watchers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(WatcherGuard(self.clone()))
    }
}

/// Decrements the watcher count on drop.
pub struct WatcherGuard(Arc<ProjectionState>);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Follows the log into the live read models until `shutdown` fires.
///
/// Only the instance holding the projection's advisory lock applies events; the lock lives
/// on the projector's own connection, so it is released the moment that connection or
/// process dies, and a standby takes over within a second. Standbys follow the stored
/// checkpoint so their read-your-writes waits still resolve.
pub async fn run_projector(
    pool: PgPool,
    store: PostgresEventStore,
    state: Arc<ProjectionState>,
    mut shutdown: watch::Receiver<bool>,
) {
    // The projector's commits do not wait for the WAL flush. Rows and checkpoint commit
    // together, so a crash can only lose a few whole batches, which are applied again from
    // the older checkpoint; the events themselves were flushed before anyone could read
    // them. Not waiting takes a flush off every batch and off the read-model lag.
    // Its statements (lookups by id, the batch write) plan the same whatever the
    // parameters, so they are planned once.
    let options = (*pool.connect_options())
        .clone()
        .application_name("query-service projector")
        .options([
            ("synchronous_commit", "off"),
            ("plan_cache_mode", "force_generic_plan"),
        ]);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let mut conn = match PgConnection::connect_with(&options).await {
            Ok(conn) => conn,
            Err(err) => {
                tracing::warn!(error = %err, "projector cannot connect; retrying");
                if sleep_or_shutdown(&mut shutdown, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
        };
        match db::try_lead(&mut conn, READ_MODELS).await {
            Ok(true) => {
                state.views.clear();
                state.leader.store(true, Ordering::Relaxed);
                tracing::info!("this instance now applies the read-model projection");
                let outcome = lead(&mut conn, &pool, &store, &state, &mut shutdown).await;
                state.leader.store(false, Ordering::Relaxed);
                state.views.clear();
                drop(conn);
                match outcome {
                    Lead::Shutdown => return,
                    Lead::Stopped => {
                        // Wait for shutdown; a restart retries the failing batch.
                        let _ = shutdown.wait_for(|s| *s).await;
                        return;
                    }
                    Lead::Retry => {
                        if sleep_or_shutdown(&mut shutdown, Duration::from_millis(500)).await {
                            return;
                        }
                    }
                }
            }
            Ok(false) => {
                drop(conn);
                // Standby: keep the known checkpoint fresh for read-your-writes.
                if let Ok(Some(position)) = db::stored_position(&pool, READ_MODELS).await {
                    state.advance_to(position);
                }
                if sleep_or_shutdown(&mut shutdown, CHECKPOINT_POLL).await {
                    return;
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "projector cannot take its lock; retrying");
                if sleep_or_shutdown(&mut shutdown, Duration::from_secs(1)).await {
                    return;
                }
            }
        }
    }
}

/// How often an instance that does not project reads the stored checkpoint.
const CHECKPOINT_POLL: Duration = Duration::from_millis(50);

/// How often a replica reads the replicated checkpoint: a standby cannot LISTEN, so this
/// poll is what a read-your-writes wait on a replica waits for (one point read each).
const REPLICA_POLL: Duration = Duration::from_millis(10);

/// A replica's stand-in for the projector (`--replica`, on a PostgreSQL hot standby): it
/// never projects or writes, and keeps the known checkpoint at the one the standby has
/// replayed, so read-your-writes waits and WatchOrder streams resolve there. The checkpoint
/// row is replicated with the rows it covers (they commit together on the primary), so a
/// view is never older than the checkpoint that says it is there.
pub async fn follow_replica(
    pool: PgPool,
    state: Arc<ProjectionState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failing = false;
    loop {
        match db::stored_position(&pool, READ_MODELS).await {
            Ok(Some(position)) => {
                failing = false;
                state.advance_to(position);
            }
            Ok(None) => {}
            Err(err) if !failing => {
                failing = true;
                tracing::warn!(error = %err, "cannot read the replicated checkpoint; retrying");
            }
            Err(_) => {}
        }
        if sleep_or_shutdown(&mut shutdown, REPLICA_POLL).await {
            return;
        }
    }
}

enum Lead {
    Shutdown,
    Stopped,
    Retry,
}

async fn lead(
    conn: &mut PgConnection,
    pool: &PgPool,
    store: &PostgresEventStore,
    state: &ProjectionState,
    shutdown: &mut watch::Receiver<bool>,
) -> Lead {
    let (mut checkpoint, generation) = match db::checkpoint(conn, READ_MODELS, "running").await {
        Ok(c) => {
            if c.state != "running" {
                // A new leader retries whatever stopped the last one.
                let _ = db::set_state(pool, READ_MODELS, "running", None).await;
            }
            (c.position, c.generation)
        }
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the projection checkpoint");
            return Lead::Retry;
        }
    };
    // Emptied once the generation is known: a read from the table begun before this is
    // not kept (see OrderViews), so the views hold rows of this generation's tables, or of
    // a later one, which the next batch's compare-and-set refuses.
    state.views.clear();
    state.advance_to(checkpoint);
    let mut subscription = match Subscription::start(store.clone(), checkpoint).await {
        Ok(s) => s
            .with_batch_size(BATCH_SIZE)
            .with_poll_interval(Duration::from_millis(200)),
        Err(err) => {
            tracing::warn!(error = %err, "cannot subscribe to the log");
            return Lead::Retry;
        }
    };
    // Once a second the leader checks that its lock connection lives and that the stored
    // checkpoint is the one it holds in memory. A rebuild's swap (which bumps the
    // generation, whatever position it hands over), or a database crash that lost its last
    // unflushed batches, changes the stored one: the leader then steps down, which empties
    // its in-memory views, and starts again from the stored checkpoint. A batch written in
    // between fails its compare-and-set the same way.
    let mut check = tokio::time::interval(Duration::from_secs(1));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let batch = tokio::select! {
            batch = subscription.next_batch() => Some(batch),
            _ = check.tick() => None,
            _ = shutdown.wait_for(|s| *s) => return Lead::Shutdown,
        };
        let Some(batch) = batch else {
            match db::stored_mark_on(conn, READ_MODELS).await {
                Ok(Some(stored)) if stored == (checkpoint, generation) => continue,
                Ok(_) => tracing::info!("the stored checkpoint moved; reloading it"),
                Err(err) => tracing::warn!(error = %err, "lost the projector's connection"),
            }
            return Lead::Retry;
        };
        let batch = match batch {
            Ok(batch) => batch,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the log");
                return Lead::Retry;
            }
        };
        let started = std::time::Instant::now();
        let live = Live {
            views: &state.views,
            generation,
        };
        match apply_batch(conn, db::LIVE, READ_MODELS, checkpoint, &batch, Some(live)).await {
            Ok(applied) => {
                metrics::histogram!("projection_batch_seconds", "projection" => READ_MODELS)
                    .record(started.elapsed().as_secs_f64());
                metrics::counter!("projection_events_applied_total", "projection" => READ_MODELS)
                    .increment(u64::try_from(applied.applied).unwrap_or(0));
                metrics::counter!("projection_events_skipped_total", "projection" => READ_MODELS)
                    .increment(u64::try_from(applied.skipped).unwrap_or(0));
                checkpoint = applied.position;
                // Views first: a read that sees the new checkpoint must find them.
                state.views.put_batch(applied.orders);
                state.advance_to(checkpoint);
            }
            Err(BatchError::CheckpointMoved) => {
                // A rebuild swapped tables in, or another instance wrote: start again from
                // the stored checkpoint.
                tracing::info!("the checkpoint moved; reloading it");
                return Lead::Retry;
            }
            Err(err @ BatchError::Poison { .. }) => {
                let reason = err.to_string();
                tracing::error!(%reason, "the read-model projection stopped");
                state.stop(reason.clone());
                if let Err(err) = db::set_state(pool, READ_MODELS, "stopped", Some(&reason)).await {
                    tracing::warn!(error = %err, "cannot record that the projection stopped");
                }
                return Lead::Stopped;
            }
            Err(BatchError::Database(err)) => {
                tracing::warn!(error = %err, "cannot apply a batch; reconnecting");
                return Lead::Retry;
            }
        }
    }
}

/// Sleeps, or returns true early if shutdown fires.
async fn sleep_or_shutdown(shutdown: &mut watch::Receiver<bool>, duration: Duration) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(duration) => false,
        _ = shutdown.wait_for(|s| *s) => true,
    };
    stopped || *shutdown.borrow()
}
