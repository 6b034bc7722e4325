//! The order fulfilment saga as a pure state machine: what to do next, and how each
//! command's result moves the saga. No I/O, no clock (times are passed in), no randomness
//! (the jitter is passed in).

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
        [
            Step::ReserveStock,
            Step::AuthorizePayment,
            Step::ConfirmOrder,
            Step::RefundPayment,
            Step::ReleaseStock,
            Step::CancelOrder,
        ]
        .into_iter()
        .find(|step| step.as_str() == s)
    }

    /// True for the steps that move the order forward (they have deadlines).
    pub fn is_forward(self) -> bool {
        matches!(
            self,
            Step::ReserveStock | Step::AuthorizePayment | Step::ConfirmOrder
        )
    }

    /// The compensation that undoes this forward step, if any.
    fn undo(self) -> Option<Step> {
        match self {
            Step::ReserveStock => Some(Step::ReleaseStock),
            Step::AuthorizePayment => Some(Step::RefundPayment),
            _ => None,
        }
    }

    /// The idempotency key of this step of this saga: the same on every retry, on every
    /// instance, after every restart.
    pub fn command_id(self, order_id: Uuid) -> Uuid {
        const NAMESPACE: Uuid = Uuid::from_u128(0x5a6a_0000_4b1d_4c3e_9f00_5a6a_0000_0001);
        let mut name = order_id.as_bytes().to_vec();
        name.extend_from_slice(self.as_str().as_bytes());
        Uuid::new_v5(&NAMESPACE, &name)
    }
}

/// Where a saga is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaState {
    /// Moving the order forward.
    Running,
    /// Undoing what was done, then cancelling the order.
    Compensating,
    /// The order is confirmed. Final.
    Completed,
    /// Everything was undone and the order cancelled. Final.
    Compensated,
    /// A compensation step kept failing; an operator must look (RetrySaga, AbortSaga).
    NeedsAttention,
}

impl SagaState {
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
        [
            SagaState::Running,
            SagaState::Compensating,
            SagaState::Completed,
            SagaState::Compensated,
            SagaState::NeedsAttention,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
    }
}

/// One step as run so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Which step.
    pub name: Step,
    /// running, succeeded or failed.
    pub status: String,
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
    /// How long each forward step may take, retries included.
    pub reserve_deadline: Duration,
    /// See `reserve_deadline`.
    pub authorize_deadline: Duration,
    /// See `reserve_deadline`.
    pub confirm_deadline: Duration,
    /// First retry delay; doubles per attempt.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Attempts at a compensation step before the saga is parked.
    pub max_compensation_attempts: u32,
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
    /// It did what was asked.
    Succeeded,
    /// A business rule refused it (or the gateway declined): retrying will not help.
    Refused(String),
    /// It may work later (unavailable, deadline exceeded, conflict).
    Transient(String),
}

