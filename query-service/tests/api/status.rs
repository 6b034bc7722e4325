//! GetProjectionStatus says what an operator needs: lag in the events each follower reads,
//! positions a person can compare, and a log held back by a transaction still open.

use contracts::orders::v1 as pb;
use sqlx::{Connection, PgPool};

use crate::helpers::*;

async fn status(q: &mut Queries, name: &str) -> pb::ProjectionStatus {
    q.get_projection_status(pb::GetProjectionStatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .projections
        .into_iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no projection {name}"))
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_follower_lags_only_by_the_events_it_reads(pool: PgPool) {
    let mut sys = start(&pool).await;
    // A follower of OrderPlaced and OrderCancelled only, at the start of the log.
    sqlx::query(
        "INSERT INTO projection_checkpoints (projection, transaction_id, global_position, event_types) \
         VALUES ('placed_follower', 0, 0, ARRAY['OrderPlaced', 'OrderCancelled'])",
    )
    .execute(&pool)
    .await
    .unwrap();
    create_product(&mut sys.commands, "SKU-1", 5).await;
    create_order(&mut sys.commands, &id(), vec![catalogue_line("SKU-1", 1)]).await;
    caught_up(&mut sys.queries, &pool).await;
    let follower = status(&mut sys.queries, "placed_follower").await;
    assert_eq!(
        follower.lag_events, 0,
        "nothing it reads is waiting: {follower:?}"
    );
    assert_eq!(follower.lag_ms, 0);
    assert_eq!(follower.event_types, vec!["OrderPlaced", "OrderCancelled"]);
    assert_eq!((follower.checkpoint_event, follower.head_event), (0, 2));
    let read_models = status(&mut sys.queries, "read_models").await;
    assert_eq!(read_models.checkpoint_event, read_models.head_event);
    assert!(read_models.event_types.is_empty(), "it reads every type");

    place_order(&mut sys.commands, &[("SKU-1", 1)], "card").await;
    caught_up(&mut sys.queries, &pool).await;
    let follower = status(&mut sys.queries, "placed_follower").await;
    assert_eq!(follower.lag_events, 1, "{follower:?}");
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_transaction_left_open_shows_as_a_held_back_log(pool: PgPool) {
    let mut sys = start(&pool).await;
    create_product(&mut sys.commands, "SKU-1", 5).await;
    caught_up(&mut sys.queries, &pool).await;
    // A transaction that has taken an id and stays open holds the log's horizon back.
    let mut holder = sqlx::PgConnection::connect(&test_support::database_url(&pool))
        .await
        .unwrap();
    let mut open = holder.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *open)
        .await
        .unwrap();
    create_order(&mut sys.commands, &id(), vec![catalogue_line("SKU-1", 1)]).await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let held = status(&mut sys.queries, "read_models").await;
    assert_eq!(held.lag_events, 0, "nothing readable is waiting");
    assert!(held.held_back_events >= 1, "{held:?}");
    assert!(held.held_back_ms >= 50, "{held:?}");
    open.rollback().await.unwrap();
    // Released: the projection catches up and nothing is held back (other tests' short
    // transactions may hold the shared horizon for a moment).
    for _ in 0..200 {
        let s = status(&mut sys.queries, "read_models").await;
        if s.held_back_events == 0 && s.checkpoint_event == s.head_event && s.head_event == 2 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!(
        "still held back: {:?}",
        status(&mut sys.queries, "read_models").await
    );
}
