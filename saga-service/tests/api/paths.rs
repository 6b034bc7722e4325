//! The saga's four endings: confirmed, out of stock, declined, deadline passed.

use sqlx::PgPool;

use crate::helpers::*;

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_placed_order_is_reserved_authorised_and_confirmed(pool: PgPool) {
    let mut sys = start(&pool).await;
    create_product(&mut sys.commands, "SKU-1", 10).await;
    let order_id = place_order(&mut sys.commands, &[("SKU-1", 2)], "card").await;
    let saga = finished(&mut sys.sagas, &order_id).await;
    assert_eq!(saga.state, "completed");
    assert_eq!(
        step_names(&saga),
        vec![
            ("reserve_stock", "succeeded"),
            ("authorize_payment", "succeeded"),
            ("confirm_order", "succeeded")
        ]
    );
    // The read models agree with the saga.
    let order = order_view(&mut sys.queries, &pool, &order_id).await;
    assert_eq!(
        (
            order.status.as_str(),
            order.stock_status.as_str(),
            order.payment_status.as_str()
        ),
        ("confirmed", "reserved", "authorized")
    );
    let product = product_view(&mut sys.queries, &pool, "SKU-1").await;
    assert_eq!(
        (product.on_hand, product.reserved, product.available),
        (10, 2, 8)
    );
}

/// An order for more than is in stock: the saga refuses it, and nothing is left reserved
/// or authorised. `sequential` says whether payment waits for the stock.
async fn out_of_stock(pool: &PgPool, sequential: bool) -> System {
    let mut sys = start_with(pool, |c| c.sequential_steps = sequential).await;
    create_product(&mut sys.commands, "PLENTY-1", 10).await;
    create_product(&mut sys.commands, "SCARCE-2", 1).await;
    let order_id = place_order(
        &mut sys.commands,
        &[("PLENTY-1", 1), ("SCARCE-2", 2)],
        "card",
    )
    .await;
    let saga = finished(&mut sys.sagas, &order_id).await;
    assert_eq!(saga.state, "compensated");
    assert_eq!(
        saga.reason,
        "out of stock: SCARCE-2 (requested 2, available 1)"
    );
    let order = order_view(&mut sys.queries, pool, &order_id).await;
    assert_eq!(order.status, "cancelled");
    assert_eq!(
        order.cancellation_reason,
        "out of stock: SCARCE-2 (requested 2, available 1)"
    );
    assert_eq!(count_events(pool, "StockReserved", &order_id).await, 0);
    assert_eq!(
        product_view(&mut sys.queries, pool, "PLENTY-1")
            .await
            .reserved,
        0
    );
    let (authorised, refunded) = (
        count_events(pool, "PaymentAuthorized", &order_id).await,
        count_events(pool, "PaymentRefunded", &order_id).await,
    );
    if sequential {
        // Payment was never asked for: its id is voided, so it never will be.
        assert_eq!(
            step_names(&saga),
            vec![
                ("reserve_stock", "failed"),
                ("authorize_payment", "voided"),
                ("cancel_order", "succeeded")
            ]
        );
        assert_eq!((authorised, refunded), (0, 0));
    } else {
        // Authorised beside the reservation, so read back and refunded.
        assert_eq!(
            step_names(&saga),
            vec![
                ("reserve_stock", "failed"),
                ("authorize_payment", "succeeded"),
                ("refund_payment", "succeeded"),
                ("cancel_order", "succeeded")
            ]
        );
        assert_eq!((authorised, refunded), (1, 1));
        assert_eq!(order.payment_status, "refunded");
    }
    sys
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn out_of_stock_cancels_the_order_and_refunds_the_payment_sent_beside(pool: PgPool) {
    out_of_stock(&pool, false).await;
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn out_of_stock_with_sequential_steps_never_authorises(pool: PgPool) {
    out_of_stock(&pool, true).await;
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_declined_payment_releases_the_stock_and_cancels(pool: PgPool) {
    let mut sys = start(&pool).await;
    create_product(&mut sys.commands, "SKU-1", 10).await;
    let order_id = place_order(&mut sys.commands, &[("SKU-1", 3)], "card_declined").await;
    let saga = finished(&mut sys.sagas, &order_id).await;
    assert_eq!(saga.state, "compensated");
    assert_eq!(saga.reason, "payment declined: card declined by the issuer");
    assert_eq!(
        step_names(&saga),
        vec![
            ("reserve_stock", "succeeded"),
            ("authorize_payment", "failed"),
            ("release_stock", "succeeded"),
            ("cancel_order", "succeeded")
        ]
    );
    let order = order_view(&mut sys.queries, &pool, &order_id).await;
    assert_eq!(
        (order.status.as_str(), order.stock_status.as_str()),
        ("cancelled", "released")
    );
    assert_eq!(
        order.cancellation_reason,
        "payment declined: card declined by the issuer"
    );
    let product = product_view(&mut sys.queries, &pool, "SKU-1").await;
    assert_eq!((product.reserved, product.available), (0, 10));
}
