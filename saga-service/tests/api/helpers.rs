//! Starting the whole system and waiting for sagas.

use std::time::Duration;

use contracts::orders::v1::{
    self as pb, command_service_client::CommandServiceClient,
    query_service_client::QueryServiceClient, saga_service_client::SagaServiceClient,
};
use saga_service::saga::{Policy, Saga, SagaLine};
use service_runtime::telemetry::LogFormat;
use sqlx::PgPool;
use test_support::Running;
use tokio::net::TcpListener;
use tonic::transport::Channel;

pub use test_support::builders::*;
pub type Queries = QueryServiceClient<Channel>;
pub type Sagas = SagaServiceClient<Channel>;

pub fn command_config(pool: &PgPool) -> command_service::Config {
    test_support::config("command-service", pool, &[])
}

pub fn saga_config(pool: &PgPool, command_addr: std::net::SocketAddr) -> saga_service::Config {
    saga_service::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: test_support::database_url(pool),
        command_service_url: format!("http://{command_addr}"),
        command_service_ca: None,
        command_service_client_cert: None,
        command_service_client_key: None,
        command_service_token: None,
        pool_size: 8,
        workers: 4,
        lease_ms: 1_000,
        reserve_deadline_ms: 10_000,
        authorize_deadline_ms: 10_000,
        confirm_deadline_ms: 10_000,
        backoff_base_ms: 20,
        backoff_max_ms: 200,
        max_compensation_attempts: 3,
        attempt_timeout_ms: 1_000,
        durable_saves: false,
        sequential_steps: false,
        failpoint: None,
        server: Default::default(),
        metrics_addr: service_runtime::metrics::MetricsAddr::OFF,
        log_format: LogFormat::Human,
    }
}

pub async fn start_command_service(pool: &PgPool) -> Running {
    let config = command_config(pool);
    Running::start(move |listener, shutdown| command_service::run(config, listener, shutdown)).await
}

/// Starts command-service on a given address (to bring it "back").
pub async fn start_command_service_at(pool: &PgPool, addr: std::net::SocketAddr) -> Running {
    let config = command_config(pool);
    let listener = TcpListener::bind(addr)
        .await
        .expect("the reserved port is free again");
    Running::start_on(listener, move |listener, shutdown| {
        command_service::run(config, listener, shutdown)
    })
    .await
}

pub async fn start_query_service(pool: &PgPool) -> Running {
    let config = query_config(pool);
    Running::start(move |listener, shutdown| query_service::run(config, listener, shutdown)).await
}

pub fn query_config(pool: &PgPool) -> query_service::Config {
    test_support::config::<query_service::Cli>("query-service", pool, &[]).config
}

pub async fn start_saga_service(config: saga_service::Config) -> Running {
    Running::start(move |listener, shutdown| saga_service::run(config, listener, shutdown)).await
}

/// The whole system.
pub struct System {
    pub command: Running,
    /// Kept so the service runs as long as the test.
    #[allow(dead_code)]
    pub query: Running,
    /// Kept so the service runs as long as the test.
    #[allow(dead_code)]
    pub saga: Running,
    pub commands: Commands,
    pub queries: Queries,
    pub sagas: Sagas,
}

pub async fn start(pool: &PgPool) -> System {
    start_with(pool, |_| {}).await
}

pub async fn start_with(pool: &PgPool, tune: impl FnOnce(&mut saga_service::Config)) -> System {
    service_runtime::telemetry::init_for_tests();
    let command = start_command_service(pool).await;
    let query = start_query_service(pool).await;
    let mut config = saga_config(pool, command.addr);
    tune(&mut config);
    let saga = start_saga_service(config).await;
    let commands = CommandServiceClient::new(command.channel().await);
    let queries = QueryServiceClient::new(query.channel().await);
    let sagas = SagaServiceClient::new(saga.channel().await);
    System {
        command,
        query,
        saga,
        commands,
        queries,
        sagas,
    }
}

