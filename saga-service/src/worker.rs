//! Drives due sagas: claim one with a lease, send its step, record the result, repeat.
//!
//! The saga row is written after every step and before the next is sent, and each step's
//! command carries the same idempotency key on every attempt, so a worker that dies at any
//! point leaves a saga another worker resumes (once the lease runs out) without reserving or
//! charging twice.

use std::{sync::Arc, time::Duration};

use contracts::orders::v1::command_service_client::CommandServiceClient;
use service_runtime::Clock;
use sqlx::PgPool;
use tokio::sync::{Notify, watch};
use tonic::transport::Channel;
use uuid::Uuid;

use crate::{
    db,
    saga::{Action, Policy, Saga, SagaState},
    steps,
};

/// What a worker needs.
#[derive(Clone)]
pub struct Worker {
    /// The saga table's database.
    pub pool: PgPool,
    /// command-service.
    pub client: CommandServiceClient<Channel>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Deadlines and retries.
    pub policy: Policy,
    /// This instance's lease identity.
    pub owner: Uuid,
    /// How long a claim lasts without being renewed.
    pub lease: Duration,
    /// Fires when the follower started or flagged sagas.
    pub work: Arc<Notify>,
    /// How often an idle worker looks for due sagas anyway (timers, other instances).
    pub idle_poll: Duration,
}

impl Worker {
    /// Runs until `shutdown` flips.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let lease = chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::seconds(10));
        while !*shutdown.borrow() {
            // Taken before looking: a wake-up sent between the look and the wait is kept
            // (as a permit for `notify_one`, or for this future by `notify_waiters`).
            let work = self.work.clone();
            let notified = work.notified();
            match db::claim(&self.pool, self.owner, self.clock.now(), lease).await {
                Ok(Some(saga)) => self.drive(saga).await,
                Ok(None) => {
                    tokio::select! {
                        () = notified => {}
                        _ = tokio::time::sleep(self.idle_poll) => {}
                        _ = shutdown.wait_for(|s| *s) => return,
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot claim a saga");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = shutdown.wait_for(|s| *s) => return,
                    }
                }
            }
        }
    }

    /// Runs a claimed saga's steps for as long as they are due.
    async fn drive(&mut self, mut saga: Saga) {
        loop {
            let now = self.clock.now();
            let action = saga.next_action(now, &self.policy);
            if let Action::Send(step) = action {
                let timeout = match saga.step_deadline {
                    Some(deadline) if step.is_forward() => (deadline - now)
                        .to_std()
                        .unwrap_or_default()
                        .clamp(Duration::from_millis(50), steps::ATTEMPT_TIMEOUT),
                    _ => steps::ATTEMPT_TIMEOUT,
                };
                let result = steps::send(&mut self.client, &saga, step, timeout).await;
                tracing::debug!(order_id = %saga.order_id, step = step.as_str(), ?result, "saga step");
                let jitter = 0.5 + f64::from(Uuid::new_v4().as_bytes()[0]) / 255.0;
                saga.record(step, result, self.clock.now(), &self.policy, jitter);
            }
            let active = matches!(saga.state, SagaState::Running | SagaState::Compensating);
            let keep = matches!(action, Action::Send(_))
                && active
                && saga.next_attempt_at <= self.clock.now();
            match db::save_leased(&self.pool, &saga, self.owner, keep).await {
                Ok(Some((cancel_requested, cancel_reason))) => {
                    if saga.state == SagaState::Completed || saga.state == SagaState::Compensated {
                        tracing::info!(order_id = %saga.order_id, state = saga.state.as_str(), reason = ?saga.reason, "saga finished");
                    } else if saga.state == SagaState::NeedsAttention {
                        tracing::error!(order_id = %saga.order_id, last_error = ?saga.last_error, "saga needs attention");
                    }
                    saga.cancel_requested = cancel_requested;
                    saga.cancel_reason = cancel_reason;
                }
                Ok(None) => {
                    tracing::warn!(order_id = %saga.order_id, "lost the saga's lease; another worker has it");
                    return;
                }
                Err(err) => {
                    // The lease runs out and the saga is picked up again from its last saved step.
                    tracing::warn!(order_id = %saga.order_id, error = %err, "cannot save the saga");
                    return;
                }
            }
            if !keep {
                return;
            }
        }
    }
}
