//! The workers' saves and checks of the sagas they lease, batched: every worker of an
//! instance writes its saga back, or reads its row beside a send, through one statement
//! shared with the saves and checks asked while the previous one was in flight.
//!
//! Like the event store's group commit and query-service's order reads, it waits for
//! nothing: one statement is in flight at a time, a save asked while none is leaves at
//! once, and those asked meanwhile (up to [`MAX_BATCH`] a statement; more wait for the
//! next) leave together as soon as it returns. Most of a single-row save's cost on this
//! machine is its round trips (the statement, then the pool's check of the connection as
//! it is returned), so a saga that took a save and a check of its own now shares both.
//!
//! Each saga keeps the answer it would have had alone: the statement writes a saga only
//! while this instance holds its lease, and reports each saga's stored cancellation
//! request, or that its lease was lost. A worker waits for its save before it goes on, so
//! one saga's saves never share a statement. A statement that fails fails every save and
//! check in it, and each worker lets its saga go, as after a failed save of its own: the
//! lease runs out and the saga is taken up again from its last saved state.
//!
//! The rows are updated in order id order, as the follower flags cancellations, so two
//! statements that update the same sagas cannot deadlock: one waits for the other.
//!
//! A database that stalls holds this one statement, and every worker waiting for its
//! answer, until it answers or PostgreSQL's `statement_timeout` (30 s) ends it; each worker
//! then lets its saga go, and the lease decides who takes it up.

use std::{collections::HashMap, sync::Arc};

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::db::{self, SagaSave, Stored};

/// The most saves and checks one statement carries.
pub const MAX_BATCH: usize = 64;

/// A save's or a check's answer; the error is shared by every request of the statement.
pub type Answer = Result<Stored, Arc<sqlx::Error>>;

enum Ask {
    Save(SagaSave, oneshot::Sender<Answer>),
    Check(Uuid, oneshot::Sender<Answer>),
}

impl Ask {
    fn closed(&self) -> bool {
        match self {
            Ask::Save(_, reply) | Ask::Check(_, reply) => reply.is_closed(),
        }
    }
}

/// A handle on the batching task of one instance (one lease owner); the task ends when
/// the last handle is dropped.
#[derive(Clone)]
pub struct LeasedRows {
    asks: mpsc::UnboundedSender<Ask>,
}

impl LeasedRows {
    /// Starts the task that writes `owner`'s sagas to `pool`.
    pub fn start(pool: PgPool, owner: Uuid) -> Self {
        let (asks, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, owner, rx));
        Self { asks }
    }

    /// Writes the saga back if this instance still holds its lease.
    pub async fn save(&self, save: SagaSave) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.ask(Ask::Save(save, reply), answer).await
    }

    /// Reads the saga's stored cancellation request if this instance still holds its
    /// lease, without a write.
    pub async fn check(&self, order_id: Uuid) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.ask(Ask::Check(order_id, reply), answer).await
    }

    async fn ask(&self, ask: Ask, answer: oneshot::Receiver<Answer>) -> Answer {
        self.asks.send(ask).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> Arc<sqlx::Error> {
    Arc::new(sqlx::Error::PoolClosed)
}

async fn run(pool: PgPool, owner: Uuid, mut asks: mpsc::UnboundedReceiver<Ask>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while asks.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // A save or check whose worker has gone (the instance is stopping) is not sent.
        batch.retain(|ask: &Ask| !ask.closed());
        if !batch.is_empty() {
            answer(&pool, owner, &mut batch).await;
        }
        batch.clear();
    }
}

async fn answer(pool: &PgPool, owner: Uuid, batch: &mut Vec<Ask>) {
    metrics::histogram!("saga_rows_per_statement").record(batch.len() as f64);
    let mut saves = Vec::new();
    let mut checks = Vec::new();
    // Who waits for which saga's answer: (saved, order id).
    let mut replies = Vec::with_capacity(batch.len());
    for ask in batch.drain(..) {
        match ask {
            Ask::Save(save, reply) => {
                replies.push(((true, save.order_id()), reply));
                saves.push(save);
            }
            Ask::Check(order_id, reply) => {
                replies.push(((false, order_id), reply));
                checks.push(order_id);
            }
        }
    }
    saves.sort_unstable_by_key(SagaSave::order_id);
    match db::save_and_check(pool, owner, &saves, &checks).await {
        Ok(rows) => {
            let found: HashMap<(bool, Uuid), (bool, Option<String>)> = rows
                .into_iter()
                .map(|(saved, id, requested, reason)| ((saved, id), (requested, reason)))
                .collect();
            for (key, reply) in replies {
                let _ = reply.send(Ok(found.get(&key).cloned()));
            }
        }
        Err(err) => {
            let err = Arc::new(err);
            for (_, reply) in replies {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}
