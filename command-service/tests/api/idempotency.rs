//! Durable idempotency: a retried command is answered from the log, across restarts.

use contracts::orders::v1 as pb;
use sqlx::PgPool;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::*;

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_retry_returns_the_original_response_and_writes_nothing(pool: PgPool) {
    let app = spawn_app(&pool).await;
    let mut c = app.client.clone();
    create_product(&mut c, "SKU-1", 10).await;
    let order_id = place_order(&mut c, &[("SKU-1", 3)], "card").await;
    let request = pb::ReserveStockRequest {
        command_id: id(),
        order_id,
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

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_voided_command_id_never_runs_and_a_command_that_ran_is_not_voided(pool: PgPool) {
    let app = spawn_app(&pool).await;
    let mut c = app.client.clone();
    create_product(&mut c, "SKU-1", 10).await;
    let order_id = place_order(&mut c, &[("SKU-1", 3)], "card").await;
    let reserve = |command_id: &str| pb::ReserveStockRequest {
        command_id: command_id.into(),
        order_id: order_id.clone(),
        items: vec![pb::StockItem {
            sku: "SKU-1".into(),
            quantity: 3,
        }],
    };
    let void = |command_id: &str| pb::VoidCommandRequest {
        command_id: command_id.into(),
        reason: "step reserve_stock did not complete within its deadline".into(),
    };

    // Voided first: the command that arrives later changes nothing.
    let late = id();
    assert!(
        c.void_command(void(&late))
            .await
            .unwrap()
            .into_inner()
            .voided
    );
    let before = app.event_count().await;
    let status = c.reserve_stock(reserve(&late)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("was voided before it ran"),
        "{}",
        status.message()
    );
    let info = status.get_details_error_info().expect("ErrorInfo details");
    assert_eq!(info.reason, "COMMAND_VOIDED");
    assert_eq!(app.event_count().await, before);
    assert!(
        c.void_command(void(&late))
            .await
            .unwrap()
            .into_inner()
            .voided,
        "voiding again says the same"
    );

    // Ran first: the void changes nothing, and the command's answer can be read again.
    let ran = id();
    let first = c.reserve_stock(reserve(&ran)).await.unwrap().into_inner();
    assert!(
        !c.void_command(void(&ran))
            .await
            .unwrap()
            .into_inner()
            .voided
    );
    let again = c.reserve_stock(reserve(&ran)).await.unwrap().into_inner();
    assert_eq!(again, first);
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_void_racing_its_command_has_exactly_one_winner(pool: PgPool) {
    let app = spawn_app(&pool).await;
    let mut c = app.client.clone();
    create_product(&mut c, "SKU-1", 1_000).await;
    for _ in 0..20 {
        let order_id = place_order(&mut c, &[("SKU-1", 1)], "card").await;
        let command_id = id();
        let (mut a, mut b) = (app.client.clone(), app.client.clone());
        let reserve = a.reserve_stock(pb::ReserveStockRequest {
            command_id: command_id.clone(),
            order_id: order_id.clone(),
            items: vec![pb::StockItem {
                sku: "SKU-1".into(),
                quantity: 1,
            }],
        });
        let void = b.void_command(pb::VoidCommandRequest {
            command_id: command_id.clone(),
            reason: "race".into(),
        });
        let (reserved, voided) = tokio::join!(reserve, void);
        let voided = voided.unwrap().into_inner().voided;
        let stored: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE event_type = 'StockReserved' AND payload->>'order_id' = $1",
        )
        .bind(&order_id)
        .fetch_one(&pool)
        .await
        .unwrap();
        match reserved {
            Ok(_) => assert!(!voided && stored == 1, "ran, so not voided"),
            Err(status) => {
                assert!(voided && stored == 0, "voided, so never ran: {status:?}");
                assert_eq!(
                    status.get_details_error_info().unwrap().reason,
                    "COMMAND_VOIDED"
                );
            }
        }
    }
}
