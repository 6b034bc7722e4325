//! Every error class maps to its status, with details; bad input changes nothing.

use contracts::orders::v1 as pb;
use sqlx::PgPool;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::*;

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn invalid_fields_are_listed_as_violations(pool: PgPool) {
    let app = spawn_app(&pool).await;
    let mut c = app.client.clone();
    let status = c
        .create_order(pb::CreateOrderRequest {
            command_id: "not-a-uuid".into(),
            order_id: String::new(),
            customer_id: id(),
            currency: "euro".into(),
            lines: vec![line("bad sku", 0, -5)],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let violations = status
        .get_details_bad_request()
        .expect("BadRequest details")
        .field_violations;
    let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(
        fields,
        vec![
            "command_id",
            "order_id",
            "currency",
            "lines[0].sku",
            "lines[0].quantity",
            "lines[0].unit_price.amount_minor"
        ]
    );
    assert_eq!(app.event_count().await, 0);
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn bad_input_is_refused_and_writes_nothing(pool: PgPool) {
    let app = spawn_app(&pool).await;
    let mut c = app.client.clone();
    create_product(&mut c, "SKU-1", 10).await;
    let order_id = create_order(&mut c, vec![]).await;

    let add = |line: Option<pb::OrderLine>| pb::AddOrderLineRequest {
        command_id: id(),
        order_id: order_id.clone(),
        line,
        expected_version: None,
    };
    let too_many: Vec<pb::OrderLine> = (0..101).map(|i| line(&format!("SKU-{i}"), 1, 1)).collect();
    let placed = place_order(&mut c, &[("SKU-1", 1)], "card").await;
    let before = app.event_count().await;
    let long_name = "x".repeat(201);
    let cases: Vec<(&str, Result<(), tonic::Status>)> = vec![
        (
            "empty command id",
            c.add_order_line(pb::AddOrderLineRequest {
                command_id: String::new(),
                ..add(Some(line("SKU-1", 1, 1)))
            })
            .await
            .map(|_| ()),
        ),
        (
            "non-UUID order id",
            c.add_order_line(pb::AddOrderLineRequest {
                order_id: "42".into(),
                ..add(Some(line("SKU-1", 1, 1)))
            })
            .await
            .map(|_| ()),
        ),
        (
            "missing line",
            c.add_order_line(add(None)).await.map(|_| ()),
        ),
        (
            "quantity 0",
            c.add_order_line(add(Some(line("SKU-1", 0, 1))))
                .await
                .map(|_| ()),
        ),
        (
            "negative quantity",
            c.add_order_line(add(Some(line("SKU-1", -3, 1))))
                .await
                .map(|_| ()),
        ),
        (
            "quantity over the bound",
            c.add_order_line(add(Some(line("SKU-1", 10_001, 1))))
                .await
                .map(|_| ()),
        ),
        (
            "lower-case SKU",
            c.add_order_line(add(Some(line("sku-1", 1, 1))))
                .await
                .map(|_| ()),
        ),
        (
            "a negative expected price",
            c.add_order_line(add(Some(line("SKU-1", 1, -1))))
                .await
                .map(|_| ()),
        ),
        (
            "an authorisation of nothing",
            c.authorize_payment(pb::AuthorizePaymentRequest {
                command_id: id(),
                order_id: placed.clone(),
                customer_id: id(),
                amount: eur(0),
                payment_method: "card".into(),
            })
            .await
            .map(|_| ()),
        ),
        (
            "a void of no command id",
            c.void_command(pb::VoidCommandRequest {
                command_id: "x".into(),
                reason: "because".into(),
            })
            .await
            .map(|_| ()),
        ),
        (
            "101 lines",
            c.create_order(pb::CreateOrderRequest {
                command_id: id(),
                order_id: id(),
                customer_id: id(),
                currency: "EUR".into(),
                lines: too_many,
            })
            .await
            .map(|_| ()),
        ),
        (
            "name over its limit",
            c.create_product(pb::CreateProductRequest {
                command_id: id(),
                sku: "SKU-9".into(),
                name: long_name,
                price: eur(1),
                initial_stock: 1,
            })
            .await
            .map(|_| ()),
        ),
        (
            "empty reason",
            c.cancel_order(pb::CancelOrderRequest {
                command_id: id(),
                order_id: order_id.clone(),
                reason: "  ".into(),
            })
            .await
            .map(|_| ()),
        ),
        (
            "no items to reserve",
            c.reserve_stock(pb::ReserveStockRequest {
                command_id: id(),
                order_id: order_id.clone(),
                items: vec![],
            })
            .await
            .map(|_| ()),
        ),
        (
            "a SKU twice",
            c.release_stock(pb::ReleaseStockRequest {
                command_id: id(),
                order_id: order_id.clone(),
                skus: vec!["SKU-1".into(), "SKU-1".into()],
            })
            .await
            .map(|_| ()),
        ),
        (
            "bad payment method",
            c.place_order(pb::PlaceOrderRequest {
                command_id: id(),
                order_id: order_id.clone(),
                payment_method: "Visa Card".into(),
                expected_version: None,
            })
            .await
            .map(|_| ()),
        ),
    ];
    for (name, result) in cases {
        assert_eq!(code(result).0, Code::InvalidArgument, "{name}");
    }

    let not_found: Vec<(&str, Result<(), tonic::Status>)> = vec![
        (
            "unknown order",
            c.add_order_line(pb::AddOrderLineRequest {
                order_id: id(),
                ..add(Some(line("SKU-1", 1, PRICE)))
            })
            .await
            .map(|_| ()),
        ),
        (
            "an unknown product in a new line",
            c.add_order_line(add(Some(catalogue_line("NOPE-3", 1))))
                .await
                .map(|_| ()),
        ),
        (
            "an unknown product in a new order",
            c.create_order(pb::CreateOrderRequest {
                command_id: id(),
                order_id: id(),
                customer_id: id(),
                currency: "EUR".into(),
                lines: vec![catalogue_line("SKU-1", 1), catalogue_line("NOPE-4", 1)],
            })
            .await
            .map(|_| ()),
        ),
        (
            "a payment for an unknown order",
            c.authorize_payment(pb::AuthorizePaymentRequest {
                command_id: id(),
                order_id: id(),
                customer_id: id(),
                amount: eur(PRICE),
                payment_method: "card".into(),
            })
            .await
            .map(|_| ()),
        ),
        (
            "a refund for an unknown order",
            c.refund_payment(pb::RefundPaymentRequest {
                command_id: id(),
                order_id: id(),
                reason: "sorry".into(),
            })
            .await
            .map(|_| ()),
        ),
        (
            "a reservation for an unknown order",
            c.reserve_stock(pb::ReserveStockRequest {
                command_id: id(),
                order_id: id(),
                items: vec![pb::StockItem {
                    sku: "SKU-1".into(),
                    quantity: 1,
                }],
            })
            .await
            .map(|_| ()),
        ),
        (
            "unknown SKU",
            c.reserve_stock(pb::ReserveStockRequest {
                command_id: id(),
                order_id: placed.clone(),
                items: vec![pb::StockItem {
                    sku: "NOPE-1".into(),
                    quantity: 1,
                }],
            })
            .await
            .map(|_| ()),
        ),
        (
            "restocking an unknown SKU",
            c.restock_product(pb::RestockProductRequest {
                command_id: id(),
                sku: "NOPE-2".into(),
                quantity: 1,
            })
            .await
            .map(|_| ()),
        ),
    ];
    for (name, result) in not_found {
        let (code, message) = code(result);
        assert_eq!(code, Code::NotFound, "{name}: {message}");
    }
    assert_eq!(
        app.event_count().await,
        before,
        "a refused request wrote events"
    );
    let logged: i64 = sqlx::query_scalar("SELECT count(*) FROM command_log")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        logged, 4,
        "only the four successful setup commands are recorded"
    );
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn business_rules_refuse_with_failed_precondition(pool: PgPool) {
    let app = spawn_app(&pool).await;
    let mut c = app.client.clone();
    create_product(&mut c, "SKU-1", 1).await;
    let empty = create_order(&mut c, vec![]).await;
    let status = c
        .place_order(pb::PlaceOrderRequest {
            command_id: id(),
            order_id: empty.clone(),
            payment_method: "card".into(),
            expected_version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "cannot place an order with no lines");
    assert!(status.get_details_precondition_failure().is_some());

    let status = c
        .reserve_stock(pb::ReserveStockRequest {
            command_id: id(),
            order_id: empty.clone(),
            items: vec![pb::StockItem {
                sku: "SKU-1".into(),
                quantity: 1,
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        format!("order {empty} has not been placed")
    );

    let placed = place_order(&mut c, &[("SKU-1", 2)], "card").await;
    let status = c
        .reserve_stock(pb::ReserveStockRequest {
            command_id: id(),
            order_id: placed.clone(),
            items: vec![pb::StockItem {
                sku: "SKU-1".into(),
                quantity: 2,
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        "out of stock: SKU-1 (requested 2, available 1)"
    );

    let status = c
        .authorize_payment(pb::AuthorizePaymentRequest {
            command_id: id(),
            order_id: placed.clone(),
            customer_id: id(),
            amount: eur(1),
            payment_method: "card".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        format!("the amount 1 EUR is not the total of order {placed}, 1000 EUR")
    );
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_line_is_priced_from_the_catalogue_and_a_stale_price_is_refused(pool: PgPool) {
    let app = spawn_app(&pool).await;
    let mut c = app.client.clone();
    create_product_priced(&mut c, "TEA-1", 450, 10).await;
    let before = app.event_count().await;
    let status = c
        .create_order(pb::CreateOrderRequest {
            command_id: id(),
            order_id: id(),
            customer_id: id(),
            currency: "EUR".into(),
            lines: vec![line("TEA-1", 1, 10)],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        "the price of TEA-1 is 450 EUR, not 10 EUR"
    );
    let info = status.get_details_error_info().expect("ErrorInfo details");
    assert_eq!(info.reason, "PRICE_CHANGED");
    assert_eq!(info.metadata["current_amount_minor"], "450");
    assert_eq!(info.metadata["expected_amount_minor"], "10");
    assert_eq!(info.metadata["currency"], "EUR");
    assert_eq!(app.event_count().await, before, "nothing was written");

    // Without a price, or with the right one, the catalogue's price is what the order pays.
    let order_id = create_order(&mut c, vec![catalogue_line("TEA-1", 2)]).await;
    let placed = c
        .place_order(pb::PlaceOrderRequest {
            command_id: id(),
            order_id,
            payment_method: "card".into(),
            expected_version: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(placed.total.unwrap().amount_minor, 900);
    create_order(&mut c, vec![line("TEA-1", 1, 450)]).await;
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_stale_expected_version_is_aborted_with_both_versions(pool: PgPool) {
    let app = spawn_app(&pool).await;
    let mut c = app.client.clone();
    for sku in ["SKU-1", "SKU-2", "SKU-3"] {
        create_product(&mut c, sku, 10).await;
    }
    let order_id = create_order(&mut c, vec![catalogue_line("SKU-1", 1)]).await;
    c.add_order_line(pb::AddOrderLineRequest {
        command_id: id(),
        order_id: order_id.clone(),
        line: Some(catalogue_line("SKU-2", 1)),
        expected_version: Some(1),
    })
    .await
    .unwrap();
    let before = app.event_count().await;
    let status = c
        .add_order_line(pb::AddOrderLineRequest {
            command_id: id(),
            order_id: order_id.clone(),
            line: Some(catalogue_line("SKU-3", 1)),
            expected_version: Some(1),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(
        status.message(),
        format!("version conflict on {order_id}: expected version 1, actual version 2")
    );
    let info = status.get_details_error_info().expect("ErrorInfo details");
    assert_eq!(info.reason, "VERSION_CONFLICT");
    assert_eq!(info.metadata["expected_version"], "1");
    assert_eq!(info.metadata["actual_version"], "2");
    assert_eq!(app.event_count().await, before);
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_malformed_correlation_id_is_invalid(pool: PgPool) {
    let app = spawn_app(&pool).await;
    let mut c = app.client.clone();
    let mut request = tonic::Request::new(pb::ConfirmOrderRequest {
        command_id: id(),
        order_id: id(),
    });
    request
        .metadata_mut()
        .insert("x-correlation-id", "abc".parse().unwrap());
    assert_eq!(
        code(c.confirm_order(request).await).0,
        Code::InvalidArgument
    );
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn an_unreachable_database_is_unavailable(pool: PgPool) {
    let app = spawn_app(&pool).await;
    let mut c = app.client.clone();
    // Connected while the service is SERVING: `channel()` waits for SERVING, which is
    // exactly what will stop being true.
    let mut health =
        tonic_health::pb::health_client::HealthClient::new(app.running.channel().await);
    // Cut the service's connections and refuse new ones to its database.
    // A database cannot lock itself out, so do it from the server's maintenance database.
    let database = pool.connect_options().get_database().unwrap().to_owned();
    let admin = PgPool::connect(&std::env::var("DATABASE_URL").unwrap())
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{database}\" ALLOW_CONNECTIONS false"
    )))
    .execute(&admin)
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
        .bind(&database)
        .execute(&admin)
        .await
        .unwrap();
    let status = c
        .create_product(pb::CreateProductRequest {
            command_id: id(),
            sku: "SKU-1".into(),
            name: "Widget".into(),
            price: eur(1),
            initial_stock: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    assert!(
        !status.message().contains("postgres"),
        "no database text reaches a client"
    );

    let mut serving = true;
    for _ in 0..40 {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: command_service::SERVICE_NAME.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        serving = status == tonic_health::pb::health_check_response::ServingStatus::Serving;
        if !serving {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        !serving,
        "health must turn NOT_SERVING while the database is unreachable"
    );
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{database}\" ALLOW_CONNECTIONS true"
    )))
    .execute(&admin)
    .await
    .unwrap();
}

/// Commands that create their aggregate are first tried without reading it; when it exists
/// after all, the command is decided against the stored state and writes nothing new.
#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn creating_what_exists_is_decided_against_the_stored_state(pool: PgPool) {
    let app = spawn_app(&pool).await;
    let mut c = app.client.clone();
    create_product(&mut c, "SKU-1", 5).await;
    let order_id = place_order(&mut c, &[("SKU-1", 1)], "card").await;
    let authorize = |method: &str| pb::AuthorizePaymentRequest {
        command_id: id(),
        order_id: order_id.clone(),
        customer_id: id(),
        amount: eur(PRICE),
        payment_method: method.into(),
    };
    let declined = c
        .authorize_payment(authorize("card_declined"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(declined.outcome(), pb::PaymentOutcome::Declined);
    let before = app.event_count().await;

    let status = c
        .create_order(pb::CreateOrderRequest {
            command_id: id(),
            order_id: order_id.clone(),
            customer_id: id(),
            currency: "EUR".into(),
            lines: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), format!("order {order_id} already exists"));
    let status = c
        .create_product(pb::CreateProductRequest {
            command_id: id(),
            sku: "SKU-1".into(),
            name: "Again".into(),
            price: eur(1),
            initial_stock: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "product SKU-1 already exists");
    // A second authorisation is a no-op that reports the payment as it stands.
    let again = c
        .authorize_payment(authorize("card"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.outcome(), pb::PaymentOutcome::Declined);
    assert_eq!(
        again.result.unwrap().version,
        declined.result.unwrap().version
    );
    assert_eq!(app.event_count().await, before);
}
