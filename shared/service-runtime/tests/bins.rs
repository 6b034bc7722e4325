//! The helper binaries the container image ships: the health probe the compose file's
//! health checks run, and the one-off migration step.

test_support::database_for_tests!();

use std::process::Command;

use sqlx::PgPool;
use tokio::net::TcpListener;
use tonic_health::ServingStatus;

/// A gRPC health server on a free port whose status the test sets.
async fn health_server() -> (std::net::SocketAddr, tonic_health::server::HealthReporter) {
    let (reporter, service) = tonic_health::server::health_reporter();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (addr, reporter)
}

fn probe(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_grpc-health-probe"))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_probe_passes_only_a_serving_service() {
    let (addr, reporter) = health_server().await;
    let addr = addr.to_string();
    reporter
        .set_service_status("orders.v1.CommandService", ServingStatus::Serving)
        .await;
    let (code, out) = probe(&[&addr, "orders.v1.CommandService"]);
    assert_eq!((code, out.trim()), (0, "SERVING"));
    reporter
        .set_service_status("orders.v1.CommandService", ServingStatus::NotServing)
        .await;
    let (code, out) = probe(&[&addr, "orders.v1.CommandService"]);
    assert_eq!((code, out.trim()), (1, "NotServing"));
    let (code, out) = probe(&[&format!("http://{addr}"), "orders.v1.Unknown"]);
    assert_eq!(code, 1, "{out}");
    let (code, out) = probe(&["127.0.0.1:1"]);
    assert_eq!(code, 1, "nothing listens there: {out}");
    let (code, out) = probe(&[]);
    assert_eq!(code, 2, "usage: {out}");
}

#[sqlx::test(migrations = false)]
async fn the_migration_step_migrates_and_says_so(pool: PgPool) {
    let url = test_support::database_url(&pool);
    let out = Command::new(env!("CARGO_BIN_EXE_orders-migrate"))
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "migrations applied"
    );
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_tables WHERE tablename IN ('events', 'command_log', 'sagas')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(tables, 3);
    let missing = Command::new(env!("CARGO_BIN_EXE_orders-migrate"))
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("DATABASE_URL must be set"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_probe_speaks_tls_and_mutual_tls() {
    let pki = test_support::security::Pki::new();
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter.set_serving::<tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>>().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            pki.pem("server.pem"),
            pki.pem("server-key.pem"),
        ))
        .client_ca_root(tonic::transport::Certificate::from_pem(pki.pem("ca.pem")));
    tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let target = format!("localhost:{}", addr.port());
    let path = |name: &str| pki.path(name).to_string_lossy().into_owned();
    let (ca, cert, key) = (path("ca.pem"), path("client.pem"), path("client-key.pem"));
    let (code, out) = probe(&[&target, "--ca", &ca, "--cert", &cert, "--key", &key]);
    assert_eq!((code, out.trim()), (0, "SERVING"));
    let (code, out) = probe(&[&target, "--ca", &ca]);
    assert_eq!(code, 1, "mutual TLS needs the client certificate: {out}");
    let (code, out) = probe(&[&target]);
    assert_eq!(code, 1, "plaintext to a TLS server: {out}");
    let (code, _) = probe(&[&target, "--cert", &cert]);
    assert_eq!(code, 2, "a certificate without its key is a usage error");
}
