//! The follower: what one batch of the log does to the sagas, written in one statement.

use contracts::orders::v1::{
    self as pb, command_service_client::CommandServiceClient,
    saga_service_client::SagaServiceClient,
};
use event_store::Position;
use saga_service::{
    db::{self, FollowerBatch, Handoff},
    follower,
};
use sqlx::{Connection, PgPool};

use crate::helpers::*;

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn an_order_placed_and_cancelled_in_one_batch_reserves_nothing(pool: PgPool) {
    service_runtime::telemetry::init_for_tests();
    let command = start_command_service(&pool).await;
    let mut c = CommandServiceClient::new(command.channel().await);
    create_product(&mut c, "SKU-1", 5).await;
    let order_id = place_order(&mut c, &[("SKU-1", 1)], "card").await;
    c.cancel_order(pb::CancelOrderRequest {
        command_id: id(),
        order_id: order_id.clone(),
        reason: "changed my mind".into(),
    })
    .await
    .unwrap();
    // Both events are in the log before the follower starts, so its first batch holds
    // both: the saga it starts is flagged before it is ever written.
    let saga_service = start_saga_service(saga_config(&pool, command.addr)).await;
    let mut s = SagaServiceClient::new(saga_service.channel().await);
    let saga = finished(&mut s, &order_id).await;
    assert_eq!(saga.state, "compensated", "{saga:#?}");
    assert_eq!(saga.reason, "order cancelled: changed my mind");
    // Nothing was sent; the payment, which a saga sends beside its reservation, is voided
    // with it all the same (a crashed incarnation might have sent both).
    assert_eq!(
        step_names(&saga),
        vec![
            ("reserve_stock", "voided"),
            ("authorize_payment", "voided"),
            ("cancel_order", "succeeded")
        ]
    );
    assert_eq!(count_events(&pool, "StockReserved", &order_id).await, 0);
    assert_eq!(count_events(&pool, "PaymentAuthorized", &order_id).await, 0);
}

