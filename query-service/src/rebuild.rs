//! Rebuilding the read models without downtime: replay the whole log into shadow tables
//! while queries keep using the live ones, then swap them in atomically.
//!
//! 1. Fresh shadow tables shaped like the live ones, and a `read_models_rebuild` checkpoint
//!    at the start of the log (its state, `rebuilding`, shows in `GetProjectionStatus`).
//! 2. Replay in batches until the shadow has caught up with the log, then build the
//!    shadow's secondary indexes (one pass each is cheaper than keeping them up to date).
//! 3. One transaction: lock the live tables (the live projector and readers wait), apply
//!    what arrived since, swap the tables, hand the shadow checkpoint to the live
//!    projection with the next generation. The live projector's next batch (or its check
//!    once a second) finds its checkpoint changed, even at the same position: it empties its
//!    in-memory views, reloads the checkpoint and goes on from where the rebuild ended.

use std::time::Instant;

use event_store::{EventStore, Position, PostgresEventStore};
use sqlx::{Connection, PgPool};

use crate::{
    db,
    projection::{BatchError, READ_MODELS, apply_batch, apply_decoded, decode_batch},
};

/// The rebuild's checkpoint name.
pub const REBUILD: &str = "read_models_rebuild";

/// Events per rebuild transaction.
const REBUILD_BATCH: usize = 5000;

/// How far a rebuild has come.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Events replayed so far.
    pub done: u64,
    /// Events in the log when the rebuild started (it may grow meanwhile).
    pub total: u64,
    /// Seconds since the rebuild started.
    pub elapsed_secs: f64,
}

impl Progress {
    /// Events per second so far.
    pub fn rate(&self) -> f64 {
        if self.elapsed_secs > 0.0 {
            self.done as f64 / self.elapsed_secs
        } else {
            0.0
        }
    }

    /// A line a person can follow.
    pub fn describe(&self) -> String {
        let percent = if self.total > 0 {
            (self.done as f64 * 100.0 / self.total as f64).min(100.0)
        } else {
            100.0
        };
        let eta = if self.rate() > 0.0 {
            (self.total.saturating_sub(self.done)) as f64 / self.rate()
        } else {
            0.0
        };
        format!(
            "rebuild: {}/{} events ({percent:.0}%), {:.0} events/s, ETA {eta:.1}s",
            self.done,
            self.total,
            self.rate()
        )
    }
}

/// Rebuilds the read models from the whole log and swaps them in. Returns the final
/// progress and the position the live projection continues from.
pub async fn rebuild(
    pool: &PgPool,
    store: &PostgresEventStore,
    mut report: impl FnMut(Progress),
) -> anyhow::Result<(Progress, Position)> {
    let started = Instant::now();
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await?;
    // Its own connection, whose commits do not wait for the WAL flush: a rebuild that
    // dies is started again from scratch, and the swap is one transaction either way.
    let options = (*pool.connect_options()).clone().options([
        ("synchronous_commit", "off"),
        ("plan_cache_mode", "force_generic_plan"),
    ]);
    let mut conn = sqlx::PgConnection::connect_with(&options).await?;
    db::create_shadow(&mut conn).await?;
    sqlx::query("DELETE FROM projection_checkpoints WHERE projection = $1")
        .bind(REBUILD)
        .execute(&mut conn)
        .await?;
    db::checkpoint(&mut conn, REBUILD, "rebuilding").await?;

    let mut position = Position::START;
    let mut done = 0u64;
    let progress = |done| Progress {
        done,
        total: u64::try_from(total).unwrap_or(0),
        elapsed_secs: started.elapsed().as_secs_f64(),
    };
    let mut last_report = Instant::now();
    // The next batches are read and decoded while this one is written: reading and
    // decoding (PostgreSQL, JSON) and folding and writing then keep both cores busy.
    let (batches, mut ahead) = tokio::sync::mpsc::channel(2);
    let _reader = {
        let store = store.clone();
        service_runtime::task::AbortOnDrop::spawn(async move {
            let mut from = position;
            loop {
                let read = store
                    .read_all(from, REBUILD_BATCH)
                    .await
                    .map_err(anyhow::Error::from)
                    .and_then(|batch| Ok(decode_batch(&batch)?));
                let last = read.as_ref().ok().and_then(|b| b.last());
                let stop = last.is_none();
                if batches.send(read).await.is_err() || stop {
                    return;
                }
                from = last.unwrap_or(from);
            }
        })
    };
    while let Some(batch) = ahead.recv().await {
        let batch = batch?;
        if batch.is_empty() {
            break;
        }
        let applied =
            match apply_decoded(&mut conn, db::SHADOW, REBUILD, position, &batch, None).await {
                Ok(applied) => applied.position,
                Err(BatchError::CheckpointMoved) => anyhow::bail!("another rebuild is running"),
                Err(err) => return Err(err.into()),
            };
        position = applied;
        done += batch.len() as u64;
        if last_report.elapsed().as_millis() >= 500 {
            report(progress(done));
            last_report = Instant::now();
        }
    }

    // The other indexes, in one pass each, before the live tables are locked.
    db::index_shadow(&mut conn).await?;

    // The swap: everything that arrived since the last batch, then the tables, atomically.
    let mut tx = conn.begin().await?;
    db::lock_live(&mut tx).await?;
    loop {
        let batch = store.read_all(position, REBUILD_BATCH).await?;
        if batch.is_empty() {
            break;
        }
        position = apply(&mut tx, position, &batch).await?;
        done += batch.len() as u64;
    }
    db::checkpoint(&mut tx, READ_MODELS, "running").await?;
    db::swap_shadow(&mut tx).await?;
    db::hand_over_checkpoint(&mut tx, REBUILD, READ_MODELS).await?;
    tx.commit().await?;
    let finished = progress(done);
    report(finished);
    Ok((finished, position))
}

async fn apply(
    conn: &mut sqlx::PgConnection,
    from: Position,
    batch: &[event_store::RecordedEvent],
) -> anyhow::Result<Position> {
    match apply_batch(conn, db::SHADOW, REBUILD, from, batch, None).await {
        Ok(applied) => Ok(applied.position),
        Err(BatchError::CheckpointMoved) => anyhow::bail!("another rebuild is running"),
        Err(err) => Err(err.into()),
    }
}
