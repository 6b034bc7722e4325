//! Lost notifications, restarts, a second instance, a poison event.

use contracts::orders::v1 as pb;
use domain_events::{DomainEvent, OrderLineAdded, StoredEvent, values};
use event_store::{
    AggregateId, EventEnvelope, ExpectedVersion, PostgresEventStore, StreamAppend, Version,
};
use sqlx::PgPool;
use tonic::Code;

use crate::helpers::*;

/// Appends an event without waking anyone: `append_streams_in` leaves NOTIFY to the caller.
async fn append_silently(pool: &PgPool, order_id: &str, version: u64, sku: &str) -> String {
    let store = PostgresEventStore::new(pool.clone());
    let order = values::OrderId::parse(order_id).unwrap();
    let stored = StoredEvent::encode(&DomainEvent::OrderLineAdded(OrderLineAdded {
        order_id: order,
        line: values::OrderLine {
            sku: values::Sku::parse(sku).unwrap(),
            quantity: values::Quantity::new(1).unwrap(),
            unit_price: values::Money::new(10, values::Currency::parse("EUR").unwrap()).unwrap(),
        },
    }));
    let envelope = EventEnvelope::builder()
        .aggregate_id(AggregateId::from_uuid(order.as_uuid()))
        .aggregate_type("Order")
        .event_type(stored.event_type)
        .version(Version::new(version))
        .payload_raw(stored.payload)
        .build();
    let mut tx = pool.begin().await.unwrap();
    let result = store
        .append_streams_in(
            &mut tx,
            &[StreamAppend {
                expected_version: ExpectedVersion::Exact(Version::new(version - 1)),
                events: vec![envelope],
            }],
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    result.position.to_token()
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_lost_notification_is_caught_by_the_poll(pool: PgPool) {
    let mut sys = start(&pool).await;
    let (order_id, token) = create_order(&mut sys.commands, &id(), vec![]).await;
    get_order(&mut sys.queries, &order_id, &token).await;
    let token = append_silently(&pool, &order_id, 2, "QUIET-1").await;
    let order = get_order(&mut sys.queries, &order_id, &token).await;
    assert_eq!(
        order.lines.len(),
        1,
        "the poll must pick up an event nobody announced"
    );
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_restart_resumes_from_the_checkpoint_without_applying_twice(pool: PgPool) {
    let mut sys = start(&pool).await;
    let customer = id();
    create_product(&mut sys.commands, "SKU-1", 10).await;
    let place_and_confirm = async |c: &mut Commands| {
        let (order_id, _) = create_order(c, &customer, vec![catalogue_line("SKU-1", 2)]).await;
        c.place_order(pb::PlaceOrderRequest {
            command_id: id(),
            order_id: order_id.clone(),
            payment_method: "card".into(),
            expected_version: None,
        })
        .await
        .unwrap();
        c.confirm_order(pb::ConfirmOrderRequest {
            command_id: id(),
            order_id,
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap()
        .consistency_token
    };
    place_and_confirm(&mut sys.commands).await;
    caught_up(&mut sys.queries, &pool).await;
    sys.query.stop().await.unwrap();

    // Written while query-service is down.
    let token = place_and_confirm(&mut sys.commands).await;
    let restarted = start_query_service(&pool).await;
    let mut q = pb::query_service_client::QueryServiceClient::new(restarted.channel().await);
    let summary = q
        .get_customer_summary(pb::GetCustomerSummaryRequest {
            customer_id: customer.clone(),
            consistency_token: token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.order_count, 2);
    assert_eq!(summary.confirmed_count, 2);
    assert_eq!(
        summary.total_spent,
        vec![eur(2 * 2 * PRICE).unwrap()],
        "totals would double if events were applied twice"
    );
    let status = caught_up(&mut q, &pool).await;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status.events_applied, total);
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_second_instance_stands_by_and_takes_over(pool: PgPool) {
    let mut sys = start(&pool).await;
    let second = start_query_service(&pool).await;
    let mut q2 = pb::query_service_client::QueryServiceClient::new(second.channel().await);
    create_product(&mut sys.commands, "SKU-1", 10).await;
    for i in 0..5 {
        create_product(&mut sys.commands, &format!("MORE-{i}"), 10).await;
    }
    let (order_id, token) =
        create_order(&mut sys.commands, &id(), vec![catalogue_line("SKU-1", 1)]).await;
    // Both answer; exactly one projects.
    get_order(&mut sys.queries, &order_id, &token).await;
    get_order(&mut q2, &order_id, &token).await;
    let leaders = |a: bool, b: bool| [a, b].iter().filter(|l| **l).count();
    let mut first_leads = false;
    for _ in 0..100 {
        let a = sys
            .queries
            .get_projection_status(pb::GetProjectionStatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .leader;
        let b = q2
            .get_projection_status(pb::GetProjectionStatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .leader;
        if leaders(a, b) == 1 {
            first_leads = a;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Kill the leader abruptly; the other must take over.
    let (mut survivor, leader) = if first_leads {
        (q2, sys.query)
    } else {
        (sys.queries.clone(), second)
    };
    leader.kill();
    for i in 0..5 {
        let token = sys
            .commands
            .add_order_line(pb::AddOrderLineRequest {
                command_id: id(),
                order_id: order_id.clone(),
                line: Some(catalogue_line(&format!("MORE-{i}"), 1)),
                expected_version: None,
            })
            .await
            .unwrap()
            .into_inner()
            .result
            .unwrap()
            .consistency_token;
        let order = get_order(&mut survivor, &order_id, &token).await;
        assert_eq!(order.lines.len(), i + 2);
    }
    let status = survivor
        .get_projection_status(pb::GetProjectionStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.leader, "the survivor must have taken over");
    caught_up(&mut survivor, &pool).await;
    assert_same_model(&stored_model(&pool).await, &folded_model(&pool).await);
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_poison_event_stops_the_projection_visibly(pool: PgPool) {
    let mut sys = start(&pool).await;
    let (order_id, token) = create_order(&mut sys.commands, &id(), vec![]).await;
    get_order(&mut sys.queries, &order_id, &token).await;
    // Connected while SERVING: `channel()` waits for SERVING, which is about to end.
    let mut health = tonic_health::pb::health_client::HealthClient::new(sys.query.channel().await);
    // A stored event whose payload breaks its own schema.
    sqlx::query(
        "INSERT INTO events (event_id, aggregate_id, aggregate_type, version, event_type, payload, occurred_at) \
         VALUES (gen_random_uuid(), $1::uuid, 'Order', 2, 'OrderLineAdded', '{\"schema_version\": 1}', now())",
    )
    .bind(&order_id)
    .execute(&pool)
    .await
    .unwrap();
    let mut stopped = None;
    for _ in 0..100 {
        let status = sys
            .queries
            .get_projection_status(pb::GetProjectionStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        let read_models = status
            .projections
            .into_iter()
            .find(|p| p.name == "read_models")
            .unwrap();
        if read_models.state == "stopped" {
            stopped = Some(read_models);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let stopped = stopped.expect("the projection must stop on a payload it cannot decode");
    assert!(
        stopped.last_error.contains("OrderLineAdded"),
        "{}",
        stopped.last_error
    );
    assert_eq!(stopped.lag_events, 1);
    let mut serving = true;
    for _ in 0..40 {
        let s = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: query_service::SERVICE_NAME.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        serving = s == tonic_health::pb::health_check_response::ServingStatus::Serving;
        if !serving {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        !serving,
        "health must say NOT_SERVING while the projection is stopped"
    );
    // A query that needs the stopped projection fails clearly instead of waiting.
    let status = sys
        .queries
        .get_order(pb::GetOrderRequest {
            order_id,
            consistency_token: "999999999.999999999".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("stopped"), "{}", status.message());
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn an_unknown_event_type_is_skipped_and_counted(pool: PgPool) {
    let mut sys = start(&pool).await;
    sqlx::query(
        "INSERT INTO events (event_id, aggregate_id, aggregate_type, version, event_type, payload, occurred_at) \
         VALUES (gen_random_uuid(), gen_random_uuid(), 'Order', 1, 'OrderTeleported', '{}', now())",
    )
    .execute(&pool)
    .await
    .unwrap();
    let (order_id, token) = create_order(&mut sys.commands, &id(), vec![]).await;
    get_order(&mut sys.queries, &order_id, &token).await;
    let status = caught_up(&mut sys.queries, &pool).await;
    assert_eq!(status.unknown_skipped, 1);
    assert_eq!(status.state, "running");
}

/// A stored checkpoint that goes back (batches lost in a database crash, since the
/// projector does not wait for the flush; or a rebuild's swap) is noticed by an idle
/// leader, which empties its in-memory views and applies the log again from there.
#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_checkpoint_that_goes_back_is_applied_again(pool: PgPool) {
    let mut sys = start(&pool).await;
    create_product_priced(&mut sys.commands, "SKU-1", 50, 10).await;
    let (order_id, token) =
        create_order(&mut sys.commands, &id(), vec![line("SKU-1", 2, 50)]).await;
    get_order(&mut sys.queries, &order_id, &token).await;
    let before = caught_up(&mut sys.queries, &pool).await;

    // What a crash that lost the projector's last unflushed transactions leaves behind.
    sqlx::query("DELETE FROM read_orders")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE projection_checkpoints SET transaction_id = 0, global_position = 0, \
         events_applied = 0 WHERE projection = 'read_models'",
    )
    .execute(&pool)
    .await
    .unwrap();

    // No new event arrives; the leader must notice on its own.
    let after = caught_up(&mut sys.queries, &pool).await;
    assert_eq!(after.events_applied, before.events_applied);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM read_orders")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 1, "the order's row is written again");
    let order = get_order(&mut sys.queries, &order_id, &token).await;
    assert_eq!(order.total.unwrap().amount_minor, 100);
}
