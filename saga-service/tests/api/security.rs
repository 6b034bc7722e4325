//! Running securely: every RPC of every service needs a valid token with its role; TLS,
//! mutual TLS, and the saga completing orders with all of it on; the limits every server
//! applies.

use std::{str::FromStr, time::Duration};

use contracts::orders::v1::{
    self as pb, command_service_client::CommandServiceClient,
    query_service_client::QueryServiceClient, saga_service_client::SagaServiceClient,
};
use prost::Message;
use sqlx::PgPool;
use test_support::{
    Running,
    security::{Pki, SECRET, token, token_with},
};
use tonic::{
    Code,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

use crate::helpers::*;

fn secured(
    mut server: service_runtime::server::ServerConfig,
) -> service_runtime::server::ServerConfig {
    server.auth.auth_hs256_secret = Some(SECRET.into());
    server
}

/// Every RPC the contracts define, as `(service, method)`, from the descriptor set the
/// services serve: a new RPC is covered without touching this test.
fn every_rpc() -> Vec<(String, String)> {
    let set = prost_types::FileDescriptorSet::decode(contracts::FILE_DESCRIPTOR_SET).unwrap();
    let mut rpcs = Vec::new();
    for file in set.file {
        for service in &file.service {
            for method in &service.method {
                rpcs.push((
                    format!("{}.{}", file.package(), service.name()),
                    method.name().to_owned(),
                ));
            }
        }
    }
    rpcs
}

/// The role the README and SECURITY.md promise each RPC needs.
fn role_of(service: &str, method: &str) -> &'static str {
    match (service, method) {
        ("orders.v1.CommandService", _) => "orders.write",
        ("orders.v1.QueryService", _) => "orders.read",
        ("orders.v1.SagaService", "RetrySaga" | "AbortSaga") => "sagas.admin",
        ("orders.v1.SagaService", _) => "orders.read",
        other => panic!("no role defined for {other:?}"),
    }
}

/// Calls `path` with an empty request and `authorization`; returns the status code.
async fn call(channel: Channel, path: &str, authorization: Option<String>) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(());
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let path = http::uri::PathAndQuery::from_str(path).unwrap();
    match grpc.unary(request, path, codec).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn every_rpc_needs_a_valid_token_with_its_role(pool: PgPool) {
    service_runtime::telemetry::init_for_tests();
    let mut command_config = command_config(&pool);
    command_config.server = secured(command_config.server);
    let command = Running::start(move |l, s| command_service::run(command_config, l, s)).await;
    let mut query_config = query_config(&pool);
    query_config.server = secured(query_config.server);
    let query = Running::start(move |l, s| query_service::run(query_config, l, s)).await;
    let mut config = saga_config(&pool, command.addr);
    config.server = secured(config.server);
    let saga = start_saga_service(config).await;
    let channels = [
        ("orders.v1.CommandService", command.channel().await),
        ("orders.v1.QueryService", query.channel().await),
        ("orders.v1.SagaService", saga.channel().await),
    ];
    let bearer = |t: String| Some(format!("Bearer {t}"));
    let every_role = ["orders.write", "orders.read", "sagas.admin"];
    let mut checked = 0;
    for (service, method) in every_rpc() {
        let channel = channels
            .iter()
            .find(|(name, _)| *name == service)
            .map(|(_, c)| c.clone())
            .unwrap_or_else(|| panic!("no server for {service}"));
        let path = format!("/{service}/{method}");
        let role = role_of(&service, &method);
        let others: Vec<&str> = every_role.iter().copied().filter(|r| *r != role).collect();
        let cases = [
            ("no token", None, Code::Unauthenticated),
            (
                "not a bearer token",
                Some("Basic dXNlcjpwYXNz".into()),
                Code::Unauthenticated,
            ),
            (
                "a malformed token",
                bearer("not.a.jwt".into()),
                Code::Unauthenticated,
            ),
            (
                "an expired token",
                bearer(token_with(SECRET, "orders", &[role], -120)),
                Code::Unauthenticated,
            ),
            (
                "a token signed with another secret",
                bearer(token_with(
                    "another secret, also thirty-two bytes long",
                    "orders",
                    &[role],
                    600,
                )),
                Code::Unauthenticated,
            ),
            (
                "a token for another audience",
                bearer(token_with(SECRET, "billing", &[role], 600)),
                Code::Unauthenticated,
            ),
            (
                "a valid token without the role",
                bearer(token(&others)),
                Code::PermissionDenied,
            ),
        ];
        for (what, authorization, expected) in cases {
            assert_eq!(
                call(channel.clone(), &path, authorization).await,
                expected,
                "{path}: {what}"
            );
        }
        // With the role, the call goes through to the service, which answers the empty
        // request as it would answer anyone (usually INVALID_ARGUMENT).
        let code = call(channel.clone(), &path, bearer(token(&[role]))).await;
        assert!(
            !matches!(code, Code::Unauthenticated | Code::PermissionDenied),
            "{path} with {role}: {code:?}"
        );
        checked += 1;
    }
    assert!(checked >= 20, "every RPC of the three services: {checked}");
    // Health and reflection stay open.
    for (_, channel) in &channels {
        assert_eq!(
            call(channel.clone(), "/grpc.health.v1.Health/Check", None).await,
            Code::Ok
        );
    }
}

