//! Drives due sagas: claim one with a lease (or take one the follower started with this
//! instance's lease, [`Handoffs`]), send its step (or void it), record the answer, repeat.
//! A worker claims only with a reason ([`Work`]): a saga made due in the table that no claim
//! has looked for yet, or the idle poll.
//! ReserveStock and AuthorizePayment go at once ([`Saga::sent_with`]); the payment's answer
//! is recorded once the reservation's says the saga went on to it.
//!
//! The saga row is written after every answer that changes more than which step is next
//! (a failure, a retry's wait, settling, compensation starting, the end), before the next
//! command is sent. A step that succeeded and leads straight to the next one is not
//! written (in the first half of the lease): the row is only read, to check the lease and
//! take in a cancellation, and the next step is sent; the next save covers both. The read
//! goes before a step whose effect would need undoing (stock, money), so nothing is
//! reserved or authorised once a cancellation is known; beside a step with nothing to undo
//! (confirming, compensating), taken in once its answer is recorded, as if the
//! cancellation had come just after the send. A change
//! that needs no answer (a cancellation turning into compensation) is written before
//! anything is sent. Each step's command carries the same idempotency key on every attempt
//! and command-service records every answer (voids included), so a worker that dies at any
//! point, or a save that a database crash loses, leaves a saga that any worker resumes
//! (once the lease runs out) to the same outcome, without reserving or charging twice.

use std::{
    collections::{HashSet, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use service_runtime::Clock;
use sqlx::PgPool;
use tokio::sync::{Notify, futures::Notified, watch};
use uuid::Uuid;

use tracing::Instrument;

use crate::{
    db::{self, SagaSave},
    leased::{self, LeasedRows},
    saga::{Action, Policy, Saga, SagaState, Step, StepResult, VoidResult},
    steps,
};

/// Test-only: a worker stops right after a step's command (or void) comes back, before
/// the saga is saved, as if the process had crashed there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failpoint {
    /// The step whose answer triggers it.
    pub after: Step,
    /// What happens then.
    pub crash: Crash,
}

/// How a [`Failpoint`] stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// The process aborts (real-process tests: `SAGA_FAILPOINT=abort-after:reserve_stock`).
    Abort,
    /// The worker never goes on (in-process tests; the test then stops the service).
    Freeze,
}

impl std::str::FromStr for Failpoint {
    type Err = String;

    /// `abort-after:STEP` or `freeze-after:STEP`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = || format!("{s:?}: expected abort-after:STEP or freeze-after:STEP");
        let (how, step) = s.split_once(':').ok_or_else(usage)?;
        let crash = match how {
            "abort-after" => Crash::Abort,
            "freeze-after" => Crash::Freeze,
            _ => return Err(usage()),
        };
        let after = Step::parse(step).ok_or_else(usage)?;
        Ok(Failpoint { after, crash })
    }
}

/// This instance's lease (who holds it, for how long), the sagas its follower started
/// with it ([`db::Handoff`]) waiting for a worker, how many workers are idle, and which
/// sagas its workers drive now. The follower hands off at most as many sagas as there are
/// idle workers, so a handed-off saga is normally taken by the next worker free, without
/// the claim (a round trip, and the statement's search for a due saga) that any other saga
/// waits for.
///
/// The saga rows fence writes by instance (`lease_owner`), so two workers of one instance
/// would both pass the fence. A worker therefore drives a saga only while no other worker
/// of its instance does ([`Handoffs::begin`]), and claims skip the sagas driven here: a
/// worker whose step stalls past the lease keeps the saga to itself within its instance,
/// and another instance's claim fences it out of the row.
#[derive(Debug)]
pub struct Handoffs {
    /// The instance the sagas are leased to.
    pub owner: Uuid,
    /// How long the lease lasts.
    pub lease: Duration,
    queue: Mutex<VecDeque<(Saga, Instant)>>,
    idle: AtomicUsize,
    driven: Mutex<HashSet<Uuid>>,
}

/// A saga one worker of this instance drives; dropping it lets the saga go.
#[derive(Debug)]
pub struct Driving {
    handoffs: Arc<Handoffs>,
    order_id: Uuid,
}

