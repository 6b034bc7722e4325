//! Steps whose outcome the saga does not know: a reply lost after the work was done, a
//! request that never arrived, a worker that died between the answer and the save, a save
//! lost in a database crash, a cancellation after confirmation. Each fault is placed
//! deterministically (a proxy that holds replies or refuses connections, a failpoint, a
//! rewound saga row), never by timing. Every test ends by checking the log: nothing leaked,
//! nothing done twice.

use contracts::orders::v1::{
    self as pb, command_service_client::CommandServiceClient,
    saga_service_client::SagaServiceClient,
};
use saga_service::worker::{Crash, Failpoint};
use sqlx::PgPool;
use test_support::proxy::{Mode, Proxy};
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::*;

/// A saga-service whose forward steps time out quickly.
fn impatient(pool: &PgPool, command: std::net::SocketAddr) -> saga_service::Config {
    let mut config = saga_config(pool, command);
    config.reserve_deadline_ms = 300;
    config.authorize_deadline_ms = 300;
    config.confirm_deadline_ms = 300;
    config.attempt_timeout_ms = 200;
    config.max_compensation_attempts = 1_000;
    config
}

/// One worker, with a lease and attempts long enough that it goes on from a step without
/// saving (the chained path) whenever the step's answer comes; `sequential` says whether
/// it authorises only once the stock is reserved.
fn one_patient_worker(
    pool: &PgPool,
    command: std::net::SocketAddr,
    sequential: bool,
) -> saga_service::Config {
    let mut config = saga_config(pool, command);
    config.sequential_steps = sequential;
    config.workers = 1;
    config.lease_ms = 120_000;
    config.attempt_timeout_ms = 60_000;
    config
}

/// The customer cancels the order; returns once the saga follower has flagged its saga.
async fn cancel_and_wait_for_the_flag(
    c: &mut CommandServiceClient<tonic::transport::Channel>,
    pool: &PgPool,
    order_id: &str,
) {
    c.cancel_order(pb::CancelOrderRequest {
        command_id: id(),
        order_id: order_id.to_owned(),
        reason: "changed my mind".into(),
    })
    .await
    .unwrap();
    eventually("the follower flags the saga", || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT cancel_requested FROM sagas WHERE order_id = $1::uuid",
        )
        .bind(order_id)
        .fetch_one(pool)
        .await
        .unwrap()
    })
    .await;
}

/// command-service, and a saga-service with one patient worker that reaches it through a
/// proxy holding every reply, with an order of 2 × SKU-1 placed and its stock reserved (the
/// reservation's answer held), and its payment authorised beside unless `sequential`.
struct ReservedWithTheAnswerHeld {
    /// Kept so the service runs as long as the test.
    _command: test_support::Running,
    proxy: Proxy,
    /// Kept so the service runs as long as the test.
    _saga: test_support::Running,
    c: Commands,
    s: Sagas,
    order_id: String,
}

async fn reserved_with_the_answer_held(
    pool: &PgPool,
    sequential: bool,
) -> ReservedWithTheAnswerHeld {
    service_runtime::telemetry::init_for_tests();
    let command = start_command_service(pool).await;
    let mut c = CommandServiceClient::new(command.channel().await);
    create_product(&mut c, "SKU-1", 5).await;
    let proxy = Proxy::start(command.addr, Mode::HoldReplies).await;
    let saga = start_saga_service(one_patient_worker(pool, proxy.addr, sequential)).await;
    let s = SagaServiceClient::new(saga.channel().await);
    let order_id = place_order(&mut c, &[("SKU-1", 2)], "card").await;
    wait_for_events(pool, "StockReserved", &order_id, 1).await;
    if !sequential {
        wait_for_events(pool, "PaymentAuthorized", &order_id, 1).await;
    }
    ReservedWithTheAnswerHeld {
        _command: command,
        proxy,
        _saga: saga,
        c,
        s,
        order_id,
    }
}