/// An address nothing listens on (yet).
pub async fn free_addr() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Waits until the order's saga satisfies `done`, and returns it.
pub async fn wait_for_saga(
    s: &mut Sagas,
    order_id: &str,
    done: impl Fn(&pb::Saga) -> bool,
) -> pb::Saga {
    let mut last = None;
    for _ in 0..600 {
        if let Ok(r) = s
            .get_saga(pb::GetSagaRequest {
                order_id: order_id.into(),
            })
            .await
        {
            let saga = r.into_inner().saga.unwrap();
            if done(&saga) {
                return saga;
            }
            last = Some(saga);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the saga of {order_id} never got there; last seen: {last:#?}");
}

/// Waits for a final state.
pub async fn finished(s: &mut Sagas, order_id: &str) -> pb::Saga {
    wait_for_saga(s, order_id, |s| {
        matches!(s.state.as_str(), "completed" | "compensated")
    })
    .await
}

pub fn step_names(saga: &pb::Saga) -> Vec<(&str, &str)> {
    saga.steps
        .iter()
        .map(|s| (s.name.as_str(), s.status.as_str()))
        .collect()
}

/// How many events of a type the log holds for an order.
pub async fn count_events(pool: &PgPool, event_type: &str, order_id: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = $1 AND payload->>'order_id' = $2",
    )
    .bind(event_type)
    .bind(order_id)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Waits until `condition` holds (checked every 10 ms, for up to 5 s); fails with `what`.
pub async fn eventually<F: Future<Output = bool>>(what: &str, condition: impl Fn() -> F) {
    for _ in 0..500 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(condition().await, "{what}");
}

/// Waits until the log holds `n` events of a type for an order.
pub async fn wait_for_events(pool: &PgPool, event_type: &str, order_id: &str, n: i64) {
    for _ in 0..600 {
        if count_events(pool, event_type, order_id).await >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        count_events(pool, event_type, order_id).await,
        n,
        "{event_type} of {order_id}"
    );
}

/// The order as query-service shows it once it has caught up with the saga's last write.
pub async fn order_view(q: &mut Queries, pool: &PgPool, order_id: &str) -> pb::OrderView {
    let (tx, pos): (i64, i64) =
        sqlx::query_as("SELECT transaction_id::text::bigint, global_position FROM events ORDER BY transaction_id DESC, global_position DESC LIMIT 1")
            .fetch_one(pool)
            .await
            .unwrap();
    q.get_order(pb::GetOrderRequest {
        order_id: order_id.into(),
        consistency_token: format!("{tx}.{pos}"),
    })
    .await
    .expect("get order")
    .into_inner()
    .order
    .unwrap()
}

pub async fn product_view(q: &mut Queries, pool: &PgPool, sku: &str) -> pb::ProductView {
    let (tx, pos): (i64, i64) =
        sqlx::query_as("SELECT transaction_id::text::bigint, global_position FROM events ORDER BY transaction_id DESC, global_position DESC LIMIT 1")
            .fetch_one(pool)
            .await
            .unwrap();
    q.get_product(pb::GetProductRequest {
        sku: sku.into(),
        consistency_token: format!("{tx}.{pos}"),
    })
    .await
    .expect("get product")
    .into_inner()
    .product
    .unwrap()
}

/// A saga policy with the test configuration's timings.
pub fn policy() -> Policy {
    Policy {
        reserve_deadline: Duration::from_secs(10),
        authorize_deadline: Duration::from_secs(10),
        confirm_deadline: Duration::from_secs(10),
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        max_compensation_attempts: 3,
        attempt_timeout: Duration::from_secs(1),
        sequential: false,
    }
}

/// A saga just started for an order of one SKU-1, written by no one yet.
pub fn saga(order_id: uuid::Uuid) -> Saga {
    Saga::start(
        order_id,
        uuid::Uuid::new_v4(),
        vec![SagaLine {
            sku: "SKU-1".into(),
            quantity: 1,
        }],
        PRICE,
        "EUR".into(),
        "card".into(),
        chrono::Utc::now(),
        &policy(),
    )
}

/// Rows of `sagas` the server has read so far, by any scan, once `conn`'s counters are
/// flushed (the flush applies to the calling backend only; `conn` runs the statements
/// being measured, the pool's connections read a row or none).
pub async fn saga_rows_read(pool: &PgPool, conn: &mut sqlx::PgConnection) -> i64 {
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT (coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0))::bigint \
         FROM pg_stat_user_tables WHERE relname = 'sagas'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Adds `n` completed sagas nobody leases (one statement; `db::insert` writes one a time).
pub async fn grow_sagas(pool: &PgPool, n: i32) {
    sqlx::query(
        "INSERT INTO sagas (order_id, customer_id, lines, total_minor, currency, payment_method, \
           state, plan, steps, next_attempt_at, created_at, updated_at) \
         SELECT gen_random_uuid(), gen_random_uuid(), '[]', 100, 'EUR', 'card', 'completed', \
           '{}', '[]', now(), now(), now() FROM generate_series(1, $1)",
    )
    .bind(n)
    .execute(pool)
    .await
    .unwrap();
}
