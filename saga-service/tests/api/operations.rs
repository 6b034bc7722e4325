//! The admin API and the customer's cancellation.

use contracts::orders::v1::{
    self as pb, command_service_client::CommandServiceClient,
    saga_service_client::SagaServiceClient,
};
use sqlx::PgPool;
use tonic::Code;

use crate::helpers::*;

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_customer_cancellation_while_the_saga_runs_is_compensated(pool: PgPool) {
    service_runtime::telemetry::init_for_tests();
    let front = start_command_service(&pool).await;
    let mut c = CommandServiceClient::new(front.channel().await);
    let down = free_addr().await;
    let saga_service = start_saga_service(saga_config(&pool, down)).await;
    let mut s = SagaServiceClient::new(saga_service.channel().await);
    create_product(&mut c, "SKU-1", 5).await;
    let order_id = place_order(&mut c, &[("SKU-1", 1)], "card").await;
    wait_for_saga(&mut s, &order_id, |s| {
        s.steps.first().is_some_and(|st| st.attempts >= 1)
    })
    .await;
    c.cancel_order(pb::CancelOrderRequest {
        command_id: id(),
        order_id: order_id.clone(),
        reason: "changed my mind".into(),
    })
    .await
    .unwrap();
    // The saga learns of the cancellation from the log while its own command-service is
    // still away. An attempt at the reservation may be on its way, so before it undoes
    // anything it settles that step, and it saves that it is doing so before it sends
    // anything.
    let settling = wait_for_saga(&mut s, &order_id, |s| s.settling == "void").await;
    assert_eq!(settling.state, "running");
    assert_eq!(settling.reason, "order cancelled: changed my mind");
    let _back = start_command_service_at(&pool, down).await;
    let saga = finished(&mut s, &order_id).await;
    assert_eq!(saga.state, "compensated");
    assert_eq!(saga.reason, "order cancelled: changed my mind");
    assert_eq!(
        step_names(&saga),
        vec![
            ("reserve_stock", "voided"),
            ("authorize_payment", "voided"),
            ("cancel_order", "succeeded")
        ],
        "nothing was reserved or authorised (the payment sent beside is voided too), so nothing to give back"
    );
    assert!(
        !saga.steps[0].finished_at.is_empty(),
        "the interrupted step is finished"
    );
    assert_eq!(count_events(&pool, "StockReserved", &order_id).await, 0);
    assert_eq!(count_events(&pool, "PaymentAuthorized", &order_id).await, 0);
    assert_eq!(
        count_events(&pool, "OrderCancelled", &order_id).await,
        1,
        "cancelling twice is a no-op"
    );
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_stuck_compensation_is_parked_and_can_be_retried(pool: PgPool) {
    let mut sys = start(&pool).await;
    create_product(&mut sys.commands, "SKU-1", 5).await;
    let order_id = place_order(&mut sys.commands, &[("SKU-1", 1)], "card").await;
    finished(&mut sys.sagas, &order_id).await;
    sys.commands
        .ship_order(pb::ShipOrderRequest {
            command_id: id(),
            order_id: order_id.clone(),
        })
        .await
        .unwrap();
    // Aborting a shipped order: the refund and release work, the cancellation never will.
    let aborted = sys
        .sagas
        .abort_saga(pb::AbortSagaRequest {
            order_id: order_id.clone(),
            reason: "fraud suspected".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .saga
        .unwrap();
    assert_eq!(aborted.state, "compensating");
    assert_eq!(
        aborted.remaining_steps,
        vec!["refund_payment", "release_stock", "cancel_order"]
    );
    let parked = wait_for_saga(&mut sys.sagas, &order_id, |s| s.state == "needs_attention").await;
    assert_eq!(parked.current_step, "cancel_order");
    assert!(
        parked.last_error.contains("has shipped"),
        "{}",
        parked.last_error
    );
    let listed = sys
        .sagas
        .list_sagas(pb::ListSagasRequest {
            state: "needs_attention".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.sagas.len(), 1);
    assert_eq!(listed.sagas[0].order_id, order_id);

    let retried = sys
        .sagas
        .retry_saga(pb::RetrySagaRequest {
            order_id: order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .saga
        .unwrap();
    assert_eq!(retried.state, "compensating");
    let parked_again = wait_for_saga(&mut sys.sagas, &order_id, |s| {
        s.state == "needs_attention"
            && s.steps
                .iter()
                .filter(|st| st.name == "cancel_order")
                .count()
                == 2
    })
    .await;
    assert_eq!(parked_again.current_step, "cancel_order");
    assert_eq!(count_events(&pool, "PaymentRefunded", &order_id).await, 1);
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn the_admin_api_refuses_bad_requests(pool: PgPool) {
    let mut sys = start(&pool).await;
    let s = &mut sys.sagas;
    let code =
        |r: Result<tonic::Response<pb::GetSagaResponse>, tonic::Status>| r.unwrap_err().code();
    assert_eq!(
        code(
            s.get_saga(pb::GetSagaRequest {
                order_id: "x".into()
            })
            .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code(s.get_saga(pb::GetSagaRequest { order_id: id() }).await),
        Code::NotFound
    );
    let bad_list = s
        .list_sagas(pb::ListSagasRequest {
            state: "sleeping".into(),
            page_size: 9999,
            page_token: "zz".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_list.code(), Code::InvalidArgument);
    assert_eq!(
        s.retry_saga(pb::RetrySagaRequest { order_id: id() })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        s.abort_saga(pb::AbortSagaRequest {
            order_id: id(),
            reason: String::new()
        })
        .await
        .unwrap_err()
        .code(),
        Code::InvalidArgument
    );
    // Retrying a saga that is not parked is a precondition failure.
    create_product(&mut sys.commands, "SKU-1", 5).await;
    let order_id = place_order(&mut sys.commands, &[("SKU-1", 1)], "card").await;
    finished(&mut sys.sagas, &order_id).await;
    let status = sys
        .sagas
        .retry_saga(pb::RetrySagaRequest { order_id })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
}
