//! Every SQL statement of saga-service: saga rows, claiming with a lease, the follower's
//! checkpoint.

use chrono::{DateTime, Utc};
use event_store::Position;
use sqlx::{PgConnection, PgPool, Row, postgres::PgRow};
use uuid::Uuid;

use crate::saga::{Saga, SagaLine, SagaState, Settling, Step, StepRecord};

const COLUMNS: &str = "order_id, customer_id, lines, total_minor, currency, payment_method, state, parked_from, \
     plan, steps, attempts, next_attempt_at, step_deadline, settling, reason, cancel_requested, cancel_reason, \
     last_error, created_at, updated_at, trace_parent";

fn corrupt(what: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("stored saga has an unknown {what}").into())
}

fn from_row(row: &PgRow) -> Result<Saga, sqlx::Error> {
    let lines: sqlx::types::Json<Vec<SagaLine>> = row.try_get("lines")?;
    let steps: sqlx::types::Json<Vec<StepRecord>> = row.try_get("steps")?;
    let plan: Vec<String> = row.try_get("plan")?;
    let state: String = row.try_get("state")?;
    let parked_from: Option<String> = row.try_get("parked_from")?;
    let attempts: i32 = row.try_get("attempts")?;
    let settling: Option<String> = row.try_get("settling")?;
    Ok(Saga {
        order_id: row.try_get("order_id")?,
        customer_id: row.try_get("customer_id")?,
        lines: lines.0,
        total_minor: row.try_get("total_minor")?,
        currency: row.try_get("currency")?,
        payment_method: row.try_get("payment_method")?,
        state: SagaState::parse(&state).ok_or_else(|| corrupt("state"))?,
        parked_from: parked_from
            .as_deref()
            .map(|s| SagaState::parse(s).ok_or_else(|| corrupt("state")))
            .transpose()?,
        plan: plan
            .iter()
            .map(|s| Step::parse_plan_name(s).ok_or_else(|| corrupt("step")))
            .collect::<Result<_, _>>()?,
        steps: steps.0,
        attempts: u32::try_from(attempts).unwrap_or(0),
        next_attempt_at: row.try_get("next_attempt_at")?,
        step_deadline: row.try_get("step_deadline")?,
        settling: settling
            .as_deref()
            .map(|s| Settling::parse(s).ok_or_else(|| corrupt("settling")))
            .transpose()?,
        reason: row.try_get("reason")?,
        cancel_requested: row.try_get("cancel_requested")?,
        cancel_reason: row.try_get("cancel_reason")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        trace_parent: row.try_get("trace_parent")?,
    })
}

/// The sagas one follower batch starts and the cancellations it flags, applied together
/// by [`apply_batch`].
#[derive(Debug, Default)]
pub struct FollowerBatch {
    /// Sagas of orders placed, in log order.
    pub started: Vec<Saga>,
    /// Orders cancelled (at most once each), with the reason shown.
    pub cancelled: Vec<(Uuid, String)>,
    /// The lease the first sagas of `started` are written with, if any.
    pub handoff: Option<Handoff>,
}

/// A lease the follower writes on the first `count` sagas it starts, in the statement
/// that starts them, so that its own instance's idle workers drive them without a claim.
/// Such a saga is leased like a claimed one: if the instance dies before driving it, any
/// instance claims it once `until` has passed (a saga not handed off is claimable at
/// once; that is the price of sparing the claim).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handoff {
    /// The instance whose workers take the sagas.
    pub owner: Uuid,
    /// When the lease runs out.
    pub until: DateTime<Utc>,
    /// How many sagas, from the first, get the lease.
    pub count: usize,
}

impl FollowerBatch {
    /// A saga to start (once per order, should the log repeat a placement).
    pub fn start(&mut self, saga: Saga) {
        if !self.started.iter().any(|s| s.order_id == saga.order_id) {
            self.started.push(saga);
        }
    }