impl Drop for Driving {
    fn drop(&mut self) {
        relock(&self.handoffs.driven).remove(&self.order_id);
    }
}

impl Handoffs {
    /// Nothing handed off yet, no worker idle yet.
    pub fn new(owner: Uuid, lease: Duration) -> Handoffs {
        Handoffs {
            owner,
            lease,
            queue: Mutex::new(VecDeque::new()),
            idle: AtomicUsize::new(0),
            driven: Mutex::new(HashSet::new()),
        }
    }

    /// Marks the saga of `order_id` as driven by the caller until the guard drops, or
    /// `None` if another worker of this instance drives it now: that worker keeps it.
    pub fn begin(self: &Arc<Self>, order_id: Uuid) -> Option<Driving> {
        relock(&self.driven).insert(order_id).then(|| Driving {
            handoffs: self.clone(),
            order_id,
        })
    }

    /// The sagas this instance's workers drive now, for claims to skip.
    pub fn driven(&self) -> Vec<Uuid> {
        relock(&self.driven).iter().copied().collect()
    }

    /// Workers waiting for work now.
    pub fn idle(&self) -> usize {
        self.idle.load(Ordering::Relaxed)
    }

    /// When a lease taken at `now` runs out.
    pub fn until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + lease_span(self.lease)
    }

    /// Queues sagas written with this instance's lease; `leased_at` is read before the
    /// clock reading the lease runs from.
    pub fn push(&self, sagas: impl IntoIterator<Item = Saga>, leased_at: Instant) {
        self.lock()
            .extend(sagas.into_iter().map(|saga| (saga, leased_at)));
    }

    /// Flags a queued saga whose order the follower found cancelled, as the batch flagged
    /// its row: a saga handed off is driven from this copy, without reading the row first.
    pub fn cancel(&self, order_id: Uuid, reason: &str, now: DateTime<Utc>) {
        if let Some((saga, _)) = self.lock().iter_mut().find(|(s, _)| s.order_id == order_id) {
            db::flag_cancelled(saga, reason, now);
        }
    }

    /// Empties the queue (at shutdown): the sagas no worker took, to release.
    pub fn drain(&self) -> Vec<Uuid> {
        self.lock()
            .drain(..)
            .map(|(saga, _)| saga.order_id)
            .collect()
    }

    /// The next saga handed off, and whether more are waiting. A saga that waited for a
    /// worker through half its lease is dropped instead: its lease runs out before long,
    /// and it is claimed (and its row read) like any other, never driven from two copies.
    fn take(&self) -> Option<(Saga, Instant, bool)> {
        let mut queue = self.lock();
        while let Some((saga, leased_at)) = queue.pop_front() {
            if leased_at.elapsed() < self.lease / 2 {
                return Some((saga, leased_at, !queue.is_empty()));
            }
            tracing::warn!(order_id = %saga.order_id, "a saga handed off waited through half its lease; it is left to be claimed");
        }
        None
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Saga, Instant)>> {
        relock(&self.queue)
    }
}

/// Locks `m`: a panic while one of these locks is held cannot leave what it guards
/// half-changed (each change is one call on a collection).
fn relock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wake-ups for this instance's workers, and how many claims are owed: one for each saga
/// made due in the saga table (started and not handed off, flagged cancelled, due again
/// after a retry's wait, changed by an operator) that no claim has looked for yet. A worker
/// claims when it takes one of those, or when the idle poll asks, not after every saga it
/// drives: under load four claims in five made that way found nothing. A saga made due
/// with no claim owed (another instance let it go, a hand-off that waited too long) is
/// found by the poll.
#[derive(Debug, Default)]
pub struct Work {
    notify: Notify,
    owed: AtomicUsize,
}

impl Work {
    /// Nothing owed, nobody woken.
    pub fn new() -> Work {
        Work::default()
    }

    /// `n` sagas were made due in the table: as many claims are owed, and as many idle
    /// workers are woken (a worker busy now takes what is owed when it is done).
    pub fn due(&self, n: usize) {
        self.owed.fetch_add(n, Ordering::AcqRel);
        self.wake(n);
    }

    /// `n` sagas were handed off ([`Handoffs`]): as many idle workers are woken, and no
    /// claim is owed.
    pub fn handed(&self, n: usize) {
        self.wake(n);
    }

