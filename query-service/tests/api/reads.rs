//! GetOrder reads of the table (orders not in the leader's memory) share one query while
//! another is in flight, and every caller still gets its own order.

use std::time::{Duration, Instant};

use contracts::orders::v1 as pb;
use sqlx::{Connection, PgPool};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::*;

/// Writes `n` orders straight into the read model, as a rebuild or an earlier instance
/// would have left them: the running leader has never seen them, so GetOrder reads them
/// from the table. Customer i's order is the i-th.
async fn seed(pool: &PgPool, n: usize) -> Vec<(String, String)> {
    let mut orders = Vec::new();
    for _ in 0..n {
        let (order, customer) = (Uuid::new_v4(), Uuid::new_v4());
        sqlx::query(
            "INSERT INTO read_orders (order_id, customer_id, status, currency, lines, total_minor, \
               stock_status, payment_status, created_at, updated_at, version) \
             VALUES ($1, $2, 'confirmed', 'EUR', '[]', 100, 'reserved', 'authorized', now(), now(), 3)",
        )
        .bind(order)
        .bind(customer)
        .execute(pool)
        .await
        .unwrap();
        orders.push((order.to_string(), customer.to_string()));
    }
    orders
}

/// The order reads this test's query-service has sent that are waiting for a lock (they
/// go over a connection of their own, named for them).
async fn blocked_reads(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'query-service order reads' \
           AND query LIKE '%FROM read_orders WHERE order_id = %' AND wait_event_type = 'Lock'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn read(mut q: Queries, order_id: String) -> Result<pb::OrderView, tonic::Status> {
    q.get_order(pb::GetOrderRequest {
        order_id,
        consistency_token: String::new(),
    })
    .await
    .map(|r| r.into_inner().order.expect("an order"))
}

/// Queries that carried more than 16 reads, by the service's metric. The recorder is the
/// process's, so another test's reads may add to it, never take from it.
fn queries_of_more_than_16_reads() -> f64 {
    let text = service_runtime::metrics::recorder().render();
    let bucket =
        |le: &str| test_support::metric_value(&text, "query_order_reads_per_query_bucket", &[le]);
    bucket("le=\"+Inf\"") - bucket("le=\"16\"")
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn concurrent_reads_of_the_table_each_get_their_own_order(pool: PgPool) {
    let sys = start(&pool).await;
    let orders = seed(&pool, 200).await;
    let mut reads = tokio::task::JoinSet::new();
    for (i, (order, _)) in orders.iter().enumerate() {
        let asked = read(sys.queries.clone(), order.clone());
        reads.spawn(async move { (i, asked.await) });
        // An order with no row, asked in the same breath: NOT_FOUND, and only for it.
        if i % 10 == 0 {
            let missing = read(sys.queries.clone(), Uuid::new_v4().to_string());
            reads.spawn(async move { (usize::MAX, missing.await) });
        }
    }
    let mut answered = 0;
    while let Some(joined) = reads.join_next().await {
        let (i, result) = joined.unwrap();
        if i == usize::MAX {
            assert_eq!(result.unwrap_err().code(), Code::NotFound);
            continue;
        }
        let view = result.expect("a seeded order is found");
        assert_eq!(
            (view.order_id, view.customer_id),
            orders[i].clone(),
            "each caller gets the order it asked for"
        );
        answered += 1;
    }
    assert_eq!(answered, orders.len());
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn reads_asked_while_the_database_stalls_wait_for_one_query_and_recover(pool: PgPool) {
    let sys = start(&pool).await;
    let orders = seed(&pool, 30).await;
    // A row no view can be made of (its lines are not lines): it fails alone.
    let broken = seed(&pool, 1).await.remove(0).0;
    sqlx::query("UPDATE read_orders SET lines = '[{\"no\": \"line\"}]' WHERE order_id = $1::uuid")
        .bind(&broken)
        .execute(&pool)
        .await
        .unwrap();

    // The database stalls: a lock no read can pass until the test lets go.
    let mut blocker = sqlx::PgConnection::connect_with(&pool.connect_options())
        .await
        .unwrap();
    let mut stall = blocker.begin().await.unwrap();
    sqlx::query("LOCK TABLE read_orders IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *stall)
        .await
        .unwrap();

    // The first read goes out at once and waits on the lock.
    let first = tokio::spawn(read(sys.queries.clone(), orders[0].0.clone()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while blocked_reads(&pool).await < 1 {
        assert!(
            Instant::now() < deadline,
            "the first read never reached the database"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A caller whose deadline passes during the stall gets its error on time.
    let mut impatient = tonic::Request::new(pb::GetOrderRequest {
        order_id: orders[1].0.clone(),
        consistency_token: String::new(),
    });
    impatient.set_timeout(Duration::from_millis(200));
    let started = Instant::now();
    let status = sys.queries.clone().get_order(impatient).await.unwrap_err();
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    // The rest gather behind the one query in flight: none is sent while it waits.
    let rest: Vec<_> = orders[2..]
        .iter()
        .map(|(order, _)| tokio::spawn(read(sys.queries.clone(), order.clone())))
        .collect();
    let broken_read = tokio::spawn(read(sys.queries.clone(), broken));
    for _ in 0..20 {
        assert_eq!(
            blocked_reads(&pool).await,
            1,
            "one query in flight at a time; the others wait to share the next"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The stall ends: every read still waiting is answered with its own order, by one
    // query carrying them all (29 reads), and the broken row fails only its own read.
    let shared_before = queries_of_more_than_16_reads();
    stall.rollback().await.unwrap();
    let view = first.await.unwrap().expect("the first read is answered");
    assert_eq!(view.order_id, orders[0].0);
    for (read, (order, customer)) in rest.into_iter().zip(&orders[2..]) {
        let view = tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("answered once the database is back")
            .unwrap()
            .expect("found");
        assert_eq!((&view.order_id, &view.customer_id), (order, customer));
    }
    let status = broken_read.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(
        queries_of_more_than_16_reads() > shared_before,
        "the reads that waited left in one query"
    );
    // And the one that gave up can be asked again.
    let view = read(sys.queries.clone(), orders[1].0.clone())
        .await
        .unwrap();
    assert_eq!(view.order_id, orders[1].0);
}
