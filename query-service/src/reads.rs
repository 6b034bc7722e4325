//! Point reads of orders from the table, batched: `GetOrder` calls that miss the
//! in-memory views, and WatchOrder's checks of the row, share one
//! `WHERE order_id = ANY($1)` query with the reads asked while the previous one was in
//! flight.
//!
//! Like the event store's group commit, it waits for nothing: one query is in flight at a
//! time, a read asked while none is leaves at once, and the reads asked meanwhile (up to
//! [`MAX_BATCH`] a query; more wait for the next) leave together as soon as it returns. On
//! this machine most of a point read's cost is the round trip (a send to PostgreSQL and
//! the wake-ups on both sides), so sharing it is what lets the service keep pace with
//! `pgbench` reading the same table directly.
//!
//! A read only ever joins a query not yet sent, so it sees everything committed before it
//! was asked: a consistency token reached before asking stays reached.
//!
//! A database that stalls holds this one query, and one connection, until it answers or
//! PostgreSQL's `statement_timeout` (30 s) ends it; callers stop waiting at their own
//! deadline, and the reads they leave behind are not sent.

use std::{collections::HashMap, sync::Arc};

use service_runtime::edge::database_status;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;
use uuid::Uuid;

use crate::{db, model::OrderView};

/// The most reads one query carries.
pub const MAX_BATCH: usize = 64;

type Answer = Result<Option<Arc<OrderView>>, Status>;

/// One read waiting for its query.
struct Ask {
    id: Uuid,
    reply: oneshot::Sender<Answer>,
}

/// A handle on the batching task; the task ends when the last handle is dropped.
#[derive(Clone)]
pub struct OrderReads {
    asks: mpsc::UnboundedSender<Ask>,
}

impl OrderReads {
    /// Starts the task that reads from `pool`.
    pub fn start(pool: PgPool) -> Self {
        let (asks, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, rx));
        Self { asks }
    }

    /// The order `id` as the table holds it now, or `None` if it has no row.
    pub async fn get(&self, id: Uuid) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.asks.send(Ask { id, reply }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> Status {
    Status::unavailable("the service is stopping")
}

async fn run(pool: PgPool, mut asks: mpsc::UnboundedReceiver<Ask>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while asks.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // A read whose caller has gone (its deadline passed while the database was slow)
        // is not sent.
        batch.retain(|ask: &Ask| !ask.reply.is_closed());
        if !batch.is_empty() {
            answer(&pool, &mut batch).await;
        }
        batch.clear();
    }
}

async fn answer(pool: &PgPool, batch: &mut Vec<Ask>) {
    let ids: Vec<Uuid> = batch.iter().map(|ask| ask.id).collect();
    metrics::histogram!("query_order_reads_per_query").record(ids.len() as f64);
    match db::read_orders(pool, &ids).await {
        Ok(rows) => {
            let found: HashMap<Uuid, Answer> = rows
                .into_iter()
                .map(|(id, view)| (id, view.map(|v| Some(Arc::new(v))).map_err(database_status)))
                .collect();
            for ask in batch.drain(..) {
                // The same id asked twice gets the same answer.
                let answer = match found.get(&ask.id) {
                    Some(answer) => answer.clone(),
                    None => Ok(None),
                };
                let _ = ask.reply.send(answer);
            }
        }
        // The failure is logged once for the query; every read in it gets the same status.
        Err(err) => {
            let status = database_status(err);
            for ask in batch.drain(..) {
                let _ = ask.reply.send(Err(status.clone()));
            }
        }
    }
}
