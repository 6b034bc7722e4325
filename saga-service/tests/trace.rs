//! One trace follows an order across the services: the PlaceOrder call, its append, the
//! saga that starts from the OrderPlaced event (through the traceparent stored in the
//! event's metadata), each of the saga's calls to command-service, and their appends.
//! Spans go to the OpenTelemetry SDK's in-memory exporter; this binary installs that as
//! its process's tracing subscriber, so it holds this test alone.

test_support::database_for_tests!();

use std::collections::HashSet;

use contracts::orders::v1::{
    command_service_client::CommandServiceClient, saga_service_client::SagaServiceClient,
};
use opentelemetry_sdk::trace::InMemorySpanExporter;
use sqlx::PgPool;
use test_support::{Running, builders::*};

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn one_trace_crosses_command_and_saga_service(pool: PgPool) {
    let exporter = InMemorySpanExporter::default();
    let provider = service_runtime::telemetry::provider("orders-test".into(), |b| {
        b.with_simple_exporter(exporter.clone())
    });
    assert!(
        service_runtime::telemetry::init_for_tests_with(Some(provider.clone())),
        "this binary installs the only subscriber"
    );
    let command_config: command_service::Config =
        test_support::config("command-service", &pool, &[]);
    let command = Running::start(move |l, s| command_service::run(command_config, l, s)).await;
    let command_url = format!("http://{}", command.addr);
    let saga_config: saga_service::Config = test_support::config(
        "saga-service",
        &pool,
        &["--command-service-url", &command_url],
    );
    let saga = Running::start(move |l, s| saga_service::run(saga_config, l, s)).await;
    let mut c = CommandServiceClient::new(command.channel().await);
    let mut s = SagaServiceClient::new(saga.channel().await);

    create_product(&mut c, "SKU-1", 5).await;
    let order_id = place_order(&mut c, &[("SKU-1", 1)], "card").await;
    for _ in 0..200 {
        let state = s
            .get_saga(contracts::orders::v1::GetSagaRequest {
                order_id: order_id.clone(),
            })
            .await
            .map(|r| r.into_inner().saga.unwrap().state)
            .unwrap_or_default();
        if state == "completed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let _ = provider.force_flush();
    let spans = exporter.get_finished_spans().unwrap();
    let place = spans
        .iter()
        .find(|s| s.name == "/orders.v1.CommandService/PlaceOrder")
        .expect("a server span for PlaceOrder");
    let trace = place.span_context.trace_id();
    let in_trace: HashSet<&str> = spans
        .iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .map(|s| s.name.as_ref())
        .collect();
    for expected in [
        "/orders.v1.CommandService/PlaceOrder",
        "append",
        "saga reserve_stock",
        "/orders.v1.CommandService/ReserveStock",
        "saga authorize_payment",
        "/orders.v1.CommandService/AuthorizePayment",
        "saga confirm_order",
        "/orders.v1.CommandService/ConfirmOrder",
    ] {
        assert!(
            in_trace.contains(expected),
            "{expected} is not in the PlaceOrder trace; it holds {in_trace:?}"
        );
    }
    // The trace id is on the log lines too: the server span carries it as a field.
    let reserve = spans
        .iter()
        .find(|s| s.name == "/orders.v1.CommandService/ReserveStock")
        .unwrap();
    assert!(
        reserve
            .attributes
            .iter()
            .any(|kv| kv.key.as_str() == "trace_id" && kv.value.as_str() == trace.to_string()),
        "{:?}",
        reserve.attributes
    );
}
