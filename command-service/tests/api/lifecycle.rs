//! Every RPC's success path, walked the way the saga and users drive it.

use contracts::orders::v1 as pb;
use sqlx::PgPool;

use crate::helpers::*;

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn an_order_goes_from_draft_to_shipped(pool: PgPool) {
    let app = spawn_app(&pool).await;
    let mut c = app.client.clone();
    let product = create_product_priced(&mut c, "WIDGET-1", 1250, 10).await;
    assert_eq!(product.version, 1);
    create_product_priced(&mut c, "GADGET-2", 999, 5).await;
    create_product(&mut c, "EXTRA-3", 1).await;
    let restocked = c
        .restock_product(pb::RestockProductRequest {
            command_id: id(),
            sku: "GADGET-2".into(),
            quantity: 5,
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(restocked.version, 2);

    let order_id = create_order(&mut c, vec![line("WIDGET-1", 2, 1250)]).await;
    let added = c
        .add_order_line(pb::AddOrderLineRequest {
            command_id: id(),
            order_id: order_id.clone(),
            line: Some(catalogue_line("GADGET-2", 3)),
            expected_version: Some(1),
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(
        (added.aggregate_id.as_str(), added.version),
        (order_id.as_str(), 2)
    );
    c.add_order_line(pb::AddOrderLineRequest {
        command_id: id(),
        order_id: order_id.clone(),
        line: Some(catalogue_line("EXTRA-3", 1)),
        expected_version: None,
    })
    .await
    .unwrap();
    c.remove_order_line(pb::RemoveOrderLineRequest {
        command_id: id(),
        order_id: order_id.clone(),
        sku: "EXTRA-3".into(),
        expected_version: None,
    })
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
        .unwrap()
        .into_inner();
    assert_eq!(
        placed.total,
        eur(2 * 1250 + 3 * 999),
        "the total is computed by the server, from catalogue prices"
    );
    assert_eq!(placed.result.unwrap().version, 5);

    let reserved = c
        .reserve_stock(pb::ReserveStockRequest {
            command_id: id(),
            order_id: order_id.clone(),
            items: vec![
                pb::StockItem {
                    sku: "WIDGET-1".into(),
                    quantity: 2,
                },
                pb::StockItem {
                    sku: "GADGET-2".into(),
                    quantity: 3,
                },
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reserved
            .products
            .iter()
            .map(|p| p.version)
            .collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert!(!reserved.consistency_token.is_empty());

    let authorized = c
        .authorize_payment(pb::AuthorizePaymentRequest {
            command_id: id(),
            order_id: order_id.clone(),
            customer_id: id(),
            amount: placed.total.clone(),
            payment_method: "card".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(authorized.outcome(), pb::PaymentOutcome::Authorized);
    assert!(authorized.decline_reason.is_empty());

    c.confirm_order(pb::ConfirmOrderRequest {
        command_id: id(),
        order_id: order_id.clone(),
    })
    .await
    .unwrap();
    let shipped = c
        .ship_order(pb::ShipOrderRequest {
            command_id: id(),
            order_id: order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(shipped.version, 7);

    // Shipping committed the stock and captured the payment in the same transaction.
    let types: Vec<(String, i64)> = sqlx::query_as(
        "SELECT event_type, transaction_id::text::bigint FROM events ORDER BY global_position DESC LIMIT 4",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut names: Vec<&str> = types.iter().map(|(t, _)| t.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "OrderShipped",
            "PaymentCaptured",
            "StockCommitted",
            "StockCommitted"
        ]
    );
    assert!(types.iter().all(|(_, tx)| *tx == types[0].1));
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn compensations_release_stock_refund_and_cancel(pool: PgPool) {
    let app = spawn_app(&pool).await;
    let mut c = app.client.clone();
    create_product_priced(&mut c, "WIDGET-1", 100, 10).await;
    let order_id = create_order(&mut c, vec![line("WIDGET-1", 4, 100)]).await;
    c.place_order(pb::PlaceOrderRequest {
        command_id: id(),
        order_id: order_id.clone(),
        payment_method: "card".into(),
        expected_version: None,
    })
    .await
    .unwrap();
    c.reserve_stock(pb::ReserveStockRequest {
        command_id: id(),
        order_id: order_id.clone(),
        items: vec![pb::StockItem {
            sku: "WIDGET-1".into(),
            quantity: 4,
        }],
    })
    .await
    .unwrap();
    let declined = c
        .authorize_payment(pb::AuthorizePaymentRequest {
            command_id: id(),
            order_id: order_id.clone(),
            customer_id: id(),
            amount: eur(400),
            payment_method: "card_declined".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(declined.outcome(), pb::PaymentOutcome::Declined);
    assert_eq!(declined.decline_reason, "card declined by the issuer");

    let released = c
        .release_stock(pb::ReleaseStockRequest {
            command_id: id(),
            order_id: order_id.clone(),
            skus: vec!["WIDGET-1".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(released.products[0].version, 3);
    // Releasing again is a no-op: same version.
    let again = c
        .release_stock(pb::ReleaseStockRequest {
            command_id: id(),
            order_id: order_id.clone(),
            skus: vec!["WIDGET-1".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.products[0].version, 3);

    let refunded = c
        .refund_payment(pb::RefundPaymentRequest {
            command_id: id(),
            order_id: order_id.clone(),
            reason: "declined".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(
        refunded.version, 1,
        "a declined payment has nothing to refund"
    );

    let cancelled = c
        .cancel_order(pb::CancelOrderRequest {
            command_id: id(),
            order_id: order_id.clone(),
            reason: "payment declined".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(cancelled.version, 3);
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn correlation_and_causation_ids_are_recorded(pool: PgPool) {
    let app = spawn_app(&pool).await;
    let mut c = app.client.clone();
    let correlation = uuid::Uuid::new_v4();
    let command_id = uuid::Uuid::new_v4();
    let mut request = tonic::Request::new(pb::CreateProductRequest {
        command_id: command_id.to_string(),
        sku: "SKU-1".into(),
        name: "Widget".into(),
        price: eur(100),
        initial_stock: 1,
    });
    request
        .metadata_mut()
        .insert("x-correlation-id", correlation.to_string().parse().unwrap());
    let response = c.create_product(request).await.unwrap();
    assert_eq!(
        response
            .metadata()
            .get("x-correlation-id")
            .unwrap()
            .to_str()
            .unwrap(),
        correlation.to_string()
    );
    let (meta, occurred): (serde_json::Value, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT metadata, occurred_at FROM events")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(meta["correlation_id"], correlation.to_string());
    assert_eq!(meta["causation_id"], command_id.to_string());
    assert_eq!(
        occurred.to_rfc3339(),
        "2026-01-02T03:04:05+00:00",
        "time comes from the injected clock"
    );

    // Without the header one is generated and returned.
    let response = c
        .create_product(pb::CreateProductRequest {
            command_id: id(),
            sku: "SKU-2".into(),
            name: "Gadget".into(),
            price: eur(100),
            initial_stock: 1,
        })
        .await
        .unwrap();
    let generated = response
        .metadata()
        .get("x-correlation-id")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(uuid::Uuid::try_parse(generated).is_ok());
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn serves_health_and_stops_gracefully(pool: PgPool) {
    let app = spawn_app(&pool).await;
    let mut health =
        tonic_health::pb::health_client::HealthClient::new(app.running.channel().await);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: command_service::SERVICE_NAME.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    app.running.stop().await.expect("a clean shutdown");
}
