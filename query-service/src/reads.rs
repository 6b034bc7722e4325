//! Point reads of orders from the table, batched: `GetOrder` calls that miss the
//! in-memory views, and WatchOrder's checks of the row, share one
//! `WHERE order_id = ANY($1)` query with the reads asked while the previous one was in
//! flight.
//!
//! It uses the shared [`Batcher`]: one query is in flight at a time, a read asked while
//! none is leaves at once, and the reads asked meanwhile (up to [`MAX_BATCH`] a query;
//! more wait for the next) leave together as soon as it returns. On this machine most of
//! a point read's cost is the round trip (a send to PostgreSQL and the wake-ups on both
//! sides), so sharing it is what lets the service keep pace with `pgbench` reading the
//! same table directly.
//!
//! A read only ever joins a query not yet sent, so it sees everything committed before it
//! was asked: a consistency token reached before asking stays reached.
//!
//! The queries go over a connection of their own ([`OwnConnection`]), not the pool's: one
//! round trip each, without the pool's test of the connection as it goes back.
//!
//! A database that stalls holds this one query, and its connection, until it answers or
//! PostgreSQL's `statement_timeout` (30 s) ends it; callers stop waiting at their own
//! deadline, and the reads they leave behind are not sent.

use std::{collections::HashMap, sync::Arc};

use service_runtime::{
    batch::{Ask, Batcher},
    database::OwnConnection,
    edge::database_status,
};
use sqlx::PgPool;
use tokio::sync::Mutex;
use tonic::Status;
use uuid::Uuid;

use crate::{db, model::OrderView};

/// The most reads one query carries.
pub const MAX_BATCH: usize = 64;

type Answer = Result<Option<Arc<OrderView>>, Status>;

/// A handle on the batching task; the task ends when the last handle is dropped.
#[derive(Clone)]
pub struct OrderReads {
    batcher: Batcher<Uuid, Answer>,
}

impl OrderReads {
    /// Starts the task, which reads over a connection of its own with `pool`'s settings.
    pub fn start(pool: &PgPool) -> Self {
        let conn = Arc::new(Mutex::new(OwnConnection::new(
            pool,
            "query-service order reads",
            &[],
        )));
        let batcher = Batcher::start(MAX_BATCH, move |batch| {
            let conn = conn.clone();
            // One query at a time: the lock is never waited for.
            async move { answer(&mut *conn.lock().await, batch).await }
        });
        Self { batcher }
    }

    /// The order `id` as the table holds it now, or `None` if it has no row.
    pub async fn get(&self, id: Uuid) -> Answer {
        self.batcher
            .ask(id)
            .await
            .map_err(|_| Status::unavailable("the service is stopping"))?
    }
}

async fn answer(conn: &mut OwnConnection, batch: Vec<Ask<Uuid, Answer>>) {
    let ids: Vec<Uuid> = batch.iter().map(|ask| ask.request).collect();
    metrics::histogram!("query_order_reads_per_query").record(ids.len() as f64);
    match conn.run(async |db| db::read_orders(db, &ids).await).await {
        Ok(rows) => {
            let found: HashMap<Uuid, Answer> = rows
                .into_iter()
                .map(|(id, view)| (id, view.map(|v| Some(Arc::new(v))).map_err(database_status)))
                .collect();
            for ask in batch {
                // The same id asked twice gets the same answer.
                let answer = match found.get(&ask.request) {
                    Some(answer) => answer.clone(),
                    None => Ok(None),
                };
                ask.answer(answer);
            }
        }
        // The failure is logged once for the query; every read in it gets the same status.
        Err(err) => {
            let status = database_status(err);
            for ask in batch {
                ask.answer(Err(status.clone()));
            }
        }
    }
}
