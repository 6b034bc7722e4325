//! Requests the integration tests (and the benchmark) build again and again, in one place.

use contracts::orders::v1::{self as pb, command_service_client::CommandServiceClient};
use tonic::transport::Channel;
use uuid::Uuid;

/// command-service's client.
pub type Commands = CommandServiceClient<Channel>;

/// The price every product gets from [`create_product`], in euro cents.
pub const PRICE: i64 = 500;

/// A fresh UUID, as text.
pub fn id() -> String {
    Uuid::new_v4().to_string()
}

/// An amount in euro cents.
pub fn eur(amount_minor: i64) -> Option<pb::Money> {
    Some(pb::Money {
        amount_minor,
        currency: "EUR".into(),
    })
}

/// An order line that expects `unit_price` (the catalogue's price must match).
pub fn line(sku: &str, quantity: i32, unit_price: i64) -> pb::OrderLine {
    pb::OrderLine {
        sku: sku.into(),
        quantity,
        unit_price: eur(unit_price),
    }
}

/// An order line at whatever the catalogue charges.
pub fn catalogue_line(sku: &str, quantity: i32) -> pb::OrderLine {
    pb::OrderLine {
        sku: sku.into(),
        quantity,
        unit_price: None,
    }
}

/// Creates a product priced [`PRICE`] with `stock` units on hand.
pub async fn create_product(c: &mut Commands, sku: &str, stock: i64) -> pb::WriteResult {
    create_product_priced(c, sku, PRICE, stock).await
}

/// Creates a product at `price` euro cents with `stock` units on hand.
pub async fn create_product_priced(
    c: &mut Commands,
    sku: &str,
    price: i64,
    stock: i64,
) -> pb::WriteResult {
    c.create_product(pb::CreateProductRequest {
        command_id: id(),
        sku: sku.into(),
        name: format!("Product {sku}"),
        price: eur(price),
        initial_stock: stock,
    })
    .await
    .expect("create product")
    .into_inner()
    .result
    .expect("a write result")
}

/// Creates a draft order for `customer`; returns its id and consistency token.
pub async fn create_order(
    c: &mut Commands,
    customer: &str,
    lines: Vec<pb::OrderLine>,
) -> (String, String) {
    let order_id = id();
    let token = c
        .create_order(pb::CreateOrderRequest {
            command_id: id(),
            order_id: order_id.clone(),
            customer_id: customer.into(),
            currency: "EUR".into(),
            lines,
        })
        .await
        .expect("create order")
        .into_inner()
        .result
        .expect("a write result")
        .consistency_token;
    (order_id, token)
}

/// Creates and places an order of `(sku, quantity)` lines at catalogue prices; returns its
/// id.
pub async fn place_order(c: &mut Commands, lines: &[(&str, i32)], payment_method: &str) -> String {
    let lines = lines
        .iter()
        .map(|(sku, quantity)| catalogue_line(sku, *quantity))
        .collect();
    let (order_id, _) = create_order(c, &id(), lines).await;
    c.place_order(pb::PlaceOrderRequest {
        command_id: id(),
        order_id: order_id.clone(),
        payment_method: payment_method.into(),
        expected_version: None,
    })
    .await
    .expect("place order");
    order_id
}
