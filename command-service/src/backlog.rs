//! Backpressure from the fulfilment saga: PlaceOrder is refused while too many placed
//! orders wait for their saga.
//!
//! Every placed order costs the saga a reservation per line, an authorisation and a
//! confirmation, all sent back to this service. Accepting orders faster than the saga
//! finishes them only grows a queue: each order then waits longer to be confirmed, and the
//! queue is lost time for every customer in it. So the rate the system can sustain is
//! shown at the door: once the backlog reaches the limit, PlaceOrder answers
//! RESOURCE_EXHAUSTED (reason `SAGA_BACKLOG`, with a retry delay) and changes nothing; the
//! draft stays a draft, and the same command (same command id) succeeds once the saga has
//! caught up. Every other command is admitted: the saga's own commands must never wait for
//! the saga.
//!
//! The backlog is read from the `saga_backlog` view (migration 0011) every
//! [`REFRESH`], plus the orders this process placed since the last reading, so a burst
//! between two readings cannot overshoot by more than what other instances place meanwhile.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use service_runtime::task::AbortOnDrop;
use sqlx::PgPool;

use crate::error::CommandError;

/// How often the backlog is read.
pub const REFRESH: Duration = Duration::from_millis(100);

/// The admission gate for new orders.
#[derive(Debug)]
pub struct SagaBacklog {
    limit: u64,
    /// The backlog at the last reading.
    observed: AtomicU64,
    /// Orders this process placed since that reading.
    placed_since: AtomicU64,
}

impl SagaBacklog {
    /// A gate that admits new orders while fewer than `limit` wait (0: no limit).
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            observed: AtomicU64::new(0),
            placed_since: AtomicU64::new(0),
        }
    }

    /// The limit (0: none).
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The estimate the gate decides on.
    pub fn waiting(&self) -> u64 {
        self.observed.load(Ordering::Relaxed) + self.placed_since.load(Ordering::Relaxed)
    }

    /// Ok while a new order may be placed.
    pub fn admit(&self) -> Result<(), CommandError> {
        let waiting = self.waiting();
        if self.limit == 0 || waiting < self.limit {
            return Ok(());
        }
        metrics::counter!("command_backpressure_refusals_total").increment(1);
        Err(CommandError::SagaBacklog {
            waiting,
            limit: self.limit,
            retry_after: REFRESH * 2,
        })
    }

    /// Counts an order placed by this process.
    pub fn placed(&self) {
        self.placed_since.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes in a reading of the whole backlog.
    pub fn observe(&self, waiting: u64) {
        self.observed.store(waiting, Ordering::Relaxed);
        self.placed_since.store(0, Ordering::Relaxed);
        metrics::gauge!("command_saga_backlog").set(waiting as f64);
    }

    /// Reads the backlog every [`REFRESH`] until dropped. A failed reading keeps the last
    /// one (the database being down stops the commands anyway).
    pub fn watch(self: Arc<Self>, pool: PgPool) -> AbortOnDrop<()> {
        AbortOnDrop::spawn(async move {
            let mut failing = false;
            loop {
                match read(&pool).await {
                    Ok(waiting) => {
                        failing = false;
                        self.observe(waiting);
                    }
                    Err(err) if !failing => {
                        failing = true;
                        tracing::warn!(error = %err, "cannot read the saga backlog; keeping the last reading");
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(REFRESH).await;
            }
        })
    }
}

/// One reading of the `saga_backlog` view.
pub async fn read(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let (in_flight, not_started): (i64, i64) =
        sqlx::query_as("SELECT in_flight, not_started FROM saga_backlog")
            .fetch_one(pool)
            .await?;
    Ok(u64::try_from(in_flight.saturating_add(not_started)).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_below_the_limit_and_refuses_at_it() {
        let gate = SagaBacklog::new(3);
        gate.observe(1);
        assert!(gate.admit().is_ok());
        gate.placed();
        assert!(gate.admit().is_ok(), "2 of 3");
        gate.placed();
        match gate.admit() {
            Err(CommandError::SagaBacklog { waiting, limit, .. }) => {
                assert_eq!((waiting, limit), (3, 3));
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        // A reading replaces the estimate, including this process's own orders.
        gate.observe(0);
        assert_eq!(gate.waiting(), 0);
        assert!(gate.admit().is_ok());
    }

    #[test]
    fn no_limit_admits_everything() {
        let gate = SagaBacklog::new(0);
        gate.observe(1_000_000);
        assert!(gate.admit().is_ok());
    }
}
