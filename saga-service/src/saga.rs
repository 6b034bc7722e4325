//! The order fulfilment saga as a pure state machine: what to do next, and how each
//! answer moves the saga. No I/O, no clock (times are passed in), no randomness (the jitter
//! is passed in).
//!
//! A step sent to command-service has three outcomes, not two. *Succeeded* is definitive.
//! A refusal, a deadline that passed while the answer was unknown, or a cancellation
//! while a step may be in flight leave the step **in doubt**: an earlier attempt may still
//! be on its way and land later. The saga never assumes such a step failed; it *settles*
//! it first, by voiding its command id (`VoidCommand`): if the command never ran it never
//! will, and if it did, the saga sends it once more to read the recorded answer. Only a
//! settled outcome decides between going forward and compensating, and compensation
//! undoes exactly the steps that settled as succeeded. Because every answer (voids
//! included) is recorded by command-service under the step's fixed idempotency key, a saga
//! that is redone from an older saved state reaches the same outcome.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A step the saga sends to command-service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Reserve stock for every line.
    ReserveStock,
    /// Authorise the order total.
    AuthorizePayment,
    /// Confirm the order.
    ConfirmOrder,
    /// Compensation: give back the authorised payment.
    RefundPayment,
    /// Compensation: release the reserved stock.
    ReleaseStock,
    /// Compensation: cancel the order.
    CancelOrder,
}

impl Step {
    /// Every step, for parsing.
    pub const ALL: [Step; 6] = [
        Step::ReserveStock,
        Step::AuthorizePayment,
        Step::ConfirmOrder,
        Step::RefundPayment,
        Step::ReleaseStock,
        Step::CancelOrder,
    ];

    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::ReserveStock => "reserve_stock",
            Step::AuthorizePayment => "authorize_payment",
            Step::ConfirmOrder => "confirm_order",
            Step::RefundPayment => "refund_payment",
            Step::ReleaseStock => "release_stock",
            Step::CancelOrder => "cancel_order",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|step| step.as_str() == s)
    }

    /// The name this step is stored and shown under in a plan: a forward step in a
    /// compensation plan is `settle_` and its name (voided, or read and undone if it ran).
    /// A saga-service older than steps sent at once cannot parse that name, so it leaves
    /// such a saga alone instead of sending the step as if it were a compensation.
    pub fn plan_name(self, compensating: bool) -> String {
        if compensating && self.is_forward() {
            format!("{SETTLE}{}", self.as_str())
        } else {
            self.as_str().to_owned()
        }
    }

    /// Parses a name from a stored plan ([`Step::plan_name`]).
    pub fn parse_plan_name(s: &str) -> Option<Step> {
        match s.strip_prefix(SETTLE) {
            Some(step) => Step::parse(step).filter(|step| step.is_forward()),
            None => Step::parse(s),
        }
    }

    /// True for the steps that move the order forward (they have deadlines).
    pub fn is_forward(self) -> bool {
        matches!(
            self,
            Step::ReserveStock | Step::AuthorizePayment | Step::ConfirmOrder
        )
    }

    /// The compensation that undoes this forward step, if any.
    pub fn undo(self) -> Option<Step> {
        match self {
            Step::ReserveStock => Some(Step::ReleaseStock),
            Step::AuthorizePayment => Some(Step::RefundPayment),
            _ => None,
        }
    }

    /// The idempotency key of this step of this saga: the same on every retry, on every
    /// instance, after every restart. A void of the step names this key.
    pub fn command_id(self, order_id: Uuid) -> Uuid {
        const NAMESPACE: Uuid = Uuid::from_u128(0x5a6a_0000_4b1d_4c3e_9f00_5a6a_0000_0001);
        let mut name = order_id.as_bytes().to_vec();
        name.extend_from_slice(self.as_str().as_bytes());
        Uuid::new_v5(&NAMESPACE, &name)
    }
}

/// The prefix of a forward step's name in a compensation plan.
const SETTLE: &str = "settle_";

/// Where a saga is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaState {
    /// Moving the order forward (or settling a forward step in doubt).
    Running,
    /// Settling any step sent beside one that failed, undoing what was done, then
    /// cancelling the order.
    Compensating,
    /// The order is confirmed. Final, unless the order is cancelled afterwards: then the
    /// saga compensates it.
    Completed,
    /// Everything was undone and the order cancelled. Final.
    Compensated,
    /// A step kept failing; an operator must look (RetrySaga, AbortSaga).
    NeedsAttention,
}

impl SagaState {
    /// Every state, for parsing and listing.
    pub const ALL: [SagaState; 5] = [
        SagaState::Running,
        SagaState::Compensating,
        SagaState::Completed,
        SagaState::Compensated,
        SagaState::NeedsAttention,
    ];

    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            SagaState::Running => "running",
            SagaState::Compensating => "compensating",
            SagaState::Completed => "completed",
            SagaState::Compensated => "compensated",
            SagaState::NeedsAttention => "needs_attention",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<SagaState> {
        SagaState::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// True for the states nothing moves on from by itself.
    pub fn is_final(self) -> bool {
        matches!(self, SagaState::Completed | SagaState::Compensated)
    }
}

/// How a step run so far stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Being sent, or its outcome is being settled.
    Running,
    /// Done.
    Succeeded,
    /// Refused (a business rule, or a compensation the operator gave up on).
    Failed,
    /// Never ran, and never will: its command id was voided after a deadline or a
    /// cancellation, or because the step it was sent beside failed.
    Voided,
}

impl StepStatus {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Running => "running",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Voided => "voided",
        }
    }
}

/// How the saga is settling the current forward step's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settling {
    /// Voiding the step's command id, so that it cannot run later.
    Void,
    /// The void found that the command ran: sending it again reads its recorded answer.
    Reread,
}

impl Settling {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Settling::Void => "void",
            Settling::Reread => "reread",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Settling> {
        [Settling::Void, Settling::Reread]
            .into_iter()
            .find(|settling| settling.as_str() == s)
    }
}

/// One step as run so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Which step.
    pub name: Step,
    /// How it stands.
    pub status: StepStatus,
    /// Attempts made.
    pub attempts: u32,
    /// When the first attempt started.
    pub started_at: DateTime<Utc>,
    /// When it finished for good.
    pub finished_at: Option<DateTime<Utc>>,
    /// The last error met.
    pub last_error: Option<String>,
}