    /// A cancellation to flag. A saga started earlier in the same batch is flagged here,
    /// before it is written: the statement's parts all read the table as it was before
    /// the statement, so its UPDATE cannot see the rows its INSERT adds.
    pub fn cancel(&mut self, order_id: Uuid, reason: String, now: DateTime<Utc>) {
        if let Some(saga) = self.started.iter_mut().find(|s| s.order_id == order_id) {
            flag_cancelled(saga, &reason, now);
        }
        if !self.cancelled.iter().any(|(id, _)| *id == order_id) {
            self.cancelled.push((order_id, reason));
        }
    }

    /// How many workers to wake once the batch is written: one for each saga it may start
    /// or flag, at most (a saga started and flagged in the same batch counts twice; a
    /// cancellation may find no saga to flag).
    pub fn workers_to_wake(&self) -> usize {
        self.started.len() + self.cancelled.len()
    }
}

/// Flags a saga not yet written (or written but not yet driven) as cancelled, as
/// [`apply_batch`] flags a stored one that is running.
pub fn flag_cancelled(saga: &mut Saga, reason: &str, now: DateTime<Utc>) {
    if saga.state == SagaState::Running && !saga.cancel_requested {
        saga.cancel_requested = true;
        saga.cancel_reason = Some(reason.to_owned());
        saga.next_attempt_at = saga.next_attempt_at.min(now);
    }
}

/// Inserts sagas (unless one exists for the order: a replayed event), given as arrays in
/// parameters $1 to $19, the last two their leases; `{filter}` may add a WHERE clause. It
/// writes what a saga has from its start; what a saga records later (settling, reasons,
/// errors, a parked state) is written by saves.
const INSERT_SAGAS: &str = "INSERT INTO sagas (order_id, customer_id, lines, total_minor, currency, payment_method, state, \
       plan, steps, attempts, next_attempt_at, step_deadline, created_at, updated_at, trace_parent, cancel_requested, \
       cancel_reason, lease_owner, lease_until) \
     SELECT order_id, customer_id, lines, total_minor, currency, payment_method, state, string_to_array(plan, ','), \
       steps, attempts, next_attempt_at, step_deadline, created_at, updated_at, trace_parent, cancel_requested, \
       cancel_reason, lease_owner, lease_until \
     FROM unnest($1::uuid[], $2::uuid[], $3::jsonb[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[], \
       $9::jsonb[], $10::int[], $11::timestamptz[], $12::timestamptz[], $13::timestamptz[], $14::timestamptz[], \
       $15::text[], $16::bool[], $17::text[], $18::uuid[], $19::timestamptz[]) \
       AS s(order_id, customer_id, lines, total_minor, currency, payment_method, state, plan, steps, attempts, \
         next_attempt_at, step_deadline, created_at, updated_at, trace_parent, cancel_requested, cancel_reason, \
         lease_owner, lease_until) \
     {filter} \
     ON CONFLICT (order_id) DO NOTHING";

type Query<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds $1 to $19 of [`INSERT_SAGAS`].
fn bind_sagas<'q>(query: Query<'q>, sagas: &'q [Saga], handoff: Option<Handoff>) -> Query<'q> {
    fn each<'a, T>(sagas: &'a [Saga], f: impl Fn(&'a Saga) -> T) -> Vec<T> {
        sagas.iter().map(f).collect()
    }
    let lease = |i: usize| handoff.filter(|h| i < h.count);
    query
        .bind(each(sagas, |s| s.order_id))
        .bind(each(sagas, |s| s.customer_id))
        .bind(each(sagas, |s| sqlx::types::Json(&s.lines)))
        .bind(each(sagas, |s| s.total_minor))
        .bind(each(sagas, |s| s.currency.as_str()))
        .bind(each(sagas, |s| s.payment_method.as_str()))
        .bind(each(sagas, |s| s.state.as_str()))
        // A plan travels as one comma-joined text (`string_to_array` rebuilds it): a
        // PostgreSQL array of arrays must be rectangular, and `unnest` flattens it.
        .bind(each(sagas, |s| s.plan_names().join(",")))
        .bind(each(sagas, |s| sqlx::types::Json(&s.steps)))
        .bind(each(sagas, |s| {
            i32::try_from(s.attempts).unwrap_or(i32::MAX)
        }))
        .bind(each(sagas, |s| s.next_attempt_at))
        .bind(each(sagas, |s| s.step_deadline))
        .bind(each(sagas, |s| s.created_at))
        .bind(each(sagas, |s| s.updated_at))
        .bind(each(sagas, |s| s.trace_parent.as_deref()))
        .bind(each(sagas, |s| s.cancel_requested))
        .bind(each(sagas, |s| s.cancel_reason.as_deref()))
        .bind(
            (0..sagas.len())
                .map(|i| lease(i).map(|h| h.owner))
                .collect::<Vec<_>>(),
        )
        .bind(
            (0..sagas.len())
                .map(|i| lease(i).map(|h| h.until))
                .collect::<Vec<_>>(),
        )
}

