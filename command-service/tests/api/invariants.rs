//! Invariants under concurrency: no lost line, no negative stock.

use contracts::orders::v1 as pb;
use sqlx::PgPool;
use tonic::Code;

use crate::helpers::*;

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn twenty_concurrent_lines_are_each_stored_once(pool: PgPool) {
    let app = spawn_app(&pool).await;
    let mut c = app.client.clone();
    for i in 0..20 {
        create_product(&mut c, &format!("SKU-{i}"), 1).await;
    }
    let order_id = create_order(&mut c, vec![]).await;
    let calls = (0..20).map(|i| {
        let mut c = app.client.clone();
        let order_id = order_id.clone();
        async move {
            c.add_order_line(pb::AddOrderLineRequest {
                command_id: id(),
                order_id,
                line: Some(catalogue_line(&format!("SKU-{i}"), 1)),
                expected_version: None,
            })
            .await
        }
    });
    let results = futures::future::join_all(calls).await;
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "every add must succeed after retries: {failed:?}"
    );

    let rows: Vec<(i64, serde_json::Value)> = sqlx::query_as(
        "SELECT version, payload FROM events WHERE aggregate_id = $1::uuid ORDER BY version",
    )
    .bind(&order_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    let versions: Vec<i64> = rows.iter().map(|(v, _)| *v).collect();
    assert_eq!(
        versions,
        (1..=21).collect::<Vec<_>>(),
        "versions are contiguous"
    );
    let mut skus: Vec<String> = rows[1..]
        .iter()
        .map(|(_, p)| p["line"]["sku"].as_str().unwrap().to_owned())
        .collect();
    skus.sort();
    skus.dedup();
    assert_eq!(skus.len(), 20, "each line stored exactly once");
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn concurrent_reservations_never_oversell(pool: PgPool) {
    let app = spawn_app(&pool).await;
    let mut c = app.client.clone();
    create_product(&mut c, "SKU-1", 100).await;
    let mut orders = Vec::new();
    for _ in 0..52 {
        orders.push(place_order(&mut c, &[("SKU-1", 3)], "card").await);
    }
    let calls = orders[..50].iter().cloned().map(|order_id| {
        let mut c = app.client.clone();
        async move {
            c.reserve_stock(pb::ReserveStockRequest {
                command_id: id(),
                order_id,
                items: vec![pb::StockItem {
                    sku: "SKU-1".into(),
                    quantity: 3,
                }],
            })
            .await
        }
    });
    let results = futures::future::join_all(calls).await;
    let mut reserved = 0;
    for result in &results {
        match result {
            Ok(_) => reserved += 3,
            Err(status) => assert!(
                matches!(status.code(), Code::FailedPrecondition | Code::Aborted),
                "unexpected {status:?}"
            ),
        }
    }
    assert!(reserved <= 100, "reserved {reserved} of 100");

    // The stored events agree: reservations add up to what the clients were told.
    let stored: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum((payload->>'quantity')::bigint), 0)::bigint FROM events WHERE event_type = 'StockReserved'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(stored, reserved);
    // Once the rush is over the remaining stock is still reservable, exactly.
    let left = 100 - reserved;
    if left >= 1 {
        c.reserve_stock(pb::ReserveStockRequest {
            command_id: id(),
            order_id: orders[50].clone(),
            items: vec![pb::StockItem {
                sku: "SKU-1".into(),
                quantity: i32::try_from(left).unwrap(),
            }],
        })
        .await
        .expect("the rest of the stock");
    }
    let status = c
        .reserve_stock(pb::ReserveStockRequest {
            command_id: id(),
            order_id: orders[51].clone(),
            items: vec![pb::StockItem {
                sku: "SKU-1".into(),
                quantity: 1,
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.message(),
        "out of stock: SKU-1 (requested 1, available 0)"
    );
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_reservation_across_products_is_all_or_nothing(pool: PgPool) {
    let app = spawn_app(&pool).await;
    let mut c = app.client.clone();
    create_product(&mut c, "PLENTY-1", 100).await;
    create_product(&mut c, "SCARCE-2", 1).await;
    let order_id = place_order(&mut c, &[("PLENTY-1", 5), ("SCARCE-2", 2)], "card").await;
    let before = app.event_count().await;
    let status = c
        .reserve_stock(pb::ReserveStockRequest {
            command_id: id(),
            order_id,
            items: vec![
                pb::StockItem {
                    sku: "PLENTY-1".into(),
                    quantity: 5,
                },
                pb::StockItem {
                    sku: "SCARCE-2".into(),
                    quantity: 2,
                },
            ],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("SCARCE-2"),
        "{}",
        status.message()
    );
    assert_eq!(
        app.event_count().await,
        before,
        "PLENTY-1 must not be reserved either"
    );
}