/// One order line the saga reserves stock for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaLine {
    /// The SKU.
    pub sku: String,
    /// How many.
    pub quantity: u32,
}

/// Timing rules, from configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    /// How long each forward step may take, retries included, before it is settled.
    pub reserve_deadline: Duration,
    /// See `reserve_deadline`.
    pub authorize_deadline: Duration,
    /// See `reserve_deadline`.
    pub confirm_deadline: Duration,
    /// First retry delay; doubles per attempt.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Attempts at a compensation or a void before the saga is parked.
    pub max_compensation_attempts: u32,
    /// The longest one attempt (a command or a void) may take.
    pub attempt_timeout: Duration,
    /// Authorise the payment only once the stock is reserved, instead of sending both at
    /// once ([`Saga::sent_with`]).
    pub sequential: bool,
}

impl Policy {
    fn deadline(&self, step: Step) -> Option<Duration> {
        match step {
            Step::ReserveStock => Some(self.reserve_deadline),
            Step::AuthorizePayment => Some(self.authorize_deadline),
            Step::ConfirmOrder => Some(self.confirm_deadline),
            _ => None,
        }
    }

    /// The delay before attempt `attempts + 1`: exponential, capped, scaled by `jitter`
    /// (0.5 to 1.5, chosen by the caller).
    pub fn backoff(&self, attempts: u32, jitter: f64) -> Duration {
        let exp = self.backoff_base.saturating_mul(1u32 << attempts.min(16));
        exp.min(self.backoff_max).mul_f64(jitter.clamp(0.5, 1.5))
    }
}

/// How a command came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepResult {
    /// It did what was asked (or, for a compensation, there was nothing left to undo).
    Succeeded,
    /// A business rule refused it. For a forward step this is in doubt until settled: a
    /// refusal is not recorded, so an earlier attempt still on its way may yet succeed.
    Refused(String),
    /// The gateway declined the payment. Final: the decline is recorded, and every attempt
    /// with the step's key gets it.
    Declined(String),
    /// No answer worth trusting: unavailable, deadline exceeded, a conflict. The command
    /// may or may not have run.
    Transient(String),
}

/// How a `VoidCommand` came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoidResult {
    /// The command never ran and now never will.
    Voided,
    /// The command ran: its answer is recorded.
    AlreadyRan,
    /// No answer: try again.
    Transient(String),
}

/// What the worker should do with a saga now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send this step's command.
    Send(Step),
    /// Void this forward step's command id.
    Void(Step),
    /// Nothing until this time.
    WaitUntil(DateTime<Utc>),
    /// Nothing ever again (final or parked).
    Stop,
}

/// Where a saga stood before an answer was recorded: see [`Saga::moved_on_from`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    state: SagaState,
    settling: Option<Settling>,
    steps_left: usize,
}

/// One saga's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saga {
    /// The order.
    pub order_id: Uuid,
    /// Who ordered.
    pub customer_id: Uuid,
    /// What to reserve.
    pub lines: Vec<SagaLine>,
    /// What to authorise, in minor units.
    pub total_minor: i64,
    /// In this currency.
    pub currency: String,
    /// How the customer pays.
    pub payment_method: String,
    /// Where it is.
    pub state: SagaState,
    /// The state a parked saga resumes in.
    pub parked_from: Option<SagaState>,
    /// Steps still to run, the current one first.
    pub plan: Vec<Step>,
    /// Steps run so far.
    pub steps: Vec<StepRecord>,
    /// Attempts at the current action (a step's command, or a void).
    pub attempts: u32,
    /// When the current action may next be tried.
    pub next_attempt_at: DateTime<Utc>,
    /// When the current forward step's attempts stop and its outcome is settled.
    pub step_deadline: Option<DateTime<Utc>>,
    /// Set while the current forward step's outcome is being settled. While compensating,
    /// a forward step at the head of the plan is voided with this unset, and it is set to
    /// `Reread` once the void found the step had run; there, as for every compensation
    /// step, attempts that keep failing park the saga (a running saga's reread retries
    /// until it gets an answer).
    pub settling: Option<Settling>,
    /// Why it compensates (while settling: why it will, if the step never ran).
    pub reason: Option<String>,
    /// The order was cancelled (or the saga aborted): compensate, even after completion.
    pub cancel_requested: bool,
    /// Why.
    pub cancel_reason: Option<String>,
    /// The last error met.
    pub last_error: Option<String>,
    /// When it started.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// The W3C traceparent of the call that placed the order, if it was traced.
    pub trace_parent: Option<String>,
}

