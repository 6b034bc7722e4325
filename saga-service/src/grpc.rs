//! The `orders.v1.SagaService` admin API.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use contracts::orders::v1::{self as pb, saga_service_server::SagaService};
use service_runtime::{
    Clock,
    edge::{
        FieldViolations, database_status as db_error, decode_page_token, encode_page_token,
        split_page,
    },
};
use sqlx::{Connection, PgPool};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    db,
    saga::{Policy, Saga, SagaState},
    worker::Work,
};

/// Serves the admin API.
pub struct SagaApi {
    pool: PgPool,
    clock: Arc<dyn Clock>,
    policy: Policy,
    work: Arc<Work>,
}

impl SagaApi {
    /// The API over the saga table.
    pub fn new(pool: PgPool, clock: Arc<dyn Clock>, policy: Policy, work: Arc<Work>) -> Self {
        Self {
            pool,
            clock,
            policy,
            work,
        }
    }

    /// Applies an operator's change to a saga no worker is driving right now.
    async fn change(
        &self,
        order_id: Uuid,
        change: impl FnOnce(&mut Saga, DateTime<Utc>) -> Result<(), String>,
    ) -> Result<Saga, Status> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        let mut tx = conn.begin().await.map_err(db_error)?;
        let (mut saga, lease_until) = db::lock_for_admin(&mut tx, order_id)
            .await
            .map_err(db_error)?
            .ok_or_else(|| Status::not_found(format!("no saga for order {order_id}")))?;
        let now = self.clock.now();
        if lease_until.is_some_and(|until| until > now) {
            return Err(Status::aborted(
                "a worker is running a step of this saga right now; retry in a moment",
            ));
        }
        change(&mut saga, now).map_err(Status::failed_precondition)?;
        db::save_admin(&mut tx, &saga).await.map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        self.work.due(1);
        Ok(saga)
    }
}

fn order_id(field: &str, s: &str) -> Result<Uuid, Status> {
    let mut v = FieldViolations::new();
    let id = if s.is_empty() {
        v.add(field, "is required (a UUID)");
        None
    } else {
        v.check(
            field,
            Uuid::try_parse(s).map_err(|_| format!("{s:?} is not a UUID")),
        )
    };
    v.finish(|| id)
}

fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl From<&Saga> for pb::Saga {
    fn from(s: &Saga) -> Self {
        pb::Saga {
            order_id: s.order_id.to_string(),
            state: s.state.as_str().into(),
            current_step: s
                .plan_names()
                .into_iter()
                .next()
                .filter(|_| !matches!(s.state, SagaState::Completed | SagaState::Compensated))
                .unwrap_or_default(),
            remaining_steps: s.plan_names(),
            steps: s
                .steps
                .iter()
                .map(|r| pb::SagaStep {
                    name: r.name.as_str().into(),
                    status: r.status.as_str().into(),
                    attempts: i32::try_from(r.attempts).unwrap_or(i32::MAX),
                    started_at: timestamp(r.started_at),
                    finished_at: r.finished_at.map(timestamp).unwrap_or_default(),
                    last_error: r.last_error.clone().unwrap_or_default(),
                })
                .collect(),
            reason: s.reason.clone().unwrap_or_default(),
            last_error: s.last_error.clone().unwrap_or_default(),
            next_attempt_at: if matches!(s.state, SagaState::Running | SagaState::Compensating) {
                timestamp(s.next_attempt_at)
            } else {
                String::new()
            },
            settling: s
                .settling
                .map(|x| x.as_str().to_owned())
                .unwrap_or_default(),
            created_at: timestamp(s.created_at),
            updated_at: timestamp(s.updated_at),
        }
    }
}

fn encode_token(t: DateTime<Utc>, id: Uuid) -> String {
    encode_page_token(&format!("{}|{id}", t.timestamp_micros()))
}

fn decode_token(token: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let text = decode_page_token(token)?;
    let (micros, id) = text.split_once('|')?;
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        Uuid::try_parse(id).ok()?,
    ))
}

#[tonic::async_trait]
impl SagaService for SagaApi {
    async fn get_saga(
        &self,
        request: Request<pb::GetSagaRequest>,
    ) -> Result<Response<pb::GetSagaResponse>, Status> {
        let id = order_id("order_id", &request.get_ref().order_id)?;
        let saga = db::get(&self.pool, id)
            .await
            .map_err(db_error)?
            .ok_or_else(|| Status::not_found(format!("no saga for order {id}")))?;
        Ok(Response::new(pb::GetSagaResponse {
            saga: Some((&saga).into()),
        }))
    }

    async fn list_sagas(
        &self,
        request: Request<pb::ListSagasRequest>,
    ) -> Result<Response<pb::ListSagasResponse>, Status> {
        let r = request.into_inner();
        let mut v = FieldViolations::new();
        if !r.state.is_empty() && SagaState::parse(&r.state).is_none() {
            let names: Vec<&str> = SagaState::ALL.iter().map(|s| s.as_str()).collect();
            v.add("state", format!("must be one of {}", names.join(", ")));
        }
        let size = match r.page_size {
            0 => 50,
            n @ 1..=500 => i64::from(n),
            n => {
                v.add(
                    "page_size",
                    format!("must be 1 to 500 (or 0 for 50), got {n}"),
                );
                0
            }
        };
        let cursor = if r.page_token.is_empty() {
            None
        } else {
            let decoded = decode_token(&r.page_token);
            if decoded.is_none() {
                v.add("page_token", "is not a page token returned by this service");
            }
            decoded
        };
        if !v.is_empty() {
            return Err(v.into_status());
        }
        let state = (!r.state.is_empty()).then_some(r.state.as_str());
        let mut sagas = db::list(&self.pool, state, cursor, size + 1)
            .await
            .map_err(db_error)?;
        let next_page_token =
            split_page(&mut sagas, size, |s| encode_token(s.created_at, s.order_id));
        Ok(Response::new(pb::ListSagasResponse {
            sagas: sagas.iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    async fn retry_saga(
        &self,
        request: Request<pb::RetrySagaRequest>,
    ) -> Result<Response<pb::RetrySagaResponse>, Status> {
        let id = order_id("order_id", &request.get_ref().order_id)?;
        let policy = self.policy.clone();
        let saga = self
            .change(id, |saga, now| saga.retry(now, &policy))
            .await?;
        Ok(Response::new(pb::RetrySagaResponse {
            saga: Some((&saga).into()),
        }))
    }

    async fn abort_saga(
        &self,
        request: Request<pb::AbortSagaRequest>,
    ) -> Result<Response<pb::AbortSagaResponse>, Status> {
        let r = request.into_inner();
        let mut v = FieldViolations::new();
        let id = if r.order_id.is_empty() {
            v.add("order_id", "is required (a UUID)");
            None
        } else {
            v.check(
                "order_id",
                Uuid::try_parse(&r.order_id).map_err(|_| format!("{:?} is not a UUID", r.order_id)),
            )
        };
        let reason = v.check(
            "reason",
            domain_events::values::Text::parse(&r.reason, domain_events::stored::MAX_REASON_CHARS),
        );
        let (id, reason) = v.finish(|| Some((id?, reason?)))?;
        let policy = self.policy.clone();
        let saga = self
            .change(id, |saga, now| {
                saga.abort(format!("aborted by an operator: {reason}"), now, &policy)
            })
            .await?;
        Ok(Response::new(pb::AbortSagaResponse {
            saga: Some((&saga).into()),
        }))
    }
}
