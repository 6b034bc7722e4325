//! Backpressure: command-service refuses new orders while too many wait for the saga, and
//! takes them again once the saga has caught up.

use contracts::orders::v1::{
    self as pb, command_service_client::CommandServiceClient,
    saga_service_client::SagaServiceClient,
};
use sqlx::PgPool;
use test_support::Running;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::*;

fn place(order_id: &str, command_id: &str) -> pb::PlaceOrderRequest {
    pb::PlaceOrderRequest {
        command_id: command_id.into(),
        order_id: order_id.into(),
        payment_method: "card".into(),
        expected_version: None,
    }
}

/// The gate reads the backlog every 100 ms; this waits for a reading to say `ready`.
async fn eventually_placed(c: &mut Commands, request: pb::PlaceOrderRequest) {
    for _ in 0..100 {
        match c.place_order(request.clone()).await {
            Ok(_) => return,
            Err(status) if status.code() == Code::ResourceExhausted => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(status) => panic!("unexpected refusal: {status:?}"),
        }
    }
    panic!("the order was never admitted");
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn place_order_is_refused_while_the_saga_is_behind_and_taken_once_it_catches_up(
    pool: PgPool,
) {
    service_runtime::telemetry::init_for_tests();
    let mut config = command_config(&pool);
    config.saga_backlog_limit = 2;
    let command = Running::start(move |l, s| command_service::run(config, l, s)).await;
    let mut c = CommandServiceClient::new(command.channel().await);
    create_product(&mut c, "SKU-1", 100).await;

    // No saga-service yet: placed orders wait, counted past the follower's checkpoint.
    let first = id();
    let (first_order, _) = create_order(&mut c, &id(), vec![catalogue_line("SKU-1", 1)]).await;
    eventually_placed(&mut c, place(&first_order, &first)).await;
    let (second_order, _) = create_order(&mut c, &id(), vec![catalogue_line("SKU-1", 1)]).await;
    eventually_placed(&mut c, place(&second_order, &id())).await;

    let (third_order, _) = create_order(&mut c, &id(), vec![catalogue_line("SKU-1", 1)]).await;
    let third = id();
    let refused = c
        .place_order(place(&third_order, &third))
        .await
        .expect_err("two orders wait, the limit is two");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("waiting for the fulfilment saga"),
        "{}",
        refused.message()
    );
    let details = refused.get_error_details();
    let info = details.error_info().expect("an ErrorInfo");
    assert_eq!(info.reason, "SAGA_BACKLOG");
    assert_eq!(info.metadata["limit"], "2");
    assert!(details.retry_info().is_some(), "a retry delay");
    assert_eq!(
        count_events(&pool, "OrderPlaced", &third_order).await,
        0,
        "a refusal changes nothing"
    );
    // The refusal is not recorded: nothing in the command log under its id.
    let recorded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM command_log WHERE command_id = $1")
            .bind(uuid::Uuid::parse_str(&third).unwrap())
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(recorded, 0);
    // An order already placed gets its recorded answer, full or not.
    c.place_order(place(&first_order, &first))
        .await
        .expect("a retry of an admitted order is replayed");
    // Other commands are not held back.
    create_order(&mut c, &id(), vec![catalogue_line("SKU-1", 1)]).await;

    // The saga catches up; the same command is then admitted and the order confirmed.
    let saga = start_saga_service(saga_config(&pool, command.addr)).await;
    let mut s = SagaServiceClient::new(saga.channel().await);
    assert_eq!(finished(&mut s, &first_order).await.state, "completed");
    assert_eq!(finished(&mut s, &second_order).await.state, "completed");
    eventually_placed(&mut c, place(&third_order, &third)).await;
    assert_eq!(finished(&mut s, &third_order).await.state, "completed");
    assert_eq!(count_events(&pool, "OrderPlaced", &third_order).await, 1);
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_limit_of_zero_admits_every_order(pool: PgPool) {
    service_runtime::telemetry::init_for_tests();
    let mut config = command_config(&pool);
    config.saga_backlog_limit = 0;
    let command = Running::start(move |l, s| command_service::run(config, l, s)).await;
    let mut c = CommandServiceClient::new(command.channel().await);
    create_product(&mut c, "SKU-1", 100).await;
    for _ in 0..5 {
        place_order(&mut c, &[("SKU-1", 1)], "card").await;
    }
    let (in_flight, not_started): (i64, i64) =
        sqlx::query_as("SELECT in_flight, not_started FROM saga_backlog")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((in_flight, not_started), (0, 5), "five wait, none refused");
}
