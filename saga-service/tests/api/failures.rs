//! Outages and crashes: every side effect happens once.

use contracts::orders::v1::{
    command_service_client::CommandServiceClient, saga_service_client::SagaServiceClient,
};
use saga_service::{
    saga::Step,
    worker::{Crash, Failpoint},
};
use sqlx::PgPool;

use crate::helpers::*;

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn the_saga_waits_out_a_command_service_outage(pool: PgPool) {
    service_runtime::telemetry::init_for_tests();
    // Users reach one command-service; the saga is pointed at one that is down.
    let front = start_command_service(&pool).await;
    let mut c = CommandServiceClient::new(front.channel().await);
    let down = free_addr().await;
    let saga_service = start_saga_service(saga_config(&pool, down)).await;
    let mut s = SagaServiceClient::new(saga_service.channel().await);
    create_product(&mut c, "SKU-1", 5).await;
    let order_id = place_order(&mut c, &[("SKU-1", 2)], "card").await;

    let stuck = wait_for_saga(&mut s, &order_id, |s| {
        s.steps.first().is_some_and(|st| st.attempts >= 3)
    })
    .await;
    assert_eq!(stuck.state, "running");
    assert!(
        stuck.last_error.contains("Unavailable"),
        "{}",
        stuck.last_error
    );

    // command-service comes back where the saga looks for it.
    let _back = start_command_service_at(&pool, down).await;
    let saga = finished(&mut s, &order_id).await;
    assert_eq!(saga.state, "completed");
    assert_eq!(count_events(&pool, "StockReserved", &order_id).await, 1);
    assert_eq!(count_events(&pool, "PaymentAuthorized", &order_id).await, 1);
    assert_eq!(count_events(&pool, "OrderConfirmed", &order_id).await, 1);
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_killed_saga_service_is_resumed_by_its_replacement(pool: PgPool) {
    service_runtime::telemetry::init_for_tests();
    let command = start_command_service(&pool).await;
    let mut c = CommandServiceClient::new(command.channel().await);
    create_product(&mut c, "SKU-1", 5).await;
    // The first instance has stock reserved and payment authorised, then dies before it
    // can confirm: its confirm step cannot reach command-service.
    let first = start_saga_service(saga_config(&pool, command.addr)).await;
    let order_id = place_order(&mut c, &[("SKU-1", 1)], "card").await;
    let mut s = SagaServiceClient::new(first.channel().await);
    finished(&mut s, &order_id).await;
    let second_order = {
        let down = free_addr().await;
        let stuck_instance = start_saga_service(saga_config(&pool, down)).await;
        // Only the stuck instance drives new sagas now.
        first.kill();
        let order_id = place_order(&mut c, &[("SKU-1", 2)], "card").await;
        let mut s = SagaServiceClient::new(stuck_instance.channel().await);
        wait_for_saga(&mut s, &order_id, |s| s.last_error.contains("Unavailable")).await;
        stuck_instance.kill();
        order_id
    };
    // A replacement picks the saga up once the dead instance's lease runs out.
    let replacement = start_saga_service(saga_config(&pool, command.addr)).await;
    let mut s = SagaServiceClient::new(replacement.channel().await);
    let saga = finished(&mut s, &second_order).await;
    assert_eq!(saga.state, "completed");
    for event_type in ["StockReserved", "PaymentAuthorized", "OrderConfirmed"] {
        assert_eq!(
            count_events(&pool, event_type, &second_order).await,
            1,
            "{event_type}"
        );
    }
}

/// The sagas, and the workers of each instance, in the hand-on test below.
const SAGAS: usize = 8;

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_dead_instances_sagas_are_taken_up_by_every_idle_worker_at_once(pool: PgPool) {
    service_runtime::telemetry::init_for_tests();
    let sagas = i64::try_from(SAGAS).unwrap();
    let command = start_command_service(&pool).await;
    let mut c = CommandServiceClient::new(command.channel().await);
    create_product(&mut c, "SKU-1", 100).await;
    // The first instance stops dead after each reservation: every one of its workers holds
    // a saga's lease, unsaved, when it is killed.
    let first = start_saga_service(freezing(&pool, command.addr, Step::ReserveStock, 3_000)).await;
    let placing = (0..SAGAS).map(|_| {
        let mut c = c.clone();
        async move { place_order(&mut c, &[("SKU-1", 1)], "card").await }
    });
    let orders = futures::future::join_all(placing).await;
    for order_id in &orders {
        wait_for_events(&pool, "StockReserved", order_id, 1).await;
    }
    first.kill();

    // The replacement's workers look as they start, find every saga leased, and wait.
    // Nothing new is placed, so nothing wakes them but the instance's poll, once a second.
    // Each worker that takes a saga stops dead after its authorisation, holding it: the
    // authorisations count the workers that took one.
    // Its lease is long enough that no saga is taken twice while the test watches.
    let _replacement = start_saga_service(freezing(
        &pool,
        command.addr,
        Step::AuthorizePayment,
        60_000,
    ))
    .await;
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sagas WHERE lease_until > now() + interval '500 milliseconds'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(held, sagas, "the dead instance's leases outlive the start");
    let authorised = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM events WHERE event_type = 'PaymentAuthorized'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let mut first_taken = None;
    let waiting_since = std::time::Instant::now();
    loop {
        let n = authorised().await;
        if n > 0 && first_taken.is_none() {
            first_taken = Some(std::time::Instant::now());
        }
        if n == sagas {
            break;
        }
        assert!(
            waiting_since.elapsed() < std::time::Duration::from_secs(30),
            "{n} of {SAGAS} sagas taken up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The worker the poll woke passed it on to the next idle one, and so on: every saga
    // was taken within a poll or two, not one a second.
    let took = first_taken.expect("taken").elapsed();
    assert!(
        took < std::time::Duration::from_millis(2_500),
        "the last saga was taken {took:?} after the first; one a second would be {} s",
        SAGAS - 1
    );
    let reserved: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'StockReserved'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(reserved, sagas, "each reservation was made once");
}

/// A saga-service of `SAGAS` workers, each of which stops dead after `after`'s answer,
/// with leases of `lease_ms`. Its steps go one after the other, so the events in the log
/// say which step each worker stopped after.
fn freezing(
    pool: &PgPool,
    command: std::net::SocketAddr,
    after: Step,
    lease_ms: u64,
) -> saga_service::Config {
    let mut config = saga_config(pool, command);
    config.workers = SAGAS;
    config.lease_ms = lease_ms;
    config.sequential_steps = true;
    config.failpoint = Some(Failpoint {
        after,
        crash: Crash::Freeze,
    });
    config
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_hundred_orders_competing_for_stock_never_oversell(pool: PgPool) {
    let mut sys = start(&pool).await;
    create_product(&mut sys.commands, "HOT-1", 50).await;
    let placing = (0..100).map(|_| {
        let mut c = sys.commands.clone();
        async move { place_order(&mut c, &[("HOT-1", 1)], "card").await }
    });
    let orders = futures::future::join_all(placing).await;
    let mut completed = Vec::new();
    for order_id in &orders {
        let saga = finished(&mut sys.sagas, order_id).await;
        if saga.state == "completed" {
            completed.push(order_id.clone());
        } else {
            assert!(
                saga.reason.starts_with("out of stock: HOT-1"),
                "{}",
                saga.reason
            );
        }
    }
    assert_eq!(
        completed.len(),
        50,
        "exactly the stock's worth of orders is confirmed"
    );
    let product = product_view(&mut sys.queries, &pool, "HOT-1").await;
    assert_eq!(
        (product.on_hand, product.reserved, product.available),
        (50, 50, 0)
    );
    // The confirmed orders are exactly those whose reservation succeeded.
    let mut reserved: Vec<String> = sqlx::query_scalar(
        "SELECT payload->>'order_id' FROM events WHERE event_type = 'StockReserved'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    reserved.sort();
    completed.sort();
    assert_eq!(reserved, completed);
    // Each order's payment was asked for beside its reservation; no money is held for
    // an order that was not confirmed.
    let mut held: Vec<String> = sqlx::query_scalar(
        "SELECT payload->>'order_id' FROM events \
         WHERE event_type IN ('PaymentAuthorized', 'PaymentRefunded') \
         GROUP BY 1 HAVING count(*) FILTER (WHERE event_type = 'PaymentAuthorized') \
                          > count(*) FILTER (WHERE event_type = 'PaymentRefunded')",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    held.sort();
    assert_eq!(held, completed);
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn two_instances_drive_every_saga_once(pool: PgPool) {
    let mut sys = start(&pool).await;
    let _second = start_saga_service(saga_config(&pool, sys.command.addr)).await;
    create_product(&mut sys.commands, "SKU-1", 100).await;
    let placing = (0..20).map(|_| {
        let mut c = sys.commands.clone();
        async move { place_order(&mut c, &[("SKU-1", 1)], "card").await }
    });
    let orders = futures::future::join_all(placing).await;
    for order_id in &orders {
        let saga = finished(&mut sys.sagas, order_id).await;
        assert_eq!(saga.state, "completed");
        assert!(
            saga.steps.iter().all(|s| s.attempts == 1),
            "each step was sent once: {:?}",
            saga.steps
        );
        assert_eq!(count_events(&pool, "StockReserved", order_id).await, 1);
    }
    let logged: i64 =
        sqlx::query_scalar("SELECT count(*) FROM command_log WHERE command_type = 'ReserveStock'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(logged, 20);
}
