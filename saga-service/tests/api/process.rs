//! saga-service as a real process, crashed at the worst moment: the test-only failpoint
//! aborts it right after a step's command came back and before the saga was saved.

use contracts::orders::v1::{
    command_service_client::CommandServiceClient, saga_service_client::SagaServiceClient,
};
use sqlx::PgPool;
use test_support::process::Process;

use crate::helpers::*;

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_process_aborted_between_an_answer_and_its_save_is_resumed_by_the_next(pool: PgPool) {
    let url = test_support::database_url(&pool);
    let command = start_command_service(&pool).await;
    let mut c = CommandServiceClient::new(command.channel().await);
    create_product(&mut c, "SKU-1", 5).await;
    let command_url = format!("http://{}", command.addr);
    let env = |failpoint: &'static str| {
        vec![
            ("DATABASE_URL", url.clone()),
            ("COMMAND_SERVICE_URL", command_url.clone()),
            ("SAGA_LEASE_MS", "500".to_owned()),
            ("SAGA_RESERVE_DEADLINE_MS", "300".to_owned()),
            ("SAGA_FAILPOINT", failpoint.to_owned()),
        ]
    };
    let first_env = env("abort-after:reserve_stock");
    let first_env: Vec<(&str, &str)> = first_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut first = Process::start(
        env!("CARGO_BIN_EXE_saga-service"),
        "SAGA_SERVICE_ADDR",
        &first_env,
    );
    first.wait_serving().await;
    let order_id = place_order(&mut c, &[("SKU-1", 2)], "card").await;
    let status = first.wait_exit(std::time::Duration::from_secs(30)).await;
    assert!(!status.success(), "the failpoint aborts the process");
    assert!(first.logs().contains("failpoint"), "{}", first.logs());
    assert_eq!(count_events(&pool, "StockReserved", &order_id).await, 1);

    // The next process finds the saga at its reserve step, long past that step's deadline
    // by the time the lease ran out, asks again, and goes on.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let next_env = env("");
    let next_env: Vec<(&str, &str)> = next_env
        .iter()
        .filter(|(k, _)| *k != "SAGA_FAILPOINT")
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    let mut next = Process::start(
        env!("CARGO_BIN_EXE_saga-service"),
        "SAGA_SERVICE_ADDR",
        &next_env,
    );
    next.wait_serving().await;
    let mut s = SagaServiceClient::connect(format!("http://{}", next.addr))
        .await
        .unwrap();
    let saga = finished(&mut s, &order_id).await;
    assert_eq!(saga.state, "completed", "{saga:#?}");
    for event_type in ["StockReserved", "PaymentAuthorized", "OrderConfirmed"] {
        assert_eq!(
            count_events(&pool, event_type, &order_id).await,
            1,
            "{event_type}"
        );
    }
    assert!(next.terminate().await.success());
}