async fn flags(pool: &PgPool) -> Vec<(uuid::Uuid, bool, Option<String>)> {
    sqlx::query_as("SELECT order_id, cancel_requested, cancel_reason FROM sagas ORDER BY order_id")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn applied(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT events_applied FROM projection_checkpoints WHERE projection = 'test_follower'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_batch_writes_all_of_itself_or_nothing(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let start = db::checkpoint(&mut conn, "test_follower", &["OrderPlaced"])
        .await
        .unwrap();
    assert_eq!(start, Position::START);
    let (earlier, fresh, withdrawn) = (
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
    );
    db::insert(&mut conn, &[saga(earlier)]).await.unwrap();
    let now = chrono::Utc::now();
    let mut batch = FollowerBatch::default();
    batch.start(saga(fresh));
    batch.start(saga(earlier)); // a replayed event: the saga exists and is kept
    batch.cancel(earlier, "order cancelled: late".into(), now);
    // Placed and cancelled in this batch: flagged before it is written.
    batch.start(saga(withdrawn));
    batch.cancel(withdrawn, "order cancelled: at once".into(), now);
    // The first two are handed to this instance's workers: `fresh` is written with the
    // lease; `earlier` exists already, and keeps the row it has.
    let (this, other) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let lease = chrono::Duration::seconds(10);
    batch.handoff = Some(Handoff {
        owner: this,
        until: now + lease,
        count: 2,
    });
    let to = Position::from_columns(7, 9).unwrap();

    // A checkpoint that moved meanwhile (another follower) writes nothing.
    let elsewhere = Position::from_columns(5, 1).unwrap();
    assert_eq!(
        db::apply_batch(&mut conn, "test_follower", elsewhere, to, 2, &batch, now)
            .await
            .unwrap(),
        None
    );
    assert_eq!(flags(&pool).await.len(), 1, "no saga started");
    assert!(!flags(&pool).await[0].1, "no saga flagged");
    assert_eq!(
        db::checkpoint(&mut conn, "test_follower", &["OrderPlaced"])
            .await
            .unwrap(),
        Position::START
    );

    // From where it stands, all of it.
    assert_eq!(
        db::apply_batch(&mut conn, "test_follower", start, to, 2, &batch, now)
            .await
            .unwrap(),
        Some(vec![fresh]),
        "only the saga written with the lease is handed off"
    );
    let mut expected = vec![
        (earlier, true, Some("order cancelled: late".to_owned())),
        (fresh, false, None),
        (withdrawn, true, Some("order cancelled: at once".to_owned())),
    ];
    expected.sort();
    assert_eq!(flags(&pool).await, expected);
    assert_eq!(
        db::checkpoint(&mut conn, "test_follower", &["OrderPlaced"])
            .await
            .unwrap(),
        to
    );
    assert_eq!(applied(&pool).await, 2);
    // The same batch again finds the checkpoint moved, and changes nothing more.
    assert_eq!(
        db::apply_batch(&mut conn, "test_follower", start, to, 2, &batch, now)
            .await
            .unwrap(),
        None
    );
    assert_eq!(flags(&pool).await, expected);
    assert_eq!(applied(&pool).await, 2);

    // Another instance claims every due saga but the one handed off (and holds them)...
    let due = chrono::Utc::now();
    let mut claimed = Vec::new();
    let hour = chrono::Duration::hours(1);
    while let Some(saga) = db::claim(&pool, other, &[], due, hour).await.unwrap() {
        claimed.push(saga.order_id);
    }
    claimed.sort();
    let mut unleased = vec![earlier, withdrawn];
    unleased.sort();
    assert_eq!(claimed, unleased);
    // ... and that one too once its lease has run out, as after a crash before any worker
    // of the instance it was handed to drove it.
    let later = due + lease + chrono::Duration::milliseconds(1);
    let taken = db::claim(&pool, other, &[], later, lease).await.unwrap();
    assert_eq!(taken.map(|s| s.order_id), Some(fresh));
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn sagas_handed_off_and_never_driven_are_released(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let start = db::checkpoint(&mut conn, "test_follower", &["OrderPlaced"])
        .await
        .unwrap();
    let (handed, owner, other) = (
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
    );
    let mut batch = FollowerBatch::default();
    batch.start(saga(handed));
    // Due from now on.
    let now = chrono::Utc::now();
    let lease = chrono::Duration::seconds(10);
    batch.handoff = Some(Handoff {
        owner,
        until: now + lease,
        count: 1,
    });
    let to = Position::from_columns(7, 9).unwrap();
    let leased = db::apply_batch(&mut conn, "test_follower", start, to, 1, &batch, now)
        .await
        .unwrap();
    assert_eq!(leased, Some(vec![handed]));
    assert!(
        db::claim(&pool, other, &[], now, lease)
            .await
            .unwrap()
            .is_none()
    );
    // Another owner's release changes nothing; the owner's frees it at once.
    db::release(&pool, &[handed], other).await.unwrap();
    assert!(
        db::claim(&pool, other, &[], now, lease)
            .await
            .unwrap()
            .is_none()
    );
    db::release(&pool, &[handed], owner).await.unwrap();
    let taken = db::claim(&pool, other, &[], now, lease).await.unwrap();
    assert_eq!(taken.map(|s| s.order_id), Some(handed));
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_saga_handed_to_an_idle_worker_does_not_wait_for_its_lease(pool: PgPool) {
    let command = start_command_service(&pool).await;
    let mut c = CommandServiceClient::new(command.channel().await);
    create_product(&mut c, "SKU-1", 10).await;
    // One worker, idle between orders, and a lease of a minute: a saga written with the
    // lease but never taken from the queue could only be claimed a minute later, long after
    // `finished` gives up. (Should the worker not be idle yet when an order's batch comes,
    // that saga is claimed at once instead.)
    let mut config = saga_config(&pool, command.addr);
    config.workers = 1;
    config.lease_ms = 60_000;
    let saga_service = start_saga_service(config).await;
    let mut s = SagaServiceClient::new(saga_service.channel().await);
    for _ in 0..3 {
        let order_id = place_order(&mut c, &[("SKU-1", 1)], "card").await;
        assert_eq!(finished(&mut s, &order_id).await.state, "completed");
    }
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_payment_to_settle_is_stored_under_a_name_older_builds_refuse(pool: PgPool) {
    use saga_service::saga::{Step, StepResult, VoidResult};
    // Out of stock: compensation starts by settling the payment sent beside.
    let policy = policy();
    let mut saga = saga(uuid::Uuid::new_v4());
    let now = chrono::Utc::now();
    saga.record(
        Step::ReserveStock,
        StepResult::Refused("out".into()),
        now,
        &policy,
        1.0,
    );
    saga.record_void(Step::ReserveStock, VoidResult::Voided, now, &policy, 1.0);
    let mut conn = pool.acquire().await.unwrap();
    db::insert(&mut conn, std::slice::from_ref(&saga))
        .await
        .unwrap();
    let stored: Vec<String> = sqlx::query_scalar("SELECT plan FROM sagas WHERE order_id = $1")
        .bind(saga.order_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    // A build that only knows the six plain step names cannot decode it, so it never
    // sends the payment as if it were a compensation.
    assert_eq!(stored, ["settle_authorize_payment", "cancel_order"]);
    let read = db::get(&pool, saga.order_id).await.unwrap().unwrap();
    assert_eq!(
        (read.state, read.plan),
        (saga.state, vec![Step::AuthorizePayment, Step::CancelOrder])
    );
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_worker_looks_in_the_table_only_when_a_claim_is_owed_or_the_poll_asks(pool: PgPool) {
    use std::{sync::Arc, time::Duration};

    use saga_service::worker::{Handoffs, Work, Worker};
    use tokio::sync::{Notify, watch};

    let command = start_command_service(&pool).await;
    let mut c = CommandServiceClient::new(command.channel().await);
    create_product(&mut c, "SKU-1", 5).await;
    // One worker, with no follower and no poll ticking: its wake-ups are the test's.
    let (work, poll) = (Arc::new(Work::new()), Arc::new(Notify::new()));
    let owner = uuid::Uuid::new_v4();
    let handoffs = Arc::new(Handoffs::new(owner, Duration::from_secs(10)));
    let worker = Worker {
        pool: pool.clone(),
        rows: saga_service::leased::LeasedRows::start(&pool, owner),
        client: CommandServiceClient::with_interceptor(
            command.channel().await,
            service_runtime::auth::BearerToken::new(None).unwrap(),
        ),
        clock: Arc::new(service_runtime::SystemClock),
        policy: policy(),
        work: work.clone(),
        poll: poll.clone(),
        handoffs: handoffs.clone(),
        failpoint: None,
    };
    let (stop, stopping) = watch::channel(false);
    let running = tokio::spawn(worker.run(stopping));
    // Its first look, as if polled, finds nothing; then it waits.
    while handoffs.idle() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Two sagas made due behind the instance's back, as another instance lets them go.
    let mut conn = pool.acquire().await.unwrap();
    let mut orders = Vec::new();
    for _ in 0..2 {
        let order_id = place_order(&mut c, &[("SKU-1", 1)], "card").await;
        let order_id: uuid::Uuid = order_id.parse().unwrap();
        db::insert(&mut conn, &[saga(order_id)]).await.unwrap();
        orders.push(order_id);
    }
    let states = || async {
        let mut states = Vec::new();
        for order_id in &orders {
            let (state, leased): (String, bool) = sqlx::query_as(
                "SELECT state, lease_owner IS NOT NULL FROM sagas WHERE order_id = $1",
            )
            .bind(order_id)
            .fetch_one(&pool)
            .await
            .unwrap();
            states.push(if leased { "leased".to_owned() } else { state });
        }
        states.sort();
        states
    };
    let settle = Duration::from_millis(300);

    // A wake-up with no claim owed (a hand-off another worker took first) is no reason to
    // look.
    work.handed(1);
    tokio::time::sleep(settle).await;
    assert_eq!(states().await, ["running", "running"]);

    // A claim owed finds one, and only one: driving it is no reason to look again.
    work.due(1);
    let mut now = states().await;
    for _ in 0..500 {
        if now.contains(&"completed".to_owned()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        now = states().await;
    }
    assert_eq!(now, ["completed", "running"]);
    tokio::time::sleep(settle).await;
    assert_eq!(states().await, ["completed", "running"]);
    assert_eq!(work.owed(), 0);

    // The poll finds the other.
    poll.notify_one();
    for _ in 0..500 {
        if states().await == ["completed", "completed"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(states().await, ["completed", "completed"]);
    stop.send(true).unwrap();
    running.await.unwrap();
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_cancellation_reads_its_saga_by_key_after_the_table_has_grown(pool: PgPool) {
    // The follower's statement runs on one connection for the life of the process, from
    // when the table is empty. A plan cached then (from the sixth call PostgreSQL uses a
    // generic plan when its estimate is no dearer than the custom plans') would scan every
    // saga to flag one once the table has grown. The connection is the follower's own kind.
    let mut conn = sqlx::PgConnection::connect_with(&follower::connect_options(&pool))
        .await
        .unwrap();
    let mut from = db::checkpoint(&mut conn, "test_follower", &["OrderPlaced"])
        .await
        .unwrap();
    let now = chrono::Utc::now();
    for n in 1..=10 {
        let mut batch = FollowerBatch::default();
        batch.start(saga(uuid::Uuid::new_v4()));
        batch.cancel(uuid::Uuid::new_v4(), "order cancelled".into(), now);
        let to = Position::from_columns(100 + n, n).unwrap();
        db::apply_batch(&mut conn, "test_follower", from, to, 1, &batch, now)
            .await
            .unwrap()
            .expect("the checkpoint moved");
        from = to;
    }
    grow_sagas(&pool, 20_000).await;
    let target: uuid::Uuid =
        sqlx::query_scalar("SELECT order_id FROM sagas WHERE NOT cancel_requested LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap();

    let before = saga_rows_read(&pool, &mut conn).await;
    let mut batch = FollowerBatch::default();
    batch.cancel(target, "order cancelled: late".into(), now);
    let to = Position::from_columns(200, 1).unwrap();
    db::apply_batch(&mut conn, "test_follower", from, to, 1, &batch, now)
        .await
        .unwrap()
        .expect("the checkpoint moved");
    let read = saga_rows_read(&pool, &mut conn).await - before;

    let flagged: bool =
        sqlx::query_scalar("SELECT cancel_requested FROM sagas WHERE order_id = $1")
            .bind(target)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(flagged);
    assert!(read < 100, "flagging one saga read {read} rows of 20,000");
}
