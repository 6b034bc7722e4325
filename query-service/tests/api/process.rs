//! The query-service binary as users run it: serving until SIGTERM, and `rebuild`.

use sqlx::PgPool;
use test_support::process::Process;

use crate::helpers::*;

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn the_binary_serves_stops_on_sigterm_and_rebuilds(pool: PgPool) {
    let url = test_support::database_url(&pool);
    let command = start_command_service(&pool).await;
    let mut c = Commands::new(command.channel().await);
    create_product(&mut c, "SKU-1", 3).await;
    place_order(&mut c, &[("SKU-1", 1)], "card").await;

    let mut service = Process::start(
        env!("CARGO_BIN_EXE_query-service"),
        "QUERY_SERVICE_ADDR",
        &[("DATABASE_URL", &url)],
    );
    service.wait_serving().await;
    let mut q = Queries::connect(format!("http://{}", service.addr))
        .await
        .unwrap();
    caught_up(&mut q, &pool).await;
    let status = service.terminate().await;
    assert!(status.success(), "{status}:\n{}", service.logs());

    // `query-service rebuild` replays the log into fresh tables and swaps them in.
    let rebuild = std::process::Command::new(env!("CARGO_BIN_EXE_query-service"))
        .arg("rebuild")
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&rebuild.stderr).into_owned()
        + &String::from_utf8_lossy(&rebuild.stdout);
    assert!(rebuild.status.success(), "{out}");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM read_orders")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 1, "{out}");
    assert_same_model(&stored_model(&pool).await, &folded_model(&pool).await);
}
