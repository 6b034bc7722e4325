//! The workers' saves and checks of the sagas they lease, batched: every worker of an
//! instance writes its saga back, or reads its row beside a send, through one statement
//! shared with the saves and checks asked while the previous one was in flight.
//!
//! It uses the shared [`Batcher`], as query-service's order reads do: one statement is in
//! flight at a time, a save asked while none is leaves at once, and those asked meanwhile
//! (up to [`MAX_BATCH`] a statement; more wait for the next) leave together as soon as it
//! returns. A save or check whose worker has gone (the instance is stopping) is not sent.
//! Most of a single-row save's cost on this machine is its round trips, so the saves and
//! checks share them.
//!
//! The statements go over a connection of their own ([`OwnConnection`]), not the pool's,
//! which plans each one for its parameters: one round trip a statement, where a statement
//! prepared afresh on a pooled connection took two, and the pool's check of the
//! connection as it went back a third (off the worker's path, not off the cores). A
//! connection that breaks fails the statement on it, and the next statement makes a new
//! one.
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

use service_runtime::{
    batch::{Ask, Batcher},
    database::{CUSTOM_PLANS, OwnConnection},
};
use sqlx::PgPool;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::db::{self, SagaSave, Stored};

/// The most saves and checks one statement carries.
pub const MAX_BATCH: usize = 64;

/// A save's or a check's answer; the error is shared by every request of the statement.
pub type Answer = Result<Stored, Arc<sqlx::Error>>;

enum Request {
    Save(SagaSave),
    Check(Uuid),
}

/// A handle on the batching task of one instance (one lease owner); the task ends when
/// the last handle is dropped.
#[derive(Clone)]
pub struct LeasedRows {
    batcher: Batcher<Request, Answer>,
}

impl LeasedRows {
    /// Starts the task that writes `owner`'s sagas, over a connection of its own with
    /// `pool`'s settings ([`own_connection`]).
    pub fn start(pool: &PgPool, owner: Uuid) -> Self {
        let conn = Arc::new(Mutex::new(own_connection(pool)));
        let batcher = Batcher::start(MAX_BATCH, move |batch| {
            let conn = conn.clone();
            // One statement at a time: the lock is never waited for.
            async move { answer(&mut *conn.lock().await, owner, batch).await }
        });
        Self { batcher }
    }

    /// Writes the saga back if this instance still holds its lease.
    pub async fn save(&self, save: SagaSave) -> Answer {
        self.ask(Request::Save(save)).await
    }

    /// Reads the saga's stored cancellation request if this instance still holds its
    /// lease, without a write.
    pub async fn check(&self, order_id: Uuid) -> Answer {
        self.ask(Request::Check(order_id)).await
    }

    async fn ask(&self, request: Request) -> Answer {
        self.batcher
            .ask(request)
            .await
            .map_err(|_| Arc::new(sqlx::Error::PoolClosed))?
    }
}

/// The connection the statements go over. Each is planned for its own sagas
/// ([`CUSTOM_PLANS`]): a plan cached while the table was small (a new database) would scan
/// every saga to write one.
pub fn own_connection(pool: &PgPool) -> OwnConnection {
    OwnConnection::new(pool, "saga-service leased rows", &[CUSTOM_PLANS])
}

async fn answer(conn: &mut OwnConnection, owner: Uuid, batch: Vec<Ask<Request, Answer>>) {
    metrics::histogram!("saga_rows_per_statement").record(batch.len() as f64);
    let mut saves = Vec::new();
    let mut checks = Vec::new();
    // Who waits for which saga's answer: (saved, order id).
    let mut replies = Vec::with_capacity(batch.len());
    for ask in batch {
        let (request, reply) = ask.into_parts();
        match request {
            Request::Save(save) => {
                replies.push(((true, save.order_id()), reply));
                saves.push(save);
            }
            Request::Check(order_id) => {
                replies.push(((false, order_id), reply));
                checks.push(order_id);
            }
        }
    }
    saves.sort_unstable_by_key(SagaSave::order_id);
    match conn
        .run(async |db| db::save_and_check(db, owner, &saves, &checks).await)
        .await
    {
        Ok(rows) => {
            let found: HashMap<(bool, Uuid), (bool, Option<String>)> = rows
                .into_iter()
                .map(|(saved, id, requested, reason)| ((saved, id), (requested, reason)))
                .collect();
            for (key, reply) in replies {
                reply.send(Ok(found.get(&key).cloned()));
            }
        }
        Err(err) => {
            let err = Arc::new(err);
            for (_, reply) in replies {
                reply.send(Err(err.clone()));
            }
        }
    }
}