    fn wake(&self, n: usize) {
        for _ in 0..n {
            self.notify.notify_one();
        }
    }

    /// Takes one owed claim, if any is.
    fn take_owed(&self) -> bool {
        self.owed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Gives back a claim that could not be made.
    fn give_back(&self) {
        self.owed.fetch_add(1, Ordering::AcqRel);
    }

    /// Claims owed now.
    pub fn owed(&self) -> usize {
        self.owed.load(Ordering::Acquire)
    }

    fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }
}

/// A lease's length as the clock counts it (10 s if it does not fit).
fn lease_span(lease: Duration) -> chrono::Duration {
    chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(10))
}

/// What a worker needs.
#[derive(Clone)]
pub struct Worker {
    /// The saga table's database (claims).
    pub pool: PgPool,
    /// Saves and checks of the sagas this instance leases, batched.
    pub rows: LeasedRows,
    /// command-service.
    pub client: steps::CommandClient,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Deadlines and retries.
    pub policy: Policy,
    /// Wakes a worker when the follower started or flagged sagas, and counts the claims
    /// owed.
    pub work: Arc<Work>,
    /// Fires for one idle worker at a time, every second ([`tick_polls`]): the instance
    /// looks for due sagas anyway, sagas another instance let go or whose wake-up was lost
    /// with a crash (this instance's retries wake a worker when they are due). A worker that
    /// finds a saga this way passes the poll on, so a backlog found by a poll is taken up
    /// by every idle worker, while an idle instance makes one claim a second, not one per
    /// worker.
    pub poll: Arc<Notify>,
    /// This instance's lease, and the sagas the follower handed to it.
    pub handoffs: Arc<Handoffs>,
    /// Test-only crash point.
    pub failpoint: Option<Failpoint>,
}