/// Every count of the order's events that a leak or a double would change.
async fn effects(pool: &PgPool, order_id: &str) -> [i64; 6] {
    let mut counts = [0; 6];
    for (i, event_type) in [
        "StockReserved",
        "StockReleased",
        "PaymentAuthorized",
        "PaymentRefunded",
        "OrderConfirmed",
        "OrderCancelled",
    ]
    .into_iter()
    .enumerate()
    {
        counts[i] = count_events(pool, event_type, order_id).await;
    }
    counts
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_step_done_but_unanswered_past_its_deadline_goes_forward(pool: PgPool) {
    service_runtime::telemetry::init_for_tests();
    let command = start_command_service(&pool).await;
    let mut c = CommandServiceClient::new(command.channel().await);
    create_product(&mut c, "SKU-1", 5).await;
    // The saga's command-service does the work but its replies are held back.
    let proxy = Proxy::start(command.addr, Mode::HoldReplies).await;
    let saga_service = start_saga_service(impatient(&pool, proxy.addr)).await;
    let mut s = SagaServiceClient::new(saga_service.channel().await);
    let order_id = place_order(&mut c, &[("SKU-1", 2)], "card").await;

    // The reservation lands; the saga never hears of it and, past the deadline, settles it.
    let settling = wait_for_saga(&mut s, &order_id, |s| s.settling == "void").await;
    assert_eq!(settling.state, "running");
    assert_eq!(count_events(&pool, "StockReserved", &order_id).await, 1);

    proxy.set(Mode::Pass);
    let saga = finished(&mut s, &order_id).await;
    assert_eq!(
        saga.state, "completed",
        "the step that happened is not undone: {saga:#?}"
    );
    assert_eq!(saga.reason, "");
    assert_eq!(effects(&pool, &order_id).await, [1, 0, 1, 0, 1, 0]);
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_step_that_never_arrived_is_voided_and_cannot_land_later(pool: PgPool) {
    service_runtime::telemetry::init_for_tests();
    let command = start_command_service(&pool).await;
    let mut c = CommandServiceClient::new(command.channel().await);
    create_product(&mut c, "SKU-1", 5).await;
    let proxy = Proxy::start(command.addr, Mode::Down).await;
    let saga_service = start_saga_service(impatient(&pool, proxy.addr)).await;
    let mut s = SagaServiceClient::new(saga_service.channel().await);
    let order_id = place_order(&mut c, &[("SKU-1", 2)], "card").await;

    // Past the deadline the saga must settle before it compensates; it cannot while
    // command-service is unreachable, and it says so.
    let settling = wait_for_saga(&mut s, &order_id, |s| s.settling == "void").await;
    assert_eq!(settling.remaining_steps[0], "reserve_stock");
    proxy.set(Mode::Pass);
    let saga = finished(&mut s, &order_id).await;
    assert_eq!(saga.state, "compensated");
    assert_eq!(
        saga.reason,
        "step reserve_stock did not complete within its deadline of 300 ms"
    );
    // The payment, sent beside the reservation, never arrived either: voided too.
    assert_eq!(
        step_names(&saga),
        vec![
            ("reserve_stock", "voided"),
            ("authorize_payment", "voided"),
            ("cancel_order", "succeeded")
        ]
    );
    assert!(!saga.steps[0].finished_at.is_empty());

    // The reservation, arriving now with the step's key, changes nothing.
    let late = c
        .reserve_stock(pb::ReserveStockRequest {
            command_id: saga_service::saga::Step::ReserveStock
                .command_id(order_id.parse().unwrap())
                .to_string(),
            order_id: order_id.clone(),
            items: vec![pb::StockItem {
                sku: "SKU-1".into(),
                quantity: 2,
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
    assert_eq!(
        late.get_details_error_info().unwrap().reason,
        "COMMAND_VOIDED"
    );
    let late = c
        .authorize_payment(pb::AuthorizePaymentRequest {
            command_id: saga_service::saga::Step::AuthorizePayment
                .command_id(order_id.parse().unwrap())
                .to_string(),
            order_id: order_id.clone(),
            customer_id: id(),
            amount: eur(2 * PRICE),
            payment_method: "card".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
    assert_eq!(effects(&pool, &order_id).await, [0, 0, 0, 0, 0, 1]);
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_worker_killed_between_the_answer_and_the_save_is_resumed_past_its_deadline(
    pool: PgPool,
) {
    service_runtime::telemetry::init_for_tests();
    let command = start_command_service(&pool).await;
    let mut c = CommandServiceClient::new(command.channel().await);
    create_product(&mut c, "SKU-1", 5).await;
    // The first instance stops dead right after the authorisation comes back.
    let mut config = impatient(&pool, command.addr);
    config.workers = 1;
    config.failpoint = Some(Failpoint {
        after: saga_service::saga::Step::AuthorizePayment,
        crash: Crash::Freeze,
    });
    let first = start_saga_service(config).await;
    let order_id = place_order(&mut c, &[("SKU-1", 1)], "card").await;
    wait_for_events(&pool, "PaymentAuthorized", &order_id, 1).await;
    first.kill();
    // Its lease (1 s) outlives the steps' deadlines (300 ms). The reservation led straight
    // on to the authorisation, unsaved, so the replacement finds the saga at its
    // reservation, long past its deadline: it asks again for each step before judging it,
    // and gets the recorded answers.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let replacement = start_saga_service(impatient(&pool, command.addr)).await;
    let mut s = SagaServiceClient::new(replacement.channel().await);
    let saga = finished(&mut s, &order_id).await;
    assert_eq!(saga.state, "completed", "{saga:#?}");
    assert_eq!(effects(&pool, &order_id).await, [1, 0, 1, 0, 1, 0]);
}

/// Who holds the lease of the order's saga, and until when.
async fn lease(
    pool: &PgPool,
    order_id: &str,
) -> (Option<uuid::Uuid>, Option<chrono::DateTime<chrono::Utc>>) {
    sqlx::query_as("SELECT lease_owner, lease_until FROM sagas WHERE order_id = $1::uuid")
        .bind(order_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_step_stalled_past_its_lease_stays_with_its_worker_within_the_instance(pool: PgPool) {
    service_runtime::telemetry::init_for_tests();
    let command = start_command_service(&pool).await;
    let mut c = CommandServiceClient::new(command.channel().await);
    create_product(&mut c, "SKU-1", 5).await;
    // Two workers with a short lease, whose calls wait far longer than it: a step whose
    // answer is held stalls past the lease.
    let proxy = Proxy::start(command.addr, Mode::HoldReplies).await;
    let mut config = saga_config(&pool, proxy.addr);
    config.workers = 2;
    config.lease_ms = 300;
    config.attempt_timeout_ms = 60_000;
    config.reserve_deadline_ms = 60_000;
    config.authorize_deadline_ms = 60_000;
    let saga_service = start_saga_service(config).await;
    let mut s = SagaServiceClient::new(saga_service.channel().await);
    let order_id = place_order(&mut c, &[("SKU-1", 2)], "card").await;
    wait_for_events(&pool, "StockReserved", &order_id, 1).await;
    wait_for_events(&pool, "PaymentAuthorized", &order_id, 1).await;

    // Its lease runs out while the worker still waits for the answers.
    let stalled = lease(&pool, &order_id).await;
    assert!(stalled.0.is_some(), "the saga was leased when it started");
    eventually("the stalled saga's lease runs out", || async {
        sqlx::query_scalar::<_, bool>("SELECT clock_timestamp() > $1")
            .bind(stalled.1)
            .fetch_one(&pool)
            .await
            .unwrap()
    })
    .await;
    // Then another saga falls due, later than the stalled one. The idle worker's next look
    // at the table must pass over the stalled saga (due first, lease run out, but driven in
    // this instance) and take this one.
    let other = uuid::Uuid::new_v4();
    let mut conn = pool.acquire().await.unwrap();
    saga_service::db::insert(&mut conn, &[saga(other)])
        .await
        .unwrap();
    eventually("the idle worker claims the saga due later", || async {
        lease(&pool, &other.to_string()).await.0.is_some()
    })
    .await;
    assert_eq!(
        lease(&pool, &order_id).await,
        stalled,
        "nobody claimed the saga whose step stalled"
    );

    // The answers come; the worker that waited for them finishes the saga, once each.
    proxy.set(Mode::Pass);
    let saga = finished(&mut s, &order_id).await;
    assert_eq!(saga.state, "completed", "{saga:#?}");
    assert_eq!(effects(&pool, &order_id).await, [1, 0, 1, 0, 1, 0]);
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_save_lost_in_a_database_crash_does_not_undo_a_confirmed_order(pool: PgPool) {
    let mut sys = start(&pool).await;
    create_product(&mut sys.commands, "SKU-1", 5).await;
    let order_id = place_order(&mut sys.commands, &[("SKU-1", 1)], "card").await;
    assert_eq!(finished(&mut sys.sagas, &order_id).await.state, "completed");
    // What an immediate restart that lost the last unflushed saga writes leaves: the saga
    // back at its confirm step, that step's deadline long gone, nobody holding it.
    sqlx::query(
        "UPDATE sagas SET state = 'running', plan = ARRAY['confirm_order'], \
           steps = jsonb_set(steps, '{2,status}', '\"running\"'), \
           step_deadline = now() - interval '1 hour', next_attempt_at = now() - interval '1 hour', \
           attempts = 0, lease_owner = NULL, lease_until = NULL \
         WHERE order_id = $1::uuid",
    )
    .bind(&order_id)
    .execute(&pool)
    .await
    .unwrap();
    let saga = finished(&mut sys.sagas, &order_id).await;
    assert_eq!(saga.state, "completed", "{saga:#?}");
    assert_eq!(effects(&pool, &order_id).await, [1, 0, 1, 0, 1, 0]);
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_cancellation_after_confirmation_gives_the_stock_and_the_money_back(pool: PgPool) {
    let mut sys = start(&pool).await;
    create_product(&mut sys.commands, "SKU-1", 5).await;
    let order_id = place_order(&mut sys.commands, &[("SKU-1", 2)], "card").await;
    assert_eq!(finished(&mut sys.sagas, &order_id).await.state, "completed");
    sys.commands
        .cancel_order(pb::CancelOrderRequest {
            command_id: id(),
            order_id: order_id.clone(),
            reason: "changed my mind".into(),
        })
        .await
        .unwrap();
    let saga = wait_for_saga(&mut sys.sagas, &order_id, |s| s.state == "compensated").await;
    assert_eq!(saga.reason, "order cancelled: changed my mind");
    assert_eq!(
        step_names(&saga)[3..],
        [
            ("refund_payment", "succeeded"),
            ("release_stock", "succeeded"),
            ("cancel_order", "succeeded")
        ]
    );
    assert_eq!(effects(&pool, &order_id).await, [1, 1, 1, 1, 1, 1]);
    let product = product_view(&mut sys.queries, &pool, "SKU-1").await;
    assert_eq!((product.reserved, product.available), (0, 5));
    let order = order_view(&mut sys.queries, &pool, &order_id).await;
    assert_eq!(
        (order.status.as_str(), order.payment_status.as_str()),
        ("cancelled", "refunded")
    );
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_confirmation_that_never_ran_by_its_deadline_is_compensated_in_reverse_order(
    pool: PgPool,
) {
    use saga_service::saga::{Saga, SagaLine, Step, StepResult};
    service_runtime::telemetry::init_for_tests();
    let command = start_command_service(&pool).await;
    let mut c = CommandServiceClient::new(command.channel().await);
    create_product(&mut c, "SKU-1", 5).await;
    // No saga-service yet: the stock and the payment are secured with the saga's own keys,
    // and the saga is saved as it stands before its confirmation is sent, long past the
    // confirmation's deadline.
    let order_id = place_order(&mut c, &[("SKU-1", 2)], "card").await;
    let order: uuid::Uuid = order_id.parse().unwrap();
    c.reserve_stock(pb::ReserveStockRequest {
        command_id: Step::ReserveStock.command_id(order).to_string(),
        order_id: order_id.clone(),
        items: vec![pb::StockItem {
            sku: "SKU-1".into(),
            quantity: 2,
        }],
    })
    .await
    .unwrap();
    let config = impatient(&pool, command.addr);
    let policy = config.policy();
    let past = chrono::Utc::now() - chrono::Duration::hours(1);
    let mut saga = Saga::start(
        order,
        uuid::Uuid::new_v4(),
        vec![SagaLine {
            sku: "SKU-1".into(),
            quantity: 2,
        }],
        2 * PRICE,
        "EUR".into(),
        "card".into(),
        past,
        &policy,
    );
    c.authorize_payment(pb::AuthorizePaymentRequest {
        command_id: Step::AuthorizePayment.command_id(order).to_string(),
        order_id: order_id.clone(),
        customer_id: saga.customer_id.to_string(),
        amount: eur(2 * PRICE),
        payment_method: "card".into(),
    })
    .await
    .unwrap();
    for step in [Step::ReserveStock, Step::AuthorizePayment] {
        saga.record(step, StepResult::Succeeded, past, &policy, 1.0);
    }
    let mut conn = pool.acquire().await.unwrap();
    saga_service::db::insert(&mut conn, std::slice::from_ref(&saga))
        .await
        .unwrap();
    drop(conn);

    // Now the saga runs, and cannot reach command-service.
    let proxy = Proxy::start(command.addr, Mode::Down).await;
    let saga_service = start_saga_service(impatient(&pool, proxy.addr)).await;
    let mut s = SagaServiceClient::new(saga_service.channel().await);
    wait_for_saga(&mut s, &order_id, |s| s.settling == "void").await;
    proxy.set(Mode::Pass);
    let saga = finished(&mut s, &order_id).await;
    assert_eq!(saga.state, "compensated", "{saga:#?}");
    assert_eq!(
        saga.reason,
        "step confirm_order did not complete within its deadline of 300 ms"
    );
    assert_eq!(
        step_names(&saga),
        vec![
            ("reserve_stock", "succeeded"),
            ("authorize_payment", "succeeded"),
            ("confirm_order", "voided"),
            ("refund_payment", "succeeded"),
            ("release_stock", "succeeded"),
            ("cancel_order", "succeeded")
        ]
    );
    // The log agrees on the order: refund, then release, then cancel; no confirmation.
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE event_type IN ('PaymentRefunded', 'StockReleased', 'OrderCancelled', 'OrderConfirmed') \
         ORDER BY global_position",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        types,
        vec!["PaymentRefunded", "StockReleased", "OrderCancelled"]
    );
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_cancellation_during_a_chained_step_is_taken_in_before_the_next_step(pool: PgPool) {
    // Steps one after the other: the reservation's reply is held; the worker goes on from
    // it without saving. Bound whole: the services run as long as `held` does.
    let held = reserved_with_the_answer_held(&pool, true).await;
    let (proxy, order_id) = (&held.proxy, held.order_id.as_str());
    let (mut c, mut s) = (held.c.clone(), held.s.clone());

    // The customer cancels while the reservation's answer is on its way back.
    cancel_and_wait_for_the_flag(&mut c, &pool, order_id).await;

    proxy.set(Mode::Pass);
    let saga = finished(&mut s, order_id).await;
    assert_eq!(saga.state, "compensated", "{saga:#?}");
    // No payment was asked for once the cancellation was known: nothing to refund.
    assert_eq!(effects(&pool, order_id).await, [1, 1, 0, 0, 0, 1]);
}

/// A saga whose confirmation was refused (the order was cancelled meanwhile): the steps
/// it took, then everything given back.
const CONFIRMATION_REFUSED_EVERYTHING_GIVEN_BACK: [(&str, &str); 6] = [
    ("reserve_stock", "succeeded"),
    ("authorize_payment", "succeeded"),
    ("confirm_order", "failed"),
    ("refund_payment", "succeeded"),
    ("release_stock", "succeeded"),
    ("cancel_order", "succeeded"),
];

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_cancellation_while_stock_and_payment_are_in_flight_gives_both_back(pool: PgPool) {
    // Both done, both replies held. Bound whole: the services run as long as `held` does.
    let held = reserved_with_the_answer_held(&pool, false).await;
    let (proxy, order_id) = (&held.proxy, held.order_id.as_str());
    let (mut c, mut s) = (held.c.clone(), held.s.clone());

    cancel_and_wait_for_the_flag(&mut c, &pool, order_id).await;

    // Both answers are recorded; the confirmation goes out beside the read of the row, is
    // refused (the order is cancelled), settled, and everything taken is given back.
    proxy.set(Mode::Pass);
    let saga = finished(&mut s, order_id).await;
    assert_eq!(saga.state, "compensated", "{saga:#?}");
    assert_eq!(
        step_names(&saga),
        CONFIRMATION_REFUSED_EVERYTHING_GIVEN_BACK
    );
    assert_eq!(effects(&pool, order_id).await, [1, 1, 1, 1, 0, 1]);
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_cancellation_during_the_authorisation_is_taken_in_beside_the_confirmation(pool: PgPool) {
    // Steps one after the other. Bound whole: the services run as long as `held` does.
    let held = reserved_with_the_answer_held(&pool, true).await;
    let (proxy, order_id) = (&held.proxy, held.order_id.as_str());
    let (mut c, mut s) = (held.c.clone(), held.s.clone());

    // The authorisation is held in command-service (the log is locked) while the proxy
    // lets the reservation's answer through, then its own answer is held by the proxy.
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE events IN EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    proxy.set(Mode::Pass);
    eventually("the authorisation waits for the log", || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT count(*) > 0 FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    })
    .await;
    proxy.set(Mode::HoldReplies);
    lock.commit().await.unwrap();
    wait_for_events(&pool, "PaymentAuthorized", order_id, 1).await;

    // The customer cancels while the authorisation's answer is on its way back; the
    // follower flags the saga.
    cancel_and_wait_for_the_flag(&mut c, &pool, order_id).await;

    // The confirmation (nothing to undo) goes out beside the read of the row, so it is sent
    // (a read before it would have voided it unsent); the order is cancelled, so it is
    // refused, settled, and everything taken is given back.
    proxy.set(Mode::Pass);
    let saga = finished(&mut s, order_id).await;
    assert_eq!(saga.state, "compensated", "{saga:#?}");
    assert_eq!(
        step_names(&saga),
        CONFIRMATION_REFUSED_EVERYTHING_GIVEN_BACK
    );
    assert_eq!(effects(&pool, order_id).await, [1, 1, 1, 1, 0, 1]);
}
