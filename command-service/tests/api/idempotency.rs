//! Durable idempotency: a retried command is answered from the log, across restarts.

use contracts::orders::v1 as pb;
use sqlx::PgPool;
use tonic::Code;

use crate::helpers::*;

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_retry_returns_the_original_response_and_writes_nothing(pool: PgPool) {
    let app = spawn_app(&pool).await;
    let mut c = app.client.clone();
    create_product(&mut c, "SKU-1", 10).await;
    let request = pb::ReserveStockRequest {
        command_id: id(),
        order_id: id(),
        items: vec![pb::StockItem {
            sku: "SKU-1".into(),
            quantity: 3,
        }],
    };
    let first = c.reserve_stock(request.clone()).await.unwrap().into_inner();
    let events = app.event_count().await;
    // Something else changes the product in between; the retry must not see it.
    c.restock_product(pb::RestockProductRequest {
        command_id: id(),
        sku: "SKU-1".into(),
        quantity: 1,
    })
    .await
    .unwrap();
    let retry = c.reserve_stock(request.clone()).await.unwrap().into_inner();
    assert_eq!(retry, first);
    assert_eq!(
        app.event_count().await,
        events + 1,
        "only the restock was written"
    );

    // The same id with a different request is refused.
    let mut other = request.clone();
    other.items[0].quantity = 4;
    let (status, message) = code(c.reserve_stock(other).await);
    assert_eq!(status, Code::AlreadyExists);
    assert!(message.contains(&request.command_id), "{message}");

    // Across a restart: a new process answers from PostgreSQL, not from memory.
    app.running.stop().await.unwrap();
    let app = spawn_app(&pool).await;
    let mut c = app.client.clone();
    let after_restart = c.reserve_stock(request.clone()).await.unwrap().into_inner();
    assert_eq!(after_restart, first);
    let mut other = request.clone();
    other.order_id = id();
    assert_eq!(code(c.reserve_stock(other).await).0, Code::AlreadyExists);
    assert_eq!(app.event_count().await, events + 1);
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn concurrent_retries_of_one_command_write_once(pool: PgPool) {
    let app = spawn_app(&pool).await;
    let mut c = app.client.clone();
    create_product(&mut c, "SKU-1", 10).await;
    let request = pb::RestockProductRequest {
        command_id: id(),
        sku: "SKU-1".into(),
        quantity: 5,
    };
    let calls = (0..10).map(|_| {
        let mut c = app.client.clone();
        let request = request.clone();
        async move { c.restock_product(request).await.map(|r| r.into_inner()) }
    });
    let results = futures::future::join_all(calls).await;
    let first = results[0].as_ref().unwrap().clone();
    for result in results {
        assert_eq!(result.unwrap(), first);
    }
    assert_eq!(app.event_count().await, 2);
}
