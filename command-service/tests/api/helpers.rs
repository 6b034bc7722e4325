//! Starting the service and building requests.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use command_service::Config;
use contracts::orders::v1::{self as pb, command_service_client::CommandServiceClient};
use service_runtime::FixedClock;
use sqlx::PgPool;
use test_support::Running;
use tonic::transport::Channel;

pub type Client = CommandServiceClient<Channel>;

pub use test_support::builders::*;

/// Creates a draft order with the given lines; returns its id.
pub async fn create_order(client: &mut Client, lines: Vec<pb::OrderLine>) -> String {
    test_support::builders::create_order(client, &id(), lines)
        .await
        .0
}

/// A running command-service and a client for it.
pub struct TestApp {
    pub running: Running,
    pub client: Client,
    pub pool: PgPool,
}

pub async fn spawn_app(pool: &PgPool) -> TestApp {
    spawn_app_with(pool, 100).await
}

pub async fn spawn_app_with(pool: &PgPool, snapshot_every: u64) -> TestApp {
    let config: Config = test_support::config(
        "command-service",
        pool,
        &["--snapshot-every", &snapshot_every.to_string()],
    );
    service_runtime::telemetry::init_for_tests();
    let clock = Arc::new(FixedClock::at(
        Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
    ));
    let running = Running::start(move |listener, shutdown| async move {
        command_service::run_with_clock(config, listener, clock, shutdown).await
    })
    .await;
    let client = CommandServiceClient::new(running.channel().await);
    TestApp {
        running,
        client,
        pool: pool.clone(),
    }
}

impl TestApp {
    /// How many events the store holds.
    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

/// The status code and message of a failed call.
#[track_caller]
pub fn code<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> (tonic::Code, String) {
    let status = result.expect_err("the call should have failed");
    (status.code(), status.message().to_owned())
}
