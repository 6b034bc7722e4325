//! The read models equal the fold of the log, and a token always reads its write.

use contracts::orders::v1 as pb;
use sqlx::PgPool;

use crate::helpers::*;

/// Sends one random command; refusals are part of the game.
async fn random_command(
    c: &mut Commands,
    rng: &mut Rng,
    orders: &mut Vec<(String, Vec<String>)>,
    skus: &[&str],
) {
    let pick_order = |rng: &mut Rng, orders: &Vec<(String, Vec<String>)>| {
        orders[rng.below(orders.len())].0.clone()
    };
    match rng.below(10) {
        0 | 1 => {
            let customer = [
                "00000000-0000-0000-0000-00000000000a",
                "00000000-0000-0000-0000-00000000000b",
            ][rng.below(2)];
            let sku = skus[rng.below(skus.len())];
            let (order_id, _) = create_order(
                c,
                customer,
                vec![catalogue_line(
                    sku,
                    1 + i32::try_from(rng.below(3)).unwrap(),
                )],
            )
            .await;
            orders.push((order_id, vec![sku.to_owned()]));
        }
        2 if !orders.is_empty() => {
            let i = rng.below(orders.len());
            let sku = skus[rng.below(skus.len())];
            let _ = c
                .add_order_line(pb::AddOrderLineRequest {
                    command_id: id(),
                    order_id: orders[i].0.clone(),
                    line: Some(catalogue_line(
                        sku,
                        1 + i32::try_from(rng.below(5)).unwrap(),
                    )),
                    expected_version: None,
                })
                .await;
        }
        3 if !orders.is_empty() => {
            let (order_id, lines) = &orders[rng.below(orders.len())];
            let _ = c
                .remove_order_line(pb::RemoveOrderLineRequest {
                    command_id: id(),
                    order_id: order_id.clone(),
                    sku: lines[0].clone(),
                    expected_version: None,
                })
                .await;
        }
        4 if !orders.is_empty() => {
            let _ = c
                .place_order(pb::PlaceOrderRequest {
                    command_id: id(),
                    order_id: pick_order(rng, orders),
                    payment_method: "card".into(),
                    expected_version: None,
                })
                .await;
        }
        5 if !orders.is_empty() => {
            let order_id = pick_order(rng, orders);
            let _ = c
                .reserve_stock(pb::ReserveStockRequest {
                    command_id: id(),
                    order_id,
                    items: vec![pb::StockItem {
                        sku: skus[rng.below(skus.len())].into(),
                        quantity: 1 + i32::try_from(rng.below(4)).unwrap(),
                    }],
                })
                .await;
        }
        6 if !orders.is_empty() => {
            let method = if rng.below(3) == 0 {
                "card_declined"
            } else {
                "card"
            };
            let _ = c
                .authorize_payment(pb::AuthorizePaymentRequest {
                    command_id: id(),
                    order_id: pick_order(rng, orders),
                    customer_id: id(),
                    amount: eur(1000),
                    payment_method: method.into(),
                })
                .await;
        }
        7 if !orders.is_empty() => {
            let _ = c
                .confirm_order(pb::ConfirmOrderRequest {
                    command_id: id(),
                    order_id: pick_order(rng, orders),
                })
                .await;
        }
        8 if !orders.is_empty() => {
            let order_id = pick_order(rng, orders);
            let _ = c
                .ship_order(pb::ShipOrderRequest {
                    command_id: id(),
                    order_id: order_id.clone(),
                })
                .await;
            let _ = c
                .release_stock(pb::ReleaseStockRequest {
                    command_id: id(),
                    order_id,
                    skus: vec![skus[rng.below(skus.len())].into()],
                })
                .await;
        }
        _ if !orders.is_empty() => {
            let order_id = pick_order(rng, orders);
            let _ = c
                .cancel_order(pb::CancelOrderRequest {
                    command_id: id(),
                    order_id: order_id.clone(),
                    reason: "changed my mind".into(),
                })
                .await;
            let _ = c
                .refund_payment(pb::RefundPaymentRequest {
                    command_id: id(),
                    order_id,
                    reason: "cancelled".into(),
                })
                .await;
        }
        _ => {
            let _ = c
                .restock_product(pb::RestockProductRequest {
                    command_id: id(),
                    sku: skus[rng.below(skus.len())].into(),
                    quantity: 1 + i32::try_from(rng.below(10)).unwrap(),
                })
                .await;
        }
    }
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn read_models_equal_the_fold_of_the_log(pool: PgPool) {
    let seed: u64 = std::env::var("TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261128);
    println!("read_models_equal_the_fold_of_the_log: seed {seed} (set TEST_SEED to replay)");
    let mut sys = start(&pool).await;
    let skus = ["APPLE-1", "PEAR-2", "PLUM-3"];
    for sku in skus {
        create_product(&mut sys.commands, sku, 20).await;
    }
    let mut rng = Rng::new(seed);
    let mut orders = Vec::new();
    for _ in 0..300 {
        random_command(&mut sys.commands, &mut rng, &mut orders, &skus).await;
    }
    let status = caught_up(&mut sys.queries, &pool).await;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        status.events_applied, total,
        "seed {seed}: every event applied exactly once"
    );
    let stored = stored_model(&pool).await;
    let folded = folded_model(&pool).await;
    assert!(
        !folded.orders.is_empty(),
        "seed {seed}: the run created orders"
    );
    assert_same_model(&stored, &folded);
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_token_always_reads_its_write_under_load(pool: PgPool) {
    let mut sys = start(&pool).await;
    for i in 0..10 {
        create_product(&mut sys.commands, &format!("SKU-{i}"), 1).await;
    }
    let tasks = (0..8).map(|_| {
        let mut c = sys.commands.clone();
        let mut q = sys.queries.clone();
        async move {
            let (order_id, _) = create_order(&mut c, &id(), vec![]).await;
            for i in 0..10 {
                let token = c
                    .add_order_line(pb::AddOrderLineRequest {
                        command_id: id(),
                        order_id: order_id.clone(),
                        line: Some(catalogue_line(&format!("SKU-{i}"), 1)),
                        expected_version: None,
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .result
                    .unwrap()
                    .consistency_token;
                let order = get_order(&mut q, &order_id, &token).await;
                assert_eq!(
                    order.lines.len(),
                    i + 1,
                    "the read must include the write it waited for"
                );
                assert_eq!(order.version, i as u64 + 2);
            }
        }
    });
    futures::future::join_all(tasks).await;
}