impl Saga {
    /// A new saga for a placed order, about to reserve stock.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        order_id: Uuid,
        customer_id: Uuid,
        lines: Vec<SagaLine>,
        total_minor: i64,
        currency: String,
        payment_method: String,
        now: DateTime<Utc>,
        policy: &Policy,
    ) -> Saga {
        let mut saga = Saga {
            order_id,
            customer_id,
            lines,
            total_minor,
            currency,
            payment_method,
            state: SagaState::Running,
            parked_from: None,
            plan: vec![
                Step::ReserveStock,
                Step::AuthorizePayment,
                Step::ConfirmOrder,
            ],
            steps: Vec::new(),
            attempts: 0,
            next_attempt_at: now,
            step_deadline: None,
            settling: None,
            reason: None,
            cancel_requested: false,
            cancel_reason: None,
            last_error: None,
            created_at: now,
            updated_at: now,
            trace_parent: None,
        };
        saga.enter_step(now, policy);
        saga
    }

    /// The step due now or next.
    pub fn current_step(&self) -> Option<Step> {
        self.plan.first().copied()
    }

    /// The plan by the names it is stored and shown under ([`Step::plan_name`]).
    pub fn plan_names(&self) -> Vec<String> {
        let compensating = self.state == SagaState::Compensating
            || (self.state == SagaState::NeedsAttention
                && self.parked_from == Some(SagaState::Compensating));
        self.plan
            .iter()
            .map(|step| step.plan_name(compensating))
            .collect()
    }

    /// Acts on a cancellation the order's log (or an operator) asked for: a running saga
    /// settles the step that may be in flight, then compensates; a completed one
    /// compensates at once. Returns true when the saga changed, so the worker saves that
    /// before it sends anything.
    pub fn observe(&mut self, now: DateTime<Utc>, policy: &Policy) -> bool {
        if !self.cancel_requested {
            return false;
        }
        let reason = || {
            self.cancel_reason
                .clone()
                .unwrap_or_else(|| "cancelled".into())
        };
        match self.state {
            SagaState::Running if self.settling.is_none() => {
                let reason = reason();
                self.settle(reason, now);
                true
            }
            SagaState::Completed => {
                let reason = reason();
                self.compensate(reason, now, policy);
                true
            }
            _ => false,
        }
    }

    /// The step sent beside the one due now, at once: authorising the payment does not
    /// depend on the stock, so a running saga about to reserve sends both (unless the
    /// policy says `sequential`), and a whole round of the saga's hops goes. The answer to
    /// the step sent beside is recorded only if the current step succeeds, as if it had
    /// been sent just after; otherwise it is in doubt, and compensation voids it before
    /// anything else ([`Saga::compensate`]).
    pub fn sent_with(&self, now: DateTime<Utc>, policy: &Policy) -> Option<Step> {
        let fresh = self.state == SagaState::Running
            && self.settling.is_none()
            && !self.cancel_requested
            && !policy.sequential;
        match (self.next_action(now), self.plan.get(1)) {
            (Action::Send(Step::ReserveStock), Some(&Step::AuthorizePayment)) if fresh => {
                Some(Step::AuthorizePayment)
            }
            _ => None,
        }
    }

    /// Where the saga stands, to compare with after an answer is recorded.
    pub fn mark(&self) -> Mark {
        Mark {
            state: self.state,
            settling: self.settling,
            steps_left: self.plan.len(),
        }
    }

    /// True when, since `mark`, the saga only moved on: a step succeeded and the next one,
    /// in the same direction, is due at `now`, with no settling, no change of state and no
    /// cancellation requested. The worker then sends that next step without saving first
    /// (it reads the row for a cancellation instead): an unsaved step is no different from
    /// a save lost in a crash, since every step redone from the older saved state gets its
    /// recorded answer. Every other change (a failure, a retry's wait, settling,
    /// compensation starting, the end) is saved before anything more is sent.
    pub fn moved_on_from(&self, mark: Mark, now: DateTime<Utc>) -> bool {
        self.state == mark.state
            && mark.settling.is_none()
            && self.settling.is_none()
            && !self.cancel_requested
            && self.plan.len() + 1 == mark.steps_left
            && matches!(self.next_action(now), Action::Send(_))
    }

    /// What to do at `now`.
    pub fn next_action(&self, now: DateTime<Utc>) -> Action {
        let action = match (self.state, self.current_step()) {
            (SagaState::Running, Some(step)) if self.settling == Some(Settling::Void) => {
                Action::Void(step)
            }
            // A forward step in a compensation plan may have been sent beside an earlier
            // one: it is voided, and undone if it ran.
            (SagaState::Compensating, Some(step)) if step.is_forward() => match self.settling {
                Some(Settling::Reread) => Action::Send(step),
                _ => Action::Void(step),
            },
            (SagaState::Running | SagaState::Compensating, Some(step)) => Action::Send(step),
            _ => return Action::Stop,
        };
        if now >= self.next_attempt_at {
            action
        } else {
            Action::WaitUntil(self.next_attempt_at)
        }
    }

    /// Moves the saga on after `step` came back with `result`. `jitter` (0.5 to 1.5)
    /// spreads retries.
    pub fn record(
        &mut self,
        step: Step,
        result: StepResult,
        now: DateTime<Utc>,
        policy: &Policy,
        jitter: f64,
    ) {
        let sendable = match self.state {
            SagaState::Running => self.settling != Some(Settling::Void),
            SagaState::Compensating => {
                !step.is_forward() || self.settling == Some(Settling::Reread)
            }
            _ => false,
        };
        if !sendable || self.current_step() != Some(step) {
            return;
        }
        self.updated_at = now;
        self.attempts += 1;
        if let Some(record) = self.steps.last_mut() {
            record.attempts += 1;
        }
        match (self.state, result) {
            (SagaState::Compensating, StepResult::Succeeded) if step.is_forward() => {
                // A step sent beside another ran after all: undo it.
                self.settling = None;
                self.set_status(StepStatus::Succeeded, now, None);
                match step.undo() {
                    Some(undo) => self.plan[0] = undo,
                    None => {
                        self.plan.remove(0);
                    }
                }
                self.enter_step(now, policy);
            }
            (SagaState::Compensating, StepResult::Declined(reason)) if step.is_forward() => {
                // It ran, and was declined: nothing to undo.
                self.drop_unsettled(StepStatus::Failed, reason, now, policy);
            }
            (SagaState::Compensating, StepResult::Refused(reason)) if step.is_forward() => {
                // It ran, yet reads as refused: only a voided id answers so.
                self.drop_unsettled(StepStatus::Voided, reason, now, policy);
            }
            (_, StepResult::Succeeded) => {
                self.set_status(StepStatus::Succeeded, now, None);
                self.last_error = None;
                self.plan.remove(0);
                if self.settling.take().is_some() && !self.cancel_requested {
                    // The step settled as done: the compensation it might have led to is off.
                    self.reason = None;
                }
                if self.plan.is_empty() {
                    self.state = match self.state {
                        SagaState::Running => SagaState::Completed,
                        _ => SagaState::Compensated,
                    };
                    self.step_deadline = None;
                } else {
                    self.enter_step(now, policy);
                }
            }
            (SagaState::Running, StepResult::Declined(reason)) => {
                self.settling = None;
                self.set_status(StepStatus::Failed, now, Some(reason.clone()));
                self.compensate(reason, now, policy);
            }
            (SagaState::Running, StepResult::Refused(reason)) => {
                if self.settling == Some(Settling::Reread) {
                    // It ran, yet reads as refused: only a voided id answers so. Settled.
                    self.settling = None;
                    self.set_status(StepStatus::Voided, now, Some(reason.clone()));
                    self.compensate(reason, now, policy);
                } else {
                    // An earlier attempt may still land: make the refusal final first.
                    self.set_status(StepStatus::Failed, now, Some(reason.clone()));
                    self.settle(reason, now);
                }
            }
            (SagaState::Running, StepResult::Transient(error)) => {
                self.note_error(&error);
                let past_deadline = self.step_deadline.is_some_and(|d| now >= d);
                if self.settling.is_none() && past_deadline {
                    let budget = policy.deadline(step).unwrap_or_default();
                    let reason = format!(
                        "step {} did not complete within its deadline of {} ms",
                        step.as_str(),
                        budget.as_millis()
                    );
                    self.settle(reason, now);
                } else {
                    let mut next = now + policy.backoff(self.attempts - 1, jitter);
                    if self.settling.is_none()
                        && let Some(deadline) = self.step_deadline
                    {
                        // Wake at the deadline at the latest, so it is judged on time.
                        next = next.min(deadline);
                    }
                    self.next_attempt_at = next;
                }
            }
            (
                _,
                StepResult::Refused(error)
                | StepResult::Declined(error)
                | StepResult::Transient(error),
            ) => {
                self.note_error(&error);
                if self.attempts >= policy.max_compensation_attempts {
                    self.park();
                } else {
                    self.next_attempt_at = now + policy.backoff(self.attempts - 1, jitter);
                }
            }
        }
    }

    /// Moves the saga on after the void of `step` came back with `result`.
    pub fn record_void(
        &mut self,
        step: Step,
        result: VoidResult,
        now: DateTime<Utc>,
        policy: &Policy,
        jitter: f64,
    ) {
        let settling = self.state == SagaState::Running && self.settling == Some(Settling::Void);
        // A step sent beside an earlier one, being voided by the compensation.
        let undoing = self.state == SagaState::Compensating
            && step.is_forward()
            && self.settling != Some(Settling::Reread);
        if !(settling || undoing) || self.current_step() != Some(step) {
            return;
        }
        self.updated_at = now;
        self.attempts += 1;
        match result {
            VoidResult::Voided if undoing => {
                self.drop_unsettled(StepStatus::Voided, String::new(), now, policy);
            }
            VoidResult::Voided => {
                self.settling = None;
                let status = match self.steps.last() {
                    Some(r) if r.status == StepStatus::Failed => StepStatus::Failed,
                    _ => StepStatus::Voided,
                };
                self.set_status(status, now, None);
                let reason = self
                    .reason
                    .clone()
                    .unwrap_or_else(|| format!("step {} was voided", step.as_str()));
                self.compensate(reason, now, policy);
            }
            VoidResult::AlreadyRan => {
                self.settling = Some(Settling::Reread);
                self.attempts = 0;
                self.next_attempt_at = now;
            }
            VoidResult::Transient(error) => {
                self.note_error(&error);
                if self.attempts >= policy.max_compensation_attempts {
                    self.park();
                } else {
                    self.next_attempt_at = now + policy.backoff(self.attempts - 1, jitter);
                }
            }
        }
    }

    /// Starts compensating: void every forward step with something to undo that may have
    /// been sent beside an earlier one and never settled (undoing it if it ran), undo every
    /// forward step that succeeded, newest first, then cancel the order.
    pub fn compensate(&mut self, reason: String, now: DateTime<Utc>, policy: &Policy) {
        let done: Vec<Step> = self
            .steps
            .iter()
            .filter(|r| r.status == StepStatus::Succeeded && r.name.is_forward())
            .map(|r| r.name)
            .collect();
        // Unsettled: never recorded, or only as running. Sent beside a step that failed,
        // or by an earlier incarnation of this saga; its command may still land, so it is
        // voided before anything is given back.
        let unsettled = Step::ALL
            .into_iter()
            .filter(|step| step.is_forward() && step.undo().is_some())
            .filter(|&step| {
                !self
                    .steps
                    .iter()
                    .any(|r| r.name == step && r.status != StepStatus::Running)
            });
        let mut plan: Vec<Step> = unsettled.collect();
        plan.extend(done.iter().rev().filter_map(|s| s.undo()));
        plan.push(Step::CancelOrder);
        self.plan = plan;
        self.state = SagaState::Compensating;
        self.settling = None;
        self.reason = Some(reason);
        self.updated_at = now;
        self.enter_step(now, policy);
    }

    /// Operator: resume a parked saga where it stopped, with fresh attempts.
    pub fn retry(&mut self, now: DateTime<Utc>, policy: &Policy) -> Result<(), String> {
        if self.state != SagaState::NeedsAttention {
            return Err(format!(
                "only a needs_attention saga can be retried; this one is {}",
                self.state.as_str()
            ));
        }
        self.state = self.parked_from.take().unwrap_or(SagaState::Compensating);
        self.updated_at = now;
        if self.state == SagaState::Compensating {
            self.enter_step(now, policy);
        } else {
            self.attempts = 0;
            self.next_attempt_at = now;
        }
        Ok(())
    }

    /// Operator: cancel the order and compensate, as a customer's cancellation would: a
    /// running saga first settles the step that may be in flight.
    pub fn abort(
        &mut self,
        reason: String,
        now: DateTime<Utc>,
        policy: &Policy,
    ) -> Result<(), String> {
        match (self.state, self.parked_from) {
            (SagaState::Running | SagaState::Completed, _)
            | (SagaState::NeedsAttention, Some(SagaState::Running)) => {
                if self.state == SagaState::NeedsAttention {
                    self.state = SagaState::Running;
                    self.parked_from = None;
                    self.attempts = 0;
                }
                self.cancel_requested = true;
                self.cancel_reason = Some(reason);
                self.next_attempt_at = now;
                self.updated_at = now;
                self.observe(now, policy);
                Ok(())
            }
            (SagaState::NeedsAttention, _) => {
                // Parked while compensating: start the compensation over, with this reason.
                self.parked_from = None;
                self.compensate(reason, now, policy);
                Ok(())
            }
            (other, _) => Err(format!("a {} saga cannot be aborted", other.as_str())),
        }
    }

    /// Begins settling the current forward step: void it first.
    fn settle(&mut self, reason: String, now: DateTime<Utc>) {
        self.settling = Some(Settling::Void);
        self.reason = Some(reason);
        self.attempts = 0;
        self.next_attempt_at = now;
        self.updated_at = now;
    }

    /// Compensation settled a step sent beside another as having nothing to undo: on to
    /// the next compensation step.
    fn drop_unsettled(
        &mut self,
        status: StepStatus,
        reason: String,
        now: DateTime<Utc>,
        policy: &Policy,
    ) {
        self.settling = None;
        self.set_status(status, now, (!reason.is_empty()).then_some(reason));
        self.plan.remove(0);
        self.enter_step(now, policy);
    }

    fn park(&mut self) {
        self.parked_from = Some(self.state);
        self.state = SagaState::NeedsAttention;
    }

    fn note_error(&mut self, error: &str) {
        self.last_error = Some(error.to_owned());
        if let Some(record) = self.steps.last_mut() {
            record.last_error = Some(error.to_owned());
        }
    }

    fn enter_step(&mut self, now: DateTime<Utc>, policy: &Policy) {
        self.attempts = 0;
        self.next_attempt_at = now;
        let Some(step) = self.current_step() else {
            return;
        };
        self.step_deadline = policy
            .deadline(step)
            .filter(|_| self.state == SagaState::Running)
            .map(|d| now + d);
        self.steps.push(StepRecord {
            name: step,
            status: StepStatus::Running,
            attempts: 0,
            started_at: now,
            finished_at: None,
            last_error: None,
        });
    }

    fn set_status(&mut self, status: StepStatus, now: DateTime<Utc>, error: Option<String>) {
        if let Some(record) = self.steps.last_mut() {
            record.status = status;
            record.finished_at = (status != StepStatus::Running).then_some(now);
            if error.is_some() {
                record.last_error = error;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono::TimeZone;

    use super::*;

    pub(crate) fn policy() -> Policy {
        Policy {
            reserve_deadline: Duration::from_secs(10),
            authorize_deadline: Duration::from_secs(10),
            confirm_deadline: Duration::from_secs(10),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            max_compensation_attempts: 3,
            attempt_timeout: Duration::from_secs(5),
            sequential: false,
        }
    }

    fn t(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_800_000_000_000 + ms).unwrap()
    }

    pub(crate) fn saga() -> Saga {
        Saga::start(
            Uuid::from_u128(1),
            Uuid::from_u128(2),
            vec![SagaLine {
                sku: "SKU-1".into(),
                quantity: 2,
            }],
            1000,
            "EUR".into(),
            "card".into(),
            t(0),
            &policy(),
        )
    }

    fn names(saga: &Saga) -> Vec<(&'static str, &'static str)> {
        saga.steps
            .iter()
            .map(|r| (r.name.as_str(), r.status.as_str()))
            .collect()
    }

    fn succeed(s: &mut Saga, steps: &[Step], at: i64) {
        for &step in steps {
            assert_eq!(s.next_action(t(at)), Action::Send(step));
            s.record(step, StepResult::Succeeded, t(at), &policy(), 1.0);
        }
    }

    const FORWARD: [Step; 3] = [
        Step::ReserveStock,
        Step::AuthorizePayment,
        Step::ConfirmOrder,
    ];

    #[test]
    fn only_a_success_that_leads_straight_to_the_next_step_goes_on_unsaved() {
        let moved_on = |s: &mut Saga, step, result, at| {
            let mark = s.mark();
            s.record(step, result, t(at), &policy(), 1.0);
            s.moved_on_from(mark, t(at))
        };
        // Forward: reserve and authorise lead straight on; confirming ends the saga.
        let mut s = saga();
        assert!(moved_on(
            &mut s,
            Step::ReserveStock,
            StepResult::Succeeded,
            1
        ));
        assert!(moved_on(
            &mut s,
            Step::AuthorizePayment,
            StepResult::Succeeded,
            2
        ));
        assert!(!moved_on(
            &mut s,
            Step::ConfirmOrder,
            StepResult::Succeeded,
            3
        ));
        assert_eq!(s.state, SagaState::Completed);

        // A retry's wait, a decline (compensation starts) and a refusal (settling) are saved.
        let mut s = saga();
        let busy = StepResult::Transient("Unavailable".into());
        assert!(!moved_on(&mut s, Step::ReserveStock, busy, 1));
        let mut s = saga();
        let declined = StepResult::Declined("out of stock".into());
        assert!(!moved_on(&mut s, Step::ReserveStock, declined, 1));
        assert_eq!(s.state, SagaState::Compensating);
        let mut s = saga();
        succeed(&mut s, &[Step::ReserveStock], 1);
        let refused = StepResult::Refused("voided".into());
        assert!(!moved_on(&mut s, Step::AuthorizePayment, refused, 2));
        assert!(s.settling.is_some());

        // Compensation steps chain too, once the switch to compensating was saved.
        let mut s = saga();
        succeed(&mut s, &[Step::ReserveStock], 1);
        let declined = StepResult::Declined("card declined".into());
        assert!(!moved_on(&mut s, Step::AuthorizePayment, declined, 2));
        assert_eq!(s.next_action(t(3)), Action::Send(Step::ReleaseStock));
        assert!(moved_on(
            &mut s,
            Step::ReleaseStock,
            StepResult::Succeeded,
            3
        ));

        // A cancellation taken in at the last save stops the chaining.
        let mut s = saga();
        s.cancel_requested = true;
        assert!(!moved_on(
            &mut s,
            Step::ReserveStock,
            StepResult::Succeeded,
            1
        ));
    }

    #[test]
    fn the_happy_path_reserves_authorises_and_confirms() {
        let mut s = saga();
        succeed(&mut s, &FORWARD, 1);
        assert_eq!(s.state, SagaState::Completed);
        assert_eq!(s.next_action(t(2)), Action::Stop);
        assert_eq!(
            names(&s),
            vec![
                ("reserve_stock", "succeeded"),
                ("authorize_payment", "succeeded"),
                ("confirm_order", "succeeded")
            ]
        );
    }

    #[test]
    fn a_refusal_is_made_final_by_a_void_before_anything_is_undone() {
        let p = policy();
        let mut s = saga();
        s.record(
            Step::ReserveStock,
            StepResult::Refused("out of stock: SKU-1".into()),
            t(1),
            &p,
            1.0,
        );
        assert_eq!(s.state, SagaState::Running, "not compensating yet");
        assert_eq!(s.settling, Some(Settling::Void));
        assert_eq!(s.next_action(t(1)), Action::Void(Step::ReserveStock));
        s.record_void(Step::ReserveStock, VoidResult::Voided, t(2), &p, 1.0);
        assert_eq!(s.state, SagaState::Compensating);
        // The payment may have been authorised beside the reservation: voided first.
        assert_eq!(s.plan, vec![Step::AuthorizePayment, Step::CancelOrder]);
        assert_eq!(s.reason.as_deref(), Some("out of stock: SKU-1"));
        assert_eq!(names(&s)[0], ("reserve_stock", "failed"));
        assert_eq!(s.next_action(t(2)), Action::Void(Step::AuthorizePayment));
        s.record_void(Step::AuthorizePayment, VoidResult::Voided, t(3), &p, 1.0);
        assert_eq!(s.next_action(t(3)), Action::Send(Step::CancelOrder));
        s.record(Step::CancelOrder, StepResult::Succeeded, t(3), &p, 1.0);
        assert_eq!(s.state, SagaState::Compensated);
        assert_eq!(
            names(&s),
            vec![
                ("reserve_stock", "failed"),
                ("authorize_payment", "voided"),
                ("cancel_order", "succeeded")
            ]
        );
    }

    #[test]
    fn payment_is_sent_beside_a_fresh_reservation_only() {
        let p = policy();
        let mut s = saga();
        assert_eq!(s.sent_with(t(0), &p), Some(Step::AuthorizePayment));
        let sequential = Policy {
            sequential: true,
            ..policy()
        };
        assert_eq!(s.sent_with(t(0), &sequential), None);
        // Not while waiting for a retry, settling, or cancelled; not beside anything else.
        s.record(
            Step::ReserveStock,
            StepResult::Transient("busy".into()),
            t(1),
            &p,
            1.0,
        );
        assert_eq!(s.sent_with(t(1), &p), None);
        assert_eq!(
            s.sent_with(s.next_attempt_at, &p),
            Some(Step::AuthorizePayment)
        );
        let mut cancelled = s.clone();
        cancelled.cancel_requested = true;
        assert_eq!(cancelled.sent_with(s.next_attempt_at, &p), None);
        s.record(
            Step::ReserveStock,
            StepResult::Refused("out".into()),
            t(300),
            &p,
            1.0,
        );
        assert_eq!(s.settling, Some(Settling::Void));
        assert_eq!(s.sent_with(t(300), &p), None);
        let mut s = saga();
        succeed(&mut s, &[Step::ReserveStock], 1);
        assert_eq!(s.sent_with(t(1), &p), None);
    }

    #[test]
    fn a_payment_sent_beside_a_failed_reservation_is_voided_or_read_and_undone() {
        let p = policy();
        let out_of_stock = || {
            let mut s = saga();
            s.record(
                Step::ReserveStock,
                StepResult::Refused("out".into()),
                t(1),
                &p,
                1.0,
            );
            s.record_void(Step::ReserveStock, VoidResult::Voided, t(2), &p, 1.0);
            assert_eq!(s.next_action(t(2)), Action::Void(Step::AuthorizePayment));
            // An answer to the payment itself is not taken while it is being voided.
            let before = s.clone();
            s.record(Step::AuthorizePayment, StepResult::Succeeded, t(2), &p, 1.0);
            assert_eq!(s, before);
            s.record_void(
                Step::AuthorizePayment,
                VoidResult::AlreadyRan,
                t(3),
                &p,
                1.0,
            );
            assert_eq!(s.settling, Some(Settling::Reread));
            assert_eq!(s.next_action(t(3)), Action::Send(Step::AuthorizePayment));
            s
        };
        // It ran and authorised: refunded, then the order is cancelled.
        let mut s = out_of_stock();
        s.record(Step::AuthorizePayment, StepResult::Succeeded, t(4), &p, 1.0);
        assert_eq!(s.plan, vec![Step::RefundPayment, Step::CancelOrder]);
        assert_eq!(s.settling, None);
        succeed(&mut s, &[Step::RefundPayment, Step::CancelOrder], 5);
        assert_eq!(s.state, SagaState::Compensated);
        assert_eq!(
            names(&s),
            vec![
                ("reserve_stock", "failed"),
                ("authorize_payment", "succeeded"),
                ("refund_payment", "succeeded"),
                ("cancel_order", "succeeded")
            ]
        );
        // It ran and was declined: nothing to refund.
        let mut s = out_of_stock();
        s.record(
            Step::AuthorizePayment,
            StepResult::Declined("no".into()),
            t(4),
            &p,
            1.0,
        );
        assert_eq!(s.plan, vec![Step::CancelOrder]);
        assert_eq!(names(&s)[1], ("authorize_payment", "failed"));
        // No answer: retried like any compensation step, then parked.
        let mut s = out_of_stock();
        for at in 4..7 {
            s.record(
                Step::AuthorizePayment,
                StepResult::Transient("busy".into()),
                t(at),
                &p,
                1.0,
            );
        }
        assert_eq!(s.state, SagaState::NeedsAttention);
        // An operator's abort starts the compensation over: the payment is voided again.
        s.abort("operator".into(), t(10), &p).unwrap();
        assert_eq!(s.plan, vec![Step::AuthorizePayment, Step::CancelOrder]);
        assert_eq!(s.next_action(t(10)), Action::Void(Step::AuthorizePayment));
    }

    #[test]
    fn a_refusal_whose_earlier_attempt_ran_goes_forward_after_all() {
        let p = policy();
        let mut s = saga();
        s.record(
            Step::ReserveStock,
            StepResult::Transient("DeadlineExceeded".into()),
            t(1),
            &p,
            1.0,
        );
        s.record(
            Step::ReserveStock,
            StepResult::Refused("out of stock: SKU-1".into()),
            t(200),
            &p,
            1.0,
        );
        s.record_void(Step::ReserveStock, VoidResult::AlreadyRan, t(201), &p, 1.0);
        assert_eq!(s.next_action(t(201)), Action::Send(Step::ReserveStock));
        s.record(Step::ReserveStock, StepResult::Succeeded, t(202), &p, 1.0);
        assert_eq!(s.state, SagaState::Running);
        assert_eq!(s.reason, None);
        assert_eq!(s.current_step(), Some(Step::AuthorizePayment));
        assert_eq!(names(&s)[0], ("reserve_stock", "succeeded"));
    }

    #[test]
    fn a_decline_is_final_and_releases_stock_then_cancels() {
        let p = policy();
        let mut s = saga();
        succeed(&mut s, &[Step::ReserveStock], 1);
        s.record(
            Step::AuthorizePayment,
            StepResult::Declined("payment declined".into()),
            t(2),
            &p,
            1.0,
        );
        assert_eq!(
            s.state,
            SagaState::Compensating,
            "no void: a decline is recorded"
        );
        assert_eq!(s.plan, vec![Step::ReleaseStock, Step::CancelOrder]);
        assert_eq!(names(&s)[1], ("authorize_payment", "failed"));
    }

    #[test]
    fn a_step_unknown_at_its_deadline_is_voided_and_then_compensated() {
        let p = policy();
        let mut s = saga();
        succeed(&mut s, &[Step::ReserveStock, Step::AuthorizePayment], 2);
        s.record(
            Step::ConfirmOrder,
            StepResult::Transient("unavailable".into()),
            t(3),
            &p,
            1.0,
        );
        assert_eq!(s.next_action(t(50)), Action::WaitUntil(t(103)));
        // An attempt after the deadline (10 s after the step started at t(2)) that still
        // gets no answer settles the step; it is never assumed to have failed.
        assert_eq!(s.next_action(t(10_002)), Action::Send(Step::ConfirmOrder));
        s.record(
            Step::ConfirmOrder,
            StepResult::Transient("DeadlineExceeded".into()),
            t(10_002),
            &p,
            1.0,
        );
        assert_eq!(s.next_action(t(10_002)), Action::Void(Step::ConfirmOrder));
        s.record_void(Step::ConfirmOrder, VoidResult::Voided, t(10_003), &p, 1.0);
        assert_eq!(
            s.plan,
            vec![Step::RefundPayment, Step::ReleaseStock, Step::CancelOrder]
        );
        assert!(
            s.reason
                .as_deref()
                .unwrap()
                .contains("confirm_order did not complete within its deadline of 10000 ms")
        );
        assert_eq!(names(&s)[2], ("confirm_order", "voided"));
    }

    #[test]
    fn a_confirmation_that_landed_after_its_deadline_completes_the_saga() {
        let p = policy();
        let mut s = saga();
        succeed(&mut s, &[Step::ReserveStock, Step::AuthorizePayment], 2);
        s.record(
            Step::ConfirmOrder,
            StepResult::Transient("DeadlineExceeded".into()),
            t(20_000),
            &p,
            1.0,
        );
        s.record_void(
            Step::ConfirmOrder,
            VoidResult::AlreadyRan,
            t(20_001),
            &p,
            1.0,
        );
        s.record(
            Step::ConfirmOrder,
            StepResult::Transient("unavailable".into()),
            t(20_002),
            &p,
            1.0,
        );
        assert_eq!(
            s.settling,
            Some(Settling::Reread),
            "a reread has no deadline: the answer exists"
        );
        s.record(
            Step::ConfirmOrder,
            StepResult::Succeeded,
            t(30_000),
            &p,
            1.0,
        );
        assert_eq!(s.state, SagaState::Completed);
        assert_eq!(s.reason, None);
    }

    #[test]
    fn a_saga_resumed_after_its_deadline_sends_its_step_before_judging_it() {
        let p = policy();
        let mut s = saga();
        // Saved before the first attempt's answer; taken over long after the deadline.
        assert_eq!(s.next_action(t(60_000)), Action::Send(Step::ReserveStock));
        s.record(
            Step::ReserveStock,
            StepResult::Succeeded,
            t(60_000),
            &p,
            1.0,
        );
        assert_eq!(s.state, SagaState::Running);
        assert_eq!(s.current_step(), Some(Step::AuthorizePayment));
    }

    #[test]
    fn retries_back_off_exponentially_but_wake_at_the_deadline() {
        let p = policy();
        let mut s = saga();
        let transient = || StepResult::Transient("unavailable".into());
        s.record(Step::ReserveStock, transient(), t(0), &p, 1.0);
        assert_eq!(s.next_attempt_at, t(100));
        s.record(Step::ReserveStock, transient(), t(100), &p, 1.0);
        assert_eq!(s.next_attempt_at, t(300));
        s.record(Step::ReserveStock, transient(), t(9_990), &p, 1.0);
        assert_eq!(
            s.next_attempt_at,
            t(10_000),
            "never later than the deadline"
        );
    }

    #[test]
    fn a_cancellation_while_running_settles_the_step_in_flight_then_compensates() {
        let p = policy();
        let mut s = saga();
        succeed(&mut s, &[Step::ReserveStock], 1);
        s.cancel_requested = true;
        s.cancel_reason = Some("cancelled by the customer".into());
        assert!(s.observe(t(2), &p), "the switch is saved before any send");
        assert!(!s.observe(t(2), &p));
        assert_eq!(s.next_action(t(2)), Action::Void(Step::AuthorizePayment));
        s.record_void(Step::AuthorizePayment, VoidResult::Voided, t(3), &p, 1.0);
        assert_eq!(s.plan, vec![Step::ReleaseStock, Step::CancelOrder]);
        assert_eq!(s.reason.as_deref(), Some("cancelled by the customer"));
        assert_eq!(
            names(&s)[1],
            ("authorize_payment", "voided"),
            "the interrupted step is finished"
        );
        assert!(s.steps[1].finished_at.is_some());
    }

    #[test]
    fn a_cancellation_of_a_step_that_ran_undoes_it_too() {
        let p = policy();
        let mut s = saga();
        succeed(&mut s, &[Step::ReserveStock], 1);
        s.cancel_requested = true;
        s.cancel_reason = Some("order cancelled: changed my mind".into());
        s.observe(t(2), &p);
        s.record_void(
            Step::AuthorizePayment,
            VoidResult::AlreadyRan,
            t(3),
            &p,
            1.0,
        );
        s.record(Step::AuthorizePayment, StepResult::Succeeded, t(4), &p, 1.0);
        // Still cancelled: the next step is voided, then both are undone.
        assert!(s.observe(t(5), &p));
        assert_eq!(s.next_action(t(5)), Action::Void(Step::ConfirmOrder));
        s.record_void(Step::ConfirmOrder, VoidResult::Voided, t(6), &p, 1.0);
        assert_eq!(
            s.plan,
            vec![Step::RefundPayment, Step::ReleaseStock, Step::CancelOrder]
        );
    }

    #[test]
    fn a_cancellation_after_confirmation_gives_everything_back() {
        let p = policy();
        let mut s = saga();
        succeed(&mut s, &FORWARD, 1);
        s.cancel_requested = true;
        s.cancel_reason = Some("order cancelled: changed my mind".into());
        assert!(s.observe(t(2), &p));
        assert_eq!(s.state, SagaState::Compensating);
        assert_eq!(
            s.plan,
            vec![Step::RefundPayment, Step::ReleaseStock, Step::CancelOrder]
        );
    }

    #[test]
    fn a_failing_compensation_is_parked_then_retried() {
        let p = policy();
        let mut s = saga();
        s.record(
            Step::ReserveStock,
            StepResult::Refused("out of stock: SKU-1".into()),
            t(1),
            &p,
            1.0,
        );
        s.record_void(Step::ReserveStock, VoidResult::Voided, t(2), &p, 1.0);
        s.record_void(Step::AuthorizePayment, VoidResult::Voided, t(3), &p, 1.0);
        for i in 0..3 {
            s.record(
                Step::CancelOrder,
                StepResult::Transient("unavailable".into()),
                t(10 + i),
                &p,
                1.0,
            );
        }
        assert_eq!(s.state, SagaState::NeedsAttention);
        assert_eq!(s.last_error.as_deref(), Some("unavailable"));
        assert_eq!(s.next_action(t(20)), Action::Stop);
        s.retry(t(30), &p).unwrap();
        assert_eq!(s.state, SagaState::Compensating);
        assert_eq!(s.next_action(t(30)), Action::Send(Step::CancelOrder));
    }

    #[test]
    fn a_void_that_keeps_failing_is_parked_and_resumes_voiding() {
        let p = policy();
        let mut s = saga();
        s.record(
            Step::ReserveStock,
            StepResult::Refused("out of stock".into()),
            t(1),
            &p,
            1.0,
        );
        for i in 0..3 {
            s.record_void(
                Step::ReserveStock,
                VoidResult::Transient("unavailable".into()),
                t(10 + i),
                &p,
                1.0,
            );
        }
        assert_eq!(s.state, SagaState::NeedsAttention);
        s.retry(t(30), &p).unwrap();
        assert_eq!(s.next_action(t(30)), Action::Void(Step::ReserveStock));
    }

    #[test]
    fn an_operator_abort_of_a_completed_saga_compensates_it() {
        let p = policy();
        let mut s = saga();
        succeed(&mut s, &FORWARD, 1);
        s.abort("operator".into(), t(2), &p).unwrap();
        assert_eq!(
            s.plan,
            vec![Step::RefundPayment, Step::ReleaseStock, Step::CancelOrder]
        );
        assert_eq!(s.state, SagaState::Compensating);
        assert!(
            s.abort("again".into(), t(3), &p).is_err(),
            "a compensating saga is already aborting"
        );
    }

    #[test]
    fn an_operator_abort_of_a_running_saga_settles_its_step_first() {
        let p = policy();
        let mut s = saga();
        s.abort("operator".into(), t(2), &p).unwrap();
        assert_eq!(s.state, SagaState::Running);
        assert_eq!(s.next_action(t(2)), Action::Void(Step::ReserveStock));
    }

    #[test]
    fn answers_to_anything_but_the_current_action_are_ignored() {
        let p = policy();
        let mut s = saga();
        let before = s.clone();
        s.record(Step::ConfirmOrder, StepResult::Succeeded, t(1), &p, 1.0);
        s.record_void(Step::ReserveStock, VoidResult::Voided, t(1), &p, 1.0);
        assert_eq!(s, before);
    }

    #[test]
    fn step_keys_are_stable_and_distinct() {
        let order = Uuid::from_u128(9);
        assert_eq!(
            Step::ReserveStock.command_id(order),
            Step::ReserveStock.command_id(order)
        );
        assert_ne!(
            Step::ReserveStock.command_id(order),
            Step::ReleaseStock.command_id(order)
        );
        assert_ne!(
            Step::ReserveStock.command_id(order),
            Step::ReserveStock.command_id(Uuid::from_u128(8))
        );
    }

    #[test]
    fn a_forward_step_in_a_compensation_plan_is_stored_under_its_own_name() {
        let p = policy();
        let mut s = saga();
        assert_eq!(
            s.plan_names(),
            ["reserve_stock", "authorize_payment", "confirm_order"]
        );
        s.record(
            Step::ReserveStock,
            StepResult::Refused("out".into()),
            t(1),
            &p,
            1.0,
        );
        s.record_void(Step::ReserveStock, VoidResult::Voided, t(2), &p, 1.0);
        assert_eq!(s.plan_names(), ["settle_authorize_payment", "cancel_order"]);
        s.park();
        assert_eq!(s.plan_names(), ["settle_authorize_payment", "cancel_order"]);
        for name in s.plan_names() {
            assert!(Step::parse_plan_name(&name).is_some(), "{name}");
        }
        assert_eq!(Step::parse("settle_authorize_payment"), None);
        assert_eq!(Step::parse_plan_name("settle_cancel_order"), None);
    }

    #[test]
    fn names_round_trip() {
        for step in Step::ALL {
            assert_eq!(Step::parse(step.as_str()), Some(step));
        }
        for state in SagaState::ALL {
            assert_eq!(SagaState::parse(state.as_str()), Some(state));
        }
        for settling in [Settling::Void, Settling::Reread] {
            assert_eq!(Settling::parse(settling.as_str()), Some(settling));
        }
    }
}