/// Wakes one idle worker every `every` until `shutdown` flips (see [`Worker::poll`]).
pub async fn tick_polls(poll: Arc<Notify>, every: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => poll.notify_one(),
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

impl Worker {
    /// Runs until `shutdown` flips.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let lease = lease_span(self.handoffs.lease);
        // The first look is made as if a poll asked: a backlog left from before a restart
        // is taken up at once, by every idle worker.
        let mut woken_by_poll = true;
        while !*shutdown.borrow() {
            if let Some((saga, leased_at, more)) = self.handoffs.take() {
                if more {
                    // Pass the rest on, should their wake-ups have gone to fewer workers.
                    self.work.handed(1);
                }
                if std::mem::take(&mut woken_by_poll) {
                    // The poll asked for a look at the table: another idle worker takes it.
                    self.poll.notify_one();
                }
                self.drive_alone(saga, leased_at).await;
                continue;
            }
            // Taken before looking: a wake-up sent between the look and the wait is kept
            // (as a permit for `notify_one`).
            let work = self.work.clone();
            let notified = work.notified();
            let poll = self.poll.clone();
            let polled = poll.notified();
            let by_poll = std::mem::take(&mut woken_by_poll);
            if by_poll || self.work.take_owed() {
                // The lease runs from the clock reading the claim is made with, at the latest.
                let claiming = Instant::now();
                let claimed = db::claim(
                    &self.pool,
                    self.handoffs.owner,
                    &self.handoffs.driven(),
                    self.clock.now(),
                    lease,
                )
                .await;
                let result = match &claimed {
                    Ok(Some(_)) => "found",
                    Ok(None) => "none",
                    Err(_) => "error",
                };
                metrics::counter!("saga_claims_total", "result" => result).increment(1);
                match claimed {
                    Ok(Some(saga)) => {
                        if by_poll {
                            self.poll.notify_one();
                        }
                        self.drive_alone(saga, claiming).await;
                        continue;
                    }
                    Ok(None) => {}
                    Err(err) => {
                        if !by_poll {
                            self.work.give_back();
                        }
                        tracing::warn!(error = %err, "cannot claim a saga");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                            _ = shutdown.wait_for(|s| *s) => return,
                        }
                        continue;
                    }
                }
            }
            self.handoffs.idle.fetch_add(1, Ordering::Relaxed);
            let woken = tokio::select! {
                () = notified => Some(false),
                () = polled => Some(true),
                _ = shutdown.wait_for(|s| *s) => None,
            };
            self.handoffs.idle.fetch_sub(1, Ordering::Relaxed);
            let Some(by_poll) = woken else { return };
            woken_by_poll = by_poll;
        }
    }

    /// [`Self::drive`], unless another worker of this instance drives the saga now. Claims
    /// skip the sagas driven here, as the claim found them when it was sent; a claim whose
    /// statement took longer than the lease (a database that stalled) can still return
    /// one that another worker claimed and started meanwhile.
    async fn drive_alone(&mut self, saga: Saga, leased_at: Instant) {
        match self.handoffs.begin(saga.order_id) {
            Some(_driving) => self.drive(saga, leased_at).await,
            None => {
                tracing::warn!(order_id = %saga.order_id, "claimed a saga another worker of this instance drives; it keeps it");
            }
        }
    }

    /// Runs a claimed (or handed-off) saga's steps for as long as they are due. Whatever
    /// the saga's saved deadline says, a claimed step is sent (or voided) before it is
    /// judged: a saga taken over after a crash first asks again. `leased_at` is read before
    /// the clock reading the lease runs from.
    async fn drive(&mut self, mut saga: Saga, leased_at: Instant) {
        // Steps are chained without a save only in the first half of the lease.
        let chain_until = leased_at + self.handoffs.lease / 2;
        // Set when the saga went on unsaved: its row is read beside the next send.
        let mut unchecked = false;
        loop {
            // Read before anything but a send with nothing to undo, which reads beside.
            if unchecked
                && !matches!(saga.next_action(self.clock.now()), Action::Send(step) if step.undo().is_none())
            {
                unchecked = false;
                if !self.check(&mut saga).await {
                    return;
                }
            }
            if saga.observe(self.clock.now(), &self.policy) && !self.save(&mut saga, true).await {
                return;
            }
            let now = self.clock.now();
            let action = saga.next_action(now);
            let before = (saga.state, saga.settling);
            let mut mark = saga.mark();
            match action {
                Action::Send(step) => {
                    // Authorising is sent beside reserving, unless the policy says not to.
                    let beside = saga
                        .sent_with(now, &self.policy)
                        .map(|next| (next, self.attempt_timeout(&saga, next, now)));
                    let timeout = self.attempt_timeout(&saga, step, now);
                    let mut other = beside.map(|_| self.client.clone());
                    let sends = async {
                        let main = timed_send(&mut self.client, &saga, step, timeout);
                        match (beside, other.as_mut()) {
                            (Some((next, timeout)), Some(other)) => {
                                let side = timed_send(other, &saga, next, timeout);
                                let (main, side) = tokio::join!(main, side);
                                (main, Some((next, side)))
                            }
                            _ => (main.await, None),
                        }
                    };
                    // The row read beside the send costs the step no round trip of its own.
                    let ((result, side), stored) = if std::mem::take(&mut unchecked) {
                        let check = self.rows.check(saga.order_id);
                        let (sent, stored) = tokio::join!(sends, check);
                        (sent, Some(stored))
                    } else {
                        (sends.await, None)
                    };
                    let transient = self.answered(&mut saga, step, result).await;
                    if before.1.is_none() && saga.settling.is_some() && transient {
                        metrics::counter!("saga_deadline_expiries_total", "step" => step.as_str())
                            .increment(1);
                    }
                    // The step sent beside counts only if the saga went straight on to it:
                    // recorded as if sent just after. Otherwise it stays in doubt.
                    if let Some((next, answer)) = side {
                        if saga.moved_on_from(mark, self.clock.now())
                            && saga.next_action(self.clock.now()) == Action::Send(next)
                        {
                            // From here the saga is judged by the step sent beside: whether
                            // it, too, only moved the saga on.
                            mark = saga.mark();
                            self.answered(&mut saga, next, answer).await;
                        } else {
                            // In doubt; compensation settles it. Timed, but not a retry.
                            observe_call(&saga, next, &answer.0, answer.1, false);
                        }
                    }
                    // A lost lease lets the saga go without saving the answer (whoever holds
                    // it now gets the same recorded answer); a cancellation is acted on next.
                    if let Some(stored) = stored
                        && !take_in(&mut saga, stored, "check")
                    {
                        return;
                    }
                }
                Action::Void(step) => {
                    let timeout = self.policy.attempt_timeout;
                    let result = steps::void(&mut self.client, &saga, step, timeout)
                        .instrument(step_span(&saga, "void"))
                        .await;
                    tracing::debug!(order_id = %saga.order_id, step = step.as_str(), ?result, "saga void");
                    let outcome = match &result {
                        VoidResult::Voided => "voided",
                        VoidResult::AlreadyRan => "already_ran",
                        VoidResult::Transient(_) => "transient",
                    };
                    metrics::counter!("saga_voids_total", "step" => step.as_str(), "result" => outcome)
                        .increment(1);
                    self.failpoint(step).await;
                    saga.record_void(step, result, self.clock.now(), &self.policy, jitter());
                }
                Action::WaitUntil(_) | Action::Stop => {}
            }
            if saga.state != before.0 {
                match saga.state {
                    SagaState::Completed | SagaState::Compensated => {
                        metrics::counter!("saga_finished_total", "state" => saga.state.as_str())
                            .increment(1);
                    }
                    SagaState::NeedsAttention => {
                        metrics::counter!("saga_parked_total").increment(1)
                    }
                    SagaState::Compensating => {
                        metrics::counter!("saga_compensations_started_total").increment(1);
                    }
                    SagaState::Running => {}
                }
            }
            if saga.moved_on_from(mark, self.clock.now()) && std::time::Instant::now() < chain_until
            {
                // Not saved, but still checked, before or beside the next send: that the
                // lease is held, and whether the follower flagged a cancellation meanwhile.
                unchecked = true;
                continue;
            }
            let acted = matches!(action, Action::Send(_) | Action::Void(_));
            let active = matches!(saga.state, SagaState::Running | SagaState::Compensating);
            let keep = acted && active && saga.next_attempt_at <= self.clock.now();
            if !self.save(&mut saga, keep).await {
                return;
            }
            match saga.state {
                SagaState::Completed | SagaState::Compensated if acted => {
                    tracing::info!(order_id = %saga.order_id, state = saga.state.as_str(), reason = ?saga.reason, "saga finished");
                }
                SagaState::NeedsAttention if acted => {
                    tracing::error!(order_id = %saga.order_id, last_error = ?saga.last_error, "saga needs attention");
                }
                _ => {}
            }
            if !keep {
                if active && saga.next_attempt_at > self.clock.now() {
                    self.wake_at(saga.next_attempt_at);
                }
                return;
            }
        }
    }

    /// Wakes a worker when a saga let go to wait (a retry's backoff) is due again, rather
    /// than leaving it to the idle poll.
    fn wake_at(&self, due: chrono::DateTime<chrono::Utc>) {
        let wait = (due - self.clock.now()).to_std().unwrap_or_default();
        let work = self.work.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            work.due(1);
        });
    }

    /// Records a step's answer in the saga (after [`observe_call`] and the failpoint).
    /// True when it was transient.
    async fn answered(
        &self,
        saga: &mut Saga,
        step: Step,
        (result, took): (StepResult, Duration),
    ) -> bool {
        let transient = observe_call(saga, step, &result, took, true);
        self.failpoint(step).await;
        saga.record(step, result, self.clock.now(), &self.policy, jitter());
        transient
    }

    /// How long an attempt may take: until the step's deadline (so it is judged on
    /// time), at least 50 ms, at most the policy's attempt timeout.
    fn attempt_timeout(
        &self,
        saga: &Saga,
        step: Step,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Duration {
        match saga.step_deadline {
            Some(deadline) if step.is_forward() && saga.settling.is_none() && deadline > now => {
                (deadline - now).to_std().unwrap_or_default().clamp(
                    Duration::from_millis(50),
                    self.policy.attempt_timeout.max(Duration::from_millis(50)),
                )
            }
            _ => self.policy.attempt_timeout,
        }
    }

    /// Saves the saga if this worker still holds its lease, and takes in a cancellation
    /// the follower flagged meanwhile. False when the worker must let the saga go.
    async fn save(&self, saga: &mut Saga, keep_lease: bool) -> bool {
        let stored = self.rows.save(SagaSave::new(saga, keep_lease)).await;
        take_in(saga, stored, "save")
    }

    /// [`Self::save`] without the write, between steps chained without a save.
    async fn check(&self, saga: &mut Saga) -> bool {
        let stored = self.rows.check(saga.order_id).await;
        take_in(saga, stored, "check")
    }

    async fn failpoint(&self, step: Step) {
        match self.failpoint {
            Some(Failpoint { after, crash }) if after == step => {
                tracing::error!(
                    step = step.as_str(),
                    "failpoint: crashing before the saga is saved"
                );
                match crash {
                    Crash::Abort => std::process::abort(),
                    Crash::Freeze => std::future::pending::<()>().await,
                }
            }
            _ => {}
        }
    }
}

