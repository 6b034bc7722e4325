//! WatchOrder: every state change, in order, ending at the terminal state; nothing leaks.

use contracts::orders::v1 as pb;
use sqlx::PgPool;

use crate::helpers::*;

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn watch_delivers_every_change_and_ends_when_final(pool: PgPool) {
    let mut sys = start(&pool).await;
    create_product_priced(&mut sys.commands, "SKU-1", 100, 10).await;
    create_product_priced(&mut sys.commands, "SKU-2", 50, 10).await;
    let (order_id, token) =
        create_order(&mut sys.commands, &id(), vec![line("SKU-1", 2, 100)]).await;
    let mut stream = sys
        .queries
        .watch_order(pb::WatchOrderRequest {
            order_id: order_id.clone(),
            consistency_token: token,
        })
        .await
        .unwrap()
        .into_inner();
    let c = &mut sys.commands;
    c.add_order_line(pb::AddOrderLineRequest {
        command_id: id(),
        order_id: order_id.clone(),
        line: Some(line("SKU-2", 1, 50)),
        expected_version: None,
    })
    .await
    .unwrap();
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
        order_id: order_id.clone(),
    })
    .await
    .unwrap();
    c.cancel_order(pb::CancelOrderRequest {
        command_id: id(),
        order_id: order_id.clone(),
        reason: "no longer needed".into(),
    })
    .await
    .unwrap();

    let mut seen = Vec::new();
    while let Some(message) =
        tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
            .await
            .expect("the stream must keep moving")
            .unwrap()
    {
        let order = message.order.unwrap();
        seen.push((order.version, order.status.clone(), order.lines.len()));
    }
    let versions: Vec<u64> = seen.iter().map(|(v, _, _)| *v).collect();
    assert_eq!(
        versions,
        vec![1, 2, 3, 4, 5],
        "one view per version, in order: {seen:?}"
    );
    let statuses: Vec<&str> = seen.iter().map(|(_, s, _)| s.as_str()).collect();
    assert_eq!(
        statuses,
        vec!["draft", "draft", "placed", "confirmed", "cancelled"]
    );
    assert_eq!(seen[1].2, 2);
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_cancelled_watch_leaves_nothing_running(pool: PgPool) {
    let mut sys = start(&pool).await;
    create_product(&mut sys.commands, "SKU-1", 10).await;
    let (order_id, token) = create_order(&mut sys.commands, &id(), vec![]).await;
    let mut streams = Vec::new();
    for _ in 0..20 {
        let mut stream = sys
            .queries
            .watch_order(pb::WatchOrderRequest {
                order_id: order_id.clone(),
                consistency_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        stream.message().await.unwrap().unwrap();
        streams.push(stream);
    }
    let watchers = |q: &mut Queries| {
        let mut q = q.clone();
        async move {
            q.get_projection_status(pb::GetProjectionStatusRequest {})
                .await
                .unwrap()
                .into_inner()
                .active_watchers
        }
    };
    assert_eq!(watchers(&mut sys.queries).await, 20);
    drop(streams);
    // The tasks notice the closed streams at the next change, or at once.
    sys.commands
        .add_order_line(pb::AddOrderLineRequest {
            command_id: id(),
            order_id: order_id.clone(),
            line: Some(catalogue_line("SKU-1", 1)),
            expected_version: None,
        })
        .await
        .unwrap();
    let mut left = -1;
    for _ in 0..100 {
        left = watchers(&mut sys.queries).await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(left, 0, "every cancelled watcher's task must end");
    // And shutdown is not held up by open watches.
    let _open = sys
        .queries
        .watch_order(pb::WatchOrderRequest {
            order_id,
            consistency_token: String::new(),
        })
        .await
        .unwrap();
    sys.query.stop().await.unwrap();
}
