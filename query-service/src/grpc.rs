//! The `orders.v1.QueryService` implementation.

use std::{pin::Pin, sync::Arc, time::Duration};

use contracts::orders::v1::{self as pb, query_service_server::QueryService};
use event_store::{AggregateId, EventStore, Position, PostgresEventStore};
use service_runtime::edge::{database_status as db_error, split_page};
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use crate::{
    db,
    edge::{self, Fields},
    projection::ProjectionState,
    reads::OrderReads,
    status,
};

/// Serves the read API.
pub struct QueryApi {
    pool: PgPool,
    store: PostgresEventStore,
    state: Arc<ProjectionState>,
    reads: OrderReads,
    shutdown: watch::Receiver<bool>,
    max_watch_streams: usize,
}

impl QueryApi {
    /// The API over the read models.
    pub fn new(
        pool: PgPool,
        store: PostgresEventStore,
        state: Arc<ProjectionState>,
        shutdown: watch::Receiver<bool>,
        max_watch_streams: usize,
    ) -> Self {
        Self {
            reads: OrderReads::start(&pool),
            pool,
            store,
            state,
            shutdown,
            max_watch_streams,
        }
    }

    /// Waits until the read models include `token`, or fails once `wait` has passed.
    async fn reach(&self, token: Option<Position>, wait: Duration) -> Result<(), Status> {
        let Some(token) = token else {
            return Ok(());
        };
        if let Some(reason) = self.state.stopped() {
            return Err(Status::unavailable(format!(
                "the read models are stopped: {reason}"
            )));
        }
        let mut checkpoint = self.state.subscribe();
        let started = std::time::Instant::now();
        let reached = tokio::time::timeout(wait, checkpoint.wait_for(|p| *p >= token)).await;
        let result = if matches!(reached, Ok(Ok(_))) {
            "reached"
        } else {
            "timed_out"
        };
        metrics::counter!("query_consistency_waits_total", "result" => result).increment(1);
        metrics::histogram!("query_consistency_wait_seconds")
            .record(started.elapsed().as_secs_f64());
        match reached {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Status::unavailable(format!(
                "the read models have not reached consistency token {token} after {} ms; retry later",
                wait.as_millis()
            ))),
        }
    }
}

fn store_error(err: event_store::Error) -> Status {
    match err {
        event_store::Error::Unavailable(source) => db_error(source),
        other => {
            tracing::error!(error = ?other, "event store read failed");
            Status::internal("internal error")
        }
    }
}

