//! The workers' batched saves and checks of the sagas they lease: each gets the answer it
//! would have had alone, also when they share one statement.

use event_store::Position;
use saga_service::{
    db::{self, FollowerBatch, Handoff, SagaSave},
    leased::{self, LeasedRows},
    saga::SagaState,
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::*;

/// Starts a saga for each of `orders`, all leased to `owner`, and flags the cancellation of
/// `cancelled`.
async fn start_leased(pool: &PgPool, owner: Uuid, orders: &[Uuid], cancelled: Uuid) {
    let mut conn = pool.acquire().await.unwrap();
    let start = db::checkpoint(&mut conn, "test_follower", &["OrderPlaced"])
        .await
        .unwrap();
    let now = chrono::Utc::now();
    let mut batch = FollowerBatch::default();
    for order in orders {
        batch.start(saga(*order));
    }
    batch.handoff = Some(Handoff {
        owner,
        until: now + chrono::Duration::seconds(60),
        count: orders.len(),
    });
    let middle = Position::from_columns(7, 9).unwrap();
    let leased = db::apply_batch(&mut conn, "test_follower", start, middle, 1, &batch, now)
        .await
        .unwrap();
    assert_eq!(leased.map(|l| l.len()), Some(orders.len()));
    let mut batch = FollowerBatch::default();
    batch.cancel(cancelled, "changed my mind".into(), now);
    let end = Position::from_columns(8, 10).unwrap();
    db::apply_batch(&mut conn, "test_follower", middle, end, 1, &batch, now)
        .await
        .unwrap()
        .unwrap();
}

async fn stored(pool: &PgPool, order_id: Uuid) -> (String, Vec<String>, Option<Uuid>) {
    sqlx::query_as("SELECT state, plan, lease_owner FROM sagas WHERE order_id = $1")
        .bind(order_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn saves_and_checks_sharing_a_statement_each_get_their_own_answer(pool: PgPool) {
    let (owner, other) = (Uuid::new_v4(), Uuid::new_v4());
    let ids: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    let [first, done, lost, cancelled, plain] = ids[..] else {
        unreachable!()
    };
    start_leased(&pool, owner, &ids, cancelled).await;
    // Another instance holds `lost` now.
    sqlx::query("UPDATE sagas SET lease_owner = $2 WHERE order_id = $1")
        .bind(lost)
        .bind(other)
        .execute(&pool)
        .await
        .unwrap();
    let rows = LeasedRows::start(&pool, owner);

    // The first save waits on a lock on its row, so what is asked meanwhile shares the
    // next statement.
    let mut locker = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM sagas WHERE order_id = $1 FOR UPDATE")
        .bind(first)
        .execute(&mut *locker)
        .await
        .unwrap();
    let mut held = saga(first);
    held.plan.clear();
    held.state = SagaState::Completed;
    let waiting = tokio::spawn({
        let rows = rows.clone();
        async move { rows.save(SagaSave::new(&held, false)).await }
    });
    while sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'WITH saved%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap()
        == 0
    {
        tokio::task::yield_now().await;
    }
    let mut finished = saga(done);
    finished.state = SagaState::Completed;
    finished.plan.clear();
    let still_running = saga(lost);
    let mut together = Box::pin(async {
        tokio::join!(
            rows.save(SagaSave::new(&finished, false)),
            rows.save(SagaSave::new(&still_running, true)),
            rows.check(cancelled),
            rows.check(plain),
            rows.check(lost),
        )
    });
    // Polled once: every save and check is asked, behind the blocked statement.
    tokio::select! {
        biased;
        _ = &mut together => panic!("answered while the first statement was blocked"),
        _ = std::future::ready(()) => {}
    }
    locker.rollback().await.unwrap();

    assert_eq!(waiting.await.unwrap().unwrap(), Some((false, None)));
    let (saved, lost_save, cancel_check, plain_check, lost_check) = together.await;
    assert_eq!(saved.unwrap(), Some((false, None)));
    assert_eq!(lost_save.unwrap(), None, "another instance holds it");
    assert_eq!(
        cancel_check.unwrap(),
        Some((true, Some("changed my mind".into())))
    );
    assert_eq!(plain_check.unwrap(), Some((false, None)));
    assert_eq!(lost_check.unwrap(), None, "another instance holds it");

    // Written only where the lease was held; a lease kept only when asked.
    assert_eq!(
        stored(&pool, first).await,
        ("completed".into(), vec![], None)
    );
    assert_eq!(
        stored(&pool, done).await,
        ("completed".into(), vec![], None)
    );
    let plan = saga(lost).plan_names();
    assert_eq!(
        stored(&pool, lost).await,
        ("running".into(), plan.clone(), Some(other))
    );
    assert_eq!(
        stored(&pool, plain).await,
        ("running".into(), plan, Some(owner))
    );
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_save_whose_statement_fails_is_an_error_not_a_lost_lease(pool: PgPool) {
    let owner = Uuid::new_v4();
    let order = Uuid::new_v4();
    start_leased(&pool, owner, &[order], Uuid::new_v4()).await;
    let rows = LeasedRows::start(&pool, owner);
    let mut running = saga(order);
    running.attempts = 1;
    assert_eq!(
        rows.save(SagaSave::new(&running, true)).await.unwrap(),
        Some((false, None))
    );
    // The statements' own connection dies under them.
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'saga-service leased rows' AND datname = current_database()",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(ended, [true]);
    assert!(rows.save(SagaSave::new(&running, true)).await.is_err());
    // The next statement goes over a new connection, and the lease was never lost.
    running.attempts = 2;
    assert_eq!(
        rows.save(SagaSave::new(&running, true)).await.unwrap(),
        Some((false, None))
    );
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM sagas WHERE order_id = $1")
        .bind(order)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(attempts, 2);
    assert_eq!(rows.check(order).await.unwrap(), Some((false, None)));
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_save_reads_its_saga_by_key_after_the_table_has_grown(pool: PgPool) {
    // The statement runs on one connection from when the table may be empty; a plan
    // cached then would scan every saga to write one once the table has grown.
    let owner = Uuid::new_v4();
    let orders: Vec<Uuid> = (0..10).map(|_| Uuid::new_v4()).collect();
    start_leased(&pool, owner, &orders, Uuid::new_v4()).await;
    let mut own = leased::own_connection(&pool);
    let read = own
        .run(async |conn| {
            for (n, order) in (0u32..).zip(&orders) {
                let mut running = saga(*order);
                running.attempts = n;
                let save = [SagaSave::new(&running, true)];
                assert_eq!(
                    db::save_and_check(conn, owner, &save, &[*order])
                        .await?
                        .len(),
                    2
                );
            }
            grow_sagas(&pool, 20_000).await;

            let before = saga_rows_read(&pool, conn).await;
            let save = [SagaSave::new(&saga(orders[0]), true)];
            assert_eq!(
                db::save_and_check(conn, owner, &save, &[orders[1]])
                    .await?
                    .len(),
                2
            );
            Ok(saga_rows_read(&pool, conn).await - before)
        })
        .await
        .unwrap();
    assert!(read < 100, "saving one saga read {read} rows of 20,000");
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn an_operators_change_ends_a_lease_that_ran_out(pool: PgPool) {
    let owner = Uuid::new_v4();
    let (order, unrelated) = (Uuid::new_v4(), Uuid::new_v4());
    start_leased(&pool, owner, &[order], unrelated).await;
    // The lease has run out, but its owner's worker still drives the saga (a stalled step).
    sqlx::query("UPDATE sagas SET lease_until = now() - interval '1 second' WHERE order_id = $1")
        .bind(order)
        .execute(&pool)
        .await
        .unwrap();
    // An operator changes the saga meanwhile, as the admin API does.
    let mut tx = pool.begin().await.unwrap();
    let (mut saga, _) = db::lock_for_admin(&mut tx, order).await.unwrap().unwrap();
    saga.last_error = Some("changed by an operator".into());
    db::save_admin(&mut tx, &saga).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(stored(&pool, order).await.2, None);

    // The stalled worker's save and check find the lease lost; the operator's change stays.
    let mut conn = pool.acquire().await.unwrap();
    let mut stale = saga.clone();
    stale.last_error = Some("the worker's".into());
    let answers = db::save_and_check(&mut conn, owner, &[SagaSave::new(&stale, true)], &[order])
        .await
        .unwrap();
    assert!(answers.is_empty(), "{answers:?}");
    let last_error: Option<String> =
        sqlx::query_scalar("SELECT last_error FROM sagas WHERE order_id = $1")
            .bind(order)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(last_error.as_deref(), Some("changed by an operator"));
}
