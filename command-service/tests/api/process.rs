//! The command-service binary as users run it: configured by the environment, JSON logs
//! without colour codes, a graceful stop on SIGTERM.

use contracts::orders::v1::command_service_client::CommandServiceClient;
use sqlx::PgPool;
use test_support::process::Process;

use crate::helpers::*;

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn the_binary_serves_and_stops_cleanly_on_sigterm(pool: PgPool) {
    let url = test_support::database_url(&pool);
    let mut service = Process::start(
        env!("CARGO_BIN_EXE_command-service"),
        "COMMAND_SERVICE_ADDR",
        &[("DATABASE_URL", &url), ("LOG_FORMAT", "json")],
    );
    service.wait_serving().await;
    let mut c = CommandServiceClient::connect(format!("http://{}", service.addr))
        .await
        .unwrap();
    create_product(&mut c, "SKU-1", 1).await;
    let status = service.terminate().await;
    assert!(status.success(), "{status}:\n{}", service.logs());
    let logs = service.logs();
    assert!(logs.contains("SIGTERM received, shutting down"), "{logs}");
    for line in logs.lines() {
        assert!(
            !line.contains('\u{1b}'),
            "no colour codes in a log file: {line}"
        );
        let parsed: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(parsed["level"].is_string(), "{line}");
    }
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn the_binary_refuses_to_start_without_its_database(_pool: PgPool) {
    let mut service = Process::start(
        env!("CARGO_BIN_EXE_command-service"),
        "COMMAND_SERVICE_ADDR",
        &[("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")],
    );
    let status = service.wait_exit(std::time::Duration::from_secs(30)).await;
    assert!(!status.success());
    assert!(
        service.logs().contains("cannot connect to the database"),
        "{}",
        service.logs()
    );
}
