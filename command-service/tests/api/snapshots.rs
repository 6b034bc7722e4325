//! Snapshots: loading from one gives the state a full replay gives; a broken one is ignored.

use command_service::domain::{Aggregate, Order};
use contracts::orders::v1 as pb;
use domain_events::StoredEvent;
use sqlx::PgPool;

use crate::helpers::*;

async fn add_lines(c: &mut Client, order_id: &str, range: std::ops::Range<usize>) {
    for i in range {
        create_product(c, &format!("SKU-{i}"), 1).await;
        c.add_order_line(pb::AddOrderLineRequest {
            command_id: id(),
            order_id: order_id.into(),
            line: Some(catalogue_line(&format!("SKU-{i}"), 1)),
            expected_version: None,
        })
        .await
        .unwrap();
    }
}

/// The order as of `up_to`, folded from its events alone.
async fn replay(pool: &PgPool, order_id: &str, up_to: i64) -> Order {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT event_type, payload::text FROM events WHERE aggregate_id = $1::uuid AND version <= $2 ORDER BY version",
    )
    .bind(order_id)
    .bind(up_to)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut order = Order::default();
    for (event_type, payload) in rows {
        order.apply(&StoredEvent::decode(&event_type, &payload).unwrap());
    }
    order
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_snapshot_gives_the_same_state_as_a_full_replay(pool: PgPool) {
    let app = spawn_app_with(&pool, 5).await;
    let mut c = app.client.clone();
    let order_id = create_order(&mut c, vec![]).await;
    add_lines(&mut c, &order_id, 0..11).await;

    // Snapshots are written in the background; wait for the one at version 10.
    let mut snapshot = None;
    for _ in 0..100 {
        snapshot = sqlx::query_as::<_, (i64, serde_json::Value)>(
            "SELECT version, state FROM snapshots WHERE aggregate_id = $1::uuid",
        )
        .bind(&order_id)
        .fetch_optional(&pool)
        .await
        .unwrap();
        if snapshot.as_ref().is_some_and(|(v, _)| *v == 10) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (version, state) = snapshot.expect("a snapshot was written");
    assert_eq!(version, 10);
    let snapshotted: Order = serde_json::from_value(state["state"].clone()).unwrap();
    assert_eq!(snapshotted, replay(&pool, &order_id, 10).await);

    // The service loads from the snapshot and still decides correctly: the 12th distinct
    // line is accepted, a duplicate of a line from before the snapshot is refused.
    add_lines(&mut c, &order_id, 11..12).await;
    let status = c
        .add_order_line(pb::AddOrderLineRequest {
            command_id: id(),
            order_id: order_id.clone(),
            line: Some(catalogue_line("SKU-3", 1)),
            expected_version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.message(), "the order already has a line for SKU-3");
    assert_eq!(replay(&pool, &order_id, i64::MAX).await.lines().len(), 12);
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_snapshot_that_does_not_decode_is_ignored(pool: PgPool) {
    let app = spawn_app_with(&pool, 5).await;
    let mut c = app.client.clone();
    let order_id = create_order(&mut c, vec![]).await;
    add_lines(&mut c, &order_id, 0..3).await;
    sqlx::query(
        "INSERT INTO snapshots (aggregate_id, aggregate_type, version, schema_version, state, taken_at) \
         VALUES ($1::uuid, 'Order', 3, 1, '{\"state\": {\"nonsense\": true}}', now()) \
         ON CONFLICT (aggregate_id) DO UPDATE SET state = excluded.state, version = 3",
    )
    .bind(&order_id)
    .execute(&pool)
    .await
    .unwrap();
    let placed = c
        .place_order(pb::PlaceOrderRequest {
            command_id: id(),
            order_id: order_id.clone(),
            payment_method: "card".into(),
            expected_version: Some(4),
        })
        .await
        .expect("the aggregate is rebuilt from its events")
        .into_inner();
    assert_eq!(placed.total, eur(3 * PRICE));
}
