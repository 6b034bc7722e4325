//! Follows the event log: starts a saga for every placed order and flags the saga of an
//! order that was cancelled, storing its checkpoint in the same statement (one
//! transaction, one round trip per batch). The sagas its own instance's idle workers can
//! take at once are written with that instance's lease and handed to them in memory
//! ([`Handoffs`]), so they are not claimed.
//!
//! One instance follows at a time (an advisory lock on the follower's own connection); the
//! checkpoint is moved with compare-and-set, so even two followers could not both apply a
//! batch.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use domain_events::{DomainEvent, EventType, StoredEvent};
use event_store::{PostgresEventStore, RecordedEvent, Subscription};
use service_runtime::{Clock, database};
use sqlx::{Connection, PgConnection, PgPool, postgres::PgConnectOptions};
use tokio::sync::watch;

use crate::{
    db,
    saga::{Policy, Saga, SagaLine},
    worker::{Handoffs, Work},
};

/// The follower's checkpoint name.
pub const FOLLOWER: &str = "saga_follower";

/// The event types the follower reads; the rest are skipped without decoding.
const INTERESTING: [&str; 2] = [
    EventType::OrderPlaced.as_str(),
    EventType::OrderCancelled.as_str(),
];

/// Runs until `shutdown` flips, waking `work` whenever sagas were started or flagged.
pub async fn run(
    pool: PgPool,
    store: PostgresEventStore,
    clock: Arc<dyn Clock>,
    policy: Policy,
    work: Arc<Work>,
    handoffs: Arc<Handoffs>,
    mut shutdown: watch::Receiver<bool>,
) {
    let options = connect_options(&pool);
    while !*shutdown.borrow() {
        let mut conn = match PgConnection::connect_with(&options).await {
            Ok(conn) => conn,
            Err(err) => {
                tracing::warn!(error = %err, "saga follower cannot connect; retrying");
                pause(&mut shutdown, Duration::from_secs(1)).await;
                continue;
            }
        };
        match db::try_lead(&mut conn, FOLLOWER).await {
            Ok(true) => {
                tracing::info!("this instance now follows the log for sagas");
                metrics::gauge!("saga_follower_leader").set(1.0);
                if let Err(err) = follow(
                    &mut conn,
                    &store,
                    clock.as_ref(),
                    &policy,
                    &work,
                    &handoffs,
                    &mut shutdown,
                )
                .await
                {
                    metrics::gauge!("saga_follower_leader").set(0.0);
                    tracing::warn!(error = %err, "saga follower stopped; restarting");
                    pause(&mut shutdown, Duration::from_millis(500)).await;
                }
            }
            Ok(false) => pause(&mut shutdown, Duration::from_millis(500)).await,
            Err(err) => {
                tracing::warn!(error = %err, "saga follower cannot take its lock");
                pause(&mut shutdown, Duration::from_secs(1)).await;
            }
        }
    }
}

/// The follower's own connection: `pool`'s settings, its name, and every statement planned
/// for its parameters on each call. The follower runs its batch statement
/// ([`db::apply_batch`]) on this one connection for the life of the process, from when
/// `sagas` may be empty; a generic plan cached then would scan every saga to flag one
/// cancelled order once the table has grown. Set here rather than by preparing the
/// statement afresh, the statement stays prepared: one round trip a batch, not two.
pub fn connect_options(pool: &PgPool) -> PgConnectOptions {
    database::own_options(pool, "saga-service follower", &[database::CUSTOM_PLANS])
}

async fn pause(shutdown: &mut watch::Receiver<bool>, duration: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(duration) => {}
        _ = shutdown.wait_for(|s| *s) => {}
    }
}

