//! The Prometheus metrics move with what happens: scraped over HTTP before and after real
//! calls. The recorder is the process's, shared by every service (and every test) in it,
//! so each check is "at least this much more".

use contracts::orders::v1 as pb;
use sqlx::{Connection, PgPool};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::helpers::*;

/// Serves this process's metrics on a free port and returns a scraper for it.
async fn metrics_endpoint() -> (std::net::SocketAddr, service_runtime::task::AbortOnDrop<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (addr, service_runtime::metrics::serve(listener))
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    response
}

use test_support::metric_value as value;

async fn eventually(addr: std::net::SocketAddr, check: impl Fn(&str) -> bool) -> String {
    let mut text = String::new();
    for _ in 0..100 {
        text = scrape(addr).await;
        if check(&text) {
            return text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the metrics never got there:\n{text}");
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn the_metrics_move_with_what_happens(pool: PgPool) {
    let (addr, _server) = metrics_endpoint().await;
    let mut sys = start(&pool).await;
    let before = scrape(addr).await;
    let handled = |t: &str, method: &str, code: &str| {
        value(
            t,
            "grpc_server_handled_total",
            &[
                "service=\"command-service\"",
                &format!("grpc_method=\"{method}\""),
                &format!("grpc_code=\"{code}\""),
            ],
        )
    };

    // Every RPC is counted by method and status code.
    create_product(&mut sys.commands, "SCARCE-1", 1).await;
    let bad = sys
        .commands
        .place_order(pb::PlaceOrderRequest {
            command_id: "not-a-uuid".into(),
            ..Default::default()
        })
        .await;
    assert!(bad.is_err());
    // A stale expected version is a version conflict.
    let (order_id, _) = create_order(
        &mut sys.commands,
        &id(),
        vec![catalogue_line("SCARCE-1", 2)],
    )
    .await;
    let stale = sys
        .commands
        .place_order(pb::PlaceOrderRequest {
            command_id: id(),
            order_id,
            payment_method: "card".into(),
            expected_version: Some(7),
        })
        .await;
    assert!(stale.is_err());
    // An order for more than there is: the saga compensates it.
    let short = place_order(&mut sys.commands, &[("SCARCE-1", 2)], "card").await;
    assert_eq!(finished(&mut sys.sagas, &short).await.state, "compensated");

    let after = eventually(addr, |t| {
        value(t, "saga_finished_total", &["state=\"compensated\""])
            > value(&before, "saga_finished_total", &["state=\"compensated\""])
    })
    .await;
    assert!(handled(&after, "CreateProduct", "OK") > handled(&before, "CreateProduct", "OK"));
    assert!(
        handled(&after, "PlaceOrder", "InvalidArgument")
            > handled(&before, "PlaceOrder", "InvalidArgument")
    );
    assert!(handled(&after, "PlaceOrder", "Aborted") > handled(&before, "PlaceOrder", "Aborted"));
    assert!(
        value(&after, "command_version_conflicts_total", &[])
            > value(&before, "command_version_conflicts_total", &[])
    );
    assert!(
        value(&after, "saga_voids_total", &["result=\"voided\""])
            > value(&before, "saga_voids_total", &["result=\"voided\""]),
        "the refused reservation was made final"
    );
    assert!(
        value(
            &after,
            "event_store_events_appended_total",
            &["event_type=\"OrderCancelled\""]
        ) > value(
            &before,
            "event_store_events_appended_total",
            &["event_type=\"OrderCancelled\""]
        )
    );
    assert!(
        value(
            &after,
            "grpc_server_handling_seconds_count",
            &["grpc_method=\"ReserveStock\""]
        ) > 0.0
    );
    assert!(value(&after, "event_store_group_commit_commands_count", &[]) > 0.0);
    // The saga-service's workers were idle: the follower handed them the sagas it started.
    assert!(
        value(&after, "saga_handed_off_total", &[]) > value(&before, "saga_handed_off_total", &[])
    );
    // Each worker's first look, at start, found the table empty.
    assert!(value(&after, "saga_claims_total", &["result=\"none\""]) > 0.0);

    // A transaction left open holds the log back, and the gauge says so.
    let mut holder = sqlx::PgConnection::connect(&test_support::database_url(&pool))
        .await
        .unwrap();
    let mut open = holder.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *open)
        .await
        .unwrap();
    create_product(&mut sys.commands, "LATER-2", 1).await;
    eventually(addr, |t| value(t, "event_log_held_back_events", &[]) >= 1.0).await;
    open.rollback().await.unwrap();
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn the_state_gauge_counts_every_unfinished_state_and_no_finished_one(pool: PgPool) {
    use saga_service::saga::SagaState;
    let mut conn = pool.acquire().await.unwrap();
    let mut sagas: Vec<_> = (0..4).map(|_| saga(uuid::Uuid::new_v4())).collect();
    sagas[0].state = SagaState::Completed;
    sagas[1].state = SagaState::Compensated;
    sagas[2].state = SagaState::NeedsAttention;
    saga_service::db::insert(&mut conn, &sagas).await.unwrap();
    // (The gauge is set from these, every 5 s; the process's recorder is shared by the
    // tests running in it, so the query is checked rather than the gauge.)
    assert_eq!(
        saga_service::db::count_unfinished(&pool).await.unwrap(),
        vec![
            (SagaState::Running, 1),
            (SagaState::Compensating, 0),
            (SagaState::NeedsAttention, 1)
        ]
    );
}
