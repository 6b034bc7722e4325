//! Starting command-service and query-service against one fresh database.

use command_service::Config as CommandConfig;
use contracts::orders::v1::{
    self as pb, command_service_client::CommandServiceClient,
    query_service_client::QueryServiceClient,
};
use query_service::Config as QueryConfig;
use sqlx::PgPool;
use test_support::Running;
use tonic::transport::Channel;
use uuid::Uuid;

pub use test_support::builders::*;
pub type Queries = QueryServiceClient<Channel>;

/// Both services, and clients for them.
pub struct TestSystem {
    /// Kept so command-service runs as long as the test.
    #[allow(dead_code)]
    pub command: Running,
    pub query: Running,
    pub commands: Commands,
    pub queries: Queries,
}

pub async fn start_command_service(pool: &PgPool) -> Running {
    let config: CommandConfig = test_support::config("command-service", pool, &[]);
    Running::start(move |listener, shutdown| command_service::run(config, listener, shutdown)).await
}

pub async fn start_query_service(pool: &PgPool) -> Running {
    let config: QueryConfig =
        test_support::config::<query_service::Cli>("query-service", pool, &[]).config;
    Running::start(move |listener, shutdown| query_service::run(config, listener, shutdown)).await
}

pub async fn start(pool: &PgPool) -> TestSystem {
    service_runtime::telemetry::init_for_tests();
    let command = start_command_service(pool).await;
    let query = start_query_service(pool).await;
    let commands = CommandServiceClient::new(command.channel().await);
    let queries = QueryServiceClient::new(query.channel().await);
    TestSystem {
        command,
        query,
        commands,
        queries,
    }
}

/// Reads an order, waiting for `token`.
pub async fn get_order(q: &mut Queries, order_id: &str, token: &str) -> pb::OrderView {
    q.get_order(pb::GetOrderRequest {
        order_id: order_id.into(),
        consistency_token: token.into(),
    })
    .await
    .expect("get order")
    .into_inner()
    .order
    .unwrap()
}

/// Waits until the projection has applied every event committed so far. (The status's
/// own head can trail the log while a transaction of a test running in parallel holds the
/// cluster-wide read horizon back, so compare with the newest stored event instead.)
pub async fn caught_up(q: &mut Queries, pool: &PgPool) -> pb::ProjectionStatus {
    let (tx, pos): (i64, i64) = sqlx::query_as(
        "SELECT transaction_id::text::bigint, global_position FROM events \
         ORDER BY transaction_id DESC, global_position DESC LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let newest = event_store::Position::from_columns(tx, pos).unwrap();
    for _ in 0..400 {
        let status = q
            .get_projection_status(pb::GetProjectionStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        if let Some(p) = status.projections.iter().find(|p| p.name == "read_models")
            && p.checkpoint
                .parse::<event_store::Position>()
                .is_ok_and(|c| c >= newest)
        {
            return p.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the projection never caught up");
}

/// The read model as the database holds it.
pub async fn stored_model(pool: &PgPool) -> query_service::model::ReadModel {
    use query_service::db::{self, LIVE};
    let mut conn = pool.acquire().await.unwrap();
    let order_ids: Vec<Uuid> = sqlx::query_scalar("SELECT order_id FROM read_orders")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    let skus: Vec<String> = sqlx::query_scalar("SELECT sku FROM read_products")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    let customer_ids: Vec<Uuid> = sqlx::query_scalar("SELECT customer_id FROM read_customers")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    let mut model = query_service::model::ReadModel::default();
    for o in db::load_orders(&mut conn, LIVE, &order_ids).await.unwrap() {
        model.orders.insert(o.order_id, o);
    }
    for p in db::load_products(&mut conn, LIVE, &skus).await.unwrap() {
        model.products.insert(p.sku.clone(), p);
    }
    for c in db::load_customers(&mut conn, LIVE, &customer_ids)
        .await
        .unwrap()
    {
        model.customers.insert(c.customer_id, c);
    }
    model
}

/// The read model as a fold of the whole event log.
pub async fn folded_model(pool: &PgPool) -> query_service::model::ReadModel {
    use event_store::{EventStore, Position, PostgresEventStore};
    let store = PostgresEventStore::new(pool.clone());
    let mut model = query_service::model::ReadModel::default();
    let mut after = Position::START;
    loop {
        let batch = store.read_all(after, 1000).await.unwrap();
        let Some(last) = batch.last() else { break };
        after = last.position;
        for e in &batch {
            let event =
                domain_events::StoredEvent::decode(&e.event_type, e.payload.as_str()).unwrap();
            model.apply(
                &event,
                query_service::model::EventInfo {
                    aggregate_id: e.aggregate_id.as_uuid(),
                    version: e.version.as_i64(),
                    occurred_at: e.timestamp,
                },
            );
        }
    }
    model
}

/// Asserts the stored read model equals the fold of the log, row by row.
#[track_caller]
pub fn assert_same_model(
    stored: &query_service::model::ReadModel,
    folded: &query_service::model::ReadModel,
) {
    assert_eq!(stored.orders.len(), folded.orders.len(), "order count");
    for (id, order) in &folded.orders {
        assert_eq!(stored.orders.get(id), Some(order), "order {id}");
    }
    assert_eq!(stored.products, folded.products, "products");
    assert_eq!(stored.customers, folded.customers, "customers");
}

/// A small deterministic random generator (SplitMix64), so a failing run can be replayed
/// from its printed seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
    }
}
