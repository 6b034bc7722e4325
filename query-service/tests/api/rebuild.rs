//! A rebuild while commands keep arriving gives the read model a live projection gives.

use contracts::orders::v1 as pb;
use contracts::orders::v1::query_service_client::QueryServiceClient;
use event_store::PostgresEventStore;
use sqlx::PgPool;

use crate::helpers::*;

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_rebuild_under_load_matches_the_live_read_model(pool: PgPool) {
    let mut sys = start(&pool).await;
    create_product(&mut sys.commands, "SKU-1", 1000).await;
    let customer = id();
    for _ in 0..30 {
        let (order_id, _) = create_order(
            &mut sys.commands,
            &customer,
            vec![catalogue_line("SKU-1", 1)],
        )
        .await;
        sys.commands
            .place_order(pb::PlaceOrderRequest {
                command_id: id(),
                order_id,
                payment_method: "card".into(),
                expected_version: None,
            })
            .await
            .unwrap();
    }
    caught_up(&mut sys.queries, &pool).await;

    // Writers keep going while the rebuild runs.
    let writer = {
        let mut c = sys.commands.clone();
        tokio::spawn(async move {
            for _ in 0..40 {
                let order_id = place_order(&mut c, &[("SKU-1", 2)], "card").await;
                c.reserve_stock(pb::ReserveStockRequest {
                    command_id: id(),
                    order_id,
                    items: vec![pb::StockItem {
                        sku: "SKU-1".into(),
                        quantity: 2,
                    }],
                })
                .await
                .unwrap();
            }
        })
    };
    let store = PostgresEventStore::new(pool.clone());
    let mut reports = 0;
    let (progress, _) = query_service::rebuild::rebuild(&pool, &store, |_| reports += 1)
        .await
        .unwrap();
    assert!(progress.done >= 61, "replayed {} events", progress.done);
    assert!(reports >= 1, "progress is reported");
    // Queries still work after the swap.
    writer.await.unwrap();
    let product = sys
        .queries
        .get_product(pb::GetProductRequest {
            sku: "SKU-1".into(),
            consistency_token: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(product.into_inner().product.unwrap().sku, "SKU-1");
    caught_up(&mut sys.queries, &pool).await;
    assert_same_model(&stored_model(&pool).await, &folded_model(&pool).await);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'rebuild_%' OR tablename LIKE 'retired_%'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "no shadow tables are left behind");
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_rebuild_that_hands_over_the_leaders_own_position_still_replaces_its_views(pool: PgPool) {
    let mut sys = start(&pool).await;
    create_product(&mut sys.commands, "SKU-1", 100).await;
    create_product(&mut sys.commands, "SKU-2", 100).await;
    let (order_id, _) =
        create_order(&mut sys.commands, &id(), vec![catalogue_line("SKU-1", 1)]).await;
    caught_up(&mut sys.queries, &pool).await;
    // A row that disagrees with the log (a projection bug, a hand edit): what a rebuild is
    // for. A new leader reads it into its in-memory views.
    sqlx::query(
        "UPDATE read_orders SET total_minor = total_minor + 999, created_at = created_at - interval '1 day' \
         WHERE order_id = $1::uuid",
    )
        .bind(&order_id)
        .execute(&pool)
        .await
        .unwrap();
    sys.query.stop().await.unwrap();
    let query = start_query_service(&pool).await;
    let mut queries = QueryServiceClient::new(query.channel().await);
    for _ in 0..400 {
        let status = queries
            .get_projection_status(pb::GetProjectionStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        if status.leader {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let read = |queries: &mut Queries| {
        let mut q = queries.clone();
        let order_id = order_id.clone();
        async move {
            let order = q
                .get_order(pb::GetOrderRequest {
                    order_id,
                    consistency_token: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
                .order
                .unwrap();
            order.total.unwrap().amount_minor
        }
    };
    let stored_total = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT total_minor FROM read_orders WHERE order_id = $1::uuid",
        )
        .bind(&order_id)
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    assert_eq!(
        read(&mut queries).await,
        stored_total().await,
        "the view was read from the table"
    );

    // Nothing is appended meanwhile, so the rebuild hands over the very position the
    // leader holds; the swap still bumps the generation.
    let store = PostgresEventStore::new(pool.clone());
    query_service::rebuild::rebuild(&pool, &store, |_| ())
        .await
        .unwrap();
    sys.commands
        .add_order_line(pb::AddOrderLineRequest {
            command_id: id(),
            order_id: order_id.clone(),
            line: Some(catalogue_line("SKU-2", 1)),
            expected_version: None,
        })
        .await
        .unwrap();
    caught_up(&mut queries, &pool).await;
    // The line was folded onto the rebuilt row, not onto the view the leader held.
    assert_same_model(&stored_model(&pool).await, &folded_model(&pool).await);
    assert_eq!(read(&mut queries).await, stored_total().await);
}

/// Every index of the read-model tables, by name, with its definition.
async fn indexes(pool: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT indexname::text, indexdef FROM pg_indexes \
         WHERE tablename IN ('read_orders', 'read_products', 'read_customers') ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn rebuilt_tables_have_the_indexes_and_names_of_the_originals(pool: PgPool) {
    let mut sys = start(&pool).await;
    create_product(&mut sys.commands, "SKU-1", 10).await;
    create_order(&mut sys.commands, &id(), vec![catalogue_line("SKU-1", 1)]).await;
    // A unique index too: it must come back unique.
    sqlx::query("CREATE UNIQUE INDEX read_orders_version_key ON read_orders (order_id, version)")
        .execute(&pool)
        .await
        .unwrap();
    let original = indexes(&pool).await;
    assert!(
        original.len() >= 7,
        "primary keys and the order indexes: {original:?}"
    );
    let store = PostgresEventStore::new(pool.clone());
    // Twice: the second rebuild starts from tables the first one made.
    for _ in 0..2 {
        query_service::rebuild::rebuild(&pool, &store, |_| {})
            .await
            .unwrap();
        assert_eq!(indexes(&pool).await, original);
    }
    caught_up(&mut sys.queries, &pool).await;
    assert_same_model(&stored_model(&pool).await, &folded_model(&pool).await);
}

/// The status columns accept exactly the names `domain_events::status` lists.
#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn the_status_columns_hold_only_the_listed_names(pool: PgPool) {
    use domain_events::status::{OrderStatus, PaymentStatus, StockStatus};
    let insert = |status: &str, stock: &str, payment: &str| {
        sqlx::query(
            "INSERT INTO read_orders (order_id, customer_id, status, currency, lines, total_minor, \
             stock_status, payment_status, created_at, updated_at, version) \
             VALUES (gen_random_uuid(), gen_random_uuid(), $1, 'EUR', '[]', 0, $2, $3, now(), now(), 1)",
        )
        .bind(status.to_owned())
        .bind(stock.to_owned())
        .bind(payment.to_owned())
    };
    for s in OrderStatus::ALL {
        insert(s.as_str(), "none", "none")
            .execute(&pool)
            .await
            .unwrap();
    }
    for s in StockStatus::ALL {
        insert("draft", s.as_str(), "none")
            .execute(&pool)
            .await
            .unwrap();
    }
    for s in PaymentStatus::ALL {
        insert("draft", "none", s.as_str())
            .execute(&pool)
            .await
            .unwrap();
    }
    for (status, stock, payment) in [
        ("lost", "none", "none"),
        ("draft", "stolen", "none"),
        ("draft", "none", "pending"),
    ] {
        let err = insert(status, stock, payment)
            .execute(&pool)
            .await
            .expect_err("an unlisted name is refused");
        assert!(err.to_string().contains("check constraint"), "{err}");
    }
    // A rebuild's tables, swapped in for these, check the same.
    let store = PostgresEventStore::new(pool.clone());
    query_service::rebuild::rebuild(&pool, &store, |_| {})
        .await
        .unwrap();
    let err = insert("lost", "none", "none")
        .execute(&pool)
        .await
        .expect_err("the rebuilt table checks its status too");
    assert!(err.to_string().contains("check constraint"), "{err}");
}
