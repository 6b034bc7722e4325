//! How far each follower of the log has got, computed once for both `GetProjectionStatus`
//! and the Prometheus gauges: lag in the events each follower reads, positions a person
//! can compare, and how far a transaction left open holds the log's horizon back.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use contracts::orders::v1 as pb;
use event_store::{EventStore, Position, PostgresEventStore};
use service_runtime::task::AbortOnDrop;
use sqlx::PgPool;

use crate::{db, projection::ProjectionState};

/// Why the status could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// Reading the log's head failed.
    #[error(transparent)]
    Store(#[from] event_store::Error),
    /// A status query failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn age_ms(t: Option<DateTime<Utc>>) -> i64 {
    t.map_or(0, |t| (Utc::now() - t).num_milliseconds().max(0))
}

/// Every follower's status, as `GetProjectionStatus` shows it.
pub async fn projections(
    pool: &PgPool,
    store: &PostgresEventStore,
) -> Result<Vec<pb::ProjectionStatus>, StatusError> {
    let head = store.head().await?.unwrap_or(Position::START);
    let (held_back_events, held_since) = db::held_back(pool).await?;
    let head_event = i64::try_from(head.global_position).unwrap_or(i64::MAX);
    let mut projections = Vec::new();
    for checkpoint in db::checkpoints(pool).await? {
        let (lag_events, oldest) =
            db::lag(pool, checkpoint.position, checkpoint.event_types.as_deref()).await?;
        let checkpoint_event = db::event_at_or_before(pool, checkpoint.position).await?;
        projections.push(pb::ProjectionStatus {
            name: checkpoint.projection,
            state: checkpoint.state,
            last_error: checkpoint.last_error.unwrap_or_default(),
            checkpoint: checkpoint.position.to_token(),
            head: head.to_token(),
            lag_events,
            lag_ms: age_ms(oldest),
            events_applied: checkpoint.events_applied,
            unknown_skipped: checkpoint.unknown_skipped,
            checkpoint_event,
            head_event,
            held_back_events,
            held_back_ms: age_ms(held_since),
            event_types: checkpoint.event_types.unwrap_or_default(),
        });
    }
    Ok(projections)
}

/// Keeps the followers' gauges current (every 2 s), with this instance's leadership and
/// open WatchOrder streams.
pub fn sample(
    pool: PgPool,
    store: PostgresEventStore,
    state: Arc<ProjectionState>,
) -> AbortOnDrop<()> {
    AbortOnDrop::spawn(async move {
        loop {
            metrics::gauge!("projection_leader", "projection" => crate::projection::READ_MODELS)
                .set(if state.is_leader() { 1.0 } else { 0.0 });
            metrics::gauge!("query_watch_streams").set(state.watchers() as f64);
            match projections(&pool, &store).await {
                Ok(projections) => {
                    for (i, p) in projections.into_iter().enumerate() {
                        if i == 0 {
                            metrics::gauge!("event_log_head_position").set(p.head_event as f64);
                            metrics::gauge!("event_log_held_back_events")
                                .set(p.held_back_events as f64);
                            metrics::gauge!("event_log_held_back_seconds")
                                .set(p.held_back_ms as f64 / 1000.0);
                        }
                        let name = p.name;
                        metrics::gauge!("projection_checkpoint_position", "projection" => name.clone())
                            .set(p.checkpoint_event as f64);
                        metrics::gauge!("projection_lag_events", "projection" => name.clone())
                            .set(p.lag_events as f64);
                        metrics::gauge!("projection_lag_seconds", "projection" => name)
                            .set(p.lag_ms as f64 / 1000.0);
                    }
                }
                Err(err) => tracing::debug!(error = %err, "cannot sample the projection status"),
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    })
}