/// What the worker should do with a saga now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send this step's command.
    Send(Step),
    /// Nothing until this time.
    WaitUntil(DateTime<Utc>),
    /// Nothing ever again (final or parked).
    Stop,
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
    /// With this method.
    pub payment_method: String,
    /// Where it is.
    pub state: SagaState,
    /// The state a parked saga resumes in.
    pub parked_from: Option<SagaState>,
    /// Steps still to run, the current one first.
    pub plan: Vec<Step>,
    /// Steps run so far.
    pub steps: Vec<StepRecord>,
    /// Attempts at the current step.
    pub attempts: u32,
    /// When the current step may next be tried.
    pub next_attempt_at: DateTime<Utc>,
    /// When the current forward step times out.
    pub step_deadline: Option<DateTime<Utc>>,
    /// Why it compensates.
    pub reason: Option<String>,
    /// The order was cancelled (or the saga aborted) while it ran.
    pub cancel_requested: bool,
    /// Why.
    pub cancel_reason: Option<String>,
    /// The last error met.
    pub last_error: Option<String>,
    /// When it started.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
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
            reason: None,
            cancel_requested: false,
            cancel_reason: None,
            last_error: None,
            created_at: now,
            updated_at: now,
        };
        saga.enter_step(now, policy);
        saga
    }

    /// The step due now or next.
    pub fn current_step(&self) -> Option<Step> {
        self.plan.first().copied()
    }

    /// Decides what to do at `now`. Also turns a pending cancellation or a passed deadline
    /// into compensation, so call it before every send.
    pub fn next_action(&mut self, now: DateTime<Utc>, policy: &Policy) -> Action {
        if self.state == SagaState::Running {
            if self.cancel_requested {
                let reason = self
                    .cancel_reason
                    .clone()
                    .unwrap_or_else(|| "cancelled".into());
                self.compensate(reason, now, policy);
            } else if let (Some(step), Some(deadline)) = (self.current_step(), self.step_deadline)
                && now >= deadline
            {
                let budget = policy.deadline(step).unwrap_or_default();
                let reason = format!(
                    "step {} did not complete within its deadline of {} ms",
                    step.as_str(),
                    budget.as_millis()
                );
                self.finish_step(now, "failed", Some(reason.clone()));
                self.compensate(reason, now, policy);
            }
        }
        match (self.state, self.current_step()) {
            (SagaState::Running | SagaState::Compensating, Some(step)) => {
                if now >= self.next_attempt_at {
                    Action::Send(step)
                } else {
                    Action::WaitUntil(self.next_attempt_at)
                }
            }
            _ => Action::Stop,
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
        if self.current_step() != Some(step) {
            return;
        }
        self.updated_at = now;
        self.attempts += 1;
        if let Some(record) = self.steps.last_mut() {
            record.attempts = self.attempts;
        }
        match result {
            StepResult::Succeeded => {
                self.finish_step(now, "succeeded", None);
                self.plan.remove(0);
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
            StepResult::Refused(reason) if step.is_forward() => {
                self.finish_step(now, "failed", Some(reason.clone()));
                self.compensate(reason, now, policy);
            }
            StepResult::Refused(error) | StepResult::Transient(error) => {
                self.last_error = Some(error.clone());
                if let Some(record) = self.steps.last_mut() {
                    record.last_error = Some(error.clone());
                }
                if !step.is_forward() && self.attempts >= policy.max_compensation_attempts {
                    self.parked_from = Some(self.state);
                    self.state = SagaState::NeedsAttention;
                    return;
                }
                let mut next = now + policy.backoff(self.attempts - 1, jitter);
                if let Some(deadline) = self.step_deadline {
                    // Wake at the deadline at the latest, so it fires on time.
                    next = next.min(deadline);
                }
                self.next_attempt_at = next;
            }
        }
    }

    /// Starts compensating: undo every succeeded forward step, newest first, then cancel
    /// the order.
    pub fn compensate(&mut self, reason: String, now: DateTime<Utc>, policy: &Policy) {
        let done: Vec<Step> = self
            .steps
            .iter()
            .filter(|r| r.status == "succeeded" && r.name.is_forward())
            .map(|r| r.name)
            .collect();
        let mut plan: Vec<Step> = done.iter().rev().filter_map(|s| s.undo()).collect();
        plan.push(Step::CancelOrder);
        self.plan = plan;
        self.state = SagaState::Compensating;
        self.reason = Some(reason);
        self.updated_at = now;
        self.enter_step(now, policy);
    }

    /// Operator: resume a parked saga from its failed step with fresh attempts.
    pub fn retry(&mut self, now: DateTime<Utc>, policy: &Policy) -> Result<(), String> {
        if self.state != SagaState::NeedsAttention {
            return Err(format!(
                "only a needs_attention saga can be retried; this one is {}",
                self.state.as_str()
            ));
        }
        self.state = self.parked_from.take().unwrap_or(SagaState::Compensating);
        self.updated_at = now;
        self.enter_step(now, policy);
        Ok(())
    }

    /// Operator: compensate now and cancel the order.
    pub fn abort(
        &mut self,
        reason: String,
        now: DateTime<Utc>,
        policy: &Policy,
    ) -> Result<(), String> {
        match self.state {
            SagaState::Running | SagaState::Completed | SagaState::NeedsAttention => {
                if self.state == SagaState::Running
                    && self.steps.last().is_some_and(|r| r.status == "running")
                {
                    self.finish_step(now, "failed", Some(format!("aborted: {reason}")));
                }
                self.compensate(reason, now, policy);
                Ok(())
            }
            other => Err(format!("a {} saga cannot be aborted", other.as_str())),
        }
    }

    fn enter_step(&mut self, now: DateTime<Utc>, policy: &Policy) {
        self.attempts = 0;
        self.next_attempt_at = now;
        let Some(step) = self.current_step() else {
            return;
        };
        self.step_deadline = policy.deadline(step).map(|d| now + d);
        self.steps.push(StepRecord {
            name: step,
            status: "running".into(),
            attempts: 0,
            started_at: now,
            finished_at: None,
            last_error: None,
        });
    }

    fn finish_step(&mut self, now: DateTime<Utc>, status: &str, error: Option<String>) {
        if let Some(record) = self.steps.last_mut()
            && record.status == "running"
        {
            record.status = status.into();
            record.finished_at = Some(now);
            if error.is_some() {
                record.last_error = error;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn policy() -> Policy {
        Policy {
            reserve_deadline: Duration::from_secs(10),
            authorize_deadline: Duration::from_secs(10),
            confirm_deadline: Duration::from_secs(10),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            max_compensation_attempts: 3,
        }
    }

    fn t(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_800_000_000_000 + ms).unwrap()
    }

    fn saga() -> Saga {
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

    fn names(saga: &Saga) -> Vec<(&'static str, &str)> {
        saga.steps
            .iter()
            .map(|r| (r.name.as_str(), r.status.as_str()))
            .collect()
    }

    #[test]
    fn the_happy_path_reserves_authorises_and_confirms() {
        let p = policy();
        let mut s = saga();
        for step in [
            Step::ReserveStock,
            Step::AuthorizePayment,
            Step::ConfirmOrder,
        ] {
            assert_eq!(s.next_action(t(1), &p), Action::Send(step));
            s.record(step, StepResult::Succeeded, t(1), &p, 1.0);
        }
        assert_eq!(s.state, SagaState::Completed);
        assert_eq!(s.next_action(t(2), &p), Action::Stop);
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
    fn out_of_stock_cancels_without_undoing_anything() {
        let p = policy();
        let mut s = saga();
        s.record(
            Step::ReserveStock,
            StepResult::Refused("out of stock: SKU-1".into()),
            t(1),
            &p,
            1.0,
        );
        assert_eq!(s.state, SagaState::Compensating);
        assert_eq!(s.plan, vec![Step::CancelOrder]);
        assert_eq!(s.reason.as_deref(), Some("out of stock: SKU-1"));
        s.record(Step::CancelOrder, StepResult::Succeeded, t(2), &p, 1.0);
        assert_eq!(s.state, SagaState::Compensated);
    }

    #[test]
    fn a_decline_releases_stock_then_cancels() {
        let p = policy();
        let mut s = saga();
        s.record(Step::ReserveStock, StepResult::Succeeded, t(1), &p, 1.0);
        s.record(
            Step::AuthorizePayment,
            StepResult::Refused("payment declined".into()),
            t(2),
            &p,
            1.0,
        );
        assert_eq!(s.plan, vec![Step::ReleaseStock, Step::CancelOrder]);
    }

    #[test]
    fn a_missed_deadline_compensates_in_reverse_order() {
        let p = policy();
        let mut s = saga();
        s.record(Step::ReserveStock, StepResult::Succeeded, t(1), &p, 1.0);
        s.record(Step::AuthorizePayment, StepResult::Succeeded, t(2), &p, 1.0);
        s.record(
            Step::ConfirmOrder,
            StepResult::Transient("unavailable".into()),
            t(3),
            &p,
            1.0,
        );
        assert_eq!(s.next_action(t(50), &p), Action::WaitUntil(t(103)));
        // Past the confirm deadline (10 s after it started at t(2)).
        assert_eq!(
            s.next_action(t(10_002), &p),
            Action::Send(Step::RefundPayment)
        );
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
    }

    #[test]
    fn retries_back_off_exponentially_but_wake_at_the_deadline() {
        let p = policy();
        let mut s = saga();
        s.record(
            Step::ReserveStock,
            StepResult::Transient("unavailable".into()),
            t(0),
            &p,
            1.0,
        );
        assert_eq!(s.next_attempt_at, t(100));
        s.record(
            Step::ReserveStock,
            StepResult::Transient("unavailable".into()),
            t(100),
            &p,
            1.0,
        );
        assert_eq!(s.next_attempt_at, t(300));
        s.record(
            Step::ReserveStock,
            StepResult::Transient("unavailable".into()),
            t(9_990),
            &p,
            1.0,
        );
        assert_eq!(
            s.next_attempt_at,
            t(10_000),
            "never later than the deadline"
        );
    }

    #[test]
    fn a_cancellation_while_running_compensates_what_was_done() {
        let p = policy();
        let mut s = saga();
        s.record(Step::ReserveStock, StepResult::Succeeded, t(1), &p, 1.0);
        s.cancel_requested = true;
        s.cancel_reason = Some("cancelled by the customer".into());
        assert_eq!(s.next_action(t(2), &p), Action::Send(Step::ReleaseStock));
        assert_eq!(s.reason.as_deref(), Some("cancelled by the customer"));
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
        assert_eq!(s.next_action(t(20), &p), Action::Stop);
        s.retry(t(30), &p).unwrap();
        assert_eq!(s.state, SagaState::Compensating);
        assert_eq!(s.next_action(t(30), &p), Action::Send(Step::CancelOrder));
    }

    #[test]
    fn a_completed_saga_can_be_aborted() {
        let p = policy();
        let mut s = saga();
        for step in [
            Step::ReserveStock,
            Step::AuthorizePayment,
            Step::ConfirmOrder,
        ] {
            s.record(step, StepResult::Succeeded, t(1), &p, 1.0);
        }
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
}