/// Takes in what a save or a check of the saga's row found: the stored cancellation
/// request while the lease is held. False when the worker must let the saga go: the lease
/// was lost, or the database failed (the lease then runs out and the saga is picked up
/// again from its last saved state; every step redone gets its recorded answer).
fn take_in(saga: &mut Saga, stored: leased::Answer, what: &str) -> bool {
    match stored {
        Ok(Some((cancel_requested, cancel_reason))) => {
            saga.cancel_requested = cancel_requested;
            saga.cancel_reason = cancel_reason;
            true
        }
        Ok(None) => {
            tracing::warn!(order_id = %saga.order_id, "lost the saga's lease; another worker has it");
            false
        }
        Err(err) => {
            tracing::warn!(order_id = %saga.order_id, error = %err, "cannot {what} the saga");
            false
        }
    }
}

/// Logs a call's answer and times it in the metrics; a transient answer to a call
/// whose answer is `recorded` counts as a retry. True when it was transient.
fn observe_call(
    saga: &Saga,
    step: Step,
    result: &StepResult,
    took: Duration,
    recorded: bool,
) -> bool {
    tracing::debug!(order_id = %saga.order_id, step = step.as_str(), ?result, "saga step");
    let outcome = match result {
        StepResult::Succeeded => "succeeded",
        StepResult::Refused(_) => "refused",
        StepResult::Declined(_) => "declined",
        StepResult::Transient(_) => "transient",
    };
    metrics::histogram!("saga_step_seconds", "step" => step.as_str(), "outcome" => outcome)
        .record(took.as_secs_f64());
    if outcome == "transient" && recorded {
        metrics::counter!("saga_step_retries_total", "step" => step.as_str()).increment(1);
    }
    outcome == "transient"
}

