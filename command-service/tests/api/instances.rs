//! Two instances on one database. Each caches the aggregates it wrote last; what the other
//! instance wrote since must never be overlooked: not in a write, a refusal or a no-op.

use contracts::orders::v1 as pb;
use sqlx::PgPool;
use tonic::Code;

use crate::helpers::*;

fn reserve(order_id: &str, sku: &str, quantity: i32) -> pb::ReserveStockRequest {
    pb::ReserveStockRequest {
        command_id: id(),
        order_id: order_id.into(),
        items: vec![pb::StockItem {
            sku: sku.into(),
            quantity,
        }],
    }
}

async fn events_of(pool: &PgPool, event_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A refusal decided from a stale cache is decided again from the store.
#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_refusal_is_never_decided_from_a_stale_cache(pool: PgPool) {
    let (a, b) = (spawn_app(&pool).await, spawn_app(&pool).await);
    let (mut a, mut b) = (a.client.clone(), b.client.clone());
    create_product(&mut a, "SKU-1", 0).await; // a caches "no stock"
    b.restock_product(pb::RestockProductRequest {
        command_id: id(),
        sku: "SKU-1".into(),
        quantity: 5,
    })
    .await
    .unwrap();
    let order_id = place_order(&mut b, &[("SKU-1", 3)], "card").await;
    let reserved = a
        .reserve_stock(reserve(&order_id, "SKU-1", 3))
        .await
        .expect("the restock on the other instance is seen")
        .into_inner();
    assert_eq!(reserved.products[0].version, 3);
}

/// A write decided from a stale cache fails its version check and is decided again.
#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_write_from_a_stale_cache_is_decided_again(pool: PgPool) {
    let (a, b) = (spawn_app(&pool).await, spawn_app(&pool).await);
    let (mut a, mut b) = (a.client.clone(), b.client.clone());
    create_product(&mut b, "SKU-1", 1).await;
    let order_id = create_order(&mut a, vec![]).await; // a caches the draft
    b.cancel_order(pb::CancelOrderRequest {
        command_id: id(),
        order_id: order_id.clone(),
        reason: "changed my mind".into(),
    })
    .await
    .unwrap();
    let status = a
        .add_order_line(pb::AddOrderLineRequest {
            command_id: id(),
            order_id: order_id.clone(),
            line: Some(catalogue_line("SKU-1", 1)),
            expected_version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(events_of(&pool, "OrderLineAdded").await, 0);
}

/// A no-op decided from a stale cache is decided again: the release the other instance's
/// reservation calls for happens.
#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_no_op_is_never_decided_from_a_stale_cache(pool: PgPool) {
    let (a, b) = (spawn_app(&pool).await, spawn_app(&pool).await);
    let (mut a, mut b) = (a.client.clone(), b.client.clone());
    create_product(&mut a, "SKU-1", 5).await; // a caches "nothing reserved"
    let order_id = place_order(&mut b, &[("SKU-1", 2)], "card").await;
    b.reserve_stock(reserve(&order_id, "SKU-1", 2))
        .await
        .unwrap();
    let released = a
        .release_stock(pb::ReleaseStockRequest {
            command_id: id(),
            order_id: order_id.clone(),
            skus: vec!["SKU-1".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(released.products[0].version, 3);
    assert_eq!(events_of(&pool, "StockReleased").await, 1);
    // Now a knows the reservation is gone: releasing again is a no-op that writes nothing.
    let again = a
        .release_stock(pb::ReleaseStockRequest {
            command_id: id(),
            order_id,
            skus: vec!["SKU-1".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.products[0].version, 3);
    assert_eq!(events_of(&pool, "StockReleased").await, 1);
}