/// Creates sagas, unless one exists for the order (a replayed event). The follower writes
/// its sagas with [`apply_batch`]; this is for a saga written outside it.
pub async fn insert(conn: &mut PgConnection, sagas: &[Saga]) -> Result<(), sqlx::Error> {
    let sql = INSERT_SAGAS.replace("{filter}", "");
    bind_sagas(sqlx::query(sqlx::AssertSqlSafe(sql)), sagas, None)
        .execute(conn)
        .await?;
    Ok(())
}

/// Applies one follower batch in one statement (so one transaction): moves the
/// follower's checkpoint from `from` to `to` with compare-and-set, starts the batch's
/// sagas (the first ones leased, if the batch hands some off), and flags the sagas of
/// orders cancelled, so that a running saga settles its step in flight and compensates, a
/// completed one gives back what it took, and a parked one does so once an operator
/// resumes it (the worker acts on the flag). Returns the sagas written with the batch's
/// lease (not those a replayed event found already there), or `None`, having written
/// nothing, when the checkpoint moved meanwhile (another follower). `conn` should plan
/// each call for its parameters (`service_runtime::database::CUSTOM_PLANS`, as
/// `follower::connect_options` sets).
pub async fn apply_batch(
    conn: &mut PgConnection,
    name: &str,
    from: Position,
    to: Position,
    applied: i64,
    batch: &FollowerBatch,
    now: DateTime<Utc>,
) -> Result<Option<Vec<Uuid>>, sqlx::Error> {
    let sql = format!(
        "WITH moved AS ( \
           UPDATE projection_checkpoints SET transaction_id = $23, global_position = $24, \
             events_applied = events_applied + $25, updated_at = now() \
           WHERE projection = $20 AND transaction_id = $21 AND global_position = $22 \
           RETURNING 1 \
         ), started AS ( \
           {insert} RETURNING order_id, lease_owner \
         ), flagged AS ( \
           UPDATE sagas SET cancel_requested = true, cancel_reason = c.reason, \
             next_attempt_at = least(sagas.next_attempt_at, $28) \
           FROM unnest($26::uuid[], $27::text[]) AS c(order_id, reason) \
           WHERE sagas.order_id = c.order_id AND EXISTS (SELECT 1 FROM moved) \
             AND sagas.state IN ('running', 'completed', 'needs_attention') AND NOT sagas.cancel_requested \
         ) \
         SELECT (SELECT count(*) FROM moved), \
           ARRAY(SELECT order_id FROM started WHERE lease_owner IS NOT NULL)",
        insert = INSERT_SAGAS.replace("{filter}", "WHERE EXISTS (SELECT 1 FROM moved)"),
    );
    // Flagged in order id order, as the workers' saves are written (see `save_and_check`),
    // so that the two cannot deadlock.
    let mut cancelled: Vec<&(Uuid, String)> = batch.cancelled.iter().collect();
    cancelled.sort_unstable_by_key(|c| c.0);
    let row = bind_sagas(
        sqlx::query(sqlx::AssertSqlSafe(sql)),
        &batch.started,
        batch.handoff,
    )
    .bind(name)
    .bind(from.to_columns().0)
    .bind(from.to_columns().1)
    .bind(to.to_columns().0)
    .bind(to.to_columns().1)
    .bind(applied)
    .bind(cancelled.iter().map(|c| c.0).collect::<Vec<_>>())
    .bind(cancelled.iter().map(|c| c.1.as_str()).collect::<Vec<_>>())
    .bind(now)
    // Planned for its parameters on each call: the follower's connection sets
    // `plan_cache_mode` (`follower::connect_options`), as a generic plan cached while the
    // table was empty would scan every saga to flag one cancelled order.
    .fetch_one(conn)
    .await?;
    let moved: i64 = row.try_get(0)?;
    (moved == 1).then(|| row.try_get(1)).transpose()
}