/// Sends `step` of `saga`, traced, and times the call.
async fn timed_send(
    client: &mut steps::CommandClient,
    saga: &Saga,
    step: Step,
    timeout: Duration,
) -> (StepResult, Duration) {
    let started = Instant::now();
    let result = steps::send(client, saga, step, timeout)
        .instrument(step_span(saga, step.as_str()))
        .await;
    (result, started.elapsed())
}

/// The span of one call a saga makes: a child of the trace that placed its order.
fn step_span(saga: &Saga, step: &str) -> tracing::Span {
    let span = tracing::info_span!("saga.step", otel.name = %format!("saga {step}"), order_id = %saga.order_id, step);
    if let Some(parent) = &saga.trace_parent {
        service_runtime::telemetry::set_parent(&span, parent);
    }
    span
}

/// Samples how many sagas are in each state that is not final, every 5 s (finished
/// sagas are counted by `saga_finished_total` as they finish).
pub fn sample_states(pool: PgPool) -> service_runtime::task::AbortOnDrop<()> {
    service_runtime::task::AbortOnDrop::spawn(async move {
        loop {
            if let Ok(counts) = db::count_unfinished(&pool).await {
                for (state, n) in counts {
                    metrics::gauge!("sagas", "state" => state.as_str()).set(n as f64);
                }
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    })
}

/// 0.5 to 1.5, to spread retries.
fn jitter() -> f64 {
    0.5 + f64::from(Uuid::new_v4().as_bytes()[0]) / 255.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The state machine's test saga, for a new order each time.
    fn saga() -> Saga {
        let mut saga = crate::saga::tests::saga();
        saga.order_id = Uuid::new_v4();
        saga
    }

    #[test]
    fn a_claim_is_owed_for_each_saga_made_due_in_the_table_and_none_for_a_hand_off() {
        let work = Work::new();
        work.handed(3);
        assert!(
            !work.take_owed(),
            "a saga handed off is not looked for in the table"
        );
        work.due(2);
        assert_eq!(work.owed(), 2);
        assert!(work.take_owed() && work.take_owed());
        assert!(!work.take_owed(), "two sagas made due, two claims");
        work.give_back();
        assert!(
            work.take_owed(),
            "a claim that could not be made is owed again"
        );
        assert_eq!(work.owed(), 0);
    }

    #[tokio::test]
    async fn a_wake_up_sent_while_every_worker_is_busy_is_kept() {
        let work = Work::new();
        work.due(1);
        // No worker was waiting: the next one to wait is woken at once, and finds the claim.
        tokio::time::timeout(Duration::from_secs(5), work.notified())
            .await
            .expect("the wake-up was kept");
        assert!(work.take_owed());
    }

    #[test]
    fn handed_off_sagas_are_taken_in_order_and_say_when_more_wait() {
        let handoffs = Handoffs::new(Uuid::new_v4(), Duration::from_secs(10));
        let (a, b) = (saga(), saga());
        handoffs.push([a.clone(), b.clone()], Instant::now());
        let (first, _, more) = handoffs.take().unwrap();
        assert_eq!((first.order_id, more), (a.order_id, true));
        let (second, _, more) = handoffs.take().unwrap();
        assert_eq!((second.order_id, more), (b.order_id, false));
        assert!(handoffs.take().is_none());
    }

    #[test]
    fn a_cancellation_found_later_reaches_the_queued_copy() {
        let handoffs = Handoffs::new(Uuid::new_v4(), Duration::from_secs(10));
        let (kept, cancelled) = (saga(), saga());
        handoffs.push([kept.clone(), cancelled.clone()], Instant::now());
        let now = Utc::now();
        handoffs.cancel(cancelled.order_id, "order cancelled: later", now);
        let (first, _, _) = handoffs.take().unwrap();
        assert!(!first.cancel_requested);
        let (second, _, _) = handoffs.take().unwrap();
        assert!(second.cancel_requested);
        assert_eq!(
            second.cancel_reason.as_deref(),
            Some("order cancelled: later")
        );
        assert!(second.next_attempt_at <= now);
    }

    #[test]
    fn a_saga_that_waited_through_half_its_lease_is_left_to_be_claimed() {
        let lease = Duration::from_secs(10);
        let handoffs = Handoffs::new(Uuid::new_v4(), lease);
        let (stale, fresh) = (saga(), saga());
        let long_ago = Instant::now() - lease / 2;
        handoffs.push([stale], long_ago);
        handoffs.push([fresh.clone()], Instant::now());
        let (taken, _, more) = handoffs.take().unwrap();
        assert_eq!((taken.order_id, more), (fresh.order_id, false));
    }

    #[test]
    fn one_worker_of_an_instance_drives_a_saga_at_a_time() {
        let handoffs = Arc::new(Handoffs::new(Uuid::new_v4(), Duration::from_secs(10)));
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let driving = handoffs.begin(a).expect("nobody drives it yet");
        assert!(handoffs.begin(a).is_none(), "a second worker keeps off it");
        let other = handoffs.begin(b).expect("another saga is free");
        let mut driven = handoffs.driven();
        driven.sort();
        let mut both = vec![a, b];
        both.sort();
        assert_eq!(driven, both, "claims skip both");
        drop(driving);
        assert_eq!(handoffs.driven(), vec![b]);
        assert!(
            handoffs.begin(a).is_some(),
            "let go, it can be driven again"
        );
        drop(other);
    }

    #[test]
    fn draining_returns_what_no_worker_took() {
        let handoffs = Handoffs::new(Uuid::new_v4(), Duration::from_secs(10));
        let (a, b) = (saga(), saga());
        handoffs.push([a.clone(), b.clone()], Instant::now());
        handoffs.take().unwrap();
        assert_eq!(handoffs.drain(), vec![b.order_id]);
        assert!(handoffs.take().is_none());
    }
}