/// A client for a TLS server on `addr`: trusting `ca`, presenting `identity`.
async fn tls_channel(
    addr: std::net::SocketAddr,
    pki: &Pki,
    ca: &str,
    identity: Option<(&str, &str)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pki.pem(ca)));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(pki.pem(cert), pki.pem(key)));
    }
    Endpoint::from_shared(format!("https://localhost:{}", addr.port()))?
        .tls_config(tls)?
        .connect()
        .await
}

async fn serving(channel: Channel) -> Result<(), tonic::Status> {
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|_| ())
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn tls_and_mutual_tls_refuse_who_they_must(pool: PgPool) {
    service_runtime::telemetry::init_for_tests();
    let pki = Pki::new();
    let mut config = command_config(&pool);
    config.server.tls.tls_cert = Some(pki.path("server.pem"));
    config.server.tls.tls_key = Some(pki.path("server-key.pem"));
    let tls = Running::start(move |l, s| command_service::run(config, l, s)).await;
    // Give the server a moment to take its database (no plaintext health check works here).
    let mut ok = false;
    for _ in 0..100 {
        if let Ok(channel) = tls_channel(tls.addr, &pki, "ca.pem", None).await
            && serving(channel).await.is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "a TLS client that trusts the CA is served");
    // A plaintext client gets no answer from a TLS server.
    let plain = Endpoint::from_shared(format!("http://{}", tls.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2));
    let refused = match plain.connect().await {
        Ok(channel) => serving(channel).await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "a plaintext client fails");
    // A client that trusts another CA refuses the server.
    assert!(
        tls_channel(tls.addr, &pki, "other-ca.pem", None)
            .await
            .is_err()
            || serving(
                tls_channel(tls.addr, &pki, "other-ca.pem", None)
                    .await
                    .unwrap()
            )
            .await
            .is_err()
    );

    // Mutual TLS: a client certificate from the CA is required.
    let mut config = command_config(&pool);
    config.server.tls.tls_cert = Some(pki.path("server.pem"));
    config.server.tls.tls_key = Some(pki.path("server-key.pem"));
    config.server.tls.tls_client_ca = Some(pki.path("ca.pem"));
    let mutual = Running::start(move |l, s| command_service::run(config, l, s)).await;
    let mut ok = false;
    for _ in 0..100 {
        if let Ok(channel) = tls_channel(
            mutual.addr,
            &pki,
            "ca.pem",
            Some(("client.pem", "client-key.pem")),
        )
        .await
            && serving(channel).await.is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "a client with a certificate from the CA is served");
    for (what, identity) in [
        ("no client certificate", None),
        (
            "a client certificate from another CA",
            Some(("other-client.pem", "other-client-key.pem")),
        ),
    ] {
        let refused = match tls_channel(mutual.addr, &pki, "ca.pem", identity).await {
            Ok(channel) => serving(channel).await.is_err(),
            Err(_) => true,
        };
        assert!(refused, "mutual TLS refuses {what}");
    }
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn the_saga_completes_orders_over_mutual_tls_with_tokens(pool: PgPool) {
    service_runtime::telemetry::init_for_tests();
    let pki = Pki::new();
    let mut config = command_config(&pool);
    config.server = secured(config.server);
    config.server.tls.tls_cert = Some(pki.path("server.pem"));
    config.server.tls.tls_key = Some(pki.path("server-key.pem"));
    config.server.tls.tls_client_ca = Some(pki.path("ca.pem"));
    let command = Running::start(move |l, s| command_service::run(config, l, s)).await;
    let mut saga_config = saga_config(&pool, command.addr);
    saga_config.command_service_url = format!("https://localhost:{}", command.addr.port());
    saga_config.command_service_ca = Some(pki.path("ca.pem"));
    saga_config.command_service_client_cert = Some(pki.path("client.pem"));
    saga_config.command_service_client_key = Some(pki.path("client-key.pem"));
    saga_config.command_service_token = Some(token(&["orders.write"]));
    let saga = start_saga_service(saga_config).await;
    let mut channel = None;
    for _ in 0..100 {
        if let Ok(c) = tls_channel(
            command.addr,
            &pki,
            "ca.pem",
            Some(("client.pem", "client-key.pem")),
        )
        .await
            && serving(c.clone()).await.is_ok()
        {
            channel = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let writer = token(&["orders.write"]);
    let mut c = CommandServiceClient::with_interceptor(
        channel.unwrap(),
        move |mut r: tonic::Request<()>| {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {writer}").parse().unwrap());
            Ok(r)
        },
    );
    c.create_product(pb::CreateProductRequest {
        command_id: id(),
        sku: "SKU-1".into(),
        name: "Widget".into(),
        price: eur(PRICE),
        initial_stock: 5,
    })
    .await
    .unwrap();
    let order_id = id();
    c.create_order(pb::CreateOrderRequest {
        command_id: id(),
        order_id: order_id.clone(),
        customer_id: id(),
        currency: "EUR".into(),
        lines: vec![catalogue_line("SKU-1", 1)],
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
    let mut s = SagaServiceClient::new(saga.channel().await);
    let saga = finished(&mut s, &order_id).await;
    assert_eq!(saga.state, "completed", "{saga:#?}");
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn every_server_refuses_an_oversized_message_and_sheds_a_flood(pool: PgPool) {
    service_runtime::telemetry::init_for_tests();
    let mut sys = start(&pool).await;
    let huge = "X".repeat(300 * 1024);
    let command = sys
        .commands
        .cancel_order(pb::CancelOrderRequest {
            command_id: id(),
            order_id: id(),
            reason: huge.clone(),
        })
        .await
        .unwrap_err();
    let query = sys
        .queries
        .get_order(pb::GetOrderRequest {
            order_id: huge.clone(),
            consistency_token: String::new(),
        })
        .await
        .unwrap_err();
    let saga = sys
        .sagas
        .get_saga(pb::GetSagaRequest { order_id: huge })
        .await
        .unwrap_err();
    for (service, status) in [("command", command), ("query", query), ("saga", saga)] {
        assert!(
            matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
            "{service}-service: {status:?}"
        );
    }

    // A flood beyond the per-connection limit is refused at once, not queued; health, on
    // its own connection, stays SERVING; a refused command writes nothing.
    let mut config = command_config(&pool);
    config.server.limits.max_calls_per_connection = 2;
    let limited = Running::start(move |l, s| command_service::run(config, l, s)).await;
    let flood_channel = limited.channel().await;
    let health_channel = limited.channel().await;
    let started = std::time::Instant::now();
    let calls = (0..64).map(|i| {
        let mut c = CommandServiceClient::new(flood_channel.clone());
        async move {
            let sku = format!("FLOOD-{i}");
            let result = c
                .create_product(pb::CreateProductRequest {
                    command_id: id(),
                    sku: sku.clone(),
                    name: "Flood".into(),
                    price: eur(PRICE),
                    initial_stock: 1,
                })
                .await;
            (sku, result)
        }
    });
    let results = futures::future::join_all(calls).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    let refused: Vec<&String> = results
        .iter()
        .filter(|(_, r)| {
            r.as_ref()
                .is_err_and(|s| s.code() == Code::ResourceExhausted)
        })
        .map(|(sku, _)| sku)
        .collect();
    let ok = results.iter().filter(|(_, r)| r.is_ok()).count();
    assert!(!refused.is_empty(), "some calls beyond the limit are shed");
    assert_eq!(
        ok + refused.len(),
        64,
        "every call is served or shed, none fails otherwise"
    );
    assert!(
        serving(health_channel).await.is_ok(),
        "health stays SERVING"
    );
    for sku in refused {
        let written: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE event_type = 'ProductCreated' AND payload->>'sku' = $1",
        )
        .bind(sku)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(written, 0, "{sku} was refused and written");
    }
    drop(sys.command);
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn watch_streams_are_capped(pool: PgPool) {
    service_runtime::telemetry::init_for_tests();
    let mut sys = start(&pool).await;
    let mut config = query_config(&pool);
    config.max_watch_streams = 2;
    let query = Running::start(move |l, s| query_service::run(config, l, s)).await;
    let mut q = QueryServiceClient::new(query.channel().await);
    create_product(&mut sys.commands, "SKU-1", 5).await;
    let (order_id, token) =
        create_order(&mut sys.commands, &id(), vec![catalogue_line("SKU-1", 1)]).await;
    let watch = || pb::WatchOrderRequest {
        order_id: order_id.clone(),
        consistency_token: token.clone(),
    };
    let first = q.watch_order(watch()).await.unwrap();
    let second = q.watch_order(watch()).await.unwrap();
    let third = q.watch_order(watch()).await.unwrap_err();
    assert_eq!(third.code(), Code::ResourceExhausted, "{third:?}");
    drop((first, second));
    let mut reopened = false;
    for _ in 0..100 {
        if q.watch_order(watch()).await.is_ok() {
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reopened, "a closed stream frees its place");
}

/// Runs `sql` as `role` in one transaction that is rolled back; the SQLSTATE on failure.
async fn as_role(pool: &PgPool, role: &str, sql: &str) -> Result<(), String> {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("SET LOCAL ROLE {role}")))
        .execute(&mut *tx)
        .await
        .unwrap();
    let result = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut *tx)
        .await
        .map(|_| ())
        .map_err(|e| match e {
            sqlx::Error::Database(db) => db.code().unwrap_or_default().into_owned(),
            other => other.to_string(),
        });
    tx.rollback().await.unwrap();
    result
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn each_service_role_can_do_only_what_its_service_needs(pool: PgPool) {
    const DENIED: &str = "42501";
    let insert_event = "INSERT INTO events (event_id, aggregate_id, aggregate_type, version, event_type, payload, metadata, occurred_at) \
        VALUES (gen_random_uuid(), gen_random_uuid(), 'Order', 1, 'OrderCreated', '{}', '{}', now())";
    let cases: &[(&str, &str, Result<(), &str>)] = &[
        // No service may rewrite history.
        (
            "orders_command",
            "UPDATE events SET event_type = event_type",
            Err(DENIED),
        ),
        ("orders_command", "DELETE FROM events", Err(DENIED)),
        ("orders_command", "TRUNCATE events", Err(DENIED)),
        (
            "orders_command",
            "UPDATE command_log SET command_type = command_type",
            Err(DENIED),
        ),
        ("orders_command", "DELETE FROM command_log", Err(DENIED)),
        ("orders_command", "TRUNCATE command_log", Err(DENIED)),
        (
            "orders_query",
            "UPDATE events SET event_type = event_type",
            Err(DENIED),
        ),
        ("orders_query", "TRUNCATE events", Err(DENIED)),
        ("orders_saga", "DELETE FROM events", Err(DENIED)),
        ("orders_saga", "TRUNCATE events", Err(DENIED)),
        // Each writes only what is its own.
        ("orders_command", insert_event, Ok(())),
        ("orders_command", "SELECT * FROM command_log", Ok(())),
        ("orders_command", "DELETE FROM read_orders", Err(DENIED)),
        (
            "orders_command",
            "UPDATE sagas SET state = state",
            Err(DENIED),
        ),
        ("orders_query", insert_event, Err(DENIED)),
        ("orders_query", "SELECT * FROM command_log", Err(DENIED)),
        (
            "orders_query",
            "UPDATE read_orders SET status = status",
            Ok(()),
        ),
        (
            "orders_query",
            "UPDATE sagas SET state = state",
            Err(DENIED),
        ),
        ("orders_saga", insert_event, Err(DENIED)),
        (
            "orders_saga",
            "UPDATE read_orders SET status = status",
            Err(DENIED),
        ),
        (
            "orders_saga",
            "INSERT INTO read_products SELECT * FROM read_products",
            Err(DENIED),
        ),
        ("orders_saga", "UPDATE sagas SET state = state", Ok(())),
        ("orders_saga", "SELECT * FROM events", Ok(())),
    ];
    for (role, sql, expected) in cases {
        let got = as_role(&pool, role, sql).await;
        assert_eq!(
            got.as_ref().map(|_| ()).map_err(String::as_str),
            *expected,
            "{role}: {sql}"
        );
    }
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn the_system_runs_as_its_service_roles(pool: PgPool) {
    service_runtime::telemetry::init_for_tests();
    let url = test_support::database_url(&pool);
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let mut urls = std::collections::HashMap::new();
    for (service, group) in service_runtime::database::SERVICE_ROLES {
        let user = format!("{}_{suffix}", group.trim_start_matches("orders_"));
        service_runtime::database::ensure_login_role(&pool, &user, "a password", group)
            .await
            .unwrap();
        urls.insert(
            service,
            url.replacen("postgres@", &format!("{user}:a%20password@"), 1),
        );
    }
    assert_ne!(
        urls["command-service"], url,
        "each service gets its own user"
    );
    let mut config = command_config(&pool);
    config.database_url = urls["command-service"].clone();
    let command = Running::start(move |l, s| command_service::run(config, l, s)).await;
    let mut config = query_config(&pool);
    config.database_url = urls["query-service"].clone();
    let query = Running::start(move |l, s| query_service::run(config, l, s)).await;
    let mut config = saga_config(&pool, command.addr);
    config.database_url = urls["saga-service"].clone();
    let saga = start_saga_service(config).await;
    let mut c = CommandServiceClient::new(command.channel().await);
    let mut q = QueryServiceClient::new(query.channel().await);
    let mut s = SagaServiceClient::new(saga.channel().await);
    create_product(&mut c, "SKU-1", 5).await;
    let order_id = place_order(&mut c, &[("SKU-1", 2)], "card").await;
    assert_eq!(finished(&mut s, &order_id).await.state, "completed");
    assert_eq!(
        order_view(&mut q, &pool, &order_id).await.status,
        "confirmed"
    );
    // A rebuild, as query-service's role, replaces the tables it owns.
    let query_pool = PgPool::connect(&urls["query-service"]).await.unwrap();
    let store = event_store::PostgresEventStore::new(query_pool.clone());
    query_service::rebuild::rebuild(&query_pool, &store, |_| {})
        .await
        .expect("the query role can rebuild its read models");
    // command-service's role reads the saga's backlog (for backpressure), through the
    // view only: the saga's own table stays out of its reach.
    let command_pool = PgPool::connect(&urls["command-service"]).await.unwrap();
    command_service::backlog::read(&command_pool)
        .await
        .expect("the command role reads the saga_backlog view");
    let denied = sqlx::query("SELECT count(*) FROM sagas")
        .execute(&command_pool)
        .await
        .expect_err("the command role cannot read the sagas table");
    assert!(denied.to_string().contains("permission denied"), "{denied}");
}