/// Gives up `owner`'s lease on sagas it was handed but never drove (at shutdown, or when
/// the follower cannot tell whether its batch was written), so that any instance may
/// claim them at once.
pub async fn release(pool: &PgPool, order_ids: &[Uuid], owner: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE sagas SET lease_owner = NULL, lease_until = NULL \
         WHERE order_id = ANY($1) AND lease_owner = $2",
    )
    .bind(order_ids)
    .bind(owner)
    .execute(pool)
    .await?;
    Ok(())
}

/// Takes the lease of one due saga that nobody holds, for `lease` from `now`, other than
/// those in `skip` (the sagas the caller's instance drives now, whose leases may have run
/// out while a step stalled).
pub async fn claim(
    pool: &PgPool,
    owner: Uuid,
    skip: &[Uuid],
    now: DateTime<Utc>,
    lease: chrono::Duration,
) -> Result<Option<Saga>, sqlx::Error> {
    let sql = format!(
        "UPDATE sagas SET lease_owner = $1, lease_until = $3 \
         WHERE order_id = ( \
           SELECT order_id FROM sagas \
           WHERE (state IN ('running', 'compensating') OR (state = 'completed' AND cancel_requested)) \
             AND next_attempt_at <= $2 \
             AND (lease_until IS NULL OR lease_until < $2) \
             AND order_id <> ALL($4) \
           ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED) \
         RETURNING {COLUMNS}"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(owner)
        .bind(now)
        .bind(now + lease)
        .bind(skip)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// What a save or a check of a leased saga finds: the stored cancellation request (set
/// meanwhile by the follower), or `None` when the lease was lost.
pub type Stored = Option<(bool, Option<String>)>;

/// A leased saga's row as [`save_and_check`] writes it back, its columns ready to bind.
#[derive(Debug, Clone)]
pub struct SagaSave {
    order_id: Uuid,
    state: &'static str,
    parked_from: Option<&'static str>,
    /// The plan's step names joined by commas (step names are `[a-z_]+`).
    plan: String,
    /// The steps' JSON text.
    steps: String,
    attempts: i32,
    next_attempt_at: DateTime<Utc>,
    step_deadline: Option<DateTime<Utc>>,
    reason: Option<String>,
    last_error: Option<String>,
    updated_at: DateTime<Utc>,
    keep_lease: bool,
    settling: Option<&'static str>,
}

impl SagaSave {
    /// The row of `saga`; `keep_lease` says whether the worker goes on with it.
    pub fn new(saga: &Saga, keep_lease: bool) -> Self {
        Self {
            order_id: saga.order_id,
            state: saga.state.as_str(),
            parked_from: saga.parked_from.map(SagaState::as_str),
            plan: saga.plan_names().join(","),
            // A Vec of plain records always serialises.
            steps: serde_json::to_string(&saga.steps).unwrap_or_else(|_| "[]".into()),
            attempts: i32::try_from(saga.attempts).unwrap_or(i32::MAX),
            next_attempt_at: saga.next_attempt_at,
            step_deadline: saga.step_deadline,
            reason: saga.reason.clone(),
            last_error: saga.last_error.clone(),
            updated_at: saga.updated_at,
            keep_lease,
            settling: saga.settling.map(Settling::as_str),
        }
    }

    /// The saga the row belongs to.
    pub fn order_id(&self) -> Uuid {
        self.order_id
    }
}

/// Writes back the `saves` whose lease `owner` still holds, and reads the stored
/// cancellation request of the `checks` it still holds, in one statement. Returns, for each
/// saga saved (`true`) or checked (`false`) whose lease is held, its stored cancellation
/// request; a saga missing from the answer has lost its lease.
///
/// The rows are updated in the order of `saves`: callers sort them by order id, as the
/// follower's cancellation flags are, so that two statements cannot deadlock. `conn`
/// should plan each call for its parameters (`service_runtime::database::CUSTOM_PLANS`,
/// as `leased::own_connection` sets).
pub async fn save_and_check(
    conn: &mut PgConnection,
    owner: Uuid,
    saves: &[SagaSave],
    checks: &[Uuid],
) -> Result<Vec<(bool, Uuid, bool, Option<String>)>, sqlx::Error> {
    sqlx::query_as(
        "WITH saved AS ( \
           UPDATE sagas s SET state = u.state, parked_from = u.parked_from, \
             plan = string_to_array(u.plan, ','), steps = u.steps::jsonb, attempts = u.attempts, \
             next_attempt_at = u.next_attempt_at, step_deadline = u.step_deadline, reason = u.reason, \
             last_error = u.last_error, updated_at = u.updated_at, settling = u.settling, \
             lease_owner = CASE WHEN u.keep THEN s.lease_owner END, \
             lease_until = CASE WHEN u.keep THEN s.lease_until END \
           FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[], \
                       $8::timestamptz[], $9::timestamptz[], $10::text[], $11::text[], $12::timestamptz[], \
                       $13::bool[], $14::text[]) \
             AS u(order_id, state, parked_from, plan, steps, attempts, next_attempt_at, step_deadline, \
                  reason, last_error, updated_at, keep, settling) \
           WHERE s.order_id = u.order_id AND s.lease_owner = $1 \
           RETURNING s.order_id, s.cancel_requested, s.cancel_reason \
         ) \
         SELECT true, order_id, cancel_requested, cancel_reason FROM saved \
         UNION ALL \
         SELECT false, order_id, cancel_requested, cancel_reason FROM sagas \
         WHERE order_id = ANY($15) AND lease_owner = $1",
    )
    .bind(owner)
    .bind(saves.iter().map(|s| s.order_id).collect::<Vec<_>>())
    .bind(saves.iter().map(|s| s.state).collect::<Vec<_>>())
    .bind(saves.iter().map(|s| s.parked_from).collect::<Vec<_>>())
    .bind(saves.iter().map(|s| s.plan.as_str()).collect::<Vec<_>>())
    .bind(saves.iter().map(|s| s.steps.as_str()).collect::<Vec<_>>())
    .bind(saves.iter().map(|s| s.attempts).collect::<Vec<_>>())
    .bind(saves.iter().map(|s| s.next_attempt_at).collect::<Vec<_>>())
    .bind(saves.iter().map(|s| s.step_deadline).collect::<Vec<_>>())
    .bind(saves.iter().map(|s| s.reason.as_deref()).collect::<Vec<_>>())
    .bind(saves.iter().map(|s| s.last_error.as_deref()).collect::<Vec<_>>())
    .bind(saves.iter().map(|s| s.updated_at).collect::<Vec<_>>())
    .bind(saves.iter().map(|s| s.keep_lease).collect::<Vec<_>>())
    .bind(saves.iter().map(|s| s.settling).collect::<Vec<_>>())
    .bind(checks)
    // Planned for the table as it is now on each call: `LeasedRows` sets `plan_cache_mode`
    // on its connection, as a plan kept from when the table was small (a new database)
    // scans it whole, for every batch, until the statistics are next refreshed.
    .fetch_all(conn)
    .await
}

/// Loads a saga for an operator's change, locking its row; `None` if missing.
pub async fn lock_for_admin(
    conn: &mut PgConnection,
    order_id: Uuid,
) -> Result<Option<(Saga, Option<DateTime<Utc>>)>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS}, lease_until FROM sagas WHERE order_id = $1 FOR UPDATE");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(order_id)
        .fetch_optional(conn)
        .await?;
    row.map(|r| Ok((from_row(&r)?, r.try_get("lease_until")?)))
        .transpose()
}

