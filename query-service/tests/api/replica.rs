//! query-service in replica mode, on a PostgreSQL hot standby of the test cluster: reads
//! with a consistency token see their writes, reads without one never go backwards, a
//! stopped standby answers UNAVAILABLE (not a hang) and the replica recovers with it.

use std::time::Duration;

use contracts::orders::v1::{self as pb, query_service_client::QueryServiceClient};
use sqlx::PgPool;
use test_support::{Running, standby::Standby};
use tonic::Code;

use crate::helpers::*;

async fn start_replica(pool: &PgPool, standby: &Standby) -> Running {
    let mut config: query_service::Config =
        test_support::config::<query_service::Cli>("query-service", pool, &["--replica"]).config;
    config.database_url = standby.url();
    Running::start(move |listener, shutdown| query_service::run(config, listener, shutdown)).await
}

async fn add_line(c: &mut Commands, order_id: &str, sku: &str) -> String {
    c.add_order_line(pb::AddOrderLineRequest {
        command_id: id(),
        order_id: order_id.into(),
        line: Some(catalogue_line(sku, 1)),
        expected_version: None,
    })
    .await
    .expect("add a line")
    .into_inner()
    .result
    .unwrap()
    .consistency_token
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_replica_on_a_standby_reads_its_writes_and_survives_the_standby_going_away(pool: PgPool) {
    let mut sys = start(&pool).await;
    let standby = Standby::start(&pool);
    let replica = start_replica(&pool, &standby).await;
    let mut r = QueryServiceClient::new(replica.channel().await);
    for sku in ["SKU-1", "SKU-2", "SKU-3"] {
        create_product(&mut sys.commands, sku, 100).await;
    }

    // Read-your-writes, through the standby.
    let (order_id, token) =
        create_order(&mut sys.commands, &id(), vec![catalogue_line("SKU-1", 1)]).await;
    let seen = get_order(&mut r, &order_id, &token).await;
    assert_eq!((seen.version, seen.status.as_str()), (1, "draft"));

    // Without a token a read may be stale, but never older than one before it.
    let mut last = 0;
    for sku in ["SKU-2", "SKU-3"] {
        add_line(&mut sys.commands, &order_id, sku).await;
        for _ in 0..20 {
            let version = get_order(&mut r, &order_id, "").await.version;
            assert!(version >= last, "went back from {last} to {version}");
            last = version;
        }
    }

    // WatchOrder on the replica follows the standby.
    let mut stream = r
        .watch_order(pb::WatchOrderRequest {
            order_id: order_id.clone(),
            consistency_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    sys.commands
        .place_order(pb::PlaceOrderRequest {
            command_id: id(),
            order_id: order_id.clone(),
            payment_method: "card".into(),
            expected_version: None,
        })
        .await
        .unwrap();
    let placed = loop {
        let view = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("the replica's watch keeps moving")
            .unwrap()
            .expect("a view")
            .order
            .unwrap();
        if view.status == "placed" {
            break view;
        }
    };
    assert_eq!(placed.version, 4);

    // The standby goes away: UNAVAILABLE, promptly.
    standby.stop();
    let token = add_line_to_new_order(&mut sys.commands).await;
    let refused = tokio::time::timeout(
        Duration::from_secs(15),
        r.get_order(pb::GetOrderRequest {
            order_id: order_id.clone(),
            consistency_token: String::new(),
        }),
    )
    .await
    .expect("an answer, not a hang")
    .expect_err("the standby is down");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    // It comes back, catches up by streaming, and the replica with it.
    standby.resume();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match r
            .get_order(pb::GetOrderRequest {
                order_id: token.0.clone(),
                consistency_token: token.1.clone(),
            })
            .await
        {
            Ok(found) => {
                assert_eq!(found.into_inner().order.unwrap().version, 1);
                break;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(
                    std::time::Instant::now() < deadline,
                    "the replica never recovered: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Creates an order while the standby is down; returns its id and token.
async fn add_line_to_new_order(c: &mut Commands) -> (String, String) {
    create_order(c, &id(), vec![catalogue_line("SKU-1", 1)]).await
}