async fn follow(
    conn: &mut PgConnection,
    store: &PostgresEventStore,
    clock: &dyn Clock,
    policy: &Policy,
    work: &Work,
    handoffs: &Handoffs,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut checkpoint = db::checkpoint(conn, FOLLOWER, &INTERESTING).await?;
    let mut subscription = Subscription::start(store.clone(), checkpoint)
        .await?
        .with_batch_size(1000)
        // The store skips every other event: they are neither sent nor decoded here.
        .with_event_types(&INTERESTING)
        .with_poll_interval(Duration::from_millis(200));
    loop {
        let batch = tokio::select! {
            batch = subscription.next_batch() => batch?,
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
        };
        // The batch holds only the interesting events; the subscription's position is how
        // far the log was scanned, which may be past the last of them.
        let last = subscription.position();
        let mut changes = db::FollowerBatch::default();
        for recorded in &batch {
            take(&mut changes, recorded, clock, policy)?;
        }
        let applied = i64::try_from(batch.len()).unwrap_or(i64::MAX);
        // The sagas this instance's idle workers can take at once are written with its
        // lease and handed to them, so they are not claimed again.
        let leased_at = Instant::now();
        let now = clock.now();
        let count = handoffs.idle().min(changes.started.len());
        if count > 0 {
            changes.handoff = Some(db::Handoff {
                owner: handoffs.owner,
                until: handoffs.until(now),
                count,
            });
        }
        // One statement, so one transaction and one round trip: the sagas started, the
        // cancellations flagged and the checkpoint moved, or none of them.
        let leased =
            match db::apply_batch(conn, FOLLOWER, checkpoint, last, applied, &changes, now).await {
                Ok(Some(leased)) => leased,
                Ok(None) => anyhow::bail!("the saga follower's checkpoint moved under it"),
                Err(err) => {
                    // Written or not, no worker has them: free them rather than leave them
                    // leased until the lease runs out.
                    let handed: Vec<_> = changes.started[..count]
                        .iter()
                        .map(|s| s.order_id)
                        .collect();
                    if !handed.is_empty()
                        && db::release(store.pool(), &handed, handoffs.owner)
                            .await
                            .is_ok()
                    {
                        work.due(handed.len());
                    }
                    return Err(err.into());
                }
            };
        checkpoint = last;
        metrics::counter!("saga_started_total").increment(changes.started.len() as u64);
        metrics::counter!("saga_handed_off_total").increment(leased.len() as u64);
        let wake = changes.workers_to_wake();
        if !leased.is_empty() {
            // A replayed placement (its saga already written) is not among them.
            let handed = changes.started.into_iter().take(count);
            handoffs.push(handed.filter(|s| leased.contains(&s.order_id)), leased_at);
        }
        // A saga handed off earlier and not yet taken is driven from its copy: flag it too.
        for (order_id, reason) in &changes.cancelled {
            handoffs.cancel(*order_id, reason, now);
        }
        // One idle worker per saga that changed, rather than every worker racing to claim;
        // those not handed off are in the table, each owed a claim.
        work.handed(leased.len());
        work.due(wake.saturating_sub(leased.len()));
    }
}

/// Adds what one event asks of the sagas to the batch: a saga to start, or a
/// cancellation to flag.
fn take(
    changes: &mut db::FollowerBatch,
    recorded: &RecordedEvent,
    clock: &dyn Clock,
    policy: &Policy,
) -> anyhow::Result<()> {
    let event = match StoredEvent::decode(&recorded.event_type, recorded.payload.as_str()) {
        Ok(event) => event,
        Err(err) => anyhow::bail!("event {} cannot be read: {err}", recorded.event_id),
    };
    match event {
        DomainEvent::OrderPlaced(placed) => {
            let mut saga = Saga::start(
                placed.order_id.as_uuid(),
                placed.customer_id.as_uuid(),
                placed
                    .lines
                    .iter()
                    .map(|l| SagaLine {
                        sku: l.sku.to_string(),
                        quantity: l.quantity.get(),
                    })
                    .collect(),
                placed.total.amount_minor(),
                placed.total.currency().to_string(),
                placed.payment_method.as_str().to_owned(),
                clock.now(),
                policy,
            );
            saga.trace_parent = recorded
                .metadata
                .extra
                .get("traceparent")
                .and_then(|v| v.as_str())
                .map(str::to_owned);
            changes.start(saga);
        }
        DomainEvent::OrderCancelled(cancelled) => {
            let reason = format!("order cancelled: {}", cancelled.reason);
            changes.cancel(cancelled.order_id.as_uuid(), reason, clock.now());
        }
        _ => {}
    }
    Ok(())
}