/// Writes an operator's change (the caller holds the row lock) and ends the saga's lease,
/// which had run out: a worker still driving it finds the lease lost at its next save or
/// check.
pub async fn save_admin(conn: &mut PgConnection, saga: &Saga) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE sagas SET state = $2, parked_from = $3, plan = $4, steps = $5, attempts = $6, next_attempt_at = $7, \
           step_deadline = $8, reason = $9, last_error = $10, updated_at = $11, cancel_requested = $12, \
           cancel_reason = $13, settling = $14, lease_owner = NULL, lease_until = NULL \
         WHERE order_id = $1",
    )
    .bind(saga.order_id)
    .bind(saga.state.as_str())
    .bind(saga.parked_from.map(|s| s.as_str()))
    .bind(saga.plan_names())
    .bind(sqlx::types::Json(&saga.steps))
    .bind(i32::try_from(saga.attempts).unwrap_or(i32::MAX))
    .bind(saga.next_attempt_at)
    .bind(saga.step_deadline)
    .bind(&saga.reason)
    .bind(&saga.last_error)
    .bind(saga.updated_at)
    .bind(saga.cancel_requested)
    .bind(&saga.cancel_reason)
    .bind(saga.settling.map(Settling::as_str))
    .execute(conn)
    .await?;
    Ok(())
}

