//! Point reads of orders from the table, batched: the `GetOrder` calls that miss the
//! in-memory views while a read is in flight share the next `WHERE order_id = ANY($1)`
//! query.
//!
//! Like the event store's group commit, it waits for nothing: one query is in flight at a
//! time, and a read asked while none is leaves at once; the reads asked meanwhile gather
//! and leave together as soon as it returns. On this machine most of a point read's cost
//! is the round trip (a send to PostgreSQL and the wake-ups on both sides), so sharing it
//! is what lets the service keep pace with `pgbench` reading the same table directly.
//!
//! A read only ever joins a query not yet sent, so it sees everything committed before it
//! was asked: a consistency token reached before asking stays reached.

use std::{collections::HashMap, sync::Arc, time::Duration};

use service_runtime::edge::database_status;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;
use uuid::Uuid;

use crate::{db, model::OrderView};

/// The most reads one query carries.
const MAX_BATCH: usize = 64;

/// How long one query may take before its reads are answered UNAVAILABLE, so a database
/// that stalls holds up the reads behind it for no longer than this.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

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
    let query = async {
        let mut conn = pool.acquire().await?;
        db::load_orders(&mut conn, db::LIVE, &ids).await
    };
    let loaded = match tokio::time::timeout(QUERY_TIMEOUT, query).await {
        Ok(Ok(views)) => Ok(views),
        Ok(Err(err)) => Err(database_status(err)),
        Err(_) => {
            tracing::warn!(
                reads = ids.len(),
                "an order read took longer than {QUERY_TIMEOUT:?}"
            );
            Err(Status::unavailable(
                "the database did not answer in time; retry later",
            ))
        }
    };
    match loaded {
        Ok(views) => {
            let found: HashMap<Uuid, Arc<OrderView>> = views
                .into_iter()
                .map(|view| (view.order_id, Arc::new(view)))
                .collect();
            for ask in batch.drain(..) {
                let _ = ask.reply.send(Ok(found.get(&ask.id).cloned()));
            }
        }
        // The failure is logged once for the query; every read in it gets the same status.
        Err(status) => {
            for ask in batch.drain(..) {
                let _ = ask.reply.send(Err(status.clone()));
            }
        }
    }
}
