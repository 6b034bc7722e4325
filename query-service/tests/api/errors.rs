//! Bad input for every RPC: INVALID_ARGUMENT with the field named, or NOT_FOUND.

use contracts::orders::v1 as pb;
use sqlx::PgPool;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::*;

#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(result: Result<T, tonic::Status>, field: &str) {
    let status = result.expect_err("the call should fail");
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "{field}: {}",
        status.message()
    );
    let fields: Vec<String> = status
        .get_details_bad_request()
        .expect("BadRequest details")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, vec![field.to_owned()]);
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn bad_input_is_refused_field_by_field(pool: PgPool) {
    let sys = start(&pool).await;
    let mut q = sys.queries.clone();
    let get = |order_id: &str, token: &str| pb::GetOrderRequest {
        order_id: order_id.into(),
        consistency_token: token.into(),
    };
    assert_invalid(q.get_order(get("", "")).await, "order_id");
    assert_invalid(q.get_order(get("nope", "")).await, "order_id");
    assert_invalid(q.get_order(get(&id(), "12")).await, "consistency_token");
    assert_invalid(q.get_order(get(&id(), "a.b")).await, "consistency_token");
    let list = |f: fn(&mut pb::ListOrdersRequest)| {
        let mut r = pb::ListOrdersRequest::default();
        f(&mut r);
        r
    };
    assert_invalid(
        q.list_orders(list(|r| r.page_size = 501)).await,
        "page_size",
    );
    assert_invalid(q.list_orders(list(|r| r.page_size = -1)).await, "page_size");
    assert_invalid(
        q.list_orders(list(|r| r.page_token = "not-a-token".into()))
            .await,
        "page_token",
    );
    assert_invalid(
        q.list_orders(list(|r| r.status = "lost".into())).await,
        "status",
    );
    assert_invalid(
        q.list_orders(list(|r| r.customer_id = "x".into())).await,
        "customer_id",
    );
    assert_invalid(
        q.get_order_history(pb::GetOrderHistoryRequest {
            order_id: "1".into(),
            consistency_token: String::new(),
        })
        .await,
        "order_id",
    );
    assert_invalid(
        q.get_product(pb::GetProductRequest {
            sku: "lower".into(),
            consistency_token: String::new(),
        })
        .await,
        "sku",
    );
    assert_invalid(
        q.list_products(pb::ListProductsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await,
        "page_size",
    );
    assert_invalid(
        q.list_products(pb::ListProductsRequest {
            page_token: "zz".into(),
            ..Default::default()
        })
        .await,
        "page_token",
    );
    assert_invalid(
        q.get_customer_summary(pb::GetCustomerSummaryRequest {
            customer_id: String::new(),
            consistency_token: String::new(),
        })
        .await,
        "customer_id",
    );
    assert_invalid(
        q.watch_order(pb::WatchOrderRequest {
            order_id: "x".into(),
            consistency_token: String::new(),
        })
        .await,
        "order_id",
    );

    for (name, code) in [
        (
            "order",
            q.get_order(get(&id(), "")).await.unwrap_err().code(),
        ),
        (
            "history",
            q.get_order_history(pb::GetOrderHistoryRequest {
                order_id: id(),
                consistency_token: String::new(),
            })
            .await
            .unwrap_err()
            .code(),
        ),
        (
            "product",
            q.get_product(pb::GetProductRequest {
                sku: "NONE-1".into(),
                consistency_token: String::new(),
            })
            .await
            .unwrap_err()
            .code(),
        ),
        (
            "customer",
            q.get_customer_summary(pb::GetCustomerSummaryRequest {
                customer_id: id(),
                consistency_token: String::new(),
            })
            .await
            .unwrap_err()
            .code(),
        ),
        (
            "watch",
            q.watch_order(pb::WatchOrderRequest {
                order_id: id(),
                consistency_token: String::new(),
            })
            .await
            .unwrap_err()
            .code(),
        ),
    ] {
        assert_eq!(code, Code::NotFound, "{name}");
    }
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_token_not_reached_in_time_fails_clearly(pool: PgPool) {
    let sys = start(&pool).await;
    let mut q = sys.queries.clone();
    let mut request = tonic::Request::new(pb::GetOrderRequest {
        order_id: id(),
        consistency_token: "999999999.999999999".into(),
    });
    request.set_timeout(std::time::Duration::from_millis(300));
    let started = std::time::Instant::now();
    let status = q.get_order(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("have not reached"),
        "{}",
        status.message()
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "the wait follows the deadline"
    );
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn lists_page_through_everything_newest_first(pool: PgPool) {
    let mut sys = start(&pool).await;
    let customer = id();
    let mut created = Vec::new();
    for _ in 0..7 {
        created.push(create_order(&mut sys.commands, &customer, vec![]).await.0);
    }
    create_order(&mut sys.commands, &id(), vec![]).await;
    caught_up(&mut sys.queries, &pool).await;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = sys
            .queries
            .list_orders(pb::ListOrdersRequest {
                customer_id: customer.clone(),
                status: "draft".into(),
                page_size: 3,
                page_token: token.clone(),
                consistency_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.orders.len() <= 3);
        seen.extend(page.orders.into_iter().map(|o| o.order_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut expected = created.clone();
    expected.sort();
    let mut got = seen.clone();
    got.sort();
    assert_eq!(got, expected, "every order exactly once");
    assert_eq!(seen.len(), 7);
}