/// One saga.
pub async fn get(pool: &PgPool, order_id: Uuid) -> Result<Option<Saga>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM sagas WHERE order_id = $1");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(order_id)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// A page of sagas, newest first.
pub async fn list(
    pool: &PgPool,
    state: Option<&str>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Saga>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM sagas \
         WHERE ($1::text IS NULL OR state = $1) \
           AND ($2::timestamptz IS NULL OR (created_at, order_id) < ($2, $3)) \
         ORDER BY created_at DESC, order_id DESC LIMIT $4"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(state)
        .bind(after.map(|a| a.0))
        .bind(after.map(|a| a.1))
        .bind(limit)
        .fetch_all(pool)
        .await?
        .iter()
        .map(from_row)
        .collect()
}

/// The follower's checkpoint, created at the start of the log if missing, with the event
/// types it reads (so its lag counts only those).
pub async fn checkpoint(
    conn: &mut PgConnection,
    name: &str,
    event_types: &[&str],
) -> Result<Position, sqlx::Error> {
    sqlx::query(
        "INSERT INTO projection_checkpoints (projection, transaction_id, global_position, event_types) \
         VALUES ($1, 0, 0, $2) \
         ON CONFLICT (projection) DO UPDATE SET event_types = excluded.event_types",
    )
    .bind(name)
    .bind(event_types)
    .execute(&mut *conn)
    .await?;
    let (tx, pos): (i64, i64) = sqlx::query_as(
        "SELECT transaction_id, global_position FROM projection_checkpoints WHERE projection = $1",
    )
    .bind(name)
    .fetch_one(conn)
    .await?;
    Position::from_columns(tx, pos).map_err(|err| sqlx::Error::Decode(err.into()))
}

/// How many sagas are in each state that is not final (running, compensating,
/// needs_attention), zeros included. Finished sagas are left out: there is one for every
/// order ever placed, so counting them would read a table that only grows, on every
/// sample.
pub async fn count_unfinished(pool: &PgPool) -> Result<Vec<(SagaState, i64)>, sqlx::Error> {
    let states: Vec<SagaState> = SagaState::ALL
        .into_iter()
        .filter(|s| !s.is_final())
        .collect();
    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM sagas WHERE state = ANY($1) GROUP BY state")
            .bind(states.iter().map(|s| s.as_str()).collect::<Vec<_>>())
            .fetch_all(pool)
            .await?;
    Ok(states
        .into_iter()
        .map(|state| {
            let n = counts.iter().find(|(s, _)| s == state.as_str());
            (state, n.map_or(0, |(_, n)| *n))
        })
        .collect())
}

/// Takes the follower's leadership lock on this session, if free.
pub async fn try_lead(conn: &mut PgConnection, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('saga:' || $1))")
        .bind(name)
        .fetch_one(conn)
        .await
}