/// An order's view: from memory on the projecting instance when it is there (see
/// [`crate::views`]), else from the table, in a query shared with the other reads asked
/// meanwhile (see [`crate::reads`]), and then kept in memory, on the leader.
async fn order_view(
    state: &ProjectionState,
    reads: &OrderReads,
    id: uuid::Uuid,
) -> Result<Option<Arc<crate::model::OrderView>>, Status> {
    let leader = state.is_leader();
    let views = state.views();
    if leader && let Some(order) = views.get(id) {
        return Ok(Some(order));
    }
    let epoch = views.epoch();
    let Some(order) = reads.get(id).await? else {
        return Ok(None);
    };
    if leader {
        views.add_read(epoch, order.clone());
    }
    Ok(Some(order))
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchOrderResponse, Status>> + Send>>;

/// One `WatchOrder` stream: sends a view for every version of the order, in order.
///
/// The task ends when the order is final, the client goes away (the receiver is dropped) or
/// the service shuts down; it holds no database connection between reads.
struct OrderWatch {
    reads: OrderReads,
    store: PostgresEventStore,
    state: Arc<ProjectionState>,
    order_id: uuid::Uuid,
    last: crate::model::OrderView,
    tx: mpsc::Sender<Result<pb::WatchOrderResponse, Status>>,
}

impl OrderWatch {
    async fn run(
        mut self,
        mut checkpoint: watch::Receiver<Position>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        if !self.send().await {
            return;
        }
        while !self.last.is_terminal() {
            tokio::select! {
                changed = checkpoint.changed() => if changed.is_err() { return },
                () = self.tx.closed() => return,
                _ = shutdown.wait_for(|s| *s) => return,
            }
            if let Err(status) = self.catch_up().await {
                let _ = self.tx.send(Err(status)).await;
                return;
            }
            if self.tx.is_closed() {
                return;
            }
        }
    }

    /// Sends one view per order event since the last view, then the stored row if it
    /// holds more (stock and payment statuses come from other streams).
    async fn catch_up(&mut self) -> Result<(), Status> {
        // On the projecting instance, the view in memory says whether the order moved, and
        // is the next view to send when it is at most one order version ahead.
        if self.state.is_leader()
            && let Some(view) = self.state.views().get(self.order_id)
        {
            if *view == self.last {
                return Ok(());
            }
            if view.version == self.last.version || view.version == self.last.version + 1 {
                self.last = view.as_ref().clone();
                self.send().await;
                return Ok(());
            }
        }
        let after = event_store::Version::from_i64(self.last.version).next();
        let events = self
            .store
            .get_events_for_aggregate(AggregateId::from_uuid(self.order_id), Some(after))
            .await
            .map_err(store_error)?;
        for recorded in events {
            let Ok(event) =
                domain_events::StoredEvent::decode(&recorded.event_type, recorded.payload.as_str())
            else {
                continue;
            };
            let mut model = crate::model::ReadModel::default();
            model.orders.insert(self.order_id, self.last.clone());
            model.apply(
                &event,
                crate::model::EventInfo {
                    aggregate_id: self.order_id,
                    version: recorded.version.as_i64(),
                    occurred_at: recorded.timestamp,
                },
            );
            if let Some(next) = model.orders.remove(&self.order_id) {
                self.last = next;
                if !self.send().await {
                    return Ok(());
                }
            }
        }
        // The row, in a query shared with the other watches and reads asked meanwhile.
        if let Some(row) = self.reads.get(self.order_id).await?
            && row.version == self.last.version
            && *row != self.last
        {
            self.last = row.as_ref().clone();
            self.send().await;
        }
        Ok(())
    }

    async fn send(&self) -> bool {
        let view = pb::WatchOrderResponse {
            order: Some((&self.last).into()),
        };
        self.tx.send(Ok(view)).await.is_ok()
    }
}

#[tonic::async_trait]
impl QueryService for QueryApi {
    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        let wait = edge::consistency_wait(request.metadata());
        let r = request.into_inner();
        let mut f = Fields::new();
        let id = f.uuid("order_id", &r.order_id);
        let token = f.token("consistency_token", &r.consistency_token);
        let (id, token) = f.finish(|| Some((id?, token?)))?;
        self.reach(token, wait).await?;
        let order = order_view(&self.state, &self.reads, id)
            .await?
            .ok_or_else(|| Status::not_found(format!("order {id} not found")))?;
        Ok(Response::new(pb::GetOrderResponse {
            order: Some(order.as_ref().into()),
        }))
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let wait = edge::consistency_wait(request.metadata());
        let r = request.into_inner();
        let mut f = Fields::new();
        let customer = f.optional_uuid("customer_id", &r.customer_id);
        let status = f.status("status", &r.status);
        let size = f.page_size("page_size", r.page_size);
        let cursor = f.order_cursor("page_token", &r.page_token);
        let token = f.token("consistency_token", &r.consistency_token);
        let (customer, status, size, cursor, token) =
            f.finish(|| Some((customer?, status?, size?, cursor?, token?)))?;
        self.reach(token, wait).await?;
        // One extra row says whether there is a next page.
        let mut orders = db::list_orders(&self.pool, customer, status, cursor, size + 1)
            .await
            .map_err(db_error)?;
        let next_page_token = split_page(&mut orders, size, edge::order_page_token);
        Ok(Response::new(pb::ListOrdersResponse {
            orders: orders.iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    async fn get_order_history(
        &self,
        request: Request<pb::GetOrderHistoryRequest>,
    ) -> Result<Response<pb::GetOrderHistoryResponse>, Status> {
        let wait = edge::consistency_wait(request.metadata());
        let r = request.into_inner();
        let mut f = Fields::new();
        let id = f.uuid("order_id", &r.order_id);
        let token = f.token("consistency_token", &r.consistency_token);
        let (id, token) = f.finish(|| Some((id?, token?)))?;
        self.reach(token, wait).await?;
        let events = self
            .store
            .get_events_for_aggregate(AggregateId::from_uuid(id), None)
            .await
            .map_err(store_error)?;
        if events
            .first()
            .is_none_or(|e| e.aggregate_type != domain_events::aggregate_type::ORDER)
        {
            return Err(Status::not_found(format!("order {id} not found")));
        }
        Ok(Response::new(pb::GetOrderHistoryResponse {
            events: events
                .iter()
                .map(|e| pb::HistoryEvent {
                    event_id: e.event_id.to_string(),
                    event_type: e.event_type.clone(),
                    version: e.version.get(),
                    occurred_at: edge::timestamp(e.timestamp),
                    payload_json: e.payload.to_string(),
                    metadata_json: serde_json::to_string(&e.metadata).unwrap_or_default(),
                    position: e.position.to_token(),
                })
                .collect(),
        }))
    }

    async fn get_product(
        &self,
        request: Request<pb::GetProductRequest>,
    ) -> Result<Response<pb::GetProductResponse>, Status> {
        let wait = edge::consistency_wait(request.metadata());
        let r = request.into_inner();
        let mut f = Fields::new();
        let sku = f.0.check("sku", domain_events::values::Sku::parse(&r.sku));
        let token = f.token("consistency_token", &r.consistency_token);
        let (sku, token) = f.finish(|| Some((sku?, token?)))?;
        self.reach(token, wait).await?;
        let product = db::get_product(&self.pool, sku.as_str())
            .await
            .map_err(db_error)?
            .ok_or_else(|| Status::not_found(format!("product {sku} not found")))?;
        Ok(Response::new(pb::GetProductResponse {
            product: Some((&product).into()),
        }))
    }

    async fn list_products(
        &self,
        request: Request<pb::ListProductsRequest>,
    ) -> Result<Response<pb::ListProductsResponse>, Status> {
        let wait = edge::consistency_wait(request.metadata());
        let r = request.into_inner();
        let mut f = Fields::new();
        let size = f.page_size("page_size", r.page_size);
        let cursor = f.product_cursor("page_token", &r.page_token);
        let token = f.token("consistency_token", &r.consistency_token);
        let (size, cursor, token) = f.finish(|| Some((size?, cursor?, token?)))?;
        self.reach(token, wait).await?;
        let mut products = db::list_products(&self.pool, cursor.as_deref(), size + 1)
            .await
            .map_err(db_error)?;
        let next_page_token = split_page(&mut products, size, edge::product_page_token);
        Ok(Response::new(pb::ListProductsResponse {
            products: products.iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    async fn get_customer_summary(
        &self,
        request: Request<pb::GetCustomerSummaryRequest>,
    ) -> Result<Response<pb::GetCustomerSummaryResponse>, Status> {
        let wait = edge::consistency_wait(request.metadata());
        let r = request.into_inner();
        let mut f = Fields::new();
        let id = f.uuid("customer_id", &r.customer_id);
        let token = f.token("consistency_token", &r.consistency_token);
        let (id, token) = f.finish(|| Some((id?, token?)))?;
        self.reach(token, wait).await?;
        let customer = db::get_customer(&self.pool, id)
            .await
            .map_err(db_error)?
            .ok_or_else(|| Status::not_found(format!("customer {id} has no orders")))?;
        Ok(Response::new(pb::GetCustomerSummaryResponse {
            customer_id: customer.customer_id.to_string(),
            order_count: customer.order_count,
            confirmed_count: customer.confirmed_count,
            total_spent: customer
                .spent
                .iter()
                .map(|(currency, amount)| pb::Money {
                    amount_minor: *amount,
                    currency: currency.clone(),
                })
                .collect(),
            last_order_id: customer
                .last_order_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
            last_order_at: customer
                .last_order_at
                .map(edge::timestamp)
                .unwrap_or_default(),
        }))
    }

    type WatchOrderStream = WatchStream;

    async fn watch_order(
        &self,
        request: Request<pb::WatchOrderRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let wait = edge::consistency_wait(request.metadata());
        let r = request.into_inner();
        let mut f = Fields::new();
        let id = f.uuid("order_id", &r.order_id);
        let token = f.token("consistency_token", &r.consistency_token);
        let (id, token) = f.finish(|| Some((id?, token?)))?;
        // Counted from here, so streams still starting count against the cap too.
        let guard = self.state.watcher(self.max_watch_streams).ok_or_else(|| {
            Status::resource_exhausted(format!(
                "{} WatchOrder streams are open, the most this instance serves; retry later",
                self.max_watch_streams
            ))
        })?;
        self.reach(token, wait).await?;
        // Subscribed before the first view is read: a batch applied in between wakes the
        // stream, which otherwise would wait for the next one (forever, if the order's last
        // event was in it and nothing else is appended).
        let checkpoint = self.state.subscribe();
        let first = order_view(&self.state, &self.reads, id)
            .await?
            .ok_or_else(|| Status::not_found(format!("order {id} not found")))?;

        let (tx, rx) = mpsc::channel(16);
        let watch = OrderWatch {
            reads: self.reads.clone(),
            store: self.store.clone(),
            state: self.state.clone(),
            order_id: id,
            last: first.as_ref().clone(),
            tx,
        };
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let _guard = guard;
            watch.run(checkpoint, shutdown).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_projection_status(
        &self,
        _request: Request<pb::GetProjectionStatusRequest>,
    ) -> Result<Response<pb::GetProjectionStatusResponse>, Status> {
        let projections = status::projections(&self.pool, &self.store)
            .await
            .map_err(|err| match err {
                status::StatusError::Store(err) => store_error(err),
                status::StatusError::Database(err) => db_error(err),
            })?;
        Ok(Response::new(pb::GetProjectionStatusResponse {
            projections,
            leader: self.state.is_leader(),
            active_watchers: i64::try_from(self.state.watchers()).unwrap_or(i64::MAX),
        }))
    }
}
